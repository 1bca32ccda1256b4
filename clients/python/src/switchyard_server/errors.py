"""Every way a call of this library fails, as one exception hierarchy.

``SwitchyardError`` is the root. An answer of the server that is an error becomes an
:class:`ApiError` carrying the server's ``code`` (``invalid_channel``,
``reserved_type``, ``unavailable``, ...) and the HTTP ``status``; the status picks the
subclass, so ``except UnavailableError`` reads like the SPEC's 503. A network failure
that outlived the retries is a :class:`TransportError`. Webhook verification has one
exception per way it fails (:mod:`switchyard_server.webhooks`).
"""

from __future__ import annotations

from typing import Any


class SwitchyardError(Exception):
    """The root of every exception this library raises on purpose."""

    #: A short machine-readable reason; the server's error code for API errors.
    code: str = "error"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code


class ConfigurationError(SwitchyardError, ValueError):
    """The client was asked for something its configuration cannot do (no
    ``jwt_secret`` to mint tokens, no ``redis`` to publish ``via="redis"``), or a call's
    options contradict each other (``fallback`` with ``via="redis"``). Raised before
    anything is sent."""

    code = "configuration"


class ApiError(SwitchyardError):
    """The HTTP API answered an error: ``{"error": {"code", "message"}}``."""

    def __init__(
        self,
        message: str,
        *,
        code: str,
        status: int,
        body: Any = None,
    ) -> None:
        super().__init__(message, code=code)
        #: The HTTP status of the answer.
        self.status = status
        #: The decoded answer body (``None`` when it was not JSON).
        self.body = body

    def __str__(self) -> str:
        return f"{self.status} {self.code}: {self.message}"

    def __repr__(self) -> str:
        return f"{type(self).__name__}(status={self.status}, code={self.code!r}, message={self.message!r})"


class BadRequestError(ApiError):
    """400: a bad body, ``invalid_channel``, ``reserved_type``, ``limit_exceeded``."""


class UnauthorizedError(ApiError):
    """401: no API key or a wrong one (or a node without ``api.key``)."""


class NotFoundError(ApiError):
    """404: no such endpoint, or a feature the channel's namespace does not have
    (``history`` on a namespace without history, ``presence`` without presence)."""


class PayloadTooLargeError(ApiError):
    """413: the body is larger than the node's ``limits.max_message_size``."""


class UnavailableError(ApiError):
    """503: the broker is unavailable; nothing was accepted (or, for a timeout inside
    the node, the outcome is unknown). Raised only after the retries are spent; a retry
    with the same idempotency key is always safe."""


_BY_STATUS: dict[int, type[ApiError]] = {
    400: BadRequestError,
    401: UnauthorizedError,
    404: NotFoundError,
    413: PayloadTooLargeError,
    503: UnavailableError,
}


def api_error(status: int, body: Any, fallback_text: str = "") -> ApiError:
    """The exception for an error answer: the SPEC's body ``{"error": {code,
    message}}`` when the server sent one, else a code made from the status."""
    code = f"http_{status}"
    message = fallback_text or f"HTTP {status}"
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        err = body["error"]
        code = str(err.get("code") or code)
        message = str(err.get("message") or message)
    cls = _BY_STATUS.get(status, ApiError)
    return cls(message, code=code, status=status, body=body)


class TransportError(SwitchyardError):
    """The request did not get an answer (connection refused or reset, DNS) even
    after the retries. ``__cause__`` is the last underlying error."""

    code = "transport"


class RequestTimeoutError(TransportError):
    """Every attempt timed out. For a publish the outcome is unknown: calling again
    with the same ``idempotency_key`` publishes at most once."""

    code = "timeout"


class RedisPublishError(SwitchyardError):
    """The Redis function refused the publication (an error reply: an envelope that
    is not valid, a reserved type, a limit). Nothing was stored or published."""

    code = "refused"


class WebhookVerificationError(SwitchyardError):
    """A webhook request that must not be trusted; the subclass says why."""

    code = "webhook"


class WebhookMissingHeaderError(WebhookVerificationError):
    """``X-Switchyard-Timestamp`` or ``X-Switchyard-Signature`` is absent."""

    code = "missing_header"


class WebhookSignatureError(WebhookVerificationError):
    """The signature is malformed or does not match the body, timestamp and secret."""

    code = "invalid_signature"


class WebhookTimestampError(WebhookVerificationError):
    """The timestamp is not an integer, or is further than ``tolerance`` from now
    (a replayed or badly delayed request)."""

    code = "stale_timestamp"


class WebhookBodyError(WebhookVerificationError):
    """The body is signed correctly but is not ``{"events": [...]}`` JSON."""

    code = "invalid_body"
