"""The speed figures of the documentation come from the committed benchmark reports (benchmarks/RESULTS.md
and the reports of single sections beside it, benchmarks/RESULTS-*.md, each with its command): every
number in the tables of docs/results/speed.md appears in one of them, unless its row says it was
measured on the bf16 CPU (those come from the training runs the Results page names)."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SPEED_PAGE = ROOT / "docs" / "results" / "speed.md"
OTHER_CPU = "bf16 CPU"
NUMBER = re.compile(r"(?<![\w.,])\d+(?:,\d{3})*(?:\.\d+)?(?!\d)(?![.,]\d)")


def _section(text: str, heading: str) -> str:
    start = text.index(heading)
    following = re.search(r"^#{1,2} ", text[start + len(heading):], flags=re.MULTILINE)
    return text[start: start + len(heading) + following.start()] if following else text[start:]


def _table_rows(section: str) -> list[str]:
    return [line for line in section.splitlines() if line.startswith("|") and not line.startswith("|---")]


def _speed_rows() -> list[str]:
    page = SPEED_PAGE.read_text(encoding="utf-8")
    in_short = _table_rows(_section(page, "\n## In short"))[1:]  # without the header
    all_cases = _table_rows(_section(page, "\n## All cases"))[1:]
    time_to_target = [row for row in _table_rows(_section(page, "\n## Time to target")) if not row.startswith("| run (")]
    return in_short + all_cases + time_to_target


def test_every_figure_in_the_speed_tables_is_in_a_committed_benchmark_report():
    reports = [path for path in (ROOT / "benchmarks").glob("RESULTS*.md") if path.name != "RESULTS-partial.md"]  # uncommitted
    results = "\n".join(path.read_text(encoding="utf-8") for path in sorted(reports))
    rows = _speed_rows()
    assert len(rows) >= 15, "the speed page has its tables"
    missing = []
    for row in rows:
        if OTHER_CPU in row:
            continue
        for number in NUMBER.findall(row):
            # The whole number, not a piece of a longer one ("40" inside "1,451,400").
            if not re.search(rf"(?<![\d.,]){re.escape(number)}(?![\d]|[.,]\d)", results):
                missing.append(f"{number} in: {row[:80]}")
    assert not missing, "speed figures in no benchmarks/RESULTS*.md:\n" + "\n".join(missing)
