"""A real ``wxreply serve`` in safe mode, driven as WeChat would, and ``wxreply chat``."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from mpbot.simulator import Simulator
from store.embedded import free_port
from tests.conftest import TEST_AES_KEY, TEST_APPID, TEST_TOKEN, Servers

OPENID = "o-serve-chat-0000000000000001"


class Served:
    def __init__(self, port: int, env: dict[str, str]) -> None:
        self.port = port
        self.env = env
        self.url = f"http://127.0.0.1:{port}/wechat"


@pytest.fixture
def served(tmp_path: Path, servers: Servers, namespace: str) -> Iterator[Served]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("WXR_")}
    env.update({
        "WXR_PORT": str(port), "WXR_DATA_DIR": str(tmp_path / "var"),
        "WXR_MONGO_URL": servers.mongo_url, "WXR_REDIS_URL": servers.redis_url,
        "WXR_MONGO_DB": namespace, "WXR_REDIS_PREFIX": f"{namespace}:",
        "WXR_MP_TOKEN": TEST_TOKEN, "WXR_MP_AES_KEY": TEST_AES_KEY, "WXR_MP_APPID": TEST_APPID,
        # DEBUG, to show that even then no openid or secret reaches the log.
        "WXR_LOG_LEVEL": "DEBUG",
    })
    with (tmp_path / "serve.out").open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "wxreply", "serve"], env=env,
                                stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, (tmp_path / "serve.out").read_text()
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1):
                    break
            except OSError:
                assert time.monotonic() < deadline, "serve did not start"
                time.sleep(0.1)
        yield Served(port, env)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    log = (tmp_path / "serve.out").read_text()
    assert OPENID not in log, "a full openid reached the log"
    assert TEST_AES_KEY not in log
    assert TEST_TOKEN not in log


async def test_every_command_answers_within_a_second(served: Served) -> None:
    sim = Simulator(served.url, TEST_TOKEN, TEST_AES_KEY, TEST_APPID)
    conversation = [
        ("帮助", "可用命令"), ("注册", "注册成功"), ("添加 苹果 梨子", "已添加 01"),
        ("添加 *价格 看菜单", "已添加 02"), ("列表", "你的规则（共 2 条）"),
        ("修改 01 樱桃", "已修改 01"), ("删除 02", "已删除 02"), ("关闭", "自动回复已关闭"),
        ("开启", "自动回复已开启"), ("状态", "用户编号"), ("验证码", "注册验证码"),
        ("重置密码", "你还没有 API 账号"), ("你好", "你好！我是微信回复助手"),
        ("随便说点什么", "没看懂"),
    ]
    for text, expected in conversation:
        delivery = await sim.send(text, OPENID)
        assert delivery.status == 200
        assert delivery.text.startswith(expected), (text, delivery.text)
        assert delivery.elapsed < 1.0, (text, delivery.elapsed)
    subscribe = await sim.post(sim.prepare(OPENID, event="subscribe"))
    assert subscribe.text.startswith("欢迎回来")


async def _wxreply_chat(served: Served, *args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "wxreply", "chat", *args, env=served.env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_wxreply_chat_cli(served: Served) -> None:
    code, out, _ = await _wxreply_chat(served, "--openid", OPENID, "添加", "苹果", "梨子")
    assert (code, out) == (0, "已添加 01：苹果 → 梨子\n")
    code, out, err = await _wxreply_chat(served, "--openid", OPENID, "--times", "4",
                                         "添加 香蕉 橘子")
    assert (code, out) == (0, "已添加 02：香蕉 → 橘子\n")
    assert "4/4 answered, replies identical" in err
    code, out, _ = await _wxreply_chat(served, "--openid", OPENID, "列表")
    assert out.count("\n0") == 2
    code, out, _ = await _wxreply_chat(served, "--openid", OPENID, "--event", "subscribe")
    assert out.startswith("欢迎回来")
    code, out, _ = await _wxreply_chat(served, "--openid", OPENID, "--voice", "列表。")
    assert out.count("\n0") == 2  # a spoken 列表 is 列表
    code, out, _ = await _wxreply_chat(served, "--openid", OPENID, "--event", "CLICK",
                                       "--key", "status")
    assert "用户编号：" in out
    code, out, _ = await _wxreply_chat(served, "--openid", OPENID, "--event", "SCAN",
                                       "--key", "42")
    assert out.startswith("欢迎回来！")
    code, _, err = await _wxreply_chat(served)
    assert code == 2
    assert "say something" in err
    code, _, err = await _wxreply_chat(served, "--url", "http://127.0.0.1:9/wechat", "帮助")
    assert code == 1
    assert "cannot reach" in err
