/*
 * report.h - the results of evaluating methods, printed as a table, written
 * as JSON and drawn as reliability diagrams and a risk-coverage plot (SVG).
 * Host code for examples.
 *
 * SPDX-License-Identifier: MIT
 */
#ifndef IBVI_EXAMPLES_REPORT_H
#define IBVI_EXAMPLES_REPORT_H

#include <stdint.h>
#include <stdio.h>

#include <ibvi/metrics.h>

#define REPORT_MAX_METHODS 8
#define REPORT_MAX_CORRUPTIONS 16
/* The risk-coverage curve is kept at coverages k / REPORT_RISK_POINTS,
 * k = 1 .. REPORT_RISK_POINTS. */
#define REPORT_RISK_POINTS 50

/* Metrics of one evaluation set. */
typedef struct scores {
    double accuracy, nll, ece, mce, brier;
} scores;

typedef struct method_result {
    char name[32];
    scores test;
    double ece_adaptive;           /* 15 equal-mass bins, test set */
    double aurc;                   /* test set */
    double risk[REPORT_RISK_POINTS]; /* risk at coverage (k + 1) / 50 */
    /* OOD detection by predictive entropy; NAN without an OOD set */
    double ood_auroc, ood_aupr_in, ood_aupr_out, ood_fpr95;
    double train_seconds;
    /* floats the method's trained model holds: ibvi_net_param_count summed
     * over its networks (means, covariance, for SWAG its moments) */
    int64_t model_floats;
    double temperature;            /* 1 unless fitted */
    int64_t bin_counts[IBVI_METRICS_BINS];
    double bin_accuracy[IBVI_METRICS_BINS];
    double bin_confidence[IBVI_METRICS_BINS];
    int corruption_count;
    scores corruption[REPORT_MAX_CORRUPTIONS];
    /* The training diverged (docs/concepts.md, "Learning rates and
     * divergence"): then no metric above was measured; the table, the
     * JSON and the SVG say "diverged" and why (divergence). */
    int diverged;
    char divergence[160];
} method_result;

typedef struct report {
    const char *dataset, *ood_dataset;
    const char *corruption_names[REPORT_MAX_CORRUPTIONS];
    int corruption_count;
    int method_count;
    method_result methods[REPORT_MAX_METHODS];
    char config_json[1024];        /* a JSON object describing the run */
} report;

/* Mean of the corruption scores of one method. */
scores report_corruption_mean(const method_result *m);

void report_print_table(const report *r, FILE *out);
/* Return 0, or -1 with errno set when the file cannot be written. */
int report_write_json(const report *r, const char *path);
int report_write_svg(const report *r, const char *path);

/* ---- predictive bands of a 1-D regression (examples/regression.c) ------ */

/* One panel: the predictive mean and a central interval [lo, hi] on a grid
 * of x values, drawn as a line in a shaded band, with the training points
 * as dots and, if given, the true function dashed. Arrays are borrowed for
 * the call. */
typedef struct report_band {
    const char *title;
    int grid;                           /* points of the x grid */
    const double *x, *mean, *lo, *hi;   /* grid values */
    const double *truth;                /* the true function on the grid, or NULL */
    int points;                         /* training points */
    const double *px, *py;
} report_band;

/* Writes the panels side by side, each over the window [xmin, xmax] x
 * [ymin, ymax] (values outside are clipped to it), with a caption below.
 * Returns 0, or -1 with errno set when the file cannot be written. */
int report_write_band_svg(const char *path, const char *caption,
                          const report_band *panels, int count, double xmin,
                          double xmax, double ymin, double ymax);

#endif /* IBVI_EXAMPLES_REPORT_H */
