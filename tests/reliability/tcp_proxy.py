"""A threaded TCP proxy on 127.0.0.1 for fault injection between a client and the agent, after grpc's
``tests/unit/_tcp_proxy.py``: it forwards bytes both ways and can cut every connection (a reset), cut once a
number of client bytes went through, delay every read, or stall (hold every byte) until resumed.

    with TcpProxy(agent_port) as proxy:
        proxy.cut_after(3 << 20)       # reset the connections once 3 MiB went upstream
        client_for(proxy.port).push(...)
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
import time


class TcpProxy:
    def __init__(self, target_port: int, target_host: str = "127.0.0.1") -> None:
        assert target_host in ("127.0.0.1", "localhost", "::1"), "the proxy only forwards to this machine"
        self.target = (target_host, target_port)
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(64)
        self._listener.settimeout(0.2)  # so the accept loop sees close() promptly
        self.port = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._pairs: list[tuple[socket.socket, socket.socket]] = []
        self._flowing = threading.Event()
        self._flowing.set()
        self._closed = threading.Event()
        self.delay = 0.0
        self.bytes_up = 0  # client -> agent
        self.bytes_down = 0
        self.connections = 0
        self.cuts = 0
        self._cut_points: list[int] = []
        self._accepter = threading.Thread(target=self._accept, name="tcp-proxy-accept", daemon=True)

    # ----- control -------------------------------------------------------------------------------------------
    def start(self) -> TcpProxy:
        self._accepter.start()
        return self

    def cut_all(self) -> None:
        """Reset every open connection (the peers see a broken connection); new ones are accepted."""
        with self._lock:
            pairs, self._pairs = self._pairs, []
            self.cuts += 1
        for pair in pairs:
            for sock in pair:
                _reset(sock)

    def cut_after(self, *upstream_bytes: int) -> None:
        """Cut every connection each time the client has sent this many bytes in total (one cut per value)."""
        with self._lock:
            self._cut_points = sorted(upstream_bytes)

    def stall(self) -> None:
        """Hold every byte in both directions until :meth:`resume` (connections stay open)."""
        self._flowing.clear()

    def resume(self) -> None:
        self._flowing.set()

    def close(self) -> None:
        self._closed.set()
        self._flowing.set()
        with contextlib.suppress(OSError):
            self._listener.close()
        self.cut_all()
        self._accepter.join(timeout=5)

    def __enter__(self) -> TcpProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ----- forwarding ----------------------------------------------------------------------------------------
    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            client.settimeout(None)
            try:
                upstream = socket.create_connection(self.target, timeout=10)
                upstream.settimeout(None)
            except OSError:
                _reset(client)
                continue
            for sock in (client, upstream):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._lock:
                self._pairs.append((client, upstream))
                self.connections += 1
            threading.Thread(target=self._pump, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, False), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, upstream: bool) -> None:
        try:
            while not self._closed.is_set():
                data = src.recv(65536)
                if not data:
                    with contextlib.suppress(OSError):
                        dst.shutdown(socket.SHUT_WR)
                    return
                while not self._flowing.wait(0.1):
                    if self._closed.is_set():
                        return
                if self.delay:
                    time.sleep(self.delay)
                dst.sendall(data)
                cut = False
                with self._lock:
                    if upstream:
                        self.bytes_up += len(data)
                        while self._cut_points and self.bytes_up >= self._cut_points[0]:
                            self._cut_points.pop(0)
                            cut = True
                    else:
                        self.bytes_down += len(data)
                if cut:
                    self.cut_all()
                    return
        except OSError:
            pass
        finally:
            _reset(src)
            _reset(dst)


def _reset(sock: socket.socket) -> None:
    """Close with SO_LINGER 0: the peer gets a TCP reset, as when a Wi-Fi link or a NAT entry dies."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with contextlib.suppress(OSError):
        sock.close()
