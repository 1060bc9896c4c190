/*
 * libibvi - predictive averaging: the probabilities of K sampled networks,
 * averaged, with the uncertainty measures of docs/concepts.md
 * ("Prediction and metrics").
 *
 * A predictor borrows one network (or several of the same shape: a deep
 * ensemble) and draws its K weight samples once, at creation, from its own
 * seeded generator: every call to ibvi_predictor_run() uses the same K
 * networks, so results are reproducible and consistent across batches. It
 * reads the networks' current parameters at each run, so it stays valid
 * while the host keeps training; the networks must outlive it.
 *
 * Cost: layers before the first variational layer run once per input, not
 * K times. A variational layer whose input is still shared by all samples
 * uses the low-rank identity x W_k^T + b_k = (x W^T + b) + sum_r z_kr
 * (x F_r^T + c_r) when that is cheaper than materialising K weight samples
 * (it costs R + 1 passes instead of K); later layers run all K samples as one
 * stacked batch (one GEMM) or, for variational layers, one GEMM per sample.
 *
 * Threading: a predictor and its networks form one unit; use them from one
 * thread at a time. Each member runs with its own network's thread count.
 *
 * SPDX-License-Identifier: MIT
 */
#ifndef IBVI_PREDICTOR_H
#define IBVI_PREDICTOR_H

#include "common.h"
#include "net.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct ibvi_predictor ibvi_predictor;

/* Creates a predictor over an initialised network with `samples` (K >= 1)
 * weight samples drawn with `seed`. Inputs are processed in chunks of at most
 * 256 rows (see ibvi_predictor_set_batch_size). The network is borrowed.
 * samples <= IBVI_MAX_SAMPLES; ensembles have at most 4096 members.
 * out: receives the predictor, owned by the caller (ibvi_predictor_free).
 * Returns IBVI_OK, IBVI_ERR_INVALID_ARG, IBVI_ERR_STATE or IBVI_ERR_NOMEM. */
IBVI_API int ibvi_predictor_create(ibvi_predictor **out, ibvi_net *net,
                                   int32_t samples, uint64_t seed);

/* Creates a predictor over `count` (>= 1) initialised networks with the same
 * architecture (a deep ensemble): the prediction averages the probabilities
 * of all count x K member samples (K = 1 suits deterministic members). */
IBVI_API int ibvi_predictor_create_ensemble(ibvi_predictor **out,
                                            ibvi_net *const *nets,
                                            int32_t count, int32_t samples,
                                            uint64_t seed);

/* Releases a predictor (not its networks). Accepts NULL. */
IBVI_API void ibvi_predictor_free(ibvi_predictor *pred);

/* Largest number of inputs processed at once (>= 1); bounds the memory the
 * predictor holds (about K x batch x widest layer floats). */
IBVI_API int ibvi_predictor_set_batch_size(ibvi_predictor *pred,
                                           int64_t batch);

/* on = 1: use the mean network only (K = 1, z = 0); 0: the K samples. */
IBVI_API int ibvi_predictor_set_mean_network(ibvi_predictor *pred, int32_t on);

/* Divides every sample's logits by temperature (> 0, default 1) before the
 * softmax: temperature scaling (see calibration.h to fit it). */
IBVI_API int ibvi_predictor_set_temperature(ibvi_predictor *pred,
                                            float temperature);

/* Number of weight samples a run averages per network (1 in mean-network
 * mode), or a negative status. */
IBVI_API int32_t ibvi_predictor_samples(const ibvi_predictor *pred);

/* Copies the predictor's weight-sample noise into z: count x K x
 * noise_size floats (member-major, then sample, then the layers' R values
 * in layer order, as ibvi_net_forward_noise expects). z_len must match.
 * With it a host can reproduce any sample with ibvi_net_forward_noise. */
IBVI_API int ibvi_predictor_noise(const ibvi_predictor *pred, float *z,
                                  int64_t z_len);

/* Predicts n inputs x (n x input_dim, row-major).
 * probs: n x classes, receives (1/K) sum_k softmax(f_k(x) / T).
 * predictive_entropy, expected_entropy, mutual_information: n floats each
 * or NULL: H[p], (1/K) sum_k H[p_k] and their difference (the epistemic
 * part; clamped at 0 against rounding). Natural logarithms.
 * Returns IBVI_ERR_NONFINITE if x holds NaN or infinity, or if finite inputs
 * drive a network's logits to infinity (weights far too large for them;
 * the outputs are then unspecified). */
IBVI_API int ibvi_predictor_run(ibvi_predictor *pred, const float *x,
                                int64_t n, float *probs,
                                float *predictive_entropy,
                                float *expected_entropy,
                                float *mutual_information);

#ifdef __cplusplus
}
#endif

#endif /* IBVI_PREDICTOR_H */
