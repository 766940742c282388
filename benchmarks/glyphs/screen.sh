#!/usr/bin/env bash
# One change at a time on the glyph benchmark: train the defaults plus the options given for a
# short budget (6 epochs of 10,240 images) on each font split at once, one thread each, then
# score every condition. Usage:
#   benchmarks/glyphs/screen.sh RUNS NAME [train options...]
# with GLYPH_SPLITS naming the builds (default: the two font splits of docs/results/glyphs.md).
# Writes RUNS/NAME-<split>/ (the run) and RUNS/NAME-<split>.json (its scores).
set -euo pipefail
runs=$1 name=$2
shift 2
splits=${GLYPH_SPLITS:-"/work/glyphs-data/g32-s0f0 /work/glyphs-data/g32-s1f1"}
mkdir -p "$runs"
for data in $splits; do
    split=$(basename "$data")
    (
        python -m tripletnet train --dataset "$data" --threads 1 --epochs 6 --num_images 10240 \
            --lr_drop_epoch 5 --eval_every 3 --checkpoint_path "$runs/$name-$split" --overwrite "$@" \
            > "$runs/$name-$split.log" 2>&1
        python -m benchmarks.glyphs run "$data" --checkpoint "$name=$runs/$name-$split/last.pt" \
            --pml_epochs 0 --threads 1 --out "$runs/$name-$split.md" >> "$runs/$name-$split.log" 2>&1
    ) &
done
wait
