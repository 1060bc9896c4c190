/*
 * test_idx.c - Check suite for the examples' IDX reader/writer (examples/idx.c).
 *
 * Writes small IDX files (plain and gzip) into a fresh temporary directory
 * per test, reads them back, and drives every error path. If Debian's
 * dataset-fashion-mnist is installed, also loads its real t10k files.
 *
 * SPDX-License-Identifier: MIT
 */
#define _XOPEN_SOURCE 700
#include <check.h>
#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include "idx.h"

/* ---- fixture: one temporary directory per test -------------------------- */

static char tmpdir[4096];
static char err[512];

static void setup(void)
{
    const char *base = getenv("TMPDIR");
    if (base == NULL || base[0] == '\0')
        base = "/tmp";
    snprintf(tmpdir, sizeof tmpdir, "%s/test_idx.XXXXXX", base);
    ck_assert_msg(mkdtemp(tmpdir) != NULL, "mkdtemp failed");
    err[0] = '\0';
}

static void teardown(void)
{
    DIR *d = opendir(tmpdir);
    struct dirent *e;
    char p[4400];
    if (d == NULL)
        return;
    while ((e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        snprintf(p, sizeof p, "%s/%s", tmpdir, e->d_name);
        if (rmdir(p) != 0)
            unlink(p);
    }
    closedir(d);
    rmdir(tmpdir);
}

static const char *tpath(const char *name)
{
    static char p[4400];
    snprintf(p, sizeof p, "%s/%s", tmpdir, name);
    return p;
}

static void write_raw(const char *path, const void *buf, size_t n)
{
    FILE *f = fopen(path, "wb");
    ck_assert_ptr_nonnull(f);
    if (n > 0)
        ck_assert_uint_eq(fwrite(buf, 1, n, f), n);
    ck_assert_int_eq(fclose(f), 0);
}

static void write_raw_gz(const char *path, const void *buf, size_t n)
{
    gzFile g = gzopen(path, "wb");
    ck_assert_ptr_nonnull(g);
    if (n > 0)
        ck_assert_int_eq(gzwrite(g, buf, (unsigned)n), (int)n);
    ck_assert_int_eq(gzclose(g), Z_OK);
}

static unsigned char *read_raw(const char *path, size_t *n)
{
    FILE *f = fopen(path, "rb");
    unsigned char *buf;
    long len;
    ck_assert_ptr_nonnull(f);
    ck_assert_int_eq(fseek(f, 0, SEEK_END), 0);
    len = ftell(f);
    ck_assert_int_ge(len, 0);
    rewind(f);
    buf = malloc((size_t)len + 1);
    ck_assert_ptr_nonnull(buf);
    ck_assert_uint_eq(fread(buf, 1, (size_t)len, f), (size_t)len);
    fclose(f);
    *n = (size_t)len;
    return buf;
}

static void put_be32(unsigned char *p, uint32_t v)
{
    p[0] = (unsigned char)(v >> 24);
    p[1] = (unsigned char)(v >> 16);
    p[2] = (unsigned char)(v >> 8);
    p[3] = (unsigned char)v;
}

/* An image file's bytes: header then `ndata` data bytes (pattern k*7). */
static unsigned char *image_bytes(uint32_t magic, uint32_t count, uint32_t rows,
                                  uint32_t cols, size_t ndata, size_t *n)
{
    unsigned char *b = malloc(16 + ndata + 1);
    size_t k;
    ck_assert_ptr_nonnull(b);
    put_be32(b, magic);
    put_be32(b + 4, count);
    put_be32(b + 8, rows);
    put_be32(b + 12, cols);
    for (k = 0; k < ndata; k++)
        b[16 + k] = (unsigned char)(k * 7);
    *n = 16 + ndata;
    return b;
}

/* Loads `path` as images and expects failure `code`; checks that outputs
 * are cleared and that the message mentions `needle`. */
static void expect_images_fail(const char *path, int code, const char *needle)
{
    float *px = (float *)&px; /* non-NULL garbage: must be reset */
    int64_t n = 77;
    int32_t r = 77, c = 77;
    int rc = idx_load_images(path, &px, &n, &r, &c, err, sizeof err);
    ck_assert_msg(rc == code, "%s: expected %d, got %d (%s)", path, code, rc,
                  err);
    ck_assert_ptr_null(px);
    ck_assert_int_eq(n, 0);
    ck_assert_int_eq(r, 0);
    ck_assert_int_eq(c, 0);
    ck_assert_msg(strstr(err, needle) != NULL, "message '%s' lacks '%s'", err,
                  needle);
}

static void expect_labels_fail(const char *path, int code, const char *needle)
{
    int32_t *lab = (int32_t *)&lab;
    int64_t n = 77;
    int rc = idx_load_labels(path, &lab, &n, err, sizeof err);
    ck_assert_msg(rc == code, "%s: expected %d, got %d (%s)", path, code, rc,
                  err);
    ck_assert_ptr_null(lab);
    ck_assert_int_eq(n, 0);
    ck_assert_msg(strstr(err, needle) != NULL, "message '%s' lacks '%s'", err,
                  needle);
}

/* ---- round trips -------------------------------------------------------- */

static void roundtrip_images(const char *name, int expect_gz)
{
    enum { N = 5, R = 3, C = 4 };
    uint8_t src[N * R * C], *back = NULL;
    float *px = NULL;
    int64_t n = 0;
    int32_t r = 0, c = 0;
    size_t k, len;
    unsigned char *raw;
    const char *p = tpath(name);

    for (k = 0; k < sizeof src; k++)
        src[k] = (uint8_t)(k * 37 + 3);
    ck_assert_int_eq(idx_write_images_u8(p, src, N, R, C, err, sizeof err),
                     IDX_OK);
    raw = read_raw(p, &len);
    if (expect_gz) {
        ck_assert(len >= 2 && raw[0] == 0x1f && raw[1] == 0x8b);
    } else {
        ck_assert_uint_eq(len, 16 + sizeof src);
        ck_assert(raw[0] == 0 && raw[1] == 0 && raw[2] == 8 && raw[3] == 3);
        ck_assert_int_eq(raw[7], N);
        ck_assert_int_eq(raw[11], R);
        ck_assert_int_eq(raw[15], C);
    }
    free(raw);

    ck_assert_int_eq(idx_load_images_u8(p, &back, &n, &r, &c, err, sizeof err),
                     IDX_OK);
    ck_assert_int_eq(n, N);
    ck_assert_int_eq(r, R);
    ck_assert_int_eq(c, C);
    ck_assert_mem_eq(back, src, sizeof src);
    free(back);

    ck_assert_int_eq(idx_load_images(p, &px, &n, &r, &c, err, sizeof err),
                     IDX_OK);
    ck_assert_str_eq(err, "");
    ck_assert_int_eq(n * r * c, (int64_t)sizeof src);
    for (k = 0; k < sizeof src; k++)
        ck_assert_float_eq(px[k], (float)src[k] / 255.0f);
    free(px);
}

START_TEST(test_images_plain_roundtrip)
{
    roundtrip_images("img-idx3-ubyte", 0);
}
END_TEST

START_TEST(test_images_gz_roundtrip)
{
    roundtrip_images("img-idx3-ubyte.gz", 1);
}
END_TEST

START_TEST(test_labels_roundtrip)
{
    const char *names[2] = {"lab-idx1-ubyte", "lab-idx1-ubyte.gz"};
    int32_t src[12] = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 200, 255};
    int i, k;
    for (i = 0; i < 2; i++) {
        int32_t *lab = NULL;
        int64_t n = 0;
        const char *p = tpath(names[i]);
        ck_assert_int_eq(idx_write_labels(p, src, 12, err, sizeof err),
                         IDX_OK);
        ck_assert_int_eq(idx_load_labels(p, &lab, &n, err, sizeof err),
                         IDX_OK);
        ck_assert_int_eq(n, 12);
        for (k = 0; k < 12; k++)
            ck_assert_int_eq(lab[k], src[k]);
        /* values above 9 are accepted as documented */
        ck_assert_int_eq(idx_max_label(lab, n), 255);
        ck_assert_int_eq(idx_max_label(lab, 10), 9);
        free(lab);
    }
    ck_assert_int_eq(idx_max_label(NULL, 3), -1);
    ck_assert_int_eq(idx_max_label(src, 0), -1);
}
END_TEST

START_TEST(test_float_writer_rounds_and_clamps)
{
    float src[8] = {-0.5f, 0.0f, 0.5f, 1.0f, 2.0f, NAN, 1.0f / 255.0f,
                    0.998f};
    uint8_t want[8] = {0, 0, 128, 255, 255, 0, 1, 254};
    uint8_t *back = NULL;
    int64_t n;
    int32_t r, c;
    const char *p = tpath("f.gz");
    ck_assert_int_eq(idx_write_images(p, src, 2, 2, 2, err, sizeof err),
                     IDX_OK);
    ck_assert_int_eq(idx_load_images_u8(p, &back, &n, &r, &c, err, sizeof err),
                     IDX_OK);
    ck_assert_mem_eq(back, want, 8);
    free(back);
}
END_TEST

START_TEST(test_plain_file_with_gz_name_and_vice_versa)
{
    /* Detection is by content, not by name. */
    size_t n;
    unsigned char *b = image_bytes(IDX_MAGIC_IMAGES, 2, 2, 2, 8, &n);
    float *px = NULL;
    int64_t cnt;
    int32_t r, c;
    write_raw(tpath("plain.gz"), b, n);
    write_raw_gz(tpath("packed.idx"), b, n);
    ck_assert_int_eq(idx_load_images(tpath("plain.gz"), &px, &cnt, &r, &c, err,
                                     sizeof err),
                     IDX_OK);
    free(px);
    ck_assert_int_eq(idx_load_images(tpath("packed.idx"), &px, &cnt, &r, &c,
                                     err, sizeof err),
                     IDX_OK);
    ck_assert_int_eq(cnt, 2);
    ck_assert_float_eq(px[1], 7.0f / 255.0f);
    free(px);
    free(b);
}
END_TEST

/* ---- error paths -------------------------------------------------------- */

START_TEST(test_missing_file)
{
    expect_images_fail(tpath("nope.gz"), IDX_ERR_IO, "No such file");
    expect_labels_fail(tpath("nope"), IDX_ERR_IO, "cannot open");
    /* a directory is not a file */
    expect_images_fail(tmpdir, IDX_ERR_IO, tmpdir);
}
END_TEST

START_TEST(test_null_arguments)
{
    float *px = NULL;
    int32_t *lab = NULL;
    int64_t n;
    int32_t r, c;
    uint8_t b = 0;
    int32_t l = 0;
    ck_assert_int_eq(idx_load_images(NULL, &px, &n, &r, &c, err, sizeof err),
                     IDX_ERR_INVALID_ARG);
    ck_assert_int_eq(idx_load_images("x", NULL, &n, &r, &c, NULL, 0),
                     IDX_ERR_INVALID_ARG);
    ck_assert_int_eq(idx_load_labels("x", &lab, NULL, NULL, 0),
                     IDX_ERR_INVALID_ARG);
    ck_assert_int_eq(idx_write_images_u8(NULL, &b, 1, 1, 1, NULL, 0),
                     IDX_ERR_INVALID_ARG);
    ck_assert_int_eq(idx_write_labels(tpath("l"), NULL, 1, NULL, 0),
                     IDX_ERR_INVALID_ARG);
    ck_assert_int_eq(idx_write_labels(tpath("l"), &l, 0, NULL, 0),
                     IDX_ERR_INVALID_ARG);
    ck_assert_int_eq(idx_write_images_u8(tpath("i"), &b, 1, 0, 1, err,
                                         sizeof err),
                     IDX_ERR_INVALID_ARG);
    ck_assert_int_eq(idx_write_images_u8(tpath("i"), &b, 1, 1, 70000, NULL, 0),
                     IDX_ERR_INVALID_ARG);
    ck_assert_int_eq(access(tpath("i"), F_OK), -1);
    /* err == NULL is allowed on every path */
    ck_assert_int_eq(idx_load_labels(tpath("nope"), &lab, &n, NULL, 0),
                     IDX_ERR_IO);
    ck_assert_str_eq(idx_status_string(IDX_ERR_FORMAT), "not a valid IDX file");
    ck_assert_str_eq(idx_status_string(12345), "unknown status");
}
END_TEST

START_TEST(test_write_labels_out_of_range)
{
    int32_t bad[3] = {1, 256, 2}, neg[2] = {0, -1};
    ck_assert_int_eq(idx_write_labels(tpath("l"), bad, 3, err, sizeof err),
                     IDX_ERR_INVALID_ARG);
    ck_assert_ptr_nonnull(strstr(err, "256"));
    ck_assert_int_eq(idx_write_labels(tpath("l"), neg, 2, err, sizeof err),
                     IDX_ERR_INVALID_ARG);
    ck_assert_int_eq(access(tpath("l"), F_OK), -1);
}
END_TEST

START_TEST(test_write_to_missing_directory)
{
    uint8_t b[4] = {0};
    int32_t l[1] = {0};
    ck_assert_int_eq(idx_write_images_u8(tpath("no/such/dir.gz"), b, 1, 2, 2,
                                         err, sizeof err),
                     IDX_ERR_IO);
    ck_assert_ptr_nonnull(strstr(err, "cannot create"));
    ck_assert_int_eq(idx_write_labels(tpath("no/such/l"), l, 1, err,
                                      sizeof err),
                     IDX_ERR_IO);
}
END_TEST

START_TEST(test_empty_and_tiny_files)
{
    unsigned char one = 0;
    write_raw(tpath("empty"), NULL, 0);
    expect_images_fail(tpath("empty"), IDX_ERR_FORMAT, "truncated header");
    write_raw(tpath("one"), &one, 1);
    expect_labels_fail(tpath("one"), IDX_ERR_FORMAT, "truncated header");
    write_raw_gz(tpath("empty.gz"), NULL, 0);
    expect_images_fail(tpath("empty.gz"), IDX_ERR_FORMAT, "truncated header");
}
END_TEST

START_TEST(test_wrong_magic)
{
    const char zip[8] = {'P', 'K', 3, 4, 0, 0, 0, 0};
    size_t n;
    unsigned char *b = image_bytes(0x12340803u, 1, 2, 2, 4, &n);
    write_raw(tpath("m"), b, n);
    expect_images_fail(tpath("m"), IDX_ERR_FORMAT, "not an IDX file");
    write_raw_gz(tpath("m.gz"), b, n);
    expect_images_fail(tpath("m.gz"), IDX_ERR_FORMAT, "0x12340803");
    write_raw(tpath("zip"), zip, sizeof zip);
    expect_labels_fail(tpath("zip"), IDX_ERR_FORMAT, "not an IDX file");
    free(b);
}
END_TEST

START_TEST(test_wrong_type_byte)
{
    size_t n;
    unsigned char *b = image_bytes(0x00000D03u, 1, 2, 2, 16, &n);
    write_raw(tpath("float"), b, n);
    expect_images_fail(tpath("float"), IDX_ERR_FORMAT, "data type 0x0D");
    expect_images_fail(tpath("float"), IDX_ERR_FORMAT, "float32");
    free(b);
    b = image_bytes(0x00000903u, 1, 2, 2, 4, &n);
    write_raw_gz(tpath("int8.gz"), b, n);
    expect_images_fail(tpath("int8.gz"), IDX_ERR_FORMAT, "0x09");
    free(b);
}
END_TEST

START_TEST(test_wrong_dimension_count)
{
    int32_t l[4] = {1, 2, 3, 4};
    uint8_t px[4] = {1, 2, 3, 4};
    size_t n;
    unsigned char *b;
    ck_assert_int_eq(idx_write_labels(tpath("l.gz"), l, 4, err, sizeof err),
                     IDX_OK);
    ck_assert_int_eq(idx_write_images_u8(tpath("i.gz"), px, 1, 2, 2, err,
                                         sizeof err),
                     IDX_OK);
    expect_images_fail(tpath("l.gz"), IDX_ERR_FORMAT, "is this a label file?");
    expect_labels_fail(tpath("i.gz"), IDX_ERR_FORMAT, "is this an image file?");
    b = image_bytes(0x00000802u, 1, 2, 2, 4, &n);
    write_raw(tpath("two"), b, n);
    expect_images_fail(tpath("two"), IDX_ERR_FORMAT, "2 dimension(s)");
    free(b);
}
END_TEST

START_TEST(test_truncated_header)
{
    size_t n;
    unsigned char *b = image_bytes(IDX_MAGIC_IMAGES, 1, 2, 2, 4, &n);
    write_raw(tpath("h"), b, 10); /* magic + 6 of the 12 size bytes */
    expect_images_fail(tpath("h"), IDX_ERR_FORMAT, "truncated header");
    write_raw_gz(tpath("h.gz"), b, 15);
    expect_images_fail(tpath("h.gz"), IDX_ERR_FORMAT, "truncated header");
    put_be32(b, IDX_MAGIC_LABELS);
    write_raw(tpath("lh"), b, 6);
    expect_labels_fail(tpath("lh"), IDX_ERR_FORMAT, "truncated header");
    free(b);
}
END_TEST

START_TEST(test_truncated_data)
{
    size_t n;
    unsigned char *b = image_bytes(IDX_MAGIC_IMAGES, 10, 28, 28, 9 * 784, &n);
    unsigned char lab[8 + 5];
    write_raw(tpath("d"), b, n);
    expect_images_fail(tpath("d"), IDX_ERR_FORMAT, "truncated data");
    expect_images_fail(tpath("d"), IDX_ERR_FORMAT, "after 9 of them");
    write_raw_gz(tpath("d.gz"), b, n - 1);
    expect_images_fail(tpath("d.gz"), IDX_ERR_FORMAT, "truncated data");
    put_be32(lab, IDX_MAGIC_LABELS);
    put_be32(lab + 4, 6);
    memset(lab + 8, 1, 5);
    write_raw(tpath("l"), lab, sizeof lab);
    expect_labels_fail(tpath("l"), IDX_ERR_FORMAT, "5 of them");
    free(b);
}
END_TEST

START_TEST(test_huge_header_small_file)
{
    /* Counts within the limits but far beyond the data: reported as
     * truncated without allocating what the header claims. */
    size_t n;
    unsigned char *b = image_bytes(IDX_MAGIC_IMAGES, 5000000u, 28, 28, 100, &n);
    unsigned char lab[8 + 3] = {0, 0, 8, 1, 0x7f, 0xff, 0xff, 0xff, 1, 2, 3};
    write_raw(tpath("big"), b, n);
    expect_images_fail(tpath("big"), IDX_ERR_FORMAT, "truncated data");
    write_raw_gz(tpath("big.gz"), b, n);
    expect_images_fail(tpath("big.gz"), IDX_ERR_FORMAT, "5000000 images");
    write_raw(tpath("lab"), lab, sizeof lab);
    expect_labels_fail(tpath("lab"), IDX_ERR_FORMAT, "truncated data");
    free(b);
}
END_TEST

START_TEST(test_zero_and_absurd_dimensions)
{
    size_t n;
    unsigned char *b;
    unsigned char lab[8] = {0, 0, 8, 1, 0, 0, 0, 0};

    b = image_bytes(IDX_MAGIC_IMAGES, 0, 28, 28, 0, &n);
    write_raw(tpath("z0"), b, n);
    expect_images_fail(tpath("z0"), IDX_ERR_FORMAT, "0 images");
    free(b);
    b = image_bytes(IDX_MAGIC_IMAGES, 1, 0, 28, 0, &n);
    write_raw(tpath("z1"), b, n);
    expect_images_fail(tpath("z1"), IDX_ERR_FORMAT, "0x28");
    free(b);
    b = image_bytes(IDX_MAGIC_IMAGES, 1, 28, 0, 0, &n);
    write_raw(tpath("z2"), b, n);
    expect_images_fail(tpath("z2"), IDX_ERR_FORMAT, "28x0");
    free(b);
    write_raw(tpath("z3"), lab, sizeof lab);
    expect_labels_fail(tpath("z3"), IDX_ERR_FORMAT, "0 labels");

    /* one side too large */
    b = image_bytes(IDX_MAGIC_IMAGES, 1, 100000, 2, 8, &n);
    write_raw(tpath("a1"), b, n);
    expect_images_fail(tpath("a1"), IDX_ERR_FORMAT, "absurd");
    free(b);
    /* count above 2^31-1 */
    b = image_bytes(IDX_MAGIC_IMAGES, 0xFFFFFFFFu, 1, 1, 8, &n);
    write_raw(tpath("a2"), b, n);
    expect_images_fail(tpath("a2"), IDX_ERR_FORMAT, "absurd");
    free(b);
    /* each field fine, the product overflowing 32 bits of pixels
     * (and 64 bits of bytes if computed naively in uint32) */
    b = image_bytes(IDX_MAGIC_IMAGES, 0x7FFFFFFFu, 65536, 65536, 8, &n);
    write_raw_gz(tpath("a3.gz"), b, n);
    expect_images_fail(tpath("a3.gz"), IDX_ERR_FORMAT, "absurd");
    free(b);
    b = image_bytes(IDX_MAGIC_IMAGES, 6000000u, 28, 28, 8, &n);
    write_raw(tpath("a4"), b, n);
    expect_images_fail(tpath("a4"), IDX_ERR_FORMAT, "exceed");
    free(b);
    lab[4] = 0x80; /* 2^31 labels */
    write_raw(tpath("a5"), lab, sizeof lab);
    expect_labels_fail(tpath("a5"), IDX_ERR_FORMAT, "absurd");
}
END_TEST

START_TEST(test_trailing_bytes_rejected)
{
    size_t n;
    unsigned char *b = image_bytes(IDX_MAGIC_IMAGES, 2, 2, 2, 9, &n);
    write_raw(tpath("t"), b, n);
    expect_images_fail(tpath("t"), IDX_ERR_FORMAT, "trailing bytes");
    write_raw_gz(tpath("t.gz"), b, n);
    expect_images_fail(tpath("t.gz"), IDX_ERR_FORMAT, "trailing bytes");
    free(b);
}
END_TEST

START_TEST(test_corrupt_gzip)
{
    enum { N = 20, R = 28, C = 28 };
    uint8_t *px = malloc(N * R * C);
    unsigned char *raw;
    size_t len, k;
    ck_assert_ptr_nonnull(px);
    for (k = 0; k < N * R * C; k++)
        px[k] = (uint8_t)((k * 2654435761u) >> 13);
    ck_assert_int_eq(idx_write_images_u8(tpath("g.gz"), px, N, R, C, err,
                                         sizeof err),
                     IDX_OK);
    raw = read_raw(tpath("g.gz"), &len);
    ck_assert_uint_gt(len, 200);

    /* garbage in the middle of the deflate stream */
    {
        unsigned char *bad = malloc(len);
        ck_assert_ptr_nonnull(bad);
        memcpy(bad, raw, len);
        for (k = len / 2; k < len / 2 + 16; k++)
            bad[k] ^= 0xA5;
        write_raw(tpath("bad.gz"), bad, len);
        expect_images_fail(tpath("bad.gz"), IDX_ERR_FORMAT, "bad.gz");
        free(bad);
    }
    /* CRC in the trailer wrong: the data inflate fine, the check fails */
    raw[len - 6] ^= 0xFF;
    write_raw(tpath("crc.gz"), raw, len);
    expect_images_fail(tpath("crc.gz"), IDX_ERR_FORMAT, "corrupt gzip data");
    raw[len - 6] ^= 0xFF;
    /* archive cut short */
    write_raw(tpath("cut.gz"), raw, len / 2);
    expect_images_fail(tpath("cut.gz"), IDX_ERR_FORMAT, "gzip stream ends");
    /* only the 8-byte trailer missing */
    write_raw(tpath("trailer.gz"), raw, len - 8);
    expect_images_fail(tpath("trailer.gz"), IDX_ERR_FORMAT, "truncated");
    /* gzip magic but a broken gzip header */
    raw[2] = 0x63; /* compression method must be 8 */
    write_raw(tpath("hdr.gz"), raw, len);
    expect_images_fail(tpath("hdr.gz"), IDX_ERR_FORMAT, "corrupt gzip data");
    free(raw);
    free(px);
}
END_TEST

/* ---- the real Fashion-MNIST files, when installed ------------------------ */

#define FASHION "/usr/share/datasets/fashion-mnist"

START_TEST(test_real_fashion_t10k)
{
    float *px = NULL;
    int32_t *lab = NULL;
    int64_t n = 0, nl = 0, i, per[10] = {0}, bad = 0;
    int32_t r = 0, c = 0;
    double sum = 0.0;
    if (access(FASHION "/t10k-images-idx3-ubyte.gz", R_OK) != 0 ||
        access(FASHION "/t10k-labels-idx1-ubyte.gz", R_OK) != 0) {
        fprintf(stderr, "test_idx: %s not installed, real-data test skipped\n",
                FASHION);
        return;
    }
    ck_assert_msg(idx_load_images(FASHION "/t10k-images-idx3-ubyte.gz", &px,
                                  &n, &r, &c, err, sizeof err) == IDX_OK,
                  "%s", err);
    ck_assert_int_eq(n, 10000);
    ck_assert_int_eq(r, 28);
    ck_assert_int_eq(c, 28);
    for (i = 0; i < n * r * c; i++) { /* one assert: Check's are slow */
        bad += !(px[i] >= 0.0f && px[i] <= 1.0f);
        sum += px[i];
    }
    ck_assert_int_eq(bad, 0);
    /* Fashion-MNIST test mean pixel is about 0.286 */
    ck_assert_msg(fabs(sum / (double)(n * r * c) - 0.286) < 0.01, "mean %g",
                  sum / (double)(n * r * c));
    ck_assert_msg(idx_load_labels(FASHION "/t10k-labels-idx1-ubyte.gz", &lab,
                                  &nl, err, sizeof err) == IDX_OK,
                  "%s", err);
    ck_assert_int_eq(nl, 10000);
    for (i = 0; i < nl; i++) {
        if (lab[i] >= 0 && lab[i] < 10)
            per[lab[i]]++;
        else
            bad++;
    }
    ck_assert_int_eq(bad, 0);
    for (i = 0; i < 10; i++)
        ck_assert_int_eq(per[i], 1000);
    free(px);
    free(lab);
}
END_TEST

static Suite *idx_suite(void)
{
    Suite *s = suite_create("idx");
    TCase *t = tcase_create("roundtrip");
    TCase *e = tcase_create("errors");
    TCase *real = tcase_create("real");

    tcase_add_checked_fixture(t, setup, teardown);
    tcase_add_test(t, test_images_plain_roundtrip);
    tcase_add_test(t, test_images_gz_roundtrip);
    tcase_add_test(t, test_labels_roundtrip);
    tcase_add_test(t, test_float_writer_rounds_and_clamps);
    tcase_add_test(t, test_plain_file_with_gz_name_and_vice_versa);
    suite_add_tcase(s, t);

    tcase_add_checked_fixture(e, setup, teardown);
    tcase_add_test(e, test_missing_file);
    tcase_add_test(e, test_null_arguments);
    tcase_add_test(e, test_write_labels_out_of_range);
    tcase_add_test(e, test_write_to_missing_directory);
    tcase_add_test(e, test_empty_and_tiny_files);
    tcase_add_test(e, test_wrong_magic);
    tcase_add_test(e, test_wrong_type_byte);
    tcase_add_test(e, test_wrong_dimension_count);
    tcase_add_test(e, test_truncated_header);
    tcase_add_test(e, test_truncated_data);
    tcase_add_test(e, test_huge_header_small_file);
    tcase_add_test(e, test_zero_and_absurd_dimensions);
    tcase_add_test(e, test_trailing_bytes_rejected);
    tcase_add_test(e, test_corrupt_gzip);
    suite_add_tcase(s, e);

    tcase_set_timeout(real, 120);
    tcase_add_test(real, test_real_fashion_t10k);
    suite_add_tcase(s, real);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(idx_suite());
    int failed;
    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
