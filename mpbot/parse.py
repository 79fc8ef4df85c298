"""Parse, then act: ``parse_command`` turns chat text into a command and its arguments.

Pure (no I/O), tested alone.  A :class:`ParseError` carries the message and the usage
line the user sees; text that names no command at all is :class:`NotACommand`, which the
edge answers with a short hint (never silence).
"""

from __future__ import annotations

import dataclasses
import unicodedata
from typing import Any

from mpbot.table import Args, Command, CommandTable
from store.models import MatchMode

MAX_NUMBER = 999_999


@dataclasses.dataclass(frozen=True, slots=True)
class Parsed:
    command: Command
    args: tuple[Any, ...]


class ParseError(ValueError):
    def __init__(self, problem: str, command: Command) -> None:
        super().__init__(problem)
        self.problem = problem
        self.command = command

    @property
    def reply(self) -> str:
        return f"{self.problem}\n正确格式：{self.command.usage}\n例：{self.command.example}"


class NotACommand(ValueError):
    pass


def _split_head(text: str) -> tuple[str, str]:
    # str.split() treats U+3000 (the full-width space of Chinese input methods) and
    # every other Unicode space as white space.
    parts = text.split(None, 1)
    if not parts:
        return "", ""
    return parts[0], (parts[1].strip() if len(parts) > 1 else "")


def _number(word: str, command: Command) -> int:
    # NFKC turns full-width digits (０１) into ASCII; "01" and "1" are the same rule.
    digits = unicodedata.normalize("NFKC", word)
    if not digits.isascii() or not digits.isdigit():
        raise ParseError(f"编号应该是数字（如 01），“{_clip(word)}”不是。", command)
    value = int(digits)
    if not 1 <= value <= MAX_NUMBER:
        raise ParseError(f"没有编号 {_clip(word)}：编号从 01 开始。", command)
    return value


def _page(word: str, command: Command) -> int:
    # Pages are not rules: "列表 0" talks about 页码, not about rule numbers.
    digits = unicodedata.normalize("NFKC", word)
    if not digits.isascii() or not digits.isdigit():
        raise ParseError(f"页码应该是数字（如 2），“{_clip(word)}”不是。", command)
    value = int(digits)
    if not 1 <= value <= MAX_NUMBER:
        raise ParseError(f"没有第 {_clip(digits)} 页：页码从 1 开始。", command)
    return value


def _clip(text: str, limit: int = 20) -> str:
    return text if len(text) <= limit else text[:limit] + "…"


def _find_command(text: str, table: CommandTable) -> tuple[Command, str]:
    head, rest = _split_head(text)
    command = table.lookup(head)
    if command is not None:
        return command, rest
    # "删除01", "列表2": a Chinese name glued to a number is still that command.  Only a
    # digit may follow, so that a keyword such as "添加剂" is never read as "添加 剂".
    for name in table.chinese_names:
        if text.startswith(name) and text[len(name):len(name) + 1].isdigit():
            found = table.lookup(name)
            assert found is not None
            return found, text[len(name):].strip()
    raise NotACommand(text)


def parse_command(text: str, table: CommandTable) -> Parsed:
    text = text.strip()
    if not text:
        raise NotACommand(text)
    command, rest = _find_command(text, table)

    if command.args is Args.NONE:
        return Parsed(command, ())

    if command.args is Args.PAGE:
        if not rest:
            return Parsed(command, (1,))
        word, extra = _split_head(rest)
        if extra:
            raise ParseError("只需要一个页码。", command)
        return Parsed(command, (_page(word, command),))

    if command.args is Args.NUMBER:
        word, extra = _split_head(rest)
        if not word:
            raise ParseError("缺少编号。", command)
        if extra:
            raise ParseError("一次只能删除一条：只写一个编号。", command)
        return Parsed(command, (_number(word, command),))

    if command.args is Args.NUMBER_TEXT:
        word, reply = _split_head(rest)
        if not word:
            raise ParseError("缺少编号和新回复。", command)
        number = _number(word, command)
        if not reply:
            raise ParseError("缺少新回复。", command)
        return Parsed(command, (number, reply))

    # Args.RULE
    keyword, reply = _split_head(rest)
    if not keyword:
        raise ParseError("缺少关键词和回复。", command)
    mode = MatchMode.EXACT
    if keyword.startswith(("*", "＊")):
        mode = MatchMode.CONTAINS
        keyword = keyword[1:]
        if not keyword:
            raise ParseError("* 后面要紧跟关键词（不要空格）。", command)
    if not reply:
        raise ParseError("缺少回复内容。", command)
    return Parsed(command, (keyword, reply, mode))
