"""The ``requests`` transport mounted on each session's ``core.s``, and the activity tokens.

Long-polls (``synccheck``, the login poll) are held by WeChat for about 25 s and itchat
offers no way to interrupt them.  The driver mounts this adapter on ``core.s`` (a
``requests`` extension point, ``Session.mount``, not an itchat patch): it shuts down the
socket of the session thread's long-poll when the session is stopped, turns the resulting
error into the ``ReadTimeout`` that itchat's loop ignores, gives itchat's untimed requests
a timeout, and lets the session observe responses (synccheck retcode, login-page ``ret``,
sync rounds) without parsing anything twice.
"""

from __future__ import annotations

import socket
import threading
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Protocol
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

__all__ = ["ACTIVE_SESSIONS", "DEFAULT_TIMEOUT", "LongPoll", "Transport", "TransportOwner",
           "activity", "holding", "released"]

# itchat leaves most requests without a timeout; a server that stops answering would
# hang the session forever.  (connect, read), as itchat's own config.TIMEOUT.
DEFAULT_TIMEOUT = (10.0, 60.0)
_LONG_POLLS = frozenset({"synccheck", "login"})


# -- activity: how many session threads may run at once ------------------------------

# Thousands of session threads share one GIL.  Parked in a long-poll they cost nothing;
# but when many wake together (a burst of messages, a restart) every one of them waits for
# the GIL with a 5 ms timed wait, and the process burns both cores handing the GIL around
# while the event loop, which answers the messages, hardly gets it (measured: a burst of
# 200 messages/s into 2,000 sessions never recovered; docs/PERFORMANCE.md).  So a session
# thread holds one of a few activity tokens whenever it runs Python code, and gives it back
# while it waits for the network or sleeps: the others wait on the semaphore, asleep.
ACTIVE_SESSIONS = 8
activity = threading.BoundedSemaphore(ACTIVE_SESSIONS)
# The async driver's pools share a smaller set of their own (replybot.webwx.aio).  Which
# set, if any, this thread holds a token of:
_held = threading.local()


@contextmanager
def holding(tokens: threading.Semaphore) -> Iterator[None]:
    """Run the block holding one of ``tokens``; the transport gives it back while this
    thread waits for the network, :func:`released` while it sleeps."""
    tokens.acquire()
    _held.tokens = tokens
    try:
        yield
    finally:
        _held.tokens = None
        tokens.release()


@contextmanager
def released() -> Iterator[None]:
    """The block without this thread's token (if it holds one): a wait for the network
    or a sleep, while other threads run Python."""
    tokens: threading.Semaphore | None = getattr(_held, "tokens", None)
    if tokens is None:
        yield
        return
    _held.tokens = None
    tokens.release()
    try:
        yield
    finally:
        tokens.acquire()
        _held.tokens = tokens


# -- interruptible long-polls ----------------------------------------------------------


class LongPoll:
    """The connection a session thread's long-poll waits on, so that another thread can
    cut it short (:meth:`cut`).  Once cut, every later long-poll of the session fails at
    once, before it blocks."""

    __slots__ = ("_conn", "_cut", "_lock")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._conn: Any = None  # set only while a long-poll waits for its answer
        self._cut = False

    def begin(self) -> None:
        with self._lock:
            self._conn = None

    def end(self) -> None:
        with self._lock:
            self._conn = None

    def waiting(self, conn: Any) -> None:
        """The long-poll is about to block on ``conn`` (urllib3's ``getresponse``)."""
        with self._lock:
            if self._cut:
                raise ConnectionAbortedError("session stopped")
            self._conn = conn

    def cut(self) -> None:
        """Any thread: end the long-poll waiting now, and refuse every later one."""
        with self._lock:
            self._cut = True
            conn = self._conn
        sock = getattr(conn, "sock", None)
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass  # already closed: the poll is over anyway


_current_poll = threading.local()  # the LongPoll this thread is waiting in


class _PollAware:
    """Mixin for urllib3 connections: a long-poll registers its connection before it
    blocks waiting for the answer, so that it can be cut short."""

    def getresponse(self, *args: Any, **kwargs: Any) -> Any:
        poll: LongPoll | None = getattr(_current_poll, "poll", None)
        if poll is not None:
            poll.waiting(self)
        return super().getresponse(*args, **kwargs)  # type: ignore[misc]


class _HTTPConnection(_PollAware, HTTPConnection):
    pass


class _HTTPSConnection(_PollAware, HTTPSConnection):
    pass


class _HTTPPool(HTTPConnectionPool):
    ConnectionCls = _HTTPConnection


class _HTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _HTTPSConnection


# -- the adapter -----------------------------------------------------------------------


class TransportOwner(Protocol):
    """What the transport asks of the session that mounted it (the ItchatDriver)."""

    _run_ident: int | None  # the session's own thread, once it runs
    _poll: LongPoll

    def _stop_asked(self) -> bool: ...

    def _notice_stop(self) -> None: ...

    def _before_request(self, endpoint: str, timeout: Any, on_run_thread: bool) -> Any: ...

    def _after_response(self, endpoint: str, response: requests.Response,
                        on_run_thread: bool) -> None: ...


class Transport(HTTPAdapter):
    """The requests adapter mounted on ``core.s`` (one per scheme and session).  Small
    pools: a session talks to at most three hosts with one long-poll and one send at a
    time."""

    def __init__(self, owner: TransportOwner) -> None:
        self._owner = weakref.ref(owner)
        super().__init__(pool_connections=3, pool_maxsize=2)

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {"http": _HTTPPool, "https": _HTTPSPool}

    def send(self, request: requests.PreparedRequest, stream: bool = False,
             timeout: Any = None, verify: Any = True, cert: Any = None,
             proxies: Any = None) -> requests.Response:
        owner = self._owner()
        if owner is None:
            return super().send(request, stream, timeout or DEFAULT_TIMEOUT, verify, cert,
                                proxies)
        endpoint = urlsplit(request.url or "").path.rsplit("/", 1)[-1]
        on_run_thread = threading.get_ident() == owner._run_ident
        timeout = owner._before_request(endpoint, timeout, on_run_thread)
        long_poll = on_run_thread and endpoint in _LONG_POLLS
        if long_poll:
            owner._poll.begin()
            _current_poll.poll = owner._poll
        try:
            try:
                with released():  # waiting for the network: let another session run
                    response = super().send(request, stream, timeout, verify, cert, proxies)
                    if not stream:
                        response.content  # noqa: B018 - read the body without a token
            finally:
                if long_poll:
                    _current_poll.poll = None
                    owner._poll.end()
        except requests.ConnectionError:
            if on_run_thread and owner._stop_asked():
                owner._notice_stop()
                raise requests.ReadTimeout("session stopped", request=request) from None
            raise
        if long_poll and owner._stop_asked():
            # Do not act on an answer that raced with stop(): the messages it announces
            # stay at WeChat for whoever resumes the login.
            response.close()
            owner._notice_stop()
            raise requests.ReadTimeout("session stopped", request=request)
        owner._after_response(endpoint, response, on_run_thread)
        return response
