"""The JSON half of the hostile-input corpus (tests/reliability/corpus/api): operator
injection, wrong types, huge and negative numbers, script payloads.  Each case gets one
of the codes it lists, never a 500, and nothing reaches another user's data."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest

from store import Stores
from tests.web_min.conftest import Accounts, Client

CORPUS = Path(__file__).parents[1] / "reliability" / "corpus" / "api"


async def test_api_corpus(accounts: Accounts, new_client: Any, stores: Stores,
                          caplog: pytest.LogCaptureFixture, figures: dict[str, Any]) -> None:
    caplog.set_level(logging.INFO)
    victim = await accounts.logged_in("victim")
    assert (await victim.post("/database/add", json_body={"秘密": "不能被改"})).code == 200
    attacker: Client = await accounts.logged_in("attacker")
    anonymous: Client = new_client()
    cases = sorted(CORPUS.glob("*.json"))
    assert len(cases) >= 25
    seen: dict[int, int] = {}
    server_errors: list[str] = []
    unexpected: list[tuple[str, int, Any]] = []  # (case, code, body) not among its codes
    for path in cases:
        case = json.loads(path.read_text())
        client = attacker if case.get("auth") else anonymous
        answer = await client.call(case["method"], case["path"], json_body=case.get("body"))
        if answer.status >= 500:
            server_errors.append(path.name)
            continue
        seen[answer.code] = seen.get(answer.code, 0) + 1
        if answer.code not in case["codes"] or not isinstance(answer.body.get("message"), str):
            unexpected.append((path.name, answer.code, answer.body))
    shown = await victim.get("/database/show")
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    figures.update({"api_requests": len(cases), "crashes": len(errors),
                    "http_5xx": len(server_errors), "unexpected_codes": len(unexpected),
                    "codes": {str(k): v for k, v in sorted(seen.items())},
                    "other_users_rule_intact": shown.body["data"] == {"01": {"秘密": "不能被改"}}})
    assert server_errors == []
    assert unexpected == []
    assert shown.body["data"] == {"01": {"秘密": "不能被改"}}
    assert errors == []
