/*
 * libibvi - deferred updates of the low-rank factors: the window's storage,
 * its coefficients, its flush and the forward's weights from it (the
 * algebra is in deferred.h and docs/performance.md, "Deferred factor
 * updates"; when a window is used is optimizer.c's decision).
 *
 * The flush walks each layer's S and V in blocks of FLUSH_ROWS rows and
 * tiles of TILE rows, and runs on each tile, while it is in cache, the
 * element-wise decay (S -= c V, V *= mu^n), the two rank-nM updates and
 * the two products with the noise drawn ahead (flush_tile). These were
 * BLIS GEMMs first; skinny as they are (one side R, the other nM), they
 * ran at about 3 GFLOP/s (docs/performance.md). Blocks and tiles start at
 * fixed rows of their parameter group and each is computed the same way
 * by whichever thread gets it, so the values do not depend on the thread
 * count.
 *
 * SPDX-License-Identifier: MIT
 */
#include <math.h>
#include <stdatomic.h>
#include <string.h>

#include "cpu.h"
#include "deferred.h"
#include "parallel.h"

/* Rows of S per block of the flush: S and V's rows (2 x 2048 x R floats)
 * and the window's columns of them stay in L2 (1-2 MB) for R <= 16. */
#define FLUSH_ROWS 2048

/* Rows per tile of the flush (flush_tile). */
#define TILE 64

/* Entries per block of the forward's pass. */
#define SAMPLE_ENTRIES 1024

static int64_t align16(int64_t floats) { return (floats + 15) / 16 * 16; }

int64_t ibvi__window_floats(const ibvi_net *net, int32_t capacity,
                            int32_t samples)
{
    const int64_t cols = (int64_t)capacity * samples;
    int64_t floats = align16(capacity) + align16(cols * net->noise_size);
    for (int32_t i = 0; i < net->layer_count; i++) {
        const ibvi_layer *l = net->layers[i];
        if (l->covariance != IBVI__COV_LOWRANK)
            continue;
        floats += 3 * align16(cols * l->params) +
                  3 * align16(cols * l->rank);
    }
    return floats;
}

ibvi__window *ibvi__window_create(ibvi_net *net, int64_t floats)
{
    int32_t layers = 0;
    for (int32_t i = 0; i < net->layer_count; i++)
        layers += net->layers[i]->covariance == IBVI__COV_LOWRANK;
    ibvi__window *w = ibvi__calloc(&net->allocator, 1, sizeof *w);
    ibvi__window_layer *wl = ibvi__calloc(&net->allocator, (size_t)layers,
                                          sizeof *wl);
    float *block = ibvi__alloc(&net->allocator, (size_t)floats, sizeof(float));
    if (!w || !wl || !block) {
        ibvi__free(&net->allocator, w);
        ibvi__free(&net->allocator, wl);
        ibvi__free(&net->allocator, block);
        return NULL;
    }
    *w = (ibvi__window){.layers = layers, .layer = wl, .block = block,
                        .block_floats = floats};
    return w;
}

void ibvi__window_layout(ibvi__window *w, ibvi_net *net, int32_t capacity,
                         int32_t samples, float *state, float mu,
                         int32_t nesterov)
{
    const int64_t cols = (int64_t)capacity * samples;
    w->capacity = capacity;
    w->samples = samples;
    w->pending = 0;
    w->ahead = 0;
    w->mu = mu;
    w->nesterov = nesterov;
    float *cursor = w->block;
    w->lr = cursor;
    cursor += align16(capacity);
    w->noise = cursor;
    cursor += align16(cols * net->noise_size);
    int64_t offset = 0; /* of the layer in the flat layout (= the state's) */
    int32_t k = 0;
    for (int32_t i = 0; i < net->layer_count; i++) {
        ibvi_layer *l = net->layers[i];
        if (l->params == 0)
            continue;
        if (l->covariance == IBVI__COV_LOWRANK) {
            const int64_t P = l->params, R = l->rank;
            ibvi__window_layer *x = &w->layer[k++];
            x->layer = l;
            x->velocity = state + offset + P;
            x->g = cursor, cursor += align16(cols * P);
            x->sz = cursor, cursor += align16(cols * P);
            x->vz = cursor, cursor += align16(cols * P);
            x->z = cursor, cursor += align16(cols * R);
            x->coef = cursor, cursor += 2 * align16(cols * R);
        }
        offset += l->params + ibvi__covariance_floats(l);
    }
}

void ibvi__window_free(const ibvi_allocator *a, ibvi__window *w)
{
    if (!w)
        return;
    ibvi__free(a, w->block);
    ibvi__free(a, w->layer);
    ibvi__free(a, w);
}

/* The per-step update (optimizer.c, sgd_value) with l_i = lr_i (times the
 * multiplier), from S_0, V_0 and gradients g_0 .. g_{n-1}:
 *   V_{i+1} = mu V_i + g_i,  so V_n = mu^n V_0 + sum_j mu^(n-1-j) g_j;
 *   momentum: S_{i+1} = S_i - l_i V_{i+1}, so
 *     S_n = S_0 - (sum_i l_i mu^(i+1)) V_0 - sum_j (sum_{i>=j} l_i mu^(i-j)) g_j;
 *   Nesterov: S_{i+1} = S_i - l_i (g_i + mu V_{i+1}), so
 *     c = mu sum_i l_i mu^(i+1),  b_j = l_j + mu sum_{i>=j} l_i mu^(i-j);
 *   mu = 0: S_n = S_0 - sum_j l_j g_j (V is not kept). */
void ibvi__window_coefficients(int32_t n, const float *lr, float mult,
                               float mu, int32_t nesterov, double *a,
                               double *b, double *c, double *decay)
{
    const double m = mu;
    double tail = 0.0; /* sum_{i>=j} l_i mu^(i-j), built from the end */
    double power = 1.0; /* mu^(n-1-j) */
    for (int32_t j = n - 1; j >= 0; j--) {
        const double l = (double)(lr[j] * mult); /* the float product of the
                                                    per-step update */
        tail = l + m * tail;
        a[j] = power;
        power *= m;
        b[j] = m == 0.0 ? l : nesterov ? l + m * tail : tail;
    }
    /* power = mu^n; tail = sum_i l_i mu^i, so sum_i l_i mu^(i+1) = mu tail. */
    *decay = power;
    *c = m == 0.0 ? 0.0 : nesterov ? m * m * tail : m * tail;
}

void ibvi__window_append(ibvi__window *w, const ibvi_net *net, float lr)
{
    const int32_t M = w->samples, k = w->pending;
    for (int32_t i = 0; i < w->layers; i++) {
        ibvi__window_layer *x = &w->layer[i];
        const ibvi__factor_grad fg = ibvi__gaussian_factor_grad(x->layer);
        const int64_t P = x->layer->params, R = x->layer->rank;
        memcpy(x->g + (int64_t)k * M * P, fg.g, (size_t)(M * P) * sizeof(float));
        for (int32_t m = 0; m < M; m++)
            memcpy(x->z + ((int64_t)k * M + m) * R, fg.z + m * fg.z_stride,
                   (size_t)R * sizeof(float));
    }
    (void)net;
    w->lr[k] = lr;
    w->pending = k + 1;
}

typedef struct flush_job {
    const ibvi__window *w;
    const ibvi__window_layer *x;
    int64_t row0, rows;  /* the group's rows of S                         */
    int32_t cols, ahead; /* pending columns nM, columns drawn ahead       */
    int32_t velocity;    /* V is kept (mu > 0)                            */
    float c, decay;
    const float *bz, *az; /* cols x R: -b_j Z, a_j Z                      */
    const float *zhat;    /* ahead x R, row stride noise_size             */
    int64_t zhat_stride;
} flush_job;

/* Eight floats: GCC's and Clang's vector extension, which each clone of
 * flush_tile compiles to its own instructions (two SSE registers on the
 * baseline, one AVX register on x86-64-v3). */
typedef float v8 __attribute__((vector_size(32)));
typedef int32_t vi8 __attribute__((vector_size(32)));

/* Unaligned loads and stores of 8 floats, and x with |x| < FLT_MIN set to
 * 0 (as optimizer.c's update): macros, since functions passing vectors by
 * value would differ in ABI between the clones. */
#define LOAD8(dst, p) memcpy(&(dst), (p), sizeof(v8))
#define STORE8(p, x) memcpy((p), &(x), sizeof(v8))
#define TINY8(x)                                                              \
    ((v8)((vi8)(x) & (((x) >= 0x1p-126f) | ((x) <= -0x1p-126f))))

/* One tile of TILE rows of S and V, transposed into R x TILE buffers so
 * that the arithmetic runs 8 rows at a time (rows are contiguous in G,
 * cols x P, in S zhat and V zhat, ahead x P, and in the buffers); a row
 * beyond the tile's nt computes garbage that is never stored. Compiled
 * for the baseline and for AVX2 + FMA, chosen at run time from cpu.c's
 * cpuid (not by an ifunc: target_clones' resolvers run while the dynamic
 * loader relocates the library, before a sanitizer's runtime is up, and
 * crashed every program linked to a ThreadSanitizer build): the flush
 * does 4 B M multiply-adds per factor entry, too many for the baseline's
 * 4-wide mul-then-add (docs/performance.md). */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && \
    __GNUC__ >= 12
#define FLUSH_AVX2 1
#define FLUSH_BODY static inline __attribute__((always_inline))
#else
#define FLUSH_AVX2 0
#define FLUSH_BODY static
#endif
FLUSH_BODY
void flush_tile_body(const flush_job *j, int64_t t0, int64_t nt)
{
    const ibvi_layer *l = j->x->layer;
    const int64_t P = l->params, R = l->rank;
    float *restrict s = l->factor + t0 * R;
    float *restrict v = j->x->velocity + t0 * R;
    float st[IBVI__WINDOW_MAX_RANK][TILE], vt[IBVI__WINDOW_MAX_RANK][TILE];
    float gt[IBVI__WINDOW_MAX_COLUMNS][TILE];
    const int velocity = j->velocity;
    for (int64_t b = 0; b < nt; b++)
        for (int64_t r = 0; r < R; r++)
            st[r][b] = s[b * R + r];
    if (velocity)
        for (int64_t b = 0; b < nt; b++)
            for (int64_t r = 0; r < R; r++)
                vt[r][b] = v[b * R + r];
    for (int64_t b = nt; b < TILE; b++) /* defined values in the tail */
        for (int64_t r = 0; r < R; r++)
            st[r][b] = vt[r][b] = 0.0f;
    if (j->cols > 0) {
        for (int32_t q = 0; q < j->cols; q++) {
            memcpy(gt[q], j->x->g + q * P + t0, (size_t)nt * sizeof(float));
            memset(gt[q] + nt, 0, (size_t)(TILE - nt) * sizeof(float));
        }
        const float c = j->c, decay = j->decay;
        for (int64_t b = 0; b < TILE; b += 8)
            for (int64_t r = 0; r < R; r++) {
                v8 sv, vv;
                LOAD8(sv, &st[r][b]);
                LOAD8(vv, &vt[r][b]);
                if (velocity) {
                    sv -= c * vv;
                    vv *= decay;
                }
                for (int32_t q = 0; q < j->cols; q++) {
                    v8 g;
                    LOAD8(g, &gt[q][b]);
                    sv += j->bz[q * R + r] * g;
                    if (velocity)
                        vv += j->az[q * R + r] * g;
                }
                sv = TINY8(sv);
                STORE8(&st[r][b], sv);
                if (velocity) {
                    vv = TINY8(vv);
                    STORE8(&vt[r][b], vv);
                }
            }
        for (int64_t b = 0; b < nt; b++)
            for (int64_t r = 0; r < R; r++)
                s[b * R + r] = st[r][b];
        if (velocity)
            for (int64_t b = 0; b < nt; b++)
                for (int64_t r = 0; r < R; r++)
                    v[b * R + r] = vt[r][b];
    }
    for (int32_t k = 0; k < j->ahead; k++) {
        const float *zk = j->zhat + k * j->zhat_stride;
        float acc[TILE], accv[TILE];
        for (int64_t b = 0; b < TILE; b += 8) {
            v8 a = {0}, av = {0};
            for (int64_t r = 0; r < R; r++) {
                v8 x;
                LOAD8(x, &st[r][b]);
                a += x * zk[r];
                if (velocity) {
                    LOAD8(x, &vt[r][b]);
                    av += x * zk[r];
                }
            }
            STORE8(acc + b, a);
            STORE8(accv + b, av);
        }
        memcpy(j->x->sz + k * P + t0, acc, (size_t)nt * sizeof(float));
        if (velocity)
            memcpy(j->x->vz + k * P + t0, accv, (size_t)nt * sizeof(float));
    }
}

#if FLUSH_AVX2
__attribute__((target("avx2,fma"), optimize("fp-contract=fast")))
static void flush_tile_avx2(const flush_job *j, int64_t t0, int64_t nt)
{
    flush_tile_body(j, t0, nt);
}

__attribute__((optimize("fp-contract=fast")))
static void flush_tile_base(const flush_job *j, int64_t t0, int64_t nt)
{
    flush_tile_body(j, t0, nt);
}

#endif

typedef void (*flush_tile_fn)(const flush_job *, int64_t, int64_t);

/* The version of flush_tile for this CPU, found once (a race writes the
 * same value). */
static flush_tile_fn flush_tile_for_cpu(void)
{
#if FLUSH_AVX2
    static _Atomic(flush_tile_fn) chosen;
    flush_tile_fn f = atomic_load_explicit(&chosen, memory_order_relaxed);
    if (!f) {
        ibvi__cpu_features cpu;
        ibvi__cpu_detect(&cpu);
        f = cpu.avx2_fma ? flush_tile_avx2 : flush_tile_base;
        atomic_store_explicit(&chosen, f, memory_order_relaxed);
    }
    return f;
#else
    return flush_tile_body;
#endif
}

static void flush_blocks(void *arg, int64_t b0, int64_t b1)
{
    const flush_job *j = arg;
    const int64_t end = j->row0 + j->rows;
    const flush_tile_fn flush_tile = flush_tile_for_cpu();
    for (int64_t b = b0; b < b1; b++) {
        const int64_t r0 = j->row0 + b * FLUSH_ROWS;
        const int64_t r1 = end - r0 < FLUSH_ROWS ? end : r0 + FLUSH_ROWS;
        for (int64_t t0 = r0; t0 < r1; t0 += TILE)
            flush_tile(j, t0, r1 - t0 < TILE ? r1 - t0 : TILE);
    }
}

void ibvi__window_flush(ibvi__window *w, ibvi_net *net, int draw_ahead)
{
    const int32_t M = w->samples, n = w->pending;
    const int64_t ns = net->noise_size;
    if (n == 0 && !draw_ahead) {
        w->ahead = 0;
        return;
    }
    if (draw_ahead) {
        ibvi_rng ahead = net->noise_rng;
        for (int32_t k = 0; k < w->capacity; k++)
            ibvi__rng_normal(&ahead, w->noise + (int64_t)k * M * ns, M * ns,
                             1.0f);
    }
    const int32_t threads = ibvi__threads_in_effect(net->threads);
    double a[IBVI__WINDOW_MAX_STEPS], b[IBVI__WINDOW_MAX_STEPS], c, decay;
    for (int32_t i = 0; i < w->layers; i++) {
        const ibvi__window_layer *x = &w->layer[i];
        const ibvi_layer *l = x->layer;
        const int64_t R = l->rank;
        for (int32_t gi = 0; gi < l->group_count; gi++) {
            const ibvi__param_group *grp = &l->groups[gi];
            const float mult = grp->sgd_mult / (float)R;
            ibvi__window_coefficients(n, w->lr, mult, w->mu, w->nesterov, a,
                                      b, &c, &decay);
            float *bz = x->coef, *az = x->coef + align16((int64_t)n * M * R);
            for (int32_t q = 0; q < n * M; q++)
                for (int64_t r = 0; r < R; r++) {
                    bz[q * R + r] = (float)-b[q / M] * x->z[q * R + r];
                    az[q * R + r] = (float)a[q / M] * x->z[q * R + r];
                }
            flush_job j = {.w = w, .x = x, .row0 = grp->offset,
                           .rows = grp->count, .cols = n * M,
                           .ahead = draw_ahead ? w->capacity * M : 0,
                           .velocity = w->mu != 0.0f, .c = (float)c,
                           .decay = (float)decay, .bz = bz, .az = az,
                           .zhat = w->noise + l->noise_offset,
                           .zhat_stride = ns};
            const int64_t blocks = (grp->count + FLUSH_ROWS - 1) / FLUSH_ROWS;
            ibvi__parallel_for(threads, blocks, 1, flush_blocks, &j);
        }
    }
    w->pending = 0;
    w->ahead = draw_ahead ? w->capacity : 0;
}

int ibvi__window_matches(const ibvi__window *w, const ibvi_net *net,
                         int32_t samples, const float *noise)
{
    const int64_t len = (int64_t)samples * net->noise_size;
    return samples == w->samples && w->pending < w->ahead &&
           memcmp(noise, w->noise + (int64_t)w->pending * len,
                  (size_t)len * sizeof(float)) == 0;
}

typedef struct sample_job {
    const float *mean, *sz, *vz, *g;
    float *theta;
    int64_t first, P;      /* the group's first entry; G's row stride */
    int32_t cols;
    float c;
    const float *weight;   /* cols: b_j (z_q . zhat)                  */
} sample_job;

static void sample_entries(void *arg, int64_t e0, int64_t e1)
{
    const sample_job *j = arg;
    float acc[SAMPLE_ENTRIES];
    for (int64_t p0 = j->first + e0; p0 < j->first + e1; p0 += SAMPLE_ENTRIES) {
        const int64_t end = j->first + e1;
        const int64_t n = end - p0 < SAMPLE_ENTRIES ? end - p0 : SAMPLE_ENTRIES;
        const float *restrict mean = j->mean + p0, *restrict sz = j->sz + p0;
        if (j->vz) {
            const float *restrict vz = j->vz + p0;
            const float c = j->c;
            for (int64_t i = 0; i < n; i++)
                acc[i] = sz[i] - c * vz[i];
        } else {
            for (int64_t i = 0; i < n; i++)
                acc[i] = sz[i];
        }
        for (int32_t q = 0; q < j->cols; q++) {
            const float wq = j->weight[q];
            const float *restrict g = j->g + q * j->P + p0;
            for (int64_t i = 0; i < n; i++)
                acc[i] -= wq * g[i];
        }
        float *restrict theta = j->theta + p0;
        for (int64_t i = 0; i < n; i++)
            theta[i] = mean[i] + acc[i];
    }
}

void ibvi__window_sample(const ibvi__window *w, const ibvi_layer *layer)
{
    const ibvi__window_layer *x = NULL;
    for (int32_t i = 0; i < w->layers; i++)
        if (w->layer[i].layer == layer)
            x = &w->layer[i];
    const int32_t M = w->samples, k = w->pending, cols = k * M;
    const int64_t P = layer->params, R = layer->rank;
    const int64_t ns = layer->net->noise_size;
    const int32_t threads = ibvi__threads_in_effect(layer->net->threads);
    double a[IBVI__WINDOW_MAX_STEPS], b[IBVI__WINDOW_MAX_STEPS], c, decay;
    float weight[IBVI__WINDOW_MAX_COLUMNS];
    for (int32_t gi = 0; gi < layer->group_count; gi++) {
        const ibvi__param_group *grp = &layer->groups[gi];
        ibvi__window_coefficients(k, w->lr, grp->sgd_mult / (float)R, w->mu,
                                  w->nesterov, a, b, &c, &decay);
        for (int32_t m = 0; m < M; m++) {
            const int64_t col = (int64_t)k * M + m;
            const float *zhat = w->noise + col * ns + layer->noise_offset;
            for (int32_t q = 0; q < cols; q++) {
                double dot = 0.0;
                for (int64_t r = 0; r < R; r++)
                    dot += (double)x->z[q * R + r] * zhat[r];
                weight[q] = (float)(b[q / M] * dot);
            }
            sample_job j = {.mean = layer->mean, .sz = x->sz + col * P,
                            .vz = w->mu != 0.0f ? x->vz + col * P : NULL,
                            .g = x->g, .theta = layer->sampled + m * P,
                            .first = grp->offset, .P = P, .cols = cols,
                            .c = (float)c, .weight = weight};
            ibvi__parallel_for(threads, grp->count,
                               IBVI__PARALLEL_GRAIN_FLOATS / (4 + cols) + 1,
                               sample_entries, &j);
        }
    }
}
