"""Publishing through the Redis function library the nodes load (SPEC 8.2):
``FCALL switchyard_publish``, observed by a real node's subscribers and history."""

from __future__ import annotations

import pytest

from harness import API_KEY
from switchyard_server import ConfigurationError, Fallback, RedisPublishError, SwitchyardServer


def test_publish_via_redis_with_history(server, ws, uid):
    ch = f"order:{uid}"
    user = f"u{uid}"
    client = ws(server.mint_token({"sub": user}, 60))
    client.subscribe(ch, server.mint_subscription_token(user, ch, 60))

    r = server.publish(
        ch, "order_update", {"status": "shipped"}, via="redis", history_size=100, history_ttl="24h"
    )
    assert r.offset == 1 and r.epoch and r.duplicate is False
    frame = client.wait(lambda f: f["type"] == "order_update")
    assert (frame["channel"], frame["offset"], frame["payload"]) == (ch, 1, {"status": "shipped"})
    # The same history the HTTP API reads: one offset sequence for both paths.
    assert server.publish(ch, "order_update", {"status": "delivered"}).offset == 2
    assert [p.payload["status"] for p in server.history(ch).publications] == ["shipped", "delivered"]


def test_publish_via_redis_is_idempotent(server, ws, uid):
    ch = f"order:{uid}"
    user = f"u{uid}"
    client = ws(server.mint_token({"sub": user}, 60))
    client.subscribe(ch, server.mint_subscription_token(user, ch, 60))
    opts = dict(via="redis", history_size=100, history_ttl=86400, idempotency_key=f"evt-{uid}")
    first = server.publish(ch, "order_update", {"n": 1}, **opts)
    again = server.publish(ch, "order_update", {"n": 1}, **opts)
    assert (first.duplicate, again.duplicate) == (False, True)
    assert (again.offset, again.epoch) == (first.offset, first.epoch)
    server.publish(ch, "marker", None)
    client.wait(lambda f: f["type"] == "marker")
    assert [f["offset"] for f in client.frames if f["type"] == "order_update"] == [first.offset]


def test_publish_via_redis_always_sends_an_idempotency_key(server, redis_server, uid):
    ch = f"order:{uid}"
    server.publish(ch, "order_update", {}, via="redis", history_size=10, history_ttl=60)
    keys = redis_server.cli("--scan", "--pattern", f"switchyard:{{{ch}}}:idem:*").split()
    assert len(keys) == 1
    ttl = int(redis_server.cli("TTL", keys[0]))
    assert 0 < ttl <= 300  # the default idempotency window


def test_publish_via_redis_live_only(server, ws, uid):
    user = f"u{uid}"
    client = ws(server.mint_token({"sub": user}, 60))
    r = server.publish(f"user:{user}", "notification", {"title": "hi"}, via="redis")
    assert (r.offset, r.epoch) == (None, None)
    assert client.wait(lambda f: f["type"] == "notification")["payload"] == {"title": "hi"}


def test_the_function_refuses_a_reserved_type(server, uid):
    with pytest.raises(RedisPublishError) as e:
        server.publish(f"user:{uid}", "subscribe", {}, via="redis")
    assert e.value.code == "reserved_type"


def test_redis_options_are_checked_before_sending(server, node, uid):
    with pytest.raises(ConfigurationError):
        server.publish(f"user:{uid}", "n", {}, via="redis", fallback=Fallback(after="30s"))
    with pytest.raises(ConfigurationError) as e:
        server.publish("no namespace", "n", {}, via="redis")
    assert e.value.code == "invalid_channel"
    with pytest.raises(ConfigurationError):
        server.publish(f"user:{uid}", "n", {}, via="pigeon")
    with pytest.raises(ConfigurationError):
        server.publish(f"order:{uid}", "n", {}, via="redis", history_size=10)  # no ttl
    with SwitchyardServer(node.base, API_KEY) as no_redis:
        with pytest.raises(ConfigurationError):
            no_redis.publish(f"user:{uid}", "n", {}, via="redis")
        with pytest.raises(ConfigurationError):
            no_redis.consume("upstream", "g", print)


def test_a_redis_client_can_be_passed_in(node, redis_server, ws, uid):
    import redis

    r = redis.Redis.from_url(redis_server.url, decode_responses=True)
    with SwitchyardServer(node.base, API_KEY, redis=r) as s:
        res = s.publish(f"order:{uid}", "x", 1, via="redis", history_size=5, history_ttl=60)
        assert res.offset == 1 and isinstance(res.epoch, str)
    r.close()


def test_a_custom_prefix_reaches_nodes_with_that_prefix(redis_server, ws, uid):
    from harness import JWT_SECRET, Node

    other = Node(redis=redis_server, node_id="py-prefixed", prefix=f"p{uid}")
    try:
        with SwitchyardServer(other.base, API_KEY, JWT_SECRET, redis=redis_server.url, prefix=f"p{uid}") as s:
            client = ws(s.mint_token({"sub": uid}, 60), other)
            s.publish(f"user:{uid}", "hello", {"via": "redis"}, via="redis")
            assert client.wait(lambda f: f["type"] == "hello")["payload"] == {"via": "redis"}
    finally:
        other.stop()
