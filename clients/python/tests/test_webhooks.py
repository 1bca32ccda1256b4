"""verify_webhook: one exception per way a webhook request fails (the node side of
webhooks is pending; tests/pending/test_webhooks_e2e.py has the end-to-end test)."""

from __future__ import annotations

import hashlib
import hmac
import json
import time

import pytest

from switchyard_server import (
    Event,
    SwitchyardServer,
    WebhookBodyError,
    WebhookMissingHeaderError,
    WebhookSignatureError,
    WebhookTimestampError,
    WebhookVerificationError,
    sign_webhook,
    verify_webhook,
)

SECRET = "whsec-0123456789"
BODY = json.dumps(
    {
        "events": [
            {
                "event": "user_online",
                "user_id": "7",
                "conn_id": "c1",
                "node": "n1",
                "ts": "2026-01-01T00:00:00Z",
                "data": {},
            },
            {
                "event": "vacated",
                "channel": "stream:1",
                "node": "n1",
                "ts": "2026-01-01T00:00:01Z",
                "data": {"channel": "stream:1"},
            },
        ]
    }
).encode()


def headers_for(body: bytes, secret: str = SECRET, ts: int | None = None) -> dict[str, str]:
    ts = int(time.time()) if ts is None else ts
    mac = hmac.new(secret.encode(), f"{ts}.".encode() + body, hashlib.sha256).hexdigest()
    return {"X-Switchyard-Timestamp": str(ts), "X-Switchyard-Signature": f"sha256={mac}"}


def test_a_valid_request_gives_its_events():
    events = verify_webhook(BODY, headers_for(BODY), SECRET)
    assert [e.event for e in events] == ["user_online", "vacated"]
    assert isinstance(events[0], Event)
    assert (events[0].user_id, events[0].channel, events[0].conn_id, events[0].data) == ("7", None, "c1", {})
    assert (events[1].channel, events[1].data) == ("stream:1", {"channel": "stream:1"})
    # The helper signs the same way as the node.
    assert verify_webhook(BODY, sign_webhook(BODY, SECRET), SECRET) == events
    # Also as a static method of both clients.
    assert SwitchyardServer.verify_webhook(BODY, headers_for(BODY), SECRET) == events


def test_header_lookup_is_case_insensitive_and_takes_pairs_and_text_bodies():
    h = {k.lower(): v for k, v in headers_for(BODY).items()}
    assert len(verify_webhook(BODY.decode(), h, SECRET)) == 2
    pairs = [(k.lower().encode(), v.encode()) for k, v in headers_for(BODY).items()]  # ASGI scope headers
    assert len(verify_webhook(BODY, pairs, SECRET)) == 2
    upper = {k.upper(): v for k, v in headers_for(BODY).items()}
    assert len(verify_webhook(BODY, upper, SECRET)) == 2


@pytest.mark.parametrize("drop", ["X-Switchyard-Timestamp", "X-Switchyard-Signature"])
def test_missing_header(drop):
    h = headers_for(BODY)
    del h[drop]
    with pytest.raises(WebhookMissingHeaderError) as e:
        verify_webhook(BODY, h, SECRET)
    assert e.value.code == "missing_header" and drop in str(e.value)


def test_bad_signatures():
    h = headers_for(BODY)
    with pytest.raises(WebhookSignatureError) as e:
        verify_webhook(BODY + b" ", h, SECRET)  # the body changed
    assert e.value.code == "invalid_signature"
    with pytest.raises(WebhookSignatureError):
        verify_webhook(BODY, h, "another-secret")
    with pytest.raises(WebhookSignatureError):
        verify_webhook(
            BODY, {**h, "X-Switchyard-Timestamp": str(int(h["X-Switchyard-Timestamp"]) - 1)}, SECRET
        )
    with pytest.raises(WebhookSignatureError):
        verify_webhook(
            BODY, {**h, "X-Switchyard-Signature": h["X-Switchyard-Signature"][7:]}, SECRET
        )  # no sha256=
    with pytest.raises(WebhookSignatureError):
        verify_webhook(BODY, {**h, "X-Switchyard-Signature": "sha256=zz"}, SECRET)
    with pytest.raises(WebhookSignatureError):
        verify_webhook(
            BODY, {**h, "X-Switchyard-Signature": "sha1=" + h["X-Switchyard-Signature"][7:]}, SECRET
        )


def test_secret_rotation_accepts_any_listed_secret():
    h = headers_for(BODY, secret="old-secret")
    assert len(verify_webhook(BODY, h, ["new-secret", "old-secret"])) == 2
    with pytest.raises(WebhookSignatureError):
        verify_webhook(BODY, h, ["new-secret"])


def test_stale_and_future_timestamps():
    now = 1_800_000_000
    old = headers_for(BODY, ts=now - 301)
    with pytest.raises(WebhookTimestampError) as e:
        verify_webhook(BODY, old, SECRET, now=now)
    assert e.value.code == "stale_timestamp"
    with pytest.raises(WebhookTimestampError):
        verify_webhook(BODY, headers_for(BODY, ts=now + 301), SECRET, now=now)
    assert len(verify_webhook(BODY, headers_for(BODY, ts=now - 299), SECRET, now=now)) == 2
    assert len(verify_webhook(BODY, old, SECRET, tolerance=600, now=now)) == 2
    assert len(verify_webhook(BODY, old, SECRET, tolerance=None, now=now)) == 2
    with pytest.raises(WebhookTimestampError):
        verify_webhook(BODY, {**old, "X-Switchyard-Timestamp": "yesterday"}, SECRET, now=now)


@pytest.mark.parametrize(
    "body", [b"not json", b"[]", b'{"events": {}}', b'{"events": [1]}', b'{"other": []}', b"\xff\xfe"]
)
def test_bad_bodies_that_are_signed(body):
    with pytest.raises(WebhookBodyError) as e:
        verify_webhook(body, headers_for(body), SECRET)
    assert e.value.code == "invalid_body"
    assert isinstance(e.value, WebhookVerificationError)


def test_an_empty_events_list_is_valid():
    body = b'{"events": []}'
    assert verify_webhook(body, headers_for(body), SECRET) == []


def test_the_secret_is_required():
    with pytest.raises(ValueError):
        verify_webhook(BODY, headers_for(BODY), "")
