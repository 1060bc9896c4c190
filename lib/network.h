/*
 * libibvi - private layout of networks and layers, shared by the files of
 * lib/ (the layer interface itself is layer_ops.h).
 *
 * Memory: a network owns two blocks from its allocator. The parameter block
 * (allocated by ibvi_net_init) holds every parameterised layer's mean,
 * factor and mean gradient. The factor gradient dL/dS = G^T Z is never stored: the
 * backward keeps its two factors (G, the per-sample gradients, and Z, the
 * noise), the optimizer forms it on the fly and ibvi_layer_get_grad_factor
 * on request. The workspace block (grown by ibvi__net_reserve) holds the
 * activations of one forward pass, the backward buffers, the sampled weights,
 * the per-sample gradients and the noise. Growing allocates the new block
 * before releasing the old one, and carries over what the last backward left
 * there, so a failed allocation leaves the network as it was.
 *
 * SPDX-License-Identifier: MIT
 */
#ifndef IBVI_NETWORK_H
#define IBVI_NETWORK_H

#include "ibvi/net.h"
#include "ibvi/optimizer.h"
#include "image.h"
#include "internal.h"
#include "layer_ops.h"
#include "rng.h"

struct ibvi_layer {
    ibvi_net *net;
    int32_t kind;        /* ibvi__kind (= ibvi_layer_kind)                 */
    const ibvi__layer_ops *ops; /* ibvi__ops_of(kind)                     */
    int32_t index;       /* position in the network                       */
    int32_t role;        /* ibvi_layer_role (weight-matrix layers, at init) */
    ibvi__shape in_shape, out_shape; /* per example                       */
    int32_t inputs, outputs; /* their sizes C * H * W (flat)              */

    /* The kind's configuration (set by its builder, read by its ops). */
    union {
        int32_t units;      /* dense: the output count                    */
        int32_t activation; /* ibvi_activation (activation layers)        */
        /* conv2d, pooling, groupnorm, residual: their geometry here. */
        struct {            /* conv2d: the builder's request, and the     */
            ibvi_conv2d_options options; /* geometry configure derives   */
            ibvi__conv2d_geom geom;
        } conv;
        struct {            /* max, average pooling: kernel and stride;   */
            int32_t kernel, stride;      /* global: both 0 (the plane)  */
            ibvi__pool2d_geom geom;
        } pool;
        ibvi__groupnorm_geom groupnorm; /* groupnorm: groups, eps (builder),
                                           the rest (configure)           */
        struct {
            int32_t from;   /* the skip's layer, -1 for the input        */
            int32_t stride; /* the projection's, 0 for identity          */
            int32_t bias;   /* the projection's: 1 with a bias, 0 none   */
            ibvi__conv2d_geom projection; /* stride > 0 (configure)     */
        } residual;
    };

    /* The weight distribution of theta (gaussian.c): P floats, in groups
     * (layer_ops.h); deterministic, or low rank with a P x R factor. */
    int32_t covariance;  /* ibvi__covariance                              */
    int32_t rank;        /* R (0 when deterministic)                      */
    int64_t params;      /* P (0 without parameters)                      */
    int32_t group_count;
    ibvi__param_group groups[IBVI__MAX_GROUPS];
    int32_t noise_offset;/* where this layer's z starts in one noise sample */
    int32_t noise_dim;   /* z entries per sample: R (low rank), P
                            (diagonal), P + R (diag-lowrank), 0
                            (deterministic)                             */
    float init_sigma;    /* diagonal: sigma_0 / the prior std            */

    /* In the parameter block (layers with parameters). */
    float *mean;         /* P: theta's mean (dense: [W row-major; b])      */
    float *factor;       /* P x rank, row-major                           */
    float *grad_mean;    /* P                                             */
    float *rho;          /* diagonal: P, sigma = softplus(rho); else NULL */
    float *grad_rho;     /* diagonal: P, dL/drho of the last backward     */
    float *diag;         /* diag-lowrank (SWAG): d, P; else NULL          */

    /* Bounds on |entries| of the last backward's gradients, per group: the
     * mean's group g at [g], the factor's rows of group g at
     * [group_count + g] (dense: mean weights, mean biases, factor weight
     * rows, factor bias rows); 0 before any backward. Infinite or NaN when
     * dY or X was not finite. The optimizer uses them to skip its exact
     * finiteness check. */
    double grad_bound[2 * IBVI__MAX_GROUPS];
    /* (A diagonal layer's rho groups take the factor's slots.) */

    /* In the workspace block. */
    float *output;       /* rows x outputs of the last forward            */
    float *sampled;      /* samples x P: theta_m = mu + S z_m or mu +
                            sigma .* z_m (variational layers)            */
    float *sample_grad;  /* samples x P: g_m of the last backward, when it
                            had samples > 1 (variational layers)          */
    float *scratch;      /* the kind's scratch (layer_ops.h): this layer's
                            own when scratch_kept, else the network's shared
                            one; NULL when the kind needs none            */
    /* Layers after the next that read this layer's output (a residual's
     * skip): their backward adds dL/d(output) into grad_skip (rows x
     * outputs, zeroed by each backward), which the backward walk adds to
     * this layer's incoming gradient when it gets here. NULL when 0. */
    int32_t skip_readers;
    float *grad_skip;

    /* Bounds on |entries| of a host's gradients for this layer, indexed as
     * grad_bound: measured by ibvi_optimizer_step_grads (distributed.c) in
     * the host's buffer right before the step that uses them. */
    double host_grad_bound[2 * IBVI__MAX_GROUPS];
};

struct ibvi_net {
    ibvi_allocator allocator;
    int32_t input_dim;   /* C * H * W of input_shape                       */
    ibvi__shape input_shape;
    int32_t layer_count, layer_capacity;
    ibvi_layer **layers;

    int32_t initialized;
    int32_t parameterization;
    uint64_t seed;
    ibvi_rng noise_rng;
    int32_t threads;
    int32_t noise_size;
    int32_t max_width;   /* widest of input_dim and all layer outputs       */
    int64_t param_floats;/* sum over all layers of P (1 + R)               */
    float *param_block;

    /* Workspace, sized for ws_rows rows and ws_samples samples. */
    float *ws_block;
    int64_t ws_rows;
    int32_t ws_samples;
    float *input;        /* rows x input_dim: x repeated once per sample   */
    float *grad_a, *grad_b; /* rows x max_width each: backward ping-pong  */
    float *noise;        /* samples x noise_size: z of the last forward    */
    float *grad_noise;   /* samples x noise_size: z of the last backward   */
    float *loss_grad;    /* rows x output_dim: used by ibvi_train_step     */
    float *scratch;      /* the largest shared scratch of any layer        */

    /* The last forward pass, for backward. */
    int32_t forward_valid;
    int32_t forward_mean;   /* 1 when z = 0 (ibvi_net_forward_mean) */
    int64_t forward_n;
    int32_t forward_samples;
    int32_t has_gradients;  /* a backward ran since init */
    /* The noise of the last forward stays readable (ibvi_net_last_noise)
     * after parameter changes invalidate the forward cache. */
    int32_t noise_samples;  /* samples of the last forward, 0 if none */
    int32_t noise_is_zero;  /* the last forward was the mean network   */

    /* The last backward, whose factor gradients G^T Z are kept factored:
     * G is grad_mean (1 sample) or sample_grad, Z is grad_noise. */
    int32_t grad_samples;   /* 0: none since init, or the mean network
                               (every factor gradient is zero)        */

    /* Weights drawn ahead by the last optimizer step (optimizer.c): while
     * its single pass holds each block of S in cache it also computes
     * theta_m = mu + S z_m for the noise z the next forward will draw
     * (presample_noise), straight into each layer's `sampled`. A forward
     * whose noise, sample count and parameters match skips the sampling
     * pass (passes.c sets use_presampled for that forward only). */
    float *presample_noise; /* samples x noise_size (workspace)      */
    int32_t presampled;     /* samples drawn ahead, 0 if none        */
    uint64_t presampled_version; /* param_version they were drawn at */
    int32_t use_presampled;
    int32_t noise_from_rng; /* the last forward drew from noise_rng  */

    /* Deferred factor updates (deferred.h): the SGD optimizer whose
     * window holds steps not yet applied to S and V, or noise drawn
     * ahead, and that window; NULL when none. Whoever reads or writes a
     * factor or an optimizer's state settles it first (ibvi__net_settle).
     * use_window: this forward takes its low-rank weights from it. */
    ibvi_optimizer *window_owner;
    struct ibvi__window *window;
    int32_t use_window;
    /* Every optimizer bound to the network (optimizer.c), whose windows
     * ibvi_net_reserve reserves. */
    ibvi_optimizer *optimizers;

    /* Bumped whenever parameters change other than through the optimizer
     * that last stepped (init, set_mean, set_factor, any optimizer step), so
     * an optimizer knows when its bounds on |parameters| are stale. */
    uint64_t param_version;
};

#define IBVI__MAX_DIM 100000000 /* sanity bound on any layer or input size */

/* A factor covering the rounding of a sum of `terms` float products:
 * |computed - exact| <= ((1 + u)^terms - 1) sum |a_i b_i| with u = 2^-24
 * (gaussian.c). */
double ibvi__rounding_slack(double terms);

/* Grows the workspace to hold rows (= samples * n) rows and samples samples. */
int ibvi__net_reserve(ibvi_net *net, int64_t rows, int32_t samples,
                      const char *fn);

/* Checks a network handle for a call needing an initialised network. */
int ibvi__net_check_ready(const ibvi_net *net, const char *fn);

/* Runs the forward pass over net->input for the given noise (NULL = mean
 * network); writes the last layer's output into out (may be NULL). */
void ibvi__net_run_forward(ibvi_net *net, int64_t n, int32_t samples,
                           const float *noise, float *out);

/* Forward with freshly drawn noise; out may be NULL (the result stays in the
 * last layer's output). Checks arguments on behalf of `fn`. */
int ibvi__net_forward_sampled(ibvi_net *net, const char *fn, const float *x,
                              int64_t n, int32_t samples, float *out);

/* Applies the steps a window defers to every factor and velocity
 * (optimizer.c, deferred.h): after it S and V are the per-step values up
 * to rounding, nothing drawn ahead is kept and the owner's bounds are
 * invalid, so the network and optimizer are exactly as a copy saved and
 * loaded now (exact resume, io.h). Every public read or write of a
 * factor, of optimizer state or of the flat parameters calls it first;
 * cheap when nothing is deferred. */
void ibvi__net_settle(ibvi_net *net);
/* The network is being freed: its optimizers forget it. */
void ibvi__net_drop_window(ibvi_net *net);
/* Reserves the windows of deferred factor updates of the network's
 * optimizers for steps of up to max_samples samples (ibvi_net_reserve);
 * IBVI_ERR_NOMEM under fn's name when out of memory. */
int ibvi__net_reserve_windows(ibvi_net *net, int32_t max_samples,
                              const char *fn);
/* Before a sampled forward with this noise: 1 when the window provides
 * its low-rank weights, else settles and returns 0 (optimizer.c). */
int ibvi__net_window_forward(ibvi_net *net, int32_t samples,
                             const float *noise);

/* The network an optimizer is bound to (optimizer.c). */
ibvi_net *ibvi__optimizer_net(const ibvi_optimizer *opt);
/* A host's gradients for one step (distributed.c), in one of the two
 * layouts of include/ibvi/distributed.h:
 * - flat != NULL: the flat layout (ibvi_net_param_count floats);
 * - else factored: `count` blocks of `len` floats each (per layer: a
 *   deterministic layer's mean gradient, a variational layer's G, samples
 *   x P, then Z, samples x R), with `mean` the means' gradients already
 *   summed over the blocks and scaled (sum of P over the layers, in layer
 *   order). A factor range then forms scale * sum over the blocks of
 *   G^T Z, a chunk at a time.
 * All values finite; the caller has stored the bounds per range in each
 * layer's host_grad_bound. */
typedef struct ibvi__host_grads {
    const float *flat;
    const float *blocks, *mean;
    int32_t count, samples;
    int64_t len;
    float scale;
} ibvi__host_grads;
/* ibvi__optimizer_step from a host's gradients. Needs no backward; draws
 * no weights ahead (optimizer.c). */
int ibvi__optimizer_step_host(ibvi_optimizer *opt, const char *fn,
                              const ibvi__host_grads *grads);

/* An optimizer's private state, for saving and loading (serialize.c). The
 * hyper-parameters are copies; `state` points at the optimizer's own
 * state_floats floats (SGD: velocity; Adam: first then second moments). */
typedef struct ibvi__optimizer_info {
    int32_t kind;
    float lr, momentum;
    int32_t nesterov;
    float beta1, beta2, eps;
    int64_t steps;
    int64_t state_floats;
    float *state;
    float kl_weight; /* ibvi_optimizer_set_kl_weight */
} ibvi__optimizer_info;
void ibvi__optimizer_get_info(const ibvi_optimizer *opt,
                              ibvi__optimizer_info *out);
/* Sets the step count (>= 0) of a restored optimizer. */
void ibvi__optimizer_set_steps(ibvi_optimizer *opt, int64_t steps);
/* The most steps an optimizer takes, and so the largest step count a model
 * file holds (include/ibvi/io.h): 2^53, the largest count that every later
 * step still increments exactly in a double (Adam's bias correction). The
 * optimizer refuses a step there; the loader refuses a larger count. One
 * bound for both, so a save can never write a count the loader rejects. */
#define IBVI__MAX_STEPS ((int64_t)1 << 53)

/* Appends a layer of `kind` whose builder has set its configuration in
 * *proto (the kind-specific union); the input shape is the last layer's
 * output. rank > 0 asks for a low-rank Gaussian theta. Runs the kind's
 * configure, checks the rank and the parameter total, and only then
 * changes the network (net.c). */
int ibvi__net_add_layer(ibvi_net *net, const char *fn, int32_t kind,
                        const ibvi_layer *proto, int32_t rank);

/* A new, uninitialised network with src's input shape, layers (kinds and
 * configurations, residual sources), allocator and thread count, every
 * layer deterministic (clone.c); messages under fn. On failure *out is
 * NULL. */
int ibvi__net_clone_architecture(const ibvi_net *src, const char *fn,
                                 ibvi_net **out);
/* Copies every layer's mean from src into dst: both initialised, the same
 * kinds and parameter counts layer by layer (else an error, nothing
 * copied). */
int ibvi__net_copy_means(ibvi_net *dst, const ibvi_net *src, const char *fn);

/* Sets roles, prior stds and multipliers of every layer (param.c). */
void ibvi__param_configure(ibvi_net *net, int32_t parameterization);
/* Draws every layer's mean and factor from the prior (param.c). */
void ibvi__param_draw_prior(ibvi_net *net, uint64_t seed);
/* What the public getters report as "weights" and "biases" of a layer
 * with parameters (ibvi_layer_init_std, ibvi_layer_lr_multipliers): its
 * first weight group and its first other group (param.c). */
const ibvi__param_group *ibvi__param_weights(const ibvi_layer *layer);
const ibvi__param_group *ibvi__param_biases(const ibvi_layer *layer);

/* 1 when the layer's theta is random (low rank or diagonal): it runs one
 * theta per weight sample and has noise_dim > 0 entries of z. */
static inline int ibvi__is_variational(const ibvi_layer *l)
{
    return l->params > 0 && l->covariance != IBVI__COV_NONE;
}

/* Floats of a layer's distribution parameters beyond the mean (its part
 * of the flat layout after the mean): P x R, P (rho), P + P x R (d, S) or
 * 0. */
int64_t ibvi__covariance_floats(const ibvi_layer *l);

/* softplus(x) = log(1 + e^x) and its derivative, the logistic sigmoid, in
 * float, stable for every finite x (gaussian.c: the one implementation). */
float ibvi__softplus(float x);
float ibvi__sigmoid(float x);
/* Both at once (one exponential), bitwise the values of the two above. */
void ibvi__softplus_sigmoid(float x, float *softplus, float *sigmoid);

/* ---- the KL of the diagonal layers (kl.c) --------------------------------- */

/* The prior std the KL uses for group g: its std, 1 for a constant. */
static inline float ibvi__kl_std(const ibvi__param_group *g)
{
    return g->std > 0.0f ? g->std : 1.0f;
}
/* KL(q || p) of one diagonal layer, in double. */
double ibvi__layer_kl(const ibvi_layer *l);
/* weight * dKL/dmu (part 0) or weight * dKL/drho (part 1) for entries
 * first .. first + n - 1 of group g, added to grad into out. */
void ibvi__kl_grad_span(const ibvi_layer *l, int32_t g, int part,
                        float weight, const float *grad, int64_t first,
                        int64_t n, float *out);
/* A bound on |weight * dKL/d.| of group g's entries (part 0: mean, 1:
 * rho) when |parameters| <= param_bound. */
double ibvi__kl_grad_bound(const ibvi_layer *l, int32_t g, int part,
                           float weight, double param_bound);

/* ---- the weight distribution (gaussian.c) ---------------------------------
 * Any layer with parameters: theta deterministic (= mean) or low-rank
 * Gaussian. rows = samples * n; input is rows x inputs (sample-major).
 * noise points at sample 0's z for this layer (stride noise_stride between
 * samples) or is NULL for the mean network. */

/* Runs the layer's forward into layer->output: one call for every row when
 * theta is deterministic, the mean network or a kind without parameters,
 * else per sample block with theta_m = mu + S z_m (drawn here unless the
 * last optimizer step drew them ahead, net->use_presampled). */
void ibvi__layer_forward(ibvi_layer *layer, const float *input, int64_t n,
                         int32_t samples, const float *noise,
                         int64_t noise_stride);
/* The matching backward: grad_input may be NULL (first layer: dL/dx is not
 * needed). Writes grad_mean, sample_grad (samples > 1) and grad_bound; the
 * caller keeps the noise (net->grad_noise) for the factor gradient. */
void ibvi__layer_backward(ibvi_layer *layer, const float *input,
                          const float *grad_output, float *grad_input,
                          int64_t n, int32_t samples, const float *noise,
                          int64_t noise_stride);

/* Rows row0 .. row0 + rows - 1 of theta_m = mu + S z_m for every sample m
 * (z: samples x R, row stride z_stride; theta: samples x P), reading each
 * row of S once. Bitwise the same values whichever rows are asked for. */
void ibvi__gaussian_sample_rows(const ibvi_layer *layer, int64_t row0,
                                int64_t rows, const float *z,
                                int64_t z_stride, int32_t samples,
                                float *theta);
/* Every row of the same, split across the network's threads by blocks of
 * rows: bitwise the same for any thread count. */
void ibvi__gaussian_sample_all(const ibvi_layer *layer, const float *z,
                               int64_t z_stride, int32_t samples,
                               float *theta);

/* The factor gradient of the last backward, dL/dS = G^T Z, in factored
 * form: g is samples x P (row stride P), z is samples x R (row stride
 * z_stride). g is NULL when the gradient is zero (no backward since init,
 * or a backward through the mean network). */
typedef struct ibvi__factor_grad {
    const float *g, *z;
    int64_t params, z_stride;
    int32_t samples, rank;
} ibvi__factor_grad;
ibvi__factor_grad ibvi__gaussian_factor_grad(const ibvi_layer *layer);
/* Entries first .. first + count - 1 of G^T Z (P x R, row-major, read as
 * one flat array) into out; zeros when fg->g is NULL. */
void ibvi__factor_grad_span(const ibvi__factor_grad *fg, int64_t first,
                            int64_t count, float *out);

/* max |theta[g]| per group g of theta (P floats) into bound: the exact
 * bound for kinds whose backward has no cheaper one. */
void ibvi__group_max_abs(const ibvi_layer *layer, const float *theta,
                         double *bound);

/* ---- kinds ---------------------------------------------------------------- */

/* Dense (dense.c): output (rows x outputs) = input W^T + b for theta =
 * [W; b], the input flattened to inputs = C * H * W. */
void ibvi__affine_forward(const ibvi_layer *layer, const float *theta,
                          const float *input, float *output, int64_t rows);

/* Activation passes (activation.c), element-wise over count values; the
 * forward may run in place (input == output). */
void ibvi__activation_forward(int32_t activation, const float *input,
                              float *output, int64_t count);
void ibvi__activation_backward(int32_t activation, const float *input,
                               const float *grad_output, float *grad_input,
                               int64_t count);
int ibvi__activation_valid(int32_t activation);

/* Residual (residual.c): output (rows x outputs) = input + skip, where the
 * skip (the output of layer `from`, or the network input) has skip_rows
 * rows, rows or rows / blocks (then each of the `blocks` blocks of
 * skip_rows rows adds the same skip: the predictor's rows shared by all
 * samples), projected first when the layer has a projection (theta). The
 * training forward (the kind's ops) reads the skip from the network's
 * buffers; the predictor passes its own. scratch: the kind's. */
void ibvi__residual_apply(const ibvi_layer *layer, const float *theta,
                          const float *input, const float *skip,
                          int64_t skip_rows, float *output, int64_t rows,
                          float *scratch);

#endif /* IBVI_NETWORK_H */
