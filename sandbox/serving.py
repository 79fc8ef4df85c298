"""Running a fake as a process of its own: print where it listens, serve until signalled."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Awaitable, Callable


async def serve_until_signalled(start: Callable[[], Awaitable[str]],
                                stop: Callable[[], Awaitable[None]], banner: str) -> None:
    """Start the fake, print ``banner=<base URL>`` (what a parent process waits for) and
    serve until SIGINT or SIGTERM, then stop it."""
    base = await start()
    print(f"{banner}={base}", flush=True)
    done = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, done.set)
    await done.wait()
    await stop()
