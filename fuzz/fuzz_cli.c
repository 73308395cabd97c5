/* libFuzzer target for the command-line parser: the input is split at NUL bytes into arguments
 * and parsed against a table with every option type (integer, long, number, string with and
 * without choices, flag, choice index, set) and every registered method's own options, as
 * `loqt train` builds it.  A rejection is one line; an accepted choice is within its list, an
 * accepted set a non-empty subset of its names. */
#include "cli/options.h"
#include "methods/linear.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { MAX_ARGS = 64, MAX_SPECS = 256 };

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char *buf = malloc(size + 1);
    memcpy(buf, data, size);
    buf[size] = 0;
    char *argv[MAX_ARGS];
    int argc = 0;
    for (size_t i = 0; i <= size && argc < MAX_ARGS;) {
        argv[argc++] = buf + i;
        i += strlen(buf + i) + 1;
    }
    int iv = 0, flag = 0, choice = 0, set = 1, mint[MAX_SPECS];
    long lv = 0;
    double dv = 0, mdbl[MAX_SPECS];
    const char *sv = NULL, *cv = NULL;
    opt_spec specs[MAX_SPECS] = {
        {"int", OPT_INT, &iv, "", NULL},         {"long", OPT_LONG, &lv, "", NULL},
        {"num", OPT_FLOAT, &dv, "", NULL},       {"str", OPT_STRING, &sv, "", NULL},
        {"pick", OPT_STRING, &cv, "", "a|bb|c"}, {"flag", OPT_FLAG, &flag, "", NULL},
        {"choice", OPT_CHOICE, &choice, "", "x|y|zz"}, {"set", OPT_SET, &set, "", "p|qq|r"},
    };
    int n = 8;
    for (int k = 0; k < method_count(); k++)
        for (int i = 0; i < method_at(k)->n_options && n < MAX_SPECS; i++, n++) {
            const method_option *o = &method_at(k)->options[i];
            opt_type t = o->type == MOPT_FLOAT ? OPT_FLOAT : o->type == MOPT_FLAG ? OPT_FLAG
                       : o->type == MOPT_CHOICE ? OPT_CHOICE : o->type == MOPT_SET ? OPT_SET : OPT_INT;
            mint[n] = 0;
            mdbl[n] = 0;
            specs[n] = (opt_spec){o->name, t, t == OPT_FLOAT ? (void *)&mdbl[n] : (void *)&mint[n], o->help,
                                  o->type == MOPT_CHOICE || o->type == MOPT_SET ? o->choices : NULL};
        }
    char err[512];
    int rc = opts_parse_args(specs, n, argc, argv, err, sizeof err);
    if (rc < 0 && (strchr(err, '\n') || !err[0])) abort();
    if (rc == 0 && (choice < 0 || choice > 2)) abort();
    if (rc == 0 && (set < 1 || set > 7)) abort();
    if (rc == 0 && cv && strcmp(cv, "a") && strcmp(cv, "bb") && strcmp(cv, "c")) abort();
    free(buf);
    return 0;
}
