"""One way to reload a run's data: index --split, report, embed and evaluate find a folder or CSV run's images
with the run's own --image_size (here 32, where the folder's default would be 45)."""

from __future__ import annotations

import json

import pytest
import torch

from odd_images import write_odd_folder
from tripletnet.api import load_run_images
from tripletnet.cli import main
from tripletnet.data import load_dataset
from tripletnet.data.types import ImageOptions
from tripletnet.inference.index import GalleryIndex
from tripletnet.training.checkpoint import load_checkpoint

from _checkpoint import train_tiny_on

SIZE = 32


def _quiet(_: str) -> None:
    pass


@pytest.fixture(scope="module", params=["folder", "csv"])
def run(request, tmp_path_factory):
    """(the dataset the run was trained on, its checkpoint) for a folder run and a CSV run at --image_size 32."""
    base = tmp_path_factory.mktemp(request.param)
    root = base / "images"
    files = write_odd_folder(root)
    dataset = root
    if request.param == "csv":
        dataset = base / "list.csv"
        rows = [f"{f.relative_to(base).as_posix()},{f.parent.name},{f.relative_to(root).parts[0]}" for f in files]
        dataset.write_text("path,label,split\n" + "\n".join(rows) + "\n", encoding="utf-8")
    return dataset, train_tiny_on(dataset, base / "run", image_size=SIZE)


def test_the_default_image_size_of_this_data_is_not_the_runs(run):
    """The precondition of every test here: reloading without the run's options gives other pixels."""
    dataset, _ = run
    assert load_dataset(str(dataset), options=ImageOptions()).test_images.shape[-1] != SIZE


def test_the_run_data_reload_with_the_runs_image_size(run):
    dataset, checkpoint = run
    expected = load_dataset(str(dataset), options=ImageOptions(image_size=SIZE))
    reloaded = load_run_images(checkpoint, "test", log=_quiet)
    assert torch.equal(reloaded.images, expected.test_images) and reloaded.images.shape[-1] == SIZE


def test_index_split_test_indexes_the_runs_test_images(run, tmp_path, capsys):
    dataset, checkpoint = run
    assert main(["index", "--checkpoint", str(checkpoint), "--split", "test", "--out", str(tmp_path / "gallery")]) == 0
    assert "indexed 18 embeddings of the test split" in capsys.readouterr().out
    index = GalleryIndex.load(tmp_path / "gallery")
    assert index.size == 18
    query = next(dataset.parent.glob("**/test/*/wide-80x40.png"))
    assert main(["search", "--index", str(tmp_path / "gallery"), "--query", str(query), "-k", "3", "--json"]) == 0
    neighbours = json.loads(capsys.readouterr().out)["results"][0]["neighbours"]
    assert len(neighbours) == 3 and neighbours[0]["label"] == query.parent.name


def test_report_evaluates_the_runs_test_images(run, tmp_path, capsys):
    _, checkpoint = run
    out = tmp_path / "report.html"
    assert main(["report", "--checkpoint", str(checkpoint), "--out", str(out), "--no-tsne"]) == 0
    text = out.read_text(encoding="utf-8")
    assert "(18 images)" in text and f"<th>image_size</th><td>{SIZE}</td>" in text
    assert load_checkpoint(checkpoint)["input"]["image_size"] == SIZE


def test_a_grey_run_reloaded_from_an_rgb_copy_of_its_folder_converts_it_and_embeds_the_same(tmp_path, capsys):
    """embed and evaluate with --data_path at a colour copy: converted with a note (was a conv2d traceback)."""
    import numpy as np
    from PIL import Image

    grey, rgb = tmp_path / "grey", tmp_path / "rgb"
    for source in write_odd_folder(tmp_path / "odd"):  # the same grey pixels, stored grey and as RGB
        relative = source.relative_to(tmp_path / "odd").with_suffix(".png")
        pixels = np.asarray(Image.open(source).convert("L").resize((SIZE, SIZE)))
        for root, image in ((grey, Image.fromarray(pixels, "L")), (rgb, Image.fromarray(np.stack([pixels] * 3, -1), "RGB"))):
            (root / relative).parent.mkdir(parents=True, exist_ok=True)
            image.save(root / relative)
    checkpoint = train_tiny_on(grey, tmp_path / "run")
    assert load_checkpoint(checkpoint)["input_shape"][0] == 1
    for folder, out in ((grey, "grey.npz"), (rgb, "rgb.npz")):
        assert main(["embed", "--checkpoint", str(checkpoint), "--data_path", str(folder), "--out", str(tmp_path / out)]) == 0
    assert "converted to grey" in capsys.readouterr().err
    with np.load(tmp_path / "grey.npz") as a, np.load(tmp_path / "rgb.npz") as b:
        assert np.array_equal(a["embeddings"], b["embeddings"]) and np.array_equal(a["labels"], b["labels"])
    assert main(["evaluate", "--checkpoint", str(checkpoint), "--data_path", str(rgb), "--no-tsne", "--no-clustering"]) == 0


def test_identities_added_to_a_runs_folder_never_let_a_trained_identity_pass_for_unseen(tmp_path):
    """A folder's identities are split by a seeded draw over the list: adding some draws again, and a
    training identity could land in the test split, which evaluate took for unseen and calibrated on."""
    import numpy as np

    from synthetic_images import make_synthetic_dataset, write_identity_images
    from tripletnet.errors import UserError

    root = make_synthetic_dataset(tmp_path / "faces", n_train=8, n_test=0, size=SIZE, split_folders=False).root
    checkpoint = train_tiny_on(root, tmp_path / "run", image_size=SIZE)
    trained = set(load_checkpoint(checkpoint)["split"]["train_classes"])
    refused = 0
    for added in range(8, 20):  # one more identity each time: each a new draw of the split
        write_identity_images(root, added, 5, np.random.default_rng(added), SIZE)
        data = load_dataset(str(root), options=ImageOptions(image_size=SIZE))
        tested = {data.class_names[label] for label in torch.unique(data.test_labels).tolist()}
        notes: list[str] = []
        if tested & trained:
            with pytest.raises(UserError, match=r"changed since .* was trained: its identities were split again") as caught:
                load_run_images(checkpoint, "test", classes="all", log=notes.append)
            assert all(name in str(caught.value) for name in sorted(tested & trained)[:3])
            refused += 1
        else:  # only identities the run never trained on: evaluated, and the new ones said
            reloaded = load_run_images(checkpoint, "test", classes="all", log=notes.append)
            assert len(reloaded.labels) == len(data.test_labels)
            new = tested - trained - set(load_checkpoint(checkpoint)["split"]["test_classes"])
            assert any("new identities" in note and "unseen in training" in note for note in notes) == bool(new)
    assert refused, "no draw put a trained identity into the test split: the test checked nothing"
