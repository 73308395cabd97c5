/* libFuzzer target for json_parse (built and run by scripts/fuzz.sh).
 *
 * Beyond "no crash, no sanitizer report", it checks properties of every accepted input:
 *  - every decoded string and key is well-formed UTF-8 and within its stated length;
 *  - writing a decoded string with json_write_string_n and parsing it back gives the same bytes;
 *  - json_get finds every key of an object (the last duplicate wins);
 * and of every rejected input: the error is one line naming a byte offset. */
#include "core/error.h"
#include "core/json.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void roundtrip(const char *s, size_t len) {
    char *text = NULL;
    size_t tlen = 0;
    FILE *m = open_memstream(&text, &tlen);
    if (!m) abort();
    json_write_string_n(m, s, len);
    fclose(m);
    json_value *v = json_parse(text, tlen);
    if (!v || v->type != JSON_STRING || v->len != len || memcmp(v->string, s, len) != 0) {
        fprintf(stderr, "string round trip failed: %s\n", v ? "different bytes" : loqt_last_error());
        abort();
    }
    json_free(v);
    free(text);
}

static void check(const json_value *v) {
    switch (v->type) {
    case JSON_STRING:
        if (!json_utf8_valid(v->string, v->len) || v->string[v->len] != 0) abort();
        roundtrip(v->string, v->len);
        break;
    case JSON_ARRAY:
        for (size_t i = 0; i < v->len; i++) check(&v->items[i]);
        break;
    case JSON_OBJECT:
        for (size_t i = 0; i < v->len; i++) {
            size_t klen = strlen(v->keys[i]);
            if (!json_utf8_valid(v->keys[i], klen)) abort();
            const json_value *got = json_get(v, v->keys[i]);
            if (!got) abort();
            /* got must be this member or a later one with the same key */
            if (got < &v->items[i] || strcmp(v->keys[got - v->items], v->keys[i]) != 0) abort();
            check(&v->items[i]);
        }
        break;
    default:
        break;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    loqt_clear_error();
    json_value *v = json_parse((const char *)data, size);
    if (!v) {
        const char *e = loqt_last_error();
        if (!strstr(e, "at byte") || strchr(e, '\n')) {
            fprintf(stderr, "bad error message: %s\n", e);
            abort();
        }
        return 0;
    }
    check(v);
    json_free(v);
    return 0;
}
