"""A TCP proxy in front of a node whose first connections can be made to lose the
node's answer: the request reaches the node (and is acted on), the reply never
reaches the client. The network failure after which a retry must not publish twice."""

from __future__ import annotations

import socket
import threading


class LosingProxy:
    def __init__(self, upstream_port: int, lose_first: int = 1) -> None:
        self.upstream_port = upstream_port
        self.lose_first = lose_first
        self.connections = 0
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self.base = f"http://127.0.0.1:{self.port}"
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                self.connections += 1
                lose = self.connections <= self.lose_first
            upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
            self._sockets += [client, upstream]
            threading.Thread(target=self._pump, args=(client, upstream, False), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, lose), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket, swallow: bool) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                if not swallow:
                    dst.sendall(data)
        except OSError:
            pass

    def close(self) -> None:
        self._closed = True
        self._listener.close()
        for s in self._sockets:
            try:
                s.close()
            except OSError:
                pass
