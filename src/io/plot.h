/* Small SVG charts for reports (`loqt compare`): line charts with axes, ticks, grid and a legend
 * (linear or logarithmic y), and stacked bar charts.  A chart is a panel placed inside one SVG
 * document, so a report can put several side by side:
 *
 *   plot_svg_begin(f, 1200, 480);
 *   plot_lines(f, &left_panel, series, n_series);
 *   plot_stacked_bars(f, &right_panel, bars, n_bars, part_names, n_parts);
 *   plot_svg_end(f);
 *
 * Everything is written as plain SVG 1.1 elements (no scripts, no external fonts), so any browser
 * or converter renders it. */
#ifndef LOQT_PLOT_H
#define LOQT_PLOT_H

#include <stdio.h>

typedef struct {
    const char *title, *xlabel, *ylabel;
    int logy;             /* logarithmic y axis (every y must be > 0) */
    double x, y, w, h;    /* the panel's box in the document, pixels (axes and labels inside it) */
} plot_panel;

typedef struct {
    const char *label;    /* legend text */
    const double *x, *y;  /* n points; non-finite points are skipped (the line is broken there) */
    int n;
    int color;            /* index into the palette (wraps around) */
    int dashed;
    int markers;          /* a dot at every point */
    double width;         /* stroke width in pixels; 0 = 1.5 */
} plot_series;

typedef struct {
    const char *label;    /* under the bar */
    const double *parts;  /* n_parts stacked values (>= 0) */
    double marker;        /* a horizontal tick at this value (e.g. the planned total); <= 0: none */
} plot_bar;

void plot_svg_begin(FILE *f, int width, int height);
void plot_svg_end(FILE *f);

void plot_lines(FILE *f, const plot_panel *p, const plot_series *s, int n);
/* One bar per entry, parts stacked in the palette's colours, a legend of the parts that are
 * non-zero somewhere, and the marker legend as marker_label (NULL: none). */
void plot_stacked_bars(FILE *f, const plot_panel *p, const plot_bar *bars, int n_bars,
                       const char *const *part_names, int n_parts, const char *marker_label);

/* Up to cap "nice" tick values (1, 2 or 5 times a power of ten apart) covering [lo, hi], about
 * `target` of them; returns the count.  Used for both axes (on a log axis the values are placed
 * logarithmically; a range wider than a factor of 20 gets 1-2-5 ticks per decade instead). */
int plot_nice_ticks(double lo, double hi, int target, int logscale, double *ticks, int cap);

/* The palette colour of index i, "#rrggbb". */
const char *plot_color(int i);

#endif
