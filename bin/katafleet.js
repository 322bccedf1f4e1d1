#!/usr/bin/env node
// The CLI is written in TypeScript and run through tsx, so `npx katafleet` works right after `npm ci`.
require('tsx/cjs');
require('../cli/main.ts')
  .main(process.argv.slice(2))
  .then((code) => {
    process.exitCode = code;
  });
