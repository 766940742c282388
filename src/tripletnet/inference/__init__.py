"""Using a trained model: embed, verify, search a faiss gallery, export to ONNX or TorchScript.

The names below are imported from :mod:`.model` when first used, so that importing a submodule for
its constants (the CLI's ``index`` flags read :mod:`.index`'s defaults) does not import the model code.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .model import (
        Calibration,
        Neighbours,
        TripletModel,
        Verification,
        calibration_path,
        load_model,
        preprocess_image,
        read_calibration,
        weights_fingerprint,
        write_calibration,
    )

__all__ = [
    "Calibration", "Neighbours", "TripletModel", "Verification", "calibration_path", "load_model", "preprocess_image",
    "read_calibration", "weights_fingerprint", "write_calibration",
]


def __getattr__(name: str) -> Any:
    if name not in __all__:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(".model", __name__), name)
