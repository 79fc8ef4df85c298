"""The fake web WeChat's wire protocol and state.

It answers the endpoints itchat-uos 1.4.1 uses, with the formats its regexes expect
(``itchat/components/login.py``, ``contact.py``, ``messages.py``):

* ``GET /jslogin`` → ``window.QRLogin.code = 200; window.QRLogin.uuid = "…";``
* ``GET /cgi-bin/mmwebwx-bin/login?uuid=`` — the login long-poll.  It is *held* (up to
  :attr:`FakeWebWx.hold_login` seconds) like the real one and answers ``window.code=408;``
  when nothing happened, ``201`` once after a scan, ``200`` with ``window.redirect_uri``
  after the phone confirmed, ``400`` when the QR expired (or is unknown).
* the redirect URL (``webwxnewloginpage``) sets the ``wxsid``/``wxuin``/… cookies and
  answers ``<error><ret>0</ret>…``; for a refused account it answers ``<ret>1203</ret>``
  and sets no cookie, so itchat raises ``KeyError('wxsid')``.  The redirect stays on the
  fake's own ``http://127.0.0.1:<port>``: a URL containing ``qq.com`` would make itchat
  point its sync and file URLs at Tencent's hosts.
* ``webwxinit``, ``webwxstatusnotify``, ``webwxgetcontact`` (paged with ``Seq``),
  ``webwxbatchgetcontact`` (a group with its members: itchat's ``update_chatroom``
  fetches them when the group first speaks, see ``FakeAccount.group_dict``; the count
  served is in :meth:`FakeWebWx.sessions`), ``synccheck`` (held up to
  :attr:`FakeWebWx.hold_sync`; ``retcode:"1101"`` once the session ended), ``webwxsync``
  (queued ``AddMsgList``/``ModContactList`` and a new ``SyncKey``), ``webwxsendmsg``
  (recorded), ``webwxlogout``, ``webwxpushloginurl`` (push login for a known ``uin``).

Like the real service, a new web login of an account ends that account's previous web
session (its ``synccheck`` answers 1101), and ``webwxsync`` delivers a message again until
the client presents the ``SyncKey`` that followed it, so a client that resumes with an
older ``SyncKey`` sees some messages twice (dedup by ``MsgId``).

Many accounts can be logged in at once.  Accounts are generated: ``friends`` friends,
``groups`` groups of ``members`` members each, ``mps`` official accounts (``VerifyFlag``
8 or 24) and ``filehelper``.  Contact ``UserName``\\ s are derived from the account's uin
and an index (``@…`` and ``@@…`` as on the real service) instead of being stored, so an
account of 500 friends costs the fake almost nothing; they are stable across logins (the
real service hands out new ones for every web login).

The state and the hooks are :class:`FakeWebWx` (the hooks are listed in
:mod:`sandbox.webwx`); the Tornado handlers after it speak the wire protocol.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import dataclasses
import datetime
import html
import itertools
import json
import re
import secrets
import socket
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import urlencode

import tornado.iostream
import tornado.locks
import tornado.web
from tornado.httpserver import HTTPServer
from tornado.ioloop import IOLoop
from tornado.netutil import bind_sockets

from sandbox.webwx import accounts as webwx_accounts
from sandbox.webwx import messages as webwx_messages
from sandbox.webwx.accounts import FakeAccount

CGI = webwx_accounts.CGI
# What the real login page says when an account may not use web WeChat.
REFUSED_MESSAGE = ("为了你的帐号安全，此微信号不能登录网页微信。"
                   "你可以使用Windows微信或Mac微信在电脑端登录。")
SEND_FAILED_RET = 1205  # "操作太频繁" on the real service
# The login page's refusal variants (``refuse(uuid, variant)``).  "1203" as above;
# "env": the same code with the text owners have quoted for years, e.g.
# https://github.com/wechaty/wechaty/issues/603 and
# https://github.com/ehForwarderBot/ehForwarderBot/issues/74 (itchat's log of it);
# "html": an HTML page with no <ret> at all, as reported when the login host answers with
# a web page instead of the XML (any answer without the cookies fails the same way in
# itchat: KeyError('wxsid') in process_login_info).
ENV_REFUSED_MESSAGE = ("当前登录环境异常。为了你的帐号安全，暂时不能登录web微信。"
                       "你可以通过Windows微信、Mac微信或者手机客户端微信登录。")
HTML_REFUSED_PAGE = ("<!doctype html><html><head><title>微信网页版</title></head><body>"
                     "<p>为了你的帐号安全，请使用电脑版微信登录。</p></body></html>")
REFUSAL_VARIANTS = ("1203", "env", "html")
_FIRST_UIN = 2_100_000_001
_ALL_SYNC_KEYS = (1, 2, 3, 1000)



# -- login attempts and web sessions ---------------------------------------------------


@dataclasses.dataclass(eq=False)
class _Login:
    uuid: str
    push: bool
    expires_at: float
    created: float
    uin: int | None = None  # set by scan (QR) or by the push request
    # waiting → scanned → confirmed | refused; expired; done (login page fetched)
    state: str = "waiting"
    reported_scan: bool = False
    scan_reported_at: float = 0.0
    refusal: str = "1203"  # which refusal variant the login page answers
    ticket: str = ""
    cond: tornado.locks.Condition = dataclasses.field(default_factory=tornado.locks.Condition)


@dataclasses.dataclass(eq=False)
class _Session:
    sid: str
    uin: int
    skey: str
    pass_ticket: str
    created: float
    ended: str = ""  # retcode synccheck answers once the session is over
    synckey: int = 1
    queue: collections.deque[dict[str, Any]] = dataclasses.field(
        default_factory=collections.deque)
    mod_contacts: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    # Delivered but not yet acknowledged by a later SyncKey: (key, message).
    unacked: list[tuple[int, dict[str, Any]]] = dataclasses.field(default_factory=list)
    polling: int = 0
    last_poll: float = 0.0
    member_lists: int = 0  # groups served with their members (webwxbatchgetcontact)
    # Sync oddities (see FakeWebWx.spin / fail_synccheck / fail_webwxsync).
    spin_rounds: int = 0
    spin_selector: str = "2"
    synccheck_errors: list[int] = dataclasses.field(default_factory=list)
    sync_failures: list[int] = dataclasses.field(default_factory=list)
    cond: tornado.locks.Condition = dataclasses.field(default_factory=tornado.locks.Condition)

    @property
    def valid(self) -> bool:
        return not self.ended


@dataclasses.dataclass(frozen=True)
class SentText:
    """One ``webwxsendmsg`` the fake received (``ok`` False: it answered ``ret``)."""

    uin: int
    to_user: str
    text: str
    msg_type: int
    at: float
    ok: bool = True
    ret: int = 0


@dataclasses.dataclass(frozen=True)
class Logout:
    uin: int
    sid: str
    at: float


class FakeWebWx:
    """State and behaviour of the fake; :meth:`start` or :meth:`start_in_thread` serves it.

    ``hold_login``/``hold_sync``: how long the login and sync long-polls are held when
    nothing happens (the real service: about 25 s).  ``qr_ttl``/``push_ttl``: lifetime
    of a QR uuid / a push-login uuid.  ``contact_page``: ``webwxgetcontact`` page size.
    ``auto_confirm_push``: a push login is confirmed at once, as if the owner tapped
    "log in" on the phone.  ``echo_sent``: texts sent through ``webwxsendmsg`` come back
    through ``webwxsync`` as the owner's own messages.

    Today's service (each off by default, switched on with :meth:`set_options`):

    ``scan_wait`` (seconds): after a scan the phone keeps 确认 disabled for about 5 s, and
    a login poll that comes back inside that window finds the QR gone (answers 400): a
    client that re-polls at once loops into a new QR.  chatgpt-on-wechat's vendored
    itchat sleeps 7 s after the first 201 for this reason
    (https://github.com/zhayujie/chatgpt-on-wechat ``lib/itchat/components/login.py``,
    ``check_login`` loop: ``time.sleep(7)`` on status 201).

    ``close_after_login`` (seconds): since 2025-01 synccheck answers ``retcode:"1102"``
    a few seconds after many web logins complete, and the session is over
    (https://github.com/zhayujie/CowAgent/issues/2465, /2519 and /2460: "Login
    successfully … Unexpected sync check result: window.synccheck={retcode:"1102"…}").
    """

    # The options (see above), set through set_options() by __init__ and reset().
    hold_login: float
    hold_sync: float
    qr_ttl: float
    push_ttl: float
    contact_page: int
    auto_confirm_push: bool
    echo_sent: bool
    scan_wait: float
    close_after_login: float
    new_names_per_login: bool

    def __init__(self, *, hold_login: float = 25.0, hold_sync: float = 25.0,
                 qr_ttl: float = 300.0, push_ttl: float = 60.0, contact_page: int = 200,
                 auto_confirm_push: bool = False, echo_sent: bool = False,
                 now: Callable[[], float] = time.time) -> None:
        self._defaults = dict(hold_login=hold_login, hold_sync=hold_sync, qr_ttl=qr_ttl,
                              push_ttl=push_ttl, contact_page=contact_page,
                              auto_confirm_push=auto_confirm_push, echo_sent=echo_sent,
                              scan_wait=0.0, close_after_login=0.0,
                              new_names_per_login=False)
        self._now = now
        self._lock = threading.RLock()
        self._loop: IOLoop | None = None
        self._server: HTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._closing = False
        self.port: int | None = None
        # MsgIds of the real service have 19 digits (e.g. "6275297999442173836" in the
        # recall recorded in wechaty puppet-padpro's recalledPayloadParser).
        self._msg_ids = itertools.count(6_000_000_000_000_000_000 + int(self._now()) * 1000)
        self.reset()

    # -- configuration -----------------------------------------------------------------

    def reset(self) -> None:
        """Forget accounts, logins, sessions and records; restore the options.  Every
        held long-poll is answered (sessions end with 1101)."""
        with self._lock:
            old_sessions = list(getattr(self, "_sessions", {}).values())
            old_logins = list(getattr(self, "_logins", {}).values())
            for session in old_sessions:
                session.ended = session.ended or "1101"
            for login in old_logins:
                login.state = "expired"
            self.set_options(**self._defaults)
            self.accounts: dict[int, FakeAccount] = {}
            self._logins: dict[str, _Login] = {}
            self._tickets: dict[str, str] = {}
            self._sessions: dict[str, _Session] = {}
            self._current: dict[int, str] = {}  # uin -> sid of its live web session
            self._sent: list[SentText] = []
            self._failures: dict[int, list[int]] = {}
            self.logouts: list[Logout] = []
            # Headers of every login-page request, to check what the client sends.
            self.login_headers: list[dict[str, str]] = []
            self._uins = itertools.count(_FIRST_UIN)
        for waiter in [*old_sessions, *old_logins]:
            self._notify(waiter.cond)

    def set_options(self, **options: Any) -> None:
        """Change ``hold_login``, ``hold_sync``, ``qr_ttl``, ``push_ttl``,
        ``contact_page``, ``auto_confirm_push`` or ``echo_sent`` (see the class doc)."""
        types: dict[str, Callable[[Any], Any]] = {
            "hold_login": float, "hold_sync": float, "qr_ttl": float, "push_ttl": float,
            "contact_page": int, "auto_confirm_push": _truthy, "echo_sent": _truthy,
            "scan_wait": float, "close_after_login": float,
            "new_names_per_login": _truthy}
        with self._lock:
            for name, value in options.items():
                if name not in types:
                    raise ValueError(f"unknown option {name!r}")
                setattr(self, name, types[name](value))

    def add_account(self, nickname: str, *, uin: int | None = None, friends: int = 5,
                    groups: int = 2, members: int = 4, mps: int = 2,
                    refuse_web_login: bool = False, allow_push: bool = True,
                    group_display_name: str = "") -> FakeAccount:
        """Create an account (or return the existing one of that nickname unchanged)."""
        with self._lock:
            for account in self.accounts.values():
                if account.nickname == nickname:
                    return account
            if uin is None:
                uin = next(self._uins)
                while uin in self.accounts:
                    uin = next(self._uins)
            elif uin in self.accounts:
                raise ValueError(f"uin {uin} is taken")
            account = FakeAccount(uin, nickname, friends, groups, members, mps,
                                  refuse_web_login, allow_push, group_display_name)
            self.accounts[uin] = account
            return account

    def account(self, ref: FakeAccount | int | str) -> FakeAccount:
        """An account by object, uin (int or digits) or nickname."""
        with self._lock:
            if isinstance(ref, FakeAccount):
                return ref
            if isinstance(ref, int) or (isinstance(ref, str) and ref.isdigit()):
                found = self.accounts.get(int(ref))
                if found is None:
                    raise LookupError(f"no account with uin {ref}")
                return found
            for account in self.accounts.values():
                if account.nickname == ref:
                    return account
            raise LookupError(f"no account named {ref!r}")

    @property
    def base_url(self) -> str:
        """What ``WXR_WECHAT_LOGIN_BASE`` (itchat's ``config.BASE_URL``) must be."""
        if self.port is None:
            raise RuntimeError("the fake is not listening; call start() first")
        return f"http://127.0.0.1:{self.port}"

    # -- hooks: logins -----------------------------------------------------------------

    def pending_logins(self) -> list[dict[str, Any]]:
        """Login attempts still going on (QR or push), oldest first, with their state."""
        moment = self._now()
        out = []
        with self._lock:
            for login in self._logins.values():
                self._expire_if_due(login, moment)
                if login.state in ("waiting", "scanned", "confirmed", "refused"):
                    account = self.accounts.get(login.uin) if login.uin else None
                    out.append({
                        "uuid": login.uuid, "state": login.state, "push": login.push,
                        "uin": login.uin, "nickname": account.nickname if account else None,
                        "expires_in": round(login.expires_at - moment, 1)})
        return out

    def scan(self, uuid: str, account: FakeAccount | int | str) -> FakeAccount:
        """The phone of ``account`` scans the QR of ``uuid`` (an unknown nickname creates
        an account with default contacts, handy in a demo)."""
        with self._lock:
            try:
                acct = self.account(account)
            except LookupError:
                if isinstance(account, str) and not account.isdigit():
                    acct = self.add_account(account)
                else:
                    raise
            login = self._login(uuid)
            if login.push:
                raise ValueError("a push login is not scanned; confirm() it")
            if login.state != "waiting":
                raise ValueError(f"login {uuid} is {login.state}, not waiting for a scan")
            login.state, login.uin = "scanned", acct.uin
        self._notify(login.cond)
        return acct

    def confirm(self, uuid: str) -> None:
        """The phone taps "log in" (after a scan, or on a push-login prompt)."""
        self._decide(uuid, "confirmed")

    def refuse(self, uuid: str, variant: str = "1203") -> None:
        """Like :meth:`confirm`, but the login page then refuses and sets no cookie:
        ``variant`` "1203" (web login not allowed for this account), "env" (1203 with
        "当前登录环境异常…") or "html" (a web page with no ``<ret>``)."""
        if variant not in REFUSAL_VARIANTS:
            raise ValueError(f"unknown refusal variant {variant!r}")
        self._decide(uuid, "refused", refusal=variant)

    def expire(self, uuid: str) -> None:
        """The QR (or push prompt) expires now: its long-poll answers 400."""
        with self._lock:
            login = self._login(uuid)
            login.state = "expired"
        self._notify(login.cond)

    def _decide(self, uuid: str, state: str, refusal: str | None = None) -> None:
        with self._lock:
            login = self._login(uuid)
            self._expire_if_due(login, self._now())
            if login.state not in ("scanned", "waiting") or login.uin is None:
                raise ValueError(f"login {uuid} is {login.state}; scan it first")
            if refusal is not None:  # before the state: a poll may see it at once
                login.refusal = refusal
            login.state = state
            login.ticket = secrets.token_hex(16)
            self._tickets[login.ticket] = uuid
        self._notify(login.cond)

    def _login(self, uuid: str) -> _Login:
        login = self._logins.get(uuid)
        if login is None:
            raise LookupError(f"no login {uuid!r}")
        return login

    def _expire_if_due(self, login: _Login, moment: float) -> None:
        if login.state in ("waiting", "scanned") and moment >= login.expires_at:
            login.state = "expired"

    # -- hooks: sessions ---------------------------------------------------------------

    def sessions(self) -> list[dict[str, Any]]:
        """Live web sessions: uin, nickname, sid, how many sync polls are held, queue
        (``queued`` counts the delivered messages not yet acknowledged by a later
        SyncKey, ``undelivered`` not), and how many group member lists it fetched."""
        with self._lock:
            out = []
            for uin, sid in self._current.items():
                session = self._sessions[sid]
                out.append({"uin": uin, "nickname": self.accounts[uin].nickname,
                            "sid": sid, "polling": session.polling,
                            "last_poll": session.last_poll,
                            "queued": len(session.queue) + len(session.unacked),
                            "undelivered": len(session.queue),
                            "member_lists": session.member_lists})
            return out

    def session_valid(self, uin: FakeAccount | int | str) -> bool:
        """Whether the account has a live web session (not ended, kicked or logged out)."""
        with self._lock:
            return self._current.get(self.account(uin).uin) is not None

    def kick(self, uin: FakeAccount | int | str, retcode: str = "1101") -> None:
        """End the account's web session: its synccheck answers ``retcode`` (1101: logged
        in elsewhere, 1100: logged out from the phone) and webwxsync answers 1101."""
        with self._lock:
            acct = self.account(uin)
            sid = self._current.pop(acct.uin, None)
            if sid is None:
                raise LookupError(f"{acct.nickname!r} has no web session")
            session = self._sessions[sid]
            session.ended = str(retcode)
        self._notify(session.cond)

    def spin(self, uin: FakeAccount | int | str, rounds: int, selector: str = "2") -> None:
        """The next ``rounds`` synccheck answers say ``selector`` (2: new messages; 4, 6
        and 7 are seen too) at once, and webwxsync then has nothing: a client loops
        without ever receiving anything.  Reported since 2016 and still seen:
        https://github.com/Urinx/WeixinBot/issues/61 and /49 (selector 2 forever with an
        empty webwxsync), /22 and /111 (6 and 7), https://github.com/littlecodersh/ItChat/
        issues/117 (itchat polling every few seconds on selector 2)."""
        with self._lock:
            session = self._live_session(self.account(uin))
            session.spin_rounds, session.spin_selector = int(rounds), str(selector)
        self._notify(session.cond)

    def fail_synccheck(self, uin: FakeAccount | int | str, n: int = 1,
                       status: int = 503) -> None:
        """The next ``n`` synccheck requests answer HTTP ``status`` (the push host's
        passing 5xx; itchat's ``raise_for_status`` turns it into an error of its loop)."""
        with self._lock:
            session = self._live_session(self.account(uin))
            session.synccheck_errors.extend([int(status)] * n)
        self._notify(session.cond)

    def fail_webwxsync(self, uin: FakeAccount | int | str, n: int = 1, ret: int = -1) -> None:
        """The next ``n`` webwxsync answer ``BaseResponse.Ret = ret`` while synccheck
        keeps saying there is something (https://github.com/kitech/wxagent/issues/11:
        "websync -1 循环"); itchat's get_msg then returns nothing and loops."""
        with self._lock:
            session = self._live_session(self.account(uin))
            session.sync_failures.extend([int(ret)] * n)
            session.spin_rounds = max(session.spin_rounds, n)
        self._notify(session.cond)

    def fail_sends(self, uin: FakeAccount | int | str, n: int = 1,
                   ret: int = SEND_FAILED_RET) -> None:
        """The next ``n`` ``webwxsendmsg`` of this account answer ``Ret = ret``."""
        with self._lock:
            self._failures.setdefault(self.account(uin).uin, []).extend([int(ret)] * n)

    def sent(self, uin: FakeAccount | int | str | None = None, *,
             include_failed: bool = False) -> list[SentText]:
        """Texts sent through ``webwxsendmsg`` (of one account, or all), oldest first."""
        with self._lock:
            wanted = None if uin is None else self.account(uin).uin
            return [s for s in self._sent
                    if (wanted is None or s.uin == wanted) and (s.ok or include_failed)]

    # -- hooks: messages ---------------------------------------------------------------

    def push_friend_text(self, uin: FakeAccount | int | str, from_user: str | int,
                         text: str) -> dict[str, Any]:
        """A friend writes ``text`` to the account.  Returns the message as queued."""
        acct = self.account(uin)
        return self._push(acct, acct.resolve(from_user, "friend"), acct.user_name,
                          _content(text))

    def push_mp_text(self, uin: FakeAccount | int | str, mp: str | int,
                     text: str) -> dict[str, Any]:
        """An official account the owner follows sends ``text``."""
        acct = self.account(uin)
        return self._push(acct, acct.resolve(mp, "mp"), acct.user_name, _content(text))

    def push_group_text(self, uin: FakeAccount | int | str, group: str | int,
                        member: str | int, text: str, mention_self: bool = False,
                        ) -> dict[str, Any]:
        """A group member writes ``text`` in a group; with ``mention_self`` the text
        starts with ``@<the owner's name in the group>`` and U+2005, as real WeChat
        writes an @-mention."""
        acct = self.account(uin)
        room = acct.resolve(group, "group")
        decoded = acct._decode(room)
        g = decoded[1] if decoded else 0
        sender = acct.resolve_member(g, member)
        if mention_self:
            text = f"@{acct.display_in_groups}\u2005{text}"
        return self._push(acct, room, acct.user_name, f"{sender}:<br/>{_content(text)}")

    def push_self_text(self, uin: FakeAccount | int | str, to_user: str | int,
                       text: str) -> dict[str, Any]:
        """The owner types ``text`` on the phone to ``to_user`` (a friend, a group, or
        ``filehelper``): FromUserName is the account itself."""
        acct = self.account(uin)
        if isinstance(to_user, str) and (to_user == "filehelper" or to_user.startswith("@")):
            target = to_user
        else:
            target = acct.resolve(to_user, "friend")
        return self._push(acct, acct.user_name, target, _content(text))

    def push_text(self, uin: FakeAccount | int | str, from_user: str, to_user: str,
                  text: str) -> dict[str, Any]:
        """Any text message between two UserNames (as given, no resolution)."""
        return self._push(self.account(uin), from_user, to_user, _content(text))

    def push_message(self, uin: FakeAccount | int | str, kind: str,
                     from_user: str | int = 0) -> dict[str, Any]:
        """A message of ``kind`` (:data:`sandbox.webwx.messages.KINDS`: image, voice,
        video, emoticon, link, file, quote, system, too_often, restricted, recall,
        status, emoji_text) from friend ``from_user`` — or from ``weixin`` when
        ``from_user`` is "weixin"; ``status`` goes from the owner to that friend."""
        acct = self.account(uin)
        sender = "weixin" if from_user == "weixin" else acct.resolve(from_user, "friend")
        src, dst = (acct.user_name, sender) if kind == "status" else (sender, acct.user_name)
        with self._lock:
            session = self._live_session(acct)
            message = self._message(src, dst, "")
            message.update(webwx_messages.sample(kind, src, dst,
                                                 msg_id=int(message["MsgId"])))
            session.queue.append(message)
        self._notify(session.cond)
        return message

    def add_friend(self, uin: FakeAccount | int | str) -> str:
        """The account gains a friend (named like the others), announced to its web
        session through ``ModContactList``; returns the friend's UserName."""
        acct = self.account(uin)
        with self._lock:
            session = self._live_session(acct)
            acct.friends += 1
            friend = acct.friend_dict(acct.friends - 1)
            session.mod_contacts.append(friend)
        self._notify(session.cond)
        return str(friend["UserName"])

    def push_contact_change(self, uin: FakeAccount | int | str,
                            contact: dict[str, Any]) -> None:
        """Queue any ``ModContactList`` entry (a renamed friend, a new group …)."""
        acct = self.account(uin)
        with self._lock:
            session = self._live_session(acct)
            session.mod_contacts.append(contact)
        self._notify(session.cond)

    def _push(self, acct: FakeAccount, from_user: str, to_user: str,
              content: str) -> dict[str, Any]:
        with self._lock:
            session = self._live_session(acct)
            message = self._message(from_user, to_user, content)
            session.queue.append(message)
        self._notify(session.cond)
        return message

    def _live_session(self, acct: FakeAccount) -> _Session:
        sid = self._current.get(acct.uin)
        if sid is None:
            raise LookupError(f"{acct.nickname!r} is not logged in to web WeChat")
        return self._sessions[sid]

    def _message(self, from_user: str, to_user: str, content: str,
                 msg_type: int = 1) -> dict[str, Any]:
        msg_id = next(self._msg_ids)
        return {
            "MsgId": str(msg_id), "FromUserName": from_user, "ToUserName": to_user,
            "MsgType": msg_type, "Content": content, "Status": 3, "ImgStatus": 1,
            "CreateTime": int(self._now()), "VoiceLength": 0, "PlayLength": 0,
            "FileName": "", "FileSize": "", "MediaId": "", "Url": "", "AppMsgType": 0,
            "StatusNotifyCode": 0, "StatusNotifyUserName": "",
            "RecommendInfo": {"UserName": "", "NickName": "", "QQNum": 0, "Province": "",
                              "City": "", "Content": "", "Signature": "", "Alias": "",
                              "Scene": 0, "VerifyFlag": 0, "AttrStatus": 0, "Sex": 0,
                              "Ticket": "", "OpCode": 0},
            "ForwardFlag": 0, "AppInfo": {"AppID": "", "Type": 0}, "HasProductId": 0,
            "Ticket": "", "ImgHeight": 0, "ImgWidth": 0, "SubMsgType": 0,
            "NewMsgId": msg_id, "OriContent": "", "EncryFileName": "",
        }

    # -- serving -----------------------------------------------------------------------

    def app(self) -> tornado.web.Application:
        from sandbox.webwx import hooks as webwx_hooks  # it builds on this module

        routes: list[Any] = [
            (r"/jslogin", _JsLoginHandler, {"fake": self}),
            (rf"{CGI}/login", _LoginPollHandler, {"fake": self}),
            (rf"{CGI}/webwxnewloginpage", _LoginPageHandler, {"fake": self}),
            (rf"{CGI}/webwxpushloginurl", _PushLoginHandler, {"fake": self}),
            (rf"{CGI}/synccheck", _SyncCheckHandler, {"fake": self}),
            (rf"{CGI}/(webwxinit|webwxstatusnotify|webwxgetcontact|webwxbatchgetcontact|"
             r"webwxsync|webwxsendmsg|webwxlogout)", _ApiHandler, {"fake": self}),
            (r"/_fake/?", webwx_hooks.PageHandler, {"fake": self}),
            (r"/_fake/(\w+)", webwx_hooks.HookHandler, {"fake": self}),
        ]
        return tornado.web.Application(routes)

    async def start(self, port: int = 0, host: str = "127.0.0.1") -> str:
        """Listen (port 0: a free one) in the running event loop; returns base_url."""
        sockets = bind_sockets(port, host, family=socket.AF_INET)
        self.port = sockets[0].getsockname()[1]
        self._loop = IOLoop.current()
        self._closing = False
        self._server = HTTPServer(self.app())
        self._server.add_sockets(sockets)
        return self.base_url

    async def stop(self) -> None:
        """Answer every held long-poll, stop listening and drop connections."""
        if self._server is None:
            return
        self._closing = True
        with self._lock:
            waiters: list[_Session | _Login] = [*self._sessions.values(),
                                                *self._logins.values()]
        for waiter in waiters:
            waiter.cond.notify_all()
        self._server.stop()
        await asyncio.sleep(0)  # let woken handlers write their answers
        await self._server.close_all_connections()
        self._server = None
        self._loop = None

    def start_in_thread(self, port: int = 0, host: str = "127.0.0.1") -> str:
        """Serve from a thread with its own event loop (for blocking callers such as
        itchat and sync tests); returns base_url once it listens."""
        started = threading.Event()
        failure: list[BaseException] = []

        def serve() -> None:
            loop = asyncio.new_event_loop()
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(self.start(port, host))
            except BaseException as exc:  # reported to the caller below
                failure.append(exc)
                started.set()
                loop.close()
                return
            started.set()
            try:
                loop.run_forever()
            finally:
                loop.run_until_complete(self.stop())
                loop.run_until_complete(loop.shutdown_asyncgens())
                loop.close()

        self._thread = threading.Thread(target=serve, name="fake-webwx", daemon=True)
        self._thread.start()
        started.wait()
        if failure:
            raise failure[0]
        return self.base_url

    def stop_thread(self, timeout: float = 10.0) -> None:
        """Stop what :meth:`start_in_thread` started."""
        thread, loop = self._thread, self._loop
        if thread is None or loop is None:
            return
        loop.add_callback(lambda: asyncio.get_running_loop().stop())
        thread.join(timeout)
        self._thread = None

    def _notify(self, cond: tornado.locks.Condition) -> None:
        # Conditions belong to the serving loop; hooks may run on any thread.
        loop = self._loop
        if loop is not None:
            loop.add_callback(cond.notify_all)

    # -- protocol ----------------------------------------------------------------------

    def new_qr(self) -> str:
        moment = self._now()
        uuid = _new_uuid()
        with self._lock:
            self._logins[uuid] = _Login(uuid, False, moment + self.qr_ttl, moment)
        return uuid

    def push_request(self, uin: str) -> dict[str, Any]:
        with self._lock:
            acct = self.accounts.get(int(uin)) if uin.isdigit() else None
            if acct is None or not acct.allow_push:
                return {"ret": "1", "msg": "push login not allowed"}
            moment = self._now()
            login = _Login(_new_uuid(), True, moment + self.push_ttl, moment, acct.uin,
                           state="scanned", reported_scan=True)
            self._logins[login.uuid] = login
            if self.auto_confirm_push:
                login.state = "confirmed"
                login.ticket = secrets.token_hex(16)
                self._tickets[login.ticket] = login.uuid
            return {"ret": "0", "msg": "all ok", "uuid": login.uuid}

    def login_answer(self, uuid: str, host_url: str) -> str | None:
        """The login poll's answer now, or None to keep holding."""
        with self._lock:
            login = self._logins.get(uuid)
            if login is None:
                return "window.code=400;"
            self._expire_if_due(login, self._now())
            if login.state == "expired":
                return "window.code=400;"
            moment = self._now()
            if (self.scan_wait and login.scan_reported_at and not login.push
                    and moment - login.scan_reported_at < self.scan_wait
                    and login.state in ("scanned", "confirmed")):
                # Polled again inside the post-scan window: the QR is gone (see the
                # class doc, ``scan_wait``).
                login.state = "expired"
                return "window.code=400;"
            if login.state == "scanned" and not login.reported_scan:
                login.reported_scan = True
                login.scan_reported_at = moment
                return "window.code=201;window.userAvatar = 'data:img/jpg;base64,';"
            if login.state in ("confirmed", "refused", "done"):
                query = urlencode({"ticket": login.ticket, "uuid": login.uuid,
                                   "lang": "zh_CN", "scan": int(login.created)})
                return (f'window.code=200;\nwindow.redirect_uri="{host_url}{CGI}/'
                        f'webwxnewloginpage?{query}";')
            return None

    def login_expires_in(self, uuid: str) -> float:
        with self._lock:
            login = self._logins.get(uuid)
            return 0.0 if login is None else login.expires_at - self._now()

    def open_session(self, ticket: str) -> tuple[int | str, _Session | None]:
        """The login page: (ret, the new session) — ret 1203 when refused, or the
        refusal variant's name ("env", "html")."""
        with self._lock:
            uuid = self._tickets.pop(ticket, None)
            login = self._logins.get(uuid) if uuid else None
            if login is None or login.uin is None or login.state not in ("confirmed",
                                                                          "refused"):
                return 1, None
            acct = self.accounts[login.uin]
            refused = login.state == "refused" or acct.refuse_web_login
            variant = login.refusal
            login.state = "done"
            if refused:
                return (1203 if variant == "1203" else variant), None
            moment = self._now()
            if self.new_names_per_login:
                acct.epoch += 1  # every UserName of the account is new (see FakeAccount)
            session = _Session(sid=secrets.token_urlsafe(12)[:16], uin=acct.uin,
                               skey="@crypt_" + secrets.token_hex(16),
                               pass_ticket=secrets.token_urlsafe(24), created=moment,
                               synckey=int(moment) % 100_000 * 10)
            old_sid = self._current.get(acct.uin)
            old = self._sessions.get(old_sid) if old_sid else None
            if old is not None:
                old.ended = "1101"  # one web login per account: the new one wins
            self._sessions[session.sid] = session
            self._current[acct.uin] = session.sid
        if old is not None:
            self._notify(old.cond)
        return 0, session

    def find_session(self, sid: str | None, uin: str | int | None) -> _Session | None:
        """A session by Sid and Uin (BaseRequest, query or cookies), live or ended."""
        with self._lock:
            session = self._sessions.get(sid or "")
            if session is None or str(session.uin) != str(uin):
                return None
            return session

    def sync_answer(self, session: _Session | None, client_key: int) -> str | None:
        with self._lock:
            if (session is not None and session.valid and self.close_after_login
                    and self._now() - session.created >= self.close_after_login):
                # WeChat closes the fresh web session (see the class doc).
                session.ended = "1102"
                if self._current.get(session.uin) == session.sid:
                    del self._current[session.uin]
            if session is None or not session.valid:
                code = session.ended if session else "1101"
                return f'window.synccheck={{retcode:"{code}",selector:"0"}}'
            if session.spin_rounds > 0:
                session.spin_rounds -= 1
                return f'window.synccheck={{retcode:"0",selector:"{session.spin_selector}"}}'
            if session.queue or session.mod_contacts or any(
                    key > client_key for key, _ in session.unacked):
                return 'window.synccheck={retcode:"0",selector:"2"}'
            return None

    def sync(self, session: _Session, client_key: int) -> dict[str, Any]:
        with self._lock:
            if session.sync_failures:
                return {"BaseResponse": {"Ret": session.sync_failures.pop(0), "ErrMsg": ""},
                        "AddMsgCount": 0, "AddMsgList": [], "ModContactCount": 0,
                        "ModContactList": []}
            # A SyncKey at or after a delivery acknowledges it; older ones get it again.
            session.unacked = [(k, m) for k, m in session.unacked if k > client_key]
            mods, session.mod_contacts = session.mod_contacts, []
            if session.queue or mods:
                session.synckey += 1
                while session.queue:
                    session.unacked.append((session.synckey, session.queue.popleft()))
            messages = [m for _, m in session.unacked]
            return _ok({"AddMsgCount": len(messages), "AddMsgList": messages,
                        "ModContactCount": len(mods), "ModContactList": mods,
                        "DelContactCount": 0, "DelContactList": [],
                        "ModChatRoomMemberCount": 0, "ModChatRoomMemberList": [],
                        "Profile": {"BitFlag": 0}, "ContinueFlag": 0,
                        "SyncKey": _sync_key(session.synckey),
                        "SyncCheckKey": _sync_key(session.synckey), "SKey": session.skey})

    def send(self, session: _Session, msg: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            failures = self._failures.get(session.uin)
            ret = failures.pop(0) if failures else 0
            text = msg.get("Content")
            self._sent.append(SentText(session.uin, str(msg.get("ToUserName", "")),
                                       text if isinstance(text, str) else str(text),
                                       int(msg.get("Type", 1)), self._now(),
                                       ok=ret == 0, ret=ret))
            if ret:
                return {"BaseResponse": {"Ret": ret, "ErrMsg": ""}, "MsgID": "",
                        "LocalID": ""}
            msg_id = next(self._msg_ids)
            if self.echo_sent and session.valid:
                session.queue.append(self._message(
                    self.accounts[session.uin].user_name, str(msg.get("ToUserName", "")),
                    _content(str(text))))
        if self.echo_sent:
            self._notify(session.cond)
        return _ok({"MsgID": str(msg_id), "LocalID": str(msg.get("LocalID", ""))})

    def logout(self, session: _Session) -> None:
        with self._lock:
            self.logouts.append(Logout(session.uin, session.sid, self._now()))
            if session.valid:
                session.ended = "1101"
            if self._current.get(session.uin) == session.sid:
                del self._current[session.uin]
        self._notify(session.cond)

    def init_answer(self, session: _Session) -> dict[str, Any]:
        acct = self.accounts[session.uin]
        # Recent chats, as the real webwxinit lists them: filehelper, a few friends, a
        # group (without members: itchat clears them anyway).
        recent = [acct.filehelper_dict()]
        recent += [acct.friend_dict(i) for i in range(min(acct.friends, 3))]
        if acct.groups:
            recent.append(acct.group_dict(0, with_members=False))
        return _ok({"Count": len(recent), "ContactList": recent,
                    "SyncKey": _sync_key(session.synckey), "User": acct.self_dict(),
                    "ChatSet": ",".join(c["UserName"] for c in recent),
                    "SKey": session.skey, "ClientVersion": 0x2000000,
                    "SystemTime": int(self._now()), "GrayScale": 1,
                    "InviteStartCount": 40, "MPSubscribeMsgCount": 0,
                    "MPSubscribeMsgList": [], "ClickReportInterval": 600000})

    def contacts_page(self, session: _Session, seq: int) -> dict[str, Any]:
        acct = self.accounts[session.uin]
        total = acct.contact_count()
        start = max(seq, 0)
        end = min(start + max(self.contact_page, 1), total)
        members = [acct.contact_dict(i) for i in range(start, end)]
        return _ok({"MemberCount": len(members), "MemberList": members,
                    "Seq": end if end < total else 0})

    def batch_contacts(self, session: _Session, names: Iterable[str]) -> dict[str, Any]:
        acct = self.accounts[session.uin]
        found = [c for c in (acct.lookup_dict(n) for n in names) if c is not None]
        with self._lock:
            session.member_lists += sum(1 for c in found if c["MemberList"])
        return _ok({"Count": len(found), "ContactList": found})


def _ok(body: dict[str, Any]) -> dict[str, Any]:
    return {"BaseResponse": {"Ret": 0, "ErrMsg": ""}, **body}


def _sync_key(value: int) -> dict[str, Any]:
    keys = [{"Key": k, "Val": value} for k in _ALL_SYNC_KEYS]
    return {"Count": len(keys), "List": keys}


def _client_key_from_list(sync_key: Any) -> int:
    try:
        return int(next(item["Val"] for item in sync_key["List"] if item["Key"] == 1))
    except (KeyError, TypeError, ValueError, StopIteration):
        return 0


def _client_key_from_param(param: str) -> int:
    match = re.match(r"1_(\d+)", param or "")
    return int(match.group(1)) if match else 0


def _content(text: str) -> str:
    """Text as the service puts it in ``Content``: HTML-escaped, newlines as ``<br/>``
    (itchat's ``msg_formatter`` undoes both; without the Python 3.9+ ``unescape`` fix it
    raises instead)."""
    return html.escape(text, quote=False).replace("\n", "<br/>")


def _new_uuid() -> str:
    # Real uuids look like "4ZwrcOeoWQ==": URL-safe base64 of a few random bytes.
    return base64.urlsafe_b64encode(secrets.token_bytes(8)).decode()


def _truthy(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes", "on")
    return bool(value)


# -- handlers --------------------------------------------------------------------------


class _Base(tornado.web.RequestHandler):
    def initialize(self, fake: FakeWebWx) -> None:
        self.fake = fake
        self._gone = False
        self._waiting_on: tornado.locks.Condition | None = None

    def check_xsrf_cookie(self) -> None:
        """Machine-to-machine endpoints and a test page: no XSRF."""

    def on_connection_close(self) -> None:
        # The client gave up (itchat's timeout, or the driver stopping): stop holding.
        self._gone = True
        if self._waiting_on is not None:
            self._waiting_on.notify_all()

    def reply(self, text: str, content_type: str = "text/plain") -> None:
        if self._gone:
            return
        self.set_header("Content-Type", f"{content_type}; charset=UTF-8")
        try:
            self.finish(text)
        except tornado.iostream.StreamClosedError:
            self._gone = True

    def reply_json(self, data: Any) -> None:
        # The real service answers JSON as text/plain; clients must not depend on it.
        self.reply(json.dumps(data, ensure_ascii=False))

    async def hold(self, cond: tornado.locks.Condition, seconds: float) -> None:
        """Wait until ``cond`` is notified, ``seconds`` pass, or the client leaves."""
        if seconds <= 0 or self._gone or self.fake._closing:
            return
        self._waiting_on = cond
        try:
            await cond.wait(timeout=datetime.timedelta(seconds=seconds))
        finally:
            self._waiting_on = None

    def json_body(self) -> dict[str, Any]:
        try:
            data = json.loads(self.request.body.decode("utf-8") or "{}")
        except ValueError:
            raise tornado.web.HTTPError(400, "body is not JSON") from None
        if not isinstance(data, dict):
            raise tornado.web.HTTPError(400, "body is not a JSON object")
        return data

    def session_from_body(self, body: dict[str, Any]) -> _Session | None:
        base = body.get("BaseRequest") or {}
        if not isinstance(base, dict):
            return None
        return self.fake.find_session(base.get("Sid"), base.get("Uin"))

    def session_from_cookies(self) -> _Session | None:
        return self.fake.find_session(self.get_cookie("wxsid"), self.get_cookie("wxuin"))


class _JsLoginHandler(_Base):
    def get(self) -> None:
        uuid = self.fake.new_qr()
        self.reply(f'window.QRLogin.code = 200; window.QRLogin.uuid = "{uuid}";',
                   "application/javascript")


class _LoginPollHandler(_Base):
    async def get(self) -> None:
        fake = self.fake
        uuid = self.get_query_argument("uuid", "")
        host_url = f"{self.request.protocol}://{self.request.host}"
        deadline = time.monotonic() + fake.hold_login
        login = fake._logins.get(uuid)
        while True:
            answer = fake.login_answer(uuid, host_url)
            if answer is not None:
                self.reply(answer, "application/javascript")
                return
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self._gone or fake._closing or login is None:
                self.reply("window.code=408;", "application/javascript")
                return
            # Wake at the QR's expiry too, so that a held poll answers 400 on time.
            await self.hold(login.cond, min(remaining,
                                            max(fake.login_expires_in(uuid), 0.0) + 0.01))


class _LoginPageHandler(_Base):
    def get(self) -> None:
        with self.fake._lock:
            self.fake.login_headers.append(
                {k.lower(): v for k, v in self.request.headers.items()
                 if k.lower() in ("extspam", "client-version", "user-agent", "referer")})
        ret, session = self.fake.open_session(self.get_query_argument("ticket", ""))
        if ret == "html":
            self.reply(HTML_REFUSED_PAGE, "text/html")
            return
        if ret == "env":
            self.reply(f"<error><ret>1203</ret><message>{ENV_REFUSED_MESSAGE}</message>"
                       "</error>", "text/xml")
            return
        if session is None:
            message = REFUSED_MESSAGE if ret == 1203 else "登录失败"
            self.reply(f"<error><ret>{ret}</ret><message>{message}</message></error>",
                       "text/xml")
            return
        moment = int(time.time())
        cookies = {"wxuin": str(session.uin), "wxsid": session.sid,
                   "webwxuvid": secrets.token_hex(32),
                   "webwx_auth_ticket": secrets.token_urlsafe(32),
                   "wxloadtime": str(moment), "webwx_data_ticket": secrets.token_urlsafe(24),
                   "mm_lang": "zh_CN", "last_wxuin": str(session.uin)}
        for name, value in cookies.items():
            self.set_cookie(name, value, path="/")
        self.reply(f"<error><ret>0</ret><message></message><skey>{session.skey}</skey>"
                   f"<wxsid>{session.sid}</wxsid><wxuin>{session.uin}</wxuin>"
                   f"<pass_ticket>{session.pass_ticket}</pass_ticket>"
                   "<isgrayscale>1</isgrayscale></error>", "text/xml")


class _PushLoginHandler(_Base):
    def get(self) -> None:
        self.reply_json(self.fake.push_request(self.get_query_argument("uin", "")))


class _SyncCheckHandler(_Base):
    async def get(self) -> None:
        fake = self.fake
        session = fake.find_session(self.get_query_argument("sid", ""),
                                    self.get_query_argument("uin", ""))
        client_key = _client_key_from_param(self.get_query_argument("synckey", ""))
        deadline = time.monotonic() + fake.hold_sync
        if session is not None and session.synccheck_errors:
            with fake._lock:
                status = session.synccheck_errors.pop(0) if session.synccheck_errors else 0
            if status:
                self.set_status(status)
                self.reply("<html><body>Service Unavailable</body></html>", "text/html")
                return
        if session is not None:
            with fake._lock:
                session.polling += 1
                session.last_poll = fake._now()
        try:
            while True:
                answer = fake.sync_answer(session, client_key)
                if answer is not None:
                    break
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self._gone or fake._closing or session is None:
                    answer = 'window.synccheck={retcode:"0",selector:"0"}'
                    break
                await self.hold(session.cond, remaining)
        finally:
            if session is not None:
                with fake._lock:
                    session.polling -= 1
        self.reply(answer, "application/javascript")


class _ApiHandler(_Base):
    def get(self, name: str) -> None:
        fake = self.fake
        session = self.session_from_cookies()
        if name == "webwxlogout":
            if session is not None:
                fake.logout(session)
            self.reply("")
            return
        if name != "webwxgetcontact":
            raise tornado.web.HTTPError(405)
        if session is None or not session.valid:
            self.reply_json({"BaseResponse": {"Ret": 1101, "ErrMsg": ""}, "MemberCount": 0,
                             "MemberList": [], "Seq": 0})
            return
        try:
            seq = int(self.get_query_argument("seq", "0"))
        except ValueError:
            seq = 0
        self.reply_json(fake.contacts_page(session, seq))

    def post(self, name: str) -> None:
        fake = self.fake
        body = self.json_body()
        session = self.session_from_body(body)
        if session is None or not session.valid:
            self.reply_json({"BaseResponse": {"Ret": 1101, "ErrMsg": ""}})
            return
        if name == "webwxinit":
            self.reply_json(fake.init_answer(session))
        elif name == "webwxstatusnotify":
            self.reply_json(_ok({"MsgID": str(next(fake._msg_ids))}))
        elif name == "webwxbatchgetcontact":
            wanted = [str(item.get("UserName", "")) for item in body.get("List") or []
                      if isinstance(item, dict)]
            self.reply_json(fake.batch_contacts(session, wanted))
        elif name == "webwxsync":
            self.reply_json(fake.sync(session, _client_key_from_list(body.get("SyncKey"))))
        elif name == "webwxsendmsg":
            msg = body.get("Msg")
            if not isinstance(msg, dict):
                raise tornado.web.HTTPError(400, "no Msg")
            self.reply_json(fake.send(session, msg))
        else:
            raise tornado.web.HTTPError(405)
