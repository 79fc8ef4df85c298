"""``wxreply serve`` as a real subprocess on an empty data dir."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pymongo
import pytest

from store.embedded import free_port


def _env(data_dir: Path, port: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WXR_")}
    env.update({"WXR_DATA_DIR": str(data_dir), "WXR_PORT": str(port), "WXR_LOG_LEVEL": "INFO"})
    return env


def _start(data_dir: Path, port: int, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    # Output goes to a file: a pipe nobody reads would block the server once full.
    data_dir.mkdir(parents=True, exist_ok=True)
    with (data_dir.parent / "serve.out").open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "wxreply", "serve"], env=env or _env(data_dir, port),
            stdout=out, stderr=subprocess.STDOUT,
        )


def _output(data_dir: Path) -> str:
    return (data_dir.parent / "serve.out").read_text(errors="replace")


def _wait_healthy(port: int, proc: subprocess.Popen[bytes], timeout: float = 30) -> dict:
    import json

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"serve exited with {proc.returncode}"
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as resp:
                if resp.status == 200:
                    return json.loads(resp.read())
        except OSError:
            pass
        time.sleep(0.1)
    raise AssertionError("serve did not become healthy")


def _children(pid: int) -> set[int]:
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True)
    return {int(x) for x in out.stdout.split()}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers kill(0); it holds no port and no data.
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().split(")")[-1].split()[0] != "Z"


def _stop(proc: subprocess.Popen[bytes]) -> int:
    proc.send_signal(signal.SIGTERM)
    return proc.wait(timeout=30)


def test_serve_starts_stops_and_keeps_data(tmp_path: Path) -> None:
    data_dir = tmp_path / "var"
    port = free_port()
    proc = _start(data_dir, port)
    try:
        health = _wait_healthy(port, proc)
        assert health["redis"] is True
        assert health["mongodb"] is True
        assert health["version"]
        assert health["sessions"] == {}
        # The in-process worker announces itself on its first heartbeat.
        deadline = time.monotonic() + 10
        while not health["workers"] and time.monotonic() < deadline:
            time.sleep(0.2)
            health = _wait_healthy(port, proc)
        (worker,) = health["workers"].values()
        assert worker["capacity"] == 500
        assert worker["sessions"] == 0
        status = subprocess.run([sys.executable, "-m", "wxreply", "status"],
                                env=_env(data_dir, port), capture_output=True, text=True,
                                timeout=30)
        assert status.returncode == 0, status.stderr
        assert status.stdout.startswith("workers: 1\n")
        assert "sessions 0/500" in status.stdout
        children = _children(proc.pid)
        assert len(children) == 2  # redis-server and secantusd-py
        client: pymongo.MongoClient = pymongo.MongoClient(
            _embedded_mongo_url(data_dir), w="majority", journal=True
        )
        client.wxreply.marker.insert_one({"_id": "kept"})
        client.close()
    finally:
        _stop(proc)
    assert proc.returncode == 0, _output(data_dir)
    assert not any(_alive(pid) for pid in children), "embedded servers left behind"
    assert (data_dir / "secret_key").exists()

    proc = _start(data_dir, port)
    try:
        _wait_healthy(port, proc)
        client = pymongo.MongoClient(_embedded_mongo_url(data_dir))
        assert client.wxreply.marker.find_one({"_id": "kept"}) is not None
        client.close()
    finally:
        _stop(proc)


def _embedded_mongo_url(data_dir: Path) -> str:
    """The running serve's MongoDB URL, with the generated password (stores.json)."""
    import json

    return json.loads((data_dir / "stores.json").read_text())["mongo_url"]


def test_second_serve_on_same_data_dir_refuses(tmp_path: Path) -> None:
    data_dir = tmp_path / "var"
    port = free_port()
    first = _start(data_dir, port)
    try:
        _wait_healthy(port, first)
        second = subprocess.run(
            [sys.executable, "-m", "wxreply", "serve"], env=_env(data_dir, free_port()),
            capture_output=True, text=True, timeout=30,
        )
        assert second.returncode == 1
        assert "is in use by another wxreply" in second.stderr
        assert str(first.pid) in second.stderr
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as resp:
            assert resp.status == 200  # the first one is unharmed
    finally:
        _stop(first)


def test_kill_9_leaves_no_embedded_server(tmp_path: Path) -> None:
    data_dir = tmp_path / "var"
    port = free_port()
    proc = _start(data_dir, port)
    _wait_healthy(port, proc)
    children = _children(proc.pid)
    proc.kill()
    proc.wait()
    deadline = time.monotonic() + 15
    while any(_alive(pid) for pid in children) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(_alive(pid) for pid in children)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"WXR_PORT": "70000"}, "wxreply: config error: WXR_PORT: must be an integer 1-65535"),
        ({"WXR_MP_AES_KEY": "tooshort"}, "wxreply: config error: WXR_MP_AES_KEY: must be 43"),
    ],
)
def test_bad_config_stops_with_one_line(tmp_path: Path, env: dict[str, str], message: str) -> None:
    full = _env(tmp_path, free_port())
    full.update(env)
    result = subprocess.run([sys.executable, "-m", "wxreply", "serve"], env=full,
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    assert result.stderr.startswith(message)
    assert result.stderr.count("\n") == 1
    assert not (tmp_path / "redis").exists()  # nothing started


def test_port_in_use_is_reported(tmp_path: Path) -> None:
    import socket

    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        result = subprocess.run([sys.executable, "-m", "wxreply", "serve"],
                                env=_env(tmp_path / "var", port),
                                capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert f"WXR_PORT: cannot listen on 127.0.0.1:{port}" in result.stderr


def test_external_urls_start_nothing_embedded(tmp_path: Path, servers) -> None:  # type: ignore[no-untyped-def]
    port = free_port()
    env = _env(tmp_path / "var", port)
    env.update({"WXR_MONGO_URL": servers.mongo_url, "WXR_REDIS_URL": servers.redis_url,
                "WXR_MONGO_DB": "ext_test"})
    proc = _start(tmp_path / "var", port, env)
    try:
        _wait_healthy(port, proc)
        assert _children(proc.pid) == set()
        assert not (tmp_path / "var" / "redis").exists()
        assert not (tmp_path / "var" / "mongo").exists()
    finally:
        _stop(proc)


def test_serve_refuses_an_itchat_without_the_unescape_fix(tmp_path: Path, servers) -> None:  # type: ignore[no-untyped-def]
    """Plain itchat 1.3.x on Python 3.9+: every message would be dropped silently.  A copy
    of the installed itchat with the fix taken out stands in for it."""
    import importlib.util
    import shutil

    spec = importlib.util.find_spec("itchat")
    assert spec is not None
    assert spec.origin is not None
    old = tmp_path / "old" / "itchat"
    shutil.copytree(Path(spec.origin).parent, old)
    utils = old / "utils.py"
    utils.write_text(utils.read_text().replace("htmlParser.unescape = html.unescape", ""))
    env = _env(tmp_path / "var", free_port())
    env.update({"PYTHONPATH": str(tmp_path / "old"), "WXR_MONGO_URL": servers.mongo_url,
                "WXR_REDIS_URL": servers.redis_url, "WXR_MONGO_DB": "old_itchat"})
    result = subprocess.run([sys.executable, "-m", "wxreply", "serve"], env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert "wxreply: the installed itchat cannot unescape messages" in result.stderr
    assert "install itchat-uos==1.4.1" in result.stderr
