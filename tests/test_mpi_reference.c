/*
 * libibvi tests - the single-process reference of a data-parallel run
 * (tests/test_mpi.sh): what `mpirun -np W mpi_train --no-shuffle` must
 * compute, done in one process through the public API. One network plays
 * every rank in turn: for each step and rank w, noise stream w at the
 * step's common position, forward, loss and backward on shard w's
 * minibatch, ibvi_net_get_grads; the gradients are summed over w in rank
 * order, scaled by 1/W as mpi_train scales them, and one
 * ibvi_optimizer_step_grads takes the step. The result is compared with the
 * parameters every rank of the MPI run dumped (--dump-params).
 *
 * usage: test_mpi_reference DATA MODEL WIDTH RANK SAMPLES TRAIN_LIMIT BATCH
 *                           STEPS LR SEED W DUMP_PREFIX
 *
 * SPDX-License-Identifier: MIT
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <ibvi/ibvi.h>

#include "dataset.h"
#include "models.h"

#define CHECK(call)                                                           \
    do {                                                                      \
        int status_ = (call);                                                 \
        if (status_ < 0) {                                                    \
            fprintf(stderr, "test_mpi_reference: %s: %s\n", #call,            \
                    ibvi_last_error());                                       \
            exit(1);                                                          \
        }                                                                     \
    } while (0)

int main(int argc, char **argv)
{
    if (argc != 13) {
        fprintf(stderr, "usage: test_mpi_reference DATA MODEL WIDTH RANK "
                        "SAMPLES TRAIN_LIMIT BATCH STEPS LR SEED W DUMP\n");
        return 2;
    }
    const char *data = argv[1];
    const int model = model_parse(argv[2]);
    const int32_t width = atoi(argv[3]), rank = atoi(argv[4]);
    const int32_t samples = atoi(argv[5]);
    const int64_t limit = atoll(argv[6]);
    const int32_t batch = atoi(argv[7]);
    const int64_t steps = atoll(argv[8]);
    const float lr = strtof(argv[9], NULL);
    const uint64_t seed = strtoull(argv[10], NULL, 10);
    const int W = atoi(argv[11]);
    const char *dump = argv[12];
    if (model < 0 || W < 1) {
        fprintf(stderr, "test_mpi_reference: bad arguments\n");
        return 2;
    }
    dataset d;
    char err[512];
    if (dataset_load(&d, data, "train", err, sizeof err) < 0) {
        fprintf(stderr, "test_mpi_reference: %s\n", err);
        return 1;
    }
    if (limit < d.count)
        d.count = limit;
    const int64_t shard = d.count / W;
    const int32_t hidden[2] = {width, width};

    ibvi_net *net;
    CHECK(model_create(&net, model, hidden, 2, d.rows, d.cols, d.classes,
                       rank));
    CHECK(ibvi_net_init(net, IBVI_PARAM_MUP, seed));
    ibvi_optimizer *opt;
    CHECK(ibvi_optimizer_create(&opt, net, IBVI_OPT_SGD, lr));
    CHECK(ibvi_optimizer_set_momentum(opt, 0.9f, 0));
    const int64_t P = ibvi_net_param_count(net);
    float *sum = malloc((size_t)P * sizeof *sum);
    float *g = malloc((size_t)P * sizeof *g);
    float *mpi = malloc((size_t)P * sizeof *mpi);
    float *mine = malloc((size_t)P * sizeof *mine);
    float *out = malloc((size_t)batch * samples * d.classes * sizeof *out);
    float *grad = malloc((size_t)batch * samples * d.classes * sizeof *grad);
    if (!sum || !g || !mpi || !mine || !out || !grad)
        return 1;
    const int64_t per_epoch = (shard + batch - 1) / batch;
    const int64_t total = steps < per_epoch ? steps : per_epoch;
    for (int64_t s = 0; s < total; s++) {
        const int64_t b = s * batch;
        const int64_t n = shard - b < batch ? shard - b : batch;
        CHECK(ibvi_optimizer_set_lr(
            opt, (float)(lr * 0.5 *
                         (1.0 + cos(3.14159265358979 * (double)s /
                                    (double)total)))));
        uint64_t position;
        CHECK(ibvi_net_rng_position(net, &position));
        memset(sum, 0, (size_t)P * sizeof *sum);
        for (int w = 0; w < W; w++) {
            const int64_t first = w * shard + b;
            float loss;
            CHECK(ibvi_net_set_noise_stream(net, (uint64_t)w));
            CHECK(ibvi_net_set_rng_position(net, position));
            CHECK(ibvi_net_forward(net, d.images + first * d.dim, n, samples,
                                   out));
            CHECK(ibvi_loss_softmax_xent(out, n * samples, d.classes,
                                         d.labels + first, n, &loss, grad));
            CHECK(ibvi_net_backward(net, grad, n * samples, d.classes));
            CHECK(ibvi_net_get_grads(net, g, P));
            for (int64_t i = 0; i < P; i++)
                sum[i] += g[i];
        }
        const float scale = 1.0f / (float)W;
        for (int64_t i = 0; i < P; i++)
            sum[i] *= scale;
        CHECK(ibvi_optimizer_step_grads(opt, sum, P));
    }
    CHECK(ibvi_net_get_params(net, mine, P));
    double worst = 0, largest = 0;
    int64_t differing = 0;
    for (int w = 0; w < W; w++) {
        char name[4096];
        snprintf(name, sizeof name, "%s.%d", dump, w);
        FILE *f = fopen(name, "rb");
        if (!f || fread(mpi, sizeof *mpi, (size_t)P, f) != (size_t)P) {
            fprintf(stderr, "test_mpi_reference: cannot read %lld floats "
                            "from %s\n", (long long)P, name);
            return 1;
        }
        fclose(f);
        for (int64_t i = 0; i < P; i++) {
            const double diff = fabs((double)mpi[i] - mine[i]);
            worst = diff > worst ? diff : worst;
            largest = fabs(mine[i]) > largest ? fabs(mine[i]) : largest;
            differing += mpi[i] != mine[i];
        }
    }
    /* A sum of W floats in another order differs by a few ulps per step;
     * with W = 2 the sums are the same (one rounding either way). */
    const double tol = 1e-5 * (largest > 1 ? largest : 1);
    printf("%s: %lld steps on %d shards, %lld parameters: max |mpi - "
           "reference| = %g (%lld of %lld values differ), tolerance %g\n",
           argv[2], (long long)total, W, (long long)P, worst,
           (long long)differing, (long long)(P * W), tol);
    free(sum);
    free(g);
    free(mpi);
    free(mine);
    free(out);
    free(grad);
    ibvi_optimizer_free(opt);
    ibvi_net_free(net);
    dataset_free(&d);
    return worst <= tol ? 0 : 1;
}
