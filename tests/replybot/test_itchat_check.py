"""check_itchat: every itchat internal the webwx package touches is looked for at start-up.

Two halves: the package's own code is read (``ast``) for everything of itchat's it uses,
and each of those must be in ``library.NEEDS``; then each need is taken away from the
installed itchat in turn and the check must fail naming it.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import itchat
import pytest

from replybot.webwx import library
from replybot.webwx.library import NEEDS, ItchatUnsupported, check_itchat

PACKAGE = Path(library.__file__).parent
# The names the package's code gives an itchat.Core (a parameter, the driver's attribute).
_CORE_NAMES = ("core", "self._core")


def _dotted(node: ast.AST) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        base = _dotted(node.value)
        return None if base is None else f"{base}.{node.attr}"
    return None


def _used(tree: ast.Module) -> set[str]:
    """Everything of itchat's the module uses, spelt as in ``Need.where``."""
    aliases: dict[str, str] = {}  # a local name -> where it comes from in itchat
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("itchat"):
            for alias in node.names:
                aliases[alias.asname or alias.name] = f"{node.module}.{alias.name}"
    used: set[str] = set()
    for node in ast.walk(tree):
        if not isinstance(node, ast.Attribute | ast.Name):
            continue
        dotted = _dotted(node)
        if dotted is None:
            continue
        head, _, rest = dotted.partition(".")
        if head in aliases:
            used.add(f"{aliases[head]}.{rest}" if rest else aliases[head])
        elif head == "itchat" and rest and rest not in ("config", "utils", "storage",
                                                          "components"):
            used.add(dotted)
        for core in _CORE_NAMES:
            if dotted.startswith(core + ".") and dotted.count(".") > core.count("."):
                parts = dotted[len(core) + 1:].split(".")
                # itchat's own attributes end where requests' (core.s.*) or plain
                # dict/list methods (core.loginInfo.get) begin.
                depth = 2 if parts[0] == "storageClass" and len(parts) > 1 else 1
                used.add("Core." + ".".join(parts[:depth]))
    return used


def _package_uses() -> set[str]:
    used: set[str] = set()
    for path in sorted(PACKAGE.glob("*.py")):
        used |= _used(ast.parse(path.read_text(encoding="utf-8")))
    # Parents of a longer path are not needs of their own (itchat.config.BASE_URL, not
    # itchat.config).
    return {name for name in used
            if not any(other.startswith(name + ".") for other in used)}


def test_the_installed_itchat_passes() -> None:
    check_itchat()


def test_every_itchat_internal_the_package_uses_is_checked() -> None:
    used = _package_uses()
    # The reader sees what it should: a few of each kind, so an empty scan cannot pass.
    assert {"itchat.config.BASE_URL", "itchat.components.login.push_login",
            "itchat.storage.templates.MassivePlatform", "Core.get_QR", "Core.s",
            "Core.storageClass.updateLock"} <= used
    checked = {need.where for need in NEEDS}
    assert used - checked == set()


def _take_away(monkeypatch: pytest.MonkeyPatch, where: str) -> None:
    """Remove ``where`` from the installed itchat for the rest of the test."""
    *parents, name = where.split(".")
    if parents[0] == "Core":
        chain = parents[1:]
        if not chain and hasattr(itchat.Core, name):
            monkeypatch.delattr(itchat.Core, name)
            return
        # An instance attribute: made in Core.__init__, so taken away right after it.
        original = itchat.Core.__init__

        def init(self: Any, *args: Any, **kwargs: Any) -> None:
            original(self, *args, **kwargs)
            owner = self
            for part in chain:
                owner = getattr(owner, part)
            if name in vars(owner):
                delattr(owner, name)
            else:
                setattr(owner, name, None)  # a class attribute: shadow it with nothing

        monkeypatch.setattr(itchat.Core, "__init__", init)
        return
    owner: Any = library._find(".".join(parents), None)
    monkeypatch.delattr(owner, name)


def _needs() -> Iterator[Any]:
    seen: set[str] = set()
    for need in NEEDS:
        if need.where not in seen:  # a second need on the same thing fails the same way
            seen.add(need.where)
            yield pytest.param(need.where, id=need.where)


@pytest.mark.parametrize("where", list(_needs()))
def test_a_missing_internal_fails_the_check_by_name(monkeypatch: pytest.MonkeyPatch,
                                                    where: str) -> None:
    _take_away(monkeypatch, where)
    with pytest.raises(ItchatUnsupported, match="install itchat-uos==1.4.1") as failed:
        check_itchat()
    message = str(failed.value)
    if where == "itchat.utils.htmlParser.unescape":
        assert "unescape messages" in message
    elif where == "itchat.config.UOS_PATCH_EXTSPAM":
        assert "UOS login headers" in message
    else:
        assert f"{where} (" in message


def test_a_changed_receiving_loop_fails_the_check(monkeypatch: pytest.MonkeyPatch) -> None:
    """A start_receiving that no longer ignores ReadTimeout would make every stop wait
    for WeChat's 25 s poll, or end the session as failed: found by reading its code."""
    def start_receiving(self: Any, exitCallback: Any = None,
                        getReceivingFnOnly: bool = False) -> None:
        return None

    monkeypatch.setattr(itchat.Core, "start_receiving", start_receiving)
    with pytest.raises(ItchatUnsupported, match="Core.start_receiving .a receiving loop"):
        check_itchat()


def test_a_changed_signature_fails_the_check(monkeypatch: pytest.MonkeyPatch) -> None:
    def get_QR(self: Any, uuid: str | None = None) -> None:
        return None

    monkeypatch.setattr(itchat.Core, "get_QR", get_QR)
    with pytest.raises(ItchatUnsupported, match=r"lacks Core.get_QR \(callable with uuid"):
        check_itchat()
