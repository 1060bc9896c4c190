/*
 * libibvi - the thread team of the element-wise passes (parallel.h).
 *
 * One pool per process, of POSIX threads started on first use (as many as
 * the largest thread count asked for, minus the calling thread) and joined
 * when the library is unloaded. A call takes the pool with a trylock, so
 * two host threads never share workers: the one that finds it busy runs
 * its chunks itself. The caller publishes the job (a claim word, below),
 * wakes sleeping workers, and then claims and runs chunks like any worker;
 * it waits only for chunks already running elsewhere. Workers poll for a
 * new job for a few microseconds and then sleep on a condition variable:
 * a GEMM on BLIS's own threads usually follows a pass.
 *
 * After fork() the child has no workers: an atfork handler resets the pool
 * there (the parent's workers are not the child's to join).
 *
 * SPDX-License-Identifier: MIT
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "internal.h"
#include "parallel.h"

/* Polls of a flag before sleeping. A worker polls briefly (a few
 * microseconds): a GEMM on BLIS's threads usually follows a pass, and a
 * polling worker would take a core from it; a job finds it asleep, and
 * the caller runs the chunks it does not get to. The caller waits longer
 * for chunks a worker is running. */
#define WORKER_POLLS 100
#define CALLER_POLLS 2000

#define MAX_WORKERS (IBVI__PARALLEL_MAX_CHUNKS - 1)

/* The job being run: written by its caller while no chunk of the previous
 * job is running, read by whoever claims one of its chunks. */
typedef struct job {
    ibvi__range_fn fn;
    void *ctx;
    int64_t n;
    int32_t chunks;
} job;

/* The claim word: job generation << 16 | chunks << 8 | next unclaimed
 * chunk. A thread runs chunk c after moving `next` from c to c + 1 with a
 * compare-and-swap, so every chunk runs once, on whichever thread gets
 * there first: the caller takes the chunks of a worker that is slow to
 * wake instead of waiting for it. */
#define WORD(gen, chunks, next)                                               \
    ((uint64_t)(gen) << 16 | (uint64_t)(chunks) << 8 | (uint64_t)(next))
#define WORD_NEXT(w) ((int32_t)((w) & 0xff))
#define WORD_CHUNKS(w) ((int32_t)(((w) >> 8) & 0xff))
#define WORD_GEN(w) ((w) >> 16)

static struct {
    pthread_mutex_t owner;  /* held by the call that uses the workers */
    pthread_mutex_t sleep;  /* guards the two condition variables */
    pthread_cond_t wake, done_cv;
    pthread_once_t once;
    int32_t started;        /* workers running (the owner's) */
    int32_t closed;         /* unloaded: no more workers */
    job job;
    _Atomic uint64_t word;
    atomic_int done;        /* chunks of the job that have returned */
    atomic_int sleepers;    /* workers asleep on `wake` */
    atomic_int stop;
    pthread_t threads[MAX_WORKERS];
} pool = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_MUTEX_INITIALIZER,
          PTHREAD_COND_INITIALIZER, PTHREAD_COND_INITIALIZER,
          PTHREAD_ONCE_INIT, 0, 0, {0}, 0, 0, 0, 0, {0}};

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

/* Claims the next chunk of the current job: its index, or -1 when every
 * chunk is taken (*seen then holds the claim word). */
static int32_t claim(uint64_t *seen)
{
    uint64_t w = atomic_load_explicit(&pool.word, memory_order_acquire);
    for (;;) {
        if (WORD_NEXT(w) >= WORD_CHUNKS(w)) {
            *seen = w;
            return -1;
        }
        if (atomic_compare_exchange_weak_explicit(&pool.word, &w, w + 1,
                                                  memory_order_acq_rel,
                                                  memory_order_acquire))
            return WORD_NEXT(w);
    }
}

/* Runs claimed chunks until none is left (*seen: the claim word then).
 * The thread that returns the job's last chunk wakes the caller, should it
 * sleep. */
static void run_claimed(uint64_t *seen)
{
    int32_t c;
    while ((c = claim(seen)) >= 0) {
        const int32_t chunks = pool.job.chunks;
        run_chunk(&pool.job, c);
        if (atomic_fetch_add_explicit(&pool.done, 1, memory_order_acq_rel) +
                1 == chunks) {
            pthread_mutex_lock(&pool.sleep);
            pthread_cond_broadcast(&pool.done_cv);
            pthread_mutex_unlock(&pool.sleep);
        }
    }
}

static void *worker_main(void *arg)
{
    (void)arg;
    in_chunk = 1;
    for (;;) {
        uint64_t seen;
        run_claimed(&seen);
        /* Wait for the next job: a new claim word. */
        int changed = 0;
        for (int i = 0; i < WORKER_POLLS && !changed; i++) {
            changed = atomic_load_explicit(&pool.word, memory_order_acquire) !=
                          seen ||
                      atomic_load_explicit(&pool.stop, memory_order_acquire);
            cpu_relax();
        }
        if (!changed) {
            pthread_mutex_lock(&pool.sleep);
            atomic_fetch_add(&pool.sleepers, 1);
            while (atomic_load(&pool.word) == seen && !atomic_load(&pool.stop))
                pthread_cond_wait(&pool.wake, &pool.sleep);
            atomic_fetch_sub(&pool.sleepers, 1);
            pthread_mutex_unlock(&pool.sleep);
        }
        if (atomic_load_explicit(&pool.stop, memory_order_acquire))
            return NULL;
    }
}

/* The child of a fork has none of the parent's threads. */
static void reset_in_child(void)
{
    pthread_mutex_init(&pool.owner, NULL);
    pthread_mutex_init(&pool.sleep, NULL);
    pthread_cond_init(&pool.wake, NULL);
    pthread_cond_init(&pool.done_cv, NULL);
    pool.started = 0;
    atomic_store(&pool.sleepers, 0);
}

static void register_fork_handler(void)
{
    pthread_atfork(NULL, NULL, reset_in_child);
}

/* Starts workers until `wanted` run (the owner holds the pool); stops
 * early when one cannot be started: the caller runs what they leave. */
static void start_workers(int32_t wanted)
{
    if (pool.closed)
        return;
    pthread_once(&pool.once, register_fork_handler);
    while (pool.started < wanted) {
        if (pthread_create(&pool.threads[pool.started], NULL, worker_main,
                           NULL) != 0)
            break;
        pool.started++;
    }
}

/* Unloading the library (or the process exiting): join the workers, so
 * none runs code that is about to be unmapped. */
__attribute__((destructor)) static void close_pool(void)
{
    pthread_mutex_lock(&pool.owner);
    atomic_store(&pool.stop, 1);
    pthread_mutex_lock(&pool.sleep);
    pthread_cond_broadcast(&pool.wake);
    pthread_mutex_unlock(&pool.sleep);
    for (int32_t i = 0; i < pool.started; i++)
        pthread_join(pool.threads[i], NULL);
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
    const job j = {.fn = fn, .ctx = ctx, .n = n,
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
    start_workers(j.chunks - 1);
    if (pool.started == 0) {
        pthread_mutex_unlock(&pool.owner);
        run_inline(&j);
        return;
    }
    /* No chunk of the previous job runs now: publish this one. */
    pool.job = j;
    atomic_store_explicit(&pool.done, 0, memory_order_relaxed);
    const uint64_t gen =
        WORD_GEN(atomic_load_explicit(&pool.word, memory_order_relaxed)) + 1;
    atomic_store(&pool.word, WORD(gen, j.chunks, 0));
    if (atomic_load(&pool.sleepers) > 0) {
        pthread_mutex_lock(&pool.sleep);
        pthread_cond_broadcast(&pool.wake);
        pthread_mutex_unlock(&pool.sleep);
    }
    uint64_t seen;
    in_chunk = 1;
    run_claimed(&seen);
    in_chunk = 0;
    /* What is left runs on workers that are awake. */
    int finished = 0;
    for (int i = 0; i < CALLER_POLLS && !finished; i++) {
        finished = atomic_load_explicit(&pool.done, memory_order_acquire) ==
                   j.chunks;
        cpu_relax();
    }
    if (!finished) {
        pthread_mutex_lock(&pool.sleep);
        while (atomic_load_explicit(&pool.done, memory_order_acquire) !=
               j.chunks)
            pthread_cond_wait(&pool.done_cv, &pool.sleep);
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
