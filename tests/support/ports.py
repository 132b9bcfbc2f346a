"""Free loopback UDP ports for test processes (bound to port 0 first, then released)."""

from __future__ import annotations

import socket
from collections.abc import Iterable


def free_udp_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def free_udp_ports(count: int, host: str = "127.0.0.1", align: int = 1, attempts: int = 50) -> int:
    """A port P, a multiple of ``align``, with P .. P+count-1 all free on ``host``."""
    for _ in range(attempts):
        base = free_udp_port(host) // align * align
        held: list[socket.socket] = []
        try:
            for port in range(base, base + count):
                s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                held.append(s)
                s.bind((host, port))
            return base
        except OSError:
            continue
        finally:
            for s in held:
                s.close()
    raise RuntimeError(f"no block of {count} free UDP ports found in {attempts} attempts")


def distinct_free_ports(count: int, host: str = "127.0.0.1", attempts: int = 50) -> list[int]:
    """``count`` different ports, each free for both UDP and TCP (a process may bind either:
    SIP takes UDP, ZeroMQ TCP), all held at once so that none is handed out twice (ports taken
    one at a time may repeat: the kernel can give a just-released port again)."""
    held: list[socket.socket] = []
    ports: list[int] = []
    try:
        for _ in range(attempts):
            if len(ports) == count:
                return ports
            tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            held.append(tcp)
            tcp.bind((host, 0))
            port = int(tcp.getsockname()[1])
            udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            held.append(udp)
            try:
                udp.bind((host, port))
            except OSError:
                continue
            ports.append(port)
        if len(ports) == count:
            return ports
        raise RuntimeError(f"no {count} ports free for UDP and TCP in {attempts} attempts")
    finally:
        for s in held:
            s.close()


def free_tcp_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def all_free(ports: Iterable[int], host: str = "127.0.0.1") -> bool:
    """Every one of ``ports`` can be bound now, for TCP and for UDP."""
    for port in ports:
        for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
            with socket.socket(socket.AF_INET, kind) as s:
                try:
                    s.bind((host, port))
                except OSError:
                    return False
    return True
