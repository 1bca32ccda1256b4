"""Retries: a 503 while the broker is down, a lost answer (timeout), a refused
connection; always with the same idempotency key, so nothing is published twice."""

from __future__ import annotations

import json
import threading

import httpx
import pytest

from harness import API_KEY, JWT_SECRET, Node, RedisServer, eventually, free_port
from proxy import LosingProxy
from switchyard_server import (
    RequestTimeoutError,
    SwitchyardServer,
    TransportError,
    UnavailableError,
)


def test_a_lost_answer_is_retried_with_the_same_key_and_published_once(node, server, ws, uid):
    ch = f"order:{uid}"
    user = f"u{uid}"
    client = ws(server.mint_token({"sub": user}, 60))
    client.subscribe(ch, server.mint_subscription_token(user, ch, 60))
    sent = []
    proxy = LosingProxy(node.port, lose_first=1)
    try:
        with httpx.Client(event_hooks={"request": [lambda r: sent.append(json.loads(r.read()))]}) as hc:
            s = SwitchyardServer(proxy.base, API_KEY, timeout=0.5, retries=3, backoff=0.01, http_client=hc)
            result = s.publish(ch, "order_update", {"status": "paid"})
    finally:
        proxy.close()
    # The first attempt was published, its answer lost; the retry was told so.
    assert len(sent) == 2
    assert sent[0]["idempotency_key"] == sent[1]["idempotency_key"]
    assert result.duplicate is True and result.offset == 1
    server.publish(ch, "marker", None)
    client.wait(lambda f: f["type"] == "marker")
    assert len([f for f in client.frames if f["type"] == "order_update"]) == 1


def test_timeouts_outliving_the_retries_raise(node, uid):
    proxy = LosingProxy(node.port, lose_first=100)
    try:
        s = SwitchyardServer(proxy.base, API_KEY, timeout=0.2, retries=1, backoff=0.01)
        with pytest.raises(RequestTimeoutError) as e:
            s.publish(f"user:{uid}", "x", 1)
        assert e.value.code == "timeout"
        assert proxy.connections == 2
    finally:
        proxy.close()


def test_connection_refused_raises_a_transport_error():
    s = SwitchyardServer(f"http://127.0.0.1:{free_port()}", API_KEY, retries=2, backoff=0.01)
    with pytest.raises(TransportError) as e:
        s.stats()
    assert isinstance(e.value.__cause__, httpx.ConnectError)


@pytest.fixture
def own_node():
    """A redis-server and a node of this test's own: the test kills the Redis."""
    r = RedisServer()
    n = Node(redis=r, node_id="py-own-node")
    yield n, r
    n.stop()
    r.stop()


def test_503_while_redis_is_down_is_retried_until_it_is_back(own_node, uid):
    node, redis = own_node
    statuses: list[int] = []
    with httpx.Client(event_hooks={"response": [lambda r: statuses.append(r.status_code)]}) as hc:
        s = SwitchyardServer(
            node.base,
            API_KEY,
            JWT_SECRET,
            timeout=5,
            retries=200,
            backoff=0.05,
            max_backoff=0.2,
            http_client=hc,
        )
        redis.kill()
        eventually("the node to notice", lambda: not node.ready())
        outcome: dict = {}

        def publish() -> None:
            try:
                outcome["result"] = s.publish(f"order:{uid}", "order_update", {"status": "paid"})
            except Exception as exc:  # reported below
                outcome["error"] = exc

        t = threading.Thread(target=publish)
        t.start()
        eventually("a 503 answer", lambda: 503 in statuses)
        redis.start()
        t.join(30)
        assert not t.is_alive()
    assert "error" not in outcome, outcome
    assert outcome["result"].offset == 1
    assert statuses[-1] == 200 and statuses.count(503) >= 1


def test_503_after_the_retries_raises_unavailable(own_node, uid):
    node, redis = own_node
    redis.kill()
    eventually("the node to notice", lambda: not node.ready())
    s = SwitchyardServer(node.base, API_KEY, timeout=5, retries=1, backoff=0.01)
    with pytest.raises(UnavailableError) as e:
        s.publish(f"order:{uid}", "order_update", {})
    assert (e.value.status, e.value.code) == (503, "unavailable")


def test_a_request_that_cannot_be_sent_is_not_retried():
    s = SwitchyardServer("ftp://127.0.0.1:1", API_KEY, retries=5, backoff=10)
    with pytest.raises(TransportError) as e:
        s.stats()  # at once: a backoff of 10 s would show
    assert "1 attempts" in str(e.value)
