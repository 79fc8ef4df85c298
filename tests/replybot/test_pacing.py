"""Pacing with a frozen clock (freezegun) against the real Redis."""

from __future__ import annotations

import dataclasses

import pytest
from freezegun import freeze_time
from freezegun.api import FrozenDateTimeFactory

from config.clock import wall_clock
from replybot.pacing import Pacer, PacingRules
from store import Stores
from store.pacing import PaceStore

FRIEND = "@friend"


@pytest.fixture
def clock() -> FrozenDateTimeFactory:
    with freeze_time("2026-06-01 10:00:00", real_asyncio=True) as frozen:
        yield frozen


@pytest.fixture
def pacer(stores: Stores, clock: FrozenDateTimeFactory) -> Pacer:
    return Pacer(PaceStore(stores.redis, stores.kv.prefix), PacingRules(), now=wall_clock)


async def test_one_reply_per_rule_per_contact_per_minute(pacer: Pacer,
                                                         clock: FrozenDateTimeFactory) -> None:
    assert (await pacer.check(1, FRIEND, 1)).allowed
    assert (await pacer.check(1, FRIEND, 1)).reason == "cooldown"
    assert (await pacer.check(1, FRIEND, 2)).allowed        # another rule
    assert (await pacer.check(1, "@other", 1)).allowed      # another contact
    assert (await pacer.check(2, FRIEND, 1)).allowed        # another account
    clock.tick(59)
    assert (await pacer.check(1, FRIEND, 1)).reason == "cooldown"
    clock.tick(2)
    assert (await pacer.check(1, FRIEND, 1)).allowed


async def test_an_edited_reply_goes_out_inside_the_old_ones_cooldown(
        pacer: Pacer, clock: FrozenDateTimeFactory) -> None:
    assert (await pacer.check(1, FRIEND, 1, "9.9 元")).allowed
    clock.tick(10)
    assert (await pacer.check(1, FRIEND, 1, "9.9 元")).reason == "cooldown"
    # The owner edited rule 1's reply: the friend who asks again gets the new answer once.
    assert (await pacer.check(1, FRIEND, 1, "今天特价 8.8 元")).allowed
    assert (await pacer.check(1, FRIEND, 1, "今天特价 8.8 元")).reason == "cooldown"


async def test_at_most_twenty_replies_a_minute(pacer: Pacer, clock: FrozenDateTimeFactory) -> None:
    verdicts = [await pacer.check(1, f"@c{i}", 1) for i in range(25)]
    assert sum(v.allowed for v in verdicts) == 20
    assert {v.reason for v in verdicts if not v.allowed} == {"rate"}
    clock.tick(30)
    assert (await pacer.check(1, "@late", 1)).reason == "rate"  # a sliding minute
    clock.tick(31)
    assert (await pacer.check(1, "@later", 1)).allowed


async def test_loop_guard_trips_after_five_and_tells_once(pacer: Pacer,
                                                          clock: FrozenDateTimeFactory) -> None:
    for rule in range(1, 6):                   # five different rules: no cooldown in the way
        assert (await pacer.check(1, FRIEND, rule)).allowed
    sixth = await pacer.check(1, FRIEND, 6)
    assert (sixth.allowed, sixth.reason, sixth.tell_owner) == (False, "loop_guard", True)
    seventh = await pacer.check(1, FRIEND, 7)
    assert (seventh.reason, seventh.tell_owner) == ("loop_guard", False)  # told once
    assert (await pacer.check(1, "@someone_else", 1)).allowed
    clock.tick(601)
    assert (await pacer.check(1, FRIEND, 8)).allowed


async def test_takeover_pauses_a_chat_for_ten_minutes(pacer: Pacer,
                                                      clock: FrozenDateTimeFactory) -> None:
    await pacer.owner_wrote(1, FRIEND)
    assert (await pacer.check(1, FRIEND, 1)).reason == "paused"
    assert (await pacer.check(1, "@other", 1)).allowed
    clock.tick(599)
    assert (await pacer.check(1, FRIEND, 1)).reason == "paused"
    clock.tick(2)
    assert (await pacer.check(1, FRIEND, 1)).allowed


async def test_cooldown_is_atomic_under_concurrency(pacer: Pacer) -> None:
    import asyncio

    verdicts = await asyncio.gather(*(pacer.check(1, FRIEND, 1) for _ in range(10)))
    assert sum(v.allowed for v in verdicts) == 1


def test_delay_is_drawn_from_the_configured_range() -> None:
    pacer = Pacer(None, PacingRules())  # type: ignore[arg-type]
    delays = [pacer.delay() for _ in range(500)]
    assert all(0.5 <= d <= 2.0 for d in delays)
    assert max(delays) - min(delays) > 1.0  # actually random
    off = Pacer(None, dataclasses.replace(PacingRules(), delay_min_s=0, delay_max_s=0))  # type: ignore[arg-type]
    assert off.delay() == 0.0


def test_rules_come_from_settings() -> None:
    from config import load_settings

    rules = PacingRules.from_settings(load_settings({
        "WXR_PACE_PER_MINUTE": "7", "WXR_PACE_DELAY_MIN_MS": "100",
        "WXR_PACE_DELAY_MAX_MS": "300", "WXR_PACE_COOLDOWN_S": "5",
        "WXR_LOOP_GUARD_REPLIES": "3", "WXR_LOOP_GUARD_WINDOW_S": "60",
        "WXR_TAKEOVER_PAUSE_S": "30"}))
    assert rules == PacingRules(7, 0.1, 0.3, 5, 3, 60, 30)
