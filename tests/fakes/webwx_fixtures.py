"""Fixtures for the protocol fakes (registered in tests/conftest.py).

``fake_webwx``: the fake web WeChat (:mod:`sandbox.webwx`) with short long-poll holds,
and itchat aimed at it (``configure_itchat``, what ``WXR_WECHAT_LOGIN_BASE`` does in the
product).  The fake runs on a thread with its own event loop, because itchat blocks: the
test thread (or a session thread) can wait on it while the fake answers, and async tests
can use it as well.  One server serves the whole test session (itchat's base URL is a
process global, so it stays put); every test gets it reset: no accounts, logins or
sessions, default options.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from replybot.webwx.library import configure_itchat
from sandbox.webwx import FakeWebWx

# Short holds keep tests fast while still exercising held (not instant) long-polls.
TEST_HOLD_LOGIN = 0.4
TEST_HOLD_SYNC = 0.4
# The fake's post-scan window is off by default (its ``scan_wait`` option), so the driver
# need not wait after a scan; tests of the window set both.
TEST_SCAN_WAIT = 0.0


@pytest.fixture(scope="session")
def _webwx_server() -> Iterator[FakeWebWx]:
    fake = FakeWebWx(hold_login=TEST_HOLD_LOGIN, hold_sync=TEST_HOLD_SYNC)
    fake.start_in_thread()
    try:
        yield fake
    finally:
        fake.stop_thread()


@pytest.fixture
def fake_webwx(_webwx_server: FakeWebWx) -> Iterator[FakeWebWx]:
    """The fake web WeChat (``.base_url``, hooks such as ``scan``/``confirm``/
    ``push_friend_text``/``sent``), reset for this test, with itchat pointed at it."""
    _webwx_server.reset()
    configure_itchat(_webwx_server.base_url, scan_wait=TEST_SCAN_WAIT)
    try:
        yield _webwx_server
    finally:
        # Ends every session and answers every held poll, so a driver left running by
        # a failed test sees 1101 and stops instead of polling into the next test.
        _webwx_server.reset()
