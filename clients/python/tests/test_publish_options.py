"""What a publish turns into before anything is sent: the /api/publish body and the
FCALL arguments (SPEC 8.2, 16.1), and the mistakes refused on the spot."""

from __future__ import annotations

from datetime import timedelta

import pytest

from switchyard_server import ConfigurationError, Fallback
from switchyard_server._durations import to_duration_string, to_seconds
from switchyard_server._publish import prepare_publish


def prep(**kw):
    base = dict(
        channel="order:1",
        type="order_update",
        payload={"s": 1},
        key=None,
        delete=False,
        idempotency_key=None,
        fallback=None,
        via="http",
        volatile=False,
        to=None,
        history_size=None,
        history_ttl=None,
        state_max_keys=None,
        state_ttl=None,
        prefix="switchyard",
        idempotency_window=300,
    )
    base.update(kw)
    return prepare_publish(**base)


def test_http_body():
    p = prep(idempotency_key="k1", fallback=Fallback(after=30, data={"push": True}))
    assert p.http_body == {
        "channel": "order:1",
        "type": "order_update",
        "payload": {"s": 1},
        "idempotency_key": "k1",
        "fallback": {"after": "30s", "data": {"push": True}},
    }
    assert prep(fallback={"after": "2m"}).http_body["fallback"] == {"after": "2m"}
    body = prep(key="sku-1", delete=True, payload=None).http_body
    assert body["key"] == "sku-1" and body["delete"] is True and "payload" not in body
    assert prep(volatile=True, to="u1").http_body["to"] == "u1"


def test_a_fresh_key_per_publish():
    assert prep().idempotency_key != prep().idempotency_key
    assert prep(idempotency_key="mine").http_body["idempotency_key"] == "mine"


def test_fcall_switchyard_publish():
    p = prep(via="redis", history_size=100, history_ttl=timedelta(hours=24), idempotency_key="k")
    c = p.redis_call
    assert (c.function, c.key) == ("switchyard_publish", "switchyard:{order:1}")
    assert c.args == ('{"type":"order_update","payload":{"s":1}}', 100, 86400, "k", 300)
    live = prep(via="redis", channel="user:9", prefix="sy").redis_call
    assert live.key == "sy:{user:9}" and live.args[1:3] == (0, 0)
    assert len(live.args[3]) == 32  # a generated key, always


def test_fcall_switchyard_set():
    c = prep(via="redis", channel="inventory:shop1", key="sku-1", payload={"stock": 3}).redis_call
    assert c.function == "switchyard_set"
    assert c.args == ('{"type":"order_update","payload":{"stock":3},"key":"sku-1"}', 10000, 0)
    d = prep(
        via="redis", key="sku-1", delete=True, payload=None, state_max_keys=50, state_ttl="1h"
    ).redis_call
    assert d.args == ('{"type":"order_update","key":"sku-1","delete":true}', 50, 3600)


@pytest.mark.parametrize(
    "kw",
    [
        dict(via="redis", fallback=Fallback(after="30s")),
        dict(via="redis", volatile=True),
        dict(via="redis", to="u1"),
        dict(via="redis", channel="Bad:1"),
        dict(via="redis", history_size=-1),
        dict(via="redis", history_size=10),  # no ttl
        dict(via="redis", key="k", state_max_keys=0),
        dict(via="smtp"),
        dict(channel=""),
        dict(type=""),
        dict(delete=True),
        dict(key="k", delete=True),  # with a payload
        dict(key="bad key"),
        dict(idempotency_key=""),
        dict(idempotency_key="x" * 129),
        dict(fallback={"data": 1}),
    ],
)
def test_refused_before_sending(kw):
    with pytest.raises(ConfigurationError):
        prep(**kw)


def test_durations():
    assert to_seconds("500ms") == 0.5
    assert to_seconds("1h30m") == 5400
    assert to_seconds("7d") == 604800
    assert to_seconds(timedelta(minutes=2)) == 120
    assert to_duration_string(1.5) == "1500ms"
    assert to_duration_string("30s") == "30s"
    for bad in ("", "10", "ten s", "5s junk", -1):
        with pytest.raises(ValueError):
            to_seconds(bad)
