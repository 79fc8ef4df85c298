"""config.metrics' fixed label sets and config.logs' JSON lines."""

from __future__ import annotations

import io
import json
import logging

import pytest

from config import ConfigError, load_settings
from config.logs import JsonFormatter
from config.metrics import SESSION_STATES, Metrics
from store.bots import LoginState


def test_session_states_are_the_stored_states() -> None:
    assert set(SESSION_STATES) == {state.value for state in LoginState}


def test_sessions_gauge_sums_its_sources_and_ignores_unknown_states() -> None:
    metrics = Metrics()
    first = lambda: {"online": 2, "scanned": 1}  # noqa: E731
    metrics.sessions.add(first)
    metrics.sessions.add(lambda: {"online": 1, "no-such-state": 5})
    text = metrics.render().decode()
    assert 'wxreply_bot_sessions{state="online"} 3.0' in text
    assert 'wxreply_bot_sessions{state="scanned"} 1.0' in text
    assert 'wxreply_bot_sessions{state="closed"} 0.0' in text
    assert "no-such-state" not in text
    metrics.sessions.remove(first)
    assert 'wxreply_bot_sessions{state="online"} 1.0' in metrics.render().decode()


def test_json_lines_parse_with_their_fields() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("wxreply.test-json")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.warning("bot %s: 发送 \"失败\"\n第二行", 1001, extra={"uid": 1001})
        logger.info("notice", extra={"openid": "oyORnuP8q7ou2gfYjqLzSIWZf0rs",
                                     "request_id": "abc-123"})
        try:
            raise ValueError("boom")
        except ValueError:
            logger.exception("failed")
    finally:
        logger.removeHandler(handler)
    lines = stream.getvalue().splitlines()
    assert len(lines) == 3  # a newline in a message stays inside its JSON string
    records = [json.loads(line) for line in lines]
    for record in records:
        assert {"time", "level", "logger", "message"} <= set(record)
        assert record["logger"] == "wxreply.test-json"
    assert records[0]["message"] == "bot 1001: 发送 \"失败\"\n第二行"
    assert (records[0]["level"], records[0]["uid"]) == ("WARNING", 1001)
    assert records[1]["openid"] == "oyOR…f0rs"
    assert "oyORnuP8q7ou2gfYjqLzSIWZf0rs" not in lines[1]
    assert records[1]["request_id"] == "abc-123"
    assert "ValueError: boom" in records[2]["exc"]


def test_new_settings() -> None:
    assert load_settings({}).log_format == "text"
    assert load_settings({}).metrics_port == 0
    settings = load_settings({"WXR_LOG_FORMAT": "JSON", "WXR_METRICS_PORT": "9464"})
    assert (settings.log_format, settings.metrics_port) == ("json", 9464)
    with pytest.raises(ConfigError, match="WXR_LOG_FORMAT: must be one of text, json"):
        load_settings({"WXR_LOG_FORMAT": "xml"})
    with pytest.raises(ConfigError, match="WXR_METRICS_PORT"):
        load_settings({"WXR_METRICS_PORT": "70000"})
