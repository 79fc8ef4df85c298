"""``wxreply menu``: install the official account's default custom menu.

The menu's keys are command names, so a tap runs the command exactly as typing it does
(see :meth:`mpbot.edge.Edge._menu`).  WeChat allows three top-level buttons, so the four
default commands are 列表 and 登录 on top and 帮助 / 状态 under 更多.  The call goes through
:class:`mpbot.mpapi.MpApi` (the shared access token in Redis), so it needs the stores of a
running ``wxreply serve`` (or WXR_MONGO_URL/WXR_REDIS_URL) and WXR_MP_APPID/WXR_MP_SECRET.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from config import Settings
from mpbot.mpapi import MpApi, MpApiError
from store import StoreError
from wxreply.serve import StartupError, prepare_stores, runtime_urls

# English aliases as keys: WeChat limits a key to 128 bytes and documents ASCII examples.
DEFAULT_MENU: dict[str, Any] = {"button": [
    {"type": "click", "name": "列表", "key": "list"},
    {"type": "click", "name": "登录", "key": "login"},
    {"name": "更多", "sub_button": [
        {"type": "click", "name": "帮助", "key": "help"},
        {"type": "click", "name": "状态", "key": "status"},
    ]},
]}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--print", action="store_true", dest="print_only",
                        help="print the menu's JSON and install nothing")


async def install(mpapi: MpApi, menu: dict[str, Any] = DEFAULT_MENU) -> None:
    await mpapi.create_menu(menu)


async def run(settings: Settings, args: argparse.Namespace) -> int:
    if args.print_only:
        print(json.dumps(DEFAULT_MENU, ensure_ascii=False, indent=2))
        return 0
    if not (settings.mp_appid and settings.mp_secret):
        print("wxreply menu: set WXR_MP_APPID and WXR_MP_SECRET (the official account's "
              "AppID and AppSecret) first", file=sys.stderr)
        return 2
    try:
        mongo_url, redis_url = runtime_urls(settings)
        stores = await prepare_stores(settings, mongo_url, redis_url)
    except StartupError as exc:
        print(f"wxreply menu: {exc}", file=sys.stderr)
        return 1
    try:
        mpapi = MpApi(settings.mp_api_base, settings.mp_appid, settings.mp_secret, stores.kv)
        await install(mpapi)
    except (MpApiError, StoreError) as exc:
        print(f"wxreply menu: {exc}", file=sys.stderr)
        return 1
    finally:
        await stores.close()
    print("menu installed: 列表 | 登录 | 更多 (帮助, 状态). WeChat shows it within about "
          "5 minutes (unfollow and follow again to see it at once).")
    return 0
