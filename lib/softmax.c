/*
 * libibvi - the max-shifted softmax, in double: the one implementation
 * behind the losses (loss.c), temperature scaling (calibration.c) and the
 * predictor (predictor.c).
 *
 * The kernel works on n rows at once, class by class: class c of row i is
 * f[c * cs + i], so every loop runs along the n rows with unit stride and
 * GCC vectorises it (the predictor's class-major logits: n rows of a block;
 * a row-major caller passes one row at a time, n = 1, cs = 1). For each row
 * it forms the maximum, the shifted logits s_c = max(b (f_c - max), -700),
 * their exponentials e_c (exp_nonpositive: straight-line arithmetic, not a
 * call per value), Z = sum_c e_c and D = sum_c e_c s_c. From those
 *   softmax_c = e_c / Z,   log-sum-exp = max + log(Z) / b,
 *   entropy = log Z - D / Z.
 * The clamp at -700 drops only terms below e^-700 < 1e-304 next to the
 * maximum's 1, and keeps exp_nonpositive's 2^k normal.
 *
 * SPDX-License-Identifier: MIT
 */
#include <string.h>

#include "internal.h"

/* exp(x) for one x in [-700, 0], in straight-line arithmetic that GCC
 * vectorises (see ibvi__exp_nonpositive): x = k ln 2 + r with
 * |r| <= ln(2) / 2 (Cody-Waite: k ln 2 in two parts), exp(r) by its Taylor
 * polynomial of degree 12 (truncation error below 2e-16 relative; measured
 * against glibc over [-700, 0]: below 7e-16), times 2^k built in the
 * exponent bits. */
static inline double exp_nonpositive_one(double x)
{
    const double shifter = 0x1.8p52; /* adding it rounds to an integer */
    const double t = x * 1.4426950408889634 + shifter;
    const double k = t - shifter;
    double r = x - k * 0x1.62e42fee00000p-1;  /* ln 2, high bits */
    r = r - k * 0x1.a39ef35793c76p-33;       /* ln 2, the rest */
    /* Estrin's scheme: short dependency chains, which the vector units
     * overlap (Horner's would wait on each step). */
    const double r2 = r * r, r4 = r2 * r2, r8 = r4 * r4;
    const double s03 = (1.0 + r) + r2 * (1.0 / 2 + r * (1.0 / 6));
    const double s47 = (1.0 / 24 + r * (1.0 / 120)) +
                       r2 * (1.0 / 720 + r * (1.0 / 5040));
    const double s811 = (1.0 / 40320 + r * (1.0 / 362880)) +
                        r2 * (1.0 / 3628800 + r * (1.0 / 39916800));
    const double e = (s03 + r4 * s47) + r8 * (s811 + r4 * (1.0 / 479001600));
    /* t's low mantissa bits hold k (two's complement); k + 1023 in
     * [13, 1023] shifted into the exponent field is 2^k. */
    uint64_t bits;
    memcpy(&bits, &t, sizeof bits);
    bits = (bits + 1023u) << 52;
    double scale;
    memcpy(&scale, &bits, sizeof scale);
    return e * scale;
}

/* glibc's exp is a call per value; this runs two per SSE2 instruction
 * (more with wider vectors). */
void ibvi__exp_nonpositive(const double *restrict x, double *restrict y,
                           int64_t count)
{
    for (int64_t i = 0; i < count; i++)
        y[i] = exp_nonpositive_one(x[i]);
}

/* Column kernels: element-wise along the n rows of one class (restrict:
 * the vectoriser may assume no overlap). */

/* max = max(max, f) */
static void max_column(double *restrict max, const float *restrict f,
                       int64_t n)
{
    for (int64_t i = 0; i < n; i++)
        max[i] = f[i] > max[i] ? f[i] : max[i];
}

/* s = max((f - max) b, -700), NaN staying NaN (so NaN or infinite logits
 * give a NaN sum, which the callers report) */
static void shift_column(double *restrict s, const float *restrict f,
                         const double *restrict max, double b, int64_t n)
{
    for (int64_t i = 0; i < n; i++) {
        const double v = ((double)f[i] - max[i]) * b;
        s[i] = v < -700.0 ? -700.0 : v;
    }
}

/* z += e, dot += e s */
static void sum_column(double *restrict z, double *restrict dot,
                       const double *restrict e, const double *restrict s,
                       int64_t n)
{
    for (int64_t i = 0; i < n; i++) {
        z[i] += e[i];
        dot[i] += e[i] * s[i];
    }
}

void ibvi__softmax_max(const float *f, int64_t cs, int64_t n,
                       int32_t classes, double *max, double *z, double *dot)
{
    for (int64_t i = 0; i < n; i++) {
        max[i] = f[i];
        z[i] = dot[i] = 0.0;
    }
    for (int32_t c = 1; c < classes; c++)
        max_column(max, f + c * cs, n);
}

void ibvi__softmax_sums(const float *f, int64_t cs, int64_t n, int32_t c0,
                        int32_t c1, const double *max, double b,
                        double *shifted, double *exps, double *z, double *dot)
{
    for (int32_t c = c0; c < c1; c++)
        shift_column(shifted + (int64_t)(c - c0) * n, f + c * cs, max, b, n);
    ibvi__exp_nonpositive(shifted, exps, (int64_t)(c1 - c0) * n);
    for (int32_t c = c0; c < c1; c++)
        sum_column(z, dot, exps + (int64_t)(c - c0) * n,
                   shifted + (int64_t)(c - c0) * n, n);
}
