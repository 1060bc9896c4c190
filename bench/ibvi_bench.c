/*
 * libibvi benchmark (issue 6, "The benchmark"): a measuring tool, not a test.
 *
 * In one process and on the same synthetic data it reports
 *   1. the training-step time (ibvi_train_step: forward, softmax
 *      cross-entropy, backward, SGD momentum 0.9, muP) of a standard
 *      MLP 784-W-W-10 and of IBVI networks of the same shape, and the ratio;
 *      r10 first+last both on the per-step fused path (the default) and
 *      with deferred factor updates (ibvi_optimizer_set_deferred -1, issue 15 part 2),
 *      with the 4-pass floor and the floor the deferred scheme implies;
 *   2. the machine's limit for that step: BLIS sgemm time for exactly the
 *      step's GEMMs (same shapes, transposes, thread count, sup path off, as
 *      lib/kernels.c calls them) and a streaming-bandwidth triad; from them
 *      the fraction of the limit each step reaches;
 *   3. predictive averaging (ibvi_predictor) over 10k inputs for several K
 *      and two covariance placements (rank 10 first+last, last only),
 *      relative to one deterministic pass and next to the flop floor of the
 *      path the predictor takes;
 *   4. the peak resident memory of a training run against the bytes the
 *      model needs;
 *   5. the BLIS sub-configuration and thread counts;
 *   6. image networks (LeNet-5, a small ResNet with group norm): standard
 *      and IBVI training steps, their
 *      GEMM limit, an im2col copy floor and K = 32 prediction (see the
 *      section's comment), for the models --models selects (default all).
 *
 * Usage: ibvi_bench [--quick] [--threads 1,2] [--models lenet5,resnet|all|none]
 *                   [--images-only | --json FILE | --profile-steps N]
 *
 * --profile-steps N runs nothing but N standard training steps (batch 128,
 * after one warm-up step) of each model --models selects, on the first
 * --threads entry, and prints their mean time: a workload for a profiler,
 * e.g. `perf record ./build/bench/ibvi_bench --profile-steps 200 --models
 * lenet5 --threads 1` (docs/performance.md, "Image networks").
 *
 * SPDX-License-Identifier: MIT
 */
#define _POSIX_C_SOURCE 200809L
#include <blis.h>
#include <ibvi/ibvi.h>

#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#define INPUTS 784
#define CLASSES 10
#define DATA_SEED 20261129u
#define NET_SEED 42u
#define LR 0.01f
#define TARGET_SECONDS 0.3 /* timed per configuration, over 3 repeats */
#define REPEATS 3
#define MAX_LIST 8

/* ---- small helpers ------------------------------------------------------ */

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void check(int status, const char *what)
{
    if (status < 0) {
        fprintf(stderr, "ibvi_bench: %s: %s (%s)\n", what,
                ibvi_status_string(status), ibvi_last_error());
        exit(1);
    }
}

static void *xmalloc(size_t bytes)
{
    void *p = malloc(bytes ? bytes : 1);
    if (p == NULL) {
        fprintf(stderr, "ibvi_bench: out of memory (%zu bytes)\n", bytes);
        exit(1);
    }
    return p;
}

/* splitmix64: the synthetic data's generator (fixed seed). */
static uint64_t next_u64(uint64_t *s)
{
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static float next_unit(uint64_t *s)
{
    return (float)(next_u64(s) >> 40) * (1.0f / 16777216.0f);
}

static void fill(float *a, int64_t n, uint64_t *s)
{
    for (int64_t i = 0; i < n; i++)
        a[i] = next_unit(s);
}

/* A synthetic data set: inputs in [0, 1), labels in [0, 10). */
typedef struct dataset {
    int64_t n, dim;
    float *x;
    int32_t *y;
} dataset;

/* n examples of `dim` features (784 for the MLPs and LeNet-5). */
static dataset make_data_dim(int64_t n, int64_t dim)
{
    uint64_t s = DATA_SEED;
    dataset d = {n, dim, xmalloc((size_t)(n * dim) * sizeof(float)),
                 xmalloc((size_t)n * sizeof(int32_t))};
    fill(d.x, n * dim, &s);
    for (int64_t i = 0; i < n; i++)
        d.y[i] = (int32_t)(next_u64(&s) % CLASSES);
    return d;
}

static dataset make_data(int64_t n) { return make_data_dim(n, INPUTS); }

static void free_data(dataset *d)
{
    free(d->x);
    free(d->y);
}

/* Times fn(ctx): one warm-up call, then REPEATS repeats of `count` calls,
 * count chosen from the first repeat so all repeats take about
 * TARGET_SECONDS; returns the minimum over the repeats of the mean time per
 * call. (The first repeat is a single call; it counts as a repeat.) The
 * same minimum in process CPU time goes to last_cpu_seconds: with one
 * thread it leaves out the time other jobs held the core. */
static double last_cpu_seconds; /* time_calls's minimum in process CPU time */

static double cpu_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static double time_calls(void (*fn)(void *), void *ctx)
{
    fn(ctx);
    double c0 = cpu_now(), t0 = now();
    fn(ctx);
    double best = now() - t0, cpu_best = cpu_now() - c0;
    int64_t count = (int64_t)ceil(TARGET_SECONDS / REPEATS / (best > 1e-7 ? best : 1e-7));
    if (count < 1)
        count = 1;
    for (int r = 1; r < REPEATS; r++) {
        c0 = cpu_now(), t0 = now();
        for (int64_t i = 0; i < count; i++)
            fn(ctx);
        double mean = (now() - t0) / (double)count;
        double cpu_mean = (cpu_now() - c0) / (double)count;
        if (mean < best)
            best = mean;
        if (cpu_mean < cpu_best)
            cpu_best = cpu_mean;
    }
    last_cpu_seconds = cpu_best;
    return best;
}

/* ---- networks ------------------------------------------------------------ */

/* The covariance placements of point 1. */
typedef struct variant {
    const char *name;
    int32_t rank_first, rank_last;
    /* ibvi_optimizer_set_deferred's request (docs/deferred.md): 0 the
     * per-step fused path, the rows the window is measured against;
     * IBVI_DEFERRED_AUTO (the library's default) the cost model's window. */
    int32_t deferred;
} variant;

/* Measured in this order. The last-only network comes right after the
 * standard one it is compared with: measured after the rank-50 network
 * (about 1 GB freed at W = 4096) it read up to 1.4x slower in some runs,
 * though callgrind counts only 1.2% more instructions than standard. */
enum { V_STANDARD, V_R10_LAST, V_R1, V_R10, V_R10_DEFERRED, V_R50 };
static const variant VARIANTS[] = {
    [V_STANDARD] = {"standard", 0, 0, 0},
    [V_R10_LAST] = {"ibvi r10 last only", 0, 10, 0},
    [V_R1] = {"ibvi r1 first+last", 1, 1, 0},
    [V_R10] = {"ibvi r10 first+last", 10, 10, 0},
    [V_R10_DEFERRED] = {"ibvi r10 f+l deferred", 10, 10, IBVI_DEFERRED_AUTO},
    [V_R50] = {"ibvi r50 first+last", 50, 50, 0},
};
#define NVARIANTS (int)(sizeof VARIANTS / sizeof VARIANTS[0])

/* MLP 784-W-W-10 with ReLU; the first and last dense layers get the ranks. */
static ibvi_net *make_net(int32_t width, const variant *v, int32_t threads)
{
    ibvi_net *net;
    check(ibvi_net_create(&net, INPUTS, NULL), "ibvi_net_create");
    check(ibvi_net_add_dense(net, width, v->rank_first), "add_dense");
    check(ibvi_net_add_activation(net, IBVI_ACT_RELU), "add_activation");
    check(ibvi_net_add_dense(net, width, 0), "add_dense");
    check(ibvi_net_add_activation(net, IBVI_ACT_RELU), "add_activation");
    check(ibvi_net_add_dense(net, CLASSES, v->rank_last), "add_dense");
    check(ibvi_net_init(net, IBVI_PARAM_MUP, NET_SEED), "ibvi_net_init");
    check(ibvi_net_set_threads(net, threads), "ibvi_net_set_threads");
    return net;
}

/* Floats of the dense layers' weights+biases P and of the factors P x R. */
static void layer_dims(int32_t width, int32_t in[3], int32_t out[3])
{
    in[0] = INPUTS, out[0] = width;
    in[1] = width, out[1] = width;
    in[2] = width, out[2] = CLASSES;
}

static int64_t factor_floats(int32_t width, const variant *v)
{
    int32_t in[3], out[3];
    layer_dims(width, in, out);
    int64_t p0 = (int64_t)out[0] * in[0] + out[0];
    int64_t p2 = (int64_t)out[2] * in[2] + out[2];
    return p0 * v->rank_first + p2 * v->rank_last;
}

/* The bytes the model needs to train (point 4): parameters (means and
 * factors: ibvi_net_param_count), their gradients and the SGD velocity
 * (3 x param_count floats), one batch of activations (the outputs of every
 * layer, activations included, for `batch` rows) and the data set as stored
 * (n x 784 floats + n int32 labels). */
static int64_t model_bytes(const ibvi_net *net, int32_t width, int64_t batch,
                           const dataset *d)
{
    int64_t params = ibvi_net_param_count(net);
    int64_t acts = batch * (2 * (int64_t)width + 2 * (int64_t)width + CLASSES);
    int64_t data = d->n * (INPUTS * (int64_t)sizeof(float) + (int64_t)sizeof(int32_t));
    return 3 * params * (int64_t)sizeof(float) + acts * (int64_t)sizeof(float) + data;
}

/* ---- point 1: training steps ----------------------------------------------- */

typedef struct step_ctx {
    ibvi_net *net;
    ibvi_optimizer *opt;
    const dataset *data;
    int64_t batch, offset;
} step_ctx;

static void one_step(void *p)
{
    step_ctx *c = p;
    if (c->offset + c->batch > c->data->n)
        c->offset = 0;
    float loss;
    check(ibvi_train_step(c->net, c->opt, c->data->x + c->offset * c->data->dim,
                          c->batch, 1, IBVI_LOSS_SOFTMAX_XENT,
                          c->data->y + c->offset, NULL, &loss),
          "ibvi_train_step");
    c->offset += c->batch;
}

/* The trainer of every timed step: SGD momentum 0.9 on `net` (taken). */
static void setup_trainer(step_ctx *c, ibvi_net *net, int64_t batch,
                          const dataset *d, const int32_t *deferred)
{
    c->net = net;
    check(ibvi_net_reserve(c->net, batch, 1), "ibvi_net_reserve");
    check(ibvi_optimizer_create(&c->opt, c->net, IBVI_OPT_SGD, LR),
          "ibvi_optimizer_create");
    if (deferred) /* NULL: the library's default, the cost model's */
        check(ibvi_optimizer_set_deferred(c->opt, *deferred),
              "ibvi_optimizer_set_deferred");
    check(ibvi_optimizer_set_momentum(c->opt, 0.9f, 0), "set_momentum");
    c->data = d;
    c->batch = batch;
    c->offset = 0;
}

static void make_trainer(step_ctx *c, int32_t width, const variant *v,
                         int32_t threads, int64_t batch, const dataset *d)
{
    setup_trainer(c, make_net(width, v, threads), batch, d, &v->deferred);
}

static void free_trainer(step_ctx *c)
{
    ibvi_optimizer_free(c->opt);
    ibvi_net_free(c->net);
}

static double time_train(int32_t width, const variant *v, int32_t threads,
                         int64_t batch, const dataset *d)
{
    step_ctx c;
    make_trainer(&c, width, v, threads, batch, d);
    double t = time_calls(one_step, &c);
    free_trainer(&c);
    return t;
}

/* ---- point 2: the limit ------------------------------------------------------ */

/* The GEMMs of one standard step, with the calls of lib/dense.c:
 *   forward  Y (N x out) = X (N x in) W^T           per layer
 *   backward dW (out x in) = dY^T (out x N) X        per layer
 *            dX (N x in) = dY (N x out) W            all but the first layer */
typedef struct gemm_ctx {
    int32_t threads;
    int64_t n;
    int32_t in[3], out[3];
    float *x[3], *w[3], *y[3], *dy[3], *dw[3], *dx[3];
} gemm_ctx;

static void sgemm(int32_t threads, int ta, int tb, int64_t m, int64_t n,
                  int64_t k, const float *a, int64_t lda, const float *b,
                  int64_t ldb, float beta, float *c, int64_t ldc)
{
    rntm_t rntm;
    bli_rntm_init(&rntm);
    bli_rntm_set_num_threads(threads, &rntm);
    bli_rntm_disable_l3_sup(&rntm);
    float one = 1.0f;
    bli_sgemm_ex(ta ? BLIS_TRANSPOSE : BLIS_NO_TRANSPOSE,
                 tb ? BLIS_TRANSPOSE : BLIS_NO_TRANSPOSE, (dim_t)m, (dim_t)n,
                 (dim_t)k, &one, (float *)a, (inc_t)lda, 1, (float *)b,
                 (inc_t)ldb, 1, &beta, c, (inc_t)ldc, 1, NULL, &rntm);
}

static void step_gemms(void *p)
{
    gemm_ctx *g = p;
    for (int l = 0; l < 3; l++)
        sgemm(g->threads, 0, 1, g->n, g->out[l], g->in[l], g->x[l], g->in[l],
              g->w[l], g->in[l], 1.0f, g->y[l], g->out[l]);
    for (int l = 2; l >= 0; l--) {
        sgemm(g->threads, 1, 0, g->out[l], g->in[l], g->n, g->dy[l],
              g->out[l], g->x[l], g->in[l], 0.0f, g->dw[l], g->in[l]);
        if (l > 0)
            sgemm(g->threads, 0, 0, g->n, g->in[l], g->out[l], g->dy[l],
                  g->out[l], g->w[l], g->in[l], 0.0f, g->dx[l], g->in[l]);
    }
}

static double time_gemms(int32_t width, int64_t n, int32_t threads)
{
    gemm_ctx g = {.threads = threads, .n = n};
    layer_dims(width, g.in, g.out);
    uint64_t s = DATA_SEED + 1;
    for (int l = 0; l < 3; l++) {
        int64_t in = g.in[l], out = g.out[l];
        float **bufs[6] = {&g.x[l], &g.w[l], &g.y[l], &g.dy[l], &g.dw[l], &g.dx[l]};
        int64_t sizes[6] = {n * in, out * in, n * out, n * out, out * in, n * in};
        for (int b = 0; b < 6; b++) {
            *bufs[b] = xmalloc((size_t)sizes[b] * sizeof(float));
            fill(*bufs[b], sizes[b], &s);
        }
    }
    double t = time_calls(step_gemms, &g);
    for (int l = 0; l < 3; l++) {
        free(g.x[l]), free(g.w[l]), free(g.y[l]);
        free(g.dy[l]), free(g.dw[l]), free(g.dx[l]);
    }
    return t;
}

/* Square sgemm throughput (GFLOP/s), to compare kernel sets: run the
 * benchmark with and without IBVI_BLIS_ARCH=off or a BLIS_ARCH_TYPE. */
typedef struct square_ctx {
    int32_t threads;
    int64_t n;
    float *a, *b, *c;
} square_ctx;

static void square_gemm(void *p)
{
    square_ctx *q = p;
    sgemm(q->threads, 0, 0, q->n, q->n, q->n, q->a, q->n, q->b, q->n, 0.0f,
          q->c, q->n);
}

static double measured_gflops[MAX_LIST]; /* per --threads entry, for JSON */
static int32_t measured_threads[MAX_LIST]; /* the --threads entries */

static double sgemm_gflops(int32_t threads, int64_t n)
{
    square_ctx q = {.threads = threads, .n = n};
    uint64_t s = DATA_SEED + 2;
    float **bufs[3] = {&q.a, &q.b, &q.c};
    for (int b = 0; b < 3; b++) {
        *bufs[b] = xmalloc((size_t)(n * n) * sizeof(float));
        fill(*bufs[b], n * n, &s);
    }
    const double t = time_calls(square_gemm, &q);
    free(q.a), free(q.b), free(q.c);
    return 2.0 * (double)n * (double)n * (double)n / t / 1e9;
}

/* Streaming bandwidth: a[i] = b[i] + s c[i] over three arrays of 256 MB in
 * all, split across `threads` POSIX threads. Bytes counted: 3 x 4 per
 * element (read b, read c, write a; write-allocate traffic not counted, so
 * the figure is the useful bandwidth a streaming kernel sees). */
#define TRIAD_BYTES (256ll << 20)

typedef struct triad_part {
    float *a, *b, *c;
    int64_t n;
} triad_part;

static void *triad_worker(void *p)
{
    triad_part *t = p;
    const float s = 1.0001f;
    for (int64_t i = 0; i < t->n; i++)
        t->a[i] = t->b[i] + s * t->c[i];
    return NULL;
}

typedef struct triad_ctx {
    float *a, *b, *c;
    int64_t n;
    int32_t threads;
} triad_ctx;

static void triad(void *p)
{
    triad_ctx *t = p;
    pthread_t ids[MAX_LIST];
    triad_part parts[MAX_LIST] = {{0}};
    int64_t chunk = (t->n + t->threads - 1) / t->threads;
    for (int32_t k = 0; k < t->threads; k++) {
        int64_t lo = k * chunk, hi = lo + chunk < t->n ? lo + chunk : t->n;
        parts[k] = (triad_part){t->a + lo, t->b + lo, t->c + lo, hi - lo};
        if (k > 0)
            pthread_create(&ids[k], NULL, triad_worker, &parts[k]);
    }
    triad_worker(&parts[0]);
    for (int32_t k = 1; k < t->threads; k++)
        pthread_join(ids[k], NULL);
}

static double triad_bandwidth(int32_t threads)
{
    triad_ctx t = {.n = TRIAD_BYTES / 3 / (int64_t)sizeof(float),
                   .threads = threads};
    t.a = xmalloc((size_t)t.n * sizeof(float));
    t.b = xmalloc((size_t)t.n * sizeof(float));
    t.c = xmalloc((size_t)t.n * sizeof(float));
    uint64_t s = DATA_SEED + 2;
    fill(t.b, t.n, &s);
    fill(t.c, t.n, &s);
    memset(t.a, 0, (size_t)t.n * sizeof(float));
    double sec = time_calls(triad, &t);
    volatile float sink = t.a[t.n / 2];
    (void)sink;
    free(t.a), free(t.b), free(t.c);
    return 3.0 * (double)t.n * sizeof(float) / sec;
}

/* "Bytes the factor updates must move" per step, per float of the factors
 * S (sum over variational layers of P x R floats):
 *   FUSED_PASSES = 5, issue 6's ideal, used for the headline fraction (lim%):
 *     read S once to sample the weights, then one fused pass that forms
 *     dS = g z^T on the fly (from the P-float mean gradient g and the
 *     R-float z, never stored) and reads S, reads v, writes v and writes S;
 *   STRICT_PASSES = 4, the floor when the sampling is folded into that pass
 *     too (lim4%): read S, read v, write v, write S. libibvi does this: the
 *     optimizer draws the next step's weights while S is in cache, so a
 *     fraction above 100% in lim% is real, and lim4% is the stricter test.
 * Both count 4-byte floats and ignore the mean, which a standard step
 * moves too. */
#define FUSED_PASSES 5
#define STRICT_PASSES 4

/* Issue 15 part 2: the floor of the deferred factor updates, from the
 * library's cost model (lib/optimizer.c, window_cost and window_length;
 * docs/performance.md, "Deferred factor updates"), for one sample per step
 * and momentum: floats moved per step per row of a rank-R factor,
 *   per-step path: 2R(1 + 1) + 1 + M (read and write S and V; the mean
 *                  read and theta written by the draw ahead),
 *   window of B:   2R(1 + 1) / B + M(4 + 2) + (B - 1) M / 2 + 1,
 * with B the least-cost window whose memory (3 B M (P + R) floats per
 * factor, plus the noise drawn ahead) stays within the parameter floats.
 * The window's flush also does 8 P R M multiply-adds per step (the four
 * rank-BM products), the per-step path about 7 P R flops of element-wise
 * work. */
#define MODEL_M 1

static double model_floats(int32_t width, const variant *v, int32_t B)
{
    int32_t in[3], out[3];
    layer_dims(width, in, out);
    const int32_t rank[3] = {v->rank_first, 0, v->rank_last};
    double f = 0.0;
    for (int i = 0; i < 3; i++) {
        if (!rank[i])
            continue;
        const double P = (double)in[i] * out[i] + out[i], R = rank[i];
        f += P * (B == 0 ? 4.0 * R + 1 + MODEL_M
                         : 4.0 * R / B + 6.0 * MODEL_M +
                               (B - 1) * MODEL_M / 2.0 + 1);
    }
    return f;
}

static int32_t model_window(int32_t width, const variant *v)
{
    int32_t in[3], out[3];
    layer_dims(width, in, out);
    const int32_t rank[3] = {v->rank_first, 0, v->rank_last};
    double params = 0.0, noise = 0.0;
    for (int i = 0; i < 3; i++) {
        const double P = (double)in[i] * out[i] + out[i];
        params += P * (1 + rank[i]);
        noise += rank[i];
    }
    int32_t best = 0;
    for (int32_t B = 2; B <= 16; B++) {
        double window = B + B * MODEL_M * noise;
        for (int i = 0; i < 3; i++)
            if (rank[i])
                window += 3.0 * B * MODEL_M *
                          ((double)in[i] * out[i] + out[i] + rank[i]);
        if (window > params)
            break;
        if (model_floats(width, v, B) < model_floats(width, v, best))
            best = B;
    }
    return best;
}

/* ---- results ------------------------------------------------------------------ */

typedef struct step_result {
    int32_t width, threads, variant;
    int64_t batch;
    double step, ratio, gemm, factor_bytes, frac_fused, frac_strict;
} step_result;

/* One K of one covariance placement (K = 0: the mean network). */
typedef struct predict_result {
    int32_t variant, samples;
    double seconds, relative, floor;
} predict_result;

typedef struct memory_result {
    int32_t width, rank, threads;
    int64_t batch, data_n, steps, params, needed, baseline_kb, peak_kb;
    int64_t deferred_peak_kb; /* after the same run with the deferred
                                 factor updates (the cost model's window) */
} memory_result;

/* The names of point 6's models, in IMAGE_MODELS's order. */
static const char *const IMAGE_MODEL_NAMES[] = {"lenet5", "resnet"};
#define NIMAGE_MODELS_LISTED (int)(sizeof IMAGE_MODEL_NAMES / sizeof IMAGE_MODEL_NAMES[0])

typedef struct options {
    int quick;
    int32_t threads[MAX_LIST];
    int nthreads;
    const char *json;
    unsigned models; /* bit i: IMAGE_MODELS[i] (point 6) */
    int images_only; /* point 6 alone, no JSON */
    long profile_steps; /* > 0: only that many steps per model */
} options;

static void usage(void)
{
    fprintf(stderr, "usage: ibvi_bench [--quick] [--threads 1,2] "
                    "[--models lenet5,resnet|all|none] [--images-only | --json FILE |\n"
                    "                  --profile-steps N]\n");
    exit(2);
}

static options parse_args(int argc, char **argv)
{
    options o = {0, {1, 2}, 2, NULL, ~0u, 0, 0};
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--quick") == 0) {
            o.quick = 1;
        } else if (strcmp(argv[i], "--json") == 0 && i + 1 < argc) {
            o.json = argv[++i];
        } else if (strcmp(argv[i], "--threads") == 0 && i + 1 < argc) {
            o.nthreads = 0;
            for (char *tok = strtok(argv[++i], ","); tok; tok = strtok(NULL, ",")) {
                long t = strtol(tok, NULL, 10);
                if (t < 1 || t > MAX_LIST || o.nthreads == MAX_LIST)
                    usage();
                o.threads[o.nthreads++] = (int32_t)t;
            }
            if (o.nthreads == 0)
                usage();
        } else if (strcmp(argv[i], "--images-only") == 0) {
            o.images_only = 1;
        } else if (strcmp(argv[i], "--profile-steps") == 0 && i + 1 < argc) {
            o.profile_steps = strtol(argv[++i], NULL, 10);
            if (o.profile_steps < 1)
                usage();
        } else if (strcmp(argv[i], "--models") == 0 && i + 1 < argc) {
            o.models = 0;
            for (char *tok = strtok(argv[++i], ","); tok; tok = strtok(NULL, ",")) {
                int found = strcmp(tok, "none") == 0;
                if (strcmp(tok, "all") == 0)
                    o.models = ~0u, found = 1;
                for (int m = 0; m < NIMAGE_MODELS_LISTED; m++)
                    if (strcmp(tok, IMAGE_MODEL_NAMES[m]) == 0)
                        o.models |= 1u << m, found = 1;
                if (!found)
                    usage();
            }
        } else {
            usage();
        }
    }
    if ((o.images_only || o.profile_steps) && o.json)
        usage(); /* the JSON's other keys would be missing */
    return o;
}

/* ---- point 4: memory (run first, before anything large is allocated) ----- */

static int64_t maxrss_kb(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (int64_t)ru.ru_maxrss;
}

static memory_result measure_memory(int32_t threads)
{
    memory_result m = {.width = 1024, .rank = 10, .threads = threads,
                       .batch = 128, .data_n = 8192, .steps = 20};
    m.baseline_kb = maxrss_kb();
    dataset d = make_data(m.data_n);
    step_ctx c;
    make_trainer(&c, m.width, &VARIANTS[V_R10], threads, m.batch, &d);
    for (int64_t i = 0; i < m.steps; i++)
        one_step(&c);
    m.peak_kb = maxrss_kb();
    m.params = ibvi_net_param_count(c.net);
    m.needed = model_bytes(c.net, m.width, m.batch, &d);
    free_trainer(&c);
    /* The peak is the process's: the deferred run's window comes on top of
     * what the first run left mapped, so this is an upper bound. */
    make_trainer(&c, m.width, &VARIANTS[V_R10_DEFERRED], threads, m.batch, &d);
    for (int64_t i = 0; i < m.steps; i++)
        one_step(&c);
    m.deferred_peak_kb = maxrss_kb();
    free_trainer(&c);
    free_data(&d);
    return m;
}

/* ---- point 3: predictive averaging ------------------------------------------ */

#define PREDICT_INPUTS 10000
#define PREDICT_WIDTH 256
#define PREDICT_BATCH 256 /* ibvi_predictor's default chunk of inputs */
#define MAX_PREDICT 10    /* 2 placements x (mean network + 4 K) */

typedef struct predict_ctx {
    ibvi_predictor *pred;
    const dataset *data;
    float *probs;
} predict_ctx;

static void predict_all(void *p)
{
    predict_ctx *c = p;
    check(ibvi_predictor_run(c->pred, c->data->x, c->data->n, c->probs, NULL,
                             NULL, NULL),
          "ibvi_predictor_run");
}

static double time_predictor(ibvi_net *net, int32_t samples, int mean,
                             const dataset *d, float *probs)
{
    predict_ctx c = {NULL, d, probs};
    check(ibvi_predictor_create(&c.pred, net, samples, NET_SEED + 7),
          "ibvi_predictor_create");
    if (mean)
        check(ibvi_predictor_set_mean_network(c.pred, 1), "set_mean_network");
    double t = time_calls(predict_all, &c);
    ibvi_predictor_free(c.pred);
    return t;
}

/* Multiply-adds of the dense layers' GEMMs for one chunk of `rows` inputs
 * with K samples (K = 0: the mean network), on the path lib/predictor.c
 * takes. Rows stay shared until the first variational layer, which runs
 * the low-rank identity (R + 1 passes, the mixing of R + 1 projections for
 * K samples, and the rearrangement of P x (R + 1) floats once per run) or
 * K materialised samples (K passes, and K x P x R to sample once per run);
 * later layers run K passes (variational ones materialised). `share` =
 * 1 / chunks: the per-run work spread over the chunks. The choice mirrors
 * the predictor's rule (identity_macs, materialise_macs: keep the two in
 * sync), which counts a pass narrower than NARROW outputs as NARROW wide;
 * the multiply-adds returned are the real ones. */
#define NARROW 32

static double narrow(double width) { return width > NARROW ? width : NARROW; }

static double chunk_macs(int32_t width, const variant *v, int32_t K,
                         int64_t rows, double share)
{
    int32_t in[3], out[3];
    const int32_t rank[3] = {v->rank_first, 0, v->rank_last};
    layer_dims(width, in, out);
    double macs = 0.0;
    int shared = 1;
    for (int i = 0; i < 3; i++) {
        const double pass = (double)rows * in[i] * out[i];
        const double P = (double)in[i] * out[i] + out[i], R = rank[i];
        if (K == 0 || rank[i] == 0) {
            macs += shared ? pass : K * pass;
            continue;
        }
        const double materialise = K * pass + share * K * P * R;
        if (shared) {
            const double mix = (double)K * rows * out[i] * (R + 1),
                         prepare = share * P * (R + 1);
            const double identity = pass * (R + 1) + mix + prepare;
            /* The rule's costs: narrow passes counted NARROW wide. */
            const double cost_identity =
                (double)rows * in[i] * narrow(out[i] * (R + 1)) + mix + prepare;
            const double cost_materialise =
                K * (double)rows * in[i] * narrow(out[i]) + share * K * P * R;
            macs += cost_identity < cost_materialise ? identity : materialise;
            shared = 0;
        } else {
            macs += materialise;
        }
    }
    return macs;
}

/* The flop floor of K samples relative to the mean network: multiply-adds
 * of the GEMMs on the predictor's path, summed over the chunks of n inputs
 * (bias, activations and softmax are not counted). */
static double floor_ratio(int32_t width, const variant *v, int32_t K, int64_t n)
{
    const double share = 1.0 / (double)((n + PREDICT_BATCH - 1) / PREDICT_BATCH);
    double sampled = 0.0, mean = 0.0;
    for (int64_t start = 0; start < n; start += PREDICT_BATCH) {
        const int64_t rows = n - start < PREDICT_BATCH ? n - start : PREDICT_BATCH;
        sampled += chunk_macs(width, v, K, rows, share);
        mean += chunk_macs(width, v, 0, rows, share);
    }
    return sampled / mean;
}

/* For each placement (r10 first+last, r10 last only): the mean network,
 * then K = 1, 8, 32, 128, each at every thread count of the list (the same
 * predictor, the counts one after the other, so a change in the machine's
 * load hits them alike): out[t] holds thread count t's results. Returns
 * the number of results per count (<= MAX_PREDICT). */
static int measure_prediction(const int32_t *threads, int nthreads,
                              predict_result (*out)[MAX_PREDICT])
{
    static const int32_t K[] = {1, 8, 32, 128};
    static const int placements[] = {V_R10, V_R10_LAST};
    dataset d = make_data(PREDICT_INPUTS);
    float *probs = xmalloc((size_t)d.n * CLASSES * sizeof(float));
    int n = 0;
    for (int p = 0; p < 2; p++) {
        const int vi = placements[p];
        ibvi_net *net = make_net(PREDICT_WIDTH, &VARIANTS[vi], threads[0]);
        const int first = n;
        for (int t = 0; t < nthreads; t++) {
            check(ibvi_net_set_threads(net, threads[t]), "set_threads");
            out[t][n] = (predict_result){
                vi, 0, time_predictor(net, 1, 1, &d, probs), 1.0, 1.0};
        }
        n++;
        for (int i = 0; i < (int)(sizeof K / sizeof K[0]); i++, n++)
            for (int t = 0; t < nthreads; t++) {
                check(ibvi_net_set_threads(net, threads[t]), "set_threads");
                out[t][n] = (predict_result){
                    vi, K[i], time_predictor(net, K[i], 0, &d, probs), 0.0,
                    floor_ratio(PREDICT_WIDTH, &VARIANTS[vi], K[i], d.n)};
            }
        /* The mean network again, after the others: the min of the two
         * guards the ratios against a noisy first measurement. */
        for (int t = 0; t < nthreads; t++) {
            check(ibvi_net_set_threads(net, threads[t]), "set_threads");
            const double again = time_predictor(net, 1, 1, &d, probs);
            if (again < out[t][first].seconds)
                out[t][first].seconds = again;
            for (int i = first + 1; i < n; i++)
                out[t][i].relative = out[t][i].seconds / out[t][first].seconds;
        }
        ibvi_net_free(net);
        fprintf(stderr, ".");
    }
    fprintf(stderr, "\n");
    free(probs);
    free_data(&d);
    return n;
}

static void print_prediction(int32_t threads, const predict_result *r, int n)
{
    printf("\n3. Predictive averaging, %d inputs, W=%d, %d thread%s; x det = "
           "time / the mean network's;\n   floor x = multiply-adds of the GEMMs "
           "on the predictor's path / the mean network's\n",
           PREDICT_INPUTS, PREDICT_WIDTH, threads, threads > 1 ? "s" : "");
    printf("   %-20s %5s %10s %8s %8s\n", "network", "K", "ms", "x det",
           "floor x");
    for (int i = 0; i < n; i++) {
        char k[8];
        if (r[i].samples == 0)
            snprintf(k, sizeof k, "mean");
        else
            snprintf(k, sizeof k, "%d", r[i].samples);
        printf("   %-20s %5s %10.3f %8.2f %8.2f\n", VARIANTS[r[i].variant].name,
               k, 1e3 * r[i].seconds, r[i].relative, r[i].floor);
    }
}

/* Each further thread count's speed-up over the first (time at the first
 * / time at this one), next to the mean network's of the same placement:
 * the mean network is a standard network's pass, GEMMs and bias/ReLU
 * passes only, so its speed-up is what the GEMMs allow. */
static void print_prediction_speedups(const int32_t *threads, int nthreads,
                                      predict_result (*r)[MAX_PREDICT], int n)
{
    for (int t = 1; t < nthreads; t++) {
        printf("\n   Prediction speed-up, %d threads over %d (the counts timed "
               "one after the other on the same predictor):\n",
               threads[t], threads[0]);
        printf("   %-20s %5s %10s %10s %8s %12s\n", "network", "K", "ms (first)",
               "ms", "speed-up", "mean net's");
        double mean_speedup = 1.0;
        for (int i = 0; i < n; i++) {
            const double speedup = r[0][i].seconds / r[t][i].seconds;
            char k[8];
            if (r[t][i].samples == 0) {
                snprintf(k, sizeof k, "mean");
                mean_speedup = speedup;
            } else {
                snprintf(k, sizeof k, "%d", r[t][i].samples);
            }
            printf("   %-20s %5s %10.3f %10.3f %8.2f %12.2f\n",
                   VARIANTS[r[t][i].variant].name, k, 1e3 * r[0][i].seconds,
                   1e3 * r[t][i].seconds, speedup, mean_speedup);
        }
    }
}

static void write_prediction_json(FILE *f, int32_t threads,
                                  const predict_result *r, int n)
{
    fprintf(f, "  \"prediction\": {\"inputs\": %d, \"width\": %d, "
               "\"threads\": %d, \"batch\": %d,\n"
               "    \"floor_definition\": \"multiply-adds of the dense layers' "
               "GEMMs on the predictor's path relative to the mean network's "
               "(bias, activations, softmax not counted)\",\n"
               "    \"placements\": [\n",
            PREDICT_INPUTS, PREDICT_WIDTH, threads, PREDICT_BATCH);
    for (int i = 0; i < n; i++) {
        const variant *v = &VARIANTS[r[i].variant];
        if (r[i].samples == 0)
            fprintf(f, "      {\"network\": \"%s\", \"rank_first\": %d, "
                       "\"rank_last\": %d, \"deterministic_s\": %.6g, "
                       "\"samples\": [\n",
                    v->name, v->rank_first, v->rank_last, r[i].seconds);
        const int last = i + 1 == n || r[i + 1].samples == 0;
        if (r[i].samples > 0)
            fprintf(f, "        {\"K\": %d, \"seconds\": %.6g, "
                       "\"relative\": %.6g, \"floor_relative\": %.6g}%s\n",
                    r[i].samples, r[i].seconds, r[i].relative, r[i].floor,
                    last ? "" : ",");
        if (last)
            fprintf(f, "      ]}%s\n", i + 1 == n ? "" : ",");
    }
    fprintf(f, "  ]},\n");
}

/* ---- point 6: image networks ------------------------------------------------
 * Convolutional models built through the public API (ibvi_net_create_image,
 * ibvi_net_add_conv2d, ...), each at batch IMAGE_BATCH for every --threads
 * entry:
 *   - the standard training step and the IBVI step (rank IMAGE_RANK on the
 *     first conv and the last dense layer), and their ratio;
 *   - the GEMM limit: BLIS sgemm time of exactly the step's GEMMs, called as
 *     lib/conv2d.c and lib/dense.c call them (see image_gemms), and the step
 *     as a fraction of it (GEMM time / step time);
 *   - a floor for im2col's share: a memcpy of the column matrix im2col
 *     writes, as often as the step runs im2col (forward and dW of every
 *     conv, per chunk), over the step time. im2col itself copies runs of
 *     w_out floats and zero-fills the padding, so it costs more than this
 *     copy; the library's im2col is not reachable from outside;
 *   - K = IMAGE_K prediction (ibvi_predictor_run) as a multiple of one
 *     deterministic forward (the mean network), next to its flop floor;
 *   - with one thread, the step and GEMM minima again in process CPU time
 *     (last_cpu_seconds), which on a shared machine leaves out preemption. */

#define IMAGE_BATCH 128
#define IMAGE_RANK 10
#define IMAGE_K 32
#define IMAGE_DATA 1024 /* training examples, cycled */
#define MAX_SPECS 40
#define MAX_IMAGE (4 * MAX_LIST) /* models x thread counts */
/* lib/conv2d.c's CHUNK_BUDGET: floats of X_col + Y_col per chunk. The
 * chunk of nb examples, nb = budget / (HW * (K + c_out)), fixes the GEMM
 * shapes; keep the two in sync. */
#define CONV_CHUNK_BUDGET ((int64_t)1 << 18)

enum { S_CONV, S_RELU, S_MAXPOOL, S_DENSE, S_GN, S_RES, S_GAP };

/* One layer: conv (a = out channels, b = kernel, c = stride, d = padding),
 * maxpool (b = kernel, c = stride), dense (a = outputs), group norm
 * (a = groups), residual (a = from, b = projection stride), global average
 * pool, relu. */
typedef struct spec {
    int kind;
    int32_t a, b, c, d;
} spec;

typedef struct image_model {
    const char *name;
    int32_t channels, height, width;
    int64_t predict, predict_quick; /* inputs for point 6's prediction */
    int count;
    spec layers[MAX_SPECS];
} image_model;

static const image_model IMAGE_MODELS[] = {
    {"lenet5", 1, 28, 28, 1024, 256, 11,
     {{S_CONV, 6, 5, 1, 2}, {S_RELU, 0, 0, 0, 0}, {S_MAXPOOL, 0, 2, 2, 0},
      {S_CONV, 16, 5, 1, 0}, {S_RELU, 0, 0, 0, 0}, {S_MAXPOOL, 0, 2, 2, 0},
      {S_DENSE, 120, 0, 0, 0}, {S_RELU, 0, 0, 0, 0},
      {S_DENSE, 84, 0, 0, 0}, {S_RELU, 0, 0, 0, 0},
      {S_DENSE, CLASSES, 0, 0, 0}}},
    /* stem conv-GN-relu, three stages of one basic block (16, 32, 64
     * channels; stages 2 and 3 stride 2 with a projection residual):
     * conv3x3-GN-relu-conv3x3-GN-residual-relu, global average pool,
     * dense 10, on 3x32x32. */
    {"resnet", 3, 32, 32, 128, 32, 26,
     {{S_CONV, 16, 3, 1, 1}, {S_GN, 4, 0, 0, 0}, {S_RELU, 0, 0, 0, 0},
      {S_CONV, 16, 3, 1, 1}, {S_GN, 4, 0, 0, 0}, {S_RELU, 0, 0, 0, 0},
      {S_CONV, 16, 3, 1, 1}, {S_GN, 4, 0, 0, 0}, {S_RES, 2, 0, 0, 0},
      {S_RELU, 0, 0, 0, 0},
      {S_CONV, 32, 3, 2, 1}, {S_GN, 4, 0, 0, 0}, {S_RELU, 0, 0, 0, 0},
      {S_CONV, 32, 3, 1, 1}, {S_GN, 4, 0, 0, 0}, {S_RES, 9, 2, 0, 0},
      {S_RELU, 0, 0, 0, 0},
      {S_CONV, 64, 3, 2, 1}, {S_GN, 4, 0, 0, 0}, {S_RELU, 0, 0, 0, 0},
      {S_CONV, 64, 3, 1, 1}, {S_GN, 4, 0, 0, 0}, {S_RES, 16, 2, 0, 0},
      {S_RELU, 0, 0, 0, 0},
      {S_GAP, 0, 0, 0, 0}, {S_DENSE, CLASSES, 0, 0, 0}}},
};
#define NIMAGE_MODELS (int)(sizeof IMAGE_MODELS / sizeof IMAGE_MODELS[0])
_Static_assert(NIMAGE_MODELS == NIMAGE_MODELS_LISTED,
               "IMAGE_MODEL_NAMES lists IMAGE_MODELS's names");

/* Per layer: its input shape (c, h, w) and, for conv/dense, its GEMM
 * geometry. Derived here and checked against ibvi_layer_output_shape. */
typedef struct layer_geom {
    int kind;
    int64_t c, h, w;          /* input shape */
    int64_t oc, oh, ow;       /* output shape */
    int64_t patch, positions, chunk; /* conv: K, HW, examples per chunk */
    int64_t in, out;          /* dense: features */
    int64_t params;
    int dx; /* the backward forms the input gradient (lib/passes.c) */
} layer_geom;

static int model_geometry(const image_model *m, layer_geom *g)
{
    int64_t c = m->channels, h = m->height, w = m->width;
    for (int i = 0; i < m->count; i++) {
        const spec *s = &m->layers[i];
        /* passes.c gives every layer but the first an input gradient; a
         * projection also forms its skip's (residual.c), unless from = -1. */
        layer_geom l = {.kind = s->kind, .c = c, .h = h, .w = w,
                        .dx = s->kind == S_RES ? s->a >= 0 : i > 0};
        switch (s->kind) {
        case S_CONV:
            l.oc = s->a;
            l.oh = (h + 2 * s->d - s->b) / s->c + 1;
            l.ow = (w + 2 * s->d - s->b) / s->c + 1;
            l.patch = c * s->b * s->b;
            l.positions = l.oh * l.ow;
            {
                const int64_t per = l.positions * (l.patch + l.oc);
                l.chunk = per >= CONV_CHUNK_BUDGET ? 1 : CONV_CHUNK_BUDGET / per;
            }
            l.params = l.oc * l.patch + l.oc;
            break;
        case S_MAXPOOL:
            l.oc = c;
            l.oh = (h - s->b) / s->c + 1;
            l.ow = (w - s->b) / s->c + 1;
            break;
        case S_DENSE:
            l.in = c * h * w;
            l.out = s->a;
            l.oc = s->a, l.oh = 1, l.ow = 1;
            l.params = l.out * l.in + l.out;
            break;
        case S_GN:
            l.oc = c, l.oh = h, l.ow = w;
            l.params = 2 * c;
            break;
        case S_GAP:
            l.oc = c, l.oh = 1, l.ow = 1;
            break;
        case S_RES:
            l.oc = c, l.oh = h, l.ow = w;
            if (s->b >= 1) {
                /* lib/residual.c: conv2d's math, 1x1 kernel, stride b, no
                 * padding, from's channels to this input's, with bias. */
                const int64_t sc = g[s->a].oc;
                l.patch = sc;
                l.positions = h * w;
                const int64_t per = l.positions * (l.patch + l.oc);
                l.chunk = per >= CONV_CHUNK_BUDGET ? 1 : CONV_CHUNK_BUDGET / per;
                l.params = l.oc * sc + l.oc;
            }
            break;
        default: /* relu */
            l.oc = c, l.oh = h, l.ow = w;
            break;
        }
        g[i] = l;
        c = l.oc, h = l.oh, w = l.ow;
    }
    return m->count;
}

/* The first conv and the last dense layer get `rank`. */
static ibvi_net *make_image_net(const image_model *m, int32_t rank,
                                int32_t threads)
{
    ibvi_net *net;
    check(ibvi_net_create_image(&net, m->channels, m->height, m->width, NULL),
          "ibvi_net_create_image");
    int first_conv = -1, last_dense = -1;
    for (int i = 0; i < m->count; i++) {
        if (m->layers[i].kind == S_CONV && first_conv < 0)
            first_conv = i;
        if (m->layers[i].kind == S_DENSE)
            last_dense = i;
    }
    for (int i = 0; i < m->count; i++) {
        const spec *s = &m->layers[i];
        const int32_t r = i == first_conv || i == last_dense ? rank : 0;
        switch (s->kind) {
        case S_CONV:
            check(ibvi_net_add_conv2d(net, s->a, s->b, s->c, s->d, r),
                  "ibvi_net_add_conv2d");
            break;
        case S_MAXPOOL:
            check(ibvi_net_add_maxpool(net, s->b, s->c), "ibvi_net_add_maxpool");
            break;
        case S_DENSE:
            check(ibvi_net_add_dense(net, s->a, r), "ibvi_net_add_dense");
            break;
        case S_GN:
            check(ibvi_net_add_groupnorm(net, s->a, 1e-5f),
                  "ibvi_net_add_groupnorm");
            break;
        case S_RES:
            check(ibvi_net_add_residual(net, s->a, s->b),
                  "ibvi_net_add_residual");
            break;
        case S_GAP:
            check(ibvi_net_add_global_avgpool(net),
                  "ibvi_net_add_global_avgpool");
            break;
        default:
            check(ibvi_net_add_activation(net, IBVI_ACT_RELU), "add_activation");
            break;
        }
    }
    check(ibvi_net_init(net, IBVI_PARAM_MUP, NET_SEED), "ibvi_net_init");
    check(ibvi_net_set_threads(net, threads), "ibvi_net_set_threads");
    /* The GEMM shapes below come from model_geometry: check its shapes. */
    layer_geom g[MAX_SPECS];
    model_geometry(m, g);
    for (int i = 0; i < m->count; i++) {
        ibvi_layer *layer;
        int32_t c, h, w;
        check(ibvi_net_layer(net, i, &layer), "ibvi_net_layer");
        check(ibvi_layer_output_shape(layer, &c, &h, &w), "output_shape");
        if (c != g[i].oc || h != g[i].oh || w != g[i].ow ||
            ibvi_layer_param_count(layer) != g[i].params) {
            fprintf(stderr, "ibvi_bench: %s layer %d: shape %dx%dx%d, "
                            "expected %lldx%lldx%lld\n", m->name, i, c, h, w,
                    (long long)g[i].oc, (long long)g[i].oh, (long long)g[i].ow);
            exit(1);
        }
    }
    return net;
}

/* A convolution's GEMMs: conv2d, or a residual's projection. */
static int conv_like(const layer_geom *l)
{
    return l->kind == S_CONV || (l->kind == S_RES && l->patch > 0);
}

/* One GEMM call of the step, with its operands. */
typedef struct gemm_call {
    int ta, tb;
    int64_t m, n, k, lda, ldb, ldc;
    const float *a, *b;
    float *c;
    float beta;
} gemm_call;

#define MAX_CALLS 4096

typedef struct image_gemm_ctx {
    int32_t threads;
    int ncalls, ncopies;
    gemm_call *calls;
    /* The im2col-equivalent copies: col[i] <- src[i], bytes[i]. */
    float **copy_dst, **copy_src;
    int64_t *copy_floats;
    float *bufs[8 * MAX_SPECS];
    int nbufs;
} image_gemm_ctx;

static float *ctx_buffer(image_gemm_ctx *g, int64_t floats, uint64_t *s)
{
    float *p = xmalloc((size_t)floats * sizeof(float));
    fill(p, floats, s);
    g->bufs[g->nbufs++] = p;
    return p;
}

static void add_call(image_gemm_ctx *g, gemm_call c)
{
    if (g->ncalls == MAX_CALLS) {
        fprintf(stderr, "ibvi_bench: too many GEMM calls\n");
        exit(1);
    }
    g->calls[g->ncalls++] = c;
}

static void add_copy(image_gemm_ctx *g, float *dst, float *src, int64_t n)
{
    g->copy_dst[g->ncopies] = dst;
    g->copy_src[g->ncopies] = src;
    g->copy_floats[g->ncopies++] = n;
}

/* The GEMMs of one standard training step on `rows` examples, in the
 * library's order and with its arguments:
 *   conv (lib/conv2d.c), per chunk of nb examples, ld = nb * HW:
 *     forward  Y_col (c_out x ld) = W (c_out x K) X_col (K x ld)
 *     backward dW (c_out x K) += dY_col (c_out x ld) X_col^T   (beta 0 on
 *              the first chunk, 1 after)
 *              dX_col (K x ld) = W^T dY_col              (not layer 0)
 *   dense (lib/dense.c): Y = X W^T; dW = dY^T X; dX = dY W (not layer 0).
 *   a residual's projection (lib/residual.c) runs conv2d's GEMMs with a
 *   1x1 kernel: K = the skip's channels, HW = the output's positions.
 * Each chunk's im2col (forward, and again before dW) is a copy of K x ld
 * floats into X_col. */
static void image_gemms_build(image_gemm_ctx *g, const image_model *m,
                              int64_t rows, int32_t threads)
{
    memset(g, 0, sizeof *g);
    g->threads = threads;
    g->calls = xmalloc(MAX_CALLS * sizeof *g->calls);
    g->copy_dst = xmalloc(MAX_CALLS * sizeof *g->copy_dst);
    g->copy_src = xmalloc(MAX_CALLS * sizeof *g->copy_src);
    g->copy_floats = xmalloc(MAX_CALLS * sizeof *g->copy_floats);
    layer_geom geo[MAX_SPECS];
    const int n = model_geometry(m, geo);
    uint64_t s = DATA_SEED + 3;
    /* Per weight layer: W, dW, and the work buffers. */
    float *w[MAX_SPECS] = {0}, *dw[MAX_SPECS] = {0}, *col[MAX_SPECS] = {0},
          *ycol[MAX_SPECS] = {0}, *src[MAX_SPECS] = {0}, *x[MAX_SPECS] = {0},
          *y[MAX_SPECS] = {0}, *dx[MAX_SPECS] = {0};
    for (int i = 0; i < n; i++) {
        const layer_geom *l = &geo[i];
        if (conv_like(l)) {
            const int64_t nb = rows < l->chunk ? rows : l->chunk;
            w[i] = ctx_buffer(g, l->oc * l->patch, &s);
            dw[i] = ctx_buffer(g, l->oc * l->patch, &s);
            col[i] = ctx_buffer(g, l->patch * nb * l->positions, &s);
            src[i] = ctx_buffer(g, l->patch * nb * l->positions, &s);
            ycol[i] = ctx_buffer(g, l->oc * nb * l->positions, &s);
        } else if (l->kind == S_DENSE) {
            w[i] = ctx_buffer(g, l->out * l->in, &s);
            dw[i] = ctx_buffer(g, l->out * l->in, &s);
            x[i] = ctx_buffer(g, rows * l->in, &s);
            y[i] = ctx_buffer(g, rows * l->out, &s); /* also dY */
            dx[i] = ctx_buffer(g, rows * l->in, &s);
        }
    }
    for (int i = 0; i < n; i++) {
        const layer_geom *l = &geo[i];
        if (conv_like(l))
            for (int64_t r0 = 0; r0 < rows; r0 += l->chunk) {
                const int64_t nb = rows - r0 < l->chunk ? rows - r0 : l->chunk;
                const int64_t ld = nb * l->positions;
                add_copy(g, col[i], src[i], l->patch * ld);
                add_call(g, (gemm_call){0, 0, l->oc, ld, l->patch, l->patch,
                                        ld, ld, w[i], col[i], ycol[i], 0.0f});
            }
        else if (l->kind == S_DENSE)
            add_call(g, (gemm_call){0, 1, rows, l->out, l->in, l->in, l->in,
                                    l->out, x[i], w[i], y[i], 0.0f});
    }
    for (int i = n - 1; i >= 0; i--) {
        const layer_geom *l = &geo[i];
        if (conv_like(l))
            for (int64_t r0 = 0; r0 < rows; r0 += l->chunk) {
                const int64_t nb = rows - r0 < l->chunk ? rows - r0 : l->chunk;
                const int64_t ld = nb * l->positions;
                add_copy(g, col[i], src[i], l->patch * ld);
                add_call(g, (gemm_call){0, 1, l->oc, l->patch, ld, ld, ld,
                                        l->patch, ycol[i], col[i], dw[i],
                                        r0 == 0 ? 0.0f : 1.0f});
                if (l->dx)
                    add_call(g, (gemm_call){1, 0, l->patch, ld, l->oc,
                                            l->patch, ld, ld, w[i], ycol[i],
                                            col[i], 0.0f});
            }
        else if (l->kind == S_DENSE) {
            add_call(g, (gemm_call){1, 0, l->out, l->in, rows, l->out, l->in,
                                    l->in, y[i], x[i], dw[i], 0.0f});
            if (l->dx)
                add_call(g, (gemm_call){0, 0, rows, l->in, l->out, l->out,
                                        l->in, l->in, y[i], w[i], dx[i],
                                        0.0f});
        }
    }
}

static void image_gemms_free(image_gemm_ctx *g)
{
    for (int b = 0; b < g->nbufs; b++)
        free(g->bufs[b]);
    free(g->calls), free(g->copy_dst), free(g->copy_src), free(g->copy_floats);
}

static void image_gemms_run(void *p)
{
    image_gemm_ctx *g = p;
    for (int i = 0; i < g->ncalls; i++) {
        const gemm_call *c = &g->calls[i];
        sgemm(g->threads, c->ta, c->tb, c->m, c->n, c->k, c->a, c->lda, c->b,
              c->ldb, c->beta, c->c, c->ldc);
    }
}

static void image_copies_run(void *p)
{
    image_gemm_ctx *g = p;
    for (int i = 0; i < g->ncopies; i++)
        memcpy(g->copy_dst[i], g->copy_src[i],
               (size_t)g->copy_floats[i] * sizeof(float));
}

/* Multiply-adds of the model's conv and dense GEMMs per example. */
static double model_macs(const image_model *m)
{
    layer_geom g[MAX_SPECS];
    const int n = model_geometry(m, g);
    double macs = 0.0;
    for (int i = 0; i < n; i++)
        if (conv_like(&g[i]))
            macs += (double)g[i].oc * g[i].patch * g[i].positions;
        else if (g[i].kind == S_DENSE)
            macs += (double)g[i].in * g[i].out;
    return macs;
}

/* The flop floor of K samples relative to the mean network. The first
 * conv is variational and lib/predictor.c has no low-rank identity for
 * convolutions, so every layer runs K passes of its own weights, and each
 * variational layer samples K x P x R once per run: K + K sum(P R) / (n x
 * per-example multiply-adds). */
static double image_floor(const image_model *m, int32_t K, int64_t n)
{
    layer_geom g[MAX_SPECS];
    const int count = model_geometry(m, g);
    int first_conv = -1, last_dense = -1;
    for (int i = 0; i < count; i++) {
        if (g[i].kind == S_CONV && first_conv < 0)
            first_conv = i;
        if (g[i].kind == S_DENSE)
            last_dense = i;
    }
    double pr = 0.0;
    if (first_conv >= 0)
        pr += (double)g[first_conv].params * IMAGE_RANK;
    if (last_dense >= 0)
        pr += (double)g[last_dense].params * IMAGE_RANK;
    return K + K * pr / ((double)n * model_macs(m));
}

typedef struct image_result {
    int model;
    int32_t threads;
    int64_t batch, calls;
    double standard, ibvi, gemm, copy, det, sampled, floor;
    double cpu_standard, cpu_ibvi, cpu_gemm; /* process CPU time */
    int64_t predict_n;
} image_result;

/* Rounds of (GEMMs, standard step, IBVI step, im2col copies), keeping each
 * one's minimum: on a shared machine the load drifts over seconds, and
 * interleaving puts each ratio's two sides under the same load. */
#define IMAGE_ROUNDS 8
#define IMAGE_ROUNDS_QUICK 2

static double keep_min(double best, double t) { return t < best ? t : best; }

static int run_images(const options *o, image_result *out)
{
    int n = 0;
    for (int mi = 0; mi < NIMAGE_MODELS; mi++) {
        if (!(o->models & (1u << mi)))
            continue;
        const image_model *m = &IMAGE_MODELS[mi];
        const int64_t dim = (int64_t)m->channels * m->height * m->width;
        dataset d = make_data_dim(IMAGE_DATA, dim);
        const int64_t pn = o->quick ? m->predict_quick : m->predict;
        dataset pd = make_data_dim(pn, dim);
        float *probs = xmalloc((size_t)pn * CLASSES * sizeof(float));
        for (int ti = 0; ti < o->nthreads; ti++) {
            const int32_t t = o->threads[ti];
            image_result r = {.model = mi, .threads = t, .batch = IMAGE_BATCH,
                              .predict_n = pn, .standard = INFINITY,
                              .ibvi = INFINITY, .gemm = INFINITY,
                              .copy = INFINITY, .det = INFINITY,
                              .cpu_standard = INFINITY, .cpu_ibvi = INFINITY,
                              .cpu_gemm = INFINITY};
            image_gemm_ctx g;
            image_gemms_build(&g, m, IMAGE_BATCH, t);
            r.calls = g.ncalls;
            step_ctx std, var;
            setup_trainer(&std, make_image_net(m, 0, t), IMAGE_BATCH, &d,
                          NULL);
            setup_trainer(&var, make_image_net(m, IMAGE_RANK, t), IMAGE_BATCH,
                          &d, NULL);
            const int rounds = o->quick ? IMAGE_ROUNDS_QUICK : IMAGE_ROUNDS;
            for (int k = 0; k < rounds; k++) {
                r.gemm = keep_min(r.gemm, time_calls(image_gemms_run, &g));
                r.cpu_gemm = keep_min(r.cpu_gemm, last_cpu_seconds);
                r.standard = keep_min(r.standard, time_calls(one_step, &std));
                r.cpu_standard = keep_min(r.cpu_standard, last_cpu_seconds);
                r.ibvi = keep_min(r.ibvi, time_calls(one_step, &var));
                r.cpu_ibvi = keep_min(r.cpu_ibvi, last_cpu_seconds);
                r.copy = keep_min(r.copy, time_calls(image_copies_run, &g));
            }
            free_trainer(&std);
            free_trainer(&var);
            image_gemms_free(&g);
            /* The mean network and the K samples, twice each (the K samples once
             * in --quick), alternating. */
            ibvi_net *net = make_image_net(m, IMAGE_RANK, t);
            r.det = time_predictor(net, 1, 1, &pd, probs);
            r.sampled = time_predictor(net, IMAGE_K, 0, &pd, probs);
            r.det = keep_min(r.det, time_predictor(net, 1, 1, &pd, probs));
            if (!o->quick)
                r.sampled = keep_min(
                    r.sampled, time_predictor(net, IMAGE_K, 0, &pd, probs));
            r.floor = image_floor(m, IMAGE_K, pn);
            ibvi_net_free(net);
            out[n++] = r;
            fprintf(stderr, ".");
        }
        free(probs);
        free_data(&pd);
        free_data(&d);
    }
    fprintf(stderr, "\n");
    return n;
}

/* --profile-steps: N standard steps of each selected model, nothing else. */
static void profile_images(const options *o)
{
    for (int mi = 0; mi < NIMAGE_MODELS; mi++) {
        if (!(o->models & (1u << mi)))
            continue;
        const image_model *m = &IMAGE_MODELS[mi];
        dataset d = make_data_dim(IMAGE_DATA,
                                  (int64_t)m->channels * m->height * m->width);
        step_ctx c;
        setup_trainer(&c, make_image_net(m, 0, o->threads[0]), IMAGE_BATCH,
                      &d, NULL);
        one_step(&c);
        const double t0 = now(), c0 = cpu_now();
        for (long k = 0; k < o->profile_steps; k++)
            one_step(&c);
        const double steps = (double)o->profile_steps;
        printf("%s: %ld standard steps, batch %d, %d thread(s): %.3f ms per "
               "step (%.3f ms process CPU time)\n", m->name,
               o->profile_steps, IMAGE_BATCH, (int)o->threads[0],
               1e3 * (now() - t0) / steps, 1e3 * (cpu_now() - c0) / steps);
        free_trainer(&c);
        free_data(&d);
    }
}

static void print_images(const image_result *r, int n)
{
    if (n == 0)
        return; /* --models none */
    printf("\n6. Image networks, batch %d, SGD momentum 0.9, muP, softmax xent;"
           " ibvi = rank %d on the first\n"
           "   conv and the last dense layer. GEMM ms = BLIS sgemm time of the"
           " step's conv (chunked im2col\n"
           "   shapes of lib/conv2d.c) and dense GEMMs; GEMM%% = GEMM ms / step"
           " ms; copy%% = a memcpy of every\n"
           "   X_col im2col writes / step ms (a floor for im2col's share);"
           " K=%d x det = ibvi_predictor_run\n"
           "   time / the mean network's, floor x = the GEMMs' multiply-adds"
           " (+ sampling) / the mean network's\n",
           IMAGE_BATCH, IMAGE_RANK, IMAGE_K);
    printf("   %-8s %3s %9s %9s %6s %8s %6s %6s %6s %6s %9s %7s %7s\n", "model",
           "thr", "std ms", "ibvi ms", "x std", "GEMM ms", "GEMM%", "ibvi%",
           "copy%", "calls", "det ms", "x det", "floor x");
    for (int i = 0; i < n; i++) {
        const image_result *s = &r[i];
        printf("   %-8s %3d %9.3f %9.3f %6.3f %8.3f %6.1f %6.1f %6.1f %6lld "
               "%9.3f %7.2f %7.2f\n",
               IMAGE_MODELS[s->model].name, s->threads, 1e3 * s->standard,
               1e3 * s->ibvi, s->ibvi / s->standard, 1e3 * s->gemm,
               100 * s->gemm / s->standard, 100 * s->gemm / s->ibvi,
               100 * s->copy / s->standard, (long long)s->calls, 1e3 * s->det,
               s->sampled / s->det, s->floor);
        if (s->threads == 1)
            printf("   %-8s %3s %9.3f %9.3f %6.3f %8.3f %6.1f %6.1f "
                   "(process CPU time, 1 thread)\n",
                   IMAGE_MODELS[s->model].name, "cpu", 1e3 * s->cpu_standard,
                   1e3 * s->cpu_ibvi, s->cpu_ibvi / s->cpu_standard,
                   1e3 * s->cpu_gemm, 100 * s->cpu_gemm / s->cpu_standard,
                   100 * s->cpu_gemm / s->cpu_ibvi);
    }
    printf("   (prediction over");
    for (int i = 0; i < n; i++)
        if (i == 0 || r[i].model != r[i - 1].model)
            printf(" %lld inputs (%s)", (long long)r[i].predict_n,
                   IMAGE_MODELS[r[i].model].name);
    printf("; targets: x std <= 1.15, GEMM%% >= 70;\n"
           "   the cpu rows: the same minima in process CPU time, which leaves "
           "out the time other jobs\n"
           "   held the core; not shown for 2+ threads, where it adds the "
           "threads' times)\n");
}

static void write_images_json(FILE *f, const image_result *r, int n)
{
    fprintf(f, "  \"image_networks\": {\"batch\": %d, \"rank\": %d, "
               "\"rank_layers\": \"first conv and last dense\", "
               "\"K\": %d,\n"
               "    \"gemm_definition\": \"BLIS sgemm time of the standard "
               "step's GEMMs: conv forward, dW and dX (not the first layer) "
               "per im2col chunk as lib/conv2d.c calls them, and the dense "
               "layers' (sup off, same threads)\",\n"
               "    \"im2col_copy_definition\": \"memcpy of the column matrix "
               "(K x nb*HW floats) once per im2col the step runs (forward and "
               "dW, per chunk): a floor, im2col itself is not timed\",\n"
               "    \"floor_definition\": \"multiply-adds of the conv and dense "
               "GEMMs for K samples plus sampling K x P x R, relative to the "
               "mean network's\",\n"
               "    \"runs\": [\n",
            IMAGE_BATCH, IMAGE_RANK, IMAGE_K);
    for (int i = 0; i < n; i++) {
        const image_result *s = &r[i];
        fprintf(f, "      {\"model\": \"%s\", \"threads\": %d, "
                   "\"standard_step_s\": %.6g, \"ibvi_step_s\": %.6g, "
                   "\"ibvi_ratio_to_standard\": %.6g, \"gemm_s\": %.6g, "
                   "\"gemm_calls\": %lld, \"gemm_fraction_standard\": %.6g, "
                   "\"gemm_fraction_ibvi\": %.6g, \"im2col_copy_s\": %.6g, "
                   "\"im2col_copy_fraction\": %.6g, \"predict_inputs\": %lld, "
                   "\"deterministic_s\": %.6g, \"sampled_s\": %.6g, "
                   "\"sampled_relative\": %.6g, \"floor_relative\": %.6g, "
                   "\"cpu_standard_step_s\": %.6g, \"cpu_ibvi_step_s\": %.6g, "
                   "\"cpu_gemm_s\": %.6g}%s\n",
                IMAGE_MODELS[s->model].name, s->threads, s->standard, s->ibvi,
                s->ibvi / s->standard, s->gemm, (long long)s->calls,
                s->gemm / s->standard, s->gemm / s->ibvi, s->copy,
                s->copy / s->standard, (long long)s->predict_n, s->det,
                s->sampled, s->sampled / s->det, s->floor, s->cpu_standard,
                s->cpu_ibvi, s->cpu_gemm, i + 1 < n ? "," : "");
    }
    fprintf(f, "  ]},\n");
}

/* ---- output ---------------------------------------------------------------------- */

static void print_header(const options *o, const char *arch)
{
    printf("libibvi %s benchmark%s\n", ibvi_version_string(),
           o->quick ? " (--quick subset)" : "");
    printf("BLIS %s, sub-configuration '%s', BLIS global default threads %ld"
           " (-1: unset);\n"
           "libibvi passes its own thread count (below) to every call, sup off.\n"
           "Kernel: %s\n",
           bli_info_get_version_str(), arch, (long)bli_thread_get_num_threads(),
           ibvi_kernel_description());
    printf("Machine: %ld online cores, may be shared with other jobs: "
           "figures can be noisy (min of %d repeats of the mean, ~%.1f s per "
           "configuration).\n\n",
           sysconf(_SC_NPROCESSORS_ONLN), REPEATS, TARGET_SECONDS);
}

static void print_steps(const step_result *r, int n)
{
    printf("1-2. Training step (784-W-W-10, SGD momentum 0.9, muP, softmax xent)\n"
           "     limit = BLIS sgemm time of the step's GEMMs [+ factor bytes / "
           "triad bandwidth];\n     lim%% uses the fused ideal (%d x P x R x 4 "
           "bytes), lim4%% the strict floor (%d x P x R x 4).\n",
           FUSED_PASSES, STRICT_PASSES);
    printf("%5s %4s %3s  %-20s %10s %7s %10s %6s %6s\n", "W", "N", "thr",
           "network", "step ms", "x std", "GEMM ms", "lim%", "lim4%");
    for (int i = 0; i < n; i++) {
        const step_result *s = &r[i];
        printf("%5d %4lld %3d  %-20s %10.3f %7.3f %10.3f %6.1f %6.1f\n",
               s->width, (long long)s->batch, s->threads,
               VARIANTS[s->variant].name, 1e3 * s->step, s->ratio,
               1e3 * s->gemm, 100 * s->frac_fused, 100 * s->frac_strict);
    }
}

/* Issue 15's target, as ratios within this run: for each width, batch and
 * network measured with 1 and 2 threads, the 2-thread speed-up of the step
 * (1-thread time / 2-thread time) next to the speed-up of its limit (the
 * GEMMs plus the strict 4-pass floor of the factor, at each thread count's
 * GEMM time and triad bandwidth): what two threads could give at best. */
static void print_speedups(const step_result *r, int n)
{
    int header = 0;
    for (int i = 0; i < n; i++) {
        const step_result *a = &r[i];
        if (a->threads != 1)
            continue;
        for (int j = 0; j < n; j++) {
            const step_result *b = &r[j];
            if (b->threads != 2 || b->width != a->width ||
                b->batch != a->batch || b->variant != a->variant)
                continue;
            if (!header) {
                printf("     2-thread speed-up (1-thread step / 2-thread step; "
                       "limit: the same for the limits above)\n");
                printf("%5s %4s  %-20s %10s %10s %8s %8s %9s\n", "W", "N",
                       "network", "1 thr ms", "2 thr ms", "speedup",
                       "limit", "2thr xstd");
                header = 1;
            }
            const double limit1 = a->frac_strict * a->step;
            const double limit2 = b->frac_strict * b->step;
            printf("%5d %4lld  %-20s %10.3f %10.3f %7.2fx %7.2fx %9.3f\n",
                   a->width, (long long)a->batch, VARIANTS[a->variant].name,
                   1e3 * a->step, 1e3 * b->step, a->step / b->step,
                   limit1 / limit2, b->ratio);
        }
    }
}

/* Issue 15 parts 2 and 3: the old strict floor of the factor (4 passes of
 * P x R floats) next to the floor the deferred updates imply (the cost
 * model's floats per step, and its multiply-adds at this run's sgemm
 * rate), and the measured steps of the per-step path and of the window,
 * as ratios to the standard step of the same run. */
static void print_deferred(const step_result *r, int n,
                           const double *bandwidth)
{
    const variant *v = &VARIANTS[V_R10_DEFERRED];
    printf("     Deferred factor updates (r10 first+last, cost model: "
           "docs/performance.md; 1 sample, momentum)\n");
    printf("%5s %4s %3s %3s %12s %12s %12s %12s %9s %9s\n", "W", "N", "thr",
           "B", "4-pass ms", "model ms", "window ms", "flops ms",
           "step xstd", "wind xstd");
    for (int i = 0; i < n; i++) {
        const step_result *a = &r[i];
        if (a->variant != V_R10)
            continue;
        for (int j = 0; j < n; j++) {
            const step_result *b = &r[j];
            if (b->variant != V_R10_DEFERRED || b->width != a->width ||
                b->batch != a->batch || b->threads != a->threads)
                continue;
            int ti = 0;
            for (int k = 0; k < MAX_LIST; k++)
                if (measured_threads[k] == a->threads)
                    ti = k;
            const int32_t B = model_window(a->width, v);
            const double bw = bandwidth[ti];
            const double strict = STRICT_PASSES * 4.0 *
                                  (double)factor_floats(a->width, v) / bw;
            const double fused = 4.0 * model_floats(a->width, v, 0) / bw;
            const double window = 4.0 * model_floats(a->width, v, B) / bw;
            const double flops = 2.0 * 8.0 * MODEL_M *
                                 (double)factor_floats(a->width, v) /
                                 (1e9 * measured_gflops[ti]);
            printf("%5d %4lld %3d %3d %12.3f %12.3f %12.3f %12.3f %9.3f "
                   "%9.3f\n", a->width, (long long)a->batch, a->threads, B,
                   1e3 * strict, 1e3 * fused, 1e3 * (B ? window : fused),
                   1e3 * flops, a->ratio, b->ratio);
        }
    }
    printf("     4-pass: the old strict floor; model: the per-step path's "
           "floats in the cost model; window: the\n     window's; flops: "
           "the flush's 8 P R M multiply-adds at this run's sgemm 1024^3 "
           "rate (a floor the\n     skinny GEMMs are far from); B = 0: the "
           "model keeps the per-step path.\n");
}

static void write_json(const options *o, const char *arch,
                       const double *bandwidth, const step_result *steps,
                       int nsteps, const predict_result *pred, int npred,
                       const image_result *img, int nimg,
                       const memory_result *m)
{
    FILE *f = fopen(o->json, "w");
    if (f == NULL) {
        perror(o->json);
        exit(1);
    }
    fprintf(f, "{\n  \"library_version\": \"%s\",\n  \"quick\": %s,\n",
            ibvi_version_string(), o->quick ? "true" : "false");
    static const char *const origins[] = {"blis", "selected", "user",
                                          "disabled", "preinitialized"};
    fprintf(f, "  \"blis\": {\"version\": \"%s\", \"sub_configuration\": \"%s\", "
               "\"global_default_threads\": %ld, \"origin\": \"%s\", "
               "\"description\": \"%s\"},\n",
            bli_info_get_version_str(), arch, (long)bli_thread_get_num_threads(),
            origins[ibvi_kernel_get_origin()], ibvi_kernel_description());
    fprintf(f, "  \"online_cores\": %ld,\n  \"machine_may_be_shared\": true,\n",
            sysconf(_SC_NPROCESSORS_ONLN));
    fprintf(f, "  \"factor_bytes_definition\": \"fused ideal %d x P x R x 4 "
               "(read S to sample; fused read S, read v, write v, write S); "
               "strict floor %d x P x R x 4 (sampling folded into the "
               "update pass: read S, read v, write v, write S)\",\n",
            FUSED_PASSES, STRICT_PASSES);
    fprintf(f, "  \"triad_bandwidth_bytes_per_s\": {");
    for (int t = 0; t < o->nthreads; t++)
        fprintf(f, "%s\"%d\": %.6g", t ? ", " : "", o->threads[t], bandwidth[t]);
    fprintf(f, "},\n  \"sgemm_1024_gflops\": {");
    for (int t = 0; t < o->nthreads; t++)
        fprintf(f, "%s\"%d\": %.4g", t ? ", " : "", o->threads[t],
                measured_gflops[t]);
    fprintf(f, "},\n  \"train_steps\": [\n");
    for (int i = 0; i < nsteps; i++) {
        const step_result *s = &steps[i];
        const variant *v = &VARIANTS[s->variant];
        fprintf(f, "    {\"width\": %d, \"batch\": %lld, \"threads\": %d, "
                   "\"network\": \"%s\", \"rank_first\": %d, \"rank_last\": %d, "
                   "\"step_s\": %.6g, \"ratio_to_standard\": %.6g, "
                   "\"gemm_s\": %.6g, \"factor_bytes_fused\": %.6g, "
                   "\"limit_fraction_fused\": %.6g, "
                   "\"limit_fraction_strict\": %.6g}%s\n",
                s->width, (long long)s->batch, s->threads, v->name,
                v->rank_first, v->rank_last, s->step, s->ratio, s->gemm,
                s->factor_bytes, s->frac_fused, s->frac_strict,
                i + 1 < nsteps ? "," : "");
    }
    fprintf(f, "  ],\n");
    write_prediction_json(f, o->threads[0], pred, npred);
    write_images_json(f, img, nimg);
    fprintf(f, "  \"memory\": {\"width\": %d, \"rank_first\": %d, "
               "\"rank_last\": %d, \"batch\": %lld, \"threads\": %d, "
               "\"dataset_examples\": %lld, \"steps\": %lld, "
               "\"param_count\": %lld, \"needed_bytes\": %lld, "
               "\"baseline_rss_bytes\": %lld, \"peak_rss_bytes\": %lld, "
               "\"peak_over_needed\": %.6g, "
               "\"peak_minus_baseline_over_needed\": %.6g, "
               "\"deferred_peak_rss_bytes\": %lld, "
               "\"deferred_peak_over_needed\": %.6g}\n}\n",
            m->width, m->rank, m->rank, (long long)m->batch, m->threads,
            (long long)m->data_n, (long long)m->steps, (long long)m->params,
            (long long)m->needed, (long long)m->baseline_kb * 1024,
            (long long)m->peak_kb * 1024,
            (double)m->peak_kb * 1024 / (double)m->needed,
            (double)(m->peak_kb - m->baseline_kb) * 1024 / (double)m->needed,
            (long long)m->deferred_peak_kb * 1024,
            (double)m->deferred_peak_kb * 1024 / (double)m->needed);
    fclose(f);
}

/* ---- main ------------------------------------------------------------------------- */

static int run_steps(const options *o, const double *bandwidth,
                     const dataset *d, step_result *out)
{
    static const int32_t widths[] = {256, 1024, 4096};
    static const int64_t batches[] = {32, 128, 512};
    const int nwidths = o->quick ? 2 : 3;
    int n = 0;
    for (int wi = 0; wi < nwidths; wi++)
        for (int bi = 0; bi < 3; bi++) {
            if (o->quick && batches[bi] != 128)
                continue;
            for (int ti = 0; ti < o->nthreads; ti++) {
                const int32_t w = widths[wi], t = o->threads[ti];
                const int64_t b = batches[bi];
                double gemm = time_gemms(w, b, t), times[NVARIANTS];
                for (int v = 0; v < NVARIANTS; v++)
                    times[v] = time_train(w, &VARIANTS[v], t, b, d);
                /* The standard step again, after the others: the min of the
                 * two guards the ratios against a noisy first measurement. */
                double again = time_train(w, &VARIANTS[0], t, b, d);
                if (again < times[0])
                    times[0] = again;
                /* Likewise the limit: a slow first GEMM measurement would
                 * flatter every fraction, so keep the faster of two. */
                double gemm_again = time_gemms(w, b, t);
                if (gemm_again < gemm)
                    gemm = gemm_again;
                for (int v = 0; v < NVARIANTS; v++) {
                    double step = times[v];
                    double fb = 4.0 * (double)factor_floats(w, &VARIANTS[v]);
                    step_result s = {w, t, v, b, step, step / times[0], gemm,
                                     FUSED_PASSES * fb,
                                     (gemm + FUSED_PASSES * fb / bandwidth[ti]) / step,
                                     (gemm + STRICT_PASSES * fb / bandwidth[ti]) / step};
                    out[n++] = s;
                }
                fprintf(stderr, ".");
            }
        }
    fprintf(stderr, "\n");
    return n;
}

int main(int argc, char **argv)
{
    options o = parse_args(argc, argv);
    /* libibvi chooses the kernel set before BLIS initialises; the
     * benchmark's own BLIS calls (the GEMM limit) then run on the same. */
    const char *arch = ibvi_kernel_name();

    if (o.profile_steps) {
        profile_images(&o);
        return 0;
    }
    if (o.images_only) {
        print_header(&o, arch);
        image_result img[MAX_IMAGE];
        print_images(img, run_images(&o, img));
        return 0;
    }
    memory_result mem = measure_memory(o.threads[0]);
    print_header(&o, arch);

    printf("sgemm 1024^3 on kernel '%s':", arch);
    for (int t = 0; t < o.nthreads; t++) {
        measured_gflops[t] = sgemm_gflops(o.threads[t], 1024);
        measured_threads[t] = o.threads[t];
        printf("  %d thread%s %.1f GFLOP/s", o.threads[t],
               o.threads[t] > 1 ? "s" : "", measured_gflops[t]);
    }
    printf("\n");

    double bandwidth[MAX_LIST];
    printf("Streaming triad a = b + s c over %lld MB:", TRIAD_BYTES >> 20);
    for (int t = 0; t < o.nthreads; t++) {
        bandwidth[t] = triad_bandwidth(o.threads[t]);
        printf("  %d thread%s %.2f GB/s", o.threads[t],
               o.threads[t] > 1 ? "s" : "", bandwidth[t] / 1e9);
    }
    printf("\n\n");
    fflush(stdout);

    dataset d = make_data(2048);
    step_result *steps = xmalloc(3 * 3 * MAX_LIST * NVARIANTS * sizeof *steps);
    int nsteps = run_steps(&o, bandwidth, &d, steps);
    free_data(&d);
    print_steps(steps, nsteps);
    print_speedups(steps, nsteps);
    print_deferred(steps, nsteps, bandwidth);
    fflush(stdout);

    /* Point 3 at every thread count (the JSON keeps the first's). */
    predict_result pred[MAX_LIST][MAX_PREDICT];
    int npred = measure_prediction(o.threads, o.nthreads, pred);
    for (int t = 0; t < o.nthreads; t++)
        print_prediction(o.threads[t], pred[t], npred);
    print_prediction_speedups(o.threads, o.nthreads, pred, npred);

    printf("\n4. Memory: training W=%d rank %d first+last, batch %lld, "
           "%lld-example data set, %lld steps, %d thread%s\n",
           mem.width, mem.rank, (long long)mem.batch, (long long)mem.data_n,
           (long long)mem.steps, mem.threads, mem.threads > 1 ? "s" : "");
    printf("   model needs %.1f MB (%lld params x 3 [value, gradient, velocity] "
           "+ one batch of activations + data set;\n"
           "   libibvi never stores the factor's gradient, so it can stay "
           "below 1 x)\n",
           mem.needed / 1e6, (long long)mem.params);
    printf("   peak RSS %.1f MB (%.2f x needed); process baseline before the run "
           "%.1f MB; peak - baseline = %.2f x needed\n",
           mem.peak_kb * 1024 / 1e6, (double)mem.peak_kb * 1024 / mem.needed,
           mem.baseline_kb * 1024 / 1e6,
           (double)(mem.peak_kb - mem.baseline_kb) * 1024 / mem.needed);
    printf("   then the same run with deferred factor updates (window of %d "
           "steps): peak RSS %.1f MB (%.2f x needed)\n",
           model_window(mem.width, &VARIANTS[V_R10_DEFERRED]),
           mem.deferred_peak_kb * 1024 / 1e6,
           (double)mem.deferred_peak_kb * 1024 / mem.needed);

    printf("\n5. BLIS sub-configuration '%s'; threads run:", arch);
    for (int t = 0; t < o.nthreads; t++)
        printf(" %d", o.threads[t]);
    printf(" (steps, GEMM limit, triad, prediction); memory: %d\n",
           o.threads[0]);
    fflush(stdout);

    image_result img[MAX_IMAGE];
    const double t_images = now();
    const int nimg = run_images(&o, img);
    print_images(img, nimg);
    if (nimg > 0)
        printf("   (point 6 took %.1f s)\n", now() - t_images);

    if (o.json)
        write_json(&o, arch, bandwidth, steps, nsteps, pred[0], npred, img,
                   nimg, &mem);
    free(steps);
    return 0;
}
