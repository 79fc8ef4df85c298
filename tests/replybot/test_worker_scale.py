"""What keeps a worker with thousands of sessions answering: bursts go through bounded
gates instead of exhausting the store clients, resumes of one user never overlap, and the
sessions' objects are kept out of the garbage collector's full passes."""

from __future__ import annotations

import asyncio
import gc

from config import Settings
from replybot import worker as worker_module
from replybot.worker import Worker
from store import Stores
from tests.e2e.botrig import Rig
from tests.util import until


async def test_a_burst_larger_than_the_redis_pool_is_answered_in_full(rig: Rig) -> None:
    # 150 friends write in the same sync round: 150 message tasks at once, each a few
    # Redis round trips, against a client pool of 100 connections that fails (rather than
    # queues) when it runs out.  Through the message gate every one is answered.
    account = rig.webwx.add_account("小忙", friends=150, groups=0, mps=0)
    await rig.chat("添加 你好 稍后回复")
    await rig.login(account)
    for friend in range(150):
        rig.webwx.push_friend_text(account, friend, "你好")
    await until(lambda: len(rig.webwx.sent(account)) >= 150, timeout=60)
    assert {s.to_user for s in rig.webwx.sent(account)} == {
        account.friend_name(i) for i in range(150)}
    assert rig.worker is not None
    assert rig.worker.stats["replied"] == 150


async def test_two_resumes_of_one_user_start_one_session(rig: Rig) -> None:
    account = rig.webwx.add_account("小复", friends=2)
    await rig.login(account)
    uid = await rig.uid()
    await rig.stop_worker()  # the session stays online and resumable
    worker = rig.start_worker("w-resume")
    worker.capacity = 0  # set before it runs: no resume of its own, only the two below
    await until(lambda: worker.running)
    started = await asyncio.gather(worker._resume(uid), worker._resume(uid))
    assert sorted(started) == [False, True]
    assert list(worker.sessions) == [uid]
    await until(lambda: worker.sessions[uid].state == "online")


def test_sessions_objects_are_frozen_only_at_scale(stores: Stores, settings: Settings) -> None:
    worker = Worker(stores, settings, lambda: None)  # type: ignore[arg-type,return-value]
    assert gc.get_freeze_count() == 0
    try:
        worker._online_since_freeze = 5
        worker.collect_garbage()
        assert gc.get_freeze_count() == 0  # a few sessions: a full pass is cheap
        worker.sessions = dict.fromkeys(range(worker_module.GC_FREEZE_MIN_SESSIONS))  # type: ignore[arg-type]
        worker.collect_garbage()
        assert gc.get_freeze_count() > 0
        assert worker._online_since_freeze == 0
        # Enough sessions ended, long enough ago: one full collection, then frozen again.
        garbage: list[object] = []
        garbage.append(garbage)  # a cycle only the collector can free
        del garbage
        worker._ended_since_reclaim = worker_module.GC_RECLAIM_AFTER
        worker._last_reclaim -= worker_module.GC_RECLAIM_MIN_S
        worker.collect_garbage()
        assert worker._ended_since_reclaim == 0
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()
