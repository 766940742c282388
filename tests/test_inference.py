"""load_model: embedding any kind of image input, fingerprints, calibration, verify and search (library and CLI)."""

import json
import re

import numpy as np
import pytest
import torch
from PIL import Image

import tripletnet
from tripletnet.cli import main
from tripletnet.errors import ParameterError, UserError
from tripletnet.inference import (
    calibration_path,
    load_model,
    weights_fingerprint,
    write_calibration,
)
from tripletnet.models import embed_images
from tripletnet.training.checkpoint import load_checkpoint, save_checkpoint

from _checkpoint import shared_checkpoint
from _mnist import mnist


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return shared_checkpoint(tmp_path_factory)


@pytest.fixture()
def model(checkpoint):
    return load_model(checkpoint, log=lambda _: None)


@pytest.fixture(scope="module")
def test_images():
    return mnist().test_images[:12]


def _png(path, array, mode="L"):
    Image.fromarray(array.numpy() if isinstance(array, torch.Tensor) else array).convert(mode).save(path)
    return path


def test_load_model_is_exported_by_the_package(checkpoint):
    assert tripletnet.load_model is load_model
    assert not load_model(checkpoint).network.training


def test_a_model_runs_on_the_device_asked_and_a_missing_one_is_named(checkpoint, test_images):
    from tripletnet.errors import ParameterError

    auto = load_model(checkpoint, log=lambda _: None, device="auto")
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert auto.device.type == expected and next(auto.network.parameters()).device.type == expected
    assert load_model(checkpoint, log=lambda _: None).device.type == "cpu"  # a few images need no GPU start-up
    assert auto.embed(test_images).device.type == "cpu"
    if not torch.cuda.is_available():
        with pytest.raises(ParameterError, match="no cuda device"):
            load_model(checkpoint, log=lambda _: None, device="cuda")


def test_every_input_kind_gives_the_embeddings_of_the_training_path(model, test_images, tmp_path):
    expected = embed_images(model.network, test_images)
    files = [_png(tmp_path / f"{i}.png", image) for i, image in enumerate(test_images)]
    inputs = {
        "paths": [str(f) for f in files],
        "path objects": files,
        "PIL images": [Image.open(f) for f in files],
        "uint8 tensor N x H x W": test_images,
        "uint8 numpy N x H x W": test_images.numpy(),
        "float tensor N x 1 x H x W": test_images[:, None].float() / 255,
        "list of single arrays": [image.numpy() for image in test_images],
    }
    # 1e-5: embed_images feeds NCHW tensors, embed NHWC ones; the convolution kernels differ in rounding.
    for name, images in inputs.items():
        torch.testing.assert_close(model.embed(images), expected, atol=1e-5, rtol=0, msg=name)
    torch.testing.assert_close(model.embed(files[3]), expected[3:4], atol=1e-5, rtol=0)


def test_batch_size_does_not_change_embeddings_and_bn_stays_in_eval_mode(model, test_images):
    one_by_one = model.embed(test_images, batch_size=1)
    torch.testing.assert_close(model.embed(test_images, batch_size=5), one_by_one, atol=1e-6, rtol=0)
    assert not model.network.training
    assert torch.allclose(one_by_one.norm(dim=1), torch.ones(len(one_by_one)), atol=1e-5)


def test_rgb_images_are_converted_to_grayscale_and_said_once(checkpoint, test_images, tmp_path):
    notes = []
    model = load_model(checkpoint, log=notes.append)
    gray = model.embed(test_images[:3])
    rgb_files = [_png(tmp_path / f"{i}.png", image, "RGB") for i, image in enumerate(test_images[:3])]
    # Equal R, G and B convert back to the same gray values, so the embeddings must match.
    torch.testing.assert_close(model.embed(rgb_files), gray, atol=1e-6, rtol=0)
    rgb_tensor = test_images[:3, None].expand(-1, 3, -1, -1)
    torch.testing.assert_close(model.embed(rgb_tensor), gray, atol=1e-5, rtol=0)
    assert notes == ["note: converting colour images to the grey (1 channel) the model takes"]
    rgba = tmp_path / "rgba.png"
    Image.fromarray(np.full((28, 28, 4), (200, 30, 30, 255), np.uint8), "RGBA").save(rgba)
    load_model(checkpoint, log=notes.append).embed(rgba)
    assert notes[1] == notes[0], "RGBA is a colour image to the pipeline, not 4 channels"


def test_other_image_sizes_are_resized_from_files_and_refused_as_arrays(model, test_images, tmp_path):
    big = _png(tmp_path / "big.png", np.kron(test_images[0].numpy(), np.ones((2, 2), dtype=np.uint8)))
    assert model.embed(big).shape == (1, 64)
    with pytest.raises(ParameterError, match="28 x 28"):
        model.embed(np.zeros((2, 30, 30), dtype=np.uint8))


@pytest.mark.parametrize("value,needle", [(float("nan"), "NaN"), (float("inf"), "NaN or infinite"),
                                          (255.0, "0..1"), (-5.0, "0..1")])
def test_float_arrays_with_nan_or_outside_0_to_1_are_refused_not_embedded(model, value, needle):
    """They came back as NaN or meaningless embeddings; files and PIL images were already checked."""
    images = np.full((2, 28, 28), 0.5, np.float32)
    images[1, 3, 4] = value
    for batch in (images, torch.from_numpy(images)):
        with pytest.raises(ParameterError, match=needle):
            model.embed(batch)
    assert model.embed(np.clip(images, 0, 1) if np.isfinite(value) else images[:1]).isfinite().all()


def test_an_unreadable_image_is_a_user_error_naming_it(model, tmp_path):
    junk = tmp_path / "junk.png"
    junk.write_bytes(b"not an image at all")
    with pytest.raises(UserError, match="junk.png"):
        model.embed([junk])
    with pytest.raises(UserError, match="missing.png"):
        model.embed(tmp_path / "missing.png")
    with pytest.raises(UserError, match="is a folder, not an image file"):  # not "[Errno 21] Is a directory"
        model.embed(tmp_path)


def test_fingerprint_survives_a_resave_and_changes_with_any_weight(checkpoint, tmp_path):
    state = load_checkpoint(checkpoint)
    resaved = tmp_path / "resaved.pt"
    save_checkpoint(resaved, {**{k: v for k, v in state.items() if k != "format"}, "epoch": 99, "optimizer": {}})
    assert resaved.read_bytes() != checkpoint.read_bytes()
    assert load_model(resaved).fingerprint == load_model(checkpoint).fingerprint == weights_fingerprint(state["model"])
    changed = dict(state["model"])
    changed["head.bias"] = changed["head.bias"].clone()
    changed["head.bias"][0] += 1e-6
    assert weights_fingerprint(changed) != weights_fingerprint(state["model"])


def test_verify_with_a_given_threshold(model, test_images):
    same = model.verify(test_images[0], test_images[0], threshold=0.5)
    assert same.same and same.distance < 1e-5 and same.threshold_source == "given"
    e = model.embed(test_images[:2])
    expected = float((e[0] - e[1]).norm())
    below = model.verify(test_images[0], test_images[1], threshold=expected * 0.99)
    above = model.verify(test_images[0], test_images[1], threshold=expected * 1.01)
    assert below.distance == pytest.approx(expected, abs=1e-6)
    assert (below.same, above.same) == (False, True)
    with pytest.raises(ParameterError, match="threshold"):
        model.verify(test_images[0], test_images[1], threshold=-1.0)


def test_without_threshold_or_calibration_verify_says_how_to_calibrate(model, test_images):
    assert model.threshold is None
    with pytest.raises(UserError, match="tripletnet evaluate --checkpoint"):
        model.verify(test_images[0], test_images[1])


def test_calibration_is_written_read_and_used(checkpoint, test_images, tmp_path):
    copy = tmp_path / "copy.pt"
    copy.write_bytes(checkpoint.read_bytes())
    data = {"dataset": "mnist", "split": "test", "images": 10000, "pairs": 49995000}
    path = write_calibration(copy, threshold=0.75, far=1e-3, far_reached=9.8e-4, val=0.9, data=data)
    assert path == calibration_path(copy) and path.name == "copy.pt.calibration.json"
    model = load_model(copy, log=lambda _: None)
    calibration = model.threshold
    assert (calibration.threshold, calibration.far, calibration.data) == (0.75, 1e-3, data)
    result = model.verify(test_images[0], test_images[1])
    assert result.threshold == 0.75 and result.far == 1e-3 and result.same == (result.distance <= 0.75)
    assert "FAR 0.001" in result.threshold_source and "mnist" in result.threshold_source


def test_a_calibration_of_other_weights_is_refused(checkpoint, tmp_path):
    copy = tmp_path / "copy.pt"
    copy.write_bytes(checkpoint.read_bytes())
    write_calibration(copy, threshold=0.75, far=1e-3, data={}, fingerprint="0" * 64)
    model = load_model(copy)
    with pytest.raises(UserError, match="other weights"):
        _ = model.threshold


def test_search_finds_the_brute_force_neighbours(model):
    images = mnist().test_images
    gallery, queries = images[:300], images[300:320]
    found = model.search(gallery, queries, k=5)
    distances = torch.cdist(model.embed(queries), model.embed(gallery))
    expected = distances.topk(5, largest=False)
    torch.testing.assert_close(found.distances, expected.values, atol=1e-5, rtol=0)
    assert torch.equal(found.indices, expected.indices)
    with pytest.raises(ParameterError, match="^gallery holds no images"):  # the argument given, not an inner one
        model.search([], queries, k=1)


def _run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_verify_cli_prints_the_decision_and_exits_0_either_way(checkpoint, test_images, tmp_path, capsys):
    a, b = _png(tmp_path / "a.png", test_images[0]), _png(tmp_path / "b.png", test_images[1])
    decisions = set()
    for threshold in ("0", "2"):
        code, out, err = _run(capsys, "verify", "--checkpoint", checkpoint, a, b, "--threshold", threshold, "--json")
        assert code == 0, err
        result = json.loads(out)
        assert {"distance", "same", "threshold", "threshold_source"} <= result.keys()
        decisions.add(result["same"])
    assert decisions == {True, False}
    code, out, err = _run(capsys, "verify", "--checkpoint", checkpoint, a, b, "--threshold", "2")
    assert code == 0 and out.startswith("same: distance")


def test_verify_cli_mistakes_are_one_line_exit_2(checkpoint, test_images, tmp_path, capsys):
    a = _png(tmp_path / "a.png", test_images[0])
    junk = tmp_path / "junk.png"
    junk.write_bytes(b"\x89PNG broken")
    for argv, expected in [
        ((a, a), "tripletnet evaluate --checkpoint"),
        ((a, junk, "--threshold", "1"), "junk.png"),
        ((a, tmp_path / "nope.png", "--threshold", "1"), "nope.png"),
        ((a, a, "--threshold", "-1"), "--threshold"),
    ]:
        code, out, err = _run(capsys, "verify", "--checkpoint", checkpoint, *argv)
        assert code == 2 and out == ""
        assert len(err.strip().splitlines()) == 1 and expected in err, err


def test_the_documented_python_example_runs(checkpoint, test_images, tmp_path, monkeypatch, capsys):
    from pathlib import Path

    docs = Path(__file__).resolve().parents[1] / "docs" / "guide" / "using-a-model.md"
    (example,) = [block for block in re.findall(r"```python\n(.*?)```", docs.read_text(encoding="utf-8"), flags=re.DOTALL)
                  if "load_model" in block]
    monkeypatch.chdir(tmp_path)
    _png(tmp_path / "a.png", test_images[0])
    _png(tmp_path / "b.png", test_images[1])
    exec(compile(example, str(docs), "exec"), {"CHECKPOINT": str(checkpoint)})  # noqa: S102 - running the documented example is the test
    printed = capsys.readouterr().out.splitlines()
    assert printed[0].endswith("given") and "tensor([[0]])" in printed[1]


def test_evaluate_writes_the_calibration_that_verify_then_uses(tmp_path, capsys, checkpoint, monkeypatch):
    """evaluate -> <checkpoint>.calibration.json -> verify without --threshold uses it, with its provenance.

    evaluate fingerprints the weights it already loaded: write_calibration does not read the checkpoint again."""
    import json as _json
    import shutil

    import tripletnet.inference.model as inference_model
    from tripletnet.api import evaluate
    from tripletnet.cli import main

    from _mnist import data_root

    def second_read(*args, **kwargs):
        raise AssertionError("write_calibration read the checkpoint a second time")

    copied = tmp_path / "model.pt"
    shutil.copy(checkpoint, copied)
    monkeypatch.setattr(inference_model, "load_checkpoint", second_read)
    result = evaluate(checkpoint=copied, data_path=data_root(), clustering=False, log=lambda m: None)
    monkeypatch.undo()
    calibration = _json.loads((tmp_path / "model.pt.calibration.json").read_text())
    assert calibration["fingerprint"] == load_model(copied, log=lambda _: None).fingerprint
    assert calibration["threshold"] == result.verification.threshold and calibration["far"] == 1e-3
    assert calibration["data"]["images"] == 10_000 and calibration["data"]["protocol"] == "all-pairs"
    image = tmp_path / "a.png"
    Image.fromarray(np.zeros((28, 28), dtype=np.uint8)).save(image)
    assert main(["verify", "--checkpoint", str(copied), str(image), str(image), "--json"]) == 0
    answer = _json.loads(capsys.readouterr().out)
    assert answer["threshold"] == calibration["threshold"] and answer["same"] is True


def test_an_image_folder_lists_symlinked_identity_folders_as_training_does_and_no_loop(tmp_path):
    from tripletnet.data.folder import list_image_folder
    from tripletnet.inference.model import list_images

    elsewhere = tmp_path / "elsewhere"
    for folder in ("gallery/id0", "elsewhere/id1", "elsewhere/id2"):
        (tmp_path / folder).mkdir(parents=True)
        Image.new("L", (8, 8)).save(tmp_path / folder / "a.png")
    gallery = tmp_path / "gallery"
    (gallery / "id1").symlink_to(elsewhere / "id1", target_is_directory=True)
    (gallery / "id2").symlink_to(elsewhere / "id2", target_is_directory=True)
    (gallery / "id0" / "up").symlink_to(gallery, target_is_directory=True)  # a loop: a link to a folder above it
    (elsewhere / "id1" / "to2").symlink_to(elsewhere / "id2", target_is_directory=True)
    (elsewhere / "id2" / "to1").symlink_to(elsewhere / "id1", target_is_directory=True)  # a loop through two links

    listed = [path.relative_to(gallery).as_posix() for path in list_images(gallery)]
    assert listed == ["id0/a.png", "id1/a.png", "id1/to2/a.png", "id2/a.png", "id2/to1/a.png"]
    # The identities an index labels its items with are those training finds in the same folder.
    assert {name.split("/")[0] for name in listed} == {entry.identity for entry in list_image_folder(gallery)}


def test_the_arrays_a_notebook_makes_from_pil_images_embed_or_say_how(model, test_images, recwarn):
    picture = Image.fromarray(test_images[0].squeeze().numpy())
    read_only = np.asarray(picture)  # what np.asarray of a PIL image gives: not writable
    assert not read_only.flags.writeable
    assert torch.equal(model.embed(read_only), model.embed(picture))
    assert not [w for w in recwarn if "not writable" in str(w.message)]  # torch warns when it wraps one
    with pytest.raises(ParameterError, match=r"looks like one \(H, W, C\) image.*array\.transpose\(2, 0, 1\)\[None\]"):
        model.embed(np.asarray(picture.convert("RGB")))  # (28, 28, 3), which would be read as 28 images of 28 x 3


@pytest.mark.parametrize("call,needle", [
    (lambda m, x: m.embed(b"a.png"), "got bytes"),
    (lambda m, x: m.embed(5), "got int"),
    (lambda m, x: m.embed(None), "got NoneType"),
    (lambda m, x: m.embed(x, batch_size=1.5), "batch_size must be a whole number of at least 1, got 1.5"),
    (lambda m, x: m.embed(x, batch_size="4"), "batch_size must be a whole number"),
    (lambda m, x: m.search(x, x, k=2.5), "k must be a whole number, got 2.5"),
    (lambda m, x: m.verify(x[0], x[1], threshold=True), "threshold must be a number"),
    (lambda m, x: m.verify(x[0], x[1], threshold="0.5"), "threshold must be a number"),
    (lambda m, x: load_model(123), "checkpoint must be the path of a checkpoint file, got int"),
])
def test_arguments_of_the_wrong_type_are_parameter_errors_naming_them(model, test_images, call, needle):
    with pytest.raises(ParameterError, match=re.escape(needle)):
        call(model, test_images)


def test_a_verification_is_json_whatever_kind_of_number_the_threshold_was(model, test_images):
    answer = model.verify(test_images[0], test_images[1], threshold=np.float32(0.5))
    assert type(answer.same) is bool
    assert str(model.verify(test_images[0], test_images[1], threshold=-0.0).threshold) == "0.0"  # not "-0.0"
    assert json.loads(json.dumps(answer.to_dict()))["threshold"] == 0.5
