"""Pending notices ride on the passive reply of the user's next push.

The edge calls :meth:`Postman.finish` instead of storing a push's reply itself when the
claim script found a mailbox for the user.  It reads the notices, puts as many as fit in
front of the answer (newest state first, each with its time; the rest summarised in one
line), and stores that text as the push's reply *in the same Redis step* that removes
the notices from the mailbox (:meth:`store.mailbox.Mailbox.take_into`).  So a crash
before that step leaves them for the next push, and a WeChat retry of this push gets the
stored reply, notices included, without taking anything again: each is shown once.

The answer itself is never cut: notices get what is left of the 2048 bytes.  A notice
that asks for a new scan (a resume that needs the owner) gets a fresh QR link at delivery
(:meth:`mpbot.context.BotControl.login`), not the one that expired while it waited.
Texts are :func:`mpbot.notifier.notice_text`, made at delivery.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from config.clock import wall_clock
from config.logs import mask
from config.metrics import PROCESS, Metrics
from mpbot import commands
from mpbot.commands import when
from mpbot.context import BotControl
from mpbot.notifier import notice_text
from mpbot.parse import NotACommand, ParseError, parse_command
from mpbot.protocol import MAX_REPLY_BYTES, Push, truncate_utf8
from store import Stores
from store.bots import ONLINE, SCANNED, LoginInProgress
from store.mailbox import EVENT_WINDOW_S, MESSAGE_WINDOW_S, Notice, seen_key

log = logging.getLogger("wxreply.mpbot")

HEADER = "【未读通知】"
DIVIDER = "————"
NOTICE_MAX_BYTES = 600
TAKE_ATTEMPTS = 3
KIND_NAMES = {"state": "登录状态", "send_failures": "发送失败", "loop_guard": "自动回复暂停"}
# Resumes that stopped because they need the owner's scan (or a tap on the phone).
_NEEDS_SCAN = frozenset({"waiting_scan", "scanned", "expired"})
_STILL_SCANNED = "scanned"


def _size(text: str) -> int:
    return len(text.encode())


def summary(notices: list[Notice]) -> str:
    counts: dict[str, int] = {}
    for notice in notices:
        name = KIND_NAMES.get(notice.kind, "其他")
        counts[name] = counts.get(name, 0) + 1
    parts = "、".join(f"{name} {n} 条" for name, n in counts.items())
    return f"另有 {len(notices)} 条较早的通知（{parts}）。"


def compose(answer: str, lines: list[tuple[Notice, str]],
            limit: int = MAX_REPLY_BYTES) -> tuple[str, bool]:
    """``answer`` with the rendered notices in front, as many as fit in ``limit`` bytes in
    the given order and a summary of the rest; and whether it carries them (else they
    stay for a later reply: not even the first fits next to this answer)."""
    tail = f"\n{DIVIDER}\n{answer}"
    for shown in range(len(lines), 0, -1):
        parts = [HEADER, *(text for _, text in lines[:shown])]
        rest = [notice for notice, _ in lines[shown:]]
        if rest:
            parts.append(summary(rest))
        text = "\n".join(parts) + tail
        if _size(text) <= limit:
            return text, True
    hint = f"\n（你有 {len(lines)} 条未读通知，发送「状态」查看）"
    if lines and _size(answer + hint) <= limit:
        return answer + hint, False
    return answer, False


def order(notices: list[Notice]) -> list[Notice]:
    """The state notice first (the newest state is what matters most), then the others,
    newest first."""
    return sorted(notices, key=lambda n: (n.slot != "state", -n.at))


class Postman:
    def __init__(self, stores: Stores, bot: BotControl | None, public_url: str, *,
                 now: Callable[[], float] = wall_clock, metrics: Metrics = PROCESS) -> None:
        self.stores = stores
        self.metrics = metrics
        self.bot = bot
        self.public_url = public_url.rstrip("/")
        self.now = now

    async def finish(self, push: Push, push_key: str, answer: str, ttl_ms: int,
                     prefix: bytes) -> str:
        """Store ``prefix + reply`` under ``push_key`` and return the reply: ``answer``
        with the user's pending notices, taken from the mailbox in the same step."""
        mailbox = self.stores.mailbox
        reply = answer
        if answer and push.event != "unsubscribe":
            fresh: dict[str, str | None] = {}
            for _ in range(TAKE_ATTEMPTS):
                notices = await mailbox.peek(push.from_user)
                if not notices:
                    break
                lines = await self._render(push, answer, order(notices), fresh)
                # Nothing left to show (all obsolete): they are taken all the same.
                text, carried = compose(answer, lines) if lines else (answer, True)
                if not carried:
                    reply = text  # with a hint that notices are waiting
                    break
                if await mailbox.take_into(push.from_user, push_key, prefix + text.encode(),
                                           ttl_ms, notices):
                    log.info("reply to %s carries %d notice(s)", mask(push.from_user),
                             len(lines))
                    self.metrics.notices.labels("reply", "carried").inc(len(lines))
                    return text
                # A notifier changed the mailbox meanwhile: read it again.
        await self.stores.kv.put(push_key, prefix + reply.encode(), ttl_ms)
        return reply

    async def _render(self, push: Push, answer: str, notices: list[Notice],
                      fresh: dict[str, str | None]) -> list[tuple[Notice, str]]:
        """Each notice's line; notices that no longer matter are left out (and still
        taken: they are done)."""
        now = self.now()
        lines = []
        for notice in notices:
            event = notice.event
            if (event.get("type") == "state" and event.get("origin") == "resume"
                    and event.get("state") in _NEEDS_SCAN):
                if "pid" not in fresh:
                    fresh["pid"] = await self._fresh_pid(push, answer)
                pid = fresh["pid"]
                if pid == "":
                    continue  # online again, or this very answer has the link
                if pid is None:
                    # No new link now: never show the old one, say it stopped instead.
                    event = {**event, "state": "expired"}
                elif pid != _STILL_SCANNED:
                    event = {**event, "state": "waiting_scan", "pid": pid}
            text = notice_text(event, self.public_url, self.now)
            if text is None:
                continue
            lines.append((notice, f"· {when(notice.at, now)}　"
                                  f"{truncate_utf8(text, NOTICE_MAX_BYTES)}"))
        return lines

    async def _fresh_pid(self, push: Push, answer: str) -> str | None:
        """A valid QR pid for the owner now (a new login if the old QR expired); "" if
        the notice no longer matters; None to show it without a link."""
        if self.bot is None or _is_logout(push):
            return None
        user = await self.stores.users.by_openid(push.from_user)
        if user is None:
            return None
        try:
            ticket = await self.bot.login(user)
        except LoginInProgress:
            return None
        if ticket.state == ONLINE or ticket.url in answer:
            return ""
        if ticket.state == SCANNED and not ticket.fresh:
            return _STILL_SCANNED  # the phone is still asking for the tap: say that
        return ticket.pid


def _is_logout(push: Push) -> bool:
    """退出: giving the owner a new QR link now would start the login they are ending."""
    if push.msg_type != "text":
        return False
    try:
        parsed = parse_command(push.content, commands.TABLE)
    except (NotACommand, ParseError):
        return False
    return parsed.command.handler is commands.logout


# Events after which WeChat lets the account send customer-service messages (the
# quota table in store.mailbox); other events (VIEW, LOCATION, unsubscribe…) open nothing.
_WINDOW_EVENTS = frozenset({"subscribe", "scan", "click", "scancode_push", "scancode_waitmsg"})


def contact_mark(push: Push, now: float) -> tuple[str, str, int] | None:
    """``(key, value, ttl_ms)`` recording this push as the user's last contact, for the
    edge's claim script to set on the push's first delivery; None if it opens no
    customer-service window."""
    if push.msg_type != "event":
        return seen_key(push.from_user, "m"), str(int(now)), MESSAGE_WINDOW_S * 1000
    if push.event in _WINDOW_EVENTS:
        return seen_key(push.from_user, "e"), str(int(now)), EVENT_WINDOW_S * 1000
    return None
