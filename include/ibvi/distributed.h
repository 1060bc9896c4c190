/*
 * libibvi - what a host needs to train one network on several processes
 * (data parallel: MPI, or any other communicator). The library itself
 * stays free of MPI; docs/distributed.md has the loop, the estimator it
 * computes and the scaling model, examples/mpi_train.c a complete host.
 *
 * The loop on every rank w of W:
 *
 *     rank 0: ibvi_net_get_params -> broadcast -> others: ibvi_net_set_params
 *     every rank: ibvi_net_set_noise_stream(net, w)
 *     each step: forward + loss + backward on the rank's own shard,
 *                ibvi_net_get_grads -> allreduce (sum) -> divide by W
 *                -> ibvi_optimizer_step_grads
 *
 * and every rank holds the same parameters after every step.
 *
 * The flat layout. All parameters of a network as one buffer of
 * ibvi_net_param_count(net) floats: for every layer with parameters, in
 * layer order, its mean (P floats, the layout of ibvi_layer_get_mean) and
 * then, when its rank R >= 1, its covariance factor (P x R row-major, the
 * layout of ibvi_layer_get_factor). Gradients use the same layout: the
 * mean's gradient, then the factor's dL/dS = G^T Z (formed from the last
 * backward's factors, as ibvi_layer_get_grad_factor does), so element i of
 * the gradient buffer is the gradient of element i of the parameter buffer.
 * Buffers are borrowed for the call only. Mean-field (diagonal) layers
 * (ibvi_net_set_covariance) have no place in this layout yet: every
 * function here returns IBVI_ERR_UNSUPPORTED for a network that has one.
 *
 * Threading: as the network and optimizer functions (one thread at a time
 * per network and its optimizer).
 *
 * SPDX-License-Identifier: MIT
 */
#ifndef IBVI_DISTRIBUTED_H
#define IBVI_DISTRIBUTED_H

#include "common.h"
#include "net.h"
#include "optimizer.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Copies every mean and factor into buf in the flat layout; len must be
 * ibvi_net_param_count(net) (IBVI_ERR_SHAPE else). Needs ibvi_net_init().
 * Returns IBVI_OK, IBVI_ERR_INVALID_ARG, IBVI_ERR_STATE or IBVI_ERR_SHAPE. */
IBVI_API int ibvi_net_get_params(const ibvi_net *net, float *buf,
                                 int64_t len);

/* Sets every mean and factor from buf (the flat layout, len as above).
 * Rejects NaN and infinity (IBVI_ERR_NONFINITE) and then changes nothing.
 * Like ibvi_layer_set_mean, it invalidates the cached forward pass (the
 * next ibvi_net_backward needs a new forward). */
IBVI_API int ibvi_net_set_params(ibvi_net *net, const float *buf,
                                 int64_t len);

/* Copies the gradients of the last ibvi_net_backward() into buf in the
 * flat layout (len as above): dL/dmu, then dL/dS = G^T Z formed here (zeros
 * after a backward through the mean network). IBVI_ERR_STATE before any
 * backward since ibvi_net_init(). */
IBVI_API int ibvi_net_get_grads(const ibvi_net *net, float *grads,
                                int64_t len);

/* One optimizer step from the host's gradients instead of the network's
 * own: grads in the flat layout, len = ibvi_net_param_count of the
 * optimizer's network. The same update as ibvi_optimizer_step (the same
 * formulas, multipliers and step count): given the buffer
 * ibvi_net_get_grads returns, it gives bit for bit the parameters and state
 * ibvi_optimizer_step gives. Needs no backward. Rejects grads holding NaN
 * or infinity (IBVI_ERR_NONFINITE); like ibvi_optimizer_step it returns
 * IBVI_ERR_NONFINITE for an update that would make any value non-finite
 * and IBVI_ERR_STATE at the step limit, and then changes nothing. It
 * invalidates the cached forward pass. */
IBVI_API int ibvi_optimizer_step_grads(ibvi_optimizer *opt,
                                       const float *grads, int64_t len);

/* The network's training-noise stream, 0 .. 2^32 - 1 (IBVI_ERR_INVALID_ARG
 * above: the generator has 32 bits for it). Each (seed, stream) is its own
 * sequence of noise, none overlapping another (include/ibvi/net.h,
 * ibvi_net_rng_position): give rank w stream w, and the W ranks draw W
 * different weight samples per step, reproducibly. Stream 0 is the
 * default, the noise of a network that never set one, so rank 0 of a run
 * on one rank draws exactly what a plain single-process run draws.
 * Setting the stream keeps the position (ibvi_net_rng_position counts
 * blocks within the current stream). Runtime only: ibvi_net_init() and
 * loading a model (include/ibvi/io.h) set stream 0, and model files do not
 * store it, since it names a process of a job, not the model (a resumed
 * job sets each rank's stream again; docs/distributed.md). The
 * predictor's noise does not depend on it. Needs ibvi_net_init(). */
IBVI_API int ibvi_net_set_noise_stream(ibvi_net *net, uint64_t stream);
IBVI_API int ibvi_net_noise_stream(const ibvi_net *net, uint64_t *stream);

/* ---- The factored layout (docs/distributed.md, "The factored gradient")
 * A variational layer's factor gradient dL/dS = G^T Z is R times its
 * weights, but the backward holds it as G (the samples' gradients g_m,
 * samples x P) and Z (their noise z_m, samples x R), with dL/dmu = sum_m
 * g_m. The factored layout sends those: for every layer with parameters,
 * in layer order, a deterministic layer's mean gradient (P floats), a
 * variational layer's G (samples x P row-major) then Z (samples x R). After
 * a backward through the mean network, samples = 1, G = dL/dmu and Z = 0.
 * A host gathers the W ranks' blocks (an allgather instead of an
 * allreduce: smaller while W x samples < 2 (1 + R)) and takes the step from
 * all of them. */

/* Floats of the factored layout after a backward with `samples` samples
 * (1..IBVI_MAX_SAMPLES), or a negative status. */
IBVI_API int64_t ibvi_net_grads_factored_size(const ibvi_net *net,
                                              int32_t samples);

/* The last backward's gradients in the factored layout; len must be
 * ibvi_net_grads_factored_size(net, its samples) (IBVI_ERR_SHAPE else).
 * IBVI_ERR_STATE before any backward since ibvi_net_init(). */
IBVI_API int ibvi_net_get_grads_factored(const ibvi_net *net, float *buf,
                                         int64_t len);

/* One optimizer step from `count` (>= 1) blocks of the factored layout,
 * len floats each, one after the other (an allgather's result): the
 * gradients are the blocks' average, dL/dmu = (1/count) sum_b sum_m g_bm
 * and dL/dS = (1/count) sum_b G_b^T Z_b, formed a chunk at a time as the
 * step needs them (each block's sums in sample order, then the blocks in
 * order: for the blocks of two ranks, bit for bit the gradients a host
 * gets by adding the two ranks' ibvi_net_get_grads and scaling by 1/2).
 * Every block must have the same sample count, which len gives
 * (IBVI_ERR_SHAPE when no count gives len). Blocks holding NaN or infinity
 * are refused (IBVI_ERR_NONFINITE); otherwise as
 * ibvi_optimizer_step_grads. Allocates a buffer of the means' size (and
 * one layer's) for the call (IBVI_ERR_NOMEM, nothing changed). */
IBVI_API int ibvi_optimizer_step_factored(ibvi_optimizer *opt,
                                          const float *blocks, int32_t count,
                                          int64_t len);

#ifdef __cplusplus
}
#endif

#endif /* IBVI_DISTRIBUTED_H */
