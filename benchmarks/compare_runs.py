"""Compare two run folders bit for bit: metrics.jsonl (every field but timings) and last.pt's weights and Adam state.

    python -m benchmarks.compare_runs /tmp/core-det/old /tmp/core-det/new
"""

from __future__ import annotations

import json
import sys

import torch

TIMINGS = {"epoch_seconds", "images_per_second", "eval_seconds"}


def _records(run: str) -> list[dict]:
    with open(f"{run}/metrics.jsonl", encoding="utf-8") as fh:
        return [json.loads(line) for line in fh]


def main(old: str, new: str) -> bool:
    old_records, new_records = _records(old), _records(new)
    same = len(old_records) == len(new_records)
    for a, b in zip(old_records, new_records, strict=False):
        keys = set(a) - TIMINGS
        differing = {k: (a.get(k), b.get(k)) for k in keys | (set(b) - TIMINGS) if a.get(k) != b.get(k) and a.get(k) == a.get(k)}
        print(f"epoch {a['epoch']}: {len(keys)} fields compared, differing: {differing or 'none'}")
        same &= not differing
    old_state = torch.load(f"{old}/last.pt", weights_only=True)
    new_state = torch.load(f"{new}/last.pt", weights_only=True)
    weights = old_state["model"].keys() == new_state["model"].keys() and all(
        torch.equal(value, new_state["model"][key]) for key, value in old_state["model"].items()
    )
    adam = all(
        torch.equal(torch.as_tensor(value), torch.as_tensor(new_state["optimizer"]["state"][index][name]))
        for index, entry in old_state["optimizer"]["state"].items()
        for name, value in entry.items()
    )
    print(f"final weights bit-identical: {weights} ({len(old_state['model'])} tensors); Adam state bit-identical: {adam}")
    return same and weights and adam


if __name__ == "__main__":
    sys.exit(0 if main(sys.argv[1], sys.argv[2]) else 1)
