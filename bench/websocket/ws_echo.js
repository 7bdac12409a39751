// A Node.js WebSocket echo backend (the npm `ws` package), for
// `BACKEND=node bench/websocket/run.sh`: the kind of application onedomain fronts (the site it
// replaced was an Express app). Echoes every message back with the same type, on any path.
//
//   node ws_echo.js --port-file F
//
// Listens on 127.0.0.1 with a port the kernel picks, written to F (written to F.tmp and
// renamed). SIGTERM/SIGINT stop it with exit status 0.
'use strict';

const fs = require('fs');
const http = require('http');
const path = require('path');
const toolsDir = process.env.ONEDOMAIN_NODE_TOOLS ||
  path.join(__dirname, '..', '..', '.tools', 'bench-node');
const {WebSocketServer} = require(path.join(toolsDir, 'node_modules', 'ws'));

const args = process.argv.slice(2);
if (args.length !== 2 || args[0] !== '--port-file') {
  console.error('usage: node ws_echo.js --port-file F');
  process.exit(2);
}
const portFile = args[1];

const server = http.createServer((req, res) => {
  res.writeHead(426, {'Content-Type': 'text/plain'});
  res.end('WebSocket only\n');
});
const wss = new WebSocketServer({server, perMessageDeflate: false, maxPayload: 16 << 20});
wss.on('connection', (ws) => {
  ws.on('message', (data, isBinary) => ws.send(data, {binary: isBinary, compress: false}));
  ws.on('error', () => ws.terminate());
});
server.listen(0, '127.0.0.1', () => {
  fs.writeFileSync(`${portFile}.tmp`, `${server.address().port}\n`);
  fs.renameSync(`${portFile}.tmp`, portFile);
});
for (const sig of ['SIGTERM', 'SIGINT']) process.on(sig, () => process.exit(0));
