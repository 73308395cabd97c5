/* The subcommands of the loqt program; each takes the arguments after its name. */
#ifndef LOQT_COMMANDS_H
#define LOQT_COMMANDS_H

#include "data/loader.h"
#include "model/llama.h"

int cmd_train(int argc, char **argv);
int cmd_eval(int argc, char **argv);
int cmd_generate(int argc, char **argv);
int cmd_bench(int argc, char **argv);
int cmd_data(int argc, char **argv);
int cmd_export(int argc, char **argv);
int cmd_memory(int argc, char **argv);

/* The OpenBLAS kernel set chosen at start-up (cli/main.c). */
const char *loqt_blas_kernels(void);

/* Options of the low-rank methods, shared by train, bench (and memory). */
#include "cli/options.h"
typedef struct {
    int rank, update_proj_gap, max_proj_gap, compensate_quant_error_iterations, use_double_quant;
    double lora_alpha, increment_size;
    const char *proj_gap_progression, *quantize_w, *quantize_projection_matrix;
    const char *merge_optimizer_state, *lowrank_dtype;
} cli_method_args;
enum { CLI_METHOD_SPECS = 12 };
void cli_method_defaults(cli_method_args *a);
/* Writes CLI_METHOD_SPECS option specs for `a` into out. */
void cli_method_specs(cli_method_args *a, opt_spec *out);
/* opts_parse over the command's own specs followed by the method options (defaults set in ma). */
void cli_parse_with_method(const opt_spec *specs, int n, cli_method_args *ma, int argc, char **argv,
                           const char *command, const char *summary);
/* Converts into method options (dies on a bad combination). */
void cli_method_apply(const cli_method_args *a, method_opts *o);

/* Plans the run's memory and dies with the planner's one-line explanation when it exceeds
 * max_memory ("20GiB"; NULL = the machine's physical memory). */
#include "model/plan.h"
void cli_check_memory(const plan_input *pin, const char *max_memory);

/* Shared by the commands (cli/common.c). */
void cli_set_threads(int threads); /* 0 = all cores */
int cli_threads(void);
double cli_now(void);              /* monotonic seconds */
void cli_format_duration(double seconds, char *buf, int cap);
/* Mean token loss over up to max_tokens tokens of a split, from its start, in batches of B x T.
 * Returns the number of tokens evaluated (0 if the split is too small). */
uint64_t cli_evaluate(llama_model *m, data_loader *L, uint64_t max_tokens, double *mean_loss);
/* Creates the model stored in a checkpoint directory and loads its weights. */
void cli_load_checkpoint(llama_model *m, const char *dir, int weights_only);

#endif
