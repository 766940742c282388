"""``python -m benchmarks.norm_pool_fusion``: can batch norm + max-pool be cheaper by hand, keeping conv3's function?

On a bf16 CPU with AMX, batch norm and max-pool on the full-size maps are half of a default training
step (``RESULTS-step-profile-amx.md``), and they are memory-bound: each pass over a 28x28x32 map of
a batch costs about what a convolution does. Pooling first (``--network conv3p``) saves the passes
but changes the function. This measures two hand-written autograd functions that keep the function
(batch statistics of the full map, then the 2x2 maximum), each swapped for every block's batch
norm + max-pool in conv3, against torch's own kernels, as the network's forward + backward in bf16:

* ``pool-then-affine``: statistics by reductions over the full map, max-pool of the raw map, and the
  affine part on the pooled quarter (exact for a positive scale, the case it is timed in);
* ``pooled-gradient backward``: torch's batch norm and max-pool forward, and a backward that uses
  the max-pool gradient's sparsity (one nonzero per window) to read the full map once and write it
  once, instead of the five passes of the two kernels' backward.

It prints the largest embedding and relative gradient differences from the native network and the
median milliseconds of forward + backward; nothing asserts on time. Neither function is used by
tripletnet: both were slower (see the closing paragraph of ``RESULTS-step-profile-amx.md``).
"""

from __future__ import annotations

import argparse
from typing import Any

import torch
from torch import nn

from tripletnet.allocator import keep_freed_memory
from tripletnet.models import build_network

from .machine import describe
from .timing import measure

WINDOW = ([2, 2], [2, 2], [0, 0], [1, 1], False)  # max_pool2d's kernel, stride, padding, dilation, ceil_mode


def _channel_view(values: torch.Tensor) -> torch.Tensor:
    return values.view(1, -1, 1, 1)


class _PoolThenAffine(torch.autograd.Function):
    """max_pool(batch_norm(x)) as batch_norm's affine map of max_pool(x), for a positive scale."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float) -> torch.Tensor:
        count = x.numel() // x.shape[1]
        dims = (0, 2, 3)
        mean = x.sum(dims, dtype=torch.float32) / count
        var = (torch.linalg.vector_norm(x, 2, dims, dtype=torch.float32).square() / count - mean.square()).clamp_min(0)
        rstd = torch.rsqrt(var + eps)
        scale = weight * rstd
        pooled, indices = torch.ops.aten.max_pool2d_with_indices(x, *WINDOW)
        ctx.save_for_backward(x, pooled, indices, mean, rstd, scale)
        return torch.addcmul(_channel_view(bias - mean * scale), pooled, _channel_view(scale)).to(x.dtype)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        x, pooled, indices, mean, rstd, scale = ctx.saved_tensors
        grad32 = grad.float()
        normalised = (pooled.float() - _channel_view(mean)) * _channel_view(rstd)
        return _input_gradient(x, indices, grad32, normalised, mean, rstd, scale, scattered_by_pool=True)


class _PooledGradientBackward(torch.autograd.Function):
    """torch's batch norm and max-pool forward; one backward for both from the pooled gradient."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, norm: nn.BatchNorm2d) -> torch.Tensor:
        y, mean, rstd = torch.ops.aten.native_batch_norm(x, weight, bias, norm.running_mean, norm.running_var, True,
                                                         norm.momentum, norm.eps)
        pooled, indices = torch.ops.aten.max_pool2d_with_indices(y, *WINDOW)
        ctx.save_for_backward(x, indices, mean, rstd, weight * rstd)
        return pooled

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        x, indices, mean, rstd, scale = ctx.saved_tensors
        at_maxima = torch.gather(x.flatten(2), 2, indices.flatten(2)).view_as(grad)
        normalised = (at_maxima.float() - _channel_view(mean)) * _channel_view(rstd)
        return _input_gradient(x, indices, grad.float(), normalised, mean, rstd, scale, scattered_by_pool=False)


def _input_gradient(x: torch.Tensor, indices: torch.Tensor, grad32: torch.Tensor, normalised: torch.Tensor,
                    mean: torch.Tensor, rstd: torch.Tensor, scale: torch.Tensor,
                    scattered_by_pool: bool) -> tuple[torch.Tensor | None, ...]:
    """Batch norm's backward when its output gradient is nonzero only at the pooled maxima:
    dx = scale * scatter(g) + c1 + c2 * x, whose per-channel c1, c2 need sums over the quarter only."""
    count = x.numel() // x.shape[1]
    dims = (0, 2, 3)
    grad_bias = grad32.sum(dims)
    grad_weight = (grad32 * normalised).sum(dims)
    c2 = -scale * rstd * grad_weight / count
    c1 = -scale * grad_bias / count - c2 * mean
    smooth = torch.addcmul(_channel_view(c1).to(x.dtype), x, _channel_view(c2).to(x.dtype))
    routed = (grad32 * _channel_view(scale)).to(x.dtype)
    if scattered_by_pool:
        grad_x = torch.ops.aten.max_pool2d_with_indices_backward(routed, x, *WINDOW, indices).add_(smooth)
    else:
        grad_x = smooth
        grad_x.flatten(2).scatter_add_(2, indices.flatten(2), routed.flatten(2))
    return (grad_x, grad_weight, grad_bias, None)


class _HandWrittenNormPool(nn.Module):
    """One block's batch norm + max-pool through one of the functions above (its BatchNorm2d kept)."""

    def __init__(self, norm: nn.BatchNorm2d, kind: str) -> None:
        super().__init__()
        self.norm, self.kind = norm, kind

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kind == "pool-then-affine":
            return _PoolThenAffine.apply(x, self.norm.weight, self.norm.bias, self.norm.eps)
        return _PooledGradientBackward.apply(x, self.norm.weight, self.norm.bias, self.norm)


KINDS = ("native", "pool-then-affine", "pooled-gradient backward")


def network(kind: str, seed: int = 0) -> nn.Module:
    """conv3 from ``seed``, each BatchNorm2d + MaxPool2d pair replaced unless ``kind`` is native."""
    torch.manual_seed(seed)
    model = build_network("conv3", 64)
    if kind != "native":
        layers: list[nn.Module] = list(model.trunk.children())
        rebuilt: list[nn.Module] = []
        while layers:
            layer = layers.pop(0)
            if isinstance(layer, nn.BatchNorm2d) and layers and isinstance(layers[0], nn.MaxPool2d):
                layers.pop(0)
                rebuilt.append(_HandWrittenNormPool(layer, kind))
            else:
                rebuilt.append(layer)
        model.trunk = nn.Sequential(*rebuilt)
    return model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.norm_pool_fusion", description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--batch_size", type=int, default=256)
    args = parser.parse_args(argv)
    keep_freed_memory()
    torch.set_num_threads(args.threads)
    images = torch.rand(args.batch_size, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    weights = torch.linspace(-1, 1, 64)

    def forward_backward(model: nn.Module, bf16: bool = True) -> tuple[torch.Tensor, list[torch.Tensor]]:
        model.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            embeddings = model(images).float()
        (embeddings * weights).sum().backward()
        return embeddings.detach(), [p.grad for p in model.parameters() if p.grad is not None]

    def largest_gaps(kind: str, bf16: bool) -> tuple[float, float]:
        """Largest embedding difference and relative gradient difference from the native network."""
        reference_embeddings, reference_grads = forward_backward(network("native"), bf16)
        embeddings, grads = forward_backward(network(kind), bf16)
        gradient_gap = max(float((g - r).norm() / r.norm()) for g, r in zip(grads, reference_grads, strict=True))
        return float((embeddings - reference_embeddings).abs().max()), gradient_gap

    print("\n".join(describe(args.threads)))
    print(f"\nconv3, channels_last, batch {args.batch_size}: forward + backward in bf16 autocast, medians of {args.repeats}; "
          "the differences from the native network in fp32 check the functions' arithmetic, those in bf16 its rounding.\n")
    print("| batch norm + max-pool | largest embedding / relative gradient difference, fp32 | the same, bf16 | ms (bf16) |")
    print("|---|---:|---:|---:|")
    for kind in KINDS:
        fp32_gaps, bf16_gaps = largest_gaps(kind, bf16=False), largest_gaps(kind, bf16=True)
        model = network(kind)

        def step(model: nn.Module = model) -> None:
            forward_backward(model)

        median_ms = measure(step, args.repeats, warmup=5).median * 1e3
        print(f"| {kind} | {fp32_gaps[0]:.1e} / {fp32_gaps[1]:.1e} | {bf16_gaps[0]:.1e} / {bf16_gaps[1]:.1e} | {median_ms:.2f} |",
              flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
