"""What a command gets besides its arguments."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Protocol

from config import Settings
from config.clock import wall_clock
from store import Stores, User
from store.bots import BotStatus, QrTicket
from store.cache import Stamp


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
    # The user's version stamp, read by the edge with its dedup claims (or None).
    stamp: Stamp | None = None
    _user: User | None = None

    async def user(self) -> User:
        """This openid's user, created on first contact (every command needs one).
        Read from MongoDB: its fields (switches, web account) change."""
        if self._user is None:
            self.remember((await self.stores.users.get_or_create(self.openid))[0])
        assert self._user is not None
        return self._user

    async def uid(self) -> int:
        """This openid's user id, for commands that need nothing else of the user: from
        the process's cache (the mapping never changes), else as :meth:`user`."""
        if self._user is not None:
            return self._user.uid
        uid = self.stores.uids.get(self.openid)
        if uid is None:
            uid = (await self.user()).uid
        return uid

    def remember(self, user: User) -> User:
        self._user = user
        self.stores.uids.put(user.openid, user.uid)
        return user
