/*
 * libibvi - BLIS-backed kernels. The only file that includes blis.h.
 *
 * Every call carries its own BLIS runtime object (rntm_t) with the calling
 * network's thread count, so one network's setting never changes another's
 * nor the host's own BLIS calls.
 *
 * SPDX-License-Identifier: MIT
 */
#include <blis.h>

#include "kernels.h"

static void runtime_for(rntm_t *rntm, int32_t threads)
{
    bli_rntm_init(rntm);
    bli_rntm_set_num_threads(threads > 0 ? threads : 1, rntm);
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

void ibvi__gemv(int32_t threads, int64_t m, int64_t n, float alpha,
                const float *a, int64_t lda, const float *x, float beta,
                float *y)
{
    if (m == 0)
        return;
    rntm_t rntm;
    runtime_for(&rntm, threads);
    bli_sgemv_ex(BLIS_NO_TRANSPOSE, BLIS_NO_CONJUGATE, (dim_t)m, (dim_t)n,
                 &alpha, (float *)a, (inc_t)lda, 1, (float *)x, 1, &beta, y, 1,
                 NULL, &rntm);
}

void ibvi__outer(int32_t threads, int64_t m, int64_t n, const float *x,
                 const float *y, float *a, int64_t lda)
{
    if (m == 0 || n == 0)
        return;
    rntm_t rntm;
    runtime_for(&rntm, threads);
    float zero = 0.0f, one = 1.0f;
    bli_ssetm_ex(BLIS_NO_CONJUGATE, 0, BLIS_NONUNIT_DIAG, BLIS_DENSE,
                 (dim_t)m, (dim_t)n, &zero, a, (inc_t)lda, 1, NULL, &rntm);
    bli_sger_ex(BLIS_NO_CONJUGATE, BLIS_NO_CONJUGATE, (dim_t)m, (dim_t)n, &one,
                (float *)x, 1, (float *)y, 1, a, (inc_t)lda, 1, NULL, &rntm);
}
