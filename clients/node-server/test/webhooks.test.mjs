// verifyWebhook (SPEC 17, 18), after Stripe's constructEvent: the HMAC over
// "<timestamp>.<raw body>", a tolerance window, and one error class (and code) for
// each way a request fails.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHmac } from 'node:crypto';
import {
  verifyWebhook,
  signWebhook,
  SwitchyardServer,
  WebhookVerificationError,
  WebhookHeaderError,
  WebhookSignatureError,
  WebhookTimestampError,
  WebhookBodyError,
} from '../src/index.js';

const SECRET = 'whsec-test';
const events = [
  { event: 'user_online', user_id: '7', conn_id: '0123456789abcdef', node: 'n1', ts: '2026-01-15T20:00:00Z', data: {} },
  { event: 'occupied', channel: 'stream:live', node: 'n1', ts: '2026-01-15T20:00:01Z', data: { channel: 'stream:live' } },
];
const body = JSON.stringify({ events });
const now = () => Math.floor(Date.now() / 1000);

/** What a node sends, computed here independently of the SDK. */
function signed(text, secret = SECRET, ts = now()) {
  const hex = createHmac('sha256', secret).update(`${ts}.${text}`).digest('hex');
  return { 'x-switchyard-timestamp': String(ts), 'x-switchyard-signature': `sha256=${hex}` };
}

function fails(fn, Class, code) {
  assert.throws(fn, (e) => e instanceof Class && e instanceof WebhookVerificationError && e.code === code, `${Class.name} ${code}`);
}

test('a signed request gives back its events, from a string, a Buffer, Node or fetch headers', () => {
  const headers = signed(body);
  assert.deepEqual(verifyWebhook(body, headers, SECRET), events);
  assert.deepEqual(verifyWebhook(Buffer.from(body), headers, SECRET), events);
  assert.deepEqual(verifyWebhook(body, new Headers(headers), SECRET), events);
  const mixedCase = { 'X-Switchyard-Timestamp': headers['x-switchyard-timestamp'], 'X-Switchyard-Signature': headers['x-switchyard-signature'] };
  assert.deepEqual(verifyWebhook(body, mixedCase, SECRET), events);
  assert.deepEqual(new SwitchyardServer({}).verifyWebhook(body, headers, SECRET), events);
  assert.deepEqual(verifyWebhook(body, headers, ['old-secret', SECRET]), events, 'any of several secrets while rotating');
  assert.deepEqual(verifyWebhook(body, signWebhook(body, SECRET), SECRET), events, 'signWebhook signs as a node does');
  assert.deepEqual(signWebhook(body, SECRET, 1700000000), {
    'X-Switchyard-Timestamp': '1700000000',
    'X-Switchyard-Signature': signed(body, SECRET, 1700000000)['x-switchyard-signature'],
  });
});

test('each failure is its own error', () => {
  const headers = signed(body);
  fails(() => verifyWebhook(body, { 'x-switchyard-signature': headers['x-switchyard-signature'] }, SECRET), WebhookHeaderError, 'missing_header');
  fails(() => verifyWebhook(body, { 'x-switchyard-timestamp': headers['x-switchyard-timestamp'] }, SECRET), WebhookHeaderError, 'missing_header');
  fails(() => verifyWebhook(body, { ...headers, 'x-switchyard-timestamp': 'yesterday' }, SECRET), WebhookHeaderError, 'invalid_header');
  fails(() => verifyWebhook(body, { ...headers, 'x-switchyard-signature': 'md5=abc' }, SECRET), WebhookHeaderError, 'invalid_header');

  fails(() => verifyWebhook(body, headers, 'another-secret'), WebhookSignatureError, 'bad_signature');
  fails(() => verifyWebhook(body.replace('"7"', '"8"'), headers, SECRET), WebhookSignatureError, 'bad_signature');
  const later = String(Number(headers['x-switchyard-timestamp']) + 1);
  fails(() => verifyWebhook(body, { ...headers, 'x-switchyard-timestamp': later }, SECRET), WebhookSignatureError, 'bad_signature');

  const old = now() - 301;
  fails(() => verifyWebhook(body, signed(body, SECRET, old), SECRET), WebhookTimestampError, 'timestamp_out_of_tolerance');
  fails(() => verifyWebhook(body, signed(body, SECRET, now() + 301), SECRET), WebhookTimestampError, 'timestamp_out_of_tolerance');
  assert.deepEqual(verifyWebhook(body, signed(body, SECRET, old), SECRET, 600), events, 'within a wider tolerance');

  fails(() => verifyWebhook('not json', signed('not json'), SECRET), WebhookBodyError, 'invalid_body');
  fails(() => verifyWebhook('{"event":"x"}', signed('{"event":"x"}'), SECRET), WebhookBodyError, 'invalid_body');
  fails(() => verifyWebhook(JSON.parse(body), headers, SECRET), WebhookBodyError, 'invalid_body');

  assert.throws(() => verifyWebhook(body, headers, ''), TypeError);
  assert.throws(() => verifyWebhook(body, headers, SECRET, 0), TypeError);
});
