"""The training loop on a slice of MNIST: learning, reproducibility, resume, checkpoints, collapse guard."""

import dataclasses
import json

import pytest
import torch
from _mnist import assert_same_state, mnist_slice

from tripletnet.augment import random_affine
from tripletnet.config import TrainConfig
from tripletnet.data import DatasetSplits, stratified_subset
from tripletnet.errors import ParameterError, UserError
from tripletnet.evaluation import fast_epoch_metrics
from tripletnet.models import build_network, embed_images, images_to_input
from tripletnet.training import (
    loop,
    read_records,
    resolve_device,
    step,
    train,
    validation_loss,
)
from tripletnet.training.checkpoint import load_checkpoint, model_from_checkpoint
from tripletnet.training.validation import draw_validation_triplets

DATA = mnist_slice()


def _config(tmp_path, name="run", **overrides):
    values = {"num_images": 512, "batch_size": 64, "epochs": 3, "eval_every": 0, "num_val_triplets": 64, "checkpoint_path": str(tmp_path / name)}
    values.update(overrides)
    return TrainConfig(**values)


def test_a_few_epochs_lower_the_loss_and_write_every_artifact(tmp_path):
    config = _config(tmp_path, epochs=3, lr=1e-3, mining="semihard", eval_every=3)
    result = train(config, data=DATA, log=lambda _: None)
    history = result.history
    assert [r["epoch"] for r in history] == [1, 2, 3]
    assert history[-1]["val_loss"] < history[0]["val_loss"]
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    run = tmp_path / "run"
    for name in ("epoch_1.pt", "epoch_2.pt", "epoch_3.pt", "last.pt", "config.json", "metrics.jsonl", "losses.png"):
        assert (run / name).is_file(), name
    assert not list(run.glob("*.tmp")), "no temporary files left behind"
    lines = read_records(run / "metrics.jsonl")
    assert lines == json.loads(json.dumps(history)), "metrics.jsonl holds exactly the returned history"
    assert "val" not in lines[0] and "val" not in lines[1], "evaluated every 3 epochs only"
    eval_subset = stratified_subset(DATA.test_labels, len(DATA.test_labels), config.seed)
    expected = fast_epoch_metrics(embed_images(result.model, DATA.test_images[eval_subset]), DATA.test_labels[eval_subset], far=1e-3)
    assert lines[-1]["val"] == expected.to_dict()["val"] and lines[-1]["precision_at_1"] == expected.to_dict()["precision_at_1"]
    assert lines[-1]["precision_at_1"] > 0.5, "three epochs learn far better than chance (0.1)"
    recorded = TrainConfig.from_dict(json.loads((run / "config.json").read_text()))
    assert recorded == dataclasses.replace(config, precision=recorded.precision) and recorded.precision != "auto"


def test_checkpoints_load_with_weights_only_and_hold_the_run_state(tmp_path):
    config = _config(tmp_path, epochs=1)
    result = train(config, data=DATA, log=lambda _: None)
    state = torch.load(tmp_path / "run" / "epoch_1.pt", weights_only=True)
    resolved = dataclasses.replace(config, precision=result.config.precision)  # "auto" becomes what this CPU runs
    assert result.config.precision in ("fp32", "bf16")
    assert state["epoch"] == 1 and state["config"] == resolved.to_dict()
    assert state["input_shape"] == [1, 28, 28]
    assert state["history"] == result.history
    for key, value in result.model.state_dict().items():
        assert torch.equal(state["model"][key], value), key
    steps = config.num_images // config.batch_size
    assert {int(s["step"]) for s in state["optimizer"]["state"].values()} == {steps}, "Adam state after every step of the epoch"
    assert state["scheduler"]["last_epoch"] == 1
    assert "torch_rng" not in state, "training never reads torch's global RNG, so the checkpoint does not pretend to restore it"
    rebuilt, rebuilt_config = model_from_checkpoint(state)
    assert rebuilt_config == resolved
    images = DATA.test_images[:16]
    # Equal weights; the trained model runs channels-last, whose summation order differs in the last bits.
    torch.testing.assert_close(embed_images(rebuilt, images), embed_images(result.model, images), rtol=1e-5, atol=1e-6)


def test_compiled_training_steps_train_the_same_network_and_save_eager_keys(tmp_path, monkeypatch):
    # Inductor's code generation takes a minute on this CPU; the eager backend still traces every
    # step through dynamo, which is what --compile asks of the training code.
    compiled = []

    def compile_eagerly(module, **_):
        compiled.append(module)
        return torch._dynamo.optimize("eager")(module)

    monkeypatch.setattr(torch, "compile", compile_eagerly)
    plain = train(_config(tmp_path, "plain", epochs=1, num_images=256, precision="fp32"), data=DATA, log=lambda _: None)
    result = train(_config(tmp_path, epochs=1, num_images=256, precision="fp32", compile=True), data=DATA, log=lambda _: None)
    assert compiled == [result.model]
    state = torch.load(tmp_path / "run" / "last.pt", weights_only=True)
    assert state["model"].keys() == plain.model.state_dict().keys()  # no _orig_mod. prefix
    for key, value in plain.model.state_dict().items():
        torch.testing.assert_close(state["model"][key], value, rtol=1e-4, atol=1e-5, msg=key)


def test_training_neither_reads_nor_changes_torchs_global_rng(tmp_path):
    torch.manual_seed(123)
    before = torch.get_rng_state()
    a = train(_config(tmp_path, "a", epochs=1), data=DATA, log=lambda _: None)
    assert torch.equal(torch.get_rng_state(), before)
    torch.manual_seed(456)
    b = train(_config(tmp_path, "b", epochs=1), data=DATA, log=lambda _: None)
    assert [r["train_loss"] for r in a.history] == [r["train_loss"] for r in b.history]


def test_same_seed_same_losses_other_seed_other_losses(tmp_path):
    a = train(_config(tmp_path, "a", epochs=2), data=DATA, log=lambda _: None).history
    b = train(_config(tmp_path, "b", epochs=2), data=DATA, log=lambda _: None).history
    c = train(_config(tmp_path, "c", epochs=2, seed=1), data=DATA, log=lambda _: None).history
    assert [r["train_loss"] for r in a] == [r["train_loss"] for r in b]
    assert [r["val_loss"] for r in a] == [r["val_loss"] for r in b]
    assert [r["train_loss"] for r in a] != [r["train_loss"] for r in c]


def test_resume_ends_where_the_uninterrupted_run_ends(tmp_path):
    # lr drop after epoch 2 and a miner switch inside the run, so both must survive the resume.
    options = {"epochs": 4, "lr_drop_epoch": 2, "mining": "semihard:0.5,hard", "augment": True}
    full = train(_config(tmp_path, "full", **options), data=DATA, log=lambda _: None)
    torch.manual_seed(999)  # a different global RNG: resuming must not depend on it
    resumed = train(_config(tmp_path, "resumed", **options), resume=tmp_path / "full" / "epoch_2.pt", data=DATA, log=lambda _: None)
    assert [r["epoch"] for r in resumed.history] == [1, 2, 3, 4]
    assert [r["train_loss"] for r in resumed.history] == [r["train_loss"] for r in full.history]
    lr = resumed.config.lr
    assert [r["lr"] for r in resumed.history] == pytest.approx([lr, lr, lr * 0.1, lr * 0.1])
    assert_same_state(full.model.state_dict(), resumed.model.state_dict())
    last = load_checkpoint(tmp_path / "resumed" / "last.pt")
    assert last["epoch"] == 4
    lines = (tmp_path / "resumed" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2, 3, 4], "no duplicated or missing records"


def test_an_existing_run_is_never_overwritten_silently(tmp_path):
    train(_config(tmp_path, epochs=1), data=DATA, log=lambda _: None)
    before = (tmp_path / "run" / "last.pt").read_bytes()
    with pytest.raises(UserError, match="already holds a run"):
        train(_config(tmp_path, epochs=1, seed=5), data=DATA, log=lambda _: None)
    assert (tmp_path / "run" / "last.pt").read_bytes() == before
    train(_config(tmp_path, epochs=1, seed=5), overwrite=True, data=DATA, log=lambda _: None)
    assert (tmp_path / "run" / "last.pt").read_bytes() != before


def test_collapse_is_reported_loudly(tmp_path, monkeypatch):
    monkeypatch.setattr(loop, "is_collapsed", lambda stats, margin: True)
    messages = []
    result = train(_config(tmp_path, epochs=1), data=DATA, log=messages.append)
    assert result.history[0]["collapsed"] is True
    assert any("COLLAPSED" in m for m in messages)
    record = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[0])
    assert record["collapsed"] is True


def test_too_few_images_for_a_batch_is_a_user_error_and_writes_nothing(tmp_path):
    with pytest.raises(UserError, match="num_images"):
        train(_config(tmp_path, num_images=32, batch_size=64), data=DATA, log=lambda _: None)
    assert not (tmp_path / "run").exists()


def test_random_affine_keeps_digits_recognisable_and_varies_per_image():
    gen = torch.Generator().manual_seed(0)
    images = mnist_slice(64, 1).train_images[:64].unsqueeze(1).float() / 255
    out = random_affine(images, gen)
    assert out.shape == images.shape and 0 <= float(out.min()) and float(out.max()) <= 1 + 1e-6
    change = (out - images).abs().flatten(1).mean(1)
    assert (change > 0).all(), "every image is transformed"
    assert change.std() > 0, "by its own amount"
    # Small transforms: the ink mass stays within 25% (scale is at most ±10%).
    ratio = out.flatten(1).sum(1) / images.flatten(1).sum(1)
    assert ((ratio > 0.75) & (ratio < 1.3)).all()
    identity = random_affine(images, gen, max_degrees=0, max_scale=0, max_shift=0)
    torch.testing.assert_close(identity, images, atol=1e-5, rtol=0)


def test_bf16_training_lowers_the_validation_loss_every_epoch(tmp_path):
    config = _config(tmp_path, epochs=2, lr=1e-3, mining="semihard", precision="bf16")
    result = train(config, data=DATA, log=lambda _: None)
    triplets = draw_validation_triplets(DATA.test_labels, config.num_val_triplets, config.seed)
    torch.manual_seed(config.seed)
    untrained = build_network(config.network, config.embedding_dim)  # the run's initial weights
    losses = [validation_loss(untrained, DATA.test_images, triplets, config.margin)] + [r["val_loss"] for r in result.history]
    assert losses[2] < losses[1] < losses[0]
    assert all(torch.isfinite(p).all() for p in result.model.parameters())


def test_validation_loss_is_the_mean_hinge_with_the_margin(tmp_path):
    torch.manual_seed(0)
    model = build_network("reference", 8).eval()
    triplets = draw_validation_triplets(DATA.test_labels, 40, seed=0)
    with torch.no_grad():
        emb = model(images_to_input(DATA.test_images[triplets.flatten()])).view(40, 3, -1)
    d_ap = (emb[:, 0] - emb[:, 1]).norm(dim=1)
    d_an = (emb[:, 0] - emb[:, 2]).norm(dim=1)
    for margin in (0.0, 0.3, 3.0):  # 3 exceeds any distance between unit vectors: every hinge is active
        expected = float(torch.relu(d_ap - d_an + margin).mean())
        assert validation_loss(model, DATA.test_images, triplets, margin) == pytest.approx(expected, abs=1e-6)
    assert validation_loss(model, DATA.test_images, triplets, 3.0) == pytest.approx(float((d_ap - d_an).mean()) + 3.0, abs=1e-6)


def test_devices_resolve_and_a_missing_one_names_the_parameter():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ParameterError, match="device must be one of auto, cpu, cuda, mps") as caught:
        resolve_device("tpu")
    assert caught.value.parameter == "device"
    if not torch.cuda.is_available():
        with pytest.raises(ParameterError, match="no cuda device"):
            resolve_device("cuda")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine: the GPU training path is tested where one exists")
def test_a_cuda_run_trains_and_its_checkpoint_loads_on_the_cpu(tmp_path):
    result = train(_config(tmp_path, epochs=1, device="cuda"), data=DATA, log=lambda _: None)
    assert next(result.model.parameters()).device.type == "cuda"
    model, _ = model_from_checkpoint(load_checkpoint(tmp_path / "run" / "last.pt"))
    assert next(model.parameters()).device.type == "cpu"


def test_colour_images_of_another_size_train_and_the_checkpoint_rebuilds_the_model(tmp_path):
    gen = torch.Generator().manual_seed(0)
    labels = torch.arange(256) % 4
    # Four classes told apart by which colour channel is bright: learnable in one epoch.
    images = torch.randint(0, 60, (256, 3, 20, 24), dtype=torch.uint8, generator=gen)
    images[labels < 3, labels[labels < 3]] += 150
    colour = DatasetSplits(images[:192], labels[:192], images[192:], labels[192:], class_names=("r", "g", "b", "dark"), name="colour")
    result = train(_config(tmp_path, num_images=128, batch_size=32, epochs=1, augment=False), data=colour, log=lambda _: None)
    assert result.model.input_shape == (3, 20, 24)
    state = load_checkpoint(tmp_path / "run" / "last.pt")
    assert state["input_shape"] == [3, 20, 24]
    model, _ = model_from_checkpoint(state)
    for key, value in result.model.state_dict().items():
        assert torch.equal(model.state_dict()[key], value), key
    torch.testing.assert_close(embed_images(model, images[192:]), embed_images(result.model, images[192:]), rtol=1e-5, atol=1e-6)


def test_collapsing_hard_mining_is_undone_and_training_continues_semi_hard(tmp_path, monkeypatch):
    real_step = step.triplet_step

    def collapsing_step(embeddings, labels, miner, margin):
        loss, stats = real_step(embeddings, labels, miner, margin)
        if miner == "hard":  # pretend every hard-mining batch has collapsed
            stats.embedding_spread = 0.01
        return loss, stats

    monkeypatch.setattr(step, "triplet_step", collapsing_step)
    messages = []
    options = {"epochs": 4, "mining": "semihard:0.5,hard"}
    result = train(_config(tmp_path, **options), data=DATA, log=messages.append)
    assert [r["miner"] for r in result.history] == ["semihard"] * 4
    assert [r["mining_fallback"] for r in result.history] == [False, False, True, True]
    (note,) = [m for m in messages if "epoch 3" in m and "shrank" in m]
    assert "redone with semihard" in note and note == note.lower()  # said calmly: no capitals
    assert load_checkpoint(tmp_path / "run" / "epoch_3.pt")["mining_fallback_epoch"] == 3
    # A run resumed after the fallback keeps it.
    resumed = train(_config(tmp_path, "resumed", **options), resume=tmp_path / "run" / "epoch_3.pt", data=DATA, log=lambda _: None)
    assert resumed.history[-1]["miner"] == "semihard" and resumed.history[-1]["mining_fallback"]
    assert [r["train_loss"] for r in resumed.history] == [r["train_loss"] for r in result.history]
    # Without the fallback, hard mining goes on.
    kept = train(_config(tmp_path, "kept", collapse_fallback=False, **options), data=DATA, log=lambda _: None)
    assert [r["miner"] for r in kept.history] == ["semihard", "semihard", "hard", "hard"]


def test_precision_auto_takes_bf16_only_where_the_hardware_has_it(monkeypatch, tmp_path):
    """Emulated bf16 is several times slower than fp32 (an AVX2-only CPU): auto must not pick it there."""
    import torch

    from tripletnet.config import TrainConfig
    from tripletnet.training import loop

    cpu = torch.device("cpu")
    monkeypatch.setattr(loop, "native_bf16", lambda device: False)
    assert loop.resolve_precision(TrainConfig(), cpu).precision == "fp32"
    monkeypatch.setattr(loop, "native_bf16", lambda device: True)
    assert loop.resolve_precision(TrainConfig(), cpu).precision == "bf16"
    assert loop.resolve_precision(TrainConfig(precision="fp32"), cpu).precision == "fp32"  # explicit wins
    monkeypatch.undo()
    fake = tmp_path / "cpuinfo"
    fake.write_text("flags\t\t: fpu avx2 avx512f avx512_bf16\n")
    real_path = loop.Path
    monkeypatch.setattr(loop, "Path", lambda p: real_path(fake) if p == "/proc/cpuinfo" else real_path(p))
    assert loop.native_bf16(cpu) is True
    fake.write_text("flags\t\t: fpu avx2 avx512f\n")
    assert loop.native_bf16(cpu) is False


def test_fp32_on_a_gpu_turns_cudnn_tf32_off_for_the_block_and_restores_it():
    import torch

    from tripletnet.models import ieee_float32

    before = torch.backends.cudnn.allow_tf32
    try:
        torch.backends.cudnn.allow_tf32 = True  # cuDNN's default
        with ieee_float32(torch.device("cuda")):
            assert torch.backends.cudnn.allow_tf32 is False
        assert torch.backends.cudnn.allow_tf32 is True
        with pytest.raises(ValueError), ieee_float32(torch.device("cuda", 0)):
            raise ValueError  # restored on an error too
        assert torch.backends.cudnn.allow_tf32 is True
        with ieee_float32(torch.device("cpu")):  # nothing to change on a CPU
            assert torch.backends.cudnn.allow_tf32 is True
    finally:
        torch.backends.cudnn.allow_tf32 = before


def test_auto_precision_counts_a_gpu_bf16_only_where_it_is_not_emulated(monkeypatch):
    """A V100 or T4 (compute capability 7.x) emulates bf16, though is_bf16_supported() says yes."""
    import torch

    from tripletnet.training import loop

    monkeypatch.undo()  # the real rule, not conftest's CPU default
    asked = []

    def capability(device):
        asked.append(device)
        return capabilities[device.index or 0]

    capabilities = {0: (7, 0), 1: (9, 0)}
    monkeypatch.setattr(torch.cuda, "get_device_capability", capability)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert loop.native_bf16(torch.device("cuda", 0)) is False
    assert loop.native_bf16(torch.device("cuda", 1)) is True  # the device asked about, not the current one
    assert [d.index for d in asked] == [0, 1]


def test_flip_mirrors_about_the_probability_asked_and_nothing_else_changes():
    images = torch.rand(400, 1, 12, 12)
    mirrored = random_affine(images, torch.Generator().manual_seed(1), max_degrees=0, max_scale=0, max_shift=0, flip=0.5)
    is_mirror = torch.isclose(mirrored, images.flip(-1), atol=1e-5).flatten(1).all(1)
    is_same = torch.isclose(mirrored, images, atol=1e-5).flatten(1).all(1)
    assert bool((is_mirror ^ is_same).all())  # each image exactly mirrored or untouched
    assert 150 < int(is_mirror.sum()) < 250
    # flip=0 draws nothing extra: the same transforms as a run that never had the option.
    plain = random_affine(images, torch.Generator().manual_seed(2))
    assert torch.equal(plain, random_affine(images, torch.Generator().manual_seed(2), flip=0.0))


def test_cosine_schedule_starts_at_lr_and_ends_at_the_drop_factor_along_a_half_cosine():
    from tripletnet.training.loop import _epoch_lr_lambda

    config = TrainConfig(epochs=5, lr_schedule="cosine", lr_drop_factor=0.1)
    factors = [_epoch_lr_lambda(config)(finished) for finished in range(5)]
    assert factors[0] == pytest.approx(1.0) and factors[-1] == pytest.approx(0.1)
    assert factors[2] == pytest.approx(0.55)  # halfway: the mean of both ends
    assert all(a > b for a, b in zip(factors, factors[1:]))
    with pytest.raises(ParameterError, match="lr_schedule"):
        TrainConfig(lr_schedule="linear").validate()  # type: ignore[arg-type]


def test_elastic_fields_are_smooth_and_scaled_by_alpha():
    from tripletnet.augment import draw_elastic

    small = draw_elastic(64, 28, 28, torch.Generator().manual_seed(0), alpha=10.0)
    large = draw_elastic(64, 28, 28, torch.Generator().manual_seed(0), alpha=30.0)
    assert small.shape == (64, 28, 28, 2)
    assert torch.allclose(large, 3 * small, atol=1e-6)  # same draws, three times the alpha
    # Smooth: neighbouring pixels move almost together, unlike independent per-pixel noise.
    neighbour = (small[:, :, 1:] - small[:, :, :-1]).abs().mean()
    assert neighbour < 0.2 * small.abs().mean()
    identity = torch.eye(2, 3).expand(3, 2, 3)
    images = torch.rand(3, 1, 28, 28)
    from tripletnet.augment import apply_affine
    assert torch.allclose(apply_affine(images, identity, torch.zeros(3, 28, 28, 2)), apply_affine(images, identity), atol=0)


def test_stroke_variation_thickens_or_thins_with_the_probability_asked():
    from tripletnet.augment import vary_stroke

    images = torch.zeros(3, 1, 9, 9)
    images[:, :, 4, 2:7] = 1.0  # a one-pixel-wide horizontal stroke
    out = vary_stroke(images, torch.tensor([0.1, 0.3, 0.9]), probability=0.5)
    assert out[0].sum() == 21  # thickened: 3 rows of 7
    assert out[1].sum() == 0  # thinned away: the stroke was one pixel wide
    assert torch.equal(out[2], images[2])


def test_random_erasing_blanks_one_rectangle_within_the_area_range_with_the_probability_asked():
    from tripletnet.augment import ERASED_AREA, draw_erasing, erase

    boxes = draw_erasing(2000, 32, 32, torch.Generator().manual_seed(1), probability=0.3)
    top, bottom, left, right = boxes.unbind(1)
    erased = bottom > top
    assert 0.26 < erased.float().mean() < 0.34
    area = ((bottom - top) * (right - left))[erased].float() / (32 * 32)
    assert area.min() >= ERASED_AREA[0] * 0.7 and area.max() <= ERASED_AREA[1] * 1.3  # rounding to whole pixels
    assert (top >= 0).all() and (bottom <= 32).all() and (left >= 0).all() and (right <= 32).all()
    images = torch.ones(4, 3, 8, 8)
    out = erase(images, torch.tensor([[1, 3, 2, 6], [0, 0, 0, 5], [0, 8, 0, 8], [7, 8, 7, 8]]))
    assert out[0].sum() == 3 * (64 - 2 * 4) and (out[0, :, 1:3, 2:6] == 0).all()
    assert torch.equal(out[1], images[1])  # an empty rectangle leaves the image whole
    assert out[2].sum() == 0 and out[3].sum() == 3 * 63


def test_an_augmented_step_without_the_new_kinds_draws_what_the_affine_transform_always_drew():
    from tripletnet.training.step import augment

    images = torch.rand(8, 1, 28, 28)
    expected = random_affine(images, torch.Generator().manual_seed(4))
    assert torch.equal(augment(images, TrainConfig(), torch.Generator().manual_seed(4)), expected)
    for kind in ({"elastic": 34.0}, {"stroke": 0.5}, {"erasing": 0.5}):
        assert not torch.equal(augment(images, TrainConfig(**kind), torch.Generator().manual_seed(4)), expected), kind


def test_augmentation_sizes_come_from_the_config_and_zero_turns_each_off():
    from tripletnet.augment import apply_affine, draw_affine
    from tripletnet.training.step import augment

    images = torch.rand(64, 1, 28, 28)
    unmoved = augment(images, TrainConfig(rotation=0, scaling=0, shift=0), torch.Generator().manual_seed(5))
    assert torch.allclose(unmoved, images, atol=1e-5)
    # Shifts only (the "shift augmentation" rows of the README's table of runs): identity linear part.
    theta = draw_affine(64, 28, 28, torch.Generator().manual_seed(5), 0.0, 0.0, 2.0)
    assert torch.allclose(theta[:, :, :2], torch.eye(2).expand(64, 2, 2), atol=1e-6)
    assert 0 < theta[:, :, 2].abs().max() <= 2 * 2 / 28 + 1e-6 and theta[:, :, 2].abs().min() < theta[:, :, 2].abs().max()
    shifted = augment(images, TrainConfig(rotation=0, scaling=0, shift=2), torch.Generator().manual_seed(5))
    assert torch.equal(shifted, apply_affine(images, theta))
    wider = augment(images, TrainConfig(rotation=30, scaling=0.3), torch.Generator().manual_seed(5))
    default = augment(images, TrainConfig(), torch.Generator().manual_seed(5))
    assert (wider - images).abs().mean() > (default - images).abs().mean()
    for name, value in (("rotation", -1.0), ("rotation", 181.0), ("scaling", 1.0), ("shift", float("nan"))):
        with pytest.raises(ParameterError, match=name):
            TrainConfig(**{name: value}).validate()


def test_settings_that_repeat_images_in_a_batch_or_in_the_memory_train_with_a_note(tmp_path):
    # 128 images of 10 classes (about 13 each): --images_per_class 16 gives 4 classes 16 images each
    # a batch, more than each class has; 256 queued embeddings are twice what an epoch makes.
    lines: list[str] = []
    train(_config(tmp_path, num_images=128, epochs=1, images_per_class=16, xbm_size=256), data=DATA, log=lines.append)
    notes = [line for line in lines if line.startswith("note:")]
    assert any("training classes have fewer than the 16 images a batch takes" in line for line in notes), notes
    assert any("--xbm_size 256 is more than the 128 embeddings an epoch makes" in line for line in notes), notes
    lines.clear()
    train(_config(tmp_path, name="fits", num_images=128, epochs=1, xbm_size=128), data=DATA, log=lines.append)
    assert not [line for line in lines if line.startswith("note:")], lines


def test_more_threads_than_cores_trains_and_says_it_slows(tmp_path, monkeypatch):
    import os

    monkeypatch.setattr(os, "sched_getaffinity", lambda _pid: {0}, raising=False)  # as if this process had one core
    previous = torch.get_num_threads()
    lines: list[str] = []
    try:
        train(_config(tmp_path, num_images=128, epochs=1, threads=2), data=DATA, log=lines.append)
    finally:
        torch.set_num_threads(previous)
    assert sum("note: --threads 2 is more than the 1 CPU core this process" in line for line in lines) == 1, lines
    lines.clear()
    train(_config(tmp_path, name="one", num_images=128, epochs=1, threads=1), data=DATA, log=lines.append)
    torch.set_num_threads(previous)
    assert not any("--threads" in line for line in lines)
