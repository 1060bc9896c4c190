/*
 * libibvi tests - the data-parallel interface (include/ibvi/distributed.h):
 * the flat layout of parameters and gradients against the per-layer
 * getters, steps from host gradients against the network's own steps (bit
 * for bit, every optimizer, one and three samples, a variational conv and
 * dense), the update's multipliers on each part of the layout, noise
 * streams, and every rejection leaving the network and optimizer as they
 * were (compared as saved bytes).
 *
 * SPDX-License-Identifier: MIT
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <ibvi/io.h>

#include "testutil.h"

/* 1 x 6 x 6 images - conv 3@3x3 (rank 2) - relu - maxpool 2 - dense 8 -
 * relu - dense 4 (rank 3): variational conv and dense, a deterministic
 * dense and layers without parameters between them. */
static ibvi_net *build(uint64_t seed)
{
    ibvi_net *net;
    CK_OK(ibvi_net_create_image(&net, 1, 6, 6, NULL));
    CK_OK(ibvi_net_add_conv2d(net, 3, 3, 1, 1, 2));
    CK_OK(ibvi_net_add_activation(net, IBVI_ACT_RELU));
    CK_OK(ibvi_net_add_maxpool(net, 2, 2));
    CK_OK(ibvi_net_add_dense(net, 8, 0));
    CK_OK(ibvi_net_add_activation(net, IBVI_ACT_RELU));
    CK_OK(ibvi_net_add_dense(net, 4, 3));
    CK_OK(ibvi_net_init(net, IBVI_PARAM_MUP, seed));
    return net;
}

enum { N = 5, DIM = 36, CLASSES = 4 };

static void batch(uint64_t seed, float *x, int32_t *y)
{
    tu_rng r;
    tu_rng_seed(&r, seed);
    tu_fill_normal_f(&r, x, N * DIM, 1.0);
    for (int i = 0; i < N; i++)
        y[i] = tu_rng_int(&r, CLASSES);
}

/* Forward with `samples` samples from the generator, loss and backward. */
static void forward_backward(ibvi_net *net, const float *x, const int32_t *y,
                             int32_t samples)
{
    float out[3 * N * CLASSES], grad[3 * N * CLASSES], loss;
    CK_OK(ibvi_net_forward(net, x, N, samples, out));
    CK_OK(ibvi_loss_softmax_xent(out, samples * N, CLASSES, y, N, &loss,
                                 grad));
    CK_OK(ibvi_net_backward(net, grad, samples * N, CLASSES));
}

/* The flat layout built from the per-layer getters. */
static float *per_layer(ibvi_net *net, int grads)
{
    const int64_t total = ibvi_net_param_count(net);
    float *flat = malloc((size_t)total * sizeof *flat), *cursor = flat;
    ck_assert_ptr_nonnull(flat);
    for (int32_t i = 0; i < ibvi_net_layer_count(net); i++) {
        ibvi_layer *l = tu_layer(net, i);
        const int64_t P = ibvi_layer_param_count(l);
        int32_t R;
        CK_OK(ibvi_layer_shape(l, NULL, NULL, &R));
        if (P == 0)
            continue;
        CK_OK(grads ? ibvi_layer_get_grad_mean(l, cursor, P)
                    : ibvi_layer_get_mean(l, cursor, P));
        if (R > 0)
            CK_OK(grads ? ibvi_layer_get_grad_factor(l, cursor + P, P * R)
                        : ibvi_layer_get_factor(l, cursor + P, P * R));
        cursor += P * (1 + R);
    }
    ck_assert_int_eq(cursor - flat, total);
    return flat;
}

/* The saved bytes of a network and optimizer: everything a step changes. */
static uint8_t *saved(const ibvi_net *net, const ibvi_optimizer *opt,
                      int64_t *len)
{
    CK_OK(ibvi_net_save_size(net, opt, len));
    uint8_t *buf = malloc((size_t)*len);
    ck_assert_ptr_nonnull(buf);
    CK_OK(ibvi_net_save_buffer(net, opt, buf, *len));
    return buf;
}

static void assert_same_state(const ibvi_net *net, const ibvi_optimizer *opt,
                              const uint8_t *before, int64_t len,
                              const char *what)
{
    int64_t now_len;
    uint8_t *now = saved(net, opt, &now_len);
    ck_assert_msg(now_len == len && memcmp(now, before, (size_t)len) == 0,
                  "%s changed the network or optimizer", what);
    free(now);
}

static void assert_names(const char *fn)
{
    ck_assert_msg(strncmp(ibvi_last_error(), fn, strlen(fn)) == 0,
                  "message '%s' does not start with %s", ibvi_last_error(),
                  fn);
}

START_TEST(test_params_round_trip)
{
    ibvi_net *net = build(3);
    const int64_t total = ibvi_net_param_count(net);
    /* conv 3*9+3 = 30 (x3), dense 3*3*3 -> 8: 27*8+8 = 224, dense 8 -> 4:
     * 36 (x4) */
    ck_assert_int_eq(total, 30 * 3 + 224 + 36 * 4);
    float *flat = malloc((size_t)total * sizeof *flat);
    CK_OK(ibvi_net_get_params(net, flat, total));
    float *want = per_layer(net, 0);
    ck_assert(memcmp(flat, want, (size_t)total * sizeof *flat) == 0);
    /* set_params writes every element where the getters read it */
    for (int64_t i = 0; i < total; i++)
        flat[i] = (float)i * 0.001f - 0.1f;
    CK_OK(ibvi_net_set_params(net, flat, total));
    free(want);
    want = per_layer(net, 0);
    ck_assert(memcmp(flat, want, (size_t)total * sizeof *flat) == 0);
    /* and to another network: the same forward */
    ibvi_net *other = build(99);
    CK_OK(ibvi_net_set_params(other, flat, total));
    float x[N * DIM], a[N * CLASSES], b[N * CLASSES];
    int32_t y[N];
    batch(1, x, y);
    CK_OK(ibvi_net_forward(net, x, N, 1, a));
    /* the same noise: other's generator is seeded differently */
    float z[5];
    ck_assert_int_eq(ibvi_net_noise_size(net), 5);
    CK_OK(ibvi_net_last_noise(net, z, 5));
    CK_OK(ibvi_net_forward_noise(other, x, N, 1, z, 5, b));
    ck_assert(memcmp(a, b, sizeof a) == 0);
    free(flat);
    free(want);
    ibvi_net_free(net);
    ibvi_net_free(other);
}
END_TEST

START_TEST(test_grads_match_layers)
{
    const int32_t samples[] = {1, 3};
    for (int s = 0; s < 2; s++) {
        ibvi_net *net = build(4);
        const int64_t total = ibvi_net_param_count(net);
        float x[N * DIM];
        int32_t y[N];
        batch(2, x, y);
        forward_backward(net, x, y, samples[s]);
        float *flat = malloc((size_t)total * sizeof *flat);
        CK_OK(ibvi_net_get_grads(net, flat, total));
        float *want = per_layer(net, 1);
        ck_assert(memcmp(flat, want, (size_t)total * sizeof *flat) == 0);
        double norm = 0;
        for (int64_t i = 0; i < total; i++)
            norm += fabs(flat[i]);
        ck_assert(norm > 0); /* not a vacuous comparison */
        /* after a backward through the mean network: factor parts 0 */
        float out[N * CLASSES], grad[N * CLASSES], loss;
        CK_OK(ibvi_net_forward_mean(net, x, N, out));
        CK_OK(ibvi_loss_softmax_xent(out, N, CLASSES, y, N, &loss, grad));
        CK_OK(ibvi_net_backward(net, grad, N, CLASSES));
        CK_OK(ibvi_net_get_grads(net, flat, total));
        for (int64_t i = 30; i < 30 + 30 * 2; i++) /* conv factor */
            ck_assert(flat[i] == 0.0f);
        free(flat);
        free(want);
        ibvi_net_free(net);
    }
}
END_TEST

/* An optimizer of configuration c: 0 plain SGD, 1 momentum, 2 Nesterov,
 * 3 Adam. */
static ibvi_optimizer *make_opt(ibvi_net *net, int c)
{
    ibvi_optimizer *opt;
    CK_OK(ibvi_optimizer_create(&opt, net, c == 3 ? IBVI_OPT_ADAM
                                                  : IBVI_OPT_SGD,
                                c == 3 ? 0.01f : 0.05f));
    /* A host's steps never defer: the internal step they are compared
     * with bitwise takes the per-step path too (docs/deferred.md). */
    CK_OK(ibvi_optimizer_set_deferred(opt, 0));
    if (c == 0)
        CK_OK(ibvi_optimizer_set_momentum(opt, 0.0f, 0));
    if (c == 2)
        CK_OK(ibvi_optimizer_set_momentum(opt, 0.9f, 1));
    return opt;
}

/* Two copies of a network, one stepped by ibvi_optimizer_step, the other by
 * ibvi_optimizer_step_grads on the gradients ibvi_net_get_grads returns:
 * after every step the saved networks and optimizers (parameters, factor,
 * momentum or moments, step count, noise position) are the same bytes. */
START_TEST(test_host_step_matches_internal)
{
    const int32_t samples[] = {1, 3};
    for (int c = 0; c < 4; c++)
        for (int s = 0; s < 2; s++) {
            ibvi_net *a = build(7), *b = build(7);
            ibvi_optimizer *oa = make_opt(a, c), *ob = make_opt(b, c);
            const int64_t total = ibvi_net_param_count(a);
            float *g = malloc((size_t)total * sizeof *g);
            for (int step = 0; step < 4; step++) {
                float x[N * DIM];
                int32_t y[N];
                batch(10 + step, x, y);
                forward_backward(a, x, y, samples[s]);
                forward_backward(b, x, y, samples[s]);
                CK_OK(ibvi_optimizer_step(oa));
                CK_OK(ibvi_net_get_grads(b, g, total));
                CK_OK(ibvi_optimizer_step_grads(ob, g, total));
                int64_t la, lb;
                uint8_t *sa = saved(a, oa, &la), *sb = saved(b, ob, &lb);
                ck_assert_msg(la == lb && memcmp(sa, sb, (size_t)la) == 0,
                              "optimizer %d, %d samples: step %d differs", c,
                              samples[s], step);
                free(sa);
                free(sb);
            }
            ck_assert_int_eq(ibvi_optimizer_step_count(ob), 4);
            free(g);
            ibvi_optimizer_free(oa);
            ibvi_optimizer_free(ob);
            ibvi_net_free(a);
            ibvi_net_free(b);
        }
}
END_TEST

/* Plain SGD on gradients of all ones moves each part of the layout by its
 * own learning rate: the mean's weights and biases by lr times their
 * multipliers, the factor's rows by those over R. A layout or multiplier
 * mix-up shows here. Needs no backward first. */
START_TEST(test_host_step_multipliers)
{
    ibvi_net *net = build(5);
    ibvi_optimizer *opt = make_opt(net, 0);
    const int64_t total = ibvi_net_param_count(net);
    float *before = malloc((size_t)total * sizeof *before);
    float *after = malloc((size_t)total * sizeof *after);
    float *ones = malloc((size_t)total * sizeof *ones);
    for (int64_t i = 0; i < total; i++)
        ones[i] = 1.0f;
    CK_OK(ibvi_net_get_params(net, before, total));
    CK_OK(ibvi_optimizer_step_grads(opt, ones, total));
    CK_OK(ibvi_net_get_params(net, after, total));
    int64_t offset = 0;
    for (int32_t i = 0; i < ibvi_net_layer_count(net); i++) {
        ibvi_layer *l = tu_layer(net, i);
        const int64_t P = ibvi_layer_param_count(l);
        if (P == 0)
            continue;
        int32_t R, channels, h, w;
        CK_OK(ibvi_layer_shape(l, NULL, NULL, &R));
        CK_OK(ibvi_layer_output_shape(l, &channels, &h, &w));
        float wm, bm;
        CK_OK(ibvi_layer_lr_multipliers(l, IBVI_OPT_SGD, &wm, &bm));
        /* conv and dense: one bias per output channel, last */
        const int64_t weights = P - channels;
        for (int64_t p = 0; p < P * (1 + R); p++) {
            const int64_t theta = p < P ? p : (p - P) / R;
            float mult = theta < weights ? wm : bm;
            if (p >= P)
                mult /= (float)R;
            const float want = before[offset + p] - 0.05f * mult;
            ck_assert_msg(after[offset + p] == want,
                          "layer %d entry %lld: %g, expected %g", (int)i,
                          (long long)p, (double)after[offset + p],
                          (double)want);
        }
        offset += P * (1 + R);
    }
    ck_assert_int_eq(offset, total);
    free(before);
    free(after);
    free(ones);
    ibvi_optimizer_free(opt);
    ibvi_net_free(net);
}
END_TEST

START_TEST(test_rejections)
{
    ibvi_net *net = build(6), *fresh;
    CK_OK(ibvi_net_create(&fresh, 3, NULL));
    CK_OK(ibvi_net_add_dense(fresh, 2, 1));
    ibvi_optimizer *opt = make_opt(net, 1);
    const int64_t total = ibvi_net_param_count(net);
    float *buf = calloc((size_t)total + 1, sizeof *buf);
    int64_t len;
    uint8_t *state;
    const int64_t bad_len[] = {0, -1, total - 1, total + 1, INT64_MIN,
                               INT64_MAX};

    /* before any backward: no gradients to read */
    CK_STATUS(ibvi_net_get_grads(net, buf, total), IBVI_ERR_STATE);
    assert_names("ibvi_net_get_grads");

    float x[N * DIM];
    int32_t y[N];
    batch(3, x, y);
    forward_backward(net, x, y, 1);
    CK_OK(ibvi_optimizer_step(opt));
    forward_backward(net, x, y, 1);
    state = saved(net, opt, &len);

    const char *fns[] = {"ibvi_net_get_params", "ibvi_net_set_params",
                         "ibvi_net_get_grads", "ibvi_optimizer_step_grads"};
    for (int f = 0; f < 4; f++) {
        for (int k = 0; k < 3; k++) {
            /* k = 0: NULL handle, 1: uninitialised network, 2: NULL buf */
            int rc;
            ibvi_net *n = k == 0 ? NULL : k == 1 ? fresh : net;
            float *b = k == 2 ? NULL : buf;
            switch (f) {
            case 0: rc = ibvi_net_get_params(n, b, total); break;
            case 1: rc = ibvi_net_set_params(n, b, total); break;
            case 2: rc = ibvi_net_get_grads(n, b, total); break;
            default:
                if (k == 1)
                    continue; /* an optimizer's network is initialised */
                rc = ibvi_optimizer_step_grads(k == 0 ? NULL : opt, b, total);
                break;
            }
            ck_assert_int_eq(rc, k == 1 ? IBVI_ERR_STATE
                                        : IBVI_ERR_INVALID_ARG);
            assert_names(fns[f]);
        }
        for (size_t k = 0; k < sizeof bad_len / sizeof bad_len[0]; k++) {
            int rc;
            switch (f) {
            case 0: rc = ibvi_net_get_params(net, buf, bad_len[k]); break;
            case 1: rc = ibvi_net_set_params(net, buf, bad_len[k]); break;
            case 2: rc = ibvi_net_get_grads(net, buf, bad_len[k]); break;
            default: rc = ibvi_optimizer_step_grads(opt, buf, bad_len[k]);
            }
            ck_assert_int_eq(rc, IBVI_ERR_SHAPE);
            assert_names(fns[f]);
        }
        assert_same_state(net, opt, state, len, fns[f]);
    }

    /* non-finite values anywhere in the buffer: refused, nothing changed */
    CK_OK(ibvi_net_get_params(net, buf, total));
    const int64_t where[] = {0, 95, total - 1};
    const float bad[] = {NAN, INFINITY, -INFINITY};
    for (int w = 0; w < 3; w++)
        for (int v = 0; v < 3; v++) {
            CK_OK(ibvi_net_get_params(net, buf, total));
            buf[where[w]] = bad[v];
            CK_STATUS(ibvi_net_set_params(net, buf, total),
                      IBVI_ERR_NONFINITE);
            assert_names("ibvi_net_set_params");
            CK_OK(ibvi_net_get_grads(net, buf, total));
            buf[where[w]] = bad[v];
            CK_STATUS(ibvi_optimizer_step_grads(opt, buf, total),
                      IBVI_ERR_NONFINITE);
            assert_names("ibvi_optimizer_step_grads");
            assert_same_state(net, opt, state, len, "a non-finite buffer");
        }
    /* finite gradients whose update overflows: refused, nothing changed */
    for (int64_t i = 0; i < total; i++)
        buf[i] = 3e38f;
    CK_OK(ibvi_optimizer_set_lr(opt, 1e30f));
    CK_STATUS(ibvi_optimizer_step_grads(opt, buf, total), IBVI_ERR_NONFINITE);
    assert_names("ibvi_optimizer_step_grads");
    CK_OK(ibvi_optimizer_set_lr(opt, 0.05f));
    assert_same_state(net, opt, state, len, "an overflowing update");
    /* the pending backward is still there: the internal step works */
    CK_OK(ibvi_optimizer_step(opt));

    /* noise stream */
    uint64_t stream;
    CK_STATUS(ibvi_net_set_noise_stream(NULL, 1), IBVI_ERR_INVALID_ARG);
    assert_names("ibvi_net_set_noise_stream");
    CK_STATUS(ibvi_net_set_noise_stream(fresh, 1), IBVI_ERR_STATE);
    CK_STATUS(ibvi_net_set_noise_stream(net, UINT64_C(1) << 32),
              IBVI_ERR_INVALID_ARG);
    assert_names("ibvi_net_set_noise_stream");
    CK_STATUS(ibvi_net_set_noise_stream(net, UINT64_MAX),
              IBVI_ERR_INVALID_ARG);
    CK_OK(ibvi_net_noise_stream(net, &stream));
    ck_assert_uint_eq(stream, 0); /* unchanged by the rejections */
    assert_names("ibvi_net_set_noise_stream");
    CK_STATUS(ibvi_net_noise_stream(NULL, &stream), IBVI_ERR_INVALID_ARG);
    assert_names("ibvi_net_noise_stream");
    CK_STATUS(ibvi_net_noise_stream(fresh, &stream), IBVI_ERR_STATE);
    CK_STATUS(ibvi_net_noise_stream(net, NULL), IBVI_ERR_INVALID_ARG);
    assert_names("ibvi_net_noise_stream");

    free(state);
    free(buf);
    ibvi_optimizer_free(opt);
    ibvi_net_free(net);
    ibvi_net_free(fresh);
}
END_TEST

/* The noise of `samples` forwards of net, after the current state. */
static void draw(ibvi_net *net, float *z, int count)
{
    float x[N * DIM], out[N * CLASSES];
    int32_t y[N];
    batch(4, x, y);
    for (int i = 0; i < count; i++) {
        CK_OK(ibvi_net_forward(net, x, N, 1, out));
        CK_OK(ibvi_net_last_noise(net, z + 5 * i, 5));
    }
}

START_TEST(test_noise_streams)
{
    enum { DRAWS = 6 };
    ibvi_net *plain = build(11), *a = build(11), *b = build(11);
    float zp[5 * DRAWS], za[5 * DRAWS], zb[5 * DRAWS];
    uint64_t stream = 7;
    CK_OK(ibvi_net_noise_stream(a, &stream));
    ck_assert_uint_eq(stream, 0);
    /* stream 0 is the default noise */
    CK_OK(ibvi_net_set_noise_stream(a, 0));
    draw(plain, zp, DRAWS);
    draw(a, za, DRAWS);
    ck_assert(memcmp(zp, za, sizeof zp) == 0);
    /* streams 1 and 2 from the start: reproducible, different from 0 and
     * from each other at every position compared */
    CK_OK(ibvi_net_init(a, IBVI_PARAM_MUP, 11));
    CK_OK(ibvi_net_set_noise_stream(a, 1));
    CK_OK(ibvi_net_set_noise_stream(b, UINT32_MAX));
    CK_OK(ibvi_net_noise_stream(b, &stream));
    ck_assert_uint_eq(stream, UINT32_MAX);
    CK_OK(ibvi_net_set_noise_stream(b, 2));
    draw(a, za, DRAWS);
    draw(b, zb, DRAWS);
    for (int i = 0; i < 5 * DRAWS; i++)
        for (int j = 0; j < 5 * DRAWS; j++) {
            ck_assert(za[i] != zp[j]);
            ck_assert(za[i] != zb[j]);
        }
    ibvi_net *again = build(11);
    float zr[5 * DRAWS];
    CK_OK(ibvi_net_set_noise_stream(again, 1));
    draw(again, zr, DRAWS);
    ck_assert(memcmp(za, zr, sizeof za) == 0);
    /* switching keeps the position: stream 0 at position 3 draws what the
     * default stream draws after three forwards */
    uint64_t pos;
    CK_OK(ibvi_net_init(again, IBVI_PARAM_MUP, 11));
    CK_OK(ibvi_net_set_noise_stream(again, 1));
    draw(again, zr, 3);
    CK_OK(ibvi_net_rng_position(again, &pos));
    ck_assert_uint_eq(pos, 3 * 3); /* ceil(5 / 2) blocks per forward */
    CK_OK(ibvi_net_set_noise_stream(again, 0));
    CK_OK(ibvi_net_rng_position(again, &pos));
    ck_assert_uint_eq(pos, 9);
    draw(again, zr, 3);
    ck_assert(memcmp(zr, zp + 15, 15 * sizeof(float)) == 0);
    /* init and loading reset it to 0 */
    CK_OK(ibvi_net_set_noise_stream(again, 5));
    CK_OK(ibvi_net_init(again, IBVI_PARAM_MUP, 11));
    CK_OK(ibvi_net_noise_stream(again, &stream));
    ck_assert_uint_eq(stream, 0);
    CK_OK(ibvi_net_set_noise_stream(again, 5));
    int64_t len;
    uint8_t *bytes = saved(again, NULL, &len);
    ibvi_net *loaded;
    CK_OK(ibvi_net_load_buffer(&loaded, NULL, bytes, len, NULL));
    CK_OK(ibvi_net_noise_stream(loaded, &stream));
    ck_assert_uint_eq(stream, 0);
    free(bytes);
    ibvi_net_free(loaded);
    ibvi_net_free(plain);
    ibvi_net_free(a);
    ibvi_net_free(b);
    ibvi_net_free(again);
}
END_TEST

/* A step after ibvi_net_set_params of other values: the optimizer's bounds
 * on the old parameters must not be trusted (it checks exactly), and a huge
 * step from there is still refused. */
START_TEST(test_set_params_then_step)
{
    ibvi_net *net = build(8);
    ibvi_optimizer *opt = make_opt(net, 0);
    const int64_t total = ibvi_net_param_count(net);
    float *p = malloc((size_t)total * sizeof *p);
    float *g = malloc((size_t)total * sizeof *g);
    for (int64_t i = 0; i < total; i++)
        g[i] = 1.0f;
    CK_OK(ibvi_optimizer_step_grads(opt, g, total)); /* bounds measured */
    CK_OK(ibvi_optimizer_step_grads(opt, g, total)); /* fast path */
    for (int64_t i = 0; i < total; i++)
        p[i] = 3e38f;
    CK_OK(ibvi_net_set_params(net, p, total));
    for (int64_t i = 0; i < total; i++)
        g[i] = -3e38f;
    int64_t len;
    uint8_t *state = saved(net, opt, &len);
    CK_OK(ibvi_optimizer_set_lr(opt, 10.0f));
    CK_STATUS(ibvi_optimizer_step_grads(opt, g, total), IBVI_ERR_NONFINITE);
    CK_OK(ibvi_optimizer_set_lr(opt, 0.05f));
    assert_same_state(net, opt, state, len, "a step past FLT_MAX");
    free(state);
    free(p);
    free(g);
    ibvi_optimizer_free(opt);
    ibvi_net_free(net);
}
END_TEST

/* ---- the factored layout ------------------------------------------------- */

/* After backwards with one and three samples: the layout's size, G (whose
 * rows sum to dL/dmu, in the backward's order) and Z (the forward's noise)
 * of each variational layer, and the deterministic layer's dL/dmu. */
START_TEST(test_factored_layout)
{
    const int32_t samples[] = {1, 3};
    for (int s = 0; s < 2; s++) {
        const int32_t S = samples[s];
        ibvi_net *net = build(4);
        float x[N * DIM];
        int32_t y[N];
        batch(2, x, y);
        forward_backward(net, x, y, S);
        /* conv: P 30, R 2; dense: P 224; dense: P 36, R 3 */
        const int64_t len = S * (30 + 2) + 224 + S * (36 + 3);
        ck_assert_int_eq(ibvi_net_grads_factored_size(net, S), len);
        float *buf = malloc((size_t)len * sizeof *buf);
        CK_OK(ibvi_net_get_grads_factored(net, buf, len));
        float z[3 * 5], mean[224];
        CK_OK(ibvi_net_last_noise(net, z, S * 5));
        const int32_t layer[3] = {0, 3, 5};
        const int64_t P[3] = {30, 224, 36};
        const int32_t R[3] = {2, 0, 3}, z_off[3] = {0, 0, 2};
        const float *part = buf;
        for (int k = 0; k < 3; k++) {
            CK_OK(ibvi_layer_get_grad_mean(tu_layer(net, layer[k]), mean,
                                           P[k]));
            const int32_t rows = R[k] > 0 ? S : 1;
            for (int64_t p = 0; p < P[k]; p++) {
                float sum = part[p];
                for (int32_t m = 1; m < rows; m++)
                    sum += part[m * P[k] + p];
                ck_assert_msg(sum == mean[p], "layer %d: G's rows do not sum "
                              "to dL/dmu", (int)layer[k]);
            }
            for (int32_t m = 0; m < S && R[k] > 0; m++)
                for (int32_t r = 0; r < R[k]; r++)
                    ck_assert(part[S * P[k] + m * R[k] + r] ==
                              z[m * 5 + z_off[k] + r]);
            part += R[k] > 0 ? S * (P[k] + R[k]) : P[k];
        }
        ck_assert_int_eq(part - buf, len);
        free(buf);
        ibvi_net_free(net);
    }
}
END_TEST

/* Per step, two networks play ranks 0 and 1 (stream w at the step's common
 * position, the same minibatch); one steps from the two flat buffers
 * added and halved, the other from the two factored blocks: the same
 * saved bytes after every step, for every optimizer, one and three
 * samples. One block alone gives ibvi_optimizer_step's result. */
START_TEST(test_factored_step_matches_flat)
{
    const int32_t samples[] = {1, 3};
    for (int c = 0; c < 4; c++)
        for (int s = 0; s < 2; s++) {
            const int32_t S = samples[s];
            for (int W = 1; W <= 2; W++) {
                ibvi_net *a = build(9), *b = build(9);
                ibvi_optimizer *oa = make_opt(a, c), *ob = make_opt(b, c);
                const int64_t total = ibvi_net_param_count(a);
                const int64_t len = ibvi_net_grads_factored_size(b, S);
                float *g = malloc((size_t)total * sizeof *g);
                float *sum = malloc((size_t)total * sizeof *sum);
                float *blocks = malloc((size_t)(2 * len) * sizeof *blocks);
                for (int step = 0; step < 3; step++) {
                    float x[N * DIM];
                    int32_t y[N];
                    batch(20 + step, x, y);
                    uint64_t pa, pb;
                    CK_OK(ibvi_net_rng_position(a, &pa));
                    CK_OK(ibvi_net_rng_position(b, &pb));
                    for (int w = 0; w < W; w++) {
                        CK_OK(ibvi_net_set_noise_stream(a, (uint64_t)w));
                        CK_OK(ibvi_net_set_rng_position(a, pa));
                        forward_backward(a, x, y, S);
                        CK_OK(ibvi_net_get_grads(a, g, total));
                        for (int64_t i = 0; i < total; i++)
                            sum[i] = w ? sum[i] + g[i] : g[i];
                        CK_OK(ibvi_net_set_noise_stream(b, (uint64_t)w));
                        CK_OK(ibvi_net_set_rng_position(b, pb));
                        forward_backward(b, x, y, S);
                        CK_OK(ibvi_net_get_grads_factored(b, blocks + w * len,
                                                          len));
                    }
                    if (W == 1) {
                        CK_OK(ibvi_optimizer_step(oa));
                    } else {
                        for (int64_t i = 0; i < total; i++)
                            sum[i] *= 0.5f;
                        CK_OK(ibvi_optimizer_step_grads(oa, sum, total));
                    }
                    CK_OK(ibvi_optimizer_step_factored(ob, blocks, W, len));
                    int64_t la, lb;
                    uint8_t *sa = saved(a, oa, &la), *sb = saved(b, ob, &lb);
                    ck_assert_msg(la == lb && memcmp(sa, sb, (size_t)la) == 0,
                                  "optimizer %d, %d samples, %d blocks: step "
                                  "%d differs", c, S, W, step);
                    free(sa);
                    free(sb);
                }
                free(g);
                free(sum);
                free(blocks);
                ibvi_optimizer_free(oa);
                ibvi_optimizer_free(ob);
                ibvi_net_free(a);
                ibvi_net_free(b);
            }
        }
}
END_TEST

START_TEST(test_factored_rejections)
{
    ibvi_net *net = build(12), *fresh;
    CK_OK(ibvi_net_create(&fresh, 3, NULL));
    CK_OK(ibvi_net_add_dense(fresh, 2, 1));
    ibvi_optimizer *opt = make_opt(net, 1);
    const int64_t len = ibvi_net_grads_factored_size(net, 1);
    float *buf = calloc((size_t)(2 * len + 64), sizeof *buf);
    const char *fn_size = "ibvi_net_grads_factored_size",
               *fn_get = "ibvi_net_get_grads_factored",
               *fn_step = "ibvi_optimizer_step_factored";

    CK_STATUS(ibvi_net_grads_factored_size(NULL, 1), IBVI_ERR_INVALID_ARG);
    assert_names(fn_size);
    CK_STATUS(ibvi_net_grads_factored_size(fresh, 1), IBVI_ERR_STATE);
    const int32_t bad_samples[] = {0, -1, 65537, INT32_MIN};
    for (int k = 0; k < 4; k++) {
        CK_STATUS(ibvi_net_grads_factored_size(net, bad_samples[k]),
                  IBVI_ERR_INVALID_ARG);
        assert_names(fn_size);
    }
    CK_STATUS(ibvi_net_get_grads_factored(net, buf, len), IBVI_ERR_STATE);
    assert_names(fn_get);

    float x[N * DIM];
    int32_t y[N];
    batch(3, x, y);
    forward_backward(net, x, y, 1);
    CK_OK(ibvi_optimizer_step(opt));
    forward_backward(net, x, y, 1);
    int64_t state_len;
    uint8_t *state = saved(net, opt, &state_len);

    CK_STATUS(ibvi_net_get_grads_factored(NULL, buf, len),
              IBVI_ERR_INVALID_ARG);
    assert_names(fn_get);
    CK_STATUS(ibvi_net_get_grads_factored(fresh, buf, len), IBVI_ERR_STATE);
    CK_STATUS(ibvi_net_get_grads_factored(net, NULL, len),
              IBVI_ERR_INVALID_ARG);
    const int64_t bad_len[] = {0, -1, len - 1, len + 1,
                               ibvi_net_grads_factored_size(net, 2),
                               INT64_MIN, INT64_MAX};
    for (size_t k = 0; k < sizeof bad_len / sizeof bad_len[0]; k++) {
        CK_STATUS(ibvi_net_get_grads_factored(net, buf, bad_len[k]),
                  IBVI_ERR_SHAPE);
        assert_names(fn_get);
    }
    CK_OK(ibvi_net_get_grads_factored(net, buf, len));
    CK_OK(ibvi_net_get_grads_factored(net, buf + len, len));

    CK_STATUS(ibvi_optimizer_step_factored(NULL, buf, 1, len),
              IBVI_ERR_INVALID_ARG);
    assert_names(fn_step);
    CK_STATUS(ibvi_optimizer_step_factored(opt, NULL, 1, len),
              IBVI_ERR_INVALID_ARG);
    assert_names(fn_step);
    const int32_t bad_count[] = {0, -1, INT32_MIN};
    for (int k = 0; k < 3; k++) {
        CK_STATUS(ibvi_optimizer_step_factored(opt, buf, bad_count[k], len),
                  IBVI_ERR_INVALID_ARG);
        assert_names(fn_step);
    }
    /* lengths that are the layout of no sample count (len + 1 floats is
     * not; 224 + 3 (32 + 39) with S = 3 would be, with other blocks) */
    const int64_t no_len[] = {0, -1, len - 1, len + 1, 224, INT64_MIN,
                              INT64_MAX};
    for (size_t k = 0; k < sizeof no_len / sizeof no_len[0]; k++) {
        CK_STATUS(ibvi_optimizer_step_factored(opt, buf, 1, no_len[k]),
                  IBVI_ERR_SHAPE);
        assert_names(fn_step);
    }
    assert_same_state(net, opt, state, state_len, "a rejected shape");
    /* a non-finite value in the second block, in G or in Z */
    const int64_t where[] = {len + 0, len + 29, len + 30 + 1, 2 * len - 1};
    for (int w = 0; w < 4; w++) {
        const float keep = buf[where[w]];
        buf[where[w]] = NAN;
        CK_STATUS(ibvi_optimizer_step_factored(opt, buf, 2, len),
                  IBVI_ERR_NONFINITE);
        assert_names(fn_step);
        buf[where[w]] = keep;
        assert_same_state(net, opt, state, state_len, "a non-finite block");
    }
    /* an update that overflows: refused, nothing changed */
    for (int64_t i = 0; i < 2 * len; i++)
        buf[i] = 3e38f;
    CK_OK(ibvi_optimizer_set_lr(opt, 1e30f));
    CK_STATUS(ibvi_optimizer_step_factored(opt, buf, 2, len),
              IBVI_ERR_NONFINITE);
    CK_OK(ibvi_optimizer_set_lr(opt, 0.05f));
    assert_same_state(net, opt, state, state_len, "an overflowing update");
    /* and the valid blocks step */
    CK_OK(ibvi_net_get_grads_factored(net, buf, len));
    CK_OK(ibvi_optimizer_step_factored(opt, buf, 1, len));
    ck_assert_int_eq(ibvi_optimizer_step_count(opt), 2);
    free(state);
    free(buf);
    ibvi_optimizer_free(opt);
    ibvi_net_free(net);
    ibvi_net_free(fresh);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("distributed");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_params_round_trip);
    tcase_add_test(tc, test_grads_match_layers);
    tcase_add_test(tc, test_host_step_matches_internal);
    tcase_add_test(tc, test_host_step_multipliers);
    tcase_add_test(tc, test_rejections);
    tcase_add_test(tc, test_noise_streams);
    tcase_add_test(tc, test_set_params_then_step);
    tcase_add_test(tc, test_factored_layout);
    tcase_add_test(tc, test_factored_step_matches_flat);
    tcase_add_test(tc, test_factored_rejections);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    const int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
