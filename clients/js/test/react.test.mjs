// The React bindings (src/react.js, SPEC 19) with a real React (react-test-renderer)
// against a scripted node (test/fake.mjs): useChannelState, useUnread,
// usePresenceCount, and the existing useSubscription / useConnectionState; hooks of
// one channel share its subscription and the last to unmount ends it.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import React from 'react';
import TestRenderer from 'react-test-renderer';
import WebSocket from 'ws';
import { Switchyard } from '../src/index.js';
import { useChannelState, useUnread, usePresenceCount, useSubscription, useConnectionState } from '../src/react.js';
import { eventually } from '../../../tests/jskit/index.mjs';
import { fakeNode, pub } from './fake.mjs';

// Updates come from socket events, outside act(): React schedules them itself.
globalThis.IS_REACT_ACT_ENVIRONMENT = false;

const h = React.createElement;
const opts = { websocket: WebSocket, token: 't', minReconnectDelay: 20, maxReconnectDelay: 60, timeout: 2000 };
const subscribed = (msg, fields) => ({ type: 'subscribed', id: msg.id, payload: { channel: msg.payload.channel, ...fields } });

/** A node whose stock: channels have a snapshot, inbox: read state, live: a presence count. */
async function scripted(t) {
  const node = await fakeNode({
    subscribe: (msg) => {
      const channel = msg.payload.channel;
      if (channel.startsWith('stock:')) {
        return [
          subscribed(msg, { offset: 1, epoch: 'e' }),
          { type: 'snapshot', payload: { channel, offset: 1, epoch: 'e', full: true, entries: [{ key: 'a', offset: 1, payload: { n: 1 }, timestamp: 't' }] } },
        ];
      }
      if (channel.startsWith('inbox:')) return subscribed(msg, { offset: 2, epoch: 'e', read_offset: 0, unread: 2 });
      if (channel.startsWith('live:')) return [subscribed(msg, {}), { type: 'presence_count', payload: { channel, count: 5, users: 4 } }];
      return subscribed(msg, { offset: 0, epoch: 'e' });
    },
    mark_read: (msg) => ({ type: 'read', id: msg.id, payload: { channel: msg.payload.channel, read_offset: msg.payload.offset, unread: 3 - msg.payload.offset } }),
  });
  t.after(() => node.close());
  const client = new Switchyard(node.url, opts);
  t.after(() => client.disconnect());
  client.connect();
  return { node, client };
}

/** Renders `useHook(...args)` in a component; `renders` holds every value it returned. */
function renderHook(useHook, ...args) {
  const renders = [];
  function Probe() {
    renders.push(useHook(...args));
    return null;
  }
  const renderer = TestRenderer.create(h(Probe));
  return { renders, latest: () => renders.at(-1), unmount: () => renderer.unmount() };
}

test('useChannelState: the values map, a new Map object on every change and the same one in between', async (t) => {
  const { node, client } = await scripted(t);
  const view = renderHook(useChannelState, client, 'stock:shoes', { keys: ['a', 'b'] });
  assert.equal(view.latest().size, 0, 'empty before the snapshot');
  await eventually('the snapshot', () => view.latest().get('a')?.n === 1);
  assert.deepEqual(node.sent('subscribe')[0].payload, { channel: 'stock:shoes', keys: ['a', 'b'] });
  const afterSnapshot = view.latest();
  node.send(pub('stock:shoes', 'level', { key: 'b', offset: 2, payload: { n: 2 } }));
  await eventually('b', () => view.latest().has('b'));
  const afterChange = view.latest();
  assert.notEqual(afterChange, afterSnapshot, 'a new Map object');
  assert.deepEqual([...afterSnapshot], [['a', { n: 1 }]], 'the earlier one was not changed under React');
  assert.deepEqual([...afterChange], [['a', { n: 1 }], ['b', { n: 2 }]]);
  const sub = client.getSubscription('stock:shoes');
  assert.notEqual(afterChange, sub.values, 'a copy, not the SDK\'s own map');
  node.send(pub('stock:shoes', 'level', { key: 'a', offset: 3, delta: true, base: 1, payload: { m: 3 } }));
  await eventually('the delta', () => view.latest().get('a').m === 3);
  assert.deepEqual(view.latest().get('a'), { n: 1, m: 3 });
  const distinct = new Set(view.renders);
  assert.equal(distinct.size, 4, 'one Map per state: empty, snapshot, b, delta');
  view.unmount();
  await node.waitSent('unsubscribe');
  assert.equal(client.getSubscription('stock:shoes'), null);
});

test('useUnread: the count kept current and markRead', async (t) => {
  const { node, client } = await scripted(t);
  const view = renderHook(useUnread, client, 'inbox:u1');
  assert.equal(view.latest().unread, 0);
  await eventually('the subscribed count', () => view.latest().unread === 2);
  node.send(pub('inbox:u1', 'msg', { offset: 3, payload: {} }));
  await eventually('a new message', () => view.latest().unread === 3);
  const reply = await view.latest().markRead(2);
  assert.deepEqual(reply, { channel: 'inbox:u1', read_offset: 2, unread: 1 });
  await eventually('read', () => view.latest().unread === 1);
  await view.latest().markRead();
  assert.deepEqual(node.sent('mark_read').map((f) => f.payload.offset), [2, 3]);
  await eventually('all read', () => view.latest().unread === 0);
  node.send({ type: 'read', payload: { channel: 'inbox:u1', read_offset: 3, unread: 0 } });
  node.send(pub('inbox:u1', 'msg', { offset: 4, payload: {} }));
  await eventually('one more', () => view.latest().unread === 1);
  view.unmount();
});

test('usePresenceCount: {count, users} from presence_count frames', async (t) => {
  const { node, client } = await scripted(t);
  const view = renderHook(usePresenceCount, client, 'live:show');
  assert.deepEqual(view.latest(), { count: 0, users: 0 });
  await eventually('the first count', () => view.latest().count === 5);
  assert.deepEqual(view.latest(), { count: 5, users: 4 });
  node.send({ type: 'presence_count', payload: { channel: 'live:show', count: 7, users: 6 } });
  await eventually('the next count', () => view.latest().count === 7);
  assert.deepEqual(view.latest(), { count: 7, users: 6 });
  view.unmount();
});

test('hooks of one channel share its subscription; the last to unmount ends it; an application\'s own subscription stays', async (t) => {
  const { node, client } = await scripted(t);
  const values = renderHook(useChannelState, client, 'stock:x');
  const pubs = [];
  const listener = renderHook(useSubscription, client, 'stock:x', (p) => pubs.push(p.offset));
  await eventually('subscribed', () => client.getSubscription('stock:x')?.state === 'subscribed');
  await eventually('the snapshot', () => values.latest().size === 1);
  node.send(pub('stock:x', 'level', { key: 'c', offset: 2, payload: 1 }));
  await eventually('the publication', () => pubs.includes(2) && values.latest().has('c'));
  assert.equal(node.sent('subscribe').length, 1, 'one subscribe for both hooks');
  values.unmount();
  node.send(pub('stock:x', 'level', { key: 'c', offset: 3, payload: 2 }));
  await eventually('still delivered to the other hook', () => pubs.includes(3));
  assert.equal(node.sent('unsubscribe').length, 0);
  listener.unmount();
  await node.waitSent('unsubscribe');

  const own = client.subscribe('live:mine');
  await own.ready();
  const count = renderHook(usePresenceCount, client, 'live:mine');
  await eventually('the count', () => count.latest().count === 5);
  count.unmount();
  const conn = renderHook(useConnectionState, client);
  assert.equal(conn.latest(), 'connected');
  conn.unmount();
  assert.equal(own.state, 'subscribed', 'the application subscribed it: the hook leaves it');
  own.unsubscribe();
  await node.waitSent('unsubscribe', 2);
  assert.deepEqual(node.sent('unsubscribe').map((f) => f.payload.channel), ['stock:x', 'live:mine']);
});
