"""Ship a trained network without tripletnet: ONNX or TorchScript.

The exported graph takes uint8 images (N, C, H, W) with a dynamic batch axis and does the
scaling to [0, 1] and the normalisation with the run's training mean and std itself; it returns
L2-normalised float32 embeddings (N, D).

The input contract: each image prepared as :mod:`tripletnet.data.images` prepares it for training
and for ``TripletModel.embed`` (EXIF orientation applied, the short side resized to the model's side
with bilinear filtering, the central square cut out, grey ``L`` or ``RGB`` uint8, 16-bit and float
images scaled from their own range); ``TripletModel.preprocess`` gives exactly that tensor. The file
records the contract (:func:`input_contract`): ONNX in its metadata (key :data:`CONTRACT_KEY`),
TorchScript in an extra file of that name. Weights are exported in fp32 whatever precision the model
was trained in. The file is built in memory and written atomically: nothing is left half-written.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
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
from ..models.inputs import images_to_input
from .formats import EXPORT_FORMATS as FORMATS
from .formats import FORMAT_SUFFIXES, export_name_problem, suffix_format
from .model import TripletModel

# ONNX opset of the exported graph: 18 is what torch's exporter targets and onnxruntime >= 1.14 runs.
ONNX_OPSET = 18
INPUT_NAME = "images"
OUTPUT_NAME = "embeddings"
CONTRACT_KEY = "tripletnet_input.json"


def input_contract(model: TripletModel) -> dict[str, object]:
    """What an exported file takes, as its metadata records it: shape, dtype and how images are prepared."""
    channels, height, width = model.input_shape
    mean, std = model.network.input_normalization()
    return {
        "input": INPUT_NAME, "dtype": "uint8", "layout": "NCHW", "channels": channels, "height": height, "width": width,
        "preparation": "tripletnet.data.images: EXIF orientation applied; short side resized to the side (bilinear), "
                       "central square cut out; " + ("grey (L)" if channels == 1 else "RGB") +
                       "; 16-bit and float images scaled from their own range to 0..255",
        "normalisation": "inside the graph: x / 255, then (x - mean) / std per channel",
        "mean": list(mean), "std": list(std),
        "output": OUTPUT_NAME, "output_dtype": "float32", "output_norm": "L2, unit length",
        "embedding_dim": model.embedding_dim, "fingerprint": model.fingerprint,
    }


class Uint8Embedder(nn.Module):
    """uint8 (N, C, H, W) -> embeddings (N, D): scaling and normalisation inside the graph.

    The networks normalise with the run's mean and std inside their forward (restored from the
    checkpoint), so this only scales to [0, 1], exactly as training feeds them.
    """

    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        self.network = network

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.network(images_to_input(images))


class _CheckedInput(nn.Module):
    """The TorchScript export's entry: refuses what the traced graph would take silently and get wrong.

    A trace keeps no Python checks, and its ``x / 255`` takes any dtype: a float image in 0..1 (what
    ``TripletModel.embed`` takes) gave another embedding without a word. Scripted, so the checks run.
    """

    def __init__(self, embedder: torch.jit.ScriptModule, input_shape: tuple[int, int, int]) -> None:
        super().__init__()
        self.embedder = embedder
        self.channels, self.height, self.width = input_shape

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.dtype != torch.uint8:
            raise RuntimeError("images must be uint8 (0..255): the export scales them by 1/255 itself "
                               "(floats in 0..1: (images * 255).round().to(torch.uint8))")
        if images.dim() != 4 or [images.shape[1], images.shape[2], images.shape[3]] != [self.channels, self.height, self.width]:
            raise RuntimeError(f"images must be (N, {self.channels}, {self.height}, {self.width}), got {list(images.shape)}")
        return self.embedder(images)


def _fp32_embedder(model: TripletModel, log: Logger) -> Uint8Embedder:
    if model.config.precision != "fp32" or any(p.dtype != torch.float32 for p in model.network.parameters()):
        log(f"note: the model was trained with {model.config.precision} arithmetic; its weights are exported in fp32")
    # A CPU copy: the export is the same wherever the model was loaded (a GPU), and the caller's model is untouched.
    # No gradients: a caller of the export outside torch.no_grad() would otherwise build an autograd graph.
    return Uint8Embedder(copy.deepcopy(model.network).to("cpu", torch.float32).requires_grad_(False)).eval()


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


def _interrupted(error: BaseException) -> bool:
    """Whether a KeyboardInterrupt is in ``error``'s chain: torch's exporter catches it (a Ctrl-C while it
    imports torch._dynamo) and raises its own TorchExportError, a 100-line traceback, in its place."""
    seen: set[int] = set()
    cause: BaseException | None = error
    while cause is not None and id(cause) not in seen:
        if isinstance(cause, KeyboardInterrupt):
            return True
        seen.add(id(cause))
        cause = cause.__cause__ or cause.__context__
    return False


def _onnx_bytes(embedder: Uint8Embedder, example: torch.Tensor, contract: str) -> bytes:
    try:
        with _quiet_exporter():
            program = torch.onnx.export(
                embedder, (example,), dynamo=True, opset_version=ONNX_OPSET, input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME], dynamic_shapes=({0: torch.export.Dim("batch")},), verbose=False, report=False,
            )
    except Exception as exc:
        if _interrupted(exc):
            raise KeyboardInterrupt from None  # the user's Ctrl-C, said as one: "tripletnet: interrupted", exit 130
        raise
    if program is None:  # pragma: no cover - dynamo=True always returns the program
        raise RuntimeError("torch.onnx.export returned no program")
    proto = program.model_proto
    entry = proto.metadata_props.add()
    entry.key, entry.value = CONTRACT_KEY, contract
    return proto.SerializeToString()


def _torchscript_bytes(embedder: Uint8Embedder, example: torch.Tensor, contract: str) -> bytes:
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit is deprecated in favour of torch.export, yet still what C++/mobile load
        traced = torch.jit.trace(embedder, (example,))
        checked = torch.jit.script(_CheckedInput(traced, tuple(example.shape[1:])))  # type: ignore[arg-type]
        torch.jit.save(checked, buffer, _extra_files={CONTRACT_KEY: contract})
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
    if problem := export_name_problem(target, format):  # almost surely a forgotten --format
        raise ParameterError("out", problem, related=("format",))
    if suffix_format(target) is None:
        usual = " or ".join(FORMAT_SUFFIXES[format][:2])
        log(f"note: {target.name} is written as {format}; such files are usually named {usual}")
    embedder = _fp32_embedder(model, log)
    # Batch of two so the tracer cannot specialise the batch axis to 1.
    example = torch.zeros(2, *model.input_shape, dtype=torch.uint8)
    contract = json.dumps(input_contract(model), indent=2)
    data = _onnx_bytes(embedder, example, contract) if format == "onnx" else _torchscript_bytes(embedder, example, contract)
    atomic_write_bytes(target, data)  # a failure is a WriteError naming the file
    return target
