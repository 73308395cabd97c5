#include "cli/options.h"

#include "core/choices.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_GIVEN 128
static char given[MAX_GIVEN][64];
static int n_given;

static void normalize(char *dst, size_t cap, const char *src) {
    size_t i = 0;
    for (; src[i] && src[i] != '=' && i + 1 < cap; i++) dst[i] = src[i] == '_' ? '-' : src[i];
    dst[i] = 0;
}

static void (*help_extra)(void);

void opts_set_help_extra(void (*print)(void)) { help_extra = print; }

void opts_name_of(const char *arg, char *name, size_t cap) {
    if (strncmp(arg, "--", 2) != 0) {
        name[0] = 0;
        return;
    }
    normalize(name, cap, arg + 2);
}

static void usage_exit(const opt_spec *s, int n, const char *command, const char *summary) {
    printf("usage: loqt %s [options]\n\n%s\n\noptions:\n", command, summary);
    for (int i = 0; i < n; i++) {
        char def[96] = "";
        switch (s[i].type) {
        case OPT_INT: snprintf(def, sizeof def, "%d", *(int *)s[i].dst); break;
        case OPT_LONG: snprintf(def, sizeof def, "%ld", *(long *)s[i].dst); break;
        case OPT_FLOAT: snprintf(def, sizeof def, "%g", *(double *)s[i].dst); break;
        case OPT_STRING: {
            const char *v = *(const char **)s[i].dst;
            snprintf(def, sizeof def, "%s", v ? v : "(none)");
            break;
        }
        case OPT_CHOICE: choice_at(s[i].choices, *(int *)s[i].dst, def, sizeof def); break;
        case OPT_SET: choice_set_format(s[i].choices, *(unsigned *)s[i].dst, def, sizeof def); break;
        case OPT_FLAG: break;
        }
        const char *arg = s[i].type == OPT_FLAG ? "" : s[i].type == OPT_SET ? "LIST" : s[i].choices ? s[i].choices : "VALUE";
        char left[128];
        snprintf(left, sizeof left, "--%s %s", s[i].name, arg);
        printf("  %-36s %s", left, s[i].help);
        if (s[i].type == OPT_SET) printf(" (comma-separated, of %s; or all)", s[i].choices);
        if (s[i].type != OPT_FLAG) printf(" [default: %s]", def);
        printf("\n");
    }
    printf("  %-36s %s\n", "--help", "show this help");
    if (help_extra) help_extra();
    exit(0);
}

/* err <- the message; returns -1 */
static int fail(char *err, size_t cap, const char *fmt, const char *a, const char *b) {
    snprintf(err, cap, fmt, a, b);
    /* the message is one line whatever the argument held */
    for (char *p = err; *p; p++)
        if ((unsigned char)*p < 0x20 || *p == 0x7f) *p = '?';
    return -1;
}

int opts_set_value(const opt_spec *o, const char *v, char *err, size_t cap) {
    const char *name = o->name;
    char *end = NULL;
    errno = 0;
    switch (o->type) {
    case OPT_FLAG:
        if (!strcmp(v, "1") || !strcmp(v, "true")) *(int *)o->dst = 1;
        else if (!strcmp(v, "0") || !strcmp(v, "false")) *(int *)o->dst = 0;
        else return fail(err, cap, "--%s takes no value or true/false, got '%s'", name, v);
        break;
    case OPT_INT: {
        long x = strtol(v, &end, 10);
        if (!*v || *end || errno || x < -2147483647L || x > 2147483647L)
            return fail(err, cap, "--%s expects an integer, got '%s'", name, v);
        *(int *)o->dst = (int)x;
        break;
    }
    case OPT_LONG: {
        long x = strtol(v, &end, 10);
        if (!*v || *end || errno) return fail(err, cap, "--%s expects an integer, got '%s'", name, v);
        *(long *)o->dst = x;
        break;
    }
    case OPT_FLOAT: {
        double x = strtod(v, &end);
        if (!*v || *end || errno || !isfinite(x)) return fail(err, cap, "--%s expects a number, got '%s'", name, v);
        *(double *)o->dst = x;
        break;
    }
    case OPT_STRING:
    case OPT_CHOICE: {
        int k = o->choices ? choice_index(o->choices, v) : 0;
        if (k < 0) {
            char msg[200];
            snprintf(msg, sizeof msg, "--%s must be one of %s, got '%%s'%%s", name, o->choices);
            return fail(err, cap, msg, v, "");
        }
        if (o->type == OPT_CHOICE) *(int *)o->dst = k;
        else *(const char **)o->dst = v;
        break;
    }
    case OPT_SET: {
        char bad[64];
        if (choice_set_parse(o->choices, v, (unsigned *)o->dst, bad, sizeof bad)) {
            char msg[300];
            snprintf(msg, sizeof msg, "--%s: %s (a comma-separated list of %s, or all)%%s", name,
                     *bad ? "unknown name '%s'" : "empty name%s", o->choices);
            return fail(err, cap, msg, bad, "");
        }
        break;
    }
    }
    return 0;
}

int opts_parse_args(const opt_spec *s, int n, int argc, char **argv, char *err, size_t cap) {
    n_given = 0;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) return 1;
        if (strncmp(a, "--", 2) != 0) return fail(err, cap, "unexpected argument '%s'%s", a, "");
        char name[64];
        normalize(name, sizeof name, a + 2);
        const char *eq = strchr(a, '=');
        const opt_spec *o = NULL;
        for (int j = 0; j < n; j++)
            if (strcmp(s[j].name, name) == 0) o = &s[j];
        if (!o) return fail(err, cap, "unknown option '--%s'%s", name, "");
        if (n_given < MAX_GIVEN) snprintf(given[n_given++], sizeof given[0], "%s", name);
        if (o->type == OPT_FLAG && !eq) {
            *(int *)o->dst = 1;
            continue;
        }
        const char *v = eq ? eq + 1 : (i + 1 < argc ? argv[++i] : NULL);
        if (!v) return fail(err, cap, "--%s needs a value%s", name, "");
        if (opts_set_value(o, v, err, cap)) return -1;
    }
    return 0;
}

void opts_parse(const opt_spec *s, int n, int argc, char **argv, const char *command,
                const char *summary) {
    char err[512];
    int rc = opts_parse_args(s, n, argc, argv, err, sizeof err);
    if (rc == 1) usage_exit(s, n, command, summary);
    if (rc < 0) {
        fprintf(stderr, "loqt %s: error: %s (see 'loqt %s --help')\n", command, err, command);
        exit(2);
    }
}

int opts_given(const char *name) {
    for (int i = 0; i < n_given; i++)
        if (strcmp(given[i], name) == 0) return 1;
    return 0;
}
