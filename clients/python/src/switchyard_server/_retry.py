"""How often and how long to wait before trying a call again: exponential backoff
with full jitter, shared by the HTTP client and the Redis publisher."""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True)
class RetryPolicy:
    """``retries`` more attempts after the first one; before retry ``n`` (0-based)
    a random wait in ``[0, min(max_delay, base_delay * 2**n)]`` (full jitter, so many
    services retrying after one failure do not come back in step)."""

    retries: int = 3
    base_delay: float = 0.1
    max_delay: float = 2.0

    def __post_init__(self) -> None:
        if self.retries < 0:
            raise ValueError("retries must be >= 0")
        if self.base_delay < 0 or self.max_delay < 0:
            raise ValueError("retry delays must be >= 0")

    def delay(self, retry: int, retry_after: float | None = None) -> float:
        """Seconds to wait before retry number ``retry``; a server's ``Retry-After``
        is honoured up to ``max_delay``."""
        cap = min(self.max_delay, self.base_delay * (2**retry))
        wait = random.uniform(0, cap)
        if retry_after is not None and retry_after > 0:
            wait = max(wait, min(retry_after, self.max_delay))
        return wait


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` header (the delay form only)."""
    if not value:
        return None
    try:
        return max(0.0, float(value.strip()))
    except ValueError:
        return None
