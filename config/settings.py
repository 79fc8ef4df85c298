"""Typed, frozen settings built once from env vars over an optional TOML file.

Every setting has one name, ``WXR_…``, used both as the env var and as the key in a
TOML file named by ``WXR_CONFIG``; the env var wins.  Nothing here is executed as
Python.  A bad value raises :class:`ConfigError` whose message is one line naming the
variable and what is wrong, so ``wxreply`` can stop with exactly that line.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import ipaddress
import os
import secrets
import tomllib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit


class ConfigError(ValueError):
    """A setting is invalid; ``str(err)`` is the one line shown to the operator."""

    def __init__(self, name: str, problem: str) -> None:
        super().__init__(f"{name}: {problem}")
        self.name = name


@dataclasses.dataclass(frozen=True, slots=True)
class Settings:
    host: str = "127.0.0.1"
    port: int = 8000
    public_url: str = "http://127.0.0.1:8000"
    data_dir: Path = Path("var")
    mongo_url: str | None = None
    redis_url: str | None = None
    mongo_db: str = "wxreply"
    redis_prefix: str = "wxr:"
    mp_token: str = "wxreply-dev"  # noqa: S105 - the dev default (docs/CONFIGURATION.md)
    mp_appid: str = ""
    mp_secret: str = ""
    mp_aes_key: str = ""
    mp_api_base: str = "https://api.weixin.qq.com/cgi-bin/"
    # What the official account may do (docs/OFFICIAL_ACCOUNT.md): "auto" finds out
    # from WeChat's answers; "subscription" never tries customer-service messages.
    mp_account_kind: str = "auto"
    wechat_login_base: str = "https://login.weixin.qq.com"
    # The UOS ``extspam`` login header; empty: itchat-uos's own (docs/BOT.md).
    wechat_uos_extspam: str = ""
    # How a worker runs its bot sessions: "thread" (one thread each, itchat's receiving
    # loop) or "async" (coroutines on the worker's event loop; docs/ARCHITECTURE.md).
    bot_driver: str = "async"
    secret_key: str = ""
    # Rule limits (docs/ARCHITECTURE.md, 'Rule numbers and limits'), enforced in store.rules
    # and nowhere else.
    keyword_max: int = 30
    reply_max: int = 600
    rules_max: int = 200
    # Bot-worker capacity (sessions per worker process) and identity on the bus.
    worker_capacity: int = 500
    worker_id: str = ""
    # How long a login QR (and its pid) stays valid.
    qr_ttl: int = 240
    # Pacing, per account (replybot.pacing).
    pace_per_minute: int = 20
    pace_delay_min_ms: int = 500
    pace_delay_max_ms: int = 2000
    pace_cooldown_s: int = 60
    loop_guard_replies: int = 5
    loop_guard_window_s: int = 600
    takeover_pause_s: int = 600
    # Session health: recycle a session with no successful sync for this long; tell the
    # owner after this many failed sends in a row.
    watchdog_s: int = 180
    send_failure_alert: int = 3
    # The login guard: after WeChat closed a web session (1102) or refused two logins in
    # a row, 登录 is held back this long (docs/BOT.md).
    login_guard_s: int = 7200
    # Session ownership lease; a dead worker's sessions move after at most this long.
    lease_ms: int = 10_000
    # Saved sessions a worker resumes per second at most (after a restart, a failover, a
    # hand-over): 20 resumes 5,000 sessions in 250 s (docs/ARCHITECTURE.md, 'Scale-out
    # and failover').
    resume_rate: int = 20
    # Proxies (addresses or networks) whose X-Real-IP / X-Forwarded-For name the client.
    # None by default: a client that reaches wxreply directly could otherwise pick its
    # own address with a header and dodge every per-address limit.
    trust_proxy: tuple[str, ...] = ()
    # Bearer token that unlocks /healthz's detail for callers beyond loopback.
    health_token: str = ""
    log_level: str = "INFO"
    # "text" (one readable line per record) or "json" (one JSON object per line, for
    # log shippers).
    log_format: str = "text"
    # The port of a `wxreply worker`'s own /metrics; 0: none.  (The web process serves
    # /metrics on WXR_PORT.)
    metrics_port: int = 0

    @property
    def safe_mode(self) -> bool:
        return bool(self.mp_aes_key)

    @property
    def embedded_mongo(self) -> bool:
        return self.mongo_url is None

    @property
    def embedded_redis(self) -> bool:
        return self.redis_url is None

    def redacted(self) -> dict[str, Any]:
        """The settings as a dict fit for a log line: secrets replaced by ``***``."""
        out: dict[str, Any] = {}
        for spec in _SPECS:
            value = getattr(self, spec.field)
            if spec.secret and value:
                value = "***"
            elif spec.field in {"mongo_url", "redis_url"} and value:
                value = _strip_userinfo(value)
            out[spec.env] = str(value) if isinstance(value, Path) else value
        return out


@dataclasses.dataclass(frozen=True, slots=True)
class _Spec:
    env: str
    field: str
    parse: Callable[[str, str], Any]
    secret: bool = False


def _text(name: str, raw: str) -> str:
    if any(ord(ch) < 32 for ch in raw):
        raise ConfigError(name, "must not contain control characters")
    return raw


def _optional_text(name: str, raw: str) -> str | None:
    return _text(name, raw) or None


def _int_between(low: int, high: int) -> Callable[[str, str], int]:
    def parse(name: str, raw: str) -> int:
        try:
            value = int(raw.strip())
        except ValueError:
            raise ConfigError(name, f"must be an integer {low}-{high}, got {raw!r}") from None
        if not low <= value <= high:
            raise ConfigError(name, f"must be an integer {low}-{high}, got {value}")
        return value

    return parse


def _url(*schemes: str, optional: bool = False) -> Callable[[str, str], str | None]:
    def parse(name: str, raw: str) -> str | None:
        raw = raw.strip()
        if not raw and optional:
            return None
        parts = urlsplit(raw)
        if parts.scheme not in schemes:
            wanted = ", ".join(f"{s}://" for s in schemes)
            raise ConfigError(name, f"must be a URL starting with {wanted}, got {raw!r}")
        if not parts.hostname and parts.scheme != "unix":
            raise ConfigError(name, f"has no host: {raw!r}")
        try:
            parts.port  # noqa: B018 - raises ValueError on a bad port
        except ValueError:
            raise ConfigError(name, f"has an invalid port: {raw!r}") from None
        if any(ch.isspace() for ch in raw):
            raise ConfigError(name, f"must not contain spaces: {raw!r}")
        return raw

    return parse


def _aes_key(name: str, raw: str) -> str:
    raw = raw.strip()
    if not raw:
        return ""
    # An EncodingAESKey is 43 characters of base64 that decode (with the missing "=")
    # to a 32-byte AES key; anything else would make every safe-mode push fail.
    if len(raw) != 43:
        raise ConfigError(name, f"must be 43 characters of base64, got {len(raw)} characters")
    try:
        key = base64.b64decode(raw + "=", validate=True)
    except (binascii.Error, ValueError):
        raise ConfigError(name, "must be 43 characters of base64 (A-Z a-z 0-9 + /)") from None
    if len(key) != 32:
        raise ConfigError(name, "must decode to a 32-byte key")
    return raw


def _appid(name: str, raw: str) -> str:
    raw = raw.strip()
    if raw and not (raw.startswith("wx") and raw.isalnum() and len(raw) <= 32):
        raise ConfigError(name, f"must look like wx0123456789abcdef, got {raw!r}")
    return raw


def _token(name: str, raw: str) -> str:
    # WeChat's own form accepts 3-32 letters and digits for the server token.
    allowed = all(ch.isascii() and (ch.isalnum() or ch in "-_") for ch in raw)
    if not (3 <= len(raw) <= 32 and allowed):
        raise ConfigError(name, "must be 3-32 ASCII letters, digits, '-' or '_'")
    return raw


def _path(name: str, raw: str) -> Path:
    if not raw.strip():
        raise ConfigError(name, "must not be empty")
    return Path(raw.strip())


def _prefix(name: str, raw: str) -> str:
    if not raw or not all(ch.isascii() and (ch.isalnum() or ch in ":_-.") for ch in raw):
        raise ConfigError(name, "must be ASCII letters, digits or ':_-.'")
    return raw


def _db_name(name: str, raw: str) -> str:
    if not raw or len(raw) > 63 or any(ch in raw for ch in '/\\. "$\0'):
        raise ConfigError(name, "must be a MongoDB database name (no / \\ . space \" $)")
    return raw


def _flag(name: str, raw: str) -> bool:
    value = raw.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ConfigError(name, f"must be 1/0, true/false, yes/no or on/off, got {raw!r}")


# WXR_TRUST_PROXY=1 (the old flag): nginx on this host.
LOOPBACK_PROXIES = ("127.0.0.0/8", "::1/128")


def _proxies(name: str, raw: str) -> tuple[str, ...]:
    value = raw.strip().lower()
    if value in ("", "0", "false", "no", "off"):
        return ()
    if value in ("1", "true", "yes", "on"):
        return LOOPBACK_PROXIES
    networks = []
    for item in value.replace(" ", ",").split(","):
        if not item:
            continue
        try:
            networks.append(str(ipaddress.ip_network(item, strict=False)))
        except ValueError:
            raise ConfigError(name, "must be 0, 1 (a proxy on this host) or proxy addresses "
                              f"/ networks separated by commas, got {item!r}") from None
    return tuple(networks)


def _worker_id(name: str, raw: str) -> str:
    if raw and not (len(raw) <= 64 and all(ch.isascii() and (ch.isalnum() or ch in "-_.")
                                           for ch in raw)):
        raise ConfigError(name, "must be up to 64 ASCII letters, digits or '-_.'")
    return raw


def _log_level(name: str, raw: str) -> str:
    level = raw.strip().upper()
    if level not in {"DEBUG", "INFO", "WARNING", "ERROR"}:
        raise ConfigError(name, f"must be DEBUG, INFO, WARNING or ERROR, got {raw!r}")
    return level


def _one_of(choices: tuple[str, ...]) -> Callable[[str, str], str]:
    """A parser for a setting that takes one of ``choices`` (case and spaces ignored)."""
    def parse(name: str, raw: str) -> str:
        value = raw.strip().lower()
        if value not in choices:
            raise ConfigError(name, f"must be one of {', '.join(choices)}, got {raw!r}")
        return value
    return parse


LOG_FORMATS = ("text", "json")
ACCOUNT_KINDS = ("auto", "subscription", "verified_subscription", "service", "sandbox")
BOT_DRIVERS = ("thread", "async")


def _http_url(name: str, raw: str) -> str:
    value = _url("http", "https")(name, raw)
    assert value is not None
    return value.rstrip("/")


def _api_base(name: str, raw: str) -> str:
    value = _url("http", "https")(name, raw)
    assert value is not None
    return value if value.endswith("/") else value + "/"


_SPECS: tuple[_Spec, ...] = (
    _Spec("WXR_HOST", "host", _text),
    _Spec("WXR_PORT", "port", _int_between(1, 65535)),
    _Spec("WXR_PUBLIC_URL", "public_url", _http_url),
    _Spec("WXR_DATA_DIR", "data_dir", _path),
    _Spec("WXR_MONGO_URL", "mongo_url", _url("mongodb", "mongodb+srv", optional=True)),
    _Spec("WXR_REDIS_URL", "redis_url", _url("redis", "rediss", "unix", optional=True)),
    _Spec("WXR_MONGO_DB", "mongo_db", _db_name),
    _Spec("WXR_REDIS_PREFIX", "redis_prefix", _prefix),
    _Spec("WXR_MP_TOKEN", "mp_token", _token, secret=True),
    _Spec("WXR_MP_APPID", "mp_appid", _appid),
    _Spec("WXR_MP_SECRET", "mp_secret", _text, secret=True),
    _Spec("WXR_MP_AES_KEY", "mp_aes_key", _aes_key, secret=True),
    _Spec("WXR_MP_API_BASE", "mp_api_base", _api_base),
    _Spec("WXR_MP_ACCOUNT_KIND", "mp_account_kind", _one_of(ACCOUNT_KINDS)),
    _Spec("WXR_WECHAT_LOGIN_BASE", "wechat_login_base", _http_url),
    _Spec("WXR_WECHAT_UOS_EXTSPAM", "wechat_uos_extspam", _text),
    _Spec("WXR_BOT_DRIVER", "bot_driver", _one_of(BOT_DRIVERS)),
    _Spec("WXR_SECRET_KEY", "secret_key", _text, secret=True),
    _Spec("WXR_KEYWORD_MAX", "keyword_max", _int_between(1, 200)),
    _Spec("WXR_REPLY_MAX", "reply_max", _int_between(1, 600)),
    _Spec("WXR_RULES_MAX", "rules_max", _int_between(1, 100_000)),
    _Spec("WXR_WORKER_CAPACITY", "worker_capacity", _int_between(1, 100_000)),
    _Spec("WXR_WORKER_ID", "worker_id", _worker_id),
    _Spec("WXR_QR_TTL", "qr_ttl", _int_between(10, 3600)),
    _Spec("WXR_PACE_PER_MINUTE", "pace_per_minute", _int_between(1, 1000)),
    _Spec("WXR_PACE_DELAY_MIN_MS", "pace_delay_min_ms", _int_between(0, 60_000)),
    _Spec("WXR_PACE_DELAY_MAX_MS", "pace_delay_max_ms", _int_between(0, 60_000)),
    _Spec("WXR_PACE_COOLDOWN_S", "pace_cooldown_s", _int_between(0, 86_400)),
    _Spec("WXR_LOOP_GUARD_REPLIES", "loop_guard_replies", _int_between(1, 1000)),
    _Spec("WXR_LOOP_GUARD_WINDOW_S", "loop_guard_window_s", _int_between(1, 86_400)),
    _Spec("WXR_TAKEOVER_PAUSE_S", "takeover_pause_s", _int_between(0, 86_400)),
    _Spec("WXR_WATCHDOG_S", "watchdog_s", _int_between(30, 86_400)),
    _Spec("WXR_SEND_FAILURE_ALERT", "send_failure_alert", _int_between(1, 1000)),
    _Spec("WXR_LOGIN_GUARD_S", "login_guard_s", _int_between(0, 7 * 86_400)),
    _Spec("WXR_LEASE_MS", "lease_ms", _int_between(2000, 600_000)),
    _Spec("WXR_RESUME_RATE", "resume_rate", _int_between(1, 1000)),
    _Spec("WXR_TRUST_PROXY", "trust_proxy", _proxies),
    _Spec("WXR_HEALTH_TOKEN", "health_token", _text, secret=True),
    _Spec("WXR_LOG_LEVEL", "log_level", _log_level),
    _Spec("WXR_LOG_FORMAT", "log_format", _one_of(LOG_FORMATS)),
    _Spec("WXR_METRICS_PORT", "metrics_port", _int_between(0, 65535)),
)
ENV_NAMES: frozenset[str] = frozenset(spec.env for spec in _SPECS)


def _strip_userinfo(url: str) -> str:
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.netloc.rpartition("@")[2]
    return parts._replace(netloc=f"***@{host}").geturl()


def _read_toml(path_text: str) -> dict[str, str]:
    path = Path(path_text)
    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError("WXR_CONFIG", f"file not found: {path}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError("WXR_CONFIG", f"{path} is not valid TOML: {exc}") from None
    except OSError as exc:
        raise ConfigError("WXR_CONFIG", f"cannot read {path}: {exc.strerror}") from None
    values: dict[str, str] = {}
    for key, value in data.items():
        if key not in ENV_NAMES:
            raise ConfigError(key, f"unknown setting in {path}")
        if isinstance(value, bool) or not isinstance(value, str | int):
            raise ConfigError(key, f"must be a string or an integer in {path}")
        values[key] = str(value)
    return values


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Build :class:`Settings` from ``environ`` (default ``os.environ``) over ``WXR_CONFIG``."""
    env = os.environ if environ is None else environ
    raw: dict[str, str] = {}
    if env.get("WXR_CONFIG"):
        raw.update(_read_toml(env["WXR_CONFIG"]))
    raw.update({k: v for k, v in env.items() if k in ENV_NAMES})
    values = {spec.field: spec.parse(spec.env, raw[spec.env]) for spec in _SPECS if spec.env in raw}
    if "public_url" not in values:
        # QR links point at where this server really listens (WXR_PORT=18431 alone must
        # not give links on 8000).
        defaults = Settings()
        values["public_url"] = default_public_url(values.get("host", defaults.host),
                                                  values.get("port", defaults.port))
    settings = Settings(**values)
    if settings.pace_delay_min_ms > settings.pace_delay_max_ms:
        raise ConfigError("WXR_PACE_DELAY_MIN_MS", "must not exceed WXR_PACE_DELAY_MAX_MS")
    if settings.safe_mode and not settings.mp_appid:
        raise ConfigError("WXR_MP_APPID", "must be set when WXR_MP_AES_KEY is (safe mode needs it)")
    if settings.safe_mode and settings.mp_account_kind == "sandbox":
        raise ConfigError("WXR_MP_AES_KEY", "must stay empty for a sandbox account (测试号): "
                          "its settings page has only URL and Token, so it pushes plaintext")
    return settings


def default_public_url(host: str, port: int) -> str:
    """``WXR_PUBLIC_URL`` when it is not set: ``http://<host>:<port>``; a wildcard
    address (listen on every interface) becomes 127.0.0.1, the one address sure to work
    on the server itself."""
    host = host.strip() or "127.0.0.1"
    if host in ("0.0.0.0", "::", "[::]"):  # noqa: S104 - recognising it, not binding it
        host = "127.0.0.1"
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"  # an IPv6 address in a URL
    return f"http://{host}:{port}"


def ensure_secret_key(settings: Settings, now: Callable[[], float] | None = None) -> Settings:
    """Return settings with a cookie-signing key: the configured one, or one generated
    once into ``WXR_DATA_DIR/secret_key`` (mode 0600) and reused on every start."""
    if settings.secret_key:
        return settings
    path = settings.data_dir / "secret_key"
    try:
        key = path.read_text().strip()
    except FileNotFoundError:
        key = ""
    if not key:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        key = secrets.token_urlsafe(48)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(key + "\n")
    return dataclasses.replace(settings, secret_key=key)
