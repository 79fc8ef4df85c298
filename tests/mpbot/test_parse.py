"""The parser alone: no store, no HTTP."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mpbot.commands import TABLE
from mpbot.parse import NotACommand, ParseError, parse_command
from store import MatchMode


def parse(text: str) -> tuple[str, tuple]:  # type: ignore[type-arg]
    parsed = parse_command(text, TABLE)
    return parsed.command.name, parsed.args


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("帮助", ("帮助", ())),
        ("help", ("帮助", ())),
        ("HeLp", ("帮助", ())),
        ("ＨＥＬＰ", ("帮助", ())),
        ("?", ("帮助", ())),
        ("？", ("帮助", ())),
        ("  注册  ", ("注册", ())),
        ("添加 苹果 梨子", ("添加", ("苹果", "梨子", MatchMode.EXACT))),
        ("add apple pear", ("添加", ("apple", "pear", MatchMode.EXACT))),
        ("ADD apple pear", ("添加", ("apple", "pear", MatchMode.EXACT))),
        ("添加\u3000苹果\u3000梨子", ("添加", ("苹果", "梨子", MatchMode.EXACT))),
        ("添加 苹果 梨子 很好吃", ("添加", ("苹果", "梨子 很好吃", MatchMode.EXACT))),
        ("添加 地址 第一行\n第二行", ("添加", ("地址", "第一行\n第二行", MatchMode.EXACT))),
        ("添加 *价格 请看菜单", ("添加", ("价格", "请看菜单", MatchMode.CONTAINS))),
        ("添加 ＊价格 请看菜单", ("添加", ("价格", "请看菜单", MatchMode.CONTAINS))),
        ("列表", ("列表", (1,))),
        ("list 2", ("列表", (2,))),
        ("ls", ("列表", (1,))),
        ("列表2", ("列表", (2,))),
        ("删除 01", ("删除", (1,))),
        ("删除 １２", ("删除", (12,))),
        ("删除01", ("删除", (1,))),
        ("del 3", ("删除", (3,))),
        ("DELETE 3", ("删除", (3,))),
        ("修改 01 樱桃", ("修改", (1, "樱桃"))),
        ("edit 1 cherry pie", ("修改", (1, "cherry pie"))),
        ("update 1 x", ("修改", (1, "x"))),
        ("开启", ("开启", ())),
        ("ON", ("开启", ())),
        ("off", ("关闭", ())),
        ("状态", ("状态", ())),
        ("Status", ("状态", ())),
        ("验证码", ("验证码", ())),
        ("code", ("验证码", ())),
        ("重置密码", ("重置密码", ())),
        ("reset", ("重置密码", ())),
    ],
)
def test_parses(text: str, expected: tuple) -> None:  # type: ignore[type-arg]
    assert parse(text) == expected


@pytest.mark.parametrize(
    ("text", "problem", "usage"),
    [
        ("添加", "缺少关键词和回复", "添加 <关键词> <回复>"),
        ("添加 苹果", "缺少回复内容", "添加 <关键词> <回复>"),
        ("添加 * 梨子", "* 后面要紧跟关键词", "添加 <关键词> <回复>"),
        ("删除", "缺少编号", "删除 <编号>"),
        ("删除 abc", "编号应该是数字", "删除 <编号>"),
        ("删除 -1", "编号应该是数字", "删除 <编号>"),
        ("删除 0", "编号从 01 开始", "删除 <编号>"),
        ("删除 99999999999999999999", "编号从 01 开始", "删除 <编号>"),
        ("删除 1 2", "一次只能删除一条", "删除 <编号>"),
        ("修改", "缺少编号和新回复", "修改 <编号> <新回复>"),
        ("修改 01", "缺少新回复", "修改 <编号> <新回复>"),
        ("修改 x 新", "编号应该是数字", "修改 <编号> <新回复>"),
        # Pages are talked about as pages (页码), not as rule numbers.
        ("列表 x", "页码应该是数字（如 2），“x”不是", "列表 [页码]"),
        ("列表 abc", "页码应该是数字", "列表 [页码]"),
        ("列表 0", "没有第 0 页：页码从 1 开始", "列表 [页码]"),
        ("列表０", "没有第 0 页", "列表 [页码]"),
        ("列表 1 2", "只需要一个页码", "列表 [页码]"),
    ],
)
def test_errors_name_the_problem_and_show_the_form(text: str, problem: str, usage: str) -> None:
    with pytest.raises(ParseError) as err:
        parse_command(text, TABLE)
    assert problem in err.value.reply
    assert f"正确格式：{usage}" in err.value.reply
    assert "例：" in err.value.reply


@pytest.mark.parametrize("text", ["", "   ", "你好", "添加剂 多少钱", "hello world", "删除吧"])
def test_not_a_command(text: str) -> None:
    with pytest.raises(NotACommand):
        parse_command(text, TABLE)


def test_every_command_has_help_and_example() -> None:
    help_text = TABLE.help_text()
    for command in TABLE:
        assert command.usage in help_text
        assert command.help in help_text
        parse_command(command.example, TABLE)  # every example parses
    assert len(help_text.encode()) <= 2048


def test_help_lists_english_aliases() -> None:
    help_text = TABLE.help_text()
    for alias in ("help", "register", "add", "list", "del", "edit", "on", "off", "status"):
        assert alias in help_text


@given(st.text(max_size=200))
def test_parser_never_raises_anything_else(text: str) -> None:
    try:
        parse_command(text, TABLE)
    except (ParseError, NotACommand):
        pass
