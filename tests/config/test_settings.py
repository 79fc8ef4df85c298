import dataclasses
import os
from pathlib import Path

import pytest

from config import ConfigError, Settings, ensure_secret_key, load_settings

SAMPLE_AES_KEY = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG"


def test_defaults_need_nothing() -> None:
    settings = load_settings({})
    assert settings == Settings()
    assert settings.embedded_mongo
    assert settings.embedded_redis
    assert not settings.safe_mode
    assert settings.port == 8000
    assert settings.public_url == "http://127.0.0.1:8000"


def test_settings_are_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        load_settings({}).port = 1  # type: ignore[misc]


def test_env_values_are_typed() -> None:
    s = load_settings({
        "WXR_PORT": "9001", "WXR_MONGO_URL": "mongodb://db:27017/?replicaSet=rs0",
        "WXR_REDIS_URL": "redis://cache:6379/2", "WXR_MP_AES_KEY": SAMPLE_AES_KEY,
        "WXR_MP_APPID": "wx2c2769f8efd9abc2", "WXR_DATA_DIR": "/srv/wxr",
        "WXR_PUBLIC_URL": "https://bot.example.com/", "WXR_MP_API_BASE": "http://127.0.0.1:9/cgi-bin",
    })
    assert s.port == 9001
    assert s.data_dir == Path("/srv/wxr")
    assert s.safe_mode
    assert s.public_url == "https://bot.example.com"
    assert s.mp_api_base == "http://127.0.0.1:9/cgi-bin/"
    assert not s.embedded_mongo
    assert not s.embedded_redis


def test_toml_file_under_env(tmp_path: Path) -> None:
    path = tmp_path / "wxr.toml"
    path.write_text('WXR_PORT = 9100\nWXR_MP_TOKEN = "fromfile"\n')
    s = load_settings({"WXR_CONFIG": str(path), "WXR_MP_TOKEN": "fromenv"})
    assert s.port == 9100
    assert s.mp_token == "fromenv"


def test_example_toml_loads() -> None:
    example = Path(__file__).parents[2] / "config" / "wxreply.example.toml"
    assert load_settings({"WXR_CONFIG": str(example)}).port == 8000


@pytest.mark.parametrize(
    ("env", "name", "fragment"),
    [
        ({"WXR_PORT": "70000"}, "WXR_PORT", "1-65535"),
        ({"WXR_PORT": "0"}, "WXR_PORT", "1-65535"),
        ({"WXR_PORT": "eighty"}, "WXR_PORT", "integer"),
        ({"WXR_MP_AES_KEY": "short"}, "WXR_MP_AES_KEY", "43 characters"),
        ({"WXR_MP_AES_KEY": "!" * 43, "WXR_MP_APPID": "wx1"}, "WXR_MP_AES_KEY", "base64"),
        ({"WXR_MP_AES_KEY": SAMPLE_AES_KEY}, "WXR_MP_APPID", "safe mode"),
        ({"WXR_MP_ACCOUNT_KIND": "订阅号"}, "WXR_MP_ACCOUNT_KIND", "must be one of auto"),
        ({"WXR_MP_ACCOUNT_KIND": "sandbox", "WXR_MP_AES_KEY": SAMPLE_AES_KEY,
          "WXR_MP_APPID": "wx1"}, "WXR_MP_AES_KEY", "sandbox account"),
        ({"WXR_MP_APPID": "not-an-appid"}, "WXR_MP_APPID", "wx0123"),
        ({"WXR_PUBLIC_URL": "bot.example.com"}, "WXR_PUBLIC_URL", "http://"),
        ({"WXR_PUBLIC_URL": "http://"}, "WXR_PUBLIC_URL", "no host"),
        ({"WXR_PUBLIC_URL": "http://host:99999"}, "WXR_PUBLIC_URL", "invalid port"),
        ({"WXR_MONGO_URL": "postgres://db"}, "WXR_MONGO_URL", "mongodb://"),
        ({"WXR_REDIS_URL": "http://cache"}, "WXR_REDIS_URL", "redis://"),
        ({"WXR_MP_API_BASE": "ftp://x"}, "WXR_MP_API_BASE", "http://"),
        ({"WXR_WECHAT_LOGIN_BASE": "login.weixin.qq.com"}, "WXR_WECHAT_LOGIN_BASE", "http://"),
        ({"WXR_MP_TOKEN": "a"}, "WXR_MP_TOKEN", "3-32"),
        ({"WXR_MP_TOKEN": "has space"}, "WXR_MP_TOKEN", "3-32"),
        ({"WXR_DATA_DIR": "  "}, "WXR_DATA_DIR", "empty"),
        ({"WXR_LOG_LEVEL": "LOUD"}, "WXR_LOG_LEVEL", "DEBUG"),
        ({"WXR_MONGO_DB": "a.b"}, "WXR_MONGO_DB", "database name"),
        ({"WXR_REDIS_PREFIX": "a b"}, "WXR_REDIS_PREFIX", "ASCII"),
        ({"WXR_RULES_MAX": "-1"}, "WXR_RULES_MAX", "integer"),
        ({"WXR_HOST": "127.0.0.1\n"}, "WXR_HOST", "control"),
        ({"WXR_PACE_DELAY_MIN_MS": "3000"}, "WXR_PACE_DELAY_MIN_MS", "must not exceed"),
        ({"WXR_WATCHDOG_S": "5"}, "WXR_WATCHDOG_S", "30-86400"),
        ({"WXR_LEASE_MS": "100"}, "WXR_LEASE_MS", "2000-600000"),
        ({"WXR_WORKER_ID": "a b"}, "WXR_WORKER_ID", "ASCII"),
        ({"WXR_TRUST_PROXY": "maybe"}, "WXR_TRUST_PROXY", "proxy addresses"),
    ],
)
def test_each_invalid_value_is_named(env: dict[str, str], name: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_settings(env)
    message = str(err.value)
    assert err.value.name == name
    assert message.startswith(f"{name}: ")
    assert fragment in message
    assert "\n" not in message


def test_toml_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="file not found"):
        load_settings({"WXR_CONFIG": str(tmp_path / "missing.toml")})
    bad = tmp_path / "bad.toml"
    bad.write_text("WXR_PORT = = 1")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings({"WXR_CONFIG": str(bad)})
    unknown = tmp_path / "unknown.toml"
    unknown.write_text("WXR_NOPE = 1")
    with pytest.raises(ConfigError, match="WXR_NOPE: unknown setting"):
        load_settings({"WXR_CONFIG": str(unknown)})
    nested = tmp_path / "nested.toml"
    nested.write_text("WXR_PORT = [1]")
    with pytest.raises(ConfigError, match="string or an integer"):
        load_settings({"WXR_CONFIG": str(nested)})
    invalid = tmp_path / "invalid.toml"
    invalid.write_text("WXR_PORT = 123456")
    with pytest.raises(ConfigError, match="WXR_PORT"):
        load_settings({"WXR_CONFIG": str(invalid)})


def test_redacted_hides_secrets() -> None:
    s = load_settings({"WXR_MP_SECRET": "s3cr3t", "WXR_MP_AES_KEY": SAMPLE_AES_KEY,
                       "WXR_MP_APPID": "wx2c2769f8efd9abc2",
                       "WXR_MONGO_URL": "mongodb://user:pw@db:27017/"})
    shown = repr(s.redacted())
    assert "s3cr3t" not in shown
    assert SAMPLE_AES_KEY not in shown
    assert "pw@" not in shown
    assert "wxreply-dev" not in shown  # the token signs pushes: a secret too
    assert "db:27017" in shown


def test_secret_key_generated_once(tmp_path: Path) -> None:
    s = load_settings({"WXR_DATA_DIR": str(tmp_path / "data")})
    first = ensure_secret_key(s)
    second = ensure_secret_key(s)
    assert len(first.secret_key) >= 40
    assert first.secret_key == second.secret_key
    assert os.stat(tmp_path / "data" / "secret_key").st_mode & 0o777 == 0o600
    given = ensure_secret_key(dataclasses.replace(s, secret_key="configured"))
    assert given.secret_key == "configured"


@pytest.mark.parametrize(("raw", "expected"), [
    ("1", ("127.0.0.0/8", "::1/128")), ("yes", ("127.0.0.0/8", "::1/128")), ("OFF", ()),
    ("0", ()), ("10.0.0.5, 10.1.0.0/16", ("10.0.0.5/32", "10.1.0.0/16")),
    ("fd00::1", ("fd00::1/128",))])
def test_trust_proxy(raw: str, expected: tuple[str, ...]) -> None:
    assert load_settings({"WXR_TRUST_PROXY": raw}).trust_proxy == expected


def test_proxy_headers_are_not_trusted_by_default() -> None:
    assert load_settings({}).trust_proxy == ()


@pytest.mark.parametrize("raw", ["auto", "subscription", "verified_subscription", "service",
                                 " Sandbox "])
def test_account_kinds(raw: str) -> None:
    assert load_settings({"WXR_MP_ACCOUNT_KIND": raw}).mp_account_kind == raw.strip().lower()
    assert Settings().mp_account_kind == "auto"


def test_public_url_follows_host_and_port() -> None:
    assert load_settings({"WXR_PORT": "18431"}).public_url == "http://127.0.0.1:18431"
    assert load_settings({"WXR_HOST": "0.0.0.0", "WXR_PORT": "9000"}).public_url == (  # noqa: S104 - a setting, not a bind
        "http://127.0.0.1:9000")
    assert load_settings({"WXR_HOST": "wx.local"}).public_url == "http://wx.local:8000"
    assert load_settings({"WXR_HOST": "::1"}).public_url == "http://[::1]:8000"
    # Set explicitly, it wins.
    assert load_settings({"WXR_PORT": "18431", "WXR_PUBLIC_URL": "https://bot.example.com"}
                         ).public_url == "https://bot.example.com"


def test_cli_host_and_port_overrides_move_a_derived_public_url() -> None:
    import argparse
    import os

    from wxreply.cli import _settings

    saved = {k: os.environ.pop(k) for k in list(os.environ) if k.startswith("WXR_")}
    try:
        os.environ["WXR_PORT"] = "18431"
        moved = _settings(argparse.Namespace(host=None, port=18500))
        assert (moved.port, moved.public_url) == (18500, "http://127.0.0.1:18500")
        os.environ["WXR_PUBLIC_URL"] = "https://bot.example.com"
        kept = _settings(argparse.Namespace(host=None, port=18500))
        assert kept.public_url == "https://bot.example.com"
    finally:
        for key in [k for k in os.environ if k.startswith("WXR_")]:
            del os.environ[key]
        os.environ.update(saved)
