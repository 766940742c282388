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


def is_onnx_file(path: Path) -> bool:
    return path.suffix.lower() == ".onnx" and file_head(path, 1) == b"\x08"  # ModelProto starts with ir_version (field 1)


def holds_torchscript(names: list[str]) -> bool:
    return any(name.endswith("/constants.pkl") for name in names)  # torch.jit.save's archive; a checkpoint has none


def is_torchscript_file(path: Path) -> bool:
    return holds_torchscript(zip_names(path))


def export_kind(path: Path) -> str | None:
    """``"an ONNX export"`` or ``"a TorchScript export"`` when ``path`` is one, else None."""
    if is_onnx_file(path):
        return "an ONNX export"
    return "a TorchScript export" if is_torchscript_file(path) else None
