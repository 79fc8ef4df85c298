"""The JSON API fixtures of tests/web_min, for the attack tests here."""

from tests.web_min.conftest import accounts, api_web, app_settings, client  # noqa: F401
