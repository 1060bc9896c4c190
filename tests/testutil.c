/*
 * libibvi tests - helpers shared by the Check suites (see testutil.h).
 *
 * SPDX-License-Identifier: MIT
 */
#include "testutil.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- random numbers (splitmix64) ------------------------------------------ */

void tu_rng_seed(tu_rng *r, uint64_t seed)
{
    r->s = seed ^ 0x9e3779b97f4a7c15ULL;
    r->has_spare = 0;
    r->spare = 0.0;
}

uint64_t tu_rng_u64(tu_rng *r)
{
    uint64_t z = (r->s += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

double tu_rng_uniform(tu_rng *r)
{
    return (double)(tu_rng_u64(r) >> 11) * (1.0 / 9007199254740992.0);
}

double tu_rng_normal(tu_rng *r)
{
    if (r->has_spare) {
        r->has_spare = 0;
        return r->spare;
    }
    double u1, u2;
    do {
        u1 = tu_rng_uniform(r);
    } while (u1 <= 0.0);
    u2 = tu_rng_uniform(r);
    double rad = sqrt(-2.0 * log(u1));
    double ang = 2.0 * 3.14159265358979323846 * u2;
    r->spare = rad * sin(ang);
    r->has_spare = 1;
    return rad * cos(ang);
}

int32_t tu_rng_int(tu_rng *r, int32_t n)
{
    return (int32_t)(tu_rng_u64(r) % (uint64_t)n);
}

void tu_fill_normal_f(tu_rng *r, float *x, int64_t n, double std)
{
    for (int64_t i = 0; i < n; i++)
        x[i] = (float)(std * tu_rng_normal(r));
}

void tu_fill_normal_d(tu_rng *r, double *x, int64_t n, double std)
{
    for (int64_t i = 0; i < n; i++)
        x[i] = std * tu_rng_normal(r);
}

/* ---- linear algebra -------------------------------------------------------- */

void tu_matmul(const double *a, const double *b, double *c, int m, int k,
               int n)
{
    for (int i = 0; i < m; i++)
        for (int j = 0; j < n; j++) {
            double s = 0.0;
            for (int l = 0; l < k; l++)
                s += a[(size_t)i * k + l] * b[(size_t)l * n + j];
            c[(size_t)i * n + j] = s;
        }
}

void tu_matmul_tn(const double *a, const double *b, double *c, int k, int m,
                  int n)
{
    for (int i = 0; i < m; i++)
        for (int j = 0; j < n; j++) {
            double s = 0.0;
            for (int l = 0; l < k; l++)
                s += a[(size_t)l * m + i] * b[(size_t)l * n + j];
            c[(size_t)i * n + j] = s;
        }
}

void tu_matmul_nt(const double *a, const double *b, double *c, int m, int k,
                  int n)
{
    for (int i = 0; i < m; i++)
        for (int j = 0; j < n; j++) {
            double s = 0.0;
            for (int l = 0; l < k; l++)
                s += a[(size_t)i * k + l] * b[(size_t)j * k + l];
            c[(size_t)i * n + j] = s;
        }
}

double tu_norm2(const double *x, int64_t n)
{
    double s = 0.0;
    for (int64_t i = 0; i < n; i++)
        s += x[i] * x[i];
    return sqrt(s);
}

double tu_dist2(const double *x, const double *y, int64_t n)
{
    double s = 0.0;
    for (int64_t i = 0; i < n; i++)
        s += (x[i] - y[i]) * (x[i] - y[i]);
    return sqrt(s);
}

int tu_cholesky(double *a, int n)
{
    for (int j = 0; j < n; j++) {
        double d = a[(size_t)j * n + j];
        for (int k = 0; k < j; k++)
            d -= a[(size_t)j * n + k] * a[(size_t)j * n + k];
        if (!(d > 0.0))
            return -1;
        d = sqrt(d);
        a[(size_t)j * n + j] = d;
        for (int i = j + 1; i < n; i++) {
            double s = a[(size_t)i * n + j];
            for (int k = 0; k < j; k++)
                s -= a[(size_t)i * n + k] * a[(size_t)j * n + k];
            a[(size_t)i * n + j] = s / d;
        }
    }
    return 0;
}

void tu_cholesky_solve(const double *l, double *b, int n, int nrhs)
{
    for (int c = 0; c < nrhs; c++) {
        /* forward: L y = b */
        for (int i = 0; i < n; i++) {
            double s = b[(size_t)i * nrhs + c];
            for (int k = 0; k < i; k++)
                s -= l[(size_t)i * n + k] * b[(size_t)k * nrhs + c];
            b[(size_t)i * nrhs + c] = s / l[(size_t)i * n + i];
        }
        /* backward: L^T x = y */
        for (int i = n - 1; i >= 0; i--) {
            double s = b[(size_t)i * nrhs + c];
            for (int k = i + 1; k < n; k++)
                s -= l[(size_t)k * n + i] * b[(size_t)k * nrhs + c];
            b[(size_t)i * nrhs + c] = s / l[(size_t)i * n + i];
        }
    }
}

void tu_jacobi_eigenvalues(double *a, int n, double *eig)
{
    for (int sweep = 0; sweep < 100; sweep++) {
        double off = 0.0, diag = 0.0;
        for (int i = 0; i < n; i++) {
            diag += a[(size_t)i * n + i] * a[(size_t)i * n + i];
            for (int j = i + 1; j < n; j++)
                off += a[(size_t)i * n + j] * a[(size_t)i * n + j];
        }
        if (off <= 1e-30 * (diag + 1e-300))
            break;
        for (int p = 0; p < n; p++)
            for (int q = p + 1; q < n; q++) {
                double apq = a[(size_t)p * n + q];
                if (apq == 0.0)
                    continue;
                double app = a[(size_t)p * n + p], aqq = a[(size_t)q * n + q];
                double theta = (aqq - app) / (2.0 * apq);
                double t = (theta >= 0 ? 1.0 : -1.0) /
                           (fabs(theta) + sqrt(theta * theta + 1.0));
                double c = 1.0 / sqrt(t * t + 1.0), s = t * c;
                for (int k = 0; k < n; k++) {
                    double akp = a[(size_t)k * n + p], akq = a[(size_t)k * n + q];
                    a[(size_t)k * n + p] = c * akp - s * akq;
                    a[(size_t)k * n + q] = s * akp + c * akq;
                }
                for (int k = 0; k < n; k++) {
                    double apk = a[(size_t)p * n + k], aqk = a[(size_t)q * n + k];
                    a[(size_t)p * n + k] = c * apk - s * aqk;
                    a[(size_t)q * n + k] = s * apk + c * aqk;
                }
            }
    }
    for (int i = 0; i < n; i++)
        eig[i] = a[(size_t)i * n + i];
}

double tu_nuclear_norm(const double *a, int m, int n)
{
    double *g = malloc(sizeof(double) * (size_t)n * n);
    double *e = malloc(sizeof(double) * (size_t)n);
    ck_assert_ptr_nonnull(g);
    ck_assert_ptr_nonnull(e);
    tu_matmul_tn(a, a, g, m, n, n);
    tu_jacobi_eigenvalues(g, n, e);
    double s = 0.0;
    for (int i = 0; i < n; i++)
        s += sqrt(e[i] > 0.0 ? e[i] : 0.0);
    free(g);
    free(e);
    return s;
}

/* ---- networks --------------------------------------------------------------- */

ibvi_net *tu_net_new(int32_t input_dim, const ibvi_allocator *alloc)
{
    ibvi_net *net = NULL;
    CK_OK(ibvi_net_create(&net, input_dim, alloc));
    ck_assert_ptr_nonnull(net);
    return net;
}

ibvi_layer *tu_layer(ibvi_net *net, int32_t i)
{
    ibvi_layer *l = NULL;
    CK_OK(ibvi_net_layer(net, i, &l));
    ck_assert_ptr_nonnull(l);
    return l;
}

float *tu_get_mean(ibvi_layer *layer, int64_t *p)
{
    int64_t n = ibvi_layer_param_count(layer);
    ck_assert_int_gt(n, 0);
    float *m = malloc(sizeof(float) * (size_t)n);
    ck_assert_ptr_nonnull(m);
    CK_OK(ibvi_layer_get_mean(layer, m, n));
    if (p)
        *p = n;
    return m;
}

float *tu_get_factor(ibvi_layer *layer, int64_t *len)
{
    int32_t rank = 0;
    CK_OK(ibvi_layer_shape(layer, NULL, NULL, &rank));
    ck_assert_int_gt(rank, 0);
    int64_t n = ibvi_layer_param_count(layer) * rank;
    float *f = malloc(sizeof(float) * (size_t)n);
    ck_assert_ptr_nonnull(f);
    CK_OK(ibvi_layer_get_factor(layer, f, n));
    if (len)
        *len = n;
    return f;
}

/* ---- counting allocator ----------------------------------------------------- */

#define TU_HDR 16 /* keeps the user pointer 16-byte aligned on malloc memory */

static void *tu_count_alloc(void *opaque, size_t size)
{
    tu_alloc_stats *st = opaque;
    if (st->fail_after >= 0 && st->allocs >= st->fail_after) {
        st->failed++;
        return NULL;
    }
    unsigned char *p = malloc(size + TU_HDR);
    if (!p)
        return NULL;
    memcpy(p, &size, sizeof size);
    st->allocs++;
    st->live_bytes += size;
    if (((uintptr_t)(p + TU_HDR)) % 8 != 0)
        st->misaligned++;
    return p + TU_HDR;
}

static void tu_count_free(void *opaque, void *ptr)
{
    tu_alloc_stats *st = opaque;
    if (!ptr) {
        st->null_frees++;
        return;
    }
    unsigned char *p = (unsigned char *)ptr - TU_HDR;
    size_t size;
    memcpy(&size, p, sizeof size);
    st->frees++;
    st->live_bytes -= size;
    free(p);
}

ibvi_allocator tu_counting_allocator(tu_alloc_stats *stats)
{
    ibvi_allocator a;
    a.alloc = tu_count_alloc;
    a.free = tu_count_free;
    a.opaque = stats;
    return a;
}

/* ---- running ------------------------------------------------------------------ */

TCase *tu_tcase(const char *name)
{
    TCase *tc = tcase_create(name);
    tcase_set_timeout(tc, TU_TIMEOUT);
    return tc;
}

int tu_run_suite(Suite *s)
{
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}

static float *naive_alloc(int64_t n)
{
    float *p = malloc(sizeof(float) * (size_t)(n > 0 ? n : 1));
    ck_assert_ptr_nonnull(p);
    return p;
}

void tu_predict_vs_naive(ibvi_net *const *nets, int32_t count, int32_t K,
                         uint64_t seed, int64_t n, tu_naive_predict *out)
{
    const int32_t classes = ibvi_net_output_dim(nets[0]);
    const int32_t in_dim = ibvi_net_input_dim(nets[0]);
    const int32_t ns = ibvi_net_noise_size(nets[0]);
    ibvi_predictor *pred = NULL;
    if (count == 1)
        CK_OK(ibvi_predictor_create(&pred, nets[0], K, seed));
    else
        CK_OK(ibvi_predictor_create_ensemble(&pred, nets, count, K, seed));
    const int64_t zl = (int64_t)count * K * ns;
    float *z = naive_alloc(zl);
    CK_OK(ibvi_predictor_noise(pred, z, zl));
    tu_rng rng;
    tu_rng_seed(&rng, seed + 1);
    float *x = naive_alloc(n * in_dim);
    tu_fill_normal_f(&rng, x, n * in_dim, 1.0);
    float *probs = naive_alloc(n * classes), *logits = naive_alloc(n * classes);
    double *ref = calloc((size_t)(n * classes), sizeof(double));
    ck_assert_ptr_nonnull(ref);
    CK_OK(ibvi_predictor_run(pred, x, n, probs, NULL, NULL, NULL));
    for (int32_t m = 0; m < count; m++)
        for (int32_t k = 0; k < K; k++) {
            const float *zk = z + ((int64_t)m * K + k) * ns;
            CK_OK(ibvi_net_forward_noise(nets[m], x, n, 1, ns ? zk : NULL, ns,
                                         logits));
            for (int64_t i = 0; i < n; i++) {
                const float *l = logits + i * classes;
                double mx = l[0], sum = 0.0;
                for (int32_t c = 1; c < classes; c++)
                    mx = l[c] > mx ? l[c] : mx;
                for (int32_t c = 0; c < classes; c++)
                    sum += exp(l[c] - mx);
                for (int32_t c = 0; c < classes; c++)
                    ref[i * classes + c] +=
                        exp(l[c] - mx) / sum / ((double)count * K);
            }
        }
    double worst = 0.0;
    for (int64_t i = 0; i < n * classes; i++) {
        const double d = fabs(probs[i] - ref[i]);
        worst = d > worst ? d : worst;
    }
    free(z);
    free(logits);
    ibvi_predictor_free(pred);
    *out = (tu_naive_predict){.n = n, .classes = classes, .x = x,
                              .probs = probs, .ref = ref, .worst = worst};
}

void tu_naive_predict_free(tu_naive_predict *r)
{
    free(r->x);
    free(r->probs);
    free(r->ref);
    *r = (tu_naive_predict){0};
}
