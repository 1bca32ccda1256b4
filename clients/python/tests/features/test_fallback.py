"""Fallback (SPEC 15.3): an unconfirmed publication yields one `undelivered` event;
a confirmed one none."""

from __future__ import annotations

from harness import eventually
from switchyard_server import Event, Fallback

NODE_TOML = """
[namespaces.user]
history_size = 100
history_ttl = "1h"
receipts = true
"""


def test_undelivered_only_for_unconfirmed_publications(pserver, ws, pnode, uid):
    user = f"u{uid}"
    ch = f"user:{user}"
    events: list[Event] = []
    consumer = pserver.consumer(
        "events",
        f"fallback-{uid}",
        lambda e: events.append(e) if e.event == "undelivered" else None,
        block=0.1,
    ).start()
    try:
        eventually("the group", lambda: consumer.group_ready)
        client = ws(pserver.mint_token({"sub": user}, 60), pnode)
        confirmed = pserver.publish(
            ch, "order_shipped", {"id": 1}, fallback=Fallback(after="1s", data={"push": "a"})
        )
        frame = client.wait(lambda f: f["type"] == "order_shipped")
        client.send({"type": "received", "payload": {"channel": ch, "offset": frame["offset"]}})
        client.close()
        missed = pserver.publish(
            ch, "payment_failed", {"id": 2}, fallback={"after": "1s", "data": {"email": "user@example.com"}}
        )
        e = eventually(
            "the undelivered event",
            lambda: next((x for x in events if x.data and x.data.get("offset") == missed.offset), None),
            timeout=15,
        )
    finally:
        consumer.stop()
    assert e.user_id == user or e.data.get("user_id") == user
    assert e.data["type"] == "payment_failed"
    assert e.data["payload"] == {"id": 2}
    assert e.data["data"] == {"email": "user@example.com"}
    assert not [x for x in events if x.data and x.data.get("offset") == confirmed.offset]
