/*
 * libibvi - the prediction-head interface (private): what the predictor
 * averages over the K samples of each member (include/ibvi/predictor.h,
 * docs/concepts.md "Prediction heads").
 *
 * The predictor runs the networks and hands each sample block of outputs to
 * its head; a head is one file that defines one ibvi__head_ops table:
 *   head_softmax.c     IBVI_HEAD_SOFTMAX (and the accumulation the sigmoid
 *                      head reuses)
 *   head_sigmoid.c     IBVI_HEAD_SIGMOID: the softmax of [0, f]
 *   head_regression.c  IBVI_HEAD_REGRESSION and IBVI_HEAD_HETEROSCEDASTIC
 * and ibvi__head_of (head.c) maps an ibvi_head_kind to its table.
 *
 * Outputs reach a head class-major, as the predictor's last layer writes
 * them: output c of row i is f[c * cs + i]. Per chunk of n <= batch rows
 * the predictor calls begin, then add once per sample block (with weight
 * 1 / (members x blocks)), then finish. The accumulators live in the
 * predictor's workspace: `doubles` doubles, sized once for the largest any
 * head that accepts the network asks for, so changing the head never
 * allocates.
 *
 * SPDX-License-Identifier: MIT
 */
#ifndef IBVI_HEAD_H
#define IBVI_HEAD_H

#include <stdint.h>

#include "ibvi/predictor.h"

/* One chunk's accumulation. */
typedef struct ibvi__head_run {
    double *acc;       /* the head's doubles(outputs, batch) doubles */
    int64_t n;         /* rows of this chunk (<= batch)               */
    int64_t batch;     /* the rows acc was laid out for               */
    int32_t outputs;   /* the network's outputs                       */
    double b;          /* 1 / temperature (classification heads)      */
    double noise_var;  /* noise_std^2 (IBVI_HEAD_REGRESSION)          */
} ibvi__head_run;

/* Where a chunk's results go: the caller's arrays advanced to the chunk's
 * first row (NULL when not wanted). samples: sample s of the chunk's row i,
 * dimension j at samples[s * sample_stride + i * dim + j]. */
typedef struct ibvi__head_out {
    float *probs, *predictive, *expected, *mutual; /* classification */
    float *mean, *var_epistemic, *var_aleatoric;   /* regression     */
    float *samples;
    int64_t sample_stride;
} ibvi__head_out;

typedef struct ibvi__head_ops {
    const char *name;  /* "softmax", for messages */
    int regression;    /* 1: ibvi_predictor_run_regression; 0: _run */
    /* Whether the head fits a network with `outputs` outputs (else a
     * status, message under fn). */
    int (*check)(int32_t outputs, const char *fn);
    /* Columns of the per-input results. */
    int32_t (*dim)(int32_t outputs);
    /* The accumulators' size for `batch` rows, in doubles. */
    int64_t (*doubles)(int32_t outputs, int64_t batch);
    void (*begin)(const ibvi__head_run *r);
    /* One sample block f (class stride cs) of weight `weight`: samples
     * first .. first + copies - 1 of the run (copies > 1 when the
     * network's outputs do not depend on the sample: one block stands for
     * K equal ones). */
    void (*add)(const ibvi__head_run *r, const float *f, int64_t cs,
                double weight, int64_t first, int32_t copies,
                const ibvi__head_out *out);
    void (*finish)(const ibvi__head_run *r, const ibvi__head_out *out);
} ibvi__head_ops;

/* The heads' tables (one per file). */
extern const ibvi__head_ops ibvi__head_softmax_ops;
extern const ibvi__head_ops ibvi__head_sigmoid_ops;
extern const ibvi__head_ops ibvi__head_regression_ops;
extern const ibvi__head_ops ibvi__head_heteroscedastic_ops;

/* The table of kind, or NULL for an unknown kind. */
const ibvi__head_ops *ibvi__head_of(int32_t kind);

/* The softmax head's accumulation over `classes` columns of f, shared
 * with the sigmoid head (head_softmax.c): adds weight * softmax(b f) to the
 * probability sums and weight * its entropy to the entropy sums. */
void ibvi__head_softmax_add(const ibvi__head_run *r, const float *f,
                            int64_t cs, int32_t classes, double weight);
void ibvi__head_softmax_begin(const ibvi__head_run *r, int32_t classes);
void ibvi__head_softmax_finish(const ibvi__head_run *r, int32_t classes,
                               const ibvi__head_out *out);
int64_t ibvi__head_softmax_doubles(int32_t classes, int64_t batch);

#endif /* IBVI_HEAD_H */
