/*
 * The thread team of the element-wise passes (lib/parallel.h), compiled in:
 *   - the chunks of [0, n) are the ones ibvi__parallel_chunks and
 *     ibvi__parallel_chunk_begin describe, cover every index exactly once,
 *     hold at least `grain` indices when there are two or more, and differ
 *     in size by at most one, for many n, thread counts and grains;
 *   - one chunk runs inline on the calling thread; two or more may run on
 *     any thread, each exactly once, and do run on two threads when the
 *     first waits for the second;
 *   - several host threads calling at once each get their own work done,
 *     exactly once per index (the pool is taken by one of them, the others
 *     run inline), and a call from inside a chunk runs inline;
 *   - the parallel maximum of |x| equals ibvi__max_abs's for any thread
 *     count, with infinities and NaN anywhere;
 *   - a forked child can still use the team (it has no workers of its own).
 */
#include <check.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "internal.h"
#include "parallel.h"

/* ---- recording the chunks ------------------------------------------------ */

#define MAX_N 5000

typedef struct record {
    atomic_int visits[MAX_N];
    atomic_int calls;
    int64_t begins[IBVI__PARALLEL_MAX_CHUNKS], ends[IBVI__PARALLEL_MAX_CHUNKS];
    pthread_t threads[IBVI__PARALLEL_MAX_CHUNKS];
} record;

static void record_chunk(void *arg, int64_t begin, int64_t end)
{
    record *r = arg;
    const int k = atomic_fetch_add(&r->calls, 1);
    if (k < IBVI__PARALLEL_MAX_CHUNKS) {
        r->begins[k] = begin;
        r->ends[k] = end;
        r->threads[k] = pthread_self();
    }
    for (int64_t i = begin; i < end; i++)
        atomic_fetch_add(&r->visits[i], 1);
}

static record *new_record(void)
{
    record *r = calloc(1, sizeof *r);
    ck_assert_ptr_nonnull(r);
    return r;
}

/* Runs one call and checks its chunks against the documented split. */
static void check_split(record *r, int32_t threads, int64_t n, int64_t grain)
{
    memset(r, 0, sizeof *r);
    ibvi__parallel_for(threads, n, grain, record_chunk, r);
    const int32_t chunks = ibvi__parallel_chunks(threads, n, grain);
    const int calls = atomic_load(&r->calls);
    ck_assert_msg(calls == chunks, "n %lld threads %d grain %lld: %d calls, "
                  "%d chunks", (long long)n, (int)threads, (long long)grain,
                  calls, (int)chunks);
    for (int64_t i = 0; i < n; i++)
        ck_assert_msg(atomic_load(&r->visits[i]) == 1,
                      "n %lld threads %d grain %lld: index %lld visited %d "
                      "times", (long long)n, (int)threads, (long long)grain,
                      (long long)i, atomic_load(&r->visits[i]));
    if (n <= 0)
        return;
    /* The expected chunk count, written out independently. */
    int64_t expect = n / (grain < 1 ? 1 : grain);
    if (expect > threads)
        expect = threads;
    if (expect > IBVI__PARALLEL_MAX_CHUNKS)
        expect = IBVI__PARALLEL_MAX_CHUNKS;
    if (expect < 1)
        expect = 1;
    ck_assert_int_eq(chunks, expect);
    ck_assert_int_eq(ibvi__parallel_chunk_begin(n, chunks, 0), 0);
    ck_assert_int_eq(ibvi__parallel_chunk_begin(n, chunks, chunks), n);
    int64_t smallest = n, largest = 0;
    for (int32_t c = 0; c < chunks; c++) {
        const int64_t b = ibvi__parallel_chunk_begin(n, chunks, c);
        const int64_t e = ibvi__parallel_chunk_begin(n, chunks, c + 1);
        ck_assert_int_le(b, e);
        smallest = e - b < smallest ? e - b : smallest;
        largest = e - b > largest ? e - b : largest;
        /* This chunk was one of the calls, with exactly these bounds. */
        int found = 0;
        for (int k = 0; k < calls; k++)
            found += r->begins[k] == b && r->ends[k] == e;
        ck_assert_msg(found == 1, "chunk %d [%lld, %lld) called %d times",
                      (int)c, (long long)b, (long long)e, found);
    }
    ck_assert_int_le(largest - smallest, 1);
    if (chunks > 1)
        ck_assert_int_ge(smallest, grain);
}

START_TEST(test_chunks_cover_exactly_once)
{
    static const int64_t grains[] = {1, 2, 3, 7, 64, 1000, 4096};
    record *r = new_record();
    for (int32_t threads = 1; threads <= 6; threads++)
        for (size_t g = 0; g < sizeof grains / sizeof grains[0]; g++) {
            for (int64_t n = 0; n <= 70; n++)
                check_split(r, threads, n, grains[g]);
            for (int64_t n = 71; n <= MAX_N; n = n * 3 / 2 + 1)
                check_split(r, threads, n, grains[g]);
            check_split(r, threads, MAX_N, grains[g]);
        }
    /* More threads than chunks allowed, and grain 0 taken as 1. */
    check_split(r, 1000, MAX_N, 1);
    check_split(r, 3, 100, 0);
    free(r);
}
END_TEST

/* Boundaries of huge ranges: no overflow, the same formula. */
START_TEST(test_chunk_bounds_large_n)
{
    const int64_t n = INT64_MAX / 2 + 12345;
    for (int32_t chunks = 1; chunks <= IBVI__PARALLEL_MAX_CHUNKS; chunks++) {
        int64_t prev = 0;
        for (int32_t c = 1; c <= chunks; c++) {
            const int64_t b = ibvi__parallel_chunk_begin(n, chunks, c);
            const int64_t size = b - prev;
            ck_assert(size == n / chunks || size == n / chunks + 1);
            prev = b;
        }
        ck_assert_int_eq(prev, n);
    }
    ck_assert_int_eq(ibvi__parallel_chunks(4, n, 1000), 4);
}
END_TEST

START_TEST(test_one_chunk_inline_more_on_workers)
{
    record *r = new_record();
    /* Below two grains: one chunk, on this thread. */
    ibvi__parallel_for(4, 100, 60, record_chunk, r);
    ck_assert_int_eq(atomic_load(&r->calls), 1);
    ck_assert(pthread_equal(r->threads[0], pthread_self()));
    /* Four chunks: any thread may run any of them (the caller takes those
     * of a worker that is slow to wake), each once. */
    memset(r, 0, sizeof *r);
    ibvi__parallel_for(4, 4000, 10, record_chunk, r);
    ck_assert_int_eq(atomic_load(&r->calls), 4);
    free(r);
}
END_TEST

/* Two chunks on two threads: the second is not left to the caller when a
 * worker is awake to take it. */
typedef struct pair {
    atomic_int entered;
    pthread_t thread[2];
} pair;

static void pair_chunk(void *arg, int64_t begin, int64_t end)
{
    (void)end;
    pair *p = arg;
    p->thread[begin] = pthread_self();
    atomic_fetch_add(&p->entered, 1);
    struct timespec t0, t;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    do {
        clock_gettime(CLOCK_MONOTONIC, &t);
    } while (atomic_load(&p->entered) < 2 && t.tv_sec - t0.tv_sec < 5);
}

START_TEST(test_chunks_run_on_two_threads)
{
    pair p;
    atomic_init(&p.entered, 0);
    ibvi__parallel_for(2, 2, 1, pair_chunk, &p);
    ck_assert_int_eq(atomic_load(&p.entered), 2);
    ck_assert(!pthread_equal(p.thread[0], p.thread[1]));
}
END_TEST

/* ---- several host threads at once ---------------------------------------- */

#define HOSTS 4
#define HOST_CALLS 300
#define HOST_N 3000

typedef struct host_work {
    float in[HOST_N], out[HOST_N];
    int32_t threads;
    int nested_ok;
} host_work;

/* out[i] = in[i]^2 + 1, and a nested call over the chunk, which must run
 * inline on this thread. */
static void square_inner(void *arg, int64_t begin, int64_t end)
{
    host_work *w = arg;
    for (int64_t i = begin; i < end; i++)
        w->out[i] += 1.0f;
}

typedef struct nested {
    host_work *w;
    int64_t base;
    pthread_t thread;
    int same_thread;
} nested;

static void nested_chunk(void *arg, int64_t begin, int64_t end)
{
    nested *n = arg;
    n->same_thread &= pthread_equal(pthread_self(), n->thread) != 0;
    square_inner(n->w, n->base + begin, n->base + end);
}

static void square_chunk(void *arg, int64_t begin, int64_t end)
{
    host_work *w = arg;
    for (int64_t i = begin; i < end; i++)
        w->out[i] = w->in[i] * w->in[i];
    nested n = {w, begin, pthread_self(), 1};
    ibvi__parallel_for(w->threads, end - begin, 1, nested_chunk, &n);
    if (!n.same_thread)
        w->nested_ok = 0;
}

static void *host_main(void *arg)
{
    host_work *w = arg;
    for (int call = 0; call < HOST_CALLS; call++) {
        for (int64_t i = 0; i < HOST_N; i++) {
            w->in[i] = (float)(i % 97) + (float)call;
            w->out[i] = -1.0f;
        }
        ibvi__parallel_for(w->threads, HOST_N, 16, square_chunk, w);
        for (int64_t i = 0; i < HOST_N; i++)
            if (w->out[i] != w->in[i] * w->in[i] + 1.0f)
                return (void *)1;
    }
    return NULL;
}

START_TEST(test_host_threads_at_once)
{
    pthread_t t[HOSTS];
    host_work *w = calloc(HOSTS, sizeof *w);
    ck_assert_ptr_nonnull(w);
    for (int h = 0; h < HOSTS; h++) {
        w[h].threads = 1 + h % 3 + (h == 0 ? 3 : 0);
        w[h].nested_ok = 1;
        ck_assert_int_eq(pthread_create(&t[h], NULL, host_main, &w[h]), 0);
    }
    for (int h = 0; h < HOSTS; h++) {
        void *rc = (void *)1;
        ck_assert_int_eq(pthread_join(t[h], &rc), 0);
        ck_assert_msg(rc == NULL, "host thread %d got a wrong result", h);
        ck_assert_msg(w[h].nested_ok, "host thread %d: a nested call left "
                      "its thread", h);
    }
    free(w);
}
END_TEST

/* ---- the maximum --------------------------------------------------------- */

START_TEST(test_parallel_max_abs)
{
    const int64_t n = 5 * IBVI__PARALLEL_GRAIN_FLOATS + 17;
    float *x = malloc(sizeof(float) * (size_t)n);
    ck_assert_ptr_nonnull(x);
    uint64_t s = 12345;
    for (int64_t i = 0; i < n; i++) {
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        x[i] = (float)((int64_t)(s >> 33) - (1ll << 30)) * 1e-9f;
    }
    static const int64_t sizes[] = {0, 1, 9, IBVI__PARALLEL_GRAIN_FLOATS,
                                    2 * IBVI__PARALLEL_GRAIN_FLOATS + 1,
                                    4 * IBVI__PARALLEL_GRAIN_FLOATS - 3};
    const int64_t spots[] = {0, IBVI__PARALLEL_GRAIN_FLOATS + 5, n - 1};
    const float specials[] = {-1e30f, INFINITY, -INFINITY, NAN};
    for (int round = -1; round < 12; round++) {
        /* round -1: plain values; then a special value at some spot. */
        float saved = 0.0f;
        int64_t at = 0;
        if (round >= 0) {
            at = spots[round % 3];
            saved = x[at];
            x[at] = specials[round / 3];
        }
        for (int32_t threads = 1; threads <= 5; threads++) {
            for (size_t k = 0; k < sizeof sizes / sizeof sizes[0]; k++) {
                const float a = ibvi__parallel_max_abs(threads, x, sizes[k]);
                const float b = ibvi__max_abs(x, sizes[k]);
                ck_assert(memcmp(&a, &b, sizeof a) == 0);
            }
            const float a = ibvi__parallel_max_abs(threads, x, n);
            const float b = ibvi__max_abs(x, n);
            ck_assert(memcmp(&a, &b, sizeof a) == 0);
            if (round >= 0 && round / 3 >= 1)
                ck_assert(!(a <= 3.4e38f)); /* not finite: found */
        }
        if (round >= 0)
            x[at] = saved;
    }
    free(x);
}
END_TEST

/* ---- fork ------------------------------------------------------------------ */

START_TEST(test_forked_child_uses_the_team)
{
#ifdef __SANITIZE_THREAD__
    /* ThreadSanitizer cannot start threads in the child of a
     * multi-threaded process: this case runs in the other builds. */
    return;
#endif
    record *r = new_record();
    check_split(r, 3, 3000, 10); /* the pool now has workers */
    const pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        alarm(60); /* a hang fails instead of blocking the suite */
        memset(r, 0, sizeof *r);
        ibvi__parallel_for(3, 3000, 10, record_chunk, r);
        int ok = atomic_load(&r->calls) == 3;
        for (int64_t i = 0; i < 3000; i++)
            ok &= atomic_load(&r->visits[i]) == 1;
        _exit(ok ? 0 : 1);
    }
    int status = 0;
    ck_assert_int_eq(waitpid(pid, &status, 0), pid);
    ck_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    check_split(r, 3, 3000, 10); /* and the parent's still works */
    free(r);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("parallel");
    TCase *tc = tcase_create("team");
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, test_chunks_cover_exactly_once);
    tcase_add_test(tc, test_chunk_bounds_large_n);
    tcase_add_test(tc, test_one_chunk_inline_more_on_workers);
    tcase_add_test(tc, test_chunks_run_on_two_threads);
    tcase_add_test(tc, test_host_threads_at_once);
    tcase_add_test(tc, test_parallel_max_abs);
    tcase_add_test(tc, test_forked_child_uses_the_team);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    const int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
