"""docs/RELIABILITY.md says FAILED and why for a test that failed, never "not run"."""

from __future__ import annotations

from tests.reliability.report import render


def _row(page: str, title: str) -> str:
    [row] = [line for line in page.splitlines() if line.startswith(f"| {title} |")]
    return row


def test_a_failed_test_is_shown_as_failed_with_its_reason() -> None:
    figures = {
        "test_retry_storm": {"test": "t", "mode": "long", "date": "2026-12-03", "machine": "m",
                             "failed": "assert 1999 == 2000 | effects", "pushes": 2000},
        "test_stores_down_mid_traffic": {"test": "t", "mode": "long", "date": "2026-12-03",
                                         "machine": "m", "pushes": 1207},
    }
    page = render(figures, None)
    failed = _row(page, "Retry storm")
    assert "**FAILED**: assert 1999 == 2000 \\| effects" in failed
    assert "pushes 2000" in failed
    assert "not run" not in failed
    assert _row(page, "Stores down mid-traffic").endswith("| pushes 1207 |")
    assert _row(page, "kill -9 of serve").endswith("| not run |")
