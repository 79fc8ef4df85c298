import pytest

from mpbot.notifier import message_for

URL = "https://bot.example"


@pytest.mark.parametrize(
    ("event", "expected"),
    [
        ({"type": "state", "state": "online", "nickname": "阿明", "origin": "request"},
         "你的微信「阿明」已登录"),
        ({"type": "state", "state": "logged_out", "reason": "1101", "nickname": "阿明"},
         "在手机上退出了网页版"),
        ({"type": "state", "state": "closed", "reason": "1102", "nickname": "阿明",
          "retry_after": 1_780_000_000}, "微信关闭了你的微信「阿明」的网页版登录"),
        ({"type": "state", "state": "closed", "reason": "1102",
          "retry_after": 1_780_000_000}, "05-29 04:26（北京时间）之前「登录」会被暂缓"),
        ({"type": "state", "state": "closed", "reason": "1102"}, "请不要马上重新扫码"),
        ({"type": "state", "state": "refused", "reason": "1203",
          "wechat_message": "当前登录环境异常。"}, "微信的提示：当前登录环境异常。"),
        ({"type": "state", "state": "refused", "reason": ""}, "微信拒绝了这个账号的网页版登录，"),
        ({"type": "restricted", "wechat_message": "你发送消息过于频繁",
          "retry_after": 1_780_000_000}, "自动回复已暂停，05-29 04:26（北京时间）后恢复"),
        ({"type": "restricted", "ret": "1205"}, "发送消息受限"),
        ({"type": "state", "state": "logged_out", "reason": "logout"}, "已退出登录"),
        ({"type": "state", "state": "logged_out", "reason": "error"}, "已下线"),
        ({"type": "state", "state": "refused", "reason": "1203"}, "错误 1203"),
        ({"type": "state", "state": "expired", "origin": "request"}, "登录二维码已过期"),
        ({"type": "state", "state": "expired", "origin": "resume"}, "没能恢复登录"),
        ({"type": "state", "state": "waiting_scan", "origin": "resume", "pid": "P" * 24},
         f"{URL}/qr/{'P' * 24}"),
        ({"type": "state", "state": "scanned", "origin": "resume", "push": True}, "手机微信上"),
        ({"type": "send_failures"}, "没有发送成功"),
    ],
)
def test_events_that_are_told(event: dict, expected: str) -> None:  # type: ignore[type-arg]
    text = message_for(event, URL)
    assert text is not None
    assert expected in text


@pytest.mark.parametrize(
    "event",
    [
        {"type": "state", "state": "online", "origin": "resume"},  # restart: stay quiet
        {"type": "state", "state": "waiting_scan", "origin": "request"},  # they have the page
        {"type": "state", "state": "scanned", "origin": "request"},
        {"type": "state", "state": "requested"},
        {"type": "qr"},
        {},
    ],
)
def test_events_that_are_not(event: dict) -> None:  # type: ignore[type-arg]
    assert message_for(event, URL) is None


def test_wechats_own_words_and_a_login_guard_are_added_when_present() -> None:
    from mpbot.notifier import notice_text

    now = 1_764_756_000.0  # 2025-12-03 18:00 Beijing time
    event = {"type": "state", "state": "logged_out", "reason": "1205",
             "wechat_message": "当前登录环境异常", "retry_after": now + 3600}
    text = notice_text(event, URL, lambda: now)
    assert text is not None
    assert text.startswith(message_for(event, URL) or "")
    assert "微信的提示：「当前登录环境异常」" in text
    assert text.endswith("今天 19:00 以后可以再发送「登录」。")
    # Not repeated when the text already says it, not shown once the guard has ended.
    assert notice_text({**event, "retry_after": now - 1}, URL, lambda: now) == (
        message_for(event, URL) + "\n微信的提示：「当前登录环境异常」")
    assert notice_text({"type": "qr"}, URL, lambda: now) is None
