"""Read state (SPEC 15.1): GET /api/unread/{user_id}."""

from __future__ import annotations

NODE_TOML = """
[namespaces.inbox]
subscribe = "owner"
history_size = 100
history_ttl = "1h"
read_state = true
"""


def test_unread_counts_follow_mark_read(pserver, ws, pnode, uid):
    user = f"u{uid}"
    ch = f"inbox:{user}"
    for i in range(3):
        pserver.publish(ch, "message", {"i": i})
    client = ws(pserver.mint_token({"sub": user}, 60), pnode)
    sub = client.subscribe(ch)
    assert sub["payload"]["unread"] == 3
    reply = client.request("mark_read", {"channel": ch, "offset": 2})
    assert reply["type"] == "read"

    u = pserver.unread(user)
    assert [(c.channel, c.offset, c.read_offset, c.unread) for c in u.channels] == [(ch, 3, 2, 1)]
    assert u.total == 1
    assert pserver.unread(user, channels=[ch]).channels[0].unread == 1
    assert pserver.unread(f"nobody-{uid}").channels == []


async def test_unread_async(apserver, uid):
    assert (await apserver.unread(f"nobody-{uid}")).total == 0
