"""Cross-batch memory against pytorch-metric-learning's CrossBatchMemory on the same embeddings."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from tripletnet.config import TrainConfig
from tripletnet.errors import ParameterError
from tripletnet.losses import LOSS_TERMS, EmbeddingQueue, enabled_terms, memory_triplet_loss, term_states
from tripletnet.models import build_network
from tripletnet.training import train_step


def _batches(count: int, size: int = 24, classes: int = 10, dim: int = 16, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    for _ in range(count):
        labels = torch.randint(classes, (size,), generator=gen)
        yield torch.nn.functional.normalize(torch.randn(size, dim, generator=gen), dim=1), labels


@pytest.mark.parametrize("margin", [0.2, 1.0])
def test_loss_and_gradient_equal_pml_cross_batch_memory_as_the_queue_fills_and_wraps(margin: float) -> None:
    pml = pytest.importorskip("pytorch_metric_learning.losses")
    theirs = pml.CrossBatchMemory(pml.TripletMarginLoss(margin=margin), embedding_size=16, memory_size=60)
    queue = EmbeddingQueue(60, 16)
    for step, (emb, labels) in enumerate(_batches(6)):  # 24 per batch into 60 slots: partly filled, then wrapping
        # Through a normalisation, as a network's embeddings come (PML normalises its inputs again).
        ours_leaf, their_leaf = emb.clone().requires_grad_(True), emb.clone().requires_grad_(True)
        ours = memory_triplet_loss(torch.nn.functional.normalize(ours_leaf, dim=1), labels, queue, margin)
        reference = theirs(torch.nn.functional.normalize(their_leaf, dim=1), labels)
        assert ours.item() == pytest.approx(reference.item(), abs=1e-5), step
        assert ours.item() > 0
        ours.backward()
        reference.backward()
        torch.testing.assert_close(ours_leaf.grad, their_leaf.grad, atol=1e-5, rtol=1e-4)
        stored, stored_labels = queue.contents()
        end = 60 if theirs.has_been_filled else theirs.queue_idx
        torch.testing.assert_close(stored, theirs.embedding_memory[:end])  # the same queue contents
        assert torch.equal(stored_labels, theirs.label_memory[:end])


def test_no_active_triplet_gives_a_zero_that_backpropagates() -> None:
    queue = EmbeddingQueue(8, 2)
    emb = torch.tensor([[1.0, 0.0], [1.0, 0.0], [-1.0, 0.0], [-1.0, 0.0]], requires_grad=True)
    loss = memory_triplet_loss(emb, torch.tensor([0, 0, 1, 1]), queue, 0.5)  # positives at 0, negatives at 2
    assert loss.item() == 0.0
    loss.backward()
    assert emb.grad is not None and torch.equal(emb.grad, torch.zeros_like(emb))


def test_queue_refuses_a_batch_larger_than_itself() -> None:
    with pytest.raises(ParameterError, match="does not fit"):
        EmbeddingQueue(4, 2).enqueue(torch.zeros(5, 2), torch.zeros(5, dtype=torch.int64))


def test_config_enables_the_registered_term_and_checks_the_size() -> None:
    assert "xbm" in LOSS_TERMS
    assert enabled_terms(TrainConfig()) == []
    assert [t.name for t in enabled_terms(TrainConfig(xbm_size=512))] == ["xbm"]
    with pytest.raises(ParameterError, match="xbm_size"):
        TrainConfig(xbm_size=100, batch_size=256).validate()
    with pytest.raises(ParameterError, match="xbm_size"):
        TrainConfig(xbm_size=256, batch_size=256, instance_weight=1.0).validate()


def test_train_step_adds_the_memory_term_and_fills_the_queue() -> None:
    config = TrainConfig(batch_size=16, xbm_size=48, precision="fp32", augment=False)
    labels = torch.arange(16) % 4
    images = torch.randint(0, 256, (16, 28, 28), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    losses = {}
    for name, cfg in (("with", config), ("without", dataclasses.replace(config, xbm_size=0))):
        torch.manual_seed(0)
        model = build_network("conv3", 8)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.0)  # no update: both steps see the same weights
        states = term_states(cfg, 8, torch.device("cpu"))
        gen = torch.Generator().manual_seed(0)
        train_step(model, optimizer, images, labels, "semihard", cfg, gen, states=states)
        losses[name] = [p.grad.clone() for p in model.parameters() if p.grad is not None]
        if name == "with":
            assert states["xbm"].next == 16 and torch.equal(states["xbm"].contents()[1], labels)
    assert any(not torch.equal(a, b) for a, b in zip(losses["with"], losses["without"], strict=True))
    with pytest.raises(ParameterError, match="states"):
        train_step(build_network("conv3", 8), torch.optim.SGD(build_network("conv3", 8).parameters(), lr=0.0), images,
                   labels, "semihard", config, torch.Generator())
