#!/usr/bin/env bash
# The reference project's training line, with its defaults spelled out.
set -euo pipefail
tripletnet train --num_images 59904 --batch_size 256 --epochs 20 --margin 1 --num_workers 0 --data_path ./data/ --checkpoint_path ./checkpoints/ "$@"
