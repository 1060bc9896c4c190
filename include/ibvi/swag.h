/*
 * libibvi - SWAG, the stochastic weight averaging Gaussian (Maddox et al.,
 * 2019): a baseline posterior built from the SGD iterates of a trained
 * deterministic network (docs/swag.md).
 *
 * The host trains a network as usual, then keeps stepping SGD at a constant
 * learning rate and calls ibvi_swag_collect after each phase (the paper:
 * once per epoch). The collector keeps, for every mean entry theta_p of
 * every layer, the running first and second moments (in double)
 *     theta_bar = (1/n) sum_i theta_i,   sq_bar = (1/n) sum_i theta_i^2,
 * and a ring of the last `rank` deviation columns D_i = theta_i - theta_bar
 * (theta_bar right after snapshot i entered it, as in the paper). It never
 * forms a covariance. ibvi_swag_build then makes a new network of the same
 * architecture whose every layer with parameters (a residual's projection
 * excepted: it stays deterministic) carries the DIAG_LOWRANK family
 * (include/ibvi/net.h) with
 *     mu = theta_bar,
 *     d  = sqrt(max(sq_bar - theta_bar^2, 0)) / sqrt(2),
 *     S  = D / sqrt(2 (K - 1))      (K = the columns kept, >= 2),
 * so a weight sample is exactly the paper's
 *     theta = theta_bar + (1/sqrt 2) Sigma_diag^(1/2) z1
 *                       + (1/sqrt(2 (K - 1))) D z2,
 * with Sigma_diag^(1/2) the standard deviations (not the variances). The
 * built network goes through the predictor (K weight samples, ensembles,
 * heads, metrics) and ibvi_net_save/load like any other; it cannot be
 * trained (ibvi_optimizer_create refuses it: its moments are collected).
 *
 * A collector is not thread-safe; collect reads the network only.
 *
 * SPDX-License-Identifier: MIT
 */
#ifndef IBVI_SWAG_H
#define IBVI_SWAG_H

#include "common.h"
#include "net.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct ibvi_swag ibvi_swag;

/* A collector's options, versioned (docs/abi.md): version is the first
 * field, always; a later version may append fields. Fill it with
 * ibvi_swag_options_init or IBVI_SWAG_OPTIONS_INIT.
 *   rank  the most deviation columns kept (the last `rank` snapshots'),
 *         2 .. IBVI_DIAG_LOWRANK_MAX_RANK; default 20 (the paper's). */
typedef struct ibvi_swag_options {
    uint32_t version;
    int32_t rank;
} ibvi_swag_options;
#define IBVI_SWAG_OPTIONS_VERSION 1
#define IBVI_SWAG_DEFAULT_RANK 20
#define IBVI_SWAG_OPTIONS_INIT \
    {IBVI_SWAG_OPTIONS_VERSION, IBVI_SWAG_DEFAULT_RANK}

/* Fills *opts with version IBVI_SWAG_OPTIONS_VERSION and the defaults.
 * Returns IBVI_OK, or IBVI_ERR_INVALID_ARG (opts NULL). Since 0.5.0. */
IBVI_API int ibvi_swag_options_init(ibvi_swag_options *opts);

/* Creates a collector for networks built like `net`: initialised, every
 * layer deterministic (IBVI_ERR_STATE otherwise: SWAG collects the iterates
 * of a deterministic network). opts NULL takes the defaults. It remembers
 * the architecture, parameterization, seed and thread count (not the
 * parameters: no snapshot is taken) and allocates, from net's allocator,
 * 2 doubles and `rank` floats per mean entry. *out is NULL on failure.
 * Returns IBVI_OK, IBVI_ERR_INVALID_ARG (a NULL argument, a bad version or
 * rank), IBVI_ERR_STATE or IBVI_ERR_NOMEM. Since 0.5.0. */
IBVI_API int ibvi_swag_create(ibvi_swag **out, const ibvi_net *net,
                              const ibvi_swag_options *opts);

/* Frees a collector (NULL is a no-op). A network it built stays valid. */
IBVI_API void ibvi_swag_free(ibvi_swag *swag);

/* Takes one snapshot of net's means: updates the moments and writes the
 * deviation column into the ring (the oldest column is dropped once `rank`
 * are kept). net must be initialised and built like the collector's
 * (the same input shape, layer kinds, shapes and parameter counts:
 * IBVI_ERR_SHAPE otherwise); its families do not matter. Means holding
 * NaN or infinity: IBVI_ERR_NONFINITE. Allocates nothing; on error the
 * collector is unchanged. Since 0.5.0. */
IBVI_API int ibvi_swag_collect(ibvi_swag *swag, const ibvi_net *net);

/* Snapshots collected so far (>= 0), or a negative status (swag NULL). */
IBVI_API int64_t ibvi_swag_count(const ibvi_swag *swag);

/* Builds the SWAG posterior: a NEW initialised network (the collector's
 * architecture, parameterization, seed and threads, its allocator) whose
 * layers with parameters are DIAG_LOWRANK with R = K = min(snapshots,
 * rank) and mu, d, S as in the file comment (the columns oldest first).
 * Needs at least 2 snapshots (IBVI_ERR_STATE). The host owns *out (free
 * with ibvi_net_free); *out is NULL on failure. Returns IBVI_OK,
 * IBVI_ERR_INVALID_ARG, IBVI_ERR_STATE or IBVI_ERR_NOMEM. Since 0.5.0. */
IBVI_API int ibvi_swag_build(const ibvi_swag *swag, ibvi_net **out);

#ifdef __cplusplus
}
#endif

#endif /* IBVI_SWAG_H */
