"""The async itchat driver against the fake web WeChat: logins waiting on the loop (their
short steps on its bounded pool), the receiving loop as coroutines on one event loop (here
on a thread of its own, so that the test thread can play the phone and wait on the thread
driver tests' Recorder)."""

from __future__ import annotations

import asyncio
import dataclasses
import socket
import threading
import time
from collections.abc import Coroutine, Iterator
from typing import Any

import pytest

from config import ConfigError, Settings, load_settings
from replybot.driver import AsyncDriver, IncomingMessage, LoginState
from replybot.webwx import aio, transport
from replybot.webwx.aio import AsyncItchatDriver
from replybot.webwx.driver import ItchatDriver, Phase
from replybot.webwx.library import configure_itchat
from sandbox.webwx import SEND_FAILED_RET, FakeAccount, FakeWebWx
from store import Stores
from tests.e2e.botrig import Rig
from tests.replybot import test_itchat_driver as driver_tests
from tests.replybot.test_itchat_driver import WAIT, Recorder, Running, qr_login
from tests.util import until
from wxreply.serve import build_worker

alice = driver_tests.alice  # the driver tests' fake account

# Parity: the thread driver's own tests, collected here again, run on the async driver
# (they take this module's ``start`` and ``online`` fixtures).  Left out: those about the
# thread itself (the events' thread, activity tokens), and those that test no driver
# (itchat's configuration, the fake, pure helpers, a driver that is never run).
from tests.replybot.test_itchat_driver import (  # noqa: E402, F401 - collected by pytest
    test_account_barred_from_web_login_is_refused,
    test_every_refusal_variant_ends_refused_with_wechats_words,
    test_friend_text_arrives_unescaped,
    test_garbage_resume_data_means_a_fresh_qr,
    test_group_text_without_and_with_mention,
    test_kick_ends_logged_out_with_retcode,
    test_large_account_loads_every_contact_page,
    test_login_data_is_throttled,
    test_logout_logs_out_at_wechat,
    test_logout_while_waiting_for_a_scan_ends_logged_out,
    test_mention_uses_the_display_name_in_the_group,
    test_mp_and_filehelper_and_stranger_are_classified,
    test_new_friend_and_sync_key_are_saved,
    test_nothing_is_written_to_the_working_directory,
    test_owner_typing_on_the_phone_is_from_self,
    test_phases_of_a_qr_login_then_logout,
    test_phases_of_a_stop_while_online,
    test_qr_expiry_at_wechat_shows_a_new_qr_then_deadline_expires,
    test_resume_falls_back_to_push_login,
    test_resume_push_login_auto_confirmed,
    test_resume_push_not_confirmed_falls_back_to_a_qr,
    test_resume_with_a_stale_sync_key_sees_messages_again,
    test_resume_without_scan_gets_messages_queued_meanwhile,
    test_send_text_is_recorded_and_failures_are_reported,
    test_sends_from_other_threads_while_receiving,
    test_sent_text_can_come_back_as_own_message,
    test_stop_keeps_the_web_session_and_saves_it,
    test_stop_while_waiting_for_a_scan_returns_promptly,
    test_ten_accounts_at_once,
)
from tests.replybot.test_itchat_scale import (  # noqa: E402, F401 - collected by pytest
    test_a_session_resumes_from_full_state_plus_progress,
    test_messages_save_progress_and_contact_changes_save_everything,
)
from tests.replybot.test_webwx_today import (  # noqa: E402, F401 - collected by pytest
    NoticeRecorder,
    test_1102_seconds_after_login_ends_closed_not_logged_out,
    test_a_deaf_session_ends_for_a_resume,
    test_a_restriction_from_the_weixin_account_is_a_notice,
    test_a_send_refused_as_restricted_is_a_notice,
    test_kick_with_1102_is_a_closure_too,
    test_no_kind_of_non_text_message_is_delivered_and_text_still_is,
    test_other_selectors_with_nothing_behind_them,
    test_status_notifications_do_not_trigger_saves,
    test_the_login_page_request_carries_the_uos_headers,
    test_the_owner_scans_once_through_the_post_scan_wait,
    test_three_synccheck_503s_are_retried_not_a_logout,
    test_twenty_empty_selector_2_rounds_and_the_session_still_answers,
    test_without_the_wait_a_client_loops_into_a_new_qr,
)


class Loop:
    """One event loop on a thread: every async driver of a test runs on it."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="test-loop",
                                       daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, Any], timeout: float = WAIT) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(WAIT)
        self.loop.close()


class AsyncRunning(Running):
    """An async driver running as a task on the test loop (the Running interface)."""

    def __init__(self, loop: Loop, driver: AsyncItchatDriver, events: Recorder,
                 resume: dict[str, Any] | None, deadline: float) -> None:
        self.driver, self.events, self.loop = driver, events, loop
        self.async_driver = driver
        self.future = asyncio.run_coroutine_threadsafe(
            driver.arun(events, resume, deadline), loop.loop)

    def join(self, timeout: float = WAIT) -> LoginState:
        result: LoginState = self.future.result(timeout)
        return result

    def send(self, to_user: str, text: str) -> bool:
        sent: bool = self.loop.run(self.async_driver.asend_text(to_user, text))
        return sent


@pytest.fixture
def loop() -> Iterator[Loop]:
    lp = Loop()
    yield lp
    lp.close()


@pytest.fixture
def start(fake_webwx: FakeWebWx, loop: Loop) -> Iterator[Any]:
    """Start async drivers on the test loop; whatever still runs is stopped at the end."""
    runs: list[AsyncRunning] = []

    def start_driver(resume: dict[str, Any] | None = None, qr_timeout: float = 30.0,
                     **kwargs: Any) -> AsyncRunning:
        run = AsyncRunning(loop, AsyncItchatDriver(**kwargs), NoticeRecorder(), resume,
                           time.time() + qr_timeout)
        runs.append(run)
        return run

    yield start_driver
    for run in runs:
        run.driver.stop()
    for run in runs:
        run.join()


@pytest.fixture
def online(fake_webwx: FakeWebWx, start: Any, alice: FakeAccount) -> AsyncRunning:
    run: AsyncRunning = qr_login(fake_webwx, start, alice)
    return run


def _timed_join(run: AsyncRunning) -> tuple[LoginState, float]:
    began = time.monotonic()
    final = run.join()
    return final, time.monotonic() - began


# -- the setting ------------------------------------------------------------------------


def test_the_setting_picks_the_driver() -> None:
    assert load_settings({}).bot_driver == "async"
    assert load_settings({"WXR_BOT_DRIVER": "Thread"}).bot_driver == "thread"
    with pytest.raises(ConfigError, match="WXR_BOT_DRIVER: must be one of thread, async"):
        load_settings({"WXR_BOT_DRIVER": "fibers"})
    assert isinstance(AsyncItchatDriver(), AsyncDriver)


# -- login, messages, replies ---------------------------------------------------------


def test_qr_login_then_a_friend_message_is_answered(fake_webwx: FakeWebWx, start: Any,
                                                    alice: FakeAccount, loop: Loop) -> None:
    run: AsyncRunning = qr_login(fake_webwx, start, alice)
    events = run.events
    assert events.state_names == ["waiting_scan", "scanned", "online"]
    assert events.states[-1][1] == {"nickname": "Alice", "user_name": alice.user_name,
                                    "resumed": "qr"}
    assert events.qrs[0].startswith(b"\x89PNG")
    text = "价格 <b>&amp; \"多少\"\n第二行"
    pushed = fake_webwx.push_friend_text(alice, 2, text)
    msg = events.wait_message()
    # Exactly what the thread driver gives (test_itchat_driver's unescaping test).
    assert msg == IncomingMessage(
        msg_id=pushed["MsgId"], chat=alice.friend_name(2), sender=alice.friend_name(2),
        text=text, is_group=False, mentioned=False, from_self=False, chat_kind="friend",
        create_time=pushed["CreateTime"], chat_key=msg.chat_key)
    assert msg.chat_key.startswith("f:")
    assert run.send(msg.chat, "自动回复")
    assert [(s.to_user, s.text) for s in fake_webwx.sent(alice)] == [(msg.chat, "自动回复")]
    events.wait_for(lambda: events.syncs >= 1)
    # Every event came on the loop, even those of the login on the pool.
    assert events.threads == {loop.thread.ident}


def test_group_mention_is_shaped_as_the_thread_driver_does(
        fake_webwx: FakeWebWx, online: AsyncRunning, alice: FakeAccount) -> None:
    group, member = alice.group_name(1), alice.member_name(1, 2)
    fake_webwx.push_group_text(alice, 1, 2, "大家好")
    plain = online.events.wait_message()
    assert (plain.chat, plain.sender, plain.text, plain.chat_kind) == (
        group, member, "大家好", "group")
    assert plain.is_group
    assert not plain.mentioned
    assert not plain.from_self
    fake_webwx.push_group_text(alice, 1, 2, "营业时间？", mention_self=True)
    at = online.events.wait_message(lambda m: m.mentioned)
    assert (at.chat, at.sender, at.text) == (group, member, "营业时间？")
    assert online.driver.contact(group) is not None


def test_a_known_groups_message_is_shaped_on_the_loop(
        fake_webwx: FakeWebWx, online: AsyncRunning, alice: FakeAccount) -> None:
    """The first message of a member itchat does not know makes it fetch the group (on
    the work pool); after that, the group's messages are shaped on the loop, not queued
    behind other sessions' fetches."""
    driver = online.async_driver
    threads: list[str] = []
    shape_round = driver._shape_round

    def recording(msg_list: Any, contact_list: Any) -> None:
        threads.append(threading.current_thread().name)
        shape_round(msg_list, contact_list)

    driver._shape_round = recording  # type: ignore[method-assign]
    fake_webwx.push_group_text(alice, 0, 1, "第一句")
    assert online.events.wait_message().text == "第一句"
    fake_webwx.push_group_text(alice, 0, 1, "第二句", mention_self=True)
    second = online.events.wait_message(lambda m: m.mentioned)
    assert (second.chat, second.sender, second.text) == (
        alice.group_name(0), alice.member_name(0, 1), "第二句")
    # Another member: the first fetch brought the whole member list.
    fake_webwx.push_group_text(alice, 0, 2, "别人")
    assert online.events.wait_message(lambda m: m.text == "别人").is_group
    assert threads[0].startswith("aio-work")
    assert threads[1:] == ["test-loop", "test-loop"], threads


def test_refused_sends_report_the_restriction(fake_webwx: FakeWebWx, online: AsyncRunning,
                                              alice: FakeAccount) -> None:
    fake_webwx.fail_sends(alice, 1)  # 1205, "操作太频繁"
    friend = alice.friend_name(0)
    assert not online.send(friend, "一")
    events = online.events
    assert isinstance(events, NoticeRecorder)
    events.wait_for(lambda: events.notices)
    assert events.notices == [("restricted", {"ret": SEND_FAILED_RET, "source": "send"})]
    assert online.send(friend, "二")
    assert not online.send("", "never to the owner")


# -- logins wait on the loop -----------------------------------------------------------


def test_more_logins_wait_for_a_scan_than_the_login_pool_has_threads(
        fake_webwx: FakeWebWx, start: Any, loop: Loop) -> None:
    """A login waiting for its owner holds no thread of the login pool: half again as
    many sessions as it has threads all show their QR at once, in held polls, and each
    one can be scanned and confirmed."""
    n = aio.LOGIN_THREADS + 8
    fake_webwx.set_options(hold_login=25.0)  # held as long as WeChat holds it
    accounts = [fake_webwx.add_account(f"waiter{i}", friends=1, groups=0, mps=0)
                for i in range(n)]
    runs: list[AsyncRunning] = [start() for _ in range(n)]
    uuids = [run.events.wait_state(LoginState.WAITING_SCAN)["uuid"] for run in runs]
    assert all(len(run.events.qrs) == 1 for run in runs)
    waiting = {login["uuid"] for login in fake_webwx.pending_logins()
               if login["state"] == "waiting"}
    assert waiting == set(uuids)
    time.sleep(0.3)  # every session inside its held login poll
    assert all(run.driver.phase is Phase.AWAITING_SCAN for run in runs)
    # The pool is free for other sessions' short steps (a resume, a new QR) meanwhile.
    began = time.monotonic()
    aio.login_pool().submit(lambda: None).result(WAIT)
    assert time.monotonic() - began < 0.5
    for uuid, account in zip(uuids, accounts, strict=True):
        fake_webwx.scan(uuid, account)
    for run in runs:
        run.events.wait_state(LoginState.SCANNED)
    for uuid in uuids:
        fake_webwx.confirm(uuid)
    for run in runs:
        run.events.wait_state(LoginState.ONLINE)
    assert {run.driver.nickname for run in runs} == {a.nickname for a in accounts}
    for run in runs:
        assert run.events.state_names == ["waiting_scan", "scanned", "online"]
        assert run.driver.phase is Phase.ONLINE
        assert run.events.threads == {loop.thread.ident}
    # Online, each one receives.
    fake_webwx.push_friend_text(accounts[-1], 0, "排在最后")
    by_nick = {run.driver.nickname: run for run in runs}
    assert by_nick[accounts[-1].nickname].events.wait_message().text == "排在最后"


@pytest.mark.parametrize("waiting", ["in the login poll", "in the post-scan wait"])
def test_stop_cuts_a_login_waiting_on_the_loop_at_once(
        fake_webwx: FakeWebWx, start: Any, alice: FakeAccount, waiting: str) -> None:
    fake_webwx.set_options(hold_login=30.0)
    run: AsyncRunning = start()
    uuid = run.events.wait_state(LoginState.WAITING_SCAN)["uuid"]
    names = ["waiting_scan"]
    phase = Phase.AWAITING_SCAN
    if waiting == "in the post-scan wait":
        configure_itchat(fake_webwx.base_url, scan_wait=30.0)
        fake_webwx.scan(uuid, alice)
        run.events.wait_state(LoginState.SCANNED)
        names.append("scanned")
        phase = Phase.AWAITING_CONFIRM
    time.sleep(0.3)  # into the held poll, or the wait
    assert run.driver.phase is phase
    run.driver.stop()
    final, took = _timed_join(run)
    assert final is LoginState.LOGGED_OUT
    assert took < 0.5, f"stopped after {took:.3f} s"
    assert run.events.state_names == names  # stop() is not reported
    assert run.driver.phase is Phase.ENDED


# -- ends -------------------------------------------------------------------------------


def test_stop_cuts_a_held_poll_keeps_the_session_and_resumes(
        fake_webwx: FakeWebWx, start: Any, alice: FakeAccount) -> None:
    run: AsyncRunning = qr_login(fake_webwx, start, alice)
    fake_webwx.set_options(hold_sync=30.0)
    time.sleep(0.5)  # into a held synccheck
    run.driver.stop()
    final, took = _timed_join(run)
    assert final is LoginState.LOGGED_OUT
    assert took < 1.0
    assert run.events.state_names == ["waiting_scan", "scanned", "online"]  # no on_state
    assert fake_webwx.logouts == []
    assert fake_webwx.session_valid(alice)
    saved = run.events.login_data[-1]
    assert not saved.get("partial")
    assert saved["login_info"]["wxsid"]
    fake_webwx.push_friend_text(alice, 1, "离线时")
    resumed: AsyncRunning = start(resume=saved)
    assert resumed.events.wait_state(LoginState.ONLINE)["resumed"] == "hot"
    assert resumed.events.wait_message().text == "离线时"


def test_logout_cuts_a_held_poll_and_logs_out(fake_webwx: FakeWebWx, online: AsyncRunning,
                                              alice: FakeAccount) -> None:
    fake_webwx.set_options(hold_sync=30.0)
    time.sleep(0.5)
    online.driver.logout()
    final, took = _timed_join(online)
    assert final is LoginState.LOGGED_OUT
    assert took < 1.0
    assert online.events.states[-1] == (LoginState.LOGGED_OUT, {"reason": "logout"})
    assert [x.uin for x in fake_webwx.logouts] == [alice.uin]
    assert isinstance(online.driver, AsyncItchatDriver)
    assert online.driver.phase is Phase.ENDED


@pytest.mark.parametrize(("retcode", "state"), [("1101", LoginState.LOGGED_OUT),
                                                ("1100", LoginState.LOGGED_OUT),
                                                ("1102", LoginState.CLOSED)])
def test_wechat_ending_the_session(fake_webwx: FakeWebWx, online: AsyncRunning,
                                   alice: FakeAccount, retcode: str,
                                   state: LoginState) -> None:
    fake_webwx.kick(alice, retcode)
    assert online.join() is state
    assert online.events.states[-1] == (state, {"reason": retcode})


def test_failed_synccheck_requests_are_retried(fake_webwx: FakeWebWx, online: AsyncRunning,
                                               alice: FakeAccount) -> None:
    fake_webwx.fail_synccheck(alice, 3, status=503)
    fake_webwx.push_friend_text(alice, 0, "还在吗")
    # Back-off (0.5 + 1 + 2 s) and itchat's 1 s after each failure: well inside WAIT.
    msg = online.events.wait_message()
    assert msg.text == "还在吗"
    assert online.send(msg.chat, "在")
    assert online.events.state_names == ["waiting_scan", "scanned", "online"]
    assert not online.future.done()


def test_a_deaf_session_ends_to_be_resumed(fake_webwx: FakeWebWx, online: AsyncRunning,
                                           alice: FakeAccount) -> None:
    fake_webwx.fail_webwxsync(alice, 10, ret=-1)
    assert online.join() is LoginState.LOGGED_OUT
    assert online.events.states[-1] == (LoginState.LOGGED_OUT, {"reason": "error"})


# -- many sessions on one loop ----------------------------------------------------------


def test_a_hung_endpoint_stalls_only_its_own_session(fake_webwx: FakeWebWx, start: Any,
                                                     alice: FakeAccount) -> None:
    # A listening socket nobody accepts on: the kernel completes the handshake and the
    # request goes out, but no answer ever comes (a hung push host).
    hole = socket.socket()
    hole.bind(("127.0.0.1", 0))
    hole.listen(8)
    try:
        bob = fake_webwx.add_account("Bob", friends=2, groups=0, mps=0)
        first: AsyncRunning = qr_login(fake_webwx, start, bob)
        first.driver.stop()
        first.join()
        saved = dict(first.events.login_data[-1])
        saved["login_info"] = dict(saved["login_info"],
                                   syncUrl=f"http://127.0.0.1:{hole.getsockname()[1]}")
        hung: AsyncRunning = start(resume=saved)
        hung.events.wait_state(LoginState.ONLINE)  # its first webwxsync went to the fake
        other: AsyncRunning = qr_login(fake_webwx, start, alice)
        for n in range(3):
            began = time.monotonic()
            fake_webwx.push_friend_text(alice, 0, f"第{n}条")
            msg = other.events.wait_message(lambda m, n=n: m.text == f"第{n}条")
            assert other.send(msg.chat, "好")
            took = time.monotonic() - began
            assert took < 0.2, f"answered after {took:.3f} s"
        assert hung.events.syncs == 0  # its synccheck never came back
        hung.driver.stop()
        final, took = _timed_join(hung)
        assert final is LoginState.LOGGED_OUT
        assert took < 1.0
    finally:
        hole.close()


def test_two_hundred_sessions_on_one_loop_use_no_thread_each(
        fake_webwx: FakeWebWx, start: Any) -> None:
    n = 200
    # Holds as long as the real service's (a pushed message ends one at once): 200 short
    # holds would be 500 synccheck requests a second, a load test of the test machine.
    fake_webwx.set_options(hold_sync=25.0)
    accounts = [fake_webwx.add_account(f"many{i}", friends=1, groups=0, mps=0)
                for i in range(n)]
    before = threading.active_count()
    runs: list[AsyncRunning] = [start() for _ in range(n)]
    # Play the phone for every QR as it appears.
    scanned: set[str] = set()
    peak = 0
    deadline = time.monotonic() + 90
    while len(scanned) < n:
        assert time.monotonic() < deadline, f"only {len(scanned)} logins shown"
        for login in fake_webwx.pending_logins():
            if login["state"] == "waiting" and login["uuid"] not in scanned:
                fake_webwx.scan(login["uuid"], accounts[len(scanned)])
                fake_webwx.confirm(login["uuid"])
                scanned.add(login["uuid"])
        peak = max(peak, threading.active_count())
        time.sleep(0.01)
    for run in runs:
        run.events.wait_state(LoginState.ONLINE)
    peak = max(peak, threading.active_count())
    extra = aio.LOGIN_THREADS + aio.WORK_THREADS
    assert peak - before <= extra, f"{peak - before} threads for {n} sessions"
    # Receiving goes on for every one of them, still without more threads.
    for account in accounts[::40]:
        fake_webwx.push_friend_text(account, 0, "你好")
    by_nick = {run.driver.nickname: run for run in runs}
    for account in accounts[::40]:
        assert by_nick[account.nickname].events.wait_message().text == "你好"
    assert threading.active_count() - before <= extra
    began = time.monotonic()
    for run in runs:
        run.driver.stop()
    assert all(run.join() is LoginState.LOGGED_OUT for run in runs)
    assert time.monotonic() - began < 5.0


def test_group_fetches_of_many_sessions_leave_the_loop_its_share_of_the_gil(
        fake_webwx: FakeWebWx, start: Any) -> None:
    """Eight sessions' first group messages at once: each makes itchat fetch a group of
    200 members and merge it in on the work pool.  At most ``POOL_TOKENS`` of those
    threads run Python at once (the loop shares the GIL with no more), every message is
    shaped, and every token is back afterwards."""
    n = 8
    accounts = [fake_webwx.add_account(f"groupy{i}", friends=1, groups=1, members=200,
                                       mps=0) for i in range(n)]
    runs: list[AsyncRunning] = [qr_login(fake_webwx, start, account) for account in accounts]
    busiest = 0
    stop = threading.Event()

    def watch() -> None:
        nonlocal busiest
        while not stop.is_set():
            busiest = max(busiest, aio.POOL_TOKENS - aio._tokens._value)  # tokens left
            time.sleep(0.0002)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        for account in accounts:
            fake_webwx.push_group_text(account, 0, 150, "有人吗")
        for run in runs:
            assert run.events.wait_message().text == "有人吗"
    finally:
        stop.set()
        watcher.join()
    assert 1 <= busiest <= aio.POOL_TOKENS, busiest
    uins = {account.uin for account in accounts}
    fetched = [row["member_lists"] for row in fake_webwx.sessions() if row["uin"] in uins]
    assert fetched == [1] * n  # each session fetched its group, once
    assert aio._tokens._value == aio.POOL_TOKENS


def test_a_round_queued_for_the_work_pool_still_tells_the_watchdog_it_is_alive(
        fake_webwx: FakeWebWx, online: AsyncRunning, alice: FakeAccount,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Every work-pool thread busy (other sessions' group fetches): a round that must
    fetch a group waits in the queue, and the session keeps beating ``on_sync`` meanwhile
    (``SHAPING_BEAT_S``, shortened here) so that the watchdog does not recycle it; the
    message is shaped once a thread is free."""
    monkeypatch.setattr(aio, "SHAPING_BEAT_S", 0.1)
    release = threading.Event()
    busy = [aio.work_pool().submit(release.wait, WAIT) for _ in range(aio.WORK_THREADS)]
    try:
        online.events.wait_for(lambda: online.events.syncs >= 1)
        fake_webwx.push_group_text(alice, 1, 2, "排队中")
        before = online.events.syncs
        # Beats while queued: well past the synccheck that brought the message.
        online.events.wait_for(lambda: online.events.syncs >= before + 5)
        assert all(m.text != "排队中" for m in online.events.messages)  # not shaped yet
    finally:
        release.set()
    for future in busy:
        future.result(WAIT)
    assert online.events.wait_message(lambda m: m.text == "排队中").is_group


def test_a_token_is_given_back_while_its_thread_waits() -> None:
    """``holding`` takes a token for a block of Python, ``released`` gives it back for a
    wait inside it (the transport wraps every request in it) and takes it again."""
    tokens = threading.BoundedSemaphore(1)
    inside = threading.Event()
    go_on = threading.Event()

    def work() -> None:
        with transport.holding(tokens):
            with transport.released():  # as the transport does around a request
                inside.set()
                go_on.wait(WAIT)
            assert tokens._value == 0  # taken again after the wait

    thread = threading.Thread(target=work)
    thread.start()
    assert inside.wait(WAIT)
    assert tokens.acquire(timeout=WAIT)  # free while the other thread waits
    tokens.release()
    go_on.set()
    thread.join(WAIT)
    assert tokens._value == 1
    with transport.released():  # a thread that holds no token: nothing to give back
        assert tokens._value == 1


def test_requests_to_an_address_take_no_executor_thread(fake_webwx: FakeWebWx,
                                                       loop: Loop) -> None:
    """Tornado's own resolver runs getaddrinfo on the loop's default executor for every
    request (each is a new connection), an IP address included: the shared client's
    does not, so a long-poll renewal or a send never queues for a thread there."""
    from concurrent.futures import ThreadPoolExecutor

    from tornado.httpclient import HTTPRequest

    resolver = aio._QuickResolver()

    async def resolve() -> Any:
        return await resolver.resolve("localhost", 80, socket.AF_INET)

    first = loop.run(resolve())  # a host name: on the executor, the first time
    closed = ThreadPoolExecutor(1)
    closed.shutdown()  # any run_in_executor(None, ...) on this loop now raises
    loop.loop.call_soon_threadsafe(loop.loop.set_default_executor, closed)

    async def fetch() -> int:
        response = await aio.http_client().fetch(
            HTTPRequest(f"{fake_webwx.base_url}/_fake"), raise_error=False)
        return response.code

    assert fake_webwx.base_url.startswith("http://127.0.0.1:")
    assert loop.run(fetch()) == 200  # Tornado's own resolver would fail it: 599
    assert loop.run(resolve()) == first  # then from the cache


@pytest.mark.parametrize(("setting", "driver"), [("thread", ItchatDriver),
                                                 ("async", AsyncItchatDriver)])
def test_build_worker_picks_the_driver_of_the_setting(
        fake_webwx: FakeWebWx, stores: Stores, settings: Settings, setting: str,
        driver: type) -> None:
    settings = dataclasses.replace(settings, bot_driver=setting,
                                   wechat_login_base=fake_webwx.base_url)
    worker = build_worker(settings, stores)
    try:
        assert type(worker.driver_factory()) is driver
    finally:
        worker.send_pool.shutdown()


# -- in a worker ------------------------------------------------------------------------


@pytest.fixture
def bot_driver() -> str:
    """The rig's worker (tests/e2e/botrig.py) on the async driver."""
    return "async"


async def test_a_worker_runs_async_sessions_as_tasks_and_answers(rig: Rig) -> None:
    account = rig.webwx.add_account("小异", friends=2, groups=0, mps=0)
    await rig.chat("添加 你好 稍后回复")
    await rig.login(account)
    assert rig.worker is not None
    (session,) = rig.worker.sessions.values()
    assert isinstance(session.driver, AsyncItchatDriver)
    assert not [t.name for t in threading.enumerate() if t.name.startswith("bot-")]
    rig.webwx.push_friend_text(account, 0, "你好")
    await until(lambda: rig.replies_to(account, account.friend_name(0)) == ["稍后回复"])
    await rig.stop_worker()  # a stop keeps the login resumable, as with threads
    assert await rig.state(await rig.uid()) == "online"
    assert rig.webwx.session_valid(account)
