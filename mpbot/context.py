"""What a command gets besides its arguments."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Protocol

from config import Settings
from config.clock import wall_clock
from store import Stores, User
from store.bots import BotStatus, QrTicket


class BotControl(Protocol):
    """How commands reach the personal-account bot: through the Redis bus only
    (``store.bots.BotService`` implements it; mpbot never imports replybot)."""

    async def login(self, user: User) -> QrTicket: ...
    async def logout(self, user: User) -> bool: ...     # False if no session was running
    async def status(self, user: User) -> BotStatus: ...
    async def rules_changed(self, user: User) -> None: ...


@dataclasses.dataclass(slots=True)
class Ctx:
    openid: str
    stores: Stores
    settings: Settings
    bot: BotControl | None = None
    now: Callable[[], float] = wall_clock
    _user: User | None = None

    async def user(self) -> User:
        """This openid's user, created on first contact (every command needs one)."""
        if self._user is None:
            self._user, _ = await self.stores.users.get_or_create(self.openid)
        return self._user

    def remember(self, user: User) -> User:
        self._user = user
        return user
