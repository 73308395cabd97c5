/* Strict RFC 8259 reader: a recursive-descent parser that builds a tree of json_value.
 *
 * Why it is shaped this way:
 * - Every container is kept in a freeable state while it is being filled (a child slot is zeroed
 *   and counted before it is parsed), so on any error the caller frees the whole partial tree
 *   with json_free and nothing leaks.
 * - Strings are decoded in two passes: the first finds the closing quote, which bounds the
 *   output (an escape never decodes to more bytes than it spans), the second decodes and
 *   validates.  Neither pass reads past the closing quote.
 * - Numbers are matched against the RFC grammar first and only then handed to strtod, so strtod's
 *   extensions (hex, "inf", "nan", leading '+', locale forms) are never accepted.
 * - Object keys are C strings, so a key containing \u0000 is rejected: it could not be looked up
 *   and two different keys would compare equal. */
#include "core/json.h"

#include "core/error.h"

#include <locale.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define JSON_MAX_DEPTH 64
#define JSON_MAX_BYTES ((size_t)256 << 20)

typedef struct {
    const unsigned char *s;
    size_t n, pos;
    int depth;
} parser;

static int fail(size_t at, const char *what) {
    return loqt_set_error("json: %s at byte %zu", what, at);
}

/* Fails naming the character found at p->pos (or the end of input). */
static int fail_here(const parser *p, const char *expected) {
    if (p->pos >= p->n) return loqt_set_error("json: %s, found end of input at byte %zu", expected, p->pos);
    unsigned c = p->s[p->pos];
    if (c >= 0x20 && c < 0x7f)
        return loqt_set_error("json: %s, found '%c' at byte %zu", expected, (char)c, p->pos);
    return loqt_set_error("json: %s, found byte 0x%02x at byte %zu", expected, c, p->pos);
}

static void skip_ws(parser *p) {
    while (p->pos < p->n) {
        unsigned char c = p->s[p->pos];
        if (c != ' ' && c != '\t' && c != '\n' && c != '\r') break;
        p->pos++;
    }
}

/* Length of the well-formed UTF-8 sequence at s[0..n), or 0 if it is not one (overlong forms,
 * UTF-16 surrogates and code points above U+10FFFF are not well-formed). */
static size_t utf8_seq(const unsigned char *s, size_t n) {
    unsigned c = s[0];
    if (c < 0x80) return 1;
    if (c < 0xc2) return 0; /* stray continuation byte or overlong 2-byte form */
    if (c < 0xe0) return n >= 2 && (s[1] & 0xc0) == 0x80 ? 2 : 0;
    if (c < 0xf0) {
        if (n < 3) return 0;
        unsigned lo = c == 0xe0 ? 0xa0 : 0x80, hi = c == 0xed ? 0x9f : 0xbf;
        return s[1] >= lo && s[1] <= hi && (s[2] & 0xc0) == 0x80 ? 3 : 0;
    }
    if (c < 0xf5) {
        if (n < 4) return 0;
        unsigned lo = c == 0xf0 ? 0x90 : 0x80, hi = c == 0xf4 ? 0x8f : 0xbf;
        return s[1] >= lo && s[1] <= hi && (s[2] & 0xc0) == 0x80 && (s[3] & 0xc0) == 0x80 ? 4 : 0;
    }
    return 0;
}

int json_utf8_valid(const char *s, size_t len) {
    const unsigned char *u = (const unsigned char *)s;
    for (size_t i = 0; i < len;) {
        size_t k = utf8_seq(u + i, len - i);
        if (!k) return 0;
        i += k;
    }
    return 1;
}

static size_t put_utf8(char *out, uint32_t cp) {
    if (cp < 0x80) {
        out[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (char)(0xc0 | (cp >> 6));
        out[1] = (char)(0x80 | (cp & 0x3f));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (char)(0xe0 | (cp >> 12));
        out[1] = (char)(0x80 | ((cp >> 6) & 0x3f));
        out[2] = (char)(0x80 | (cp & 0x3f));
        return 3;
    }
    out[0] = (char)(0xf0 | (cp >> 18));
    out[1] = (char)(0x80 | ((cp >> 12) & 0x3f));
    out[2] = (char)(0x80 | ((cp >> 6) & 0x3f));
    out[3] = (char)(0x80 | (cp & 0x3f));
    return 4;
}

/* Four hex digits at s[i..i+4).  The caller guarantees s[end] is the closing quote, which is not a
 * hex digit, so checking digit by digit never reads past it. */
static int hex4(const unsigned char *s, size_t i, uint32_t *out) {
    uint32_t v = 0;
    for (int k = 0; k < 4; k++) {
        unsigned c = s[i + k];
        v <<= 4;
        if (c >= '0' && c <= '9') v |= c - '0';
        else if (c >= 'a' && c <= 'f') v |= c - 'a' + 10;
        else if (c >= 'A' && c <= 'F') v |= c - 'A' + 10;
        else return -1;
    }
    *out = v;
    return 0;
}

/* Parses the string literal at p->pos (which holds '"'). */
static int parse_string(parser *p, char **out, size_t *out_len) {
    const unsigned char *s = p->s;
    size_t start = p->pos, end = start + 1;
    while (end < p->n && s[end] != '"') end += s[end] == '\\' ? 2 : 1;
    if (end >= p->n) return fail(start, "unterminated string starting");
    char *buf = malloc(end - start); /* span between the quotes + 1 for the NUL */
    if (!buf) return fail(start, "out of memory for string");
    size_t k = 0, i = start + 1;
    while (i < end) {
        unsigned c = s[i];
        if (c == '\\') {
            unsigned e = s[i + 1]; /* exists: a backslash just before the end quote would escape it */
            uint32_t cp;
            switch (e) {
            case '"': case '\\': case '/': buf[k++] = (char)e; i += 2; continue;
            case 'b': buf[k++] = '\b'; i += 2; continue;
            case 'f': buf[k++] = '\f'; i += 2; continue;
            case 'n': buf[k++] = '\n'; i += 2; continue;
            case 'r': buf[k++] = '\r'; i += 2; continue;
            case 't': buf[k++] = '\t'; i += 2; continue;
            case 'u': break;
            default: free(buf); return fail(i, "invalid escape in string");
            }
            if (hex4(s, i + 2, &cp)) { free(buf); return fail(i, "invalid \\u escape"); }
            size_t at = i;
            i += 6;
            if (cp >= 0xdc00 && cp <= 0xdfff) { free(buf); return fail(at, "unpaired low surrogate"); }
            if (cp >= 0xd800 && cp <= 0xdbff) {
                uint32_t lo;
                if (s[i] != '\\' || s[i + 1] != 'u' || hex4(s, i + 2, &lo) || lo < 0xdc00 || lo > 0xdfff) {
                    free(buf);
                    return fail(at, "unpaired high surrogate");
                }
                cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
                i += 6;
            }
            k += put_utf8(buf + k, cp);
        } else if (c < 0x20) {
            free(buf);
            return fail(i, "unescaped control character in string");
        } else if (c < 0x80) {
            buf[k++] = (char)c;
            i++;
        } else {
            size_t len = utf8_seq(s + i, end - i);
            if (!len) { free(buf); return fail(i, "invalid UTF-8 in string"); }
            memcpy(buf + k, s + i, len);
            k += len;
            i += len;
        }
    }
    buf[k] = 0;
    *out = buf;
    *out_len = k;
    p->pos = end + 1;
    return 0;
}

static int is_digit(const parser *p) { return p->pos < p->n && p->s[p->pos] >= '0' && p->s[p->pos] <= '9'; }

static int parse_number(parser *p, double *out) {
    size_t start = p->pos;
    if (p->s[p->pos] == '-') p->pos++;
    if (!is_digit(p)) return fail_here(p, "expected a digit");
    if (p->s[p->pos] == '0') p->pos++;
    else while (is_digit(p)) p->pos++;
    if (p->pos < p->n && p->s[p->pos] == '.') {
        p->pos++;
        if (!is_digit(p)) return fail_here(p, "expected a digit after '.'");
        while (is_digit(p)) p->pos++;
    }
    if (p->pos < p->n && (p->s[p->pos] == 'e' || p->s[p->pos] == 'E')) {
        p->pos++;
        if (p->pos < p->n && (p->s[p->pos] == '+' || p->s[p->pos] == '-')) p->pos++;
        if (!is_digit(p)) return fail_here(p, "expected a digit in the exponent");
        while (is_digit(p)) p->pos++;
    }
    /* The lexeme is not NUL-terminated in the input: copy it. */
    size_t len = p->pos - start;
    char small[64], *buf = len < sizeof small ? small : malloc(len + 1);
    if (!buf) return fail(start, "out of memory for number");
    memcpy(buf, p->s + start, len);
    buf[len] = 0;
    /* strtod follows LC_NUMERIC; JSON always uses '.', so translate if a locale was set. */
    char dp = localeconv()->decimal_point[0];
    if (dp && dp != '.') {
        char *dot = strchr(buf, '.');
        if (dot) *dot = dp;
    }
    double v = strtod(buf, NULL);
    if (buf != small) free(buf);
    if (!isfinite(v)) return fail(start, "number out of the range of a double");
    *out = v;
    return 0;
}

/* Grows a container so that one more slot exists. */
static int grow(json_value *v, size_t *cap, int with_keys, size_t at) {
    if (v->len < *cap) return 0;
    size_t nc = *cap ? *cap * 2 : 4;
    if (nc > SIZE_MAX / sizeof(json_value)) return fail(at, "out of memory for container");
    json_value *items = realloc(v->items, nc * sizeof *items);
    if (!items) return fail(at, "out of memory for container");
    v->items = items;
    if (with_keys) {
        char **keys = realloc(v->keys, nc * sizeof *keys);
        if (!keys) return fail(at, "out of memory for container");
        v->keys = keys;
    }
    *cap = nc;
    return 0;
}

static int parse_value(parser *p, json_value *v);

static int parse_array(parser *p, json_value *v) {
    if (++p->depth > JSON_MAX_DEPTH) return fail(p->pos, "nesting deeper than 64 levels");
    v->type = JSON_ARRAY;
    p->pos++;
    size_t cap = 0;
    skip_ws(p);
    if (p->pos < p->n && p->s[p->pos] == ']') {
        p->pos++;
        p->depth--;
        return 0;
    }
    for (;;) {
        if (grow(v, &cap, 0, p->pos)) return -1;
        json_value *item = &v->items[v->len++];
        memset(item, 0, sizeof *item);
        if (parse_value(p, item)) return -1;
        skip_ws(p);
        if (p->pos < p->n && p->s[p->pos] == ',') { p->pos++; continue; }
        if (p->pos < p->n && p->s[p->pos] == ']') { p->pos++; break; }
        return fail_here(p, "expected ',' or ']' in array");
    }
    p->depth--;
    return 0;
}

static int parse_object(parser *p, json_value *v) {
    if (++p->depth > JSON_MAX_DEPTH) return fail(p->pos, "nesting deeper than 64 levels");
    v->type = JSON_OBJECT;
    p->pos++;
    size_t cap = 0;
    skip_ws(p);
    if (p->pos < p->n && p->s[p->pos] == '}') {
        p->pos++;
        p->depth--;
        return 0;
    }
    for (;;) {
        skip_ws(p);
        if (p->pos >= p->n || p->s[p->pos] != '"') return fail_here(p, "expected a string key");
        if (grow(v, &cap, 1, p->pos)) return -1;
        size_t i = v->len++, key_at = p->pos, klen;
        memset(&v->items[i], 0, sizeof v->items[i]);
        v->keys[i] = NULL;
        if (parse_string(p, &v->keys[i], &klen)) return -1;
        if (memchr(v->keys[i], 0, klen)) return fail(key_at, "object key contains \\u0000");
        skip_ws(p);
        if (p->pos >= p->n || p->s[p->pos] != ':') return fail_here(p, "expected ':' after key");
        p->pos++;
        if (parse_value(p, &v->items[i])) return -1;
        skip_ws(p);
        if (p->pos < p->n && p->s[p->pos] == ',') { p->pos++; continue; }
        if (p->pos < p->n && p->s[p->pos] == '}') { p->pos++; break; }
        return fail_here(p, "expected ',' or '}' in object");
    }
    p->depth--;
    return 0;
}

static int literal(parser *p, const char *word) {
    size_t n = strlen(word);
    if (p->n - p->pos < n || memcmp(p->s + p->pos, word, n) != 0) return fail_here(p, "expected a value");
    p->pos += n;
    return 0;
}

static int parse_value(parser *p, json_value *v) {
    skip_ws(p);
    if (p->pos >= p->n) return fail_here(p, "expected a value");
    switch (p->s[p->pos]) {
    case '{': return parse_object(p, v);
    case '[': return parse_array(p, v);
    case '"': v->type = JSON_STRING; return parse_string(p, &v->string, &v->len);
    case 't': v->type = JSON_BOOL; v->boolean = 1; return literal(p, "true");
    case 'f': v->type = JSON_BOOL; v->boolean = 0; return literal(p, "false");
    case 'n': v->type = JSON_NULL; return literal(p, "null");
    default:
        if (p->s[p->pos] == '-' || is_digit(p)) {
            v->type = JSON_NUMBER;
            return parse_number(p, &v->number);
        }
        return fail_here(p, "expected a value");
    }
}

json_value *json_parse(const char *text, size_t len) {
    if (len > JSON_MAX_BYTES) {
        loqt_set_error("json: input of %zu bytes exceeds the 256 MiB limit", len);
        return NULL;
    }
    if (!text && len) {
        loqt_set_error("json: no input");
        return NULL;
    }
    parser p = {(const unsigned char *)text, len, 0, 0};
    json_value *root = calloc(1, sizeof *root);
    if (!root) {
        loqt_set_error("json: out of memory");
        return NULL;
    }
    if (parse_value(&p, root) == 0) {
        skip_ws(&p);
        if (p.pos == p.n) return root;
        fail_here(&p, "expected end of input after the value");
    }
    json_free(root);
    return NULL;
}

static void free_contents(json_value *v) {
    free(v->string);
    if (v->type == JSON_ARRAY || v->type == JSON_OBJECT) {
        for (size_t i = 0; i < v->len; i++) {
            free_contents(&v->items[i]);
            if (v->keys) free(v->keys[i]);
        }
    }
    free(v->items);
    free(v->keys);
}

void json_free(json_value *v) {
    if (!v) return;
    free_contents(v);
    free(v);
}

const json_value *json_get(const json_value *obj, const char *key) {
    if (!obj || obj->type != JSON_OBJECT || !key) return NULL;
    for (size_t i = obj->len; i-- > 0;)
        if (strcmp(obj->keys[i], key) == 0) return &obj->items[i];
    return NULL;
}

static const char *type_name(json_type t) {
    switch (t) {
    case JSON_NULL: return "null";
    case JSON_BOOL: return "a boolean";
    case JSON_NUMBER: return "a number";
    case JSON_STRING: return "a string";
    case JSON_ARRAY: return "an array";
    case JSON_OBJECT: return "an object";
    }
    return "?";
}

static const json_value *get_typed(const json_value *obj, const char *key, json_type t, const char *want) {
    const json_value *v = json_get(obj, key);
    if (!v) {
        loqt_set_error("json: missing key '%s'", key ? key : "(null)");
        return NULL;
    }
    if (v->type != t) {
        loqt_set_error("json: key '%s' is %s, expected %s", key, type_name(v->type), want);
        return NULL;
    }
    return v;
}

int json_get_number(const json_value *obj, const char *key, double *out) {
    const json_value *v = get_typed(obj, key, JSON_NUMBER, "a number");
    if (!v) return -1;
    *out = v->number;
    return 0;
}

int json_get_int(const json_value *obj, const char *key, long long *out) {
    const json_value *v = get_typed(obj, key, JSON_NUMBER, "an integer");
    if (!v) return -1;
    /* 2^63 is exact as a double; the range is [-2^63, 2^63). */
    if (v->number != floor(v->number) || v->number < -9223372036854775808.0 ||
        v->number >= 9223372036854775808.0)
        return loqt_set_error("json: key '%s' is %.17g, expected an integer", key, v->number);
    *out = (long long)v->number;
    return 0;
}

int json_get_string(const json_value *obj, const char *key, const char **out) {
    const json_value *v = get_typed(obj, key, JSON_STRING, "a string");
    if (!v) return -1;
    *out = v->string;
    return 0;
}

int json_get_bool(const json_value *obj, const char *key, int *out) {
    const json_value *v = get_typed(obj, key, JSON_BOOL, "a boolean");
    if (!v) return -1;
    *out = v->boolean;
    return 0;
}

void json_write_string_n(FILE *f, const char *s, size_t len) {
    const unsigned char *u = (const unsigned char *)s;
    putc('"', f);
    for (size_t i = 0; i < len;) {
        unsigned c = u[i];
        if (c >= 0x80) {
            size_t k = utf8_seq(u + i, len - i);
            if (k) {
                fwrite(u + i, 1, k, f);
                i += k;
            } else {
                fputs("\\ufffd", f); /* keep the output valid JSON: one replacement per bad byte */
                i++;
            }
            continue;
        }
        i++;
        switch (c) {
        case '"': fputs("\\\"", f); break;
        case '\\': fputs("\\\\", f); break;
        case '\b': fputs("\\b", f); break;
        case '\f': fputs("\\f", f); break;
        case '\n': fputs("\\n", f); break;
        case '\r': fputs("\\r", f); break;
        case '\t': fputs("\\t", f); break;
        default:
            if (c < 0x20) fprintf(f, "\\u%04x", c);
            else putc((int)c, f);
        }
    }
    putc('"', f);
}

void json_write_string(FILE *f, const char *s) { json_write_string_n(f, s ? s : "", s ? strlen(s) : 0); }

void json_write_number(FILE *f, const char *fmt, double v) {
    if (isfinite(v)) fprintf(f, fmt, v);
    else fputs("null", f);
}
