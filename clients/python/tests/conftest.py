"""Fixtures: one redis-server and one node on it (broker = "redis") for the whole
run, a fresh SDK client per test, and WebSocket clients closed after each test.
``tests/features`` starts nodes of its own, configured per module."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator

import pytest

from harness import API_KEY, JWT_SECRET, Node, RedisServer, WsClient
from switchyard_server import AsyncSwitchyardServer, SwitchyardServer

@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    r = RedisServer()
    yield r
    r.stop()


@pytest.fixture(scope="session")
def node(redis_server: RedisServer) -> Iterator[Node]:
    n = Node(redis=redis_server, node_id="py-session-node")
    yield n
    n.stop()


@pytest.fixture
def uid() -> str:
    """A suffix no other test uses: channels, users and groups stay apart."""
    return uuid.uuid4().hex[:10]


@pytest.fixture
def server(node: Node, redis_server: RedisServer) -> Iterator[SwitchyardServer]:
    s = SwitchyardServer(node.base, API_KEY, jwt_secret=JWT_SECRET, redis=redis_server.url, timeout=5)
    yield s
    s.close()


@pytest.fixture
async def aserver(node: Node, redis_server: RedisServer):
    s = AsyncSwitchyardServer(node.base, API_KEY, jwt_secret=JWT_SECRET, redis=redis_server.url, timeout=5)
    yield s
    await s.aclose()


@pytest.fixture
def ws(node: Node) -> Iterator[Callable[..., WsClient]]:
    """``ws(token)`` -> an authenticated WebSocket client on the session node
    (``ws(token, node=other)`` for another node); all closed after the test."""
    clients: list[WsClient] = []

    def connect(token: str | None = None, node_: Node | None = None) -> WsClient:
        c = WsClient((node_ or node).ws, token)
        clients.append(c)
        return c

    yield connect
    for c in clients:
        try:
            c.close()
        except Exception:
            pass
