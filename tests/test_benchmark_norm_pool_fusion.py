"""The hand-written batch norm + max-pool functions that benchmarks/norm_pool_fusion.py times keep
conv3's function: its RESULTS note compares their speed, which means nothing if they compute
something else."""

import pytest
import torch
from benchmarks.norm_pool_fusion import KINDS, network


@pytest.mark.parametrize("kind", [kind for kind in KINDS if kind != "native"])
def test_a_hand_written_norm_pool_gives_conv3s_embeddings_and_gradients(kind: str) -> None:
    images = torch.rand(16, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    weights = torch.linspace(-1, 1, 64)
    results = []
    for model in (network("native", seed=3), network(kind, seed=3)):
        embeddings = model(images)
        (embeddings * weights).sum().backward()
        results.append((embeddings.detach(), [p.grad for p in model.parameters()]))
    (native, native_grads), (hand, hand_grads) = results
    torch.testing.assert_close(hand, native, rtol=0, atol=1e-4)
    assert len(hand_grads) == len(native_grads)
    for got, expected in zip(hand_grads, native_grads, strict=True):
        assert float((got - expected).norm() / expected.norm()) < 5e-3  # fp32 statistics by other sums
