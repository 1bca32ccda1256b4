// The documented usage (README, SPEC 18) against the hand-written types; only compiled.
import {
  SwitchyardServer,
  SwitchyardError,
  verifyWebhook,
  WebhookSignatureError,
  type UpstreamEntry,
  type EventEntry,
  type SwitchyardEvent,
} from '@switchyard/server';

interface Order {
  id: number;
  status: 'paid' | 'shipped';
}

async function main(): Promise<void> {
  const sy = new SwitchyardServer({
    url: 'http://switchyard-internal:8080',
    apiKey: 'key',
    jwtSecret: 'secret',
    redis: 'redis://127.0.0.1:6379',
    prefix: 'switchyard',
  });
  const order: Order = { id: 1, status: 'paid' };
  const r = await sy.publish('user:42', 'order_paid', order, {
    idempotencyKey: 'order-1-paid',
    fallback: { after: '30s', data: { email: 'a@example.com' } },
  });
  const offset: number | undefined = r.offset;
  const dup: boolean | undefined = r.duplicate;
  await sy.publish('order:1', 'order_update', { status: 'shipped' }, { via: 'redis', historySize: 100, historyTtl: '24h' });
  await sy.publish('stream:live', 'viewers', 120, { via: 'redis', key: 'viewers', stateMaxKeys: 100, stateTtl: 3600 });
  await sy.publish('stream:live', 'pinned', undefined, { key: 'pinned', delete: true });
  const b = await sy.broadcast(['user:1', 'user:2'], 'sale', { pct: 20 }, { idempotencyKey: 'sale-1' });
  for (const res of b.results) if (res.error) console.log(res.channel, res.error.code);
  await sy.disconnect({ userId: 42, code: 4003, reason: 'banned' });
  await sy.disconnect({ connId: '0123456789abcdef' });
  await sy.revoke('42');
  await sy.revoke(42, new Date());
  await sy.subscribe('42', 'public:drops');
  await sy.unsubscribe('42', 'public:drops');
  const p = await sy.presence('chat:1');
  const n: number = p.count + p.users + p.clients.length;
  const h = await sy.history('chat:1', { limit: 50 });
  const types: string[] = h.publications.map((x) => x.type);
  const s = await sy.state('stream:live', ['viewers']);
  const keys: string[] = s.entries.map((e) => e.key);
  const u = await sy.unread('42', ['chat:1']);
  const unread: number = u.channels.reduce((a, c) => a + c.unread, 0);
  const token: string = await sy.mintToken({ sub: 42, roles: ['admin'], info: { name: 'Ana' } }, 3600);
  const subToken: string = await sy.mintSubscriptionToken('42', 'order:1', '10m');

  const chat = sy.consume('upstream', 'moderation', async (e: UpstreamEntry) => {
    const text: string | undefined = e.user_id;
    console.log(e.channel, e.type, e.payload, text);
  }, { claimIdle: 30000, onError: (err, entry) => console.error(entry?.id, err.message) });
  await chat.ready;
  const agents = sy.consume('events', 'agents', (e: EventEntry) => {
    if (e.event === 'user_online') console.log(e.user_id, e.data);
  });
  await agents.stop();
  await chat.close();

  try {
    const events: SwitchyardEvent[] = verifyWebhook('{"events":[]}', { 'x-switchyard-timestamp': '1' }, 'whsec');
    console.log(events.length);
  } catch (err) {
    if (err instanceof WebhookSignatureError) console.log(err.code);
  }
  try {
    await sy.stats();
  } catch (err) {
    if (err instanceof SwitchyardError && err.code === 'unavailable') console.log(err.status, err.attempts);
  }
  console.log(offset, dup, n, types, keys, unread, token, subToken);
  await sy.close();
}

void main;

// @ts-expect-error: fallback needs a duration
const bad: import('@switchyard/server').PublishOptions = { fallback: {} };
void bad;
