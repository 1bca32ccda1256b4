// Socket.IO 4 under the same scenarios as switchyard: a connection joins room
// c<ch> from its query; POST /publish?ch=<n> emits the JSON body to that room.
// With --redis <url> it runs on the Redis adapter (the cluster scenario).
import http from 'node:http';
import { Server } from 'socket.io';

const args = Object.fromEntries(process.argv.slice(2).reduce((acc, a, i, all) => (a.startsWith('--') ? [...acc, [a.slice(2), all[i + 1]]] : acc), []));
const port = Number(args.port || 3000);

const server = http.createServer((req, res) => {
  const url = new URL(req.url, 'http://x');
  if (req.method === 'POST' && url.pathname === '/publish') {
    let body = '';
    req.on('data', (c) => (body += c));
    req.on('end', () => {
      io.to(`c${url.searchParams.get('ch') || 0}`).emit('bench', JSON.parse(body));
      res.writeHead(200, { 'Content-Length': 2 });
      res.end('{}');
    });
    return;
  }
  res.writeHead(404);
  res.end();
});
const io = new Server(server, { transports: ['websocket'], serveClient: false });
if (args.redis) {
  const { createClient } = await import('redis');
  const { createAdapter } = await import('@socket.io/redis-adapter');
  const pub = createClient({ url: args.redis });
  const sub = pub.duplicate();
  await Promise.all([pub.connect(), sub.connect()]);
  io.adapter(createAdapter(pub, sub));
}
io.on('connection', (socket) => socket.join(`c${socket.handshake.query.ch || 0}`));
server.listen(port, '127.0.0.1');
