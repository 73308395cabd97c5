#include "model/checkpoint.h"

#include "core/crc32c.h"
#include "core/error.h"
#include "core/json.h"
#include "core/mem.h"
#include "io/fileutil.h"

#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* out = dir + "/" + name; -1 with an error when it does not fit */
static int join(char *out, size_t cap, const char *dir, const char *name) {
    int n = snprintf(out, cap, "%s/%s", dir, name);
    if (n < 0 || (size_t)n >= cap) return loqt_set_error("path too long: %s/%s", dir, name);
    return 0;
}

void llama_save_tensors(const llama_model *m, st_writer *model, st_writer *state) {
    for (int i = 0; i < llama_dense_count(m); i++) {
        const dense_param *p = llama_dense_at(m, i);
        st_writer_add(model, p->name, ST_F32, p->ndim, p->shape, p->w);
        if (state) {
            char name[160];
            snprintf(name, sizeof name, "optimizer.%s", p->name);
            optim_state_save(&p->opt, state, name);
        }
    }
    st_writer *dummy = state ? NULL : st_writer_new();
    for (int l = 0; l < m->cfg.num_hidden_layers; l++)
        for (int j = 0; j < LIN_PER_BLOCK; j++)
            m->method->save(&m->blocks[l].lin[j], model, state ? state : dummy);
    if (dummy) st_writer_free(dummy);
}

int llama_load_tensors(llama_model *m, const st_file *model, const st_file *state) {
    for (int i = 0; i < llama_dense_count(m); i++) {
        dense_param *p = llama_dense_at(m, i);
        if (st_read_f32(model, p->name, p->w, p->ndim, p->shape)) return -1;
        if (state) {
            char name[160];
            snprintf(name, sizeof name, "optimizer.%s", p->name);
            if (optim_state_load(&p->opt, state, name)) return -1;
        }
    }
    for (int l = 0; l < m->cfg.num_hidden_layers; l++)
        for (int j = 0; j < LIN_PER_BLOCK; j++)
            if (m->method->load(&m->blocks[l].lin[j], model, state)) return -1;
    return 0;
}

/* Writes dir/config.json, with `extra` (one more "key": value, or NULL) as its last key; *crc (may
 * be NULL) receives the CRC-32C of its bytes. */
static int write_config(const llama_config *c, const char *dir, const char *extra, uint32_t *crc) {
    char path[4096];
    if (join(path, sizeof path, dir, "config.json")) return -1;
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    if (!f) return loqt_set_error("%s: cannot create config", path);
    config_write_json(c, f);
    fclose(f);
    char *close = extra ? strrchr(buf, '}') : NULL;
    if (close) { /* "...\n}\n" -> "...,\n  EXTRA\n}\n" */
        while (close > buf && (close[-1] == '\n' || close[-1] == ' ')) close--;
        *close = 0;
        char *joined = NULL;
        f = open_memstream(&joined, &len);
        if (!f) return loqt_set_error("%s: cannot create config", path);
        fprintf(f, "%s,\n  %s\n}\n", buf, extra);
        fclose(f);
        free(buf);
        buf = joined;
    }
    if (crc) *crc = crc32c(0, buf, len);
    int rc = file_write_atomic(path, buf, len);
    free(buf);
    return rc;
}

/* The model tensors form a plain LLaMA that Hugging Face loads: the dense parameters (always fp32
 * under their HF names) and, for every linear layer, "<module>.weight" [out, in] in a float type. */
static int plain_llama(const llama_model *m, const st_writer *w) {
    int want = llama_dense_count(m);
    for (int l = 0; l < m->cfg.num_hidden_layers; l++)
        for (int j = 0; j < LIN_PER_BLOCK; j++, want++) {
            const linear_layer *L = &m->blocks[l].lin[j];
            char name[160];
            st_dtype dt;
            int nd;
            int64_t shape[8];
            snprintf(name, sizeof name, "%s.weight", L->name);
            if (st_writer_find(w, name, &dt, &nd, shape) || nd != 2 || shape[0] != L->out || shape[1] != L->in ||
                (dt != ST_F32 && dt != ST_F16 && dt != ST_BF16))
                return 0;
        }
    return st_writer_count(w) == want;
}

/* The model file of a checkpoint: model.safetensors when it is a plain LLaMA, else named for the
 * method ("loqt_model.safetensors"), so that no loader mistakes a method's own tensors (NF4
 * codes, factors) for a LLaMA's. */
static void model_file_name(const llama_model *m, int plain, char *out, size_t cap) {
    if (plain) snprintf(out, cap, "model.safetensors");
    else snprintf(out, cap, "%s_model.safetensors", m->method->name);
}

static void meta_strings(const trainer_meta *tm, char v[6][64]) {
    snprintf(v[0], 64, "%ld", tm->step);
    snprintf(v[1], 64, "%" PRIu64, tm->tokens_seen);
    snprintf(v[2], 64, "%" PRIu64, tm->data_position);
    snprintf(v[3], 64, "%" PRIu64, tm->seed);
    if (isfinite(tm->loss)) snprintf(v[4], 64, "%.17g", tm->loss);
    else snprintf(v[4], 64, "null"); /* a skipped step: JSON has no NaN */
    snprintf(v[5], 64, "%s", tm->method);
}
static const char *meta_keys[6] = {"step", "tokens_seen", "data_position", "seed", "loss", "method"};

/* Writes the checkpoint into tmp and renames it to dir (see checkpoint_save). */
static int save_via(const llama_model *m, const trainer_meta *tm, const char *dir, const char *tmp) {
    char path[4096];
    if (file_mkdir_p(tmp)) return -1;
    st_writer *wm = st_writer_new(), *ws = st_writer_new();
    st_writer_meta(wm, "format", "pt");
    llama_save_tensors(m, wm, ws);
    /* config.json says what the directory holds; a HF loader ignores the key */
    const int plain = plain_llama(m, wm);
    char model_file[128], note[512];
    model_file_name(m, plain, model_file, sizeof model_file);
    snprintf(note, sizeof note,
             "\"loqt_checkpoint\": {\"method\": \"%s\", \"weights\": \"%s\", \"plain_llama\": %s, \"note\": \"%s\"}",
             m->method->name, model_file, plain ? "true" : "false",
             plain ? "a LLaMA checkpoint (HF names) with loqt's trainer state beside it"
                   : "the weights file holds the method's own tensors, not a LLaMA; 'loqt export' writes a plain one");
    uint32_t config_crc = 0;
    int rc = write_config(&m->cfg, tmp, note, &config_crc);

    char vals[6][64];
    meta_strings(tm, vals);
    for (int i = 0; i < 6; i++) st_writer_meta(ws, meta_keys[i], vals[i]);
    st_writer_meta(ws, "optimizer", tm->optimizer);
    /* config.json is plain text: its checksum travels in the trainer state, checked on load */
    char crc_hex[16];
    snprintf(crc_hex, sizeof crc_hex, "%08x", config_crc);
    st_writer_meta(ws, "config_crc32c", crc_hex);
    if (tm->run_options[0]) st_writer_meta(ws, "run_options", tm->run_options);
    char zr[16];
    snprintf(zr, sizeof zr, "%d", tm->zero_ranks);
    if (tm->zero_ranks) st_writer_meta(ws, "zero_ranks", zr);
    /* the model's shape of state: frozen dense parameters have no optimizer state to load */
    if (m->mopts.freeze_dense) st_writer_meta(ws, "freeze_dense", "1");
    char *mo_json = NULL;
    size_t mo_len = 0;
    FILE *mf = open_memstream(&mo_json, &mo_len);
    method_config_write_json(m->method, &m->mopts, mf);
    fclose(mf);
    st_writer_meta(ws, "method_opts", mo_json);
    /* a checkpoint of NaN weights would only be resumed into more NaNs */
    if (!rc && st_writer_check_finite(wm)) rc = loqt_set_error("not writing checkpoint %s: %s", dir, loqt_last_error());
    if (!rc) rc = join(path, sizeof path, tmp, model_file);
    if (!rc) rc = st_writer_write(wm, path);
    if (!rc) rc = join(path, sizeof path, tmp, "trainer_state.safetensors");
    if (!rc) rc = st_writer_write(ws, path);
    st_writer_free(wm);
    st_writer_free(ws);
    free(mo_json);
    if (rc) return -1;

    char *js = NULL;
    size_t jlen = 0;
    FILE *f = open_memstream(&js, &jlen);
    fprintf(f, "{\n");
    for (int i = 0; i < 6; i++) {
        fprintf(f, "  \"%s\": ", meta_keys[i]);
        if (i == 5) json_write_string(f, vals[i]);
        else fprintf(f, "%s", vals[i]);
        fprintf(f, ",\n");
    }
    fprintf(f, "  \"optimizer\": ");
    json_write_string(f, tm->optimizer);
    fprintf(f, ",\n  \"method_opts\": ");
    method_config_write_json(m->method, &m->mopts, f);
    if (tm->run_options[0]) fprintf(f, ",\n  \"run_options\": %s", tm->run_options);
    if (tm->zero_ranks) fprintf(f, ",\n  \"zero_ranks\": %d", tm->zero_ranks);
    if (m->mopts.freeze_dense) fprintf(f, ",\n  \"freeze_dense\": 1");
    fprintf(f, "\n}\n");
    fclose(f);
    rc = join(path, sizeof path, tmp, "trainer_state.json");
    if (!rc) rc = file_write_atomic(path, js, jlen);
    free(js);
    if (rc) return -1;
    if (file_fsync_dir(tmp)) return -1;

    /* replace an existing checkpoint of the same name only after the new one is complete */
    char old[4096];
    snprintf(old, sizeof old, "%s.old", dir);
    file_remove_tree(old);
    struct stat st;
    if (stat(dir, &st) == 0 && rename(dir, old) != 0)
        return loqt_set_error("%s: cannot move the previous checkpoint aside: %s", dir,
                              strerror(errno));
    if (rename(tmp, dir) != 0) {
        int e = errno;
        rename(old, dir); /* the previous checkpoint back under its name */
        return loqt_set_error("%s: cannot rename %s into place: %s", dir, tmp, strerror(e));
    }
    file_remove_tree(old);
    return file_fsync_parent(dir);
}

static int tmp_name(const char *dir, char *tmp, size_t cap) {
    if (strlen(dir) > 4000) return loqt_set_error("checkpoint path too long: %s", dir);
    snprintf(tmp, cap, "%s.tmp", dir);
    return 0;
}

int checkpoint_prepare(const char *dir) {
    char tmp[4096];
    if (tmp_name(dir, tmp, sizeof tmp)) return -1;
    file_remove_tree(tmp);
    return file_mkdir_p(tmp);
}

void checkpoint_abandon(const char *dir) {
    char tmp[4096];
    if (!tmp_name(dir, tmp, sizeof tmp)) file_remove_tree(tmp);
}

int checkpoint_commit(const llama_model *m, const trainer_meta *tm, const char *dir) {
    char tmp[4096];
    if (tmp_name(dir, tmp, sizeof tmp)) return -1;
    int rc = save_via(m, tm, dir, tmp);
    /* a failed save (a full disk, say) leaves nothing half-written behind */
    if (rc) file_remove_tree(tmp);
    return rc;
}

int checkpoint_save(const llama_model *m, const trainer_meta *tm, const char *dir) {
    return checkpoint_prepare(dir) ? -1 : checkpoint_commit(m, tm, dir);
}

static void shard_name(int rank, char *buf, size_t cap) {
    if (rank == 0) snprintf(buf, cap, "trainer_state.safetensors");
    else snprintf(buf, cap, "trainer_state.rank-%05d.safetensors", rank);
}

int checkpoint_save_shard(const llama_model *m, const char *dir, int rank, int ranks) {
    char tmp[4096], name[64], path[4200];
    if (tmp_name(dir, tmp, sizeof tmp)) return -1;
    shard_name(rank, name, sizeof name);
    if (join(path, sizeof path, tmp, name)) return -1;
    st_writer *wm = st_writer_new(), *ws = st_writer_new();
    char v[16];
    snprintf(v, sizeof v, "%d", rank);
    st_writer_meta(ws, "zero_rank", v);
    snprintf(v, sizeof v, "%d", ranks);
    st_writer_meta(ws, "zero_ranks", v);
    llama_save_tensors(m, wm, ws); /* the model tensors are rank 0's to write */
    int rc = st_writer_write(ws, path);
    st_writer_free(wm);
    st_writer_free(ws);
    return rc;
}

int checkpoint_read_config(const char *dir, llama_config *c) {
    char path[4096];
    if (join(path, sizeof path, dir, "config.json")) return -1;
    size_t len = 0;
    char *text = file_read_all(path, 1 << 20, &len);
    if (!text) return -1;
    int rc = config_parse(c, text, len, path);
    mem_free(text);
    return rc;
}

static int parse_u64(const char *s, uint64_t *out) {
    if (!s || !*s) return -1;
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (*end || errno || *s == '-') return -1;
    *out = v;
    return 0;
}

/* config.json against the checksum the trainer state recorded for it */
static int check_config_crc(const char *dir, const char *want) {
    char path[4096];
    if (join(path, sizeof path, dir, "config.json")) return -1;
    size_t len = 0;
    char *text = file_read_all(path, 1 << 20, &len);
    if (!text) return -1;
    char have[16];
    snprintf(have, sizeof have, "%08x", crc32c(0, text, len));
    mem_free(text);
    if (strcmp(have, want))
        return loqt_set_error("%s: checksum mismatch (crc32c %s, the trainer state records %s): config.json was "
                              "edited or is corrupt, and the weights belong to the config they were saved with",
                              path, have, want);
    return 0;
}

int checkpoint_read_meta(const char *dir, trainer_meta *tm) {
    char path[4096];
    if (join(path, sizeof path, dir, "trainer_state.safetensors")) return -1;
    st_file f;
    if (st_open(&f, path)) return -1;
    memset(tm, 0, sizeof *tm);
    uint64_t step = 0;
    int rc = 0;
    const char *v;
    if (parse_u64(st_meta(&f, "step"), &step) ||
        parse_u64(st_meta(&f, "tokens_seen"), &tm->tokens_seen) ||
        parse_u64(st_meta(&f, "data_position"), &tm->data_position) ||
        parse_u64(st_meta(&f, "seed"), &tm->seed) || !(v = st_meta(&f, "method")))
        rc = loqt_set_error("%s: missing or malformed trainer metadata", path);
    else {
        tm->step = (long)step;
        snprintf(tm->method, sizeof tm->method, "%s", v);
        v = st_meta(&f, "optimizer");
        snprintf(tm->optimizer, sizeof tm->optimizer, "%s", v ? v : "adamw");
        v = st_meta(&f, "config_crc32c");
        if (v && !rc) rc = check_config_crc(dir, v);
        v = st_meta(&f, "run_options");
        snprintf(tm->run_options, sizeof tm->run_options, "%s", v ? v : "");
        v = st_meta(&f, "loss");
        tm->loss = v ? strtod(v, NULL) : 0;
        v = st_meta(&f, "zero_ranks");
        tm->zero_ranks = v ? atoi(v) : 0;
        const linear_method *lm = method_find(tm->method);
        method_opts_defaults(&tm->mopts, lm);
        tm->mopts.seed = tm->seed;
        int known;
        tm->mopts.optimizer = optim_kind_parse(tm->optimizer, &known);
        v = st_meta(&f, "freeze_dense");
        tm->mopts.freeze_dense = v && !strcmp(v, "1");
        v = st_meta(&f, "method_opts");
        if (!lm)
            rc = loqt_set_error("%s: checkpoint uses method '%s', which this build does not know (%s)",
                                path, tm->method, method_names());
        else if (v && method_config_parse_json(lm, &tm->mopts, v))
            rc = loqt_set_error("%s: %s", path, loqt_last_error());
    }
    st_close(&f);
    return rc;
}

/* rank's state file of a --zero 1 checkpoint must say it is that rank's of that many */
static int check_shard(const st_file *f, const char *path, int rank, int ranks) {
    const char *r = st_meta(f, "zero_rank"), *n = st_meta(f, "zero_ranks");
    if (rank > 0 && (!r || !n || atoi(r) != rank || atoi(n) != ranks))
        return loqt_set_error("%s is not rank %d's optimizer state of a %d-rank --zero 1 checkpoint", path, rank, ranks);
    return 0;
}

int checkpoint_load(llama_model *m, const char *dir, int weights_only) {
    return weights_only ? checkpoint_load_shard(m, dir, -1, 0) : checkpoint_load_shard(m, dir, 0, 0);
}

int checkpoint_load_shard(llama_model *m, const char *dir, int rank, int ranks) {
    const int weights_only = rank < 0;
    char path[4096], name[64];
    st_file fm, fs;
    char model_file[128];
    model_file_name(m, 1, model_file, sizeof model_file);
    if (join(path, sizeof path, dir, model_file)) return -1;
    struct stat sb;
    if (stat(path, &sb) != 0) { /* not a plain LLaMA: the method's own file */
        model_file_name(m, 0, model_file, sizeof model_file);
        if (join(path, sizeof path, dir, model_file)) return -1;
        if (stat(path, &sb) != 0)
            return loqt_set_error("%s: no model.safetensors or %s (not a checkpoint of method %s?)", dir, model_file,
                                  m->method->name);
    }
    if (st_open(&fm, path)) return -1;
    if (st_check_finite(&fm)) {
        loqt_set_error("%s: %s", path, loqt_last_error());
        st_close(&fm);
        return -1;
    }
    int have_state = 0;
    if (!weights_only) {
        shard_name(rank, name, sizeof name);
        if (join(path, sizeof path, dir, name) || st_open(&fs, path)) {
            st_close(&fm);
            return -1;
        }
        have_state = 1;
        if (check_shard(&fs, path, rank, ranks)) {
            st_close(&fm);
            st_close(&fs);
            return -1;
        }
    }
    int rc = llama_load_tensors(m, &fm, have_state ? &fs : NULL);
    /* a tensor nothing asked for: the config describes another model (fewer layers, say), whose
     * weights would otherwise be dropped without a word */
    const char *extra = rc ? NULL : st_first_unused(&fm);
    if (extra)
        rc = loqt_set_error("%s holds tensor '%s', which a %d-layer model of method %s does not "
                            "have: config.json and the weights do not belong together", model_file, extra,
                            m->cfg.num_hidden_layers, m->method->name);
    if (rc) loqt_set_error("%s: %s", dir, loqt_last_error());
    st_close(&fm);
    if (have_state) st_close(&fs);
    return rc;
}

int checkpoint_find_latest(const char *root, char *out, size_t cap) {
    DIR *d = opendir(root);
    if (!d) return loqt_set_error("%s: no checkpoints (%s)", root, strerror(errno));
    long best = -1;
    struct dirent *e;
    while ((e = readdir(d))) {
        long s;
        char rest[8];
        /* complete checkpoints only: "step-N" exactly, never "step-N.tmp" */
        if (sscanf(e->d_name, "step-%ld%7s", &s, rest) == 1 && s > best) {
            char cfg[4096];
            struct stat st;
            snprintf(cfg, sizeof cfg, "%s/%s/trainer_state.json", root, e->d_name);
            if (stat(cfg, &st) == 0) best = s;
        }
    }
    closedir(d);
    if (best < 0) return loqt_set_error("%s: no complete checkpoint found", root);
    snprintf(out, cap, "%s/step-%08ld", root, best);
    return 0;
}

int llama_export_dense(const llama_model *m, const char *dir) {
    return llama_export_dense_with(m, dir, m->method->export_dense);
}

int llama_export_dense_with(const llama_model *m, const char *dir, void (*weight)(const linear_layer *L, float *W)) {
    if (file_mkdir_p(dir) || write_config(&m->cfg, dir, NULL, NULL)) return -1;
    st_writer *w = st_writer_new();
    st_writer_meta(w, "format", "pt");
    for (int i = 0; i < llama_dense_count(m); i++) {
        const dense_param *p = llama_dense_at(m, i);
        st_writer_add(w, p->name, ST_F32, p->ndim, p->shape, p->w);
    }
    int nl = m->cfg.num_hidden_layers * LIN_PER_BLOCK;
    float **dense = calloc((size_t)nl, sizeof *dense);
    char(*names)[128] = calloc((size_t)nl, sizeof *names);
    for (int l = 0, k = 0; l < m->cfg.num_hidden_layers; l++)
        for (int j = 0; j < LIN_PER_BLOCK; j++, k++) {
            const linear_layer *L = &m->blocks[l].lin[j];
            dense[k] = mem_alloc(MEM_SCRATCH, (size_t)L->out * L->in * sizeof(float));
            weight(L, dense[k]);
            snprintf(names[k], sizeof names[k], "%s.weight", L->name);
            int64_t shape[2] = {L->out, L->in};
            st_writer_add(w, names[k], ST_F32, 2, shape, dense[k]);
        }
    char path[4096];
    int rc = join(path, sizeof path, dir, "model.safetensors");
    if (!rc) rc = st_writer_write(w, path);
    st_writer_free(w);
    for (int k = 0; k < nl; k++) mem_free(dense[k]);
    free(dense);
    free(names);
    return rc;
}

/* A loqt checkpoint of another method stores that method's tensors (codes, factors) under
 * model.safetensors, not dense weights: it has to be exported first. */
static int check_dense_checkpoint(const char *dir) {
    char path[4096];
    if (join(path, sizeof path, dir, "trainer_state.safetensors")) return -1;
    if (access(path, F_OK) != 0) return 0;
    trainer_meta tm;
    if (checkpoint_read_meta(dir, &tm)) return -1;
    if (strcmp(tm.method, "full"))
        return loqt_set_error("%s is a checkpoint of --method %s, whose model.safetensors holds that method's own tensors: "
                              "write its dense weights with 'loqt export --checkpoint %s --out DIR' and start from DIR",
                              dir, tm.method, dir);
    return 0;
}

int llama_load_pretrained(llama_model *m, const llama_config *cfg, const linear_method *method,
                          const method_opts *mo, uint64_t seed, const char *dir) {
    return llama_load_pretrained_calib(m, cfg, method, mo, seed, dir, NULL);
}

int llama_load_pretrained_calib(llama_model *m, const llama_config *cfg, const linear_method *method,
                                const method_opts *mo, uint64_t seed, const char *dir, const llama_calib *cal) {
    memset(m, 0, sizeof *m);
    if (check_dense_checkpoint(dir)) return -1;
    st_file w;
    if (st_open_dir(&w, dir)) return -1;
    int rc = st_check_finite(&w);
    if (rc) loqt_set_error("%s: %s", dir, loqt_last_error());
    if (!rc) rc = llama_create_calibrated(m, cfg, method, mo, seed, &w, cal); /* its messages name the file */
    /* older Hugging Face checkpoints also saved RoPE's inverse frequencies, a buffer computed from
     * rope_theta (as loqt computes it), not a weight */
    for (int i = 0; !rc && i < w.n_tensors; i++) {
        const char *n = w.tensors[i].name, *suffix = ".rotary_emb.inv_freq";
        if (strlen(n) > strlen(suffix) && !strcmp(n + strlen(n) - strlen(suffix), suffix)) (void)st_find(&w, n);
    }
    const char *extra = rc ? NULL : st_first_unused(&w);
    if (extra) {
        rc = loqt_set_error("%s: the weights hold tensor '%s', which a %d-layer LLaMA%s does not have: config.json "
                            "and the weights do not belong together", dir, extra, cfg->num_hidden_layers,
                            cfg->tie_word_embeddings ? " with tied embeddings" : "");
        llama_free(m);
    }
    st_close(&w);
    return rc;
}
