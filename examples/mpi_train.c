/*
 * mpi_train - data-parallel training of the MNIST models on MPI, a host of
 * libibvi's data-parallel interface (include/ibvi/distributed.h,
 * docs/distributed.md).
 *
 * Rank 0 builds and initialises the network and broadcasts its parameters;
 * every rank trains on its own shard of the training set (equal shards of
 * count / W images) and draws its own weight samples (noise stream = rank).
 * Each step: forward, loss and backward on the rank's minibatch, then ONE
 * MPI_Allreduce of one buffer (all gradients, the minibatch loss and a
 * status flag), divided by W, and the same optimizer step on every rank
 * (ibvi_optimizer_step_grads), so every rank holds the same parameters. A
 * rank that fails (bad input in its shard) raises the flag in the same
 * allreduce: every rank then stops after that step with the message, and
 * the job exits with status 1 instead of hanging. Rank 0 evaluates the
 * network (the table and JSON of mnist_train) and saves it.
 *
 *   mpirun -np 2 mpi_train --data data/fashion [options]
 *
 * Run with --help for the options.
 *
 * SPDX-License-Identifier: MIT
 */
#define _POSIX_C_SOURCE 200809L

#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <mpi.h>

#include <ibvi/ibvi.h>
#include <ibvi/io.h>

#include "corrupt.h"
#include "dataset.h"
#include "host.h"
#include "evaluate.h"
#include "models.h"
#include "report.h"

#define MAX_HIDDEN 8

static int rank_id, ranks;

/* A failure that only this rank sees: no collective can finish any more,
 * so the message goes out and MPI_Abort ends every rank. */
static void die(const char *what, int status)
{
    fprintf(stderr, "mpi_train: rank %d: %s: %s (%s)\n", rank_id, what,
            ibvi_status_string(status), ibvi_last_error());
    MPI_Abort(MPI_COMM_WORLD, 1);
    exit(1);
}

#define CHECK(call)                         \
    do {                                    \
        int status_ = (call);               \
        if (status_ < 0)                    \
            die(#call, status_);            \
    } while (0)

static void *xmalloc(size_t bytes)
{
    void *p = malloc(bytes ? bytes : 1);
    if (!p)
        die("malloc", IBVI_ERR_NOMEM);
    return p;
}

typedef struct config {
    int model;
    const char *data_dir, *ood_dir, *json_path, *save_path, *dump_path;
    int32_t hidden[MAX_HIDDEN];
    int hidden_count;
    int32_t rank;
    int32_t parameterization;
    int epochs;
    int64_t max_steps;      /* 0: all steps of the epochs */
    float lr, momentum;
    int32_t batch;          /* per rank */
    int32_t train_samples;  /* M per rank */
    int32_t test_samples;   /* K */
    uint64_t seed;
    int32_t threads;
    int64_t train_limit, test_limit;
    int corruptions, shuffle, check_sync;
    int poison_rank;        /* -1: none */
    int sizes;              /* print the exchange's sizes and exit */
    int factored;           /* --exchange factored */
} config;

static void usage(FILE *out)
{
    fprintf(out,
        "usage: mpirun -np W mpi_train --data DIR [options]\n"
        "  --data DIR          training/test IDX files (e.g. data/fashion)\n"
        "  --ood DIR           out-of-distribution test set\n"
        "  --model NAME        mlp (default), lenet5 or resnet\n"
        "  --width LIST        hidden widths of mlp (default 256,256)\n"
        "  --rank R            covariance rank of first and last layer (10)\n"
        "  --param mup|sp      parameterization (default mup)\n"
        "  --epochs N          epochs (default 10)\n"
        "  --steps N           stop after N steps (default: all epochs)\n"
        "  --lr X              base learning rate (default 0.02), cosine decay\n"
        "  --momentum X        SGD momentum (default 0.9)\n"
        "  --batch N           minibatch per rank (default 128; a step sees\n"
        "                      W x N images)\n"
        "  --train-samples M   weight samples per rank and step (default 1)\n"
        "  --test-samples K    weight samples at test time (default 32)\n"
        "  --seed N            seed of everything (default 1)\n"
        "  --threads N         BLIS threads per rank (default 1)\n"
        "  --train-limit N     use only the first N training images\n"
        "  --test-limit N      evaluate only the first N test (and OOD) images\n"
        "  --no-shuffle        each shard in file order every epoch\n"
        "  --no-corruptions    skip the corrupted test sets\n"
        "  --json FILE         rank 0 writes the results as JSON\n"
        "  --save FILE         rank 0 saves the trained network\n"
        "  --check-sync        compare a checksum of the parameters across\n"
        "                      ranks after every step (a second collective)\n"
        "  --dump-params FILE  every rank writes its final parameters\n"
        "                      (ibvi_net_get_params, raw floats) to FILE.<rank>\n"
        "  --poison-rank R     put a NaN into rank R's first minibatch (to\n"
        "                      test the failure path)\n"
        "  --exchange dense|factored  the gradients as one allreduce of the\n"
        "                      flat gradients (dense, default) or as a small\n"
        "                      allreduce (loss, status) and an allgather of\n"
        "                      the factored layout (G and Z of the variational\n"
        "                      layers, docs/distributed.md)\n"
        "  --sizes             print the floats a step exchanges for --model,\n"
        "                      --rank and --train-samples on 28 x 28 images,\n"
        "                      dense and factored (docs/distributed.md), time\n"
        "                      both exchanges when run on 2 or more ranks, and\n"
        "                      exit (needs no --data)\n");
}

static int parse_widths(config *c, const char *text)
{
    const int count = host_parse_widths(text, c->hidden, MAX_HIDDEN, 1000000);
    c->hidden_count = count > 0 ? count : 0;
    return count > 0 ? 0 : -1;
}

/* 0, or 2 after printing why (rank 0 only). */
static int parse_options(config *c, int argc, char **argv)
{
    *c = (config){.rank = 10, .parameterization = IBVI_PARAM_MUP,
                  .epochs = 10, .lr = 0.02f, .momentum = 0.9f, .batch = 128,
                  .train_samples = 1, .test_samples = 32, .seed = 1,
                  .threads = 1, .corruptions = 1, .shuffle = 1,
                  .poison_rank = -1};
    parse_widths(c, "256,256");
    static const struct option options[] = {
        {"data", required_argument, 0, 'd'}, {"ood", required_argument, 0, 'o'},
        {"model", required_argument, 0, 'A'},
        {"width", required_argument, 0, 'w'}, {"rank", required_argument, 0, 'r'},
        {"param", required_argument, 0, 'p'}, {"epochs", required_argument, 0, 'e'},
        {"steps", required_argument, 0, 'n'},
        {"lr", required_argument, 0, 'l'}, {"momentum", required_argument, 0, 'M'},
        {"batch", required_argument, 0, 'b'},
        {"train-samples", required_argument, 0, 'T'},
        {"test-samples", required_argument, 0, 'K'},
        {"seed", required_argument, 0, 's'}, {"threads", required_argument, 0, 't'},
        {"train-limit", required_argument, 0, 'L'},
        {"test-limit", required_argument, 0, 'X'},
        {"no-shuffle", no_argument, 0, 'N'},
        {"no-corruptions", no_argument, 0, 'C'},
        {"json", required_argument, 0, 'j'}, {"save", required_argument, 0, 'S'},
        {"check-sync", no_argument, 0, 'c'},
        {"dump-params", required_argument, 0, 'D'},
        {"poison-rank", required_argument, 0, 'B'},
        {"sizes", no_argument, 0, 'z'},
        {"exchange", required_argument, 0, 'x'},
        {"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};
    int opt, bad = 0;
    while ((opt = getopt_long(argc, argv, "h", options, NULL)) != -1) {
        switch (opt) {
        case 'd': c->data_dir = optarg; break;
        case 'o': c->ood_dir = optarg; break;
        case 'A': c->model = model_parse(optarg); bad |= c->model < 0; break;
        case 'w': bad |= parse_widths(c, optarg) < 0; break;
        case 'r': c->rank = atoi(optarg); break;
        case 'p':
            bad |= strcmp(optarg, "mup") && strcmp(optarg, "sp");
            c->parameterization = strcmp(optarg, "sp") == 0 ? IBVI_PARAM_SP
                                                            : IBVI_PARAM_MUP;
            break;
        case 'e': c->epochs = atoi(optarg); break;
        case 'n': c->max_steps = atoll(optarg); break;
        case 'l': c->lr = strtof(optarg, NULL); break;
        case 'M': c->momentum = strtof(optarg, NULL); break;
        case 'b': c->batch = atoi(optarg); break;
        case 'T': c->train_samples = atoi(optarg); break;
        case 'K': c->test_samples = atoi(optarg); break;
        case 's': c->seed = strtoull(optarg, NULL, 10); break;
        case 't': c->threads = atoi(optarg); break;
        case 'L': c->train_limit = atoll(optarg); break;
        case 'X': c->test_limit = atoll(optarg); break;
        case 'N': c->shuffle = 0; break;
        case 'C': c->corruptions = 0; break;
        case 'j': c->json_path = optarg; break;
        case 'S': c->save_path = optarg; break;
        case 'c': c->check_sync = 1; break;
        case 'D': c->dump_path = optarg; break;
        case 'B': c->poison_rank = atoi(optarg); break;
        case 'z': c->sizes = 1; break;
        case 'x':
            bad |= strcmp(optarg, "dense") && strcmp(optarg, "factored");
            c->factored = strcmp(optarg, "factored") == 0;
            break;
        case 'h':
            if (rank_id == 0)
                usage(stdout);
            return 1;
        default: bad = 1;
        }
    }
    if (bad || (!c->data_dir && !c->sizes) || c->epochs < 0 || c->batch < 1 ||
        c->rank < 0 || c->max_steps < 0 || c->train_samples < 1) {
        if (rank_id == 0)
            usage(stderr);
        return 2;
    }
    return 0;
}

/* FNV-1a over the bytes of the parameters. */
static uint64_t checksum(const float *p, int64_t n)
{
    const unsigned char *b = (const unsigned char *)p;
    uint64_t h = 0xcbf29ce484222325ull;
    for (int64_t i = 0; i < n * (int64_t)sizeof(float); i++)
        h = (h ^ b[i]) * 0x100000001b3ull;
    return h;
}

typedef struct train_stats {
    double seconds, allreduce_seconds;
    int64_t steps;
    double last_loss;
} train_stats;

/* The data-parallel loop. Returns 0, or 1 when a rank failed (every rank
 * returns 1 then: the flag travels in the allreduce). */
static int train(ibvi_net *net, const config *c, const dataset *train_set,
                 train_stats *stats)
{
    ibvi_optimizer *opt;
    CHECK(ibvi_optimizer_create(&opt, net, IBVI_OPT_SGD, c->lr));
    CHECK(ibvi_optimizer_set_momentum(opt, c->momentum, 0));
    CHECK(ibvi_net_reserve(net, c->batch, c->train_samples));
    const int64_t P = ibvi_net_param_count(net);
    const int32_t classes = train_set->classes, dim = train_set->dim;
    /* The one buffer of the allreduce: P gradients, the loss, the flag
     * (factored: only the loss and the flag, and the gathered blocks). */
    float *buf = xmalloc((size_t)(P + 2) * sizeof *buf);
    const int64_t flen = c->factored
                             ? ibvi_net_grads_factored_size(net,
                                                            c->train_samples)
                             : 0;
    CHECK((int)(flen < 0 ? flen : 0));
    float *fmine = c->factored ? xmalloc((size_t)flen * sizeof *fmine) : NULL;
    float *fall = c->factored ? xmalloc((size_t)(flen * ranks) * sizeof *fall)
                              : NULL;
    float *params = c->check_sync ? xmalloc((size_t)P * sizeof *params) : NULL;
    const int64_t rows = (int64_t)c->batch * c->train_samples;
    float *out = xmalloc((size_t)(rows * classes) * sizeof *out);
    float *grad = xmalloc((size_t)(rows * classes) * sizeof *grad);
    float *x = xmalloc((size_t)c->batch * dim * sizeof *x);
    int32_t *y = xmalloc((size_t)c->batch * sizeof *y);

    /* Equal shards: rank w holds images [w S, (w + 1) S) of S = count / W,
     * so every rank takes the same number of steps of the same size. */
    const int64_t shard = train_set->count / ranks;
    const int64_t first = shard * rank_id;
    int64_t *order = xmalloc((size_t)shard * sizeof *order);
    for (int64_t i = 0; i < shard; i++)
        order[i] = first + i;
    uint64_t shuffle_state = c->seed + 7 + 1000003ull * (uint64_t)rank_id;
    const int64_t steps_per_epoch = (shard + c->batch - 1) / c->batch;
    int64_t total_steps = steps_per_epoch * c->epochs;
    if (c->max_steps > 0 && c->max_steps < total_steps)
        total_steps = c->max_steps;

    int failed = 0;
    int64_t step = 0;
    const double start = host_now_seconds();
    stats->allreduce_seconds = 0;
    for (int epoch = 1; epoch <= c->epochs && step < total_steps && !failed;
         epoch++) {
        if (c->shuffle)
            host_shuffle(order, shard, &shuffle_state);
        double loss_sum = 0;
        int64_t epoch_steps = 0;
        for (int64_t b = 0; b < shard && step < total_steps; b += c->batch) {
            const int64_t n = shard - b < c->batch ? shard - b : c->batch;
            for (int64_t i = 0; i < n; i++) {
                memcpy(x + i * dim, train_set->images + order[b + i] * dim,
                       (size_t)dim * sizeof *x);
                y[i] = train_set->labels[order[b + i]];
            }
            if (step == 0 && rank_id == c->poison_rank)
                x[0] = NAN;
            const double progress = (double)step / (double)total_steps;
            CHECK(ibvi_optimizer_set_lr(
                opt, (float)(c->lr * 0.5 *
                             (1.0 + cos(3.14159265358979 * progress)))));
            /* This rank's gradients; a failure raises the flag instead of
             * leaving the others waiting in the allreduce. */
            float loss = 0;
            int status = ibvi_net_forward(net, x, n, c->train_samples, out);
            if (status >= 0)
                status = ibvi_loss_softmax_xent(out, n * c->train_samples,
                                                classes, y, n, &loss, grad);
            if (status >= 0)
                status = ibvi_net_backward(net, grad, n * c->train_samples,
                                           classes);
            if (status >= 0)
                status = c->factored ? ibvi_net_get_grads_factored(net, fmine,
                                                                   flen)
                                     : ibvi_net_get_grads(net, buf, P);
            if (status < 0) {
                fprintf(stderr, "mpi_train: rank %d, step %lld: %s (%s)\n",
                        rank_id, (long long)step, ibvi_status_string(status),
                        ibvi_last_error());
                memset(buf, 0, (size_t)P * sizeof *buf);
                loss = 0;
            }
            /* dense: the gradients travel with the loss and the flag;
             * factored: those two first, then the blocks */
            float *tail = c->factored ? buf : buf + P;
            tail[0] = loss;
            tail[1] = status < 0 ? 1.0f : 0.0f;
            const double t0 = host_now_seconds();
            MPI_Allreduce(MPI_IN_PLACE, buf, (int)(c->factored ? 2 : P + 2),
                          MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
            if (c->factored && tail[1] == 0.0f)
                MPI_Allgather(fmine, (int)flen, MPI_FLOAT, fall, (int)flen,
                              MPI_FLOAT, MPI_COMM_WORLD);
            stats->allreduce_seconds += host_now_seconds() - t0;
            buf[P] = tail[0];
            buf[P + 1] = tail[1];
            if (buf[P + 1] != 0.0f) {
                if (rank_id == 0)
                    fprintf(stderr, "mpi_train: %g rank(s) failed at step "
                                    "%lld (see above); stopping every rank\n",
                            (double)buf[P + 1], (long long)step);
                failed = 1;
                break;
            }
            const float scale = 1.0f / (float)ranks;
            /* The same gradients, state and step on every rank: the same
             * parameters (a non-finite update fails on all of them). */
            if (c->factored) {
                CHECK(ibvi_optimizer_step_factored(opt, fall, ranks, flen));
            } else {
                for (int64_t i = 0; i < P; i++)
                    buf[i] *= scale;
                CHECK(ibvi_optimizer_step_grads(opt, buf, P));
            }
            loss_sum += buf[P] * scale;
            epoch_steps++;
            step++;
            if (c->check_sync) {
                CHECK(ibvi_net_get_params(net, params, P));
                uint64_t mine = checksum(params, P), low, high;
                MPI_Allreduce(&mine, &low, 1, MPI_UINT64_T, MPI_MIN,
                              MPI_COMM_WORLD);
                MPI_Allreduce(&mine, &high, 1, MPI_UINT64_T, MPI_MAX,
                              MPI_COMM_WORLD);
                if (low != high) {
                    fprintf(stderr, "mpi_train: rank %d: parameters differ "
                                    "across ranks after step %lld\n",
                            rank_id, (long long)step);
                    failed = 1;
                    break;
                }
            }
        }
        if (!failed && rank_id == 0 && epoch_steps > 0)
            fprintf(stderr, "ibvi (%d ranks) epoch %2d/%-2d loss %.4f  %lld "
                            "steps\n", ranks, epoch, c->epochs,
                    loss_sum / (double)epoch_steps, (long long)step);
        stats->last_loss = epoch_steps ? loss_sum / (double)epoch_steps : 0;
    }
    stats->seconds = host_now_seconds() - start;
    stats->steps = step;
    free(order);
    free(buf);
    free(fmine);
    free(fall);
    free(params);
    free(out);
    free(grad);
    free(x);
    free(y);
    ibvi_optimizer_free(opt);
    return failed;
}

static void load_or_die(dataset *d, const char *dir, const char *split)
{
    char err[512];
    if (dataset_load(d, dir, split, err, sizeof err) < 0) {
        fprintf(stderr, "mpi_train: rank %d: %s\n", rank_id, err);
        MPI_Abort(MPI_COMM_WORLD, 1);
        exit(1);
    }
}

static const char *base_name(const char *path)
{
    const char *slash = strrchr(path, '/');
    return slash && slash[1] ? slash + 1 : path;
}

static void dump_params(const ibvi_net *net, const char *path)
{
    const int64_t P = ibvi_net_param_count(net);
    float *p = xmalloc((size_t)P * sizeof *p);
    CHECK(ibvi_net_get_params(net, p, P));
    char name[4096];
    snprintf(name, sizeof name, "%s.%d", path, rank_id);
    FILE *f = fopen(name, "wb");
    if (!f || fwrite(p, sizeof *p, (size_t)P, f) != (size_t)P ||
        fclose(f) != 0) {
        perror(name);
        MPI_Abort(MPI_COMM_WORLD, 1);
    }
    free(p);
}

/* Rank 0: the table and JSON of mnist_train for the trained network. */
static int report_results(ibvi_net *net, const config *c,
                          const dataset *train_set, const train_stats *st)
{
    dataset test, ood;
    load_or_die(&test, c->data_dir, "t10k");
    if (c->test_limit > 0 && c->test_limit < test.count)
        test.count = c->test_limit;
    test.classes = train_set->classes;
    if (c->ood_dir) {
        load_or_die(&ood, c->ood_dir, "t10k");
        if (c->test_limit > 0 && c->test_limit < ood.count)
            ood.count = c->test_limit;
    }
    report r;
    memset(&r, 0, sizeof r);
    r.dataset = base_name(c->data_dir);
    r.ood_dataset = c->ood_dir ? base_name(c->ood_dir) : "none";
    for (int k = 0; c->corruptions && k < EVALUATED_CORRUPTIONS; k++)
        r.corruption_names[r.corruption_count++] =
            corrupt_name(evaluated_corruptions[k]);
    snprintf(r.config_json, sizeof r.config_json,
             "{\"model\": \"%s\", \"hidden\": \"%d x %d\", \"rank\": %d, "
             "\"parameterization\": \"%s\", \"epochs\": %d, \"lr\": %g, "
             "\"momentum\": %g, \"batch\": %d, \"train_samples\": %d, "
             "\"test_samples\": %d, \"seed\": %llu, \"threads\": %d, "
             "\"train_images\": %lld, \"validation_images\": 0, "
             "\"ensemble\": 0, \"blis_kernel\": \"%s\", \"mpi_ranks\": %d, "
             "\"steps\": %lld, \"allreduce_share\": %.4f}",
             model_names[c->model], c->hidden_count, c->hidden[0], c->rank,
             c->parameterization == IBVI_PARAM_MUP ? "mup" : "sp", c->epochs,
             (double)c->lr, (double)c->momentum, c->batch, c->train_samples,
             c->test_samples, (unsigned long long)c->seed, c->threads,
             (long long)(train_set->count / ranks * ranks), ibvi_kernel_name(),
             ranks, (long long)st->steps,
             st->seconds > 0 ? st->allreduce_seconds / st->seconds : 0.0);
    method_result *m = &r.methods[r.method_count++];
    memset(m, 0, sizeof *m);
    snprintf(m->name, sizeof m->name, "ibvi");
    m->temperature = 1.0;
    m->train_seconds = st->seconds;
    ibvi_predictor *pred;
    CHECK(ibvi_predictor_create(&pred, net, c->test_samples, c->seed));
    evaluate(pred, c->corruptions, c->seed, &test, c->ood_dir ? &ood : NULL,
             m);
    ibvi_predictor_free(pred);
    report_print_table(&r, stdout);
    int status = 0;
    if (c->json_path && report_write_json(&r, c->json_path) < 0) {
        perror(c->json_path);
        status = 1;
    }
    dataset_free(&test);
    if (c->ood_dir)
        dataset_free(&ood);
    return status;
}

/* --sizes: per layer with parameters, what one step exchanges. Dense:
 * the gradient of the mean and of the factor, P (1 + R) floats, in the
 * allreduce. Factored: a variational layer's per-sample gradients G (M x P)
 * and noise Z (M x R) instead, gathered from every rank (allgather), from
 * which each rank forms dL/dmu = sum of all G rows and dL/dS = G^T Z over
 * all W M samples; deterministic layers stay in the allreduce. Per-rank
 * traffic of ring algorithms: allreduce of N floats sends 2 (W - 1) / W N,
 * allgather of n floats per rank (W - 1) n. */
/* Under mpirun with W > 1 ranks: the time of the two exchanges of a step
 * on this communicator, the dense one (one allreduce of `dense` floats) and
 * the factored one (an allreduce of the `det` deterministic floats and an
 * allgather of `var` floats per rank), median of 21 rounds each. The
 * payloads are zeros: this times the communication only. */
static double median_of(double *t, int n)
{
    for (int i = 1; i < n; i++)
        for (int j = i; j > 0 && t[j - 1] > t[j]; j--) {
            const double s = t[j];
            t[j] = t[j - 1];
            t[j - 1] = s;
        }
    return t[n / 2];
}

static void time_exchanges(int64_t dense, int64_t det, int64_t var)
{
    if (ranks < 2)
        return;
    enum { ROUNDS = 21 };
    float *a = calloc((size_t)dense, sizeof *a);
    float *d = calloc((size_t)det + 1, sizeof *d);
    float *mine = calloc((size_t)var + 1, sizeof *mine);
    float *all = calloc((size_t)(var * ranks) + 1, sizeof *all);
    if (!a || !d || !mine || !all)
        die("calloc", IBVI_ERR_NOMEM);
    double t_dense[ROUNDS], t_fact[ROUNDS];
    for (int r = 0; r < ROUNDS; r++) {
        MPI_Barrier(MPI_COMM_WORLD);
        double t0 = MPI_Wtime();
        MPI_Allreduce(MPI_IN_PLACE, a, (int)dense, MPI_FLOAT, MPI_SUM,
                      MPI_COMM_WORLD);
        t_dense[r] = MPI_Wtime() - t0;
        MPI_Barrier(MPI_COMM_WORLD);
        t0 = MPI_Wtime();
        MPI_Allreduce(MPI_IN_PLACE, d, (int)det, MPI_FLOAT, MPI_SUM,
                      MPI_COMM_WORLD);
        MPI_Allgather(mine, (int)var, MPI_FLOAT, all, (int)var, MPI_FLOAT,
                      MPI_COMM_WORLD);
        t_fact[r] = MPI_Wtime() - t0;
    }
    if (rank_id == 0)
        printf("measured on %d ranks (median of %d): dense allreduce %.3f ms, "
               "factored allreduce + allgather %.3f ms\n", ranks, ROUNDS,
               1e3 * median_of(t_dense, ROUNDS),
               1e3 * median_of(t_fact, ROUNDS));
    free(a);
    free(d);
    free(mine);
    free(all);
}

static void print_sizes(const config *c)
{
    ibvi_net *net;
    CHECK(model_create(&net, c->model, c->hidden, c->hidden_count, 28, 28, 10,
                       c->rank));
    CHECK(ibvi_net_init(net, c->parameterization, c->seed));
    const int64_t M = c->train_samples;
    int64_t dense = 0, det = 0, var = 0;
    FILE *out = rank_id == 0 ? stdout : NULL;
    if (out)
        fprintf(out, "%s, rank %d, M = %lld: per layer with parameters\n",
           model_names[c->model], c->rank, (long long)M);
    if (out)
        fprintf(out, "%6s %-9s %10s %4s %12s %12s %12s\n", "layer", "kind", "P", "R",
           "mean grad", "factor grad", "M (P + R)");
    for (int32_t i = 0; i < ibvi_net_layer_count(net); i++) {
        ibvi_layer *l;
        CHECK(ibvi_net_layer(net, i, &l));
        const int64_t P = ibvi_layer_param_count(l);
        int32_t R;
        CHECK(ibvi_layer_shape(l, NULL, NULL, &R));
        if (P == 0)
            continue;
        static const char *const kinds[] = {"dense", "act", "conv2d", "maxpool",
                                            "avgpool", "gap", "flatten",
                                            "groupnorm", "residual"};
        const int32_t kind = ibvi_layer_get_kind(l);
        char factored[32] = "-";
        if (R > 0)
            snprintf(factored, sizeof factored, "%lld",
                     (long long)(M * (P + R)));
        if (out)
            fprintf(out, "%6d %-9s %10lld %4d %12lld %12lld %12s\n", (int)i,
               kind >= 0 && kind < 9 ? kinds[kind] : "?", (long long)P,
               (int)R, (long long)P, (long long)(P * R), factored);
        dense += P * (1 + R);
        if (R > 0)
            var += M * (P + R);
        else
            det += P;
    }
    if (!out) {
        time_exchanges(dense, det, var);
        ibvi_net_free(net);
        return;
    }
    fprintf(out, "allreduce payload: %lld floats (%.2f MB) dense; factored: %lld "
           "allreduced + %lld gathered per rank\n", (long long)dense,
           4e-6 * (double)dense, (long long)det, (long long)var);
    fprintf(out, "%6s %16s %16s %8s\n", "W", "dense MB/rank", "factored MB/rank",
           "ratio");
    const int widths[] = {2, 4, 8, 16, 32, 64, 128};
    for (int k = 0; k < 7; k++) {
        const double W = widths[k];
        const double a = 2 * (W - 1) / W * (double)dense;
        const double b = 2 * (W - 1) / W * (double)det + (W - 1) * (double)var;
        fprintf(out, "%6d %16.2f %16.2f %8.2f\n", widths[k], 4e-6 * a, 4e-6 * b,
               b / a);
    }
    time_exchanges(dense, det, var);
    ibvi_net_free(net);
}

int main(int argc, char **argv)
{
    MPI_Init(&argc, &argv);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank_id);
    MPI_Comm_size(MPI_COMM_WORLD, &ranks);
    config c;
    int parsed = parse_options(&c, argc, argv);
    if (parsed != 0) {
        MPI_Finalize();
        return parsed == 1 ? 0 : 2;
    }
    if (c.sizes) {
        print_sizes(&c);
        MPI_Finalize();
        return 0;
    }
    dataset train_set;
    load_or_die(&train_set, c.data_dir, "train");
    if (c.train_limit > 0 && c.train_limit < train_set.count)
        train_set.count = c.train_limit;
    if (train_set.count < ranks) {
        if (rank_id == 0)
            fprintf(stderr, "mpi_train: %lld training images for %d ranks\n",
                    (long long)train_set.count, ranks);
        MPI_Finalize();
        return 2;
    }
    if (rank_id == 0)
        fprintf(stderr, "libibvi %s, %d ranks x %d threads, %s, %lld images "
                        "per shard, batch %d per rank, BLIS kernel %s\n",
                ibvi_version_string(), ranks, c.threads,
                model_names[c.model], (long long)(train_set.count / ranks),
                c.batch, ibvi_kernel_name());

    /* The same architecture everywhere; rank 0's prior is everyone's. */
    ibvi_net *net;
    CHECK(model_create(&net, c.model, c.hidden, c.hidden_count, train_set.rows,
                       train_set.cols, train_set.classes, c.rank));
    CHECK(ibvi_net_init(net, c.parameterization, c.seed));
    CHECK(ibvi_net_set_threads(net, c.threads));
    const int64_t P = ibvi_net_param_count(net);
    float *params = xmalloc((size_t)P * sizeof *params);
    if (rank_id == 0)
        CHECK(ibvi_net_get_params(net, params, P));
    MPI_Bcast(params, (int)P, MPI_FLOAT, 0, MPI_COMM_WORLD);
    CHECK(ibvi_net_set_params(net, params, P));
    free(params);
    CHECK(ibvi_net_set_noise_stream(net, (uint64_t)rank_id));

    train_stats st;
    const int failed = train(net, &c, &train_set, &st);
    int status = failed;
    if (!failed) {
        if (c.dump_path)
            dump_params(net, c.dump_path);
        if (rank_id == 0) {
            fprintf(stderr, "trained %lld steps in %.2f s, %.1f ms per step, "
                            "allreduce %.1f%% of it (%lld floats per step "
                            "and rank)\n",
                    (long long)st.steps, st.seconds,
                    st.steps ? 1e3 * st.seconds / (double)st.steps : 0.0,
                    st.seconds > 0 ? 100 * st.allreduce_seconds / st.seconds
                                   : 0.0,
                    c.factored ? (long long)(ibvi_net_grads_factored_size(
                                                 net, c.train_samples) + 2)
                               : (long long)(P + 2));
            status = report_results(net, &c, &train_set, &st);
            if (c.save_path && status == 0) {
                CHECK(ibvi_net_save(net, NULL, c.save_path));
                fprintf(stderr, "saved the IBVI network to %s\n", c.save_path);
            }
        }
    }
    ibvi_net_free(net);
    dataset_free(&train_set);
    MPI_Finalize();
    return status;
}
