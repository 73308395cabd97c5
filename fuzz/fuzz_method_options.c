/* libFuzzer target for the method options of trainer metadata (checkpoint JSON "method_opts"),
 * parsed for every registered method.  Accepted options must be within their declared ranges,
 * and writing them and parsing them back must give the same bytes of config. */
#include "core/error.h"
#include "methods/linear.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char *text = malloc(size + 1);
    memcpy(text, data, size);
    text[size] = 0; /* the metadata value is a C string */
    for (int k = 0; k < method_count(); k++) {
        const linear_method *m = method_at(k);
        method_opts o, back;
        method_opts_defaults(&o, m);
        loqt_clear_error();
        if (method_config_parse_json(m, &o, text)) {
            if (strchr(loqt_last_error(), '\n') || !loqt_last_error()[0]) abort();
            continue;
        }
        if (method_config_validate(m, &o)) {
            fprintf(stderr, "%s: accepted options out of range: %s\n", m->name, loqt_last_error());
            abort();
        }
        char *js = NULL;
        size_t len = 0;
        FILE *f = open_memstream(&js, &len);
        method_config_write_json(m, &o, f);
        fclose(f);
        method_opts_defaults(&back, m);
        if (method_config_parse_json(m, &back, js) || memcmp(o.config, back.config, m->config_size)) {
            fprintf(stderr, "%s: options do not round trip: %s\n", m->name, js);
            abort();
        }
        free(js);
    }
    free(text);
    return 0;
}
