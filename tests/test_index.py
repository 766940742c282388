"""The faiss gallery index: exact against scikit-learn, HNSW and IVF recall, atomic folders, refusals; index/search CLI."""

import errno
import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.neighbors import NearestNeighbors

from tripletnet.cli import main
from tripletnet.errors import ParameterError, UserError
from tripletnet.fileio import WriteError
from tripletnet.inference import load_model
from tripletnet.inference.index import HNSW_EF_MAX, HNSW_M_MAX, GalleryIndex
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
                                ({"kind": "hnsw", "ef_search": 0}, "ef_search"),
                                # faiss crashes the process on M = 1 (a segmentation fault while adding vectors)
                                ({"kind": "hnsw", "hnsw_m": 1}, "hnsw_m"),
                                # a C++ exception or faiss' int overflowing (tracebacks), or 16 GB for a search
                                ({"kind": "hnsw", "hnsw_m": HNSW_M_MAX + 1}, "hnsw_m"),
                                ({"kind": "hnsw", "ef_construction": 0}, "ef_construction"),
                                ({"kind": "hnsw", "ef_construction": 2**31}, "ef_construction"),
                                ({"kind": "hnsw", "ef_search": HNSW_EF_MAX + 1}, "ef_search"),
                                ({"kind": "hnsw", "hnsw_m": 2.5}, "hnsw_m"), ({"kind": "ivf", "nlist": True}, "nlist")):
        with pytest.raises(ParameterError) as caught:
            GalleryIndex.build(gallery, fingerprint="f", **settings)
        assert caught.value.parameter == parameter, settings
    assert GalleryIndex.build(gallery, fingerprint="f", kind="hnsw", hnsw_m=2).size == 400  # the least M faiss takes


def test_an_approximate_search_that_finds_fewer_than_k_neighbours_is_refused_not_padded():
    # 5 cells of 200 vectors, one searched: about 40 items per query, where k = 150 asks for more.
    index = GalleryIndex.build(_clustered_vectors(200, seed=10), fingerprint="f", kind="ivf", nlist=5, nprobe=1)
    with pytest.raises(ParameterError, match="larger nprobe") as caught:
        index.search(_clustered_vectors(3, seed=11), 150)
    assert caught.value.parameter == "k" and caught.value.related == ("nprobe",)
    with pytest.raises(ParameterError):  # faiss' padding, -1, would otherwise name the last item
        index.item(-1)


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


# What faiss raises when the disk fills up under its own file writer (seen on a full tmpfs).
FAISS_DISK_FULL = RuntimeError(
    "Error in void faiss::write_index(const Index*, IOWriter*, int) at /project/faiss/impl/index_write.cpp:499: "
    "Error: 'ret == (size * 4)' failed: write error in /x/index.faiss: 8147 != 256000 (No space left on device)"
)


@pytest.mark.parametrize("error", [FAISS_DISK_FULL, OSError(errno.ENOSPC, "No space left on device")],
                         ids=["faiss-runtime-error", "os-error"])
def test_a_full_disk_while_saving_is_a_write_error_and_leaves_the_old_folder_alone(tmp_path, monkeypatch, error):
    import faiss

    old = GalleryIndex.build(_unit_vectors(10), fingerprint="old").save(tmp_path / "gallery")

    def full(*_args):
        raise error

    monkeypatch.setattr(faiss, "write_index", full)
    for target in (tmp_path / "new", old):
        with pytest.raises(WriteError, match=f"cannot write {target}: No space left on device$") as caught:
            GalleryIndex.build(_unit_vectors(10), fingerprint="f").save(target)
        assert caught.value.exit_code == 1  # the system's problem, not the path's
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gallery"], "no temporary or half-written folder"
    assert GalleryIndex.load(old).fingerprint == "old"


def test_a_faiss_error_that_is_no_write_error_passes_through(tmp_path, monkeypatch):
    import faiss

    def bug(*_args):
        raise RuntimeError("don't know how to serialize this type of index")

    monkeypatch.setattr(faiss, "write_index", bug)
    with pytest.raises(RuntimeError, match="serialize"):
        GalleryIndex.build(_unit_vectors(10), fingerprint="f").save(tmp_path / "gallery")
    assert list(tmp_path.iterdir()) == []


def test_files_that_do_not_belong_to_meta_json_are_refused_and_old_folders_still_load(tmp_path):
    index = GalleryIndex.build(_unit_vectors(10), fingerprint="abc", labels=list("abcdefghij"))
    folder = index.save(tmp_path / "gallery")
    other = GalleryIndex.build(_unit_vectors(10, seed=5), fingerprint="xyz", labels=list("jihgfedcba")).save(tmp_path / "o")
    for name in ("index.faiss", "items.json"):  # each the same size and shape as the folder's own
        mixed = tmp_path / f"mixed-{name}"
        shutil.copytree(folder, mixed)
        shutil.copy(other / name, mixed / name)
        with pytest.raises(UserError, match=f"damaged or mixed: its {name} does not belong to its meta.json"):
            GalleryIndex.load(mixed)
    # A folder written before meta.json recorded checksums: loaded as before, with a note.
    meta = json.loads((folder / "meta.json").read_text())
    del meta["sha256"]
    (folder / "meta.json").write_text(json.dumps(meta))
    notes: list[str] = []
    assert GalleryIndex.load(folder, log=notes.append).labels == list("abcdefghij")
    assert len(notes) == 1 and "records no checksums" in notes[0]


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
        # a file where a folder is taken, and the other way round: the flag that takes it is named
        (("search", "--index", out_dir, "--queries", image_folder / "0" / "0.png"), "give the one image"),
        (("search", "--index", out_dir, "--query", image_folder / "0"), "with --queries"),
        (("index", "--checkpoint", checkpoint, "--images", image_folder / "0" / "0.png", "--out", tmp_path / "x"),
         "is a file, not a folder of images"),
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
    "dim wrong": (lambda meta, items: ({**meta, "dim": 3}, items), "index.faiss holds 64-dimensional vectors, meta.json says 3"),
    "items.json {}": (lambda meta, items: (meta, {}), "items.json lacks the labels and paths entries"),
    "no labels entry": (lambda meta, items: (meta, _without(items, "labels")), "items.json lacks the labels entry"),
    "checksums not digests": (lambda meta, items: ({**meta, "sha256": "x"}, items), "not two hex digests"),
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


def test_search_of_an_index_folder_holding_another_networks_index_faiss_is_refused(checkpoint, image_folder, tmp_path,
                                                                                  capsys):
    out_dir = tmp_path / "gallery"
    assert _run(capsys, "index", "--checkpoint", checkpoint, "--images", image_folder, "--out", out_dir)[0] == 0
    # Another network's index of the same gallery: same size and dimension, other vectors.
    other = GalleryIndex.build(_unit_vectors(6, dim=64, seed=12), fingerprint="other").save(tmp_path / "other")
    shutil.copy(other / "index.faiss", out_dir / "index.faiss")
    code, out, err = _run(capsys, "search", "--index", out_dir, "--query", image_folder / "0" / "0.png", "-k", "3")
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1, err
    assert f"index folder {out_dir} is damaged or mixed: its index.faiss does not belong to its meta.json" in err
    assert "rebuild it with 'tripletnet index'" in err


def test_an_index_of_another_dimension_than_the_checkpoint_blames_the_folder_not_the_query(checkpoint, image_folder,
                                                                                          tmp_path, capsys):
    import faiss

    out_dir = tmp_path / "gallery"
    assert _run(capsys, "index", "--checkpoint", checkpoint, "--images", image_folder, "--out", out_dir)[0] == 0
    # An old folder (no checksums) whose index.faiss and meta.json's dim were both replaced: only search can tell.
    small = faiss.IndexFlatL2(16)
    small.add(_unit_vectors(6, dim=16))
    faiss.write_index(small, str(out_dir / "index.faiss"))
    meta = json.loads((out_dir / "meta.json").read_text())
    (out_dir / "meta.json").write_text(json.dumps({**_without(meta, "sha256"), "dim": 16}))
    code, _, err = _run(capsys, "search", "--index", out_dir, "--query", image_folder / "0" / "0.png")
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 2 and "records no checksums" in lines[0], err  # the note, then the error
    assert f"index folder {out_dir} does not match the checkpoint" in lines[1] and "--queries" not in err, err


def test_bad_hnsw_settings_are_refused_before_the_checkpoint_is_read(image_folder, tmp_path, capsys):
    missing = tmp_path / "missing.pt"  # not read: the settings are checked first, before minutes of embedding
    for flags, expected in ((("--hnsw-m", "1"), "--hnsw_m must be between 2 and"),
                            (("--ef-search", "0"), "--ef_search must be between 1 and"),
                            (("--ef-construction", str(2**31)), "--ef_construction must be between 1 and")):
        code, _, err = _run(capsys, "index", "--checkpoint", missing, "--images", image_folder, "--out", tmp_path / "x",
                            "--hnsw", *flags)
        assert code == 2 and len(err.strip().splitlines()) == 1 and expected in err, err
    assert not (tmp_path / "x").exists()


def test_a_setting_of_another_index_kind_is_refused_not_ignored(image_folder, tmp_path, capsys):
    missing = tmp_path / "missing.pt"  # not read: the settings are checked first
    with pytest.raises(SystemExit) as caught:  # two kinds at once: argparse refuses the pair
        _run(capsys, "index", "--checkpoint", missing, "--images", image_folder, "--out", tmp_path / "x",
             "--approximate", "ivf", "--hnsw")
    assert caught.value.code == 2 and "--hnsw: not allowed with argument --approximate" in capsys.readouterr().err
    cases = (([], ("--nlist", "4"), "--nlist applies only to --approximate ivf, the index here is exact"),
             (["--hnsw"], ("--nprobe", "8"), "--nprobe applies only to --approximate ivf"),
             (["--approximate", "ivf"], ("--ef-search", "64"), "--ef_search applies only to --approximate hnsw"))
    for kind, flags, expected in cases:
        code, _, err = _run(capsys, "index", "--checkpoint", missing, "--images", image_folder, "--out", tmp_path / "x",
                            *kind, *flags)
        assert code == 2 and len(err.strip().splitlines()) == 1 and expected in err, err
    assert not (tmp_path / "x").exists()


def test_a_newline_in_a_file_name_stays_on_its_row_of_the_search_table(checkpoint, image_folder, tmp_path, capsys):
    gallery = tmp_path / "odd"
    shutil.copytree(image_folder, gallery)
    odd = gallery / "1" / "two\nlines.png"
    shutil.copy(gallery / "1" / "0.png", odd)
    assert _run(capsys, "index", "--checkpoint", checkpoint, "--images", gallery, "--out", tmp_path / "idx")[0] == 0
    code, out, err = _run(capsys, "search", "--index", tmp_path / "idx", "--query", odd, "-k", "7")
    assert code == 0, err
    rows = out.splitlines()
    assert len(rows) == 2 + 7  # the query line, the header, one row per neighbour
    assert rows[0] == "query " + repr(str(odd))[1:-1]
    assert sum("two\\nlines.png" in row for row in rows[2:]) == 1
    code, out, _ = _run(capsys, "search", "--index", tmp_path / "idx", "--query", odd, "-k", "1", "--json")
    assert json.loads(out)["results"][0]["query"] == str(odd)  # JSON keeps the name as it is


def test_skip_bad_images_leaves_out_and_counts_what_does_not_decode(checkpoint, image_folder, tmp_path, capsys):
    gallery = tmp_path / "damaged"
    shutil.copytree(image_folder, gallery)
    (gallery / "2" / "truncated.png").write_bytes((gallery / "2" / "0.png").read_bytes()[:60])
    code, _, err = _run(capsys, "index", "--checkpoint", checkpoint, "--images", gallery, "--out", tmp_path / "idx")
    assert code == 2 and "truncated.png" in err and len(err.splitlines()) == 1, err  # without the option: one line
    code, out, err = _run(capsys, "index", "--checkpoint", checkpoint, "--images", gallery, "--out", tmp_path / "idx",
                          "--skip_bad_images")
    assert code == 0, err
    assert "indexed 6 embeddings" in out and "skipped 1 unreadable images of 7 (the first: " in err and "truncated.png" in err
    code, out, err = _run(capsys, "search", "--index", tmp_path / "idx", "--queries", gallery, "-k", "1", "--json",
                          "--skip-bad-images")
    assert code == 0, err
    assert len(json.loads(out)["results"]) == 6 and "skipped 1 unreadable images" in err
    code, _, err = _run(capsys, "index", "--checkpoint", checkpoint, "--split", "test", "--out", tmp_path / "idx2",
                        "--skip_bad_images")
    assert code == 2 and "--skip_bad_images applies only to --images" in err, err
