/*
 * libibvi - BLIS-backed kernels, and the choice of the BLIS kernel set they
 * run on. The only file that includes blis.h.
 *
 * Every call carries its own BLIS runtime object (rntm_t) with the calling
 * network's thread count, so one network's setting never changes another's
 * nor the host's own BLIS calls.
 *
 * SPDX-License-Identifier: MIT
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* sched_getaffinity, CPU_COUNT; also setenv, unsetenv */
#endif
#include <blis.h>

#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <unistd.h>

#include "cpu.h"
#include "ibvi/kernel.h"
#include "internal.h"
#include "kernels.h"

/* ---- Kernel selection (include/ibvi/kernel.h) ----------------------------
 * BLIS reads BLIS_ARCH_TYPE once, when it initialises. select_kernel() sets
 * it to the id of the kernel set cpu.c chooses, initialises BLIS, and
 * removes it again. It runs once per process, before libibvi's first BLIS
 * call. */

static struct {
    pthread_once_t once;
    int32_t origin;
    const char *name;
    char description[160];
} kernel = {.once = PTHREAD_ONCE_INIT};

/* 1 when the BLIS headers say the library was built with this kernel set:
 * requesting one it lacks makes BLIS abort the process. */
static int blis_has_config(const char *name)
{
    static const char *const built[] = {
#ifdef BLIS_CONFIG_SKX
        "skx",
#endif
#ifdef BLIS_CONFIG_HASWELL
        "haswell",
#endif
#ifdef BLIS_CONFIG_ZEN3
        "zen3",
#endif
        NULL};
    for (int i = 0; built[i]; i++)
        if (strcmp(built[i], name) == 0)
            return 1;
    return 0;
}

/* BLIS's id for a sub-configuration name, as the loaded library numbers
 * them, or -1. */
static int blis_arch_id(const char *name)
{
    for (int id = 0; id < BLIS_NUM_ARCHS; id++) {
        const char *s = bli_arch_string((arch_t)id);
        if (s && strcmp(s, name) == 0)
            return id;
    }
    return -1;
}

/* 1 when the user (or the build) turned the selection off. */
static int selection_disabled(const char **why)
{
#ifdef IBVI_NO_ARCH_SELECT
    *why = "built with -Dblis_arch_select=false";
    return 1;
#else
    const char *v = getenv("IBVI_BLIS_ARCH");
    *why = "IBVI_BLIS_ARCH is set";
    return v && v[0] != '\0' && strcmp(v, "auto") != 0;
#endif
}

static const char *running_arch(void)
{
    const char *s = bli_arch_string(bli_arch_query_id());
    return s ? s : "unknown";
}

/* Asks BLIS for `wanted` while it initialises; returns the origin. */
static int32_t request_kernel(const char *wanted, const char **note)
{
    const int id = blis_arch_id(wanted);
    if (!blis_has_config(wanted) || id < 0) {
        *note = "the installed BLIS lacks the kernel set for this CPU";
        bli_init();
        return IBVI_KERNEL_BLIS;
    }
    char value[16];
    snprintf(value, sizeof value, "%d", id);
    setenv("BLIS_ARCH_TYPE", value, 1);
    bli_init();
    unsetenv("BLIS_ARCH_TYPE");
    if (strcmp(running_arch(), wanted) != 0) {
        *note = "BLIS was initialised before libibvi could choose";
        return IBVI_KERNEL_PREINITIALIZED;
    }
    return IBVI_KERNEL_SELECTED;
}

static void select_kernel(void)
{
    ibvi__cpu_features cpu;
    ibvi__cpu_detect(&cpu);
    const char *wanted = ibvi__cpu_blis_arch(&cpu);
    const char *user = getenv("BLIS_ARCH_TYPE");
    const char *note = "";
    if (user) {
        kernel.origin = IBVI_KERNEL_USER;
        bli_init();
    } else if (selection_disabled(&note)) {
        kernel.origin = IBVI_KERNEL_DISABLED;
        bli_init();
    } else if (!wanted) {
        kernel.origin = IBVI_KERNEL_BLIS;
        note = "no AVX2 + FMA on this CPU";
        bli_init();
    } else {
        kernel.origin = request_kernel(wanted, &note);
    }
    kernel.name = running_arch();
    switch (kernel.origin) {
    case IBVI_KERNEL_SELECTED:
        snprintf(kernel.description, sizeof kernel.description,
                 "%s (selected by libibvi: the CPU has %s)", kernel.name,
                 cpu.avx512 && !cpu.amd ? "AVX-512" : "AVX2 + FMA");
        break;
    case IBVI_KERNEL_USER:
        snprintf(kernel.description, sizeof kernel.description,
                 "%s (BLIS_ARCH_TYPE=%.40s set by the user)", kernel.name,
                 user);
        break;
    case IBVI_KERNEL_PREINITIALIZED:
        snprintf(kernel.description, sizeof kernel.description,
                 "%s (BLIS's own choice: %s; libibvi would use %s)",
                 kernel.name, note, wanted);
        break;
    default:
        snprintf(kernel.description, sizeof kernel.description,
                 "%s (BLIS's own choice: %s)", kernel.name, note);
        break;
    }
}

static void ensure_kernel_selected(void)
{
    pthread_once(&kernel.once, select_kernel);
}

const char *ibvi_kernel_name(void)
{
    ensure_kernel_selected();
    return kernel.name;
}

int32_t ibvi_kernel_get_origin(void)
{
    ensure_kernel_selected();
    return kernel.origin;
}

const char *ibvi_kernel_description(void)
{
    ensure_kernel_selected();
    return kernel.description;
}

/* ---- Threads (internal.h) ------------------------------------------------ */

/* The CPUs this process may run on, >= 1. */
static int32_t available_cpus(void)
{
#if defined(__linux__) && defined(CPU_COUNT)
    cpu_set_t set;
    CPU_ZERO(&set);
    if (sched_getaffinity(0, sizeof set, &set) == 0) {
        const int count = CPU_COUNT(&set);
        if (count >= 1)
            return count;
    }
#endif
    const long online = sysconf(_SC_NPROCESSORS_ONLN);
    return online >= 1 ? (online < INT32_MAX ? (int32_t)online : INT32_MAX)
                       : 1;
}

int32_t ibvi__threads_in_effect(int32_t requested)
{
    if (requested <= 1)
        return 1;
    const int32_t cpus = available_cpus();
    return requested < cpus ? requested : cpus;
}

/* ---- Kernels ------------------------------------------------------------ */

static void runtime_for(rntm_t *rntm, int32_t threads)
{
    ensure_kernel_selected();
    bli_rntm_init(rntm);
    bli_rntm_set_num_threads(ibvi__threads_in_effect(threads), rntm);
    /* BLIS 0.9's small-matrix ("sup") kernels read a few floats past the end
     * of their operands for some shapes and strides (upstream issues 635 and
     * 824): found by guard-page tests of the predictor. The conventional
     * path reads only what it should, so use it for every call. */
    bli_rntm_disable_l3_sup(rntm);
}

void ibvi__gemm(int32_t threads, int trans_a, int trans_b, int64_t m,
                int64_t n, int64_t k, float alpha, const float *a, int64_t lda,
                const float *b, int64_t ldb, float beta, float *c, int64_t ldc)
{
    if (m == 0 || n == 0)
        return;
    rntm_t rntm;
    runtime_for(&rntm, threads);
    /* BLIS takes non-const pointers but does not write A or B. */
    bli_sgemm_ex(trans_a ? BLIS_TRANSPOSE : BLIS_NO_TRANSPOSE,
                 trans_b ? BLIS_TRANSPOSE : BLIS_NO_TRANSPOSE,
                 (dim_t)m, (dim_t)n, (dim_t)k, &alpha,
                 (float *)a, (inc_t)lda, 1, (float *)b, (inc_t)ldb, 1,
                 &beta, c, (inc_t)ldc, 1, NULL, &rntm);
}

void ibvi__gemm_strided(int32_t threads, int64_t m, int64_t n, int64_t k,
                        float alpha, const float *a, int64_t rs_a,
                        int64_t cs_a, const float *b, int64_t rs_b,
                        int64_t cs_b, float beta, float *c, int64_t rs_c,
                        int64_t cs_c)
{
    if (m == 0 || n == 0)
        return;
    rntm_t rntm;
    runtime_for(&rntm, threads);
    bli_sgemm_ex(BLIS_NO_TRANSPOSE, BLIS_NO_TRANSPOSE, (dim_t)m, (dim_t)n,
                 (dim_t)k, &alpha, (float *)a, (inc_t)rs_a, (inc_t)cs_a,
                 (float *)b, (inc_t)rs_b, (inc_t)cs_b, &beta, c, (inc_t)rs_c,
                 (inc_t)cs_c, NULL, &rntm);
}

void ibvi__dgemm(int32_t threads, int trans_a, int trans_b, int64_t m,
                 int64_t n, int64_t k, double alpha, const double *a,
                 int64_t lda, const double *b, int64_t ldb, double beta,
                 double *c, int64_t ldc)
{
    if (m == 0 || n == 0)
        return;
    rntm_t rntm;
    runtime_for(&rntm, threads);
    bli_dgemm_ex(trans_a ? BLIS_TRANSPOSE : BLIS_NO_TRANSPOSE,
                 trans_b ? BLIS_TRANSPOSE : BLIS_NO_TRANSPOSE,
                 (dim_t)m, (dim_t)n, (dim_t)k, &alpha,
                 (double *)a, (inc_t)lda, 1, (double *)b, (inc_t)ldb, 1,
                 &beta, c, (inc_t)ldc, 1, NULL, &rntm);
}

void ibvi__dsyrk_lower(int32_t threads, int trans_a, int64_t n, int64_t k,
                       double alpha, const double *a, int64_t lda,
                       double beta, double *c, int64_t ldc)
{
    if (n == 0)
        return;
    rntm_t rntm;
    runtime_for(&rntm, threads);
    bli_dsyrk_ex(BLIS_LOWER, trans_a ? BLIS_TRANSPOSE : BLIS_NO_TRANSPOSE,
                 (dim_t)n, (dim_t)k, &alpha, (double *)a, (inc_t)lda, 1,
                 &beta, c, (inc_t)ldc, 1, NULL, &rntm);
}

void ibvi__dtrsm_lower(int32_t threads, int side_right, int trans_l,
                       int64_t m, int64_t n, double alpha, const double *l,
                       int64_t ldl, double *b, int64_t ldb)
{
    if (m == 0 || n == 0)
        return;
    rntm_t rntm;
    runtime_for(&rntm, threads);
    /* B is m x n for a left solve, n x m for a right one. */
    const dim_t rows = side_right ? (dim_t)n : (dim_t)m;
    const dim_t cols = side_right ? (dim_t)m : (dim_t)n;
    bli_dtrsm_ex(side_right ? BLIS_RIGHT : BLIS_LEFT, BLIS_LOWER,
                 trans_l ? BLIS_TRANSPOSE : BLIS_NO_TRANSPOSE,
                 BLIS_NONUNIT_DIAG, rows, cols, &alpha, (double *)l,
                 (inc_t)ldl, 1, b, (inc_t)ldb, 1, NULL, &rntm);
}
