/*
 * libibvi fuzz target - the IDX reader of the examples (examples/idx.c),
 * plain or gzip-compressed.
 *
 * The reader takes a path (it opens the file itself, twice: once to sniff
 * the gzip magic, then through zlib's gzopen), so the target hands it the
 * input through a file. It writes the bytes into an in-memory file
 * (memfd_create: no disk traffic, nothing left behind) and passes the path
 * /proc/self/fd/N, which the reader opens like any other file. fmemopen()
 * would not do: the reader needs a path, and zlib opens by name or fd.
 *
 * Each input is read as images (both the byte and the float interface) and
 * as labels. On success the outputs must be consistent with the header; on
 * failure every output must be cleared and a message written.
 *
 * Built with libFuzzer (tests/fuzz/run.sh) and, in the normal build, with
 * tests/fuzz/replay.c over the seed corpus and tests/fuzz/crashes/idx/
 * (meson test fuzz_replay_idx).
 *
 * SPDX-License-Identifier: MIT
 */
#define _GNU_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "idx.h"

#define FUZZ_CHECK(cond)                                                      \
    do {                                                                      \
        if (!(cond))                                                          \
            abort();                                                          \
    } while (0)

static int memory_fd = -1;
static char memory_path[64];

static void put_input(const uint8_t *data, size_t size)
{
    if (memory_fd < 0) {
        memory_fd = memfd_create("idx-fuzz", MFD_CLOEXEC);
        FUZZ_CHECK(memory_fd >= 0);
        snprintf(memory_path, sizeof memory_path, "/proc/self/fd/%d",
                 memory_fd);
    }
    FUZZ_CHECK(ftruncate(memory_fd, 0) == 0);
    size_t done = 0;
    while (done < size) {
        ssize_t n = pwrite(memory_fd, data + done, size - done, (off_t)done);
        FUZZ_CHECK(n > 0);
        done += (size_t)n;
    }
}

static void check_failure(int rc, const char *err)
{
    FUZZ_CHECK(rc == IDX_ERR_FORMAT || rc == IDX_ERR_NOMEM ||
               rc == IDX_ERR_IO);
    FUZZ_CHECK(err[0] != '\0');
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char err[256];
    put_input(data, size);

    uint8_t *pixels = (uint8_t *)1;
    int64_t count = -1;
    int32_t rows = -1, cols = -1;
    err[0] = '\0';
    int rc = idx_load_images_u8(memory_path, &pixels, &count, &rows, &cols, err,
                                sizeof err);
    if (rc == IDX_OK) {
        FUZZ_CHECK(pixels != NULL && count >= 1 && rows >= 1 && cols >= 1);
        FUZZ_CHECK(count <= IDX_MAX_COUNT && rows <= IDX_MAX_DIM &&
                   cols <= IDX_MAX_DIM);
        /* every byte is there: touch the last one */
        const size_t total = (size_t)count * (size_t)rows * (size_t)cols;
        volatile uint8_t last = pixels[total - 1];
        (void)last;
        free(pixels);

        float *px = NULL;
        int64_t c2 = 0;
        int32_t r2 = 0, k2 = 0;
        FUZZ_CHECK(idx_load_images(memory_path, &px, &c2, &r2, &k2, err,
                                   sizeof err) == IDX_OK);
        FUZZ_CHECK(c2 == count && r2 == rows && k2 == cols);
        for (size_t i = 0; i < total; i++)
            FUZZ_CHECK(px[i] >= 0.0f && px[i] <= 1.0f);
        free(px);
    } else {
        FUZZ_CHECK(pixels == NULL && count == 0 && rows == 0 && cols == 0);
        check_failure(rc, err);
    }

    int32_t *labels = (int32_t *)1;
    count = -1;
    err[0] = '\0';
    rc = idx_load_labels(memory_path, &labels, &count, err, sizeof err);
    if (rc == IDX_OK) {
        FUZZ_CHECK(labels != NULL && count >= 1);
        const int32_t top = idx_max_label(labels, count);
        FUZZ_CHECK(top >= 0 && top <= 255);
        free(labels);
    } else {
        FUZZ_CHECK(labels == NULL && count == 0);
        check_failure(rc, err);
    }
    return 0;
}
