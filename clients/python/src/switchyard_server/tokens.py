"""Minting the JWTs the gateway accepts (SPEC 3), HS256 with ``auth.jwt_secret``:
connection tokens with any claims, and subscription tokens ``{sub, channel, exp}``
that let one user into one channel."""

from __future__ import annotations

import math
import time
from typing import Any
from collections.abc import Mapping

import jwt

from ._durations import Duration, to_seconds
from .errors import ConfigurationError

ALGORITHMS = ("HS256", "HS384", "HS512")


def _check(secret: str | bytes | None, algorithm: str) -> str | bytes:
    if not secret:
        raise ConfigurationError("minting tokens needs jwt_secret (the node's auth.jwt_secret)")
    if algorithm not in ALGORITHMS:
        raise ConfigurationError(f"algorithm must be one of {ALGORITHMS}")
    return secret


def mint_token(
    secret: str | bytes | None,
    claims: Mapping[str, Any],
    ttl: Duration,
    *,
    algorithm: str = "HS256",
    now: float | None = None,
) -> str:
    """A connection token: ``claims`` (``sub``, ``tenant_id``, ``roles``, ``info``,
    ``channels``, ``allow``...) plus ``iat`` = now and ``exp`` = now + ``ttl``.
    ``sub`` (or ``user_id``) is required: a token names its user."""
    key = _check(secret, algorithm)
    if not isinstance(claims, Mapping):
        raise ConfigurationError("claims must be a mapping")
    sub = claims.get("sub", claims.get("user_id"))
    if sub is None or sub == "":
        raise ConfigurationError("claims need 'sub' (the user id)")
    seconds = to_seconds(ttl, what="ttl")
    if seconds <= 0:
        raise ConfigurationError("ttl must be > 0")
    issued = int(time.time() if now is None else now)
    body = dict(claims)
    if "sub" in body:
        body["sub"] = str(body["sub"])
    body.setdefault("iat", issued)
    body["exp"] = issued + int(math.ceil(seconds))
    return jwt.encode(body, key, algorithm=algorithm)


def mint_subscription_token(
    secret: str | bytes | None,
    sub: str,
    channel: str,
    ttl: Duration,
    *,
    algorithm: str = "HS256",
    now: float | None = None,
) -> str:
    """A subscription token: ``{sub, channel, iat, exp}``; it grants ``channel`` to
    ``sub`` only (SPEC 3)."""
    if not channel:
        raise ConfigurationError("channel must be a non-empty string")
    return mint_token(secret, {"sub": str(sub), "channel": channel}, ttl, algorithm=algorithm, now=now)
