/* infer.c - batch inference glue for kt embed and kt predict (see infer.h).
 *
 * Images are decoded one after the other on the calling thread: decoding a
 * photo costs ~1-3 ms against ~35 ms of network per image, and a decode
 * thread running beside OpenBLAS's threads would steal a core from every
 * GEMM. Only the window the centre crop needs is decoded (image.h ROI).
 */
#include "infer.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

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
    inf->input = malloc(sizeof(float) * 3 * (size_t)batch * crop * crop);
    if (!inf->input) return kt_err_set(err, KT_ERR_RUNTIME, "out of memory for the input batch");
    if (inf->point > 0) {
        kt_resnet_plan plan = {.batch = batch, .image_size = crop, .freeze = inf->point,
                               .stop = inf->point};
        if ((st = kt_resnet_init(&inf->r, inf->a, &plan, err)) != KT_OK) return st;
    }
    return KT_OK;
}

void kt_infer_close(kt_infer *inf)
{
    kt_resnet_free(inf->r);
    kt_arch_free(inf->a);
    kt_weights_free(inf->w);
    free(inf->input), free(inf->fbuf);
    kt_image_free(&inf->img);
    kt_transform_ws_free(&inf->tws);
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

/* Decodes the crop window of one file and writes its 3 planes at out with
 * channel stride cstride. */
static kt_status load_one(kt_infer *inf, float *out, size_t cstride, const char *path,
                          kt_err *err)
{
    size_t nb = 0;
    kt_status st = kt_image_read_file(&inf->fbuf, &inf->fcap, &nb, path, err);
    if (st != KT_OK) return st;
    kt_image_info info;
    if ((st = kt_image_probe(&info, inf->fbuf, nb, path, err)) != KT_OK) return st;
    kt_image_opts opts = {0};
    kt_transform_eval_roi(info.w, info.h, inf->resize, inf->size, &opts.roi_x0, &opts.roi_y0,
                          &opts.roi_x1, &opts.roi_y1);
    if ((st = kt_image_decode_ex(&inf->img, inf->fbuf, nb, path, &opts, err)) != KT_OK) return st;
    st = kt_transform_eval_ws(out, cstride, &inf->img, inf->resize, inf->size, &inf->a->norm,
                              &inf->tws, err);
    if (st != KT_OK) kt_err_prefix(err, "%s", path);
    return st;
}

kt_status kt_infer_load(kt_infer *inf, const char *const *paths, int count, int skip_bad,
                        int *ok, int *n, void (*warn)(const char *msg), kt_err *err)
{
    const size_t plane = (size_t)inf->size * inf->size, stride = plane * inf->batch;
    int m = 0;
    *n = 0;
    for (int i = 0; i < count && i < inf->batch; i++) {
        kt_err e = {0};
        kt_status st = load_one(inf, inf->input + m * plane, stride, paths[i], &e);
        ok[i] = st == KT_OK;
        if (st == KT_OK) {
            m++;
        } else if (skip_bad && st == KT_ERR_DATA) {
            if (warn) warn(e.msg);
        } else {
            if (err) *err = e;
            return st;
        }
    }
    /* The images went in with the full batch's channel stride; close the gap
     * when the batch is short so the tensor is the compact [3][m][S][S]. */
    if (m < inf->batch)
        for (int c = 1; c < 3; c++)
            memmove(inf->input + c * m * plane, inf->input + c * stride, sizeof(float) * m * plane);
    *n = m;
    return KT_OK;
}

const float *kt_infer_run(kt_infer *inf, int n)
{
    if (!inf->r) return inf->input;
    return kt_resnet_forward(inf->r, 0, inf->input, n, 0);
}
