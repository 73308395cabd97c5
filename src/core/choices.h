/* Names in a "a|b|c" list: the values of a choice option (one of them, by index) and of a set
 * option (a subset, as a bit mask: bit k is the k-th name).  Shared by the command line
 * (cli/options.c) and the methods' option tables and checkpoint JSON (methods/registry.c). */
#ifndef LOQT_CHOICES_H
#define LOQT_CHOICES_H

#include <stddef.h>

/* The k-th name of choices into buf; 0 if there is none. */
int choice_at(const char *choices, int k, char *buf, size_t cap);
/* The index of v in choices, or -1. */
int choice_index(const char *choices, const char *v);
/* The number of names. */
int choice_count(const char *choices);
/* The mask of every name. */
unsigned choice_all(const char *choices);

/* "b,c" (comma-separated names) or "all" into *set: 0, or -1 with the offending name in bad ("" for
 * an empty one: an empty list, "a,,b", a trailing comma). */
int choice_set_parse(const char *choices, const char *list, unsigned *set, char *bad, size_t cap);
/* The names of set, comma-separated, in the order of choices. */
void choice_set_format(const char *choices, unsigned set, char *buf, size_t cap);

#endif
