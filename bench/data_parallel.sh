#!/usr/bin/env bash
# Data-parallel training on one machine (issue 20): `gpt train --preset char-baby` as 1 rank × 2
# threads (batch 8) and as 2 MPI ranks × 1 thread (batch 4 each: the same 8 sequences per step),
# alternating, RUNS times each; prints each run's median tokens/s and the share of rank 0's step
# time spent waiting for the gradient all-reduce. Then the all-reduce probe.
# Needs: cargo build --release --features mpi --example allreduce_probe; Open MPI.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS="${RUNS:-3}"
STEPS="${STEPS:-30}"
BIN=target/release/gpt
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
OUT=$(mktemp -d)
COMMON=(train --preset char-baby --max-steps "$STEPS" --dropout 0 --sample-tokens 0
        --eval-interval 100000 --ckpt-interval 100000)
echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
for i in $(seq "$RUNS"); do
    RAYON_NUM_THREADS=2 $BIN "${COMMON[@]}" --batch-size 8 --out "$OUT/one$i" 2>&1 \
        | grep -o 'median [0-9]* tokens/s' | sed "s/^/run $i  1 rank  × 2 threads: /"
    mpirun --oversubscribe -np 2 -x RAYON_NUM_THREADS=1 $BIN "${COMMON[@]}" --batch-size 4 \
        --out "$OUT/two$i" 2>&1 \
        | grep -o 'median [0-9]* tokens/s\|waited [0-9.]*%' | paste -sd' ' \
        | sed "s/^/run $i  2 ranks × 1 thread:  /"
done
mpirun --oversubscribe -np 2 target/release/examples/allreduce_probe
echo "load average at end: $(cut -d' ' -f1-3 /proc/loadavg)"
rm -rf "$OUT"
