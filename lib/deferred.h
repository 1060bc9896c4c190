/*
 * libibvi - deferred updates of the low-rank factors (deferred.c): the
 * window of an SGD optimizer (docs/performance.md, "Deferred factor
 * updates").
 *
 * For SGD, momentum and Nesterov the update of a factor S and its velocity
 * V is linear in the steps' gradients g_t = G_t^T Z_t (rank M = samples).
 * The window keeps the last n <= capacity steps' G and Z (and lr) instead
 * of applying them, and applies them in one pass (flush):
 *     V_n = mu^n V_0 + sum_j a_j g_j,   S_n = S_0 - c V_0 - sum_j b_j g_j
 * with the coefficients of ibvi__window_coefficients. While a flush holds
 * S_n and V_n in cache it also forms S_n zhat and V_n zhat for the noise
 * zhat of the next `capacity` forwards, drawn ahead (the noise does not
 * depend on the parameters); the forward k steps later then needs only
 *     S_k zhat = S_0 zhat - c_k V_0 zhat - sum_{j<k} b_j G_j^T (Z_j zhat).
 * Every reader of S or V outside that forward settles the window first
 * (ibvi__net_settle, optimizer.c).
 *
 * SPDX-License-Identifier: MIT
 */
#ifndef IBVI_DEFERRED_H
#define IBVI_DEFERRED_H

#include "network.h"

typedef struct ibvi__window ibvi__window;

/* The longest window, and the most samples per step it takes: a step
 * with more samples, or a window the memory cap allows only 1 step of,
 * stays on the per-step path. */
#define IBVI__WINDOW_MAX_STEPS 16
#define IBVI__WINDOW_MAX_SAMPLES 8
#define IBVI__WINDOW_MAX_COLUMNS (IBVI__WINDOW_MAX_STEPS * IBVI__WINDOW_MAX_SAMPLES)
/* The largest rank a window takes (the flush's tiles hold R rows). */
#define IBVI__WINDOW_MAX_RANK 64

/* One low-rank layer's part of the window. */
typedef struct ibvi__window_layer {
    ibvi_layer *layer;
    float *velocity; /* the optimizer's velocity of the factor, P x R      */
    float *g;        /* capacity * M x P: the pending steps' G, step-major */
    float *z;        /* capacity * M x R: their Z                          */
    float *sz, *vz;  /* capacity * M x P: S_0 zhat, V_0 zhat (vz: mu > 0)  */
    float *coef;     /* capacity * M x R: the flush's scaled Z (scratch)   */
} ibvi__window_layer;

struct ibvi__window {
    int32_t capacity; /* B */
    int32_t samples;  /* M of every pending step and of the noise ahead    */
    int32_t layers;   /* low-rank layers                                   */
    int32_t pending;  /* steps applied to the means but not yet to S, V    */
    int32_t ahead;    /* forwards whose noise was drawn ahead (0 or B)     */
    float mu;         /* the momentum and Nesterov flag of every pending   */
    int32_t nesterov; /* step (a change settles the window first)          */
    float *lr;        /* capacity: opt->lr of each pending step            */
    float *noise;     /* capacity x M x noise_size: the noise drawn ahead  */
    ibvi__window_layer *layer;
    float *block;     /* the one allocation holding all of the above       */
    int64_t block_floats; /* its size: ibvi__window_floats of the largest
                             (capacity, samples) it may be laid out for  */
};

/* The window's floats for a network: the memory the cost model weighs. */
int64_t ibvi__window_floats(const ibvi_net *net, int32_t capacity,
                            int32_t samples);

/* Allocates a window's storage of `floats` floats (at least
 * ibvi__window_floats of every (capacity, samples) it will be laid out
 * for) for net's low-rank layers; NULL when out of memory. Empty until
 * ibvi__window_layout. */
ibvi__window *ibvi__window_create(ibvi_net *net, int64_t floats);

/* Lays the window out for `capacity` steps of `samples` samples
 * (ibvi__window_floats(net, capacity, samples) <= w->block_floats), with
 * nothing pending or drawn ahead; the factor velocities start at their
 * flat offsets in state (used when mu > 0). */
void ibvi__window_layout(ibvi__window *w, ibvi_net *net, int32_t capacity,
                         int32_t samples, float *state, float mu,
                         int32_t nesterov);
void ibvi__window_free(const ibvi_allocator *a, ibvi__window *w);

/* Coefficients of a window of n steps with learning rates lr_j (already
 * times the range's multiplier, as float), in double:
 * V_n = decay V_0 + sum_j a[j] g_j, S_n = S_0 - c V_0 - sum_j b[j] g_j. */
void ibvi__window_coefficients(int32_t n, const float *lr, float mult,
                               float mu, int32_t nesterov, double *a,
                               double *b, double *c, double *decay);

/* Records the last backward's G and Z and the step's lr as pending step
 * w->pending (< capacity). */
void ibvi__window_append(ibvi__window *w, const ibvi_net *net, float lr);

/* Applies the pending steps to every S and V (exactly the per-step update
 * up to rounding), leaving none pending; with draw_ahead, draws the noise
 * of the next capacity forwards from a copy of the network's generator and
 * forms S zhat, V zhat for it (ahead = capacity), else ahead = 0. */
void ibvi__window_flush(ibvi__window *w, ibvi_net *net, int draw_ahead);

/* 1 when the forward about to run with this noise can take its weights
 * from the window (its noise is the one drawn for position pending). */
int ibvi__window_matches(const ibvi__window *w, const ibvi_net *net,
                         int32_t samples, const float *noise);

/* theta_m = mu + S_pending zhat_m for the layer's samples (layer->sampled),
 * from the window; the layer must be one of the window's. */
void ibvi__window_sample(const ibvi__window *w, const ibvi_layer *layer);

#endif /* IBVI_DEFERRED_H */
