"""Persistence: the only package that imports pymongo or redis.  Async throughout."""

from store.errors import (
    DuplicateKeyword,
    InvalidRule,
    RuleLimitReached,
    RuleNotFound,
    StoreError,
    StoreUnavailable,
    UsernameTaken,
    UserNotFound,
)
from store.models import MatchMode, Rule, RuleLimits, User, normalize_keyword
from store.stores import Stores

__all__ = [
    "DuplicateKeyword",
    "InvalidRule",
    "MatchMode",
    "Rule",
    "RuleLimitReached",
    "RuleLimits",
    "RuleNotFound",
    "StoreError",
    "StoreUnavailable",
    "Stores",
    "User",
    "UserNotFound",
    "UsernameTaken",
    "normalize_keyword",
]
