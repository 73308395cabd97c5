/* Command-line options: "--name value" or "--name=value"; underscores in names are accepted as
 * dashes (--num_training_steps == --num-training-steps), as the LoQT/GaLore scripts spell them.
 * Every option is declared in a table with its help text; --help prints the table with the
 * current (default) values. */
#ifndef LOQT_OPTIONS_H
#define LOQT_OPTIONS_H

typedef enum { OPT_INT, OPT_LONG, OPT_FLOAT, OPT_STRING, OPT_FLAG } opt_type;

typedef struct {
    const char *name;    /* without the leading dashes, dash-spelled */
    opt_type type;
    void *dst;           /* int*, long*, double*, const char**, int* (flag) */
    const char *help;
    const char *choices; /* for OPT_STRING: "a|b|c" to restrict values, or NULL */
} opt_spec;

/* Parses argv[0..argc) (after the command name).  Positional arguments are an error.
 * On --help prints usage + options and exits 0.  On a bad option prints one error line and
 * exits 2. */
void opts_parse(const opt_spec *specs, int n_specs, int argc, char **argv, const char *command,
                const char *summary);
/* 1 if the option was given on the command line in the last opts_parse call. */
int opts_given(const char *name);

#endif
