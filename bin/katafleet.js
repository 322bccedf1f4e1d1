#!/usr/bin/env node
// The CLI is written in TypeScript and run through tsx, so `npx katafleet` works right after `npm ci`.
// Both hooks: require() of .ts files, and dynamic import() (used for lazily loaded parts such as the control plane).
const { pathToFileURL } = require('node:url');

require('tsx/cjs');
import(pathToFileURL(require.resolve('tsx/esm')).href)
  .then(() => require('../cli/main.ts').main(process.argv.slice(2)))
  .then((code) => {
    process.exitCode = code;
  });
