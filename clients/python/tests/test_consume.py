"""Consuming the upstream and events streams with consumer groups, against a real
node writing them: decoding, XACK after the handler, retries of failed entries,
XAUTOCLAIM from dead consumers, stopping."""

from __future__ import annotations

import threading

import pytest
import redis

from harness import API_KEY, JWT_SECRET, eventually
from switchyard_server import Event, SwitchyardServer, UpstreamEntry, decode_event, decode_upstream


def pending(redis_server, stream: str, group: str) -> int:
    r = redis.Redis.from_url(redis_server.url)
    try:
        return int(r.xpending(stream, group)["pending"])
    finally:
        r.close()


def chat_client(server, ws, uid, user=None):
    user = user or f"u{uid}"
    ch = f"chat:{uid}"
    client = ws(server.mint_token({"sub": user}, 60))
    client.subscribe(ch, server.mint_subscription_token(user, ch, 60))
    return client, ch, user


def say(client, ch, text):
    ack = client.request("message", {"text": text}, channel=ch)
    assert ack["type"] == "ack", ack
    return ack


def test_upstream_entries_are_decoded_and_acknowledged(server, redis_server, ws, uid):
    got: list[UpstreamEntry] = []
    consumer = server.consumer("upstream", f"mod-{uid}", got.append, block=0.2).start()
    try:
        eventually(
            "the group",
            lambda: f"mod-{uid}" in str(redis_server.cli("XINFO", "GROUPS", "switchyard:upstream")),
        )
        client, ch, user = chat_client(server, ws, uid)
        say(client, ch, "hello")
        entry = eventually("the upstream entry", lambda: next((e for e in got if e.channel == ch), None))
    finally:
        consumer.stop()
    assert entry.type == "message"
    assert entry.payload == {"text": "hello"}
    assert entry.user_id == user
    assert entry.session_id is None  # "" in the stream
    assert entry.conn_id == client.auth["conn_id"]
    assert entry.node == "py-session-node"
    assert entry.ts and entry.ts.endswith("Z")
    assert "-" in entry.id
    eventually("the ack", lambda: pending(redis_server, "switchyard:upstream", f"mod-{uid}") == 0)


def test_a_failing_handler_leaves_the_entry_pending_and_it_is_retried(server, redis_server, ws, uid):
    calls: list[str] = []
    done: list[UpstreamEntry] = []
    errors: list[BaseException] = []

    def handler(entry: UpstreamEntry) -> None:
        if entry.channel != f"chat:{uid}":
            return
        calls.append(entry.id)
        if len(calls) == 1:
            raise RuntimeError("database down")
        done.append(entry)

    group = f"retry-{uid}"
    consumer = server.consumer(
        "upstream",
        group,
        handler,
        block=0.1,
        min_idle=0.3,
        claim_interval=0.1,
        on_error=lambda entry, exc: errors.append(exc),
    ).start()
    try:
        eventually("the group", lambda: group in redis_server.cli("XINFO", "GROUPS", "switchyard:upstream"))
        client, ch, _ = chat_client(server, ws, uid)
        say(client, ch, "flaky")
        eventually("the first, failed, call", lambda: len(calls) == 1)
        assert pending(redis_server, "switchyard:upstream", group) == 1
        eventually("the retry", lambda: done)
    finally:
        consumer.stop()
    assert calls[0] == calls[1] == done[0].id
    assert [str(e) for e in errors] == ["database down"]
    assert (consumer.failed, consumer.acked >= 1) == (1, True)
    eventually("the ack", lambda: pending(redis_server, "switchyard:upstream", group) == 0)


def test_entries_of_a_dead_consumer_are_claimed(server, redis_server, ws, uid):
    group = f"claim-{uid}"
    raw = redis.Redis.from_url(redis_server.url)
    raw.xgroup_create("switchyard:upstream", group, id="$", mkstream=True)
    client, ch, _ = chat_client(server, ws, uid)
    say(client, ch, "lost with its worker")
    # A worker reads it and dies before XACK.
    read = raw.xreadgroup(group, "dead-worker", {"switchyard:upstream": ">"}, count=10)
    assert read and read[0][1]
    assert pending(redis_server, "switchyard:upstream", group) >= 1

    got: list[UpstreamEntry] = []
    consumer = server.consumer(
        "upstream", group, got.append, name="alive", block=0.1, min_idle=0.2, claim_interval=0.1
    )
    consumer.start()
    try:
        entry = eventually("the claimed entry", lambda: next((e for e in got if e.channel == ch), None))
    finally:
        consumer.stop()
    assert entry.payload == {"text": "lost with its worker"}
    eventually("the ack", lambda: pending(redis_server, "switchyard:upstream", group) == 0)
    consumers = {c["name"].decode(): c["pending"] for c in raw.xinfo_consumers("switchyard:upstream", group)}
    assert consumers["dead-worker"] == 0
    raw.close()


def test_a_restarted_consumer_handles_its_own_pending_entries_first(server, redis_server, ws, uid):
    group = f"own-{uid}"
    raw = redis.Redis.from_url(redis_server.url)
    raw.xgroup_create("switchyard:upstream", group, id="$", mkstream=True)
    client, ch, _ = chat_client(server, ws, uid)
    say(client, ch, "read before the crash")
    raw.xreadgroup(group, "worker-1", {"switchyard:upstream": ">"}, count=10)
    raw.close()

    got: list[UpstreamEntry] = []
    # Same name, min_idle far away: only the own-pending pass can find it.
    consumer = server.consumer(
        "upstream", group, got.append, name="worker-1", block=0.1, min_idle=3600
    ).start()
    try:
        eventually("the own pending entry", lambda: any(e.channel == ch for e in got))
    finally:
        consumer.stop()
    eventually("the ack", lambda: pending(redis_server, "switchyard:upstream", group) == 0)


def test_events_stream_user_online_offline_occupied_vacated(server, ws, uid):
    user = f"agent-{uid}"
    ch = f"chat:{uid}"
    events: list[Event] = []

    def handler(e: Event) -> None:
        if e.user_id == user or e.channel == ch:
            events.append(e)

    consumer = server.consumer("events", f"agents-{uid}", handler, block=0.1).start()
    try:
        eventually("the group", lambda: consumer.group_ready)
        client = ws(server.mint_token({"sub": user}, 60))
        client.subscribe(ch, server.mint_subscription_token(user, ch, 60))
        eventually(
            "user_online and occupied", lambda: {"user_online", "occupied"} <= {e.event for e in events}
        )
        client.close()
        eventually(
            "user_offline and vacated", lambda: {"user_offline", "vacated"} <= {e.event for e in events}
        )
    finally:
        consumer.stop()
    names = [e.event for e in events]
    online = next(e for e in events if e.event == "user_online")
    assert (online.user_id, online.session_id, online.channel) == (user, None, None)
    assert online.conn_id == client.auth["conn_id"]
    assert online.node == "py-session-node" and online.data == {}
    occupied = next(e for e in events if e.event == "occupied")
    assert occupied.data == {"channel": ch} and occupied.user_id is None
    assert names.index("occupied") < names.index("vacated")
    assert names.index("user_online") < names.index("user_offline")


def test_consume_blocks_until_its_stop_event(server, uid):
    stop = threading.Event()
    t = threading.Thread(
        target=server.consume, args=("events", f"stop-{uid}", print), kwargs={"stop": stop, "block": 0.1}
    )
    t.start()
    try:
        eventually(
            "the group",
            lambda: (
                server.redis.xinfo_groups("switchyard:events")
                and any(
                    g["name"].decode() == f"stop-{uid}"
                    for g in server.redis.xinfo_groups("switchyard:events")
                )
            ),
        )
        assert t.is_alive()
    finally:
        stop.set()
        t.join(5)
    assert not t.is_alive()


def test_stop_from_inside_the_handler_and_context_manager(server, ws, uid):
    seen: list[UpstreamEntry] = []

    def handler(entry: UpstreamEntry) -> None:
        if entry.channel == f"chat:{uid}":
            seen.append(entry)
            consumer.stop()  # from the consumer's own thread: does not join itself

    with server.consumer("upstream", f"inside-{uid}", handler, block=0.1) as consumer:
        eventually("the group", lambda: consumer.group_ready)
        client, ch, _ = chat_client(server, ws, uid)
        say(client, ch, "last one")
        eventually("the handler stopped it", lambda: consumer.stopped and not consumer.running)
    assert len(seen) == 1


def test_group_is_created_with_mkstream_under_any_prefix(node, redis_server, uid):
    with SwitchyardServer(node.base, API_KEY, redis=redis_server.url, prefix=f"fresh{uid}") as s:
        c = s.consumer("upstream", "g1", print, block=0.05).start()
        try:
            eventually("the stream and group", lambda: s.redis.exists(f"fresh{uid}:upstream"))
            groups = s.redis.xinfo_groups(f"fresh{uid}:upstream")
            assert [g["name"].decode() for g in groups] == ["g1"]
        finally:
            c.stop()
    # close() stops consumers that are still running.
    with SwitchyardServer(node.base, API_KEY, redis=redis_server.url, prefix=f"fresh{uid}") as s:
        c = s.consumer("events", "g2", print, block=0.05).start()
    assert c.stopped and not c.running


def test_consumer_survives_a_redis_restart(uid):
    from harness import Node, RedisServer

    r = RedisServer()
    n = Node(redis=r, node_id="py-restart-node")
    got: list[UpstreamEntry] = []
    try:
        with SwitchyardServer(n.base, API_KEY, JWT_SECRET, redis=r.url, backoff=0.02, max_backoff=0.1) as s:
            c = s.consumer("events", f"survive-{uid}", got.append, block=0.1, start_id="0").start()
            eventually("the group", lambda: c.group_ready)
            r.kill()
            eventually("the consumer to notice", lambda: not c.group_ready, timeout=10)
            r.start()
            eventually("the node back", n.ready, timeout=20)
            # The stream was lost with the Redis: the group is made again, and new
            # events (the node's own occupancy of a new channel) arrive.
            from harness import WsClient

            w = WsClient(n.ws, s.mint_token({"sub": f"back-{uid}"}, 60))
            try:
                eventually(
                    "an event after the restart",
                    lambda: any(e.user_id == f"back-{uid}" for e in got),
                    timeout=15,
                )
            finally:
                w.close()
            c.stop()
    finally:
        n.stop()
        r.stop()


def test_decoding_turns_empty_fields_into_none_and_parses_json():
    e = decode_upstream(
        "1-0",
        {
            b"channel": b"chat:x",
            b"type": b"message",
            b"payload": b'{"a":[1,2]}',
            b"user_id": b"",
            b"session_id": b"s1",
            b"conn_id": b"",
            b"node": b"n",
            b"ts": b"t",
        },
    )
    assert (e.id, e.channel, e.type, e.payload, e.user_id, e.session_id, e.conn_id) == (
        "1-0",
        "chat:x",
        "message",
        {"a": [1, 2]},
        None,
        "s1",
        None,
    )
    ev = decode_event(
        "2-0",
        {
            "event": "vacated",
            "channel": "chat:x",
            "user_id": "",
            "session_id": "",
            "conn_id": "",
            "node": "n",
            "ts": "t",
            "data": '{"channel":"chat:x"}',
        },
    )
    assert (ev.event, ev.channel, ev.user_id, ev.data, ev.id) == (
        "vacated",
        "chat:x",
        None,
        {"channel": "chat:x"},
        "2-0",
    )
    # Not JSON: handed over as the text, never dropped.
    assert decode_upstream("3-0", {"payload": "not json"}).payload == "not json"


def test_consumer_options_are_checked(server):
    from switchyard_server import ConfigurationError

    with pytest.raises(ConfigurationError):
        server.consumer("downstream", "g", print)
    with pytest.raises(ConfigurationError):
        server.consumer("events", "", print)
    with pytest.raises(ConfigurationError):
        server.consumer("events", "g", print, count=0)
