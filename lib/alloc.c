/*
 * libibvi - allocation through the user's (or the default) allocator.
 *
 * SPDX-License-Identifier: MIT
 */
#include <stdlib.h>
#include <string.h>

#include "internal.h"

static void *default_alloc(void *opaque, size_t size)
{
    (void)opaque;
    return malloc(size);
}

static void default_free(void *opaque, void *ptr)
{
    (void)opaque;
    free(ptr);
}

void ibvi__allocator_default(ibvi_allocator *out)
{
    out->alloc = default_alloc;
    out->free = default_free;
    out->opaque = NULL;
}

int ibvi__allocator_resolve(const ibvi_allocator *in, ibvi_allocator *out,
                            const char *fn)
{
    if (!in) {
        ibvi__allocator_default(out);
        return IBVI_OK;
    }
    if (!in->alloc || !in->free)
        return ibvi__fail(IBVI_ERR_INVALID_ARG,
                          "%s: allocator->%s is NULL (alloc and free must "
                          "both be set)", fn, in->alloc ? "free" : "alloc");
    *out = *in;
    return IBVI_OK;
}

void *ibvi__alloc(const ibvi_allocator *a, size_t count, size_t size)
{
    if (size != 0 && count > SIZE_MAX / size)
        return NULL;
    size_t bytes = count * size;
    /* Never ask for 0 bytes: malloc(0) may return NULL, read as failure. */
    return a->alloc(a->opaque, bytes ? bytes : 1);
}

void *ibvi__calloc(const ibvi_allocator *a, size_t count, size_t size)
{
    void *p = ibvi__alloc(a, count, size);
    if (p)
        memset(p, 0, count * size > 0 ? count * size : 1);
    return p;
}

void ibvi__free(const ibvi_allocator *a, void *ptr)
{
    if (ptr)
        a->free(a->opaque, ptr);
}
