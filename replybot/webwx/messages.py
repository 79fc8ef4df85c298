"""What a message produced by itchat (``produce_msg``) means for the session.

Pure functions of the message dict and the owner's names: which messages change the
contact lists, which carry WeChat's notice that it restricts the account, which are texts
to consider answering, and the :class:`~replybot.driver.IncomingMessage` such a text
becomes.  The driver calls them in that order (``ItchatDriver._deliver``).
"""

from __future__ import annotations

import re
from typing import Any

from replybot.driver import IncomingMessage
from replybot.webwx import contacts

__all__ = ["WECHAT_MESSAGE_MAX", "changes_contacts", "incoming", "is_text", "restriction",
           "strip_mention"]

WECHAT_MESSAGE_MAX = 300  # WeChat's own words are shown to the owner: keep them short
# WeChat's notices that it restricts the account (MsgType 10000 in a chat, or a message
# from its own ``weixin`` account): sandbox/webwx/messages.py has the sources.
_RESTRICTION = re.compile(r"过于频繁|操作频繁|被限制|限制(?:登录|发送|使用)|暂时无法(?:发送|使用)")


def changes_contacts(message: dict[str, Any]) -> bool:
    """For itchat's own "System" messages: a ModContactList was merged into the lists, or
    a status notification (51, sent whenever the owner opens a chat on the phone) filled
    in uins.  Only a change is worth a save."""
    return message.get("SystemInfo") != "uins" or bool(message.get("Text"))


def restriction(message: dict[str, Any]) -> str:
    """WeChat's words if ``message`` is its notice that it restricts the account, else "".

    Such notices are system notices in a chat (MsgType 10000, never answered) or texts
    from its ``weixin`` account (which go on as an mp's, see :func:`is_text`)."""
    if message.get("MsgType") != 10000 and message.get("FromUserName") != "weixin":
        return ""
    text = message.get("Content") or ""
    if isinstance(text, str) and _RESTRICTION.search(text):
        return text[:WECHAT_MESSAGE_MAX]
    return ""


def is_text(message: dict[str, Any]) -> bool:
    """A plain text (MsgType 1); images, voice, links, recalls, system notices …: never
    answered."""
    return message.get("Type") == "Text" and message.get("MsgType") == 1


def incoming(m: dict[str, Any], *, self_user_name: str | None,
             nickname: str) -> IncomingMessage:
    """The text message ``m`` as the session sees it (the owner's names given)."""
    me = self_user_name or ""
    src, dst = str(m.get("FromUserName", "")), str(m.get("ToUserName", ""))
    from_self = src == me
    is_group = src.startswith("@@") or dst.startswith("@@")
    text = str(m.get("Text") or "")
    mentioned = False
    if is_group:
        chat = src if src.startswith("@@") else dst
        sender = str(m.get("ActualUserName") or src)
        from_self = from_self or sender == me
        if not from_self:
            room = m.get("User") or {}
            own = (room.get("Self") or {}).get("DisplayName") or ""
            mentioned, text = strip_mention(text, [own, nickname])
            mentioned = mentioned or bool(m.get("IsAt"))
    else:
        chat = dst if from_self else src
        sender = src
    kind = contacts.chat_kind(chat, m.get("User"), self_user_name)
    return IncomingMessage(
        msg_id=str(m.get("MsgId", "")), chat=chat, sender=sender, text=text,
        is_group=is_group, mentioned=mentioned, from_self=from_self,
        chat_kind=kind, create_time=int(m.get("CreateTime") or 0),
        chat_key=contacts.contact_key(kind, m.get("User")))


def strip_mention(text: str, names: list[str]) -> tuple[bool, str]:
    """(whether ``text`` @-mentions one of ``names``, ``text`` without that mention).

    Real WeChat writes a mention as ``@name`` followed by U+2005 (four-per-em space), or
    by a plain space when typed by hand, or at the very end of the text."""
    for name in dict.fromkeys(n for n in names if n):
        flag = "@" + name
        for separator in ("\u2005", " "):
            if flag + separator in text:
                return True, text.replace(flag + separator, "").strip()
        if text.endswith(flag):
            return True, text[: -len(flag)].strip()
    return False, text
