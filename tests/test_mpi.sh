#!/bin/sh
# libibvi tests - data-parallel training on MPI (docs/distributed.md), two
# ranks on this machine:
#   (a) mpirun -np 2 mpi_train gives the parameters a single process gets
#       by computing both shards' gradients with the same per-rank noise
#       through the public API and averaging them (test_mpi_reference), for
#       an MLP with two samples per rank and for LeNet-5 (a variational
#       convolution);
#   (b) the parameters are identical on both ranks after every step
#       (--check-sync compares a checksum after each step; the final dumps
#       are compared byte for byte);
#   (c) a rank fed bad input (a NaN in its shard) ends the job with a clear
#       error and a failing status, within a timeout, not a hang;
#   and the factored exchange (--exchange factored) ends with the dense
#   exchange's parameters, bit for bit.
# Exit 77 (skipped) without MPI or without the data set.
#
# usage: test_mpi.sh [MPI_TRAIN TEST_MPI_REFERENCE]
# SPDX-License-Identifier: MIT
set -u
train=${1:-}
reference=${2:-}
data=/usr/share/datasets/fashion-mnist
if [ -z "$train" ] || ! command -v mpirun >/dev/null 2>&1; then
    echo "MPI not found (install libopenmpi-dev openmpi-bin): skipped"
    exit 77
fi
if [ ! -f "$data/train-images-idx3-ubyte.gz" ]; then
    echo "dataset-fashion-mnist is not installed: skipped"
    exit 77
fi
tmp=$(mktemp -d) || exit 1
trap 'rm -rf "$tmp"' EXIT INT TERM

# Open MPI refuses root without these, and counts cores, not threads.
mpirun="mpirun -np 2"
if mpirun --version 2>&1 | grep -q "Open MPI"; then
    export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
    export OMPI_MCA_btl=self,vader  # one machine: shared memory only
    mpirun="$mpirun --oversubscribe"
fi
# Under AddressSanitizer (.ci/run), LeakSanitizer reports Open MPI's own
# allocations that it never frees at exit (from its plugins, which are
# unloaded by then): the MPI runs go without leak detection. The library's
# calls run leak-checked in the reference program and the Check suites.
mpi_env="ASAN_OPTIONS=${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=0"
mpirun="env $mpi_env $mpirun"
fail=0

limit=512 batch=32 steps=8 lr=0.02 seed=3

# run_mpi NAME MODEL WIDTH RANK SAMPLES [ARGS...]: a 2-rank run with
# --check-sync, its dumps compared across the ranks (b). 0 when it ran.
run_mpi() {
    name=$1 model=$2 width=$3 rank=$4 samples=$5
    shift 5
    if ! timeout 300 $mpirun "$train" --data "$data" --model "$model" \
        --width "$width,$width" --rank "$rank" --train-samples "$samples" \
        --train-limit $limit --batch $batch --epochs 1 --steps $steps \
        --lr $lr --seed $seed --no-shuffle --no-corruptions --test-limit 200 \
        --test-samples 4 --check-sync --dump-params "$tmp/$name" "$@" \
        > "$tmp/$name.out" 2> "$tmp/$name.err"; then
        echo "FAIL: $name: mpi_train failed:"; cat "$tmp/$name.err"
        fail=1
        return 1
    fi
    if ! cmp -s "$tmp/$name.0" "$tmp/$name.1"; then
        echo "FAIL: $name: the ranks end with different parameters"
        fail=1
    else
        echo "ok: $name: both ranks hold the same $(wc -c < "$tmp/$name.0") bytes of parameters (checked after each step)"
    fi
    grep -q '^ibvi ' "$tmp/$name.out" ||
        { echo "FAIL: $name: rank 0 printed no table"; cat "$tmp/$name.out"; fail=1; }
    return 0
}

# run_pair NAME MODEL WIDTH RANK SAMPLES: (a) and (b) for one model.
run_pair() {
    run_mpi "$@" || return
    if ! "$reference" "$data" "$2" "$3" "$4" "$5" $limit $batch $steps $lr \
        $seed 2 "$tmp/$1"; then
        echo "FAIL: $1: the 2-rank run differs from the reference"
        fail=1
    fi
}

run_pair mlp mlp 32 3 2
run_pair lenet5 lenet5 8 2 1
# The factored exchange (an allgather of G and Z) gives the dense
# exchange's parameters bit for bit.
for model in mlp lenet5; do
    set -- $( [ $model = mlp ] && echo "32 3 2" || echo "8 2 1")
    if run_mpi "$model-factored" $model "$1" "$2" "$3" --exchange factored; then
        if cmp -s "$tmp/$model.0" "$tmp/$model-factored.0"; then
            echo "ok: $model: the factored exchange ends with the dense exchange's parameters"
        else
            echo "FAIL: $model: the factored exchange differs from the dense one"
            fail=1
        fi
    fi
done

# (c) bad input on rank 1 only.
start=$(date +%s)
timeout 120 $mpirun "$train" --data "$data" --train-limit 256 --batch 32 \
    --width 16 --rank 2 --epochs 1 --no-corruptions --poison-rank 1 \
    > "$tmp/bad.out" 2> "$tmp/bad.err"
rc=$?
elapsed=$(( $(date +%s) - start ))
if [ $rc -eq 124 ] || [ $rc -eq 137 ]; then
    echo "FAIL: a failing rank left the job hanging (timeout)"; fail=1
elif [ $rc -eq 0 ]; then
    echo "FAIL: a NaN in rank 1's shard did not fail the job"; fail=1
elif ! grep -q "rank 1, step 0: .*ibvi_net_forward: x holds NaN" "$tmp/bad.err" ||
     ! grep -q "1 rank(s) failed at step 0" "$tmp/bad.err"; then
    echo "FAIL: no clear error for the failing rank:"; cat "$tmp/bad.err"; fail=1
else
    echo "ok: a NaN on rank 1 ended the job in ${elapsed}s with status $rc:"
    grep "mpi_train" "$tmp/bad.err" | sed 's/^/    /'
fi
[ $fail -eq 0 ] && echo "ok: mpi"
exit $fail
