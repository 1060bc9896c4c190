/*
 * libibvi - the KL divergence of mean-field layers from their prior
 * (docs/concepts.md, "Mean-field VI"), exact in closed form.
 *
 * For a diagonal layer, q = N(mu, diag(s^2)) with s = softplus(rho), and
 * per parameter group g the prior p = N(m0, sp^2), m0 the group's init
 * (its prior mean) and sp its prior std (param.c; std 1 for a group with
 * a constant prior, a normalisation's gain and shift):
 *
 *   KL = 1/2 sum_i [ (s_i^2 + (mu_i - m0)^2) / sp^2 - 1 - log(s_i^2 / sp^2) ]
 *   dKL/dmu_i  = (mu_i - m0) / sp^2
 *   dKL/drho_i = (s_i / sp^2 - 1 / s_i) sigmoid(rho_i)
 *
 * Deterministic and low-rank layers contribute nothing: IBVI trains the
 * expected loss only. The sums run in double.
 *
 * SPDX-License-Identifier: MIT
 */
#include <math.h>

#include "network.h"

double ibvi__layer_kl(const ibvi_layer *l)
{
    if (l->covariance != IBVI__COV_DIAGONAL || l->params == 0)
        return 0.0;
    double total = 0.0;
    for (int32_t k = 0; k < l->group_count; k++) {
        const ibvi__param_group *g = &l->groups[k];
        const double var = (double)ibvi__kl_std(g) * ibvi__kl_std(g);
        const double m0 = g->init;
        double sum = 0.0;
        for (int64_t i = g->offset; i < g->offset + g->count; i++) {
            const double s = ibvi__softplus(l->rho[i]);
            const double d = (double)l->mean[i] - m0;
            sum += (s * s + d * d) / var - 1.0 - log(s * s / var);
        }
        total += 0.5 * sum;
    }
    return total;
}

void ibvi__kl_grad_span(const ibvi_layer *l, int32_t g, int part,
                        float weight, const float *grad, int64_t first,
                        int64_t n, float *out)
{
    const ibvi__param_group *grp = &l->groups[g];
    const float sp = ibvi__kl_std(grp), inv_var = 1.0f / (sp * sp);
    const int64_t base = grp->offset + first;
    if (part == 0) {
        const float *mu = l->mean + base;
        const float m0 = grp->init, w = weight * inv_var;
        for (int64_t i = 0; i < n; i++)
            out[i] = grad[i] + w * (mu[i] - m0);
        return;
    }
    const float *rho = l->rho + base;
    for (int64_t i = 0; i < n; i++) {
        float s, sig;
        ibvi__softplus_sigmoid(rho[i], &s, &sig);
        /* sigmoid / softplus tends to 1 as rho -> -inf (both ~ e^rho)
         * and never exceeds it; below -20 softplus is e^rho exactly. */
        const float inv = rho[i] < -20.0f ? 1.0f : sig / s;
        out[i] = grad[i] + weight * (s * inv_var * sig - inv);
    }
}

double ibvi__kl_grad_bound(const ibvi_layer *l, int32_t g, int part,
                           float weight, double param_bound)
{
    const ibvi__param_group *grp = &l->groups[g];
    const double sp = ibvi__kl_std(grp), inv_var = 1.0 / (sp * sp);
    /* |mu - m0| <= |mu| + |m0|; s sigmoid <= softplus(|rho|) <= |rho| + 1,
     * and 1/s sigmoid <= 1. A float slack of a few ulps on top. */
    const double b = part == 0
                         ? (param_bound + fabs((double)grp->init)) * inv_var
                         : (param_bound + 1.0) * inv_var + 1.0;
    return (double)weight * b * 1.0001;
}

int ibvi_net_kl(const ibvi_net *net, double *kl)
{
    static const char fn[] = "ibvi_net_kl";
    int status = ibvi__net_check_ready(net, fn);
    if (status < 0)
        return status;
    IBVI_CHECK_NOT_NULL(fn, kl);
    double total = 0.0;
    for (int32_t i = 0; i < net->layer_count; i++)
        total += ibvi__layer_kl(net->layers[i]);
    *kl = total;
    return IBVI_OK;
}
