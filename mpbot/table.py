"""The command table: each command registered once with its names, usage and help.

``帮助`` is generated from this table, and the parser looks names up in it, so a command
cannot be added without its help line, nor renamed in one place only.
"""

from __future__ import annotations

import dataclasses
import enum
import unicodedata
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mpbot.context import Ctx

Reply = str
Handler = Callable[["Ctx", tuple[Any, ...]], Awaitable[Reply]]


class Args(enum.Enum):
    """The argument shapes commands take; the parser knows how to read each."""

    NONE = "none"                  # 帮助
    PAGE = "page"                  # 列表 [页]
    RULE = "rule"                  # 添加 <关键词> <回复>  (``*关键词`` = contains)
    NUMBER = "number"              # 删除 <编号>
    NUMBER_TEXT = "number_text"    # 修改 <编号> <新回复>


@dataclasses.dataclass(frozen=True, slots=True)
class Command:
    name: str                  # the Chinese name, shown first
    aliases: tuple[str, ...]   # English (and other) names
    usage: str                 # e.g. "添加 <关键词> <回复>"
    help: str                  # one short line
    example: str               # one example the user can copy
    args: Args
    handler: Handler

    @property
    def names(self) -> tuple[str, ...]:
        return (self.name, *self.aliases)


def fold(word: str) -> str:
    """How command names compare: NFKC (full-width ``ＨＥＬＰ``) and case-folded."""
    return unicodedata.normalize("NFKC", word).casefold()


class CommandTable:
    def __init__(self) -> None:
        self._commands: list[Command] = []
        self._by_name: dict[str, Command] = {}

    def register(self, name: str, *aliases: str, usage: str, help: str, example: str,
                 args: Args = Args.NONE) -> Callable[[Handler], Handler]:
        def add(handler: Handler) -> Handler:
            command = Command(name, aliases, usage, help, example, args, handler)
            for word in command.names:
                key = fold(word)
                if key in self._by_name:
                    raise ValueError(f"command name {word!r} registered twice")
                self._by_name[key] = command
            self._commands.append(command)
            return handler

        return add

    def lookup(self, word: str) -> Command | None:
        return self._by_name.get(fold(word))

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(self._commands)

    @property
    def chinese_names(self) -> list[str]:
        """Longest first, so that the parser's glued-form check (``删除01``) is greedy."""
        return sorted((c.name for c in self._commands), key=len, reverse=True)

    def help_text(self) -> str:
        lines = ["可用命令（中文或英文，不分大小写）："]
        for command in self._commands:
            english = "/".join(a for a in command.aliases if a.isascii() and a.isalpha())
            names = f"{command.usage}" + (f"（{english}）" if english else "")
            lines.append(f"• {names}：{command.help}")
            if command.example != command.usage:
                lines.append(f"  例：{command.example}")
        return "\n".join(lines)
