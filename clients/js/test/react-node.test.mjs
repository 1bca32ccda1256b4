// The React hooks of SPEC 19 with a real React (react-test-renderer, in Node) against
// a real node (SWITCHYARD_BIN) configured with the namespaces of realnode.mjs. (The
// browser test in tests/browser covers them in Chromium.)
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { isDeepStrictEqual } from 'node:util';
import React from 'react';
import TestRenderer from 'react-test-renderer';
import { useChannelState, useUnread, usePresenceCount } from '../src/react.js';
import { startNode, eventually } from '../../../tests/jskit/index.mjs';
import { NAMESPACES, connectAs, setKey, deleteKey, serverValues, sorted } from './realnode.mjs';

globalThis.IS_REACT_ACT_ENVIRONMENT = false;

test('useChannelState, useUnread and usePresenceCount follow a real node', async (t) => {
  const node = await startNode(NAMESPACES);
  t.after(() => node.stop());
  await setKey(node, 'stock:r', 'sku1', { qty: 3, name: 'Runner' });
  await node.publish('inbox:r1', 'message', { i: 1 });
  const client = connectAs(t, node, 'r1');
  const seen = {};
  function Page() {
    seen.values = useChannelState(client, 'stock:r');
    seen.inbox = useUnread(client, 'inbox:r1');
    seen.viewers = usePresenceCount(client, 'live:r');
    return null;
  }
  const page = TestRenderer.create(React.createElement(Page));
  t.after(() => page.unmount());
  await eventually('the snapshot rendered', () => seen.values.get('sku1')?.qty === 3);
  await eventually('the unread count rendered', () => seen.inbox.unread === 1);
  await eventually('the viewer count rendered', () => seen.viewers.count === 1);
  assert.deepEqual(seen.viewers, { count: 1, users: 1 });

  const rendered = seen.values;
  await setKey(node, 'stock:r', 'sku1', { qty: 2, name: 'Runner' });
  await setKey(node, 'stock:r', 'sku2', { qty: 8 });
  await deleteKey(node, 'stock:r', 'sku2');
  await setKey(node, 'stock:r', 'sku3', { qty: 1 });
  await eventually('the changes rendered', async () => isDeepStrictEqual(sorted(seen.values), await serverValues(node, 'stock:r')));
  assert.notEqual(seen.values, rendered, 'a new Map object');

  await node.publish('inbox:r1', 'message', { i: 2 });
  await eventually('two unread', () => seen.inbox.unread === 2);
  await seen.inbox.markRead();
  await eventually('none unread', () => seen.inbox.unread === 0);

  const other = connectAs(t, node, 'r2');
  other.subscribe('live:r');
  await eventually('two viewers rendered', () => seen.viewers.count === 2, 5000);
  assert.deepEqual(seen.viewers, { count: 2, users: 2 });
});
