/*
 * libibvi tests - helpers shared by the Check suites.
 *
 * Everything here uses the public API only: deterministic random data for
 * the tests (independent of the library's generator), small double-precision
 * linear algebra (products, a Cholesky solver, Jacobi eigenvalues), network
 * builders and a counting allocator.
 *
 * SPDX-License-Identifier: MIT
 */
#ifndef IBVI_TESTUTIL_H
#define IBVI_TESTUTIL_H

#include <stddef.h>
#include <stdint.h>

#include <check.h>

#include "ibvi/ibvi.h"

/* ---- assertions ----------------------------------------------------------- */

/* Asserts that a library call returns IBVI_OK, printing the detail message. */
#define CK_OK(expr)                                                           \
    do {                                                                      \
        int ck_ok_rc_ = (int)(expr);                                          \
        ck_assert_msg(ck_ok_rc_ == IBVI_OK, "%s returned %d (%s): %s", #expr, \
                      ck_ok_rc_, ibvi_status_string(ck_ok_rc_),               \
                      ibvi_last_error());                                     \
    } while (0)

/* Asserts that a library call returns exactly `status`. */
#define CK_STATUS(expr, status)                                               \
    do {                                                                      \
        int ck_st_rc_ = (int)(expr);                                          \
        ck_assert_msg(ck_st_rc_ == (int)(status),                             \
                      "%s returned %d (%s), expected %d (%s); last error: %s", \
                      #expr, ck_st_rc_, ibvi_status_string(ck_st_rc_),        \
                      (int)(status), ibvi_status_string((int)(status)),       \
                      ibvi_last_error());                                     \
    } while (0)

/* ---- deterministic test random numbers ------------------------------------ */

typedef struct tu_rng {
    uint64_t s;
    int has_spare;
    double spare;
} tu_rng;

void tu_rng_seed(tu_rng *r, uint64_t seed);
uint64_t tu_rng_u64(tu_rng *r);
/* Uniform in [0, 1). */
double tu_rng_uniform(tu_rng *r);
/* Standard normal (Box-Muller). */
double tu_rng_normal(tu_rng *r);
/* Uniform integer in [0, n). */
int32_t tu_rng_int(tu_rng *r, int32_t n);

void tu_fill_normal_f(tu_rng *r, float *x, int64_t n, double std);
void tu_fill_normal_d(tu_rng *r, double *x, int64_t n, double std);

/* ---- double linear algebra (row-major) ------------------------------------ */

/* C (m x n) = A (m x k) B (k x n). */
void tu_matmul(const double *a, const double *b, double *c, int m, int k,
               int n);
/* C (m x n) = A^T B with A (k x m), B (k x n). */
void tu_matmul_tn(const double *a, const double *b, double *c, int k, int m,
                  int n);
/* C (m x n) = A B^T with A (m x k), B (n x k). */
void tu_matmul_nt(const double *a, const double *b, double *c, int m, int k,
                  int n);
double tu_norm2(const double *x, int64_t n); /* Euclidean / Frobenius */
double tu_dist2(const double *x, const double *y, int64_t n);
/* In-place Cholesky A = L L^T of an n x n SPD matrix (lower part holds L).
 * Returns 0 on success, -1 if not positive definite. */
int tu_cholesky(double *a, int n);
/* Solves (L L^T) X = B in place for B (n x nrhs), L from tu_cholesky. */
void tu_cholesky_solve(const double *l, double *b, int n, int nrhs);
/* Eigenvalues of a symmetric n x n matrix by cyclic Jacobi; a is destroyed,
 * eig receives the n eigenvalues (unsorted). */
void tu_jacobi_eigenvalues(double *a, int n, double *eig);
/* Nuclear norm of an m x n matrix A (via eigenvalues of A^T A). */
double tu_nuclear_norm(const double *a, int m, int n);

/* ---- networks ------------------------------------------------------------- */

/* Creates an initialised network or fails the test. */
ibvi_net *tu_net_new(int32_t input_dim, const ibvi_allocator *alloc);
/* Borrows layer i or fails the test. */
ibvi_layer *tu_layer(ibvi_net *net, int32_t i);
/* Copies the mean of a layer into a newly malloc'ed buffer (len -> *p). */
float *tu_get_mean(ibvi_layer *layer, int64_t *p);
float *tu_get_factor(ibvi_layer *layer, int64_t *len);

/* ---- counting allocator --------------------------------------------------- */

typedef struct tu_alloc_stats {
    long allocs;     /* successful allocations                  */
    long frees;      /* frees of non-NULL pointers              */
    long null_frees; /* frees of NULL                           */
    long fail_after; /* fail allocations once allocs reaches it; -1 never */
    long failed;     /* number of refused allocations           */
    long misaligned; /* pointers not aligned to 8 bytes (never) */
    size_t live_bytes;
} tu_alloc_stats;

/* An allocator that counts into *stats (stats->fail_after = -1 to never
 * fail). Memory comes from malloc with a small header holding the size. */
ibvi_allocator tu_counting_allocator(tu_alloc_stats *stats);

/* ---- running -------------------------------------------------------------- */

/* A test case with a per-test timeout of TU_TIMEOUT seconds (Check's
 * default of 4 s is too short on a loaded machine; the suites take seconds
 * when the machine is idle). */
#define TU_TIMEOUT 300
TCase *tu_tcase(const char *name);

/* Runs a suite with CK_NORMAL output and returns the process exit status. */
int tu_run_suite(Suite *s);

/* The predictor against the naive prediction: a predictor over nets (an
 * ensemble when count > 1) with K samples and seed runs n seeded normal
 * inputs; ref is (1/(count K)) sum over members and samples of
 * softmax(ibvi_net_forward_noise) in double with the predictor's own noise.
 * Check assertions fail on any error. Release with tu_naive_predict_free. */
typedef struct tu_naive_predict {
    int64_t n;
    int32_t classes;
    float *x;      /* n x input_dim: the inputs                      */
    float *probs;  /* n x classes: the predictor's probabilities     */
    double *ref;   /* n x classes: the naive average                 */
    double worst;  /* max |probs - ref|                              */
} tu_naive_predict;
void tu_predict_vs_naive(ibvi_net *const *nets, int32_t count, int32_t K,
                         uint64_t seed, int64_t n, tu_naive_predict *out);
void tu_naive_predict_free(tu_naive_predict *r);

#endif /* IBVI_TESTUTIL_H */
