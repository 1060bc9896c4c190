/*
 * libibvi - what the CPU can run, and the BLIS sub-configuration that suits
 * it best (kernel selection, docs/performance.md).
 *
 * Debian's BLIS 0.9 picks its kernels from a table of CPU models it knew in
 * 2022. On newer or virtualised CPUs it falls back to a slower choice: the
 * SSE `generic` kernel on AMD Zen 5, and `haswell` (AVX2) instead of `skx`
 * (AVX-512) on an AVX-512 Xeon whose model string a hypervisor hides. The
 * choice below depends only on the instruction sets the CPU and the
 * operating system support, so it also holds for CPUs BLIS does not know.
 *
 * SPDX-License-Identifier: MIT
 */
#ifndef IBVI_CPU_H
#define IBVI_CPU_H

/* Instruction sets usable by this process: the CPU has them and the
 * operating system saves their registers on a context switch. */
typedef struct ibvi__cpu_features {
    int x86_64;      /* the other fields are meaningful only when 1 */
    int amd;         /* vendor AuthenticAMD or HygonGenuine */
    int avx2_fma;    /* AVX, AVX2 and FMA3, with OS support for YMM */
    int avx512;      /* AVX-512 F, DQ, CD, BW and VL, with OS support for ZMM */
} ibvi__cpu_features;

/* Reads the features of the CPU this process runs on (cpuid, xgetbv);
 * all zero on other architectures. */
void ibvi__cpu_detect(ibvi__cpu_features *out);

/* The BLIS sub-configuration name to request for a CPU with these features
 * ("skx", "zen3", "haswell"), or NULL to leave the choice to BLIS:
 *   - Intel (or other non-AMD) with AVX-512: "skx". Measured on a virtual
 *     Sapphire Rapids Xeon, where BLIS chose haswell: sgemm 1024^3 on one
 *     thread runs at 98 GFLOP/s on skx against 58 on haswell.
 *   - AMD with AVX2 and FMA: "zen3" (Zen 3 to Zen 5; measured on Zen 5,
 *     where BLIS 0.9 chose generic: 95 GFLOP/s against 30).
 *   - any other CPU with AVX2 and FMA: "haswell".
 *   - no AVX2 + FMA, or not x86-64: NULL. */
const char *ibvi__cpu_blis_arch(const ibvi__cpu_features *features);

#endif /* IBVI_CPU_H */
