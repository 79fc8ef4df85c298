"""Every chat command over the real /wechat endpoint, real stores, as a conversation."""

from __future__ import annotations

import re

import pytest

from mpbot import hints
from store import MatchMode, RuleLimits, Stores
from tests.conftest import Chat

ALICE = "o-alice-000000000000000001"
BOB = "o-bob-00000000000000000002"


async def test_help(chat: Chat) -> None:
    reply = await chat("帮助")
    assert reply.startswith("可用命令")
    assert "添加 <关键词> <回复>" in reply
    assert await chat("HELP") == reply
    assert await chat("？") == reply
    assert len(reply.encode()) <= 2048


async def test_register_shows_a_four_digit_id(chat: Chat) -> None:
    reply = await chat("注册", ALICE)
    uid = re.search(r"用户编号是 (\d+)", reply)
    assert uid is not None
    assert len(uid.group(1)) >= 4
    assert await chat("register", ALICE) == (
        f"你已经注册了（关注或第一次使用命令时自动完成），用户编号 {uid.group(1)}。")


async def test_any_command_registers_and_register_says_so(chat: Chat, stores: Stores) -> None:
    """The decision in docs/OFFICIAL_ACCOUNT.md: following, or the first command that
    needs an account, registers; 注册 is never required and says so consistently."""
    assert await chat("帮助", BOB)
    assert await stores.users.by_openid(BOB) is None
    status = await chat("状态", BOB)
    uid = re.search(r"用户编号：(\d+)", status)
    assert uid is not None
    assert await chat("注册", BOB) == (
        f"你已经注册了（关注或第一次使用命令时自动完成），用户编号 {uid.group(1)}。")
    assert "关注时已自动注册" in await chat("帮助", BOB)


async def test_add_list_edit_delete(chat: Chat) -> None:
    assert await chat("添加 苹果 梨子") == "已添加 01：苹果 → 梨子"
    assert await chat("添加 *价格 请看菜单") == "已添加 02：*价格（包含） → 请看菜单"
    assert await chat("add Hello world") == "已添加 03：Hello → world"
    assert await chat("列表") == (
        "你的规则（共 3 条）：\n01 苹果 → 梨子\n02 *价格（包含） → 请看菜单\n03 Hello → world"
    )
    assert await chat("修改 01 樱桃") == "已修改 01：苹果 → 樱桃"
    assert await chat("删除 01") == "已删除 01：苹果 → 樱桃"
    assert await chat("添加 西瓜 葡萄") == "已添加 04：西瓜 → 葡萄"  # 01 is never reused
    assert (await chat("列表")).splitlines()[1:] == [
        "02 *价格（包含） → 请看菜单", "03 Hello → world", "04 西瓜 → 葡萄",
    ]


async def test_full_width_spaces_and_glued_numbers(chat: Chat) -> None:
    assert await chat("添加\u3000苹果\u3000梨子") == "已添加 01：苹果 → 梨子"
    assert await chat("修改０１\u3000樱桃") == "已修改 01：苹果 → 樱桃"
    assert await chat("删除01") == "已删除 01：苹果 → 樱桃"


async def test_mixed_case_english_aliases(chat: Chat) -> None:
    assert await chat("ADD a b") == "已添加 01：a → b"
    assert await chat("Edit 1 c") == "已修改 01：a → c"
    assert (await chat("LS")).startswith("你的规则（共 1 条）")
    assert await chat("DeL 1") == "已删除 01：a → c"


async def test_duplicate_keyword(chat: Chat) -> None:
    await chat("添加 苹果 梨子")
    reply = await chat("添加 苹果 香蕉")
    assert reply == "关键词“苹果”已经有了（编号 01）。\n要改它的回复，发送：修改 01 新回复"
    # The same word as a "contains" rule is a different rule.
    assert await chat("添加 *苹果 香蕉") == "已添加 02：*苹果（包含） → 香蕉"


async def test_keyword_and_reply_limits(chat: Chat) -> None:
    assert (await chat("添加 " + "字" * 30 + " 好")).startswith("已添加 01")
    too_long = await chat("添加 " + "字" * 31 + " 好")
    assert too_long == ("关键词最多 30 个字，现在是 31 个字\n"
                        "正确格式：添加 <关键词> <回复>\n例：添加 苹果 梨子")
    assert (await chat("添加 长 " + "回" * 600)).startswith("已添加 02")
    reply = await chat("添加 更长 " + "回" * 601)
    assert reply.startswith("回复最多 600 个字，现在是 601 个字")
    assert (await chat("修改 01 " + "回" * 601)).startswith("回复最多 600 个字")


@pytest.mark.parametrize("limits", [RuleLimits(rules_max=200)])
async def test_the_201st_rule_is_refused(chat: Chat, stores: Stores) -> None:
    await chat("注册", ALICE)
    user = await stores.users.by_openid(ALICE)
    assert user is not None
    await stores.rules.add_many(user.uid, [(f"k{i}", "r", MatchMode.EXACT) for i in range(199)])
    assert (await chat("添加 第200条 好", ALICE)).startswith("已添加 200")
    full = await chat("添加 第201条 好", ALICE)
    assert full == "规则已满（最多 200 条）。先删除不用的：删除 <编号>"


async def test_errors_show_the_right_form(chat: Chat) -> None:
    assert await chat("删除 abc") == (
        "编号应该是数字（如 01），“abc”不是。\n正确格式：删除 <编号>\n例：删除 01"
    )
    assert await chat("删除 07") == "没有编号为 07 的规则。发送「列表」查看你的规则。"
    assert await chat("修改 07 x") == "没有编号为 07 的规则。发送「列表」查看你的规则。"
    assert (await chat("添加 苹果")).startswith("缺少回复内容。\n正确格式：添加 <关键词> <回复>")
    assert (await chat("修改 01")).startswith("缺少新回复。")


async def test_deleting_someone_elses_number_touches_nothing(chat: Chat) -> None:
    assert await chat("添加 苹果 梨子", ALICE) == "已添加 01：苹果 → 梨子"
    assert await chat("删除 01", BOB) == "没有编号为 01 的规则。发送「列表」查看你的规则。"
    assert await chat("修改 01 坏", BOB) == "没有编号为 01 的规则。发送「列表」查看你的规则。"
    assert await chat("列表", ALICE) == "你的规则（共 1 条）：\n01 苹果 → 梨子"
    assert await chat("列表", BOB) == "你还没有规则。添加一条试试：添加 苹果 梨子"


async def test_list_is_paged_and_fits_2048_bytes(chat: Chat, stores: Stores) -> None:
    await chat("注册", ALICE)
    user = await stores.users.by_openid(ALICE)
    assert user is not None
    await stores.rules.add_many(
        user.uid, [("键" * 28 + f"{i:02d}", "😀回复" * 200, MatchMode.EXACT) for i in range(23)]
    )
    first = await chat("列表", ALICE)
    assert first.startswith("你的规则（共 23 条，第 1/3 页）：")
    assert first.endswith("下一页：列表 2")
    assert len(first.splitlines()) == 12
    last = await chat("列表 3", ALICE)
    assert len(last.splitlines()) == 4
    assert "下一页" not in last
    for page in (first, await chat("列表 2", ALICE), last):
        assert len(page.encode()) <= 2048
    assert await chat("列表 4", ALICE) == "只有 3 页。发送「列表」从第 1 页看起。"


async def test_on_off_and_status(chat: Chat) -> None:
    await chat("添加 苹果 梨子")
    assert await chat("关闭") == "自动回复已关闭。发送「开启」恢复。"
    status = await chat("状态")
    assert "自动回复：关闭" in status
    assert "规则：1 条" in status
    assert "机器人：未登录" in status
    assert "今日已回复：0 次" in status
    assert await chat("开启") == "自动回复已开启。"
    assert "自动回复：开启" in await chat("status")


async def test_codes(chat: Chat, stores: Stores) -> None:
    reply = await chat("验证码", ALICE)
    code = re.search(r"注册验证码：(\d+)-(\d{6})", reply)
    assert code is not None
    user = await stores.users.by_openid(ALICE)
    assert user is not None
    assert code.group(1) == str(user.uid)  # the code is shown with its user's id
    assert await stores.kv.consume_code("register", code.group(2)) == ALICE
    assert await chat("重置密码", ALICE) == "你还没有 API 账号。先发送「验证码」获取注册验证码。"
    user = await stores.users.by_openid(ALICE)
    assert user is not None
    await stores.users.set_credentials(user.uid, "alice", b"hash")
    assert await chat("验证码", ALICE) == "你已绑定 API 账号「alice」。忘记密码请发送「重置密码」。"
    reset = re.search(r"重置密码验证码：(\d{6})", await chat("reset", ALICE))
    assert reset is not None
    assert await stores.kv.consume_code("reset", reset.group(1)) == str(user.uid)


async def test_text_that_is_not_a_command_gets_a_hint(chat: Chat) -> None:
    assert await chat("吃了吗") == "没看懂“吃了吗”。发送「帮助」查看全部命令，例如：添加 苹果 梨子"
    long = await chat("这是一段很长很长很长很长很长很长很长很长的话")
    assert "…”" in long
    assert (await chat("   ")).startswith("可用命令")


@pytest.mark.parametrize("greeting", ["你好", "您好！", "hi", "Hello", "在吗？", "晚上好~"])
async def test_a_greeting_gets_a_short_intro(chat: Chat, greeting: str) -> None:
    reply = await chat(greeting)
    assert reply == hints.INTRO
    assert "添加 苹果 梨子" in reply
    assert "「登录」" in reply
    assert len(reply) < 200


@pytest.mark.parametrize(("typo", "meant"), [
    ("帮主", "帮助"), ("添家 苹果 梨子", "添加 苹果 梨子"), ("列彪", "列表"),
    ("登陆", "登录"), ("hlep", "帮助"), ("lsit", "列表"), ("删徐 01", "删除 01"),
    ("添加苹果 梨子", "添加 苹果 梨子"),
])
async def test_typos_get_a_suggestion(chat: Chat, typo: str, meant: str) -> None:
    assert await chat(typo) == f"没看懂“{typo}”。你是想发「{meant}」吗？"


@pytest.mark.parametrize("text", ["关注", "ok", "开机", "吃了吗", "添加剂"])
async def test_no_wild_guesses(chat: Chat, text: str) -> None:
    # A switch is never guessed ("关注" is not "关闭"), nor a short English word.
    reply = await chat(text)
    assert "你是想发" not in reply
    assert reply.startswith(f"没看懂“{text}”")


async def test_a_pasted_article_or_html_gets_a_friendly_answer(chat: Chat) -> None:
    article = "今天天气很好，" * 400  # 2,800 characters
    reply = await chat(article)
    assert reply.startswith("这段文字有 2800 个字，不是命令。")
    html = "<!DOCTYPE html><html><body><!ENTITY x 'y'>&x;</body></html>"
    assert (await chat(html)).startswith("没看懂“<!DOCTYPE html><html…”")
    # Adding a rule that is far too long says how long, not 400.
    assert (await chat("添加 长文 " + "字" * 5000)).startswith(
        "回复最多 600 个字，现在是 5000 个字")


async def test_list_shows_line_breaks(chat: Chat, stores: Stores) -> None:
    await chat("注册", ALICE)
    user = await stores.users.by_openid(ALICE)
    assert user is not None
    await stores.rules.add(user.uid, "营业时间", "周一到周五 9:00-18:00\n\n周末  休息")
    listing = await chat("列表", ALICE)
    assert listing == ("你的规则（共 1 条）：\n01 营业时间 → 周一到周五 9:00-18:00\n"
                       "\u3000\u3000周末 休息")
    assert (await chat("修改 01 第一行\n第二行", ALICE)) == (
        "已修改 01：营业时间 → 第一行\n\u3000\u3000第二行")


async def test_list_pages_talk_about_pages(chat: Chat) -> None:
    await chat("添加 苹果 梨子")
    assert (await chat("列表 0")).startswith("没有第 0 页：页码从 1 开始。\n正确格式：列表 [页码]")
    assert (await chat("列表 abc")).startswith("页码应该是数字（如 2），“abc”不是。")
    assert await chat("列表 2") == "只有 1 页。发送「列表」从第 1 页看起。"


async def test_xss_and_cdata_in_rules_round_trip(chat: Chat) -> None:
    assert await chat("添加 <script>x</script> ]]><b>") == (
        "已添加 01：<script>x</script> → ]]><b>"
    )
    assert "]]><b>" in await chat("列表")


async def test_emoji_and_rtl_text(chat: Chat) -> None:
    assert await chat("添加 👋🏽 שלום עליכם") == "已添加 01：👋🏽 → שלום עליכם"
    assert await chat("列表") == "你的规则（共 1 条）：\n01 👋🏽 → שלום עליכם"


async def test_control_characters_are_refused(chat: Chat) -> None:
    # DEL is legal in XML (so WeChat can deliver it) but has no place in a keyword.
    reply = await chat("添加 坏\x7f键 回复")
    assert reply.startswith("关键词不能包含控制字符")
    assert (await chat("添加 好 回\x7f复")).startswith("回复内容不能包含控制字符")


async def test_nothing_xml_forbids_reaches_a_reply(chat: Chat, stores: Stores) -> None:
    # A name from WeChat with a stray control character, a rule that got in before the
    # check: the reply stays well-formed, without them.
    await chat("注册", ALICE)
    user = await stores.users.by_openid(ALICE)
    assert user is not None
    assert (await stores.users.set_profile(user.uid, nickname="小\x01明\uffff")).nickname == "小明"
    await stores.db["rules"].insert_one({"uid": user.uid, "no": 1, "keyword": "旧\ufffe",
                                         "reply": "坏\x01字", "mode": "exact", "norm": "旧"})
    assert await chat("列表", ALICE) == "你的规则（共 1 条）：\n01 旧 → 坏字"
