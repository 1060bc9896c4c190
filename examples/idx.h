/*
 * idx.h - reading and writing IDX files (the MNIST / Fashion-MNIST format),
 * plain or gzip-compressed. Host-side helper code for the libibvi examples;
 * it does not depend on libibvi.
 *
 * Format (all integers big-endian):
 *   bytes 0-1  zero
 *   byte  2    data type; only 0x08 (unsigned byte) is supported
 *   byte  3    number of dimensions: 3 for images, 1 for labels
 *   then one uint32 per dimension, then the data, row-major.
 * So the magic number is 0x00000803 for images (count, rows, cols) and
 * 0x00000801 for labels (count).
 *
 * Reading:
 * - A file that starts with the gzip magic 1f 8b is decompressed with zlib;
 *   any other file is read as plain IDX. Real MNIST / Fashion-MNIST files
 *   (either form) load unchanged.
 * - Limits: count in [1, IDX_MAX_COUNT], rows and cols in [1, IDX_MAX_DIM]
 *   and count*rows*cols <= IDX_MAX_ELEMENTS. Anything else is rejected as
 *   absurd before any large allocation is made.
 * - The data are read in chunks and the output grows as bytes arrive, so a
 *   header that claims more items than the file holds costs no more memory
 *   than the file itself and is reported as truncated.
 * - Trailing bytes after the last item are REJECTED (IDX_ERR_FORMAT): the
 *   counts in the header would then not describe the file. For a gzip file
 *   this means trailing bytes in the decompressed stream; reading to the end
 *   also makes zlib verify the gzip CRC, so a corrupted archive is caught.
 * - Label values are returned as they are (0..255); values above 9 are NOT
 *   rejected here, since the format allows any byte. A caller that expects
 *   10 classes checks the range itself (idx_max_label helps).
 *
 * Errors: every function returns IDX_OK (0) or a negative IDX_ERR_* code
 * (the numbers equal libibvi's IBVI_ERR_* of the same meaning) and, if err is
 * not NULL and errlen > 0, writes a NUL-terminated message such as
 * "data/x.gz: truncated data: header says 10000 images of 28x28, file ends
 * after 5123 of them". On error every output pointer is set to NULL / 0 and
 * nothing is left allocated. Malformed input never crashes the process.
 *
 * Ownership: arrays returned through ** belong to the caller, who releases
 * them with free(). Input arrays are only read during the call.
 * Thread-safety: functions keep no state; different calls may run in
 * different threads at once.
 *
 * SPDX-License-Identifier: MIT
 */
#ifndef IBVI_EXAMPLES_IDX_H
#define IBVI_EXAMPLES_IDX_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Status codes; same numbers as libibvi's IBVI_OK / IBVI_ERR_*. */
enum {
    IDX_OK = 0,
    IDX_ERR_INVALID_ARG = -1, /* NULL pointer, size <= 0, value out of range */
    IDX_ERR_NOMEM = -3,       /* malloc failed                                */
    IDX_ERR_IO = -6,          /* file missing, unreadable or unwritable       */
    IDX_ERR_FORMAT = -7       /* not a valid IDX file of the expected kind    */
};

#define IDX_MAGIC_IMAGES 0x00000803u
#define IDX_MAGIC_LABELS 0x00000801u

#define IDX_MAX_DIM 65536                     /* rows, cols            */
#define IDX_MAX_COUNT INT64_C(2147483647)     /* images or labels      */
#define IDX_MAX_ELEMENTS (INT64_C(1) << 32)   /* count*rows*cols       */

/* Loads an image file (magic 0x00000803). On success *pixels_out holds
 * count*rows*cols floats, image after image, row-major, each pixel/255 in
 * [0, 1]; *count, *rows, *cols are set. err may be NULL. */
int idx_load_images(const char *path, float **pixels_out, int64_t *count,
                    int32_t *rows, int32_t *cols, char *err, size_t errlen);

/* As idx_load_images, but returns the raw bytes (0..255). */
int idx_load_images_u8(const char *path, uint8_t **pixels_out, int64_t *count,
                       int32_t *rows, int32_t *cols, char *err, size_t errlen);

/* Loads a label file (magic 0x00000801). On success *labels_out holds
 * *count labels, each 0..255 (not checked against 10 classes). */
int idx_load_labels(const char *path, int32_t **labels_out, int64_t *count,
                    char *err, size_t errlen);

/* Largest value in labels[0..count), or -1 if count <= 0 or labels is NULL. */
int32_t idx_max_label(const int32_t *labels, int64_t count);

/* Writes count images of rows x cols as IDX (magic 0x00000803), each byte
 * round(clamp(x, 0, 1) * 255) (NaN is written as 0). The file is gzip-
 * compressed when path ends in ".gz", plain otherwise. An existing file is
 * replaced; on failure the partly written file is removed. */
int idx_write_images(const char *path, const float *pixels, int64_t count,
                     int32_t rows, int32_t cols, char *err, size_t errlen);

/* As idx_write_images, from raw bytes. */
int idx_write_images_u8(const char *path, const uint8_t *pixels, int64_t count,
                        int32_t rows, int32_t cols, char *err, size_t errlen);

/* Writes count labels (magic 0x00000801); each must be in 0..255, otherwise
 * IDX_ERR_INVALID_ARG and nothing is written. gzip when path ends in ".gz". */
int idx_write_labels(const char *path, const int32_t *labels, int64_t count,
                     char *err, size_t errlen);

/* Static English text for an IDX_* code; never NULL. */
const char *idx_status_string(int status);

#ifdef __cplusplus
}
#endif

#endif /* IBVI_EXAMPLES_IDX_H */
