/* loqt export: the merged model of a checkpoint of any method, with every linear layer's
 * effective weight materialised, as a plain dense LLaMA directory (config.json +
 * model.safetensors, HF names) or as one llama.cpp GGUF file (docs/export.md). */
#include "cli/commands.h"
#include "cli/options.h"

#include "core/error.h"
#include "core/mem.h"
#include "data/corpus.h"
#include "data/tokenizer.h"
#include "io/fileutil.h"
#include "model/checkpoint.h"
#include "model/gguf_export.h"
#include "model/peft.h"

#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

enum { FORMAT_SAFETENSORS, FORMAT_GGUF, FORMAT_PEFT };
static const gguf_type gguf_types[] = {GGUF_F32, GGUF_F16, GGUF_Q8_0, GGUF_Q4_0};

static void export_safetensors(const char *ckpt, const char *out) {
    /* a checkpoint directory holds a trainer state: writing a dense model.safetensors there
     * would destroy it (a LoQT checkpoint's model.safetensors holds its NF4 codes) */
    char probe[4200];
    snprintf(probe, sizeof probe, "%s/trainer_state.safetensors", out);
    if (access(probe, F_OK) == 0)
        loqt_usage_die("export: --out %s is a training checkpoint (it has trainer_state.safetensors); write the dense model to another directory", out);
    llama_model m;
    cli_load_checkpoint(&m, ckpt, 1);
    if (llama_export_dense(&m, out)) loqt_die_last("export");
    printf("wrote %s/config.json and %s/model.safetensors\n", out, out);
    llama_free(&m);
}

/* The adapters alone in PEFT's layout, and with --with-base the frozen base they apply to
 * (OUT/base: the dequantized W of a 4- or 8-bit base). */
static void export_peft(const char *ckpt, const char *out, const char *base_model, int with_base) {
    char probe[4200];
    snprintf(probe, sizeof probe, "%s/trainer_state.safetensors", out);
    if (access(probe, F_OK) == 0)
        loqt_usage_die("export: --out %s is a training checkpoint (it has trainer_state.safetensors); write the adapter to another directory", out);
    llama_model m;
    cli_load_checkpoint(&m, ckpt, 1);
    if (peft_write_adapter(&m, out, base_model)) loqt_die_last("export --format peft");
    printf("wrote %s/adapter_config.json and %s/adapter_model.safetensors\n", out, out);
    if (with_base) {
        char dir[4200];
        snprintf(dir, sizeof dir, "%s/base", out);
        if (peft_export_base(&m, dir)) loqt_die_last("export --with-base");
        printf("wrote the base the adapter applies to: %s/config.json and %s/model.safetensors\n", dir, dir);
    }
    llama_free(&m);
}

/* --out's directory ("." for a bare name) into dir. */
static void parent_of(const char *out, char *dir, size_t cap) {
    snprintf(dir, cap, "%s", out);
    char *slash = strrchr(dir, '/');
    if (!slash) snprintf(dir, cap, ".");
    else if (slash == dir) dir[1] = 0;
    else *slash = 0;
}

/* --out must be a new file (or --overwrite), and not inside a training checkpoint (whose files a
 * later save or --overwrite of the run would remove with it). */
static void check_gguf_out(const char *out, int overwrite) {
    struct stat st;
    if (stat(out, &st) == 0) {
        if (S_ISDIR(st.st_mode)) loqt_usage_die("export: --out %s is a directory; give the GGUF file's name", out);
        if (!overwrite) loqt_usage_die("export: --out %s exists; pass --overwrite to replace it", out);
    }
    char dir[4096], probe[4200];
    parent_of(out, dir, sizeof dir);
    snprintf(probe, sizeof probe, "%s/trainer_state.safetensors", dir);
    if (access(probe, F_OK) == 0)
        loqt_usage_die("export: --out %s is inside a training checkpoint (%s has trainer_state.safetensors); write the GGUF file elsewhere", out, dir);
}

/* The tokenizer the checkpoint was trained with, when the checkpoint records it, must be this one. */
static void check_tokenizer_file(const char *ckpt, const char *tok_path) {
    size_t len = 0;
    char *bytes = file_read_all(tok_path, (size_t)256 << 20, &len), model_tok[32], tok[32];
    snprintf(tok, sizeof tok, "%016llx", bytes ? (unsigned long long)corpus_hash(bytes, len) : 0ull);
    mem_free(bytes);
    cli_checkpoint_tokenizer_hash(ckpt, model_tok, sizeof model_tok);
    cli_check_same_tokenizer(model_tok, tok, "--tokenizer");
}

static void export_gguf(const char *ckpt, const char *out, const char *tok_path, gguf_type type) {
    tokenizer *tk = tokenizer_load(tok_path);
    if (!tk) loqt_die_last("--tokenizer");
    check_tokenizer_file(ckpt, tok_path);
    llama_model m;
    cli_load_checkpoint(&m, ckpt, 1);
    if (llama_gguf_check(&m, tk)) loqt_die_last("export");
    /* missing directories of --out are made only once nothing else can refuse the export */
    char dir[4096];
    parent_of(out, dir, sizeof dir);
    if (file_mkdir_p(dir)) loqt_die("export: --out %s: %s", out, loqt_last_error());
    if (llama_export_gguf(&m, tk, out, type)) loqt_die_last("export");
    printf("wrote %s (GGUF, %s, %d tensors)\n", out, gguf_type_name(type), 3 + 9 * m.cfg.num_hidden_layers);
    llama_free(&m);
    tokenizer_free(tk);
}

int cmd_export(int argc, char **argv) {
    const char *ckpt = NULL, *out = NULL, *tok_path = "data/llama.tok", *base_model = NULL;
    int format = FORMAT_SAFETENSORS, type = 1, overwrite = 0, with_base = 0;
    const opt_spec specs[] = {
        {"checkpoint", OPT_STRING, &ckpt, "checkpoint directory to read", NULL},
        {"out", OPT_STRING, &out, "where to write: a directory (safetensors) or a file (gguf)", NULL},
        {"format", OPT_CHOICE, &format, "safetensors: config.json + model.safetensors (fp32, HF names); gguf: one llama.cpp file; peft: the LoRA adapters alone (--method lora or relora) as adapter_config.json + adapter_model.safetensors in Hugging Face PEFT's layout", "safetensors|gguf|peft"},
        {"base-model", OPT_STRING, &base_model, "peft: base_model_name_or_path of adapter_config.json (the Hub name or directory of the base); default null", NULL},
        {"with-base", OPT_FLAG, &with_base, "peft: also write the frozen base the adapter applies to (the dequantized NF4 or int8 base) to OUT/base", NULL},
        {"type", OPT_CHOICE, &type, "gguf: storage of the matrices (norms stay f32; q4_0 keeps output.weight in q8_0)", "f32|f16|q8_0|q4_0"},
        {"tokenizer", OPT_STRING, &tok_path, "gguf: the tokenizer to embed (from 'make tokenizer')", NULL},
        {"overwrite", OPT_FLAG, &overwrite, "gguf: replace an existing --out file", NULL},
    };
    opts_parse(specs, (int)(sizeof specs / sizeof specs[0]), argc, argv, "export",
               "Writes the merged model (every method's effective weights) for other tools: a dense fp32 LLaMA "
               "(HF tensor names) or a llama.cpp GGUF file.");
    if (!ckpt || !out) loqt_usage_die("export: --checkpoint and --out are required");
    if (format != FORMAT_PEFT && (opts_given("base-model") || opts_given("with-base")))
        loqt_usage_die("export: --base-model and --with-base apply to --format peft");
    if (format == FORMAT_PEFT) {
        if (opts_given("type") || opts_given("tokenizer") || opts_given("overwrite"))
            loqt_usage_die("export: --type, --tokenizer and --overwrite apply to --format gguf");
        export_peft(ckpt, out, base_model, with_base);
        return 0;
    }
    if (format == FORMAT_SAFETENSORS) {
        if (opts_given("type") || opts_given("tokenizer") || opts_given("overwrite"))
            loqt_usage_die("export: --type, --tokenizer and --overwrite apply to --format gguf");
        export_safetensors(ckpt, out);
        return 0;
    }
    check_gguf_out(out, overwrite);
    export_gguf(ckpt, out, tok_path, gguf_types[type]);
    return 0;
}
