#!/usr/bin/env bash
# The one prepared device check (python -m benchmarks.gpu does the work; this script sets the stage).
#
#   bash benchmarks/gpu_check.sh prepare   # here, with the registries: wheels the device machine lacks, MNIST, glyphs
#   bash benchmarks/gpu_check.sh run OUT   # there (no network): install the carried wheels, run every phase into OUT
#
# The device machine has torch, numpy, matplotlib, pillow, scikit-learn, onnx(runtime) and pytest but neither
# faiss-cpu nor pytorch-metric-learning, and no network: `prepare` downloads their wheels into .whl/ and
# copies the data into .gpu-data/ (both ignored by git; the device tool carries them with carry=[".whl", ".gpu-data"]).
# A run must end within 8 minutes on one H200 (the device tool allows 10 minutes a command).
# The device's python3 is 3.12 with torch 2.11 (not this project's 2.13): on 2026-12-03 the whole suite
# (less lint, docs, notebook, tensorboard) passed under torch 2.11.0 on a CPU, and so did `smoke` with the glyphs.
set -euo pipefail
cd "$(dirname "$0")/.."
mode=${1:-}
case "$mode" in
  prepare)
    grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
    grep -qx '/.gpu-data/' .git/info/exclude 2>/dev/null || echo '/.gpu-data/' >> .git/info/exclude
    rm -rf .whl && mkdir -p .whl .gpu-data
    # faiss-cpu for the index phase, PML for the tests that compare against it; nothing here needs openTSNE.
    for spec in faiss-cpu==1.15.1 pytorch-metric-learning==2.9.0; do
      python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
        --platform manylinux2014_x86_64 -d .whl "$spec"
    done
    data=${TRIPLETNET_DATA:-../shared/datasets}
    rm -rf .gpu-data/mnist && cp -r "$data/mnist" .gpu-data/mnist
    if [ ! -f .gpu-data/glyphs.tgz ] && python3 -c "import benchmarks.glyphs" 2>/dev/null; then
      # The 32 px benchmark of docs/results/glyphs.md (split 1), as one archive: its 39,500 PNG files
      # are 37 MB as files and 17 MB packed, and the device tool carries 64 MiB in all.
      build=$(mktemp -d)
      python3 -m benchmarks.glyphs build "$build/glyphs" --size 32 --chars 2000 --test_chars 500 --n_test_fonts 5 --seed 0 --font_seed 0
      tar czf .gpu-data/glyphs.tgz -C "$build" glyphs && rm -rf "$build"
    fi
    du -sh --apparent-size .whl .gpu-data
    carried=$(( $(du -sb .whl .gpu-data | awk '{s += $1} END {print s}') + $(git ls-files -z | du -cb --files0-from=- | tail -1 | cut -f1) ))
    echo "carried with the working tree: $(( carried / 1048576 )) MiB of the device tool's 64"
    [ "$carried" -lt $(( 62 * 1048576 )) ] || { echo "too much to carry: shrink .gpu-data" >&2; exit 1; }
    ;;
  run)
    out=${2:?usage: gpu_check.sh run OUT}
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || true
    python3 -V
    # One wheel at a time: pip installs all of a list or none, and one whose tags this python does not
    # take (a wheel built for one Python version) must not stop the phases that never use it.
    for wheel in .whl/*.whl; do
      python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site "$wheel" \
        || echo "WARNING: $wheel not installed (the phases that need it report the error)"
    done
    export PYTHONPATH="/tmp/site:$PWD/src:$PWD" PYTHONUNBUFFERED=1 TRIPLETNET_DATA="$PWD/.gpu-data"
    glyphs=()
    if [ -f .gpu-data/glyphs.tgz ]; then
      tar xzf .gpu-data/glyphs.tgz -C /tmp && glyphs=(--glyphs /tmp/glyphs)
    fi
    # Only the reports go to OUT (the device tool brings back 8 files); checkpoints stay on the machine.
    # The whole output is kept in OUT/check.log too (the tool's reply holds only its last 12,000 characters).
    mkdir -p "$out"
    python3 -m benchmarks.gpu "$out" --runs /tmp/gpu-runs --data "$PWD/.gpu-data" "${glyphs[@]}" 2>&1 | tee "$out/check.log"
    ;;
  smoke)
    # On any machine with the project installed: every phase, one epoch on a slice.
    out=${2:-/tmp/gpu-check-smoke}
    python3 -m benchmarks.gpu "$out" --smoke --data "${TRIPLETNET_DATA:-../shared/datasets}"
    ;;
  *)
    echo "usage: bash benchmarks/gpu_check.sh prepare | run OUT | smoke [OUT]" >&2
    exit 2
    ;;
esac
