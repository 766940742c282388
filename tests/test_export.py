"""Export: ONNX in onnxruntime and TorchScript agree with PyTorch on real MNIST images; bf16 runs export fp32; mistakes."""

import io
import json

import numpy as np
import onnx
import onnxruntime
import pytest
import torch

from odd_images import write_odd_folder
from tripletnet.cli import main
from tripletnet.errors import ParameterError, UserError
from tripletnet.inference import export as export_module
from tripletnet.inference import load_model
from tripletnet.inference.export import CONTRACT_KEY, INPUT_NAME, ONNX_OPSET, export_model
from tripletnet.inference.formats import export_kind
from tripletnet.training.checkpoint import load_checkpoint, save_checkpoint

from _checkpoint import shared_checkpoint, train_tiny_on
from _mnist import mnist

# torch.jit.load is deprecated in favour of torch.export, but it is how a TorchScript file is read back.
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:DeprecationWarning")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return shared_checkpoint(tmp_path_factory)


@pytest.fixture(scope="module")
def images():
    """uint8 (N, 1, 28, 28): real MNIST test images."""
    return mnist().test_images[:257, None]


@pytest.fixture(scope="module")
def onnx_file(checkpoint, tmp_path_factory):
    return export_model(load_model(checkpoint), tmp_path_factory.mktemp("onnx") / "model.onnx", "onnx", log=lambda _: None)


def test_onnx_in_onnxruntime_matches_pytorch_on_mnist_test_images(checkpoint, images, onnx_file):
    expected = load_model(checkpoint).embed(images).numpy()
    session = onnxruntime.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])
    for batch in (images[:1], images[:7], images):  # the batch axis is dynamic
        got = session.run(None, {INPUT_NAME: batch.numpy()})[0]
        assert got.dtype == np.float32 and got.shape == (len(batch), 64)
        assert np.abs(got - expected[: len(batch)]).max() <= 1e-5


@pytest.fixture(scope="module")
def odd_model(tmp_path_factory):
    """A model trained at --image_size 32 on odd-aspect, EXIF-rotated, palette, 16-bit, RGBA ... images, and those files."""
    base = tmp_path_factory.mktemp("odd-export")
    files = write_odd_folder(base / "images")
    return load_model(train_tiny_on(base / "images", base / "run"), log=lambda _: None), files


def test_exports_given_the_documented_input_match_embed_on_odd_images(odd_model, tmp_path):
    model, files = odd_model
    expected = model.embed(files).numpy()
    batch = model.preprocess(files).numpy()  # the documented input: the image pipeline's uint8 tensor
    mean, std = model.network.input_normalization()
    assert mean != (0.5, 0.5, 0.5), "the run's own mean: the graph must carry it"

    onnx_path = export_model(model, tmp_path / "odd.onnx", "onnx", log=lambda _: None)
    contract = json.loads({p.key: p.value for p in onnx.load(str(onnx_path)).metadata_props}[CONTRACT_KEY])
    assert (contract["dtype"], contract["channels"], contract["height"], contract["width"]) == ("uint8", 3, 32, 32)
    assert contract["mean"] == list(mean) and contract["std"] == list(std) and "centr" in contract["preparation"]
    session = onnxruntime.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    assert np.abs(session.run(None, {INPUT_NAME: batch})[0] - expected).max() <= 1e-5

    script_path = export_model(model, tmp_path / "odd.pt", "torchscript", log=lambda _: None)
    extra = {CONTRACT_KEY: ""}
    scripted = torch.jit.load(str(script_path), _extra_files=extra)
    assert json.loads(extra[CONTRACT_KEY]) == contract
    with torch.no_grad():
        assert np.abs(scripted(torch.from_numpy(batch)).numpy() - expected).max() <= 1e-5


def test_onnx_graph_states_its_opset_and_takes_uint8_batches(onnx_file):
    graph = onnx.load(str(onnx_file))
    onnx.checker.check_model(graph)
    assert any(o.domain in ("", "ai.onnx") and o.version == ONNX_OPSET for o in graph.opset_import)
    (inp,) = graph.graph.input
    assert inp.type.tensor_type.elem_type == onnx.TensorProto.UINT8
    dims = inp.type.tensor_type.shape.dim
    assert dims[0].dim_param and [d.dim_value for d in dims[1:]] == [1, 28, 28]


def test_torchscript_matches_pytorch_on_mnist_test_images(checkpoint, images, tmp_path):
    model = load_model(checkpoint)
    path = export_model(model, tmp_path / "model.pt", "torchscript", log=lambda _: None)
    scripted = torch.jit.load(str(path))
    with torch.no_grad():
        for batch in (images[:3], images):
            assert (scripted(batch) - model.embed(batch)).abs().max() <= 1e-5


def test_the_torchscript_export_refuses_float_or_misshapen_images_and_needs_no_no_grad(checkpoint, images, tmp_path):
    """A trace keeps no checks: float images in 0..1 (what TripletModel.embed takes) gave other embeddings silently."""
    scripted = torch.jit.load(str(export_model(load_model(checkpoint), tmp_path / "model.pt", "torchscript", log=lambda _: None)))
    batch = images[:4]
    assert not scripted(batch).requires_grad  # no autograd graph built for a caller outside torch.no_grad()
    for bad, message in [(batch.float() / 255, "images must be uint8"), (batch.double(), "images must be uint8"),
                         (batch[:, :, :20], r"images must be \(N, 1, 28, 28\), got \[4, 1, 20, 28\]"),
                         (batch[0], r"images must be \(N, 1, 28, 28\)"), (batch.expand(-1, 3, -1, -1), "got \\[4, 3, 28, 28\\]")]:
        with pytest.raises(torch.jit.Error, match=message):
            scripted(bad)


def test_a_bf16_trained_model_exports_fp32_weights_and_says_so(checkpoint, tmp_path):
    state = load_checkpoint(checkpoint)
    state["config"] = {**state["config"], "precision": "bf16"}
    bf16 = tmp_path / "bf16.pt"
    save_checkpoint(bf16, {k: v for k, v in state.items() if k != "format"})
    notes = []
    path = export_model(load_model(bf16), tmp_path / "bf16.onnx", "onnx", log=notes.append)
    assert len(notes) == 1 and "bf16" in notes[0] and "fp32" in notes[0]
    float_types = {init.data_type for init in onnx.load(str(path)).graph.initializer if init.data_type != onnx.TensorProto.INT64}
    assert float_types == {onnx.TensorProto.FLOAT}


def test_export_leaves_the_callers_model_as_it_was(checkpoint, tmp_path):
    """The export works on a float32 CPU copy: a model held in float64 (or on a GPU) is not changed."""
    model = load_model(checkpoint, log=lambda _: None)
    model.network.double()
    before = {name: value.clone() for name, value in model.network.state_dict().items()}
    export_model(model, tmp_path / "model.pt", "torchscript", log=lambda _: None)
    after = model.network.state_dict()
    assert all(after[name].dtype == value.dtype and torch.equal(after[name], value) for name, value in before.items())
    assert next(model.network.parameters()).dtype == torch.float64


def test_unknown_format_and_unwritable_path_write_nothing(checkpoint, tmp_path):
    model = load_model(checkpoint, log=lambda _: None)
    with pytest.raises(ParameterError, match="format") as caught:
        export_model(model, tmp_path / "model.tf", "tensorflow")
    assert caught.value.parameter == "format"
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    with pytest.raises(UserError, match="cannot write"):
        export_model(model, blocker / "model.pt", "torchscript")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file"]


def test_a_failed_export_keeps_the_old_file(checkpoint, tmp_path, monkeypatch):
    old = tmp_path / "model.pt"
    old.write_bytes(b"previous export")

    def broken(*_args):
        raise RuntimeError("tracer failed")

    monkeypatch.setattr(export_module, "_torchscript_bytes", broken)
    with pytest.raises(RuntimeError):
        export_model(load_model(checkpoint), old, "torchscript", log=lambda _: None)
    assert old.read_bytes() == b"previous export" and sorted(p.name for p in tmp_path.iterdir()) == ["model.pt"]


def test_a_ctrl_c_the_onnx_exporter_swallows_is_an_interrupt_again(checkpoint, tmp_path, monkeypatch, capsys):
    """A Ctrl-C while torch.export imports its compiler came out as torch's TorchExportError, a 100-line traceback."""
    out = tmp_path / "model.onnx"
    out.write_bytes(b"previous export")

    def exporter_that_caught_a_ctrl_c(*_args, **_kwargs):
        try:
            try:
                raise KeyboardInterrupt
            except KeyboardInterrupt:
                raise AttributeError("module 'torch._dynamo' has no attribute 'exc'") from None  # as torch's import did
        except AttributeError as error:
            raise RuntimeError("Failed to export the model with torch.export. This is step 1/3") from error

    monkeypatch.setattr(torch.onnx, "export", exporter_that_caught_a_ctrl_c)
    assert main(["export", "--checkpoint", str(checkpoint), "--out", str(out), "--overwrite"]) == 130
    assert capsys.readouterr().err == "tripletnet: interrupted\n"
    assert out.read_bytes() == b"previous export" and sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx"]

    def exporter_that_failed(*_args, **_kwargs):
        raise RuntimeError("an operator torch cannot export")

    monkeypatch.setattr(torch.onnx, "export", exporter_that_failed)
    with pytest.raises(RuntimeError, match="cannot export"):  # a real failure is not taken for an interrupt
        main(["export", "--checkpoint", str(checkpoint), "--out", str(out), "--overwrite"])


def test_export_cli_writes_torchscript_and_reports_mistakes_in_one_line(checkpoint, tmp_path, capsys):
    out = tmp_path / "model.pt"
    assert main(["export", "--checkpoint", str(checkpoint), "--format", "torchscript", "--out", str(out)]) == 0
    assert "TorchScript" in capsys.readouterr().out
    assert torch.jit.load(io.BytesIO(out.read_bytes()))(torch.zeros(2, 1, 28, 28, dtype=torch.uint8)).shape == (2, 64)
    for argv, expected in [
        (["--format", "tflite", "--out", str(tmp_path / "m.tflite")], "--format must be one of onnx, torchscript"),
        (["--format", "onnx", "--out", str(out / "inside-a-file.onnx")], "cannot write"),
    ]:
        code = main(["export", "--checkpoint", str(checkpoint), *argv])
        err = capsys.readouterr().err
        assert code == 2 and expected in err and len(err.strip().splitlines()) == 1, err


def test_an_export_given_where_a_checkpoint_is_wanted_is_named_as_an_export(checkpoint, onnx_file, tmp_path, capsys):
    """load_model and every command took an export for 'a truncated or another kind of file' (a probe's finding)."""
    scripted = export_model(load_model(checkpoint), tmp_path / "model.pt", "torchscript", log=lambda _: None)
    for path, kind in ((onnx_file, "an ONNX export"), (scripted, "a TorchScript export")):
        with pytest.raises(UserError, match=f"is {kind} \\(what 'tripletnet export' writes\\), not a training checkpoint"):
            load_model(path)
        assert main(["evaluate", "--checkpoint", str(path)]) == 2
        assert f"is {kind}" in capsys.readouterr().err


def test_an_export_named_as_the_other_format_is_refused_and_an_unusual_name_is_noted_and_recognised(checkpoint, tmp_path, capsys):
    """--format torchscript --out model.onnx wrote TorchScript under an ONNX name, and a second export to model.bin
    was refused as 'not an onnx export' (only .onnx files were recognised): a probe's finding."""
    for fmt, name, wanted in (("torchscript", "model.onnx", "name it .pt, or give --format onnx"),
                              ("onnx", "model.pt", "name it .onnx, or give --format torchscript")):
        assert main(["export", "--checkpoint", str(checkpoint), "--format", fmt, "--out", str(tmp_path / name)]) == 2
        err = capsys.readouterr().err
        assert wanted in err and len(err.strip().splitlines()) == 1 and not (tmp_path / name).exists(), err
    with pytest.raises(ParameterError, match="named as an ONNX file, but format is torchscript"):
        export_model(load_model(checkpoint), tmp_path / "m.ONNX", "torchscript", log=lambda _: None)
    unusual = tmp_path / "model.bin"
    for _ in range(2):  # the second run replaces its own earlier export without --overwrite
        assert main(["export", "--checkpoint", str(checkpoint), "--out", str(unusual)]) == 0
        assert "note: model.bin is written as onnx; such files are usually named .onnx" in capsys.readouterr().err
    assert onnx.load(str(unusual)).opset_import[0].version == ONNX_OPSET
    assert export_kind(unusual) == "an ONNX export"
    for other in (checkpoint, tmp_path / "empty", tmp_path / "text.onnx"):
        if other != checkpoint:
            other.write_bytes(b"" if other.name == "empty" else b"\x08\x07 not a model\n")
        assert export_kind(other) is None, other
