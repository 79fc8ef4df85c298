"""Saved login data: the full state in MongoDB apart from the small bot records, the
progress (sync position) in Redis on top of it."""

from __future__ import annotations

from store import Stores
from store.bots import ONLINE, merge_login_data, progress_key

FULL = {"v": 1, "driver": "itchat",
        "login_info": {"url": "http://x", "wxsid": "s", "SyncKey": {"List": [1]},
                       "synckey": "1_1"},
        "contacts": {"friends": [["@a", "阿明", ""]]}}
PROGRESS = {"v": 1, "driver": "itchat", "partial": True,
            "login_info": {"SyncKey": {"List": [2]}, "synckey": "1_2"}, "saved_at": 5.0}


def test_progress_is_laid_over_the_full_state() -> None:
    merged = merge_login_data(FULL, PROGRESS)
    assert merged["login_info"] == {"url": "http://x", "wxsid": "s",
                                    "SyncKey": {"List": [2]}, "synckey": "1_2"}
    assert merged["contacts"] == FULL["contacts"]
    assert "partial" not in merged
    assert FULL["login_info"]["synckey"] == "1_1"  # not modified in place


async def test_get_merges_progress_and_a_full_save_supersedes_it(stores: Stores) -> None:
    await stores.bots.set_state(1, ONLINE, pid="a" * 24)
    await stores.bots.save_login_data(1, FULL)
    await stores.bots.save_login_data(1, PROGRESS)
    record = await stores.bots.get(1)
    assert record is not None
    assert record.login_data is not None
    assert record.login_data["login_info"]["synckey"] == "1_2"
    assert await stores.kv.get(progress_key(1)) is not None
    await stores.bots.save_login_data(1, FULL)
    assert await stores.kv.get(progress_key(1)) is None
    record = await stores.bots.get(1)
    assert record is not None
    assert record.login_data == FULL
    light = await stores.bots.get(1, login_data=False)
    assert light is not None
    assert light.login_data is None
    assert light.state == ONLINE


async def test_clearing_the_login_forgets_both(stores: Stores) -> None:
    await stores.bots.set_state(2, ONLINE, pid="b" * 24)
    await stores.bots.save_login_data(2, FULL)
    await stores.bots.save_login_data(2, PROGRESS)
    assert [r.uid for r in await stores.bots.resumable()] == [2]
    await stores.bots.set_state(2, "logged_out", clear_login=True)
    record = await stores.bots.get(2)
    assert record is not None
    assert record.login_data is None
    assert await stores.kv.get(progress_key(2)) is None
    assert await stores.bots.resumable() == []
    # Online again, without saving: still nothing to resume from.
    await stores.bots.set_state(2, ONLINE, pid="c" * 24)
    assert await stores.bots.resumable() == []


async def test_the_resumable_scan_does_not_carry_login_data(stores: Stores) -> None:
    await stores.bots.set_state(3, ONLINE, pid="d" * 24)
    await stores.bots.save_login_data(3, FULL)
    (record,) = await stores.bots.resumable()
    assert (record.uid, record.login_data) == (3, None)
    doc = await stores.db["bots"].find_one({"_id": 3})
    assert doc is not None
    assert "login_data" not in doc
