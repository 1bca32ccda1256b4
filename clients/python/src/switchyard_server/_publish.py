"""What one publish is, checked once before anything is sent, then turned into either
an ``/api/publish`` body or the arguments of a Redis function call. Shared by the
sync and the asyncio client so both refuse the same mistakes the same way."""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass
from typing import Any
from collections.abc import Mapping

from ._durations import Duration, whole_seconds
from .errors import ConfigurationError
from .models import Fallback

#: SPEC 4: ``<namespace>:<rest>``.
CHANNEL_RE = re.compile(r"^[a-z0-9_-]{1,32}:[A-Za-z0-9_.:@=-]{1,200}$")
#: SPEC 16.1: a state key has the characters of a channel's rest.
KEY_RE = re.compile(r"^[A-Za-z0-9_.:@=-]{1,200}$")
#: SPEC 6: an idempotency key is at most 128 characters.
MAX_IDEMPOTENCY_KEY = 128
#: SPEC 16.1: ``state_max_keys`` default.
DEFAULT_STATE_MAX_KEYS = 10000


def new_idempotency_key() -> str:
    """A fresh random key (128 bits, hex): one per logical publish, reused by its
    retries."""
    return uuid.uuid4().hex


def channel_key(prefix: str, channel: str) -> str:
    """The Redis key (and pub/sub channel) of a gateway channel: ``<prefix>:{<channel>}``."""
    return f"{prefix}:{{{channel}}}"


def check_channel(channel: str) -> None:
    if not isinstance(channel, str) or not CHANNEL_RE.match(channel):
        raise ConfigurationError(
            f"invalid channel {channel!r}: expected <namespace>:<rest> (SPEC 4)",
            code="invalid_channel",
        )


def check_idempotency_key(key: str) -> None:
    if not isinstance(key, str) or not key or len(key) > MAX_IDEMPOTENCY_KEY:
        raise ConfigurationError(f"idempotency_key must be 1 to {MAX_IDEMPOTENCY_KEY} characters")


def envelope_json(envelope: Mapping[str, Any]) -> str:
    """The envelope as compact JSON text."""
    return json.dumps(envelope, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


@dataclass(frozen=True)
class RedisCall:
    """``FCALL <function> 1 <key> <args...>``."""

    function: str
    key: str
    args: tuple[str | int, ...]


@dataclass(frozen=True)
class PreparedPublish:
    via: str
    idempotency_key: str
    #: The ``/api/publish`` body (``via="http"``).
    http_body: dict[str, Any] | None = None
    #: The function call (``via="redis"``).
    redis_call: RedisCall | None = None


def prepare_publish(
    *,
    channel: str,
    type: str,
    payload: Any,
    key: str | None,
    delete: bool,
    idempotency_key: str | None,
    fallback: Fallback | Mapping[str, Any] | None,
    via: str,
    volatile: bool,
    to: str | None,
    history_size: int | None,
    history_ttl: Duration | None,
    state_max_keys: int | None,
    state_ttl: Duration | None,
    prefix: str,
    idempotency_window: Duration,
) -> PreparedPublish:
    if via not in ("http", "redis"):
        raise ConfigurationError(f"via must be 'http' or 'redis', not {via!r}")
    if not isinstance(channel, str) or not channel:
        raise ConfigurationError("channel must be a non-empty string")
    if not isinstance(type, str) or not type:
        raise ConfigurationError("type must be a non-empty string")
    if key is not None and (not isinstance(key, str) or not KEY_RE.match(key)):
        raise ConfigurationError(f"invalid state key {key!r} (SPEC 16.1)")
    if delete and key is None:
        raise ConfigurationError("delete=True needs the key to delete")
    if delete and payload is not None:
        raise ConfigurationError("delete=True publishes no payload")
    if idempotency_key is None:
        idempotency_key = new_idempotency_key()
    check_idempotency_key(idempotency_key)

    if via == "http":
        body: dict[str, Any] = {"channel": channel, "type": type}
        if not delete:
            body["payload"] = payload
        if key is not None:
            body["key"] = key
        if delete:
            body["delete"] = True
        if volatile:
            body["volatile"] = True
        if to is not None:
            body["to"] = to
        body["idempotency_key"] = idempotency_key
        if fallback is not None:
            body["fallback"] = _fallback_json(fallback)
        return PreparedPublish(via="http", idempotency_key=idempotency_key, http_body=body)

    # via == "redis"
    if fallback is not None:
        raise ConfigurationError("fallback needs via='http': its deadline is kept by the nodes (SPEC 15.3)")
    if volatile or to is not None:
        raise ConfigurationError("volatile and to need via='http'")
    check_channel(channel)
    envelope: dict[str, Any] = {"type": type}
    if not delete:
        envelope["payload"] = payload
    rkey = channel_key(prefix, channel)
    if key is not None:
        envelope["key"] = key
        if delete:
            envelope["delete"] = True
        max_keys = DEFAULT_STATE_MAX_KEYS if state_max_keys is None else int(state_max_keys)
        if max_keys < 1:
            raise ConfigurationError("state_max_keys must be >= 1")
        ttl = 0 if state_ttl is None else whole_seconds(state_ttl, what="state_ttl")
        call = RedisCall("switchyard_set", rkey, (envelope_json(envelope), max_keys, ttl))
    else:
        size = 0 if history_size is None else int(history_size)
        if size < 0:
            raise ConfigurationError("history_size must be >= 0")
        ttl = 0 if history_ttl is None else whole_seconds(history_ttl, what="history_ttl")
        if size > 0 and ttl == 0:
            raise ConfigurationError("history_size > 0 needs history_ttl > 0, as the namespace has")
        window = max(1, whole_seconds(idempotency_window, what="idempotency_window"))
        call = RedisCall(
            "switchyard_publish",
            rkey,
            (envelope_json(envelope), size, ttl, idempotency_key, window),
        )
    return PreparedPublish(via="redis", idempotency_key=idempotency_key, redis_call=call)


def _fallback_json(fallback: Fallback | Mapping[str, Any]) -> dict[str, Any]:
    if isinstance(fallback, Fallback):
        return fallback.to_json()
    if isinstance(fallback, Mapping) and "after" in fallback:
        return Fallback(after=fallback["after"], data=fallback.get("data")).to_json()
    raise ConfigurationError("fallback must be Fallback(after, data) or {'after': ..., 'data'?: ...}")
