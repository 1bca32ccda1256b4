"""Webhooks from a real node (SPEC 17), verified with verify_webhook."""

from __future__ import annotations

import http.server
import threading

import pytest

from harness import eventually, free_port
from switchyard_server import WebhookSignatureError, verify_webhook

HOOK_PORT = free_port()
SECRET = "whsec-pending-0123456789"
NODE_TOML = f"""
[[webhooks]]
url = "http://127.0.0.1:{HOOK_PORT}/hook"
secret = "{SECRET}"
"""

received: list[tuple[bytes, dict[str, str]]] = []


class Hook(http.server.BaseHTTPRequestHandler):
    def do_POST(self) -> None:  # noqa: N802 - the stdlib's name
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        received.append((body, dict(self.headers.items())))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args) -> None:
        pass


@pytest.fixture(scope="module", autouse=True)
def hook_server():
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", HOOK_PORT), Hook)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield srv
    srv.shutdown()


def test_webhooks_verify(pserver, ws, pnode, uid):
    user = f"u{uid}"
    ws(pserver.mint_token({"sub": user}, 60), pnode)

    def find():
        for body, headers in received:
            events = verify_webhook(body, headers, SECRET)
            if any(e.event == "user_online" and e.user_id == user for e in events):
                return body, headers
        return None

    body, headers = eventually("a webhook with user_online", find, timeout=15)
    with pytest.raises(WebhookSignatureError):
        verify_webhook(body.replace(user.encode(), b"mallory"), headers, SECRET)
