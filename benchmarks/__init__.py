"""Performance measurements for tripletnet, run as ``python -m benchmarks``.

Measurement only: nothing here asserts on time. Every figure is the median of repeats, and every
ratio is computed from medians measured side by side in the same run. Each expensive case runs in
its own subprocess so that its peak memory can be read from ``ru_maxrss`` and a failure (out of
memory, timeout) becomes a line in the report instead of ending the run.
"""
