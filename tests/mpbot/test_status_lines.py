"""状态: the bot part (state, latest event with its reason, when, next step), including
fields and states that other parts of the system may add later."""

from __future__ import annotations

from datetime import UTC, datetime

from mpbot.commands import status_lines, when
from store.bots import BotStatus

# 2026-12-03 10:00 UTC = 18:00 Beijing time.
NOW = datetime(2026, 12, 3, 10, 0, tzinfo=UTC).timestamp()


def test_no_bot_yet() -> None:
    assert status_lines(None, NOW) == ["机器人：未登录（发送「登录」获取二维码）",
                                       "下一步：发送「登录」获取二维码"]


def test_logged_out_on_the_phone() -> None:
    since = datetime(2026, 12, 3, 7, 0, tzinfo=UTC)  # 15:00 Beijing, 3 hours ago
    lines = status_lines(BotStatus("logged_out", "小李", 4, reason="1101", since=since), NOW)
    assert lines == [
        "机器人：已退出（发送「登录」重新登录）",
        "最近变化：今天 15:00（3 小时前）",
        "原因：在手机上退出了网页版微信，或在别处登录了网页版",
        "下一步：发送「登录」重新登录",
    ]


def test_online_shows_no_reason() -> None:
    since = datetime(2026, 12, 1, 2, 30, tzinfo=UTC)
    lines = status_lines(BotStatus("online", "小明", reason="", since=since), NOW)
    assert lines[0] == "机器人：在线（小明）"
    assert lines[1] == "最近变化：12月1日 10:30（2 天前）"
    assert lines[-1] == "下一步：不需要操作；发送「退出」可以随时下线"
    assert not any(line.startswith("原因") for line in lines)


def test_wechats_own_words_and_a_login_guard_are_shown_generically() -> None:
    lines = status_lines(BotStatus("closed_by_wechat", reason="1205",
                                   wechat_message="当前登录环境异常。为了你的帐号安全，暂时不能登录web微信。",
                                   retry_after=NOW + 7200), NOW)
    assert lines[0] == "机器人：closed_by_wechat"
    assert "原因：微信返回 1205" in lines
    assert "微信的提示：「当前登录环境异常。为了你的帐号安全，暂时不能登录web微信。」" in lines
    assert lines[-1] == "下一步：今天 20:00 以后再发送「登录」"
    # A guard that has ended is not shown.
    past = status_lines(BotStatus("logged_out", retry_after=NOW - 1), NOW)
    assert past[-1] == "下一步：发送「登录」重新登录"


def test_expired_says_why() -> None:
    lines = status_lines(BotStatus("expired"), NOW)
    assert "原因：二维码在有效期内没有扫码确认" in lines
    assert lines[-1] == "下一步：发送「登录」获取新的二维码"


def test_when_uses_beijing_time() -> None:
    assert when(NOW, NOW) == "今天 18:00"
    assert when(NOW - 86400, NOW) == "12月2日 18:00"
