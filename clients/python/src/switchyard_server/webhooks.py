"""Verifying the webhooks a node sends (SPEC 17), as Stripe's ``constructEvent`` does:

    X-Switchyard-Timestamp: <unix seconds>
    X-Switchyard-Signature: sha256=<hex HMAC-SHA256 of "<timestamp>.<body>" with secret>

:func:`verify_webhook` checks both headers against the raw body (the bytes as
received: a re-serialised JSON body no longer matches), compares in constant time,
rejects a timestamp further than ``tolerance`` from now (replays), and only then
parses ``{"events": [...]}``. Each failure has its own exception, all subclasses of
:class:`~switchyard_server.errors.WebhookVerificationError`.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from typing import Any, Union
from collections.abc import Iterable, Mapping, Sequence

from .errors import (
    WebhookBodyError,
    WebhookMissingHeaderError,
    WebhookSignatureError,
    WebhookTimestampError,
)
from .models import Event

TIMESTAMP_HEADER = "X-Switchyard-Timestamp"
SIGNATURE_HEADER = "X-Switchyard-Signature"
SCHEME = "sha256"
DEFAULT_TOLERANCE = 300

Secret = Union[str, bytes]
Headers = Union[Mapping[str, Any], Iterable[tuple[Any, Any]]]


def _text(v: Any) -> str:
    return v.decode("latin-1") if isinstance(v, (bytes, bytearray)) else str(v)


def _header(headers: Headers, name: str) -> str | None:
    """A header from a dict, a case-insensitive headers object (Flask, Starlette,
    Django's ``request.headers``) or a list of pairs (ASGI ``scope["headers"]``)."""
    lower = name.lower()
    items: Iterable[tuple[Any, Any]]
    if isinstance(headers, Mapping):
        v = headers.get(name)
        if v is None:
            v = headers.get(lower)
        if v is not None:
            return _text(v)
        items = headers.items()
    else:
        items = headers
    for k, v in items:
        if _text(k).lower() == lower:
            return _text(v)
    return None


def _bytes(v: str | bytes | bytearray) -> bytes:
    return bytes(v) if isinstance(v, (bytes, bytearray)) else v.encode("utf-8")


def compute_signature(body: str | bytes, timestamp: int | str, secret: Secret) -> str:
    """``sha256=<hex>`` for ``body`` sent at ``timestamp``."""
    mac = hmac.new(_bytes(secret), _bytes(str(timestamp)) + b"." + _bytes(body), hashlib.sha256)
    return f"{SCHEME}={mac.hexdigest()}"


def sign_webhook(body: str | bytes, secret: Secret, timestamp: int | None = None) -> dict[str, str]:
    """The headers a node would send with ``body``: for testing a webhook endpoint."""
    ts = int(time.time()) if timestamp is None else int(timestamp)
    return {TIMESTAMP_HEADER: str(ts), SIGNATURE_HEADER: compute_signature(body, ts, secret)}


def verify_webhook(
    body: str | bytes,
    headers: Headers,
    secret: Secret | Sequence[Secret],
    tolerance: float | None = DEFAULT_TOLERANCE,
    *,
    now: float | None = None,
) -> list[Event]:
    """The events of a webhook request, or an exception saying why it is not to be
    trusted. ``secret`` may be a list (during a rotation any one may match);
    ``tolerance`` in seconds, ``None`` to skip the age check."""
    ts_text = _header(headers, TIMESTAMP_HEADER)
    if ts_text is None or ts_text.strip() == "":
        raise WebhookMissingHeaderError(f"missing {TIMESTAMP_HEADER} header")
    sig_text = _header(headers, SIGNATURE_HEADER)
    if sig_text is None or sig_text.strip() == "":
        raise WebhookMissingHeaderError(f"missing {SIGNATURE_HEADER} header")
    ts_text = ts_text.strip()
    if not ts_text.lstrip("-").isdigit():
        raise WebhookTimestampError(f"{TIMESTAMP_HEADER} is not unix seconds: {ts_text[:32]!r}")
    timestamp = int(ts_text)

    secrets_list: list[Secret] = [secret] if isinstance(secret, (str, bytes)) else list(secret)
    if not secrets_list or any(not s for s in secrets_list):
        raise ValueError("verify_webhook needs the webhook's non-empty secret")
    given = [s.strip() for s in sig_text.split(",") if s.strip()]
    candidates = [g for g in given if g.startswith(SCHEME + "=")]
    if not candidates:
        raise WebhookSignatureError(f"{SIGNATURE_HEADER} has no {SCHEME}= signature")
    raw = _bytes(body)
    expected = [compute_signature(raw, ts_text, s) for s in secrets_list]
    matched = False
    for g in candidates:
        for e in expected:
            # Constant time: never reveal how many leading characters matched.
            matched |= hmac.compare_digest(g.encode("latin-1", "replace"), e.encode("latin-1"))
    if not matched:
        raise WebhookSignatureError("signature does not match the body, timestamp and secret")

    if tolerance is not None:
        current = time.time() if now is None else now
        if abs(current - timestamp) > tolerance:
            raise WebhookTimestampError(
                f"timestamp {timestamp} is {int(current - timestamp)} s from now, "
                f"outside the tolerance of {tolerance} s"
            )

    try:
        doc = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise WebhookBodyError(f"body is not JSON: {exc}") from exc
    if not isinstance(doc, dict) or not isinstance(doc.get("events"), list):
        raise WebhookBodyError('body is not {"events": [...]}')
    events = doc["events"]
    if not all(isinstance(e, dict) and isinstance(e.get("event"), str) for e in events):
        raise WebhookBodyError("every event must be an object with a string 'event'")
    return [Event.from_json(e) for e in events]
