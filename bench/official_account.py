"""Benchmark: the official-account path, side by side (targets: docs/PERFORMANCE.md).

Three servers, each a process of its own on 127.0.0.1, driven in turn by the same load
generator (:mod:`bench.loadgen`, also a process of its own) with safe-mode pushes:

(a) wxreply — ``wxreply serve --no-worker``, the production entry point, on a private
    Redis and MongoDB-wire server, answering ``列表`` (list rules) for users who have 20
    rules each: signature, timestamp window, decryption, nonce replay check, exactly-once
    dedup, the command, the reply, encryption;
(b) a bare Tornado handler that only verifies, decrypts, parses and echoes with wechatpy;
(c) WeRoBot behind its own Tornado adapter, answering the same echo, as it ships (its
    default session storage reads and writes each user's session in SQLite); and (c′) the
    same with session storage off, its fastest configuration.

Figures: saturation throughput (closed loop), and p50/p99 latency at fixed offered loads
(open loop: 100, 300 and 1000 pushes/s).  The rounds are interleaved (a, b, c, a, b, c …)
so that other load on the machine hits all three alike; the tables show the median and
the range.  A null server (fixed answer, no parsing) measures the generator's own
ceiling in the same run, to show that the generator is not what limits the figures.

The write path is measured in the same run, beside the reads: each round also sends
``添加`` (add a rule) from WRITE_USERS users over 16 connections in a closed loop, then
``删除`` (delete) of every rule the round added, and counts the MongoDB commands and Redis
commands the server side issued per add (``serverStatus`` opcounters, Redis ``INFO``).

Every answer is classified by the generator (reply, wrong, busy, success, error); the
throughput counts correct replies only, and a sample of every round is checked here again.

Targets: (a) ≥ 50 % of (b) and ≥ 2× (c′) (WeRoBot with its session storage off, the fair
echo; as shipped beside it) in throughput; p99 < 10 ms at 300/s; ≥ 300 adds/s with
p99 < 100 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import subprocess
import time
from pathlib import Path
from typing import Any

from pymongo import MongoClient
from redis import Redis

from bench.common import (
    Child,
    PrivateStores,
    bench_env,
    cpu_seconds,
    free_port,
    python_child,
    read_json_line,
    spread,
    wait_port,
    workdir,
)
from mpbot.protocol import Envelope, read_reply
from store import MatchMode, Stores

TOKEN = "benchtoken"  # noqa: S105 - a local benchmark's official account
AES_KEY = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG"
APPID = "wx2c2769f8efd9abc2"
ACCOUNT = "gh_wxreply_bench"
USERS = 20
RULES_PER_USER = 20
COMMAND = "列表"
RATES = (100, 300, 1000)
TARGET_OF_BARE = 0.5
TARGET_OVER_WEROBOT = 2.0
TARGET_P99_MS = 10.0
TARGET_RATE = 300
WRITE_USERS = 16
# Adds per user and round: below the 200-rule limit, whatever the write rate.
WRITE_ADDS_PER_USER = 190
TARGET_ADDS_PER_S = 300.0
TARGET_ADD_P99_MS = 100.0

SERVERS = ("wxreply", "bare", "werobot", "werobot-nosession")


def _openids() -> list[str]:
    return [f"oBENCH{i:022d}" for i in range(USERS)]


def _writers() -> list[str]:
    return [f"oWRITE{i:022d}" for i in range(WRITE_USERS)]


def _expect(name: str, text: str = COMMAND) -> dict[str, Any]:
    """What a correct answer of ``name`` says (see :func:`bench.loadgen.classify`)."""
    if name == "null":
        return {"any": True}
    if name == "wxreply":
        return {"prefix": f"你的规则（共 {RULES_PER_USER} 条"}
    return {"exact": text}


async def _seed(mongo_url: str, redis_url: str) -> None:
    """USERS users with RULES_PER_USER rules each (CJK and ASCII, exact and contains)."""
    stores = Stores.connect(mongo_url, redis_url, db_name="bench", prefix="bench:")
    try:
        await stores.ensure_indexes()
        for openid in _openids():
            user, _ = await stores.users.get_or_create(openid)
            items = [(f"关键词{n:02d}" if n % 2 else f"keyword-{n:02d}",
                      f"自动回复 {n}：营业时间 9:00–18:00，地址见菜单。",
                      MatchMode.CONTAINS if n % 3 == 0 else MatchMode.EXACT)
                     for n in range(1, RULES_PER_USER + 1)]
            await stores.rules.add_many(user.uid, items)
        for openid in _writers():
            await stores.users.get_or_create(openid)
    finally:
        await stores.close()


class Servers:
    """The servers under test, each started as its own process."""

    def __init__(self, tmp: Path, stores: PrivateStores,
                 wxreply_env: dict[str, str] | None = None) -> None:
        self.tmp = tmp
        self.stores = stores
        self.wxreply_env = wxreply_env or {}
        self.children: dict[str, Child] = {}
        self.ports: dict[str, int] = {}

    def start(self) -> None:
        for name in (*SERVERS, "null"):
            port = free_port()
            self.ports[name] = port
            log = self.tmp / f"{name}.log"
            if name == "wxreply":
                env = bench_env(
                    WXR_HOST="127.0.0.1", WXR_PORT=str(port),
                    WXR_PUBLIC_URL=f"http://127.0.0.1:{port}",
                    WXR_DATA_DIR=str(self.tmp / "var"), WXR_SECRET_KEY="bench-secret",  # noqa: S106
                    WXR_MONGO_URL=self.stores.mongo.url, WXR_REDIS_URL=self.stores.redis.url,
                    WXR_MONGO_DB="bench", WXR_REDIS_PREFIX="bench:",
                    WXR_MP_TOKEN=TOKEN, WXR_MP_AES_KEY=AES_KEY, WXR_MP_APPID=APPID,
                    **self.wxreply_env)
                child = python_child("wxreply", ["serve", "--no-worker"], log, env=env)
            elif name == "null":
                child = python_child("bench.loadgen", ["null", str(port)], log)
            else:
                # WeRoBot keeps its SQLite session file in the working directory.
                cwd = self.tmp / name
                cwd.mkdir()
                child = python_child("bench.oa_servers", [
                    name, "--port", str(port), "--token", TOKEN, "--aes-key", AES_KEY,
                    "--appid", APPID], log, cwd=cwd)
            self.children[name] = child
        for name, child in self.children.items():
            wait_port(self.ports[name], 60, child)

    def stop(self) -> None:
        for child in self.children.values():
            child.stop()


def run_phase(tmp: Path, servers: Servers, name: str, phase: dict[str, Any],
              stores: PrivateStores) -> dict[str, Any]:
    """One generator process against one server; its result plus the CPU each process
    of the server side spent meanwhile."""
    spec = {"port": servers.ports[name], "token": TOKEN, "aes_key": AES_KEY, "appid": APPID,
            "account": ACCOUNT, "openids": _openids(), "text": COMMAND,
            "expect": _expect(name), **phase}
    watched = {"server": servers.children[name].pid}
    if name == "wxreply":
        watched.update(zip(("redis", "mongo"), stores.pids, strict=True))
    gen = python_child("bench.loadgen", [], tmp / "loadgen.log", stdin=subprocess.PIPE,
                       stdout=subprocess.PIPE)
    try:
        assert gen.proc.stdin is not None
        assert gen.proc.stdout is not None
        gen.proc.stdin.write((json.dumps(spec) + "\n").encode())
        gen.proc.stdin.flush()
        before = {k: cpu_seconds([pid]) for k, pid in watched.items()}
        result = read_json_line(gen.proc.stdout, 120 + 2 * float(phase["duration"]), gen)
        after = {k: cpu_seconds([pid]) for k, pid in watched.items()}
    finally:
        gen.stop()
    # CPU covers build-free time only roughly (the generator builds before it sends and
    # the servers idle meanwhile), so it is reported per answered push.
    answered = max(1, result["completed"])
    result["cpu_us_per_push"] = {k: (after[k] - before[k]) / answered * 1e6 for k in watched}
    result["generator_cpu_us_per_push"] = result["generator_cpu_s"] / answered * 1e6
    result["server"] = name
    return result


def check_answers(name: str, result: dict[str, Any],
                  expect: dict[str, Any] | None = None) -> bool:
    """Every answer of the phase was a correct reply (the generator's count), and the
    sample of this round, opened again here, says what it should."""
    if name == "null":
        return result["ok"] > 0
    expect = expect or _expect(name)
    envelope = Envelope(TOKEN, AES_KEY, APPID)
    for body in result["samples"]:
        text = read_reply(body, envelope, TOKEN)
        if not ((text == expect["exact"]) if "exact" in expect
                else text.startswith(expect["prefix"])):
            return False
    return bool(result["samples"]) and result["ok"] == result["completed"]


def _store_counters(stores: PrivateStores) -> dict[str, int]:
    """Commands served so far by the MongoDB-wire server and by Redis."""
    mongo: MongoClient[dict[str, Any]] = MongoClient(stores.mongo.url)
    redis = Redis.from_url(stores.redis.url)
    try:
        ops = mongo.admin.command("serverStatus")["opcounters"]
        info = redis.info("stats")
        return {"mongo": int(sum(ops.values())), "redis": int(info["total_commands_processed"])}
    finally:
        mongo.close()
        redis.close()


def _written_rules(stores: PrivateStores) -> list[list[str]]:
    """``删除`` of every rule the writers hold, interleaved across the writers."""
    mongo: MongoClient[dict[str, Any]] = MongoClient(stores.mongo.url)
    try:
        db = mongo["bench"]
        openid_of = {u["_id"]: u["openid"]
                     for u in db.users.find({"openid": {"$in": _writers()}}, {"openid": 1})}
        per_user: dict[int, list[int]] = {uid: [] for uid in openid_of}
        for rule in db.rules.find({"uid": {"$in": list(openid_of)}}, {"uid": 1, "no": 1}):
            per_user[rule["uid"]].append(int(rule["no"]))
    finally:
        mongo.close()
    lists = [[[openid_of[uid], f"删除 {no:02d}"] for no in sorted(nos)]
             for uid, nos in per_user.items()]
    return [m for row in itertools.zip_longest(*lists) for m in row if m is not None]


def _settled_rules(stores: PrivateStores, quiet_s: float = 0.5,
                   timeout_s: float = 15.0) -> list[list[str]]:
    """:func:`_written_rules` once it stops changing: adds the generator gave up waiting
    for at the end of its phase may still be going in (a retried write, a full batch)."""
    deadline = time.monotonic() + timeout_s
    last = _written_rules(stores)
    while time.monotonic() < deadline:
        time.sleep(quiet_s)
        now = _written_rules(stores)
        if now == last:
            break
        last = now
    return last


def run_writes(tmp: Path, servers: Servers, stores: PrivateStores, round_no: int,
               phase: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """One round of adds (closed loop, 16 connections), then deletes of all it added."""
    writers = _writers()
    adds = [[writers[i % WRITE_USERS], f"添加 r{round_no}k{i} 回复{round_no}-{i}"]
            for i in range(WRITE_USERS * WRITE_ADDS_PER_USER)]
    before = _store_counters(stores)
    again = _store_counters(stores)  # what one reading itself costs (its handshakes)
    own = {k: again[k] - before[k] for k in before}
    add = run_phase(tmp, servers, "wxreply", {
        **phase, "messages": adds, "expect": {"prefix": "已添加"}}, stores)
    after = _store_counters(stores)
    sent = max(1, add["sent"])
    add["round_trips_per_add"] = {k: (after[k] - again[k] - own[k]) / sent for k in after}
    add["ok_checked"] = check_answers("wxreply", add, {"prefix": "已添加"})
    deletes = _settled_rules(stores)
    delete = run_phase(tmp, servers, "wxreply", {
        **phase, "duration": max(float(phase["duration"]), 30.0), "messages": deletes,
        "expect": {"prefix": "已删除"}}, stores)
    delete["ok_checked"] = check_answers("wxreply", delete, {"prefix": "已删除"})
    delete["left"] = len(_settled_rules(stores))
    return {"add": add, "delete": delete}


def run(quick: bool = False) -> dict[str, Any]:
    """Measure and return the figures (what ``main`` prints)."""
    rounds = 1 if quick else 3
    rate_rounds = 1 if quick else 2
    saturate = {"kind": "closed", "connections": 16,
                "warmup": 0.3 if quick else 2.0, "duration": 1.0 if quick else 8.0}
    rates = (TARGET_RATE,) if quick else RATES
    write_phase = {"kind": "closed", "connections": 16,
                   "warmup": 0.2 if quick else 0.5, "duration": 1.0 if quick else 8.0}
    open_phase = {"kind": "open", "connections": 64,
                  "warmup": 0.2 if quick else 1.0, "duration": 0.8 if quick else 8.0}
    started = time.monotonic()
    with workdir("wxr-bench-oa-") as tmp, PrivateStores(tmp) as stores:
        asyncio.run(_seed(stores.mongo.url, stores.redis.url))
        servers = Servers(tmp, stores)
        try:
            servers.start()
            sat: dict[str, list[dict[str, Any]]] = {n: [] for n in (*SERVERS, "null")}
            writes: list[dict[str, dict[str, Any]]] = []
            lat: dict[int, dict[str, list[dict[str, Any]]]] = {
                r: {n: [] for n in SERVERS} for r in rates}
            sat["null"].append(run_phase(tmp, servers, "null", {**saturate, "cycle": True},
                                         stores))
            for i in range(rounds):
                for name in _rotated(i):
                    sat[name].append(run_phase(tmp, servers, name, saturate, stores))
                writes.append(run_writes(tmp, servers, stores, i, write_phase))
            for i in range(rate_rounds):
                for rate in rates:
                    for name in _rotated(i):
                        lat[rate][name].append(run_phase(
                            tmp, servers, name, {**open_phase, "rate": rate}, stores))
        finally:
            servers.stop()
    return summarize(sat, lat, quick, time.monotonic() - started, writes)


def _rotated(i: int) -> tuple[str, ...]:
    """The servers in round ``i``'s order: each goes first in turn."""
    k = i % len(SERVERS)
    return SERVERS[k:] + SERVERS[:k]


def _ratios(sat: dict[str, list[dict[str, Any]]], other: str) -> list[float]:
    """wxreply's throughput over ``other``'s, round by round (the servers of one round
    ran back to back, so they met the same background load)."""
    rounds = min(len(sat["wxreply"]), len(sat[other]))
    return [sat["wxreply"][i]["throughput"] / sat[other][i]["throughput"]
            for i in range(rounds) if sat[other][i]["throughput"]]


def summarize_writes(writes: list[dict[str, dict[str, Any]]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for op in ("add", "delete"):
        rs = [w[op] for w in writes]
        out[op] = {"throughput": spread([r["throughput"] for r in rs]),
                   "p50_ms": spread([r["p50_ms"] for r in rs]),
                   "p99_ms": spread([r["p99_ms"] for r in rs]),
                   "kinds": {k: sum(r["kinds"][k] for r in rs) for k in rs[0]["kinds"]}
                   if rs else {},
                   "ok": bool(rs) and all(r["ok_checked"] for r in rs)}
    adds = [w["add"] for w in writes]
    out["round_trips_per_add"] = {
        k: spread([r["round_trips_per_add"][k] for r in adds]) for k in ("mongo", "redis")}
    out["cpu_us_per_add"] = {k: spread([r["cpu_us_per_push"][k] for r in adds])
                             for k in ("server", "redis", "mongo")}
    out["left_after_delete"] = sum(w["delete"]["left"] for w in writes)
    return out


def summarize(sat: dict[str, list[dict[str, Any]]], lat: dict[int, dict[str, list[dict[str, Any]]]],
              quick: bool, elapsed: float,
              writes: list[dict[str, dict[str, Any]]] | None = None) -> dict[str, Any]:
    throughput = {n: spread([r["throughput"] for r in rs]) for n, rs in sat.items()}
    of_bare = _ratios(sat, "bare")
    # The headline compares with WeRoBot's fair echo (session storage off); as shipped
    # (SQLite sessions) is shown beside it.
    over_werobot = _ratios(sat, "werobot-nosession")
    over_werobot_shipped = _ratios(sat, "werobot")
    write = summarize_writes(writes or [])
    latency: dict[int, dict[str, dict[str, Any]]] = {
        rate: {n: {"p50_ms": spread([r["p50_ms"] for r in rs]),
                   "p99_ms": spread([r["p99_ms"] for r in rs]),
                   "achieved": spread([r["throughput"] for r in rs]),
                   "ok": all(check_answers(n, r) for r in rs)}
               for n, rs in per.items()}
        for rate, per in lat.items()}
    cpu = {n: {k: spread([r["cpu_us_per_push"][k] for r in rs]) for k in rs[0]["cpu_us_per_push"]}
           for n, rs in sat.items() if rs}
    p99_at_target: dict[str, float] = latency.get(TARGET_RATE, {}).get("wxreply", {}).get(
        "p99_ms", {})
    answers_ok = all(check_answers(n, r) for n, rs in sat.items() for r in rs)
    of_bare_s, over_werobot_s = spread(of_bare), spread(over_werobot)
    targets = {
        "of_bare": of_bare_s["median"] >= TARGET_OF_BARE,
        "over_werobot": over_werobot_s["median"] >= TARGET_OVER_WEROBOT,
        "p99_at_300": p99_at_target.get("median", float("inf")) < TARGET_P99_MS,
        "adds_per_s": write["add"]["throughput"]["median"] >= TARGET_ADDS_PER_S,
        "add_p99": write["add"]["p99_ms"]["median"] < TARGET_ADD_P99_MS,
    }
    answers_ok = answers_ok and write["add"]["ok"] and write["delete"]["ok"]
    return {
        "quick": quick,
        "elapsed_s": elapsed,
        "users": USERS, "rules_per_user": RULES_PER_USER, "command": COMMAND,
        "throughput": throughput,
        "ratio_of_bare": of_bare_s,
        "ratio_over_werobot": over_werobot_s,
        "ratio_over_werobot_shipped": spread(over_werobot_shipped),
        "write": write,
        "latency": latency,
        "cpu_us_per_push": cpu,
        "generator": {
            "ceiling": throughput["null"],
            "cpu_us_per_push": spread([r["generator_cpu_us_per_push"]
                                       for rs in sat.values() for r in rs]),
            "schedule_lag_p99_ms": spread([r["schedule_lag_p99_ms"] for per in lat.values()
                                           for rs in per.values() for r in rs]),
        },
        "errors": sum(r["completed"] - r["ok"] for rs in sat.values() for r in rs)
        + sum(w[op]["completed"] - w[op]["ok"] for w in writes or [] for op in w),
        "answers_ok": answers_ok,
        "targets": targets,
        "target_met": all(targets.values()) and answers_ok,
    }


def format_table(result: dict[str, Any]) -> list[str]:
    """Rows for the combined table (``bench.run``)."""
    t = result["throughput"]
    lines = ["| server | saturation pushes/s | " + " | ".join(
        f"p50 / p99 ms at {r}/s" for r in result["latency"]) + " |",
        "|---|---|" + "---|" * len(result["latency"])]
    for name, label in (("wxreply", "(a) wxreply `列表`, 20 rules"),
                        ("bare", "(b) bare Tornado + wechatpy echo"),
                        ("werobot", "(c) WeRoBot Tornado adapter echo, as shipped"),
                        ("werobot-nosession", "(c′) WeRoBot, session storage off")):
        cells = [_range(t[name], "{:,.0f}")]
        for per in result["latency"].values():
            row = per[name]
            cells.append(f"{_range(row['p50_ms'], '{:.1f}')} / {_range(row['p99_ms'], '{:.1f}')}")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return lines


def _range(s: dict[str, float], fmt: str) -> str:
    if s["n"] > 1:
        return f"{fmt.format(s['median'])} ({fmt.format(s['min'])}–{fmt.format(s['max'])})"
    return fmt.format(s["median"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.official_account", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json", action="store_true", help="print the raw result as JSON")
    args = parser.parse_args(argv)
    result = run(quick=args.quick)
    if args.json:
        print(json.dumps(result, indent=1, default=str))
    print("\n".join(format_table(result)))
    print(f"wxreply/bare {_range(result['ratio_of_bare'], '{:.2f}')}, "
          f"wxreply/WeRoBot {_range(result['ratio_over_werobot'], '{:.2f}')}, "
          f"generator ceiling {_range(result['generator']['ceiling'], '{:,.0f}')}/s; "
          f"targets {result['targets']}")
    return 0 if result["target_met"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
