"""Section 2: end-to-end training throughput for one MNIST epoch, ours vs a plain PML loop.

Every case is a whole subprocess (imports, data loading, training, and for ours the per-epoch
validation, evaluation and checkpoint), so "whole-process" figures are what a user waits for,
and "loop" figures are the training loop alone as each program times it. Repeats are run round-robin
over the cases, so slow phases of a shared machine hit every case alike.
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from .common import Settings, fmt, load_note, log, ratio, table
from .timing import CaseResult, measure, run_subprocess

FULL_IMAGES = 59904  # 234 batches of 256, the default epoch
QUICK_IMAGES = 5120
TIMEOUT_SECONDS = 900.0
GEMM_SIZE = 2048
# One round of all cases is ~2-3 minutes on an idle machine; past this the third repeat is dropped.
MAX_SECTION_SECONDS = 25 * 60


@dataclass
class Case:
    name: str
    kind: str  # "ours" or "pml"
    extra_args: list[str]
    runs: list[CaseResult] = field(default_factory=list)
    network: str = ""  # as tripletnet names it, or "embeddingnet" for the benchmark's classic network
    precision: str = "fp32"  # ours: read back from the run's config.json
    augment: bool = False
    evaluates: bool = False  # ours: a per-epoch verification evaluation inside the whole-process time

    @property
    def keeps_freed_memory(self) -> bool:
        """malloc keeps freed blocks: ours always does on the CPU (tripletnet.allocator), a PML case when asked."""
        return self.kind == "ours" or "--keep_freed_memory" in self.extra_args

    def ok_runs(self) -> list[CaseResult]:
        return [r for r in self.runs if r.ok]

    def median(self, key: str) -> float | None:
        values = [r.data[key] for r in self.ok_runs()]
        return statistics.median(values) if values else None

    def median_wall(self) -> float | None:
        values = [r.wall_seconds for r in self.ok_runs()]
        return statistics.median(values) if values else None


def _ours_command(case: Case, run_dir: Path, settings: Settings, num_images: int) -> list[str]:
    command = [
        sys.executable, "-m", "tripletnet", "train", "--epochs", "1", "--checkpoint_path", str(run_dir),
        "--data_path", str(settings.data_path), "--threads", str(settings.threads), *case.extra_args,
    ]
    if num_images != FULL_IMAGES:
        command += ["--num_images", str(num_images)]
    return command


def _pml_command(case: Case, settings: Settings, num_images: int) -> list[str]:
    return [
        sys.executable, "-m", "benchmarks.pml_loop", "--num_images", str(num_images),
        "--data_path", str(settings.data_path), "--threads", str(settings.threads), *case.extra_args,
    ]


def _run_ours(case: Case, settings: Settings, num_images: int) -> CaseResult:
    """tripletnet's own CLI; its figures come from the run folder's metrics.jsonl and config.json."""
    with tempfile.TemporaryDirectory(prefix="tripletnet-bench-") as tmp:
        run_dir = Path(tmp) / "run"
        result = run_subprocess(
            _ours_command(case, run_dir, settings, num_images), TIMEOUT_SECONDS, settings.threads, expect_json=False,
        )
        if not result.ok:
            return result
        try:
            record = json.loads((run_dir / "metrics.jsonl").read_text().splitlines()[-1])
            config = json.loads((run_dir / "config.json").read_text())
        except (OSError, IndexError, ValueError) as exc:
            return CaseResult(error=f"no metrics.jsonl/config.json in the run folder ({exc})", wall_seconds=result.wall_seconds)
    # The defaults evolve; what actually ran is what the run folder says.
    case.network = str(config["network"])
    case.precision = str(config.get("precision", "fp32"))
    case.augment = bool(config.get("augment", False))
    case.evaluates = int(config.get("eval_every", 0)) > 0
    result.data = {"epoch_seconds": record["epoch_seconds"], "images_per_second": record["images_per_second"]}
    return result


def _run_pml(case: Case, settings: Settings, num_images: int) -> CaseResult:
    return run_subprocess(_pml_command(case, settings, num_images), TIMEOUT_SECONDS, settings.threads)


def gemm_flops_per_second(repeats: int, precision: str = "fp32", size: int = GEMM_SIZE) -> tuple[float, int]:
    """This machine's matmul rate (fp32 or bf16) on the current torch thread count (median of repeats)."""
    import torch

    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    gen = torch.Generator().manual_seed(0)
    a, b = (torch.randn(size, size, generator=gen).to(dtype) for _ in range(2))
    out = torch.empty(size, size, dtype=dtype)
    timing = measure(lambda: torch.mm(a, b, out=out), repeats, warmup=2)
    return 2.0 * size**3 / timing.median, timing.repeats


def _flops_per_image(network: str) -> int:
    from tripletnet.models import build_network, count_flops

    from .pml_loop import EmbeddingNetSized

    model = EmbeddingNetSized(64) if network == "embeddingnet" else build_network(network, 64)
    return count_flops(model)


def differences(a: Case, b: Case) -> str:
    """What differs between two cases, in words, for the row that puts their ratio side by side."""
    if not (a.ok_runs() and b.ok_runs()):
        return "n/a: a case could not run"
    flops = {c.network: _flops_per_image(c.network) for c in (a, b)}
    parts = []
    if a.network != b.network:
        parts.append(
            f"network: {a.network} ({flops[a.network] / 1e6:.1f} MFLOPs/image) against "
            f"{b.network} ({flops[b.network] / 1e6:.1f})"
        )
    if a.precision != b.precision:
        parts.append(f"precision: {a.precision} against {b.precision}")
    if a.augment != b.augment:
        parts.append(f"augmentation: {'on' if a.augment else 'off'} against {'on' if b.augment else 'off'}")
    if a.evaluates != b.evaluates:
        parts.append(
            "per-epoch evaluation (whole process only): "
            f"{'yes' if a.evaluates else 'no'} against {'yes' if b.evaluates else 'no'}"
        )
    if b.keeps_freed_memory:
        parts.append("nothing but the implementation; the PML loop given tripletnet's malloc setting too")
    return "; ".join(parts) if parts else "nothing: same network, precision and augmentation (like for like)"


def run(settings: Settings) -> str:
    num_images = settings.e2e_images or (QUICK_IMAGES if settings.quick else FULL_IMAGES)
    cases = [
        # Same network, arithmetic and augmentation as the PML loop: the like-for-like comparison, listed first.
        Case(
            "ours, reference network, fp32, no augmentation, --eval_every 0", "ours",
            ["--network", "reference", "--precision", "fp32", "--no-augment", "--eval_every", "0"],
        ),
        Case("PML loop, reference network", "pml", ["--network", "reference"], network="reference"),
        Case("ours, default settings", "ours", []),
        Case("PML loop, EmbeddingNet-sized network", "pml", ["--network", "embeddingnet"], network="embeddingnet"),
        # What the PML loop would gain from tripletnet's malloc setting, so the like-for-like ratio can be read without it.
        Case(
            "PML loop, reference network, with tripletnet's malloc setting", "pml",
            ["--network", "reference", "--keep_freed_memory"], network="reference",
        ),
        # The opt-in network that pools before each BatchNorm: the speed the defaults would have with it.
        Case("ours, default settings with --network conv3p", "ours", ["--network", "conv3p"]),
    ]
    load_start = load_note()
    # bf16 GEMM is only worth a ceiling where the CPU computes it natively; emulated, one 2048^3
    # product takes minutes on an AVX2-only CPU and no training run here would use it.
    import torch

    from tripletnet.training.loop import native_bf16

    precisions = ("fp32", "bf16") if native_bf16(torch.device("cpu")) else ("fp32",)
    log(f"e2e: {' and '.join(precisions)} GEMM {GEMM_SIZE}x{GEMM_SIZE}")
    gemm_repeats = 3 if settings.quick else 15
    gemm = {precision: gemm_flops_per_second(gemm_repeats, precision)[0] for precision in precisions}

    repeats = 1 if settings.quick else 3
    repeat_note = ""
    round_index = 0
    while round_index < repeats:
        started = time.perf_counter()
        for case in cases:
            log(f"e2e round {round_index + 1}/{repeats}: {case.name}")
            runner = _run_ours if case.kind == "ours" else _run_pml
            case.runs.append(runner(case, settings, num_images))
        round_seconds = time.perf_counter() - started
        if round_index == 0 and repeats == 3 and 3 * round_seconds > MAX_SECTION_SECONDS:
            repeats = 2
            repeat_note = (
                f"Only 2 repeats per case: one round took {round_seconds:.0f} s, so 3 would have passed "
                f"the section's {MAX_SECTION_SECONDS // 60} min budget."
            )
        round_index += 1

    def ceiling_share(achieved: float | None, precision: str) -> str:
        if achieved is None:
            return "n/a"
        if precision not in gemm:
            return "n/a (no native bf16: not measured)"
        return f"{100 * achieved / gemm[precision]:.1f}%"

    rows = []
    for case in cases:
        wall = case.median_wall()
        loop_ips = case.median("images_per_second")
        flops = _flops_per_image(case.network) if case.network else None
        achieved = None if flops is None or loop_ips is None else 3 * flops * loop_ips
        failures = [r.error or "unknown" for r in case.runs if not r.ok]
        rows.append([
            case.name, case.network or "n/a", case.precision, "yes" if case.augment else "no",
            fmt(flops / 1e6 if flops else None, 2),
            fmt(loop_ips, 0), fmt(case.median("epoch_seconds"), 1), fmt(wall, 1),
            fmt(num_images / wall if wall else None, 0),
            ceiling_share(achieved, "fp32"), ceiling_share(achieved, case.precision),
            f"{len(case.ok_runs())}" + (f" (could not run: {'; '.join(failures)})" if failures else ""),
        ])

    ours_fp32, pml_ref, ours, pml_small, pml_ref_kept, ours_conv3p = cases

    def ratio_row(label: str, a: Case, b: Case) -> list[str]:
        wall_a, wall_b = a.median_wall(), b.median_wall()
        return [
            label, ratio(a.median("images_per_second"), b.median("images_per_second")),
            ratio(wall_b, wall_a),  # whole-process throughput ratio = inverse ratio of wall times
            differences(a, b),
        ]

    commands = [
        "- ours: `python " + " ".join(_ours_command(c, Path("<tmpdir>"), settings, num_images)[1:]) + "`"
        for c in (ours_fp32, ours, ours_conv3p)
    ] + [
        "- PML: `python " + " ".join(_pml_command(c, settings, num_images)[1:]) + "`" for c in (pml_ref, pml_small, pml_ref_kept)
    ]
    bf16_note = (
        f"bf16 {gemm['bf16'] / 1e9:.1f} GFLOP/s" if "bf16" in gemm
        else "bf16 not measured: this CPU has no native bf16 (no AVX-512 BF16 or AMX), so autocast would emulate it"
    )
    return "\n\n".join(part for part in [
        "## 3. End-to-end training throughput, one MNIST epoch"
        + ("" if num_images == FULL_IMAGES else f" (here {num_images:,} images)"),
        f"{'One epoch' if num_images == FULL_IMAGES else 'Part of an epoch'} of {num_images} images in batches of 256 "
        f"with torch threads = {settings.threads}, each run a whole "
        f"subprocess, {repeats} repeat(s) per case run round-robin, medians reported. *Loop* = the training "
        "loop alone as each program times it (ours: `images_per_second` / `epoch_seconds` from "
        "`metrics.jsonl`); *whole process* = wall time from launch to exit (imports, data loading, and for "
        "ours the validation loss, the verification evaluation unless `--eval_every 0`, and checkpoints). "
        "PML loop: `benchmarks/pml_loop.py`, a DataLoader over a float TensorDataset with a class-balanced "
        "sampler (every batch of 256 holds all 10 classes), Adam lr 1e-4, `TripletMarginMiner(margin=1.0, "
        "type_of_triplets=\"semihard\")` + `TripletMarginLoss(margin=1.0)`, fp32, no augmentation. "
        "tripletnet's training on the CPU keeps freed memory in malloc's heap (`tripletnet.allocator`); "
        "the last PML case is the PML loop given that same setting (`--keep_freed_memory`), to show what is left without it.",
        "\n".join(commands),
        table([
            "case", "network", "precision", "augment", "MFLOPs/image (fwd)", "loop images/s", "loop s",
            "whole-process s", "whole-process images/s", "of fp32 GEMM ceiling", "of own-precision GEMM ceiling", "runs",
        ], rows),
        "The first ratio is the like-for-like one; any other says in its row what differs.",
        table(["ratio", "loop images/s", "whole-process images/s", "what differs"], [
            ratio_row("ours reference, fp32, no augmentation, no eval / PML reference", ours_fp32, pml_ref),
            ratio_row("ours default / PML EmbeddingNet-sized", ours, pml_small),
            ratio_row(
                "ours reference, fp32, no augmentation, no eval / PML reference with the malloc setting", ours_fp32, pml_ref_kept,
            ),
            ratio_row("ours default with --network conv3p / PML EmbeddingNet-sized", ours_conv3p, pml_small),
        ]),
        f"GEMM ceilings: `torch.mm` {GEMM_SIZE}x{GEMM_SIZE} on {settings.threads} threads, median of "
        f"{gemm_repeats}: **fp32 {gemm['fp32'] / 1e9:.1f} GFLOP/s**, {bf16_note}. "
        "Fraction = FLOPs/image (forward, convs and linears, multiply-add = 2, from "
        "`tripletnet.models.count_flops`) x 3 for forward + backward x loop images/s / GEMM FLOP/s; a bf16 run "
        "(autocast) can exceed the fp32 ceiling, so it is also given against the bf16 one. Ours' network, "
        "precision, augmentation and evaluation are read back from each run's `config.json`: the defaults are whatever "
        "tripletnet's defaults resolved to on this machine when this ran (precision auto: bf16 only where the CPU "
        "computes it natively).",
        repeat_note,
        f"Load average at section start: {load_start}; at end: {load_note()}.",
    ] if part)
