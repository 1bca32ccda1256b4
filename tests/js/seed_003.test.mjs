// Seed 003 (shop platform): the seed's own ShopWebSocket class, unchanged, against a
// real node: auth by query and by message, subscribe (token in the payload), ping,
// and every server → client event the seed lists.
import { test, after, before } from 'node:test';
import assert from 'node:assert/strict';
import WebSocket from 'ws';
import { ShopWebSocket } from './shop-websocket.mjs';
import { startNode, eventually } from '../jskit/index.mjs';

globalThis.WebSocket = WebSocket; // Node 20 has no global WebSocket; a browser does.

let node;
before(async () => {
  node = await startNode();
});
after(() => node.stop());

/** Records every message a handler sees, for polling. */
function record(client, type) {
  const seen = [];
  client.on(type, (payload) => seen.push(payload));
  return seen;
}

test('auth by query, subscribe with token, ping, and every server event', async () => {
  const token = node.token('user_789', '--tenant', 'shop1', '--subscribe', 'chat:conv_123');
  const client = new ShopWebSocket({ url: node.ws, token, reconnect: false });
  const authOk = record(client, 'auth_success');
  const subscribed = record(client, 'subscribed');
  const pongs = record(client, 'pong');
  const errors = record(client, 'error');
  const events = {};
  for (const t of ['order_update', 'notification', 'cart_update', 'inventory_alert', 'chat_message', 'new_order']) {
    events[t] = record(client, t);
  }
  await client.connect();
  await eventually('auth_success', () => authOk.length === 1);
  assert.equal(authOk[0].user_id, 'user_789');

  // order: needs a subscription token from the backend, sent in the payload.
  const orderToken = node.token('user_789', '--channel', 'order:ord_123');
  client.send('subscribe', { channel: 'order:ord_123', token: orderToken });
  client.subscribe('tenant:shop1');
  client.subscribe('public:announcements');
  await eventually('three subscriptions', () => subscribed.length === 3);
  assert.deepEqual(subscribed.map((s) => s.channel).sort(), ['order:ord_123', 'public:announcements', 'tenant:shop1']);

  client.send('ping', undefined);
  await eventually('pong', () => pongs.length === 1);

  await node.publish('order:ord_123', 'order_update', { order_id: 'ord_123', status: 'shipped', tracking_number: 'UA123456789' });
  await node.publish('user:user_789', 'notification', { id: 'notif_123', title: 'Замовлення відправлено' });
  await node.publish('user:user_789', 'cart_update', { action: 'item_added', cart: { id: 'cart_123', item_count: 3 } });
  await node.publish('tenant:shop1', 'inventory_alert', { product_id: 'prod_123', current_quantity: 5, alert_type: 'low_stock' });
  await node.publish('tenant:shop1', 'new_order', { order: { id: 'o1', number: 1001, total: 1500 } });
  await node.publish('public:announcements', 'notification', { id: 'notif_124', title: 'Sale' });
  await node.publish('chat:conv_123', 'chat_message', { conversation_id: 'conv_123', message: { id: 'msg_1', content: 'Чим можу допомогти?' } });
  await eventually('every event', () =>
    events.order_update.length === 1 && events.notification.length === 2 && events.cart_update.length === 1 &&
    events.inventory_alert.length === 1 && events.new_order.length === 1 && events.chat_message.length === 1);
  assert.equal(events.order_update[0].status, 'shipped');
  assert.equal(events.notification[0].title, 'Замовлення відправлено');
  assert.equal(events.cart_update[0].cart.item_count, 3);
  assert.equal(events.inventory_alert[0].alert_type, 'low_stock');
  assert.equal(events.chat_message[0].message.content, 'Чим можу допомогти?');

  // chat_message from the client: the seed's send() has no channel field, so the
  // application adds the top-level channel (SPEC 13) and sends the raw JSON.
  client.ws.send(JSON.stringify({ type: 'chat_message', channel: 'chat:conv_123', payload: { conversation_id: 'conv_123', message: { content: 'hi' } } }));
  await eventually('own chat message echoed', () => events.chat_message.length === 2);
  assert.equal(events.chat_message[1].message.content, 'hi');

  // A forbidden channel arrives as the seed's `error` event.
  client.subscribe('user:someone_else');
  await eventually('error event', () => errors.length === 1);
  assert.equal(errors[0].code, 'forbidden');

  client.unsubscribe('public:announcements');
  const unsub = record(client, 'unsubscribed');
  await eventually('unsubscribed', () => unsub.length === 1);
  client.disconnect();
});

test('auth by message after connect (the seed\'s option 2)', async () => {
  const client = new ShopWebSocket({ url: node.ws, reconnect: false });
  const authOk = record(client, 'auth_success');
  const authErr = record(client, 'auth_error');
  await client.connect();
  client.send('auth', { token: node.token('user_1') });
  await eventually('auth_success after auth message', () => authOk.length === 1);
  assert.equal(authOk[0].user_id, 'user_1');
  assert.equal(authErr.length, 0);
  const notes = record(client, 'notification');
  await node.publish('user:user_1', 'notification', { title: 'hello' });
  await eventually('notification', () => notes.length === 1);
  client.disconnect();

  const bad = new ShopWebSocket({ url: node.ws, reconnect: false });
  const badErr = record(bad, 'auth_error');
  await bad.connect();
  bad.send('auth', { token: 'forged.token.value' });
  await eventually('auth_error for a bad token', () => badErr.length === 1);
  assert.equal(badErr[0].code, 'unauthorized');
  bad.disconnect();
});
