"""The README's and docs/API.md's examples, followed in that order as a newcomer would,
work: the steps are read out of the documents themselves, so a change to either that
breaks the walk-through fails here (the API's 添加 once collided with the README's)."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

from mpbot.simulator import Simulator
from tests.conftest import Web, remember_secret
from tests.web_min.conftest import Client

DOCS = Path(__file__).resolve().parents[2]


def _readme_chats() -> list[str]:
    text = (DOCS / "README.md").read_text()
    return [" ".join(shlex.split(line)[2:]) for line in text.splitlines()
            if line.startswith(".venv/bin/wxreply chat ")]


def _api_steps() -> list[tuple[str, str, str | None]]:
    """(method, path, JSON body) of each curl line of API.md's example, in order."""
    text = (DOCS / "docs" / "API.md").read_text()
    block = text[text.index("## Examples"):]
    block = block[block.index("```sh"):block.index("```", block.index("```sh") + 5)]
    joined = block.replace("\\\n", " ")
    steps = []
    for line in joined.splitlines():
        if not line.startswith("curl ") and "$(curl " not in line:
            continue
        path = re.search(r'\$B(/[^\s"\']*)', line)
        body = re.search(r"-d '([^']*)'", line)
        assert path is not None, line
        steps.append(("POST" if body else "GET", path.group(1), body.group(1) if body else None))
    return steps


async def test_readme_then_api_walkthrough(web: Web, sim: Simulator) -> None:
    chats = _readme_chats()
    assert chats == ["帮助", "添加 苹果 梨子"]
    for text in chats:
        assert (await sim.send(text)).status == 200
    code_reply = (await sim.send("验证码")).text
    code = re.search(r"注册验证码：(\d+-\d{6})", code_reply)
    assert code is not None
    remember_secret(code.group(1))
    client = Client(web.base_url)
    answers = []
    for method, path, body in _api_steps():
        if body is not None:
            body = body.replace("1000-123456", code.group(1))
        path = path.replace("$TOKEN", client.csrf or "")
        answer = await client.call(method, path,
                                   raw=body.encode() if body is not None else None,
                                   content_type="application/json" if body else None)
        assert answer.code == 200, (method, path, answer.body)
        answers.append((path, answer.body))
    shown = dict(answers)["/database/show"]["data"]
    assert shown == {"01": {"苹果": "梨子"}, "02": {"香蕉": "橘子"}, "03": {"*价格": "请看菜单"}}
    assert json.dumps(answers[-1][1]).startswith('{"code": 200')
