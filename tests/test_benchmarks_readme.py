"""The README's speed figures come from the committed benchmark reports (benchmarks/RESULTS.md and
the reports of single sections beside it, benchmarks/RESULTS-*.md, each with its command): every
number in the Speed table, the time-to-target tables and the speed comparison of "How we compare"
appears in one of them, unless its row says it was measured on an earlier machine."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EARLIER = "earlier machine"
NUMBER = re.compile(r"(?<![\w.,])\d+(?:,\d{3})*(?:\.\d+)?(?!\d)(?![.,]\d)")


def _section(text: str, heading: str) -> str:
    start = text.index(heading)
    following = re.search(r"^#{2,3} ", text[start + len(heading):], flags=re.MULTILINE)
    return text[start: start + len(heading) + following.start()] if following else text[start:]


def _table_rows(section: str) -> list[str]:
    return [line for line in section.splitlines() if line.startswith("|") and not line.startswith("|---")]


def _speed_rows() -> list[str]:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    speed = _table_rows(_section(readme, "\n## Speed"))[1:]  # without the header
    compare = _section(readme, "\n### How we compare")
    speed_table = compare[compare.index("| speed on this machine"):]
    time_to_target = [row for row in _table_rows(_section(readme, "\n### Time to target")) if not row.startswith("| run (")]
    return speed + _table_rows(speed_table)[1:] + time_to_target


def test_every_figure_in_the_readme_speed_tables_is_in_a_committed_benchmark_report():
    reports = [path for path in (ROOT / "benchmarks").glob("RESULTS*.md") if path.name != "RESULTS-partial.md"]  # uncommitted
    results = "\n".join(path.read_text(encoding="utf-8") for path in sorted(reports))
    rows = _speed_rows()
    assert rows, "the README has speed tables"
    missing = []
    for row in rows:
        if EARLIER in row:
            continue
        for number in NUMBER.findall(row):
            # The whole number, not a piece of a longer one ("40" inside "1,451,400").
            if not re.search(rf"(?<![\d.,]){re.escape(number)}(?![\d]|[.,]\d)", results):
                missing.append(f"{number} in: {row[:80]}")
    assert not missing, "README speed figures in no benchmarks/RESULTS*.md:\n" + "\n".join(missing)

