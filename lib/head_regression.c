/*
 * libibvi - the regression prediction heads: IBVI_HEAD_REGRESSION (identity
 * outputs, a homoscedastic noise std) and IBVI_HEAD_HETEROSCEDASTIC (D
 * means, then D log-variances). They share the accumulation of the means:
 * per input and dimension j,
 *     mean = (1/K) sum_k m_k,   var_epistemic = (1/K) sum_k (m_k - mean)^2,
 * and differ in the aleatoric part: sigma^2, or (1/K) sum_k exp(c_k) with
 * c_k the log-variance clamped to [IBVI_LOG_VAR_MIN, IBVI_LOG_VAR_MAX] (as
 * the Gaussian NLL, loss.c, clamps it).
 *
 * The sums run in double and are shifted by the first sample's mean m_0
 * (sum w (m_k - m_0), sum w (m_k - m_0)^2): the variance is then their
 * difference of squares without the cancellation a plain sum of squares
 * has when the spread is small next to the mean. The loops run along the
 * chunk's rows of the class-major outputs.
 *
 * SPDX-License-Identifier: MIT
 */
#include <math.h>

#include "head.h"
#include "ibvi/loss.h"
#include "internal.h"

static int64_t padded(int64_t count) { return (count + 15) & ~(int64_t)15; }

/* shift, s1, s2 and (heteroscedastic) the aleatoric sum: D x batch each,
 * class-major (dimension j of row i at j * n + i). */
typedef struct sums {
    double *shift, *s1, *s2, *alea;
} sums;

static sums layout(const ibvi__head_run *r, int32_t dims)
{
    const int64_t wide = padded(r->batch * dims);
    sums s = {r->acc, r->acc + wide, r->acc + 2 * wide, r->acc + 3 * wide};
    return s;
}

static void begin_dims(const ibvi__head_run *r, int32_t dims, int alea)
{
    const sums s = layout(r, dims);
    const size_t bytes = (size_t)(r->n * dims) * sizeof(double);
    memset(s.s1, 0, bytes);
    memset(s.s2, 0, bytes);
    if (alea)
        memset(s.alea, 0, bytes);
}

/* The means of one sample block: the first D outputs. */
static void add_means(const ibvi__head_run *r, int32_t dims, const float *f,
                      int64_t cs, double weight, int64_t first,
                      int32_t copies, const ibvi__head_out *out)
{
    const sums s = layout(r, dims);
    const int64_t n = r->n;
    for (int32_t j = 0; j < dims; j++) {
        const float *m = f + j * cs;
        double *restrict shift = s.shift + j * n, *restrict s1 = s.s1 + j * n,
                         *restrict s2 = s.s2 + j * n;
        if (first == 0)
            for (int64_t i = 0; i < n; i++)
                shift[i] = m[i];
        for (int64_t i = 0; i < n; i++) {
            const double d = (double)m[i] - shift[i];
            s1[i] += weight * d;
            s2[i] += weight * d * d;
        }
        if (out->samples)
            for (int32_t c = 0; c < copies; c++) {
                float *dst = out->samples + (first + c) * out->sample_stride + j;
                for (int64_t i = 0; i < n; i++)
                    dst[i * dims] = m[i];
            }
    }
}

static void finish_dims(const ibvi__head_run *r, int32_t dims, int alea,
                        const ibvi__head_out *out)
{
    const sums s = layout(r, dims);
    const int64_t n = r->n;
    for (int32_t j = 0; j < dims; j++)
        for (int64_t i = 0; i < n; i++) {
            const int64_t a = j * n + i, o = i * dims + j;
            const double s1 = s.s1[a];
            if (out->mean)
                out->mean[o] = (float)(s.shift[a] + s1);
            if (out->var_epistemic) {
                const double v = s.s2[a] - s1 * s1;
                out->var_epistemic[o] = (float)(v > 0.0 ? v : 0.0);
            }
            if (out->var_aleatoric)
                out->var_aleatoric[o] =
                    (float)(alea ? s.alea[a] : r->noise_var);
        }
}

/* ---- IBVI_HEAD_REGRESSION ------------------------------------------------ */

static int check_regression(int32_t outputs, const char *fn)
{
    (void)outputs;
    (void)fn;
    return IBVI_OK;
}

static int32_t dim_regression(int32_t outputs) { return outputs; }

static int64_t doubles_regression(int32_t outputs, int64_t batch)
{
    return 3 * padded(batch * outputs);
}

static void begin_regression(const ibvi__head_run *r)
{
    begin_dims(r, r->outputs, 0);
}

static void add_regression(const ibvi__head_run *r, const float *f,
                           int64_t cs, double weight, int64_t first,
                           int32_t copies, const ibvi__head_out *out)
{
    add_means(r, r->outputs, f, cs, weight, first, copies, out);
}

static void finish_regression(const ibvi__head_run *r,
                              const ibvi__head_out *out)
{
    finish_dims(r, r->outputs, 0, out);
}

const ibvi__head_ops ibvi__head_regression_ops = {
    .name = "regression",
    .regression = 1,
    .check = check_regression,
    .dim = dim_regression,
    .doubles = doubles_regression,
    .begin = begin_regression,
    .add = add_regression,
    .finish = finish_regression,
};

/* ---- IBVI_HEAD_HETEROSCEDASTIC ------------------------------------------- */

static int check_heteroscedastic(int32_t outputs, const char *fn)
{
    if (outputs % 2 != 0)
        return ibvi__fail(IBVI_ERR_SHAPE,
                          "%s: the heteroscedastic head needs an even number "
                          "of outputs (D means, then D log-variances), this "
                          "network has %d", fn, (int)outputs);
    return IBVI_OK;
}

static int32_t dim_heteroscedastic(int32_t outputs) { return outputs / 2; }

static int64_t doubles_heteroscedastic(int32_t outputs, int64_t batch)
{
    return 4 * padded(batch * (outputs / 2));
}

static void begin_heteroscedastic(const ibvi__head_run *r)
{
    begin_dims(r, r->outputs / 2, 1);
}

/* alea += weight exp(clamp(s)) */
static void add_variance(double *restrict alea, const float *restrict s,
                         double weight, int64_t n)
{
    for (int64_t i = 0; i < n; i++) {
        const double c = s[i] < IBVI_LOG_VAR_MIN   ? IBVI_LOG_VAR_MIN
                         : s[i] > IBVI_LOG_VAR_MAX ? IBVI_LOG_VAR_MAX
                                                   : (double)s[i];
        alea[i] += weight * exp(c);
    }
}

static void add_heteroscedastic(const ibvi__head_run *r, const float *f,
                                int64_t cs, double weight, int64_t first,
                                int32_t copies, const ibvi__head_out *out)
{
    const int32_t dims = r->outputs / 2;
    add_means(r, dims, f, cs, weight, first, copies, out);
    const sums s = layout(r, dims);
    for (int32_t j = 0; j < dims; j++)
        add_variance(s.alea + j * r->n, f + (dims + j) * cs, weight, r->n);
}

static void finish_heteroscedastic(const ibvi__head_run *r,
                                   const ibvi__head_out *out)
{
    finish_dims(r, r->outputs / 2, 1, out);
}

const ibvi__head_ops ibvi__head_heteroscedastic_ops = {
    .name = "heteroscedastic",
    .regression = 1,
    .check = check_heteroscedastic,
    .dim = dim_heteroscedastic,
    .doubles = doubles_heteroscedastic,
    .begin = begin_heteroscedastic,
    .add = add_heteroscedastic,
    .finish = finish_heteroscedastic,
};
