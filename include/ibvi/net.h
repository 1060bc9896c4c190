/*
 * libibvi - networks and their layers.
 *
 * A network is a chain of layers built one call at a time: dense and 2-D
 * convolution layers, each either deterministic (rank 0) or a variational
 * low-rank Gaussian (rank R >= 1), element-wise activations, and the image
 * layers without parameters (max, average and global average pooling,
 * flatten). ibvi_net_init() then freezes the architecture and draws the
 * parameters from the prior of the chosen parameterization. The network's variational layers hold a Gaussian
 * q = N(mu, S S^T) over theta = [vec(W) row-major; b] (docs/concepts.md,
 * "The variational layer").
 *
 * Shapes: each example is a tensor of shape (channels, height, width),
 * stored row-major as one row of channels * height * width floats; a flat
 * input of D features is (D, 1, 1). ibvi_net_create() takes flat inputs,
 * ibvi_net_create_image() images; every layer's output shape follows from
 * its input's when it is added (ibvi_layer_output_shape()).
 *
 * Threading: one network is used by one thread at a time (see common.h).
 *
 * SPDX-License-Identifier: MIT
 */
#ifndef IBVI_NET_H
#define IBVI_NET_H

#include "common.h"

#ifdef __cplusplus
extern "C" {
#endif

/* A network. Created by ibvi_net_create(), released by ibvi_net_free(). */
typedef struct ibvi_net ibvi_net;

/* A layer of a network: a borrowed handle, valid as long as its network. */
typedef struct ibvi_layer ibvi_layer;

/* Parameterizations (docs/concepts.md, "The prior and the
 * parameterizations"). muP is the recommended choice (and
 * the examples' default); ibvi_net_init() always takes it explicitly. */
typedef enum ibvi_parameterization {
    IBVI_PARAM_SP = 0,  /* standard: init 1/sqrt(fan_in), all lr multipliers 1 */
    IBVI_PARAM_MUP = 1  /* maximal update: learning rates transfer across widths */
} ibvi_parameterization;

/* Layer kinds, as returned by ibvi_layer_get_kind(). */
typedef enum ibvi_layer_kind {
    IBVI_LAYER_DENSE = 0,
    IBVI_LAYER_ACTIVATION = 1,
    IBVI_LAYER_CONV2D = 2,
    IBVI_LAYER_MAXPOOL = 3,
    IBVI_LAYER_AVGPOOL = 4,
    IBVI_LAYER_GLOBAL_AVGPOOL = 5,
    IBVI_LAYER_FLATTEN = 6,
    IBVI_LAYER_GROUPNORM = 7,
    IBVI_LAYER_RESIDUAL = 8
} ibvi_layer_kind;

/* Element-wise activation functions. */
typedef enum ibvi_activation {
    IBVI_ACT_RELU = 1, /* max(0, x)            */
    IBVI_ACT_TANH = 2, /* tanh(x)              */
    IBVI_ACT_SILU = 3  /* x / (1 + exp(-x))    */
} ibvi_activation;

/* Role of a dense or conv2d layer, from its position among those layers (the
 * layers with a weight matrix). A network with a single one gives it
 * IBVI_ROLE_SINGLE: both its fan-in and
 * fan-out are fixed, so muP treats it like SP (init 1/sqrt(fan_in), lr x 1). */
typedef enum ibvi_layer_role {
    IBVI_ROLE_NONE = 0,   /* layers without a weight matrix (activation,
                             pooling, flatten, group norm, residual) */
    IBVI_ROLE_INPUT = 1,
    IBVI_ROLE_HIDDEN = 2,
    IBVI_ROLE_OUTPUT = 3,
    IBVI_ROLE_SINGLE = 4
} ibvi_layer_role;

/* ---- Building ------------------------------------------------------------ */

/* Creates an empty network that takes inputs of input_dim features.
 * out: receives the new network, owned by the caller (free with
 *      ibvi_net_free); set to NULL on failure.
 * input_dim: > 0.
 * allocator: NULL for malloc/free, or an allocator copied by the network and
 *      used for all its memory and that of its optimizers.
 * Returns IBVI_OK, IBVI_ERR_INVALID_ARG or IBVI_ERR_NOMEM. */
IBVI_API int ibvi_net_create(ibvi_net **out, int32_t input_dim,
                             const ibvi_allocator *allocator);

/* Creates an empty network that takes images of shape (channels, height,
 * width) per example: inputs x are n x (channels * height * width) floats,
 * each row one image, channel-major then row-major (NCHW for the batch).
 * Every layer has an output shape of the same kind (ibvi_layer_output_shape);
 * dense layers read their input flat, so a network of dense layers built on
 * (C, H, W) computes exactly what one built with ibvi_net_create(C * H * W)
 * computes. ibvi_net_input_dim() returns C * H * W.
 * channels, height, width: >= 1, with channels * height * width <= 10^8.
 * allocator: as for ibvi_net_create().
 * Returns IBVI_OK, IBVI_ERR_INVALID_ARG or IBVI_ERR_NOMEM. */
IBVI_API int ibvi_net_create_image(ibvi_net **out, int32_t channels,
                                   int32_t height, int32_t width,
                                   const ibvi_allocator *allocator);

/* Releases a network and everything it owns. Accepts NULL. Optimizers
 * created on the network must be freed first. */
IBVI_API void ibvi_net_free(ibvi_net *net);

/* Creates a network built like src: the same input shape and layers (kinds,
 * configurations, residual sources), src's allocator and thread count,
 * every layer deterministic (rank 0, family NONE) and not initialised, so
 * the host can choose covariances (ibvi_net_set_covariance) and then call
 * ibvi_net_init. Nothing of src's parameters or state is copied. src may be
 * initialised or not. Returns IBVI_OK, IBVI_ERR_INVALID_ARG (a NULL
 * argument) or IBVI_ERR_NOMEM; on failure *out is NULL. Since 0.5.0. */
IBVI_API int ibvi_net_create_like(ibvi_net **out, const ibvi_net *src);

/* Appends a dense layer y = x W^T + b with `outputs` units. rank = 0 makes it
 * deterministic; rank R in [1, P] (P = outputs * inputs + outputs) makes it a
 * variational low-rank Gaussian layer with a P x R covariance factor. The
 * network may hold at most 2^36 floats of parameters in all (sum of P (1 + R)).
 * Only before ibvi_net_init(). Returns IBVI_OK, IBVI_ERR_INVALID_ARG,
 * IBVI_ERR_STATE or IBVI_ERR_NOMEM. */
IBVI_API int ibvi_net_add_dense(ibvi_net *net, int32_t outputs, int32_t rank);

/* Appends an element-wise activation (an ibvi_activation value). Only
 * before ibvi_net_init(). */
IBVI_API int ibvi_net_add_activation(ibvi_net *net, int32_t activation);

/* ---- Image layers (docs/image-layers.md) ----------------------------------
 * They read their input as (C, H, W) (a dense layer's output is (D, 1, 1))
 * and reject, with IBVI_ERR_SHAPE and a message naming the function, a
 * window larger than the (padded) input. Only before ibvi_net_init(). Each
 * returns IBVI_OK, IBVI_ERR_INVALID_ARG, IBVI_ERR_SHAPE, IBVI_ERR_STATE or
 * IBVI_ERR_NOMEM. */

/* Appends a 2-D convolution with out_channels filters of kernel x kernel,
 * the same stride and zero padding along both axes:
 *     y[o][p][q] = b[o] + sum_{c,i,j} W[o][c][i][j] x[c][p*s - pad + i][q*s - pad + j],
 * output (out_channels, (H + 2 pad - kernel) / stride + 1, likewise W).
 * theta = [vec(W) with W[o][c][i][j] at ((o*C + c)*kernel + i)*kernel + j;
 * b], P = out_channels * C * kernel^2 + out_channels. stride >= 1,
 * 0 <= padding < kernel. rank as for ibvi_net_add_dense (0: deterministic,
 * 1..P: a low-rank Gaussian theta). For the parameterization the weights
 * have fan_in = C * kernel^2 and fan_out = out_channels * kernel^2. */
IBVI_API int ibvi_net_add_conv2d(ibvi_net *net, int32_t out_channels,
                                 int32_t kernel, int32_t stride,
                                 int32_t padding, int32_t rank);

/* The options of a rectangular convolution (ibvi_net_add_conv2d_ex).
 * version: IBVI_CONV2D_OPTIONS_VERSION (2) or 1; a later version may add
 * fields at the end, and the library reads only the fields of the version
 * given (version 1 has no `no_bias`: a bias). Start from
 * IBVI_CONV2D_OPTIONS_INIT (kernel 1x1, stride 1, no padding, rank 0, a
 * bias) and set out_channels.
 * no_bias (since 0.6.0, version 2; 0, its zero value, keeps the old
 * behaviour): 0, a bias per output channel, theta = [vec(W); b]; 1, none,
 * theta = vec(W) and P = out_channels * C * kernel_h * kernel_w (the
 * convolutions of a ResNet, whose group norm would remove most of a bias
 * anyway: docs/image-layers.md). Other values are IBVI_ERR_INVALID_ARG. */
typedef struct ibvi_conv2d_options {
    uint32_t version;
    int32_t out_channels, kernel_h, kernel_w, stride_h, stride_w, pad_h,
        pad_w, rank;
    int32_t no_bias; /* version 2 */
} ibvi_conv2d_options;
#define IBVI_CONV2D_OPTIONS_VERSION 2
#define IBVI_CONV2D_OPTIONS_INIT {IBVI_CONV2D_OPTIONS_VERSION, 0, 1, 1, 1, 1, 0, 0, 0, 0}

/* ibvi_net_add_conv2d with a kernel_h x kernel_w kernel, strides and
 * paddings per axis (theta's W[o][c][i][j] at ((o*C + c)*kh + i)*kw + j).
 * options: not NULL, version 1 or IBVI_CONV2D_OPTIONS_VERSION (another version
 * is IBVI_ERR_INVALID_ARG). */
IBVI_API int ibvi_net_add_conv2d_ex(ibvi_net *net,
                                    const ibvi_conv2d_options *options);

/* Appends a max pooling of kernel x kernel windows moved by stride, per
 * channel, no padding: output (C, (H - kernel) / stride + 1, likewise W).
 * Ties go to the window's first maximum (row-major). No parameters. */
IBVI_API int ibvi_net_add_maxpool(ibvi_net *net, int32_t kernel,
                                  int32_t stride);
/* Appends an average pooling (the window's mean), shaped as max pooling. */
IBVI_API int ibvi_net_add_avgpool(ibvi_net *net, int32_t kernel,
                                  int32_t stride);
/* Appends a global average pooling: (C, H, W) -> (C, 1, 1), each channel's
 * mean over the plane. */
IBVI_API int ibvi_net_add_global_avgpool(ibvi_net *net);
/* Appends a flatten: (C, H, W) -> (C * H * W, 1, 1), the values unchanged
 * (a copy; dense layers read any shape flat already). */
IBVI_API int ibvi_net_add_flatten(ibvi_net *net);

/* Appends a group normalisation (docs/image-layers.md): the input's C
 * channels split into `groups` groups of C / groups consecutive channels;
 * each example's group is normalised by its own mean and variance, y =
 * (x - mean) / sqrt(var + eps) * gamma[c] + beta[c]. No statistic crosses
 * examples (no batch statistics, no running averages). Deterministic:
 * theta = [gamma (C); beta (C)], P = 2C, gamma = 1 and beta = 0 at init,
 * learning-rate multipliers as biases (SGD x C under muP, Adam x 1). A flat
 * input of D features is (D, 1, 1): groups must divide D.
 * groups: >= 1 and dividing the input's channels (IBVI_ERR_SHAPE else).
 * eps: finite and > 0 (1e-5 is usual).
 * Only before ibvi_net_init(). Returns IBVI_OK, IBVI_ERR_INVALID_ARG,
 * IBVI_ERR_SHAPE, IBVI_ERR_STATE or IBVI_ERR_NOMEM. */
IBVI_API int ibvi_net_add_groupnorm(ibvi_net *net, int32_t groups, float eps);

/* Appends a residual connection: output = this layer's input (the previous
 * layer's output, or x for the first layer) + skip, where skip is the
 * output of layer `from` (0-based, -1 for the network input x; from must
 * be smaller than this layer's index, i.e. < ibvi_net_layer_count()).
 * projection_stride 0: identity skip; the two shapes must match exactly.
 * projection_stride >= 1: the skip passes through a deterministic 1x1
 * convolution with that stride, from's channels -> this input's channels,
 * with bias: theta = [W (C_out x C_in) row-major; b (C_out)], P = C_out *
 * C_in + C_out. The skip's height and width after the stride,
 * (H - 1) / stride + 1, must match the input's. The projection is a hidden
 * weight matrix for muP (fan_in C_in, fan_out C_out) and does not change
 * the roles of the dense layers. Deterministic (no rank).
 * Only before ibvi_net_init(). Returns IBVI_OK, IBVI_ERR_INVALID_ARG (from
 * out of range, a negative stride), IBVI_ERR_SHAPE (shapes that do not
 * match or cannot be projected), IBVI_ERR_STATE or IBVI_ERR_NOMEM. */
IBVI_API int ibvi_net_add_residual(ibvi_net *net, int32_t from,
                                   int32_t projection_stride);

/* The options of a residual connection (ibvi_net_add_residual_ex, since
 * 0.6.0). version: IBVI_RESIDUAL_OPTIONS_VERSION; start from
 * IBVI_RESIDUAL_OPTIONS_INIT (from -1, identity, a projection bias) and set
 * from and projection_stride as for ibvi_net_add_residual.
 * projection_no_bias: 0, the projection has a bias (theta = [W; b], as
 * ibvi_net_add_residual builds it); 1, none (theta = W, P = C_out * C_in),
 * as in a ResNet whose convolutions have no bias. Ignored by an identity
 * skip. Other values are IBVI_ERR_INVALID_ARG. */
typedef struct ibvi_residual_options {
    uint32_t version;
    int32_t from, projection_stride, projection_no_bias;
} ibvi_residual_options;
#define IBVI_RESIDUAL_OPTIONS_VERSION 1
#define IBVI_RESIDUAL_OPTIONS_INIT {IBVI_RESIDUAL_OPTIONS_VERSION, -1, 0, 0}

/* ibvi_net_add_residual with the options above. options: not NULL, version
 * IBVI_RESIDUAL_OPTIONS_VERSION (another is IBVI_ERR_INVALID_ARG). Returns
 * what ibvi_net_add_residual returns. */
IBVI_API int ibvi_net_add_residual_ex(ibvi_net *net,
                                      const ibvi_residual_options *options);

/* Freezes the architecture (on the first call), allocates the parameters and
 * draws them from the prior of `parameterization` (an ibvi_parameterization)
 * with the generator seeded by `seed`: means W ~ N(0, sigma_w^2),
 * b ~ N(0, 1), factor entries with the mean's std / sqrt(R). The sampling
 * stream restarts at position 0. Calling it again re-draws the prior.
 * Needs a layer with a weight matrix (dense or conv2d) last.
 * Returns IBVI_OK, IBVI_ERR_INVALID_ARG, IBVI_ERR_STATE or IBVI_ERR_NOMEM
 * (the network is unchanged on failure). */
IBVI_API int ibvi_net_init(ibvi_net *net, int32_t parameterization,
                           uint64_t seed);

/* BLIS threads for this network's kernels (default 1). set_threads stores
 * the request, threads in 1..1024 (saved in model files as it is). The
 * count in effect, what each BLIS call gets, is min(request, the CPUs the
 * process may run on at the time of the call: its sched_getaffinity mask,
 * else the online CPUs), so an oversized request cannot flood the host with
 * threads. ibvi_net_threads returns that count in effect (1..request).
 * Results are reproducible for a fixed count in effect. */
IBVI_API int ibvi_net_set_threads(ibvi_net *net, int32_t threads);
IBVI_API int32_t ibvi_net_threads(const ibvi_net *net);

/* Pre-allocates the workspace for batches of up to max_rows inputs with up
 * to max_samples weight samples, so later forward/backward/train calls
 * allocate nothing. Without it the workspace grows on the first call that
 * needs more. Only after ibvi_net_init(). */
IBVI_API int ibvi_net_reserve(ibvi_net *net, int64_t max_rows,
                              int32_t max_samples);

/* ---- Queries (return the value, or a negative status for a bad handle) -- */

IBVI_API int32_t ibvi_net_input_dim(const ibvi_net *net);
/* The input shape per example: (input_dim, 1, 1) for ibvi_net_create(),
 * (channels, height, width) for ibvi_net_create_image(). No output pointer
 * may be NULL. Returns IBVI_OK or IBVI_ERR_INVALID_ARG. */
IBVI_API int ibvi_net_input_shape(const ibvi_net *net, int32_t *channels,
                                  int32_t *height, int32_t *width);
/* Output size of the last dense layer; IBVI_ERR_STATE with no dense layer. */
IBVI_API int32_t ibvi_net_output_dim(const ibvi_net *net);
/* Number of layers, activations included. */
IBVI_API int32_t ibvi_net_layer_count(const ibvi_net *net);
/* 1 after a successful ibvi_net_init(), else 0. */
IBVI_API int32_t ibvi_net_is_initialized(const ibvi_net *net);
/* The parameterization given to ibvi_net_init(); IBVI_ERR_STATE before. */
IBVI_API int32_t ibvi_net_parameterization(const ibvi_net *net);
/* Number of noise values one weight sample draws: the sum of the ranks. */
IBVI_API int32_t ibvi_net_noise_size(const ibvi_net *net);
/* Number of floats of the model: over every layer with parameters, its P
 * mean floats plus its covariance's (P x R low rank, P diagonal). */
IBVI_API int64_t ibvi_net_param_count(const ibvi_net *net);

/* The seed given to ibvi_net_init() and the position of the sampling stream:
 * the number of generator blocks drawn so far (one block gives two normals;
 * a forward pass with `samples` samples draws ceil(samples * noise_size / 2)
 * blocks). Setting the position lets a resumed
 * run draw the same samples as an uninterrupted one. */
IBVI_API int ibvi_net_seed(const ibvi_net *net, uint64_t *seed);
IBVI_API int ibvi_net_rng_position(const ibvi_net *net, uint64_t *position);
IBVI_API int ibvi_net_set_rng_position(ibvi_net *net, uint64_t position);

/* Borrows layer `index` (0-based, activations included).
 * out: receives a handle owned by the network; never free it. */
IBVI_API int ibvi_net_layer(ibvi_net *net, int32_t index, ibvi_layer **out);

/* ---- Forward and backward ------------------------------------------------
 * Inputs x are row-major n x input_dim floats. Outputs are row-major
 * (samples * n) x output_dim floats, sample-major: row m * n + i holds input i
 * under weight sample m. A deterministic network gives identical blocks.
 * All buffers are borrowed for the duration of the call only. */

/* samples is at most IBVI_MAX_SAMPLES in every call that takes it. */
#define IBVI_MAX_SAMPLES 65536

/* Forward in training mode: draws `samples` (>= 1) noise vectors per
 * variational layer from the network's generator (one z per layer per
 * sample, shared by all rows) and caches what ibvi_net_backward() needs. */
IBVI_API int ibvi_net_forward(ibvi_net *net, const float *x, int64_t n,
                              int32_t samples, float *out);

/* Forward with the mean network (z = 0): out has n rows. Also cached for
 * backward (the factor gradient is then zero). */
IBVI_API int ibvi_net_forward_mean(ibvi_net *net, const float *x, int64_t n,
                                   float *out);

/* Forward with caller-given noise: z holds samples * ibvi_net_noise_size()
 * floats; for each sample, the variational layers' R values in layer order.
 * z_len must equal that count (z may be NULL when it is 0: a deterministic
 * network). The generator is not advanced. */
IBVI_API int ibvi_net_forward_noise(ibvi_net *net, const float *x, int64_t n,
                                    int32_t samples, const float *z,
                                    int64_t z_len, float *out);

/* Copies the noise used by the last forward pass (samples * noise_size
 * floats, layout as ibvi_net_forward_noise; zeros after forward_mean) into
 * z; z_len must match. Still available after the parameters changed (e.g.
 * after ibvi_train_step); IBVI_ERR_STATE before any forward pass. */
IBVI_API int ibvi_net_last_noise(const ibvi_net *net, float *z, int64_t z_len);

/* Backward pass for the last forward: grad_out holds dL/d(out), rows x cols
 * with rows = samples * n and cols = output_dim of that forward. Overwrites
 * every layer's gradients: dL/dmu = sum_m g_m and dL/dS = sum_m g_m z_m^T,
 * where g_m = dL/dtheta at weight sample m (the loss functions already divide
 * by samples * n, which makes these the averages of docs/concepts.md, "The
 * variational layer").
 * Returns IBVI_ERR_STATE without a forward pass since the parameters last
 * changed (ibvi_net_init, ibvi_layer_set_mean/set_factor,
 * ibvi_optimizer_step all invalidate it), IBVI_ERR_SHAPE for other rows or
 * cols, IBVI_ERR_NONFINITE (and leaves the gradients unchanged) if grad_out
 * holds NaN or infinity. */
IBVI_API int ibvi_net_backward(ibvi_net *net, const float *grad_out,
                               int64_t rows, int32_t cols);

/* ---- Layers ----------------------------------------------------------------
 * Parameters cross the API as copies. For a dense layer with `in` inputs,
 * `out` outputs and rank R: the mean is theta = [W row-major (out x in); b],
 * P = out * in + out floats; the factor S is row-major P x R (row p of S
 * belongs to theta[p]). Getters and setters need ibvi_net_init() first. */

/* An ibvi_layer_kind value, or a negative status. */
IBVI_API int32_t ibvi_layer_get_kind(const ibvi_layer *layer);
/* An ibvi_layer_role value, or a negative status. */
IBVI_API int32_t ibvi_layer_get_role(const ibvi_layer *layer);
/* The ibvi_activation of an activation layer; IBVI_ERR_INVALID_ARG else. */
IBVI_API int32_t ibvi_layer_get_activation(const ibvi_layer *layer);
/* 1 when theta ends with one bias per output channel (a dense layer; a
 * conv2d or a projecting residual built with one), 0 otherwise (a layer
 * built without a bias, a group norm, a layer without parameters), or a
 * negative status (since 0.6.0). */
IBVI_API int32_t ibvi_layer_has_bias(const ibvi_layer *layer);
/* Shapes: inputs, outputs and rank (0 for deterministic and activation
 * layers); inputs and outputs are sizes per example (C * H * W of the
 * shapes). Any output pointer may be NULL. */
IBVI_API int ibvi_layer_shape(const ibvi_layer *layer, int32_t *inputs,
                              int32_t *outputs, int32_t *rank);
/* The output shape per example (channels, height, width): (outputs, 1, 1)
 * for a dense layer, the input's shape for an activation; its product is
 * the `outputs` of ibvi_layer_shape(). Valid as soon as the layer is added.
 * No output pointer may be NULL. Returns IBVI_OK or IBVI_ERR_INVALID_ARG. */
IBVI_API int ibvi_layer_output_shape(const ibvi_layer *layer,
                                     int32_t *channels, int32_t *height,
                                     int32_t *width);
/* P = outputs * inputs + outputs for dense layers, out_channels * C *
 * kernel_h * kernel_w + out_channels for conv2d, 2C for group norm
 * ([gamma; beta]), C_out * C_in + C_out for a residual with a projection,
 * 0 for the other kinds (and an identity residual). */
IBVI_API int64_t ibvi_layer_param_count(const ibvi_layer *layer);
/* The prior's standard deviations of this dense layer's mean weights and
 * biases (factor entries use these divided by sqrt(R)). A layer's "weights"
 * are its first weight matrix, its "biases" its first other group: for a
 * group norm no weights (0) and gamma (0: the prior is the constant 1). */
IBVI_API int ibvi_layer_init_std(const ibvi_layer *layer, float *weight_std,
                                 float *bias_std);

/* Copy the mean out of / into the layer; len must be P. The setter rejects
 * NaN and infinity (IBVI_ERR_NONFINITE) and then changes nothing. */
IBVI_API int ibvi_layer_get_mean(const ibvi_layer *layer, float *theta,
                                 int64_t len);
IBVI_API int ibvi_layer_set_mean(ibvi_layer *layer, const float *theta,
                                 int64_t len);
/* Copy the covariance factor out of / into the layer; len must be P * R and
 * R >= 1 (IBVI_ERR_INVALID_ARG for deterministic and diagonal layers): a
 * LOWRANK layer's S, or a DIAG_LOWRANK (SWAG) layer's S. */
IBVI_API int ibvi_layer_get_factor(const ibvi_layer *layer, float *factor,
                                   int64_t len);
IBVI_API int ibvi_layer_set_factor(ibvi_layer *layer, const float *factor,
                                   int64_t len);
/* Gradients of the last ibvi_net_backward(), same layouts (zeros before). */
IBVI_API int ibvi_layer_get_grad_mean(const ibvi_layer *layer, float *grad,
                                      int64_t len);
IBVI_API int ibvi_layer_get_grad_factor(const ibvi_layer *layer, float *grad,
                                        int64_t len);

/* ---- covariance families (mean-field VI, docs/concepts.md) ----------------
 * Every layer with parameters (dense, conv2d, group norm) carries one of
 * these weight distributions over its theta (P floats):
 *   NONE      deterministic, theta = mu;
 *   LOWRANK   IBVI's N(mu, S S^T), S of P x R (the rank of the builders);
 *   DIAGONAL  mean-field N(mu, diag(sigma^2)), sigma = softplus(rho), with
 *             rho (P floats) stored beside the mean: theta = mu + sigma .* z,
 *             z ~ N(0, I_P) per weight sample (P noise values per sample);
 *   DIAG_LOWRANK  SWAG's N(mu, diag(d^2) + S S^T) (include/ibvi/swag.h,
 *             docs/swag.md): d (P floats, >= 0) and S (P x R, row-major)
 *             beside the mean, theta = mu + d .* z1 + S z2 with z1 of P
 *             then z2 of R noise values per sample (P + R). Its moments are
 *             collected, not trained: ibvi_optimizer_create refuses a
 *             network with such a layer; d and S start at 0 (the layer is
 *             deterministic until they are set, as ibvi_swag_build does).
 * The values are pinned. A residual's projection stays deterministic (it
 * reads another layer's output in one call over all rows). */
typedef enum ibvi_covariance_family {
    IBVI_COVARIANCE_NONE = 0,
    IBVI_COVARIANCE_LOWRANK = 1,
    IBVI_COVARIANCE_DIAGONAL = 2,
    IBVI_COVARIANCE_DIAG_LOWRANK = 3 /* since 0.5.0 */
} ibvi_covariance_family;

/* How ibvi_net_set_covariance() sets a layer's family. version first:
 * IBVI_COVARIANCE_OPTIONS_VERSION; a later version may add fields at the
 * end, and the library reads only the fields of the version given. Start
 * from IBVI_COVARIANCE_OPTIONS_INIT (diagonal, default sigma_0).
 *   family      an ibvi_covariance_family;
 *   rank        LOWRANK: R, 1 .. P; DIAG_LOWRANK: R, 1 ..
 *               IBVI_DIAG_LOWRANK_MAX_RANK (it may exceed P: SWAG's
 *               deviation columns); the others: 0;
 *   init_sigma  DIAGONAL: sigma_0 = init_sigma x the prior std of each
 *               parameter group (a group with a constant prior, a norm's
 *               gain and shift, counts std 1), so rho_0 =
 *               softplus^-1(sigma_0); 0 asks for the default 1e-3, else
 *               0 < init_sigma <= 1; the other families: 0. */
typedef struct ibvi_covariance_options {
    uint32_t version;
    int32_t family;
    int32_t rank;
    float init_sigma;
} ibvi_covariance_options;
#define IBVI_COVARIANCE_OPTIONS_VERSION 1
#define IBVI_COVARIANCE_OPTIONS_INIT \
    {IBVI_COVARIANCE_OPTIONS_VERSION, IBVI_COVARIANCE_DIAGONAL, 0, 0.0f}
/* The largest R of a DIAG_LOWRANK layer (since 0.5.0). */
#define IBVI_DIAG_LOWRANK_MAX_RANK 1024
/* The default init_sigma: sigma_0 = 1e-3 x the prior std. */
#define IBVI_DEFAULT_INIT_SIGMA 1e-3f

/* Sets layer `layer`'s covariance family before ibvi_net_init (replacing
 * the rank its builder gave). IBVI_ERR_INVALID_ARG for a bad index, a layer
 * without parameters, a bad family, rank or init_sigma, or a family the
 * kind cannot carry (a residual: only NONE; a group norm: not LOWRANK);
 * IBVI_ERR_STATE once the network is initialised. Changes nothing on
 * error. */
IBVI_API int ibvi_net_set_covariance(ibvi_net *net, int32_t layer,
                                     const ibvi_covariance_options *options);
/* The layer's family (an ibvi_covariance_family), or a negative status. */
IBVI_API int32_t ibvi_layer_covariance(const ibvi_layer *layer);

/* Copy a diagonal layer's rho (sigma = softplus(rho)) out of / into it, and
 * the gradient dL/drho of the last ibvi_net_backward() (zeros before);
 * len must be P (IBVI_ERR_INVALID_ARG for a layer of another family). */
IBVI_API int ibvi_layer_get_rho(const ibvi_layer *layer, float *rho,
                                int64_t len);
IBVI_API int ibvi_layer_set_rho(ibvi_layer *layer, const float *rho,
                                int64_t len);
IBVI_API int ibvi_layer_get_grad_rho(const ibvi_layer *layer, float *grad,
                                     int64_t len);

/* Copy a DIAG_LOWRANK layer's d (the diagonal part's standard deviations,
 * theta = mu + d .* z1 + S z2) out of / into it; len must be P
 * (IBVI_ERR_INVALID_ARG for a layer of another family). The setter rejects
 * NaN and infinity (IBVI_ERR_NONFINITE) and negative entries
 * (IBVI_ERR_INVALID_ARG: d is a standard deviation) and then changes
 * nothing. The layer's S goes through ibvi_layer_get_factor/set_factor
 * (P x R). Since 0.5.0. */
IBVI_API int ibvi_layer_get_diag(const ibvi_layer *layer, float *diag,
                                 int64_t len);
IBVI_API int ibvi_layer_set_diag(ibvi_layer *layer, const float *diag,
                                 int64_t len);

/* KL(q || p) of the network's diagonal layers, in nats, into *kl: q their
 * N(mu, diag(softplus(rho)^2)), p the prior of the parameterization per
 * parameter group, N(init, std^2) (ibvi_layer_init_std; std 1 for a group
 * with a constant prior), in closed form (docs/concepts.md, "Mean-field
 * VI"). Deterministic and low-rank layers add nothing (IBVI trains the
 * expected loss only). Needs an initialised network. */
IBVI_API int ibvi_net_kl(const ibvi_net *net, double *kl);

#ifdef __cplusplus
}
#endif

#endif /* IBVI_NET_H */
