"""The itchat driver: one web-WeChat login through itchat-uos, on the session's thread.

Facts about itchat-uos 1.4.1 that shape this module (see ``itchat/components/login.py``):

* ``Core.login()`` loops forever on an expired QR (it fetches a new one), keeps retrying
  push login while a ``wxuin`` cookie exists, and always ends by starting a receiving
  *thread* of its own.  So this driver composes the same public steps itself
  (``get_QRuuid``/``get_QR``/``check_login``/``web_init``/``show_mobile_login``/
  ``get_contact``, and ``push_login`` from the same module), which is how itchat's own
  docstring says to adapt login, then runs ``start_receiving(getReceivingFnOnly=True)``
  on the session's thread.  ``core.isLogging`` is set as ``login()`` would.
* A refused web login (the login page answers ``<ret>1203</ret>``, or the "当前登录环境
  异常" text, or an HTML page without any ``<ret>``, and sets no cookie) surfaces as
  ``KeyError('wxsid')`` out of ``check_login``; the page's own words are kept for the
  owner (``wechat_message``).
* After a scan (poll answer 201) WeChat keeps the phone's 确认 disabled for about 5 s,
  and a poll that comes back inside that window finds the QR gone; so the driver waits
  ``library.POST_SCAN_WAIT_S`` after the first 201, as chatgpt-on-wechat's vendored itchat
  does (``time.sleep(7)`` on 201 in its ``login``).
* Since 2025-01 synccheck often answers ``retcode:"1102"`` seconds after a login: WeChat
  closed the web session.  That ends as CLOSED (not LOGGED_OUT: the owner did nothing).
* ``auto_login`` may call ``sys.exit``; ``get_QR`` without ``qrCallback`` writes
  ``QR.png`` in the working directory; ``dump_login_status`` writes ``itchat.pkl``.  None
  of them is used: the resumable state is a JSON-able dict (``on_login_data``), either
  complete or, while only the sync position moves, a ``partial`` one with just that.
* The receiving loop calls ``core.logout()`` when it ends, which clears the cookies and
  contact lists, and sends ``webwxlogout`` only while ``core.alive`` is still True.  A
  synccheck ``retcode`` other than 0 (1101: logged in elsewhere) just ends the loop; the
  retcode is only logged, so this driver reads it from the response itself.
* Messages go to ``core.msgList.put``; giving the Core an object whose ``put`` converts
  and delivers them avoids a consumer thread per session.
* Long-polls (``synccheck``, the login poll) are held by WeChat for about 25 s and
  itchat offers no way to interrupt them.  The driver mounts its own requests transport on
  ``core.s`` (:mod:`replybot.webwx.transport`, a requests extension point, not an itchat
  patch): it shuts down the socket of the session thread's long-poll when
  ``stop()``/``logout()`` is called, turns the resulting error into the ``ReadTimeout``
  that itchat's loop ignores, gives itchat's untimed requests a timeout, and observes
  responses (synccheck retcode, login-page ``ret``, sync rounds) without parsing anything
  twice.
* itchat produces a round's messages *before* it merges that round's ModContactList, so
  a new friend's first message would look like a stranger's; such messages are
  classified again after the round.

Memory (a worker must hold thousands of sessions): contacts are slimmed
(:mod:`replybot.webwx.contacts`).  itchat's loop also keeps its last batch of messages
referenced until the next round, and a group message holds a deep copy of its group, so
delivered messages are emptied.
"""

from __future__ import annotations

import copy
import dataclasses
import enum
import logging
import re
import threading
import time
from collections.abc import Callable
from typing import Any

import itchat
import itchat.utils
import requests
from itchat.components.contact import update_local_chatrooms, update_local_friends
from itchat.components.login import process_login_info, push_login
from itchat.components.messages import produce_msg
from itchat.storage import templates

from replybot.driver import Contact, DriverEvents, IncomingMessage, LoginState
from replybot.webwx import contacts, library, messages
from replybot.webwx.messages import WECHAT_MESSAGE_MAX
from replybot.webwx.transport import DEFAULT_TIMEOUT, LongPoll, Transport, holding, released
from replybot.webwx.transport import activity as _activity

__all__ = ["TRANSITIONS", "ImpossibleTransition", "ItchatDriver", "Phase"]

logger = logging.getLogger(__name__)

RESUME_VERSION = 1
_SYNCCHECK = re.compile(r'window.synccheck=\{retcode:"(\d+)",selector:"(\d+)"\}')
_LOGIN_PAGE_RET = re.compile(r"<ret>(-?\d+)</ret>")
_LOGIN_PAGE_MESSAGE = re.compile(r"<message>(.*?)</message>", re.S)
_TAGS = re.compile(r"<[^>]*>")
# synccheck retcodes: 1102 is WeChat closing the web session by itself.
CLOSED_RETCODES = frozenset({"1102"})
# webwxsendmsg Ret codes: 1101 the session is gone; 1204/1205 WeChat limits sending
# (1205 "操作太频繁").
SEND_RESTRICTED_RETS = frozenset({1204, 1205})
# Sync oddities (sandbox/webwx/protocol.py has the sources).  Failed synccheck requests (a
# 503 of the push host) are retried with back-off: itchat sleeps 1 s after each and ends
# its loop after ``receivingRetryCount`` in a row, raised here from its 5.
SYNC_RETRIES = 20
SYNC_BACKOFF_MAX_S = 30.0
# selector 2 (or 4/6/7) with an empty webwxsync, round after round: after this many the
# session pauses before each synccheck (doubling, see ItchatDriver's ``spin_pause_max``)
# and stops counting as alive for the watchdog, which recycles it if it goes on.
SPIN_FREE_ROUNDS = 5
# webwxsync answering Ret != 0 while synccheck says there is something: the session is
# deaf.  After this many in a row it ends ("error"), and the worker resumes it.
DEAF_ROUNDS = 5
_SYNC_RET = re.compile(r'"Ret"\s*:\s*(-?\d+)')
_SYNC_COUNTS = re.compile(r'"(AddMsgCount|ModContactCount)"\s*:\s*(\d+)')
_RESUME_LOGIN_KEYS = ("url", "fileUrl", "syncUrl", "deviceid", "logintime", "skey",
                      "wxsid", "wxuin", "pass_ticket", "BaseRequest", "InviteStartCount",
                      "SyncKey", "synckey")
# The cookies itchat's own hot reload keeps for a push login (hotreload.load_last_login_status).
_PUSH_COOKIES = frozenset({"wxuin", "last_wxuin", "webwxuvid", "webwx_auth_ticket",
                           "wxloadtime", "mm_lang", "login_frequency"})


class Phase(enum.Enum):
    """Where a driver is in its one run.  Changed only by the session's own run (its
    thread; for the async driver, its task on the loop or the one pool step it awaits),
    and only through ``ItchatDriver._enter``, which checks the step against
    :data:`TRANSITIONS` and logs it.  ``stop()``/``logout()`` (any thread) only ask for
    STOPPING or LOGGING_OUT; the run enters it at its next step."""

    IDLE = "idle"                          # made; run() not called yet
    RESUMING = "resuming"                  # continuing saved login data (hot reload)
    FETCHING_QR = "fetching_qr"            # asking for a push login or a new QR uuid
    AWAITING_SCAN = "awaiting_scan"        # QR shown, polling the login
    AWAITING_CONFIRM = "awaiting_confirm"  # scanned (or push sent): waiting for 确认
    LOADING = "loading"                    # confirmed: webwxinit, contacts
    ONLINE = "online"                      # receiving; sends allowed
    LOGGING_OUT = "logging_out"            # a stop noticed: webwxlogout on its way
    STOPPING = "stopping"                  # a stop noticed: winding down
    ENDING = "ending"                      # over by itself: reporting its last state
    ENDED = "ended"                        # run() returned


_LIVE = frozenset({Phase.RESUMING, Phase.FETCHING_QR, Phase.AWAITING_SCAN,
                   Phase.AWAITING_CONFIRM, Phase.LOADING, Phase.ONLINE})
# Every live phase may also end (ENDING) or notice a stop (STOPPING, LOGGING_OUT); every
# phase after IDLE may become ENDED (run()'s last step, whatever happened).
TRANSITIONS: dict[Phase, frozenset[Phase]] = {
    Phase.IDLE: frozenset({Phase.RESUMING, Phase.FETCHING_QR}),
    Phase.RESUMING: frozenset({Phase.ONLINE, Phase.FETCHING_QR}),
    Phase.FETCHING_QR: frozenset({Phase.AWAITING_SCAN, Phase.AWAITING_CONFIRM}),
    Phase.AWAITING_SCAN: frozenset({Phase.AWAITING_CONFIRM, Phase.LOADING,
                                    Phase.FETCHING_QR}),
    Phase.AWAITING_CONFIRM: frozenset({Phase.LOADING, Phase.FETCHING_QR}),
    Phase.LOADING: frozenset({Phase.ONLINE}),
    Phase.ONLINE: frozenset(),
    Phase.LOGGING_OUT: frozenset({Phase.STOPPING}),
    Phase.STOPPING: frozenset({Phase.ENDING}),
    Phase.ENDING: frozenset(),
    Phase.ENDED: frozenset(),
}
TRANSITIONS = {
    phase: targets
    | (frozenset({Phase.ENDING, Phase.STOPPING, Phase.LOGGING_OUT}) if phase in _LIVE
       else frozenset())
    | (frozenset({Phase.ENDED}) if phase not in (Phase.IDLE, Phase.ENDED) else frozenset())
    for phase, targets in TRANSITIONS.items()}


class ImpossibleTransition(RuntimeError):
    """A bug: the driver tried a step that :data:`TRANSITIONS` does not allow."""


class _Inbox:
    """Stands in for ``core.msgList``: itchat's receiving loop calls ``put`` for every
    produced message, so messages are handled on the session's thread, no queue."""

    __slots__ = ("_deliver",)

    def __init__(self, deliver: Callable[[dict[str, Any]], None]) -> None:
        self._deliver = deliver

    def put(self, message: dict[str, Any]) -> None:
        self._deliver(message)


class _Stopped(Exception):
    """Internal: stop() or logout() was noticed on the session's thread."""


# -- the driver ------------------------------------------------------------------------


class ItchatDriver:
    """One personal-account login through itchat (see :class:`replybot.driver.Driver`).

    ``save_interval``: at most one throttled ``on_login_data`` per this many seconds (the
    SyncKey changes at every message round).  A throttled save is the full state when
    contacts changed, else only the progress (``partial``, see :meth:`_progress`); the
    saves after login and at stop are always full.  ``now``: the clock, injectable.

    Its state is one :class:`Phase` (:attr:`phase`); see :data:`TRANSITIONS`.
    """

    def __init__(self, *, save_interval: float = 5.0, name: str = "",
                 now: Callable[[], float] = time.time, spin_pause_max: float = 5.0) -> None:
        self._save_interval = save_interval
        self._spin_pause_max = spin_pause_max
        self._sync_errors = 0   # failed synccheck requests in a row
        self._empty_rounds = 0  # "something new" rounds that brought nothing, in a row
        self._bad_syncs = 0     # webwxsync answers with Ret != 0, in a row
        self._deaf = False
        self._name = name
        self._now = now
        self._lock = threading.RLock()  # the phase and the stop request
        self._send_lock = threading.Lock()
        self._wake = threading.Event()
        self._core = itchat.Core()
        self._core.receivingRetryCount = SYNC_RETRIES
        self._core.msgList = _Inbox(self._deliver)
        self._poll = LongPoll()
        self._core.s.mount("http://", Transport(self))
        self._core.s.mount("https://", Transport(self))
        self._events: DriverEvents | None = None
        self._run_ident: int | None = None
        self._phase = Phase.IDLE
        # What stop() (STOPPING) or logout() (LOGGING_OUT) asked for, from any thread.
        self._requested: Phase | None = None
        self._login_deadline: float | None = None
        self._login_unreachable = False  # told the owner that the login service is down
        self._push_tried = False  # a push login was tried in this login
        self._login_page_ret: str | None = None
        self._login_page_message = ""
        self._sync_retcode: str | None = None
        self._contacts_dirty = False
        self._data_dirty = False  # contacts (or more) changed: save everything
        self._sync_dirty = False  # only the sync position moved: save the progress
        self._last_save = 0.0
        self._final_data: dict[str, Any] | None = None
        self._deferred: list[IncomingMessage] = []

    # -- public API --------------------------------------------------------------------

    @property
    def self_user_name(self) -> str | None:
        return self._core.storageClass.userName

    @property
    def nickname(self) -> str | None:
        return self._core.storageClass.nickName

    @property
    def online(self) -> bool:
        return self._phase is Phase.ONLINE

    @property
    def phase(self) -> Phase:
        return self._phase

    def run(self, events: DriverEvents, resume: dict[str, Any] | None,
            qr_deadline: float) -> LoginState:
        """See :meth:`replybot.driver.Driver.run`."""
        self._begin(events, resume)
        with holding(_activity):
            try:
                final = self._log_in(resume, qr_deadline)
                if final is not None:
                    return final
                try:
                    return self._receive()
                except _Stopped:
                    return self._stopped()
                except Exception:
                    return self._failed()
            finally:
                self._finish()

    # The parts of run() that the async driver (replybot.webwx.aio) reuses.

    def _begin(self, events: DriverEvents, resume: dict[str, Any] | None) -> None:
        """The one start of a run, on the thread that logs in."""
        with self._lock:
            if self._phase is not Phase.IDLE:
                raise RuntimeError("an ItchatDriver runs once; make a new one")
            self._run_ident = threading.get_ident()
            self._enter(Phase.RESUMING if resume is not None else Phase.FETCHING_QR)
        self._events = events

    def _log_in(self, resume: dict[str, Any] | None, qr_deadline: float) -> LoginState | None:
        """Resume or log in, BLOCKING, on the run thread (holding an activity token).
        None once online (ONLINE reported, the login data saved), else the final state."""
        try:
            resumed = ""
            if resume is not None:
                if self._resume_session(resume):
                    resumed = "hot"
                else:
                    self._seed_push_cookies(resume)
            if not resumed:
                outcome = self._login(qr_deadline)
                if isinstance(outcome, LoginState):
                    return outcome
                self._went_online(outcome)
            return None
        except _Stopped:
            return self._stopped()
        except Exception:
            return self._failed()

    def _failed(self) -> LoginState:
        # A worker outlives its sessions: an unexpected failure (a protocol change at
        # WeChat, a bug) ends this session with a reason, not the thread.
        logger.exception("%s: the session failed", self._label())
        if self._stop_noticed():
            return self._stopped()
        return self._end(LoginState.LOGGED_OUT, {"reason": "error"})

    def send_text(self, to_user: str, text: str) -> bool:
        """See :meth:`replybot.driver.Driver.send_text`."""
        # send_msg sends to the owner when the target is empty: never let that happen.
        if not to_user or not text or self._phase is not Phase.ONLINE or self._stop_asked():
            return False
        with self._send_lock:
            try:
                answer = self._core.send_msg(text, to_user)
            except requests.RequestException as exc:
                logger.warning("%s: send failed: %s", self._label(), exc)
                return False
        return self._sent(answer)

    def _sent(self, answer: Any) -> bool:
        """Whether WeChat took a send (itchat's ``ReturnValue``); a refusal is logged, and
        one that says WeChat restricts sending (1204/1205) becomes a notice."""
        if not answer:
            ret = answer["BaseResponse"].get("Ret")
            logger.info("%s: WeChat refused a send: ret %s", self._label(), ret)
            if ret in SEND_RESTRICTED_RETS:
                self._notice("restricted", {"ret": ret, "source": "send"})
        return bool(answer)

    def logout(self) -> None:
        """See :meth:`replybot.driver.Driver.logout`."""
        self._ask(Phase.LOGGING_OUT)

    def stop(self) -> None:
        """See :meth:`replybot.driver.Driver.stop`."""
        self._ask(Phase.STOPPING)

    def _ask(self, phase: Phase) -> None:
        """Any thread: ask the session to stop (STOPPING) or log out (LOGGING_OUT, which
        wins over a stop asked before it); cut its long-poll short, wake its sleep."""
        with self._lock:
            if self._phase is Phase.ENDED:
                return
            if self._requested is not Phase.LOGGING_OUT:
                self._requested = phase
        self._poll.cut()
        self._wake.set()

    def contact(self, user_name: str) -> Contact | None:
        """See :meth:`replybot.driver.Driver.contact`."""
        return contacts.find(self._core, user_name)

    # -- login -------------------------------------------------------------------------

    def _login(self, deadline: float) -> LoginState | str:
        """QR or push login until confirmed ("qr"/"push") or a final state.  The async
        driver runs the same steps (:meth:`_login_round`, :meth:`_logged_in_page`,
        :meth:`_refused`, :meth:`_load_account`), its waits on the event loop."""
        self._login_begin(deadline)
        while True:
            step = self._login_round(deadline)
            if isinstance(step, LoginState):
                return step
            if step is None:
                self._sleep(1.0)  # no QR this time: try again
                continue
            uuid, via = step
            try:
                status = self._await_confirm(uuid, deadline, scanned=via == "push")
            except KeyError as exc:
                return self._refused(exc)
            if status == "200":
                return self._load_account(via)
            # "400": the QR (or push prompt) expired at WeChat: show a new QR.

    def _login_begin(self, deadline: float) -> None:
        self._core.isLogging = True
        self._login_deadline = deadline
        self._login_unreachable = False
        self._push_tried = False

    def _login_round(self, deadline: float) -> LoginState | tuple[str, str] | None:
        """One round's short blocking steps: a push login (once), else a new QR.  The
        uuid to poll and how it came ("push"/"qr"); None when no QR came (try again
        after a second); EXPIRED at the deadline."""
        core = self._core
        self._check_stop()
        if self._now() >= deadline:
            return self._end(LoginState.EXPIRED, {})
        self._enter(Phase.FETCHING_QR)
        uuid = None
        if not self._push_tried and "wxuin" in core.s.cookies.get_dict():
            self._push_tried = True  # once: itchat would push again after every expiry
            try:
                uuid = push_login(core)
            except (requests.RequestException, ValueError) as exc:
                self._check_stop()
                logger.info("%s: push login failed: %s", self._label(), exc)
            if uuid:
                self._enter(Phase.AWAITING_CONFIRM)  # the phone shows 登录 at once
                self._state(LoginState.SCANNED, {"push": True, "uuid": uuid})
                return str(uuid), "push"
        uuid = self._new_qr()
        return (uuid, "qr") if uuid else None

    def _refused(self, exc: KeyError) -> LoginState:
        """The login poll's 200 led to a refusing login page (see the module notes)."""
        if exc.args != ("wxsid",):
            raise exc
        # The login page answered an error (1203: this account may not use web WeChat)
        # and set no cookie; itchat fails reading the wxsid cookie.
        self._core.isLogging = False
        return self._end(LoginState.REFUSED, {
            "ret": self._login_page_ret or "",
            "wechat_message": self._login_page_message})

    def _logged_in_page(self, answer: str) -> str:
        """check_login's own handling of a window.code=200 answer (``itchat/components/
        login.py``): process_login_info fetches the login page; "200", or "400" when it
        gives up.  KeyError('wxsid') when the page refused the login."""
        return "200" if process_login_info(self._core, answer) else "400"

    def _load_account(self, via: str) -> LoginState | str:
        """Confirmed: webwxinit and the contacts; ``via`` once loaded, else the end."""
        core = self._core
        self._enter(Phase.LOADING)
        core.isLogging = False
        self._login_deadline = None
        try:
            core.web_init()
            core.show_mobile_login()
            core.get_contact(True)
        except (requests.RequestException, ValueError, KeyError) as exc:
            self._check_stop()
            logger.warning("%s: loading the account failed: %s", self._label(), exc)
            return self._end(LoginState.LOGGED_OUT, {"reason": "error"})
        return via

    def _new_qr(self) -> str | None:
        core = self._core
        try:
            uuid = core.get_QRuuid()
        except (requests.RequestException, ValueError) as exc:
            self._check_stop()
            logger.info("%s: could not get a QR uuid: %s", self._label(), exc)
            if isinstance(exc, requests.ConnectionError) and not self._login_unreachable:
                # Said at once (the QR page and 状态 show it), not after the whole QR
                # lifetime; the loop keeps trying until the deadline.
                self._login_unreachable = True
                self._state(LoginState.REQUESTED, {"reason": "unreachable"})
            return None
        self._login_unreachable = False
        if not uuid:
            return None
        # qrCallback is what keeps get_QR from writing QR.png into the working directory.
        core.get_QR(uuid=uuid, qrCallback=self._qr_callback)
        self._enter(Phase.AWAITING_SCAN)
        self._state(LoginState.WAITING_SCAN, {"uuid": uuid})
        return str(uuid)

    def _qr_callback(self, uuid: str, status: str, qrcode: bytes) -> None:
        if status == "0" and qrcode and self._events is not None:
            try:
                self._events.on_qr(qrcode)
            except Exception:
                logger.exception("%s: on_qr failed", self._label())

    def _await_confirm(self, uuid: str, deadline: float, *, scanned: bool) -> str:
        """Poll until "200" (logged in) or "400" (expired at WeChat); EXPIRED by deadline
        is reported by the caller's loop."""
        core = self._core
        while True:
            self._check_stop()
            if self._now() >= deadline:
                return "400"
            try:
                status = core.check_login(uuid)
            except requests.Timeout:
                continue  # our own timeout at the deadline, or a stop: checked above
            except requests.RequestException as exc:
                self._check_stop()
                logger.info("%s: login poll failed: %s", self._label(), exc)
                self._sleep(1.0)
                continue
            if status == "200":
                return status
            if status == "201":
                if not scanned:
                    scanned = True
                    self._enter(Phase.AWAITING_CONFIRM)
                    self._state(LoginState.SCANNED, {"uuid": uuid})
                    # Polling again at once would find the QR gone (module notes).
                    self._sleep(max(0.0, min(library.scan_wait(), deadline - self._now())))
                continue
            if status == "408":
                continue
            return "400"

    # -- resume ------------------------------------------------------------------------

    def _resume_session(self, data: dict[str, Any]) -> bool:
        """Continue a saved web session without the owner (itchat's hot reload, from our
        own data).  False when WeChat no longer knows it."""
        core = self._core
        try:
            if data.get("v") != RESUME_VERSION or data.get("driver") != "itchat":
                return False
            info = copy.deepcopy(dict(data["login_info"]))
            me = dict(data["self"])
            if not (info.get("url") and info.get("wxsid") and info.get("SyncKey")
                    and me.get("UserName")):
                return False
            cookies = list(data.get("cookies") or [])
            saved_contacts = data.get("contacts") or {}
        except (KeyError, TypeError, ValueError):
            logger.info("%s: resume data unusable", self._label())
            return False
        user = templates.User(itchat.utils.struct_friend_info(me))
        user.core = core
        info["User"] = user
        core.loginInfo = info
        self._restore_cookies(cookies, None)
        contacts.load(core, me, saved_contacts)
        try:
            produced, mods = core.get_msg()
        except (requests.RequestException, ValueError, KeyError) as exc:
            self._check_stop()
            logger.info("%s: resuming failed: %s", self._label(), exc)
            produced = mods = None
        if produced is None and mods is None:
            core.loginInfo = {}
            core.s.cookies.clear()
            core.storageClass.loads({})
            return False
        self._went_online("hot")
        if mods:
            # As itchat's load_login_status does with the first sync's answer.
            for item in mods:
                if "@@" in item["UserName"]:
                    update_local_chatrooms(core, [item])
                else:
                    update_local_friends(core, [item])
            self._contacts_dirty = True
        for message in produce_msg(core, produced or []):
            self._deliver(message)
        self._flush_deferred()
        return True

    def _seed_push_cookies(self, data: dict[str, Any]) -> None:
        """Keep only what push login needs, as itchat's own hot reload does on failure."""
        try:
            cookies = list(data.get("cookies") or [])
        except TypeError:
            return
        self._core.s.cookies.clear()
        self._restore_cookies(cookies, _PUSH_COOKIES)

    def _restore_cookies(self, cookies: list[Any], only: frozenset[str] | None) -> None:
        jar = self._core.s.cookies
        for item in cookies:
            try:
                name, value = str(item["name"]), str(item["value"])
                if only is None or name in only:
                    jar.set(name, value, domain=str(item.get("domain") or ""),
                            path=str(item.get("path") or "/"))
            except (KeyError, TypeError):
                continue

    def _snapshot(self) -> dict[str, Any]:
        """The resumable state as JSON-able data (what ``run(resume=…)`` takes)."""
        core = self._core
        info = core.loginInfo
        user = info.get("User") or {}
        saved_contacts = contacts.dump(core)
        me = core.storageClass.userName
        return {
            "v": RESUME_VERSION, "driver": "itchat",
            "login_info": copy.deepcopy({k: info[k] for k in _RESUME_LOGIN_KEYS if k in info}),
            "cookies": [{"name": c.name, "value": c.value, "domain": c.domain,
                         "path": c.path} for c in core.s.cookies],
            "self": {"UserName": me, "NickName": core.storageClass.nickName or "",
                     "Uin": user.get("Uin", 0), "VerifyFlag": 0},
            "contacts": saved_contacts,
            "saved_at": self._now(),
        }

    def _progress(self) -> dict[str, Any]:
        """Only what moves with every message round: the sync position.  Marked
        ``partial``: it is laid over the last full state (``store.bots.merge_login_data``),
        never resumed from alone."""
        info = self._core.loginInfo
        return {"v": RESUME_VERSION, "driver": "itchat", "partial": True,
                "login_info": copy.deepcopy({k: info[k] for k in ("SyncKey", "synckey")
                                             if k in info}),
                "saved_at": self._now()}

    # -- online ------------------------------------------------------------------------

    def _went_online(self, resumed: str) -> None:
        contacts.trim(self._core)
        self._enter(Phase.ONLINE)
        self._state(LoginState.ONLINE, {"nickname": self.nickname or "",
                                        "user_name": self.self_user_name or "",
                                        "resumed": resumed})
        self._save(self._snapshot())

    def _receive(self) -> LoginState:
        core = self._core
        loop = core.start_receiving(exitCallback=self._on_exit, getReceivingFnOnly=True)
        self._check_stop()
        loop()
        return self._received()

    def _received(self) -> LoginState:
        """After the receiving loop: the final state, from what ended it."""
        if self._phase is Phase.ONLINE:
            self._enter(Phase.ENDING)
        self._flush_deferred()  # fetched from WeChat already: never drop them
        if self._stop_noticed():
            return self._stopped()
        if self._sync_retcode in CLOSED_RETCODES:
            return self._end(LoginState.CLOSED, {"reason": self._sync_retcode})
        if self._deaf:
            return self._end(LoginState.LOGGED_OUT, {"reason": "error"})  # resumed
        return self._end(LoginState.LOGGED_OUT, {"reason": self._sync_retcode or "error"})

    def _on_exit(self) -> None:
        # itchat's exitCallback: runs at the end of the receiving loop, on our thread.
        logger.info("%s: receiving ended (retcode %s)", self._label(), self._sync_retcode)

    def _deliver(self, message: dict[str, Any]) -> None:
        try:
            if message.get("Type") == "System":  # itchat's own, after a contact merge
                if messages.changes_contacts(message):
                    self._contacts_dirty = True
                return
            restriction = messages.restriction(message)
            if restriction:
                self._notice("restricted", {"text": restriction, "source": "notice"})
            if not messages.is_text(message):
                return  # images, voice, links, recalls, system notices …: never answered
            incoming = messages.incoming(message, self_user_name=self.self_user_name,
                                         nickname=self.nickname or "")
            if incoming.chat_kind == "stranger":
                # itchat produces a round's messages before it merges the round's
                # ModContactList, so a new friend's first message looks like a
                # stranger's: decide after the round (before the next synccheck).
                self._deferred.append(incoming)
            else:
                self._emit_message(incoming)
        except Exception:
            # Never let one message end itchat's loop (it counts exceptions as failures).
            logger.exception("%s: handling a message failed", self._label())
        finally:
            # itchat's loop keeps its last batch in a local until the next round, and a
            # group message carries a deep copy of the whole group with its members.
            message.clear()

    def _emit_message(self, incoming: IncomingMessage) -> None:
        if self._events is not None:
            try:
                self._events.on_message(incoming)
            except Exception:
                logger.exception("%s: on_message failed", self._label())

    def _flush_deferred(self) -> None:
        deferred, self._deferred = self._deferred, []
        for incoming in deferred:
            kind = contacts.known_kind(self._core, incoming.chat)
            self._emit_message(dataclasses.replace(incoming, chat_kind=kind) if kind
                               else incoming)

    # -- hooks called by the transport (session thread unless stated) -----------------

    def _before_request(self, endpoint: str, timeout: Any, on_run_thread: bool) -> Any:
        if on_run_thread:
            if self._stop_asked() and self._phase is not Phase.LOGGING_OUT:
                self._notice_stop()
                raise requests.ReadTimeout("session stopped")
            if endpoint == "synccheck":
                self._between_rounds()
                self._pace_sync()
        if timeout is None:
            timeout = DEFAULT_TIMEOUT
        if endpoint == "login" and self._login_deadline is not None:
            # Answer EXPIRED at the deadline, not up to one held poll later.
            left = self._login_deadline - self._now()
            timeout = (DEFAULT_TIMEOUT[0], max(0.05, min(DEFAULT_TIMEOUT[1], left + 0.05)))
        return timeout

    def _after_response(self, endpoint: str, response: requests.Response,
                        on_run_thread: bool) -> None:
        if not on_run_thread:
            return
        if endpoint == "synccheck":
            self._synccheck_answer(response.status_code, response.text)
        elif endpoint == "webwxsync":
            self._sync_round(response.text)
        elif endpoint == "webwxbatchgetcontact":
            self._contacts_dirty = True  # group members were merged in
        elif endpoint == "webwxnewloginpage":
            text = response.text
            match = _LOGIN_PAGE_RET.search(text)
            self._login_page_ret = match.group(1) if match else None
            if match is None or match.group(1) != "0":
                found = _LOGIN_PAGE_MESSAGE.search(text)
                words = found.group(1) if found else _TAGS.sub(" ", text)
                self._login_page_message = " ".join(words.split())[:WECHAT_MESSAGE_MAX]

    def _synccheck_answer(self, status: int, text: str) -> None:
        """A synccheck answer: count failures and empty rounds, keep the retcode."""
        if status != 200:
            self._sync_errors += 1  # itchat raises on it and tries again
            logger.info("%s: synccheck answered HTTP %s (%d in a row)", self._label(),
                        status, self._sync_errors)
            return
        self._sync_errors = 0
        match = _SYNCCHECK.search(text)
        if match and match.group(2) == "0":
            self._empty_rounds = 0  # an idle round: nothing is spinning
        if match and match.group(1) == "0":
            self._sync_retcode = None
            if self._events is not None and self._empty_rounds <= SPIN_FREE_ROUNDS:
                try:
                    self._events.on_sync()
                except Exception:
                    logger.exception("%s: on_sync failed", self._label())
        elif match:
            self._sync_retcode = match.group(1)

    def _sync_round(self, text: str) -> None:
        """A webwxsync answer: the sync position moves on, unless WeChat refused it."""
        head = text[:400]
        ret = _SYNC_RET.search(head)
        if ret is not None and ret.group(1) != "0":
            self._bad_syncs += 1
            logger.info("%s: webwxsync answered Ret %s (%d in a row)", self._label(),
                        ret.group(1), self._bad_syncs)
            if self._bad_syncs >= DEAF_ROUNDS:
                logger.warning("%s: deaf: webwxsync keeps failing; ending the session to "
                               "resume it", self._label())
                self._deaf = True
                self._core.alive = False  # itchat's loop ends after this round
            return
        self._bad_syncs = 0
        self._sync_dirty = True  # the SyncKey moves on
        counts = dict(_SYNC_COUNTS.findall(text))
        if counts.get("AddMsgCount") == "0" and counts.get("ModContactCount") == "0":
            self._empty_rounds += 1
        else:
            self._empty_rounds = 0

    def _pace_sync(self) -> None:
        """Before a synccheck: back off after failed ones and while rounds spin empty."""
        pause = self._sync_pause()
        if pause:
            with released():
                self._wake.wait(pause)
            if self._stop_asked():  # as _before_request: itchat's loop ignores ReadTimeout
                self._notice_stop()
                raise requests.ReadTimeout("session stopped")

    def _sync_pause(self) -> float:
        """Seconds to wait before the next synccheck (0: none)."""
        if self._sync_errors:
            return min(SYNC_BACKOFF_MAX_S, 0.5 * 2 ** (self._sync_errors - 1))
        if self._empty_rounds > SPIN_FREE_ROUNDS:
            return min(self._spin_pause_max,
                       0.1 * 2 ** (self._empty_rounds - SPIN_FREE_ROUNDS - 1))
        return 0.0

    def _between_rounds(self) -> None:
        """Before each synccheck, i.e. after itchat finished with the previous answer."""
        if self._deferred:
            self._flush_deferred()
        if self._contacts_dirty:
            self._contacts_dirty = False
            contacts.trim(self._core)
            self._data_dirty = True
        if self._phase is Phase.ONLINE and \
                self._now() - self._last_save >= self._save_interval:
            if self._data_dirty:
                self._save(self._snapshot())
            elif self._sync_dirty:
                # Every message moves the sync position; saving 35 KB of contacts for
                # it would make each incoming message a large write (docs/PERFORMANCE.md).
                self._save(self._progress())

    # -- stopping ----------------------------------------------------------------------

    def _stop_asked(self) -> bool:
        """Any thread: stop() or logout() was called (the transport asks)."""
        return self._requested is not None

    def _stop_noticed(self) -> bool:
        return self._phase in (Phase.STOPPING, Phase.LOGGING_OUT)

    def _check_stop(self) -> None:
        if self._stop_asked():
            self._notice_stop()
            raise _Stopped

    def _notice_stop(self) -> None:
        """First sight of stop()/logout() on the session's thread, before itchat's own
        cleanup clears the cookies: log out at WeChat, or keep the resumable state."""
        if self._stop_noticed():
            return
        requested, was = self._requested, self._phase
        core = self._core
        if requested is Phase.LOGGING_OUT and core.loginInfo.get("wxsid"):
            self._enter(Phase.LOGGING_OUT)  # its webwxlogout passes _before_request
            try:
                core.alive = True  # itchat only sends webwxlogout while alive
                core.logout()
            except requests.RequestException as exc:
                logger.warning("%s: webwxlogout failed: %s", self._label(), exc)
            finally:
                self._enter(Phase.STOPPING)
        else:
            self._enter(Phase.STOPPING)
            if requested is not Phase.LOGGING_OUT and was is Phase.ONLINE:
                self._final_data = self._snapshot()
        core.alive = False
        core.isLogging = False

    def _stopped(self) -> LoginState:
        if self._requested is Phase.LOGGING_OUT:
            return self._end(LoginState.LOGGED_OUT, {"reason": "logout"})
        if self._final_data is not None:
            self._save(self._final_data)
        return LoginState.LOGGED_OUT

    def _finish(self) -> None:
        self._enter(Phase.ENDED)
        core = self._core
        core.alive = False
        core.isLogging = False
        core.s.close()

    # -- small helpers -----------------------------------------------------------------

    def _sleep(self, seconds: float) -> None:
        with released():
            self._wake.wait(seconds)
        self._check_stop()

    def _enter(self, phase: Phase) -> None:
        """The one way the phase changes (staying is no change): checked against
        :data:`TRANSITIONS`, logged."""
        with self._lock:
            old = self._phase
            if old is phase:
                return
            if phase not in TRANSITIONS[old]:
                raise ImpossibleTransition(
                    f"{self._label()}: no step from {old.value} to {phase.value}")
            self._phase = phase
        logger.debug("%s: phase %s -> %s", self._label(), old.value, phase.value)

    def _state(self, state: LoginState, detail: dict[str, Any]) -> None:
        logger.info("%s: %s %s", self._label(), state.value,
                    {k: v for k, v in detail.items() if k != "uuid"})
        if self._events is not None:
            try:
                self._events.on_state(state, detail)
            except Exception:
                logger.exception("%s: on_state failed", self._label())

    def _end(self, state: LoginState, detail: dict[str, Any]) -> LoginState:
        self._enter(Phase.ENDING)
        self._state(state, detail)
        return state

    def _save(self, data: dict[str, Any]) -> None:
        self._last_save = self._now()
        if not data.get("partial"):
            self._data_dirty = False
        self._sync_dirty = False
        if self._events is not None:
            try:
                self._events.on_login_data(data)
            except Exception:
                logger.exception("%s: on_login_data failed", self._label())

    def _notice(self, kind: str, detail: dict[str, Any]) -> None:
        """Tell the session something WeChat said about the account (any thread)."""
        logger.info("%s: notice %s %s", self._label(), kind, detail)
        on_notice = getattr(self._events, "on_notice", None)
        if on_notice is not None:
            try:
                on_notice(kind, detail)
            except Exception:
                logger.exception("%s: on_notice failed", self._label())

    def _label(self) -> str:
        return f"itchat[{self._name or hex(id(self))}]"

