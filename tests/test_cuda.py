"""The GPU path: held data and augmentation on the device, bf16 where the GPU computes it, evaluation
from CUDA embeddings. Every test here skips without a CUDA device; `benchmarks/gpu_check.sh` runs them
on a lent GPU."""

from __future__ import annotations

import pytest
import torch

from tripletnet.config import TrainConfig
from tripletnet.data.loading import InMemoryBatches
from tripletnet.evaluation import evaluate_embeddings
from tripletnet.models import build_network, embed_images
from tripletnet.sampler import ClassBalancedBatchSampler
from tripletnet.training import loop, train
from tripletnet.training.checkpoint import load_checkpoint, model_from_checkpoint

from _mnist import mnist_slice

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device: the GPU path is tested where one exists")
CUDA = torch.device("cuda")
# Trained weights on the GPU against the CPU: the summation order differs, and before ieee_float32 cuDNN's
# default TF32 convolutions (simulated on the CPU) moved these embeddings by up to 1.8e-4.
GPU_CPU_TOLERANCE = 1e-3


def test_held_training_images_live_on_the_device_and_batches_never_leave_it():
    data = mnist_slice()
    sampler = ClassBalancedBatchSampler(data.train_labels, 64, 4, seed=0)
    batches = InMemoryBatches(data.train_images, data.train_labels, sampler, CUDA)
    assert batches.images.device.type == "cuda" and batches.images.dtype == torch.uint8
    images, labels = next(iter(batches.epoch(1)))
    assert images.device.type == "cuda" and labels.device.type == "cuda"


def test_auto_precision_on_the_gpu_is_bf16_exactly_when_the_gpu_computes_it():
    chosen = loop.resolve_precision(TrainConfig(), CUDA).precision
    # bf16 tensor cores from compute capability 8.0; is_bf16_supported() also counts emulation
    native = torch.cuda.get_device_capability(CUDA) >= (8, 0)
    assert chosen == ("bf16" if native else "fp32")
    assert not native or torch.cuda.is_bf16_supported(including_emulation=False)


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_a_cuda_run_in_each_precision_learns_and_evaluates_from_its_checkpoint(tmp_path, precision):
    if precision == "bf16" and not loop.native_bf16(CUDA):
        pytest.skip("this GPU has no bf16")
    config = TrainConfig(num_images=512, batch_size=64, epochs=2, eval_every=1, eval_images=400, num_val_triplets=64,
                         mining="semihard", precision=precision, device="cuda", checkpoint_path=str(tmp_path / "run"))
    result = train(config, data=mnist_slice(), log=lambda _: None)
    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"]
    model, _ = model_from_checkpoint(load_checkpoint(tmp_path / "run" / "last.pt"))
    data = mnist_slice()
    on_gpu = embed_images(model.to(CUDA), data.test_images)
    on_cpu = embed_images(model.cpu(), data.test_images)
    torch.testing.assert_close(on_gpu, on_cpu, rtol=0, atol=GPU_CPU_TOLERANCE)
    verification = evaluate_embeddings(on_gpu, data.test_labels, clustering=False).verification
    assert 0.0 < verification.val <= 1.0


def test_fp32_embeddings_on_the_gpu_are_ieee_float32_not_tf32():
    model = build_network("conv3", 64, (1, 28, 28))
    images = mnist_slice().test_images[:256]
    on_cpu = embed_images(model, images)
    on_gpu = embed_images(model.to(CUDA), images)
    # TF32 convolutions moved such embeddings by ~2e-4 (simulated); IEEE fp32 differs in summation order only
    torch.testing.assert_close(on_gpu, on_cpu, rtol=0, atol=2e-5)


def test_a_network_built_on_the_cpu_moves_to_the_gpu_whole():
    model = build_network("conv3", 64, (1, 28, 28)).to(CUDA)
    assert all(p.device.type == "cuda" for p in model.parameters())
    assert all(b.device.type == "cuda" for b in model.buffers())


def test_all_pairs_on_the_gpu_agrees_with_the_cpu_engine():
    from tripletnet.evaluation.verification.streaming import all_pairs

    generator = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 40, (3000,), generator=generator)
    embeddings = torch.nn.functional.normalize(torch.randn(40, 16, generator=generator)[labels]
                                               + 0.6 * torch.randn(3000, 16, generator=generator), dim=1)
    on_cpu = all_pairs(embeddings, labels, device="cpu")
    on_gpu = all_pairs(embeddings.cuda(), labels.cuda())  # the default device where a GPU is present
    assert (on_gpu.n_positive, on_gpu.n_negative) == (on_cpu.n_positive, on_cpu.n_negative)
    # Only the matmul's rounding differs (a distance's last bit): VAL moves by at most a few pairs.
    assert abs(on_gpu.val - on_cpu.val) * on_cpu.n_positive <= 5
    assert on_gpu.threshold == pytest.approx(on_cpu.threshold, rel=1e-5)
    assert on_gpu.eer == pytest.approx(on_cpu.eer, abs=1e-4)


def test_streamed_batches_are_pinned_for_the_gpu_and_arrive_on_it(tmp_path):
    from synthetic_images import make_synthetic_dataset
    from tripletnet.data import load_dataset
    from tripletnet.data.folder import ImageOptions
    from tripletnet.data.loading import StreamedBatches

    root = make_synthetic_dataset(tmp_path / "folder", size=32).root
    data = load_dataset(str(root), options=ImageOptions(cache_images=0))
    sampler = ClassBalancedBatchSampler(data.train_labels, 8, 2, seed=0)
    source = StreamedBatches(data.train_files, data.train_labels, sampler, CUDA, num_workers=1)
    assert source.loader(sampler.batches(1)).pin_memory
    images, labels = next(iter(source.epoch(1)))
    assert images.device.type == "cuda" and labels.device.type == "cuda"


def test_a_model_loaded_onto_the_gpu_embeds_files_there_and_returns_cpu_embeddings(tmp_path, tmp_path_factory):
    from PIL import Image

    from tripletnet.inference.model import load_model

    from _checkpoint import shared_checkpoint

    checkpoint = shared_checkpoint(tmp_path_factory)
    files = []
    for i, image in enumerate(mnist_slice().test_images[:8]):
        files.append(tmp_path / f"{i}.png")
        Image.fromarray(image.numpy()).save(files[-1])
    on_gpu = load_model(checkpoint, log=lambda _: None, device="cuda")
    assert next(on_gpu.network.parameters()).device.type == "cuda"
    embeddings = on_gpu.embed(files)
    assert embeddings.device.type == "cpu"
    on_cpu = load_model(checkpoint, log=lambda _: None).embed(files)
    torch.testing.assert_close(embeddings, on_cpu, rtol=0, atol=GPU_CPU_TOLERANCE)
