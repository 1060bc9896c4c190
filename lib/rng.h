/*
 * libibvi - counter-based random numbers (Philox 4x32-10).
 *
 * A stream is a key (from the seed), a stream id, a substream and a 64-bit
 * counter. Block c is Philox(key, (c, stream id, substream)): four 32-bit
 * words that depend only on those, so any position can be reached
 * directly, results do not depend on threads, there is no global state,
 * and streams of different (stream id, substream) never overlap.
 *
 * SPDX-License-Identifier: MIT
 */
#ifndef IBVI_RNG_H
#define IBVI_RNG_H

#include <stdint.h>

typedef struct ibvi_rng {
    uint32_t key[2];
    uint32_t stream;   /* third counter word: separates streams of one seed */
    uint64_t counter;  /* next block to draw                                */
    uint32_t substream;/* fourth counter word: a host's stream of one stream
                          id (ibvi_net_set_noise_stream), 0 by default     */
} ibvi_rng;

/* Stream ids used by the library. */
enum { IBVI_STREAM_INIT = 1, IBVI_STREAM_NOISE = 2, IBVI_STREAM_PREDICT = 3 };

/* Position 0 of (seed, stream), substream 0. */
void ibvi__rng_seed(ibvi_rng *rng, uint64_t seed, uint32_t stream);

/* Fills out[0..n) with N(0, std^2) values (Box-Muller on one Philox block
 * per pair of outputs: each output pair consumes exactly one block, so the
 * stream position after n draws is ceil(n / 2) blocks further). */
void ibvi__rng_normal(ibvi_rng *rng, float *out, int64_t n, float std);

/* The raw block function, exposed for tests of the known-answer vectors. */
void ibvi__philox4x32(const uint32_t key[2], const uint32_t counter[4],
                      uint32_t out[4]);

#endif /* IBVI_RNG_H */
