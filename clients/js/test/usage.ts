// Type-checks the SPEC 14 example against the published types (tsc --noEmit).
import { Switchyard, SwitchyardError, type Publication } from '../src/index.js';
import { useSubscription, useConnectionState } from '../src/react.js';

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

// The React bindings' signatures (React itself is an optional peer).
const hooks: [typeof useSubscription, typeof useConnectionState] = [useSubscription, useConnectionState];
void hooks;
