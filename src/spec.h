/* spec.h - the JSON job spec: parsed, checked and completed with defaults.
 *
 * Shared vocabulary of every command: the struct mirrors the JSON sections and
 * keys one to one (train.optimizer.lr is s->train.optimizer.lr). Loading
 * reports every problem it finds, not just the first, fills every default,
 * and resolves relative paths against the folder of the job file (an
 * absolute folder after kt_spec_load, so the resolved spec, which is stored
 * in checkpoints, means the same from any working directory).
 *
 * Ownership: every char* in a kt_spec is owned by the spec and freed by
 * kt_spec_free; hidden[] and gates[] too. A spec is plain data afterwards:
 * copy what you need or keep the spec alive.
 *
 * The key table in spec.c is data and can be listed (kt_spec_key_count /
 * kt_spec_key_at); tests use it to check config.example.json and man/kt.1
 * cover every key.
 */
#ifndef KT_SPEC_H
#define KT_SPEC_H

#include <stdint.h>

#include "err.h"

typedef enum { KT_ACT_RELU, KT_ACT_GELU, KT_ACT_SILU, KT_ACT_TANH } kt_activation;
typedef enum { KT_BAD_SKIP, KT_BAD_FAIL } kt_bad_images;
typedef enum { KT_OPTIM_SGD, KT_OPTIM_ADAM, KT_OPTIM_ADAMW } kt_optim_name;
typedef enum { KT_SCHED_CONSTANT, KT_SCHED_STEP, KT_SCHED_COSINE } kt_sched_name;
typedef enum { KT_CLASS_WEIGHTS_NONE, KT_CLASS_WEIGHTS_AUTO } kt_class_weights;
typedef enum { KT_CACHE_FLOAT32, KT_CACHE_FLOAT16 } kt_cache_dtype;
/* Metrics named by early_stopping.metric, output.best_metric and gates.
 * *_acc are better when higher, *_loss when lower (kt_spec_metric_higher). */
typedef enum { KT_METRIC_VAL_ACC, KT_METRIC_VAL_LOSS, KT_METRIC_TRAIN_ACC, KT_METRIC_TRAIN_LOSS } kt_metric;

/* A quality gate: after training, metric must be >= value (acc) or <= value
 * (loss), else kt train exits with KT_ERR_GATE. */
typedef struct {
    kt_metric metric;
    double value;
} kt_gate;

typedef struct {
    char *path;                 /* the job file as given; "" for a spec from text */
    char *dir;                  /* folder relative paths are joined to: absolute after kt_spec_load */

    struct {
        char *weights;          /* .safetensors, TF.js model.json or kt checkpoint; resolved path */
        char *freeze;           /* cut point name, checked against the weights by the model code */
    } model;

    struct {
        int *hidden;            /* [nhidden] hidden layer sizes, may be empty (NULL) */
        int nhidden;
        kt_activation activation;
        double dropout;         /* [0, 1) */
    } head;

    struct {
        char *train;            /* image folder root/<class>/<image>, resolved */
        char *val;              /* image folder or NULL (then val_split is used) */
        double val_split;       /* [0, 1): fraction of train held out by stable path hash */
        int image_size;         /* network input side, e.g. 224 */
        int resize;             /* eval: shorter side resized to this, then center crop image_size */
        struct {
            int flip;           /* random horizontal flip */
            struct {
                int enabled;
                double scale[2];    /* area fraction range, 0 < a <= b <= 1 */
                double ratio[2];    /* aspect ratio range, 0 < a <= b */
            } random_resized_crop;
            struct {
                double brightness, contrast, saturation; /* 0 = off */
            } color_jitter;
        } augment;
        kt_bad_images bad_images;
        int workers;            /* loader threads; 0 = automatic */
        int cached_views;       /* augmented views of each image whose frozen features are cached; 0 = no cache */
    } data;

    struct {
        int epochs;
        int batch_size;
        struct {
            kt_optim_name name;
            double lr;
            double momentum;    /* sgd */
            int nesterov;       /* sgd */
            double weight_decay;
            int decay_all;      /* decay batch-norm and bias parameters too */
            double betas[2];    /* adam, adamw */
            double eps;         /* adam, adamw */
        } optimizer;
        struct {
            kt_sched_name name;
            double warmup_epochs;   /* linear warm-up from 0, may be fractional */
            int step_epochs;        /* step: multiply by gamma every step_epochs */
            double gamma;
            double min_lr;          /* cosine: final learning rate */
        } schedule;
        double backbone_lr_mult;    /* lr factor for trainable backbone layers */
        double label_smoothing;     /* [0, 1) */
        kt_class_weights class_weights;
        struct {
            kt_metric metric;
            int patience;           /* epochs without improvement; 0 = off */
            double min_delta;
        } early_stopping;
        uint64_t seed;
        int threads;                /* 0 = all cores */
        double max_time;            /* seconds; 0 = no limit; stops cleanly with a checkpoint */
        int log_every;              /* steps between progress lines */
        kt_gate *gates;             /* [ngates] */
        int ngates;
        int64_t cache_memory;       /* bytes of RAM for cached features; 0 = automatic */
        char *cache_dir;            /* resolved, or NULL: $KT_CACHE_DIR, $XDG_CACHE_HOME/kt, ~/.cache/kt */
        kt_cache_dtype cache_dtype;
    } train;

    struct {
        char *dir;                  /* resolved; created by kt train */
        int keep;                   /* epoch checkpoints kept; best and last are extra */
        double checkpoint_every;    /* seconds between last.safetensors refreshes
                                     * inside an epoch; 0 = after every step */
        kt_metric best_metric;
    } output;

    /* Every problem found by the last load, one per line, each starting with
     * the file name; NULL when there were none. */
    char *problems;
    int nproblems;
} kt_spec;

/* Reads, checks and completes the job file at path. On any problem returns
 * KT_ERR_USAGE (KT_ERR_RUNTIME if the file cannot be read) with err->msg
 * holding the first problems, one per line, and s->problems holding all.
 * The spec must be kt_spec_free'd in every case. */
kt_status kt_spec_load(kt_spec *s, const char *path, kt_err *err);
/* Same from JSON text (e.g. a checkpoint's stored spec); name is used in
 * messages, dir ("" for none) resolves relative paths. check_paths = 0 skips
 * the checks that files and folders exist. */
kt_status kt_spec_parse(kt_spec *s, const char *text, const char *name, const char *dir,
                        int check_paths, kt_err *err);
/* The resolved spec as JSON text, every key present (malloc'ed, NULL if out of
 * memory). Parsing it gives the same spec. */
char *kt_spec_to_json(const kt_spec *s);
void kt_spec_free(kt_spec *s);

/* Names used in JSON, e.g. kt_spec_metric_name(KT_METRIC_VAL_ACC) = "val_acc". */
const char *kt_spec_metric_name(kt_metric m);
int kt_spec_metric_higher(kt_metric m);  /* 1 when larger is better */
const char *kt_spec_activation_name(kt_activation a);
const char *kt_spec_optim_name(kt_optim_name o);
const char *kt_spec_sched_name(kt_sched_name s);

/* The schema, in document order: "model", "model.weights", ... Objects are
 * listed too (kind "object"). */
int kt_spec_key_count(void);
const char *kt_spec_key_at(int i, const char **kind);

#endif
