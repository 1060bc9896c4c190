/*
 * corrupt.h - MNIST-C-style image corruptions, seeded and deterministic.
 * Host-side helper code for the libibvi examples; it does not depend on
 * libibvi.
 *
 * The definitions follow MNIST-C (Mu & Gilmer 2019, the severities of its
 * published data set) as written below. Images are float
 * pixels in [0, 1], row-major, `rows` x `cols` (28 x 28 for MNIST). Every
 * corruption except IDENTITY clips its output to [0, 1]. Outputs are floats
 * and are not re-quantised to 1/255 steps (idx_write_images rounds when a
 * corrupted set is saved).
 *
 * Coordinates: x is the column, y the row (pointing down); the centre is
 * c = ((cols-1)/2, (rows-1)/2) = (13.5, 13.5) for 28 x 28. The geometric
 * corruptions are inverse maps, as skimage.transform.warp(inverse_map=A)
 * in MNIST-C: output(p) = bilinear(input, A (p - c) + c), zero outside.
 *
 *   IDENTITY       copy.
 *   SHOT_NOISE     Poisson(3x)/3, clipped to [0, 1]. (x is clipped to [0, 1]
 *                  first; NaN counts as 0.)
 *   IMPULSE_NOISE  each pixel independently, with probability 0.17, is set
 *                  to 0 or 1 with equal odds (skimage 's&p', amount 0.17);
 *                  the other pixels are kept (clipped).
 *   SHEAR          A = [[1, -sin s], [0, cos s]], s = +0.4 or -0.4 per image.
 *   SCALE          A = diag(1/0.7, 1/0.7): the content shrinks to 70 % about
 *                  the centre.
 *   ROTATE         A = [[cos r, -sin r], [sin r, cos r]], r = +0.4 or -0.4
 *                  rad per image.
 *   BRIGHTNESS     clip(x + 0.5).
 *   TRANSLATE      output(x, y) = input(x + dx, y + dy), dx and dy each +3 or
 *                  -3 per image (so the content moves by (-dx, -dy)); zero
 *                  fill.
 *   STRIPE         1 - x in the first and last cols/4 columns (columns 0-6
 *                  and 21-27 for 28 columns).
 *
 * The other seven follow MNIST-C's code (corruptions.py, severities of the
 * published set); the comments in corrupt.c give the details:
 *   GLASS_BLUR     Gaussian blur sigma 0.7, bytes, local pixel swaps, blur
 *                  again. As in MNIST-C, whose skimage call treats the
 *                  columns as channels, the blur runs down the columns only.
 *   MOTION_BLUR    ImageMagick's one-sided motion blur, radius 10, sigma 3,
 *                  angle uniform in (-45, 45) degrees, edge pixels repeated.
 *   FOG            + 3 * plasma fractal (diamond-square, decay 1.4), then
 *                  scaled by max/(max + 3).
 *   SPATTER        "mud": blurred thresholded noise mask m, x(1-m) + 63/255 m.
 *   DOTTED_LINE    a soft line across the image, every other pair of
 *                  columns removed.
 *   ZIGZAG         a soft zigzag line from column 2 to column cols-3.
 *   CANNY_EDGES    skimage.feature.canny with its defaults (sigma 1,
 *                  thresholds 0.1 / 0.2); output 0 or 1.
 * Checked against the references (skimage 0.19.3 / scipy 1.10 for the
 * filters, canny and the warps, ImageMagick 6 for the motion blur): equal
 * up to float rounding (motion blur: within one 8-bit step, since MNIST-C
 * also rounds that one to bytes). The random numbers come from corrupt.c's
 * own generator, not numpy's, so individual corrupted images differ from
 * the published MNIST-C files while following the same distribution.
 *
 * The signs, angles and all noise come from the seed: see corrupt_apply_ex.
 * MNIST-C wrote 28 x 28 images; other sizes work too (the centre and the
 * stripe width follow the size; the lines use rows and cols; fog uses a
 * plasma map of max(256, next power of two >= the size)).
 *
 * Thread-safety: no global state; calls may run concurrently.
 *
 * SPDX-License-Identifier: MIT
 */
#ifndef IBVI_EXAMPLES_CORRUPT_H
#define IBVI_EXAMPLES_CORRUPT_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The 15 MNIST-C corruptions plus identity, in MNIST-C's order. The numbers
 * are stable. */
typedef enum corrupt_kind {
    CORRUPT_IDENTITY = 0,
    CORRUPT_SHOT_NOISE = 1,
    CORRUPT_IMPULSE_NOISE = 2,
    CORRUPT_GLASS_BLUR = 3,
    CORRUPT_MOTION_BLUR = 4,
    CORRUPT_SHEAR = 5,
    CORRUPT_SCALE = 6,
    CORRUPT_ROTATE = 7,
    CORRUPT_BRIGHTNESS = 8,
    CORRUPT_TRANSLATE = 9,
    CORRUPT_STRIPE = 10,
    CORRUPT_FOG = 11,
    CORRUPT_SPATTER = 12,
    CORRUPT_DOTTED_LINE = 13,
    CORRUPT_ZIGZAG = 14,
    CORRUPT_CANNY_EDGES = 15,
    CORRUPT_COUNT = 16
} corrupt_kind;

/* Status codes; same numbers as libibvi's IBVI_OK / IBVI_ERR_*. */
enum {
    CORRUPT_OK = 0,
    CORRUPT_ERR_INVALID_ARG = -1, /* unknown kind, NULL, n < 0, size <= 0  */
    CORRUPT_ERR_NOMEM = -3,       /* scratch buffer could not be allocated */
    CORRUPT_ERR_UNSUPPORTED = -10 /* kind known but unavailable here (none
                                     at present; kept for future kinds)    */
};

/* Name of a kind as MNIST-C spells it ("shot_noise", "rotate", ...), or
 * NULL if `which` is out of range. Static text. */
const char *corrupt_name(int which);

/* The kind with this name (exact, as corrupt_name returns), or
 * CORRUPT_ERR_INVALID_ARG for an unknown name or NULL. */
int corrupt_from_name(const char *name);

/* 1 if corrupt_apply implements `which` (all kinds in range), else 0. */
int corrupt_is_implemented(int which);

/* Applies corruption `which` to n images of rows x cols: in and out each hold
 * n*rows*cols floats. out may equal in (in place); other overlaps are not
 * allowed. n == 0 does nothing. Image i draws its random numbers from a
 * stream keyed by (seed, which, i) only, so the result for one image does
 * not depend on n or on the other images. Returns CORRUPT_OK or a negative
 * CORRUPT_ERR_*; on error out is left unspecified. */
int corrupt_apply(int which, const float *in, float *out, int64_t n,
                  int32_t rows, int32_t cols, uint64_t seed);

/* As corrupt_apply, but image k of this call uses the stream of image
 * first_index + k, so a large set can be corrupted in batches and give the
 * same result as in one call. first_index >= 0. */
int corrupt_apply_ex(int which, const float *in, float *out, int64_t n,
                     int32_t rows, int32_t cols, uint64_t seed,
                     int64_t first_index);

#ifdef __cplusplus
}
#endif

#endif /* IBVI_EXAMPLES_CORRUPT_H */
