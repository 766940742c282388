"""Is bf16 worth it on this CPU? One default training step at batch 256, in fp32 and in bf16.

On CPUs without native bf16 (no AVX-512 BF16, no AMX) autocast emulates it, and a step is several
times slower than in fp32; that is why ``--precision auto`` checks the CPU's flags. Run with
``python -m benchmarks.precision`` (random pixels: the network costs the same on any image).
"""

from __future__ import annotations

import statistics
import time

import torch

from tripletnet.config import TrainConfig
from tripletnet.models import build_network
from tripletnet.training import train_step
from tripletnet.training.loop import native_bf16

WARMUP, REPEATS = 3, 5


def step_milliseconds(precision: str) -> float:
    """Median milliseconds of the default training step (conv3, batch 256, semi-hard) in ``precision``."""
    config = TrainConfig(precision=precision)  # type: ignore[arg-type]
    torch.manual_seed(0)
    model = build_network(config.network, config.embedding_dim).to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    images = torch.randint(0, 256, (config.batch_size, 28, 28), dtype=torch.uint8)
    labels = torch.arange(config.batch_size) % 10
    gen = torch.Generator().manual_seed(0)
    times = []
    for i in range(WARMUP + REPEATS):
        started = time.perf_counter()
        train_step(model, optimizer, images, labels, "semihard", config, gen)
        if i >= WARMUP:
            times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def main() -> None:
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU capability "
          f"{torch.backends.cpu.get_cpu_capability()}, native bf16: {native_bf16(torch.device('cpu'))}")
    fp32, bf16 = step_milliseconds("fp32"), step_milliseconds("bf16")
    print(f"default step, median of {REPEATS}: fp32 {fp32:.0f} ms, bf16 {bf16:.0f} ms, bf16/fp32 {bf16 / fp32:.2f}")


if __name__ == "__main__":
    main()
