"""The itchat driver: the unmodified itchat library against the fake web WeChat.

Each driver runs on a thread of its own, as in a worker; the test thread plays the phone
and the friends through the fake's hooks and watches the driver's events.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import itchat.config
import pytest

from replybot.driver import Contact, IncomingMessage, LoginState
from replybot.webwx.driver import ImpossibleTransition, ItchatDriver, Phase
from replybot.webwx.library import check_itchat, configure_itchat
from replybot.webwx.messages import strip_mention
from sandbox.webwx import (
    ENV_REFUSED_MESSAGE,
    REFUSED_MESSAGE,
    FakeAccount,
    FakeWebWx,
)

WAIT = 10.0  # generous upper bound for one expected event; tests end far sooner


class Recorder:
    """DriverEvents that remembers everything and lets the test wait for it."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.qrs: list[bytes] = []
        self.states: list[tuple[LoginState, dict[str, Any]]] = []
        self.messages: list[IncomingMessage] = []
        self.login_data: list[dict[str, Any]] = []
        self.syncs = 0
        self.threads: set[int] = set()

    def _add(self, update: Callable[[], None]) -> None:
        with self.cond:
            self.threads.add(threading.get_ident())
            update()
            self.cond.notify_all()

    def on_qr(self, png: bytes) -> None:
        self._add(lambda: self.qrs.append(png))

    def on_state(self, state: LoginState, detail: dict[str, Any]) -> None:
        self._add(lambda: self.states.append((state, detail)))

    def on_message(self, msg: IncomingMessage) -> None:
        self._add(lambda: self.messages.append(msg))

    def on_login_data(self, data: dict[str, Any]) -> None:
        json.dumps(data)  # must be storable as it is
        self._add(lambda: self.login_data.append(data))

    def on_sync(self) -> None:
        def bump() -> None:
            self.syncs += 1
        self._add(bump)

    def wait_for(self, predicate: Callable[[], Any], timeout: float = WAIT) -> Any:
        with self.cond:
            result = self.cond.wait_for(predicate, timeout)
        assert result, "timed out waiting for a driver event"
        return result

    def wait_state(self, state: LoginState, nth: int = 1) -> dict[str, Any]:
        def found() -> dict[str, Any] | None:
            hits = [d for s, d in self.states if s is state]
            return hits[nth - 1] if len(hits) >= nth else None
        return self.wait_for(lambda: found() is not None and found())

    def wait_message(self, predicate: Callable[[IncomingMessage], bool] = lambda m: True,
                     ) -> IncomingMessage:
        def found() -> IncomingMessage | None:
            return next((m for m in self.messages if predicate(m)), None)
        return self.wait_for(found)

    @property
    def state_names(self) -> list[str]:
        return [s.value for s, _ in self.states]


class Running:
    """A driver running on its own thread, as a session runs it."""

    def __init__(self, driver: ItchatDriver, events: Recorder,
                 resume: dict[str, Any] | None, deadline: float) -> None:
        self.driver, self.events = driver, events
        self.result: LoginState | None = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, args=(resume, deadline),
                                       daemon=True)
        self.thread.start()

    def _run(self, resume: dict[str, Any] | None, deadline: float) -> None:
        try:
            self.result = self.driver.run(self.events, resume, deadline)
        except BaseException as exc:  # reported by join()
            self.error = exc

    def join(self, timeout: float = WAIT) -> LoginState:
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "run() did not return"
        if self.error is not None:
            raise self.error
        assert self.result is not None
        return self.result


StartFn = Callable[..., Running]


@pytest.fixture
def start(fake_webwx: FakeWebWx) -> Iterator[StartFn]:
    """Start drivers; whatever is still running at the end is stopped and joined."""
    runs: list[Running] = []

    def start_driver(resume: dict[str, Any] | None = None, qr_timeout: float = 30.0,
                     **kwargs: Any) -> Running:
        run = Running(ItchatDriver(**kwargs), Recorder(), resume, time.time() + qr_timeout)
        runs.append(run)
        return run

    yield start_driver
    for run in runs:
        run.driver.stop()
    for run in runs:
        run.thread.join(WAIT)
        assert not run.thread.is_alive()


def qr_login(fake: FakeWebWx, start: StartFn, account: FakeAccount,
             **kwargs: Any) -> Running:
    """A driver logged in by QR: scan and confirm on the fake phone."""
    run = start(**kwargs)
    uuid = run.events.wait_state(LoginState.WAITING_SCAN)["uuid"]
    fake.scan(uuid, account)
    run.events.wait_state(LoginState.SCANNED)
    fake.confirm(uuid)
    run.events.wait_state(LoginState.ONLINE)
    # The save after login follows the ONLINE event on the driver's thread.
    run.events.wait_for(lambda: run.events.login_data)
    return run


@pytest.fixture
def alice(fake_webwx: FakeWebWx) -> FakeAccount:
    return fake_webwx.add_account("Alice", friends=5, groups=2, members=3, mps=2)


@pytest.fixture
def online(fake_webwx: FakeWebWx, start: StartFn, alice: FakeAccount) -> Running:
    return qr_login(fake_webwx, start, alice)


# -- itchat itself -----------------------------------------------------------------------


def test_installed_itchat_is_the_fixed_one(fake_webwx: FakeWebWx) -> None:
    check_itchat()
    assert itchat.config.BASE_URL == fake_webwx.base_url


def test_configure_itchat_rejects_a_non_url() -> None:
    with pytest.raises(ValueError, match="not an http"):
        configure_itchat("login.weixin.qq.com")


# -- login ---------------------------------------------------------------------------------


def test_qr_login_reports_each_state_then_online(fake_webwx: FakeWebWx, start: StartFn,
                                                 alice: FakeAccount) -> None:
    run = start()
    events = run.events
    uuid = events.wait_state(LoginState.WAITING_SCAN)["uuid"]
    assert len(events.qrs) == 1
    assert events.qrs[0].startswith(b"\x89PNG")
    # The login poll is held, not answered at once: no new state while nobody scans.
    time.sleep(fake_webwx.hold_login * 2.5)
    assert events.state_names == ["waiting_scan"]
    assert [p["uuid"] for p in fake_webwx.pending_logins()] == [uuid]
    fake_webwx.scan(uuid, alice)
    events.wait_state(LoginState.SCANNED)
    fake_webwx.confirm(uuid)
    detail = events.wait_state(LoginState.ONLINE)
    assert detail == {"nickname": "Alice", "user_name": alice.user_name, "resumed": "qr"}
    assert events.state_names == ["waiting_scan", "scanned", "online"]
    assert run.driver.self_user_name == alice.user_name
    assert run.driver.nickname == "Alice"
    assert events.login_data, "resumable data is handed over right after login"
    events.wait_for(lambda: events.syncs >= 1)
    # Every event came from the driver's own thread.
    assert events.threads == {run.thread.ident}


def test_qr_expiry_at_wechat_shows_a_new_qr_then_deadline_expires(
        fake_webwx: FakeWebWx, start: StartFn) -> None:
    # Held polls far longer than the deadline: EXPIRED must still come on time.
    fake_webwx.set_options(hold_login=20.0)
    run = start(qr_timeout=2.0)
    first = run.events.wait_state(LoginState.WAITING_SCAN)["uuid"]
    fake_webwx.expire(first)
    second = run.events.wait_state(LoginState.WAITING_SCAN, nth=2)["uuid"]
    assert second != first
    assert len(run.events.qrs) == 2
    assert run.join(timeout=3.0) is LoginState.EXPIRED
    assert run.events.state_names[-1] == "expired"


def test_logout_while_waiting_for_a_scan_ends_logged_out(fake_webwx: FakeWebWx,
                                                         start: StartFn) -> None:
    run = start()
    run.events.wait_state(LoginState.WAITING_SCAN)
    run.driver.logout()
    assert run.join() is LoginState.LOGGED_OUT
    assert run.events.states[-1] == (LoginState.LOGGED_OUT, {"reason": "logout"})
    assert fake_webwx.logouts == []  # nothing to log out of yet


def test_stop_before_run_returns_at_once(fake_webwx: FakeWebWx) -> None:
    driver = ItchatDriver()
    driver.stop()
    events = Recorder()
    assert driver.run(events, None, time.time() + 30) is LoginState.LOGGED_OUT
    assert events.states == []
    assert fake_webwx.pending_logins() == []
    with pytest.raises(RuntimeError, match="runs once"):
        driver.run(events, None, time.time() + 30)


@pytest.mark.parametrize(("variant", "ret", "words"), [
    ("1203", "1203", REFUSED_MESSAGE),
    ("env", "1203", ENV_REFUSED_MESSAGE),
    ("html", "", "为了你的帐号安全，请使用电脑版微信登录。"),
])
def test_every_refusal_variant_ends_refused_with_wechats_words(
        fake_webwx: FakeWebWx, start: StartFn, alice: FakeAccount, variant: str, ret: str,
        words: str) -> None:
    run = start()
    uuid = run.events.wait_state(LoginState.WAITING_SCAN)["uuid"]
    fake_webwx.scan(uuid, alice)
    fake_webwx.refuse(uuid, variant)
    assert run.join() is LoginState.REFUSED  # never left "waiting"
    state, detail = run.events.states[-1]
    assert state is LoginState.REFUSED
    assert detail["ret"] == ret
    assert words in detail["wechat_message"]
    assert "<" not in detail["wechat_message"]
    assert not fake_webwx.session_valid(alice)


def test_account_barred_from_web_login_is_refused(fake_webwx: FakeWebWx,
                                                  start: StartFn) -> None:
    barred = fake_webwx.add_account("Barred", refuse_web_login=True)
    run = start()
    uuid = run.events.wait_state(LoginState.WAITING_SCAN)["uuid"]
    fake_webwx.scan(uuid, barred)
    fake_webwx.confirm(uuid)
    assert run.join() is LoginState.REFUSED


def test_stop_while_waiting_for_a_scan_returns_promptly(fake_webwx: FakeWebWx,
                                                        start: StartFn) -> None:
    fake_webwx.set_options(hold_login=20.0)
    run = start()
    run.events.wait_state(LoginState.WAITING_SCAN)
    time.sleep(0.2)  # the driver is now inside a held login poll
    began = time.monotonic()
    run.driver.stop()
    assert run.join() is LoginState.LOGGED_OUT
    assert time.monotonic() - began < 1.0
    assert run.events.state_names == ["waiting_scan"]  # stop() is not reported


# -- receiving -----------------------------------------------------------------------------


def test_friend_text_arrives_unescaped(fake_webwx: FakeWebWx, online: Running,
                                       alice: FakeAccount) -> None:
    text = "价格 <b>&amp; \"多少\"\n第二行"
    pushed = fake_webwx.push_friend_text(alice, 2, text)
    msg = online.events.wait_message()
    assert msg == IncomingMessage(
        msg_id=pushed["MsgId"], chat=alice.friend_name(2), sender=alice.friend_name(2),
        text=text, is_group=False, mentioned=False, from_self=False, chat_kind="friend",
        create_time=pushed["CreateTime"], chat_key=msg.chat_key)
    # The key that survives a re-login: from the friend's name, not the UserName.
    assert msg.chat_key.startswith("f:")
    assert alice.friend_name(2)[1:] not in msg.chat_key


def test_group_text_without_and_with_mention(fake_webwx: FakeWebWx, online: Running,
                                             alice: FakeAccount) -> None:
    group, member = alice.group_name(1), alice.member_name(1, 2)
    fake_webwx.push_group_text(alice, 1, 2, "大家好")
    plain = online.events.wait_message()
    assert (plain.chat, plain.sender, plain.text) == (group, member, "大家好")
    assert plain.is_group
    assert not plain.mentioned
    assert not plain.from_self
    assert plain.chat_kind == "group"
    fake_webwx.push_group_text(alice, 1, 2, "营业时间？", mention_self=True)
    at = online.events.wait_message(lambda m: m.mentioned)
    assert (at.chat, at.sender, at.text) == (group, member, "营业时间？")
    assert online.driver.contact(group) is not None


def test_mention_uses_the_display_name_in_the_group(fake_webwx: FakeWebWx,
                                                    start: StartFn) -> None:
    shop = fake_webwx.add_account("Shop", group_display_name="店长")
    run = qr_login(fake_webwx, start, shop)
    fake_webwx.push_group_text(shop, 0, 0, "在吗", mention_self=True)
    msg = run.events.wait_message()
    assert msg.mentioned
    assert msg.text == "在吗"


def test_mp_and_filehelper_and_stranger_are_classified(fake_webwx: FakeWebWx,
                                                       online: Running,
                                                       alice: FakeAccount) -> None:
    fake_webwx.push_mp_text(alice, 0, "今日推送")
    fake_webwx.push_mp_text(alice, 1, "another mp")
    fake_webwx.push_self_text(alice, "filehelper", "#off")
    fake_webwx.push_text(alice, "@" + "f" * 32, alice.user_name, "who am I")
    fake_webwx.push_text(alice, "weixin", alice.user_name, "微信团队")
    events = online.events
    events.wait_for(lambda: len(events.messages) == 5)
    kinds = {m.text: (m.chat_kind, m.from_self) for m in events.messages}
    assert kinds == {"今日推送": ("mp", False), "another mp": ("mp", False),
                     "#off": ("filehelper", True), "who am I": ("stranger", False),
                     "微信团队": ("mp", False)}
    note = next(m for m in events.messages if m.text == "#off")
    assert (note.chat, note.sender) == ("filehelper", alice.user_name)


def test_owner_typing_on_the_phone_is_from_self(fake_webwx: FakeWebWx, online: Running,
                                                alice: FakeAccount) -> None:
    fake_webwx.push_self_text(alice, 1, "我来回复")
    fake_webwx.push_self_text(alice, alice.group_name(0), "in the group")
    events = online.events
    events.wait_for(lambda: len(events.messages) == 2)
    direct, grouped = events.messages
    assert (direct.chat, direct.sender, direct.from_self) == (
        alice.friend_name(1), alice.user_name, True)
    assert direct.chat_kind == "friend"
    assert (grouped.chat, grouped.sender, grouped.from_self, grouped.mentioned) == (
        alice.group_name(0), alice.user_name, True, False)


def test_new_friend_and_sync_key_are_saved(fake_webwx: FakeWebWx, start: StartFn,
                                           alice: FakeAccount) -> None:
    run = qr_login(fake_webwx, start, alice, save_interval=0.0)
    events = run.events
    first = events.login_data[-1]
    newcomer = fake_webwx.add_friend(alice)
    fake_webwx.push_friend_text(alice, newcomer, "加个好友")
    msg = events.wait_message()
    assert (msg.chat, msg.chat_kind) == (newcomer, "friend")
    # Saved again after that round: a new SyncKey, and the new friend in the contacts.
    saved = events.wait_for(lambda: next(
        (d for d in events.login_data
         if d["login_info"]["SyncKey"] != first["login_info"]["SyncKey"]
         and any(f[0] == newcomer for f in d["contacts"]["friends"])), None))
    assert len(saved["contacts"]["friends"]) == alice.friends
    assert run.driver.contact(newcomer) == Contact(newcomer, "好友005", "", "friend")


def test_login_data_is_throttled(fake_webwx: FakeWebWx, start: StartFn,
                                 alice: FakeAccount) -> None:
    run = qr_login(fake_webwx, start, alice, save_interval=60.0)
    for i in range(5):
        fake_webwx.push_friend_text(alice, 0, f"m{i}")
        run.events.wait_for(lambda i=i: len(run.events.messages) == i + 1)
    assert len(run.events.login_data) == 1  # only the one right after login
    run.driver.stop()
    run.join()
    assert len(run.events.login_data) == 2  # and the one at stop
    last = run.events.login_data[-1]["login_info"]["SyncKey"]
    assert last != run.events.login_data[0]["login_info"]["SyncKey"]


def test_send_text_is_recorded_and_failures_are_reported(fake_webwx: FakeWebWx,
                                                         online: Running,
                                                         alice: FakeAccount) -> None:
    friend = alice.friend_name(0)
    assert online.driver.send_text(friend, "在开会，稍后回复 <3 & 谢谢")
    fake_webwx.fail_sends(alice, 1)
    assert not online.driver.send_text(friend, "second")
    assert online.driver.send_text(friend, "third")
    assert [(s.to_user, s.text) for s in fake_webwx.sent(alice)] == [
        (friend, "在开会，稍后回复 <3 & 谢谢"), (friend, "third")]
    assert [s.ret for s in fake_webwx.sent(alice, include_failed=True)] == [0, 1205, 0]
    assert not online.driver.send_text("", "to nobody")  # itchat would send it to self


def test_sent_text_can_come_back_as_own_message(fake_webwx: FakeWebWx, online: Running,
                                                alice: FakeAccount) -> None:
    fake_webwx.set_options(echo_sent=True)
    assert online.driver.send_text(alice.friend_name(3), "自动回复")
    echo = online.events.wait_message()
    assert (echo.chat, echo.text, echo.from_self) == (alice.friend_name(3), "自动回复", True)


def test_sends_from_other_threads_while_receiving(fake_webwx: FakeWebWx, online: Running,
                                                  alice: FakeAccount) -> None:
    results: list[bool] = []
    threads = [threading.Thread(target=lambda i=i: results.append(
        online.driver.send_text(alice.friend_name(i % 5), f"msg {i}"))) for i in range(8)]
    for thread in threads:
        thread.start()
    fake_webwx.push_friend_text(alice, 0, "meanwhile")
    for thread in threads:
        thread.join(WAIT)
    assert results == [True] * 8
    assert len(fake_webwx.sent(alice)) == 8
    online.events.wait_message()


# -- the end of a session -------------------------------------------------------------------


def test_kick_ends_logged_out_with_retcode(fake_webwx: FakeWebWx, online: Running,
                                           alice: FakeAccount) -> None:
    fake_webwx.kick(alice)
    assert online.join() is LoginState.LOGGED_OUT
    assert online.events.states[-1] == (LoginState.LOGGED_OUT, {"reason": "1101"})
    assert not online.driver.send_text(alice.friend_name(0), "too late")


def test_logout_logs_out_at_wechat(fake_webwx: FakeWebWx, online: Running,
                                   alice: FakeAccount) -> None:
    fake_webwx.set_options(hold_sync=20.0)
    time.sleep(0.3)
    began = time.monotonic()
    online.driver.logout()
    assert online.join() is LoginState.LOGGED_OUT
    assert time.monotonic() - began < 1.5
    assert online.events.states[-1] == (LoginState.LOGGED_OUT, {"reason": "logout"})
    assert [x.uin for x in fake_webwx.logouts] == [alice.uin]
    assert not fake_webwx.session_valid(alice)


def test_stop_keeps_the_web_session_and_saves_it(fake_webwx: FakeWebWx, online: Running,
                                                 alice: FakeAccount) -> None:
    fake_webwx.set_options(hold_sync=20.0)
    time.sleep(0.3)  # inside a synccheck held for 20 s
    saves = len(online.events.login_data)
    began = time.monotonic()
    online.driver.stop()
    assert online.join() is LoginState.LOGGED_OUT
    assert time.monotonic() - began < 1.0
    assert online.events.state_names[-1] == "online"  # no logged_out reported
    assert fake_webwx.session_valid(alice)
    assert fake_webwx.logouts == []
    assert len(online.events.login_data) == saves + 1  # always saved on stop


# -- phases -------------------------------------------------------------------------------


def _phases(caplog: pytest.LogCaptureFixture, driver: ItchatDriver) -> list[str]:
    """The phases ``driver`` entered, from its transition log."""
    label = f"itchat[{hex(id(driver))}]: phase "
    return [r.getMessage().removeprefix(label).split(" -> ")[1] for r in caplog.records
            if r.getMessage().startswith(label)]


def test_phases_of_a_qr_login_then_logout(fake_webwx: FakeWebWx, start: StartFn,
                                          alice: FakeAccount,
                                          caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="replybot.webwx.driver")
    run = qr_login(fake_webwx, start, alice)
    assert run.driver.phase is Phase.ONLINE
    run.driver.logout()
    assert run.join() is LoginState.LOGGED_OUT
    assert run.driver.phase is Phase.ENDED
    assert _phases(caplog, run.driver) == [
        "fetching_qr", "awaiting_scan", "awaiting_confirm", "loading", "online",
        "logging_out", "stopping", "ending", "ended"]


def test_phases_of_a_stop_while_online(fake_webwx: FakeWebWx, online: Running,
                                       caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="replybot.webwx.driver")
    online.driver.stop()
    assert online.join() is LoginState.LOGGED_OUT
    assert _phases(caplog, online.driver) == ["stopping", "ended"]
    assert not online.driver.online


def test_an_impossible_step_is_refused_and_leaves_the_phase() -> None:
    driver = ItchatDriver()
    with pytest.raises(ImpossibleTransition, match="no step from idle to online"):
        driver._enter(Phase.ONLINE)
    assert driver.phase is Phase.IDLE
    driver.stop()  # asked, not entered: only the session thread changes the phase
    assert driver.phase is Phase.IDLE


# -- resuming -------------------------------------------------------------------------------


def test_resume_without_scan_gets_messages_queued_meanwhile(
        fake_webwx: FakeWebWx, start: StartFn, online: Running,
        alice: FakeAccount) -> None:
    fake_webwx.push_friend_text(alice, 0, "before")
    online.events.wait_message()
    online.driver.stop()
    online.join()
    saved = online.events.login_data[-1]
    # Nobody polls now; friends keep writing.
    fake_webwx.push_friend_text(alice, 1, "while away 1")
    fake_webwx.push_group_text(alice, 0, 1, "while away 2", mention_self=True)
    resumed = start(resume=saved)
    detail = resumed.events.wait_state(LoginState.ONLINE)
    assert detail["resumed"] == "hot"
    events = resumed.events
    events.wait_for(lambda: len(events.messages) >= 2)
    assert [m.text for m in events.messages] == ["while away 1", "while away 2"]
    assert events.messages[1].mentioned
    assert events.messages[0].chat_kind == "friend"
    assert events.qrs == []
    assert fake_webwx.pending_logins() == []
    assert resumed.driver.send_text(alice.friend_name(1), "back")
    assert events.state_names == ["online"]


def test_resume_with_a_stale_sync_key_sees_messages_again(
        fake_webwx: FakeWebWx, start: StartFn, online: Running,
        alice: FakeAccount) -> None:
    saved = online.events.login_data[-1]
    fake_webwx.push_friend_text(alice, 0, "seen once")
    first = online.events.wait_message()
    online.driver.stop()
    online.join()
    resumed = start(resume=saved)  # the SyncKey from before "seen once"
    again = resumed.events.wait_message()
    assert again.msg_id == first.msg_id  # dedup by msg_id is the session's job


def test_resume_falls_back_to_push_login(fake_webwx: FakeWebWx, start: StartFn,
                                         online: Running, alice: FakeAccount) -> None:
    online.driver.stop()
    online.join()
    saved = online.events.login_data[-1]
    fake_webwx.kick(alice)  # the saved web session is no longer valid
    resumed = start(resume=saved)
    detail = resumed.events.wait_state(LoginState.SCANNED)
    assert detail["push"] is True
    assert resumed.events.qrs == []
    fake_webwx.confirm(detail["uuid"])
    assert resumed.events.wait_state(LoginState.ONLINE)["resumed"] == "push"
    fake_webwx.push_friend_text(alice, 3, "after push login")
    assert resumed.events.wait_message().text == "after push login"


def test_resume_push_login_auto_confirmed(fake_webwx: FakeWebWx, start: StartFn,
                                          online: Running, alice: FakeAccount) -> None:
    online.driver.stop()
    online.join()
    saved = online.events.login_data[-1]
    fake_webwx.kick(alice)
    fake_webwx.set_options(auto_confirm_push=True)
    resumed = start(resume=saved)
    assert resumed.events.wait_state(LoginState.ONLINE)["resumed"] == "push"
    assert resumed.events.state_names == ["scanned", "online"]


def test_resume_push_not_confirmed_falls_back_to_a_qr(fake_webwx: FakeWebWx,
                                                      start: StartFn, online: Running,
                                                      alice: FakeAccount) -> None:
    online.driver.stop()
    online.join()
    saved = online.events.login_data[-1]
    fake_webwx.kick(alice)
    resumed = start(resume=saved)
    fake_webwx.expire(resumed.events.wait_state(LoginState.SCANNED)["uuid"])
    uuid = resumed.events.wait_state(LoginState.WAITING_SCAN)["uuid"]
    assert resumed.events.qrs
    fake_webwx.scan(uuid, alice)
    fake_webwx.confirm(uuid)
    assert resumed.events.wait_state(LoginState.ONLINE)["resumed"] == "qr"


def test_garbage_resume_data_means_a_fresh_qr(fake_webwx: FakeWebWx,
                                              start: StartFn) -> None:
    run = start(resume={"v": 1, "driver": "itchat", "login_info": "nonsense"})
    assert run.events.wait_state(LoginState.WAITING_SCAN)["uuid"]


# -- scale, isolation, hygiene ----------------------------------------------------------


def test_ten_accounts_at_once(fake_webwx: FakeWebWx, start: StartFn) -> None:
    accounts = [fake_webwx.add_account(f"user{i}") for i in range(10)]
    runs = [start() for _ in accounts]
    for run, account in zip(runs, accounts, strict=True):
        fake_webwx.scan(run.events.wait_state(LoginState.WAITING_SCAN)["uuid"], account)
    for run in runs:
        uuid = run.events.wait_state(LoginState.SCANNED)["uuid"]
        fake_webwx.confirm(uuid)
    for run, account in zip(runs, accounts, strict=True):
        assert run.events.wait_state(LoginState.ONLINE)["nickname"] == account.nickname
        fake_webwx.push_friend_text(account, 0, f"hi {account.nickname}")
    for run, account in zip(runs, accounts, strict=True):
        msg = run.events.wait_message()
        assert msg.text == f"hi {account.nickname}"
        assert msg.chat == account.friend_name(0)
        assert run.driver.send_text(msg.chat, f"reply from {account.nickname}")
    for account in accounts:
        assert [s.text for s in fake_webwx.sent(account)] == [
            f"reply from {account.nickname}"]
    assert len(fake_webwx.sessions()) == 10


def test_large_account_loads_every_contact_page(fake_webwx: FakeWebWx,
                                                start: StartFn) -> None:
    big = fake_webwx.add_account("Big", friends=500, groups=20, members=30, mps=10)
    fake_webwx.set_options(contact_page=100)
    run = qr_login(fake_webwx, start, big)
    driver = run.driver
    assert driver.contact(big.friend_name(499)) == Contact(big.friend_name(499), "好友499", "",
                                                           "friend")
    assert driver.contact(big.friend_name(1)) == Contact(big.friend_name(1), "好友001", "备注1",
                                                         "friend")
    assert driver.contact(big.group_name(19)) == Contact(big.group_name(19), "群聊19", "",
                                                         "group")
    assert driver.contact(big.mp_name(9)) == Contact(big.mp_name(9), "公众号9", "", "mp")
    assert driver.contact(big.user_name) is None
    saved = run.events.login_data[-1]
    assert len(saved["contacts"]["friends"]) == 500
    assert len(saved["contacts"]["groups"]) == 20
    assert len(json.dumps(saved)) < 100_000
    fake_webwx.push_group_text(big, 7, 29, "hello", mention_self=True)
    assert run.events.wait_message().sender == big.member_name(7, 29)
    fake_webwx.push_friend_text(big, 0, "next round")
    run.events.wait_message(lambda m: m.text == "next round")
    # White-box: itchat's contact dicts were rebuilt small (about 30 keys as received),
    # including the members of the group that spoke.
    core = driver._core
    assert max(len(c) for c in [*core.memberList, *core.mpList]) <= 7
    room = next(r for r in core.chatroomList if r["UserName"] == big.group_name(7))
    assert len(room["MemberList"]) == 31
    assert max(len(m) for m in room["MemberList"]) <= 4


def test_nothing_is_written_to_the_working_directory(
        fake_webwx: FakeWebWx, start: StartFn, alice: FakeAccount, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    run = qr_login(fake_webwx, start, alice)
    fake_webwx.push_friend_text(alice, 0, "hello")
    run.events.wait_message()
    run.driver.send_text(alice.friend_name(0), "hi")
    run.driver.stop()
    run.join()
    again = start(resume=run.events.login_data[-1])
    again.events.wait_state(LoginState.ONLINE)
    again.driver.logout()
    again.join()
    assert list(tmp_path.iterdir()) == []
    assert not os.path.exists(os.path.join(tmp_path, "QR.png"))


def test_strip_mention_forms() -> None:
    assert strip_mention("@Alice\u2005hi", ["Alice"]) == (True, "hi")
    assert strip_mention("hi @Alice", ["Alice"]) == (True, "hi")
    assert strip_mention("@Alice hi", ["", "Alice"]) == (True, "hi")
    assert strip_mention("@Alice2\u2005hi", ["Alice"]) == (False, "@Alice2\u2005hi")
    assert strip_mention("mail alice@Alice.com", ["Alice"]) == (
        False, "mail alice@Alice.com")


# -- the fake's own HTTP hooks ----------------------------------------------------------


def _call(base: str, path: str, body: dict[str, Any] | None = None) -> Any:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(base + path, data=data,
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=5) as response:
        raw = response.read()
    return raw.decode() if path == "/_fake/" else json.loads(raw)


def test_fake_hooks_over_http(fake_webwx: FakeWebWx, start: StartFn) -> None:
    base = fake_webwx.base_url
    made = _call(base, "/_fake/accounts", {"nickname": "Bob", "friends": 3})
    assert made["result"]["nickname"] == "Bob"
    run = start()
    uuid = run.events.wait_state(LoginState.WAITING_SCAN)["uuid"]
    logins = _call(base, "/_fake/logins")["logins"]
    assert [(x["uuid"], x["state"]) for x in logins] == [(uuid, "waiting")]
    assert uuid in _call(base, "/_fake/")
    _call(base, "/_fake/scan", {"uuid": uuid, "account": "Bob"})
    _call(base, "/_fake/confirm", {"uuid": uuid})
    run.events.wait_state(LoginState.ONLINE)
    uin = made["result"]["uin"]
    _call(base, "/_fake/push_friend", {"uin": uin, "from_user": 1, "text": "over http"})
    msg = run.events.wait_message()
    assert msg.text == "over http"
    _call(base, "/_fake/fail_sends", {"uin": "Bob", "n": 1})
    assert not run.driver.send_text(msg.chat, "x")
    assert run.driver.send_text(msg.chat, "y")
    sent = _call(base, f"/_fake/sent?uin={uin}")["sent"]
    assert [s["text"] for s in sent] == ["y"]
    assert _call(base, "/_fake/sessions")["sessions"][0]["nickname"] == "Bob"
    _call(base, "/_fake/kick", {"uin": uin})
    assert run.join() is LoginState.LOGGED_OUT
    with pytest.raises(urllib.error.HTTPError) as err:
        _call(base, "/_fake/push_friend", {"uin": uin, "from_user": 1, "text": "gone"})
    assert err.value.code == 404
    err.value.close()
