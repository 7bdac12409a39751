// Drives Debian's Chromium (headless) with playwright-core for tests/browser/test_browser_e2e.py.
//
//   node driver.js '<json options>'
//
// options: {executablePath, userDataDir, args: [...chromium flags...]}
// Then one JSON command per line on stdin, one JSON answer per line on stdout:
//   {"id": 1, "cmd": "goto", "page": "main", "url": "https://..."}
//   -> {"id": 1, "ok": true, "value": ...} | {"id": 1, "ok": false, "error": "..."}
// The pytest side steps the browser between fleet actions (set-upstream, SIGTERM), so the
// browser lives as long as the test module. Closing stdin (or "quit") closes Chromium.
//
// Every page gets an init script that wraps window.WebSocket and records each socket's URL
// and events in window.__wsLog (create/open/message/close with code/error), so a test sees a
// close code even when the page reconnects 500 ms later. Console messages, page errors,
// DevTools issues (Audits domain: cookie, CORS, mixed-content problems the Issues panel
// shows) and every response (url, status) are collected per page.
'use strict';

const readline = require('readline');
const { chromium } = require('playwright-core');

const WS_HOOK = `(() => {
  if (window.__wsLog) return;
  const Native = window.WebSocket;
  const log = [];
  let next = 0;
  window.__wsLog = log;
  window.__wsSockets = {};
  class RecordedWebSocket extends Native {
    constructor(url, protocols) {
      super(url, protocols);
      const id = ++next;
      window.__wsSockets[id] = this;
      log.push({ id, ev: 'create', url: this.url, t: Date.now() });
      this.addEventListener('open', () => log.push({ id, ev: 'open', t: Date.now() }));
      this.addEventListener('message', (e) => log.push({
        id, ev: 'message', t: Date.now(),
        data: typeof e.data === 'string' ? e.data : '(binary)' }));
      this.addEventListener('error', () => log.push({ id, ev: 'error', t: Date.now() }));
      this.addEventListener('close', (e) => log.push({
        id, ev: 'close', code: e.code, reason: e.reason, clean: e.wasClean, t: Date.now() }));
    }
  }
  window.WebSocket = RecordedWebSocket;
})();`;

function send(obj) {
  process.stdout.write(JSON.stringify(obj) + '\n');
}

async function main() {
  const options = JSON.parse(process.argv[2]);
  const context = await chromium.launchPersistentContext(options.userDataDir, {
    executablePath: options.executablePath,
    headless: true,
    args: options.args,
    viewport: { width: 1000, height: 700 },
    timeout: 30000,
  });
  await context.addInitScript({ content: WS_HOOK });

  const pages = {};   // name -> {page, console: [], issues: [], responses: []}

  async function track(name, page) {
    const entry = { page, console: [], issues: [], responses: [] };
    page.on('console', (m) => entry.console.push({
      type: m.type(), text: m.text(), url: (m.location() || {}).url || '' }));
    page.on('pageerror', (e) => entry.console.push({ type: 'pageerror', text: String(e) }));
    page.on('response', (r) => entry.responses.push({
      url: r.url(), status: r.status(), method: r.request().method(),
      navigation: r.request().isNavigationRequest() }));
    const cdp = await context.newCDPSession(page);
    cdp.on('Audits.issueAdded', (e) => entry.issues.push(e.issue));
    await cdp.send('Audits.enable');
    pages[name] = entry;
    return entry;
  }

  async function pageOf(name) {
    if (pages[name]) return pages[name];
    const existing = context.pages().find((p) => !Object.values(pages).some((e) => e.page === p));
    return track(name, existing || await context.newPage());
  }

  const handlers = {
    async goto(c) {
      const e = await pageOf(c.page);
      const resp = await e.page.goto(c.url, { waitUntil: 'load', timeout: c.timeout || 15000 });
      return { url: e.page.url(), status: resp ? resp.status() : null };
    },
    async eval(c) {
      const e = await pageOf(c.page);
      return e.page.evaluate(c.expr);
    },
    async waitFor(c) {
      const e = await pageOf(c.page);
      const handle = await e.page.waitForFunction(c.expr, null,
                                                  { timeout: c.timeout || 10000, polling: 25 });
      return handle.jsonValue();
    },
    async click(c) {
      const e = await pageOf(c.page);
      await e.page.click(c.selector, { timeout: c.timeout || 5000 });
      return true;
    },
    async fill(c) {
      const e = await pageOf(c.page);
      await e.page.fill(c.selector, c.value, { timeout: c.timeout || 5000 });
      return true;
    },
    async text(c) {
      const e = await pageOf(c.page);
      return e.page.textContent(c.selector, { timeout: c.timeout || 5000 });
    },
    async cookies(c) {
      return context.cookies(c.urls || []);
    },
    async console(c) { return (await pageOf(c.page)).console; },
    async issues(c) { return (await pageOf(c.page)).issues; },
    async responses(c) { return (await pageOf(c.page)).responses; },
    async screenshot(c) {
      const e = await pageOf(c.page);
      await e.page.screenshot({ path: c.path, fullPage: true });
      return c.path;
    },
    async closePage(c) {
      const e = pages[c.page];
      if (e) { await e.page.close(); delete pages[c.page]; }
      return true;
    },
    async version() { return context.browser() ? context.browser().version() : null; },
  };

  let closing = false;
  async function shutdown(code) {
    if (closing) return;
    closing = true;
    try { await context.close(); } catch (err) { /* already gone */ }
    process.exit(code);
  }

  send({ id: 0, ok: true, value: 'ready' });
  const rl = readline.createInterface({ input: process.stdin });
  // Commands run one at a time, in order.
  let chain = Promise.resolve();
  rl.on('line', (line) => {
    chain = chain.then(async () => {
      let c;
      try { c = JSON.parse(line); } catch (err) { send({ id: null, ok: false, error: 'bad json' }); return; }
      if (c.cmd === 'quit') { send({ id: c.id, ok: true, value: 'bye' }); await shutdown(0); return; }
      const h = handlers[c.cmd];
      if (!h) { send({ id: c.id, ok: false, error: `unknown command ${c.cmd}` }); return; }
      try {
        send({ id: c.id, ok: true, value: await h(c) });
      } catch (err) {
        send({ id: c.id, ok: false, error: String(err && err.stack || err) });
      }
    });
  });
  rl.on('close', () => { chain.then(() => shutdown(0)); });
}

main().catch((err) => {
  process.stderr.write(`driver: ${err && err.stack || err}\n`);
  process.exit(1);
});
