/*
 * Deferred factor updates (lib/deferred.h, docs/performance.md "Deferred
 * factor updates"): for SGD, momentum and Nesterov the optimizer may keep a
 * window of B steps' factor gradients and apply them to S and its velocity
 * in one pass. These tests hold that path to the per-step fused path
 * (ibvi_optimizer_set_deferred(opt, 0)), on twin networks trained on the
 * same data with the same noise:
 *   - thousands of steps of SGD, momentum and Nesterov, 1 and 3 samples, a
 *     learning rate changed every step (cosine), forced windows of 2..8
 *     steps and the cost model's: means and factors agree to a relative
 *     tolerance of a few float ulps per step, and the factors are not
 *     bitwise those of the per-step path (the window really ran);
 *   - Adam is bitwise unchanged;
 *   - every public read mid-window (ibvi_layer_get_factor,
 *     ibvi_net_get_params, a save, a predictor, forwards with the host's
 *     noise and with the generator's) sees the per-step values, and so
 *     does a model saved mid-window, loaded and trained on; writes
 *     mid-window (ibvi_layer_set_factor, ibvi_net_set_params) land as on
 *     the per-step path;
 *   - a run saved mid-window (every position) and loaded trains on bit
 *     for bit like the run that saved it (test_resume_exact);
 *   - a diverging step mid-window returns IBVI_ERR_NONFINITE and changes
 *     nothing, and training goes on equal;
 *   - 1 and 2 threads give bitwise the same parameters;
 *   - freeing the optimizer mid-window leaves the factors updated; freeing
 *     the network first is safe.
 */
#define _POSIX_C_SOURCE 200809L
#include <check.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <ibvi/ibvi.h>
#include <ibvi/io.h>

#include "testutil.h"

#define IN 6
#define N 16
#define CLASSES 3
#define DATA_SETS 8

enum { PLAIN, MOMENTUM, NESTEROV, ADAM };

/* 6 -> 24 (rank 10) -> tanh -> 3 (rank 3): muP, so the factor's groups
 * have different multipliers; rank 10 so that the cost model's window
 * (the default request, -1) is 2 steps with 1 sample. */
#define RANK0 10
static ibvi_net *make_net(int32_t threads)
{
    ibvi_net *net = NULL;
    CK_OK(ibvi_net_create(&net, IN, NULL));
    CK_OK(ibvi_net_add_dense(net, 24, RANK0));
    CK_OK(ibvi_net_add_activation(net, IBVI_ACT_TANH));
    CK_OK(ibvi_net_add_dense(net, CLASSES, 3));
    CK_OK(ibvi_net_init(net, IBVI_PARAM_MUP, 7));
    CK_OK(ibvi_net_set_threads(net, threads));
    return net;
}

/* An optimizer with ibvi_optimizer_set_deferred(mode) (0: the per-step
 * path, -1: the cost model's window). */
static ibvi_optimizer *make_opt(ibvi_net *net, int kind, int32_t mode)
{
    ibvi_optimizer *opt = NULL;
    CK_OK(ibvi_optimizer_create(&opt, net,
                                kind == ADAM ? IBVI_OPT_ADAM : IBVI_OPT_SGD,
                                0.05f));
    int32_t got = 99;
    CK_OK(ibvi_optimizer_get_deferred(opt, &got));
    ck_assert_int_eq(got, IBVI_DEFERRED_AUTO); /* the default */
    CK_OK(ibvi_optimizer_set_deferred(opt, mode));
    CK_OK(ibvi_optimizer_get_deferred(opt, &got));
    ck_assert_int_eq(got, mode);
    if (kind == PLAIN)
        CK_OK(ibvi_optimizer_set_momentum(opt, 0.0f, 0));
    if (kind == NESTEROV)
        CK_OK(ibvi_optimizer_set_momentum(opt, 0.9f, 1));
    return opt;
}

typedef struct data {
    float x[DATA_SETS][N * IN];
    int32_t y[DATA_SETS][N];
} data;

static void make_data(data *d)
{
    tu_rng rng;
    tu_rng_seed(&rng, 99);
    for (int s = 0; s < DATA_SETS; s++) {
        tu_fill_normal_f(&rng, d->x[s], N * IN, 1.0);
        for (int i = 0; i < N; i++)
            d->y[s][i] = tu_rng_int(&rng, CLASSES);
    }
}

/* The cosine schedule the host sets before every step, times `scale`:
 * 0.1 with momentum 0.9, so that every kind takes steps of the same
 * effective size. The tests compare two trajectories whose values differ
 * by rounding: steps too large make training chaotic and the difference
 * grow exponentially whatever the arithmetic. */
static float lr_at(int64_t t, int64_t steps, float scale)
{
    return (float)(scale * (0.002 + 0.04 * 0.5 *
                                        (1.0 + cos(3.14159265 * (double)t /
                                                   (double)steps))));
}

static float scale_of(int kind)
{
    return kind == MOMENTUM || kind == NESTEROV ? 0.1f : 1.0f;
}

static void step(ibvi_net *net, ibvi_optimizer *opt, const data *d, int64_t t,
                 int64_t steps, int32_t samples, float scale)
{
    float loss;
    CK_OK(ibvi_optimizer_set_lr(opt, lr_at(t, steps, scale)));
    CK_OK(ibvi_train_step(net, opt, d->x[t % DATA_SETS], N, samples,
                          IBVI_LOSS_SOFTMAX_XENT, d->y[t % DATA_SETS], NULL,
                          &loss));
}

/* The whole flat parameter vector (means and factors). */
static float *params(ibvi_net *net, int64_t *count)
{
    *count = ibvi_net_param_count(net);
    float *p = malloc((size_t)*count * sizeof(float));
    ck_assert_ptr_nonnull(p);
    CK_OK(ibvi_net_get_params(net, p, *count));
    return p;
}

/* max |a - b| / max(max |a|, 1e-3): the difference relative to the scale
 * of the reference. */
static double rel_diff(const float *a, const float *b, int64_t n)
{
    double d = 0.0, s = 1e-3;
    for (int64_t i = 0; i < n; i++) {
        d = fmax(d, fabs((double)a[i] - b[i]));
        s = fmax(s, fabs((double)a[i]));
    }
    return d / s;
}

/* A few ulps per step. */
static double tolerance(int64_t steps) { return 4.0 * 0x1p-24 * steps; }

static double compare_params(ibvi_net *ref, ibvi_net *def, int *bitwise)
{
    int64_t n;
    float *a = params(ref, &n), *b = params(def, &n);
    const double d = rel_diff(a, b, n);
    *bitwise = memcmp(a, b, (size_t)n * sizeof(float)) == 0;
    free(a), free(b);
    return d;
}

/* The twins agree after `steps` steps; frees them. */
static void finish_twins(ibvi_net *ref, ibvi_optimizer *oref, ibvi_net *def,
                         ibvi_optimizer *odef, int64_t steps)
{
    int bitwise;
    const double e = compare_params(ref, def, &bitwise);
    ck_assert_msg(e <= tolerance(steps), "end: %g", e);
    ibvi_optimizer_free(oref), ibvi_optimizer_free(odef);
    ibvi_net_free(ref), ibvi_net_free(def);
}

/* Trains twins `steps` steps, the second with the request `mode`. */
static void twin_run(int kind, int32_t samples, int32_t mode,
                     int64_t steps)
{
    data d;
    make_data(&d);
    ibvi_net *ref = make_net(1), *def = make_net(1);
    ibvi_optimizer *oref = make_opt(ref, kind, 0);
    ibvi_optimizer *odef = make_opt(def, kind, mode);
    double worst = 0.0;
    for (int64_t t = 0; t < steps; t++) {
        step(ref, oref, &d, t, steps, samples, scale_of(kind));
        step(def, odef, &d, t, steps, samples, scale_of(kind));
        if (t % 499 == 0) { /* the means, mid-window: no settling */
            ibvi_layer *lr, *ld;
            CK_OK(ibvi_net_layer(ref, 0, &lr));
            CK_OK(ibvi_net_layer(def, 0, &ld));
            float a[24 * IN + 24], b[24 * IN + 24];
            CK_OK(ibvi_layer_get_mean(lr, a, 24 * IN + 24));
            CK_OK(ibvi_layer_get_mean(ld, b, 24 * IN + 24));
            const double e = rel_diff(a, b, 24 * IN + 24);
            worst = fmax(worst, e);
            ck_assert_msg(e <= tolerance(t + 1),
                          "kind %d, M %d, mode %d, step %lld: means differ "
                          "by %g", kind, samples, mode, (long long)t, e);
        }
    }
    int bitwise;
    const double e = compare_params(ref, def, &bitwise);
    fprintf(stderr, "deferred: kind %d M %d mode %d: %lld steps, relative "
                    "difference %.3g (means mid-run %.3g), tolerance %.3g\n",
            kind, samples, mode, (long long)steps, e, worst, tolerance(steps));
    ck_assert_msg(e <= tolerance(steps), "kind %d, M %d, mode %d: %g", kind,
                  samples, mode, e);
    if (kind == ADAM || mode == 0)
        ck_assert_msg(bitwise, "Adam (or the per-step path) changed");
    else if (mode == IBVI_DEFERRED_AUTO && samples > 1)
        ck_assert_msg(bitwise, "the cost model's window with 3 samples "
                      "exceeds its memory cap: the per-step path");
    else
        ck_assert_msg(!bitwise, "kind %d mode %d: bitwise the per-step "
                      "values: the window did not run", kind, mode);
    ibvi_optimizer_free(oref), ibvi_optimizer_free(odef);
    ibvi_net_free(ref), ibvi_net_free(def);
}

static const int KINDS[] = {PLAIN, MOMENTUM, NESTEROV};
static const int32_t MODES[] = {2, 4, 5, 8, IBVI_DEFERRED_AUTO};

START_TEST(test_long_runs)
{
    /* _i: kind x samples */
    const int kind = KINDS[_i % 3];
    const int32_t samples = _i / 3 ? 3 : 1;
    for (int m = 0; m < 5; m++)
        twin_run(kind, samples, MODES[m], m == 1 ? 3000 : 1000);
}
END_TEST

START_TEST(test_adam_unchanged)
{
    twin_run(ADAM, 1, 4, 400);
    twin_run(ADAM, 3, IBVI_DEFERRED_AUTO, 200);
}
END_TEST

static uint8_t *save(ibvi_net *net, ibvi_optimizer *opt, int64_t *size);
static int same_files(ibvi_net *a, ibvi_optimizer *oa, ibvi_net *b,
                      ibvi_optimizer *ob);

/* Networks the window never serves: no low-rank layer (0), diagonal
 * (mean-field) layers (1), a rank above the window's 64 (2); and make_net
 * (3), trained with more samples than a window takes. */
static ibvi_net *per_step_net(int variant)
{
    if (variant == 3)
        return make_net(1);
    ibvi_net *net = NULL;
    CK_OK(ibvi_net_create(&net, IN, NULL));
    CK_OK(ibvi_net_add_dense(net, 24, variant == 2 ? 65 : 0));
    CK_OK(ibvi_net_add_activation(net, IBVI_ACT_TANH));
    CK_OK(ibvi_net_add_dense(net, CLASSES, 0));
    if (variant == 1)
        for (int32_t l = 0; l < 3; l += 2) {
            ibvi_covariance_options o = IBVI_COVARIANCE_OPTIONS_INIT;
            CK_OK(ibvi_net_set_covariance(net, l, &o));
        }
    CK_OK(ibvi_net_init(net, IBVI_PARAM_MUP, 7));
    return net;
}

/* The default request and a fixed window leave these bitwise on the
 * per-step path: the standard network is unchanged by deferred updates. */
START_TEST(test_per_step_cases)
{
    data d;
    make_data(&d);
    const int32_t samples = _i == 3 ? 9 : 2;
    for (int m = 0; m < 2; m++) {
        const int32_t mode = m ? 4 : IBVI_DEFERRED_AUTO;
        for (int kind = MOMENTUM; kind <= NESTEROV; kind++) {
            ibvi_net *ref = per_step_net(_i), *def = per_step_net(_i);
            ibvi_optimizer *oref = make_opt(ref, kind, 0);
            ibvi_optimizer *odef = make_opt(def, kind, mode);
            for (int64_t t = 0; t < 60; t++) {
                step(ref, oref, &d, t, 60, samples, scale_of(kind));
                step(def, odef, &d, t, 60, samples, scale_of(kind));
            }
            ck_assert_msg(same_files(ref, oref, def, odef),
                          "network %d, request %d, kind %d: not bitwise the "
                          "per-step path", _i, mode, kind);
            ibvi_optimizer_free(oref), ibvi_optimizer_free(odef);
            ibvi_net_free(ref), ibvi_net_free(def);
        }
    }
}
END_TEST

/* ---- reads mid-window ------------------------------------------------------ */

static uint8_t *save(ibvi_net *net, ibvi_optimizer *opt, int64_t *size)
{
    CK_OK(ibvi_net_save_size(net, opt, size));
    uint8_t *buf = malloc((size_t)*size);
    ck_assert_ptr_nonnull(buf);
    CK_OK(ibvi_net_save_buffer(net, opt, buf, *size));
    return buf;
}

static void check_factor(ibvi_net *ref, ibvi_net *def, int64_t t)
{
    for (int32_t i = 0; i < 3; i += 2) {
        ibvi_layer *a, *b;
        CK_OK(ibvi_net_layer(ref, i, &a));
        CK_OK(ibvi_net_layer(def, i, &b));
        float fa[24 * (IN + 1) * RANK0], fb[24 * (IN + 1) * RANK0];
        const int64_t len = i == 0 ? 24 * (IN + 1) * RANK0 : (24 + 1) * 3 * 3;
        CK_OK(ibvi_layer_get_factor(a, fa, len));
        CK_OK(ibvi_layer_get_factor(b, fb, len));
        const double e = rel_diff(fa, fb, len);
        ck_assert_msg(e <= tolerance(t + 1), "layer %d step %lld: %g", i,
                      (long long)t, e);
    }
}

START_TEST(test_reads_mid_window)
{
    const int kind = KINDS[_i];
    data d;
    make_data(&d);
    const int64_t steps = 600;
    ibvi_net *ref = make_net(1), *def = make_net(1);
    ibvi_optimizer *oref = make_opt(ref, kind, 0);
    ibvi_optimizer *odef = make_opt(def, kind, 5);
    float probs_a[N * CLASSES], probs_b[N * CLASSES];
    for (int64_t t = 0; t < steps; t++) {
        step(ref, oref, &d, t, steps, 1, scale_of(kind));
        step(def, odef, &d, t, steps, 1, scale_of(kind));
        switch (t % 53) { /* 53 is prime: every position of the window */
        case 11:
            check_factor(ref, def, t);
            break;
        case 23: {
            int bitwise;
            const double e = compare_params(ref, def, &bitwise);
            ck_assert_msg(e <= tolerance(t + 1), "step %lld: %g",
                          (long long)t, e);
            break;
        }
        case 31: { /* a predictor over the current weights */
            ibvi_predictor *pa, *pb;
            CK_OK(ibvi_predictor_create(&pa, ref, 4, 5));
            CK_OK(ibvi_predictor_create(&pb, def, 4, 5));
            CK_OK(ibvi_predictor_run(pa, d.x[0], N, probs_a, NULL, NULL,
                                     NULL));
            CK_OK(ibvi_predictor_run(pb, d.x[0], N, probs_b, NULL, NULL,
                                     NULL));
            ck_assert_msg(rel_diff(probs_a, probs_b, N * CLASSES) <=
                              100 * tolerance(t + 1),
                          "step %lld: predictions differ", (long long)t);
            ibvi_predictor_free(pa), ibvi_predictor_free(pb);
            break;
        }
        case 41: { /* a model saved mid-window, loaded, trained on */
            int64_t sa, sb;
            uint8_t *ba = save(ref, oref, &sa), *bb = save(def, odef, &sb);
            ck_assert_int_eq(sa, sb);
            ibvi_net *la, *lb;
            ibvi_optimizer *loa, *lob;
            CK_OK(ibvi_net_load_buffer(&la, &loa, ba, sa, NULL));
            CK_OK(ibvi_optimizer_set_deferred(loa, 0));
            CK_OK(ibvi_net_load_buffer(&lb, &lob, bb, sb, NULL));
            CK_OK(ibvi_optimizer_set_deferred(lob, 5));
            free(ba), free(bb);
            /* the loaded twins go on from here, the originals too */
            for (int64_t u = t + 1; u < t + 30; u++) {
                step(la, loa, &d, u, steps, 1, scale_of(kind));
                step(lb, lob, &d, u, steps, 1, scale_of(kind));
            }
            int bitwise;
            const double e = compare_params(la, lb, &bitwise);
            ck_assert_msg(e <= tolerance(t + 30), "loaded at %lld: %g",
                          (long long)t, e);
            ibvi_optimizer_free(loa), ibvi_optimizer_free(lob);
            ibvi_net_free(la), ibvi_net_free(lb);
            break;
        }
        default:
            break;
        }
    }
    finish_twins(ref, oref, def, odef, steps);
}
END_TEST

/* A whole save (network and optimizer) as bytes, for bitwise comparison:
 * parameters, optimizer state, step count, the generator's position. */
static int same_files(ibvi_net *a, ibvi_optimizer *oa, ibvi_net *b,
                      ibvi_optimizer *ob)
{
    int64_t sa, sb;
    uint8_t *fa = save(a, oa, &sa), *fb = save(b, ob, &sb);
    const int same = sa == sb && memcmp(fa, fb, (size_t)sa) == 0;
    free(fa), free(fb);
    return same;
}

/* Exact resume (include/ibvi/io.h, docs/deferred.md): a run saved to a
 * buffer at step k, at each position of its window (k = K0 .. K0 + 4),
 * and loaded, trains on for 200+ steps bit for bit like the run that
 * saved it (the saving run goes on after its save): every parameter, the
 * optimizer's state and step count and the generator's position. A twin
 * never settled differs from the saved one by rounding only. _i: momentum
 * or Nesterov x 1 or 3 samples. */
#define K0 23
#define RESUME_STEPS 220
START_TEST(test_resume_exact)
{
    const int kind = _i % 2 ? NESTEROV : MOMENTUM;
    const int32_t samples = _i / 2 ? 3 : 1, mode = samples == 1 ? 5 : 3;
    data d;
    make_data(&d);
    const int64_t total = K0 + 5 + RESUME_STEPS;
    for (int64_t k = K0; k < K0 + 5; k++) {
        ibvi_net *a = make_net(1), *never = make_net(1);
        ibvi_optimizer *oa = make_opt(a, kind, mode);
        ibvi_optimizer *on = make_opt(never, kind, mode);
        for (int64_t t = 0; t < k; t++) {
            step(a, oa, &d, t, total, samples, scale_of(kind));
            step(never, on, &d, t, total, samples, scale_of(kind));
        }
        int64_t size;
        uint8_t *buf = save(a, oa, &size); /* mid-window: settles a */
        ibvi_net *b;
        ibvi_optimizer *ob;
        CK_OK(ibvi_net_load_buffer(&b, &ob, buf, size, NULL));
        free(buf);
        int32_t loaded = 0;
        CK_OK(ibvi_optimizer_get_deferred(ob, &loaded));
        ck_assert_int_eq(loaded, IBVI_DEFERRED_AUTO); /* not in the file */
        CK_OK(ibvi_optimizer_set_deferred(ob, mode));
        for (int64_t t = k; t < k + RESUME_STEPS; t++) {
            step(a, oa, &d, t, total, samples, scale_of(kind));
            step(b, ob, &d, t, total, samples, scale_of(kind));
            step(never, on, &d, t, total, samples, scale_of(kind));
        }
        int64_t n;
        float *pa = params(a, &n), *pb = params(b, &n);
        ck_assert_msg(memcmp(pa, pb, (size_t)n * sizeof(float)) == 0,
                      "kind %d M %d saved at step %lld: the resumed run's "
                      "parameters differ from the saving run's (relative "
                      "%.3g)", kind, samples, (long long)k,
                      rel_diff(pa, pb, n));
        free(pa), free(pb);
        ck_assert_msg(same_files(a, oa, b, ob),
                      "kind %d M %d saved at step %lld: the optimizer "
                      "state, step count or generator position differ",
                      kind, samples, (long long)k);
        int bitwise;
        const double e = compare_params(a, never, &bitwise);
        ck_assert_msg(e <= tolerance(k + RESUME_STEPS),
                      "kind %d M %d: settled at %lld vs never: %g", kind,
                      samples, (long long)k, e);
        ibvi_optimizer_free(oa), ibvi_optimizer_free(ob);
        ibvi_optimizer_free(on);
        ibvi_net_free(a), ibvi_net_free(b), ibvi_net_free(never);
    }
}
END_TEST

/* A step with a learning rate far too large, at every window position:
 * IBVI_ERR_NONFINITE, nothing changed, and training goes on equal. */
START_TEST(test_nonfinite_mid_window)
{
    const int kind = KINDS[_i];
    data d;
    make_data(&d);
    const int64_t steps = 300;
    ibvi_net *ref = make_net(1), *def = make_net(1);
    ibvi_optimizer *oref = make_opt(ref, kind, 0);
    ibvi_optimizer *odef = make_opt(def, kind, 4);
    for (int64_t t = 0; t < steps; t++) {
        step(ref, oref, &d, t, steps, 1, scale_of(kind));
        step(def, odef, &d, t, steps, 1, scale_of(kind));
        if (t % 37 == 5) {
            /* def's window holds steps now: compare with ref's values
             * rather than read def (a read settles the window) */
            int64_t n;
            float *before = params(ref, &n);
            float loss;
            CK_OK(ibvi_optimizer_set_lr(odef, 3e38f));
            CK_OK(ibvi_optimizer_set_lr(oref, 3e38f));
            const int64_t count = ibvi_optimizer_step_count(odef);
            CK_STATUS(ibvi_train_step(def, odef, d.x[1], N, 1,
                                      IBVI_LOSS_SOFTMAX_XENT, d.y[1], NULL,
                                      &loss),
                      IBVI_ERR_NONFINITE);
            CK_STATUS(ibvi_train_step(ref, oref, d.x[1], N, 1,
                                      IBVI_LOSS_SOFTMAX_XENT, d.y[1], NULL,
                                      &loss),
                      IBVI_ERR_NONFINITE);
            ck_assert_int_eq(ibvi_optimizer_step_count(odef), count);
            float *after = params(def, &n), *ref_after = params(ref, &n);
            ck_assert_msg(memcmp(before, ref_after,
                                 (size_t)n * sizeof(float)) == 0,
                          "the failed per-step step changed parameters");
            ck_assert_msg(rel_diff(before, after, n) <= tolerance(t + 1),
                          "step %lld: the failed step changed parameters",
                          (long long)t);
            free(ref_after);
            free(before), free(after);
        }
    }
    finish_twins(ref, oref, def, odef, steps);
}
END_TEST

/* Writes and other reads mid-window: ibvi_layer_set_factor and
 * ibvi_net_set_params with the per-step twin's (scaled) values, a forward
 * with the host's own noise and a second forward with the generator's,
 * which the window serves. */
START_TEST(test_writes_mid_window)
{
    const int kind = KINDS[_i];
    data d;
    make_data(&d);
    const int64_t steps = 240;
    ibvi_net *ref = make_net(1), *def = make_net(1);
    ibvi_optimizer *oref = make_opt(ref, kind, 0);
    ibvi_optimizer *odef = make_opt(def, kind, 5);
    const int64_t noise = ibvi_net_noise_size(ref);
    float z[2 * 64], out_a[2 * N * CLASSES], out_b[2 * N * CLASSES];
    ck_assert_int_le(2 * noise, 2 * 64);
    tu_rng rng;
    tu_rng_seed(&rng, 5);
    for (int64_t t = 0; t < steps; t++) {
        step(ref, oref, &d, t, steps, 1, scale_of(kind));
        step(def, odef, &d, t, steps, 1, scale_of(kind));
        switch (t % 29) {
        case 7: { /* both factors of the last layer set to ref's / 2 */
            ibvi_layer *a, *b;
            CK_OK(ibvi_net_layer(ref, 2, &a));
            CK_OK(ibvi_net_layer(def, 2, &b));
            float f[(24 + 1) * 3 * 3];
            CK_OK(ibvi_layer_get_factor(a, f, (24 + 1) * 3 * 3));
            for (int i = 0; i < (24 + 1) * 3 * 3; i++)
                f[i] *= 0.5f;
            CK_OK(ibvi_layer_set_factor(a, f, (24 + 1) * 3 * 3));
            CK_OK(ibvi_layer_set_factor(b, f, (24 + 1) * 3 * 3));
            break;
        }
        case 13: { /* the whole flat vector: ref's */
            int64_t n;
            float *p = params(ref, &n);
            CK_OK(ibvi_net_set_params(ref, p, n));
            CK_OK(ibvi_net_set_params(def, p, n));
            free(p);
            break;
        }
        case 19: /* the host's noise, then the generator's */
            tu_fill_normal_f(&rng, z, 2 * noise, 1.0);
            CK_OK(ibvi_net_forward_noise(ref, d.x[2], N, 2, z, 2 * noise,
                                         out_a));
            CK_OK(ibvi_net_forward_noise(def, d.x[2], N, 2, z, 2 * noise,
                                         out_b));
            ck_assert_msg(rel_diff(out_a, out_b, 2 * N * CLASSES) <=
                              100 * tolerance(t + 1),
                          "step %lld: forward_noise differs", (long long)t);
            break;
        case 23:
            CK_OK(ibvi_net_forward(ref, d.x[3], N, 1, out_a));
            CK_OK(ibvi_net_forward(def, d.x[3], N, 1, out_b));
            ck_assert_msg(rel_diff(out_a, out_b, N * CLASSES) <=
                              100 * tolerance(t + 1),
                          "step %lld: forward differs", (long long)t);
            break;
        default:
            break;
        }
    }
    finish_twins(ref, oref, def, odef, steps);
}
END_TEST

START_TEST(test_threads_bitwise)
{
    data d;
    make_data(&d);
    for (int k = 0; k < 3; k++) {
        ibvi_net *one = make_net(1), *two = make_net(2);
        ibvi_optimizer *o1 = make_opt(one, KINDS[k], 6);
        ibvi_optimizer *o2 = make_opt(two, KINDS[k], 6);
        for (int64_t t = 0; t < 200; t++) {
            step(one, o1, &d, t, 200, 3, scale_of(KINDS[k]));
            step(two, o2, &d, t, 200, 3, scale_of(KINDS[k]));
        }
        int bitwise;
        compare_params(one, two, &bitwise);
        ck_assert_msg(bitwise, "kind %d: 1 and 2 threads differ", KINDS[k]);
        ibvi_optimizer_free(o1), ibvi_optimizer_free(o2);
        ibvi_net_free(one), ibvi_net_free(two);
    }
}
END_TEST

/* Freeing the optimizer mid-window applies its steps; freeing the network
 * first leaves the optimizer safe to free. Changing the momentum, resetting
 * and a second optimizer mid-window all see the per-step factors. */
START_TEST(test_lifetimes)
{
    data d;
    make_data(&d);
    ibvi_net *ref = make_net(1), *def = make_net(1);
    ibvi_optimizer *oref = make_opt(ref, MOMENTUM, 0);
    ibvi_optimizer *odef = make_opt(def, MOMENTUM, 8);
    for (int64_t t = 0; t < 203; t++) {
        step(ref, oref, &d, t, 400, 1, 0.1f);
        step(def, odef, &d, t, 400, 1, 0.1f);
        if (t == 60) { /* momentum changes mid-window */
            CK_OK(ibvi_optimizer_set_momentum(oref, 0.5f, 1));
            CK_OK(ibvi_optimizer_set_momentum(odef, 0.5f, 1));
        }
        if (t == 100) { /* a second optimizer takes over for a while */
            ibvi_optimizer *xa = make_opt(ref, PLAIN, 0);
            ibvi_optimizer *xb = make_opt(def, PLAIN, 3);
            for (int64_t u = 0; u < 10; u++) {
                step(ref, xa, &d, t + u, 400, 1, 1.0f);
                step(def, xb, &d, t + u, 400, 1, 1.0f);
            }
            ibvi_optimizer_free(xa), ibvi_optimizer_free(xb);
        }
        if (t == 150) {
            CK_OK(ibvi_optimizer_reset(oref));
            CK_OK(ibvi_optimizer_reset(odef));
        }
    }
    ibvi_optimizer_free(oref);
    ibvi_optimizer_free(odef); /* mid-window: its steps land in S */
    check_factor(ref, def, 220);
    /* the network first, then its optimizer */
    ibvi_optimizer *o = make_opt(def, MOMENTUM, 8);
    for (int64_t t = 0; t < 3; t++)
        step(def, o, &d, t, 400, 1, 0.1f);
    ibvi_net_free(def);
    ibvi_optimizer_free(o);
    ibvi_net_free(ref);
}
END_TEST

static Suite *deferred_suite(void)
{
    Suite *s = suite_create("deferred");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 600);
    tcase_add_loop_test(tc, test_long_runs, 0, 6);
    tcase_add_test(tc, test_adam_unchanged);
    tcase_add_loop_test(tc, test_per_step_cases, 0, 4);
    tcase_add_loop_test(tc, test_reads_mid_window, 0, 3);
    tcase_add_loop_test(tc, test_resume_exact, 0, 4);
    tcase_add_loop_test(tc, test_nonfinite_mid_window, 0, 3);
    tcase_add_loop_test(tc, test_writes_mid_window, 0, 3);
    tcase_add_test(tc, test_threads_bitwise);
    tcase_add_test(tc, test_lifetimes);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(deferred_suite());
    srunner_run_all(sr, CK_NORMAL);
    const int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
