"""Typed store errors: callers turn these into user messages, never into stack traces."""

from __future__ import annotations


class StoreError(Exception):
    """Base of every error the store raises on purpose."""


class StoreUnavailable(StoreError):
    """Redis or MongoDB could not be reached (or timed out).  The only connection error
    callers ever see: it is what becomes "服务繁忙，请稍后再试"."""

    def __init__(self, service: str, detail: str = "") -> None:
        super().__init__(f"{service} unavailable" + (f": {detail}" if detail else ""))
        self.service = service


class InvalidRule(StoreError):
    """A keyword or reply breaks a limit; ``str(err)`` says which and by how much."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


class DuplicateKeyword(StoreError):
    def __init__(self, keyword: str, number: int | None = None) -> None:
        super().__init__(f"duplicate keyword {keyword!r}")
        self.keyword = keyword
        self.number = number


class RuleLimitReached(StoreError):
    """``left``: how many rules the user could still add (0 when full; None if unknown),
    so that a batch that is too big can say how many would fit."""

    def __init__(self, limit: int, left: int | None = None) -> None:
        super().__init__(f"rule limit {limit} reached")
        self.limit = limit
        self.left = left


class RuleNotFound(StoreError):
    def __init__(self, number: int) -> None:
        super().__init__(f"no rule {number}")
        self.number = number


class UserNotFound(StoreError):
    pass


class UsernameTaken(StoreError):
    pass
