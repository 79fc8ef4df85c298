"""No default secrets where the outside world can reach us.

On a loopback bind, ``make serve`` works with no configuration at all: the official
account's token defaults to ``wxreply-dev`` and the cookie key is generated.  Once
wxreply listens beyond loopback, or tells WeChat and users a public ``WXR_PUBLIC_URL``,
anyone who knows the default token (it is in the docs) or an example file's placeholder
could sign pushes as any openid, for instance send ``重置密码`` as a victim.  So there a
default, placeholder or short secret stops start-up, with one line naming the variable.
"""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

from config.settings import ConfigError, Settings

# A signature is sha1(sorted(token, timestamp, nonce)): anyone who saw one signed request
# can try tokens offline, so a public token must be long and random.
MIN_PUBLIC_TOKEN_CHARS = 16
MIN_SECRET_KEY_CHARS = 32
# What the example files and tutorials put in place of a real value.
PLACEHOLDER_MARKS = ("change-me", "changeme", "change_me", "example", "placeholder",
                     "set me", "set-me", "your-", "your_", "secret", "password",
                     "wxreply-dev", "token")
_LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost"})


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an address or a name) can only be reached from this machine.
    An empty host or ``0.0.0.0`` means every interface: not loopback."""
    host = host.strip().strip("[]").lower()
    if host in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.split("%")[0]).is_loopback
    except ValueError:
        return False


def exposure(settings: Settings) -> str | None:
    """Why this configuration faces the outside world, or None if it is loopback only."""
    if not is_loopback(settings.host):
        return f"WXR_HOST={settings.host or '(all interfaces)'} is not a loopback address"
    public_host = urlsplit(settings.public_url).hostname or ""
    if not is_loopback(public_host):
        return f"WXR_PUBLIC_URL={settings.public_url} is not a loopback address"
    return None


def _weak(value: str, min_chars: int) -> str | None:
    lowered = value.lower()
    if any(mark in lowered for mark in PLACEHOLDER_MARKS):
        return "is a default or placeholder value"
    if len(value) < min_chars:
        return f"is too short ({len(value)} characters, at least {min_chars})"
    if len(set(value)) < 6:
        return "is not random (too few distinct characters)"
    return None


def refuse_default_secrets(settings: Settings) -> None:
    """:class:`ConfigError` if a public configuration keeps a default or weak secret."""
    why = exposure(settings)
    if why is None:
        return
    checks = [("WXR_MP_TOKEN", settings.mp_token, MIN_PUBLIC_TOKEN_CHARS)]
    if settings.secret_key:  # unset: a random key is generated into WXR_DATA_DIR
        checks.append(("WXR_SECRET_KEY", settings.secret_key, MIN_SECRET_KEY_CHARS))
    if settings.mp_secret:
        checks.append(("WXR_MP_SECRET", settings.mp_secret, MIN_PUBLIC_TOKEN_CHARS))
    for name, value, min_chars in checks:
        problem = _weak(value, min_chars)
        if problem is not None:
            raise ConfigError(name, f"{problem}, and {why}: set a random value "
                              f"(python3 -c 'import secrets; print(secrets.token_hex(16))')")
