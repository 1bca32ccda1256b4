"""POST /api/revoke (SPEC 6, 3): tokens issued before the cut-off are refused and the
user's connections close with 4003."""

from __future__ import annotations

import time

import pytest

from harness import JWT_SECRET, WsClient
from switchyard_server import mint_token


def test_revoke_closes_connections_and_refuses_older_tokens(pserver, ws, pnode, uid):
    user = f"u{uid}"
    old = mint_token(JWT_SECRET, {"sub": user}, 600, now=time.time() - 10)
    client = ws(old, pnode)
    pserver.revoke(user, before=int(time.time()) - 1)
    assert client.wait(lambda f: f["type"] == "disconnect")["payload"]["code"] == 4003
    with pytest.raises(AssertionError, match="auth failed"):
        WsClient(pnode.ws, old)
    # A token issued after the cut-off works.
    fresh = ws(pserver.mint_token({"sub": user}, 60), pnode)
    assert fresh.auth["user_id"] == user


async def test_revoke_async_default_now(apserver, uid):
    await apserver.revoke(f"u{uid}")
