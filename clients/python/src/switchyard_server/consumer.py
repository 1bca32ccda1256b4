"""Reading the streams the nodes write (SPEC 8.3 ``<prefix>:upstream``, SPEC 17
``<prefix>:events``) with a consumer group, at least once.

The loop, for :class:`Consumer` (threads) and :class:`AsyncConsumer` (asyncio) alike:

1. ``XGROUP CREATE <stream> <group> <start_id> MKSTREAM`` unless the group exists.
2. Entries this consumer name was given before and never acknowledged (a restart
   with the same ``name``) are handled first.
3. Every ``claim_interval``: ``XAUTOCLAIM`` of entries idle longer than ``min_idle``
   [30 s], whichever consumer holds them: a dead worker's entries, and entries whose
   handler raised (so a failed entry is retried after ``min_idle``, here or elsewhere).
4. ``XREADGROUP ... BLOCK <block> STREAMS <stream> >`` for new entries.

Each entry is decoded (:class:`UpstreamEntry` / :class:`Event`, empty ids as ``None``,
JSON fields parsed) and given to the handler; ``XACK`` follows only when the handler
returned. ``stop()`` ends the loop within ``block`` seconds, after the entry in hand.
Redis going away is logged and retried with backoff until it is back or stopped.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import logging
import os
import secrets
import socket
import threading
import time
from dataclasses import dataclass
from typing import Any, Union
from collections.abc import Awaitable, Callable, Mapping

import redis
import redis.asyncio
import redis.exceptions

from ._durations import Duration, to_seconds
from ._retry import RetryPolicy
from .errors import ConfigurationError
from .models import Event, UpstreamEntry

log = logging.getLogger("switchyard_server.consumer")

#: The streams a backend consumes, by the name ``consume`` takes.
STREAMS = ("upstream", "events")

Entry = Union[UpstreamEntry, Event]
Handler = Callable[[Any], Any]
AsyncHandler = Callable[[Any], Union[Awaitable[Any], Any]]
ErrorHook = Callable[[Any, BaseException], Any]

_DOWN = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError)
#: Waits between reconnect attempts while Redis is down.
RECONNECT = RetryPolicy(retries=0, base_delay=0.1, max_delay=5.0)


def _text(v: Any) -> str:
    if v is None:
        return ""
    return v.decode("utf-8", "replace") if isinstance(v, (bytes, bytearray)) else str(v)


def _fields(raw: Mapping[Any, Any] | None) -> dict[str, str]:
    return {_text(k): _text(v) for k, v in (raw or {}).items()}


def _json(text: str, what: str, entry_id: str) -> Any:
    if text == "":
        return None
    try:
        return json.loads(text)
    except ValueError:
        log.warning("stream entry %s: %s is not JSON; passed on as text", entry_id, what)
        return text


def decode_upstream(entry_id: str, raw: Mapping[Any, Any]) -> UpstreamEntry:
    """An upstream entry: ``channel type payload user_id session_id conn_id node ts``
    (``payload`` is JSON text, ``""`` is an absent id)."""
    f = _fields(raw)
    return UpstreamEntry(
        id=entry_id,
        channel=f.get("channel", ""),
        type=f.get("type", ""),
        payload=_json(f.get("payload", ""), "payload", entry_id),
        user_id=f.get("user_id") or None,
        session_id=f.get("session_id") or None,
        conn_id=f.get("conn_id") or None,
        node=f.get("node") or None,
        ts=f.get("ts") or None,
    )


def decode_event(entry_id: str, raw: Mapping[Any, Any]) -> Event:
    """An events entry: ``event channel user_id session_id conn_id node ts data``
    (``data`` is JSON text, ``""`` is absent)."""
    f = _fields(raw)
    return Event(
        event=f.get("event", ""),
        channel=f.get("channel") or None,
        user_id=f.get("user_id") or None,
        session_id=f.get("session_id") or None,
        conn_id=f.get("conn_id") or None,
        node=f.get("node") or None,
        ts=f.get("ts") or None,
        data=_json(f.get("data", ""), "data", entry_id),
        id=entry_id,
    )


def default_consumer_name() -> str:
    """``<host>-<pid>-<random>``: unique per process, so two workers never share a
    pending list by accident."""
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"


@dataclass(frozen=True)
class ConsumerConfig:
    """Everything a consumer loop needs besides Redis and the handler."""

    stream: str
    key: str
    group: str
    name: str
    count: int
    block: float
    min_idle: float
    claim_interval: float
    start_id: str

    @staticmethod
    def make(
        stream: str,
        prefix: str,
        group: str,
        *,
        name: str | None,
        count: int,
        block: Duration,
        min_idle: Duration,
        claim_interval: Duration | None,
        start_id: str,
    ) -> ConsumerConfig:
        if stream not in STREAMS:
            raise ConfigurationError(f"stream must be one of {STREAMS}, not {stream!r}")
        if not group:
            raise ConfigurationError("group must be a non-empty string")
        if count < 1:
            raise ConfigurationError("count must be >= 1")
        block_s = to_seconds(block, what="block")
        idle_s = to_seconds(min_idle, what="min_idle")
        interval = idle_s / 2 if claim_interval is None else to_seconds(claim_interval, what="claim_interval")
        return ConsumerConfig(
            stream=stream,
            key=f"{prefix}:{stream}",
            group=group,
            name=name or default_consumer_name(),
            count=count,
            block=max(block_s, 0.001),
            min_idle=idle_s,
            claim_interval=max(interval, 0.01),
            start_id=start_id,
        )

    def decode(self, entry_id: str, raw: Mapping[Any, Any]) -> Entry:
        if self.stream == "upstream":
            return decode_upstream(entry_id, raw)
        return decode_event(entry_id, raw)


def _entries(reply: Any) -> list[tuple[str, Mapping[Any, Any] | None]]:
    """``[(id, fields)]`` from an XREADGROUP reply (list or RESP3 dict form)."""
    out: list[tuple[str, Mapping[Any, Any] | None]] = []
    if not reply:
        return out
    streams = reply.items() if isinstance(reply, dict) else reply
    for _name, items in streams:
        # One redis-py RESP3 shape wraps the entries in one more list.
        if items and isinstance(items[0], list) and items[0] and isinstance(items[0][0], (list, tuple)):
            items = items[0]
        for entry_id, fields in items:
            out.append((_text(entry_id), fields))
    return out


def _claimed(reply: Any) -> tuple[str, list[tuple[str, Mapping[Any, Any] | None]]]:
    """``(next_start, [(id, fields)])`` from an XAUTOCLAIM reply."""
    next_id = _text(reply[0])
    return next_id, [(_text(i), f) for i, f in reply[1] if i is not None]


def _is_nogroup(exc: redis.exceptions.ResponseError) -> bool:
    return str(exc).startswith("NOGROUP")


class Consumer:
    """A blocking consumer. ``run()`` loops in the calling thread until ``stop()``;
    ``start()`` runs it in a daemon thread. Also a context manager (start/stop)."""

    def __init__(
        self,
        client: redis.Redis,
        config: ConsumerConfig,
        handler: Handler,
        *,
        on_error: ErrorHook | None = None,
        retry: RetryPolicy = RECONNECT,
        owns_client: bool = False,
        stop_event: threading.Event | None = None,
        on_exit: Callable[[Consumer], Any] | None = None,
    ) -> None:
        self.client = client
        self.config = config
        self.handler = handler
        self.on_error = on_error
        self._retry = retry
        self._owns = owns_client
        self._on_exit = on_exit
        #: Set to end the loop; a caller's event when given (``consume(stop=...)``).
        self._stop = stop_event if stop_event is not None else threading.Event()
        self._thread: threading.Thread | None = None
        self._group_ok = False
        self._running = False
        #: Entries handled and acknowledged / handler failures, for monitoring.
        self.acked = 0
        self.failed = 0

    @property
    def name(self) -> str:
        return self.config.name

    # -- control ---------------------------------------------------------------

    def stop(self, wait: bool = True, timeout: float | None = None) -> None:
        """Ends the loop after the entry in hand (within ``block`` when idle); with
        ``wait`` joins the thread ``start()`` made (not when called from it)."""
        self._stop.set()
        t = self._thread
        if wait and t is not None and t is not threading.current_thread():
            t.join(timeout)

    @property
    def stopped(self) -> bool:
        return self._stop.is_set()

    @property
    def running(self) -> bool:
        """The loop is running (in ``run()``)."""
        return self._running

    @property
    def group_ready(self) -> bool:
        """The loop has made sure the group exists and Redis answered since."""
        return self._group_ok

    def start(self) -> Consumer:
        if self._thread is not None:
            raise RuntimeError("consumer already started")
        self._thread = threading.Thread(target=self.run, name=f"switchyard-consumer-{self.name}", daemon=True)
        self._thread.start()
        return self

    def __enter__(self) -> Consumer:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    # -- the loop ----------------------------------------------------------------

    def run(self) -> None:
        cfg = self.config
        down = 0
        backlog: str | None = "0"  # own pending entries first, from the start
        last_claim = float("-inf")
        self._running = True
        try:
            while not self._stop.is_set():
                try:
                    self.ensure_group()
                    if time.monotonic() - last_claim >= cfg.claim_interval:
                        self.claim_idle()
                        last_claim = time.monotonic()
                    if backlog is not None:
                        entries = _entries(
                            self.client.xreadgroup(cfg.group, cfg.name, {cfg.key: backlog}, count=cfg.count)
                        )
                        backlog = entries[-1][0] if entries else None
                    else:
                        timeout_ms = self._block_ms(last_claim)
                        entries = _entries(
                            self.client.xreadgroup(
                                cfg.group, cfg.name, {cfg.key: ">"}, count=cfg.count, block=timeout_ms
                            )
                        )
                    for entry_id, fields in entries:
                        self._handle(entry_id, fields)
                    down = 0
                except redis.exceptions.ResponseError as exc:
                    if not _is_nogroup(exc):
                        raise
                    self._group_ok = False  # the stream or group went away (FLUSHALL): make it again
                except _DOWN as exc:
                    log.warning("consumer %s: Redis unavailable (%r); retrying", cfg.name, exc)
                    self._group_ok = False
                    self._stop.wait(max(0.05, self._retry.delay(min(down, 10))))
                    down += 1
        finally:
            self._running = False
            if self._owns:
                self.client.close()
            if self._on_exit is not None:
                self._on_exit(self)

    def ensure_group(self) -> None:
        if self._group_ok:
            return
        try:
            self.client.xgroup_create(
                self.config.key, self.config.group, id=self.config.start_id, mkstream=True
            )
        except redis.exceptions.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        self._group_ok = True

    def claim_idle(self) -> int:
        """Takes over every entry idle longer than ``min_idle`` and handles it;
        returns how many were claimed."""
        cfg = self.config
        start, n = "0-0", 0
        while not self._stop.is_set():
            reply = self.client.xautoclaim(
                cfg.key, cfg.group, cfg.name, int(cfg.min_idle * 1000), start_id=start, count=cfg.count
            )
            start, entries = _claimed(reply)
            for entry_id, fields in entries:
                n += 1
                self._handle(entry_id, fields)
            if start == "0-0":
                break
        return n

    def _block_ms(self, last_claim: float) -> int:
        until_claim = self.config.claim_interval - (time.monotonic() - last_claim)
        return max(1, int(min(self.config.block, max(until_claim, 0.001)) * 1000))

    def _handle(self, entry_id: str, fields: Mapping[Any, Any] | None) -> None:
        cfg = self.config
        if not fields:
            # Trimmed from the stream while pending: nothing left to handle.
            self.client.xack(cfg.key, cfg.group, entry_id)
            return
        entry = cfg.decode(entry_id, fields)
        try:
            result = self.handler(entry)
            if inspect.isawaitable(result):
                raise TypeError(
                    "the handler of a sync consumer returned an awaitable; use AsyncSwitchyardServer"
                )
        except Exception as exc:  # the handler's failure: leave the entry pending
            self.failed += 1
            log.exception(
                "consumer %s: handler failed on %s %s; it will be retried", cfg.name, cfg.stream, entry_id
            )
            if self.on_error is not None:
                try:
                    self.on_error(entry, exc)
                except Exception:
                    log.exception("consumer %s: on_error hook failed", cfg.name)
            return
        self.client.xack(cfg.key, cfg.group, entry_id)
        self.acked += 1


class AsyncConsumer:
    """The asyncio consumer. ``await run()`` loops until ``stop()`` (or the task is
    cancelled); ``start()`` makes it a task. Also an async context manager.
    The handler may be a coroutine function or a plain function."""

    def __init__(
        self,
        client: redis.asyncio.Redis,
        config: ConsumerConfig,
        handler: AsyncHandler,
        *,
        on_error: ErrorHook | None = None,
        retry: RetryPolicy = RECONNECT,
        owns_client: bool = False,
        stop_event: asyncio.Event | None = None,
        on_exit: Callable[[AsyncConsumer], Any] | None = None,
    ) -> None:
        self.client = client
        self.config = config
        self.handler = handler
        self.on_error = on_error
        self._retry = retry
        self._owns = owns_client
        self._on_exit = on_exit
        self._stop = stop_event if stop_event is not None else asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._group_ok = False
        self._running = False
        self.acked = 0
        self.failed = 0

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def stopped(self) -> bool:
        return self._stop.is_set()

    @property
    def running(self) -> bool:
        """The loop is running (in ``run()``)."""
        return self._running

    @property
    def group_ready(self) -> bool:
        """The loop has made sure the group exists and Redis answered since."""
        return self._group_ok

    def start(self) -> AsyncConsumer:
        if self._task is not None:
            raise RuntimeError("consumer already started")
        self._task = asyncio.get_running_loop().create_task(
            self.run(), name=f"switchyard-consumer-{self.name}"
        )
        return self

    async def stop(self, wait: bool = True) -> None:
        """Ends the loop after the entry in hand; with ``wait`` awaits the task
        ``start()`` made (not when called from inside it)."""
        self._stop.set()
        t = self._task
        if wait and t is not None and t is not asyncio.current_task():
            await t

    async def __aenter__(self) -> AsyncConsumer:
        return self.start()

    async def __aexit__(self, *exc: Any) -> None:
        await self.stop()

    async def run(self) -> None:
        cfg = self.config
        down = 0
        backlog: str | None = "0"
        last_claim = float("-inf")
        self._running = True
        try:
            while not self._stop.is_set():
                try:
                    await self.ensure_group()
                    if time.monotonic() - last_claim >= cfg.claim_interval:
                        await self.claim_idle()
                        last_claim = time.monotonic()
                    if backlog is not None:
                        entries = _entries(
                            await self.client.xreadgroup(
                                cfg.group, cfg.name, {cfg.key: backlog}, count=cfg.count
                            )
                        )
                        backlog = entries[-1][0] if entries else None
                    else:
                        until_claim = cfg.claim_interval - (time.monotonic() - last_claim)
                        timeout_ms = max(1, int(min(cfg.block, max(until_claim, 0.001)) * 1000))
                        entries = _entries(
                            await self.client.xreadgroup(
                                cfg.group, cfg.name, {cfg.key: ">"}, count=cfg.count, block=timeout_ms
                            )
                        )
                    for entry_id, fields in entries:
                        await self._handle(entry_id, fields)
                    down = 0
                except redis.exceptions.ResponseError as exc:
                    if not _is_nogroup(exc):
                        raise
                    self._group_ok = False
                except _DOWN as exc:
                    log.warning("consumer %s: Redis unavailable (%r); retrying", cfg.name, exc)
                    self._group_ok = False
                    with contextlib.suppress(asyncio.TimeoutError):
                        await asyncio.wait_for(self._stop.wait(), max(0.05, self._retry.delay(min(down, 10))))
                    down += 1
        finally:
            self._running = False
            if self._owns:
                await self.client.aclose()
            if self._on_exit is not None:
                self._on_exit(self)

    async def ensure_group(self) -> None:
        if self._group_ok:
            return
        try:
            await self.client.xgroup_create(
                self.config.key, self.config.group, id=self.config.start_id, mkstream=True
            )
        except redis.exceptions.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        self._group_ok = True

    async def claim_idle(self) -> int:
        cfg = self.config
        start, n = "0-0", 0
        while not self._stop.is_set():
            reply = await self.client.xautoclaim(
                cfg.key, cfg.group, cfg.name, int(cfg.min_idle * 1000), start_id=start, count=cfg.count
            )
            start, entries = _claimed(reply)
            for entry_id, fields in entries:
                n += 1
                await self._handle(entry_id, fields)
            if start == "0-0":
                break
        return n

    async def _handle(self, entry_id: str, fields: Mapping[Any, Any] | None) -> None:
        cfg = self.config
        if not fields:
            await self.client.xack(cfg.key, cfg.group, entry_id)
            return
        entry = cfg.decode(entry_id, fields)
        try:
            result = self.handler(entry)
            if inspect.isawaitable(result):
                await result
        except Exception as exc:
            self.failed += 1
            log.exception(
                "consumer %s: handler failed on %s %s; it will be retried", cfg.name, cfg.stream, entry_id
            )
            if self.on_error is not None:
                try:
                    r = self.on_error(entry, exc)
                    if inspect.isawaitable(r):
                        await r
                except Exception:
                    log.exception("consumer %s: on_error hook failed", cfg.name)
            return
        await self.client.xack(cfg.key, cfg.group, entry_id)
        self.acked += 1
