/*
 * libibvi tests - robustness:
 *
 * 1. Numerical: softmax (temperature_apply, the predictor), log-sum-exp
 *    (the softmax cross-entropy) and the NLL / binary cross-entropy stay
 *    exact for logits of +-1e4 (values checked against closed forms, not
 *    only for finiteness).
 * 2. Divergence: training with a far too large learning rate stops with
 *    IBVI_ERR_NONFINITE and a "non-finite" message; no step that returned
 *    IBVI_OK ever left a NaN or infinite parameter or optimizer state
 *    behind, and the failing step changed nothing.
 * 3. The argument sweep: a table with one row per exported function
 *    (api_table below) calls each with NULL handles, NULL buffers, zero,
 *    negative and huge sizes, mismatched shapes, out-of-range values, NaN
 *    and infinity, and checks the status and that the message names the
 *    function. `test_robust --list-api` prints the table's names; the
 *    api_table test (tests/test_api_table.sh) fails when an exported
 *    function has no row.
 *
 * test_errors.c covers the common error paths call by call; this file is
 * the systematic pass over the whole exported API.
 *
 * SPDX-License-Identifier: MIT
 */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "testutil.h"

#define A IBVI_ERR_INVALID_ARG
#define SH IBVI_ERR_SHAPE
#define ST IBVI_ERR_STATE
#define NF IBVI_ERR_NONFINITE

/* The call fails with `status` and a message that names `fn`. */
#define EXPECT(fn, expr, status)                                              \
    do {                                                                      \
        ibvi_clear_error();                                                   \
        int ex_rc_ = (int)(expr);                                             \
        ck_assert_msg(ex_rc_ == (int)(status),                                \
                      "%s returned %d (%s), expected %d (%s): %s", #expr,     \
                      ex_rc_, ibvi_status_string(ex_rc_), (int)(status),      \
                      ibvi_status_string((int)(status)), ibvi_last_error());  \
        ck_assert_msg(names(ibvi_last_error(), (fn)),                         \
                      "%s: the message does not start with %s: \"%s\"",      \
                      #expr, (fn), ibvi_last_error());                        \
    } while (0)

/* The message starts with "fn:" (as every message of the library does). */
static int names(const char *msg, const char *fn)
{
    const size_t n = strlen(fn);
    return strncmp(msg, fn, n) == 0 && msg[n] == ':';
}

/* A huge request in the sweep must come back as IBVI_ERR_NOMEM, not abort
 * an ASan build (whose allocator aborts on such requests by default). */
const char *__asan_default_options(void);
const char *__asan_default_options(void)
{
    return "allocator_may_return_null=1";
}

/* ======================================================================
 * 1. numerical robustness
 * ====================================================================== */

static void assert_close(double got, double want, double tol, const char *what)
{
    ck_assert_msg(isfinite(got) && fabs(got - want) <= tol,
                  "%s = %.9g, expected %.9g (tolerance %g)", what, got, want,
                  tol);
}

START_TEST(test_softmax_extreme_logits)
{
    /* rows: dominant, tie at the top, a shift of log 3, all equal, -1e4 */
    const float logits[5 * 3] = {
        1e4f, 0.0f, -1e4f,
        1e4f, 1e4f, -1e4f,
        -1e4f, -1e4f + 1.0986123f, -1e4f - 50.0f,
        -1e4f, -1e4f, -1e4f,
        1e4f, 1e4f - 1.0f, 1e4f - 2.0f};
    float p[5 * 3];
    CK_OK(ibvi_temperature_apply(p, logits, 5, 3, 1.0f));
    const double e1 = exp(-1.0), e2 = exp(-2.0), s = 1.0 + e1 + e2;
    /* float -1e4 + log 3: the representable shift, computed in double */
    const double d = (double)(-1e4f + 1.0986123f) - (double)-1e4f;
    const double want[15] = {1, 0, 0, 0.5, 0.5, 0,
                             1.0 / (1.0 + exp(d)), exp(d) / (1.0 + exp(d)), 0,
                             1.0 / 3, 1.0 / 3, 1.0 / 3, 1 / s, e1 / s, e2 / s};
    for (int i = 0; i < 15; i++) {
        char what[32];
        snprintf(what, sizeof what, "p[%d]", i);
        assert_close(p[i], want[i], 1e-6, what);
    }
    /* temperature scaling of huge logits: softmax(z / 100) */
    const float z[2] = {1e4f, -1e4f};
    CK_OK(ibvi_temperature_apply(p, z, 1, 2, 1e4f));
    assert_close(p[0], 1.0 / (1.0 + exp(-2.0)), 1e-6, "p(T = 1e4)[0]");
    assert_close(p[1], exp(-2.0) / (1.0 + exp(-2.0)), 1e-6, "p(T = 1e4)[1]");
}
END_TEST

START_TEST(test_logsumexp_and_nll_extreme_logits)
{
    float loss, g[6];
    /* logsumexp(1e4, 1e4) = 1e4 + log 2: loss of label 0 is log 2 */
    const float tie[2] = {1e4f, 1e4f};
    int32_t y0 = 0, y1 = 1;
    CK_OK(ibvi_loss_softmax_xent(tie, 1, 2, &y0, 1, &loss, g));
    assert_close(loss, log(2.0), 1e-6, "loss(tie)");
    assert_close(g[0], -0.5, 1e-7, "g[0]");
    assert_close(g[1], 0.5, 1e-7, "g[1]");
    /* the right class far ahead: loss 0; far behind: 2e4 */
    const float apart[2] = {1e4f, -1e4f};
    CK_OK(ibvi_loss_softmax_xent(apart, 1, 2, &y0, 1, &loss, g));
    assert_close(loss, 0.0, 1e-7, "loss(right)");
    assert_close(g[0], 0.0, 1e-7, "g right[0]");
    CK_OK(ibvi_loss_softmax_xent(apart, 1, 2, &y1, 1, &loss, g));
    assert_close(loss, 2e4, 1e-3, "loss(wrong)");
    assert_close(g[0], 1.0, 1e-7, "g wrong[0]");
    assert_close(g[1], -1.0, 1e-7, "g wrong[1]");
    /* three classes at -1e4 + {0, 1, 2}: loss of label 2 is
     * log(e^-2 + e^-1 + 1); the shift does not matter */
    const float shifted[3] = {-1e4f, -1e4f + 1.0f, -1e4f + 2.0f};
    int32_t y2 = 2;
    CK_OK(ibvi_loss_softmax_xent(shifted, 1, 3, &y2, 1, &loss, g));
    assert_close(loss, log(exp(-2.0) + exp(-1.0) + 1.0), 1e-5,
                 "loss(shifted)");

    /* binary cross-entropy: log(1 + e^x) - t x, stable both ways */
    const float x[4] = {1e4f, -1e4f, 1e4f, -1e4f};
    const float t[4] = {0.0f, 1.0f, 1.0f, 0.0f};
    CK_OK(ibvi_loss_binary_xent(x, 1, 4, t, 1, &loss, g));
    assert_close(loss, 2e4, 1e-3, "bce");
    const double want_g[4] = {1, -1, 0, 0};
    for (int i = 0; i < 4; i++)
        assert_close(g[i], want_g[i], 1e-7, "bce grad");

    /* NLL of the metrics: a predicted 0 for the true class is floored */
    const float probs[2 * 2] = {1.0f, 0.0f, 0.0f, 1.0f};
    const int32_t labels[2] = {1, 1};
    ibvi_metrics *m = NULL;
    CK_OK(ibvi_metrics_create(&m, 2, NULL));
    CK_OK(ibvi_metrics_add(m, probs, 2, labels));
    double nll;
    CK_OK(ibvi_metrics_nll(m, &nll));
    assert_close(nll, -log(1e-12) / 2.0, 1e-9, "metrics NLL");
    ibvi_metrics_free(m);
    float h[2];
    CK_OK(ibvi_entropy(h, probs, 2, 2));
    assert_close(h[0], 0.0, 0.0, "entropy of a one-hot row");
}
END_TEST

/* A deterministic 2 -> 3 layer with weights +-1e4: logits of +-1e4. */
START_TEST(test_predictor_extreme_logits)
{
    for (int rank = 0; rank <= 1; rank++) {
        ibvi_net *net = tu_net_new(2, NULL);
        CK_OK(ibvi_net_add_dense(net, 3, rank));
        CK_OK(ibvi_net_init(net, IBVI_PARAM_SP, 1));
        const float theta[9] = {1e4f, 0, 0, 1e4f, -1e4f, 0, 0, 0, 0};
        CK_OK(ibvi_layer_set_mean(tu_layer(net, 0), theta, 9));
        if (rank) { /* a tiny spread: the samples stay at +-1e4 */
            float f[9];
            for (int i = 0; i < 9; i++)
                f[i] = 1e-9f;
            CK_OK(ibvi_layer_set_factor(tu_layer(net, 0), f, 9));
        }
        ibvi_predictor *p = NULL;
        CK_OK(ibvi_predictor_create(&p, net, 4, 3));
        const float x[3 * 2] = {1, 0, 1, 1, -1, 0};
        float probs[9], pe[3], ee[3], mi[3];
        CK_OK(ibvi_predictor_run(p, x, 3, probs, pe, ee, mi));
        const double want[9] = {1, 0, 0, 0.5, 0.5, 0, 0, 0, 1};
        for (int i = 0; i < 9; i++)
            assert_close(probs[i], want[i], 1e-6, "predictor probs");
        assert_close(pe[0], 0.0, 1e-6, "entropy of a sure row");
        assert_close(pe[1], log(2.0), 1e-5, "entropy of a tie");
        for (int i = 0; i < 3; i++) {
            assert_close(mi[i], 0.0, 1e-5, "mutual information");
            ck_assert(ee[i] >= 0.0f && isfinite(ee[i]));
        }
        ibvi_predictor_free(p);
        ibvi_net_free(net);
    }
}
END_TEST

/* Logits that overflow float: the predictor reports them. */
START_TEST(test_predictor_overflowing_logits)
{
    ibvi_net *net = tu_net_new(2, NULL);
    CK_OK(ibvi_net_add_dense(net, 2, 0));
    CK_OK(ibvi_net_init(net, IBVI_PARAM_SP, 1));
    const float theta[6] = {3e38f, 3e38f, -3e38f, 0, 0, 0};
    CK_OK(ibvi_layer_set_mean(tu_layer(net, 0), theta, 6));
    ibvi_predictor *p = NULL;
    CK_OK(ibvi_predictor_create(&p, net, 1, 3));
    const float x[2] = {1e4f, 1e4f};
    float probs[2];
    EXPECT("ibvi_predictor_run", ibvi_predictor_run(p, x, 1, probs, NULL, NULL,
                                                    NULL),
           NF);
    ibvi_predictor_free(p);
    ibvi_net_free(net);
}
END_TEST

/* ======================================================================
 * 2. divergence
 * ====================================================================== */

/* All parameters of every dense layer, concatenated (malloc'ed). */
static float *snapshot(ibvi_net *net, int64_t *count)
{
    const int64_t total = ibvi_net_param_count(net);
    float *all = malloc(sizeof(float) * (size_t)total);
    ck_assert_ptr_nonnull(all);
    int64_t at = 0;
    for (int32_t i = 0; i < ibvi_net_layer_count(net); i++) {
        ibvi_layer *l = tu_layer(net, i);
        if (ibvi_layer_get_kind(l) != IBVI_LAYER_DENSE)
            continue;
        int32_t rank;
        CK_OK(ibvi_layer_shape(l, NULL, NULL, &rank));
        const int64_t P = ibvi_layer_param_count(l);
        CK_OK(ibvi_layer_get_mean(l, all + at, P));
        at += P;
        if (rank > 0) {
            CK_OK(ibvi_layer_get_factor(l, all + at, P * rank));
            at += P * rank;
        }
    }
    ck_assert_int_eq(at, total);
    *count = total;
    return all;
}

/* The saved network and optimizer, with the two fields a failed step may
 * change zeroed: the position of the sampling stream (the forward pass drew
 * its noise before the loss was found non-finite) and the checksum. The
 * file must load again: its parameters and optimizer state are finite. */
#define RNG_POSITION_OFFSET 44 /* preamble 16, HEAD header 12, 16 bytes */
static uint8_t *saved_state(ibvi_net *net, ibvi_optimizer *opt, int64_t *len)
{
    CK_OK(ibvi_net_save_size(net, opt, len));
    uint8_t *b = malloc((size_t)*len);
    ck_assert_ptr_nonnull(b);
    CK_OK(ibvi_net_save_buffer(net, opt, b, *len));
    ibvi_net *back = NULL;
    ibvi_optimizer *ob = NULL;
    CK_OK(ibvi_net_load_buffer(&back, &ob, b, *len, NULL));
    ibvi_optimizer_free(ob);
    ibvi_net_free(back);
    memset(b + RNG_POSITION_OFFSET, 0, 8);
    memset(b + *len - 4, 0, 4);
    return b;
}

/* Trains with learning rate lr until a step fails; every successful step
 * leaves finite parameters and optimizer state (the saved file loads), the
 * failing one changes neither. Returns the number of successful steps. */
static int diverge(int32_t opt_kind, float lr, int32_t loss_kind)
{
    tu_rng rng;
    tu_rng_seed(&rng, 5);
    ibvi_net *net = tu_net_new(4, NULL);
    CK_OK(ibvi_net_add_dense(net, 16, 2));
    CK_OK(ibvi_net_add_activation(net, IBVI_ACT_RELU));
    CK_OK(ibvi_net_add_dense(net, 3, 1));
    CK_OK(ibvi_net_init(net, IBVI_PARAM_MUP, 3));
    ibvi_optimizer *opt = NULL;
    CK_OK(ibvi_optimizer_create(&opt, net, opt_kind, lr));
    if (opt_kind == IBVI_OPT_SGD)
        CK_OK(ibvi_optimizer_set_momentum(opt, 0.9f, 0));
    float x[8 * 4], targets[8 * 3], loss = 0.0f;
    int32_t labels[8];
    tu_fill_normal_f(&rng, x, 32, 1.0);
    tu_fill_normal_f(&rng, targets, 24, 1.0);
    for (int i = 0; i < 8; i++) {
        labels[i] = tu_rng_int(&rng, 3);
        for (int j = 0; j < 3; j++) /* valid for the binary loss too */
            targets[3 * i + j] = targets[3 * i + j] > 0.0f ? 1.0f : 0.0f;
    }
    int rc = IBVI_OK, ok = 0;
    int64_t n, len;
    float *params = snapshot(net, &n);
    uint8_t *state = saved_state(net, opt, &len);
    for (int t = 0; t < 200 && rc == IBVI_OK; t++) {
        ibvi_clear_error();
        rc = ibvi_train_step(net, opt, x, 8, 2, loss_kind, labels, targets,
                             &loss);
        float *after = snapshot(net, &n);
        if (rc == IBVI_OK) {
            ok++;
            ck_assert_int_eq(ibvi_optimizer_step_count(opt), ok);
            for (int64_t i = 0; i < n; i++)
                ck_assert_msg(isfinite(after[i]),
                              "lr %g: step %d returned IBVI_OK and left "
                              "parameter %lld = %g", (double)lr, t,
                              (long long)i, (double)after[i]);
            free(params);
            params = after;
            free(state);
            state = saved_state(net, opt, &len);
        } else {
            ck_assert_msg(memcmp(params, after, sizeof(float) * (size_t)n) == 0,
                          "lr %g: the failing step changed the parameters",
                          (double)lr);
            int64_t len2;
            uint8_t *now = saved_state(net, opt, &len2);
            ck_assert_msg(len2 == len && memcmp(state, now, (size_t)len) == 0,
                          "lr %g: the failing step changed the optimizer",
                          (double)lr);
            free(now);
            free(after);
        }
    }
    CK_STATUS(rc, IBVI_ERR_NONFINITE);
    ck_assert_msg(strstr(ibvi_last_error(), "non-finite") != NULL,
                  "message: %s", ibvi_last_error());
    ck_assert_int_eq(ibvi_optimizer_step_count(opt), ok);
    printf("lr %g (%s, loss %d): %d good steps, then \"%s\"\n", (double)lr,
           opt_kind == IBVI_OPT_SGD ? "SGD" : "Adam", (int)loss_kind, ok,
           ibvi_last_error());
    free(params);
    free(state);
    ibvi_optimizer_free(opt);
    ibvi_net_free(net);
    return ok;
}

START_TEST(test_divergence_sgd_softmax)
{
    diverge(IBVI_OPT_SGD, 3e38f, IBVI_LOSS_SOFTMAX_XENT);
    diverge(IBVI_OPT_SGD, 1e30f, IBVI_LOSS_SOFTMAX_XENT);
    diverge(IBVI_OPT_SGD, 1e12f, IBVI_LOSS_SOFTMAX_XENT);
}
END_TEST

START_TEST(test_divergence_sgd_squared)
{
    diverge(IBVI_OPT_SGD, 3e38f, IBVI_LOSS_SQUARED);
    diverge(IBVI_OPT_SGD, 1e30f, IBVI_LOSS_SQUARED);
    diverge(IBVI_OPT_SGD, 1e6f, IBVI_LOSS_SQUARED);
}
END_TEST

START_TEST(test_divergence_adam)
{
    diverge(IBVI_OPT_ADAM, 3e38f, IBVI_LOSS_SOFTMAX_XENT);
    diverge(IBVI_OPT_ADAM, 1e20f, IBVI_LOSS_BINARY_XENT);
    diverge(IBVI_OPT_ADAM, 1e9f, IBVI_LOSS_SQUARED);
}
END_TEST

/* Targets holding NaN or infinity are refused before the forward pass,
 * under ibvi_train_step, and nothing is trained. */
START_TEST(test_nan_targets_not_trained_on)
{
    ibvi_net *net = tu_net_new(2, NULL);
    CK_OK(ibvi_net_add_dense(net, 2, 1));
    CK_OK(ibvi_net_init(net, IBVI_PARAM_SP, 4));
    ibvi_optimizer *opt = NULL;
    CK_OK(ibvi_optimizer_create(&opt, net, IBVI_OPT_SGD, 0.1f));
    const float x[2] = {1, 2};
    float t[2] = {0.5f, NAN}, loss;
    int64_t n;
    float *before = snapshot(net, &n);
    EXPECT("ibvi_train_step", ibvi_train_step(net, opt, x, 1, 1,
                                              IBVI_LOSS_SQUARED, NULL, t,
                                              &loss),
           NF);
    ck_assert_ptr_nonnull(strstr(ibvi_last_error(), "targets hold NaN"));
    t[1] = INFINITY;
    EXPECT("ibvi_train_step", ibvi_train_step(net, opt, x, 1, 1,
                                              IBVI_LOSS_SQUARED, NULL, t,
                                              &loss),
           NF);
    float *after = snapshot(net, &n);
    ck_assert(memcmp(before, after, sizeof(float) * (size_t)n) == 0);
    ck_assert_int_eq(ibvi_optimizer_step_count(opt), 0);
    free(before);
    free(after);
    ibvi_optimizer_free(opt);
    ibvi_net_free(net);
}
END_TEST

/* ======================================================================
 * 3. the argument sweep
 * ====================================================================== */

typedef struct fx {
    ibvi_net *net;        /* 3 -> dense(4, R2) -> relu -> dense(2, R1), SP  */
    ibvi_net *other;      /* same shape, another seed                      */
    ibvi_net *fresh;      /* 3 -> dense(2, R1), not initialised            */
    ibvi_net *empty;      /* no layer                                      */
    ibvi_net *det;        /* 3 -> dense(2, R0), initialised                */
    ibvi_net *wide;       /* 5 -> dense(2, R1): another architecture       */
    ibvi_layer *l0, *act, *l2, *d0, *fresh0;
    ibvi_optimizer *sgd, *adam, *other_sgd;
    ibvi_predictor *pred;
    ibvi_metrics *m2, *m3, *m_empty;
    float x[8 * 5], nan_x[8 * 5], inf_x[8 * 5];
    float buf[256], probs[8 * 3];
    int32_t labels[8];
    char dir[64], path[128];
} fx;

static fx F;

static ibvi_net *build(int32_t in, int32_t hidden, int32_t out, int32_t rank,
                       int init, uint64_t seed)
{
    ibvi_net *net = tu_net_new(in, NULL);
    if (hidden > 0) {
        CK_OK(ibvi_net_add_dense(net, hidden, 2));
        CK_OK(ibvi_net_add_activation(net, IBVI_ACT_RELU));
    }
    if (out > 0)
        CK_OK(ibvi_net_add_dense(net, out, rank));
    if (init)
        CK_OK(ibvi_net_init(net, IBVI_PARAM_SP, seed));
    return net;
}

static void setup(void)
{
    memset(&F, 0, sizeof F);
    F.net = build(3, 4, 2, 1, 1, 1);
    F.other = build(3, 4, 2, 1, 1, 2);
    F.fresh = build(3, 0, 2, 1, 0, 0);
    F.empty = build(3, 0, 0, 0, 0, 0);
    F.det = build(3, 0, 2, 0, 1, 3);
    F.wide = build(5, 0, 2, 1, 1, 4);
    F.l0 = tu_layer(F.net, 0);
    F.act = tu_layer(F.net, 1);
    F.l2 = tu_layer(F.net, 2);
    F.d0 = tu_layer(F.det, 0);
    F.fresh0 = tu_layer(F.fresh, 0);
    CK_OK(ibvi_optimizer_create(&F.sgd, F.net, IBVI_OPT_SGD, 0.1f));
    CK_OK(ibvi_optimizer_create(&F.adam, F.net, IBVI_OPT_ADAM, 0.1f));
    CK_OK(ibvi_optimizer_create(&F.other_sgd, F.other, IBVI_OPT_SGD, 0.1f));
    CK_OK(ibvi_predictor_create(&F.pred, F.net, 3, 5));
    CK_OK(ibvi_metrics_create(&F.m2, 2, NULL));
    CK_OK(ibvi_metrics_create(&F.m3, 3, NULL));
    CK_OK(ibvi_metrics_create(&F.m_empty, 2, NULL));
    for (int i = 0; i < 40; i++) {
        F.x[i] = 0.1f * (float)(i % 9) - 0.4f;
        F.nan_x[i] = F.inf_x[i] = F.x[i];
    }
    F.nan_x[7] = NAN;
    F.inf_x[3] = -INFINITY;
    for (int i = 0; i < 8; i++) {
        F.labels[i] = i % 2;
        F.probs[3 * i] = 0.25f;
        F.probs[3 * i + 1] = 0.75f;
        F.probs[3 * i + 2] = 0.0f;
    }
    float p2[16];
    for (int i = 0; i < 16; i++)
        p2[i] = i % 2 ? 0.75f : 0.25f;
    CK_OK(ibvi_metrics_add(F.m2, p2, 8, F.labels));
    snprintf(F.dir, sizeof F.dir, "/tmp/ibvi-robust-XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(F.dir));
    snprintf(F.path, sizeof F.path, "%s/m.ibvi", F.dir);
}

static void teardown(void)
{
    unlink(F.path);
    rmdir(F.dir);
    ibvi_metrics_free(F.m_empty);
    ibvi_metrics_free(F.m3);
    ibvi_metrics_free(F.m2);
    ibvi_predictor_free(F.pred);
    ibvi_optimizer_free(F.other_sgd);
    ibvi_optimizer_free(F.adam);
    ibvi_optimizer_free(F.sgd);
    ibvi_net_free(F.wide);
    ibvi_net_free(F.det);
    ibvi_net_free(F.empty);
    ibvi_net_free(F.fresh);
    ibvi_net_free(F.other);
    ibvi_net_free(F.net);
}

/* ---- versions, status, errors ---- */

static void sw_version_number(void)
{
    ck_assert_int_eq(ibvi_version_number(), IBVI_VERSION_NUMBER);
}

static void sw_version_string(void)
{
    ck_assert_str_eq(ibvi_version_string(), IBVI_VERSION_STRING);
}

static void sw_status_string(void)
{
    const int32_t codes[] = {INT32_MIN, -11, -1000, 1, 7, INT32_MAX};
    for (size_t i = 0; i < sizeof codes / sizeof codes[0]; i++) {
        const char *s = ibvi_status_string(codes[i]);
        ck_assert(s != NULL && s[0] != 0);
    }
}

static void sw_last_error(void)
{
    ibvi_clear_error();
    ck_assert_str_eq(ibvi_last_error(), "");
    ibvi_net *n = NULL;
    EXPECT("ibvi_net_create", ibvi_net_create(&n, -1, NULL), A);
    /* a long message is cut, not overflowed */
    EXPECT("ibvi_net_load", ibvi_net_load(&n, NULL,
                                          "/nonexistent/aaaaaaaaaaaaaaaaaaaaaaa"
                                          "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
                                          "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
                                          "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
                                          "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
                                          "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
                                          NULL),
           IBVI_ERR_IO);
    ck_assert_int_lt(strlen(ibvi_last_error()), 256);
}

/* ---- kernel selection: no arguments to get wrong; always answers ---- */

static void sw_kernel_name(void)
{
    const char *name = ibvi_kernel_name();
    ck_assert(name != NULL && name[0] != 0);
}

static void sw_kernel_get_origin(void)
{
    const int32_t origin = ibvi_kernel_get_origin();
    ck_assert(origin >= IBVI_KERNEL_BLIS &&
              origin <= IBVI_KERNEL_PREINITIALIZED);
}

static void sw_kernel_description(void)
{
    const char *d = ibvi_kernel_description();
    ck_assert(d != NULL);
    /* It starts with the kernel's name. */
    ck_assert(strncmp(d, ibvi_kernel_name(), strlen(ibvi_kernel_name())) == 0);
}

static void sw_clear_error(void)
{
    ibvi_net *n = NULL;
    ck_assert_int_eq(ibvi_net_create(&n, 0, NULL), A);
    ibvi_clear_error();
    ck_assert_str_eq(ibvi_last_error(), "");
    ibvi_clear_error();
}

/* ---- networks ---- */

static void *nop_alloc(void *o, size_t n)
{
    (void)o;
    return malloc(n);
}

static void sw_net_create(void)
{
    const char *fn = "ibvi_net_create";
    ibvi_net *n = (ibvi_net *)&n;
    EXPECT(fn, ibvi_net_create(NULL, 3, NULL), A);
    const int32_t bad[] = {0, -1, INT32_MIN, 100000001, INT32_MAX};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        n = (ibvi_net *)&n;
        EXPECT(fn, ibvi_net_create(&n, bad[i], NULL), A);
        ck_assert_ptr_null(n);
    }
    ibvi_allocator half = {nop_alloc, NULL, NULL};
    EXPECT(fn, ibvi_net_create(&n, 3, &half), A);
    ck_assert_ptr_null(n);
}

static void sw_net_create_image(void)
{
    const char *fn = "ibvi_net_create_image";
    ibvi_net *n = (ibvi_net *)&n;
    EXPECT(fn, ibvi_net_create_image(NULL, 1, 2, 3, NULL), A);
    const int32_t bad[][3] = {{0, 1, 1},         {1, 0, 1},
                              {1, 1, 0},         {-1, 2, 2},
                              {INT32_MIN, 1, 1}, {1, 1, INT32_MAX},
                              {10001, 100, 100}, {INT32_MAX, INT32_MAX, 2}};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        n = (ibvi_net *)&n;
        EXPECT(fn, ibvi_net_create_image(&n, bad[i][0], bad[i][1], bad[i][2],
                                         NULL), A);
        ck_assert_ptr_null(n);
    }
    ibvi_allocator half = {nop_alloc, NULL, NULL};
    EXPECT(fn, ibvi_net_create_image(&n, 1, 2, 3, &half), A);
    ck_assert_ptr_null(n);
}

static void sw_net_create_like(void)
{
    const char *fn = "ibvi_net_create_like";
    ibvi_net *src = NULL, *n = (ibvi_net *)&n;
    CK_OK(ibvi_net_create(&src, 3, NULL));
    EXPECT(fn, ibvi_net_create_like(NULL, src), A);
    EXPECT(fn, ibvi_net_create_like(&n, NULL), A);
    ck_assert_ptr_null(n);
    CK_OK(ibvi_net_add_dense(src, 2, 1));
    CK_OK(ibvi_net_create_like(&n, src));
    ck_assert_int_eq(ibvi_net_layer_count(n), 1);
    ck_assert_int_eq(ibvi_net_is_initialized(n), 0);
    ibvi_net_free(n);
    ibvi_net_free(src);
}

static void sw_net_input_shape(void)
{
    const char *fn = "ibvi_net_input_shape";
    int32_t c, h, w;
    EXPECT(fn, ibvi_net_input_shape(NULL, &c, &h, &w), A);
    EXPECT(fn, ibvi_net_input_shape(F.net, NULL, &h, &w), A);
    EXPECT(fn, ibvi_net_input_shape(F.net, &c, NULL, &w), A);
    EXPECT(fn, ibvi_net_input_shape(F.net, &c, &h, NULL), A);
    CK_OK(ibvi_net_input_shape(F.fresh, &c, &h, &w));
    ck_assert(c == 3 && h == 1 && w == 1);
}

static void sw_layer_output_shape(void)
{
    const char *fn = "ibvi_layer_output_shape";
    int32_t c, h, w;
    EXPECT(fn, ibvi_layer_output_shape(NULL, &c, &h, &w), A);
    EXPECT(fn, ibvi_layer_output_shape(F.l0, NULL, &h, &w), A);
    EXPECT(fn, ibvi_layer_output_shape(F.l0, &c, NULL, &w), A);
    EXPECT(fn, ibvi_layer_output_shape(F.l0, &c, &h, NULL), A);
    CK_OK(ibvi_layer_output_shape(F.fresh0, &c, &h, &w));
    ck_assert(c == 2 && h == 1 && w == 1);
}

static void sw_net_free(void) { ibvi_net_free(NULL); }

static void sw_net_add_dense(void)
{
    const char *fn = "ibvi_net_add_dense";
    EXPECT(fn, ibvi_net_add_dense(NULL, 3, 0), A);
    ibvi_net *n = tu_net_new(3, NULL);
    EXPECT(fn, ibvi_net_add_dense(n, 0, 0), A);
    EXPECT(fn, ibvi_net_add_dense(n, -5, 0), A);
    EXPECT(fn, ibvi_net_add_dense(n, INT32_MAX, 0), A);
    EXPECT(fn, ibvi_net_add_dense(n, INT32_MIN, 0), A);
    EXPECT(fn, ibvi_net_add_dense(n, 2, -1), A);
    EXPECT(fn, ibvi_net_add_dense(n, 2, 9), A); /* P = 8 */
    EXPECT(fn, ibvi_net_add_dense(n, 2, INT32_MAX), A);
    ck_assert_int_eq(ibvi_net_layer_count(n), 0);
    ibvi_net_free(n);
    /* P (1 + R) = 2^52 x 2^11 = 2^63: the count itself overflows int64
     * (the parameter block once came out 1 byte long: a heap overflow) */
    n = tu_net_new(67108863, NULL);
    EXPECT(fn, ibvi_net_add_dense(n, 67108864, 2047), A);
    EXPECT(fn, ibvi_net_add_dense(n, 100000000, INT32_MAX), A);
    ck_assert_int_eq(ibvi_net_layer_count(n), 0);
    ibvi_net_free(n);
    EXPECT(fn, ibvi_net_add_dense(F.net, 2, 0), ST);
}

static void sw_net_add_activation(void)
{
    const char *fn = "ibvi_net_add_activation";
    EXPECT(fn, ibvi_net_add_activation(NULL, IBVI_ACT_RELU), A);
    const int32_t bad[] = {0, 4, -1, INT32_MAX, INT32_MIN};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        EXPECT(fn, ibvi_net_add_activation(F.fresh, bad[i]), A);
    EXPECT(fn, ibvi_net_add_activation(F.net, IBVI_ACT_RELU), ST);
    ck_assert_int_eq(ibvi_net_layer_count(F.fresh), 1);
}

static void sw_net_init(void)
{
    const char *fn = "ibvi_net_init";
    EXPECT(fn, ibvi_net_init(NULL, IBVI_PARAM_SP, 1), A);
    EXPECT(fn, ibvi_net_init(F.fresh, 2, 1), A);
    EXPECT(fn, ibvi_net_init(F.fresh, -1, 1), A);
    EXPECT(fn, ibvi_net_init(F.empty, IBVI_PARAM_SP, 1), ST);
    ck_assert_int_eq(ibvi_net_is_initialized(F.fresh), 0);
}

static void sw_net_set_threads(void)
{
    const char *fn = "ibvi_net_set_threads";
    EXPECT(fn, ibvi_net_set_threads(NULL, 1), A);
    EXPECT(fn, ibvi_net_set_threads(F.net, 0), A);
    EXPECT(fn, ibvi_net_set_threads(F.net, -1), A);
    EXPECT(fn, ibvi_net_set_threads(F.net, 1025), A);
    EXPECT(fn, ibvi_net_set_threads(F.net, INT32_MIN), A);
    ck_assert_int_eq(ibvi_net_threads(F.net), 1);
}

static void sw_net_threads(void)
{
    EXPECT("ibvi_net_threads", ibvi_net_threads(NULL), A);
}

static void sw_net_reserve(void)
{
    const char *fn = "ibvi_net_reserve";
    EXPECT(fn, ibvi_net_reserve(NULL, 4, 1), A);
    EXPECT(fn, ibvi_net_reserve(F.fresh, 4, 1), ST);
    EXPECT(fn, ibvi_net_reserve(F.net, 0, 1), A);
    EXPECT(fn, ibvi_net_reserve(F.net, -1, 1), A);
    EXPECT(fn, ibvi_net_reserve(F.net, 4, 0), A);
    EXPECT(fn, ibvi_net_reserve(F.net, 4, -2), A);
    EXPECT(fn, ibvi_net_reserve(F.net, 4, 65537), A);
    EXPECT(fn, ibvi_net_reserve(F.net, INT64_MAX, 1), A);
    EXPECT(fn, ibvi_net_reserve(F.net, INT64_MAX / 4, 2), A);
    /* fits in int64 but not in memory: out of memory, not a crash */
    EXPECT(fn, ibvi_net_reserve(F.net, INT64_C(1) << 50, 1), IBVI_ERR_NOMEM);
    /* rows x widest layer fits in int64, the sum over all buffers does not
     * (it once overflowed: undefined behaviour, a wrapped workspace size) */
    EXPECT(fn, ibvi_net_reserve(F.net, INT64_MAX / 4, 1), IBVI_ERR_NOMEM);
    EXPECT(fn, ibvi_net_reserve(F.net, INT64_MAX / 8, 1), IBVI_ERR_NOMEM);
    EXPECT(fn, ibvi_net_reserve(F.net, INT64_MAX / 40, 1), IBVI_ERR_NOMEM);
    float out[2 * 2];
    CK_OK(ibvi_net_forward(F.net, F.x, 2, 1, out));
}

#define SW_NULL_QUERY(name)                                                   \
    static void sw_##name(void) { EXPECT("ibvi_" #name, ibvi_##name(NULL), A); }
SW_NULL_QUERY(net_input_dim)
SW_NULL_QUERY(net_layer_count)
SW_NULL_QUERY(net_is_initialized)
SW_NULL_QUERY(net_noise_size)
SW_NULL_QUERY(net_param_count)
SW_NULL_QUERY(layer_get_kind)
SW_NULL_QUERY(layer_get_role)
SW_NULL_QUERY(layer_param_count)
SW_NULL_QUERY(optimizer_step_count)
SW_NULL_QUERY(optimizer_reset)
SW_NULL_QUERY(optimizer_step)
SW_NULL_QUERY(predictor_samples)
SW_NULL_QUERY(metrics_reset)

static void sw_net_output_dim(void)
{
    EXPECT("ibvi_net_output_dim", ibvi_net_output_dim(NULL), A);
    EXPECT("ibvi_net_output_dim", ibvi_net_output_dim(F.empty), ST);
}

static void sw_net_parameterization(void)
{
    EXPECT("ibvi_net_parameterization", ibvi_net_parameterization(NULL), A);
    EXPECT("ibvi_net_parameterization", ibvi_net_parameterization(F.fresh), ST);
}

static void sw_net_seed(void)
{
    uint64_t u;
    EXPECT("ibvi_net_seed", ibvi_net_seed(NULL, &u), A);
    EXPECT("ibvi_net_seed", ibvi_net_seed(F.net, NULL), A);
    EXPECT("ibvi_net_seed", ibvi_net_seed(F.fresh, &u), ST);
}

static void sw_net_rng_position(void)
{
    uint64_t u;
    EXPECT("ibvi_net_rng_position", ibvi_net_rng_position(NULL, &u), A);
    EXPECT("ibvi_net_rng_position", ibvi_net_rng_position(F.net, NULL), A);
    EXPECT("ibvi_net_rng_position", ibvi_net_rng_position(F.fresh, &u), ST);
}

static void sw_net_set_rng_position(void)
{
    EXPECT("ibvi_net_set_rng_position", ibvi_net_set_rng_position(NULL, 0), A);
    EXPECT("ibvi_net_set_rng_position", ibvi_net_set_rng_position(F.fresh, 0),
           ST);
    /* any position is valid, also the last one */
    CK_OK(ibvi_net_set_rng_position(F.net, UINT64_MAX));
    float out[2 * 2 * 2];
    CK_OK(ibvi_net_forward(F.net, F.x, 2, 2, out));
    for (int i = 0; i < 8; i++)
        ck_assert(isfinite(out[i]));
}

static void sw_net_layer(void)
{
    const char *fn = "ibvi_net_layer";
    ibvi_layer *l = (ibvi_layer *)&l;
    EXPECT(fn, ibvi_net_layer(F.net, 0, NULL), A);
    EXPECT(fn, ibvi_net_layer(NULL, 0, &l), A);
    ck_assert_ptr_null(l);
    const int32_t bad[] = {-1, 3, INT32_MAX, INT32_MIN};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        l = (ibvi_layer *)&l;
        EXPECT(fn, ibvi_net_layer(F.net, bad[i], &l), A);
        ck_assert_ptr_null(l);
    }
    EXPECT(fn, ibvi_net_layer(F.empty, 0, &l), A);
}

/* n and samples sweeps shared by the forward functions */
static const int64_t bad_n[] = {0, -1, INT64_MIN, INT64_MAX, INT64_MAX / 2};
static const int32_t bad_samples[] = {0, -1, INT32_MIN, 65537, INT32_MAX};

static void sw_net_forward(void)
{
    const char *fn = "ibvi_net_forward";
    float out[64];
    EXPECT(fn, ibvi_net_forward(NULL, F.x, 2, 1, out), A);
    EXPECT(fn, ibvi_net_forward(F.net, NULL, 2, 1, out), A);
    EXPECT(fn, ibvi_net_forward(F.net, F.x, 2, 1, NULL), A);
    EXPECT(fn, ibvi_net_forward(F.fresh, F.x, 2, 1, out), ST);
    for (size_t i = 0; i < sizeof bad_n / sizeof bad_n[0]; i++)
        EXPECT(fn, ibvi_net_forward(F.net, F.x, bad_n[i], 1, out), A);
    for (size_t i = 0; i < sizeof bad_samples / sizeof bad_samples[0]; i++)
        EXPECT(fn, ibvi_net_forward(F.net, F.x, 2, bad_samples[i], out), A);
    uint64_t p0, p1;
    CK_OK(ibvi_net_rng_position(F.net, &p0));
    EXPECT(fn, ibvi_net_forward(F.net, F.nan_x, 3, 1, out), NF);
    EXPECT(fn, ibvi_net_forward(F.net, F.inf_x, 3, 2, out), NF);
    CK_OK(ibvi_net_rng_position(F.net, &p1));
    ck_assert_msg(p0 == p1, "a rejected forward advanced the sampling stream");
}

static void sw_net_forward_mean(void)
{
    const char *fn = "ibvi_net_forward_mean";
    float out[64];
    EXPECT(fn, ibvi_net_forward_mean(NULL, F.x, 2, out), A);
    EXPECT(fn, ibvi_net_forward_mean(F.net, NULL, 2, out), A);
    EXPECT(fn, ibvi_net_forward_mean(F.net, F.x, 2, NULL), A);
    EXPECT(fn, ibvi_net_forward_mean(F.fresh, F.x, 2, out), ST);
    for (size_t i = 0; i < sizeof bad_n / sizeof bad_n[0]; i++)
        EXPECT(fn, ibvi_net_forward_mean(F.net, F.x, bad_n[i], out), A);
    EXPECT(fn, ibvi_net_forward_mean(F.net, F.nan_x, 3, out), NF);
    EXPECT(fn, ibvi_net_forward_mean(F.net, F.inf_x, 3, out), NF);
}

static void sw_net_forward_noise(void)
{
    const char *fn = "ibvi_net_forward_noise";
    float out[64], z[16] = {0};
    EXPECT(fn, ibvi_net_forward_noise(NULL, F.x, 2, 1, z, 3, out), A);
    EXPECT(fn, ibvi_net_forward_noise(F.net, NULL, 2, 1, z, 3, out), A);
    EXPECT(fn, ibvi_net_forward_noise(F.net, F.x, 2, 1, NULL, 3, out), A);
    EXPECT(fn, ibvi_net_forward_noise(F.net, F.x, 2, 1, z, 3, NULL), A);
    EXPECT(fn, ibvi_net_forward_noise(F.fresh, F.x, 2, 1, z, 1, out), ST);
    EXPECT(fn, ibvi_net_forward_noise(F.net, F.x, 2, 1, z, 2, out), SH);
    EXPECT(fn, ibvi_net_forward_noise(F.net, F.x, 2, 1, z, 4, out), SH);
    EXPECT(fn, ibvi_net_forward_noise(F.net, F.x, 2, 2, z, 3, out), SH);
    EXPECT(fn, ibvi_net_forward_noise(F.net, F.x, 2, 1, z, -3, out), SH);
    for (size_t i = 0; i < sizeof bad_samples / sizeof bad_samples[0]; i++)
        ck_assert_int_lt(ibvi_net_forward_noise(F.net, F.x, 2, bad_samples[i],
                                                z, 3, out),
                         0);
    for (size_t i = 0; i < sizeof bad_n / sizeof bad_n[0]; i++)
        EXPECT(fn, ibvi_net_forward_noise(F.net, F.x, bad_n[i], 1, z, 3, out),
               A);
    z[1] = NAN;
    EXPECT(fn, ibvi_net_forward_noise(F.net, F.x, 2, 1, z, 3, out), NF);
    z[1] = INFINITY;
    EXPECT(fn, ibvi_net_forward_noise(F.net, F.x, 2, 1, z, 3, out), NF);
    z[1] = 0.0f;
    EXPECT(fn, ibvi_net_forward_noise(F.net, F.nan_x, 3, 1, z, 3, out), NF);
}

static void sw_net_last_noise(void)
{
    const char *fn = "ibvi_net_last_noise";
    float z[16], out[64];
    EXPECT(fn, ibvi_net_last_noise(NULL, z, 3), A);
    EXPECT(fn, ibvi_net_last_noise(F.net, NULL, 3), A);
    EXPECT(fn, ibvi_net_last_noise(F.fresh, z, 1), ST);
    EXPECT(fn, ibvi_net_last_noise(F.net, z, 3), ST); /* no forward yet */
    CK_OK(ibvi_net_forward(F.net, F.x, 2, 2, out));
    EXPECT(fn, ibvi_net_last_noise(F.net, z, 3), SH);
    EXPECT(fn, ibvi_net_last_noise(F.net, z, 0), SH);
    EXPECT(fn, ibvi_net_last_noise(F.net, z, -6), SH);
    CK_OK(ibvi_net_last_noise(F.net, z, 6));
}

static void sw_net_backward(void)
{
    const char *fn = "ibvi_net_backward";
    float out[64], g[64];
    for (int i = 0; i < 64; i++)
        g[i] = 0.01f * (float)i;
    EXPECT(fn, ibvi_net_backward(NULL, g, 4, 2), A);
    EXPECT(fn, ibvi_net_backward(F.fresh, g, 4, 2), ST);
    EXPECT(fn, ibvi_net_backward(F.net, g, 4, 2), ST); /* no forward */
    CK_OK(ibvi_net_forward(F.net, F.x, 2, 2, out));
    EXPECT(fn, ibvi_net_backward(F.net, NULL, 4, 2), A);
    const int64_t rows[] = {0, -4, 3, 5, INT64_MAX, INT64_MIN};
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++)
        EXPECT(fn, ibvi_net_backward(F.net, g, rows[i], 2), SH);
    const int32_t cols[] = {0, -2, 1, 3, INT32_MAX};
    for (size_t i = 0; i < sizeof cols / sizeof cols[0]; i++)
        EXPECT(fn, ibvi_net_backward(F.net, g, 4, cols[i]), SH);
    g[5] = NAN;
    EXPECT(fn, ibvi_net_backward(F.net, g, 4, 2), NF);
    g[5] = -INFINITY;
    EXPECT(fn, ibvi_net_backward(F.net, g, 4, 2), NF);
    g[5] = 0.0f;
    CK_OK(ibvi_net_backward(F.net, g, 4, 2));
}

/* ---- layers ---- */

static void sw_layer_has_bias(void)
{
    EXPECT("ibvi_layer_has_bias", ibvi_layer_has_bias(NULL), A);
    ck_assert_int_eq(ibvi_layer_has_bias(F.l0), 1);  /* dense */
    ck_assert_int_eq(ibvi_layer_has_bias(F.act), 0); /* no parameters */
}

static void sw_layer_get_activation(void)
{
    EXPECT("ibvi_layer_get_activation", ibvi_layer_get_activation(NULL), A);
    EXPECT("ibvi_layer_get_activation", ibvi_layer_get_activation(F.l0), A);
    ck_assert_int_eq(ibvi_layer_get_activation(F.act), IBVI_ACT_RELU);
}

static void sw_layer_shape(void)
{
    int32_t a, b, c;
    EXPECT("ibvi_layer_shape", ibvi_layer_shape(NULL, &a, &b, &c), A);
    CK_OK(ibvi_layer_shape(F.l0, NULL, NULL, NULL));
}

static void sw_layer_init_std(void)
{
    const char *fn = "ibvi_layer_init_std";
    float a, b;
    EXPECT(fn, ibvi_layer_init_std(NULL, &a, &b), A);
    EXPECT(fn, ibvi_layer_init_std(F.l0, NULL, &b), A);
    EXPECT(fn, ibvi_layer_init_std(F.l0, &a, NULL), A);
    EXPECT(fn, ibvi_layer_init_std(F.act, &a, &b), A);
    EXPECT(fn, ibvi_layer_init_std(F.fresh0, &a, &b), ST);
}

typedef int (*get_fn)(const ibvi_layer *, float *, int64_t);
typedef int (*set_fn)(ibvi_layer *, const float *, int64_t);

/* l0: P = 16, R = 2; d0: P = 8, R = 0. */
static void sweep_copy(const char *fn, get_fn get, set_fn set, int factor)
{
    const int64_t len = factor ? 32 : 16;
    float b[64] = {0};
#define CALL_COPY(layer, ptr, n)                                              \
    (get ? get((layer), (ptr), (n)) : set((layer), (ptr), (n)))
    EXPECT(fn, CALL_COPY(NULL, b, len), A);
    EXPECT(fn, CALL_COPY(F.l0, NULL, len), A);
    EXPECT(fn, CALL_COPY(F.fresh0, b, 2), ST);
    EXPECT(fn, CALL_COPY(F.act, b, 1), A);
    const int64_t bad[] = {0, -1, len - 1, len + 1, INT64_MAX, INT64_MIN};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        EXPECT(fn, CALL_COPY(F.l0, b, bad[i]), SH);
    if (factor)
        EXPECT(fn, CALL_COPY(F.d0, b, 8), A); /* deterministic: no factor */
    if (set) {
        float before[64], after[64];
        CK_OK(factor ? ibvi_layer_get_factor(F.l0, before, len)
                     : ibvi_layer_get_mean(F.l0, before, len));
        memcpy(b, before, sizeof(float) * (size_t)len);
        b[len - 1] = NAN;
        EXPECT(fn, set(F.l0, b, len), NF);
        b[len - 1] = INFINITY;
        EXPECT(fn, set(F.l0, b, len), NF);
        CK_OK(factor ? ibvi_layer_get_factor(F.l0, after, len)
                     : ibvi_layer_get_mean(F.l0, after, len));
        ck_assert(memcmp(before, after, sizeof(float) * (size_t)len) == 0);
    }
#undef CALL_COPY
}

static void sw_layer_get_mean(void)
{
    sweep_copy("ibvi_layer_get_mean", ibvi_layer_get_mean, NULL, 0);
}
static void sw_layer_set_mean(void)
{
    sweep_copy("ibvi_layer_set_mean", NULL, ibvi_layer_set_mean, 0);
}
static void sw_layer_get_factor(void)
{
    sweep_copy("ibvi_layer_get_factor", ibvi_layer_get_factor, NULL, 1);
}
static void sw_layer_set_factor(void)
{
    sweep_copy("ibvi_layer_set_factor", NULL, ibvi_layer_set_factor, 1);
}
static void sw_layer_get_grad_mean(void)
{
    sweep_copy("ibvi_layer_get_grad_mean", ibvi_layer_get_grad_mean, NULL, 0);
}
static void sw_layer_get_grad_factor(void)
{
    sweep_copy("ibvi_layer_get_grad_factor", ibvi_layer_get_grad_factor, NULL,
               1);
}

static void sw_layer_lr_multipliers(void)
{
    const char *fn = "ibvi_layer_lr_multipliers";
    float a, b;
    EXPECT(fn, ibvi_layer_lr_multipliers(NULL, IBVI_OPT_SGD, &a, &b), A);
    EXPECT(fn, ibvi_layer_lr_multipliers(F.l0, IBVI_OPT_SGD, NULL, &b), A);
    EXPECT(fn, ibvi_layer_lr_multipliers(F.l0, IBVI_OPT_SGD, &a, NULL), A);
    EXPECT(fn, ibvi_layer_lr_multipliers(F.l0, 2, &a, &b), A);
    EXPECT(fn, ibvi_layer_lr_multipliers(F.l0, -1, &a, &b), A);
    EXPECT(fn, ibvi_layer_lr_multipliers(F.act, IBVI_OPT_SGD, &a, &b), A);
    EXPECT(fn, ibvi_layer_lr_multipliers(F.fresh0, IBVI_OPT_SGD, &a, &b), ST);
}

/* ---- optimizers ---- */

static void sw_optimizer_create(void)
{
    const char *fn = "ibvi_optimizer_create";
    ibvi_optimizer *o = (ibvi_optimizer *)&o;
    EXPECT(fn, ibvi_optimizer_create(NULL, F.net, IBVI_OPT_SGD, 0.1f), A);
    EXPECT(fn, ibvi_optimizer_create(&o, NULL, IBVI_OPT_SGD, 0.1f), A);
    ck_assert_ptr_null(o);
    EXPECT(fn, ibvi_optimizer_create(&o, F.fresh, IBVI_OPT_SGD, 0.1f), ST);
    EXPECT(fn, ibvi_optimizer_create(&o, F.net, 2, 0.1f), A);
    EXPECT(fn, ibvi_optimizer_create(&o, F.net, -1, 0.1f), A);
    const float bad[] = {0.0f, -0.0f, -1.0f, NAN, INFINITY, -INFINITY};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        o = (ibvi_optimizer *)&o;
        EXPECT(fn, ibvi_optimizer_create(&o, F.net, IBVI_OPT_ADAM, bad[i]), A);
        ck_assert_ptr_null(o);
    }
}

static void sw_optimizer_free(void) { ibvi_optimizer_free(NULL); }

static void sw_optimizer_set_lr(void)
{
    const char *fn = "ibvi_optimizer_set_lr";
    EXPECT(fn, ibvi_optimizer_set_lr(NULL, 0.1f), A);
    const float bad[] = {0.0f, -1.0f, NAN, INFINITY, -INFINITY};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        EXPECT(fn, ibvi_optimizer_set_lr(F.sgd, bad[i]), A);
    float lr;
    CK_OK(ibvi_optimizer_get_lr(F.sgd, &lr));
    ck_assert(lr == 0.1f);
}

static void sw_optimizer_get_lr(void)
{
    float lr;
    EXPECT("ibvi_optimizer_get_lr", ibvi_optimizer_get_lr(NULL, &lr), A);
    EXPECT("ibvi_optimizer_get_lr", ibvi_optimizer_get_lr(F.sgd, NULL), A);
}

static void sw_optimizer_set_momentum(void)
{
    const char *fn = "ibvi_optimizer_set_momentum";
    EXPECT(fn, ibvi_optimizer_set_momentum(NULL, 0.9f, 0), A);
    EXPECT(fn, ibvi_optimizer_set_momentum(F.adam, 0.9f, 0), A);
    const float bad[] = {1.0f, -0.1f, NAN, INFINITY, 2.0f};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        EXPECT(fn, ibvi_optimizer_set_momentum(F.sgd, bad[i], 0), A);
    EXPECT(fn, ibvi_optimizer_set_momentum(F.sgd, 0.5f, 2), A);
    EXPECT(fn, ibvi_optimizer_set_momentum(F.sgd, 0.5f, -1), A);
}

static void sw_optimizer_set_adam(void)
{
    const char *fn = "ibvi_optimizer_set_adam";
    EXPECT(fn, ibvi_optimizer_set_adam(NULL, 0.9f, 0.999f, 1e-8f), A);
    EXPECT(fn, ibvi_optimizer_set_adam(F.sgd, 0.9f, 0.999f, 1e-8f), A);
    const float bad_beta[] = {1.0f, -0.1f, NAN, INFINITY};
    for (size_t i = 0; i < sizeof bad_beta / sizeof bad_beta[0]; i++) {
        EXPECT(fn, ibvi_optimizer_set_adam(F.adam, bad_beta[i], 0.999f, 1e-8f),
               A);
        EXPECT(fn, ibvi_optimizer_set_adam(F.adam, 0.9f, bad_beta[i], 1e-8f),
               A);
    }
    const float bad_eps[] = {0.0f, -1e-8f, NAN, INFINITY};
    for (size_t i = 0; i < sizeof bad_eps / sizeof bad_eps[0]; i++)
        EXPECT(fn, ibvi_optimizer_set_adam(F.adam, 0.9f, 0.999f, bad_eps[i]),
               A);
}

static void sw_optimizer_step_state(void)
{
    sw_optimizer_step();
    EXPECT("ibvi_optimizer_step", ibvi_optimizer_step(F.sgd), ST);
}

static void sw_train_step(void)
{
    const char *fn = "ibvi_train_step";
    const int X = IBVI_LOSS_SOFTMAX_XENT, Q = IBVI_LOSS_SQUARED;
    float t[16] = {0}, loss;
    int64_t n;
    float *before = snapshot(F.net, &n);
    EXPECT(fn, ibvi_train_step(NULL, F.sgd, F.x, 2, 1, X, F.labels, NULL,
                               &loss), A);
    EXPECT(fn, ibvi_train_step(F.net, NULL, F.x, 2, 1, X, F.labels, NULL,
                               &loss), A);
    EXPECT(fn, ibvi_train_step(F.net, F.sgd, NULL, 2, 1, X, F.labels, NULL,
                               &loss), A);
    EXPECT(fn, ibvi_train_step(F.net, F.other_sgd, F.x, 2, 1, X, F.labels,
                               NULL, &loss), A);
    EXPECT(fn, ibvi_train_step(F.fresh, F.sgd, F.x, 2, 1, X, F.labels, NULL,
                               &loss), ST);
    for (size_t i = 0; i < sizeof bad_n / sizeof bad_n[0]; i++)
        EXPECT(fn, ibvi_train_step(F.net, F.sgd, F.x, bad_n[i], 1, X,
                                   F.labels, NULL, &loss), A);
    for (size_t i = 0; i < sizeof bad_samples / sizeof bad_samples[0]; i++)
        EXPECT(fn, ibvi_train_step(F.net, F.sgd, F.x, 2, bad_samples[i], X,
                                   F.labels, NULL, &loss), A);
    int32_t bad_labels[2] = {0, 2};
    EXPECT(fn,
           ibvi_train_step(F.net, F.sgd, F.x, 2, 1, X, bad_labels, NULL,
                           &loss), A);
    EXPECT(fn, ibvi_train_step(F.net, F.sgd, F.x, 2, 1, 4, F.labels,
                                        t, &loss), A);
    EXPECT(fn,
           ibvi_train_step(F.net, F.sgd, F.x, 2, 1, X, NULL, t, &loss), A);
    EXPECT(fn,
           ibvi_train_step(F.net, F.sgd, F.x, 2, 1, Q, F.labels, NULL, &loss),
           A);
    EXPECT(fn, ibvi_train_step(F.net, F.sgd, F.nan_x, 3, 1, X, F.labels, NULL,
                               &loss), NF);
    EXPECT(fn, ibvi_train_step(F.net, F.adam, F.inf_x, 3, 1, Q, NULL, t,
                               &loss), NF);
    t[1] = NAN;
    EXPECT(fn,
           ibvi_train_step(F.net, F.adam, F.x, 2, 1, Q, NULL, t, &loss), NF);
    ck_assert_int_eq(ibvi_optimizer_step_count(F.sgd), 0);
    ck_assert_int_eq(ibvi_optimizer_step_count(F.adam), 0);
    float *after = snapshot(F.net, &n);
    ck_assert_msg(memcmp(before, after, sizeof(float) * (size_t)n) == 0,
                  "a rejected train step changed the parameters");
    free(before);
    free(after);
}

/* ---- losses ---- */

typedef int (*loss_fn)(const float *, int64_t, int32_t, const void *, int64_t,
                       float *, float *);

/* Through ibvi_loss, whose messages carry its own name. */
static void sweep_loss_common(int32_t kind)
{
    const char *fn = "ibvi_loss";
    float f[16] = {0.1f, 0.2f, 0.3f, 0.4f, 0.5f, 0.6f}, g[16], loss;
    const float t[8] = {0.5f, 0.5f, 0.0f, 1.0f};
    const int32_t *lab = F.labels;
#define L(out, rows, cols, n, lossp)                                          \
    ibvi_loss(kind, (out), (rows), (cols), lab, t, (n), (lossp), g)
    EXPECT(fn, L(NULL, 2, 2, 2, &loss), A);
    EXPECT(fn, L(f, 2, 2, 2, NULL), A);
    EXPECT(fn, ibvi_loss(kind, f, 2, 2, NULL, NULL, 2, &loss, g), A);
    const int64_t bad_rows[] = {0, -2, INT64_MIN};
    for (size_t i = 0; i < 3; i++) {
        EXPECT(fn, L(f, bad_rows[i], 2, 2, &loss), A);
        EXPECT(fn, L(f, 2, 2, bad_rows[i], &loss), A);
    }
    EXPECT(fn, L(f, 2, 0, 2, &loss), A);
    EXPECT(fn, L(f, 2, -1, 2, &loss), A);
    EXPECT(fn, L(f, 3, 2, 2, &loss), SH);
    EXPECT(fn, L(f, 1, 2, 2, &loss), SH);
    EXPECT(fn, L(f, INT64_MAX, 2, 1, &loss), A); /* rows x cols overflows */
    f[1] = NAN;
    EXPECT(fn, L(f, 2, 2, 2, &loss), NF);
    f[1] = INFINITY;
    EXPECT(fn, L(f, 2, 2, 2, &loss), NF);
#undef L
}

static void sw_loss_softmax_xent(void)
{
    const char *fn = "ibvi_loss_softmax_xent";
    sweep_loss_common(IBVI_LOSS_SOFTMAX_XENT);
    float f[4] = {0.1f, 0.2f, 0.3f, 0.4f}, loss;
    int32_t bad[2] = {0, 2}, neg[2] = {-1, 0}, min[2] = {INT32_MIN, 0};
    EXPECT(fn, ibvi_loss_softmax_xent(f, 2, 2, bad, 2, &loss, NULL), A);
    EXPECT(fn, ibvi_loss_softmax_xent(f, 2, 2, neg, 2, &loss, NULL), A);
    EXPECT(fn, ibvi_loss_softmax_xent(f, 2, 2, min, 2, &loss, NULL), A);
}

static void sw_loss_squared(void)
{
    const char *fn = "ibvi_loss_squared";
    sweep_loss_common(IBVI_LOSS_SQUARED);
    float f[4] = {0.1f, 0.2f, 0.3f, 0.4f}, t[4] = {0, 0, 0, NAN}, loss;
    EXPECT(fn, ibvi_loss_squared(f, 2, 2, t, 2, &loss, NULL), NF);
    t[3] = INFINITY;
    EXPECT(fn, ibvi_loss_squared(f, 2, 2, t, 2, &loss, NULL), NF);
    const float big[2] = {3e38f, -3e38f}, zero[2] = {0, 0};
    EXPECT(fn, ibvi_loss_squared(big, 1, 2, zero, 1, &loss, NULL), NF);
}

static void sw_loss_binary_xent(void)
{
    const char *fn = "ibvi_loss_binary_xent";
    sweep_loss_common(IBVI_LOSS_BINARY_XENT);
    float f[4] = {0.1f, 0.2f, 0.3f, 0.4f}, loss;
    const float bad[] = {-0.5f, 1.5f, NAN, INFINITY};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        float t[4] = {0, 1, bad[i], 0.5f};
        EXPECT(fn, ibvi_loss_binary_xent(f, 2, 2, t, 2, &loss, NULL), A);
    }
}

static void sw_loss_gaussian_nll(void)
{
    const char *fn = "ibvi_loss_gaussian_nll";
    sweep_loss_common(IBVI_LOSS_GAUSSIAN_NLL);
    float f[6] = {0.1f, 0.2f, 0.3f, 0.4f, 0.5f, 0.6f}, t[2] = {0, NAN};
    float loss, g[6];
    /* cols odd: not D means and D log-variances */
    EXPECT(fn, ibvi_loss_gaussian_nll(f, 2, 3, t, 2, &loss, NULL), SH);
    EXPECT(fn, ibvi_loss_gaussian_nll(f, 2, 1, t, 2, &loss, NULL), SH);
    EXPECT(fn, ibvi_loss_gaussian_nll(f, 2, 2, t, 2, &loss, g), NF);
    t[1] = -INFINITY;
    EXPECT(fn, ibvi_loss_gaussian_nll(f, 2, 2, t, 2, &loss, g), NF);
    t[1] = 0.0f;
    /* an infinite log-variance is not clamped into a finite loss */
    f[3] = INFINITY;
    EXPECT(fn, ibvi_loss_gaussian_nll(f, 2, 2, t, 2, &loss, g), NF);
    f[3] = -INFINITY;
    EXPECT(fn, ibvi_loss_gaussian_nll(f, 2, 2, t, 2, &loss, g), NF);
    f[3] = NAN;
    EXPECT(fn, ibvi_loss_gaussian_nll(f, 2, 2, t, 2, &loss, g), NF);
    f[3] = 0.4f;
    CK_OK(ibvi_loss_gaussian_nll(f, 2, 2, t, 2, &loss, g));
}

static void sw_loss(void)
{
    float f[4] = {0.1f, 0.2f, 0.3f, 0.4f}, t[4] = {0}, loss;
    const int32_t bad[] = {-1, 4, INT32_MAX};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        EXPECT("ibvi_loss", ibvi_loss(bad[i], f, 2, 2, F.labels, t, 2, &loss,
                                      NULL), A);
}

/* ---- predictors ---- */

static void sw_predictor_create(void)
{
    const char *fn = "ibvi_predictor_create";
    ibvi_predictor *p = (ibvi_predictor *)&p;
    EXPECT(fn, ibvi_predictor_create(NULL, F.net, 2, 1), A);
    EXPECT(fn, ibvi_predictor_create(&p, NULL, 2, 1), A);
    ck_assert_ptr_null(p);
    EXPECT(fn, ibvi_predictor_create(&p, F.fresh, 2, 1), ST);
    for (size_t i = 0; i < sizeof bad_samples / sizeof bad_samples[0]; i++) {
        p = (ibvi_predictor *)&p;
        EXPECT(fn, ibvi_predictor_create(&p, F.net, bad_samples[i], 1), A);
        ck_assert_ptr_null(p);
    }
}

static void sw_predictor_create_ensemble(void)
{
    const char *fn = "ibvi_predictor_create_ensemble";
    ibvi_predictor *p = (ibvi_predictor *)&p;
    ibvi_net *two[2] = {F.net, F.other};
    EXPECT(fn, ibvi_predictor_create_ensemble(NULL, two, 2, 1, 1), A);
    EXPECT(fn, ibvi_predictor_create_ensemble(&p, NULL, 2, 1, 1), A);
    ck_assert_ptr_null(p);
    const int32_t bad_count[] = {0, -1, 4097, INT32_MIN};
    for (size_t i = 0; i < sizeof bad_count / sizeof bad_count[0]; i++)
        EXPECT(fn, ibvi_predictor_create_ensemble(&p, two, bad_count[i], 1, 1),
               A);
    for (size_t i = 0; i < sizeof bad_samples / sizeof bad_samples[0]; i++)
        EXPECT(fn, ibvi_predictor_create_ensemble(&p, two, 2, bad_samples[i],
                                                  1), A);
    ibvi_net *with_null[2] = {F.net, NULL};
    EXPECT(fn, ibvi_predictor_create_ensemble(&p, with_null, 2, 1, 1), A);
    ibvi_net *mixed[2] = {F.net, F.wide};
    EXPECT(fn, ibvi_predictor_create_ensemble(&p, mixed, 2, 1, 1), SH);
    ibvi_net *deterministic[2] = {F.net, F.det};
    EXPECT(fn, ibvi_predictor_create_ensemble(&p, deterministic, 2, 1, 1), SH);
    ibvi_net *uninit[2] = {F.net, F.fresh};
    EXPECT(fn, ibvi_predictor_create_ensemble(&p, uninit, 2, 1, 1), ST);
    ck_assert_ptr_null(p);
}

static void sw_predictor_free(void) { ibvi_predictor_free(NULL); }

static void sw_predictor_set_batch_size(void)
{
    const char *fn = "ibvi_predictor_set_batch_size";
    EXPECT(fn, ibvi_predictor_set_batch_size(NULL, 4), A);
    const int64_t bad[] = {0, -1, INT64_MIN, INT64_MAX};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        EXPECT(fn, ibvi_predictor_set_batch_size(F.pred, bad[i]), A);
    /* a valid size whose workspace does not fit in memory */
    EXPECT(fn, ibvi_predictor_set_batch_size(F.pred, INT64_C(1) << 36),
           IBVI_ERR_NOMEM);
    float probs[8 * 2];
    CK_OK(ibvi_predictor_run(F.pred, F.x, 8, probs, NULL, NULL, NULL));
}

static void sw_predictor_set_mean_network(void)
{
    const char *fn = "ibvi_predictor_set_mean_network";
    EXPECT(fn, ibvi_predictor_set_mean_network(NULL, 1), A);
    EXPECT(fn, ibvi_predictor_set_mean_network(F.pred, 2), A);
    EXPECT(fn, ibvi_predictor_set_mean_network(F.pred, -1), A);
}

static void sw_predictor_set_temperature(void)
{
    const char *fn = "ibvi_predictor_set_temperature";
    EXPECT(fn, ibvi_predictor_set_temperature(NULL, 1.0f), A);
    const float bad[] = {0.0f, -1.0f, NAN, INFINITY, -INFINITY};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        EXPECT(fn, ibvi_predictor_set_temperature(F.pred, bad[i]), A);
}

static void sw_predictor_noise(void)
{
    const char *fn = "ibvi_predictor_noise";
    float z[16];
    EXPECT(fn, ibvi_predictor_noise(NULL, z, 9), A);
    EXPECT(fn, ibvi_predictor_noise(F.pred, NULL, 9), A);
    const int64_t bad[] = {0, -9, 8, 10, INT64_MAX};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        EXPECT(fn, ibvi_predictor_noise(F.pred, z, bad[i]), SH);
    CK_OK(ibvi_predictor_noise(F.pred, z, 9));
}

static void sw_predictor_run(void)
{
    const char *fn = "ibvi_predictor_run";
    float probs[8 * 2];
    EXPECT(fn, ibvi_predictor_run(NULL, F.x, 2, probs, NULL, NULL, NULL), A);
    EXPECT(fn, ibvi_predictor_run(F.pred, NULL, 2, probs, NULL, NULL, NULL), A);
    EXPECT(fn, ibvi_predictor_run(F.pred, F.x, 2, NULL, NULL, NULL, NULL), A);
    for (size_t i = 0; i < sizeof bad_n / sizeof bad_n[0]; i++)
        EXPECT(fn, ibvi_predictor_run(F.pred, F.x, bad_n[i], probs, NULL, NULL,
                                      NULL), A);
    EXPECT(fn, ibvi_predictor_run(F.pred, F.nan_x, 3, probs, NULL, NULL, NULL),
           NF);
    EXPECT(fn, ibvi_predictor_run(F.pred, F.inf_x, 3, probs, NULL, NULL, NULL),
           NF);
}

static void sw_head_options_init(void)
{
    const char *fn = "ibvi_head_options_init";
    ibvi_head_options o = {77, 55, 3.0f};
    EXPECT(fn, ibvi_head_options_init(NULL, IBVI_HEAD_SOFTMAX), A);
    const int32_t bad[] = {-1, 4, INT32_MIN, INT32_MAX};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        EXPECT(fn, ibvi_head_options_init(&o, bad[i]), A);
    ck_assert(o.version == 77 && o.kind == 55 && o.noise_std == 3.0f);
}

static void sw_predictor_set_head(void)
{
    const char *fn = "ibvi_predictor_set_head";
    ibvi_head_options o;
    CK_OK(ibvi_head_options_init(&o, IBVI_HEAD_REGRESSION));
    EXPECT(fn, ibvi_predictor_set_head(NULL, &o), A);
    EXPECT(fn, ibvi_predictor_set_head(F.pred, NULL), A);
    const uint32_t versions[] = {0, 2, UINT32_MAX};
    for (size_t i = 0; i < sizeof versions / sizeof versions[0]; i++) {
        o.version = versions[i];
        EXPECT(fn, ibvi_predictor_set_head(F.pred, &o), A);
    }
    o.version = IBVI_HEAD_OPTIONS_VERSION;
    const int32_t kinds[] = {-1, 4, INT32_MIN, INT32_MAX};
    for (size_t i = 0; i < sizeof kinds / sizeof kinds[0]; i++) {
        o.kind = kinds[i];
        EXPECT(fn, ibvi_predictor_set_head(F.pred, &o), A);
    }
    o.kind = IBVI_HEAD_REGRESSION;
    const float stds[] = {-1.0f, -1e-30f, NAN, INFINITY, -INFINITY};
    for (size_t i = 0; i < sizeof stds / sizeof stds[0]; i++) {
        o.noise_std = stds[i];
        EXPECT(fn, ibvi_predictor_set_head(F.pred, &o), A);
    }
    o.noise_std = 0.5f;
    o.kind = IBVI_HEAD_SIGMOID; /* F.net has 2 outputs */
    EXPECT(fn, ibvi_predictor_set_head(F.pred, &o), SH);
    CK_OK(ibvi_predictor_set_temperature(F.pred, 2.0f));
    o.kind = IBVI_HEAD_REGRESSION;
    EXPECT(fn, ibvi_predictor_set_head(F.pred, &o), ST);
    o.kind = IBVI_HEAD_HETEROSCEDASTIC;
    EXPECT(fn, ibvi_predictor_set_head(F.pred, &o), ST);
    ck_assert_int_eq(ibvi_predictor_head(F.pred), IBVI_HEAD_SOFTMAX);
    CK_OK(ibvi_predictor_set_temperature(F.pred, 1.0f));
    CK_OK(ibvi_predictor_set_head(F.pred, &o));
    EXPECT("ibvi_predictor_set_temperature",
           ibvi_predictor_set_temperature(F.pred, 2.0f), ST);
    /* heteroscedastic on an odd number of outputs */
    ibvi_net *three = build(3, 0, 3, 1, 1, 6);
    ibvi_predictor *p = NULL;
    CK_OK(ibvi_predictor_create(&p, three, 2, 1));
    EXPECT(fn, ibvi_predictor_set_head(p, &o), SH);
    ibvi_predictor_free(p);
    ibvi_net_free(three);
}

static void sw_predictor_head(void)
{
    EXPECT("ibvi_predictor_head", ibvi_predictor_head(NULL), A);
    ck_assert_int_eq(ibvi_predictor_head(F.pred), IBVI_HEAD_SOFTMAX);
}

static void sw_predictor_output_dim(void)
{
    EXPECT("ibvi_predictor_output_dim", ibvi_predictor_output_dim(NULL), A);
    ck_assert_int_eq(ibvi_predictor_output_dim(F.pred), 2);
}

static void sw_predictor_run_regression(void)
{
    const char *fn = "ibvi_predictor_run_regression";
    float mean[8 * 2];
    /* the softmax head */
    EXPECT(fn, ibvi_predictor_run_regression(F.pred, F.x, 2, mean, NULL, NULL,
                                             NULL), ST);
    ibvi_head_options o;
    CK_OK(ibvi_head_options_init(&o, IBVI_HEAD_REGRESSION));
    CK_OK(ibvi_predictor_set_head(F.pred, &o));
    EXPECT("ibvi_predictor_run",
           ibvi_predictor_run(F.pred, F.x, 2, mean, NULL, NULL, NULL), ST);
    EXPECT(fn, ibvi_predictor_run_regression(NULL, F.x, 2, mean, NULL, NULL,
                                             NULL), A);
    EXPECT(fn, ibvi_predictor_run_regression(F.pred, NULL, 2, mean, NULL,
                                             NULL, NULL), A);
    for (size_t i = 0; i < sizeof bad_n / sizeof bad_n[0]; i++)
        EXPECT(fn, ibvi_predictor_run_regression(F.pred, F.x, bad_n[i], mean,
                                                 NULL, NULL, NULL), A);
    EXPECT(fn, ibvi_predictor_run_regression(F.pred, F.nan_x, 3, mean, NULL,
                                             NULL, NULL), NF);
    EXPECT(fn, ibvi_predictor_run_regression(F.pred, F.inf_x, 3, mean, NULL,
                                             NULL, NULL), NF);
    /* every output may be NULL */
    CK_OK(ibvi_predictor_run_regression(F.pred, F.x, 2, NULL, NULL, NULL,
                                        NULL));
    CK_OK(ibvi_head_options_init(&o, IBVI_HEAD_SOFTMAX));
    CK_OK(ibvi_predictor_set_head(F.pred, &o));
}

/* ---- metrics ---- */

static void sw_metrics_create(void)
{
    const char *fn = "ibvi_metrics_create";
    ibvi_metrics *m = (ibvi_metrics *)&m;
    EXPECT(fn, ibvi_metrics_create(NULL, 2, NULL), A);
    const int32_t bad[] = {0, -1, INT32_MIN};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        m = (ibvi_metrics *)&m;
        EXPECT(fn, ibvi_metrics_create(&m, bad[i], NULL), A);
        ck_assert_ptr_null(m);
    }
    ibvi_allocator half = {nop_alloc, NULL, NULL};
    EXPECT(fn, ibvi_metrics_create(&m, 2, &half), A);
}

static void sw_metrics_free(void) { ibvi_metrics_free(NULL); }

static void sw_metrics_add(void)
{
    const char *fn = "ibvi_metrics_add";
    float p[4] = {0.5f, 0.5f, 0.25f, 0.75f};
    int32_t lab[2] = {0, 1};
    int64_t before, after;
    CK_OK(ibvi_metrics_count(F.m2, &before));
    EXPECT(fn, ibvi_metrics_add(NULL, p, 2, lab), A);
    EXPECT(fn, ibvi_metrics_add(F.m2, NULL, 2, lab), A);
    EXPECT(fn, ibvi_metrics_add(F.m2, p, 2, NULL), A);
    const int64_t bad_n2[] = {0, -1, INT64_MIN, INT64_MAX};
    for (size_t i = 0; i < sizeof bad_n2 / sizeof bad_n2[0]; i++)
        EXPECT(fn, ibvi_metrics_add(F.m2, p, bad_n2[i], lab), A);
    int32_t bad_lab[2] = {0, 2};
    EXPECT(fn, ibvi_metrics_add(F.m2, p, 2, bad_lab), A);
    bad_lab[1] = -1;
    EXPECT(fn, ibvi_metrics_add(F.m2, p, 2, bad_lab), A);
    const float bad_p[] = {-0.01f, 1.01f, 2.0f};
    for (size_t i = 0; i < sizeof bad_p / sizeof bad_p[0]; i++) {
        p[3] = bad_p[i];
        EXPECT(fn, ibvi_metrics_add(F.m2, p, 2, lab), A);
    }
    p[3] = NAN;
    EXPECT(fn, ibvi_metrics_add(F.m2, p, 2, lab), NF);
    p[3] = INFINITY;
    EXPECT(fn, ibvi_metrics_add(F.m2, p, 2, lab), NF);
    CK_OK(ibvi_metrics_count(F.m2, &after));
    ck_assert_int_eq(before, after);
}

static void sw_metrics_merge(void)
{
    const char *fn = "ibvi_metrics_merge";
    EXPECT(fn, ibvi_metrics_merge(NULL, F.m2), A);
    EXPECT(fn, ibvi_metrics_merge(F.m2, NULL), A);
    EXPECT(fn, ibvi_metrics_merge(F.m2, F.m3), SH);
    EXPECT(fn, ibvi_metrics_merge(F.m3, F.m2), SH);
}

static void sw_metrics_count(void)
{
    int64_t n;
    EXPECT("ibvi_metrics_count", ibvi_metrics_count(NULL, &n), A);
    EXPECT("ibvi_metrics_count", ibvi_metrics_count(F.m2, NULL), A);
}

typedef int (*metric_fn)(const ibvi_metrics *, double *);

static void sweep_metric(const char *fn, metric_fn get)
{
    double v = 42.0;
    EXPECT(fn, get(NULL, &v), A);
    EXPECT(fn, get(F.m2, NULL), A);
    EXPECT(fn, get(F.m_empty, &v), ST);
    ck_assert(v == 42.0); /* unchanged on failure */
}

static void sw_metrics_accuracy(void)
{
    sweep_metric("ibvi_metrics_accuracy", ibvi_metrics_accuracy);
}
static void sw_metrics_nll(void) { sweep_metric("ibvi_metrics_nll", ibvi_metrics_nll); }
static void sw_metrics_brier(void)
{
    sweep_metric("ibvi_metrics_brier", ibvi_metrics_brier);
}
static void sw_metrics_ece(void) { sweep_metric("ibvi_metrics_ece", ibvi_metrics_ece); }
static void sw_metrics_mce(void) { sweep_metric("ibvi_metrics_mce", ibvi_metrics_mce); }

static void sw_metrics_bins(void)
{
    const char *fn = "ibvi_metrics_bins";
    int64_t c[16];
    double a[16], k[16];
    const int B = IBVI_METRICS_BINS;
    EXPECT(fn, ibvi_metrics_bins(NULL, c, a, k, B), A);
    EXPECT(fn, ibvi_metrics_bins(F.m2, NULL, a, k, B), A);
    EXPECT(fn, ibvi_metrics_bins(F.m2, c, NULL, k, B), A);
    EXPECT(fn, ibvi_metrics_bins(F.m2, c, a, NULL, B), A);
    const int32_t bad[] = {0, -1, B - 1, B + 1, INT32_MAX};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        EXPECT(fn, ibvi_metrics_bins(F.m2, c, a, k, bad[i]), A);
    EXPECT(fn, ibvi_metrics_bins(F.m_empty, c, a, k, B), ST);
}

static void sw_auroc(void)
{
    const char *fn = "ibvi_auroc";
    const float in[3] = {0.1f, 0.2f, 0.3f};
    float out[2] = {0.5f, 0.6f};
    double v = 7.0;
    EXPECT(fn, ibvi_auroc(NULL, in, 3, out, 2), A);
    EXPECT(fn, ibvi_auroc(&v, NULL, 3, out, 2), A);
    EXPECT(fn, ibvi_auroc(&v, in, 3, NULL, 2), A);
    const int64_t bad[] = {0, -1, INT64_MIN};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        EXPECT(fn, ibvi_auroc(&v, in, bad[i], out, 2), A);
        EXPECT(fn, ibvi_auroc(&v, in, 3, out, bad[i]), A);
    }
    EXPECT(fn, ibvi_auroc(&v, in, INT64_MAX, out, INT64_MAX), A);
    out[1] = NAN;
    EXPECT(fn, ibvi_auroc(&v, in, 3, out, 2), NF);
    ck_assert(v == 7.0);
    out[1] = INFINITY; /* infinite scores are allowed */
    CK_OK(ibvi_auroc(&v, in, 3, out, 2));
    ck_assert(v == 1.0);
}

static void sw_entropy(void)
{
    const char *fn = "ibvi_entropy";
    float h[2] = {9, 9}, p[4] = {0.5f, 0.5f, 1.0f, 0.0f};
    EXPECT(fn, ibvi_entropy(NULL, p, 2, 2), A);
    EXPECT(fn, ibvi_entropy(h, NULL, 2, 2), A);
    EXPECT(fn, ibvi_entropy(h, p, 0, 2), A);
    EXPECT(fn, ibvi_entropy(h, p, -1, 2), A);
    EXPECT(fn, ibvi_entropy(h, p, 2, 0), A);
    EXPECT(fn, ibvi_entropy(h, p, 2, -3), A);
    EXPECT(fn, ibvi_entropy(h, p, INT64_MAX, 2), A);
    p[2] = 1.5f;
    EXPECT(fn, ibvi_entropy(h, p, 2, 2), A);
    p[2] = NAN;
    EXPECT(fn, ibvi_entropy(h, p, 2, 2), NF);
    ck_assert(h[0] == 9.0f);
}

static void sw_metrics_ece_adaptive(void)
{
    const char *fn = "ibvi_metrics_ece_adaptive";
    double v = 42.0;
    EXPECT(fn, ibvi_metrics_ece_adaptive(NULL, &v, 15), A);
    EXPECT(fn, ibvi_metrics_ece_adaptive(F.m2, NULL, 15), A);
    const int32_t bad[] = {0, -1, INT32_MIN};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        EXPECT(fn, ibvi_metrics_ece_adaptive(F.m2, &v, bad[i]), A);
    EXPECT(fn, ibvi_metrics_ece_adaptive(F.m_empty, &v, 15), ST);
    ck_assert(v == 42.0);
}

static void sw_metrics_aurc(void)
{
    sweep_metric("ibvi_metrics_aurc", ibvi_metrics_aurc);
}

static void sw_metrics_risk_coverage(void)
{
    const char *fn = "ibvi_metrics_risk_coverage";
    double r[2] = {5, 5}, c[2] = {0.5, 1.0};
    EXPECT(fn, ibvi_metrics_risk_coverage(NULL, r, c, 2), A);
    EXPECT(fn, ibvi_metrics_risk_coverage(F.m2, NULL, c, 2), A);
    EXPECT(fn, ibvi_metrics_risk_coverage(F.m2, r, NULL, 2), A);
    const int64_t bad[] = {0, -1, INT64_MIN};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        EXPECT(fn, ibvi_metrics_risk_coverage(F.m2, r, c, bad[i]), A);
    const double badc[] = {0.0, -0.5, 1.0000001, INFINITY, -INFINITY};
    for (size_t i = 0; i < sizeof badc / sizeof badc[0]; i++) {
        c[1] = badc[i];
        EXPECT(fn, ibvi_metrics_risk_coverage(F.m2, r, c, 2), A);
    }
    c[1] = 0.25; /* decreasing */
    EXPECT(fn, ibvi_metrics_risk_coverage(F.m2, r, c, 2), A);
    c[1] = NAN;
    EXPECT(fn, ibvi_metrics_risk_coverage(F.m2, r, c, 2), NF);
    c[1] = 1.0;
    EXPECT(fn, ibvi_metrics_risk_coverage(F.m_empty, r, c, 2), ST);
    ck_assert(r[0] == 5 && r[1] == 5);
}

/* The OOD functions with an allocator share one argument contract. */
typedef int (*ood_fn)(double *, const float *, int64_t, const float *,
                      int64_t, const ibvi_allocator *);

static void sweep_ood(const char *fn, ood_fn f)
{
    const float in[3] = {0.1f, 0.2f, 0.3f};
    float out[2] = {0.5f, 0.6f};
    double v = 7.0;
    EXPECT(fn, f(NULL, in, 3, out, 2, NULL), A);
    EXPECT(fn, f(&v, NULL, 3, out, 2, NULL), A);
    EXPECT(fn, f(&v, in, 3, NULL, 2, NULL), A);
    const int64_t bad[] = {0, -1, INT64_MIN};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        EXPECT(fn, f(&v, in, bad[i], out, 2, NULL), A);
        EXPECT(fn, f(&v, in, 3, out, bad[i], NULL), A);
    }
    EXPECT(fn, f(&v, in, INT64_MAX, out, INT64_MAX, NULL), A);
    const ibvi_allocator half = {NULL, NULL, NULL};
    EXPECT(fn, f(&v, in, 3, out, 2, &half), A);
    out[1] = NAN;
    EXPECT(fn, f(&v, in, 3, out, 2, NULL), NF);
    ck_assert(v == 7.0);
    out[1] = INFINITY;
    CK_OK(f(&v, in, 3, out, 2, NULL));
    ck_assert(v == 1.0 || v == 0.0);
}

static void sw_auroc_ex(void) { sweep_ood("ibvi_auroc_ex", ibvi_auroc_ex); }
static void sw_aupr_in(void) { sweep_ood("ibvi_aupr_in", ibvi_aupr_in); }
static void sw_aupr_out(void) { sweep_ood("ibvi_aupr_out", ibvi_aupr_out); }

static int fpr95(double *out, const float *in, int64_t n_in, const float *o,
                 int64_t n_out, const ibvi_allocator *a)
{
    return ibvi_fpr_at_tpr(out, in, n_in, o, n_out, 0.95, a);
}

static void sw_fpr_at_tpr(void)
{
    const char *fn = "ibvi_fpr_at_tpr";
    sweep_ood(fn, fpr95);
    const float in[2] = {0.1f, 0.2f}, out[2] = {0.5f, 0.6f};
    double v = 3.0;
    const double bad[] = {0.0, -0.1, 1.0000001, NAN, INFINITY};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        EXPECT(fn, ibvi_fpr_at_tpr(&v, in, 2, out, 2, bad[i], NULL), A);
    ck_assert(v == 3.0);
}

/* ---- regression metrics ---- */

/* The shared checks of mean / var / y arrays; call(i) runs the function
 * with the arrays as given. */
typedef int (*reg_fn)(double *, const float *, const float *, const float *,
                      int64_t);

static const double reg_levels[2] = {0.5, 0.9};
static int reg_coverage(double *o, const float *m, const float *v,
                        const float *y, int64_t n)
{
    double c[2];
    return ibvi_regression_coverage(o ? c : NULL, m, v, y, n, reg_levels, 2);
}
static int reg_calibration(double *o, const float *m, const float *v,
                           const float *y, int64_t n)
{
    return ibvi_regression_calibration_error(o, m, v, y, n, reg_levels, 2);
}

static void sweep_regression(const char *fn, reg_fn f)
{
    float m[2] = {0, 1}, var[2] = {1, 2}, y[2] = {0.5f, 1};
    double v = 9.0;
    EXPECT(fn, f(NULL, m, var, y, 2), A);
    EXPECT(fn, f(&v, NULL, var, y, 2), A);
    EXPECT(fn, f(&v, m, NULL, y, 2), A);
    EXPECT(fn, f(&v, m, var, NULL, 2), A);
    EXPECT(fn, f(&v, m, var, y, 0), A);
    EXPECT(fn, f(&v, m, var, y, -1), A);
    EXPECT(fn, f(&v, m, var, y, INT64_MIN), A);
    var[1] = 0.0f;
    EXPECT(fn, f(&v, m, var, y, 2), A);
    var[1] = -1.0f;
    EXPECT(fn, f(&v, m, var, y, 2), A);
    var[1] = INFINITY;
    EXPECT(fn, f(&v, m, var, y, 2), NF);
    var[1] = NAN;
    EXPECT(fn, f(&v, m, var, y, 2), NF);
    var[1] = 2;
    m[1] = NAN;
    EXPECT(fn, f(&v, m, var, y, 2), NF);
    m[1] = 1;
    y[0] = -INFINITY;
    EXPECT(fn, f(&v, m, var, y, 2), NF);
    ck_assert(v == 9.0);
}

static void sw_regression_rmse(void)
{
    const char *fn = "ibvi_regression_rmse";
    float m[2] = {0, 1}, y[2] = {0.5f, 1};
    double v = 9.0;
    EXPECT(fn, ibvi_regression_rmse(NULL, m, y, 2), A);
    EXPECT(fn, ibvi_regression_rmse(&v, NULL, y, 2), A);
    EXPECT(fn, ibvi_regression_rmse(&v, m, NULL, 2), A);
    EXPECT(fn, ibvi_regression_rmse(&v, m, y, 0), A);
    EXPECT(fn, ibvi_regression_rmse(&v, m, y, INT64_MIN), A);
    m[0] = INFINITY;
    EXPECT(fn, ibvi_regression_rmse(&v, m, y, 2), NF);
    m[0] = 0;
    y[1] = NAN;
    EXPECT(fn, ibvi_regression_rmse(&v, m, y, 2), NF);
    ck_assert(v == 9.0);
}

static void sw_regression_nll(void)
{
    sweep_regression("ibvi_regression_nll", ibvi_regression_nll);
}
static void sw_regression_crps(void)
{
    sweep_regression("ibvi_regression_crps", ibvi_regression_crps);
}

static void sweep_levels(const char *fn, int coverage)
{
    const float m[2] = {0, 1}, var[2] = {1, 2}, y[2] = {0.5f, 1};
    double c[2] = {4, 4}, l[2] = {0.5, 0.9};
#define LEVEL_CALL(lv, nl)                                                    \
    (coverage ? ibvi_regression_coverage(c, m, var, y, 2, (lv), (nl))         \
              : ibvi_regression_calibration_error(c, m, var, y, 2, (lv), (nl)))
    EXPECT(fn, LEVEL_CALL(NULL, 2), A);
    EXPECT(fn, LEVEL_CALL(l, 0), A);
    EXPECT(fn, LEVEL_CALL(l, -1), A);
    const double bad[] = {0.0, 1.0, -0.5, 1.5, NAN, INFINITY};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        l[1] = bad[i];
        EXPECT(fn, LEVEL_CALL(l, 2), A);
    }
#undef LEVEL_CALL
    ck_assert(c[0] == 4 && c[1] == 4);
}

static void sw_regression_coverage(void)
{
    sweep_regression("ibvi_regression_coverage", reg_coverage);
    sweep_levels("ibvi_regression_coverage", 1);
}
static void sw_regression_calibration_error(void)
{
    sweep_regression("ibvi_regression_calibration_error", reg_calibration);
    sweep_levels("ibvi_regression_calibration_error", 0);
}

static void sw_normal_quantile(void)
{
    const char *fn = "ibvi_normal_quantile";
    double v = 2.0;
    EXPECT(fn, ibvi_normal_quantile(NULL, 0.5), A);
    const double bad[] = {0.0, 1.0, -0.1, 1.1, NAN, INFINITY, -INFINITY};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        EXPECT(fn, ibvi_normal_quantile(&v, bad[i]), A);
    ck_assert(v == 2.0);
}

/* ---- calibration ---- */

static void sw_temperature_fit(void)
{
    const char *fn = "ibvi_temperature_fit";
    float t = 3.0f, z[4] = {1, 2, 3, 4};
    int32_t lab[2] = {0, 1};
    EXPECT(fn, ibvi_temperature_fit(NULL, z, 2, 2, lab), A);
    EXPECT(fn, ibvi_temperature_fit(&t, NULL, 2, 2, lab), A);
    EXPECT(fn, ibvi_temperature_fit(&t, z, 2, 2, NULL), A);
    EXPECT(fn, ibvi_temperature_fit(&t, z, 0, 2, lab), A);
    EXPECT(fn, ibvi_temperature_fit(&t, z, -1, 2, lab), A);
    EXPECT(fn, ibvi_temperature_fit(&t, z, 2, 1, lab), A);
    EXPECT(fn, ibvi_temperature_fit(&t, z, 2, -2, lab), A);
    EXPECT(fn, ibvi_temperature_fit(&t, z, INT64_MAX, 2, lab), A);
    int32_t bad[2] = {0, 2};
    EXPECT(fn, ibvi_temperature_fit(&t, z, 2, 2, bad), A);
    z[2] = NAN;
    EXPECT(fn, ibvi_temperature_fit(&t, z, 2, 2, lab), NF);
    z[2] = -INFINITY;
    EXPECT(fn, ibvi_temperature_fit(&t, z, 2, 2, lab), NF);
    ck_assert(t == 3.0f);
}

static void sw_fit_noise_std(void)
{
    const char *fn = "ibvi_fit_noise_std";
    float m[4] = {0, 1, 2, 3}, v[4] = {0.1f, 0.2f, 0.3f, 0.4f};
    float t[4] = {0.5f, 1.5f, 1.0f, 3.0f}, sigma = 7.0f;
    EXPECT(fn, ibvi_fit_noise_std(NULL, v, t, 2, 2, &sigma), A);
    EXPECT(fn, ibvi_fit_noise_std(m, v, NULL, 2, 2, &sigma), A);
    EXPECT(fn, ibvi_fit_noise_std(m, v, t, 2, 2, NULL), A);
    const int64_t bad_rows[] = {0, -1, INT64_MIN, INT64_MAX};
    for (size_t i = 0; i < sizeof bad_rows / sizeof bad_rows[0]; i++)
        EXPECT(fn, ibvi_fit_noise_std(m, v, t, bad_rows[i], 2, &sigma), A);
    const int32_t bad_dims[] = {0, -1, INT32_MIN};
    for (size_t i = 0; i < sizeof bad_dims / sizeof bad_dims[0]; i++)
        EXPECT(fn, ibvi_fit_noise_std(m, v, t, 2, bad_dims[i], &sigma), A);
    v[2] = -0.5f;
    EXPECT(fn, ibvi_fit_noise_std(m, v, t, 2, 2, &sigma), A);
    v[2] = NAN;
    EXPECT(fn, ibvi_fit_noise_std(m, v, t, 2, 2, &sigma), NF);
    v[2] = 0.3f;
    m[1] = INFINITY;
    EXPECT(fn, ibvi_fit_noise_std(m, v, t, 2, 2, &sigma), NF);
    m[1] = 1.0f;
    t[3] = NAN;
    EXPECT(fn, ibvi_fit_noise_std(m, NULL, t, 2, 2, &sigma), NF);
    ck_assert(sigma == 7.0f);
    t[3] = 3.0f;
    CK_OK(ibvi_fit_noise_std(m, v, t, 2, 2, &sigma));
    ck_assert(sigma >= 0.0f && isfinite(sigma));
}

static void sw_temperature_apply(void)
{
    const char *fn = "ibvi_temperature_apply";
    float p[4] = {5, 5, 5, 5}, z[4] = {1, 2, 3, 4};
    EXPECT(fn, ibvi_temperature_apply(NULL, z, 2, 2, 1.0f), A);
    EXPECT(fn, ibvi_temperature_apply(p, NULL, 2, 2, 1.0f), A);
    EXPECT(fn, ibvi_temperature_apply(p, z, 0, 2, 1.0f), A);
    EXPECT(fn, ibvi_temperature_apply(p, z, 2, 0, 1.0f), A);
    EXPECT(fn, ibvi_temperature_apply(p, z, INT64_MAX, 2, 1.0f), A);
    const float bad[] = {0.0f, -1.0f, NAN, INFINITY};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        EXPECT(fn, ibvi_temperature_apply(p, z, 2, 2, bad[i]), A);
    z[3] = NAN;
    EXPECT(fn, ibvi_temperature_apply(p, z, 2, 2, 1.0f), NF);
    ck_assert(p[0] == 5.0f);
}

/* ---- files ---- */

static void sw_net_save(void)
{
    const char *fn = "ibvi_net_save";
    EXPECT(fn, ibvi_net_save(NULL, NULL, F.path), A);
    EXPECT(fn, ibvi_net_save(F.net, NULL, NULL), A);
    EXPECT(fn, ibvi_net_save(F.net, NULL, ""), A);
    EXPECT(fn, ibvi_net_save(F.net, F.other_sgd, F.path), A);
    EXPECT(fn, ibvi_net_save(F.fresh, NULL, F.path), ST);
    char missing[160];
    snprintf(missing, sizeof missing, "%s/no/such/dir/m.ibvi", F.dir);
    EXPECT(fn, ibvi_net_save(F.net, NULL, missing), IBVI_ERR_IO);
    EXPECT(fn, ibvi_net_save(F.net, NULL, F.dir), IBVI_ERR_IO); /* a dir */
    ck_assert_int_eq(access(F.path, F_OK), -1);
}

static void sw_net_save_size(void)
{
    const char *fn = "ibvi_net_save_size";
    int64_t n = 5;
    EXPECT(fn, ibvi_net_save_size(NULL, NULL, &n), A);
    EXPECT(fn, ibvi_net_save_size(F.net, NULL, NULL), A);
    EXPECT(fn, ibvi_net_save_size(F.net, F.other_sgd, &n), A);
    EXPECT(fn, ibvi_net_save_size(F.fresh, NULL, &n), ST);
    ck_assert_int_eq(n, 5);
}

static void sw_net_save_buffer(void)
{
    const char *fn = "ibvi_net_save_buffer";
    int64_t need;
    CK_OK(ibvi_net_save_size(F.net, F.sgd, &need));
    uint8_t *b = calloc(1, (size_t)need);
    ck_assert_ptr_nonnull(b);
    EXPECT(fn, ibvi_net_save_buffer(NULL, NULL, b, need), A);
    EXPECT(fn, ibvi_net_save_buffer(F.net, NULL, NULL, need), A);
    EXPECT(fn, ibvi_net_save_buffer(F.net, F.other_sgd, b, need), A);
    EXPECT(fn, ibvi_net_save_buffer(F.fresh, NULL, b, need), ST);
    const int64_t bad[] = {0, -1, need - 1, INT64_MIN};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        EXPECT(fn, ibvi_net_save_buffer(F.net, F.sgd, b, bad[i]), SH);
    for (int64_t i = 0; i < need; i++)
        ck_assert_msg(b[i] == 0, "a failed save wrote into the buffer");
    free(b);
}

static void sw_net_load(void)
{
    const char *fn = "ibvi_net_load";
    ibvi_net *n = (ibvi_net *)&n;
    ibvi_optimizer *o = (ibvi_optimizer *)&o;
    EXPECT(fn, ibvi_net_load(NULL, &o, F.path, NULL), A);
    EXPECT(fn, ibvi_net_load(&n, &o, NULL, NULL), A);
    ck_assert_ptr_null(n);
    ck_assert_ptr_null(o);
    ibvi_allocator half = {nop_alloc, NULL, NULL};
    CK_OK(ibvi_net_save(F.net, F.sgd, F.path));
    EXPECT(fn, ibvi_net_load(&n, &o, F.path, &half), A);
    EXPECT(fn, ibvi_net_load(&n, &o, "/nonexistent/m.ibvi", NULL),
           IBVI_ERR_IO);
    EXPECT(fn, ibvi_net_load(&n, &o, F.dir, NULL), IBVI_ERR_IO);
    EXPECT(fn, ibvi_net_load(&n, &o, "/dev/null", NULL), IBVI_ERR_IO);
    FILE *f = fopen(F.path, "wb");
    ck_assert_ptr_nonnull(f);
    fclose(f);
    EXPECT(fn, ibvi_net_load(&n, &o, F.path, NULL), IBVI_ERR_FORMAT);
    ck_assert_ptr_null(n);
    ck_assert_ptr_null(o);
}

static void sw_net_load_buffer(void)
{
    const char *fn = "ibvi_net_load_buffer";
    ibvi_net *n = (ibvi_net *)&n;
    const uint8_t junk[32] = "IBVI\1\0\0\0 not a model at all";
    EXPECT(fn, ibvi_net_load_buffer(NULL, NULL, junk, 32, NULL), A);
    EXPECT(fn, ibvi_net_load_buffer(&n, NULL, NULL, 32, NULL), A);
    ck_assert_ptr_null(n);
    EXPECT(fn, ibvi_net_load_buffer(&n, NULL, junk, -1, NULL), A);
    EXPECT(fn, ibvi_net_load_buffer(&n, NULL, junk, INT64_MIN, NULL), A);
    ibvi_allocator half = {nop_alloc, NULL, NULL};
    EXPECT(fn, ibvi_net_load_buffer(&n, NULL, junk, 32, &half), A);
    EXPECT(fn, ibvi_net_load_buffer(&n, NULL, junk, 0, NULL), IBVI_ERR_FORMAT);
    EXPECT(fn, ibvi_net_load_buffer(&n, NULL, junk, 32, NULL), IBVI_ERR_FORMAT);
    EXPECT(fn, ibvi_net_load_buffer(&n, NULL, junk, 3, NULL), IBVI_ERR_FORMAT);
    ck_assert_ptr_null(n);
}

/* ---- image layers (conv2d, pooling, flatten) ------------------------------ */

static ibvi_net *image_net(int32_t c, int32_t h, int32_t w)
{
    ibvi_net *n = NULL;
    CK_OK(ibvi_net_create_image(&n, c, h, w, NULL));
    return n;
}

static void sw_net_add_conv2d(void)
{
    const char *fn = "ibvi_net_add_conv2d";
    EXPECT(fn, ibvi_net_add_conv2d(NULL, 4, 3, 1, 0, 0), A);
    ibvi_net *n = image_net(2, 6, 6);
    const int32_t bad_size[] = {0, -1, INT32_MIN, INT32_MAX};
    for (size_t i = 0; i < sizeof bad_size / sizeof bad_size[0]; i++) {
        EXPECT(fn, ibvi_net_add_conv2d(n, bad_size[i], 3, 1, 0, 0), A);
        EXPECT(fn, ibvi_net_add_conv2d(n, 4, bad_size[i], 1, 0, 0), A);
        EXPECT(fn, ibvi_net_add_conv2d(n, 4, 3, bad_size[i], 0, 0), A);
    }
    EXPECT(fn, ibvi_net_add_conv2d(n, 4, 3, 1, -1, 0), A);
    EXPECT(fn, ibvi_net_add_conv2d(n, 4, 3, 1, 3, 0), A); /* pad >= kernel */
    EXPECT(fn, ibvi_net_add_conv2d(n, 4, 3, 1, INT32_MIN, 0), A);
    EXPECT(fn, ibvi_net_add_conv2d(n, 4, 7, 1, 0, 0), SH); /* 7 > 6 */
    EXPECT(fn, ibvi_net_add_conv2d(n, 4, 9, 1, 1, 0), SH); /* 9 > 6 + 2 */
    EXPECT(fn, ibvi_net_add_conv2d(n, 4, 3, 1, 0, -1), A);
    EXPECT(fn, ibvi_net_add_conv2d(n, 4, 3, 1, 0, 4 * 19 + 1), A); /* P = 76 */
    EXPECT(fn, ibvi_net_add_conv2d(n, 4, 3, 1, 0, INT32_MAX), A);
    ck_assert_int_eq(ibvi_net_layer_count(n), 0);
    /* After a dense layer the input is (D, 1, 1): only a 1x1-compatible
     * kernel fits. */
    CK_OK(ibvi_net_add_dense(n, 5, 0));
    EXPECT(fn, ibvi_net_add_conv2d(n, 4, 3, 1, 0, 0), SH);
    CK_OK(ibvi_net_add_conv2d(n, 4, 1, 1, 0, 0));
    ck_assert_int_eq(ibvi_net_layer_count(n), 2);
    ibvi_net_free(n);
    EXPECT(fn, ibvi_net_add_conv2d(F.net, 2, 1, 1, 0, 0), ST);
}

static void sw_net_add_conv2d_ex(void)
{
    const char *fn = "ibvi_net_add_conv2d_ex";
    ibvi_conv2d_options o = IBVI_CONV2D_OPTIONS_INIT;
    o.out_channels = 3;
    EXPECT(fn, ibvi_net_add_conv2d_ex(NULL, &o), A);
    ibvi_net *n = image_net(1, 5, 4);
    EXPECT(fn, ibvi_net_add_conv2d_ex(n, NULL), A);
    const uint32_t bad_version[] = {0, 3, UINT32_MAX};
    for (size_t i = 0; i < sizeof bad_version / sizeof bad_version[0]; i++) {
        ibvi_conv2d_options v = o;
        v.version = bad_version[i];
        EXPECT(fn, ibvi_net_add_conv2d_ex(n, &v), A);
    }
    const int32_t bad_no_bias[] = {-1, 2, INT32_MIN, INT32_MAX};
    for (size_t i = 0; i < sizeof bad_no_bias / sizeof bad_no_bias[0]; i++) {
        ibvi_conv2d_options v = o;
        v.no_bias = bad_no_bias[i];
        EXPECT(fn, ibvi_net_add_conv2d_ex(n, &v), A);
    }
    int32_t *fields[] = {&o.out_channels, &o.kernel_h, &o.kernel_w,
                         &o.stride_h, &o.stride_w};
    for (size_t i = 0; i < sizeof fields / sizeof fields[0]; i++) {
        const int32_t keep = *fields[i];
        *fields[i] = 0;
        EXPECT(fn, ibvi_net_add_conv2d_ex(n, &o), A);
        *fields[i] = -2;
        EXPECT(fn, ibvi_net_add_conv2d_ex(n, &o), A);
        *fields[i] = keep;
    }
    o.pad_h = -1;
    EXPECT(fn, ibvi_net_add_conv2d_ex(n, &o), A);
    o.pad_h = 0;
    o.pad_w = 1; /* not smaller than kernel_w = 1 */
    EXPECT(fn, ibvi_net_add_conv2d_ex(n, &o), A);
    o.pad_w = 0;
    o.kernel_w = 5; /* 5 > 4 */
    EXPECT(fn, ibvi_net_add_conv2d_ex(n, &o), SH);
    o.kernel_w = 4;
    o.rank = -1;
    EXPECT(fn, ibvi_net_add_conv2d_ex(n, &o), A);
    ck_assert_int_eq(ibvi_net_layer_count(n), 0);
    o.rank = 2;
    CK_OK(ibvi_net_add_conv2d_ex(n, &o));
    ck_assert_int_eq(ibvi_net_layer_count(n), 1);
    ibvi_net_free(n);
    o.kernel_w = 1; /* F.net's output is (2, 1, 1) */
    EXPECT(fn, ibvi_net_add_conv2d_ex(F.net, &o), ST);
}

/* The sweep shared by max and average pooling. */
static void sweep_pool(const char *fn, int (*add)(ibvi_net *, int32_t, int32_t))
{
    EXPECT(fn, add(NULL, 2, 2), A);
    ibvi_net *n = image_net(3, 4, 5);
    const int32_t bad[] = {0, -1, INT32_MIN, INT32_MAX};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        EXPECT(fn, add(n, bad[i], 2), A);
        EXPECT(fn, add(n, 2, bad[i]), A);
    }
    EXPECT(fn, add(n, 5, 1), SH); /* 5 > height 4 */
    ck_assert_int_eq(ibvi_net_layer_count(n), 0);
    /* A pool on a flat (D, 1, 1) input. */
    CK_OK(ibvi_net_add_dense(n, 6, 0));
    EXPECT(fn, add(n, 2, 2), SH);
    ck_assert_int_eq(ibvi_net_layer_count(n), 1);
    ibvi_net_free(n);
    EXPECT(fn, add(F.net, 1, 1), ST);
}

static void sw_net_add_maxpool(void)
{
    sweep_pool("ibvi_net_add_maxpool", ibvi_net_add_maxpool);
}

static void sw_net_add_avgpool(void)
{
    sweep_pool("ibvi_net_add_avgpool", ibvi_net_add_avgpool);
}

static void sw_net_add_global_avgpool(void)
{
    const char *fn = "ibvi_net_add_global_avgpool";
    EXPECT(fn, ibvi_net_add_global_avgpool(NULL), A);
    EXPECT(fn, ibvi_net_add_global_avgpool(F.net), ST);
}

static void sw_net_add_flatten(void)
{
    const char *fn = "ibvi_net_add_flatten";
    EXPECT(fn, ibvi_net_add_flatten(NULL), A);
    EXPECT(fn, ibvi_net_add_flatten(F.net), ST);
}

/* ---- the table ------------------------------------------------------------ */

static void sw_net_add_groupnorm(void)
{
    const char *fn = "ibvi_net_add_groupnorm";
    EXPECT(fn, ibvi_net_add_groupnorm(NULL, 1, 1e-5f), A);
    ibvi_net *n = NULL;
    CK_OK(ibvi_net_create_image(&n, 6, 2, 2, NULL));
    const int32_t bad_groups[] = {0, -1, INT32_MIN, 65537, INT32_MAX};
    for (size_t i = 0; i < sizeof bad_groups / sizeof bad_groups[0]; i++)
        EXPECT(fn, ibvi_net_add_groupnorm(n, bad_groups[i], 1e-5f), A);
    EXPECT(fn, ibvi_net_add_groupnorm(n, 4, 1e-5f), SH); /* 6 % 4 */
    EXPECT(fn, ibvi_net_add_groupnorm(n, 7, 1e-5f), SH);
    const float bad_eps[] = {0.0f, -0.0f, -1e-5f, NAN, INFINITY, -INFINITY};
    for (size_t i = 0; i < sizeof bad_eps / sizeof bad_eps[0]; i++)
        EXPECT(fn, ibvi_net_add_groupnorm(n, 3, bad_eps[i]), A);
    ck_assert_int_eq(ibvi_net_layer_count(n), 0);
    ibvi_net_free(n);
    EXPECT(fn, ibvi_net_add_groupnorm(F.net, 1, 1e-5f), ST);
}

static void sw_net_add_residual(void)
{
    const char *fn = "ibvi_net_add_residual";
    EXPECT(fn, ibvi_net_add_residual(NULL, -1, 0), A);
    ibvi_net *n = NULL;
    CK_OK(ibvi_net_create_image(&n, 2, 4, 4, NULL));
    const int32_t bad_from[] = {0, 1, -2, INT32_MAX, INT32_MIN};
    for (size_t i = 0; i < sizeof bad_from / sizeof bad_from[0]; i++)
        EXPECT(fn, ibvi_net_add_residual(n, bad_from[i], 0), A);
    EXPECT(fn, ibvi_net_add_residual(n, -1, -1), A);
    EXPECT(fn, ibvi_net_add_residual(n, -1, INT32_MIN), A);
    EXPECT(fn, ibvi_net_add_residual(n, -1, INT32_MAX), A);
    EXPECT(fn, ibvi_net_add_residual(n, -1, 2), SH); /* 4x4 -> 2x2 */
    CK_OK(ibvi_net_add_dense(n, 3, 0));
    EXPECT(fn, ibvi_net_add_residual(n, -1, 0), SH); /* (2,4,4) vs (3,1,1) */
    EXPECT(fn, ibvi_net_add_residual(n, -1, 3), SH); /* 4x4 -> 2x2 */
    EXPECT(fn, ibvi_net_add_residual(n, 1, 0), A);
    ck_assert_int_eq(ibvi_net_layer_count(n), 1);
    ibvi_net_free(n);
    EXPECT(fn, ibvi_net_add_residual(F.net, -1, 1), ST);
}

static void sw_net_add_residual_ex(void)
{
    const char *fn = "ibvi_net_add_residual_ex";
    ibvi_residual_options o = IBVI_RESIDUAL_OPTIONS_INIT;
    EXPECT(fn, ibvi_net_add_residual_ex(NULL, &o), A);
    ibvi_net *n = NULL;
    CK_OK(ibvi_net_create_image(&n, 2, 4, 4, NULL));
    EXPECT(fn, ibvi_net_add_residual_ex(n, NULL), A);
    const uint32_t bad_version[] = {0, 2, UINT32_MAX};
    for (size_t i = 0; i < sizeof bad_version / sizeof bad_version[0]; i++) {
        ibvi_residual_options v = o;
        v.version = bad_version[i];
        EXPECT(fn, ibvi_net_add_residual_ex(n, &v), A);
    }
    const int32_t bad_flag[] = {-1, 2, INT32_MIN, INT32_MAX};
    for (size_t i = 0; i < sizeof bad_flag / sizeof bad_flag[0]; i++) {
        ibvi_residual_options v = o;
        v.projection_no_bias = bad_flag[i];
        EXPECT(fn, ibvi_net_add_residual_ex(n, &v), A);
    }
    o.from = 0; /* no layer 0 yet */
    EXPECT(fn, ibvi_net_add_residual_ex(n, &o), A);
    o.from = -1;
    o.projection_stride = 2; /* 4x4 -> 2x2 */
    EXPECT(fn, ibvi_net_add_residual_ex(n, &o), SH);
    ck_assert_int_eq(ibvi_net_layer_count(n), 0);
    o.projection_stride = 1;
    o.projection_no_bias = 1;
    CK_OK(ibvi_net_add_residual_ex(n, &o));
    ck_assert_int_eq(ibvi_net_layer_count(n), 1);
    ibvi_net_free(n);
    EXPECT(fn, ibvi_net_add_residual_ex(F.net, &o), ST);
}

/* ---- data parallel (distributed.h) ----------------------------------- */

static const int64_t bad_flat_len[] = {0, -1, 67, 69, INT64_MIN, INT64_MAX};

/* The four flat-buffer functions on F.net (68 floats: 16 x 3 + 10 x 2). */
static void sweep_flat(const char *fn, int which)
{
    ck_assert_int_eq(ibvi_net_param_count(F.net), 68);
    for (int k = 0; k < 3 + 6; k++) {
        ibvi_net *net = k == 0 ? NULL : k == 1 ? F.fresh : F.net;
        float *buf = k == 2 ? NULL : F.buf;
        const int64_t len = k < 3 ? 68 : bad_flat_len[k - 3];
        const int want = k == 1 ? ST : k < 3 ? A : IBVI_ERR_SHAPE;
        if (which == 3 && k == 1)
            continue; /* an optimizer's network is initialised */
        switch (which) {
        case 0: EXPECT(fn, ibvi_net_get_params(net, buf, len), want); break;
        case 1: EXPECT(fn, ibvi_net_set_params(net, buf, len), want); break;
        case 2: EXPECT(fn, ibvi_net_get_grads(net, buf, len), want); break;
        default:
            EXPECT(fn, ibvi_optimizer_step_grads(net ? F.sgd : NULL, buf,
                                                 len), want);
        }
    }
}

static void sw_net_get_params(void) { sweep_flat("ibvi_net_get_params", 0); }

static void sw_net_set_params(void)
{
    sweep_flat("ibvi_net_set_params", 1);
    CK_OK(ibvi_net_get_params(F.net, F.buf, 68));
    F.buf[67] = NAN;
    EXPECT("ibvi_net_set_params", ibvi_net_set_params(F.net, F.buf, 68), NF);
}

static void sw_net_get_grads(void)
{
    sweep_flat("ibvi_net_get_grads", 2);
    EXPECT("ibvi_net_get_grads", ibvi_net_get_grads(F.other, F.buf, 68), ST);
}

static void sw_optimizer_step_grads(void)
{
    sweep_flat("ibvi_optimizer_step_grads", 3);
    for (int i = 0; i < 68; i++)
        F.buf[i] = i == 20 ? INFINITY : 0.0f;
    EXPECT("ibvi_optimizer_step_grads",
           ibvi_optimizer_step_grads(F.sgd, F.buf, 68), NF);
    ck_assert_int_eq(ibvi_optimizer_step_count(F.sgd), 0);
}

static void sw_net_set_noise_stream(void)
{
    const char *fn = "ibvi_net_set_noise_stream";
    EXPECT(fn, ibvi_net_set_noise_stream(NULL, 1), A);
    EXPECT(fn, ibvi_net_set_noise_stream(F.fresh, 1), ST);
    EXPECT(fn, ibvi_net_set_noise_stream(F.net, UINT64_C(1) << 32), A);
    EXPECT(fn, ibvi_net_set_noise_stream(F.net, UINT64_MAX), A);
    CK_OK(ibvi_net_set_noise_stream(F.net, UINT32_MAX));
}

static void sw_net_noise_stream(void)
{
    const char *fn = "ibvi_net_noise_stream";
    uint64_t u;
    EXPECT(fn, ibvi_net_noise_stream(NULL, &u), A);
    EXPECT(fn, ibvi_net_noise_stream(F.fresh, &u), ST);
    EXPECT(fn, ibvi_net_noise_stream(F.net, NULL), A);
}

/* F.net factored, one sample: dense(3 -> 4, R2): 1 x (16 + 2); dense(4 ->
 * 2, R1): 1 x (10 + 1) = 29 floats. */
static void sw_net_grads_factored_size(void)
{
    const char *fn = "ibvi_net_grads_factored_size";
    EXPECT(fn, ibvi_net_grads_factored_size(NULL, 1), A);
    EXPECT(fn, ibvi_net_grads_factored_size(F.fresh, 1), ST);
    for (size_t i = 0; i < sizeof bad_samples / sizeof bad_samples[0]; i++)
        EXPECT(fn, ibvi_net_grads_factored_size(F.net, bad_samples[i]), A);
    ck_assert_int_eq(ibvi_net_grads_factored_size(F.net, 1), 29);
}

static void sw_net_get_grads_factored(void)
{
    const char *fn = "ibvi_net_get_grads_factored";
    EXPECT(fn, ibvi_net_get_grads_factored(NULL, F.buf, 29), A);
    EXPECT(fn, ibvi_net_get_grads_factored(F.fresh, F.buf, 29), ST);
    EXPECT(fn, ibvi_net_get_grads_factored(F.net, NULL, 29), A);
    EXPECT(fn, ibvi_net_get_grads_factored(F.other, F.buf, 29), ST);
}

static void sw_optimizer_step_factored(void)
{
    const char *fn = "ibvi_optimizer_step_factored";
    memset(F.buf, 0, sizeof F.buf);
    EXPECT(fn, ibvi_optimizer_step_factored(NULL, F.buf, 1, 29), A);
    EXPECT(fn, ibvi_optimizer_step_factored(F.sgd, NULL, 1, 29), A);
    EXPECT(fn, ibvi_optimizer_step_factored(F.sgd, F.buf, 0, 29), A);
    EXPECT(fn, ibvi_optimizer_step_factored(F.sgd, F.buf, -1, 29), A);
    for (size_t i = 0; i < sizeof bad_flat_len / sizeof bad_flat_len[0]; i++)
        EXPECT(fn, ibvi_optimizer_step_factored(F.sgd, F.buf, 1,
                                                bad_flat_len[i]),
               IBVI_ERR_SHAPE);
    EXPECT(fn, ibvi_optimizer_step_factored(F.sgd, F.buf, 1, 28),
           IBVI_ERR_SHAPE);
    F.buf[40] = NAN; /* in the second block */
    EXPECT(fn, ibvi_optimizer_step_factored(F.sgd, F.buf, 2, 29), NF);
    ck_assert_int_eq(ibvi_optimizer_step_count(F.sgd), 0);
}

/* ---- mean-field VI (the diagonal family) ---------------------------------- */

/* 3 -> dense 4 (diagonal) -> tanh -> dense 2 (rank 1); initialised. */
static ibvi_net *diagonal_net(int init)
{
    ibvi_net *net = build(3, 4, 2, 1, 0, 0);
    ibvi_covariance_options o = IBVI_COVARIANCE_OPTIONS_INIT;
    CK_OK(ibvi_net_set_covariance(net, 0, &o));
    if (init)
        CK_OK(ibvi_net_init(net, IBVI_PARAM_MUP, 5));
    return net;
}

static void sw_net_set_covariance(void)
{
    const char *fn = "ibvi_net_set_covariance";
    ibvi_net *net = build(3, 4, 2, 1, 0, 0);
    const int32_t noise = ibvi_net_noise_size(net);
    const int64_t params = ibvi_net_param_count(net);
    ibvi_covariance_options o = IBVI_COVARIANCE_OPTIONS_INIT;
    EXPECT(fn, ibvi_net_set_covariance(NULL, 0, &o), A);
    EXPECT(fn, ibvi_net_set_covariance(net, 0, NULL), A);
    const int32_t bad_layer[] = {-1, 3, INT32_MAX, INT32_MIN, 1 /* tanh */};
    for (size_t i = 0; i < sizeof bad_layer / sizeof bad_layer[0]; i++)
        EXPECT(fn, ibvi_net_set_covariance(net, bad_layer[i], &o), A);
    ibvi_covariance_options b = o;
    b.version = 0;
    EXPECT(fn, ibvi_net_set_covariance(net, 0, &b), A);
    b.version = 2;
    EXPECT(fn, ibvi_net_set_covariance(net, 0, &b), A);
    const int32_t bad_family[] = {-1, 4, INT32_MAX, INT32_MIN};
    for (size_t i = 0; i < sizeof bad_family / sizeof bad_family[0]; i++) {
        b = o;
        b.family = bad_family[i];
        EXPECT(fn, ibvi_net_set_covariance(net, 0, &b), A);
    }
    b = o;
    b.rank = 1; /* a rank with the diagonal family */
    EXPECT(fn, ibvi_net_set_covariance(net, 0, &b), A);
    const float bad_sigma[] = {-1e-3f, 1.5f, NAN, INFINITY, -INFINITY};
    for (size_t i = 0; i < sizeof bad_sigma / sizeof bad_sigma[0]; i++) {
        b = o;
        b.init_sigma = bad_sigma[i];
        EXPECT(fn, ibvi_net_set_covariance(net, 0, &b), A);
    }
    b = (ibvi_covariance_options){IBVI_COVARIANCE_OPTIONS_VERSION,
                                  IBVI_COVARIANCE_LOWRANK, 0, 0.0f};
    EXPECT(fn, ibvi_net_set_covariance(net, 0, &b), A); /* rank 0 */
    b.rank = 17;                                        /* P = 16 */
    EXPECT(fn, ibvi_net_set_covariance(net, 0, &b), A);
    b = (ibvi_covariance_options){IBVI_COVARIANCE_OPTIONS_VERSION,
                                  IBVI_COVARIANCE_NONE, 0, 0.5f};
    EXPECT(fn, ibvi_net_set_covariance(net, 0, &b), A); /* sigma, no family */
    b = (ibvi_covariance_options){IBVI_COVARIANCE_OPTIONS_VERSION,
                                  IBVI_COVARIANCE_DIAG_LOWRANK, 0, 0.0f};
    EXPECT(fn, ibvi_net_set_covariance(net, 0, &b), A); /* rank 0 */
    b.rank = IBVI_DIAG_LOWRANK_MAX_RANK + 1;
    EXPECT(fn, ibvi_net_set_covariance(net, 0, &b), A);
    b.rank = 2;
    b.init_sigma = 0.1f;
    EXPECT(fn, ibvi_net_set_covariance(net, 0, &b), A); /* a sigma */
    ck_assert_int_eq(ibvi_net_noise_size(net), noise);
    ck_assert_int_eq(ibvi_net_param_count(net), params);
    ck_assert_int_eq(ibvi_layer_covariance(tu_layer(net, 0)),
                     IBVI_COVARIANCE_LOWRANK);
    /* A residual's projection and a group norm's low rank are refused. */
    ibvi_net *img = NULL;
    CK_OK(ibvi_net_create_image(&img, 2, 4, 4, NULL));
    CK_OK(ibvi_net_add_conv2d(img, 2, 3, 1, 1, 0));
    CK_OK(ibvi_net_add_groupnorm(img, 1, 1e-5f));
    CK_OK(ibvi_net_add_residual(img, 0, 1));
    CK_OK(ibvi_net_add_flatten(img));
    CK_OK(ibvi_net_add_dense(img, 2, 0));
    EXPECT(fn, ibvi_net_set_covariance(img, 2, &o), A);
    b = (ibvi_covariance_options){IBVI_COVARIANCE_OPTIONS_VERSION,
                                  IBVI_COVARIANCE_LOWRANK, 1, 0.0f};
    EXPECT(fn, ibvi_net_set_covariance(img, 1, &b), A);
    CK_OK(ibvi_net_set_covariance(img, 1, &o));
    ibvi_net_free(img);
    CK_OK(ibvi_net_init(net, IBVI_PARAM_SP, 1));
    EXPECT(fn, ibvi_net_set_covariance(net, 0, &o), ST);
    ibvi_net_free(net);
}

static void sw_layer_covariance(void)
{
    const char *fn = "ibvi_layer_covariance";
    EXPECT(fn, ibvi_layer_covariance(NULL), A);
    ck_assert_int_eq(ibvi_layer_covariance(F.l2), IBVI_COVARIANCE_LOWRANK);
    ck_assert_int_eq(ibvi_layer_covariance(F.d0), IBVI_COVARIANCE_NONE);
}

static void sweep_rho(const char *fn, get_fn get, set_fn set)
{
    ibvi_net *net = diagonal_net(1), *fresh = diagonal_net(0);
    ibvi_layer *l = tu_layer(net, 0);
    const int64_t P = 16;
    float b[32] = {0}, before[16], after[16];
#define CALL_RHO(layer, ptr, n)                                               \
    (get ? get((layer), (ptr), (n)) : set((layer), (ptr), (n)))
    EXPECT(fn, CALL_RHO(NULL, b, P), A);
    EXPECT(fn, CALL_RHO(l, NULL, P), A);
    EXPECT(fn, CALL_RHO(tu_layer(fresh, 0), b, P), ST);
    EXPECT(fn, CALL_RHO(tu_layer(net, 1), b, P), A); /* tanh */
    EXPECT(fn, CALL_RHO(tu_layer(net, 2), b, 10), A); /* low rank */
    const int64_t bad[] = {0, -1, P - 1, P + 1, INT64_MAX, INT64_MIN};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        EXPECT(fn, CALL_RHO(l, b, bad[i]), SH);
    if (set) {
        CK_OK(ibvi_layer_get_rho(l, before, P));
        memcpy(b, before, sizeof before);
        b[P - 1] = NAN;
        EXPECT(fn, set(l, b, P), NF);
        b[P - 1] = INFINITY;
        EXPECT(fn, set(l, b, P), NF);
        CK_OK(ibvi_layer_get_rho(l, after, P));
        ck_assert(memcmp(before, after, sizeof before) == 0);
    }
#undef CALL_RHO
    ibvi_net_free(net);
    ibvi_net_free(fresh);
}

static void sw_layer_get_rho(void)
{
    sweep_rho("ibvi_layer_get_rho", ibvi_layer_get_rho, NULL);
}
static void sw_layer_set_rho(void)
{
    sweep_rho("ibvi_layer_set_rho", NULL, ibvi_layer_set_rho);
}
static void sw_layer_get_grad_rho(void)
{
    sweep_rho("ibvi_layer_get_grad_rho", ibvi_layer_get_grad_rho, NULL);
}

static void sw_net_kl(void)
{
    const char *fn = "ibvi_net_kl";
    double kl = -1.0;
    EXPECT(fn, ibvi_net_kl(NULL, &kl), A);
    EXPECT(fn, ibvi_net_kl(F.fresh, &kl), ST);
    EXPECT(fn, ibvi_net_kl(F.net, NULL), A);
    CK_OK(ibvi_net_kl(F.net, &kl)); /* no diagonal layer */
    ck_assert(kl == 0.0);
}

static void sw_optimizer_set_kl_weight(void)
{
    const char *fn = "ibvi_optimizer_set_kl_weight";
    EXPECT(fn, ibvi_optimizer_set_kl_weight(NULL, 0.1f), A);
    CK_OK(ibvi_optimizer_set_kl_weight(F.sgd, 0.25f));
    const float bad[] = {-1e-30f, -1.0f, NAN, INFINITY, -INFINITY};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        EXPECT(fn, ibvi_optimizer_set_kl_weight(F.sgd, bad[i]), A);
    float w = 0.0f;
    CK_OK(ibvi_optimizer_get_kl_weight(F.sgd, &w));
    ck_assert(w == 0.25f);
    CK_OK(ibvi_optimizer_set_kl_weight(F.sgd, 0.0f));
}

static void sw_optimizer_set_deferred(void)
{
    const char *fn = "ibvi_optimizer_set_deferred";
    EXPECT(fn, ibvi_optimizer_set_deferred(NULL, 0), A);
    const int32_t bad[] = {-2, 1, IBVI_DEFERRED_MAX_STEPS + 1, INT32_MIN,
                           INT32_MAX};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        EXPECT(fn, ibvi_optimizer_set_deferred(F.sgd, bad[i]), A);
    int32_t steps = 0;
    CK_OK(ibvi_optimizer_get_deferred(F.sgd, &steps));
    ck_assert_int_eq(steps, IBVI_DEFERRED_AUTO); /* unchanged */
    CK_OK(ibvi_optimizer_set_deferred(F.sgd, IBVI_DEFERRED_MAX_STEPS));
    CK_OK(ibvi_optimizer_set_deferred(F.adam, 2)); /* Adam: per-step anyway */
    CK_OK(ibvi_optimizer_set_deferred(F.sgd, 0));
    CK_OK(ibvi_optimizer_set_deferred(F.sgd, IBVI_DEFERRED_AUTO));
    CK_OK(ibvi_optimizer_set_deferred(F.adam, IBVI_DEFERRED_AUTO));
}

static void sw_optimizer_get_deferred(void)
{
    const char *fn = "ibvi_optimizer_get_deferred";
    int32_t steps = 5;
    EXPECT(fn, ibvi_optimizer_get_deferred(NULL, &steps), A);
    EXPECT(fn, ibvi_optimizer_get_deferred(F.sgd, NULL), A);
    CK_OK(ibvi_optimizer_get_deferred(F.adam, &steps));
    ck_assert_int_eq(steps, IBVI_DEFERRED_AUTO);
}

static void sw_optimizer_get_kl_weight(void)
{
    const char *fn = "ibvi_optimizer_get_kl_weight";
    float w = 1.0f;
    EXPECT(fn, ibvi_optimizer_get_kl_weight(NULL, &w), A);
    EXPECT(fn, ibvi_optimizer_get_kl_weight(F.sgd, NULL), A);
    CK_OK(ibvi_optimizer_get_kl_weight(F.adam, &w));
    ck_assert(w == 0.0f);
}

/* ---- the last-layer Laplace approximation (laplace.h) --------------------- */

static ibvi_laplace *laplace_det(void)
{
    ibvi_laplace_options o;
    CK_OK(ibvi_laplace_options_init(&o));
    ibvi_laplace *la = NULL;
    CK_OK(ibvi_laplace_fit(&la, F.det, &o, F.x, F.labels, 8, NULL, NULL, 0));
    return la;
}

static void sw_laplace_options_init(void)
{
    EXPECT("ibvi_laplace_options_init", ibvi_laplace_options_init(NULL), A);
    ibvi_laplace_options o;
    CK_OK(ibvi_laplace_options_init(&o));
    ck_assert_int_eq((int)o.version, IBVI_LAPLACE_OPTIONS_VERSION);
}

static void sw_laplace_fit(void)
{
    const char *fn = "ibvi_laplace_fit";
    ibvi_laplace_options o, b;
    CK_OK(ibvi_laplace_options_init(&o));
    ibvi_laplace *la = NULL;
    int32_t bad_labels[8] = {0, 1, 2, 0, 1, 0, 1, 0};
    EXPECT(fn, ibvi_laplace_fit(NULL, F.det, &o, F.x, F.labels, 8, NULL, NULL, 0), A);
    EXPECT(fn, ibvi_laplace_fit(&la, NULL, &o, F.x, F.labels, 8, NULL, NULL, 0), A);
    EXPECT(fn, ibvi_laplace_fit(&la, F.fresh, &o, F.x, F.labels, 8, NULL, NULL, 0), ST);
    EXPECT(fn, ibvi_laplace_fit(&la, F.net, &o, F.x, F.labels, 8, NULL, NULL, 0), A);
    EXPECT(fn, ibvi_laplace_fit(&la, F.det, NULL, F.x, F.labels, 8, NULL, NULL, 0), A);
    EXPECT(fn, ibvi_laplace_fit(&la, F.det, &o, NULL, F.labels, 8, NULL, NULL, 0), A);
    EXPECT(fn, ibvi_laplace_fit(&la, F.det, &o, F.x, NULL, 8, NULL, NULL, 0), A);
    const int64_t bad_n[] = {0, -1, INT64_MIN, INT64_MAX};
    for (size_t i = 0; i < sizeof bad_n / sizeof bad_n[0]; i++)
        EXPECT(fn, ibvi_laplace_fit(&la, F.det, &o, F.x, F.labels, bad_n[i], NULL, NULL, 0), A);
    EXPECT(fn, ibvi_laplace_fit(&la, F.det, &o, F.x, bad_labels, 8, NULL, NULL, 0), A);
    EXPECT(fn, ibvi_laplace_fit(&la, F.det, &o, F.nan_x, F.labels, 8, NULL, NULL, 0), NF);
    EXPECT(fn, ibvi_laplace_fit(&la, F.det, &o, F.inf_x, F.labels, 8, NULL, NULL, 0), NF);
    EXPECT(fn, ibvi_laplace_fit(&la, F.det, &o, F.x, F.labels, 8, F.nan_x, F.labels, 8), NF);
    EXPECT(fn, ibvi_laplace_fit(&la, F.det, &o, F.x, F.labels, 8, NULL, F.labels, 8), A);
    EXPECT(fn, ibvi_laplace_fit(&la, F.det, &o, F.x, F.labels, 8, F.x, F.labels, -1), A);
    b = o; b.version = 0;
    EXPECT(fn, ibvi_laplace_fit(&la, F.det, &b, F.x, F.labels, 8, NULL, NULL, 0), A);
    b = o; b.structure = -1;
    EXPECT(fn, ibvi_laplace_fit(&la, F.det, &b, F.x, F.labels, 8, NULL, NULL, 0), A);
    b = o; b.prior = 7;
    EXPECT(fn, ibvi_laplace_fit(&la, F.det, &b, F.x, F.labels, 8, NULL, NULL, 0), A);
    b = o; b.prior_precision = NAN;
    EXPECT(fn, ibvi_laplace_fit(&la, F.det, &b, F.x, F.labels, 8, NULL, NULL, 0), A);
    b = o; b.lambda_min = -1.0f;
    EXPECT(fn, ibvi_laplace_fit(&la, F.det, &b, F.x, F.labels, 8, NULL, NULL, 0), A);
    b = o; b.lambda_max = INFINITY;
    EXPECT(fn, ibvi_laplace_fit(&la, F.det, &b, F.x, F.labels, 8, NULL, NULL, 0), A);
    b = o; b.grid_points = 1001;
    EXPECT(fn, ibvi_laplace_fit(&la, F.det, &b, F.x, F.labels, 8, NULL, NULL, 0), A);
    b = o; b.max_bytes = INT64_MIN;
    EXPECT(fn, ibvi_laplace_fit(&la, F.det, &b, F.x, F.labels, 8, NULL, NULL, 0), A);
    b = o; b.batch = 65537;
    EXPECT(fn, ibvi_laplace_fit(&la, F.det, &b, F.x, F.labels, 8, NULL, NULL, 0), A);
    b = o; b.max_bytes = 10;
    EXPECT(fn, ibvi_laplace_fit(&la, F.det, &b, F.x, F.labels, 8, NULL, NULL, 0), IBVI_ERR_NOMEM);
    b = o; b.prior = IBVI_LAPLACE_PRIOR_VALIDATION;
    EXPECT(fn, ibvi_laplace_fit(&la, F.det, &b, F.x, F.labels, 8, NULL, NULL, 0), A);
    ck_assert_ptr_null(la);
    CK_OK(ibvi_laplace_fit(&la, F.det, &b, F.x, F.labels, 8, F.x, F.labels, 8));
    ibvi_laplace_free(la);
}

static void sw_laplace_free(void) { ibvi_laplace_free(NULL); }

static void sw_laplace_prior_precision(void)
{
    const char *fn = "ibvi_laplace_prior_precision";
    ibvi_laplace *la = laplace_det();
    double v;
    EXPECT(fn, ibvi_laplace_prior_precision(NULL, &v), A);
    EXPECT(fn, ibvi_laplace_prior_precision(la, NULL), A);
    ibvi_laplace_free(la);
}

static void sw_laplace_log_marglik(void)
{
    const char *fn = "ibvi_laplace_log_marglik";
    ibvi_laplace *la = laplace_det();
    double v;
    EXPECT(fn, ibvi_laplace_log_marglik(NULL, &v), A);
    EXPECT(fn, ibvi_laplace_log_marglik(la, NULL), A);
    ibvi_laplace_free(la);
}

static void sw_laplace_log_marglik_at(void)
{
    const char *fn = "ibvi_laplace_log_marglik_at";
    ibvi_laplace *la = laplace_det();
    double v;
    EXPECT(fn, ibvi_laplace_log_marglik_at(NULL, 1.0, &v), A);
    EXPECT(fn, ibvi_laplace_log_marglik_at(la, 1.0, NULL), A);
    const double bad[] = {0.0, -1.0, NAN, INFINITY, -INFINITY};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        EXPECT(fn, ibvi_laplace_log_marglik_at(la, bad[i], &v), A);
    /* H is singular here (8 examples): a tiny lambda does not factor */
    EXPECT(fn, ibvi_laplace_log_marglik_at(la, 1e-30, &v), NF);
    ibvi_laplace_free(la);
}

static void sw_laplace_structure_of(void)
{
    EXPECT("ibvi_laplace_structure_of", ibvi_laplace_structure_of(NULL), A);
}

static void sw_laplace_param_count(void)
{
    EXPECT("ibvi_laplace_param_count", ibvi_laplace_param_count(NULL), A);
    ibvi_laplace *la = laplace_det();
    ck_assert_int_eq(ibvi_laplace_param_count(la), 8);
    ibvi_laplace_free(la);
}

static void sw_laplace_get_hessian(void)
{
    const char *fn = "ibvi_laplace_get_hessian";
    ibvi_laplace *la = laplace_det();
    double h[64];
    EXPECT(fn, ibvi_laplace_get_hessian(NULL, h, 64), A);
    EXPECT(fn, ibvi_laplace_get_hessian(la, NULL, 64), A);
    const int64_t bad[] = {0, -1, 63, 65, INT64_MAX, INT64_MIN};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        EXPECT(fn, ibvi_laplace_get_hessian(la, h, bad[i]), SH);
    ibvi_laplace_free(la);
}

static void sw_laplace_build(void)
{
    const char *fn = "ibvi_laplace_build";
    ibvi_laplace *la = laplace_det();
    ibvi_net *post = NULL;
    EXPECT(fn, ibvi_laplace_build(la, F.det, NULL), A);
    EXPECT(fn, ibvi_laplace_build(NULL, F.det, &post), A);
    EXPECT(fn, ibvi_laplace_build(la, NULL, &post), A);
    EXPECT(fn, ibvi_laplace_build(la, F.fresh, &post), ST);
    EXPECT(fn, ibvi_laplace_build(la, F.net, &post), ST);
    ck_assert_ptr_null(post);
    CK_OK(ibvi_laplace_build(la, F.det, &post));
    ibvi_net_free(post);
    ibvi_laplace_free(la);
}

static void sw_laplace_probit(void)
{
    const char *fn = "ibvi_laplace_probit";
    ibvi_laplace *la = laplace_det();
    float probs[16], var[16];
    EXPECT(fn, ibvi_laplace_probit(NULL, F.det, F.x, 8, probs, var), A);
    EXPECT(fn, ibvi_laplace_probit(la, NULL, F.x, 8, probs, var), A);
    EXPECT(fn, ibvi_laplace_probit(la, F.fresh, F.x, 8, probs, var), ST);
    EXPECT(fn, ibvi_laplace_probit(la, F.other, F.x, 8, probs, var), ST);
    EXPECT(fn, ibvi_laplace_probit(la, F.det, NULL, 8, probs, var), A);
    EXPECT(fn, ibvi_laplace_probit(la, F.det, F.x, 8, NULL, var), A);
    const int64_t bad_n[] = {0, -1, INT64_MIN, INT64_MAX};
    for (size_t i = 0; i < sizeof bad_n / sizeof bad_n[0]; i++)
        EXPECT(fn, ibvi_laplace_probit(la, F.det, F.x, bad_n[i], probs, var), A);
    EXPECT(fn, ibvi_laplace_probit(la, F.det, F.nan_x, 8, probs, var), NF);
    CK_OK(ibvi_laplace_probit(la, F.det, F.x, 8, probs, NULL));
    ibvi_laplace_free(la);
}

/* ---- SWAG (swag.h) and the diag-lowrank family ------------------------- */

/* A deterministic 3-4-2 network (initialised or not). */
static ibvi_net *swag_source(int init)
{
    ibvi_net *net = tu_net_new(3, NULL);
    CK_OK(ibvi_net_add_dense(net, 4, 0));
    CK_OK(ibvi_net_add_activation(net, IBVI_ACT_RELU));
    CK_OK(ibvi_net_add_dense(net, 2, 0));
    if (init)
        CK_OK(ibvi_net_init(net, IBVI_PARAM_SP, 3));
    return net;
}

/* A collector of swag_source with `count` snapshots (the means moved
 * between them). */
static ibvi_swag *swag_with(ibvi_net *net, int count)
{
    ibvi_swag *swag = NULL;
    CK_OK(ibvi_swag_create(&swag, net, NULL));
    ibvi_layer *l = tu_layer(net, 0);
    float mu[16];
    for (int k = 0; k < count; k++) {
        CK_OK(ibvi_layer_get_mean(l, mu, 16));
        mu[k % 16] += 0.25f;
        CK_OK(ibvi_layer_set_mean(l, mu, 16));
        CK_OK(ibvi_swag_collect(swag, net));
    }
    return swag;
}

static void sw_swag_options_init(void)
{
    const char *fn = "ibvi_swag_options_init";
    EXPECT(fn, ibvi_swag_options_init(NULL), A);
    ibvi_swag_options o = {0, 0};
    CK_OK(ibvi_swag_options_init(&o));
    ck_assert_uint_eq(o.version, IBVI_SWAG_OPTIONS_VERSION);
    ck_assert_int_eq(o.rank, IBVI_SWAG_DEFAULT_RANK);
}

static void sw_swag_create(void)
{
    const char *fn = "ibvi_swag_create";
    ibvi_net *net = swag_source(1), *fresh = swag_source(0);
    ibvi_swag *swag = (ibvi_swag *)&swag;
    EXPECT(fn, ibvi_swag_create(NULL, net, NULL), A);
    EXPECT(fn, ibvi_swag_create(&swag, NULL, NULL), A);
    ck_assert_ptr_null(swag);
    EXPECT(fn, ibvi_swag_create(&swag, fresh, NULL), ST);
    EXPECT(fn, ibvi_swag_create(&swag, F.net, NULL), ST); /* low rank */
    ibvi_swag_options o = IBVI_SWAG_OPTIONS_INIT;
    const uint32_t bad_version[] = {0, 2, UINT32_MAX};
    for (size_t i = 0; i < sizeof bad_version / sizeof bad_version[0]; i++) {
        o.version = bad_version[i];
        EXPECT(fn, ibvi_swag_create(&swag, net, &o), A);
    }
    o.version = IBVI_SWAG_OPTIONS_VERSION;
    const int32_t bad_rank[] = {INT32_MIN, -1, 0, 1,
                                IBVI_DIAG_LOWRANK_MAX_RANK + 1, INT32_MAX};
    for (size_t i = 0; i < sizeof bad_rank / sizeof bad_rank[0]; i++) {
        o.rank = bad_rank[i];
        EXPECT(fn, ibvi_swag_create(&swag, net, &o), A);
        ck_assert_ptr_null(swag);
    }
    o.rank = 2;
    CK_OK(ibvi_swag_create(&swag, net, &o));
    ck_assert_int_eq(ibvi_swag_count(swag), 0);
    ibvi_swag_free(swag);
    ibvi_net_free(net);
    ibvi_net_free(fresh);
}

static void sw_swag_free(void) { ibvi_swag_free(NULL); }

static void sw_swag_collect(void)
{
    const char *fn = "ibvi_swag_collect";
    ibvi_net *net = swag_source(1), *fresh = swag_source(0);
    ibvi_swag *swag = swag_with(net, 1);
    EXPECT(fn, ibvi_swag_collect(NULL, net), A);
    EXPECT(fn, ibvi_swag_collect(swag, NULL), A);
    EXPECT(fn, ibvi_swag_collect(swag, fresh), ST);
    EXPECT(fn, ibvi_swag_collect(swag, F.det), SH); /* 3-2 */
    EXPECT(fn, ibvi_swag_collect(swag, F.wide), SH);
    ck_assert_int_eq(ibvi_swag_count(swag), 1);
    /* A low-rank network of the same shapes: its means are collected. */
    ibvi_net *lr = tu_net_new(3, NULL);
    CK_OK(ibvi_net_add_dense(lr, 4, 2));
    CK_OK(ibvi_net_add_activation(lr, IBVI_ACT_RELU));
    CK_OK(ibvi_net_add_dense(lr, 2, 1));
    CK_OK(ibvi_net_init(lr, IBVI_PARAM_SP, 3));
    CK_OK(ibvi_swag_collect(swag, lr));
    ck_assert_int_eq(ibvi_swag_count(swag), 2);
    ibvi_net_free(lr);
    ibvi_swag_free(swag);
    ibvi_net_free(net);
    ibvi_net_free(fresh);
}

static void sw_swag_count(void)
{
    const char *fn = "ibvi_swag_count";
    EXPECT(fn, ibvi_swag_count(NULL), A);
    ibvi_net *net = swag_source(1);
    ibvi_swag *swag = swag_with(net, 3);
    ck_assert_int_eq(ibvi_swag_count(swag), 3);
    ibvi_swag_free(swag);
    ibvi_net_free(net);
}

static void sw_swag_build(void)
{
    const char *fn = "ibvi_swag_build";
    ibvi_net *net = swag_source(1), *post = (ibvi_net *)&post;
    ibvi_swag *none = swag_with(net, 0), *one = swag_with(net, 1),
              *two = swag_with(net, 2);
    EXPECT(fn, ibvi_swag_build(NULL, &post), A);
    ck_assert_ptr_null(post);
    EXPECT(fn, ibvi_swag_build(two, NULL), A);
    EXPECT(fn, ibvi_swag_build(none, &post), ST);
    EXPECT(fn, ibvi_swag_build(one, &post), ST);
    ck_assert_ptr_null(post);
    CK_OK(ibvi_swag_build(two, &post));
    ck_assert_int_eq(ibvi_layer_covariance(tu_layer(post, 0)),
                     IBVI_COVARIANCE_DIAG_LOWRANK);
    ck_assert_int_eq(ibvi_net_noise_size(post), 16 + 2 + 10 + 2);
    ibvi_net_free(post);
    ibvi_swag_free(none);
    ibvi_swag_free(one);
    ibvi_swag_free(two);
    ibvi_net_free(net);
}

static void sweep_diag(const char *fn, get_fn get, set_fn set)
{
    ibvi_net *src = swag_source(1), *net = NULL, *fresh = swag_source(0);
    ibvi_swag *swag = swag_with(src, 2);
    CK_OK(ibvi_swag_build(swag, &net));
    ibvi_covariance_options o = {IBVI_COVARIANCE_OPTIONS_VERSION,
                                 IBVI_COVARIANCE_DIAG_LOWRANK, 2, 0.0f};
    CK_OK(ibvi_net_set_covariance(fresh, 0, &o));
    ibvi_layer *l = tu_layer(net, 0);
    const int64_t P = 16;
    float b[32] = {0}, before[16], after[16];
#define CALL_DIAG(layer, ptr, n)                                              \
    (get ? get((layer), (ptr), (n)) : set((layer), (ptr), (n)))
    EXPECT(fn, CALL_DIAG(NULL, b, P), A);
    EXPECT(fn, CALL_DIAG(l, NULL, P), A);
    EXPECT(fn, CALL_DIAG(tu_layer(fresh, 0), b, P), ST);
    EXPECT(fn, CALL_DIAG(tu_layer(net, 1), b, P), A); /* relu */
    EXPECT(fn, CALL_DIAG(tu_layer(src, 0), b, P), A); /* deterministic */
    EXPECT(fn, CALL_DIAG(F.l0, b, P), A);             /* low rank */
    const int64_t bad[] = {0, -1, P - 1, P + 1, INT64_MAX, INT64_MIN};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        EXPECT(fn, CALL_DIAG(l, b, bad[i]), SH);
    if (set) {
        CK_OK(ibvi_layer_get_diag(l, before, P));
        memcpy(b, before, sizeof before);
        b[P - 1] = NAN;
        EXPECT(fn, set(l, b, P), NF);
        b[P - 1] = INFINITY;
        EXPECT(fn, set(l, b, P), NF);
        b[P - 1] = -1e-30f;
        EXPECT(fn, set(l, b, P), A);
        CK_OK(ibvi_layer_get_diag(l, after, P));
        ck_assert(memcmp(before, after, sizeof before) == 0);
        b[P - 1] = 0.0f;
        CK_OK(set(l, b, P));
    }
#undef CALL_DIAG
    ibvi_swag_free(swag);
    ibvi_net_free(net);
    ibvi_net_free(src);
    ibvi_net_free(fresh);
}

static void sw_layer_get_diag(void)
{
    sweep_diag("ibvi_layer_get_diag", ibvi_layer_get_diag, NULL);
}
static void sw_layer_set_diag(void)
{
    sweep_diag("ibvi_layer_set_diag", NULL, ibvi_layer_set_diag);
}

typedef struct api_row {
    const char *name;
    void (*sweep)(void);
} api_row;

#define ROW(name) {"ibvi_" #name, sw_##name}

static const api_row api_table[] = {
    ROW(version_number),
    ROW(version_string),
    ROW(status_string),
    ROW(last_error),
    ROW(clear_error),
    ROW(kernel_name),
    ROW(kernel_get_origin),
    ROW(kernel_description),
    ROW(net_create),
    ROW(net_create_image),
    ROW(net_create_like),
    ROW(net_free),
    ROW(net_add_dense),
    ROW(net_add_activation),
    ROW(net_init),
    ROW(net_set_threads),
    ROW(net_threads),
    ROW(net_reserve),
    ROW(net_input_dim),
    ROW(net_input_shape),
    ROW(net_output_dim),
    ROW(net_layer_count),
    ROW(net_is_initialized),
    ROW(net_parameterization),
    ROW(net_noise_size),
    ROW(net_param_count),
    ROW(net_seed),
    ROW(net_rng_position),
    ROW(net_set_rng_position),
    ROW(net_get_params),
    ROW(net_set_params),
    ROW(net_get_grads),
    ROW(optimizer_step_grads),
    ROW(net_set_noise_stream),
    ROW(net_noise_stream),
    ROW(net_grads_factored_size),
    ROW(net_get_grads_factored),
    ROW(optimizer_step_factored),
    ROW(net_layer),
    ROW(net_forward),
    ROW(net_forward_mean),
    ROW(net_forward_noise),
    ROW(net_last_noise),
    ROW(net_backward),
    ROW(layer_get_kind),
    ROW(layer_get_role),
    ROW(layer_get_activation),
    ROW(layer_has_bias),
    ROW(layer_shape),
    ROW(layer_output_shape),
    ROW(layer_param_count),
    ROW(layer_init_std),
    ROW(layer_get_mean),
    ROW(layer_set_mean),
    ROW(layer_get_factor),
    ROW(layer_set_factor),
    ROW(layer_get_grad_mean),
    ROW(layer_get_grad_factor),
    ROW(layer_lr_multipliers),
    ROW(net_set_covariance),
    ROW(layer_covariance),
    ROW(layer_get_rho),
    ROW(layer_set_rho),
    ROW(layer_get_grad_rho),
    ROW(net_kl),
    ROW(optimizer_set_kl_weight),
    ROW(optimizer_get_kl_weight),
    ROW(optimizer_set_deferred),
    ROW(optimizer_get_deferred),
    ROW(optimizer_create),
    ROW(optimizer_free),
    ROW(optimizer_set_lr),
    ROW(optimizer_get_lr),
    ROW(optimizer_set_momentum),
    ROW(optimizer_set_adam),
    {"ibvi_optimizer_step", sw_optimizer_step_state},
    ROW(optimizer_step_count),
    ROW(optimizer_reset),
    ROW(train_step),
    ROW(loss_softmax_xent),
    ROW(loss_squared),
    ROW(loss_binary_xent),
    ROW(loss),
    ROW(predictor_create),
    ROW(predictor_create_ensemble),
    ROW(predictor_free),
    ROW(predictor_set_batch_size),
    ROW(predictor_set_mean_network),
    ROW(predictor_set_temperature),
    ROW(predictor_samples),
    ROW(predictor_noise),
    ROW(predictor_run),
    ROW(head_options_init),
    ROW(predictor_set_head),
    ROW(predictor_head),
    ROW(predictor_output_dim),
    ROW(predictor_run_regression),
    ROW(loss_gaussian_nll),
    ROW(fit_noise_std),
    ROW(metrics_create),
    ROW(metrics_free),
    ROW(metrics_reset),
    ROW(metrics_add),
    ROW(metrics_merge),
    ROW(metrics_count),
    ROW(metrics_accuracy),
    ROW(metrics_nll),
    ROW(metrics_brier),
    ROW(metrics_ece),
    ROW(metrics_mce),
    ROW(metrics_bins),
    ROW(auroc),
    ROW(entropy),
    ROW(metrics_ece_adaptive),
    ROW(metrics_aurc),
    ROW(metrics_risk_coverage),
    ROW(auroc_ex),
    ROW(aupr_in),
    ROW(aupr_out),
    ROW(fpr_at_tpr),
    ROW(regression_rmse),
    ROW(regression_nll),
    ROW(regression_coverage),
    ROW(regression_calibration_error),
    ROW(regression_crps),
    ROW(normal_quantile),
    ROW(temperature_fit),
    ROW(temperature_apply),
    ROW(laplace_options_init),
    ROW(laplace_fit),
    ROW(laplace_free),
    ROW(laplace_prior_precision),
    ROW(laplace_log_marglik),
    ROW(laplace_log_marglik_at),
    ROW(laplace_structure_of),
    ROW(laplace_param_count),
    ROW(laplace_get_hessian),
    ROW(laplace_build),
    ROW(laplace_probit),
    ROW(net_save),
    ROW(net_save_size),
    ROW(net_save_buffer),
    ROW(net_load),
    ROW(net_load_buffer),
    ROW(net_add_conv2d),
    ROW(net_add_conv2d_ex),
    ROW(net_add_maxpool),
    ROW(net_add_avgpool),
    ROW(net_add_global_avgpool),
    ROW(net_add_flatten),
    ROW(net_add_groupnorm),
    ROW(net_add_residual),
    ROW(net_add_residual_ex),
    ROW(swag_options_init),
    ROW(swag_create),
    ROW(swag_free),
    ROW(swag_collect),
    ROW(swag_count),
    ROW(swag_build),
    ROW(layer_get_diag),
    ROW(layer_set_diag),
};

#define API_ROWS ((int)(sizeof api_table / sizeof api_table[0]))

START_TEST(test_api_sweep)
{
    /* _i: the row; the name goes into every failure message via the
     * expression text and the function name the EXPECTs check. */
    printf("%s\n", api_table[_i].name);
    api_table[_i].sweep();
}
END_TEST

int main(int argc, char **argv)
{
    if (argc > 1 && strcmp(argv[1], "--list-api") == 0) {
        for (int i = 0; i < API_ROWS; i++)
            printf("%s\n", api_table[i].name);
        return 0;
    }
    Suite *s = suite_create("robust");
    TCase *tc = tcase_create("numerical");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_softmax_extreme_logits);
    tcase_add_test(tc, test_logsumexp_and_nll_extreme_logits);
    tcase_add_test(tc, test_predictor_extreme_logits);
    tcase_add_test(tc, test_predictor_overflowing_logits);
    tcase_add_test(tc, test_divergence_sgd_softmax);
    tcase_add_test(tc, test_divergence_sgd_squared);
    tcase_add_test(tc, test_divergence_adam);
    tcase_add_test(tc, test_nan_targets_not_trained_on);
    suite_add_tcase(s, tc);
    tc = tcase_create("api_sweep");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 120);
    tcase_add_loop_test(tc, test_api_sweep, 0, API_ROWS);
    suite_add_tcase(s, tc);
    return tu_run_suite(s);
}
