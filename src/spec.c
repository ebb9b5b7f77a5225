/* spec.c - the JSON job spec: schema, checks, defaults, resolved output.
 *
 * The schema is one table (keys[] below) of data: JSON path, kind, where the
 * value lives in kt_spec, range, default. Parsing, defaults, "kt validate
 * --keys", the resolved JSON and the coverage tests all walk that table, so a
 * key added there is parsed, printed and tested everywhere at once.
 *
 * Every problem is collected rather than stopping at the first: a user fixing
 * a job file wants the whole list in one run. cJSON only tells that a text is
 * not JSON, and points roughly near the fault, so a small recursive checker
 * (json_locate) finds the exact line and column and says what was expected.
 */
#include "spec.h"

#include <cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cli.h"

static const char *const metric_names[] = {"val_acc", "val_loss", "train_acc", "train_loss"};
static const char *const act_names[] = {"relu", "gelu", "silu", "tanh"};
static const char *const optim_names[] = {"sgd", "adam", "adamw"};
static const char *const sched_names[] = {"constant", "step", "cosine"};

typedef enum {
    K_OBJ,      /* section */
    K_TOGGLE,   /* false/true, or an object of settings (implies true); off: int enabled */
    K_JITTER,   /* false, true (0.4 each) or an object of K_NUM children */
    K_BOOL,     /* int */
    K_INT,      /* int, integral number in [min, max] */
    K_NUM,      /* double */
    K_PAIR,     /* double[2], each in range, first <= second */
    K_INTLIST,  /* int *, count at off2 */
    K_ENUM,     /* int index into choices "a|b|c" */
    K_STR,      /* char * */
    K_PATH,     /* char *, resolved against the job's folder */
    K_SEED,     /* uint64_t, integer in 0..2^53 */
    K_DURATION, /* double seconds: number or "1h30m" */
    K_BYTES,    /* int64_t: number or "4G" */
    K_GATES     /* kt_gate *, count at off2 */
} kind;

enum {
    F_MIN_EXCL = 1,  /* min is exclusive */
    F_MAX_EXCL = 2,
    F_NULL = 4,      /* null allowed (paths: none) */
    F_FILE = 8,      /* path must be an existing file */
    F_DIR = 16,      /* path must be an existing folder */
    F_REQUIRED = 32,
    F_FREEZE = 64    /* model.freeze: a cut point name */
};

typedef struct {
    const char *key;
    kind kind;
    size_t off, off2;
    double min, max;
    int flags;
    double def, def2;
    const char *sdef;     /* default string, or the choices of an enum */
} key_def;

#define O(m) offsetof(kt_spec, m)
#define BIG 1e300
#define IMAX 2147483647.0

static const key_def keys[] = {
    {"model", K_OBJ, 0, 0, 0, 0, 0, 0, 0, NULL},
    {"model.weights", K_PATH, O(model.weights), 0, 0, 0, F_FILE | F_REQUIRED, 0, 0, NULL},
    {"model.freeze", K_STR, O(model.freeze), 0, 0, 0, F_FREEZE, 0, 0, "avgpool"},
    {"head", K_OBJ, 0, 0, 0, 0, 0, 0, 0, NULL},
    {"head.hidden", K_INTLIST, O(head.hidden), O(head.nhidden), 1, 65536, 0, 0, 0, NULL},
    {"head.activation", K_ENUM, O(head.activation), 0, 0, 0, 0, KT_ACT_RELU, 0, "relu|gelu|silu|tanh"},
    {"head.dropout", K_NUM, O(head.dropout), 0, 0, 1, F_MAX_EXCL, 0, 0, NULL},
    {"data", K_OBJ, 0, 0, 0, 0, 0, 0, 0, NULL},
    {"data.train", K_PATH, O(data.train), 0, 0, 0, F_DIR | F_REQUIRED, 0, 0, NULL},
    {"data.val", K_PATH, O(data.val), 0, 0, 0, F_DIR | F_NULL, 0, 0, NULL},
    {"data.val_split", K_NUM, O(data.val_split), 0, 0, 1, F_MAX_EXCL, 0.1, 0, NULL},
    {"data.image_size", K_INT, O(data.image_size), 0, 32, 2048, 0, 224, 0, NULL},
    {"data.resize", K_INT, O(data.resize), 0, 32, 4096, 0, 256, 0, NULL},
    {"data.augment", K_OBJ, 0, 0, 0, 0, 0, 0, 0, NULL},
    {"data.augment.flip", K_BOOL, O(data.augment.flip), 0, 0, 0, 0, 1, 0, NULL},
    {"data.augment.random_resized_crop", K_TOGGLE, O(data.augment.random_resized_crop.enabled), 0, 0, 0,
     0, 1, 0, NULL},
    {"data.augment.random_resized_crop.scale", K_PAIR, O(data.augment.random_resized_crop.scale), 0, 0, 1,
     F_MIN_EXCL, 0.08, 1, NULL},
    {"data.augment.random_resized_crop.ratio", K_PAIR, O(data.augment.random_resized_crop.ratio), 0, 0,
     BIG, F_MIN_EXCL, 3.0 / 4.0, 4.0 / 3.0, NULL},
    {"data.augment.color_jitter", K_JITTER, 0, 0, 0, 0, 0, 0, 0, NULL},
    {"data.augment.color_jitter.brightness", K_NUM, O(data.augment.color_jitter.brightness), 0, 0, 1, 0,
     0, 0, NULL},
    {"data.augment.color_jitter.contrast", K_NUM, O(data.augment.color_jitter.contrast), 0, 0, 1, 0, 0,
     0, NULL},
    {"data.augment.color_jitter.saturation", K_NUM, O(data.augment.color_jitter.saturation), 0, 0, 1, 0,
     0, 0, NULL},
    {"data.bad_images", K_ENUM, O(data.bad_images), 0, 0, 0, 0, KT_BAD_SKIP, 0, "skip|fail"},
    {"data.workers", K_INT, O(data.workers), 0, 0, 256, 0, 0, 0, NULL},
    {"data.cached_views", K_INT, O(data.cached_views), 0, 0, 1000, 0, 0, 0, NULL},
    {"train", K_OBJ, 0, 0, 0, 0, 0, 0, 0, NULL},
    {"train.epochs", K_INT, O(train.epochs), 0, 1, 1000000, 0, 10, 0, NULL},
    {"train.batch_size", K_INT, O(train.batch_size), 0, 1, 65536, 0, 32, 0, NULL},
    {"train.optimizer", K_OBJ, 0, 0, 0, 0, 0, 0, 0, NULL},
    {"train.optimizer.name", K_ENUM, O(train.optimizer.name), 0, 0, 0, 0, KT_OPTIM_SGD, 0,
     "sgd|adam|adamw"},
    {"train.optimizer.lr", K_NUM, O(train.optimizer.lr), 0, 0, BIG, F_MIN_EXCL, 0.01, 0, NULL},
    {"train.optimizer.momentum", K_NUM, O(train.optimizer.momentum), 0, 0, 1, F_MAX_EXCL, 0.9, 0, NULL},
    {"train.optimizer.nesterov", K_BOOL, O(train.optimizer.nesterov), 0, 0, 0, 0, 0, 0, NULL},
    {"train.optimizer.weight_decay", K_NUM, O(train.optimizer.weight_decay), 0, 0, BIG, 0, 1e-4, 0, NULL},
    {"train.optimizer.decay_all", K_BOOL, O(train.optimizer.decay_all), 0, 0, 0, 0, 0, 0, NULL},
    {"train.optimizer.betas", K_PAIR, O(train.optimizer.betas), 0, 0, 1, F_MAX_EXCL, 0.9, 0.999, NULL},
    {"train.optimizer.eps", K_NUM, O(train.optimizer.eps), 0, 0, 1, F_MIN_EXCL, 1e-8, 0, NULL},
    {"train.schedule", K_OBJ, 0, 0, 0, 0, 0, 0, 0, NULL},
    {"train.schedule.name", K_ENUM, O(train.schedule.name), 0, 0, 0, 0, KT_SCHED_COSINE, 0,
     "constant|step|cosine"},
    {"train.schedule.warmup_epochs", K_NUM, O(train.schedule.warmup_epochs), 0, 0, BIG, 0, 0, 0, NULL},
    {"train.schedule.step_epochs", K_INT, O(train.schedule.step_epochs), 0, 1, 1000000, 0, 30, 0, NULL},
    {"train.schedule.gamma", K_NUM, O(train.schedule.gamma), 0, 0, 1, F_MIN_EXCL, 0.1, 0, NULL},
    {"train.schedule.min_lr", K_NUM, O(train.schedule.min_lr), 0, 0, BIG, 0, 0, 0, NULL},
    {"train.backbone_lr_mult", K_NUM, O(train.backbone_lr_mult), 0, 0, BIG, 0, 1, 0, NULL},
    {"train.label_smoothing", K_NUM, O(train.label_smoothing), 0, 0, 1, F_MAX_EXCL, 0, 0, NULL},
    {"train.class_weights", K_ENUM, O(train.class_weights), 0, 0, 0, 0, KT_CLASS_WEIGHTS_NONE, 0,
     "none|auto"},
    {"train.early_stopping", K_OBJ, 0, 0, 0, 0, 0, 0, 0, NULL},
    {"train.early_stopping.metric", K_ENUM, O(train.early_stopping.metric), 0, 0, 0, 0, KT_METRIC_VAL_LOSS,
     0, "val_acc|val_loss|train_acc|train_loss"},
    {"train.early_stopping.patience", K_INT, O(train.early_stopping.patience), 0, 0, 1000000, 0, 0, 0,
     NULL},
    {"train.early_stopping.min_delta", K_NUM, O(train.early_stopping.min_delta), 0, 0, BIG, 0, 0, 0, NULL},
    {"train.seed", K_SEED, O(train.seed), 0, 0, 9007199254740992.0, 0, 0, 0, NULL},
    {"train.threads", K_INT, O(train.threads), 0, 0, 1024, 0, 0, 0, NULL},
    {"train.max_time", K_DURATION, O(train.max_time), 0, 0, BIG, 0, 0, 0, NULL},
    {"train.log_every", K_INT, O(train.log_every), 0, 0, IMAX, 0, 20, 0, NULL},
    {"train.gates", K_GATES, O(train.gates), O(train.ngates), 0, 0, 0, 0, 0, NULL},
    {"train.cache_memory", K_BYTES, O(train.cache_memory), 0, 0, 9.2e18, 0, 0, 0, NULL},
    {"train.cache_dir", K_PATH, O(train.cache_dir), 0, 0, 0, F_NULL, 0, 0, NULL},
    {"train.cache_dtype", K_ENUM, O(train.cache_dtype), 0, 0, 0, 0, KT_CACHE_FLOAT32, 0, "float32|float16"},
    {"output", K_OBJ, 0, 0, 0, 0, 0, 0, 0, NULL},
    {"output.dir", K_PATH, O(output.dir), 0, 0, 0, 0, 0, 0, NULL},
    {"output.keep", K_INT, O(output.keep), 0, 0, 1000000, 0, 3, 0, NULL},
    {"output.checkpoint_every", K_DURATION, O(output.checkpoint_every), 0, 0, BIG, 0, 300, 0, NULL},
    {"output.best_metric", K_ENUM, O(output.best_metric), 0, 0, 0, 0, KT_METRIC_VAL_ACC, 0,
     "val_acc|val_loss|train_acc|train_loss"},
};
enum { NKEYS = sizeof keys / sizeof keys[0] };

/* ---- problems ---------------------------------------------------------- */

typedef struct {
    kt_spec *s;
    const char *name; /* job file name for messages */
    int check_paths;
    char *buf;        /* all problems, one per line */
    size_t len, cap;
    int oom;
    unsigned char seen[NKEYS];
} ctx;

static void add_line(ctx *c, const char *line)
{
    size_t need = strlen(line) + 2;
    if (c->len + need > c->cap) {
        size_t cap = (c->cap + need) * 2;
        char *nb = realloc(c->buf, cap);
        if (!nb) {
            c->oom = 1;
            return;
        }
        c->buf = nb, c->cap = cap;
    }
    c->len += (size_t)sprintf(c->buf + c->len, "%s\n", line);
    c->s->nproblems++;
}

/* Adds "name: <message>" to the list of problems. */
static void problem(ctx *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void problem(ctx *c, const char *fmt, ...)
{
    char line[1280];
    int n = snprintf(line, sizeof line, "%s: ", c->name);
    va_list ap;
    va_start(ap, fmt);
    if (n > 0 && (size_t)n < sizeof line)
        vsnprintf(line + n, sizeof line - (size_t)n, fmt, ap);
    va_end(ap);
    add_line(c, line);
}

/* A short rendering of a JSON value for "got ..." in messages. */
static const char *got(const cJSON *v, char *buf, size_t size)
{
    if (cJSON_IsNumber(v))
        snprintf(buf, size, "%.15g", v->valuedouble);
    else if (cJSON_IsString(v))
        snprintf(buf, size, "\"%.60s%s\"", v->valuestring, strlen(v->valuestring) > 60 ? "..." : "");
    else if (cJSON_IsBool(v))
        snprintf(buf, size, "%s", cJSON_IsTrue(v) ? "true" : "false");
    else if (cJSON_IsNull(v))
        snprintf(buf, size, "null");
    else if (cJSON_IsArray(v))
        snprintf(buf, size, "an array");
    else
        snprintf(buf, size, "an object");
    return buf;
}

/* "in 1..4096", "> 0", ">= 0 and < 1" */
static const char *range_text(const key_def *k, char *buf, size_t size)
{
    const char *lo = k->flags & F_MIN_EXCL ? ">" : ">=", *hi = k->flags & F_MAX_EXCL ? "<" : "<=";
    int has_max = k->max < 1e18 && !(k->kind == K_INT && k->max >= IMAX);
    if (k->kind == K_INT || k->kind == K_INTLIST || k->kind == K_SEED) {
        if (has_max)
            snprintf(buf, size, "an integer in %.0f..%.0f", k->min, k->max);
        else
            snprintf(buf, size, "an integer >= %.0f", k->min);
    } else if (has_max) {
        snprintf(buf, size, "a number %s %g and %s %g", lo, k->min, hi, k->max);
    } else {
        snprintf(buf, size, "a number %s %g", lo, k->min);
    }
    return buf;
}

static int in_range(const key_def *k, double v)
{
    if (!isfinite(v))
        return 0;
    if (k->flags & F_MIN_EXCL ? v <= k->min : v < k->min)
        return 0;
    return k->flags & F_MAX_EXCL ? v < k->max : v <= k->max;
}

/* ---- the table --------------------------------------------------------- */

static void *field(kt_spec *s, size_t off) { return (char *)s + off; }
static const void *cfield(const kt_spec *s, size_t off) { return (const char *)s + off; }

static int find_key(const char *path)
{
    for (int i = 0; i < NKEYS; i++)
        if (strcmp(keys[i].key, path) == 0)
            return i;
    return -1;
}

/* Index of choice word in "a|b|c", or -1. */
static int choice_index(const char *choices, const char *word)
{
    size_t n = strlen(word);
    int i = 0;
    for (const char *p = choices;; i++) {
        const char *bar = strchr(p, '|');
        size_t len = bar ? (size_t)(bar - p) : strlen(p);
        if (len == n && memcmp(p, word, n) == 0)
            return i;
        if (!bar)
            return -1;
        p = bar + 1;
    }
}

static const char *choice_at(const char *choices, int i, char *buf, size_t size)
{
    const char *p = choices;
    while (i-- > 0 && p)
        p = strchr(p, '|') ? strchr(p, '|') + 1 : NULL;
    if (!p)
        return "?";
    size_t len = strchr(p, '|') ? (size_t)(strchr(p, '|') - p) : strlen(p);
    snprintf(buf, size, "%.*s", (int)len, p);
    return buf;
}

static char *dupstr(ctx *c, const char *s)
{
    char *d = s ? strdup(s) : NULL;
    if (s && !d)
        c->oom = 1;
    return d;
}

static char *join_dir(ctx *c, const char *path)
{
    const char *dir = c->s->dir;
    if (path[0] == '/' || !dir[0])
        return dupstr(c, path);
    size_t n = strlen(dir) + strlen(path) + 2;
    char *r = malloc(n);
    if (!r) {
        c->oom = 1;
        return NULL;
    }
    snprintf(r, n, "%s%s%s", dir, dir[strlen(dir) - 1] == '/' ? "" : "/", path);
    return r;
}

static void set_defaults(ctx *c, const char *stem)
{
    kt_spec *s = c->s;
    for (int i = 0; i < NKEYS; i++) {
        const key_def *k = &keys[i];
        void *f = field(s, k->off);
        switch (k->kind) {
        case K_TOGGLE:
        case K_BOOL:
        case K_INT:
        case K_ENUM:
            *(int *)f = (int)k->def;
            break;
        case K_NUM:
        case K_DURATION:
            *(double *)f = k->def;
            break;
        case K_PAIR:
            ((double *)f)[0] = k->def, ((double *)f)[1] = k->def2;
            break;
        case K_STR:
            *(char **)f = dupstr(c, k->sdef);
            break;
        case K_SEED:
            *(uint64_t *)f = (uint64_t)k->def;
            break;
        case K_BYTES:
            *(int64_t *)f = (int64_t)k->def;
            break;
        case K_OBJ:
        case K_JITTER:
        case K_INTLIST:
        case K_PATH:
        case K_GATES:
            break; /* zero: empty, NULL */
        }
    }
    /* output.dir defaults to runs/<job name> beside the job file. */
    char out[512];
    snprintf(out, sizeof out, "runs/%s", stem);
    s->output.dir = join_dir(c, out);
}

/* ---- values ------------------------------------------------------------ */

static int get_number(ctx *c, const key_def *k, const char *path, const cJSON *v, double *out)
{
    char g[96], r[96];
    int integral = k->kind == K_INT || k->kind == K_INTLIST || k->kind == K_SEED;
    if (!cJSON_IsNumber(v) || !in_range(k, v->valuedouble) ||
        (integral && v->valuedouble != floor(v->valuedouble))) {
        problem(c, "%s: expected %s, got %s", path, range_text(k, r, sizeof r), got(v, g, sizeof g));
        return 0;
    }
    *out = v->valuedouble;
    return 1;
}

/* "1h30m", "90s", "2.5h", "1d" -> seconds */
static int parse_duration(const char *t, double *out)
{
    double total = 0;
    int parts = 0;
    while (*t) {
        char *end;
        errno = 0;
        double v = strtod(t, &end);
        if (end == t || errno || !isfinite(v) || v < 0)
            return 0;
        double unit = *end == 's' ? 1 : *end == 'm' ? 60 : *end == 'h' ? 3600 : *end == 'd' ? 86400 : 0;
        if (unit == 0)
            return 0;
        total += v * unit;
        t = end + 1;
        parts++;
    }
    *out = total;
    return parts > 0;
}

/* "512M", "4G", "1.5GiB", "100MB" -> bytes (K/M/G/T are powers of 1024) */
static int parse_bytes(const char *t, double *out)
{
    char *end;
    errno = 0;
    double v = strtod(t, &end);
    if (end == t || errno || !isfinite(v) || v < 0)
        return 0;
    const char *units = "KMGT", *u = *end ? strchr(units, *end) : NULL;
    double mult = 1;
    if (u) {
        for (const char *p = units; p <= u; p++)
            mult *= 1024;
        end++;
        if (*end == 'i')
            end++;
    }
    if (*end == 'B')
        end++;
    if (*end)
        return 0;
    *out = floor(v * mult);
    return *out < 9.2e18;
}

/* Names the model code understands (arch.h); the weights decide which blocks
 * exist, here only the form is checked so typos are caught early. */
static int freeze_form_ok(const char *n)
{
    static const char *const fixed[] = {"none", "input", "stem", "avgpool", "logits"};
    int a, b, len = (int)strlen(n), used;
    char ch;
    for (size_t i = 0; i < sizeof fixed / sizeof fixed[0]; i++)
        if (strcmp(n, fixed[i]) == 0)
            return 1;
    if (sscanf(n, "layer%1d%n", &a, &used) == 1 && used == len)
        return a >= 1 && a <= 4;
    if (sscanf(n, "layer%1d.%d%n", &a, &b, &used) == 2 && used == len)
        return a >= 1 && a <= 4 && b >= 0 && strchr(n, '.')[1] >= '0' && strchr(n, '.')[1] <= '9';
    if (sscanf(n, "res%1d%n", &a, &used) == 1 && used == len)
        return a >= 2 && a <= 5;
    if (sscanf(n, "res%1d%c%n", &a, &ch, &used) == 2 && used == len)
        return a >= 2 && a <= 5 && ch >= 'a' && ch <= 'z';
    if (sscanf(n, "conv%1d_block%d_out%n", &a, &b, &used) == 2 && used == len)
        return a >= 2 && a <= 5 && b >= 1 && n[11] >= '1' && n[11] <= '9';
    return 0;
}

static void parse_freeze(ctx *c, const char *path, const cJSON *v)
{
    static const char *const common[] = {"none", "input", "stem", "layer1", "layer2", "layer3", "layer4",
                                         "avgpool", "logits", "res2", "res3", "res4", "res5"};
    char g[96];
    if (!cJSON_IsString(v) || !freeze_form_ok(v->valuestring)) {
        const char *s = cJSON_IsString(v) ? kt_cli_suggest(v->valuestring, common, 13) : NULL;
        problem(c,
                "%s: expected a cut point (\"none\", \"stem\", \"layer1\"..\"layer4\", a block such as "
                "\"layer3.2\", \"avgpool\", or Keras \"res4\", \"res4f\", \"conv4_block6_out\"), got %s%s%s%s",
                path, got(v, g, sizeof g), s ? "; did you mean \"" : "", s ? s : "", s ? "\"?" : "");
        return;
    }
    free(c->s->model.freeze);
    c->s->model.freeze = dupstr(c, v->valuestring);
}

static void parse_path(ctx *c, const key_def *k, const char *path, const cJSON *v)
{
    char g[96];
    char **f = field(c->s, k->off);
    if (cJSON_IsNull(v) && (k->flags & F_NULL)) {
        free(*f);
        *f = NULL;
        return;
    }
    if (!cJSON_IsString(v) || !v->valuestring[0]) {
        problem(c, "%s: expected a %s path%s, got %s", path, k->flags & F_DIR ? "folder" : "file",
                k->flags & F_NULL ? " or null" : "", got(v, g, sizeof g));
        return;
    }
    free(*f);
    *f = join_dir(c, v->valuestring);
    if (!*f || !c->check_paths || !(k->flags & (F_FILE | F_DIR)))
        return;
    struct stat st;
    if (stat(*f, &st) != 0)
        problem(c, "%s: %s: %s", path, *f, strerror(errno));
    else if ((k->flags & F_DIR) && !S_ISDIR(st.st_mode))
        problem(c, "%s: %s: not a folder", path, *f);
    else if ((k->flags & F_FILE) && S_ISDIR(st.st_mode))
        problem(c, "%s: %s: is a folder, expected a file", path, *f);
}

static void parse_intlist(ctx *c, const key_def *k, const char *path, const cJSON *v)
{
    char g[96], sub[160];
    int **list = field(c->s, k->off), *count = field(c->s, k->off2);
    if (!cJSON_IsArray(v)) {
        problem(c, "%s: expected a list of integers, got %s", path, got(v, g, sizeof g));
        return;
    }
    int n = cJSON_GetArraySize(v), i = 0;
    int *a = n ? calloc((size_t)n, sizeof *a) : NULL;
    if (n && !a) {
        c->oom = 1;
        return;
    }
    const cJSON *e;
    cJSON_ArrayForEach(e, v) {
        double d = 0;
        snprintf(sub, sizeof sub, "%.120s[%d]", path, i);
        if (get_number(c, k, sub, e, &d))
            a[i] = (int)d;
        i++;
    }
    free(*list);
    *list = a, *count = n;
}

static void parse_pair(ctx *c, const key_def *k, const char *path, const cJSON *v)
{
    char g[96], sub[160];
    double *p = field(c->s, k->off), d[2] = {0, 0};
    if (!cJSON_IsArray(v) || cJSON_GetArraySize(v) != 2) {
        problem(c, "%s: expected a list of two numbers [low, high], got %s", path, got(v, g, sizeof g));
        return;
    }
    int ok = 1;
    for (int i = 0; i < 2; i++) {
        snprintf(sub, sizeof sub, "%.120s[%d]", path, i);
        ok &= get_number(c, k, sub, cJSON_GetArrayItem(v, i), &d[i]);
    }
    if (ok && d[0] > d[1]) {
        problem(c, "%s: expected low <= high, got [%g, %g]", path, d[0], d[1]);
        return;
    }
    if (ok)
        p[0] = d[0], p[1] = d[1];
}

static void parse_gates(ctx *c, const key_def *k, const char *path, const cJSON *v)
{
    char g[96];
    kt_gate **gates = field(c->s, k->off);
    int *count = field(c->s, k->off2);
    if (!cJSON_IsObject(v)) {
        problem(c, "%s: expected an object such as {\"val_acc\": 0.9}, got %s", path, got(v, g, sizeof g));
        return;
    }
    int n = cJSON_GetArraySize(v), m = 0;
    kt_gate *a = n ? calloc((size_t)n, sizeof *a) : NULL;
    if (n && !a) {
        c->oom = 1;
        return;
    }
    const cJSON *e;
    cJSON_ArrayForEach(e, v) {
        int idx = -1;
        for (int i = 0; i < 4; i++)
            if (strcmp(e->string, metric_names[i]) == 0)
                idx = i;
        if (idx < 0) {
            const char *s = kt_cli_suggest(e->string, metric_names, 4);
            problem(c, "%s.%s: unknown metric (val_acc, val_loss, train_acc, train_loss)%s%s%s", path,
                    e->string, s ? "; did you mean '" : "", s ? s : "", s ? "'?" : "");
            continue;
        }
        int acc = kt_spec_metric_higher((kt_metric)idx);
        key_def r = {NULL, K_NUM, 0, 0, 0, acc ? 1 : BIG, 0, 0, 0, NULL};
        char sub[160];
        double d;
        snprintf(sub, sizeof sub, "%.60s.%.60s", path, e->string);
        for (int j = 0; j < m; j++)
            if (a[j].metric == (kt_metric)idx)
                problem(c, "%s: duplicate key", sub);
        if (get_number(c, &r, sub, e, &d))
            a[m].metric = (kt_metric)idx, a[m++].value = d;
    }
    free(*gates);
    *gates = a, *count = m;
}

static void parse_value(ctx *c, const key_def *k, const char *path, const cJSON *v)
{
    char g[96];
    void *f = field(c->s, k->off);
    double d;

    switch (k->kind) {
    case K_BOOL:
        if (!cJSON_IsBool(v))
            problem(c, "%s: expected true or false, got %s", path, got(v, g, sizeof g));
        else
            *(int *)f = cJSON_IsTrue(v);
        break;
    case K_INT:
        if (get_number(c, k, path, v, &d))
            *(int *)f = (int)d;
        break;
    case K_NUM:
        if (get_number(c, k, path, v, &d))
            *(double *)f = d;
        break;
    case K_SEED:
        if (get_number(c, k, path, v, &d))
            *(uint64_t *)f = (uint64_t)d;
        break;
    case K_PAIR:
        parse_pair(c, k, path, v);
        break;
    case K_INTLIST:
        parse_intlist(c, k, path, v);
        break;
    case K_ENUM: {
        int idx = cJSON_IsString(v) ? choice_index(k->sdef, v->valuestring) : -1;
        if (idx >= 0) {
            *(int *)f = idx;
            break;
        }
        /* "a|b|c" -> names[] and the list "\"a\", \"b\", \"c\"" for the message */
        const char *names[8];
        char nb[8][32], list[256] = "";
        int n = 0;
        for (; n < 8 && choice_index(k->sdef, choice_at(k->sdef, n, nb[n], sizeof nb[n])) == n; n++) {
            names[n] = nb[n];
            size_t used = strlen(list);
            snprintf(list + used, sizeof list - used, "%s\"%s\"", n ? ", " : "", nb[n]);
        }
        const char *sug = cJSON_IsString(v) ? kt_cli_suggest(v->valuestring, names, n) : NULL;
        problem(c, "%s: expected one of %s, got %s%s%s%s", path, list, got(v, g, sizeof g),
                sug ? "; did you mean \"" : "", sug ? sug : "", sug ? "\"?" : "");
        break;
    }
    case K_STR:
        if (k->flags & F_FREEZE) {
            parse_freeze(c, path, v);
        } else if (!cJSON_IsString(v)) {
            problem(c, "%s: expected a string, got %s", path, got(v, g, sizeof g));
        } else {
            free(*(char **)f);
            *(char **)f = dupstr(c, v->valuestring);
        }
        break;
    case K_PATH:
        parse_path(c, k, path, v);
        break;
    case K_DURATION:
        if (cJSON_IsString(v) && parse_duration(v->valuestring, &d))
            *(double *)f = d;
        else if (cJSON_IsNumber(v) && in_range(k, v->valuedouble))
            *(double *)f = v->valuedouble;
        else
            problem(c, "%s: expected seconds >= 0 or a duration such as \"90s\", \"30m\", \"1h30m\", got %s",
                    path, got(v, g, sizeof g));
        break;
    case K_BYTES:
        if (cJSON_IsString(v) && parse_bytes(v->valuestring, &d))
            *(int64_t *)f = (int64_t)d;
        else if (cJSON_IsNumber(v) && in_range(k, v->valuedouble) && v->valuedouble == floor(v->valuedouble))
            *(int64_t *)f = (int64_t)v->valuedouble;
        else
            problem(c, "%s: expected bytes >= 0 or a size such as \"512M\", \"4G\", got %s", path,
                    got(v, g, sizeof g));
        break;
    case K_GATES:
        parse_gates(c, k, path, v);
        break;
    case K_OBJ:
    case K_TOGGLE:
    case K_JITTER:
        break; /* handled by parse_object */
    }
}

/* ---- objects ----------------------------------------------------------- */

static void unknown_key(ctx *c, const char *parent, const char *name)
{
    const char *cands[NKEYS];
    size_t plen = strlen(parent);
    int n = 0;
    /* Siblings first: the usual typo. */
    for (int i = 0; i < NKEYS; i++) {
        const char *k = keys[i].key;
        const char *rest = plen ? (strncmp(k, parent, plen) == 0 && k[plen] == '.' ? k + plen + 1 : NULL) : k;
        if (rest && !strchr(rest, '.'))
            cands[n++] = rest;
    }
    const char *s = kt_cli_suggest(name, cands, n);
    const char *sep = plen ? "." : "";
    if (s) {
        problem(c, "%s%s%s: unknown key; did you mean '%s%s%s'?", parent, sep, name, parent, sep, s);
        return;
    }
    /* Then the same name in another section: a key put in the wrong place. */
    for (int i = 0; i < NKEYS; i++) {
        const char *dot = strrchr(keys[i].key, '.');
        if (strcmp(dot ? dot + 1 : keys[i].key, name) == 0) {
            problem(c, "%s%s%s: unknown key here; did you mean '%s'?", parent, sep, name, keys[i].key);
            return;
        }
    }
    problem(c, "%s%s%s: unknown key", parent, sep, name);
}

static void parse_object(ctx *c, const char *parent, const cJSON *obj)
{
    const cJSON *v;
    cJSON_ArrayForEach(v, obj) {
        char path[256];
        snprintf(path, sizeof path, "%s%s%s", parent, parent[0] ? "." : "", v->string);
        int dup = 0;
        for (const cJSON *p = obj->child; p != v; p = p->next)
            dup |= strcmp(p->string, v->string) == 0;
        if (dup) {
            problem(c, "%s: duplicate key", path);
            continue;
        }
        int i = find_key(path);
        if (i < 0) {
            unknown_key(c, parent, v->string);
            continue;
        }
        const key_def *k = &keys[i];
        char g[96];
        c->seen[i] = 1;
        if (k->kind == K_OBJ) {
            if (!cJSON_IsObject(v))
                problem(c, "%s: expected an object, got %s", path, got(v, g, sizeof g));
            else
                parse_object(c, path, v);
        } else if (k->kind == K_TOGGLE || k->kind == K_JITTER) {
            if (cJSON_IsObject(v)) {
                if (k->kind == K_TOGGLE)
                    *(int *)field(c->s, k->off) = 1;
                parse_object(c, path, v);
            } else if (cJSON_IsBool(v)) {
                if (k->kind == K_TOGGLE) {
                    *(int *)field(c->s, k->off) = cJSON_IsTrue(v);
                } else {
                    double x = cJSON_IsTrue(v) ? 0.4 : 0;
                    c->s->data.augment.color_jitter.brightness = x;
                    c->s->data.augment.color_jitter.contrast = x;
                    c->s->data.augment.color_jitter.saturation = x;
                }
            } else {
                problem(c, "%s: expected true, false or an object, got %s", path, got(v, g, sizeof g));
            }
        } else {
            parse_value(c, k, path, v);
        }
    }
}

/* Checks that need several keys at once. */
static void cross_checks(ctx *c)
{
    kt_spec *s = c->s;
    int has_val;
    for (int i = 0; i < NKEYS; i++)
        if ((keys[i].flags & F_REQUIRED) && !c->seen[i])
            problem(c, "%s: missing; this key is required", keys[i].key);
    if (s->data.val && c->seen[find_key("data.val_split")] && s->data.val_split > 0)
        problem(c, "data.val_split: cannot be used together with data.val (choose one)");
    if (s->data.val)
        s->data.val_split = 0;
    has_val = s->data.val || s->data.val_split > 0;

    if (!c->seen[find_key("data.resize")])
        s->data.resize = (int)lround(s->data.image_size * 256.0 / 224.0);
    else if (s->data.resize < s->data.image_size)
        problem(c, "data.resize: expected >= data.image_size (%d), got %d", s->data.image_size,
                s->data.resize);

    if (s->train.optimizer.nesterov &&
        (s->train.optimizer.name != KT_OPTIM_SGD || s->train.optimizer.momentum <= 0))
        problem(c, "train.optimizer.nesterov: needs optimizer \"sgd\" with momentum > 0");
    if (s->train.schedule.warmup_epochs > s->train.epochs)
        problem(c, "train.schedule.warmup_epochs: expected <= train.epochs (%d), got %g", s->train.epochs,
                s->train.schedule.warmup_epochs);
    if (s->train.schedule.name == KT_SCHED_COSINE && s->train.schedule.min_lr > s->train.optimizer.lr)
        problem(c, "train.schedule.min_lr: expected <= train.optimizer.lr (%g), got %g", s->train.optimizer.lr,
                s->train.schedule.min_lr);

    /* Metrics on validation data need validation data. Left to defaults, they
     * quietly fall back to the training metric; asked for, it is an error. */
    struct { const char *key; kt_metric *m; } mk[] = {
        {"train.early_stopping.metric", &s->train.early_stopping.metric},
        {"output.best_metric", &s->output.best_metric},
    };
    for (int i = 0; i < 2; i++) {
        int val_metric = *mk[i].m == KT_METRIC_VAL_ACC || *mk[i].m == KT_METRIC_VAL_LOSS;
        if (has_val || !val_metric)
            continue;
        if (c->seen[find_key(mk[i].key)])
            problem(c, "%s: \"%s\" needs validation data (data.val or data.val_split > 0)", mk[i].key,
                    metric_names[*mk[i].m]);
        else
            *mk[i].m = *mk[i].m == KT_METRIC_VAL_ACC ? KT_METRIC_TRAIN_ACC : KT_METRIC_TRAIN_LOSS;
    }
    for (int i = 0; i < s->train.ngates && !has_val; i++)
        if (s->train.gates[i].metric == KT_METRIC_VAL_ACC || s->train.gates[i].metric == KT_METRIC_VAL_LOSS)
            problem(c, "train.gates.%s: needs validation data (data.val or data.val_split > 0)",
                    metric_names[s->train.gates[i].metric]);
}

/* ---- syntax errors ----------------------------------------------------- */

typedef struct {
    const char *t;
    size_t n, pos;
    const char *why; /* first error found */
} loc;

static void ws(loc *l)
{
    while (l->pos < l->n && strchr(" \t\r\n", l->t[l->pos]))
        l->pos++;
}

static int fail(loc *l, const char *why)
{
    l->why = l->pos >= l->n ? "unexpected end of file" : why;
    return 0;
}

static int lit(loc *l, const char *w)
{
    size_t n = strlen(w);
    if (l->n - l->pos < n || memcmp(l->t + l->pos, w, n) != 0)
        return fail(l, "expected a value (object, array, string, number, true, false or null)");
    l->pos += n;
    return 1;
}

static int str(loc *l)
{
    l->pos++; /* opening quote */
    while (l->pos < l->n && l->t[l->pos] != '"') {
        unsigned char ch = (unsigned char)l->t[l->pos];
        if (ch < 0x20)
            return fail(l, "control character or line break inside a string (missing '\"'?)");
        if (ch == '\\') {
            l->pos++;
            if (l->pos >= l->n || !strchr("\"\\/bfnrtu", l->t[l->pos]))
                return fail(l, "invalid escape in a string");
        }
        l->pos++;
    }
    if (l->pos >= l->n)
        return fail(l, "unterminated string");
    l->pos++;
    return 1;
}

static int num(loc *l)
{
    size_t p = l->pos;
    const char *t = l->t;
    if (p < l->n && t[p] == '-')
        p++;
    if (p >= l->n || t[p] < '0' || t[p] > '9')
        return l->pos = p, fail(l, "invalid number");
    if (t[p] == '0')
        p++;
    else
        while (p < l->n && t[p] >= '0' && t[p] <= '9')
            p++;
    if (p < l->n && t[p] == '.') {
        p++;
        if (p >= l->n || t[p] < '0' || t[p] > '9')
            return l->pos = p, fail(l, "invalid number: digits expected after '.'");
        while (p < l->n && t[p] >= '0' && t[p] <= '9')
            p++;
    }
    if (p < l->n && (t[p] == 'e' || t[p] == 'E')) {
        p++;
        if (p < l->n && (t[p] == '+' || t[p] == '-'))
            p++;
        if (p >= l->n || t[p] < '0' || t[p] > '9')
            return l->pos = p, fail(l, "invalid number: digits expected in the exponent");
        while (p < l->n && t[p] >= '0' && t[p] <= '9')
            p++;
    }
    l->pos = p;
    return 1;
}

static int value(loc *l, int depth)
{
    ws(l);
    if (depth > 200)
        return fail(l, "nested too deeply");
    if (l->pos >= l->n)
        return fail(l, "");
    char ch = l->t[l->pos];
    if (ch == '{' || ch == '[') {
        char close = ch == '{' ? '}' : ']';
        l->pos++;
        ws(l);
        if (l->pos < l->n && l->t[l->pos] == close)
            return l->pos++, 1;
        for (;;) {
            if (ch == '{') {
                ws(l);
                if (l->pos >= l->n || l->t[l->pos] != '"')
                    return fail(l, "expected a key in double quotes");
                if (!str(l))
                    return 0;
                ws(l);
                if (l->pos >= l->n || l->t[l->pos] != ':')
                    return fail(l, "expected ':' after the key");
                l->pos++;
            }
            if (!value(l, depth + 1))
                return 0;
            ws(l);
            if (l->pos < l->n && l->t[l->pos] == close)
                return l->pos++, 1;
            if (l->pos >= l->n || l->t[l->pos] != ',')
                return fail(l, ch == '{' ? "expected ',' or '}' after an object member"
                                         : "expected ',' or ']' after an array element");
            l->pos++;
            ws(l);
            if (l->pos < l->n && l->t[l->pos] == close)
                return fail(l, "trailing comma (JSON allows none)");
        }
    }
    if (ch == '"')
        return str(l);
    if (ch == '-' || (ch >= '0' && ch <= '9'))
        return num(l);
    if (ch == 't')
        return lit(l, "true");
    if (ch == 'f')
        return lit(l, "false");
    if (ch == 'n')
        return lit(l, "null");
    if (ch == '/')
        return fail(l, "comments are not allowed in JSON");
    return fail(l, "expected a value (object, array, string, number, true, false or null)");
}

/* Finds the first syntax error of text and reports it as name:line:col. */
static void syntax_problem(ctx *c, const char *text, size_t n)
{
    loc l = {text, n, 0, NULL};
    if (value(&l, 0)) {
        ws(&l);
        if (l.pos < l.n)
            l.why = "unexpected text after the end of the JSON value";
        else
            l.why = "not valid JSON"; /* cJSON refused what the checker accepts: e.g. a NUL byte */
    }
    int line = 1, col = 1;
    for (size_t i = 0; i < l.pos && i < n; i++) {
        if (text[i] == '\n')
            line++, col = 1;
        else if (((unsigned char)text[i] & 0xC0) != 0x80) /* count characters, not UTF-8 bytes */
            col++;
    }
    /* "name:line:col: ..." like a compiler's message, so editors can jump to it. */
    char line_text[1024];
    snprintf(line_text, sizeof line_text, "%s:%d:%d: syntax error: %s", c->name, line, col, l.why);
    add_line(c, line_text);
}

/* ---- entry points ------------------------------------------------------ */

static kt_status finish(ctx *c, kt_err *err)
{
    kt_spec *s = c->s;
    if (c->oom) {
        free(c->buf);
        return kt_err_set(err, KT_ERR_RUNTIME, "%s: out of memory", c->name);
    }
    if (!s->nproblems) {
        free(c->buf);
        return KT_OK;
    }
    s->problems = c->buf;
    /* err->msg gets as many whole lines as fit, then a count of the rest. */
    size_t used = 0, room = sizeof err->msg - 64;
    int shown = 0;
    for (const char *p = s->problems; *p && shown < s->nproblems; shown++) {
        const char *nl = strchr(p, '\n');
        size_t len = (size_t)(nl - p);
        if (used + len + 1 > room)
            break;
        memcpy(err->msg + used, p, len);
        used += len;
        err->msg[used++] = '\n';
        p = nl + 1;
    }
    if (shown < s->nproblems)
        snprintf(err->msg + used, sizeof err->msg - used, "%d more problems: run 'kt validate %.200s'",
                 s->nproblems - shown, c->name);
    else
        err->msg[used ? used - 1 : 0] = '\0'; /* drop the last newline */
    err->status = KT_ERR_USAGE;
    return KT_ERR_USAGE;
}

kt_status kt_spec_parse(kt_spec *s, const char *text, const char *name, const char *dir, int check_paths,
                        kt_err *err)
{
    ctx c;
    memset(s, 0, sizeof *s);
    memset(&c, 0, sizeof c);
    c.s = s, c.name = name, c.check_paths = check_paths;
    s->path = dupstr(&c, name);
    s->dir = dupstr(&c, dir ? dir : "");
    if (c.oom)
        return finish(&c, err);

    /* output.dir default: runs/<file name without directory and extension> */
    char stem[256];
    const char *base = strrchr(name, '/') ? strrchr(name, '/') + 1 : name;
    snprintf(stem, sizeof stem, "%s", base[0] ? base : "job");
    char *dot = strrchr(stem, '.');
    if (dot && dot != stem)
        *dot = '\0';
    set_defaults(&c, stem);

    size_t n = strlen(text);
    cJSON *root = cJSON_ParseWithOpts(text, NULL, 1);
    if (!root) {
        syntax_problem(&c, text, n);
        return finish(&c, err);
    }
    if (!cJSON_IsObject(root)) {
        problem(&c, "expected a JSON object { \"model\": ..., \"data\": ..., ... } at the top");
    } else {
        parse_object(&c, "", root);
        cross_checks(&c);
    }
    cJSON_Delete(root);
    return finish(&c, err);
}

kt_status kt_spec_load(kt_spec *s, const char *path, kt_err *err)
{
    memset(s, 0, sizeof *s);
    FILE *f = fopen(path, "rb");
    struct stat st;
    if (!f)
        return kt_err_set(err, KT_ERR_USAGE, "%s: %s", path, strerror(errno));
    if (fstat(fileno(f), &st) == 0 && S_ISDIR(st.st_mode)) {
        fclose(f);
        return kt_err_set(err, KT_ERR_USAGE, "%s: is a folder, expected a JSON job file", path);
    }
    char *text = NULL;
    size_t len = 0, cap = 0;
    for (;;) {
        if (len + 4096 + 1 > cap) {
            cap = (cap + 4096) * 2;
            char *nt = realloc(text, cap);
            if (!nt) {
                free(text);
                fclose(f);
                return kt_err_set(err, KT_ERR_RUNTIME, "%s: out of memory", path);
            }
            text = nt;
        }
        size_t got_n = fread(text + len, 1, cap - len - 1, f);
        len += got_n;
        if (got_n == 0)
            break;
    }
    int bad = ferror(f);
    fclose(f);
    if (bad) {
        free(text);
        return kt_err_set(err, KT_ERR_RUNTIME, "%s: read error", path);
    }
    text[len] = '\0';
    if (strlen(text) != len) {
        free(text);
        return kt_err_set(err, KT_ERR_USAGE, "%s: not a JSON text (contains a NUL byte)", path);
    }
    /* The job's folder as an absolute path: the resolved spec then means the
     * same from any working directory (it is stored in checkpoints). */
    char dir[4096], *abs;
    const char *slash = strrchr(path, '/');
    snprintf(dir, sizeof dir, "%.*s", slash ? (int)(slash == path ? 1 : slash - path) : 1, slash ? path : ".");
    abs = realpath(dir, NULL);
    if (abs) {
        snprintf(dir, sizeof dir, "%s", abs);
        free(abs);
    }
    kt_status status = kt_spec_parse(s, text, path, dir, 1, err);
    free(text);
    return status;
}

/* ---- output ------------------------------------------------------------ */

static cJSON *json_value(const kt_spec *s, const key_def *k)
{
    const void *f = cfield(s, k->off);
    char cb[32];
    switch (k->kind) {
    case K_OBJ:
    case K_JITTER:
        return cJSON_CreateObject();
    case K_TOGGLE:
        return *(const int *)f ? cJSON_CreateObject() : cJSON_CreateFalse();
    case K_BOOL:
        return cJSON_CreateBool(*(const int *)f);
    case K_INT:
        return cJSON_CreateNumber(*(const int *)f);
    case K_NUM:
    case K_DURATION:
        return cJSON_CreateNumber(*(const double *)f);
    case K_SEED:
        return cJSON_CreateNumber((double)*(const uint64_t *)f);
    case K_BYTES:
        return cJSON_CreateNumber((double)*(const int64_t *)f);
    case K_PAIR:
        return cJSON_CreateDoubleArray((const double *)f, 2);
    case K_INTLIST: {
        int n = *(const int *)cfield(s, k->off2);
        return n ? cJSON_CreateIntArray(*(int *const *)f, n) : cJSON_CreateArray();
    }
    case K_ENUM:
        return cJSON_CreateString(choice_at(k->sdef, *(const int *)f, cb, sizeof cb));
    case K_STR:
    case K_PATH:
        return *(char *const *)f ? cJSON_CreateString(*(char *const *)f) : cJSON_CreateNull();
    case K_GATES: {
        cJSON *o = cJSON_CreateObject();
        const kt_gate *g = *(kt_gate *const *)f;
        for (int i = 0; o && i < *(const int *)cfield(s, k->off2); i++)
            if (!cJSON_AddNumberToObject(o, metric_names[g[i].metric], g[i].value)) {
                cJSON_Delete(o);
                return NULL;
            }
        return o;
    }
    }
    return NULL;
}

/* Growable text buffer for the printer; ok drops to 0 on out of memory. */
typedef struct {
    char *p;
    size_t len, cap;
    int ok;
} text;

static void put(text *t, const char *s)
{
    size_t n = strlen(s);
    if (!t->ok)
        return;
    if (t->len + n + 1 > t->cap) {
        size_t cap = (t->len + n + 1) * 2;
        char *np = realloc(t->p, cap);
        if (!np) {
            t->ok = 0;
            return;
        }
        t->p = np, t->cap = cap;
    }
    memcpy(t->p + t->len, s, n + 1);
    t->len += n;
}

/* Two-space indented JSON, scalar arrays on one line: cJSON's own pretty
 * printer uses tabs, which read badly in terminals and diffs. */
static void print_json(text *t, const cJSON *v, int depth)
{
    static const char pad[] = "                                                  ";
    int inline_arr = cJSON_IsArray(v);
    const cJSON *e;
    cJSON_ArrayForEach(e, v) inline_arr &= !cJSON_IsObject(e) && !cJSON_IsArray(e);
    if (!cJSON_IsObject(v) && !cJSON_IsArray(v)) {
        char *leaf = cJSON_PrintUnformatted(v);
        if (!leaf)
            t->ok = 0;
        else
            put(t, leaf);
        free(leaf);
        return;
    }
    put(t, cJSON_IsObject(v) ? "{" : "[");
    cJSON_ArrayForEach(e, v) {
        put(t, e == v->child ? "" : ",");
        if (!inline_arr) {
            put(t, "\n");
            put(t, pad + sizeof pad - 1 - (size_t)(2 * (depth + 1) < 50 ? 2 * (depth + 1) : 50));
        } else if (e != v->child) {
            put(t, " ");
        }
        if (cJSON_IsObject(v)) {
            cJSON key = {0};
            key.type = cJSON_String;
            key.valuestring = e->string;
            print_json(t, &key, depth + 1);
            put(t, ": ");
        }
        print_json(t, e, depth + 1);
    }
    if (!inline_arr && v->child) {
        put(t, "\n");
        put(t, pad + sizeof pad - 1 - (size_t)(2 * depth < 50 ? 2 * depth : 50));
    }
    put(t, cJSON_IsObject(v) ? "}" : "]");
}

char *kt_spec_to_json(const kt_spec *s)
{
    cJSON *node[NKEYS] = {0};
    cJSON *root = cJSON_CreateObject();
    text t = {NULL, 0, 0, 1};
    if (!root)
        return NULL;
    for (int i = 0; i < NKEYS; i++) {
        const key_def *k = &keys[i];
        const char *dot = strrchr(k->key, '.');
        cJSON *parent = root;
        if (dot) {
            char pk[128];
            snprintf(pk, sizeof pk, "%.*s", (int)(dot - k->key), k->key);
            parent = node[find_key(pk)];
            if (!parent || !cJSON_IsObject(parent))
                continue; /* under a disabled toggle */
        }
        node[i] = json_value(s, k);
        if (!node[i])
            goto fail;
        cJSON_AddItemToObject(parent, dot ? dot + 1 : k->key, node[i]);
    }
    print_json(&t, root, 0);
fail:
    cJSON_Delete(root);
    if (!t.ok || !t.p) {
        free(t.p);
        return NULL;
    }
    return t.p;
}

void kt_spec_free(kt_spec *s)
{
    if (!s)
        return;
    for (int i = 0; i < NKEYS; i++)
        if (keys[i].kind == K_STR || keys[i].kind == K_PATH || keys[i].kind == K_INTLIST ||
            keys[i].kind == K_GATES)
            free(*(void **)field(s, keys[i].off));
    free(s->path);
    free(s->dir);
    free(s->problems);
    memset(s, 0, sizeof *s);
}

const char *kt_spec_metric_name(kt_metric m) { return metric_names[m]; }
int kt_spec_metric_higher(kt_metric m) { return m == KT_METRIC_VAL_ACC || m == KT_METRIC_TRAIN_ACC; }
const char *kt_spec_activation_name(kt_activation a) { return act_names[a]; }
const char *kt_spec_optim_name(kt_optim_name o) { return optim_names[o]; }
const char *kt_spec_sched_name(kt_sched_name s) { return sched_names[s]; }

int kt_spec_key_count(void) { return NKEYS; }

const char *kt_spec_key_at(int i, const char **kindname)
{
    static const char *const names[] = {
        [K_OBJ] = "object", [K_TOGGLE] = "true, false or object", [K_JITTER] = "true, false or object",
        [K_BOOL] = "true|false", [K_INT] = "integer", [K_NUM] = "number", [K_PAIR] = "[number, number]",
        [K_INTLIST] = "[integer, ...]", [K_ENUM] = NULL, [K_STR] = "string", [K_PATH] = "path",
        [K_SEED] = "integer", [K_DURATION] = "seconds or \"1h30m\"", [K_BYTES] = "bytes or \"4G\"",
        [K_GATES] = "{metric: number}"};
    if (i < 0 || i >= NKEYS)
        return NULL;
    if (kindname)
        *kindname = keys[i].kind == K_ENUM ? keys[i].sdef : names[keys[i].kind];
    return keys[i].key;
}
