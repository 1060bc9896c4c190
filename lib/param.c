/*
 * libibvi - parameterizations: the prior each layer's parameters start from
 * and their learning-rate multipliers (docs/concepts.md, "The prior and the
 * parameterizations"), per parameter group (layer_ops.h) from the group's
 * fans and the layer's role.
 *
 * Roles come from the position among the layers with a weight matrix
 * (IBVI__OPS_WEIGHT_MATRIX: dense, later conv): the first is the input
 * layer, the last the output layer, the others hidden; a single one is
 * IBVI_ROLE_SINGLE. For a weight group with fans fan_in, fan_out:
 *
 *   parameterization layer   weight std     SGD w    Adam w
 *   SP               all     1/sqrt(fan_in) 1        1
 *   muP              input   1/sqrt(fan_in) fan_out  1
 *   muP              hidden  1/sqrt(fan_in) 1        1/fan_in
 *   muP              output  1/fan_in       1/fan_in 1/fan_in
 *
 * Bias groups have std 1 and, under muP, SGD multiplier fan_out (the
 * group's) and Adam multiplier 1; gain and shift groups (a normalisation's
 * scale and offset) start at 1 and 0 exactly and scale like biases. A
 * single weight-matrix layer has both fans fixed, so muP gives it SP's
 * values. Weights in a layer that is no weight matrix (a residual's 1x1
 * projection, width to width) are scaled as a hidden layer's and do not
 * count for the roles. Covariance factors use the mean's std divided by sqrt(R) and its
 * multipliers divided by R (applied in optimizer.c). A diagonal layer's rho
 * starts at softplus^-1(init_sigma x std) (std 1 for a constant group) and
 * takes the mean's multipliers (optimizer.c).
 *
 * SPDX-License-Identifier: MIT
 */
#include <math.h>
#include <string.h>

#include "network.h"

static int has_weight_matrix(const ibvi_layer *l)
{
    return (l->ops->flags & IBVI__OPS_WEIGHT_MATRIX) != 0;
}

static int32_t weight_layer_count(const ibvi_net *net)
{
    int32_t count = 0;
    for (int32_t i = 0; i < net->layer_count; i++)
        count += has_weight_matrix(net->layers[i]);
    return count;
}

static int32_t role_of(int32_t index, int32_t total)
{
    if (total == 1)
        return IBVI_ROLE_SINGLE;
    if (index == 0)
        return IBVI_ROLE_INPUT;
    if (index == total - 1)
        return IBVI_ROLE_OUTPUT;
    return IBVI_ROLE_HIDDEN;
}

static void set_group(ibvi__param_group *g, float init, float std,
                      float sgd, float adam)
{
    g->init = init;
    g->std = std;
    g->sgd_mult = sgd;
    g->adam_mult = adam;
}

static void configure_group(ibvi__param_group *g, int32_t role, int mup)
{
    const float fan_in = (float)g->fan_in, fan_out = (float)g->fan_out;
    /* Vector-like groups: biases, gains, shifts. */
    const float vector_sgd = mup && role != IBVI_ROLE_SINGLE ? fan_out : 1.0f;
    switch ((ibvi__group_role)g->role) {
    case IBVI__GROUP_WEIGHT: {
        const float std = 1.0f / sqrtf(fan_in);
        if (!mup || role == IBVI_ROLE_SINGLE || role == IBVI_ROLE_NONE) {
            set_group(g, 0.0f, std, 1.0f, 1.0f);
            return;
        }
        switch (role) {
        case IBVI_ROLE_INPUT:
            set_group(g, 0.0f, std, fan_out, 1.0f);
            break;
        case IBVI_ROLE_HIDDEN:
            set_group(g, 0.0f, std, 1.0f, 1.0f / fan_in);
            break;
        default: /* IBVI_ROLE_OUTPUT */
            set_group(g, 0.0f, 1.0f / fan_in, 1.0f / fan_in, 1.0f / fan_in);
            break;
        }
        return;
    }
    case IBVI__GROUP_BIAS:
        set_group(g, 0.0f, 1.0f, vector_sgd, 1.0f);
        return;
    case IBVI__GROUP_GAIN:
        set_group(g, 1.0f, 0.0f, vector_sgd, 1.0f);
        return;
    case IBVI__GROUP_SHIFT:
        set_group(g, 0.0f, 0.0f, vector_sgd, 1.0f);
        return;
    }
}

/* The first group of the layer that is (weights = 1) or is not a weight
 * group; a group of zeros and multipliers 1 when there is none. */
static const ibvi__param_group *first_group(const ibvi_layer *l, int weights)
{
    static const ibvi__param_group none = {.sgd_mult = 1.0f,
                                           .adam_mult = 1.0f};
    for (int32_t k = 0; k < l->group_count; k++)
        if ((l->groups[k].role == IBVI__GROUP_WEIGHT) == weights)
            return &l->groups[k];
    return &none;
}

const ibvi__param_group *ibvi__param_weights(const ibvi_layer *layer)
{
    return first_group(layer, 1);
}

const ibvi__param_group *ibvi__param_biases(const ibvi_layer *layer)
{
    return first_group(layer, 0);
}

void ibvi__param_configure(ibvi_net *net, int32_t parameterization)
{
    const int32_t total = weight_layer_count(net);
    const int mup = parameterization == IBVI_PARAM_MUP;
    int32_t weight_index = 0;
    for (int32_t i = 0; i < net->layer_count; i++) {
        ibvi_layer *l = net->layers[i];
        l->role = has_weight_matrix(l) ? role_of(weight_index++, total)
                                       : IBVI_ROLE_NONE;
        /* Weights outside the weight-matrix layers (a residual's
         * projection, width to width) scale as a hidden layer's. */
        const int32_t scale_role =
            l->role == IBVI_ROLE_NONE ? IBVI_ROLE_HIDDEN : l->role;
        for (int32_t k = 0; k < l->group_count; k++)
            configure_group(&l->groups[k], scale_role, mup);
    }
    net->parameterization = parameterization;
}

/* count values init + N(0, std^2) from rng; constants without a draw when
 * std is 0. */
static void draw(ibvi_rng *rng, float *out, int64_t count, float init,
                 float std)
{
    if (std == 0.0f) {
        for (int64_t i = 0; i < count; i++)
            out[i] = init;
        return;
    }
    ibvi__rng_normal(rng, out, count, std);
    if (init != 0.0f)
        for (int64_t i = 0; i < count; i++)
            out[i] += init;
}

void ibvi__param_draw_prior(ibvi_net *net, uint64_t seed)
{
    ibvi_rng rng;
    ibvi__rng_seed(&rng, seed, IBVI_STREAM_INIT);
    for (int32_t i = 0; i < net->layer_count; i++) {
        ibvi_layer *l = net->layers[i];
        for (int32_t k = 0; k < l->group_count; k++) {
            const ibvi__param_group *g = &l->groups[k];
            draw(&rng, l->mean + g->offset, g->count, g->init, g->std);
        }
        switch ((ibvi__covariance)l->covariance) {
        case IBVI__COV_NONE:
            break;
        case IBVI__COV_LOWRANK: {
            /* E[S S^T] = diag(std_g^2) over each group g's entries. */
            const float shrink = 1.0f / sqrtf((float)l->rank);
            for (int32_t k = 0; k < l->group_count; k++) {
                const ibvi__param_group *g = &l->groups[k];
                draw(&rng, l->factor + g->offset * l->rank,
                     g->count * l->rank, 0.0f, g->std * shrink);
            }
            break;
        }
        case IBVI__COV_DIAG_LOWRANK:
            /* d = 0, S = 0 (the block is zeroed): deterministic until
             * SWAG's moments are installed (ibvi_swag_build); no draw. */
            memset(l->diag, 0, (size_t)l->params * sizeof(float));
            memset(l->factor, 0,
                   (size_t)(l->params * (int64_t)l->rank) * sizeof(float));
            break;
        case IBVI__COV_DIAGONAL:
            /* sigma_0 = init_sigma x the group's prior std (the KL's, so a
             * constant-prior group counts 1): rho_0 = softplus^-1(sigma_0)
             * = log(expm1(sigma_0)), in double. No draw: the stream of
             * the means stays the one of a deterministic network. */
            for (int32_t k = 0; k < l->group_count; k++) {
                const ibvi__param_group *g = &l->groups[k];
                const double sigma0 =
                    (double)l->init_sigma * ibvi__kl_std(g);
                draw(&rng, l->rho + g->offset, g->count,
                     (float)log(expm1(sigma0)), 0.0f);
            }
            break;
        }
    }
}
