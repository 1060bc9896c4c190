/*
 * libibvi - tests of saving and loading (include/ibvi/io.h): bit-identical
 * round trips, resumed training, every kind of damaged file, and atomic
 * replacement of an existing file; hostile files and destinations (file
 * thread counts, step counts, device nodes and FIFOs, files that demand
 * more memory than their size, the longest file names).
 *
 * SPDX-License-Identifier: MIT
 */
#define _GNU_SOURCE /* sched_getaffinity, CPU_COUNT, makedev */

#include <check.h>
#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <time.h>
#include <unistd.h>

#include "ibvi/ibvi.h"

#define CK_OK(expr)                                                           \
    do {                                                                      \
        int ck_rc_ = (int)(expr);                                             \
        ck_assert_msg(ck_rc_ == IBVI_OK, "%s returned %d (%s): %s", #expr,    \
                      ck_rc_, ibvi_status_string(ck_rc_), ibvi_last_error()); \
    } while (0)

#define CK_STATUS(expr, status)                                               \
    do {                                                                      \
        int ck_rc_ = (int)(expr);                                             \
        ck_assert_msg(ck_rc_ == (int)(status),                                \
                      "%s returned %d (%s), expected %d; last error: %s",     \
                      #expr, ck_rc_, ibvi_status_string(ck_rc_),              \
                      (int)(status), ibvi_last_error());                      \
    } while (0)

/* ---- helpers: random numbers, bytes, CRC ---------------------------------- */

static uint64_t mix64(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static float uniform_pm1(uint64_t *s)
{
    return (float)((double)(mix64(s) >> 11) * 0x1p-53 * 2.0 - 1.0);
}

static uint32_t rd32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
           (uint32_t)p[3] << 24;
}

static uint64_t rd64(const uint8_t *p)
{
    return (uint64_t)rd32(p) | (uint64_t)rd32(p + 4) << 32;
}

static void wr32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static void wr64(uint8_t *p, uint64_t v)
{
    wr32(p, (uint32_t)v);
    wr32(p + 4, (uint32_t)(v >> 32));
}

/* Reference CRC-32 (bitwise, independent of the library's table). */
static uint32_t crc32_ref(const uint8_t *p, int64_t n)
{
    uint32_t c = 0xFFFFFFFFu;
    for (int64_t i = 0; i < n; i++) {
        c ^= p[i];
        for (int k = 0; k < 8; k++)
            c = (c & 1u) ? (c >> 1) ^ 0xEDB88320u : c >> 1;
    }
    return ~c;
}

/* Rewrites the size field and the checksum so only the content is "wrong". */
static void fix_file(uint8_t *b, int64_t len)
{
    wr64(b + 8, (uint64_t)len);
    wr32(b + len - 4, crc32_ref(b, len - 4));
}

/* Offset of the payload of section `tag` (-1 if absent), in a file of
 * either version: section headers are tag + size (version 1, 12 bytes) or
 * tag + size + required (version 2, 20 bytes). */
static int64_t section_payload(const uint8_t *b, int64_t len, const char *tag)
{
    const int64_t header = rd32(b + 4) == 1 ? 12 : 20;
    int64_t pos = 16;
    while (pos + header <= len - 4) {
        const uint64_t size = rd64(b + pos + 4);
        if (memcmp(b + pos, tag, 4) == 0)
            return pos + header;
        pos += header + (int64_t)size;
    }
    return -1;
}

/* The version-1 file of the same network, converted by the test's own
 * reading of version 2 (include/ibvi/io.h), independent of the library. */
static uint8_t *v2_to_v1(const uint8_t *b, int64_t len, int64_t *out_len)
{
    ck_assert_uint_eq(rd32(b + 4), 2);
    const int64_t head = section_payload(b, len, "HEAD");
    const int64_t arch = section_payload(b, len, "ARCH");
    const int64_t parm = section_payload(b, len, "PARM");
    const int64_t optm = section_payload(b, len, "OPTM");
    ck_assert(head > 0 && arch > 0 && parm > 0);
    const uint64_t parm_size = rd64(b + parm - 16);
    const uint64_t optm_size = optm > 0 ? rd64(b + optm - 16) : 0;
    const uint32_t count = rd32(b + arch + 12);
    const int64_t n = 16 + 12 + 28 + 12 + 4 + 16 * (int64_t)count + 12 +
                      (int64_t)parm_size +
                      (optm > 0 ? 12 + (int64_t)optm_size : 0) + 4;
    uint8_t *o = calloc((size_t)n, 1);
    ck_assert_ptr_nonnull(o);
    memcpy(o, "IBVI", 4);
    wr32(o + 4, 1);
    int64_t p = 16;
    memcpy(o + p, "HEAD", 4);
    wr64(o + p + 4, 28);
    wr32(o + p + 12, rd32(b + arch));           /* input_dim = C   */
    wr32(o + p + 16, rd32(b + head));           /* parameterization */
    wr64(o + p + 20, rd64(b + head + 16));      /* seed            */
    wr64(o + p + 28, rd64(b + head + 8));       /* position        */
    wr32(o + p + 36, rd32(b + head + 4));       /* threads         */
    p += 40;
    memcpy(o + p, "ARCH", 4);
    wr64(o + p + 4, 4 + 16 * (uint64_t)count);
    wr32(o + p + 12, count);
    int64_t rec = arch + 16;
    uint32_t width = rd32(b + arch);
    for (uint32_t i = 0; i < count; i++) {
        uint8_t *r = o + p + 16 + 16 * (int64_t)i;
        const uint32_t kind = rd32(b + rec);
        const uint8_t *fields = b + rec + 20;
        wr32(r, kind);
        if (kind == IBVI_LAYER_DENSE) {
            width = rd32(fields);
            wr32(r + 8, width);
            wr32(r + 12, rd32(fields + 4));
        } else {
            wr32(r + 4, rd32(fields));
            wr32(r + 8, width);
        }
        rec += (int64_t)rd64(b + rec + 4);
    }
    p += 16 + 16 * (int64_t)count;
    memcpy(o + p, "PARM", 4);
    wr64(o + p + 4, parm_size);
    memcpy(o + p + 12, b + parm, (size_t)parm_size);
    p += 12 + (int64_t)parm_size;
    if (optm > 0) {
        memcpy(o + p, "OPTM", 4);
        wr64(o + p + 4, optm_size);
        memcpy(o + p + 12, b + optm, (size_t)optm_size);
    }
    fix_file(o, n);
    *out_len = n;
    return o;
}

/* A copy of b with n bytes inserted at `at` (size and CRC repaired). */
static uint8_t *insert_bytes(const uint8_t *b, int64_t len, int64_t at,
                             const void *bytes, int64_t n, int64_t *out_len)
{
    uint8_t *c = malloc((size_t)(len + n));
    ck_assert_ptr_nonnull(c);
    memcpy(c, b, (size_t)at);
    memcpy(c + at, bytes, (size_t)n);
    memcpy(c + at + n, b + at, (size_t)(len - at));
    *out_len = len + n;
    fix_file(c, *out_len);
    return c;
}

static void add64(uint8_t *p, int64_t delta)
{
    wr64(p, rd64(p) + (uint64_t)delta);
}

/* ---- counting allocator --------------------------------------------------- */

typedef struct counts {
    long allocs, frees, fail_after;
    long long live;
} counts;

static void *count_alloc(void *opaque, size_t size)
{
    counts *c = opaque;
    if (c->fail_after >= 0 && c->allocs >= c->fail_after)
        return NULL;
    unsigned char *p = malloc(size + 16);
    if (!p)
        return NULL;
    memcpy(p, &size, sizeof size);
    c->allocs++;
    c->live += (long long)size;
    return p + 16;
}

static void count_free(void *opaque, void *ptr)
{
    counts *c = opaque;
    if (!ptr)
        return;
    unsigned char *p = (unsigned char *)ptr - 16;
    size_t size;
    memcpy(&size, p, sizeof size);
    c->frees++;
    c->live -= (long long)size;
    free(p);
}

static ibvi_allocator counting(counts *c)
{
    *c = (counts){.fail_after = -1};
    return (ibvi_allocator){count_alloc, count_free, c};
}

/* ---- networks --------------------------------------------------------------- */

#define IN 8
#define CLASSES 5
#define BATCH 16

/* 8 -> 16 (rank 3) -> relu -> 16 (deterministic) -> silu -> 5 (rank 4). */
static ibvi_net *medium_net(uint64_t seed)
{
    ibvi_net *net = NULL;
    CK_OK(ibvi_net_create(&net, IN, NULL));
    CK_OK(ibvi_net_add_dense(net, 16, 3));
    CK_OK(ibvi_net_add_activation(net, IBVI_ACT_RELU));
    CK_OK(ibvi_net_add_dense(net, 16, 0));
    CK_OK(ibvi_net_add_activation(net, IBVI_ACT_SILU));
    CK_OK(ibvi_net_add_dense(net, CLASSES, 4));
    CK_OK(ibvi_net_init(net, IBVI_PARAM_MUP, seed));
    return net;
}

/* 3 -> 4 (rank 2) -> tanh -> 3 (rank 2): a file of 508 bytes. */
static ibvi_net *small_net(void)
{
    ibvi_net *net = NULL;
    CK_OK(ibvi_net_create(&net, 3, NULL));
    CK_OK(ibvi_net_add_dense(net, 4, 2));
    CK_OK(ibvi_net_add_activation(net, IBVI_ACT_TANH));
    CK_OK(ibvi_net_add_dense(net, 3, 2));
    CK_OK(ibvi_net_init(net, IBVI_PARAM_SP, 7));
    return net;
}

/* The minibatch of training step `step` (the same for every run). */
static void batch(int64_t step, float *x, int32_t *y)
{
    uint64_t s = 1000 + (uint64_t)step;
    for (int i = 0; i < BATCH * IN; i++)
        x[i] = uniform_pm1(&s);
    for (int i = 0; i < BATCH; i++)
        y[i] = (int32_t)(mix64(&s) % CLASSES);
}

static void train(ibvi_net *net, ibvi_optimizer *opt, int64_t first,
                  int64_t steps)
{
    float x[BATCH * IN];
    int32_t y[BATCH];
    for (int64_t t = first; t < first + steps; t++) {
        batch(t, x, y);
        CK_OK(ibvi_train_step(net, opt, x, BATCH, 1, IBVI_LOSS_SOFTMAX_XENT,
                              y, NULL, NULL));
    }
}

/* The resume tests compare with a run never saved: bitwise only on the
 * per-step path (io.h; a resumed window equals the saving run's,
 * tests/test_deferred.c). */
static ibvi_optimizer *make_opt(ibvi_net *net, int32_t kind)
{
    ibvi_optimizer *opt = NULL;
    if (kind == IBVI_OPT_SGD) {
        CK_OK(ibvi_optimizer_create(&opt, net, IBVI_OPT_SGD, 0.02f));
        CK_OK(ibvi_optimizer_set_deferred(opt, 0));
        CK_OK(ibvi_optimizer_set_momentum(opt, 0.9f, 1));
    } else {
        CK_OK(ibvi_optimizer_create(&opt, net, IBVI_OPT_ADAM, 0.003f));
        CK_OK(ibvi_optimizer_set_adam(opt, 0.8f, 0.99f, 1e-6f));
    }
    return opt;
}

/* Asserts that two networks have the same architecture, settings and
 * bit-identical parameters. */
static void assert_same_net(ibvi_net *a, ibvi_net *b)
{
    ck_assert_int_eq(ibvi_net_input_dim(a), ibvi_net_input_dim(b));
    ck_assert_int_eq(ibvi_net_layer_count(a), ibvi_net_layer_count(b));
    ck_assert_int_eq(ibvi_net_parameterization(a), ibvi_net_parameterization(b));
    ck_assert_int_eq(ibvi_net_threads(a), ibvi_net_threads(b));
    uint64_t sa, sb, pa, pb;
    CK_OK(ibvi_net_seed(a, &sa));
    CK_OK(ibvi_net_seed(b, &sb));
    ck_assert_uint_eq(sa, sb);
    CK_OK(ibvi_net_rng_position(a, &pa));
    CK_OK(ibvi_net_rng_position(b, &pb));
    ck_assert_uint_eq(pa, pb);
    for (int32_t i = 0; i < ibvi_net_layer_count(a); i++) {
        ibvi_layer *la, *lb;
        CK_OK(ibvi_net_layer(a, i, &la));
        CK_OK(ibvi_net_layer(b, i, &lb));
        ck_assert_int_eq(ibvi_layer_get_kind(la), ibvi_layer_get_kind(lb));
        ck_assert_int_eq(ibvi_layer_get_role(la), ibvi_layer_get_role(lb));
        int32_t ia, oa, ra, ib, ob, rb;
        CK_OK(ibvi_layer_shape(la, &ia, &oa, &ra));
        CK_OK(ibvi_layer_shape(lb, &ib, &ob, &rb));
        ck_assert_int_eq(ia, ib);
        ck_assert_int_eq(oa, ob);
        ck_assert_int_eq(ra, rb);
        if (ibvi_layer_get_kind(la) == IBVI_LAYER_ACTIVATION) {
            ck_assert_int_eq(ibvi_layer_get_activation(la),
                             ibvi_layer_get_activation(lb));
            continue;
        }
        const int64_t P = ibvi_layer_param_count(la);
        ck_assert_int_eq(P, ibvi_layer_param_count(lb));
        if (P == 0) /* pools, flatten, identity residuals */
            continue;
        const int64_t n = P * (ra > 0 ? ra : 1);
        float *x = malloc(sizeof(float) * (size_t)n);
        float *y = malloc(sizeof(float) * (size_t)n);
        CK_OK(ibvi_layer_get_mean(la, x, P));
        CK_OK(ibvi_layer_get_mean(lb, y, P));
        ck_assert_msg(memcmp(x, y, sizeof(float) * (size_t)P) == 0,
                      "layer %d: means differ", (int)i);
        if (ra > 0) {
            CK_OK(ibvi_layer_get_factor(la, x, n));
            CK_OK(ibvi_layer_get_factor(lb, y, n));
            ck_assert_msg(memcmp(x, y, sizeof(float) * (size_t)n) == 0,
                          "layer %d: factors differ", (int)i);
        }
        free(x);
        free(y);
    }
}

/* Forward passes of a and b agree bit for bit: mean network, and sampled
 * passes from the current generator position and from position 0. */
static void assert_same_predictions(ibvi_net *a, ibvi_net *b)
{
    float x[BATCH * IN];
    int32_t y[BATCH];
    batch(999, x, y);
    const int32_t C = ibvi_net_output_dim(a);
    float *oa = malloc(sizeof(float) * 3 * BATCH * (size_t)C);
    float *ob = malloc(sizeof(float) * 3 * BATCH * (size_t)C);
    const size_t bytes1 = sizeof(float) * BATCH * (size_t)C;
    CK_OK(ibvi_net_forward_mean(a, x, BATCH, oa));
    CK_OK(ibvi_net_forward_mean(b, x, BATCH, ob));
    ck_assert(memcmp(oa, ob, bytes1) == 0);
    for (int round = 0; round < 2; round++) {
        CK_OK(ibvi_net_forward(a, x, BATCH, 3, oa));
        CK_OK(ibvi_net_forward(b, x, BATCH, 3, ob));
        ck_assert_msg(memcmp(oa, ob, 3 * bytes1) == 0,
                      "sampled forward differs (round %d)", round);
    }
    CK_OK(ibvi_net_set_rng_position(a, 0));
    CK_OK(ibvi_net_set_rng_position(b, 0));
    CK_OK(ibvi_net_forward(a, x, BATCH, 2, oa));
    CK_OK(ibvi_net_forward(b, x, BATCH, 2, ob));
    ck_assert(memcmp(oa, ob, 2 * bytes1) == 0);
    free(oa);
    free(ob);
}

/* Scratch directories: rootdir per test case (an unchecked fixture, run by
 * the parent process, so it is removed even when a test fails or times
 * out) and a fresh tmpdir inside it for every test. */
static char rootdir[64];
static char tmpdir[96];

static void setup_root(void)
{
    snprintf(rootdir, sizeof rootdir, "/tmp/ibvi_test_io_XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(rootdir));
}

static void setup_dir(void)
{
    snprintf(tmpdir, sizeof tmpdir, "%s/tXXXXXX", rootdir);
    ck_assert_ptr_nonnull(mkdtemp(tmpdir));
}

static void remove_tree(const char *path)
{
    struct stat st;
    if (lstat(path, &st) != 0)
        return;
    if (S_ISDIR(st.st_mode)) {
        DIR *d = opendir(path);
        if (d) {
            struct dirent *e;
            while ((e = readdir(d)) != NULL) {
                if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
                    continue;
                char sub[512];
                snprintf(sub, sizeof sub, "%s/%s", path, e->d_name);
                remove_tree(sub);
            }
            closedir(d);
        }
        rmdir(path);
    } else {
        unlink(path);
    }
}

static void teardown_dir(void) { remove_tree(tmpdir); }
static void teardown_root(void) { remove_tree(rootdir); }

static void path_in_dir(char *out, size_t size, const char *name)
{
    snprintf(out, size, "%s/%s", tmpdir, name);
}

/* Number of temporary files (".ibvi-<pid>-<n>", io.h) in tmpdir. */
static int temp_files_left(void)
{
    int count = 0;
    DIR *d = opendir(tmpdir);
    ck_assert_ptr_nonnull(d);
    struct dirent *e;
    while ((e = readdir(d)) != NULL)
        count += strncmp(e->d_name, ".ibvi-", 6) == 0;
    closedir(d);
    return count;
}

static uint8_t *read_all(const char *path, int64_t *len)
{
    FILE *f = fopen(path, "rb");
    ck_assert_ptr_nonnull(f);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *b = malloc((size_t)n + 1);
    ck_assert_int_eq((long)fread(b, 1, (size_t)n, f), n);
    fclose(f);
    *len = n;
    return b;
}

static void write_all(const char *path, const uint8_t *b, int64_t len)
{
    FILE *f = fopen(path, "wb");
    ck_assert_ptr_nonnull(f);
    ck_assert_int_eq((long)fwrite(b, 1, (size_t)len, f), (long)len);
    ck_assert_int_eq(fclose(f), 0);
}

static uint8_t *to_buffer(ibvi_net *net, ibvi_optimizer *opt, int64_t *len)
{
    CK_OK(ibvi_net_save_size(net, opt, len));
    uint8_t *b = malloc((size_t)*len);
    CK_OK(ibvi_net_save_buffer(net, opt, b, *len));
    return b;
}

/* Loads b[0..len) with a counting allocator; on failure checks that
 * nothing leaked and the outputs are NULL. Returns the status. */
static int try_load(const uint8_t *b, int64_t len, int with_opt)
{
    counts c;
    ibvi_allocator a = counting(&c);
    ibvi_net *net = (ibvi_net *)1;
    ibvi_optimizer *opt = (ibvi_optimizer *)1;
    ibvi_clear_error();
    int status = ibvi_net_load_buffer(&net, with_opt ? &opt : NULL, b, len, &a);
    if (status == IBVI_OK) {
        ck_assert_ptr_nonnull(net);
        if (with_opt)
            ibvi_optimizer_free(opt);
        ibvi_net_free(net);
    } else {
        ck_assert_ptr_null(net);
        if (with_opt)
            ck_assert_ptr_null(opt);
        ck_assert_msg(ibvi_last_error()[0] != '\0', "no message for %d",
                      status);
    }
    ck_assert_int_eq(c.live, 0);
    ck_assert_int_eq(c.allocs, c.frees);
    return status;
}

/* Patches a 32-bit field of a copy of b, repairs size and checksum, loads. */
static int load_patched32(const uint8_t *b, int64_t len, int64_t off,
                          uint32_t value, int with_opt)
{
    uint8_t *c = malloc((size_t)len);
    memcpy(c, b, (size_t)len);
    wr32(c + off, value);
    fix_file(c, len);
    int status = try_load(c, len, with_opt);
    free(c);
    return status;
}

static int load_patched64(const uint8_t *b, int64_t len, int64_t off,
                          uint64_t value, int with_opt)
{
    uint8_t *c = malloc((size_t)len);
    memcpy(c, b, (size_t)len);
    wr64(c + off, value);
    fix_file(c, len);
    int status = try_load(c, len, with_opt);
    free(c);
    return status;
}

static uint32_t fbits(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

/* ---- round trips -------------------------------------------------------------- */

START_TEST(test_roundtrip_without_optimizer)
{
    ibvi_net *net = medium_net(11);
    ibvi_optimizer *opt = make_opt(net, IBVI_OPT_SGD);
    train(net, opt, 0, 5);
    ibvi_optimizer_free(opt);
    CK_OK(ibvi_net_set_threads(net, 2));
    CK_OK(ibvi_net_set_rng_position(net, 12345));

    char path[128];
    path_in_dir(path, sizeof path, "model.ibvi");
    CK_OK(ibvi_net_save(net, NULL, path));
    ck_assert_int_eq(temp_files_left(), 0);

    ibvi_net *back = NULL;
    ibvi_optimizer *opt_back = (ibvi_optimizer *)1;
    CK_OK(ibvi_net_load(&back, &opt_back, path, NULL));
    ck_assert_ptr_null(opt_back); /* the file holds no optimizer */
    ck_assert_int_eq(ibvi_net_is_initialized(back), 1);
    assert_same_net(net, back);

    /* opt_out = NULL works too. */
    ibvi_net *again = NULL;
    CK_OK(ibvi_net_load(&again, NULL, path, NULL));
    assert_same_net(net, again);
    ibvi_net_free(again);

    assert_same_predictions(net, back);
    ibvi_net_free(back);
    ibvi_net_free(net);
}
END_TEST

/* Saves net+opt, loads both, checks settings and that the next training
 * steps agree bit for bit. */
static void roundtrip_with_optimizer(int32_t kind)
{
    ibvi_net *net = medium_net(21);
    ibvi_optimizer *opt = make_opt(net, kind);
    train(net, opt, 0, 6);
    CK_OK(ibvi_optimizer_set_lr(opt, 0.0123f));

    char path[128];
    path_in_dir(path, sizeof path, "with_opt.ibvi");
    CK_OK(ibvi_net_save(net, opt, path));

    counts c;
    ibvi_allocator a = counting(&c);
    ibvi_net *back = NULL;
    ibvi_optimizer *opt_back = NULL;
    CK_OK(ibvi_net_load(&back, &opt_back, path, &a));
    ck_assert_ptr_nonnull(opt_back);
    ck_assert_int_eq(ibvi_optimizer_step_count(opt_back), 6);
    float lr;
    CK_OK(ibvi_optimizer_get_lr(opt_back, &lr));
    ck_assert(lr == 0.0123f);
    assert_same_net(net, back);

    /* The state (velocity or moments) came back: further steps agree. */
    train(net, opt, 6, 3);
    train(back, opt_back, 6, 3);
    assert_same_net(net, back);
    ck_assert_int_eq(ibvi_optimizer_step_count(opt_back), 9);
    assert_same_predictions(net, back);
    /* The wrong kind's setter is refused: the kind came back too. */
    if (kind == IBVI_OPT_SGD)
        CK_STATUS(ibvi_optimizer_set_adam(opt_back, 0.9f, 0.999f, 1e-8f),
                  IBVI_ERR_INVALID_ARG);
    else
        CK_STATUS(ibvi_optimizer_set_momentum(opt_back, 0.9f, 0),
                  IBVI_ERR_INVALID_ARG);

    ibvi_optimizer_free(opt_back);
    ibvi_net_free(back);
    ck_assert_int_eq(c.live, 0);
    ck_assert_int_gt(c.allocs, 0);

    /* Skipping the optimizer state gives the same network. */
    CK_OK(ibvi_net_load(&back, NULL, path, NULL));
    ibvi_optimizer_free(opt);
    ibvi_net_free(back);
    ibvi_net_free(net);
}

START_TEST(test_roundtrip_sgd) { roundtrip_with_optimizer(IBVI_OPT_SGD); }
END_TEST

START_TEST(test_roundtrip_adam) { roundtrip_with_optimizer(IBVI_OPT_ADAM); }
END_TEST

START_TEST(test_buffer_matches_file)
{
    ibvi_net *net = medium_net(5);
    ibvi_optimizer *opt = make_opt(net, IBVI_OPT_ADAM);
    train(net, opt, 0, 2);
    char path[128];
    path_in_dir(path, sizeof path, "b.ibvi");
    CK_OK(ibvi_net_save(net, opt, path));
    int64_t flen, blen;
    uint8_t *f = read_all(path, &flen);
    uint8_t *b = to_buffer(net, opt, &blen);
    ck_assert_int_eq(flen, blen);
    ck_assert(memcmp(f, b, (size_t)flen) == 0);

    /* The layout of io.h (version 2): magic, version, size, sections of
     * tag, size, required bytes and payload, CRC-32. */
    ck_assert(memcmp(b, "IBVI", 4) == 0);
    ck_assert_uint_eq(rd32(b + 4), IBVI_FORMAT_VERSION);
    ck_assert_uint_eq(IBVI_FORMAT_VERSION, 2);
    ck_assert_uint_eq(rd64(b + 8), (uint64_t)blen);
    ck_assert(memcmp(b + 16, "HEAD", 4) == 0);
    ck_assert_uint_eq(rd64(b + 20), 24);                 /* size     */
    ck_assert_uint_eq(rd64(b + 28), 24);                 /* required */
    ck_assert_uint_eq(rd32(b + 36), IBVI_PARAM_MUP);
    ck_assert_uint_eq(rd32(b + 40), 1);                  /* threads  */
    uint64_t position;
    CK_OK(ibvi_net_rng_position(net, &position));
    ck_assert_uint_eq(rd64(b + 44), position);           /* position */
    ck_assert_uint_eq(rd64(b + 52), 5);                  /* seed     */
    ck_assert(memcmp(b + 60, "ARCH", 4) == 0);
    ck_assert_uint_eq(rd64(b + 64), 16 + 3 * 28 + 2 * 24);
    ck_assert_uint_eq(rd64(b + 72), 16 + 3 * 28 + 2 * 24);
    ck_assert_uint_eq(rd32(b + 80), IN);                 /* C        */
    ck_assert_uint_eq(rd32(b + 84), 1);                  /* H        */
    ck_assert_uint_eq(rd32(b + 88), 1);                  /* W        */
    ck_assert_uint_eq(rd32(b + 92), 5);                  /* layers   */
    /* records: kind, length, required, fields */
    ck_assert_uint_eq(rd32(b + 96), IBVI_LAYER_DENSE);
    ck_assert_uint_eq(rd64(b + 100), 28);
    ck_assert_uint_eq(rd64(b + 108), 28);
    ck_assert_uint_eq(rd32(b + 116), 16);                /* outputs  */
    ck_assert_uint_eq(rd32(b + 120), 3);                 /* rank     */
    ck_assert_uint_eq(rd32(b + 124), IBVI_LAYER_ACTIVATION);
    ck_assert_uint_eq(rd64(b + 128), 24);
    ck_assert_uint_eq(rd64(b + 136), 24);
    ck_assert_uint_eq(rd32(b + 144), IBVI_ACT_RELU);
    ck_assert_uint_eq(rd32(b + 200), IBVI_LAYER_DENSE);
    ck_assert_uint_eq(rd32(b + 220), CLASSES);
    ck_assert_uint_eq(rd32(b + 224), 4);
    int64_t parm = section_payload(b, blen, "PARM");
    ck_assert_int_eq(parm, 228 + 20);
    ibvi_layer *l0;
    CK_OK(ibvi_net_layer(net, 0, &l0));
    float m0[8 * 16 + 16];
    CK_OK(ibvi_layer_get_mean(l0, m0, 8 * 16 + 16));
    ck_assert_uint_eq(rd32(b + parm), fbits(m0[0]));
    ck_assert_uint_eq(rd32(b + parm + 4), fbits(m0[1]));
    int64_t optm = section_payload(b, blen, "OPTM");
    ck_assert_int_gt(optm, 0);
    ck_assert_uint_eq(rd32(b + optm), IBVI_OPT_ADAM);
    ck_assert_uint_eq(rd64(b + optm + 28), 2); /* steps */
    ck_assert_uint_eq(rd64(b + optm + 36),
                      2 * (uint64_t)ibvi_net_param_count(net));
    ck_assert_uint_eq(rd32(b + blen - 4), crc32_ref(b, blen - 4));

    /* A buffer larger than needed is fine; a smaller one is refused and
     * left unchanged. */
    uint8_t *big = malloc((size_t)blen + 10);
    memset(big, 0xAB, (size_t)blen + 10);
    CK_OK(ibvi_net_save_buffer(net, opt, big, blen + 10));
    ck_assert(memcmp(big, b, (size_t)blen) == 0);
    ck_assert_uint_eq(big[blen], 0xAB);
    memset(big, 0xCD, (size_t)blen + 10);
    CK_STATUS(ibvi_net_save_buffer(net, opt, big, blen - 1), IBVI_ERR_SHAPE);
    for (int64_t i = 0; i < blen + 10; i++)
        ck_assert_uint_eq(big[i], 0xCD);

    ibvi_net *back = NULL;
    ibvi_optimizer *ob = NULL;
    CK_OK(ibvi_net_load_buffer(&back, &ob, b, blen, NULL));
    assert_same_net(net, back);
    ck_assert_int_eq(ibvi_optimizer_step_count(ob), 2);
    /* Saving the loaded pair gives the same bytes. */
    int64_t len2;
    uint8_t *b2 = to_buffer(back, ob, &len2);
    ck_assert_int_eq(len2, blen);
    ck_assert(memcmp(b2, b, (size_t)blen) == 0);
    free(b2);
    ibvi_optimizer_free(ob);
    ibvi_net_free(back);
    free(big);
    free(f);
    free(b);
    ibvi_optimizer_free(opt);
    ibvi_net_free(net);
}
END_TEST

/* Train 2k steps straight, or k steps, save, load, k more: bit-identical. */
static void resume(int32_t kind, int via_file)
{
    const int64_t k = 7;
    ibvi_net *ref = medium_net(33);
    ibvi_optimizer *ref_opt = make_opt(ref, kind);
    train(ref, ref_opt, 0, 2 * k);

    ibvi_net *net = medium_net(33);
    ibvi_optimizer *opt = make_opt(net, kind);
    train(net, opt, 0, k);
    ibvi_net *back = NULL;
    ibvi_optimizer *opt_back = NULL;
    if (via_file) {
        char path[128];
        path_in_dir(path, sizeof path, "resume.ibvi");
        CK_OK(ibvi_net_save(net, opt, path));
        ibvi_optimizer_free(opt);
        ibvi_net_free(net);
        CK_OK(ibvi_net_load(&back, &opt_back, path, NULL));
    } else {
        int64_t len;
        uint8_t *b = to_buffer(net, opt, &len);
        ibvi_optimizer_free(opt);
        ibvi_net_free(net);
        CK_OK(ibvi_net_load_buffer(&back, &opt_back, b, len, NULL));
        free(b);
    }
    CK_OK(ibvi_optimizer_set_deferred(opt_back, 0)); /* not in the file */
    train(back, opt_back, k, k);
    assert_same_net(ref, back);
    ck_assert_int_eq(ibvi_optimizer_step_count(opt_back), 2 * k);
    assert_same_predictions(ref, back);
    ibvi_optimizer_free(opt_back);
    ibvi_net_free(back);
    ibvi_optimizer_free(ref_opt);
    ibvi_net_free(ref);
}

START_TEST(test_resume_sgd) { resume(IBVI_OPT_SGD, 1); }
END_TEST

START_TEST(test_resume_adam) { resume(IBVI_OPT_ADAM, 0); }
END_TEST

START_TEST(test_resume_plain_sgd)
{
    /* SGD without momentum: the velocity is unused but still restored. */
    const int64_t k = 4;
    ibvi_net *ref = medium_net(3);
    ibvi_optimizer *ro = NULL;
    CK_OK(ibvi_optimizer_create(&ro, ref, IBVI_OPT_SGD, 0.05f));
    CK_OK(ibvi_optimizer_set_deferred(ro, 0)); /* as make_opt's */
    train(ref, ro, 0, 2 * k);
    ibvi_net *net = medium_net(3);
    ibvi_optimizer *o = NULL;
    CK_OK(ibvi_optimizer_create(&o, net, IBVI_OPT_SGD, 0.05f));
    CK_OK(ibvi_optimizer_set_deferred(o, 0));
    train(net, o, 0, k);
    int64_t len;
    uint8_t *b = to_buffer(net, o, &len);
    ibvi_optimizer_free(o);
    ibvi_net_free(net);
    CK_OK(ibvi_net_load_buffer(&net, &o, b, len, NULL));
    CK_OK(ibvi_optimizer_set_deferred(o, 0)); /* not in the file */
    train(net, o, k, k);
    assert_same_net(ref, net);
    free(b);
    ibvi_optimizer_free(o);
    ibvi_net_free(net);
    ibvi_optimizer_free(ro);
    ibvi_net_free(ref);
}
END_TEST

/* ---- damaged files -------------------------------------------------------------- */

START_TEST(test_truncation_every_length)
{
    ibvi_net *net = small_net();
    for (int with = 0; with < 2; with++) {
        ibvi_optimizer *opt = with ? make_opt(net, IBVI_OPT_ADAM) : NULL;
        int64_t len;
        uint8_t *b = to_buffer(net, opt, &len);
        ck_assert_int_eq(len, with ? 572 + 20 + 44 + 4 * 2 * 93 : 572);
        for (int64_t n = 0; n < len; n++) {
            /* A fresh copy of exactly n bytes, so a read past n would be
             * an out-of-bounds read (visible under sanitizers). */
            uint8_t *c = malloc((size_t)(n ? n : 1));
            memcpy(c, b, (size_t)n);
            for (int w = 0; w < 2; w++) {
                int status = try_load(c, n, w);
                ck_assert_msg(status == IBVI_ERR_FORMAT,
                              "length %lld of %lld: status %d (%s)",
                              (long long)n, (long long)len, status,
                              ibvi_last_error());
            }
            free(c);
        }
        ck_assert_int_eq(try_load(b, len, 1), IBVI_OK);
        free(b);
        ibvi_optimizer_free(opt);
    }
    ibvi_net_free(net);
}
END_TEST

/* Cuts at and around every section boundary of a file of either version. */
static void cut_at_sections(const uint8_t *b, int64_t len)
{
    const int64_t h = rd32(b + 4) == 2 ? 20 : 12; /* section header */
    const int64_t head = section_payload(b, len, "HEAD") - h;
    const int64_t arch = section_payload(b, len, "ARCH") - h;
    const int64_t parm = section_payload(b, len, "PARM") - h;
    const int64_t optm = section_payload(b, len, "OPTM") - h;
    const int64_t cuts[] = {0, 4, 8, 16, head + h, arch, arch + h, parm,
                            parm + h, optm, optm + h, optm + h + 44, len - 4,
                            len - 1};
    char path[128];
    path_in_dir(path, sizeof path, "cut.ibvi");
    for (size_t i = 0; i < sizeof cuts / sizeof cuts[0]; i++) {
        write_all(path, b, cuts[i]);
        ibvi_net *back = (ibvi_net *)1;
        ibvi_optimizer *ob = (ibvi_optimizer *)1;
        int status = ibvi_net_load(&back, &ob, path, NULL);
        ck_assert_msg(status == IBVI_ERR_FORMAT, "cut at %lld: %d (%s)",
                      (long long)cuts[i], status, ibvi_last_error());
        ck_assert_ptr_null(back);
        ck_assert_ptr_null(ob);
        ck_assert_ptr_nonnull(strstr(ibvi_last_error(), path));
    }
    /* Section boundaries, with the size field and checksum repaired so
     * that the parser itself must notice the missing section. */
    const int64_t sections[] = {head, arch, parm, optm};
    for (size_t i = 0; i < 4; i++) {
        const int64_t n = sections[i] + 4;
        uint8_t *c = malloc((size_t)n);
        memcpy(c, b, (size_t)sections[i]);
        fix_file(c, n);
        ck_assert_int_eq(try_load(c, n, 1),
                         i == 3 ? IBVI_OK : IBVI_ERR_FORMAT);
        free(c);
    }
}

START_TEST(test_truncation_at_sections_in_files)
{
    ibvi_net *net = small_net();
    ibvi_optimizer *opt = make_opt(net, IBVI_OPT_SGD);
    int64_t len, len1;
    uint8_t *b = to_buffer(net, opt, &len);
    cut_at_sections(b, len);
    uint8_t *b1 = v2_to_v1(b, len, &len1);
    cut_at_sections(b1, len1);
    free(b1);
    free(b);
    ibvi_optimizer_free(opt);
    ibvi_net_free(net);
}
END_TEST

START_TEST(test_flipped_bytes_and_bits)
{
    ibvi_net *net = small_net();
    ibvi_optimizer *opt = make_opt(net, IBVI_OPT_SGD);
    int64_t len;
    uint8_t *b = to_buffer(net, opt, &len);
    uint8_t *c = malloc((size_t)len);
    for (int64_t i = 0; i < len; i++) {
        for (int pattern = 0; pattern < 9; pattern++) {
            const uint8_t mask = pattern == 8 ? 0xFF : (uint8_t)(1u << pattern);
            memcpy(c, b, (size_t)len);
            c[i] ^= mask;
            const int status = try_load(c, len, 1);
            if (i >= 4 && i < 8 && status == IBVI_ERR_VERSION)
                continue; /* the version field now reads a newer version */
            ck_assert_msg(status == IBVI_ERR_CHECKSUM ||
                              status == IBVI_ERR_FORMAT,
                          "byte %lld ^ 0x%02x: status %d (%s)", (long long)i,
                          mask, status, ibvi_last_error());
            if (i >= 16 && i < len - 4)
                ck_assert_int_eq(status, IBVI_ERR_CHECKSUM);
        }
    }
    free(c);
    free(b);
    ibvi_optimizer_free(opt);
    ibvi_net_free(net);
}
END_TEST

START_TEST(test_magic_version_empty_missing)
{
    ibvi_net *net = small_net();
    int64_t len;
    uint8_t *b = to_buffer(net, NULL, &len);
    uint8_t *c = malloc((size_t)len);

    memcpy(c, b, (size_t)len);
    memcpy(c, "IBVJ", 4);
    fix_file(c, len);
    ck_assert_int_eq(try_load(c, len, 1), IBVI_ERR_FORMAT);
    ck_assert_ptr_nonnull(strstr(ibvi_last_error(), "not a libibvi file"));
    memcpy(c, "\x89PNG", 4);
    ck_assert_int_eq(try_load(c, len, 1), IBVI_ERR_FORMAT);

    /* A newer version is refused before anything else is read. */
    memcpy(c, b, (size_t)len);
    wr32(c + 4, IBVI_FORMAT_VERSION + 1);
    ck_assert_int_eq(try_load(c, len, 1), IBVI_ERR_VERSION);
    fix_file(c, len);
    ck_assert_int_eq(try_load(c, len, 1), IBVI_ERR_VERSION);
    ck_assert_int_eq(try_load(c, 8, 1), IBVI_ERR_VERSION);
    wr32(c + 4, 0xFFFFFFFFu);
    ck_assert_int_eq(try_load(c, len, 0), IBVI_ERR_VERSION);
    wr32(c + 4, 0);
    fix_file(c, len);
    ck_assert_int_eq(try_load(c, len, 1), IBVI_ERR_FORMAT);

    /* The recorded size disagrees with the actual size. */
    memcpy(c, b, (size_t)len);
    wr64(c + 8, (uint64_t)len + 1);
    ck_assert_int_eq(try_load(c, len, 1), IBVI_ERR_FORMAT);
    wr64(c + 8, UINT64_MAX);
    ck_assert_int_eq(try_load(c, len, 1), IBVI_ERR_FORMAT);

    /* Empty buffer and empty, missing, directory and NULL paths. */
    ck_assert_int_eq(try_load(b, 0, 1), IBVI_ERR_FORMAT);
    char path[128];
    path_in_dir(path, sizeof path, "empty.ibvi");
    write_all(path, b, 0);
    ibvi_net *back = (ibvi_net *)1;
    CK_STATUS(ibvi_net_load(&back, NULL, path, NULL), IBVI_ERR_FORMAT);
    ck_assert_ptr_null(back);
    ck_assert_ptr_nonnull(strstr(ibvi_last_error(), "empty"));
    path_in_dir(path, sizeof path, "missing.ibvi");
    back = (ibvi_net *)1;
    CK_STATUS(ibvi_net_load(&back, NULL, path, NULL), IBVI_ERR_IO);
    ck_assert_ptr_null(back);
    ck_assert_ptr_nonnull(strstr(ibvi_last_error(), "missing.ibvi"));
    CK_STATUS(ibvi_net_load(&back, NULL, tmpdir, NULL), IBVI_ERR_IO);
    CK_STATUS(ibvi_net_load(&back, NULL, NULL, NULL), IBVI_ERR_INVALID_ARG);
    CK_STATUS(ibvi_net_load(NULL, NULL, path, NULL), IBVI_ERR_INVALID_ARG);
    CK_STATUS(ibvi_net_load_buffer(&back, NULL, NULL, 10, NULL),
              IBVI_ERR_INVALID_ARG);
    CK_STATUS(ibvi_net_load_buffer(&back, NULL, b, -1, NULL),
              IBVI_ERR_INVALID_ARG);
    CK_STATUS(ibvi_net_load_buffer(NULL, NULL, b, len, NULL),
              IBVI_ERR_INVALID_ARG);
    ibvi_allocator half = {NULL, NULL, NULL};
    CK_STATUS(ibvi_net_load_buffer(&back, NULL, b, len, &half),
              IBVI_ERR_INVALID_ARG);
    CK_STATUS(ibvi_net_load(&back, NULL, path, &half), IBVI_ERR_INVALID_ARG);

    /* Foreign, newer and mis-sized files are refused from their first 16
     * bytes, before the file is read into memory. */
    counts cnt;
    ibvi_allocator ca = counting(&cnt);
    path_in_dir(path, sizeof path, "foreign.bin");
    memcpy(c, b, (size_t)len);
    memcpy(c, "GIF8", 4);
    write_all(path, c, len);
    CK_STATUS(ibvi_net_load(&back, NULL, path, &ca), IBVI_ERR_FORMAT);
    memcpy(c, b, (size_t)len);
    wr32(c + 4, 77);
    write_all(path, c, len);
    CK_STATUS(ibvi_net_load(&back, NULL, path, &ca), IBVI_ERR_VERSION);
    ck_assert_ptr_nonnull(strstr(ibvi_last_error(), "77"));
    write_all(path, b, len - 1);
    CK_STATUS(ibvi_net_load(&back, NULL, path, &ca), IBVI_ERR_FORMAT);
    write_all(path, b, 10);
    CK_STATUS(ibvi_net_load(&back, NULL, path, &ca), IBVI_ERR_FORMAT);
    ck_assert_int_eq(cnt.allocs, 0);
    /* A damaged body is found by the checksum. */
    memcpy(c, b, (size_t)len);
    c[200] ^= 0x10;
    write_all(path, c, len);
    CK_STATUS(ibvi_net_load(&back, NULL, path, &ca), IBVI_ERR_CHECKSUM);
    ck_assert_int_eq(cnt.live, 0);

    /* A valid file in a regular file loads. */
    path_in_dir(path, sizeof path, "ok.ibvi");
    write_all(path, b, len);
    CK_OK(ibvi_net_load(&back, NULL, path, NULL));
    ibvi_net_free(back);
    free(c);
    free(b);
    ibvi_net_free(net);
}
END_TEST

/* Files with a valid checksum but inconsistent content (as a buggy or
 * malicious writer could produce): every one is refused with FORMAT. */
START_TEST(test_inconsistent_content)
{
    ibvi_net *net = small_net();
    ibvi_optimizer *sgd = make_opt(net, IBVI_OPT_SGD);
    int64_t len, len2;
    uint8_t *b2 = to_buffer(net, sgd, &len2);
    uint8_t *b = v2_to_v1(b2, len2, &len); /* the offsets below: version 1 */
    free(b2);
    const int F = IBVI_ERR_FORMAT;

    /* Control: a patch to a harmless value loads (the repair works). */
    ck_assert_int_eq(load_patched64(b, len, 36, 999, 1), IBVI_OK);

    /* HEAD (payload at 28). */
    ck_assert_int_eq(load_patched64(b, len, 20, 27, 1), F);        /* size  */
    ck_assert_int_eq(load_patched64(b, len, 20, UINT64_MAX, 1), F);
    ck_assert_int_eq(load_patched32(b, len, 28, 0, 1), F);         /* input */
    ck_assert_int_eq(load_patched32(b, len, 28, 0x7FFFFFFF, 1), F);
    ck_assert_int_eq(load_patched32(b, len, 28, 0x80000000u, 1), F);
    ck_assert_int_eq(load_patched32(b, len, 28, 4, 1), F);
    ck_assert_int_eq(load_patched32(b, len, 32, 2, 1), F);         /* param */
    ck_assert_int_eq(load_patched32(b, len, 52, 0, 1), F);         /* threads */
    ck_assert_int_eq(load_patched32(b, len, 52, 5000, 1), F);
    ck_assert_int_eq(load_patched32(b, len, 16, 0x44414568u, 1), F); /* "hEAD" */

    /* ARCH (count at 68, layer i at 72 + 16 i: kind, act, outputs, rank). */
    ck_assert_int_eq(load_patched32(b, len, 68, 0, 1), F);
    ck_assert_int_eq(load_patched32(b, len, 68, 2, 1), F);
    ck_assert_int_eq(load_patched32(b, len, 68, 0xFFFFFFFFu, 1), F);
    ck_assert_int_eq(load_patched64(b, len, 60, 1ULL << 62, 1), F);
    ck_assert_int_eq(load_patched32(b, len, 72, 7, 1), F);          /* kind */
    ck_assert_int_eq(load_patched32(b, len, 76, 1, 1), F);   /* dense w/ act */
    ck_assert_int_eq(load_patched32(b, len, 80, 0, 1), F);       /* outputs */
    ck_assert_int_eq(load_patched32(b, len, 80, 0x7FFFFFFF, 1), F);
    ck_assert_int_eq(load_patched32(b, len, 80, 0xFFFFFFFFu, 1), F);
    ck_assert_int_eq(load_patched32(b, len, 80, 5, 1), F);  /* size mismatch */
    ck_assert_int_eq(load_patched32(b, len, 84, 17, 1), F);  /* rank > P=16 */
    ck_assert_int_eq(load_patched32(b, len, 84, 0x7FFFFFFF, 1), F);
    ck_assert_int_eq(load_patched32(b, len, 84, 0xFFFFFFFFu, 1), F);
    ck_assert_int_eq(load_patched32(b, len, 84, 1, 1), F);  /* size mismatch */
    ck_assert_int_eq(load_patched32(b, len, 88, 0, 1), F);  /* act -> dense */
    ck_assert_int_eq(load_patched32(b, len, 92, 0, 1), F);  /* activation 0 */
    ck_assert_int_eq(load_patched32(b, len, 92, 9, 1), F);
    ck_assert_int_eq(load_patched32(b, len, 96, 3, 1), F);  /* act width */
    ck_assert_int_eq(load_patched32(b, len, 100, 1, 1), F); /* act rank */
    /* The last layer an activation. */
    ck_assert_int_eq(load_patched32(b, len, 104, 1, 1), F);

    /* PARM (header at 120, payload at 132: 93 floats). */
    ck_assert_int_eq(load_patched64(b, len, 124, 4 * 93 - 4, 1), F);
    ck_assert_int_eq(load_patched64(b, len, 124, 4 * 93 + 4, 1), F);
    ck_assert_int_eq(load_patched32(b, len, 120, 0x4D524150u ^ 1, 1), F);
    const uint32_t nan = 0x7FC00000u, inf = 0x7F800000u;
    ck_assert_int_eq(load_patched32(b, len, 132, nan, 1), F);     /* mean  */
    ck_assert_int_eq(load_patched32(b, len, 132 + 4 * 16, inf, 0), F);
    ck_assert_int_eq(load_patched32(b, len, 132 + 4 * 92, nan, 0), F);
    ck_assert_int_eq(load_patched32(b, len, 132, fbits(-0.0f), 1), IBVI_OK);

    /* OPTM (header at 504, payload at 516). */
    ck_assert_int_eq(load_patched32(b, len, 516, 2, 1), F);        /* kind */
    ck_assert_int_eq(load_patched32(b, len, 516, 1, 1), F);  /* Adam: count */
    ck_assert_int_eq(load_patched32(b, len, 520, 0, 1), F);        /* lr */
    ck_assert_int_eq(load_patched32(b, len, 520, nan, 1), F);
    ck_assert_int_eq(load_patched32(b, len, 520, fbits(-1.0f), 1), F);
    ck_assert_int_eq(load_patched32(b, len, 524, fbits(1.0f), 1), F);
    ck_assert_int_eq(load_patched32(b, len, 528, 2, 1), F);        /* nesterov */
    ck_assert_int_eq(load_patched32(b, len, 532, fbits(1.5f), 1), F);
    ck_assert_int_eq(load_patched32(b, len, 540, 0, 1), F);        /* eps */
    ck_assert_int_eq(load_patched64(b, len, 544, UINT64_MAX, 1), F); /* steps */
    ck_assert_int_eq(load_patched64(b, len, 552, 92, 1), F);        /* count */
    ck_assert_int_eq(load_patched64(b, len, 552, UINT64_MAX, 1), F);
    ck_assert_int_eq(load_patched64(b, len, 508, 44, 1), F);        /* size */
    ck_assert_int_eq(load_patched32(b, len, 560, nan, 1), F);       /* state */
    ck_assert_int_eq(load_patched32(b, len, 504, 0x4D54504Fu ^ 4, 1), F);
    /* Structure is always checked; the state values only when loaded. */
    ck_assert_int_eq(load_patched32(b, len, 560, nan, 0), IBVI_OK);
    ck_assert_int_eq(load_patched32(b, len, 516, 2, 0), F);

    /* Unknown data after the last section. */
    uint8_t *c = malloc((size_t)len + 16);
    memcpy(c, b, (size_t)(len - 4));
    memcpy(c + len - 4, "XTRA\x04\0\0\0\0\0\0\0abcd", 16);
    fix_file(c, len + 16);
    ck_assert_int_eq(try_load(c, len + 16, 1), F);
    ck_assert_int_eq(try_load(c, len + 16, 0), F);
    free(c);
    free(b);

    /* Adam: a negative second moment is impossible, hence refused. */
    ibvi_optimizer_free(sgd);
    ibvi_optimizer *adam = make_opt(net, IBVI_OPT_ADAM);
    b2 = to_buffer(net, adam, &len2);
    b = v2_to_v1(b2, len2, &len);
    free(b2);
    ck_assert_int_eq(load_patched32(b, len, 560 + 4 * 93, fbits(-1.0f), 1), F);
    ck_assert_int_eq(load_patched32(b, len, 560, fbits(-1.0f), 1), IBVI_OK);
    ck_assert_int_eq(load_patched32(b, len, 516, 0, 1), F);  /* SGD: count */
    free(b);
    ibvi_optimizer_free(adam);
    ibvi_net_free(net);
}
END_TEST

/* Random damage with the checksum repaired: the loader must answer with a
 * status (usually FORMAT; VERSION for what reads as an unknown layer kind
 * or required section) and never crash, read out of bounds or leak. */
START_TEST(test_random_damage_with_valid_checksum)
{
    ibvi_net *net = small_net();
    ibvi_optimizer *opt = make_opt(net, IBVI_OPT_ADAM);
    int64_t len;
    uint8_t *b = to_buffer(net, opt, &len);
    uint64_t s = 42;
    int ok = 0, format = 0;
    for (int iter = 0; iter < 4000; iter++) {
        int64_t n = len;
        if (iter % 4 == 3)
            n = 24 + (int64_t)(mix64(&s) % (uint64_t)(len - 24));
        uint8_t *c = malloc((size_t)n);
        memcpy(c, b, (size_t)n);
        const int edits = 1 + (int)(mix64(&s) % 4);
        for (int e = 0; e < edits; e++) {
            /* Mostly hit the structural fields. */
            const int64_t limit = mix64(&s) % 2 && n - 4 > 132 ? 132 : n - 4;
            const int64_t at = 16 + (int64_t)(mix64(&s) % (uint64_t)(limit - 16));
            c[at] = (uint8_t)mix64(&s);
        }
        fix_file(c, n);
        const int status = try_load(c, n, (int)(iter & 1));
        ck_assert_msg(status == IBVI_OK || status == IBVI_ERR_FORMAT ||
                          status == IBVI_ERR_VERSION,
                      "iteration %d: status %d (%s)", iter, status,
                      ibvi_last_error());
        ok += status == IBVI_OK;
        format += status == IBVI_ERR_FORMAT;
        free(c);
    }
    ck_assert_int_gt(format, 1000);
    ck_assert_int_gt(ok, 10);
    free(b);
    ibvi_optimizer_free(opt);
    ibvi_net_free(net);
}
END_TEST

START_TEST(test_out_of_memory_while_loading)
{
    ibvi_net *net = medium_net(1);
    ibvi_optimizer *opt = make_opt(net, IBVI_OPT_SGD);
    int64_t len;
    uint8_t *b = to_buffer(net, opt, &len);
    char path[128];
    path_in_dir(path, sizeof path, "oom.ibvi");
    write_all(path, b, len);
    counts c;
    ibvi_allocator a = counting(&c);
    ibvi_net *back = NULL;
    ibvi_optimizer *ob = NULL;
    CK_OK(ibvi_net_load(&back, &ob, path, &a));
    const long needed = c.allocs;
    ibvi_optimizer_free(ob);
    ibvi_net_free(back);
    ck_assert_int_eq(c.live, 0);
    for (long k = 0; k < needed; k++) {
        c = (counts){.fail_after = k};
        back = (ibvi_net *)1;
        CK_STATUS(ibvi_net_load(&back, &ob, path, &a), IBVI_ERR_NOMEM);
        ck_assert_ptr_null(back);
        ck_assert_ptr_null(ob);
        ck_assert_int_eq(c.live, 0);
        c = (counts){.fail_after = k};
        CK_STATUS(ibvi_net_load_buffer(&back, &ob, b, len, &a),
                  k < needed - 2 ? IBVI_ERR_NOMEM : IBVI_OK);
        if (back) {
            ibvi_optimizer_free(ob);
            ibvi_net_free(back);
        }
        ck_assert_int_eq(c.live, 0);
    }
    free(b);
    ibvi_optimizer_free(opt);
    ibvi_net_free(net);
}
END_TEST

/* ---- saving: arguments and atomic replacement --------------------------------- */

START_TEST(test_save_arguments)
{
    ibvi_net *net = medium_net(2), *other = medium_net(3);
    ibvi_optimizer *opt_other = make_opt(other, IBVI_OPT_SGD);
    char path[128];
    path_in_dir(path, sizeof path, "args.ibvi");
    int64_t size;
    uint8_t buf[16];
    CK_STATUS(ibvi_net_save(NULL, NULL, path), IBVI_ERR_INVALID_ARG);
    CK_STATUS(ibvi_net_save(net, NULL, NULL), IBVI_ERR_INVALID_ARG);
    CK_STATUS(ibvi_net_save(net, NULL, ""), IBVI_ERR_INVALID_ARG);
    CK_STATUS(ibvi_net_save(net, opt_other, path), IBVI_ERR_INVALID_ARG);
    CK_STATUS(ibvi_net_save_size(net, opt_other, &size), IBVI_ERR_INVALID_ARG);
    CK_STATUS(ibvi_net_save_size(net, NULL, NULL), IBVI_ERR_INVALID_ARG);
    CK_STATUS(ibvi_net_save_size(NULL, NULL, &size), IBVI_ERR_INVALID_ARG);
    CK_STATUS(ibvi_net_save_buffer(net, NULL, NULL, 100), IBVI_ERR_INVALID_ARG);
    CK_STATUS(ibvi_net_save_buffer(net, NULL, buf, sizeof buf), IBVI_ERR_SHAPE);
    ibvi_net *fresh = NULL;
    CK_OK(ibvi_net_create(&fresh, 4, NULL));
    CK_OK(ibvi_net_add_dense(fresh, 2, 1));
    CK_STATUS(ibvi_net_save(fresh, NULL, path), IBVI_ERR_STATE);
    CK_STATUS(ibvi_net_save_size(fresh, NULL, &size), IBVI_ERR_STATE);
    ck_assert_int_eq(access(path, F_OK), -1);
    ibvi_net_free(fresh);
    ibvi_optimizer_free(opt_other);
    ibvi_net_free(other);
    ibvi_net_free(net);
}
END_TEST

START_TEST(test_save_into_missing_directory)
{
    ibvi_net *net = medium_net(2);
    char path[160];
    path_in_dir(path, sizeof path, "no/such/dir/model.ibvi");
    CK_STATUS(ibvi_net_save(net, NULL, path), IBVI_ERR_IO);
    ck_assert_ptr_nonnull(strstr(ibvi_last_error(), "model.ibvi"));
    ck_assert_int_eq(access(path, F_OK), -1);
    ck_assert_int_eq(temp_files_left(), 0);
    ibvi_net_free(net);
}
END_TEST

/* Saving over an existing file fails half-way (the file-size limit makes
 * write() fail with EFBIG, as a full disk would): the old file is intact. */
START_TEST(test_failed_save_keeps_previous_file)
{
    ibvi_net *old_net = small_net();
    char path[128];
    path_in_dir(path, sizeof path, "keep.ibvi");
    CK_OK(ibvi_net_save(old_net, NULL, path));
    int64_t old_len;
    uint8_t *old_bytes = read_all(path, &old_len);

    ibvi_net *big = medium_net(9); /* larger than the limit below */
    ibvi_optimizer *opt = make_opt(big, IBVI_OPT_ADAM);
    int64_t big_size;
    CK_OK(ibvi_net_save_size(big, opt, &big_size));
    ck_assert_int_gt(big_size, 3 * 4096);

    struct rlimit saved;
    ck_assert_int_eq(getrlimit(RLIMIT_FSIZE, &saved), 0);
    struct rlimit tight = saved;
    tight.rlim_cur = 4096;
    void (*previous)(int) = signal(SIGXFSZ, SIG_IGN);
    ck_assert_int_eq(setrlimit(RLIMIT_FSIZE, &tight), 0);
    const int status = ibvi_net_save(big, opt, path);
    ck_assert_int_eq(setrlimit(RLIMIT_FSIZE, &saved), 0);
    signal(SIGXFSZ, previous);
    ck_assert_msg(status == IBVI_ERR_IO, "status %d (%s)", status,
                  ibvi_last_error());
    ck_assert_ptr_nonnull(strstr(ibvi_last_error(), "unchanged"));

    int64_t now_len;
    uint8_t *now = read_all(path, &now_len);
    ck_assert_int_eq(now_len, old_len);
    ck_assert(memcmp(now, old_bytes, (size_t)old_len) == 0);
    ck_assert_int_eq(temp_files_left(), 0);
    ibvi_net *back = NULL;
    CK_OK(ibvi_net_load(&back, NULL, path, NULL));
    assert_same_net(old_net, back);
    ibvi_net_free(back);

    /* Without the limit the same save replaces the file. */
    CK_OK(ibvi_net_save(big, opt, path));
    ibvi_optimizer *ob = NULL;
    CK_OK(ibvi_net_load(&back, &ob, path, NULL));
    assert_same_net(big, back);
    ck_assert_int_eq(temp_files_left(), 0);
    ibvi_optimizer_free(ob);
    ibvi_net_free(back);
    free(now);
    free(old_bytes);
    ibvi_optimizer_free(opt);
    ibvi_net_free(big);
    ibvi_net_free(old_net);
}
END_TEST

START_TEST(test_rename_failure_and_temp_collision)
{
    ibvi_net *net = small_net();
    /* path is a non-empty directory: rename() fails after the write. */
    char path[128], inner[160];
    path_in_dir(path, sizeof path, "adir");
    ck_assert_int_eq(mkdir(path, 0755), 0);
    snprintf(inner, sizeof inner, "%s/x", path);
    write_all(inner, (const uint8_t *)"x", 1);
    CK_STATUS(ibvi_net_save(net, NULL, path), IBVI_ERR_IO);
    ck_assert_int_eq(temp_files_left(), 0);
    ck_assert_int_eq(access(inner, F_OK), 0);

    /* A stale temporary name is never reused or clobbered. */
    path_in_dir(path, sizeof path, "collide.ibvi");
    char stale[192];
    snprintf(stale, sizeof stale, "%s/.ibvi-%ld-0", tmpdir, (long)getpid());
    write_all(stale, (const uint8_t *)"stale", 5);
    CK_OK(ibvi_net_save(net, NULL, path));
    int64_t n;
    uint8_t *s = read_all(stale, &n);
    ck_assert_int_eq(n, 5);
    ck_assert(memcmp(s, "stale", 5) == 0);
    free(s);
    ibvi_net *back = NULL;
    CK_OK(ibvi_net_load(&back, NULL, path, NULL));
    assert_same_net(net, back);
    ibvi_net_free(back);
    ibvi_net_free(net);
}
END_TEST

/* ---- hostile files and destinations (issue 10) ------------------------------ */

/* The CPUs this process may run on, as the loader counts them. */
static int32_t cpu_count(void)
{
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) == 0 && CPU_COUNT(&set) > 0)
        return CPU_COUNT(&set);
    const long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (int32_t)n : 1;
}

/* One layer record of a version-1 file (include/ibvi/io.h). */
typedef struct layer_rec {
    int32_t kind, activation, outputs, rank;
} layer_rec;

/* A version-1 file built byte by byte, independently of the library: the
 * given layers, all parameters 0, no optimizer, size and CRC correct. */
static uint8_t *v1_file(int32_t input_dim, int32_t threads,
                        const layer_rec *layers, int32_t count, int64_t *len)
{
    int64_t floats = 0, width = input_dim;
    for (int32_t i = 0; i < count; i++)
        if (layers[i].kind == IBVI_LAYER_DENSE) {
            floats += ((int64_t)layers[i].outputs * width + layers[i].outputs) *
                      (1 + layers[i].rank);
            width = layers[i].outputs;
        }
    const int64_t arch = 4 + 16 * (int64_t)count;
    *len = 16 + 12 + 28 + 12 + arch + 12 + 4 * floats + 4;
    uint8_t *b = calloc((size_t)*len, 1);
    ck_assert_ptr_nonnull(b);
    memcpy(b, "IBVI", 4);
    wr32(b + 4, 1);
    int64_t p = 16;
    memcpy(b + p, "HEAD", 4);
    wr64(b + p + 4, 28);
    wr32(b + p + 12, (uint32_t)input_dim);
    wr32(b + p + 16, IBVI_PARAM_SP);
    wr64(b + p + 20, 42);
    wr64(b + p + 28, 0);
    wr32(b + p + 36, (uint32_t)threads);
    p += 12 + 28;
    memcpy(b + p, "ARCH", 4);
    wr64(b + p + 4, (uint64_t)arch);
    wr32(b + p + 12, (uint32_t)count);
    for (int32_t i = 0; i < count; i++) {
        uint8_t *r = b + p + 16 + 16 * (int64_t)i;
        wr32(r, (uint32_t)layers[i].kind);
        wr32(r + 4, (uint32_t)layers[i].activation);
        wr32(r + 8, (uint32_t)layers[i].outputs);
        wr32(r + 12, (uint32_t)layers[i].rank);
    }
    p += 12 + arch;
    memcpy(b + p, "PARM", 4);
    wr64(b + p + 4, (uint64_t)(4 * floats));
    fix_file(b, *len);
    return b;
}

/* (2) The stored thread count is a preference: a file asking for 1024
 * threads loads with at most as many as this process has CPUs. */
START_TEST(test_file_threads_capped_at_cpus)
{
    const int32_t cpus = cpu_count();
    ibvi_net *net = small_net();
    int64_t len;
    uint8_t *b = to_buffer(net, NULL, &len);
    const int64_t threads = section_payload(b, len, "HEAD") + 4;
    ck_assert_int_eq(rd32(b + threads), 1);
    wr32(b + threads, 1024);
    fix_file(b, len);
    char path[128];
    path_in_dir(path, sizeof path, "threads.ibvi");
    write_all(path, b, len);
    ibvi_net *back = NULL;
    CK_OK(ibvi_net_load(&back, NULL, path, NULL));
    ck_assert_int_ge(ibvi_net_threads(back), 1);
    ck_assert_int_le(ibvi_net_threads(back), cpus);
    ck_assert_int_eq(ibvi_net_threads(back), cpus < 1024 ? cpus : 1024);
    ibvi_net_free(back);
    CK_OK(ibvi_net_load_buffer(&back, NULL, b, len, NULL));
    ck_assert_int_le(ibvi_net_threads(back), cpus);
    ibvi_net_free(back);
    /* A preference below the CPU count is kept; 1025 is still malformed. */
    CK_OK(ibvi_net_set_threads(net, 1));
    free(b);
    b = to_buffer(net, NULL, &len);
    CK_OK(ibvi_net_load_buffer(&back, NULL, b, len, NULL));
    ck_assert_int_eq(ibvi_net_threads(back), 1);
    ibvi_net_free(back);
    ck_assert_int_eq(load_patched32(b, len, threads, 1025, 0),
                     IBVI_ERR_FORMAT);
    free(b);
    ibvi_net_free(net);
}
END_TEST

/* (3) Impossible step counts are refused; 2^53 is the largest accepted. */
START_TEST(test_step_count_bound)
{
    ibvi_net *net = small_net();
    ibvi_optimizer *opt = make_opt(net, IBVI_OPT_ADAM);
    int64_t len;
    uint8_t *b = to_buffer(net, opt, &len);
    const int64_t steps = section_payload(b, len, "OPTM") + 28;
    ck_assert_int_eq(load_patched64(b, len, steps, (uint64_t)INT64_MAX, 1),
                     IBVI_ERR_FORMAT);
    ck_assert_ptr_nonnull(strstr(ibvi_last_error(), "step count"));
    ck_assert_int_eq(load_patched64(b, len, steps, (UINT64_C(1) << 53) + 1, 1),
                     IBVI_ERR_FORMAT);
    ck_assert_int_eq(load_patched64(b, len, steps, UINT64_C(1) << 53, 1),
                     IBVI_OK);
    free(b);
    ibvi_optimizer_free(opt);
    ibvi_net_free(net);
}
END_TEST

/* 1 -> 4096 -> 300 ReLUs -> 1: a network the API builds but whose 1.2 M
 * activations per row exceed the file bound (2^20 + 4 x 12289). */
static ibvi_net *too_wide_net(void)
{
    ibvi_net *net = NULL;
    CK_OK(ibvi_net_create(&net, 1, NULL));
    CK_OK(ibvi_net_add_dense(net, 4096, 0));
    for (int i = 0; i < 300; i++)
        CK_OK(ibvi_net_add_activation(net, IBVI_ACT_RELU));
    CK_OK(ibvi_net_add_dense(net, 1, 0));
    CK_OK(ibvi_net_init(net, IBVI_PARAM_SP, 3));
    return net;
}

/* (3) A save never writes what the loader rejects: the good file survives
 * byte for byte, the buffer is zeroed, the message names the bound. */
START_TEST(test_save_refuses_unloadable_network)
{
    ibvi_net *good = small_net();
    char path[128];
    path_in_dir(path, sizeof path, "good.ibvi");
    CK_OK(ibvi_net_save(good, NULL, path));
    int64_t old_len;
    uint8_t *old_bytes = read_all(path, &old_len);

    ibvi_net *wide = too_wide_net();
    CK_STATUS(ibvi_net_save(wide, NULL, path), IBVI_ERR_UNSUPPORTED);
    ck_assert_ptr_nonnull(strstr(ibvi_last_error(), "ibvi_net_save: "));
    ck_assert_ptr_nonnull(strstr(ibvi_last_error(), "activations of one "
                                                    "input row"));
    ck_assert_ptr_nonnull(strstr(ibvi_last_error(), "unchanged"));
    int64_t now_len;
    uint8_t *now = read_all(path, &now_len);
    ck_assert_int_eq(now_len, old_len);
    ck_assert(memcmp(now, old_bytes, (size_t)old_len) == 0);
    ck_assert_int_eq(temp_files_left(), 0);

    int64_t size;
    CK_OK(ibvi_net_save_size(wide, NULL, &size));
    uint8_t *buf = malloc((size_t)size);
    memset(buf, 0xAB, (size_t)size);
    CK_STATUS(ibvi_net_save_buffer(wide, NULL, buf, size),
              IBVI_ERR_UNSUPPORTED);
    ck_assert_ptr_nonnull(strstr(ibvi_last_error(), "ibvi_net_save_buffer: "));
    for (int64_t i = 0; i < size; i++)
        ck_assert_int_eq(buf[i], 0);
    free(buf);
    free(now);
    free(old_bytes);
    ibvi_net_free(wide);
    ibvi_net_free(good);
}
END_TEST

static int is_mode(const char *path, mode_t type)
{
    struct stat st;
    return lstat(path, &st) == 0 && (st.st_mode & S_IFMT) == type;
}

/* (4) Only a regular file (or nothing) is replaced: FIFOs, directories,
 * device nodes and links to them are refused and left as they were; a link
 * to a regular file is followed and stays a link. */
START_TEST(test_save_refuses_non_regular_destination)
{
    ibvi_net *net = small_net();
    char path[160];
    path_in_dir(path, sizeof path, "fifo");
    ck_assert_int_eq(mkfifo(path, 0600), 0);
    CK_STATUS(ibvi_net_save(net, NULL, path), IBVI_ERR_IO);
    ck_assert_ptr_nonnull(strstr(ibvi_last_error(), "a FIFO"));
    ck_assert_ptr_nonnull(strstr(ibvi_last_error(), "not a regular file"));
    ck_assert(is_mode(path, S_IFIFO));

    path_in_dir(path, sizeof path, "dir");
    ck_assert_int_eq(mkdir(path, 0700), 0);
    CK_STATUS(ibvi_net_save(net, NULL, path), IBVI_ERR_IO);
    ck_assert(is_mode(path, S_IFDIR));

    /* Copies of /dev/null and /dev/full (root only: mknod). */
    char null_copy[160], full_copy[160];
    path_in_dir(null_copy, sizeof null_copy, "null");
    path_in_dir(full_copy, sizeof full_copy, "full");
    const int nodes = mknod(null_copy, S_IFCHR | 0666, makedev(1, 3)) == 0 &&
                      mknod(full_copy, S_IFCHR | 0666, makedev(1, 7)) == 0;
    if (nodes) {
        CK_STATUS(ibvi_net_save(net, NULL, null_copy), IBVI_ERR_IO);
        ck_assert_ptr_nonnull(strstr(ibvi_last_error(), "character device"));
        CK_STATUS(ibvi_net_save(net, NULL, full_copy), IBVI_ERR_IO);
        struct stat st;
        ck_assert_int_eq(lstat(null_copy, &st), 0);
        ck_assert(S_ISCHR(st.st_mode) && st.st_rdev == makedev(1, 3));
        ck_assert_int_eq(lstat(full_copy, &st), 0);
        ck_assert(S_ISCHR(st.st_mode) && st.st_rdev == makedev(1, 7));
    }

    /* Links: to a device (refused), dangling (refused), to a regular file
     * in another directory (followed: the target is replaced there). */
    char link[160], target_dir[160], target[192];
    path_in_dir(link, sizeof link, "to-dev");
    ck_assert_int_eq(symlink(nodes ? full_copy : "/dev/full", link), 0);
    CK_STATUS(ibvi_net_save(net, NULL, link), IBVI_ERR_IO);
    ck_assert(is_mode(link, S_IFLNK));
    path_in_dir(link, sizeof link, "dangling");
    ck_assert_int_eq(symlink("no-such-file", link), 0);
    CK_STATUS(ibvi_net_save(net, NULL, link), IBVI_ERR_IO);
    ck_assert(is_mode(link, S_IFLNK));

    path_in_dir(target_dir, sizeof target_dir, "elsewhere");
    ck_assert_int_eq(mkdir(target_dir, 0700), 0);
    snprintf(target, sizeof target, "%s/real.ibvi", target_dir);
    write_all(target, (const uint8_t *)"old", 3);
    path_in_dir(link, sizeof link, "latest.ibvi");
    ck_assert_int_eq(symlink("elsewhere/real.ibvi", link), 0);
    CK_OK(ibvi_net_save(net, NULL, link));
    ck_assert(is_mode(link, S_IFLNK));
    ck_assert(is_mode(target, S_IFREG));
    ibvi_net *back = NULL;
    CK_OK(ibvi_net_load(&back, NULL, target, NULL));
    assert_same_net(net, back);
    ibvi_net_free(back);
    ck_assert_int_eq(temp_files_left(), 0);
    DIR *d = opendir(target_dir);
    struct dirent *e;
    int entries = 0;
    while ((e = readdir(d)) != NULL)
        entries += e->d_name[0] != '.';
    closedir(d);
    ck_assert_int_eq(entries, 1);
    ibvi_net_free(net);
}
END_TEST

/* (5) Loading a FIFO returns at once (before the fix it blocked forever in
 * open(): the alarm turns a regression into a failure, not a hang). */
START_TEST(test_load_fifo_does_not_block)
{
    char path[128];
    path_in_dir(path, sizeof path, "fifo.ibvi");
    ck_assert_int_eq(mkfifo(path, 0600), 0);
    alarm(20);
    ibvi_net *back = (ibvi_net *)1;
    CK_STATUS(ibvi_net_load(&back, NULL, path, NULL), IBVI_ERR_IO);
    alarm(0);
    ck_assert_ptr_null(back);
    ck_assert_ptr_nonnull(strstr(ibvi_last_error(), "not a regular file"));
    CK_STATUS(ibvi_net_load(&back, NULL, "/dev/null", NULL), IBVI_ERR_IO);
    CK_STATUS(ibvi_net_load(&back, NULL, tmpdir, NULL), IBVI_ERR_IO);
}
END_TEST

/* Largest single request and total bytes of a counting allocator. */
typedef struct peak {
    size_t largest, total;
} peak;

static void *peak_alloc(void *opaque, size_t size)
{
    peak *p = opaque;
    p->total += size;
    if (size > p->largest)
        p->largest = size;
    return malloc(size);
}

static void peak_free(void *opaque, void *ptr)
{
    (void)opaque;
    free(ptr);
}

/* (7) 1 -> 32768 -> 32768 ReLUs -> 1: a 917 KB file whose forward pass
 * needs 4 GiB of workspace per input row. Refused before anything but the
 * file's own bytes is allocated. */
START_TEST(test_small_file_huge_workspace)
{
    const int32_t wide = 32768, relus = 32768;
    layer_rec *layers = calloc((size_t)relus + 2, sizeof *layers);
    layers[0] = (layer_rec){IBVI_LAYER_DENSE, 0, wide, 0};
    for (int32_t i = 1; i <= relus; i++)
        layers[i] = (layer_rec){IBVI_LAYER_ACTIVATION, IBVI_ACT_RELU, wide, 0};
    layers[relus + 1] = (layer_rec){IBVI_LAYER_DENSE, 0, 1, 0};
    int64_t len;
    uint8_t *b = v1_file(1, 1, layers, relus + 2, &len);
    ck_assert_int_lt(len, 1000000);
    free(layers);

    peak pk = {0};
    ibvi_allocator a = {peak_alloc, peak_free, &pk};
    ibvi_net *back = (ibvi_net *)1;
    CK_STATUS(ibvi_net_load_buffer(&back, NULL, b, len, &a), IBVI_ERR_FORMAT);
    ck_assert_ptr_null(back);
    ck_assert_ptr_nonnull(strstr(ibvi_last_error(),
                                 "activations of one input row"));
    ck_assert_uint_eq(pk.total, 0);
    char path[128];
    path_in_dir(path, sizeof path, "wide.ibvi");
    write_all(path, b, len);
    pk = (peak){0};
    CK_STATUS(ibvi_net_load(&back, NULL, path, &a), IBVI_ERR_FORMAT);
    /* the 64 KiB checksum buffer and the file's bytes, nothing more */
    ck_assert_uint_le(pk.largest, (size_t)len);
    ck_assert_uint_le(pk.total, (size_t)len + 65536);
    free(b);
}
END_TEST

static long peak_rss_kb(void)
{
    struct rusage ru;
    ck_assert_int_eq(getrusage(RUSAGE_SELF, &ru), 0);
    return ru.ru_maxrss;
}

/* (7) A 2 GiB sparse file with a valid preamble is refused by its checksum
 * in bounded memory (read in 64 KiB pieces), not read whole. */
START_TEST(test_sparse_file_bounded_memory)
{
    char path[128];
    path_in_dir(path, sizeof path, "sparse.ibvi");
    const int64_t size = INT64_C(2) << 30;
    uint8_t head[16];
    memcpy(head, "IBVI", 4);
    wr32(head + 4, 1);
    wr64(head + 8, (uint64_t)size);
    FILE *f = fopen(path, "wb");
    ck_assert_ptr_nonnull(f);
    ck_assert_int_eq(fwrite(head, 1, 16, f), 16);
    ck_assert_int_eq(fclose(f), 0);
    ck_assert_int_eq(truncate(path, (off_t)size), 0);

    /* Reset the peak so earlier tests of this process do not hide growth. */
    FILE *clear = fopen("/proc/self/clear_refs", "w");
    if (clear) {
        fputs("5", clear);
        fclose(clear);
    }
    const long before = peak_rss_kb();
    const double t0 = (double)clock() / CLOCKS_PER_SEC;
    ibvi_net *back = (ibvi_net *)1;
    CK_STATUS(ibvi_net_load(&back, NULL, path, NULL), IBVI_ERR_CHECKSUM);
    const double cpu_s = (double)clock() / CLOCKS_PER_SEC - t0;
    const long growth = peak_rss_kb() - before;
    printf("sparse 2 GiB file: refused in %.2f s of CPU, peak RSS growth "
           "%ld KB\n", cpu_s, growth);
    ck_assert_ptr_null(back);
    ck_assert_int_lt(growth, 64 * 1024);
    ck_assert(cpu_s < 120.0); /* linear in the size: about 3.5 s/GB here */
    ck_assert_int_eq(unlink(path), 0);
}
END_TEST

/* (8) A last path component of NAME_MAX (255) bytes saves and loads: the
 * temporary name does not grow with it. */
START_TEST(test_longest_file_name)
{
    char name[256], path[512];
    memset(name, 'm', 250);
    memcpy(name + 250, ".ibvi", 6);
    ck_assert_uint_eq(strlen(name), 255);
    snprintf(path, sizeof path, "%s/%s", tmpdir, name);
    ibvi_net *net = small_net();
    CK_OK(ibvi_net_save(net, NULL, path));
    CK_OK(ibvi_net_save(net, NULL, path)); /* over itself */
    ibvi_net *back = NULL;
    CK_OK(ibvi_net_load(&back, NULL, path, NULL));
    assert_same_net(net, back);
    ck_assert_int_eq(temp_files_left(), 0);
    ibvi_net_free(back);
    ibvi_net_free(net);
}
END_TEST

/* ---- format version 2: version 1 still loads, forward compatibility ---------- */

/* Offsets in the version-2 file of small_net() without an optimizer
 * (include/ibvi/io.h): HEAD at 16 (payload 36), ARCH at 60 (payload 80:
 * C, H, W, count, then records at 96 (dense, 28 bytes), 124 (tanh, 24),
 * 148 (dense, 28)), PARM at 176 (payload 196, 372 bytes), CRC at 568. */
#define S_HEAD 16
#define S_ARCH 60
#define S_REC0 96
#define S_REC1 124
#define S_REC2 148
#define S_PARM 176
#define S_END 568

static void check_small_layout(const uint8_t *b, int64_t len)
{
    ck_assert_int_eq(len, S_END + 4);
    ck_assert(memcmp(b + S_HEAD, "HEAD", 4) == 0);
    ck_assert(memcmp(b + S_ARCH, "ARCH", 4) == 0);
    ck_assert(memcmp(b + S_PARM, "PARM", 4) == 0);
    ck_assert_uint_eq(rd32(b + S_REC1), IBVI_LAYER_ACTIVATION);
    ck_assert_uint_eq(rd32(b + S_REC2), IBVI_LAYER_DENSE);
}

/* Loads b (from memory) and checks it is `net` and saves back to `canon`. */
static void loads_as(const uint8_t *b, int64_t len, ibvi_net *net,
                     const uint8_t *canon, int64_t canon_len)
{
    ibvi_net *back = NULL;
    int status = ibvi_net_load_buffer(&back, NULL, b, len, NULL);
    ck_assert_msg(status == IBVI_OK, "status %d (%s)", status,
                  ibvi_last_error());
    assert_same_net(net, back);
    int64_t n;
    uint8_t *again = to_buffer(back, NULL, &n);
    ck_assert_int_eq(n, canon_len);
    ck_assert(memcmp(again, canon, (size_t)n) == 0);
    free(again);
    ibvi_net_free(back);
}

static int load_status(const uint8_t *b, int64_t len, const char *message)
{
    const int status = try_load(b, len, 1);
    if (message)
        ck_assert_msg(strstr(ibvi_last_error(), message) != NULL,
                      "'%s' not in '%s'", message, ibvi_last_error());
    return status;
}

/* Version-1 files (converted by the test's own code) load to the same
 * network and optimizer, which then save as version 2. */
START_TEST(test_v1_files_load_the_same_network)
{
    for (int kind = -1; kind <= IBVI_OPT_ADAM; kind++) {
        ibvi_net *net = medium_net(21);
        ibvi_optimizer *opt = make_opt(net, kind < 0 ? IBVI_OPT_SGD : kind);
        train(net, opt, 0, 3);
        if (kind < 0) {
            ibvi_optimizer_free(opt);
            opt = NULL;
        }
        int64_t len2, len1;
        uint8_t *b2 = to_buffer(net, opt, &len2);
        uint8_t *b1 = v2_to_v1(b2, len2, &len1);
        ck_assert_uint_eq(rd32(b1 + 4), 1);
        char path[128];
        path_in_dir(path, sizeof path, "v1.ibvi");
        write_all(path, b1, len1);
        for (int from_file = 0; from_file < 2; from_file++) {
            CK_OK(ibvi_net_set_rng_position(net, rd64(b2 + 44)));
            ibvi_net *back = NULL;
            ibvi_optimizer *ob = NULL;
            if (from_file)
                CK_OK(ibvi_net_load(&back, &ob, path, NULL));
            else
                CK_OK(ibvi_net_load_buffer(&back, &ob, b1, len1, NULL));
            assert_same_net(net, back);
            ck_assert_int_eq(ob != NULL, opt != NULL);
            if (opt)
                ck_assert_int_eq(ibvi_optimizer_step_count(ob),
                                 ibvi_optimizer_step_count(opt));
            int64_t n;
            uint8_t *again = to_buffer(back, ob, &n);
            ck_assert_int_eq(n, len2);
            ck_assert(memcmp(again, b2, (size_t)n) == 0);
            free(again);
            assert_same_predictions(net, back); /* draws from both streams */
            ibvi_optimizer_free(ob);
            ibvi_net_free(back);
        }
        free(b1);
        free(b2);
        ibvi_optimizer_free(opt);
        ibvi_net_free(net);
    }
}
END_TEST

/* What a later library may add: optional sections are skipped, required
 * ones and unknown layer kinds are refused with IBVI_ERR_VERSION and
 * "needs a newer libibvi"; longer records and sections load when the extra
 * bytes lie past `required`. */
START_TEST(test_v2_unknown_sections_and_kinds)
{
    ibvi_net *net = small_net();
    int64_t len, n;
    uint8_t *b = to_buffer(net, NULL, &len);
    check_small_layout(b, len);
    const int V = IBVI_ERR_VERSION, F = IBVI_ERR_FORMAT;

    /* An optional section (required = 0) before ARCH and one at the end. */
    uint8_t extra[28];
    memcpy(extra, "XTRA", 4);
    wr64(extra + 4, 8);
    wr64(extra + 12, 0);
    memcpy(extra + 20, "12345678", 8);
    uint8_t *c = insert_bytes(b, len, S_ARCH, extra, 28, &n);
    loads_as(c, n, net, b, len);
    uint8_t *d = insert_bytes(c, n, n - 4, extra, 28, &n);
    loads_as(d, n, net, b, len);
    free(d);
    free(c);
    /* The same sections, required: a newer library's. */
    wr64(extra + 12, 1);
    c = insert_bytes(b, len, S_ARCH, extra, 28, &n);
    ck_assert_int_eq(load_status(c, n, "needs a newer libibvi: unknown "
                                       "required section 'XTRA'"), V);
    free(c);
    c = insert_bytes(b, len, len - 4, extra, 28, &n);
    ck_assert_int_eq(load_status(c, n, "needs a newer libibvi"), V);
    free(c);
    wr64(extra + 12, 9); /* required > size */
    c = insert_bytes(b, len, S_ARCH, extra, 28, &n);
    ck_assert_int_eq(load_status(c, n, "required bytes in a payload"), F);
    free(c);

    /* An unknown layer kind. */
    c = malloc((size_t)len);
    memcpy(c, b, (size_t)len);
    wr32(c + S_REC1, 99);
    fix_file(c, len);
    ck_assert_int_eq(load_status(c, len, "needs a newer libibvi: unknown "
                                         "layer kind 99"), V);
    free(c);

    /* A dense record with 8 more bytes of fields: ignorable (required
     * unchanged) loads; required ones need a newer library; required past
     * the record's end is malformed. */
    c = insert_bytes(b, len, S_REC1, "newfield", 8, &n);
    add64(c + S_ARCH + 4, 8);  /* ARCH size     */
    add64(c + S_ARCH + 12, 8); /* ARCH required */
    add64(c + S_REC0 + 4, 8);  /* record length */
    fix_file(c, n);
    loads_as(c, n, net, b, len);
    add64(c + S_REC0 + 12, 8); /* record required = length */
    fix_file(c, n);
    ck_assert_int_eq(load_status(c, n, "needs a newer libibvi: layer 0 "
                                       "(dense) has 36 required bytes"), V);
    add64(c + S_REC0 + 12, 1); /* required > length */
    fix_file(c, n);
    ck_assert_int_eq(load_status(c, n, "required bytes in a record"), F);
    free(c);

    /* A record shorter than its kind's fields, or longer than ARCH. */
    ck_assert_int_eq(load_patched64(b, len, S_REC1 + 4, 20, 1), F);
    ck_assert_int_eq(load_patched64(b, len, S_REC1 + 4, 19, 1), F);
    ck_assert_int_eq(load_patched64(b, len, S_REC1 + 4, UINT64_MAX, 1), F);
    ck_assert_int_eq(load_patched64(b, len, S_REC2 + 4, 29, 1), F);
    ck_assert_int_eq(load_patched64(b, len, S_REC1 + 12, 25, 1), F);

    /* HEAD and PARM with ignorable trailing bytes load; required ones do
     * not. */
    c = insert_bytes(b, len, S_ARCH, "headmore", 8, &n);
    add64(c + S_HEAD + 4, 8);
    fix_file(c, n);
    loads_as(c, n, net, b, len);
    add64(c + S_HEAD + 12, 8);
    fix_file(c, n);
    ck_assert_int_eq(load_status(c, n, "needs a newer libibvi: section "
                                       "HEAD has 32 required bytes"), V);
    free(c);
    c = insert_bytes(b, len, S_END, "parm", 4, &n);
    add64(c + S_PARM + 4, 4);
    fix_file(c, n);
    loads_as(c, n, net, b, len);
    add64(c + S_PARM + 12, 4);
    fix_file(c, n);
    ck_assert_int_eq(load_status(c, n, "needs a newer libibvi"), V);
    free(c);

    /* A spatial input shape of the same size loads as an image network
     * (the dense layer reads it flat); one of another size does not match
     * the parameters. */
    c = malloc((size_t)len);
    memcpy(c, b, (size_t)len);
    wr32(c + S_ARCH + 20, 1);
    wr32(c + S_ARCH + 20 + 4, 3);
    fix_file(c, len);
    ibvi_net *image = NULL;
    CK_OK(ibvi_net_load_buffer(&image, NULL, c, len, NULL));
    int32_t ch, hh, ww;
    CK_OK(ibvi_net_input_shape(image, &ch, &hh, &ww));
    ck_assert(ch == 1 && hh == 3 && ww == 1);
    ibvi_net_free(image);
    free(c);
    ck_assert_int_eq(load_patched32(b, len, S_ARCH + 20 + 4, 2, 1), F);
    ck_assert_int_eq(load_patched32(b, len, S_ARCH + 20 + 8, 32, 1), F);
    ck_assert_int_eq(load_patched32(b, len, S_ARCH + 20 + 8, 0, 1), F);
    ck_assert_int_eq(load_patched32(b, len, S_ARCH + 20 + 8, 0xFFFFFFFFu, 1), F);
    ck_assert_int_eq(load_status(b, len, NULL), IBVI_OK);

    /* Known sections out of order, repeated or missing. */
    c = insert_bytes(b, len, S_ARCH, b + S_HEAD, S_ARCH - S_HEAD, &n);
    ck_assert_int_eq(load_status(c, n, "out of order or repeated"), F);
    free(c);
    c = malloc((size_t)len);
    memcpy(c, b, (size_t)len);
    memcpy(c + S_HEAD, "ARCH", 4);
    fix_file(c, len);
    ck_assert_int_eq(load_status(c, len, "out of order"), F);
    memcpy(c, b, (size_t)len);
    memcpy(c + S_PARM, "PARX", 4); /* now an optional unknown section */
    wr64(c + S_PARM + 12, 0);
    fix_file(c, len);
    ck_assert_int_eq(load_status(c, len, "section PARM is missing"), F);
    free(c);
    free(b);
    ibvi_net_free(net);
}
END_TEST

/* Hostile version-2 files with correct size and checksum: every field out
 * of range is refused with FORMAT, nothing crashes or leaks. */
START_TEST(test_v2_hostile_fields)
{
    ibvi_net *net = small_net();
    ibvi_optimizer *adam = make_opt(net, IBVI_OPT_ADAM);
    int64_t len;
    uint8_t *b = to_buffer(net, adam, &len);
    const int F = IBVI_ERR_FORMAT;
    const int64_t h = S_HEAD + 20, a = S_ARCH + 20;
    ck_assert_int_eq(load_patched64(b, len, h + 8, 999, 1), IBVI_OK);
    ck_assert_int_eq(load_patched32(b, len, h, 2, 1), F);            /* param */
    ck_assert_int_eq(load_patched32(b, len, h + 4, 0, 1), F);      /* threads */
    ck_assert_int_eq(load_patched32(b, len, h + 4, 1025, 1), F);
    ck_assert_int_eq(load_patched64(b, len, S_HEAD + 4, 23, 1), F);   /* size */
    ck_assert_int_eq(load_patched64(b, len, S_HEAD + 4, UINT64_MAX, 1), F);
    ck_assert_int_eq(load_patched32(b, len, a, 0, 1), F);                /* C */
    ck_assert_int_eq(load_patched32(b, len, a, 100000001, 1), F);
    ck_assert_int_eq(load_patched32(b, len, a, 4, 1), F);
    ck_assert_int_eq(load_patched32(b, len, a + 12, 0, 1), F);       /* count */
    ck_assert_int_eq(load_patched32(b, len, a + 12, 2, 1), F);
    ck_assert_int_eq(load_patched32(b, len, a + 12, 4, 1), F);
    ck_assert_int_eq(load_patched32(b, len, a + 12, 0xFFFFFFFFu, 1), F);
    ck_assert_int_eq(load_patched32(b, len, S_REC0 + 20, 0, 1), F); /* outputs */
    ck_assert_int_eq(load_patched32(b, len, S_REC0 + 20, 0x7FFFFFFF, 1), F);
    ck_assert_int_eq(load_patched32(b, len, S_REC0 + 20, 5, 1), F);
    ck_assert_int_eq(load_patched32(b, len, S_REC0 + 24, 17, 1), F);  /* rank */
    ck_assert_int_eq(load_patched32(b, len, S_REC0 + 24, 0xFFFFFFFFu, 1), F);
    ck_assert_int_eq(load_patched32(b, len, S_REC1 + 20, 0, 1), F); /* act 0 */
    ck_assert_int_eq(load_patched32(b, len, S_REC1 + 20, 9, 1), F);
    /* The last layer an activation (SiLU: its field reads the outputs, 3;
     * the 4 bytes left of the dense fields are made ignorable). */
    uint8_t *c = malloc((size_t)len);
    memcpy(c, b, (size_t)len);
    wr32(c + S_REC2, IBVI_LAYER_ACTIVATION);
    wr64(c + S_REC2 + 12, 24);
    fix_file(c, len);
    ck_assert_int_eq(load_status(c, len, "the last layer is not dense"), F);
    wr64(c + S_REC2 + 12, 28);
    fix_file(c, len);
    ck_assert_int_eq(load_status(c, len, "has 28 required bytes"),
                     IBVI_ERR_VERSION);
    free(c);
    const uint32_t nan = 0x7FC00000u;
    ck_assert_int_eq(load_patched32(b, len, S_PARM + 20, nan, 1), F);
    ck_assert_int_eq(load_patched64(b, len, S_PARM + 4, 4 * 93 - 4, 1), F);
    const int64_t o = section_payload(b, len, "OPTM");
    ck_assert_int_eq(o, S_END + 20);
    ck_assert_int_eq(load_patched32(b, len, o, 2, 1), F);             /* kind */
    ck_assert_int_eq(load_patched32(b, len, o + 4, nan, 1), F);         /* lr */
    ck_assert_int_eq(load_patched64(b, len, o + 28, UINT64_MAX, 1), F);
    ck_assert_int_eq(load_patched64(b, len, o + 28, (uint64_t)INT64_MAX, 1),
                     F);
    ck_assert_int_eq(load_patched64(b, len, o + 36, 185, 1), F);     /* count */
    ck_assert_int_eq(load_patched32(b, len, o + 44 + 4 * 93, fbits(-1.0f), 1),
                     F); /* a negative second moment */
    ck_assert_int_eq(load_patched32(b, len, o + 44 + 4 * 93, fbits(-1.0f), 0),
                     IBVI_OK);
    free(b);
    ibvi_optimizer_free(adam);
    ibvi_net_free(net);
}
END_TEST


/* ---- image networks ------------------------------------------------------ */

enum { IMG_C = 2, IMG_H = 8, IMG_W = 8, IMG_IN = IMG_C * IMG_H * IMG_W };

/* Every kind: (2, 8, 8) -> conv 4@3x3 pad 1 rank 2 [0] -> groupnorm 2 [1]
 * -> relu [2] -> conv 4@3x1 pad (1, 0) [3] -> residual from 2 [4] ->
 * maxpool 2 [5] -> conv 6@3x3 stride 2 pad 1 [6] -> residual from 5,
 * projection stride 2 [7] -> avgpool 2 stride 1 [8] -> global avgpool [9]
 * -> flatten [10] -> dense 3 rank 2 [11]. */
#define IMG_LAYERS 12
static const int32_t img_kinds[IMG_LAYERS] = {
    IBVI_LAYER_CONV2D, IBVI_LAYER_GROUPNORM, IBVI_LAYER_ACTIVATION,
    IBVI_LAYER_CONV2D, IBVI_LAYER_RESIDUAL, IBVI_LAYER_MAXPOOL,
    IBVI_LAYER_CONV2D, IBVI_LAYER_RESIDUAL, IBVI_LAYER_AVGPOOL,
    IBVI_LAYER_GLOBAL_AVGPOOL, IBVI_LAYER_FLATTEN, IBVI_LAYER_DENSE};

static ibvi_net *image_net(uint64_t seed)
{
    ibvi_net *net = NULL;
    CK_OK(ibvi_net_create_image(&net, IMG_C, IMG_H, IMG_W, NULL));
    CK_OK(ibvi_net_add_conv2d(net, 4, 3, 1, 1, 2));
    CK_OK(ibvi_net_add_groupnorm(net, 2, 1e-3f));
    CK_OK(ibvi_net_add_activation(net, IBVI_ACT_RELU));
    ibvi_conv2d_options o = IBVI_CONV2D_OPTIONS_INIT;
    o.out_channels = 4;
    o.kernel_h = 3;
    o.kernel_w = 1;
    o.pad_h = 1;
    CK_OK(ibvi_net_add_conv2d_ex(net, &o));
    CK_OK(ibvi_net_add_residual(net, 2, 0));
    CK_OK(ibvi_net_add_maxpool(net, 2, 2));
    CK_OK(ibvi_net_add_conv2d(net, 6, 3, 2, 1, 0));
    CK_OK(ibvi_net_add_residual(net, 5, 2));
    CK_OK(ibvi_net_add_avgpool(net, 2, 1));
    CK_OK(ibvi_net_add_global_avgpool(net));
    CK_OK(ibvi_net_add_flatten(net));
    CK_OK(ibvi_net_add_dense(net, CLASSES, 2));
    CK_OK(ibvi_net_init(net, IBVI_PARAM_MUP, seed));
    for (int i = 0; i < IMG_LAYERS; i++) {
        ibvi_layer *l;
        CK_OK(ibvi_net_layer(net, i, &l));
        ck_assert_int_eq(ibvi_layer_get_kind(l), img_kinds[i]);
    }
    return net;
}

static void image_batch(int64_t step, float *x, int32_t *y)
{
    uint64_t s = 5000 + (uint64_t)step;
    for (int i = 0; i < BATCH * IMG_IN; i++)
        x[i] = uniform_pm1(&s);
    for (int i = 0; i < BATCH; i++)
        y[i] = (int32_t)(mix64(&s) % CLASSES);
}

static void image_train(ibvi_net *net, ibvi_optimizer *opt, int64_t first,
                        int64_t steps)
{
    float x[BATCH * IMG_IN];
    int32_t y[BATCH];
    for (int64_t k = first; k < first + steps; k++) {
        image_batch(k, x, y);
        float loss;
        CK_OK(ibvi_train_step(net, opt, x, BATCH, 2, IBVI_LOSS_SOFTMAX_XENT, y,
                              NULL, &loss));
    }
}

/* Same shapes (input and every layer's output) as well as assert_same_net's
 * architecture, settings and parameters. */
static void assert_same_image_net(ibvi_net *a, ibvi_net *b)
{
    assert_same_net(a, b);
    int32_t s[6];
    CK_OK(ibvi_net_input_shape(a, &s[0], &s[1], &s[2]));
    CK_OK(ibvi_net_input_shape(b, &s[3], &s[4], &s[5]));
    ck_assert(s[0] == s[3] && s[1] == s[4] && s[2] == s[5]);
    for (int32_t i = 0; i < ibvi_net_layer_count(a); i++) {
        ibvi_layer *la, *lb;
        CK_OK(ibvi_net_layer(a, i, &la));
        CK_OK(ibvi_net_layer(b, i, &lb));
        CK_OK(ibvi_layer_output_shape(la, &s[0], &s[1], &s[2]));
        CK_OK(ibvi_layer_output_shape(lb, &s[3], &s[4], &s[5]));
        ck_assert_msg(s[0] == s[3] && s[1] == s[4] && s[2] == s[5],
                      "layer %d: %dx%dx%d vs %dx%dx%d", (int)i, s[0], s[1],
                      s[2], s[3], s[4], s[5]);
    }
}

static void assert_same_image_predictions(ibvi_net *a, ibvi_net *b)
{
    float x[BATCH * IMG_IN], oa[3 * BATCH * CLASSES], ob[3 * BATCH * CLASSES];
    int32_t y[BATCH];
    image_batch(777, x, y);
    CK_OK(ibvi_net_forward_mean(a, x, BATCH, oa));
    CK_OK(ibvi_net_forward_mean(b, x, BATCH, ob));
    ck_assert(memcmp(oa, ob, sizeof(float) * BATCH * CLASSES) == 0);
    CK_OK(ibvi_net_forward(a, x, BATCH, 3, oa));
    CK_OK(ibvi_net_forward(b, x, BATCH, 3, ob));
    ck_assert(memcmp(oa, ob, sizeof oa) == 0);
}

/* Every kind saves and loads: same shapes, bit-identical parameters and
 * outputs; with the optimizer, training resumed from the file gives the
 * parameters of the uninterrupted run bit for bit; saving the loaded
 * network gives the same bytes. */
START_TEST(test_image_roundtrip)
{
    for (int kind = -1; kind <= IBVI_OPT_ADAM; kind++) {
        ibvi_net *net = image_net(31);
        ibvi_optimizer *opt = make_opt(net, kind < 0 ? IBVI_OPT_SGD : kind);
        image_train(net, opt, 0, 3);
        int64_t len, n;
        uint8_t *b = to_buffer(net, kind < 0 ? NULL : opt, &len);
        ck_assert_uint_eq(rd32(b + S_ARCH + 20), IMG_C);
        ck_assert_uint_eq(rd32(b + S_ARCH + 24), IMG_H);
        ck_assert_uint_eq(rd32(b + S_ARCH + 28), IMG_W);
        ibvi_net *back = NULL;
        ibvi_optimizer *back_opt = NULL;
        CK_OK(ibvi_net_load_buffer(&back, kind < 0 ? NULL : &back_opt, b, len,
                                   NULL));
        assert_same_image_net(net, back);
        uint8_t *again = to_buffer(back, back_opt, &n);
        ck_assert_int_eq(n, len);
        ck_assert(memcmp(again, b, (size_t)len) == 0);
        free(again);
        if (kind >= 0) {
            ck_assert_int_eq(ibvi_optimizer_step_count(back_opt), 3);
            image_train(net, opt, 3, 4);
            image_train(back, back_opt, 3, 4);
            assert_same_image_net(net, back);
            ibvi_optimizer_free(back_opt);
        }
        assert_same_image_predictions(net, back);
        /* through a file as well */
        char path[256];
        path_in_dir(path, sizeof path, "image.ibvi");
        CK_OK(ibvi_net_save(net, NULL, path));
        ibvi_net *from_file = NULL;
        CK_OK(ibvi_net_load(&from_file, NULL, path, NULL));
        assert_same_image_net(net, from_file);
        ibvi_net_free(from_file);
        free(b);
        ibvi_net_free(back);
        ibvi_optimizer_free(opt);
        ibvi_net_free(net);
    }
}
END_TEST

/* Offset of the fields of layer record `index` of a version-2 file (after
 * the record's kind, length and required count). */
static int64_t record_fields(const uint8_t *b, int index)
{
    int64_t at = S_ARCH + 20 + 16;
    for (int i = 0; i < index; i++)
        at += (int64_t)rd64(b + at + 4);
    return at + 20;
}

static int patched_status(const uint8_t *b, int64_t len, int layer,
                          int field, uint32_t value, const char *message)
{
    uint8_t *c = malloc((size_t)len);
    memcpy(c, b, (size_t)len);
    wr32(c + record_fields(b, layer) + 4 * field, value);
    fix_file(c, len);
    const int status = load_status(c, len, message);
    free(c);
    return status;
}

/* A diag-lowrank (SWAG) layer's record: the covariance field carries
 * family 3 and R (the dense fields' rank 0), PARM the mean, S, then d. It
 * round-trips; an out-of-range R, a non-zero kind rank, a negative d are
 * refused with FORMAT or INVALID_ARG; a family this library does not know
 * needs a newer library (as an older one refuses family 3). */
START_TEST(test_diag_lowrank_record)
{
    ibvi_net *net = NULL;
    CK_OK(ibvi_net_create(&net, 3, NULL));
    CK_OK(ibvi_net_add_dense(net, 4, 0));
    CK_OK(ibvi_net_add_activation(net, IBVI_ACT_RELU));
    CK_OK(ibvi_net_add_dense(net, 2, 0));
    ibvi_covariance_options o = {IBVI_COVARIANCE_OPTIONS_VERSION,
                                 IBVI_COVARIANCE_DIAG_LOWRANK, 2, 0.0f};
    CK_OK(ibvi_net_set_covariance(net, 0, &o));
    CK_OK(ibvi_net_init(net, IBVI_PARAM_SP, 4));
    ibvi_layer *l = NULL;
    CK_OK(ibvi_net_layer(net, 0, &l));
    float d[16], S[32];
    for (int i = 0; i < 16; i++)
        d[i] = 0.01f * (float)(i + 1);
    for (int i = 0; i < 32; i++)
        S[i] = 0.02f * (float)(i - 16);
    CK_OK(ibvi_layer_set_diag(l, d, 16));
    CK_OK(ibvi_layer_set_factor(l, S, 32));
    int64_t len;
    uint8_t *b = to_buffer(net, NULL, &len);
    const int F = IBVI_ERR_FORMAT, V = IBVI_ERR_VERSION;
    ck_assert_uint_eq(rd64(b + S_REC0 + 4), 36);  /* length   */
    ck_assert_uint_eq(rd64(b + S_REC0 + 12), 36); /* required */
    ck_assert_uint_eq(rd32(b + S_REC0 + 24), 0);  /* the kind's rank */
    ck_assert_uint_eq(rd32(b + S_REC0 + 28), 3);  /* family   */
    ck_assert_uint_eq(rd32(b + S_REC0 + 32), 2);  /* R        */
    const int64_t parm = section_payload(b, len, "PARM");
    ck_assert_int_gt(parm, 0);
    float v;
    memcpy(&v, b + parm + 4 * (16 + 32), 4); /* d[0], after mean and S */
    ck_assert(v == d[0]);
    memcpy(&v, b + parm + 4 * 16, 4); /* S[0] */
    ck_assert(v == S[0]);
    ck_assert_int_eq(load_status(b, len, NULL), IBVI_OK);
    ibvi_net *back = NULL;
    CK_OK(ibvi_net_load_buffer(&back, NULL, b, len, NULL));
    ibvi_layer *m = NULL;
    CK_OK(ibvi_net_layer(back, 0, &m));
    ck_assert_int_eq(ibvi_layer_covariance(m), IBVI_COVARIANCE_DIAG_LOWRANK);
    float d2[16], S2[32];
    CK_OK(ibvi_layer_get_diag(m, d2, 16));
    CK_OK(ibvi_layer_get_factor(m, S2, 32));
    ck_assert(memcmp(d, d2, sizeof d) == 0 && memcmp(S, S2, sizeof S) == 0);
    ibvi_net_free(back);

    ck_assert_int_eq(load_patched32(b, len, S_REC0 + 32, 0, 0), F);
    ck_assert_int_eq(load_patched32(b, len, S_REC0 + 32, 0xFFFFFFFFu, 0), F);
    ck_assert_int_eq(load_patched32(b, len, S_REC0 + 32, 1025, 0), F);
    /* R = 1: PARM holds more than the layers read, required bytes a newer
     * library would know */
    ck_assert_int_eq(load_patched32(b, len, S_REC0 + 32, 1, 0), V);
    ck_assert_int_eq(load_patched32(b, len, S_REC0 + 32, 3, 0), F);
    ck_assert_int_eq(load_patched32(b, len, S_REC0 + 24, 2, 0), F);
    ck_assert_int_eq(load_patched32(b, len, S_REC0 + 28, 4, 0), V);
    ck_assert_int_eq(load_status(b, len, NULL), IBVI_OK);
    {
        uint8_t *c = malloc((size_t)len);
        memcpy(c, b, (size_t)len);
        const float neg = -0.5f;
        memcpy(c + parm + 4 * (16 + 32 + 3), &neg, 4);
        fix_file(c, len);
        ck_assert_int_lt(load_status(c, len, "diag"), 0);
        free(c);
    }
    /* As an older library sees it: the family unknown, so the record's
     * required bytes exceed what it knows. */
    ck_assert_int_eq(load_patched32(b, len, S_REC0 + 28, 0x7FFFFFFF, 0), V);
    ck_assert_int_eq(load_status(b, len, NULL), IBVI_OK);
    free(b);
    ibvi_net_free(net);
}
END_TEST

/* Convolutions and a projection without a bias (0.6.0): their records end
 * with the covariance field (the family spelled out) and the bias field,
 * required = length so an older library refuses them; they round-trip
 * bit for bit (resumed training too), and a hostile bias field is refused.
 * (2, 8, 8) -> conv 4@3x3 pad 1 rank 2, no bias [0] -> group norm [1] ->
 * relu [2] -> residual from the input, 1x1 projection 2 -> 4 without a bias
 * [3] -> global avgpool [4] -> dense 3 rank 2 [5]. */
static ibvi_net *no_bias_net(uint64_t seed)
{
    ibvi_net *net = NULL;
    CK_OK(ibvi_net_create_image(&net, IMG_C, IMG_H, IMG_W, NULL));
    ibvi_conv2d_options o = IBVI_CONV2D_OPTIONS_INIT;
    o.out_channels = 4;
    o.kernel_h = o.kernel_w = 3;
    o.pad_h = o.pad_w = 1;
    o.rank = 2;
    o.no_bias = 1;
    CK_OK(ibvi_net_add_conv2d_ex(net, &o));
    CK_OK(ibvi_net_add_groupnorm(net, 2, 1e-3f));
    CK_OK(ibvi_net_add_activation(net, IBVI_ACT_RELU));
    ibvi_residual_options r = IBVI_RESIDUAL_OPTIONS_INIT;
    r.projection_stride = 1;
    r.projection_no_bias = 1;
    CK_OK(ibvi_net_add_residual_ex(net, &r));
    CK_OK(ibvi_net_add_global_avgpool(net));
    CK_OK(ibvi_net_add_dense(net, CLASSES, 2));
    CK_OK(ibvi_net_init(net, IBVI_PARAM_MUP, seed));
    return net;
}

START_TEST(test_no_bias_records)
{
    ibvi_net *net = no_bias_net(41);
    ibvi_layer *l;
    CK_OK(ibvi_net_layer(net, 0, &l));
    ck_assert_int_eq(ibvi_layer_param_count(l), 4 * IMG_C * 9);
    CK_OK(ibvi_net_layer(net, 3, &l));
    ck_assert_int_eq(ibvi_layer_param_count(l), 4 * IMG_C);
    ibvi_optimizer *opt = make_opt(net, IBVI_OPT_SGD);
    image_train(net, opt, 0, 3);
    int64_t len, n;
    uint8_t *b = to_buffer(net, opt, &len);
    const int64_t conv = record_fields(b, 0), res = record_fields(b, 3);
    ck_assert_uint_eq(rd64(b + conv - 16), 20 + 32 + 8 + 4); /* length   */
    ck_assert_uint_eq(rd64(b + conv - 8), 20 + 32 + 8 + 4);  /* required */
    ck_assert_uint_eq(rd32(b + conv + 28), 2);               /* rank     */
    ck_assert_uint_eq(rd32(b + conv + 32), IBVI_COVARIANCE_LOWRANK);
    ck_assert_uint_eq(rd32(b + conv + 40), 1);               /* no_bias  */
    ck_assert_uint_eq(rd64(b + res - 16), 20 + 8 + 8 + 4);
    ck_assert_uint_eq(rd64(b + res - 8), 20 + 8 + 8 + 4);
    ck_assert_uint_eq(rd32(b + res + 8), IBVI_COVARIANCE_NONE);
    ck_assert_uint_eq(rd32(b + res + 16), 1);
    /* A conv with a bias keeps the old record (no extra fields). */
    ck_assert_uint_eq(rd64(b + record_fields(b, 5) - 16), 20 + 8);
    ibvi_net *back = NULL;
    ibvi_optimizer *back_opt = NULL;
    CK_OK(ibvi_net_load_buffer(&back, &back_opt, b, len, NULL));
    assert_same_image_net(net, back);
    uint8_t *again = to_buffer(back, back_opt, &n);
    ck_assert_int_eq(n, len);
    ck_assert(memcmp(again, b, (size_t)len) == 0);
    free(again);
    image_train(net, opt, 3, 4);
    image_train(back, back_opt, 3, 4);
    assert_same_image_net(net, back);
    assert_same_image_predictions(net, back);
    const int F = IBVI_ERR_FORMAT, V = IBVI_ERR_VERSION;
    /* the bias field: 0 (a bias, so PARM is short), 2, -1 */
    ck_assert_int_eq(patched_status(b, len, 0, 10, 2, "no_bias 2"), F);
    ck_assert_int_eq(patched_status(b, len, 0, 10, 0xFFFFFFFFu, "no_bias -1"), F);
    ck_assert_int_lt(patched_status(b, len, 0, 10, 0, NULL), 0);
    ck_assert_int_eq(patched_status(b, len, 3, 4, 2, "no_bias 2"), F);
    ck_assert_int_lt(patched_status(b, len, 3, 4, 0, NULL), 0);
    /* the family spelled out must be the one the rank implies */
    ck_assert_int_eq(patched_status(b, len, 0, 8, IBVI_COVARIANCE_NONE,
                                    "covariance family 0 with rank 2"), F);
    /* as a library that knows no such family sees it */
    ck_assert_int_eq(patched_status(b, len, 0, 8, 77, "needs a newer"), V);
    ck_assert_int_eq(load_status(b, len, NULL), IBVI_OK);
    free(b);
    ibvi_optimizer_free(back_opt);
    ibvi_net_free(back);
    ibvi_optimizer_free(opt);
    ibvi_net_free(net);
}
END_TEST

/* Hostile image records with a correct size and checksum: bad geometry of
 * every kind is refused with FORMAT and the builder's reason (or VERSION
 * for what only a later library builds), nothing crashes or leaks. */
START_TEST(test_image_hostile_fields)
{
    ibvi_net *net = image_net(32);
    ibvi_optimizer *opt = make_opt(net, IBVI_OPT_ADAM);
    int64_t len;
    uint8_t *b = to_buffer(net, opt, &len);
    const int F = IBVI_ERR_FORMAT, V = IBVI_ERR_VERSION;
    for (int i = 0; i < IMG_LAYERS; i++)
        ck_assert_uint_eq(rd32(b + record_fields(b, i) - 20), img_kinds[i]);
    /* conv2d [0]: out_channels, kernel_h, kernel_w, stride_h, stride_w,
     * pad_h, pad_w, rank */
    ck_assert_int_eq(patched_status(b, len, 0, 0, 0, "layer 0: conv2d"), F);
    ck_assert_int_eq(patched_status(b, len, 0, 0, 5, "layer 1"), F); /* GN */
    ck_assert_int_eq(patched_status(b, len, 0, 1, 11, "larger than the padded"), F);
    ck_assert_int_eq(patched_status(b, len, 0, 2, 0xFFFFFFFFu, "layer 0"), F);
    ck_assert_int_eq(patched_status(b, len, 0, 3, 0, "stride"), F);
    ck_assert_int_eq(patched_status(b, len, 0, 4, 0x80000000u, "stride"), F);
    ck_assert_int_eq(patched_status(b, len, 0, 5, 3, "layer 0: conv2d"), F);
    ck_assert_int_eq(patched_status(b, len, 0, 6, 0xFFFFFFFFu, "layer 0"), F);
    ck_assert_int_eq(patched_status(b, len, 0, 7, 0xFFFFFFFFu, "rank"), F);
    ck_assert_int_eq(patched_status(b, len, 0, 7, 77, "exceeds P"), F);
    ck_assert_int_eq(patched_status(b, len, 0, 7, 3, "section PARM"), F);
    /* groupnorm [1]: groups, eps */
    ck_assert_int_eq(patched_status(b, len, 1, 0, 3, "divisible"), F);
    ck_assert_int_eq(patched_status(b, len, 1, 0, 0, "layer 1: groupnorm"), F);
    ck_assert_int_eq(patched_status(b, len, 1, 1, fbits(0.0f), "layer 1"), F);
    ck_assert_int_eq(patched_status(b, len, 1, 1, 0x7FC00000u, "layer 1"), F);
    ck_assert_int_eq(patched_status(b, len, 1, 1, fbits(-1.0f), "layer 1"), F);
    /* residual [4]: from, projection stride */
    ck_assert_int_eq(patched_status(b, len, 4, 0, 4, "from -1..3"), F);
    ck_assert_int_eq(patched_status(b, len, 4, 0, 0xFFFFFFFEu, "from -1..3"), F);
    ck_assert_int_eq(patched_status(b, len, 4, 0, 0xFFFFFFFFu,
                                    "adds layer -1's 2x8x8 to 4x8x8"), F);
    ck_assert_int_eq(patched_status(b, len, 4, 0, 0, NULL), IBVI_OK);
    ck_assert_int_eq(patched_status(b, len, 4, 1, 0xFFFFFFFFu, "layer 4"), F);
    ck_assert_int_eq(patched_status(b, len, 4, 1, 1, NULL), F); /* PARM short */
    /* residual [7]: a projection that does not reach the shape */
    ck_assert_int_eq(patched_status(b, len, 7, 1, 1, "projects layer 5's"), F);
    ck_assert_int_eq(patched_status(b, len, 7, 1, 0, "adds layer 5's"), F);
    ck_assert_int_eq(patched_status(b, len, 7, 0, 4, "projects layer 4's"), F);
    /* maxpool [5]: kernel_h, kernel_w, stride_h, stride_w */
    ck_assert_int_eq(patched_status(b, len, 5, 0, 9, "layer 5: maxpool"), F);
    ck_assert_int_eq(patched_status(b, len, 5, 2, 0, "layer 5: maxpool"), F);
    ck_assert_int_eq(patched_status(b, len, 5, 1, 3, "square pools"), V);
    ck_assert_int_eq(patched_status(b, len, 5, 3, 1, "square pools"), V);
    ck_assert_int_eq(patched_status(b, len, 5, 0, 0xFFFFFFFFu, "layer 5"), F);
    /* avgpool [8] on 6x2x2 */
    ck_assert_int_eq(patched_status(b, len, 8, 0, 3, "layer 8: avgpool"), F);
    ck_assert_int_eq(patched_status(b, len, 8, 1, 3, "layer 8: avgpool"), F);
    /* the input shape: too narrow for the maxpool, or of another size */
    ck_assert_int_eq(load_patched32(b, len, S_ARCH + 28, 1, 1), F);
    ck_assert_int_eq(load_patched32(b, len, S_ARCH + 20, 3, 1), F);
    /* global avgpool [9] and flatten [10]: no fields; a later library's
     * required field is refused, an ignorable one was tested for dense.
     * Swapping them keeps every shape (6x1x1 -> 6x1x1): it loads. */
    uint8_t *c = malloc((size_t)len);
    memcpy(c, b, (size_t)len);
    const int64_t g = record_fields(b, 9) - 20, f = record_fields(b, 10) - 20;
    wr32(c + g, IBVI_LAYER_FLATTEN);
    wr32(c + f, IBVI_LAYER_GLOBAL_AVGPOOL);
    fix_file(c, len);
    ck_assert_int_eq(load_status(c, len, NULL), IBVI_OK);
    memcpy(c, b, (size_t)len);
    wr64(c + f + 12, 21);
    fix_file(c, len);
    ck_assert_int_eq(load_status(c, len, "required bytes in a record"), F);
    /* the last layer a pool */
    memcpy(c, b, (size_t)len);
    wr32(c + record_fields(b, 11) - 20, IBVI_LAYER_FLATTEN);
    wr64(c + record_fields(b, 11) - 20 + 12, 20);
    fix_file(c, len);
    ck_assert_int_eq(load_status(c, len, "the last layer is not dense"), F);
    free(c);
    ck_assert_int_eq(load_status(b, len, NULL), IBVI_OK);
    free(b);
    ibvi_optimizer_free(opt);
    ibvi_net_free(net);
}
END_TEST

static Suite *io_suite(void)
{
    Suite *s = suite_create("io");
    TCase *tc = tcase_create("roundtrip");
    tcase_add_unchecked_fixture(tc, setup_root, teardown_root);
    tcase_add_checked_fixture(tc, setup_dir, teardown_dir);
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, test_roundtrip_without_optimizer);
    tcase_add_test(tc, test_roundtrip_sgd);
    tcase_add_test(tc, test_roundtrip_adam);
    tcase_add_test(tc, test_buffer_matches_file);
    tcase_add_test(tc, test_resume_sgd);
    tcase_add_test(tc, test_resume_adam);
    tcase_add_test(tc, test_resume_plain_sgd);
    suite_add_tcase(s, tc);

    tc = tcase_create("damaged");
    tcase_add_unchecked_fixture(tc, setup_root, teardown_root);
    tcase_add_checked_fixture(tc, setup_dir, teardown_dir);
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, test_truncation_every_length);
    tcase_add_test(tc, test_truncation_at_sections_in_files);
    tcase_add_test(tc, test_flipped_bytes_and_bits);
    tcase_add_test(tc, test_magic_version_empty_missing);
    tcase_add_test(tc, test_inconsistent_content);
    tcase_add_test(tc, test_random_damage_with_valid_checksum);
    tcase_add_test(tc, test_out_of_memory_while_loading);
    suite_add_tcase(s, tc);

    tc = tcase_create("saving");
    tcase_add_unchecked_fixture(tc, setup_root, teardown_root);
    tcase_add_checked_fixture(tc, setup_dir, teardown_dir);
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, test_save_arguments);
    tcase_add_test(tc, test_save_into_missing_directory);
    tcase_add_test(tc, test_failed_save_keeps_previous_file);
    tcase_add_test(tc, test_rename_failure_and_temp_collision);
    suite_add_tcase(s, tc);

    tc = tcase_create("hostile");
    tcase_add_unchecked_fixture(tc, setup_root, teardown_root);
    tcase_add_checked_fixture(tc, setup_dir, teardown_dir);
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, test_file_threads_capped_at_cpus);
    tcase_add_test(tc, test_step_count_bound);
    tcase_add_test(tc, test_save_refuses_unloadable_network);
    tcase_add_test(tc, test_save_refuses_non_regular_destination);
    tcase_add_test(tc, test_load_fifo_does_not_block);
    tcase_add_test(tc, test_small_file_huge_workspace);
    tcase_add_test(tc, test_sparse_file_bounded_memory);
    tcase_add_test(tc, test_longest_file_name);
    suite_add_tcase(s, tc);

    tc = tcase_create("version2");
    tcase_add_unchecked_fixture(tc, setup_root, teardown_root);
    tcase_add_checked_fixture(tc, setup_dir, teardown_dir);
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, test_v1_files_load_the_same_network);
    tcase_add_test(tc, test_v2_unknown_sections_and_kinds);
    tcase_add_test(tc, test_v2_hostile_fields);
    tcase_add_test(tc, test_diag_lowrank_record);
    tcase_add_test(tc, test_image_roundtrip);
    tcase_add_test(tc, test_image_hostile_fields);
    tcase_add_test(tc, test_no_bias_records);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(io_suite());
    srunner_run_all(sr, CK_NORMAL);
    const int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
