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
/* Allocates count * size bytes (NULL on overflow or failure). */
void *ibvi__alloc(const ibvi_allocator *a, size_t count, size_t size);
/* Same, zero-filled. */
void *ibvi__calloc(const ibvi_allocator *a, size_t count, size_t size);
void ibvi__free(const ibvi_allocator *a, void *ptr);

/* ---- numbers ------------------------------------------------------------- */
/* 1 when every value of x[0..n) is finite. */
int ibvi__all_finite(const float *x, int64_t n);

#endif /* IBVI_INTERNAL_H */
