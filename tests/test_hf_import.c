/* Loading LLaMA checkpoints in Hugging Face layout (model/checkpoint.h llama_load_pretrained,
 * io/safetensors.h st_open_dir), against tests/gen_hf_ref.py: directories written there from the
 * formats' descriptions, and the logits a plain float64 PyTorch LLaMA computes from the stored
 * weights.
 *   - three BF16 shards with an index, grouped-query attention (4 heads over 2), tied embeddings;
 *   - one file of mixed F16 / F32 / BF16 tensors, one key/value head for all (multi-query), untied;
 *   - every method gets each layer's pretrained weight as its init's W0 (and the dense parameters
 *     are the stored values);
 *   - broken directories (a missing shard, an index naming a tensor its shard does not hold, a
 *     shard tensor the index does not list, a shard path outside the directory, a wrong shape, an
 *     unsupported dtype, a tied model whose lm_head copy differs, a tensor the model does not
 *     have) give one-line errors, while RoPE's saved inv_freq buffers are skipped;
 *   - a mapped tensor's pages are handed back after it is read. */
#include "test.h"

#include "core/error.h"
#include "core/mem.h"
#include "core/rng.h"
#include "model/checkpoint.h"

#include <sys/stat.h>
#include <unistd.h>

static const char *ref_dir(void) {
    const char *d = getenv("LOQT_REF_DIR");
    return d ? d : "build/ref";
}

static int load(llama_model *m, const char *dir, const linear_method *meth, const method_opts *mo) {
    llama_config cfg;
    if (checkpoint_read_config(dir, &cfg)) return -1;
    return llama_load_pretrained(m, &cfg, meth, mo, 3, dir);
}

/* The model's logits of the reference inputs against the reference's; tolerance |a - b| <=
 * atol + rtol |b|.  loqt computes in float32 from the same (exactly converted) weights that the
 * reference uses in float64: the difference is float32 rounding through two layers (measured:
 * at most about 2e-6 on logits of order 1 to 10; tolerance 2e-5 + 2e-5 |b|). */
static void check_logits(const char *name, double atol, double rtol) {
    char dir[600], ref[600], key[128];
    snprintf(dir, sizeof dir, "%s/%s", ref_dir(), name);
    snprintf(ref, sizeof ref, "%s/hf_ref.safetensors", ref_dir());
    st_file f;
    llama_model m;
    method_opts mo;
    method_opts_defaults(&mo, method_find("full"));
    if (st_open(&f, ref)) {
        CHECK(0, "reference: %s", loqt_last_error());
        return;
    }
    int rc = load(&m, dir, method_find("full"), &mo);
    CHECK(rc == 0, "%s: %s", dir, loqt_last_error());
    snprintf(key, sizeof key, "%s.inputs", name);
    const st_tensor *ti = st_find(&f, key);
    snprintf(key, sizeof key, "%s.logits", name);
    const st_tensor *tl = st_find(&f, key);
    CHECK(ti && tl && ti->ndim == 2, "reference tensors of %s missing", name);
    if (rc || !ti || !tl) {
        st_close(&f);
        return;
    }
    const int B = (int)ti->shape[0], T = (int)ti->shape[1], V = m.cfg.vocab_size;
    CHECK(tl->nbytes == sizeof(float) * (size_t)B * T * V, "logits shape");
    float *logits = malloc(sizeof(float) * (size_t)B * T * V);
    llama_set_batch(&m, B, T);
    llama_forward(&m, st_data(&f, ti), NULL, 0.0f, logits);
    size_t where = 0;
    double worst = test_max_violation(logits, st_data(&f, tl), (size_t)B * T * V, atol, rtol, &where);
    const float *want = st_data(&f, tl);
    CHECK(worst <= 1.0, "%s: logit %zu is %.7g, PyTorch's %.7g (atol %g, rtol %g)", name, where, logits[where],
          want[where], atol, rtol);
    free(logits);
    llama_free(&m);
    st_close(&f);
}

static void test_sharded_bf16_gqa_tied_logits(void) {
    check_logits("hf_gqa_tied", 2e-5, 2e-5);
}

static void test_single_file_mixed_dtypes_mqa_logits(void) {
    check_logits("hf_mqa_mixed", 2e-5, 2e-5);
}

/* Every method's layers start from the stored weight: a layer of the loaded model exports what
 * a lone layer of the same name and options exports after init from that weight (bit for bit),
 * and the embedding and norms are the stored values.  How close a method's export is to W0 is
 * tests/test_methods.c's check. */
static void test_every_method_starts_from_the_weights(void) {
    char dir[600];
    snprintf(dir, sizeof dir, "%s/hf_gqa_tied", ref_dir());
    st_file w;
    if (st_open_dir(&w, dir)) {
        CHECK(0, "%s", loqt_last_error());
        return;
    }
    for (int k = 0; k < method_count(); k++) {
        const linear_method *meth = method_at(k);
        method_opts mo;
        method_opts_defaults(&mo, meth);
        const method_option *rank = method_option_find(meth, "rank");
        if (rank) method_option_set(&mo, rank, 8);
        llama_model m;
        if (load(&m, dir, meth, &mo)) {
            CHECK(0, "%s: %s", meth->name, loqt_last_error());
            continue;
        }
        int bad = 0;
        for (int i = 0; i < llama_dense_count(&m); i++) {
            const dense_param *p = llama_dense_at(&m, i);
            float *want = malloc(p->n * sizeof(float));
            bad += st_read_f32(&w, p->name, want, p->ndim, p->shape) || memcmp(want, p->w, p->n * sizeof(float));
            free(want);
        }
        for (int l = 0; l < m.cfg.num_hidden_layers; l++)
            for (int j = 0; j < LIN_PER_BLOCK; j++) {
                const linear_layer *L = &m.blocks[l].lin[j];
                const size_t n = (size_t)L->out * L->in;
                float *W0 = malloc(n * sizeof(float)), *a = malloc(n * sizeof(float)), *b = malloc(n * sizeof(float));
                char name[160];
                snprintf(name, sizeof name, "%s.weight", L->name);
                const int64_t shape[2] = {L->out, L->in};
                linear_layer lone = {.m = meth, .out = L->out, .in = L->in};
                snprintf(lone.name, sizeof lone.name, "%s", L->name);
                const linear_init ini = {.W0 = W0};
                if (st_read_f32(&w, name, W0, 2, shape) || meth->init(&lone, &m.mopts, &ini)) {
                    bad++;
                } else {
                    meth->export_dense(L, a);
                    meth->export_dense(&lone, b);
                    bad += memcmp(a, b, n * sizeof(float)) != 0;
                    meth->free(&lone);
                }
                free(W0), free(a), free(b);
            }
        CHECK(bad == 0, "%s: %d tensors differ from an init from the stored weights (must be identical)", meth->name, bad);
        llama_free(&m);
    }
    st_close(&w);
}

/* ---- broken directories ------------------------------------------------------------------- */

static char tmp[256];

static void sh(const char *fmt, const char *arg) {
    char cmd[2048];
    snprintf(cmd, sizeof cmd, fmt, arg, arg, arg, arg);
    if (system(cmd) != 0) printf("    command failed: %s\n", cmd);
}

/* A copy of the sharded reference directory as tmp/NAME, edited by `edit` (a shell command run in
 * it), then loaded: the error must be one line containing `want`. */
static void expect_broken(const char *name, const char *edit, const char *want) {
    char dir[600], cmd[2048];
    snprintf(dir, sizeof dir, "%s/%s", tmp, name);
    snprintf(cmd, sizeof cmd, "rm -rf '%s' && cp -r '%s/hf_gqa_tied' '%s' && cd '%s' && %s", dir, ref_dir(), dir, dir, edit);
    CHECK(system(cmd) == 0, "setup of %s failed: %s", name, cmd);
    llama_model m;
    method_opts mo;
    method_opts_defaults(&mo, method_find("full"));
    loqt_clear_error();
    int rc = load(&m, dir, method_find("full"), &mo);
    const char *e = loqt_last_error();
    CHECK(rc != 0, "%s: loaded", name);
    CHECK(strstr(e, want) && !strchr(e, '\n'), "%s: the error lacks '%s' or is not one line: %s", name, want, e);
    if (!rc) llama_free(&m);
}

static void test_broken_directories(void) {
    if (test_make_tmpdir(tmp, sizeof tmp, "hf")) return;
    const char *py = "/usr/bin/python3 -c \"import json, sys; p = 'model.safetensors.index.json'; ix = json.load(open(p)); ";
    char edit[1024];
    expect_broken("missing_shard", "rm model-00002-of-00003.safetensors", "names shard model-00002-of-00003.safetensors, which is missing");
    snprintf(edit, sizeof edit, "%sm = ix['weight_map']; m['model.norm.weight'] = 'model-00001-of-00003.safetensors'; "
             "json.dump(ix, open(p, 'w'))\"", py);
    expect_broken("tensor_not_in_shard", edit, "maps tensor 'model.norm.weight' to model-00001-of-00003.safetensors, which does not hold it");
    snprintf(edit, sizeof edit, "%sdel ix['weight_map']['model.norm.weight']; json.dump(ix, open(p, 'w'))\"", py);
    expect_broken("tensor_not_in_index", edit, "holds tensor 'model.norm.weight', which model.safetensors.index.json does not map to it");
    snprintf(edit, sizeof edit, "%sm = ix['weight_map']; m['model.norm.weight'] = '../x.safetensors'; json.dump(ix, open(p, 'w'))\"", py);
    expect_broken("shard_outside", edit, "which is not a file name in the directory");
    expect_broken("not_json", "printf '{\"weight_map\": ' >model.safetensors.index.json", "model.safetensors.index.json");
    expect_broken("no_weights", "rm model*", "no model.safetensors and no model.safetensors.index.json");
    expect_broken("shape", "sed -i 's/\"intermediate_size\": 176/\"intermediate_size\": 160/' config.json",
                  "has shape [176,64], expected [160,64]");
    /* an I32 tensor where a weight belongs: rewrite the header's dtype in place (same size) */
    snprintf(edit, sizeof edit, "/usr/bin/python3 -c \"import sys; f = 'model-00001-of-00003.safetensors'; b = open(f, 'rb').read(); "
             "i = b.index(b'\\\"BF16\\\"', b.index(b'k_proj')); open(f, 'wb').write(b[:i] + b'\\\"I16\\\" ' + b[i + 6:])\"");
    expect_broken("dtype", edit, "has dtype I16, expected F32, F16 or BF16");
    sh("rm -rf '%s'", tmp);
}

/* Writes src's dense export to dir with one extra tensor `name` ([rows, cols] fp32 from data). */
static int export_with(const llama_model *src, const char *dir, const char *name, const float *data, int64_t rows,
                       int64_t cols) {
    char path[400], out[400];
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    snprintf(out, sizeof out, "%s/with_extra.safetensors", dir);
    st_file f;
    if (llama_export_dense(src, dir) || st_open(&f, path)) return -1;
    st_writer *w = st_writer_new();
    for (int i = 0; i < f.n_tensors; i++)
        st_writer_add(w, f.tensors[i].name, f.tensors[i].dtype, f.tensors[i].ndim, f.tensors[i].shape, f.tensors[i].bytes);
    const int64_t shape[2] = {rows, cols};
    st_writer_add(w, name, ST_F32, cols ? 2 : 1, shape, data);
    int rc = st_writer_write(w, out);
    st_writer_free(w);
    st_close(&f);
    return rc || rename(out, path);
}

/* A tied model's checkpoint with lm_head.weight: accepted as a copy of the embedding, refused
 * when it differs.  RoPE's inv_freq buffers (saved by older Hugging Face versions) are skipped;
 * any other tensor the model does not have is refused. */
static void test_extra_tensors(void) {
    char dir[300];
    if (test_make_tmpdir(dir, sizeof dir, "tied")) return;
    llama_config c = {"tied", 32, 64, 1, 4, 2, 48, 32, 1e-6, 10000.0, 1};
    method_opts mo;
    method_opts_defaults(&mo, method_find("full"));
    llama_model src, m;
    CHECK(llama_create(&src, &c, method_find("full"), &mo, 5) == 0, "create");
    float *head = malloc(src.embed.n * sizeof(float));
    memcpy(head, src.embed.w, src.embed.n * sizeof(float));
    const char *why[4] = {"a copy of the embedding as lm_head.weight", "a differing lm_head.weight",
                          "a rotary_emb.inv_freq buffer", "a tensor of a second layer"};
    for (int variant = 0; variant < 4; variant++) {
        int wrote = variant < 2 ? export_with(&src, dir, "lm_head.weight", head, src.embed.shape[0], src.embed.shape[1])
                    : variant == 2 ? export_with(&src, dir, "model.layers.0.self_attn.rotary_emb.inv_freq", head, 4, 0)
                                   : export_with(&src, dir, "model.layers.1.mlp.up_proj.weight", head, 32, 32);
        CHECK(wrote == 0, "writing the checkpoint with %s: %s", why[variant], loqt_last_error());
        loqt_clear_error();
        int rc = llama_load_pretrained(&m, &c, method_find("full"), &mo, 0, dir);
        const char *want = variant == 1 ? "lm_head.weight differs from model.embed_tokens.weight"
                           : variant == 3 ? "hold tensor 'model.layers.1.mlp.up_proj.weight'" : NULL;
        if (!want) CHECK(rc == 0, "a checkpoint with %s refused: %s", why[variant], loqt_last_error());
        else CHECK(rc != 0 && strstr(loqt_last_error(), want), "a checkpoint with %s: %s", why[variant],
                   rc ? loqt_last_error() : "accepted");
        if (!rc) llama_free(&m);
        head[7] += variant == 0 ? 0.5f : 0.0f; /* variant 1 differs */
    }
    free(head);
    llama_free(&src);
    sh("rm -rf '%s'", dir);
}

/* A large tensor of a mapped file does not stay resident once read: the open (its checksum) and the
 * finiteness scan of 64 MiB of BF16 leave the resident set within 16 MiB of where it was, and reading it into a 128 MiB
 * float32 buffer grows it by the buffer and at most 16 MiB more (without the release each grows
 * by the whole 64 MiB of the file). */
static void test_pages_released_after_reading(void) {
    char dir[300], path[400];
    if (test_make_tmpdir(dir, sizeof dir, "pages")) return;
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    const int64_t shape[2] = {4096, 8192};
    const size_t n = (size_t)shape[0] * shape[1], MiB = 1 << 20;
    uint16_t *bf = malloc(n * 2);
    for (size_t i = 0; i < n; i++) bf[i] = (uint16_t)(0x3c00 + (i & 0xff)); /* finite, varied */
    st_writer *w = st_writer_new();
    st_writer_add(w, "big", ST_BF16, 2, shape, bf);
    CHECK(st_writer_write(w, path) == 0, "write");
    st_writer_free(w);
    free(bf);
    float *dst = malloc(n * sizeof(float));
    st_file f;
    const size_t before = mem_current_rss();
    /* the open verifies the file's checksum (every byte), the scan reads every value again */
    CHECK(st_open_dir(&f, dir) == 0, "%s", loqt_last_error());
    CHECK(st_check_finite(&f) == 0, "finite");
    const size_t after_scan = mem_current_rss();
    CHECK(after_scan < before + 16 * MiB, "the open and scan of 64 MiB left %.0f MiB resident (tolerance 16 MiB)",
          ((double)after_scan - (double)before) / MiB);
    CHECK(st_read_f32(&f, "big", dst, 2, shape) == 0, "read: %s", loqt_last_error());
    const size_t after_read = mem_current_rss();
    CHECK(after_read < after_scan + n * sizeof(float) + 16 * MiB,
          "reading 64 MiB into a 128 MiB buffer grew the resident set by %.0f MiB (tolerance 128 + 16 MiB)",
          ((double)after_read - (double)after_scan) / MiB);
    CHECK(dst[1] == st_bf16_to_f32(0x3c01) && dst[n - 1] == st_bf16_to_f32((uint16_t)(0x3c00 + ((n - 1) & 0xff))),
          "values read after the release");
    free(dst);
    st_close(&f);
    sh("rm -rf '%s'", dir);
}

int main(void) {
    RUN(test_sharded_bf16_gqa_tied_logits);
    RUN(test_single_file_mixed_dtypes_mqa_logits);
    RUN(test_every_method_starts_from_the_weights);
    RUN(test_broken_directories);
    RUN(test_extra_tensors);
    RUN(test_pages_released_after_reading);
    TEST_END();
}
