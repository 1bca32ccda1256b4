// @switchyard/server: the backend SDK of the switchyard gateway (SPEC 18).
export { SwitchyardServer } from './server.js';
export { Consumer, decodeEntry } from './consumer.js';
export { verifyWebhook, signWebhook, TIMESTAMP_HEADER, SIGNATURE_HEADER } from './webhooks.js';
export {
  SwitchyardError,
  WebhookVerificationError,
  WebhookHeaderError,
  WebhookSignatureError,
  WebhookTimestampError,
  WebhookBodyError,
} from './errors.js';
