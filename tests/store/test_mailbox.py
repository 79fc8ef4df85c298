"""store.mailbox on the real Redis: slots that collapse, the bound, the take that stores a
push's reply in the same step, the customer-service window, and survival of a kill -9
of a Redis that runs with its append-only file (as the embedded one does)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from redis.asyncio import Redis

from store import Stores
from store.embedded import EmbeddedRedis
from store.mailbox import MAX_NOTICES, Mailbox, mail_key, seen_key, slot_for

OPENID = "o-mailbox-0000000000000001"


def _state(state: str, **extra: object) -> dict[str, object]:
    return {"type": "state", "uid": 1000, "state": state, **extra}


async def test_state_notices_collapse_to_the_newest(stores: Stores) -> None:
    box = stores.mailbox
    assert await box.add(OPENID, "state", 100.0, _state("online"))
    assert await box.add(OPENID, "state", 200.0, _state("logged_out", reason="1101"))
    # A notifier that read an older event late must not bring it back.
    assert not await box.add(OPENID, "state", 150.0, _state("online"))
    (notice,) = await box.peek(OPENID)
    assert (notice.slot, notice.at, notice.event["state"]) == ("state", 200.0, "logged_out")
    # A later state that needs no notice makes it obsolete; an earlier one does not.
    assert not await box.supersede(OPENID, "state", 199.0)
    assert len(await box.peek(OPENID)) == 1
    assert await box.supersede(OPENID, "state", 201.0)
    assert await box.peek(OPENID) == []


async def test_slots_per_kind_and_the_bound(stores: Stores) -> None:
    box = stores.mailbox
    assert slot_for({"type": "loop_guard", "contact": "阿明"}, "1-0") == "loop_guard:阿明"
    assert slot_for({"type": "send_failures"}, "1-0") == "send_failures"
    assert slot_for({"type": "closed_by_wechat"}, "7-1") == "closed_by_wechat:7-1"
    await box.add(OPENID, "state", 1.0, _state("online"))
    for i in range(MAX_NOTICES + 5):
        event = {"type": "loop_guard", "contact": f"c{i}"}
        await box.add(OPENID, slot_for(event, f"{i}-0"), 10.0 + i, event)
    notices = await box.peek(OPENID)
    assert len(notices) == MAX_NOTICES
    # The oldest went first; newest first in the answer.
    assert notices[0].event["contact"] == f"c{MAX_NOTICES + 4}"
    assert "state" not in {n.slot for n in notices}
    ttl = await stores.redis.pttl(stores.kv.key(mail_key(OPENID)))
    assert ttl > 29 * 24 * 3600 * 1000


async def test_take_stores_the_reply_and_removes_exactly_what_was_read(stores: Stores) -> None:
    box = stores.mailbox
    await box.add(OPENID, "state", 1.0, _state("online"))
    await box.add(OPENID, "send_failures", 2.0, {"type": "send_failures"})
    seen = await box.peek(OPENID)
    # A newer state arrives between the read and the take: nothing is taken or stored.
    await box.add(OPENID, "state", 3.0, _state("logged_out"))
    assert not await box.take_into(OPENID, "push:x", b"=reply", 60_000, seen)
    assert await stores.kv.get("push:x") is None
    assert len(await box.peek(OPENID)) == 2
    seen = await box.peek(OPENID)
    await box.add(OPENID, "loop_guard:a", 4.0, {"type": "loop_guard", "contact": "a"})
    assert await box.take_into(OPENID, "push:x", b"=reply", 60_000, seen)
    assert await stores.kv.get("push:x") == b"=reply"
    # What arrived after the read stays for the next reply.
    assert [n.slot for n in await box.peek(OPENID)] == ["loop_guard:a"]


async def test_unreadable_entries_are_skipped(stores: Stores) -> None:
    key = stores.kv.key(mail_key(OPENID))
    await stores.redis.hset(key, mapping={"state": b"garbage", "x": b"5|{not json"})
    await stores.mailbox.add(OPENID, "send_failures", 9.0, {"type": "send_failures"})
    assert [n.slot for n in await stores.mailbox.peek(OPENID)] == ["send_failures"]


async def test_the_window_follows_the_users_last_contact(stores: Stores) -> None:
    clock = [1_000_000.0]
    box = Mailbox(stores.redis, stores.kv.prefix, now=lambda: clock[0])
    unknown = await box.window(OPENID)
    assert (unknown.known, unknown.open) == (False, False)
    await stores.kv.put(seen_key(OPENID, "m"), str(int(clock[0])), 60_000)
    window = await box.window(OPENID)
    assert (window.open, window.allowance, window.usable) == (True, 5, 4)
    assert [await box.count_send(OPENID, window) for _ in range(3)] == [1, 2, 3]
    await box.exhaust(OPENID, window)
    assert await box.count_send(OPENID, window) > window.usable
    clock[0] += 48 * 3600
    closed = await box.window(OPENID)
    assert (closed.known, closed.open) == (True, False)
    # A menu click opens a short window with a fresh count.
    await stores.kv.put(seen_key(OPENID, "e"), str(int(clock[0])), 60_000)
    short = await box.window(OPENID)
    assert (short.open, short.allowance, short.start) == (True, 3, int(clock[0]))
    assert await box.count_send(OPENID, short) == 1


async def test_the_claim_holds_a_cached_answer_back_and_marks_the_contact(
        stores: Stores) -> None:
    kv = stores.kv
    await stores.mailbox.add(OPENID, "state", 1.0, _state("online"))
    claim = await kv.claim_guarded("nonce:m1", "p1", 60_000, "push:p1", b"", 60_000,
                                   done_if=(b"*", b"=cached"), hold_if=mail_key(OPENID),
                                   also_set=(seen_key(OPENID, "m"), "123", 60_000))
    assert (claim.claimed, claim.done, claim.held) == (True, False, True)
    assert await kv.get("push:p1") == b""  # pending: the edge composes the reply
    assert await kv.get(seen_key(OPENID, "m")) == b"123"
    # WeChat's retry of the same push does not touch the contact time again.
    await kv.put(seen_key(OPENID, "m"), "999", 60_000)
    again = await kv.claim_guarded("nonce:m1", "p1", 60_000, "push:p1", b"", 60_000,
                                   hold_if=mail_key(OPENID),
                                   also_set=(seen_key(OPENID, "m"), "124", 60_000))
    assert (again.claimed, again.held) == (False, True)
    assert await kv.get(seen_key(OPENID, "m")) == b"999"
    # Without a mailbox the cached answer is stored at once, as before.
    other = await kv.claim_guarded("nonce:m2", "p2", 60_000, "push:p2", b"", 60_000,
                                   done_if=(b"*", b"=cached"), hold_if=mail_key("o-nobody"))
    assert (other.done, other.held) == (True, False)
    assert await kv.get("push:p2") == b"=cached"


async def test_notices_survive_a_kill_9_of_redis(tmp_path: Path) -> None:
    server = EmbeddedRedis(tmp_path / "redis")
    await asyncio.to_thread(server.start)
    redis = Redis.from_url(server.url)
    try:
        box = Mailbox(redis, "wxr:")
        await box.add(OPENID, "state", 5.0, _state("online"))
        await asyncio.sleep(1.5)  # appendfsync everysec: on disk within a second
    finally:
        await redis.aclose()
        server.kill()
    again = EmbeddedRedis(tmp_path / "redis", port=server.port)
    await asyncio.to_thread(again.start)
    redis = Redis.from_url(again.url)
    try:
        (notice,) = await Mailbox(redis, "wxr:").peek(OPENID)
        assert notice.event["state"] == "online"
    finally:
        await redis.aclose()
        again.stop()
