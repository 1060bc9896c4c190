/*
 * libibvi - the thread team of the element-wise passes (parallel.c).
 *
 * ibvi__parallel_for splits an index range [0, n) into contiguous chunks
 * and runs them on the calling thread and the workers of a process-wide
 * pool, returning when all are done. The chunks depend only on (n,
 * threads, grain) (ibvi__parallel_chunks, ibvi__parallel_chunk_begin), so
 * a pass whose chunks write disjoint outputs gives bitwise the same result
 * for any thread count, and a reduction that combines its chunks in an
 * order-independent way (a maximum, an "all finite") the same answer.
 *
 * threads is the caller's thread count in effect (ibvi__threads_in_effect:
 * the network's, the same BLIS gets, capped by the CPUs): element-wise work
 * and GEMMs never overlap, so a network never runs more threads than that.
 * The pool is shared by every network of the process: a call that finds it
 * busy (another host thread's network is using it) runs its chunks on the
 * calling thread, one after the other, with the same boundaries. A call
 * from inside a chunk runs inline too. Nothing here allocates from the
 * network's allocator and nothing can fail: a worker that cannot be
 * started leaves its chunk to the caller.
 *
 * SPDX-License-Identifier: MIT
 */
#ifndef IBVI_PARALLEL_H
#define IBVI_PARALLEL_H

#include <stdint.h>

/* At most this many chunks per call (the calling thread and the pool's
 * workers); a larger thread count is treated as this one. */
#define IBVI__PARALLEL_MAX_CHUNKS 64

/* Indices per chunk below which a pass is not worth splitting, for passes
 * of a few operations per float (activations, bias rows, maxima): about
 * 10 microseconds of work, the cost of waking a worker. */
#define IBVI__PARALLEL_GRAIN_FLOATS 32768

/* Runs fn(ctx, begin, end) over the chunks of [0, n). */
typedef void (*ibvi__range_fn)(void *ctx, int64_t begin, int64_t end);

/* How many chunks [0, n) is split into: min(threads, n / grain,
 * IBVI__PARALLEL_MAX_CHUNKS), at least 1 (0 when n <= 0). grain >= 1 is
 * the smallest chunk worth a thread. */
int32_t ibvi__parallel_chunks(int32_t threads, int64_t n, int64_t grain);

/* Where chunk c (0 <= c <= chunks) of [0, n) begins: chunk c is
 * [begin(c), begin(c + 1)); the first n % chunks chunks hold one index
 * more than the others. begin(chunks) = n. */
int64_t ibvi__parallel_chunk_begin(int64_t n, int32_t chunks, int32_t c);

/* Runs fn over every chunk of [0, n) exactly once, the chunks in parallel
 * when there are two or more, and returns when all have returned. One
 * chunk (n below 2 * grain, or threads = 1) runs inline with no
 * synchronisation. */
void ibvi__parallel_for(int32_t threads, int64_t n, int64_t grain,
                        ibvi__range_fn fn, void *ctx);

/* max |x[i]| of x[0..n) as ibvi__max_abs (internal.h) computes it, split
 * across threads: the same value for any thread count. */
float ibvi__parallel_max_abs(int32_t threads, const float *x, int64_t n);

#endif /* IBVI_PARALLEL_H */
