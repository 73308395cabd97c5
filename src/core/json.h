/* A small JSON reader (RFC 8259) for configs, safetensors headers and trainer state.
 * Strict: rejects trailing garbage, bad escapes, invalid UTF-8 in strings, nesting deeper than
 * 64, and inputs over 256 MiB.  Errors name the byte offset: "json: expected ',' at byte 132".
 * Object keys are C strings, so a key containing \u0000 is rejected. */
#ifndef LOQT_JSON_H
#define LOQT_JSON_H

#include <stddef.h>

typedef enum { JSON_NULL, JSON_BOOL, JSON_NUMBER, JSON_STRING, JSON_ARRAY, JSON_OBJECT } json_type;

typedef struct json_value {
    json_type type;
    int boolean;               /* JSON_BOOL */
    double number;             /* JSON_NUMBER */
    char *string;              /* JSON_STRING: NUL-terminated UTF-8 (may contain \0 via \u0000: see len) */
    size_t len;                /* string length in bytes, or element count of an array/object */
    struct json_value *items;  /* array elements, or object values */
    char **keys;               /* object keys (same order as items) */
} json_value;

/* Parses text[0..len).  Returns NULL and sets loqt's last error on failure. */
json_value *json_parse(const char *text, size_t len);
void json_free(json_value *v);

/* Object member by key (last one wins on duplicates), or NULL. */
const json_value *json_get(const json_value *obj, const char *key);
/* Typed getters: return 0 on success, -1 (with error naming the key) if missing or mistyped. */
int json_get_number(const json_value *obj, const char *key, double *out);
int json_get_int(const json_value *obj, const char *key, long long *out); /* must be integral */
int json_get_string(const json_value *obj, const char *key, const char **out);
int json_get_bool(const json_value *obj, const char *key, int *out);

/* Writes s as a JSON string literal (quotes and escapes) to f.  Bytes that are not well-formed
 * UTF-8 are written as \ufffd, so the output always parses. */
#include <stdio.h>
void json_write_string(FILE *f, const char *s);
/* The same for s[0..len), which may contain NUL bytes (written as \u0000). */
void json_write_string_n(FILE *f, const char *s, size_t len);

/* Writes v with the printf format fmt (one double conversion, e.g. "%.6f"), or null when v is
 * not finite: JSON has no NaN or infinity, and a line holding one would not parse. */
void json_write_number(FILE *f, const char *fmt, double v);

/* 1 if s[0..len) is well-formed UTF-8 (no overlongs, surrogates or code points > U+10FFFF). */
int json_utf8_valid(const char *s, size_t len);

#endif
