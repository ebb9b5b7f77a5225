#!/bin/sh
# run.sh - every benchmark, kt against PyTorch/Pillow side by side (make bench).
# Needs ../shared (the PyTorch scripts and photos) and the Keras weights
# (make weights). Each script prints its own table of medians and ratios;
# BENCH=infer,train limits the set. Takes about 30 minutes in all.
set -eu
[ -d "${SHARED:-../shared}/bench" ] || { echo "bench: ../shared/bench not found, nothing to compare against" >&2; exit 1; }
for b in ${BENCH:-decode infer train predict cache}; do
    echo "== bench/${b}_bench.sh"
    sh "bench/${b}_bench.sh"
done
