/* infer.c - batch inference glue for kt embed and kt predict (see infer.h).
 *
 * Decoding runs on the loader's worker threads, one per core, a batch
 * ahead: while the network runs they compete with it for the cores (the
 * total work is the same), and while the next batch is not ready they decode
 * it in parallel instead of on one thread. Only the window the centre crop
 * needs is decoded (the loader's eval path).
 */
#include "infer.h"

#include "blas.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "blas.h"

kt_status kt_infer_open(kt_infer *inf, const char *model, const char *layer, int batch,
                        int resize, int crop, kt_err *err)
{
    memset(inf, 0, sizeof *inf);
    inf->batch = batch, inf->size = crop, inf->resize = resize;
    kt_status st = kt_weights_load(&inf->w, model, err);
    if (st != KT_OK) return st;
    if ((st = kt_arch_init(&inf->a, inf->w, err)) != KT_OK) return st;
    if (layer) {
        if ((st = kt_arch_point_find(inf->a, layer, &inf->point, err)) != KT_OK) return st;
    } else if (inf->a->num_classes > 0) {
        inf->point = 3 + inf->a->nblocks;
    } else {
        return kt_err_set(err, KT_ERR_USAGE,
                          "%s: the model has no classifier of its own (no logits)", model);
    }
    if (crop > resize)
        return kt_err_set(err, KT_ERR_USAGE, "crop size %d is larger than the resize %d", crop,
                          resize);
    if (inf->point > 0) {
        kt_resnet_plan plan = {.batch = batch, .image_size = crop, .freeze = inf->point,
                               .stop = inf->point};
        if ((st = kt_resnet_init(&inf->r, inf->a, &plan, err)) != KT_OK) return st;
    }
    return KT_OK;
}

void kt_infer_close(kt_infer *inf)
{
    kt_loader_free(inf->loader);
    kt_dataset_free(&inf->ds);
    kt_resnet_free(inf->r);
    kt_arch_free(inf->a);
    kt_weights_free(inf->w);
    memset(inf, 0, sizeof *inf);
}

void kt_infer_shape(const kt_infer *inf, int *c, int *h, int *w)
{
    kt_arch_point_shape(inf->a, inf->point, inf->size, c, h, w);
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

kt_status kt_infer_list(char ***paths, int *n, char **args, int nargs, kt_err *err)
{
    strvec all = {0};
    kt_status st = KT_OK;
    *paths = NULL, *n = 0;
    for (int i = 0; i < nargs && st == KT_OK; i++) {
        struct stat sb;
        if (stat(args[i], &sb) != 0) {
            st = kt_err_set(err, KT_ERR_USAGE, "%s: %s", args[i], strerror(errno));
        } else if (S_ISDIR(sb.st_mode)) {
            int first = all.n;
            size_t len = strlen(args[i]);
            char *dir = strdup(args[i]);
            if (!dir) {
                st = kt_err_set(err, KT_ERR_RUNTIME, "out of memory");
                break;
            }
            while (len > 1 && dir[len - 1] == '/') dir[--len] = '\0';
            st = walk(&all, dir, 0, err);
            free(dir);
            if (st == KT_OK && all.n == first)
                st = kt_err_set(err, KT_ERR_USAGE, "%s: folder holds no files", args[i]);
            if (st == KT_OK) qsort(all.v + first, (size_t)(all.n - first), sizeof *all.v, cmp_str);
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
                        .norm = inf->a->norm,
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

const float *kt_infer_run(kt_infer *inf, const kt_batch *b)
{
    if (!inf->r) return b->input;
    return kt_resnet_forward(inf->r, 0, b->input, b->n, 0);
}
