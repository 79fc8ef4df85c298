"""The installed itchat: everything of it this package relies on, and its process settings.

The driver uses itchat-uos 1.4.1 unmodified, but it composes itchat's login steps itself,
replaces ``core.msgList``, reads and writes ``itchat.config`` and calls module functions
that are not itchat's documented API.  An itchat upgrade that moved any of them would
break sessions one by one (an ``AttributeError`` inside itchat's own loop is only
logged); :func:`check_itchat` looks for every one of them (:data:`NEEDS`) at start-up
instead, and names what is missing.  ``tests/replybot/test_itchat_check.py`` holds the
list to what the package's code actually touches.

This module imports nothing of itchat's submodules at import time, so that the check can
name a missing module instead of failing with an ``ImportError``.
"""

from __future__ import annotations

import importlib
import inspect
import logging
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import itchat
import itchat.config
import requests

__all__ = ["NEEDS", "POST_SCAN_WAIT_S", "ItchatUnsupported", "Need", "check_itchat",
           "configure_itchat", "scan_wait"]

# The wait after the first 201 of the login poll (see the driver's module notes);
# configure_itchat(scan_wait=…).
POST_SCAN_WAIT_S = 7.0
_scan_wait = POST_SCAN_WAIT_S
_library_extspam: str | None = None

_INSTALL = "install itchat-uos==1.4.1"


class ItchatUnsupported(RuntimeError):
    """The installed itchat cannot work here (see :func:`check_itchat`)."""


# -- what is needed --------------------------------------------------------------------


class Need:
    """One thing of itchat's the package relies on: where it is and what it must be.

    ``where``: a dotted path from the ``itchat`` package (``itchat.config.BASE_URL``), or
    from a fresh ``itchat.Core()`` (``Core.storageClass.updateLock``: instance attributes
    exist only once a Core is made).  ``what`` says it in the error message."""

    __slots__ = ("ok", "what", "where")

    def __init__(self, where: str, what: str, ok: Callable[[Any], bool]) -> None:
        self.where, self.what, self.ok = where, what, ok

    def __repr__(self) -> str:
        return f"Need({self.where!r})"


def _callable(*params: str) -> Callable[[Any], bool]:
    """A callable that takes these keyword parameters (the ones the driver passes)."""
    def ok(value: Any) -> bool:
        if not callable(value):
            return False
        if not params:
            return True
        try:
            names = inspect.signature(value).parameters
        except (TypeError, ValueError):
            return False
        return all(p in names for p in params)
    return ok


def _source_says(*fragments: str) -> Callable[[Any], bool]:
    """A function whose code still does what the driver counts on (it cannot be seen
    from outside: which exception itchat's loop ignores, where a refusal fails)."""
    def ok(value: Any) -> bool:
        try:
            source = inspect.getsource(value)
        except (OSError, TypeError):
            return False
        return all(f in source for f in fragments)
    return ok


def _text(value: Any) -> bool:
    return isinstance(value, str) and bool(value)


def _is(*types: type) -> Callable[[Any], bool]:
    return lambda value: isinstance(value, types)


def _present(value: Any) -> bool:
    return True


def _lock(value: Any) -> bool:
    return callable(getattr(value, "__enter__", None)) and callable(
        getattr(value, "__exit__", None))


def _unescapes(value: Any) -> bool:
    return callable(value) and value("&lt;a&gt; &amp;") == "<a> &"


_CLASS = _is(type)

NEEDS: tuple[Need, ...] = (
    # Plain itchat 1.3.x formats every incoming message with HTMLParser().unescape,
    # removed in Python 3.9: the AttributeError is caught and logged by its receiving
    # loop, so every message would be dropped without any visible failure.  itchat-uos
    # patches it.
    Need("itchat.utils.htmlParser.unescape", "a working unescape", _unescapes),
    # The UOS login headers web login needs today (configure_itchat may replace extspam).
    Need("itchat.config.UOS_PATCH_EXTSPAM", "the UOS login header", _text),
    Need("itchat.config.UOS_PATCH_CLIENT_VERSION", "the UOS login header", _text),
    Need("itchat.config.BASE_URL", "a str, read at every login request", _is(str)),
    Need("itchat.set_logging", "callable", _callable("showOnCmd", "loggingLevel")),
    Need("itchat.Core", "a class", _CLASS),
    # Module functions called directly (not methods of Core).
    Need("itchat.components.login.push_login", "callable", _callable()),
    Need("itchat.components.messages.produce_msg", "callable", _callable()),
    Need("itchat.components.contact.update_local_friends", "callable", _callable()),
    Need("itchat.components.contact.update_local_chatrooms", "callable", _callable()),
    Need("itchat.utils.struct_friend_info", "callable", _callable()),
    # The contact classes: made (resume, slimming) and told apart (mp, friend).
    Need("itchat.storage.templates.User", "a class", _CLASS),
    Need("itchat.storage.templates.Chatroom", "a class", _CLASS),
    Need("itchat.storage.templates.ChatroomMember", "a class", _CLASS),
    Need("itchat.storage.templates.MassivePlatform", "a class", _CLASS),
    # The login steps login() is made of, and the rest of Core's methods used.
    Need("Core.get_QRuuid", "callable", _callable()),
    Need("Core.get_QR", "callable with uuid, qrCallback", _callable("uuid", "qrCallback")),
    Need("Core.check_login", "callable", _callable()),
    Need("Core.web_init", "callable", _callable()),
    Need("Core.show_mobile_login", "callable", _callable()),
    Need("Core.get_contact", "callable with update", _callable("update")),
    Need("Core.start_receiving", "callable with exitCallback, getReceivingFnOnly",
         _callable("exitCallback", "getReceivingFnOnly")),
    Need("Core.get_msg", "callable", _callable()),
    Need("Core.send_msg", "callable with msg, toUserName", _callable("msg", "toUserName")),
    Need("Core.logout", "callable", _callable()),
    # What the driver's stop and delivery rest on inside itchat's receiving loop: it
    # ignores ReadTimeout (the transport's answer to a stop) and hands each message to
    # msgList.put (the driver's inbox).
    Need("Core.start_receiving",
         "a receiving loop that ignores ReadTimeout and calls msgList.put",
         _source_says("ReadTimeout", "msgList.put", "receivingRetryCount")),
    # A refused web login fails reading the wxsid cookie (KeyError('wxsid')).
    Need("Core.check_login", "a login that reads the wxsid cookie",
         _source_says("process_login_info")),
    Need("itchat.components.login.process_login_info",
         "a login that reads the wxsid cookie", _source_says('cookies["wxsid"]')),
    # Attributes of a Core: set (receivingRetryCount, msgList, loginInfo, alive,
    # isLogging), mounted on (s), read and rebuilt (the contact lists, storageClass).
    Need("Core.receivingRetryCount", "an int", _is(int)),
    Need("Core.msgList", "present", _present),
    Need("Core.s", "a requests.Session", _is(requests.Session)),
    Need("Core.loginInfo", "a dict", _is(dict)),
    Need("Core.memberList", "a list", _is(list)),
    Need("Core.mpList", "a list", _is(list)),
    Need("Core.chatroomList", "a list", _is(list)),
    Need("Core.alive", "a bool", _is(bool)),
    Need("Core.isLogging", "a bool", _is(bool)),
    Need("Core.storageClass", "present", _present),
    Need("Core.storageClass.updateLock", "a lock", _lock),
    Need("Core.storageClass.userName", "present", _present),
    Need("Core.storageClass.nickName", "present", _present),
    Need("Core.storageClass.loads", "callable", _callable()),
    # The async driver (aio.py) sends the receiving loop's requests itself, built as
    # these functions build them: they must still be what it copies.
    Need("itchat.config.USER_AGENT", "a str", _text),
    Need("itchat.returnvalues.ReturnValue", "a class", _CLASS),
    Need("itchat.components.login.sync_check", "the synccheck request aio.py copies",
         _source_says("'%s/synccheck'", "'synckey'", "'logintime'")),
    Need("itchat.components.login.get_msg", "the webwxsync request aio.py copies",
         _source_says("/webwxsync?sid=%s&skey=%s&pass_ticket=%s", "'SyncCheckKey'")),
    Need("itchat.components.login.check_login", "the login poll aio.py copies",
         _source_says("'%s/cgi-bin/mmwebwx-bin/login'",
                      "'loginicon=true&uuid=%s&tip=1&r=%s&_=%s'", "int(-localTime / 1579)",
                      "r'window.code=(\\d+)'", "process_login_info(self, r.text)")),
    Need("itchat.components.messages.send_raw_msg", "the send aio.py copies",
         _source_says("'%s/webwxsendmsg'", "'ClientMsgId'", "'Scene'")),
)

_MISSING = object()


def _find(where: str, core: Any) -> Any:
    """The object at ``where`` (see :class:`Need`), importing itchat's submodules on the
    way; ``_MISSING`` if there is none."""
    first, *rest = where.split(".")
    value: Any = core if first == "Core" else itchat
    for name in rest:
        found = getattr(value, name, _MISSING)
        if found is _MISSING and inspect.ismodule(value):
            try:
                found = importlib.import_module(f"{value.__name__}.{name}")
            except ImportError:
                return _MISSING
        if found is _MISSING:
            return _MISSING
        value = found
    return value


def _broken(need: Need, core: Any) -> bool:
    value = _find(need.where, core)
    if value is _MISSING:
        return True
    try:
        return not need.ok(value)
    except Exception:  # a changed function that fails when tried is just as broken
        return True


# -- the check and the settings ----------------------------------------------------------


def check_itchat() -> None:
    """Fail loudly, naming what is missing, unless the installed ``itchat`` has every
    thing in :data:`NEEDS` (itchat-uos 1.4.1 has)."""
    broken = [need for need in NEEDS
              if not need.where.startswith("Core.") and _broken(need, None)]
    unmade = ""  # why no Core can be made (itchat itself needs some of the above)
    try:
        core = itchat.Core()
    except Exception as exc:
        unmade = f"it cannot make a Core ({exc!r})"
    else:
        broken += [need for need in NEEDS
                   if need.where.startswith("Core.") and _broken(need, core)]
    if not broken:
        if unmade:
            raise ItchatUnsupported(f"the installed itchat: {unmade}; {_INSTALL}")
        return
    first = broken[0].where
    if first == "itchat.utils.htmlParser.unescape":
        raise ItchatUnsupported(
            "the installed itchat cannot unescape messages on this Python (no "
            "HTMLParser.unescape since 3.9): every incoming message would be dropped; "
            f"{_INSTALL} instead of itchat")
    if first == "itchat.config.UOS_PATCH_EXTSPAM":
        raise ItchatUnsupported(f"the installed itchat lacks the UOS login headers; "
                                f"{_INSTALL}")
    listed = "; ".join(f"{need.where} ({need.what})" for need in broken)
    also = f"; and {unmade}" if unmade else ""
    raise ItchatUnsupported(f"the installed itchat lacks {listed}{also}; {_INSTALL}")


def configure_itchat(login_base: str, *, scan_wait: float = POST_SCAN_WAIT_S,
                     extspam: str = "") -> None:
    """Aim itchat at ``login_base`` (``settings.wechat_login_base``) and check it.

    ``itchat.config.BASE_URL`` is a module global read at every login request, so this is
    per process: call it once at start, before any session (tests call it per fake).
    Also removes itchat's own stderr handler (added at import), so its log records go
    through the application's logging configuration only once.
    """
    check_itchat()
    base = login_base.rstrip("/")
    parts = urlsplit(base)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"not an http(s) URL: {login_base!r}")
    itchat.config.BASE_URL = base
    # A newer UOS header, through itchat's own config module (docs/BOT.md); the library's
    # value is remembered so that an empty setting restores it.
    global _library_extspam
    if _library_extspam is None:
        _library_extspam = str(itchat.config.UOS_PATCH_EXTSPAM)
    itchat.config.UOS_PATCH_EXTSPAM = extspam.strip() or _library_extspam
    global _scan_wait
    _scan_wait = max(0.0, float(scan_wait))
    itchat.set_logging(showOnCmd=False,
                       loggingLevel=logging.getLogger("itchat").level or logging.INFO)


def scan_wait() -> float:
    """Seconds to wait after the first 201 of a login poll (``configure_itchat``)."""
    return _scan_wait

