/* The LLaMA tokenizer: loader for the file written by scripts/convert_tokenizer.py, and an encoder
 * that reproduces llama-tokenizer-js 1.2.2 token for token (docs/tokenizer.md explains the rules).
 *
 * Exactness notes.  The JS encoder orders merges by a floating-point priority
 *     (2*rank + 1) + origPos / promptLength
 * (rank = index in the merge list, origPos = the node's index in the initial token list,
 * promptLength = the text's length in UTF-16 code units) and keeps them in its own binary heap.
 * The fraction can exceed 1 (byte-fallback characters give several tokens per code unit), so the
 * order is not simply (rank, position), and equal priorities are resolved by that heap's layout.
 * We therefore compute the same doubles and run the same heap algorithm, push for push and pop
 * for pop; only the node bookkeeping differs (nodes are updated in place with a generation count
 * instead of being copied, which invalidates exactly the same queue entries). */
#include "data/tokenizer.h"

#include "core/error.h"
#include "core/mem.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define TOK_MAGIC "LOQTTOKN"
#define TOK_VERSION 1u
#define TOK_HEADER 32u
#define TOK_MAX_PIECES 65536u         /* merge ids are stored as uint16 */
#define TOK_MAX_FILE (1u << 30)       /* far above the 0.5 MB of the real file */
#define TOK_MAX_TEXT ((size_t)1 << 30) /* one encode call; keeps node indices in int32 */
#define U2581 "\xE2\x96\x81"             /* "▁", the piece that stands for a space */

typedef struct {
    uint32_t rank; /* 2*k + 1 for merge k (the JS priority base); 0 marks an empty slot */
    uint32_t key;  /* left id << 16 | right id */
    int32_t result;
} merge_slot;

struct tokenizer {
    int n;
    char *text;              /* pieces, each followed by a NUL */
    uint32_t *off;           /* n + 1 offsets into text (off[i+1] - off[i] - 1 = length) */
    int16_t *byte_of;        /* per id: the byte a <0xXX> piece stands for, else -1 */
    int32_t byte_id[256];    /* id of <0xXX> */
    int32_t space_id;        /* id of "▁" (U+2581), which stands for a space */
    int32_t *bmp;            /* code point < 0x10000 -> id of the one-character piece, or -1 */
    uint32_t *astral_cp;     /* sorted code points >= 0x10000 that are one-character pieces */
    int32_t *astral_id;
    int n_astral;
    int32_t *piece_slot;     /* open-addressing hash of piece strings -> id (-1 empty) */
    uint32_t piece_mask;
    merge_slot *merge;       /* open-addressing hash of id pairs */
    uint32_t merge_mask;
    int n_merges;
    int can_segment;         /* the vocabulary allows per-word queues (see is_boundary) */
    int segmented;           /* they are in use (tokenizer_set_segmented) */
};

/* ---------------------------------------------------------------- helpers */

static uint32_t rd16(const unsigned char *p) { return (uint32_t)p[0] | (uint32_t)p[1] << 8; }
static uint32_t rd32(const unsigned char *p) { return rd16(p) | rd16(p + 2) << 16; }

static uint32_t crc32_ieee(const unsigned char *p, size_t n) {
    uint32_t table[256];
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++) c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
        table[i] = c;
    }
    uint32_t c = 0xFFFFFFFFu;
    for (size_t i = 0; i < n; i++) c = table[(c ^ p[i]) & 0xFF] ^ (c >> 8);
    return c ^ 0xFFFFFFFFu;
}

/* Length of the well-formed UTF-8 sequence at s[0..n) (1..4) and its code point, or 0 if the
 * bytes there are not well formed (overlong forms, surrogates and values past U+10FFFF included). */
static int utf8_next(const unsigned char *s, size_t n, uint32_t *cp) {
    unsigned b = s[0];
    if (b < 0x80) { *cp = b; return 1; }
    int k;
    unsigned lo = 0x80, hi = 0xBF;
    if (b >= 0xC2 && b <= 0xDF) k = 2;
    else if (b >= 0xE0 && b <= 0xEF) {
        k = 3;
        if (b == 0xE0) lo = 0xA0;
        if (b == 0xED) hi = 0x9F;
    } else if (b >= 0xF0 && b <= 0xF4) {
        k = 4;
        if (b == 0xF0) lo = 0x90;
        if (b == 0xF4) hi = 0x8F;
    } else return 0;
    if (n < (size_t)k || s[1] < lo || s[1] > hi) return 0;
    uint32_t c = b & (0x7F >> k);
    for (int i = 1; i < k; i++) {
        if ((s[i] & 0xC0) != 0x80) return 0;
        c = c << 6 | (s[i] & 0x3F);
    }
    *cp = c;
    return k;
}

static uint32_t hash_bytes(const char *s, size_t n) {
    uint32_t h = 2166136261u; /* FNV-1a */
    for (size_t i = 0; i < n; i++) h = (h ^ (unsigned char)s[i]) * 16777619u;
    return h;
}

static uint32_t hash_u32(uint32_t x) { return (x * 2654435769u) ^ (x >> 15); }

static uint32_t pow2_at_least(uint32_t x) {
    uint32_t p = 16;
    while (p < x) p <<= 1;
    return p;
}

static size_t piece_len(const tokenizer *t, int id) { return t->off[id + 1] - t->off[id] - 1; }

int tokenizer_piece_id(const tokenizer *t, const char *s, size_t len) {
    if (!t || (!s && len)) return -1;
    for (uint32_t h = hash_bytes(s, len) & t->piece_mask;; h = (h + 1) & t->piece_mask) {
        int32_t id = t->piece_slot[h];
        if (id < 0) return -1;
        if (piece_len(t, id) == len && memcmp(t->text + t->off[id], s, len) == 0) return id;
    }
}

static const merge_slot *merge_find(const tokenizer *t, uint32_t key) {
    for (uint32_t h = hash_u32(key) & t->merge_mask;; h = (h + 1) & t->merge_mask) {
        const merge_slot *m = &t->merge[h];
        if (m->rank == 0) return NULL;
        if (m->key == key) return m;
    }
}

/* id of the piece that is exactly code point cp, or -1 */
static int32_t cp_piece(const tokenizer *t, uint32_t cp) {
    if (cp < 0x10000) return t->bmp[cp];
    int lo = 0, hi = t->n_astral - 1;
    while (lo <= hi) {
        int mid = (lo + hi) / 2;
        if (t->astral_cp[mid] == cp) return t->astral_id[mid];
        if (t->astral_cp[mid] < cp) lo = mid + 1;
        else hi = mid - 1;
    }
    return -1;
}

void tokenizer_free(tokenizer *t) {
    if (!t) return;
    mem_free(t->text);
    mem_free(t->off);
    mem_free(t->byte_of);
    mem_free(t->bmp);
    mem_free(t->astral_cp);
    mem_free(t->astral_id);
    mem_free(t->piece_slot);
    mem_free(t->merge);
    free(t);
}

int tokenizer_vocab_size(const tokenizer *t) { return t ? t->n : 0; }

int tokenizer_merge_count(const tokenizer *t) { return t ? t->n_merges : 0; }

void tokenizer_first_merge(const tokenizer *t, int32_t *first) {
    for (int i = 0; i < t->n; i++) first[i] = -1;
    /* the hash holds each pair once, with the rank the encoder uses (a repeated pair's last) */
    for (uint32_t h = 0; h <= t->merge_mask; h++) {
        const merge_slot *m = &t->merge[h];
        if (!m->rank) continue;
        int32_t k = (int32_t)((m->rank - 1) / 2);
        if (first[m->result] < 0 || k < first[m->result]) first[m->result] = k;
    }
}

int tokenizer_set_segmented(tokenizer *t, int on) {
    if (!t) return 0;
    t->segmented = on && t->can_segment;
    return t->segmented;
}

const char *tokenizer_piece(const tokenizer *t, int id) {
    if (!t || id < 0 || id >= t->n) return NULL;
    return t->text + t->off[id];
}

/* ---------------------------------------------------------------- loading */

static unsigned char *read_file(const char *path, size_t *size) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        loqt_set_error("tokenizer %s: cannot open: %s", path, strerror(errno));
        return NULL;
    }
    struct stat st;
    if (fstat(fileno(f), &st) != 0 || !S_ISREG(st.st_mode)) {
        loqt_set_error("tokenizer %s: not a regular file", path);
        fclose(f);
        return NULL;
    }
    if ((unsigned long long)st.st_size > TOK_MAX_FILE) {
        loqt_set_error("tokenizer %s: %lld bytes is too large for a tokenizer file", path,
                       (long long)st.st_size);
        fclose(f);
        return NULL;
    }
    *size = (size_t)st.st_size;
    unsigned char *buf = mem_try_alloc(MEM_SCRATCH, *size);
    if (buf && *size && fread(buf, 1, *size, f) != *size) {
        loqt_set_error("tokenizer %s: read error", path);
        mem_free(buf);
        buf = NULL;
    }
    fclose(f);
    return buf;
}

/* Everything after the header checks; returns -1 with an error naming the file. */
static int build(tokenizer *t, const char *path, const unsigned char *buf, uint32_t n,
                 uint32_t n_merges, uint32_t text_bytes) {
    const unsigned char *lens = buf + TOK_HEADER, *text = lens + 2 * (size_t)n;
    const unsigned char *pairs = text + text_bytes;

    t->n = (int)n;
    t->n_merges = (int)n_merges;
    t->can_segment = 1;
    t->off = mem_try_alloc(MEM_DATA, ((size_t)n + 1) * sizeof *t->off);
    t->text = mem_try_alloc(MEM_DATA, (size_t)text_bytes + n);
    t->byte_of = mem_try_alloc(MEM_DATA, (size_t)n * sizeof *t->byte_of);
    t->bmp = mem_try_alloc(MEM_DATA, 0x10000 * sizeof *t->bmp);
    t->astral_cp = mem_try_alloc(MEM_DATA, (size_t)n * sizeof *t->astral_cp);
    t->astral_id = mem_try_alloc(MEM_DATA, (size_t)n * sizeof *t->astral_id);
    t->piece_mask = pow2_at_least(2 * n) - 1;
    t->piece_slot = mem_try_alloc(MEM_DATA, ((size_t)t->piece_mask + 1) * sizeof(int32_t));
    t->merge_mask = pow2_at_least(2 * n_merges + 2) - 1;
    t->merge = mem_try_alloc(MEM_DATA, ((size_t)t->merge_mask + 1) * sizeof(merge_slot));
    if (!t->off || !t->text || !t->byte_of || !t->bmp || !t->astral_cp || !t->astral_id ||
        !t->piece_slot || !t->merge)
        return -1; /* mem_try_alloc set the error */
    memset(t->piece_slot, 0xFF, ((size_t)t->piece_mask + 1) * sizeof(int32_t));
    memset(t->bmp, 0xFF, 0x10000 * sizeof *t->bmp);

    /* pieces: lengths must add up; each is non-empty well-formed UTF-8 without the bytes the
     * source format or the JS merge keys cannot carry (NUL, newline, space) */
    uint64_t pos = 0;
    for (uint32_t i = 0; i < n; i++) {
        uint32_t len = rd16(lens + 2 * (size_t)i);
        if (len == 0 || pos + len > text_bytes)
            return loqt_set_error("tokenizer %s: piece %u has length %u, %s", path, i, len,
                                  len ? "past the end of the piece text" : "empty");
        const unsigned char *p = text + pos;
        uint32_t cp = 0, first = 0;
        int chars = 0;
        for (uint32_t j = 0; j < len;) {
            int k = utf8_next(p + j, len - j, &cp);
            if (k == 0) return loqt_set_error("tokenizer %s: piece %u is not valid UTF-8", path, i);
            if (cp == 0 || cp == '\n' || cp == ' ')
                return loqt_set_error("tokenizer %s: piece %u contains a NUL, newline or space",
                                      path, i);
            if (chars++ == 0) first = cp;
            j += (uint32_t)k;
        }
        for (uint32_t j = 1; j + 3 <= len; j++) /* a "▁" after a character other than "▁" */
            if (memcmp(p + j, U2581, 3) == 0 && (j < 3 || memcmp(p + j - 3, U2581, 3) != 0))
                t->can_segment = 0;
        t->off[i] = (uint32_t)(pos + i);
        memcpy(t->text + t->off[i], p, len);
        t->text[t->off[i] + len] = 0;
        pos += len;
        t->byte_of[i] = -1;
        if (chars == 1) {
            if (first < 0x10000) t->bmp[first] = (int32_t)i;
            else {
                t->astral_cp[t->n_astral] = first; /* ids ascend; sorted below */
                t->astral_id[t->n_astral++] = (int32_t)i;
            }
        }
    }
    if (pos != text_bytes)
        return loqt_set_error("tokenizer %s: piece lengths add up to %llu bytes, header says %u",
                              path, (unsigned long long)pos, text_bytes);
    t->off[n] = (uint32_t)(pos + n);
    for (int i = 1; i < t->n_astral; i++) /* insertion sort: a handful of entries */
        for (int j = i; j > 0 && t->astral_cp[j - 1] > t->astral_cp[j]; j--) {
            uint32_t c = t->astral_cp[j]; t->astral_cp[j] = t->astral_cp[j - 1]; t->astral_cp[j - 1] = c;
            int32_t d = t->astral_id[j]; t->astral_id[j] = t->astral_id[j - 1]; t->astral_id[j - 1] = d;
        }

    for (uint32_t i = 0; i < n; i++) {
        const char *s = t->text + t->off[i];
        size_t len = piece_len(t, (int)i);
        uint32_t h = hash_bytes(s, len) & t->piece_mask;
        for (; t->piece_slot[h] >= 0; h = (h + 1) & t->piece_mask)
            if (piece_len(t, t->piece_slot[h]) == len &&
                memcmp(t->text + t->off[t->piece_slot[h]], s, len) == 0)
                return loqt_set_error("tokenizer %s: piece %u duplicates piece %d", path, i,
                                      t->piece_slot[h]);
        t->piece_slot[h] = (int32_t)i;
    }

    if (strcmp(t->text + t->off[TOK_BOS], "<s>") != 0 || strcmp(t->text + t->off[TOK_EOS], "</s>") != 0)
        return loqt_set_error("tokenizer %s: pieces %d and %d are not <s> and </s>", path, TOK_BOS,
                              TOK_EOS);
    for (int b = 0; b < 256; b++) {
        char name[8];
        snprintf(name, sizeof name, "<0x%02X>", b);
        int id = tokenizer_piece_id(t, name, 6);
        if (id < 0) return loqt_set_error("tokenizer %s: byte piece %s is missing", path, name);
        t->byte_id[b] = id;
        t->byte_of[id] = (int16_t)b;
    }
    t->space_id = tokenizer_piece_id(t, U2581, 3);
    if (t->space_id < 0) return loqt_set_error("tokenizer %s: the space piece U+2581 is missing", path);

    /* merges: ids in range, each result a piece; a repeated pair keeps its last rank (JS Map.set) */
    char *cat = malloc(2u * 65536u);
    if (!cat) return loqt_set_error("tokenizer %s: out of memory", path);
    for (uint32_t k = 0; k < n_merges; k++) {
        uint32_t a = rd16(pairs + 4 * (size_t)k), b = rd16(pairs + 4 * (size_t)k + 2);
        if (a >= n || b >= n) {
            free(cat);
            return loqt_set_error("tokenizer %s: merge %u refers to piece %u, but there are %u pieces",
                                  path, k, a >= n ? a : b, n);
        }
        size_t la = piece_len(t, (int)a), lb = piece_len(t, (int)b);
        memcpy(cat, t->text + t->off[a], la);
        memcpy(cat + la, t->text + t->off[b], lb);
        int r = tokenizer_piece_id(t, cat, la + lb);
        if (r < 0) {
            free(cat);
            return loqt_set_error("tokenizer %s: merge %u (%u, %u): the joined piece is not in the "
                                  "vocabulary", path, k, a, b);
        }
        uint32_t key = a << 16 | b, h = hash_u32(key) & t->merge_mask;
        while (t->merge[h].rank && t->merge[h].key != key) h = (h + 1) & t->merge_mask;
        t->merge[h] = (merge_slot){2 * k + 1, key, r};
        if (a < 3 || b < 3 || t->byte_of[a] >= 0 || t->byte_of[b] >= 0) t->can_segment = 0;
    }
    free(cat);
    t->segmented = t->can_segment;
    return 0;
}

tokenizer *tokenizer_load(const char *path) {
    if (!path) {
        loqt_set_error("tokenizer: no path given");
        return NULL;
    }
    size_t size = 0;
    unsigned char *buf = read_file(path, &size);
    if (!buf) return NULL;
    tokenizer *t = NULL;
    if (size < TOK_HEADER) {
        loqt_set_error("tokenizer %s: truncated header (%zu bytes, need %u)", path, size, TOK_HEADER);
        goto fail;
    }
    if (memcmp(buf, TOK_MAGIC, 8) != 0) {
        loqt_set_error("tokenizer %s: not a loqt tokenizer file (bad magic; make one with "
                       "scripts/fetch_tokenizer.sh)", path);
        goto fail;
    }
    uint32_t version = rd32(buf + 8), n = rd32(buf + 12), n_merges = rd32(buf + 16);
    uint32_t text_bytes = rd32(buf + 20), crc = rd32(buf + 24), reserved = rd32(buf + 28);
    if (version != TOK_VERSION) {
        loqt_set_error("tokenizer %s: format version %u, this build reads version %u", path,
                       version, TOK_VERSION);
        goto fail;
    }
    if (n < 259 || n > TOK_MAX_PIECES || reserved != 0) {
        loqt_set_error("tokenizer %s: bad header (%u pieces; need 259..%u; reserved word %u)",
                       path, n, TOK_MAX_PIECES, reserved);
        goto fail;
    }
    uint64_t want = (uint64_t)TOK_HEADER + 2ull * n + text_bytes + 4ull * n_merges;
    if (want != size) {
        loqt_set_error("tokenizer %s: %s: the header implies %llu bytes, the file has %zu", path,
                       want > size ? "truncated" : "trailing bytes", (unsigned long long)want, size);
        goto fail;
    }
    if (crc32_ieee(buf + TOK_HEADER, size - TOK_HEADER) != crc) {
        loqt_set_error("tokenizer %s: checksum mismatch (corrupt file)", path);
        goto fail;
    }
    t = calloc(1, sizeof *t);
    if (!t) {
        loqt_set_error("tokenizer %s: out of memory", path);
        goto fail;
    }
    if (build(t, path, buf, n, n_merges, text_bytes) != 0) goto fail;
    mem_free(buf);
    return t;
fail:
    tokenizer_free(t);
    mem_free(buf);
    return NULL;
}

/* ---------------------------------------------------------------- encoding */

/* A token in the doubly linked list.  Slot i keeps origPos = i for its whole life: a merge writes
 * its result into the left slot (as the JS result node inherits the left origPos).  gen counts
 * replacements; a queue entry is live only while its gen matches. */
typedef struct {
    int32_t tok, prev, next, result;
    uint32_t gen;
} bpe_node;

typedef struct {
    double prio;
    uint32_t node, gen;
} bpe_entry;

typedef struct {
    bpe_entry *a;
    size_t n, cap;
} bpe_heap;

/* The JS PriorityQueue, with its comparator a.mergePrio < b.mergePrio ("greater" = smaller). */
static int heap_greater(const bpe_heap *h, size_t i, size_t j) { return h->a[i].prio < h->a[j].prio; }

static void heap_swap(bpe_heap *h, size_t i, size_t j) {
    bpe_entry e = h->a[i];
    h->a[i] = h->a[j];
    h->a[j] = e;
}

static int heap_push(bpe_heap *h, bpe_entry e) {
    if (h->n == h->cap) {
        size_t cap = h->cap * 2 + 16;
        bpe_entry *a = realloc(h->a, cap * sizeof *a);
        if (!a) return -1;
        h->a = a;
        h->cap = cap;
    }
    size_t node = h->n++;
    h->a[node] = e;
    while (node > 0 && heap_greater(h, node, (node + 1) / 2 - 1)) {
        heap_swap(h, node, (node + 1) / 2 - 1);
        node = (node + 1) / 2 - 1;
    }
    return 0;
}

static bpe_entry heap_pop(bpe_heap *h) {
    bpe_entry top = h->a[0];
    if (h->n - 1 > 0) heap_swap(h, 0, h->n - 1);
    h->n--;
    size_t node = 0;
    for (;;) {
        size_t l = 2 * node + 1, r = 2 * node + 2;
        int lg = l < h->n && heap_greater(h, l, node), rg = r < h->n && heap_greater(h, r, node);
        if (!lg && !rg) break;
        size_t child = (r < h->n && heap_greater(h, r, l)) ? r : l;
        heap_swap(h, node, child);
        node = child;
    }
    return top;
}

/* addToMergeQueue: queue the pair (slot i, its next) if it is a merge.  The priority is the same
 * double as the JS one: a division, not a multiplication by a reciprocal, so it rounds alike. */
static int try_queue(const tokenizer *t, bpe_node *nodes, bpe_heap *h, uint32_t i, double units) {
    bpe_node *nd = &nodes[i];
    const merge_slot *m = merge_find(t, (uint32_t)nd->tok << 16 | (uint32_t)nodes[nd->next].tok);
    if (!m) return 0;
    nd->result = m->result;
    return heap_push(h, (bpe_entry){(double)m->rank + (double)i / units, i, nd->gen});
}

/* Pops merges in priority order until the queue is empty (the JS main loop). */
static int run_queue(const tokenizer *t, bpe_node *nodes, bpe_heap *heap, double units) {
    int err = 0;
    while (heap->n && !err) {
        bpe_entry e = heap_pop(heap);
        bpe_node *l = &nodes[e.node];
        if (l->gen != e.gen || l->next < 0) continue; /* replaced since it was queued */
        bpe_node *r = &nodes[l->next];
        l->tok = l->result;
        l->gen++;
        r->gen++;
        l->next = r->next;
        if (l->next >= 0) nodes[l->next].prev = (int32_t)e.node;
        if (l->prev >= 0) {
            nodes[l->prev].gen++; /* the JS replaces the left neighbour by a copy */
            err |= try_queue(t, nodes, heap, (uint32_t)l->prev, units);
        }
        if (l->next >= 0) err |= try_queue(t, nodes, heap, e.node, units);
    }
    return err;
}

/* Segments.  With this vocabulary no merge can join two initial tokens a, b when
 *   - either is BOS/EOS/<unk> or a byte token (no merge uses them), or
 *   - b is "▁" and a is not (no piece has another character right before a "▁"),
 * which the loader verifies (t->segmented).  Between such tokens the text falls apart into
 * independent segments, roughly one word each.  Each segment's merges run in the order of their
 * JS priorities, as in the single queue: a merge only ever enables merges next to it, so how pops
 * of different segments interleave does not change any result, and within a segment no two
 * priorities are equal (same rank: different positions; different rank: the position fraction
 * differs by less than 2, since a segment spans fewer than 2 * promptLength positions).  So
 * running one small queue per segment gives the same tokens, with a queue that stays in cache. */
static int is_boundary(const tokenizer *t, int32_t a, int32_t b) {
    return a < 3 || b < 3 || t->byte_of[a] >= 0 || t->byte_of[b] >= 0 ||
           (b == t->space_id && a != t->space_id);
}

long tokenizer_encode(const tokenizer *t, const char *text, size_t len, int add_bos, int32_t **out) {
    if (!out) return loqt_set_error("tokenizer_encode: no output pointer");
    *out = NULL;
    if (!t || (!text && len)) return loqt_set_error("tokenizer_encode: no tokenizer or no text");
    if (len > TOK_MAX_TEXT)
        return loqt_set_error("tokenizer_encode: %zu bytes in one call; split the text (limit %zu)",
                              len, TOK_MAX_TEXT);
    if (len == 0) { /* llama-tokenizer-js returns [] for "", without BOS */
        *out = malloc(sizeof **out);
        return *out ? 0 : loqt_set_error("tokenizer_encode: out of memory");
    }
    /* at most one token per input byte, plus BOS and the leading space */
    size_t cap = len + 2;
    bpe_node *nodes = malloc(cap * sizeof *nodes);
    bpe_heap heap = {NULL, 0, 0};
    if (!nodes) return loqt_set_error("tokenizer_encode: out of memory for %zu bytes of text", len);

    /* mapCharactersToTokenIds: BOS, the added leading space, then one piece per code point, or
     * its UTF-8 bytes as <0xXX> pieces.  Ill-formed UTF-8 (which a JS string cannot hold) is
     * passed byte by byte, so decoding gives the input back.  units = the JS prompt.length. */
    size_t nt = 0, units = 0;
    if (add_bos) nodes[nt++].tok = TOK_BOS;
    nodes[nt++].tok = t->space_id;
    const unsigned char *s = (const unsigned char *)text;
    for (size_t i = 0; i < len;) {
        uint32_t cp;
        int k = utf8_next(s + i, len - i, &cp);
        if (k == 0) {
            units++;
            nodes[nt++].tok = t->byte_id[s[i++]];
            continue;
        }
        units += cp >= 0x10000 ? 2 : 1;
        int32_t id = cp == ' ' ? t->space_id : cp_piece(t, cp);
        if (id >= 0) nodes[nt++].tok = id;
        else
            for (int j = 0; j < k; j++) nodes[nt++].tok = t->byte_id[s[i + (size_t)j]];
        i += (size_t)k;
    }

    int err = 0;
    for (size_t i = 0; i < nt; i++) {
        nodes[i].prev = (int32_t)i - 1;
        nodes[i].next = i + 1 < nt ? (int32_t)(i + 1) : -1;
        nodes[i].gen = 0;
    }
    /* Queue the initial pairs; at each segment boundary (see is_boundary) run the queue dry. */
    for (size_t i = 1; i <= nt && !err; i++) {
        if (i < nt && !(t->segmented && is_boundary(t, nodes[i - 1].tok, nodes[i].tok)))
            err |= try_queue(t, nodes, &heap, (uint32_t)(i - 1), (double)units);
        else
            err |= run_queue(t, nodes, &heap, (double)units);
    }
    free(heap.a);
    if (err) {
        free(nodes);
        return loqt_set_error("tokenizer_encode: out of memory for the merge queue");
    }

    size_t count = 0;
    for (int32_t i = 0; i >= 0; i = nodes[i].next) count++;
    int32_t *ids = malloc(count * sizeof *ids);
    if (!ids) {
        free(nodes);
        return loqt_set_error("tokenizer_encode: out of memory");
    }
    count = 0;
    for (int32_t i = 0; i >= 0; i = nodes[i].next) ids[count++] = nodes[i].tok;
    free(nodes);
    *out = ids;
    return (long)count;
}

/* ---------------------------------------------------------------- decoding */

char *tokenizer_decode_len(const tokenizer *t, const int32_t *ids, size_t n, size_t *out_len) {
    if (out_len) *out_len = 0;
    if (!t || (!ids && n)) {
        loqt_set_error("tokenizer_decode: no tokenizer or no ids");
        return NULL;
    }
    size_t total = 0;
    for (size_t i = 0; i < n; i++) {
        if (ids[i] < 0 || ids[i] >= t->n) {
            loqt_set_error("tokenizer_decode: token id %d at position %zu is out of range (vocab %d)",
                           ids[i], i, t->n);
            return NULL;
        }
        total += t->byte_of[ids[i]] >= 0 ? 1 : piece_len(t, ids[i]);
    }
    char *buf = malloc(total + 1);
    if (!buf) {
        loqt_set_error("tokenizer_decode: out of memory");
        return NULL;
    }
    size_t m = 0;
    for (size_t i = 0; i < n; i++) {
        int id = ids[i];
        if (id == TOK_BOS || id == TOK_EOS) continue;
        if (t->byte_of[id] >= 0) buf[m++] = (char)t->byte_of[id];
        else {
            memcpy(buf + m, t->text + t->off[id], piece_len(t, id));
            m += piece_len(t, id);
        }
    }
    /* "▁" back to spaces on the joined bytes (as the JS does on the decoded string), then drop
     * the space the encoder added in front */
    size_t w = 0;
    for (size_t r = 0; r < m;) {
        if (r + 2 < m && (unsigned char)buf[r] == 0xE2 && (unsigned char)buf[r + 1] == 0x96 &&
            (unsigned char)buf[r + 2] == 0x81) {
            buf[w++] = ' ';
            r += 3;
        } else buf[w++] = buf[r++];
    }
    size_t start = w > 0 && buf[0] == ' ';
    memmove(buf, buf + start, w - start);
    buf[w - start] = 0;
    if (out_len) *out_len = w - start;
    return buf;
}

char *tokenizer_decode(const tokenizer *t, const int32_t *ids, size_t n) {
    return tokenizer_decode_len(t, ids, n, NULL);
}
