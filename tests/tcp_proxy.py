"""A TCP proxy on 127.0.0.1 that can drop every connection through it (a head whose network
blips): the client side of the Jobs API is tested against a real head through it."""

from __future__ import annotations

import socket
import threading
import time


class DroppingProxy:
    def __init__(self, target_port: int):
        self.target = ("127.0.0.1", target_port)
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.conns: list[socket.socket] = []
        self.refuse_until = 0.0
        self.lock = threading.Lock()
        self.drops = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            if time.monotonic() < self.refuse_until:
                client.close()
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=10)
            except OSError:
                client.close()
                continue
            with self.lock:
                self.conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def drop(self, refuse_s: float) -> None:
        """Reset every open connection and refuse new ones for refuse_s seconds."""
        self.refuse_until = time.monotonic() + refuse_s
        with self.lock:
            conns, self.conns = self.conns, []
        for c in conns:  # shutdown wakes the pump blocked in recv; close alone would not
            for how in (lambda: c.shutdown(socket.SHUT_RDWR), c.close):
                try:
                    how()
                except OSError:
                    pass
        self.drops += 1

    def close(self) -> None:
        self.server.close()
        self.drop(0)
