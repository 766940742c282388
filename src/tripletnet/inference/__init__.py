"""Using a trained model: embed, verify, search a faiss gallery, export to ONNX or TorchScript."""

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
