/*
 * libibvi - the dense linear algebra the library needs. kernels.c is the
 * only file that includes blis.h; everything here is row-major float32.
 * Callers check shapes first: BLIS aborts the process on invalid sizes.
 *
 * SPDX-License-Identifier: MIT
 */
#ifndef IBVI_KERNELS_H
#define IBVI_KERNELS_H

#include <stdint.h>

/* C (m x n) = alpha * op(A) op(B) + beta * C, with op(A) m x k, op(B) k x n.
 * trans_a / trans_b = 1 means A (resp. B) is stored transposed (k x m /
 * n x k). lda, ldb, ldc are row strides. threads >= 1 BLIS threads. */
void ibvi__gemm(int32_t threads, int trans_a, int trans_b, int64_t m,
                int64_t n, int64_t k, float alpha, const float *a, int64_t lda,
                const float *b, int64_t ldb, float beta, float *c, int64_t ldc);

/* The same with explicit row and column strides for each matrix (BLIS's
 * general-stride interface); used where an operand is a strided view. */
void ibvi__gemm_strided(int32_t threads, int64_t m, int64_t n, int64_t k,
                        float alpha, const float *a, int64_t rs_a,
                        int64_t cs_a, const float *b, int64_t rs_b,
                        int64_t cs_b, float beta, float *c, int64_t rs_c,
                        int64_t cs_c);

#endif /* IBVI_KERNELS_H */
