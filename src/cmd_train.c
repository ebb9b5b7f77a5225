/* cmd_train.c - "kt train JOB": fine-tunes the network a job spec describes.
 * Glue only: the math is in resnet/head/ops/optim, the files in checkpoint/
 * metrics, the images in dataset/loader.
 *
 * Position and resume. Everything a step does is a function of (seed, global
 * step): the loader's batch k of epoch e is fixed by (seed, e, k), dropout by
 * (seed, step), the learning rate by the step. So the state to save is small:
 * the weights, BN statistics, optimizer moments, and the position (epoch,
 * batches done), plus the epoch's running train metrics so its summary line
 * is the same too. last.safetensors holds all of it; a resumed run with the
 * same thread count continues bit-identically (BLAS results depend on the
 * thread count, nothing else here does). Running the same job again continues
 * an unfinished run in output.dir (and only re-checks a finished one), so cron
 * and CI need no special case; --force starts over.
 *
 * Between epochs, last.safetensors is also refreshed every
 * output.checkpoint_every (5 minutes by default) of training, so a kill -9
 * loses at most that much work.
 *
 * Stopping. SIGINT/SIGTERM and train.max_time set a flag checked after each
 * step: the step in flight finishes, last.safetensors is written, and the
 * status is KT_ERR_INTERRUPTED (75). A NaN/Inf loss stops before the update
 * and leaves the last checkpoint alone (KT_ERR_DIVERGED). Checkpoint writes
 * are atomic, so kill -9 at any moment leaves the previous one.
 *
 * Memory: every buffer of the step is planned before the loop (network,
 * head, optimizer, loader batches, the gradients here); step-level log lines
 * are formatted into a fixed buffer. Per-epoch work (validation, checkpoints,
 * JSON) may allocate.
 */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "arch.h"
#include "blas.h"
#include "cache.h"
#include "checkpoint.h"
#include "cli.h"
#include "commands.h"
#include "dataset.h"
#include "fsutil.h"
#include "head.h"
#include "loader.h"
#include "metrics.h"
#include "ops.h"
#include "optim.h"
#include "resnet.h"
#include "spec.h"
#include "weights.h"

/* Signal that asked the run to stop (0: none). */
static volatile sig_atomic_t g_signal;

/* The first signal asks for a clean stop; a second one (an impatient Ctrl-C)
 * ends the process at once, which is safe because checkpoint writes are
 * atomic. */
static void on_signal(int sig)
{
    if (g_signal) {
        signal(sig, SIG_DFL);
        raise(sig);
    }
    g_signal = sig;
}

typedef struct {
    double value;           /* of the chosen metric */
    int epoch;              /* 1-based; 0 = none yet */
    double val_acc, val_loss, train_acc, train_loss;
} best_state;

typedef struct {
    /* command line */
    const char *job;
    int resume_flag, force, quiet, events, threads, no_cache;
    int resume;                 /* continuing the run in output.dir (found there, or --resume) */

    kt_spec spec;
    char *spec_json;            /* resolved spec (kt_spec_to_json), owned */

    kt_dataset all, train, val; /* train/val are split from all, or train = all */
    int split, has_val;

    kt_weights *w;              /* the job's model.weights */
    kt_arch *arch;
    kt_resnet *net;
    kt_head *head;
    kt_optim *opt;
    kt_ckpt *ckpt;
    kt_param **params;          /* [nparams] backbone's then head's */
    int nparams;
    int freeze, stop, backbone;  /* cut point, avgpool point, 1: layers after the cut train */
    char cut[64];
    int k;                      /* classes */
    float *dfeat;               /* [batch][features] */
    float *dlogits;             /* [batch][k] */
    float *class_w;             /* [k] or NULL */
    kt_schedule sched;
    int bpe;                    /* batches per epoch */
    kt_metric best_metric;      /* output.best_metric, moved to train_* without val */
    kt_metric es_metric;

    /* position and state saved in checkpoints */
    int epoch, batch;           /* epoch in progress (0-based), batches of it done */
    int64_t step;               /* global steps done */
    int64_t step0;              /* ... when this session started */
    kt_metrics tm, vm;          /* epoch's train metrics so far; last validation */
    best_state best;
    double es_best;
    int es_bad, es_started;
    int finished;               /* 1: epochs done or stopped early */
    char finished_why[32];
    double elapsed_before;      /* seconds spent in earlier sessions */
    uint64_t weights_sum, data_sum, frozen_sum;
    char (*frozen_names)[64];   /* [nfrozen] sorted, owned */
    int nfrozen;

    /* the frozen part's activations, when they can be cached (cache.h) */
    kt_cache *cache, *val_cache;
    char cache_dir[4096];

    /* this session */
    double ckpt_every;          /* seconds between mid-epoch saves of last */
    double last_save;           /* now() of the last save of last */
    kt_metrics_log *log;
    kt_progress prog;
    double t0, loop_t0;         /* start of the session, of its first step */
    int64_t images, skipped;
    double wait_s;
    double train_s;             /* in training steps (data wait included; validation
                                 * and checkpoints not) */
    double ep_train_s;          /* ... during the current epoch */
    double step_s;              /* the last step's forward, backward and update */
    int64_t ep_images;
    char line[1024];            /* step log line, formatted without allocating */
    int lock_fd;                /* output.dir/.kt-lock, held while running; -1 none */
    char dir[4096];
} trainer;

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void out_path(const trainer *t, char *buf, size_t size, const char *name)
{
    snprintf(buf, size, "%s/%s", t->dir, name);
}

/* Warnings show even with --quiet (which silences progress and summaries);
 * a live progress line is cleared first. */
static void warnf(trainer *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void warnf(trainer *t, const char *fmt, ...)
{
    va_list ap;
    if (t->prog.live)
        fputs("\r\033[K", stderr);
    t->prog.live = 0;
    fputs("kt: warning: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}

/* ---- small file helpers ---------------------------------------------------- */

/* Writes text to path through path.tmp + rename, so readers never see half a file. */
static kt_status write_text(const char *path, const char *text, kt_err *err)
{
    char tmp[4300];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    FILE *f = fopen(tmp, "w");
    if (!f)
        return kt_err_set(err, KT_ERR_RUNTIME, "%s: %s", tmp, strerror(errno));
    int bad = fputs(text, f) < 0;
    bad |= fflush(f) != 0 || fsync(fileno(f)) != 0;
    bad |= fclose(f) != 0;
    if (bad || rename(tmp, path) != 0) {
        unlink(tmp);
        return kt_err_set(err, KT_ERR_RUNTIME, "%s: %s", path, strerror(errno));
    }
    return KT_OK;
}

static int file_exists(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0;
}

/* FNV-1a over the sample list: relative path, label, size and mtime of each
 * file. Resuming on data that changed would silently break the promise of
 * the same order and the same result, so it is refused. */
static uint64_t fnv(uint64_t h, const void *p, size_t n)
{
    const unsigned char *b = p;
    for (size_t i = 0; i < n; i++)
        h = (h ^ b[i]) * 0x100000001b3ull;
    return h;
}

static uint64_t data_checksum(const kt_dataset *ds, uint64_t h)
{
    for (int i = 0; i < ds->n; i++) {
        struct stat st;
        int64_t meta[3] = {ds->labels[i], 0, 0};
        if (stat(ds->paths[i], &st) == 0)
            meta[1] = st.st_size, meta[2] = st.st_mtime;
        h = fnv(h, ds->rel[i], strlen(ds->rel[i]) + 1);
        h = fnv(h, meta, sizeof meta);
    }
    return h;
}

/* ---- events: metrics.jsonl lines, --json-events on stdout ------------------- */

static kt_status emit(trainer *t, cJSON *o, int to_log, kt_err *err)
{
    kt_status st = KT_OK;
    if (to_log && t->log)
        st = kt_metrics_log_write(t->log, o, err);
    if (t->events) {
        char *s = cJSON_PrintUnformatted(o);
        if (s) {
            printf("%s\n", s);
            fflush(stdout);
        }
        free(s);
    }
    return st;
}

/* ---- setup ------------------------------------------------------------------- */

static kt_status load_data(trainer *t, kt_err *err)
{
    const kt_spec *s = &t->spec;
    kt_status st = kt_dataset_scan(&t->all, s->data.train, err);
    if (st != KT_OK)
        return kt_err_prefix(err, "data.train");
    if (s->data.val) {
        if ((st = kt_dataset_scan_val(&t->val, s->data.val, &t->all, err)) != KT_OK)
            return kt_err_prefix(err, "data.val");
        t->has_val = 1;
    } else if (s->data.val_split > 0) {
        if ((st = kt_dataset_split(&t->train, &t->val, &t->all, s->data.val_split, err)) != KT_OK)
            return kt_err_prefix(err, "data.val_split");
        t->split = 1;
        t->has_val = t->val.n > 0;
        if (t->train.n == 0)
            return kt_err_set(err, KT_ERR_DATA, "data.val_split: %g leaves no training images in %s",
                              s->data.val_split, s->data.train);
    }
    const kt_dataset *tr = t->split ? &t->train : &t->all;
    for (int c = 0; c < tr->nclasses; c++)
        if (tr->count[c] == 0)
            warnf(t, "class '%s' has no training images", tr->classes[c]);
    for (int c = 0; t->has_val && c < t->val.nclasses; c++)
        if (t->val.count[c] == 0)
            warnf(t, "class '%s' has no validation images", t->val.classes[c]);
    t->k = tr->nclasses;
    t->data_sum = data_checksum(tr, 0xcbf29ce484222325ull);
    if (t->has_val)
        t->data_sum = data_checksum(&t->val, t->data_sum);
    return KT_OK;
}

static const kt_dataset *train_set(const trainer *t) { return t->split ? &t->train : &t->all; }

static kt_status build_model(trainer *t, kt_err *err)
{
    const kt_spec *s = &t->spec;
    kt_status st;
    if ((st = kt_weights_load(&t->w, s->model.weights, err)) != KT_OK ||
        (st = kt_arch_init(&t->arch, t->w, err)) != KT_OK)
        return kt_err_prefix(err, "model.weights");
    if ((st = kt_arch_point_find(t->arch, s->model.freeze, &t->freeze, err)) != KT_OK)
        return kt_err_prefix(err, "model.freeze");
    kt_arch_point_find(t->arch, "avgpool", &t->stop, err);
    if (t->freeze > t->stop)
        return kt_err_set(err, KT_ERR_USAGE,
                          "model.freeze: '%s' is past avgpool; the head replaces the classifier, "
                          "so the cut can be at most avgpool",
                          s->model.freeze);
    kt_arch_point_name(t->arch, t->freeze, t->cut, sizeof t->cut);
    t->backbone = t->freeze < t->stop;

    kt_resnet_plan plan = {.batch = s->train.batch_size, .image_size = s->data.image_size,
                           .freeze = t->freeze, .stop = t->stop, .train = t->backbone,
                           .chunk = 1}; /* bit-identical with the cache (cache.c) */
    if ((st = kt_resnet_init(&t->net, t->arch, &plan, err)) != KT_OK)
        return st;
    kt_head_shape hs = {.features = t->arch->features, .nhidden = s->head.nhidden,
                        .hidden = s->head.hidden, .act = s->head.activation,
                        .dropout = s->head.dropout, .classes = t->k};
    if ((st = kt_head_init(&t->head, &hs, s->train.batch_size, err)) != KT_OK)
        return st;
    kt_head_init_params(t->head, s->train.seed);

    int nb = kt_resnet_nparams(t->net), nh = kt_head_nparams(t->head);
    t->params = calloc((size_t)(nb + nh), sizeof *t->params);
    t->dfeat = calloc((size_t)s->train.batch_size * (size_t)t->arch->features, sizeof *t->dfeat);
    t->dlogits = calloc((size_t)s->train.batch_size * (size_t)t->k, sizeof *t->dlogits);
    if (!t->params || !t->dfeat || !t->dlogits)
        return kt_err_set(err, KT_ERR_RUNTIME, "out of memory");
    for (int i = 0; i < nb; i++)
        t->params[t->nparams++] = kt_resnet_param(t->net, i);
    for (int i = 0; i < nh; i++)
        t->params[t->nparams++] = kt_head_param(t->head, i);

    kt_optim_config oc = {.kind = s->train.optimizer.name,
                          .momentum = s->train.optimizer.momentum,
                          .nesterov = s->train.optimizer.nesterov,
                          .weight_decay = s->train.optimizer.weight_decay,
                          .decay_all = s->train.optimizer.decay_all,
                          .beta1 = s->train.optimizer.betas[0],
                          .beta2 = s->train.optimizer.betas[1],
                          .eps = s->train.optimizer.eps,
                          .backbone_lr_mult = s->train.backbone_lr_mult};
    if (oc.kind != KT_OPTIM_SGD)
        oc.momentum = 0, oc.nesterov = 0;
    if ((st = kt_optim_init(&t->opt, &oc, t->params, t->nparams, err)) != KT_OK)
        return kt_err_prefix(err, "train.optimizer");
    if (t->net)
        kt_optim_set_par(t->opt, kt_resnet_par, t->net);
    if ((st = kt_ckpt_init(&t->ckpt, t->arch, t->w, t->net, t->head, t->opt, err)) != KT_OK)
        return st;

    if (s->train.class_weights == KT_CLASS_WEIGHTS_AUTO) {
        /* Inverse class frequency, n / (k * count): a balanced set gets all 1. */
        const kt_dataset *tr = train_set(t);
        if (!(t->class_w = calloc((size_t)t->k, sizeof *t->class_w)))
            return kt_err_set(err, KT_ERR_RUNTIME, "out of memory");
        for (int c = 0; c < t->k; c++)
            t->class_w[c] = tr->count[c] ? (float)tr->n / ((float)t->k * (float)tr->count[c]) : 0;
    }
    return KT_OK;
}

/* Trainable: a parameter (backbone or head) or a buffer the network updates. */
static int is_trainable(const trainer *t, const char *name)
{
    for (int i = 0; i < t->nparams; i++)
        if (strcmp(t->params[i]->name, name) == 0)
            return 1;
    for (int i = 0; i < kt_resnet_nbuffers(t->net); i++)
        if (strcmp(kt_resnet_buffer(t->net, i)->name, name) == 0)
            return 1;
    return 0;
}

static int cmp_name(const void *a, const void *b) { return strcmp(a, b); }

/* One of the frozen tensors noted at start (t->frozen_names, sorted)? */
static int is_frozen(const trainer *t, const char *name)
{
    char key[64];
    snprintf(key, sizeof key, "%s", name);
    return bsearch(key, t->frozen_names, (size_t)t->nfrozen, sizeof *t->frozen_names, cmp_name) !=
           NULL;
}

/* Checksum of the frozen tensors in the given list (kt_weights_checksum order). */
static uint64_t frozen_checksum(const trainer *t, kt_wtensor *list, int n, int *order)
{
    int m = 0;
    for (int i = 0; i < n; i++)
        if (is_frozen(t, list[i].name))
            list[m++] = list[i];
    return kt_weights_checksum_list(list, m, order);
}

/* Notes the names of the frozen tensors (all the checkpoint holds but the
 * trainable ones) and their checksum as loaded. The names are copied, so the
 * check at the end can run after the network is freed. */
static kt_status checksum_frozen_model(trainer *t, uint64_t *out, kt_err *err)
{
    int n = kt_ckpt_count(t->ckpt, 0);
    kt_wtensor *list = malloc(sizeof *list * (size_t)n);
    int *order = malloc(sizeof *order * (size_t)n);
    t->frozen_names = calloc((size_t)n, sizeof *t->frozen_names);
    if (!list || !order || !t->frozen_names) {
        free(list);
        free(order);
        return kt_err_set(err, KT_ERR_RUNTIME, "out of memory");
    }
    for (int i = 0; i < n; i++) {
        const kt_wtensor *x = kt_ckpt_tensor(t->ckpt, i);
        list[i] = *x;
        if (!is_trainable(t, x->name))
            snprintf(t->frozen_names[t->nfrozen++], sizeof *t->frozen_names, "%s", x->name);
    }
    qsort(t->frozen_names, (size_t)t->nfrozen, sizeof *t->frozen_names, cmp_name);
    *out = frozen_checksum(t, list, n, order);
    free(list);
    free(order);
    return KT_OK;
}

/* Reads path back from disk and checks its frozen tensors against the
 * checksum taken at start: proof that frozen means frozen. */
static kt_status verify_frozen(trainer *t, const char *path, int *nfrozen, kt_err *err)
{
    kt_weights *w = NULL;
    kt_status st = kt_weights_load(&w, path, err);
    if (st != KT_OK)
        return st;
    int n = kt_weights_count(w), m = 0;
    kt_wtensor *list = malloc(sizeof *list * (size_t)(n > 0 ? n : 1));
    int *order = malloc(sizeof *order * (size_t)(n > 0 ? n : 1));
    if (!list || !order) {
        st = kt_err_set(err, KT_ERR_RUNTIME, "out of memory");
        goto done;
    }
    for (int i = 0; i < n; i++) {
        const kt_tensor *x = kt_weights_at(w, i);
        if (strncmp(x->name, "optim.", 6) == 0 || strncmp(x->name, "fc.", 3) == 0)
            continue;
        kt_wtensor *y = &list[m++];
        memset(y, 0, sizeof *y);
        y->name = x->name;
        y->ndim = x->ndim;
        memcpy(y->shape, x->shape, sizeof y->shape);
        y->data = x->data;
        y->idata = x->idata;
    }
    uint64_t sum = frozen_checksum(t, list, m, order);
    *nfrozen = 0;
    for (int i = 0; i < m; i++)
        *nfrozen += is_frozen(t, list[i].name);
    if (sum != t->frozen_sum)
        st = kt_err_set(err, KT_ERR_RUNTIME,
                        "%s: the frozen tensors differ from the loaded weights (checksum "
                        "%016" PRIx64 ", loaded %016" PRIx64 ")",
                        path, sum, t->frozen_sum);
done:
    free(list);
    free(order);
    kt_weights_free(w);
    return st;
}

/* ---- checkpoints ---------------------------------------------------------------- */

static cJSON *metrics_snapshot(const kt_metrics *m)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "n", (double)m->n);
    cJSON_AddNumberToObject(o, "top1", (double)m->top1);
    cJSON_AddNumberToObject(o, "top5", (double)m->top5);
    cJSON_AddNumberToObject(o, "loss_sum", m->loss_sum);
    return o;
}

static cJSON *best_json(const trainer *t)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "metric", kt_spec_metric_name(t->best_metric));
    cJSON_AddNumberToObject(o, "epoch", t->best.epoch);
    if (t->best.epoch > 0) {
        cJSON_AddNumberToObject(o, "value", t->best.value);
        cJSON_AddNumberToObject(o, "val_acc", t->best.val_acc);
        cJSON_AddNumberToObject(o, "val_loss", t->best.val_loss);
        cJSON_AddNumberToObject(o, "train_acc", t->best.train_acc);
        cJSON_AddNumberToObject(o, "train_loss", t->best.train_loss);
    }
    return o;
}

static char *hex64(char buf[17], uint64_t v)
{
    snprintf(buf, 17, "%016" PRIx64, v);
    return buf;
}

static kt_status write_checkpoint(trainer *t, const char *name, int with_optim, kt_err *err)
{
    char path[4200], hex[17];
    const kt_dataset *tr = train_set(t);
    kt_status st;

    /* An update can overflow without the loss noticing yet; never save that. */
    for (int i = 0; i < t->nparams; i++)
        for (int64_t j = 0; j < t->params[i]->numel; j++)
            if (!isfinite(t->params[i]->data[j]))
                return kt_err_set(err, KT_ERR_DIVERGED,
                                  "%s became NaN/Inf after step %lld; not saved (the previous "
                                  "checkpoints are intact); lower train.optimizer.lr",
                                  t->params[i]->name, (long long)t->step);
    out_path(t, path, sizeof path, name);
    cJSON *m = kt_ckpt_meta(t->ckpt, (const char *const *)tr->classes, t->k, t->spec.data.image_size,
                            t->spec.data.resize, t->cut);
    cJSON *spec = cJSON_Parse(t->spec_json);
    if (!m || !spec) {
        cJSON_Delete(m);
        cJSON_Delete(spec);
        return kt_err_set(err, KT_ERR_RUNTIME, "out of memory");
    }
    cJSON_AddItemToObject(m, "spec", spec);
    cJSON *ws = cJSON_AddObjectToObject(m, "weights_source");
    cJSON_AddStringToObject(ws, "path", t->spec.model.weights);
    cJSON_AddStringToObject(ws, "checksum", hex64(hex, t->weights_sum));
    cJSON_AddItemToObject(m, "best", best_json(t));
    cJSON *ts = cJSON_AddObjectToObject(m, "train_state");
    cJSON_AddNumberToObject(ts, "epoch", t->epoch);
    cJSON_AddNumberToObject(ts, "batch", t->batch);
    cJSON_AddNumberToObject(ts, "step", (double)t->step);
    cJSON_AddNumberToObject(ts, "epochs", t->spec.train.epochs);
    cJSON_AddNumberToObject(ts, "batches_per_epoch", t->bpe);
    cJSON_AddNumberToObject(ts, "seed", (double)t->spec.train.seed);
    cJSON_AddStringToObject(ts, "rng", "counter-based: draws are functions of (seed, epoch, sample) and (seed, step)");
    cJSON_AddNumberToObject(ts, "threads", kt_blas_threads());
    cJSON_AddItemToObject(ts, "train_partial", metrics_snapshot(&t->tm));
    cJSON *es = cJSON_AddObjectToObject(ts, "early_stopping");
    cJSON_AddNumberToObject(es, "started", t->es_started);
    cJSON_AddNumberToObject(es, "best", t->es_best);
    cJSON_AddNumberToObject(es, "bad_epochs", t->es_bad);
    cJSON_AddNumberToObject(ts, "finished", t->finished);
    cJSON_AddStringToObject(ts, "finished_why", t->finished_why);
    cJSON_AddNumberToObject(ts, "elapsed_s", t->elapsed_before + (now() - t->t0));
    cJSON *d = cJSON_AddObjectToObject(ts, "data");
    cJSON_AddNumberToObject(d, "train", tr->n);
    cJSON_AddNumberToObject(d, "val", t->has_val ? t->val.n : 0);
    cJSON_AddStringToObject(d, "checksum", hex64(hex, t->data_sum));
    cJSON_AddStringToObject(d, "order", "kt_rng_permutation(seed, epoch); batch k = positions k*batch_size..");
    st = kt_ckpt_write(t->ckpt, path, with_optim, m, err);
    cJSON_Delete(m);
    if (with_optim)
        t->last_save = now();
    if (st == KT_OK && t->events) {
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "event", "checkpoint");
        cJSON_AddStringToObject(o, "path", path);
        cJSON_AddNumberToObject(o, "step", (double)t->step);
        emit(t, o, 0, NULL);
        cJSON_Delete(o);
    }
    return st;
}

/* Epoch files beyond the newest `keep` go. */
static void prune_epochs(trainer *t, int epoch1)
{
    char name[64], path[4200];
    for (int e = epoch1 - t->spec.output.keep; e >= 1; e--) {
        snprintf(name, sizeof name, "epoch-%04d.safetensors", e);
        out_path(t, path, sizeof path, name);
        if (unlink(path) != 0 && errno == ENOENT && e < epoch1 - t->spec.output.keep - 2)
            break; /* older ones were pruned by earlier epochs */
    }
}

/* ---- resume ---------------------------------------------------------------------- */

/* Keys that may change between a run and its resume without changing results. */
static int operational_key(const char *path)
{
    static const char *const ok[] = {"data.workers", "train.threads", "train.log_every",
                                     "train.max_time", "train.gates", "output.keep",
                                     "output.checkpoint_every",
                                     "train.cache_memory", "train.cache_dir", "train.cache_dtype"};
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++)
        if (strcmp(path, ok[i]) == 0)
            return 1;
    return 0;
}

/* Appends "key: old in the checkpoint, new now" lines for every difference. */
static void spec_diff(const cJSON *a, const cJSON *b, const char *prefix, char *out, size_t size,
                      int *ndiff)
{
    char path[256];
    for (int pass = 0; pass < 2; pass++) {
        const cJSON *x = pass ? b : a;
        for (const cJSON *e = x ? x->child : NULL; e; e = e->next) {
            const cJSON *ea = cJSON_GetObjectItemCaseSensitive(a, e->string);
            const cJSON *eb = cJSON_GetObjectItemCaseSensitive(b, e->string);
            if (pass && ea)
                continue; /* seen in pass 0 */
            snprintf(path, sizeof path, "%s%s%s", prefix, prefix[0] ? "." : "", e->string);
            if (operational_key(path))
                continue;
            if (cJSON_IsObject(ea) && cJSON_IsObject(eb)) {
                spec_diff(ea, eb, path, out, size, ndiff);
                continue;
            }
            if (ea && eb && cJSON_Compare(ea, eb, 1))
                continue;
            char *va = ea ? cJSON_PrintUnformatted(ea) : NULL, *vb = eb ? cJSON_PrintUnformatted(eb) : NULL;
            size_t len = strlen(out);
            if (*ndiff < 8)
                snprintf(out + len, size - len, "\n  %s: %s in the checkpoint, %s now", path,
                         va ? va : "absent", vb ? vb : "absent");
            (*ndiff)++;
            free(va);
            free(vb);
        }
    }
}

static double num(const cJSON *o, const char *key)
{
    const cJSON *j = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsNumber(j) ? j->valuedouble : 0;
}

static const char *str(const cJSON *o, const char *key)
{
    const cJSON *j = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsString(j) ? j->valuestring : "";
}

/* The checkpoint's spec read back through today's schema, so a key added to
 * kt since that run (absent in the checkpoint) takes its default and counts
 * as a change only when the job sets it to something else. NULL when it does
 * not parse; the caller then compares the stored text as it is. */
static cJSON *spec_with_defaults(const cJSON *old)
{
    char *text = cJSON_PrintUnformatted(old), *json = NULL;
    cJSON *out = NULL;
    kt_spec s;
    kt_err e = {0};
    if (text && kt_spec_parse(&s, text, "checkpoint", "", 0, &e) == KT_OK &&
        (json = kt_spec_to_json(&s)))
        out = cJSON_Parse(json);
    if (text) kt_spec_free(&s);
    free(text), free(json);
    return out;
}

static kt_status resume(trainer *t, kt_err *err)
{
    char path[4200], hex[17], diffs[2048] = "";
    kt_weights *w = NULL;
    cJSON *meta = NULL, *cur = NULL, *filled = NULL;
    kt_buffer **bufs = NULL;
    kt_status st;
    int ndiff = 0;

    out_path(t, path, sizeof path, "last.safetensors");
    if ((st = kt_weights_load(&w, path, err)) != KT_OK || (st = kt_ckpt_open(&meta, w, err)) != KT_OK)
        goto fail;
    cur = cJSON_Parse(t->spec_json);
    const cJSON *old = cJSON_GetObjectItemCaseSensitive(meta, "spec");
    const cJSON *ts = cJSON_GetObjectItemCaseSensitive(meta, "train_state");
    if (!cur || !cJSON_IsObject(old) || !cJSON_IsObject(ts)) {
        st = kt_err_set(err, KT_ERR_RUNTIME, "%s: no job spec or train_state in its metadata", path);
        goto fail;
    }
    filled = spec_with_defaults(old);
    spec_diff(filled ? filled : old, cur, "", diffs, sizeof diffs, &ndiff);
    const cJSON *ws = cJSON_GetObjectItemCaseSensitive(meta, "weights_source");
    if (strcmp(str(ws, "checksum"), hex64(hex, t->weights_sum)) != 0) {
        size_t len = strlen(diffs);
        snprintf(diffs + len, sizeof diffs - len, "\n  model.weights: the file's tensors changed (checksum %s, was %s)",
                 hex, str(ws, "checksum"));
        ndiff++;
    }
    const cJSON *d = cJSON_GetObjectItemCaseSensitive(ts, "data");
    if (strcmp(str(d, "checksum"), hex64(hex, t->data_sum)) != 0) {
        size_t len = strlen(diffs);
        snprintf(diffs + len, sizeof diffs - len,
                 "\n  data: the images changed (%d train / %d val now, %.0f / %.0f then, or files modified)",
                 train_set(t)->n, t->has_val ? t->val.n : 0, num(d, "train"), num(d, "val"));
        ndiff++;
    }
    if (ndiff && !(t->force && t->resume_flag)) {
        st = kt_err_set(err, KT_ERR_USAGE,
                        "the job differs from the run in %s (%d difference%s):%s\n"
                        "continuing would not reproduce that run; use --force to start over, or "
                        "--resume --force to continue with the changed job",
                        path, ndiff, ndiff > 1 ? "s" : "", diffs);
        goto fail;
    }
    if (ndiff)
        warnf(t, "--force: resuming although the job changed:%s", diffs);
    if ((int)num(ts, "threads") != kt_blas_threads())
        warnf(t,
              "resuming with %d threads, the run used %d: results will not be bit-identical to "
              "an uninterrupted run",
              kt_blas_threads(), (int)num(ts, "threads"));

    int nb = kt_resnet_nbuffers(t->net);
    bufs = malloc(sizeof *bufs * (size_t)(nb > 0 ? nb : 1));
    if (!bufs) {
        st = kt_err_set(err, KT_ERR_RUNTIME, "out of memory");
        goto fail;
    }
    for (int i = 0; i < nb; i++)
        bufs[i] = kt_resnet_buffer(t->net, i);
    if ((st = kt_ckpt_restore(w, meta, t->params, t->nparams, bufs, nb, t->opt, err)) != KT_OK)
        goto fail;

    t->epoch = (int)num(ts, "epoch");
    t->batch = (int)num(ts, "batch");
    t->step = (int64_t)num(ts, "step");
    const cJSON *tp = cJSON_GetObjectItemCaseSensitive(ts, "train_partial");
    t->tm.n = (int64_t)num(tp, "n");
    t->tm.top1 = (int64_t)num(tp, "top1");
    t->tm.top5 = (int64_t)num(tp, "top5");
    t->tm.loss_sum = num(tp, "loss_sum");
    const cJSON *es = cJSON_GetObjectItemCaseSensitive(ts, "early_stopping");
    t->es_started = (int)num(es, "started");
    t->es_best = num(es, "best");
    t->es_bad = (int)num(es, "bad_epochs");
    t->finished = (int)num(ts, "finished");
    snprintf(t->finished_why, sizeof t->finished_why, "%s", str(ts, "finished_why"));
    t->elapsed_before = num(ts, "elapsed_s");
    const cJSON *b = cJSON_GetObjectItemCaseSensitive(meta, "best");
    t->best.epoch = (int)num(b, "epoch");
    t->best.value = num(b, "value");
    t->best.val_acc = num(b, "val_acc");
    t->best.val_loss = num(b, "val_loss");
    t->best.train_acc = num(b, "train_acc");
    t->best.train_loss = num(b, "train_loss");
    if (t->batch >= t->bpe)
        t->epoch++, t->batch = 0;
    st = KT_OK;
fail:
    free(bufs);
    cJSON_Delete(cur);
    cJSON_Delete(filled);
    cJSON_Delete(meta);
    kt_weights_free(w);
    return st;
}

/* ---- the epoch's end ------------------------------------------------------------- */

/* The loader's newline-separated messages about bad files, one warning each. */
static void warn_lines(trainer *t, const char *text)
{
    while (text && *text) {
        const char *nl = strchr(text, '\n');
        int len = nl ? (int)(nl - text) : (int)strlen(text);
        if (len > 0)
            warnf(t, "%.*s", len, text);
        text += len + (nl != NULL);
    }
}

/* The head's input for a batch: images go through the network from the input;
 * cached batches hold the activation at the cut and start there. */
static const float *features(trainer *t, const kt_batch *b, int training)
{
    if (!t->cache)
        return kt_resnet_forward(t->net, 0, b->input, b->n, training);
    if (t->freeze == t->stop)
        return b->input; /* [n][features] already */
    return kt_resnet_forward(t->net, t->freeze, b->input, b->n, training);
}

static void val_batch(trainer *t, const kt_batch *b)
{
    warn_lines(t, b->warnings);
    if (b->n == 0)
        return;
    const float *f = features(t, b, 0);
    const float *lg = kt_head_forward(t->head, f, b->n, 0, 0, 0);
    /* Plain cross-entropy, so val_loss compares across smoothing and weights. */
    double loss = kt_softmax_ce(NULL, lg, b->labels, NULL, 0, b->n, t->k);
    kt_metrics_add(&t->vm, lg, b->labels, b->n, loss);
}

static kt_status validate(trainer *t, kt_err *err)
{
    kt_loader *l = NULL;
    const kt_batch *b;
    kt_status st = KT_OK;
    kt_metrics_reset(&t->vm);
    if (t->val_cache) {
        for (int k = 0; k < kt_cache_batches_per_epoch(t->val_cache); k++) {
            if ((st = kt_cache_batch(t->val_cache, 0, k, &b, err)) != KT_OK)
                return kt_err_prefix(err, "data.val");
            val_batch(t, b);
        }
        return KT_OK;
    }
    kt_loader_opts o = {.ds = &t->val, .batch = t->spec.train.batch_size,
                        .image_size = t->spec.data.image_size, .resize = t->spec.data.resize,
                        .norm = t->arch->norm, .workers = t->spec.data.workers,
                        .seed = t->spec.train.seed,
                        .fail_on_bad = t->spec.data.bad_images == KT_BAD_FAIL, .epochs = 1};
    if ((st = kt_loader_init(&l, &o, err)) != KT_OK)
        return kt_err_prefix(err, "data.val");
    while ((st = kt_loader_next(l, &b, err)) == KT_OK && b)
        val_batch(t, b);
    kt_loader_free(l);
    return st;
}

static double metric_value(const trainer *t, kt_metric m)
{
    switch (m) {
    case KT_METRIC_VAL_ACC:
        return kt_metrics_acc(&t->vm);
    case KT_METRIC_VAL_LOSS:
        return kt_metrics_loss(&t->vm);
    case KT_METRIC_TRAIN_ACC:
        return kt_metrics_acc(&t->tm);
    case KT_METRIC_TRAIN_LOSS:
        return kt_metrics_loss(&t->tm);
    }
    return 0;
}

static int better(kt_metric m, double v, double ref, double delta)
{
    return kt_spec_metric_higher(m) ? v > ref + delta : v < ref - delta;
}

static kt_status end_epoch(trainer *t, double lr, kt_err *err)
{
    kt_status st;
    int e1 = t->epoch + 1;
    char name[64];
    double t_val = now();
    if (t->has_val && (st = validate(t, err)) != KT_OK)
        return st;
    t_val = now() - t_val;

    double v = metric_value(t, t->best_metric);
    int improved = t->best.epoch == 0 || better(t->best_metric, v, t->best.value, 0);
    if (improved) {
        t->best.value = v;
        t->best.epoch = e1;
        t->best.val_acc = kt_metrics_acc(&t->vm), t->best.val_loss = kt_metrics_loss(&t->vm);
        t->best.train_acc = kt_metrics_acc(&t->tm), t->best.train_loss = kt_metrics_loss(&t->tm);
    }
    double es = metric_value(t, t->es_metric);
    if (!t->es_started || better(t->es_metric, es, t->es_best, t->spec.train.early_stopping.min_delta)) {
        t->es_best = es, t->es_bad = 0, t->es_started = 1;
    } else {
        t->es_bad++;
    }

    double secs = t->elapsed_before + (now() - t->t0);
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "event", "epoch");
    cJSON_AddNumberToObject(o, "epoch", e1);
    cJSON_AddNumberToObject(o, "step", (double)t->step);
    cJSON_AddNumberToObject(o, "lr", lr);
    cJSON_AddNumberToObject(o, "train_loss", kt_metrics_loss(&t->tm));
    cJSON_AddNumberToObject(o, "train_acc", kt_metrics_acc(&t->tm));
    if (t->has_val) {
        cJSON_AddNumberToObject(o, "val_loss", kt_metrics_loss(&t->vm));
        cJSON_AddNumberToObject(o, "val_acc", kt_metrics_acc(&t->vm));
        if (t->k >= 5)
            cJSON_AddNumberToObject(o, "val_top5", kt_metrics_top5(&t->vm));
        cJSON_AddItemToObject(o, "val", kt_metrics_json(&t->vm, (const char *const *)t->val.classes));
        cJSON_AddNumberToObject(o, "val_seconds", t_val);
    }
    cJSON_AddNumberToObject(o, "train_images_per_s",
                            t->ep_train_s > 0 ? (double)t->ep_images / t->ep_train_s : 0);
    cJSON_AddNumberToObject(o, "train_seconds", t->ep_train_s);
    cJSON_AddNumberToObject(o, "data_wait_s", t->wait_s);
    cJSON_AddNumberToObject(o, "skipped", (double)t->skipped);
    cJSON_AddNumberToObject(o, "elapsed_s", secs);
    cJSON_AddItemToObject(o, "best", best_json(t));
    if (t->cache) {
        kt_cache_stats sum = {0};
        kt_cache_stats_add(&sum, t->cache);
        if (t->val_cache)
            kt_cache_stats_add(&sum, t->val_cache);
        cJSON_AddItemToObject(o, "cache", kt_cache_stats_json(&sum));
    }
    st = emit(t, o, 1, err);
    cJSON_Delete(o);
    if (st != KT_OK)
        return st;
    if (t->has_val)
        kt_progress_printf(&t->prog,
                           "epoch %d/%d: train loss %.4f acc %.4f | val loss %.4f acc %.4f%s\n", e1,
                           t->spec.train.epochs, kt_metrics_loss(&t->tm), kt_metrics_acc(&t->tm),
                           kt_metrics_loss(&t->vm), kt_metrics_acc(&t->vm),
                           improved ? " (best)" : "");
    else
        kt_progress_printf(&t->prog, "epoch %d/%d: train loss %.4f acc %.4f%s\n", e1,
                           t->spec.train.epochs, kt_metrics_loss(&t->tm), kt_metrics_acc(&t->tm),
                           improved ? " (best)" : "");

    /* The position moves to the next epoch before saving, so a resume from
     * these files starts there. */
    t->epoch++, t->batch = 0;
    kt_metrics_reset(&t->tm);
    t->ep_train_s = 0, t->ep_images = 0;
    if (t->epoch >= t->spec.train.epochs) {
        t->finished = 1;
        snprintf(t->finished_why, sizeof t->finished_why, "epochs");
    } else if (t->spec.train.early_stopping.patience > 0 &&
               t->es_bad >= t->spec.train.early_stopping.patience) {
        t->finished = 1;
        snprintf(t->finished_why, sizeof t->finished_why, "early_stopping");
        kt_progress_printf(&t->prog, "early stopping: %s has not improved by %g for %d epochs\n",
                           kt_spec_metric_name(t->es_metric), t->spec.train.early_stopping.min_delta,
                           t->es_bad);
    }
    if (improved && (st = write_checkpoint(t, "best.safetensors", 0, err)) != KT_OK)
        return st;
    if (t->spec.output.keep > 0) {
        snprintf(name, sizeof name, "epoch-%04d.safetensors", e1);
        if ((st = write_checkpoint(t, name, 0, err)) != KT_OK)
            return st;
        prune_epochs(t, e1);
    }
    return write_checkpoint(t, "last.safetensors", 1, err);
}

/* ---- the loop ---------------------------------------------------------------------- */

static kt_status train_step(trainer *t, const kt_batch *b, double *lr, kt_err *err)
{
    const kt_spec *s = &t->spec;
    int n = b->n;
    kt_optim_zero_grad(t->opt);
    const float *f = features(t, b, t->backbone);
    const float *lg = kt_head_forward(t->head, f, n, 1, s->train.seed, t->step);
    double loss = kt_softmax_ce(t->dlogits, lg, b->labels, t->class_w,
                                (float)s->train.label_smoothing, n, t->k);
    if (!isfinite(loss))
        return kt_err_set(err, KT_ERR_DIVERGED,
                          "the loss is %s at step %lld (epoch %d, batch %d); stopped before "
                          "updating; the last checkpoint is intact; lower train.optimizer.lr",
                          isnan(loss) ? "NaN" : "Inf", (long long)t->step + 1, b->epoch + 1,
                          b->index + 1);
    if (t->backbone) {
        memset(t->dfeat, 0, sizeof(float) * (size_t)n * (size_t)t->arch->features);
        kt_head_backward(t->head, t->dfeat, t->dlogits, n);
        kt_resnet_backward(t->net, t->dfeat, n);
    } else {
        kt_head_backward(t->head, NULL, t->dlogits, n);
    }
    *lr = kt_schedule_lr(&t->sched, t->step);
    kt_optim_step(t->opt, *lr);
    kt_metrics_add(&t->tm, lg, b->labels, n, loss);
    return KT_OK;
}

static kt_status log_step(trainer *t, const kt_batch *b, double lr, kt_err *err)
{
    double el = t->train_s, ips = el > 0 ? (double)t->images / el : 0;
    int64_t total = (int64_t)t->spec.train.epochs * t->bpe;
    double per_step = t->step > t->step0 ? (now() - t->loop_t0) / (double)(t->step - t->step0) : 0;
    kt_progress_step(&t->prog, b->epoch + 1, t->spec.train.epochs, b->index + 1, t->bpe, t->step,
                     kt_metrics_loss(&t->tm), kt_metrics_acc(&t->tm), ips,
                     per_step * (double)(total - t->step));
    if (t->spec.train.log_every <= 0 || t->step % t->spec.train.log_every != 0)
        return KT_OK;
    snprintf(t->line, sizeof t->line,
             "{\"event\":\"step\",\"epoch\":%d,\"batch\":%d,\"step\":%lld,\"lr\":%.9g,"
             "\"train_loss\":%.9g,\"train_acc\":%.9g,\"images_per_s\":%.4g,\"images\":%d,"
             "\"step_s\":%.4g,\"data_wait_s\":%.4g,\"skipped\":%lld}",
             b->epoch + 1, b->index + 1, (long long)t->step, lr, kt_metrics_loss(&t->tm),
             kt_metrics_acc(&t->tm), ips, b->n, t->step_s, t->wait_s, (long long)t->skipped);
    if (t->events) {
        printf("%s\n", t->line);
        fflush(stdout);
    }
    return kt_metrics_log_text(t->log, t->line, err);
}

/* Removes the outputs of an earlier run in the folder (--force without --resume). */
static void clear_outputs(trainer *t)
{
    char path[4200], name[64];
    out_path(t, path, sizeof path, "last.safetensors");
    unlink(path);
    out_path(t, path, sizeof path, "best.safetensors");
    unlink(path);
    for (int e = 1; e <= t->spec.train.epochs + 1000; e++) {
        snprintf(name, sizeof name, "epoch-%04d.safetensors", e);
        out_path(t, path, sizeof path, name);
        unlink(path);
    }
}

static kt_metric without_val(trainer *t, kt_metric m, const char *key)
{
    if (t->has_val || (m != KT_METRIC_VAL_ACC && m != KT_METRIC_VAL_LOSS))
        return m;
    kt_metric r = m == KT_METRIC_VAL_ACC ? KT_METRIC_TRAIN_ACC : KT_METRIC_TRAIN_LOSS;
    warnf(t, "%s: no validation images (data.val unset, data.val_split 0); using %s", key,
          kt_spec_metric_name(r));
    return r;
}

static double best_value_of(const trainer *t, kt_metric m)
{
    switch (m) {
    case KT_METRIC_VAL_ACC:
        return t->best.val_acc;
    case KT_METRIC_VAL_LOSS:
        return t->best.val_loss;
    case KT_METRIC_TRAIN_ACC:
        return t->best.train_acc;
    case KT_METRIC_TRAIN_LOSS:
        return t->best.train_loss;
    }
    return 0;
}

/* After training: frozen check, summary, gates. */
static kt_status finish(trainer *t, kt_err *err)
{
    char path[4200], gates[1024] = "";
    int nfrozen = 0, unmet = 0;
    kt_status st;
    /* Training is over: release the network and the caches before mapping the
     * checkpoint back, so the check does not add to the run's peak memory. */
    kt_ckpt_free(t->ckpt), t->ckpt = NULL;
    if (t->opt) kt_optim_set_par(t->opt, NULL, NULL); /* its pool was the net's threads */
    kt_resnet_free(t->net), t->net = NULL;
    kt_cache_free(t->cache), t->cache = NULL;
    kt_cache_free(t->val_cache), t->val_cache = NULL;
    t->nparams = 0;
    out_path(t, path, sizeof path, "last.safetensors");
    if ((st = verify_frozen(t, path, &nfrozen, err)) != KT_OK)
        return st;
    kt_progress_printf(&t->prog, "frozen: %d tensors up to %s are bit-identical to %s\n", nfrozen,
                       t->cut, t->spec.model.weights);
    for (int i = 0; i < t->spec.train.ngates; i++) {
        const kt_gate *g = &t->spec.train.gates[i];
        double v = best_value_of(t, g->metric);
        int ok = kt_spec_metric_higher(g->metric) ? v >= g->value : v <= g->value;
        size_t len = strlen(gates);
        snprintf(gates + len, sizeof gates - len, "%s%s %.4f %s %g", len ? ", " : "",
                 kt_spec_metric_name(g->metric), v, ok ? "meets" : "misses", g->value);
        unmet += !ok;
    }
    out_path(t, path, sizeof path, "best.safetensors");
    if (t->events) {
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "event", "done");
        cJSON_AddStringToObject(o, "finished", t->finished_why);
        cJSON_AddStringToObject(o, "best_checkpoint", path);
        cJSON_AddItemToObject(o, "best", best_json(t));
        cJSON_AddNumberToObject(o, "frozen_tensors_verified", nfrozen);
        cJSON_AddNumberToObject(o, "gates_unmet", unmet);
        cJSON_AddNumberToObject(o, "elapsed_s", t->elapsed_before + (now() - t->t0));
        emit(t, o, 0, NULL);
        cJSON_Delete(o);
    } else {
        printf("best %s %.4f at epoch %d: %s\n", kt_spec_metric_name(t->best_metric), t->best.value,
               t->best.epoch, path);
    }
    if (gates[0])
        kt_progress_printf(&t->prog, "gates: %s\n", gates);
    if (unmet)
        return kt_err_set(err, KT_ERR_GATE, "%d of %d gates not met: %s", unmet,
                          t->spec.train.ngates, gates);
    return KT_OK;
}

static void fill_progress(void *ctx, int64_t done, int64_t total)
{
    trainer *t = ctx;
    if (t->prog.tty && !t->quiet) {
        fprintf(stderr, "\r\033[Kcache: computing frozen activations %lld/%lld", (long long)done,
                (long long)total);
        t->prog.live = 1;
    }
}

/* Opens the activation caches of the training and validation sets when the
 * frozen part's output can be reused (cache.h); logs why not otherwise. */
static kt_status open_caches(trainer *t, const kt_augment *aug, int augmenting, kt_err *err)
{
    const kt_spec *s = &t->spec;
    const char *why = kt_cache_why_not(t->freeze, augmenting, s->data.cached_views, t->no_cache);
    kt_status st;
    if (why) {
        kt_progress_printf(&t->prog, "cache: off: %s\n", why);
        return KT_OK;
    }
    if ((st = kt_cache_dir(t->cache_dir, sizeof t->cache_dir, s->train.cache_dir, err)) != KT_OK)
        return kt_err_prefix(err, "train.cache_dir");
    int64_t budget = kt_cache_memory_budget(s->train.cache_memory);
    kt_cache_opts co = {.arch = t->arch, .point = t->freeze, .image_size = s->data.image_size,
                        .resize = s->data.resize, .aug = augmenting ? aug : NULL,
                        .views = augmenting ? s->data.cached_views : 0, .seed = s->train.seed,
                        .dtype = s->train.cache_dtype, .ds = train_set(t),
                        .batch = s->train.batch_size, .shuffle = 1,
                        .fail_on_bad = s->data.bad_images == KT_BAD_FAIL,
                        .epochs = s->train.epochs, .start_epoch = t->epoch,
                        .start_batch = t->batch, .dir = t->cache_dir, .memory = budget,
                        .workers = s->data.workers, .weights_path = s->model.weights,
                        .stop = &g_signal, .progress = fill_progress, .ctx = t};
    if ((st = kt_cache_open(&t->cache, &co, err)) != KT_OK)
        return st == KT_ERR_INTERRUPTED ? st : kt_err_prefix(err, "data.train");
    if (t->has_val) {
        int64_t left = budget - kt_cache_bytes(t->cache);
        co.ds = &t->val, co.aug = NULL, co.views = 0, co.shuffle = 0, co.epochs = 0;
        co.start_epoch = 0, co.start_batch = 0, co.memory = left > 0 ? left : 0;
        if ((st = kt_cache_open(&t->val_cache, &co, err)) != KT_OK)
            return st == KT_ERR_INTERRUPTED ? st : kt_err_prefix(err, "data.val");
    }
    kt_cache_stats sum = {0};
    kt_cache_stats_add(&sum, t->cache);
    if (t->val_cache)
        kt_cache_stats_add(&sum, t->val_cache);
    kt_progress_printf(&t->prog,
                       "cache: %lld of %lld activations from %s (%.0f%%), %lld computed in %.1f s; "
                       "%.0f MiB %s\n",
                       (long long)sum.hits, (long long)sum.entries, kt_cache_group_dir(t->cache),
                       sum.entries ? 100.0 * (double)sum.hits / (double)sum.entries : 0,
                       (long long)sum.computed, sum.fill_seconds, (double)sum.bytes / 1048576.0,
                       sum.mapped ? "mapped from disk" : "in memory");
    kt_cache *both[2] = {t->cache, t->val_cache};
    for (int i = 0; i < 2; i++) {
        const char *w = both[i] ? kt_cache_warnings(both[i]) : NULL;
        if (w && w[0])
            warnf(t, "cache: %s", w);
    }
    return KT_OK;
}

static kt_status run(trainer *t, kt_err *err)
{
    kt_spec *s = &t->spec;
    kt_loader *loader = NULL;
    char path[4200], hex[17];
    kt_status st;

    if (!s->output.dir)
        return kt_err_set(err, KT_ERR_USAGE, "%s: output.dir: required by kt train", t->job);
    snprintf(t->dir, sizeof t->dir, "%s", s->output.dir);
    kt_blas_set_threads(t->threads > 0 ? t->threads : s->train.threads);
    t->t0 = t->last_save = now();
    t->ckpt_every = s->output.checkpoint_every;

    if ((st = load_data(t, err)) != KT_OK || (st = build_model(t, err)) != KT_OK)
        return st;
    if (!(t->spec_json = kt_spec_to_json(s)))
        return kt_err_set(err, KT_ERR_RUNTIME, "out of memory");
    t->weights_sum = kt_weights_checksum(t->w);
    if ((st = kt_metrics_init(&t->tm, t->k, err)) != KT_OK ||
        (st = kt_metrics_init(&t->vm, t->k, err)) != KT_OK)
        return st;
    t->best_metric = without_val(t, s->output.best_metric, "output.best_metric");
    t->es_metric = s->train.early_stopping.patience > 0
                       ? without_val(t, s->train.early_stopping.metric, "train.early_stopping.metric")
                       : s->train.early_stopping.metric;

    const kt_dataset *tr = train_set(t);
    t->bpe = (tr->n + s->train.batch_size - 1) / s->train.batch_size;
    t->sched = (kt_schedule){.kind = s->train.schedule.name, .lr = s->train.optimizer.lr,
                             .min_lr = s->train.schedule.min_lr,
                             .warmup_steps = (int64_t)llround(s->train.schedule.warmup_epochs * t->bpe),
                             .total_steps = (int64_t)s->train.epochs * t->bpe,
                             .steps_per_epoch = t->bpe, .step_epochs = s->train.schedule.step_epochs,
                             .gamma = s->train.schedule.gamma};

    if ((st = kt_fs_mkdir_p(t->dir, "output.dir", err)) != KT_OK)
        return st;
    /* One run per folder: a cron job that overlaps the previous one must not
     * write the same checkpoints. The lock goes with the process. */
    out_path(t, path, sizeof path, ".kt-lock");
    if ((t->lock_fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644)) < 0)
        return kt_err_set(err, KT_ERR_RUNTIME, "%s: %s", path, strerror(errno));
    if (flock(t->lock_fd, LOCK_EX | LOCK_NB) != 0)
        return kt_err_set(err, KT_ERR_RUNTIME,
                          "output.dir: another kt train is running in %s (locked %s)", t->dir, path);
    /* An unfinished run in output.dir is continued by the same command (cron
     * and CI just run it again); --resume insists on one, --force alone
     * starts over. */
    out_path(t, path, sizeof path, "last.safetensors");
    if (file_exists(path) && t->force && !t->resume)
        clear_outputs(t);
    else if (file_exists(path))
        t->resume = 1;
    else if (t->resume)
        return kt_err_set(err, KT_ERR_USAGE, "--resume: %s does not exist (nothing to resume)", path);
    if (t->resume && (st = resume(t, err)) != KT_OK)
        return st;
    t->step0 = t->step;
    if ((st = checksum_frozen_model(t, &t->frozen_sum, err)) != KT_OK)
        return st;
    out_path(t, path, sizeof path, "job.json");
    if ((st = write_text(path, t->spec_json, err)) != KT_OK)
        return st;
    out_path(t, path, sizeof path, "metrics.jsonl");
    if ((st = kt_metrics_log_open(&t->log, path, t->resume ? t->step : -1, err)) != KT_OK)
        return st;
    kt_progress_init(&t->prog, stderr, s->train.log_every, t->quiet);

    int64_t trainable = 0;
    for (int i = 0; i < t->nparams; i++)
        trainable += t->params[i]->numel;
    kt_progress_printf(&t->prog,
                       "kt train: %d train / %d val images, %d classes; frozen up to %s, %lld "
                       "trainable values; %d epochs x %d steps of %d; %d threads (%s)%s\n",
                       tr->n, t->has_val ? t->val.n : 0, t->k, t->cut, (long long)trainable,
                       s->train.epochs, t->bpe, s->train.batch_size, kt_blas_threads(),
                       kt_blas_core(), t->resume ? "; continuing the run in output.dir" : "");
    if (t->events) {
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "event", "start");
        cJSON_AddStringToObject(o, "job", t->job);
        cJSON_AddStringToObject(o, "output", t->dir);
        cJSON_AddItemToObject(o, "classes", cJSON_CreateStringArray((const char *const *)tr->classes, t->k));
        cJSON_AddNumberToObject(o, "train", tr->n);
        cJSON_AddNumberToObject(o, "val", t->has_val ? t->val.n : 0);
        cJSON_AddStringToObject(o, "cut", t->cut);
        cJSON_AddNumberToObject(o, "trainable", (double)trainable);
        cJSON_AddNumberToObject(o, "epochs", s->train.epochs);
        cJSON_AddNumberToObject(o, "steps_per_epoch", t->bpe);
        cJSON_AddNumberToObject(o, "step", (double)t->step);
        cJSON_AddStringToObject(o, "weights_checksum", hex64(hex, t->weights_sum));
        emit(t, o, 0, NULL);
        cJSON_Delete(o);
    }

    if (t->finished)
        kt_progress_printf(&t->prog,
                           "the run in %s is already finished (%s); checking it again (--force "
                           "starts over)\n",
                           t->dir, t->finished_why);
    kt_augment aug = {.rrc = s->data.augment.random_resized_crop.enabled,
                      .scale = {s->data.augment.random_resized_crop.scale[0],
                                s->data.augment.random_resized_crop.scale[1]},
                      .ratio = {s->data.augment.random_resized_crop.ratio[0],
                                s->data.augment.random_resized_crop.ratio[1]},
                      .flip = s->data.augment.flip,
                      .brightness = s->data.augment.color_jitter.brightness,
                      .contrast = s->data.augment.color_jitter.contrast,
                      .saturation = s->data.augment.color_jitter.saturation};
    int augmenting = aug.rrc || aug.flip || aug.brightness > 0 || aug.contrast > 0 ||
                     aug.saturation > 0;

    /* Installed before the cache fill, which can be long and stops cleanly too. */
    struct sigaction sa, old_int, old_term;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESTART;
    g_signal = 0;
    sigaction(SIGINT, &sa, &old_int);
    sigaction(SIGTERM, &sa, &old_term);

    if (!t->finished && (st = open_caches(t, &aug, augmenting, err)) != KT_OK)
        goto done;
    if (!t->finished && !t->cache) {
        kt_loader_opts lo = {.ds = tr, .batch = s->train.batch_size,
                             .image_size = s->data.image_size, .resize = s->data.resize,
                             .norm = t->arch->norm, .aug = &aug, .shuffle = 1,
                             .workers = s->data.workers, .seed = s->train.seed,
                             .fail_on_bad = s->data.bad_images == KT_BAD_FAIL,
                             .epochs = s->train.epochs, .start_epoch = t->epoch,
                             .start_batch = t->batch};
        if ((st = kt_loader_init(&loader, &lo, err)) != KT_OK) {
            kt_err_prefix(err, "data.train");
            goto done;
        }
    }

    double lr = kt_schedule_lr(&t->sched, t->step);
    t->loop_t0 = now();
    while (!t->finished) {
        const kt_batch *b;
        double it0 = now();
        st = t->cache ? kt_cache_next(t->cache, &b, err) : kt_loader_next(loader, &b, err);
        if (st != KT_OK)
            goto done;
        if (!b)
            break;
        t->wait_s += b->wait_seconds;
        t->skipped += b->nskipped;
        warn_lines(t, b->warnings);
        double st0 = now();
        if (b->n > 0 && (st = train_step(t, b, &lr, err)) != KT_OK)
            goto done;
        t->step_s = now() - st0;
        t->images += b->n, t->ep_images += b->n;
        t->step = (int64_t)b->epoch * t->bpe + b->index + 1;
        t->batch = b->index + 1;
        t->train_s += now() - it0, t->ep_train_s += now() - it0;
        if ((st = log_step(t, b, lr, err)) != KT_OK)
            goto done;
        int saved = 0;
        if (b->last_in_epoch) {
            kt_progress_done(&t->prog);
            if ((st = end_epoch(t, lr, err)) != KT_OK)
                goto done;
            saved = 1;
        } else if (now() - t->last_save >= t->ckpt_every) {
            if ((st = write_checkpoint(t, "last.safetensors", 1, err)) != KT_OK)
                goto done;
            saved = 1;
        }
        const char *why = g_signal == SIGINT    ? "SIGINT"
                          : g_signal == SIGTERM ? "SIGTERM"
                          : s->train.max_time > 0 && now() - t->t0 >= s->train.max_time
                              ? "train.max_time"
                              : NULL;
        if (why && !t->finished) {
            if (!saved && (st = write_checkpoint(t, "last.safetensors", 1, err)) != KT_OK)
                goto done;
            kt_progress_done(&t->prog);
            out_path(t, path, sizeof path, "last.safetensors");
            st = kt_err_set(err, KT_ERR_INTERRUPTED,
                            "stopped by %s after step %lld (epoch %d, batch %d of %d); %s saved; "
                            "run 'kt train %s' again to continue",
                            why, (long long)t->step, t->epoch + 1, t->batch, t->bpe, path, t->job);
            goto done;
        }
    }
    kt_progress_done(&t->prog);
    if (t->cache && !t->quiet) {
        kt_cache_stats sum = {0};
        kt_cache_stats_add(&sum, t->cache);
        if (t->val_cache)
            kt_cache_stats_add(&sum, t->val_cache);
        kt_progress_printf(&t->prog, "cache: %lld activations served, %lld computed, ~%.0f s saved\n",
                           (long long)sum.served, (long long)sum.computed, sum.saved_seconds);
    }
    st = finish(t, err);
done:
    kt_progress_done(&t->prog);
    sigaction(SIGINT, &old_int, NULL);
    sigaction(SIGTERM, &old_term, NULL);
    kt_loader_free(loader);
    return st;
}

static void trainer_free(trainer *t)
{
    kt_cache_free(t->val_cache);
    kt_cache_free(t->cache);
    if (t->lock_fd >= 0)
        close(t->lock_fd);
    kt_metrics_log_close(t->log);
    kt_metrics_free(&t->tm);
    kt_metrics_free(&t->vm);
    free(t->frozen_names);
    free(t->class_w);
    free(t->dlogits);
    free(t->dfeat);
    free(t->params);
    kt_ckpt_free(t->ckpt);
    kt_optim_free(t->opt);
    kt_head_free(t->head);
    kt_resnet_free(t->net);
    kt_arch_free(t->arch);
    kt_weights_free(t->w);
    if (t->split) {
        kt_dataset_free(&t->train);
    }
    kt_dataset_free(&t->val);
    kt_dataset_free(&t->all);
    free(t->spec_json);
    kt_spec_free(&t->spec);
}

kt_status kt_cmd_train(int argc, char **argv, kt_err *err)
{
    static const kt_cmd cmd = {"train", "fine-tune a network as a job spec says",
                               "kt train [options] JOB.json"};
    trainer *t = calloc(1, sizeof *t);
    kt_status st;
    char **pos;
    int npos;
    if (!t)
        return kt_err_set(err, KT_ERR_RUNTIME, "out of memory");
    t->lock_fd = -1;
    kt_opt opts[] = {
        {"resume", 0, KT_OPT_FLAG, NULL, "continue the run in output.dir (an error if there is none)", 0, 0, &t->resume_flag},
        {"force", 0, KT_OPT_FLAG, NULL, "start over in a used output.dir; with --resume, continue a changed job", 0, 0, &t->force},
        {"quiet", 'q', KT_OPT_FLAG, NULL, "no progress or summaries on stderr", 0, 0, &t->quiet},
        {"json-events", 0, KT_OPT_FLAG, NULL, "NDJSON events (start, step, epoch, checkpoint, done) on stdout", 0, 0, &t->events},
        {"threads", 0, KT_OPT_INT, "N", "threads (default: train.threads, 0 = all cores)", 0, 1024, &t->threads},
        {"no-cache", 0, KT_OPT_FLAG, NULL, "recompute the frozen part every epoch (no activation cache)", 0, 0, &t->no_cache},
    };
    st = kt_cli_parse(&cmd, opts, KT_NOPTS(opts), argc, argv, &pos, &npos, err);
    if (st != KT_OK || !pos)
        goto done;
    if (npos != 1) {
        st = kt_err_set(err, KT_ERR_USAGE, "expected one job file, got %d arguments", npos);
        goto done;
    }
    t->job = pos[0];
    t->resume = t->resume_flag;
    if ((st = kt_spec_load(&t->spec, t->job, err)) != KT_OK)
        goto done;
    st = run(t, err);
done:
    trainer_free(t);
    free(t);
    return st;
}
