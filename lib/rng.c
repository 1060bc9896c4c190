/*
 * libibvi - Philox 4x32-10 (Salmon et al., "Parallel random numbers: as easy
 * as 1, 2, 3", SC 2011) and Gaussian sampling on top of it.
 *
 * SPDX-License-Identifier: MIT
 */
#include <math.h>

#include "rng.h"

#define PHILOX_M0 0xD2511F53u
#define PHILOX_M1 0xCD9E8D57u
#define PHILOX_W0 0x9E3779B9u
#define PHILOX_W1 0xBB67AE85u

static void mulhilo(uint32_t a, uint32_t b, uint32_t *hi, uint32_t *lo)
{
    uint64_t product = (uint64_t)a * b;
    *hi = (uint32_t)(product >> 32);
    *lo = (uint32_t)product;
}

void ibvi__philox4x32(const uint32_t key[2], const uint32_t counter[4],
                      uint32_t out[4])
{
    uint32_t c0 = counter[0], c1 = counter[1], c2 = counter[2], c3 = counter[3];
    uint32_t k0 = key[0], k1 = key[1];
    for (int round = 0; round < 10; round++) {
        uint32_t hi0, lo0, hi1, lo1;
        mulhilo(PHILOX_M0, c0, &hi0, &lo0);
        mulhilo(PHILOX_M1, c2, &hi1, &lo1);
        c0 = hi1 ^ c1 ^ k0;
        c1 = lo1;
        c2 = hi0 ^ c3 ^ k1;
        c3 = lo0;
        k0 += PHILOX_W0;
        k1 += PHILOX_W1;
    }
    out[0] = c0;
    out[1] = c1;
    out[2] = c2;
    out[3] = c3;
}

void ibvi__rng_seed(ibvi_rng *rng, uint64_t seed, uint32_t stream)
{
    rng->key[0] = (uint32_t)seed;
    rng->key[1] = (uint32_t)(seed >> 32);
    rng->stream = stream;
    rng->counter = 0;
    rng->substream = 0;
}

static void next_block(ibvi_rng *rng, uint32_t out[4])
{
    uint32_t counter[4] = {(uint32_t)rng->counter,
                           (uint32_t)(rng->counter >> 32), rng->stream,
                           rng->substream};
    ibvi__philox4x32(rng->key, counter, out);
    rng->counter++;
}

/* Uniform in (0, 1] from 64 random bits (never 0, so log() is finite). */
static double open_uniform(uint32_t hi, uint32_t lo)
{
    uint64_t bits = ((uint64_t)hi << 32 | lo) >> 11; /* 53 bits */
    return ((double)bits + 1.0) * (1.0 / 9007199254740992.0);
}

void ibvi__rng_normal(ibvi_rng *rng, float *out, int64_t n, float std)
{
    const double two_pi = 6.283185307179586476925;
    for (int64_t i = 0; i < n; i += 2) {
        uint32_t block[4];
        next_block(rng, block);
        double u1 = open_uniform(block[0], block[1]);
        double u2 = open_uniform(block[2], block[3]);
        double radius = sqrt(-2.0 * log(u1));
        out[i] = (float)(std * radius * cos(two_pi * u2));
        if (i + 1 < n)
            out[i + 1] = (float)(std * radius * sin(two_pi * u2));
    }
}
