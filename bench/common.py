"""Helpers shared by the benchmarks: child processes, private stores, statistics, the
machine's description.

Every server under test runs as a process of its own on 127.0.0.1, started here with
``PR_SET_PDEATHSIG`` so that an interrupted benchmark leaves nothing running, and stopped
by its pid (never by name: other people's processes share this machine).
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import psutil

from store.embedded import EmbeddedMongo, EmbeddedRedis, free_port

ROOT = Path(__file__).resolve().parent.parent


def _die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    if sys.platform == "linux":
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class Child:
    """A child process with its output in a log file; stopped by pid."""

    def __init__(self, argv: Sequence[str], log_path: Path, *,
                 env: dict[str, str] | None = None, stdin: int | IO[bytes] | None = None,
                 stdout: int | None = None, cwd: Path | None = None) -> None:
        self.log_path = log_path
        self.argv = list(argv)
        with log_path.open("ab") as log:
            self.proc = subprocess.Popen(  # noqa: S603 - fixed argv, no shell
                self.argv, cwd=cwd or ROOT, env=env, stdin=stdin or subprocess.DEVNULL,
                stdout=stdout if stdout is not None else log, stderr=log,
                preexec_fn=_die_with_parent,  # noqa: PLW1509
            )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, timeout: float = 15.0) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._close_pipes()

    def kill(self) -> None:
        """SIGKILL: for processes whose orderly shutdown is not what is measured."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._close_pipes()

    def _close_pipes(self) -> None:
        for pipe in (self.proc.stdin, self.proc.stdout):
            if pipe is not None:
                with contextlib.suppress(OSError):
                    pipe.close()

    def log_tail(self, chars: int = 2000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""


def python_child(module: str, args: Sequence[str], log_path: Path, *,
                 env: dict[str, str] | None = None, **kwargs: Any) -> Child:
    """``python -m module args…`` with this interpreter (the project's venv)."""
    return Child([sys.executable, "-m", module, *args], log_path,
                 env=env if env is not None else bench_env(), **kwargs)


def bench_env(**extra: str) -> dict[str, str]:
    """The environment for children: ours without any WXR_ setting of the caller's (a
    benchmark must not touch a configured deployment), plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("WXR_")}
    env["PYTHONPATH"] = str(ROOT)
    env.update(extra)
    return env


def wait_port(port: int, timeout: float = 30.0, child: Child | None = None) -> None:
    """Until something accepts connections on 127.0.0.1:``port``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if child is not None and not child.alive():
            raise RuntimeError(f"{child.argv} exited: {child.log_tail()}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout:.0f} s")


class PrivateStores:
    """A private Redis and MongoDB-wire server in a temp dir, for one benchmark."""

    def __init__(self, base: Path) -> None:
        self.redis = EmbeddedRedis(base / "redis")
        self.mongo = EmbeddedMongo(base / "mongo")

    def __enter__(self) -> PrivateStores:
        self.redis.start()
        try:
            self.mongo.start()
        except BaseException:
            self.redis.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.mongo.stop()
        self.redis.stop()

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in (self.redis.process, self.mongo.process) if p is not None]


@contextlib.contextmanager
def workdir(prefix: str) -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix=prefix) as name:
        yield Path(name)


def cpu_seconds(pids: Sequence[int]) -> float:
    """User + system CPU time of ``pids`` so far (a process that is gone counts 0)."""
    total = 0.0
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            times = psutil.Process(pid).cpu_times()
            total += times.user + times.system
    return total


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """The ``q``-quantile (0–1) of already sorted values, nearest rank."""
    if not sorted_values:
        return float("nan")
    index = min(len(sorted_values) - 1, max(0, int(round(q * len(sorted_values) + 0.5)) - 1))
    return sorted_values[index]


def spread(values: Sequence[float]) -> dict[str, float]:
    """Median and range of repeated measurements (what the tables show)."""
    clean = [v for v in values if v == v]  # drop NaN
    if not clean:
        return {"median": float("nan"), "min": float("nan"), "max": float("nan"), "n": 0}
    return {"median": statistics.median(clean), "min": min(clean), "max": max(clean),
            "n": len(clean)}


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem_gib = 0.0
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_gib = int(line.split()[1]) / 1024 / 1024
                break
    load = os.getloadavg() if hasattr(os, "getloadavg") else (0.0, 0.0, 0.0)
    return {
        "cpu": model or platform.processor() or "unknown",
        "cores": os.cpu_count() or 0,
        "memory_gib": round(mem_gib, 1),
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "load_before": [round(x, 2) for x in load],
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
    }


def read_json_line(stream: IO[bytes], timeout: float, child: Child) -> dict[str, Any]:
    """The next line a child prints on stdout, as JSON (the children's way to report)."""
    deadline = time.monotonic() + timeout
    import selectors

    with selectors.DefaultSelector() as sel:
        sel.register(stream, selectors.EVENT_READ)
        while time.monotonic() < deadline:
            if not sel.select(min(1.0, max(0.0, deadline - time.monotonic()))):
                if not child.alive():
                    raise RuntimeError(f"{child.argv} exited: {child.log_tail()}")
                continue
            line = stream.readline()
            if not line:
                raise RuntimeError(f"{child.argv} closed its output: {child.log_tail()}")
            return json.loads(line)
    raise RuntimeError(f"{child.argv} said nothing in {timeout:.0f} s: {child.log_tail()}")


__all__ = ["Child", "PrivateStores", "bench_env", "cpu_seconds", "free_port", "machine",
           "percentile", "python_child", "read_json_line", "spread", "wait_port", "workdir"]
