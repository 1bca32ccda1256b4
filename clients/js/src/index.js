// @switchyard/client: the JavaScript client of the switchyard gateway (SPEC 14).
export { Switchyard } from './client.js';
export { Subscription } from './subscription.js';
export { SwitchyardError } from './errors.js';
export { backoff } from './backoff.js';
