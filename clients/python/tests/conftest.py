"""Fixtures: one redis-server and one node on it (broker = "redis") for the whole
run, a fresh SDK client per test, WebSocket clients closed after each test, and the
``pending`` switch for tests of server features that are not there yet."""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from collections.abc import Callable, Iterator

import pytest

from harness import API_KEY, JWT_SECRET, Node, RedisServer, WsClient
from switchyard_server import AsyncSwitchyardServer, SwitchyardServer

PENDING = Path(__file__).parent / "pending"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--pending",
        action="store_true",
        default=os.environ.get("SWITCHYARD_PENDING") == "1",
        help="also run tests/pending (server features not shipped yet)",
    )


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    if not config.getoption("--pending") and PENDING in (collection_path, *collection_path.parents):
        return True
    return None


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
