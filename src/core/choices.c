#include "core/choices.h"

#include <stdio.h>
#include <string.h>

int choice_at(const char *choices, int k, char *buf, size_t cap) {
    const char *p = choices;
    for (int i = 0; p && i < k; i++) {
        p = strchr(p, '|');
        if (p) p++;
    }
    if (!p || k < 0 || !cap) return 0;
    size_t len = strcspn(p, "|");
    if (len + 1 > cap) len = cap - 1;
    memcpy(buf, p, len);
    buf[len] = 0;
    return 1;
}

int choice_index(const char *choices, const char *v) {
    char buf[64];
    for (int k = 0; choice_at(choices, k, buf, sizeof buf); k++)
        if (!strcmp(buf, v)) return k;
    return -1;
}

int choice_count(const char *choices) {
    char buf[64];
    int k = 0;
    while (choice_at(choices, k, buf, sizeof buf)) k++;
    return k;
}

unsigned choice_all(const char *choices) {
    const int n = choice_count(choices);
    return n >= 32 ? ~0u : (1u << n) - 1;
}

int choice_set_parse(const char *choices, const char *list, unsigned *set, char *bad, size_t cap) {
    *set = 0;
    if (!strcmp(list, "all")) {
        *set = choice_all(choices);
        return 0;
    }
    for (const char *p = list;; p++) {
        const size_t len = strcspn(p, ",");
        char name[64];
        snprintf(name, sizeof name, "%.*s", (int)(len < sizeof name ? len : sizeof name - 1), p);
        const int k = len && len < sizeof name ? choice_index(choices, name) : -1;
        if (k < 0 || k >= 32) { /* an unknown name, or an empty one ("", "a,,b", "a,") */
            snprintf(bad, cap, "%s", name);
            *set = 0;
            return -1;
        }
        *set |= 1u << k;
        p += len;
        if (!*p) return 0;
    }
}

void choice_set_format(const char *choices, unsigned set, char *buf, size_t cap) {
    size_t len = 0;
    char name[64];
    if (cap) buf[0] = 0;
    for (int k = 0; k < 32 && choice_at(choices, k, name, sizeof name); k++) {
        if (!(set & (1u << k))) continue;
        const int w = snprintf(buf + len, cap > len ? cap - len : 0, "%s%s", len ? "," : "", name);
        if (w < 0 || (size_t)w >= cap - len) return;
        len += (size_t)w;
    }
}
