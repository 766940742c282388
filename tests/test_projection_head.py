"""A projection head that the training loss goes through and inference drops."""

import pytest
import torch

from tripletnet.config import TrainConfig
from tripletnet.errors import ParameterError
from tripletnet.inference import load_model
from tripletnet.inference.export import export_model
from tripletnet.models import build_network
from tripletnet.training import train
from tripletnet.training.checkpoint import load_checkpoint

from _mnist import data_root, mnist_slice


def test_the_loss_sees_the_projection_and_the_embedding_is_the_layer_before_it():
    torch.manual_seed(0)
    model = build_network("conv3", 16, projection_dim=8).eval()
    images = torch.rand(5, 1, 28, 28)
    embedding = model(images)
    projected = model(images, project=True)
    assert embedding.shape == (5, 16) and projected.shape == (5, 8)
    assert torch.allclose(projected.norm(dim=1), torch.ones(5), atol=1e-6)
    # The projection is computed from the embedding layer's output, before its normalisation.
    pre = model.head(model.trunk((images - 0.5) / 0.5).flatten(1))
    assert torch.allclose(embedding, torch.nn.functional.normalize(pre, dim=1), atol=1e-6)
    assert model.projection is not None
    assert torch.allclose(projected, torch.nn.functional.normalize(model.projection(pre), dim=1), atol=1e-6)
    # Without a head, project=True changes nothing.
    plain = build_network("conv3", 16).eval()
    assert torch.equal(plain(images), plain(images, project=True))


def test_a_non_positive_projection_size_is_refused():
    with pytest.raises(ParameterError, match="projection_dim"):
        build_network("conv3", 16).add_projection_head(0)
    with pytest.raises(ParameterError, match="projection_dim"):
        TrainConfig(projection_dim=-1).validate()


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:DeprecationWarning")  # the only TorchScript reader
def test_a_run_with_a_projection_head_trains_it_and_loads_exports_and_embeds_without_it(tmp_path):
    config = TrainConfig(num_images=256, batch_size=64, epochs=1, eval_images=200, checkpoint_path=str(tmp_path / "run"),
                         data_path=data_root(), augment=True, num_val_triplets=32, projection_dim=32, instance_weight=1.0)
    train(config, data=mnist_slice(n_train=1024, n_test=400), log=lambda _: None)
    state = load_checkpoint(tmp_path / "run" / "last.pt")
    assert state["model"]["projection.1.weight"].shape == (32, config.embedding_dim)
    model = load_model(tmp_path / "run" / "last.pt")
    images = (torch.rand(4, 1, 28, 28) * 255).to(torch.uint8)
    with torch.no_grad():
        embedded = model.embed(images)
    assert embedded.shape == (4, config.embedding_dim)
    scripted = torch.jit.load(str(export_model(model, tmp_path / "m.pt", "torchscript", log=lambda _: None)))
    with torch.no_grad():
        assert (scripted(images) - embedded).abs().max() <= 1e-5
