"""``python -m benchmarks.step_profile``: where one default training step's time goes on this CPU.

Builds the defaults as ``tripletnet train`` resolves them here (precision auto, ``channels_last``,
fused Adam, malloc keeping freed memory), then prints, as markdown: the step's parts timed alone
(augmentation; forward; forward + backward; forward + triplet part + backward; Adam; the whole
``train_step``), medians of ``--repeats``; and torch.profiler's operators by self CPU time over
``--profile_steps`` whole steps. Synthetic uint8 images (the kernels do not care what they show).
Measurement only: nothing asserts on time.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

import torch

from tripletnet.allocator import keep_freed_memory
from tripletnet.config import TrainConfig
from tripletnet.mining import miner_for_epoch, parse_schedule
from tripletnet.models import build_network, images_to_input
from tripletnet.training import train_step, triplet_step
from tripletnet.training.loop import resolve_precision
from tripletnet.training.step import augment

from .machine import describe
from .synthetic import balanced_labels
from .timing import measure


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.step_profile", description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--profile_steps", type=int, default=10)
    parser.add_argument("--rows", type=int, default=12, help="operators listed")
    parser.add_argument("--network", default=TrainConfig().network, help="the network (default: the defaults')")
    parser.add_argument("--compare_compile", action="store_true",
                        help="also time the whole train_step through torch.compile, and with only each block's "
                             "batch norm, max-pool and ReLU compiled (the first step is the compilation)")
    args = parser.parse_args(argv)
    keep_freed_memory()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    config = resolve_precision(TrainConfig(network=args.network), torch.device("cpu"))
    model, optimizer = _model_and_optimizer(config)
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (config.batch_size, 28, 28), dtype=torch.uint8, generator=gen)
    labels = balanced_labels(config.batch_size)
    miner = miner_for_epoch(parse_schedule(config.mining), 1, config.epochs)  # the first epoch's
    bf16 = config.precision == "bf16"
    batch = augment(images_to_input(images), config, gen)

    def embed() -> torch.Tensor:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            return model(batch, project=True).float()

    def forward() -> None:
        with torch.no_grad():
            embed()

    def forward_backward() -> None:
        embed().sum().backward()

    def with_triplets() -> None:
        triplet_step(embed(), labels, miner, config.margin)[0].backward()

    parts: list[tuple[str, Callable[[], object]]] = [
        ("augmentation", lambda: augment(images_to_input(images), config, gen)),
        ("forward", forward),
        ("forward + backward", forward_backward),
        (f"forward + distances, {miner} mining, loss + backward", with_triplets),
        ("Adam (fused)", optimizer.step),
        ("whole train_step", lambda: train_step(model, optimizer, images, labels, miner, config, gen)),
    ]
    print("\n".join(describe(args.threads)))
    print(f"\nDefault step: {config.network}, {config.precision}, batch {config.batch_size}, {miner} mining, "
          f"{args.threads} threads; medians of {args.repeats}.\n")
    print("| part | ms |\n|---|---:|")
    for name, work in parts:
        print(f"| {name} | {measure(work, args.repeats, warmup=3).median * 1e3:.2f} |")
    with torch.profiler.profile() as profile:
        for _ in range(args.profile_steps):
            train_step(model, optimizer, images, labels, miner, config, gen)
    events = sorted(profile.key_averages(), key=lambda event: event.self_cpu_time_total, reverse=True)
    total = sum(event.self_cpu_time_total for event in events)
    print(f"\nOperators by self CPU time over {args.profile_steps} whole steps:\n")
    print("| operator | ms per step | share |\n|---|---:|---:|")
    for event in events[: args.rows]:
        print(f"| `{event.key}` | {event.self_cpu_time_total / 1e3 / args.profile_steps:.2f} | "
              f"{event.self_cpu_time_total / total:.1%} |")
    if args.compare_compile:
        _compare_compile(config, images, labels, miner, gen, args.repeats)
    return 0


def _model_and_optimizer(config: TrainConfig) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    """The network as training builds it on the CPU (channels_last) and its fused Adam."""
    model = build_network(config.network, config.embedding_dim).to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    return model, torch.optim.Adam(model.parameters(), lr=config.lr, fused=True)


def _compare_compile(config: TrainConfig, images: torch.Tensor, labels: torch.Tensor, miner: str,
                     gen: torch.Generator, repeats: int) -> None:
    """The whole train_step eager, through torch.compile (what --compile does), and with only the
    memory-bound layers compiled (where fusing them could save the full-size map's passes), each on
    fresh weights."""
    print(f"\nThe whole train_step, eager and through `torch.compile` (inductor), medians of {repeats} after 3 warm-up steps:\n")
    print("| mode | first step s | step ms |\n|---|---:|---:|")
    for mode in ("eager", "torch.compile", "torch.compile on batch norm + max-pool + ReLU only"):
        torch.manual_seed(0)
        model, optimizer = _model_and_optimizer(config)
        network: torch.nn.Module = model
        if mode == "torch.compile":
            network = torch.compile(model)  # type: ignore[assignment]
        elif mode != "eager":
            _compile_memory_bound_runs(model)

        def step(network: torch.nn.Module = network, optimizer: torch.optim.Optimizer = optimizer) -> None:
            train_step(network, optimizer, images, labels, miner, config, gen)

        first = measure(step, 1, warmup=0).median
        print(f"| {mode} | {first:.1f} | {measure(step, repeats, warmup=3).median * 1e3:.1f} |", flush=True)


MEMORY_BOUND_LAYERS = (torch.nn.BatchNorm2d, torch.nn.MaxPool2d, torch.nn.ReLU)


def _compile_memory_bound_runs(module: torch.nn.Module) -> None:
    """Replace, in place, every run of two or more adjacent batch norm / max-pool / ReLU layers of
    an nn.Sequential by one torch.compile'd Sequential of them (the convolutions stay eager)."""
    for child in module.children():
        _compile_memory_bound_runs(child)
    if not isinstance(module, torch.nn.Sequential):
        return
    rebuilt: list[torch.nn.Module] = []
    run: list[torch.nn.Module] = []
    for layer in [*module, None]:  # None closes the last run
        if isinstance(layer, MEMORY_BOUND_LAYERS):
            run.append(layer)
            continue
        if len(run) > 1:
            rebuilt.append(torch.compile(torch.nn.Sequential(*run)))  # type: ignore[arg-type]
        else:
            rebuilt.extend(run)
        run = []
        if layer is not None:
            rebuilt.append(layer)
    for name in list(module._modules):
        del module._modules[name]
    for index, layer in enumerate(rebuilt):
        module.add_module(str(index), layer)


if __name__ == "__main__":
    raise SystemExit(main())
