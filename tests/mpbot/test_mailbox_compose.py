"""mpbot.mailbox.compose: notices in front of the answer, within WeChat's 2048 bytes."""

from __future__ import annotations

from mpbot.mailbox import DIVIDER, HEADER, compose, order
from mpbot.protocol import MAX_REPLY_BYTES
from store.mailbox import Notice


def _notice(slot: str, at: float, kind: str = "loop_guard") -> Notice:
    return Notice(slot, at, {"type": kind})


def _lines(count: int, size: int = 60) -> list[tuple[Notice, str]]:
    return [(_notice(f"loop_guard:{i}", 100.0 - i), f"· 通知{i:02d} " + "长" * size)
            for i in range(count)]


def test_few_notices_all_fit_before_the_answer() -> None:
    lines = _lines(3)
    text, carried = compose("你的规则（共 1 条）：", lines)
    assert carried
    assert text.startswith(HEADER + "\n· 通知00")
    assert text.endswith(f"\n{DIVIDER}\n你的规则（共 1 条）：")
    assert all(line in text for _, line in lines)
    assert "较早的通知" not in text


def test_many_notices_are_summarised_within_2048_bytes() -> None:
    lines = _lines(20, size=40)
    answer = "帮助" * 100
    text, carried = compose(answer, lines)
    assert carried
    assert len(text.encode()) <= MAX_REPLY_BYTES
    assert text.endswith(answer)  # the answer is never cut
    shown = [line for _, line in lines if line in text]
    assert shown == [line for _, line in lines[:len(shown)]]  # in the given order
    assert 0 < len(shown) < 20
    assert f"另有 {20 - len(shown)} 条较早的通知（自动回复暂停 {20 - len(shown)} 条）。" in text


def test_an_answer_that_leaves_no_room_carries_nothing() -> None:
    answer = "列" * 680  # 2040 bytes
    text, carried = compose(answer, _lines(2))
    assert not carried
    assert text == answer  # not even the hint fits
    shorter = "列" * 660
    text, carried = compose(shorter, _lines(2, size=400))
    assert not carried
    assert text == shorter + "\n（你有 2 条未读通知，发送「状态」查看）"
    assert len(text.encode()) <= MAX_REPLY_BYTES


def test_the_newest_state_comes_first() -> None:
    notices = [_notice("loop_guard:a", 30.0), _notice("state", 10.0, "state"),
               _notice("send_failures", 20.0, "send_failures")]
    assert [n.slot for n in order(notices)] == ["state", "loop_guard:a", "send_failures"]
