"""``make demo``: the whole loop offline — wxreply with a fake web WeChat and a fake
official-account API, each in its own process on 127.0.0.1.

    python -m sandbox.demo [--port 8000] [--webwx-port 8101] [--mp-port 8102]
                           [--mp-kind service|subscription]

``--mp-kind subscription`` (``make demo MP_KIND=subscription``) makes the fake official
account a personal subscription account: every customer-service message answers 48001,
and the walk-through shows the notice arriving in the reply to the next message.

Prints a walk-through, then runs until Ctrl-C (or SIGTERM) and stops all three.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

DEMO_APPID = "wxdemo0123456789ab"
DEMO_SECRET = "demo-app-secret"


def _wait(url: str, proc: subprocess.Popen[bytes], what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"demo: {what} exited with code {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=1):  # noqa: S310 - our own loopback URL
                return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"demo: {what} did not answer at {url}")


def walkthrough(web: str, webwx: str, mp: str, kind: str = "service") -> str:
    chat = ".venv/bin/wxreply chat"
    if kind == "subscription":
        return f"""
wxreply demo is running — nothing here talks to the real WeChat.
The fake 公众号 is a personal subscription account (个人订阅号): it may not send
customer-service messages (every one answers 48001), so notices wait in your mailbox.

  wxreply            {web}            (health: {web}/healthz)
  fake web WeChat    {webwx}/_fake/   (your "phone": scan, confirm, friends' messages)
  fake 公众号 API     {mp}/_fake/stats (the 48001 answers)

Walk the loop in another terminal:

  1. {chat} 添加 你好 我在开会，稍后回复
  2. {chat} 登录                      → open the link it prints: the QR page
  3. on {webwx}/_fake/ press "scan" (type any nickname) and then "confirm"
                                      → the QR page says 已登录; no notice can be sent
  4. {chat} 列表                      → the reply starts with 【未读通知】 and the
                                        "已登录" notice, then your rules; once only
  5. {chat} 状态                      → state, latest event, when, the next step

Ctrl-C stops everything.
"""
    return f"""
wxreply demo is running — nothing here talks to the real WeChat.

  wxreply            {web}            (health: {web}/healthz)
  fake web WeChat    {webwx}/_fake/   (your "phone": scan, confirm, friends' messages)
  fake 公众号 API     {mp}/_fake/sent  (the notices wxreply sends you)

Walk the loop in another terminal:

  1. {chat} 添加 你好 我在开会，稍后回复
  2. {chat} 登录                      → open the link it prints: the QR page
  3. on {webwx}/_fake/ press "scan" (type any nickname) and then "confirm"
                                      → the QR page says 已登录; a notice appears at
                                        {mp}/_fake/sent
  4. on {webwx}/_fake/ send a friend message "你好"
                                      → the reply shows under "sent" on the same page
  5. {chat} 状态 / {chat} 关闭 / {chat} 退出
  6. today's web WeChat: press "WeChat closes it (1102)" on {webwx}/_fake/
                                      → the notice explains the closure; then
     {chat} 登录                      → held back by the login guard (why, until when)

Ctrl-C stops everything.
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sandbox.demo")
    parser.add_argument("--port", type=int, default=int(os.environ.get("WXR_PORT", "8000")))
    parser.add_argument("--webwx-port", type=int, default=8101)
    parser.add_argument("--mp-port", type=int, default=8102)
    parser.add_argument("--data-dir", default="var/demo")
    parser.add_argument("--mp-kind", choices=("service", "subscription"),
                        default="service",
                        help="subscription: a personal subscription account (48001)")
    args = parser.parse_args(argv)

    web = f"http://127.0.0.1:{args.port}"
    webwx = f"http://127.0.0.1:{args.webwx_port}"
    mp = f"http://127.0.0.1:{args.mp_port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("WXR_")}
    env.update({
        "WXR_PORT": str(args.port), "WXR_PUBLIC_URL": web, "WXR_DATA_DIR": args.data_dir,
        "WXR_WECHAT_LOGIN_BASE": webwx, "WXR_MP_API_BASE": f"{mp}/cgi-bin/",
        "WXR_MP_APPID": DEMO_APPID, "WXR_MP_SECRET": DEMO_SECRET,
    })
    Path(args.data_dir).mkdir(parents=True, exist_ok=True)
    log = Path(args.data_dir) / "demo.log"
    procs: list[subprocess.Popen[bytes]] = []
    stopping = False

    def stop(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        with log.open("ab") as out:
            procs.append(subprocess.Popen(
                [sys.executable, "-m", "sandbox.webwx", "--port", str(args.webwx_port),
                 "--hold-login", "5", "--hold-sync", "10"], stdout=out, stderr=out))
            procs.append(subprocess.Popen(
                [sys.executable, "-m", "sandbox.mpapi", "--port", str(args.mp_port),
                 "--appid", DEMO_APPID, "--secret", DEMO_SECRET, "--kind", args.mp_kind],
                stdout=out, stderr=out))
            _wait(f"{webwx}/_fake/logins", procs[0], "the fake web WeChat")
            _wait(f"{mp}/_fake/sent", procs[1], "the fake official-account API")
            procs.append(subprocess.Popen([sys.executable, "-m", "wxreply", "serve"], env=env,
                                          stdout=out, stderr=out))
            _wait(f"{web}/healthz", procs[2], "wxreply serve")
        print(walkthrough(web, webwx, mp, args.mp_kind), flush=True)
        print(f"(logs: {log})", flush=True)
        while not stopping and all(p.poll() is None for p in procs):
            time.sleep(0.2)
    finally:
        for proc in reversed(procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in reversed(procs):
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
    return 0


if __name__ == "__main__":
    sys.exit(main())
