#!/usr/bin/env bash
# The reference project's training line, with its defaults spelled out. The data come from --data_path if given
# among the extra options, else $TRIPLETNET_DATA, else ./data/ (what tripletnet train does without --data_path).
set -euo pipefail
tripletnet train --num_images 59904 --batch_size 256 --epochs 20 --margin 1 --num_workers 0 --checkpoint_path ./checkpoints/ "$@"
