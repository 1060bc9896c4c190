/*
 * libibvi - versions, status strings and the per-thread error message.
 *
 * SPDX-License-Identifier: MIT
 */
#include <float.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>

#include "internal.h"

/* Kept small on purpose: a library loaded by ctypes (dlopen) can fail to
 * load when its static TLS block is large. */
#define IBVI_ERROR_CAPACITY 256

static _Thread_local char last_error[IBVI_ERROR_CAPACITY];

int32_t ibvi_version_number(void) { return IBVI_VERSION_NUMBER; }

const char *ibvi_version_string(void) { return IBVI_VERSION_STRING; }

const char *ibvi_status_string(int32_t status)
{
    switch (status) {
    case IBVI_OK: return "success";
    case IBVI_ERR_INVALID_ARG: return "invalid argument";
    case IBVI_ERR_SHAPE: return "shape mismatch";
    case IBVI_ERR_NOMEM: return "out of memory";
    case IBVI_ERR_STATE: return "call not valid in the current state";
    case IBVI_ERR_NONFINITE: return "non-finite value";
    case IBVI_ERR_IO: return "input/output error";
    case IBVI_ERR_FORMAT: return "invalid file format";
    case IBVI_ERR_VERSION: return "unsupported file version";
    case IBVI_ERR_CHECKSUM: return "checksum mismatch";
    case IBVI_ERR_UNSUPPORTED: return "unsupported";
    default: return "unknown status";
    }
}

const char *ibvi_last_error(void) { return last_error; }

void ibvi_clear_error(void) { last_error[0] = '\0'; }

int ibvi__fail(int status, const char *fmt, ...)
{
    va_list args;
    va_start(args, fmt);
    vsnprintf(last_error, sizeof last_error, fmt, args);
    va_end(args);
    return status;
}

int ibvi__all_finite(const float *x, int64_t n)
{
    /* An integer max, which vectorises (a float sum of x * 0 would not). */
    return ibvi__max_abs(x, n) <= FLT_MAX;
}
