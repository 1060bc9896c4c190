/*
 * corrupt.c - MNIST-C-style corruptions; see corrupt.h for the definitions.
 *
 * SPDX-License-Identifier: MIT
 */
#include "corrupt.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static const char *const names[CORRUPT_COUNT] = {
    "identity", "shot_noise", "impulse_noise", "glass_blur", "motion_blur",
    "shear", "scale", "rotate", "brightness", "translate", "stripe", "fog",
    "spatter", "dotted_line", "zigzag", "canny_edges",
};

const char *corrupt_name(int which)
{
    if (which < 0 || which >= CORRUPT_COUNT)
        return NULL;
    return names[which];
}

int corrupt_from_name(const char *name)
{
    int k;
    if (name == NULL)
        return CORRUPT_ERR_INVALID_ARG;
    for (k = 0; k < CORRUPT_COUNT; k++)
        if (strcmp(name, names[k]) == 0)
            return k;
    return CORRUPT_ERR_INVALID_ARG;
}

int corrupt_is_implemented(int which)
{
    return which >= 0 && which < CORRUPT_COUNT;
}

/* ---- random numbers: splitmix64 seeds xoshiro256** ----------------------- */

typedef struct rng {
    uint64_t s[4];
} rng;

static uint64_t splitmix64(uint64_t *x)
{
    uint64_t z = (*x += UINT64_C(0x9E3779B97F4A7C15));
    z = (z ^ (z >> 30)) * UINT64_C(0xBF58476D1CE4E5B9);
    z = (z ^ (z >> 27)) * UINT64_C(0x94D049BB133111EB);
    return z ^ (z >> 31);
}

static uint64_t rotl(uint64_t x, int k)
{
    return (x << k) | (x >> (64 - k));
}

static uint64_t rng_next(rng *r)
{
    uint64_t *s = r->s;
    const uint64_t result = rotl(s[1] * 5, 7) * 9;
    const uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return result;
}

/* The stream of image `index` for corruption `which` under `seed`. */
static void rng_init(rng *r, uint64_t seed, int which, uint64_t index)
{
    uint64_t x = seed, k;
    int i;
    k = splitmix64(&x);
    x = k ^ ((uint64_t)(which + 1) * UINT64_C(0xD1B54A32D192ED03));
    k = splitmix64(&x);
    x = k ^ (index * UINT64_C(0x8CB92BA72F3D8DD7));
    for (i = 0; i < 4; i++)
        r->s[i] = splitmix64(&x);
}

/* Uniform in [0, 1) with 53 random bits. */
static double rng_uniform(rng *r)
{
    return (double)(rng_next(r) >> 11) * (1.0 / 9007199254740992.0);
}

static int rng_sign(rng *r)
{
    return (rng_next(r) >> 63) ? 1 : -1;
}

/* Standard normal by Box-Muller (one value per call; simple, not fast). */
static double rng_normal(rng *r)
{
    double u1 = 1.0 - rng_uniform(r); /* (0, 1] */
    double u2 = rng_uniform(r);
    return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}

/* Uniform integer in [lo, hi), like numpy's randint(lo, hi); hi > lo. */
static int64_t rng_int(rng *r, int64_t lo, int64_t hi)
{
    return lo + (int64_t)(rng_uniform(r) * (double)(hi - lo));
}

/* Poisson(lambda) by Knuth's product of uniforms; fine for the small means
 * used here. lambda is capped at 64: above that P(k < 3) < 1e-23, and the
 * caller clips k/3 to 1, so the cap changes no output in practice. */
static int rng_poisson(rng *r, double lambda)
{
    double L, p = 1.0;
    int k = 0;
    if (!(lambda > 0.0))
        return 0;
    if (lambda > 64.0)
        lambda = 64.0;
    L = exp(-lambda);
    do {
        k++;
        p *= rng_uniform(r);
    } while (p > L);
    return k - 1;
}

/* ---- helpers ------------------------------------------------------------ */

static float clip01(float v)
{
    if (!(v > 0.0f)) /* also NaN */
        return 0.0f;
    return v < 1.0f ? v : 1.0f;
}

/* Bilinear sample of img at (x = column, y = row), zero outside: like
 * skimage's warp with order=1, mode='constant', cval=0. */
static double sample(const float *img, int32_t rows, int32_t cols, double x,
                     double y)
{
    double fx, fy, v = 0.0;
    int x0, y0, dy, dx;
    if (!(x > -1.0 && x < (double)cols && y > -1.0 && y < (double)rows))
        return 0.0;
    x0 = (int)floor(x);
    y0 = (int)floor(y);
    fx = x - x0;
    fy = y - y0;
    for (dy = 0; dy <= 1; dy++) {
        int yy = y0 + dy;
        double wy = dy ? fy : 1.0 - fy;
        if (yy < 0 || yy >= rows || wy == 0.0)
            continue;
        for (dx = 0; dx <= 1; dx++) {
            int xx = x0 + dx;
            double wx = dx ? fx : 1.0 - fx;
            if (xx < 0 || xx >= cols || wx == 0.0)
                continue;
            v += wy * wx * img[(size_t)yy * (size_t)cols + (size_t)xx];
        }
    }
    return v;
}

/* out(p) = in(A (p - c) + c), A = [[a11, a12], [a21, a22]] on (x, y). */
static void warp_affine(const float *in, float *out, int32_t rows,
                        int32_t cols, double a11, double a12, double a21,
                        double a22)
{
    const double cx = (cols - 1) / 2.0, cy = (rows - 1) / 2.0;
    int32_t i, j;
    for (i = 0; i < rows; i++) {
        for (j = 0; j < cols; j++) {
            double px = j - cx, py = i - cy;
            double sx = a11 * px + a12 * py + cx;
            double sy = a21 * px + a22 * py + cy;
            out[(size_t)i * (size_t)cols + (size_t)j] =
                clip01((float)sample(in, rows, cols, sx, sy));
        }
    }
}

/* ---- scratch memory for the filters ------------------------------------- */

typedef struct work {
    double *a, *b, *c, *d; /* npix each */
    int32_t *queue;        /* npix */
    uint8_t *flag;         /* npix */
    double *map;           /* fog: plasma fractal, msize x msize */
    int32_t msize;
} work;

/* Size of the plasma map: 256 as in MNIST-C, larger for larger images. */
static int32_t plasma_size(int32_t rows, int32_t cols)
{
    int32_t m = 256;
    while (m < rows || m < cols)
        m *= 2;
    return m;
}

static void work_free(work *w)
{
    free(w->a);
    free(w->b);
    free(w->c);
    free(w->d);
    free(w->queue);
    free(w->flag);
    free(w->map);
    memset(w, 0, sizeof *w);
}

static int work_alloc(work *w, int which, int32_t rows, int32_t cols)
{
    const size_t npix = (size_t)rows * (size_t)cols;
    memset(w, 0, sizeof *w);
    w->a = malloc(npix * sizeof *w->a);
    w->b = malloc(npix * sizeof *w->b);
    w->c = malloc(npix * sizeof *w->c);
    w->d = malloc(npix * sizeof *w->d);
    w->queue = malloc(npix * sizeof *w->queue);
    w->flag = malloc(npix);
    if (which == CORRUPT_FOG) {
        int32_t m = plasma_size(rows, cols);
        if ((uint64_t)m * (uint64_t)m > SIZE_MAX / sizeof(double)) {
            work_free(w);
            return CORRUPT_ERR_INVALID_ARG;
        }
        w->msize = m;
        w->map = malloc((size_t)m * (size_t)m * sizeof *w->map);
        if (w->map == NULL) {
            work_free(w);
            return CORRUPT_ERR_NOMEM;
        }
    }
    if (!w->a || !w->b || !w->c || !w->d || !w->queue || !w->flag) {
        work_free(w);
        return CORRUPT_ERR_NOMEM;
    }
    return CORRUPT_OK;
}

/* ---- filters as scipy.ndimage applies them ------------------------------ */

enum edge_mode {
    EDGE_NEAREST, /* scipy 'nearest': a a a | a b c | c c c             */
    EDGE_ZERO,    /* scipy 'constant' with cval 0                       */
    EDGE_REFLECT  /* scipy 'reflect': b a | a b c | c b (edge repeated)  */
};

/* Index i mapped into [0, n) for the mode, or -1 for a zero. */
static int64_t edge_index(int64_t i, int64_t n, enum edge_mode mode)
{
    if (i >= 0 && i < n)
        return i;
    if (mode == EDGE_ZERO)
        return -1;
    if (mode == EDGE_NEAREST)
        return i < 0 ? 0 : n - 1;
    /* reflect, period 2n */
    i %= 2 * n;
    if (i < 0)
        i += 2 * n;
    return i < n ? i : 2 * n - 1 - i;
}

/* 1-D correlation of a rows x cols image along `axis` (0: down the rows,
 * 1: along a row) with weights k[0..2r], centred. out != in. */
static void correlate1d(const double *in, double *out, int32_t rows,
                        int32_t cols, int axis, const double *k, int32_t r,
                        enum edge_mode mode)
{
    int32_t i, j, t;
    for (i = 0; i < rows; i++)
        for (j = 0; j < cols; j++) {
            double s = 0.0;
            for (t = -r; t <= r; t++) {
                int64_t ii = i, jj = j;
                if (axis == 0)
                    ii = edge_index((int64_t)i + t, rows, mode);
                else
                    jj = edge_index((int64_t)j + t, cols, mode);
                if (ii < 0 || jj < 0)
                    continue;
                s += k[t + r] * in[ii * cols + jj];
            }
            out[(size_t)i * (size_t)cols + (size_t)j] = s;
        }
}

#define GAUSS_MAX_RADIUS 16

/* scipy.ndimage.gaussian_filter1d kernel, truncate = 4: radius
 * int(4 sigma + 0.5). Returns the radius; k has 2 * radius + 1 weights. */
static int32_t gauss_kernel(double sigma, double *k)
{
    int32_t r = (int32_t)(4.0 * sigma + 0.5), t;
    double sum = 0.0;
    if (r > GAUSS_MAX_RADIUS)
        r = GAUSS_MAX_RADIUS;
    for (t = -r; t <= r; t++) {
        k[t + r] = exp(-0.5 * (double)t * t / (sigma * sigma));
        sum += k[t + r];
    }
    for (t = 0; t <= 2 * r; t++)
        k[t] /= sum;
    return r;
}

/* Gaussian filter of img in place (tmp: npix scratch). sigma_rows blurs
 * along axis 0 (down the columns), sigma_cols along axis 1; 0 skips the
 * axis, as skimage.filters.gaussian / scipy gaussian_filter do. */
static void gaussian(double *img, double *tmp, int32_t rows, int32_t cols,
                     double sigma_rows, double sigma_cols, enum edge_mode mode)
{
    double k[2 * GAUSS_MAX_RADIUS + 1];
    const size_t npix = (size_t)rows * (size_t)cols;
    int32_t r;
    if (sigma_rows > 0.0) {
        r = gauss_kernel(sigma_rows, k);
        correlate1d(img, tmp, rows, cols, 0, k, r, mode);
        memcpy(img, tmp, npix * sizeof *img);
    }
    if (sigma_cols > 0.0) {
        r = gauss_kernel(sigma_cols, k);
        correlate1d(img, tmp, rows, cols, 1, k, r, mode);
        memcpy(img, tmp, npix * sizeof *img);
    }
}

/* ---- the filter-based corruptions --------------------------------------- */

/* glass_blur, MNIST-C severity 1: sigma 0.7, max_delta 1, 2 iterations.
 * MNIST-C calls skimage's gaussian(..., multichannel=True) on a 2-D image,
 * which treats the columns as channels: the blur runs down the columns
 * only (axis 0). That quirk is kept so the data match the published set.
 * Between the blurs the image is truncated to bytes (np.uint8(x * 255)),
 * and pixels are swapped with a neighbour at offsets randint(-1, 1), i.e.
 * -1 or 0 in each axis, each with probability 1/2, sweeping h and w from
 * size-1 down to 2. */
static void glass_blur(const float *in, float *out, int32_t rows, int32_t cols,
                       rng *r, work *w)
{
    const size_t npix = (size_t)rows * (size_t)cols;
    const double sigma = 0.7;
    const int64_t delta = 1;
    size_t q;
    int it;
    for (q = 0; q < npix; q++)
        w->a[q] = (double)clip01(in[q]);
    gaussian(w->a, w->b, rows, cols, sigma, 0.0, EDGE_NEAREST);
    for (q = 0; q < npix; q++)
        w->a[q] = floor(w->a[q] * 255.0); /* np.uint8 truncates */
    for (it = 0; it < 2; it++) {
        int64_t h, x;
        for (h = rows - delta; h > delta; h--)
            for (x = cols - delta; x > delta; x--) {
                if (rng_next(r) >> 63) {
                    int64_t dx = rng_int(r, -delta, delta);
                    int64_t dy = rng_int(r, -delta, delta);
                    size_t p1 = (size_t)(h * cols + x);
                    size_t p2 = (size_t)((h + dy) * cols + (x + dx));
                    double t = w->a[p1];
                    w->a[p1] = w->a[p2];
                    w->a[p2] = t;
                }
            }
    }
    for (q = 0; q < npix; q++)
        w->a[q] /= 255.0;
    gaussian(w->a, w->b, rows, cols, sigma, 0.0, EDGE_NEAREST);
    for (q = 0; q < npix; q++)
        out[q] = clip01((float)w->a[q]);
}

/* motion_blur, MNIST-C severity 1: ImageMagick's MotionBlurImage with
 * radius 10, sigma 3 and an angle uniform in (-45, 45) degrees. The kernel
 * is one-sided: weights exp(-i^2 / 18), i = 0..20, normalised, at offsets
 * (round(i cos a), round(i sin a)) (x right, y down); pixels beyond the
 * border repeat the edge (ImageMagick's default virtual pixels). MNIST-C's
 * round trip through an 8-bit PNG is not reproduced (no quantisation). */
static void motion_blur(const float *in, float *out, int32_t rows,
                        int32_t cols, rng *r)
{
    enum { WIDTH = 21 };
    const double sigma = 3.0;
    double kern[WIDTH], norm = 0.0;
    int64_t ox[WIDTH], oy[WIDTH];
    double ang = (-45.0 + 90.0 * rng_uniform(r)) * 3.14159265358979323846 /
                 180.0;
    int i;
    int32_t y, x;
    for (i = 0; i < WIDTH; i++) {
        kern[i] = exp(-(double)(i * i) / (2.0 * sigma * sigma));
        norm += kern[i];
        ox[i] = (int64_t)ceil(i * cos(ang) - 0.5);
        oy[i] = (int64_t)ceil(i * sin(ang) - 0.5);
    }
    for (y = 0; y < rows; y++)
        for (x = 0; x < cols; x++) {
            double s = 0.0;
            for (i = 0; i < WIDTH; i++) {
                int64_t yy = edge_index(y + oy[i], rows, EDGE_NEAREST);
                int64_t xx = edge_index(x + ox[i], cols, EDGE_NEAREST);
                s += kern[i] * (double)clip01(in[yy * cols + xx]);
            }
            out[(size_t)y * (size_t)cols + (size_t)x] = clip01((float)(s / norm));
        }
}

/* np.roll-style index: i wrapped into [0, n). */
static int64_t wrap(int64_t i, int64_t n)
{
    i %= n;
    return i < 0 ? i + n : i;
}

/* MNIST-C's plasma_fractal (diamond-square, wibble 100, decay `decay`),
 * mapsize m, normalised to [0, 1]; map is m x m. */
static void plasma_fractal(double *map, int32_t m, double decay, rng *r)
{
    int64_t step = m, i, j;
    double wibble = 100.0, lo, hi;
    size_t q, nq = (size_t)m * (size_t)m;
#define AT(y, x) map[(size_t)(y) * (size_t)m + (size_t)(x)]
#define WIBBLED(v) ((v) / 4.0 + wibble * (-wibble + 2.0 * wibble * rng_uniform(r)))
    AT(0, 0) = 0.0;
    while (step >= 2) {
        const int64_t half = step / 2, g = m / step; /* grid is g x g */
        /* squares: centre = mean of the 4 corners (wrapping) + wibble */
        for (i = 0; i < g; i++)
            for (j = 0; j < g; j++) {
                int64_t i1 = wrap(i + 1, g), j1 = wrap(j + 1, g);
                double s = AT(i * step, j * step) + AT(i1 * step, j * step) +
                           AT(i * step, j1 * step) + AT(i1 * step, j1 * step);
                AT(i * step + half, j * step + half) = WIBBLED(s);
            }
        /* diamonds */
        for (i = 0; i < g; i++)
            for (j = 0; j < g; j++) {
                /* top edge midpoint (row i*step, col j*step + half) */
                double s = AT(i * step + half, j * step + half) +
                           AT(wrap(i - 1, g) * step + half, j * step + half) +
                           AT(i * step, j * step) +
                           AT(i * step, wrap(j + 1, g) * step);
                AT(i * step, j * step + half) = WIBBLED(s);
            }
        for (i = 0; i < g; i++)
            for (j = 0; j < g; j++) {
                /* left edge midpoint (row i*step + half, col j*step) */
                double s = AT(i * step + half, j * step + half) +
                           AT(i * step + half, wrap(j - 1, g) * step + half) +
                           AT(i * step, j * step) +
                           AT(wrap(i + 1, g) * step, j * step);
                AT(i * step + half, j * step) = WIBBLED(s);
            }
        step /= 2;
        wibble /= decay;
    }
#undef WIBBLED
#undef AT
    lo = hi = map[0];
    for (q = 1; q < nq; q++) {
        if (map[q] < lo) lo = map[q];
        if (map[q] > hi) hi = map[q];
    }
    for (q = 0; q < nq; q++)
        map[q] -= lo;
    hi -= lo;
    for (q = 0; q < nq; q++)
        map[q] = hi > 0.0 ? map[q] / hi : 0.0;
}

/* fog, MNIST-C severity 5: x + 3 * plasma (decay 1.4, top-left rows x cols
 * of the map), then clip(x * max / (max + 3)), max = the input's maximum. */
static void fog(const float *in, float *out, int32_t rows, int32_t cols,
                rng *r, work *w)
{
    const double c0 = 3.0, decay = 1.4;
    const size_t npix = (size_t)rows * (size_t)cols;
    double mx = 0.0;
    size_t q;
    int32_t y, x;
    plasma_fractal(w->map, w->msize, decay, r);
    for (q = 0; q < npix; q++)
        if ((double)clip01(in[q]) > mx)
            mx = (double)clip01(in[q]);
    for (y = 0; y < rows; y++)
        for (x = 0; x < cols; x++) {
            size_t p = (size_t)y * (size_t)cols + (size_t)x;
            double v = (double)clip01(in[p]) +
                       c0 * w->map[(size_t)y * (size_t)w->msize + (size_t)x];
            out[p] = clip01((float)(v * mx / (mx + c0)));
        }
}

/* spatter, MNIST-C severity 4 (mud): liquid = N(0.65, 0.3^2) per pixel,
 * blurred (sigma 1); m = [liquid > 0.65] blurred (sigma 1.5), set to 0
 * where < 0.8; out = clip(x (1 - m) + 63/255 m). */
static void spatter(const float *in, float *out, int32_t rows, int32_t cols,
                    rng *r, work *w)
{
    const size_t npix = (size_t)rows * (size_t)cols;
    size_t q;
    for (q = 0; q < npix; q++)
        w->a[q] = 0.65 + 0.3 * rng_normal(r);
    gaussian(w->a, w->b, rows, cols, 1.0, 1.0, EDGE_NEAREST);
    for (q = 0; q < npix; q++) /* liquid < 0.65 -> 0, then m = liquid > 0.65 */
        w->c[q] = w->a[q] > 0.65 ? 1.0 : 0.0;
    gaussian(w->c, w->b, rows, cols, 1.5, 1.5, EDGE_NEAREST);
    for (q = 0; q < npix; q++) {
        double m = w->c[q] < 0.8 ? 0.0 : w->c[q];
        out[q] = clip01((float)((double)clip01(in[q]) * (1.0 - m) +
                                63.0 / 255.0 * m));
    }
}

/* MNIST-C's line_from_points: a soft line through (c0, r0)-(c1, r1),
 * value clip(log(1 - d / 2.3) + 1) at vertical distance d, zero left of
 * column floor(c0) and from column ceil(c1) on. Adds it into acc. */
static void add_line(double *acc, int32_t rows, int32_t cols, double c0,
                     double r0, double c1, double r1)
{
    double m, lo, hi;
    int32_t y, x;
    if (c1 == c0)
        return;
    m = (r1 - r0) / (c1 - c0);
    lo = floor(c0);
    hi = ceil(c1);
    for (y = 0; y < rows; y++)
        for (x = 0; x < cols; x++) {
            double d, v;
            if (x < lo || x >= hi)
                continue;
            d = fabs(y - (m * (x - c0) + r0));
            if (d > 2.3 - 1e-10)
                d = 2.3 - 1e-10;
            v = log(1.0 - d / 2.3) + 1.0;
            if (v > 0.0)
                acc[(size_t)y * (size_t)cols + (size_t)x] += v < 1.0 ? v : 1.0;
        }
}

/* dotted_line: a line from (0, r0) to (cols-1, r1), r0 and r1 uniform
 * integers in [0, rows-1) as MNIST-C's randint(0, 27), kept only in the
 * columns c with c mod 4 in {2, 3}; out = clip(x + line). */
static void dotted_line(const float *in, float *out, int32_t rows,
                        int32_t cols, rng *r, work *w)
{
    const size_t npix = (size_t)rows * (size_t)cols;
    int64_t r0 = 0, r1 = 0;
    size_t q;
    int32_t y, x;
    if (rows > 1) {
        r0 = rng_int(r, 0, rows - 1);
        r1 = rng_int(r, 0, rows - 1);
    }
    memset(w->a, 0, npix * sizeof *w->a);
    add_line(w->a, rows, cols, 0.0, (double)r0, (double)(cols - 1), (double)r1);
    for (y = 0; y < rows; y++)
        for (x = 0; x < cols; x++)
            if ((x & 3) < 2)
                w->a[(size_t)y * (size_t)cols + (size_t)x] = 0.0;
    for (q = 0; q < npix; q++)
        out[q] = clip01((float)((double)clip01(in[q]) + w->a[q]));
}

/* zigzag: MNIST-C's zigzag from column 2 to column cols-3 (25 for 28),
 * start row r0 uniform in [0, rows-1), end row r0 + uniform in [-5, 5),
 * teeth of length 2 and height 2 along that direction, each segment a
 * soft line as in dotted_line; the image is clipped after each segment.
 * Images narrower than 6 columns are only clipped. */
static void zigzag(const float *in, float *out, int32_t rows, int32_t cols,
                   rng *r, work *w)
{
    const size_t npix = (size_t)rows * (size_t)cols;
    const double a = 2.0, b = 2.0, c0 = 2.0, c1 = cols - 3.0;
    double *pc = w->b, *pr = w->c; /* corner points; npix >= enough */
    double theta, d, max_c, ri = 0.0;
    int64_t r0, r1, i, np = 0, nseg;
    size_t q;
    for (q = 0; q < npix; q++)
        w->a[q] = (double)clip01(in[q]);
    if (cols >= 6 && rows >= 2) {
        r0 = rng_int(r, 0, rows - 1);
        r1 = r0 + rng_int(r, -5, 5);
        theta = atan((double)(r1 - r0) / (c1 - c0));
        d = (c1 - c0) / cos(theta);
        pc[np] = 0.0;
        pr[np++] = 0.0;
        nseg = (int64_t)floor((d - a) / (2.0 * a)) + 1;
        for (i = 0; i < nseg && (size_t)np + 2 <= npix; i++) {
            pc[np] = (2.0 * (double)i + 1.0) * a;
            ri = (i % 2 == 0) ? b : -b;
            pr[np++] = ri;
        }
        max_c = 2.0 * a * floor(d / (2.0 * a));
        if (d != max_c && (size_t)np < npix) {
            pc[np] = d;
            pr[np++] = ri / (2.0 * (d - max_c)); /* as MNIST-C writes it */
        }
        for (i = 0; i < np; i++) { /* rotate by theta, shift to (c0, r0) */
            double x = pc[i], y = pr[i];
            pc[i] = cos(theta) * x - sin(theta) * y + c0;
            pr[i] = sin(theta) * x + cos(theta) * y + (double)r0;
        }
        for (i = 1; i < np; i++) {
            add_line(w->a, rows, cols, pc[i - 1], pr[i - 1], pc[i], pr[i]);
            for (q = 0; q < npix; q++)
                w->a[q] = w->a[q] < 0.0 ? 0.0 : (w->a[q] > 1.0 ? 1.0 : w->a[q]);
        }
    }
    for (q = 0; q < npix; q++)
        out[q] = clip01((float)w->a[q]);
}

/* canny_edges: skimage.feature.canny with its defaults (sigma 1, low and
 * high thresholds 0.1 and 0.2 on the Sobel magnitude, whole-image mask) as
 * in the skimage MNIST-C used: masked Gaussian smoothing with zero
 * padding, scipy Sobel (reflect), non-maximum suppression interpolated in
 * four octants, then hysteresis keeping 8-connected chains of low pixels
 * that contain a high one. Output is 0 or 1. */
static void canny_edges(const float *in, float *out, int32_t rows,
                        int32_t cols, work *w)
{
    const size_t npix = (size_t)rows * (size_t)cols;
    double *sm = w->a, *gi = w->b, *gj = w->c, *mag = w->d;
    double k3d[3] = {-1.0, 0.0, 1.0}, k3s[3] = {1.0, 2.0, 1.0};
    uint8_t *flag = w->flag; /* bit 0 local max, 1 low, 2 high, 3 seen */
    int32_t *queue = w->queue;
    size_t q, head = 0, tail = 0;
    int32_t y, x;

    /* smoothed = gauss(image) / gauss(ones), both zero padded */
    for (q = 0; q < npix; q++)
        sm[q] = (double)clip01(in[q]);
    gaussian(sm, gi, rows, cols, 1.0, 1.0, EDGE_ZERO);
    for (q = 0; q < npix; q++)
        mag[q] = 1.0;
    gaussian(mag, gi, rows, cols, 1.0, 1.0, EDGE_ZERO);
    for (q = 0; q < npix; q++)
        sm[q] /= mag[q] + 2.220446049250313e-16;
    /* isobel = sobel axis 0, jsobel = sobel axis 1 (mag as scratch) */
    correlate1d(sm, mag, rows, cols, 0, k3d, 1, EDGE_REFLECT);
    correlate1d(mag, gi, rows, cols, 1, k3s, 1, EDGE_REFLECT);
    correlate1d(sm, mag, rows, cols, 1, k3d, 1, EDGE_REFLECT);
    correlate1d(mag, gj, rows, cols, 0, k3s, 1, EDGE_REFLECT);
    for (q = 0; q < npix; q++)
        mag[q] = hypot(gi[q], gj[q]);

    memset(flag, 0, npix);
#define M(yy, xx) mag[(size_t)(yy) * (size_t)cols + (size_t)(xx)]
    for (y = 1; y + 1 < rows; y++)
        for (x = 1; x + 1 < cols; x++) {
            const size_t p = (size_t)y * (size_t)cols + (size_t)x;
            const double I = gi[p], J = gj[p], aI = fabs(I), aJ = fabs(J);
            const double m = mag[p];
            int lm = -1; /* later octants overwrite earlier ones */
            double wgt, cp, cm;
            if (!(m > 0.0))
                continue;
            if (((I >= 0 && J >= 0) || (I <= 0 && J <= 0)) && aI >= aJ) {
                wgt = aJ / aI;
                cp = M(y + 1, x + 1) * wgt + M(y + 1, x) * (1 - wgt);
                cm = M(y - 1, x - 1) * wgt + M(y - 1, x) * (1 - wgt);
                lm = cp <= m && cm <= m;
            }
            if (((I >= 0 && J >= 0) || (I <= 0 && J <= 0)) && aI <= aJ) {
                wgt = aI / aJ;
                cp = M(y + 1, x + 1) * wgt + M(y, x + 1) * (1 - wgt);
                cm = M(y - 1, x - 1) * wgt + M(y, x - 1) * (1 - wgt);
                lm = cp <= m && cm <= m;
            }
            if (((I <= 0 && J >= 0) || (I >= 0 && J <= 0)) && aI <= aJ) {
                wgt = aI / aJ;
                cp = M(y - 1, x + 1) * wgt + M(y, x + 1) * (1 - wgt);
                cm = M(y + 1, x - 1) * wgt + M(y, x - 1) * (1 - wgt);
                lm = cp <= m && cm <= m;
            }
            if (((I <= 0 && J >= 0) || (I >= 0 && J <= 0)) && aI >= aJ) {
                wgt = aJ / aI;
                cp = M(y - 1, x + 1) * wgt + M(y - 1, x) * (1 - wgt);
                cm = M(y + 1, x - 1) * wgt + M(y + 1, x) * (1 - wgt);
                lm = cp <= m && cm <= m;
            }
            if (lm == 1) {
                flag[p] = 1;
                if (m >= 0.1)
                    flag[p] |= 2;
                if (m >= 0.2)
                    flag[p] |= 4;
            }
        }
#undef M
    /* hysteresis: flood the low mask from every high pixel, 8-connected */
    for (q = 0; q < npix; q++)
        if ((flag[q] & 4) != 0) {
            flag[q] |= 8;
            queue[tail++] = (int32_t)q;
        }
    while (head < tail) {
        const int32_t p = queue[head++];
        const int32_t py = p / cols, px = p % cols;
        int dy, dx;
        for (dy = -1; dy <= 1; dy++)
            for (dx = -1; dx <= 1; dx++) {
                int32_t ny = py + dy, nx = px + dx;
                size_t nq;
                if (ny < 0 || ny >= rows || nx < 0 || nx >= cols)
                    continue;
                nq = (size_t)ny * (size_t)cols + (size_t)nx;
                if ((flag[nq] & 2) != 0 && (flag[nq] & 8) == 0) {
                    flag[nq] |= 8;
                    queue[tail++] = (int32_t)nq;
                }
            }
    }
    for (q = 0; q < npix; q++)
        out[q] = (flag[q] & 8) ? 1.0f : 0.0f;
}

/* ---- one image ---------------------------------------------------------- */

/* in and out do not overlap here. */
static void corrupt_one(int which, const float *in, float *out, int32_t rows,
                        int32_t cols, rng *r, work *w)
{
    const size_t npix = (size_t)rows * (size_t)cols;
    size_t k;
    switch (which) {
    case CORRUPT_IDENTITY:
        memcpy(out, in, npix * sizeof *out);
        break;
    case CORRUPT_SHOT_NOISE:
        for (k = 0; k < npix; k++)
            out[k] = clip01(
                (float)(rng_poisson(r, 3.0 * (double)clip01(in[k])) / 3.0));
        break;
    case CORRUPT_IMPULSE_NOISE:
        for (k = 0; k < npix; k++) {
            if (rng_uniform(r) < 0.17)
                out[k] = (rng_next(r) >> 63) ? 1.0f : 0.0f;
            else
                out[k] = clip01(in[k]);
        }
        break;
    case CORRUPT_SHEAR: {
        double s = 0.4 * rng_sign(r);
        warp_affine(in, out, rows, cols, 1.0, -sin(s), 0.0, cos(s));
        break;
    }
    case CORRUPT_SCALE:
        warp_affine(in, out, rows, cols, 1.0 / 0.7, 0.0, 0.0, 1.0 / 0.7);
        break;
    case CORRUPT_ROTATE: {
        double a = 0.4 * rng_sign(r);
        warp_affine(in, out, rows, cols, cos(a), -sin(a), sin(a), cos(a));
        break;
    }
    case CORRUPT_BRIGHTNESS:
        for (k = 0; k < npix; k++)
            out[k] = clip01(in[k] + 0.5f);
        break;
    case CORRUPT_TRANSLATE: {
        int32_t dx = 3 * rng_sign(r), dy = 3 * rng_sign(r), i, j;
        for (i = 0; i < rows; i++) {
            for (j = 0; j < cols; j++) {
                int64_t si = (int64_t)i + dy, sj = (int64_t)j + dx;
                out[(size_t)i * (size_t)cols + (size_t)j] =
                    (si < 0 || si >= rows || sj < 0 || sj >= cols)
                        ? 0.0f
                        : clip01(in[(size_t)si * (size_t)cols + (size_t)sj]);
            }
        }
        break;
    }
    case CORRUPT_STRIPE: {
        int32_t sw = cols / 4, i, j;
        for (i = 0; i < rows; i++) {
            for (j = 0; j < cols; j++) {
                size_t q = (size_t)i * (size_t)cols + (size_t)j;
                float v = clip01(in[q]);
                out[q] = (j < sw || j >= cols - sw) ? 1.0f - v : v;
            }
        }
        break;
    }
    case CORRUPT_GLASS_BLUR:
        glass_blur(in, out, rows, cols, r, w);
        break;
    case CORRUPT_MOTION_BLUR:
        motion_blur(in, out, rows, cols, r);
        break;
    case CORRUPT_FOG:
        fog(in, out, rows, cols, r, w);
        break;
    case CORRUPT_SPATTER:
        spatter(in, out, rows, cols, r, w);
        break;
    case CORRUPT_DOTTED_LINE:
        dotted_line(in, out, rows, cols, r, w);
        break;
    case CORRUPT_ZIGZAG:
        zigzag(in, out, rows, cols, r, w);
        break;
    case CORRUPT_CANNY_EDGES:
        canny_edges(in, out, rows, cols, w);
        break;
    default:
        break; /* unreachable: checked by the caller */
    }
}

int corrupt_apply_ex(int which, const float *in, float *out, int64_t n,
                     int32_t rows, int32_t cols, uint64_t seed,
                     int64_t first_index)
{
    size_t npix;
    float *tmp = NULL;
    work w;
    int64_t i;
    int rc;

    if (which < 0 || which >= CORRUPT_COUNT || n < 0 || rows <= 0 ||
        cols <= 0 || first_index < 0 || n > INT64_MAX - first_index)
        return CORRUPT_ERR_INVALID_ARG;
    if (n == 0)
        return CORRUPT_OK;
    if (in == NULL || out == NULL)
        return CORRUPT_ERR_INVALID_ARG;
    if ((uint64_t)rows * (uint64_t)cols > INT32_MAX)
        return CORRUPT_ERR_INVALID_ARG; /* pixel indices fit in int32 */
    npix = (size_t)rows * (size_t)cols;
    if ((uint64_t)n > SIZE_MAX / sizeof(float) / npix)
        return CORRUPT_ERR_INVALID_ARG;
    rc = work_alloc(&w, which, rows, cols);
    if (rc != CORRUPT_OK)
        return rc;
    if (in == out) { /* in place: each image goes through a scratch copy */
        tmp = malloc(npix * sizeof *tmp);
        if (tmp == NULL) {
            work_free(&w);
            return CORRUPT_ERR_NOMEM;
        }
    }
    for (i = 0; i < n; i++) {
        rng r;
        const float *src = in + (size_t)i * npix;
        float *dst = out + (size_t)i * npix;
        rng_init(&r, seed, which, (uint64_t)(first_index + i));
        if (tmp != NULL) {
            memcpy(tmp, src, npix * sizeof *tmp);
            src = tmp;
        }
        corrupt_one(which, src, dst, rows, cols, &r, &w);
    }
    free(tmp);
    work_free(&w);
    return CORRUPT_OK;
}

int corrupt_apply(int which, const float *in, float *out, int64_t n,
                  int32_t rows, int32_t cols, uint64_t seed)
{
    return corrupt_apply_ex(which, in, out, n, rows, cols, seed, 0);
}
