/*
 * libibvi - private declarations shared by the files of lib/.
 * Nothing here is part of the ABI; internal functions are named ibvi__*.
 *
 * SPDX-License-Identifier: MIT
 */
#ifndef IBVI_INTERNAL_H
#define IBVI_INTERNAL_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "ibvi/common.h"

/* ---- errors (error.c) ----------------------------------------------------
 * ibvi__fail records a printf-style message for ibvi_last_error() on the
 * calling thread and returns `status`, so a check reads
 *     if (n <= 0) return ibvi__fail(IBVI_ERR_INVALID_ARG, "%s: n = %lld, expected > 0", fn, n);
 */
#if defined(__GNUC__)
__attribute__((format(printf, 2, 3)))
#endif
int ibvi__fail(int status, const char *fmt, ...);

/* Checks that `ptr` is not NULL; on failure records "<fn>: <name> is NULL". */
#define IBVI_CHECK_NOT_NULL(fn, ptr)                                          \
    do {                                                                      \
        if ((ptr) == NULL)                                                    \
            return ibvi__fail(IBVI_ERR_INVALID_ARG, "%s: %s is NULL", (fn),   \
                              #ptr);                                          \
    } while (0)

/* ---- memory (alloc.c) ----------------------------------------------------
 * Every allocation of the library goes through an ibvi_allocator; the
 * default one wraps malloc/free. Sizes are checked for overflow. */
void ibvi__allocator_default(ibvi_allocator *out);
/* The allocator a constructor uses: *in when given (both functions must be
 * set, else IBVI_ERR_INVALID_ARG under fn and *out untouched), the default
 * one for NULL. The one validate-and-default of every constructor that takes
 * an allocator. */
int ibvi__allocator_resolve(const ibvi_allocator *in, ibvi_allocator *out,
                            const char *fn);
/* Allocates count * size bytes (NULL on overflow or failure). */
void *ibvi__alloc(const ibvi_allocator *a, size_t count, size_t size);
/* Same, zero-filled. */
void *ibvi__calloc(const ibvi_allocator *a, size_t count, size_t size);
void ibvi__free(const ibvi_allocator *a, void *ptr);

/* ---- threads (kernels.c) -------------------------------------------------
 * The BLIS threads a call with `requested` threads gets: min(requested, the
 * CPUs this process may run on now: sched_getaffinity, else the online
 * CPUs), at least 1. Asking BLIS for more threads than CPUs only slows it
 * down (or exhausts the host). No system call when requested is 1. */
int32_t ibvi__threads_in_effect(int32_t requested);

/* ---- optimizer (optimizer.c) ---------------------------------------------
 * The checks of ibvi_optimizer_step that hold before any forward or
 * backward (the step count must still be able to grow), reported under fn:
 * ibvi_train_step runs them before changing anything. */
struct ibvi_optimizer;
int ibvi__optimizer_check_step(const struct ibvi_optimizer *opt,
                               const char *fn);
/* ibvi_optimizer_step, reporting errors under fn. */
int ibvi__optimizer_step(struct ibvi_optimizer *opt, const char *fn);

/* ---- losses (loss.c) -----------------------------------------------------
 * The one check of a loss's arguments (kind, labels or targets present and
 * valid, shapes), reported under fn: ibvi_loss* and ibvi_train_step (before
 * its forward pass) use it. ibvi__loss_eval then computes a checked loss
 * (*loss, and grad when not NULL); its only failure is a non-finite loss. */
int ibvi__loss_check(const char *fn, int32_t kind, int64_t rows,
                     int32_t cols, const int32_t *labels,
                     const float *targets, int64_t n);
int ibvi__loss_eval(const char *fn, int32_t kind, const float *outputs,
                    int64_t rows, int32_t cols, const int32_t *labels,
                    const float *targets, int64_t n, float *loss, float *grad);

/* ---- softmax (softmax.c) -------------------------------------------------
 * The one max-shifted softmax, in double, over n rows at once: class c of
 * row i is f[c * cs + i] (row-major callers pass one row: n = 1, cs = 1).
 * ibvi__softmax_max writes each row's maximum and zeroes z and dot;
 * ibvi__softmax_sums then takes classes c0 .. c1 - 1: shifted[(c - c0) n +
 * i] = s = max(b (f - max), -700), exps[...] = e^s, and adds e to z and e s
 * to dot. So softmax = e / z, log-sum-exp = max + log(z) / b, entropy =
 * log z - dot / z. Callers with many classes take them in chunks. */
void ibvi__softmax_max(const float *f, int64_t cs, int64_t n,
                       int32_t classes, double *max, double *z, double *dot);
void ibvi__softmax_sums(const float *f, int64_t cs, int64_t n, int32_t c0,
                        int32_t c1, const double *max, double b,
                        double *shifted, double *exps, double *z, double *dot);
/* y = exp(x) for count values x in [-700, 0], vectorised (within 7e-16
 * relative of glibc's exp). */
void ibvi__exp_nonpositive(const double *x, double *y, int64_t count);

/* ---- numbers ------------------------------------------------------------- */
/* 1 when every value of x[0..n) is finite. */
int ibvi__all_finite(const float *x, int64_t n);

/* The bits of |*x|: the float with its sign bit cleared, as an integer. */
static inline int32_t ibvi__abs_bits(const float *x)
{
    int32_t bits;
    memcpy(&bits, x, sizeof bits);
    return bits & 0x7fffffff;
}

/* The largest |x[i]| of x[0..n) (0 when n = 0): infinity or NaN when some
 * x[i] is not finite, so `ibvi__max_abs(x, n) <= FLT_MAX` is also a
 * finiteness check. It compares the bit patterns with the sign cleared
 * (ordered like the magnitudes, NaN above infinity): that loop vectorises,
 * where a float max or sum reduction would not without -ffast-math. */
static inline float ibvi__max_abs(const float *x, int64_t n)
{
    /* Eight running maxima (two vectors) over the bulk, a multiple of 8,
     * then the rest. A plain loop vectorises too, but into one running
     * max, a chain of dependent compare-and-selects that GCC does not
     * split: measured 1.5x slower, from L1 to memory. */
    int32_t lane[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    const int64_t bulk = n & ~(int64_t)7;
    for (int64_t i = 0; i < bulk; i += 8)
        for (int k = 0; k < 8; k++) {
            const int32_t bits = ibvi__abs_bits(x + i + k);
            lane[k] = bits > lane[k] ? bits : lane[k];
        }
    int32_t max = 0;
    for (int k = 0; k < 8; k++)
        max = lane[k] > max ? lane[k] : max;
    for (int64_t i = bulk; i < n; i++) {
        const int32_t bits = ibvi__abs_bits(x + i);
        max = bits > max ? bits : max;
    }
    float value;
    memcpy(&value, &max, sizeof value);
    return value;
}

#endif /* IBVI_INTERNAL_H */
