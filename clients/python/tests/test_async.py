"""AsyncSwitchyardServer: the same operations awaited, against the same real node.
WebSocket clients are the blocking test client, driven from a thread
(``asyncio.to_thread``) so the event loop keeps running the consumers."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest

from harness import API_KEY, JWT_SECRET, eventually_async
from proxy import LosingProxy
from switchyard_server import (
    AsyncSwitchyardServer,
    BadRequestError,
    ConfigurationError,
    Event,
    NotFoundError,
    RedisPublishError,
    UnauthorizedError,
    UpstreamEntry,
)


async def connect(ws, token):
    return await asyncio.to_thread(ws, token)


async def wait_for(client, pred):
    return await asyncio.to_thread(client.wait, pred)


async def test_publish_over_http_and_redis(aserver, ws, uid):
    user = f"u{uid}"
    ch = f"order:{uid}"
    client = await connect(ws, aserver.mint_token({"sub": user}, 60))
    await asyncio.to_thread(client.subscribe, ch, aserver.mint_subscription_token(user, ch, 60))

    first = await aserver.publish(ch, "order_update", {"status": "paid"}, idempotency_key=f"k-{uid}")
    dup = await aserver.publish(ch, "order_update", {"status": "paid"}, idempotency_key=f"k-{uid}")
    viaredis = await aserver.publish(
        ch, "order_update", {"status": "shipped"}, via="redis", history_size=100, history_ttl="24h"
    )
    assert (first.offset, dup.offset, dup.duplicate, viaredis.offset) == (1, 1, True, 2)
    assert viaredis.epoch == first.epoch
    frames = [await wait_for(client, lambda f: f["type"] == "order_update") for _ in range(2)]
    assert [f["payload"]["status"] for f in frames] == ["paid", "shipped"]

    page = await aserver.history(ch, limit=10)
    assert [p.offset for p in page.publications] == [1, 2]
    live = await aserver.publish(f"user:{user}", "notification", {"n": 1}, via="redis")
    assert live.offset is None
    assert (await wait_for(client, lambda f: f["type"] == "notification"))["payload"] == {"n": 1}


async def test_errors(aserver, node, uid):
    with pytest.raises(BadRequestError) as e:
        await aserver.publish("nope", "x", 1)
    assert e.value.code == "invalid_channel"
    with pytest.raises(NotFoundError):
        await aserver.presence(f"user:{uid}")
    with pytest.raises(RedisPublishError):
        await aserver.publish(f"user:{uid}", "pong", 1, via="redis")
    with pytest.raises(ConfigurationError):
        await aserver.publish(f"user:{uid}", "x", 1, via="redis", fallback={"after": "30s"})
    async with AsyncSwitchyardServer(node.base, "wrong") as wrong:
        with pytest.raises(UnauthorizedError):
            await wrong.stats()


async def test_broadcast_presence_subscribe_disconnect(aserver, ws, uid):
    user = f"u{uid}"
    ch = f"chat:{uid}"
    client = await connect(ws, aserver.mint_token({"sub": user}, 60))
    await aserver.subscribe(user, ch)
    assert (await wait_for(client, lambda f: f["type"] == "subscribed"))["payload"]["channel"] == ch
    p = await aserver.presence(ch)
    assert (p.count, p.clients[0].user_id) == (1, user)
    b = await aserver.broadcast([ch, f"user:{user}"], "promo", {"pct": 10})
    assert all(r.ok for r in b.results)
    await wait_for(client, lambda f: f["type"] == "promo" and f["channel"] == ch)
    await aserver.unsubscribe(user, ch)
    await wait_for(client, lambda f: f["type"] == "unsubscribed")
    assert any(c.channel == f"user:{user}" for c in await aserver.channels(prefix="user:"))
    assert (await aserver.stats()).cluster["connections"] >= 1
    await aserver.disconnect(user_id=user)
    assert (await wait_for(client, lambda f: f["type"] == "disconnect"))["payload"]["code"] == 4003


async def test_a_lost_answer_is_retried_with_the_same_key(node, aserver, uid):
    sent = []

    async def record(request: httpx.Request) -> None:
        sent.append(json.loads(await request.aread()))

    proxy = LosingProxy(node.port, lose_first=1)
    try:
        async with httpx.AsyncClient(event_hooks={"request": [record]}) as hc:
            async with AsyncSwitchyardServer(
                proxy.base, API_KEY, timeout=0.5, backoff=0.01, http_client=hc
            ) as s:
                r = await s.publish(f"order:{uid}", "order_update", {})
    finally:
        proxy.close()
    assert r.duplicate is True and r.offset == 1
    assert len(sent) == 2 and sent[0]["idempotency_key"] == sent[1]["idempotency_key"]


async def test_consume_upstream_with_a_coroutine_handler(aserver, redis_server, ws, uid):
    got: list[UpstreamEntry] = []
    calls = 0

    async def handler(entry: UpstreamEntry) -> None:
        nonlocal calls
        if entry.channel != f"chat:{uid}":
            return
        calls += 1
        await asyncio.sleep(0)
        if calls == 1:
            raise RuntimeError("try again")
        got.append(entry)

    consumer = aserver.consumer(
        "upstream", f"amod-{uid}", handler, block=0.1, min_idle=0.3, claim_interval=0.1
    )
    async with consumer:
        await eventually_async("the group", lambda: consumer.group_ready)
        user = f"u{uid}"
        ch = f"chat:{uid}"
        client = await connect(ws, aserver.mint_token({"sub": user}, 60))
        await asyncio.to_thread(client.subscribe, ch, aserver.mint_subscription_token(user, ch, 60))
        ack = await asyncio.to_thread(client.request, "message", {"text": "hi"}, channel=ch)
        assert ack["type"] == "ack"
        await eventually_async("the retried entry", lambda: got)
    assert not consumer.running
    assert (got[0].payload, got[0].user_id, calls, consumer.failed) == ({"text": "hi"}, user, 2, 1)


async def test_consume_events_until_the_stop_event(aserver, ws, uid):
    user = f"agent-{uid}"
    events: list[Event] = []
    stop = asyncio.Event()
    task = asyncio.create_task(
        aserver.consume(
            "events",
            f"aagents-{uid}",
            lambda e: events.append(e) if e.user_id == user else None,
            stop=stop,
            block=0.1,
        )
    )
    await eventually_async("the group", lambda: any(c.group_ready for c in aserver._consumers))
    client = await connect(ws, aserver.mint_token({"sub": user}, 60))
    await eventually_async("user_online", lambda: [e for e in events if e.event == "user_online"])
    await asyncio.to_thread(client.close)
    await eventually_async("user_offline", lambda: [e for e in events if e.event == "user_offline"])
    stop.set()
    await asyncio.wait_for(task, 5)
    assert [e.event for e in events] == ["user_online", "user_offline"]


async def test_aclose_stops_running_consumers(node, redis_server, uid):
    s = AsyncSwitchyardServer(node.base, API_KEY, JWT_SECRET, redis=redis_server.url)
    c = s.consumer("events", f"aclose-{uid}", print, block=0.05).start()
    await eventually_async("running", lambda: c.group_ready)
    await s.aclose()
    assert c.stopped and not c.running
