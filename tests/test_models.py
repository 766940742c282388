import pytest
import torch

from tripletnet.errors import ParameterError
from tripletnet.mining import miner_for_epoch, parse_schedule
from tripletnet.models import (
    NETWORKS,
    build_network,
    count_flops,
    count_parameters,
    describe_networks,
    images_to_input,
)


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


def _weights_from_seed(name, input_shape=None):
    torch.manual_seed(7)
    return build_network(name, 64) if input_shape is None else build_network(name, 64, input_shape)


def test_mnist_shaped_networks_are_the_ones_built_without_a_shape_weight_for_weight():
    for name in NETWORKS:
        a, b = _weights_from_seed(name), _weights_from_seed(name, (1, 28, 28))
        assert [(k, v.shape) for k, v in a.state_dict().items()] == [(k, v.shape) for k, v in b.state_dict().items()]
        for key, value in a.state_dict().items():
            assert torch.equal(value, b.state_dict()[key]), (name, key)


def test_linear_heads_are_sized_from_the_input_shape():
    # conv3, conv3p, resnet and wide pool three times (28 -> 3, 32 -> 4, 20x24 -> 2x3); reference pools adaptively to 7x7.
    expected_features = {"conv3": 128 * 2 * 3, "conv3p": 128 * 2 * 3, "resnet": 128 * 2 * 3, "wide": 256, "reference": 64 * 7 * 7}
    images = images_to_input(torch.randint(0, 256, (4, 3, 20, 24), dtype=torch.uint8))
    assert images.shape == (4, 3, 20, 24)
    for name in NETWORKS:
        model = build_network(name, 16, (3, 20, 24)).eval()
        assert model.input_shape == (3, 20, 24)
        assert model.head.in_features == expected_features[name]
        torch.testing.assert_close(model(images).norm(dim=1), torch.ones(4))
    assert build_network("wide", 16, (3, 32, 32)).trunk[-2].in_features == 128 * 4 * 4


def test_an_input_too_small_or_an_unknown_network_names_the_parameter():
    with pytest.raises(ParameterError) as caught:
        build_network("conv3", 16, (1, 7, 28))
    assert caught.value.parameter == "input_shape"
    with pytest.raises(ParameterError) as caught:
        build_network("resnet50", 16)
    assert caught.value.parameter == "network"
    with pytest.raises(ParameterError) as caught:
        images_to_input(torch.zeros(28, 28, dtype=torch.uint8))
    assert caught.value.parameter == "images"


def test_images_to_input_scales_uint8_to_the_unit_interval_for_either_layout():
    gray = torch.tensor([[[0, 255], [51, 102]]], dtype=torch.uint8)
    torch.testing.assert_close(images_to_input(gray), torch.tensor([[[[0.0, 1.0], [0.2, 0.4]]]]))
    colour = torch.stack([gray[0], 255 - gray[0], gray[0]]).unsqueeze(0)
    out = images_to_input(colour)
    assert out.shape == (1, 3, 2, 2) and out.dtype == torch.float32
    torch.testing.assert_close(out[0, 1], 1 - out[0, 0])


def test_count_flops_follows_the_models_input_shape():
    small = build_network("conv3", 64, (1, 16, 16))
    assert count_flops(small) == 2 * (16 * 16 * 32 * 9 + 8 * 8 * 64 * 32 * 9 + 4 * 4 * 128 * 64 * 9 + 128 * 2 * 2 * 64)
    assert count_flops(build_network("conv3", 64)) == 2 * (
        28 * 28 * 32 * 9 + 14 * 14 * 64 * 32 * 9 + 7 * 7 * 128 * 64 * 9 + 128 * 3 * 3 * 64
    )


def test_conv3p_is_conv3_with_every_batchnorm_on_the_pooled_map():
    conv3, conv3p = build_network("conv3", 64), build_network("conv3p", 64)
    assert count_flops(conv3p) == count_flops(conv3)
    assert conv3p.state_dict().keys() != conv3.state_dict().keys()  # neither loads the other's checkpoint by accident
    assert [v.shape for v in conv3p.state_dict().values()] == [v.shape for v in conv3.state_dict().values()]
    seen: list[tuple[int, int]] = []
    hooks = [m.register_forward_hook(lambda _m, inputs, _out: seen.append(tuple(inputs[0].shape[2:])))
             for m in conv3p.trunk if isinstance(m, torch.nn.BatchNorm2d)]
    conv3p(torch.rand(2, 1, 28, 28))
    for hook in hooks:
        hook.remove()
    assert seen == [(14, 14), (7, 7), (3, 3)]
    # Not conv3's function: normalising the pooled map is another network, trained as such.
    torch.manual_seed(0)
    images = torch.rand(8, 1, 28, 28)
    conv3p.load_state_dict(dict(zip(conv3p.state_dict(), conv3.state_dict().values(), strict=True)))
    assert not torch.allclose(conv3p(images), conv3(images))


def test_networks_are_listed_with_descriptions():
    assert [name for name, _ in describe_networks()] == list(NETWORKS)
    assert all(description for _, description in describe_networks())


def test_residual_block_adds_its_input_so_a_silent_body_passes_it_through():
    from tripletnet.models.networks import _ResidualBlock

    block = _ResidualBlock(8, 8).eval()
    torch.nn.init.zeros_(block.body[-1].weight)  # the last BatchNorm's scale: the body adds nothing
    x = torch.randn(2, 8, 5, 5)
    assert torch.allclose(block(x), torch.relu(x))
    widening = _ResidualBlock(8, 16).eval()
    assert widening(x).shape == (2, 16, 5, 5)


def _classic_order(trunk: torch.nn.Sequential) -> torch.nn.Sequential:
    """The textbook layer order: every max-pool after its ReLU, the reference's adaptive pool kept."""
    layers = list(trunk)
    for i in range(len(layers) - 1):
        if isinstance(layers[i], torch.nn.MaxPool2d) and isinstance(layers[i + 1], torch.nn.ReLU):
            layers[i], layers[i + 1] = torch.nn.ReLU(), torch.nn.MaxPool2d(2)
    return torch.nn.Sequential(*[torch.nn.AdaptiveAvgPool2d((7, 7)) if isinstance(m, torch.nn.Identity) else m for m in layers])


@pytest.mark.parametrize("name", list(NETWORKS))
def test_pooling_before_the_relu_gives_the_textbook_networks_outputs_and_gradients_bit_for_bit(name):
    import copy

    torch.manual_seed(3)
    model = build_network(name, 16)
    classic = copy.deepcopy(model)
    classic.trunk = _classic_order(classic.trunk)
    assert [type(m) for m in classic.trunk] != [type(m) for m in model.trunk] or name not in ("conv3", "reference")
    assert model.state_dict().keys() == classic.state_dict().keys()
    images = torch.rand(6, 1, 28, 28)
    out, out_classic = model(images), classic(images)
    assert torch.equal(out, out_classic)
    out.pow(3).sum().backward()
    out_classic.pow(3).sum().backward()
    for (key, p), q in zip(model.named_parameters(), classic.parameters(), strict=True):
        assert torch.equal(p.grad, q.grad), key
