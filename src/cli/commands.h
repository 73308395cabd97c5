/* The subcommands of the loqt program; each takes the arguments after its name. */
#ifndef LOQT_COMMANDS_H
#define LOQT_COMMANDS_H

#include "data/loader.h"
#include "model/llama.h"

int cmd_train(int argc, char **argv);
/* train, with option errors under another command's name (finetune runs train) */
int cmd_train_as(const char *command, int argc, char **argv);
int cmd_eval(int argc, char **argv);
int cmd_generate(int argc, char **argv);
int cmd_bench(int argc, char **argv);
int cmd_data(int argc, char **argv);
int cmd_export(int argc, char **argv);
int cmd_memory(int argc, char **argv);
int cmd_tokenize(int argc, char **argv);
int cmd_compare(int argc, char **argv);
int cmd_finetune(int argc, char **argv);

/* The run description that train, bench and memory share: the model, the method with its own
 * options, the optimizer, the batch shape, threads, the memory switches and the memory limit.
 * One parser (cli/run.c) reads the shared options, the chosen method's options (from its table,
 * methods/linear.h) and the command's own; one function turns it into the plan's input. */
#include "cli/options.h"
#include "model/plan.h"
typedef struct {
    const char *model, *method, *optimizer, *max_memory;
    int batch_size, total_batch_size, seq_len, threads;
    int per_layer_updates, activation_checkpointing;
    int freeze_dense; /* --freeze-dense: into mo.freeze_dense */
    int dtype;        /* --dtype fp32|bf16: the index is the gemm_dtype (GEMM_FP32, GEMM_BF16) */
    /* after cli_parse_run */
    const linear_method *m;
    method_opts mo; /* the method's options as given (defaults otherwise), optimizer set */
    int accum;      /* total_batch_size / batch_size */
} cli_run;

/* Defaults: model 20m, method full, adamw, batch 8 x 256, no accumulation, all cores. */
void cli_run_defaults(cli_run *r);
/* Parses the shared options, the method's options and `extra` (the command's own); dies with one
 * line (exit 2) on an unknown option, an option of another method, or a value out of range. */
void cli_parse_run(cli_run *r, const opt_spec *extra, int n_extra, int argc, char **argv,
                   const char *command, const char *summary);
/* The plan's input for this run of `steps` optimizer steps on cfg. */
void cli_run_plan_input(const cli_run *r, const llama_config *cfg, long steps, plan_input *pin);

/* Plans the run's memory (into *out unless NULL) and dies with the planner's one-line explanation
 * when it exceeds max_memory ("20GiB"; NULL = the machine's physical memory). */
void cli_check_memory(const plan_input *pin, const char *max_memory, plan *out);

/* The tokenizer hash that DIR/manifest.json records (from 'loqt data'), and the one a checkpoint
 * was trained with (its trainer state's run_options); "" when unknown (no manifest, an export).
 * cli_check_same_tokenizer dies when both are known and differ. */
void cli_data_tokenizer_hash(const char *data_dir, char *out, size_t cap);
void cli_checkpoint_tokenizer_hash(const char *ckpt_dir, char *out, size_t cap);
void cli_check_same_tokenizer(const char *model_hash, const char *other_hash, const char *what);

/* Shared by the commands (cli/common.c). */
void cli_set_threads(int threads); /* 0 = all cores */
int cli_threads(void);
double cli_now(void);              /* monotonic seconds */
void cli_format_duration(double seconds, char *buf, int cap);
/* Mean token loss over up to max_tokens tokens of a split, from its start, in batches of B x T.
 * Returns the number of tokens evaluated (0 if the split is too small). */
uint64_t cli_evaluate(llama_model *m, data_loader *L, uint64_t max_tokens, double *mean_loss);
/* The batches i of that evaluation with i mod parts = part (data-parallel ranks share it): the
 * sum of their token losses into *loss_sum, and their token count. */
uint64_t cli_evaluate_part(llama_model *m, data_loader *L, uint64_t max_tokens, int part, int parts,
                           double *loss_sum);
/* Creates the model stored in a checkpoint directory and loads its weights.  A directory without
 * trainer state (a dense export, or a LLaMA in Hugging Face layout, sharded or not) loads as a
 * full-rank model, weights only. */
void cli_load_checkpoint(llama_model *m, const char *dir, int weights_only);
/* The model of --checkpoint DIR, or with --adapter ADAPTER (non-NULL) the LoRA model of that PEFT
 * adapter on the pretrained base DIR (model/peft.h); dies with one line on a bad directory. */
void cli_load_model(llama_model *m, const char *dir, const char *adapter);
/* 1 when dir has no trainer state: pretrained weights (an export or a Hugging Face directory). */
int cli_is_pretrained_dir(const char *dir);
/* Dies unless a pretrained model's vocabulary is the data's (another tokenizer's ids would mean
 * other text, and there is no tokenizer hash to compare). */
void cli_check_pretrained_vocab(int model_vocab, uint32_t data_vocab, const char *dir);

#endif
