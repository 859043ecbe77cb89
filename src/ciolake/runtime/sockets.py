"""Listening sockets, bound before a server starts, with a one-line answer when they cannot be."""

from __future__ import annotations

import socket

from ciolake.errors import ConfigurationError


def listening_socket(
    host: str, port: int, *, reuse_port: bool, what: str = "the webhook listener"
) -> socket.socket:
    """A listening TCP socket on ``host:port``, inheritable by the processes started after.

    Raises:
        ConfigurationError: the address cannot be bound (in use, not this machine's).
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ConfigurationError(
            f"cannot listen on {host}:{port} for {what}: {exc.strerror}"
            " (is another server using the port? choose another with"
            f" {'--admin-port' if 'admin' in what else '--port'})"
        ) from exc
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock
