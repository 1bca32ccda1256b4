"""The real parts the Python SDK's tests run against, as tests/jskit/index.mjs has
them for the JavaScript tests: the switchyard binary on a free port with a config
file (restartable on the same port, stopped by its PID), tokens from the binary's own
``token`` command, a real redis-server on a free port, and WebSocket clients.

Waits poll a condition with a deadline (:func:`eventually`); nothing sleeps for a
fixed time to let something happen.
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, TypeVar
from collections.abc import Callable

#: clients/python/tests -> repository root.
ROOT = Path(__file__).resolve().parents[3]
#: The binary under test: ``SWITCHYARD_BIN``, else the debug build.
BIN = os.environ.get("SWITCHYARD_BIN") or str(ROOT / "target" / "debug" / "switchyard")
API_KEY = "pykit-test-key"
JWT_SECRET = "pykit-test-secret-0123456789abcdef"

T = TypeVar("T")

#: PIDs started here and not stopped yet; killed when the test process exits.
_running: set[int] = set()


def _kill(pid: int | None) -> None:
    if pid is None:
        return
    _running.discard(pid)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


@atexit.register
def _kill_all() -> None:
    for pid in list(_running):
        _kill(pid)


def free_port() -> int:
    """A TCP port nobody listens on right now (127.0.0.1)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def eventually(what: str, check: Callable[[], T], timeout: float = 10.0, interval: float = 0.02) -> T:
    """Polls ``check`` until it returns something truthy, which it returns; raises
    ``AssertionError("timed out waiting for: <what>")`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        v = check()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for: {what}")
        time.sleep(interval)


async def eventually_async(
    what: str, check: Callable[[], Any], timeout: float = 10.0, interval: float = 0.02
) -> Any:
    """:func:`eventually` for asyncio tests; ``check`` may be a coroutine function."""
    import asyncio
    import inspect

    deadline = time.monotonic() + timeout
    while True:
        v = check()
        if inspect.isawaitable(v):
            v = await v
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for: {what}")
        await asyncio.sleep(interval)


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as r:
            return 200 <= r.status < 300
    except (urllib.error.URLError, OSError):
        return False


class RedisServer:
    """A redis-server on a free port with no persistence. ``kill()`` then
    ``start()`` brings it back, empty, on the same port."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}"
        self.dir = tempfile.mkdtemp(prefix="switchyard-pykit-redis-")
        self.pid: int | None = None
        self.start()

    def start(self) -> None:
        proc = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                self.dir,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.pid = proc.pid
        self._proc = proc
        _running.add(proc.pid)
        eventually("redis-server", lambda: self._pong() or self._exited(), timeout=10)
        if proc.poll() is not None:
            raise RuntimeError(f"redis-server exited with {proc.returncode}")

    def _exited(self) -> bool:
        return self._proc.poll() is not None

    def _pong(self) -> bool:
        try:
            return self.cli("PING").strip() == "PONG"
        except subprocess.CalledProcessError:
            return False

    def cli(self, *args: str) -> str:
        """redis-cli against this server; its stdout."""
        return subprocess.run(
            ["redis-cli", "-p", str(self.port), *args],
            check=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        ).stdout

    def kill(self) -> None:
        """SIGKILL by PID (a crash); waits until the port is closed."""
        _kill(self.pid)
        if self.pid is not None:
            self._proc.wait(timeout=10)
        self.pid = None

    def stop(self) -> None:
        self.kill()
        shutil.rmtree(self.dir, ignore_errors=True)


class Node:
    """The switchyard binary on a free port, configured by a file that sets
    ``listen``, ``node_id``, ``auth.jwt_secret``, ``api.key`` and, given a Redis,
    ``broker = "redis"`` with ``redis.url``; ``toml`` is appended. ``kill()`` then
    ``start()`` restarts it on the same port with the same config."""

    def __init__(
        self,
        toml: str = "",
        *,
        redis: RedisServer | None = None,
        node_id: str = "py-node",
        prefix: str = "switchyard",
        env: dict[str, str] | None = None,
    ) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.ws = f"ws://127.0.0.1:{self.port}/ws"
        self.api_key = API_KEY
        self.jwt_secret = JWT_SECRET
        self.prefix = prefix
        self.dir = tempfile.mkdtemp(prefix="switchyard-pykit-")
        self.config = os.path.join(self.dir, "switchyard.toml")
        lines = [
            f'listen = "127.0.0.1:{self.port}"',
            f'node_id = "{node_id}"',
        ]
        if redis is not None:
            lines += ['broker = "redis"', f'redis.url = "{redis.url}"', f'redis.prefix = "{prefix}"']
        lines += [f'auth.jwt_secret = "{JWT_SECRET}"', f'api.key = "{API_KEY}"', toml]
        Path(self.config).write_text("\n".join(lines) + "\n")
        self.env = {
            k: v for k, v in os.environ.items() if k != "SWITCHYARD_BIN" and not k.startswith("SWITCHYARD_")
        }
        self.env.update(env or {})
        self.pid: int | None = None
        self.start()

    def start(self) -> None:
        proc = subprocess.Popen(
            [BIN, "--config", self.config],
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL if os.environ.get("PYKIT_QUIET", "1") == "1" else None,
        )
        self._proc = proc
        self.pid = proc.pid
        _running.add(proc.pid)

        def up(path: str) -> bool:
            if proc.poll() is not None:
                raise RuntimeError(
                    f"{BIN} exited ({proc.returncode}); config:\n{Path(self.config).read_text()}"
                )
            return _http_ok(self.base + path)

        eventually("node /health", lambda: up("/health"), timeout=20)
        eventually("node /ready", lambda: up("/ready"), timeout=20)

    def kill(self) -> None:
        """SIGKILL by PID: the node dies at once, as in a crash."""
        _kill(self.pid)
        if self.pid is not None:
            self._proc.wait(timeout=10)
        self.pid = None

    def stop(self) -> None:
        self.kill()
        shutil.rmtree(self.dir, ignore_errors=True)

    def ready(self) -> bool:
        return _http_ok(self.base + "/ready")

    def token(self, sub: str, *args: str) -> str:
        """A JWT from ``switchyard token --sub <sub> ...args`` with this node's secret."""
        out = subprocess.run(
            [BIN, "token", "--sub", sub, *args, "--config", self.config],
            env=self.env,
            check=True,
            stdout=subprocess.PIPE,
            text=True,
        )
        return out.stdout.strip()

    def get(self, path: str) -> Any:
        req = urllib.request.Request(self.base + path, headers={"X-API-Key": self.api_key})
        with urllib.request.urlopen(req, timeout=5) as r:
            return json.loads(r.read())


class WsClient:
    """A blocking WebSocket client (``websockets.sync``) that authenticates with the
    ``auth`` message and keeps every frame it received, so a test can wait for one."""

    def __init__(self, url: str, token: str | None = None, timeout: float = 10.0) -> None:
        from websockets.sync.client import connect

        # Entered as a context manager: what websockets >= 16 asks of a connection.
        self.conn = connect(url, open_timeout=timeout).__enter__()
        self.frames: list[dict[str, Any]] = []
        self._ids = 0
        self.auth: dict[str, Any] | None = None
        if token is not None:
            self.send({"type": "auth", "id": self.next_id(), "payload": {"token": token}})
            frame = self.wait(lambda f: f["type"] in ("auth_success", "auth_error"), timeout)
            if frame["type"] != "auth_success":
                raise AssertionError(f"auth failed: {frame}")
            self.auth = frame["payload"]

    def next_id(self) -> str:
        self._ids += 1
        return str(self._ids)

    def send(self, frame: dict[str, Any]) -> None:
        self.conn.send(json.dumps(frame))

    def request(self, type: str, payload: Any = None, timeout: float = 10.0, **extra: Any) -> dict[str, Any]:
        """Sends a frame with a fresh ``id`` and returns the reply with that id."""
        rid = self.next_id()
        frame: dict[str, Any] = {"type": type, "id": rid, **extra}
        if payload is not None:
            frame["payload"] = payload
        self.send(frame)
        return self.wait(lambda f: f.get("id") == rid, timeout)

    def subscribe(self, channel: str, token: str | None = None) -> dict[str, Any]:
        payload: dict[str, Any] = {"channel": channel}
        if token is not None:
            payload["token"] = token
        reply = self.request("subscribe", payload)
        if reply["type"] != "subscribed":
            raise AssertionError(f"subscribe {channel}: {reply}")
        return reply

    def wait(self, pred: Callable[[dict[str, Any]], bool], timeout: float = 10.0) -> dict[str, Any]:
        """The first frame received (earlier or within ``timeout``) that matches
        ``pred`` and was not returned by an earlier wait."""
        deadline = time.monotonic() + timeout
        i = 0
        while True:
            while i < len(self.frames):
                if pred(self.frames[i]):
                    return self.frames.pop(i)
                i += 1
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no matching frame within {timeout} s; got {self.frames[-5:]}")
            try:
                raw = self.conn.recv(timeout=left)
            except TimeoutError:
                continue
            self.frames.append(json.loads(raw))

    def close(self) -> None:
        self.conn.__exit__(None, None, None)
