"""The HTTP server as ``serve`` runs it: timeouts, an accept loop that survives running
out of file descriptors, and the open-file limit raised at start-up.

Without timeouts, a client that sends half a request holds a connection (and a file
descriptor) for as long as it likes.  Once the process runs out of descriptors,
``accept()`` fails with EMFILE while the connection stays queued, so the listening
socket stays readable: Tornado's accept handler raises, the loop calls it again at
once, and the process spins at 100 % CPU writing a traceback per turn.  The accept
loop here sheds the queued connection (a spare descriptor is kept for exactly that),
pauses accepting briefly, and logs at most one line per interval.
"""

from __future__ import annotations

import errno
import logging
import os
import resource
import socket
import time
from collections.abc import Callable, Iterable
from typing import Any

import tornado.httpserver
import tornado.web
from tornado.ioloop import IOLoop
from tornado.netutil import _DEFAULT_BACKLOG  # type: ignore[attr-defined]

log = logging.getLogger("wxreply")

# How long a connection may take to send a request's headers, and how long it may sit
# idle between requests (Tornado uses one value for both): WeChat, browsers and nginx
# send a request's headers at once.
HEADER_TIMEOUT_S = 10.0
# How long a request's body may take: 1 MiB at a slow mobile rate.
BODY_TIMEOUT_S = 30.0
MAX_BODY_BYTES = 1 << 20
# After EMFILE, accepting pauses this long (connections queue in the backlog meanwhile).
ACCEPT_PAUSE_S = 0.1
ACCEPT_LOG_EVERY_S = 10.0
_OUT_OF_DESCRIPTORS = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)


def raise_open_file_limit() -> tuple[int, int]:
    """Raise the soft RLIMIT_NOFILE to the hard limit (every connection is one file);
    returns (soft, hard) as they are now."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
    if soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError) as exc:
            log.warning("could not raise the open-file limit from %d to %d: %s",
                        soft, target, exc)
    return soft, hard


class _Acceptor:
    """Accepts on one listening socket; on EMFILE sheds and pauses instead of spinning."""

    def __init__(self, sock: socket.socket, callback: Callable[[socket.socket, Any], None],
                 io_loop: IOLoop) -> None:
        self.sock = sock
        self.callback = callback
        self.io_loop = io_loop
        self.removed = False
        self.paused = False
        self.shed = 0
        self._last_log = -ACCEPT_LOG_EVERY_S
        self._spare: int | None = self._open_spare()
        io_loop.add_handler(sock, self._on_readable, IOLoop.READ)

    @staticmethod
    def _open_spare() -> int | None:
        try:
            return os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return None

    def _on_readable(self, fd: Any, events: int) -> None:
        for _ in range(_DEFAULT_BACKLOG):
            if self.removed or self.paused:
                return
            try:
                connection, address = self.sock.accept()
            except BlockingIOError:
                return
            except ConnectionAbortedError:
                continue
            except OSError as exc:
                if exc.errno not in _OUT_OF_DESCRIPTORS:
                    raise
                self._out_of_descriptors(exc)
                return
            self.callback(connection, address)

    def _out_of_descriptors(self, exc: OSError) -> None:
        # Free the spare descriptor to accept the waiting connection and close it: the
        # client learns at once, instead of waiting in a backlog that cannot move.
        if self._spare is not None:
            os.close(self._spare)
            self._spare = None
            try:
                connection, _ = self.sock.accept()
                connection.close()
                self.shed += 1
            except OSError:
                pass
            self._spare = self._open_spare()
        now = time.monotonic()
        if now - self._last_log >= ACCEPT_LOG_EVERY_S:
            self._last_log = now
            log.error("cannot accept connections: %s (open-file limit %d); shedding new "
                      "connections and pausing accepts, %d shed so far", exc.strerror,
                      resource.getrlimit(resource.RLIMIT_NOFILE)[0], self.shed)
        self.paused = True
        self.io_loop.remove_handler(self.sock)
        self.io_loop.call_later(ACCEPT_PAUSE_S, self._resume)

    def _resume(self) -> None:
        if self.removed:
            return
        self.paused = False
        self.io_loop.add_handler(self.sock, self._on_readable, IOLoop.READ)

    def remove(self) -> None:
        if not self.removed and not self.paused:
            self.io_loop.remove_handler(self.sock)
        self.removed = True
        if self._spare is not None:
            os.close(self._spare)
            self._spare = None


class GuardedHTTPServer(tornado.httpserver.HTTPServer):
    """Tornado's HTTPServer with the accept loop above."""

    def add_sockets(self, sockets: Iterable[socket.socket]) -> None:
        io_loop = IOLoop.current()
        for sock in sockets:
            acceptor = _Acceptor(sock, self._handle_connection, io_loop)
            self._sockets[sock.fileno()] = sock
            self._handlers[sock.fileno()] = acceptor.remove


def build_http_server(app: tornado.web.Application, *,
                      header_timeout_s: float = HEADER_TIMEOUT_S,
                      body_timeout_s: float = BODY_TIMEOUT_S) -> GuardedHTTPServer:
    # No xheaders: which proxy headers to believe is decided per request by the app
    # (WXR_TRUST_PROXY, web_min.addresses), not for every peer by Tornado.
    return GuardedHTTPServer(app, xheaders=False, max_body_size=MAX_BODY_BYTES,
                             idle_connection_timeout=header_timeout_s,
                             body_timeout=body_timeout_s)
