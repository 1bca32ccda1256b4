"""switchyard-server: the Python backend SDK of switchyard (SPEC 18).

    from switchyard_server import SwitchyardServer, AsyncSwitchyardServer

One client class per flavour, as redis-py has ``redis.Redis`` and
``redis.asyncio.Redis``: :class:`SwitchyardServer` blocks, :class:`AsyncSwitchyardServer`
awaits; both take the same arguments and return the same result types.

Modules, one per concern: :mod:`.http` (the HTTP API), :mod:`.redis_publisher`
(FCALL), :mod:`.consumer` (the upstream and events streams), :mod:`.tokens` (JWTs),
:mod:`.webhooks` (signature checks), :mod:`.models` (typed answers), :mod:`.errors`.
"""

from ._version import __version__
from .aio import AsyncSwitchyardServer
from .client import SwitchyardServer
from .consumer import AsyncConsumer, Consumer, decode_event, decode_upstream
from .errors import (
    ApiError,
    BadRequestError,
    ConfigurationError,
    NotFoundError,
    PayloadTooLargeError,
    RedisPublishError,
    RequestTimeoutError,
    SwitchyardError,
    TransportError,
    UnauthorizedError,
    UnavailableError,
    WebhookBodyError,
    WebhookMissingHeaderError,
    WebhookSignatureError,
    WebhookTimestampError,
    WebhookVerificationError,
)
from .models import (
    BroadcastItem,
    BroadcastResult,
    ChannelInfo,
    ClientInfo,
    ErrorInfo,
    Event,
    Fallback,
    HistoryResult,
    PresenceResult,
    Publication,
    PublishResult,
    StateEntry,
    StateResult,
    StatsResult,
    UnreadChannel,
    UnreadResult,
    UpstreamEntry,
)
from .tokens import mint_subscription_token, mint_token
from .webhooks import compute_signature, sign_webhook, verify_webhook

__all__ = [
    "__version__",
    "SwitchyardServer",
    "AsyncSwitchyardServer",
    "Consumer",
    "AsyncConsumer",
    "decode_event",
    "decode_upstream",
    "SwitchyardError",
    "ConfigurationError",
    "ApiError",
    "BadRequestError",
    "UnauthorizedError",
    "NotFoundError",
    "PayloadTooLargeError",
    "UnavailableError",
    "TransportError",
    "RequestTimeoutError",
    "RedisPublishError",
    "WebhookVerificationError",
    "WebhookMissingHeaderError",
    "WebhookSignatureError",
    "WebhookTimestampError",
    "WebhookBodyError",
    "Fallback",
    "PublishResult",
    "BroadcastResult",
    "BroadcastItem",
    "ErrorInfo",
    "PresenceResult",
    "ClientInfo",
    "HistoryResult",
    "Publication",
    "StateResult",
    "StateEntry",
    "UnreadResult",
    "UnreadChannel",
    "ChannelInfo",
    "StatsResult",
    "UpstreamEntry",
    "Event",
    "mint_token",
    "mint_subscription_token",
    "verify_webhook",
    "sign_webhook",
    "compute_signature",
]
