"""One personal-account login on its own thread, bridged to the worker's event loop.

The driver blocks (itchat uses ``requests``), so each session runs it on a thread of its
own and reports through :class:`DriverEvents` (an :class:`~replybot.driver.AsyncDriver`
instead runs as a task on the loop, and its events come on the loop).  Those calls arrive
on the session thread; the session turns them into items on an asyncio queue
(``call_soon_threadsafe``, the only safe way from a thread into a loop) and one consumer
task per session applies them in order: states must be recorded in the order they
happened.  Messages are handed to their
own tasks so that a reply waiting out its pacing delay holds up nothing else.
"""

from __future__ import annotations

import asyncio
import collections
import enum
import logging
import threading
import time
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any, Protocol

from replybot.driver import AnyDriver, AsyncDriver, IncomingMessage, LoginState
from replybot.replying import Profile
from store import StoreUnavailable

log = logging.getLogger("wxreply.replybot")

# A state change that could not be stored because a store was down is retried this long.
STORE_RETRY_S = 60.0
# Stack reserved for each session thread.  The default (8 MiB) is only address space, but
# thousands of sessions reserve tens of GB of it, which a host with strict overcommit
# refuses; a session thread touches about 16 KiB (requests, itchat, JSON), and 1 MiB
# leaves a wide margin for deep parsing.
SESSION_STACK_BYTES = 1024 * 1024


class Origin(enum.StrEnum):
    REQUEST = "request"  # the owner asked (登录)
    RESUME = "resume"    # a worker continues a login after a restart or failover


class SessionSink(Protocol):
    """The worker, as a session sees it (all called on the event loop)."""

    async def on_qr(self, session: Session, png: bytes) -> None: ...
    async def on_state(self, session: Session, state: LoginState,
                       detail: dict[str, Any]) -> None: ...
    async def on_message(self, session: Session, msg: IncomingMessage) -> None: ...
    async def on_login_data(self, session: Session, data: dict[str, Any]) -> None: ...
    async def on_ended(self, session: Session, final: LoginState) -> None: ...
    async def on_notice(self, session: Session, kind: str, detail: dict[str, Any]) -> None: ...


class Session:
    def __init__(self, uid: int, pid: str, driver: AnyDriver, sink: SessionSink,
                 loop: asyncio.AbstractEventLoop, *, origin: Origin,
                 resume: dict[str, Any] | None, qr_deadline: float) -> None:
        self.uid = uid
        self.pid = pid
        self.driver = driver
        self.origin = origin
        self.state = LoginState.REQUESTED
        self.nickname = ""
        self.profile = Profile()
        self.settings_version: bytes | None = None  # see Worker._refresh
        self.login_saved = False  # its bot record is marked as having login data
        self.stop_requested = False  # stopped by the worker: the login stays resumable
        self.recycle = False         # resume at once after it ends (watchdog, network error)
        self.last_sync = time.monotonic()
        self.send_failures = 0
        # WeChat restricts sending (see Worker.on_notice): no auto-replies until then.
        self.restricted_until = 0.0
        self.restricted_pause_s = 0.0
        self.restricted_told = False
        # (chat, text, monotonic time) of recent sends, to recognise their echoes.
        self.recent_sends: collections.deque[tuple[str, str, float]] = collections.deque(
            maxlen=32)
        self._sink = sink
        self._loop = loop
        self._resume = resume
        self._qr_deadline = qr_deadline
        self._queue: asyncio.Queue[tuple[Any, ...]] = asyncio.Queue()
        self._tasks: set[asyncio.Task[None]] = set()
        # An AsyncDriver runs as a task on the loop: no thread of its own.
        self._thread = None if isinstance(driver, AsyncDriver) else threading.Thread(
            target=self._run, name=f"bot-{uid}", daemon=True)
        self.ended = asyncio.Event()

    def start(self) -> None:
        self._spawn(self._consume())
        if self._thread is None:
            self._spawn(self._arun())
            return
        # threading.stack_size is process-wide: set it for this thread only.  Threads are
        # started on the event loop's thread, so no other start can interleave here.
        previous = threading.stack_size(SESSION_STACK_BYTES)
        try:
            self._thread.start()
        finally:
            threading.stack_size(previous)

    def stop(self) -> None:
        """End the session but keep its login resumable (shutdown, hand-over)."""
        self.stop_requested = True
        self.driver.stop()

    def logout(self) -> None:
        self.driver.logout()

    # -- the session thread ----------------------------------------------------------

    def _run(self) -> None:
        driver = self.driver
        assert not isinstance(driver, AsyncDriver)
        try:
            final = driver.run(self, self._resume, self._qr_deadline)
        except BaseException:  # noqa: BLE001 - a driver bug must still end the session
            log.exception("bot session %s crashed", self.uid)
            final = LoginState.LOGGED_OUT
        self._emit("ended", final)

    async def _arun(self) -> None:
        """An AsyncDriver's run, as a task on the loop (its events come on the loop)."""
        driver = self.driver
        assert isinstance(driver, AsyncDriver)
        try:
            final = await driver.arun(self, self._resume, self._qr_deadline)
        except Exception:  # a driver bug must still end the session
            log.exception("bot session %s crashed", self.uid)
            final = LoginState.LOGGED_OUT
        self._emit("ended", final)

    def _emit(self, *item: Any) -> None:
        try:
            self._loop.call_soon_threadsafe(self._queue.put_nowait, item)
        except RuntimeError:
            pass  # the loop is closed: the process is exiting

    # DriverEvents, called on the session thread.
    def on_qr(self, png: bytes) -> None:
        self._emit("qr", png)

    def on_state(self, state: LoginState, detail: dict[str, Any]) -> None:
        self._emit("state", state, detail)

    def on_message(self, msg: IncomingMessage) -> None:
        self._emit("msg", msg)

    def on_login_data(self, data: dict[str, Any]) -> None:
        self._emit("login", data)

    def on_sync(self) -> None:
        self.last_sync = time.monotonic()  # a float store: atomic, no loop hop needed

    def on_notice(self, kind: str, detail: dict[str, Any]) -> None:
        self._emit("notice", kind, detail)  # also from send threads: _emit is thread-safe

    # -- the event loop ----------------------------------------------------------------

    def _spawn(self, coro: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _consume(self) -> None:
        sink = self._sink
        while True:
            kind, *rest = await self._queue.get()
            if kind == "msg":
                self._spawn(self._guarded(partial(sink.on_message, self, rest[0])))
            elif kind == "qr":
                await self._stored(partial(sink.on_qr, self, rest[0]))
            elif kind == "state":
                self.state = rest[0]
                await self._stored(partial(sink.on_state, self, rest[0], rest[1]))
            elif kind == "notice":
                self._spawn(self._guarded(partial(sink.on_notice, self, rest[0], rest[1])))
            elif kind == "login":
                await self._stored(partial(sink.on_login_data, self, rest[0]))
            elif kind == "ended":
                await self._stored(partial(sink.on_ended, self, rest[0]))
                self.ended.set()
                return

    async def _guarded(self, make: Callable[[], Awaitable[None]]) -> None:
        try:
            await make()
        except StoreUnavailable as err:
            log.warning("bot %s: message not handled, %s", self.uid, err)
        except Exception:
            log.exception("bot %s: error handling a message", self.uid)

    async def _stored(self, make: Callable[[], Awaitable[None]]) -> None:
        """Apply a state-like event, retrying while a store is down: losing "online" or
        the login data would make the session invisible or unresumable."""
        deadline = time.monotonic() + STORE_RETRY_S
        delay = 0.2
        while True:
            try:
                await make()
                return
            except StoreUnavailable as err:
                if time.monotonic() > deadline:
                    log.error("bot %s: gave up recording an event: %s", self.uid, err)
                    return
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
            except Exception:
                log.exception("bot %s: error recording an event", self.uid)
                return

    def join(self, timeout: float) -> None:
        if self._thread is not None:
            self._thread.join(timeout)
