import pytest

from replybot.driver import IncomingMessage
from replybot.replying import Profile, skip_reason


def msg(**kw: object) -> IncomingMessage:
    base = {"msg_id": "1", "chat": "@friend", "sender": "@friend", "text": "你好",
            "is_group": False, "mentioned": False, "from_self": False, "chat_kind": "friend",
            "create_time": 0}
    base.update(kw)
    return IncomingMessage(**base)  # type: ignore[arg-type]


ON = Profile(autoreply=True, group_reply=True)


def test_a_friend_may_be_answered() -> None:
    assert skip_reason(msg(), Profile()) is None


@pytest.mark.parametrize(
    ("message", "profile", "reason"),
    [
        (msg(from_self=True), ON, "from_self"),
        (msg(chat_kind="mp"), ON, "mp"),
        (msg(chat_kind="filehelper", chat="filehelper"), ON, "filehelper"),
        (msg(chat_kind="self"), ON, "self"),
        (msg(chat_kind="stranger"), ON, "stranger"),
        (msg(text="   "), ON, "empty"),
        (msg(), Profile(autoreply=False), "autoreply_off"),
        (msg(is_group=True, chat_kind="group", mentioned=True), Profile(), "group_replies_off"),
        (msg(is_group=True, chat_kind="group"), ON, "group_not_mentioned"),
    ],
)
def test_who_gets_no_reply(message: IncomingMessage, profile: Profile, reason: str) -> None:
    assert skip_reason(message, profile) == reason


def test_mentioned_in_a_group_with_group_replies_on() -> None:
    assert skip_reason(msg(is_group=True, chat_kind="group", mentioned=True), ON) is None
