/*
 * libibvi - losses and their gradients (see include/ibvi/loss.h).
 * Sums run in double so the mean over large batches keeps float precision.
 *
 * SPDX-License-Identifier: MIT
 */
#include <math.h>

#include "ibvi/loss.h"
#include "internal.h"

static int uses_labels(int32_t kind) { return kind == IBVI_LOSS_SOFTMAX_XENT; }

int ibvi__loss_check(const char *fn, int32_t kind, int64_t rows,
                     int32_t cols, const int32_t *labels,
                     const float *targets, int64_t n)
{
    if (kind != IBVI_LOSS_SOFTMAX_XENT && kind != IBVI_LOSS_SQUARED &&
        kind != IBVI_LOSS_BINARY_XENT && kind != IBVI_LOSS_GAUSSIAN_NLL)
        return ibvi__fail(IBVI_ERR_INVALID_ARG,
                          "%s: loss kind = %d, expected "
                          "IBVI_LOSS_SOFTMAX_XENT (0), IBVI_LOSS_SQUARED (1), "
                          "IBVI_LOSS_BINARY_XENT (2) or "
                          "IBVI_LOSS_GAUSSIAN_NLL (3)", fn, (int)kind);
    if (uses_labels(kind))
        IBVI_CHECK_NOT_NULL(fn, labels);
    else
        IBVI_CHECK_NOT_NULL(fn, targets);
    if (n <= 0 || rows <= 0 || cols <= 0)
        return ibvi__fail(IBVI_ERR_INVALID_ARG,
                          "%s: rows = %lld, cols = %d, n = %lld, expected all "
                          "> 0", fn, (long long)rows, (int)cols, (long long)n);
    if (rows % n != 0)
        return ibvi__fail(IBVI_ERR_SHAPE,
                          "%s: rows = %lld is not a multiple of n = %lld "
                          "(rows = samples * n)", fn, (long long)rows,
                          (long long)n);
    if (rows > INT64_MAX / cols)
        return ibvi__fail(IBVI_ERR_INVALID_ARG, "%s: rows x cols overflows",
                          fn);
    if (uses_labels(kind)) {
        for (int64_t i = 0; i < n; i++)
            if (labels[i] < 0 || labels[i] >= cols)
                return ibvi__fail(IBVI_ERR_INVALID_ARG,
                                  "%s: labels[%lld] = %d, expected 0..%d", fn,
                                  (long long)i, (int)labels[i],
                                  (int)cols - 1);
    } else if (kind == IBVI_LOSS_SQUARED) {
        if (!ibvi__all_finite(targets, n * cols))
            return ibvi__fail(IBVI_ERR_NONFINITE,
                              "%s: targets hold NaN or infinity", fn);
    } else if (kind == IBVI_LOSS_GAUSSIAN_NLL) {
        if (cols % 2 != 0)
            return ibvi__fail(IBVI_ERR_SHAPE,
                              "%s: cols = %d, expected an even number (D "
                              "means, then D log-variances)", fn, (int)cols);
        if (!ibvi__all_finite(targets, n * (cols / 2)))
            return ibvi__fail(IBVI_ERR_NONFINITE,
                              "%s: targets hold NaN or infinity", fn);
    } else {
        for (int64_t i = 0; i < n * cols; i++)
            if (!(targets[i] >= 0.0f && targets[i] <= 1.0f))
                return ibvi__fail(IBVI_ERR_INVALID_ARG,
                                  "%s: targets[%lld] = %g, expected a value "
                                  "in [0, 1]", fn, (long long)i,
                                  (double)targets[i]);
    }
    return IBVI_OK;
}

static int finish(const char *fn, double total, int64_t rows, float *loss)
{
    *loss = (float)(total / (double)rows);
    if (!isfinite(*loss))
        return ibvi__fail(IBVI_ERR_NONFINITE,
                          "%s: non-finite loss (%g): check the inputs and "
                          "the learning rate", fn, (double)*loss);
    return IBVI_OK;
}

/* Classes per chunk of the row softmax (softmax.c): its shifted logits and
 * exponentials live in two stack buffers of this many doubles. */
#define SOFTMAX_CHUNK 256

static int softmax_xent(const char *fn, const float *logits, int64_t rows,
                        int32_t classes, const int32_t *labels, int64_t n,
                        float *loss, float *grad)
{
    const double scale = 1.0 / (double)rows;
    double total = 0.0;
    double shifted[SOFTMAX_CHUNK], exps[SOFTMAX_CHUNK];
    for (int64_t r = 0; r < rows; r++) {
        const float *f = logits + r * classes;
        const int32_t y = labels[r % n];
        double max, z, dot;
        ibvi__softmax_max(f, 1, 1, classes, &max, &z, &dot);
        for (int32_t c0 = 0; c0 < classes; c0 += SOFTMAX_CHUNK) {
            const int32_t c1 = classes - c0 < SOFTMAX_CHUNK ? classes
                                                            : c0 + SOFTMAX_CHUNK;
            ibvi__softmax_sums(f, 1, 1, c0, c1, &max, 1.0, shifted, exps, &z,
                               &dot);
            /* One chunk holds the whole row: its exponentials are final. */
            if (grad && c1 == classes && c0 == 0)
                for (int32_t c = 0; c < classes; c++)
                    grad[r * classes + c] = (float)(exps[c] / z * scale);
        }
        /* -log softmax_y = log Z + max - f_y, from the unclamped logit. */
        total += log(z) + max - (double)f[y];
        if (!grad)
            continue;
        float *g = grad + r * classes;
        if (classes > SOFTMAX_CHUNK) /* exponentials again, chunk by chunk */
            for (int32_t c0 = 0; c0 < classes; c0 += SOFTMAX_CHUNK) {
                const int32_t c1 = classes - c0 < SOFTMAX_CHUNK
                                       ? classes : c0 + SOFTMAX_CHUNK;
                double z2 = 0.0, dot2 = 0.0;
                ibvi__softmax_sums(f, 1, 1, c0, c1, &max, 1.0, shifted, exps,
                                   &z2, &dot2);
                for (int32_t c = c0; c < c1; c++)
                    g[c] = (float)(exps[c - c0] / z * scale);
            }
        g[y] -= (float)scale;
    }
    return finish(fn, total, rows, loss);
}

static int squared(const char *fn, const float *outputs, int64_t rows,
                   int32_t cols, const float *targets, int64_t n, float *loss,
                   float *grad)
{
    const double scale = 2.0 / (double)rows;
    double total = 0.0;
    for (int64_t r = 0; r < rows; r++) {
        const float *f = outputs + r * cols;
        const float *t = targets + (r % n) * cols;
        for (int32_t j = 0; j < cols; j++) {
            const double diff = (double)f[j] - t[j];
            total += diff * diff;
            if (grad)
                grad[r * cols + j] = (float)(scale * diff);
        }
    }
    return finish(fn, total, rows, loss);
}

static int binary_xent(const char *fn, const float *logits, int64_t rows,
                       int32_t cols, const float *targets, int64_t n,
                       float *loss, float *grad)
{
    const double scale = 1.0 / (double)rows;
    double total = 0.0;
    for (int64_t r = 0; r < rows; r++) {
        const float *f = logits + r * cols;
        const float *t = targets + (r % n) * cols;
        for (int32_t j = 0; j < cols; j++) {
            const double x = f[j];
            /* log(1 + e^x) = max(x, 0) + log1p(e^-|x|): no overflow. */
            total += fmax(x, 0.0) + log1p(exp(-fabs(x))) - t[j] * x;
            if (grad) {
                const double sigmoid = x >= 0 ? 1.0 / (1.0 + exp(-x))
                                              : exp(x) / (1.0 + exp(x));
                grad[r * cols + j] = (float)(scale * (sigmoid - t[j]));
            }
        }
    }
    return finish(fn, total, rows, loss);
}

/* The clamp of the log-variances (loss.h) keeps exp(-c) finite: the
 * gradient never overflows however far s strays, and outside the range the
 * loss is flat in s (zero gradient). */
static int gaussian_nll(const char *fn, const float *outputs, int64_t rows,
                        int32_t cols, const float *targets, int64_t n,
                        float *loss, float *grad)
{
    const int32_t dims = cols / 2;
    const double scale = 1.0 / (double)rows;
    const double log_2pi = 1.8378770664093453;
    double total = 0.0;
    for (int64_t r = 0; r < rows; r++) {
        const float *m = outputs + r * cols, *s = m + dims;
        const float *t = targets + (r % n) * dims;
        for (int32_t j = 0; j < dims; j++) {
            const int inside = s[j] >= IBVI_LOG_VAR_MIN &&
                               s[j] <= IBVI_LOG_VAR_MAX;
            const double c = inside ? (double)s[j]
                             : s[j] < IBVI_LOG_VAR_MIN ? IBVI_LOG_VAR_MIN
                                                       : IBVI_LOG_VAR_MAX;
            const double diff = (double)t[j] - m[j];
            const double precision = exp(-c);
            const double q = diff * diff * precision;
            /* A non-finite s would be clamped to a finite loss: add it,
             * so the loss is not finite either (IBVI_ERR_NONFINITE). */
            total += 0.5 * (log_2pi + c + q) + (isfinite(s[j]) ? 0.0 : s[j]);
            if (grad) {
                grad[r * cols + j] = (float)(-scale * diff * precision);
                grad[r * cols + dims + j] =
                    inside ? (float)(0.5 * scale * (1.0 - q)) : 0.0f;
            }
        }
    }
    return finish(fn, total, rows, loss);
}

int ibvi__loss_eval(const char *fn, int32_t kind, const float *outputs,
                    int64_t rows, int32_t cols, const int32_t *labels,
                    const float *targets, int64_t n, float *loss, float *grad)
{
    switch (kind) {
    case IBVI_LOSS_SOFTMAX_XENT:
        return softmax_xent(fn, outputs, rows, cols, labels, n, loss, grad);
    case IBVI_LOSS_SQUARED:
        return squared(fn, outputs, rows, cols, targets, n, loss, grad);
    case IBVI_LOSS_GAUSSIAN_NLL:
        return gaussian_nll(fn, outputs, rows, cols, targets, n, loss, grad);
    default:
        return binary_xent(fn, outputs, rows, cols, targets, n, loss, grad);
    }
}

/* Every public loss: the one check, then the evaluation, under fn. */
static int checked_loss(const char *fn, int32_t kind, const float *outputs,
                        int64_t rows, int32_t cols, const int32_t *labels,
                        const float *targets, int64_t n, float *loss,
                        float *grad)
{
    IBVI_CHECK_NOT_NULL(fn, outputs);
    IBVI_CHECK_NOT_NULL(fn, loss);
    int status = ibvi__loss_check(fn, kind, rows, cols, labels, targets, n);
    if (status < 0)
        return status;
    return ibvi__loss_eval(fn, kind, outputs, rows, cols, labels, targets, n,
                           loss, grad);
}

int ibvi_loss_softmax_xent(const float *logits, int64_t rows, int32_t classes,
                           const int32_t *labels, int64_t n, float *loss,
                           float *grad)
{
    return checked_loss("ibvi_loss_softmax_xent", IBVI_LOSS_SOFTMAX_XENT,
                        logits, rows, classes, labels, NULL, n, loss, grad);
}

int ibvi_loss_squared(const float *outputs, int64_t rows, int32_t cols,
                      const float *targets, int64_t n, float *loss,
                      float *grad)
{
    return checked_loss("ibvi_loss_squared", IBVI_LOSS_SQUARED, outputs, rows,
                        cols, NULL, targets, n, loss, grad);
}

int ibvi_loss_binary_xent(const float *logits, int64_t rows, int32_t cols,
                          const float *targets, int64_t n, float *loss,
                          float *grad)
{
    return checked_loss("ibvi_loss_binary_xent", IBVI_LOSS_BINARY_XENT,
                        logits, rows, cols, NULL, targets, n, loss, grad);
}

int ibvi_loss_gaussian_nll(const float *outputs, int64_t rows, int32_t cols,
                           const float *targets, int64_t n, float *loss,
                           float *grad)
{
    return checked_loss("ibvi_loss_gaussian_nll", IBVI_LOSS_GAUSSIAN_NLL,
                        outputs, rows, cols, NULL, targets, n, loss, grad);
}

int ibvi_loss(int32_t kind, const float *outputs, int64_t rows, int32_t cols,
              const int32_t *labels, const float *targets, int64_t n,
              float *loss, float *grad)
{
    return checked_loss("ibvi_loss", kind, outputs, rows, cols, labels,
                        targets, n, loss, grad);
}
