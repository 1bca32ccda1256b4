"""State channels (SPEC 16): publish with a key over HTTP and via FCALL
switchyard_set, GET /api/state, deletes, state_max_keys."""

from __future__ import annotations

import pytest

from switchyard_server import BadRequestError, RedisPublishError

NODE_TOML = """
[namespaces.inventory]
subscribe = "any"
state = true
state_max_keys = 3
"""


def test_state_over_http(pserver, ws, pnode, uid):
    ch = f"inventory:{uid}"
    a = pserver.publish(ch, "stock", {"n": 5}, key="sku-1")
    b = pserver.publish(ch, "stock", {"n": 2}, key="sku-2")
    c = pserver.publish(ch, "stock", {"n": 4}, key="sku-1")
    assert (a.offset, b.offset, c.offset) == (1, 2, 3)
    st = pserver.state(ch)
    assert st.channel == ch and st.offset == 3 and st.epoch == a.epoch
    assert [(e.key, e.offset) for e in st.entries] == [("sku-2", 2), ("sku-1", 3)]
    assert st.values == {"sku-1": {"n": 4}, "sku-2": {"n": 2}}
    assert [e.key for e in pserver.state(ch, keys=["sku-2"]).entries] == ["sku-2"]

    d = pserver.publish(ch, "stock", key="sku-2", delete=True)
    assert d.offset == 4
    # The state holds live keys only: a deleted one is gone (tombstones are for
    # partial snapshots after `since`).
    assert [e.key for e in pserver.state(ch).entries] == ["sku-1"]
    assert pserver.state(ch).values == {"sku-1": {"n": 4}}


def test_state_via_redis_reaches_subscribers(pserver, ws, pnode, uid):
    ch = f"inventory:{uid}"
    client = ws(pserver.mint_token({"sub": f"u{uid}"}, 60), pnode)
    client.subscribe(ch)
    snap = client.wait(lambda f: f["type"] == "snapshot")
    assert snap["payload"]["entries"] == []
    r = pserver.publish(ch, "stock", {"n": 1}, key="sku-9", via="redis", state_max_keys=3)
    assert r.offset == 1 and r.epoch
    frame = client.wait(lambda f: f["type"] == "stock")
    assert (frame["key"], frame["offset"], frame["payload"]) == ("sku-9", 1, {"n": 1})
    assert pserver.state(ch).values == {"sku-9": {"n": 1}}


def test_state_refusals(pserver, uid):
    ch = f"inventory:{uid}"
    with pytest.raises(BadRequestError):
        pserver.publish(ch, "stock", {"n": 1})  # a state channel needs a key
    for i in range(3):
        pserver.publish(ch, "stock", {"n": i}, key=f"k{i}")
    with pytest.raises(BadRequestError) as e:
        pserver.publish(ch, "stock", {"n": 9}, key="k-over")
    assert e.value.code == "limit_exceeded"
    with pytest.raises(RedisPublishError) as e:
        pserver.publish(ch, "stock", {"n": 9}, key="k-over", via="redis", state_max_keys=3)
    assert e.value.code == "limit_exceeded"


async def test_state_async(apserver, uid):
    ch = f"inventory:{uid}"
    await apserver.publish(ch, "price", {"eur": 10}, key="p1", via="redis")
    st = await apserver.state(ch)
    assert st.values == {"p1": {"eur": 10}}
