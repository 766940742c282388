"""Ship a trained network without tripletnet: ONNX or TorchScript.

The exported graph takes uint8 images (N, C, H, W) with a dynamic batch axis and does the
scaling to [0, 1] and the normalisation itself, so a service only has to decode images; it returns
L2-normalised float32 embeddings (N, D). Weights are exported in fp32 whatever precision the model
was trained in. The file is built in memory and written atomically: nothing is left half-written.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import warnings
from collections.abc import Iterator
from pathlib import Path

import torch
from torch import nn

from ..console import Logger, log_stderr
from ..errors import ParameterError, UserError
from ..fileio import atomic_write_bytes
from .model import TripletModel

FORMATS = ("onnx", "torchscript")
# ONNX opset of the exported graph: 18 is what torch's exporter targets and onnxruntime >= 1.14 runs.
ONNX_OPSET = 18
INPUT_NAME = "images"
OUTPUT_NAME = "embeddings"


class Uint8Embedder(nn.Module):
    """uint8 (N, C, H, W) -> embeddings (N, D): the whole input pipeline inside the graph.

    Today's networks normalise (mean 0.5, std 0.5) inside their forward, so this only scales to
    [0, 1]; if normalisation moves out of the networks, it belongs here.
    """

    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        self.network = network

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.network(images.to(torch.float32) / 255.0)


def _fp32_embedder(model: TripletModel, log: Logger) -> Uint8Embedder:
    if model.config.precision != "fp32" or any(p.dtype != torch.float32 for p in model.network.parameters()):
        log(f"note: the model was trained with {model.config.precision} arithmetic; its weights are exported in fp32")
    return Uint8Embedder(model.network.float()).eval()


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    """Silence the ONNX exporter's progress (printed on stdout, which belongs to results) and its
    warnings about optional operator libraries (torchvision) a plain CNN never uses."""
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)


def _onnx_bytes(embedder: Uint8Embedder, example: torch.Tensor) -> bytes:
    with _quiet_exporter():
        program = torch.onnx.export(
            embedder, (example,), dynamo=True, opset_version=ONNX_OPSET, input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
            dynamic_shapes=({0: torch.export.Dim("batch")},), verbose=False, report=False,
        )
    if program is None:  # pragma: no cover - dynamo=True always returns the program
        raise RuntimeError("torch.onnx.export returned no program")
    return program.model_proto.SerializeToString()


def _torchscript_bytes(embedder: Uint8Embedder, example: torch.Tensor) -> bytes:
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit is deprecated in favour of torch.export, yet still what C++/mobile load
        traced = torch.jit.trace(embedder, (example,))
        torch.jit.save(traced, buffer)
    return buffer.getvalue()


def export_model(model: TripletModel, out: str | os.PathLike, format: str = "onnx", log: Logger = log_stderr) -> Path:
    """Export ``model`` as ONNX (opset :data:`ONNX_OPSET`) or TorchScript.

    Args:
        model: a loaded model (:func:`tripletnet.load_model`).
        out: the file to write (replaced atomically if it exists).
        format: "onnx" or "torchscript".
        log: where notes go (e.g. that a bf16-trained model is exported in fp32).

    Returns:
        The path written.

    Raises:
        ParameterError: unknown ``format``.
        UserError: ``out`` cannot be written.
    """
    if format not in FORMATS:
        raise ParameterError("format", f"must be one of {', '.join(FORMATS)}, got {format!r}")
    target = Path(out)
    if target.is_dir():
        raise UserError(f"cannot write {target}: it is a folder; give a file name")
    embedder = _fp32_embedder(model, log)
    # Batch of two so the tracer cannot specialise the batch axis to 1.
    example = torch.zeros(2, *model.input_shape, dtype=torch.uint8)
    data = _onnx_bytes(embedder, example) if format == "onnx" else _torchscript_bytes(embedder, example)
    try:
        atomic_write_bytes(target, data)
    except OSError as exc:
        raise UserError(f"cannot write {target}: {exc.strerror or exc}") from None
    return target
