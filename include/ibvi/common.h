/*
 * libibvi - common definitions: export macro, versions, status codes, error
 * messages and the optional allocator.
 *
 * SPDX-License-Identifier: MIT
 */
#ifndef IBVI_COMMON_H
#define IBVI_COMMON_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* IBVI_API marks every exported function. The library is built with hidden
 * visibility by default, so only functions carrying this macro are visible. */
#if defined(_WIN32)
#  if defined(IBVI_BUILDING_LIBRARY)
#    define IBVI_API __declspec(dllexport)
#  else
#    define IBVI_API
#  endif
#elif defined(__GNUC__) && __GNUC__ >= 4
#  define IBVI_API __attribute__((visibility("default")))
#else
#  define IBVI_API
#endif

/* ---- Versions ------------------------------------------------------------
 * The header's version; compare it with ibvi_version_number() to detect a
 * program compiled against one version and run against another. The SONAME
 * (libibvi.so.MAJOR) changes only when the ABI breaks. */
#define IBVI_VERSION_MAJOR 0
#define IBVI_VERSION_MINOR 6
#define IBVI_VERSION_PATCH 0
#define IBVI_VERSION_NUMBER \
    (IBVI_VERSION_MAJOR * 10000 + IBVI_VERSION_MINOR * 100 + IBVI_VERSION_PATCH)
#define IBVI_VERSION_STRING "0.6.0"

/* Returns IBVI_VERSION_NUMBER of the library actually loaded. Thread-safe. */
IBVI_API int32_t ibvi_version_number(void);
/* Returns the library's version as static text, e.g. "0.2.0". Thread-safe. */
IBVI_API const char *ibvi_version_string(void);

/* ---- Status codes --------------------------------------------------------
 * Every fallible function returns an int: IBVI_OK (0) on success or one of
 * the negative codes below. The numbers are part of the ABI and never change. */
typedef enum ibvi_status {
    IBVI_OK = 0,
    IBVI_ERR_INVALID_ARG = -1, /* NULL pointer, size <= 0, value out of range */
    IBVI_ERR_SHAPE = -2,       /* sizes of data and network do not agree      */
    IBVI_ERR_NOMEM = -3,       /* the allocator returned NULL                 */
    IBVI_ERR_STATE = -4,       /* call not valid now (e.g. forward before init) */
    IBVI_ERR_NONFINITE = -5,   /* NaN or infinite loss or value; nothing changed */
    IBVI_ERR_IO = -6,          /* a file could not be read or written         */
    IBVI_ERR_FORMAT = -7,      /* a file is not a valid libibvi/IDX file       */
    IBVI_ERR_VERSION = -8,     /* a file was written by a newer format version */
    IBVI_ERR_CHECKSUM = -9,    /* a file's checksum does not match its bytes   */
    IBVI_ERR_UNSUPPORTED = -10 /* a valid request this build cannot serve      */
} ibvi_status;

/* Static English text for a status code ("invalid argument", ...); never
 * NULL, also for unknown codes. Thread-safe. */
IBVI_API const char *ibvi_status_string(int32_t status);

/* The detail message of the last failed call on the calling thread, e.g.
 * "ibvi_net_forward: x has 783 columns, expected 784". The text belongs to
 * the library and stays valid until the next failing call on this thread.
 * Returns "" when no call has failed yet. Successful calls do not clear it. */
IBVI_API const char *ibvi_last_error(void);

/* Clears the calling thread's last error message. */
IBVI_API void ibvi_clear_error(void);

/* ---- Memory --------------------------------------------------------------
 * An optional allocator, given at creation time and copied by the library.
 * alloc(opaque, size) returns memory aligned for any float/double/int64 or
 * NULL; free(opaque, ptr) releases it and must accept NULL. Both must be
 * non-NULL when the struct is given. Pass NULL to use malloc/free. */
typedef struct ibvi_allocator {
    void *(*alloc)(void *opaque, size_t size);
    void (*free)(void *opaque, void *ptr);
    void *opaque;
} ibvi_allocator;

/* ---- Threading contract --------------------------------------------------
 * A handle (network, optimizer, ...) may be used by one thread at a time.
 * Different handles are independent and may be used from different threads
 * at once. Functions without a handle (status strings, loss functions,
 * versions) are thread-safe. Error messages are per thread. */

#ifdef __cplusplus
}
#endif

#endif /* IBVI_COMMON_H */
