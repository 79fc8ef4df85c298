"""Web accounts: password hashing, sessions, CSRF tokens and login lockout.

Everything that needs state keeps it in Redis through :class:`store.kv.KV` (the web tier
keeps none), and every decision about time uses an injected clock, so that lockouts and
their expiry follow freezegun in tests although Redis itself expires keys in real time.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import hmac
import json
import math
import secrets
import unicodedata
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import bcrypt

from config.clock import wall_clock
from store.kv import KV

# -- passwords -----------------------------------------------------------------------

# bcrypt's cost: 2^12 rounds is about 0.25 s on a 2-core box: slow enough to make a
# stolen hash expensive to crack, fast enough for a login.
DEFAULT_BCRYPT_ROUNDS = 12
# Hashing blocks for that long, so it runs on threads of its own (pyca/bcrypt releases
# the GIL while hashing), never on the IOLoop nor in the loop's default executor, where
# it would queue ahead of everything else that uses it.
HASH_THREADS = 2
# At most this many hashes queued or running: with 2 threads at ~0.25 s each, the last
# one waits about a second.  Beyond it a login is answered 429 with Retry-After at once:
# a flood of logins (even right ones, to the flooder's own account) must not become an
# unbounded queue in front of everyone else's login.
MAX_PENDING_HASHES = 8
# ... and at most this many of them for one address group, so that one client never
# holds more than one of the HASH_THREADS: everyone else's login finds a free thread.
MAX_PENDING_HASHES_PER_ADDRESS = 1
HASHER_RETRY_AFTER_S = 1
PASSWORD_MIN_CHARS = 8
# bcrypt reads at most 72 bytes (pyca/bcrypt ≥ 5 refuses longer input rather than
# silently ignoring the rest): refuse them at registration so nobody believes that a
# long passphrase's tail protects them.
PASSWORD_MAX_BYTES = 72

USERNAME_MIN_CHARS = 3
USERNAME_MAX_CHARS = 32
USERNAME_EXTRA_CHARS = frozenset("_-.@")

_HASH_POOL = ThreadPoolExecutor(max_workers=HASH_THREADS, thread_name_prefix="wxr-bcrypt")


class HasherBusy(Exception):
    """Too many hashes are waiting; the caller answers 429 with Retry-After."""


class InvalidCredentialForm(ValueError):
    """A username or password that can never be valid; ``str(err)`` says why (code -4)."""


def normalize_username(raw: str) -> str:
    """The form a username is stored and looked up in: NFKC (full-width letters become
    ASCII), trimmed and case-folded, so ``Alice``, ``alice`` and ``ａｌｉｃｅ`` are one
    account.  Letters (including Chinese), digits and ``_-.@``; 3-32 characters."""
    name = unicodedata.normalize("NFKC", raw).strip().casefold()
    if not USERNAME_MIN_CHARS <= len(name) <= USERNAME_MAX_CHARS:
        raise InvalidCredentialForm(
            f"用户名要 {USERNAME_MIN_CHARS}-{USERNAME_MAX_CHARS} 个字符")
    if not all(ch.isalnum() or ch in USERNAME_EXTRA_CHARS for ch in name):
        raise InvalidCredentialForm("用户名只能包含字母、数字、汉字和 _ - . @")
    return name


def check_password_form(password: str) -> str:
    if len(password) < PASSWORD_MIN_CHARS:
        raise InvalidCredentialForm(f"密码至少 {PASSWORD_MIN_CHARS} 个字符")
    if len(password.encode("utf-8")) > PASSWORD_MAX_BYTES:
        raise InvalidCredentialForm(
            f"密码最多 {PASSWORD_MAX_BYTES} 字节（约 {PASSWORD_MAX_BYTES // 3} 个汉字）")
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in password):
        raise InvalidCredentialForm("密码不能包含控制字符")
    return password


def hash_rounds(password_hash: bytes) -> int:
    """The cost recorded in a bcrypt hash (``$2b$12$…`` → 12); 0 if unreadable."""
    parts = password_hash.split(b"$")
    return int(parts[2]) if len(parts) > 3 and parts[2].isdigit() else 0


class Passwords:
    """bcrypt off the IOLoop, on a bounded pool of its own."""

    def __init__(self, rounds: int = DEFAULT_BCRYPT_ROUNDS,
                 pool: ThreadPoolExecutor = _HASH_POOL) -> None:
        self.rounds = rounds
        self._pool = pool
        self._pending = 0
        self._pending_by: dict[str, int] = {}
        self._logins_by: dict[str, int] = {}
        # A real hash of today's cost to compare against when the username does not
        # exist (or has no password), so that such a login does the same work as a wrong
        # password and does not tell which usernames exist.  Made now, once (a lazy one
        # made the first unknown-user login pay for two hashes).
        self._dummy = bcrypt.hashpw(secrets.token_bytes(16), bcrypt.gensalt(rounds))

    async def _run(self, fn: Callable[[], object], who: str | None = None) -> object:
        if self._pending >= MAX_PENDING_HASHES or (
                who is not None
                and self._pending_by.get(who, 0) >= MAX_PENDING_HASHES_PER_ADDRESS):
            raise HasherBusy
        self._pending += 1
        if who is not None:
            self._pending_by[who] = self._pending_by.get(who, 0) + 1
        try:
            return await asyncio.get_running_loop().run_in_executor(self._pool, fn)
        finally:
            self._pending -= 1
            if who is not None:
                left = self._pending_by.pop(who) - 1
                if left:
                    self._pending_by[who] = left

    async def hash(self, password: str, who: str | None = None) -> bytes:
        secret = password.encode("utf-8")
        rounds = self.rounds
        result = await self._run(lambda: bcrypt.hashpw(secret, bcrypt.gensalt(rounds)), who)
        return result  # type: ignore[return-value]

    async def verify(self, password: str, password_hash: bytes | None,
                     who: str | None = None) -> bool:
        """True if ``password`` matches; a missing or corrupt hash costs the same time
        (a check against the dummy hash) and is False."""
        secret = password.encode("utf-8")
        stored = password_hash
        if stored is None or hash_rounds(stored) == 0 or len(secret) > PASSWORD_MAX_BYTES:
            # (bcrypt would refuse a longer password: no account has one)
            stored, secret = self._dummy, secret[:PASSWORD_MAX_BYTES]
        dummy = stored is self._dummy

        def check() -> bool:
            try:
                return bcrypt.checkpw(secret, stored)
            except ValueError:  # a corrupt stored hash: no password matches it
                return False

        matched = bool(await self._run(check, who))
        return matched and not dummy

    @contextlib.contextmanager
    def login_slot(self, who: str) -> Iterator[None]:
        """One login at a time per address group in this process: a second concurrent
        one is answered 429 (:class:`HasherBusy`) before it costs anything, not even a
        Redis round trip, so that a flood from one address cannot crowd the event loop
        in front of everyone else's login either."""
        if self._logins_by.get(who, 0) >= MAX_PENDING_HASHES_PER_ADDRESS:
            raise HasherBusy
        self._logins_by[who] = self._logins_by.get(who, 0) + 1
        try:
            yield
        finally:
            left = self._logins_by.pop(who) - 1
            if left:
                self._logins_by[who] = left

    def needs_rehash(self, password_hash: bytes) -> bool:
        """A hash made with a lower cost than today's is upgraded at the next login."""
        return hash_rounds(password_hash) < self.rounds


# -- lockout ---------------------------------------------------------------------------

# Password guessing.  A lock is per (username, address group): 5 failures there within
# 15 minutes lock that pair for 15 minutes, even for the right password (otherwise the
# lock would tell a guesser when they hit).  A lock for the username alone would let
# anyone lock its owner out at will; the owner, from another address, is not affected.
LOGIN_FAILURES_PER_USERNAME = 5
# Across every username, one address group gets this many failures (a password sprayer).
LOGIN_FAILURES_PER_IP = 20
LOGIN_WINDOW_S = 15 * 60
LOGIN_LOCKOUT_S = 15 * 60
# A username that collects this many failures from all addresses together is slowed,
# not locked: from then on (for the window) it gets one password check per
# LOGIN_SLOW_INTERVAL_S from the whole world; other attempts get 429 with Retry-After
# and no check.  A guesser with many addresses gets 1 try a second, the owner gets in
# after at most a short retry, and 重置密码 in the chat always works.
LOGIN_SOFT_FAILURES_PER_USERNAME = 20
LOGIN_SLOW_INTERVAL_S = 1
# Every login attempt (right or wrong) from one address group: a flood of successful
# logins to one's own account must not monopolize the hashing threads.
LOGIN_ATTEMPTS_PER_IP = 30
LOGIN_ATTEMPTS_WINDOW_S = 60
# One-time codes (6 digits) on /account/register and /account/reset.  A registration
# code is shown with the user id ("1001-483920") and only works for that user, so a
# guess must match both; a code is void after CODE_FAILURES_PER_TARGET wrong tries
# against its user; an address group gets CODE_FAILURES_PER_IP wrong codes per 15
# minutes; and all addresses together CODE_FAILURES_GLOBAL wrong registration codes.
CODE_FAILURES_PER_TARGET = 3
CODE_FAILURES_PER_IP = 10
CODE_FAILURES_GLOBAL = 300
CODE_WINDOW_S = 15 * 60
CODE_LOCKOUT_S = 15 * 60


def _digest(text: str) -> str:
    # Redis keys carry a digest, not the raw name or address: nothing user-typed in keys.
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]


@dataclasses.dataclass(frozen=True, slots=True)
class Limit:
    scope: str
    failures: int
    window_s: int
    lockout_s: int


# Subject: "<username> <address group>".
LOGIN_BY_USERNAME = Limit("login:user-ip", LOGIN_FAILURES_PER_USERNAME, LOGIN_WINDOW_S,
                          LOGIN_LOCKOUT_S)
LOGIN_BY_IP = Limit("login:ip", LOGIN_FAILURES_PER_IP, LOGIN_WINDOW_S, LOGIN_LOCKOUT_S)
# Subject: the username; its "lock" is the slow mode described above.
LOGIN_SOFT_BY_USERNAME = Limit("login:user", LOGIN_SOFT_FAILURES_PER_USERNAME,
                               LOGIN_WINDOW_S, LOGIN_WINDOW_S)
LOGIN_RATE_BY_IP = Limit("login:rate", LOGIN_ATTEMPTS_PER_IP, LOGIN_ATTEMPTS_WINDOW_S,
                         LOGIN_ATTEMPTS_WINDOW_S)
CODE_BY_IP = Limit("code:ip", CODE_FAILURES_PER_IP, CODE_WINDOW_S, CODE_LOCKOUT_S)
CODE_GLOBAL = Limit("code:all", CODE_FAILURES_GLOBAL, CODE_WINDOW_S, CODE_LOCKOUT_S)
# Subject: "<purpose> <uid>"; reaching it voids the code instead of locking.
CODE_BY_TARGET = Limit("code:target", CODE_FAILURES_PER_TARGET, CODE_WINDOW_S, 1)


class Lockout:
    """Failure counters and locks in Redis.

    Counting uses ``KV.hit`` (atomic INCR with expiry) on a key named after the current
    window of the injected clock; a lock stores the time it ends.  Both therefore follow
    the injected clock, not only Redis' own expiry (which stays as a clean-up).  A fixed
    window lets a guesser spread at most 2 × (limit − 1) tries over a window boundary
    before the lock, an acceptable bound for a simple, race-free counter.
    """

    def __init__(self, kv: KV, now: Callable[[], float] = wall_clock) -> None:
        self.kv = kv
        self.now = now

    def _lock_key(self, limit: Limit, subject: str) -> str:
        return f"web:lock:{limit.scope}:{_digest(subject)}"

    def _count_key(self, limit: Limit, subject: str, now: float) -> str:
        return f"web:fail:{limit.scope}:{_digest(subject)}:{int(now // limit.window_s)}"

    async def remaining(self, limit: Limit, subject: str) -> float:
        """Seconds until ``subject`` may try again; 0 when not locked."""
        raw = await self.kv.get(self._lock_key(limit, subject))
        if raw is None:
            return 0.0
        try:
            until = float(raw)
        except ValueError:
            return 0.0
        return max(0.0, until - self.now())

    async def failed(self, limit: Limit, subject: str) -> bool:
        """Count one failure; True if it locked ``subject``."""
        now = self.now()
        count = await self.kv.hit(self._count_key(limit, subject, now), limit.window_s * 1000)
        if count < limit.failures:
            return False
        await self.kv.put(self._lock_key(limit, subject), f"{now + limit.lockout_s:.3f}",
                          limit.lockout_s * 1000)
        return True

    async def take_turn(self, limit: Limit, subject: str, interval_s: float) -> float:
        """For a subject in slow mode: 0 if this caller may go now (and the next turn is
        ``interval_s`` away), else the seconds until the next turn."""
        if await self.kv.claim(f"web:turn:{limit.scope}:{_digest(subject)}",
                               int(interval_s * 1000)):
            return 0.0
        return interval_s

    async def clear(self, limit: Limit, subject: str) -> None:
        await self.kv.delete(self._count_key(limit, subject, self.now()))
        await self.kv.delete(self._lock_key(limit, subject))


def minutes(seconds: float) -> int:
    return max(1, math.ceil(seconds / 60))


# -- sessions and CSRF -----------------------------------------------------------------

SESSION_COOKIE = "wxr_session"
CSRF_COOKIE = "csrftoken"
CSRF_HEADERS = ("X-CSRF-Token", "X-CSRFToken")
SESSION_DAYS = 7
SESSION_TTL_MS = SESSION_DAYS * 24 * 3600 * 1000


@dataclasses.dataclass(frozen=True, slots=True)
class Session:
    token: str   # the cookie's value (before signing); only its digest is stored
    uid: int
    csrf: str


class Sessions:
    """Server-side sessions in Redis, so that logout and a password reset really end
    them (a self-contained signed cookie would stay valid until it expires).

    ``web:session:<digest of token>`` holds the uid, the CSRF token and the user's
    session epoch at login; a password reset bumps ``web:epoch:<uid>``, which ends
    every session of that user at once.
    """

    def __init__(self, kv: KV) -> None:
        self.kv = kv

    @staticmethod
    def _key(token: str) -> str:
        return f"web:session:{hashlib.sha256(token.encode()).hexdigest()}"

    @staticmethod
    def _epoch_key(uid: int) -> str:
        return f"web:epoch:{uid}"

    async def _epoch(self, uid: int) -> int:
        raw = await self.kv.get(self._epoch_key(uid))
        return int(raw) if raw else 0

    async def create(self, uid: int) -> Session:
        # A new token at every login: a token planted before login (session fixation)
        # is never promoted to a logged-in session.
        session = Session(secrets.token_urlsafe(32), uid, secrets.token_urlsafe(32))
        record = {"uid": uid, "csrf": session.csrf, "epoch": await self._epoch(uid)}
        await self.kv.put(self._key(session.token), json.dumps(record), SESSION_TTL_MS)
        return session

    async def load(self, token: str) -> Session | None:
        raw = await self.kv.get(self._key(token))
        if raw is None:
            return None
        record = json.loads(raw)
        if record.get("epoch", 0) != await self._epoch(record["uid"]):
            return None
        return Session(token, int(record["uid"]), str(record["csrf"]))

    async def end(self, token: str) -> None:
        await self.kv.delete(self._key(token))

    async def end_all(self, uid: int) -> None:
        await self.kv.bump(self._epoch_key(uid))


def csrf_matches(expected: str, given: str | None) -> bool:
    return given is not None and hmac.compare_digest(expected.encode(), given.encode())
