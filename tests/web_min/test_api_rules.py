"""/database/*, /autoreply/*, /wechat/testlogin: the original's shapes and every code."""

from __future__ import annotations

import pytest

from store import MatchMode, RuleLimits, Stores
from store.bots import settings_version_key, valid_pid
from tests.conftest import Chat
from tests.web_min.conftest import Accounts


async def _version(stores: Stores, uid: int) -> int:
    raw = await stores.kv.get(settings_version_key(uid))
    return int(raw) if raw else 0


async def _uid(stores: Stores, username: str) -> int:
    user = await stores.users.by_username(username)
    assert user is not None
    return user.uid


async def test_add_several_then_show_in_the_original_shape(accounts: Accounts,
                                                           stores: Stores) -> None:
    me = await accounts.logged_in("alice")
    empty = await me.get("/database/show")
    assert empty.body == {"code": 200, "message": "ok", "data": {}}
    added = await me.post("/database/add", json_body={
        "苹果": "梨子", "*价格": "请看菜单", "Hello": "world"})
    assert added.body == {"code": 200, "message": "ok", "data": {
        "01": {"苹果": "梨子"}, "02": {"*价格": "请看菜单"}, "03": {"Hello": "world"}}}
    shown = await me.get("/database/show")
    assert shown.body == {"code": 200, "message": "ok", "data": {
        "01": {"苹果": "梨子"}, "02": {"*价格": "请看菜单"}, "03": {"Hello": "world"}}}
    assert list(shown.body["data"]) == ["01", "02", "03"]
    rules = await stores.rules.list(await _uid(stores, "alice"))
    assert [(r.keyword, r.mode) for r in rules] == [
        ("苹果", MatchMode.EXACT), ("价格", MatchMode.CONTAINS), ("Hello", MatchMode.EXACT)]


async def test_api_and_chat_share_the_numbers(accounts: Accounts, chat: Chat) -> None:
    openid = "o-bob-00000000000000000002"
    await accounts.register("bob", openid=openid)
    me = await accounts.logged_in_existing("bob")
    assert await chat("添加 你好 在开会", openid) == "已添加 01：你好 → 在开会"
    assert (await me.post("/database/add", json_body={"再见": "回头聊"})).body["data"] == {
        "02": {"再见": "回头聊"}}
    assert (await chat("列表", openid)).splitlines()[1:] == ["01 你好 → 在开会",
                                                          "02 再见 → 回头聊"]


async def test_add_by_form(accounts: Accounts) -> None:
    me = await accounts.logged_in("carol")
    answer = await me.post("/database/add", form=[("苹果", "梨子"), ("香蕉", "橘子")])
    assert answer.body["data"] == {"01": {"苹果": "梨子"}, "02": {"香蕉": "橘子"}}


async def test_add_is_all_or_nothing_on_a_duplicate(accounts: Accounts, stores: Stores) -> None:
    me = await accounts.logged_in("dave")
    await me.post("/database/add", json_body={"苹果": "梨子"})
    before = await me.get("/database/show")
    clash = await me.post("/database/add", json_body={"香蕉": "橘子", "ＡＰＰＬＥ": "x",
                                                      "苹果": "樱桃"})
    assert clash.status == 200
    assert clash.code == -2
    assert "苹果" in clash.body["message"]
    assert "01" in clash.body["message"]
    assert (await me.get("/database/show")).body == before.body
    # Within the batch, by normalised keyword (full-width and case folded).
    within = await me.post("/database/add", raw='{"Hello": "a", "ｈｅｌｌｏ": "b"}'.encode(),
                           content_type="application/json")
    assert within.code == -2
    # A JSON object with the same key twice is a duplicate, not "the last one wins".
    twice = await me.post("/database/add", raw='{"西瓜": "a", "西瓜": "b"}'.encode(),
                          content_type="application/json")
    assert twice.code == -2
    assert (await me.get("/database/show")).body == before.body
    assert await stores.rules.count(await _uid(stores, "dave")) == 1


async def test_add_is_all_or_nothing_on_a_bad_item(accounts: Accounts, stores: Stores) -> None:
    me = await accounts.logged_in("erin")
    too_long = await me.post("/database/add", json_body={"好": "ok", "长" * 31: "x"})
    assert too_long.code == -4
    assert "关键词最多 30 个字" in too_long.body["message"]
    empty_reply = await me.post("/database/add", json_body={"好": "ok", "空": "  "})
    assert empty_reply.code == -4
    not_text = await me.post("/database/add", json_body={"好": "ok", "数": 5})
    assert not_text.code == -4
    assert "必须是字符串" in not_text.body["message"]
    nothing = await me.post("/database/add", json_body={})
    assert nothing.code == -4
    assert await stores.rules.count(await _uid(stores, "erin")) == 0


@pytest.mark.parametrize("limits", [RuleLimits(rules_max=3)])
async def test_rule_limit_is_the_stores(accounts: Accounts, stores: Stores) -> None:
    me = await accounts.logged_in("frank")
    assert (await me.post("/database/add", json_body={"a": "1", "b": "2"})).code == 200
    over = await me.post("/database/add", json_body={"c": "3", "d": "4"})
    assert over.code == -4
    # The batch does not fit: the answer counts what is really left.
    assert over.body["message"] == "规则太多：最多 3 条，最多还能添加 1 条，什么都没有添加"
    assert await stores.rules.count(await _uid(stores, "frank")) == 2
    assert (await me.post("/database/add", json_body={"c": "3"})).code == 200
    full = await me.post("/database/add", json_body={"d": "4"})
    assert full.body["message"] == "规则已满（最多 3 条），先删除不用的"


async def test_delete_by_get_and_by_delete(accounts: Accounts, stores: Stores) -> None:
    me = await accounts.logged_in("grace")
    await me.post("/database/add", json_body={"a": "1", "b": "2", "c": "3"})
    by_get = await me.get("/database/delete/?id=01")
    assert by_get.body == {"code": 200, "message": "ok", "data": {"01": {"a": "1"}}}
    by_delete = await me.call("DELETE", "/database/delete/?id=2")
    assert by_delete.body["data"] == {"02": {"b": "2"}}
    no_slash = await me.get("/database/delete?id=3")
    assert no_slash.code == 200
    assert (await me.get("/database/show")).body["data"] == {}
    gone = await me.get("/database/delete/?id=01")
    assert gone.code == -5


@pytest.mark.parametrize("query", ["", "?id=", "?id=abc", "?id=0", "?id=-1", "?id=1.5",
                                   "?id=1234567", "?id=%EF%BC%91", "?id=1&id=2",
                                   "?id=%FF"])
async def test_delete_needs_a_rule_number(accounts: Accounts, query: str) -> None:
    me = await accounts.logged_in("heidi")
    await me.post("/database/add", json_body={"a": "1"})
    answer = await me.get(f"/database/delete/{query}")
    assert answer.code == -4
    assert (await me.get("/database/show")).body["data"] == {"01": {"a": "1"}}


async def test_update_changes_keyword_and_reply(accounts: Accounts, stores: Stores) -> None:
    me = await accounts.logged_in("ivan")
    await me.post("/database/add", json_body={"苹果": "梨子", "香蕉": "橘子"})
    answer = await me.post("/database/update/?id=01", json_body={"*苹果": "樱桃"})
    assert answer.body == {"code": 200, "message": "ok", "data": {"01": {"*苹果": "樱桃"}}}
    assert (await me.get("/database/show")).body["data"] == {
        "01": {"*苹果": "樱桃"}, "02": {"香蕉": "橘子"}}
    same_keyword = await me.post("/database/update/?id=2", form={"香蕉": "芒果"})
    assert same_keyword.body["data"] == {"02": {"香蕉": "芒果"}}


async def test_update_errors(accounts: Accounts) -> None:
    me = await accounts.logged_in("judy")
    await me.post("/database/add", json_body={"苹果": "梨子", "香蕉": "橘子"})
    dup = await me.post("/database/update/?id=02", json_body={"苹果": "x"})
    assert dup.code == -2
    missing = await me.post("/database/update/?id=09", json_body={"西瓜": "x"})
    assert missing.code == -5
    two = await me.post("/database/update/?id=01", json_body={"a": "1", "b": "2"})
    assert two.code == -4
    none = await me.post("/database/update/?id=01", json_body={})
    assert none.code == -4
    no_id = await me.post("/database/update/", json_body={"a": "1"})
    assert no_id.code == -4
    too_long = await me.post("/database/update/?id=01", json_body={"a": "长" * 601})
    assert too_long.code == -4
    assert (await me.get("/database/show")).body["data"] == {
        "01": {"苹果": "梨子"}, "02": {"香蕉": "橘子"}}


async def test_every_rule_change_bumps_the_bot_version(accounts: Accounts,
                                                       stores: Stores) -> None:
    me = await accounts.logged_in("kim")
    uid = await _uid(stores, "kim")
    seen = [await _version(stores, uid)]

    async def changed() -> bool:
        seen.append(await _version(stores, uid))
        return seen[-1] > seen[-2]

    await me.post("/database/add", json_body={"a": "1"})
    assert await changed()
    await me.post("/database/update/?id=1", json_body={"a": "2"})
    assert await changed()
    await me.get("/database/delete/?id=1")
    assert await changed()
    await me.post("/autoreply/off")
    assert await changed()
    await me.post("/autoreply/on")
    assert await changed()
    # Failures change nothing and bump nothing.
    await me.post("/database/add", json_body={"b": 3})
    await me.get("/database/delete/?id=7")
    assert not await changed()


async def test_autoreply_on_and_off(accounts: Accounts, stores: Stores, chat: Chat) -> None:
    openid = "o-leo-00000000000000000001"
    await accounts.register("leo", openid=openid)
    me = await accounts.logged_in_existing("leo")
    off = await me.post("/autoreply/off")
    assert off.body == {"code": 200, "message": "ok", "autoreply": False}
    assert "自动回复：关闭" in await chat("状态", openid)
    assert (await me.get("/account/info")).body["data"]["autoreply"] is False
    on = await me.post("/autoreply/on/")
    assert on.body == {"code": 200, "message": "ok", "autoreply": True}
    assert "自动回复：开启" in await chat("状态", openid)
    assert (await me.get("/autoreply/on")).status == 405


async def test_testlogin_starts_a_qr_login(accounts: Accounts, stores: Stores,
                                           api_web: object) -> None:
    me = await accounts.logged_in("mia")
    answer = await me.get("/wechat/testlogin")
    assert answer.status == 200
    assert answer.code == 200
    pid = answer.body["pid"]
    assert valid_pid(pid)
    assert answer.body["state"] == "requested"
    assert answer.body["url"].endswith(f"/qr/{pid}")
    record = await stores.bots.get(await _uid(stores, "mia"))
    assert record is not None
    assert record.pid == pid
    # The pending QR is handed out again rather than a second session started.
    assert (await me.get("/wechat/testlogin")).body["pid"] == pid
    page = await me.http.fetch(f"{me.base_url}/qr/{pid}/status", raise_error=False)
    assert page.code == 200


async def test_testlogin_while_another_start_is_under_way(accounts: Accounts,
                                                          stores: Stores) -> None:
    me = await accounts.logged_in("nina")
    # What a concurrent 登录 holds for a few seconds while it creates the session.
    assert await stores.kv.claim(f"bot:starting:{await _uid(stores, 'nina')}", 5000)
    answer = await me.get("/wechat/testlogin")
    assert (answer.status, answer.code) == (200, 0)
    assert "正在生成二维码" in answer.body["message"]
    assert "pid" not in answer.body


@pytest.mark.parametrize("escape", ["\\uffff", "\\ufffe", "\\ud800", "\\u0001", "\\u001f"])
async def test_characters_xml_forbids_are_refused(accounts: Accounts, stores: Stores,
                                                  escape: str) -> None:
    """U+FFFE, U+FFFF, lone surrogates and C0 controls are legal JSON escapes but can
    never appear in an XML reply: refused, so that 列表 always renders."""
    me = await accounts.logged_in("xml")
    for body in (f'{{"bad{escape}key": "reply"}}', f'{{"key": "re{escape}ply"}}'):
        answer = await me.post("/database/add", raw=body.encode(),
                               content_type="application/json")
        assert answer.code == -4, (escape, answer.body)
        assert "字符" in answer.body["message"]
    assert await stores.rules.count(await _uid(stores, "xml")) == 0
    assert (await me.post("/database/add", json_body={"k": "r"})).code == 200
    update = await me.post("/database/update/?id=01", raw=f'{{"k": "r{escape}x"}}'.encode(),
                           content_type="application/json")
    assert update.code == -4, (escape, update.body)
