/*
 * mnist_train - the host-written training loop of the libibvi examples.
 *
 * Trains a standard network and an IBVI network (and, on request, a deep
 * ensemble, temperature scaling, mean-field VI, SWAG and the last-layer
 * Laplace approximation) on an MNIST-style
 * data set, then
 * compares them on the test set, on a second data set as out-of-distribution
 * inputs, and on seeded MNIST-C-style corruptions of the test set. Everything
 * here is host code written against libibvi's public API only.
 *
 *   mnist_train --data data/fashion --ood data/mnist [options]
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
#include <unistd.h>

#include <ibvi/calibration.h>
#include <ibvi/ibvi.h>
#include <ibvi/io.h>

#include "corrupt.h"
#include "dataset.h"
#include "host.h"
#include "divergence.h"
#include "evaluate.h"
#include "models.h"
#include "report.h"

#define MAX_HIDDEN 8

typedef struct config {
    int model;              /* MODEL_MLP, MODEL_LENET5 or MODEL_RESNET */
    const char *data_dir, *ood_dir, *json_path, *svg_path, *save_path;
    char methods[128];
    int32_t hidden[MAX_HIDDEN];
    int hidden_count;
    int32_t rank;
    int32_t parameterization;
    int epochs;
    float lr, momentum;
    int32_t batch;
    int32_t train_samples;  /* M */
    int32_t test_samples;   /* K */
    int32_t ensemble;
    uint64_t seed;
    int32_t threads;
    int64_t train_limit;
    int64_t test_limit;
    int64_t validation;
    int progress;
    int corruptions;
    int swag_epochs;        /* SWAG's phase of constant-lr SGD     */
    int32_t swag_rank;      /* its snapshots = deviation columns  */
    float swag_lr;          /* its constant lr (0: --lr / 2)      */
    int laplace_structure;  /* IBVI_LAPLACE_FULL/_KFAC, -1: by size */
    int laplace_prior;      /* IBVI_LAPLACE_PRIOR_MARGLIK/_VALIDATION */
    float kl_weight;        /* mfvi: the KL term times this / N    */
} config;

static void die(const char *what, int status)
{
    fprintf(stderr, "mnist_train: %s: %s (%s)\n", what,
            ibvi_status_string(status), ibvi_last_error());
    exit(1);
}

#define CHECK(call)                         \
    do {                                    \
        int status_ = (call);               \
        if (status_ < 0)                    \
            die(#call, status_);            \
    } while (0)

/* ---- options ------------------------------------------------------------- */

static void usage(FILE *out)
{
    fprintf(out,
        "usage: mnist_train --data DIR [options]\n"
        "  --data DIR          training/test IDX files (e.g. data/fashion)\n"
        "  --ood DIR           out-of-distribution test set (e.g. data/mnist)\n"
        "  --methods LIST      comma list of standard, ibvi, ensemble, temp,\n"
        "                      mfvi (mean-field VI: every layer diagonal,\n"
        "                      trained on the ELBO), swag (SWAG from the\n"
        "                      trained standard network, docs/swag.md),\n"
        "                      laplace (last-layer Laplace of the trained\n"
        "                      standard network, K samples of the predictor),\n"
        "                      laplace-probit (the same, probit predictive;\n"
        "                      docs/laplace.md)\n"
        "                      (default standard,ibvi,temp)\n"
        "  --swag-epochs N     SWAG's epochs of constant-lr SGD (default 3)\n"
        "  --swag-rank R       SWAG's snapshots, spread evenly over them, and\n"
        "                      deviation columns (default 20)\n"
        "  --swag-lr X         SWAG's constant learning rate (default --lr / 2)\n"
        "  --laplace S         full or kfac: the Hessian's structure (default:\n"
        "                      full when its P^2 doubles fit in 1 GiB)\n"
        "  --laplace-prior S   marglik (default) or validation: how Laplace\n"
        "                      chooses its prior precision\n"
        "  --kl-weight X       mfvi's KL term times X / N_train (default 1:\n"
        "                      the ELBO; < 1 a tempered posterior)\n"
        "  --ensemble N        members of the deep ensemble (default 3)\n"
        "  --model NAME        mlp (default), lenet5 or resnet (docs/tutorial.md)\n"
        "  --width LIST        hidden widths of mlp, e.g. 256,256 (default)\n"
        "  --rank R            covariance rank of first and last layer (10)\n"
        "  --param mup|sp      parameterization (default mup)\n"
        "  --epochs N          epochs (default 10)\n"
        "  --lr X              base learning rate (default 0.02), cosine decay\n"
        "  --momentum X        SGD momentum (default 0.9)\n"
        "  --batch N           minibatch size (default 128)\n"
        "  --train-samples M   weight samples per training step (default 1)\n"
        "  --test-samples K    weight samples at test time (default 32)\n"
        "  --seed N            seed of everything (default 1)\n"
        "  --threads N         BLIS threads per network (default 1; 2 helps\n"
        "                      only on an otherwise idle machine)\n"
        "  --train-limit N     use only the first N training images\n"
        "  --test-limit N      evaluate only the first N test (and OOD) images\n"
        "  --validation N      held-out training images for temperature\n"
        "                      scaling (default count/12)\n"
        "  --no-corruptions    skip the corrupted test sets\n"
        "  --no-progress       no progress bar\n"
        "  --json FILE         write all results as JSON (docs/json-schema.md)\n"
        "  --svg FILE          write reliability diagrams and risk-coverage\n"
        "                      curves as SVG\n"
        "  --save FILE         save the trained IBVI network\n"
        "A network whose training diverges (docs/concepts.md, \"Learning rates\n"
        "and divergence\") stops training and is reported as diverged.\n");
}

static int parse_widths(config *c, const char *text)
{
    const int count = host_parse_widths(text, c->hidden, MAX_HIDDEN, 1000000);
    c->hidden_count = count > 0 ? count : 0;
    return count > 0 ? 0 : -1;
}

static int has_method(const config *c, const char *name)
{
    char buf[128];
    snprintf(buf, sizeof buf, "%s", c->methods);
    for (char *tok = strtok(buf, ","); tok; tok = strtok(NULL, ","))
        if (strcmp(tok, name) == 0)
            return 1;
    return 0;
}

static int known_methods(const config *c)
{
    char buf[128];
    snprintf(buf, sizeof buf, "%s", c->methods);
    for (char *tok = strtok(buf, ","); tok; tok = strtok(NULL, ","))
        if (strcmp(tok, "standard") && strcmp(tok, "ibvi") &&
            strcmp(tok, "ensemble") && strcmp(tok, "temp") &&
            strcmp(tok, "mfvi") && strcmp(tok, "swag") &&
            strcmp(tok, "laplace") && strcmp(tok, "laplace-probit"))
            return 0;
    return 1;
}

static void parse_options(config *c, int argc, char **argv)
{
    *c = (config){.data_dir = NULL, .rank = 10,
                  .parameterization = IBVI_PARAM_MUP, .epochs = 10,
                  .lr = 0.02f, .momentum = 0.9f, .batch = 128,
                  .train_samples = 1, .test_samples = 32, .ensemble = 3,
                  .seed = 1, .threads = 1, .validation = -1,
                  .progress = isatty(STDERR_FILENO), .corruptions = 1,
                  .swag_epochs = 3, .swag_rank = IBVI_SWAG_DEFAULT_RANK,
                  .laplace_structure = -1,
                  .laplace_prior = IBVI_LAPLACE_PRIOR_MARGLIK,
                  .kl_weight = 1.0f};
    snprintf(c->methods, sizeof c->methods, "standard,ibvi,temp");
    parse_widths(c, "256,256");
    static const struct option options[] = {
        {"data", required_argument, 0, 'd'}, {"ood", required_argument, 0, 'o'},
        {"methods", required_argument, 0, 'm'},
        {"ensemble", required_argument, 0, 'E'},
        {"model", required_argument, 0, 'A'},
        {"width", required_argument, 0, 'w'}, {"rank", required_argument, 0, 'r'},
        {"param", required_argument, 0, 'p'}, {"epochs", required_argument, 0, 'e'},
        {"lr", required_argument, 0, 'l'}, {"momentum", required_argument, 0, 'M'},
        {"batch", required_argument, 0, 'b'},
        {"train-samples", required_argument, 0, 'T'},
        {"test-samples", required_argument, 0, 'K'},
        {"seed", required_argument, 0, 's'}, {"threads", required_argument, 0, 't'},
        {"train-limit", required_argument, 0, 'L'},
        {"test-limit", required_argument, 0, 'X'},
        {"validation", required_argument, 0, 'V'},
        {"no-corruptions", no_argument, 0, 'C'},
        {"no-progress", no_argument, 0, 'P'}, {"json", required_argument, 0, 'j'},
        {"svg", required_argument, 0, 'g'}, {"save", required_argument, 0, 'S'},
        {"swag-epochs", required_argument, 0, 'W'},
        {"swag-rank", required_argument, 0, 'R'},
        {"swag-lr", required_argument, 0, 'Q'},
        {"laplace", required_argument, 0, 'a'},
        {"laplace-prior", required_argument, 0, 'y'},
        {"kl-weight", required_argument, 0, 'k'},
        {"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};
    int opt;
    while ((opt = getopt_long(argc, argv, "h", options, NULL)) != -1) {
        switch (opt) {
        case 'd': c->data_dir = optarg; break;
        case 'o': c->ood_dir = optarg; break;
        case 'm': snprintf(c->methods, sizeof c->methods, "%s", optarg); break;
        case 'E': c->ensemble = atoi(optarg); break;
        case 'A':
            c->model = model_parse(optarg);
            if (c->model < 0) {
                fprintf(stderr, "mnist_train: --model is mlp, lenet5 or resnet\n");
                exit(2);
            }
            break;
        case 'w':
            if (parse_widths(c, optarg) < 0) {
                fprintf(stderr, "mnist_train: bad --width %s\n", optarg);
                exit(2);
            }
            break;
        case 'r': c->rank = atoi(optarg); break;
        case 'p':
            if (strcmp(optarg, "mup") && strcmp(optarg, "sp")) {
                fprintf(stderr, "mnist_train: --param is mup or sp\n");
                exit(2);
            }
            c->parameterization = strcmp(optarg, "mup") == 0 ? IBVI_PARAM_MUP
                                                             : IBVI_PARAM_SP;
            break;
        case 'e': c->epochs = atoi(optarg); break;
        case 'l': c->lr = strtof(optarg, NULL); break;
        case 'M': c->momentum = strtof(optarg, NULL); break;
        case 'b': c->batch = atoi(optarg); break;
        case 'T': c->train_samples = atoi(optarg); break;
        case 'K': c->test_samples = atoi(optarg); break;
        case 's': c->seed = strtoull(optarg, NULL, 10); break;
        case 't': c->threads = atoi(optarg); break;
        case 'L': c->train_limit = atoll(optarg); break;
        case 'X': c->test_limit = atoll(optarg); break;
        case 'V': c->validation = atoll(optarg); break;
        case 'C': c->corruptions = 0; break;
        case 'P': c->progress = 0; break;
        case 'j': c->json_path = optarg; break;
        case 'g': c->svg_path = optarg; break;
        case 'S': c->save_path = optarg; break;
        case 'W': c->swag_epochs = atoi(optarg); break;
        case 'R': c->swag_rank = atoi(optarg); break;
        case 'Q': c->swag_lr = strtof(optarg, NULL); break;
        case 'a':
            if (strcmp(optarg, "full") && strcmp(optarg, "kfac")) {
                fprintf(stderr, "mnist_train: --laplace is full or kfac\n");
                exit(2);
            }
            c->laplace_structure = strcmp(optarg, "full") == 0
                                       ? IBVI_LAPLACE_FULL : IBVI_LAPLACE_KFAC;
            break;
        case 'y':
            if (strcmp(optarg, "marglik") && strcmp(optarg, "validation")) {
                fprintf(stderr, "mnist_train: --laplace-prior is marglik or "
                                "validation\n");
                exit(2);
            }
            c->laplace_prior = strcmp(optarg, "marglik") == 0
                                   ? IBVI_LAPLACE_PRIOR_MARGLIK
                                   : IBVI_LAPLACE_PRIOR_VALIDATION;
            break;
        case 'k': c->kl_weight = strtof(optarg, NULL); break;
        case 'h': usage(stdout); exit(0);
        default: usage(stderr); exit(2);
        }
    }
    if (!c->data_dir || c->epochs < 0 || c->batch < 1 || c->ensemble < 1 ||
        c->ensemble > REPORT_MAX_METHODS || c->rank < 0 || !known_methods(c) ||
        c->swag_epochs < 1 || c->swag_rank < 2 ||
        c->swag_rank > IBVI_DIAG_LOWRANK_MAX_RANK || !(c->swag_lr >= 0.0f) ||
        !(c->kl_weight >= 0.0f && c->kl_weight <= 1e6f)) {
        usage(stderr);
        exit(2);
    }
}

/* ---- the host's training loop ---------------------------------------------- */

/* The network of --model (models.h), initialised; mean_field: every layer
 * with weights diagonal (mean-field VI, rank 0). */
static ibvi_net *build_network(const config *c, const dataset *d,
                               int32_t rank, int mean_field, uint64_t seed)
{
    ibvi_net *net;
    CHECK(model_create(&net, c->model, c->hidden, c->hidden_count, d->rows,
                       d->cols, d->classes, rank));
    if (mean_field)
        CHECK(model_mean_field(net));
    CHECK(ibvi_net_init(net, c->parameterization, seed));
    CHECK(ibvi_net_set_threads(net, c->threads));
    return net;
}

static void progress_bar(const char *name, int epoch, int epochs, int64_t done,
                         int64_t total, double loss, double rate)
{
    const int width = 30;
    int filled = (int)(width * done / (total ? total : 1));
    fprintf(stderr, "\r%-12s epoch %2d/%-2d [", name, epoch, epochs);
    for (int i = 0; i < width; i++)
        fputc(i < filled ? '#' : '.', stderr);
    fprintf(stderr, "] %3d%%  loss %.4f  %6.0f img/s", (int)(100 * done / total),
            loss, rate);
}

/* What train_network runs: `epochs` epochs on the expected loss +
 * kl_weight x KL (kl_weight > 0: mean-field VI's ELBO per example,
 * 1 / N_train), with a cosine learning-rate schedule from --lr, or with
 * constant_lr > 0 throughout (SWAG's phase); with a collector, `snapshots`
 * snapshots of the means spread evenly over the steps, the last after the
 * last step. */
typedef struct train_plan {
    int epochs;
    float kl_weight;
    float constant_lr;
    ibvi_swag *swag;
    int32_t snapshots;
    /* The loss the divergence rule compares with: 0 for the run's own
     * first step (training from the prior); a run that continues a trained
     * network (SWAG's phase) passes that network's first-step loss, its
     * loss when untrained, since its own first step is already low and an
     * ordinary epoch at a constant lr would read as divergence. */
    double reference_loss;
    /* Where to store the first step's loss (NULL: nowhere). */
    double *first_loss_out;
} train_plan;

/* Trains with SGD + momentum as `plan` says; returns the training time in
 * seconds. On divergence (the rule of divergence.h), stops, writes the
 * reason to `divergence` (else leaves it empty) and says so on stderr. */
static double train_network(ibvi_net *net, const config *c, const dataset *train,
                            const char *name, uint64_t seed,
                            const train_plan *plan, char *divergence,
                            size_t divergence_size)
{
    divergence[0] = '\0';
    const int epochs = plan->epochs;
    const float kl_weight = plan->kl_weight;
    ibvi_optimizer *opt;
    CHECK(ibvi_optimizer_create(&opt, net, IBVI_OPT_SGD, c->lr));
    CHECK(ibvi_optimizer_set_momentum(opt, c->momentum, 0));
    CHECK(ibvi_optimizer_set_kl_weight(opt, kl_weight));
    CHECK(ibvi_net_reserve(net, c->batch, c->train_samples));

    int64_t *order = malloc((size_t)train->count * sizeof *order);
    float *x = malloc((size_t)c->batch * train->dim * sizeof *x);
    int32_t *y = malloc((size_t)c->batch * sizeof *y);
    if (!order || !x || !y) {
        fprintf(stderr, "mnist_train: out of memory\n");
        exit(1);
    }
    for (int64_t i = 0; i < train->count; i++)
        order[i] = i;
    uint64_t shuffle_state = seed;
    const int64_t steps_per_epoch = (train->count + c->batch - 1) / c->batch;
    const double total_steps = (double)steps_per_epoch * epochs;
    int32_t collected = 0;
    const double start = host_now_seconds();
    int64_t step = 0;
    double first_loss = 0.0;
    for (int epoch = 1; epoch <= epochs && !divergence[0]; epoch++) {
        host_shuffle(order, train->count, &shuffle_state);
        double loss_sum = 0, epoch_start = host_now_seconds();
        int64_t seen = 0;
        for (int64_t b = 0; b < train->count; b += c->batch) {
            const int64_t n = train->count - b < c->batch ? train->count - b
                                                          : c->batch;
            for (int64_t i = 0; i < n; i++) {
                memcpy(x + i * train->dim, train->images + order[b + i] * train->dim,
                       (size_t)train->dim * sizeof *x);
                y[i] = train->labels[order[b + i]];
            }
            const double progress = (double)step++ / total_steps;
            CHECK(ibvi_optimizer_set_lr(
                opt, plan->constant_lr > 0.0f
                         ? plan->constant_lr
                         : (float)(c->lr * 0.5 *
                                   (1.0 + cos(3.14159265358979 * progress)))));
            float loss;
            const int status = ibvi_train_step(net, opt, x, n, c->train_samples,
                                               IBVI_LOSS_SOFTMAX_XENT, y, NULL,
                                               &loss);
            if (status == IBVI_ERR_NONFINITE) {
                divergence_nonfinite(divergence, divergence_size, epoch);
                break;
            }
            if (status < 0)
                die("ibvi_train_step", status);
            if (step == 1) {
                first_loss = plan->reference_loss > 0.0 ? plan->reference_loss
                                                        : loss;
                if (plan->first_loss_out)
                    *plan->first_loss_out = loss;
            }
            /* Snapshot j (0-based) after step ceil((j + 1) T / snapshots). */
            while (plan->swag && collected < plan->snapshots &&
                   (double)step * plan->snapshots >=
                       (double)(collected + 1) * total_steps) {
                CHECK(ibvi_swag_collect(plan->swag, net));
                collected++;
            }
            loss_sum += loss * (double)n;
            seen += n;
            if (c->progress && (b / c->batch) % 20 == 0)
                progress_bar(name, epoch, epochs, seen, train->count,
                             loss_sum / seen, seen / (host_now_seconds() - epoch_start));
        }
        if (divergence[0]) {
            if (c->progress)
                fputc('\n', stderr);
            break;
        }
        const double rate = seen / (host_now_seconds() - epoch_start);
        divergence_epoch(divergence, divergence_size, epoch, loss_sum / seen,
                         first_loss);
        if (c->progress) {
            progress_bar(name, epoch, epochs, seen, train->count,
                         loss_sum / seen, rate);
            fputc('\n', stderr);
        } else {
            fprintf(stderr, "%-12s epoch %2d/%-2d loss %.4f  %6.0f img/s\n", name,
                    epoch, epochs, loss_sum / seen, rate);
        }
    }
    const double seconds = host_now_seconds() - start;
    if (divergence[0])
        fprintf(stderr, "mnist_train: %s diverged (%s): training stopped, not "
                        "evaluated; try a lower --lr (docs/concepts.md)\n",
                name, divergence);
    free(order);
    free(x);
    free(y);
    ibvi_optimizer_free(opt);
    return seconds;
}

/* ---- evaluation (evaluate.c) ---------------------------------------------- */

enum { CHUNK = 1000 };

/* Temperature scaling: T fitted on the validation logits of the mean net. */
static float fit_temperature(ibvi_net *net, const dataset *validation)
{
    const int32_t classes = validation->classes;
    float *logits = malloc((size_t)validation->count * classes * sizeof *logits);
    if (!logits) {
        fprintf(stderr, "mnist_train: out of memory\n");
        exit(1);
    }
    for (int64_t start = 0; start < validation->count; start += CHUNK) {
        const int64_t n = validation->count - start < CHUNK
                              ? validation->count - start : CHUNK;
        CHECK(ibvi_net_forward_mean(net, validation->images + start * validation->dim,
                                    n, logits + start * classes));
    }
    float temperature;
    CHECK(ibvi_temperature_fit(&temperature, logits, validation->count, classes,
                               validation->labels));
    free(logits);
    return temperature;
}

/* The probit predictive of a fitted Laplace approximation, for
 * evaluate_with: probabilities, then their entropy. */
typedef struct laplace_ctx {
    const ibvi_laplace *la;
    ibvi_net *net;
    int32_t classes;
} laplace_ctx;

static int laplace_probit_predict(void *arg, const float *x, int64_t n,
                                  float *probs, float *entropy)
{
    const laplace_ctx *ctx = arg;
    int status = ibvi_laplace_probit(ctx->la, ctx->net, x, n, probs, NULL);
    if (status >= 0 && entropy)
        status = ibvi_entropy(entropy, probs, n, ctx->classes);
    return status;
}

/* ---- main ------------------------------------------------------------------ */

static void load_or_die(dataset *d, const char *dir, const char *split)
{
    char err[512];
    if (dataset_load(d, dir, split, err, sizeof err) < 0) {
        fprintf(stderr, "mnist_train: %s\n(run examples/prepare_data.sh data "
                        "first)\n", err);
        exit(1);
    }
}

static const char *base_name(const char *path)
{
    const char *slash = strrchr(path, '/');
    return slash && slash[1] ? slash + 1 : path;
}

/* A method whose network diverged (reason not empty) is reported as such,
 * without metrics. */
static void mark_diverged(method_result *m, const char *reason)
{
    m->diverged = reason[0] != '\0';
    snprintf(m->divergence, sizeof m->divergence, "%s", reason);
}

/* Evaluates net's K-sample predictive into m, unless m diverged, and
 * records the floats the model holds. */
static void evaluate_network(ibvi_net *net, int32_t K, const config *c,
                             const dataset *test, const dataset *ood,
                             method_result *m)
{
    m->model_floats = ibvi_net_param_count(net);
    if (m->diverged)
        return;
    ibvi_predictor *pred;
    CHECK(ibvi_predictor_create(&pred, net, K, c->seed));
    evaluate(pred, c->corruptions, c->seed, test, ood, m);
    ibvi_predictor_free(pred);
}

static method_result *add_method(report *r, const char *name)
{
    method_result *m = &r->methods[r->method_count++];
    memset(m, 0, sizeof *m);
    snprintf(m->name, sizeof m->name, "%s", name);
    m->temperature = 1.0;
    return m;
}

int main(int argc, char **argv)
{
    config c;
    parse_options(&c, argc, argv);
    fprintf(stderr, "libibvi %s\n", ibvi_version_string());

    dataset train, test, ood, validation;
    load_or_die(&train, c.data_dir, "train");
    load_or_die(&test, c.data_dir, "t10k");
    if (c.ood_dir) {
        load_or_die(&ood, c.ood_dir, "t10k");
        if (ood.dim != train.dim) {
            fprintf(stderr, "mnist_train: OOD images have %d pixels, training "
                            "images %d\n", ood.dim, train.dim);
            return 2;
        }
    }
    if (c.train_limit > 0 && c.train_limit < train.count)
        train.count = c.train_limit;
    if (c.test_limit > 0 && c.test_limit < test.count)
        test.count = c.test_limit;
    if (c.ood_dir && c.test_limit > 0 && c.test_limit < ood.count)
        ood.count = c.test_limit;
    if (c.validation < 0)
        c.validation = train.count / 12;
    memset(&validation, 0, sizeof validation);
    if (c.validation > 0 && dataset_take_tail(&validation, &train, c.validation) < 0) {
        fprintf(stderr, "mnist_train: bad --validation %lld\n",
                (long long)c.validation);
        return 2;
    }
    test.classes = train.classes;
    fprintf(stderr, "%s: %lld train, %lld validation, %lld test images; ",
            base_name(c.data_dir), (long long)train.count,
            (long long)validation.count, (long long)test.count);
    if (c.model == MODEL_MLP) {
        fprintf(stderr, "MLP %d", train.dim);
        for (int i = 0; i < c.hidden_count; i++)
            fprintf(stderr, "-%d", c.hidden[i]);
        fprintf(stderr, "-%d", train.classes);
    } else {
        fprintf(stderr, "%s on 1x%dx%d, %d classes",
                c.model == MODEL_LENET5 ? "LeNet-5" : "ResNet (GroupNorm)",
                train.rows, train.cols, train.classes);
    }
    fprintf(stderr, ", %s, %d epochs, lr %g, batch %d, %d threads\n", c.parameterization == IBVI_PARAM_MUP ? "muP" : "SP",
            c.epochs, (double)c.lr, c.batch, c.threads);
    fprintf(stderr, "BLIS kernel: %s\n", ibvi_kernel_description());

    report r;
    memset(&r, 0, sizeof r);
    r.dataset = base_name(c.data_dir);
    r.ood_dataset = c.ood_dir ? base_name(c.ood_dir) : "none";
    for (int k = 0; c.corruptions && k < EVALUATED_CORRUPTIONS; k++)
        r.corruption_names[r.corruption_count++] = corrupt_name(evaluated_corruptions[k]);
    snprintf(r.config_json, sizeof r.config_json,
             "{\"model\": \"%s\", \"hidden\": \"%d x %d\", \"rank\": %d, "
             "\"parameterization\": "
             "\"%s\", \"epochs\": %d, \"lr\": %g, \"momentum\": %g, \"batch\": "
             "%d, \"train_samples\": %d, \"test_samples\": %d, \"seed\": %llu, "
             "\"threads\": %d, \"train_images\": %lld, \"validation_images\": "
             "%lld, \"ensemble\": %d, \"kl_weight\": %g, \"blis_kernel\": \"%s\"}",
             model_names[c.model], c.hidden_count, c.hidden[0], c.rank,
             c.parameterization == IBVI_PARAM_MUP ? "mup" : "sp", c.epochs,
             (double)c.lr, (double)c.momentum, c.batch, c.train_samples,
             c.test_samples, (unsigned long long)c.seed, c.threads,
             (long long)train.count, (long long)validation.count, c.ensemble,
             (double)c.kl_weight,
             ibvi_kernel_name());
    const dataset *ood_set = c.ood_dir ? &ood : NULL;

    /* Standard networks: member 0 is "standard", all are the ensemble; it
     * is SWAG's start too. */
    const int laplace = has_method(&c, "laplace") ||
                        has_method(&c, "laplace-probit");
    const int need_standard = has_method(&c, "standard") || has_method(&c, "temp") ||
                              has_method(&c, "ensemble") || has_method(&c, "swag") ||
                              laplace;
    double standard_first_loss = 0.0; /* member 0's, for SWAG's phase */
    const train_plan plain = {c.epochs, 0.0f, 0.0f, NULL, 0, 0.0, NULL};
    const train_plan plain_first = {c.epochs, 0.0f, 0.0f, NULL, 0, 0.0,
                                    &standard_first_loss};
    const int members = has_method(&c, "ensemble") ? c.ensemble : 1;
    ibvi_net *standard[REPORT_MAX_METHODS] = {0};
    double standard_seconds[REPORT_MAX_METHODS] = {0};
    /* Why each standard network diverged, or "" (train_network). */
    char standard_divergence[REPORT_MAX_METHODS][sizeof r.methods[0].divergence] =
        {{0}};
    /* The ensemble diverged if a member did: the first such member's reason. */
    char ensemble_divergence[sizeof r.methods[0].divergence] = "";
    for (int i = 0; need_standard && i < members; i++) {
        char name[32];
        snprintf(name, sizeof name, i ? "member %d" : "standard", i);
        standard[i] = build_network(&c, &train, 0, 0, c.seed + 100 * i);
        standard_seconds[i] = train_network(standard[i], &c, &train, name,
                                            c.seed + 100 * i + 7,
                                            i ? &plain : &plain_first,
                                            standard_divergence[i],
                                            sizeof standard_divergence[i]);
        if (standard_divergence[i][0] && !ensemble_divergence[0])
            snprintf(ensemble_divergence, sizeof ensemble_divergence,
                     "member %d, %.140s", i, standard_divergence[i]);
    }
    ibvi_predictor *pred;
    if (has_method(&c, "standard")) {
        CHECK(ibvi_predictor_create(&pred, standard[0], 1, c.seed));
        method_result *m = add_method(&r, "standard");
        m->train_seconds = standard_seconds[0];
        m->model_floats = ibvi_net_param_count(standard[0]);
        mark_diverged(m, standard_divergence[0]);
        if (!m->diverged)
            evaluate(pred, c.corruptions, c.seed, &test, ood_set, m);
        ibvi_predictor_free(pred);
    }
    if (has_method(&c, "temp")) {
        if (validation.count == 0) {
            fprintf(stderr, "mnist_train: temp needs --validation > 0\n");
            return 2;
        }
        CHECK(ibvi_predictor_create(&pred, standard[0], 1, c.seed));
        method_result *m = add_method(&r, "temp-scaled");
        m->train_seconds = standard_seconds[0];
        m->model_floats = ibvi_net_param_count(standard[0]);
        mark_diverged(m, standard_divergence[0]);
        if (!m->diverged) {
            m->temperature = fit_temperature(standard[0], &validation);
            CHECK(ibvi_predictor_set_temperature(pred, (float)m->temperature));
            evaluate(pred, c.corruptions, c.seed, &test, ood_set, m);
        }
        ibvi_predictor_free(pred);
    }
    if (has_method(&c, "ensemble")) {
        CHECK(ibvi_predictor_create_ensemble(&pred, standard, members, 1, c.seed));
        char name[32];
        snprintf(name, sizeof name, "ensemble-%d", members);
        method_result *m = add_method(&r, name);
        for (int i = 0; i < members; i++) {
            m->train_seconds += standard_seconds[i];
            m->model_floats += ibvi_net_param_count(standard[i]);
        }
        mark_diverged(m, ensemble_divergence);
        if (!m->diverged)
            evaluate(pred, c.corruptions, c.seed, &test, ood_set, m);
        ibvi_predictor_free(pred);
    }
    if (has_method(&c, "ibvi")) {
        ibvi_net *net = build_network(&c, &train, c.rank, 0, c.seed);
        method_result *m = add_method(&r, "ibvi");
        char divergence[sizeof m->divergence];
        m->train_seconds = train_network(net, &c, &train, "ibvi", c.seed + 7,
                                         &plain, divergence, sizeof divergence);
        mark_diverged(m, divergence);
        evaluate_network(net, c.test_samples, &c, &test, ood_set, m);
        if (c.save_path && m->diverged) {
            fprintf(stderr, "mnist_train: not saving the diverged IBVI network\n");
        } else if (c.save_path) {
            CHECK(ibvi_net_save(net, NULL, c.save_path));
            fprintf(stderr, "saved the IBVI network to %s\n", c.save_path);
        }
        ibvi_net_free(net);
    }
    if (has_method(&c, "mfvi")) {
        /* Mean-field VI: the ELBO per example, KL / N_train (times
         * --kl-weight: below 1 a tempered posterior). */
        ibvi_net *net = build_network(&c, &train, 0, 1, c.seed);
        method_result *m = add_method(&r, "mfvi");
        char divergence[sizeof m->divergence];
        const train_plan elbo = {c.epochs, c.kl_weight / (float)train.count,
                                 0.0f, NULL, 0, 0.0, NULL};
        m->train_seconds = train_network(net, &c, &train, "mfvi", c.seed + 11,
                                         &elbo, divergence, sizeof divergence);
        mark_diverged(m, divergence);
        evaluate_network(net, c.test_samples, &c, &test, ood_set, m);
        ibvi_net_free(net);
    }
    if (has_method(&c, "swag")) {
        /* SWAG (docs/swag.md): from the trained standard network's means,
         * --swag-epochs more epochs of SGD at the constant --swag-lr, with
         * --swag-rank snapshots spread evenly over them; K = --test-samples
         * weight samples of the Gaussian they define. */
        method_result *m = add_method(&r, "swag");
        m->train_seconds = standard_seconds[0];
        mark_diverged(m, standard_divergence[0]);
        if (!m->diverged) {
            ibvi_net *work = NULL, *post = NULL;
            CHECK(ibvi_net_create_like(&work, standard[0]));
            CHECK(ibvi_net_init(work, c.parameterization, c.seed + 13));
            for (int32_t i = 0; i < ibvi_net_layer_count(work); i++) {
                ibvi_layer *from, *to;
                CHECK(ibvi_net_layer(standard[0], i, &from));
                CHECK(ibvi_net_layer(work, i, &to));
                const int64_t P = ibvi_layer_param_count(from);
                if (P == 0)
                    continue;
                float *theta = malloc((size_t)P * sizeof *theta);
                if (!theta) {
                    fprintf(stderr, "mnist_train: out of memory\n");
                    return 1;
                }
                CHECK(ibvi_layer_get_mean(from, theta, P));
                CHECK(ibvi_layer_set_mean(to, theta, P));
                free(theta);
            }
            ibvi_swag_options so;
            CHECK(ibvi_swag_options_init(&so));
            so.rank = c.swag_rank;
            ibvi_swag *swag = NULL;
            CHECK(ibvi_swag_create(&swag, work, &so));
            const train_plan phase = {c.swag_epochs, 0.0f,
                                      c.swag_lr > 0.0f ? c.swag_lr : c.lr / 2,
                                      swag, c.swag_rank, standard_first_loss,
                                      NULL};
            char divergence[sizeof m->divergence];
            const double start = host_now_seconds();
            train_network(work, &c, &train, "swag", c.seed + 13, &phase,
                          divergence, sizeof divergence);
            mark_diverged(m, divergence);
            if (!m->diverged) {
                CHECK(ibvi_swag_build(swag, &post));
                /* The phase, its snapshots and the build. */
                m->train_seconds += host_now_seconds() - start;
                evaluate_network(post, c.test_samples, &c, &test, ood_set, m);
            }
            ibvi_net_free(post);
            ibvi_swag_free(swag);
            ibvi_net_free(work);
        }
    }
    if (laplace) {
        /* The last-layer Laplace approximation (docs/laplace.md) of the
         * trained standard network, fitted on the training set (the
         * validation split for --laplace-prior validation); the structure
         * by size unless --laplace says. "laplace": K = --test-samples
         * samples of the posterior network through the predictor;
         * "laplace-probit": the probit predictive, no sampling. */
        if (c.laplace_prior == IBVI_LAPLACE_PRIOR_VALIDATION &&
            validation.count == 0) {
            fprintf(stderr, "mnist_train: --laplace-prior validation needs "
                            "--validation > 0\n");
            return 2;
        }
        ibvi_laplace_options lo;
        CHECK(ibvi_laplace_options_init(&lo));
        ibvi_layer *last;
        CHECK(ibvi_net_layer(standard[0], ibvi_net_layer_count(standard[0]) - 1,
                             &last));
        const double P = (double)ibvi_layer_param_count(last);
        lo.structure = c.laplace_structure >= 0 ? c.laplace_structure
                       : 8.0 * P * P <= (double)lo.max_bytes
                           ? IBVI_LAPLACE_FULL : IBVI_LAPLACE_KFAC;
        lo.prior = c.laplace_prior;
        ibvi_laplace *la = NULL;
        double fit_seconds = 0.0;
        if (!standard_divergence[0][0]) {
            const double start = host_now_seconds();
            CHECK(ibvi_laplace_fit(&la, standard[0], &lo, train.images,
                                   train.labels, train.count,
                                   validation.count ? validation.images : NULL,
                                   validation.count ? validation.labels : NULL,
                                   validation.count));
            fit_seconds = host_now_seconds() - start;
            double lambda, marglik;
            CHECK(ibvi_laplace_prior_precision(la, &lambda));
            CHECK(ibvi_laplace_log_marglik(la, &marglik));
            fprintf(stderr, "laplace: %s, P = %.0f, prior precision %g (%s), "
                    "log marginal likelihood %.1f, fitted in %.1f s\n",
                    lo.structure == IBVI_LAPLACE_FULL ? "full" : "KFAC", P,
                    lambda, lo.prior == IBVI_LAPLACE_PRIOR_MARGLIK
                                ? "marginal likelihood" : "validation NLL",
                    marglik, fit_seconds);
        }
        if (has_method(&c, "laplace")) {
            method_result *m = add_method(&r, "laplace");
            m->train_seconds = standard_seconds[0] + fit_seconds;
            mark_diverged(m, standard_divergence[0]);
            if (la) {
                ibvi_net *post = NULL;
                const double start = host_now_seconds();
                CHECK(ibvi_laplace_build(la, standard[0], &post));
                m->train_seconds += host_now_seconds() - start;
                evaluate_network(post, c.test_samples, &c, &test, ood_set, m);
                ibvi_net_free(post);
            }
        }
        if (has_method(&c, "laplace-probit")) {
            method_result *m = add_method(&r, "laplace-probit");
            m->train_seconds = standard_seconds[0] + fit_seconds;
            mark_diverged(m, standard_divergence[0]);
            if (la) {
                /* The means and what the probit reads beyond them: FULL,
                 * C (in + 1)^2 doubles; KFAC, U_A, its eigenvalues, U_G^2
                 * and G's eigenvalues. */
                const double C = ibvi_net_output_dim(standard[0]);
                const double aug = P / C;
                m->model_floats = ibvi_net_param_count(standard[0]) +
                    (int64_t)(2.0 * (lo.structure == IBVI_LAPLACE_FULL
                                         ? C * aug * aug
                                         : aug * aug + aug + 2 * C * C + C));
                laplace_ctx ctx = {la, standard[0], test.classes};
                evaluate_with(laplace_probit_predict, &ctx, c.corruptions,
                              c.seed, &test, ood_set, m);
            }
        }
        ibvi_laplace_free(la);
    }
    for (int i = 0; i < members; i++)
        ibvi_net_free(standard[i]);

    report_print_table(&r, stdout);
    if (c.json_path && report_write_json(&r, c.json_path) < 0) {
        perror(c.json_path);
        return 1;
    }
    if (c.svg_path && report_write_svg(&r, c.svg_path) < 0) {
        perror(c.svg_path);
        return 1;
    }
    dataset_free(&train);
    dataset_free(&test);
    dataset_free(&validation);
    if (c.ood_dir)
        dataset_free(&ood);
    return 0;
}
