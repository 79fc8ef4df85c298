"""The custom menu: ``wxreply menu`` installs the default one through MpApi, against the
fake official-account API (which checks WeChat's documented limits), and every key of it
runs the command it names."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from typing import Any

import pytest

from mpbot.commands import TABLE
from mpbot.mpapi import MpApi, MpApiError
from mpbot.parse import parse_command
from sandbox.mpapi import FakeMpApi
from tests.conftest import Servers
from wxreply.menu import DEFAULT_MENU, install


def _clicks(menu: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for button in menu["button"]:
        out.extend(button.get("sub_button") or [button])
    return out


def test_the_default_menu_is_the_four_commands_and_fits_wechat() -> None:
    names = [b["name"] for b in _clicks(DEFAULT_MENU)]
    assert sorted(names) == sorted(["帮助", "列表", "状态", "登录"])
    assert len(DEFAULT_MENU["button"]) <= 3
    for button in _clicks(DEFAULT_MENU):
        assert button["type"] == "click"
        # The key names the command the button is called after.
        assert parse_command(button["key"], TABLE).command.name == button["name"]


async def test_install_through_the_api(fake_mpapi: FakeMpApi, mpapi: MpApi) -> None:
    await install(mpapi)
    assert fake_mpapi.menu == DEFAULT_MENU
    assert fake_mpapi.calls_to("menu/create") == 1


@pytest.mark.parametrize(("menu", "errcode"), [
    ({"button": [{"type": "click", "name": f"b{i}", "key": f"k{i}"} for i in range(4)]}, 40016),
    ({"button": [{"name": "更多", "sub_button": [
        {"type": "click", "name": f"b{i}", "key": f"k{i}"} for i in range(6)]}]}, 40016),
    ({"button": [{"type": "click", "name": "六个汉字太长", "key": "k"}]}, 40018),
    ({"button": [{"type": "click", "name": "帮助", "key": "k" * 129}]}, 40019),
    ({"button": [{"type": "tap", "name": "帮助", "key": "help"}]}, 40017),
    ({"buttons": []}, 47001),
])
async def test_the_fake_refuses_what_wechat_refuses(fake_mpapi: FakeMpApi, mpapi: MpApi,
                                                    menu: dict[str, Any], errcode: int) -> None:
    with pytest.raises(MpApiError) as err:
        await mpapi.create_menu(menu)
    assert err.value.errcode == errcode
    assert fake_mpapi.menu is None


async def _wxreply(*args: str, env: dict[str, str]) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "wxreply.cli", *args, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(process.communicate(), 60)
    return process.returncode or 0, out.decode(), err.decode()


async def test_wxreply_menu_command(fake_mpapi: FakeMpApi, servers: Servers,
                                    namespace: str) -> None:
    base = {k: v for k, v in os.environ.items() if not k.startswith("WXR_")}
    env = {**base, "WXR_MONGO_URL": servers.mongo_url, "WXR_REDIS_URL": servers.redis_url,
           "WXR_MONGO_DB": namespace, "WXR_REDIS_PREFIX": f"{namespace}:",
           "WXR_MP_API_BASE": fake_mpapi.base_url, "WXR_LOG_LEVEL": "WARNING"}
    code, out, err = await _wxreply("menu", "--print", env=env)
    assert (code, json.loads(out)) == (0, DEFAULT_MENU)
    code, out, err = await _wxreply("menu", env=env)
    assert code == 2
    assert "WXR_MP_APPID" in err
    assert fake_mpapi.menu is None
    env.update(WXR_MP_APPID=fake_mpapi.appid, WXR_MP_SECRET=fake_mpapi.secret)
    code, out, err = await _wxreply("menu", env=env)
    assert code == 0, err
    assert out.startswith("menu installed")
    assert fake_mpapi.menu == DEFAULT_MENU
    assert fake_mpapi.secret not in out + err
    fake_mpapi.fail_next(40164, path="menu/create")
    code, out, err = await _wxreply("menu", env=env)
    assert code == 1
    assert "IP whitelist" in err
