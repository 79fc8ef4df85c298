"""The itchat driver against the fake's 2025–26 behaviours (each switched on per test)."""

from __future__ import annotations

import threading
import time
from typing import Any

import itchat.config
import pytest

from replybot.driver import LoginState
from replybot.webwx.library import configure_itchat
from sandbox.webwx import FakeAccount, FakeWebWx
from sandbox.webwx.messages import ACCOUNT_RESTRICTED, KINDS, SEND_TOO_OFTEN
from tests.replybot.test_itchat_driver import (  # noqa: F401 - fixtures
    Recorder,
    Running,
    StartFn,
    alice,
    online,
    qr_login,
    start,
)


class NoticeRecorder(Recorder):
    def __init__(self) -> None:
        super().__init__()
        self.notices: list[tuple[str, dict[str, Any]]] = []

    def on_notice(self, kind: str, detail: dict[str, Any]) -> None:
        self._add(lambda: self.notices.append((kind, detail)))


def _with_notices(run: Running) -> NoticeRecorder:
    """Swap the recorder of an online driver for one that records notices too."""
    recorder = NoticeRecorder()
    recorder.__dict__.update({k: v for k, v in run.events.__dict__.items()
                              if k != "notices"})
    recorder.cond = threading.Condition()
    run.driver._events = recorder
    run.events = recorder
    return recorder


# -- the post-scan wait ------------------------------------------------------------------


def _scan_then_confirm_after_the_window(fake: FakeWebWx, run: Running,
                                        account: FakeAccount) -> str:
    uuid = run.events.wait_state(LoginState.WAITING_SCAN)["uuid"]
    fake.scan(uuid, account)
    run.events.wait_state(LoginState.SCANNED)
    time.sleep(fake.scan_wait + 0.05)  # the phone's 确认 is disabled meanwhile
    try:
        fake.confirm(uuid)
    except ValueError:
        pass  # the QR is already gone: the client polled inside the window
    return uuid


def test_the_owner_scans_once_through_the_post_scan_wait(
        fake_webwx: FakeWebWx, start: StartFn, alice: FakeAccount) -> None:
    fake_webwx.set_options(scan_wait=0.6)
    configure_itchat(fake_webwx.base_url, scan_wait=0.8)
    run = start()
    _scan_then_confirm_after_the_window(fake_webwx, run, alice)
    run.events.wait_state(LoginState.ONLINE)
    assert run.events.state_names == ["waiting_scan", "scanned", "online"]
    assert len(run.events.qrs) == 1  # one QR, one scan


def test_without_the_wait_a_client_loops_into_a_new_qr(
        fake_webwx: FakeWebWx, start: StartFn, alice: FakeAccount) -> None:
    # What the fake models: polling again at once after the 201 loses the QR.
    fake_webwx.set_options(scan_wait=0.6)
    configure_itchat(fake_webwx.base_url, scan_wait=0.0)
    run = start()
    _scan_then_confirm_after_the_window(fake_webwx, run, alice)
    run.events.wait_state(LoginState.WAITING_SCAN, nth=2)
    assert len(run.events.qrs) == 2
    assert LoginState.ONLINE not in [s for s, _ in run.events.states]


# -- WeChat closes the web session (1102) ------------------------------------------------


def test_1102_seconds_after_login_ends_closed_not_logged_out(
        fake_webwx: FakeWebWx, start: StartFn, alice: FakeAccount) -> None:
    fake_webwx.set_options(close_after_login=0.5)
    run = qr_login(fake_webwx, start, alice)
    assert run.join() is LoginState.CLOSED
    assert run.events.states[-1] == (LoginState.CLOSED, {"reason": "1102"})
    assert not fake_webwx.session_valid(alice)


def test_kick_with_1102_is_a_closure_too(fake_webwx: FakeWebWx, online: Running,
                                         alice: FakeAccount) -> None:
    fake_webwx.kick(alice, "1102")
    assert online.join() is LoginState.CLOSED


# -- login headers ---------------------------------------------------------------------


def test_the_login_page_request_carries_the_uos_headers(
        fake_webwx: FakeWebWx, online: Running) -> None:
    (headers,) = fake_webwx.login_headers
    assert headers["extspam"] == itchat.config.UOS_PATCH_EXTSPAM
    assert headers["client-version"] == itchat.config.UOS_PATCH_CLIENT_VERSION
    assert headers["extspam"]


# -- messages beyond text ----------------------------------------------------------------


NON_TEXT = [k for k in KINDS if k not in ("emoji_text",)]


def test_no_kind_of_non_text_message_is_delivered_and_text_still_is(
        fake_webwx: FakeWebWx, online: Running, alice: FakeAccount) -> None:
    events = _with_notices(online)
    for kind in NON_TEXT:
        fake_webwx.push_message(alice, kind, 1)
    fake_webwx.push_message(alice, "emoji_text", 2)
    fake_webwx.push_friend_text(alice, 3, "价格")
    events.wait_for(lambda: len(events.messages) >= 2)
    time.sleep(fake_webwx.hold_sync)  # anything else would have arrived by now
    texts = [(m.text, m.chat) for m in events.messages]
    assert texts == [("价格😄", alice.friend_name(2)), ("价格", alice.friend_name(3))]
    assert online.driver.online
    assert all(len(m.msg_id) == 19 for m in events.messages)
    # The two restriction notices (too_often, restricted) reached the session.
    told = [d["text"] for k, d in events.notices if k == "restricted"]
    assert told == [SEND_TOO_OFTEN, ACCOUNT_RESTRICTED]


def test_a_restriction_from_the_weixin_account_is_a_notice(
        fake_webwx: FakeWebWx, online: Running, alice: FakeAccount) -> None:
    events = _with_notices(online)
    fake_webwx.push_text(alice, "weixin", alice.user_name, ACCOUNT_RESTRICTED)
    events.wait_for(lambda: events.notices)
    assert events.notices[0][1]["source"] == "notice"
    assert events.messages[-1].chat_kind == "mp"  # never answered


def test_status_notifications_do_not_trigger_saves(
        fake_webwx: FakeWebWx, start: StartFn, alice: FakeAccount) -> None:
    run = qr_login(fake_webwx, start, alice, save_interval=0.0)
    events = run.events
    before = len([d for d in events.login_data if not d.get("partial")])
    for _ in range(5):
        fake_webwx.push_message(alice, "status", 1)
    fake_webwx.push_friend_text(alice, 0, "after")
    events.wait_message(lambda m: m.text == "after")
    time.sleep(fake_webwx.hold_sync)
    full = [d for d in events.login_data if not d.get("partial")]
    assert len(full) == before  # only progress saves, no full contact snapshot


def test_a_send_refused_as_restricted_is_a_notice(fake_webwx: FakeWebWx, online: Running,
                                                 alice: FakeAccount) -> None:
    events = _with_notices(online)
    fake_webwx.fail_sends(alice, 1, ret=1205)
    assert not online.driver.send_text(alice.friend_name(0), "hi")
    assert events.notices == [("restricted", {"ret": 1205, "source": "send"})]
    fake_webwx.fail_sends(alice, 1, ret=1101)
    assert not online.driver.send_text(alice.friend_name(0), "hi")
    assert len(events.notices) == 1  # 1101: the session is gone, not a restriction


@pytest.mark.parametrize("variant", ["bogus", ""])
def test_the_fake_rejects_unknown_refusal_variants(fake_webwx: FakeWebWx, start: StartFn,
                                                   alice: FakeAccount, variant: str) -> None:
    run = start()
    uuid = run.events.wait_state(LoginState.WAITING_SCAN)["uuid"]
    fake_webwx.scan(uuid, alice)
    with pytest.raises(ValueError, match="refusal variant"):
        fake_webwx.refuse(uuid, variant)


# -- sync oddities -----------------------------------------------------------------------


def _until(predicate: Any, timeout: float = 20.0) -> None:
    """Poll a driver counter (they change without an event to wait on)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_twenty_empty_selector_2_rounds_and_the_session_still_answers(
        fake_webwx: FakeWebWx, start: StartFn, alice: FakeAccount) -> None:
    run = qr_login(fake_webwx, start, alice, spin_pause_max=0.2)
    events = run.events
    fake_webwx.spin(alice, 20)
    _until(lambda: run.driver._empty_rounds >= 10)
    syncs = events.syncs
    _until(lambda: run.driver._empty_rounds >= 20)
    # A spinning session stops counting as alive for the watchdog.
    assert events.syncs == syncs
    fake_webwx.push_friend_text(alice, 0, "still there?")
    events.wait_message(lambda m: m.text == "still there?")
    assert run.driver.online
    events.wait_for(lambda: events.syncs > syncs)  # idle rounds count again


@pytest.mark.parametrize("selector", ["4", "6", "7"])
def test_other_selectors_with_nothing_behind_them(fake_webwx: FakeWebWx, start: StartFn,
                                                  alice: FakeAccount, selector: str) -> None:
    run = qr_login(fake_webwx, start, alice, spin_pause_max=0.2)
    fake_webwx.spin(alice, 8, selector)
    _until(lambda: run.driver._empty_rounds >= 8)
    fake_webwx.push_friend_text(alice, 1, "hi")
    run.events.wait_message(lambda m: m.text == "hi")


def test_three_synccheck_503s_are_retried_not_a_logout(
        fake_webwx: FakeWebWx, online: Running, alice: FakeAccount) -> None:
    fake_webwx.fail_synccheck(alice, 3, 503)
    _until(lambda: online.driver._sync_errors >= 3)
    fake_webwx.push_friend_text(alice, 2, "after the 503s")
    online.events.wait_message(lambda m: m.text == "after the 503s")
    assert online.driver.online
    assert online.driver._sync_errors == 0
    assert fake_webwx.session_valid(alice)


def test_a_deaf_session_ends_for_a_resume(fake_webwx: FakeWebWx, online: Running,
                                          alice: FakeAccount) -> None:
    fake_webwx.fail_webwxsync(alice, 10, ret=-1)
    assert online.join(timeout=20) is LoginState.LOGGED_OUT
    assert online.events.states[-1] == (LoginState.LOGGED_OUT, {"reason": "error"})
    assert fake_webwx.session_valid(alice)  # WeChat still knows it: a resume can continue


def test_the_extspam_header_can_be_configured_and_restored(
        fake_webwx: FakeWebWx, start: StartFn, alice: FakeAccount) -> None:
    library = itchat.config.UOS_PATCH_EXTSPAM
    configure_itchat(fake_webwx.base_url, scan_wait=0.0, extspam="Go8Fnewer")
    try:
        qr_login(fake_webwx, start, alice)
        assert fake_webwx.login_headers[-1]["extspam"] == "Go8Fnewer"
    finally:
        configure_itchat(fake_webwx.base_url, scan_wait=0.0)
    assert itchat.config.UOS_PATCH_EXTSPAM == library
