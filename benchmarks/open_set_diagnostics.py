"""Why an open-set run verifies its unseen classes poorly: where their embeddings sit and which pairs set the threshold.

For a checkpoint that held classes out, on the test images of the held-out (unseen) classes and,
beside them, of the training (seen) classes:

- *cap*: the norm of the mean embedding (0 when the embeddings spread over the whole sphere, 1
  when they all coincide);
- *dimensions used*: the participation ratio of the centred embeddings' covariance,
  (sum of eigenvalues)^2 / sum of squared eigenvalues: how many of the dimensions carry variance;
- per unseen class: its VAL at the all-pairs threshold for FAR 1e-3 and the median distance of
  its matching pairs;
- the class pairs that make the false accepts at that threshold.

Every figure is exact over all pairs of the chosen images (a few thousand: the N x N distance
matrix is held in memory). Run: ``python -m benchmarks.open_set_diagnostics RUN/last.pt
[--data_path DIR] [--far 1e-3]``.
"""

from __future__ import annotations

import argparse
from collections import Counter

import torch

from tripletnet.api import embed_checkpoint
from tripletnet.evaluation import threshold_at_far


def cap_and_dimensions(embeddings: torch.Tensor) -> tuple[float, float]:
    """The norm of the mean embedding, and the participation ratio of the centred covariance."""
    centred = embeddings - embeddings.mean(0)
    variances = torch.linalg.svdvals(centred.double()) ** 2
    return float(embeddings.mean(0).norm()), float(variances.sum() ** 2 / (variances**2).sum())


def threshold_diagnostics(embeddings: torch.Tensor, labels: torch.Tensor, far: float) -> dict:
    """The threshold at ``far`` over all pairs, each class's VAL and median matching distance, the false accepts by class pair."""
    distances = torch.cdist(embeddings.double(), embeddings.double())
    rows, cols = torch.triu_indices(len(labels), len(labels), 1)
    pair_distances = distances[rows, cols]
    same = labels[rows] == labels[cols]
    threshold = threshold_at_far(pair_distances[~same], far)  # accept d < threshold: at most far of the negatives
    accepted = pair_distances < threshold
    per_class = {}
    for label in torch.unique(labels).tolist():
        mine = same & (labels[rows] == label)
        per_class[label] = (float(accepted[mine].double().mean()), float(pair_distances[mine].median()))
    false = ~same & accepted
    firsts, seconds = labels[rows][false].tolist(), labels[cols][false].tolist()
    confused = Counter(tuple(sorted(pair)) for pair in zip(firsts, seconds, strict=True))
    return {"threshold": threshold, "per_class": per_class, "false_accepts": int(false.sum()), "confused": confused,
            "negative_mean": float(pair_distances[~same].mean())}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint", help="a checkpoint of a run that held classes out")
    parser.add_argument("--data_path", default=None, help="where the dataset is (default: as for tripletnet evaluate)")
    parser.add_argument("--far", type=float, default=1e-3, help="the false accept rate that sets the threshold")
    args = parser.parse_args(argv)
    embedded = {which: embed_checkpoint(args.checkpoint, "test", data_path=args.data_path, classes=which, log=lambda _: None)
                for which in ("unseen", "seen")}
    for which, split in embedded.items():
        cap, dimensions = cap_and_dimensions(split.embeddings)
        print(f"{which}: {len(split.labels):,} test images; mean-embedding norm {cap:.2f}; dimensions used {dimensions:.1f} "
              f"of {split.embeddings.shape[1]}")
    unseen = embedded["unseen"]
    names = unseen.class_names or tuple(str(label) for label in range(int(unseen.labels.max()) + 1))
    found = threshold_diagnostics(unseen.embeddings, unseen.labels, args.far)
    print(f"unseen: threshold at FAR {args.far:g} over all pairs {found['threshold']:.3f} "
          f"(mean non-matching distance {found['negative_mean']:.2f})")
    for label, (val, median) in found["per_class"].items():
        print(f"  class {names[label]}: VAL {val:.3f}, median matching distance {median:.3f}")
    total = max(found["false_accepts"], 1)
    shown = ", ".join(f"{names[a]}-{names[b]} {count / total:.0%}"
                      for (a, b), count in found["confused"].most_common(5))
    print(f"  false accepts ({found['false_accepts']:,}) by class pair: {shown}")


if __name__ == "__main__":
    main()
