"""``AsyncSwitchyardServer``: the asyncio client (httpx.AsyncClient,
redis.asyncio.Redis, tasks), method for method the twin of
:class:`switchyard_server.client.SwitchyardServer`; only the waiting differs."""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Any
from collections.abc import Iterable, Mapping

import httpx
import redis.asyncio as redis_lib

from . import http, tokens, webhooks
from ._durations import Duration, unix_seconds
from ._publish import new_idempotency_key, prepare_publish
from ._retry import RetryPolicy
from .consumer import AsyncConsumer, AsyncHandler, ConsumerConfig, ErrorHook
from .client import DEFAULT_TIMEOUT
from .errors import ConfigurationError
from .models import (
    BroadcastResult,
    ChannelInfo,
    Fallback,
    HistoryResult,
    PresenceResult,
    PublishResult,
    StateResult,
    StatsResult,
    UnreadResult,
)
from .redis_publisher import AsyncRedisPublisher, connect_async


class AsyncSwitchyardServer:
    """A backend's handle on a switchyard deployment, for asyncio programs.

    ``url``: any node's base URL (``http://127.0.0.1:8080``); ``api_key``: its
    ``api.key``; ``jwt_secret``: its ``auth.jwt_secret`` (for minting tokens);
    ``redis``: a Redis URL or a ``redis.asyncio.Redis`` (for ``via="redis"`` and ``consume``);
    ``prefix``: the nodes' ``redis.prefix``; ``timeout``: seconds for every network
    call. ``retries``/``backoff``/``max_backoff``: the retry policy (exponential, full
    jitter) for 503s, timeouts and connection errors. ``idempotency_window``: the
    nodes' ``api.idempotency_window``, passed to ``switchyard_publish``.
    ``http_client``: an ``httpx.AsyncClient`` of your own (not closed by :meth:`aclose`).
    """

    def __init__(
        self,
        url: str,
        api_key: str,
        jwt_secret: str | bytes | None = None,
        redis: str | redis_lib.Redis | None = None,
        prefix: str = "switchyard",
        timeout: float = DEFAULT_TIMEOUT,
        *,
        retries: int = 3,
        backoff: float = 0.1,
        max_backoff: float = 2.0,
        idempotency_window: Duration = 300,
        http_client: httpx.AsyncClient | None = None,
    ) -> None:
        if not url:
            raise ConfigurationError("url is required (a node's base URL, e.g. http://127.0.0.1:8080)")
        self.url = url.rstrip("/")
        self.prefix = prefix
        self.timeout = float(timeout)
        self.jwt_secret = jwt_secret
        self.idempotency_window = idempotency_window
        self.retry = RetryPolicy(retries=retries, base_delay=backoff, max_delay=max_backoff)
        self._http = http.AsyncHttpClient(
            self.url, api_key, timeout=self.timeout, retry=self.retry, client=http_client
        )
        self._redis_url: str | None = None
        self._owns_redis = False
        self.redis: redis_lib.Redis | None
        if isinstance(redis, str):
            self._redis_url = redis
            self.redis = connect_async(redis, self.timeout)
            self._owns_redis = True
        else:
            self.redis = redis
        self._publisher = AsyncRedisPublisher(self.redis, self.retry) if self.redis is not None else None
        self._consumers: set[AsyncConsumer] = set()

    # -- lifecycle -----------------------------------------------------------------

    async def aclose(self) -> None:
        """Stops the consumers made by :meth:`consumer` and closes the connections this
        client opened."""
        for c in list(self._consumers):
            await c.stop()
        await self._http.aclose()
        if self._owns_redis and self.redis is not None:
            await self.redis.aclose()

    async def __aenter__(self) -> AsyncSwitchyardServer:
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.aclose()

    # -- publishing ------------------------------------------------------------------

    async def publish(
        self,
        channel: str,
        type: str,
        payload: Any = None,
        *,
        key: str | None = None,
        delete: bool = False,
        idempotency_key: str | None = None,
        fallback: Fallback | Mapping[str, Any] | None = None,
        via: str = "http",
        volatile: bool = False,
        to: str | None = None,
        history_size: int | None = None,
        history_ttl: Duration | None = None,
        state_max_keys: int | None = None,
        state_ttl: Duration | None = None,
    ) -> PublishResult:
        """Publishes ``type``/``payload`` to ``channel``.

        ``via="http"`` (default): ``POST /api/publish``; the node applies the
        namespace's settings. ``via="redis"``: ``FCALL switchyard_publish`` with
        ``history_size``/``history_ttl`` (the namespace's settings; without them a live
        publication with no offset), or with ``key``: ``FCALL switchyard_set`` with
        ``state_max_keys``/``state_ttl``. ``key``/``delete``: state channels.
        ``fallback`` (``via="http"`` only): ``Fallback(after="30s", data=...)``.
        An ``idempotency_key`` is generated when none is given and reused by every
        retry: the publication happens at most once.
        """
        prepared = prepare_publish(
            channel=channel,
            type=type,
            payload=payload,
            key=key,
            delete=delete,
            idempotency_key=idempotency_key,
            fallback=fallback,
            via=via,
            volatile=volatile,
            to=to,
            history_size=history_size,
            history_ttl=history_ttl,
            state_max_keys=state_max_keys,
            state_ttl=state_ttl,
            prefix=self.prefix,
            idempotency_window=self.idempotency_window,
        )
        if prepared.redis_call is not None:
            return await self._require_publisher().call(prepared.redis_call)
        assert prepared.http_body is not None
        return PublishResult.from_json(await self._http.call(http.publish(prepared.http_body)))

    async def broadcast(
        self,
        channels: Iterable[str],
        type: str,
        payload: Any = None,
        *,
        key: str | None = None,
        idempotency_key: str | None = None,
        volatile: bool = False,
    ) -> BroadcastResult:
        """Publishes one event to up to 1000 channels; per-channel results. The
        idempotency key (generated when not given) applies per channel."""
        call = http.broadcast(
            list(channels),
            type,
            payload,
            idempotency_key=idempotency_key or new_idempotency_key(),
            key=key,
            volatile=volatile,
        )
        return BroadcastResult.from_json(await self._http.call(call))

    # -- connections and subscriptions -------------------------------------------------

    async def disconnect(
        self,
        *,
        user_id: str | None = None,
        session_id: str | None = None,
        conn_id: str | None = None,
        code: int | None = None,
        reason: str | None = None,
    ) -> None:
        """Closes every connection of a user, of a session, or one connection,
        cluster-wide (``code`` 4000-4999, default 4003)."""
        await self._http.call(
            http.disconnect(user_id=user_id, session_id=session_id, conn_id=conn_id, code=code, reason=reason)
        )

    async def revoke(self, user_id: str, before: int | float | datetime | None = None) -> None:
        """Refuses the user's tokens issued before ``before`` (unix seconds or a
        datetime; default: now) and closes their connections with 4003."""
        await self._http.call(http.revoke(user_id, unix_seconds(before)))

    async def subscribe(self, user_id: str, channel: str) -> None:
        """Subscribes every connection of ``user_id``, cluster-wide."""
        await self._http.call(http.subscribe(user_id, channel))

    async def unsubscribe(self, user_id: str, channel: str) -> None:
        await self._http.call(http.unsubscribe(user_id, channel))

    # -- reads -----------------------------------------------------------------------------

    async def presence(self, channel: str) -> PresenceResult:
        return PresenceResult.from_json(await self._http.call(http.presence(channel)))

    async def history(
        self, channel: str, limit: int | None = None, since: int | None = None
    ) -> HistoryResult:
        return HistoryResult.from_json(await self._http.call(http.history(channel, limit, since)))

    async def state(self, channel: str, keys: Iterable[str] | None = None) -> StateResult:
        return StateResult.from_json(await self._http.call(http.state(channel, keys)), channel)

    async def unread(self, user_id: str, channels: Iterable[str] | None = None) -> UnreadResult:
        return UnreadResult.from_json(await self._http.call(http.unread(user_id, channels)))

    async def channels(self, prefix: str | None = None) -> list[ChannelInfo]:
        body = await self._http.call(http.channels(prefix))
        return [
            ChannelInfo(str(c["channel"]), int(c.get("subscribers", 0))) for c in body.get("channels", [])
        ]

    async def stats(self) -> StatsResult:
        body = await self._http.call(http.stats())
        return StatsResult(node=body.get("node", {}), cluster=body.get("cluster", {}), raw=body)

    # -- tokens ------------------------------------------------------------------------

    def mint_token(self, claims: Mapping[str, Any], ttl: Duration) -> str:
        """A connection JWT (HS256, ``jwt_secret``) with ``iat`` and ``exp`` = now + ttl."""
        return tokens.mint_token(self.jwt_secret, claims, ttl)

    def mint_subscription_token(self, sub: str, channel: str, ttl: Duration) -> str:
        """A subscription JWT ``{sub, channel, exp}`` granting ``channel`` to ``sub``."""
        return tokens.mint_subscription_token(self.jwt_secret, sub, channel, ttl)

    # -- webhooks ----------------------------------------------------------------------

    verify_webhook = staticmethod(webhooks.verify_webhook)

    # -- streams -----------------------------------------------------------------------

    def consumer(
        self,
        stream: str,
        group: str,
        handler: AsyncHandler,
        *,
        name: str | None = None,
        count: int = 10,
        block: Duration = 1.0,
        min_idle: Duration = 30.0,
        claim_interval: Duration | None = None,
        start_id: str = "$",
        on_error: ErrorHook | None = None,
        stop: asyncio.Event | None = None,
    ) -> AsyncConsumer:
        """An :class:`AsyncConsumer` of ``"upstream"`` or ``"events"`` for ``group``
        (created with MKSTREAM at ``start_id`` when missing), not started: ``await
        run()`` loops, ``start()`` makes it a task, ``await stop()`` (or setting
        ``stop``) ends it. The handler may be a coroutine function."""
        cfg = ConsumerConfig.make(
            stream,
            self.prefix,
            group,
            name=name,
            count=count,
            block=block,
            min_idle=min_idle,
            claim_interval=claim_interval,
            start_id=start_id,
        )
        if self._redis_url is not None:
            # Its own connection, whose read timeout outlasts the blocking read.
            client = redis_lib.Redis.from_url(
                self._redis_url, socket_timeout=cfg.block + self.timeout, socket_connect_timeout=self.timeout
            )
            owns = True
        elif self.redis is not None:
            client, owns = self.redis, False
        else:
            raise ConfigurationError("consume needs redis (a URL or a redis.asyncio.Redis)")
        consumer = AsyncConsumer(
            client,
            cfg,
            handler,
            on_error=on_error,
            retry=self.retry,
            owns_client=owns,
            stop_event=stop,
            on_exit=self._forget,
        )
        self._consumers.add(consumer)
        return consumer

    def _forget(self, consumer: AsyncConsumer) -> None:
        self._consumers.discard(consumer)

    async def consume(
        self,
        stream: str,
        group: str,
        handler: AsyncHandler,
        *,
        stop: asyncio.Event | None = None,
        **options: Any,
    ) -> None:
        """Consumes until ``stop`` is set or the task is cancelled. Takes the
        options of :meth:`consumer`. The handler gets one decoded entry; the entry is
        acknowledged when it returns, and retried later when it raises."""
        await self.consumer(stream, group, handler, stop=stop, **options).run()

    def _require_publisher(self) -> AsyncRedisPublisher:
        if self._publisher is None:
            raise ConfigurationError("via='redis' needs redis (a URL or a redis.asyncio.Redis)")
        return self._publisher
