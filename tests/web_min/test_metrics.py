"""``GET /metrics`` in process: each app may have a registry of its own, refusals are
counted by reason, and only the operator reads it (the check /healthz uses)."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator

import pytest
from prometheus_client.parser import text_string_to_metric_families
from tornado.httpclient import AsyncHTTPClient, HTTPRequest

from config import Settings
from config.metrics import Metrics
from mpbot.simulator import Simulator
from store import Stores
from tests.conftest import Web, remember_secret
from tests.web_min.conftest import behind_proxy, serve_app
from wxreply.app import build_app

TOKEN = "metrics-token-in-process-0123456"


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


async def _metrics(web: Web, headers: dict[str, str] | None = None) -> tuple[int, str]:
    response = await AsyncHTTPClient().fetch(HTTPRequest(f"{web.base_url}/metrics",
                                                         headers=headers or {}),
                                             raise_error=False)
    return response.code, response.body.decode()


@pytest.fixture
async def two_apps(stores: Stores, settings: Settings
                   ) -> AsyncIterator[tuple[tuple[Web, Metrics], tuple[Web, Metrics]]]:
    remember_secret(TOKEN)
    made = []
    for _ in range(2):
        metrics = Metrics()
        app = build_app(dataclasses.replace(settings, health_token=TOKEN), stores,
                        metrics=metrics)
        made.append((*await serve_app(app), metrics))
    yield (made[0][0], made[0][2]), (made[1][0], made[1][2])
    for _, server, _ in made:
        server.stop()
        await server.close_all_connections()


async def test_each_app_counts_on_its_own_registry(two_apps, settings: Settings) -> None:  # type: ignore[no-untyped-def]
    (first, _), (second, _) = two_apps
    sim = Simulator(f"{first.base_url}/wechat", settings.mp_token)
    assert (await sim.send("帮助", "o-metrics-in-process-000000001")).status == 200
    forged = await AsyncHTTPClient().fetch(f"{first.base_url}/wechat?signature=x&timestamp=1"
                                           "&nonce=1", method="POST", body=b"<xml/>",
                                           raise_error=False)
    assert forged.code == 403
    code, text = await _metrics(first)
    assert code == 200
    one = _samples(text)
    assert one[("wxreply_commands_total", (("command", "help"),))] == 1
    assert one[("wxreply_pushes_total", (("outcome", "reply"), ("reason", "")))] == 1
    assert one[("wxreply_pushes_total", (("outcome", "rejected"), ("reason", "signature")))] == 1
    assert one[("wxreply_push_answer_seconds_count", ())] == 1
    other = _samples((await _metrics(second))[1])
    assert other[("wxreply_commands_total", (("command", "help"),))] == 0
    assert other[("wxreply_pushes_total", (("outcome", "reply"), ("reason", "")))] == 0


async def test_metrics_only_for_loopback_or_the_token(two_apps) -> None:  # type: ignore[no-untyped-def]
    (web, _), _ = two_apps
    assert (await _metrics(web))[0] == 200
    # Relayed by a proxy we were not told about: the caller is somewhere else.
    for headers in ({"X-Real-IP": "203.0.113.9"}, {"X-Forwarded-For": "127.0.0.1"},
                    {"Forwarded": "for=127.0.0.1"},
                    {"X-Real-IP": "203.0.113.9", "Authorization": "Bearer guess"}):
        code, body = await _metrics(web, headers)
        assert code == 403, headers
        assert "wxreply_" not in body
    code, body = await _metrics(web, {"X-Real-IP": "203.0.113.9",
                                      "Authorization": f"Bearer {TOKEN}"})
    assert code == 200
    assert "wxreply_pushes_total" in body


async def test_behind_a_trusted_proxy_the_client_address_decides(stores: Stores,
                                                                 settings: Settings) -> None:
    web, server = await serve_app(build_app(behind_proxy(settings), stores, metrics=Metrics()))
    try:
        assert (await _metrics(web, {"X-Real-IP": "127.0.0.1"}))[0] == 200
        assert (await _metrics(web, {"X-Real-IP": "198.51.100.4"}))[0] == 403
    finally:
        server.stop()
        await server.close_all_connections()
