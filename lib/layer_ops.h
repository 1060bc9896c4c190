/*
 * libibvi - the internal layer interface: what every kind of layer provides
 * to the generic code (net.c builds, passes.c runs forward and backward,
 * param.c derives priors and learning-rate multipliers, optimizer.c walks
 * the parameters, predictor.c averages samples).
 *
 * A kind is one file (dense.c, activation.c, ...) that defines one
 * `const ibvi__layer_ops ibvi__<kind>_ops` and is named in ibvi__ops_of()
 * below. Adding a kind:
 *   1. a value in ibvi__kind (and, when it becomes public, the same value in
 *      ibvi_layer_kind of include/ibvi/net.h; the two lists are one);
 *   2. lib/<kind>.c with its ops table and an ibvi_net_add_<kind> builder
 *      (net.c's ibvi__net_add_layer does the generic part);
 *   3. its case in ibvi__ops_of(). -Wswitch (on with the project's warning
 *      level) then points at every other switch over ibvi__kind that must
 *      handle it; there is no `default:` in any of them on purpose.
 *
 * Shapes: every layer maps an input of shape (C, H, W) per example to an
 * output of shape (C', H', W'); a batch is row-major NCHW, one example per
 * row of C * H * W floats. A flat vector is (D, 1, 1).
 *
 * Parameters: a layer with parameters has one vector theta of P floats,
 * split into contiguous groups (dense: weights, then biases), each with the
 * fans and the role param.c needs. Whether theta is deterministic or a
 * low-rank Gaussian is not the kind's business: gaussian.c samples theta
 * per weight sample and the kind's forward/backward receive one theta.
 *
 * SPDX-License-Identifier: MIT
 */
#ifndef IBVI_LAYER_OPS_H
#define IBVI_LAYER_OPS_H

#include <stdint.h>

#include "ibvi/net.h"

/* The kinds, with the public ibvi_layer_kind values (pinned: dense 0,
 * activation 1). Kinds that are not public yet take the next values. */
typedef enum ibvi__kind {
    IBVI__KIND_DENSE = IBVI_LAYER_DENSE,
    IBVI__KIND_ACTIVATION = IBVI_LAYER_ACTIVATION,
    IBVI__KIND_CONV2D = IBVI_LAYER_CONV2D,
    IBVI__KIND_MAXPOOL = IBVI_LAYER_MAXPOOL,
    IBVI__KIND_AVGPOOL = IBVI_LAYER_AVGPOOL,
    IBVI__KIND_GLOBAL_AVGPOOL = IBVI_LAYER_GLOBAL_AVGPOOL,
    IBVI__KIND_FLATTEN = IBVI_LAYER_FLATTEN,
    IBVI__KIND_GROUPNORM = IBVI_LAYER_GROUPNORM,
    IBVI__KIND_RESIDUAL = IBVI_LAYER_RESIDUAL
} ibvi__kind;
/* One more than the largest ibvi__kind (not an enumerator: a switch over
 * ibvi__kind must not need a case for it). */
#define IBVI__KIND_COUNT 9

/* The shape of one example: channels, height, width. */
typedef struct ibvi__shape {
    int32_t c, h, w;
} ibvi__shape;

static inline int64_t ibvi__shape_size(ibvi__shape s)
{
    return (int64_t)s.c * s.h * s.w;
}

/* How a group of parameters is initialised and scaled (param.c). */
typedef enum ibvi__group_role {
    IBVI__GROUP_WEIGHT = 0, /* a weight matrix: std and multipliers by role
                               and fans (docs/design.md, param.c)        */
    IBVI__GROUP_BIAS = 1,   /* N(0, 1); SGD multiplier fan_out under muP */
    IBVI__GROUP_GAIN = 2,   /* constant 1 (a normalisation's scale)      */
    IBVI__GROUP_SHIFT = 3   /* constant 0 (a normalisation's offset)     */
} ibvi__group_role;

/* A contiguous range theta[offset .. offset + count) with one prior std and
 * one learning-rate multiplier per optimizer kind. The kind's configure
 * sets offset, count, fans and role; param.c sets the rest at init. */
typedef struct ibvi__param_group {
    int64_t offset, count;
    int64_t fan_in, fan_out;
    int32_t role;       /* ibvi__group_role                              */
    float init;         /* the prior mean (0, or 1 for a gain)            */
    float std;          /* the prior std of the mean's entries; factor
                           entries use std / sqrt(R)                      */
    float sgd_mult, adam_mult;
} ibvi__param_group;

#define IBVI__MAX_GROUPS 4

/* The weight distribution of a layer's theta (gaussian.c). */
typedef enum ibvi__covariance {
    IBVI__COV_NONE = 0,    /* deterministic: theta = mu                  */
    IBVI__COV_LOWRANK = 1, /* N(mu, S S^T), S is P x R: theta = mu + S z */
    IBVI__COV_DIAGONAL = 2, /* mean-field N(mu, diag(sigma^2)), sigma =
                               softplus(rho): theta = mu + sigma .* z     */
    IBVI__COV_DIAG_LOWRANK = 3 /* SWAG's N(mu, diag(d^2) + S S^T), d of P,
                                  S of P x R: theta = mu + d .* z1 + S z2
                                  (z1 of P then z2 of R); never trained */
    /* A new family adds a value here and a case to every switch over
     * ibvi__covariance (-Wswitch lists them). */
} ibvi__covariance;
/* One more than the largest ibvi__covariance (= ibvi_covariance_family). */
#define IBVI__COV_COUNT 4

/* Capabilities (ibvi__layer_ops.flags). */
enum {
    /* A weight matrix: counts for the muP roles (input, hidden, output
     * come from the position among such layers) and may end a network. */
    IBVI__OPS_WEIGHT_MATRIX = 1u << 0,
    /* May carry a low-rank Gaussian theta (rank > 0 accepted). */
    IBVI__OPS_VARIATIONAL = 1u << 1,
    /* The output is linear in theta for a fixed input (dense: theta holds
     * the bias too), so with an input shared by all samples the predictor
     * may use the low-rank identity f(x; mu + S z) = f(x; mu) +
     * sum_r z_r f(x; F_r), F_r = column r of S. */
    IBVI__OPS_LINEAR_IN_THETA = 1u << 2,
    /* The forward may run in place (input == output). */
    IBVI__OPS_IN_PLACE = 1u << 3
};

/* What a kind provides. `layer` is the layer being run (its shapes and
 * configuration; layer->net->threads for the kernels). rows is the number
 * of examples of this call: n * samples for one theta shared by every
 * sample, n for one sample's block. theta is P floats (NULL without
 * parameters). A kind that reads another layer's output too (a residual:
 * layer->net->layers[j]->output, all rows) must be deterministic (no
 * IBVI__OPS_VARIATIONAL), so it is always called once on all rows; it adds
 * its gradient for that output into layers[j]->grad_skip (network.h), after
 * its builder counted itself in layers[j]->skip_readers.
 * scratch holds scratch_floats(layer, rows) floats from the
 * network's workspace (NULL when that is 0); with scratch_kept it is the
 * layer's own and what forward leaves there is still there for backward
 * (one region per sample block), otherwise it is shared by all layers. */
typedef struct ibvi__layer_ops {
    const char *name; /* for messages: "dense", "activation" */
    uint32_t flags;   /* IBVI__OPS_* */

    /* Checks the layer's configuration (set by its builder) against
     * layer->in_shape and sets out_shape, params (0 without parameters)
     * and the groups. Returns IBVI_OK or a negative status with a message
     * under fn; it writes nothing but those fields. */
    int (*configure)(ibvi_layer *layer, const char *fn);

    /* Floats of scratch for `rows` examples; NULL for none. */
    int64_t (*scratch_floats)(const ibvi_layer *layer, int64_t rows);
    int scratch_kept;

    /* out (rows x out size) = f(in; theta). */
    void (*forward)(const ibvi_layer *layer, const float *theta,
                    const float *in, float *out, int64_t rows, float *scratch);

    /* From dy = dL/dout: dx = dL/din (dx NULL: not needed, first layer)
     * and dtheta = dL/dtheta (P floats, overwritten; NULL without
     * parameters). bound[g] receives a bound on |dtheta| entries of group
     * g, +inf or NaN when dy or in was not finite (the optimizer's fast
     * path relies on it; a kind without a cheap analytic bound may measure
     * max |dtheta| per group with ibvi__group_max_abs). */
    void (*backward)(const ibvi_layer *layer, const float *theta,
                     const float *in, const float *dy, float *dx,
                     float *dtheta, int64_t rows, float *scratch,
                     double *bound);

    /* Predictor fast paths (NULL when the kind has none; the predictor
     * then uses forward):
     * forward_relu: forward followed by max(., 0), fused (the next layer
     *   is a ReLU and is skipped);
     * forward_by_class: the last layer's output class-major, out[c * ld +
     *   row] (ld >= rows), for the softmax along rows. */
    void (*forward_relu)(const ibvi_layer *layer, const float *theta,
                         const float *in, float *out, int64_t rows);
    void (*forward_by_class)(const ibvi_layer *layer, const float *theta,
                             const float *in, float *out, int64_t rows,
                             int64_t ld);
} ibvi__layer_ops;

extern const ibvi__layer_ops ibvi__dense_ops;
extern const ibvi__layer_ops ibvi__activation_ops;
extern const ibvi__layer_ops ibvi__conv2d_ops;
extern const ibvi__layer_ops ibvi__maxpool_ops;
extern const ibvi__layer_ops ibvi__avgpool_ops;
extern const ibvi__layer_ops ibvi__global_avgpool_ops;
extern const ibvi__layer_ops ibvi__flatten_ops;
extern const ibvi__layer_ops ibvi__groupnorm_ops;
extern const ibvi__layer_ops ibvi__residual_ops;

/* The ops of a kind; NULL for a value that is no kind. The one switch that
 * names every kind: -Wswitch flags a kind missing here. */
static inline const ibvi__layer_ops *ibvi__ops_of(int32_t kind)
{
    if (kind < 0 || kind >= IBVI__KIND_COUNT)
        return NULL;
    switch ((ibvi__kind)kind) {
    case IBVI__KIND_DENSE:
        return &ibvi__dense_ops;
    case IBVI__KIND_ACTIVATION:
        return &ibvi__activation_ops;
    case IBVI__KIND_CONV2D:
        return &ibvi__conv2d_ops;
    case IBVI__KIND_MAXPOOL:
        return &ibvi__maxpool_ops;
    case IBVI__KIND_AVGPOOL:
        return &ibvi__avgpool_ops;
    case IBVI__KIND_GLOBAL_AVGPOOL:
        return &ibvi__global_avgpool_ops;
    case IBVI__KIND_FLATTEN:
        return &ibvi__flatten_ops;
    case IBVI__KIND_GROUPNORM:
        return &ibvi__groupnorm_ops;
    case IBVI__KIND_RESIDUAL:
        return &ibvi__residual_ops;
    }
    return NULL;
}

#endif /* IBVI_LAYER_OPS_H */
