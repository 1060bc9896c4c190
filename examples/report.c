/*
 * report.c - see report.h.
 *
 * SPDX-License-Identifier: MIT
 */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "report.h"

scores report_corruption_mean(const method_result *m)
{
    scores mean = {0, 0, 0, 0, 0};
    if (m->corruption_count == 0)
        return mean;
    for (int c = 0; c < m->corruption_count; c++) {
        mean.accuracy += m->corruption[c].accuracy;
        mean.nll += m->corruption[c].nll;
        mean.ece += m->corruption[c].ece;
        mean.mce += m->corruption[c].mce;
        mean.brier += m->corruption[c].brier;
    }
    mean.accuracy /= m->corruption_count;
    mean.nll /= m->corruption_count;
    mean.ece /= m->corruption_count;
    mean.mce /= m->corruption_count;
    mean.brier /= m->corruption_count;
    return mean;
}

void report_print_table(const report *r, FILE *out)
{
    fprintf(out, "\n%s test set (OOD: %s); NLL in nats, ECE with 15 bins\n",
            r->dataset, r->ood_dataset);
    fprintf(out, "%-14s %8s %8s %8s %8s %9s %8s %8s %8s | %9s %9s %9s | %8s\n",
            "method", "acc %", "NLL", "ECE %", "Brier", "OOD AUROC", "AUPR-in",
            "AUPR-out", "FPR95 %", "corr acc%", "corr NLL", "corr ECE%",
            "train s");
    for (int i = 0; i < r->method_count; i++) {
        const method_result *m = &r->methods[i];
        if (m->diverged) {
            fprintf(out, "%-14s diverged (%s): not evaluated\n", m->name,
                    m->divergence);
            continue;
        }
        const scores c = report_corruption_mean(m);
        fprintf(out, "%-14s %8.2f %8.4f %8.2f %8.4f %9.4f %8.4f %8.4f %8.2f "
                     "| %9.2f %9.4f %9.2f | %8.1f\n",
                m->name, 100 * m->test.accuracy, m->test.nll, 100 * m->test.ece,
                m->test.brier, m->ood_auroc, m->ood_aupr_in, m->ood_aupr_out,
                100 * m->ood_fpr95, 100 * c.accuracy, c.nll, 100 * c.ece,
                m->train_seconds);
    }
    if (r->corruption_count == 0 || r->method_count == 0)
        return;
    fprintf(out, "\nPer corruption, NLL (accuracy %%):\n%-14s", "corruption");
    for (int i = 0; i < r->method_count; i++)
        fprintf(out, " %18s", r->methods[i].name);
    fprintf(out, "\n");
    for (int c = 0; c < r->corruption_count; c++) {
        fprintf(out, "%-14s", r->corruption_names[c]);
        for (int i = 0; i < r->method_count; i++) {
            if (r->methods[i].diverged)
                fprintf(out, " %18s", "diverged");
            else
                fprintf(out, "   %7.4f (%6.2f)", r->methods[i].corruption[c].nll,
                        100 * r->methods[i].corruption[c].accuracy);
        }
        fprintf(out, "\n");
    }
}

static void json_scores(FILE *f, const scores *s)
{
    fprintf(f, "\"accuracy\": %.6f, \"nll\": %.6f, \"ece\": %.6f, "
               "\"mce\": %.6f, \"brier\": %.6f",
            s->accuracy, s->nll, s->ece, s->mce, s->brier);
}

static void json_array_i64(FILE *f, const int64_t *v, int n)
{
    fputc('[', f);
    for (int i = 0; i < n; i++)
        fprintf(f, "%s%lld", i ? ", " : "", (long long)v[i]);
    fputc(']', f);
}

static void json_array_f64(FILE *f, const double *v, int n)
{
    fputc('[', f);
    for (int i = 0; i < n; i++)
        fprintf(f, "%s%.6f", i ? ", " : "", v[i]);
    fputc(']', f);
}

/* ", "key": value" with %.6f, or null for NAN (no OOD set). */
static void json_number(FILE *f, const char *key, double v)
{
    if (isnan(v))
        fprintf(f, ", \"%s\": null", key);
    else
        fprintf(f, ", \"%s\": %.6f", key, v);
}

/* A diverged method: its name, why, and every metric null. */
static void json_diverged_method(FILE *f, const method_result *m)
{
    static const char *const keys[] = {
        "accuracy", "nll", "ece", "mce", "brier", "ece_adaptive", "aurc",
        "ood_auroc", "aupr_in", "aupr_out", "fpr95", "temperature"};
    fprintf(f, "    {\"name\": \"%s\", \"diverged\": true, \"divergence\": "
               "\"%s\",\n     ", m->name, m->divergence);
    for (size_t k = 0; k < sizeof keys / sizeof keys[0]; k++)
        fprintf(f, "\"%s\": null, ", keys[k]);
    fprintf(f, "\"train_seconds\": %.3f, \"model_floats\": %lld,\n     "
               "\"reliability\": null, "
               "\"corruptions\": {}, \"corruption_mean\": {\"accuracy\": null, "
               "\"nll\": null, \"ece\": null, \"mce\": null, \"brier\": null}}",
            m->train_seconds, (long long)m->model_floats);
}

static void json_method(FILE *f, const report *r, const method_result *m)
{
    if (m->diverged) {
        json_diverged_method(f, m);
        return;
    }
    fprintf(f, "    {\"name\": \"%s\", \"diverged\": false, ", m->name);
    json_scores(f, &m->test);
    json_number(f, "ece_adaptive", m->ece_adaptive);
    json_number(f, "aurc", m->aurc);
    fprintf(f, ",\n     ");
    fprintf(f, "\"ood_auroc\": ");
    if (isnan(m->ood_auroc))
        fprintf(f, "null");
    else
        fprintf(f, "%.6f", m->ood_auroc);
    json_number(f, "aupr_in", m->ood_aupr_in);
    json_number(f, "aupr_out", m->ood_aupr_out);
    json_number(f, "fpr95", m->ood_fpr95);
    fprintf(f, ", \"temperature\": %.6f, \"train_seconds\": %.3f, "
               "\"model_floats\": %lld,\n",
            m->temperature, m->train_seconds, (long long)m->model_floats);
    fprintf(f, "     \"reliability\": {\"counts\": ");
    json_array_i64(f, m->bin_counts, IBVI_METRICS_BINS);
    fprintf(f, ", \"accuracy\": ");
    json_array_f64(f, m->bin_accuracy, IBVI_METRICS_BINS);
    fprintf(f, ", \"confidence\": ");
    json_array_f64(f, m->bin_confidence, IBVI_METRICS_BINS);
    fprintf(f, "},\n     \"corruptions\": {");
    for (int c = 0; c < m->corruption_count; c++) {
        fprintf(f, "%s\n       \"%s\": {", c ? "," : "", r->corruption_names[c]);
        json_scores(f, &m->corruption[c]);
        fprintf(f, "}");
    }
    const scores mean = report_corruption_mean(m);
    fprintf(f, "},\n     \"corruption_mean\": {");
    json_scores(f, &mean);
    fprintf(f, "}}");
}

int report_write_json(const report *r, const char *path)
{
    FILE *f = fopen(path, "w");
    if (!f)
        return -1;
    fprintf(f, "{\n  \"schema\": \"libibvi-mnist-train/1\",\n");
    fprintf(f, "  \"dataset\": \"%s\",\n  \"ood_dataset\": \"%s\",\n",
            r->dataset, r->ood_dataset);
    fprintf(f, "  \"config\": %s,\n  \"methods\": [\n", r->config_json);
    for (int i = 0; i < r->method_count; i++) {
        json_method(f, r, &r->methods[i]);
        fprintf(f, "%s\n", i + 1 < r->method_count ? "," : "");
    }
    fprintf(f, "  ]\n}\n");
    return fclose(f) == 0 ? 0 : -1;
}

/* One reliability diagram: bars of accuracy per confidence bin, the gap to
 * the diagonal shaded, bin counts as labels, ECE in the title. */
static void svg_panel(FILE *f, const method_result *m, double x0, double y0)
{
    const double size = 300, left = 50, top = 40;
    const double px = x0 + left, py = y0 + top;
    const double bin_width = size / IBVI_METRICS_BINS;
    if (m->diverged) {
        fprintf(f, "<text x='%.1f' y='%.1f' font-size='15' text-anchor='middle' "
                   "font-weight='bold'>%s: diverged, not evaluated</text>\n",
                px + size / 2, y0 + 22, m->name);
        return;
    }
    fprintf(f, "<text x='%.1f' y='%.1f' font-size='15' text-anchor='middle' "
               "font-weight='bold'>%s: ECE = %.2f%%</text>\n",
            px + size / 2, y0 + 22, m->name, 100 * m->test.ece);
    fprintf(f, "<rect x='%.1f' y='%.1f' width='%.1f' height='%.1f' "
               "fill='white' stroke='black'/>\n", px, py, size, size);
    for (int t = 0; t <= 5; t++) {
        const double v = t / 5.0;
        fprintf(f, "<line x1='%.1f' y1='%.1f' x2='%.1f' y2='%.1f' "
                   "stroke='#ddd'/>\n", px, py + size - v * size, px + size,
                py + size - v * size);
        fprintf(f, "<text x='%.1f' y='%.1f' font-size='11' "
                   "text-anchor='end'>%.1f</text>\n", px - 5,
                py + size - v * size + 4, v);
        fprintf(f, "<text x='%.1f' y='%.1f' font-size='11' "
                   "text-anchor='middle'>%.1f</text>\n", px + v * size,
                py + size + 15, v);
    }
    for (int b = 0; b < IBVI_METRICS_BINS; b++) {
        if (m->bin_counts[b] == 0)
            continue;
        const double acc = m->bin_accuracy[b], conf = m->bin_confidence[b];
        const double bx = px + b * bin_width;
        fprintf(f, "<rect x='%.1f' y='%.1f' width='%.1f' height='%.1f' "
                   "fill='#4a78c2' stroke='#1f3f7a'><title>bin %d: %lld "
                   "points, accuracy %.3f, confidence %.3f</title></rect>\n",
                bx, py + size - acc * size, bin_width, acc * size, b,
                (long long)m->bin_counts[b], acc, conf);
        const double hi = acc > conf ? acc : conf, lo = acc > conf ? conf : acc;
        fprintf(f, "<rect x='%.1f' y='%.1f' width='%.1f' height='%.1f' "
                   "fill='#e0474c' fill-opacity='0.45' stroke='#e0474c'/>\n",
                bx, py + size - hi * size, bin_width, (hi - lo) * size);
    }
    fprintf(f, "<line x1='%.1f' y1='%.1f' x2='%.1f' y2='%.1f' stroke='black' "
               "stroke-dasharray='5,4'/>\n", px, py + size, px + size, py);
    fprintf(f, "<text x='%.1f' y='%.1f' font-size='13' text-anchor='middle'>"
               "confidence (top-label probability)</text>\n",
            px + size / 2, py + size + 34);
    fprintf(f, "<text x='%.1f' y='%.1f' font-size='13' text-anchor='middle' "
               "transform='rotate(-90 %.1f %.1f)'>accuracy</text>\n",
            x0 + 14, py + size / 2, x0 + 14, py + size / 2);
}

/* The risk-coverage curves of all methods in one panel: the error rate of
 * the points kept when only the most confident fraction (the coverage) is
 * answered; AURC in the legend. */
static void svg_risk_panel(FILE *f, const report *r, double x0, double y0)
{
    static const char *colors[] = {"#4a78c2", "#e0474c", "#3a9a4a", "#9a5ac2",
                                   "#d08a1e", "#3ab0b0", "#7a7a7a", "#c25a9a"};
    const double size = 300, left = 50, top = 40;
    const double px = x0 + left, py = y0 + top;
    double rmax = 0.0;
    for (int i = 0; i < r->method_count; i++)
        for (int k = 0; k < REPORT_RISK_POINTS && !r->methods[i].diverged; k++)
            if (r->methods[i].risk[k] > rmax)
                rmax = r->methods[i].risk[k];
    /* The risk axis: up to the largest risk, rounded up to a tenth. */
    rmax = rmax > 0.0 ? ceil(rmax * 10.0 - 1e-9) / 10.0 : 0.1;
    fprintf(f, "<text x='%.1f' y='%.1f' font-size='15' text-anchor='middle' "
               "font-weight='bold'>risk-coverage</text>\n",
            px + size / 2, y0 + 22);
    fprintf(f, "<rect x='%.1f' y='%.1f' width='%.1f' height='%.1f' "
               "fill='white' stroke='black'/>\n", px, py, size, size);
    for (int t = 0; t <= 5; t++) {
        const double v = t / 5.0;
        fprintf(f, "<line x1='%.1f' y1='%.1f' x2='%.1f' y2='%.1f' "
                   "stroke='#ddd'/>\n", px, py + size - v * size, px + size,
                py + size - v * size);
        fprintf(f, "<text x='%.1f' y='%.1f' font-size='11' "
                   "text-anchor='end'>%.2f</text>\n", px - 5,
                py + size - v * size + 4, v * rmax);
        fprintf(f, "<text x='%.1f' y='%.1f' font-size='11' "
                   "text-anchor='middle'>%.1f</text>\n", px + v * size,
                py + size + 15, v);
    }
    for (int i = 0; i < r->method_count; i++) {
        const method_result *m = &r->methods[i];
        const char *color = colors[i % 8];
        if (m->diverged)
            continue;
        fprintf(f, "<polyline fill='none' stroke='%s' stroke-width='2' "
                   "points='", color);
        for (int k = 0; k < REPORT_RISK_POINTS; k++) {
            const double c = (k + 1.0) / REPORT_RISK_POINTS;
            fprintf(f, "%s%.1f,%.1f", k ? " " : "", px + c * size,
                    py + size - m->risk[k] / rmax * size);
        }
        fprintf(f, "'><title>%s: AURC %.4f</title></polyline>\n", m->name,
                m->aurc);
        const double ly = py + 16 + 16 * i;
        fprintf(f, "<line x1='%.1f' y1='%.1f' x2='%.1f' y2='%.1f' stroke='%s' "
                   "stroke-width='2'/>\n", px + 10, ly - 4, px + 30, ly - 4,
                color);
        fprintf(f, "<text x='%.1f' y='%.1f' font-size='11'>%s: AURC %.4f"
                   "</text>\n", px + 35, ly, m->name, m->aurc);
    }
    fprintf(f, "<text x='%.1f' y='%.1f' font-size='13' text-anchor='middle'>"
               "coverage (most confident first)</text>\n",
            px + size / 2, py + size + 34);
    fprintf(f, "<text x='%.1f' y='%.1f' font-size='13' text-anchor='middle' "
               "transform='rotate(-90 %.1f %.1f)'>risk (error rate)</text>\n",
            x0 + 10, py + size / 2, x0 + 10, py + size / 2);
}

int report_write_svg(const report *r, const char *path)
{
    FILE *f = fopen(path, "w");
    if (!f)
        return -1;
    const double panel_w = 380, panel_h = 400;
    /* One reliability diagram per method, then the risk-coverage panel. */
    const double width = panel_w * (r->method_count + 1);
    fprintf(f, "<svg xmlns='http://www.w3.org/2000/svg' width='%.0f' "
               "height='%.0f' font-family='sans-serif'>\n", width, panel_h + 30);
    fprintf(f, "<rect width='100%%' height='100%%' fill='white'/>\n");
    fprintf(f, "<text x='10' y='%.0f' font-size='12'>Reliability on %s: blue "
               "= accuracy per confidence bin, red = gap to the diagonal "
               "(perfect calibration, dashed); right: risk-coverage "
               "curves</text>\n", panel_h + 20,
            r->dataset);
    for (int i = 0; i < r->method_count; i++)
        svg_panel(f, &r->methods[i], i * panel_w, 0);
    svg_risk_panel(f, r, r->method_count * panel_w, 0);
    fprintf(f, "</svg>\n");
    return fclose(f) == 0 ? 0 : -1;
}

/* ---- predictive bands ------------------------------------------------------ */

static double clip(double v, double lo, double hi)
{
    return v < lo ? lo : v > hi ? hi : v;
}

static void svg_band_panel(FILE *f, const report_band *b, double x0, double y0,
                           double xmin, double xmax, double ymin, double ymax)
{
    const double size_w = 340, size_h = 260, left = 45, top = 40;
    const double px = x0 + left, py = y0 + top;
#define SX(v) (px + (clip(v, xmin, xmax) - xmin) / (xmax - xmin) * size_w)
#define SY(v) (py + size_h - (clip(v, ymin, ymax) - ymin) / (ymax - ymin) * size_h)
    fprintf(f, "<text x='%.1f' y='%.1f' font-size='15' text-anchor='middle' "
               "font-weight='bold'>%s</text>\n", px + size_w / 2, y0 + 22,
            b->title);
    fprintf(f, "<rect x='%.1f' y='%.1f' width='%.1f' height='%.1f' "
               "fill='white' stroke='black'/>\n", px, py, size_w, size_h);
    for (int t = 0; t <= 4; t++) {
        const double vx = xmin + t * (xmax - xmin) / 4;
        const double vy = ymin + t * (ymax - ymin) / 4;
        fprintf(f, "<line x1='%.1f' y1='%.1f' x2='%.1f' y2='%.1f' stroke='#eee'/>\n",
                px, SY(vy), px + size_w, SY(vy));
        fprintf(f, "<text x='%.1f' y='%.1f' font-size='11' text-anchor='end'>"
                   "%.1f</text>\n", px - 5, SY(vy) + 4, vy);
        fprintf(f, "<text x='%.1f' y='%.1f' font-size='11' text-anchor='middle'>"
                   "%.1f</text>\n", SX(vx), py + size_h + 15, vx);
    }
    /* The band: upper edge left to right, lower edge back. */
    fprintf(f, "<polygon fill='#4a78c2' fill-opacity='0.3' stroke='none' points='");
    for (int i = 0; i < b->grid; i++)
        fprintf(f, "%s%.1f,%.1f", i ? " " : "", SX(b->x[i]), SY(b->hi[i]));
    for (int i = b->grid - 1; i >= 0; i--)
        fprintf(f, " %.1f,%.1f", SX(b->x[i]), SY(b->lo[i]));
    fprintf(f, "'/>\n<polyline fill='none' stroke='#1f3f7a' stroke-width='2' "
               "points='");
    for (int i = 0; i < b->grid; i++)
        fprintf(f, "%s%.1f,%.1f", i ? " " : "", SX(b->x[i]), SY(b->mean[i]));
    fprintf(f, "'/>\n");
    if (b->truth) {
        fprintf(f, "<polyline fill='none' stroke='black' stroke-width='1' "
                   "stroke-dasharray='4,3' points='");
        for (int i = 0; i < b->grid; i++)
            fprintf(f, "%s%.1f,%.1f", i ? " " : "", SX(b->x[i]), SY(b->truth[i]));
        fprintf(f, "'/>\n");
    }
    for (int i = 0; i < b->points; i++)
        fprintf(f, "<circle cx='%.1f' cy='%.1f' r='2.5' fill='#e0474c'/>\n",
                SX(b->px[i]), SY(b->py[i]));
    fprintf(f, "<text x='%.1f' y='%.1f' font-size='13' text-anchor='middle'>x"
               "</text>\n", px + size_w / 2, py + size_h + 32);
#undef SX
#undef SY
}

int report_write_band_svg(const char *path, const char *caption,
                          const report_band *panels, int count, double xmin,
                          double xmax, double ymin, double ymax)
{
    FILE *f = fopen(path, "w");
    if (!f)
        return -1;
    const double panel_w = 400, panel_h = 340;
    fprintf(f, "<svg xmlns='http://www.w3.org/2000/svg' width='%.0f' "
               "height='%.0f' font-family='sans-serif'>\n", panel_w * count,
            panel_h + 30);
    fprintf(f, "<rect width='100%%' height='100%%' fill='white'/>\n");
    for (int i = 0; i < count; i++)
        svg_band_panel(f, &panels[i], i * panel_w, 0, xmin, xmax, ymin, ymax);
    fprintf(f, "<text x='10' y='%.0f' font-size='12'>%s</text>\n",
            panel_h + 20, caption);
    fprintf(f, "</svg>\n");
    return fclose(f) == 0 ? 0 : -1;
}
