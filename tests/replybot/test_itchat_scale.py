"""What lets a worker hold thousands of itchat sessions: progress saves instead of full
ones while only the sync position moves, and at most a few session threads running at
once (the rest wait on a semaphore, not on the GIL)."""

from __future__ import annotations

import threading
import time

from replybot.driver import LoginState
from replybot.webwx import transport
from sandbox.webwx import FakeAccount, FakeWebWx
from store.bots import merge_login_data
from tests.replybot import test_itchat_driver as driver_tests
from tests.replybot.test_itchat_driver import StartFn, qr_login

# The driver tests' fixtures, shared: a driver starter and a fake account.
start = driver_tests.start
alice = driver_tests.alice


def test_messages_save_progress_and_contact_changes_save_everything(
        fake_webwx: FakeWebWx, start: StartFn, alice: FakeAccount) -> None:
    run = qr_login(fake_webwx, start, alice, save_interval=0.0)
    events = run.events
    (full,) = events.login_data  # right after login: the full state
    assert not full.get("partial")
    assert full["contacts"]["friends"]
    fake_webwx.push_friend_text(alice, 0, "你好")
    events.wait_message()
    progress = events.wait_for(lambda: next(
        (d for d in events.login_data if d.get("partial")), None))
    assert set(progress) == {"v", "driver", "partial", "login_info", "saved_at"}
    assert set(progress["login_info"]) == {"SyncKey", "synckey"}
    assert progress["login_info"]["SyncKey"] != full["login_info"]["SyncKey"]
    # A new friend changes the contacts: the next save is complete again.
    newcomer = fake_webwx.add_friend(alice)
    events.wait_for(lambda: any(
        not d.get("partial") and any(f[0] == newcomer for f in d["contacts"]["friends"])
        for d in events.login_data))


def test_a_session_resumes_from_full_state_plus_progress(
        fake_webwx: FakeWebWx, start: StartFn, alice: FakeAccount) -> None:
    run = qr_login(fake_webwx, start, alice, save_interval=0.0)
    fake_webwx.push_friend_text(alice, 0, "第一条")
    run.events.wait_message()
    full = next(d for d in run.events.login_data if not d.get("partial"))
    progress = run.events.wait_for(lambda: next(
        (d for d in reversed(run.events.login_data) if d.get("partial")), None))
    # As the worker crashed here: neither the stop's full save nor anything later.
    saved = merge_login_data(full, progress)
    run.driver.stop()
    run.join()
    fake_webwx.push_friend_text(alice, 1, "第二条")
    resumed = start(resume=saved)
    assert resumed.events.wait_state(LoginState.ONLINE)["resumed"] == "hot"
    # Only what came after the saved sync position is delivered again.
    assert resumed.events.wait_message().text == "第二条"


def test_few_session_threads_run_at_once(fake_webwx: FakeWebWx, start: StartFn) -> None:
    # Twelve sessions all busy at once: never more than ACTIVE_SESSIONS hold a token.
    accounts = [fake_webwx.add_account(f"acct{i}", friends=3) for i in range(12)]
    runs = [qr_login(fake_webwx, start, account) for account in accounts]
    busiest = 0
    stop = threading.Event()

    def watch() -> None:
        nonlocal busiest
        limit = transport.ACTIVE_SESSIONS
        while not stop.is_set():
            # A BoundedSemaphore's _value: tokens left.
            busiest = max(busiest, limit - transport.activity._value)
            time.sleep(0.0005)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    for _ in range(3):
        for account in accounts:
            fake_webwx.push_friend_text(account, 0, "hi")
    for run in runs:
        run.events.wait_for(lambda run=run: len(run.events.messages) >= 3)
    stop.set()
    watcher.join()
    assert 1 <= busiest <= transport.ACTIVE_SESSIONS
    for run in runs:
        run.driver.stop()
    for run in runs:
        run.join()
    # Every token is back once the sessions ended.
    assert transport.activity._value == transport.ACTIVE_SESSIONS
