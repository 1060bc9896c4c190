/*
 * libibvi - dense double-precision linear algebra (linalg.h).
 *
 * The Cholesky factorisation is blocked (left-looking, by block columns of
 * CHOL_BLOCK): each diagonal block takes the update of the columns to its
 * left (a SYRK), is factored by the unblocked loop, and the panel below it
 * takes its update (a GEMM) and a triangular solve, so almost all of the
 * n^3 / 3 multiply-adds run in BLIS.
 *
 * SPDX-License-Identifier: MIT
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kernels.h"
#include "linalg.h"

#define CHOL_BLOCK 96

/* The unblocked factorisation of one diagonal block (its update done). */
static int64_t cholesky_unblocked(int64_t n, double *a, int64_t lda)
{
    for (int64_t j = 0; j < n; j++) {
        double *rj = a + j * lda;
        double d = rj[j];
        for (int64_t k = 0; k < j; k++)
            d -= rj[k] * rj[k];
        if (!(d > 0.0) || !isfinite(d))
            return j + 1;
        const double ljj = sqrt(d), inv = 1.0 / ljj;
        rj[j] = ljj;
        for (int64_t i = j + 1; i < n; i++) {
            double *ri = a + i * lda;
            double s = ri[j];
            for (int64_t k = 0; k < j; k++)
                s -= ri[k] * rj[k];
            ri[j] = s * inv;
        }
    }
    return 0;
}

int64_t ibvi__cholesky(int32_t threads, int64_t n, double *a, int64_t lda)
{
    for (int64_t k0 = 0; k0 < n; k0 += CHOL_BLOCK) {
        const int64_t kb = n - k0 < CHOL_BLOCK ? n - k0 : CHOL_BLOCK;
        double *diag = a + k0 * lda + k0;
        /* A11 -= L10 L10^T */
        if (k0 > 0)
            ibvi__dsyrk_lower(threads, 0, kb, k0, -1.0, a + k0 * lda, lda,
                              1.0, diag, lda);
        const int64_t bad = cholesky_unblocked(kb, diag, lda);
        if (bad)
            return k0 + bad;
        const int64_t rest = n - k0 - kb;
        if (rest > 0) {
            double *panel = a + (k0 + kb) * lda + k0;
            /* A21 -= L20 L10^T, then A21 L11^-T */
            if (k0 > 0)
                ibvi__dgemm(threads, 0, 1, rest, kb, k0, -1.0,
                            a + (k0 + kb) * lda, lda, a + k0 * lda, lda, 1.0,
                            panel, lda);
            ibvi__dtrsm_lower(threads, 1, 1, kb, rest, 1.0, diag, lda, panel,
                              lda);
        }
    }
    for (int64_t i = 0; i < n; i++)
        memset(a + i * lda + i + 1, 0, (size_t)(n - i - 1) * sizeof(double));
    return 0;
}

double ibvi__cholesky_logdet(int64_t n, const double *l, int64_t ldl)
{
    double s = 0.0;
    for (int64_t i = 0; i < n; i++)
        s += log(l[i * ldl + i]);
    return 2.0 * s;
}

void ibvi__lower_inverse(int32_t threads, int64_t n, const double *l,
                         int64_t ldl, double *out, int64_t ldo)
{
    for (int64_t i = 0; i < n; i++) {
        memset(out + i * ldo, 0, (size_t)n * sizeof(double));
        out[i * ldo + i] = 1.0;
    }
    ibvi__dtrsm_lower(threads, 0, 0, n, n, 1.0, l, ldl, out, ldo);
    /* The solve leaves the upper triangle zero in exact arithmetic; make
     * it exactly so. */
    for (int64_t i = 0; i < n; i++)
        memset(out + i * ldo + i + 1, 0, (size_t)(n - i - 1) * sizeof(double));
}

/* Cyclic Jacobi: sweeps of rotations over every pair (p, q) until the
 * off-diagonal mass is below 1e-30 of the total (or 100 sweeps). Each
 * rotation zeroes a[p][q] and updates rows and columns p, q of a and
 * columns p, q of v. Quadratic convergence: about 6 to 10 sweeps. */
void ibvi__symmetric_eigen(int64_t n, double *a, double *w, double *v)
{
    for (int64_t i = 0; i < n; i++)
        for (int64_t j = 0; j < n; j++)
            v[i * n + j] = i == j ? 1.0 : 0.0;
    double total = 0.0;
    for (int64_t i = 0; i < n * n; i++)
        total += a[i] * a[i];
    for (int sweep = 0; sweep < 100; sweep++) {
        double off = 0.0;
        for (int64_t p = 0; p < n; p++)
            for (int64_t q = p + 1; q < n; q++)
                off += 2.0 * a[p * n + q] * a[p * n + q];
        if (!(off > 1e-30 * total))
            break;
        for (int64_t p = 0; p < n; p++)
            for (int64_t q = p + 1; q < n; q++) {
                const double apq = a[p * n + q];
                if (apq == 0.0)
                    continue;
                const double app = a[p * n + p], aqq = a[q * n + q];
                const double theta = (aqq - app) / (2.0 * apq);
                const double t = (theta >= 0.0 ? 1.0 : -1.0) /
                                 (fabs(theta) + sqrt(theta * theta + 1.0));
                const double c = 1.0 / sqrt(t * t + 1.0), s = t * c;
                /* columns p and q of a (rows by symmetry), then the rows */
                for (int64_t k = 0; k < n; k++) {
                    const double akp = a[k * n + p], akq = a[k * n + q];
                    a[k * n + p] = c * akp - s * akq;
                    a[k * n + q] = s * akp + c * akq;
                }
                for (int64_t k = 0; k < n; k++) {
                    const double apk = a[p * n + k], aqk = a[q * n + k];
                    a[p * n + k] = c * apk - s * aqk;
                    a[q * n + k] = s * apk + c * aqk;
                }
                a[p * n + q] = a[q * n + p] = 0.0;
                for (int64_t k = 0; k < n; k++) {
                    const double vkp = v[k * n + p], vkq = v[k * n + q];
                    v[k * n + p] = c * vkp - s * vkq;
                    v[k * n + q] = s * vkp + c * vkq;
                }
            }
    }
    for (int64_t i = 0; i < n; i++)
        w[i] = a[i * n + i];
    /* Ascending order (selection sort with column swaps: n is small). */
    for (int64_t i = 0; i < n; i++) {
        int64_t m = i;
        for (int64_t j = i + 1; j < n; j++)
            if (w[j] < w[m])
                m = j;
        if (m != i) {
            const double t = w[i];
            w[i] = w[m];
            w[m] = t;
            for (int64_t k = 0; k < n; k++) {
                const double x = v[k * n + i];
                v[k * n + i] = v[k * n + m];
                v[k * n + m] = x;
            }
        }
    }
}
