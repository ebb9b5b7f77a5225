/* cmd_predict.c - "kt predict -m MODEL IMAGE|DIR|-...": the most probable
 * classes of each image under a kt checkpoint (its head, class names and
 * preprocessing) or a pretrained classifier (its own fc head).
 *
 * stdout gets one line per input image, in input order, and nothing else:
 *   text:  path TAB label TAB prob [TAB label TAB prob ...]   (-k pairs)
 *   JSON:  {"image": ..., "top": [{"index", "label", "prob"}, ...]}
 *          [, "abstained": true]  or  {"image": ..., "error": ...}
 * A bad image does not stop the others: its message goes to stderr (and its
 * JSON line to stdout), and the exit status is KT_ERR_DATA at the end. The
 * ranking is by logit, so the first class is the one kt eval (argmax)
 * counts. stdout is flushed after each batch, for pipelines.
 */
#include <cjson/cJSON.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "blas.h"
#include "cli.h"
#include "commands.h"
#include "infer.h"
#include "ops.h"

#define MAX_K 64
#define MSG sizeof(((kt_err *)0)->msg)

typedef struct {
    const kt_infer *inf;
    int k, json;
    double threshold;
    char *msg;              /* [batch][MSG] message of each left-out image, by batch position */
    unsigned char *bad;     /* [batch] 1: that position was left out */
    int first;              /* path index of the batch's first position */
    int nbad;
} predictor;

static void on_skipped(void *ctx, int index, const char *msg)
{
    predictor *p = ctx;
    int i = index - p->first;
    snprintf(p->msg + (size_t)i * MSG, MSG, "%s", msg);
    p->bad[i] = 1;
    p->nbad++;
}

/* A float as JSON with 6 significant digits (cJSON would print the double
 * value of the float with 17: noise past float32 precision). */
static cJSON *json_prob(float v)
{
    char num[32];
    snprintf(num, sizeof num, "%.6g", v);
    return cJSON_CreateRaw(num);
}

static kt_status print_json(cJSON *o, kt_err *err)
{
    char *s = o ? cJSON_PrintUnformatted(o) : NULL;
    cJSON_Delete(o);
    if (!s) return kt_err_set(err, KT_ERR_RUNTIME, "out of memory");
    printf("%s\n", s);
    free(s);
    return KT_OK;
}

static kt_status report(const predictor *p, const char *image, const float *logits,
                        const float *probs, kt_err *err)
{
    const kt_infer *inf = p->inf;
    int idx[MAX_K], k = p->k < inf->nclasses ? p->k : inf->nclasses;
    char buf[16];
    kt_infer_top_k(idx, logits, inf->nclasses, k);
    int abstain = probs[idx[0]] < p->threshold;
    if (!p->json) {
        printf("%s", image);
        for (int j = 0; j < k; j++)
            printf("\t%s\t%.6f", j == 0 && abstain ? "unknown" : kt_infer_class_name(inf, idx[j], buf, sizeof buf),
                   probs[idx[j]]);
        printf("\n");
        return KT_OK;
    }
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "image", image);
    cJSON *top = cJSON_AddArrayToObject(o, "top");
    for (int j = 0; j < k && top; j++) {
        cJSON *e = cJSON_CreateObject();
        cJSON_AddNumberToObject(e, "index", idx[j]);
        if (inf->classes && inf->classes[idx[j]])
            cJSON_AddStringToObject(e, "label", inf->classes[idx[j]]);
        else
            cJSON_AddNullToObject(e, "label");
        cJSON_AddItemToObject(e, "prob", json_prob(probs[idx[j]]));
        cJSON_AddItemToArray(top, e);
    }
    if (abstain) cJSON_AddTrueToObject(o, "abstained");
    return print_json(o, err);
}

/* msg is the loader's "path: reason"; JSON gets the reason. */
static kt_status report_error(const predictor *p, const char *image, const char *msg, kt_err *err)
{
    fprintf(stderr, "kt: error: %s\n", msg);
    if (!p->json) return KT_OK;
    size_t n = strlen(image);
    const char *reason = strncmp(msg, image, n) == 0 && msg[n] == ':' && msg[n + 1] == ' ' ? msg + n + 2 : msg;
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "image", image);
    cJSON_AddStringToObject(o, "error", reason);
    return print_json(o, err);
}

kt_status kt_cmd_predict(int argc, char **argv, kt_err *err)
{
    const char *model = NULL, *labels_path = NULL;
    int k = 1, json = 0, batch = 16, threads = 0, resize = 0, size = 0;
    double threshold = 0;
    kt_opt opts[] = {
        {"model", 'm', KT_OPT_STRING, "MODEL", "kt checkpoint, or weights file / model.json with its ImageNet head", 0, 0, &model},
        {"top", 'k', KT_OPT_INT, "K", "show the K most probable classes (default 1)", 1, MAX_K, &k},
        {"threshold", 0, KT_OPT_DOUBLE, "P", "label 'unknown' when the top probability is below P (default 0)", 0, 1, &threshold},
        {"labels", 0, KT_OPT_STRING, "FILE",
         "class names: one per line, a JSON array or a JSON {\"index\": name} map", 0, 0, &labels_path},
        {"json", 0, KT_OPT_FLAG, NULL, "one JSON object per image on stdout", 0, 0, &json},
        {"batch", 'b', KT_OPT_INT, "N", "images per forward pass (default 16)", 1, 1024, &batch},
        {"threads", 't', KT_OPT_INT, "N", "threads (default: all cores)", 1, 256, &threads},
        {"resize", 0, KT_OPT_INT, "N", "shorter side resized to N before the crop (default: the checkpoint's, else 256)", 1, 8192, &resize},
        {"size", 0, KT_OPT_INT, "N", "centre crop side, the network input (default: the checkpoint's, else 224)", 32, 4096, &size},
    };
    static const kt_cmd cmd = {"predict", "classify images with a trained model",
                               "kt predict -m MODEL [options] IMAGE|DIR|-..."};
    char **pos = NULL, **paths = NULL;
    int npos = 0, npaths = 0;
    float *probs = NULL;
    kt_infer inf = {0};
    kt_status st = kt_cli_parse(&cmd, opts, KT_NOPTS(opts), argc, argv, &pos, &npos, err);
    if (st != KT_OK || !pos) return st;
    predictor p = {.inf = &inf, .k = k, .json = json, .threshold = threshold};
    if (!model) return kt_err_set(err, KT_ERR_USAGE, "kt predict needs --model");
    if (threads) kt_blas_set_threads(threads);
    if ((st = kt_infer_list(&paths, &npaths, pos, npos, err)) != KT_OK) goto fail;
    if (batch > npaths) batch = npaths;
    if ((st = kt_infer_open(&inf, model, NULL, batch, resize, size, err)) != KT_OK ||
        (st = kt_infer_labels(&inf, model, labels_path, err)) != KT_OK)
        goto fail;
    const int nc = inf.nclasses;
    probs = malloc(sizeof(float) * (size_t)batch * nc);
    p.msg = malloc(MSG * (size_t)batch);
    p.bad = calloc((size_t)batch, 1);
    if (!probs || !p.msg || !p.bad) {
        st = kt_err_set(err, KT_ERR_RUNTIME, "out of memory");
        goto fail;
    }
    if ((st = kt_infer_start(&inf, (const char *const *)paths, npaths, 1, err)) != KT_OK) goto fail;
    const kt_batch *b = NULL;
    while (st == KT_OK && (st = kt_infer_next(&inf, &b, err)) == KT_OK && b) {
        p.first = b->index * batch;
        kt_infer_skipped(&inf, b, on_skipped, &p);
        const float *logits = NULL;
        if (b->n > 0) {
            logits = kt_infer_run(&inf, b);
            kt_softmax(probs, logits, b->n, nc);
        }
        /* Results and errors merged back into input order. */
        int count = npaths - p.first < batch ? npaths - p.first : batch;
        for (int i = 0, j = 0; i < count && st == KT_OK; i++) {
            const char *image = paths[p.first + i];
            if (p.bad[i]) {
                st = report_error(&p, image, p.msg + (size_t)i * MSG, err);
                p.bad[i] = 0;
            } else {
                st = report(&p, image, logits + (size_t)j * nc, probs + (size_t)j * nc, err);
                j++;
            }
        }
        if (fflush(stdout) != 0 && st == KT_OK)
            st = kt_err_set(err, KT_ERR_RUNTIME, "writing results to stdout: %s", strerror(errno));
    }
    if (st == KT_OK && p.nbad)
        st = kt_err_set(err, KT_ERR_DATA, "%d of %d images could not be classified", p.nbad, npaths);
fail:
    free(p.msg), free(p.bad);
    free(probs), free(paths);
    kt_infer_close(&inf);
    return st;
}
