/*
 * libibvi - tests of predictive averaging (include/ibvi/predictor.h).
 *
 * The reference for every prediction is a naive loop: the predictor's own
 * noise (ibvi_predictor_noise) fed one sample at a time to
 * ibvi_net_forward_noise, the softmax taken and averaged in double. The
 * networks are small and the data synthetic, drawn from a local seeded
 * generator (independent of the library's).
 *
 * The architectures are chosen so that lib/predictor.c takes each of its
 * paths (see identity_is_cheaper there; n = 23 inputs, 12-16-...-5):
 *  - R = 2, K = 16 at the first layer: low-rank identity
 *    (R + 1 = 3 passes plus the mixing GEMM against K = 16 materialised);
 *  - R = 30, K = 2 at the first layer: K materialised weight samples;
 *  - a deterministic first layer: rows stay shared, then fan out at a
 *    variational last layer (R = 3, K = 8: low-rank identity; R = 40,
 *    K = 2: materialised);
 *  - variational first and last with a deterministic hidden layer (the
 *    paper's recipe): fan-out, stacked GEMM, then per-sample GEMMs.
 *
 * SPDX-License-Identifier: MIT
 */
#define _DEFAULT_SOURCE /* mmap, sysconf */
#include <check.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "ibvi/ibvi.h"
#include "ibvi/metrics.h"
#include "ibvi/predictor.h"

#define TOL 1e-6

/* Asserts that a library call returns IBVI_OK, printing the detail message. */
#define ASSERT_OK(call)                                                       \
    do {                                                                      \
        int ok_rc_ = (int)(call);                                             \
        ck_assert_msg(ok_rc_ == IBVI_OK, "%s returned %d (%s): %s", #call,    \
                      ok_rc_, ibvi_status_string(ok_rc_), ibvi_last_error()); \
    } while (0)

/* Asserts that `call` returns `status` and leaves a message. */
#define ASSERT_FAILS(status, call)                                            \
    do {                                                                      \
        ibvi_clear_error();                                                   \
        int st_ = (int)(call);                                                \
        ck_assert_msg(st_ == (int)(status), "%s returned %d (%s), expected %d",\
                      #call, st_, ibvi_status_string(st_), (int)(status));    \
        ck_assert_msg(ibvi_last_error()[0] != '\0',                           \
                      "no error message after %s", #call);                    \
    } while (0)

/* ---- local generator (xorshift64*, Box-Muller) ---------------------------- */

static uint64_t rng_state;
static void rng_seed(uint64_t s) { rng_state = s ? s : 1; }
static uint64_t rng_next(void)
{
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * 2685821657736338717ULL;
}
static double rng_uniform(void) { return (double)(rng_next() >> 11) * 0x1p-53; }
static double rng_normal(void)
{
    double u = rng_uniform(), v = rng_uniform();
    if (u < 1e-300)
        u = 1e-300;
    return sqrt(-2.0 * log(u)) * cos(6.283185307179586 * v);
}

static float *random_inputs(int64_t n, int32_t dim, uint64_t seed)
{
    float *x = malloc((size_t)(n * dim) * sizeof *x);
    ck_assert_ptr_nonnull(x);
    rng_seed(seed);
    for (int64_t i = 0; i < n * dim; i++)
        x[i] = (float)rng_normal();
    return x;
}

/* ---- guard pages ------------------------------------------------------------
 * Buffers that end exactly at a PROT_NONE page: reading one float past the
 * end raises SIGSEGV, which Check reports as an error of the test. */

typedef struct guard_header {
    void *base;
    size_t total;
} guard_header;

static size_t page_size(void) { return (size_t)sysconf(_SC_PAGESIZE); }

/* `size` bytes ending `align`-aligned exactly at a guard page (size is
 * rounded up to align, so reads within the rounding are not caught). */
static void *guard_alloc_aligned(size_t size, size_t align)
{
    const size_t page = page_size();
    const size_t rounded = (size + align - 1) / align * align;
    const size_t hdr = (sizeof(guard_header) + 15) / 16 * 16;
    const size_t data = (rounded + hdr + page - 1) / page * page;
    const size_t total = data + page;
    char *base = mmap(NULL, total, PROT_READ | PROT_WRITE,
                      MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (base == MAP_FAILED)
        return NULL;
    if (mprotect(base + data, page, PROT_NONE) != 0) {
        munmap(base, total);
        return NULL;
    }
    char *ptr = base + data - rounded;
    guard_header h = {base, total};
    memcpy(ptr - hdr, &h, sizeof h);
    return ptr;
}

static void guard_free_ptr(void *ptr)
{
    if (!ptr)
        return;
    const size_t hdr = (sizeof(guard_header) + 15) / 16 * 16;
    guard_header h;
    memcpy(&h, (char *)ptr - hdr, sizeof h);
    munmap(h.base, h.total);
}

static long guard_allocs;

static void *guard_alloc_cb(void *opaque, size_t size)
{
    (void)opaque;
    guard_allocs++;
    return guard_alloc_aligned(size ? size : 1, 8); /* the allocator contract */
}

static void guard_free_cb(void *opaque, void *ptr)
{
    (void)opaque;
    guard_free_ptr(ptr);
}

static const ibvi_allocator GUARD_ALLOCATOR = {guard_alloc_cb, guard_free_cb,
                                               NULL};

/* ---- networks --------------------------------------------------------------- */

typedef struct net_spec {
    int32_t input_dim;
    int32_t dense;     /* number of dense layers */
    int32_t width[4];  /* outputs of each dense layer */
    int32_t rank[4];   /* rank of each dense layer */
    int32_t act;       /* activation between dense layers */
} net_spec;

static ibvi_net *build_net_with(const net_spec *s, uint64_t seed,
                                const ibvi_allocator *allocator)
{
    ibvi_net *net = NULL;
    ASSERT_OK(ibvi_net_create(&net, s->input_dim, allocator));
    for (int32_t i = 0; i < s->dense; i++) {
        if (i > 0)
            ASSERT_OK(ibvi_net_add_activation(net, s->act));
        ASSERT_OK(ibvi_net_add_dense(net, s->width[i], s->rank[i]));
    }
    /* SP: a factor sample is as large as the mean, so samples differ. */
    ASSERT_OK(ibvi_net_init(net, IBVI_PARAM_SP, seed));
    return net;
}

static ibvi_net *build_net(const net_spec *s, uint64_t seed)
{
    return build_net_with(s, seed, NULL);
}

/* The configurations of test 1 (a)-(e), plus the recipe with a
 * materialising first layer. */
static const net_spec SPEC_A = {12, 2, {16, 5}, {2, 0}, IBVI_ACT_TANH};
static const net_spec SPEC_B = {12, 2, {16, 5}, {30, 0}, IBVI_ACT_RELU};
static const net_spec SPEC_C = {12, 2, {16, 5}, {0, 3}, IBVI_ACT_TANH};
static const net_spec SPEC_C2 = {12, 2, {16, 5}, {0, 40}, IBVI_ACT_TANH};
static const net_spec SPEC_D = {12, 3, {16, 16, 5}, {2, 0, 2}, IBVI_ACT_RELU};
static const net_spec SPEC_D2 = {12, 3, {16, 16, 5}, {30, 0, 4}, IBVI_ACT_SILU};
static const net_spec SPEC_E = {12, 2, {16, 5}, {0, 0}, IBVI_ACT_TANH};

typedef struct config {
    const char *name;
    const net_spec *spec;
    int32_t samples;
} config;

static const config CONFIGS[] = {
    {"(a) first variational, R=2, K=16 (low-rank identity)", &SPEC_A, 16},
    {"(b) first variational, R=30, K=2 (materialised)", &SPEC_B, 2},
    {"(c) last layer variational only", &SPEC_C, 8},
    {"(c2) last variational only, R=40, K=2", &SPEC_C2, 2},
    {"(d) recipe 12-16-16-5, R=2/0/2, K=16", &SPEC_D, 16},
    {"(d2) recipe 12-16-16-5, R=30/0/4, K=3", &SPEC_D2, 3},
    {"(e) deterministic", &SPEC_E, 5},
};
#define NCONFIGS ((int)(sizeof CONFIGS / sizeof CONFIGS[0]))

/* ---- naive reference and helpers ----------------------------------------- */

typedef struct result {
    int64_t n;
    int32_t classes;
    double *probs, *pe, *ee, *mi;
} result;

typedef struct pred_out {
    float *probs, *pe, *ee, *mi;
} pred_out;

static void result_alloc(result *r, int64_t n, int32_t classes)
{
    r->n = n;
    r->classes = classes;
    r->probs = calloc((size_t)(n * classes), sizeof(double));
    r->pe = calloc((size_t)n, sizeof(double));
    r->ee = calloc((size_t)n, sizeof(double));
    r->mi = calloc((size_t)n, sizeof(double));
    ck_assert(r->probs && r->pe && r->ee && r->mi);
}

static void result_free(result *r)
{
    free(r->probs);
    free(r->pe);
    free(r->ee);
    free(r->mi);
}

static void pred_alloc(pred_out *o, int64_t n, int32_t classes)
{
    o->probs = malloc((size_t)(n * classes) * sizeof(float));
    o->pe = malloc((size_t)n * sizeof(float));
    o->ee = malloc((size_t)n * sizeof(float));
    o->mi = malloc((size_t)n * sizeof(float));
    ck_assert(o->probs && o->pe && o->ee && o->mi);
}

static void pred_free(pred_out *o)
{
    free(o->probs);
    free(o->pe);
    free(o->ee);
    free(o->mi);
}

static void pred_run(ibvi_predictor *p, const float *x, int64_t n,
                     pred_out *o)
{
    ASSERT_OK(ibvi_predictor_run(p, x, n, o->probs, o->pe, o->ee, o->mi));
}

static int pred_equal(const pred_out *a, const pred_out *b, int64_t n,
                      int32_t classes)
{
    return !memcmp(a->probs, b->probs, (size_t)(n * classes) * sizeof(float)) &&
           !memcmp(a->pe, b->pe, (size_t)n * sizeof(float)) &&
           !memcmp(a->ee, b->ee, (size_t)n * sizeof(float)) &&
           !memcmp(a->mi, b->mi, (size_t)n * sizeof(float));
}

/* Softmax of logits / T in double; returns its entropy. */
static double softmax_d(const float *logits, int32_t classes, double T,
                        double *p)
{
    double max = -INFINITY, z = 0.0, h = 0.0;
    for (int32_t c = 0; c < classes; c++)
        if ((double)logits[c] / T > max)
            max = (double)logits[c] / T;
    for (int32_t c = 0; c < classes; c++) {
        p[c] = exp((double)logits[c] / T - max);
        z += p[c];
    }
    for (int32_t c = 0; c < classes; c++) {
        p[c] /= z;
        if (p[c] > 0.0)
            h -= p[c] * log(p[c]);
    }
    return h;
}

static double entropy_d(const double *p, int32_t classes)
{
    double h = 0.0;
    for (int32_t c = 0; c < classes; c++)
        if (p[c] > 0.0)
            h -= p[c] * log(p[c]);
    return h;
}

/* The naive predictive average over count members x K samples: noise z is
 * member-major (count x K x noise_size), each sample run alone through
 * ibvi_net_forward_noise. */
static void naive_predict(ibvi_net *const *nets, int32_t count,
                          const float *x, int64_t n, int32_t K,
                          const float *z, double T, result *r)
{
    const int32_t classes = ibvi_net_output_dim(nets[0]);
    const int32_t ns = ibvi_net_noise_size(nets[0]);
    ck_assert_int_gt(classes, 0);
    ck_assert_int_ge(ns, 0);
    result_alloc(r, n, classes);
    float *logits = malloc((size_t)(n * classes) * sizeof(float));
    double *p = malloc((size_t)classes * sizeof(double));
    ck_assert(logits && p);
    const float dummy = 0.0f;
    const double w = 1.0 / ((double)count * K);
    for (int32_t m = 0; m < count; m++) {
        for (int32_t k = 0; k < K; k++) {
            const float *zk = ns ? z + ((int64_t)m * K + k) * ns : &dummy;
            ASSERT_OK(ibvi_net_forward_noise(nets[m], x, n, 1, zk, ns, logits));
            for (int64_t i = 0; i < n; i++) {
                const double h = softmax_d(logits + i * classes, classes, T, p);
                r->ee[i] += w * h;
                for (int32_t c = 0; c < classes; c++)
                    r->probs[i * classes + c] += w * p[c];
            }
        }
    }
    for (int64_t i = 0; i < n; i++) {
        r->pe[i] = entropy_d(r->probs + i * classes, classes);
        r->mi[i] = r->pe[i] - r->ee[i];
    }
    free(logits);
    free(p);
}

/* The predictor's noise (count x K x noise_size floats, at least one). */
static float *predictor_noise(const ibvi_predictor *pred, ibvi_net *net,
                              int32_t count, int32_t K, int64_t *len)
{
    const int64_t l = (int64_t)count * K * ibvi_net_noise_size(net);
    float *z = malloc((size_t)(l ? l : 1) * sizeof(float));
    ck_assert_ptr_nonnull(z);
    ASSERT_OK(ibvi_predictor_noise(pred, z, l));
    if (len)
        *len = l;
    return z;
}

static double max_abs_f(const float *a, const double *b, int64_t len)
{
    double m = 0.0;
    for (int64_t i = 0; i < len; i++) {
        const double d = fabs((double)a[i] - b[i]);
        if (!(d <= m)) /* NaN propagates as +inf */
            m = isnan(d) ? INFINITY : d;
    }
    return m;
}

static double max_abs_ff(const float *a, const float *b, int64_t len)
{
    double m = 0.0;
    for (int64_t i = 0; i < len; i++) {
        const double d = fabs((double)a[i] - (double)b[i]);
        if (!(d <= m))
            m = isnan(d) ? INFINITY : d;
    }
    return m;
}

typedef struct devs {
    double probs, pe, ee, mi;
} devs;

/* Compares a predictor's outputs with the naive reference to TOL. */
static devs compare(const char *what, const pred_out *o, const result *r)
{
    devs d;
    d.probs = max_abs_f(o->probs, r->probs, r->n * r->classes);
    d.pe = max_abs_f(o->pe, r->pe, r->n);
    d.ee = max_abs_f(o->ee, r->ee, r->n);
    d.mi = max_abs_f(o->mi, r->mi, r->n);
    printf("%-48s max |dev|: probs %.3g  H[p] %.3g  E[H] %.3g  MI %.3g\n",
           what, d.probs, d.pe, d.ee, d.mi);
    fflush(stdout);
    ck_assert_msg(d.probs <= TOL, "%s: probs deviate by %g", what, d.probs);
    ck_assert_msg(d.pe <= TOL, "%s: predictive entropy deviates by %g", what,
                  d.pe);
    ck_assert_msg(d.ee <= TOL, "%s: expected entropy deviates by %g", what,
                  d.ee);
    ck_assert_msg(d.mi <= TOL, "%s: mutual information deviates by %g", what,
                  d.mi);
    return d;
}

/* Rows of probabilities are valid distributions. */
static void check_rows(const float *probs, int64_t n, int32_t classes)
{
    for (int64_t i = 0; i < n; i++) {
        double s = 0.0;
        for (int32_t c = 0; c < classes; c++) {
            const float v = probs[i * classes + c];
            ck_assert_msg(isfinite(v) && v >= 0.0f && v <= 1.0f,
                          "probs[%lld][%d] = %g", (long long)i, (int)c,
                          (double)v);
            s += v;
        }
        ck_assert_msg(fabs(s - 1.0) < 1e-5, "row %lld sums to %.9g",
                      (long long)i, s);
    }
}

/* ---- 1. predictive average == naive loop -------------------------------- */

#define N_MAIN 23

/* Runs config c: predictor vs naive loop; variational configs must show real
 * disagreement between samples (else the comparison could not fail when the
 * predictor ignored the noise). */
static void check_config(const config *c, int64_t batch)
{
    ibvi_net *net = build_net(c->spec, 1000 + (uint64_t)(c - CONFIGS));
    const int32_t classes = ibvi_net_output_dim(net);
    float *x = random_inputs(N_MAIN, c->spec->input_dim, 77);
    ibvi_predictor *pred = NULL;
    ASSERT_OK(ibvi_predictor_create(&pred, net, c->samples, 4242));
    ck_assert_int_eq(ibvi_predictor_samples(pred), c->samples);
    if (batch > 0)
        ASSERT_OK(ibvi_predictor_set_batch_size(pred, batch));
    pred_out o;
    pred_alloc(&o, N_MAIN, classes);
    pred_run(pred, x, N_MAIN, &o);
    check_rows(o.probs, N_MAIN, classes);

    float *z = predictor_noise(pred, net, 1, c->samples, NULL);
    result r;
    naive_predict(&net, 1, x, N_MAIN, c->samples, z, 1.0, &r);
    char what[160];
    snprintf(what, sizeof what, "%s%s", c->name,
             batch > 0 ? " [batch 7]" : "");
    compare(what, &o, &r);

    double max_mi = 0.0;
    for (int64_t i = 0; i < N_MAIN; i++) {
        ck_assert_msg(o.mi[i] >= 0.0f, "MI[%lld] = %g < 0", (long long)i,
                      (double)o.mi[i]);
        ck_assert_msg(r.mi[i] >= -1e-12, "naive MI[%lld] = %g < 0",
                      (long long)i, r.mi[i]);
        if (r.mi[i] > max_mi)
            max_mi = r.mi[i];
    }
    if (ibvi_net_noise_size(net) > 0)
        ck_assert_msg(max_mi > 1e-3, "%s: samples barely differ (max MI %g)",
                      c->name, max_mi);

    result_free(&r);
    free(z);
    pred_free(&o);
    ibvi_predictor_free(pred);
    free(x);
    ibvi_net_free(net);
}

START_TEST(test_average_matches_naive_loop)
{
    check_config(&CONFIGS[_i], 0);
}
END_TEST

/* 1 (e): a deterministic network: every sample is the mean network. */
START_TEST(test_deterministic_net)
{
    ibvi_net *net = build_net(&SPEC_E, 5);
    const int32_t classes = 5;
    float *x = random_inputs(N_MAIN, 12, 8);
    ibvi_predictor *pred = NULL;
    ASSERT_OK(ibvi_predictor_create(&pred, net, 7, 1));
    ck_assert_int_eq(ibvi_net_noise_size(net), 0);
    pred_out o;
    pred_alloc(&o, N_MAIN, classes);
    pred_run(pred, x, N_MAIN, &o);

    float *logits = malloc(N_MAIN * classes * sizeof(float));
    ck_assert_ptr_nonnull(logits);
    ASSERT_OK(ibvi_net_forward_mean(net, x, N_MAIN, logits));
    double p[5], dmax = 0.0, hmax = 0.0, mimax = 0.0;
    for (int64_t i = 0; i < N_MAIN; i++) {
        const double h = softmax_d(logits + i * classes, classes, 1.0, p);
        for (int32_t c = 0; c < classes; c++) {
            const double d = fabs((double)o.probs[i * classes + c] - p[c]);
            dmax = d > dmax ? d : dmax;
        }
        hmax = fmax(hmax, fabs((double)o.pe[i] - h));
        hmax = fmax(hmax, fabs((double)o.ee[i] - h));
        mimax = fmax(mimax, fabs((double)o.mi[i]));
    }
    printf("(e) deterministic vs softmax(forward_mean)       max |dev|: probs "
           "%.3g  H %.3g  |MI| %.3g\n", dmax, hmax, mimax);
    ck_assert_msg(dmax <= TOL, "probs deviate by %g", dmax);
    ck_assert_msg(hmax <= TOL, "entropies deviate by %g", hmax);
    ck_assert_msg(mimax <= TOL, "MI of a deterministic net is %g", mimax);
    free(logits);
    pred_free(&o);
    ibvi_predictor_free(pred);
    free(x);
    ibvi_net_free(net);
}
END_TEST

/* 1 (f): n = 23 in chunks of 7 (and of 1) equals one batch of 256. (The
 * weight samples are drawn once per run, so (b) and (c2) keep
 * materialising even in chunks of one row; test_paths_across_samples
 * crosses from one path to the other on the same network.) */
START_TEST(test_chunked_equals_one_batch)
{
    const config *c = &CONFIGS[_i];
    ibvi_net *net = build_net(c->spec, 2000 + (uint64_t)_i);
    const int32_t classes = ibvi_net_output_dim(net);
    float *x = random_inputs(N_MAIN, c->spec->input_dim, 99);
    ibvi_predictor *big = NULL, *small = NULL;
    ASSERT_OK(ibvi_predictor_create(&big, net, c->samples, 31));
    ASSERT_OK(ibvi_predictor_create(&small, net, c->samples, 31));
    pred_out a, b;
    pred_alloc(&a, N_MAIN, classes);
    pred_alloc(&b, N_MAIN, classes);
    pred_run(big, x, N_MAIN, &a);
    const int64_t batches[] = {7, 1, 1000};
    for (int j = 0; j < 3; j++) {
        ASSERT_OK(ibvi_predictor_set_batch_size(small, batches[j]));
        for (int64_t i = 0; i < N_MAIN * classes; i++)
            b.probs[i] = NAN;
        pred_run(small, x, N_MAIN, &b);
        const double d = fmax(
            fmax(max_abs_ff(a.probs, b.probs, N_MAIN * classes),
                 max_abs_ff(a.pe, b.pe, N_MAIN)),
            fmax(max_abs_ff(a.ee, b.ee, N_MAIN),
                 max_abs_ff(a.mi, b.mi, N_MAIN)));
        printf("%-48s batch %4lld vs 256: max |dev| %.3g (%s)\n", c->name,
               (long long)batches[j], d,
               pred_equal(&a, &b, N_MAIN, classes) ? "bit-identical"
                                                   : "not bit-identical");
        ck_assert_msg(d <= TOL, "%s: batch %lld deviates by %g", c->name,
                      (long long)batches[j], d);
    }
    /* And the chunked run is itself the naive average. */
    ASSERT_OK(ibvi_predictor_set_batch_size(small, 7));
    pred_run(small, x, N_MAIN, &b);
    float *z = predictor_noise(small, net, 1, c->samples, NULL);
    result r;
    naive_predict(&net, 1, x, N_MAIN, c->samples, z, 1.0, &r);
    char what[160];
    snprintf(what, sizeof what, "%.38s [batch 7]", c->name);
    compare(what, &b, &r);
    result_free(&r);
    free(z);
    pred_free(&a);
    pred_free(&b);
    ibvi_predictor_free(big);
    ibvi_predictor_free(small);
    free(x);
    ibvi_net_free(net);
}
END_TEST

/* ---- 2. uncertainty outputs ----------------------------------------------- */

/* Entropy outputs are consistent with the probabilities and with each other,
 * and optional outputs may be NULL without changing the probabilities. */
START_TEST(test_uncertainty_outputs)
{
    ibvi_net *net = build_net(&SPEC_D, 11);
    const int32_t classes = 5, K = 16;
    float *x = random_inputs(N_MAIN, 12, 12);
    ibvi_predictor *pred = NULL;
    ASSERT_OK(ibvi_predictor_create(&pred, net, K, 5));
    pred_out o;
    pred_alloc(&o, N_MAIN, classes);
    pred_run(pred, x, N_MAIN, &o);

    /* H[p] of the returned probabilities (ibvi_entropy as a cross-check). */
    float h[N_MAIN];
    ASSERT_OK(ibvi_entropy(h, o.probs, N_MAIN, classes));
    double dh = 0.0, dmi = 0.0;
    for (int64_t i = 0; i < N_MAIN; i++) {
        dh = fmax(dh, fabs((double)h[i] - (double)o.pe[i]));
        ck_assert(o.mi[i] >= 0.0f);
        ck_assert(o.ee[i] >= 0.0f);
        ck_assert(o.pe[i] <= (float)log(5.0) + 1e-6f);
        ck_assert(o.ee[i] <= o.pe[i] + 1e-6f);
        const double diff = (double)o.pe[i] - (double)o.ee[i];
        dmi = fmax(dmi, fabs((double)o.mi[i] - (diff > 0 ? diff : 0.0)));
    }
    printf("uncertainty: |ibvi_entropy(probs) - H[p]| %.3g, |MI - (H - E[H])| "
           "%.3g\n", dh, dmi);
    ck_assert_msg(dh <= TOL, "predictive entropy off by %g", dh);
    ck_assert_msg(dmi <= TOL, "MI != H[p] - E[H] (off by %g)", dmi);

    /* Naive loop: H(mean p), mean H(p_k), difference. */
    float *z = predictor_noise(pred, net, 1, K, NULL);
    result r;
    naive_predict(&net, 1, x, N_MAIN, K, z, 1.0, &r);
    compare("uncertainty (d) vs naive", &o, &r);

    /* NULL optional outputs: same probabilities, the others untouched. */
    pred_out o2;
    pred_alloc(&o2, N_MAIN, classes);
    ASSERT_OK(ibvi_predictor_run(pred, x, N_MAIN, o2.probs, NULL, NULL, NULL));
    ck_assert(!memcmp(o.probs, o2.probs, sizeof(float) * N_MAIN * classes));
    for (int64_t i = 0; i < N_MAIN; i++)
        o2.ee[i] = -7.0f;
    ASSERT_OK(ibvi_predictor_run(pred, x, N_MAIN, o2.probs, NULL, o2.ee, NULL));
    ck_assert(!memcmp(o.ee, o2.ee, sizeof(float) * N_MAIN));
    ck_assert(!memcmp(o.probs, o2.probs, sizeof(float) * N_MAIN * classes));

    pred_free(&o2);
    result_free(&r);
    free(z);
    pred_free(&o);
    ibvi_predictor_free(pred);
    free(x);
    ibvi_net_free(net);
}
END_TEST

/* ---- 3. mean-network mode -------------------------------------------------- */

START_TEST(test_mean_network_mode)
{
    const config *c = &CONFIGS[_i];
    ibvi_net *net = build_net(c->spec, 3000 + (uint64_t)_i);
    const int32_t classes = ibvi_net_output_dim(net);
    float *x = random_inputs(N_MAIN, 12, 13);
    ibvi_predictor *pred = NULL;
    ASSERT_OK(ibvi_predictor_create(&pred, net, c->samples, 9));
    pred_out sampled, mean, again;
    pred_alloc(&sampled, N_MAIN, classes);
    pred_alloc(&mean, N_MAIN, classes);
    pred_alloc(&again, N_MAIN, classes);
    pred_run(pred, x, N_MAIN, &sampled);

    ASSERT_OK(ibvi_predictor_set_mean_network(pred, 1));
    ck_assert_int_eq(ibvi_predictor_samples(pred), 1);
    pred_run(pred, x, N_MAIN, &mean);
    float *logits = malloc((size_t)(N_MAIN * classes) * sizeof(float));
    ck_assert_ptr_nonnull(logits);
    ASSERT_OK(ibvi_net_forward_mean(net, x, N_MAIN, logits));
    result r;
    result_alloc(&r, N_MAIN, classes);
    for (int64_t i = 0; i < N_MAIN; i++) {
        r.ee[i] = r.pe[i] =
            softmax_d(logits + i * classes, classes, 1.0, r.probs + i * classes);
        r.mi[i] = 0.0;
    }
    char what[160];
    snprintf(what, sizeof what, "mean mode %.38s", c->name);
    compare(what, &mean, &r);
    if (ibvi_net_noise_size(net) > 0) {
        const double d = max_abs_ff(mean.probs, sampled.probs, N_MAIN * classes);
        ck_assert_msg(d > 1e-3, "mean mode equals the sampled average (%g)", d);
    }

    /* Back to sampling: the same K samples as before. */
    ASSERT_OK(ibvi_predictor_set_mean_network(pred, 0));
    ck_assert_int_eq(ibvi_predictor_samples(pred), c->samples);
    pred_run(pred, x, N_MAIN, &again);
    ck_assert(pred_equal(&sampled, &again, N_MAIN, classes));

    result_free(&r);
    free(logits);
    pred_free(&sampled);
    pred_free(&mean);
    pred_free(&again);
    ibvi_predictor_free(pred);
    free(x);
    ibvi_net_free(net);
}
END_TEST

/* ---- 4. temperature ----------------------------------------------------------- */

START_TEST(test_temperature)
{
    const config *c = &CONFIGS[_i];
    ibvi_net *net = build_net(c->spec, 4000 + (uint64_t)_i);
    const int32_t classes = ibvi_net_output_dim(net);
    float *x = random_inputs(N_MAIN, 12, 14);
    ibvi_predictor *pred = NULL;
    ASSERT_OK(ibvi_predictor_create(&pred, net, c->samples, 10));
    pred_out def, t1, t2;
    pred_alloc(&def, N_MAIN, classes);
    pred_alloc(&t1, N_MAIN, classes);
    pred_alloc(&t2, N_MAIN, classes);
    pred_run(pred, x, N_MAIN, &def);

    ASSERT_OK(ibvi_predictor_set_temperature(pred, 2.0f));
    pred_run(pred, x, N_MAIN, &t2);
    float *z = predictor_noise(pred, net, 1, c->samples, NULL);
    result r;
    naive_predict(&net, 1, x, N_MAIN, c->samples, z, 2.0, &r);
    char what[160];
    snprintf(what, sizeof what, "T=2 %.44s", c->name);
    compare(what, &t2, &r);
    /* Softer: every sample's entropy grows with T (for logits not all
     * equal), hence the expected entropy of every row. */
    for (int64_t i = 0; i < N_MAIN; i++)
        ck_assert_msg(t2.ee[i] > def.ee[i],
                      "row %lld: E[H] %g at T=2, %g at T=1", (long long)i,
                      (double)t2.ee[i], (double)def.ee[i]);

    /* T = 0.5 too (sharper), then back to 1: exactly the default. */
    ASSERT_OK(ibvi_predictor_set_temperature(pred, 0.5f));
    pred_run(pred, x, N_MAIN, &t1);
    result r2;
    naive_predict(&net, 1, x, N_MAIN, c->samples, z, 0.5, &r2);
    snprintf(what, sizeof what, "T=0.5 %.42s", c->name);
    compare(what, &t1, &r2);
    ASSERT_OK(ibvi_predictor_set_temperature(pred, 1.0f));
    pred_run(pred, x, N_MAIN, &t1);
    ck_assert(pred_equal(&def, &t1, N_MAIN, classes));

    result_free(&r);
    result_free(&r2);
    free(z);
    pred_free(&def);
    pred_free(&t1);
    pred_free(&t2);
    ibvi_predictor_free(pred);
    free(x);
    ibvi_net_free(net);
}
END_TEST

/* ---- 5. reproducibility -------------------------------------------------- */

START_TEST(test_reproducible)
{
    ibvi_net *net = build_net(&SPEC_D, 21);
    const int32_t classes = 5, K = 6;
    float *x = random_inputs(N_MAIN, 12, 15);
    ibvi_predictor *p1 = NULL, *p2 = NULL, *p3 = NULL, *p4 = NULL;
    ASSERT_OK(ibvi_predictor_create(&p1, net, K, 123));
    ASSERT_OK(ibvi_predictor_create(&p2, net, K, 123));
    ASSERT_OK(ibvi_predictor_create(&p3, net, K, 124));
    pred_out a, b, c, d;
    pred_alloc(&a, N_MAIN, classes);
    pred_alloc(&b, N_MAIN, classes);
    pred_alloc(&c, N_MAIN, classes);
    pred_alloc(&d, N_MAIN, classes);

    pred_run(p1, x, N_MAIN, &a);
    pred_run(p2, x, N_MAIN, &b);
    ck_assert_msg(pred_equal(&a, &b, N_MAIN, classes),
                  "same seed, different outputs");
    pred_run(p3, x, N_MAIN, &c);
    const double diff = max_abs_ff(a.probs, c.probs, N_MAIN * classes);
    printf("reproducibility: seed 123 vs 124 differ by %.3g\n", diff);
    ck_assert_msg(diff > 1e-4, "different seeds give (nearly) the same "
                  "outputs: %g", diff);

    int64_t len;
    float *z1 = predictor_noise(p1, net, 1, K, &len);
    float *z2 = predictor_noise(p2, net, 1, K, NULL);
    float *z3 = predictor_noise(p3, net, 1, K, NULL);
    ck_assert_int_eq(len, (int64_t)K * 4);
    ck_assert(!memcmp(z1, z2, (size_t)len * sizeof(float)));
    ck_assert(memcmp(z1, z3, (size_t)len * sizeof(float)) != 0);

    /* Running again, also after the network's own generator advanced (a
     * training-mode forward), and after a run on other data, gives the same
     * outputs: the samples are drawn once, from the predictor's generator. */
    float *other = random_inputs(40, 12, 16);
    float *logits = malloc(40 * 3 * classes * sizeof(float));
    ck_assert_ptr_nonnull(logits);
    ASSERT_OK(ibvi_net_forward(net, other, 40, 3, logits));
    ASSERT_OK(ibvi_predictor_run(p1, other, 40, logits, NULL, NULL, NULL));
    pred_run(p1, x, N_MAIN, &d);
    ck_assert_msg(pred_equal(&a, &d, N_MAIN, classes), "second run differs");
    ASSERT_OK(ibvi_predictor_create(&p4, net, K, 123));
    pred_run(p4, x, N_MAIN, &d);
    ck_assert_msg(pred_equal(&a, &d, N_MAIN, classes),
                  "a predictor created after the net's generator advanced "
                  "differs");

    free(other);
    free(logits);
    free(z1);
    free(z2);
    free(z3);
    pred_free(&a);
    pred_free(&b);
    pred_free(&c);
    pred_free(&d);
    ibvi_predictor_free(p1);
    ibvi_predictor_free(p2);
    ibvi_predictor_free(p3);
    ibvi_predictor_free(p4);
    free(x);
    ibvi_net_free(net);
}
END_TEST

/* ---- 6. ensembles --------------------------------------------------------- */

START_TEST(test_ensemble_deterministic)
{
    ibvi_net *nets[3];
    for (int i = 0; i < 3; i++)
        nets[i] = build_net(&SPEC_E, 50 + (uint64_t)i);
    const int32_t classes = 5;
    float *x = random_inputs(N_MAIN, 12, 17);
    ibvi_predictor *pred = NULL;
    ASSERT_OK(ibvi_predictor_create_ensemble(&pred, nets, 3, 1, 7));
    ck_assert_int_eq(ibvi_predictor_samples(pred), 1);
    pred_out o;
    pred_alloc(&o, N_MAIN, classes);
    pred_run(pred, x, N_MAIN, &o);

    result r;
    result_alloc(&r, N_MAIN, classes);
    float *logits = malloc(N_MAIN * classes * sizeof(float));
    double p[5], member0[N_MAIN * 5];
    ck_assert_ptr_nonnull(logits);
    for (int m = 0; m < 3; m++) {
        ASSERT_OK(ibvi_net_forward_mean(nets[m], x, N_MAIN, logits));
        for (int64_t i = 0; i < N_MAIN; i++) {
            r.ee[i] += softmax_d(logits + i * classes, classes, 1.0, p) / 3.0;
            for (int32_t c = 0; c < classes; c++) {
                r.probs[i * classes + c] += p[c] / 3.0;
                if (m == 0)
                    member0[i * classes + c] = p[c];
            }
        }
    }
    for (int64_t i = 0; i < N_MAIN; i++) {
        r.pe[i] = entropy_d(r.probs + i * classes, classes);
        r.mi[i] = r.pe[i] - r.ee[i];
    }
    compare("ensemble of 3 deterministic nets", &o, &r);
    ck_assert_msg(max_abs_f(o.probs, member0, N_MAIN * classes) > 1e-3,
                  "the ensemble equals its first member");

    /* Also through the naive loop with the (empty) noise. */
    result r2;
    const float dummy = 0.0f;
    naive_predict(nets, 3, x, N_MAIN, 1, &dummy, 1.0, &r2);
    compare("ensemble of 3 deterministic nets (naive loop)", &o, &r2);

    result_free(&r);
    result_free(&r2);
    free(logits);
    pred_free(&o);
    ibvi_predictor_free(pred);
    free(x);
    for (int i = 0; i < 3; i++)
        ibvi_net_free(nets[i]);
}
END_TEST

START_TEST(test_ensemble_variational)
{
    /* _i = 0: recipe with the low-rank identity, 1: materialised. */
    const net_spec *spec = _i == 0 ? &SPEC_D : &SPEC_D2;
    const int32_t K = 4, count = 3;
    ibvi_net *nets[3];
    for (int i = 0; i < count; i++)
        nets[i] = build_net(spec, 60 + (uint64_t)i + 10 * (uint64_t)_i);
    const int32_t classes = 5;
    float *x = random_inputs(N_MAIN, 12, 18);
    ibvi_predictor *pred = NULL;
    ASSERT_OK(ibvi_predictor_create_ensemble(&pred, nets, count, K, 8));
    ck_assert_int_eq(ibvi_predictor_samples(pred), K);
    ASSERT_OK(ibvi_predictor_set_batch_size(pred, 10)); /* chunks too */
    pred_out o;
    pred_alloc(&o, N_MAIN, classes);
    pred_run(pred, x, N_MAIN, &o);

    int64_t len;
    float *z = predictor_noise(pred, nets[0], count, K, &len);
    ck_assert_int_eq(len, (int64_t)count * K * ibvi_net_noise_size(nets[0]));
    result r;
    naive_predict(nets, count, x, N_MAIN, K, z, 1.0, &r);
    compare(_i == 0 ? "ensemble 3 x K=4, recipe R=2/0/2"
                    : "ensemble 3 x K=4, recipe R=30/0/4",
            &o, &r);

    /* Members must not share noise (member-major, not repeated). */
    const int64_t per_member = (int64_t)K * ibvi_net_noise_size(nets[0]);
    ck_assert(memcmp(z, z + per_member, (size_t)per_member * sizeof(float)));

    /* Mean-network mode of an ensemble: the average of the members' mean
     * networks (z = 0). */
    ASSERT_OK(ibvi_predictor_set_mean_network(pred, 1));
    ck_assert_int_eq(ibvi_predictor_samples(pred), 1);
    pred_run(pred, x, N_MAIN, &o);
    result rm;
    float *zeros = calloc((size_t)(count * ibvi_net_noise_size(nets[0])),
                          sizeof(float));
    ck_assert_ptr_nonnull(zeros);
    naive_predict(nets, count, x, N_MAIN, 1, zeros, 1.0, &rm);
    compare("ensemble mean-network mode", &o, &rm);

    free(zeros);
    result_free(&rm);
    result_free(&r);
    free(z);
    pred_free(&o);
    ibvi_predictor_free(pred);
    free(x);
    for (int i = 0; i < count; i++)
        ibvi_net_free(nets[i]);
}
END_TEST

START_TEST(test_ensemble_shape_mismatch)
{
    ibvi_net *base = build_net(&SPEC_D, 1);
    const net_spec other_width = {12, 3, {16, 15, 5}, {2, 0, 2}, IBVI_ACT_RELU};
    const net_spec other_rank = {12, 3, {16, 16, 5}, {3, 0, 2}, IBVI_ACT_RELU};
    const net_spec other_det = {12, 3, {16, 16, 5}, {2, 0, 0}, IBVI_ACT_RELU};
    const net_spec other_act = {12, 3, {16, 16, 5}, {2, 0, 2}, IBVI_ACT_TANH};
    const net_spec other_input = {11, 3, {16, 16, 5}, {2, 0, 2}, IBVI_ACT_RELU};
    const net_spec other_depth = {12, 2, {16, 5}, {2, 2}, IBVI_ACT_RELU};
    const net_spec other_classes = {12, 3, {16, 16, 6}, {2, 0, 2},
                                    IBVI_ACT_RELU};
    const net_spec *others[] = {&other_width, &other_rank, &other_det,
                                &other_act, &other_input, &other_depth,
                                &other_classes};
    for (size_t i = 0; i < sizeof others / sizeof others[0]; i++) {
        ibvi_net *other = build_net(others[i], 2);
        ibvi_net *pair[3] = {base, base, other};
        ibvi_predictor *pred = (ibvi_predictor *)&pair; /* poisoned */
        ASSERT_FAILS(IBVI_ERR_SHAPE,
                     ibvi_predictor_create_ensemble(&pred, pair, 3, 2, 1));
        ck_assert_ptr_null(pred);
        pair[0] = other;
        pair[2] = base;
        ASSERT_FAILS(IBVI_ERR_SHAPE,
                     ibvi_predictor_create_ensemble(&pred, pair, 3, 2, 1));
        ck_assert_ptr_null(pred);
        ibvi_net_free(other);
    }
    /* The same architecture with different parameters is fine. */
    ibvi_net *twin = build_net(&SPEC_D, 3);
    ibvi_net *pair[2] = {base, twin};
    ibvi_predictor *pred = NULL;
    ASSERT_OK(ibvi_predictor_create_ensemble(&pred, pair, 2, 2, 1));
    ibvi_predictor_free(pred);
    ibvi_net_free(twin);
    ibvi_net_free(base);
}
END_TEST

/* ---- 7. the predictor reads the current parameters -------------------------- */

START_TEST(test_sees_parameter_updates)
{
    const config *c = &CONFIGS[_i];
    ibvi_net *net = build_net(c->spec, 5000 + (uint64_t)_i);
    const int32_t classes = ibvi_net_output_dim(net);
    float *x = random_inputs(N_MAIN, 12, 19);
    ibvi_predictor *pred = NULL;
    ASSERT_OK(ibvi_predictor_create(&pred, net, c->samples, 11));
    pred_out before, after;
    pred_alloc(&before, N_MAIN, classes);
    pred_alloc(&after, N_MAIN, classes);
    pred_run(pred, x, N_MAIN, &before);

    /* Change the first dense layer's mean (all weights scaled, a bias
     * shifted) and the last layer's class-0 bias. */
    const int32_t nl = ibvi_net_layer_count(net);
    ibvi_layer *first = NULL, *last = NULL;
    ASSERT_OK(ibvi_net_layer(net, 0, &first));
    ASSERT_OK(ibvi_net_layer(net, nl - 1, &last));
    int64_t P0 = ibvi_layer_param_count(first);
    int64_t PL = ibvi_layer_param_count(last);
    float *m0 = malloc((size_t)P0 * sizeof(float));
    float *mL = malloc((size_t)PL * sizeof(float));
    ck_assert(m0 && mL);
    ASSERT_OK(ibvi_layer_get_mean(first, m0, P0));
    ASSERT_OK(ibvi_layer_get_mean(last, mL, PL));
    for (int64_t i = 0; i < P0; i++)
        m0[i] *= 1.5f;
    m0[P0 - 1] += 1.0f;
    mL[PL - classes] += 2.0f;
    ASSERT_OK(ibvi_layer_set_mean(first, m0, P0));
    ASSERT_OK(ibvi_layer_set_mean(last, mL, PL));

    pred_run(pred, x, N_MAIN, &after);
    const double moved = max_abs_ff(before.probs, after.probs, N_MAIN * classes);
    ck_assert_msg(moved > 1e-2, "the run did not change (%g)", moved);
    float *z = predictor_noise(pred, net, 1, c->samples, NULL);
    result r;
    naive_predict(&net, 1, x, N_MAIN, c->samples, z, 1.0, &r);
    char what[160];
    snprintf(what, sizeof what, "new mean %.40s", c->name);
    compare(what, &after, &r);
    result_free(&r);

    /* A changed covariance factor (of every variational layer) is seen too. */
    int changed = 0;
    for (int32_t li = 0; li < nl; li++) {
        ibvi_layer *l = NULL;
        int32_t rank = 0;
        ASSERT_OK(ibvi_net_layer(net, li, &l));
        ASSERT_OK(ibvi_layer_shape(l, NULL, NULL, &rank));
        if (ibvi_layer_get_kind(l) != IBVI_LAYER_DENSE || rank == 0)
            continue;
        const int64_t len = ibvi_layer_param_count(l) * rank;
        float *f = malloc((size_t)len * sizeof(float));
        ck_assert_ptr_nonnull(f);
        ASSERT_OK(ibvi_layer_get_factor(l, f, len));
        for (int64_t i = 0; i < len; i++)
            f[i] *= -2.0f;
        ASSERT_OK(ibvi_layer_set_factor(l, f, len));
        free(f);
        changed = 1;
    }
    if (changed) {
        pred_run(pred, x, N_MAIN, &before);
        ck_assert(max_abs_ff(before.probs, after.probs, N_MAIN * classes) > 1e-3);
        naive_predict(&net, 1, x, N_MAIN, c->samples, z, 1.0, &r);
        snprintf(what, sizeof what, "new factor %.38s", c->name);
        compare(what, &before, &r);
        result_free(&r);
    }

    free(z);
    free(m0);
    free(mL);
    pred_free(&before);
    pred_free(&after);
    ibvi_predictor_free(pred);
    free(x);
    ibvi_net_free(net);
}
END_TEST

/* ---- 8. error paths ------------------------------------------------------- */

START_TEST(test_errors_create)
{
    ibvi_net *net = build_net(&SPEC_A, 1);
    ibvi_predictor *pred = NULL;
    ASSERT_FAILS(IBVI_ERR_INVALID_ARG, ibvi_predictor_create(NULL, net, 4, 1));
    ASSERT_FAILS(IBVI_ERR_INVALID_ARG, ibvi_predictor_create(&pred, NULL, 4, 1));
    ck_assert_ptr_null(pred);
    ASSERT_FAILS(IBVI_ERR_INVALID_ARG, ibvi_predictor_create(&pred, net, 0, 1));
    ck_assert_ptr_null(pred);
    ASSERT_FAILS(IBVI_ERR_INVALID_ARG, ibvi_predictor_create(&pred, net, -3, 1));
    ck_assert_ptr_null(pred);
    ASSERT_FAILS(IBVI_ERR_INVALID_ARG,
                 ibvi_predictor_create(&pred, net, INT32_MIN, 1));
    ck_assert_ptr_null(pred);

    /* An uninitialised network. */
    ibvi_net *raw = NULL;
    ASSERT_OK(ibvi_net_create(&raw, 12, NULL));
    ASSERT_OK(ibvi_net_add_dense(raw, 5, 1));
    ASSERT_FAILS(IBVI_ERR_STATE, ibvi_predictor_create(&pred, raw, 4, 1));
    ck_assert_ptr_null(pred);
    ibvi_net *mixed[2] = {net, raw};
    ASSERT_FAILS(IBVI_ERR_STATE,
                 ibvi_predictor_create_ensemble(&pred, mixed, 2, 1, 1));
    ck_assert_ptr_null(pred);

    /* Ensemble arguments. */
    ibvi_net *one[2] = {net, NULL};
    ASSERT_FAILS(IBVI_ERR_INVALID_ARG,
                 ibvi_predictor_create_ensemble(NULL, one, 1, 1, 1));
    ASSERT_FAILS(IBVI_ERR_INVALID_ARG,
                 ibvi_predictor_create_ensemble(&pred, NULL, 1, 1, 1));
    ASSERT_FAILS(IBVI_ERR_INVALID_ARG,
                 ibvi_predictor_create_ensemble(&pred, one, 0, 1, 1));
    ASSERT_FAILS(IBVI_ERR_INVALID_ARG,
                 ibvi_predictor_create_ensemble(&pred, one, -1, 1, 1));
    ASSERT_FAILS(IBVI_ERR_INVALID_ARG,
                 ibvi_predictor_create_ensemble(&pred, one, 2, 1, 1));
    ASSERT_FAILS(IBVI_ERR_INVALID_ARG,
                 ibvi_predictor_create_ensemble(&pred, one, 1, 0, 1));
    ASSERT_FAILS(IBVI_ERR_INVALID_ARG,
                 ibvi_predictor_create_ensemble(&pred, one, 1, -2, 1));
    ck_assert_ptr_null(pred);
    ASSERT_OK(ibvi_predictor_create_ensemble(&pred, one, 1, 1, 1));
    ibvi_predictor_free(pred);

    ibvi_predictor_free(NULL);
    ibvi_net_free(raw);
    ibvi_net_free(net);
}
END_TEST

START_TEST(test_errors_run_and_settings)
{
    ibvi_net *net = build_net(&SPEC_D, 1);
    const int32_t classes = 5, K = 4;
    float *x = random_inputs(N_MAIN, 12, 20);
    ibvi_predictor *pred = NULL;
    ASSERT_OK(ibvi_predictor_create(&pred, net, K, 1));
    pred_out ref, o;
    pred_alloc(&ref, N_MAIN, classes);
    pred_alloc(&o, N_MAIN, classes);
    pred_run(pred, x, N_MAIN, &ref);

    /* run: NULL pointers and sizes. */
    ASSERT_FAILS(IBVI_ERR_INVALID_ARG,
                 ibvi_predictor_run(NULL, x, N_MAIN, o.probs, NULL, NULL, NULL));
    ASSERT_FAILS(IBVI_ERR_INVALID_ARG,
                 ibvi_predictor_run(pred, NULL, N_MAIN, o.probs, NULL, NULL,
                                    NULL));
    ASSERT_FAILS(IBVI_ERR_INVALID_ARG,
                 ibvi_predictor_run(pred, x, N_MAIN, NULL, o.pe, o.ee, o.mi));
    ASSERT_FAILS(IBVI_ERR_INVALID_ARG,
                 ibvi_predictor_run(pred, x, 0, o.probs, NULL, NULL, NULL));
    ASSERT_FAILS(IBVI_ERR_INVALID_ARG,
                 ibvi_predictor_run(pred, x, -5, o.probs, NULL, NULL, NULL));
    ASSERT_FAILS(IBVI_ERR_INVALID_ARG,
                 ibvi_predictor_run(pred, x, INT64_MIN, o.probs, NULL, NULL,
                                    NULL));

    /* run: NaN / infinity in x (also in a later chunk); nothing written. */
    const float bad[] = {NAN, INFINITY, -INFINITY};
    for (int b = 0; b < 3; b++) {
        for (int chunked = 0; chunked < 2; chunked++) {
            ASSERT_OK(ibvi_predictor_set_batch_size(pred, chunked ? 7 : 256));
            float *xb = random_inputs(N_MAIN, 12, 20);
            xb[(N_MAIN - 1) * 12 + 5] = bad[b];
            for (int64_t i = 0; i < N_MAIN * classes; i++)
                o.probs[i] = -1.0f;
            for (int64_t i = 0; i < N_MAIN; i++)
                o.pe[i] = o.ee[i] = o.mi[i] = -1.0f;
            ASSERT_FAILS(IBVI_ERR_NONFINITE,
                         ibvi_predictor_run(pred, xb, N_MAIN, o.probs, o.pe,
                                            o.ee, o.mi));
            for (int64_t i = 0; i < N_MAIN * classes; i++)
                ck_assert_msg(o.probs[i] == -1.0f,
                              "probs[%lld] written by a failed run (x[..] = "
                              "%g, batch %d)", (long long)i, (double)bad[b],
                              chunked ? 7 : 256);
            for (int64_t i = 0; i < N_MAIN; i++)
                ck_assert(o.pe[i] == -1.0f && o.ee[i] == -1.0f &&
                          o.mi[i] == -1.0f);
            free(xb);
        }
    }
    ASSERT_OK(ibvi_predictor_set_batch_size(pred, 256));

    /* Temperature: 0, negative, NaN, +-inf, subnormal-negative. */
    const float temps[] = {0.0f, -0.0f, -1.0f, NAN, INFINITY, -INFINITY,
                           -1e-40f};
    for (size_t i = 0; i < sizeof temps / sizeof temps[0]; i++)
        ASSERT_FAILS(IBVI_ERR_INVALID_ARG,
                     ibvi_predictor_set_temperature(pred, temps[i]));
    ASSERT_FAILS(IBVI_ERR_INVALID_ARG, ibvi_predictor_set_temperature(NULL, 1.0f));

    /* Batch size. */
    ASSERT_FAILS(IBVI_ERR_INVALID_ARG, ibvi_predictor_set_batch_size(pred, 0));
    ASSERT_FAILS(IBVI_ERR_INVALID_ARG, ibvi_predictor_set_batch_size(pred, -1));
    ASSERT_FAILS(IBVI_ERR_INVALID_ARG,
                 ibvi_predictor_set_batch_size(pred, INT64_MIN));
    {
        ibvi_clear_error();
        int st = ibvi_predictor_set_batch_size(pred, INT64_MAX);
        ck_assert_msg(st == IBVI_ERR_INVALID_ARG || st == IBVI_ERR_NOMEM,
                      "batch INT64_MAX returned %d", st);
        ck_assert(ibvi_last_error()[0] != '\0');
    }
    ASSERT_FAILS(IBVI_ERR_INVALID_ARG, ibvi_predictor_set_batch_size(NULL, 8));

    /* Mean-network switch. */
    ASSERT_FAILS(IBVI_ERR_INVALID_ARG, ibvi_predictor_set_mean_network(pred, 2));
    ASSERT_FAILS(IBVI_ERR_INVALID_ARG,
                 ibvi_predictor_set_mean_network(pred, -1));
    ASSERT_FAILS(IBVI_ERR_INVALID_ARG, ibvi_predictor_set_mean_network(NULL, 1));
    ck_assert_int_eq(ibvi_predictor_samples(pred), K);
    ibvi_clear_error();
    ck_assert_int_lt(ibvi_predictor_samples(NULL), 0);
    ck_assert(ibvi_last_error()[0] != '\0');

    /* Noise: wrong length, NULL. */
    const int64_t len = (int64_t)K * ibvi_net_noise_size(net);
    float *z = malloc((size_t)(len + 1) * sizeof(float));
    ck_assert_ptr_nonnull(z);
    ASSERT_FAILS(IBVI_ERR_SHAPE, ibvi_predictor_noise(pred, z, len - 1));
    ASSERT_FAILS(IBVI_ERR_SHAPE, ibvi_predictor_noise(pred, z, len + 1));
    ASSERT_FAILS(IBVI_ERR_SHAPE, ibvi_predictor_noise(pred, z, 0));
    ASSERT_FAILS(IBVI_ERR_SHAPE, ibvi_predictor_noise(pred, z, -len));
    ASSERT_FAILS(IBVI_ERR_INVALID_ARG, ibvi_predictor_noise(pred, NULL, len));
    ASSERT_FAILS(IBVI_ERR_INVALID_ARG, ibvi_predictor_noise(NULL, z, len));
    ASSERT_OK(ibvi_predictor_noise(pred, z, len));

    /* Every failed setting left the predictor as it was. */
    pred_run(pred, x, N_MAIN, &o);
    ck_assert_msg(pred_equal(&ref, &o, N_MAIN, classes),
                  "a failed call changed the predictor's outputs");

    ibvi_predictor_free(NULL);
    free(z);
    pred_free(&ref);
    pred_free(&o);
    ibvi_predictor_free(pred);
    free(x);
    ibvi_net_free(net);
}
END_TEST

/* ---- 9. end to end with metrics --------------------------------------------- */

START_TEST(test_metrics_end_to_end)
{
    enum { N = 60, C = 5 };
    ibvi_net *net = build_net(&SPEC_D, 31);
    float *x = random_inputs(N, 12, 21);
    ibvi_predictor *pred = NULL;
    ASSERT_OK(ibvi_predictor_create(&pred, net, 8, 3));
    ASSERT_OK(ibvi_predictor_set_batch_size(pred, 16));
    float probs[N * C];
    ASSERT_OK(ibvi_predictor_run(pred, x, N, probs, NULL, NULL, NULL));
    check_rows(probs, N, C);

    /* Labels: the predicted class for about two thirds, else another one. */
    int32_t labels[N];
    int64_t hits = 0;
    double nll = 0.0;
    rng_seed(555);
    for (int i = 0; i < N; i++) {
        int32_t best = 0;
        for (int32_t c = 1; c < C; c++)
            if (probs[i * C + c] > probs[i * C + best])
                best = c;
        labels[i] = rng_uniform() < 0.67 ? best
                                         : (int32_t)((best + 1 + rng_next() % 4) % C);
        hits += labels[i] == best;
        nll -= log(fmax((double)probs[i * C + labels[i]], 1e-12));
    }
    nll /= N;
    ck_assert(hits > 0 && hits < N);

    ibvi_metrics *m = NULL;
    ASSERT_OK(ibvi_metrics_create(&m, C, NULL));
    ASSERT_OK(ibvi_metrics_add(m, probs, N, labels));
    double acc = -1.0, got_nll = -1.0;
    ASSERT_OK(ibvi_metrics_accuracy(m, &acc));
    ASSERT_OK(ibvi_metrics_nll(m, &got_nll));
    printf("end to end: accuracy %.6f (hand count %lld/%d), NLL %.6f vs %.6f\n",
           acc, (long long)hits, N, got_nll, nll);
    ck_assert_msg(fabs(acc - (double)hits / N) < 1e-12, "accuracy %g vs %g",
                  acc, (double)hits / N);
    ck_assert_msg(fabs(got_nll - nll) < 1e-9, "NLL %g vs %g", got_nll, nll);

    ibvi_metrics_free(m);
    ibvi_predictor_free(pred);
    free(x);
    ibvi_net_free(net);
}
END_TEST

/* ---- 10. memory safety ------------------------------------------------------ */

/* Runs config c with inputs x (n = 1, 2, 23 rows, copied into buffers from
 * xalloc) in chunks of 256, 7 and 1 rows, outputs ending at guard pages,
 * and checks each result against the naive loop. */
static void run_guarded(const config *c, const ibvi_allocator *net_allocator,
                        int guard_x, uint64_t seed)
{
    guard_allocs = 0;
    ibvi_net *net = build_net_with(c->spec, seed, net_allocator);
    const int32_t classes = ibvi_net_output_dim(net), dim = c->spec->input_dim;
    ibvi_predictor *pred = NULL;
    ASSERT_OK(ibvi_predictor_create(&pred, net, c->samples, 12));
    if (net_allocator)
        ck_assert_int_gt(guard_allocs, 0);
    float *z = predictor_noise(pred, net, 1, c->samples, NULL);
    const int64_t ns[] = {1, 2, N_MAIN};
    const int64_t batches[] = {256, 7, 1};
    float *src = random_inputs(N_MAIN, dim, 23);
    for (int a = 0; a < 3; a++) {
        const int64_t n = ns[a];
        const size_t xbytes = (size_t)(n * dim) * sizeof(float);
        float *x = guard_x ? guard_alloc_aligned(xbytes, sizeof(float))
                           : malloc(xbytes);
        ck_assert_ptr_nonnull(x);
        memcpy(x, src, xbytes);
        pred_out o;
        o.probs = guard_alloc_aligned((size_t)(n * classes) * sizeof(float),
                                      sizeof(float));
        o.pe = guard_alloc_aligned((size_t)n * sizeof(float), sizeof(float));
        o.ee = guard_alloc_aligned((size_t)n * sizeof(float), sizeof(float));
        o.mi = guard_alloc_aligned((size_t)n * sizeof(float), sizeof(float));
        ck_assert(o.probs && o.pe && o.ee && o.mi);
        for (int b = 0; b < 3; b++) {
            ASSERT_OK(ibvi_predictor_set_batch_size(pred, batches[b]));
            printf("%s %s: run n=%lld batch=%lld\n",
                   guard_x ? "guarded x" : "guard allocator", c->name,
                   (long long)n, (long long)batches[b]);
            fflush(stdout);
            mark_point();
            pred_run(pred, x, n, &o);
        }
        result r;
        naive_predict(&net, 1, x, n, c->samples, z, 1.0, &r);
        char what[160];
        snprintf(what, sizeof what, "%s n=%lld %.30s",
                 guard_x ? "guarded x" : "guard alloc", (long long)n, c->name);
        compare(what, &o, &r);
        result_free(&r);
        guard_free_ptr(o.probs);
        guard_free_ptr(o.pe);
        guard_free_ptr(o.ee);
        guard_free_ptr(o.mi);
        if (guard_x)
            guard_free_ptr(x);
        else
            free(x);
    }
    free(src);
    free(z);
    ibvi_predictor_free(pred);
    ibvi_net_free(net);
}

/* The predictor reads only the n x input_dim floats of the caller's x
 * (borrowed for the call): x ends exactly at a PROT_NONE page. */
START_TEST(test_reads_only_x)
{
    run_guarded(&CONFIGS[_i], NULL, 1, 6000 + (uint64_t)_i);
}
END_TEST

/* The predictor stays inside the blocks it allocates: the network (whose
 * allocator the predictor uses) gets every block at the end of a guard page
 * (8-byte aligned, as the allocator contract in common.h asks). */
START_TEST(test_stays_in_own_buffers)
{
    run_guarded(&CONFIGS[_i], &GUARD_ALLOCATOR, 0, 7000 + (uint64_t)_i);
}
END_TEST

/* ---- 11. the fan-out layer's two paths, and the softmax's clamp ----------- */

/* lib/predictor.c runs the first variational layer either by the low-rank
 * identity or with K materialised weight samples, whichever takes fewer
 * multiply-adds; for these shapes the switch falls between K = 1 and K = 2
 * (for the rule of the time of writing), so a sweep over K, at three batch
 * sizes, takes both on the same network, with the identity's projections
 * in both of its layouts (a hidden first layer; the last layer, which
 * writes class-major logits), and ReLUs fused with the dense layers before
 * them. Every run must be the naive loop's average. */
static const net_spec SPEC_SWEEP[] = {
    {12, 3, {16, 16, 5}, {2, 0, 2}, IBVI_ACT_RELU},
    {12, 3, {16, 16, 5}, {0, 0, 2}, IBVI_ACT_RELU},
};

START_TEST(test_paths_across_samples)
{
    static const int32_t Ks[] = {1, 2, 3, 4, 6, 16, 40};
    static const int64_t batches[] = {256, 7, 1};
    ibvi_net *net = build_net(&SPEC_SWEEP[_i], 8000 + (uint64_t)_i);
    const int32_t classes = ibvi_net_output_dim(net);
    float *x = random_inputs(N_MAIN, 12, 81);
    pred_out o;
    pred_alloc(&o, N_MAIN, classes);
    for (size_t a = 0; a < sizeof Ks / sizeof Ks[0]; a++) {
        ibvi_predictor *pred = NULL;
        ASSERT_OK(ibvi_predictor_create(&pred, net, Ks[a], 77 + a));
        float *z = predictor_noise(pred, net, 1, Ks[a], NULL);
        result r;
        naive_predict(&net, 1, x, N_MAIN, Ks[a], z, 1.0, &r);
        for (size_t b = 0; b < sizeof batches / sizeof batches[0]; b++) {
            ASSERT_OK(ibvi_predictor_set_batch_size(pred, batches[b]));
            pred_run(pred, x, N_MAIN, &o);
            check_rows(o.probs, N_MAIN, classes);
            char what[160];
            snprintf(what, sizeof what, "sweep %s K=%d batch %lld",
                     _i ? "last only" : "first+last", (int)Ks[a],
                     (long long)batches[b]);
            compare(what, &o, &r);
        }
        result_free(&r);
        free(z);
        ibvi_predictor_free(pred);
    }
    pred_free(&o);
    free(x);
    ibvi_net_free(net);
}
END_TEST

/* A tiny temperature drives the shifted logits (logit - row max) / T far
 * below -700, where the predictor's exponential clamps (exp < 1e-304).
 * The outputs stay valid distributions with finite, ordered entropies, and
 * close to the naive loop's: 1 / T magnifies the float rounding of the
 * logits (about 1e-7 of their size) into the shifted values, hence the
 * looser tolerance. */
START_TEST(test_tiny_temperature)
{
    const config *c = &CONFIGS[_i];
    ibvi_net *net = build_net(c->spec, 9000 + (uint64_t)_i);
    const int32_t classes = ibvi_net_output_dim(net);
    float *x = random_inputs(N_MAIN, 12, 15);
    ibvi_predictor *pred = NULL;
    ASSERT_OK(ibvi_predictor_create(&pred, net, c->samples, 16));
    ASSERT_OK(ibvi_predictor_set_temperature(pred, 1e-3f));
    pred_out o;
    pred_alloc(&o, N_MAIN, classes);
    pred_run(pred, x, N_MAIN, &o);
    check_rows(o.probs, N_MAIN, classes);
    float *z = predictor_noise(pred, net, 1, c->samples, NULL);
    result r;
    naive_predict(&net, 1, x, N_MAIN, c->samples, z, 1e-3, &r);
    const double d = max_abs_f(o.probs, r.probs, N_MAIN * (int64_t)classes);
    printf("T=1e-3 %-41s max |dev| probs %.3g\n", c->name, d);
    ck_assert_msg(d <= 1e-2, "%s: probs deviate by %g at T = 1e-3", c->name, d);
    for (int64_t i = 0; i < N_MAIN; i++) {
        ck_assert(isfinite(o.pe[i]) && isfinite(o.ee[i]) && isfinite(o.mi[i]));
        ck_assert(o.ee[i] >= 0.0f && o.mi[i] >= 0.0f);
        ck_assert(o.pe[i] >= o.ee[i] - 1e-6f);
    }
    result_free(&r);
    free(z);
    pred_free(&o);
    ibvi_predictor_free(pred);
    free(x);
    ibvi_net_free(net);
}
END_TEST

/* ---- suite ------------------------------------------------------------------ */

static Suite *predictor_suite(void)
{
    Suite *s = suite_create("predictor");
    TCase *tc = tcase_create("average");
    tcase_set_timeout(tc, 60);
    tcase_add_loop_test(tc, test_average_matches_naive_loop, 0, NCONFIGS);
    tcase_add_test(tc, test_deterministic_net);
    tcase_add_loop_test(tc, test_chunked_equals_one_batch, 0, NCONFIGS);
    suite_add_tcase(s, tc);

    tc = tcase_create("modes");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_uncertainty_outputs);
    tcase_add_loop_test(tc, test_mean_network_mode, 0, NCONFIGS);
    tcase_add_loop_test(tc, test_temperature, 0, NCONFIGS);
    tcase_add_test(tc, test_reproducible);
    suite_add_tcase(s, tc);

    tc = tcase_create("ensemble");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_ensemble_deterministic);
    tcase_add_loop_test(tc, test_ensemble_variational, 0, 2);
    tcase_add_test(tc, test_ensemble_shape_mismatch);
    suite_add_tcase(s, tc);

    tc = tcase_create("updates");
    tcase_set_timeout(tc, 60);
    tcase_add_loop_test(tc, test_sees_parameter_updates, 0, NCONFIGS);
    suite_add_tcase(s, tc);

    tc = tcase_create("errors");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_errors_create);
    tcase_add_test(tc, test_errors_run_and_settings);
    suite_add_tcase(s, tc);

    tc = tcase_create("memory");
    tcase_set_timeout(tc, 60);
    tcase_add_loop_test(tc, test_reads_only_x, 0, NCONFIGS);
    tcase_add_loop_test(tc, test_stays_in_own_buffers, 0, NCONFIGS);
    suite_add_tcase(s, tc);

    tc = tcase_create("paths");
    tcase_set_timeout(tc, 60);
    tcase_add_loop_test(tc, test_paths_across_samples, 0, 2);
    tcase_add_loop_test(tc, test_tiny_temperature, 0, NCONFIGS);
    suite_add_tcase(s, tc);

    tc = tcase_create("metrics");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_metrics_end_to_end);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(predictor_suite());
    srunner_run_all(sr, CK_NORMAL);
    const int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
