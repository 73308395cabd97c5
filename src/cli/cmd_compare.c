/* loqt compare: train several methods on the same model, tokens, seed and schedule, one after
 * another, and report them side by side (compare.md, compare.svg).
 *
 * Each run is an ordinary `loqt train` in its own directory OUT/runs/LABEL, started as a child
 * process (so each run's peak memory is its own), with the common options and the method's own.
 * Every run is checked first with `train --dry-run`, so a mistake in the last run's options shows
 * before hours of training.  Rerunning the same command skips finished runs and resumes the
 * others from their newest checkpoint.  The report reads each run's metrics.jsonl and plan.json. */
#include "cli/commands.h"
#include "cli/options.h"

#include "core/error.h"
#include "core/json.h"
#include "core/mem.h"
#include "io/fileutil.h"
#include "io/plot.h"
#include "model/checkpoint.h"

#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

static const char *USAGE =
    "usage: loqt compare --methods SPEC --out DIR [--tokens N] [train options]\n\n"
    "Trains each method of SPEC on the same model, tokens, seed and schedule, one after another,\n"
    "in OUT/runs/LABEL (each an ordinary 'loqt train' run with its progress), then writes\n"
    "OUT/compare.md (held-out perplexity, its ratio to the first method, tokens/s, memory planned\n"
    "and measured by category) and OUT/compare.svg (training and held-out loss against tokens, and\n"
    "the memory of each run). Rerun the same command to continue: finished runs are skipped and the\n"
    "others resume from their newest checkpoint. Every run's options are checked (train --dry-run)\n"
    "before the first one starts.\n\n"
    "options:\n"
    "  --methods SPEC   comma-separated METHOD[@LABEL][:OPTION=VALUE,...] entries, e.g.\n"
    "                   full,loqt:rank=128,lr=0.01,galore  or  loqt,loqt@keep:merge-optimizer-state=keep\n"
    "                   (an OPTION is any train option or option of that method, without the dashes;\n"
    "                   a bare OPTION after a method is a flag: loqt:per-layer-updates; LABEL names\n"
    "                   the run, default the method's name, and must be unique)\n"
    "  --out DIR        the comparison's directory\n"
    "  --tokens N       training tokens of every run (K, M, G = 1e3, 1e6, 1e9) [default: 5M]; the\n"
    "                   steps are N / (total batch size x max length), rounded down\n"
    "  --only LABELS    train only these runs now (comma-separated labels), e.g. to train a long\n"
    "                   comparison a few runs at a time or side by side; the report still covers every\n"
    "                   run, finished or not [default: all]\n"
    "  --help           show this help\n\n"
    "Every other option is passed to each 'loqt train' (see loqt train --help): --model, --data,\n"
    "--batch-size, --total-batch-size, --max-length, --seed, --threads, ... . Unless given,\n"
    "--eval-every and --save-every are a tenth of the steps. Options that must be the same for\n"
    "every run (model, data, seed, schedule, batch, length, evaluation) cannot be given per method.\n";

enum { MAX_RUNS = 16, MAX_EXTRA = 48, MAX_ARGS = 512 };

typedef struct {
    char label[64];
    char method[64];
    char *extra[MAX_EXTRA]; /* "--name=value" / "--name" of this run */
    int n_extra;
    char options[512];      /* "rank=128, lr=0.01" as given, for the report */
    char dir[4096];
    int failed;             /* exit status of a run that failed, 0 otherwise */
    int skip;               /* not in --only: not trained now */
} compare_run;

typedef struct {
    const char *methods, *out, *only;
    uint64_t tokens;
    long steps;
    int tokens_per_step;
    char **common; /* forwarded to every train */
    int n_common;
    compare_run runs[MAX_RUNS];
    int n_runs;
    char command[4096]; /* the command line, for the report */
} compare_args;

/* options that define the comparison: the same for every run */
static const char *const SHARED_ONLY[] = {"model", "data", "seed", "total-batch-size", "max-length",
                                          "num-training-steps", "warmup-steps", "scheduler", "min-lr-ratio",
                                          "eval-every", "num-eval-tokens", "tokens"};
/* options that compare sets itself */
static const char *const RESERVED[] = {"num-training-steps", "output-dir", "resume", "overwrite", "dry-run"};

static int in_list(const char *name, const char *const *list, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (!strcmp(name, list[i])) return 1;
    return 0;
}
#define IN(name, list) in_list(name, list, sizeof list / sizeof list[0])

/* ---- parsing ------------------------------------------------------------------------------- */

static uint64_t parse_tokens(const char *s) {
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    double mul = 1;
    if (*end == 'K' || *end == 'k') mul = 1e3, end++;
    else if (*end == 'M' || *end == 'm') mul = 1e6, end++;
    else if (*end == 'G' || *end == 'g') mul = 1e9, end++;
    if (end == s || *end || errno || !(v > 0) || v * mul > 1e15)
        loqt_usage_die("--tokens must be a positive count such as 5M or 2500000, got '%s'", s);
    return (uint64_t)(v * mul);
}

/* the value of --name in args (last one wins), or NULL */
static const char *find_value(char **args, int n, const char *name) {
    const char *v = NULL;
    for (int i = 0; i < n; i++) {
        char nm[128];
        opts_name_of(args[i], nm, sizeof nm);
        if (strcmp(nm, name)) continue;
        const char *eq = strchr(args[i], '=');
        if (eq) v = eq + 1;
        else if (i + 1 < n) v = args[i + 1];
    }
    return v;
}

static int positive_int(const char *v, const char *name, int def) {
    if (!v) return def;
    char *end;
    long x = strtol(v, &end, 10);
    if (end == v || *end || x <= 0 || x > 1 << 24) loqt_usage_die("--%s must be a positive integer, got '%s'", name, v);
    return (int)x;
}

/* One "OPTION=VALUE" or "OPTION" of a method entry into run r. */
static void add_run_option(compare_run *r, const char *item) {
    char name[128];
    const char *eq = strchr(item, '=');
    size_t len = eq ? (size_t)(eq - item) : strlen(item);
    if (len == 0 || len >= sizeof name) loqt_usage_die("--methods: empty or overlong option in '%s'", item);
    memcpy(name, item, len);
    name[len] = 0;
    for (char *c = name; *c; c++)
        if (*c == '_') *c = '-';
    if (IN(name, SHARED_ONLY))
        loqt_usage_die("--methods: --%s must be the same for every run: give it once, outside --methods", name);
    if (IN(name, RESERVED) || !strcmp(name, "method"))
        loqt_usage_die("--methods: --%s is set by compare itself", name);
    if (r->n_extra == MAX_EXTRA) loqt_usage_die("--methods: too many options for %s", r->label);
    char buf[640];
    snprintf(buf, sizeof buf, "--%s%s%s", name, eq ? "=" : "", eq ? eq + 1 : "");
    r->extra[r->n_extra++] = strdup(buf);
    size_t k = strlen(r->options);
    snprintf(r->options + k, sizeof r->options - k, "%s%s", k ? ", " : "", item);
}

/* "METHOD[@LABEL][:first-option]" starts a run */
static void start_run(compare_args *a, const char *item) {
    if (a->n_runs == MAX_RUNS) loqt_usage_die("--methods: at most %d runs", MAX_RUNS);
    compare_run *r = &a->runs[a->n_runs++];
    memset(r, 0, sizeof *r);
    const char *colon = strchr(item, ':'), *at = strchr(item, '@');
    if (at && colon && at > colon) at = NULL;
    size_t mlen = at ? (size_t)(at - item) : colon ? (size_t)(colon - item) : strlen(item);
    if (mlen == 0 || mlen >= sizeof r->method) loqt_usage_die("--methods: '%s' does not start with a method name", item);
    memcpy(r->method, item, mlen);
    r->method[mlen] = 0;
    if (!method_find(r->method)) loqt_usage_die("--methods: unknown method '%s' (methods: %s)", r->method, method_names());
    const char *lab = at ? at + 1 : r->method;
    size_t llen = at ? (colon ? (size_t)(colon - at - 1) : strlen(at + 1)) : strlen(r->method);
    if (llen == 0 || llen >= sizeof r->label) loqt_usage_die("--methods: empty or overlong label in '%s'", item);
    memcpy(r->label, lab, llen);
    r->label[llen] = 0;
    for (const char *c = r->label; *c; c++)
        if (!(*c == '-' || *c == '_' || *c == '.' || (*c >= '0' && *c <= '9') || (*c >= 'a' && *c <= 'z') ||
              (*c >= 'A' && *c <= 'Z')))
            loqt_usage_die("--methods: label '%s' may hold only letters, digits, '-', '_' and '.'", r->label);
    for (int i = 0; i < a->n_runs - 1; i++)
        if (!strcmp(a->runs[i].label, r->label))
            loqt_usage_die("--methods: two runs are labelled '%s'; name them with METHOD@LABEL", r->label);
    if (colon && colon[1]) add_run_option(r, colon + 1);
}

static void parse_methods(compare_args *a) {
    char *spec = strdup(a->methods);
    for (char *save = NULL, *item = strtok_r(spec, ",", &save); item; item = strtok_r(NULL, ",", &save)) {
        char name[96];
        size_t len = strcspn(item, "@:=");
        snprintf(name, sizeof name, "%.*s", (int)(len < sizeof name - 1 ? len : sizeof name - 1), item);
        int is_method = item[len] != '=' && method_find(name);
        if (is_method || !a->n_runs) start_run(a, item);
        else add_run_option(&a->runs[a->n_runs - 1], item);
    }
    free(spec);
    if (!a->n_runs) loqt_usage_die("--methods: no method given");
}

/* --only: every run not listed is skipped; each listed label must name a run */
static void select_runs(compare_args *a) {
    if (!a->only) return;
    for (int i = 0; i < a->n_runs; i++) a->runs[i].skip = 1;
    char *list = strdup(a->only);
    int n = 0;
    for (char *save = NULL, *l = strtok_r(list, ",", &save); l; l = strtok_r(NULL, ",", &save), n++) {
        int found = 0;
        for (int i = 0; i < a->n_runs; i++)
            if (!strcmp(a->runs[i].label, l)) a->runs[i].skip = 0, found = 1;
        if (!found) {
            char labels[MAX_RUNS * 66] = "";
            for (int i = 0; i < a->n_runs; i++)
                snprintf(labels + strlen(labels), sizeof labels - strlen(labels), "%s%s", i ? " " : "", a->runs[i].label);
            loqt_usage_die("--only: no run is labelled '%s' (the runs: %s)", l, labels);
        }
    }
    free(list);
    if (!n) loqt_usage_die("--only: no label given");
}

/* compare's own options out of argv; everything else is forwarded to train */
static void parse_args(compare_args *a, int argc, char **argv) {
    const char *tokens = "5M";
    a->common = calloc((size_t)argc + 1, sizeof *a->common);
    for (int i = 0; i < argc; i++) {
        char name[128];
        opts_name_of(argv[i], name, sizeof name);
        const char *eq = strchr(argv[i], '=');
        if (!strcmp(name, "help") || !strcmp(argv[i], "-h")) {
            fputs(USAGE, stdout);
            exit(0);
        }
        if (!strcmp(name, "methods") || !strcmp(name, "out") || !strcmp(name, "tokens") || !strcmp(name, "only")) {
            const char *v = eq ? eq + 1 : i + 1 < argc ? argv[++i] : NULL;
            if (!v) loqt_usage_die("--%s needs a value", name);
            if (!strcmp(name, "methods")) a->methods = v;
            else if (!strcmp(name, "out")) a->out = v;
            else if (!strcmp(name, "only")) a->only = v;
            else tokens = v;
            continue;
        }
        if (IN(name, RESERVED) || !strcmp(name, "method"))
            loqt_usage_die("--%s is set by compare itself (use --methods, --out and --tokens)", name);
        if (!*name && !a->n_common) loqt_usage_die("unexpected argument '%s' (see loqt compare --help)", argv[i]);
        a->common[a->n_common++] = argv[i];
    }
    if (!a->methods) loqt_usage_die("--methods is required (e.g. --methods full,loqt,galore)");
    if (!a->out) loqt_usage_die("--out is required: the directory of the comparison");
    parse_methods(a);
    select_runs(a);
    a->tokens = parse_tokens(tokens);
    const int batch = positive_int(find_value(a->common, a->n_common, "batch-size"), "batch-size", 8);
    const int total = positive_int(find_value(a->common, a->n_common, "total-batch-size"), "total-batch-size", batch);
    const int seq = positive_int(find_value(a->common, a->n_common, "max-length"), "max-length", 256);
    a->tokens_per_step = total * seq;
    a->steps = (long)(a->tokens / (uint64_t)a->tokens_per_step);
    if (a->steps < 1)
        loqt_usage_die("--tokens %s is less than one step of %d x %d tokens", tokens, total, seq);
    size_t k = (size_t)snprintf(a->command, sizeof a->command, "loqt compare");
    for (int i = 0; i < argc && k < sizeof a->command; i++)
        k += (size_t)snprintf(a->command + k, sizeof a->command - k, " %s", argv[i]);
    for (int i = 0; i < a->n_runs; i++) { /* through a copy: label and dir are fields of one object */
        char label[sizeof a->runs[i].label];
        memcpy(label, a->runs[i].label, sizeof label);
        snprintf(a->runs[i].dir, sizeof a->runs[i].dir, "%s/runs/%s", a->out, label);
    }
}

/* ---- running ------------------------------------------------------------------------------- */

static int file_exists(const char *path) {
    struct stat st;
    return stat(path, &st) == 0;
}

/* the run's state: 2 finished, 1 has a checkpoint, 0 nothing (or stopped before its first one) */
static int run_state(const compare_args *a, const compare_run *r, int *has_metrics) {
    char path[4200];
    snprintf(path, sizeof path, "%s/metrics.jsonl", r->dir);
    size_t len = 0;
    char *text = file_read_all(path, (size_t)1 << 30, &len);
    *has_metrics = text != NULL;
    char want[64];
    snprintf(want, sizeof want, "\"final\": true, \"step\": %ld,", a->steps);
    int done = text && strstr(text, want);
    mem_free(text);
    if (done) return 2;
    snprintf(path, sizeof path, "%s/checkpoints", r->dir);
    char latest[4096];
    return file_exists(path) && checkpoint_find_latest(path, latest, sizeof latest) == 0;
}

static void copy_text(char *dst, size_t cap, const char *src) {
    size_t n = strlen(src);
    if (n >= cap) n = cap - 1;
    memcpy(dst, src, n);
    dst[n] = 0;
}

/* The last "loqt: error: " line a child wrote to the pipe, without that prefix. */
static void read_error_line(int fd[2], char *err, size_t cap) {
    close(fd[1]);
    char buf[8192];
    size_t len = 0;
    ssize_t k;
    while ((k = read(fd[0], buf + len, sizeof buf - 1 - len)) > 0 || (k < 0 && errno == EINTR))
        if (k > 0) len += (size_t)k;
    close(fd[0]);
    buf[len] = 0;
    err[0] = 0;
    for (char *line = buf; line && *line;) {
        char *nl = strchr(line, '\n');
        if (nl) *nl = 0;
        const char *p = strstr(line, "error: ");
        if (p || !err[0]) copy_text(err, cap, p ? p + 7 : line);
        line = nl ? nl + 1 : NULL;
    }
}

static pid_t child_pid;
static volatile sig_atomic_t got_signal;

/* Ctrl-C and kill reach compare only (the run has its own process group): the run gets the
 * signal from here, finishes its step, writes a checkpoint and exits 128 + N. */
static void forward_signal(int sig) {
    got_signal = sig;
    if (child_pid > 0) kill(child_pid, sig);
}

/* loqt train COMMON --method M EXTRA --num-training-steps S --output-dir D [resume] [--dry-run];
 * a dry run's error line goes into err (its output is dropped). */
static int run_train(const compare_args *a, const compare_run *r, int state, int has_metrics, int dry,
                     char *err, size_t cap) {
    char *args[MAX_ARGS];
    int n = 0;
    char steps[32], every[32], out[4200], method[80];
    snprintf(steps, sizeof steps, "--num-training-steps=%ld", a->steps);
    snprintf(out, sizeof out, "--output-dir=%s", r->dir);
    snprintf(method, sizeof method, "--method=%s", r->method);
    snprintf(every, sizeof every, "%ld", a->steps / 10 > 0 ? a->steps / 10 : 1);
    args[n++] = "loqt";
    args[n++] = "train";
    for (int i = 0; i < a->n_common && n < MAX_ARGS - 24; i++) args[n++] = a->common[i];
    args[n++] = method;
    for (int i = 0; i < r->n_extra; i++) args[n++] = r->extra[i];
    args[n++] = steps;
    args[n++] = out;
    if (!find_value(a->common, a->n_common, "eval-every")) args[n++] = "--eval-every", args[n++] = every;
    if (!find_value(a->common, a->n_common, "save-every")) args[n++] = "--save-every", args[n++] = every;
    if (state == 1) args[n++] = "--resume", args[n++] = "latest";
    else if (has_metrics) args[n++] = "--overwrite"; /* stopped before its first checkpoint */
    if (dry) args[n++] = "--dry-run";
    args[n] = NULL;
    fflush(stdout);
    fflush(stderr);
    int pipefd[2] = {-1, -1};
    if (dry && pipe(pipefd)) loqt_die("cannot start a run: %s", strerror(errno));
    pid_t pid = fork();
    if (pid < 0) loqt_die("cannot start a run: %s", strerror(errno));
    if (pid == 0) {
        setpgid(0, 0);
        if (dry && (!freopen("/dev/null", "w", stdout) || dup2(pipefd[1], 2) < 0)) _exit(127);
        execv("/proc/self/exe", args);
        fprintf(stderr, "loqt: error: cannot run the loqt program: %s\n", strerror(errno));
        _exit(127);
    }
    child_pid = pid;
    if (dry) read_error_line(pipefd, err, cap);
    int status = 0;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    child_pid = 0;
    if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
    return WEXITSTATUS(status);
}

static void install_forwarding(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = forward_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGHUP, &sa, NULL);
}

/* every run's options through train --dry-run before anything trains */
static void check_runs(const compare_args *a) {
    for (int i = 0; i < a->n_runs; i++) {
        const compare_run *r = &a->runs[i];
        int has_metrics, state = run_state(a, r, &has_metrics);
        if (state == 2 || r->skip) continue;
        char err[1024];
        int rc = run_train(a, r, state, has_metrics, 1, err, sizeof err);
        if (got_signal) exit(128 + got_signal);
        if (rc) loqt_usage_die("run '%s' (--method %s%s%s): %s", r->label, r->method, *r->options ? ", " : "",
                               r->options, *err ? err : "refused by loqt train");
    }
}

/* ---- the report ---------------------------------------------------------------------------- */

typedef struct {
    double *tok, *loss;      /* training steps */
    int n, cap;
    double *etok, *eloss;    /* evaluations */
    int ne, ecap;
    double final_loss;       /* NAN until finished */
    double step_tps_median;
    double mem[MEM_NCAT], accounted, rss; /* measured peaks (MiB) */
    double plan[MEM_NCAT], plan_accounted, plan_total;
    int have_final, have_mem, have_plan;
    char stats[640];         /* the method's statistics at the end: "svd_saved 96, refreshes 24" */
} run_result;

static void push(double **x, double **y, int *n, int *cap, double a, double b) {
    if (*n == *cap) {
        *cap = *cap ? 2 * *cap : 256;
        *x = realloc(*x, sizeof **x * (size_t)*cap);
        *y = realloc(*y, sizeof **y * (size_t)*cap);
    }
    (*x)[*n] = a;
    (*y)[*n] = b;
    ++*n;
}

static int cmp_double(const void *p, const void *q) {
    double a = *(const double *)p, b = *(const double *)q;
    return (a > b) - (a < b);
}

static void read_memory(const json_value *o, const char *prefix, double *cat, double *accounted) {
    for (int c = 0; c < MEM_NCAT; c++) {
        char key[96];
        snprintf(key, sizeof key, "%s%s_mib", prefix, mem_cat_key((mem_cat)c));
        json_get_number(o, key, &cat[c]);
    }
    json_get_number(o, "accounted_peak_mib", accounted);
}

/* A final record's "method_stats" object as "name value, ..." (numbers only, as loqt train writes them). */
static void read_stats(const json_value *o, char *out, size_t cap) {
    size_t used = 0;
    out[0] = 0;
    if (!o || o->type != JSON_OBJECT) return;
    for (size_t i = 0; i < o->len && used + 1 < cap; i++) {
        if (o->items[i].type != JSON_NUMBER) continue;
        int w = snprintf(out + used, cap - used, "%s%s %.4g", used ? ", " : "", o->keys[i], o->items[i].number);
        if (w < 0) break;
        used += (size_t)w < cap - used ? (size_t)w : cap - used - 1;
    }
}

static void read_result(const compare_args *a, const compare_run *r, run_result *res) {
    memset(res, 0, sizeof *res);
    res->final_loss = res->step_tps_median = res->rss = NAN;
    char path[4200];
    snprintf(path, sizeof path, "%s/metrics.jsonl", r->dir);
    size_t len = 0;
    char *text = file_read_all(path, (size_t)1 << 30, &len);
    double *tps = NULL;
    int ntps = 0, captps = 0;
    double *dummy = NULL;
    for (char *line = text, *next; line && *line; line = next) {
        next = strchr(line, '\n');
        size_t ll = next ? (size_t)(next - line) : strlen(line);
        next = next ? next + 1 : line + ll;
        json_value *v = json_parse(line, ll);
        if (!v || v->type != JSON_OBJECT) {
            json_free(v);
            continue;
        }
        double tok = NAN, loss = NAN, step_s = NAN;
        int fin = 0;
        json_get_number(v, "tokens", &tok);
        if (json_get_bool(v, "final", &fin) == 0 && fin) {
            res->have_final = 1;
            json_get_number(v, "eval_loss", &res->final_loss); /* null without a held-out evaluation */
            const json_value *m = json_get(v, "memory");
            if (m && m->type == JSON_OBJECT) {
                read_memory(m, "", res->mem, &res->accounted);
                json_get_number(m, "peak_rss_mib", &res->rss);
                res->have_mem = 1;
            }
            read_stats(json_get(v, "method_stats"), res->stats, sizeof res->stats);
        } else if (json_get_number(v, "eval_loss", &loss) == 0) {
            push(&res->etok, &res->eloss, &res->ne, &res->ecap, tok / 1e6, loss);
        } else if (json_get_number(v, "loss", &loss) == 0) {
            push(&res->tok, &res->loss, &res->n, &res->cap, tok / 1e6, loss);
            if (json_get_number(v, "step_s", &step_s) == 0 && step_s > 0)
                push(&tps, &dummy, &ntps, &captps, a->tokens_per_step / step_s, 0);
        }
        json_free(v);
    }
    mem_free(text);
    if (ntps) {
        qsort(tps, (size_t)ntps, sizeof *tps, cmp_double);
        res->step_tps_median = tps[ntps / 2];
    }
    free(tps);
    free(dummy);
    snprintf(path, sizeof path, "%s/plan.json", r->dir);
    text = file_read_all(path, (size_t)1 << 20, &len);
    json_value *p = text ? json_parse(text, len) : NULL;
    if (p && p->type == JSON_OBJECT) {
        read_memory(p, "", res->plan, &res->plan_accounted);
        json_get_number(p, "total_mib", &res->plan_total);
        res->have_plan = 1;
    }
    json_free(p);
    mem_free(text);
}

static void free_result(run_result *res) {
    free(res->tok);
    free(res->loss);
    free(res->etok);
    free(res->eloss);
}

/* the held-out loss of a run: the final evaluation, else the last one so far */
static double heldout(const run_result *r) { return isfinite(r->final_loss) ? r->final_loss : r->ne ? r->eloss[r->ne - 1] : NAN; }

static void cell(FILE *f, const char *fmt, double v) {
    if (isfinite(v)) fprintf(f, fmt, v);
    else fprintf(f, " - |");
}

/* " planned / measured |", "-" for what is not known */
static void pair(FILE *f, double planned, double measured) {
    if (isfinite(planned)) fprintf(f, " %.1f", planned);
    else fprintf(f, " -");
    if (isfinite(measured)) fprintf(f, " / %.1f |", measured);
    else fprintf(f, " / - |");
}

static void write_table(FILE *f, const compare_args *a, const run_result *res) {
    fprintf(f, "| run | method | options | held-out loss | perplexity | vs %s | tokens/s | accounted peak MiB, "
               "planned / measured | peak RSS MiB, planned / measured | status |\n|---|---|---|---|---|---|---|---|---|---|\n",
            a->runs[0].label);
    const double ppl0 = exp(heldout(&res[0]));
    for (int i = 0; i < a->n_runs; i++) {
        const compare_run *r = &a->runs[i];
        const run_result *x = &res[i];
        const double ppl = exp(heldout(x));
        fprintf(f, "| %s | %s | %s |", r->label, r->method, *r->options ? r->options : "-");
        cell(f, " %.4f |", heldout(x));
        cell(f, " %.2f |", ppl);
        cell(f, " %.3fx |", ppl / ppl0);
        cell(f, " %.0f |", x->step_tps_median);
        pair(f, x->have_plan ? x->plan_accounted : NAN, x->have_mem ? x->accounted : NAN);
        pair(f, x->have_plan ? x->plan_total : NAN, x->have_mem ? x->rss : NAN);
        if (r->failed) fprintf(f, " failed (exit %d) |\n", r->failed);
        else if (x->have_final) fprintf(f, " finished |\n");
        else fprintf(f, " unfinished: %.2fM of %.2fM tokens |\n", x->n ? x->tok[x->n - 1] : 0.0, a->steps * (double)a->tokens_per_step / 1e6);
    }
}

static void write_breakdown(FILE *f, const compare_args *a, const run_result *res) {
    fprintf(f, "\nPeak memory by category, MiB, planned / measured (`loqt memory` and the accounting of the run):\n\n| run |");
    for (int c = 0; c < MEM_NCAT; c++) fprintf(f, " %s |", mem_cat_name((mem_cat)c));
    fprintf(f, " accounted peak |\n|---|");
    for (int c = 0; c <= MEM_NCAT; c++) fprintf(f, "---|");
    fprintf(f, "\n");
    for (int i = 0; i < a->n_runs; i++) {
        const run_result *x = &res[i];
        fprintf(f, "| %s |", a->runs[i].label);
        for (int c = 0; c <= MEM_NCAT; c++) {
            const double pl = c < MEM_NCAT ? x->plan[c] : x->plan_accounted, me = c < MEM_NCAT ? x->mem[c] : x->accounted;
            pair(f, x->have_plan ? pl : NAN, x->have_mem ? me : NAN);
        }
        fprintf(f, "\n");
    }
}

/* What each method reported of its layers at the end (refreshes, SVDs saved, ...), for the runs that have it. */
static void write_stats(FILE *f, const compare_args *a, const run_result *res) {
    int any = 0;
    for (int i = 0; i < a->n_runs; i++) any |= res[i].stats[0] != 0;
    if (!any) return;
    fprintf(f, "\nThe methods' statistics at the end of each run (over all layers, each a sum or a mean as `docs/methods.md` says):\n\n");
    for (int i = 0; i < a->n_runs; i++)
        if (res[i].stats[0]) fprintf(f, "- %s: %s\n", a->runs[i].label, res[i].stats);
}

static void write_markdown(FILE *f, const compare_args *a, const run_result *res) {
    fprintf(f, "# Comparison\n\n`%s`\n\n", a->command);
    fprintf(f, "Every run: %ld steps of %d tokens (%.2fM tokens), the same model, data order, seed and schedule. "
               "Held-out loss: the last evaluation (at the end for finished runs); tokens/s: the median over the "
               "training steps.\n\n", a->steps, a->tokens_per_step, a->steps * (double)a->tokens_per_step / 1e6);
    write_table(f, a, res);
    write_breakdown(f, a, res);
    write_stats(f, a, res);
    fprintf(f, "\n![training and held-out loss, memory](compare.svg)\n\n"
               "Left: training loss (thin, moving average over 2%% of the steps) and held-out loss (dots) against "
               "tokens. Right: each category's measured peak, stacked (categories peak at different moments, so the "
               "stack can exceed the accounted peak); the dashed line is the process's peak resident set size. The table gives the planner's figures beside the measured ones.\n");
}

/* trailing mean of the last w values */
static void moving_average(const double *y, int n, int w, double *out) {
    double s = 0;
    for (int i = 0; i < n; i++) {
        s += y[i];
        if (i >= w) s -= y[i - w];
        out[i] = s / (i + 1 < w ? i + 1 : w);
    }
}

static void write_svg(FILE *f, const compare_args *a, const run_result *res) {
    const int n = a->n_runs;
    plot_series *s = calloc((size_t)n * 2, sizeof *s);
    double **smooth = calloc((size_t)n, sizeof *smooth);
    char (*labels)[96] = calloc((size_t)n * 2, sizeof *labels);
    int ns = 0;
    for (int i = 0; i < n; i++) {
        const run_result *x = &res[i];
        smooth[i] = malloc(sizeof(double) * (size_t)(x->n + 1));
        moving_average(x->loss, x->n, x->n / 50 > 1 ? x->n / 50 : 1, smooth[i]);
        snprintf(labels[2 * i], sizeof labels[0], "%s training", a->runs[i].label);
        snprintf(labels[2 * i + 1], sizeof labels[0], "%s held-out", a->runs[i].label);
        s[ns++] = (plot_series){labels[2 * i], x->tok, smooth[i], x->n, i, 0, 0, 1.0};
        s[ns++] = (plot_series){labels[2 * i + 1], x->etok, x->eloss, x->ne, i, 1, 1, 2.0};
    }
    plot_svg_begin(f, 1280, 520);
    const plot_panel loss = {"loss against training tokens", "training tokens (millions)", "loss (nats per token, log scale)",
                             1, 0, 0, 700, 520};
    plot_lines(f, &loss, s, ns);
    plot_bar *bars = calloc((size_t)n, sizeof *bars);
    const char *parts[MEM_NCAT];
    for (int c = 0; c < MEM_NCAT; c++) parts[c] = mem_cat_name((mem_cat)c);
    for (int i = 0; i < n; i++)
        bars[i] = (plot_bar){a->runs[i].label, res[i].mem, res[i].have_mem ? res[i].rss : 0};
    const plot_panel memp = {"peak memory by category (measured)", NULL, "MiB", 0, 700, 0, 580, 520};
    plot_stacked_bars(f, &memp, bars, n, parts, MEM_NCAT, "peak RSS");
    plot_svg_end(f);
    for (int i = 0; i < n; i++) free(smooth[i]);
    free(smooth);
    free(s);
    free(labels);
    free(bars);
}

/* a report file written whole, then renamed over the old one */
static void write_report(const char *path, void (*writer)(FILE *, const compare_args *, const run_result *),
                         const compare_args *a, const run_result *res) {
    char *buf = NULL;
    size_t len = 0;
    FILE *m = open_memstream(&buf, &len);
    if (!m) loqt_die("cannot write %s: %s", path, strerror(errno));
    writer(m, a, res);
    fclose(m);
    if (file_write_atomic(path, buf, len)) loqt_die_last(path);
    free(buf);
}

static void report(const compare_args *a) {
    run_result res[MAX_RUNS];
    for (int i = 0; i < a->n_runs; i++) read_result(a, &a->runs[i], &res[i]);
    char md[4200], svg[4200];
    snprintf(md, sizeof md, "%s/compare.md", a->out);
    snprintf(svg, sizeof svg, "%s/compare.svg", a->out);
    write_report(md, write_markdown, a, res);
    write_report(svg, write_svg, a, res);
    printf("== compare: wrote %s and %s\n", md, svg);
    write_table(stdout, a, res);
    for (int i = 0; i < a->n_runs; i++) free_result(&res[i]);
}

int cmd_compare(int argc, char **argv) {
    static compare_args a;
    parse_args(&a, argc, argv);
    if (file_mkdir_p(a.out)) loqt_die_last("--out");
    install_forwarding();
    check_runs(&a);
    int failed = 0;
    for (int i = 0; i < a.n_runs; i++) {
        compare_run *r = &a.runs[i];
        int has_metrics, state = run_state(&a, r, &has_metrics);
        if (state == 2 || r->skip) {
            printf("== compare [%d/%d] %s: %s\n", i + 1, a.n_runs, r->label, state == 2 ? "finished" : "not in --only");
            continue;
        }
        printf("== compare [%d/%d] %s: %s (--method %s%s%s; %ld steps)\n", i + 1, a.n_runs, r->label,
               state == 1 ? "resuming" : "starting", r->method, *r->options ? ", " : "", r->options, a.steps);
        int rc = run_train(&a, r, state, has_metrics, 0, NULL, 0);
        if (got_signal || rc >= 128) {
            report(&a);
            printf("== compare: stopped during %s; rerun the same command to continue\n", r->label);
            return rc >= 128 ? rc : 128 + got_signal;
        }
        if (rc) {
            fprintf(stderr, "loqt: warning: run '%s' failed (exit %d); going on with the others\n", r->label, rc);
            r->failed = rc;
            failed = 1;
        }
    }
    report(&a);
    for (int i = 0; i < a.n_runs; i++)
        for (int k = 0; k < a.runs[i].n_extra; k++) free(a.runs[i].extra[k]);
    free(a.common);
    if (failed) loqt_die("some runs failed (see compare.md)");
    return 0;
}
