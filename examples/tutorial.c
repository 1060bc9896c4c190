/*
 * tutorial - the program of docs/tutorial.md: an IBVI classifier on the
 * "two moons" problem, trained by a loop written with libibvi's primitives
 * (forward, loss, backward, optimizer step, learning-rate schedule), then
 * predictions with uncertainty near and far from the data, metrics, and a
 * save/load round trip.
 *
 * Build: ninja -C build; run: ./build/examples/tutorial [MODEL_FILE]
 * (the trained model is written to MODEL_FILE, default tutorial.ibvi).
 *
 * SPDX-License-Identifier: MIT
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <ibvi/ibvi.h>

/* ---- 1. Error handling ----------------------------------------------------
 * Every fallible libibvi call returns IBVI_OK (0) or a negative status; the
 * thread's last error message says what went wrong. */
#define CHECK(call)                                                        \
    do {                                                                   \
        int status_ = (call);                                              \
        if (status_ < 0) {                                                 \
            fprintf(stderr, "%s failed: %s (%s)\n", #call,                 \
                    ibvi_status_string(status_), ibvi_last_error());       \
            exit(1);                                                       \
        }                                                                  \
    } while (0)

static void *xmalloc(size_t bytes)
{
    void *p = malloc(bytes);
    if (!p) {
        fprintf(stderr, "out of memory\n");
        exit(1);
    }
    return p;
}

/* ---- 2. Data: two interleaved half-moons, from a seeded generator -------- */

#define N_TRAIN 1024
#define N_TEST 512
#define N_FAR 512
#define CLASSES 2

static uint64_t rng_state = 2024;

static double uniform(void) /* splitmix64 -> [0, 1) */
{
    uint64_t z = (rng_state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return (double)((z ^ (z >> 31)) >> 11) * 0x1.0p-53;
}

static double normal(void) /* Box-Muller */
{
    double u = uniform(), v = uniform();
    return sqrt(-2.0 * log(1.0 - u)) * cos(6.283185307179586 * v);
}

/* n points, half of each class, noise 0.1, centred on the origin: the data
 * lies within about 1.5 of it. x is n x 2, row-major. */
static void make_moons(float *x, int32_t *y, int n)
{
    for (int i = 0; i < n; i++) {
        double t = 3.141592653589793 * uniform();
        int c = i % 2;
        double px = c ? 1.0 - cos(t) : cos(t);
        double py = c ? 0.5 - sin(t) : sin(t);
        x[2 * i] = (float)(px - 0.5 + 0.1 * normal());
        x[2 * i + 1] = (float)(py - 0.25 + 0.1 * normal());
        y[i] = c;
    }
}

/* n points evenly spaced on a circle of radius r: no training data there. */
static void make_ring(float *x, int n, double r)
{
    for (int i = 0; i < n; i++) {
        double a = 6.283185307179586 * i / n;
        x[2 * i] = (float)(r * cos(a));
        x[2 * i + 1] = (float)(r * sin(a));
    }
}

/* ---- 3. Measuring uncertainty, near and far from the data ---------------- */

static int compare_floats(const void *a, const void *b)
{
    float u = *(const float *)a, v = *(const float *)b;
    return (u > v) - (u < v);
}

/* Runs the predictor on n points and prints one line: the means of the
 * three uncertainty measures, the median mutual information and the share
 * of points whose mutual information exceeds 0.01 nats. The mutual
 * information of every point is left in mi (n floats). */
static void report_region(ibvi_predictor *pred, const char *name,
                          const float *x, int n, float *mi)
{
    float *probs = xmalloc(sizeof(float) * n * CLASSES);
    float *pe = xmalloc(sizeof(float) * n), *ee = xmalloc(sizeof(float) * n);
    float *sorted = xmalloc(sizeof(float) * n);
    CHECK(ibvi_predictor_run(pred, x, n, probs, pe, ee, mi));
    double spe = 0, see = 0, smi = 0;
    int above = 0;
    for (int i = 0; i < n; i++) {
        spe += pe[i];
        see += ee[i];
        smi += mi[i];
        above += mi[i] > 0.01f;
        sorted[i] = mi[i];
    }
    qsort(sorted, (size_t)n, sizeof(float), compare_floats);
    printf("%-16s %13.4f %13.4f %9.4f %9.1e %8.1f%%\n", name, spe / n, see / n,
           smi / n, sorted[n / 2], 100.0 * above / n);
    free(probs);
    free(pe);
    free(ee);
    free(sorted);
}

static void report_uncertainty(ibvi_predictor *pred, const char *when,
                               const float *x_test, const float *x_ring3,
                               const float *x_ring6, float *mi_test,
                               float *mi_ring6)
{
    float *mi_ring3 = xmalloc(sizeof(float) * N_FAR);
    printf("\n%s: uncertainty in nats, K = %d\n", when,
           ibvi_predictor_samples(pred));
    printf("region           pred. entropy  exp. entropy   MI mean MI median"
           " MI > 0.01\n");
    report_region(pred, "test set (near)", x_test, N_TEST, mi_test);
    report_region(pred, "ring r = 3 (far)", x_ring3, N_FAR, mi_ring3);
    report_region(pred, "ring r = 6 (far)", x_ring6, N_FAR, mi_ring6);
    free(mi_ring3);
}

/* The logit margin f1 - f0 of n points under 64 weight samples drawn with
 * ibvi_net_forward: prints its size |mean over the samples| and its spread
 * (standard deviation over the samples), each averaged over the points.
 * The output is sample-major: row m * n + i holds point i under sample m. */
static void report_margin(ibvi_net *net, const char *name, const float *x,
                          int n)
{
    const int32_t S = 64;
    float *out = xmalloc(sizeof(float) * S * n * CLASSES);
    CHECK(ibvi_net_forward(net, x, n, S, out));
    double size = 0, spread = 0;
    for (int i = 0; i < n; i++) {
        double sum = 0, sum2 = 0;
        for (int m = 0; m < S; m++) {
            const float *f = out + ((size_t)m * n + i) * CLASSES;
            double d = (double)f[1] - f[0];
            sum += d;
            sum2 += d * d;
        }
        double mean = sum / S;
        size += fabs(mean);
        spread += sqrt(fmax(sum2 / S - mean * mean, 0.0));
    }
    printf("%-16s %9.2f %9.2f\n", name, size / n, spread / n);
    free(out);
}

static void report_margins(ibvi_net *net, const float *x_test,
                           const float *x_ring3, const float *x_ring6)
{
    printf("logit margin f1 - f0 over 64 samples: |mean|, spread\n");
    report_margin(net, "test set (near)", x_test, N_TEST);
    report_margin(net, "ring r = 3 (far)", x_ring3, N_FAR);
    report_margin(net, "ring r = 6 (far)", x_ring6, N_FAR);
}

int main(int argc, char **argv)
{
    const char *model_path = argc > 1 ? argv[1] : "tutorial.ibvi";
    printf("libibvi %s\n", ibvi_version_string());

    float *x_train = xmalloc(sizeof(float) * N_TRAIN * 2);
    int32_t *y_train = xmalloc(sizeof(int32_t) * N_TRAIN);
    float *x_test = xmalloc(sizeof(float) * N_TEST * 2);
    int32_t *y_test = xmalloc(sizeof(int32_t) * N_TEST);
    float *x_ring3 = xmalloc(sizeof(float) * N_FAR * 2);
    float *x_ring6 = xmalloc(sizeof(float) * N_FAR * 2);
    make_moons(x_train, y_train, N_TRAIN);
    make_moons(x_test, y_test, N_TEST);
    make_ring(x_ring3, N_FAR, 3.0);
    make_ring(x_ring6, N_FAR, 6.0);

    /* ---- 4. The network: 2-64-64-2, Gaussian first and last layers ------
     * rank 4 on the first and last dense layers (4 directions of weight
     * uncertainty each), the hidden layer deterministic (rank 0), muP. */
    const int32_t width = 64, rank = 4;
    ibvi_net *net;
    CHECK(ibvi_net_create(&net, 2, NULL));
    CHECK(ibvi_net_add_dense(net, width, rank));
    CHECK(ibvi_net_add_activation(net, IBVI_ACT_RELU));
    CHECK(ibvi_net_add_dense(net, width, 0));
    CHECK(ibvi_net_add_activation(net, IBVI_ACT_RELU));
    CHECK(ibvi_net_add_dense(net, CLASSES, rank));
    CHECK(ibvi_net_init(net, IBVI_PARAM_MUP, 1));
    printf("network: %d layers, %lld trainable floats, %d noise values per "
           "weight sample\n", ibvi_net_layer_count(net),
           (long long)ibvi_net_param_count(net), ibvi_net_noise_size(net));

    /* ---- 5. A predictor, and the prior's uncertainty ----------------------
     * K = 32 weight samples, drawn once with seed 7. The predictor reads the
     * network's current parameters at every run, so the same predictor
     * measures the prior now and the trained network later. */
    const int32_t K = 32;
    ibvi_predictor *pred;
    CHECK(ibvi_predictor_create(&pred, net, K, 7));
    float *mi_test = xmalloc(sizeof(float) * N_TEST);
    float *mi_ring6 = xmalloc(sizeof(float) * N_FAR);
    report_uncertainty(pred, "before training (the prior)", x_test, x_ring3,
                       x_ring6, mi_test, mi_ring6);
    report_margins(net, x_test, x_ring3, x_ring6);

    /* ---- 6. The optimizer: SGD with momentum 0.9 ---------------------- */
    const float base_lr = 0.05f;
    ibvi_optimizer *opt;
    CHECK(ibvi_optimizer_create(&opt, net, IBVI_OPT_SGD, base_lr));
    CHECK(ibvi_optimizer_set_momentum(opt, 0.9f, 0));

    /* ---- 7. The training loop, with the primitives ------------------------
     * Per minibatch: forward with M weight samples (M = 1, the paper's
     * recipe), the softmax cross-entropy over the M x batch rows and its
     * gradient, backward, one optimizer step. The learning rate follows a
     * cosine schedule from base_lr to 0. */
    const int32_t batch = 64, samples = 1, epochs = 200;
    const int64_t total_steps = (int64_t)epochs * (N_TRAIN / batch);
    float *logits = xmalloc(sizeof(float) * samples * batch * CLASSES);
    float *grad = xmalloc(sizeof(float) * samples * batch * CLASSES);
    int *order = xmalloc(sizeof(int) * N_TRAIN);
    float *xb = xmalloc(sizeof(float) * batch * 2);
    int32_t *yb = xmalloc(sizeof(int32_t) * batch);
    for (int i = 0; i < N_TRAIN; i++)
        order[i] = i;
    CHECK(ibvi_net_reserve(net, batch, samples)); /* no allocations later */

    printf("\n");
    int64_t step = 0;
    for (int epoch = 1; epoch <= epochs; epoch++) {
        for (int i = N_TRAIN - 1; i > 0; i--) { /* shuffle */
            int j = (int)(uniform() * (i + 1)), t = order[i];
            order[i] = order[j];
            order[j] = t;
        }
        double loss_sum = 0;
        for (int b = 0; b + batch <= N_TRAIN; b += batch) {
            for (int i = 0; i < batch; i++) {
                xb[2 * i] = x_train[2 * order[b + i]];
                xb[2 * i + 1] = x_train[2 * order[b + i] + 1];
                yb[i] = y_train[order[b + i]];
            }
            double progress = (double)step / (double)total_steps;
            float lr = (float)(base_lr * 0.5 *
                               (1.0 + cos(3.141592653589793 * progress)));
            CHECK(ibvi_optimizer_set_lr(opt, lr));

            float loss;
            CHECK(ibvi_net_forward(net, xb, batch, samples, logits));
            CHECK(ibvi_loss_softmax_xent(logits, (int64_t)samples * batch,
                                         CLASSES, yb, batch, &loss, grad));
            CHECK(ibvi_net_backward(net, grad, (int64_t)samples * batch,
                                    CLASSES));
            CHECK(ibvi_optimizer_step(opt));
            loss_sum += loss;
            step++;
        }
        if (epoch == 1 || epoch % 40 == 0) {
            float lr;
            CHECK(ibvi_optimizer_get_lr(opt, &lr));
            printf("epoch %3d  mean expected loss %.4f  lr %.4f\n", epoch,
                   loss_sum / (N_TRAIN / batch), lr);
        }
    }

    /* ---- 8. Uncertainty after training, near and far from the data --- */
    report_uncertainty(pred, "after training", x_test, x_ring3, x_ring6,
                       mi_test, mi_ring6);
    /* How well does mutual information tell ring points from test points?
     * 1 = every ring point scores higher, 0.5 = no better than chance. */
    double auroc;
    CHECK(ibvi_auroc(&auroc, mi_test, N_TEST, mi_ring6, N_FAR));
    printf("AUROC, ring r = 6 vs test set, scored by mutual information: "
           "%.4f\n", auroc);
    report_margins(net, x_test, x_ring3, x_ring6);

    /* ---- 9. Metrics on the test set ------------------------------------ */
    float *probs = xmalloc(sizeof(float) * N_TEST * CLASSES);
    ibvi_metrics *metrics;
    CHECK(ibvi_metrics_create(&metrics, CLASSES, NULL));
    CHECK(ibvi_predictor_run(pred, x_test, N_TEST, probs, NULL, NULL, NULL));
    CHECK(ibvi_metrics_add(metrics, probs, N_TEST, y_test));
    double acc, nll, ece, brier;
    CHECK(ibvi_metrics_accuracy(metrics, &acc));
    CHECK(ibvi_metrics_nll(metrics, &nll));
    CHECK(ibvi_metrics_ece(metrics, &ece));
    CHECK(ibvi_metrics_brier(metrics, &brier));
    printf("\ntest set: accuracy %.2f%%  NLL %.4f nats  ECE %.2f%%  "
           "Brier %.4f\n", 100 * acc, nll, 100 * ece, brier);

    /* ---- 10. Save, load back, and check the copy predicts the same ----- */
    CHECK(ibvi_net_save(net, opt, model_path));
    ibvi_net *loaded;
    ibvi_optimizer *loaded_opt;
    CHECK(ibvi_net_load(&loaded, &loaded_opt, model_path, NULL));
    ibvi_predictor *pred2;
    CHECK(ibvi_predictor_create(&pred2, loaded, K, 7)); /* same K, same seed */
    float *probs2 = xmalloc(sizeof(float) * N_TEST * CLASSES);
    CHECK(ibvi_predictor_run(pred2, x_test, N_TEST, probs2, NULL, NULL, NULL));
    int64_t steps_done = ibvi_optimizer_step_count(loaded_opt);
    if (steps_done < 0)
        CHECK((int)steps_done);
    printf("saved to %s and loaded back: optimizer at step %lld, "
           "predictions %s\n", model_path, (long long)steps_done,
           memcmp(probs, probs2, sizeof(float) * N_TEST * CLASSES) == 0
               ? "identical bit for bit" : "DIFFERENT");

    /* ---- 11. Clean up: predictors and optimizers before networks ----- */
    ibvi_predictor_free(pred2);
    ibvi_predictor_free(pred);
    ibvi_optimizer_free(loaded_opt);
    ibvi_optimizer_free(opt);
    ibvi_net_free(loaded);
    ibvi_net_free(net);
    ibvi_metrics_free(metrics);
    free(x_train); free(y_train); free(x_test); free(y_test);
    free(x_ring3); free(x_ring6); free(mi_test); free(mi_ring6);
    free(logits); free(grad); free(order); free(xb); free(yb);
    free(probs); free(probs2);
    return 0;
}
