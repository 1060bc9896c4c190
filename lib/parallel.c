/*
 * libibvi - the thread team of the element-wise passes (parallel.h).
 *
 * One pool per process, of POSIX threads started on first use (as many as
 * the largest thread count asked for, minus the calling thread) and joined
 * when the library is unloaded. A call takes the pool with a trylock, so
 * two host threads never share workers: the one that finds it busy runs
 * its chunks itself. The caller hands chunk i (i >= 1) to worker i - 1
 * through that worker's slot (an atomic pointer to the job, on the
 * caller's stack), runs chunk 0, and waits until every worker it used has
 * counted the job's `pending` down. Workers and a waiting caller spin for
 * a short while (the passes of one step follow each other closely) and
 * then sleep on a condition variable; the spin is kept short because a
 * GEMM (BLIS's own threads) usually runs next.
 *
 * After fork() the child has no workers: an atfork handler resets the pool
 * there (the parent's workers are not the child's to join).
 *
 * SPDX-License-Identifier: MIT
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>

#include "internal.h"
#include "parallel.h"

/* Polls of a flag before sleeping: about 20 microseconds. */
#define SPIN_POLLS 2000

#define MAX_WORKERS (IBVI__PARALLEL_MAX_CHUNKS - 1)

typedef struct job {
    ibvi__range_fn fn;
    void *ctx;
    int64_t n;
    int32_t chunks;
    atomic_int pending; /* workers still running their chunk */
} job;

typedef struct worker {
    pthread_t thread;
    int32_t chunk;       /* the chunk it runs of every job: its index + 1 */
    _Atomic(job *) task; /* set by the caller, cleared by the worker */
    atomic_int stop;
} worker;

static struct {
    pthread_mutex_t owner;  /* held by the call that uses the workers */
    pthread_mutex_t sleep;  /* guards the two condition variables */
    pthread_cond_t wake, done;
    pthread_once_t once;
    int32_t started;        /* workers running (the owner's) */
    int32_t closed;         /* unloaded: no more workers */
    worker workers[MAX_WORKERS];
} pool = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_MUTEX_INITIALIZER,
          PTHREAD_COND_INITIALIZER, PTHREAD_COND_INITIALIZER,
          PTHREAD_ONCE_INIT, 0, 0, {{0}}};

/* 1 on a thread running a chunk: a call from there runs inline. */
static _Thread_local int in_chunk;

static inline void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

int32_t ibvi__parallel_chunks(int32_t threads, int64_t n, int64_t grain)
{
    if (n <= 0)
        return 0;
    if (grain < 1)
        grain = 1;
    int64_t chunks = n / grain;
    if (chunks > threads)
        chunks = threads;
    if (chunks > IBVI__PARALLEL_MAX_CHUNKS)
        chunks = IBVI__PARALLEL_MAX_CHUNKS;
    return chunks < 1 ? 1 : (int32_t)chunks;
}

int64_t ibvi__parallel_chunk_begin(int64_t n, int32_t chunks, int32_t c)
{
    const int64_t q = n / chunks, r = n % chunks;
    return q * c + (c < r ? c : r);
}

static void run_chunk(const job *j, int32_t c)
{
    const int64_t begin = ibvi__parallel_chunk_begin(j->n, j->chunks, c);
    const int64_t end = ibvi__parallel_chunk_begin(j->n, j->chunks, c + 1);
    if (begin < end)
        j->fn(j->ctx, begin, end);
}

static void *worker_main(void *arg)
{
    worker *w = arg;
    in_chunk = 1;
    for (;;) {
        job *j = NULL;
        for (int i = 0; i < SPIN_POLLS; i++) {
            j = atomic_load_explicit(&w->task, memory_order_acquire);
            if (j || atomic_load_explicit(&w->stop, memory_order_acquire))
                break;
            cpu_relax();
        }
        if (!j) {
            pthread_mutex_lock(&pool.sleep);
            while (!(j = atomic_load_explicit(&w->task,
                                              memory_order_acquire)) &&
                   !atomic_load_explicit(&w->stop, memory_order_acquire))
                pthread_cond_wait(&pool.wake, &pool.sleep);
            pthread_mutex_unlock(&pool.sleep);
        }
        if (!j)
            return NULL; /* stop */
        atomic_store_explicit(&w->task, NULL, memory_order_relaxed);
        run_chunk(j, w->chunk);
        /* The last one wakes the caller; j may be gone right after. */
        if (atomic_fetch_sub_explicit(&j->pending, 1,
                                      memory_order_acq_rel) == 1) {
            pthread_mutex_lock(&pool.sleep);
            pthread_cond_broadcast(&pool.done);
            pthread_mutex_unlock(&pool.sleep);
        }
    }
}

/* The child of a fork has none of the parent's threads. */
static void reset_in_child(void)
{
    pthread_mutex_init(&pool.owner, NULL);
    pthread_mutex_init(&pool.sleep, NULL);
    pthread_cond_init(&pool.wake, NULL);
    pthread_cond_init(&pool.done, NULL);
    pool.started = 0;
}

static void register_fork_handler(void)
{
    pthread_atfork(NULL, NULL, reset_in_child);
}

/* Starts workers until `wanted` run (the owner holds the pool); returns
 * how many of them the call may use: wanted, or fewer when no more could
 * be started. */
static int32_t start_workers(int32_t wanted)
{
    if (pool.closed)
        return 0;
    pthread_once(&pool.once, register_fork_handler);
    while (pool.started < wanted) {
        worker *w = &pool.workers[pool.started];
        w->chunk = pool.started + 1;
        atomic_init(&w->task, NULL);
        atomic_init(&w->stop, 0);
        if (pthread_create(&w->thread, NULL, worker_main, w) != 0)
            break;
        pool.started++;
    }
    return pool.started < wanted ? pool.started : wanted;
}

/* Unloading the library (or the process exiting): join the workers, so
 * none runs code that is about to be unmapped. */
__attribute__((destructor)) static void close_pool(void)
{
    pthread_mutex_lock(&pool.owner);
    for (int32_t i = 0; i < pool.started; i++)
        atomic_store_explicit(&pool.workers[i].stop, 1, memory_order_release);
    pthread_mutex_lock(&pool.sleep);
    pthread_cond_broadcast(&pool.wake);
    pthread_mutex_unlock(&pool.sleep);
    for (int32_t i = 0; i < pool.started; i++)
        pthread_join(pool.workers[i].thread, NULL);
    pool.started = 0;
    pool.closed = 1;
    pthread_mutex_unlock(&pool.owner);
}

static void run_inline(const job *j)
{
    const int nested = in_chunk;
    in_chunk = 1;
    for (int32_t c = 0; c < j->chunks; c++)
        run_chunk(j, c);
    in_chunk = nested;
}

void ibvi__parallel_for(int32_t threads, int64_t n, int64_t grain,
                        ibvi__range_fn fn, void *ctx)
{
    job j = {.fn = fn, .ctx = ctx, .n = n,
             .chunks = ibvi__parallel_chunks(threads, n, grain)};
    if (j.chunks <= 1) {
        if (n > 0)
            fn(ctx, 0, n);
        return;
    }
    if (in_chunk || pthread_mutex_trylock(&pool.owner) != 0) {
        run_inline(&j);
        return;
    }
    const int32_t workers = start_workers(j.chunks - 1);
    atomic_init(&j.pending, workers);
    for (int32_t i = 0; i < workers; i++)
        atomic_store_explicit(&pool.workers[i].task, &j,
                              memory_order_release);
    if (workers > 0) {
        pthread_mutex_lock(&pool.sleep);
        pthread_cond_broadcast(&pool.wake);
        pthread_mutex_unlock(&pool.sleep);
    }
    /* Chunk 0, and any whose worker could not be started. */
    in_chunk = 1;
    run_chunk(&j, 0);
    for (int32_t c = workers + 1; c < j.chunks; c++)
        run_chunk(&j, c);
    in_chunk = 0;
    int left = 1;
    for (int i = 0; i < SPIN_POLLS; i++) {
        left = atomic_load_explicit(&j.pending, memory_order_acquire);
        if (left == 0)
            break;
        cpu_relax();
    }
    if (left != 0) {
        pthread_mutex_lock(&pool.sleep);
        while (atomic_load_explicit(&j.pending, memory_order_acquire) != 0)
            pthread_cond_wait(&pool.done, &pool.sleep);
        pthread_mutex_unlock(&pool.sleep);
    }
    pthread_mutex_unlock(&pool.owner);
}

/* ---- the reduction ------------------------------------------------------ */

typedef struct max_ctx {
    const float *x;
    atomic_int bits; /* the largest |x| so far, as ibvi__abs_bits */
} max_ctx;

static void max_chunk(void *arg, int64_t begin, int64_t end)
{
    max_ctx *m = arg;
    const float v = ibvi__max_abs(m->x + begin, end - begin);
    const int bits = ibvi__abs_bits(&v);
    int seen = atomic_load_explicit(&m->bits, memory_order_relaxed);
    while (bits > seen &&
           !atomic_compare_exchange_weak_explicit(&m->bits, &seen, bits,
                                                  memory_order_relaxed,
                                                  memory_order_relaxed))
        ;
}

float ibvi__parallel_max_abs(int32_t threads, const float *x, int64_t n)
{
    if (ibvi__parallel_chunks(threads, n, IBVI__PARALLEL_GRAIN_FLOATS) <= 1)
        return ibvi__max_abs(x, n);
    max_ctx m = {.x = x};
    atomic_init(&m.bits, 0);
    ibvi__parallel_for(threads, n, IBVI__PARALLEL_GRAIN_FLOATS, max_chunk, &m);
    const int bits = atomic_load_explicit(&m.bits, memory_order_relaxed);
    float value;
    memcpy(&value, &bits, sizeof value);
    return value;
}
