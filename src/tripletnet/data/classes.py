"""Open-set class splits: which classes a run trains on and which it holds out for evaluation.

A class spec is a comma-separated list of class labels, label ranges and (for datasets whose
classes have names, such as image folders) class names: ``0-4``, ``1,3,5``, ``alice,bob``. A token
that is exactly a class name means that class; otherwise a number is a label (0-based, in the
dataset's class order) and ``a-b`` the labels a to b inclusive.

With ``train_classes``, training uses those classes and the others are held out (or only those of
``holdout_classes``, when both are given); with only ``holdout_classes``, training uses the rest.
A folder whose test split has identities the training split lacks is open set without either:
its training identities are the training classes and the test-only ones are held out.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from ..errors import ParameterError
from .types import CLASS_CHOICES, DatasetSplits

_RANGE = re.compile(r"^(\d+)\s*-\s*(\d+)$")


def _tokens(spec: str, parameter: str) -> list[str]:
    tokens = [token.strip() for token in spec.split(",")]
    if not spec.strip() or any(not token for token in tokens):
        raise ParameterError(parameter, f"must list classes like 0-4 or 1,3,5, got {spec!r}")
    return tokens


def check_class_spec(spec: str | None, parameter: str) -> None:
    """Raise :class:`ParameterError` for a spec no dataset can satisfy (empty items, a range a-b with a > b)."""
    if spec is None:
        return
    for token in _tokens(spec, parameter):
        match = _RANGE.match(token)
        if match and int(match[1]) > int(match[2]):
            raise ParameterError(parameter, f"has the range {token!r}, whose start is after its end")


def parse_class_spec(spec: str, class_names: Sequence[str], parameter: str) -> tuple[int, ...]:
    """The sorted labels a class spec names (see the module doc).

    Args:
        spec: e.g. ``"0-4"``, ``"1,3,5"`` or ``"alice,bob"``.
        class_names: the dataset's class names, by label.
        parameter: the option the spec came from (for messages).

    Returns:
        The labels, sorted, without repeats.

    Raises:
        ParameterError: a malformed spec, or a class the dataset lacks.
    """
    check_class_spec(spec, parameter)
    label_of = {name: label for label, name in enumerate(class_names)}
    labels: set[int] = set()
    for token in _tokens(spec, parameter):
        if token in label_of:
            labels.add(label_of[token])
            continue
        match = _RANGE.match(token)
        if match:
            wanted = range(int(match[1]), int(match[2]) + 1)
        elif token.isdigit():
            wanted = range(int(token), int(token) + 1)
        else:
            raise ParameterError(parameter, f"names the class {token!r}, which the dataset lacks ({_describe(class_names)})")
        missing = [label for label in wanted if label >= len(class_names)]
        if missing:
            lacks = f"names the class {missing[0]}, which the dataset lacks (labels 0-{len(class_names) - 1})"
            raise ParameterError(parameter, lacks)
        labels.update(wanted)
    return tuple(sorted(labels))


def _describe(class_names: Sequence[str]) -> str:
    shown = ", ".join(class_names[:5]) + (", ..." if len(class_names) > 5 else "")
    return f"{len(class_names)} classes: {shown}; or labels 0-{len(class_names) - 1}"


@dataclass(frozen=True)
class ClassSplit:
    """The classes a run trains on and those it holds out (never trained on, evaluated as unseen).

    Attributes:
        train: labels of the training classes.
        holdout: labels of the held-out classes.
        class_names: the dataset's class names, by label.
    """

    train: tuple[int, ...]
    holdout: tuple[int, ...]
    class_names: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        """What a checkpoint records: the class names on each side (labels can change when a folder changes)."""
        return {
            "train_classes": [self.class_names[label] for label in self.train],
            "holdout_classes": [self.class_names[label] for label in self.holdout],
        }

    def labels(self, which: str) -> tuple[int, ...]:
        """The labels of ``which``: ``"unseen"`` (held out), ``"seen"`` (training) or ``"all"``."""
        if which not in CLASS_CHOICES:
            raise ParameterError("classes", f"must be one of {', '.join(CLASS_CHOICES)}, got {which!r}")
        if which == "unseen":
            return self.holdout
        if which == "seen":
            return self.train
        return tuple(range(len(self.class_names)))

    @classmethod
    def from_dict(cls, recorded: dict[str, Any], class_names: Sequence[str], source: str) -> ClassSplit:
        """The split a checkpoint recorded, as labels of ``class_names`` (the dataset as loaded now)."""
        label_of = {name: label for label, name in enumerate(class_names)}
        sides = []
        for key in ("train_classes", "holdout_classes"):
            missing = [name for name in recorded.get(key, []) if name not in label_of]
            if missing:
                raise ParameterError("data_path", f"holds a dataset without the class {missing[0]!r} that {source} recorded "
                                                  f"in its {key}")
            sides.append(tuple(sorted(label_of[name] for name in recorded.get(key, []))))
        return cls(sides[0], sides[1], tuple(class_names))


def class_split(data: DatasetSplits, train_classes: str | None = None, holdout_classes: str | None = None) -> ClassSplit | None:
    """The open-set split of ``data`` the options ask for, or None for a closed-set run.

    Args:
        data: the loaded dataset.
        train_classes: a class spec (see the module doc), or None.
        holdout_classes: a class spec, or None.

    Returns:
        The split; None when neither spec is given and every test class is a training class.

    Raises:
        ParameterError: a class the dataset lacks, overlapping specs, fewer than two training classes
            with training images, or no held-out class with test images.
    """
    names = tuple(data.class_names)
    present_train = set(torch.unique(data.train_labels).tolist())
    if train_classes is None and holdout_classes is None:
        test_only = sorted(set(torch.unique(data.test_labels).tolist()) - present_train)
        if not test_only:
            return None
        return ClassSplit(tuple(sorted(present_train)), tuple(test_only), names)
    train = parse_class_spec(train_classes, names, "train_classes") if train_classes is not None else None
    holdout = parse_class_spec(holdout_classes, names, "holdout_classes") if holdout_classes is not None else None
    if train is not None and holdout is not None:
        overlap = sorted(set(train) & set(holdout))
        if overlap:
            shared = ", ".join(names[i] for i in overlap)
            raise ParameterError("train_classes",
                                 f"and holdout_classes overlap in {shared}: a class is trained on or held out, not both",
                                 related=("holdout_classes",))
    if train is None:
        assert holdout is not None
        train = tuple(label for label in range(len(names)) if label not in holdout)
    if holdout is None:
        holdout = tuple(label for label in range(len(names)) if label not in train)
    with_images = [label for label in train if label in present_train]
    if len(with_images) < 2:
        raise ParameterError("train_classes",
                             f"leaves {len(with_images)} training classes with training images; triplets need at least two")
    test_present = set(torch.unique(data.test_labels).tolist())
    if not any(label in test_present for label in holdout):
        raise ParameterError("holdout_classes",
                             "leaves no held-out class with test images to evaluate on (hold out at least one class)")
    return ClassSplit(tuple(with_images), holdout, names)


def indices_of_classes(labels: torch.Tensor, classes: Sequence[int]) -> torch.Tensor:
    """Sorted indices of the items whose label is one of ``classes``."""
    return torch.nonzero(torch.isin(labels, torch.tensor(list(classes), dtype=labels.dtype))).flatten()
