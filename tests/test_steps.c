/*
 * libibvi tests - an optimizer's step count at its limit (issue 10, item 3).
 *
 * A count of 2^53 cannot be reached by stepping in a test, so this
 * suite compiles the library's sources in (as test_kernel does with
 * lib/cpu.c) and sets it through the internal ibvi__optimizer_set_steps,
 * the setter the model loader uses. Everything else goes through the public
 * API. An optimizer at 2^53 steps (IBVI__MAX_STEPS, the most a model file
 * holds) must refuse the next step with IBVI_ERR_STATE and change nothing,
 * where a count of INT64_MAX used to overflow the signed count (undefined behaviour; in practice a negative step count and a
 * garbage Adam bias correction).
 *
 * SPDX-License-Identifier: MIT
 */
#include <check.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <ibvi/ibvi.h>
#include <ibvi/io.h>

#include "network.h"

#define CK_OK(expr)                                                           \
    do {                                                                      \
        int rc_ = (int)(expr);                                                \
        ck_assert_msg(rc_ == IBVI_OK, "%s returned %d: %s", #expr, rc_,       \
                      ibvi_last_error());                                     \
    } while (0)

static uint8_t *save(const ibvi_net *net, const ibvi_optimizer *opt,
                     int64_t *size)
{
    CK_OK(ibvi_net_save_size(net, opt, size));
    uint8_t *buf = malloc((size_t)*size);
    ck_assert_ptr_nonnull(buf);
    CK_OK(ibvi_net_save_buffer(net, opt, buf, *size));
    return buf;
}

static const float X[4 * 3] = {0.5f, -1, 2, 1, 0, -0.5f, 0.25f, 1, 1,
                                -2, 0.5f, 0};
static const int32_t LABELS[4] = {0, 1, 1, 0};

/* Both kinds: one step from 2^53 - 1 reaches 2^53; the next,
 * through ibvi_train_step and ibvi_optimizer_step, is refused and leaves
 * the saved network and optimizer (parameters, state, step count, noise
 * position) byte for byte as they were; reset makes it step again. */
START_TEST(test_step_count_limit)
{
    for (int32_t kind = 0; kind < 2; kind++) {
        ibvi_net *net = NULL;
        ibvi_optimizer *opt = NULL;
        CK_OK(ibvi_net_create(&net, 3, NULL));
        CK_OK(ibvi_net_add_dense(net, 2, 2));
        CK_OK(ibvi_net_init(net, IBVI_PARAM_MUP, 5));
        CK_OK(ibvi_optimizer_create(&opt, net, kind, 0.01f));
        float loss;
        CK_OK(ibvi_train_step(net, opt, X, 4, 1, IBVI_LOSS_SOFTMAX_XENT,
                              LABELS, NULL, &loss));
        ibvi__optimizer_set_steps(opt, IBVI__MAX_STEPS - 1);
        CK_OK(ibvi_train_step(net, opt, X, 4, 1, IBVI_LOSS_SOFTMAX_XENT,
                              LABELS, NULL, &loss));
        ck_assert(ibvi_optimizer_step_count(opt) == IBVI__MAX_STEPS);

        int64_t s0, s1;
        uint8_t *before = save(net, opt, &s0);
        int rc = ibvi_train_step(net, opt, X, 4, 1, IBVI_LOSS_SOFTMAX_XENT,
                                 LABELS, NULL, &loss);
        ck_assert_msg(rc == IBVI_ERR_STATE, "kind %d: train_step returned %d",
                      (int)kind, rc);
        ck_assert_msg(strncmp(ibvi_last_error(), "ibvi_train_step", 15) == 0,
                      "%s", ibvi_last_error());
        uint8_t *after = save(net, opt, &s1);
        ck_assert_int_eq(s0, s1);
        ck_assert_msg(memcmp(before, after, (size_t)s0) == 0,
                      "kind %d: a refused train_step changed something",
                      (int)kind);
        free(after);

        /* The same through the primitives: the forward and backward may
         * run (they change no parameter), the step is refused. */
        float out[4 * 2], grad[4 * 2];
        for (int i = 0; i < 8; i++)
            grad[i] = 0.125f;
        CK_OK(ibvi_net_forward(net, X, 4, 1, out));
        CK_OK(ibvi_net_backward(net, grad, 4, 2));
        free(before);
        before = save(net, opt, &s0);
        rc = ibvi_optimizer_step(opt);
        ck_assert_msg(rc == IBVI_ERR_STATE, "kind %d: step returned %d",
                      (int)kind, rc);
        ck_assert_msg(strncmp(ibvi_last_error(), "ibvi_optimizer_step", 19) ==
                          0, "%s", ibvi_last_error());
        ck_assert(ibvi_optimizer_step_count(opt) == IBVI__MAX_STEPS);
        after = save(net, opt, &s1);
        ck_assert_int_eq(s0, s1);
        ck_assert_msg(memcmp(before, after, (size_t)s0) == 0,
                      "kind %d: a refused step changed something", (int)kind);
        free(before);
        free(after);

        CK_OK(ibvi_optimizer_reset(opt));
        CK_OK(ibvi_train_step(net, opt, X, 4, 1, IBVI_LOSS_SOFTMAX_XENT,
                              LABELS, NULL, &loss));
        ck_assert(ibvi_optimizer_step_count(opt) == 1);
        ibvi_optimizer_free(opt);
        ibvi_net_free(net);
    }
}
END_TEST

int main(void)
{
    Suite *s = suite_create("steps");
    TCase *tc = tcase_create("limit");
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, test_step_count_limit);
    suite_add_tcase(s, tc);
    SRunner *r = srunner_create(s);
    srunner_run_all(r, CK_NORMAL);
    const int failed = srunner_ntests_failed(r);
    srunner_free(r);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
