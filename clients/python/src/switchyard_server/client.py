"""``SwitchyardServer``: the blocking client (httpx.Client, redis.Redis, threads).
Its asyncio twin is :mod:`switchyard_server.aio`; both share every request builder,
every check and every result type, and differ only in how they wait."""

from __future__ import annotations

import threading
from datetime import datetime
from typing import Any
from collections.abc import Iterable, Mapping

import httpx
import redis as redis_lib

from . import http, tokens, webhooks
from ._durations import Duration, unix_seconds
from ._publish import new_idempotency_key, prepare_publish
from ._retry import RetryPolicy
from .consumer import Consumer, ConsumerConfig, ErrorHook, Handler
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
from .redis_publisher import RedisPublisher, connect

DEFAULT_TIMEOUT = 5.0


class SwitchyardServer:
    """A backend's handle on a switchyard deployment.

    ``url``: any node's base URL (``http://127.0.0.1:8080``); ``api_key``: its
    ``api.key``; ``jwt_secret``: its ``auth.jwt_secret`` (for minting tokens);
    ``redis``: a Redis URL or a ``redis.Redis`` (for ``via="redis"`` and ``consume``);
    ``prefix``: the nodes' ``redis.prefix``; ``timeout``: seconds for every network
    call. ``retries``/``backoff``/``max_backoff``: the retry policy (exponential, full
    jitter) for 503s, timeouts and connection errors. ``idempotency_window``: the
    nodes' ``api.idempotency_window``, passed to ``switchyard_publish``.
    ``http_client``: an ``httpx.Client`` of your own (not closed by :meth:`close`).
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
        http_client: httpx.Client | None = None,
    ) -> None:
        if not url:
            raise ConfigurationError("url is required (a node's base URL, e.g. http://127.0.0.1:8080)")
        self.url = url.rstrip("/")
        self.prefix = prefix
        self.timeout = float(timeout)
        self.jwt_secret = jwt_secret
        self.idempotency_window = idempotency_window
        self.retry = RetryPolicy(retries=retries, base_delay=backoff, max_delay=max_backoff)
        self._http = http.HttpClient(
            self.url, api_key, timeout=self.timeout, retry=self.retry, client=http_client
        )
        self._redis_url: str | None = None
        self._owns_redis = False
        self.redis: redis_lib.Redis | None
        if isinstance(redis, str):
            self._redis_url = redis
            self.redis = connect(redis, self.timeout)
            self._owns_redis = True
        else:
            self.redis = redis
        self._publisher = RedisPublisher(self.redis, self.retry) if self.redis is not None else None
        self._consumers: set[Consumer] = set()
        self._lock = threading.Lock()

    # -- lifecycle -----------------------------------------------------------------

    def close(self) -> None:
        """Stops the consumers made by :meth:`consumer` and closes the connections this
        client opened."""
        with self._lock:
            consumers = list(self._consumers)
        for c in consumers:
            c.stop()
        self._http.close()
        if self._owns_redis and self.redis is not None:
            self.redis.close()

    def __enter__(self) -> SwitchyardServer:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- publishing ------------------------------------------------------------------

    def publish(
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
            return self._require_publisher().call(prepared.redis_call)
        assert prepared.http_body is not None
        return PublishResult.from_json(self._http.call(http.publish(prepared.http_body)))

    def broadcast(
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
        return BroadcastResult.from_json(self._http.call(call))

    # -- connections and subscriptions -------------------------------------------------

    def disconnect(
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
        self._http.call(
            http.disconnect(user_id=user_id, session_id=session_id, conn_id=conn_id, code=code, reason=reason)
        )

    def revoke(self, user_id: str, before: int | float | datetime | None = None) -> None:
        """Refuses the user's tokens issued before ``before`` (unix seconds or a
        datetime; default: now) and closes their connections with 4003."""
        self._http.call(http.revoke(user_id, unix_seconds(before)))

    def subscribe(self, user_id: str, channel: str) -> None:
        """Subscribes every connection of ``user_id``, cluster-wide."""
        self._http.call(http.subscribe(user_id, channel))

    def unsubscribe(self, user_id: str, channel: str) -> None:
        self._http.call(http.unsubscribe(user_id, channel))

    # -- reads -----------------------------------------------------------------------------

    def presence(self, channel: str) -> PresenceResult:
        return PresenceResult.from_json(self._http.call(http.presence(channel)))

    def history(self, channel: str, limit: int | None = None, since: int | None = None) -> HistoryResult:
        return HistoryResult.from_json(self._http.call(http.history(channel, limit, since)))

    def state(self, channel: str, keys: Iterable[str] | None = None) -> StateResult:
        return StateResult.from_json(self._http.call(http.state(channel, keys)), channel)

    def unread(self, user_id: str, channels: Iterable[str] | None = None) -> UnreadResult:
        return UnreadResult.from_json(self._http.call(http.unread(user_id, channels)))

    def channels(self, prefix: str | None = None) -> list[ChannelInfo]:
        body = self._http.call(http.channels(prefix))
        return [
            ChannelInfo(str(c["channel"]), int(c.get("subscribers", 0))) for c in body.get("channels", [])
        ]

    def stats(self) -> StatsResult:
        body = self._http.call(http.stats())
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
        handler: Handler,
        *,
        name: str | None = None,
        count: int = 10,
        block: Duration = 1.0,
        min_idle: Duration = 30.0,
        claim_interval: Duration | None = None,
        start_id: str = "$",
        on_error: ErrorHook | None = None,
        stop: threading.Event | None = None,
    ) -> Consumer:
        """A :class:`Consumer` of ``"upstream"`` or ``"events"`` for ``group`` (created
        with MKSTREAM at ``start_id`` when missing), not started: ``run()`` blocks,
        ``start()`` runs it in a thread, ``stop()`` (or setting ``stop``) ends it."""
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
            raise ConfigurationError("consume needs redis (a URL or a redis.Redis)")
        consumer = Consumer(
            client,
            cfg,
            handler,
            on_error=on_error,
            retry=self.retry,
            owns_client=owns,
            stop_event=stop,
            on_exit=self._forget,
        )
        with self._lock:
            self._consumers.add(consumer)
        return consumer

    def _forget(self, consumer: Consumer) -> None:
        with self._lock:
            self._consumers.discard(consumer)

    def consume(
        self,
        stream: str,
        group: str,
        handler: Handler,
        *,
        stop: threading.Event | None = None,
        **options: Any,
    ) -> None:
        """Consumes in the calling thread until ``stop`` is set (or forever). Takes the
        options of :meth:`consumer`. The handler gets one decoded entry; the entry is
        acknowledged when it returns, and retried later when it raises."""
        self.consumer(stream, group, handler, stop=stop, **options).run()

    def _require_publisher(self) -> RedisPublisher:
        if self._publisher is None:
            raise ConfigurationError("via='redis' needs redis (a URL or a redis.Redis)")
        return self._publisher
