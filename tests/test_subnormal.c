/*
 * Momentum and Adam state decays geometrically where gradients vanish, and
 * the optimizer flushes what falls below FLT_MIN to 0 (subnormal arithmetic
 * made IBVI training steps 6x slower after a few epochs). This suite runs
 * many steps with an exactly zero gradient after one real one and checks
 * that no parameter and no optimizer state value is subnormal.
 */
#include <check.h>
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <ibvi/ibvi.h>
#include <ibvi/io.h>

static int is_subnormal(float v) { return fpclassify(v) == FP_SUBNORMAL; }

static int64_t count_subnormal(const float *v, int64_t n)
{
    int64_t count = 0;
    for (int64_t i = 0; i < n; i++)
        count += is_subnormal(v[i]);
    return count;
}

/* Subnormal values among the optimizer state floats of a saved model: they
 * are the last state_floats floats before the 4-byte checksum. */
static int64_t state_subnormals(const ibvi_net *net, const ibvi_optimizer *opt,
                                int64_t state_floats)
{
    int64_t size;
    ck_assert_int_eq(ibvi_net_save_size(net, opt, &size), IBVI_OK);
    uint8_t *buf = malloc((size_t)size);
    ck_assert_ptr_nonnull(buf);
    ck_assert_int_eq(ibvi_net_save_buffer(net, opt, buf, size), IBVI_OK);
    int64_t count = 0;
    const uint8_t *state = buf + size - 4 - 4 * state_floats;
    for (int64_t i = 0; i < state_floats; i++) {
        uint32_t bits = (uint32_t)state[4 * i] | (uint32_t)state[4 * i + 1] << 8 |
                        (uint32_t)state[4 * i + 2] << 16 |
                        (uint32_t)state[4 * i + 3] << 24;
        float v;
        memcpy(&v, &bits, sizeof v);
        count += is_subnormal(v);
    }
    free(buf);
    return count;
}

static void run(int32_t kind, int64_t *param_sub, int64_t *state_sub)
{
    ibvi_net *net;
    ck_assert_int_eq(ibvi_net_create(&net, 3, NULL), IBVI_OK);
    ck_assert_int_eq(ibvi_net_add_dense(net, 2, 2), IBVI_OK);
    ck_assert_int_eq(ibvi_net_init(net, IBVI_PARAM_SP, 5), IBVI_OK);
    ibvi_optimizer *opt;
    ck_assert_int_eq(ibvi_optimizer_create(&opt, net, kind, 0.05f), IBVI_OK);
    if (kind == IBVI_OPT_SGD)
        ck_assert_int_eq(ibvi_optimizer_set_momentum(opt, 0.94f, 0), IBVI_OK);
    const float x[6] = {1, -2, 0.5f, 0.3f, 0.7f, -1};
    const float y[4] = {1, 0, -1, 2};
    float loss, out[4];
    ck_assert_int_eq(ibvi_train_step(net, opt, x, 2, 1, IBVI_LOSS_SQUARED,
                                     NULL, y, &loss), IBVI_OK);
    /* Then a gradient of exactly 0: the state decays by 0.94 (SGD: 1500
     * steps bring ~1 to ~1e-40, inside the subnormal range) or by 0.9 and
     * 0.999 (Adam's moments) per step. */
    const float zero[4] = {0, 0, 0, 0};
    for (int step = 0; step < 1500; step++) {
        ck_assert_int_eq(ibvi_net_forward_mean(net, x, 2, out), IBVI_OK);
        ck_assert_int_eq(ibvi_net_backward(net, zero, 2, 2), IBVI_OK);
        ck_assert_int_eq(ibvi_optimizer_step(opt), IBVI_OK);
    }
    ibvi_layer *layer;
    ck_assert_int_eq(ibvi_net_layer(net, 0, &layer), IBVI_OK);
    float mean[8], factor[16];
    ck_assert_int_eq(ibvi_layer_get_mean(layer, mean, 8), IBVI_OK);
    ck_assert_int_eq(ibvi_layer_get_factor(layer, factor, 16), IBVI_OK);
    *param_sub = count_subnormal(mean, 8) + count_subnormal(factor, 16);
    const int64_t state_floats = (kind == IBVI_OPT_ADAM ? 2 : 1) * 24;
    *state_sub = state_subnormals(net, opt, state_floats);
    ibvi_optimizer_free(opt);
    ibvi_net_free(net);
}

START_TEST(test_sgd_momentum_state_flushed)
{
    int64_t param_sub, state_sub;
    run(IBVI_OPT_SGD, &param_sub, &state_sub);
    ck_assert_int_eq(param_sub, 0);
    ck_assert_int_eq(state_sub, 0);
}
END_TEST

START_TEST(test_adam_state_flushed)
{
    int64_t param_sub, state_sub;
    run(IBVI_OPT_ADAM, &param_sub, &state_sub);
    ck_assert_int_eq(param_sub, 0);
    ck_assert_int_eq(state_sub, 0);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("subnormal");
    TCase *tc = tcase_create("optimizer");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_sgd_momentum_state_flushed);
    tcase_add_test(tc, test_adam_state_flushed);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
