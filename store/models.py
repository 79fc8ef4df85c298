"""Domain objects.  Repositories return these, never raw Mongo documents."""

from __future__ import annotations

import dataclasses
import enum
import unicodedata
from datetime import datetime


class MatchMode(enum.StrEnum):
    EXACT = "exact"
    CONTAINS = "contains"


def normalize_keyword(text: str) -> str:
    """The form in which keywords are compared: NFKC (full-width ``ＡＢＣ１`` → ``ABC1``),
    case-folded, surrounding white space removed.  Used for per-user uniqueness in the
    store and by the matcher on incoming messages, so both agree on what "same" means."""
    return unicodedata.normalize("NFKC", text).casefold().strip()


@dataclasses.dataclass(frozen=True, slots=True)
class User:
    uid: int
    openid: str
    username: str | None = None
    password_hash: bytes | None = None
    nickname: str = ""
    wechat_name: str = ""
    email: str = ""
    autoreply: bool = True
    group_reply: bool = False
    subscribed: bool = True
    rule_count: int = 0
    created_at: datetime | None = None
    updated_at: datetime | None = None

    @property
    def has_account(self) -> bool:
        return self.username is not None


@dataclasses.dataclass(frozen=True, slots=True)
class Rule:
    uid: int
    number: int
    keyword: str
    reply: str
    mode: MatchMode = MatchMode.EXACT
    created_at: datetime | None = None
    updated_at: datetime | None = None

    @property
    def label(self) -> str:
        """The number as users see it: 01, 02, … 99, 100."""
        return f"{self.number:02d}"


@dataclasses.dataclass(frozen=True, slots=True)
class RuleLimits:
    keyword_max: int = 30
    reply_max: int = 600
    rules_max: int = 200
