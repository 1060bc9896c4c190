#!/bin/sh
# bench/mpi_scaling.sh - data-parallel scaling of mpi_train on one machine
# (docs/distributed.md): the same steps of the same 128 images per step as
#   1 process x 1 thread   (batch 128)
#   1 process x 2 threads  (batch 128, two BLIS threads)
#   2 ranks   x 1 thread   (batch 64 per rank, one allreduce per step)
#   2 ranks   x 1 thread, --exchange factored (an allgather of G and Z)
# for the MLP and LeNet-5, with the time per step, the ratios to 1 x 1 and
# the share of a step spent in the allreduce (which includes waiting for
# the slower rank). All runs in one invocation, the three layouts in turn,
# REPEATS rounds; each figure is the round with the fastest step, so a
# machine shared with other work shows its quiet moments.
#
# usage: bench/mpi_scaling.sh BUILD_DIR [STEPS [REPEATS]]
# SPDX-License-Identifier: MIT
set -eu
build=${1:?build directory}
steps=${2:-60}
repeats=${3:-3}
train=$build/examples/mpi_train
data=${DATA:-/usr/share/datasets/fashion-mnist}
[ -x "$train" ] || { echo "no $train (meson found no MPI?)" >&2; exit 1; }
mpirun="mpirun --bind-to none"
if mpirun --version 2>&1 | grep -q "Open MPI"; then
    export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
    export OMPI_MCA_btl=self,vader
    mpirun="$mpirun --oversubscribe"
fi
limit=$((steps * 128))

# run MODEL RANKS THREADS BATCH EXCHANGE -> "ms_per_step allreduce_percent
# floats"
run() {
    $mpirun -np "$2" "$train" --data "$data" --model "$1" --threads "$3" \
        --batch "$4" --exchange "$5" --train-limit "$limit" --epochs 1 --steps "$steps" \
        --no-corruptions --test-limit 100 --test-samples 1 2>&1 >/dev/null </dev/null |
        sed -n 's/.* \([0-9.]*\) ms per step, allreduce \([0-9.]*\)% .*(\([0-9]*\) floats.*/\1 \2 \3/p'
}

printf '%-8s %-25s %10s %8s %12s %14s\n' model layout "ms/step" "x 1x1" \
    "allreduce %" "floats/step"
layouts="1:1:128:dense 1:2:128:dense 2:1:64:dense 2:1:64:factored"
for model in mlp lenet5; do
    best=
    for round in $(seq "$repeats"); do
        for layout in $layouts; do
            set -- $(echo "$layout" | tr : ' ')
            echo "$layout $(run "$model" "$1" "$2" "$3" "$4")"
        done
    done > "${TMPDIR:-/tmp}/mpi_scaling.$$"
    base=
    for layout in $layouts; do
        line=$(grep "^$layout " "${TMPDIR:-/tmp}/mpi_scaling.$$" | sort -g -k2 | head -1)
        set -- $(echo "$line" | tr : ' ')
        [ -n "$base" ] || base=$5
        ratio=$(awk -v a="$base" -v b="$5" 'BEGIN { printf "%.2f", a / b }')
        printf '%-8s %-25s %10s %8s %12s %14s\n' "$model" \
            "$1 rank x $2 thr, $4" "$5" "$ratio" "$6" "$7"
    done
    rm -f "${TMPDIR:-/tmp}/mpi_scaling.$$"
done
