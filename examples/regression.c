/*
 * regression - regression with uncertainty: standard networks, IBVI and deep
 * ensembles through the predictor's regression heads.
 *
 *   regression [--dataset diabetes] [--json FILE]
 *   regression --dataset toy --svg toy.svg [--json FILE]
 *
 * diabetes: the 442-patient diabetes data (10 features, a disease
 *   progression score one year later) that Debian's python3-sklearn ships as
 *   whitespace-separated text in diabetes_data_raw.csv.gz and
 *   diabetes_target.csv.gz (read here with zlib). A seeded split keeps 100
 *   patients for the test and 42 of the other 342 for validation; features
 *   and target are standardised with the 300 training patients' mean and
 *   standard deviation, and every metric is reported in the target's own
 *   units.
 * toy: the 1-D picture of docs/results.md: 40 training points in two
 *   clusters, x in [-1, -0.3] and [0.3, 1], y = sin(3x) + N(0, 0.1^2). The
 *   SVG shows each method's predictive mean and 95% interval on [-2, 2];
 *   the table adds the predictive standard deviation at the data, in the
 *   gap (x = 0) and far out (|x| = 2).
 *
 * Methods (--methods): standard, ibvi and ensemble train with the squared
 * error and predict with the homoscedastic regression head, its noise std
 * sigma fitted on the validation data by ibvi_fit_noise_std (with the
 * method's epistemic variance); standard-het, ibvi-het and ensemble-het
 * have a second output, the log-variance, train with the Gaussian NLL and
 * predict with the heteroscedastic head. Training is SGD with momentum and
 * cosine decay; a diverging run is reported as such (divergence.h).
 * Everything here is host code against libibvi's public API.
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
#include <zlib.h>

#include <ibvi/ibvi.h>

#include "divergence.h"
#include "host.h"
#include "report.h"

#define MAX_HIDDEN 4
#define MAX_MEMBERS 16
#define SKLEARN_DATA "/usr/lib/python3/dist-packages/sklearn/datasets/data"

/* The interval levels of the coverage columns, and those of the
 * calibration error: 0.05, 0.10, ..., 0.95. */
static const double coverage_levels[3] = {0.5, 0.9, 0.95};
#define CAL_LEVELS 19

typedef struct config {
    const char *dataset, *data_dir, *json_path, *svg_path;
    char methods[160];
    int32_t hidden[MAX_HIDDEN];
    int hidden_count;
    int32_t rank, ensemble, test_samples, batch, threads, activation;
    int epochs;
    float lr, momentum;
    uint64_t seed;
} config;

/* n points of dim features and one target. */
typedef struct data {
    float *x, *y;
    int64_t n;
    int32_t dim;
} data;

typedef struct result {
    char name[32];
    int diverged;
    char divergence[160];
    double rmse, nll, coverage[3], calibration, crps, noise_std, seconds;
    /* toy only: the epistemic standard deviation (the spread of the sampled
     * networks' means) averaged over the training points, at x = 0 (the
     * gap between the clusters) and at |x| = 2 (the mean of x = -2 and 2) */
    double std_data, std_gap, std_far;
} result;

static void die(const char *what, int status)
{
    fprintf(stderr, "regression: %s: %s (%s)\n", what, ibvi_status_string(status),
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
        fprintf(stderr, "regression: out of memory\n");
        exit(1);
    }
    return p;
}

static double uniform(uint64_t *state)
{
    return (double)(host_next_random(state) >> 11) * 0x1.0p-53;
}

static double gaussian(uint64_t *state)
{
    double u = uniform(state), v = uniform(state);
    if (u < 1e-300)
        u = 1e-300;
    return sqrt(-2.0 * log(u)) * cos(6.283185307179586 * v);
}

/* ---- data ------------------------------------------------------------------ */

/* Reads a gzip'd whitespace-separated table of numbers (no header) into
 * *values; returns the number of rows (each with *cols numbers) or -1. */
static int64_t read_table(const char *path, float **values, int32_t *cols)
{
    gzFile f = gzopen(path, "rb");
    if (!f)
        return -1;
    size_t cap = 4096, count = 0;
    float *v = xmalloc(cap * sizeof *v);
    char line[4096];
    int64_t rows = 0;
    *cols = 0;
    while (gzgets(f, line, sizeof line)) {
        int32_t in_row = 0;
        char *p = line, *end;
        for (;;) {
            double d = strtod(p, &end);
            if (end == p)
                break;
            if (count == cap)
                v = realloc(v, (cap *= 2) * sizeof *v);
            if (!v) {
                fprintf(stderr, "regression: out of memory\n");
                exit(1);
            }
            v[count++] = (float)d;
            in_row++;
            p = end;
        }
        while (*p == ' ' || *p == '\t' || *p == '\r' || *p == '\n')
            p++;
        if (*p != '\0' || (in_row == 0 && rows == 0)) {
            fprintf(stderr, "regression: %s: not a table of numbers at row %lld\n",
                    path, (long long)rows + 1);
            gzclose(f);
            free(v);
            return -1;
        }
        if (in_row == 0)
            continue;
        if (rows == 0)
            *cols = in_row;
        if (in_row != *cols) {
            fprintf(stderr, "regression: %s: row %lld has %d numbers, not %d\n",
                    path, (long long)rows + 1, in_row, *cols);
            gzclose(f);
            free(v);
            return -1;
        }
        rows++;
    }
    gzclose(f);
    *values = v;
    return rows;
}

static data alloc_data(int64_t n, int32_t dim)
{
    data d = {xmalloc((size_t)n * dim * sizeof(float)),
              xmalloc((size_t)n * sizeof(float)), n, dim};
    return d;
}

static void free_data(data *d)
{
    free(d->x);
    free(d->y);
}

/* Standardisation of features and target with the training set's mean and
 * standard deviation (the metrics undo it for the target). */
typedef struct scaling {
    double x_mean[64], x_std[64], y_mean, y_std;
} scaling;

static void fit_scaling(scaling *s, const data *d)
{
    for (int32_t j = 0; j <= d->dim; j++) {
        double sum = 0, sq = 0;
        for (int64_t i = 0; i < d->n; i++) {
            const double v = j < d->dim ? d->x[i * d->dim + j] : d->y[i];
            sum += v;
            sq += v * v;
        }
        const double mean = sum / d->n;
        double sd = sqrt(fmax(sq / d->n - mean * mean, 0.0));
        if (sd < 1e-12)
            sd = 1.0;
        if (j < d->dim) {
            s->x_mean[j] = mean;
            s->x_std[j] = sd;
        } else {
            s->y_mean = mean;
            s->y_std = sd;
        }
    }
}

static void apply_scaling(const scaling *s, data *d)
{
    for (int64_t i = 0; i < d->n; i++) {
        for (int32_t j = 0; j < d->dim; j++)
            d->x[i * d->dim + j] =
                (float)((d->x[i * d->dim + j] - s->x_mean[j]) / s->x_std[j]);
        d->y[i] = (float)((d->y[i] - s->y_mean) / s->y_std);
    }
}

/* The diabetes data, split 300 train / 42 validation / 100 test with the
 * seed. */
static void load_diabetes(const config *c, data *train, data *val, data *test)
{
    char path[1024];
    float *x, *y;
    int32_t dim, one;
    snprintf(path, sizeof path, "%s/diabetes_data_raw.csv.gz", c->data_dir);
    const int64_t n = read_table(path, &x, &dim);
    snprintf(path, sizeof path, "%s/diabetes_target.csv.gz", c->data_dir);
    const int64_t m = n > 0 ? read_table(path, &y, &one) : -1;
    if (n < 0 || m < 0) {
        fprintf(stderr, "regression: cannot read %s (apt-get install "
                        "python3-sklearn, or give --data-dir)\n", path);
        exit(1);
    }
    if (m != n || one != 1 || dim > 64 || n < 150) {
        fprintf(stderr, "regression: %s: %lld targets for %lld rows of %d "
                        "features\n", c->data_dir, (long long)m, (long long)n, dim);
        exit(1);
    }
    int64_t *order = xmalloc((size_t)n * sizeof *order);
    for (int64_t i = 0; i < n; i++)
        order[i] = i;
    uint64_t state = c->seed;
    host_shuffle(order, n, &state);
    const int64_t n_test = 100, n_val = 42, n_train = n - n_test - n_val;
    *train = alloc_data(n_train, dim);
    *val = alloc_data(n_val, dim);
    *test = alloc_data(n_test, dim);
    for (int64_t k = 0; k < n; k++) {
        data *d = k < n_train ? train : k < n_train + n_val ? val : test;
        const int64_t i = k < n_train ? k : k < n_train + n_val ? k - n_train
                                                                : k - n_train - n_val;
        memcpy(d->x + i * dim, x + order[k] * dim, (size_t)dim * sizeof *x);
        d->y[i] = y[order[k]];
    }
    free(order);
    free(x);
    free(y);
}

/* The toy: points in two clusters, x in [-1, -0.3] u [0.3, 1]. */
static data toy_points(int64_t n, uint64_t *state)
{
    data d = alloc_data(n, 1);
    for (int64_t i = 0; i < n; i++) {
        const double u = 0.3 + 0.7 * uniform(state);
        const double x = i % 2 ? u : -u;
        d.x[i] = (float)x;
        d.y[i] = (float)(sin(3.0 * x) + 0.1 * gaussian(state));
    }
    return d;
}

/* ---- networks and training ------------------------------------------------- */

static ibvi_net *build_network(const config *c, int32_t dim, int32_t outputs,
                               int32_t rank, uint64_t seed)
{
    ibvi_net *net;
    CHECK(ibvi_net_create(&net, dim, NULL));
    for (int i = 0; i < c->hidden_count; i++) {
        CHECK(ibvi_net_add_dense(net, c->hidden[i], i == 0 ? rank : 0));
        CHECK(ibvi_net_add_activation(net, c->activation));
    }
    CHECK(ibvi_net_add_dense(net, outputs, rank));
    CHECK(ibvi_net_init(net, IBVI_PARAM_MUP, seed));
    CHECK(ibvi_net_set_threads(net, c->threads));
    return net;
}

/* SGD + momentum, cosine decay; the squared error for one output, the
 * Gaussian NLL for two (mean, log-variance). Returns seconds; on divergence
 * writes why. */
static double train_network(ibvi_net *net, const config *c, const data *train,
                            const char *name, uint64_t seed, char *why,
                            size_t why_size)
{
    const int hetero = ibvi_net_output_dim(net) == 2;
    const int32_t loss_kind = hetero ? IBVI_LOSS_GAUSSIAN_NLL : IBVI_LOSS_SQUARED;
    /* The Gaussian NLL's lowest value per output (divergence.h). */
    const double floor = 0.5 * (log(2 * 3.14159265358979) + IBVI_LOG_VAR_MIN);
    ibvi_optimizer *opt;
    CHECK(ibvi_optimizer_create(&opt, net, IBVI_OPT_SGD, c->lr));
    CHECK(ibvi_optimizer_set_momentum(opt, c->momentum, 0));
    const int32_t batch = c->batch < train->n ? c->batch : (int32_t)train->n;
    CHECK(ibvi_net_reserve(net, batch, 1));
    int64_t *order = xmalloc((size_t)train->n * sizeof *order);
    float *x = xmalloc((size_t)batch * train->dim * sizeof *x);
    float *y = xmalloc((size_t)batch * sizeof *y);
    for (int64_t i = 0; i < train->n; i++)
        order[i] = i;
    uint64_t state = seed;
    const int64_t steps_per_epoch = (train->n + batch - 1) / batch;
    const double total = (double)steps_per_epoch * c->epochs, start = host_now_seconds();
    int64_t step = 0;
    /* With few points an epoch is a handful of steps, too few to average
     * momentum's first swings out: the check (divergence.h) is applied to
     * windows of at least CHECK_STEPS steps (`window` epochs), numbered as
     * epochs. */
    enum { CHECK_STEPS = 200 };
    const int window = (int)((CHECK_STEPS + steps_per_epoch - 1) / steps_per_epoch);
    double first_loss = 0, loss_sum = 0, last_mean = 0;
    int64_t window_count = 0;
    int epochs_run = 0;
    why[0] = '\0';
    for (int epoch = 1; epoch <= c->epochs && !why[0]; epoch++) {
        host_shuffle(order, train->n, &state);
        epochs_run = epoch;
        for (int64_t b = 0; b < train->n; b += batch) {
            const int64_t n = train->n - b < batch ? train->n - b : batch;
            for (int64_t i = 0; i < n; i++) {
                memcpy(x + i * train->dim, train->x + order[b + i] * train->dim,
                       (size_t)train->dim * sizeof *x);
                y[i] = train->y[order[b + i]];
            }
            CHECK(ibvi_optimizer_set_lr(opt, (float)(c->lr * 0.5 *
                (1.0 + cos(3.14159265358979 * (double)step++ / total)))));
            float loss;
            const int status = ibvi_train_step(net, opt, x, n, 1, loss_kind, NULL,
                                               y, &loss);
            if (status == IBVI_ERR_NONFINITE) {
                divergence_nonfinite(why, why_size, epoch);
                break;
            }
            if (status < 0)
                die("ibvi_train_step", status);
            if (step == 1)
                first_loss = loss;
            loss_sum += loss * (double)n;
            window_count += n;
        }
        if (why[0])
            break;
        if (epoch % window && epoch != c->epochs)
            continue;
        /* The window's mean; its "epoch" number for rule 3 is 1 for the
         * first window, 2 after. */
        last_mean = loss_sum / (double)window_count;
        const int check = epoch > window ? 2 : 1;
        if (hetero ? divergence_epoch_shifted(why, why_size, check, last_mean,
                                              first_loss, floor)
                   : divergence_epoch(why, why_size, check, last_mean, first_loss))
            snprintf(why, why_size, "epochs %d-%d: mean training loss %.4g, first "
                     "step's %.4g", epoch - (epoch - 1) % window, epoch, last_mean,
                     first_loss);
        loss_sum = 0;
        window_count = 0;
    }
    const double seconds = host_now_seconds() - start;
    fprintf(stderr, "%-14s %d epochs, last mean training loss %.4f%s%s\n", name,
            epochs_run, last_mean, why[0] ? ": DIVERGED, " : "", why);
    free(order);
    free(x);
    free(y);
    ibvi_optimizer_free(opt);
    return seconds;
}

/* ---- prediction and metrics -------------------------------------------------- */

/* Runs the predictor on d; mean and var (epistemic + aleatoric) in
 * standardised units; var_epistemic may be NULL. */
static void predict(ibvi_predictor *pred, const data *d, float *mean, float *var,
                    float *var_epistemic)
{
    float *ep = xmalloc((size_t)d->n * sizeof *ep);
    float *al = xmalloc((size_t)d->n * sizeof *al);
    CHECK(ibvi_predictor_run_regression(pred, d->x, d->n, mean, ep, al, NULL));
    for (int64_t i = 0; i < d->n; i++)
        var[i] = ep[i] + al[i];
    if (var_epistemic)
        memcpy(var_epistemic, ep, (size_t)d->n * sizeof *ep);
    free(ep);
    free(al);
}

/* Builds the predictor's head: for one output the homoscedastic head with
 * sigma fitted on the validation set, for two the heteroscedastic head. */
static void set_head(ibvi_predictor *pred, int hetero, const data *val,
                     result *r)
{
    ibvi_head_options head;
    if (hetero) {
        CHECK(ibvi_head_options_init(&head, IBVI_HEAD_HETEROSCEDASTIC));
        CHECK(ibvi_predictor_set_head(pred, &head));
        r->noise_std = NAN;
        return;
    }
    CHECK(ibvi_head_options_init(&head, IBVI_HEAD_REGRESSION));
    CHECK(ibvi_predictor_set_head(pred, &head));
    float *mean = xmalloc((size_t)val->n * sizeof *mean);
    float *var = xmalloc((size_t)val->n * sizeof *var);
    float *ep = xmalloc((size_t)val->n * sizeof *ep);
    predict(pred, val, mean, var, ep);
    float sigma;
    CHECK(ibvi_fit_noise_std(mean, ep, val->y, val->n, 1, &sigma));
    /* A sigma of 0 is possible when the epistemic variance covers every
     * validation residual; keep the variance positive for the metrics. */
    head.noise_std = sigma > 1e-6f ? sigma : 1e-6f;
    CHECK(ibvi_predictor_set_head(pred, &head));
    r->noise_std = head.noise_std;
    free(mean);
    free(var);
    free(ep);
}

/* The metrics of one method on the test set, in the target's units. */
static void score(ibvi_predictor *pred, const data *test, const scaling *s,
                  result *r)
{
    const int64_t n = test->n;
    float *mean = xmalloc((size_t)n * sizeof *mean);
    float *var = xmalloc((size_t)n * sizeof *var);
    float *y = xmalloc((size_t)n * sizeof *y);
    predict(pred, test, mean, var, NULL);
    for (int64_t i = 0; i < n; i++) {
        mean[i] = (float)(mean[i] * s->y_std + s->y_mean);
        var[i] = (float)(var[i] * s->y_std * s->y_std);
        y[i] = (float)(test->y[i] * s->y_std + s->y_mean);
    }
    double levels[CAL_LEVELS];
    for (int k = 0; k < CAL_LEVELS; k++)
        levels[k] = 0.05 * (k + 1);
    CHECK(ibvi_regression_rmse(&r->rmse, mean, y, n));
    CHECK(ibvi_regression_nll(&r->nll, mean, var, y, n));
    CHECK(ibvi_regression_coverage(r->coverage, mean, var, y, n, coverage_levels, 3));
    CHECK(ibvi_regression_calibration_error(&r->calibration, mean, var, y, n,
                                            levels, CAL_LEVELS));
    CHECK(ibvi_regression_crps(&r->crps, mean, var, y, n));
    if (!isnan(r->noise_std))
        r->noise_std *= s->y_std;
    free(mean);
    free(var);
    free(y);
}

/* The toy's picture and uncertainty numbers: the predictive mean and 95%
 * interval on a grid over [-2, 2]. */
#define TOY_GRID 161
static void toy_curve(ibvi_predictor *pred, const data *train, result *r,
                      double *mean, double *lo, double *hi)
{
    data grid = alloc_data(TOY_GRID, 1);
    for (int i = 0; i < TOY_GRID; i++)
        grid.x[i] = (float)(-2.0 + 4.0 * i / (TOY_GRID - 1));
    float *m = xmalloc(TOY_GRID * sizeof *m), *v = xmalloc(TOY_GRID * sizeof *v);
    float *ep = xmalloc(TOY_GRID * sizeof *ep);
    predict(pred, &grid, m, v, ep);
    double z95;
    CHECK(ibvi_normal_quantile(&z95, 0.975));
    for (int i = 0; i < TOY_GRID; i++) {
        mean[i] = m[i];
        lo[i] = m[i] - z95 * sqrt(v[i]);
        hi[i] = m[i] + z95 * sqrt(v[i]);
    }
    /* grid index of x: (x + 2) / 4 * (TOY_GRID - 1) */
    r->std_gap = sqrt(ep[(TOY_GRID - 1) / 2]);
    r->std_far = 0.5 * (sqrt(ep[0]) + sqrt(ep[TOY_GRID - 1]));
    float *tm = xmalloc((size_t)train->n * sizeof *tm);
    float *tv = xmalloc((size_t)train->n * sizeof *tv);
    float *tep = xmalloc((size_t)train->n * sizeof *tep);
    predict(pred, train, tm, tv, tep);
    r->std_data = 0;
    for (int64_t i = 0; i < train->n; i++)
        r->std_data += sqrt(tep[i]) / train->n;
    free(tm);
    free(tv);
    free(tep);
    free(ep);
    free(m);
    free(v);
    free_data(&grid);
}

/* ---- options ---------------------------------------------------------------- */

static void usage(FILE *out)
{
    fprintf(out,
        "usage: regression [options]\n"
        "  --dataset NAME      diabetes (default) or toy\n"
        "  --data-dir DIR      where diabetes_*.csv.gz are (default\n"
        "                      " SKLEARN_DATA ")\n"
        "  --methods LIST      comma list of standard, ibvi, ensemble,\n"
        "                      standard-het, ibvi-het, ensemble-het (default all;\n"
        "                      toy: standard,ibvi,ensemble)\n"
        "  --ensemble N        members of the ensembles (default 5)\n"
        "  --width LIST        hidden widths (default 50; toy 50,50)\n"
        "  --activation NAME   tanh or relu (default tanh; toy relu)\n"
        "  --rank R            covariance rank of first and last layer (default 5;\n"
        "                      toy 20)\n"
        "  --epochs N          epochs (default 50 diabetes, 1500 toy)\n"
        "  --lr X              base learning rate, cosine decay (default 0.01)\n"
        "  --momentum X        SGD momentum (default 0.9)\n"
        "  --batch N           minibatch size (default 32; toy 10)\n"
        "  --test-samples K    IBVI weight samples at test time (default 64)\n"
        "  --seed N            seed of the split and the networks (default 1)\n"
        "  --threads N         BLIS threads per network (default 1)\n"
        "  --json FILE         write the results as JSON (docs/json-schema.md)\n"
        "  --svg FILE          toy: predictive mean and 95%% interval per method\n");
}

static int parse_widths(config *c, const char *text)
{
    const int count = host_parse_widths(text, c->hidden, MAX_HIDDEN, 100000);
    c->hidden_count = count > 0 ? count : 0;
    return count > 0 ? 0 : -1;
}

static const char *const all_methods[] = {"standard", "ibvi", "ensemble",
                                          "standard-het", "ibvi-het",
                                          "ensemble-het"};
#define METHOD_COUNT 6

static int has_method(const config *c, const char *name)
{
    char buf[160];
    snprintf(buf, sizeof buf, "%s", c->methods);
    for (char *tok = strtok(buf, ","); tok; tok = strtok(NULL, ","))
        if (strcmp(tok, name) == 0)
            return 1;
    return 0;
}

static int known_methods(const config *c)
{
    char buf[160];
    snprintf(buf, sizeof buf, "%s", c->methods);
    for (char *tok = strtok(buf, ","); tok; tok = strtok(NULL, ",")) {
        int known = 0;
        for (int k = 0; k < METHOD_COUNT; k++)
            known |= strcmp(tok, all_methods[k]) == 0;
        if (!known)
            return 0;
    }
    return 1;
}

static void parse_options(config *c, int argc, char **argv)
{
    *c = (config){.dataset = "diabetes", .data_dir = SKLEARN_DATA, .rank = -1,
                  .activation = -1,
                  .ensemble = 5, .test_samples = 64, .batch = -1, .threads = 1,
                  .epochs = -1, .lr = 0.01f, .momentum = 0.9f, .seed = 1};
    c->methods[0] = '\0';
    c->hidden_count = 0;
    static const struct option options[] = {
        {"dataset", required_argument, 0, 'D'}, {"data-dir", required_argument, 0, 'd'},
        {"methods", required_argument, 0, 'm'}, {"ensemble", required_argument, 0, 'E'},
        {"width", required_argument, 0, 'w'}, {"rank", required_argument, 0, 'r'},
        {"activation", required_argument, 0, 'a'},
        {"epochs", required_argument, 0, 'e'}, {"lr", required_argument, 0, 'l'},
        {"momentum", required_argument, 0, 'M'}, {"batch", required_argument, 0, 'b'},
        {"test-samples", required_argument, 0, 'K'}, {"seed", required_argument, 0, 's'},
        {"threads", required_argument, 0, 't'}, {"json", required_argument, 0, 'j'},
        {"svg", required_argument, 0, 'g'}, {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0}};
    int opt;
    while ((opt = getopt_long(argc, argv, "h", options, NULL)) != -1) {
        switch (opt) {
        case 'D': c->dataset = optarg; break;
        case 'd': c->data_dir = optarg; break;
        case 'm': snprintf(c->methods, sizeof c->methods, "%s", optarg); break;
        case 'E': c->ensemble = atoi(optarg); break;
        case 'w':
            if (parse_widths(c, optarg) < 0) {
                fprintf(stderr, "regression: bad --width %s\n", optarg);
                exit(2);
            }
            break;
        case 'r': c->rank = atoi(optarg); break;
        case 'a':
            if (strcmp(optarg, "tanh") && strcmp(optarg, "relu")) {
                fprintf(stderr, "regression: --activation is tanh or relu\n");
                exit(2);
            }
            c->activation = strcmp(optarg, "tanh") == 0 ? IBVI_ACT_TANH : IBVI_ACT_RELU;
            break;
        case 'e': c->epochs = atoi(optarg); break;
        case 'l': c->lr = strtof(optarg, NULL); break;
        case 'M': c->momentum = strtof(optarg, NULL); break;
        case 'b': c->batch = atoi(optarg); break;
        case 'K': c->test_samples = atoi(optarg); break;
        case 's': c->seed = strtoull(optarg, NULL, 10); break;
        case 't': c->threads = atoi(optarg); break;
        case 'j': c->json_path = optarg; break;
        case 'g': c->svg_path = optarg; break;
        case 'h': usage(stdout); exit(0);
        default: usage(stderr); exit(2);
        }
    }
    const int toy = strcmp(c->dataset, "toy") == 0;
    if (c->epochs < 0)
        c->epochs = toy ? 1500 : 50;
    if (c->batch < 0)
        c->batch = toy ? 10 : 32;
    if (c->rank < 0)
        c->rank = toy ? 20 : 5;
    if (c->activation < 0)
        c->activation = toy ? IBVI_ACT_RELU : IBVI_ACT_TANH;
    if (c->hidden_count == 0)
        parse_widths(c, toy ? "50,50" : "50");
    if (!c->methods[0])
        snprintf(c->methods, sizeof c->methods, "%s",
                 toy ? "standard,ibvi,ensemble"
                     : "standard,ibvi,ensemble,standard-het,ibvi-het,ensemble-het");
    if ((!toy && strcmp(c->dataset, "diabetes")) || c->epochs < 1 ||
        c->batch < 1 || c->ensemble < 1 || c->ensemble > MAX_MEMBERS ||
        c->rank < 1 || c->test_samples < 1 || !known_methods(c) ||
        (c->svg_path && !toy)) {
        usage(stderr);
        exit(2);
    }
}

/* ---- output ------------------------------------------------------------------ */

static void print_table(const config *c, const result *r, int count, int toy,
                        int64_t n_test)
{
    printf("\n%s: %lld test points; RMSE and CRPS in the target's units, NLL in "
           "nats, calibration error over 19 levels\n", c->dataset,
           (long long)n_test);
    printf("%-14s %9s %8s %7s %7s %7s %8s %9s %9s", "method", "RMSE", "NLL",
           "cov50%", "cov90%", "cov95%", "cal err", "CRPS", "sigma");
    if (toy)
        printf(" | epistemic std: %6s %6s %6s |", "data", "x=0", "|x|=2");
    printf(" %8s\n", "train s");
    for (int i = 0; i < count; i++) {
        if (r[i].diverged) {
            printf("%-14s diverged (%s): not evaluated\n", r[i].name, r[i].divergence);
            continue;
        }
        printf("%-14s %9.4f %8.4f %7.1f %7.1f %7.1f %8.4f %9.4f %9.4f", r[i].name,
               r[i].rmse, r[i].nll, 100 * r[i].coverage[0], 100 * r[i].coverage[1],
               100 * r[i].coverage[2], r[i].calibration, r[i].crps, r[i].noise_std);
        if (toy)
            printf("                %6.3f %6.3f %6.3f |", r[i].std_data,
                   r[i].std_gap, r[i].std_far);
        printf(" %8.2f\n", r[i].seconds);
    }
}

static void json_number(FILE *f, const char *key, double v, int last)
{
    if (isnan(v))
        fprintf(f, "\"%s\": null%s", key, last ? "" : ", ");
    else
        fprintf(f, "\"%s\": %.6f%s", key, v, last ? "" : ", ");
}

static int write_json(const char *path, const config *c, const result *r,
                      int count, int toy, int64_t n_train, int64_t n_val,
                      int64_t n_test)
{
    FILE *f = fopen(path, "w");
    if (!f)
        return -1;
    fprintf(f, "{\n  \"schema\": \"libibvi-regression/1\",\n  \"dataset\": \"%s\",\n",
            c->dataset);
    fprintf(f, "  \"config\": {\"hidden\": \"%d x %d\", \"activation\": \"%s\", "
               "\"rank\": %d, \"ensemble\": %d, \"epochs\": %d, \"lr\": %g, "
               "\"momentum\": %g, \"batch\": %d, \"test_samples\": %d, "
               "\"seed\": %llu, \"train_points\": %lld, \"validation_points\": "
               "%lld, \"test_points\": %lld},\n  \"methods\": [\n",
            c->hidden_count, c->hidden[0],
            c->activation == IBVI_ACT_TANH ? "tanh" : "relu", c->rank, c->ensemble,
            c->epochs,
            (double)c->lr, (double)c->momentum, c->batch, c->test_samples,
            (unsigned long long)c->seed, (long long)n_train, (long long)n_val,
            (long long)n_test);
    for (int i = 0; i < count; i++) {
        const result *m = &r[i];
        fprintf(f, "    {\"name\": \"%s\", \"diverged\": %s, ", m->name,
                m->diverged ? "true" : "false");
        if (m->diverged)
            fprintf(f, "\"divergence\": \"%s\", ", m->divergence);
        const int d = m->diverged;
        json_number(f, "rmse", d ? NAN : m->rmse, 0);
        json_number(f, "nll", d ? NAN : m->nll, 0);
        json_number(f, "coverage_50", d ? NAN : m->coverage[0], 0);
        json_number(f, "coverage_90", d ? NAN : m->coverage[1], 0);
        json_number(f, "coverage_95", d ? NAN : m->coverage[2], 0);
        json_number(f, "calibration_error", d ? NAN : m->calibration, 0);
        json_number(f, "crps", d ? NAN : m->crps, 0);
        json_number(f, "noise_std", d ? NAN : m->noise_std, 0);
        if (toy) {
            json_number(f, "epistemic_std_data", d ? NAN : m->std_data, 0);
            json_number(f, "epistemic_std_gap", d ? NAN : m->std_gap, 0);
            json_number(f, "epistemic_std_far", d ? NAN : m->std_far, 0);
        }
        fprintf(f, "\"train_seconds\": %.3f}%s\n", m->seconds,
                i + 1 < count ? "," : "");
    }
    fprintf(f, "  ]\n}\n");
    return fclose(f) == 0 ? 0 : -1;
}

/* ---- main --------------------------------------------------------------------- */

int main(int argc, char **argv)
{
    config c;
    parse_options(&c, argc, argv);
    const int toy = strcmp(c.dataset, "toy") == 0;
    fprintf(stderr, "libibvi %s\n", ibvi_version_string());

    data train, val, test;
    scaling s;
    if (toy) {
        uint64_t state = c.seed * 7919 + 13;
        train = toy_points(40, &state);
        val = toy_points(40, &state);
        test = toy_points(400, &state);
        /* The toy is on the unit scale already: an identity scaling. */
        s.x_mean[0] = 0;
        s.x_std[0] = 1;
        s.y_mean = 0;
        s.y_std = 1;
    } else {
        load_diabetes(&c, &train, &val, &test);
        fit_scaling(&s, &train);
        apply_scaling(&s, &train);
        apply_scaling(&s, &val);
        apply_scaling(&s, &test);
    }
    fprintf(stderr, "%s: %lld train, %lld validation, %lld test points of %d "
                    "features; MLP %d", c.dataset, (long long)train.n,
            (long long)val.n, (long long)test.n, train.dim, train.dim);
    for (int i = 0; i < c.hidden_count; i++)
        fprintf(stderr, "-%d", c.hidden[i]);
    fprintf(stderr, "-1 (%s), rank %d, muP, %d epochs, lr %g, batch %d\n",
            c.activation == IBVI_ACT_TANH ? "tanh" : "relu", c.rank, c.epochs,
            (double)c.lr, c.batch);

    result results[METHOD_COUNT];
    int count = 0;
    double curves[METHOD_COUNT][3][TOY_GRID];
    report_band bands[METHOD_COUNT];
    double grid_x[TOY_GRID], truth[TOY_GRID], px[64], py[64];
    for (int i = 0; i < TOY_GRID; i++) {
        grid_x[i] = -2.0 + 4.0 * i / (TOY_GRID - 1);
        truth[i] = sin(3.0 * grid_x[i]);
    }
    for (int64_t i = 0; toy && i < train.n && i < 64; i++) {
        px[i] = train.x[i];
        py[i] = train.y[i];
    }

    for (int k = 0; k < METHOD_COUNT; k++) {
        const char *method = all_methods[k];
        if (!has_method(&c, method))
            continue;
        const int hetero = strstr(method, "-het") != NULL;
        const int ibvi = strncmp(method, "ibvi", 4) == 0;
        const int members = strncmp(method, "ensemble", 8) == 0 ? c.ensemble : 1;
        result *r = &results[count];
        memset(r, 0, sizeof *r);
        if (members > 1)
            snprintf(r->name, sizeof r->name, "ensemble-%d%s", members,
                     hetero ? "-het" : "");
        else
            snprintf(r->name, sizeof r->name, "%s", method);
        ibvi_net *nets[MAX_MEMBERS];
        for (int i = 0; i < members; i++) {
            char name[48], why[sizeof r->divergence];
            snprintf(name, sizeof name, members > 1 ? "%s/%d" : "%s", r->name, i);
            /* Member 0 of an ensemble is the single network's twin. */
            nets[i] = build_network(&c, train.dim, hetero ? 2 : 1, ibvi ? c.rank : 0,
                                    c.seed + 100 * i);
            r->seconds += train_network(nets[i], &c, &train, name,
                                        c.seed + 100 * i + 7, why, sizeof why);
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
            set_head(pred, hetero, &val, r);
            score(pred, &test, &s, r);
            if (toy) {
                toy_curve(pred, &train, r, curves[count][0], curves[count][1],
                          curves[count][2]);
                bands[count] = (report_band){r->name, TOY_GRID, grid_x,
                                             curves[count][0], curves[count][1],
                                             curves[count][2], truth, (int)train.n,
                                             px, py};
            }
            ibvi_predictor_free(pred);
        } else {
            fprintf(stderr, "regression: %s diverged (%s): not evaluated; try a "
                            "lower --lr (docs/concepts.md)\n", r->name, r->divergence);
            bands[count] = (report_band){r->name, 0, grid_x, NULL, NULL, NULL,
                                         NULL, (int)train.n, px, py};
        }
        for (int i = 0; i < members; i++)
            ibvi_net_free(nets[i]);
        count++;
    }

    print_table(&c, results, count, toy, test.n);
    if (c.json_path && write_json(c.json_path, &c, results, count, toy, train.n,
                                  val.n, test.n) < 0) {
        perror(c.json_path);
        return 1;
    }
    if (c.svg_path) {
        char caption[256];
        snprintf(caption, sizeof caption,
                 "Predictive mean (line) and 95%% interval (band) on x in [-2, 2]; "
                 "red: the %lld training points, y = sin(3x) + noise; dashed: sin(3x)",
                 (long long)train.n);
        if (report_write_band_svg(c.svg_path, caption, bands, count, -2, 2, -3,
                                  3) < 0) {
            perror(c.svg_path);
            return 1;
        }
    }
    free_data(&train);
    free_data(&val);
    free_data(&test);
    return 0;
}
