/*
 * libibvi fuzz corpus generator - model files with plausible structure and
 * a correct size field and CRC-32, written without the library.
 *
 * usage: gen_load DIR COUNT [SEED]
 *
 * Random mutations of a model file almost never keep its checksum, its
 * size field and the agreement between its architecture and its section
 * sizes. fuzz_load.c repairs size and checksum itself; this program also
 * gets the structure right, so the fuzzer starts from files that reach the
 * deepest checks: architectures of 1 to 6 layers (dense layers with ranks
 * up to 4, every activation, wrong widths now and then), parameters that
 * are ordinary, zero, subnormal, huge, NaN or infinite, optimizers of both
 * kinds with settings inside and just outside their ranges, step counts
 * around the bound of 2^53, thread counts up to 1024 and beyond, and
 * stacks of wide activations near the per-row bound. Three files in four
 * are version 2, with now and then what a later library might write:
 * unknown optional (rarely required) sections, unknown layer kinds,
 * records and sections with ignorable (or required) extra bytes, spatial
 * input shapes; the others are version 1. One version-2 file in three is
 * an image network: a spatial input shape and chains of every image kind
 * (conv2d with any kernel, stride and padding, max and average pools,
 * global average pooling, flatten, group norm, residuals with identity or
 * projected skips), their geometry tracked so that most are valid and now
 * and then one field is just out of range. Most files load; the others fail
 * one check each. Format: include/ibvi/io.h.
 *
 * tests/fuzz/run.sh load runs it into $FUZZ_WORK/gen-load and passes that
 * folder to the fuzzer as a second seed corpus.
 *
 * SPDX-License-Identifier: MIT
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static uint64_t state;

static uint64_t next(void)
{
    uint64_t z = (state += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

/* 0 .. n-1 */
static uint32_t below(uint32_t n) { return (uint32_t)(next() % n); }
/* 1 in n */
static int chance(uint32_t n) { return below(n) == 0; }

typedef struct out {
    uint8_t *b;
    size_t len, cap;
} out;

static void put(out *o, const void *p, size_t n)
{
    if (o->len + n > o->cap) {
        o->cap = (o->len + n) * 2;
        o->b = realloc(o->b, o->cap);
        if (!o->b)
            exit(1);
    }
    memcpy(o->b + o->len, p, n);
    o->len += n;
}

static void u32(out *o, uint32_t v)
{
    uint8_t b[4] = {(uint8_t)v, (uint8_t)(v >> 8), (uint8_t)(v >> 16),
                    (uint8_t)(v >> 24)};
    put(o, b, 4);
}

static void u64(out *o, uint64_t v)
{
    u32(o, (uint32_t)v);
    u32(o, (uint32_t)(v >> 32));
}

static void f32(out *o, float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    u32(o, u);
}

static void patch64(out *o, size_t at, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        o->b[at + i] = (uint8_t)(v >> (8 * i));
}

static uint32_t crc32_bits(const uint8_t *p, size_t n)
{
    uint32_t c = 0xFFFFFFFFu;
    for (size_t i = 0; i < n; i++) {
        c ^= p[i];
        for (int k = 0; k < 8; k++)
            c = (c & 1u) ? (c >> 1) ^ 0xEDB88320u : c >> 1;
    }
    return ~c;
}

/* Files whose values include special ones (a third of them). */
static int special_values;

/* A parameter or state value: mostly ordinary, sometimes special. */
static float value(void)
{
    static const uint32_t special[] = {
        0x00000000u, 0x80000000u, 0x00000001u, 0x007fffffu, 0x7f7fffffu,
        0xff7fffffu, 0x7f800000u, 0xff800000u, 0x7fc00000u, 0x3f800000u};
    if (special_values && chance(64)) {
        float f;
        memcpy(&f, &special[below(10)], 4);
        return f;
    }
    return (float)((double)(next() >> 11) * 0x1p-53 * 2.0 - 1.0);
}

typedef struct layer {
    int32_t kind, activation, outputs, rank;
} layer;

/* A section: version 1 (tag, size) or 2 (tag, size, required). */
static void section(out *o, int version, const char *tag, const out *payload,
                    uint64_t required)
{
    put(o, tag, 4);
    u64(o, payload->len);
    if (version == 2)
        u64(o, required);
    put(o, payload->b, payload->len);
}

/* An optional (or, rarely, required) section of a later library. */
static void foreign_section(out *o)
{
    static const char *const tags[] = {"XTRA", "NOTE", "CONV", "head"};
    out p = {0};
    const uint32_t n = below(24);
    for (uint32_t i = 0; i < n; i++)
        put(&p, "z", 1);
    section(o, 2, tags[below(4)], &p, chance(8) ? 1 + below(n + 1) : 0);
    free(p.b);
}

/* One version-2 layer record. */
static void record(out *arch, uint32_t kind, const int32_t *fields, int n)
{
    u32(arch, kind);
    u64(arch, 20 + 4 * (uint64_t)n);
    u64(arch, 20 + 4 * (uint64_t)n);
    for (int i = 0; i < n; i++)
        u32(arch, (uint32_t)fields[i]);
}

static int32_t sometimes_off(int32_t v)
{
    if (!chance(40))
        return v;
    static const int32_t odd[] = {0, -1, 1, 2, 65537, INT32_MAX, INT32_MIN};
    return chance(2) ? v + (chance(2) ? 1 : -1) : odd[below(7)];
}

/* The ARCH payload of an image network; returns its parameter floats. */
static int64_t image_arch(out *arch)
{
    typedef struct { int64_t c, h, w; } shape;
    shape sh[40];
    shape in = {1 + below(3), 3 + below(10), 3 + below(10)};
    sh[0] = in;
    u32(arch, (uint32_t)in.c);
    u32(arch, (uint32_t)in.h);
    u32(arch, (uint32_t)in.w);
    const int count = 1 + (int)below(12);
    u32(arch, (uint32_t)count);
    int64_t floats = 0;
    shape cur = in;
    for (int i = 0; i < count; i++) {
        const int last = i == count - 1;
        const uint32_t k = last ? (chance(3) ? 2 : 0) : below(9);
        int32_t f[8];
        shape next = cur;
        if (k == 0) { /* dense */
            f[0] = sometimes_off(1 + (int32_t)below(6));
            f[1] = (int32_t)below(3);
            record(arch, 0, f, 2);
            const int64_t P = f[0] * (cur.c * cur.h * cur.w) + f[0];
            if (f[0] > 0)
                floats += P * (1 + f[1]);
            next = (shape){f[0], 1, 1};
        } else if (k == 1) {
            f[0] = sometimes_off(1 + (int32_t)below(3));
            record(arch, 1, f, 1);
        } else if (k == 2) { /* conv2d */
            const int32_t kh = 1 + (int32_t)below((uint32_t)(cur.h < 4 ? cur.h : 4));
            const int32_t kw = 1 + (int32_t)below((uint32_t)(cur.w < 4 ? cur.w : 4));
            f[0] = 1 + (int32_t)below(5);
            f[1] = kh;
            f[2] = kw;
            f[3] = 1 + (int32_t)below(2);
            f[4] = 1 + (int32_t)below(2);
            f[5] = (int32_t)below((uint32_t)kh);
            f[6] = (int32_t)below((uint32_t)kw);
            f[7] = (int32_t)below(3);
            f[below(8)] = sometimes_off(f[0]);
            record(arch, 2, f, 8);
            const int64_t P = f[0] * cur.c * kh * kw + f[0];
            floats += P * (1 + f[7]);
            next = (shape){f[0], (cur.h + 2 * f[5] - kh) / (f[3] > 0 ? f[3] : 1) + 1,
                           (cur.w + 2 * f[6] - kw) / (f[4] > 0 ? f[4] : 1) + 1};
        } else if (k == 3 || k == 4) { /* pools */
            const int32_t side = 1 + (int32_t)below(2);
            f[0] = side;
            f[1] = side;
            f[2] = 1 + (int32_t)below(2);
            f[3] = f[2];
            f[below(4)] = sometimes_off(side);
            record(arch, k, f, 4);
            next = (shape){cur.c, (cur.h - side) / f[2] + 1, (cur.w - side) / f[2] + 1};
        } else if (k == 5) {
            record(arch, 5, f, 0);
            next = (shape){cur.c, 1, 1};
        } else if (k == 6) {
            record(arch, 6, f, 0);
            next = (shape){cur.c * cur.h * cur.w, 1, 1};
        } else if (k == 7) { /* groupnorm */
            f[0] = sometimes_off(chance(2) ? 1 : (int32_t)cur.c);
            memcpy(&f[1], &(float){chance(20) ? 0.0f : 1e-5f}, 4);
            record(arch, 7, f, 2);
            floats += 2 * cur.c;
        } else { /* residual: identity to an earlier layer of the same shape */
            int from = -2;
            for (int j = i - 1; j >= -1 && from == -2; j--)
                if (sh[j + 1].c == cur.c && sh[j + 1].h == cur.h &&
                    sh[j + 1].w == cur.w && chance(2))
                    from = j;
            int32_t stride = 0;
            if (from == -2) { /* a projection from the input */
                from = -1;
                stride = 1;
                floats += cur.c * in.c + cur.c;
            }
            f[0] = chance(30) ? sometimes_off(from) : from;
            f[1] = chance(30) ? sometimes_off(stride) : stride;
            record(arch, 8, f, 2);
        }
        cur = next;
        if (i + 1 < 40)
            sh[i + 1] = cur;
        if (cur.h < 1 || cur.w < 1 || cur.c < 1)
            cur = (shape){1, 1, 1}; /* already invalid: keep going */
    }
    return floats;
}

static void model(out *o)
{
    const int version = chance(4) ? 1 : 2;
    special_values = chance(3);
    const int wide = chance(32); /* stacked wide activations */
    int32_t input_dim = wide ? 1 : (int32_t)(1 + below(12));
    layer layers[192];
    int count = 0;
    int64_t width = input_dim, floats = 0;
    const int target = wide ? 40 + (int)below(150) : 1 + (int)below(6);
    while (count < target) {
        layer l = {0, 0, 0, 0};
        const int last = count == target - 1;
        if (!last && count > 0 && layers[count - 1].kind == 0 &&
            (wide || chance(2))) {
            l.kind = 1;
            l.activation = 1 + (int32_t)below(3);
            if (chance(40))
                l.activation = (int32_t)below(6); /* 0, 4, 5: invalid */
            l.outputs = (int32_t)width;
            if (chance(40))
                l.outputs += 1;
        } else if (wide && count > 0 && !last) {
            l = layers[count - 1];
        } else {
            l.outputs = wide && count == 0 ? (int32_t)(1024 << below(4))
                                            : (int32_t)(1 + below(10));
            l.rank = wide ? 0 : (int32_t)below(5);
            if (chance(50))
                l.rank = -1;
        }
        if (chance(200))
            l.kind = 2 + (int32_t)below(6); /* a later library's kind */
        if (l.kind == 0 && l.rank >= 0) {
            floats += ((int64_t)l.outputs * width + l.outputs) * (1 + l.rank);
            width = l.outputs;
        }
        layers[count++] = l;
    }

    static const uint32_t threads[] = {1, 2, 3, 8, 64, 1024, 1025, 0};
    const uint32_t parameterization = chance(30) ? below(4) : below(2);
    const uint64_t seed = next();
    const uint64_t position = chance(4) ? next() : below(1000);
    const uint32_t thread_count = chance(3) ? threads[below(8)] : 1;

    out head = {0}, arch = {0}, parm = {0}, optm = {0};
    const int image = version == 2 && !wide && chance(3);
    if (image) {
        u32(&head, parameterization);
        u32(&head, thread_count);
        u64(&head, position);
        u64(&head, seed);
        floats = image_arch(&arch);
    } else if (version == 1) {
        u32(&head, (uint32_t)input_dim);
        u32(&head, parameterization);
        u64(&head, seed);
        u64(&head, position);
        u32(&head, thread_count);
        u32(&arch, (uint32_t)count);
        for (int i = 0; i < count; i++) {
            u32(&arch, (uint32_t)layers[i].kind);
            u32(&arch, (uint32_t)layers[i].activation);
            u32(&arch, (uint32_t)layers[i].outputs);
            u32(&arch, (uint32_t)layers[i].rank);
        }
    } else {
        u32(&head, parameterization);
        u32(&head, thread_count);
        u64(&head, position);
        u64(&head, seed);
        if (chance(30))
            u32(&head, 0xABCD); /* a later field, ignorable */
        u32(&arch, (uint32_t)input_dim);
        u32(&arch, chance(60) ? 2 : 1); /* H */
        u32(&arch, chance(60) ? 3 : 1); /* W */
        u32(&arch, (uint32_t)count);
        for (int i = 0; i < count; i++) {
            const int dense = layers[i].kind != 1;
            uint32_t fields = dense ? 8 : 4;
            const uint32_t extra = chance(20) ? 4 * below(4) : 0;
            uint64_t length = 20 + fields + extra;
            uint64_t required = 20 + fields;
            if (chance(60))
                required = length + (chance(2) ? 0 : 1);
            if (chance(80))
                length -= 1 + below(8);
            u32(&arch, (uint32_t)layers[i].kind);
            u64(&arch, length);
            u64(&arch, required);
            if (dense) {
                u32(&arch, (uint32_t)layers[i].outputs);
                u32(&arch, (uint32_t)layers[i].rank);
            } else {
                u32(&arch, (uint32_t)layers[i].activation);
            }
            for (uint32_t k = 0; k < extra; k++)
                put(&arch, "e", 1);
        }
    }
    for (int64_t i = 0; i < floats; i++)
        f32(&parm, value());
    if (version == 2 && chance(40))
        f32(&parm, 1.0f); /* a later library's extra floats */

    const int with_optimizer = !wide && !(image && floats > 100000) && chance(2);
    if (with_optimizer) {
        const int adam = chance(2);
        const int64_t state_floats = (adam ? 2 : 1) * floats;
        u32(&optm, chance(40) ? 2 : (uint32_t)adam);
        f32(&optm, chance(30) ? -0.1f : 0.01f);
        f32(&optm, chance(30) ? 1.0f : 0.9f);
        u32(&optm, chance(30) ? 2 : below(2));
        f32(&optm, chance(30) ? 1.0f : 0.9f);
        f32(&optm, 0.999f);
        f32(&optm, chance(30) ? 0.0f : 1e-8f);
        static const uint64_t steps[] = {
            0, 1, 1000, UINT64_C(1) << 53, (UINT64_C(1) << 53) + 1,
            UINT64_C(0x7fffffffffffffff), UINT64_C(0x8000000000000000)};
        u64(&optm, chance(3) ? steps[below(7)] : below(100000));
        u64(&optm, (uint64_t)state_floats);
        for (int64_t i = 0; i < state_floats; i++) {
            float v = value();
            if (adam && i >= floats && v < 0 && !chance(20))
                v = -v; /* second moments >= 0, mostly */
            f32(&optm, v);
        }
    }

    put(o, "IBVI", 4);
    u32(o, chance(50) ? 1 + below(3) : (uint32_t)version);
    u64(o, 0); /* size, patched below */
    /* version 2: required = the fields this library knows, or more */
    const uint64_t head_required = chance(30) ? head.len : 24;
    if (version == 2 && chance(8))
        foreign_section(o);
    section(o, version, "HEAD", &head, head_required);
    if (version == 2 && chance(8))
        foreign_section(o);
    section(o, version, "ARCH", &arch, arch.len);
    section(o, version, "PARM", &parm,
            chance(30) ? (uint64_t)parm.len : 4 * (uint64_t)floats);
    if (version == 2 && chance(8))
        foreign_section(o);
    if (with_optimizer)
        section(o, version, "OPTM", &optm, optm.len);
    if (version == 2 && chance(8))
        foreign_section(o);
    free(head.b);
    free(arch.b);
    free(parm.b);
    free(optm.b);
    const size_t total = o->len + 4;
    patch64(o, 8, chance(60) ? total + 1 : total);
    u32(o, crc32_bits(o->b, o->len));
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: %s DIR COUNT [SEED]\n", argv[0]);
        return 2;
    }
    const long count = strtol(argv[2], NULL, 10);
    state = argc > 3 ? strtoull(argv[3], NULL, 10) : 1;
    for (long i = 0; i < count; i++) {
        out o = {0};
        model(&o);
        char name[4096];
        snprintf(name, sizeof name, "%s/gen-%06ld", argv[1], i);
        FILE *f = fopen(name, "wb");
        if (!f || fwrite(o.b, 1, o.len, f) != o.len || fclose(f) != 0) {
            perror(name);
            return 1;
        }
        free(o.b);
    }
    return 0;
}
