/* JSON reader: accepted and rejected inputs (RFC 8259), exact decoding of escapes and numbers,
 * error offsets, limits, getters, and json_write_string round trips. */
#include "core/error.h"
#include "core/json.h"
#include "core/rng.h"
#include "test.h"

#include <stdint.h>
#include <sys/mman.h>

static json_value *parse(const char *s) { return json_parse(s, strlen(s)); }

static void test_literals_and_structure(void) {
    json_value *v = parse(" { \"a\" : [1, true, false, null, \"x\", {}, []] , \"b\":{\"c\":-2.5e1}}\n");
    CHECK(v != NULL, "parse failed: %s", loqt_last_error());
    if (!v) return;
    CHECK(v->type == JSON_OBJECT && v->len == 2, "root object of 2 (exact)");
    const json_value *a = json_get(v, "a");
    CHECK(a && a->type == JSON_ARRAY && a->len == 7, "array of 7 (exact)");
    if (a && a->len == 7) {
        CHECK(a->items[0].type == JSON_NUMBER && a->items[0].number == 1.0, "1 (exact)");
        CHECK(a->items[1].type == JSON_BOOL && a->items[1].boolean == 1, "true");
        CHECK(a->items[2].type == JSON_BOOL && a->items[2].boolean == 0, "false");
        CHECK(a->items[3].type == JSON_NULL, "null");
        CHECK(a->items[4].type == JSON_STRING && !strcmp(a->items[4].string, "x") && a->items[4].len == 1, "\"x\"");
        CHECK(a->items[5].type == JSON_OBJECT && a->items[5].len == 0, "{}");
        CHECK(a->items[6].type == JSON_ARRAY && a->items[6].len == 0, "[]");
    }
    double c = 0;
    CHECK(json_get_number(json_get(v, "b"), "c", &c) == 0 && c == -25.0, "c = %g, expected -25 (exact)", c);
    CHECK(json_get(v, "zz") == NULL, "missing key gives NULL");
    CHECK(json_get(a, "a") == NULL, "json_get on an array gives NULL");
    json_free(v);

    /* scalars at top level are valid JSON text */
    const char *scalars[] = {"0", "-0", "\"\"", "true", "null", " 7 "};
    for (size_t i = 0; i < sizeof scalars / sizeof *scalars; i++) {
        v = parse(scalars[i]);
        CHECK(v != NULL, "'%s' rejected: %s", scalars[i], loqt_last_error());
        json_free(v);
    }
}

static void test_numbers(void) {
    struct { const char *s; double want; } cases[] = {
        {"0", 0.0}, {"-0", -0.0}, {"1", 1.0}, {"-1", -1.0}, {"10", 10.0}, {"1.5", 1.5}, {"-0.25", -0.25},
        {"1e3", 1000.0}, {"1E3", 1000.0}, {"1e+3", 1000.0}, {"1e-3", 1e-3}, {"2.5E-1", 0.25},
        {"123456789012345678", 123456789012345678.0}, {"1.7976931348623157e308", 1.7976931348623157e308},
        {"4.9e-324", 4.9e-324}, {"1e-400", 0.0}, {"0.1", 0.1}, {"9007199254740993", 9007199254740992.0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        json_value *v = parse(cases[i].s);
        CHECK(v && v->type == JSON_NUMBER, "'%s' rejected: %s", cases[i].s, loqt_last_error());
        /* exact: strtod is correctly rounded, the same as the C compiler's literal */
        if (v) CHECK(v->number == cases[i].want && signbit(v->number) == signbit(cases[i].want),
                     "'%s' -> %.17g, expected %.17g (exact)", cases[i].s, v->number, cases[i].want);
        json_free(v);
    }
}

static void test_strings(void) {
    json_value *v = parse("\"a\\\"b\\\\c\\/d\\b\\f\\n\\r\\t\\u0041\\u00e9\\u20AC\\ud83d\\ude00\"");
    CHECK(v && v->type == JSON_STRING, "escapes rejected: %s", loqt_last_error());
    const char want[] = "a\"b\\c/d\b\f\n\r\tA\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80";
    if (v) CHECK(v->len == sizeof want - 1 && !memcmp(v->string, want, sizeof want), "decoded bytes differ (exact)");
    json_free(v);

    /* \u0000 is kept; len counts past it */
    v = parse("\"a\\u0000b\"");
    CHECK(v && v->len == 3 && !memcmp(v->string, "a\0b", 4), "embedded NUL: len %zu, expected 3", v ? v->len : 0);
    json_free(v);

    /* raw UTF-8 of every length passes through unchanged */
    const char *raw = "\"\x7f \xc2\x80 \xdf\xbf \xe0\xa0\x80 \xef\xbf\xbf \xf0\x90\x80\x80 \xf4\x8f\xbf\xbf\"";
    v = parse(raw);
    CHECK(v && v->len == strlen(raw) - 2 && !memcmp(v->string, raw + 1, v->len), "raw UTF-8 rejected or changed: %s",
          loqt_last_error());
    json_free(v);
}

static void test_rejects(void) {
    const char *bad[] = {
        "", " ", "01", "-01", "1.", ".5", "+1", "1e", "1e+", "-", "--1", "0x10", "1.e3", "NaN", "Infinity",
        "-Infinity", "1e999", "-1e400", "tru", "nul", "falsey", "True", "1 2", "[1,]", "[,1]", "[1 2]", "[",
        "]", "{", "}", "{,}", "{\"a\" 1}", "{\"a\":}", "{\"a\":1,}", "{a:1}", "{'a':1}", "'x'", "\"abc",
        "\"a\nb\"", "\"a\tb\"", "\"\\x\"", "\"\\u12\"", "\"\\u12g4\"", "\"\\ud800\"", "\"\\udc00\"",
        "\"\\ud800\\u0041\"", "\"\\ud800x\"", "\"\\\"", "\"\x80\"", "\"\xc0\x80\"", "\"\xc1\xbf\"",
        "\"\xe0\x80\x80\"", "\"\xed\xa0\x80\"", "\"\xf0\x80\x80\x80\"", "\"\xf4\x90\x80\x80\"", "\"\xf5\x80\x80\x80\"",
        "\"\xc3\"", "\"\xe2\x82\"", "\xef\xbb\xbf{}", "{} // c", "/* c */ {}", "[1]]", "{\"a\\u0000\":1}",
        "[\"\x01\"]", "nulll", "[1,,2]", "\x00",
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        loqt_clear_error();
        size_t len = strlen(bad[i]);
        if (i == sizeof bad / sizeof *bad - 1) len = 1; /* the lone NUL byte */
        json_value *v = json_parse(bad[i], len);
        CHECK(v == NULL, "case %zu ('%s') accepted", i, bad[i]);
        CHECK(strstr(loqt_last_error(), "at byte") != NULL, "case %zu: error without offset: %s", i, loqt_last_error());
        json_free(v);
    }
}

static void test_error_offsets(void) {
    struct { const char *s; const char *want; } cases[] = {
        {"[1,2 3]", "expected ',' or ']' in array, found '3' at byte 5"},
        {"{\"a\":1 \"b\":2}", "expected ',' or '}' in object, found '\"' at byte 7"},
        {"[1,\n  tru]", "at byte 6"},
        {"\"ab\\q\"", "invalid escape in string at byte 3"},
        {"  [1", "found end of input at byte 4"},
        {"{}x", "expected end of input after the value, found 'x' at byte 2"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        json_value *v = parse(cases[i].s);
        CHECK(!v && strstr(loqt_last_error(), cases[i].want), "'%s': error '%s', expected '%s'", cases[i].s,
              loqt_last_error(), cases[i].want);
        json_free(v);
    }
}

static void test_depth_and_size_limits(void) {
    char buf[512];
    for (int depth = 63; depth <= 66; depth++) {
        int k = 0;
        for (int i = 0; i < depth; i++) buf[k++] = '[';
        for (int i = 0; i < depth; i++) buf[k++] = ']';
        json_value *v = json_parse(buf, (size_t)k);
        if (depth <= 64) CHECK(v != NULL, "depth %d rejected: %s", depth, loqt_last_error());
        else CHECK(v == NULL && strstr(loqt_last_error(), "nesting"), "depth %d accepted", depth);
        json_free(v);
    }
    /* objects count toward the same limit */
    int k = 0;
    for (int i = 0; i < 65; i++) k += sprintf(buf + k, "{\"\":");
    buf[k++] = '1';
    for (int i = 0; i < 65; i++) buf[k++] = '}';
    json_value *v = json_parse(buf, (size_t)k);
    CHECK(v == NULL && strstr(loqt_last_error(), "nesting"), "object depth 65 accepted");
    json_free(v);

    /* The size check comes before any read: an untouched anonymous mapping costs no memory. */
    size_t big = ((size_t)256 << 20) + 1;
    void *m = mmap(NULL, big, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (m != MAP_FAILED) {
        v = json_parse(m, big);
        CHECK(v == NULL && strstr(loqt_last_error(), "256 MiB"), "input over 256 MiB accepted: %s", loqt_last_error());
        json_free(v);
        munmap(m, big);
    }
}

static void test_getters(void) {
    json_value *v = parse("{\"i\":42,\"f\":2.5,\"big\":1e20,\"neg\":-7,\"s\":\"hi\",\"b\":true,\"d\":1,\"d\":2}");
    CHECK(v != NULL, "parse failed");
    if (!v) return;
    long long i = 0;
    double d = 0;
    const char *s = NULL;
    int b = 0;
    CHECK(json_get_int(v, "i", &i) == 0 && i == 42, "i = %lld, expected 42 (exact)", i);
    CHECK(json_get_int(v, "neg", &i) == 0 && i == -7, "neg = %lld, expected -7 (exact)", i);
    CHECK(json_get_int(v, "f", &i) == -1 && strstr(loqt_last_error(), "'f'"), "2.5 accepted as int");
    CHECK(json_get_int(v, "big", &i) == -1, "1e20 accepted as long long");
    CHECK(json_get_number(v, "f", &d) == 0 && d == 2.5, "f = %g, expected 2.5 (exact)", d);
    CHECK(json_get_string(v, "s", &s) == 0 && !strcmp(s, "hi"), "s");
    CHECK(json_get_bool(v, "b", &b) == 0 && b == 1, "b");
    CHECK(json_get_int(v, "d", &i) == 0 && i == 2, "duplicate key: got %lld, expected the last (2)", i);
    CHECK(json_get_number(v, "nope", &d) == -1 && strstr(loqt_last_error(), "missing key 'nope'"), "missing: %s",
          loqt_last_error());
    CHECK(json_get_string(v, "i", &s) == -1 && strstr(loqt_last_error(), "'i' is a number, expected a string"),
          "mistyped: %s", loqt_last_error());
    CHECK(json_get_bool(NULL, "b", &b) == -1, "NULL object");
    json_free(v);
}

/* Writes s[0..len) with json_write_string_n and parses it back. */
static json_value *write_and_parse(const char *s, size_t len, char **text) {
    size_t tlen = 0;
    FILE *m = open_memstream(text, &tlen);
    json_write_string_n(m, s, len);
    fclose(m);
    return json_parse(*text, tlen);
}

static void test_write_string(void) {
    char all[256];
    for (int i = 0; i < 255; i++) all[i] = (char)(i + 1); /* every byte but NUL, incl. invalid UTF-8 */
    all[255] = 0;
    char *text = NULL;
    json_value *v = write_and_parse(all, 127, &text); /* all ASCII, incl. every control char */
    CHECK(v && v->len == 127 && !memcmp(v->string, all, 127), "ASCII round trip failed: %s", loqt_last_error());
    json_free(v);
    free(text);

    /* invalid bytes become U+FFFD so the output still parses */
    v = write_and_parse(all, 255, &text);
    CHECK(v != NULL, "output with invalid UTF-8 input does not parse: %s", loqt_last_error());
    if (v) CHECK(v->len == 127 + 128 * 3, "len %zu, expected %d (each invalid byte -> 3-byte U+FFFD)", v->len, 127 + 128 * 3);
    json_free(v);
    free(text);

    /* json_write_string stops at the NUL; json_write_string_n writes it as \u0000 */
    size_t tlen;
    FILE *m = open_memstream(&text, &tlen);
    json_write_string(m, "q\"\\\n\x1f");
    fclose(m);
    CHECK(!strcmp(text, "\"q\\\"\\\\\\n\\u001f\""), "escaped form: %s", text);
    free(text);
    v = write_and_parse("a\0b", 3, &text);
    CHECK(v && v->len == 3 && !memcmp(v->string, "a\0b", 3), "NUL round trip");
    json_free(v);
    free(text);

    /* random strings of valid code points (all planes, no surrogates) round-trip exactly */
    char s[400];
    int bad = 0;
    for (int trial = 0; trial < 2000; trial++) {
        size_t k = 0;
        int n = (int)(rng_u64(7, 1, (uint64_t)trial) % 80);
        for (int j = 0; j < n; j++) {
            uint64_t r = rng_u64(7, 2, (uint64_t)trial * 100 + (uint64_t)j);
            uint32_t cp;
            switch (r % 4) {
            case 0: cp = (uint32_t)(r >> 8) % 0x80; break;
            case 1: cp = 0x80 + (uint32_t)(r >> 8) % 0x780; break;
            case 2: cp = 0x800 + (uint32_t)(r >> 8) % 0xf800; break;
            default: cp = 0x10000 + (uint32_t)(r >> 8) % 0x100000; break;
            }
            if (cp >= 0xd800 && cp <= 0xdfff) cp = 0xfffd;
            if (cp < 0x80) s[k++] = (char)cp;
            else if (cp < 0x800) { s[k++] = (char)(0xc0 | cp >> 6); s[k++] = (char)(0x80 | (cp & 0x3f)); }
            else if (cp < 0x10000) {
                s[k++] = (char)(0xe0 | cp >> 12); s[k++] = (char)(0x80 | (cp >> 6 & 0x3f)); s[k++] = (char)(0x80 | (cp & 0x3f));
            } else {
                s[k++] = (char)(0xf0 | cp >> 18); s[k++] = (char)(0x80 | (cp >> 12 & 0x3f));
                s[k++] = (char)(0x80 | (cp >> 6 & 0x3f)); s[k++] = (char)(0x80 | (cp & 0x3f));
            }
        }
        CHECK(json_utf8_valid(s, k), "generator made invalid UTF-8");
        v = write_and_parse(s, k, &text);
        if (!v || v->len != k || memcmp(v->string, s, k)) bad++;
        json_free(v);
        free(text);
    }
    CHECK(bad == 0, "%d of 2000 random strings did not round-trip (exact)", bad);
}

static void test_utf8_valid(void) {
    CHECK(json_utf8_valid("", 0) && json_utf8_valid("\xf4\x8f\xbf\xbf", 4), "valid rejected");
    CHECK(!json_utf8_valid("\xed\xb0\x80", 3), "surrogate accepted");
    CHECK(!json_utf8_valid("\xe0\x9f\xbf", 3), "overlong accepted");
    CHECK(!json_utf8_valid("\xf0\x9f\x98", 3), "truncated accepted");
}

int main(void) {
    RUN(test_literals_and_structure);
    RUN(test_numbers);
    RUN(test_strings);
    RUN(test_rejects);
    RUN(test_error_offsets);
    RUN(test_depth_and_size_limits);
    RUN(test_getters);
    RUN(test_write_string);
    RUN(test_utf8_valid);
    TEST_END();
}
