/*
 * libibvi tests - the generic layer walk: every engine (the training
 * forward, the predictor) runs any sequence of layer kinds, not only
 * dense-then-activation chains.
 *
 * - A network that starts with an activation (or has two activations in a
 *   row) predicts what its forward pass computes: the predictor's buffers
 *   must not alias a layer's input with its output (they once did for a
 *   leading activation: wrong probabilities once BLIS blocked the GEMM).
 * - Accessors answer by capability: a layer without parameters refuses
 *   parameter copies naming its kind, whatever the kind.
 *
 * SPDX-License-Identifier: MIT
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"

/* softmax of each row of logits (n x classes), in double. */
static void softmax_rows(const float *logits, int64_t n, int32_t classes,
                         double *out)
{
    for (int64_t r = 0; r < n; r++) {
        double max = -INFINITY, z = 0.0;
        for (int32_t c = 0; c < classes; c++)
            max = fmax(max, logits[r * classes + c]);
        for (int32_t c = 0; c < classes; c++)
            z += exp(logits[r * classes + c] - max);
        for (int32_t c = 0; c < classes; c++)
            out[r * classes + c] = exp(logits[r * classes + c] - max) / z;
    }
}

/* The predictor with the mean network (and with K samples of a
 * deterministic network) gives softmax(forward_mean) to float rounding. */
static void check_predictor_matches_forward(ibvi_net *net, int64_t n)
{
    const int32_t D = ibvi_net_input_dim(net), C = ibvi_net_output_dim(net);
    float *x = malloc((size_t)(n * D) * sizeof *x);
    float *logits = malloc((size_t)(n * C) * sizeof *logits);
    float *probs = malloc((size_t)(n * C) * sizeof *probs);
    double *expect = malloc((size_t)(n * C) * sizeof *expect);
    tu_rng rng;
    tu_rng_seed(&rng, 11);
    tu_fill_normal_f(&rng, x, n * D, 1.0);
    CK_OK(ibvi_net_forward_mean(net, x, n, logits));
    softmax_rows(logits, n, C, expect);
    for (int on = 1; on >= 0; on--) {
        ibvi_predictor *p;
        CK_OK(ibvi_predictor_create(&p, net, 3, 5));
        CK_OK(ibvi_predictor_set_mean_network(p, on));
        CK_OK(ibvi_predictor_run(p, x, n, probs, NULL, NULL, NULL));
        double worst = 0.0;
        for (int64_t i = 0; i < n * C; i++)
            worst = fmax(worst, fabs(probs[i] - expect[i]));
        ck_assert_msg(worst < 1e-5,
                      "mean network %d: predictor differs from the forward "
                      "by %g", on, worst);
        ibvi_predictor_free(p);
    }
    free(x);
    free(logits);
    free(probs);
    free(expect);
}

START_TEST(test_leading_activation)
{
    /* Large enough that BLIS blocks the GEMM (an aliased input is then
     * overwritten before it is read). */
    ibvi_net *net = tu_net_new(600, NULL);
    CK_OK(ibvi_net_add_activation(net, IBVI_ACT_TANH));
    CK_OK(ibvi_net_add_dense(net, 700, 0));
    CK_OK(ibvi_net_add_activation(net, IBVI_ACT_RELU));
    CK_OK(ibvi_net_add_dense(net, 3, 0));
    CK_OK(ibvi_net_init(net, IBVI_PARAM_SP, 4));
    check_predictor_matches_forward(net, 300);
    ibvi_net_free(net);
}
END_TEST

START_TEST(test_activation_chains)
{
    /* Two activations in a row, a ReLU that is not after a dense layer, and
     * one after the first; on an image input. */
    ibvi_net *net = NULL;
    CK_OK(ibvi_net_create_image(&net, 3, 15, 15, NULL));
    CK_OK(ibvi_net_add_activation(net, IBVI_ACT_SILU));
    CK_OK(ibvi_net_add_activation(net, IBVI_ACT_RELU));
    CK_OK(ibvi_net_add_dense(net, 64, 0));
    CK_OK(ibvi_net_add_activation(net, IBVI_ACT_RELU));
    CK_OK(ibvi_net_add_activation(net, IBVI_ACT_TANH));
    CK_OK(ibvi_net_add_dense(net, 5, 0));
    CK_OK(ibvi_net_init(net, IBVI_PARAM_MUP, 2));
    check_predictor_matches_forward(net, 257);
    ibvi_net_free(net);
}
END_TEST

START_TEST(test_no_parameters_answer)
{
    ibvi_net *net = tu_net_new(4, NULL);
    CK_OK(ibvi_net_add_dense(net, 3, 1));
    CK_OK(ibvi_net_add_activation(net, IBVI_ACT_RELU));
    CK_OK(ibvi_net_add_dense(net, 2, 0));
    CK_OK(ibvi_net_init(net, IBVI_PARAM_SP, 1));
    ibvi_layer *act = tu_layer(net, 1);
    float buf[4], a, b;
    ck_assert_int_eq(ibvi_layer_param_count(act), 0);
    CK_STATUS(ibvi_layer_get_mean(act, buf, 0), IBVI_ERR_INVALID_ARG);
    ck_assert_ptr_nonnull(strstr(ibvi_last_error(), "has no parameters"));
    ck_assert_ptr_nonnull(strstr(ibvi_last_error(), "activation"));
    CK_STATUS(ibvi_layer_init_std(act, &a, &b), IBVI_ERR_INVALID_ARG);
    CK_STATUS(ibvi_layer_lr_multipliers(act, IBVI_OPT_SGD, &a, &b),
              IBVI_ERR_INVALID_ARG);
    ck_assert_ptr_nonnull(strstr(ibvi_last_error(), "has no parameters"));
    CK_STATUS(ibvi_layer_get_activation(tu_layer(net, 0)),
              IBVI_ERR_INVALID_ARG);
    ck_assert_ptr_nonnull(strstr(ibvi_last_error(), "dense"));
    ibvi_net_free(net);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("layers");
    TCase *tc = tcase_create("layers");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_leading_activation);
    tcase_add_test(tc, test_activation_chains);
    tcase_add_test(tc, test_no_parameters_answer);
    suite_add_tcase(s, tc);
    return tu_run_suite(s);
}
