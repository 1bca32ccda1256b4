"""Publishing straight into Redis (SPEC 8.2, 16.1) through the function library the
nodes load: ``FCALL switchyard_publish`` (history, offsets, idempotency) and
``FCALL switchyard_set`` (state channels). Same result type as the HTTP publish.

A connection error or a timeout is retried with backoff; ``switchyard_publish`` always
carries an idempotency key and its window, so a retry after a lost answer is answered
with the first result (``duplicate``) instead of publishing twice.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import redis
import redis.asyncio
import redis.exceptions

from ._publish import RedisCall
from ._retry import RetryPolicy
from .errors import RedisPublishError, RequestTimeoutError, TransportError
from .models import PublishResult

_RETRYABLE = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)


def _text(v: Any) -> str:
    return v.decode() if isinstance(v, (bytes, bytearray)) else str(v)


def parse_reply(reply: Any) -> PublishResult:
    """``[offset, epoch]`` or ``[offset, epoch, duplicate]``; offset 0 and epoch ""
    mean the channel keeps no history."""
    if not isinstance(reply, (list, tuple)) or len(reply) < 2:
        raise RedisPublishError(f"unexpected reply from the Redis function: {reply!r}", code="internal")
    offset = int(reply[0])
    epoch = _text(reply[1])
    duplicate = len(reply) > 2 and int(reply[2]) == 1
    return PublishResult(
        offset=offset or None,
        epoch=epoch or None,
        duplicate=duplicate,
        raw={"offset": offset, "epoch": epoch, "duplicate": duplicate},
    )


def _refused(exc: redis.exceptions.ResponseError, call: RedisCall) -> RedisPublishError:
    text = str(exc)
    if "function not found" in text.lower():
        err = RedisPublishError(
            f"{call.function} is not loaded in this Redis: start a switchyard node on it "
            f"first (nodes load the library at start) ({text})",
            code="function_missing",
        )
    else:
        lower = text.lower()
        if "reserved type" in lower:
            code = "reserved_type"
        elif "limit" in lower:
            code = "limit_exceeded"
        else:
            code = "refused"
        err = RedisPublishError(text, code=code)
    err.__cause__ = exc
    return err


def _give_up(exc: Exception, attempts: int) -> Exception:
    cls = RequestTimeoutError if isinstance(exc, redis.exceptions.TimeoutError) else TransportError
    err = cls(f"Redis call failed ({attempts} attempts): {exc!r}")
    err.__cause__ = exc
    return err


def connect(url: str, timeout: float) -> redis.Redis:
    return redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)


def connect_async(url: str, timeout: float) -> redis.asyncio.Redis:
    return redis.asyncio.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)


class RedisPublisher:
    """Runs :class:`RedisCall` s on a ``redis.Redis``."""

    def __init__(self, client: redis.Redis, retry: RetryPolicy) -> None:
        self.client = client
        self._retry = retry

    def call(self, call: RedisCall) -> PublishResult:
        attempt = 0
        while True:
            try:
                reply = self.client.fcall(call.function, 1, call.key, *call.args)
            except redis.exceptions.ResponseError as exc:
                raise _refused(exc, call) from exc
            except _RETRYABLE as exc:
                if attempt >= self._retry.retries:
                    raise _give_up(exc, attempt + 1) from exc
                time.sleep(self._retry.delay(attempt))
                attempt += 1
                continue
            return parse_reply(reply)


class AsyncRedisPublisher:
    """Runs :class:`RedisCall` s on a ``redis.asyncio.Redis``."""

    def __init__(self, client: redis.asyncio.Redis, retry: RetryPolicy) -> None:
        self.client = client
        self._retry = retry

    async def call(self, call: RedisCall) -> PublishResult:
        attempt = 0
        while True:
            try:
                reply = await self.client.fcall(call.function, 1, call.key, *call.args)
            except redis.exceptions.ResponseError as exc:
                raise _refused(exc, call) from exc
            except _RETRYABLE as exc:
                if attempt >= self._retry.retries:
                    raise _give_up(exc, attempt + 1) from exc
                await asyncio.sleep(self._retry.delay(attempt))
                attempt += 1
                continue
            return parse_reply(reply)
