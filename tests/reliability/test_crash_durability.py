"""kill -9 while a client adds rules: every rule whose reply said "已添加" exists after the
restart, and none exists twice (docs/RELIABILITY.md).

The client behaves like WeChat: a push that got no answer is delivered again (up to three
times), and a reply counts as an acknowledgement only if it says the rule was added.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pymongo
from tornado.httpclient import AsyncHTTPClient, HTTPClientError

from mpbot.edge import BUSY
from mpbot.simulator import PreparedPush, Simulator
from store.embedded import free_port
from tests.conftest import TEST_TOKEN
from tests.reliability.conftest import scale
from tests.util import until


class Serve:
    """``wxreply serve`` on embedded stores in a data dir of its own."""

    def __init__(self, tmp_path: Path) -> None:
        self.data_dir = tmp_path / "var"
        self.port = free_port()
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("WXR_")}
        self.env.update({"WXR_DATA_DIR": str(self.data_dir), "WXR_PORT": str(self.port),
                         "WXR_MP_TOKEN": TEST_TOKEN})
        self.log = tmp_path / "serve.out"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen([sys.executable, "-m", "wxreply", "serve"],
                                         env=self.env, stdout=out, stderr=out)

    async def healthy(self) -> None:
        client = AsyncHTTPClient()

        async def ok() -> bool:
            assert self.proc is not None
            assert self.proc.poll() is None, "serve died"
            try:
                response = await client.fetch(f"http://127.0.0.1:{self.port}/healthz",
                                              raise_error=False, request_timeout=2)
            except OSError:
                return False
            return response.code == 200

        await until(ok, timeout=60, every=0.1)

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(60)

    def mongo(self) -> pymongo.MongoClient:  # type: ignore[type-arg]
        urls = json.loads((self.data_dir / "stores.json").read_text())
        return pymongo.MongoClient(urls["mongo_url"], serverSelectionTimeoutMS=10_000)

    def child(self, program: str) -> int:
        assert self.proc is not None
        out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(self.proc.pid)],
                             capture_output=True, text=True).stdout
        for pid in out.split():
            args = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
            if program in args:
                return int(pid)
        raise AssertionError(f"no {program} under serve")


class Client:
    """Sends N 添加 commands, ten at a time, redelivering unanswered pushes."""

    def __init__(self, port: int, n: int) -> None:
        self.http = AsyncHTTPClient(force_instance=True, max_clients=20)
        self.sim = Simulator(f"http://127.0.0.1:{port}/wechat", TEST_TOKEN, http=self.http,
                             timeout=10)
        self.pushes = [self.sim.prepare(f"o-crash-{i % 10:06d}", f"添加 规则{i} 回复{i}")
                       for i in range(n)]
        self.acked: list[tuple[str, str]] = []  # (openid, keyword) the server confirmed
        self.busy = 0
        self.unanswered = 0
        self.sent = 0

    async def _one(self, i: int, push: PreparedPush) -> None:
        for _attempt in range(3):
            try:
                delivery = await self.sim.post(push)
            except (OSError, HTTPClientError):  # refused, or cut off by the kill
                await asyncio.sleep(0.5)
                continue
            if delivery.status != 200:
                await asyncio.sleep(0.5)
                continue
            if delivery.text.startswith("已添加"):
                self.acked.append((f"o-crash-{i % 10:06d}", f"规则{i}"))
            elif delivery.text == BUSY:
                self.busy += 1
            return
        self.unanswered += 1

    async def run(self) -> None:
        lanes = asyncio.Semaphore(10)

        async def lane(i: int) -> None:
            async with lanes:
                await self._one(i, self.pushes[i])
                self.sent += 1

        await asyncio.gather(*(lane(i) for i in range(len(self.pushes))))
        self.http.close()


def _check_rules(mongo: pymongo.MongoClient, acked: list[tuple[str, str]]) -> dict[str, int]:  # type: ignore[type-arg]
    db = mongo["wxreply"]
    uids = {u["openid"]: u["_id"] for u in db.users.find({}, {"openid": 1})}
    stored: dict[tuple[int, str], int] = {}
    for rule in db.rules.find({}, {"uid": 1, "keyword": 1}):
        key = (rule["uid"], rule["keyword"])
        stored[key] = stored.get(key, 0) + 1
    lost = [k for k in acked if (uids.get(k[0]), k[1]) not in stored]
    twice = [k for k, count in stored.items() if count > 1]
    return {"rules_stored": sum(stored.values()), "lost": len(lost), "stored_twice": len(twice)}


async def test_kill_9_of_serve_loses_no_acknowledged_rule(tmp_path: Path,
                                                          figures: dict[str, Any]) -> None:
    serve = Serve(tmp_path)
    serve.start()
    try:
        await serve.healthy()
        client = Client(serve.port, scale(1000, 5000))
        traffic = asyncio.ensure_future(client.run())
        # Durable commits on the embedded server: about 20 adds a second on 2 cores.
        await until(lambda: len(client.acked) >= len(client.pushes) // 2,
                    timeout=scale(120, 900))
        acked_before_kill = len(client.acked)
        serve.kill()  # kill -9 mid-traffic
        killed_at = time.monotonic()
        serve.start()
        await serve.healthy()
        restart_s = time.monotonic() - killed_at
        await asyncio.wait_for(traffic, scale(300, 1200))
        serve.stop()
        serve.start()  # read back after a clean restart too
        await serve.healthy()
        mongo = serve.mongo()
        result = _check_rules(mongo, client.acked)
        mongo.close()
    finally:
        serve.stop()
    assert result["lost"] == 0
    assert result["stored_twice"] == 0
    assert result["rules_stored"] >= len(client.acked)
    figures.update({"adds_sent": len(client.pushes), "acknowledged": len(client.acked),
                    "acknowledged_before_kill": acked_before_kill, "busy_replies": client.busy,
                    "unanswered_after_3_deliveries": client.unanswered,
                    "restart_s": round(restart_s, 1), **result})


async def test_kill_9_of_the_embedded_mongodb_loses_no_acknowledged_rule(
        tmp_path: Path, figures: dict[str, Any]) -> None:
    serve = Serve(tmp_path)
    serve.start()
    try:
        await serve.healthy()
        client = Client(serve.port, scale(1000, 5000))
        traffic = asyncio.ensure_future(client.run())
        await until(lambda: len(client.acked) >= len(client.pushes) // 3, timeout=120)
        os.kill(serve.child("secantusd-py"), signal.SIGKILL)  # the database dies
        killed_at = time.monotonic()
        before = len(client.acked)
        await until(lambda: len(client.acked) > before + 5, timeout=60)
        back_s = time.monotonic() - killed_at
        await asyncio.wait_for(traffic, 300)
        mongo = serve.mongo()
        result = _check_rules(mongo, client.acked)
        mongo.close()
        assert serve.proc is not None
        assert serve.proc.poll() is None
    finally:
        serve.stop()
    assert result["lost"] == 0
    assert result["stored_twice"] == 0
    figures.update({"adds_sent": len(client.pushes), "acknowledged": len(client.acked),
                    "busy_replies": client.busy,
                    "unanswered_after_3_deliveries": client.unanswered,
                    "adds_flowing_again_after_s": round(back_s, 1), **result})
