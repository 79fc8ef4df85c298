"""The repository is self-contained: no tracked file points at a design document outside it.

The decisions behind the code live in ``docs/`` (ARCHITECTURE, PERFORMANCE, RELIABILITY,
CONFIGURATION, OFFICIAL_ACCOUNT, BOT, API), in the project's own words.  A citation such
as "DESIGN §5" or a mention of DESIGN.md sends a reader to a file they do not have.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
THIS = Path(__file__).resolve().relative_to(ROOT).as_posix()

# "DESIGN §5", "DESIGN.md", "(DESIGN: data is kept)"; also a lower-case "design.md".
OUTSIDE_DESIGN = re.compile(r"\bDESIGN\b|(?i:\bdesign\.md\b)")


def _tracked_files() -> list[str]:
    out = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, check=True,
                         capture_output=True).stdout
    return [name for name in out.decode().split("\0") if name]


def offending_lines(name: str, text: str) -> list[str]:
    return [f"{name}:{no}: {line.strip()}" for no, line in enumerate(text.splitlines(), 1)
            if OUTSIDE_DESIGN.search(line)]


def test_the_pattern_finds_every_form_of_citation() -> None:
    # Without this, a broken pattern would make the test below pass on anything.
    text = ("ok line\nTargets (DESIGN §9).\nsee DESIGN.md\nkeeps rules (DESIGN: kept)\n"
            "read design.md\na design decision\nDESIGNER\n")
    assert [line.split(": ", 1)[1] for line in offending_lines("f", text)] == [
        "Targets (DESIGN §9).", "see DESIGN.md", "keeps rules (DESIGN: kept)", "read design.md"]


def test_no_tracked_file_cites_an_outside_design_document() -> None:
    names = _tracked_files()
    # The listing really is the repository (not an empty or foreign one).
    assert THIS in names
    assert "docs/ARCHITECTURE.md" in names
    assert len(names) > 100
    found: list[str] = []
    for name in names:
        path = ROOT / name
        if name == THIS or not path.is_file():  # this file; deleted but not yet committed
            continue
        text = path.read_bytes().decode("utf-8", errors="replace")
        found += offending_lines(name, text)
    assert not found, (
        "cite the docs/ section that holds the decision instead (e.g. docs/ARCHITECTURE.md, "
        "'Stores'), or state the reason inline:\n" + "\n".join(found))
