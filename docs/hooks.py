"""MkDocs hook: the options reference is generated at build time from the config dataclasses.

``tripletnet train`` and ``tripletnet evaluate`` build their flags from the fields of
:class:`~tripletnet.config.TrainConfig` and :class:`~tripletnet.config.EvalConfig`; this hook renders
the same fields (name, default, ``--preset reference`` value, group and the long explanation) into
the page that holds the marker ``<!-- options: train -->`` or ``<!-- options: eval -->``, so the
reference cannot drift from the CLI. ``tests/test_docs_site.py`` checks that every field appears.
"""

from __future__ import annotations

import re
from dataclasses import fields
from typing import Any

MARKER = re.compile(r"<!-- options: (train|eval) -->")


def _cell(text: str) -> str:
    """Markdown table cell text: argparse's %% back to %, pipes escaped."""
    return text.replace("%%", "%").replace("|", "\\|")


def _default(value: Any) -> str:
    return "none" if value is None or value == "" else f"`{value}`"


def options_table(command: str) -> str:
    """The markdown tables of one command's options: one table per group for train, one for evaluate."""
    from tripletnet.config import OPTION_GROUPS, PRESETS, EvalConfig, TrainConfig

    if command == "eval":
        rows = ["| option | default | meaning |", "|---|---|---|"]
        rows += [f"| `--{f.name}` | {_default(f.default)} | {_cell(f.metadata.get('doc', f.metadata['help']))} |"
                 for f in fields(EvalConfig)]
        return "\n".join(rows)
    reference = PRESETS["reference"]
    parts = []
    train_fields = fields(TrainConfig)
    for group in OPTION_GROUPS:
        parts.append(f"### {group.capitalize()}\n")
        parts.append("| option | default | `--preset reference` | meaning |")
        parts.append("|---|---|---|---|")
        for f in train_fields:
            if f.metadata.get("group") != group:
                continue
            preset = f"`{reference[f.name]}`" if f.name in reference else ""
            meaning = f.metadata.get("doc", f.metadata["help"])
            parts.append(f"| `--{f.name}` | {_default(f.default)} | {preset} | {_cell(meaning)} |")
        parts.append("")
    ungrouped = [f.name for f in train_fields if f.metadata.get("group") not in OPTION_GROUPS]
    if ungrouped:
        raise ValueError(f"TrainConfig fields without a known group (config.py, metadata 'group'): {', '.join(ungrouped)}")
    return "\n".join(parts)


def on_page_markdown(markdown: str, **_: Any) -> str:
    """Replace each options marker with its generated tables."""
    return MARKER.sub(lambda match: options_table(match.group(1)), markdown)
