"""Human-like pacing, so that WeChat does not take the account for a bot and ban it.

Per account (each owner has their own budget; the numbers are deployment settings):

* at most ``per_minute`` auto-replies in any 60 s;
* a random ``delay`` before each reply (people do not answer in 3 ms);
* per contact, one reply per rule per ``cooldown_s`` (a friend who sends "价格" five times
  gets one answer).  The cooldown is keyed on the rule *and what it sends*: once the
  owner edits a rule's reply, a friend who asks again within the cooldown gets the new
  answer (a changed reply is new information);
* a loop guard: after ``loop_replies`` auto-replies to one contact within
  ``loop_window_s`` the contact gets no more, and the owner is told once — two bots
  answering each other would otherwise talk forever;
* a takeover pause: when the owner writes in a chat by hand, auto-replies in that chat
  stop for ``takeover_s``.

Decisions use the injected clock; the counters live in Redis (``store.pacing``) so that a
session resumed on another worker keeps them.
"""

from __future__ import annotations

import dataclasses
import hashlib
import random
from collections.abc import Callable

from config import Settings
from config.clock import wall_clock
from store.pacing import PaceStore


@dataclasses.dataclass(frozen=True, slots=True)
class PacingRules:
    per_minute: int = 20
    delay_min_s: float = 0.5
    delay_max_s: float = 2.0
    cooldown_s: float = 60.0
    loop_replies: int = 5
    loop_window_s: float = 600.0
    takeover_s: float = 600.0

    @classmethod
    def from_settings(cls, settings: Settings) -> PacingRules:
        return cls(per_minute=settings.pace_per_minute,
                   delay_min_s=settings.pace_delay_min_ms / 1000,
                   delay_max_s=settings.pace_delay_max_ms / 1000,
                   cooldown_s=settings.pace_cooldown_s,
                   loop_replies=settings.loop_guard_replies,
                   loop_window_s=settings.loop_guard_window_s,
                   takeover_s=settings.takeover_pause_s)


@dataclasses.dataclass(frozen=True, slots=True)
class Verdict:
    allowed: bool
    reason: str = ""          # why not: paused, cooldown, loop_guard, rate
    tell_owner: bool = False  # the loop guard just tripped for this contact


ALLOW = Verdict(True)


class Pacer:
    def __init__(self, store: PaceStore, rules: PacingRules = PacingRules(), *,
                 now: Callable[[], float] = wall_clock,
                 uniform: Callable[[float, float], float] = random.uniform) -> None:
        self.store = store
        self.rules = rules
        self.now = now
        self.uniform = uniform

    async def check(self, uid: int, chat: str, rule_number: int, reply: str = "") -> Verdict:
        """May ``rule_number`` answer ``chat`` now with ``reply``?  Counts it if so."""
        rules, now = self.rules, self.now()
        paused_at = await self.store.marked_at("takeover", uid, chat)
        if paused_at is not None and now - paused_at < rules.takeover_s:
            return Verdict(False, "paused")
        if not await self.store.cooldown(uid, chat, _cooldown_key(rule_number, reply), now,
                                         rules.cooldown_s):
            return Verdict(False, "cooldown")
        # Attempts count even when refused: while the other side keeps firing, the guard
        # stays shut instead of reopening every few minutes.
        in_window = await self.store.add_to_window("loop", uid, chat, now, rules.loop_window_s)
        if in_window > rules.loop_replies:
            first = await self.store.once("loopnote", uid, chat, rules.loop_window_s)
            return Verdict(False, "loop_guard", tell_owner=first)
        if await self.store.add_to_window("rate", uid, "*", now, 60.0) > rules.per_minute:
            return Verdict(False, "rate")
        return ALLOW

    async def owner_wrote(self, uid: int, chat: str) -> None:
        """The owner typed in ``chat`` by hand: pause auto-replies there."""
        await self.store.mark("takeover", uid, chat, self.now(), self.rules.takeover_s)

    def delay(self) -> float:
        """Seconds to wait before sending a reply."""
        low, high = self.rules.delay_min_s, self.rules.delay_max_s
        return self.uniform(low, high) if high > 0 else 0.0


def _cooldown_key(rule_number: int, reply: str) -> str:
    """The cooldown's key part: the rule number and a short digest of its reply."""
    if not reply:
        return str(rule_number)
    digest = hashlib.blake2b(reply.encode(), digest_size=6).hexdigest()
    return f"{rule_number}:{digest}"
