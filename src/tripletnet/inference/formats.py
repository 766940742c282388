"""The export formats and how to tell their files apart, in a module of their own so that the CLI
lists and recognises them without importing torch."""

from __future__ import annotations

import zipfile
from pathlib import Path

EXPORT_FORMATS = ("onnx", "torchscript")
CALIBRATION_SUFFIX = ".calibration.json"  # a checkpoint's calibration lies beside it as <checkpoint><suffix>


def file_head(path: Path, size: int = 64) -> bytes:
    """The first ``size`` bytes of ``path`` (none when it cannot be read)."""
    try:
        with open(path, "rb") as fh:
            return fh.read(size)
    except OSError:
        return b""


def zip_names(path: Path) -> list[str]:
    """The member names of a zip archive (torch.save and torch.jit.save both write one); none for other files."""
    try:
        with zipfile.ZipFile(path) as archive:
            return archive.namelist()
    except (OSError, zipfile.BadZipFile):
        return []


# The suffixes each format's files go by: onnxruntime and viewers such as Netron expect .onnx, torch users .pt.
FORMAT_SUFFIXES = {"onnx": (".onnx",), "torchscript": (".pt", ".pth", ".ts", ".torchscript", ".ptl")}
FORMAT_NAMES = {"onnx": "an ONNX", "torchscript": "a TorchScript"}
# The tags that may follow a ModelProto's ir_version: fields 2-8 (producer, ..., graph, opset_import).
_ONNX_SECOND_TAGS = frozenset((0x12, 0x1A, 0x22, 0x28, 0x32, 0x3A, 0x42))


def suffix_format(path: Path) -> str | None:
    """The export format whose files are named with ``path``'s suffix, if any."""
    suffix = path.suffix.lower()
    return next((name for name, suffixes in FORMAT_SUFFIXES.items() if suffix in suffixes), None)


def export_name_problem(path: Path, format: str) -> str | None:
    """Why ``path`` is a wrong name for an export in ``format``: it carries the other format's suffix, so
    whatever picks a loader by name (onnxruntime users, Netron, torch.jit.load scripts) would misread it."""
    named_as = suffix_format(path)
    if named_as in (None, format):
        return None
    return (f"{path.name} is named as {FORMAT_NAMES[named_as]} file, but format is {format}: "
            f"name it {FORMAT_SUFFIXES[format][0]}, or give format {named_as}")


def is_onnx_file(path: Path) -> bool:
    """Whether ``path`` starts as an ONNX ModelProto does, whatever it is named: ir_version (field 1, a small
    varint) first, then one of the next fields. A zip (a checkpoint, TorchScript) or text never does."""
    head = file_head(path, 3)
    return len(head) == 3 and head[0] == 0x08 and 3 <= head[1] <= 0x7F and head[2] in _ONNX_SECOND_TAGS


def holds_torchscript(names: list[str]) -> bool:
    return any(name.endswith("/constants.pkl") for name in names)  # torch.jit.save's archive; a checkpoint has none


def is_torchscript_file(path: Path) -> bool:
    return holds_torchscript(zip_names(path))


def export_kind(path: Path) -> str | None:
    """``"an ONNX export"`` or ``"a TorchScript export"`` when ``path`` is one, else None."""
    if is_onnx_file(path):
        return "an ONNX export"
    return "a TorchScript export" if is_torchscript_file(path) else None
