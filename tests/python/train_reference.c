/*
 * train_reference - the C side of tests/python/test_python_match_c.py.
 *
 * Trains two small networks with fixed seeds and data (SGD + Nesterov
 * through ibvi_train_step; Adam through forward / loss / backward / step),
 * then predicts, computes metrics and fits a temperature, and prints every
 * result as raw bit patterns (floats as 8 hex digits, doubles as 16), one
 * "key value value ..." line each. The Python test does the same through
 * the ibvi package and compares the lines bit for bit.
 *
 * SPDX-License-Identifier: MIT
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <ibvi/ibvi.h>

#define N 32
#define IN 6
#define CLASSES 4
#define OUT_B 3

static void check(int status, const char *what)
{
    if (status < 0) {
        fprintf(stderr, "train_reference: %s: %s (%s)\n", what,
                ibvi_status_string(status), ibvi_last_error());
        exit(1);
    }
}
#define CHECK(call) check((call), #call)

static void print_floats(const char *key, const float *v, int64_t n)
{
    printf("%s", key);
    for (int64_t i = 0; i < n; i++) {
        uint32_t bits;
        memcpy(&bits, &v[i], sizeof bits);
        printf(" %08" PRIx32, bits);
    }
    printf("\n");
}

static void print_doubles(const char *key, const double *v, int64_t n)
{
    printf("%s", key);
    for (int64_t i = 0; i < n; i++) {
        uint64_t bits;
        memcpy(&bits, &v[i], sizeof bits);
        printf(" %016" PRIx64, bits);
    }
    printf("\n");
}

static void print_ints(const char *key, const int64_t *v, int64_t n)
{
    printf("%s", key);
    for (int64_t i = 0; i < n; i++)
        printf(" %" PRId64, v[i]);
    printf("\n");
}

/* Every layer's mean and (for variational layers) factor. */
static void print_params(const char *prefix, ibvi_net *net)
{
    for (int32_t i = 0; i < ibvi_net_layer_count(net); i++) {
        ibvi_layer *l;
        CHECK(ibvi_net_layer(net, i, &l));
        if (ibvi_layer_get_kind(l) != IBVI_LAYER_DENSE)
            continue;
        int32_t rank;
        CHECK(ibvi_layer_shape(l, NULL, NULL, &rank));
        const int64_t p = ibvi_layer_param_count(l);
        float *buf = malloc((size_t)(p * (rank > 0 ? rank : 1)) * sizeof *buf);
        char key[64];
        CHECK(ibvi_layer_get_mean(l, buf, p));
        snprintf(key, sizeof key, "%s.layer%d.mean", prefix, i);
        print_floats(key, buf, p);
        if (rank > 0) {
            CHECK(ibvi_layer_get_factor(l, buf, p * rank));
            snprintf(key, sizeof key, "%s.layer%d.factor", prefix, i);
            print_floats(key, buf, p * rank);
        }
        free(buf);
    }
}

int main(void)
{
    /* Data: exact small rationals, generated identically by the Python test. */
    static float x[N * IN], t[N * OUT_B];
    static int32_t labels[N];
    for (int i = 0; i < N; i++) {
        for (int j = 0; j < IN; j++)
            x[i * IN + j] = (float)(((i * 131 + j * 71) % 97) - 48) / 32.0f;
        for (int k = 0; k < OUT_B; k++)
            t[i * OUT_B + k] = (float)(((i * 17 + k * 5) % 23) - 11) / 8.0f;
        labels[i] = (i * 7 + 3) % CLASSES;
    }

    /* A: 6-16(R3)-tanh-12-relu-4(R2), muP, SGD + Nesterov via train_step. */
    ibvi_net *a;
    CHECK(ibvi_net_create(&a, IN, NULL));
    CHECK(ibvi_net_add_dense(a, 16, 3));
    CHECK(ibvi_net_add_activation(a, IBVI_ACT_TANH));
    CHECK(ibvi_net_add_dense(a, 12, 0));
    CHECK(ibvi_net_add_activation(a, IBVI_ACT_RELU));
    CHECK(ibvi_net_add_dense(a, CLASSES, 2));
    CHECK(ibvi_net_init(a, IBVI_PARAM_MUP, 1234));
    ibvi_optimizer *opt_a;
    CHECK(ibvi_optimizer_create(&opt_a, a, IBVI_OPT_SGD, 0.1f));
    CHECK(ibvi_optimizer_set_momentum(opt_a, 0.9f, 1));
    float losses[40];
    for (int step = 0; step < 25; step++) {
        const int first = (step * 8) % N;
        CHECK(ibvi_optimizer_set_lr(opt_a, 0.1f / (float)(1 + step % 3)));
        CHECK(ibvi_train_step(a, opt_a, x + first * IN, 8, 2,
                              IBVI_LOSS_SOFTMAX_XENT, labels + first, NULL,
                              &losses[step]));
    }
    print_floats("a.losses", losses, 25);
    print_params("a", a);
    uint64_t position;
    CHECK(ibvi_net_rng_position(a, &position));
    int64_t counts[2] = {(int64_t)position, ibvi_optimizer_step_count(opt_a)};
    print_ints("a.position_steps", counts, 2);

    /* B: 6-8(R2)-silu-3(R1), SP, Adam via the primitives, 3 samples. */
    ibvi_net *b;
    CHECK(ibvi_net_create(&b, IN, NULL));
    CHECK(ibvi_net_add_dense(b, 8, 2));
    CHECK(ibvi_net_add_activation(b, IBVI_ACT_SILU));
    CHECK(ibvi_net_add_dense(b, OUT_B, 1));
    CHECK(ibvi_net_init(b, IBVI_PARAM_SP, 99));
    ibvi_optimizer *opt_b;
    CHECK(ibvi_optimizer_create(&opt_b, b, IBVI_OPT_ADAM, 0.01f));
    CHECK(ibvi_optimizer_set_adam(opt_b, 0.8f, 0.99f, 1e-7f));
    static float out_b[3 * N * OUT_B], grad_b[3 * N * OUT_B];
    float noise[3 * 3];
    for (int step = 0; step < 10; step++) {
        CHECK(ibvi_net_forward(b, x, N, 3, out_b));
        /* The noise of this forward pass (kept for the output below). */
        CHECK(ibvi_net_last_noise(b, noise, 3 * ibvi_net_noise_size(b)));
        CHECK(ibvi_loss_squared(out_b, 3 * N, OUT_B, t, N, &losses[step], grad_b));
        CHECK(ibvi_net_backward(b, grad_b, 3 * N, OUT_B));
        CHECK(ibvi_optimizer_step(opt_b));
    }
    print_floats("b.losses", losses, 10);
    print_floats("b.out", out_b, 3 * N * OUT_B);
    print_floats("b.noise", noise, 3 * ibvi_net_noise_size(b));
    {
        ibvi_layer *l;
        float g[(IN * 8 + 8) * 2];
        CHECK(ibvi_net_layer(b, 0, &l));
        CHECK(ibvi_layer_get_grad_factor(l, g, (IN * 8 + 8) * 2));
        print_floats("b.layer0.grad_factor", g, (IN * 8 + 8) * 2);
    }
    print_params("b", b);

    /* C: prediction, metrics, calibration on network A. */
    ibvi_predictor *pred;
    CHECK(ibvi_predictor_create(&pred, a, 5, 7));
    CHECK(ibvi_predictor_set_batch_size(pred, 10));
    static float probs[N * CLASSES], pe[N], ee[N], mi[N];
    CHECK(ibvi_predictor_run(pred, x, N, probs, pe, ee, mi));
    print_floats("c.probs", probs, N * CLASSES);
    print_floats("c.pe", pe, N);
    print_floats("c.ee", ee, N);
    print_floats("c.mi", mi, N);
    float pnoise[5 * 5];
    CHECK(ibvi_predictor_noise(pred, pnoise, 5 * ibvi_net_noise_size(a)));
    print_floats("c.noise", pnoise, 5 * ibvi_net_noise_size(a));

    ibvi_metrics *m;
    CHECK(ibvi_metrics_create(&m, CLASSES, NULL));
    CHECK(ibvi_metrics_add(m, probs, N, labels));
    double scores[5];
    CHECK(ibvi_metrics_accuracy(m, &scores[0]));
    CHECK(ibvi_metrics_nll(m, &scores[1]));
    CHECK(ibvi_metrics_brier(m, &scores[2]));
    CHECK(ibvi_metrics_ece(m, &scores[3]));
    CHECK(ibvi_metrics_mce(m, &scores[4]));
    print_doubles("c.metrics", scores, 5);
    int64_t bin_counts[IBVI_METRICS_BINS];
    double bin_acc[IBVI_METRICS_BINS], bin_conf[IBVI_METRICS_BINS];
    CHECK(ibvi_metrics_bins(m, bin_counts, bin_acc, bin_conf, IBVI_METRICS_BINS));
    print_ints("c.bin_counts", bin_counts, IBVI_METRICS_BINS);
    print_doubles("c.bin_conf", bin_conf, IBVI_METRICS_BINS);
    double auroc;
    CHECK(ibvi_auroc(&auroc, pe, N / 2, pe + N / 2, N / 2));
    print_doubles("c.auroc", &auroc, 1);

    CHECK(ibvi_predictor_set_mean_network(pred, 1));
    CHECK(ibvi_predictor_set_temperature(pred, 1.5f));
    CHECK(ibvi_predictor_run(pred, x, N, probs, NULL, NULL, NULL));
    print_floats("c.mean_probs_t15", probs, N * CLASSES);

    static float logits[N * CLASSES];
    CHECK(ibvi_net_forward_mean(a, x, N, logits));
    float temperature;
    CHECK(ibvi_temperature_fit(&temperature, logits, N, CLASSES, labels));
    print_floats("c.temperature", &temperature, 1);
    CHECK(ibvi_temperature_apply(probs, logits, N, CLASSES, temperature));
    print_floats("c.calibrated", probs, N * CLASSES);
    float ent[N];
    CHECK(ibvi_entropy(ent, probs, N, CLASSES));
    print_floats("c.entropy", ent, N);

    int64_t size;
    CHECK(ibvi_net_save_size(a, opt_a, &size));
    uint8_t *bytes = malloc((size_t)size);
    CHECK(ibvi_net_save_buffer(a, opt_a, bytes, size));
    uint32_t crc;
    memcpy(&crc, bytes + size - 4, sizeof crc);
    int64_t io[2] = {size, (int64_t)crc};
    print_ints("c.file_size_crc", io, 2);
    free(bytes);

    ibvi_metrics_free(m);
    ibvi_predictor_free(pred);
    ibvi_optimizer_free(opt_b);
    ibvi_net_free(b);
    ibvi_optimizer_free(opt_a);
    ibvi_net_free(a);
    return 0;
}
