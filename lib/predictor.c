/*
 * libibvi - predictive averaging over K weight samples (and over the members
 * of an ensemble), with the uncertainty measures of docs/concepts.md
 * ("Prediction and metrics").
 *
 * The engine is generic over the layer kinds (layer_ops.h): every layer runs
 * through its kind's forward with one theta. Rows are "shared" while no
 * layer has depended on the weight sample yet: those layers run once on n
 * rows. The first variational layer fans the rows out to K blocks of n
 * (sample-major); every later layer runs on K * n rows, deterministic
 * layers and layers without parameters as one stacked call.
 *
 * The fan-out layer of a kind whose output is linear in theta and computed
 * by one GEMM (dense, conv2d: has_identity) takes the cheaper, by
 * multiply-adds, of
 *  - the low-rank identity (docs/concepts.md, "The variational layer"): one
 *    GEMM of the inputs against [W; F_1..F_R] (R + 1 passes), then one GEMM
 *    that mixes the R + 1 projections with [1, z_k] for all K samples (a
 *    conv: one convolution with (R + 1) * C_out filters, then the mixing
 *    per example, shared_low_rank_conv);
 *  - K materialised weight samples theta_k = mu + S z_k (one read of S),
 *    each applied to the inputs.
 * Other kinds, and later variational layers, always materialise: later
 * layers' inputs differ per sample, so the identity would cost R + 1
 * passes per sample instead of one.
 * Both paths prepare once per run (the rearranged factor, the K samples):
 * they depend on the parameters, which may change between runs, not on x.
 *
 * The last layer writes its outputs class-major (outputs x n per sample),
 * and each sample block goes to the predictor's head (head.h: softmax,
 * sigmoid, regression, heteroscedastic), whose accumulation runs along
 * rows in vectorised blocks, in double (through the last layer kind's
 * forward_by_class, or transposed from its forward). run and
 * run_regression share the one chunk loop (predict). A ReLU after a layer
 * whose kind has forward_relu (dense: fused with its bias) is done there;
 * other activations are applied in place.
 * The element-wise kernels are plain C loops that GCC vectorises (see
 * lib/meson.build): no intrinsics, no target flags. They run on the
 * network's threads (parallel.h) between its GEMMs, never beside one: the
 * head by parts of the chunk's rows (head_job), the identity's preparation
 * by outputs and its bias rows by rows or columns, the samples by rows of
 * theta (gaussian.c), the finiteness checks by ranges. No value depends on
 * the split, so every thread count gives the same bits
 * (tests/test_predictor_threads.c).
 *
 * A residual reads an earlier layer's output (its skip): a skip source
 * writes its output into a buffer of its own (kept), not the ping-pong
 * buffers, and nothing runs in place on it. Its rows are n if it ran
 * before the fan-out; a residual after the fan-out then adds the same skip
 * to each of the K blocks (residual.c broadcasts it).
 *
 * Everything a run needs lives in one workspace block sized for `batch`
 * inputs (two ping-pong activation buffers of K x batch x widest layer, the
 * kept outputs of skip sources, the identity's buffers, the sampled
 * weights, the double accumulators): a run allocates nothing. Scratch is
 * shared by all layers: a run is forward only, so what a kind keeps for
 * its backward in training (group normalisation's statistics) is not
 * needed after its call.
 *
 * SPDX-License-Identifier: MIT
 */
#include <float.h>
#include <math.h>
#include <stdatomic.h>
#include <string.h>

#include "head.h"
#include "ibvi/predictor.h"
#include "kernels.h"
#include "network.h"
#include "parallel.h"

#define DEFAULT_BATCH 256

struct ibvi_predictor {
    ibvi_allocator allocator;
    ibvi_net **nets;
    int32_t count;
    int32_t samples;      /* K */
    int32_t mean_network; /* 1: z = 0, one sample */
    float temperature;
    const ibvi__head_ops *head; /* what a run averages (head.h) */
    int32_t head_kind;
    float noise_std;      /* IBVI_HEAD_REGRESSION's sigma */
    int64_t batch;
    float *noise;         /* count x K x noise_size, drawn at creation */
    int32_t fan_out;      /* index of the first variational layer, or -1 */

    /* Workspace for `batch` inputs (one block). */
    float *block;
    float *act[2];        /* ping-pong: K * batch x widest layer each */
    float *projection;    /* batch x out * (R + 1): the identity's GEMM */
    float *factor_t;      /* (in + 1) x out * (R + 1): [W; F_r] rearranged
                             (a conv: theta of the (R + 1) * C_out-filter
                             convolution, (R + 1) P floats) */
    float *mix;           /* K x (R + 1): rows [1, z_k] */
    ibvi__conv2d_geom conv_identity; /* a conv fan-out's identity: its
                             geometry with (R + 1) * C_out filters */
    float *scratch;       /* the largest scratch of any layer's kind for
                             K * batch rows (layer_ops.h), or NULL */
    float *transposed;    /* K * batch x classes: the last layer's rows when
                             its kind has no forward_by_class, or NULL */
    /* Per layer: the outputs of skip sources (skip_readers > 0), K * batch
     * x outputs, kept until every residual reading them has run (the
     * ping-pong buffers would overwrite them); NULL for other layers.
     * kept_rows[i]: the rows the kept output has in this run (n while the
     * rows are shared, K * n after the fan-out). */
    float **kept;
    int64_t *kept_rows;
    double *acc;          /* the head's accumulators: the most any head asks
                             for this network's outputs and batch (head.h),
                             so changing the head never allocates */
    /* Per layer: K x P materialised weights in the workspace, or NULL when
     * the layer never materialises (rank 0, or the identity always wins). */
    float **sampled;

    /* What the prepared buffers hold in this run: the layer (of which
     * member) whose factor_t and mix, and per layer whose samples, are
     * current. Reset at each run (the parameters may have changed since). */
    const ibvi_layer *prepared;
    const ibvi_layer **ready;
};

/* ---- creation ------------------------------------------------------------ */

/* The kinds whose configuration is more than their shapes compare it here
 * (-Wswitch: a new kind must decide). */
static int same_config(const ibvi_layer *x, const ibvi_layer *y)
{
    switch ((ibvi__kind)x->kind) {
    case IBVI__KIND_DENSE:
        return 1; /* the units are the output shape */
    case IBVI__KIND_ACTIVATION:
        return x->activation == y->activation;
    case IBVI__KIND_CONV2D: {
        /* The channels are the output shape; the window is not. */
        const ibvi__conv2d_geom *a = &x->conv.geom, *b = &y->conv.geom;
        return a->kh == b->kh && a->kw == b->kw &&
               a->stride_h == b->stride_h && a->stride_w == b->stride_w &&
               a->pad_h == b->pad_h && a->pad_w == b->pad_w;
    }
    case IBVI__KIND_MAXPOOL:
    case IBVI__KIND_AVGPOOL:
        return x->pool.kernel == y->pool.kernel &&
               x->pool.stride == y->pool.stride;
    case IBVI__KIND_GLOBAL_AVGPOOL:
    case IBVI__KIND_FLATTEN:
        return 1; /* the shapes say it all */
    case IBVI__KIND_GROUPNORM:
        return x->groupnorm.groups == y->groupnorm.groups &&
               x->groupnorm.eps == y->groupnorm.eps;
    case IBVI__KIND_RESIDUAL:
        return x->residual.from == y->residual.from &&
               x->residual.stride == y->residual.stride;
    }
    return 0;
}

static int same_shape(ibvi__shape a, ibvi__shape b)
{
    return a.c == b.c && a.h == b.h && a.w == b.w;
}

static int same_architecture(const ibvi_net *a, const ibvi_net *b)
{
    if (!same_shape(a->input_shape, b->input_shape) ||
        a->layer_count != b->layer_count)
        return 0;
    for (int32_t i = 0; i < a->layer_count; i++) {
        const ibvi_layer *x = a->layers[i], *y = b->layers[i];
        if (x->kind != y->kind || !same_shape(x->out_shape, y->out_shape) ||
            x->rank != y->rank || x->covariance != y->covariance ||
            x->params != y->params || !same_config(x, y))
            return 0;
    }
    return 1;
}

/* The identity's convolution for a conv layer (see shared_low_rank_conv):
 * the layer's geometry with (R + 1) * C_out filters, the weight sets [mu,
 * F_1..F_R] one after the other. 0 when that exceeds the image limits (the
 * layer then materialises); fills *big when not NULL. */
static int big_geometry(const ibvi__conv2d_geom *g, int64_t R1,
                        ibvi__conv2d_geom *big)
{
    if (ibvi__conv2d_geometry(big, g->c_in, g->h_in, g->w_in, R1 * g->c_out,
                              g->kh, g->kw, g->stride_h, g->stride_w,
                              g->pad_h, g->pad_w, "ibvi_predictor"))
        return 0;
    if (!g->bias)
        ibvi__conv2d_without_bias(big);
    return 1;
}

static int conv_identity_geometry(const ibvi_layer *l, ibvi__conv2d_geom *big)
{
    const ibvi__conv2d_geom *g = &l->conv.geom;
    const int64_t R1 = l->rank + 1;
    if (R1 * g->c_out > IBVI__IMAGE_DIM_MAX ||
        R1 * g->out_size > IBVI__IMAGE_SIZE_MAX)
        return 0;
    /* Everything else was checked when the layer was added: no failure. */
    return big == NULL ||
           big_geometry(g, R1, big);
}

/* Whether predictor.c implements the low-rank identity for the kind: its
 * output is linear in theta and computed by one GEMM against theta's rows
 * (dense) or by a convolution that can run R + 1 weight sets as one with
 * (R + 1) * C_out filters (conv2d, not as the last layer, whose logits go
 * class-major). */
static int has_identity(const ibvi_layer *l)
{
    /* The identity needs theta = mu + S z with a small R: a diagonal layer
     * (R would be P) takes the general path, K materialised samples. */
    switch ((ibvi__covariance)l->covariance) {
    case IBVI__COV_LOWRANK:
        break;
    case IBVI__COV_NONE:
    case IBVI__COV_DIAGONAL:
    case IBVI__COV_DIAG_LOWRANK: /* SWAG: materialised like a diagonal */
        return 0;
    }
    if (!(l->ops->flags & IBVI__OPS_LINEAR_IN_THETA))
        return 0;
    switch ((ibvi__kind)l->kind) {
    case IBVI__KIND_DENSE:
        return 1;
    case IBVI__KIND_CONV2D:
        return l != l->net->layers[l->net->layer_count - 1] &&
               conv_identity_geometry(l, NULL);
    case IBVI__KIND_ACTIVATION:
    case IBVI__KIND_MAXPOOL:
    case IBVI__KIND_AVGPOOL:
    case IBVI__KIND_GLOBAL_AVGPOOL:
    case IBVI__KIND_FLATTEN:
    case IBVI__KIND_GROUPNORM:
    case IBVI__KIND_RESIDUAL:
        return 0;
    }
    return 0;
}

static int64_t padded(int64_t count) { return (count + 15) & ~(int64_t)15; }

/* ---- the fan-out layer's two paths ----------------------------------------
 * The cost, in multiply-adds, to run K samples of variational layer l on n
 * shared rows, where `share` is the part of the per-run preparation one
 * chunk carries (1 / chunks for one network: prepared once per run; 1 for
 * ensembles, whose members take turns in the buffers, so once per member
 * and chunk):
 *   identity:    R + 1 passes, the mixing (K x n x out x (R + 1)), and the
 *                rearrangement of P x (R + 1) floats (one multiply-add each);
 *   materialise: K passes, and sampling K x P x R.
 * A pass whose output is narrower than NARROW columns counts as NARROW
 * wide: BLIS packs its input (n x in) whatever the width, and for narrow
 * outputs the packing, not the arithmetic, bounds it (measured on the
 * 256 -> 10 layer: a quarter of the multiply-add rate of 256 -> 256). So a
 * small last layer takes the identity (one pass of out * (R + 1) columns)
 * from a few samples on, not K passes of out columns.
 * Identity minus materialise is linear in n and in share, so its sign over
 * n in [1, batch] and share in (0, 1] is decided at the four corners: that
 * tells, at allocation, which buffers a batch size can need. */
#define NARROW 32

/* One pass of `sets` weight sets at once over n rows. A convolution's
 * pass is its GEMM (positions x patch per filter and example) and the
 * im2col that builds its input, counted as one multiply-add per copied
 * value; the NARROW rule is about a dense layer's packed input. */
static double pass_macs(const ibvi_layer *l, int64_t n, int64_t sets)
{
    if (l->kind == IBVI__KIND_CONV2D) {
        const ibvi__conv2d_geom *g = &l->conv.geom;
        return (double)n * g->positions * g->patch *
               (double)(g->c_out * sets + 1);
    }
    const int64_t width = l->outputs * sets;
    return (double)n * l->inputs * (double)(width > NARROW ? width : NARROW);
}

static double identity_macs(const ibvi_layer *l, int64_t n, int32_t K,
                            double share)
{
    const int64_t R1 = l->rank + 1;
    return pass_macs(l, n, R1) + (double)K * n * l->outputs * R1 +
           share * (double)l->params * R1;
}

static double materialise_macs(const ibvi_layer *l, int64_t n, int32_t K,
                               double share)
{
    return K * pass_macs(l, n, 1) + share * (double)K * l->params * l->rank;
}

static int identity_is_cheaper(const ibvi_layer *l, int64_t n, int32_t K,
                               double share)
{
    return identity_macs(l, n, K, share) < materialise_macs(l, n, K, share);
}

/* Whether any chunk of 1..batch rows, in any run, takes the identity
 * (want = 1) or materialises (want = 0). */
static int may_take(const ibvi_layer *l, int64_t batch, int32_t K, int want)
{
    if (!has_identity(l))
        return want == 0;
    const int64_t rows[2] = {1, batch};
    const double shares[2] = {0.0, 1.0};
    for (int a = 0; a < 2; a++)
        for (int b = 0; b < 2; b++)
            if (identity_is_cheaper(l, rows[a], K, shares[b]) == want)
                return 1;
    return 0;
}

/* Lays the workspace out for `batch` inputs from the first network's shape:
 * returns its size in floats and, when base is not NULL, points the
 * predictor's buffers into it. Buffers a path needs exist only if that
 * path can be taken at this batch size. */
static int64_t layout_workspace(ibvi_predictor *p, int64_t batch, float *base)
{
    const ibvi_net *net = p->nets[0];
    const int32_t K = p->samples;
    int64_t width = 1, projection = 0, factor_t = 0, mix = 0, scratch = 0;
    for (int32_t i = 0; i < net->layer_count; i++) {
        const ibvi_layer *l = net->layers[i];
        if (l->outputs > width)
            width = l->outputs;
        if (l->ops->scratch_floats) {
            const int64_t floats = l->ops->scratch_floats(l, K * batch);
            scratch = floats > scratch ? floats : scratch;
        }
    }
    if (p->fan_out >= 0 && may_take(net->layers[p->fan_out], batch, K, 1)) {
        const ibvi_layer *l = net->layers[p->fan_out];
        const int64_t outer = (int64_t)l->outputs * (l->rank + 1);
        projection = batch * outer;
        mix = (int64_t)K * (l->rank + 1);
        if (l->kind == IBVI__KIND_CONV2D) {
            /* The (R + 1) * C_out-filter convolution: its theta and its
             * im2col scratch. */
            ibvi__conv2d_geom big;
            conv_identity_geometry(l, &big);
            factor_t = big.params;
            const int64_t floats = ibvi__conv2d_scratch_floats(&big, batch);
            scratch = floats > scratch ? floats : scratch;
            if (base)
                p->conv_identity = big;
        } else {
            factor_t = ((int64_t)l->inputs + 1) * outer;
        }
    }
    const int64_t act = padded(K * batch * width);
    const ibvi_layer *last = net->layers[net->layer_count - 1];
    const int64_t classes = last->outputs;
    const int64_t transposed =
        last->ops->forward_by_class ? 0 : K * batch * classes;
    int64_t total = 2 * act + padded(projection) + padded(factor_t) +
                    padded(mix) + padded(scratch) + padded(transposed);
    for (int32_t i = 0; i < net->layer_count; i++) {
        const ibvi_layer *l = net->layers[i];
        if (base)
            p->kept[i] = l->skip_readers > 0 ? base + total : NULL;
        if (l->skip_readers > 0)
            total += padded(K * batch * l->outputs);
    }
    if (base) {
        p->act[0] = base;
        p->act[1] = base + act;
        p->projection = base + 2 * act;
        p->factor_t = p->projection + padded(projection);
        p->mix = p->factor_t + padded(factor_t);
        p->scratch = scratch ? p->mix + padded(mix) : NULL;
        p->transposed =
            transposed ? p->mix + padded(mix) + padded(scratch) : NULL;
    }
    for (int32_t i = 0; i < net->layer_count; i++) {
        const ibvi_layer *l = net->layers[i];
        const int materialises =
            ibvi__is_variational(l) &&
            (i != p->fan_out || may_take(l, batch, K, 0));
        if (base)
            p->sampled[i] = materialises ? base + total : NULL;
        if (materialises)
            total += padded((int64_t)K * l->params);
    }
    if (base)
        p->acc = (double *)(base + total);
    int64_t acc = 0;
    /* Every head of the table (the kinds are 0, 1, ...), for a chunk cut
     * into any number of parts (head_job): `parts` accumulator blocks
     * laid out for ceil(batch / parts) rows each. */
    const int64_t most = batch < IBVI__PARALLEL_MAX_CHUNKS
                             ? batch
                             : IBVI__PARALLEL_MAX_CHUNKS;
    for (int32_t kind = 0; ibvi__head_of(kind); kind++)
        for (int64_t parts = 1; parts <= most; parts++) {
            const int64_t doubles =
                parts * ibvi__head_of(kind)->doubles(
                            (int32_t)classes, (batch + parts - 1) / parts);
            acc = doubles > acc ? doubles : acc;
        }
    /* The accumulators count twice: they hold 8-byte values. */
    return total + 2 * padded(acc);
}

static int allocate_workspace(ibvi_predictor *p, int64_t batch, const char *fn)
{
    const int64_t total = layout_workspace(p, batch, NULL);
    float *block = ibvi__alloc(&p->allocator, (size_t)total, sizeof(float));
    if (!block)
        return ibvi__fail(IBVI_ERR_NOMEM,
                          "%s: out of memory for a batch of %lld inputs", fn,
                          (long long)batch);
    ibvi__free(&p->allocator, p->block);
    p->block = block;
    p->batch = batch;
    layout_workspace(p, batch, block);
    return IBVI_OK;
}

/* Index of the first layer with a Gaussian theta, or -1: the only layer
 * that can see an input shared by all samples (and so use the identity). */
static int32_t first_variational(const ibvi_net *net)
{
    for (int32_t i = 0; i < net->layer_count; i++)
        if (ibvi__is_variational(net->layers[i]))
            return i;
    return -1;
}

/* Both public creators; fn names the one the host called in messages. */
static int create(const char *fn, ibvi_predictor **out, ibvi_net *const *nets,
                  int32_t count, int32_t samples, uint64_t seed)
{
    IBVI_CHECK_NOT_NULL(fn, out);
    *out = NULL;
    IBVI_CHECK_NOT_NULL(fn, nets);
    if (count < 1 || count > 4096)
        return ibvi__fail(IBVI_ERR_INVALID_ARG,
                          "%s: count = %d, expected 1..4096", fn, (int)count);
    if (samples < 1 || samples > IBVI_MAX_SAMPLES)
        return ibvi__fail(IBVI_ERR_INVALID_ARG,
                          "%s: samples = %d, expected 1..%d", fn, (int)samples,
                          IBVI_MAX_SAMPLES);
    for (int32_t i = 0; i < count; i++) {
        if (!nets[i])
            return ibvi__fail(IBVI_ERR_INVALID_ARG, "%s: nets[%d] is NULL", fn,
                              (int)i);
        int status = ibvi__net_check_ready(nets[i], fn);
        if (status < 0)
            return status;
        if (!same_architecture(nets[0], nets[i]))
            return ibvi__fail(IBVI_ERR_SHAPE,
                              "%s: nets[%d] has another architecture than "
                              "nets[0]", fn, (int)i);
    }
    const ibvi_allocator *a = &nets[0]->allocator;
    const int64_t noise_floats = (int64_t)count * samples * nets[0]->noise_size;
    const size_t layers = (size_t)nets[0]->layer_count;
    ibvi_predictor *p = ibvi__calloc(a, 1, sizeof *p);
    ibvi_net **copy = ibvi__alloc(a, (size_t)count, sizeof *copy);
    float *noise = ibvi__alloc(a, (size_t)noise_floats, sizeof(float));
    float **sampled = ibvi__calloc(a, layers, sizeof *sampled);
    const ibvi_layer **ready = ibvi__calloc(a, layers, sizeof *ready);
    float **kept = ibvi__calloc(a, layers, sizeof *kept);
    int64_t *kept_rows = ibvi__calloc(a, layers, sizeof *kept_rows);
    if (!p || !copy || !noise || !sampled || !ready || !kept || !kept_rows) {
        ibvi__free(a, p);
        ibvi__free(a, copy);
        ibvi__free(a, noise);
        ibvi__free(a, sampled);
        ibvi__free(a, (void *)ready);
        ibvi__free(a, kept);
        ibvi__free(a, kept_rows);
        return ibvi__fail(IBVI_ERR_NOMEM, "%s: out of memory", fn);
    }
    p->sampled = sampled;
    p->ready = ready;
    p->kept = kept;
    p->kept_rows = kept_rows;
    memcpy(copy, nets, (size_t)count * sizeof *copy);
    p->allocator = *a;
    p->nets = copy;
    p->count = count;
    p->samples = samples;
    p->temperature = 1.0f;
    p->head = ibvi__head_of(IBVI_HEAD_SOFTMAX);
    p->head_kind = IBVI_HEAD_SOFTMAX;
    p->noise = noise;
    p->fan_out = first_variational(nets[0]);
    ibvi_rng rng;
    ibvi__rng_seed(&rng, seed, IBVI_STREAM_PREDICT);
    ibvi__rng_normal(&rng, noise, noise_floats, 1.0f);
    int status = allocate_workspace(p, DEFAULT_BATCH, fn);
    if (status < 0) {
        ibvi_predictor_free(p);
        return status;
    }
    *out = p;
    return IBVI_OK;
}

int ibvi_predictor_create_ensemble(ibvi_predictor **out, ibvi_net *const *nets,
                                   int32_t count, int32_t samples,
                                   uint64_t seed)
{
    return create("ibvi_predictor_create_ensemble", out, nets, count, samples,
                  seed);
}

int ibvi_predictor_create(ibvi_predictor **out, ibvi_net *net, int32_t samples,
                          uint64_t seed)
{
    IBVI_CHECK_NOT_NULL("ibvi_predictor_create", out);
    *out = NULL;
    IBVI_CHECK_NOT_NULL("ibvi_predictor_create", net);
    return create("ibvi_predictor_create", out, &net, 1, samples, seed);
}

void ibvi_predictor_free(ibvi_predictor *p)
{
    if (!p)
        return;
    ibvi_allocator a = p->allocator;
    ibvi__free(&a, p->block);
    ibvi__free(&a, p->noise);
    ibvi__free(&a, p->nets);
    ibvi__free(&a, p->sampled);
    ibvi__free(&a, (void *)p->ready);
    ibvi__free(&a, p->kept);
    ibvi__free(&a, p->kept_rows);
    ibvi__free(&a, p);
}

/* ---- settings ------------------------------------------------------------ */

/* The outputs' count of the first network: every member has it. */
static int32_t network_outputs(const ibvi_predictor *p)
{
    const ibvi_net *first = p->nets[0];
    return first->layers[first->layer_count - 1]->outputs;
}

int ibvi_predictor_set_batch_size(ibvi_predictor *p, int64_t batch)
{
    static const char fn[] = "ibvi_predictor_set_batch_size";
    IBVI_CHECK_NOT_NULL(fn, p);
    if (batch < 1 || batch > (INT64_MAX / IBVI_MAX_SAMPLES) / p->nets[0]->max_width /
                                 (int64_t)p->samples / 64)
        return ibvi__fail(IBVI_ERR_INVALID_ARG,
                          "%s: batch = %lld, expected >= 1 and a workspace "
                          "that fits in memory", fn, (long long)batch);
    return allocate_workspace(p, batch, fn);
}

int ibvi_predictor_set_mean_network(ibvi_predictor *p, int32_t on)
{
    static const char fn[] = "ibvi_predictor_set_mean_network";
    IBVI_CHECK_NOT_NULL(fn, p);
    if (on != 0 && on != 1)
        return ibvi__fail(IBVI_ERR_INVALID_ARG, "%s: on = %d, expected 0 or 1",
                          fn, (int)on);
    p->mean_network = on;
    return IBVI_OK;
}

int ibvi_predictor_set_temperature(ibvi_predictor *p, float temperature)
{
    static const char fn[] = "ibvi_predictor_set_temperature";
    IBVI_CHECK_NOT_NULL(fn, p);
    if (!(temperature > 0.0f) || !isfinite(temperature))
        return ibvi__fail(IBVI_ERR_INVALID_ARG,
                          "%s: temperature = %g, expected a finite value > 0",
                          fn, (double)temperature);
    if (p->head->regression && temperature != 1.0f)
        return ibvi__fail(IBVI_ERR_STATE,
                          "%s: temperature = %g with the %s head: a "
                          "temperature scales logits (softmax and sigmoid "
                          "heads), a regression head takes only 1", fn,
                          (double)temperature, p->head->name);
    p->temperature = temperature;
    return IBVI_OK;
}

int ibvi_head_options_init(ibvi_head_options *opts, int32_t kind)
{
    static const char fn[] = "ibvi_head_options_init";
    IBVI_CHECK_NOT_NULL(fn, opts);
    if (!ibvi__head_of(kind))
        return ibvi__fail(IBVI_ERR_INVALID_ARG,
                          "%s: kind = %d, expected IBVI_HEAD_SOFTMAX (0), "
                          "_SIGMOID (1), _REGRESSION (2) or "
                          "_HETEROSCEDASTIC (3)", fn, (int)kind);
    opts->version = IBVI_HEAD_OPTIONS_VERSION;
    opts->kind = kind;
    opts->noise_std = 0.0f;
    return IBVI_OK;
}

int ibvi_predictor_set_head(ibvi_predictor *p, const ibvi_head_options *opts)
{
    static const char fn[] = "ibvi_predictor_set_head";
    IBVI_CHECK_NOT_NULL(fn, p);
    IBVI_CHECK_NOT_NULL(fn, opts);
    if (opts->version != IBVI_HEAD_OPTIONS_VERSION)
        return ibvi__fail(IBVI_ERR_INVALID_ARG,
                          "%s: opts->version = %u, expected "
                          "IBVI_HEAD_OPTIONS_VERSION (%d): fill the options "
                          "with ibvi_head_options_init", fn,
                          (unsigned)opts->version, IBVI_HEAD_OPTIONS_VERSION);
    const ibvi__head_ops *head = ibvi__head_of(opts->kind);
    if (!head)
        return ibvi__fail(IBVI_ERR_INVALID_ARG,
                          "%s: opts->kind = %d, expected IBVI_HEAD_SOFTMAX "
                          "(0), _SIGMOID (1), _REGRESSION (2) or "
                          "_HETEROSCEDASTIC (3)", fn, (int)opts->kind);
    if (!(opts->noise_std >= 0.0f) || !isfinite(opts->noise_std))
        return ibvi__fail(IBVI_ERR_INVALID_ARG,
                          "%s: opts->noise_std = %g, expected a finite value "
                          ">= 0", fn, (double)opts->noise_std);
    int status = head->check(network_outputs(p), fn);
    if (status < 0)
        return status;
    if (head->regression && p->temperature != 1.0f)
        return ibvi__fail(IBVI_ERR_STATE,
                          "%s: the temperature is %g: a regression head "
                          "takes none (set it back to 1 first)", fn,
                          (double)p->temperature);
    p->head = head;
    p->head_kind = opts->kind;
    p->noise_std = opts->noise_std;
    return IBVI_OK;
}

int32_t ibvi_predictor_head(const ibvi_predictor *p)
{
    IBVI_CHECK_NOT_NULL("ibvi_predictor_head", p);
    return p->head_kind;
}

int32_t ibvi_predictor_output_dim(const ibvi_predictor *p)
{
    IBVI_CHECK_NOT_NULL("ibvi_predictor_output_dim", p);
    return p->head->dim(network_outputs(p));
}

int32_t ibvi_predictor_samples(const ibvi_predictor *p)
{
    IBVI_CHECK_NOT_NULL("ibvi_predictor_samples", p);
    return p->mean_network ? 1 : p->samples;
}

int ibvi_predictor_noise(const ibvi_predictor *p, float *z, int64_t z_len)
{
    static const char fn[] = "ibvi_predictor_noise";
    IBVI_CHECK_NOT_NULL(fn, p);
    IBVI_CHECK_NOT_NULL(fn, z);
    const int64_t expected = (int64_t)p->count * p->samples * p->nets[0]->noise_size;
    if (z_len != expected)
        return ibvi__fail(IBVI_ERR_SHAPE, "%s: z_len = %lld, expected %lld",
                          fn, (long long)z_len, (long long)expected);
    memcpy(z, p->noise, (size_t)expected * sizeof(float));
    return IBVI_OK;
}

/* ---- variational layers --------------------------------------------------- */

/* The last layer writes its outputs (the logits) class-major: each sample's
 * block is classes x n, so the softmax runs along rows in vector blocks
 * (accumulate). Hidden layers write rows (n x out), as the next GEMM reads
 * them. */
static int is_last(const ibvi_layer *l)
{
    return l == l->net->layers[l->net->layer_count - 1];
}

static int is_relu(const ibvi_layer *l)
{
    return l->kind == IBVI__KIND_ACTIVATION && l->activation == IBVI_ACT_RELU;
}

/* Column of G_r's output j in the identity's projections: for a hidden
 * layer "by output" (j * (R + 1) + r: the projections of all rows then form
 * one strided matrix for the mixing GEMM, and its output is row-major); for
 * the last layer "by rank" (r * out + j), with the projections stored
 * column-major (n rows of a column contiguous): the mixing GEMM then writes
 * class-major blocks. */
static int64_t column(const ibvi_layer *l, int64_t j, int64_t r)
{
    return is_last(l) ? r * l->outputs + j : j * (l->rank + 1) + r;
}

/* Rearranges [W; b] and S of layer l for the identity, once per run (per
 * member and chunk for ensembles, which share the buffer):
 *   factor_t (in x out * (R + 1)): column (j, r) holds W's row j for
 *     r = 0, F_r's row j for r >= 1 (F_r is column r - 1 of S, shaped like
 *     W); the extra last row holds b and the c_r in the same order;
 *   mix (K x (R + 1)): row k is [1, z_k].
 * The reads stream: S and the mean in order. */
static void put_column(ibvi_predictor *p, const ibvi_layer *l, int64_t row,
                       int64_t j, int64_t theta)
{
    const int64_t R = l->rank;
    float *dst = p->factor_t + row * l->outputs * (R + 1);
    const float *src = l->factor + theta * R;
    dst[column(l, j, 0)] = l->mean[theta];
    for (int64_t r = 0; r < R; r++)
        dst[column(l, j, r + 1)] = src[r];
}

/* The rearrangement of outputs j0 .. j1 - 1 (their columns of factor_t,
 * disjoint for disjoint outputs): split by outputs across the threads. */
typedef struct identity_job {
    ibvi_predictor *p;
    const ibvi_layer *l;
} identity_job;

static void put_outputs(void *arg, int64_t j0, int64_t j1)
{
    const identity_job *job = arg;
    const int64_t in = job->l->inputs, out = job->l->outputs;
    for (int64_t j = j0; j < j1; j++) {
        for (int64_t i = 0; i < in; i++)
            put_column(job->p, job->l, i, j, j * in + i);
        put_column(job->p, job->l, in, j, out * in + j);
    }
}

static void prepare_identity(ibvi_predictor *p, const ibvi_layer *l, int32_t K,
                             const float *noise, int64_t noise_stride)
{
    const int64_t in = l->inputs, R1 = l->rank + 1;
    identity_job job = {p, l};
    ibvi__parallel_for(ibvi__threads_in_effect(l->net->threads), l->outputs,
                       IBVI__PARALLEL_GRAIN_FLOATS / ((in + 1) * R1) + 1,
                       put_outputs, &job);
    for (int32_t k = 0; k < K; k++) {
        p->mix[k * R1] = 1.0f;
        memcpy(p->mix + k * R1 + 1, noise + k * noise_stride,
               (size_t)l->rank * sizeof(float));
    }
    p->prepared = l;
}

/* The projections' start, the bias of each column, split across the
 * threads by columns (the last layer's column-major proj) or rows. */
typedef struct fill_job {
    float *proj;
    const float *bias;
    int64_t n, outer;
} fill_job;

static void fill_columns(void *arg, int64_t c0, int64_t c1)
{
    const fill_job *f = arg;
    for (int64_t c = c0; c < c1; c++)
        for (int64_t row = 0; row < f->n; row++)
            f->proj[c * f->n + row] = f->bias[c];
}

static void fill_rows(void *arg, int64_t r0, int64_t r1)
{
    const fill_job *f = arg;
    for (int64_t row = r0; row < r1; row++)
        memcpy(f->proj + row * f->outer, f->bias,
               (size_t)f->outer * sizeof(float));
}

/* Input shared by all K samples, via the low-rank identity:
 *   out_k = sum_{r=0..R} [1, z_k]_r (x G_r^T + g_r),  G_0 = W, g_0 = b,
 *   G_r = F_r, g_r = c_r:
 * one GEMM gives all R + 1 projections of the n rows (started from the
 * bias row), one more mixes them with [1, z_k] into every sample's block
 * (see column for the two layouts). */
static void shared_low_rank(ibvi_predictor *p, const ibvi_layer *l,
                            const float *input, int64_t n, int32_t K,
                            const float *noise, int64_t noise_stride,
                            float *output)
{
    const int64_t in = l->inputs, out = l->outputs, R1 = l->rank + 1;
    const int64_t outer = out * R1;
    const int32_t threads = l->net->threads;
    const float *bias = p->factor_t + in * outer;
    float *proj = p->projection;
    if (p->prepared != l)
        prepare_identity(p, l, K, noise, noise_stride);
    fill_job fill = {proj, bias, n, outer};
    const int32_t split = ibvi__threads_in_effect(threads);
    if (is_last(l)) {
        /* proj column-major (outer columns of n); the output (K x out * n)
         * = mix (K x R1) proj viewed as R1 x (out * n). */
        ibvi__parallel_for(split, outer, IBVI__PARALLEL_GRAIN_FLOATS / n + 1,
                           fill_columns, &fill);
        ibvi__gemm_strided(threads, n, outer, in, 1.0f, input, in, 1,
                           p->factor_t, outer, 1, 1.0f, proj, 1, n);
        ibvi__gemm(threads, 0, 0, K, out * n, R1, 1.0f, p->mix, R1, proj,
                   out * n, 0.0f, output, out * n);
    } else {
        /* proj row-major (n x out * R1); the output (K x n * out) = mix
         * (K x R1) proj^T, proj viewed as (n * out) x R1. */
        ibvi__parallel_for(split, n, IBVI__PARALLEL_GRAIN_FLOATS / outer + 1,
                           fill_rows, &fill);
        ibvi__gemm(threads, 0, 0, n, outer, in, 1.0f, input, in, p->factor_t,
                   outer, 1.0f, proj, outer);
        ibvi__gemm(threads, 0, 1, K, n * out, R1, 1.0f, p->mix, R1, proj, R1,
                   0.0f, output, n * out);
    }
}

/* A conv layer's identity, theta_k = mu + sum_r z_kr F_r being linear in
 * the output: one convolution with (R + 1) * C_out filters, filter r * C_out
 * + o holding filter o of weight set r (mu for r = 0, F_r = column r - 1 of
 * S, shaped like mu) and its bias, gives all R + 1 outputs of each shared
 * input at once (one im2col instead of K); then every sample's output is
 * out_k = sum_r [1, z_k]_r proj_r, per example. factor_t holds the big
 * convolution's theta, rearranged once per run (per member and chunk for
 * ensembles). */
static void prepare_conv_identity(ibvi_predictor *p, const ibvi_layer *l,
                                  int32_t K, const float *noise,
                                  int64_t noise_stride)
{
    const ibvi__conv2d_geom *g = &l->conv.geom;
    const int64_t R = l->rank, R1 = R + 1, weights = g->c_out * g->patch;
    float *w = p->factor_t, *b = p->factor_t + R1 * weights;
    memcpy(w, l->mean, (size_t)weights * sizeof(float));
    for (int64_t t = 0; t < weights; t++) {
        const float *s = l->factor + t * R;
        for (int64_t r = 0; r < R; r++)
            w[(r + 1) * weights + t] = s[r];
    }
    if (g->bias)
        memcpy(b, l->mean + weights, (size_t)g->c_out * sizeof(float));
    for (int64_t o = 0; o < g->c_out && g->bias; o++) {
        const float *s = l->factor + (weights + o) * R;
        for (int64_t r = 0; r < R; r++)
            b[(r + 1) * g->c_out + o] = s[r];
    }
    for (int32_t k = 0; k < K; k++) {
        p->mix[k * R1] = 1.0f;
        memcpy(p->mix + k * R1 + 1, noise + k * noise_stride,
               (size_t)R * sizeof(float));
    }
    p->prepared = l;
}

static void shared_low_rank_conv(ibvi_predictor *p, const ibvi_layer *l,
                                 const float *input, int64_t n, int32_t K,
                                 const float *noise, int64_t noise_stride,
                                 float *output)
{
    const int64_t out = l->outputs, R1 = l->rank + 1;
    if (p->prepared != l)
        prepare_conv_identity(p, l, K, noise, noise_stride);
    /* proj: n examples of R1 blocks of C_out x H' x W' (NCHW of the big
     * convolution: weight set r's output is block r). */
    ibvi__conv2d_forward(l->net->threads, &p->conv_identity, p->factor_t,
                         input, p->projection, n, p->scratch);
    /* Example row's K outputs (K x out, row stride n * out: sample-major)
     * = mix (K x R1) times its R1 projections (R1 x out): one GEMM per
     * example (its projections are one block, the K outputs are not), which
     * measured faster than the same sums in plain loops (LeNet's first
     * conv, K = 32, R = 10: 0.59 s against 0.77 s for the whole run). */
    for (int64_t row = 0; row < n; row++)
        ibvi__gemm(l->net->threads, 0, 0, K, out, R1, 1.0f, p->mix, R1,
                   p->projection + row * R1 * out, out, 0.0f,
                   output + row * out, n * out);
}

/* Layer l with one theta on `rows` rows: the last layer writes class-major
 * (output (classes x rows, row stride ld >= rows)), others rows x outputs,
 * followed by the next layer's ReLU when fuse (the kind's forward_relu). */
static void run_theta(ibvi_predictor *p, const ibvi_layer *l,
                      const float *theta, const float *input, float *output,
                      int64_t rows, int64_t ld, int fuse)
{
    const ibvi__layer_ops *ops = l->ops;
    if (is_last(l)) {
        if (ops->forward_by_class) {
            ops->forward_by_class(l, theta, input, output, rows, ld);
            return;
        }
        const int64_t classes = l->outputs;
        ops->forward(l, theta, input, p->transposed, rows, p->scratch);
        for (int64_t c = 0; c < classes; c++)
            for (int64_t row = 0; row < rows; row++)
                output[c * ld + row] = p->transposed[row * classes + c];
        return;
    }
    if (fuse)
        ops->forward_relu(l, theta, input, output, rows);
    else
        ops->forward(l, theta, input, output, rows, p->scratch);
}

/* Layer i's K weight samples theta_k = mu + S z_k, drawn once per run
 * (per member and chunk for ensembles) with the training step's sampler,
 * which reads S once for all K, split by rows across the network's
 * threads. */
static const float *weight_samples(ibvi_predictor *p, int32_t i,
                                   const ibvi_layer *l, int32_t K,
                                   const float *noise, int64_t noise_stride)
{
    float *theta = p->sampled[i];
    if (p->ready[i] != l) {
        ibvi__gaussian_sample_all(l, noise, noise_stride, K, theta);
        p->ready[i] = l;
    }
    return theta;
}

/* K materialised weight samples, one GEMM each; input_stride 0 when all
 * samples share the input. */
static void sampled_weights(ibvi_predictor *p, int32_t i, const ibvi_layer *l,
                            const float *input, int64_t input_stride,
                            int64_t n, int32_t K, const float *noise,
                            int64_t noise_stride, int fuse, float *output)
{
    const float *theta = weight_samples(p, i, l, K, noise, noise_stride);
    for (int32_t k = 0; k < K; k++)
        run_theta(p, l, theta + k * l->params, input + k * input_stride,
                  output + k * n * l->outputs, n, n, fuse);
}

/* ---- running --------------------------------------------------------------- */

/* Where the logits of a run are: blocks (1, or K when some layer depended
 * on z) of classes x n, logit (k, c, row) at k * block_stride + c *
 * class_stride + row. */
typedef struct logits {
    const float *values;
    int32_t blocks;
    int64_t block_stride, class_stride;
} logits;

/* Runs one network on n inputs. The layers alternate between the two
 * activation buffers; activations work in place, except on the caller's x
 * and on a kept output. A skip source writes its output into its own
 * buffer (p->kept), where its residuals read it; a residual broadcasts a
 * skip of n shared rows to the K blocks when a variational layer lies
 * between them. The last layer is dense (ibvi_net_init checks it) and
 * writes class-major. */
static logits run_network(ibvi_predictor *p, const ibvi_net *net,
                          const float *noise, const float *x, int64_t n,
                          double share)
{
    const int32_t K = p->mean_network ? 1 : p->samples;
    const int64_t stride = net->noise_size;
    const float *input = x;
    int next = 0, shared = 1, stacked = 0, input_kept = 0;
    for (int32_t i = 0; i < net->layer_count; i++) {
        const ibvi_layer *l = net->layers[i];
        const ibvi__layer_ops *ops = l->ops;
        const int64_t rows = shared ? n : K * n;
        const float *z = noise + l->noise_offset;
        float *output = l->skip_readers > 0 ? p->kept[i] : p->act[next];
        if (l->kind == IBVI__KIND_RESIDUAL) {
            const int32_t from = l->residual.from;
            const float *skip = from < 0 ? x : p->kept[from];
            const int64_t skip_rows = from < 0 ? n : p->kept_rows[from];
            ibvi__residual_apply(l, l->params ? l->mean : NULL, input, skip,
                                 skip_rows, output, rows, p->scratch);
        } else if (l->params == 0) {
            /* In place where the kind allows it, except on the caller's x
             * and on an output kept for a residual; otherwise into the free
             * buffer. */
            if ((ops->flags & IBVI__OPS_IN_PLACE) && input != x &&
                !input_kept && l->skip_readers == 0)
                output = (float *)input;
            ops->forward(l, NULL, input, output, rows, p->scratch);
        } else {
            /* A ReLU right after a kind with a fused one is done there,
             * unless this output is a skip source (read before the ReLU);
             * the ReLU's output is then where the ReLU would write it. */
            const int fuse = ops->forward_relu != NULL && !is_last(l) &&
                             l->skip_readers == 0 &&
                             is_relu(net->layers[i + 1]);
            int fused = fuse; /* the identity runs its ReLU as a layer */
            if (fuse && net->layers[i + 1]->skip_readers > 0)
                output = p->kept[i + 1];
            if (!ibvi__is_variational(l) || p->mean_network) {
                run_theta(p, l, l->mean, input, output, rows, rows, fuse);
                stacked = 1; /* the last layer's blocks share columns */
            } else if (shared) {
                if (has_identity(l) && identity_is_cheaper(l, n, K, share)) {
                    if (l->kind == IBVI__KIND_CONV2D)
                        shared_low_rank_conv(p, l, input, n, K, z, stride,
                                             output);
                    else
                        shared_low_rank(p, l, input, n, K, z, stride,
                                        output);
                    fused = 0;
                } else {
                    sampled_weights(p, i, l, input, 0, n, K, z, stride, fuse,
                                    output);
                }
                shared = 0;
                stacked = 0;
            } else {
                sampled_weights(p, i, l, input, n * l->inputs, n, K, z,
                                stride, fuse, output);
                stacked = 0;
            }
            i += fused;
        }
        const ibvi_layer *done = net->layers[i]; /* the fused ReLU, or l */
        input_kept = done->skip_readers > 0;
        if (input_kept)
            p->kept_rows[i] = shared ? n : K * n;
        else if (output != input)
            next = 1 - next;
        input = output;
    }
    const int32_t blocks = shared ? 1 : K;
    const int64_t classes = net->layers[net->layer_count - 1]->outputs;
    /* One class-major GEMM over all blocks' rows, or one block after the
     * other. */
    if (stacked)
        return (logits){input, blocks, n, (int64_t)blocks * n};
    return (logits){input, blocks, classes * n, n};
}

/* ---- the head, split by rows ----------------------------------------------
 * A chunk's rows are cut into `parts` contiguous ranges
 * (ibvi__parallel_chunk_begin), and the head runs each range as a chunk of
 * its own: begin, add per block, finish, with accumulators of its own (acc
 * + part * part_doubles, laid out for part_rows = ceil(n / parts) rows;
 * layout_workspace reserves room for any number of parts). A head computes
 * each row from that row's outputs alone, adding the blocks in their order,
 * so the results are the same bits for any split, and the split only
 * decides which thread does a row. The parts are fixed for the chunk (its
 * accumulators stay where they are from the first member to the finish);
 * each pass runs them on the threads of the member it adds. */

/* The head's work per output value (the softmax head's: a shift, the
 * exponential's polynomial, two sums, in double) counts as this many
 * floats of a plain pass, so a part holds at least
 * IBVI__PARALLEL_GRAIN_FLOATS / (HEAD_WORK x blocks x outputs) rows. */
#define HEAD_WORK 16

typedef struct head_job {
    const ibvi__head_ops *head;
    ibvi__head_run run; /* the chunk's: its rows, acc for part 0 */
    ibvi__head_out out; /* the chunk's outputs */
    int32_t cols, parts;
    int64_t part_rows, part_doubles;
    /* One member's pass: its logits, the weight of a block, the run's
     * index of its first sample, whether the parts begin first. */
    logits f;
    int32_t classes, copies, begin;
    int64_t first;
    double weight;
    atomic_int nonfinite; /* a part met a NaN or infinite output */
} head_job;

/* The caller's arrays from `rows` rows on. */
static ibvi__head_out advance_out(ibvi__head_out o, int64_t rows, int32_t cols)
{
#define ADVANCE(ptr, per_row)                                                 \
    if (o.ptr)                                                                \
        o.ptr += rows * (per_row);
    ADVANCE(probs, cols);
    ADVANCE(predictive, 1);
    ADVANCE(expected, 1);
    ADVANCE(mutual, 1);
    ADVANCE(mean, cols);
    ADVANCE(var_epistemic, cols);
    ADVANCE(var_aleatoric, cols);
    ADVANCE(samples, cols);
#undef ADVANCE
    return o;
}

/* Part c as the head sees it: its rows (from *row0 on), accumulators and
 * outputs. */
static ibvi__head_run part_run(const head_job *j, int32_t c, int64_t *row0,
                               ibvi__head_out *out)
{
    ibvi__head_run r = j->run;
    *row0 = ibvi__parallel_chunk_begin(j->run.n, j->parts, c);
    r.n = ibvi__parallel_chunk_begin(j->run.n, j->parts, c + 1) - *row0;
    r.batch = j->part_rows;
    r.acc = j->run.acc + c * j->part_doubles;
    *out = advance_out(j->out, *row0, j->cols);
    return r;
}

/* Parts c0 .. c1 - 1 of one member's pass: checks the part's outputs in
 * every block, then adds the blocks. */
static void head_add_parts(void *arg, int64_t c0, int64_t c1)
{
    head_job *j = arg;
    const logits *f = &j->f;
    for (int64_t c = c0; c < c1; c++) {
        int64_t row0;
        ibvi__head_out out;
        const ibvi__head_run r = part_run(j, (int32_t)c, &row0, &out);
        int finite = 1;
        for (int32_t k = 0; k < f->blocks && finite; k++)
            for (int32_t o = 0; o < j->classes && finite; o++)
                finite = ibvi__all_finite(f->values + k * f->block_stride +
                                              o * f->class_stride + row0,
                                          r.n);
        if (!finite) {
            atomic_store_explicit(&j->nonfinite, 1, memory_order_relaxed);
            continue;
        }
        if (j->begin)
            j->head->begin(&r);
        for (int32_t k = 0; k < f->blocks; k++)
            j->head->add(&r, f->values + k * f->block_stride + row0,
                         f->class_stride, j->weight,
                         j->first + (int64_t)k * j->copies, j->copies, &out);
    }
}

static void head_finish_parts(void *arg, int64_t c0, int64_t c1)
{
    const head_job *j = arg;
    for (int64_t c = c0; c < c1; c++) {
        int64_t row0;
        ibvi__head_out out;
        const ibvi__head_run r = part_run(j, (int32_t)c, &row0, &out);
        j->head->finish(&r, &out);
    }
}

/* Both runs, after their own checks: x and n are checked here. Runs the
 * members chunk by chunk and hands every sample block to the head, the
 * chunk's rows split across the threads (head_job). */
static int predict(ibvi_predictor *p, const char *fn, const float *x,
                   int64_t n, ibvi__head_out out)
{
    const ibvi_net *first = p->nets[0];
    if (n <= 0 || n > INT64_MAX / first->max_width)
        return ibvi__fail(IBVI_ERR_INVALID_ARG, "%s: n = %lld, expected > 0",
                          fn, (long long)n);
    const int32_t threads = ibvi__threads_in_effect(first->threads);
    if (!(ibvi__parallel_max_abs(threads, x, n * first->input_dim) <= FLT_MAX))
        return ibvi__fail(IBVI_ERR_NONFINITE, "%s: x holds NaN or infinity",
                          fn);
    /* The networks' factors, without deferred steps (network.h). */
    for (int32_t i = 0; i < p->count; i++)
        ibvi__net_settle((ibvi_net *)p->nets[i]);
    const int32_t classes = network_outputs(p);
    const int32_t K = p->mean_network ? 1 : p->samples;
    const int32_t cols = p->head->dim(classes);
    /* The blocks a member's run ends in (run_network): K once a layer
     * depends on z. */
    const int32_t blocks = p->fan_out >= 0 ? K : 1;
    if (out.samples)
        out.sample_stride = n * cols;
    /* The part of the per-run preparations each chunk carries (see
     * identity_macs): ensemble members take turns in the buffers. */
    const int64_t chunks = (n + p->batch - 1) / p->batch;
    const double share = p->count > 1 ? 1.0 : 1.0 / (double)chunks;
    p->prepared = NULL;
    for (int32_t i = 0; i < first->layer_count; i++)
        p->ready[i] = NULL;
    for (int64_t start = 0; start < n; start += p->batch) {
        const int64_t rows = n - start < p->batch ? n - start : p->batch;
        const float *chunk = x + start * first->input_dim;
        head_job j = {
            .head = p->head,
            .run = {p->acc, rows, p->batch, classes, 1.0 / p->temperature,
                    (double)p->noise_std * p->noise_std},
            .out = advance_out(out, start, cols),
            .cols = cols,
            .parts = ibvi__parallel_chunks(
                threads, rows,
                IBVI__PARALLEL_GRAIN_FLOATS /
                        (HEAD_WORK * (int64_t)blocks * classes) + 1),
            .classes = classes,
        };
        j.part_rows = (rows + j.parts - 1) / j.parts;
        j.part_doubles = p->head->doubles(classes, j.part_rows);
        for (int32_t m = 0; m < p->count; m++) {
            const ibvi_net *net = p->nets[m];
            const float *noise = p->noise + (int64_t)m * p->samples * net->noise_size;
            j.f = run_network(p, net, noise, chunk, rows, share);
            /* One block stands for K equal samples when no layer depended
             * on z. */
            j.copies = j.f.blocks == K ? 1 : K;
            j.weight = 1.0 / ((double)p->count * j.f.blocks);
            j.first = (int64_t)m * K;
            j.begin = m == 0;
            atomic_init(&j.nonfinite, 0);
            ibvi__parallel_for(ibvi__threads_in_effect(net->threads), j.parts,
                               1, head_add_parts, &j);
            /* Finite inputs can still overflow to infinite logits (weights
             * too large for them): report it instead of returning NaN. */
            if (atomic_load_explicit(&j.nonfinite, memory_order_relaxed))
                return ibvi__fail(IBVI_ERR_NONFINITE,
                                  "%s: the %s of network %d overflow "
                                  "(NaN or infinity) for inputs %lld..%lld",
                                  fn, p->head->regression ? "outputs" : "logits",
                                  (int)m, (long long)start,
                                  (long long)(start + rows - 1));
        }
        ibvi__parallel_for(threads, j.parts, 1, head_finish_parts, &j);
    }
    return IBVI_OK;
}

int ibvi_predictor_run(ibvi_predictor *p, const float *x, int64_t n,
                       float *probs, float *predictive_entropy,
                       float *expected_entropy, float *mutual_information)
{
    static const char fn[] = "ibvi_predictor_run";
    IBVI_CHECK_NOT_NULL(fn, p);
    IBVI_CHECK_NOT_NULL(fn, x);
    IBVI_CHECK_NOT_NULL(fn, probs);
    if (p->head->regression)
        return ibvi__fail(IBVI_ERR_STATE,
                          "%s: the predictor has the %s head: use "
                          "ibvi_predictor_run_regression", fn, p->head->name);
    const ibvi__head_out out = {probs, predictive_entropy, expected_entropy,
                                mutual_information, NULL, NULL, NULL, NULL, 0};
    return predict(p, fn, x, n, out);
}

int ibvi_predictor_run_regression(ibvi_predictor *p, const float *x,
                                  int64_t n, float *mean, float *var_epistemic,
                                  float *var_aleatoric, float *samples)
{
    static const char fn[] = "ibvi_predictor_run_regression";
    IBVI_CHECK_NOT_NULL(fn, p);
    IBVI_CHECK_NOT_NULL(fn, x);
    if (!p->head->regression)
        return ibvi__fail(IBVI_ERR_STATE,
                          "%s: the predictor has the %s head: use "
                          "ibvi_predictor_run, or select a regression head "
                          "(ibvi_predictor_set_head)", fn, p->head->name);
    const ibvi__head_out out = {NULL, NULL, NULL, NULL, mean, var_epistemic,
                                var_aleatoric, samples, 0};
    return predict(p, fn, x, n, out);
}
