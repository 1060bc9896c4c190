/*
 * idx.c - IDX reader and writer (plain or gzip) for the libibvi examples.
 * See idx.h for the format, the limits and the error contract.
 *
 * SPDX-License-Identifier: MIT
 */
#include "idx.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <zlib.h>

#define IDX_CHUNK ((size_t)1 << 20) /* read granularity and first allocation */

/* ---- messages ----------------------------------------------------------- */

#if defined(__GNUC__)
__attribute__((format(printf, 4, 5)))
#endif
static int fail(int code, char *err, size_t errlen, const char *fmt, ...)
{
    if (err != NULL && errlen > 0) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return code;
}

static void ok_msg(char *err, size_t errlen)
{
    if (err != NULL && errlen > 0)
        err[0] = '\0';
}

const char *idx_status_string(int status)
{
    switch (status) {
    case IDX_OK: return "ok";
    case IDX_ERR_INVALID_ARG: return "invalid argument";
    case IDX_ERR_NOMEM: return "out of memory";
    case IDX_ERR_IO: return "input/output error";
    case IDX_ERR_FORMAT: return "not a valid IDX file";
    default: return "unknown status";
    }
}

static const char *type_name(int t)
{
    switch (t) {
    case 0x08: return "unsigned byte";
    case 0x09: return "signed byte";
    case 0x0B: return "int16";
    case 0x0C: return "int32";
    case 0x0D: return "float32";
    case 0x0E: return "float64";
    default: return "unknown type";
    }
}

static uint32_t be32(const unsigned char *p)
{
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) |
           ((uint32_t)p[2] << 8) | (uint32_t)p[3];
}

static void put_be32(unsigned char *p, uint32_t v)
{
    p[0] = (unsigned char)(v >> 24);
    p[1] = (unsigned char)(v >> 16);
    p[2] = (unsigned char)(v >> 8);
    p[3] = (unsigned char)v;
}

/* ---- reading ------------------------------------------------------------ */

typedef struct reader {
    gzFile g;
    const char *path;
    int is_gz;
} reader;

static int reader_open(reader *r, const char *path, char *err, size_t errlen)
{
    unsigned char magic[2] = {0, 0};
    size_t n;
    FILE *f;

    r->g = NULL;
    r->path = path;
    r->is_gz = 0;
    errno = 0;
    f = fopen(path, "rb");
    if (f == NULL)
        return fail(IDX_ERR_IO, err, errlen, "%s: cannot open: %s", path,
                    errno ? strerror(errno) : "unknown error");
    n = fread(magic, 1, 2, f);
    if (n < 2 && ferror(f)) {
        int e = errno;
        fclose(f);
        return fail(IDX_ERR_IO, err, errlen, "%s: cannot read: %s", path,
                    e ? strerror(e) : "read error");
    }
    fclose(f);
    r->is_gz = (n == 2 && magic[0] == 0x1f && magic[1] == 0x8b);

    /* zlib reads a plain file transparently, so one path serves both. */
    errno = 0;
    r->g = gzopen(path, "rb");
    if (r->g == NULL)
        return fail(errno == ENOMEM ? IDX_ERR_NOMEM : IDX_ERR_IO, err, errlen,
                    "%s: cannot open: %s", path,
                    errno ? strerror(errno) : "gzopen failed");
    gzbuffer(r->g, 128 * 1024);
    return IDX_OK;
}

static void reader_close(reader *r)
{
    if (r->g != NULL)
        gzclose(r->g);
    r->g = NULL;
}

/* Reads up to n bytes. Returns the number read (short only at end of data)
 * or -1 after writing an error message (I/O or corrupt gzip data). */
static int64_t reader_read(reader *r, void *buf, size_t n, char *err,
                           size_t errlen)
{
    size_t done = 0;
    while (done < n) {
        size_t want = n - done;
        int got;
        if (want > ((size_t)1 << 30))
            want = (size_t)1 << 30;
        got = gzread(r->g, (unsigned char *)buf + done, (unsigned)want);
        if (got < 0) {
            int zerr = Z_OK;
            const char *msg = gzerror(r->g, &zerr);
            if (zerr == Z_ERRNO)
                fail(IDX_ERR_IO, err, errlen, "%s: read error: %s", r->path,
                     strerror(errno));
            else if (zerr == Z_MEM_ERROR)
                fail(IDX_ERR_NOMEM, err, errlen, "%s: out of memory in zlib",
                     r->path);
            else
                fail(IDX_ERR_FORMAT, err, errlen,
                     "%s: corrupt gzip data: %s", r->path,
                     msg ? msg : "unknown zlib error");
            return -1;
        }
        if (got == 0)
            break;
        done += (size_t)got;
    }
    return (int64_t)done;
}

/* The status code that goes with the message reader_read wrote. */
static int reader_errcode(reader *r)
{
    int zerr = Z_OK;
    gzerror(r->g, &zerr);
    if (zerr == Z_ERRNO)
        return IDX_ERR_IO;
    if (zerr == Z_MEM_ERROR)
        return IDX_ERR_NOMEM;
    return IDX_ERR_FORMAT;
}

/* After a short read: did a gzip stream end in the middle? */
static int reader_gz_truncated(reader *r)
{
    int zerr = Z_OK;
    if (!r->is_gz)
        return 0;
    gzerror(r->g, &zerr);
    return zerr == Z_BUF_ERROR;
}

/* Reads and checks the header. ndims is 3 (images) or 1 (labels); dims
 * receives the ndims sizes, validated against the limits in idx.h. */
static int read_header(reader *r, int ndims, uint32_t dims[3], char *err,
                       size_t errlen)
{
    unsigned char h[16];
    int64_t got;
    uint32_t magic;
    const char *kind = ndims == 3 ? "image" : "label";
    const char *a_kind = ndims == 3 ? "an image" : "a label";
    const uint32_t want_magic = ndims == 3 ? IDX_MAGIC_IMAGES : IDX_MAGIC_LABELS;
    int i;

    got = reader_read(r, h, 4, err, errlen);
    if (got < 0)
        return reader_errcode(r);
    if (got < 4)
        return fail(IDX_ERR_FORMAT, err, errlen,
                    "%s: truncated header: %s%" PRId64 " byte(s), an IDX "
                    "header needs at least 4",
                    r->path, reader_gz_truncated(r) ? "gzip stream ends after "
                                                    : "file has only ",
                    got);
    magic = be32(h);
    if (h[0] != 0 || h[1] != 0)
        return fail(IDX_ERR_FORMAT, err, errlen,
                    "%s: not an IDX file: magic 0x%08" PRIx32
                    " (expected 0x%08" PRIx32 " for %s file)",
                    r->path, magic, want_magic, a_kind);
    if (h[2] != 0x08)
        return fail(IDX_ERR_FORMAT, err, errlen,
                    "%s: unsupported IDX data type 0x%02X (%s); only 0x08 "
                    "(unsigned byte) is supported",
                    r->path, (unsigned)h[2], type_name(h[2]));
    if (h[3] != ndims)
        return fail(IDX_ERR_FORMAT, err, errlen,
                    "%s: IDX file has %u dimension(s), expected %d for %s "
                    "file (magic 0x%08" PRIx32 ", expected 0x%08" PRIx32 ")%s",
                    r->path, (unsigned)h[3], ndims, a_kind, magic, want_magic,
                    ndims == 3 && h[3] == 1 ? "; is this a label file?"
                    : ndims == 1 && h[3] == 3 ? "; is this an image file?"
                                              : "");

    got = reader_read(r, h + 4, (size_t)ndims * 4, err, errlen);
    if (got < 0)
        return reader_errcode(r);
    if (got < ndims * 4)
        return fail(IDX_ERR_FORMAT, err, errlen,
                    "%s: truncated header: %d dimension size(s) need %d "
                    "bytes, %s after %" PRId64,
                    r->path, ndims, ndims * 4,
                    reader_gz_truncated(r) ? "gzip stream ends" : "file ends",
                    got);
    for (i = 0; i < ndims; i++)
        dims[i] = be32(h + 4 + 4 * i);

    if (dims[0] == 0)
        return fail(IDX_ERR_FORMAT, err, errlen,
                    "%s: header says 0 %ss", r->path, kind);
    if ((int64_t)dims[0] > IDX_MAX_COUNT)
        return fail(IDX_ERR_FORMAT, err, errlen,
                    "%s: absurd header: %" PRIu32 " %ss (limit %" PRId64 ")",
                    r->path, dims[0], kind, IDX_MAX_COUNT);
    if (ndims == 3) {
        uint64_t total;
        if (dims[1] == 0 || dims[2] == 0)
            return fail(IDX_ERR_FORMAT, err, errlen,
                        "%s: header says images of %" PRIu32 "x%" PRIu32
                        " pixels",
                        r->path, dims[1], dims[2]);
        if (dims[1] > IDX_MAX_DIM || dims[2] > IDX_MAX_DIM)
            return fail(IDX_ERR_FORMAT, err, errlen,
                        "%s: absurd header: images of %" PRIu32 "x%" PRIu32
                        " pixels (limit %d per side)",
                        r->path, dims[1], dims[2], IDX_MAX_DIM);
        /* Each factor < 2^31 and rows*cols <= 2^32: no uint64 overflow
         * before the comparison below. */
        total = (uint64_t)dims[1] * dims[2];
        if (total > (uint64_t)IDX_MAX_ELEMENTS / dims[0])
            return fail(IDX_ERR_FORMAT, err, errlen,
                        "%s: absurd header: %" PRIu32 " images of %" PRIu32
                        "x%" PRIu32 " exceed %" PRId64 " pixels",
                        r->path, dims[0], dims[1], dims[2], IDX_MAX_ELEMENTS);
    }
    return IDX_OK;
}

/* Reads exactly `total` data bytes into a buffer that grows as data arrive,
 * then checks that nothing follows. `what` describes an item for messages;
 * `item` is the number of bytes per item. */
static int read_body(reader *r, uint64_t total, uint64_t item,
                     const char *what, uint8_t **out, char *err,
                     size_t errlen)
{
    uint8_t *buf = NULL;
    size_t cap = 0, have = 0;
    unsigned char extra;
    int64_t got;

    *out = NULL;
    if (total > (uint64_t)SIZE_MAX / 4) /* room for the float copy, too */
        return fail(IDX_ERR_NOMEM, err, errlen,
                    "%s: %" PRIu64 " bytes do not fit in memory", r->path,
                    total);
    while ((uint64_t)have < total) {
        size_t want;
        if (have == cap) {
            size_t ncap = cap == 0 ? IDX_CHUNK : cap * 2;
            uint8_t *nb;
            if ((uint64_t)ncap > total)
                ncap = (size_t)total;
            nb = realloc(buf, ncap);
            if (nb == NULL) {
                free(buf);
                return fail(IDX_ERR_NOMEM, err, errlen,
                            "%s: out of memory reading %" PRIu64 " bytes",
                            r->path, total);
            }
            buf = nb;
            cap = ncap;
        }
        want = cap - have;
        if (want > IDX_CHUNK)
            want = IDX_CHUNK;
        got = reader_read(r, buf + have, want, err, errlen);
        if (got < 0) {
            free(buf);
            return reader_errcode(r);
        }
        have += (size_t)got;
        if ((size_t)got < want) {
            int gzt = reader_gz_truncated(r);
            free(buf);
            return fail(IDX_ERR_FORMAT, err, errlen,
                        "%s: truncated data: header says %" PRIu64 " %s, "
                        "%s after %" PRIu64 " of them (%" PRIu64 " of %" PRIu64
                        " data bytes)",
                        r->path, total / item, what,
                        gzt ? "gzip stream ends" : "file ends",
                        (uint64_t)have / item, (uint64_t)have, total);
        }
    }

    /* Nothing may follow; reading on also makes zlib check the CRC. */
    got = reader_read(r, &extra, 1, err, errlen);
    if (got < 0) {
        free(buf);
        return reader_errcode(r);
    }
    if (got > 0) {
        free(buf);
        return fail(IDX_ERR_FORMAT, err, errlen,
                    "%s: trailing bytes after the %" PRIu64 " %s the header "
                    "announces",
                    r->path, total / item, what);
    }
    if (reader_gz_truncated(r)) {
        free(buf);
        return fail(IDX_ERR_FORMAT, err, errlen,
                    "%s: gzip archive is truncated (the data are complete, "
                    "the gzip trailer is missing)",
                    r->path);
    }
    if (buf == NULL) { /* total == 0 cannot happen, but stay safe */
        buf = malloc(1);
        if (buf == NULL)
            return fail(IDX_ERR_NOMEM, err, errlen, "%s: out of memory",
                        r->path);
    }
    *out = buf;
    return IDX_OK;
}

int idx_load_images_u8(const char *path, uint8_t **pixels_out, int64_t *count,
                       int32_t *rows, int32_t *cols, char *err, size_t errlen)
{
    reader r;
    uint32_t d[3] = {0, 0, 0};
    uint8_t *data = NULL;
    char what[64];
    int rc;

    if (pixels_out) *pixels_out = NULL;
    if (count) *count = 0;
    if (rows) *rows = 0;
    if (cols) *cols = 0;
    if (path == NULL || pixels_out == NULL || count == NULL || rows == NULL ||
        cols == NULL)
        return fail(IDX_ERR_INVALID_ARG, err, errlen,
                    "idx_load_images: NULL argument");
    rc = reader_open(&r, path, err, errlen);
    if (rc != IDX_OK)
        return rc;
    rc = read_header(&r, 3, d, err, errlen);
    if (rc == IDX_OK) {
        snprintf(what, sizeof what, "images of %" PRIu32 "x%" PRIu32, d[1],
                 d[2]);
        rc = read_body(&r, (uint64_t)d[0] * d[1] * d[2],
                       (uint64_t)d[1] * d[2], what, &data, err, errlen);
    }
    reader_close(&r);
    if (rc != IDX_OK)
        return rc;
    *pixels_out = data;
    *count = (int64_t)d[0];
    *rows = (int32_t)d[1];
    *cols = (int32_t)d[2];
    ok_msg(err, errlen);
    return IDX_OK;
}

int idx_load_images(const char *path, float **pixels_out, int64_t *count,
                    int32_t *rows, int32_t *cols, char *err, size_t errlen)
{
    uint8_t *raw = NULL;
    float *px;
    int64_t n = 0;
    int32_t h = 0, w = 0;
    size_t total, i;
    int rc;

    if (pixels_out) *pixels_out = NULL;
    if (count) *count = 0;
    if (rows) *rows = 0;
    if (cols) *cols = 0;
    if (pixels_out == NULL || count == NULL || rows == NULL || cols == NULL)
        return fail(IDX_ERR_INVALID_ARG, err, errlen,
                    "idx_load_images: NULL argument");
    rc = idx_load_images_u8(path, &raw, &n, &h, &w, err, errlen);
    if (rc != IDX_OK)
        return rc;
    total = (size_t)n * (size_t)h * (size_t)w; /* checked by the reader */
    px = malloc(total * sizeof *px);
    if (px == NULL) {
        free(raw);
        return fail(IDX_ERR_NOMEM, err, errlen,
                    "%s: out of memory for %zu pixels", path, total);
    }
    for (i = 0; i < total; i++)
        px[i] = (float)raw[i] / 255.0f;
    free(raw);
    *pixels_out = px;
    *count = n;
    *rows = h;
    *cols = w;
    return IDX_OK;
}

int idx_load_labels(const char *path, int32_t **labels_out, int64_t *count,
                    char *err, size_t errlen)
{
    reader r;
    uint32_t d[3] = {0, 0, 0};
    uint8_t *data = NULL;
    int32_t *lab;
    size_t i;
    int rc;

    if (labels_out) *labels_out = NULL;
    if (count) *count = 0;
    if (path == NULL || labels_out == NULL || count == NULL)
        return fail(IDX_ERR_INVALID_ARG, err, errlen,
                    "idx_load_labels: NULL argument");
    rc = reader_open(&r, path, err, errlen);
    if (rc != IDX_OK)
        return rc;
    rc = read_header(&r, 1, d, err, errlen);
    if (rc == IDX_OK)
        rc = read_body(&r, d[0], 1, "labels", &data, err, errlen);
    reader_close(&r);
    if (rc != IDX_OK)
        return rc;
    lab = malloc((size_t)d[0] * sizeof *lab);
    if (lab == NULL) {
        free(data);
        return fail(IDX_ERR_NOMEM, err, errlen,
                    "%s: out of memory for %" PRIu32 " labels", path, d[0]);
    }
    for (i = 0; i < d[0]; i++)
        lab[i] = data[i];
    free(data);
    *labels_out = lab;
    *count = (int64_t)d[0];
    ok_msg(err, errlen);
    return IDX_OK;
}

int32_t idx_max_label(const int32_t *labels, int64_t count)
{
    int32_t m = -1;
    int64_t i;
    if (labels == NULL || count <= 0)
        return -1;
    for (i = 0; i < count; i++)
        if (labels[i] > m)
            m = labels[i];
    return m;
}

/* ---- writing ------------------------------------------------------------ */

static int ends_with_gz(const char *path)
{
    size_t n = strlen(path);
    return n >= 3 && strcmp(path + n - 3, ".gz") == 0;
}

typedef struct writer {
    gzFile g;
    const char *path;
} writer;

static int writer_open(writer *w, const char *path, char *err, size_t errlen)
{
    w->path = path;
    errno = 0;
    /* "T": plain (transparent) writing through the same interface. */
    w->g = gzopen(path, ends_with_gz(path) ? "wb6" : "wbT");
    if (w->g == NULL)
        return fail(IDX_ERR_IO, err, errlen, "%s: cannot create: %s", path,
                    errno ? strerror(errno) : "gzopen failed");
    return IDX_OK;
}

static int writer_put(writer *w, const void *buf, size_t n, char *err,
                      size_t errlen)
{
    size_t done = 0;
    while (done < n) {
        size_t want = n - done;
        int put;
        if (want > ((size_t)1 << 30))
            want = (size_t)1 << 30;
        put = gzwrite(w->g, (const unsigned char *)buf + done, (unsigned)want);
        if (put <= 0) {
            int zerr = Z_OK;
            const char *msg = gzerror(w->g, &zerr);
            return fail(IDX_ERR_IO, err, errlen, "%s: write error: %s",
                        w->path,
                        zerr == Z_ERRNO ? strerror(errno)
                                        : (msg ? msg : "zlib error"));
        }
        done += (size_t)put;
    }
    return IDX_OK;
}

/* Closes the file; on failure (rc != 0 or a failing close) removes it. */
static int writer_finish(writer *w, int rc, char *err, size_t errlen)
{
    int zrc;
    errno = 0;
    zrc = gzclose(w->g);
    w->g = NULL;
    if (rc == IDX_OK && zrc != Z_OK)
        rc = fail(IDX_ERR_IO, err, errlen, "%s: error closing: %s", w->path,
                  zrc == Z_ERRNO && errno ? strerror(errno) : "zlib error");
    if (rc != IDX_OK)
        remove(w->path);
    else
        ok_msg(err, errlen);
    return rc;
}

static int check_image_args(const char *fn, const char *path,
                            const void *pixels, int64_t count, int32_t rows,
                            int32_t cols, char *err, size_t errlen)
{
    if (path == NULL || pixels == NULL)
        return fail(IDX_ERR_INVALID_ARG, err, errlen, "%s: NULL argument", fn);
    if (count <= 0 || count > IDX_MAX_COUNT || rows <= 0 || cols <= 0 ||
        rows > IDX_MAX_DIM || cols > IDX_MAX_DIM ||
        (int64_t)rows * cols > IDX_MAX_ELEMENTS / count)
        return fail(IDX_ERR_INVALID_ARG, err, errlen,
                    "%s: %s: invalid size %" PRId64 " x %" PRId32 " x %" PRId32,
                    fn, path, count, rows, cols);
    return IDX_OK;
}

static int write_image_header(writer *w, int64_t count, int32_t rows,
                              int32_t cols, char *err, size_t errlen)
{
    unsigned char h[16];
    put_be32(h, IDX_MAGIC_IMAGES);
    put_be32(h + 4, (uint32_t)count);
    put_be32(h + 8, (uint32_t)rows);
    put_be32(h + 12, (uint32_t)cols);
    return writer_put(w, h, sizeof h, err, errlen);
}

int idx_write_images_u8(const char *path, const uint8_t *pixels, int64_t count,
                        int32_t rows, int32_t cols, char *err, size_t errlen)
{
    writer w;
    int rc = check_image_args("idx_write_images_u8", path, pixels, count, rows,
                              cols, err, errlen);
    if (rc != IDX_OK)
        return rc;
    rc = writer_open(&w, path, err, errlen);
    if (rc != IDX_OK)
        return rc;
    rc = write_image_header(&w, count, rows, cols, err, errlen);
    if (rc == IDX_OK)
        rc = writer_put(&w, pixels, (size_t)count * (size_t)rows * (size_t)cols,
                        err, errlen);
    return writer_finish(&w, rc, err, errlen);
}

static uint8_t to_byte(float x)
{
    if (!(x > 0.0f)) /* also NaN */
        return 0;
    if (x >= 1.0f)
        return 255;
    return (uint8_t)((double)x * 255.0 + 0.5);
}

int idx_write_images(const char *path, const float *pixels, int64_t count,
                     int32_t rows, int32_t cols, char *err, size_t errlen)
{
    writer w;
    uint8_t buf[4096];
    size_t total, done = 0;
    int rc = check_image_args("idx_write_images", path, pixels, count, rows,
                              cols, err, errlen);
    if (rc != IDX_OK)
        return rc;
    rc = writer_open(&w, path, err, errlen);
    if (rc != IDX_OK)
        return rc;
    rc = write_image_header(&w, count, rows, cols, err, errlen);
    total = (size_t)count * (size_t)rows * (size_t)cols;
    while (rc == IDX_OK && done < total) {
        size_t k, m = total - done;
        if (m > sizeof buf)
            m = sizeof buf;
        for (k = 0; k < m; k++)
            buf[k] = to_byte(pixels[done + k]);
        rc = writer_put(&w, buf, m, err, errlen);
        done += m;
    }
    return writer_finish(&w, rc, err, errlen);
}

int idx_write_labels(const char *path, const int32_t *labels, int64_t count,
                     char *err, size_t errlen)
{
    writer w;
    unsigned char h[8];
    uint8_t buf[4096];
    int64_t i, done = 0;
    int rc;

    if (path == NULL || labels == NULL)
        return fail(IDX_ERR_INVALID_ARG, err, errlen,
                    "idx_write_labels: NULL argument");
    if (count <= 0 || count > IDX_MAX_COUNT)
        return fail(IDX_ERR_INVALID_ARG, err, errlen,
                    "idx_write_labels: %s: invalid count %" PRId64, path,
                    count);
    for (i = 0; i < count; i++)
        if (labels[i] < 0 || labels[i] > 255)
            return fail(IDX_ERR_INVALID_ARG, err, errlen,
                        "idx_write_labels: %s: label %" PRId64 " is %" PRId32
                        ", outside 0..255",
                        path, i, labels[i]);
    rc = writer_open(&w, path, err, errlen);
    if (rc != IDX_OK)
        return rc;
    put_be32(h, IDX_MAGIC_LABELS);
    put_be32(h + 4, (uint32_t)count);
    rc = writer_put(&w, h, sizeof h, err, errlen);
    while (rc == IDX_OK && done < count) {
        int64_t k, m = count - done;
        if (m > (int64_t)sizeof buf)
            m = (int64_t)sizeof buf;
        for (k = 0; k < m; k++)
            buf[k] = (uint8_t)labels[done + k];
        rc = writer_put(&w, buf, (size_t)m, err, errlen);
        done += m;
    }
    return writer_finish(&w, rc, err, errlen);
}
