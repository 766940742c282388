import torch

from tripletnet.models import NETWORKS, build_network, count_flops, count_parameters, images_to_input
from tripletnet.mining import miner_for_epoch, parse_schedule


def test_reference_network_shape_and_size():
    model = build_network("reference", 64)
    # conv 1->32 (288) + BN (64) + conv 32->64 (18432) + BN (128) + linear 3136->64 (200768)
    assert count_parameters(model) == 288 + 64 + 18432 + 128 + 3136 * 64 + 64
    flops = count_flops(model)
    expected = 2 * (28 * 28 * 32 * 9 + 14 * 14 * 64 * 32 * 9 + 3136 * 64)
    assert flops == expected


def test_every_network_gives_unit_norm_embeddings():
    images = images_to_input(torch.randint(0, 256, (5, 28, 28), dtype=torch.uint8))
    assert images.shape == (5, 1, 28, 28) and 0 <= images.min() and images.max() <= 1
    for name in NETWORKS:
        model = build_network(name, 16).eval()
        emb = model(images)
        assert emb.shape == (5, 16)
        torch.testing.assert_close(emb.norm(dim=1), torch.ones(5))


def test_reference_schedule_is_semihard_for_first_40_percent():
    schedule = parse_schedule("semihard:0.4,hard")
    miners = [miner_for_epoch(schedule, e, 20) for e in range(1, 21)]
    assert miners == ["semihard"] * 8 + ["hard"] * 12
    three = parse_schedule("batch_all:0.25,semihard:0.25,hard")
    assert [miner_for_epoch(three, e, 4) for e in range(1, 5)] == ["batch_all", "semihard", "hard", "hard"]


def test_short_runs_start_with_the_first_miner_and_give_every_miner_an_epoch():
    schedule = parse_schedule("semihard:0.4,hard")
    # round(0.4 * epochs) is 0 for one epoch and 1 for two or three: no run starts with hard mining.
    assert [miner_for_epoch(schedule, e, 1) for e in (1,)] == ["semihard"]
    assert [miner_for_epoch(schedule, e, 2) for e in (1, 2)] == ["semihard", "hard"]
    assert [miner_for_epoch(schedule, e, 3) for e in (1, 2, 3)] == ["semihard", "hard", "hard"]
    short = parse_schedule("batch_all:0.1,semihard:0.1,hard")
    assert [miner_for_epoch(short, e, 3) for e in (1, 2, 3)] == ["batch_all", "semihard", "hard"]
    assert [miner_for_epoch(short, e, 2) for e in (1, 2)] == ["batch_all", "semihard"]
