"""The pure hint helpers: spoken commands, greetings, typo suggestions, message kinds."""

from __future__ import annotations

import pytest

from mpbot import hints
from mpbot.commands import TABLE


@pytest.mark.parametrize(("spoken", "text"), [
    ("列表。", "列表"), ("帮助？", "帮助"), ("添加，苹果，梨子。", "添加 苹果 梨子"),
    ("删除 01。 ", "删除 01"), ("状态！", "状态"), ("   ", ""),
])
def test_voice_text(spoken: str, text: str) -> None:
    assert hints.voice_text(spoken) == text


@pytest.mark.parametrize(("text", "greeting"), [
    ("你好", True), ("您好！", True), ("HI", True), ("ｈｅｌｌｏ", True), ("在吗？", True),
    ("你好，我想添加规则", False), ("帮助", False), ("", False),
])
def test_is_greeting(text: str, greeting: bool) -> None:
    assert hints.is_greeting(text) is greeting


@pytest.mark.parametrize(("text", "meant"), [
    ("帮主", "帮助"), ("添家 苹果 梨子", "添加 苹果 梨子"), ("HLEP", "帮助"),
    ("lsit", "列表"), ("stauts", "状态"), ("添加苹果 梨子", "添加 苹果 梨子"),
    ("关注", None), ("ok", None), ("添加剂", None), ("吃了吗", None), ("帮", None),
])
def test_suggestion(text: str, meant: str | None) -> None:
    assert hints.suggestion(text, TABLE) == meant


def test_received_names_the_kind_and_what_to_do() -> None:
    assert hints.received("image").startswith("收到图片。")
    assert hints.received("something_new").startswith("收到消息。")
    for kind in ("image", "location", "link", "video", "file"):
        assert hints.received(kind).endswith(hints.CAN_DO)


def test_not_a_command_never_echoes_more_than_a_clip() -> None:
    reply = hints.not_a_command("秘" * 90, TABLE)
    assert reply.count("秘") <= 20
    assert hints.not_a_command("", TABLE) == TABLE.help_text()
