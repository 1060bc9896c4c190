/*
 * test_corrupt.c - Check suite for the examples' MNIST-C corruptions
 * (examples/corrupt.c): each corruption on hand-made images, determinism,
 * batching, in-place use and argument checks.
 *
 * SPDX-License-Identifier: MIT
 */
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "corrupt.h"

enum { R = 28, C = 28, P = R * C };

static float *alloc_images(int64_t n)
{
    float *x = calloc((size_t)n * P, sizeof *x);
    ck_assert_ptr_nonnull(x);
    return x;
}

/* Deterministic pseudo-random image values in [0, 1]. */
static void fill_random(float *x, size_t n, uint32_t s)
{
    size_t k;
    for (k = 0; k < n; k++) {
        s = s * 1664525u + 1013904223u;
        x[k] = (float)(s >> 8) / 16777216.0f;
    }
}

static double total(const float *x, size_t n)
{
    double s = 0.0;
    size_t k;
    for (k = 0; k < n; k++)
        s += x[k];
    return s;
}

/* Centred Gaussian blob, sigma 3 (fits well inside 28 x 28). */
static void blob(float *x)
{
    int i, j;
    for (i = 0; i < R; i++)
        for (j = 0; j < C; j++) {
            double dx = j - 13.5, dy = i - 13.5;
            x[i * C + j] = (float)exp(-(dx * dx + dy * dy) / (2.0 * 9.0));
        }
}

/* Orientation of the principal axis of an image, in (-pi/2, pi/2], with x
 * the column and y the row. */
static double orientation(const float *x)
{
    double m = 0, mx = 0, my = 0, cxx = 0, cyy = 0, cxy = 0;
    int i, j;
    for (i = 0; i < R; i++)
        for (j = 0; j < C; j++) {
            m += x[i * C + j];
            mx += j * x[i * C + j];
            my += i * x[i * C + j];
        }
    mx /= m;
    my /= m;
    for (i = 0; i < R; i++)
        for (j = 0; j < C; j++) {
            double w = x[i * C + j];
            cxx += w * (j - mx) * (j - mx);
            cyy += w * (i - my) * (i - my);
            cxy += w * (j - mx) * (i - my);
        }
    return 0.5 * atan2(2.0 * cxy, cxx - cyy);
}

/* ---- names and arguments ------------------------------------------------ */

START_TEST(test_names)
{
    int k;
    for (k = 0; k < CORRUPT_COUNT; k++) {
        ck_assert_ptr_nonnull(corrupt_name(k));
        ck_assert_int_eq(corrupt_from_name(corrupt_name(k)), k);
    }
    ck_assert_str_eq(corrupt_name(CORRUPT_SHOT_NOISE), "shot_noise");
    ck_assert_str_eq(corrupt_name(CORRUPT_CANNY_EDGES), "canny_edges");
    ck_assert_ptr_null(corrupt_name(-1));
    ck_assert_ptr_null(corrupt_name(CORRUPT_COUNT));
    ck_assert_int_eq(corrupt_from_name("Rotate"), CORRUPT_ERR_INVALID_ARG);
    ck_assert_int_eq(corrupt_from_name(""), CORRUPT_ERR_INVALID_ARG);
    ck_assert_int_eq(corrupt_from_name(NULL), CORRUPT_ERR_INVALID_ARG);
    ck_assert_int_eq(corrupt_is_implemented(-1), 0);
    ck_assert_int_eq(corrupt_is_implemented(CORRUPT_COUNT), 0);
}
END_TEST

START_TEST(test_bad_arguments)
{
    float a[P] = {0}, b[P];
    ck_assert_int_eq(corrupt_apply(-1, a, b, 1, R, C, 1),
                     CORRUPT_ERR_INVALID_ARG);
    ck_assert_int_eq(corrupt_apply(CORRUPT_COUNT, a, b, 1, R, C, 1),
                     CORRUPT_ERR_INVALID_ARG);
    ck_assert_int_eq(corrupt_apply(CORRUPT_ROTATE, NULL, b, 1, R, C, 1),
                     CORRUPT_ERR_INVALID_ARG);
    ck_assert_int_eq(corrupt_apply(CORRUPT_ROTATE, a, NULL, 1, R, C, 1),
                     CORRUPT_ERR_INVALID_ARG);
    ck_assert_int_eq(corrupt_apply(CORRUPT_ROTATE, a, b, -1, R, C, 1),
                     CORRUPT_ERR_INVALID_ARG);
    ck_assert_int_eq(corrupt_apply(CORRUPT_ROTATE, a, b, 1, 0, C, 1),
                     CORRUPT_ERR_INVALID_ARG);
    ck_assert_int_eq(corrupt_apply(CORRUPT_ROTATE, a, b, 1, R, -3, 1),
                     CORRUPT_ERR_INVALID_ARG);
    ck_assert_int_eq(corrupt_apply_ex(CORRUPT_ROTATE, a, b, 1, R, C, 1, -1),
                     CORRUPT_ERR_INVALID_ARG);
    ck_assert_int_eq(corrupt_apply_ex(CORRUPT_ROTATE, a, b, 2, R, C, 1,
                                      INT64_MAX),
                     CORRUPT_ERR_INVALID_ARG);
    /* n == 0 is a no-op, even with NULL buffers */
    ck_assert_int_eq(corrupt_apply(CORRUPT_ROTATE, NULL, NULL, 0, R, C, 1),
                     CORRUPT_OK);
}
END_TEST

START_TEST(test_every_kind_runs_or_is_unsupported)
{
    /* All kinds, on odd non-square sizes and on out-of-range input: no
     * crash (run under a sanitizer), outputs in [0, 1] except identity. */
    static const int32_t sizes[4][2] = {{28, 28}, {5, 7}, {1, 1}, {31, 2}};
    int k, s;
    for (k = 0; k < CORRUPT_COUNT; k++) {
        for (s = 0; s < 4; s++) {
            int32_t h = sizes[s][0], w = sizes[s][1];
            size_t n = (size_t)(3 * h * w), q;
            float *in = malloc(n * sizeof *in), *out = malloc(n * sizeof *out);
            int rc;
            ck_assert(in != NULL && out != NULL);
            fill_random(in, n, (uint32_t)(k * 10 + s));
            in[0] = -0.25f;
            in[n - 1] = 1.5f;
            rc = corrupt_apply(k, in, out, 3, h, w, 99);
            if (!corrupt_is_implemented(k)) {
                ck_assert_int_eq(rc, CORRUPT_ERR_UNSUPPORTED);
            } else {
                ck_assert_msg(rc == CORRUPT_OK, "%s: rc %d", corrupt_name(k),
                              rc);
                if (k != CORRUPT_IDENTITY)
                    for (q = 0; q < n; q++)
                        ck_assert_msg(out[q] >= 0.0f && out[q] <= 1.0f,
                                      "%s %dx%d: out[%zu] = %g",
                                      corrupt_name(k), h, w, q,
                                      (double)out[q]);
            }
            free(in);
            free(out);
        }
    }
}
END_TEST

/* ---- determinism -------------------------------------------------------- */

START_TEST(test_determinism_batching_in_place)
{
    enum { N = 16 };
    float *in = alloc_images(N), *a = alloc_images(N), *b = alloc_images(N);
    int k;
    fill_random(in, (size_t)N * P, 7);
    for (k = 0; k < CORRUPT_COUNT; k++) {
        if (!corrupt_is_implemented(k))
            continue;
        /* same seed: identical */
        ck_assert_int_eq(corrupt_apply(k, in, a, N, R, C, 42), CORRUPT_OK);
        ck_assert_int_eq(corrupt_apply(k, in, b, N, R, C, 42), CORRUPT_OK);
        ck_assert_mem_eq(a, b, (size_t)N * P * sizeof *a);
        /* in two batches with first_index: identical */
        ck_assert_int_eq(corrupt_apply_ex(k, in, b, 5, R, C, 42, 0),
                         CORRUPT_OK);
        ck_assert_int_eq(corrupt_apply_ex(k, in + 5 * P, b + 5 * P, N - 5, R,
                                          C, 42, 5),
                         CORRUPT_OK);
        ck_assert_mem_eq(a, b, (size_t)N * P * sizeof *a);
        /* in place: identical */
        memcpy(b, in, (size_t)N * P * sizeof *b);
        ck_assert_int_eq(corrupt_apply(k, b, b, N, R, C, 42), CORRUPT_OK);
        ck_assert_mem_eq(a, b, (size_t)N * P * sizeof *a);
        /* another seed: different, for the random kinds */
        ck_assert_int_eq(corrupt_apply(k, in, b, N, R, C, 43), CORRUPT_OK);
        if (k == CORRUPT_IDENTITY || k == CORRUPT_SCALE ||
            k == CORRUPT_BRIGHTNESS || k == CORRUPT_STRIPE ||
            k == CORRUPT_CANNY_EDGES)
            ck_assert_mem_eq(a, b, (size_t)N * P * sizeof *a);
        else
            ck_assert_msg(memcmp(a, b, (size_t)N * P * sizeof *a) != 0,
                          "%s ignores the seed", corrupt_name(k));
    }
    free(in);
    free(a);
    free(b);
}
END_TEST

START_TEST(test_streams_differ_between_kinds_and_images)
{
    /* Impulse noise on two identical images: the noise differs, so the
     * per-image streams are not shared. */
    float *in = alloc_images(2), *out = alloc_images(2);
    int k;
    for (k = 0; k < 2 * P; k++)
        in[k] = 0.5f;
    ck_assert_int_eq(corrupt_apply(CORRUPT_IMPULSE_NOISE, in, out, 2, R, C, 1),
                     CORRUPT_OK);
    ck_assert(memcmp(out, out + P, P * sizeof *out) != 0);
    free(in);
    free(out);
}
END_TEST

/* ---- each corruption ---------------------------------------------------- */

START_TEST(test_identity)
{
    float *in = alloc_images(3), *out = alloc_images(3);
    fill_random(in, 3 * P, 3);
    ck_assert_int_eq(corrupt_apply(CORRUPT_IDENTITY, in, out, 3, R, C, 5),
                     CORRUPT_OK);
    ck_assert_mem_eq(in, out, 3 * P * sizeof *in);
    free(in);
    free(out);
}
END_TEST

START_TEST(test_translate_moves_pixel_by_3)
{
    enum { N = 64 };
    float *in = alloc_images(N), *out = alloc_images(N);
    int seen[2][2] = {{0, 0}, {0, 0}};
    int i, k;
    for (i = 0; i < N; i++)
        in[i * P + 13 * C + 10] = 1.0f; /* row 13, column 10 */
    ck_assert_int_eq(corrupt_apply(CORRUPT_TRANSLATE, in, out, N, R, C, 11),
                     CORRUPT_OK);
    for (i = 0; i < N; i++) {
        int found = -1, n1 = 0;
        for (k = 0; k < P; k++) {
            if (out[i * P + k] == 1.0f) {
                found = k;
                n1++;
            } else {
                ck_assert_float_eq(out[i * P + k], 0.0f);
            }
        }
        ck_assert_int_eq(n1, 1);
        {
            int dr = found / C - 13, dc = found % C - 10;
            ck_assert(dr == 3 || dr == -3);
            ck_assert(dc == 3 || dc == -3);
            seen[dr > 0][dc > 0] = 1;
        }
    }
    /* all four directions occur over 64 seeds */
    ck_assert(seen[0][0] && seen[0][1] && seen[1][0] && seen[1][1]);
    free(in);
    free(out);
}
END_TEST

START_TEST(test_translate_zero_fills)
{
    float in[P], out[P];
    int i, j, zeros_r = 0, zeros_c = 0;
    for (i = 0; i < P; i++)
        in[i] = 1.0f;
    ck_assert_int_eq(corrupt_apply(CORRUPT_TRANSLATE, in, out, 1, R, C, 2),
                     CORRUPT_OK);
    /* exactly 3 rows and 3 columns are zero */
    for (i = 0; i < R; i++)
        zeros_r += out[i * C + 14] == 0.0f;
    for (j = 0; j < C; j++)
        zeros_c += out[14 * C + j] == 0.0f;
    ck_assert_int_eq(zeros_r, 3);
    ck_assert_int_eq(zeros_c, 3);
    ck_assert_float_eq_tol(total(out, P), 25.0 * 25.0, 1e-6);
}
END_TEST

START_TEST(test_stripe_inverts_exactly_those_columns)
{
    float in[P], out[P];
    int i, j;
    fill_random(in, P, 5);
    ck_assert_int_eq(corrupt_apply(CORRUPT_STRIPE, in, out, 1, R, C, 0),
                     CORRUPT_OK);
    for (i = 0; i < R; i++)
        for (j = 0; j < C; j++) {
            float want = (j <= 6 || j >= 21) ? 1.0f - in[i * C + j]
                                             : in[i * C + j];
            ck_assert_float_eq(out[i * C + j], want);
        }
}
END_TEST

START_TEST(test_brightness)
{
    float in[6] = {0.0f, 0.25f, 0.5f, 0.7f, 1.0f, -0.6f}, out[6];
    float want[6] = {0.5f, 0.75f, 1.0f, 1.0f, 1.0f, 0.0f};
    int k;
    ck_assert_int_eq(corrupt_apply(CORRUPT_BRIGHTNESS, in, out, 1, 2, 3, 0),
                     CORRUPT_OK);
    for (k = 0; k < 6; k++)
        ck_assert_float_eq(out[k], want[k]);
}
END_TEST

START_TEST(test_rotate_blob_keeps_mass_and_bar_turns_by_0_4)
{
    enum { N = 32 };
    float *in = alloc_images(N), *out = alloc_images(N);
    int i, j, pos = 0, neg = 0;
    double m0;
    blob(in);
    ck_assert_int_eq(corrupt_apply(CORRUPT_ROTATE, in, out, 1, R, C, 3),
                     CORRUPT_OK);
    m0 = total(in, P);
    ck_assert_msg(fabs(total(out, P) / m0 - 1.0) < 0.01, "mass %g -> %g", m0,
                  total(out, P));
    /* a rotation-symmetric blob stays nearly unchanged */
    for (i = 0; i < P; i++)
        ck_assert_float_eq_tol(out[i], in[i], 0.03f);

    /* a horizontal bar through the centre turns by +-0.4 rad */
    memset(in, 0, (size_t)N * P * sizeof *in);
    for (i = 0; i < N; i++)
        for (j = 4; j < 24; j++)
            in[i * P + 13 * C + j] = in[i * P + 14 * C + j] = 1.0f;
    ck_assert_float_eq_tol(orientation(in), 0.0, 1e-9);
    ck_assert_int_eq(corrupt_apply(CORRUPT_ROTATE, in, out, N, R, C, 3),
                     CORRUPT_OK);
    for (i = 0; i < N; i++) {
        double a = orientation(out + i * P);
        ck_assert_msg(fabs(fabs(a) - 0.4) < 0.02, "angle %g", a);
        pos += a > 0;
        neg += a < 0;
        ck_assert_msg(fabs(total(out + i * P, P) / 40.0 - 1.0) < 0.05,
                      "bar mass %g", total(out + i * P, P));
    }
    ck_assert(pos > 0 && neg > 0); /* the sign is drawn per image */
    free(in);
    free(out);
}
END_TEST

START_TEST(test_shear_tilts_vertical_bar)
{
    enum { N = 32 };
    float *in = alloc_images(N), *out = alloc_images(N);
    int i, y, j, pos = 0, neg = 0;
    const double sl = sin(0.4);
    for (i = 0; i < N; i++)
        for (y = 2; y < 26; y++)
            in[i * P + y * C + 13] = in[i * P + y * C + 14] = 1.0f;
    ck_assert_int_eq(corrupt_apply(CORRUPT_SHEAR, in, out, N, R, C, 8),
                     CORRUPT_OK);
    for (i = 0; i < N; i++) {
        double slope = 0.0;
        /* row-wise centroid: x(y) - 13.5 = +-sin(0.4) (y - 13.5) */
        for (y = 8; y <= 19; y++) {
            double m = 0.0, mx = 0.0, want;
            for (j = 0; j < C; j++) {
                m += out[i * P + y * C + j];
                mx += j * out[i * P + y * C + j];
            }
            ck_assert_msg(fabs(m - 2.0) < 1e-4, "row %d mass %g", y, m);
            if (y == 8)
                slope = (mx / m - 13.5) / (y - 13.5);
            want = 13.5 + (slope > 0 ? sl : -sl) * (y - 13.5);
            ck_assert_msg(fabs(mx / m - want) < 0.05, "row %d: %g vs %g", y,
                          mx / m, want);
        }
        pos += slope > 0;
        neg += slope < 0;
    }
    ck_assert(pos > 0 && neg > 0);

    /* the inverse map has determinant cos(0.4), so a blob's mass grows by
     * 1/cos(0.4) and its row variance by 1/cos^2(0.4) */
    blob(in);
    ck_assert_int_eq(corrupt_apply(CORRUPT_SHEAR, in, out, 1, R, C, 8),
                     CORRUPT_OK);
    {
        double m = 0.0, vy = 0.0, m0 = total(in, P);
        for (y = 0; y < R; y++)
            for (j = 0; j < C; j++) {
                m += out[y * C + j];
                vy += out[y * C + j] * (y - 13.5) * (y - 13.5);
            }
        ck_assert_msg(fabs(m / m0 * cos(0.4) - 1.0) < 0.01, "mass %g", m / m0);
        ck_assert_msg(fabs(vy / m * cos(0.4) * cos(0.4) / 9.0 - 1.0) < 0.03,
                      "row variance %g", vy / m);
    }
    free(in);
    free(out);
}
END_TEST

START_TEST(test_scale_shrinks_to_70_percent)
{
    float in[P] = {0}, out[P];
    int i, j, lo = C, hi = -1, rlo = R, rhi = -1;
    for (i = 4; i < 24; i++)
        for (j = 4; j < 24; j++)
            in[i * C + j] = 1.0f; /* 20 x 20 square, centred */
    ck_assert_int_eq(corrupt_apply(CORRUPT_SCALE, in, out, 1, R, C, 0),
                     CORRUPT_OK);
    for (i = 0; i < R; i++)
        for (j = 0; j < C; j++)
            if (out[i * C + j] > 0.5f) {
                if (j < lo) lo = j;
                if (j > hi) hi = j;
                if (i < rlo) rlo = i;
                if (i > rhi) rhi = i;
            }
    /* 20 px * 0.7 = 14 px, centred on 13.5 */
    ck_assert_int_eq(hi - lo + 1, 14);
    ck_assert_int_eq(rhi - rlo + 1, 14);
    ck_assert_int_eq(lo + hi, 27);
    ck_assert_int_eq(rlo + rhi, 27);
    ck_assert_msg(fabs(total(out, P) / 400.0 - 0.49) < 0.02, "mass ratio %g",
                  total(out, P) / 400.0);
    ck_assert_float_eq(out[0], 0.0f);
}
END_TEST

START_TEST(test_impulse_noise_rate)
{
    enum { N = 200 };
    float *in = alloc_images(N), *out = alloc_images(N);
    int64_t k, changed = 0, ones = 0;
    for (k = 0; k < (int64_t)N * P; k++)
        in[k] = 0.5f;
    ck_assert_int_eq(corrupt_apply(CORRUPT_IMPULSE_NOISE, in, out, N, R, C,
                                   2024),
                     CORRUPT_OK);
    for (k = 0; k < (int64_t)N * P; k++) {
        if (out[k] != 0.5f) {
            ck_assert(out[k] == 0.0f || out[k] == 1.0f);
            changed++;
            ones += out[k] == 1.0f;
        }
    }
    /* 156800 pixels: sd of the rate is 0.001 */
    ck_assert_msg(fabs((double)changed / (N * P) - 0.17) < 0.005, "rate %g",
                  (double)changed / (N * P));
    ck_assert_msg(fabs((double)ones / (double)changed - 0.5) < 0.01,
                  "salt share %g", (double)ones / (double)changed);
    free(in);
    free(out);
}
END_TEST

/* E[min(N, 3) / 3] and E[(min(N, 3) / 3)^2] for N ~ Poisson(lambda). */
static void clipped_poisson_moments(double lambda, double *m1, double *m2)
{
    double p = exp(-lambda), cum = 0.0;
    int k;
    *m1 = *m2 = 0.0;
    for (k = 0; k < 3; k++) {
        *m1 += p * k / 3.0;
        *m2 += p * (k / 3.0) * (k / 3.0);
        cum += p;
        p *= lambda / (k + 1);
    }
    *m1 += 1.0 - cum;
    *m2 += 1.0 - cum;
}

START_TEST(test_shot_noise_mean)
{
    enum { N = 100 };
    static const float xs[4] = {0.0f, 0.1f, 0.4f, 1.0f};
    float *in = alloc_images(N), *out = alloc_images(N);
    int t;
    for (t = 0; t < 4; t++) {
        int64_t k;
        double s1 = 0.0, s2 = 0.0, m1, m2, n = (double)N * P, sd;
        for (k = 0; k < (int64_t)N * P; k++)
            in[k] = xs[t];
        ck_assert_int_eq(corrupt_apply(CORRUPT_SHOT_NOISE, in, out, N, R, C,
                                       (uint64_t)t + 1),
                         CORRUPT_OK);
        for (k = 0; k < (int64_t)N * P; k++) {
            double v = out[k], q = v * 3.0;
            /* values are k/3 */
            ck_assert_msg(fabs(q - floor(q + 0.5)) < 1e-6, "value %g", v);
            s1 += v;
            s2 += v * v;
        }
        clipped_poisson_moments(3.0 * xs[t], &m1, &m2);
        sd = sqrt((m2 - m1 * m1) / n);
        ck_assert_msg(fabs(s1 / n - m1) <= 5.0 * sd + 1e-12,
                      "x=%g: mean %g, expected %g (sd %g)", (double)xs[t],
                      s1 / n, m1, sd);
        ck_assert_msg(fabs(s2 / n - m2) < 0.01, "x=%g: E[v^2] %g vs %g",
                      (double)xs[t], s2 / n, m2);
        /* without clipping the mean is x; for small x that is nearly it */
        if (xs[t] <= 0.1f)
            ck_assert_msg(fabs(s1 / n - xs[t]) < 0.005, "mean %g vs x %g",
                          s1 / n, (double)xs[t]);
    }
    free(in);
    free(out);
}
END_TEST


/* ---- the filter-based seven --------------------------------------------- */

static float *square_image(int64_t n, int lo, int hi, float v)
{
    float *x = alloc_images(n);
    int64_t i;
    int y, c;
    for (i = 0; i < n; i++)
        for (y = lo; y <= hi; y++)
            for (c = lo; c <= hi; c++)
                x[i * P + y * C + c] = v;
    return x;
}

START_TEST(test_canny_square_outline)
{
    float *in = square_image(1, 8, 19, 1.0f), *out = alloc_images(1);
    int y, c, edges = 0;
    ck_assert_int_eq(corrupt_apply(CORRUPT_CANNY_EDGES, in, out, 1, R, C, 0),
                     CORRUPT_OK);
    for (y = 0; y < R; y++)
        for (c = 0; c < C; c++) {
            float v = out[y * C + c];
            /* distance (Chebyshev) to the square's boundary band 7.5..19.5 */
            int inside = y >= 8 && y <= 19 && c >= 8 && c <= 19;
            int dy = y < 8 ? 8 - y : (y > 19 ? y - 19 : 0);
            int dc = c < 8 ? 8 - c : (c > 19 ? c - 19 : 0);
            int dout = dy > dc ? dy : dc;
            int din = inside ? 1 + ((y - 8 < 19 - y ? y - 8 : 19 - y) <
                                            (c - 8 < 19 - c ? c - 8 : 19 - c)
                                        ? (y - 8 < 19 - y ? y - 8 : 19 - y)
                                        : (c - 8 < 19 - c ? c - 8 : 19 - c))
                             : 0;
            ck_assert(v == 0.0f || v == 1.0f);
            if (v == 1.0f) {
                edges++;
                ck_assert_msg(dout <= 1 && din <= 2, "edge at %d,%d", y, c);
            }
        }
    /* a closed outline of a 12 x 12 square: about 4 * 12 pixels */
    ck_assert_msg(edges >= 40 && edges <= 60, "%d edge pixels", edges);
    /* a blank image has no edges */
    memset(in, 0, P * sizeof *in);
    ck_assert_int_eq(corrupt_apply(CORRUPT_CANNY_EDGES, in, out, 1, R, C, 0),
                     CORRUPT_OK);
    ck_assert_float_eq(total(out, P), 0.0);
    free(in);
    free(out);
}
END_TEST

START_TEST(test_motion_blur_kernel)
{
    enum { N = 16 };
    float *in = alloc_images(N), *out = alloc_images(N);
    int64_t i, k;
    /* a constant image stays constant: normalised kernel, edges repeated */
    for (k = 0; k < (int64_t)N * P; k++)
        in[k] = 0.5f;
    ck_assert_int_eq(corrupt_apply(CORRUPT_MOTION_BLUR, in, out, N, R, C, 4),
                     CORRUPT_OK);
    for (k = 0; k < (int64_t)N * P; k++)
        ck_assert_float_eq_tol(out[k], 0.5f, 1e-6f);
    /* a single pixel spreads one-sidedly, within 45 degrees of -x, and
     * keeps its mass */
    memset(in, 0, (size_t)N * P * sizeof *in);
    for (i = 0; i < N; i++)
        in[i * P + 14 * C + 24] = 1.0f;
    ck_assert_int_eq(corrupt_apply(CORRUPT_MOTION_BLUR, in, out, N, R, C, 4),
                     CORRUPT_OK);
    for (i = 0; i < N; i++) {
        int y, c, spread = 0;
        ck_assert_float_eq_tol(total(out + i * P, P), 1.0, 1e-5);
        for (y = 0; y < R; y++)
            for (c = 0; c < C; c++)
                if (out[i * P + y * C + c] > 0.0f) {
                    int dx = c - 24, dy = y - 14;
                    ck_assert(dx <= 0);
                    ck_assert(abs(dy) <= -dx + 1);
                    spread += dx < -3;
                }
        ck_assert(spread > 0);
    }
    free(in);
    free(out);
}
END_TEST

START_TEST(test_glass_blur)
{
    enum { N = 8 };
    float *in = alloc_images(N), *out = alloc_images(N);
    int64_t i;
    ck_assert_int_eq(corrupt_apply(CORRUPT_GLASS_BLUR, in, out, N, R, C, 5),
                     CORRUPT_OK);
    ck_assert_float_eq(total(out, (size_t)N * P), 0.0);
    for (i = 0; i < N; i++)
        blob(in + i * P);
    ck_assert_int_eq(corrupt_apply(CORRUPT_GLASS_BLUR, in, out, N, R, C, 5),
                     CORRUPT_OK);
    for (i = 0; i < N; i++) {
        double m0 = total(in + i * P, P), m1 = total(out + i * P, P);
        /* swaps move mass, blurs keep it; truncation to bytes loses
         * at most 1/255 per pixel */
        ck_assert_msg(m1 <= m0 + 1e-6 && m1 >= m0 - P / 255.0, "%g -> %g", m0,
                      m1);
        ck_assert(memcmp(in + i * P, out + i * P, P * sizeof *in) != 0);
    }
    /* a horizontal line at row 13: the blurs reach 3 rows (radius of
     * sigma 0.7) and bytes drop the outer one; a swap moves a pixel one row
     * down per sweep (up, chains of swaps can carry it further), so
     * nothing reaches below row 13 + 2 + 2 + 3 */
    memset(in, 0, (size_t)N * P * sizeof *in);
    {
        int c, y;
        for (c = 0; c < C; c++)
            in[13 * C + c] = 1.0f;
        ck_assert_int_eq(corrupt_apply(CORRUPT_GLASS_BLUR, in, out, 1, R, C,
                                       5),
                         CORRUPT_OK);
        for (y = 0; y < R; y++)
            for (c = 0; c < C; c++)
                if (y > 20)
                    ck_assert_float_eq(out[y * C + c], 0.0f);
    }
    free(in);
    free(out);
}
END_TEST

START_TEST(test_fog)
{
    enum { N = 4 };
    float *in = alloc_images(N), *out = alloc_images(N);
    int64_t k;
    double s = 0.0, s2 = 0.0;
    /* blank image: max is 0, so the fog is scaled away */
    ck_assert_int_eq(corrupt_apply(CORRUPT_FOG, in, out, N, R, C, 6),
                     CORRUPT_OK);
    ck_assert_float_eq(total(out, (size_t)N * P), 0.0);
    /* white image: (1 + 3 p) / 4 with p in [0, 1], p not constant */
    for (k = 0; k < (int64_t)N * P; k++)
        in[k] = 1.0f;
    ck_assert_int_eq(corrupt_apply(CORRUPT_FOG, in, out, N, R, C, 6),
                     CORRUPT_OK);
    for (k = 0; k < (int64_t)N * P; k++) {
        ck_assert(out[k] >= 0.25f - 1e-6f && out[k] <= 1.0f);
        s += out[k];
        s2 += (double)out[k] * out[k];
    }
    s /= N * P;
    ck_assert_msg(sqrt(s2 / (N * P) - s * s) > 0.01, "fog is flat");
    ck_assert(memcmp(out, out + P, P * sizeof *out) != 0);
    free(in);
    free(out);
}
END_TEST

START_TEST(test_spatter)
{
    enum { N = 50 };
    float *in = alloc_images(N), *out = alloc_images(N);
    int64_t k, hit = 0;
    const float lo = 0.8f * 63.0f / 255.0f - 1e-6f, hi = 63.0f / 255.0f + 1e-6f;
    ck_assert_int_eq(corrupt_apply(CORRUPT_SPATTER, in, out, N, R, C, 7),
                     CORRUPT_OK);
    for (k = 0; k < (int64_t)N * P; k++) {
        /* black image: mud is 63/255 * m with m in [0.8, 1] */
        ck_assert(out[k] == 0.0f || (out[k] >= lo && out[k] <= hi));
        hit += out[k] > 0.0f;
    }
    ck_assert_msg(hit > 0 && hit < (int64_t)N * P / 2, "%lld spattered",
                  (long long)hit);
    for (k = 0; k < (int64_t)N * P; k++)
        in[k] = 1.0f;
    ck_assert_int_eq(corrupt_apply(CORRUPT_SPATTER, in, out, N, R, C, 7),
                     CORRUPT_OK);
    for (k = 0; k < (int64_t)N * P; k++)
        ck_assert(out[k] == 1.0f ||
                  (out[k] >= 63.0f / 255.0f - 1e-6f && out[k] <= 1.0f - 0.8f +
                                                      0.8f * 63.0f / 255.0f +
                                                      1e-6f));
    free(in);
    free(out);
}
END_TEST

START_TEST(test_dotted_line)
{
    enum { N = 16 };
    float *in = alloc_images(N), *out = alloc_images(N);
    int64_t i;
    ck_assert_int_eq(corrupt_apply(CORRUPT_DOTTED_LINE, in, out, N, R, C, 9),
                     CORRUPT_OK);
    for (i = 0; i < N; i++) {
        int y, c;
        for (c = 0; c < C; c++) {
            float colmax = 0.0f;
            for (y = 0; y < R; y++)
                if (out[i * P + y * C + c] > colmax)
                    colmax = out[i * P + y * C + c];
            if ((c & 3) < 2 || c == 27)
                ck_assert_float_eq(colmax, 0.0f); /* the gaps */
            else
                ck_assert_msg(colmax > 0.5f, "image %lld column %d empty",
                              (long long)i, c);
        }
    }
    free(in);
    free(out);
}
END_TEST

START_TEST(test_zigzag)
{
    enum { N = 16 };
    float *in = alloc_images(N), *out = alloc_images(N);
    int64_t i;
    int best = 0;
    ck_assert_int_eq(corrupt_apply(CORRUPT_ZIGZAG, in, out, N, R, C, 10),
                     CORRUPT_OK);
    for (i = 0; i < N; i++) {
        int y, c, cols_hit = 0;
        for (c = 0; c < C; c++) {
            float colmax = 0.0f;
            for (y = 0; y < R; y++)
                if (out[i * P + y * C + c] > colmax)
                    colmax = out[i * P + y * C + c];
            if (c < 2 || c > 25)
                ck_assert_float_eq(colmax, 0.0f);
            cols_hit += colmax > 0.5f;
        }
        /* a stroke over columns 2..25; near the top or bottom row part
         * of it may leave the image */
        ck_assert_msg(cols_hit >= 4, "image %lld: %d columns", (long long)i,
                      cols_hit);
        if (cols_hit > best)
            best = cols_hit;
    }
    ck_assert_int_ge(best, 22);
    free(in);
    free(out);
}
END_TEST

static Suite *corrupt_suite(void)
{
    Suite *s = suite_create("corrupt");
    TCase *api = tcase_create("api");
    TCase *each = tcase_create("each");

    tcase_add_test(api, test_names);
    tcase_add_test(api, test_bad_arguments);
    tcase_add_test(api, test_every_kind_runs_or_is_unsupported);
    tcase_add_test(api, test_determinism_batching_in_place);
    tcase_add_test(api, test_streams_differ_between_kinds_and_images);
    suite_add_tcase(s, api);

    tcase_set_timeout(each, 60);
    tcase_add_test(each, test_identity);
    tcase_add_test(each, test_translate_moves_pixel_by_3);
    tcase_add_test(each, test_translate_zero_fills);
    tcase_add_test(each, test_stripe_inverts_exactly_those_columns);
    tcase_add_test(each, test_brightness);
    tcase_add_test(each, test_rotate_blob_keeps_mass_and_bar_turns_by_0_4);
    tcase_add_test(each, test_shear_tilts_vertical_bar);
    tcase_add_test(each, test_scale_shrinks_to_70_percent);
    tcase_add_test(each, test_impulse_noise_rate);
    tcase_add_test(each, test_shot_noise_mean);
    tcase_add_test(each, test_canny_square_outline);
    tcase_add_test(each, test_motion_blur_kernel);
    tcase_add_test(each, test_glass_blur);
    tcase_add_test(each, test_fog);
    tcase_add_test(each, test_spatter);
    tcase_add_test(each, test_dotted_line);
    tcase_add_test(each, test_zigzag);
    suite_add_tcase(s, each);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(corrupt_suite());
    int failed;
    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
