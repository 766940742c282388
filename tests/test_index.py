"""The faiss gallery index: exact against scikit-learn, HNSW and IVF recall, atomic folders, refusals; index/search CLI."""

import json

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.neighbors import NearestNeighbors

from tripletnet.cli import main
from tripletnet.errors import ParameterError, UserError
from tripletnet.inference import load_model
from tripletnet.inference.index import GalleryIndex
from tripletnet.training.checkpoint import load_checkpoint, save_checkpoint

from _checkpoint import shared_checkpoint
from _mnist import mnist


def _unit_vectors(n, dim=64, seed=0):
    vectors = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def test_exact_search_matches_scikit_learn_with_euclidean_distances():
    gallery, queries = _unit_vectors(2000, seed=1), _unit_vectors(50, seed=2)
    index = GalleryIndex.build(gallery, fingerprint="f")
    distances, indices = index.search(queries, 7)
    expected_d, expected_i = NearestNeighbors(n_neighbors=7, algorithm="brute").fit(gallery).kneighbors(queries)
    np.testing.assert_allclose(distances, expected_d, atol=1e-5)
    assert np.array_equal(indices, expected_i)


def test_query_batches_do_not_change_results():
    index = GalleryIndex.build(_unit_vectors(500), fingerprint="f")
    queries = torch.from_numpy(_unit_vectors(23, seed=3))
    whole = index.search(queries, 4)
    batched = index.search(queries, 4, batch_size=5)
    assert np.array_equal(whole[1], batched[1]) and np.array_equal(whole[0], batched[0])


def test_hnsw_recall_at_1_against_exact():
    gallery, queries = _unit_vectors(5000, seed=4), _unit_vectors(200, seed=5)
    exact = GalleryIndex.build(gallery, fingerprint="f").search(queries, 1)[1]
    approximate = GalleryIndex.build(gallery, fingerprint="f", kind="hnsw")
    assert approximate.kind == "hnsw"
    recall = float(np.mean(approximate.search(queries, 1)[1] == exact))
    assert recall >= 0.95, recall


def _clustered_vectors(n, clusters=50, seed=0):
    """Unit vectors around a few random centres: the class structure of trained embeddings."""
    rng = np.random.default_rng(seed)
    centres = _unit_vectors(clusters, seed=seed + 100)
    vectors = centres[rng.integers(0, clusters, n)] + 0.06 * rng.standard_normal((n, 64)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def test_ivf_recall_at_1_against_exact_grows_with_nprobe_and_is_exact_with_every_cell():
    gallery, queries = _clustered_vectors(5000, seed=6), _clustered_vectors(200, seed=7)
    exact = GalleryIndex.build(gallery, fingerprint="f").search(queries, 1)[1]
    recalls = {}
    for nprobe in (1, 8, 32, 128):
        approximate = GalleryIndex.build(gallery, fingerprint="f", kind="ivf", nprobe=nprobe)
        # 4 sqrt(5000) = 283 cells would leave k-means fewer than 39 points a cell: 5000 // 39 = 128.
        assert approximate.kind == "ivf" and approximate.extra == {"nlist": 128, "nprobe": nprobe}
        recalls[nprobe] = float(np.mean(approximate.search(queries, 1)[1] == exact))
    assert recalls[1] <= recalls[8] <= recalls[32] <= recalls[128] == 1.0, recalls
    assert recalls[32] >= 0.95, recalls


def test_ivf_settings_survive_save_and_load(tmp_path):
    gallery = _clustered_vectors(2000, seed=8)
    index = GalleryIndex.build(gallery, fingerprint="f", kind="ivf", nlist=20, nprobe=3)
    loaded = GalleryIndex.load(index.save(tmp_path / "gallery"))
    assert (loaded.kind, loaded.index.nlist, loaded.index.nprobe, loaded.extra) == ("ivf", 20, 3, {"nlist": 20, "nprobe": 3})
    queries = _clustered_vectors(20, seed=9)
    assert np.array_equal(loaded.search(queries, 2)[1], index.search(queries, 2)[1])


def test_bad_approximate_settings_are_parameter_errors_naming_them():
    gallery = _unit_vectors(400)
    for settings, parameter in (({"kind": "ivf", "nlist": 11}, "nlist"), ({"kind": "ivf", "nlist": 0}, "nlist"),
                                ({"kind": "ivf", "nprobe": 0}, "nprobe"), ({"kind": "hnsw", "hnsw_m": 0}, "hnsw_m"),
                                ({"kind": "hnsw", "ef_search": 0}, "ef_search")):
        with pytest.raises(ParameterError) as caught:
            GalleryIndex.build(gallery, fingerprint="f", **settings)
        assert caught.value.parameter == parameter


def test_empty_gallery_and_bad_k_are_parameter_errors():
    with pytest.raises(ParameterError, match="empty gallery") as caught:
        GalleryIndex.build(np.zeros((0, 64), dtype=np.float32), fingerprint="f")
    assert caught.value.parameter == "embeddings"
    index = GalleryIndex.build(_unit_vectors(3), fingerprint="f")
    for k in (0, 4):
        with pytest.raises(ParameterError, match="gallery size 3") as caught:
            index.search(_unit_vectors(1), k)
        assert caught.value.parameter == "k"
    with pytest.raises(ParameterError, match="labels"):
        GalleryIndex.build(_unit_vectors(3), fingerprint="f", labels=[1, 2])


def test_save_and_load_round_trip_and_replace_atomically(tmp_path):
    gallery = _unit_vectors(100)
    index = GalleryIndex.build(gallery, fingerprint="abc", labels=list(range(100)), paths=[f"img{i}.png" for i in range(100)])
    folder = index.save(tmp_path / "gallery")
    loaded = GalleryIndex.load(folder, fingerprint="abc")
    assert (loaded.labels, loaded.paths, loaded.fingerprint, loaded.size) == (index.labels, index.paths, "abc", 100)
    queries = _unit_vectors(5, seed=9)
    assert np.array_equal(loaded.search(queries, 3)[1], index.search(queries, 3)[1])
    GalleryIndex.build(gallery[:10], fingerprint="abc").save(folder)  # replaces the old index
    assert GalleryIndex.load(folder).size == 10
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gallery"], "no temporary folders left behind"


def test_a_failed_save_leaves_nothing_behind(tmp_path, monkeypatch):
    import faiss

    def broken(*_args):
        raise OSError("disk full")

    monkeypatch.setattr(faiss, "write_index", broken)
    with pytest.raises(OSError):
        GalleryIndex.build(_unit_vectors(10), fingerprint="f").save(tmp_path / "gallery")
    assert list(tmp_path.iterdir()) == []


def test_loading_with_other_weights_or_from_a_foreign_folder_is_refused(tmp_path):
    folder = GalleryIndex.build(_unit_vectors(10), fingerprint="abc").save(tmp_path / "gallery")
    with pytest.raises(UserError, match="other weights"):
        GalleryIndex.load(folder, fingerprint="def")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(UserError, match="not a tripletnet index"):
        GalleryIndex.load(tmp_path / "other")
    with pytest.raises(UserError, match="not a tripletnet index"):
        GalleryIndex.build(_unit_vectors(10), fingerprint="abc").save(tmp_path / "other")
    assert (tmp_path / "other" / "notes.txt").read_text() == "mine"


# --------------------------------------------------------------------------- CLI


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return shared_checkpoint(tmp_path_factory)


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory):
    """Two test images of each of digits 0-2 as PNG files in class subfolders."""
    root = tmp_path_factory.mktemp("gallery")
    data = mnist()
    for digit in range(3):
        folder = root / str(digit)
        folder.mkdir()
        for n, i in enumerate(torch.nonzero(data.test_labels == digit).flatten()[:2].tolist()):
            Image.fromarray(data.test_images[i].numpy()).save(folder / f"{n}.png")
    return root


def _run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_index_a_folder_then_search_it_as_json(checkpoint, image_folder, tmp_path, capsys):
    out_dir = tmp_path / "gallery"
    code, out, err = _run(capsys, "index", "--checkpoint", checkpoint, "--images", image_folder, "--out", out_dir)
    assert code == 0, err
    assert "indexed 6 embeddings" in out
    code, out, err = _run(capsys, "search", "--index", out_dir, "--queries", image_folder, "-k", "2", "--json")
    assert code == 0, err
    results = json.loads(out)["results"]
    assert len(results) == 6
    model = load_model(checkpoint)
    for result in results:
        nearest = result["neighbours"][0]
        # Each query is itself in the gallery: its nearest neighbour is itself at distance ~0.
        assert nearest["path"] == result["query"] and nearest["distance"] < 1e-3
        assert nearest["label"] == str(image_folder.joinpath(result["query"]).relative_to(image_folder).parts[0])
        second = result["neighbours"][1]
        expected = float((model.embed(result["query"]) - model.embed(second["path"])).norm())
        assert second["distance"] == pytest.approx(expected, abs=1e-4)


def test_index_a_split_with_hnsw_and_search_one_query_as_a_table(checkpoint, image_folder, tmp_path, capsys):
    out_dir = tmp_path / "test-split"
    code, out, err = _run(capsys, "index", "--checkpoint", checkpoint, "--split", "test", "--out", out_dir, "--hnsw")
    assert code == 0, err
    assert "10,000 embeddings" in out and "hnsw" in out
    query = image_folder / "1" / "0.png"
    code, out, err = _run(capsys, "search", "--index", out_dir, "--query", query, "-k", "5")
    assert code == 0, err
    lines = out.strip().splitlines()
    assert lines[0] == f"query {query}" and len(lines) == 7
    assert lines[1].split() == ["rank", "distance", "label", "gallery", "#"]  # column headers


def test_search_with_other_weights_is_refused(checkpoint, image_folder, tmp_path, capsys):
    out_dir = tmp_path / "gallery"
    assert _run(capsys, "index", "--checkpoint", checkpoint, "--images", image_folder, "--out", out_dir)[0] == 0
    state = load_checkpoint(checkpoint)
    state["model"] = {k: (v + 0.01 if v.is_floating_point() else v) for k, v in state["model"].items()}
    other = tmp_path / "other.pt"
    save_checkpoint(other, {k: v for k, v in state.items() if k != "format"})
    code, _, err = _run(capsys, "search", "--index", out_dir, "--query", image_folder / "0" / "0.png", "--checkpoint", other)
    assert code == 2 and "other weights" in err and len(err.strip().splitlines()) == 1


def test_index_and_search_mistakes_are_one_line_exit_2(checkpoint, image_folder, tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    out_dir = tmp_path / "gallery"
    assert _run(capsys, "index", "--checkpoint", checkpoint, "--images", image_folder, "--out", out_dir)[0] == 0
    cases = [
        (("index", "--checkpoint", checkpoint, "--images", empty, "--out", tmp_path / "x"), "holds no images"),
        (
            ("search", "--index", out_dir, "--query", image_folder / "0" / "0.png", "-k", "7"),
            "-k must be between 1 and the gallery size 6",
        ),
        (("search", "--index", empty, "--query", image_folder / "0" / "0.png"), "not a tripletnet index"),
        (("search", "--index", out_dir, "--query", tmp_path / "missing.png"), "missing.png"),
    ]
    for argv, expected in cases:
        code, _, err = _run(capsys, *argv)
        assert code == 2 and expected in err and len(err.strip().splitlines()) == 1, (argv, err)
    assert not (tmp_path / "x").exists()


def test_index_approximate_defaults_to_ivf_and_a_bad_nlist_names_the_flag(checkpoint, image_folder, tmp_path, capsys):
    out_dir = tmp_path / "ivf"
    code, out, err = _run(capsys, "index", "--checkpoint", checkpoint, "--images", image_folder, "--out", out_dir,
                          "--approximate")
    assert code == 0, err
    assert "(ivf)" in out
    meta = json.loads((out_dir / "meta.json").read_text())
    assert (meta["kind"], meta["nlist"], meta["nprobe"]) == ("ivf", 1, 1)  # 6 images: one cell, searched whole
    code, out, err = _run(capsys, "search", "--index", out_dir, "--query", image_folder / "0" / "0.png", "-k", "6", "--json")
    assert code == 0, err
    assert len(json.loads(out)["results"][0]["neighbours"]) == 6
    code, _, err = _run(capsys, "index", "--checkpoint", checkpoint, "--images", image_folder, "--out", tmp_path / "bad",
                        "--approximate", "ivf", "--nlist", "4")
    assert code == 2 and err.strip().splitlines() == [err.strip()] and "--nlist must be at most 1" in err
    assert not (tmp_path / "bad").exists()


def _without(mapping: dict, key: str) -> dict:
    return {k: v for k, v in mapping.items() if k != key}


EDITS = {  # an index folder edited by hand: each edit, and the words that must name the problem
    "items.json a list": (lambda meta, items: (meta, [1, 2, 3]), "items.json holds a list"),
    "items.json shorter": (lambda meta, items: (meta, {**items, "paths": items["paths"][:-1]}), "items.json has 5 paths for 6"),
    "labels not a list": (lambda meta, items: (meta, {**items, "labels": "0"}), "items.json has str labels"),
    "meta.json a list": (lambda meta, items: ([], items), "no 'tripletnet-index-v1' marker"),
    "fingerprint null": (lambda meta, items: ({**meta, "fingerprint": None}, items), "no weights fingerprint"),
    "no fingerprint": (lambda meta, items: (_without(meta, "fingerprint"), items), "no weights fingerprint"),
    "nprobe lots": (lambda meta, items: ({**meta, "nprobe": "lots"}, items), "nprobe to 'lots'"),
    "size a string": (lambda meta, items: ({**meta, "size": "6"}, items), "meta.json says '6'"),
    "kind unknown": (lambda meta, items: ({**meta, "kind": "magic"}, items), "index kind 'magic'"),
}


@pytest.mark.parametrize("edit", list(EDITS))
def test_search_of_a_hand_edited_index_folder_is_one_line_exit_2_naming_it(checkpoint, image_folder, tmp_path, capsys, edit):
    out_dir = tmp_path / "gallery"
    assert _run(capsys, "index", "--checkpoint", checkpoint, "--images", image_folder, "--out", out_dir, "--approximate",
                "--nlist", "1")[0] == 0
    change, expected = EDITS[edit]
    meta, items = change(json.loads((out_dir / "meta.json").read_text()), json.loads((out_dir / "items.json").read_text()))
    (out_dir / "meta.json").write_text(json.dumps(meta))
    (out_dir / "items.json").write_text(json.dumps(items))
    code, _, err = _run(capsys, "search", "--index", out_dir, "--checkpoint", checkpoint, "--query", image_folder / "0" / "0.png")
    assert code == 2 and len(err.strip().splitlines()) == 1 and str(out_dir) in err and expected in err, err
