"""A TCP + UDP echo server on 127.0.0.1 and ::1 (same port), run as a subprocess.

Usage: ``python echo_server.py PORT``. Prints ``ready`` once listening. Exits when its
stdin closes, so it never outlives the test process.
"""

from __future__ import annotations

import socket
import sys
import threading


def _echo_tcp(conn: socket.socket) -> None:
    with conn:
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        while True:
            try:
                data = conn.recv(262144)
            except OSError:
                return
            if not data:
                return
            try:
                conn.sendall(data)
            except OSError:
                return


def _serve_tcp(family: int, host: str, port: int) -> threading.Thread:
    s = socket.socket(family, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if family == socket.AF_INET6:
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    s.bind((host, port))
    s.listen(128)

    def loop() -> None:
        while True:
            conn, _ = s.accept()
            threading.Thread(target=_echo_tcp, args=(conn,), daemon=True).start()

    t = threading.Thread(target=loop, daemon=True)
    t.start()
    return t


def _serve_udp(family: int, host: str, port: int) -> None:
    s = socket.socket(family, socket.SOCK_DGRAM)
    if family == socket.AF_INET6:
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    s.bind((host, port))

    def loop() -> None:
        while True:
            data, addr = s.recvfrom(65535)
            s.sendto(data, addr)

    threading.Thread(target=loop, daemon=True).start()


def main() -> None:
    port = int(sys.argv[1])
    for family, host in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")):
        _serve_tcp(family, host, port)
        _serve_udp(family, host, port)
    print("ready", flush=True)
    sys.stdin.read()


if __name__ == "__main__":
    main()
