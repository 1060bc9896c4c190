/*
 * binary - binary classification with uncertainty: two classes of an
 * MNIST-style data set, a network with one output trained with the binary
 * cross-entropy, predicted with the sigmoid head.
 *
 *   binary --data /usr/share/datasets/fashion-mnist [--classes 5,7] [--json F]
 *
 * The network learns class a (label 0) against class b (label 1); the test
 * images of the other classes are the out-of-distribution set. It compares a
 * standard network, IBVI (rank on the first and last layers) and a deep
 * ensemble: accuracy, NLL, ECE and Brier on the two classes, the AUROC of
 * p(b) separating them, and the OOD AUROC of the predictive entropy and of
 * the mutual information. Training is SGD with momentum and cosine decay,
 * checked for divergence (divergence.h). Host code against the public API.
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

#include <ibvi/ibvi.h>

#include "dataset.h"
#include "host.h"
#include "divergence.h"

#define MAX_MEMBERS 16
#define CHUNK 1000

typedef struct config {
    const char *data_dir, *json_path;
    char methods[64];
    int32_t class_a, class_b, width, rank, ensemble, test_samples, batch;
    int epochs;
    int64_t train_limit;
    float lr, momentum;
    uint64_t seed;
} config;

typedef struct result {
    char name[32];
    int diverged;
    char divergence[160];
    double accuracy, nll, ece, brier, auroc, ood_entropy, ood_mi, seconds;
} result;

static void die(const char *what, int status)
{
    fprintf(stderr, "binary: %s: %s (%s)\n", what, ibvi_status_string(status),
            ibvi_last_error());
    exit(1);
}

#define CHECK(call)                      \
    do {                                 \
        int status_ = (call);            \
        if (status_ < 0)                 \
            die(#call, status_);         \
    } while (0)

static void *xmalloc(size_t bytes)
{
    void *p = malloc(bytes ? bytes : 1);
    if (!p) {
        fprintf(stderr, "binary: out of memory\n");
        exit(1);
    }
    return p;
}

/* The images of d whose label is a or b (relabelled 0 and 1; in: 1) or
 * neither (in: 0, labels kept), at most `limit` of them (0: all). */
static dataset select_classes(const dataset *d, int32_t a, int32_t b, int in,
                              int64_t limit)
{
    dataset out = *d;
    out.count = 0;
    out.images = xmalloc((size_t)d->count * d->dim * sizeof(float));
    out.labels = xmalloc((size_t)d->count * sizeof(int32_t));
    for (int64_t i = 0; i < d->count && (!limit || out.count < limit); i++) {
        const int32_t y = d->labels[i];
        if ((y == a || y == b) != in)
            continue;
        memcpy(out.images + out.count * d->dim, d->images + i * d->dim,
               (size_t)d->dim * sizeof(float));
        out.labels[out.count++] = in ? (y == b) : y;
    }
    out.classes = in ? 2 : d->classes;
    return out;
}

static ibvi_net *build_network(const config *c, int32_t dim, int32_t rank,
                               uint64_t seed)
{
    ibvi_net *net;
    CHECK(ibvi_net_create(&net, dim, NULL));
    CHECK(ibvi_net_add_dense(net, c->width, rank));
    CHECK(ibvi_net_add_activation(net, IBVI_ACT_RELU));
    CHECK(ibvi_net_add_dense(net, c->width, 0));
    CHECK(ibvi_net_add_activation(net, IBVI_ACT_RELU));
    CHECK(ibvi_net_add_dense(net, 1, rank));
    CHECK(ibvi_net_init(net, IBVI_PARAM_MUP, seed));
    return net;
}

static double train_network(ibvi_net *net, const config *c, const dataset *train,
                            const char *name, uint64_t seed, char *why,
                            size_t why_size)
{
    ibvi_optimizer *opt;
    CHECK(ibvi_optimizer_create(&opt, net, IBVI_OPT_SGD, c->lr));
    CHECK(ibvi_optimizer_set_momentum(opt, c->momentum, 0));
    CHECK(ibvi_net_reserve(net, c->batch, 1));
    int64_t *order = xmalloc((size_t)train->count * sizeof *order);
    float *x = xmalloc((size_t)c->batch * train->dim * sizeof *x);
    float *t = xmalloc((size_t)c->batch * sizeof *t);
    for (int64_t i = 0; i < train->count; i++)
        order[i] = i;
    uint64_t state = seed;
    const int64_t steps = (train->count + c->batch - 1) / c->batch;
    const double total = (double)steps * c->epochs, start = host_now_seconds();
    int64_t step = 0;
    double first_loss = 0;
    why[0] = '\0';
    for (int epoch = 1; epoch <= c->epochs && !why[0]; epoch++) {
        for (int64_t i = train->count - 1; i > 0; i--) {
            const int64_t j = (int64_t)(host_next_random(&state) % (uint64_t)(i + 1));
            const int64_t tmp = order[i];
            order[i] = order[j];
            order[j] = tmp;
        }
        double loss_sum = 0;
        for (int64_t b = 0; b < train->count; b += c->batch) {
            const int64_t n = train->count - b < c->batch ? train->count - b : c->batch;
            for (int64_t i = 0; i < n; i++) {
                memcpy(x + i * train->dim, train->images + order[b + i] * train->dim,
                       (size_t)train->dim * sizeof *x);
                t[i] = (float)train->labels[order[b + i]];
            }
            CHECK(ibvi_optimizer_set_lr(opt, (float)(c->lr * 0.5 *
                (1.0 + cos(3.14159265358979 * (double)step++ / total)))));
            float loss;
            const int status = ibvi_train_step(net, opt, x, n, 1, IBVI_LOSS_BINARY_XENT,
                                               NULL, t, &loss);
            if (status == IBVI_ERR_NONFINITE) {
                divergence_nonfinite(why, why_size, epoch);
                break;
            }
            if (status < 0)
                die("ibvi_train_step", status);
            if (step == 1)
                first_loss = loss;
            loss_sum += loss * (double)n;
        }
        if (why[0])
            break;
        fprintf(stderr, "%-12s epoch %2d/%-2d loss %.4f\n", name, epoch, c->epochs,
                loss_sum / train->count);
        divergence_epoch(why, why_size, epoch, loss_sum / train->count, first_loss);
    }
    if (why[0])
        fprintf(stderr, "binary: %s diverged (%s): training stopped\n", name, why);
    free(order);
    free(x);
    free(t);
    ibvi_optimizer_free(opt);
    return host_now_seconds() - start;
}

/* Predicts d in chunks: probabilities [1 - p, p], predictive entropy and
 * mutual information per image. */
static void predict(ibvi_predictor *pred, const dataset *d, float *probs,
                    float *entropy, float *mi)
{
    for (int64_t s = 0; s < d->count; s += CHUNK) {
        const int64_t n = d->count - s < CHUNK ? d->count - s : CHUNK;
        CHECK(ibvi_predictor_run(pred, d->images + s * d->dim, n, probs + 2 * s,
                                 entropy + s, NULL, mi + s));
    }
}

static void evaluate(ibvi_predictor *pred, const dataset *test, const dataset *ood,
                     result *r)
{
    ibvi_head_options head;
    CHECK(ibvi_head_options_init(&head, IBVI_HEAD_SIGMOID));
    CHECK(ibvi_predictor_set_head(pred, &head));
    float *probs = xmalloc((size_t)test->count * 2 * sizeof *probs);
    float *ent = xmalloc((size_t)test->count * sizeof *ent);
    float *mi = xmalloc((size_t)test->count * sizeof *mi);
    float *ood_probs = xmalloc((size_t)ood->count * 2 * sizeof *ood_probs);
    float *ood_ent = xmalloc((size_t)ood->count * sizeof *ood_ent);
    float *ood_mi = xmalloc((size_t)ood->count * sizeof *ood_mi);
    predict(pred, test, probs, ent, mi);
    predict(pred, ood, ood_probs, ood_ent, ood_mi);
    ibvi_metrics *m;
    CHECK(ibvi_metrics_create(&m, 2, NULL));
    CHECK(ibvi_metrics_add(m, probs, test->count, test->labels));
    CHECK(ibvi_metrics_accuracy(m, &r->accuracy));
    CHECK(ibvi_metrics_nll(m, &r->nll));
    CHECK(ibvi_metrics_ece(m, &r->ece));
    CHECK(ibvi_metrics_brier(m, &r->brier));
    ibvi_metrics_free(m);
    /* AUROC of p(b) separating class a (the "in" scores) from class b. */
    float *pa = xmalloc((size_t)test->count * sizeof *pa);
    float *pb = xmalloc((size_t)test->count * sizeof *pb);
    int64_t na = 0, nb = 0;
    for (int64_t i = 0; i < test->count; i++) {
        if (test->labels[i])
            pb[nb++] = probs[2 * i + 1];
        else
            pa[na++] = probs[2 * i + 1];
    }
    CHECK(ibvi_auroc(&r->auroc, pa, na, pb, nb));
    CHECK(ibvi_auroc(&r->ood_entropy, ent, test->count, ood_ent, ood->count));
    CHECK(ibvi_auroc(&r->ood_mi, mi, test->count, ood_mi, ood->count));
    free(pa);
    free(pb);
    free(probs);
    free(ent);
    free(mi);
    free(ood_probs);
    free(ood_ent);
    free(ood_mi);
}

static void usage(FILE *out)
{
    fprintf(out,
        "usage: binary --data DIR [options]\n"
        "  --data DIR          IDX files (e.g. /usr/share/datasets/fashion-mnist)\n"
        "  --classes A,B       the two classes: A is 0, B is 1 (default 5,7:\n"
        "                      Fashion-MNIST's sandal and sneaker); the other\n"
        "                      classes' test images are the OOD set\n"
        "  --methods LIST      comma list of standard, ibvi, ensemble (default all)\n"
        "  --ensemble N        members of the deep ensemble (default 3)\n"
        "  --width W           two hidden ReLU layers of W (default 128)\n"
        "  --rank R            covariance rank of first and last layer (default 5)\n"
        "  --epochs N          epochs (default 3)\n"
        "  --lr X              base learning rate, cosine decay (default 0.02)\n"
        "  --momentum X        SGD momentum (default 0.9)\n"
        "  --batch N           minibatch size (default 64)\n"
        "  --test-samples K    IBVI weight samples at test time (default 32)\n"
        "  --train-limit N     at most N training images of the two classes\n"
        "  --seed N            seed (default 1)\n"
        "  --json FILE         write the results as JSON (docs/json-schema.md)\n");
}

static int has_method(const config *c, const char *name)
{
    char buf[64];
    snprintf(buf, sizeof buf, "%s", c->methods);
    for (char *tok = strtok(buf, ","); tok; tok = strtok(NULL, ","))
        if (strcmp(tok, name) == 0)
            return 1;
    return 0;
}

static int known_methods(const config *c)
{
    char buf[64];
    snprintf(buf, sizeof buf, "%s", c->methods);
    for (char *tok = strtok(buf, ","); tok; tok = strtok(NULL, ","))
        if (strcmp(tok, "standard") && strcmp(tok, "ibvi") && strcmp(tok, "ensemble"))
            return 0;
    return 1;
}

static void parse_options(config *c, int argc, char **argv)
{
    *c = (config){.class_a = 5, .class_b = 7, .width = 128, .rank = 5,
                  .ensemble = 3, .test_samples = 32, .batch = 64, .epochs = 3,
                  .lr = 0.02f, .momentum = 0.9f, .seed = 1};
    snprintf(c->methods, sizeof c->methods, "standard,ibvi,ensemble");
    static const struct option options[] = {
        {"data", required_argument, 0, 'd'}, {"classes", required_argument, 0, 'c'},
        {"methods", required_argument, 0, 'm'}, {"ensemble", required_argument, 0, 'E'},
        {"width", required_argument, 0, 'w'}, {"rank", required_argument, 0, 'r'},
        {"epochs", required_argument, 0, 'e'}, {"lr", required_argument, 0, 'l'},
        {"momentum", required_argument, 0, 'M'}, {"batch", required_argument, 0, 'b'},
        {"test-samples", required_argument, 0, 'K'},
        {"train-limit", required_argument, 0, 'L'}, {"seed", required_argument, 0, 's'},
        {"json", required_argument, 0, 'j'}, {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0}};
    int opt;
    while ((opt = getopt_long(argc, argv, "h", options, NULL)) != -1) {
        switch (opt) {
        case 'd': c->data_dir = optarg; break;
        case 'c':
            if (sscanf(optarg, "%d,%d", &c->class_a, &c->class_b) != 2) {
                fprintf(stderr, "binary: --classes is A,B\n");
                exit(2);
            }
            break;
        case 'm': snprintf(c->methods, sizeof c->methods, "%s", optarg); break;
        case 'E': c->ensemble = atoi(optarg); break;
        case 'w': c->width = atoi(optarg); break;
        case 'r': c->rank = atoi(optarg); break;
        case 'e': c->epochs = atoi(optarg); break;
        case 'l': c->lr = strtof(optarg, NULL); break;
        case 'M': c->momentum = strtof(optarg, NULL); break;
        case 'b': c->batch = atoi(optarg); break;
        case 'K': c->test_samples = atoi(optarg); break;
        case 'L': c->train_limit = atoll(optarg); break;
        case 's': c->seed = strtoull(optarg, NULL, 10); break;
        case 'j': c->json_path = optarg; break;
        case 'h': usage(stdout); exit(0);
        default: usage(stderr); exit(2);
        }
    }
    if (!c->data_dir || c->class_a == c->class_b || c->class_a < 0 ||
        c->class_b < 0 || c->width < 1 || c->rank < 1 || c->epochs < 1 ||
        c->batch < 1 || c->ensemble < 1 || c->ensemble > MAX_MEMBERS ||
        c->test_samples < 1 || c->train_limit < 0 || !known_methods(c)) {
        usage(stderr);
        exit(2);
    }
}

static void json_number(FILE *f, const char *key, double v, int diverged)
{
    if (diverged)
        fprintf(f, ", \"%s\": null", key);
    else
        fprintf(f, ", \"%s\": %.6f", key, v);
}

int main(int argc, char **argv)
{
    config c;
    parse_options(&c, argc, argv);
    fprintf(stderr, "libibvi %s\n", ibvi_version_string());
    dataset all_train, all_test;
    char err[512];
    if (dataset_load(&all_train, c.data_dir, "train", err, sizeof err) < 0 ||
        dataset_load(&all_test, c.data_dir, "t10k", err, sizeof err) < 0) {
        fprintf(stderr, "binary: %s\n", err);
        return 1;
    }
    if (c.class_a >= all_train.classes || c.class_b >= all_train.classes) {
        fprintf(stderr, "binary: the data has classes 0..%d\n", all_train.classes - 1);
        return 2;
    }
    dataset train = select_classes(&all_train, c.class_a, c.class_b, 1, c.train_limit);
    dataset test = select_classes(&all_test, c.class_a, c.class_b, 1, 0);
    dataset ood = select_classes(&all_test, c.class_a, c.class_b, 0, 0);
    dataset_free(&all_train);
    dataset_free(&all_test);
    fprintf(stderr, "classes %d (0) vs %d (1): %lld train, %lld test, %lld OOD "
                    "images; MLP %d-%d-%d-1, rank %d, muP, %d epochs, lr %g\n",
            c.class_a, c.class_b, (long long)train.count, (long long)test.count,
            (long long)ood.count, train.dim, c.width, c.width, c.rank, c.epochs,
            (double)c.lr);

    result results[3];
    int count = 0;
    static const char *const methods[] = {"standard", "ibvi", "ensemble"};
    for (int k = 0; k < 3; k++) {
        if (!has_method(&c, methods[k]))
            continue;
        result *r = &results[count++];
        memset(r, 0, sizeof *r);
        const int ibvi = k == 1, members = k == 2 ? c.ensemble : 1;
        if (k == 2)
            snprintf(r->name, sizeof r->name, "ensemble-%d", members);
        else
            snprintf(r->name, sizeof r->name, "%s", methods[k]);
        ibvi_net *nets[MAX_MEMBERS];
        for (int i = 0; i < members; i++) {
            char name[48], why[sizeof r->divergence];
            snprintf(name, sizeof name, members > 1 ? "%s/%d" : "%s", r->name, i);
            nets[i] = build_network(&c, train.dim, ibvi ? c.rank : 0, c.seed + 100 * i);
            r->seconds += train_network(nets[i], &c, &train, name, c.seed + 100 * i + 7,
                                        why, sizeof why);
            if (why[0] && !r->diverged) {
                r->diverged = 1;
                if (members > 1)
                    snprintf(r->divergence, sizeof r->divergence, "member %d, %.140s",
                             i, why);
                else
                    snprintf(r->divergence, sizeof r->divergence, "%s", why);
            }
        }
        if (!r->diverged) {
            ibvi_predictor *pred;
            if (members > 1)
                CHECK(ibvi_predictor_create_ensemble(&pred, nets, members, 1, c.seed));
            else
                CHECK(ibvi_predictor_create(&pred, nets[0], ibvi ? c.test_samples : 1,
                                            c.seed));
            evaluate(pred, &test, &ood, r);
            ibvi_predictor_free(pred);
        }
        for (int i = 0; i < members; i++)
            ibvi_net_free(nets[i]);
    }

    printf("\nclasses %d vs %d: %lld test images, %lld OOD (the other classes); "
           "NLL in nats, ECE with 15 bins\n", c.class_a, c.class_b,
           (long long)test.count, (long long)ood.count);
    printf("%-12s %8s %8s %8s %8s %8s %12s %12s %8s\n", "method", "acc %", "NLL",
           "ECE %", "Brier", "AUROC", "OOD AUROC H", "OOD AUROC MI", "train s");
    for (int i = 0; i < count; i++) {
        const result *r = &results[i];
        if (r->diverged) {
            printf("%-12s diverged (%s): not evaluated\n", r->name, r->divergence);
            continue;
        }
        printf("%-12s %8.2f %8.4f %8.2f %8.4f %8.4f %12.4f %12.4f %8.1f\n", r->name,
               100 * r->accuracy, r->nll, 100 * r->ece, r->brier, r->auroc,
               r->ood_entropy, r->ood_mi, r->seconds);
    }
    if (c.json_path) {
        FILE *f = fopen(c.json_path, "w");
        if (!f) {
            perror(c.json_path);
            return 1;
        }
        fprintf(f, "{\n  \"schema\": \"libibvi-binary/1\",\n  \"classes\": [%d, %d],\n"
                   "  \"config\": {\"width\": %d, \"rank\": %d, \"epochs\": %d, "
                   "\"lr\": %g, \"momentum\": %g, \"batch\": %d, \"test_samples\": %d, "
                   "\"ensemble\": %d, \"seed\": %llu, \"train_images\": %lld, "
                   "\"test_images\": %lld, \"ood_images\": %lld},\n  \"methods\": [\n",
                c.class_a, c.class_b, c.width, c.rank, c.epochs, (double)c.lr,
                (double)c.momentum, c.batch, c.test_samples, c.ensemble,
                (unsigned long long)c.seed, (long long)train.count,
                (long long)test.count, (long long)ood.count);
        for (int i = 0; i < count; i++) {
            const result *r = &results[i];
            fprintf(f, "    {\"name\": \"%s\", \"diverged\": %s", r->name,
                    r->diverged ? "true" : "false");
            if (r->diverged)
                fprintf(f, ", \"divergence\": \"%s\"", r->divergence);
            json_number(f, "accuracy", r->accuracy, r->diverged);
            json_number(f, "nll", r->nll, r->diverged);
            json_number(f, "ece", r->ece, r->diverged);
            json_number(f, "brier", r->brier, r->diverged);
            json_number(f, "auroc", r->auroc, r->diverged);
            json_number(f, "ood_auroc_entropy", r->ood_entropy, r->diverged);
            json_number(f, "ood_auroc_mi", r->ood_mi, r->diverged);
            fprintf(f, ", \"train_seconds\": %.3f}%s\n", r->seconds,
                    i + 1 < count ? "," : "");
        }
        fprintf(f, "  ]\n}\n");
        if (fclose(f) != 0) {
            perror(c.json_path);
            return 1;
        }
    }
    dataset_free(&train);
    dataset_free(&test);
    dataset_free(&ood);
    return 0;
}
