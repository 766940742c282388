"""The protocol registry, the options each protocol declares, and refusals before any work is done."""

import numpy as np
import pytest
import torch

from tripletnet import api
from tripletnet.errors import ParameterError, UserError
from tripletnet.evaluation import (
    PROTOCOLS,
    draw_pairs,
    evaluate_embeddings,
    get_protocol,
    kfold,
    random_pairs,
)
from tripletnet.evaluation.verification.protocols import (
    BYTES_PER_PAIR,
    MAX_PAIRS,
    MAX_REPEATED_PAIRS,
    PAIR_MEMORY_LIMIT,
)

sklearn_metrics = pytest.importorskip("sklearn.metrics")


def _clustered(n=200, classes=4, dim=8, seed=0):
    gen = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % classes
    centres = torch.randn(classes, dim, generator=gen)
    return torch.nn.functional.normalize(centres[labels] + torch.randn(n, dim, generator=gen), dim=1), labels


def test_registry_names_and_declared_options():
    assert list(PROTOCOLS) == ["all-pairs", "pairs", "kfold"]
    for name, protocol in PROTOCOLS.items():
        assert protocol.name == name and protocol.description and get_protocol(name) is protocol
        assert protocol.uses("far") and protocol.uses("seed")
    assert [p.uses("n_pairs") for p in PROTOCOLS.values()] == [False, True, True]
    assert [p.uses("repeats") for p in PROTOCOLS.values()] == [False, True, False]
    assert (PROTOCOLS["pairs"].default_n_pairs, PROTOCOLS["kfold"].default_n_pairs) == (1024, 6000)
    with pytest.raises(TypeError):
        PROTOCOLS["new"] = PROTOCOLS["pairs"]  # read-only: protocols are registered in one place


@pytest.mark.parametrize("name", list(PROTOCOLS))
def test_each_registered_protocol_agrees_with_a_brute_force_over_its_pairs(name):
    emb, labels = _clustered()
    result = evaluate_embeddings(emb, labels, protocol=name, far=0.05, seed=4, retrieval=False, clustering=False)
    verification = result.verification
    if name == "all-pairs":
        i, j = np.triu_indices(len(labels), 1)
        d = (emb[i].double() - emb[j].double()).norm(dim=1).numpy()
        same = (labels[i] == labels[j]).numpy()
    else:
        pairs, is_positive = draw_pairs(labels, PROTOCOLS[name].default_n_pairs, seed=4)
        d = (emb[pairs[:, 0]].double() - emb[pairs[:, 1]].double()).norm(dim=1).numpy()
        same = is_positive.numpy()
    assert verification.protocol == name and verification.n_pairs == len(d)
    assert verification.auc == pytest.approx(sklearn_metrics.roc_auc_score(same, -d), abs=1e-6)
    # The headline VAL is the best ROC point at or below the target FAR (k-fold: the mean over held-out folds).
    fpr, tpr, _ = sklearn_metrics.roc_curve(same, -d)
    best = tpr[np.flatnonzero(fpr <= 0.05).max()]
    if name == "kfold":
        assert result.kfold is not None and abs(result.kfold.val - best) < 0.1
    else:
        assert verification.val == pytest.approx(best, abs=1e-6)


def test_options_a_protocol_ignores_are_refused():
    emb, labels = _clustered()
    with pytest.raises(ParameterError, match="n_pairs is not used by protocol 'all-pairs'") as raised:
        evaluate_embeddings(emb, labels, protocol="all-pairs", n_pairs=5000)
    assert raised.value.parameter == "n_pairs"
    with pytest.raises(ParameterError, match="repeats is not used by protocol 'kfold'"):
        evaluate_embeddings(emb, labels, protocol="kfold", repeats=3)
    with pytest.raises(ParameterError, match="repeats is not used by protocol 'all-pairs'"):
        evaluate_embeddings(emb, labels, repeats=2)
    with pytest.raises(ParameterError, match="repeats must be at least 1"):
        evaluate_embeddings(emb, labels, protocol="pairs", repeats=0)
    with pytest.raises(ParameterError, match="n_pairs must be at least 2, got 1"):
        evaluate_embeddings(emb, labels, protocol="pairs", n_pairs=1)


@pytest.mark.parametrize("far", [0.0, 2.0, -1e-3, float("nan")])
def test_far_outside_zero_one_is_refused_naming_far(far):
    emb, labels = _clustered()
    with pytest.raises(ParameterError, match=r"^far must be in \(0, 1\], got ") as raised:
        evaluate_embeddings(emb, labels, far=far)
    assert raised.value.parameter == "far"


def test_huge_pair_counts_are_refused_up_front_with_the_memory_estimate(monkeypatch):
    emb, labels = _clustered()
    assert MAX_PAIRS * BYTES_PER_PAIR <= PAIR_MEMORY_LIMIT < (MAX_PAIRS + 1) * BYTES_PER_PAIR
    for protocol in ("pairs", "kfold"):
        with pytest.raises(ParameterError, match=r"n_pairs of 100,000,000 needs about 23.8 GiB .* over the 2 GiB limit"):
            evaluate_embeddings(emb, labels, protocol=protocol, n_pairs=100_000_000)
    with pytest.raises(ParameterError, match="n_pairs"):
        draw_pairs(labels, MAX_PAIRS + 1)
    with pytest.raises(ParameterError, match="n_pairs"):
        random_pairs(emb, labels, n_pairs=MAX_PAIRS + 1)
    with pytest.raises(ParameterError, match="n_pairs"):
        kfold(emb, labels, n_pairs=MAX_PAIRS + 1)
    repeats = MAX_REPEATED_PAIRS // 1_000_000 + 1
    with pytest.raises(ParameterError, match=f"repeats x n_pairs = {repeats:,} x 1,000,000") as raised:
        evaluate_embeddings(emb, labels, protocol="pairs", n_pairs=1_000_000, repeats=repeats)
    assert raised.value.parameter == "repeats"


def test_api_evaluate_checks_options_before_loading_anything(tmp_path):
    missing = tmp_path / "absent.npz"
    # The file does not exist, but the bad option is reported first: no minutes spent embedding.
    with pytest.raises(ParameterError, match="n_pairs"):
        api.evaluate(embeddings_file=missing, protocol="pairs", n_pairs=100_000_000)
    with pytest.raises(ParameterError, match="protocol 'lfw' is unknown"):
        api.evaluate(embeddings_file=missing, protocol="lfw")
    with pytest.raises(ParameterError, match="far"):
        api.evaluate(embeddings_file=missing, far=2)
    with pytest.raises(UserError, match="not found"):
        api.evaluate(embeddings_file=missing)


def test_the_config_literal_of_protocols_is_the_registry():
    import typing

    from tripletnet.config import Protocol as ProtocolName

    assert typing.get_args(ProtocolName) == tuple(PROTOCOLS)
