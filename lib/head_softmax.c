/*
 * libibvi - the softmax prediction head (IBVI_HEAD_SOFTMAX, the default):
 * p = (1/K) sum_k softmax(f_k / T), its entropy H[p], the expected entropy
 * (1/K) sum_k H[p_k] and their difference, the mutual information
 * (docs/concepts.md, "Prediction and metrics"); the sigmoid head reuses its
 * accumulation.
 *
 * The sums run in double and, but for one log per row, along the chunk's
 * rows in vector blocks: the library's one softmax (softmax.c) over the
 * class-major block,
 *   H = log Z - sum_c e_c s_c / Z,    p_c = e_c / Z.
 *
 * SPDX-License-Identifier: MIT
 */
#include <math.h>

#include "head.h"
#include "internal.h"

static int64_t padded(int64_t count) { return (count + 15) & ~(int64_t)15; }

/* The accumulators in acc: prob_sum (classes x batch, class-major, as the
 * logits), entropy_sum (batch), shifted ((logit - row max) / T) and exps
 * (classes x batch each), row_max, row_z, row_dot (batch each). */
typedef struct sums {
    double *prob_sum, *entropy_sum, *shifted, *exps, *row_max, *row_z,
        *row_dot;
} sums;

static sums layout(const ibvi__head_run *r, int32_t classes)
{
    sums s;
    const int64_t wide = padded(r->batch * classes), one = padded(r->batch);
    s.prob_sum = r->acc;
    s.entropy_sum = s.prob_sum + wide;
    s.shifted = s.entropy_sum + one;
    s.exps = s.shifted + wide;
    s.row_max = s.exps + wide;
    s.row_z = s.row_max + one;
    s.row_dot = s.row_z + one;
    return s;
}

int64_t ibvi__head_softmax_doubles(int32_t classes, int64_t batch)
{
    return 3 * padded(batch * classes) + 4 * padded(batch);
}

void ibvi__head_softmax_begin(const ibvi__head_run *r, int32_t classes)
{
    const sums s = layout(r, classes);
    memset(s.prob_sum, 0, (size_t)(r->n * classes) * sizeof(double));
    memset(s.entropy_sum, 0, (size_t)r->n * sizeof(double));
}

/* sum += e scale */
static void scaled_column(double *restrict sum, const double *restrict e,
                          const double *restrict scale, int64_t n)
{
    for (int64_t i = 0; i < n; i++)
        sum[i] += e[i] * scale[i];
}

void ibvi__head_softmax_add(const ibvi__head_run *r, const float *f,
                            int64_t cs, int32_t classes, double weight)
{
    const sums s = layout(r, classes);
    const int64_t n = r->n;
    double *z = s.row_z;
    ibvi__softmax_max(f, cs, n, classes, s.row_max, z, s.row_dot);
    ibvi__softmax_sums(f, cs, n, 0, classes, s.row_max, r->b, s.shifted,
                       s.exps, z, s.row_dot);
    for (int64_t row = 0; row < n; row++) {
        s.entropy_sum[row] += weight * (log(z[row]) - s.row_dot[row] / z[row]);
        z[row] = weight / z[row]; /* now the scale of row's probabilities */
    }
    for (int32_t c = 0; c < classes; c++)
        scaled_column(s.prob_sum + c * n, s.exps + c * n, z, n);
}

/* Writes the chunk's outputs from the class-major sums. */
void ibvi__head_softmax_finish(const ibvi__head_run *r, int32_t classes,
                               const ibvi__head_out *out)
{
    const sums s = layout(r, classes);
    const int64_t n = r->n;
    for (int64_t row = 0; row < n; row++) {
        double h = 0.0;
        for (int32_t c = 0; c < classes; c++) {
            const double sum = s.prob_sum[c * n + row];
            out->probs[row * classes + c] = (float)sum;
            if (sum > 0.0)
                h -= sum * log(sum);
        }
        const double e = s.entropy_sum[row];
        if (out->predictive)
            out->predictive[row] = (float)h;
        if (out->expected)
            out->expected[row] = (float)e;
        if (out->mutual)
            out->mutual[row] = (float)(h > e ? h - e : 0.0);
    }
}

/* ---- the softmax head's table -------------------------------------------- */

static int check(int32_t outputs, const char *fn)
{
    (void)outputs; /* any number of classes (a network has >= 1 output) */
    (void)fn;
    return IBVI_OK;
}

static int32_t dim(int32_t outputs) { return outputs; }

static int64_t doubles(int32_t outputs, int64_t batch)
{
    return ibvi__head_softmax_doubles(outputs, batch);
}

static void begin(const ibvi__head_run *r)
{
    ibvi__head_softmax_begin(r, r->outputs);
}

static void add(const ibvi__head_run *r, const float *f, int64_t cs,
                double weight, int64_t first, int32_t copies,
                const ibvi__head_out *out)
{
    (void)first;
    (void)copies; /* one block of weight 1/members stands for K equal ones */
    (void)out;
    ibvi__head_softmax_add(r, f, cs, r->outputs, weight);
}

static void finish(const ibvi__head_run *r, const ibvi__head_out *out)
{
    ibvi__head_softmax_finish(r, r->outputs, out);
}

const ibvi__head_ops ibvi__head_softmax_ops = {
    .name = "softmax",
    .regression = 0,
    .check = check,
    .dim = dim,
    .doubles = doubles,
    .begin = begin,
    .add = add,
    .finish = finish,
};
