/*
 * libibvi - the sigmoid prediction head (IBVI_HEAD_SIGMOID): a binary
 * classifier with one output f, p = (1/K) sum_k sigmoid(f_k / T).
 *
 * sigmoid(f) is the softmax of the two logits [0, f], so the head copies
 * each sample block into the second row of a 2 x n class-major block whose
 * first row is 0 and runs the softmax head's accumulation (head_softmax.c,
 * the library's one softmax) on it: probs [1 - p, p], the entropies and the
 * mutual information of these two-class distributions, exactly as for a
 * two-class softmax.
 *
 * SPDX-License-Identifier: MIT
 */
#include "head.h"
#include "internal.h"

/* The 2 x batch float block [0; f] sits after the softmax sums. */
static float *pair(const ibvi__head_run *r)
{
    return (float *)(r->acc + ibvi__head_softmax_doubles(2, r->batch));
}

static int check(int32_t outputs, const char *fn)
{
    if (outputs != 1)
        return ibvi__fail(IBVI_ERR_SHAPE,
                          "%s: the sigmoid head needs a network with 1 "
                          "output, this one has %d (the softmax head suits "
                          "%d classes)", fn, (int)outputs, (int)outputs);
    return IBVI_OK;
}

static int32_t dim(int32_t outputs)
{
    (void)outputs;
    return 2;
}

static int64_t doubles(int32_t outputs, int64_t batch)
{
    (void)outputs;
    /* 2 x batch floats are batch doubles. */
    return ibvi__head_softmax_doubles(2, batch) + batch;
}

static void begin(const ibvi__head_run *r)
{
    ibvi__head_softmax_begin(r, 2);
    memset(pair(r), 0, (size_t)r->n * sizeof(float));
}

static void add(const ibvi__head_run *r, const float *f, int64_t cs,
                double weight, int64_t first, int32_t copies,
                const ibvi__head_out *out)
{
    (void)cs; /* one output: the block's n values are contiguous */
    (void)first;
    (void)copies;
    (void)out;
    float *block = pair(r);
    memcpy(block + r->n, f, (size_t)r->n * sizeof(float));
    ibvi__head_softmax_add(r, block, r->n, 2, weight);
}

static void finish(const ibvi__head_run *r, const ibvi__head_out *out)
{
    ibvi__head_softmax_finish(r, 2, out);
}

const ibvi__head_ops ibvi__head_sigmoid_ops = {
    .name = "sigmoid",
    .regression = 0,
    .check = check,
    .dim = dim,
    .doubles = doubles,
    .begin = begin,
    .add = add,
    .finish = finish,
};
