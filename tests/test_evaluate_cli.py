"""evaluate and embed from the command line: outputs, and every bad input as a one-line error."""

import json
import random

import numpy as np
import pytest
import torch

from tripletnet.api import load_embeddings, save_embeddings
from tripletnet.cli import main
from tripletnet.config import TrainConfig
from tripletnet.errors import UserError
from tripletnet.training import train
from tripletnet.training.checkpoint import load_checkpoint, save_checkpoint

from _mnist import data_root, mnist_slice


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    run = tmp_path_factory.mktemp("run")
    config = TrainConfig(num_images=512, batch_size=64, epochs=1, eval_every=0, checkpoint_path=str(run), data_path=data_root())
    train(config, data=mnist_slice(), log=lambda _: None)
    return run / "epoch_1.pt"


def _run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_embed_then_evaluate_the_embeddings_as_json(tmp_path, capsys, checkpoint):
    npz = tmp_path / "test.npz"
    code, out, err = _run(capsys, "embed", "--checkpoint", str(checkpoint), "--out", str(npz), "--data_path", data_root())
    assert code == 0, err
    split = load_embeddings(npz)
    assert split.embeddings.shape == (10000, 64) and split.embeddings.dtype == torch.float32
    assert split.labels.dtype == torch.int64 and int(split.labels.max()) == 9
    torch.testing.assert_close(split.embeddings.norm(dim=1), torch.ones(10000))

    code, out, err = _run(capsys, "evaluate", "--embeddings", str(npz), "--json", "--no-clustering")
    assert code == 0, err
    result = json.loads(out)
    for key in ("protocol", "n_pairs", "far", "threshold", "val", "accuracy", "auc", "eer", "positive_mean", "positive_std",
                "negative_mean", "negative_std", "precision_at_1", "r_precision", "map_at_r"):
        assert key in result, key
    assert result["n_pairs"] == 10000 * 9999 // 2
    assert 0 < result["far_reached"] <= 1e-3


def test_evaluate_checkpoint_writes_a_report_folder(tmp_path, capsys, checkpoint):
    out_dir = tmp_path / "report"
    code, out, err = _run(capsys, "evaluate", "--checkpoint", str(checkpoint), "--data_path", data_root(), "--protocol", "pairs",
                          "--repeats", "3", "--out", str(out_dir), "--no-tsne")
    assert code == 0, err
    assert "Target FAR" in out and "VAL" in out and "over 3 draws" in out
    assert "cannot resolve FAR" in out, "512 negatives cannot resolve 1e-3: say so"
    # verify's advice is to calibrate with evaluate: that no threshold was saved, and what would save one, is said
    assert "no threshold was saved for 'tripletnet verify': 512 negative pairs cannot resolve FAR 0.001; give --far 0.002" in err
    metrics = json.loads((out_dir / "metrics.json").read_text())
    assert metrics["protocol"] == "pairs" and metrics["n_pairs"] == 1024 and "nmi" in metrics
    for name in ("distances.png", "roc.png", "losses.png"):
        assert (out_dir / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name


def _assert_one_line_error(code, err, needle):
    assert code == 2
    assert needle in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_missing_and_foreign_files_are_one_line_errors(tmp_path, capsys):
    code, _, err = _run(capsys, "evaluate", "--checkpoint", str(tmp_path / "nope.pt"))
    _assert_one_line_error(code, err, "not found")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(random.Random(0).randbytes(2000))
    code, _, err = _run(capsys, "evaluate", "--checkpoint", str(junk))
    _assert_one_line_error(code, err, "junk.pt")
    plain = tmp_path / "plain.pt"
    torch.save({"weights": torch.zeros(3)}, plain)
    code, _, err = _run(capsys, "evaluate", "--checkpoint", str(plain))
    _assert_one_line_error(code, err, "not a tripletnet checkpoint")


def test_any_damaged_or_foreign_bytes_are_a_user_error_never_a_traceback(tmp_path):
    # Random bytes, bytes behind a pickle header and behind a zip header: some of these break
    # torch's weights-only unpickler with IndexError or KeyError, which must still read as a user error.
    path = tmp_path / "junk.pt"
    for seed in range(150):
        rng = random.Random(seed)
        path.write_bytes((b"", b"\x80\x02", b"PK\x03\x04")[seed % 3] + rng.randbytes(2000))
        with pytest.raises(UserError, match="junk.pt"):
            load_checkpoint(path)
    good = tmp_path / "good.pt"
    save_checkpoint(good, {"epoch": 1, "config": {}, "model": {}})
    path.write_bytes(good.read_bytes()[: len(good.read_bytes()) // 2])  # a truncated checkpoint
    with pytest.raises(UserError, match="junk.pt"):
        load_checkpoint(path)


class _Exploit:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_a_malicious_pickle_is_refused_and_never_runs(tmp_path, capsys):
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pt"
    torch.save({"format": "tripletnet-checkpoint-v1", "payload": _Exploit(str(marker))}, evil)
    for argv in (["evaluate", "--checkpoint", str(evil)], ["embed", "--checkpoint", str(evil), "--out", str(tmp_path / "e.npz")],
                 ["train", "--resume", str(evil), "--checkpoint_path", str(tmp_path / "r")]):
        code, _, err = _run(capsys, *argv)
        _assert_one_line_error(code, err, "evil.pt")
        assert not marker.exists(), "the pickle's payload must not run"


def test_a_checkpoint_of_another_network_is_a_clear_error(tmp_path, capsys, checkpoint):
    state = torch.load(checkpoint, weights_only=True)
    state["config"]["network"] = "wide"
    other = tmp_path / "other.pt"
    # Saved with fresh checksums: an edit that keeps the old ones is refused as damage before the network is built.
    save_checkpoint(other, {k: v for k, v in state.items() if k not in ("format", "weights_sha256", "state_sha256")})
    code, _, err = _run(capsys, "evaluate", "--checkpoint", str(other))
    _assert_one_line_error(code, err, "do not fit network 'wide'")


def test_bad_embeddings_files_are_one_line_errors(tmp_path, capsys):
    lacking = tmp_path / "lacking.npz"
    np.savez(lacking, vectors=np.zeros((4, 2), np.float32))
    code, _, err = _run(capsys, "evaluate", "--embeddings", str(lacking))
    _assert_one_line_error(code, err, "lacks the array(s) embeddings, labels")
    not_npz = tmp_path / "text.npz"
    not_npz.write_text("hello")
    code, _, err = _run(capsys, "evaluate", "--embeddings", str(not_npz))
    _assert_one_line_error(code, err, "text.npz")
    code, _, err = _run(capsys, "evaluate", "--embeddings", str(tmp_path / "missing.npz"))
    _assert_one_line_error(code, err, "not found")
    code, _, err = _run(capsys, "embed", "--checkpoint", str(tmp_path / "x.pt"), "--out", str(tmp_path / "x.txt"))
    _assert_one_line_error(code, err, ".npz")


def test_embeddings_round_trip(tmp_path):
    emb, labels = torch.randn(7, 3), torch.arange(7)
    split = load_embeddings(save_embeddings(tmp_path / "e.npz", emb, labels))
    assert torch.equal(split.embeddings, emb) and torch.equal(split.labels, labels)
    # a network's own output (it requires grad) is saved as it is
    split = load_embeddings(save_embeddings(tmp_path / "g.npz", emb.clone().requires_grad_(), labels.to(torch.int32)))
    assert torch.equal(split.embeddings, emb) and torch.equal(split.labels, labels)


def test_an_npy_array_or_zero_wide_embeddings_are_refused_in_one_line(tmp_path, capsys):
    import numpy as np

    np.save(tmp_path / "plain.npy", np.zeros((10, 4), np.float32))
    code, _, err = _run(capsys, "evaluate", "--embeddings", str(tmp_path / "plain.npy"))
    _assert_one_line_error(code, err, "single .npy array")
    np.savez(tmp_path / "dim0.npz", embeddings=np.zeros((50, 0), np.float32), labels=np.arange(50) % 5)
    code, _, err = _run(capsys, "evaluate", "--embeddings", str(tmp_path / "dim0.npz"))
    _assert_one_line_error(code, err, "dimension 0")


def test_bad_far_and_protocol(tmp_path, capsys):
    code, _, err = _run(capsys, "evaluate", "--embeddings", "x.npz", "--far", "2")
    _assert_one_line_error(code, err, "--far")
    with pytest.raises(SystemExit) as exc:
        main(["evaluate", "--embeddings", "x.npz", "--protocol", "nope"])
    assert exc.value.code == 2


def test_json_output_keeps_file_names_and_is_strict_json(tmp_path, capsys):
    gen = torch.Generator().manual_seed(0)
    labels = torch.arange(120) % 3
    emb = torch.nn.functional.normalize(torch.randn(3, 8, generator=gen)[labels] + torch.randn(120, 8, generator=gen), dim=1)
    npz = save_embeddings(tmp_path / "NaN-Infinity.npz", emb, labels)
    code, out, err = _run(capsys, "evaluate", "--embeddings", str(npz), "--json", "--no-clustering", "--far", "0.5")
    assert code == 0, err
    result = json.loads(out, parse_constant=lambda name: pytest.fail(f"{name} is not JSON"))  # json_safe's nulls
    assert result["source"] == str(npz) and result["source"].endswith("NaN-Infinity.npz")
    assert 0 <= result["threshold"] <= 2 and result["far"] <= 0.5


def test_impossible_pair_counts_and_ignored_options_are_one_line_errors(tmp_path, capsys):
    npz = save_embeddings(tmp_path / "e.npz", torch.randn(40, 4), torch.arange(40) % 4)
    code, _, err = _run(capsys, "evaluate", "--embeddings", str(npz), "--protocol", "pairs", "--n_pairs", "100000000")
    _assert_one_line_error(code, err, "--n_pairs of 100,000,000 needs about 23.8 GiB")
    code, _, err = _run(
        capsys, "evaluate", "--embeddings", str(npz), "--protocol", "pairs", "--repeats", "100000", "--n_pairs", "1000000"
    )
    _assert_one_line_error(code, err, "--repeats x n_pairs")
    code, _, err = _run(capsys, "evaluate", "--embeddings", str(npz), "--n_pairs", "500")
    _assert_one_line_error(code, err, "--n_pairs is not used by protocol 'all-pairs'")
    unit = save_embeddings(tmp_path / "unit.npz", torch.nn.functional.normalize(torch.randn(40, 4), dim=1), torch.arange(40) % 4)
    code, _, err = _run(capsys, "evaluate", "--embeddings", str(unit), "--protocol", "kfold", "--n_pairs", "10")
    _assert_one_line_error(code, err, "--n_pairs must be at least 20 for 10 folds (a positive and a negative pair in each)")
    code, _, err = _run(capsys, "evaluate", "--embeddings", str(npz), "--protocol", "kfold", "--repeats", "3")
    _assert_one_line_error(code, err, "--repeats is not used by protocol 'kfold'")


def test_embeddings_off_the_unit_sphere_get_a_note_and_unit_ones_none(tmp_path, capsys):
    generator = torch.Generator().manual_seed(0)
    labels = torch.arange(200) % 10
    unit = torch.nn.functional.normalize(torch.randn(10, 8, generator=generator)[labels]
                                         + 0.3 * torch.randn(200, 8, generator=generator), dim=1)
    for scale, noted in ((1.0, False), (50.0, True)):
        npz = save_embeddings(tmp_path / f"x{scale:g}.npz", unit * scale, labels)
        code, _, err = _run(capsys, "evaluate", "--embeddings", str(npz), "--no-clustering", "--json")
        assert code == 0
        assert ("not L2-normalised (norms 50 to 50)" in err) is noted, err


def test_evaluate_out_holds_this_evaluations_report_alone_and_a_failed_one_leaves_no_new_folder(tmp_path, capsys,
                                                                                                 monkeypatch):
    import tripletnet.api as api

    generator = torch.Generator().manual_seed(0)
    labels = torch.arange(300) % 10
    emb = torch.nn.functional.normalize(torch.randn(10, 8, generator=generator)[labels]
                                        + 0.3 * torch.randn(300, 8, generator=generator), dim=1)
    npz = save_embeddings(tmp_path / "e.npz", emb, labels)
    out = tmp_path / "report"
    out.mkdir()
    for stale in ("tsne.png", "losses.png"):  # figures of an earlier evaluation this one does not draw
        (out / stale).write_bytes(b"old")
    (out / "notes.txt").write_text("mine")
    code, _, err = _run(capsys, "evaluate", "--embeddings", str(npz), "--out", str(out), "--no-tsne", "--no-clustering")
    assert code == 0, err
    assert sorted(p.name for p in out.iterdir()) == ["curves.json", "distances.png", "metrics.json", "notes.txt", "roc.png"]

    def interrupted(*_args, **_kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(api, "evaluate_embeddings", interrupted)
    new = tmp_path / "new-report"
    assert _run(capsys, "evaluate", "--embeddings", str(npz), "--out", str(new), "--no-tsne")[0] == 130
    assert not new.exists(), "the folder this call created, still empty, is removed"


def test_save_embeddings_refuses_what_load_embeddings_would_and_writes_nothing(tmp_path):
    """A probe saved 3 embeddings with 2 labels (and NaN ones) without a word; evaluate then refused the file."""
    from tripletnet.errors import ParameterError

    out = tmp_path / "e.npz"
    for embeddings, labels, said in [
        (torch.randn(3, 4), torch.tensor([0, 1]), "labels must hold one label per embedding (3), got shape (2,)"),
        (torch.randn(3), torch.tensor([0, 1, 2]), "embeddings must be N x D with D > 0, got shape (3,)"),
        (torch.full((2, 4), float("nan")), torch.tensor([0, 1]), "embeddings must be finite"),
        ([[0.0, 1.0]], torch.tensor([0]), "embeddings must be a torch.Tensor"),
    ]:
        with pytest.raises(ParameterError) as caught:
            save_embeddings(out, embeddings, labels)
        assert f"{caught.value.parameter} {caught.value.problem}".startswith(said), caught.value
        assert not out.exists()
