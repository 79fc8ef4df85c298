"""``make bench`` keeps working: the quick mode of all three benchmarks, run end to end.

Shape and agreement only: the figures of a quick run are too short to mean anything, and
this machine is shared, so nothing here asserts a timing or a target.
"""

from __future__ import annotations

from pathlib import Path

from bench.__main__ import BEGIN, END, render, run, write_doc


def test_quick_mode_runs_all_three_and_renders_one_table(tmp_path: Path) -> None:
    result = run(quick=True)
    results = result["results"]
    assert set(results) == {"official_account", "density", "matching"}

    oa = results["official_account"]
    assert oa["answers_ok"] is True  # every server answered what it should, signed
    assert oa["errors"] == 0
    for server in ("wxreply", "bare", "werobot", "werobot-nosession", "null"):
        assert oa["throughput"][server]["median"] > 0
    assert set(oa["targets"]) == {"of_bare", "over_werobot", "p99_at_300", "adds_per_s",
                                  "add_p99"}
    write = oa["write"]
    assert write["add"]["ok"] is True
    assert write["delete"]["ok"] is True
    assert write["add"]["kinds"]["reply"] > 0
    assert write["add"]["kinds"]["busy"] == write["add"]["kinds"]["error"] == 0
    assert write["left_after_delete"] == 0  # every rule added was deleted again
    assert write["round_trips_per_add"]["mongo"]["median"] > 0
    (rate,) = oa["latency"]
    assert oa["latency"][rate]["wxreply"]["p99_ms"]["n"] == 1

    dn = results["density"]
    rows = {row["driver"]: row for row in dn["worker"]}
    assert set(rows) == {"thread", "async"}  # both drivers, side by side
    for row in rows.values():
        assert row["online"] == row["sessions"]
        assert row["reply_answered"] == row["reply_messages"] > 0
        assert row["reply_exactly_once"] is True
        assert row["added_mb_per_session"] > 0
    assert rows["thread"]["threads"] >= rows["thread"]["sessions"]  # a thread per session
    assert dn["biggest"]["driver"] == dn["shipped_driver"]
    assert dn["baseline"]["reply_answered"] == dn["baseline"]["reply_messages"] > 0
    assert dn["answered_all"] is True
    for row in dn["resume"]:  # a restart on several workers: each session once, all online
        assert row["online_end"] == row["sessions"]
        assert row["resumed_twice"] == row["unowned"] == 0
        assert sum(row["leases_by_worker"].values()) == row["sessions"]

    assert results["matching"]["agree"] is True

    text = render(result)
    for heading in ("official account, saturation", "bot density", "matching"):
        assert heading in text
    doc = tmp_path / "PERFORMANCE.md"
    doc.write_text(f"# Performance\n\nby hand\n\n{BEGIN}\nold\n{END}\n\nafter\n")
    write_doc(text, doc)
    written = doc.read_text()
    assert "by hand" in written
    assert "after" in written
    assert "old" not in written
    assert text in written
