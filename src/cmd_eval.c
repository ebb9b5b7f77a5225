/* cmd_eval.c - "kt eval -m MODEL DIR": a classifier measured on a labelled
 * image folder (DIR/<class>/<image>, the dataset rules of dataset.h).
 *
 * Folder classes are matched to the model's classes by name (a checkpoint's
 * class names; for a pretrained model the --labels names, or the class
 * indices in decimal). The images of a folder class the model does not know
 * are listed and left out of the figures, as are unreadable images (the
 * bad-image policy of training, so the accuracy is the one training
 * reported); --strict turns either into exit status 3 after the report. No
 * known class at all is an error.
 *
 * The preprocessing and the prediction are kt predict's (infer.h): the same
 * model, the same batches, the first largest logit (kt_metrics), so eval and
 * predict agree image by image. The figures are metrics.c's.
 */
#include <cjson/cJSON.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "blas.h"
#include "cli.h"
#include "commands.h"
#include "dataset.h"
#include "infer.h"
#include "metrics.h"
#include "ops.h"

typedef struct {
    int image;              /* index into the evaluated paths */
    int predicted;
    float prob;
} miss;

typedef struct {
    kt_infer inf;
    kt_dataset ds;          /* the folder as scanned */
    int n;                  /* images evaluated (known classes) */
    const char **paths;     /* [n] into ds */
    int *labels;            /* [n] model class of each */
    int *folder_to_model;   /* [ds.nclasses] model class, -1 unknown */
    const char **names;     /* [nclasses] class names, the index in decimal for unnamed */
    char (*numbers)[16];    /* [nclasses] storage for those decimal names */
    kt_metrics m;
    miss *misses;           /* [n] */
    int nmiss;
    char **bad_msg;         /* [n] the loader's message of each unreadable image (owned) */
    int *bad;               /* [n] their indices */
    int nbad;
} evaluator;

static void on_skipped(void *ctx, int index, const char *msg)
{
    evaluator *e = ctx;
    e->bad_msg[e->nbad] = strdup(msg); /* NULL (out of memory) prints a generic reason */
    e->bad[e->nbad++] = index;
}

static const char *bad_msg(const evaluator *e, int i)
{
    return e->bad_msg[i] ? e->bad_msg[i] : "unreadable image";
}

static void evaluator_free(evaluator *e)
{
    kt_metrics_free(&e->m);
    kt_infer_close(&e->inf);
    kt_dataset_free(&e->ds);
    free(e->paths), free(e->labels), free(e->folder_to_model), free(e->names), free(e->numbers);
    for (int i = 0; e->bad_msg && i < e->nbad; i++) free(e->bad_msg[i]);
    free(e->misses), free(e->bad_msg), free(e->bad);
}

/* Maps the folder's classes onto the model's by name and lists the images
 * of the known ones. */
static kt_status match_classes(evaluator *e, const char *dir, kt_err *err)
{
    const int nc = e->inf.nclasses;
    e->names = calloc((size_t)nc, sizeof *e->names);
    e->numbers = calloc((size_t)nc, sizeof *e->numbers);
    e->folder_to_model = malloc(sizeof(int) * (size_t)(e->ds.nclasses ? e->ds.nclasses : 1));
    e->paths = malloc(sizeof *e->paths * (size_t)(e->ds.n ? e->ds.n : 1));
    e->labels = malloc(sizeof(int) * (size_t)(e->ds.n ? e->ds.n : 1));
    if (!e->names || !e->numbers || !e->folder_to_model || !e->paths || !e->labels)
        return kt_err_set(err, KT_ERR_RUNTIME, "out of memory");
    for (int c = 0; c < nc; c++)
        e->names[c] = kt_infer_class_name(&e->inf, c, e->numbers[c], sizeof e->numbers[c]);
    int known = 0;
    for (int f = 0; f < e->ds.nclasses; f++) {
        e->folder_to_model[f] = -1;
        for (int c = 0; c < nc && e->folder_to_model[f] < 0; c++)
            if (strcmp(e->ds.classes[f], e->names[c]) == 0) e->folder_to_model[f] = c;
        known += e->folder_to_model[f] >= 0;
    }
    if (!known) {
        char list[512] = "";
        for (int c = 0, len = 0; c < nc && c < 8; c++)
            len += snprintf(list + len, sizeof list - (size_t)len, "%s%.40s", c ? ", " : "", e->names[c]);
        if (nc > 8) strcat(list, ", ...");
        return kt_err_set(err, KT_ERR_DATA,
                          "%s: none of its %d class folders is a class of the model (%s)", dir,
                          e->ds.nclasses, list);
    }
    for (int i = 0; i < e->ds.n; i++) {
        int c = e->folder_to_model[e->ds.labels[i]];
        if (c < 0) continue;
        e->paths[e->n] = e->ds.paths[i];
        e->labels[e->n++] = c;
    }
    if (!e->n) return kt_err_set(err, KT_ERR_DATA, "%s: no images in the classes the model knows", dir);
    return KT_OK;
}

static kt_status run(evaluator *e, int batch, kt_err *err)
{
    const int nc = e->inf.nclasses;
    kt_status st;
    float *probs = malloc(sizeof(float) * (size_t)batch * nc);
    int *lab = malloc(sizeof(int) * (size_t)batch);
    e->misses = malloc(sizeof *e->misses * (size_t)e->n);
    e->bad = malloc(sizeof(int) * (size_t)e->n);
    e->bad_msg = calloc((size_t)e->n, sizeof *e->bad_msg);
    if (!probs || !lab || !e->misses || !e->bad || !e->bad_msg) {
        st = kt_err_set(err, KT_ERR_RUNTIME, "out of memory");
        goto done;
    }
    if ((st = kt_metrics_init(&e->m, nc, err)) != KT_OK ||
        (st = kt_infer_start(&e->inf, e->paths, e->n, 1, err)) != KT_OK)
        goto done;
    const kt_batch *b;
    while ((st = kt_infer_next(&e->inf, &b, err)) == KT_OK && b) {
        kt_infer_skipped(&e->inf, b, on_skipped, e);
        if (b->n == 0) continue;
        const float *logits = kt_infer_run(&e->inf, b);
        for (int j = 0; j < b->n; j++) lab[j] = e->labels[b->samples[j]];
        /* Plain cross-entropy, as training's val_loss. */
        double loss = kt_softmax_ce(NULL, logits, lab, NULL, 0, b->n, nc);
        kt_metrics_add(&e->m, logits, lab, b->n, loss);
        kt_softmax(probs, logits, b->n, nc);
        for (int j = 0; j < b->n; j++) {
            int pred;
            kt_infer_top_k(&pred, logits + (size_t)j * nc, nc, 1);
            if (pred != lab[j])
                e->misses[e->nmiss++] = (miss){b->samples[j], pred, probs[(size_t)j * nc + pred]};
        }
    }
done:
    free(probs), free(lab);
    return st;
}

/* "path: reason" -> "reason" when it starts with path. */
static const char *reason(const char *msg, const char *path)
{
    size_t n = strlen(path);
    return strncmp(msg, path, n) == 0 && msg[n] == ':' && msg[n + 1] == ' ' ? msg + n + 2 : msg;
}

static kt_status print_json(const evaluator *e, const char *model, const char *dir, kt_err *err)
{
    cJSON *o = kt_metrics_json(&e->m, e->names);
    cJSON *cl = cJSON_CreateStringArray(e->names, e->inf.nclasses);
    cJSON *mis = cJSON_CreateArray(), *sk = cJSON_CreateArray(), *unk = cJSON_CreateArray();
    if (!o || !cl || !mis || !sk || !unk) {
        cJSON_Delete(o), cJSON_Delete(cl), cJSON_Delete(mis), cJSON_Delete(sk), cJSON_Delete(unk);
        return kt_err_set(err, KT_ERR_RUNTIME, "out of memory");
    }
    cJSON_AddStringToObject(o, "model", model);
    cJSON_AddStringToObject(o, "data", dir);
    cJSON_AddItemToObject(o, "classes", cl);
    for (int i = 0; i < e->nmiss; i++) {
        cJSON *x = cJSON_CreateObject();
        const miss *s = &e->misses[i];
        char num[32];
        cJSON_AddStringToObject(x, "image", e->paths[s->image]);
        cJSON_AddStringToObject(x, "label", e->names[e->labels[s->image]]);
        cJSON_AddStringToObject(x, "predicted", e->names[s->predicted]);
        snprintf(num, sizeof num, "%.6g", s->prob);
        cJSON_AddItemToObject(x, "prob", cJSON_CreateRaw(num));
        cJSON_AddItemToArray(mis, x);
    }
    cJSON_AddItemToObject(o, "misclassified", mis);
    for (int i = 0; i < e->nbad; i++) {
        cJSON *x = cJSON_CreateObject();
        const char *path = e->paths[e->bad[i]];
        cJSON_AddStringToObject(x, "image", path);
        cJSON_AddStringToObject(x, "error", reason(bad_msg(e, i), path));
        cJSON_AddItemToArray(sk, x);
    }
    cJSON_AddItemToObject(o, "skipped", sk);
    for (int f = 0; f < e->ds.nclasses; f++) {
        if (e->folder_to_model[f] >= 0) continue;
        cJSON *x = cJSON_CreateObject();
        cJSON_AddStringToObject(x, "class", e->ds.classes[f]);
        cJSON_AddNumberToObject(x, "images", e->ds.count[f]);
        cJSON_AddItemToArray(unk, x);
    }
    cJSON_AddItemToObject(o, "unknown_classes", unk);
    char *s = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    if (!s) return kt_err_set(err, KT_ERR_RUNTIME, "out of memory");
    printf("%s\n", s);
    free(s);
    return KT_OK;
}

static void print_text(const evaluator *e, const char *model, const char *dir)
{
    const kt_metrics *m = &e->m;
    const int nc = m->k;
    int w = 5;
    for (int c = 0; c < nc; c++)
        if ((int)strlen(e->names[c]) > w) w = (int)strlen(e->names[c]);
    if (w > 40) w = 40;
    printf("model     %s\ndata      %s (%lld images)\n", model, dir, (long long)m->n);
    printf("accuracy  %.4f  (%lld of %lld)\n", kt_metrics_acc(m), (long long)m->top1, (long long)m->n);
    if (nc >= 5) printf("top-5     %.4f  (%lld of %lld)\n", kt_metrics_top5(m), (long long)m->top5, (long long)m->n);
    printf("loss      %.4f\n\n", kt_metrics_loss(m));
    printf("%-*s  precision  recall      f1  support\n", w, "class");
    for (int c = 0; c < nc; c++) {
        double p, r, f1;
        int64_t sup;
        kt_metrics_class(m, c, &p, &r, &f1, &sup);
        printf("%-*.*s  %9.4f  %6.4f  %6.4f  %7lld\n", w, w, e->names[c], p, r, f1, (long long)sup);
    }
    /* Columns as wide as their class name (or count), so the names head them. */
    printf("\nconfusion (rows: true class, columns: predicted)\n%-*s", w, "");
    for (int c = 0; c < nc; c++) {
        int cw = (int)strlen(e->names[c]) < 16 ? (int)strlen(e->names[c]) : 16;
        printf("  %*.*s", cw < 7 ? 7 : cw, 16, e->names[c]);
    }
    printf("\n");
    for (int r = 0; r < nc; r++) {
        printf("%-*.*s", w, w, e->names[r]);
        for (int c = 0; c < nc; c++) {
            int cw = (int)strlen(e->names[c]) < 16 ? (int)strlen(e->names[c]) : 16;
            printf("  %*lld", cw < 7 ? 7 : cw, (long long)m->confusion[(size_t)r * nc + c]);
        }
        printf("\n");
    }
    printf("\nmisclassified (%d): image, true class, predicted, probability\n", e->nmiss);
    for (int i = 0; i < e->nmiss; i++) {
        const miss *s = &e->misses[i];
        printf("%s\t%s\t%s\t%.6f\n", e->paths[s->image], e->names[e->labels[s->image]],
               e->names[s->predicted], s->prob);
    }
    if (e->nbad) {
        printf("\nskipped (%d unreadable):\n", e->nbad);
        for (int i = 0; i < e->nbad; i++) printf("%s\n", bad_msg(e, i));
    }
    for (int f = 0, first = 1; f < e->ds.nclasses; f++) {
        if (e->folder_to_model[f] >= 0) continue;
        if (first) printf("\nclasses the model does not know (left out):\n"), first = 0;
        printf("%s\t%d images\n", e->ds.classes[f], e->ds.count[f]);
    }
}

kt_status kt_cmd_eval(int argc, char **argv, kt_err *err)
{
    const char *model = NULL, *labels_path = NULL;
    int json = 0, batch = 32, threads = 0, resize = 0, size = 0, strict = 0;
    kt_opt opts[] = {
        {"model", 'm', KT_OPT_STRING, "MODEL", "kt checkpoint, or weights file / model.json with its ImageNet head", 0, 0, &model},
        {"json", 0, KT_OPT_FLAG, NULL, "the whole report as one JSON object on stdout", 0, 0, &json},
        {"labels", 0, KT_OPT_STRING, "FILE", "class names for a pretrained model (as kt predict)", 0, 0, &labels_path},
        {"strict", 0, KT_OPT_FLAG, NULL, "exit 3 when an image was unreadable or a folder class unknown", 0, 0, &strict},
        {"batch", 'b', KT_OPT_INT, "N", "images per forward pass (default 32)", 1, 1024, &batch},
        {"threads", 't', KT_OPT_INT, "N", "threads (default: all cores)", 1, 256, &threads},
        {"resize", 0, KT_OPT_INT, "N", "shorter side resized to N before the crop (default: the checkpoint's, else 256)", 1, 8192, &resize},
        {"size", 0, KT_OPT_INT, "N", "centre crop side, the network input (default: the checkpoint's, else 224)", 32, 4096, &size},
    };
    static const kt_cmd cmd = {"eval", "measure a trained model on a labelled image folder",
                               "kt eval -m MODEL [options] DIR"};
    char **pos = NULL;
    int npos = 0;
    evaluator e = {0};
    kt_status st = kt_cli_parse(&cmd, opts, KT_NOPTS(opts), argc, argv, &pos, &npos, err);
    if (st != KT_OK || !pos) return st;
    if (!model) return kt_err_set(err, KT_ERR_USAGE, "kt eval needs --model");
    if (npos != 1) return kt_err_set(err, KT_ERR_USAGE, "kt eval takes one folder DIR/<class>/<image>, %d given", npos);
    const char *dir = pos[0];
    struct stat sb;
    if (stat(dir, &sb) != 0 || !S_ISDIR(sb.st_mode))
        return kt_err_set(err, KT_ERR_USAGE, "%s: %s", dir, errno ? strerror(errno) : "not a folder");
    if (threads) kt_blas_set_threads(threads);
    if ((st = kt_dataset_scan_lenient(&e.ds, dir, err)) != KT_OK) goto fail;
    if (e.ds.n == 0) {
        st = kt_err_set(err, KT_ERR_DATA, "%s: no images in class folders (DIR/<class>/<image>)", dir);
        goto fail;
    }
    if (batch > e.ds.n) batch = e.ds.n;
    if ((st = kt_infer_open(&e.inf, model, NULL, batch, resize, size, err)) != KT_OK ||
        (st = kt_infer_labels(&e.inf, model, labels_path, err)) != KT_OK ||
        (st = match_classes(&e, dir, err)) != KT_OK)
        goto fail;
    int unknown = 0;
    for (int f = 0; f < e.ds.nclasses; f++)
        if (e.folder_to_model[f] < 0) {
            fprintf(stderr, "kt: warning: %s/%s: class '%s' is not one of the model's; its %d images are left out\n",
                    dir, e.ds.classes[f], e.ds.classes[f], e.ds.count[f]);
            unknown++;
        }
    if ((st = run(&e, batch, err)) != KT_OK) goto fail;
    for (int i = 0; i < e.nbad; i++)
        fprintf(stderr, "kt: warning: skipped %s\n", bad_msg(&e, i));
    if (e.m.n == 0) {
        st = kt_err_set(err, KT_ERR_DATA, "%s: none of the %d images could be read", dir, e.n);
        goto fail;
    }
    if (json)
        st = print_json(&e, model, dir, err);
    else
        print_text(&e, model, dir);
    if (st == KT_OK && fflush(stdout) != 0)
        st = kt_err_set(err, KT_ERR_RUNTIME, "writing the report to stdout: %s", strerror(errno));
    if (st == KT_OK && strict && (e.nbad || unknown))
        st = kt_err_set(err, KT_ERR_DATA, "--strict: %d unreadable images, %d unknown class folders",
                        e.nbad, unknown);
fail:
    evaluator_free(&e);
    return st;
}
