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

/* Double precision (the Laplace approximation's Hessians, lib/linalg.c),
 * row-major, lda/ldb/ldc row strides, as ibvi__gemm. */
void ibvi__dgemm(int32_t threads, int trans_a, int trans_b, int64_t m,
                 int64_t n, int64_t k, double alpha, const double *a,
                 int64_t lda, const double *b, int64_t ldb, double beta,
                 double *c, int64_t ldc);
/* The lower triangle (diagonal included) of C (n x n) = alpha A^T A +
 * beta C for A stored k x n (trans_a = 1), or alpha A A^T + beta C for A
 * stored n x k (trans_a = 0). The strict upper triangle is not touched. */
void ibvi__dsyrk_lower(int32_t threads, int trans_a, int64_t n, int64_t k,
                       double alpha, const double *a, int64_t lda,
                       double beta, double *c, int64_t ldc);
/* Triangular solves with the lower-triangular L (m x m, non-unit
 * diagonal, its strict upper triangle ignored), in place on B:
 * side_right = 0: B (m x n) = alpha op(L)^-1 B;
 * side_right = 1: B (n x m) = alpha B op(L)^-1;
 * op(L) = L^T when trans_l = 1. */
void ibvi__dtrsm_lower(int32_t threads, int side_right, int trans_l,
                       int64_t m, int64_t n, double alpha, const double *l,
                       int64_t ldl, double *b, int64_t ldb);

#endif /* IBVI_KERNELS_H */
