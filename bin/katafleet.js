#!/bin/sh
':' //; # A shell script and a node script at once: sh runs these ':' lines, node reads them as strings and comments.
':' //; # `katafleet worker` and `katafleet up` run a worker, whose memory depends on two settings read only when the
':' //; # process starts (docs/scale.md "Worker memory"): glibc's MALLOC_ARENA_MAX and the main thread's V8 semi-space.
':' //; # They are set here, before node starts and in the same process (exec): a node launcher that re-starts itself
':' //; # would cost a second process. A value the user gave is kept; KATAFLEET_MEMORY_DEFAULTS=0 sets neither.
':' //; if [ "$KATAFLEET_MEMORY_DEFAULTS" != 0 ] && { [ "$1" = worker ] || [ "$1" = up ]; }; then
':' //;   [ -n "$MALLOC_ARENA_MAX" ] || export MALLOC_ARENA_MAX=2
':' //;   case " $NODE_OPTIONS " in *--max[-_]semi[-_]space[-_]size*) ;; *) exec node --max-semi-space-size=2 "$0" "$@" ;; esac
':' //; fi
':' //; exec node "$0" "$@"

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
