/*
 * libibvi - the last-layer Laplace approximation (include/ibvi/laplace.h,
 * docs/laplace.md).
 *
 * Inside this file the last layer's parameters are indexed "augmented":
 * entry (c, i) at c * (in + 1) + i, i < in the weight W[c][i] and i = in
 * the bias b[c], so that the Hessian is C x C blocks of (in + 1)^2, block
 * (c, c') = sum_n Lambda_n[c, c'] a~_n a~_n^T. theta's own order (W then
 * b) is restored where a result leaves the file (theta_index).
 *
 * The Gauss-Newton matrix of a batch of examples with softmax
 * probabilities p_n is, since Lambda_n = diag(p_n) - p_n p_n^T,
 *     H = blockdiag_c(sum_n p_nc a~_n a~_n^T) - Q^T Q,
 * Q the (batch x P) matrix whose row n is p_n (x) a~_n: one SYRK per class
 * for the diagonal blocks (rows sqrt(p_nc) a~_n) and one SYRK of Q, in
 * double. The Jacobian is never formed.
 *
 * SPDX-License-Identifier: MIT
 */
#include <float.h>
#include <math.h>
#include <string.h>

#include "ibvi/laplace.h"
#include "kernels.h"
#include "linalg.h"
#include "network.h"

#define DEFAULT_MAX_BYTES ((int64_t)1 << 30)
#define DEFAULT_BATCH 256
/* 0.618^20 of the range: 1.5e-3 in log lambda over 1e-4 .. 1e6 (0.15% in
 * lambda, where the marglik is flat); each step is a Cholesky for FULL */
#define GOLDEN_STEPS 20
#define PI 3.14159265358979323846

struct ibvi_laplace {
    ibvi_allocator allocator;
    int32_t structure, prior;
    int32_t classes, inputs, aug; /* C, in, in + 1                        */
    int64_t P;                    /* C (in + 1)                            */
    int32_t layer;                /* index of the last layer               */
    int32_t batch, threads;
    int64_t max_bytes;
    uint64_t hash;                /* of the fitted network's means         */
    int64_t n;                    /* training examples                     */
    double nll;                   /* sum_n NLL_n(theta*)                   */
    double theta_sq;              /* |theta*|^2                            */
    double lambda, log_marglik;   /* the chosen prior precision            */
    /* FULL (augmented order): H, the Cholesky factor of H + lambda I, and
     * the diagonal blocks Sigma_cc of its inverse (C x aug x aug). */
    double *h, *chol, *blocks;
    /* KFAC: A = U_A diag(wa) U_A^T (aug x aug), G = U_G diag(wg) U_G^T
     * (C x C), and the factors themselves (for get_hessian). */
    double *kron_a, *kron_g, *ua, *wa, *ug, *wg;
    double *ug2; /* (U_G less its column means)^2, C x C */
};

/* ---- small helpers -------------------------------------------------------- */

static int64_t theta_index(const ibvi_laplace *la, int64_t k)
{
    const int64_t c = k / la->aug, i = k % la->aug;
    return i < la->inputs ? c * la->inputs + i
                          : (int64_t)la->classes * la->inputs + c;
}

/* FNV-1a over every layer's means: which network was fitted. */
static uint64_t means_hash(const ibvi_net *net)
{
    uint64_t h = 1469598103934665603ull;
    for (int32_t i = 0; i < net->layer_count; i++) {
        const ibvi_layer *l = net->layers[i];
        const unsigned char *b = (const unsigned char *)l->mean;
        const size_t bytes = (size_t)l->params * sizeof(float);
        h = (h ^ (uint64_t)l->params) * 1099511628211ull;
        for (size_t k = 0; k < bytes; k++)
            h = (h ^ b[k]) * 1099511628211ull;
    }
    return h;
}

static void symmetrise(double *a, int64_t n, int64_t lda)
{
    for (int64_t i = 0; i < n; i++)
        for (int64_t j = i + 1; j < n; j++)
            a[i * lda + j] = a[j * lda + i];
}

static int check_labels(const char *fn, const char *name, const int32_t *y,
                        int64_t n, int32_t classes)
{
    for (int64_t i = 0; i < n; i++)
        if (y[i] < 0 || y[i] >= classes)
            return ibvi__fail(IBVI_ERR_INVALID_ARG,
                              "%s: %s[%lld] = %d, expected 0..%d", fn, name,
                              (long long)i, (int)y[i], (int)classes - 1);
    return IBVI_OK;
}

/* The checks every function taking the fitted network runs. */
static int check_fitted_net(const ibvi_laplace *la, const ibvi_net *net,
                            const char *fn)
{
    int status = ibvi__net_check_ready(net, fn);
    if (status < 0)
        return status;
    if (net->layer_count != la->layer + 1 ||
        net->layers[la->layer]->kind != IBVI__KIND_DENSE ||
        net->layers[la->layer]->inputs != la->inputs ||
        net->layers[la->layer]->outputs != la->classes ||
        means_hash(net) != la->hash)
        return ibvi__fail(IBVI_ERR_STATE,
                          "%s: net is not the network this approximation "
                          "was fitted to (its layers or means differ)", fn);
    return IBVI_OK;
}

/* Runs rows examples of x through net's means: the last layer's input
 * (rows x in) into *features, its logits (rows x C) into *logits. The
 * workspace holds the batch (reserved by the caller). */
static void forward_chunk(ibvi_net *net, const float *x, int64_t rows,
                          const float **features, const float **logits)
{
    memcpy(net->input, x, (size_t)(rows * net->input_dim) * sizeof(float));
    ibvi__net_run_forward(net, rows, 1, NULL, NULL);
    const int32_t L = net->layer_count - 1;
    *features = L == 0 ? net->input : net->layers[L - 1]->output;
    *logits = net->layers[L]->output;
}

/* abar (rows x aug) = [features, 1] in double. */
static void augment(const float *features, int64_t rows, int32_t in,
                    double *abar)
{
    for (int64_t r = 0; r < rows; r++) {
        double *o = abar + r * (in + 1);
        const float *f = features + r * in;
        for (int32_t i = 0; i < in; i++)
            o[i] = f[i];
        o[in] = 1.0;
    }
}

/* Softmax of one row of C logits (float) into p (double): returns the
 * log-sum-exp (not finite for non-finite logits). shifted, exps: C. */
static double softmax_row(const float *f, int32_t C, double *p,
                          double *shifted, double *exps)
{
    double max, z, dot;
    ibvi__softmax_max(f, 1, 1, C, &max, &z, &dot);
    ibvi__softmax_sums(f, 1, 1, 0, C, &max, 1.0, shifted, exps, &z, &dot);
    for (int32_t c = 0; c < C; c++)
        p[c] = exps[c] / z;
    return max + log(z);
}

/* ---- options --------------------------------------------------------------- */

int ibvi_laplace_options_init(ibvi_laplace_options *opts)
{
    IBVI_CHECK_NOT_NULL("ibvi_laplace_options_init", opts);
    memset(opts, 0, sizeof *opts);
    opts->version = IBVI_LAPLACE_OPTIONS_VERSION;
    opts->structure = IBVI_LAPLACE_FULL;
    opts->prior = IBVI_LAPLACE_PRIOR_MARGLIK;
    opts->prior_precision = 1.0f;
    opts->lambda_min = 1e-4f;
    opts->lambda_max = 1e6f;
    opts->grid_points = 21;
    opts->max_bytes = DEFAULT_MAX_BYTES;
    opts->batch = DEFAULT_BATCH;
    return IBVI_OK;
}

static int check_options(const ibvi_laplace_options *o, const char *fn)
{
    IBVI_CHECK_NOT_NULL(fn, o);
    if (o->version != IBVI_LAPLACE_OPTIONS_VERSION)
        return ibvi__fail(IBVI_ERR_INVALID_ARG,
                          "%s: opts->version = %u, expected %d (fill the "
                          "options with ibvi_laplace_options_init)", fn,
                          (unsigned)o->version, IBVI_LAPLACE_OPTIONS_VERSION);
    if (o->structure != IBVI_LAPLACE_FULL && o->structure != IBVI_LAPLACE_KFAC)
        return ibvi__fail(IBVI_ERR_INVALID_ARG,
                          "%s: opts->structure = %d, expected "
                          "IBVI_LAPLACE_FULL (0) or IBVI_LAPLACE_KFAC (1)", fn,
                          (int)o->structure);
    if (o->prior < IBVI_LAPLACE_PRIOR_MARGLIK ||
        o->prior > IBVI_LAPLACE_PRIOR_FIXED)
        return ibvi__fail(IBVI_ERR_INVALID_ARG,
                          "%s: opts->prior = %d, expected _MARGLIK (0), "
                          "_VALIDATION (1) or _FIXED (2)", fn, (int)o->prior);
    if (!(o->prior_precision > 0.0f) || !isfinite(o->prior_precision))
        return ibvi__fail(IBVI_ERR_INVALID_ARG,
                          "%s: opts->prior_precision = %g, expected a finite "
                          "value > 0", fn, (double)o->prior_precision);
    if (!(o->lambda_min > 0.0f) || !isfinite(o->lambda_max) ||
        !(o->lambda_min < o->lambda_max))
        return ibvi__fail(IBVI_ERR_INVALID_ARG,
                          "%s: opts->lambda_min = %g, lambda_max = %g, "
                          "expected 0 < lambda_min < lambda_max, finite", fn,
                          (double)o->lambda_min, (double)o->lambda_max);
    if (o->grid_points < 2 || o->grid_points > 1000)
        return ibvi__fail(IBVI_ERR_INVALID_ARG,
                          "%s: opts->grid_points = %d, expected 2..1000", fn,
                          (int)o->grid_points);
    if (o->max_bytes < 0)
        return ibvi__fail(IBVI_ERR_INVALID_ARG,
                          "%s: opts->max_bytes = %lld, expected >= 0", fn,
                          (long long)o->max_bytes);
    if (o->batch < 1 || o->batch > 65536)
        return ibvi__fail(IBVI_ERR_INVALID_ARG,
                          "%s: opts->batch = %d, expected 1..65536", fn,
                          (int)o->batch);
    return IBVI_OK;
}

/* ---- the handle -------------------------------------------------------------- */

void ibvi_laplace_free(ibvi_laplace *la)
{
    if (!la)
        return;
    const ibvi_allocator a = la->allocator;
    double *bufs[] = {la->h, la->chol, la->blocks, la->kron_a, la->kron_g,
                      la->ua, la->wa, la->ug, la->wg, la->ug2};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++)
        ibvi__free(&a, bufs[i]);
    ibvi__free(&a, la);
}

/* ---- the log marginal likelihood ------------------------------------------ */

/* KFAC's log det(G (x) A + lambda I) from the eigenvalues (clamped at 0
 * against rounding: both factors are positive semi-definite). */
static double kfac_logdet(const ibvi_laplace *la, double lambda)
{
    double s = 0.0;
    for (int32_t k = 0; k < la->classes; k++) {
        const double g = la->wg[k] > 0.0 ? la->wg[k] : 0.0;
        for (int32_t l = 0; l < la->aug; l++) {
            const double a = la->wa[l] > 0.0 ? la->wa[l] : 0.0;
            s += log(g * a + lambda);
        }
    }
    return s;
}

/* FULL: work (P x P) = the Cholesky factor of H + lambda I. Returns 0 or
 * the failing pivot + 1. */
static int64_t factor_full(const ibvi_laplace *la, double lambda, double *work)
{
    const int64_t P = la->P;
    memcpy(work, la->h, (size_t)(P * P) * sizeof(double));
    for (int64_t i = 0; i < P; i++)
        work[i * P + i] += lambda;
    return ibvi__cholesky(la->threads, P, work, P);
}

static double marglik_from_logdet(const ibvi_laplace *la, double lambda,
                                  double logdet)
{
    return -la->nll - 0.5 * lambda * la->theta_sq +
           0.5 * (double)la->P * log(lambda) - 0.5 * logdet;
}

/* The log marginal likelihood at lambda (work: P x P for FULL, else
 * unused); -infinity when H + lambda I does not factor. */
static double marglik(const ibvi_laplace *la, double lambda, double *work)
{
    if (la->structure == IBVI_LAPLACE_KFAC)
        return marglik_from_logdet(la, lambda, kfac_logdet(la, lambda));
    if (factor_full(la, lambda, work))
        return -INFINITY;
    return marglik_from_logdet(la, lambda,
                               ibvi__cholesky_logdet(la->P, work, la->P));
}

/* Golden-section search for the maximum over t = log lambda in [lo, hi]:
 * the objective is concave in t (docs/laplace.md), so unimodal. */
static double maximise_marglik(const ibvi_laplace *la, double lo, double hi,
                               double *work)
{
    const double r = 0.6180339887498949;
    double a = lo, b = hi;
    double t1 = b - r * (b - a), t2 = a + r * (b - a);
    double f1 = marglik(la, exp(t1), work), f2 = marglik(la, exp(t2), work);
    for (int it = 0; it < GOLDEN_STEPS; it++) {
        if (f1 >= f2) {
            b = t2;
            t2 = t1;
            f2 = f1;
            t1 = b - r * (b - a);
            f1 = marglik(la, exp(t1), work);
        } else {
            a = t1;
            t1 = t2;
            f1 = f2;
            t2 = a + r * (b - a);
            f2 = marglik(la, exp(t2), work);
        }
    }
    /* The ends too: the optimum may lie at the range's bound. */
    double best = f1 >= f2 ? t1 : t2, fb = f1 >= f2 ? f1 : f2;
    const double ends[2] = {lo, hi};
    for (int e = 0; e < 2; e++) {
        const double f = marglik(la, exp(ends[e]), work);
        if (f > fb) {
            fb = f;
            best = ends[e];
        }
    }
    return exp(best);
}

/* ---- posterior variances of the logits -------------------------------------- */

/* The softmax is invariant to a shift common to all logits, and along
 * that direction (theta_c += v for every class c) the Hessian is singular
 * (Lambda_n 1 = 0): only the prior constrains it, so the logits' variance
 * there can be large while the predictive does not change at all (a
 * Monte Carlo average is exactly invariant to it). The probit therefore
 * uses the variance of f_c - mean_d f_d: with pi_c = e_c - 1/C, logit c's
 * projected variance is (pi_c (x) a~)^T Sigma (pi_c (x) a~) = a~^T
 * Sigma~_cc a~, Sigma~_cc = X_c^T X_c with X_c = (L^-1 column block c) -
 * (the mean of L^-1's C column blocks), since Sigma = L^-T L^-1.
 *
 * FULL: blocks (C x aug x aug) = those Sigma~_cc for the factor L (P x
 * P); inv: P x P scratch, xc: P x aug scratch twice. */
static void sigma_blocks(const ibvi_laplace *la, const double *l, double *inv,
                         double *xc, double *blocks)
{
    const int64_t P = la->P, aug = la->aug;
    const int32_t C = la->classes;
    double *mean = xc + P * aug;
    ibvi__lower_inverse(la->threads, P, l, P, inv, P);
    memset(mean, 0, (size_t)(P * aug) * sizeof(double));
    for (int64_t r = 0; r < P; r++)
        for (int32_t c = 0; c < C; c++)
            for (int64_t i = 0; i < aug; i++)
                mean[r * aug + i] += inv[r * P + c * aug + i] / C;
    for (int32_t c = 0; c < C; c++) {
        for (int64_t r = 0; r < P; r++)
            for (int64_t i = 0; i < aug; i++)
                xc[r * aug + i] = inv[r * P + c * aug + i] - mean[r * aug + i];
        double *blk = blocks + c * aug * aug;
        ibvi__dsyrk_lower(la->threads, 1, aug, P, 1.0, xc, aug, 0.0, blk, aug);
        symmetrise(blk, aug, aug);
    }
}

/* var (rows x C, double) of the projected logits (see sigma_blocks) for
 * the augmented features abar (rows x aug): FULL from blocks, var_c =
 * a~^T Sigma~_cc a~ (tmp: rows x aug). */
static void variances_full(const ibvi_laplace *la, const double *blocks,
                           const double *abar, int64_t rows, double *tmp,
                           double *var)
{
    const int64_t aug = la->aug;
    const int32_t C = la->classes;
    for (int32_t c = 0; c < C; c++) {
        ibvi__dgemm(la->threads, 0, 0, rows, aug, aug, 1.0, abar, aug,
                    blocks + c * aug * aug, aug, 0.0, tmp, aug);
        for (int64_t r = 0; r < rows; r++) {
            double s = 0.0;
            for (int64_t i = 0; i < aug; i++)
                s += tmp[r * aug + i] * abar[r * aug + i];
            var[r * C + c] = s > 0.0 ? s : 0.0;
        }
    }
}

/* KFAC: with b = U_A^T a~, the logits' covariance is U_G diag(m) U_G^T,
 * m_k = sum_l b_l^2 / (g_k a_l + lambda); projected (see sigma_blocks),
 * var_c = sum_k U~[c,k]^2 m_k with U~ = U_G less its column means
 * (la->ug2 holds U~^2). b2 (rows x aug) holds b_l^2; tmp: rows x C + C x
 * aug. */
static void variances_kfac(const ibvi_laplace *la, double lambda,
                           const double *b2, int64_t rows, double *tmp,
                           double *var)
{
    const int64_t aug = la->aug;
    const int32_t C = la->classes;
    double *inv = tmp + rows * C; /* C x aug: 1 / (g_k a_l + lambda) */
    for (int32_t k = 0; k < C; k++) {
        const double g = la->wg[k] > 0.0 ? la->wg[k] : 0.0;
        for (int64_t l = 0; l < aug; l++) {
            const double a = la->wa[l] > 0.0 ? la->wa[l] : 0.0;
            inv[k * aug + l] = 1.0 / (g * a + lambda);
        }
    }
    /* m (rows x C) = b2 inv^T, then var = m (U_G .^ 2)^T */
    ibvi__dgemm(la->threads, 0, 1, rows, C, aug, 1.0, b2, aug, inv, aug, 0.0,
                tmp, C);
    for (int64_t r = 0; r < rows; r++)
        for (int32_t c = 0; c < C; c++) {
            double s = 0.0;
            for (int32_t k = 0; k < C; k++) {
                s += la->ug2[c * C + k] * tmp[r * C + k];
            }
            var[r * C + c] = s;
        }
}

/* b2 (rows x aug) = (abar U_A) .^ 2. */
static void kfac_project(const ibvi_laplace *la, const double *abar,
                         int64_t rows, double *b2)
{
    const int64_t aug = la->aug;
    ibvi__dgemm(la->threads, 0, 0, rows, aug, aug, 1.0, abar, aug, la->ua,
                aug, 0.0, b2, aug);
    for (int64_t k = 0; k < rows * aug; k++)
        b2[k] *= b2[k];
}

/* probs (rows x C) = softmax(mu / sqrt(1 + pi/8 var)); returns the summed
 * NLL of the labels y when y is given. z: C floats, shifted, exps, p: C
 * doubles each. */
static double probit_rows(const float *logits, const double *var,
                          int64_t rows, int32_t C, const int32_t *y,
                          float *probs, float *z, double *p, double *shifted,
                          double *exps)
{
    double nll = 0.0;
    for (int64_t r = 0; r < rows; r++) {
        for (int32_t c = 0; c < C; c++)
            z[c] = (float)(logits[r * C + c] /
                           sqrt(1.0 + PI / 8.0 * var[r * C + c]));
        const double lse = softmax_row(z, C, p, shifted, exps);
        if (y)
            nll += lse - z[y[r]];
        if (probs)
            for (int32_t c = 0; c < C; c++)
                probs[r * C + c] = (float)p[c];
    }
    return nll;
}

/* ---- fitting ------------------------------------------------------------------ */

/* Validation-set state for choosing lambda by the probit NLL. */
typedef struct validation {
    int64_t n;
    const int32_t *y;
    float *logits;  /* n x C                                   */
    double *abar;   /* n x aug (FULL) or b2 = (abar U_A)^2 (KFAC) */
} validation;

static int alloc_all(const ibvi_allocator *a, void **ptrs[], const size_t *sizes,
                     int count)
{
    for (int i = 0; i < count; i++) {
        *ptrs[i] = ibvi__alloc(a, sizes[i] ? sizes[i] : 1, 1);
        if (!*ptrs[i]) {
            for (int j = 0; j < i; j++) {
                ibvi__free(a, *ptrs[j]);
                *ptrs[j] = NULL;
            }
            return IBVI_ERR_NOMEM;
        }
    }
    return IBVI_OK;
}

/* The validation NLL of the probit predictive at lambda. FULL: work and
 * inv (P x P) and blocks (C aug^2) are scratch; tmp: rows x (aug + C) +
 * C aug; var: batch x C. */
static double validation_nll(const ibvi_laplace *la, double lambda,
                             const validation *v, double *work, double *inv,
                             double *xc, double *blocks, double *tmp, double *var,
                             float *z, double *p, double *sh, double *ex)
{
    const int32_t C = la->classes;
    if (la->structure == IBVI_LAPLACE_FULL) {
        if (factor_full(la, lambda, work))
            return INFINITY;
        sigma_blocks(la, work, inv, xc, blocks);
    }
    double nll = 0.0;
    for (int64_t i0 = 0; i0 < v->n; i0 += la->batch) {
        const int64_t rows = v->n - i0 < la->batch ? v->n - i0 : la->batch;
        const double *rowsv = v->abar + i0 * la->aug;
        if (la->structure == IBVI_LAPLACE_FULL)
            variances_full(la, blocks, rowsv, rows, tmp, var);
        else
            variances_kfac(la, lambda, rowsv, rows, tmp, var);
        nll += probit_rows(v->logits + i0 * C, var, rows, C, v->y + i0, NULL,
                           z, p, sh, ex);
    }
    return nll;
}

int ibvi_laplace_fit(ibvi_laplace **out, ibvi_net *net,
                     const ibvi_laplace_options *opts, const float *x,
                     const int32_t *y, int64_t n, const float *x_val,
                     const int32_t *y_val, int64_t n_val)
{
    static const char fn[] = "ibvi_laplace_fit";
    IBVI_CHECK_NOT_NULL(fn, out);
    *out = NULL;
    int status = ibvi__net_check_ready(net, fn);
    if (status < 0)
        return status;
    status = check_options(opts, fn);
    if (status < 0)
        return status;
    const int32_t L = net->layer_count - 1;
    const ibvi_layer *last = net->layers[L];
    if (last->kind != IBVI__KIND_DENSE)
        return ibvi__fail(IBVI_ERR_INVALID_ARG,
                          "%s: the last layer is %s, expected dense (the "
                          "approximation is of a last dense layer)", fn,
                          last->ops->name);
    for (int32_t i = 0; i <= L; i++)
        if (net->layers[i]->params > 0 &&
            net->layers[i]->covariance != IBVI__COV_NONE)
            return ibvi__fail(IBVI_ERR_INVALID_ARG,
                              "%s: layer %d is variational (family %d), "
                              "expected a deterministic network", fn, (int)i,
                              (int)net->layers[i]->covariance);
    const int32_t C = last->outputs, in = last->inputs, aug = in + 1;
    if (C < 2)
        return ibvi__fail(IBVI_ERR_INVALID_ARG,
                          "%s: the last layer has %d output, expected a "
                          "softmax classifier with 2 or more classes", fn,
                          (int)C);
    IBVI_CHECK_NOT_NULL(fn, x);
    IBVI_CHECK_NOT_NULL(fn, y);
    if (n < 1 || n > INT64_MAX / net->input_dim)
        return ibvi__fail(IBVI_ERR_INVALID_ARG,
                          "%s: n = %lld, expected 1 or more examples", fn,
                          (long long)n);
    const int need_val = opts->prior == IBVI_LAPLACE_PRIOR_VALIDATION;
    if (need_val || n_val != 0 || x_val || y_val) {
        if (need_val || n_val != 0) {
            IBVI_CHECK_NOT_NULL(fn, x_val);
            IBVI_CHECK_NOT_NULL(fn, y_val);
        }
        if (n_val < (need_val ? 1 : 0) || n_val > INT64_MAX / net->input_dim)
            return ibvi__fail(IBVI_ERR_INVALID_ARG,
                              "%s: n_val = %lld, expected %s", fn,
                              (long long)n_val,
                              need_val ? "1 or more examples (the prior is "
                                         "chosen on the validation set)"
                                       : ">= 0");
    }
    status = check_labels(fn, "y", y, n, C);
    if (status < 0)
        return status;
    if (n_val > 0 && (status = check_labels(fn, "y_val", y_val, n_val, C)) < 0)
        return status;
    if (!ibvi__all_finite(x, n * net->input_dim))
        return ibvi__fail(IBVI_ERR_NONFINITE, "%s: x holds NaN or infinity",
                          fn);
    if (n_val > 0 && !ibvi__all_finite(x_val, n_val * net->input_dim))
        return ibvi__fail(IBVI_ERR_NONFINITE,
                          "%s: x_val holds NaN or infinity", fn);
    const int64_t P = last->params;
    const int full = opts->structure == IBVI_LAPLACE_FULL;
    const double hessian_bytes = 8.0 * (double)P * (double)P;
    if (full && hessian_bytes > (double)opts->max_bytes)
        return ibvi__fail(IBVI_ERR_NOMEM,
                          "%s: the full Hessian of the last layer (P = %lld "
                          "parameters) takes %.1f MB (8 P^2 bytes), above "
                          "opts->max_bytes = %lld; use IBVI_LAPLACE_KFAC, "
                          "which needs %.1f MB, or raise max_bytes", fn,
                          (long long)P, hessian_bytes / 1e6,
                          (long long)opts->max_bytes,
                          8.0 * ((double)aug * aug * 2 + (double)C * C * 2) /
                              1e6);

    /* Everything allocated up front, before the network's workspace grows. */
    const ibvi_allocator *al = &net->allocator;
    ibvi_laplace *la = ibvi__calloc(al, 1, sizeof *la);
    if (!la)
        return ibvi__fail(IBVI_ERR_NOMEM, "%s: out of memory", fn);
    la->allocator = *al;
    la->structure = opts->structure;
    la->prior = opts->prior;
    la->classes = C;
    la->inputs = in;
    la->aug = aug;
    la->P = P;
    la->layer = L;
    la->batch = opts->batch;
    la->threads = net->threads;
    la->max_bytes = opts->max_bytes;
    la->n = n;
    const int64_t B = opts->batch < n ? opts->batch : n;
    const size_t PP = (size_t)P * (size_t)P * sizeof(double);
    const size_t AA = (size_t)aug * aug * sizeof(double);
    const size_t CC = (size_t)C * C * sizeof(double);
    void **mine[] = {(void **)&la->h,      (void **)&la->chol,
                     (void **)&la->blocks, (void **)&la->kron_a,
                     (void **)&la->kron_g, (void **)&la->ua,
                     (void **)&la->wa,     (void **)&la->ug,
                     (void **)&la->wg,     (void **)&la->ug2};
    const size_t mine_sizes[] = {full ? PP : 0, full ? PP : 0,
                                 full ? (size_t)C * AA : 0,
                                 full ? 0 : AA, full ? 0 : CC,
                                 full ? 0 : AA, full ? 0 : aug * sizeof(double),
                                 full ? 0 : CC, full ? 0 : C * sizeof(double),
                                 full ? 0 : CC};
    /* Scratch: abar and the rows of Q or D (B x P), p and softmax buffers;
     * the validation set's logits and features; FULL's inverse. */
    const int64_t nv = need_val ? n_val : 0;
    const int64_t vb = nv < opts->batch ? (nv > 0 ? nv : 1) : opts->batch;
    double *abar = NULL, *q = NULL, *pbuf = NULL, *inv = NULL, *vtmp = NULL,
           *vvar = NULL, *vabar = NULL, *vblocks = NULL,
           *copy = NULL, *xc = NULL;
    float *vlogits = NULL;
    void **scratch[] = {(void **)&abar,   (void **)&q,      (void **)&pbuf,
                        (void **)&inv,    (void **)&vtmp,   (void **)&vvar,
                        (void **)&vabar,  (void **)&vlogits, (void **)&vblocks,
                        (void **)&copy,   (void **)&xc};
    const size_t scratch_sizes[] = {
        (size_t)B * aug * sizeof(double),
        (size_t)B * (full ? (size_t)P : (size_t)aug) * sizeof(double),
        (size_t)(B + 4) * C * sizeof(double),
        full ? PP : 0,
        (size_t)(vb * (aug + C) + (int64_t)C * aug) * sizeof(double),
        (size_t)vb * C * sizeof(double),
        (size_t)nv * aug * sizeof(double),
        (size_t)nv * C * sizeof(float),
        need_val && full ? (size_t)C * AA : 0,
        full ? 0 : (AA > CC ? AA : CC),
        full ? 2 * (size_t)P * aug * sizeof(double) : 0};
    if (alloc_all(al, mine, mine_sizes, 10) < 0) {
        ibvi__free(al, la);
        return ibvi__fail(IBVI_ERR_NOMEM, "%s: out of memory", fn);
    }
    if (alloc_all(al, scratch, scratch_sizes, 11) < 0) {
        ibvi_laplace_free(la);
        return ibvi__fail(IBVI_ERR_NOMEM, "%s: out of memory", fn);
    }
#define FREE_SCRATCH()                                                        \
    do {                                                                      \
        for (int s_ = 0; s_ < 11; s_++)                                        \
            ibvi__free(al, *scratch[s_]);                                     \
    } while (0)
    status = ibvi__net_reserve(net, opts->batch < n ? opts->batch : n, 1, fn);
    if (status < 0) {
        FREE_SCRATCH();
        ibvi_laplace_free(la);
        return status;
    }
    /* (A workspace of `batch` rows also serves the validation set.) */
    if (vb > B && (status = ibvi__net_reserve(net, vb, 1, fn)) < 0) {
        FREE_SCRATCH();
        ibvi_laplace_free(la);
        return status;
    }

    /* ---- the Hessian (or its factors) and the NLL at theta* ---- */
    if (full)
        memset(la->h, 0, PP);
    else {
        memset(la->kron_a, 0, AA);
        memset(la->kron_g, 0, CC);
    }
    double *p = pbuf + B * C, *shifted = p + C, *exps = shifted + C;
    double nll = 0.0;
    int nonfinite = 0;
    for (int64_t i0 = 0; i0 < n && !nonfinite; i0 += B) {
        const int64_t rows = n - i0 < B ? n - i0 : B;
        const float *feat, *logits;
        forward_chunk(net, x + i0 * net->input_dim, rows, &feat, &logits);
        augment(feat, rows, in, abar);
        for (int64_t r = 0; r < rows; r++) {
            const double lse = softmax_row(logits + r * C, C, pbuf + r * C,
                                           shifted, exps);
            if (!isfinite(lse)) {
                nonfinite = 1;
                break;
            }
            nll += lse - logits[r * C + y[i0 + r]];
        }
        if (nonfinite)
            break;
        if (full) {
            /* diagonal blocks: sum_n p_nc a~ a~^T, rows sqrt(p_nc) a~ */
            for (int32_t c = 0; c < C; c++) {
                for (int64_t r = 0; r < rows; r++) {
                    const double s = sqrt(pbuf[r * C + c]);
                    for (int32_t i = 0; i < aug; i++)
                        q[r * aug + i] = s * abar[r * aug + i];
                }
                ibvi__dsyrk_lower(la->threads, 1, aug, rows, 1.0, q, aug, 1.0,
                                  la->h + (int64_t)c * aug * P + c * aug, P);
            }
            /* - Q^T Q, row n of Q = p_n (x) a~_n */
            for (int64_t r = 0; r < rows; r++)
                for (int32_t c = 0; c < C; c++) {
                    const double pc = pbuf[r * C + c];
                    double *o = q + r * P + (int64_t)c * aug;
                    for (int32_t i = 0; i < aug; i++)
                        o[i] = pc * abar[r * aug + i];
                }
            ibvi__dsyrk_lower(la->threads, 1, P, rows, -1.0, q, P, 1.0, la->h,
                              P);
        } else {
            ibvi__dsyrk_lower(la->threads, 1, aug, rows, 1.0, abar, aug, 1.0,
                              la->kron_a, aug);
            for (int64_t r = 0; r < rows; r++) {
                const double *pr = pbuf + r * C;
                for (int32_t c = 0; c < C; c++) {
                    for (int32_t d = 0; d < c; d++)
                        la->kron_g[c * C + d] -= pr[c] * pr[d];
                    la->kron_g[c * C + c] += pr[c] - pr[c] * pr[c];
                }
            }
        }
    }
    if (nonfinite) {
        FREE_SCRATCH();
        ibvi_laplace_free(la);
        return ibvi__fail(IBVI_ERR_NONFINITE,
                          "%s: the network's logits are not finite", fn);
    }
    la->nll = nll;
    {
        double s = 0.0;
        for (int64_t k = 0; k < P; k++)
            s += (double)last->mean[k] * last->mean[k];
        la->theta_sq = s;
    }
    if (full)
        symmetrise(la->h, P, P);
    else {
        symmetrise(la->kron_a, aug, aug);
        for (int64_t k = 0; k < (int64_t)C * C; k++)
            la->kron_g[k] /= (double)n;
        symmetrise(la->kron_g, C, C);
    }
    if (!full) {
        /* Eigendecompose copies (the factors stay for get_hessian). */
        memcpy(copy, la->kron_a, AA);
        ibvi__symmetric_eigen(aug, copy, la->wa, la->ua);
        memcpy(copy, la->kron_g, CC);
        ibvi__symmetric_eigen(C, copy, la->wg, la->ug);
        for (int32_t k = 0; k < C; k++) {
            double m = 0.0;
            for (int32_t c = 0; c < C; c++)
                m += la->ug[c * C + k] / C;
            for (int32_t c = 0; c < C; c++) {
                const double u = la->ug[c * C + k] - m;
                la->ug2[c * C + k] = u * u;
            }
        }
    }

    /* ---- the validation set's logits and features ---- */
    validation v = {nv, y_val, vlogits, vabar};
    for (int64_t i0 = 0; i0 < nv; i0 += vb) {
        const int64_t rows = nv - i0 < vb ? nv - i0 : vb;
        const float *feat, *logits;
        forward_chunk(net, x_val + i0 * net->input_dim, rows, &feat, &logits);
        memcpy(vlogits + i0 * C, logits, (size_t)(rows * C) * sizeof(float));
        augment(feat, rows, in, vabar + i0 * aug);
        if (!full) { /* b2 = (abar U_A)^2, through vtmp (rows x aug fits) */
            kfac_project(la, vabar + i0 * aug, rows, vtmp);
            memcpy(vabar + i0 * aug, vtmp, (size_t)(rows * aug) * sizeof(double));
        }
    }
    for (int64_t k = 0; k < nv * C; k++)
        if (!isfinite(vlogits[k])) {
            FREE_SCRATCH();
            ibvi_laplace_free(la);
            return ibvi__fail(IBVI_ERR_NONFINITE,
                              "%s: the network's logits on x_val are not "
                              "finite", fn);
        }

    /* ---- the prior precision ---- */
    const double lo = log((double)opts->lambda_min),
                 hi = log((double)opts->lambda_max);
    switch (opts->prior) {
    case IBVI_LAPLACE_PRIOR_FIXED:
        la->lambda = opts->prior_precision;
        break;
    case IBVI_LAPLACE_PRIOR_MARGLIK:
        la->lambda = maximise_marglik(la, lo, hi, la->chol);
        break;
    case IBVI_LAPLACE_PRIOR_VALIDATION: {
        double best = INFINITY;
        la->lambda = exp(lo);
        float *zf = (float *)(exps + C); /* the C doubles after exps */
        for (int32_t g = 0; g < opts->grid_points; g++) {
            const double t = lo + (hi - lo) * g / (opts->grid_points - 1);
            const double f = validation_nll(la, exp(t), &v, la->chol, inv,
                                            xc, vblocks, vtmp, vvar, zf, p, shifted,
                                            exps);
            if (f < best) {
                best = f;
                la->lambda = exp(t);
            }
        }
        break;
    }
    default:
        break;
    }

    /* ---- the posterior at lambda ---- */
    if (full) {
        if (factor_full(la, la->lambda, la->chol)) {
            FREE_SCRATCH();
            ibvi_laplace_free(la);
            return ibvi__fail(IBVI_ERR_NONFINITE,
                              "%s: H + lambda I is not positive definite in "
                              "double precision at lambda = %g", fn,
                              la->lambda);
        }
        la->log_marglik = marglik_from_logdet(
            la, la->lambda, ibvi__cholesky_logdet(P, la->chol, P));
        sigma_blocks(la, la->chol, inv, xc, la->blocks);
    } else {
        la->log_marglik = marglik(la, la->lambda, NULL);
    }
    la->hash = means_hash(net);
    FREE_SCRATCH();
#undef FREE_SCRATCH
    *out = la;
    return IBVI_OK;
}

/* ---- queries ------------------------------------------------------------------- */

int ibvi_laplace_prior_precision(const ibvi_laplace *la, double *lambda)
{
    static const char fn[] = "ibvi_laplace_prior_precision";
    IBVI_CHECK_NOT_NULL(fn, la);
    IBVI_CHECK_NOT_NULL(fn, lambda);
    *lambda = la->lambda;
    return IBVI_OK;
}

int ibvi_laplace_log_marglik(const ibvi_laplace *la, double *out)
{
    static const char fn[] = "ibvi_laplace_log_marglik";
    IBVI_CHECK_NOT_NULL(fn, la);
    IBVI_CHECK_NOT_NULL(fn, out);
    *out = la->log_marglik;
    return IBVI_OK;
}

int ibvi_laplace_log_marglik_at(const ibvi_laplace *la, double lambda,
                                double *out)
{
    static const char fn[] = "ibvi_laplace_log_marglik_at";
    IBVI_CHECK_NOT_NULL(fn, la);
    IBVI_CHECK_NOT_NULL(fn, out);
    if (!(lambda > 0.0) || !isfinite(lambda))
        return ibvi__fail(IBVI_ERR_INVALID_ARG,
                          "%s: lambda = %g, expected a finite value > 0", fn,
                          lambda);
    double *work = NULL;
    if (la->structure == IBVI_LAPLACE_FULL) {
        work = ibvi__alloc(&la->allocator, (size_t)(la->P * la->P),
                           sizeof(double));
        if (!work)
            return ibvi__fail(IBVI_ERR_NOMEM, "%s: out of memory", fn);
    }
    const double f = marglik(la, lambda, work);
    ibvi__free(&la->allocator, work);
    if (!isfinite(f))
        return ibvi__fail(IBVI_ERR_NONFINITE,
                          "%s: H + lambda I is not positive definite in "
                          "double precision at lambda = %g", fn, lambda);
    *out = f;
    return IBVI_OK;
}

int32_t ibvi_laplace_structure_of(const ibvi_laplace *la)
{
    IBVI_CHECK_NOT_NULL("ibvi_laplace_structure_of", la);
    return la->structure;
}

int64_t ibvi_laplace_param_count(const ibvi_laplace *la)
{
    IBVI_CHECK_NOT_NULL("ibvi_laplace_param_count", la);
    return la->P;
}

int ibvi_laplace_get_hessian(const ibvi_laplace *la, double *h, int64_t len)
{
    static const char fn[] = "ibvi_laplace_get_hessian";
    IBVI_CHECK_NOT_NULL(fn, la);
    IBVI_CHECK_NOT_NULL(fn, h);
    const int64_t P = la->P, aug = la->aug;
    if (P > 3037000499 || len != P * P) /* P^2 must fit in an int64_t */
        return ibvi__fail(IBVI_ERR_SHAPE, "%s: len = %lld, expected P^2 = "
                          "%.0f", fn, (long long)len, (double)P * (double)P);
    for (int64_t k = 0; k < P; k++) {
        double *row = h + theta_index(la, k) * P;
        for (int64_t j = 0; j < P; j++) {
            double v;
            if (la->structure == IBVI_LAPLACE_FULL)
                v = la->h[k * P + j];
            else
                v = la->kron_g[(k / aug) * la->classes + j / aug] *
                    la->kron_a[(k % aug) * aug + j % aug];
            row[theta_index(la, j)] = v;
        }
    }
    return IBVI_OK;
}

/* ---- the posterior network ---------------------------------------------------- */

int ibvi_laplace_build(const ibvi_laplace *la, const ibvi_net *net,
                       ibvi_net **out)
{
    static const char fn[] = "ibvi_laplace_build";
    IBVI_CHECK_NOT_NULL(fn, out);
    *out = NULL;
    IBVI_CHECK_NOT_NULL(fn, la);
    int status = check_fitted_net(la, net, fn);
    if (status < 0)
        return status;
    const int64_t P = la->P, aug = la->aug;
    const double factor_bytes = 4.0 * (double)P * (double)P;
    if (factor_bytes > (double)la->max_bytes || P > INT32_MAX)
        return ibvi__fail(IBVI_ERR_NOMEM,
                          "%s: the posterior's factor (P = %lld parameters) "
                          "takes %.1f MB (4 P^2 bytes), above max_bytes = %lld",
                          fn, (long long)P, factor_bytes / 1e6,
                          (long long)la->max_bytes);
    double *inv = NULL;
    if (la->structure == IBVI_LAPLACE_FULL) {
        inv = ibvi__alloc(&la->allocator, (size_t)(P * P), sizeof(double));
        if (!inv)
            return ibvi__fail(IBVI_ERR_NOMEM, "%s: out of memory", fn);
    }
    ibvi_net *post = NULL;
    status = ibvi__net_clone_architecture(net, fn, &post);
    if (status >= 0) {
        ibvi_covariance_options co = {IBVI_COVARIANCE_OPTIONS_VERSION,
                                      IBVI_COVARIANCE_LOWRANK, (int32_t)P,
                                      0.0f};
        status = ibvi_net_set_covariance(post, la->layer, &co);
        if (status >= 0)
            status = ibvi_net_init(post, net->parameterization, net->seed);
        if (status < 0)
            status = ibvi__fail(status, "%s: out of memory building the "
                                        "posterior network", fn);
    }
    if (status < 0) {
        ibvi__free(&la->allocator, inv);
        ibvi_net_free(post);
        return status;
    }
    float *S = post->layers[la->layer]->factor; /* P x P, rows in theta order */
    if (la->structure == IBVI_LAPLACE_FULL) {
        /* S = L^-T: row k (augmented) of S is column k of L^-1. */
        ibvi__lower_inverse(la->threads, P, la->chol, P, inv, P);
        for (int64_t k = 0; k < P; k++) {
            float *row = S + theta_index(la, k) * P;
            for (int64_t j = 0; j < P; j++)
                row[j] = (float)inv[j * P + k];
        }
        ibvi__free(&la->allocator, inv);
    } else {
        /* S[(c, i), (k, l)] = U_G[c, k] U_A[i, l] / sqrt(g_k a_l + lambda) */
        const int32_t C = la->classes;
        for (int64_t r = 0; r < P; r++) {
            const int64_t c = r / aug, i = r % aug;
            float *row = S + theta_index(la, r) * P;
            for (int32_t k = 0; k < C; k++) {
                const double g = la->wg[k] > 0.0 ? la->wg[k] : 0.0;
                const double ugk = la->ug[c * C + k];
                for (int64_t l = 0; l < aug; l++) {
                    const double a = la->wa[l] > 0.0 ? la->wa[l] : 0.0;
                    row[k * aug + l] = (float)(ugk * la->ua[i * aug + l] /
                                               sqrt(g * a + la->lambda));
                }
            }
        }
    }
    ibvi__net_copy_means(post, net, fn); /* same architecture: cannot fail */
    *out = post;
    return IBVI_OK;
}

/* ---- the probit predictive ------------------------------------------------------ */

int ibvi_laplace_probit(const ibvi_laplace *la, ibvi_net *net, const float *x,
                        int64_t n, float *probs, float *var)
{
    static const char fn[] = "ibvi_laplace_probit";
    IBVI_CHECK_NOT_NULL(fn, la);
    int status = check_fitted_net(la, net, fn);
    if (status < 0)
        return status;
    IBVI_CHECK_NOT_NULL(fn, x);
    IBVI_CHECK_NOT_NULL(fn, probs);
    if (n < 1 || n > INT64_MAX / net->input_dim)
        return ibvi__fail(IBVI_ERR_INVALID_ARG,
                          "%s: n = %lld, expected 1 or more inputs", fn,
                          (long long)n);
    if (!ibvi__all_finite(x, n * net->input_dim))
        return ibvi__fail(IBVI_ERR_NONFINITE, "%s: x holds NaN or infinity",
                          fn);
    const int32_t C = la->classes;
    const int64_t aug = la->aug, B = la->batch < n ? la->batch : n;
    /* abar, b2 (B x aug each), tmp (B (aug + C) + C aug), var (B x C),
     * p, shifted, exps (C each), z (C floats in C doubles) */
    const size_t doubles =
        (size_t)(B * aug * 3 + B * C * 2 + C * aug + 4 * (int64_t)C);
    double *buf = ibvi__alloc(&la->allocator, doubles, sizeof(double));
    if (!buf)
        return ibvi__fail(IBVI_ERR_NOMEM, "%s: out of memory", fn);
    status = ibvi__net_reserve(net, B, 1, fn);
    if (status < 0) {
        ibvi__free(&la->allocator, buf);
        return status;
    }
    double *abar = buf, *b2 = abar + B * aug, *tmp = b2 + B * aug,
           *dvar = tmp + B * (aug + C) + C * aug, *p = dvar + B * C,
           *shifted = p + C, *exps = shifted + C;
    float *z = (float *)(exps + C);
    for (int64_t i0 = 0; i0 < n; i0 += B) {
        const int64_t rows = n - i0 < B ? n - i0 : B;
        const float *feat, *logits;
        forward_chunk(net, x + i0 * net->input_dim, rows, &feat, &logits);
        augment(feat, rows, la->inputs, abar);
        if (la->structure == IBVI_LAPLACE_FULL)
            variances_full(la, la->blocks, abar, rows, tmp, dvar);
        else {
            kfac_project(la, abar, rows, b2);
            variances_kfac(la, la->lambda, b2, rows, tmp, dvar);
        }
        probit_rows(logits, dvar, rows, C, NULL, probs + i0 * C, z, p,
                    shifted, exps);
        if (var)
            for (int64_t k = 0; k < rows * C; k++)
                var[i0 * C + k] = (float)dvar[k];
    }
    ibvi__free(&la->allocator, buf);
    return IBVI_OK;
}
