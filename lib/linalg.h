/*
 * libibvi - dense double-precision linear algebra (private): a blocked
 * Cholesky factorisation, the inverse of a triangular factor, and a
 * symmetric eigensolver (cyclic Jacobi, for the small Kronecker factors
 * of the Laplace approximation). Row-major; the GEMM-heavy parts go
 * through kernels.c.
 *
 * SPDX-License-Identifier: MIT
 */
#ifndef IBVI_LINALG_H
#define IBVI_LINALG_H

#include <stdint.h>

/* The lower Cholesky factor L of the symmetric positive definite a (n x n,
 * row stride lda; only its lower triangle is read), in place: a's lower
 * triangle becomes L (a = L L^T), its strict upper triangle is zeroed.
 * Returns 0, or j + 1 when the j-th pivot is not positive or not finite
 * (a is then partly overwritten). */
int64_t ibvi__cholesky(int32_t threads, int64_t n, double *a, int64_t lda);

/* 2 sum_i log L_ii: log det(L L^T). */
double ibvi__cholesky_logdet(int64_t n, const double *l, int64_t ldl);

/* out (n x n, row stride ldo) = L^-1 for the lower-triangular L, itself
 * lower triangular. */
void ibvi__lower_inverse(int32_t threads, int64_t n, const double *l,
                         int64_t ldl, double *out, int64_t ldo);

/* The eigendecomposition a = V diag(w) V^T of the symmetric a (n x n, row
 * stride n; destroyed), by cyclic Jacobi rotations: w (n) the eigenvalues,
 * ascending, V (n x n, row-major) their eigenvectors as columns. */
void ibvi__symmetric_eigen(int64_t n, double *a, double *w, double *v);

#endif /* IBVI_LINALG_H */
