// The HTTP API client (SPEC 6): one request function with the API key, a timeout on
// every attempt, and retries with backoff when the node answered 503 (the broker was
// unavailable: nothing was done) or did not answer in time. Callers that must not
// apply twice (publish, broadcast) put an idempotency key in the body, which every
// retry resends unchanged, so a publication whose first answer was lost is stored
// and delivered once.
import { SwitchyardError } from './errors.js';
import { backoff, pause } from './retry.js';

/** Statuses after which the same request may be sent again. */
const RETRY_STATUS = new Set([408, 502, 503, 504]);

/** Errors of one attempt after which the request may be sent again. */
const retryable = new WeakSet();

/** Codes for error answers without the API's JSON body (a proxy's page). */
const STATUS_CODES = { 401: 'unauthorized', 404: 'not_found', 413: 'too_large', 502: 'unavailable', 503: 'unavailable', 504: 'timeout' };

export class HttpClient {
  #base;
  #apiKey;
  #timeout;
  #retries;
  #minDelay;
  #maxDelay;
  #fetch;

  /**
   * `url`: the node's base URL (`http://127.0.0.1:8080`); `timeout`: ms per attempt;
   * `retries`: attempts after the first; `retryDelay`/`maxRetryDelay`: the backoff
   * bounds in ms; `fetch`: the fetch function (default: Node's global one).
   */
  constructor({ url, apiKey, timeout, retries, retryDelay, maxRetryDelay, fetch }) {
    this.#base = url ? String(url).replace(/\/+$/, '') : null;
    this.#apiKey = apiKey;
    this.#timeout = timeout;
    this.#retries = retries;
    this.#minDelay = retryDelay;
    this.#maxDelay = maxRetryDelay;
    this.#fetch = fetch;
  }

  /** `path` with each segment after `/api/<endpoint>/` percent-encoded. */
  static path(endpoint, param) {
    return `/api/${endpoint}/${encodeURIComponent(param)}`;
  }

  get(path, query) {
    let qs = '';
    if (query) {
      const params = new URLSearchParams();
      for (const [k, v] of Object.entries(query)) if (v !== undefined && v !== null) params.set(k, String(v));
      const s = params.toString();
      if (s) qs = `?${s}`;
    }
    return this.request('GET', path + qs);
  }

  post(path, body) {
    return this.request('POST', path, body);
  }

  /**
   * Sends the request, retrying on 408/502/503/504, timeouts and failed
   * connections; resolves with the parsed JSON answer, or rejects with a
   * `SwitchyardError` carrying the server's `code` and the `status`.
   */
  async request(method, path, body) {
    if (!this.#base) throw new TypeError('SwitchyardServer: `url` is required for HTTP API calls');
    if (!this.#apiKey) throw new TypeError('SwitchyardServer: `apiKey` is required for HTTP API calls');
    const what = `${method} ${path}`;
    const text = body === undefined ? undefined : JSON.stringify(body);
    for (let attempt = 0; ; attempt++) {
      let error;
      try {
        return await this.#once(method, path, text, what, attempt + 1);
      } catch (e) {
        error = e;
      }
      if (!retryable.has(error) || attempt >= this.#retries) throw error;
      await pause(backoff(attempt, this.#minDelay, this.#maxDelay));
    }
  }

  async #once(method, path, text, what, attempts) {
    const headers = { 'X-API-Key': this.#apiKey, Accept: 'application/json' };
    if (text !== undefined) headers['Content-Type'] = 'application/json';
    let status;
    let raw;
    try {
      // The signal covers the whole exchange, the body's arrival included.
      const res = await this.#fetch(this.#base + path, {
        method,
        headers,
        body: text,
        signal: AbortSignal.timeout(this.#timeout),
      });
      status = res.status;
      raw = await res.text();
    } catch (e) {
      const timedOut = e?.name === 'TimeoutError' || e?.name === 'AbortError';
      const err = timedOut
        ? new SwitchyardError(`switchyard ${what}: no answer within ${this.#timeout} ms`, { code: 'timeout', attempts, cause: e })
        : new SwitchyardError(`switchyard ${what}: ${e?.cause?.message ?? e?.message ?? e}`, { code: 'network', attempts, cause: e });
      retryable.add(err);
      throw err;
    }
    let json;
    try {
      json = raw === '' ? undefined : JSON.parse(raw);
    } catch {
      json = undefined;
    }
    if (status >= 200 && status < 300) {
      if (json === undefined || json === null || typeof json !== 'object') {
        throw new SwitchyardError(`switchyard ${what}: the answer is not a JSON object`, { code: 'unexpected_response', status, attempts });
      }
      return json;
    }
    const apiError = json && typeof json.error === 'object' && json.error ? json.error : null;
    const code = apiError?.code ?? STATUS_CODES[status] ?? 'unexpected_response';
    const message = apiError?.message ?? (raw ? raw.slice(0, 200) : `HTTP ${status}`);
    const err = new SwitchyardError(`switchyard ${what}: ${status} ${code}: ${message}`, { code, status, attempts });
    if (json !== undefined && !apiError) err.body = json;
    if (RETRY_STATUS.has(status)) retryable.add(err);
    throw err;
  }
}
