"""Write docs/RELIABILITY.md from the figures the reliability tests recorded.

    python -m tests.reliability.report      (``make reliability`` runs it after the tests)
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).parents[2]
FIGURES = ROOT / "test-artifacts" / "reliability"
HYGIENE = ROOT / "test-artifacts" / "log-hygiene.json"
OUT = ROOT / "docs" / "RELIABILITY.md"

# (figure file, title, what the test does, the target it checks)
ROWS = [
    ("test_retry_storm", "Retry storm",
     "distinct pushes (safe mode), each delivered 4× at once, as WeChat's retries can be",
     "one effect per push; four identical replies"),
    ("test_kill_9_of_serve_loses_no_acknowledged_rule", "kill -9 of serve",
     "a client adds rules for a fixed time (`adding_s`), 10 at a time, at most 100 per "
     "user, redelivering unanswered pushes like WeChat; serve is killed with SIGKILL "
     "half-way and restarted; answers counted by kind",
     "0 acknowledged rules lost, none stored twice, every answer added or busy"),
    ("test_kill_9_of_the_embedded_mongodb_loses_no_acknowledged_rule",
     "kill -9 of the embedded MongoDB",
     "the same traffic; the MongoDB-wire server is killed with SIGKILL a third of the way "
     "in; serve's supervisor restarts it. An insert or counter move the kill cut off is "
     "tried once more (store/group.py); an insert that went in meets its own `_id` on the "
     "restarted server and counts as stored",
     "0 acknowledged rules lost, none twice, none said to exist that is not stored, no "
     "rule-limit or unknown answer; serve keeps running"),
    ("test_stores_down_mid_traffic", "Stores down mid-traffic",
     "a push every 50 ms; Redis stopped, restarted; then MongoDB stopped, restarted",
     "every push answered < 5 s (busy message), no 5xx, recovery < 10 s"),
    ("test_kill_9_of_a_worker_moves_its_sessions", "Worker loss",
     "3 `wxreply worker` processes, 30 logged-in sessions; the busiest worker is killed "
     "with SIGKILL; messages arrive before, during and after",
     "sessions online elsewhere < 30 s, no new scan, nothing answered twice or lost"),
    ("test_wechat_corpus", "Hostile pushes",
     "every body in tests/reliability/corpus/wechat (DTDs, entity bombs, duplicate and "
     "nested tags, truncated, non-UTF-8, control characters, operator payloads) plus a "
     "10 MB body, signed so they reach the parser", "0 crashes, 0 5xx, a 4xx or a reply each"),
    ("test_chat_corpus", "Hostile chat commands",
     "every message in corpus/chat (SQL-ish, script, operator keys, huge and negative "
     "numbers, RTL overrides, emoji, zero-width, format strings)",
     "a reply each (≤ 2048 bytes), 0 crashes"),
    ("test_api_corpus", "Hostile API requests",
     "every request in corpus/api: operator objects (`$ne`, `$gt`, `$regex`, `$where`), "
     "arrays, numbers and null where strings belong, SQL-ish and script payloads, huge, "
     "negative and non-numeric ids, 100 kB fields; one user attacking another's rules",
     "the documented code each (-4, -5 …), 0 crashes, 0 5xx, the other user's rule intact"),
    ("test_path_corpus", "Hostile paths",
     "path traversal and script in QR pids and image names", "4xx each, nothing reflected"),
    ("test_generated_bodies_over_http", "Generated bodies (hypothesis)",
     "XML-ish and random bodies drawn by hypothesis, posted signed",
     "0 crashes, 0 5xx"),
    ("test_any_text_in_any_mode_gets_a_valid_reply", "Any text, any mode (hypothesis)",
     "texts of any XML character, up to 5,000 characters, in plaintext, compatible and "
     "safe mode, through the edge",
     "a 200 and a valid reply (≤ 2048 bytes, well-formed, sealed where due) each"),
]


def _cell(value: Any) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{k}: {v}" for k, v in value.items())
    return str(value)


def _escape(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render(figures: dict[str, dict[str, Any]], hygiene: dict[str, Any] | None) -> str:
    lines = [
        "# Reliability",
        "",
        "Figures from `tests/reliability/`, `tests/e2e/test_failover.py` and "
        "`tests/web_min/test_api_corpus.py`, measured by the tests and recorded before "
        "their asserts. `make test` runs the short versions; `make reliability` runs the "
        "long ones and rewrites this page. A test that failed is shown as **FAILED** with "
        "its reason and what it measured; \"not run\" means no figures were recorded.",
        "",
    ]
    dated = [f for f in figures.values() if "date" in f]
    if dated:
        newest = max(dated, key=lambda f: f["date"])
        modes = sorted({f.get("mode", "?") for f in dated})
        lines += [f"Run: {newest['date']} on {newest['machine']}; mode: {', '.join(modes)}.", ""]
    lines += ["| test | what it did | target | figures |", "|---|---|---|---|"]
    skip = {"test", "date", "machine", "mode"}
    for name, title, what, target in ROWS:
        record = figures.get(name)
        if record is None:
            shown = "not run"
        elif "failed" in record:
            measured = "; ".join(f"{k} {_cell(v)}" for k, v in record.items()
                                 if k not in skip | {"failed"})
            shown = f"**FAILED**: {_escape(record['failed'])}" + (
                f" (measured before it failed: {measured})" if measured else "")
        else:
            shown = "; ".join(f"{k} {_cell(v)}" for k, v in record.items() if k not in skip)
        lines.append(f"| {title} | {what} | {target} | {shown} |")
    lines += ["", "## Logs", ""]
    if hygiene is not None:
        problems = hygiene.get("problems", [])
        lines.append(
            f"Every log line of the run above ({hygiene.get('log_lines_checked', 0)} lines from "
            "the test process, plus every subprocess log file) was searched for the secrets "
            "the tests use (token, AES key, AppSecret, cookie key, passwords, one-time codes) "
            f"and for full openids: **{len(problems)} found**. `make test` runs the same check "
            "over the whole suite; a find fails the run.")
    # The security section (attacks, what was sent, results from tests/security/) is
    # written by hand: kept as it is.
    lines += ["", SECURITY_HEADING + _kept_security_section()]
    return "\n".join(lines)


SECURITY_HEADING = "## Security\n"


def _kept_security_section() -> str:
    try:
        text = OUT.read_text()
    except FileNotFoundError:
        return "\nSee tests/security/.\n"
    _, found, tail = text.partition("\n" + SECURITY_HEADING)
    return tail if found else "\nSee tests/security/.\n"


def main() -> int:
    figures = {p.stem: json.loads(p.read_text()) for p in sorted(FIGURES.glob("*.json"))}
    hygiene = json.loads(HYGIENE.read_text()) if HYGIENE.exists() else None
    OUT.write_text(render(figures, hygiene))
    print(f"wrote {OUT.relative_to(ROOT)} from {len(figures)} figure files")
    return 0


if __name__ == "__main__":
    sys.exit(main())
