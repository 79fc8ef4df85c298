"""``wxreply status``: workers, their sessions and load, and sessions by state."""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from config import Settings
from wxreply.serve import StartupError, prepare_stores, runtime_urls


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="machine-readable output")


def format_status(report: dict[str, Any], now: float) -> str:
    workers = report["workers"]
    lines = [f"workers: {len(workers)}"]
    for name, info in sorted(workers.items()):
        up = now - info.get("started_at", now)
        lines.append(
            f"  {name}  {info.get('host', '?')} pid {info.get('pid', '?')}  "
            f"sessions {info.get('sessions', 0)}/{info.get('capacity', '?')} "
            f"(online {info.get('online', 0)})  replied {info.get('replied', 0)}  "
            f"held {sum(v for k, v in info.items() if k.startswith('held_'))}  "
            f"send failures {info.get('send_failed', 0)}  up {up / 60:.0f} min")
    states = report["sessions"]
    lines.append("sessions: " + (", ".join(f"{k} {v}" for k, v in sorted(states.items()))
                                 or "none"))
    return "\n".join(lines)


async def run(settings: Settings, args: argparse.Namespace) -> int:
    try:
        mongo_url, redis_url = runtime_urls(settings)
    except StartupError as exc:
        print(f"wxreply status: {exc}", file=sys.stderr)
        return 1
    stores = await prepare_stores(settings, mongo_url, redis_url)
    try:
        report = {"workers": await stores.bus.workers(),
                  "sessions": await stores.bots.count_by_state()}
    finally:
        await stores.close()
    print(json.dumps(report, ensure_ascii=False, indent=2) if args.json
          else format_status(report, time.time()))
    return 0
