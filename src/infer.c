/* infer.c - batch inference glue for kt embed, kt predict and kt eval (see
 * infer.h).
 *
 * A kt checkpoint is recognised by its kt metadata and then must be a whole
 * one (kt_ckpt_open checks the tensor count and checksum): a file that
 * claims to be a checkpoint but is damaged is refused rather than run with
 * defaults. Its head always runs on the avgpool features through head.c, so
 * a plain "fc" and an MLP take the same path.
 *
 * Decoding runs on the loader's worker threads, one per core, a batch
 * ahead: while the network runs they compete with it for the cores (the
 * total work is the same), and while the next batch is not ready they decode
 * it in parallel instead of on one thread. Only the window the centre crop
 * needs is decoded (the loader's eval path).
 */
#include "infer.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "blas.h"

/* A kt checkpoint: the metadata checked against the tensors, its head with
 * the trained values, class names and preprocessing. */
static kt_status open_checkpoint(kt_infer *inf, kt_err *err)
{
    kt_status st = kt_ckpt_open(&inf->meta, inf->w, err);
    if (st == KT_OK) st = kt_ckpt_info_parse(&inf->info, inf->meta, kt_weights_path(inf->w), err);
    if (st != KT_OK) return st;
    if (inf->info.features != inf->a->features)
        return kt_err_set(err, KT_ERR_RUNTIME,
                          "%s: kt metadata: the head takes %d features, the network gives %d",
                          kt_weights_path(inf->w), inf->info.features, inf->a->features);
    inf->norm = inf->info.norm;
    inf->nclasses = inf->info.nclasses;
    inf->classes = inf->info.classes;
    return KT_OK;
}

kt_status kt_infer_open(kt_infer *inf, const char *model, const char *layer, int batch,
                        int resize, int crop, kt_err *err)
{
    memset(inf, 0, sizeof *inf);
    kt_status st = kt_weights_load(&inf->w, model, err);
    if (st != KT_OK) return st;
    if ((st = kt_arch_init(&inf->a, inf->w, err)) != KT_OK) return st;
    inf->norm = inf->a->norm;
    const int avgpool = 2 + inf->a->nblocks;
    int ckpt = kt_weights_kt_metadata(inf->w) != NULL;
    if (ckpt && (st = open_checkpoint(inf, err)) != KT_OK) return st;
    inf->classify = !layer || (ckpt && strcmp(layer, "logits") == 0);
    if (!inf->classify) {
        if ((st = kt_arch_point_find(inf->a, layer, &inf->point, err)) != KT_OK) return st;
    } else if (ckpt) {
        /* The head runs on avgpool even when it is a plain "fc" the arch
         * could run: one path for every head shape. */
        inf->point = avgpool;
        if ((st = kt_ckpt_head(&inf->head, inf->w, &inf->info, batch, err)) != KT_OK) return st;
    } else if (inf->a->num_classes > 0) {
        inf->point = avgpool + 1;
        inf->nclasses = inf->a->num_classes;
    } else {
        return kt_err_set(err, KT_ERR_USAGE,
                          "%s: the model has no classifier (no fc head and no kt checkpoint "
                          "metadata): give a kt checkpoint or a pretrained model with its head",
                          model);
    }
    inf->batch = batch;
    inf->resize = resize > 0 ? resize : ckpt ? inf->info.resize : 256;
    inf->size = crop > 0 ? crop : ckpt ? inf->info.image_size : 224;
    if (inf->size > inf->resize)
        return kt_err_set(err, KT_ERR_USAGE, "crop size %d is larger than the resize %d",
                          inf->size, inf->resize);
    if (inf->point > 0) {
        kt_resnet_plan plan = {.batch = batch, .image_size = inf->size, .freeze = inf->point,
                               .stop = inf->point};
        if ((st = kt_resnet_init(&inf->r, inf->a, &plan, err)) != KT_OK) return st;
    }
    return KT_OK;
}

void kt_infer_close(kt_infer *inf)
{
    kt_loader_free(inf->loader);
    kt_dataset_free(&inf->ds);
    kt_head_free(inf->head);
    kt_resnet_free(inf->r);
    for (int i = 0; inf->labels && i < inf->nclasses; i++) free(inf->labels[i]);
    free(inf->labels);
    kt_ckpt_info_free(&inf->info);
    cJSON_Delete(inf->meta);
    kt_arch_free(inf->a);
    kt_weights_free(inf->w);
    memset(inf, 0, sizeof *inf);
}

void kt_infer_shape(const kt_infer *inf, int *c, int *h, int *w)
{
    if (inf->classify) {
        *c = inf->nclasses, *h = *w = 1;
        return;
    }
    kt_arch_point_shape(inf->a, inf->point, inf->size, c, h, w);
}

/* --------------------------------------------------------------- labels */

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

/* Parses text (a JSON array / index map, or lines) into name[0..n). */
static kt_status parse_labels(char **name, int n, char *text, const char *path, kt_err *err)
{
    const char *p = text;
    while (*p == ' ' || *p == '\n' || *p == '\r' || *p == '\t') p++;
    kt_status st = KT_OK;
    if (*p == '{' || *p == '[') {
        cJSON *j = cJSON_Parse(text);
        if (!j) return kt_err_set(err, KT_ERR_USAGE, "%s: not valid JSON", path);
        int i = 0;
        const cJSON *e;
        cJSON_ArrayForEach(e, j) {
            long idx = i++;
            if (cJSON_IsObject(j)) {
                char *end;
                idx = strtol(e->string, &end, 10);
                if (*end || end == e->string) idx = -1;
            }
            if (!cJSON_IsString(e) || idx < 0 || idx >= n) {
                st = kt_err_set(err, KT_ERR_USAGE,
                                "%s: entry \"%s\" is not a class index 0..%d with a name", path,
                                e->string ? e->string : "?", n - 1);
                break;
            }
            free(name[idx]);
            if (!(name[idx] = strdup(e->valuestring))) {
                st = kt_err_set(err, KT_ERR_RUNTIME, "out of memory");
                break;
            }
        }
        cJSON_Delete(j);
        return st;
    }
    int i = 0;
    for (char *line = text; *line && st == KT_OK; i++) {
        char *nl = strchr(line, '\n');
        if (nl) *nl = '\0';
        size_t len = strlen(line);
        if (len && line[len - 1] == '\r') line[len - 1] = '\0';
        if (i >= n)
            return kt_err_set(err, KT_ERR_USAGE, "%s: more lines than the model's %d classes", path, n);
        if (!(name[i] = strdup(line))) st = kt_err_set(err, KT_ERR_RUNTIME, "out of memory");
        line = nl ? nl + 1 : line + len;
    }
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

kt_status kt_infer_labels(kt_infer *inf, const char *model, const char *path, kt_err *err)
{
    char found[4096];
    const int n = inf->nclasses;
    if (!path) {
        if (kt_weights_format(inf->w) != KT_FORMAT_TFJS ||
            !find_package_labels(found, sizeof found, model))
            return KT_OK;
        path = found;
    }
    if (n <= 0) return kt_err_set(err, KT_ERR_USAGE, "%s: the model has no classes to name", path);
    char *text = slurp(path, err);
    if (!text) return err->status;
    char **name = calloc((size_t)n, sizeof *name);
    kt_status st = name ? parse_labels(name, n, text, path, err)
                        : kt_err_set(err, KT_ERR_RUNTIME, "out of memory");
    free(text);
    if (st != KT_OK) {
        for (int i = 0; name && i < n; i++) free(name[i]);
        free(name);
        return st;
    }
    for (int i = 0; inf->labels && i < n; i++) free(inf->labels[i]);
    free(inf->labels);
    inf->labels = name;
    inf->classes = (const char *const *)name;
    return KT_OK;
}

const char *kt_infer_class_name(const kt_infer *inf, int c, char *buf, int size)
{
    if (inf->classes && inf->classes[c]) return inf->classes[c];
    snprintf(buf, (size_t)size, "%d", c);
    return buf;
}

void kt_infer_top_k(int *idx, const float *logits, int nclasses, int k)
{
    for (int j = 0; j < k; j++) idx[j] = -1;
    for (int c = 0; c < nclasses; c++) {
        int pos = k;
        while (pos > 0 && (idx[pos - 1] < 0 || logits[c] > logits[idx[pos - 1]])) pos--;
        if (pos >= k) continue;
        memmove(idx + pos + 1, idx + pos, sizeof(int) * (size_t)(k - pos - 1));
        idx[pos] = c;
    }
}

/* ------------------------------------------------------------ file list */

typedef struct {
    char **v;
    int n, cap;
} strvec;

static int sv_push(strvec *s, const char *p)
{
    if (s->n == s->cap) {
        int cap = s->cap ? 2 * s->cap : 64;
        char **v = realloc(s->v, sizeof *v * (size_t)cap);
        if (!v) return 0;
        s->v = v, s->cap = cap;
    }
    if (!(s->v[s->n] = strdup(p))) return 0;
    s->n++;
    return 1;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Appends every regular file below dir (recursively, dot-names skipped);
 * the caller sorts. depth bounds symlink loops. */
static kt_status walk(strvec *out, const char *dir, int depth, kt_err *err)
{
    if (depth > 32) return kt_err_set(err, KT_ERR_USAGE, "%s: folders nested too deep (a link loop?)", dir);
    DIR *d = opendir(dir);
    if (!d) return kt_err_set(err, KT_ERR_USAGE, "%s: %s", dir, strerror(errno));
    kt_status st = KT_OK;
    struct dirent *e;
    char path[4096];
    while (st == KT_OK && (e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        if (snprintf(path, sizeof path, "%s/%s", dir, e->d_name) >= (int)sizeof path) {
            st = kt_err_set(err, KT_ERR_USAGE, "%s/%s: path too long", dir, e->d_name);
            break;
        }
        struct stat sb;
        if (stat(path, &sb) != 0) continue; /* dangling link */
        if (S_ISDIR(sb.st_mode))
            st = walk(out, path, depth + 1, err);
        else if (S_ISREG(sb.st_mode) && !sv_push(out, path))
            st = kt_err_set(err, KT_ERR_RUNTIME, "out of memory listing %s", dir);
    }
    closedir(d);
    return st;
}

/* Adds the folder dir's files, sorted (an empty folder is an error). */
static kt_status add_dir(strvec *all, const char *arg, kt_err *err)
{
    int first = all->n;
    size_t len = strlen(arg);
    char *dir = strdup(arg);
    if (!dir) return kt_err_set(err, KT_ERR_RUNTIME, "out of memory");
    while (len > 1 && dir[len - 1] == '/') dir[--len] = '\0';
    kt_status st = walk(all, dir, 0, err);
    free(dir);
    if (st == KT_OK && all->n == first)
        st = kt_err_set(err, KT_ERR_USAGE, "%s: folder holds no files", arg);
    if (st == KT_OK) qsort(all->v + first, (size_t)(all->n - first), sizeof *all->v, cmp_str);
    return st;
}

/* One path per line of stdin: folders are walked, anything else is kept
 * as is (a missing file becomes a bad image, reported per image). */
static kt_status read_stdin(strvec *all, kt_err *err)
{
    char *line = NULL;
    size_t cap = 0;
    ssize_t len;
    kt_status st = KT_OK;
    while (st == KT_OK && (len = getline(&line, &cap, stdin)) >= 0) {
        while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r')) line[--len] = '\0';
        if (len == 0) continue;
        struct stat sb;
        if (stat(line, &sb) == 0 && S_ISDIR(sb.st_mode))
            st = add_dir(all, line, err);
        else if (!sv_push(all, line))
            st = kt_err_set(err, KT_ERR_RUNTIME, "out of memory");
    }
    if (st == KT_OK && ferror(stdin)) st = kt_err_set(err, KT_ERR_RUNTIME, "reading paths from stdin: %s", strerror(errno));
    free(line);
    return st;
}

kt_status kt_infer_list(char ***paths, int *n, char **args, int nargs, kt_err *err)
{
    strvec all = {0};
    kt_status st = KT_OK;
    *paths = NULL, *n = 0;
    int stdin_used = 0;
    for (int i = 0; i < nargs && st == KT_OK; i++) {
        struct stat sb;
        if (strcmp(args[i], "-") == 0) {
            if (stdin_used++)
                st = kt_err_set(err, KT_ERR_USAGE, "'-' (paths from stdin) given twice");
            else
                st = read_stdin(&all, err);
        } else if (stat(args[i], &sb) != 0) {
            st = kt_err_set(err, KT_ERR_USAGE, "%s: %s", args[i], strerror(errno));
        } else if (S_ISDIR(sb.st_mode)) {
            st = add_dir(&all, args[i], err);
        } else if (!sv_push(&all, args[i])) {
            st = kt_err_set(err, KT_ERR_RUNTIME, "out of memory");
        }
    }
    if (st == KT_OK && all.n == 0) st = kt_err_set(err, KT_ERR_USAGE, "no input images given");
    if (st == KT_OK) {
        /* One allocation: the pointer array followed by the strings. */
        size_t bytes = sizeof(char *) * (size_t)all.n;
        for (int i = 0; i < all.n; i++) bytes += strlen(all.v[i]) + 1;
        char **v = malloc(bytes);
        if (!v) {
            st = kt_err_set(err, KT_ERR_RUNTIME, "out of memory");
        } else {
            char *s = (char *)(v + all.n);
            for (int i = 0; i < all.n; i++) {
                size_t l = strlen(all.v[i]) + 1;
                memcpy(s, all.v[i], l);
                v[i] = s, s += l;
            }
            *paths = v, *n = all.n;
        }
    }
    for (int i = 0; i < all.n; i++) free(all.v[i]);
    free(all.v);
    return st;
}

/* ------------------------------------------------------------- batches */

kt_status kt_infer_start(kt_infer *inf, const char *const *paths, int n, int skip_bad,
                         kt_err *err)
{
    kt_status st = kt_dataset_from_paths(&inf->ds, paths, n, err);
    if (st != KT_OK) return st;
    kt_loader_opts o = {.ds = &inf->ds,
                        .batch = inf->batch,
                        .image_size = inf->size,
                        .resize = inf->resize,
                        .norm = inf->norm,
                        .workers = kt_blas_threads(),
                        .prefetch = 1,
                        .fail_on_bad = !skip_bad,
                        .epochs = 1};
    return kt_loader_init(&inf->loader, &o, err);
}

kt_status kt_infer_next(kt_infer *inf, const kt_batch **b, kt_err *err)
{
    return kt_loader_next(inf->loader, b, err);
}

void kt_infer_warn(const kt_batch *b)
{
    for (const char *p = b->warnings; *p;) {
        const char *nl = strchr(p, '\n');
        int len = nl ? (int)(nl - p) : (int)strlen(p);
        if (len) fprintf(stderr, "kt: warning: skipped %.*s\n", len, p);
        p += len + (nl != NULL);
    }
}

void kt_infer_skipped(const kt_infer *inf, const kt_batch *b,
                      void (*fn)(void *ctx, int index, const char *msg), void *ctx)
{
    /* Batch k holds paths k*batch .. (no shuffle); b->samples lists the ones
     * kept, ascending. The loader's warnings give each bad file's message
     * once, in batch order, and every path occurs in one batch only. */
    int first = b->index * inf->batch, count = inf->ds.n - first;
    if (count > inf->batch) count = inf->batch;
    const char *w = b->warnings;
    char msg[sizeof(((kt_err *)0)->msg)];
    for (int i = first, j = 0; i < first + count; i++) {
        if (j < b->n && b->samples[j] == i) {
            j++;
            continue;
        }
        const char *path = inf->ds.paths[i], *nl = strchr(w, '\n');
        size_t plen = strlen(path), len = nl ? (size_t)(nl - w) : strlen(w);
        if (len > plen && strncmp(w, path, plen) == 0 && w[plen] == ':') {
            snprintf(msg, sizeof msg, "%.*s", (int)len, w);
            w += len + (nl != NULL);
        } else {
            snprintf(msg, sizeof msg, "%s: unreadable image", path);
        }
        fn(ctx, i, msg);
    }
}

const float *kt_infer_run(kt_infer *inf, const kt_batch *b)
{
    if (!inf->r) return b->input;
    const float *y = kt_resnet_forward(inf->r, 0, b->input, b->n, 0);
    return inf->head ? kt_head_forward(inf->head, y, b->n, 0, 0, 0) : y;
}
