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
 * A network that loads is then used: one forward pass of the mean network,
 * and it must save back to exactly the bytes it was loaded from (the format
 * has one encoding per network; a loader that accepted something it cannot
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

/* Offsets in the OPTM payload (include/ibvi/io.h). */
#define OPTM_MOMENTUM 8  /* momentum, nesterov: SGD only     */
#define OPTM_BETA1 16    /* beta1, beta2, eps: Adam only      */
#define OPTM_STEPS 28
#define OPTM_FIXED 44
#define HEAD_THREADS 52  /* file offset of HEAD's thread count    */

static void use_loaded(ibvi_net *net, ibvi_optimizer *opt, const uint8_t *data,
                       size_t size)
{
    /* It saves back to the same bytes. */
    int64_t need = -1;
    FUZZ_CHECK(ibvi_net_save_size(net, opt, &need) == IBVI_OK);
    FUZZ_CHECK(need == (int64_t)size);
    uint8_t *again = malloc(size);
    FUZZ_CHECK(again != NULL);
    FUZZ_CHECK(ibvi_net_save_buffer(net, opt, again, need) == IBVI_OK);
    /* Threads: min(stored, CPUs), so at most the stored preference. */
    const uint32_t stored = (uint32_t)data[HEAD_THREADS] |
                            (uint32_t)data[HEAD_THREADS + 1] << 8 |
                            (uint32_t)data[HEAD_THREADS + 2] << 16 |
                            (uint32_t)data[HEAD_THREADS + 3] << 24;
    FUZZ_CHECK(ibvi_net_threads(net) >= 1 &&
               (uint32_t)ibvi_net_threads(net) <= stored);
    memcpy(again + HEAD_THREADS, data + HEAD_THREADS, 4);
    if (opt) {
        /* The settings of the other optimizer kind are stored (and checked
         * for range) but not used: an SGD optimizer always writes Adam's
         * defaults and vice versa. Take those bytes from the input. */
        int64_t plain = -1;
        FUZZ_CHECK(ibvi_net_save_size(net, NULL, &plain) == IBVI_OK);
        /* the OPTM payload follows the PARM section and its 12-byte header */
        const size_t optm = (size_t)plain - 4 + 12;
        const int64_t state = (need - plain - 12 - OPTM_FIXED) / 4;
        const int adam = state == 2 * ibvi_net_param_count(net);
        if (adam)
            memcpy(again + optm + OPTM_MOMENTUM, data + optm + OPTM_MOMENTUM,
                   OPTM_BETA1 - OPTM_MOMENTUM);
        else
            memcpy(again + optm + OPTM_BETA1, data + optm + OPTM_BETA1,
                   OPTM_STEPS - OPTM_BETA1);
    }
    const uint32_t crc = (uint32_t)crc32(0L, again, (uInt)(size - 4));
    for (int i = 0; i < 4; i++)
        again[size - 4 + i] = (uint8_t)(crc >> (8 * i));
    FUZZ_CHECK(memcmp(again, data, size) == 0);
    free(again);
    /* A file may ask for up to 1024 BLIS threads: one is enough here. */
    FUZZ_CHECK(ibvi_net_set_threads(net, 1) == IBVI_OK);

    /* One row through the mean network: the network is usable. Inputs are
     * bounded by the file size (every parameter is 4 bytes of it). */
    const int32_t in = ibvi_net_input_dim(net), out = ibvi_net_output_dim(net);
    FUZZ_CHECK(in > 0 && out > 0);
    float *x = calloc((size_t)in, sizeof(float));
    float *y = malloc((size_t)out * sizeof(float));
    FUZZ_CHECK(x != NULL && y != NULL);
    FUZZ_CHECK(ibvi_net_forward_mean(net, x, 1, y) == IBVI_OK);
    free(x);
    free(y);
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
