"""Hole 2: the default official-account token in production.

The attack needs only the documented default token (``wxreply-dev``) or the example
file's placeholder: with it, anyone signs pushes as any openid.  So ``serve`` must refuse
to start beyond loopback with such a token; loopback keeps the zero-config defaults.
"""
# ruff: noqa: S104 - binding to all interfaces is what these tests try

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import pytest

from config import ConfigError, Settings
from config.exposure import is_loopback, refuse_default_secrets
from store.embedded import free_port

STRONG = "9f2c4e71b0d85a3e6c1f7a2b"  # a token as an operator would generate it


def _serve(tmp_path: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items() if not k.startswith("WXR_")}
    full.update({"WXR_DATA_DIR": str(tmp_path / "var"), "WXR_PORT": str(free_port()), **env})
    return subprocess.run([sys.executable, "-m", "wxreply", "serve", *args], env=full,
                          capture_output=True, text=True, timeout=60, check=False)


@pytest.mark.parametrize(("env", "args"), [
    ({"WXR_HOST": "0.0.0.0"}, ()),                                        # the default token
    ({}, ("--host", "0.0.0.0")),                                          # ... via the flag
    ({"WXR_PUBLIC_URL": "https://bot.example.com"}, ()),                  # behind nginx
    ({"WXR_HOST": "0.0.0.0", "WXR_MP_TOKEN": "change-me"}, ()),           # the example file
    ({"WXR_HOST": "::", "WXR_MP_TOKEN": "abc123"}, ()),                   # too short
])
def test_public_bind_with_a_default_token_refuses_to_start(
        tmp_path: Path, env: dict[str, str], args: tuple[str, ...]) -> None:
    result = _serve(tmp_path, env, *args)
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("wxreply: config error: WXR_MP_TOKEN: ")
    assert result.stderr.count("\n") == 1
    assert not (tmp_path / "var" / "redis").exists()  # nothing started, nothing listened


def test_public_bind_with_the_example_cookie_key_refuses(tmp_path: Path) -> None:
    result = _serve(tmp_path, {"WXR_HOST": "0.0.0.0", "WXR_MP_TOKEN": STRONG,
                               "WXR_SECRET_KEY": "change-me"})
    assert result.returncode == 2
    assert result.stderr.startswith("wxreply: config error: WXR_SECRET_KEY: "
                                    "is a default or placeholder value")


def test_rules() -> None:
    loopback = Settings()
    refuse_default_secrets(loopback)  # the newcomer's defaults stay usable
    refuse_default_secrets(dataclasses.replace(loopback, host="::1",
                                               public_url="http://localhost:8000"))
    public = dataclasses.replace(loopback, host="0.0.0.0", mp_token=STRONG)
    refuse_default_secrets(public)  # a strong token and a generated cookie key
    for field, value, name in [("mp_token", "wxreply-dev", "WXR_MP_TOKEN"),
                               ("mp_token", "aaaaaaaaaaaaaaaaaaaa", "WXR_MP_TOKEN"),
                               ("secret_key", "short-but-random-91", "WXR_SECRET_KEY"),
                               ("mp_secret", "change-me", "WXR_MP_SECRET")]:
        with pytest.raises(ConfigError) as err:
            refuse_default_secrets(dataclasses.replace(public, **{field: value}))
        assert err.value.name == name
        assert value not in str(err.value)  # the message never repeats the secret
    assert not is_loopback("")
    assert not is_loopback("0.0.0.0")
    assert not is_loopback("bot.example.com")
    assert is_loopback("127.0.0.2")
    assert is_loopback("[::1]")
