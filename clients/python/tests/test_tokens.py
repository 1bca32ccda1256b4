"""Tokens minted by the SDK: claims, lifetimes, and what the node accepts (the
acceptance itself is in test_http.py)."""

from __future__ import annotations

from datetime import timedelta

import jwt
import pytest

from switchyard_server import ConfigurationError, SwitchyardServer, mint_subscription_token, mint_token

SECRET = "unit-test-secret-0123456789abcdef0123"


def decode(token: str) -> dict:
    return jwt.decode(token, SECRET, algorithms=["HS256"])


def test_connection_token_claims():
    t = mint_token(
        SECRET,
        {"sub": 42, "roles": ["admin"], "tenant_id": "t1", "info": {"n": "Ann"}},
        3600,
        now=1_700_000_000,
    )
    claims = jwt.decode(t, SECRET, algorithms=["HS256"], options={"verify_exp": False})
    assert claims == {
        "sub": "42",
        "roles": ["admin"],
        "tenant_id": "t1",
        "info": {"n": "Ann"},
        "iat": 1_700_000_000,
        "exp": 1_700_003_600,
    }
    assert jwt.get_unverified_header(t)["alg"] == "HS256"


def test_ttl_takes_seconds_timedelta_or_a_duration_string():
    for ttl in (90, timedelta(seconds=90), "90s", "1m30s"):
        c = jwt.decode(
            mint_token(SECRET, {"sub": "a"}, ttl, now=1000),
            SECRET,
            algorithms=["HS256"],
            options={"verify_exp": False},
        )
        assert c["exp"] - c["iat"] == 90
    # A fraction of a second rounds up: the token never expires before asked.
    c = jwt.decode(
        mint_token(SECRET, {"sub": "a"}, 0.2, now=1000),
        SECRET,
        algorithms=["HS256"],
        options={"verify_exp": False},
    )
    assert c["exp"] == 1001


def test_subscription_token_claims():
    c = decode(mint_subscription_token(SECRET, "7", "order:123", 60))
    assert (c["sub"], c["channel"]) == ("7", "order:123")
    assert c["exp"] - c["iat"] == 60


def test_refusals():
    with pytest.raises(ConfigurationError):
        mint_token(None, {"sub": "a"}, 60)
    with pytest.raises(ConfigurationError):
        mint_token(SECRET, {"roles": []}, 60)
    with pytest.raises(ConfigurationError):
        mint_token(SECRET, {"sub": "a"}, 0)
    with pytest.raises(ValueError):
        mint_token(SECRET, {"sub": "a"}, "soon")
    with pytest.raises(ConfigurationError):
        mint_subscription_token(SECRET, "a", "", 60)
    s = SwitchyardServer("http://127.0.0.1:1", "k")  # no jwt_secret
    with pytest.raises(ConfigurationError, match="jwt_secret"):
        s.mint_token({"sub": "a"}, 60)
    s.close()


def test_client_methods_use_the_clients_secret():
    with SwitchyardServer("http://127.0.0.1:1", "k", jwt_secret=SECRET) as s:
        assert decode(s.mint_token({"sub": "u"}, 60))["sub"] == "u"
        assert decode(s.mint_subscription_token("u", "chat:1", 60))["channel"] == "chat:1"
