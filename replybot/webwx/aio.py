"""The async itchat driver: once online, a session is coroutines on the worker's loop.

The thread driver (:mod:`replybot.webwx.driver`) gives every session a thread that spends
its life blocked in a socket read; past about a thousand per process, their GIL
hand-offs starve the event loop (docs/PERFORMANCE.md, "Bot density").  This driver keeps
itchat as the protocol authority and splits the work (docs/ARCHITECTURE.md, "The async
bot driver"):

* **Logging in and resuming**: the waiting is a coroutine on the loop, the short steps
  are :class:`ItchatDriver`'s own, blocking, on a small bounded pool shared by every
  session of the process (:data:`LOGIN_THREADS`), in the same phases as the thread
  driver's ``_login``.  On the loop: the login poll (``check_login``'s request, built as
  itchat builds it and held by WeChat about 25 s), the post-scan wait after its first
  201, and the pauses between polls, so that a QR waiting minutes for its owner holds
  no thread.  On the pool: a uuid and its QR (``get_QRuuid``/``get_QR``), push login,
  the login page after a 200 (itchat's ``process_login_info``, where a refusal shows),
  ``webwxinit`` and the contact pages, and a hot resume's first ``webwxsync``.  The
  events of a pool step are handed to the loop.
* **Receiving**: the loop of ``synccheck`` → ``webwxsync`` → message shaping that itchat
  runs in ``start_receiving`` is a coroutine here, on one shared Tornado
  ``AsyncHTTPClient`` (:func:`http_client`).  Requests are built exactly as itchat's
  ``sync_check``/``get_msg``/``send_raw_msg`` build them (``itchat/components/login.py``,
  ``itchat/components/messages.py``; cited at each), and prepared by itchat's own
  ``requests`` session (``core.s.prepare_request``), so URL, parameters, cookies and body
  are what itchat would send; cookies set by answers go back into ``core.s.cookies``.
* **Shaping** is itchat's ``produce_msg`` and this package's classification
  (``ItchatDriver._deliver``), so an :class:`~replybot.driver.IncomingMessage` is the same
  as the thread driver's.  A round that may block (a group message from a member itchat
  does not know yet, which makes it fetch the group; a ModContactList) is shaped on a
  second small pool (:data:`WORK_THREADS`); a friend's message, and a group's whose
  sender is known, is shaped on the loop.
* The counters and decisions (back-off after failed synccheck requests, empty-round spin
  detection, deaf detection, 1101/1102, throttled login-data saves, restricted sends) are
  :class:`ItchatDriver`'s, fed with the same answers.

``stop()``/``logout()`` wake the waiting coroutine at once, in a login poll as in a
synccheck (the held request is abandoned; Tornado's simple client has no way to close one
request's socket, so it lingers until WeChat answers the hold, at most about 25 s).
"""

from __future__ import annotations

import asyncio
import http.client
import json
import logging
import re
import socket
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import requests
from itchat import config as itchat_config
from itchat.components.contact import update_local_chatrooms, update_local_friends
from itchat.components.messages import produce_msg
from itchat.returnvalues import ReturnValue
from requests.cookies import MockRequest, MockResponse
from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest, HTTPResponse
from tornado.netutil import DefaultLoopResolver, Resolver, is_valid_ip
from tornado.simple_httpclient import HTTPTimeoutError

from replybot.driver import DriverEvents, IncomingMessage, LoginState
from replybot.webwx import contacts, library
from replybot.webwx.driver import (
    _SYNCCHECK,
    SYNC_RETRIES,
    ItchatDriver,
    Phase,
    _Stopped,
)
from replybot.webwx.transport import DEFAULT_TIMEOUT, holding

__all__ = ["LOGIN_THREADS", "MAX_CLIENTS", "POOL_TOKENS", "SHAPING_BEAT_S", "WORK_THREADS",
           "AsyncItchatDriver", "http_client"]

logger = logging.getLogger(__name__)

# The short blocking steps of logins and resumes (a QR, the login page, webwxinit and
# contacts, a resume's first webwxsync); a login waiting for a scan holds none.
LOGIN_THREADS = 16
# Blocking work of online sessions: group fetches while shaping, contact merges, logout.
WORK_THREADS = 8
# Threads of both pools that may run Python at once (a token each, given back while the
# thread waits for the network): the loop shares the GIL with at most this many.  With
# all 8 + 16 free to run, a burst of group fetches (each a 200-member merge) would leave
# the loop about a ninth of the GIL; with two it held it 30 % of the time in that burst
# (docs/PERFORMANCE.md, "Bot density").
POOL_TOKENS = 2
_tokens = threading.BoundedSemaphore(POOL_TOKENS)
# While a round waits for the work pool (behind other sessions' group fetches), the
# session tells the watchdog this often that it is alive: WeChat answered, the messages
# are in hand.  Under a burst of 100,000 first group messages the queue held rounds for
# minutes, and the watchdog recycled those sessions as silent.
SHAPING_BEAT_S = 30.0
# Requests in flight at once on the shared client: a session has one long-poll, and at
# times a webwxsync or a send besides; beyond this they queue (and time out queued).
MAX_CLIENTS = 16384
# Headers requests adds for its own connection handling; Tornado sets its own.
_OWN_HEADERS = frozenset({"content-length", "connection", "accept-encoding", "host"})
_GROUP_SENDER = re.compile("(@[0-9a-z]*?):<br/>(.*)$")  # produce_group_chat's own
_LOGIN_CODE = re.compile(r"window.code=(\d+)")  # check_login's own
_T = TypeVar("_T")

# How long a host name's addresses are reused: Tornado's simple client opens a connection
# per request and resolves the host for each, on the loop's default executor.
RESOLVE_TTL_S = 60.0

_pools: dict[str, ThreadPoolExecutor] = {}
_pools_lock = threading.Lock()
_clients: dict[asyncio.AbstractEventLoop, AsyncHTTPClient] = {}


def _pool(name: str, threads: int) -> ThreadPoolExecutor:
    with _pools_lock:
        pool = _pools.get(name)
        if pool is None:
            pool = _pools[name] = ThreadPoolExecutor(threads, thread_name_prefix=name)
        return pool


def login_pool() -> ThreadPoolExecutor:
    """The bounded pool for login and resume steps, shared by every session."""
    return _pool("aio-login", LOGIN_THREADS)


def work_pool() -> ThreadPoolExecutor:
    """The bounded pool for blocking work of online sessions, shared by every session."""
    return _pool("aio-work", WORK_THREADS)


def http_client() -> AsyncHTTPClient:
    """The running loop's client for every session (its own instance: the shared
    per-loop default allows only 10 requests at once, and other code may use it)."""
    loop = asyncio.get_running_loop()
    client = _clients.get(loop)
    if client is None:
        for old in [lp for lp in _clients if lp.is_closed()]:
            del _clients[old]  # loops of past tests
        client = _clients[loop] = AsyncHTTPClient(force_instance=True,
                                                  max_clients=MAX_CLIENTS,
                                                  resolver=_QuickResolver())
    return client


class _QuickResolver(Resolver):
    """Tornado's default resolver without a thread hop per request: an IP address is
    answered on the loop, a host name's addresses are kept :data:`RESOLVE_TTL_S`.

    Tornado's simple client opens a connection for every request (it sends
    ``Connection: close``) and resolves the host each time through
    ``loop.getaddrinfo``, i.e. on the loop's default executor, even for an IP address:
    every synccheck, webwxsync and send waited for a free thread there first."""

    def initialize(self) -> None:  # type: ignore[override]
        self._fallback = DefaultLoopResolver()
        self._cache: dict[tuple[str, int, int], tuple[float, list[tuple[int, Any]]]] = {}

    async def resolve(self, host: str, port: int,
                      family: socket.AddressFamily = socket.AF_UNSPEC,
                      ) -> list[tuple[int, Any]]:
        if is_valid_ip(host):
            if ":" in host:
                return [(socket.AF_INET6, (host, port, 0, 0))]
            return [(socket.AF_INET, (host, port))]
        key = (host, port, int(family))
        now = time.monotonic()
        kept = self._cache.get(key)
        if kept is not None and now - kept[0] < RESOLVE_TTL_S:
            return kept[1]
        addresses = await self._fallback.resolve(host, port, family)
        if len(self._cache) > 64:
            self._cache.clear()
        self._cache[key] = (now, addresses)
        return addresses


def _with_token(work: Callable[..., _T], *args: Any) -> _T:
    """``work`` on a pool thread, holding one of the pools' :data:`POOL_TOKENS` (the
    transport gives it back while the thread waits for the network)."""
    with holding(_tokens):
        return work(*args)


class _Cut(Exception):
    """Internal: stop() or logout() ended a wait."""


class _LoopEvents:
    """The session's DriverEvents as the login thread sees them: every call is made on
    the loop, in order (``call_soon_threadsafe``), and calls made on the loop go straight
    through."""

    def __init__(self, events: DriverEvents, loop: asyncio.AbstractEventLoop) -> None:
        self._events = events
        self._loop = loop
        self._loop_thread = threading.get_ident()  # made on the loop

    def _call(self, name: str, *args: Any) -> None:
        method: Callable[..., None] | None = getattr(self._events, name, None)
        if method is None:
            return
        if threading.get_ident() == self._loop_thread:
            method(*args)
            return
        try:
            self._loop.call_soon_threadsafe(self._safely, name, method, args)
        except RuntimeError:
            pass  # the loop is closed: the process is exiting

    @staticmethod
    def _safely(name: str, method: Callable[..., None], args: tuple[Any, ...]) -> None:
        try:
            method(*args)
        except Exception:
            logger.exception("%s failed", name)

    def on_qr(self, png: bytes) -> None:
        self._call("on_qr", png)

    def on_state(self, state: LoginState, detail: dict[str, Any]) -> None:
        self._call("on_state", state, detail)

    def on_message(self, msg: IncomingMessage) -> None:
        self._call("on_message", msg)

    def on_login_data(self, data: dict[str, Any]) -> None:
        self._call("on_login_data", data)

    def on_sync(self) -> None:
        self._call("on_sync")

    def on_notice(self, kind: str, detail: dict[str, Any]) -> None:
        self._call("on_notice", kind, detail)


class AsyncItchatDriver(ItchatDriver):
    """One personal-account login, receiving on the event loop (see
    :class:`replybot.driver.AsyncDriver`).  Same options and phases as
    :class:`ItchatDriver`; run it with :meth:`arun`, send with :meth:`asend_text`."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake_loop: asyncio.Event | None = None
        self._asend_lock: asyncio.Lock | None = None

    # -- public API --------------------------------------------------------------------

    def run(self, events: DriverEvents, resume: dict[str, Any] | None,
            qr_deadline: float) -> LoginState:
        raise TypeError("an AsyncItchatDriver runs with arun(), on the event loop")

    async def arun(self, events: DriverEvents, resume: dict[str, Any] | None,
                   qr_deadline: float) -> LoginState:
        """See :meth:`replybot.driver.AsyncDriver.arun`."""
        loop = asyncio.get_running_loop()
        self._wake_loop = asyncio.Event()
        self._loop = loop
        if self._requested is not None:  # stop() before arun()
            self._wake_loop.set()
        self._asend_lock = asyncio.Lock()
        on_loop = _LoopEvents(events, loop)
        try:
            self._begin(on_loop, resume)
            self._run_ident = None  # no thread is the session's own but a step's (_step)
            final = await self._alog_in(resume, qr_deadline)
            if final is not None:
                return final
            try:
                return await self._areceive()
            except _Stopped:
                return self._stopped()
            except Exception:
                return self._failed()
        except asyncio.CancelledError:
            self.stop()
            raise
        finally:
            self._finish()

    async def asend_text(self, to_user: str, text: str) -> bool:
        """See :meth:`replybot.driver.AsyncDriver.asend_text`."""
        # send_raw_msg sends to the owner when the target is empty: never let that happen.
        if not to_user or not text or self._phase is not Phase.ONLINE or self._stop_asked():
            return False
        assert self._asend_lock is not None  # set by arun(), before ONLINE
        core = self._core
        async with self._asend_lock:  # one send at a time, as the thread driver's lock
            try:
                # itchat.components.messages.send_raw_msg(core, 1, text, to_user), as
                # send_msg calls it.
                info = core.loginInfo
                url = f"{info['url']}/webwxsendmsg"
                data = {
                    "BaseRequest": info["BaseRequest"],
                    "Msg": {
                        "Type": 1,
                        "Content": text,
                        "FromUserName": core.storageClass.userName,
                        "ToUserName": to_user,
                        "LocalID": int(time.time() * 1e4),
                        "ClientMsgId": int(time.time() * 1e4),
                    },
                    "Scene": 0}
                headers = {"ContentType": "application/json; charset=UTF-8",
                           "User-Agent": itchat_config.USER_AGENT}
                _, body = await self._fetch(
                    "POST", url, data=json.dumps(data, ensure_ascii=False).encode("utf8"),
                    headers=headers, interruptible=False)
            except Exception as exc:  # noqa: BLE001 - any network failure is a failed send
                logger.warning("%s: send failed: %s", self._label(), exc)
                return False
        try:  # ReturnValue(rawResponse=r): r.json(), or -1004 when it is not JSON
            answer = ReturnValue(json.loads(body.decode("utf-8", "replace")))
        except ValueError:
            answer = ReturnValue({"BaseResponse": {"Ret": -1004,
                                                   "ErrMsg": "Unexpected return value"}})
        return self._sent(answer)

    def _ask(self, phase: Phase) -> None:
        super()._ask(phase)  # cuts a request of a step on the pool
        loop, wake = self._loop, self._wake_loop
        if loop is not None and wake is not None:
            try:
                loop.call_soon_threadsafe(wake.set)
            except RuntimeError:
                pass  # the loop is closed

    # -- login: short steps on the pool, the waits on the loop --------------------------

    async def _alog_in(self, resume: dict[str, Any] | None,
                       qr_deadline: float) -> LoginState | None:
        """:meth:`ItchatDriver._log_in` with the login's waits on the loop."""
        try:
            if resume is not None and await self._step(self._resume_or_seed, resume):
                return None
            outcome = await self._alogin(qr_deadline)
            if isinstance(outcome, LoginState):
                return outcome
            await self._step(self._went_online, outcome)
            return None
        except _Stopped:
            return self._stopped()
        except Exception:
            return self._failed()

    def _resume_or_seed(self, resume: dict[str, Any]) -> bool:
        """A hot resume (True), else the push-login cookies are kept for the login."""
        if self._resume_session(resume):
            return True
        self._seed_push_cookies(resume)
        return False

    async def _alogin(self, deadline: float) -> LoginState | str:
        """:meth:`ItchatDriver._login`: the same steps, in the same phases; getting a
        uuid and its QR (or a push login), the login page and loading the account on the
        pool, the login poll and the waits between polls on the loop."""
        self._login_begin(deadline)
        while True:
            step = await self._step(self._login_round, deadline)
            if isinstance(step, LoginState):
                return step
            if step is None:
                await self._asleep(1.0)  # no QR this time: try again
                self._check_stop()
                continue
            uuid, via = step
            try:
                status = await self._await_confirm_on_loop(uuid, deadline,
                                                           scanned=via == "push")
            except KeyError as exc:
                return self._refused(exc)
            if status == "200":
                outcome: LoginState | str = await self._step(self._load_account, via)
                return outcome
            # "400": the QR (or push prompt) expired at WeChat: show a new QR.

    async def _await_confirm_on_loop(self, uuid: str, deadline: float, *,
                                     scanned: bool) -> str:
        """:meth:`ItchatDriver._await_confirm`, polling with :meth:`_check_login`."""
        while True:
            self._check_stop()
            if self._now() >= deadline:
                return "400"
            try:
                status = await self._check_login(uuid, deadline)
            except (_Cut, HTTPTimeoutError):
                continue  # our own timeout at the deadline, or a stop: checked above
            except (OSError, HTTPClientError) as exc:  # requests' errors are OSErrors
                # No answer (refused, reset), or the login page's request failed: the
                # thread driver's RequestException.  A refusal (KeyError) goes up.
                self._check_stop()
                logger.info("%s: login poll failed: %r", self._label(), exc)
                await self._asleep(1.0)
                continue
            if status == "200":
                return status
            if status == "201":
                if not scanned:
                    scanned = True
                    self._enter(Phase.AWAITING_CONFIRM)
                    self._state(LoginState.SCANNED, {"uuid": uuid})
                    # Polling again at once would find the QR gone (driver's module notes).
                    await self._asleep(max(0.0, min(library.scan_wait(),
                                                    deadline - self._now())))
                    self._check_stop()
                continue
            if status == "408":
                continue
            return "400"

    async def _check_login(self, uuid: str, deadline: float) -> str:
        """itchat.components.login.check_login: the long-poll on the loop, its answer
        handled as itchat does; a window.code=200 goes to the login page on the pool
        (:meth:`ItchatDriver._logged_in_page`, itchat's ``process_login_info``)."""
        url = f"{itchat_config.BASE_URL}/cgi-bin/mmwebwx-bin/login"
        local_time = int(time.time())
        params = (f"loginicon=true&uuid={uuid}&tip=1&r={int(-local_time / 1579)}"
                  f"&_={local_time}")
        headers = {"User-Agent": itchat_config.USER_AGENT}
        # Answer EXPIRED at the deadline, not up to one held poll later (as the thread
        # driver's transport times the poll).
        left = deadline - self._now()
        timeout = max(0.05, min(DEFAULT_TIMEOUT[1], left + 0.05))
        _, body = await self._fetch("GET", url, params=params, headers=headers,
                                    long_poll=True, request_timeout=timeout)
        text = body.decode("utf-8", "replace")
        data = _LOGIN_CODE.search(text)
        if data and data.group(1) == "200":
            status: str = await self._step(self._logged_in_page, text)
            return status
        if data:
            return data.group(1)
        return "400"

    async def _step(self, step: Callable[..., _T], *args: Any) -> _T:
        """A short blocking login step on the login pool, on that thread as the
        session's own (the transport's stop handling and observations apply), holding
        one of the pools' tokens (:data:`POOL_TOKENS`)."""
        assert self._loop is not None
        return await self._loop.run_in_executor(login_pool(), self._as_session_thread,
                                                step, args)

    def _as_session_thread(self, step: Callable[..., _T], args: tuple[Any, ...]) -> _T:
        self._run_ident = threading.get_ident()
        try:
            return _with_token(step, *args)
        finally:
            self._run_ident = None

    # -- receiving, on the loop ---------------------------------------------------------

    async def _areceive(self) -> LoginState:
        """itchat's ``start_receiving``/``maintain_loop`` (``itchat/components/login.py``)
        as a coroutine, with the thread driver's checks before each synccheck."""
        core = self._core
        core.alive = True
        retries = 0
        while core.alive:
            if self._stop_asked():
                await self._anotice_stop()
                break
            self._between_rounds()  # what the transport does before each synccheck
            pause = self._sync_pause()
            if pause and await self._asleep(pause):
                continue
            try:
                selector = await self._sync_check()
                if selector is None:
                    core.alive = False
                elif selector != "0":
                    msg_list, contact_list = await self._get_msg()
                    await self._shape(msg_list, contact_list)
                retries = 0
            except (_Cut, HTTPTimeoutError):
                pass  # itchat's loop ignores ReadTimeout; a stop is seen above
            except Exception as exc:  # noqa: BLE001 - itchat's loop counts every failure
                retries += 1
                logger.info("%s: receiving failed (%d in a row): %r", self._label(),
                            retries, exc)
                if SYNC_RETRIES < retries:
                    core.alive = False
                else:
                    await self._asleep(1.0)
        # maintain_loop's end: core.logout() (no request once alive is False: it clears
        # the cookies and lists), then the exit callback.
        core.alive = False
        core.logout()
        self._on_exit()
        return self._received()

    async def _sync_check(self) -> str | None:
        """itchat.components.login.sync_check."""
        info = self._core.loginInfo
        url = f"{info.get('syncUrl', info['url'])}/synccheck"
        params = {
            "r": int(time.time() * 1000),
            "skey": info["skey"],
            "sid": info["wxsid"],
            "uin": info["wxuin"],
            "deviceid": info["deviceid"],
            "synckey": info["synckey"],
            "_": info["logintime"]}
        headers = {"User-Agent": itchat_config.USER_AGENT}
        info["logintime"] += 1
        status, body = await self._fetch("GET", url, params=params, headers=headers,
                                         long_poll=True)
        text = body.decode("utf-8", "replace")
        self._synccheck_answer(status, text)  # as the transport observes it
        if status >= 400:
            raise requests.HTTPError(f"synccheck answered HTTP {status}")  # raise_for_status
        match = _SYNCCHECK.search(text)  # the pattern of itchat's sync_check
        if match is None or match.group(1) != "0":
            return None
        return match.group(2)

    async def _get_msg(self) -> tuple[list[Any] | None, list[Any] | None]:
        """itchat.components.login.get_msg."""
        info = self._core.loginInfo
        url = (f"{info['url']}/webwxsync?sid={info['wxsid']}&skey={info['skey']}"
               f"&pass_ticket={info['pass_ticket']}")
        data = {
            "BaseRequest": info["BaseRequest"],
            "SyncKey": info["SyncKey"],
            "rr": ~int(time.time())}
        headers = {
            "ContentType": "application/json; charset=UTF-8",
            "User-Agent": itchat_config.USER_AGENT}
        _, body = await self._fetch("POST", url, data=json.dumps(data), headers=headers)
        text = body.decode("utf-8", "replace")
        self._sync_round(text)  # as the transport observes it (Ret, empty rounds, deaf)
        dic = json.loads(text)
        if dic["BaseResponse"]["Ret"] != 0:
            return None, None
        info["SyncKey"] = dic["SyncKey"]
        info["synckey"] = "|".join([f"{item['Key']}_{item['Val']}"
                                    for item in dic["SyncCheckKey"]["List"]])
        return dic["AddMsgList"], dic["ModContactList"]

    async def _shape(self, msg_list: list[Any] | None,
                     contact_list: list[Any] | None) -> None:
        """A round's messages and contact changes, on the loop unless itchat may block
        on them (a group message with a member it does not know makes it fetch the
        group; contact merges): then on the work pool."""
        if not msg_list and not contact_list:
            return
        may_block = bool(contact_list) or not all(
            self._shaped_without_fetch(m) for m in msg_list or [])
        if may_block:
            assert self._loop is not None
            shaped = self._loop.run_in_executor(work_pool(), _with_token, self._shape_round,
                                                msg_list, contact_list)
            while not (await asyncio.wait({shaped}, timeout=SHAPING_BEAT_S))[0]:
                if self._events is not None:
                    self._events.on_sync()  # queued, not silent (SHAPING_BEAT_S)
            await shaped
        else:
            self._shape_round(msg_list, contact_list)

    def _shaped_without_fetch(self, msg: Any) -> bool:
        """Whether itchat shapes ``msg`` without a request: not a group message, or one
        whose group holds the sender (``produce_group_chat``'s own lookup,
        ``itchat/components/messages.py``; a sender it does not find makes it fetch the
        group with ``update_chatroom``).  A group that spoke before is answered on the
        loop, not behind the work pool's queue."""
        from_user = str(msg.get("FromUserName", ""))
        to_user = str(msg.get("ToUserName", ""))
        if "@@" not in from_user and "@@" not in to_user:
            return True
        core = self._core
        sender = _GROUP_SENDER.match(str(msg.get("Content", "")))
        if sender is not None:
            room_name, member = from_user, sender.group(1)
        elif from_user == core.storageClass.userName:
            room_name, member = to_user, from_user
        else:
            return True  # itchat looks nothing up
        for room in core.chatroomList:
            if room.get("UserName") == room_name:
                members = room.get("MemberList") or []
                if isinstance(members, contacts.Members):
                    return members.has(member)
                return any(m.get("UserName") == member for m in members)
        return False

    def _shape_round(self, msg_list: list[Any] | None,
                     contact_list: list[Any] | None) -> None:
        """maintain_loop's handling of one round (``itchat/components/login.py``);
        ``core.msgList.put`` is ``_deliver``, as the thread driver's inbox does it."""
        core = self._core
        if msg_list:
            for msg in produce_msg(core, msg_list):
                self._deliver(msg)
        if contact_list:
            chatrooms: list[Any] = []
            others: list[Any] = []
            for contact in contact_list:
                (chatrooms if "@@" in contact["UserName"] else others).append(contact)
            chatroom_msg = update_local_chatrooms(core, chatrooms)
            chatroom_msg["User"] = core.loginInfo["User"]
            self._deliver(chatroom_msg)
            update_local_friends(core, others)

    def _after_response(self, endpoint: str, response: requests.Response,
                        on_run_thread: bool) -> None:
        if endpoint == "webwxbatchgetcontact":
            # Group members merged in, also by a round shaped on the work pool.
            self._contacts_dirty = True
        super()._after_response(endpoint, response, on_run_thread)

    async def _anotice_stop(self) -> None:
        """The thread driver's ``_notice_stop``; its webwxlogout (itchat's own
        ``logout``, blocking) goes to the work pool."""
        if self._requested is Phase.LOGGING_OUT and self._core.loginInfo.get("wxsid"):
            assert self._loop is not None
            await self._loop.run_in_executor(work_pool(), _with_token, self._notice_stop)
        else:
            self._notice_stop()

    # -- HTTP on the loop ---------------------------------------------------------------

    async def _fetch(self, method: str, url: str, *, headers: dict[str, str],
                     params: dict[str, Any] | str | None = None, data: Any = None,
                     long_poll: bool = False, interruptible: bool = True,
                     request_timeout: float = DEFAULT_TIMEOUT[1],
                     ) -> tuple[int, bytes]:
        """One request as itchat's ``core.s`` would send it; (status, body).  A stop
        ends the wait (:class:`_Cut`); the answer of a long-poll that raced with a stop
        is dropped, as the thread driver's transport does."""
        session = self._core.s
        prepared = session.prepare_request(requests.Request(
            method, url, params=params, data=data, headers=headers))
        send_headers = {k: v for k, v in prepared.headers.items()
                        if k.lower() not in _OWN_HEADERS}
        if method == "POST":
            # requests sends no Content-Type for a string body (itchat sets only the
            # misspelt "ContentType"), but Tornado's client would add a form type: say
            # what the body is, as web WeChat's own page does.
            send_headers.setdefault("Content-Type", "application/json;charset=UTF-8")
        request = HTTPRequest(
            str(prepared.url), method=method, body=prepared.body, headers=send_headers,
            connect_timeout=DEFAULT_TIMEOUT[0], request_timeout=request_timeout,
            decompress_response=True)
        fetch = asyncio.ensure_future(http_client().fetch(request, raise_error=False))
        if interruptible:
            await self._until_woken(fetch)
        response: HTTPResponse = await fetch
        if long_poll and self._stop_asked():
            raise _Cut
        if response.code == 599 and response.error is not None:
            raise response.error  # no answer: connection refused, reset, timed out
        cookies = response.headers.get_list("Set-Cookie")
        if cookies:
            message = http.client.HTTPMessage()
            for value in cookies:
                message["Set-Cookie"] = value  # adds one more header
            session.cookies.extract_cookies(  # type: ignore[no-untyped-call]
                MockResponse(message), MockRequest(prepared))  # type: ignore[no-untyped-call]
        return response.code, response.body or b""

    async def _until_woken(self, fetch: asyncio.Future[Any]) -> None:
        """Wait for ``fetch`` or a stop, whichever comes first; :class:`_Cut` on a stop."""
        wake = self._wake_loop
        assert wake is not None
        if wake.is_set():
            fetch.cancel()
            raise _Cut
        woken = asyncio.ensure_future(wake.wait())
        try:
            await asyncio.wait({fetch, woken}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            woken.cancel()
        if not fetch.done():
            fetch.cancel()  # Tornado's client drops the answer when it comes
            raise _Cut

    async def _asleep(self, seconds: float) -> bool:
        """Sleep unless stopped; True if a stop ended it."""
        wake = self._wake_loop
        assert wake is not None
        try:
            await asyncio.wait_for(wake.wait(), seconds)
        except TimeoutError:
            return False
        return True
