/* Command-line options: "--name value" or "--name=value"; underscores in names are accepted as
 * dashes (--num_training_steps == --num-training-steps), as the LoQT/GaLore scripts spell them.
 * Every option is declared in a table with its help text; --help prints the table with the
 * current (default) values. */
#ifndef LOQT_OPTIONS_H
#define LOQT_OPTIONS_H

#include <stddef.h>

typedef enum { OPT_INT, OPT_LONG, OPT_FLOAT, OPT_STRING, OPT_FLAG, OPT_CHOICE, OPT_SET } opt_type;

typedef struct {
    const char *name;    /* without the leading dashes, dash-spelled */
    opt_type type;
    void *dst;           /* int*, long*, double*, const char**, int* (flag), int* (choice index),
                          * int* (set: a bit mask, bit k = the k-th name) */
    const char *help;
    const char *choices; /* OPT_STRING: "a|b|c" to restrict values, or NULL; OPT_CHOICE, OPT_SET:
                          * "a|b|c" (a set is given as "a,c" or "all") */
} opt_spec;

/* Parses argv[0..argc) (after the command name).  Positional arguments are an error.
 * On --help prints usage + options and exits 0.  On a bad option prints one error line and
 * exits 2. */
void opts_parse(const opt_spec *specs, int n_specs, int argc, char **argv, const char *command,
                const char *summary);
/* The parse alone, for tests and fuzzing: 0, 1 when --help (or -h) was seen, or -1 with a
 * one-line message in err (no prefix).  opts_parse is this plus printing and exiting. */
int opts_parse_args(const opt_spec *specs, int n_specs, int argc, char **argv, char *err, size_t cap);
/* Sets o's destination from the value as written on the command line: 0, or -1 with a one-line
 * message in err (a flag takes 1/true/0/false). */
int opts_set_value(const opt_spec *o, const char *v, char *err, size_t cap);
/* 1 if the option was given on the command line in the last opts_parse call. */
int opts_given(const char *name);
/* Printed by --help after the option table (the methods' own options). */
void opts_set_help_extra(void (*print)(void));
/* "--foo_bar=1" -> "foo-bar" (the option name as specs spell it); "" for a non-option. */
void opts_name_of(const char *arg, char *name, size_t cap);

#endif
