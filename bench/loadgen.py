"""Load generator for the official-account path: a process of its own.

It builds every push before the clock starts, as WeChat's servers would send them in
safe mode (AES envelope, ``msg_signature``, ``encrypt_type=aes``, ``openid``), each with
a fresh nonce and MsgId so that no server can answer from a replay or dedup cache.  Then
it sends them over keep-alive HTTP/1.1 connections with a bare asyncio protocol: no HTTP
library, no per-request allocation beyond the response buffer, so one core of Python
drives several times what the servers under test can take (``bench.official_account``
measures that ceiling against a null server in the same run).

Two kinds of phase:

* ``closed``: ``connections`` connections each send the next push as soon as the previous
  answer is in — saturation throughput;
* ``open``: pushes are due at a fixed rate whatever the server does (no coordinated
  omission); a push that finds no idle connection waits, and that wait counts in its
  latency.  Latency runs from the moment the push was due and seen by the scheduler to the
  last byte of the answer.

Every answer is counted by kind once the clock has stopped (decrypting them costs nothing
measured): ``reply`` (a signed, encrypted reply saying what the spec's ``expect`` says),
``wrong`` (a reply saying something else), ``busy`` (the "服务繁忙" answer), ``success``
(WeChat's "no reply"), ``error`` (any status but 200).  The throughput is of correct
replies only; a few bodies are kept as samples for the caller to check again.

Run ``python -m bench.loadgen`` with one JSON spec on stdin; it prints one JSON result.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import itertools
import json
import os
import resource
import secrets
import sys
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode

from wechatpy.crypto import PrpCrypto

from bench.common import percentile
from mpbot.edge import BUSY
from mpbot.protocol import Envelope, build_push_xml, read_reply, signature

SAMPLE_BODIES = 5


def build_pushes(spec: dict[str, Any], count: int) -> list[bytes]:
    """``count`` complete HTTP requests, each a distinct push (nonce, MsgId)."""
    token, appid, account = spec["token"], spec["appid"], spec["account"]
    crypto = PrpCrypto(base64.b64decode(spec["aes_key"] + "="))
    openids: list[str] = spec["openids"]
    text: str = spec.get("text", "")
    # Either one text for all (sent round-robin from ``openids``), or one (openid, text)
    # pair per push (``messages``: the write phases, each add or delete its own).
    messages: list[list[str]] | None = spec.get("messages")
    host = f"127.0.0.1:{spec['port']}"
    path = spec.get("path", "/wechat")
    timestamp = str(int(time.time()))
    # Nonces and MsgIds: unique within a run and across runs of one benchmark.
    base_id = secrets.randbelow(2**40) << 20
    out: list[bytes] = []
    for i in range(count):
        nonce = f"{secrets.randbelow(10**9):09d}{i:07d}"
        if messages is not None:
            openid, content = messages[i]
        else:
            openid, content = openids[i % len(openids)], text
        xml = build_push_xml(to_user=account, from_user=openid, create_time=int(timestamp),
                             content=content, msg_id=str(base_id + i))
        encrypted = crypto.encrypt(xml, appid)
        encrypted = encrypted.decode() if isinstance(encrypted, bytes) else str(encrypted)
        query = urlencode({
            "signature": signature(token, timestamp, nonce), "timestamp": timestamp,
            "nonce": nonce, "openid": openid, "encrypt_type": "aes",
            "msg_signature": signature(token, timestamp, nonce, encrypted)})
        body = (f"<xml><ToUserName><![CDATA[{account}]]></ToUserName>"
                f"<Encrypt><![CDATA[{encrypted}]]></Encrypt></xml>").encode()
        head = (f"POST {path}?{query} HTTP/1.1\r\nHost: {host}\r\n"
                f"Content-Type: text/xml\r\nContent-Length: {len(body)}\r\n\r\n").encode()
        out.append(head + body)
    return out


class _Conn(asyncio.Protocol):
    """One keep-alive connection; parses just enough HTTP/1.1 to find each answer's end."""

    def __init__(self, on_answer: Callable[[_Conn, int, bytes], None],
                 on_lost: Callable[[_Conn], None]) -> None:
        self.on_answer = on_answer
        self.on_lost = on_lost
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.need = -1     # total bytes of the answer being read, once its head is in
        self.head = 0
        self.status = 0
        self.started = 0.0  # when the push now in flight was due
        self.busy = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def send(self, request: bytes, started: float) -> None:
        assert self.transport is not None
        self.started = started
        self.busy = True
        self.transport.write(request)

    def data_received(self, data: bytes) -> None:
        buf = self.buf
        buf += data
        while True:
            if self.need < 0:
                end = buf.find(b"\r\n\r\n")
                if end < 0:
                    return
                head = bytes(buf[:end]).lower()
                self.status = int(head[9:12])
                at = head.find(b"content-length:")
                length = int(head[at + 15:head.find(b"\r\n", at) if head.find(b"\r\n", at) > 0
                                   else len(head)]) if at >= 0 else 0
                self.head = end + 4
                self.need = self.head + length
            if len(buf) < self.need:
                return
            body = bytes(buf[self.head:self.need])
            del buf[:self.need]
            self.need = -1
            self.busy = False
            self.on_answer(self, self.status, body)

    def connection_lost(self, exc: Exception | None) -> None:
        self.on_lost(self)


class Phase:
    """One measured phase against one server."""

    def __init__(self, spec: dict[str, Any], requests: list[bytes]) -> None:
        self.spec = spec
        self.requests = requests
        self.next_index = 0
        self.record_from = 0.0  # answers to pushes due before this are warm-up
        self.latencies: list[float] = []
        self.statuses: collections.Counter[int] = collections.Counter()
        self.answers: list[tuple[int, bytes]] = []  # classified after the clock stops
        self.lost = 0
        self.conns: list[_Conn] = []
        self.idle: collections.deque[_Conn] = collections.deque()
        self.waiting: collections.deque[float] = collections.deque()
        self.waited = 0
        self.lag: list[float] = []
        self.done = asyncio.Event()
        self.closed_loop = spec["kind"] == "closed"
        self.stop_at = float("inf")

    def take(self) -> bytes | None:
        if self.next_index >= len(self.requests):
            if not self.spec.get("cycle"):
                return None
            # Only for the null server, which neither checks nor remembers anything.
            self.next_index = 0
        request = self.requests[self.next_index]
        self.next_index += 1
        return request

    def answer(self, conn: _Conn, status: int, body: bytes) -> None:
        now = time.perf_counter()
        if conn.started >= self.record_from:
            self.latencies.append(now - conn.started)
            self.statuses[status] += 1
            self.answers.append((status, body))
        if now >= self.stop_at:
            return
        if self.closed_loop:
            request = self.take()
            if request is None:
                self.done.set()
                return
            conn.send(request, now)
        elif self.waiting:
            due = self.waiting.popleft()
            request = self.take()
            if request is not None:
                conn.send(request, due)
        else:
            self.idle.append(conn)

    def lost_conn(self, conn: _Conn) -> None:
        self.lost += 1
        if conn in self.idle:
            self.idle.remove(conn)

    async def connect(self, port: int, count: int) -> None:
        loop = asyncio.get_running_loop()
        for _ in range(count):
            _, conn = await loop.create_connection(
                lambda: _Conn(self.answer, self.lost_conn), "127.0.0.1", port)
            self.conns.append(conn)
            self.idle.append(conn)

    async def run_closed(self, warmup: float, duration: float) -> float:
        start = time.perf_counter()
        self.record_from = start + warmup
        self.stop_at = self.record_from + duration
        while self.idle:
            conn = self.idle.popleft()
            request = self.take()
            if request is None:
                break
            conn.send(request, start)
        try:
            await asyncio.wait_for(self.done.wait(), warmup + duration)
        except TimeoutError:
            pass
        end = min(time.perf_counter(), self.stop_at)
        return max(0.0, end - self.record_from)

    async def run_open(self, rate: float, warmup: float, duration: float) -> float:
        start = time.perf_counter()
        self.record_from = start + warmup
        end = self.record_from + duration
        interval = 1.0 / rate
        for i in itertools.count():
            due = start + i * interval
            if due >= end:
                break
            now = time.perf_counter()
            if due > now:
                # Sleep to the next due time; dispatch everything due on waking.
                await asyncio.sleep(due - now)
            # Latency starts when the scheduler dispatches the push: the timer's own
            # oversleep (epoll counts in whole milliseconds) is the generator's, not the
            # server's; it is reported as the scheduling lag.
            seen = time.perf_counter()
            if due >= self.record_from:
                self.lag.append(seen - due)
            if self.idle:
                request = self.take()
                if request is None:
                    break
                self.idle.popleft().send(request, seen)
            else:
                if seen >= self.record_from:
                    self.waited += 1
                self.waiting.append(seen)
        # Let the last answers come in (bounded: a server that stalls is a result).
        deadline = time.perf_counter() + 5.0
        while time.perf_counter() < deadline and (  # noqa: ASYNC110 - a bounded drain
                self.waiting or any(c.busy for c in self.conns)):
            await asyncio.sleep(0.01)
        return duration

    def close(self) -> None:
        for conn in self.conns:
            if conn.transport is not None:
                conn.transport.close()


def classify(spec: dict[str, Any], answers: list[tuple[int, bytes]]) -> tuple[
        collections.Counter[str], list[str]]:
    """Every answer's kind (see the module's docstring), and a few bodies as samples.

    ``spec["expect"]``: ``{"exact": text}`` or ``{"prefix": text}`` for the reply, or
    ``{"any": true}`` (the null server, whose fixed answer is no WeChat reply)."""
    expect: dict[str, Any] = spec.get("expect") or {"exact": spec.get("text", "")}
    envelope = Envelope(spec["token"], spec["aes_key"], spec["appid"])
    kinds: collections.Counter[str] = collections.Counter()
    samples: list[str] = []
    step = max(1, len(answers) // SAMPLE_BODIES)
    for i, (status, raw) in enumerate(answers):
        body = raw.decode(errors="replace")
        if i % step == 0 and len(samples) < SAMPLE_BODIES:
            samples.append(body)
        if status != 200:
            kinds["error"] += 1
            continue
        if expect.get("any"):
            kinds["reply"] += 1
            continue
        try:
            text = read_reply(body, envelope, spec["token"])
        except Exception:  # noqa: BLE001 - a reply that does not open is a wrong answer
            kinds["wrong"] += 1
            continue
        if not text:
            kinds["success"] += 1
        elif text == BUSY:
            kinds["busy"] += 1
        elif (text == expect["exact"]) if "exact" in expect else text.startswith(
                expect["prefix"]):
            kinds["reply"] += 1
        else:
            kinds["wrong"] += 1
    return kinds, samples


def summarize(phase: Phase, elapsed: float, build_s: float, cpu_s: float) -> dict[str, Any]:
    lat = sorted(phase.latencies)
    kinds, samples = classify(phase.spec, phase.answers)
    ok = kinds["reply"]  # correct replies only
    return {
        "completed": len(lat),
        "sent": phase.next_index,
        "ok": ok,
        "kinds": {k: kinds[k] for k in ("reply", "wrong", "busy", "success", "error")},
        "statuses": {str(k): v for k, v in phase.statuses.items()},
        "lost_connections": phase.lost,
        "elapsed_s": elapsed,
        "throughput": ok / elapsed if elapsed > 0 else 0.0,
        "p50_ms": percentile(lat, 0.50) * 1000,
        "p90_ms": percentile(lat, 0.90) * 1000,
        "p99_ms": percentile(lat, 0.99) * 1000,
        "max_ms": (lat[-1] * 1000) if lat else float("nan"),
        "waited_for_connection": phase.waited,
        "schedule_lag_p99_ms": percentile(sorted(phase.lag), 0.99) * 1000 if phase.lag else 0.0,
        "ran_out_of_pushes": phase.next_index >= len(phase.requests),
        "build_s": build_s,
        "generator_cpu_s": cpu_s,
        "samples": samples,
    }


async def run_phase(spec: dict[str, Any]) -> dict[str, Any]:
    kind = spec["kind"]
    warmup, duration = float(spec.get("warmup", 1.0)), float(spec["duration"])
    if spec.get("messages") is not None:
        count = len(spec["messages"])
    elif spec.get("cycle"):
        count = 2000
    elif kind == "closed":
        count = int(spec.get("max_rate", 8000) * (warmup + duration))
    else:
        count = int(spec["rate"] * (warmup + duration)) + 1
    started = time.perf_counter()
    requests = build_pushes(spec, count)
    build_s = time.perf_counter() - started
    phase = Phase(spec, requests)
    await phase.connect(int(spec["port"]), int(spec.get("connections", 16)))
    cpu_before = resource.getrusage(resource.RUSAGE_SELF)
    if kind == "closed":
        elapsed = await phase.run_closed(warmup, duration)
    else:
        elapsed = await phase.run_open(float(spec["rate"]), warmup, duration)
    cpu_after = resource.getrusage(resource.RUSAGE_SELF)
    phase.close()
    cpu_s = (cpu_after.ru_utime - cpu_before.ru_utime) + (cpu_after.ru_stime - cpu_before.ru_stime)
    return summarize(phase, elapsed, build_s, cpu_s)


def main() -> int:
    spec = json.loads(sys.stdin.readline())
    # Quiet, fast GC: the generator keeps few long-lived objects.
    import gc

    gc.disable()
    result = asyncio.run(run_phase(spec))
    result["pid"] = os.getpid()
    sys.stdout.write(json.dumps(result) + "\n")
    sys.stdout.flush()
    return 0


# For the null server's fixed answer (the generator's own ceiling).
NULL_ANSWER = (b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 7\r\n\r\n"
               b"success")


class _NullServer(asyncio.Protocol):
    """Answers every request with the same bytes: what the generator alone can drive."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.buf = bytearray()

    def data_received(self, data: bytes) -> None:
        buf = self.buf
        buf += data
        while True:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(buf[:end]).lower()
            at = head.find(b"content-length:")
            length = int(head[at + 15:].split(b"\r\n", 1)[0]) if at >= 0 else 0
            if len(buf) < end + 4 + length:
                return
            del buf[:end + 4 + length]
            self.transport.write(NULL_ANSWER)


async def serve_null(port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(_NullServer, "127.0.0.1", port)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "null":
        asyncio.run(serve_null(int(sys.argv[2])))
    else:
        raise SystemExit(main())
