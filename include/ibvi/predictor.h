/*
 * libibvi - predictive averaging: the outputs of K sampled networks,
 * averaged by the predictor's head (softmax probabilities by default; a
 * sigmoid for binary outputs; the mean and the epistemic and aleatoric
 * variances of a regression, see "prediction heads" below), with the
 * uncertainty measures of docs/concepts.md ("Prediction and metrics",
 * "Prediction heads").
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

/* ---- prediction heads -------------------------------------------------------
 * A head says what the predictor averages over the K samples (and the
 * members of an ensemble); docs/concepts.md ("Prediction heads") has the
 * formulas. A new predictor has the softmax head.
 *
 *  IBVI_HEAD_SOFTMAX:  p = (1/K) sum_k softmax(f_k / T) over the network's
 *      classes (outputs >= 1); ibvi_predictor_run.
 *  IBVI_HEAD_SIGMOID:  a binary classifier with exactly 1 output f: probs is
 *      n x 2 = [1 - p, p] with p = (1/K) sum_k sigmoid(f_k / T), and the
 *      entropies and the mutual information are those of these two-class
 *      distributions (sigmoid(f) is the softmax of [0, f]), so every
 *      classification metric applies unchanged; ibvi_predictor_run.
 *  IBVI_HEAD_REGRESSION:  identity outputs, D = outputs, with a
 *      homoscedastic Gaussian likelihood of std noise_std (sigma >= 0; fit
 *      it with ibvi_fit_noise_std, calibration.h); ibvi_predictor_run_regression.
 *  IBVI_HEAD_HETEROSCEDASTIC:  the network has 2D outputs, D means then D
 *      log-variances s (as trained by IBVI_LOSS_GAUSSIAN_NLL, loss.h);
 *      each sample's noise variance is exp(s) with s clamped to
 *      [IBVI_LOG_VAR_MIN, IBVI_LOG_VAR_MAX] (loss.h: [-20, 20]), as the
 *      loss clamps it;
 *      ibvi_predictor_run_regression.
 *
 * The temperature scales logits, so it applies to the softmax and sigmoid
 * heads only: a regression head with a temperature != 1 is refused, by
 * ibvi_predictor_set_head and by ibvi_predictor_set_temperature alike
 * (IBVI_ERR_STATE; set the temperature back to 1 first). Ensembles and
 * mean-network mode work with every head. */
typedef enum ibvi_head_kind {
    IBVI_HEAD_SOFTMAX = 0,        /* today's behaviour, the default          */
    IBVI_HEAD_SIGMOID = 1,        /* network with exactly 1 output: binary   */
    IBVI_HEAD_REGRESSION = 2,     /* identity outputs, homoscedastic noise   */
    IBVI_HEAD_HETEROSCEDASTIC = 3 /* 2D outputs: D means then D log-variances */
} ibvi_head_kind;

#define IBVI_HEAD_OPTIONS_VERSION 1

/* A head's options, versioned (docs/abi.md): version is the first field,
 * always; a later version may append fields. Fill it with
 * ibvi_head_options_init. */
typedef struct ibvi_head_options {
    uint32_t version; /* IBVI_HEAD_OPTIONS_VERSION                        */
    int32_t kind;     /* ibvi_head_kind                                    */
    float noise_std;  /* IBVI_HEAD_REGRESSION: the likelihood's sigma, finite
                         and >= 0; the other heads ignore it, but it must be
                         finite and >= 0 all the same (default 0)           */
} ibvi_head_options;

/* Fills *opts with version IBVI_HEAD_OPTIONS_VERSION, the given kind and
 * noise_std = 0. Returns IBVI_OK, or IBVI_ERR_INVALID_ARG (opts NULL, kind
 * unknown; *opts unchanged). */
IBVI_API int ibvi_head_options_init(ibvi_head_options *opts, int32_t kind);

/* Selects the head of every later run. Everything is validated first, and
 * a rejected call leaves the predictor as it was:
 *  - opts NULL, opts->version != IBVI_HEAD_OPTIONS_VERSION, an unknown kind,
 *    noise_std negative or not finite: IBVI_ERR_INVALID_ARG;
 *  - IBVI_HEAD_SIGMOID on a network with outputs != 1,
 *    IBVI_HEAD_HETEROSCEDASTIC on an odd number of outputs: IBVI_ERR_SHAPE;
 *  - a regression head while the temperature is != 1: IBVI_ERR_STATE.
 * Never allocates. */
IBVI_API int ibvi_predictor_set_head(ibvi_predictor *pred,
                                     const ibvi_head_options *opts);

/* The current head's ibvi_head_kind, or a negative status (pred NULL). */
IBVI_API int32_t ibvi_predictor_head(const ibvi_predictor *pred);

/* Columns of the current head's per-input outputs, or a negative status:
 * softmax: the classes (the network's outputs); sigmoid: 2; regression: D
 * = outputs; heteroscedastic: D = outputs / 2. */
IBVI_API int32_t ibvi_predictor_output_dim(const ibvi_predictor *pred);

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
 * softmax (or the sigmoid): temperature scaling (see calibration.h to fit
 * it). With a regression head only 1 is accepted (IBVI_ERR_STATE
 * otherwise): its outputs are not logits. */
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

/* Predicts n inputs x (n x input_dim, row-major) with the softmax or the
 * sigmoid head (a regression head: IBVI_ERR_STATE, nothing written).
 * probs: n x classes, receives (1/K) sum_k softmax(f_k(x) / T) (sigmoid
 *      head: n x 2, [1 - p, p], see above).
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

/* Predicts n inputs x (n x input_dim, row-major) with a regression head
 * (the softmax or sigmoid head: IBVI_ERR_STATE, nothing written). Per
 * input i and output dimension j, with m_k the sample means (sample k's
 * output j; the first D outputs for the heteroscedastic head):
 *     mean[i, j]          = (1/K) sum_k m_k,
 *     var_epistemic[i, j] = (1/K) sum_k (m_k - mean)^2   (the spread of the
 *                           samples' means; 0 for K = 1),
 *     var_aleatoric[i, j] = noise_std^2 (regression) or (1/K) sum_k
 *                           exp(clamp(s_k)) (heteroscedastic, s_k sample
 *                           k's output D + j, clamped to [IBVI_LOG_VAR_MIN,
 *                           IBVI_LOG_VAR_MAX]);
 * the predictive variance is var_epistemic + var_aleatoric. K counts every
 * member's samples (count x ibvi_predictor_samples for an ensemble), and
 * sums run in double. mean, var_epistemic, var_aleatoric: n x D floats
 * (row-major) or NULL; samples: K x n x D floats (member-major, then
 * sample, as ibvi_predictor_noise orders the noise) or NULL, receiving
 * every m_k. D = ibvi_predictor_output_dim. The variance of outputs that
 * differ by more than about 1e19 overflows to infinity.
 * Returns IBVI_ERR_NONFINITE if x holds NaN or infinity, or if a network's
 * outputs overflow (the outputs are then unspecified). */
IBVI_API int ibvi_predictor_run_regression(ibvi_predictor *pred,
                                           const float *x, int64_t n,
                                           float *mean, float *var_epistemic,
                                           float *var_aleatoric,
                                           float *samples);

#ifdef __cplusplus
}
#endif

#endif /* IBVI_PREDICTOR_H */
