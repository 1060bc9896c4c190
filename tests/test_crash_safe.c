/*
 * libibvi tests - crash-safe saving (io.h: "a crash or error at any point
 * leaves either the old file or the complete new one").
 *
 * 1. Killed saves: a child process saves two large models (A and B, a few
 *    MB each with their Adam state) over the same path in a loop; the parent
 *    kills it with SIGKILL after a random delay (0 to 3 times the time one
 *    save takes), many times. After every kill the file at the path must be
 *    byte for byte A or B, load, and predict exactly what A or B predicts.
 *    The test counts the kills that caught a save in the middle (a
 *    temporary file existed) and requires some.
 * 2. Failed writes at every stage: RLIMIT_FSIZE makes write() fail with
 *    EFBIG (as a full disk fails with ENOSPC) after 0, 1, ... bytes, up to
 *    the last byte of the new file: each save returns IBVI_ERR_IO, the
 *    previous file is unchanged, loads and predicts as before, and no
 *    temporary file is left.
 * 3. Out of memory while saving: every allocation of ibvi_net_save fails in
 *    turn: IBVI_ERR_NOMEM, previous file unchanged, nothing left behind.
 *
 * A temporary file of a killed save stays behind (its name is
 * ".ibvi-<pid>-<n>" in the file's directory: nothing can remove it after
 * SIGKILL); the test removes them between kills.
 *
 * IBVI_CRASH_TRIALS sets the number of kills (default 30).
 *
 * SPDX-License-Identifier: MIT
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <check.h>

#include "ibvi/ibvi.h"

#define CHECK_OK(expr)                                                        \
    do {                                                                      \
        int rc_ = (expr);                                                     \
        ck_assert_msg(rc_ == IBVI_OK, "%s returned %d: %s", #expr, rc_,       \
                      ibvi_last_error());                                     \
    } while (0)

#define TEST_N 8

static char dir[64];

static void setup(void)
{
    snprintf(dir, sizeof dir, "/tmp/ibvi-crash-XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(dir));
}

/* Removes the temporary files a killed save left; returns how many. */
static int remove_temps(void)
{
    DIR *d = opendir(dir);
    ck_assert_ptr_nonnull(d);
    struct dirent *e;
    int n = 0;
    while ((e = readdir(d)) != NULL) {
        if (strncmp(e->d_name, ".ibvi-", 6) == 0) {
            char p[512];
            snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
            unlink(p);
            n++;
        }
    }
    closedir(d);
    return n;
}

static void teardown(void)
{
    DIR *d = opendir(dir);
    if (d) {
        struct dirent *e;
        while ((e = readdir(d)) != NULL) {
            if (e->d_name[0] == '.')
                continue;
            char p[512];
            snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
            unlink(p);
        }
        closedir(d);
    }
    rmdir(dir);
}

/* A model with its optimizer, its saved bytes and its predictions. */
typedef struct model {
    ibvi_net *net;
    ibvi_optimizer *opt;
    uint8_t *bytes;
    int64_t len;
    float probs[TEST_N * 10];
} model;

static float test_x[TEST_N * 128];

static void predict(ibvi_net *net, float *probs)
{
    ibvi_predictor *p = NULL;
    CHECK_OK(ibvi_predictor_create(&p, net, 4, 99));
    CHECK_OK(ibvi_predictor_run(p, test_x, TEST_N, probs, NULL, NULL, NULL));
    ibvi_predictor_free(p);
}

static void make_model(model *m, int32_t in, int32_t hidden, int32_t rank,
                       uint64_t seed, int train,
                       const ibvi_allocator *alloc)
{
    memset(m, 0, sizeof *m);
    CHECK_OK(ibvi_net_create(&m->net, in, alloc));
    CHECK_OK(ibvi_net_add_dense(m->net, hidden, rank));
    CHECK_OK(ibvi_net_add_activation(m->net, IBVI_ACT_RELU));
    CHECK_OK(ibvi_net_add_dense(m->net, 10, 4));
    CHECK_OK(ibvi_net_init(m->net, IBVI_PARAM_MUP, seed));
    CHECK_OK(ibvi_optimizer_create(&m->opt, m->net, IBVI_OPT_ADAM, 0.01f));
    for (int t = 0; t < train; t++) {
        int32_t labels[TEST_N];
        for (int i = 0; i < TEST_N; i++)
            labels[i] = (i + t) % 10;
        CHECK_OK(ibvi_train_step(m->net, m->opt, test_x, TEST_N, 1,
                                 IBVI_LOSS_SOFTMAX_XENT, labels, NULL, NULL));
    }
    CHECK_OK(ibvi_net_save_size(m->net, m->opt, &m->len));
    m->bytes = malloc((size_t)m->len);
    ck_assert_ptr_nonnull(m->bytes);
    CHECK_OK(ibvi_net_save_buffer(m->net, m->opt, m->bytes, m->len));
    predict(m->net, m->probs);
}

static void free_model(model *m)
{
    ibvi_optimizer_free(m->opt);
    ibvi_net_free(m->net);
    free(m->bytes);
}

static uint8_t *read_file(const char *path, int64_t *len)
{
    FILE *f = fopen(path, "rb");
    ck_assert_msg(f != NULL, "%s: %s", path, strerror(errno));
    ck_assert_int_eq(fseek(f, 0, SEEK_END), 0);
    long n = ftell(f);
    ck_assert_int_ge(n, 0);
    rewind(f);
    uint8_t *b = malloc((size_t)n + 1);
    ck_assert_ptr_nonnull(b);
    ck_assert_int_eq(fread(b, 1, (size_t)n, f), (size_t)n);
    fclose(f);
    *len = n;
    return b;
}

/* The file at path holds exactly one of the models; it loads and predicts
 * like it. Returns the index of the model. */
static int check_file(const char *path, model *const *models, int count)
{
    int64_t len;
    uint8_t *b = read_file(path, &len);
    int which = -1;
    for (int i = 0; i < count && which < 0; i++)
        if (len == models[i]->len &&
            memcmp(b, models[i]->bytes, (size_t)len) == 0)
            which = i;
    free(b);
    ck_assert_msg(which >= 0, "%s (%lld bytes) is none of the saved models",
                  path, (long long)len);
    ibvi_net *net = NULL;
    ibvi_optimizer *opt = NULL;
    CHECK_OK(ibvi_net_load(&net, &opt, path, NULL));
    ck_assert_ptr_nonnull(opt);
    float probs[TEST_N * 10];
    predict(net, probs);
    ck_assert_msg(memcmp(probs, models[which]->probs, sizeof probs) == 0,
                  "the loaded model predicts differently");
    ibvi_optimizer_free(opt);
    ibvi_net_free(net);
    return which;
}

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void fill_test_x(void)
{
    uint64_t s = 12345;
    for (int i = 0; i < TEST_N * 128; i++) {
        s = s * 6364136223846793005ULL + 1442695040888963407ULL;
        test_x[i] = (float)((s >> 40) % 2001) / 1000.0f - 1.0f;
    }
}

START_TEST(test_killed_saves)
{
    fill_test_x();
    model a, b;
    make_model(&a, 128, 256, 8, 1, 0, NULL);
    make_model(&b, 128, 256, 8, 2, 3, NULL);
    ck_assert_int_gt(a.len, 1 << 20);
    model *models[2] = {&a, &b};
    char path[128];
    snprintf(path, sizeof path, "%s/model.ibvi", dir);
    CHECK_OK(ibvi_net_save(a.net, a.opt, path));

    /* How long one save takes here (sanitizers and valgrind are slower). */
    char other[128];
    snprintf(other, sizeof other, "%s/timing.ibvi", dir);
    const double t0 = now();
    CHECK_OK(ibvi_net_save(b.net, b.opt, other));
    const double save_time = now() - t0;
    unlink(other);

    int trials = 30;
    const char *env = getenv("IBVI_CRASH_TRIALS");
    if (env && atoi(env) > 0)
        trials = atoi(env);
    uint64_t rng = 42;
    int mid_write = 0, seen[2] = {0, 0};
    for (int t = 0; t < trials; t++) {
        fflush(stdout);
        fflush(stderr);
        pid_t child = fork();
        ck_assert_int_ge(child, 0);
        if (child == 0) {
            /* never outlive the test, whatever happens to it */
            prctl(PR_SET_PDEATHSIG, SIGKILL);
            for (long i = 0;; i++) {
                const model *m = models[(i + t) % 2];
                if (ibvi_net_save(m->net, m->opt, path) != IBVI_OK)
                    _exit(3);
            }
        }
        rng = rng * 6364136223846793005ULL + 1442695040888963407ULL;
        const double delay = save_time * 3.0 * (double)(rng >> 11) /
                             9007199254740992.0;
        struct timespec ts = {(time_t)delay,
                              (long)((delay - (double)(time_t)delay) * 1e9)};
        nanosleep(&ts, NULL);
        ck_assert_int_eq(kill(child, SIGKILL), 0);
        int status = 0;
        ck_assert_int_eq(waitpid(child, &status, 0), child);
        ck_assert_msg(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL,
                      "the saving child ended on its own (status %d)", status);
        mid_write += remove_temps() > 0;
        seen[check_file(path, models, 2)]++;
    }
    printf("killed saves: %d kills (save takes %.1f ms here, %lld bytes), "
           "%d in the middle of a save; the file was A %d times, B %d "
           "times, always complete\n",
           trials, 1e3 * save_time, (long long)b.len, mid_write, seen[0],
           seen[1]);
    ck_assert_msg(mid_write > 0, "no kill caught a save in the middle");
    free_model(&a);
    free_model(&b);
}
END_TEST

START_TEST(test_failed_write_at_every_stage)
{
    fill_test_x();
    model old, big;
    make_model(&old, 128, 16, 2, 5, 1, NULL);
    make_model(&big, 128, 64, 4, 6, 2, NULL);
    ck_assert_int_gt(big.len, 64 * 1024);
    model *models[1] = {&old};
    char path[128];
    snprintf(path, sizeof path, "%s/keep.ibvi", dir);
    CHECK_OK(ibvi_net_save(old.net, old.opt, path));

    struct rlimit saved;
    ck_assert_int_eq(getrlimit(RLIMIT_FSIZE, &saved), 0);
    void (*previous)(int) = signal(SIGXFSZ, SIG_IGN);
    /* Limits from 0 to the last byte: every stage of the write, including
     * the buffered flushes (8 KiB) and the final checksum. */
    int64_t limits[64];
    int count = 0;
    const int64_t fixed[] = {0, 1, 15, 16, 27, 28, 100, 8191, 8192, 8193,
                             big.len / 2, big.len - 5, big.len - 4,
                             big.len - 1};
    for (size_t i = 0; i < sizeof fixed / sizeof fixed[0]; i++)
        limits[count++] = fixed[i];
    for (int64_t l = 16384; l < big.len && count < 64; l += big.len / 40)
        limits[count++] = l;
    for (int i = 0; i < count; i++) {
        struct rlimit tight = saved;
        tight.rlim_cur = (rlim_t)limits[i];
        ck_assert_int_eq(setrlimit(RLIMIT_FSIZE, &tight), 0);
        const int status = ibvi_net_save(big.net, big.opt, path);
        ck_assert_int_eq(setrlimit(RLIMIT_FSIZE, &saved), 0);
        ck_assert_msg(status == IBVI_ERR_IO,
                      "limit %lld: status %d (%s): %s", (long long)limits[i],
                      status, ibvi_status_string(status), ibvi_last_error());
        ck_assert_ptr_nonnull(strstr(ibvi_last_error(), "unchanged"));
        ck_assert_msg(remove_temps() == 0, "limit %lld: a temporary file "
                      "was left behind", (long long)limits[i]);
        check_file(path, models, 1);
    }
    signal(SIGXFSZ, previous);
    /* without a limit the same save replaces the file */
    CHECK_OK(ibvi_net_save(big.net, big.opt, path));
    models[0] = &big;
    check_file(path, models, 1);
    printf("failed writes: %d write limits from 0 to %lld bytes, the previous "
           "file intact after each\n", count, (long long)big.len - 1);
    free_model(&old);
    free_model(&big);
}
END_TEST

/* ---- out of memory while saving ------------------------------------------- */

typedef struct counts {
    long requests, live, fail_at;
} counts;

static void *c_alloc(void *o, size_t n)
{
    counts *c = o;
    if (c->requests++ == c->fail_at)
        return NULL;
    c->live++;
    return malloc(n);
}

static void c_free(void *o, void *p)
{
    counts *c = o;
    if (p) {
        c->live--;
        free(p);
    }
}

START_TEST(test_out_of_memory_while_saving)
{
    fill_test_x();
    counts c = {0, 0, -1};
    ibvi_allocator a = {c_alloc, c_free, &c};
    model old, m;
    make_model(&old, 128, 16, 2, 7, 0, NULL);
    make_model(&m, 128, 32, 3, 8, 1, &a);
    model *models[1] = {&old};
    char path[128];
    snprintf(path, sizeof path, "%s/oom.ibvi", dir);
    CHECK_OK(ibvi_net_save(old.net, old.opt, path));
    const long before = c.requests;
    CHECK_OK(ibvi_net_save(m.net, m.opt, path));
    const long per_save = c.requests - before;
    ck_assert_int_gt(per_save, 0);
    CHECK_OK(ibvi_net_save(old.net, old.opt, path));
    for (long k = 0; k < per_save; k++) {
        c.fail_at = c.requests + k;
        const long live = c.live;
        const int status = ibvi_net_save(m.net, m.opt, path);
        ck_assert_msg(status == IBVI_ERR_NOMEM, "allocation %ld: status %d",
                      k, status);
        ck_assert_int_eq(c.live, live);
        ck_assert_int_eq(remove_temps(), 0);
        check_file(path, models, 1);
    }
    c.fail_at = -1;
    free_model(&m);
    free_model(&old);
    ck_assert_int_eq(c.live, 0);
    printf("out of memory while saving: each of the %ld allocations of a "
           "save refused in turn, the previous file intact\n", per_save);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("crash_safe");
    TCase *tc = tcase_create("crash_safe");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 600);
    tcase_add_test(tc, test_killed_saves);
    tcase_add_test(tc, test_failed_write_at_every_stage);
    tcase_add_test(tc, test_out_of_memory_while_saving);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    const int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
