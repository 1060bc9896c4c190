/*
 * libibvi fuzz target - the model loader, ibvi_net_load_buffer().
 *
 * Every input is loaded twice:
 *   1. as it is, which exercises the preamble and checksum checks (random
 *      bytes almost never pass the CRC-32, so on its own this would keep
 *      the fuzzer out of the section parser);
 *   2. with the recorded file size (bytes 8-15) and the CRC-32 (the last 4
 *      bytes) rewritten to match the input, so mutations reach the section
 *      parser and the rebuild through the public API.
 * A network that loads is then saved (always in format version 2, the
 * canonical encoding) and checked: its parameters and optimizer state are
 * the input's bytes, the saved file loads to a network that saves to the
 * same bytes again and computes the same forward pass, and an input that
 * was already canonical saves back to exactly itself (the format has one
 * encoding per network; a loader that accepted something it cannot
 * reproduce would have lost or invented information), except the thread
 * count, a preference the loader caps at the CPUs of the process.
 *
 * Built two ways: with libFuzzer (tests/fuzz/run.sh) and, in the normal
 * build, with tests/fuzz/replay.c, which runs every file of the seed corpus
 * and of tests/fuzz/crashes/load/ through this function (meson test
 * fuzz_replay_load).
 *
 * SPDX-License-Identifier: MIT
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <zlib.h>

#include "ibvi/ibvi.h"

/* A violated invariant: abort so libFuzzer (and the replay test) see it. */
#define FUZZ_CHECK(cond)                                                      \
    do {                                                                      \
        if (!(cond))                                                          \
            abort();                                                          \
    } while (0)

/* Offsets in the OPTM payload (include/ibvi/io.h, both versions). */
#define OPTM_MOMENTUM 8  /* momentum, nesterov: SGD only     */
#define OPTM_BETA1 16    /* beta1, beta2, eps: Adam only      */
#define OPTM_STEPS 28
#define OPTM_FIXED 44

static uint32_t rd32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
           (uint32_t)p[3] << 24;
}

static uint64_t rd64(const uint8_t *p)
{
    return (uint64_t)rd32(p) | (uint64_t)rd32(p + 4) << 32;
}

/* Payload offset and size of section `tag` of a file that loaded (either
 * version; version-2 headers are 20 bytes), or 0 if absent. */
static size_t payload(const uint8_t *b, size_t len, const char *tag,
                      uint64_t *size)
{
    const size_t header = rd32(b + 4) == 1 ? 12 : 20;
    size_t pos = 16;
    while (pos + header <= len - 4) {
        *size = rd64(b + pos + 4);
        if (memcmp(b + pos, tag, 4) == 0)
            return pos + header;
        pos += header + (size_t)*size;
    }
    *size = 0;
    return 0;
}

/* Zeroes the `required` counts of every section and layer record of a
 * version-2 file that loaded: a reader may accept other counts than the
 * ones the library writes (any that do not exceed what it understands). */
static void clear_required(uint8_t *b, size_t len)
{
    size_t pos = 16;
    while (pos + 20 <= len - 4) {
        const uint64_t size = rd64(b + pos + 4);
        memset(b + pos + 12, 0, 8);
        if (memcmp(b + pos, "ARCH", 4) == 0) {
            const uint32_t count = rd32(b + pos + 20 + 12);
            size_t rec = pos + 20 + 16;
            for (uint32_t i = 0; i < count; i++) {
                memset(b + rec + 12, 0, 8);
                rec += (size_t)rd64(b + rec + 4);
            }
        }
        pos += 20 + (size_t)size;
    }
}

static void forward(ibvi_net *net, float *y)
{
    const int32_t in = ibvi_net_input_dim(net);
    float *x = calloc((size_t)in, sizeof(float));
    FUZZ_CHECK(x != NULL);
    for (int32_t i = 0; i < in; i++)
        x[i] = (float)(i % 7) - 3.0f;
    FUZZ_CHECK(ibvi_net_forward_mean(net, x, 1, y) == IBVI_OK);
    free(x);
}

static void use_loaded(ibvi_net *net, ibvi_optimizer *opt, const uint8_t *data,
                       size_t size)
{
    /* Saving writes the canonical version-2 file. */
    int64_t need = -1;
    FUZZ_CHECK(ibvi_net_save_size(net, opt, &need) == IBVI_OK);
    uint8_t *again = malloc((size_t)need);
    FUZZ_CHECK(again != NULL);
    FUZZ_CHECK(ibvi_net_save_buffer(net, opt, again, need) == IBVI_OK);

    /* Nothing was lost: the parameters and the optimizer state are the
     * input's bytes, whichever version it had and whatever a later library
     * added around them. */
    uint64_t n1, n2;
    const size_t p1 = payload(data, size, "PARM", &n1);
    const size_t p2 = payload(again, (size_t)need, "PARM", &n2);
    FUZZ_CHECK(p1 && p2 && n2 <= n1 && memcmp(data + p1, again + p2, n2) == 0);
    const size_t o1 = payload(data, size, "OPTM", &n1);
    const size_t o2 = payload(again, (size_t)need, "OPTM", &n2);
    FUZZ_CHECK((o2 != 0) == (opt != NULL));
    if (opt) {
        FUZZ_CHECK(o1 && n2 <= n1);
        FUZZ_CHECK(memcmp(data + o1 + OPTM_STEPS, again + o2 + OPTM_STEPS,
                          n2 - OPTM_STEPS) == 0);
    }
    /* Threads: min(stored, CPUs), so at most the stored preference. */
    const size_t head = payload(data, size, "HEAD", &n1);
    const uint32_t stored = rd32(data + head + (rd32(data + 4) == 1 ? 24 : 4));
    FUZZ_CHECK(ibvi_net_threads(net) >= 1 &&
               (uint32_t)ibvi_net_threads(net) <= stored);

    /* The canonical file loads to a network that saves to the same bytes
     * and computes the same outputs. */
    ibvi_net *net2 = NULL;
    ibvi_optimizer *opt2 = NULL;
    FUZZ_CHECK(ibvi_net_load_buffer(&net2, opt ? &opt2 : NULL, again, need,
                                    NULL) == IBVI_OK);
    uint8_t *third = malloc((size_t)need);
    FUZZ_CHECK(third != NULL);
    FUZZ_CHECK(ibvi_net_save_buffer(net2, opt2, third, need) == IBVI_OK);
    FUZZ_CHECK(memcmp(third, again, (size_t)need) == 0);
    free(third);

    /* A canonical input is exactly what the library writes, but for the
     * thread count (capped), the settings of the other optimizer kind,
     * which are stored (and checked for range) but not used, and the
     * required counts (any that do not exceed the fields are accepted). */
    if (rd32(data + 4) == 2 && (int64_t)size == need) {
        uint8_t *input = malloc(size);
        FUZZ_CHECK(input != NULL);
        memcpy(input, data, size);
        clear_required(input, size);
        clear_required(again, size);
        data = input;
        memcpy(again + head + 4, data + head + 4, 4);
        if (opt) {
            const int adam = rd32(data + o1) == 1;
            if (adam)
                memcpy(again + o2 + OPTM_MOMENTUM, data + o1 + OPTM_MOMENTUM,
                       OPTM_BETA1 - OPTM_MOMENTUM);
            else
                memcpy(again + o2 + OPTM_BETA1, data + o1 + OPTM_BETA1,
                       OPTM_STEPS - OPTM_BETA1);
        }
        FUZZ_CHECK(memcmp(again, data, size - 4) == 0); /* CRC aside */
        free(input);
    }
    free(again);

    /* One row through the mean network: the network is usable, and the
     * reloaded one agrees bit for bit. Inputs are bounded by the file size
     * (every parameter is 4 bytes of it). A file may ask for up to 1024
     * BLIS threads: one is enough here. */
    FUZZ_CHECK(ibvi_net_set_threads(net, 1) == IBVI_OK);
    FUZZ_CHECK(ibvi_net_set_threads(net2, 1) == IBVI_OK);
    const int32_t out = ibvi_net_output_dim(net);
    FUZZ_CHECK(ibvi_net_input_dim(net) > 0 && out > 0);
    float *y = malloc(2 * (size_t)out * sizeof(float));
    FUZZ_CHECK(y != NULL);
    forward(net, y);
    forward(net2, y + out);
    FUZZ_CHECK(memcmp(y, y + out, (size_t)out * sizeof(float)) == 0);
    free(y);
    ibvi_optimizer_free(opt2);
    ibvi_net_free(net2);
}

static void load_once(const uint8_t *data, size_t size)
{
    ibvi_net *net = (ibvi_net *)(uintptr_t)1;
    ibvi_optimizer *opt = (ibvi_optimizer *)(uintptr_t)1;
    const int status = ibvi_net_load_buffer(&net, &opt, data, (int64_t)size,
                                            NULL);
    if (status != IBVI_OK) {
        /* Failure: outputs cleared, a known status, a message. */
        FUZZ_CHECK(net == NULL && opt == NULL);
        FUZZ_CHECK(status == IBVI_ERR_FORMAT || status == IBVI_ERR_VERSION ||
                   status == IBVI_ERR_CHECKSUM);
        FUZZ_CHECK(ibvi_last_error()[0] != '\0');
        return;
    }
    FUZZ_CHECK(net != NULL);
    use_loaded(net, opt, data, size);
    ibvi_optimizer_free(opt);
    ibvi_net_free(net);

    /* Without opt_out the optimizer section is only checked. */
    net = NULL;
    FUZZ_CHECK(ibvi_net_load_buffer(&net, NULL, data, (int64_t)size, NULL) ==
               IBVI_OK);
    FUZZ_CHECK(net != NULL);
    ibvi_net_free(net);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    load_once(data, size);
    if (size < 20 || size > ((size_t)1 << 30))
        return 0;
    uint8_t *fixed = malloc(size);
    if (!fixed)
        return 0;
    memcpy(fixed, data, size);
    const uint64_t n = size;
    for (int i = 0; i < 8; i++)
        fixed[8 + i] = (uint8_t)(n >> (8 * i));
    const uint32_t crc = (uint32_t)crc32(0L, fixed, (uInt)(size - 4));
    for (int i = 0; i < 4; i++)
        fixed[size - 4 + i] = (uint8_t)(crc >> (8 * i));
    load_once(fixed, size);
    free(fixed);
    return 0;
}
