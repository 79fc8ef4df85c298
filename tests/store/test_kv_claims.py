"""KV.claim_guarded: the edge's replay check, dedup claim, stamp read and (for cached
answers) the stored reply, all in one round trip."""

from __future__ import annotations

from store import Stores
from store.kv import ANY_STAMP


async def test_first_claim_wins_and_reads_the_extra_key(stores: Stores) -> None:
    kv = stores.kv
    await kv.put("ver", b"7", 60_000)
    first = await kv.claim_guarded("nonce:1", "push-a", 60_000, "push:a", b"", 60_000,
                                   read_also="ver")
    assert (first.refused, first.claimed, first.done, first.extra) == (False, True, False, b"7")
    # WeChat's retry: same nonce, same push.  Not refused; the push is someone else's.
    again = await kv.claim_guarded("nonce:1", "push-a", 60_000, "push:a", b"", 60_000)
    assert (again.refused, again.claimed, again.current) == (False, False, b"")


async def test_a_nonce_reused_for_another_push_is_refused(stores: Stores) -> None:
    kv = stores.kv
    await kv.claim_guarded("nonce:2", "push-a", 60_000, "push:a", b"", 60_000)
    replay = await kv.claim_guarded("nonce:2", "push-b", 60_000, "push:b", b"", 60_000)
    assert replay.refused
    assert await kv.get("push:b") is None  # nothing was claimed


async def test_an_answer_is_stored_only_under_the_stamp_it_was_computed_with(
        stores: Stores) -> None:
    kv = stores.kv
    await kv.put("ver", b"3", 60_000)
    stale = await kv.claim_guarded("nonce:3", "p1", 60_000, "push:p1", b"", 60_000,
                                   read_also="ver", done_if=(b"2", b"=old"))
    assert (stale.claimed, stale.done, stale.extra) == (True, False, b"3")
    assert await kv.get("push:p1") == b""  # pending: the caller runs the command itself
    fresh = await kv.claim_guarded("nonce:4", "p2", 60_000, "push:p2", b"", 60_000,
                                   read_also="ver", done_if=(b"3", b"=new"))
    assert (fresh.claimed, fresh.done) == (True, True)
    assert await kv.get("push:p2") == b"=new"
    # A retry finds the stored answer.
    retry = await kv.claim_guarded("nonce:4", "p2", 60_000, "push:p2", b"", 60_000,
                                   read_also="ver", done_if=(b"3", b"=new"))
    assert (retry.claimed, retry.current) == (False, b"=new")


async def test_absent_and_any_stamps(stores: Stores) -> None:
    kv = stores.kv
    absent = await kv.claim_guarded("nonce:5", "p3", 60_000, "push:p3", b"", 60_000,
                                    read_also="never-set", done_if=(None, b"=a"))
    assert absent.done
    assert absent.extra is None
    anything = await kv.claim_guarded("nonce:6", "p4", 60_000, "push:p4", b"", 60_000,
                                      done_if=(ANY_STAMP, b"=b"))
    assert anything.done
    assert await kv.get("push:p4") == b"=b"
