/*
 * libibvi - parameterizations: the prior each dense layer starts from and
 * the learning-rate multipliers of its parameters (SPEC.md section 3).
 *
 *   parameterization layer   weight std     SGD w   SGD b    Adam w   Adam b
 *   SP               all     1/sqrt(fan_in) 1       1        1        1
 *   muP              input   1/sqrt(fan_in) fan_out fan_out  1        1
 *   muP              hidden  1/sqrt(fan_in) 1       fan_out  1/fan_in 1
 *   muP              output  1/fan_in       1/fan_in fan_out 1/fan_in 1
 *
 * Biases have std 1 in every case. A single dense layer has both fans fixed,
 * so muP gives it SP's values. Covariance factors use the mean's std divided
 * by sqrt(R) and its multipliers divided by R (applied in optimizer.c).
 *
 * SPDX-License-Identifier: MIT
 */
#include <math.h>

#include "network.h"

static int32_t dense_count(const ibvi_net *net)
{
    int32_t count = 0;
    for (int32_t i = 0; i < net->layer_count; i++)
        count += net->layers[i]->kind == IBVI_LAYER_DENSE;
    return count;
}

static int32_t role_of(int32_t dense_index, int32_t dense_total)
{
    if (dense_total == 1)
        return IBVI_ROLE_SINGLE;
    if (dense_index == 0)
        return IBVI_ROLE_INPUT;
    if (dense_index == dense_total - 1)
        return IBVI_ROLE_OUTPUT;
    return IBVI_ROLE_HIDDEN;
}

static void set_multipliers(ibvi_layer *l, float sgd_w, float sgd_b,
                            float adam_w, float adam_b)
{
    l->sgd_weight_mult = sgd_w;
    l->sgd_bias_mult = sgd_b;
    l->adam_weight_mult = adam_w;
    l->adam_bias_mult = adam_b;
}

static void configure_layer(ibvi_layer *l, int32_t parameterization)
{
    const float fan_in = (float)l->inputs, fan_out = (float)l->outputs;
    l->weight_std = 1.0f / sqrtf(fan_in);
    l->bias_std = 1.0f;
    if (parameterization == IBVI_PARAM_SP || l->role == IBVI_ROLE_SINGLE) {
        set_multipliers(l, 1.0f, 1.0f, 1.0f, 1.0f);
        return;
    }
    switch (l->role) {
    case IBVI_ROLE_INPUT:
        set_multipliers(l, fan_out, fan_out, 1.0f, 1.0f);
        break;
    case IBVI_ROLE_HIDDEN:
        set_multipliers(l, 1.0f, fan_out, 1.0f / fan_in, 1.0f);
        break;
    default: /* IBVI_ROLE_OUTPUT */
        l->weight_std = 1.0f / fan_in;
        set_multipliers(l, 1.0f / fan_in, fan_out, 1.0f / fan_in, 1.0f);
        break;
    }
}

void ibvi__param_configure(ibvi_net *net, int32_t parameterization)
{
    const int32_t total = dense_count(net);
    int32_t dense_index = 0;
    for (int32_t i = 0; i < net->layer_count; i++) {
        ibvi_layer *l = net->layers[i];
        if (l->kind != IBVI_LAYER_DENSE) {
            l->role = IBVI_ROLE_NONE;
            continue;
        }
        l->role = role_of(dense_index++, total);
        configure_layer(l, parameterization);
    }
    net->parameterization = parameterization;
}

void ibvi__param_draw_prior(ibvi_net *net, uint64_t seed)
{
    ibvi_rng rng;
    ibvi__rng_seed(&rng, seed, IBVI_STREAM_INIT);
    for (int32_t i = 0; i < net->layer_count; i++) {
        ibvi_layer *l = net->layers[i];
        if (l->kind != IBVI_LAYER_DENSE)
            continue;
        const int64_t weights = (int64_t)l->outputs * l->inputs;
        ibvi__rng_normal(&rng, l->mean, weights, l->weight_std);
        ibvi__rng_normal(&rng, l->mean + weights, l->outputs, l->bias_std);
        if (l->rank > 0) {
            /* E[S S^T] = diag(weight_std^2, ..., bias_std^2). */
            const float shrink = 1.0f / sqrtf((float)l->rank);
            ibvi__rng_normal(&rng, l->factor, weights * l->rank,
                             l->weight_std * shrink);
            ibvi__rng_normal(&rng, l->factor + weights * l->rank,
                             (int64_t)l->outputs * l->rank,
                             l->bias_std * shrink);
        }
    }
}
