/*
 * libibvi - CPU feature detection for the BLIS kernel selection (cpu.h).
 *
 * SPDX-License-Identifier: MIT
 */
#include <string.h>

#include "cpu.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <cpuid.h>

/* Bits of cpuid leaf 1 (ECX) and leaf 7 sub-leaf 0 (EBX). */
enum {
    LEAF1_FMA = 1u << 12,
    LEAF1_OSXSAVE = 1u << 27,
    LEAF1_AVX = 1u << 28,
    LEAF7_AVX2 = 1u << 5,
    LEAF7_AVX512F = 1u << 16,
    LEAF7_AVX512DQ = 1u << 17,
    LEAF7_AVX512CD = 1u << 28,
    LEAF7_AVX512BW = 1u << 30,
    LEAF7_AVX512VL = 1u << 31,
};

/* Register state the OS saves (XCR0): SSE+AVX, and AVX-512's opmask and
 * upper ZMM registers. */
enum { XCR0_YMM = 0x6, XCR0_ZMM = 0xE0 };

static unsigned long long read_xcr0(void)
{
    unsigned int eax, edx;
    /* xgetbv with ecx = 0, as bytes: older assemblers lack the mnemonic. */
    __asm__ volatile(".byte 0x0f, 0x01, 0xd0" : "=a"(eax), "=d"(edx) : "c"(0));
    return ((unsigned long long)edx << 32) | eax;
}

static int vendor_is_amd(void)
{
    unsigned int max_leaf, ebx, ecx, edx;
    char vendor[13];
    __cpuid(0, max_leaf, ebx, ecx, edx);
    memcpy(vendor, &ebx, 4);
    memcpy(vendor + 4, &edx, 4);
    memcpy(vendor + 8, &ecx, 4);
    vendor[12] = '\0';
    return strcmp(vendor, "AuthenticAMD") == 0 ||
           strcmp(vendor, "HygonGenuine") == 0;
}

void ibvi__cpu_detect(ibvi__cpu_features *out)
{
    memset(out, 0, sizeof *out);
    out->x86_64 = 1;
    out->amd = vendor_is_amd();
    unsigned int eax, ebx, ecx, edx;
    if (!__get_cpuid(1, &eax, &ebx, &ecx, &edx))
        return;
    const unsigned int leaf1_ecx = ecx;
    if (!(leaf1_ecx & LEAF1_OSXSAVE))
        return; /* the OS does not save AVX state: no AVX at all */
    const unsigned long long xcr0 = read_xcr0();
    if (!__get_cpuid_count(7, 0, &eax, &ebx, &ecx, &edx))
        return;
    const unsigned int leaf7_ebx = ebx;
    const int ymm = (xcr0 & XCR0_YMM) == XCR0_YMM;
    const int zmm = ymm && (xcr0 & XCR0_ZMM) == XCR0_ZMM;
    const unsigned int avx512_all = LEAF7_AVX512F | LEAF7_AVX512DQ |
                                    LEAF7_AVX512CD | LEAF7_AVX512BW |
                                    LEAF7_AVX512VL;
    out->avx2_fma = ymm && (leaf1_ecx & LEAF1_AVX) && (leaf1_ecx & LEAF1_FMA) &&
                    (leaf7_ebx & LEAF7_AVX2);
    out->avx512 = out->avx2_fma && zmm &&
                  (leaf7_ebx & avx512_all) == avx512_all;
}
#else
void ibvi__cpu_detect(ibvi__cpu_features *out)
{
    memset(out, 0, sizeof *out);
}
#endif

const char *ibvi__cpu_blis_arch(const ibvi__cpu_features *f)
{
    if (!f->x86_64 || !f->avx2_fma)
        return NULL;
    /* AMD's AVX-512 parts (Zen 4, Zen 5) get zen3: that is the kernel
     * measured on Zen 5; skx's blocking targets Intel's caches. */
    if (f->amd)
        return "zen3";
    return f->avx512 ? "skx" : "haswell";
}
