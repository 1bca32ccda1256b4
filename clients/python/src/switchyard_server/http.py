"""The HTTP API (SPEC 6) as calls: each endpoint is a :class:`Call` made by a small
function here, sent by :class:`HttpClient` (httpx.Client) or
:class:`AsyncHttpClient` (httpx.AsyncClient) with the API key, a timeout and retries.

Retries: a 503 (the broker is unavailable: nothing was accepted), a 502/504 from a
proxy in front of the nodes, a timeout or a connection error is tried again after a
backoff with full jitter, up to ``RetryPolicy.retries`` times. Every call of the API is
safe to repeat: publishes and broadcasts carry an idempotency key (the body, key
included, is built once and resent as is), the others are idempotent.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any
from collections.abc import Iterable, Mapping
from urllib.parse import quote

import httpx

from ._version import __version__
from ._retry import RetryPolicy, parse_retry_after
from .errors import ConfigurationError, RequestTimeoutError, TransportError, api_error

RETRY_STATUSES = frozenset({502, 503, 504})
#: Failures after which the request may not have been answered, worth another try.
RETRY_ERRORS = (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError)
USER_AGENT = f"switchyard-server-python/{__version__}"


@dataclass(frozen=True)
class Call:
    """One API request: method, path under the base URL, JSON body, query."""

    method: str
    path: str
    json: Any = None
    params: Mapping[str, str] | None = None


def _seg(channel: str) -> str:
    return quote(channel, safe="")


def publish(body: Mapping[str, Any]) -> Call:
    return Call("POST", "/api/publish", json=dict(body))


def broadcast(
    channels: Iterable[str],
    type: str,
    payload: Any,
    *,
    idempotency_key: str,
    key: str | None = None,
    volatile: bool = False,
) -> Call:
    body: dict[str, Any] = {"channels": list(channels), "type": type, "payload": payload}
    if key is not None:
        body["key"] = key
    if volatile:
        body["volatile"] = True
    body["idempotency_key"] = idempotency_key
    return Call("POST", "/api/broadcast", json=body)


def disconnect(
    *,
    user_id: str | None,
    session_id: str | None,
    conn_id: str | None,
    code: int | None,
    reason: str | None,
) -> Call:
    targets = {"user_id": user_id, "session_id": session_id, "conn_id": conn_id}
    given = {k: v for k, v in targets.items() if v is not None}
    if len(given) != 1:
        raise ConfigurationError("disconnect takes exactly one of user_id, session_id, conn_id")
    body: dict[str, Any] = dict(given)
    if code is not None:
        body["code"] = int(code)
    if reason is not None:
        body["reason"] = reason
    return Call("POST", "/api/disconnect", json=body)


def revoke(user_id: str, before: int | None) -> Call:
    body: dict[str, Any] = {"user_id": user_id}
    if before is not None:
        body["before"] = int(before)
    return Call("POST", "/api/revoke", json=body)


def subscribe(user_id: str, channel: str) -> Call:
    return Call("POST", "/api/subscribe", json={"user_id": user_id, "channel": channel})


def unsubscribe(user_id: str, channel: str) -> Call:
    return Call("POST", "/api/unsubscribe", json={"user_id": user_id, "channel": channel})


def presence(channel: str) -> Call:
    return Call("GET", f"/api/presence/{_seg(channel)}")


def history(channel: str, limit: int | None, since: int | None) -> Call:
    params: dict[str, str] = {}
    if limit is not None:
        params["limit"] = str(int(limit))
    if since is not None:
        params["since"] = str(int(since))
    return Call("GET", f"/api/history/{_seg(channel)}", params=params or None)


def state(channel: str, keys: Iterable[str] | None) -> Call:
    params = {"keys": ",".join(keys)} if keys is not None else None
    return Call("GET", f"/api/state/{_seg(channel)}", params=params)


def unread(user_id: str, channels: Iterable[str] | None) -> Call:
    params = {"channels": ",".join(channels)} if channels is not None else None
    return Call("GET", f"/api/unread/{_seg(user_id)}", params=params)


def channels(prefix: str | None) -> Call:
    return Call("GET", "/api/channels", params={"prefix": prefix} if prefix else None)


def stats() -> Call:
    return Call("GET", "/api/stats")


def _headers(api_key: str) -> dict[str, str]:
    return {"X-API-Key": api_key, "User-Agent": USER_AGENT, "Accept": "application/json"}


def _decode(resp: httpx.Response) -> Any:
    if not resp.content:
        return {}
    try:
        return resp.json()
    except ValueError:
        return None


def _outcome(resp: httpx.Response) -> Any:
    """The decoded body of a 2xx answer; raises the API error of any other."""
    body = _decode(resp)
    if 200 <= resp.status_code < 300:
        return {} if body is None else body
    raise api_error(resp.status_code, body, resp.text[:200] if body is None else "")


def _give_up(exc: Exception, attempts: int) -> Exception:
    if isinstance(exc, httpx.TimeoutException):
        err: Exception = RequestTimeoutError(f"timed out ({attempts} attempts): {exc}")
    else:
        err = TransportError(f"request failed ({attempts} attempts): {exc!r}")
    err.__cause__ = exc
    return err


class HttpClient:
    """Blocking API client. ``client`` lets a caller pass its own ``httpx.Client``
    (proxies, TLS, a mock transport); it is then not closed by :meth:`close`."""

    def __init__(
        self,
        url: str,
        api_key: str,
        *,
        timeout: float | httpx.Timeout,
        retry: RetryPolicy,
        client: httpx.Client | None = None,
    ) -> None:
        self._owns = client is None
        self._client = client or httpx.Client(timeout=timeout)
        self._base = url.rstrip("/")
        self._headers = _headers(api_key)
        self._timeout = timeout
        self._retry = retry

    def call(self, call: Call) -> Any:
        attempt = 0
        while True:
            try:
                resp = self._client.request(
                    call.method,
                    self._base + call.path,
                    json=call.json,
                    params=call.params,
                    headers=self._headers,
                    timeout=self._timeout,
                )
            except httpx.TransportError as exc:
                if not isinstance(exc, RETRY_ERRORS) or attempt >= self._retry.retries:
                    raise _give_up(exc, attempt + 1) from exc
                time.sleep(self._retry.delay(attempt))
                attempt += 1
                continue
            if resp.status_code in RETRY_STATUSES and attempt < self._retry.retries:
                time.sleep(self._retry.delay(attempt, parse_retry_after(resp.headers.get("retry-after"))))
                attempt += 1
                continue
            return _outcome(resp)

    def close(self) -> None:
        if self._owns:
            self._client.close()


class AsyncHttpClient:
    """The asyncio twin of :class:`HttpClient` (``httpx.AsyncClient``)."""

    def __init__(
        self,
        url: str,
        api_key: str,
        *,
        timeout: float | httpx.Timeout,
        retry: RetryPolicy,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        self._owns = client is None
        self._client = client or httpx.AsyncClient(timeout=timeout)
        self._base = url.rstrip("/")
        self._headers = _headers(api_key)
        self._timeout = timeout
        self._retry = retry

    async def call(self, call: Call) -> Any:
        attempt = 0
        while True:
            try:
                resp = await self._client.request(
                    call.method,
                    self._base + call.path,
                    json=call.json,
                    params=call.params,
                    headers=self._headers,
                    timeout=self._timeout,
                )
            except httpx.TransportError as exc:
                if not isinstance(exc, RETRY_ERRORS) or attempt >= self._retry.retries:
                    raise _give_up(exc, attempt + 1) from exc
                await asyncio.sleep(self._retry.delay(attempt))
                attempt += 1
                continue
            if resp.status_code in RETRY_STATUSES and attempt < self._retry.retries:
                await asyncio.sleep(
                    self._retry.delay(attempt, parse_retry_after(resp.headers.get("retry-after")))
                )
                attempt += 1
                continue
            return _outcome(resp)

    async def aclose(self) -> None:
        if self._owns:
            await self._client.aclose()
