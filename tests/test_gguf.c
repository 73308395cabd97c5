/* GGUF export (io/gguf, model/gguf_export): the fp16 rounding against IEEE 754 on every half, the
 * block encodings against hand-worked blocks and their error bounds, the writer's failure paths,
 * and, for every registered method, a trained model exported as f32, f16, q8_0 and q4_0 and
 * checked by tests/gguf_check.py, an independent reader written from the format's definition
 * (structure, tensor values, logits of a llama.cpp-style forward pass against loqt's, and the
 * embedded tokenizer against the reference encodings).  The exports' scratch memory equals
 * llama_gguf_scratch_bytes to the byte.
 *
 * Needs the LLaMA tokenizer (LOQT_TOKENIZER, default data/llama.tok), the reference encodings
 * (LOQT_REF_DIR/tokenizer_cases.txt, from tests/gen_tokenizer_cases.js) and python3 with numpy
 * (PYTHON, default /usr/bin/python3). */
#include "test.h"

#include "core/error.h"
#include "core/mem.h"
#include "io/gguf.h"
#include "io/safetensors.h"
#include "model/checkpoint.h"
#include "model/gguf_export.h"
#include "model/train.h"

#include <sys/stat.h>
#include <unistd.h>

static const char *tokenizer_path(void) {
    const char *p = getenv("LOQT_TOKENIZER");
    return p && *p ? p : "data/llama.tok";
}

static const char *ref_dir(void) {
    const char *d = getenv("LOQT_REF_DIR");
    return d && *d ? d : "build/ref";
}

/* ---- fp16 --------------------------------------------------------------------------------- */

static float from_bits(uint32_t u) {
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static void test_f16_known_values(void) {
    /* IEEE 754 binary16 encodings; ties go to the even neighbour */
    const struct { float x; uint16_t h; } cases[] = {
        {0.0f, 0x0000}, {-0.0f, 0x8000}, {1.0f, 0x3C00}, {-2.0f, 0xC000}, {0.5f, 0x3800},
        {65504.0f, 0x7BFF}, {65519.0f, 0x7BFF}, {65520.0f, 0x7C00}, {-1e9f, 0xFC00},
        {0x1p-14f, 0x0400}, {0x1p-24f, 0x0001}, {0x1p-25f, 0x0000}, {0x1.8p-25f, 0x0001},
        {0x1.8p-24f, 0x0002}, {0x1.002p0f, 0x3C00}, {0x1.006p0f, 0x3C02}, {0x1.ff8p-15f, 0x03FF},
        {0x1.ffcp-15f, 0x0400}, {0x1.ffep-15f, 0x0400}, {0.1f, 0x2E66}, {3.14159265f, 0x4248}, {INFINITY, 0x7C00},
        {-INFINITY, 0xFC00},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        uint16_t h = gguf_f32_to_f16(cases[i].x);
        CHECK(h == cases[i].h, "f16(%a) = 0x%04x, IEEE 754 gives 0x%04x", (double)cases[i].x, h, cases[i].h);
    }
    CHECK((gguf_f32_to_f16(NAN) & 0x7E00) == 0x7E00 && (gguf_f32_to_f16(NAN) & 0x3FF), "NaN stays a quiet NaN");
}

static void test_f16_every_half(void) {
    /* every finite half round-trips, and the midpoint between neighbours goes to the even one
     * (the largest half's upper midpoint, 65520, overflows) */
    int bad = 0;
    for (uint32_t h = 0; h < 0x10000 && bad < 5; h++) {
        if ((h & 0x7C00) == 0x7C00) continue;
        float x = st_f16_to_f32((uint16_t)h);
        if (gguf_f32_to_f16(x) != h) {
            printf("    half 0x%04x (%a) comes back as 0x%04x\n", h, (double)x, gguf_f32_to_f16(x));
            bad++;
        }
        if ((h & 0x7FFF) == 0x7BFF) continue;
        float up = st_f16_to_f32((uint16_t)(h + 1));
        double mid = ((double)x + (double)up) / 2; /* exact in float: one more bit */
        uint16_t want = (h & 1) ? (uint16_t)(h + 1) : (uint16_t)h;
        if (gguf_f32_to_f16((float)mid) != want) {
            printf("    midpoint %a of 0x%04x and 0x%04x gives 0x%04x\n", mid, h, h + 1, gguf_f32_to_f16((float)mid));
            bad++;
        }
        /* just above / below the midpoint go up / down */
        uint32_t mb;
        float midf = (float)mid;
        memcpy(&mb, &midf, 4);
        if (gguf_f32_to_f16(from_bits(mb + 1)) != (uint16_t)(h + 1) || gguf_f32_to_f16(from_bits(mb - 1)) != h) {
            printf("    neighbours of the midpoint of 0x%04x round the wrong way\n", h);
            bad++;
        }
    }
    CHECK(bad == 0, "%d halves wrong (tolerance: none)", bad);
}

/* ---- blocks ------------------------------------------------------------------------------- */

static void test_q8_0_block(void) {
    float x[32];
    for (int j = 0; j < 32; j++) x[j] = (float)(j - 16) / 16.0f * 1.27f; /* amax 1.27 at j = 0 */
    unsigned char b[34];
    CHECK(gguf_encode(GGUF_Q8_0, x, 32, b) == 0, "encode: %s", loqt_last_error());
    uint16_t h = (uint16_t)(b[0] | b[1] << 8);
    CHECK(h == 0x211F, "scale 0x%04x, want fp16(0.01) = 0x211f (IEEE 754)", h);
    const float d = st_f16_to_f32(h);
    const signed char *q = (const signed char *)(b + 2);
    /* by hand: x = (j - 16) * 0.079375, d = fp16(0.01) = 0.0099945, q = round(x / d) */
    CHECK(q[0] == -127 && q[16] == 0 && q[31] == 119, "codes %d %d %d, want -127 0 119", q[0], q[16], q[31]);
    double worst = 0;
    for (int j = 0; j < 32; j++) worst = fmax(worst, fabs(q[j] * d - x[j]) / d);
    CHECK(worst <= 0.5 + 1e-6, "worst error %.6f steps (bound: half a step)", worst);
    float z[32] = {0};
    CHECK(gguf_encode(GGUF_Q8_0, z, 32, b) == 0 && b[0] == 0 && b[1] == 0 && b[2] == 0, "a zero block has scale 0");
    z[3] = 1e7f; /* scale 78740: beyond fp16 */
    CHECK(gguf_encode(GGUF_Q8_0, z, 32, b) < 0 && strstr(loqt_last_error(), "fp16"), "too large: %s", loqt_last_error());
    CHECK(gguf_encode(GGUF_Q8_0, x, 31, b) < 0, "31 values are no block");
}

static void test_q4_0_block(void) {
    float x[32];
    for (int j = 0; j < 32; j++) x[j] = 0.25f * (float)(j % 16) - 1.0f; /* -1 .. 2.75: m = 2.75 */
    unsigned char b[18];
    CHECK(gguf_encode(GGUF_Q4_0, x, 32, b) == 0, "encode: %s", loqt_last_error());
    const float d = st_f16_to_f32((uint16_t)(b[0] | b[1] << 8));
    CHECK(d == st_f16_to_f32(gguf_f32_to_f16(2.75f / -8.0f)), "scale %g, want fp16(-0.34375)", (double)d);
    /* by hand: d = -0.34375 exactly; x = 2.75 -> code 0, x = -1 -> round(2.909) + 8 = 11 */
    CHECK((b[2] & 15) == 11 && (b[2] >> 4) == 11, "element 0 and 16 (x = -1): codes %d %d, want 11 11", b[2] & 15, b[2] >> 4);
    CHECK((b[17] & 15) == 0 && (b[17] >> 4) == 0, "element 15 and 31 (x = 2.75): codes %d %d, want 0 0", b[17] & 15, b[17] >> 4);
    double worst = 0;
    for (int j = 0; j < 32; j++) {
        int q = j < 16 ? (b[2 + j] & 15) : (b[2 + j - 16] >> 4);
        worst = fmax(worst, fabs((q - 8) * d - x[j]) / fabs(d));
    }
    CHECK(worst <= 0.5 + 1e-6, "worst error %.6f steps (bound: half a step; no value near -m here)", worst);
    /* -m clamps to code 15: one step off */
    float y[32] = {0};
    y[0] = 1.0f;
    y[1] = -1.0f;
    CHECK(gguf_encode(GGUF_Q4_0, y, 32, b) == 0 && (b[2] & 15) == 0 && (b[3] & 15) == 15, "m -> 0, -m -> 15");
}

/* ---- the writer --------------------------------------------------------------------------- */

static void scratch_path(char *out, size_t cap, const char *name) {
    const char *t = getenv("TMPDIR");
    snprintf(out, cap, "%s/loqt_test_gguf_%d_%s", t && *t ? t : ref_dir(), (int)getpid(), name);
}

static void test_writer_failures(void) {
    gguf_writer *w = gguf_writer_new();
    const int64_t ne[2] = {31, 2};
    CHECK(gguf_add_tensor(w, "a", 2, ne, GGUF_Q8_0) < 0 && strstr(loqt_last_error(), "blocks"), "31-wide rows as Q8_0: %s",
          loqt_last_error());
    char longname[80];
    memset(longname, 'x', 70);
    longname[70] = 0;
    CHECK(gguf_add_tensor(w, longname, 2, ne, GGUF_F32) < 0, "a 70-byte name is refused");
    CHECK(gguf_add_tensor(w, "ok", 2, ne, GGUF_F16) == 0, "declare: %s", loqt_last_error());
    CHECK(gguf_add_tensor(w, "ok2", 1, ne, GGUF_F32) == 0, "declare: %s", loqt_last_error());
    CHECK(gguf_writer_begin(w, "no-such-directory/x.gguf") < 0 && strstr(loqt_last_error(), "x.gguf"),
          "unwritable path: %s", loqt_last_error());
    gguf_writer_free(w);

    /* a writer freed before its last tensor leaves no file, neither the name nor the temporary */
    char path[600], tmp[620];
    scratch_path(path, sizeof path, "partial.gguf");
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    w = gguf_writer_new();
    gguf_kv_u32(w, "general.alignment", GGUF_ALIGNMENT);
    CHECK(gguf_add_tensor(w, "a", 2, ne, GGUF_F32) == 0 && gguf_add_tensor(w, "b", 2, ne, GGUF_F32) == 0, "declare");
    float v[62] = {1};
    CHECK(gguf_writer_begin(w, path) == 0 && gguf_write_tensor(w, v) == 0, "begin + one tensor: %s", loqt_last_error());
    CHECK(gguf_writer_finish(w) < 0 && strstr(loqt_last_error(), "1 of 2"), "finish with a tensor missing: %s",
          loqt_last_error());
    gguf_writer_free(w);
    CHECK(access(path, F_OK) != 0 && access(tmp, F_OK) != 0, "no file left behind");

    /* a value beyond fp16 names its tensor and leaves nothing */
    w = gguf_writer_new();
    CHECK(gguf_add_tensor(w, "big", 2, ne, GGUF_F16) == 0, "declare");
    v[5] = 1e6f;
    CHECK(gguf_writer_begin(w, path) == 0, "begin: %s", loqt_last_error());
    CHECK(gguf_write_tensor(w, v) < 0 && strstr(loqt_last_error(), "big") && strstr(loqt_last_error(), "fp16"),
          "overflow: %s", loqt_last_error());
    gguf_writer_free(w);
    CHECK(access(path, F_OK) != 0 && access(tmp, F_OK) != 0, "no file left behind after an overflow");
}

static void test_tensor_types(void) {
    /* the converter's and llama-quantize's choices */
    CHECK(llama_gguf_tensor_type(GGUF_Q4_0, "blk.0.attn_norm.weight", 1, 64) == GGUF_F32, "norms stay F32");
    CHECK(llama_gguf_tensor_type(GGUF_Q4_0, "output.weight", 2, 64) == GGUF_Q8_0, "q4_0 keeps the output in Q8_0");
    CHECK(llama_gguf_tensor_type(GGUF_Q4_0, "token_embd.weight", 2, 64) == GGUF_Q4_0, "q4_0 embedding");
    CHECK(llama_gguf_tensor_type(GGUF_Q8_0, "blk.0.ffn_down.weight", 2, 48) == GGUF_F16, "rows of 48: F16");
    CHECK(llama_gguf_tensor_type(GGUF_F16, "output.weight", 2, 48) == GGUF_F16, "f16 everywhere");
    CHECK(llama_gguf_tensor_type(GGUF_F32, "output.weight", 2, 48) == GGUF_F32, "f32 everywhere");
}

static void test_permutation(void) {
    /* 2 heads of 4 rows, 1 column: HF rows (0 1 | 2 3) per head pair (i, i + 2); llama.cpp wants
     * the pairs adjacent: 0 2 1 3 */
    float W[8] = {0, 1, 2, 3, 10, 11, 12, 13}, tmp[4];
    llama_gguf_permute_rope(W, 2, 4, 1, tmp);
    const float want[8] = {0, 2, 1, 3, 10, 12, 11, 13};
    CHECK(!memcmp(W, want, sizeof W), "permuted %g %g %g %g %g %g %g %g", W[0], W[1], W[2], W[3], W[4], W[5], W[6], W[7]);
}

/* ---- every method, four types ------------------------------------------------------------- */

static llama_config model_config(void) {
    /* the LLaMA vocabulary (the tokenizer is embedded), rows that are whole blocks, 4 heads of 16 */
    llama_config c = {"gguf-test", 64, 128, 2, 4, 4, 32000, 64, 1e-6, 10000.0, 0};
    return c;
}

/* A period-5 pattern: after some steps the model attends to earlier positions, so RoPE matters. */
static void train(llama_model *m, int steps) {
    enum { B = 2, T = 32 };
    int32_t in[B * T], tg[B * T];
    const int32_t pat[5] = {450, 4799, 17354, 29871, 13};
    train_hparams h;
    train_hparams_defaults(&h);
    h.sched.lr = 1e-2;
    h.sched.total_steps = steps;
    llama_set_batch(m, B, T);
    for (long s = 0; s < steps; s++) {
        for (int i = 0; i < B * T; i++) {
            in[i] = pat[(i + s) % 5];
            tg[i] = pat[(i + s + 1) % 5];
        }
        const int32_t *ins[1] = {in}, *tgs[1] = {tg};
        step_result r;
        if (train_step(m, s, ins, tgs, 1, &h, &r)) printf("    train_step: %s\n", loqt_last_error());
        if (s == 0 || s == steps - 1) printf("# step %ld: loss %.4f, grad norm %.3g\n", s + 1, r.loss, r.grad_norm);
    }
}

/* T token ids and loqt's logits [T, V]: "<i32 T> <i32 V> <i32 ids[T]> <f32 logits[T*V]>" */
static int write_logits(llama_model *m, const char *path) {
    enum { T = 24 };
    int32_t ids[T];
    for (int i = 0; i < T; i++) ids[i] = i == 0 ? 1 : (int32_t)((i * 7919 + 13) % 31990 + 3);
    const int V = m->cfg.vocab_size;
    llama_set_batch(m, 1, T);
    float *logits = malloc(sizeof(float) * (size_t)T * V);
    llama_forward(m, ids, NULL, 0.0f, logits);
    FILE *f = fopen(path, "wb");
    int32_t head[2] = {T, V};
    int ok = f && fwrite(head, 4, 2, f) == 2 && fwrite(ids, 4, T, f) == T &&
             fwrite(logits, 4, (size_t)T * V, f) == (size_t)T * V;
    if (f) fclose(f);
    free(logits);
    return ok ? 0 : -1;
}

/* The checker on wrong files must fail the checks that concern them: a flipped byte in the last
 * tensor of the f32 file, and the f16 and q8_0 files given in each other's place. */
static void checker_can_fail(const char *py, const char *dir, const char *logits, char path[4][700]) {
    char bad[700], cmd[8192], line[1000];
    snprintf(bad, sizeof bad, "%s/flipped.gguf", dir);
    FILE *in = fopen(path[0], "rb"), *out = fopen(bad, "wb");
    long size = 0;
    int c;
    while (in && out && (c = fgetc(in)) != EOF) {
        fputc(c, out);
        size++;
    }
    if (in) fclose(in);
    if (out) {
        fseek(out, size - 100, SEEK_SET); /* inside output.weight, the last tensor */
        fputc(0x5A, out);
        fclose(out);
    }
    snprintf(cmd, sizeof cmd, "'%s' tests/gguf_check.py --dense '%s' --logits '%s' --f32 '%s' --f16 '%s' --q8_0 '%s' --q4_0 '%s'",
             py, dir, logits, bad, path[2], path[1], path[3]);
    FILE *p = popen(cmd, "r");
    int flipped = 0, swapped16 = 0, swapped8 = 0;
    while (p && fgets(line, sizeof line, p)) {
        flipped += !strncmp(line, "FAIL f32_tensor_values", 22);
        swapped16 += !strncmp(line, "FAIL f16_tensor_shapes_types", 28);
        swapped8 += !strncmp(line, "FAIL q8_0_tensor_shapes_types", 29);
    }
    int rc = p ? pclose(p) : -1;
    CHECK(rc != 0 && flipped && swapped16 && swapped8,
          "the checker on wrong files: exit %d, flipped byte found %d, swapped f16 %d, swapped q8_0 %d", rc, flipped,
          swapped16, swapped8);
}

static void set_option(const linear_method *lm, method_opts *o, const char *name, double v) {
    const method_option *opt = method_option_find(lm, name);
    if (opt) method_option_set(o, opt, v);
}

static void export_method(const linear_method *lm, const tokenizer *tk, int with_cases) {
    llama_config cfg = model_config();
    method_opts mo;
    method_opts_defaults(&mo, lm);
    set_option(lm, &mo, "rank", 8); /* the low-rank methods: a rank the small layers allow */
    set_option(lm, &mo, "update-proj-gap", 10);
    llama_model m;
    if (llama_create(&m, &cfg, lm, &mo, 5)) {
        CHECK(0, "%s: create: %s", lm->name, loqt_last_error());
        return;
    }
    train(&m, 30);
    char dir[600], path[4][700], logits[700], cmd[8192];
    scratch_path(dir, sizeof dir, lm->name);
    CHECK(llama_export_dense(&m, dir) == 0, "%s: dense export: %s", lm->name, loqt_last_error());
    snprintf(logits, sizeof logits, "%s/logits.bin", dir);
    /* the GGUF holds the merged dense weights, so its logits are those of a plain LLaMA of those
     * weights: the method's own where its forward is y = x W_eff^T, not for DQT and BitNet, whose
     * forward also fake-quantizes the activations (8 bits), which a LLaMA GGUF cannot express */
    llama_model dense;
    method_opts dmo;
    method_opts_defaults(&dmo, method_find("full"));
    int dense_ok = llama_create(&dense, &cfg, method_find("full"), &dmo, 5) == 0;
    CHECK(dense_ok && checkpoint_load(&dense, dir, 1) == 0, "%s: dense export does not load: %s", lm->name, loqt_last_error());
    CHECK(dense_ok && write_logits(&dense, logits) == 0, "%s: cannot write %s", lm->name, logits);
    if (dense_ok) llama_free(&dense);
    const gguf_type types[4] = {GGUF_F32, GGUF_F16, GGUF_Q8_0, GGUF_Q4_0};
    const char *tags[4] = {"f32", "f16", "q8_0", "q4_0"};
    for (int t = 0; t < 4; t++) {
        snprintf(path[t], sizeof path[t], "%s/model-%s.gguf", dir, tags[t]);
        const size_t scratch0 = mem_current(MEM_SCRATCH), held0 = mem_current_total();
        mem_peak_reset();
        int rc = llama_export_gguf(&m, tk, path[t], types[t]);
        CHECK(rc == 0, "%s %s: %s", lm->name, tags[t], loqt_last_error());
        const size_t scratch = mem_peak(MEM_SCRATCH) - scratch0, above = mem_peak_total() - held0;
        const size_t planned = llama_gguf_scratch_bytes(&cfg, types[t]);
        /* a method's export_dense may allocate its own scratch for one layer (LoQT: P, B, B P);
         * the full-rank method allocates nothing, so there the bytes must match exactly */
        if (!strcmp(lm->name, "full"))
            CHECK(scratch == planned, "%s: export scratch %zu bytes, llama_gguf_scratch_bytes %zu", tags[t], scratch, planned);
        else
            CHECK(scratch >= planned, "%s %s: export scratch %zu bytes below the planned %zu", lm->name, tags[t], scratch, planned);
        size_t model_bytes = held0;
        CHECK(above < model_bytes / 2, "%s %s: the export held %zu bytes above the model's %zu (streamed: far less)",
              lm->name, tags[t], above, model_bytes);
        CHECK(mem_current_total() == held0, "%s %s: %zu bytes still held after the export", lm->name, tags[t],
              mem_current_total() - held0);
    }
    const char *py = getenv("PYTHON");
    char cases[700] = "";
    if (with_cases) snprintf(cases, sizeof cases, "--cases '%s/tokenizer_cases.txt'", ref_dir());
    snprintf(cmd, sizeof cmd, "'%s' tests/gguf_check.py --dense '%s' --logits '%s' %s --f32 '%s' --f16 '%s' --q8_0 '%s' --q4_0 '%s'",
             py && *py ? py : "/usr/bin/python3", dir, logits, cases, path[0], path[1], path[2], path[3]);
    fflush(stdout);
    int rc = system(cmd);
    CHECK(rc == 0, "%s: tests/gguf_check.py failed (exit %d); its FAIL lines are above", lm->name, rc);
    if (with_cases) checker_can_fail(py && *py ? py : "/usr/bin/python3", dir, logits, path);
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0) printf("    could not remove %s\n", dir);
    llama_free(&m);
}

static void test_every_method_every_type(void) {
    tokenizer *tk = tokenizer_load(tokenizer_path());
    CHECK(tk != NULL, "tokenizer: %s (run make tokenizer)", loqt_last_error());
    if (!tk) return;
    for (int i = 0; i < method_count(); i++) {
        printf("# method %s\n", method_at(i)->name);
        export_method(method_at(i), tk, i == 0);
    }
    tokenizer_free(tk);
}

static void test_vocab_too_small(void) {
    tokenizer *tk = tokenizer_load(tokenizer_path());
    if (!tk) {
        CHECK(0, "tokenizer: %s", loqt_last_error());
        return;
    }
    llama_config cfg = model_config();
    cfg.vocab_size = 1000;
    method_opts mo;
    method_opts_defaults(&mo, method_find("full"));
    llama_model m;
    CHECK(llama_create(&m, &cfg, method_find("full"), &mo, 1) == 0, "create");
    char path[600];
    scratch_path(path, sizeof path, "small.gguf");
    CHECK(llama_export_gguf(&m, tk, path, GGUF_F16) < 0 && strstr(loqt_last_error(), "vocab_size 1000"),
          "a 1000-token model cannot hold 32000 pieces: %s", loqt_last_error());
    CHECK(access(path, F_OK) != 0, "nothing written");
    llama_free(&m);
    tokenizer_free(tk);
}

int main(void) {
    RUN(test_f16_known_values);
    RUN(test_f16_every_half);
    RUN(test_q8_0_block);
    RUN(test_q4_0_block);
    RUN(test_writer_failures);
    RUN(test_tensor_types);
    RUN(test_permutation);
    RUN(test_vocab_too_small);
    RUN(test_every_method_every_type);
    TEST_END();
}
