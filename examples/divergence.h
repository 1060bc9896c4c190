/*
 * divergence.h - the examples' divergence check (docs/concepts.md,
 * "Learning rates and divergence"), host code shared by mnist_train,
 * regression and binary. python/examples/mnist_train.py has its twin.
 *
 * A training run has diverged when
 *  1. a step's loss is not finite (ibvi_train_step returns
 *     IBVI_ERR_NONFINITE and changes nothing): divergence_nonfinite();
 *  2. an epoch's mean training loss exceeds DIVERGENCE_FACTOR times the
 *     loss of the first step, or
 *  3. the mean of an epoch after the first exceeds the first step's loss (a
 *     whole epoch left the network worse than untrained): divergence_epoch().
 *
 * SPDX-License-Identifier: MIT
 */
#ifndef IBVI_EXAMPLES_DIVERGENCE_H
#define IBVI_EXAMPLES_DIVERGENCE_H

#include <stddef.h>

#define DIVERGENCE_FACTOR 1.5

/* Writes why the run diverged to why (why_size bytes) and returns 1 if
 * the epoch's mean loss breaks rule 2 or 3; else returns 0 and leaves why
 * unchanged. epoch counts from 1; first_loss is the first step's loss.
 * Rule 2 is only meaningful for a positive first_loss: a loss that can be
 * negative (the Gaussian NLL) is checked with rule 1 and with
 * divergence_epoch_shifted(). */
int divergence_epoch(char *why, size_t why_size, int epoch, double epoch_loss,
                     double first_loss);

/* Rules 2 and 3 for a loss bounded below by `floor` (e.g. the Gaussian
 * NLL, which can be negative): applied to loss - floor. The message shows
 * the losses themselves. */
int divergence_epoch_shifted(char *why, size_t why_size, int epoch,
                             double epoch_loss, double first_loss,
                             double floor);

/* Rule 1: writes "epoch E: non-finite training loss" to why. */
void divergence_nonfinite(char *why, size_t why_size, int epoch);

#endif /* IBVI_EXAMPLES_DIVERGENCE_H */
