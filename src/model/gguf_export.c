#include "model/gguf_export.h"

#include "core/error.h"
#include "core/mem.h"
#include "core/progress.h"

#include <stdio.h>
#include <string.h>

/* llama.cpp's token types */
enum { TT_NORMAL = 1, TT_UNKNOWN = 2, TT_CONTROL = 3, TT_UNUSED = 5, TT_BYTE = 6 };
/* general.file_type (llama_ftype) of each file type */
static uint32_t file_type_id(gguf_type t) {
    switch (t) {
    case GGUF_F32: return 0;
    case GGUF_F16: return 1;
    case GGUF_Q4_0: return 2;
    case GGUF_Q8_0: return 7;
    }
    return 0;
}

/* GGUF names of the seven projections, in LIN_* order */
static const char *lin_gguf[LIN_PER_BLOCK] = {"attn_q", "attn_k", "attn_v", "attn_output",
                                              "ffn_gate", "ffn_up", "ffn_down"};

gguf_type llama_gguf_tensor_type(gguf_type type, const char *name, int n_dims, int64_t ne0) {
    if (n_dims < 2 || type == GGUF_F32) return GGUF_F32;
    if (type == GGUF_Q4_0 && !strcmp(name, "output.weight")) type = GGUF_Q8_0;
    return gguf_type_fits(type, ne0) ? type : GGUF_F16;
}

void llama_gguf_permute_rope(float *W, int n_heads, int hd, int cols, float *tmp) {
    const size_t row = (size_t)cols * sizeof(float);
    for (int h = 0; h < n_heads; h++) {
        float *head = W + (size_t)h * hd * cols;
        memcpy(tmp, head, (size_t)hd * row);
        for (int j = 0; j < 2; j++)
            for (int i = 0; i < hd / 2; i++)
                memcpy(head + (size_t)(2 * i + j) * cols, tmp + (size_t)(j * hd / 2 + i) * cols, row);
    }
}

/* ---- the tensors, declared in the order they are written ---------------------------------- */

static int declare(gguf_writer *w, const char *name, int n_dims, int64_t ne0, int64_t ne1, gguf_type type) {
    const int64_t ne[2] = {ne0, ne1};
    return gguf_add_tensor(w, name, n_dims, ne, llama_gguf_tensor_type(type, name, n_dims, ne0));
}

static int declare_all(gguf_writer *w, const llama_config *c, gguf_type type) {
    const int64_t d = c->hidden_size, V = c->vocab_size;
    if (declare(w, "token_embd.weight", 2, d, V, type)) return -1;
    for (int l = 0; l < c->num_hidden_layers; l++) {
        char name[64];
        snprintf(name, sizeof name, "blk.%d.attn_norm.weight", l);
        if (declare(w, name, 1, d, 1, type)) return -1;
        for (int j = 0; j < LIN_PER_BLOCK; j++) {
            if (j == LIN_GATE) {
                snprintf(name, sizeof name, "blk.%d.ffn_norm.weight", l);
                if (declare(w, name, 1, d, 1, type)) return -1;
            }
            int out, in;
            llama_linear_shape(c, j, &out, &in);
            snprintf(name, sizeof name, "blk.%d.%s.weight", l, lin_gguf[j]);
            if (declare(w, name, 2, in, out, type)) return -1;
        }
    }
    if (declare(w, "output_norm.weight", 1, d, 1, type)) return -1;
    return declare(w, "output.weight", 2, d, V, type);
}

static size_t largest_projection(const llama_config *c) {
    size_t most = 0;
    for (int j = 0; j < LIN_PER_BLOCK; j++) {
        int out, in;
        llama_linear_shape(c, j, &out, &in);
        if ((size_t)out * in > most) most = (size_t)out * in;
    }
    return most;
}

static size_t head_floats(const llama_config *c) {
    return (size_t)(c->hidden_size / c->num_attention_heads) * c->hidden_size;
}

size_t llama_gguf_scratch_bytes(const llama_config *c, gguf_type type) {
    gguf_writer *w = gguf_writer_new();
    size_t enc = w && !declare_all(w, c, type) ? gguf_writer_scratch_bytes(w) : 0;
    gguf_writer_free(w);
    return sizeof(float) * (largest_projection(c) + head_floats(c)) + enc;
}

/* ---- metadata ----------------------------------------------------------------------------- */

static void hyperparameters(gguf_writer *w, const llama_config *c, gguf_type type) {
    gguf_kv_str(w, "general.architecture", "llama");
    gguf_kv_str(w, "general.type", "model");
    /* a user config's name is its path: the file name without .json is the model's name */
    const char *slash = strrchr(c->name, '/'), *base = slash ? slash + 1 : c->name;
    char name[64];
    snprintf(name, sizeof name, "%.*s", (int)(strlen(base) > 5 && !strcmp(base + strlen(base) - 5, ".json") ? strlen(base) - 5 : strlen(base)), base);
    gguf_kv_str(w, "general.name", name[0] ? name : "loqt");
    gguf_kv_u32(w, "general.file_type", file_type_id(type));
    gguf_kv_u32(w, "general.quantization_version", 2);
    gguf_kv_u32(w, "general.alignment", GGUF_ALIGNMENT);
    gguf_kv_u32(w, "llama.vocab_size", (uint32_t)c->vocab_size);
    gguf_kv_u32(w, "llama.context_length", (uint32_t)c->max_position_embeddings);
    gguf_kv_u32(w, "llama.embedding_length", (uint32_t)c->hidden_size);
    gguf_kv_u32(w, "llama.block_count", (uint32_t)c->num_hidden_layers);
    gguf_kv_u32(w, "llama.feed_forward_length", (uint32_t)c->intermediate_size);
    gguf_kv_u32(w, "llama.rope.dimension_count", (uint32_t)(c->hidden_size / c->num_attention_heads));
    gguf_kv_u32(w, "llama.attention.head_count", (uint32_t)c->num_attention_heads);
    gguf_kv_u32(w, "llama.attention.head_count_kv", (uint32_t)c->num_key_value_heads);
    gguf_kv_f32(w, "llama.attention.layer_norm_rms_epsilon", (float)c->rms_norm_eps);
    gguf_kv_f32(w, "llama.rope.freq_base", (float)c->rope_theta);
}

/* The vocabulary as llama.cpp's SentencePiece tokenizer reads it.  That tokenizer merges, among
 * adjacent symbols whose concatenation is a piece, the pair whose piece has the highest score
 * (leftmost first among equal scores).  loqt merges the pair of lowest merge index.  A piece's
 * score is therefore minus the index of the first merge that makes it: every merge of this
 * vocabulary is some pair of pieces whose concatenation is a piece and every such pair is a
 * merge, and the merges of one piece are adjacent in the list except for runs of spaces, whose
 * merges come last, so the two orders agree (docs/export.md; the tests check the embedded
 * vocabulary against the reference encodings).  Pieces no merge makes score below every merge. */
typedef struct {
    const char **tokens;
    float *scores;
    int32_t *types;
    char (*pads)[24]; /* names of the ids past the tokenizer's pieces */
} vocab_tables;

/* Types and scores of the tokenizer's pieces (ids below its size). */
static void piece_tables(const tokenizer *tk, vocab_tables *v) {
    const int n = tokenizer_vocab_size(tk), n_merges = tokenizer_merge_count(tk);
    int32_t *first = mem_alloc(MEM_DATA, sizeof *first * (size_t)n);
    tokenizer_first_merge(tk, first);
    for (int i = 0; i < n; i++) {
        v->tokens[i] = tokenizer_piece(tk, i);
        v->types[i] = TT_NORMAL;
        v->scores[i] = first[i] >= 0 ? -(float)first[i] : -(float)n_merges;
    }
    mem_free(first);
    for (int b = 0; b < 256; b++) {
        char piece[8];
        snprintf(piece, sizeof piece, "<0x%02X>", b);
        int id = tokenizer_piece_id(tk, piece, 6);
        if (id >= 0) v->types[id] = TT_BYTE;
    }
    const int unk = tokenizer_piece_id(tk, "<unk>", 5);
    if (unk >= 0) v->types[unk] = TT_UNKNOWN;
    v->types[TOK_BOS] = v->types[TOK_EOS] = TT_CONTROL;
    for (int i = 0; i < n; i++)
        if (v->types[i] != TT_NORMAL) v->scores[i] = 0; /* never merged into: as SentencePiece's */
}

static void vocabulary(gguf_writer *w, const tokenizer *tk, int V) {
    const int n = tokenizer_vocab_size(tk);
    vocab_tables v = {mem_alloc(MEM_DATA, sizeof *v.tokens * (size_t)V), mem_alloc(MEM_DATA, sizeof *v.scores * (size_t)V),
                      mem_alloc(MEM_DATA, sizeof *v.types * (size_t)V),
                      V > n ? mem_alloc(MEM_DATA, sizeof *v.pads * (size_t)(V - n)) : NULL};
    piece_tables(tk, &v);
    /* a vocabulary padded past the tokenizer: names as llama.cpp's converter gives them */
    for (int i = n; i < V; i++) {
        snprintf(v.pads[i - n], sizeof v.pads[0], "[PAD%d]", i);
        v.tokens[i] = v.pads[i - n];
        v.scores[i] = -1000;
        v.types[i] = TT_UNUSED;
    }
    const int unk = tokenizer_piece_id(tk, "<unk>", 5);
    gguf_kv_str(w, "tokenizer.ggml.model", "llama");
    gguf_kv_str(w, "tokenizer.ggml.pre", "default");
    gguf_kv_arr_str(w, "tokenizer.ggml.tokens", v.tokens, (size_t)V);
    gguf_kv_arr_f32(w, "tokenizer.ggml.scores", v.scores, (size_t)V);
    gguf_kv_arr_i32(w, "tokenizer.ggml.token_type", v.types, (size_t)V);
    gguf_kv_u32(w, "tokenizer.ggml.bos_token_id", TOK_BOS);
    gguf_kv_u32(w, "tokenizer.ggml.eos_token_id", TOK_EOS);
    if (unk >= 0) gguf_kv_u32(w, "tokenizer.ggml.unknown_token_id", (uint32_t)unk);
    gguf_kv_bool(w, "tokenizer.ggml.add_bos_token", 1);
    gguf_kv_bool(w, "tokenizer.ggml.add_eos_token", 0);
    gguf_kv_bool(w, "tokenizer.ggml.add_space_prefix", 1);
    mem_free(v.tokens);
    mem_free(v.scores);
    mem_free(v.types);
    mem_free(v.pads);
}

/* ---- the data ----------------------------------------------------------------------------- */

/* Each projection of each block: export_dense into one reused buffer, q and k permuted. */
static int write_blocks(const llama_model *m, gguf_writer *w) {
    const llama_config *c = &m->cfg;
    const int H = c->num_attention_heads, hd = c->hidden_size / H;
    float *dense = mem_alloc(MEM_SCRATCH, sizeof(float) * largest_projection(c));
    float *tmp = mem_alloc(MEM_SCRATCH, sizeof(float) * head_floats(c));
    int rc = 0;
    double last = loqt_now();
    for (int l = 0; l < c->num_hidden_layers && !rc; l++) {
        const llama_block *b = &m->blocks[l];
        rc = gguf_write_tensor(w, b->attn_norm.w);
        for (int j = 0; j < LIN_PER_BLOCK && !rc; j++) {
            if (j == LIN_GATE && (rc = gguf_write_tensor(w, b->mlp_norm.w))) break;
            const linear_layer *L = &b->lin[j];
            m->method->export_dense(L, dense);
            if (j == LIN_Q || j == LIN_K) llama_gguf_permute_rope(dense, H, hd, L->in, tmp);
            rc = gguf_write_tensor(w, dense);
        }
        if (loqt_now() - last > 2) {
            loqt_progress("export: block %d of %d written", l + 1, c->num_hidden_layers);
            last = loqt_now();
        }
    }
    mem_free(tmp);
    mem_free(dense);
    return rc;
}

int llama_gguf_check(const llama_model *m, const tokenizer *tk) {
    const llama_config *c = &m->cfg;
    if (tokenizer_vocab_size(tk) > c->vocab_size)
        return loqt_set_error("the tokenizer has %d pieces, more than the model's vocab_size %d: llama.cpp "
                              "needs one embedding row per token", tokenizer_vocab_size(tk), c->vocab_size);
    if (c->num_key_value_heads != c->num_attention_heads || c->hidden_size % c->num_attention_heads ||
        (c->hidden_size / c->num_attention_heads) % 2)
        return loqt_set_error("gguf export needs as many key/value heads as heads and an even head size");
    return 0;
}

int llama_export_gguf(const llama_model *m, const tokenizer *tk, const char *path, gguf_type type) {
    const llama_config *c = &m->cfg;
    if (llama_gguf_check(m, tk)) return -1;
    gguf_writer *w = gguf_writer_new();
    if (!w) return -1;
    hyperparameters(w, c, type);
    vocabulary(w, tk, c->vocab_size);
    int rc = declare_all(w, c, type);
    if (!rc) rc = gguf_writer_begin(w, path);
    if (!rc) rc = gguf_write_tensor(w, m->embed.w);
    if (!rc) rc = write_blocks(m, w);
    if (!rc) rc = gguf_write_tensor(w, m->final_norm.w);
    if (!rc) rc = gguf_write_tensor(w, m->lm_head.w);
    if (!rc) rc = gguf_writer_finish(w);
    if (rc) loqt_set_error("%s: %s", path, loqt_last_error());
    gguf_writer_free(w);
    return rc;
}
