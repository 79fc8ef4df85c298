"""Settings: one frozen, typed object built once in ``main()`` and passed down."""

from config.settings import ConfigError, Settings, ensure_secret_key, load_settings

__all__ = ["ConfigError", "Settings", "ensure_secret_key", "load_settings"]
