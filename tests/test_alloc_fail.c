/*
 * libibvi tests - allocation failure at every allocation of a full life
 * cycle: create, add layers, init, forward (workspace growth), optimizer,
 * train steps, reserve, predictor create / batch size / run, ensembles,
 * a conv network (image layers built, trained, predicted), the last-layer
 * Laplace approximation (fit full and KFAC, probit, build), save to a file, load from a file and from memory (through the caller's
 * allocator), metrics.
 *
 * A test allocator counts every request and refuses request number k. The
 * scenario runs once cleanly to count the requests (N), then once for each
 * k in [0, N) in two modes:
 *
 *   one-shot    only request k fails. The call that made it must return
 *               IBVI_ERR_NOMEM with a message naming the function, clear
 *               its output handle, and change nothing: the call is then
 *               retried (the allocator no longer fails) and the run goes
 *               on. At the end every output of the run (forward outputs,
 *               losses, predictions, the saved bytes of every network and
 *               optimizer, the metrics) must equal the clean run's bit for
 *               bit, so a failed call left no trace (not even a step of the
 *               sampling stream).
 *   persistent  request k and every later one fail. The run stops at the
 *               first failing call (which must return IBVI_ERR_NOMEM) and
 *               frees every handle it holds.
 *
 * In both modes, once everything is freed the allocator's counts balance:
 * as many frees as allocations and no live bytes.
 *
 * Not covered, by design: ibvi_auroc() takes its scratch memory with
 * malloc (it has no handle and no allocator argument; see metrics.h), and
 * the C library's own allocations (the FILE buffers of ibvi_net_save and
 * ibvi_net_load).
 *
 * SPDX-License-Identifier: MIT
 */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <check.h>

#include "ibvi/ibvi.h"

/* ---- the failing allocator ------------------------------------------------ */

typedef struct fail_alloc {
    long requests;     /* every call of alloc, refused ones included */
    long allocs;       /* successful allocations                    */
    long frees;        /* frees of non-NULL pointers                 */
    long fail_at;      /* the request to refuse (-1: none)           */
    int persistent;    /* refuse fail_at and every later request     */
    long refused;
    size_t live_bytes;
} fail_alloc;

#define HDR 16

static void *fa_alloc(void *opaque, size_t size)
{
    fail_alloc *fa = opaque;
    const long index = fa->requests++;
    if (fa->fail_at >= 0 &&
        (index == fa->fail_at || (fa->persistent && index > fa->fail_at))) {
        fa->refused++;
        return NULL;
    }
    unsigned char *p = malloc(size + HDR);
    ck_assert_ptr_nonnull(p);
    memcpy(p, &size, sizeof size);
    fa->allocs++;
    fa->live_bytes += size;
    return p + HDR;
}

static void fa_free(void *opaque, void *ptr)
{
    fail_alloc *fa = opaque;
    if (!ptr)
        return;
    unsigned char *p = (unsigned char *)ptr - HDR;
    size_t size;
    memcpy(&size, p, sizeof size);
    fa->frees++;
    fa->live_bytes -= size;
    free(p);
}

/* ---- the run's record --------------------------------------------------- */

#define MAX_STEPS 96

typedef struct run {
    fail_alloc *fa;
    ibvi_allocator a;
    uint64_t digest;     /* FNV-1a over every output of the run */
    int stopped;         /* persistent mode: a call failed        */
    int failed_calls;    /* calls that returned IBVI_ERR_NOMEM    */
    /* clean run: the requests each step makes */
    int steps;
    const char *step_name[MAX_STEPS];
    long step_requests[MAX_STEPS];
    char dir[64];
} run;

static void mix(run *r, const void *p, size_t n)
{
    const unsigned char *b = p;
    for (size_t i = 0; i < n; i++) {
        r->digest ^= b[i];
        r->digest *= 1099511628211ULL;
    }
}

/* Checks the status of one call. Returns 1 when the call failed as it
 * should and must be retried (one-shot) or the run must stop (persistent). */
static int check_call(run *r, const char *name, const char *fn, int rc,
                      long before)
{
    const long k = r->fa->fail_at;
    const int hit = k >= 0 && k >= before && k < r->fa->requests;
    if (k < 0) { /* the clean run: record how many requests the step made */
        ck_assert_msg(rc == IBVI_OK, "clean run: %s returned %d: %s", name, rc,
                      ibvi_last_error());
        ck_assert_int_lt(r->steps, MAX_STEPS);
        r->step_name[r->steps] = name;
        r->step_requests[r->steps] = r->fa->requests - before;
        r->steps++;
        return 0;
    }
    if (!hit) {
        ck_assert_msg(rc == IBVI_OK,
                      "request %ld: %s returned %d (%s) although none of its "
                      "own allocations failed: %s", k, name, rc,
                      ibvi_status_string(rc), ibvi_last_error());
        return 0;
    }
    ck_assert_msg(rc == IBVI_ERR_NOMEM,
                  "request %ld refused inside %s, which returned %d (%s): %s",
                  k, name, rc, ibvi_status_string(rc), ibvi_last_error());
    const char *msg = ibvi_last_error();
    ck_assert_msg(strstr(msg, fn) != NULL,
                  "request %ld: the message of %s does not name it: \"%s\"", k,
                  name, msg);
    ck_assert_msg(strstr(msg, "memory") != NULL,
                  "request %ld: the message of %s does not say out of "
                  "memory: \"%s\"", k, name, msg);
    r->failed_calls++;
    return 1;
}

/* A call returning a status: on NOMEM, retry (one-shot) or stop. */
#define CALL(r, fn, expr)                                                     \
    do {                                                                      \
        long before_ = (r)->fa->requests;                                     \
        ibvi_clear_error();                                                   \
        int rc_ = (expr);                                                     \
        if (check_call((r), #expr, (fn), rc_, before_)) {                     \
            if ((r)->fa->persistent) {                                        \
                (r)->stopped = 1;                                             \
                goto cleanup;                                                 \
            }                                                                 \
            ck_assert_msg((expr) == IBVI_OK, "retry of %s failed: %s", #expr, \
                          ibvi_last_error());                                 \
        }                                                                     \
    } while (0)

/* A call creating a handle: on failure the handle must be NULL. */
#define CREATE(r, fn, handle, expr)                                           \
    do {                                                                      \
        long before_ = (r)->fa->requests;                                     \
        ibvi_clear_error();                                                   \
        (handle) = (void *)&(r)->digest; /* non-NULL sentinel */              \
        int rc_ = (expr);                                                     \
        if (rc_ != IBVI_OK)                                                   \
            ck_assert_msg((handle) == NULL, "%s failed but set its output",   \
                          #expr);                                             \
        if (check_call((r), #expr, (fn), rc_, before_)) {                     \
            if ((r)->fa->persistent) {                                        \
                (r)->stopped = 1;                                             \
                goto cleanup;                                                 \
            }                                                                 \
            ck_assert_msg((expr) == IBVI_OK, "retry of %s failed: %s", #expr, \
                          ibvi_last_error());                                 \
        }                                                                     \
    } while (0)

/* Mixes the saved bytes of a network and its optimizer into the digest. */
static void mix_saved(run *r, const ibvi_net *net, const ibvi_optimizer *opt)
{
    int64_t len = 0;
    ck_assert_int_eq(ibvi_net_save_size(net, opt, &len), IBVI_OK);
    uint8_t *buf = malloc((size_t)len);
    ck_assert_ptr_nonnull(buf);
    ck_assert_int_eq(ibvi_net_save_buffer(net, opt, buf, len), IBVI_OK);
    mix(r, buf, (size_t)len);
    free(buf);
}

#define IN 6
#define CLASSES 4

static void fill(float *x, int n, float scale)
{
    for (int i = 0; i < n; i++)
        x[i] = scale * (float)((i * 37 + 11) % 23 - 11) / 11.0f;
}

/* The scenario. Every handle is freed on every path. */
static void scenario(run *r)
{
    ibvi_net *net = NULL, *net2 = NULL, *net3 = NULL, *cnet = NULL,
             *clike = NULL, *spost = NULL;
    ibvi_swag *swag = NULL;
    ibvi_predictor *spred = NULL;
    ibvi_optimizer *opt = NULL, *opt2 = NULL, *opt3 = NULL, *copt = NULL;
    ibvi_optimizer *dopt = NULL;
    ibvi_predictor *pred = NULL, *ens = NULL, *cpred = NULL;
    ibvi_metrics *m = NULL;
    ibvi_net *lnet = NULL, *lpost = NULL;
    ibvi_laplace *la = NULL, *lk = NULL;
    uint8_t *bytes = NULL;
    float x[12 * IN], out[4 * 12 * CLASSES], g[4 * 12 * CLASSES], loss;
    float probs[12 * CLASSES], h[12], e[12], mi[12];
    int32_t labels[12];
    char path[128];
    fill(x, 12 * IN, 1.5f);
    for (int i = 0; i < 12; i++)
        labels[i] = (i * 7) % CLASSES;
    snprintf(path, sizeof path, "%s/model.ibvi", r->dir);

    /* building: nine layers, so the layer array grows past its first 8 */
    CREATE(r, "ibvi_net_create", net, ibvi_net_create(&net, IN, &r->a));
    CALL(r, "ibvi_net_add_dense", ibvi_net_add_dense(net, 8, 3));
    CALL(r, "ibvi_net_add_activation", ibvi_net_add_activation(net, IBVI_ACT_RELU));
    CALL(r, "ibvi_net_add_dense", ibvi_net_add_dense(net, 8, 0));
    CALL(r, "ibvi_net_add_activation", ibvi_net_add_activation(net, IBVI_ACT_TANH));
    CALL(r, "ibvi_net_add_dense", ibvi_net_add_dense(net, 7, 0));
    CALL(r, "ibvi_net_add_activation", ibvi_net_add_activation(net, IBVI_ACT_SILU));
    CALL(r, "ibvi_net_add_dense", ibvi_net_add_dense(net, 8, 0));
    CALL(r, "ibvi_net_add_activation", ibvi_net_add_activation(net, IBVI_ACT_RELU));
    CALL(r, "ibvi_net_add_dense", ibvi_net_add_dense(net, CLASSES, 2));
    CALL(r, "ibvi_net_init", ibvi_net_init(net, IBVI_PARAM_MUP, 5));

    /* forward grows the workspace; backward and losses allocate nothing */
    CALL(r, "ibvi_net_forward", ibvi_net_forward(net, x, 5, 2, out));
    mix(r, out, sizeof(float) * 2 * 5 * CLASSES);
    CALL(r, "ibvi_loss_softmax_xent",
         ibvi_loss_softmax_xent(out, 10, CLASSES, labels, 5, &loss, g));
    mix(r, &loss, sizeof loss);
    CALL(r, "ibvi_net_backward", ibvi_net_backward(net, g, 10, CLASSES));
    CREATE(r, "ibvi_optimizer_create", opt,
           ibvi_optimizer_create(&opt, net, IBVI_OPT_ADAM, 0.01f));
    CALL(r, "ibvi_optimizer_step", ibvi_optimizer_step(opt));
    /* a larger batch and more samples: the workspace grows again */
    CALL(r, "ibvi_train_step", ibvi_train_step(net, opt, x, 7, 3,
                                               IBVI_LOSS_SOFTMAX_XENT, labels,
                                               NULL, &loss));
    mix(r, &loss, sizeof loss);
    CALL(r, "ibvi_net_reserve", ibvi_net_reserve(net, 12, 4));
    CALL(r, "ibvi_net_forward_mean", ibvi_net_forward_mean(net, x, 12, out));
    mix(r, out, sizeof(float) * 12 * CLASSES);
    {
        float z[2 * 5];
        fill(z, 10, 1.0f);
        CALL(r, "ibvi_net_forward_noise",
             ibvi_net_forward_noise(net, x, 3, 2, z, 10, out));
        mix(r, out, sizeof(float) * 6 * CLASSES);
    }
    CALL(r, "ibvi_train_step", ibvi_train_step(net, opt, x, 12, 4,
                                               IBVI_LOSS_SOFTMAX_XENT, labels,
                                               NULL, &loss));
    mix(r, &loss, sizeof loss);
    /* deferred factor updates (docs/deferred.md): the window's storage is
     * allocated at the optimizer's creation on a network with a workspace,
     * by ibvi_optimizer_set_deferred and by ibvi_net_reserve (more
     * samples), so the deferred train steps allocate nothing */
    CREATE(r, "ibvi_optimizer_create", dopt,
           ibvi_optimizer_create(&dopt, net, IBVI_OPT_SGD, 0.02f));
    CALL(r, "ibvi_optimizer_set_deferred", ibvi_optimizer_set_deferred(dopt, 3));
    CALL(r, "ibvi_net_reserve", ibvi_net_reserve(net, 12, 6));
    for (int t = 0; t < 5; t++) {
        CALL(r, "ibvi_train_step", ibvi_train_step(net, dopt, x, 12, 6,
                                                   IBVI_LOSS_SOFTMAX_XENT,
                                                   labels, NULL, &loss));
        mix(r, &loss, sizeof loss);
    }
    mix_saved(r, net, dopt);

    /* prediction */
    CREATE(r, "ibvi_predictor_create", pred,
           ibvi_predictor_create(&pred, net, 5, 77));
    CALL(r, "ibvi_predictor_run",
         ibvi_predictor_run(pred, x, 12, probs, h, e, mi));
    mix(r, probs, sizeof probs);
    mix(r, h, sizeof h);
    mix(r, mi, sizeof mi);
    CALL(r, "ibvi_predictor_set_batch_size",
         ibvi_predictor_set_batch_size(pred, 5));
    CALL(r, "ibvi_predictor_run",
         ibvi_predictor_run(pred, x, 12, probs, NULL, e, NULL));
    mix(r, probs, sizeof probs);
    mix(r, e, sizeof e);

    /* saving and loading through the allocator */
    mix_saved(r, net, opt);
    CALL(r, "ibvi_net_save", ibvi_net_save(net, opt, path));
    CREATE(r, "ibvi_net_load", net2, ibvi_net_load(&net2, &opt2, path, &r->a));
    {
        int64_t len = 0;
        CALL(r, "ibvi_net_save_size", ibvi_net_save_size(net, NULL, &len));
        bytes = malloc((size_t)len);
        ck_assert_ptr_nonnull(bytes);
        CALL(r, "ibvi_net_save_buffer",
             ibvi_net_save_buffer(net, NULL, bytes, len));
        CREATE(r, "ibvi_net_load_buffer", net3,
               ibvi_net_load_buffer(&net3, &opt3, bytes, len, &r->a));
        ck_assert_ptr_null(opt3);
    }
    mix_saved(r, net2, opt2);
    mix_saved(r, net3, NULL);
    CALL(r, "ibvi_train_step", ibvi_train_step(net2, opt2, x, 12, 2,
                                               IBVI_LOSS_SOFTMAX_XENT, labels,
                                               NULL, &loss));
    mix(r, &loss, sizeof loss);
    mix_saved(r, net2, opt2);
    {
        ibvi_net *members[3] = {net, net2, net3};
        CREATE(r, "ibvi_predictor_create_ensemble", ens,
               ibvi_predictor_create_ensemble(&ens, members, 3, 2, 9));
        CALL(r, "ibvi_predictor_run",
             ibvi_predictor_run(ens, x, 12, probs, h, NULL, mi));
        mix(r, probs, sizeof probs);
        mix(r, mi, sizeof mi);
    }

    /* a conv network on (1, 4, 6) images (IN * 4 floats per example):
     * variational conv, pooling, flatten; trained and predicted */
    CREATE(r, "ibvi_net_create_image", cnet,
           ibvi_net_create_image(&cnet, 1, 4, 6, &r->a));
    CALL(r, "ibvi_net_add_conv2d", ibvi_net_add_conv2d(cnet, 3, 3, 1, 1, 2));
    CALL(r, "ibvi_net_add_activation",
         ibvi_net_add_activation(cnet, IBVI_ACT_RELU));
    CALL(r, "ibvi_net_add_maxpool", ibvi_net_add_maxpool(cnet, 2, 2));
    {
        ibvi_conv2d_options o = IBVI_CONV2D_OPTIONS_INIT;
        o.out_channels = 4;
        o.kernel_w = 2;
        CALL(r, "ibvi_net_add_conv2d_ex", ibvi_net_add_conv2d_ex(cnet, &o));
    }
    CALL(r, "ibvi_net_add_avgpool", ibvi_net_add_avgpool(cnet, 1, 1));
    CALL(r, "ibvi_net_add_global_avgpool", ibvi_net_add_global_avgpool(cnet));
    CALL(r, "ibvi_net_add_flatten", ibvi_net_add_flatten(cnet));
    CALL(r, "ibvi_net_add_dense", ibvi_net_add_dense(cnet, CLASSES, 1));
    CALL(r, "ibvi_net_init", ibvi_net_init(cnet, IBVI_PARAM_MUP, 3));
    CREATE(r, "ibvi_optimizer_create", copt,
           ibvi_optimizer_create(&copt, cnet, IBVI_OPT_SGD, 0.05f));
    CALL(r, "ibvi_train_step", ibvi_train_step(cnet, copt, x, 3, 2,
                                               IBVI_LOSS_SOFTMAX_XENT, labels,
                                               NULL, &loss));
    mix(r, &loss, sizeof loss);
    CREATE(r, "ibvi_predictor_create", cpred,
           ibvi_predictor_create(&cpred, cnet, 3, 21));
    CALL(r, "ibvi_predictor_run",
         ibvi_predictor_run(cpred, x, 3, probs, h, NULL, NULL));
    mix(r, probs, sizeof(float) * 3 * CLASSES);
    /* a network built like it, given its means: the same mean network */
    CREATE(r, "ibvi_net_create_like", clike,
           ibvi_net_create_like(&clike, cnet));
    CALL(r, "ibvi_net_init", ibvi_net_init(clike, IBVI_PARAM_MUP, 4));
    {
        float logits[3 * CLASSES];
        CALL(r, "ibvi_net_forward_mean",
             ibvi_net_forward_mean(clike, x, 3, logits));
        mix(r, logits, sizeof logits);
    }
    /* SWAG on it: a collector, two snapshots (the first layer's means
     * moved between them), the posterior network, predicted and saved */
    CREATE(r, "ibvi_swag_create", swag, ibvi_swag_create(&swag, clike, NULL));
    CALL(r, "ibvi_swag_collect", ibvi_swag_collect(swag, clike));
    {
        ibvi_layer *l0 = NULL;
        float w[3 * 9 + 3];
        ck_assert_int_eq(ibvi_net_layer(clike, 0, &l0), IBVI_OK);
        ck_assert_int_eq(ibvi_layer_get_mean(l0, w, 30), IBVI_OK);
        for (int i = 0; i < 30; i++)
            w[i] += 0.05f * (float)(i % 5);
        ck_assert_int_eq(ibvi_layer_set_mean(l0, w, 30), IBVI_OK);
    }
    CALL(r, "ibvi_swag_collect", ibvi_swag_collect(swag, clike));
    CREATE(r, "ibvi_swag_build", spost, ibvi_swag_build(swag, &spost));
    CREATE(r, "ibvi_predictor_create", spred,
           ibvi_predictor_create(&spred, spost, 3, 8));
    CALL(r, "ibvi_predictor_run",
         ibvi_predictor_run(spred, x, 3, probs, h, NULL, mi));
    mix(r, probs, sizeof(float) * 3 * CLASSES);
    mix_saved(r, spost, NULL);

    /* the last-layer Laplace approximation of a deterministic network:
     * full with the marginal likelihood, KFAC with a validation set;
     * probit, the marglik at a lambda, the posterior network */
    CREATE(r, "ibvi_net_create", lnet, ibvi_net_create(&lnet, IN, &r->a));
    CALL(r, "ibvi_net_add_dense", ibvi_net_add_dense(lnet, 5, 0));
    CALL(r, "ibvi_net_add_activation",
         ibvi_net_add_activation(lnet, IBVI_ACT_TANH));
    CALL(r, "ibvi_net_add_dense", ibvi_net_add_dense(lnet, CLASSES, 0));
    CALL(r, "ibvi_net_init", ibvi_net_init(lnet, IBVI_PARAM_MUP, 6));
    {
        ibvi_laplace_options o;
        CALL(r, "ibvi_laplace_options_init", ibvi_laplace_options_init(&o));
        o.batch = 5;
        CREATE(r, "ibvi_laplace_fit", la,
               ibvi_laplace_fit(&la, lnet, &o, x, labels, 12, NULL, NULL, 0));
        o.structure = IBVI_LAPLACE_KFAC;
        o.prior = IBVI_LAPLACE_PRIOR_VALIDATION;
        o.grid_points = 3;
        CREATE(r, "ibvi_laplace_fit", lk,
               ibvi_laplace_fit(&lk, lnet, &o, x, labels, 12, x + 3 * IN,
                                labels + 3, 9));
        double v[2];
        CALL(r, "ibvi_laplace_log_marglik_at",
             ibvi_laplace_log_marglik_at(la, 0.5, &v[0]));
        CALL(r, "ibvi_laplace_prior_precision",
             ibvi_laplace_prior_precision(lk, &v[1]));
        mix(r, v, sizeof v);
        CALL(r, "ibvi_laplace_probit",
             ibvi_laplace_probit(la, lnet, x, 12, probs, NULL));
        mix(r, probs, sizeof probs);
        CALL(r, "ibvi_laplace_probit",
             ibvi_laplace_probit(lk, lnet, x, 12, probs, NULL));
        mix(r, probs, sizeof probs);
        CREATE(r, "ibvi_laplace_build", lpost,
               ibvi_laplace_build(la, lnet, &lpost));
        mix_saved(r, lpost, NULL);
    }

    /* metrics */
    CREATE(r, "ibvi_metrics_create", m, ibvi_metrics_create(&m, CLASSES, &r->a));
    CALL(r, "ibvi_metrics_add", ibvi_metrics_add(m, probs, 12, labels));
    {
        double v[3];
        CALL(r, "ibvi_metrics_nll", ibvi_metrics_nll(m, &v[0]));
        CALL(r, "ibvi_metrics_brier", ibvi_metrics_brier(m, &v[1]));
        CALL(r, "ibvi_metrics_ece", ibvi_metrics_ece(m, &v[2]));
        mix(r, v, sizeof v);
    }

cleanup:
    ibvi_metrics_free(m);
    ibvi_net_free(lpost);
    ibvi_laplace_free(lk);
    ibvi_laplace_free(la);
    ibvi_net_free(lnet);
    ibvi_predictor_free(cpred);
    ibvi_optimizer_free(copt);
    ibvi_predictor_free(spred);
    ibvi_net_free(spost);
    ibvi_swag_free(swag);
    ibvi_net_free(clike);
    ibvi_net_free(cnet);
    ibvi_predictor_free(ens);
    ibvi_predictor_free(pred);
    ibvi_optimizer_free(dopt);
    ibvi_optimizer_free(opt3);
    ibvi_optimizer_free(opt2);
    ibvi_optimizer_free(opt);
    ibvi_net_free(net3);
    ibvi_net_free(net2);
    ibvi_net_free(net);
    free(bytes);
    unlink(path);
}

/* One run with request fail_at refused (-1: none). */
static void do_run(run *r, fail_alloc *fa, long fail_at, int persistent)
{
    memset(fa, 0, sizeof *fa);
    fa->fail_at = fail_at;
    fa->persistent = persistent;
    r->fa = fa;
    r->a = (ibvi_allocator){fa_alloc, fa_free, fa};
    r->digest = 14695981039346656037ULL;
    r->stopped = 0;
    r->failed_calls = 0;
    r->steps = 0;
    scenario(r);
    ck_assert_msg(fa->allocs == fa->frees && fa->live_bytes == 0,
                  "request %ld refused (%s): %ld allocations, %ld frees, %zu "
                  "bytes live after freeing everything", fail_at,
                  persistent ? "persistent" : "one-shot", fa->allocs,
                  fa->frees, fa->live_bytes);
}

static void make_dir(run *r)
{
    snprintf(r->dir, sizeof r->dir, "/tmp/ibvi-allocfail-XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(r->dir));
}

START_TEST(test_every_allocation_one_shot)
{
    run r;
    fail_alloc fa;
    make_dir(&r);
    do_run(&r, &fa, -1, 0);
    const long total = fa.requests;
    const uint64_t clean = r.digest;
    ck_assert_int_gt(total, 20);
    printf("clean run: %ld allocation requests in %d calls\n", total, r.steps);
    int with = 0;
    for (int s = 0; s < r.steps; s++)
        if (r.step_requests[s] > 0) {
            with++;
            printf("  %2ld  %s\n", r.step_requests[s], r.step_name[s]);
        }
    printf("%d of the calls allocate\n", with);
    for (long k = 0; k < total; k++) {
        do_run(&r, &fa, k, 0);
        ck_assert_msg(fa.refused == 1, "request %ld: %ld refused", k,
                      fa.refused);
        ck_assert_msg(r.failed_calls == 1,
                      "request %ld: %d calls failed, expected 1", k,
                      r.failed_calls);
        ck_assert_msg(r.digest == clean,
                      "request %ld refused and retried: the results differ "
                      "from a clean run", k);
    }
    printf("one-shot: %ld of %ld requests refused in turn; each failing call "
           "returned IBVI_ERR_NOMEM, its retry gave the clean results\n",
           total, total);
    rmdir(r.dir);
}
END_TEST

START_TEST(test_every_allocation_persistent)
{
    run r;
    fail_alloc fa;
    make_dir(&r);
    do_run(&r, &fa, -1, 0);
    const long total = fa.requests;
    for (long k = 0; k < total; k++) {
        do_run(&r, &fa, k, 1);
        ck_assert_msg(r.stopped, "request %ld: the run did not stop", k);
        ck_assert_int_eq(r.failed_calls, 1);
    }
    printf("persistent: %ld runs stopped at the first refused request and "
           "freed everything\n", total);
    rmdir(r.dir);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("alloc_fail");
    TCase *tc = tcase_create("alloc_fail");
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, test_every_allocation_one_shot);
    tcase_add_test(tc, test_every_allocation_persistent);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    const int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
