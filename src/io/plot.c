/* Small SVG charts: see plot.h. */
#include "io/plot.h"

#include <math.h>
#include <string.h>

/* Tableau's ten colours: distinguishable, and readable on white */
static const char *const palette[] = {"#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
                                      "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"};
enum { N_COLORS = sizeof palette / sizeof palette[0] };

const char *plot_color(int i) { return palette[((i % N_COLORS) + N_COLORS) % N_COLORS]; }

/* margins of the plotting area inside a panel: room for the title, tick labels, axis labels */
enum { M_LEFT = 66, M_RIGHT = 14, M_TOP = 30, M_BOTTOM = 46 };
static const char *FONT = "font-family=\"DejaVu Sans, Arial, sans-serif\"";

void plot_svg_begin(FILE *f, int width, int height) {
    fprintf(f, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
               "<svg xmlns=\"http://www.w3.org/2000/svg\" version=\"1.1\" width=\"%d\" height=\"%d\" "
               "viewBox=\"0 0 %d %d\">\n"
               "<rect x=\"0\" y=\"0\" width=\"%d\" height=\"%d\" fill=\"white\"/>\n",
            width, height, width, height, width, height);
}

void plot_svg_end(FILE *f) { fprintf(f, "</svg>\n"); }

/* text with &, <, >, " escaped */
static void put_text(FILE *f, const char *s) {
    for (; s && *s; s++) {
        switch (*s) {
        case '&': fputs("&amp;", f); break;
        case '<': fputs("&lt;", f); break;
        case '>': fputs("&gt;", f); break;
        case '"': fputs("&quot;", f); break;
        default: fputc(*s, f);
        }
    }
}

static void text_at(FILE *f, double x, double y, int size, const char *anchor, const char *extra,
                    const char *s) {
    fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" font-size=\"%d\" %s text-anchor=\"%s\"%s%s>", x, y, size, FONT,
            anchor, extra ? " " : "", extra ? extra : "");
    put_text(f, s);
    fprintf(f, "</text>\n");
}

/* ---- ticks ------------------------------------------------------------------------------- */

static double nice_step(double range, int target) {
    const double raw = range / (target > 1 ? target : 1), mag = pow(10.0, floor(log10(raw))), r = raw / mag;
    return (r < 1.5 ? 1 : r < 3 ? 2 : r < 7 ? 5 : 10) * mag;
}

int plot_nice_ticks(double lo, double hi, int target, int logscale, double *ticks, int cap) {
    int n = 0;
    if (!(hi > lo)) { /* one value: a small range around it */
        const double d = lo != 0 ? fabs(lo) * 0.1 : 1.0;
        lo -= d;
        hi += d;
    }
    if (logscale && lo > 0 && hi / lo > 20) {
        for (int d = (int)floor(log10(lo)); d <= (int)ceil(log10(hi)) && n < cap; d++) {
            static const double m[] = {1, 2, 5};
            for (int k = 0; k < 3 && n < cap; k++) {
                const double v = m[k] * pow(10.0, d);
                if (v >= lo * (1 - 1e-9) && v <= hi * (1 + 1e-9)) ticks[n++] = v;
            }
        }
        if (n >= 2) return n;
        n = 0;
    }
    const double step = nice_step(hi - lo, target);
    /* from the last tick <= lo to the first >= hi, so that a linear axis can span its ticks */
    for (long k = (long)floor(lo / step); n < cap; k++) {
        const double t = (double)k * step; /* no accumulated rounding, and 0 is exactly 0 */
        if (!logscale || t > 0) ticks[n++] = t;
        if (t >= hi - step * 1e-9) break;
    }
    return n;
}

static void format_tick(double v, char *buf, size_t cap) {
    if (v != 0 && (fabs(v) >= 1e6 || fabs(v) < 1e-3)) snprintf(buf, cap, "%.2g", v);
    else snprintf(buf, cap, "%.4g", v);
}

/* ---- axes ---------------------------------------------------------------------------------- */

typedef struct {
    double px, py, pw, ph;     /* the plotting area */
    double x0, x1, y0, y1;     /* the data range shown */
    int logy;
} frame;

static double fx(const frame *fr, double v) { return fr->px + (v - fr->x0) / (fr->x1 - fr->x0) * fr->pw; }

static double fy(const frame *fr, double v) {
    const double t = fr->logy ? log(v) : v, a = fr->logy ? log(fr->y0) : fr->y0, b = fr->logy ? log(fr->y1) : fr->y1;
    return fr->py + fr->ph - (t - a) / (b - a) * fr->ph;
}

static frame frame_of(const plot_panel *p) {
    frame fr = {p->x + M_LEFT, p->y + M_TOP, p->w - M_LEFT - M_RIGHT, p->h - M_TOP - M_BOTTOM, 0, 1, 0, 1, p->logy};
    return fr;
}

static void draw_title_and_labels(FILE *f, const plot_panel *p, const frame *fr) {
    if (p->title) text_at(f, fr->px + fr->pw / 2, p->y + 18, 14, "middle", "font-weight=\"bold\"", p->title);
    if (p->xlabel) text_at(f, fr->px + fr->pw / 2, p->y + p->h - 8, 12, "middle", NULL, p->xlabel);
    if (p->ylabel) {
        char rot[96];
        const double x = p->x + 14, y = fr->py + fr->ph / 2;
        snprintf(rot, sizeof rot, "transform=\"rotate(-90 %.1f %.1f)\"", x, y);
        text_at(f, x, y, 12, "middle", rot, p->ylabel);
    }
}

/* grid lines and labels at the y ticks, the x ticks (x_ticks may be 0: category axis), the box */
static void draw_axes(FILE *f, const frame *fr, const double *xt, int nx, const double *yt, int ny) {
    char buf[32];
    fprintf(f, "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"white\" stroke=\"none\"/>\n",
            fr->px, fr->py, fr->pw, fr->ph);
    for (int i = 0; i < ny; i++) {
        const double y = fy(fr, yt[i]);
        fprintf(f, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#dddddd\" stroke-width=\"1\"/>\n",
                fr->px, y, fr->px + fr->pw, y);
        format_tick(yt[i], buf, sizeof buf);
        text_at(f, fr->px - 6, y + 4, 11, "end", NULL, buf);
    }
    for (int i = 0; i < nx; i++) {
        const double x = fx(fr, xt[i]);
        fprintf(f, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#eeeeee\" stroke-width=\"1\"/>\n",
                x, fr->py, x, fr->py + fr->ph);
        fprintf(f, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"black\" stroke-width=\"1\"/>\n",
                x, fr->py + fr->ph, x, fr->py + fr->ph + 4);
        format_tick(xt[i], buf, sizeof buf);
        text_at(f, x, fr->py + fr->ph + 17, 11, "middle", NULL, buf);
    }
    fprintf(f, "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"none\" stroke=\"black\" stroke-width=\"1\"/>\n",
            fr->px, fr->py, fr->pw, fr->ph);
}

/* A legend box; entry i is drawn by `swatch`.  Inside the plotting area's top right corner, or
 * (outside) to the right of x_right when x_right > 0. */
typedef void (*swatch_fn)(FILE *f, double x, double y, int i, const void *ctx);

static double legend_width(const char *const *labels, int n) {
    size_t longest = 0;
    for (int i = 0; i < n; i++)
        if (labels[i] && strlen(labels[i]) > longest) longest = strlen(labels[i]);
    return 36 + 6.6 * (double)longest;
}

static void draw_legend(FILE *f, const frame *fr, double x_right, const char *const *labels, int n, swatch_fn swatch,
                        const void *ctx) {
    const double w = legend_width(labels, n), h = 8 + 16.0 * n;
    const double x = x_right > 0 ? x_right + 10 : fr->px + fr->pw - w - 8, y = fr->py + 8;
    fprintf(f, "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"white\" fill-opacity=\"0.9\" stroke=\"#999999\"/>\n",
            x, y, w, h);
    for (int i = 0; i < n; i++) {
        const double yy = y + 12 + 16.0 * i;
        swatch(f, x + 6, yy, i, ctx);
        text_at(f, x + 30, yy + 4, 11, "start", NULL, labels[i] ? labels[i] : "");
    }
}

/* ---- line charts --------------------------------------------------------------------------- */

static int usable(const plot_panel *p, double x, double y) { return isfinite(x) && isfinite(y) && (!p->logy || y > 0); }

static void data_range(const plot_panel *p, const plot_series *s, int n, double r[4]) {
    r[0] = r[2] = INFINITY;
    r[1] = r[3] = -INFINITY;
    for (int k = 0; k < n; k++)
        for (int i = 0; i < s[k].n; i++) {
            if (!usable(p, s[k].x[i], s[k].y[i])) continue;
            r[0] = fmin(r[0], s[k].x[i]);
            r[1] = fmax(r[1], s[k].x[i]);
            r[2] = fmin(r[2], s[k].y[i]);
            r[3] = fmax(r[3], s[k].y[i]);
        }
    if (!(r[0] <= r[1])) r[0] = 0, r[1] = 1, r[2] = p->logy ? 1 : 0, r[3] = p->logy ? 10 : 1;
}

static void series_style(FILE *f, const plot_series *s) {
    fprintf(f, "fill=\"none\" stroke=\"%s\" stroke-width=\"%.1f\"%s", plot_color(s->color), s->width > 0 ? s->width : 1.5,
            s->dashed ? " stroke-dasharray=\"6 4\"" : "");
}

static void draw_series(FILE *f, const plot_panel *p, const frame *fr, const plot_series *s) {
    int open = 0;
    for (int i = 0; i < s->n; i++) {
        if (!usable(p, s->x[i], s->y[i])) {
            if (open) fprintf(f, "\"/>\n");
            open = 0;
            continue;
        }
        if (!open) {
            fprintf(f, "<polyline ");
            series_style(f, s);
            fprintf(f, " points=\"");
            open = 1;
        }
        fprintf(f, "%.1f,%.1f ", fx(fr, s->x[i]), fy(fr, s->y[i]));
    }
    if (open) fprintf(f, "\"/>\n");
    for (int i = 0; s->markers && i < s->n; i++)
        if (usable(p, s->x[i], s->y[i]))
            fprintf(f, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"2.6\" fill=\"%s\"/>\n", fx(fr, s->x[i]), fy(fr, s->y[i]),
                    plot_color(s->color));
}

static void line_swatch(FILE *f, double x, double y, int i, const void *ctx) {
    const plot_series *s = (const plot_series *)ctx + i;
    fprintf(f, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" ", x, y, x + 20, y);
    series_style(f, s);
    fprintf(f, "/>\n");
    if (s->markers) fprintf(f, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"2.6\" fill=\"%s\"/>\n", x + 10, y, plot_color(s->color));
}

void plot_lines(FILE *f, const plot_panel *p, const plot_series *s, int n) {
    frame fr = frame_of(p);
    double r[4], xt[32], yt[32];
    data_range(p, s, n, r);
    const int nx = plot_nice_ticks(r[0], r[1], 6, 0, xt, 32);
    fr.x0 = xt[0] < r[0] ? xt[0] : r[0];
    fr.x1 = xt[nx - 1] > r[1] ? xt[nx - 1] : r[1];
    if (p->logy) { /* a little room above and below; ticks inside the range */
        fr.y0 = r[2] / 1.04;
        fr.y1 = r[3] * 1.04;
    }
    const int nt = plot_nice_ticks(p->logy ? fr.y0 : r[2], p->logy ? fr.y1 : r[3], 6, p->logy, yt, 32);
    int ny = 0;
    for (int i = 0; i < nt; i++) /* log axis: only the ticks inside; linear: the axis spans them all */
        if (!p->logy || (yt[i] >= fr.y0 && yt[i] <= fr.y1)) yt[ny++] = yt[i];
    if (!p->logy) {
        fr.y0 = yt[0];
        fr.y1 = yt[ny - 1];
    }
    if (!(fr.x1 > fr.x0)) fr.x1 = fr.x0 + 1;
    if (!(fr.y1 > fr.y0)) fr.y1 = fr.y0 + 1;
    draw_title_and_labels(f, p, &fr);
    draw_axes(f, &fr, xt, nx, yt, ny);
    for (int k = 0; k < n; k++) draw_series(f, p, &fr, &s[k]);
    const char *labels[64];
    int nl = n < 64 ? n : 64;
    for (int k = 0; k < nl; k++) labels[k] = s[k].label;
    draw_legend(f, &fr, 0, labels, nl, line_swatch, s);
}

/* ---- stacked bars -------------------------------------------------------------------------- */

typedef struct {
    const int *part; /* legend entry -> part index, or -1 for the marker */
} bar_legend;

static void bar_swatch(FILE *f, double x, double y, int i, const void *ctx) {
    const bar_legend *bl = ctx;
    if (bl->part[i] < 0)
        fprintf(f, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"black\" stroke-width=\"2\" stroke-dasharray=\"4 2\"/>\n",
                x, y, x + 20, y);
    else
        fprintf(f, "<rect x=\"%.1f\" y=\"%.1f\" width=\"20\" height=\"10\" fill=\"%s\"/>\n", x, y - 5, plot_color(bl->part[i]));
}

void plot_stacked_bars(FILE *f, const plot_panel *p, const plot_bar *bars, int n_bars,
                       const char *const *part_names, int n_parts, const char *marker_label) {
    frame fr = frame_of(p);
    double top = 0, yt[32];
    int used[64] = {0};
    if (n_parts > 64) n_parts = 64;
    for (int b = 0; b < n_bars; b++) {
        double sum = 0;
        for (int k = 0; k < n_parts; k++) {
            sum += bars[b].parts[k] > 0 ? bars[b].parts[k] : 0;
            if (bars[b].parts[k] > 0) used[k] = 1;
        }
        top = fmax(top, fmax(sum, bars[b].marker));
    }
    /* the legend: the parts that occur, then the marker; it sits right of the bars */
    const char *labels[65];
    int part[65], nl = 0;
    for (int k = 0; k < n_parts; k++)
        if (used[k]) {
            labels[nl] = part_names[k];
            part[nl++] = k;
        }
    if (marker_label) {
        labels[nl] = marker_label;
        part[nl++] = -1;
    }
    fr.pw -= legend_width(labels, nl) + 14;
    const int ny = plot_nice_ticks(0, top > 0 ? top * 1.05 : 1, 6, 0, yt, 32);
    fr.y0 = 0;
    fr.y1 = yt[ny - 1];
    draw_title_and_labels(f, p, &fr);
    draw_axes(f, &fr, NULL, 0, yt, ny);
    const double slot = fr.pw / (n_bars > 0 ? n_bars : 1), bw = slot * 0.55;
    for (int b = 0; b < n_bars; b++) {
        const double x = fr.px + slot * b + (slot - bw) / 2;
        double base = 0;
        for (int k = 0; k < n_parts; k++) {
            const double v = bars[b].parts[k] > 0 ? bars[b].parts[k] : 0;
            if (v <= 0) continue;
            const double y_hi = fy(&fr, base + v), y_lo = fy(&fr, base);
            fprintf(f, "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"%s\"/>\n", x, y_hi, bw,
                    y_lo - y_hi, plot_color(k));
            base += v;
        }
        if (bars[b].marker > 0) {
            const double y = fy(&fr, bars[b].marker);
            fprintf(f, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"black\" stroke-width=\"2\" stroke-dasharray=\"4 2\"/>\n",
                    x - 6, y, x + bw + 6, y);
        }
        text_at(f, x + bw / 2, fr.py + fr.ph + 17, 11, "middle", NULL, bars[b].label ? bars[b].label : "");
    }
    bar_legend bl = {part};
    draw_legend(f, &fr, fr.px + fr.pw, labels, nl, bar_swatch, &bl);
}
