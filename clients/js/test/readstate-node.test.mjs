// Read state and receipts (SPEC 15.1-15.3, 19) with the SDK against a real node
// (SWITCHYARD_BIN) configured with the namespaces of realnode.mjs.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import WebSocket from 'ws';
import { startNode, startRedis, eventually, next, recordingWebSocket } from '../../../tests/jskit/index.mjs';
import { NAMESPACES, connectAs, get } from './realnode.mjs';

/** The node's lifecycle events (SPEC 17): the entries of the Redis stream, fields decoded. */
function events(redis) {
  const out = JSON.parse(redis.cli('--json', 'XRANGE', 'switchyard:events', '-', '+'));
  return out.map(([, f]) => Object.fromEntries(Array.from({ length: f.length / 2 }, (_, i) => [f[2 * i], f[2 * i + 1]])));
}

test('read state across two devices: unread counts, markRead, the pushed read, client.unread, /api/unread', async (t) => {
  const node = await startNode(NAMESPACES);
  t.after(() => node.stop());
  for (const i of [1, 2, 3]) await node.publish('inbox:u1', 'message', { i });
  const phone = connectAs(t, node, 'u1');
  const laptop = connectAs(t, node, 'u1');
  const onPhone = phone.subscribe('inbox:u1');
  const onLaptop = laptop.subscribe('inbox:u1');
  const first = next(onPhone, 'subscribed');
  await Promise.all([onPhone.ready(), onLaptop.ready()]);
  const s = await first;
  assert.deepEqual([s.offset, s.read_offset, s.unread], [3, 0, 3], 'subscribed carries read_offset and unread');
  for (const sub of [onPhone, onLaptop]) assert.deepEqual([sub.readOffset, sub.unread], [0, 3]);
  await node.publish('inbox:u1', 'message', { i: 4 });
  await eventually('both count the new message', () => onPhone.unread === 4 && onLaptop.unread === 4);

  const pushed = next(onPhone, 'read');
  const reply = await onLaptop.markRead(3);
  assert.deepEqual(reply, { channel: 'inbox:u1', read_offset: 3, unread: 1 });
  assert.deepEqual(await pushed, { read_offset: 3, unread: 1 }, 'the phone hears the laptop read');
  assert.deepEqual([onPhone.readOffset, onPhone.unread], [3, 1]);
  assert.deepEqual([onLaptop.readOffset, onLaptop.unread], [3, 1]);

  const back = await onLaptop.markRead(1);
  assert.equal(back.read_offset, 3, 'a lower offset is a no-op');
  await assert.rejects(onLaptop.markRead(99), (e) => e.code === 'invalid_payload', 'beyond the newest offset');

  const expected = { channel: 'inbox:u1', offset: 4, read_offset: 3, unread: 1 };
  assert.deepEqual((await laptop.unread()).channels, [expected]);
  assert.deepEqual((await laptop.unread(['inbox:u1'])).channels, [expected]);
  assert.deepEqual((await get(node, '/api/unread/u1')).channels, [expected]);

  const tablet = connectAs(t, node, 'u1');
  const onTablet = tablet.subscribe('inbox:u1');
  await onTablet.ready();
  assert.deepEqual([onTablet.readOffset, onTablet.unread], [3, 1], 'a third device starts from the shared position');
  await onPhone.markRead();
  await eventually('every device at zero', () => [onPhone, onLaptop, onTablet].every((sub) => sub.unread === 0 && sub.readOffset === 4));
});

test('receipts: the SDK confirms what reached the application; the node records one received event per (user, offset)', async (t) => {
  const redis = await startRedis();
  t.after(() => redis.stop());
  const node = await startNode(`broker = "redis"\nredis.url = "${redis.url}"\n${NAMESPACES}`);
  t.after(() => node.stop());
  const wires = [recordingWebSocket(WebSocket), recordingWebSocket(WebSocket)];
  const devices = wires.map((wire) => connectAs(t, node, 'u7', { websocket: wire.WebSocket }));
  const subs = devices.map((c) => c.subscribe('inbox:u7'));
  await Promise.all(subs.map((s) => s.ready()));
  assert.deepEqual(subs.map((s) => s.receipts), [true, true], 'read_state channel: receipts on');
  for (const i of [1, 2, 3]) await node.publish('inbox:u7', 'message', { i });
  const confirmedBy = (wire) => wire.connections[0].sent.filter((f) => f.type === 'received').flatMap((f) => f.payload.offsets);
  await eventually('both devices confirmed 1-3', () => wires.every((w) => confirmedBy(w).length === 3));
  for (const w of wires) {
    assert.deepEqual(confirmedBy(w), [1, 2, 3]);
    for (const f of w.connections[0].sent.filter((x) => x.type === 'received')) {
      assert.deepEqual(Object.keys(f).sort(), ['payload', 'type'], 'no id: received has no reply');
      assert.equal(f.payload.channel, 'inbox:u7');
    }
  }
  // The node handles a connection's frames in order: once it answered this
  // mark_read, the receipts sent before it were handled too.
  await subs[1].markRead(3);
  await eventually('the read event', () => events(redis).some((e) => e.event === 'read'));
  const received = events(redis).filter((e) => e.event === 'received' && e.channel === 'inbox:u7');
  assert.deepEqual(received.map((e) => JSON.parse(e.data).offset).sort(), [1, 2, 3], 'once per user, however many devices');
  assert.ok(received.every((e) => e.user_id === 'u7'));
  const read = events(redis).filter((e) => e.event === 'read');
  assert.deepEqual(read.map((e) => JSON.parse(e.data)), [{ read_offset: 3 }]);
});

test('fallback: a publication the SDK confirmed in time fires no undelivered event; one nobody got does', async (t) => {
  const redis = await startRedis();
  t.after(() => redis.stop());
  const toml = `broker = "redis"\nredis.url = "${redis.url}"\n${NAMESPACES}\n[namespaces.user]\nreceipts = true\nhistory_size = 10\nhistory_ttl = "1h"\n`;
  const node = await startNode(toml);
  t.after(() => node.stop());
  const client = connectAs(t, node, 'u8');
  // The user: channel is auto-subscribed; subscribing it explicitly routes it to a
  // Subscription, which confirms with `receipts: true` (the namespace has no read state).
  const own = client.subscribe('user:u8', { receipts: true });
  await own.ready();
  const got = next(own, 'publication');
  await node.api('/api/publish', { channel: 'user:u8', type: 'notification', payload: { n: 1 }, fallback: { after: '1s', data: { email: 'u8@example.com' } } });
  await got;
  await node.api('/api/publish', { channel: 'user:u9', type: 'notification', payload: { n: 2 }, fallback: { after: '1s', data: { email: 'u9@example.com' } } });
  // u9's deadline falls after u8's: once it fired, u8's has passed too.
  await eventually('u9 undelivered', () => events(redis).some((e) => e.event === 'undelivered' && e.user_id === 'u9'), 10000);
  const undelivered = events(redis).filter((e) => e.event === 'undelivered');
  assert.deepEqual(undelivered.map((e) => [e.user_id, e.channel]), [['u9', 'user:u9']]);
  const data = JSON.parse(undelivered[0].data);
  assert.deepEqual([data.offset, data.type, data.payload, data.data], [1, 'notification', { n: 2 }, { email: 'u9@example.com' }]);
  assert.ok(events(redis).some((e) => e.event === 'received' && e.user_id === 'u8'), 'the SDK confirmed u8\'s');
});
