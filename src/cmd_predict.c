/* cmd_predict.c - "kt predict -m MODEL IMAGE|DIR...": the top-k classes of
 * each image under a pretrained classifier (the model's own fc head).
 *
 * Results go to stdout, one block (or with --json one JSON object per line)
 * per image, in input order; warnings and errors go to stderr. Class names
 * come from --labels (one per line, a JSON array, or a JSON object mapping
 * "index" to name, like the assets/labels.json of the Keras weights package);
 * for a TF.js model whose package holds assets/labels.json beside the model
 * folder, that file is used when --labels is not given.
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
#include "infer.h"
#include "ops.h"

typedef struct {
    char **name;            /* [n], NULL entries for indices the file does not name */
    int n;
    char *pool;             /* the file's text, names point into it or are strdup'd */
} labels;

static void labels_free(labels *l)
{
    for (int i = 0; l->name && i < l->n; i++) free(l->name[i]);
    free(l->name), free(l->pool);
    memset(l, 0, sizeof *l);
}

static char *slurp(const char *path, kt_err *err)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        kt_err_set(err, KT_ERR_USAGE, "%s: %s", path, strerror(errno));
        return NULL;
    }
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap);
    while (buf) {
        n += fread(buf + n, 1, cap - n - 1, f);
        if (n < cap - 1) break;
        char *b = realloc(buf, cap *= 2);
        if (!b) free(buf);
        buf = b;
    }
    fclose(f);
    if (!buf) kt_err_set(err, KT_ERR_RUNTIME, "out of memory reading %s", path);
    else buf[n] = '\0';
    return buf;
}

/* Names for classes 0..nclasses-1. JSON: an array of strings or an object
 * {"0": "tench", ...}; otherwise one name per line (a trailing \r is
 * dropped). Indices outside the model's classes are an error. */
static kt_status labels_load(labels *l, const char *path, int nclasses, kt_err *err)
{
    memset(l, 0, sizeof *l);
    char *text = slurp(path, err);
    if (!text) return err->status;
    l->name = calloc((size_t)nclasses, sizeof *l->name);
    l->n = nclasses;
    if (!l->name) {
        free(text);
        return kt_err_set(err, KT_ERR_RUNTIME, "out of memory");
    }
    const char *p = text;
    while (*p == ' ' || *p == '\n' || *p == '\r' || *p == '\t') p++;
    kt_status st = KT_OK;
    if (*p == '{' || *p == '[') {
        cJSON *j = cJSON_Parse(text);
        if (!j) {
            st = kt_err_set(err, KT_ERR_USAGE, "%s: not valid JSON", path);
        } else {
            int i = 0;
            const cJSON *e;
            cJSON_ArrayForEach(e, j) {
                long idx = i++;
                if (cJSON_IsObject(j)) {
                    char *end;
                    idx = strtol(e->string, &end, 10);
                    if (*end || end == e->string) idx = -1;
                }
                if (!cJSON_IsString(e) || idx < 0 || idx >= nclasses) {
                    st = kt_err_set(err, KT_ERR_USAGE,
                                    "%s: entry \"%s\" is not a class index 0..%d with a name", path,
                                    e->string ? e->string : "?", nclasses - 1);
                    break;
                }
                free(l->name[idx]);
                if (!(l->name[idx] = strdup(e->valuestring))) {
                    st = kt_err_set(err, KT_ERR_RUNTIME, "out of memory");
                    break;
                }
            }
            cJSON_Delete(j);
        }
    } else {
        int i = 0;
        for (char *line = text; *line && st == KT_OK; i++) {
            char *nl = strchr(line, '\n');
            if (nl) *nl = '\0';
            size_t len = strlen(line);
            if (len && line[len - 1] == '\r') line[len - 1] = '\0';
            if (i >= nclasses) {
                st = kt_err_set(err, KT_ERR_USAGE, "%s: more lines than the model's %d classes",
                                path, nclasses);
                break;
            }
            if (!(l->name[i] = strdup(line))) st = kt_err_set(err, KT_ERR_RUNTIME, "out of memory");
            line = nl ? nl + 1 : line + len;
        }
    }
    free(text);
    if (st != KT_OK) labels_free(l);
    return st;
}

/* The Keras weights package keeps its labels at package/assets/labels.json
 * next to package/ResNet50/model.json. */
static int find_package_labels(char *buf, size_t n, const char *model)
{
    struct stat sb;
    if (stat(model, &sb) != 0) return 0;
    const char *slash = strrchr(model, '/');
    int dlen = S_ISDIR(sb.st_mode) ? (int)strlen(model) : slash ? (int)(slash - model) : 0;
    const char *dir = dlen ? model : ".";
    if (!dlen) dlen = 1;
    if (snprintf(buf, n, "%.*s/../assets/labels.json", dlen, dir) >= (int)n) return 0;
    return stat(buf, &sb) == 0 && S_ISREG(sb.st_mode);
}

/* Indices of the k largest probabilities, largest first (ties: lower index
 * first, as a stable sort would). */
static void top_k(int *idx, const float *p, int nclasses, int k)
{
    for (int j = 0; j < k; j++) idx[j] = -1;
    for (int c = 0; c < nclasses; c++) {
        int pos = k;
        while (pos > 0 && (idx[pos - 1] < 0 || p[c] > p[idx[pos - 1]])) pos--;
        if (pos >= k) continue;
        memmove(idx + pos + 1, idx + pos, sizeof(int) * (size_t)(k - pos - 1));
        idx[pos] = c;
    }
}

/* Prints one image's result (text block or one JSON line). */
static kt_status report(const char *image, const float *probs, int nclasses, int k,
                        const labels *lab, int json, kt_err *err)
{
    int idx[64];
    if (k > nclasses) k = nclasses;
    top_k(idx, probs, nclasses, k);
    if (!json) {
        printf("%s\n", image);
        for (int j = 0; j < k; j++) {
            const char *name = lab->name && lab->name[idx[j]] ? lab->name[idx[j]] : "";
            printf("  %8.6f  %4d  %s\n", probs[idx[j]], idx[j], name);
        }
        return KT_OK;
    }
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "image", image);
    cJSON *top = cJSON_AddArrayToObject(o, "top");
    for (int j = 0; j < k && top; j++) {
        cJSON *e = cJSON_CreateObject();
        cJSON_AddNumberToObject(e, "index", idx[j]);
        if (lab->name && lab->name[idx[j]])
            cJSON_AddStringToObject(e, "label", lab->name[idx[j]]);
        else
            cJSON_AddNullToObject(e, "label");
        /* 6 significant digits: cJSON would print the float's double value
         * with 17, noise beyond float32 precision */
        char num[32];
        snprintf(num, sizeof num, "%.6g", probs[idx[j]]);
        cJSON_AddItemToObject(e, "prob", cJSON_CreateRaw(num));
        cJSON_AddItemToArray(top, e);
    }
    char *s = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    if (!s) return kt_err_set(err, KT_ERR_RUNTIME, "out of memory");
    printf("%s\n", s);
    free(s);
    return KT_OK;
}

kt_status kt_cmd_predict(int argc, char **argv, kt_err *err)
{
    const char *model = NULL, *labels_path = NULL;
    int k = 5, json = 0, batch = 16, threads = 0, resize = 256, size = 224, skip_bad = 0;
    kt_opt opts[] = {
        {"model", 'm', KT_OPT_STRING, "MODEL", "weights file, model.json or kt checkpoint", 0, 0, &model},
        {"top", 'k', KT_OPT_INT, "K", "show the K most probable classes (default 5)", 1, 64, &k},
        {"labels", 0, KT_OPT_STRING, "FILE",
         "class names: one per line, a JSON array or a JSON {\"index\": name} map", 0, 0, &labels_path},
        {"json", 0, KT_OPT_FLAG, NULL, "one JSON object per image on stdout", 0, 0, &json},
        {"batch", 'b', KT_OPT_INT, "N", "images per forward pass (default 16)", 1, 1024, &batch},
        {"threads", 't', KT_OPT_INT, "N", "threads (default: all cores)", 1, 256, &threads},
        {"resize", 0, KT_OPT_INT, "N", "shorter side resized to N before the crop (default 256)", 1, 8192, &resize},
        {"size", 0, KT_OPT_INT, "N", "centre crop side, the network input (default 224)", 32, 4096, &size},
        {"skip-bad", 0, KT_OPT_FLAG, NULL, "leave out unreadable images with a warning instead of failing", 0, 0, &skip_bad},
    };
    static const kt_cmd cmd = {"predict", "classify images with a trained model",
                               "kt predict -m MODEL [options] IMAGE|DIR..."};
    char **pos = NULL, **paths = NULL;
    int npos = 0, npaths = 0;
    float *probs = NULL;
    labels lab = {0};
    kt_infer inf = {0};
    kt_status st = kt_cli_parse(&cmd, opts, KT_NOPTS(opts), argc, argv, &pos, &npos, err);
    if (st != KT_OK || !pos) return st;
    if (!model) return kt_err_set(err, KT_ERR_USAGE, "kt predict needs --model");
    if (threads) kt_blas_set_threads(threads);
    if ((st = kt_infer_list(&paths, &npaths, pos, npos, err)) != KT_OK) goto fail;
    if (batch > npaths) batch = npaths;
    if ((st = kt_infer_open(&inf, model, NULL, batch, resize, size, err)) != KT_OK) goto fail;
    const int nc = inf.a->num_classes;
    char found[4096];
    if (!labels_path && find_package_labels(found, sizeof found, model)) labels_path = found;
    if (labels_path && (st = labels_load(&lab, labels_path, nc, err)) != KT_OK) goto fail;
    probs = malloc(sizeof(float) * (size_t)batch * nc);
    if (!probs) {
        st = kt_err_set(err, KT_ERR_RUNTIME, "out of memory");
        goto fail;
    }
    if ((st = kt_infer_start(&inf, (const char *const *)paths, npaths, skip_bad, err)) != KT_OK)
        goto fail;
    const kt_batch *b = NULL;
    while (st == KT_OK && (st = kt_infer_next(&inf, &b, err)) == KT_OK && b) {
        kt_infer_warn(b);
        if (b->n == 0) continue;
        kt_softmax(probs, kt_infer_run(&inf, b), b->n, nc);
        for (int j = 0; j < b->n && st == KT_OK; j++)
            st = report(paths[b->samples[j]], probs + (size_t)j * nc, nc, k, &lab, json, err);
    }
    if (st == KT_OK && fflush(stdout) != 0)
        st = kt_err_set(err, KT_ERR_RUNTIME, "writing results to stdout: %s", strerror(errno));
fail:
    labels_free(&lab);
    free(probs), free(paths);
    kt_infer_close(&inf);
    return st;
}
