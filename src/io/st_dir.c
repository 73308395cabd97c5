/* Model directories in Hugging Face layout: one model.safetensors, or shards listed by
 * model.safetensors.index.json, opened as one st_file (io/safetensors.h).
 *
 * A sharded directory's st_file holds no data of its own: it keeps every shard open (each mapped
 * and validated by st_open) and a table of all their tensors, each pointing into its shard's
 * mapping.  The index and the shards must agree exactly: a tensor the index maps to a shard that
 * does not hold it, or a tensor of a shard that the index does not map there, is an error, since
 * either means a partial or mixed-up download whose missing weights would otherwise surface as a
 * puzzling "tensor not found" (or not at all). */
#include "io/safetensors.h"

#include "core/error.h"
#include "core/json.h"
#include "core/mem.h"
#include "io/fileutil.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define INDEX_NAME "model.safetensors.index.json"
#define MAX_INDEX_BYTES ((size_t)100 << 20) /* as the safetensors header limit */
#define MAX_INDEX_TENSORS 1000000

void st_index_free(st_index *ix) {
    for (int i = 0; i < ix->n; i++) free(ix->names[i]);
    for (int i = 0; i < ix->n_shards; i++) free(ix->shards[i]);
    free(ix->names);
    free(ix->shard);
    free(ix->shards);
    memset(ix, 0, sizeof *ix);
}

/* A shard must be a file in the directory itself: a name with '/' (or "..") in the index would
 * otherwise open files anywhere. */
static int plain_file_name(const char *s) {
    return s[0] && !strchr(s, '/') && strcmp(s, ".") && strcmp(s, "..") && strlen(s) < 256;
}

static int shard_id(st_index *ix, const char *file) {
    for (int i = 0; i < ix->n_shards; i++)
        if (!strcmp(ix->shards[i], file)) return i;
    char *copy = strdup(file);
    if (!copy) return -1;
    ix->shards[ix->n_shards] = copy;
    return ix->n_shards++;
}

static int cmp_names(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* the first name listed twice, or NULL */
static const char *repeated_name(const st_index *ix) {
    const char **sorted = malloc(sizeof *sorted * (size_t)ix->n);
    if (!sorted) return NULL;
    memcpy(sorted, ix->names, sizeof *sorted * (size_t)ix->n);
    qsort(sorted, (size_t)ix->n, sizeof *sorted, cmp_names);
    const char *dup = NULL;
    for (int i = 1; i < ix->n && !dup; i++)
        if (!strcmp(sorted[i], sorted[i - 1])) dup = sorted[i];
    free(sorted);
    return dup;
}

static int fill_index(st_index *ix, const json_value *map, const char *what) {
    const int n = (int)map->len;
    ix->names = calloc((size_t)n, sizeof *ix->names);
    ix->shard = calloc((size_t)n, sizeof *ix->shard);
    ix->shards = calloc((size_t)n, sizeof *ix->shards);
    if (!ix->names || !ix->shard || !ix->shards) return loqt_set_error("%s: out of memory", what);
    for (int i = 0; i < n; i++) {
        const json_value *v = &map->items[i];
        if (v->type != JSON_STRING)
            return loqt_set_error("%s: weight_map entry of tensor '%s' is not a file name string", what, map->keys[i]);
        if (!plain_file_name(v->string))
            return loqt_set_error("%s: weight_map maps tensor '%s' to '%s', which is not a file name in the "
                                  "directory", what, map->keys[i], v->string);
        if (!(ix->names[i] = strdup(map->keys[i])) || (ix->shard[i] = shard_id(ix, v->string)) < 0)
            return loqt_set_error("%s: out of memory", what);
        ix->n = i + 1;
    }
    const char *dup = repeated_name(ix);
    if (dup) return loqt_set_error("%s: weight_map lists tensor '%s' twice", what, dup);
    return 0;
}

int st_index_parse(st_index *ix, const char *text, size_t len, const char *what) {
    memset(ix, 0, sizeof *ix);
    json_value *root = json_parse(text, len);
    if (!root) return loqt_set_error("%s: %s", what, loqt_last_error());
    int rc = -1;
    const json_value *map = root->type == JSON_OBJECT ? json_get(root, "weight_map") : NULL;
    const json_value *meta = root->type == JSON_OBJECT ? json_get(root, "metadata") : NULL;
    if (root->type != JSON_OBJECT) loqt_set_error("%s: expected a JSON object", what);
    else if (!map) loqt_set_error("%s: no \"weight_map\" (tensor name -> shard file)", what);
    else if (map->type != JSON_OBJECT || map->len == 0) loqt_set_error("%s: \"weight_map\" is not a non-empty object", what);
    else if (map->len > MAX_INDEX_TENSORS) loqt_set_error("%s: %zu tensors in weight_map (at most %d)", what, map->len, MAX_INDEX_TENSORS);
    else if (meta && meta->type != JSON_OBJECT) loqt_set_error("%s: \"metadata\" is not an object", what);
    else rc = fill_index(ix, map, what);
    json_free(root);
    if (rc) st_index_free(ix);
    return rc;
}

/* ---- opening a directory -------------------------------------------------------------------- */

static int join(char *out, size_t cap, const char *dir, const char *name) {
    int n = snprintf(out, cap, "%s/%s", dir, name);
    if (n < 0 || (size_t)n >= cap) return loqt_set_error("path too long: %s/%s", dir, name);
    return 0;
}

static void free_table(st_tensor *t, int n) {
    for (int i = 0; t && i <= n; i++) free(t[i].name);
    free(t);
}

/* The shards' tensors in index order, each with its bytes and its shard's path; f->tensors only
 * once the table is complete (st_close frees it up to its sentinel). */
static int gather(st_file *f, const st_index *ix, const char *index_path) {
    st_tensor *tab = calloc((size_t)ix->n + 1, sizeof *tab);
    if (!tab) return loqt_set_error("%s: out of memory", index_path);
    int rc = 0;
    for (int i = 0; !rc && i < ix->n; i++) {
        const st_file *sh = &f->shards[ix->shard[i]];
        const st_tensor *t = st_find(sh, ix->names[i]);
        if (!t) {
            rc = loqt_set_error("%s maps tensor '%s' to %s, which does not hold it (an incomplete or mixed-up "
                                "download?)", index_path, ix->names[i], ix->shards[ix->shard[i]]);
            break;
        }
        tab[i] = *t;
        tab[i].used = 0;
        tab[i].file = sh->tensors[sh->n_tensors].name;
        if (!(tab[i].name = strdup(t->name))) rc = loqt_set_error("%s: out of memory", index_path);
    }
    for (int s = 0; !rc && s < f->n_shards; s++) {
        const char *extra = st_first_unused(&f->shards[s]);
        if (extra)
            rc = loqt_set_error("%s holds tensor '%s', which %s does not map to it", ix->shards[s], extra, INDEX_NAME);
    }
    /* the sentinel entry past the end names the file in messages (see safetensors.c) */
    if (!rc && !(tab[ix->n].name = strdup(index_path))) rc = loqt_set_error("%s: out of memory", index_path);
    if (rc) {
        free_table(tab, ix->n);
        return -1;
    }
    f->tensors = tab;
    f->n_tensors = ix->n;
    return 0;
}

static int open_sharded(st_file *f, const char *dir, const char *index_path) {
    size_t len = 0;
    char *text = file_read_all(index_path, MAX_INDEX_BYTES, &len);
    if (!text) return -1;
    st_index ix;
    int rc = st_index_parse(&ix, text, len, index_path);
    mem_free(text);
    if (rc) return -1;
    f->shards = calloc((size_t)ix.n_shards, sizeof *f->shards);
    rc = f->shards ? 0 : loqt_set_error("%s: out of memory", index_path);
    for (int s = 0; !rc && s < ix.n_shards; s++) {
        char path[4096];
        rc = join(path, sizeof path, dir, ix.shards[s]);
        if (!rc && access(path, F_OK) != 0)
            rc = loqt_set_error("%s names shard %s, which is missing (%s)", index_path, ix.shards[s], strerror(errno));
        if (!rc) rc = st_open(&f->shards[s], path);
        if (!rc) f->n_shards = s + 1;
    }
    if (!rc) rc = gather(f, &ix, index_path);
    st_index_free(&ix);
    f->mapped = 1;
    return rc;
}

int st_open_dir(st_file *f, const char *dir) {
    memset(f, 0, sizeof *f);
    char index_path[4096], single[4096];
    if (join(index_path, sizeof index_path, dir, INDEX_NAME) || join(single, sizeof single, dir, "model.safetensors"))
        return -1;
    /* as Hugging Face's loader: a single file first, else the index */
    if (access(single, F_OK) == 0) return st_open(f, single);
    if (access(index_path, F_OK) != 0)
        return loqt_set_error("%s: no model.safetensors and no %s: not a model directory", dir, INDEX_NAME);
    if (open_sharded(f, dir, index_path)) {
        st_close(f);
        return -1;
    }
    return 0;
}
