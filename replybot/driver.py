"""The driver interface: what a bot session needs from a personal-WeChat protocol.

Session logic (rules, pacing, loop guards, the bus) talks to a :class:`Driver` only, so
that another protocol can be added later without touching it, as wechaty's "puppets" do.
The itchat driver (:mod:`replybot.webwx.driver`) is the default.

Threading contract: :meth:`Driver.run` blocks on the session's own thread and calls every
:class:`DriverEvents` method from that thread; :meth:`Driver.send_text`,
:meth:`Driver.logout` and :meth:`Driver.stop` may be called from any thread.  Nothing here
may run on an asyncio event loop: protocol libraries block.

An :class:`AsyncDriver` is the other shape (:mod:`replybot.webwx.aio`): everything on the
worker's event loop, no thread of its own (docs/ARCHITECTURE.md, "The async bot
driver").  The session runs :meth:`AsyncDriver.arun` as a task and awaits
:meth:`AsyncDriver.asend_text`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from store.bots import LoginState  # the states drivers report are the stored ones

__all__ = ["AnyDriver", "AsyncDriver", "Contact", "Driver", "DriverEvents", "IncomingMessage",
           "LoginState"]


@dataclass(frozen=True, slots=True)
class IncomingMessage:
    """One text message seen by the logged-in account, trimmed to what replying needs.

    ``chat`` is the UserName of the conversation (the friend, or the group); ``sender``
    who wrote it (a member in a group, the owner when ``from_self``).  For groups,
    ``text`` has no ``@member:`` prefix and no @-mention of the owner (``mentioned`` says
    whether there was one).  ``from_self``: the owner wrote it on another device (or it is
    the echo of something the bot sent).  ``chat_kind`` is one of ``friend``, ``group``,
    ``mp`` (official and system accounts), ``filehelper``, ``self``, ``stranger``.
    """

    msg_id: str
    chat: str
    sender: str
    text: str
    is_group: bool
    mentioned: bool
    from_self: bool
    chat_kind: str
    create_time: int
    # What identifies the chat across web logins (UserNames do not): see
    # ItchatDriver's contact keys.  Empty: only ``chat`` is known.
    chat_key: str = ""

    @property
    def contact_key(self) -> str:
        """The key for per-contact state that must survive a re-login."""
        return self.chat_key or self.chat


@dataclass(frozen=True, slots=True)
class Contact:
    """A contact as the session needs it.  ``kind``: ``friend``, ``group`` or ``mp``.

    UserNames (``@…``) are only valid for one web login: a new login (QR or push) hands
    out new ones, so they must not be stored as durable keys.
    """

    user_name: str
    nick_name: str
    remark_name: str
    kind: str


class DriverEvents(Protocol):
    """What a driver reports; every call comes from the thread running :meth:`Driver.run`
    and must return quickly (hand work to a queue, do not block on I/O for long)."""

    def on_qr(self, png: bytes) -> None:
        """A new QR code to show (a fresh one after each expiry at WeChat's side)."""

    def on_state(self, state: LoginState, detail: dict[str, Any]) -> None:
        """A state change.  ``detail``: ``{"uuid"}`` on WAITING_SCAN and SCANNED;
        ``{"uuid", "push": True}`` on SCANNED for a push login (the owner confirms on
        the phone, no QR: there is no WAITING_SCAN before it);
        ``{"nickname", "user_name", "resumed"}`` on ONLINE; ``{"reason"}`` on LOGGED_OUT
        (``"1101"``/``"1100"`` from WeChat, ``"logout"``, ``"error"``); ``{"ret",
        "wechat_message"}`` on REFUSED (``"1203"`` or ``""`` when the login page had no
        code; the page's own words); ``{"reason": "1102"}`` on CLOSED (WeChat closed the
        web session by itself).  Not called when the session is stopped with ``stop()``."""

    def on_message(self, msg: IncomingMessage) -> None:
        """An incoming text message (any chat kind: filtering is the session's job)."""

    def on_login_data(self, data: dict[str, Any]) -> None:
        """The resumable login state changed; ``data`` is JSON-serialisable and is what
        ``run(resume=…)`` accepts later.  Throttled; always called when stopped online."""

    def on_sync(self) -> None:
        """A successful round with WeChat (synccheck answered); the watchdog's heartbeat."""

    def on_notice(self, kind: str, detail: dict[str, Any]) -> None:
        """Something WeChat said about the account.  ``kind`` "restricted": WeChat
        limits sending (``{"text", "source": "notice"}`` from a system notice, or
        ``{"ret", "source": "send"}`` from a refused send).  May come from any thread
        that called :meth:`Driver.send_text`."""


class Driver(Protocol):
    """One personal-account login.  Single use: one :meth:`run` per instance."""

    def run(self, events: DriverEvents, resume: dict[str, Any] | None,
            qr_deadline: float) -> LoginState:
        """Log in and receive until the session ends; BLOCKING, on the session's thread.

        With ``resume`` (data from ``on_login_data``), first try to continue that web
        session without any action from the owner, then a push login (confirm on the
        phone), then a fresh QR.  ``qr_deadline`` is a ``time.time()`` value after which a
        login not yet confirmed ends as EXPIRED.  Returns LOGGED_OUT, REFUSED, EXPIRED or
        CLOSED
        (LOGGED_OUT also after :meth:`stop`, without an ``on_state`` call)."""
        ...

    def send_text(self, to_user: str, text: str) -> bool:
        """Send a text; False if not online or WeChat refused it.  Thread-safe."""
        ...

    def logout(self) -> None:
        """Log out at WeChat and make :meth:`run` return LOGGED_OUT soon."""
        ...

    def stop(self) -> None:
        """Make :meth:`run` return promptly without logging out at WeChat, so that the
        login can be resumed (worker shutdown, hand-over to another worker)."""
        ...

    def contact(self, user_name: str) -> Contact | None:
        """A friend, group or official account of the logged-in account, if known."""
        ...

    @property
    def self_user_name(self) -> str | None:
        """The owner's UserName in this web login (None before login)."""
        ...

    @property
    def nickname(self) -> str | None:
        """The owner's nickname (None before login)."""
        ...


@runtime_checkable
class AsyncDriver(Protocol):
    """One personal-account login whose whole life is on the worker's event loop.

    Contract: :meth:`arun`, :meth:`asend_text` and every :class:`DriverEvents` call happen
    on the loop that runs :meth:`arun` (events must return quickly: they run on the
    loop).  Blocking protocol steps are the driver's business and go to bounded thread
    pools of its own, never to the loop and never one thread per session.
    :meth:`logout` and :meth:`stop` may be called from any thread.  Single use: one
    :meth:`arun` per instance.  States, resume data and events mean exactly what they
    mean for :class:`Driver`."""

    async def arun(self, events: DriverEvents, resume: dict[str, Any] | None,
                   qr_deadline: float) -> LoginState:
        """:meth:`Driver.run`, as a coroutine."""
        ...

    async def asend_text(self, to_user: str, text: str) -> bool:
        """:meth:`Driver.send_text`, as a coroutine (sends of one login go one at a
        time)."""
        ...

    def logout(self) -> None:
        """See :meth:`Driver.logout`."""
        ...

    def stop(self) -> None:
        """See :meth:`Driver.stop`: a waiting request is abandoned at once."""
        ...

    def contact(self, user_name: str) -> Contact | None:
        """See :meth:`Driver.contact`."""
        ...

    @property
    def self_user_name(self) -> str | None:
        ...

    @property
    def nickname(self) -> str | None:
        ...


AnyDriver = Driver | AsyncDriver
