#include "deploy/demo/frontend_page.h"

namespace onedomain::demo {
namespace {

// Element ids are part of the contract with the browser tests: #login, #login-status,
// #me-session, #ws-status ("open" / "closed <code>"), #ws-session, #ws-instance,
// #ws-reconnects, #ws-echo. Query: ?auto=1 logs in without a click, ?chat=ID picks the chat.
constexpr std::string_view kPage = R"HTML(<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>onedomain demo</title>
<style>
  body { font: 15px system-ui, sans-serif; margin: 2em auto; max-width: 42em; padding: 0 1em; }
  dl { display: grid; grid-template-columns: 14em 1fr; gap: .3em 1em; }
  dt { font-weight: 600; }
  dd { margin: 0; font-family: monospace; word-break: break-all; }
</style>
</head>
<body>
<h1>onedomain demo</h1>
<p><button id="login">Log in</button> <span id="login-status">checking session&hellip;</span></p>
<dl>
  <dt>HTTP session (/api/v1/me)</dt><dd id="me-session">-</dd>
  <dt>WebSocket status</dt><dd id="ws-status">not connected</dd>
  <dt>WebSocket session</dt><dd id="ws-session">-</dd>
  <dt>Backend instance</dt><dd id="ws-instance">-</dd>
  <dt>Reconnects</dt><dd id="ws-reconnects">0</dd>
  <dt>Last echo</dt><dd id="ws-echo">-</dd>
</dl>
<p><input id="message" value="hello"> <button id="send">Send</button></p>
<script>
'use strict';
const params = new URLSearchParams(location.search);
const chatId = params.get('chat') || 'demo';
const el = (id) => document.getElementById(id);
let ws = null;
let reconnects = 0;

function login() { location.href = '/api/v1/auth/login'; }

async function checkSession() {
  let res;
  try {
    res = await fetch('/api/v1/me', { credentials: 'same-origin' });
  } catch (err) {
    el('login-status').textContent = 'error: ' + err;
    return;
  }
  if (res.status === 401) {
    el('login-status').textContent = 'not logged in';
    // The callback redirects to "/" without ?auto=1, so this cannot loop.
    if (params.get('auto') === '1') login();
    return;
  }
  const me = await res.json();
  el('login-status').textContent = 'logged in';
  el('me-session').textContent = me.session;
  connect();
}

function connect() {
  const scheme = location.protocol === 'https:' ? 'wss://' : 'ws://';
  ws = new WebSocket(scheme + location.host + '/ws/chat/' + encodeURIComponent(chatId));
  el('ws-status').textContent = 'connecting';
  ws.onopen = () => { el('ws-status').textContent = 'open'; };
  ws.onmessage = (event) => {
    let msg = null;
    try { msg = JSON.parse(event.data); } catch (err) { /* not JSON: an echo */ }
    if (msg && msg.type === 'hello') {
      el('ws-session').textContent = msg.session === null ? 'null' : msg.session;
      el('ws-instance').textContent = msg.instance;
    } else {
      el('ws-echo').textContent = typeof event.data === 'string' ? event.data : '(binary)';
    }
  };
  ws.onclose = (event) => {
    el('ws-status').textContent = 'closed ' + event.code;
    setTimeout(() => {
      reconnects += 1;
      el('ws-reconnects').textContent = String(reconnects);
      connect();
    }, 500);
  };
}

el('login').addEventListener('click', login);
el('send').addEventListener('click', () => {
  if (ws && ws.readyState === WebSocket.OPEN) ws.send(el('message').value);
});
checkSession();
</script>
</body>
</html>
)HTML";

}  // namespace

std::string_view FrontendPage() { return kPage; }

}  // namespace onedomain::demo
