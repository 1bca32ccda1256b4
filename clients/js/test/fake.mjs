// A scripted node for the SDK's unit tests of SPEC 15-16 frames: a `ws` server on a
// free port that answers `auth`, records every frame a client sends (with the time it
// arrived), answers requests through handlers the test sets, and sends whatever
// frames the test tells it to. The frames it sends are the ones SPEC 2, 15 and 16
// define; the real node is exercised by the *-node.test.mjs files.
import { WebSocketServer } from 'ws';
import { eventually } from '../../../tests/jskit/index.mjs';

/**
 * `handlers[type](msg, conn)` answers a client frame of that type: it returns a frame
 * or an array of frames to send back (each gets `timestamp`; a reply should carry
 * `id: msg.id`), or nothing. Without a handler `subscribe` is answered with
 * `subscribed {channel}`.
 */
export async function fakeNode(handlers = {}) {
  const wss = new WebSocketServer({ host: '127.0.0.1', port: 0 });
  await new Promise((r) => wss.once('listening', r));
  const node = {
    url: `ws://127.0.0.1:${wss.address().port}/ws`,
    handlers,
    /** Every connection: `{ws, received: [{...frame, at}], send(frame)}`, oldest first. */
    connections: [],
    /** The newest connection. */
    get conn() {
      return node.connections.at(-1);
    },
    /** Every frame of `type` the clients sent, over all connections, in order. */
    sent(type) {
      return node.connections.flatMap((c) => c.received.filter((f) => f.type === type));
    },
    /** Waits until the clients sent `n` frames of `type` (over all connections); returns them. */
    async waitSent(type, n = 1, ms) {
      await eventually(`${n} ${type} frame(s) from the client`, () => node.sent(type).length >= n, ms);
      return node.sent(type);
    },
    /** Sends a frame on the newest connection. */
    send(frame) {
      node.conn.send(frame);
    },
    close() {
      for (const c of node.connections) c.ws.terminate();
      wss.close();
    },
  };
  wss.on('connection', (ws) => {
    const conn = {
      ws,
      received: [],
      send(frame) {
        ws.send(JSON.stringify({ timestamp: new Date().toISOString(), ...frame }));
      },
    };
    node.connections.push(conn);
    ws.on('message', (data) => {
      const msg = JSON.parse(String(data));
      conn.received.push({ ...msg, at: performance.now() });
      if (msg.type === 'auth') {
        const payload = { user_id: 'u1', session_id: null, conn_id: `c${node.connections.length}`, node: 'fake', channels: [] };
        conn.send({ type: 'auth_success', id: msg.id, payload });
        return;
      }
      let reply;
      if (node.handlers[msg.type]) reply = node.handlers[msg.type](msg, conn);
      else if (msg.type === 'subscribe') reply = { type: 'subscribed', id: msg.id, payload: { channel: msg.payload.channel } };
      for (const f of [reply ?? []].flat()) conn.send(f);
    });
  });
  return node;
}

/** A publication as the node sends it. */
export function pub(channel, type, fields = {}) {
  return { type, channel, ...fields };
}
