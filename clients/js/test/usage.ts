// Type-checks the SPEC 14 and 19 examples against the published types (tsc --noEmit).
import { Switchyard, SwitchyardError, type Publication, type StateEntry } from '../src/index.js';
import { useSubscription, useConnectionState, useChannelState, useUnread, usePresenceCount } from '../src/react.js';

declare const WebSocketImpl: unknown;

const client = new Switchyard('wss://rt.example.com/ws', {
  getToken: async () => '<jwt>',
  websocket: WebSocketImpl,
  minReconnectDelay: 500,
  maxReconnectDelay: 20000,
  timeout: 10000,
});
const offState: () => void = client.on('state', ({ state, previous }) => {
  const s: 'disconnected' | 'connecting' | 'connected' = state;
  void s;
  void previous;
});
client.on('connected', (session) => session.conn_id.toUpperCase());
client.on('disconnected', ({ code, reason, reconnect }) => [code + 1, reason.length, !reconnect]);
client.on('publication', (p: Publication) => p.channel);
client.connect();

async function main(): Promise<void> {
  const sub = client.subscribe('order:123', { token: '<subscription jwt>' });
  sub.on('publication', (p) => p.offset ?? 0);
  sub.on('subscribed', ({ recovered, offset, epoch }) => [recovered, offset, epoch]);
  sub.on('join', (who) => who.user_id);
  sub.on('leave', (who) => who.session_id);
  sub.on('error', (err: SwitchyardError) => [err.code, err.cause]);
  sub.on('state', ({ state, previous }) => {
    const s: 'unsubscribed' | 'subscribing' | 'subscribed' = state;
    return [s, previous];
  });
  // @ts-expect-error the state changes only inside the SDK
  sub.state = 'subscribed';
  // @ts-expect-error the state changes only inside the SDK
  client.state = 'connected';
  await sub.ready();
  const ack = await sub.publish('chat_message', { text: 'hi' }, { volatile: false, to: undefined });
  const offset: number | undefined = ack.offset;
  const presence = await sub.presence();
  const count: number = presence.count + presence.users;
  const history = await sub.history({ limit: 50 });
  const first: Publication | undefined = history.publications[0];
  void [offset, count, first];
  sub.unsubscribe();
  client.disconnect();
  offState();
}
void main;

// SPEC 19: state channels, read state, receipts, presence counts.
async function live(): Promise<void> {
  const stock = client.subscribe('stock:shoes', { keys: ['sku1', 'sku2'] });
  stock.on('snapshot', ({ full, entries }) => {
    const first: StateEntry | undefined = entries[0];
    return [full, first?.key, first?.deleted, first?.offset];
  });
  stock.on('values', (map, changedKeys) => {
    const keys: string[] = changedKeys;
    const value: unknown = map.get(keys[0] ?? '');
    return value;
  });
  stock.on('publication', (p) => [p.key, p.deleted, p.conflated]);
  const values: Map<string, unknown> = stock.values;
  const inbox = client.subscribe('inbox:42', { receipts: true });
  inbox.on('read', ({ read_offset, unread }) => read_offset + unread);
  inbox.on('unread', (n) => n + 1);
  const n: number = inbox.unread;
  const at: number | null = inbox.readOffset;
  const read = await inbox.markRead(7);
  const left: number = read.unread + read.read_offset;
  await inbox.markRead();
  const badge = await client.unread();
  const one = await client.unread(['inbox:42']);
  const total: number = badge.channels.reduce((sum, c) => sum + c.unread, 0) + one.channels.length;
  const state = await client.fetchState('stock:shoes', ['sku1']);
  const entries: StateEntry[] = state.entries;
  const viewers = client.subscribe('live:show');
  viewers.on('presence_count', ({ count, users }) => count + users);
  const audience: number | undefined = viewers.presenceCount?.count;
  client.subscribe('feed:prices', { conflated: true });
  const same: boolean = client.getSubscription('stock:shoes') === stock;
  void [values, n, at, left, total, entries, audience, same, state.offset, state.epoch];
}
void live;

// The React bindings' signatures (React itself is an optional peer).
const hooks: [typeof useSubscription, typeof useConnectionState] = [useSubscription, useConnectionState];
void hooks;
function useHooks(): void {
  const prices: Map<string, { amount: number }> = useChannelState<{ amount: number }>(client, 'stock:shoes', { keys: ['sku1'] });
  const { unread, markRead } = useUnread(client, 'inbox:42');
  const { count, users } = usePresenceCount(client, 'live:show');
  void [prices.get('sku1')?.amount, unread + count + users, markRead(3).then((r) => r.unread)];
}
void useHooks;
