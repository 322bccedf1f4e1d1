#!/usr/bin/env node
// The CLI is written in TypeScript and run through tsx, so `npx katafleet` works right after `npm ci`.
// tsx's CommonJS hook loads every command (cli/main.ts requires each one when it runs). Its ESM hook (dynamic
// import() of .ts files) starts a loader thread that costs 0.3–0.8 s, so the commands that answer at once
// (validate, help, version) run without it; the others get it.
const { pathToFileURL } = require('node:url');

require('tsx/cjs');
const argv = process.argv.slice(2);
const quick = argv.length === 0 || ['validate', 'help', '--help', '-h', '--version', '-V'].includes(argv[0]);
const hooks = quick ? Promise.resolve() : import(pathToFileURL(require.resolve('tsx/esm')).href);
hooks
  .then(() => require('../cli/main.ts').main(argv))
  .then((code) => {
    process.exitCode = code;
  });
