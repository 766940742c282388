"""benchmarks.open_set_diagnostics: the cap, the dimensions used and the threshold diagnostics on data whose answers are known."""

import torch
from benchmarks.open_set_diagnostics import cap_and_dimensions, threshold_diagnostics


def test_the_cap_is_one_for_one_point_and_small_for_points_all_over_the_sphere():
    point = torch.nn.functional.normalize(torch.randn(1, 16), dim=1)
    assert abs(cap_and_dimensions(point.repeat(50, 1) + 1e-6 * torch.randn(50, 16))[0] - 1) < 1e-3
    spread = torch.nn.functional.normalize(torch.randn(20000, 16, generator=torch.Generator().manual_seed(0)), dim=1)
    cap, dimensions = cap_and_dimensions(spread)
    assert cap < 0.05 and dimensions > 15  # isotropic: every dimension carries variance


def test_dimensions_used_counts_the_dimensions_that_vary():
    gen = torch.Generator().manual_seed(1)
    flat = torch.zeros(5000, 64)
    flat[:, :3] = torch.randn(5000, 3, generator=gen)  # three equal variances, the rest zero
    assert abs(cap_and_dimensions(flat)[1] - 3) < 0.1


def test_threshold_diagnostics_agree_with_a_brute_force_count():
    gen = torch.Generator().manual_seed(2)
    labels = torch.arange(300) % 3
    centres = torch.randn(3, 8, generator=gen)[labels]
    embeddings = torch.nn.functional.normalize(centres + 0.6 * torch.randn(300, 8, generator=gen), dim=1)
    found = threshold_diagnostics(embeddings, labels, far=0.01)
    pairs = [(i, j) for i in range(300) for j in range(i + 1, 300)]
    distance = {pair: float((embeddings[pair[0]].double() - embeddings[pair[1]].double()).norm()) for pair in pairs}
    negatives = [pair for pair in pairs if labels[pair[0]] != labels[pair[1]]]
    accepted = [pair for pair in negatives if distance[pair] < found["threshold"]]
    assert len(accepted) == found["false_accepts"] <= 0.01 * len(negatives)
    assert sum(found["confused"].values()) == found["false_accepts"]
    for label, (val, median) in found["per_class"].items():
        matching = [pair for pair in pairs if labels[pair[0]] == labels[pair[1]] == label]
        assert abs(val - sum(distance[pair] < found["threshold"] for pair in matching) / len(matching)) < 1e-12
        assert min(distance[pair] for pair in matching) <= median <= max(distance[pair] for pair in matching)
