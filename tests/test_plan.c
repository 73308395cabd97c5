/* The memory planner: for small models of both methods, the planned bytes per category equal what
 * the real code accounts (mem_peak) exactly, and so do the accounted peak and the bytes held after
 * the steps; plus the planner's properties (savings go the right way, refusals name the fixes,
 * memory sizes parse).
 *
 * Each measured configuration runs in a child process: peaks cannot be reset, so every run needs
 * fresh counters (the parent never allocates accounted memory). */
#include "test.h"

#include "core/error.h"
#include "core/rng.h"
#include "data/loader.h"
#include "data/shard.h"
#include "methods/lora.h"
#include "model/checkpoint.h"
#include "model/plan.h"
#include "model/train.h"

#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>
#ifdef _OPENMP
#include <omp.h>
#endif

static llama_config tiny(void) {
    /* hidden 64, intermediate 176 (so gate/up are "left" and down is "right" in LoQT), 2 layers */
    llama_config c = {"tiny", 64, 176, 2, 4, 4, 128, 64, 1e-6, 10000.0, 0};
    return c;
}

/* Sets a method option by name when the run's method has it (a table lookup, as the CLI does). */
static void set_opt(plan_input *in, const char *name, double v) {
    const method_option *o = method_option_find(method_find(in->method), name);
    if (o) method_option_set(&in->mo, o, v);
}

typedef struct {
    const char *what;
    plan_input in;
    int with_data;
} run_case;

/* A pretrained checkpoint for cfg in dir/model.safetensors, its buffers from malloc (not
 * accounted: the child's counters see only the run itself). */
static int write_pretrained(const llama_config *c, const char *dir) {
    st_writer *w = st_writer_new();
    float *bufs[64];
    int nb = 0;
    char names[64][96];
    const int d = c->hidden_size, V = c->vocab_size;
    int64_t shapes[64][2];
    for (int l = -1; l <= c->num_hidden_layers; l++) {
        const int first = l < 0, last = l == c->num_hidden_layers;
        for (int j = 0; j < (first ? 1 : last ? (c->tie_word_embeddings ? 1 : 2) : LIN_PER_BLOCK + 2); j++) {
            int out = d, in = d, ndim = 2;
            if (first || (last && j == 1)) {
                out = V;
                snprintf(names[nb], sizeof names[nb], first ? "model.embed_tokens.weight" : "lm_head.weight");
            } else if (last || j >= LIN_PER_BLOCK) {
                ndim = 1;
                snprintf(names[nb], sizeof names[nb], last ? "model.norm.weight"
                         : j == LIN_PER_BLOCK ? "model.layers.%d.input_layernorm.weight"
                                              : "model.layers.%d.post_attention_layernorm.weight", l);
            } else {
                static const char *lin[] = {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
                                            "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"};
                llama_linear_shape(c, j, &out, &in);
                snprintf(names[nb], sizeof names[nb], "model.layers.%d.%s.weight", l, lin[j]);
            }
            shapes[nb][0] = out;
            shapes[nb][1] = in;
            const size_t n = (size_t)out * (ndim == 2 ? (size_t)in : 1);
            bufs[nb] = malloc(n * sizeof(float));
            for (size_t i = 0; i < n; i++) bufs[nb][i] = 0.02f * rng_normal(9, (uint64_t)nb, i);
            st_writer_add(w, names[nb], ST_F32, ndim, shapes[nb], bufs[nb]);
            nb++;
        }
    }
    char path[600];
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    int rc = st_writer_write(w, path);
    st_writer_free(w);
    for (int i = 0; i < nb; i++) free(bufs[i]);
    return rc;
}

/* The real run, as `loqt train` / `loqt bench` do it; returns the number of mismatches. */
static int measure(const run_case *rc) {
    const plan_input *in = &rc->in;
    plan p;
    if (plan_make(&p, in)) {
        printf("    plan: %s\n", loqt_last_error());
        return 1;
    }
    char dir[512] = "";
    data_loader tr, va;
    if (rc->with_data || in->save_original_model || in->init_from) {
        const char *t = getenv("TMPDIR");
        snprintf(dir, sizeof dir, "%s/loqt_test_plan_XXXXXX", t && *t ? t : "/tmp");
        if (!mkdtemp(dir)) return 1;
    }
    if (rc->with_data) {
        /* train: shards of 3000 and 5000 tokens; val: one of 1000 */
        const int sizes[3] = {3000, 5000, 1000};
        const char *names[3] = {"train_000.bin", "train_001.bin", "val_000.bin"};
        for (int i = 0; i < 3; i++) {
            uint16_t *t = calloc((size_t)sizes[i], 2);
            for (int k = 0; k < sizes[i]; k++) t[k] = (uint16_t)(rng_u64(3, (uint64_t)i, (uint64_t)k) % 100);
            char path[600];
            snprintf(path, sizeof path, "%s/%s", dir, names[i]);
            if (shard_write(path, t, (uint64_t)sizes[i], 100)) return 1;
            free(t);
        }
        if (loader_open(&tr, dir, "train") || loader_open(&va, dir, "val")) {
            printf("    loader: %s\n", loqt_last_error());
            return 1;
        }
    }
    llama_model m;
    st_file weights;
    if (in->init_from && (write_pretrained(&in->cfg, dir) || st_open_dir(&weights, dir))) {
        printf("    pretrained weights: %s\n", loqt_last_error());
        return 1;
    }
    /* a calibrating init (QuAILoRA) gets its sequences as the trainer gives them: a MEM_DATA
     * buffer held while the model is created */
    const int n_cal = in->init_from ? llama_calibrates(method_find(in->method), &in->mo) : 0;
    int32_t *cal_tok = n_cal ? mem_alloc(MEM_DATA, sizeof(int32_t) * (size_t)n_cal * in->seq) : NULL;
    for (size_t i = 0; i < (size_t)n_cal * in->seq; i++) cal_tok[i] = (int32_t)(rng_u64(4, 0, i) % (uint64_t)in->cfg.vocab_size);
    const llama_calib cal = {cal_tok, n_cal, in->seq, in->batch};
    if (llama_create_calibrated(&m, &in->cfg, method_find(in->method), &in->mo, 11, in->init_from ? &weights : NULL,
                                n_cal ? &cal : NULL)) {
        printf("    create: %s\n", loqt_last_error());
        return 1;
    }
    mem_free(cal_tok);
    if (in->init_from) st_close(&weights);
    m.checkpoint_activations = in->activation_checkpointing;
    m.per_layer_updates = in->per_layer_updates;
    m.dtype = in->dtype;
    llama_set_batch(&m, in->batch, in->seq);
    const size_t N = (size_t)in->batch * in->seq;
    int32_t *tin = mem_alloc(MEM_DATA, sizeof(int32_t) * N * in->accum);
    int32_t *ttg = mem_alloc(MEM_DATA, sizeof(int32_t) * N * in->accum);
    const int32_t *ins[8], *tgs[8];
    for (int i = 0; i < in->accum; i++) {
        ins[i] = tin + (size_t)i * N;
        tgs[i] = ttg + (size_t)i * N;
    }
    train_hparams h;
    train_hparams_defaults(&h);
    h.optimizer = in->mo.optimizer;
    for (long s = 0; s < in->steps; s++) {
        for (size_t i = 0; i < N * in->accum; i++) {
            tin[i] = (int32_t)(rng_u64(1, (uint64_t)s, i) % (uint64_t)in->cfg.vocab_size);
            ttg[i] = (int32_t)(rng_u64(2, (uint64_t)s, i) % (uint64_t)in->cfg.vocab_size);
        }
        step_result sr_;
        if (train_step(&m, s, ins, tgs, in->accum, &h, &sr_)) {
            printf("    train_step: %s\n", loqt_last_error());
            return 1;
        }
    }
    int bad = 0;
    if (mem_current_total() != p.steady) {
        printf("    %s: held after the steps %zu, planned %zu\n", rc->what, mem_current_total(), p.steady);
        bad++;
    }
    if (in->save_original_model) {
        char out[600];
        snprintf(out, sizeof out, "%s/export", dir);
        if (llama_export_dense(&m, out)) {
            printf("    export: %s\n", loqt_last_error());
            bad++;
        }
    }
    for (int c = 0; c < MEM_NCAT; c++)
        if (mem_peak((mem_cat)c) != p.peak[c]) {
            printf("    %s: %s peak %zu bytes, planned %zu\n", rc->what, mem_cat_name((mem_cat)c),
                   mem_peak((mem_cat)c), p.peak[c]);
            bad++;
        }
    if (mem_peak_total() != p.accounted_peak) {
        printf("    %s: accounted peak %zu, planned %zu\n", rc->what, mem_peak_total(), p.accounted_peak);
        bad++;
    }
    mem_free(tin);
    mem_free(ttg);
    llama_free(&m);
    if (rc->with_data) {
        loader_close(&tr);
        loader_close(&va);
    }
    if (dir[0]) {
        char cmd[600];
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
        if (system(cmd) != 0) bad++;
    }
    return bad;
}

/* Runs measure() in a child; the CHECK is on its exit status (mismatches are printed there). */
static void check_exact(const run_case *rc) {
    fflush(stdout);
    pid_t pid = fork();
    if (pid == 0) {
        int bad = measure(rc);
        fflush(stdout);
        _exit(bad > 100 ? 100 : bad);
    }
    int status = 0;
    CHECK(pid > 0 && waitpid(pid, &status, 0) == pid, "fork/wait failed");
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0,
          "%s: the plan differs from the accounted bytes (tolerance: 0 bytes; details above)", rc->what);
}

static int threads(void) {
#ifdef _OPENMP
    return omp_get_max_threads();
#else
    return 1;
#endif
}

static run_case base(const char *what, const char *method) {
    run_case rc;
    memset(&rc, 0, sizeof rc);
    rc.what = what;
    llama_config c = tiny();
    plan_input_defaults(&rc.in, &c, method);
    rc.in.batch = 2;
    rc.in.seq = 16;
    rc.in.steps = 2;
    rc.in.threads = threads();
    set_opt(&rc.in, "rank", 8);
    return rc;
}

static void test_full_adamw_exact(void) {
    run_case rc = base("full adamw", "full");
    check_exact(&rc);
}

static void test_full_adam8bit_accumulation_exact(void) {
    run_case rc = base("full adam8bit accum 2", "full");
    rc.in.mo.optimizer = OPTIM_ADAM8BIT;
    rc.in.accum = 2;
    check_exact(&rc);
}

static void test_loqt_nf4_refresh_with_optimizer_exact(void) {
    /* gap 1: step 1 is a refresh with the optimizer state already there */
    run_case rc = base("loqt nf4 gap 1", "loqt");
    set_opt(&rc.in, "update-proj-gap", 1);
    check_exact(&rc);
}

static void test_loqt_variants_exact(void) {
    /* double quantization, 16-bit P, fp32 B, error compensation, 8-bit Adam, accumulation, and a
     * refresh at step 2 */
    run_case rc = base("loqt dq/bf16 P/fp32 B/compensation", "loqt");
    set_opt(&rc.in, "use-double-quant", 1);
    set_opt(&rc.in, "quantize-projection-matrix", 1);
    set_opt(&rc.in, "lowrank-dtype", 1);
    set_opt(&rc.in, "compensate-quant-error-iterations", 2);
    set_opt(&rc.in, "update-proj-gap", 2);
    rc.in.mo.optimizer = OPTIM_ADAM8BIT;
    rc.in.accum = 2;
    rc.in.steps = 3;
    check_exact(&rc);
    /* LoQT-nq, no later refresh */
    run_case nq = base("loqt-nq rank 50", "loqt");
    set_opt(&nq.in, "quantize-w", 1);
    set_opt(&nq.in, "rank", 50);
    nq.in.seq = 40; /* 80 tokens: a gradient of full rank 64 for the 60-vector range finder */
    set_opt(&nq.in, "update-proj-gap", 5);
    check_exact(&nq);
}

static void test_activation_checkpointing_exact(void) {
    run_case rc = base("full, activation checkpointing", "full");
    rc.in.activation_checkpointing = 1;
    check_exact(&rc);
    run_case lq = base("loqt, activation checkpointing", "loqt");
    lq.in.activation_checkpointing = 1;
    set_opt(&lq.in, "update-proj-gap", 1);
    check_exact(&lq);
}

static void test_per_layer_updates_exact(void) {
    run_case rc = base("full, per-layer updates", "full");
    rc.in.per_layer_updates = 1;
    check_exact(&rc);
    run_case lq = base("loqt, per-layer updates", "loqt");
    lq.in.per_layer_updates = 1;
    set_opt(&lq.in, "update-proj-gap", 1);
    lq.in.steps = 3;
    check_exact(&lq);
    run_case la = base("loqt, per-layer updates, accumulation, checkpointing", "loqt");
    la.in.per_layer_updates = 1;
    la.in.activation_checkpointing = 1;
    la.in.accum = 2;
    set_opt(&la.in, "update-proj-gap", 2);
    la.in.steps = 3;
    la.in.mo.optimizer = OPTIM_ADAM8BIT;
    check_exact(&la);
}

/* --dtype bf16: the GEMM's rounding scratch (one slot per thread) is planned to the byte, also
 * with per-layer updates (whose refreshes run in fp32 inside backward) */
static void test_bf16_exact(void) {
    run_case rc = base("full, bf16", "full");
    rc.in.dtype = GEMM_BF16;
    check_exact(&rc);
    run_case lq = base("loqt, bf16, per-layer updates, checkpointing", "loqt");
    lq.in.dtype = GEMM_BF16;
    lq.in.per_layer_updates = 1;
    lq.in.activation_checkpointing = 1;
    set_opt(&lq.in, "update-proj-gap", 1);
    lq.in.steps = 3;
    check_exact(&lq);
    run_case ga = base("galore, bf16, accumulation", "galore");
    ga.in.dtype = GEMM_BF16;
    ga.in.accum = 2;
    check_exact(&ga);
}

static void test_data_and_export_exact(void) {
    /* the loaders' splits (plus one shard while reading) and --save-original-model */
    run_case rc = base("loqt with data and export", "loqt");
    rc.with_data = 1;
    rc.in.train = (plan_split){8000, 5000};
    rc.in.val = (plan_split){1000, 1000};
    rc.in.save_original_model = 1;
    check_exact(&rc);
    run_case fu = base("full with export", "full");
    fu.in.save_original_model = 1;
    check_exact(&fu);
}

/* Every registered method, byte-exact in the settings that change what is allocated when: plain,
 * 8-bit Adam with accumulation and three steps, per-layer updates (gradients released), per-layer
 * updates with accumulation and checkpointing, and data + the dense export.  Refreshes at every
 * step where the method has a gap, so a refresh with the optimizer state in place is covered. */
static void test_every_method_exact(void) {
    CHECK(method_count() >= 2, "the registry lists full and loqt at least (%d)", method_count());
    for (int k = 0; k < method_count(); k++) {
        const char *name = method_at(k)->name;
        char what[6][96];
        run_case rc[6];
        for (int v = 0; v < 6; v++) {
            rc[v] = base(what[v], name);
            set_opt(&rc[v].in, "update-proj-gap", 1);
        }
        snprintf(what[0], sizeof what[0], "%s plain", name);
        snprintf(what[1], sizeof what[1], "%s adam8bit accum 2, 3 steps", name);
        rc[1].in.mo.optimizer = OPTIM_ADAM8BIT;
        rc[1].in.accum = 2;
        rc[1].in.steps = 3;
        snprintf(what[2], sizeof what[2], "%s per-layer updates", name);
        rc[2].in.per_layer_updates = 1;
        rc[2].in.steps = 3;
        snprintf(what[3], sizeof what[3], "%s per-layer updates, accum 2, checkpointing", name);
        rc[3].in.per_layer_updates = 1;
        rc[3].in.accum = 2;
        rc[3].in.activation_checkpointing = 1;
        snprintf(what[4], sizeof what[4], "%s checkpointing, gap 2", name);
        rc[4].in.activation_checkpointing = 1;
        rc[4].in.steps = 3;
        set_opt(&rc[4].in, "update-proj-gap", 2);
        snprintf(what[5], sizeof what[5], "%s with data and export", name);
        rc[5].with_data = 1;
        rc[5].in.train = (plan_split){8000, 5000};
        rc[5].in.val = (plan_split){1000, 1000};
        rc[5].in.save_original_model = 1;
        for (int v = 0; v < 6; v++) {
            rc[v].what = what[v];
            check_exact(&rc[v]);
        }
    }
}

/* Grouped-query attention (k, v of 2 of the 4 heads' width) and a tied embedding (no lm_head;
 * the output layer's gradient is the embedding's, allocated in the forward), for every method:
 * plain, per-layer updates (the tied gradient released only after the embedding's update), and
 * per-layer updates with accumulation and checkpointing, started from pretrained weights (each
 * layer's W0 in a scratch buffer during its init, the method's own random draw not made);
 * and an untied model from pretrained weights. */
static void test_gqa_tied_exact(void) {
    for (int k = 0; k < method_count(); k++) {
        const char *name = method_at(k)->name;
        char what[3][96];
        run_case rc[3];
        for (int v = 0; v < 3; v++) {
            rc[v] = base(what[v], name);
            rc[v].in.cfg.num_key_value_heads = 2;
            rc[v].in.cfg.tie_word_embeddings = 1;
            set_opt(&rc[v].in, "update-proj-gap", 1);
        }
        snprintf(what[0], sizeof what[0], "%s GQA + tied", name);
        snprintf(what[1], sizeof what[1], "%s GQA + tied, per-layer updates", name);
        rc[1].in.per_layer_updates = 1;
        rc[1].in.steps = 3;
        snprintf(what[2], sizeof what[2], "%s GQA + tied from pretrained weights, per-layer updates, accum 2, checkpointing", name);
        rc[2].in.per_layer_updates = 1;
        rc[2].in.accum = 2;
        rc[2].in.activation_checkpointing = 1;
        rc[2].in.init_from = 1;
        for (int v = 0; v < 3; v++) {
            rc[v].what = what[v];
            check_exact(&rc[v]);
        }
        char w_untied[96];
        snprintf(w_untied, sizeof w_untied, "%s from pretrained weights", name);
        run_case un = base(w_untied, name);
        un.in.init_from = 1;
        check_exact(&un);
    }
}

/* --freeze-dense: the plan stays exact for every method (plain, tied with per-layer updates and
 * accumulation, from pretrained weights), and it holds exactly the dense parameters' gradients
 * less than the unfrozen run (their optimizer state: adamw's two fp32 moments each). */
static void test_freeze_dense_exact(void) {
    for (int k = 0; k < method_count(); k++) {
        const char *name = method_at(k)->name;
        char what[3][96];
        run_case rc[3];
        for (int v = 0; v < 3; v++) {
            rc[v] = base(what[v], name);
            rc[v].in.mo.freeze_dense = 1;
            set_opt(&rc[v].in, "update-proj-gap", 1);
            rc[v].what = what[v];
        }
        snprintf(what[0], sizeof what[0], "%s, frozen dense", name);
        snprintf(what[1], sizeof what[1], "%s, frozen dense, GQA + tied, per-layer updates, accum 2", name);
        rc[1].in.cfg.num_key_value_heads = 2;
        rc[1].in.cfg.tie_word_embeddings = 1;
        rc[1].in.per_layer_updates = 1;
        rc[1].in.accum = 2;
        snprintf(what[2], sizeof what[2], "%s, frozen dense, from pretrained weights", name);
        rc[2].in.init_from = 1;
        for (int v = 0; v < 3; v++) check_exact(&rc[v]);
    }
    run_case fr = base("full frozen", "full"), un = base("full", "full");
    fr.in.mo.freeze_dense = 1;
    plan pf, pu;
    CHECK(plan_make(&pf, &fr.in) == 0 && plan_make(&pu, &un.in) == 0, "plans");
    const size_t d = 64, V = 128, dense = 4 * (2 * V * d + (2 * 2 + 1) * d); /* embed, lm_head, 5 norms */
    CHECK(pu.peak[MEM_GRADS] - pf.peak[MEM_GRADS] == dense, "frozen gradients: %zu fewer bytes, expected %zu",
          pu.peak[MEM_GRADS] - pf.peak[MEM_GRADS], dense);
    CHECK(pu.peak[MEM_OPTIM] - pf.peak[MEM_OPTIM] == 2 * dense, "frozen optimizer state: %zu fewer bytes, expected %zu",
          pu.peak[MEM_OPTIM] - pf.peak[MEM_OPTIM], 2 * dense);
}

/* QuAILoRA's calibration from pretrained weights: the tokens, the residual stream, one block's
 * weights and Grams and the inits' scratch, for both inits, with a last micro-batch of fewer
 * sequences (5 in batches of 2), GQA, per-layer updates and an exact and a randomized SVD. */
static void test_quailora_calibration_exact(void) {
    const char *inits[2] = {"quailora", "quailora-closed"};
    for (int k = 0; k < 2; k++)
        for (int v = 0; v < 2; v++) {
            char what[128];
            snprintf(what, sizeof what, "lora --init %s from pretrained weights%s", inits[k],
                     v ? ", NF4, GQA, per-layer updates, exact SVD" : "");
            run_case rc = base(what, "lora");
            rc.in.init_from = 1;
            set_opt(&rc.in, "init", k ? 3 : 2);
            set_opt(&rc.in, "calibration-sequences", 5);
            set_opt(&rc.in, "quailora-iterations", 3);
            set_opt(&rc.in, "base-bits", v ? 0 : 2);
            if (v) {
                rc.in.cfg.num_key_value_heads = 2;
                rc.in.per_layer_updates = 1;
                set_opt(&rc.in, "svd", 1);
            }
            check_exact(&rc);
        }
    /* the calibration is in the plan: more sequences, a larger accounted peak */
    run_case a = base("a", "lora"), b = base("b", "lora");
    a.in.init_from = b.in.init_from = 1;
    set_opt(&a.in, "init", 2);
    set_opt(&b.in, "init", 2);
    set_opt(&b.in, "calibration-sequences", 500);
    plan pa, pb;
    CHECK(plan_make(&pa, &a.in) == 0 && plan_make(&pb, &b.in) == 0, "plans");
    CHECK(pb.peak[MEM_ACTS] > pa.peak[MEM_ACTS] && pb.peak[MEM_DATA] > pa.peak[MEM_DATA],
          "500 calibration sequences plan more activations and data than 64");
}

/* --target-modules q_proj,v_proj (lora and relora): the other five projections of each block hold
 * their base alone (no factors, gradient or optimizer state); exact plain, with per-layer updates,
 * accumulation and dropout, and from pretrained weights with the calibrated init (the Grams of
 * every input are still made); the planned factors are those of q and v alone. */
static void test_target_modules_exact(void) {
    const char *methods[2] = {"lora", "relora"};
    const int qv = 1 << 0 | 1 << 2;
    for (int k = 0; k < 2; k++) {
        char what[3][128];
        run_case rc[3];
        for (int v = 0; v < 3; v++) {
            rc[v] = base(what[v], methods[k]);
            set_opt(&rc[v].in, "target-modules", qv);
            set_opt(&rc[v].in, "relora-steps", 1);
            rc[v].what = what[v];
        }
        snprintf(what[0], sizeof what[0], "%s --target-modules q_proj,v_proj", methods[k]);
        snprintf(what[1], sizeof what[1], "%s --target-modules q_proj,v_proj, per-layer updates, accum 2, dropout", methods[k]);
        rc[1].in.per_layer_updates = 1;
        rc[1].in.accum = 2;
        set_opt(&rc[1].in, "lora-dropout", 0.1);
        snprintf(what[2], sizeof what[2], "%s --target-modules q_proj,v_proj from pretrained weights, quailora, NF4", methods[k]);
        rc[2].in.init_from = 1;
        set_opt(&rc[2].in, "init", LORA_INIT_QUAILORA);
        set_opt(&rc[2].in, "calibration-sequences", 3);
        set_opt(&rc[2].in, "base-bits", LORA_BASE_4);
        for (int v = 0; v < 3; v++) check_exact(&rc[v]);
    }
    run_case all = base("all", "lora"), sub = base("q, v", "lora");
    set_opt(&sub.in, "target-modules", qv);
    plan pa, ps;
    CHECK(plan_make(&pa, &all.in) == 0 && plan_make(&ps, &sub.in) == 0, "plans");
    const size_t d = 64, r = 8, qv_factors = 4 * 2 * 2 * r * (d + d); /* 2 layers x (q, v) x r (in + out) floats */
    CHECK(ps.peak[MEM_FACTORS] == qv_factors && pa.peak[MEM_FACTORS] > 3 * qv_factors,
          "factors: %zu bytes with q, v (expected %zu), %zu with all seven", ps.peak[MEM_FACTORS], qv_factors,
          pa.peak[MEM_FACTORS]);
}

static plan plan_of(const char *model, const char *method, void (*edit)(plan_input *)) {
    llama_config c;
    plan p;
    plan_input in;
    if (config_load(&c, model)) {
        printf("    %s\n", loqt_last_error());
        exit(1);
    }
    plan_input_defaults(&in, &c, method);
    in.threads = 2;
    set_opt(&in, "rank", 128);
    if (edit) edit(&in);
    if (plan_make(&p, &in)) {
        printf("    %s\n", loqt_last_error());
        exit(1);
    }
    return p;
}

static void set_8bit(plan_input *in) { in->mo.optimizer = OPTIM_ADAM8BIT; }
static void set_ckpt(plan_input *in) { in->activation_checkpointing = 1; }
static void set_plu(plan_input *in) { in->per_layer_updates = 1; }
static void set_plu_accum(plan_input *in) {
    in->per_layer_updates = 1;
    in->accum = 4;
}

static void test_savings_go_the_right_way(void) {
    plan full = plan_of("60m", "full", NULL), loqt = plan_of("60m", "loqt", NULL);
    /* at 60m the embedding and lm_head (dense, trained by Adam) hold most of the state */
    CHECK(loqt.peak[MEM_OPTIM] < full.peak[MEM_OPTIM] * 0.75, "LoQT optimizer %zu vs full %zu (< 0.75x)",
          loqt.peak[MEM_OPTIM], full.peak[MEM_OPTIM]);
    CHECK(loqt.total < full.total, "LoQT total %zu < full %zu", loqt.total, full.total);
    CHECK(loqt.peak[MEM_QWEIGHTS] > 0 && full.peak[MEM_QWEIGHTS] == 0, "only LoQT has NF4 codes");
    CHECK(loqt.refresh_with_optim && !full.refresh_with_optim, "a refresh at step 50 of 1000");
    plan a8 = plan_of("60m", "full", set_8bit);
    CHECK(a8.peak[MEM_OPTIM] * 3 < full.peak[MEM_OPTIM], "8-bit Adam: %zu vs %zu (factor >= 3)",
          a8.peak[MEM_OPTIM], full.peak[MEM_OPTIM]);
    plan ck = plan_of("60m", "full", set_ckpt);
    CHECK(ck.peak[MEM_ACTS] * 4 < full.peak[MEM_ACTS], "checkpointing: activations %zu vs %zu (factor >= 4)",
          ck.peak[MEM_ACTS], full.peak[MEM_ACTS]);
    CHECK(ck.peak[MEM_GRADS] == full.peak[MEM_GRADS], "checkpointing leaves gradients alone");
    /* per-layer updates: the norms' gradients plus the largest transient one, the lm_head's or
     * the embedding's (one at a time), which at 60m outweighs one block's linear gradients */
    plan pl = plan_of("60m", "full", set_plu);
    const size_t d = 512, F = 1376, V = 32000, L = 8;
    const size_t norms_g = 4 * (2 * L + 1) * d, block_g = 4 * (4 * d * d + 3 * d * F);
    const size_t dense_g = 4 * 2 * V * d + norms_g;
    CHECK(pl.peak[MEM_GRADS] == norms_g + 4 * V * d, "per-layer updates: gradients %zu, expected %zu",
          pl.peak[MEM_GRADS], norms_g + 4 * V * d);
    CHECK(pl.steady < full.steady - 4 * 2 * V * d, "per-layer updates hold no vocabulary-sized gradient");
    CHECK(full.peak[MEM_GRADS] == dense_g + L * block_g, "full gradients %zu, expected %zu",
          full.peak[MEM_GRADS], dense_g + L * block_g);
    plan pa = plan_of("60m", "full", set_plu_accum);
    CHECK(pa.peak[MEM_GRADS] == full.peak[MEM_GRADS], "per-layer updates with accumulation keep all gradients");
    CHECK(full.total == full.accounted_peak + full.overhead, "total = accounted peak + overhead");
    /* 7B full-rank cannot fit in 24 GiB, LoQT with 8-bit Adam and per-layer updates should */
    plan f7 = plan_of("7b", "full", NULL);
    CHECK(plan_check_fits(&f7, (size_t)24 << 30) == -1, "7b full in 24 GiB must be refused");
    const char *msg = loqt_last_error();
    CHECK(strstr(msg, "GiB") && strstr(msg, "largest: ") && strstr(msg, "--"),
          "the refusal names the total, the largest categories and options: %s", msg);
    CHECK(plan_check_fits(&f7, (size_t)1 << 40) == 0, "7b full fits in 1 TiB");
}

static void test_paper_estimate_close_to_table(void) {
    /* LoQT paper, Table 1 (weights + optimizer, GB), ranks 128 / 256 / 256 / 512 */
    const char *models[4] = {"60m", "130m", "350m", "1b"};
    const int ranks[4] = {128, 256, 256, 512};
    const double full[4] = {0.36, 0.76, 2.06, 7.80}, loqt[4] = {0.23, 0.49, 0.98, 3.16};
    for (int i = 0; i < 4; i++) {
        llama_config c;
        config_load(&c, models[i]);
        plan_input in;
        plan_input_defaults(&in, &c, "loqt");
        set_opt(&in, "rank", ranks[i]);
        double f = plan_paper_estimate(&c, "full", &in.mo) / 1073741824.0;
        double l = plan_paper_estimate(&c, "loqt", &in.mo) / 1073741824.0;
        CHECK_CLOSE(f, full[i], 0, 0.12);
        CHECK_CLOSE(l, loqt[i], 0, 0.12);
    }
}

static void test_parse_bytes(void) {
    size_t b = 0;
    CHECK(plan_parse_bytes("20GiB", &b) == 0 && b == (size_t)20 << 30, "20GiB -> %zu", b);
    CHECK(plan_parse_bytes("24000MiB", &b) == 0 && b == (size_t)24000 << 20, "24000MiB -> %zu", b);
    CHECK(plan_parse_bytes("1.5G", &b) == 0 && b == (size_t)3 << 29, "1.5G -> %zu", b);
    CHECK(plan_parse_bytes("2GB", &b) == 0 && b == 2000000000u, "2GB -> %zu", b);
    CHECK(plan_parse_bytes("4096", &b) == 0 && b == 4096, "4096 -> %zu", b);
    CHECK(plan_parse_bytes("12 gib", &b) == 0 && b == (size_t)12 << 30, "12 gib -> %zu", b);
    CHECK(plan_parse_bytes("abc", &b) == -1, "abc is an error");
    CHECK(plan_parse_bytes("-3G", &b) == -1, "negative is an error");
    CHECK(plan_parse_bytes("3 parsecs", &b) == -1, "unknown unit is an error");
    CHECK(plan_parse_bytes("", &b) == -1, "empty is an error");
}

static void test_bad_input_is_an_error(void) {
    llama_config c = tiny();
    plan_input in;
    plan p;
    plan_input_defaults(&in, &c, "nope");
    CHECK(plan_make(&p, &in) == -1 && strstr(loqt_last_error(), "nope"), "unknown method: %s", loqt_last_error());
    plan_input_defaults(&in, &c, "loqt");
    in.seq = 1000;
    CHECK(plan_make(&p, &in) == -1, "sequence longer than max_position_embeddings");
    plan_input_defaults(&in, &c, "loqt");
    set_opt(&in, "rank", 0);
    CHECK(plan_make(&p, &in) == -1, "rank 0");
    plan_input_defaults(&in, &c, "full");
    in.batch = 0;
    CHECK(plan_make(&p, &in) == -1, "batch 0");
}

int main(void) {
    RUN(test_full_adamw_exact);
    RUN(test_full_adam8bit_accumulation_exact);
    RUN(test_loqt_nf4_refresh_with_optimizer_exact);
    RUN(test_loqt_variants_exact);
    RUN(test_activation_checkpointing_exact);
    RUN(test_per_layer_updates_exact);
    RUN(test_data_and_export_exact);
    RUN(test_bf16_exact);
    RUN(test_every_method_exact);
    RUN(test_gqa_tied_exact);
    RUN(test_freeze_dense_exact);
    RUN(test_quailora_calibration_exact);
    RUN(test_target_modules_exact);
    RUN(test_savings_go_the_right_way);
    RUN(test_paper_estimate_close_to_table);
    RUN(test_parse_bytes);
    RUN(test_bad_input_is_an_error);
    TEST_END();
}
