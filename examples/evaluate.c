/*
 * Evaluation of a predictor on an MNIST-style test set, its OOD set and
 * the corrupted test sets, into a report's method_result (evaluate.h);
 * moved out of mnist_train.c so that mnist_train and mpi_train report the
 * same way. Failures print a message and exit, as the example programs do.
 *
 * SPDX-License-Identifier: MIT
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "corrupt.h"
#include "evaluate.h"

static void die(const char *what, int status)
{
    fprintf(stderr, "evaluate: %s: %s (%s)\n", what,
            ibvi_status_string(status), ibvi_last_error());
    exit(1);
}

#define CHECK(call)                         \
    do {                                    \
        int status_ = (call);               \
        if (status_ < 0)                    \
            die(#call, status_);            \
    } while (0)

enum { CHUNK = 1000 };

static scores read_scores(const ibvi_metrics *m)
{
    scores s;
    CHECK(ibvi_metrics_accuracy(m, &s.accuracy));
    CHECK(ibvi_metrics_nll(m, &s.nll));
    CHECK(ibvi_metrics_ece(m, &s.ece));
    CHECK(ibvi_metrics_mce(m, &s.mce));
    CHECK(ibvi_metrics_brier(m, &s.brier));
    return s;
}

/* Runs the predictor over a data set (corrupted with `corruption` unless it
 * is CORRUPT_IDENTITY) into metrics and, if entropy is not NULL, the
 * predictive entropy of every image. */
static void predict_set(evaluate_predict_fn predict, void *ctx,
                        const dataset *d, int corruption, uint64_t seed,
                        ibvi_metrics *metrics, float *entropy)
{
    const int32_t classes = d->classes;
    float *probs = malloc((size_t)CHUNK * classes * sizeof *probs);
    float *images = malloc((size_t)CHUNK * d->dim * sizeof *images);
    if (!probs || !images) {
        fprintf(stderr, "evaluate: out of memory\n");
        exit(1);
    }
    for (int64_t start = 0; start < d->count; start += CHUNK) {
        const int64_t n = d->count - start < CHUNK ? d->count - start : CHUNK;
        const float *x = d->images + start * d->dim;
        if (corruption != CORRUPT_IDENTITY) {
            int status = corrupt_apply_ex(corruption, x, images, n, d->rows,
                                          d->cols, seed, start);
            if (status < 0) {
                fprintf(stderr, "evaluate: corruption %s failed\n",
                        corrupt_name(corruption));
                exit(1);
            }
            x = images;
        }
        CHECK(predict(ctx, x, n, probs, entropy ? entropy + start : NULL));
        if (metrics)
            CHECK(ibvi_metrics_add(metrics, probs, n, d->labels + start));
    }
    free(probs);
    free(images);
}

const int evaluated_corruptions[EVALUATED_CORRUPTIONS] = {
    CORRUPT_ROTATE, CORRUPT_SHEAR, CORRUPT_SCALE, CORRUPT_TRANSLATE,
    CORRUPT_BRIGHTNESS, CORRUPT_STRIPE, CORRUPT_SHOT_NOISE,
    CORRUPT_IMPULSE_NOISE};

static int predictor_predict(void *ctx, const float *x, int64_t n,
                             float *probs, float *entropy)
{
    return ibvi_predictor_run(ctx, x, n, probs, entropy, NULL, NULL);
}

void evaluate(ibvi_predictor *pred, int corruptions, uint64_t seed,
              const dataset *test, const dataset *ood, method_result *out)
{
    evaluate_with(predictor_predict, pred, corruptions, seed, test, ood, out);
}

void evaluate_with(evaluate_predict_fn predict, void *ctx, int corruptions,
                   uint64_t seed, const dataset *test, const dataset *ood,
                   method_result *out)
{
    ibvi_metrics *metrics;
    CHECK(ibvi_metrics_create(&metrics, test->classes, NULL));
    float *in_entropy = malloc((size_t)test->count * sizeof(float));
    float *out_entropy = ood ? malloc((size_t)ood->count * sizeof(float)) : NULL;
    if (!in_entropy || (ood && !out_entropy)) {
        fprintf(stderr, "evaluate: out of memory\n");
        exit(1);
    }
    predict_set(predict, ctx, test, CORRUPT_IDENTITY, 0, metrics, in_entropy);
    out->test = read_scores(metrics);
    CHECK(ibvi_metrics_bins(metrics, out->bin_counts, out->bin_accuracy,
                            out->bin_confidence, IBVI_METRICS_BINS));
    CHECK(ibvi_metrics_ece_adaptive(metrics, &out->ece_adaptive,
                                    IBVI_METRICS_BINS));
    CHECK(ibvi_metrics_aurc(metrics, &out->aurc));
    double coverage[REPORT_RISK_POINTS];
    for (int k = 0; k < REPORT_RISK_POINTS; k++)
        coverage[k] = (k + 1.0) / REPORT_RISK_POINTS;
    CHECK(ibvi_metrics_risk_coverage(metrics, out->risk, coverage,
                                     REPORT_RISK_POINTS));
    out->ood_auroc = out->ood_aupr_in = out->ood_aupr_out = NAN;
    out->ood_fpr95 = NAN;
    if (ood) {
        /* Predictive entropy is the OOD score of all four metrics. */
        predict_set(predict, ctx, ood, CORRUPT_IDENTITY, 0, NULL, out_entropy);
        CHECK(ibvi_auroc(&out->ood_auroc, in_entropy, test->count, out_entropy,
                         ood->count));
        CHECK(ibvi_aupr_in(&out->ood_aupr_in, in_entropy, test->count,
                           out_entropy, ood->count, NULL));
        CHECK(ibvi_aupr_out(&out->ood_aupr_out, in_entropy, test->count,
                            out_entropy, ood->count, NULL));
        CHECK(ibvi_fpr_at_tpr(&out->ood_fpr95, in_entropy, test->count,
                              out_entropy, ood->count, 0.95, NULL));
    }
    out->corruption_count = 0;
    for (int k = 0; corruptions && k < EVALUATED_CORRUPTIONS; k++) {
        CHECK(ibvi_metrics_reset(metrics));
        predict_set(predict, ctx, test, evaluated_corruptions[k],
                    seed + 1000 + k, metrics, NULL);
        out->corruption[out->corruption_count++] = read_scores(metrics);
    }
    free(in_entropy);
    free(out_entropy);
    ibvi_metrics_free(metrics);
}
