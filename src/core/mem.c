#include "core/mem.h"

#include "core/error.h"

#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

/* Each block carries a 64-byte header in front of the pointer handed out, so mem_free knows the
 * size and category without a lookup table. */
typedef struct {
    size_t bytes;
    uint32_t cat;
    uint32_t magic;
    char pad[48];
} mem_header;

#define MEM_MAGIC 0x4c6f5154u

static atomic_size_t cur[MEM_NCAT], peak[MEM_NCAT];
static atomic_size_t cur_total, peak_total;

static const char *names[MEM_NCAT] = {
    "quantized weights", "quantization state", "trainable factors", "dense parameters",
    "gradients", "optimizer state", "activations", "scratch", "data",
};

/* the same names as JSON keys */
static const char *keys[MEM_NCAT] = {
    "quantized_weights", "quantization_state", "trainable_factors", "dense_parameters",
    "gradients", "optimizer_state", "activations", "scratch", "data",
};

const char *mem_cat_name(mem_cat c) { return (unsigned)c < MEM_NCAT ? names[c] : "?"; }
const char *mem_cat_key(mem_cat c) { return (unsigned)c < MEM_NCAT ? keys[c] : "?"; }

static void bump_peak(atomic_size_t *pk, size_t v) {
    size_t old = atomic_load(pk);
    while (v > old && !atomic_compare_exchange_weak(pk, &old, v)) {
    }
}

void *mem_try_alloc(mem_cat c, size_t bytes) {
    if ((unsigned)c >= MEM_NCAT) c = MEM_SCRATCH;
    void *raw = NULL;
    if (bytes > SIZE_MAX - sizeof(mem_header) - 64 ||
        posix_memalign(&raw, 64, sizeof(mem_header) + (bytes ? bytes : 1)) != 0) {
        loqt_set_error("out of memory allocating %.1f MiB of %s", (double)bytes / 1048576.0,
                       names[c]);
        return NULL;
    }
    memset((char *)raw + sizeof(mem_header), 0, bytes);
    mem_header *h = raw;
    h->bytes = bytes;
    h->cat = (uint32_t)c;
    h->magic = MEM_MAGIC;
    bump_peak(&peak[c], atomic_fetch_add(&cur[c], bytes) + bytes);
    bump_peak(&peak_total, atomic_fetch_add(&cur_total, bytes) + bytes);
    return (char *)raw + sizeof(mem_header);
}

void *mem_alloc(mem_cat c, size_t bytes) {
    void *p = mem_try_alloc(c, bytes);
    if (!p) loqt_die("%s (accounted in use: %.1f MiB)", loqt_last_error(),
                     (double)mem_current_total() / 1048576.0);
    return p;
}

static mem_header *header_of(const void *p) {
    mem_header *h = (mem_header *)((char *)p - sizeof(mem_header));
    if (h->magic != MEM_MAGIC) {
        fprintf(stderr, "loqt: internal error: mem_free of a pointer not from mem_alloc\n");
        abort();
    }
    return h;
}

void mem_free(void *p) {
    if (!p) return;
    mem_header *h = header_of(p);
    atomic_fetch_sub(&cur[h->cat], h->bytes);
    atomic_fetch_sub(&cur_total, h->bytes);
    h->magic = 0;
    free(h);
}

size_t mem_size(const void *p) { return p ? header_of(p)->bytes : 0; }
mem_cat mem_category(const void *p) { return (mem_cat)header_of(p)->cat; }
size_t mem_current(mem_cat c) { return (unsigned)c < MEM_NCAT ? atomic_load(&cur[c]) : 0; }
size_t mem_peak(mem_cat c) { return (unsigned)c < MEM_NCAT ? atomic_load(&peak[c]) : 0; }
size_t mem_current_total(void) { return atomic_load(&cur_total); }
size_t mem_peak_total(void) { return atomic_load(&peak_total); }

size_t mem_peak_rss(void) {
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru) != 0) return 0;
    return (size_t)ru.ru_maxrss * 1024; /* Linux reports KiB */
}

size_t mem_current_rss(void) {
    FILE *f = fopen("/proc/self/statm", "r");
    if (!f) return 0;
    unsigned long size = 0, resident = 0;
    int n = fscanf(f, "%lu %lu", &size, &resident);
    fclose(f);
    return n == 2 ? (size_t)resident * (size_t)sysconf(_SC_PAGESIZE) : 0;
}

size_t mem_physical(void) {
    long pages = sysconf(_SC_PHYS_PAGES), psz = sysconf(_SC_PAGESIZE);
    return pages > 0 && psz > 0 ? (size_t)pages * (size_t)psz : 0;
}

void mem_peak_reset(void) {
    for (int c = 0; c < MEM_NCAT; c++) atomic_store(&peak[c], atomic_load(&cur[c]));
    atomic_store(&peak_total, atomic_load(&cur_total));
}

static void *workspace;

void *mem_workspace(size_t bytes) {
    if (bytes > mem_size(workspace)) {
        mem_free(workspace);
        workspace = mem_alloc(MEM_SCRATCH, bytes);
    }
    return workspace;
}

void mem_workspace_release(void) {
    mem_free(workspace);
    workspace = NULL;
}

void mem_sim_alloc(mem_sim *s, mem_cat c, size_t b) {
    s->cur[c] += b;
    if (s->cur[c] > s->peak[c]) s->peak[c] = s->cur[c];
    s->total += b;
    if (s->total > s->peak_total) s->peak_total = s->total;
}

void mem_sim_free(mem_sim *s, mem_cat c, size_t b) {
    s->cur[c] -= b;
    s->total -= b;
}

void mem_sim_temp(mem_sim *s, mem_cat c, size_t b) {
    mem_sim_alloc(s, c, b);
    mem_sim_free(s, c, b);
}

void mem_sim_workspace(mem_sim *s, size_t b) {
    if (b <= s->workspace) return;
    if (s->workspace) mem_sim_free(s, MEM_SCRATCH, s->workspace);
    mem_sim_alloc(s, MEM_SCRATCH, b);
    s->workspace = b;
}

void mem_sim_workspace_release(mem_sim *s) {
    if (s->workspace) mem_sim_free(s, MEM_SCRATCH, s->workspace);
    s->workspace = 0;
}

void mem_report(FILE *f) {
    const double MiB = 1048576.0;
    fprintf(f, "memory (MiB)            current      peak\n");
    for (int c = 0; c < MEM_NCAT; c++) {
        if (!peak[c]) continue;
        fprintf(f, "  %-20s %10.1f %10.1f\n", names[c], cur[c] / MiB, peak[c] / MiB);
    }
    fprintf(f, "  %-20s %10.1f %10.1f\n", "accounted total", cur_total / MiB, peak_total / MiB);
    fprintf(f, "  %-20s %10s %10.1f\n", "peak RSS (measured)", "", mem_peak_rss() / MiB);
}

void mem_report_json(FILE *f) {
    const double MiB = 1048576.0;
    fprintf(f, "{");
    /* "<category>_mib" is the peak of the category; "current_<category>_mib" what is held now */
    for (int c = 0; c < MEM_NCAT; c++) fprintf(f, "\"%s_mib\": %.2f, ", keys[c], peak[c] / MiB);
    for (int c = 0; c < MEM_NCAT; c++)
        fprintf(f, "\"current_%s_mib\": %.2f, ", keys[c], cur[c] / MiB);
    fprintf(f, "\"accounted_peak_mib\": %.2f, \"peak_rss_mib\": %.2f}", peak_total / MiB,
            mem_peak_rss() / MiB);
}
