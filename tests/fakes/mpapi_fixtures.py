"""Fixtures for the fake official-account API (registered in tests/conftest.py).

The fake listens on a free loopback port inside the test's own event loop, so async
tests (pytest-asyncio, ``asyncio_mode = auto``) can use it directly; a sync test or
another process can run ``python -m sandbox.mpapi`` instead.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from mpbot.mpapi import MpApi
from sandbox.mpapi import FakeMpApi
from store import Stores


@pytest.fixture
async def fake_mpapi() -> AsyncIterator[FakeMpApi]:
    fake = FakeMpApi()
    await fake.start()
    try:
        yield fake
    finally:
        await fake.stop()


@pytest.fixture
def mpapi(fake_mpapi: FakeMpApi, stores: Stores) -> MpApi:
    """An MpApi aimed at the fake, sharing its token through this test's Redis prefix.
    The 2 s timeout keeps failing tests quick without being flaky on a busy machine."""
    return MpApi(fake_mpapi.base_url, fake_mpapi.appid, fake_mpapi.secret, stores.kv,
                 timeout=2.0)
