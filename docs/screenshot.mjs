// Screenshot of a Temporal Web UI page with headless Chromium, through the DevTools protocol.
// `chromium --screenshot` is enough for a closed workflow; the page of a running one keeps polling, so
// `--virtual-time-budget` never settles and `--timeout` shoots before the SPA has rendered.
//
//   node --experimental-websocket docs/screenshot.mjs URL OUT.png [waitMs=8000] [width=1400] [height=1000] [click=TEXT | scroll=TEXT]...
// click=TEXT clicks the element whose text is TEXT (a tab, say); scroll=TEXT scrolls it to the top.
import { spawn } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const [url, out, waitMs = '8000', width = '1400', height = '1000', ...actions] = process.argv.slice(2);
if (!url || !out) {
  process.stderr.write('usage: node --experimental-websocket docs/screenshot.mjs URL OUT.png [waitMs] [width] [height] [click=TEXT | scroll=TEXT]...\n');
  process.exit(2);
}
const port = 9300 + Math.floor(Math.random() * 500);
const browser = spawn('chromium', [
  '--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--disable-sync',
  '--no-first-run', `--user-data-dir=${mkdtempSync(join(tmpdir(), 'kf-chromium-'))}`, `--window-size=${width},${height}`,
  `--remote-debugging-port=${port}`, '--remote-debugging-address=127.0.0.1', 'about:blank',
], { stdio: 'ignore' });
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
try {
  let target;
  for (let i = 0; i < 100 && !target; i++) {
    await sleep(200);
    target = await fetch(`http://127.0.0.1:${port}/json/list`).then((r) => r.json()).then((list) => list.find((t) => t.type === 'page')).catch(() => undefined);
  }
  if (!target) throw new Error(`chromium did not open its DevTools port ${port}`);
  const socket = new WebSocket(target.webSocketDebuggerUrl);
  await new Promise((resolve, reject) => { socket.onopen = resolve; socket.onerror = reject; });
  let id = 0;
  const pending = new Map();
  socket.onmessage = (message) => {
    const data = JSON.parse(message.data);
    if (data.id && pending.has(data.id)) {
      pending.get(data.id)(data);
      pending.delete(data.id);
    }
  };
  const send = (method, params = {}) => new Promise((resolve) => {
    pending.set(++id, resolve);
    socket.send(JSON.stringify({ id, method, params }));
  });
  await send('Emulation.setDeviceMetricsOverride', { width: Number(width), height: Number(height), deviceScaleFactor: 1, mobile: false });
  await send('Page.navigate', { url });
  await sleep(Number(waitMs));
  for (const action of actions) {
    const [verb, text] = [action.slice(0, action.indexOf('=')), action.slice(action.indexOf('=') + 1)];
    const act = verb === 'click' ? 'el.click()' : "el.scrollIntoView({ block: 'start' })";
    const expression = `(() => { const el = [...document.querySelectorAll('body *')].find((e) => e.textContent.trim() === ${JSON.stringify(text)} && ![...e.children].some((c) => c.textContent.trim() === ${JSON.stringify(text)})); if (el) ${act}; return Boolean(el); })()`;
    const found = await send('Runtime.evaluate', { expression, returnByValue: true });
    if (!found.result?.result?.value) process.stderr.write(`"${text}" not found on the page (${action})\n`);
    await sleep(1500);
  }
  const shot = await send('Page.captureScreenshot', { format: 'png' });
  writeFileSync(out, Buffer.from(shot.result.data, 'base64'));
  process.stdout.write(`${out}\n`);
  socket.close();
} finally {
  browser.kill('SIGKILL');
}
