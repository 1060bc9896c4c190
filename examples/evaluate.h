/*
 * Evaluation shared by the MNIST example programs (evaluate.c).
 *
 * SPDX-License-Identifier: MIT
 */
#ifndef IBVI_EXAMPLES_EVALUATE_H
#define IBVI_EXAMPLES_EVALUATE_H

#include <stdint.h>

#include <ibvi/ibvi.h>

#include "dataset.h"
#include "report.h"

/* The corruptions evaluated (examples/corrupt.h defines them). */
#define EVALUATED_CORRUPTIONS 8
extern const int evaluated_corruptions[EVALUATED_CORRUPTIONS];

/* Scores pred on test (calibration bins, selective risk), on ood as
 * out-of-distribution inputs by predictive entropy (NULL: none) and, when
 * corruptions is nonzero, on the corrupted test sets (seeded from seed),
 * into *out. Exits with a message on failure. */
void evaluate(ibvi_predictor *pred, int corruptions, uint64_t seed,
              const dataset *test, const dataset *ood, method_result *out);

/* The same for any predictive: predict(ctx, x, n, probs, entropy) fills
 * probs (n x classes) and, when entropy is not NULL, the n predictive
 * entropies, returning an ibvi_status (evaluate passes the predictor's
 * run; the Laplace probit passes its own). */
typedef int (*evaluate_predict_fn)(void *ctx, const float *x, int64_t n,
                                   float *probs, float *entropy);
void evaluate_with(evaluate_predict_fn predict, void *ctx, int corruptions,
                   uint64_t seed, const dataset *test, const dataset *ood,
                   method_result *out);

#endif /* IBVI_EXAMPLES_EVALUATE_H */
