/* dataset.c - scanning image folders (see dataset.h).
 *
 * All strings of a dataset live in one growing text pool; while scanning they
 * are referred to by offset (the pool moves when it grows) and turned into
 * pointers once at the end. Nothing is decoded here: whether a file is a
 * readable image is the decoder's business, at load time or in kt check.
 */
#include "dataset.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "rng.h"

typedef struct {
    char *buf;
    size_t len, cap;
} pool;

typedef struct {
    size_t off;     /* "class/dir/name" in the pool */
    int dirlen;     /* length of "class/dir" */
    int label;
} entry;

typedef struct {
    pool text;
    entry *e;
    size_t n, cap;
    size_t *cls;    /* class name offsets */
    int ncls, clscap;
} builder;

/* Appends s (len bytes) and a NUL; returns its offset or (size_t)-1. */
static size_t pool_add(pool *p, const char *s, size_t len)
{
    if (p->len + len + 1 > p->cap) {
        size_t cap = p->cap ? p->cap : 4096;
        while (cap < p->len + len + 1)
            cap *= 2;
        char *b = realloc(p->buf, cap);
        if (!b)
            return (size_t)-1;
        p->buf = b, p->cap = cap;
    }
    memcpy(p->buf + p->len, s, len);
    p->buf[p->len + len] = '\0';
    p->len += len + 1;
    return p->len - len - 1;
}

static int add_entry(builder *b, size_t off, int dirlen, int label)
{
    if (b->n == b->cap) {
        size_t cap = b->cap ? b->cap * 2 : 256;
        entry *e = realloc(b->e, cap * sizeof *e);
        if (!e)
            return 0;
        b->e = e, b->cap = cap;
    }
    b->e[b->n++] = (entry){off, dirlen, label};
    return 1;
}

static int add_class(builder *b, const char *name)
{
    if (b->ncls == b->clscap) {
        int cap = b->clscap ? b->clscap * 2 : 16;
        size_t *c = realloc(b->cls, (size_t)cap * sizeof *c);
        if (!c)
            return 0;
        b->cls = c, b->clscap = cap;
    }
    size_t off = pool_add(&b->text, name, strlen(name));
    if (off == (size_t)-1)
        return 0;
    b->cls[b->ncls++] = off;
    return 1;
}

static void builder_free(builder *b)
{
    free(b->text.buf), free(b->e), free(b->cls);
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* torchvision's order: sorted(os.walk()) sorts by folder path, then files by name. */
static const char *sort_text;

static int cmp_entry(const void *pa, const void *pb)
{
    const entry *a = pa, *b = pb;
    if (a->label != b->label)
        return a->label < b->label ? -1 : 1;
    const char *sa = sort_text + a->off, *sb = sort_text + b->off;
    int m = a->dirlen < b->dirlen ? a->dirlen : b->dirlen;
    int c = memcmp(sa, sb, (size_t)m);
    if (c)
        return c;
    if (a->dirlen != b->dirlen)
        return a->dirlen < b->dirlen ? -1 : 1;
    return strcmp(sa + a->dirlen + 1, sb + b->dirlen + 1);
}

/* Sorted names of the visible entries of a folder (malloc'ed array of
 * malloc'ed strings); *n = count. NULL with errno set on failure. */
static char **list_dir(const char *path, int *n)
{
    DIR *d = opendir(path);
    if (!d)
        return NULL;
    char **v = NULL;
    int cap = 0;
    struct dirent *de;
    *n = 0;
    while ((de = readdir(d))) {
        if (de->d_name[0] == '.')
            continue;
        if (*n == cap) {
            cap = cap ? cap * 2 : 64;
            char **nv = realloc(v, (size_t)cap * sizeof *v);
            if (!nv)
                goto oom;
            v = nv;
        }
        if (!(v[*n] = strdup(de->d_name)))
            goto oom;
        (*n)++;
    }
    closedir(d);
    if (!v)     /* an empty folder; qsort must not see NULL (it is declared nonnull) */
        return calloc(1, sizeof *v);
    qsort(v, (size_t)*n, sizeof *v, cmp_str);
    return v;
oom:
    for (int i = 0; i < *n; i++)
        free(v[i]);
    free(v);
    closedir(d);
    errno = ENOMEM;
    return NULL;
}

static void free_list(char **v, int n)
{
    for (int i = 0; v && i < n; i++)
        free(v[i]);
    free(v);
}

/* out = a "/" b; 0 when it does not fit. */
static int join(char *out, size_t size, const char *a, const char *b)
{
    size_t na = strlen(a), nb = strlen(b);
    if (na + nb + 2 > size)
        return 0;
    memcpy(out, a, na);
    out[na] = '/';
    memcpy(out + na + 1, b, nb + 1);
    return 1;
}

typedef struct {
    dev_t dev;
    ino_t ino;
} dir_id;

/* Adds every visible regular file under root/rel to class label. ancestors
 * holds the folders on the current path, so a symlink back up is skipped. */
static kt_status walk(builder *b, const char *root, const char *rel, int label, dir_id *anc,
                      int depth, kt_err *err)
{
    char path[4096];
    if (!join(path, sizeof path, root, rel))
        return kt_err_set(err, KT_ERR_DATA, "%s/%s: path too long", root, rel);
    int n;
    char **names = list_dir(path, &n);
    if (!names)
        return kt_err_set(err, errno == ENOMEM ? KT_ERR_RUNTIME : KT_ERR_DATA, "%s: %s", path,
                          strerror(errno));
    kt_status st = KT_OK;
    int rlen = (int)strlen(rel);
    for (int i = 0; i < n && st == KT_OK; i++) {
        char sub[4096];
        struct stat sb;
        if (!join(sub, sizeof sub, rel, names[i]) || !join(path, sizeof path, root, sub)) {
            st = kt_err_set(err, KT_ERR_DATA, "%s/%s/%s: path too long", root, rel, names[i]);
            break;
        }
        int len = (int)strlen(sub);
        if (stat(path, &sb) != 0)
            continue;       /* dangling symlink or vanished file: not a sample */
        if (S_ISDIR(sb.st_mode)) {
            int loop = 0;
            for (int k = 0; k < depth; k++)
                loop |= anc[k].dev == sb.st_dev && anc[k].ino == sb.st_ino;
            if (loop || depth >= 64)
                continue;
            anc[depth] = (dir_id){sb.st_dev, sb.st_ino};
            st = walk(b, root, sub, label, anc, depth + 1, err);
        } else if (S_ISREG(sb.st_mode)) {
            size_t off = pool_add(&b->text, sub, (size_t)len);
            if (off == (size_t)-1 || !add_entry(b, off, rlen, label))
                st = kt_err_set(err, KT_ERR_RUNTIME, "out of memory scanning %s", root);
        }
    }
    free_list(names, n);
    return st;
}

/* Turns the builder into ds, in one allocation: [rel texts | full paths |
 * arrays]. sorted: order the samples like torchvision. prefix: paths are
 * root + "/" + rel; else paths are rel as given. */
static kt_status finish(kt_dataset *ds, builder *b, const char *root, int sorted, int prefix,
                        kt_err *err)
{
    size_t rl = prefix ? strlen(root) + 1 : 0, n = b->n, nc = (size_t)b->ncls, nt = b->text.len;
    size_t nf = 0;
    if (sorted && n) {
        sort_text = b->text.buf;
        qsort(b->e, n, sizeof *b->e, cmp_entry);
    }
    for (size_t i = 0; i < n && prefix; i++)
        nf += rl + strlen(b->text.buf + b->e[i].off) + 1;
    size_t at = (nt + nf + 15) & ~(size_t)15;
    char *blk = malloc(at + n * 2 * sizeof(char *) + nc * sizeof(char *) + (n + nc) * sizeof(int) + 1);
    if (!blk || !(ds->root = strdup(root))) {
        free(blk);
        return kt_err_set(err, KT_ERR_RUNTIME, "out of memory scanning %s", root);
    }
    if (nt)
        memcpy(blk, b->text.buf, nt);
    ds->paths = (char **)(void *)(blk + at), at += n * sizeof(char *);
    ds->rel = (const char **)(void *)(blk + at), at += n * sizeof(char *);
    ds->classes = (char **)(void *)(blk + at), at += nc * sizeof(char *);
    ds->labels = (int *)(void *)(blk + at), at += n * sizeof(int);
    ds->count = (int *)(void *)(blk + at);
    ds->n = (int)n, ds->nclasses = (int)nc;
    for (size_t c = 0; c < nc; c++)
        ds->classes[c] = blk + b->cls[c], ds->count[c] = 0;
    char *f = blk + nt;
    for (size_t i = 0; i < n; i++) {
        ds->rel[i] = blk + b->e[i].off;
        if (prefix) {
            size_t rn = strlen(ds->rel[i]);
            memcpy(f, root, rl - 1);
            f[rl - 1] = '/';
            memcpy(f + rl, ds->rel[i], rn + 1);
            ds->paths[i] = f;
            f += rl + rn + 1;
        } else {
            ds->paths[i] = blk + b->e[i].off;
        }
        ds->labels[i] = b->e[i].label;
        if (b->e[i].label >= 0)
            ds->count[b->e[i].label]++;
    }
    ds->pool_ = blk;
    return KT_OK;
}

/* root without trailing slashes (but "/" stays "/"), into out. */
static void clean_root(char *out, size_t size, const char *root)
{
    snprintf(out, size, "%s", root);
    size_t n = strlen(out);
    while (n > 1 && out[n - 1] == '/')
        out[--n] = '\0';
}

/* Class folders of root, sorted; *n = count. */
static char **class_dirs(const char *root, int *n, kt_err *err, kt_status *st)
{
    int m;
    char **names = list_dir(root, &m);
    *st = KT_OK;
    if (!names) {
        *st = kt_err_set(err, errno == ENOMEM ? KT_ERR_RUNTIME : KT_ERR_DATA, "%s: %s", root,
                         strerror(errno));
        return NULL;
    }
    *n = 0;
    for (int i = 0; i < m; i++) {
        char path[4096];
        struct stat sb;
        if (join(path, sizeof path, root, names[i]) && stat(path, &sb) == 0 && S_ISDIR(sb.st_mode))
            names[(*n)++] = names[i];
        else
            free(names[i]);
    }
    return names;
}

/* Scans root; train_classes (NULL for a training scan) maps folder names to
 * labels. lenient: empty classes and a single class are not errors. */
static kt_status scan(kt_dataset *ds, const char *root_in, char *const *train_classes, int ntrain,
                      int lenient, kt_err *err)
{
    char root[4096];
    builder b = {0};
    kt_status st;
    int n = 0;
    dir_id anc[64];
    struct stat sb;

    memset(ds, 0, sizeof *ds);
    clean_root(root, sizeof root, root_in);
    if (stat(root, &sb) != 0)
        return kt_err_set(err, KT_ERR_DATA, "%s: %s", root, strerror(errno));
    if (!S_ISDIR(sb.st_mode))
        return kt_err_set(err, KT_ERR_DATA, "%s: not a folder (expected %s/<class>/<images>)",
                          root, root);
    char **cls = class_dirs(root, &n, err, &st);
    if (!cls)
        return st;
    if (!train_classes) {
        if (n == 0 && !lenient) {
            st = kt_err_set(err, KT_ERR_DATA, "%s: no class folders (expected %s/<class>/<images>)",
                            root, root);
            goto fail;
        }
        if (n == 1 && !lenient) {
            st = kt_err_set(err, KT_ERR_DATA, "%s: only one class folder ('%s'); at least 2 needed",
                            root, cls[0]);
            goto fail;
        }
        for (int c = 0; c < n; c++)
            if (!add_class(&b, cls[c]))
                goto oom;
    } else {
        for (int c = 0; c < ntrain; c++)
            if (!add_class(&b, train_classes[c]))
                goto oom;
    }
    for (int c = 0; c < n; c++) {
        int label = c;
        if (train_classes) {
            char *const *hit = bsearch(&cls[c], train_classes, (size_t)ntrain, sizeof *train_classes,
                                       cmp_str);
            if (!hit) {
                st = kt_err_set(err, KT_ERR_DATA,
                                "%s/%s: class '%s' is not one of the %d training classes", root,
                                cls[c], cls[c], ntrain);
                goto fail;
            }
            label = (int)(hit - train_classes);
        }
        size_t before = b.n;
        char cpath[4096];
        if (join(cpath, sizeof cpath, root, cls[c]) && stat(cpath, &sb) == 0)
            anc[0] = (dir_id){sb.st_dev, sb.st_ino};
        if ((st = walk(&b, root, cls[c], label, anc, 1, err)))
            goto fail;
        if (b.n == before && !lenient && !train_classes) {
            st = kt_err_set(err, KT_ERR_DATA, "%s/%s: class folder has no image files", root,
                            cls[c]);
            goto fail;
        }
    }
    if (b.n == 0 && !lenient && train_classes) {
        st = kt_err_set(err, KT_ERR_DATA, "%s: no image files in any class folder", root);
        goto fail;
    }
    free_list(cls, n);
    st = finish(ds, &b, root, 1, 1, err);
    builder_free(&b);
    return st;
oom:
    st = kt_err_set(err, KT_ERR_RUNTIME, "out of memory scanning %s", root);
fail:
    free_list(cls, n);
    builder_free(&b);
    return st;
}

kt_status kt_dataset_scan(kt_dataset *ds, const char *root, kt_err *err)
{
    return scan(ds, root, NULL, 0, 0, err);
}

kt_status kt_dataset_scan_lenient(kt_dataset *ds, const char *root, kt_err *err)
{
    return scan(ds, root, NULL, 0, 1, err);
}

kt_status kt_dataset_scan_val(kt_dataset *ds, const char *root, const kt_dataset *train,
                              kt_err *err)
{
    return scan(ds, root, train->classes, train->nclasses, 0, err);
}

int kt_dataset_in_val(const char *rel, double val_split)
{
    uint64_t h = 0xcbf29ce484222325ull;     /* FNV-1a, then rng.h's mixing */
    for (const unsigned char *p = (const unsigned char *)rel; *p; p++)
        h = (h ^ *p) * 0x100000001b3ull;
    double u = (double)(kt_rng_u64(h, KT_RNG_SPLIT, 0, 0) >> 11) * 0x1.0p-53;
    return u < val_split;
}

/* A dataset holding the samples of all for which keep[i] is set. */
static kt_status subset(kt_dataset *out, const kt_dataset *all, const char *keep, kt_err *err)
{
    builder b = {0};
    kt_status st;
    for (int c = 0; c < all->nclasses; c++)
        if (!add_class(&b, all->classes[c]))
            goto oom;
    for (int i = 0; i < all->n; i++) {
        if (!keep[i])
            continue;
        const char *r = all->rel[i], *slash = strrchr(r, '/');
        size_t off = pool_add(&b.text, r, strlen(r));
        if (off == (size_t)-1 || !add_entry(&b, off, slash ? (int)(slash - r) : 0, all->labels[i]))
            goto oom;
    }
    st = finish(out, &b, all->root, 1, 1, err);
    builder_free(&b);
    return st;
oom:
    builder_free(&b);
    return kt_err_set(err, KT_ERR_RUNTIME, "out of memory splitting %s", all->root);
}

kt_status kt_dataset_split(kt_dataset *train, kt_dataset *val, const kt_dataset *all,
                           double val_split, kt_err *err)
{
    memset(train, 0, sizeof *train);
    memset(val, 0, sizeof *val);
    if (!(val_split > 0 && val_split < 1))
        return kt_err_set(err, KT_ERR_USAGE, "val_split %g must be between 0 and 1", val_split);
    char *keep = malloc(all->n ? (size_t)all->n : 1);
    if (!keep)
        return kt_err_set(err, KT_ERR_RUNTIME, "out of memory splitting %s", all->root);
    for (int i = 0; i < all->n; i++)
        keep[i] = (char)!kt_dataset_in_val(all->rel[i], val_split);
    kt_status st = subset(train, all, keep, err);
    for (int i = 0; i < all->n; i++)
        keep[i] = (char)!keep[i];
    if (st == KT_OK)
        st = subset(val, all, keep, err);
    free(keep);
    if (st == KT_OK && (train->n == 0 || val->n == 0))
        st = kt_err_set(err, KT_ERR_DATA, "%s: val_split %g leaves %s empty (%d images)", all->root,
                        val_split, train->n == 0 ? "train" : "val", all->n);
    if (st != KT_OK)
        kt_dataset_free(train), kt_dataset_free(val);
    return st;
}

kt_status kt_dataset_from_paths(kt_dataset *ds, const char *const *paths, int n, kt_err *err)
{
    builder b = {0};
    memset(ds, 0, sizeof *ds);
    for (int i = 0; i < n; i++) {
        size_t off = pool_add(&b.text, paths[i], strlen(paths[i]));
        if (off == (size_t)-1 || !add_entry(&b, off, 0, -1)) {
            builder_free(&b);
            return kt_err_set(err, KT_ERR_RUNTIME, "out of memory listing %d files", n);
        }
    }
    kt_status st = finish(ds, &b, "", 0, 0, err);
    builder_free(&b);
    return st;
}

void kt_dataset_free(kt_dataset *ds)
{
    if (!ds)
        return;
    free(ds->root);
    free(ds->pool_);
    memset(ds, 0, sizeof *ds);
}
