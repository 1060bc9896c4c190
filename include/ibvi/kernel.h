/*
 * libibvi - which BLIS kernels run the library's matrix products.
 *
 * libibvi's GEMMs run on BLIS. Once per process, when BLIS initialises, BLIS
 * picks a sub-configuration (a kernel set: "skx", "haswell", "zen3",
 * "generic", ...) for the CPU. Debian's BLIS 0.9 knows only the CPU models
 * of its day: on newer or virtualised CPUs it falls back to slower kernels
 * (the SSE "generic" set on AMD Zen 5, about 3x slower; AVX2 "haswell"
 * instead of AVX-512 "skx" on a virtual Xeon, about 1.7x slower).
 *
 * So, just before BLIS initialises, libibvi chooses the kernel set from the
 * instruction sets the CPU and the OS support, and requests it:
 *   Intel (or other) with AVX-512 F/DQ/CD/BW/VL   -> "skx"
 *   AMD with AVX2 and FMA                         -> "zen3"
 *   other CPUs with AVX2 and FMA                  -> "haswell"
 *   anything else                                 -> BLIS's own choice
 * It only requests sets that the installed BLIS was built with.
 *
 * When: at the first libibvi call that runs a BLIS kernel (a forward pass,
 * a training step, a prediction) or the first call of a function below,
 * whichever comes first; the result holds for the life of the process.
 *
 * Switches:
 *   - BLIS_ARCH_TYPE in the environment: the user's choice is respected;
 *     libibvi changes nothing (origin IBVI_KERNEL_USER).
 *   - IBVI_BLIS_ARCH=off (any value other than "auto" or empty): no
 *     selection, BLIS chooses alone (IBVI_KERNEL_DISABLED). The build
 *     option -Dblis_arch_select=false does the same for a whole build.
 *
 * Host programs that use BLIS themselves share the process's one BLIS:
 *   - if libibvi's selection runs first, the host's BLIS calls also run on
 *     the kernel set libibvi chose;
 *   - if the host initialised BLIS first, its choice stands and libibvi
 *     reports IBVI_KERNEL_PREINITIALIZED.
 * The request is made by setting BLIS_ARCH_TYPE while BLIS initialises and
 * removing it right after, so the environment ends as it began. POSIX
 * setenv is not safe against other threads reading the environment at that
 * moment: a multi-threaded host should call ibvi_kernel_name() once at
 * startup, before it starts threads. See docs/performance.md.
 *
 * SPDX-License-Identifier: MIT
 */
#ifndef IBVI_KERNEL_H
#define IBVI_KERNEL_H

#include "common.h"

#ifdef __cplusplus
extern "C" {
#endif

/* How the kernel set was chosen. The numbers are part of the ABI. */
typedef enum ibvi_kernel_origin {
    IBVI_KERNEL_BLIS = 0,           /* BLIS's own choice: libibvi had no
                                       better one for this CPU            */
    IBVI_KERNEL_SELECTED = 1,       /* requested by libibvi for this CPU   */
    IBVI_KERNEL_USER = 2,           /* the user's BLIS_ARCH_TYPE           */
    IBVI_KERNEL_DISABLED = 3,       /* selection off (IBVI_BLIS_ARCH or the
                                       build option): BLIS's own choice   */
    IBVI_KERNEL_PREINITIALIZED = 4  /* BLIS was initialised before libibvi
                                       could choose: BLIS's choice stands */
} ibvi_kernel_origin;

/* The BLIS sub-configuration libibvi's kernels run on, e.g. "skx", as
 * static text; never NULL. Makes the choice first if not made yet.
 * Thread-safe. */
IBVI_API const char *ibvi_kernel_name(void);

/* How that kernel set was chosen: an ibvi_kernel_origin. Thread-safe. */
IBVI_API int32_t ibvi_kernel_get_origin(void);

/* One line for logs, e.g. "skx (selected by libibvi: the CPU has AVX-512)",
 * as static text; never NULL. Thread-safe. */
IBVI_API const char *ibvi_kernel_description(void);

#ifdef __cplusplus
}
#endif

#endif /* IBVI_KERNEL_H */
