"""Whether an incoming message may be answered at all: pure rules, tested alone.

docs/BOT.md, 'What the bot answers': friends' text messages only; never to the owner,
official accounts or ``filehelper``; groups only when the owner is @-mentioned *and* the
owner enabled group replies; nothing while auto-reply is off.  Matching (which rule) and
pacing (when) come after this.
"""

from __future__ import annotations

import dataclasses

from replybot.driver import IncomingMessage


@dataclasses.dataclass(frozen=True, slots=True)
class Profile:
    """The owner's switches, as the session caches them (reloaded on change)."""

    autoreply: bool = True
    group_reply: bool = False


def skip_reason(msg: IncomingMessage, profile: Profile) -> str | None:
    """Why ``msg`` gets no auto-reply, or None if it may get one."""
    if msg.from_self:
        return "from_self"
    if msg.chat_kind in ("mp", "filehelper", "self", "stranger"):
        return msg.chat_kind
    if not msg.text.strip():
        return "empty"
    if not profile.autoreply:
        return "autoreply_off"
    if msg.is_group:
        if not profile.group_reply:
            return "group_replies_off"
        if not msg.mentioned:
            return "group_not_mentioned"
    elif msg.chat_kind != "friend":
        return msg.chat_kind
    return None
