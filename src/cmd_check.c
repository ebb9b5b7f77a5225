/* cmd_check.c - "kt check DIR [--val DIR]": a preflight over an image-folder
 * dataset before any training.
 *
 * Every file is read and fully decoded (on --threads threads), because a
 * truncated JPEG only shows at its end. Reported, each with the file:
 *   bad_image            corrupt, truncated, empty or unsupported (the reason)
 *   mislabelled_extension  a .jpg that is a PNG, a .png that is a GIF, ...
 *   too_small            shorter side below --min-size
 *   duplicate_same_class / duplicate_across_classes   byte-identical files
 *   leakage              a validation file identical to a training file
 *   empty_class, no_readable_images, single_class, no_classes,
 *   missing_in_val, unknown_val_class   problems of the folder structure
 * Duplicates are found by size and a 64-bit hash, then confirmed byte by byte.
 * Text by default, one JSON object with --json; exit 0 when nothing was found,
 * KT_ERR_DATA (3) otherwise.
 */
#include <cjson/cJSON.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "cli.h"
#include "commands.h"
#include "dataset.h"
#include "image.h"

typedef struct {
    const kt_dataset *ds;
    int set;                /* 0 train, 1 val */
    int i;                  /* index in ds */
    size_t size;
    uint64_t hash;
    int ok, w, h;
    const char *format;     /* sniffed, static string or NULL */
    char *why;              /* decode error, malloc'ed */
} item;

typedef struct {
    item *items;
    int n, next;
    pthread_mutex_t mu;
} job;

static uint64_t fnv1a(const uint8_t *p, size_t n)
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < n; i++)
        h = (h ^ p[i]) * 0x100000001b3ull;
    return h;
}

static void *check_files(void *arg)
{
    job *j = arg;
    uint8_t *buf = NULL;
    size_t cap = 0;
    kt_image img = {0};
    for (;;) {
        pthread_mutex_lock(&j->mu);
        int k = j->next++;
        pthread_mutex_unlock(&j->mu);
        if (k >= j->n)
            break;
        item *it = &j->items[k];
        const char *path = it->ds->paths[it->i];
        kt_err err = {0};
        size_t n = 0;
        if (kt_image_read_file(&buf, &cap, &n, path, &err) == KT_OK) {
            it->size = n;
            it->hash = fnv1a(buf, n);
            it->format = kt_image_sniff(buf, n);
            if (kt_image_decode(&img, buf, n, path, &err) == KT_OK)
                it->ok = 1, it->w = img.w, it->h = img.h;
        }
        if (!it->ok)
            it->why = strdup(err.msg);
    }
    free(buf);
    kt_image_free(&img);
    return NULL;
}

/* The format a file name promises, or NULL when the extension says nothing. */
static const char *ext_format(const char *path)
{
    static const char *const map[][2] = {{"jpg", "JPEG"}, {"jpeg", "JPEG"}, {"jpe", "JPEG"},
                                         {"jfif", "JPEG"}, {"png", "PNG"},  {"gif", "GIF"},
                                         {"webp", "WebP"}, {"bmp", "BMP"},  {"tif", "TIFF"},
                                         {"tiff", "TIFF"}, {"heic", "HEIF"}, {"heif", "HEIF"},
                                         {"avif", "AVIF"}};
    const char *dot = strrchr(path, '.'), *slash = strrchr(path, '/');
    if (!dot || (slash && dot < slash))
        return NULL;
    for (size_t i = 0; i < sizeof map / sizeof map[0]; i++)
        if (!strcasecmp(dot + 1, map[i][0]))
            return map[i][1];
    return NULL;
}

/* Problems, collected then printed as text or JSON. */
typedef struct {
    cJSON *list;            /* array of {kind, file, other, detail} */
    int n;
} report;

static void problem(report *r, const char *kind, const char *file, const char *other,
                    const char *detail)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "kind", kind);
    if (file)
        cJSON_AddStringToObject(o, "file", file);
    if (other)
        cJSON_AddStringToObject(o, "other", other);
    if (detail)
        cJSON_AddStringToObject(o, "detail", detail);
    cJSON_AddItemToArray(r->list, o);
    r->n++;
}

/* The decoder's message without the leading "path: ". */
static const char *reason(const char *msg, const char *path)
{
    size_t n = strlen(path);
    if (!msg)
        return "unreadable";
    return !strncmp(msg, path, n) && msg[n] == ':' && msg[n + 1] == ' ' ? msg + n + 2 : msg;
}

static int cmp_item(const void *pa, const void *pb)
{
    const item *a = pa, *b = pb;
    if (a->size != b->size)
        return a->size < b->size ? -1 : 1;
    if (a->hash != b->hash)
        return a->hash < b->hash ? -1 : 1;
    if (a->set != b->set)
        return a->set - b->set;
    return a->i - b->i;
}

/* 1 when the two files have the same bytes (the hashes already matched). */
static int same_bytes(const char *p, const char *q, size_t size)
{
    uint8_t *a = NULL, *b = NULL;
    size_t ca = 0, cb = 0, na = 0, nb = 0;
    kt_err err;
    int same = kt_image_read_file(&a, &ca, &na, p, &err) == KT_OK &&
               kt_image_read_file(&b, &cb, &nb, q, &err) == KT_OK && na == size && nb == size &&
               (size == 0 || !memcmp(a, b, size));
    free(a), free(b);
    return same;
}

static void find_duplicates(report *r, item *it, int n)
{
    qsort(it, (size_t)n, sizeof *it, cmp_item);
    for (int a = 0; a < n;) {
        int b = a + 1;
        while (b < n && it[b].size == it[a].size && it[b].hash == it[a].hash)
            b++;
        /* Each file of the group against the group's first file. */
        for (int k = a + 1; k < b; k++) {
            const item *x = &it[a], *y = &it[k];
            const char *px = x->ds->paths[x->i], *py = y->ds->paths[y->i];
            if (x->size == 0 || !same_bytes(px, py, x->size))
                continue;
            const char *kind = x->set != y->set ? "leakage"
                               : x->ds->labels[x->i] == y->ds->labels[y->i] ? "duplicate_same_class"
                                                                           : "duplicate_across_classes";
            problem(r, kind, py, px, "identical bytes");
        }
        a = b;
    }
}

static void print_text(const report *r, const kt_dataset *tr, const kt_dataset *va,
                       const int *images, const int *vimages)
{
    printf("kt check: %s%s%s\n", tr->root, va ? ", val " : "", va ? va->root : "");
    printf("%-24s %8s %8s", "class", "files", "images");
    if (va)
        printf(" %10s %10s", "val files", "val images");
    printf("\n");
    for (int c = 0; c < tr->nclasses; c++) {
        printf("%-24s %8d %8d", tr->classes[c], tr->count[c], images[c]);
        int vc = -1;
        for (int k = 0; va && k < va->nclasses; k++)
            if (!strcmp(va->classes[k], tr->classes[c]))
                vc = k;
        if (va)
            printf(" %10d %10d", vc >= 0 ? va->count[vc] : 0, vc >= 0 ? vimages[vc] : 0);
        printf("\n");
    }
    cJSON *p;
    cJSON_ArrayForEach(p, r->list)
    {
        const cJSON *f = cJSON_GetObjectItem(p, "file"), *o = cJSON_GetObjectItem(p, "other");
        const cJSON *d = cJSON_GetObjectItem(p, "detail");
        printf("%s: %s", cJSON_GetObjectItem(p, "kind")->valuestring, f ? f->valuestring : "");
        if (o)
            printf(" = %s", o->valuestring);
        if (d)
            printf(" (%s)", d->valuestring);
        printf("\n");
    }
    if (r->n)
        printf("%d problem%s found\n", r->n, r->n == 1 ? "" : "s");
    else
        printf("clean: no problems found\n");
}

static kt_status print_json(const report *r, const kt_dataset *tr, const kt_dataset *va,
                            const int *images, const int *vimages, kt_err *err)
{
    cJSON *o = cJSON_CreateObject(), *cls = cJSON_CreateArray();
    cJSON_AddStringToObject(o, "root", tr->root);
    if (va)
        cJSON_AddStringToObject(o, "val", va->root);
    else
        cJSON_AddNullToObject(o, "val");
    for (int c = 0; c < tr->nclasses; c++) {
        cJSON *e = cJSON_CreateObject();
        cJSON_AddStringToObject(e, "name", tr->classes[c]);
        cJSON_AddNumberToObject(e, "files", tr->count[c]);
        cJSON_AddNumberToObject(e, "images", images[c]);
        cJSON_AddItemToArray(cls, e);
    }
    cJSON_AddItemToObject(o, "classes", cls);
    if (va) {
        cJSON *vc = cJSON_CreateArray();
        for (int c = 0; c < va->nclasses; c++) {
            cJSON *e = cJSON_CreateObject();
            cJSON_AddStringToObject(e, "name", va->classes[c]);
            cJSON_AddNumberToObject(e, "files", va->count[c]);
            cJSON_AddNumberToObject(e, "images", vimages[c]);
            cJSON_AddItemToArray(vc, e);
        }
        cJSON_AddItemToObject(o, "val_classes", vc);
    }
    cJSON_AddItemReferenceToObject(o, "problems", r->list);
    cJSON_AddBoolToObject(o, "clean", r->n == 0);
    char *s = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    if (!s)
        return kt_err_set(err, KT_ERR_RUNTIME, "kt check: out of memory");
    printf("%s\n", s);
    free(s);
    return KT_OK;
}

/* Structure problems of one scanned folder. */
static void structure(report *r, const kt_dataset *ds, const int *images, const char *what)
{
    char detail[160];
    if (ds->nclasses == 0)
        problem(r, "no_classes", ds->root, NULL, "expected <root>/<class>/<images>");
    if (ds->nclasses == 1 && !strcmp(what, "train"))
        problem(r, "single_class", ds->root, NULL, "at least 2 classes needed");
    for (int c = 0; c < ds->nclasses; c++) {
        char path[4096];
        snprintf(path, sizeof path, "%s/%s", ds->root, ds->classes[c]);
        if (ds->count[c] == 0) {
            problem(r, "empty_class", path, NULL, "no files");
        } else if (images[c] == 0) {
            snprintf(detail, sizeof detail, "none of its %d files decodes", ds->count[c]);
            problem(r, "no_readable_images", path, NULL, detail);
        }
    }
}

kt_status kt_cmd_check(int argc, char **argv, kt_err *err)
{
    int json = 0, min_size = 32, threads = 0;
    const char *val = NULL;
    kt_opt opts[] = {
        {"val", 0, KT_OPT_STRING, "DIR", "validation folder: same classes, and no file shared with DIR", 0, 0, &val},
        {"min-size", 0, KT_OPT_INT, "N", "report images whose shorter side is below N pixels (default 32)", 1, 100000, &min_size},
        {"threads", 't', KT_OPT_INT, "N", "decode on N threads (default: all cores)", 0, 256, &threads},
        {"json", 0, KT_OPT_FLAG, NULL, "one JSON object on stdout instead of text", 0, 0, &json},
    };
    static const kt_cmd cmd = {
        "check",
        "Checks an image folder DIR/<class>/<images> before training: counts per class,\n"
        "corrupt or unsupported files, wrong extensions, tiny images, duplicate files\n"
        "and train/val leakage. Exit status 0 when clean, 3 when anything was found.",
        "kt check [options] DIR"};
    char **pos;
    int npos;
    kt_status st = kt_cli_parse(&cmd, opts, KT_NOPTS(opts), argc, argv, &pos, &npos, err);
    if (st != KT_OK || !pos)
        return st;
    if (npos != 1)
        return kt_err_set(err, KT_ERR_USAGE, "kt check: expected one folder, got %d arguments", npos);

    kt_dataset tr = {0}, va = {0};
    report r = {cJSON_CreateArray(), 0};
    item *items = NULL;
    int *images = NULL, *vimages = NULL, n = 0;
    pthread_t *th = NULL;
    job j = {0};
    if ((st = kt_dataset_scan_lenient(&tr, pos[0], err)))
        goto done;
    if (val && (st = kt_dataset_scan_lenient(&va, val, err)))
        goto done;

    /* Decode everything. */
    n = tr.n + va.n;
    items = calloc((size_t)n + 1, sizeof *items);
    images = calloc((size_t)tr.nclasses + 1, sizeof *images);
    vimages = calloc((size_t)va.nclasses + 1, sizeof *vimages);
    if (!items || !images || !vimages) {
        st = kt_err_set(err, KT_ERR_RUNTIME, "kt check: out of memory for %d files", n);
        goto done;
    }
    for (int i = 0; i < n; i++) {
        items[i].ds = i < tr.n ? &tr : &va;
        items[i].set = i >= tr.n;
        items[i].i = i < tr.n ? i : i - tr.n;
    }
    if (threads <= 0) {
        long c = sysconf(_SC_NPROCESSORS_ONLN);
        threads = c < 1 ? 1 : c > 16 ? 16 : (int)c;
    }
    j.items = items, j.n = n;
    pthread_mutex_init(&j.mu, NULL);
    th = calloc((size_t)threads, sizeof *th);
    int started = 0;
    while (th && started < threads && pthread_create(&th[started], NULL, check_files, &j) == 0)
        started++;
    if (started == 0)
        check_files(&j);
    for (int t = 0; t < started; t++)
        pthread_join(th[t], NULL);
    pthread_mutex_destroy(&j.mu);

    /* Per-file problems, in dataset order. */
    for (int i = 0; i < n; i++) {
        item *it = &items[i];
        const char *path = it->ds->paths[it->i], *want = ext_format(path);
        char detail[160];
        if (it->ok)
            (it->set ? vimages : images)[it->ds->labels[it->i]]++;
        else
            problem(&r, "bad_image", path, NULL, reason(it->why, path));
        if (want && it->format && strcmp(it->format, "empty") && strcmp(want, it->format)) {
            snprintf(detail, sizeof detail, "named %s, contains %s", want, it->format);
            problem(&r, "mislabelled_extension", path, NULL, detail);
        }
        if (it->ok && (it->w < min_size || it->h < min_size)) {
            snprintf(detail, sizeof detail, "%dx%d, shorter side below %d", it->w, it->h, min_size);
            problem(&r, "too_small", path, NULL, detail);
        }
    }
    structure(&r, &tr, images, "train");
    if (val) {
        structure(&r, &va, vimages, "val");
        for (int c = 0; c < tr.nclasses; c++) {
            int found = 0;
            for (int k = 0; k < va.nclasses; k++)
                found |= !strcmp(va.classes[k], tr.classes[c]);
            if (!found)
                problem(&r, "missing_in_val", tr.classes[c], NULL, "class has no folder in the val set");
        }
        for (int k = 0; k < va.nclasses; k++) {
            int found = 0;
            for (int c = 0; c < tr.nclasses; c++)
                found |= !strcmp(va.classes[k], tr.classes[c]);
            if (!found)
                problem(&r, "unknown_val_class", va.classes[k], NULL, "not a training class");
        }
    }
    find_duplicates(&r, items, n);

    if (json)
        st = print_json(&r, &tr, val ? &va : NULL, images, vimages, err);
    else
        print_text(&r, &tr, val ? &va : NULL, images, vimages);
    if (st == KT_OK && r.n > 0)
        st = kt_err_set(err, KT_ERR_DATA, "kt check: %d problem%s in %s", r.n, r.n == 1 ? "" : "s",
                        pos[0]);
done:
    for (int i = 0; items && i < n; i++)
        free(items[i].why);
    free(items), free(images), free(vimages), free(th);
    cJSON_Delete(r.list);
    kt_dataset_free(&tr);
    kt_dataset_free(&va);
    return st;
}
