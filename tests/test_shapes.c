/*
 * libibvi tests - tensor shapes: networks on images, (C, H, W) per example.
 *
 * A network of dense layers built on an image of shape (C, H, W) reads its
 * input flat, so it must compute bitwise what the same network built on
 * C * H * W features computes: forward, gradients, training and prediction.
 * Every layer reports its output shape; bad shapes are refused with a
 * message that names the function and the offending values.
 *
 * SPDX-License-Identifier: MIT
 */
#include <stdlib.h>
#include <string.h>

#include "testutil.h"

enum { C = 2, H = 3, W = 4, D = C * H * W, N = 7, CLASSES = 3 };

/* image = 1: built with ibvi_net_create_image(C, H, W), else flat D. */
static ibvi_net *build(int image, int32_t parameterization)
{
    ibvi_net *net = NULL;
    if (image)
        CK_OK(ibvi_net_create_image(&net, C, H, W, NULL));
    else
        CK_OK(ibvi_net_create(&net, D, NULL));
    CK_OK(ibvi_net_add_activation(net, IBVI_ACT_TANH));
    CK_OK(ibvi_net_add_dense(net, 16, 3));
    CK_OK(ibvi_net_add_activation(net, IBVI_ACT_RELU));
    CK_OK(ibvi_net_add_dense(net, 8, 0));
    CK_OK(ibvi_net_add_activation(net, IBVI_ACT_SILU));
    CK_OK(ibvi_net_add_dense(net, CLASSES, 2));
    CK_OK(ibvi_net_init(net, parameterization, 77));
    return net;
}

static void same_floats(const float *a, const float *b, int64_t n,
                        const char *what)
{
    ck_assert_msg(memcmp(a, b, (size_t)n * sizeof(float)) == 0,
                  "%s differ between the image and the flat network", what);
}

/* Every layer's mean, factor and both gradients, bitwise. */
static void same_parameters(ibvi_net *a, ibvi_net *b)
{
    ck_assert_int_eq(ibvi_net_layer_count(a), ibvi_net_layer_count(b));
    for (int32_t i = 0; i < ibvi_net_layer_count(a); i++) {
        ibvi_layer *la = tu_layer(a, i), *lb = tu_layer(b, i);
        const int64_t P = ibvi_layer_param_count(la);
        ck_assert_int_eq(P, ibvi_layer_param_count(lb));
        ck_assert_int_eq(ibvi_layer_get_role(la), ibvi_layer_get_role(lb));
        if (P == 0)
            continue;
        int32_t rank;
        CK_OK(ibvi_layer_shape(la, NULL, NULL, &rank));
        const int64_t len = P * (rank > 0 ? rank : 1);
        float *x = malloc((size_t)len * sizeof *x);
        float *y = malloc((size_t)len * sizeof *y);
        CK_OK(ibvi_layer_get_mean(la, x, P));
        CK_OK(ibvi_layer_get_mean(lb, y, P));
        same_floats(x, y, P, "means");
        CK_OK(ibvi_layer_get_grad_mean(la, x, P));
        CK_OK(ibvi_layer_get_grad_mean(lb, y, P));
        same_floats(x, y, P, "mean gradients");
        if (rank > 0) {
            CK_OK(ibvi_layer_get_factor(la, x, len));
            CK_OK(ibvi_layer_get_factor(lb, y, len));
            same_floats(x, y, len, "factors");
            CK_OK(ibvi_layer_get_grad_factor(la, x, len));
            CK_OK(ibvi_layer_get_grad_factor(lb, y, len));
            same_floats(x, y, len, "factor gradients");
        }
        free(x);
        free(y);
    }
}

START_TEST(test_image_equals_flat)
{
    for (int32_t param = IBVI_PARAM_SP; param <= IBVI_PARAM_MUP; param++) {
        ibvi_net *image = build(1, param), *flat = build(0, param);
        ck_assert_int_eq(ibvi_net_input_dim(image), D);
        ck_assert_int_eq(ibvi_net_noise_size(image), ibvi_net_noise_size(flat));
        same_parameters(image, flat);

        tu_rng rng;
        tu_rng_seed(&rng, 5);
        float x[N * D];
        int32_t labels[N];
        tu_fill_normal_f(&rng, x, N * D, 1.0);
        for (int i = 0; i < N; i++)
            labels[i] = i % CLASSES;

        float a[4 * N * CLASSES], b[4 * N * CLASSES];
        CK_OK(ibvi_net_forward_mean(image, x, N, a));
        CK_OK(ibvi_net_forward_mean(flat, x, N, b));
        same_floats(a, b, N * CLASSES, "mean-network outputs");
        CK_OK(ibvi_net_forward(image, x, N, 4, a));
        CK_OK(ibvi_net_forward(flat, x, N, 4, b));
        same_floats(a, b, 4 * N * CLASSES, "sampled outputs");
        CK_OK(ibvi_net_backward(image, a, 4 * N, CLASSES));
        CK_OK(ibvi_net_backward(flat, a, 4 * N, CLASSES));
        same_parameters(image, flat);

        ibvi_optimizer *oa, *ob;
        CK_OK(ibvi_optimizer_create(&oa, image, IBVI_OPT_SGD, 0.05f));
        CK_OK(ibvi_optimizer_create(&ob, flat, IBVI_OPT_SGD, 0.05f));
        CK_OK(ibvi_optimizer_set_momentum(oa, 0.9f, 0));
        CK_OK(ibvi_optimizer_set_momentum(ob, 0.9f, 0));
        for (int step = 0; step < 5; step++) {
            float la, lb;
            CK_OK(ibvi_train_step(image, oa, x, N, 1 + step % 2,
                                  IBVI_LOSS_SOFTMAX_XENT, labels, NULL, &la));
            CK_OK(ibvi_train_step(flat, ob, x, N, 1 + step % 2,
                                  IBVI_LOSS_SOFTMAX_XENT, labels, NULL, &lb));
            ck_assert_msg(memcmp(&la, &lb, sizeof la) == 0,
                          "step %d: loss %g vs %g", step, (double)la,
                          (double)lb);
        }
        same_parameters(image, flat);

        ibvi_predictor *pa, *pb;
        CK_OK(ibvi_predictor_create(&pa, image, 6, 3));
        CK_OK(ibvi_predictor_create(&pb, flat, 6, 3));
        float probs_a[N * CLASSES], probs_b[N * CLASSES], mi_a[N], mi_b[N];
        CK_OK(ibvi_predictor_run(pa, x, N, probs_a, NULL, NULL, mi_a));
        CK_OK(ibvi_predictor_run(pb, x, N, probs_b, NULL, NULL, mi_b));
        same_floats(probs_a, probs_b, N * CLASSES, "predictive probabilities");
        same_floats(mi_a, mi_b, N, "mutual information");
        ibvi_predictor_free(pa);
        ibvi_predictor_free(pb);
        ibvi_optimizer_free(oa);
        ibvi_optimizer_free(ob);
        ibvi_net_free(image);
        ibvi_net_free(flat);
    }
}
END_TEST

static void expect_shape(const ibvi_layer *l, int32_t c, int32_t h, int32_t w)
{
    int32_t sc = -1, sh = -1, sw = -1;
    CK_OK(ibvi_layer_output_shape(l, &sc, &sh, &sw));
    ck_assert_msg(sc == c && sh == h && sw == w,
                  "output shape (%d, %d, %d), expected (%d, %d, %d)", sc, sh,
                  sw, c, h, w);
}

START_TEST(test_shapes_reported)
{
    ibvi_net *net = NULL;
    CK_OK(ibvi_net_create_image(&net, C, H, W, NULL));
    int32_t c, h, w;
    CK_OK(ibvi_net_input_shape(net, &c, &h, &w));
    ck_assert(c == C && h == H && w == W);
    ck_assert_int_eq(ibvi_net_input_dim(net), D);
    /* Shapes are known as soon as a layer is added, before init. */
    CK_OK(ibvi_net_add_activation(net, IBVI_ACT_RELU));
    expect_shape(tu_layer(net, 0), C, H, W);
    CK_OK(ibvi_net_add_dense(net, 5, 1));
    expect_shape(tu_layer(net, 1), 5, 1, 1);
    int32_t inputs, outputs, rank;
    CK_OK(ibvi_layer_shape(tu_layer(net, 1), &inputs, &outputs, &rank));
    ck_assert(inputs == D && outputs == 5 && rank == 1);
    ck_assert_int_eq(ibvi_layer_param_count(tu_layer(net, 1)), 5 * D + 5);
    CK_OK(ibvi_layer_shape(tu_layer(net, 0), &inputs, &outputs, &rank));
    ck_assert(inputs == D && outputs == D && rank == 0);
    CK_OK(ibvi_net_add_activation(net, IBVI_ACT_TANH));
    expect_shape(tu_layer(net, 2), 5, 1, 1);
    CK_OK(ibvi_net_add_dense(net, 2, 0));
    CK_OK(ibvi_net_init(net, IBVI_PARAM_MUP, 1));
    expect_shape(tu_layer(net, 3), 2, 1, 1);
    ck_assert_int_eq(ibvi_net_output_dim(net), 2);
    /* Roles count the dense layers only: the leading activation is none. */
    ck_assert_int_eq(ibvi_layer_get_role(tu_layer(net, 0)), IBVI_ROLE_NONE);
    ck_assert_int_eq(ibvi_layer_get_role(tu_layer(net, 1)), IBVI_ROLE_INPUT);
    ck_assert_int_eq(ibvi_layer_get_role(tu_layer(net, 3)), IBVI_ROLE_OUTPUT);
    ibvi_net_free(net);

    /* A flat network is (D, 1, 1). */
    CK_OK(ibvi_net_create(&net, 9, NULL));
    CK_OK(ibvi_net_input_shape(net, &c, &h, &w));
    ck_assert(c == 9 && h == 1 && w == 1);
    ibvi_net_free(net);
}
END_TEST

/* The call failed with `status` and a message containing `part`. */
static void refused(int rc, int status, const char *part)
{
    ck_assert_msg(rc == status, "returned %d, expected %d: %s", rc, status,
                  ibvi_last_error());
    ck_assert_msg(strstr(ibvi_last_error(), part) != NULL,
                  "message \"%s\" lacks \"%s\"", ibvi_last_error(), part);
}

START_TEST(test_bad_shapes_rejected)
{
    ibvi_net *net = (ibvi_net *)&net;
    refused(ibvi_net_create_image(&net, 0, 2, 2, NULL), IBVI_ERR_INVALID_ARG,
            "ibvi_net_create_image: channels = 0, height = 2, width = 2");
    ck_assert_ptr_null(net);
    refused(ibvi_net_create_image(&net, 3, -1, 2, NULL), IBVI_ERR_INVALID_ARG,
            "height = -1");
    refused(ibvi_net_create_image(&net, 3, 2, 0, NULL), IBVI_ERR_INVALID_ARG,
            "width = 0");
    /* Each size fits, the product does not (and would overflow int32). */
    refused(ibvi_net_create_image(&net, 65536, 65536, 2, NULL),
            IBVI_ERR_INVALID_ARG, "channels * height * width <= 100000000");
    ck_assert_ptr_null(net);
    refused(ibvi_net_create_image(&net, 1, 1, 1, &(ibvi_allocator){0}),
            IBVI_ERR_INVALID_ARG, "allocator");

    /* A dense layer on a large image: P = outputs * C * H * W + outputs
     * counts every pixel, and the rank is checked against it. */
    CK_OK(ibvi_net_create_image(&net, 1, 2, 2, NULL));
    refused(ibvi_net_add_dense(net, 2, 11), IBVI_ERR_INVALID_ARG,
            "rank = 11, expected 0..10");
    refused(ibvi_net_add_dense(net, 0, 0), IBVI_ERR_INVALID_ARG,
            "outputs = 0");
    ck_assert_int_eq(ibvi_net_layer_count(net), 0);
    /* The input is flat data of C * H * W per row: a wrong z or grad shape
     * is still refused as before. */
    CK_OK(ibvi_net_add_dense(net, 2, 1));
    CK_OK(ibvi_net_init(net, IBVI_PARAM_SP, 1));
    float x[2 * 4] = {0}, out[2 * 2];
    CK_OK(ibvi_net_forward(net, x, 2, 1, out));
    refused(ibvi_net_backward(net, out, 2, 3), IBVI_ERR_SHAPE,
            "expected 2 x 2");
    ibvi_net_free(net);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("shapes");
    TCase *tc = tcase_create("shapes");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_image_equals_flat);
    tcase_add_test(tc, test_shapes_reported);
    tcase_add_test(tc, test_bad_shapes_rejected);
    suite_add_tcase(s, tc);
    return tu_run_suite(s);
}
