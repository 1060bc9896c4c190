/*
 * libibvi - saving and loading networks and optimizers (format in
 * include/ibvi/io.h).
 *
 * Writing streams the bytes (format version 2) through one routine into a
 * memory buffer or a temporary file, computing the CRC-32 on the way; the
 * bytes are then checked by the reader's own validation, and the file is
 * synced and renamed over the destination. Reading (versions 1 and 2) first
 * checks the magic, the version, the recorded size and the checksum, then
 * walks the sections twice: once to validate every field and count against
 * the bytes present (allocating, for networks with residual layers, only
 * the table of the layers' output shapes, which a skip is checked
 * against), once to rebuild the
 * network through the public API, so every builder's check applies to
 * every file. Everything the format knows of a layer kind is in its
 * entry of layer_codecs[] (one per kind).
 *
 * SPDX-License-Identifier: MIT
 */
#define _GNU_SOURCE /* sched_getaffinity, CPU_COUNT */

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ibvi/io.h"
#include "image.h"
#include "network.h"

#define PREAMBLE_BYTES 16      /* magic, version, file size           */
#define CRC_BYTES 4
#define V1_SECTION_BYTES 12    /* version 1: tag, payload size        */
#define V1_HEAD_BYTES 28
#define V1_LAYER_BYTES 16
#define V2_SECTION_BYTES 20    /* version 2: tag, size, required      */
#define V2_HEAD_BYTES 24
#define V2_ARCH_FIXED 16       /* C, H, W, layer count                */
#define V2_RECORD_BYTES 20     /* layer record: kind, length, required */
#define OPTM_FIXED_BYTES 44    /* both versions                       */
#define OPTM_KL_BYTES 4        /* v2: float kl_weight after the state,
                                  written when it is not 0 (required)  */
#define MAX_THREADS 1024       /* range of the stored thread preference */
#define MAX_WIDTH 100000000    /* input_dim and outputs, as in net.c   */
#define ROW_BASE ((int64_t)1 << 20) /* activations per row: at most     */
#define ROW_PER_PARAM 4        /* ROW_BASE + ROW_PER_PARAM x params    */
#define MAX_STEPS IBVI__MAX_STEPS /* optimizer step count (io.h)   */
#define CHUNK_BYTES 65536      /* the streaming checksum's read size   */
#define MAX_TMP_ATTEMPTS 100
#define TMP_PREFIX ".ibvi-"    /* temporary files: ".ibvi-<pid>-<n>"  */

/* ---- CRC-32 (IEEE 802.3, reflected polynomial 0xEDB88320) ---------------- */

static const uint32_t crc_table[256] = {
    0x00000000u, 0x77073096u, 0xee0e612cu, 0x990951bau,
    0x076dc419u, 0x706af48fu, 0xe963a535u, 0x9e6495a3u,
    0x0edb8832u, 0x79dcb8a4u, 0xe0d5e91eu, 0x97d2d988u,
    0x09b64c2bu, 0x7eb17cbdu, 0xe7b82d07u, 0x90bf1d91u,
    0x1db71064u, 0x6ab020f2u, 0xf3b97148u, 0x84be41deu,
    0x1adad47du, 0x6ddde4ebu, 0xf4d4b551u, 0x83d385c7u,
    0x136c9856u, 0x646ba8c0u, 0xfd62f97au, 0x8a65c9ecu,
    0x14015c4fu, 0x63066cd9u, 0xfa0f3d63u, 0x8d080df5u,
    0x3b6e20c8u, 0x4c69105eu, 0xd56041e4u, 0xa2677172u,
    0x3c03e4d1u, 0x4b04d447u, 0xd20d85fdu, 0xa50ab56bu,
    0x35b5a8fau, 0x42b2986cu, 0xdbbbc9d6u, 0xacbcf940u,
    0x32d86ce3u, 0x45df5c75u, 0xdcd60dcfu, 0xabd13d59u,
    0x26d930acu, 0x51de003au, 0xc8d75180u, 0xbfd06116u,
    0x21b4f4b5u, 0x56b3c423u, 0xcfba9599u, 0xb8bda50fu,
    0x2802b89eu, 0x5f058808u, 0xc60cd9b2u, 0xb10be924u,
    0x2f6f7c87u, 0x58684c11u, 0xc1611dabu, 0xb6662d3du,
    0x76dc4190u, 0x01db7106u, 0x98d220bcu, 0xefd5102au,
    0x71b18589u, 0x06b6b51fu, 0x9fbfe4a5u, 0xe8b8d433u,
    0x7807c9a2u, 0x0f00f934u, 0x9609a88eu, 0xe10e9818u,
    0x7f6a0dbbu, 0x086d3d2du, 0x91646c97u, 0xe6635c01u,
    0x6b6b51f4u, 0x1c6c6162u, 0x856530d8u, 0xf262004eu,
    0x6c0695edu, 0x1b01a57bu, 0x8208f4c1u, 0xf50fc457u,
    0x65b0d9c6u, 0x12b7e950u, 0x8bbeb8eau, 0xfcb9887cu,
    0x62dd1ddfu, 0x15da2d49u, 0x8cd37cf3u, 0xfbd44c65u,
    0x4db26158u, 0x3ab551ceu, 0xa3bc0074u, 0xd4bb30e2u,
    0x4adfa541u, 0x3dd895d7u, 0xa4d1c46du, 0xd3d6f4fbu,
    0x4369e96au, 0x346ed9fcu, 0xad678846u, 0xda60b8d0u,
    0x44042d73u, 0x33031de5u, 0xaa0a4c5fu, 0xdd0d7cc9u,
    0x5005713cu, 0x270241aau, 0xbe0b1010u, 0xc90c2086u,
    0x5768b525u, 0x206f85b3u, 0xb966d409u, 0xce61e49fu,
    0x5edef90eu, 0x29d9c998u, 0xb0d09822u, 0xc7d7a8b4u,
    0x59b33d17u, 0x2eb40d81u, 0xb7bd5c3bu, 0xc0ba6cadu,
    0xedb88320u, 0x9abfb3b6u, 0x03b6e20cu, 0x74b1d29au,
    0xead54739u, 0x9dd277afu, 0x04db2615u, 0x73dc1683u,
    0xe3630b12u, 0x94643b84u, 0x0d6d6a3eu, 0x7a6a5aa8u,
    0xe40ecf0bu, 0x9309ff9du, 0x0a00ae27u, 0x7d079eb1u,
    0xf00f9344u, 0x8708a3d2u, 0x1e01f268u, 0x6906c2feu,
    0xf762575du, 0x806567cbu, 0x196c3671u, 0x6e6b06e7u,
    0xfed41b76u, 0x89d32be0u, 0x10da7a5au, 0x67dd4accu,
    0xf9b9df6fu, 0x8ebeeff9u, 0x17b7be43u, 0x60b08ed5u,
    0xd6d6a3e8u, 0xa1d1937eu, 0x38d8c2c4u, 0x4fdff252u,
    0xd1bb67f1u, 0xa6bc5767u, 0x3fb506ddu, 0x48b2364bu,
    0xd80d2bdau, 0xaf0a1b4cu, 0x36034af6u, 0x41047a60u,
    0xdf60efc3u, 0xa867df55u, 0x316e8eefu, 0x4669be79u,
    0xcb61b38cu, 0xbc66831au, 0x256fd2a0u, 0x5268e236u,
    0xcc0c7795u, 0xbb0b4703u, 0x220216b9u, 0x5505262fu,
    0xc5ba3bbeu, 0xb2bd0b28u, 0x2bb45a92u, 0x5cb36a04u,
    0xc2d7ffa7u, 0xb5d0cf31u, 0x2cd99e8bu, 0x5bdeae1du,
    0x9b64c2b0u, 0xec63f226u, 0x756aa39cu, 0x026d930au,
    0x9c0906a9u, 0xeb0e363fu, 0x72076785u, 0x05005713u,
    0x95bf4a82u, 0xe2b87a14u, 0x7bb12baeu, 0x0cb61b38u,
    0x92d28e9bu, 0xe5d5be0du, 0x7cdcefb7u, 0x0bdbdf21u,
    0x86d3d2d4u, 0xf1d4e242u, 0x68ddb3f8u, 0x1fda836eu,
    0x81be16cdu, 0xf6b9265bu, 0x6fb077e1u, 0x18b74777u,
    0x88085ae6u, 0xff0f6a70u, 0x66063bcau, 0x11010b5cu,
    0x8f659effu, 0xf862ae69u, 0x616bffd3u, 0x166ccf45u,
    0xa00ae278u, 0xd70dd2eeu, 0x4e048354u, 0x3903b3c2u,
    0xa7672661u, 0xd06016f7u, 0x4969474du, 0x3e6e77dbu,
    0xaed16a4au, 0xd9d65adcu, 0x40df0b66u, 0x37d83bf0u,
    0xa9bcae53u, 0xdebb9ec5u, 0x47b2cf7fu, 0x30b5ffe9u,
    0xbdbdf21cu, 0xcabac28au, 0x53b39330u, 0x24b4a3a6u,
    0xbad03605u, 0xcdd70693u, 0x54de5729u, 0x23d967bfu,
    0xb3667a2eu, 0xc4614ab8u, 0x5d681b02u, 0x2a6f2b94u,
    0xb40bbe37u, 0xc30c8ea1u, 0x5a05df1bu, 0x2d02ef8du,
};

/* Slicing by 8: crc_slice[k][b] is the CRC of byte b followed by k zero
 * bytes, so eight bytes are folded in with eight independent look-ups
 * (about 2 GB/s instead of 0.4 GB/s a byte at a time). Built once from
 * crc_table. */
static uint32_t crc_slice[8][256];
static pthread_once_t crc_slice_once = PTHREAD_ONCE_INIT;

static void crc_slice_init(void)
{
    for (int b = 0; b < 256; b++) {
        uint32_t c = crc_table[b];
        crc_slice[0][b] = c;
        for (int k = 1; k < 8; k++) {
            c = crc_table[c & 0xFFu] ^ (c >> 8);
            crc_slice[k][b] = c;
        }
    }
}

/* Running state: start at 0xFFFFFFFF, finish with ~state. */
static uint32_t crc_update(uint32_t crc, const uint8_t *p, size_t n)
{
    (void)pthread_once(&crc_slice_once, crc_slice_init);
    while (n >= 8) {
        const uint32_t lo = crc ^ ((uint32_t)p[0] | (uint32_t)p[1] << 8 |
                                   (uint32_t)p[2] << 16 |
                                   (uint32_t)p[3] << 24);
        crc = crc_slice[7][lo & 0xFFu] ^ crc_slice[6][(lo >> 8) & 0xFFu] ^
              crc_slice[5][(lo >> 16) & 0xFFu] ^ crc_slice[4][lo >> 24] ^
              crc_slice[3][p[4]] ^ crc_slice[2][p[5]] ^ crc_slice[1][p[6]] ^
              crc_slice[0][p[7]];
        p += 8;
        n -= 8;
    }
    for (size_t i = 0; i < n; i++)
        crc = crc_table[(crc ^ p[i]) & 0xFFu] ^ (crc >> 8);
    return crc;
}

/* ---- little-endian encoding ---------------------------------------------- */

static void store_u32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
    p[2] = (uint8_t)(v >> 16);
    p[3] = (uint8_t)(v >> 24);
}

static void store_u64(uint8_t *p, uint64_t v)
{
    store_u32(p, (uint32_t)v);
    store_u32(p + 4, (uint32_t)(v >> 32));
}

static uint32_t load_u32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
           (uint32_t)p[3] << 24;
}

static uint64_t load_u64(const uint8_t *p)
{
    return (uint64_t)load_u32(p) | (uint64_t)load_u32(p + 4) << 32;
}

static uint32_t float_bits(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

static float bits_float(uint32_t u)
{
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

/* Two's complement conversion without implementation-defined casts. */
static int32_t to_i32(uint32_t u)
{
    return u <= INT32_MAX ? (int32_t)u : (int32_t)(u - 2147483648u) + INT32_MIN;
}

static int64_t to_i64(uint64_t u)
{
    return u <= INT64_MAX ? (int64_t)u
                          : (int64_t)(u - UINT64_C(9223372036854775808)) +
                                INT64_MIN;
}

/* ---- writing ------------------------------------------------------------- */

/* A byte sink: a memory buffer (buf) or a file (fp, through chunk). */
typedef struct sink {
    uint8_t *buf;
    FILE *fp;
    int64_t pos;
    uint32_t crc;
    int error;          /* errno of the first failed write, 0 if none */
    size_t fill;
    uint8_t chunk[8192];
} sink;

static void sink_flush(sink *s)
{
    if (s->fp && s->fill > 0 && !s->error) {
        errno = 0;
        if (fwrite(s->chunk, 1, s->fill, s->fp) != s->fill)
            s->error = errno ? errno : EIO;
    }
    s->fill = 0;
}

static void put_raw(sink *s, const uint8_t *p, size_t n)
{
    if (s->buf) {
        memcpy(s->buf + s->pos, p, n);
    } else {
        size_t done = 0;
        while (done < n) {
            size_t take = sizeof s->chunk - s->fill;
            if (take > n - done)
                take = n - done;
            memcpy(s->chunk + s->fill, p + done, take);
            s->fill += take;
            done += take;
            if (s->fill == sizeof s->chunk)
                sink_flush(s);
        }
    }
    s->pos += (int64_t)n;
}

static void put(sink *s, const uint8_t *p, size_t n)
{
    s->crc = crc_update(s->crc, p, n);
    put_raw(s, p, n);
}

static void put_u32(sink *s, uint32_t v)
{
    uint8_t b[4];
    store_u32(b, v);
    put(s, b, 4);
}

static void put_u64(sink *s, uint64_t v)
{
    uint8_t b[8];
    store_u64(b, v);
    put(s, b, 8);
}

static void put_i32(sink *s, int32_t v) { put_u32(s, (uint32_t)v); }
static void put_f32(sink *s, float v) { put_u32(s, float_bits(v)); }

static void put_floats(sink *s, const float *x, int64_t n)
{
    uint8_t b[4 * 512];
    while (n > 0) {
        const int64_t take = n < 512 ? n : 512;
        for (int64_t i = 0; i < take; i++)
            store_u32(b + 4 * i, float_bits(x[i]));
        put(s, b, (size_t)(4 * take));
        x += take;
        n -= take;
    }
}

/* A bounds-checked cursor: reading past the end yields zeros and sets
 * overrun (the parser checks sizes first; this is a second line). */
typedef struct reader {
    const uint8_t *p;
    int64_t len; /* bytes before the checksum */
    int64_t pos;
    int overrun;
} reader;

static int64_t remaining(const reader *r) { return r->len - r->pos; }

static const uint8_t *take_bytes(reader *r, int64_t n)
{
    if (n < 0 || n > remaining(r)) {
        r->overrun = 1;
        r->pos = r->len;
        return NULL;
    }
    const uint8_t *p = r->p + r->pos;
    r->pos += n;
    return p;
}

static uint32_t get_u32(reader *r)
{
    const uint8_t *p = take_bytes(r, 4);
    return p ? load_u32(p) : 0;
}

static uint64_t get_u64(reader *r)
{
    const uint8_t *p = take_bytes(r, 8);
    return p ? load_u64(p) : 0;
}

static int32_t get_i32(reader *r) { return to_i32(get_u32(r)); }
static float get_f32(reader *r) { return bits_float(get_u32(r)); }

/* Decodes n floats; returns 0 when they are not all present. */
static int get_floats(reader *r, float *dst, int64_t n)
{
    const uint8_t *p = take_bytes(r, 4 * n);
    if (!p)
        return 0;
    for (int64_t i = 0; i < n; i++)
        dst[i] = bits_float(load_u32(p + 4 * i));
    return 1;
}

/* ---- layer kinds ----------------------------------------------------------- */

/* A layer as a file describes it (either version), before validation. A
 * field the record does not have is 0, or OUTPUTS_IMPLIED for outputs.
 * conv2d: outputs = out_channels, the kernel, strides and padding, rank;
 * pools: the kernel and strides; groupnorm: groups, eps; residual: from,
 * projection (its stride, 0 for identity). */
#define OUTPUTS_IMPLIED INT64_MIN
typedef struct layer_desc {
    int64_t kind, activation, outputs, rank;
    int64_t kh, kw, sh, sw, ph, pw;
    int64_t groups, from, projection;
    float eps;
    /* The covariance field after the kind's (version 2, kinds with
     * parameters; absent: the family the rank implies): family, then
     * init_sigma (diagonal) or the rank R (diag-lowrank) */
    int64_t family;
    float init_sigma;
    int64_t cov_rank;
    /* The bias field after the covariance field (conv2d, residual; since
     * 0.6.0): 1 for a layer without a bias, 0 when absent. */
    int64_t no_bias;
} layer_desc;

/* The covariance field of a record: int32 family, then a float init_sigma
 * (diagonal) or an int32 R (diag-lowrank, SWAG; the kind's own rank field
 * is then 0). This library writes it for diagonal and diag-lowrank layers
 * only (required = length, so an older library refuses them: "needs a
 * newer libibvi"). */
#define COV_FIELD_BYTES 8

/* The bias field of a conv2d or residual record, after the covariance
 * field: int32 no_bias (1: the layer has no bias, theta is its weights
 * alone). Written only for such a layer, with the covariance field before
 * it (its family spelled out) and required = length, so an older library
 * refuses the file ("needs a newer libibvi") rather than misread theta. */
#define BIAS_FIELD_BYTES 4

/* What a layer's check knows: the shape of its input and the output
 * shapes of the layers before it (outs[-1] is the network's input). */
typedef struct layer_input {
    ibvi__shape in;
    const ibvi__shape *outs;
} layer_input;

/* What a valid layer on a given input amounts to. */
typedef struct layer_shape {
    ibvi__shape out;
    int64_t outputs;      /* C * H * W of out                         */
    int64_t param_floats; /* its floats in PARM                       */
    int64_t noise;        /* its rank: its share of one noise sample  */
    int64_t max_block;    /* most floats the rebuild reads at once    */
} layer_shape;

/* Everything the file format knows of one layer kind. There is exactly one
 * entry per kind, so each entry can move into its layer's own file.
 * Version 2 stores field_bytes bytes of kind-specific fields in the kind's
 * record (include/ibvi/io.h); version 1 stores the fixed record described
 * there, which the reader turns into the same layer_desc. */
typedef struct layer_codec {
    int32_t kind;
    const char *name;
    int32_t field_bytes;
    int can_be_last;      /* the network may end with this kind       */
    /* the version-2 fields of a layer, and back */
    void (*encode)(const ibvi_layer *l, uint8_t *fields);
    void (*decode)(const uint8_t *fields, layer_desc *d);
    /* validates d on its input, with at most `budget` parameter floats
     * left in the file; messages name layer `index` */
    int (*check)(const layer_desc *d, const layer_input *in, int64_t budget,
                 layer_shape *sh, const char *where, int32_t index);
    /* rebuilds the layer through the public API */
    int (*add)(ibvi_net *net, const layer_desc *d);
    /* its PARM floats: writes them; reads and sets them (block holds
     * max_block floats) */
    void (*put_params)(sink *s, const ibvi_layer *l);
    int (*get_params)(ibvi_layer *l, reader *r, float *block);
} layer_codec;

/* Whether a layer's record carries the covariance field (its family is
 * not the one its kind's rank field implies). */
static int has_bias_field(const ibvi_layer *l)
{
    return (l->kind == IBVI__KIND_CONV2D && l->conv.options.no_bias) ||
           (l->kind == IBVI__KIND_RESIDUAL && l->residual.stride > 0 &&
            !l->residual.bias);
}

static int has_cov_field(const ibvi_layer *l)
{
    return l->covariance == IBVI__COV_DIAGONAL ||
           l->covariance == IBVI__COV_DIAG_LOWRANK || has_bias_field(l);
}

/* dense: int32 outputs, int32 rank; PARM: mean (P), factor (P x R), then
 * rho (diagonal) or d (diag-lowrank), P */
static void dense_encode(const ibvi_layer *l, uint8_t *f)
{
    store_u32(f, (uint32_t)l->outputs);
    store_u32(f + 4, (uint32_t)l->rank);
}

static void dense_decode(const uint8_t *f, layer_desc *d)
{
    d->outputs = to_i32(load_u32(f));
    d->rank = to_i32(load_u32(f + 4));
}

/* The floats of a theta of P values with a rank-R factor must fit in the
 * rest of the file; sets the shape's parameter counts. */
static int check_theta(int64_t P, int64_t rank, int64_t budget,
                       layer_shape *sh, const char *where, int32_t index)
{
    if (rank > P)
        return ibvi__fail(IBVI_ERR_FORMAT,
                          "%s: layer %ld: rank %lld exceeds P = %lld", where,
                          (long)index, (long long)rank, (long long)P);
    if (1 + rank > budget / P)
        return ibvi__fail(IBVI_ERR_FORMAT,
                          "%s: layer %ld: %lld x %lld parameters do not fit "
                          "in the rest of the file", where, (long)index,
                          (long long)P, (long long)rank + 1);
    sh->param_floats = P * (1 + rank);
    sh->noise = rank;
    sh->max_block = P * rank > P ? P * rank : P;
    return IBVI_OK;
}

/* A geometry constructor of image.h refused (it names `kind`): the same
 * message as a format error of layer `index`. */
static int geometry_failure(const char *where, int32_t index)
{
    char detail[200];
    snprintf(detail, sizeof detail, "%s", ibvi_last_error());
    return ibvi__fail(IBVI_ERR_FORMAT, "%s: layer %ld: %s", where,
                      (long)index, detail);
}

static ibvi__shape flat_shape(int64_t size)
{
    return (ibvi__shape){(int32_t)size, 1, 1};
}

static int dense_check(const layer_desc *d, const layer_input *in,
                       int64_t budget, layer_shape *sh, const char *where,
                       int32_t index)
{
    const int64_t width = ibvi__shape_size(in->in);
    if (d->activation != 0 || d->outputs <= 0 || d->outputs > MAX_WIDTH ||
        d->rank < 0)
        return ibvi__fail(IBVI_ERR_FORMAT,
                          "%s: layer %ld: dense layer with activation %lld, "
                          "%lld outputs and rank %lld is invalid", where,
                          (long)index, (long long)d->activation,
                          (long long)d->outputs, (long long)d->rank);
    /* outputs, width <= 10^8: P < 2^54 fits */
    const int64_t P = d->outputs * width + d->outputs;
    sh->out = flat_shape(d->outputs);
    sh->outputs = d->outputs;
    return check_theta(P, d->rank, budget, sh, where, index);
}

static int dense_add(ibvi_net *net, const layer_desc *d)
{
    return ibvi_net_add_dense(net, (int32_t)d->outputs, (int32_t)d->rank);
}

static void dense_put_params(sink *s, const ibvi_layer *l)
{
    put_floats(s, l->mean, l->params);
    put_floats(s, l->factor, l->params * l->rank);
    if (l->covariance == IBVI__COV_DIAGONAL)
        put_floats(s, l->rho, l->params);
    if (l->covariance == IBVI__COV_DIAG_LOWRANK)
        put_floats(s, l->diag, l->params);
}

static int dense_get_params(ibvi_layer *l, reader *r, float *block)
{
    if (!get_floats(r, block, l->params))
        return ibvi__fail(IBVI_ERR_FORMAT, "truncated parameters");
    int status = ibvi_layer_set_mean(l, block, l->params);
    if (status >= 0 && l->rank > 0) {
        const int64_t count = l->params * l->rank;
        if (!get_floats(r, block, count))
            return ibvi__fail(IBVI_ERR_FORMAT, "truncated parameters");
        status = ibvi_layer_set_factor(l, block, count);
    }
    if (status >= 0 && l->covariance == IBVI__COV_DIAGONAL) {
        if (!get_floats(r, block, l->params))
            return ibvi__fail(IBVI_ERR_FORMAT, "truncated parameters");
        status = ibvi_layer_set_rho(l, block, l->params);
    }
    if (status >= 0 && l->covariance == IBVI__COV_DIAG_LOWRANK) {
        if (!get_floats(r, block, l->params))
            return ibvi__fail(IBVI_ERR_FORMAT, "truncated parameters");
        status = ibvi_layer_set_diag(l, block, l->params);
    }
    return status;
}

/* activation: int32 activation (ibvi_activation); no parameters */
static void activation_encode(const ibvi_layer *l, uint8_t *f)
{
    store_u32(f, (uint32_t)l->activation);
}

static void activation_decode(const uint8_t *f, layer_desc *d)
{
    d->activation = to_i32(load_u32(f));
}

static int activation_check(const layer_desc *d, const layer_input *in,
                            int64_t budget, layer_shape *sh,
                            const char *where, int32_t index)
{
    const int64_t width = ibvi__shape_size(in->in);
    (void)budget;
    if (d->activation < INT32_MIN || d->activation > INT32_MAX ||
        !ibvi__activation_valid((int32_t)d->activation) || d->rank != 0 ||
        (d->outputs != OUTPUTS_IMPLIED && d->outputs != width))
        return ibvi__fail(IBVI_ERR_FORMAT,
                          "%s: layer %ld: activation %lld with %lld outputs "
                          "and rank %lld is invalid (width %lld)", where,
                          (long)index, (long long)d->activation,
                          (long long)(d->outputs == OUTPUTS_IMPLIED
                                          ? width
                                          : d->outputs),
                          (long long)d->rank, (long long)width);
    *sh = (layer_shape){.out = in->in, .outputs = width};
    return IBVI_OK;
}

static int activation_add(ibvi_net *net, const layer_desc *d)
{
    return ibvi_net_add_activation(net, (int32_t)d->activation);
}

static void activation_put_params(sink *s, const ibvi_layer *l)
{
    (void)s;
    (void)l;
}

static int activation_get_params(ibvi_layer *l, reader *r, float *block)
{
    (void)l;
    (void)r;
    (void)block;
    return IBVI_OK;
}

/* Layers whose PARM floats are theta's mean then its factor (dense,
 * conv2d, groupnorm, a residual's projection: all but the parameter-free
 * ones, which store none). */
static void theta_put_params(sink *s, const ibvi_layer *l)
{
    if (l->params > 0)
        dense_put_params(s, l);
}

static int theta_get_params(ibvi_layer *l, reader *r, float *block)
{
    return l->params > 0 ? dense_get_params(l, r, block) : IBVI_OK;
}

/* conv2d: int32 out_channels, kernel_h, kernel_w, stride_h, stride_w,
 * pad_h, pad_w, rank (32 bytes); PARM: mean (P), factor (P x R) */
static void conv2d_encode(const ibvi_layer *l, uint8_t *f)
{
    const ibvi_conv2d_options *o = &l->conv.options;
    const int32_t v[8] = {o->out_channels, o->kernel_h, o->kernel_w,
                          o->stride_h, o->stride_w, o->pad_h, o->pad_w,
                          o->rank};
    for (int i = 0; i < 8; i++)
        store_u32(f + 4 * i, (uint32_t)v[i]);
}

static void conv2d_decode(const uint8_t *f, layer_desc *d)
{
    d->outputs = to_i32(load_u32(f));
    d->kh = to_i32(load_u32(f + 4));
    d->kw = to_i32(load_u32(f + 8));
    d->sh = to_i32(load_u32(f + 12));
    d->sw = to_i32(load_u32(f + 16));
    d->ph = to_i32(load_u32(f + 20));
    d->pw = to_i32(load_u32(f + 24));
    d->rank = to_i32(load_u32(f + 28));
}

static int conv2d_check(const layer_desc *d, const layer_input *in,
                        int64_t budget, layer_shape *sh, const char *where,
                        int32_t index)
{
    ibvi__conv2d_geom g;
    if (ibvi__conv2d_geometry(&g, in->in.c, in->in.h, in->in.w, d->outputs,
                              d->kh, d->kw, d->sh, d->sw, d->ph, d->pw,
                              "conv2d") < 0)
        return geometry_failure(where, index);
    if (d->no_bias < 0 || d->no_bias > 1)
        return ibvi__fail(IBVI_ERR_FORMAT,
                          "%s: layer %ld: conv2d with no_bias %lld is "
                          "invalid", where, (long)index,
                          (long long)d->no_bias);
    if (d->no_bias)
        ibvi__conv2d_without_bias(&g);
    if (d->rank < 0)
        return ibvi__fail(IBVI_ERR_FORMAT,
                          "%s: layer %ld: conv2d with rank %lld is invalid",
                          where, (long)index, (long long)d->rank);
    sh->out = (ibvi__shape){(int32_t)g.c_out, (int32_t)g.h_out,
                            (int32_t)g.w_out};
    sh->outputs = g.out_size;
    return check_theta(g.params, d->rank, budget, sh, where, index);
}

static int conv2d_add(ibvi_net *net, const layer_desc *d)
{
    ibvi_conv2d_options o = IBVI_CONV2D_OPTIONS_INIT;
    o.out_channels = (int32_t)d->outputs;
    o.kernel_h = (int32_t)d->kh;
    o.kernel_w = (int32_t)d->kw;
    o.stride_h = (int32_t)d->sh;
    o.stride_w = (int32_t)d->sw;
    o.pad_h = (int32_t)d->ph;
    o.pad_w = (int32_t)d->pw;
    o.rank = (int32_t)d->rank;
    o.no_bias = (int32_t)d->no_bias;
    return ibvi_net_add_conv2d_ex(net, &o);
}

/* maxpool, avgpool: int32 kernel_h, kernel_w, stride_h, stride_w (16
 * bytes); no parameters. The builders make square pools. */
static void pool_encode(const ibvi_layer *l, uint8_t *f)
{
    store_u32(f, (uint32_t)l->pool.geom.kh);
    store_u32(f + 4, (uint32_t)l->pool.geom.kw);
    store_u32(f + 8, (uint32_t)l->pool.geom.stride_h);
    store_u32(f + 12, (uint32_t)l->pool.geom.stride_w);
}

static void pool_decode(const uint8_t *f, layer_desc *d)
{
    d->kh = to_i32(load_u32(f));
    d->kw = to_i32(load_u32(f + 4));
    d->sh = to_i32(load_u32(f + 8));
    d->sw = to_i32(load_u32(f + 12));
}

static int pool_check(const layer_desc *d, const layer_input *in,
                      int64_t budget, layer_shape *sh, const char *where,
                      int32_t index)
{
    (void)budget;
    const char *name = d->kind == IBVI_LAYER_MAXPOOL ? "maxpool" : "avgpool";
    ibvi__pool2d_geom g;
    if (ibvi__pool2d_geometry(&g, in->in.c, in->in.h, in->in.w, d->kh, d->kw,
                              d->sh, d->sw, name) < 0)
        return geometry_failure(where, index);
    if (d->kh != d->kw || d->sh != d->sw)
        return ibvi__fail(IBVI_ERR_VERSION,
                          "%s: needs a newer libibvi: layer %ld (%s) has "
                          "kernel %lldx%lld and stride %lldx%lld; this "
                          "library builds square pools", where, (long)index,
                          name, (long long)d->kh, (long long)d->kw,
                          (long long)d->sh, (long long)d->sw);
    *sh = (layer_shape){.out = {(int32_t)g.c, (int32_t)g.h_out,
                                (int32_t)g.w_out},
                        .outputs = g.out_size};
    return IBVI_OK;
}

static int pool_add(ibvi_net *net, const layer_desc *d)
{
    return d->kind == IBVI_LAYER_MAXPOOL
               ? ibvi_net_add_maxpool(net, (int32_t)d->kh, (int32_t)d->sh)
               : ibvi_net_add_avgpool(net, (int32_t)d->kh, (int32_t)d->sh);
}

/* global avgpool, flatten: no fields, no parameters */
static void no_encode(const ibvi_layer *l, uint8_t *f)
{
    (void)l;
    (void)f;
}

static void no_decode(const uint8_t *f, layer_desc *d)
{
    (void)f;
    (void)d;
}

static int global_avgpool_check(const layer_desc *d, const layer_input *in,
                                int64_t budget, layer_shape *sh,
                                const char *where, int32_t index)
{
    (void)d;
    (void)budget;
    ibvi__pool2d_geom g;
    if (ibvi__pool2d_global_geometry(&g, in->in.c, in->in.h, in->in.w,
                                     "global_avgpool") < 0)
        return geometry_failure(where, index);
    *sh = (layer_shape){.out = {(int32_t)g.c, 1, 1}, .outputs = g.c};
    return IBVI_OK;
}

static int global_avgpool_add(ibvi_net *net, const layer_desc *d)
{
    (void)d;
    return ibvi_net_add_global_avgpool(net);
}

static int flatten_check(const layer_desc *d, const layer_input *in,
                         int64_t budget, layer_shape *sh, const char *where,
                         int32_t index)
{
    (void)d;
    (void)budget;
    (void)where;
    (void)index;
    const int64_t size = ibvi__shape_size(in->in);
    *sh = (layer_shape){.out = flat_shape(size), .outputs = size};
    return IBVI_OK;
}

static int flatten_add(ibvi_net *net, const layer_desc *d)
{
    (void)d;
    return ibvi_net_add_flatten(net);
}

/* groupnorm: int32 groups, float eps (8 bytes); PARM: gamma, beta (2C) */
static void groupnorm_encode(const ibvi_layer *l, uint8_t *f)
{
    store_u32(f, (uint32_t)l->groupnorm.groups);
    store_u32(f + 4, float_bits(l->groupnorm.eps));
}

static void groupnorm_decode(const uint8_t *f, layer_desc *d)
{
    d->groups = to_i32(load_u32(f));
    d->eps = bits_float(load_u32(f + 4));
}

static int groupnorm_check(const layer_desc *d, const layer_input *in,
                           int64_t budget, layer_shape *sh, const char *where,
                           int32_t index)
{
    ibvi__groupnorm_geom g;
    if (ibvi__groupnorm_geometry(&g, in->in.c, in->in.h, in->in.w, d->groups,
                                 d->eps, "groupnorm") < 0)
        return geometry_failure(where, index);
    sh->out = in->in;
    sh->outputs = g.in_size;
    return check_theta(g.params, 0, budget, sh, where, index);
}

static int groupnorm_add(ibvi_net *net, const layer_desc *d)
{
    return ibvi_net_add_groupnorm(net, (int32_t)d->groups, d->eps);
}

/* residual: int32 from (-1: the input), int32 projection_stride (0:
 * identity) (8 bytes); PARM: the projection's [W (C_out x C_in); b] */
static void residual_encode(const ibvi_layer *l, uint8_t *f)
{
    store_u32(f, (uint32_t)l->residual.from);
    store_u32(f + 4, (uint32_t)l->residual.stride);
}

static void residual_decode(const uint8_t *f, layer_desc *d)
{
    d->from = to_i32(load_u32(f));
    d->projection = to_i32(load_u32(f + 4));
}

static int residual_check(const layer_desc *d, const layer_input *in,
                          int64_t budget, layer_shape *sh, const char *where,
                          int32_t index)
{
    if (d->from < -1 || d->from >= index || d->projection < 0)
        return ibvi__fail(IBVI_ERR_FORMAT,
                          "%s: layer %ld: residual from layer %lld with "
                          "projection stride %lld is invalid (from -1..%ld)",
                          where, (long)index, (long long)d->from,
                          (long long)d->projection, (long)index - 1);
    if (d->no_bias < 0 || d->no_bias > 1 || (d->no_bias && !d->projection))
        return ibvi__fail(IBVI_ERR_FORMAT,
                          "%s: layer %ld: residual with no_bias %lld and "
                          "projection stride %lld is invalid", where,
                          (long)index, (long long)d->no_bias,
                          (long long)d->projection);
    if (!in->outs) /* has_residual found none: the framing is broken */
        return ibvi__fail(IBVI_ERR_FORMAT, "%s: layer %ld: residual record "
                          "out of place", where, (long)index);
    const ibvi__shape skip = in->outs[d->from];
    sh->out = in->in;
    sh->outputs = ibvi__shape_size(in->in);
    if (d->projection == 0) {
        if (skip.c != in->in.c || skip.h != in->in.h || skip.w != in->in.w)
            return ibvi__fail(IBVI_ERR_FORMAT,
                              "%s: layer %ld: residual adds layer %lld's "
                              "%ldx%ldx%ld to %ldx%ldx%ld", where,
                              (long)index, (long long)d->from, (long)skip.c,
                              (long)skip.h, (long)skip.w, (long)in->in.c,
                              (long)in->in.h, (long)in->in.w);
        *sh = (layer_shape){.out = in->in, .outputs = sh->outputs};
        return IBVI_OK;
    }
    ibvi__conv2d_geom g;
    if (ibvi__conv2d_geometry(&g, skip.c, skip.h, skip.w, in->in.c, 1, 1,
                              d->projection, d->projection, 0, 0,
                              "residual projection") < 0)
        return geometry_failure(where, index);
    if (d->no_bias)
        ibvi__conv2d_without_bias(&g);
    if (g.h_out != in->in.h || g.w_out != in->in.w)
        return ibvi__fail(IBVI_ERR_FORMAT,
                          "%s: layer %ld: residual projects layer %lld's "
                          "%ldx%ldx%ld with stride %lld to %lldx%lld, not "
                          "%ldx%ld", where, (long)index, (long long)d->from,
                          (long)skip.c, (long)skip.h, (long)skip.w,
                          (long long)d->projection, (long long)g.h_out,
                          (long long)g.w_out, (long)in->in.h, (long)in->in.w);
    return check_theta(g.params, 0, budget, sh, where, index);
}

static int residual_add(ibvi_net *net, const layer_desc *d)
{
    ibvi_residual_options o = IBVI_RESIDUAL_OPTIONS_INIT;
    o.from = (int32_t)d->from;
    o.projection_stride = (int32_t)d->projection;
    o.projection_no_bias = (int32_t)d->no_bias;
    return ibvi_net_add_residual_ex(net, &o);
}

static const layer_codec layer_codecs[] = {
    {IBVI_LAYER_DENSE, "dense", 8, 1, dense_encode, dense_decode,
     dense_check, dense_add, dense_put_params, dense_get_params},
    {IBVI_LAYER_ACTIVATION, "activation", 4, 0, activation_encode,
     activation_decode, activation_check, activation_add,
     activation_put_params, activation_get_params},
    {IBVI_LAYER_CONV2D, "conv2d", 32, 1, conv2d_encode, conv2d_decode,
     conv2d_check, conv2d_add, theta_put_params, theta_get_params},
    {IBVI_LAYER_MAXPOOL, "maxpool", 16, 0, pool_encode, pool_decode,
     pool_check, pool_add, activation_put_params, activation_get_params},
    {IBVI_LAYER_AVGPOOL, "avgpool", 16, 0, pool_encode, pool_decode,
     pool_check, pool_add, activation_put_params, activation_get_params},
    {IBVI_LAYER_GLOBAL_AVGPOOL, "global_avgpool", 0, 0, no_encode, no_decode,
     global_avgpool_check, global_avgpool_add, activation_put_params,
     activation_get_params},
    {IBVI_LAYER_FLATTEN, "flatten", 0, 0, no_encode, no_decode,
     flatten_check, flatten_add, activation_put_params,
     activation_get_params},
    {IBVI_LAYER_GROUPNORM, "groupnorm", 8, 0, groupnorm_encode,
     groupnorm_decode, groupnorm_check, groupnorm_add, theta_put_params,
     theta_get_params},
    {IBVI_LAYER_RESIDUAL, "residual", 8, 0, residual_encode, residual_decode,
     residual_check, residual_add, theta_put_params, theta_get_params},
};

/* Whether records of the codec's kind may carry the covariance field. */
static int codec_has_theta(const layer_codec *c)
{
    return c->put_params != activation_put_params;
}

/* Whether records of the codec's kind may carry the bias field. */
static int codec_has_bias(const layer_codec *c)
{
    return c->kind == IBVI_LAYER_CONV2D || c->kind == IBVI_LAYER_RESIDUAL;
}

static const layer_codec *codec_for(int64_t kind)
{
    for (size_t i = 0; i < sizeof layer_codecs / sizeof layer_codecs[0]; i++)
        if (layer_codecs[i].kind == kind)
            return &layer_codecs[i];
    return NULL;
}

/* ---- layout -------------------------------------------------------------- */

typedef struct layout {
    int64_t param_floats; /* sum over dense layers of P (1 + R)          */
    int64_t arch_bytes;   /* payload sizes                               */
    int64_t parm_bytes;
    int64_t optm_bytes;   /* 0 without an optimizer                      */
    int64_t total;        /* whole file, checksum included               */
} layout;

static void compute_layout(const ibvi_net *net, const ibvi_optimizer *opt,
                           layout *lo)
{
    lo->param_floats = 0;
    lo->arch_bytes = V2_ARCH_FIXED;
    for (int32_t i = 0; i < net->layer_count; i++) {
        const ibvi_layer *l = net->layers[i];
        lo->param_floats += l->params + ibvi__covariance_floats(l);
        lo->arch_bytes += V2_RECORD_BYTES + codec_for(l->kind)->field_bytes +
                          (has_cov_field(l) ? COV_FIELD_BYTES : 0) +
                          (has_bias_field(l) ? BIAS_FIELD_BYTES : 0);
    }
    lo->parm_bytes = 4 * lo->param_floats;
    lo->optm_bytes = 0;
    if (opt) {
        ibvi__optimizer_info info;
        ibvi__optimizer_get_info(opt, &info);
        lo->optm_bytes = OPTM_FIXED_BYTES + 4 * info.state_floats +
                         (info.kl_weight != 0.0f ? OPTM_KL_BYTES : 0);
    }
    lo->total = PREAMBLE_BYTES + 3 * V2_SECTION_BYTES + V2_HEAD_BYTES +
                lo->arch_bytes + lo->parm_bytes +
                (opt ? V2_SECTION_BYTES + lo->optm_bytes : 0) + CRC_BYTES;
}

/* A version-2 section header; every section this library writes must be
 * understood whole (required = payload size). */
static void put_section(sink *s, const char *tag, int64_t payload)
{
    put(s, (const uint8_t *)tag, 4);
    put_u64(s, (uint64_t)payload); /* size */
    put_u64(s, (uint64_t)payload); /* required */
}

/* Emits the whole file, in format version 2 (include/ibvi/io.h). */
static void write_model(sink *s, const ibvi_net *net, const ibvi_optimizer *opt,
                        const layout *lo)
{
    s->crc = 0xFFFFFFFFu;
    put(s, (const uint8_t *)"IBVI", 4);
    put_u32(s, IBVI_FORMAT_VERSION);
    put_u64(s, (uint64_t)lo->total);

    put_section(s, "HEAD", V2_HEAD_BYTES);
    put_i32(s, net->parameterization);
    put_i32(s, net->threads);
    put_u64(s, net->noise_rng.counter);
    put_u64(s, net->seed);

    put_section(s, "ARCH", lo->arch_bytes);
    put_u32(s, (uint32_t)net->input_shape.c);
    put_u32(s, (uint32_t)net->input_shape.h);
    put_u32(s, (uint32_t)net->input_shape.w);
    put_u32(s, (uint32_t)net->layer_count);
    for (int32_t i = 0; i < net->layer_count; i++) {
        const ibvi_layer *l = net->layers[i];
        const layer_codec *c = codec_for(l->kind);
        uint8_t fields[64 + COV_FIELD_BYTES + BIAS_FIELD_BYTES];
        /* The kinds' rank fields carry the low-rank family's R, 0 for the
         * others (a diag-lowrank layer's R is in its covariance field). */
        ibvi_layer plain = *l;
        plain.rank = l->covariance == IBVI__COV_LOWRANK ? l->rank : 0;
        if (l->kind == IBVI__KIND_CONV2D)
            plain.conv.options.rank = plain.rank;
        c->encode(&plain, fields);
        int32_t bytes = c->field_bytes;
        if (has_cov_field(l)) {
            store_u32(fields + bytes, (uint32_t)l->covariance);
            store_u32(fields + bytes + 4,
                      l->covariance == IBVI__COV_DIAG_LOWRANK
                          ? (uint32_t)l->rank
                          : float_bits(l->init_sigma));
            bytes += COV_FIELD_BYTES;
        }
        if (has_bias_field(l)) {
            store_u32(fields + bytes, 1u);
            bytes += BIAS_FIELD_BYTES;
        }
        put_u32(s, (uint32_t)c->kind);
        put_u64(s, (uint64_t)(V2_RECORD_BYTES + bytes)); /* length */
        put_u64(s, (uint64_t)(V2_RECORD_BYTES + bytes)); /* required */
        put(s, fields, (size_t)bytes);
    }

    put_section(s, "PARM", lo->parm_bytes);
    for (int32_t i = 0; i < net->layer_count; i++)
        codec_for(net->layers[i]->kind)->put_params(s, net->layers[i]);

    if (opt) {
        ibvi__optimizer_info info;
        ibvi__optimizer_get_info(opt, &info);
        put_section(s, "OPTM", lo->optm_bytes);
        put_i32(s, info.kind);
        put_f32(s, info.lr);
        put_f32(s, info.momentum);
        put_i32(s, info.nesterov);
        put_f32(s, info.beta1);
        put_f32(s, info.beta2);
        put_f32(s, info.eps);
        put_u64(s, (uint64_t)info.steps);
        put_u64(s, (uint64_t)info.state_floats);
        put_floats(s, info.state, info.state_floats);
        if (info.kl_weight != 0.0f)
            put_f32(s, info.kl_weight);
    }

    uint8_t b[4];
    store_u32(b, ~s->crc);
    put_raw(s, b, 4);
}

static int check_save_args(const ibvi_net *net, const ibvi_optimizer *opt,
                           const char *fn)
{
    int status = ibvi__net_check_ready(net, fn);
    if (status < 0)
        return status;
    if (opt && ibvi__optimizer_net(opt) != net)
        return ibvi__fail(IBVI_ERR_INVALID_ARG,
                          "%s: opt was created for another network", fn);
    /* Saves write the per-step factors and velocities (network.h). */
    ibvi__net_settle((ibvi_net *)net);
    return IBVI_OK;
}

int ibvi_net_save_size(const ibvi_net *net, const ibvi_optimizer *opt,
                       int64_t *bytes)
{
    static const char fn[] = "ibvi_net_save_size";
    IBVI_CHECK_NOT_NULL(fn, bytes);
    int status = check_save_args(net, opt, fn);
    if (status < 0)
        return status;
    layout lo;
    compute_layout(net, opt, &lo);
    *bytes = lo.total;
    return IBVI_OK;
}

/* The loader's own checks over bytes a save produced (defined with the
 * reader below). */
static int check_saved_bytes(const uint8_t *bytes, int64_t len,
                             const ibvi_allocator *allocator, const char *fn,
                             const char *outcome);

int ibvi_net_save_buffer(const ibvi_net *net, const ibvi_optimizer *opt,
                         uint8_t *buf, int64_t len)
{
    static const char fn[] = "ibvi_net_save_buffer";
    int status = check_save_args(net, opt, fn);
    if (status < 0)
        return status;
    IBVI_CHECK_NOT_NULL(fn, buf);
    layout lo;
    compute_layout(net, opt, &lo);
    if (len < lo.total)
        return ibvi__fail(IBVI_ERR_SHAPE,
                          "%s: len = %lld, the model needs %lld bytes", fn,
                          (long long)len, (long long)lo.total);
    sink s = {.buf = buf};
    write_model(&s, net, opt, &lo);
    status = check_saved_bytes(buf, lo.total, &net->allocator, fn,
                               "buf was zeroed");
    if (status < 0)
        memset(buf, 0, (size_t)lo.total);
    return status;
}

/* Thread-safe text for an errno value. */
static const char *errno_text(int err, char *buf, size_t size)
{
#if defined(__GLIBC__)
    /* _GNU_SOURCE selects the GNU strerror_r, which may return static text */
    const char *text = strerror_r(err, buf, size);
    if (text != buf)
        snprintf(buf, size, "%s", text ? text : "unknown error");
#else
    if (strerror_r(err, buf, size) != 0)
        snprintf(buf, size, "error %d", err);
#endif
    return buf;
}

/* Best effort: makes the rename durable by syncing the directory. */
static void sync_directory(char *path_copy)
{
    char *slash = strrchr(path_copy, '/');
    const char *dir = ".";
    if (slash == path_copy)
        dir = "/";
    else if (slash) {
        *slash = '\0';
        dir = path_copy;
    }
    int fd = open(dir, O_RDONLY | O_CLOEXEC);
    if (fd >= 0) {
        (void)fsync(fd);
        (void)close(fd);
    }
}

static const char *file_kind(mode_t mode)
{
    if (S_ISDIR(mode))
        return "a directory";
    if (S_ISCHR(mode))
        return "a character device";
    if (S_ISBLK(mode))
        return "a block device";
    if (S_ISFIFO(mode))
        return "a FIFO";
    if (S_ISSOCK(mode))
        return "a socket";
    return "not a regular file";
}

/* The file a save replaces: path itself, or the file a symbolic link at
 * path points to (*resolved, from the allocator, then holds its absolute
 * name). Only a regular file or nothing may be there. */
static int save_target(const char *path, const ibvi_allocator *a,
                       char **resolved, const char *fn)
{
    char reason[96];
    struct stat st;
    *resolved = NULL;
    if (lstat(path, &st) != 0)
        return IBVI_OK; /* absent (or unreachable: creating will say why) */
    if (S_ISLNK(st.st_mode)) {
        *resolved = ibvi__alloc(a, PATH_MAX + 1, 1);
        if (!*resolved)
            return ibvi__fail(IBVI_ERR_NOMEM, "%s: out of memory", fn);
        if (!realpath(path, *resolved) || stat(*resolved, &st) != 0) {
            const int err = errno;
            ibvi__free(a, *resolved);
            *resolved = NULL;
            return ibvi__fail(IBVI_ERR_IO,
                              "%s: cannot follow the symbolic link "
                              "'%.100s': %s", fn, path,
                              errno_text(err, reason, sizeof reason));
        }
    }
    if (!S_ISREG(st.st_mode)) {
        if (*resolved) {
            ibvi__free(a, *resolved);
            *resolved = NULL;
        }
        return ibvi__fail(IBVI_ERR_IO,
                          "%s: '%.100s' is %s, not a regular file: refusing "
                          "to replace it", fn, path, file_kind(st.st_mode));
    }
    return IBVI_OK;
}

int ibvi_net_save(const ibvi_net *net, const ibvi_optimizer *opt,
                  const char *path)
{
    static const char fn[] = "ibvi_net_save";
    int status = check_save_args(net, opt, fn);
    if (status < 0)
        return status;
    IBVI_CHECK_NOT_NULL(fn, path);
    if (path[0] == '\0')
        return ibvi__fail(IBVI_ERR_INVALID_ARG, "%s: path is empty", fn);
    layout lo;
    compute_layout(net, opt, &lo);

    char *resolved = NULL;
    status = save_target(path, &net->allocator, &resolved, fn);
    if (status < 0)
        return status;
    const char *target = resolved ? resolved : path;

    /* The temporary name is short (NAME_MAX counts for it too) and lives in
     * the target's directory, so the rename stays on one file system. */
    const size_t target_len = strlen(target);
    const char *slash = strrchr(target, '/');
    const int dir_len = slash ? (int)(slash - target + 1) : 0;
    const size_t tmp_size = target_len + 48;
    char *tmp = ibvi__alloc(&net->allocator, tmp_size, 1);
    if (!tmp) {
        ibvi__free(&net->allocator, resolved);
        return ibvi__fail(IBVI_ERR_NOMEM, "%s: out of memory", fn);
    }
    char reason[96];

    /* A fresh temporary file next to the target (O_EXCL: never another's). */
    int fd = -1;
    for (int attempt = 0; attempt < MAX_TMP_ATTEMPTS && fd < 0; attempt++) {
        snprintf(tmp, tmp_size, "%.*s" TMP_PREFIX "%ld-%d", dir_len, target,
                 (long)getpid(), attempt);
        fd = open(tmp, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
        if (fd < 0 && errno != EEXIST)
            break;
    }
    if (fd < 0) {
        const int err = errno;
        ibvi__free(&net->allocator, tmp);
        ibvi__free(&net->allocator, resolved);
        return ibvi__fail(IBVI_ERR_IO,
                          "%s: cannot create a temporary file next to "
                          "'%.100s': %s", fn, path,
                          errno_text(err, reason, sizeof reason));
    }
    FILE *fp = fdopen(fd, "wb");
    if (!fp) {
        const int err = errno;
        (void)close(fd);
        (void)unlink(tmp);
        ibvi__free(&net->allocator, tmp);
        ibvi__free(&net->allocator, resolved);
        return ibvi__fail(IBVI_ERR_IO,
                          "%s: cannot open a stream on '%.100s': %s", fn,
                          path, errno_text(err, reason, sizeof reason));
    }

    sink *s = ibvi__alloc(&net->allocator, 1, sizeof *s);
    if (!s) {
        (void)fclose(fp);
        (void)unlink(tmp);
        ibvi__free(&net->allocator, tmp);
        ibvi__free(&net->allocator, resolved);
        return ibvi__fail(IBVI_ERR_NOMEM, "%s: out of memory", fn);
    }
    *s = (sink){.fp = fp};
    write_model(s, net, opt, &lo);
    sink_flush(s);
    int err = s->error;
    const char *step = "write";
    ibvi__free(&net->allocator, s);
    if (!err) {
        errno = 0;
        if (fflush(fp) != 0)
            err = errno ? errno : EIO;
    }
    /* The bytes written must pass the loader's checks before they replace
     * anything: read them back through a read-only mapping. */
    if (!err) {
        void *map = mmap(NULL, (size_t)lo.total, PROT_READ, MAP_SHARED, fd, 0);
        if (map == MAP_FAILED) {
            err = errno;
            step = "read back (to check)";
        } else {
            char outcome[160];
            snprintf(outcome, sizeof outcome, "'%.60s' is unchanged", path);
            status = check_saved_bytes(map, lo.total, &net->allocator, fn,
                                       outcome);
            (void)munmap(map, (size_t)lo.total);
        }
    }
    if (!err && status >= 0 && fsync(fd) != 0) {
        err = errno;
        step = "sync";
    }
    errno = 0;
    if (fclose(fp) != 0 && !err) {
        err = errno ? errno : EIO;
        step = "close";
    }
    if (!err && status >= 0 && rename(tmp, target) != 0) {
        err = errno;
        step = "rename over";
    }
    if (err || status < 0) {
        (void)unlink(tmp);
        ibvi__free(&net->allocator, tmp);
        ibvi__free(&net->allocator, resolved);
        if (status < 0)
            return status;
        return ibvi__fail(IBVI_ERR_IO,
                          "%s: cannot %s '%.100s': %s (the previous file, if "
                          "any, is unchanged)", fn, step, path,
                          errno_text(err, reason, sizeof reason));
    }
    memcpy(tmp, target, target_len + 1);
    sync_directory(tmp);
    ibvi__free(&net->allocator, tmp);
    ibvi__free(&net->allocator, resolved);
    return IBVI_OK;
}

/* ---- reading ------------------------------------------------------------- */

/* Everything the validation pass learned. Offsets are from the start of
 * the file. */
typedef struct model_info {
    uint32_t version;
    const ibvi_allocator *allocator; /* for the validation's shape table */
    ibvi__shape input_shape; /* (input_dim, 1, 1) for flat inputs */
    int32_t input_dim, parameterization, threads;
    uint64_t seed, position;
    int32_t layer_count;
    int64_t arch_pos;      /* offset of the first layer record   */
    int64_t param_floats;  /* sum over the layers' PARM floats   */
    int64_t max_block;     /* most floats a layer reads at once  */
    int64_t parm_pos;      /* offset of the first parameter      */
    int has_opt;
    int32_t opt_kind, nesterov;
    float lr, momentum, beta1, beta2, eps, kl_weight;
    int64_t steps, state_floats;
    int64_t state_pos;     /* offset of the first state float    */
} model_info;

/* A section header's tag as printable text. */
static void tag_text(const uint8_t *t, char out[5])
{
    for (int i = 0; i < 4; i++)
        out[i] = (t[i] >= 0x20 && t[i] < 0x7F) ? (char)t[i] : '?';
    out[4] = '\0';
}

/* Opens version-1 section `tag` at the cursor: checks the tag and that the
 * payload fits in the remaining bytes. */
static int open_section(reader *r, const char *tag, int64_t *payload,
                        const char *where)
{
    if (remaining(r) < V1_SECTION_BYTES)
        return ibvi__fail(IBVI_ERR_FORMAT,
                          "%s: the file ends at offset %lld where section "
                          "%s should start", where, (long long)r->pos, tag);
    const uint8_t *t = r->p + r->pos;
    if (memcmp(t, tag, 4) != 0) {
        char seen[5];
        tag_text(t, seen);
        return ibvi__fail(IBVI_ERR_FORMAT,
                          "%s: expected section %s at offset %lld, found "
                          "'%s'", where, tag, (long long)r->pos, seen);
    }
    r->pos += 4;
    const uint64_t size = get_u64(r);
    if (size > (uint64_t)remaining(r))
        return ibvi__fail(IBVI_ERR_FORMAT,
                          "%s: section %s claims %llu bytes but only %lld "
                          "remain", where, tag, (unsigned long long)size,
                          (long long)remaining(r));
    *payload = (int64_t)size;
    return IBVI_OK;
}

/* Checks magic, version and recorded size of a file of len bytes from its
 * first min(len, PREAMBLE_BYTES) bytes at buf. */
static int check_prefix(const uint8_t *buf, int64_t len, const char *where)
{
    if (len == 0)
        return ibvi__fail(IBVI_ERR_FORMAT, "%s: the file is empty", where);
    if (len < 4)
        return ibvi__fail(IBVI_ERR_FORMAT,
                          "%s: %lld bytes are too few for a libibvi file",
                          where, (long long)len);
    if (memcmp(buf, "IBVI", 4) != 0)
        return ibvi__fail(IBVI_ERR_FORMAT,
                          "%s: not a libibvi file (the magic is not \"IBVI\")",
                          where);
    if (len < 8)
        return ibvi__fail(IBVI_ERR_FORMAT,
                          "%s: truncated after %lld bytes", where,
                          (long long)len);
    const uint32_t version = load_u32(buf + 4);
    if (version == 0)
        return ibvi__fail(IBVI_ERR_FORMAT,
                          "%s: format version 0 does not exist", where);
    if (version > IBVI_FORMAT_VERSION)
        return ibvi__fail(IBVI_ERR_VERSION,
                          "%s: written in format version %lu; this library "
                          "reads versions up to %d", where,
                          (unsigned long)version, IBVI_FORMAT_VERSION);
    if (len < PREAMBLE_BYTES + CRC_BYTES)
        return ibvi__fail(IBVI_ERR_FORMAT,
                          "%s: truncated after %lld bytes", where,
                          (long long)len);
    const uint64_t recorded = load_u64(buf + 8);
    if (recorded != (uint64_t)len)
        return ibvi__fail(IBVI_ERR_FORMAT,
                          "%s: the file has %lld bytes but its header says "
                          "%llu (truncated or damaged)", where, (long long)len,
                          (unsigned long long)recorded);
    return IBVI_OK;
}

static int check_crc(uint32_t stored, uint32_t computed, const char *where)
{
    if (stored != computed)
        return ibvi__fail(IBVI_ERR_CHECKSUM,
                          "%s: checksum mismatch (stored 0x%08lx, computed "
                          "0x%08lx): the file is damaged", where,
                          (unsigned long)stored, (unsigned long)computed);
    return IBVI_OK;
}

/* check_prefix, then the checksum of the whole file at buf. */
static int check_preamble(const uint8_t *buf, int64_t len, const char *where)
{
    int status = check_prefix(buf, len, where);
    if (status < 0)
        return status;
    return check_crc(load_u32(buf + len - CRC_BYTES),
                     ~crc_update(0xFFFFFFFFu, buf, (size_t)(len - CRC_BYTES)),
                     where);
}

/* The values both versions' HEAD hold (input_dim is checked with the
 * input shape). */
static int check_head(const model_info *m, const char *where)
{
    if (m->parameterization != IBVI_PARAM_SP &&
        m->parameterization != IBVI_PARAM_MUP)
        return ibvi__fail(IBVI_ERR_FORMAT,
                          "%s: parameterization = %ld is invalid", where,
                          (long)m->parameterization);
    /* A preference only: build_net caps it at the CPUs this process has. */
    if (m->threads < 1 || m->threads > MAX_THREADS)
        return ibvi__fail(IBVI_ERR_FORMAT,
                          "%s: threads = %ld is invalid (1..%d)", where,
                          (long)m->threads, MAX_THREADS);
    return IBVI_OK;
}

static int check_input_dim(int64_t input_dim, const char *where)
{
    if (input_dim <= 0 || input_dim > MAX_WIDTH)
        return ibvi__fail(IBVI_ERR_FORMAT,
                          "%s: input_dim = %lld is invalid (1..%ld)", where,
                          (long long)input_dim, (long)MAX_WIDTH);
    return IBVI_OK;
}

/* The covariance field of a record (d->family >= 0), against the layer
 * its kind's check described in sh: the family the rank implies, or the
 * diagonal family (rank 0, rho after the mean in PARM, P noise values). */
static int check_covariance(layer_desc *d, int64_t budget, layer_shape *sh,
                            const char *where, int32_t index)
{
    if (d->family < 0)
        return IBVI_OK;
    const int64_t P = sh->param_floats / (1 + d->rank);
    if (d->family == IBVI__COV_DIAG_LOWRANK) {
        /* SWAG's: the kind's rank 0, R in the field; PARM: mean, S (P x
         * R), d (P); P + R noise values. */
        const int64_t R = d->cov_rank;
        if (d->rank != 0 || P == 0 || R < 1 || R > IBVI_DIAG_LOWRANK_MAX_RANK ||
            d->kind == IBVI_LAYER_RESIDUAL)
            return ibvi__fail(IBVI_ERR_FORMAT,
                              "%s: layer %ld: a diag-lowrank covariance "
                              "with kind rank %lld, R = %lld and %lld "
                              "parameters is invalid", where, (long)index,
                              (long long)d->rank, (long long)R, (long long)P);
        if (1 + R > (budget - sh->param_floats) / P)
            return ibvi__fail(IBVI_ERR_FORMAT,
                              "%s: layer %ld: %lld x %lld parameters do not "
                              "fit in the rest of the file", where,
                              (long)index, (long long)P, (long long)R + 2);
        sh->param_floats = P * (2 + R);
        sh->noise = P + R;
        sh->max_block = P * R > P ? P * R : P;
        return IBVI_OK;
    }
    if (d->family != IBVI__COV_DIAGONAL) {
        if (d->family != (d->rank > 0 ? IBVI__COV_LOWRANK : IBVI__COV_NONE))
            return ibvi__fail(IBVI_ERR_FORMAT,
                              "%s: layer %ld: covariance family %lld with "
                              "rank %lld", where, (long)index,
                              (long long)d->family, (long long)d->rank);
        return IBVI_OK;
    }
    if (d->rank != 0 || P == 0 || !(d->init_sigma > 0.0f) ||
        !(d->init_sigma <= 1.0f) || d->kind == IBVI_LAYER_RESIDUAL)
        return ibvi__fail(IBVI_ERR_FORMAT,
                          "%s: layer %ld: a diagonal covariance with rank "
                          "%lld, %lld parameters and init_sigma %g is "
                          "invalid", where, (long)index, (long long)d->rank,
                          (long long)P, (double)d->init_sigma);
    if (P > budget - sh->param_floats)
        return ibvi__fail(IBVI_ERR_FORMAT,
                          "%s: layer %ld: 2 x %lld parameters do not fit in "
                          "the rest of the file", where, (long)index,
                          (long long)P);
    sh->param_floats = 2 * P;
    sh->noise = P;
    return IBVI_OK;
}

/* Reads the framing of layer record `index` at the cursor into d and
 * *codec: version 1, the fixed 16-byte record; version 2, a record of its
 * own length whose kind-specific fields its codec decodes (bytes past the
 * fields this library knows are skipped when the record marks them as
 * ignorable). The values are checked by the codec's check. */
static int next_layer(reader *r, uint32_t version, layer_desc *d,
                      const layer_codec **codec, const char *where,
                      int32_t index)
{
    *d = (layer_desc){.outputs = OUTPUTS_IMPLIED, .family = -1};
    if (version == 1) {
        d->kind = get_i32(r);
        d->activation = get_i32(r);
        d->outputs = get_i32(r);
        d->rank = get_i32(r);
        /* version 1 knew dense and activation layers only */
        *codec = d->kind == IBVI_LAYER_DENSE || d->kind == IBVI_LAYER_ACTIVATION
                     ? codec_for(d->kind)
                     : NULL;
        if (r->overrun || !*codec)
            return ibvi__fail(IBVI_ERR_FORMAT,
                              "%s: layer %ld: kind %lld is invalid", where,
                              (long)index, (long long)d->kind);
        return IBVI_OK;
    }
    const int64_t start = r->pos;
    if (remaining(r) < V2_RECORD_BYTES)
        return ibvi__fail(IBVI_ERR_FORMAT,
                          "%s: layer %ld: the record is truncated (%lld "
                          "bytes left in section ARCH)", where, (long)index,
                          (long long)remaining(r));
    const uint32_t kind = get_u32(r);
    const uint64_t length = get_u64(r);
    const uint64_t required = get_u64(r);
    if (length < V2_RECORD_BYTES ||
        length - V2_RECORD_BYTES > (uint64_t)remaining(r))
        return ibvi__fail(IBVI_ERR_FORMAT,
                          "%s: layer %ld: record length %llu is invalid "
                          "(%lld bytes left in section ARCH)", where,
                          (long)index, (unsigned long long)length,
                          (long long)(r->len - start));
    if (required < V2_RECORD_BYTES || required > length)
        return ibvi__fail(IBVI_ERR_FORMAT,
                          "%s: layer %ld: %llu required bytes in a record of "
                          "%llu", where, (long)index,
                          (unsigned long long)required,
                          (unsigned long long)length);
    *codec = codec_for(kind);
    if (!*codec)
        return ibvi__fail(IBVI_ERR_VERSION,
                          "%s: needs a newer libibvi: unknown layer kind %lu "
                          "(layer %ld)", where, (unsigned long)kind,
                          (long)index);
    uint64_t known = V2_RECORD_BYTES + (uint64_t)(*codec)->field_bytes;
    if (length < known)
        return ibvi__fail(IBVI_ERR_FORMAT,
                          "%s: layer %ld (%s): the record has %llu bytes, its "
                          "fields need %llu", where, (long)index,
                          (*codec)->name, (unsigned long long)length,
                          (unsigned long long)known);
    /* The covariance field, when the record requires it (bytes past
     * `required` are a later library's ignorable fields). A family this
     * library does not know leaves it unknown: the required count then
     * exceeds what this library knows, below. */
    d->family = -1; /* the rank's (the codec's check) */
    if (codec_has_theta(*codec) && required >= known + COV_FIELD_BYTES) {
        const uint8_t *f = r->p + start + known;
        const int32_t family = to_i32(load_u32(f));
        if (family >= 0 && family < IBVI__COV_COUNT) {
            d->family = family;
            d->init_sigma = bits_float(load_u32(f + 4));
            d->cov_rank = to_i32(load_u32(f + 4));
            known += COV_FIELD_BYTES;
            if (codec_has_bias(*codec) && required >= known + BIAS_FIELD_BYTES) {
                d->no_bias = to_i32(load_u32(r->p + start + known));
                known += BIAS_FIELD_BYTES;
            }
        }
    }
    if (required > known)
        return ibvi__fail(IBVI_ERR_VERSION,
                          "%s: needs a newer libibvi: layer %ld (%s) has %llu "
                          "required bytes, this library knows %llu", where,
                          (long)index, (*codec)->name,
                          (unsigned long long)required,
                          (unsigned long long)known);
    d->kind = kind;
    (*codec)->decode(r->p + r->pos, d);
    r->pos = start + (int64_t)length;
    return IBVI_OK;
}

/* Whether the version-2 layer records at the cursor include a residual
 * (version 1 has none). Reads the framing only, within the bytes present;
 * next_layer checks it. */
static int has_residual(const reader *r, const model_info *m)
{
    if (m->version == 1)
        return 0;
    int64_t at = r->pos;
    for (int32_t i = 0; i < m->layer_count; i++) {
        if (r->len - at < V2_RECORD_BYTES)
            return 0;
        const uint64_t length = load_u64(r->p + at + 4);
        if (load_u32(r->p + at) == IBVI_LAYER_RESIDUAL)
            return 1;
        if (length < V2_RECORD_BYTES || length > (uint64_t)(r->len - at))
            return 0;
        at += (int64_t)length;
    }
    return 0;
}

/* Validates the m->layer_count layers at the cursor (both versions); their
 * parameters must fit in `budget` floats. */
static int check_layers(reader *r, model_info *m, int64_t budget,
                        const char *where)
{
    /* With residual layers, the output shape of every layer, for their
     * skips: shapes[0] is the input's, shapes[i + 1] layer i's. layer_count
     * is at most the ARCH bytes / 20, so the table is smaller than the
     * file; without residuals nothing is allocated. */
    ibvi_allocator a;
    if (m->allocator)
        a = *m->allocator;
    else
        ibvi__allocator_default(&a);
    ibvi__shape *shapes = NULL;
    if (has_residual(r, m)) {
        shapes = ibvi__alloc(&a, (size_t)m->layer_count + 1, sizeof *shapes);
        if (!shapes)
            return ibvi__fail(IBVI_ERR_NOMEM, "%s: out of memory", where);
        shapes[0] = m->input_shape;
    }
    ibvi__shape cur = m->input_shape;
    int status = IBVI_OK;
    int64_t width = m->input_dim, floats = 0, noise = 0, max_block = 0;
    int64_t row = m->input_dim; /* activations of one input row */
    const layer_codec *last = NULL;
    for (int32_t i = 0; i < m->layer_count && status >= 0; i++) {
        layer_desc d;
        layer_shape sh;
        const layer_input in = {cur, shapes ? shapes + 1 : NULL};
        status = next_layer(r, m->version, &d, &last, where, i);
        if (status >= 0)
            status = last->check(&d, &in, budget - floats, &sh, where, i);
        if (status >= 0)
            status = check_covariance(&d, budget - floats, &sh, where, i);
        if (status < 0)
            break;
        cur = sh.out;
        if (shapes)
            shapes[i + 1] = sh.out;
        floats += sh.param_floats;
        noise += sh.noise;
        if (noise > INT32_MAX)
            status = ibvi__fail(IBVI_ERR_FORMAT,
                                "%s: the ranks add up to more than %ld", where,
                                (long)INT32_MAX);
        if (sh.max_block > max_block)
            max_block = sh.max_block;
        width = sh.outputs;
        row += width; /* outputs <= 2^31: no overflow */
    }
    if (shapes)
        ibvi__free(&a, shapes);
    if (status < 0)
        return status;
    if (!last || !last->can_be_last)
        return ibvi__fail(IBVI_ERR_FORMAT,
                          "%s: the last layer is not dense or conv2d", where);
    /* The workspace of a forward pass holds about 5 floats per activation
     * of each row: a small file must not be able to demand gigabytes per
     * row through wide parameter-free layers. */
    if (row > ROW_BASE + ROW_PER_PARAM * floats)
        return ibvi__fail(IBVI_ERR_FORMAT,
                          "%s: the activations of one input row (input_dim + "
                          "all outputs = %lld floats) exceed 2^20 + %d x %lld "
                          "parameters", where, (long long)row, ROW_PER_PARAM,
                          (long long)floats);
    m->param_floats = floats;
    m->max_block = max_block;
    return r->overrun ? ibvi__fail(IBVI_ERR_FORMAT, "%s: section ARCH is "
                                   "truncated", where)
                      : IBVI_OK;
}

static int unit_interval(float x) { return x >= 0.0f && x < 1.0f; }

/* The optimizer's fixed fields at the cursor (both versions), then the
 * state floats, which must be present in the remaining bytes. */
static int check_optimizer(reader *r, int64_t base, model_info *m,
                           const char *where)
{
    if (remaining(r) < OPTM_FIXED_BYTES)
        return ibvi__fail(IBVI_ERR_FORMAT,
                          "%s: section OPTM has %lld bytes, expected >= %d",
                          where, (long long)remaining(r), OPTM_FIXED_BYTES);
    m->has_opt = 1;
    m->opt_kind = get_i32(r);
    m->lr = get_f32(r);
    m->momentum = get_f32(r);
    m->nesterov = get_i32(r);
    m->beta1 = get_f32(r);
    m->beta2 = get_f32(r);
    m->eps = get_f32(r);
    m->steps = to_i64(get_u64(r));
    const uint64_t state = get_u64(r);
    if (m->opt_kind != IBVI_OPT_SGD && m->opt_kind != IBVI_OPT_ADAM)
        return ibvi__fail(IBVI_ERR_FORMAT,
                          "%s: optimizer kind %ld is invalid", where,
                          (long)m->opt_kind);
    if (!(m->lr > 0.0f) || !isfinite(m->lr) || !unit_interval(m->momentum) ||
        (m->nesterov != 0 && m->nesterov != 1) || !unit_interval(m->beta1) ||
        !unit_interval(m->beta2) || !(m->eps > 0.0f) || !isfinite(m->eps))
        return ibvi__fail(IBVI_ERR_FORMAT,
                          "%s: optimizer settings out of range (lr %g, "
                          "momentum %g, nesterov %ld, betas %g %g, eps %g)",
                          where, (double)m->lr, (double)m->momentum,
                          (long)m->nesterov, (double)m->beta1,
                          (double)m->beta2, (double)m->eps);
    if (m->steps < 0 || m->steps > MAX_STEPS)
        return ibvi__fail(IBVI_ERR_FORMAT,
                          "%s: optimizer step count %lld is out of range "
                          "(0..2^53)", where, (long long)m->steps);
    const int64_t expected =
        (m->opt_kind == IBVI_OPT_ADAM ? 2 : 1) * m->param_floats;
    if (state != (uint64_t)expected || 4 * expected > remaining(r))
        return ibvi__fail(IBVI_ERR_FORMAT,
                          "%s: section OPTM has %lld bytes and %llu state "
                          "values; the network needs %lld", where,
                          (long long)(remaining(r) + OPTM_FIXED_BYTES),
                          (unsigned long long)state, (long long)expected);
    m->state_floats = expected;
    m->state_pos = base + r->pos;
    r->pos += 4 * expected;
    m->kl_weight = 0.0f;
    if (m->version >= 2 && remaining(r) >= OPTM_KL_BYTES) {
        m->kl_weight = get_f32(r);
        if (!(m->kl_weight >= 0.0f) || !isfinite(m->kl_weight))
            return ibvi__fail(IBVI_ERR_FORMAT,
                              "%s: optimizer KL weight %g is out of range "
                              "(finite, >= 0)", where, (double)m->kl_weight);
    }
    return IBVI_OK;
}

/* ---- version 1 ---- */

static int parse_v1(reader *r, model_info *m, const char *where)
{
    int64_t size;
    int status = open_section(r, "HEAD", &size, where);
    if (status < 0)
        return status;
    if (size != V1_HEAD_BYTES)
        return ibvi__fail(IBVI_ERR_FORMAT,
                          "%s: section HEAD has %lld bytes, expected %d",
                          where, (long long)size, V1_HEAD_BYTES);
    const int32_t input_dim = get_i32(r);
    m->parameterization = get_i32(r);
    m->seed = get_u64(r);
    m->position = get_u64(r);
    m->threads = get_i32(r);
    if ((status = check_input_dim(input_dim, where)) < 0 ||
        (status = check_head(m, where)) < 0)
        return status;
    m->input_dim = input_dim;
    m->input_shape = (ibvi__shape){input_dim, 1, 1};

    if ((status = open_section(r, "ARCH", &size, where)) < 0)
        return status;
    if (size < 4)
        return ibvi__fail(IBVI_ERR_FORMAT,
                          "%s: section ARCH has %lld bytes, expected >= 4",
                          where, (long long)size);
    const uint32_t count = get_u32(r);
    if (count == 0 || count > INT32_MAX ||
        size != 4 + (int64_t)V1_LAYER_BYTES * count)
        return ibvi__fail(IBVI_ERR_FORMAT,
                          "%s: section ARCH has %lld bytes for %lu layers "
                          "(expected 4 + 16 per layer, at least one layer)",
                          where, (long long)size, (unsigned long)count);
    m->layer_count = (int32_t)count;
    m->arch_pos = r->pos;
    /* Every parameter takes 4 bytes of what follows the architecture. */
    status = check_layers(r, m, (remaining(r) - (size - 4)) / 4, where);
    if (status < 0)
        return status;

    if ((status = open_section(r, "PARM", &size, where)) < 0)
        return status;
    if (size != 4 * m->param_floats)
        return ibvi__fail(IBVI_ERR_FORMAT,
                          "%s: section PARM has %lld bytes; the architecture "
                          "needs %lld", where, (long long)size,
                          (long long)(4 * m->param_floats));
    m->parm_pos = r->pos;
    r->pos += size;

    if (remaining(r) > 0) {
        if ((status = open_section(r, "OPTM", &size, where)) < 0)
            return status;
        reader sub = {.p = r->p + r->pos, .len = size};
        if ((status = check_optimizer(&sub, r->pos, m, where)) < 0)
            return status;
        if (sub.pos != size)
            return ibvi__fail(IBVI_ERR_FORMAT,
                              "%s: section OPTM has %lld bytes and %lld "
                              "state values; the network needs %lld", where,
                              (long long)size, (long long)m->state_floats,
                              (long long)m->state_floats);
        r->pos += size;
    }
    if (r->overrun || remaining(r) != 0)
        return ibvi__fail(IBVI_ERR_FORMAT,
                          "%s: %lld unexpected bytes after the last section",
                          where, (long long)remaining(r));
    return IBVI_OK;
}

/* ---- version 2 ---- */

enum { SEC_HEAD = 1, SEC_ARCH = 2, SEC_PARM = 4, SEC_OPTM = 8 };

/* Parses known section `bit` from its payload (sub); base is the offset
 * of the payload in the file, after: the bytes after the section. */
static int parse_v2_section(int bit, reader *sub, int64_t base, int64_t after,
                            model_info *m, const char *where)
{
    if (bit == SEC_HEAD) {
        m->parameterization = get_i32(sub);
        m->threads = get_i32(sub);
        m->position = get_u64(sub);
        m->seed = get_u64(sub);
        if (sub->overrun)
            return ibvi__fail(IBVI_ERR_FORMAT,
                              "%s: section HEAD has %lld bytes, expected %d",
                              where, (long long)sub->len, V2_HEAD_BYTES);
        return check_head(m, where);
    }
    if (bit == SEC_ARCH) {
        const uint32_t c = get_u32(sub), h = get_u32(sub), w = get_u32(sub);
        const uint32_t count = get_u32(sub);
        if (sub->overrun)
            return ibvi__fail(IBVI_ERR_FORMAT,
                              "%s: section ARCH has %lld bytes, expected >= "
                              "%d", where, (long long)sub->len, V2_ARCH_FIXED);
        /* as ibvi_net_create_image() takes them: each >= 1, C*H*W <= 10^8 */
        if (c == 0 || h == 0 || w == 0 || c > MAX_WIDTH || h > MAX_WIDTH ||
            w > MAX_WIDTH || (uint64_t)c * h > MAX_WIDTH ||
            (uint64_t)c * h * w > MAX_WIDTH)
            return ibvi__fail(IBVI_ERR_FORMAT,
                              "%s: input shape (C, H, W) = (%lu, %lu, %lu) is "
                              "invalid (each >= 1, C*H*W <= %ld)", where,
                              (unsigned long)c, (unsigned long)h,
                              (unsigned long)w, (long)MAX_WIDTH);
        if (count == 0 || count > INT32_MAX ||
            count > (uint64_t)remaining(sub) / V2_RECORD_BYTES)
            return ibvi__fail(IBVI_ERR_FORMAT,
                              "%s: section ARCH has %lld bytes for %lu layers "
                              "(at least one layer, at least %d bytes each)",
                              where, (long long)sub->len, (unsigned long)count,
                              V2_RECORD_BYTES);
        m->input_dim = (int32_t)(c * h * w);
        m->input_shape = (ibvi__shape){(int32_t)c, (int32_t)h, (int32_t)w};
        m->layer_count = (int32_t)count;
        m->arch_pos = base + sub->pos;
        return check_layers(sub, m, after / 4, where);
    }
    if (bit == SEC_PARM) {
        if (4 * m->param_floats > sub->len)
            return ibvi__fail(IBVI_ERR_FORMAT,
                              "%s: section PARM has %lld bytes; the "
                              "architecture needs %lld", where,
                              (long long)sub->len,
                              (long long)(4 * m->param_floats));
        m->parm_pos = base;
        sub->pos = 4 * m->param_floats;
        return IBVI_OK;
    }
    return check_optimizer(sub, base, m, where);
}

static int parse_v2(reader *r, model_info *m, const char *where)
{
    static const char *const names[] = {"HEAD", "ARCH", "PARM", "OPTM"};
    int seen = 0;
    while (remaining(r) > 0) {
        const int64_t at = r->pos;
        if (remaining(r) < V2_SECTION_BYTES)
            return ibvi__fail(IBVI_ERR_FORMAT,
                              "%s: %lld bytes at offset %lld are too few for "
                              "a section header", where,
                              (long long)remaining(r), (long long)at);
        char tag[5];
        tag_text(r->p + at, tag);
        r->pos += 4;
        const uint64_t size = get_u64(r);
        const uint64_t required = get_u64(r);
        if (size > (uint64_t)remaining(r))
            return ibvi__fail(IBVI_ERR_FORMAT,
                              "%s: section %s claims %llu bytes but only %lld "
                              "remain", where, tag, (unsigned long long)size,
                              (long long)remaining(r));
        if (required > size)
            return ibvi__fail(IBVI_ERR_FORMAT,
                              "%s: section %s: %llu required bytes in a "
                              "payload of %llu", where, tag,
                              (unsigned long long)required,
                              (unsigned long long)size);
        int bit = 0;
        for (int k = 0; k < 4; k++)
            if (memcmp(r->p + at, names[k], 4) == 0)
                bit = 1 << k;
        const int64_t base = r->pos;
        r->pos += (int64_t)size;
        if (!bit) {
            if (required > 0)
                return ibvi__fail(IBVI_ERR_VERSION,
                                  "%s: needs a newer libibvi: unknown "
                                  "required section '%s' at offset %lld",
                                  where, tag, (long long)at);
            continue; /* optional: skipped */
        }
        /* HEAD, ARCH, PARM, then OPTM if any, each once */
        if (seen != bit - 1)
            return ibvi__fail(IBVI_ERR_FORMAT,
                              "%s: section %s at offset %lld is out of order "
                              "or repeated (expected HEAD, ARCH, PARM, then "
                              "OPTM)", where, tag, (long long)at);
        seen |= bit;
        reader sub = {.p = r->p + base, .len = (int64_t)size};
        int status = parse_v2_section(bit, &sub, base, r->len - r->pos, m,
                                      where);
        if (status < 0)
            return status;
        if (sub.overrun)
            return ibvi__fail(IBVI_ERR_FORMAT, "%s: section %s is truncated",
                              where, tag);
        /* bytes past what this library understands: ignorable only */
        if ((uint64_t)sub.pos < required)
            return ibvi__fail(IBVI_ERR_VERSION,
                              "%s: needs a newer libibvi: section %s has %llu "
                              "required bytes, this library reads %lld", where,
                              tag, (unsigned long long)required,
                              (long long)sub.pos);
    }
    if ((seen & (SEC_HEAD | SEC_ARCH | SEC_PARM)) !=
        (SEC_HEAD | SEC_ARCH | SEC_PARM))
        return ibvi__fail(IBVI_ERR_FORMAT,
                          "%s: section %s is missing", where,
                          !(seen & SEC_HEAD)   ? "HEAD"
                          : !(seen & SEC_ARCH) ? "ARCH"
                                               : "PARM");
    return IBVI_OK;
}

/* The validation pass: no allocation, every size checked. */
static int parse_model(reader *r, model_info *m,
                       const ibvi_allocator *allocator, const char *where)
{
    *m = (model_info){.version = load_u32(r->p + 4), .allocator = allocator};
    r->pos = PREAMBLE_BYTES;
    return m->version == 1 ? parse_v1(r, m, where) : parse_v2(r, m, where);
}

/* The float values: parameters finite; with `state`, the optimizer state
 * finite and Adam's second moments >= 0. */
static int check_values(const reader *r, const model_info *m, int state,
                        const char *where)
{
    const uint8_t *p = r->p + m->parm_pos;
    for (int64_t i = 0; i < m->param_floats; i++)
        if (!isfinite(bits_float(load_u32(p + 4 * i))))
            return ibvi__fail(IBVI_ERR_FORMAT,
                              "%s: parameter %lld of section PARM is NaN or "
                              "infinite", where, (long long)i);
    if (!state || !m->has_opt)
        return IBVI_OK;
    p = r->p + m->state_pos;
    const int64_t first_second =
        m->opt_kind == IBVI_OPT_ADAM ? m->state_floats / 2 : m->state_floats;
    for (int64_t i = 0; i < m->state_floats; i++) {
        const float x = bits_float(load_u32(p + 4 * i));
        if (!isfinite(x) || (i >= first_second && !(x >= 0.0f)))
            return ibvi__fail(IBVI_ERR_FORMAT,
                              "%s: the optimizer state holds NaN, infinity or "
                              "a negative second moment (value %lld)", where,
                              (long long)i);
    }
    return IBVI_OK;
}

/* Every check of the loader over the len bytes at buf, in order: preamble,
 * checksum, sections (parse_model), values (`state`: also the optimizer
 * state's). Allocates (from `allocator`, NULL: malloc) only the table of
 * layer shapes, for the call. Loading and every save run exactly this. */
static int validate_model(const uint8_t *buf, int64_t len, int state,
                          const ibvi_allocator *allocator, reader *r,
                          model_info *m, const char *where)
{
    int status = check_preamble(buf, len, where);
    if (status < 0)
        return status;
    *r = (reader){.p = buf, .len = len - CRC_BYTES};
    status = parse_model(r, m, allocator, where);
    if (status < 0)
        return status;
    return check_values(r, m, state, where);
}

static int check_saved_bytes(const uint8_t *bytes, int64_t len,
                             const ibvi_allocator *allocator, const char *fn,
                             const char *outcome)
{
    reader r;
    model_info m;
    const int status = validate_model(bytes, len, 1, allocator, &r, &m, fn);
    if (status >= 0)
        return IBVI_OK;
    if (status == IBVI_ERR_NOMEM)
        return status;
    char detail[256];
    const char *inner = ibvi_last_error();
    const size_t skip = strlen(fn) + 2; /* the message starts "fn: " */
    snprintf(detail, sizeof detail, "%s",
             strncmp(inner, fn, strlen(fn)) == 0 && strlen(inner) >= skip
                 ? inner + skip
                 : inner);
    return ibvi__fail(IBVI_ERR_UNSUPPORTED,
                      "%s: %s; the file would not load: %s", fn, outcome,
                      detail);
}

/* The threads a loaded network gets: its file's preference, at most the
 * CPUs this process may run on. */
static int32_t usable_cpus(void)
{
#ifdef CPU_COUNT
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) == 0) {
        const int n = CPU_COUNT(&set);
        if (n >= 1)
            return n < MAX_THREADS ? (int32_t)n : MAX_THREADS;
    }
#endif
    const long n = sysconf(_SC_NPROCESSORS_ONLN);
    if (n < 1)
        return 1;
    return n < MAX_THREADS ? (int32_t)n : MAX_THREADS;
}

/* A library call failed while rebuilding: out of memory stays what it is,
 * anything else means the file holds values the library rejects. */
static int rebuild_failure(int status, const char *where, const char *what,
                           long index)
{
    char detail[160];
    snprintf(detail, sizeof detail, "%s", ibvi_last_error());
    if (status == IBVI_ERR_NOMEM) /* name the function the caller called */
        return ibvi__fail(status, "%s: out of memory (%s)", where, detail);
    return ibvi__fail(IBVI_ERR_FORMAT, "%s: %s %ld rejected: %s", where, what,
                      index, detail);
}

/* Builds the network described by m (validated) and fills it. */
static int build_net(reader *r, const model_info *m,
                     const ibvi_allocator *allocator, ibvi_net **out,
                     const char *where)
{
    ibvi_net *net = NULL;
    const ibvi__shape in = m->input_shape;
    int status = in.h == 1 && in.w == 1
                     ? ibvi_net_create(&net, in.c, allocator)
                     : ibvi_net_create_image(&net, in.c, in.h, in.w, allocator);
    if (status < 0)
        return rebuild_failure(status, where, "input_dim", (long)m->input_dim);
    r->pos = m->arch_pos;
    for (int32_t i = 0; i < m->layer_count && status >= 0; i++) {
        layer_desc d;
        const layer_codec *c = NULL;
        status = next_layer(r, m->version, &d, &c, where, i);
        if (status >= 0 && (status = c->add(net, &d)) >= 0 &&
            d.family == IBVI__COV_DIAGONAL) {
            ibvi_covariance_options o = IBVI_COVARIANCE_OPTIONS_INIT;
            o.init_sigma = d.init_sigma;
            status = ibvi_net_set_covariance(net, i, &o);
        } else if (status >= 0 && d.family == IBVI__COV_DIAG_LOWRANK) {
            ibvi_covariance_options o = IBVI_COVARIANCE_OPTIONS_INIT;
            o.family = IBVI_COVARIANCE_DIAG_LOWRANK;
            o.rank = (int32_t)d.cov_rank;
            o.init_sigma = 0.0f;
            status = ibvi_net_set_covariance(net, i, &o);
        }
        if (status < 0)
            status = rebuild_failure(status, where, "layer", (long)i);
    }
    if (status >= 0) {
        status = ibvi_net_init(net, m->parameterization, m->seed);
        if (status < 0)
            status = rebuild_failure(status, where, "parameterization",
                                     (long)m->parameterization);
    }
    if (status >= 0) {
        const int32_t cpus = usable_cpus();
        status = ibvi_net_set_threads(net, m->threads < cpus ? m->threads
                                                             : cpus);
        if (status < 0)
            status = rebuild_failure(status, where, "threads",
                                     (long)m->threads);
    }
    float *block = NULL;
    if (status >= 0) {
        block = ibvi__alloc(&net->allocator, (size_t)m->max_block,
                            sizeof(float));
        if (!block)
            status = ibvi__fail(IBVI_ERR_NOMEM, "%s: out of memory", where);
    }
    r->pos = m->parm_pos;
    for (int32_t i = 0; i < m->layer_count && status >= 0; i++) {
        ibvi_layer *l = net->layers[i];
        status = codec_for(l->kind)->get_params(l, r, block);
        if (status < 0)
            status = rebuild_failure(status, where, "the parameters of layer",
                                     (long)i);
    }
    if (block)
        ibvi__free(&net->allocator, block);
    if (status >= 0)
        status = ibvi_net_set_rng_position(net, m->position);
    if (status < 0) {
        ibvi_net_free(net);
        return status;
    }
    *out = net;
    return IBVI_OK;
}

/* Creates the optimizer described by m (validated) on net. */
static int build_optimizer(reader *r, const model_info *m, ibvi_net *net,
                           ibvi_optimizer **out, const char *where)
{
    ibvi_optimizer *opt = NULL;
    int status = ibvi_optimizer_create(&opt, net, m->opt_kind, m->lr);
    if (status >= 0)
        status = m->opt_kind == IBVI_OPT_SGD
                     ? ibvi_optimizer_set_momentum(opt, m->momentum,
                                                   m->nesterov)
                     : ibvi_optimizer_set_adam(opt, m->beta1, m->beta2,
                                               m->eps);
    if (status >= 0)
        status = ibvi_optimizer_set_kl_weight(opt, m->kl_weight);
    if (status < 0) {
        ibvi_optimizer_free(opt);
        return rebuild_failure(status, where, "optimizer of kind",
                               (long)m->opt_kind);
    }
    ibvi__optimizer_info info;
    ibvi__optimizer_get_info(opt, &info);
    r->pos = m->state_pos;
    if (info.state_floats != m->state_floats ||
        !get_floats(r, info.state, info.state_floats)) {
        ibvi_optimizer_free(opt);
        return ibvi__fail(IBVI_ERR_FORMAT,
                          "%s: the optimizer state does not match the "
                          "network", where);
    }
    /* check_values has vetted the state (finite, second moments >= 0). */
    ibvi__optimizer_set_steps(opt, m->steps);
    *out = opt;
    return IBVI_OK;
}

static int load_bytes(ibvi_net **out, ibvi_optimizer **opt_out,
                      const uint8_t *buf, int64_t len,
                      const ibvi_allocator *allocator, const char *where)
{
    reader r;
    model_info m;
    int status = validate_model(buf, len, opt_out != NULL, allocator, &r, &m,
                                where);
    if (status < 0)
        return status;
    ibvi_net *net = NULL;
    status = build_net(&r, &m, allocator, &net, where);
    if (status < 0)
        return status;
    ibvi_optimizer *opt = NULL;
    if (opt_out && m.has_opt) {
        status = build_optimizer(&r, &m, net, &opt, where);
        if (status < 0) {
            ibvi_net_free(net);
            return status;
        }
    }
    *out = net;
    if (opt_out)
        *opt_out = opt;
    return IBVI_OK;
}

static int check_allocator(const ibvi_allocator *allocator, const char *fn)
{
    if (allocator && (!allocator->alloc || !allocator->free))
        return ibvi__fail(IBVI_ERR_INVALID_ARG,
                          "%s: allocator->alloc and allocator->free must "
                          "both be set", fn);
    return IBVI_OK;
}

int ibvi_net_load_buffer(ibvi_net **out, ibvi_optimizer **opt_out,
                         const uint8_t *buf, int64_t len,
                         const ibvi_allocator *allocator)
{
    static const char fn[] = "ibvi_net_load_buffer";
    IBVI_CHECK_NOT_NULL(fn, out);
    *out = NULL;
    if (opt_out)
        *opt_out = NULL;
    IBVI_CHECK_NOT_NULL(fn, buf);
    if (len < 0)
        return ibvi__fail(IBVI_ERR_INVALID_ARG, "%s: len = %lld, expected >= 0",
                          fn, (long long)len);
    int status = check_allocator(allocator, fn);
    if (status < 0)
        return status;
    return load_bytes(out, opt_out, buf, len, allocator, fn);
}

/* Reads up to n bytes at offset off (fewer only at the end of the file);
 * returns 0 or an errno value. */
static int read_at(int fd, uint8_t *dst, size_t n, int64_t off, size_t *got)
{
    size_t done = 0;
    while (done < n) {
        const ssize_t k = pread(fd, dst + done, n - done, (off_t)off + done);
        if (k < 0 && errno == EINTR)
            continue;
        if (k < 0)
            return errno ? errno : EIO;
        if (k == 0)
            break;
        done += (size_t)k;
    }
    *got = done;
    return 0;
}

/* The checksum of a file whose preamble passed check_prefix, read in
 * CHUNK_BYTES pieces into chunk: a damaged file is refused in constant
 * memory, before anything of its size is allocated. */
static int check_file_stream(int fd, int64_t size, uint8_t *chunk,
                             const char *path, const char *fn,
                             const char *where)
{
    char reason[96];
    const int64_t body = size - CRC_BYTES;
    uint32_t crc = 0xFFFFFFFFu;
    uint8_t tail[CRC_BYTES] = {0};
    int64_t pos = 0;
    do {
        const size_t want =
            size - pos < CHUNK_BYTES ? (size_t)(size - pos) : CHUNK_BYTES;
        size_t got = 0;
        const int err = read_at(fd, chunk, want, pos, &got);
        if (err)
            return ibvi__fail(IBVI_ERR_IO, "%s: cannot read '%.100s': %s", fn,
                              path, errno_text(err, reason, sizeof reason));
        if (got != want)
            return ibvi__fail(IBVI_ERR_IO,
                              "%s: '%.100s' shrank while being read", fn,
                              path);
        if (pos < body)
            crc = crc_update(crc, chunk,
                             body - pos < (int64_t)got ? (size_t)(body - pos)
                                                       : got);
        for (int64_t i = pos > body ? pos : body; i < pos + (int64_t)got; i++)
            tail[i - body] = chunk[i - pos];
        pos += (int64_t)got;
    } while (pos < size);
    return check_crc(load_u32(tail), ~crc, where);
}

int ibvi_net_load(ibvi_net **out, ibvi_optimizer **opt_out, const char *path,
                  const ibvi_allocator *allocator)
{
    static const char fn[] = "ibvi_net_load";
    IBVI_CHECK_NOT_NULL(fn, out);
    *out = NULL;
    if (opt_out)
        *opt_out = NULL;
    IBVI_CHECK_NOT_NULL(fn, path);
    int status = check_allocator(allocator, fn);
    if (status < 0)
        return status;
    ibvi_allocator a;
    if (allocator)
        a = *allocator;
    else
        ibvi__allocator_default(&a);

    /* O_NONBLOCK: opening a FIFO without a writer must not wait. The type
     * is checked on the opened descriptor (no race with a rename). */
    char reason[96];
    const int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) {
        const int err = errno;
        return ibvi__fail(IBVI_ERR_IO, "%s: cannot open '%.100s': %s", fn,
                          path, errno_text(err, reason, sizeof reason));
    }
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        (void)close(fd);
        return ibvi__fail(IBVI_ERR_IO, "%s: '%.100s' is not a regular file",
                          fn, path);
    }
    const int flags = fcntl(fd, F_GETFL);
    if (flags < 0 || fcntl(fd, F_SETFL, flags & ~O_NONBLOCK) != 0) {
        const int err = errno;
        (void)close(fd);
        return ibvi__fail(IBVI_ERR_IO, "%s: cannot read '%.100s': %s", fn,
                          path, errno_text(err, reason, sizeof reason));
    }
    const int64_t size = (int64_t)st.st_size;
    char where[160];
    snprintf(where, sizeof where, "%s: %.100s", fn, path);

    /* Refuse a foreign, newer or mis-sized file from its first 16 bytes. */
    uint8_t head[PREAMBLE_BYTES];
    size_t head_len = 0;
    int err = read_at(fd, head, sizeof head, 0, &head_len);
    if (err) {
        (void)close(fd);
        return ibvi__fail(IBVI_ERR_IO, "%s: cannot read '%.100s': %s", fn,
                          path, errno_text(err, reason, sizeof reason));
    }
    if ((int64_t)head_len < (size < PREAMBLE_BYTES ? size : PREAMBLE_BYTES))
        status = ibvi__fail(IBVI_ERR_IO, "%s: '%.100s' shrank while being "
                            "read", fn, path);
    else
        status = check_prefix(head, size, where);
    if (status < 0) {
        (void)close(fd);
        return status;
    }
    uint8_t *chunk = ibvi__alloc(&a, CHUNK_BYTES, 1);
    if (!chunk) {
        (void)close(fd);
        return ibvi__fail(IBVI_ERR_NOMEM, "%s: out of memory", fn);
    }
    status = check_file_stream(fd, size, chunk, path, fn, where);
    ibvi__free(&a, chunk);
    if (status < 0) {
        (void)close(fd);
        return status;
    }
    if ((uint64_t)size > (uint64_t)SIZE_MAX) {
        (void)close(fd);
        return ibvi__fail(IBVI_ERR_NOMEM,
                          "%s: out of memory for the %lld bytes of '%.100s'",
                          fn, (long long)size, path);
    }
    uint8_t *bytes = ibvi__alloc(&a, (size_t)size, 1);
    if (!bytes) {
        (void)close(fd);
        return ibvi__fail(IBVI_ERR_NOMEM,
                          "%s: out of memory for the %lld bytes of '%.100s'",
                          fn, (long long)size, path);
    }
    size_t got = 0;
    err = read_at(fd, bytes, (size_t)size, 0, &got);
    (void)close(fd);
    if (err || got != (size_t)size) {
        ibvi__free(&a, bytes);
        return ibvi__fail(IBVI_ERR_IO,
                          "%s: read %lld of the %lld bytes of '%.100s' (%s)",
                          fn, (long long)got, (long long)size, path,
                          err ? errno_text(err, reason, sizeof reason)
                              : "the file shrank while being read");
    }
    /* load_bytes checks the checksum again: the file may have changed. */
    status = load_bytes(out, opt_out, bytes, size, allocator, where);
    ibvi__free(&a, bytes);
    return status;
}
