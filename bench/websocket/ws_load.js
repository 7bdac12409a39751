// WebSocket ping-pong load from Node.js with the `ws` package: the client most Node services
// use, and the one issue 21's independent benchmark ran. bench/websocket/run.sh runs it with
// CLIENT=node in place of the C++ ws_load and reads the same "result" line.
//
//   node ws_load.js --target HOST:PORT --conns N --size BYTES --duration S --warmup S
//                   [--path /ws/bench] [--origin URL] [--cookie "a=b; c=d"]
//
// Every connection sends one binary message of BYTES, waits for its echo, checks it and sends
// the next. Round trips that end inside the window [warm-up end, + duration] are counted and
// timed. Prints
//   result rate=... round_trips=... p50_us=... p99_us=... max_us=... errors=... open_failed=...
//          declined=... close_errors=... timed_out=... all_round_trips=...
// Exit status: 0 all well, 1 errors, 3 the target declined every upgrade
// ("declined http_status=..." is printed first).
'use strict';

const path = require('path');
const toolsDir = process.env.ONEDOMAIN_NODE_TOOLS ||
  path.join(__dirname, '..', '..', '.tools', 'bench-node');
const WebSocket = require(path.join(toolsDir, 'node_modules', 'ws'));

function parseArgs(argv) {
  const o = {conns: 100, size: 64, duration: 3, warmup: 1, path: '/ws/bench', origin: '',
             cookie: '', target: ''};
  for (let i = 2; i < argv.length; i += 2) {
    const k = argv[i].replace(/^--/, '');
    const v = argv[i + 1];
    if (!(k in o) || v === undefined) {
      console.error(`ws_load.js: unknown or incomplete flag ${argv[i]}`);
      process.exit(2);
    }
    o[k] = typeof o[k] === 'number' ? Number(v) : v;
    if (typeof o[k] === 'number' && !(o[k] >= 0)) {
      console.error(`ws_load.js: --${k} wants a number >= 0, got ${v}`);
      process.exit(2);
    }
  }
  if (!/^[0-9.]+:[0-9]+$/.test(o.target)) {
    console.error('ws_load.js: --target HOST:PORT (a loopback address) is required');
    process.exit(2);
  }
  return o;
}

const o = parseArgs(process.argv);
const payload = Buffer.alloc(o.size);
for (let i = 0; i < o.size; i++) payload[i] = (i * 31 + 7) & 0xff;

// Round-trip times in microseconds, one per counted round trip (100 connections x 50k/s x
// 10 s is 500k numbers: a few MB).
const samples = [];
let roundTrips = 0, allRoundTrips = 0, errors = 0, openFailed = 0, declined = 0;
let closeErrors = 0, declinedStatus = 0, firstError = '';
let opened = 0, settled = 0;
const sockets = [];
let windowStart = 0n, windowEnd = 0n, stopping = false;

function noteError(what) {
  if (!firstError) firstError = what;
}

function send(ws, state) {
  state.sentAt = process.hrtime.bigint();
  ws.send(payload, {binary: true, compress: false}, (err) => {
    if (err && !stopping) { errors++; noteError(`send: ${err.message}`); }
  });
}

function startAll() {
  const now = process.hrtime.bigint();
  windowStart = now + BigInt(Math.round(o.warmup * 1e9));
  windowEnd = windowStart + BigInt(Math.round(o.duration * 1e9));
  for (const [ws, state] of sockets) send(ws, state);
  setTimeout(finish, Math.ceil((o.warmup + o.duration) * 1000) + 20);
}

function maybeStart() {
  if (settled !== o.conns) return;
  if (opened === 0) return finish();
  startAll();
}

function finish() {
  stopping = true;
  for (const [ws] of sockets) {
    try { ws.terminate(); } catch (e) { closeErrors++; }
  }
  if (declined > 0) console.log(`declined http_status=${declinedStatus} count=${declined}`);
  samples.sort((a, b) => a - b);
  const q = (p) => samples.length ? samples[Math.min(samples.length - 1,
                                                     Math.floor(p * samples.length))] : 0;
  const secs = Number(windowEnd - windowStart) / 1e9;
  const max = samples.length ? samples[samples.length - 1] : 0;
  console.log(`result rate=${secs > 0 ? Math.round(roundTrips / secs) : 0} ` +
              `round_trips=${roundTrips} p50_us=${q(0.5).toFixed(1)} ` +
              `p99_us=${q(0.99).toFixed(1)} max_us=${max.toFixed(1)} ` +
              `errors=${errors} open_failed=${openFailed} declined=${declined} ` +
              `close_errors=${closeErrors} timed_out=0 all_round_trips=${allRoundTrips}`);
  if (firstError) console.log(`first_error ${firstError}`);
  const ok = errors === 0 && openFailed === 0 && declined === 0 && closeErrors === 0;
  process.exitCode = ok ? 0 : (declined > 0 && opened === 0 ? 3 : 1);
  // Sockets are terminated; nothing else keeps the loop alive.
  setImmediate(() => process.exit(process.exitCode));
}

for (let i = 0; i < o.conns; i++) {
  const headers = {};
  if (o.cookie) headers.Cookie = o.cookie;
  const ws = new WebSocket(`ws://${o.target}${o.path}`, {
    origin: o.origin || undefined, headers, perMessageDeflate: false, maxPayload: o.size + 1024,
  });
  const state = {sentAt: 0n, settled: false, declined: false};
  ws.on('open', () => {
    state.settled = true;
    opened++; settled++;
    sockets.push([ws, state]);
    maybeStart();
  });
  ws.on('unexpected-response', (req, res) => {
    state.settled = state.declined = true;
    declined++; settled++;
    declinedStatus = res.statusCode;
    res.resume();
    req.destroy();
    maybeStart();
  });
  ws.on('message', (data) => {
    if (stopping) return;
    const done = process.hrtime.bigint();
    allRoundTrips++;
    if (data.length !== o.size || !data.equals(payload)) {
      errors++;
      noteError(`echo of ${data.length} bytes does not match the ${o.size} sent`);
    }
    if (done >= windowStart && done <= windowEnd) {
      roundTrips++;
      samples.push(Number(done - state.sentAt) / 1000);
    }
    if (done <= windowEnd) send(ws, state);
  });
  ws.on('error', (err) => {
    if (stopping) return;
    if (!state.settled) {
      state.settled = true;
      openFailed++; settled++;
      noteError(`open: ${err.message}`);
      maybeStart();
      return;
    }
    if (state.declined) return;  // the upgrade request aborted after a decline
    errors++;
    noteError(err.message);
  });
  ws.on('close', (code) => {
    if (!stopping && !state.declined && settled === o.conns && opened > 0) {
      closeErrors++;
      noteError(`closed by the peer with code ${code} during the run`);
    }
  });
}
// A run that never gets all its connections settled ends after 30 s with what it has.
setTimeout(() => {
  if (stopping) return;
  noteError('connections did not all open in 30 s');
  finish();
}, 30000).unref();
