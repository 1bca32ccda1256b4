"""The HTTP API through SwitchyardServer, against a real node on Redis, observed by
real WebSocket clients."""

from __future__ import annotations

import httpx
import pytest

from harness import API_KEY, JWT_SECRET, eventually
from switchyard_server import (
    BadRequestError,
    ConfigurationError,
    NotFoundError,
    SwitchyardServer,
    UnauthorizedError,
)


def publications(client, channel):
    return [f for f in client.frames if f.get("channel") == channel and "id" not in f]


def test_publish_reaches_the_users_socket(server, ws, uid):
    user = f"u{uid}"
    client = ws(server.mint_token({"sub": user}, 60))
    assert client.auth["user_id"] == user
    result = server.publish(f"user:{user}", "notification", {"title": "Your bid matched"})
    # user: keeps no history: no offset, no epoch.
    assert (result.offset, result.epoch, result.duplicate) == (None, None, False)
    frame = client.wait(lambda f: f["type"] == "notification")
    assert frame["channel"] == f"user:{user}"
    assert frame["payload"] == {"title": "Your bid matched"}


def test_history_channel_numbers_publications_and_history_reads_them(server, uid):
    ch = f"order:{uid}"
    first = server.publish(ch, "order_update", {"status": "paid"})
    second = server.publish(ch, "order_update", {"status": "shipped"})
    assert (first.offset, second.offset) == (1, 2)
    assert first.epoch and first.epoch == second.epoch

    page = server.history(ch)
    assert [p.offset for p in page.publications] == [1, 2]
    assert [p.payload["status"] for p in page.publications] == ["paid", "shipped"]
    assert page.publications[0].type == "order_update"
    assert page.publications[0].channel == ch
    assert page.offset == 2 and page.epoch == first.epoch
    assert [p.offset for p in server.history(ch, limit=1).publications] == [2]
    assert [p.offset for p in server.history(ch, since=1).publications] == [2]


def test_idempotency_key_publishes_once(server, ws, uid):
    ch = f"order:{uid}"
    user = f"u{uid}"
    client = ws(server.mint_token({"sub": user}, 60))
    client.subscribe(ch, server.mint_subscription_token(user, ch, 60))

    first = server.publish(ch, "order_update", {"n": 1}, idempotency_key=f"order-{uid}-paid")
    again = server.publish(ch, "order_update", {"n": 1}, idempotency_key=f"order-{uid}-paid")
    assert first.duplicate is False
    assert again.duplicate is True
    assert (again.offset, again.epoch) == (first.offset, first.epoch)

    server.publish(ch, "marker", None)
    client.wait(lambda f: f["type"] == "marker")
    assert [f["offset"] for f in publications(client, ch) if f["type"] == "order_update"] == [first.offset]


def test_every_publish_carries_an_idempotency_key(node, uid):
    bodies = []

    def record(request: httpx.Request) -> None:
        bodies.append(request.read())

    with httpx.Client(event_hooks={"request": [record]}) as http_client:
        s = SwitchyardServer(node.base, API_KEY, http_client=http_client)
        s.publish(f"order:{uid}", "a", 1)
        s.publish(f"order:{uid}", "a", 1)
        s.broadcast([f"order:{uid}"], "b", 2)
    import json

    keys = [json.loads(b)["idempotency_key"] for b in bodies]
    assert len(keys) == 3 and len(set(keys)) == 3
    assert all(8 <= len(k) <= 128 for k in keys)


def test_api_errors_carry_code_and_status(server, node, uid):
    with pytest.raises(BadRequestError) as e:
        server.publish("nonamespace", "x", 1)
    assert (e.value.status, e.value.code) == (400, "invalid_channel")

    with pytest.raises(BadRequestError) as e:
        server.publish(f"user:{uid}", "subscribe", 1)
    assert e.value.code == "reserved_type"

    with pytest.raises(NotFoundError) as e:
        server.history(f"user:{uid}")
    assert (e.value.status, e.value.code) == (404, "not_found")

    with pytest.raises(BadRequestError) as e:
        server.disconnect(user_id=uid, code=1000)
    assert e.value.code == "bad_request"

    with SwitchyardServer(node.base, "wrong-key") as wrong:
        with pytest.raises(UnauthorizedError) as e:
            wrong.publish(f"user:{uid}", "x", 1)
    assert (e.value.status, e.value.code) == (401, "unauthorized")
    assert "unauthorized" in str(e.value)


def test_broadcast_reports_each_channel(server, ws, uid):
    user = f"u{uid}"
    client = ws(server.mint_token({"sub": user}, 60))
    result = server.broadcast(
        [f"user:{user}", "bad channel", f"order:{uid}"], "inventory_alert", {"sku": "A1"}
    )
    assert [r.channel for r in result.results] == [f"user:{user}", "bad channel", f"order:{uid}"]
    assert [r.ok for r in result.results] == [True, False, True]
    assert result.failed[0].error.code == "invalid_channel"
    assert result.results[2].offset == 1
    frame = client.wait(lambda f: f["type"] == "inventory_alert")
    assert frame["payload"] == {"sku": "A1"}


def test_disconnect_closes_every_connection_of_the_user(server, ws, uid):
    user = f"u{uid}"
    token = server.mint_token({"sub": user}, 60)
    a, b = ws(token), ws(token)
    server.disconnect(user_id=user, reason="banned")
    for c in (a, b):
        frame = c.wait(lambda f: f["type"] == "disconnect")
        assert frame["payload"]["code"] == 4003
        assert frame["payload"]["reconnect"] is False
    with pytest.raises(ConfigurationError):
        server.disconnect()
    with pytest.raises(ConfigurationError):
        server.disconnect(user_id=user, session_id="s")


def test_disconnect_by_connection_id_with_a_code(server, ws, uid):
    user = f"u{uid}"
    token = server.mint_token({"sub": user}, 60)
    a, b = ws(token), ws(token)
    server.disconnect(conn_id=a.auth["conn_id"], code=4321, reason="moved")
    assert a.wait(lambda f: f["type"] == "disconnect")["payload"]["code"] == 4321
    # b is still connected: it still gets publications.
    server.publish(f"user:{user}", "still_here", None)
    b.wait(lambda f: f["type"] == "still_here")


def test_server_side_subscribe_and_unsubscribe(server, ws, uid):
    user = f"u{uid}"
    ch = f"order:{uid}"
    client = ws(server.mint_token({"sub": user}, 60))
    server.subscribe(user, ch)
    assert client.wait(lambda f: f["type"] == "subscribed")["payload"]["channel"] == ch
    server.publish(ch, "order_update", {"status": "paid"})
    assert client.wait(lambda f: f["type"] == "order_update")["channel"] == ch
    server.unsubscribe(user, ch)
    assert client.wait(lambda f: f["type"] == "unsubscribed")["payload"]["channel"] == ch


def test_presence_channels_and_stats(server, ws, uid):
    user = f"u{uid}"
    ch = f"chat:{uid}"
    client = ws(server.mint_token({"sub": user, "info": {"name": "Ann"}}, 60))
    client.subscribe(ch, server.mint_subscription_token(user, ch, 60))

    p = server.presence(ch)
    assert (p.count, p.users) == (1, 1)
    assert p.clients[0].user_id == user
    assert p.clients[0].conn_id == client.auth["conn_id"]
    assert p.clients[0].info == {"name": "Ann"}

    listed = eventually("the channel in /api/channels", lambda: server.channels(prefix="chat:"))
    assert any(c.channel == ch and c.subscribers == 1 for c in listed)
    stats = server.stats()
    assert stats.node["node_id"] == "py-session-node"
    assert stats.cluster["connections"] >= 1


def test_minted_tokens_are_accepted_by_the_node(server, ws, uid):
    user = f"u{uid}"
    ch = f"order:{uid}"
    client = ws(server.mint_token({"sub": user, "allow": [f"chat:{uid}*"]}, 60))
    # A subscription token grants its own channel...
    client.subscribe(ch, server.mint_subscription_token(user, ch, 60))
    # ...and only for its user and channel.
    other = client.request(
        "subscribe", {"channel": f"order:{uid}x", "token": server.mint_subscription_token(user, ch, 60)}
    )
    assert (other["type"], other["payload"]["code"]) == ("error", "forbidden")
    foreign = client.request(
        "subscribe",
        {"channel": ch + "y", "token": server.mint_subscription_token("someone-else", ch + "y", 60)},
    )
    assert foreign["payload"]["code"] == "forbidden"
    # The allow claim of the connection token.
    client.subscribe(f"chat:{uid}-room")


def test_tokens_signed_otherwise_or_expired_are_refused(node):
    import time

    from harness import WsClient
    from switchyard_server import mint_token

    forged = mint_token("another-secret-0123456789abcdef01", {"sub": "mallory"}, 60)
    with pytest.raises(AssertionError, match="auth failed"):
        WsClient(node.ws, forged)
    # Expired an hour ago: beyond the node's 30 s leeway.
    expired = mint_token(JWT_SECRET, {"sub": "late"}, 60, now=time.time() - 3600)
    with pytest.raises(AssertionError, match="auth failed"):
        WsClient(node.ws, expired)
