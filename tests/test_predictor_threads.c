/*
 * libibvi tests - the predictor on several threads (issue 15): its own
 * element-wise work (the heads' accumulation and results, the finiteness
 * checks, the identity's preparation and bias rows, the sampled weights,
 * the fused bias and ReLU) is split across the network's threads by rows,
 * outputs or weight rows, never along a sum, and BLIS splits its GEMMs by
 * blocks of the output. So a predictor's results must be the same bits
 * with 1, 2 and 3 threads.
 *
 * The cases cover every path of lib/predictor.c (the low-rank identity of
 * a dense first layer and of a conv, materialised samples, the last layer
 * only, the mean network, an ensemble) and every head, with batch sizes
 * that leave a short last chunk and n = 1. The networks and batches are
 * large enough that the heads' rows are cut into two parts on two threads
 * (a part holds at least 2048 / (blocks x outputs) rows, see predictor.c's
 * HEAD_WORK; each case's comment says where), so a part boundary off by
 * one row changes the outputs. The thread count in effect is capped by the
 * CPUs: on two CPUs the 3-thread run uses two, on one CPU every run uses
 * one and the test checks determinism only (it says so on stderr).
 *
 * SPDX-License-Identifier: MIT
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"

/* Under ThreadSanitizer the test runs as in the normal build, with BLIS
 * on 2 threads too (it cannot do without: the network's thread count is
 * both BLIS's and the pool's). BLIS here is built with OpenMP, whose
 * synchronisation (libgomp) is not instrumented, so TSan would report
 * BLIS's own buffers as races (as tests/test_threads.c says): reports with
 * a BLIS or libgomp frame are suppressed, every other one still fails. */
#if defined(__SANITIZE_THREAD__)
const char *__tsan_default_suppressions(void);
const char *__tsan_default_suppressions(void)
{
    return "race:libblis.so\nrace:libgomp.so\n";
}
#endif

#define IN 64
#define MAX_MEMBERS 3

/* 64 -> 256 (rank first) -> ReLU -> 96 -> ReLU -> outputs (rank last).
 * The first layer is wide enough that its identity's rearrangement (256
 * outputs of 65 x 4 floats), its bias rows (1024 floats a row) and its K
 * = 2 samples (16640 x 5 floats) are cut in two on two threads. */
static ibvi_net *mlp(int32_t rank_first, int32_t rank_last, int32_t outputs,
                     uint64_t seed)
{
    ibvi_net *net = NULL;
    CK_OK(ibvi_net_create(&net, IN, NULL));
    CK_OK(ibvi_net_add_dense(net, 256, rank_first));
    CK_OK(ibvi_net_add_activation(net, IBVI_ACT_RELU));
    CK_OK(ibvi_net_add_dense(net, 96, 0));
    CK_OK(ibvi_net_add_activation(net, IBVI_ACT_RELU));
    CK_OK(ibvi_net_add_dense(net, outputs, rank_last));
    CK_OK(ibvi_net_init(net, IBVI_PARAM_MUP, seed));
    return net;
}

/* LeNet-like, small: (1, 12, 12) -> conv 6 5x5 (rank 2) -> ReLU -> max
 * pool 2 -> 32 -> ReLU -> 10 (rank 2). Its input is 144 floats. */
#define LENET_IN 144
static ibvi_net *lenet(uint64_t seed)
{
    ibvi_net *net = NULL;
    CK_OK(ibvi_net_create_image(&net, 1, 12, 12, NULL));
    CK_OK(ibvi_net_add_conv2d(net, 6, 5, 1, 0, 2));
    CK_OK(ibvi_net_add_activation(net, IBVI_ACT_RELU));
    CK_OK(ibvi_net_add_maxpool(net, 2, 2));
    CK_OK(ibvi_net_add_dense(net, 32, 0));
    CK_OK(ibvi_net_add_activation(net, IBVI_ACT_RELU));
    CK_OK(ibvi_net_add_dense(net, 10, 2));
    CK_OK(ibvi_net_init(net, IBVI_PARAM_MUP, seed));
    return net;
}

typedef enum { NET_FIRST_LAST, NET_LAST, NET_LENET } net_kind;

typedef struct tcase_spec {
    const char *name;
    net_kind kind;
    int32_t outputs, members, samples;
    int64_t n, batch; /* batch 0: the default (256) */
    int32_t head, mean_network;
    float temperature, noise_std;
} tcase_spec;

static const tcase_spec CASES[] = {
    /* K = 16 > R + 1: the first layer takes the identity; heads split
     * from 13 rows (16 blocks x 10 classes): 256 + 44 rows, both cut. */
    {"first+last K=16, identity", NET_FIRST_LAST, 10, 1, 16, 300, 0,
     IBVI_HEAD_SOFTMAX, 0, 1.0f, 0.0f},
    /* K = 2 < R + 1: materialised samples of the first layer. */
    {"first+last K=2, materialised", NET_FIRST_LAST, 10, 1, 2, 300, 0,
     IBVI_HEAD_SOFTMAX, 0, 1.0f, 0.0f},
    {"first+last K=16, batch 100", NET_FIRST_LAST, 10, 1, 16, 333, 100,
     IBVI_HEAD_SOFTMAX, 0, 1.0f, 0.0f},
    {"first+last K=16, n = 1", NET_FIRST_LAST, 10, 1, 16, 1, 0,
     IBVI_HEAD_SOFTMAX, 0, 1.0f, 0.0f},
    {"last only K=16", NET_LAST, 10, 1, 16, 300, 0, IBVI_HEAD_SOFTMAX, 0,
     1.0f, 0.0f},
    /* The conv's identity (K = 8 > R + 1 = 3); split from 26 rows. */
    {"lenet K=8", NET_LENET, 10, 1, 8, 77, 0, IBVI_HEAD_SOFTMAX, 0, 1.0f,
     0.0f},
    {"lenet K=8, n = 1", NET_LENET, 10, 1, 8, 1, 0, IBVI_HEAD_SOFTMAX, 0,
     1.0f, 0.0f},
    {"ensemble of 3, K=8", NET_FIRST_LAST, 10, 3, 8, 300, 0,
     IBVI_HEAD_SOFTMAX, 0, 1.0f, 0.0f},
    /* One block: split from 205 rows, so chunks of 600 and 401. */
    {"mean network", NET_FIRST_LAST, 10, 1, 8, 1001, 600, IBVI_HEAD_SOFTMAX,
     1, 1.0f, 0.0f},
    {"mean network, ensemble of 2", NET_FIRST_LAST, 10, 2, 8, 1001, 600,
     IBVI_HEAD_SOFTMAX, 1, 1.0f, 0.0f},
    {"temperature 0.6, K=16", NET_FIRST_LAST, 10, 1, 16, 300, 0,
     IBVI_HEAD_SOFTMAX, 0, 0.6f, 0.0f},
    /* One output, 8 blocks: split from 257 rows. */
    {"sigmoid K=8", NET_FIRST_LAST, 1, 1, 8, 1001, 600, IBVI_HEAD_SIGMOID, 0,
     1.0f, 0.0f},
    {"sigmoid K=8, temperature 2", NET_FIRST_LAST, 1, 2, 8, 1001, 600,
     IBVI_HEAD_SIGMOID, 0, 2.0f, 0.0f},
    /* 3 outputs, 8 blocks: split from 86 rows. */
    {"regression K=8", NET_FIRST_LAST, 3, 1, 8, 300, 0, IBVI_HEAD_REGRESSION,
     0, 1.0f, 0.3f},
    {"regression K=8, ensemble of 2", NET_LAST, 3, 2, 8, 300, 0,
     IBVI_HEAD_REGRESSION, 0, 1.0f, 0.3f},
    {"regression, n = 1", NET_FIRST_LAST, 3, 1, 8, 1, 0, IBVI_HEAD_REGRESSION,
     0, 1.0f, 0.3f},
    /* 4 outputs (2 means, 2 log-variances): split from 65 rows. */
    {"heteroscedastic K=8", NET_FIRST_LAST, 4, 1, 8, 300, 0,
     IBVI_HEAD_HETEROSCEDASTIC, 0, 1.0f, 0.0f},
    {"heteroscedastic K=8, ensemble of 2", NET_FIRST_LAST, 4, 2, 8, 333, 200,
     IBVI_HEAD_HETEROSCEDASTIC, 0, 1.0f, 0.0f},
};
#define NCASES (int)(sizeof CASES / sizeof CASES[0])

/* Every output a run writes, in one block: classification probs (n x
 * cols), the three entropies (n each); regression mean, var_epistemic,
 * var_aleatoric (n x D each) and the samples (K x n x D). */
typedef struct outputs {
    float *all;
    int64_t count;
    float *a, *b, *c, *d;
} outputs;

static outputs outputs_new(const tcase_spec *s, int64_t n, int32_t cols)
{
    const int regression = s->head == IBVI_HEAD_REGRESSION ||
                           s->head == IBVI_HEAD_HETEROSCEDASTIC;
    const int64_t K = s->mean_network ? 1 : s->samples;
    const int64_t sizes[4] = {
        n * cols, regression ? n * cols : n, regression ? n * cols : n,
        regression ? (int64_t)s->members * K * n * cols : n};
    outputs o;
    o.count = sizes[0] + sizes[1] + sizes[2] + sizes[3];
    o.all = malloc(sizeof(float) * (size_t)o.count);
    ck_assert_ptr_nonnull(o.all);
    o.a = o.all;
    o.b = o.a + sizes[0];
    o.c = o.b + sizes[1];
    o.d = o.c + sizes[2];
    return o;
}

/* Runs the predictor with every member on `threads` threads, after filling
 * the outputs with a NaN pattern (every value must be written). */
static int run(ibvi_predictor *pred, ibvi_net **nets, const tcase_spec *s,
               int32_t threads, const float *x, outputs *o)
{
    for (int32_t m = 0; m < s->members; m++)
        CK_OK(ibvi_net_set_threads(nets[m], threads));
    for (int64_t i = 0; i < o->count; i++)
        o->all[i] = NAN;
    if (s->head == IBVI_HEAD_REGRESSION ||
        s->head == IBVI_HEAD_HETEROSCEDASTIC)
        return ibvi_predictor_run_regression(pred, x, s->n, o->a, o->b, o->c,
                                             o->d);
    return ibvi_predictor_run(pred, x, s->n, o->a, o->b, o->c, o->d);
}

static float *inputs(int64_t n, int32_t dim, uint64_t seed)
{
    float *x = malloc(sizeof(float) * (size_t)(n * dim));
    ck_assert_ptr_nonnull(x);
    tu_rng rng;
    tu_rng_seed(&rng, seed);
    tu_fill_normal_f(&rng, x, n * dim, 1.0);
    return x;
}

typedef struct setup {
    ibvi_net *nets[MAX_MEMBERS];
    ibvi_predictor *pred;
    float *x;
    int32_t cols;
} setup;

static setup make(const tcase_spec *s, uint64_t seed)
{
    setup u;
    for (int32_t m = 0; m < s->members; m++) {
        const uint64_t net_seed = seed + 17 * (uint64_t)m;
        switch (s->kind) {
        case NET_FIRST_LAST:
            u.nets[m] = mlp(3, 2, s->outputs, net_seed);
            break;
        case NET_LAST:
            u.nets[m] = mlp(0, 3, s->outputs, net_seed);
            break;
        case NET_LENET:
            u.nets[m] = lenet(net_seed);
            break;
        }
    }
    CK_OK(ibvi_predictor_create_ensemble(&u.pred, u.nets, s->members,
                                         s->samples, seed + 5));
    if (s->batch)
        CK_OK(ibvi_predictor_set_batch_size(u.pred, s->batch));
    if (s->mean_network)
        CK_OK(ibvi_predictor_set_mean_network(u.pred, 1));
    if (s->head != IBVI_HEAD_SOFTMAX) {
        ibvi_head_options h;
        CK_OK(ibvi_head_options_init(&h, s->head));
        h.noise_std = s->noise_std;
        CK_OK(ibvi_predictor_set_head(u.pred, &h));
    }
    if (s->temperature != 1.0f)
        CK_OK(ibvi_predictor_set_temperature(u.pred, s->temperature));
    u.cols = ibvi_predictor_output_dim(u.pred);
    u.x = inputs(s->n, s->kind == NET_LENET ? LENET_IN : IN, seed + 9);
    return u;
}

static void release(const tcase_spec *s, setup *u)
{
    ibvi_predictor_free(u->pred);
    for (int32_t m = 0; m < s->members; m++)
        ibvi_net_free(u->nets[m]);
    free(u->x);
}

START_TEST(test_threads_bitwise_equal)
{
    const tcase_spec *s = &CASES[_i];
    setup u = make(s, 300 + 10 * (uint64_t)_i);
    outputs one = outputs_new(s, s->n, u.cols);
    outputs other = outputs_new(s, s->n, u.cols);
    CK_OK(run(u.pred, u.nets, s, 1, u.x, &one));
    for (int64_t i = 0; i < one.count; i++)
        ck_assert_msg(!isnan(one.all[i]), "%s: output %lld not written",
                      s->name, (long long)i);
    static const int32_t counts[] = {2, 3, 1};
    for (int t = 0; t < 3; t++) {
        CK_OK(run(u.pred, u.nets, s, counts[t], u.x, &other));
        if (t == 0 && ibvi_net_threads(u.nets[0]) < 2)
            fprintf(stderr, "%s: one CPU, every run uses one thread\n",
                    s->name);
        for (int64_t i = 0; i < one.count; i++)
            ck_assert_msg(memcmp(&one.all[i], &other.all[i],
                                 sizeof(float)) == 0,
                          "%s: output %lld = %.9g with 1 thread, %.9g with "
                          "%d", s->name, (long long)i, (double)one.all[i],
                          (double)other.all[i], (int)counts[t]);
    }
    free(one.all);
    free(other.all);
    release(s, &u);
}
END_TEST

/* A NaN in the last input, which only the second part of the finiteness
 * check of x reads on two threads, is still found. */
START_TEST(test_nan_in_last_input)
{
    const tcase_spec *s = &CASES[0];
    setup u = make(s, 77);
    outputs o = outputs_new(s, s->n, u.cols);
    for (int32_t threads = 1; threads <= 2; threads++) {
        u.x[s->n * IN - 1] = NAN;
        CK_STATUS(run(u.pred, u.nets, s, threads, u.x, &o),
                  IBVI_ERR_NONFINITE);
        u.x[s->n * IN - 1] = 0.5f;
        CK_OK(run(u.pred, u.nets, s, threads, u.x, &o));
    }
    free(o.all);
    release(s, &u);
}
END_TEST

/* Logits that overflow in the last rows of a chunk only (the second part
 * of the head's rows on two threads) are reported, for that chunk. */
START_TEST(test_overflow_in_last_rows)
{
    static const int heads[] = {IBVI_HEAD_SOFTMAX, IBVI_HEAD_HETEROSCEDASTIC};
    for (int h = 0; h < 2; h++) {
        const tcase_spec *s = h == 0 ? &CASES[0] : &CASES[16];
        ck_assert_int_eq(s->head, heads[h]);
        setup u = make(s, 91);
        outputs o = outputs_new(s, s->n, u.cols);
        /* The last layer's mean times 1e20 (logits ~1e20 for inputs ~1),
         * and rows 250..255, the end of the first chunk of 256, times
         * 1e30: their logits overflow (a NaN in a hidden layer would not
         * do: the ReLU maps it to 0). */
        ibvi_layer *last = tu_layer(u.nets[0], 4);
        int64_t P;
        float *mean = tu_get_mean(last, &P);
        for (int64_t i = 0; i < P; i++)
            mean[i] *= 1e20f;
        CK_OK(ibvi_layer_set_mean(last, mean, P));
        free(mean);
        for (int64_t row = 250; row < 256; row++)
            for (int32_t j = 0; j < IN; j++)
                u.x[row * IN + j] *= 1e30f;
        for (int32_t threads = 1; threads <= 2; threads++) {
            CK_STATUS(run(u.pred, u.nets, s, threads, u.x, &o),
                      IBVI_ERR_NONFINITE);
            ck_assert_msg(strstr(ibvi_last_error(), "inputs 0..255") != NULL,
                          "%s", ibvi_last_error());
        }
        free(o.all);
        release(s, &u);
    }
}
END_TEST

int main(void)
{
    Suite *s = suite_create("predictor_threads");
    TCase *tc = tu_tcase("bitwise");
    tcase_add_loop_test(tc, test_threads_bitwise_equal, 0, NCASES);
    suite_add_tcase(s, tc);
    tc = tu_tcase("nonfinite");
    tcase_add_test(tc, test_nan_in_last_input);
    tcase_add_test(tc, test_overflow_in_last_rows);
    suite_add_tcase(s, tc);
    return tu_run_suite(s);
}
