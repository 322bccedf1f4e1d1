// The workflow bundle, built in a short-lived child process (issue 13, worker RSS): webpack's bundling takes about
// 125 MB that the worker's V8 heap never gives back, so the worker loads the finished code instead of bundling
// itself. The Temporal SDK's advice for production is the same (bundle ahead, pass `workflowBundle`).
import { execFile } from 'node:child_process';

/** The child's program: bundles `workflowsPath` and writes the code to stdout. */
const bundleProgram = `
const { bundleWorkflowCode } = require('@temporalio/worker');
bundleWorkflowCode({ workflowsPath: process.argv[1], logger: { log() {}, trace() {}, debug() {}, info() {}, warn(m) { process.stderr.write(m + '\\n'); }, error(m) { process.stderr.write(m + '\\n'); } } })
  .then((bundle) => process.stdout.write(bundle.code), (err) => { process.stderr.write(String(err && err.stack || err)); process.exit(1); });
`;

/**
 * The bundled code of `workflowsPath`, built by a child node process (its memory is returned to the system when it
 * exits). Rejects with the child's error output when bundling fails.
 */
export function bundleInChildProcess(workflowsPath: string, timeoutMs = 300_000): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(process.execPath, ['-e', bundleProgram, workflowsPath], { maxBuffer: 256 * 1024 * 1024, timeout: timeoutMs, encoding: 'utf8' }, (err, stdout, stderr) => {
      if (err) reject(new Error(`bundling the workflows (${workflowsPath}) in a child process failed: ${stderr.trim() || err.message}`, { cause: err }));
      else resolve(stdout);
    });
  });
}
