"""``/metrics`` of a real ``wxreply serve`` (and of a real ``wxreply worker``): scraped and
parsed as Prometheus would, the counters move with what ``wxreply chat`` and a bot login
do, only the operator may read them, and ``WXR_LOG_FORMAT=json`` logs parse line by line."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from mpbot.simulator import Simulator
from sandbox.mpapi import FakeMpApi
from sandbox.webwx import FakeWebWx
from store import Stores
from store.embedded import free_port
from tests.conftest import TEST_TOKEN, Servers, remember_secret
from tests.e2e.test_failover import Fleet, Workers
from tests.e2e.test_serve_bot import _healthy, _start, _stop, serve_env
from tests.e2e.test_serve_chat import Served, _wxreply_chat
from tests.util import until

OWNER = "o-serve-metrics-00000000000001"
TOKEN = "metrics-token-0123456789abcdef"
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def _get(port: int, headers: dict[str, str] | None = None) -> tuple[int, str]:
    request = urllib.request.Request(f"http://127.0.0.1:{port}/metrics", headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


async def scrape(port: int, headers: dict[str, str] | None = None) -> Samples:
    """Every sample of ``/metrics``, keyed by name and labels, parsed by prometheus_client."""
    status, text = await asyncio.to_thread(_get, port, headers)
    assert status == 200, text
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


async def test_serve_metrics_move_with_chat_and_a_login(
        tmp_path: Path, servers: Servers, namespace: str, stores: Stores,
        fake_webwx: FakeWebWx, fake_mpapi: FakeMpApi) -> None:
    remember_secret(TOKEN)
    port = free_port()
    env = serve_env(port, tmp_path, servers, namespace, fake_mpapi, fake_webwx, "serve-metrics",
                    WXR_PACE_DELAY_MIN_MS="0", WXR_PACE_DELAY_MAX_MS="0",
                    WXR_LOG_FORMAT="json", WXR_HEALTH_TOKEN=TOKEN)
    log = tmp_path / "serve.out"
    served = Served(port, env)
    account = fake_webwx.add_account("老李", friends=1)
    proc = _start(env, log)
    try:
        await _healthy(port, proc)
        before = await scrape(port, {"X-Request-Id": "scrape-1"})
        families = {name for name, _ in before}
        assert {"wxreply_pushes_total", "wxreply_push_answer_seconds_bucket",
                "wxreply_commands_total", "wxreply_push_dedup_hits_total",
                "wxreply_notices_total", "wxreply_bot_sessions", "wxreply_bot_logins_total",
                "wxreply_bot_replies_total", "wxreply_bot_replies_suppressed_total",
                "wxreply_store_call_seconds_count", "wxreply_store_errors_total",
                "wxreply_bus_lag_seconds_count"} <= families
        assert value(before, "wxreply_commands_total", command="add") == 0

        for args in (["帮助"], ["添加", "苹果", "梨子"], ["列表"], ["随便说点什么"],
                     ["--times", "4", "列表"]):
            code, _, err = await _wxreply_chat(served, "--openid", OWNER, *args)
            assert code == 0, err
        after = await scrape(port)
        for command, runs in (("help", 1), ("add", 1), ("list", 2), ("other", 1)):
            assert value(after, "wxreply_commands_total", command=command) == runs, command
        assert value(after, "wxreply_pushes_total", outcome="reply", reason="") == 8
        assert value(after, "wxreply_push_dedup_hits_total") == 3  # the 3 retries of 列表
        assert value(after, "wxreply_push_answer_seconds_count") == 8
        assert (value(after, "wxreply_store_call_seconds_count", store="redis")
                > value(before, "wxreply_store_call_seconds_count", store="redis"))
        assert (value(after, "wxreply_store_call_seconds_count", store="mongodb")
                > value(before, "wxreply_store_call_seconds_count", store="mongodb"))

        sim = Simulator(f"http://127.0.0.1:{port}/wechat", TEST_TOKEN)
        await sim.send("登录", OWNER)
        uuid = (await until(lambda: fake_webwx.pending_logins()))[0]["uuid"]
        fake_webwx.scan(uuid, account)
        fake_webwx.confirm(uuid)
        await until(lambda: [m for m in fake_mpapi.sent if "已登录" in m.content], timeout=15)
        fake_webwx.push_friend_text(account, 0, "苹果")
        await until(lambda: [s for s in fake_webwx.sent(account) if s.text == "梨子"])
        bot = await until(lambda: _when(scrape(port), lambda s: value(
            s, "wxreply_bot_replies_total", result="sent") == 1), timeout=10)
        assert value(bot, "wxreply_bot_sessions", state="online") == 1
        assert value(bot, "wxreply_bot_sessions", state="waiting_scan") == 0
        assert value(bot, "wxreply_bot_logins_total", result="started") == 1
        assert value(bot, "wxreply_bot_logins_total", result="succeeded") == 1
        assert value(bot, "wxreply_bot_logins_total", result="closed") == 0
        assert value(bot, "wxreply_notices_total", channel="customer_service",
                     result="sent") >= 1
        assert value(bot, "wxreply_bus_lag_seconds_count", stream="starts") >= 1
        assert value(bot, "wxreply_bus_lag_seconds_count", stream="events") >= 1

        # Only the operator: beyond loopback (here: relayed by a proxy nobody declared)
        # without the token, 403, as /healthz keeps its detail.
        status, body = await asyncio.to_thread(_get, port, {"X-Real-IP": "203.0.113.9"})
        assert status == 403
        assert "wxreply_" not in body
        status, _ = await asyncio.to_thread(_get, port, {"X-Real-IP": "203.0.113.9",
                                                         "Authorization": "Bearer guess"})
        assert status == 403
        with_token = await scrape(port, {"X-Real-IP": "203.0.113.9",
                                         "Authorization": f"Bearer {TOKEN}"})
        assert value(with_token, "wxreply_bot_sessions", state="online") == 1
    finally:
        assert await _stop(proc) == 0

    records = []
    for line in log.read_text().splitlines():
        records.append(json.loads(line))  # every line is one JSON object
    assert records
    for record in records:
        assert {"time", "level", "logger", "message"} <= set(record), record
        assert record["time"].endswith("Z")
    assert any(r.get("request_id") == "scrape-1" and "/metrics" in r["message"]
               for r in records)
    assert any(r["logger"] == "wxreply" and "listening" in r["message"] for r in records)
    text = log.read_text()
    assert OWNER not in text
    assert TOKEN not in text


async def _when(scraped, check):  # type: ignore[no-untyped-def]
    samples = await scraped
    return samples if check(samples) else None


async def test_worker_metrics_port_serves_session_states(
        tmp_path: Path, servers: Servers, namespace: str, stores: Stores,
        fake_webwx: FakeWebWx) -> None:
    workers = Workers(tmp_path, servers, namespace, fake_webwx.base_url)
    port = free_port()
    proc = _start_worker(workers, "w-metrics", port)
    try:
        empty = await until(lambda: _scrape_or_none(port, proc), timeout=30, every=0.2)
        assert value(empty, "wxreply_bot_sessions", state="online") == 0
        await Fleet(stores, fake_webwx).log_in(2)
        online = await until(lambda: _when(_scrape_or_none(port, proc), lambda s: s and value(
            s, "wxreply_bot_sessions", state="online") == 2), timeout=15)
        assert value(online, "wxreply_bot_logins_total", result="started") == 2
        assert value(online, "wxreply_bot_logins_total", result="succeeded") == 2
        assert sum(v for (name, _), v in online.items() if name == "wxreply_bot_sessions") == 2
        status, _ = await asyncio.to_thread(_get, port, {"X-Forwarded-For": "198.51.100.7"})
        assert status == 403
    finally:
        workers.stop_all()
    assert proc.returncode == 0


def _start_worker(workers: Workers, name: str, metrics_port: int) -> subprocess.Popen[bytes]:
    """As Workers.start, with ``--metrics-port``."""
    with (workers.tmp_path / f"{name}.log").open("ab") as out:
        proc = subprocess.Popen([sys.executable, "-m", "wxreply", "worker", "--capacity", "5",
                                 "--metrics-port", str(metrics_port)],
                                env={**workers.env, "WXR_WORKER_ID": name},
                                stdout=out, stderr=out)
    workers.procs[name] = proc
    return proc


async def _scrape_or_none(port: int, proc: subprocess.Popen[bytes]) -> Samples | None:
    assert proc.poll() is None, "the worker exited"
    try:
        return await scrape(port)
    except OSError:
        return None
