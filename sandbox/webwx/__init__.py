"""A fake web WeChat on 127.0.0.1 that the unmodified itchat library logs into.

The fake is split by concern, and everything is importable from here:

* :mod:`sandbox.webwx.protocol`: the wire protocol (the endpoints itchat uses, with the
  sources of each behaviour) and the state, :class:`FakeWebWx`;
* :mod:`sandbox.webwx.accounts`: accounts and their generated contacts;
* :mod:`sandbox.webwx.messages`: message samples beyond text;
* :mod:`sandbox.webwx.hooks`: the test hooks over HTTP and the demo page;
* :mod:`sandbox.webwx.cli`: the fake as a process of its own.

Test hooks, as methods (thread-safe: call them from any thread) and over HTTP as JSON
under ``/_fake/`` on the same port (bodies as JSON or form fields); ``account`` and
``uin`` arguments accept a uin or a nickname, user arguments a ``UserName``, an index or
a nickname:

=============================================  ============================================
``scan(uuid, account)``                         ``POST /_fake/scan {uuid, account}``
``confirm(uuid)``                               ``POST /_fake/confirm {uuid}``
``expire(uuid)``                                ``POST /_fake/expire {uuid}``
``refuse(uuid, variant="1203")`` (or "env",     ``POST /_fake/refuse {uuid, variant}``
"html": see ``REFUSAL_VARIANTS``)
``kick(uin, retcode="1101")``                   ``POST /_fake/kick {uin, retcode}``
``kick(uin, "1102")`` (WeChat closes it)         ``POST /_fake/kick {uin, retcode}``
``push_friend_text(uin, from_user, text)``      ``POST /_fake/push_friend {uin, from_user, text}``
``push_group_text(uin, group, member, text,     ``POST /_fake/push_group {uin, group, member,
mention_self=False)``                           text, mention_self}``
``push_self_text(uin, to_user, text)``          ``POST /_fake/push_self {uin, to_user, text}``
``push_mp_text(uin, mp, text)``                 ``POST /_fake/push_mp {uin, mp, text}``
``add_friend(uin)`` (via ``ModContactList``)    ``POST /_fake/add_friend {uin}``
``fail_sends(uin, n=1, ret=1205)``              ``POST /_fake/fail_sends {uin, n, ret}``
``sent(uin)``                                   ``GET /_fake/sent?uin=``
``pending_logins()``                            ``GET /_fake/logins``
``logouts``                                     ``GET /_fake/logouts``
``sessions()``                                  ``GET /_fake/sessions``
``add_account(nickname, …)``                    ``POST /_fake/accounts {nickname, friends, …}``
``set_options(auto_confirm_push=…, …)``         ``POST /_fake/options {…}``
``reset()``                                     ``POST /_fake/reset``
=============================================  ============================================

``GET /_fake/`` is a small HTML page with buttons (scan/confirm/refuse pending logins,
push a friend message, kick) for a human doing a demo.

Run it as its own process with ``python -m sandbox.webwx --port N [--hold-login S]
[--hold-sync S]``; it prints ``FAKE_WEBWX_BASE=http://127.0.0.1:N`` once it listens.
Point wxreply at it with ``WXR_WECHAT_LOGIN_BASE`` set to that URL.
"""

from sandbox.webwx.accounts import CGI, FakeAccount
from sandbox.webwx.messages import ACCOUNT_RESTRICTED, KINDS, SEND_TOO_OFTEN
from sandbox.webwx.protocol import (
    ENV_REFUSED_MESSAGE,
    HTML_REFUSED_PAGE,
    REFUSAL_VARIANTS,
    REFUSED_MESSAGE,
    SEND_FAILED_RET,
    FakeWebWx,
    Logout,
    SentText,
)

__all__ = [
    "ACCOUNT_RESTRICTED", "CGI", "ENV_REFUSED_MESSAGE", "HTML_REFUSED_PAGE", "KINDS",
    "REFUSAL_VARIANTS", "REFUSED_MESSAGE", "SEND_FAILED_RET", "SEND_TOO_OFTEN",
    "FakeAccount", "FakeWebWx", "Logout", "SentText",
]
