"""Typed requests and answers: what goes in (``Fallback``) and what comes back from
the HTTP API, the Redis functions, the streams and webhooks.

Every answer object keeps the decoded JSON it was made from in ``raw``, so a field
the server adds later is readable before this library names it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from collections.abc import Mapping

from ._durations import Duration, to_duration_string


def _opt_int(v: Any) -> int | None:
    if v is None or isinstance(v, bool):
        return None
    try:
        return int(v)
    except (TypeError, ValueError):
        return None


def _opt_str(v: Any) -> str | None:
    if v is None:
        return None
    s = v.decode() if isinstance(v, bytes) else str(v)
    return s or None


@dataclass(frozen=True)
class Fallback:
    """``fallback`` of a publish (SPEC 15.3): unless a device of the user confirms
    the publication within ``after`` (1 s to 7 d), one ``undelivered`` event carrying
    ``data`` is emitted: the cue to send a push notification or an e-mail."""

    after: Duration
    data: Any = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"after": to_duration_string(self.after, what="fallback.after")}
        if self.data is not None:
            out["data"] = self.data
        return out


@dataclass(frozen=True)
class PublishResult:
    """The answer to a publish. ``offset``/``epoch`` only on channels that number
    their publications (history or state channels); ``duplicate`` is true when the
    idempotency key was already used within the window, in which case ``offset`` and
    ``epoch`` are the first publication's."""

    offset: int | None = None
    epoch: str | None = None
    duplicate: bool = False
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> PublishResult:
        return cls(
            offset=_opt_int(body.get("offset")),
            epoch=_opt_str(body.get("epoch")),
            duplicate=bool(body.get("duplicate", False)),
            raw=body,
        )


@dataclass(frozen=True)
class ErrorInfo:
    """An error reported inside a successful answer (one entry of a broadcast)."""

    code: str
    message: str = ""


@dataclass(frozen=True)
class BroadcastItem:
    """One channel of a broadcast: published (``error`` is ``None``) or not."""

    channel: str
    offset: int | None = None
    epoch: str | None = None
    duplicate: bool = False
    error: ErrorInfo | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass(frozen=True)
class BroadcastResult:
    """Per-channel outcomes, in the order the channels were given. An invalid channel
    fails only its own entry."""

    results: list[BroadcastItem]
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def failed(self) -> list[BroadcastItem]:
        return [r for r in self.results if r.error is not None]

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> BroadcastResult:
        items = []
        for r in body.get("results") or []:
            err = r.get("error")
            items.append(
                BroadcastItem(
                    channel=str(r.get("channel", "")),
                    offset=_opt_int(r.get("offset")),
                    epoch=_opt_str(r.get("epoch")),
                    duplicate=bool(r.get("duplicate", False)),
                    error=ErrorInfo(str(err.get("code", "")), str(err.get("message", "")))
                    if isinstance(err, dict)
                    else None,
                )
            )
        return cls(results=items, raw=body)


@dataclass(frozen=True)
class ClientInfo:
    """One connection in a presence answer."""

    conn_id: str | None
    user_id: str | None
    session_id: str | None
    info: Any = None

    @classmethod
    def from_json(cls, c: Mapping[str, Any]) -> ClientInfo:
        return cls(
            conn_id=_opt_str(c.get("conn_id")),
            user_id=_opt_str(c.get("user_id")),
            session_id=_opt_str(c.get("session_id")),
            info=c.get("info"),
        )


@dataclass(frozen=True)
class PresenceResult:
    """``count`` = connections, ``users`` = distinct users and sessions, ``clients``
    = up to 1000 connections (a sample of at most 100 on ``presence = "counts"``)."""

    count: int
    users: int
    clients: list[ClientInfo]
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> PresenceResult:
        return cls(
            count=int(body.get("count") or 0),
            users=int(body.get("users") or 0),
            clients=[ClientInfo.from_json(c) for c in body.get("clients") or []],
            raw=body,
        )


@dataclass(frozen=True)
class Publication:
    """A stored publication as history returns it. ``from_`` is the wire's ``from``
    (``{user_id?, session_id?, info?}`` on publications made by clients)."""

    type: str
    payload: Any = None
    channel: str | None = None
    offset: int | None = None
    timestamp: str | None = None
    from_: Mapping[str, Any] | None = None
    key: str | None = None
    deleted: bool = False
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, p: Mapping[str, Any]) -> Publication:
        return cls(
            type=str(p.get("type", "")),
            payload=p.get("payload"),
            channel=_opt_str(p.get("channel")),
            offset=_opt_int(p.get("offset")),
            timestamp=_opt_str(p.get("timestamp")),
            from_=p.get("from"),
            key=_opt_str(p.get("key")),
            deleted=bool(p.get("deleted", False)),
            raw=p,
        )


@dataclass(frozen=True)
class HistoryResult:
    """Publications in ascending offset order, the channel's newest ``offset`` and
    its ``epoch``."""

    publications: list[Publication]
    offset: int
    epoch: str
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> HistoryResult:
        return cls(
            publications=[Publication.from_json(p) for p in body.get("publications") or []],
            offset=int(body.get("offset") or 0),
            epoch=str(body.get("epoch") or ""),
            raw=body,
        )


@dataclass(frozen=True)
class StateEntry:
    """The newest publication of one key of a state channel, or its tombstone
    (``deleted`` true, no ``payload``)."""

    key: str
    type: str | None
    payload: Any
    offset: int | None
    timestamp: str | None
    deleted: bool = False

    @classmethod
    def from_json(cls, e: Mapping[str, Any]) -> StateEntry:
        return cls(
            key=str(e.get("key", "")),
            type=_opt_str(e.get("type")),
            payload=e.get("payload"),
            offset=_opt_int(e.get("offset")),
            timestamp=_opt_str(e.get("timestamp")),
            deleted=bool(e.get("deleted", False)),
        )


@dataclass(frozen=True)
class StateResult:
    """A state channel's entries (SPEC 16.2) in ascending offset order."""

    channel: str
    offset: int
    epoch: str
    entries: list[StateEntry]
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def values(self) -> dict[str, Any]:
        """key -> current payload, tombstones left out."""
        return {e.key: e.payload for e in self.entries if not e.deleted}

    @classmethod
    def from_json(cls, body: Mapping[str, Any], channel: str = "") -> StateResult:
        return cls(
            channel=str(body.get("channel") or channel),
            offset=int(body.get("offset") or 0),
            epoch=str(body.get("epoch") or ""),
            entries=[StateEntry.from_json(e) for e in body.get("entries") or []],
            raw=body,
        )


@dataclass(frozen=True)
class UnreadChannel:
    """A user's read position on one channel (SPEC 15.1)."""

    channel: str
    offset: int
    read_offset: int
    unread: int


@dataclass(frozen=True)
class UnreadResult:
    channels: list[UnreadChannel]
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def total(self) -> int:
        """The navbar badge: unread publications over every channel listed."""
        return sum(c.unread for c in self.channels)

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> UnreadResult:
        return cls(
            channels=[
                UnreadChannel(
                    channel=str(c.get("channel", "")),
                    offset=int(c.get("offset") or 0),
                    read_offset=int(c.get("read_offset") or 0),
                    unread=int(c.get("unread") or 0),
                )
                for c in body.get("channels") or []
            ],
            raw=body,
        )


@dataclass(frozen=True)
class ChannelInfo:
    """A channel with subscribers somewhere in the cluster."""

    channel: str
    subscribers: int


@dataclass(frozen=True)
class StatsResult:
    """``GET /api/stats``: this node and the cluster, as the server reports them."""

    node: Mapping[str, Any]
    cluster: Mapping[str, Any]
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)


@dataclass(frozen=True)
class UpstreamEntry:
    """A client publication of a ``forward`` namespace, read from
    ``<prefix>:upstream`` (SPEC 8.3). Absent ids are ``None``."""

    #: The stream entry id (``"1700000000000-0"``): unique, usable for deduplication.
    id: str
    channel: str
    type: str
    payload: Any
    user_id: str | None
    session_id: str | None
    conn_id: str | None
    node: str | None
    #: RFC 3339 UTC, as the node stamped it.
    ts: str | None


@dataclass(frozen=True)
class Event:
    """A lifecycle event (SPEC 17): from the ``<prefix>:events`` stream (``id`` is the
    entry id) or from a webhook body (``id`` is ``None``)."""

    event: str
    channel: str | None
    user_id: str | None
    session_id: str | None
    conn_id: str | None
    node: str | None
    ts: str | None
    data: Any
    id: str | None = None

    @classmethod
    def from_json(cls, e: Mapping[str, Any]) -> Event:
        return cls(
            event=str(e.get("event", "")),
            channel=_opt_str(e.get("channel")),
            user_id=_opt_str(e.get("user_id")),
            session_id=_opt_str(e.get("session_id")),
            conn_id=_opt_str(e.get("conn_id")),
            node=_opt_str(e.get("node")),
            ts=_opt_str(e.get("ts")),
            data=e.get("data"),
        )
