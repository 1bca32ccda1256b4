"""Tests of SDK methods against node features configured per module (state
channels, unread, revoke, fallback, webhooks). Each module starts its own node with
the config it needs (``NODE_TOML``), on the session's redis-server under a prefix of
its own."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from harness import API_KEY, JWT_SECRET, Node, RedisServer
from switchyard_server import AsyncSwitchyardServer, SwitchyardServer


@pytest.fixture(scope="module")
def pnode(request: pytest.FixtureRequest, redis_server: RedisServer) -> Iterator[Node]:
    """A node configured with the module's ``NODE_TOML``."""
    toml = getattr(request.module, "NODE_TOML", "")
    n = Node(toml, redis=redis_server, node_id="py-feature-node", prefix=f"feat{uuid.uuid4().hex[:6]}")
    yield n
    n.stop()


@pytest.fixture
def pserver(pnode: Node, redis_server: RedisServer) -> Iterator[SwitchyardServer]:
    s = SwitchyardServer(pnode.base, API_KEY, JWT_SECRET, redis=redis_server.url, prefix=pnode.prefix)
    yield s
    s.close()


@pytest.fixture
async def apserver(pnode: Node, redis_server: RedisServer):
    s = AsyncSwitchyardServer(pnode.base, API_KEY, JWT_SECRET, redis=redis_server.url, prefix=pnode.prefix)
    yield s
    await s.aclose()
