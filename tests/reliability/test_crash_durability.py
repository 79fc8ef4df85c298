"""kill -9 while a client adds rules: every rule whose reply said "已添加" exists after the
restart, and none exists twice.

The client behaves like WeChat: a push that got no answer is delivered again (up to three
times), and a reply counts as an acknowledgement only if it says the rule was added.  The
traffic is sized by time, not by a count: the client adds for a fixed number of seconds
(``SECONDS``), however fast the write path is on the machine, and every wait after it is
bounded by what one push can take (three deliveries).  Each user gets at most
``PER_USER`` adds, below the rule limit, so that every answer is "已添加" or busy; answers
are counted by kind, and a rule-limit or unknown answer fails the test.

A client told "关键词…已经有了" must find that rule stored (``said_already_exists_but_not_stored``
is 0): when the MongoDB-wire server is killed while an add's insert is in flight, the
insert is tried once more (``store.group``) on the restarted server, and a retry of an
insert that went in meets the rule's own ``_id``; ``store.group`` counts that document as
stored, not as a competing add.
"""

from __future__ import annotations

import asyncio
import collections
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
from mpbot.simulator import Simulator
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


LANES = 10          # pushes in flight at once
PER_USER = 100      # adds per user: below the rule limit (200 by default)
ATTEMPTS = 3        # WeChat delivers a push up to three times
HTTP_TIMEOUT_S = 10.0
RETRY_PAUSE_S = 0.5
# The longest one push can take: three deliveries, each up to the timeout, and the pauses.
PUSH_BOUND_S = ATTEMPTS * (HTTP_TIMEOUT_S + RETRY_PAUSE_S)
SECONDS = scale(10, 150)  # how long the client adds, per test


class Client:
    """Sends 添加 commands, ``LANES`` at a time, until ``stop_at``; redelivers unanswered
    pushes.  ``answers`` counts each push's final outcome by kind; ``deliveries`` counts
    every delivery attempt by what came back."""

    def __init__(self, port: int, seconds: float) -> None:
        self.http = AsyncHTTPClient(force_instance=True, max_clients=2 * LANES)
        self.sim = Simulator(f"http://127.0.0.1:{port}/wechat", TEST_TOKEN, http=self.http,
                             timeout=HTTP_TIMEOUT_S)
        self.started = time.monotonic()
        self.stop_at = self.started + seconds
        self.acked: list[tuple[str, str]] = []  # (openid, keyword) the server confirmed
        self.answers: collections.Counter[str] = collections.Counter(
            {"added": 0, "busy": 0, "already_exists": 0, "rule_limit": 0, "other": 0,
             "unanswered": 0})
        self.deliveries: collections.Counter[str] = collections.Counter(
            {"200": 0, "non_200": 0, "refused_or_cut": 0, "timed_out": 0})
        self.others: list[str] = []  # the first few answers of no expected kind
        # (openid, keyword) of pushes answered "关键词…已经有了": each push adds a new
        # keyword, so that answer claims the push's own rule is stored.
        self.exists: list[tuple[str, str]] = []
        self.sent = 0
        self.ended_at: float | None = None

    def keep_going(self, seconds: float) -> None:
        """Add for at least ``seconds`` more."""
        self.stop_at = max(self.stop_at, time.monotonic() + seconds)

    @staticmethod
    def openid(i: int) -> str:
        return f"o-crash-{i % LANES + LANES * (i // (LANES * PER_USER)):06d}"

    async def _one(self, i: int) -> None:
        openid = self.openid(i)
        push = self.sim.prepare(openid, f"添加 规则{i} 回复{i}")  # redelivered as it is
        for _attempt in range(ATTEMPTS):
            try:
                delivery = await self.sim.post(push)
            except HTTPClientError as err:  # 599: no answer in time
                self.deliveries["timed_out" if err.code == 599 else "non_200"] += 1
                await asyncio.sleep(RETRY_PAUSE_S)
                continue
            except OSError:  # refused, or cut off by the kill
                self.deliveries["refused_or_cut"] += 1
                await asyncio.sleep(RETRY_PAUSE_S)
                continue
            if delivery.status != 200:
                self.deliveries["non_200"] += 1
                await asyncio.sleep(RETRY_PAUSE_S)
                continue
            self.deliveries["200"] += 1
            if delivery.text.startswith("已添加"):
                self.answers["added"] += 1
                self.acked.append((openid, f"规则{i}"))
            elif delivery.text == BUSY:
                self.answers["busy"] += 1
            elif "已经有了" in delivery.text:
                self.answers["already_exists"] += 1
                self.exists.append((openid, f"规则{i}"))
            elif delivery.text.startswith("规则已满"):
                self.answers["rule_limit"] += 1
            else:
                self.answers["other"] += 1
                if len(self.others) < 3:
                    self.others.append(delivery.text[:80])
            return
        self.answers["unanswered"] += 1

    async def run(self) -> None:
        async def lane(first: int) -> None:
            i = first
            while time.monotonic() < self.stop_at:
                await self._one(i)
                self.sent += 1
                i += LANES

        try:
            await asyncio.gather(*(lane(n) for n in range(LANES)))
        finally:
            self.ended_at = time.monotonic()
            self.http.close()

    async def finished(self) -> None:
        """Wait for ``run``: it stops at ``stop_at``, plus at most one push per lane."""
        remaining = self.stop_at - time.monotonic()
        await asyncio.wait_for(self.traffic, max(0.0, remaining) + PUSH_BOUND_S + 10)

    def start(self) -> None:
        self.traffic = asyncio.ensure_future(self.run())

    def figures(self) -> dict[str, Any]:
        elapsed = (self.ended_at or time.monotonic()) - self.started
        return {"adding_s": round(elapsed, 1), "adds_sent": self.sent,
                "acknowledged": len(self.acked),
                "acknowledged_per_s": round(len(self.acked) / elapsed, 1) if elapsed else 0,
                "answers": dict(self.answers), "deliveries": dict(self.deliveries),
                **({"other_answers": self.others} if self.others else {})}


def _check_rules(mongo: pymongo.MongoClient, client: Client) -> dict[str, int]:  # type: ignore[type-arg]
    """What is stored, against what the client was told."""
    db = mongo["wxreply"]
    uids = {u["openid"]: u["_id"] for u in db.users.find({}, {"openid": 1})}
    stored: dict[tuple[int, str], int] = {}
    for rule in db.rules.find({}, {"uid": 1, "keyword": 1}):
        key = (rule["uid"], rule["keyword"])
        stored[key] = stored.get(key, 0) + 1
    lost = [k for k in client.acked if (uids.get(k[0]), k[1]) not in stored]
    twice = [k for k, count in stored.items() if count > 1]
    missing = [k for k in client.exists if (uids.get(k[0]), k[1]) not in stored]
    return {"rules_stored": sum(stored.values()), "lost": len(lost), "stored_twice": len(twice),
            "said_already_exists_but_not_stored": len(missing)}


async def test_kill_9_of_serve_loses_no_acknowledged_rule(tmp_path: Path,
                                                          figures: dict[str, Any]) -> None:
    serve = Serve(tmp_path)
    serve.start()
    try:
        await serve.healthy()
        client = Client(serve.port, SECONDS)
        client.start()
        try:
            await asyncio.sleep(SECONDS / 2)
            figures["acknowledged_before_kill"] = len(client.acked)
            serve.kill()  # kill -9 mid-traffic
            killed_at = time.monotonic()
            serve.start()
            await serve.healthy()
            figures["restart_s"] = round(time.monotonic() - killed_at, 1)
            client.keep_going(SECONDS / 4)  # adds after the restart too
            await client.finished()
        finally:
            figures.update(client.figures())
        serve.stop()
        serve.start()  # read back after a clean restart too
        await serve.healthy()
        mongo = serve.mongo()
        result = _check_rules(mongo, client)
        mongo.close()
    finally:
        serve.stop()
    figures.update(result)
    assert result["lost"] == 0
    assert result["stored_twice"] == 0
    assert result["said_already_exists_but_not_stored"] == 0
    assert result["rules_stored"] >= len(client.acked)
    assert client.answers["rule_limit"] == client.answers["other"] == 0, client.others
    assert len(client.acked) > figures["acknowledged_before_kill"]  # adds after the restart


async def test_kill_9_of_the_embedded_mongodb_loses_no_acknowledged_rule(
        tmp_path: Path, figures: dict[str, Any]) -> None:
    serve = Serve(tmp_path)
    serve.start()
    try:
        await serve.healthy()
        client = Client(serve.port, SECONDS)
        client.start()
        try:
            await asyncio.sleep(SECONDS / 3)
            os.kill(serve.child("secantusd-py"), signal.SIGKILL)  # the database dies
            killed_at = time.monotonic()
            before = len(client.acked)
            figures["acknowledged_before_kill"] = before
            busy_before = client.answers["busy"]
            client.keep_going(60)  # until it flows again, within a minute
            await until(lambda: len(client.acked) > before + 5, timeout=60)
            figures["adds_flowing_again_after_s"] = round(time.monotonic() - killed_at, 1)
            figures["busy_replies_after_kill"] = client.answers["busy"] - busy_before
            client.stop_at = time.monotonic() + SECONDS / 3  # then adds for a while more
            await client.finished()
        finally:
            figures.update(client.figures())
        mongo = serve.mongo()
        result = _check_rules(mongo, client)
        mongo.close()
        assert serve.proc is not None
        serve_running = serve.proc.poll() is None
    finally:
        serve.stop()
    figures.update(result)
    assert serve_running
    assert result["lost"] == 0
    assert result["stored_twice"] == 0
    assert result["said_already_exists_but_not_stored"] == 0
    assert result["rules_stored"] >= len(client.acked)
    assert client.answers["rule_limit"] == client.answers["other"] == 0, client.others
