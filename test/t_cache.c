/* t_cache.c - the activation cache: the batches it serves equal the loader's
 * batches run through the frozen part, bit for bit; entries persist and are
 * found again; every key component matters; corrupt and truncated entries are
 * rebuilt; the size cap evicts least recently used entries; float16 stays
 * within its bound; the mmapped path serves the same values; training from
 * the cache gives the same weights as training from images.
 *
 *   t_cache                 the suite
 *   t_cache --make-data DATA       writes the test images into folder DATA
 *   t_cache --fill DATA DIR        one fill of DATA into cache folder DIR, printing
 *                                  "computed N hits N" (t_cache.sh runs two
 *                                  processes)
 */
#include <dirent.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "blas.h"
#include "cache.h"
#include "gen_images.h"
#include "head.h"
#include "loader.h"
#include "ops.h"
#include "optim.h"
#include "resnet.h"
#include "test.h"
#include "weights.h"

#define ROOT "test/out/t_cache"
/* Batches of 2 on 2 threads: the frozen part runs each image alone in its
 * lane, so an image's activation does not depend on its batch neighbours.
 * (OpenBLAS's kernels for tiny GEMMs like the fixture's round differently
 * depending on a column's position; at ResNet-50 sizes they do not, and
 * test_batch5 bounds the difference here.) */
enum { S = 40, RESIZE = 46, B = 2 };

static kt_weights *g_w;
static kt_arch *g_arch;
static kt_dataset g_ds;
static char g_dir[256] = ROOT "/cache";
static char g_data[256] = ROOT "/data";

/* 2 classes of JPEG/PNG images of varied sizes, plus one file that is not an
 * image. */
static void make_data(void)
{
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_data);
    if (system(cmd) != 0)
        printf("# could not clean %s\n", g_data);
    mkdir("test/out", 0777);
    mkdir(ROOT, 0777);
    mkdir(g_data, 0777);
    const char *cls[2] = {"ants", "bees"};
    char dir[300], path[400];
    for (int c = 0; c < 2; c++) {
        snprintf(dir, sizeof dir, "%s/%s", g_data, cls[c]);
        mkdir(dir, 0777);
        for (int i = 0; i < 9; i++) {
            int w = 44 + (i * 7 + c * 5) % 40, h = 46 + (i * 11 + c * 3) % 36;
            uint8_t *px = gen_pattern(w, h, (unsigned)(c * 10 + i));
            if (i % 2) {
                snprintf(path, sizeof path, "%s/img%d.png", dir, i);
                gen_png_rgb(path, w, h, px, 0);
            } else {
                snprintf(path, sizeof path, "%s/img%d.jpg", dir, i);
                gen_jpeg_rgb(path, w, h, px, 90, i % 4 == 0, 0);
            }
            free(px);
        }
    }
    snprintf(dir, sizeof dir, "%s/bees/zz_notes.jpg", g_data);
    gen_write_file(dir, "not an image\n", 13);
}

static kt_status scan(kt_dataset *ds)
{
    kt_err err = {0};
    kt_dataset_free(ds);
    kt_status st = kt_dataset_scan(ds, g_data, &err);
    if (st)
        printf("# scan: %s\n", err.msg);
    return st;
}

static int avgpool(void) { return 2 + g_arch->nblocks; }

static int point_of(const char *name)
{
    kt_err err;
    int p = -1;
    kt_arch_point_find(g_arch, name, &p, &err);
    return p;
}

static kt_cache_opts opts_for(int point)
{
    kt_cache_opts o;
    memset(&o, 0, sizeof o);
    o.arch = g_arch;
    o.point = point;
    o.image_size = S;
    o.resize = RESIZE;
    o.seed = 7;
    o.dtype = KT_CACHE_FLOAT32;
    o.ds = &g_ds;
    o.batch = B;
    o.shuffle = 1;
    o.epochs = 3;
    o.dir = g_dir;
    o.memory = (int64_t)1 << 30;
    o.workers = 3;
    o.weights_path = "test/fixtures/narrow50.safetensors";
    return o;
}

static kt_cache *open_or_report(const kt_cache_opts *o, kt_cache_stats *s)
{
    kt_cache *c = NULL;
    kt_err err = {0};
    if (kt_cache_open(&c, o, &err) != KT_OK) {
        printf("# kt_cache_open: %s\n", err.msg);
        return NULL;
    }
    memset(s, 0, sizeof *s);
    kt_cache_stats_add(s, c);
    return c;
}

static kt_loader *loader_for(const kt_cache_opts *co, const kt_augment *aug, int epochs)
{
    kt_loader_opts o;
    memset(&o, 0, sizeof o);
    o.ds = co->ds;
    o.batch = co->batch;
    o.image_size = co->image_size;
    o.resize = co->resize;
    o.norm = g_arch->norm;
    o.aug = aug;
    o.shuffle = co->shuffle;
    o.workers = 2;
    o.seed = co->seed;
    o.epochs = epochs;
    kt_loader *l = NULL;
    kt_err err = {0};
    if (kt_loader_init(&l, &o, &err) != KT_OK)
        printf("# loader: %s\n", err.msg);
    return l;
}

static size_t act_numel(int point, int n)
{
    int c, h, w;
    kt_arch_point_shape(g_arch, point, S, &c, &h, &w);
    return (size_t)c * h * w * n;
}

/* Every batch of `epochs` epochs from the cache against the loader's batch
 * run through the frozen part: same samples, skips, and activation bits.
 * aug: the loader's augmentation (all off for the training path, NULL for
 * the evaluation path). */
static int same_as_loader(kt_cache *c, const kt_cache_opts *co, const kt_augment *aug, int epochs,
                          double *max_abs, double *max_rel_excess, double tol)
{
    kt_resnet *net = NULL;
    kt_err err = {0};
    kt_resnet_plan plan = {.batch = co->batch, .image_size = S, .freeze = co->point,
                           .stop = co->point, .train = 0, .chunk = 1}; /* as kt train's */
    if (kt_resnet_init(&net, g_arch, &plan, &err) != KT_OK) {
        printf("# resnet: %s\n", err.msg);
        return 0;
    }
    kt_loader *l = loader_for(co, aug, epochs);
    int ok = l != NULL, nbatches = 0;
    const kt_batch *lb, *cb;
    *max_abs = 0, *max_rel_excess = 0;
    while (ok && kt_loader_next(l, &lb, &err) == KT_OK && lb) {
        if (kt_cache_batch(c, lb->epoch, lb->index, &cb, &err) != KT_OK) {
            printf("# cache batch: %s\n", err.msg);
            ok = 0;
            break;
        }
        nbatches++;
        if (cb->n != lb->n || cb->nskipped != lb->nskipped ||
            memcmp(cb->samples, lb->samples, sizeof(int) * (size_t)lb->n) != 0 ||
            memcmp(cb->labels, lb->labels, sizeof(int) * (size_t)lb->n) != 0 ||
            cb->last_in_epoch != lb->last_in_epoch) {
            printf("# epoch %d batch %d: n %d/%d skipped %d/%d\n", lb->epoch, lb->index, cb->n, lb->n,
                   cb->nskipped, lb->nskipped);
            ok = 0;
            break;
        }
        if (lb->n == 0)
            continue;
        const float *ref = kt_resnet_forward(net, 0, lb->input, lb->n, 0);
        size_t m = act_numel(co->point, lb->n);
        if (co->dtype == KT_CACHE_FLOAT32 && tol > 0) {
            for (size_t i = 0; i < m; i++)
                if (fabs((double)ref[i] - (double)cb->input[i]) > tol * (1 + fabs((double)ref[i])))
                    ok = 0;
            continue;
        }
        if (co->dtype == KT_CACHE_FLOAT32) {
            if (memcmp(ref, cb->input, m * sizeof(float)) != 0) {
                printf("# epoch %d batch %d: activations differ\n", lb->epoch, lb->index);
                ok = 0;
            }
            continue;
        }
        for (size_t i = 0; i < m; i++) {
            double d = fabs((double)ref[i] - (double)cb->input[i]);
            double bound = fabs((double)ref[i]) >= 0x1p-14 ? 0x1p-11 * fabs((double)ref[i]) : 0x1p-25;
            if (d > *max_abs)
                *max_abs = d;
            if (d - bound > *max_rel_excess)
                *max_rel_excess = d - bound;
        }
    }
    ok &= nbatches == epochs * kt_cache_batches_per_epoch(c);
    kt_loader_free(l);
    kt_resnet_free(net);
    return ok;
}

static int count_entries(const char *dir, int64_t *bytes)
{
    char path[512];
    int n = 0;
    *bytes = 0;
    snprintf(path, sizeof path, "%s/v1", dir);
    DIR *d = opendir(path);
    struct dirent *e;
    while (d && (e = readdir(d))) {
        if (e->d_name[0] == '.')
            continue;
        char g[768];
        snprintf(g, sizeof g, "%s/%s", path, e->d_name);
        DIR *gd = opendir(g);
        struct dirent *f;
        while (gd && (f = readdir(gd))) {
            size_t len = strlen(f->d_name);
            if (len > 4 && strcmp(f->d_name + len - 4, ".act") == 0) {
                char fp[1100];
                struct stat sb;
                snprintf(fp, sizeof fp, "%s/%s", g, f->d_name);
                if (stat(fp, &sb) == 0)
                    *bytes += sb.st_size;
                n++;
            }
        }
        if (gd)
            closedir(gd);
    }
    if (d)
        closedir(d);
    return n;
}

/* The path of the first entry file (in readdir order) of c's group. */
static int first_entry(const kt_cache *c, char *out, size_t size, int skip)
{
    DIR *d = opendir(kt_cache_group_dir(c));
    struct dirent *e;
    int found = 0;
    while (d && (e = readdir(d))) {
        size_t len = strlen(e->d_name);
        if (len > 4 && strcmp(e->d_name + len - 4, ".act") == 0 && skip-- == 0) {
            snprintf(out, size, "%s/%s", kt_cache_group_dir(c), e->d_name);
            found = 1;
            break;
        }
    }
    if (d)
        closedir(d);
    return found;
}

/* ---- the cases ---------------------------------------------------------------- */

static void test_round_trip(void)
{
    static const kt_augment off = {0, {0.08, 1}, {0.75, 4.0 / 3}, 0, 0, 0, 0};
    const char *points[3] = {"layer2", "layer3", "avgpool"};
    for (int k = 0; k < 3; k++) {
        kt_cache_opts o = opts_for(point_of(points[k]));
        kt_cache_stats s;
        double ma, mr;
        kt_cache *c = open_or_report(&o, &s);
        CHECK(c && s.entries == 18 && s.bad == 1 && s.computed == 18 && s.hits == 0 && s.rebuilt == 0,
              "%s: first open computes all 18 good images (entries %lld, bad %lld, computed %lld, hits %lld)",
              points[k], (long long)s.entries, (long long)s.bad, (long long)s.computed, (long long)s.hits);
        int warned = 0;
        for (int e = 0; c && e < 2; e++)
            for (int b = 0; b < kt_cache_batches_per_epoch(c); b++) {
                const kt_batch *bt;
                kt_err err;
                kt_cache_batch(c, e, b, &bt, &err);
                warned += strstr(bt->warnings, "zz_notes.jpg") != NULL;
            }
        CHECK(c && warned == 1 && !kt_cache_warnings(c)[0],
              "%s: the bad file is reported once, with the first batch that holds it", points[k]);
        /* training path: the loader with every augmentation off */
        CHECK(c && same_as_loader(c, &o, &off, 3, &ma, &mr, 0),
              "%s: 3 epochs of batches = loader (augmentation off) + frozen forward, bit for bit",
              points[k]);
        kt_cache_free(c);
        c = open_or_report(&o, &s);
        CHECK(c && s.hits == 18 && s.computed == 0 && s.seconds_per_image > 0,
              "%s: second open finds all 18 (hits %lld, computed %lld), knows the cost %.2g s/image",
              points[k], (long long)s.hits, (long long)s.computed, s.seconds_per_image);
        /* evaluation path (validation): shuffle off, the loader without aug */
        o.shuffle = 0;
        kt_cache_free(c);
        c = open_or_report(&o, &s);
        CHECK(c && s.hits == 18 && same_as_loader(c, &o, NULL, 1, &ma, &mr, 0),
              "%s: validation order, from the folder, = eval loader + frozen forward", points[k]);
        kt_cache_free(c);
    }
}

static void test_next_and_stats(void)
{
    kt_cache_opts o = opts_for(point_of("layer3"));
    o.start_epoch = 1, o.start_batch = 2, o.epochs = 2;
    kt_cache_stats s;
    kt_cache *c = open_or_report(&o, &s);
    const kt_batch *b;
    kt_err err;
    int n = 0, first_ok = 0;
    int64_t served = 0;
    while (c && kt_cache_next(c, &b, &err) == KT_OK && b) {
        if (n == 0)
            first_ok = b->epoch == 1 && b->index == 2;
        served += b->n;
        n++;
    }
    CHECK(c && first_ok && n == kt_cache_batches_per_epoch(c) - 2, "next: resumes at (1, 2) and stops after epoch 2 (%d batches)", n);
    memset(&s, 0, sizeof s);
    if (c)
        kt_cache_stats_add(&s, c);
    CHECK(s.served == served && s.saved_seconds > 0 && fabs(s.saved_seconds - (double)served * s.seconds_per_image) <= 1e-12 * s.saved_seconds,
          "stats: %lld served, saved %.3g s = served x %.3g s/image", (long long)s.served,
          s.saved_seconds, s.seconds_per_image);
    cJSON *j = kt_cache_stats_json(&s);
    const cJSON *hr = cJSON_GetObjectItemCaseSensitive(j, "hit_rate");
    CHECK(cJSON_IsNumber(hr) && hr->valuedouble == 1.0, "stats json: hit_rate 1");
    cJSON_Delete(j);
    kt_cache_free(c);
}

/* Changing any part of the key must miss; restoring it must hit again. */
static void test_key_sensitivity(void)
{
    int l3 = point_of("layer3");
    kt_cache_opts base = opts_for(l3);
    kt_cache_stats s;
    kt_cache *c = open_or_report(&base, &s);
    CHECK(c && s.hits == 18, "key: baseline hits");
    kt_cache_free(c);

    struct {
        const char *what;
        kt_cache_opts o;
    } v[6];
    for (int i = 0; i < 6; i++)
        v[i].o = base;
    v[0].what = "cut point", v[0].o.point = l3 - 1;
    v[1].what = "resize", v[1].o.resize = RESIZE + 2;
    v[2].what = "image size", v[2].o.image_size = S - 8, v[2].o.resize = RESIZE - 8;
    v[3].what = "dtype", v[3].o.dtype = KT_CACHE_FLOAT16;
    /* the weights: one batch-norm value of the stem changed */
    kt_arch a2 = *g_arch;
    float *g2 = malloc(sizeof(float) * (size_t)a2.stem_bn.c);
    memcpy(g2, a2.stem_bn.gamma, sizeof(float) * (size_t)a2.stem_bn.c);
    g2[0] *= 1.0001f;
    a2.stem_bn.gamma = g2;
    v[4].what = "weights (one stem BN gamma)", v[4].o.arch = &a2;
    /* the normalisation */
    kt_arch a3 = *g_arch;
    a3.norm.mean[1] += 0.001f;
    v[5].what = "normalisation", v[5].o.arch = &a3;
    for (int i = 0; i < 6; i++) {
        c = open_or_report(&v[i].o, &s);
        CHECK(c && s.hits == 0 && s.computed == 18, "key: another %s misses (hits %lld)", v[i].what,
              (long long)s.hits);
        kt_cache_free(c);
    }
    /* weights after the cut do not matter: layer4 changed, cut at layer3 */
    kt_arch a4 = *g_arch;
    kt_block_desc *blocks = malloc(sizeof *blocks * (size_t)a4.nblocks);
    memcpy(blocks, a4.blocks, sizeof *blocks * (size_t)a4.nblocks);
    blocks[a4.nblocks - 1].bn[0].beta = g2;
    a4.blocks = blocks;
    kt_cache_opts o4 = base;
    o4.arch = &a4;
    c = open_or_report(&o4, &s);
    CHECK(c && s.hits == 18, "key: weights after the cut do not change it (hits %lld)", (long long)s.hits);
    kt_cache_free(c);
    free(blocks);
    free(g2);

    /* file content: one image rewritten, one added */
    size_t n;
    char p1[300], p2[300], p3[300], p4[300];
    snprintf(p1, sizeof p1, "%s/ants/img1.png", g_data);
    snprintf(p2, sizeof p2, "%s/ants/new.png", g_data);
    snprintf(p3, sizeof p3, "%s/bees/img2.jpg", g_data);
    snprintf(p4, sizeof p4, "%s/bees/copy_of_img2.jpg", g_data);
    uint8_t *px = gen_pattern(50, 50, 99);
    gen_png_rgb(p1, 50, 50, px, 0);
    gen_png_rgb(p2, 50, 50, px, 0);
    free(px);
    uint8_t *dup = gen_read_file(p3, &n);
    gen_write_file(p4, dup, n);
    free(dup);
    scan(&g_ds);
    c = open_or_report(&base, &s);
    CHECK(c && s.entries == 20 && s.hits == 18 && s.computed == 2,
          "key: a changed file and a new one are computed, a renamed copy is found (hits %lld, computed %lld)",
          (long long)s.hits, (long long)s.computed);
    double ma, mr;
    static const kt_augment off = {0, {0.08, 1}, {0.75, 4.0 / 3}, 0, 0, 0, 0};
    CHECK(c && same_as_loader(c, &base, &off, 1, &ma, &mr, 0), "key: the changed file is served fresh, bit for bit");
    kt_cache_free(c);
    unlink(p2);
    unlink(p4);
    scan(&g_ds);
}

static void test_corruption(void)
{
    kt_cache_opts o = opts_for(point_of("layer3"));
    kt_cache_stats s;
    kt_cache *c = open_or_report(&o, &s);
    char p1[1024], p2[1024], p3[1024];
    int have = c && first_entry(c, p1, sizeof p1, 0) && first_entry(c, p2, sizeof p2, 1) &&
               first_entry(c, p3, sizeof p3, 2);
    kt_cache_free(c);
    CHECK(have, "corrupt: three entries to damage");
    if (!have)
        return;
    /* a flipped payload byte, a truncated file, a damaged header */
    FILE *f = fopen(p1, "r+b");
    fseek(f, -17, SEEK_END);
    int ch = fgetc(f);
    fseek(f, -17, SEEK_END);
    fputc(ch ^ 0x20, f);
    fclose(f);
    struct stat sb;
    stat(p2, &sb);
    if (truncate(p2, sb.st_size - 100) != 0)
        printf("# truncate failed\n");
    f = fopen(p3, "r+b");
    fseek(f, 12, SEEK_SET);
    fputc(0x7f, f);
    fclose(f);
    c = open_or_report(&o, &s);
    CHECK(c && s.rebuilt == 3 && s.computed == 3 && s.hits == 15,
          "corrupt: flipped byte, truncation and bad header detected and rebuilt (rebuilt %lld, hits %lld)",
          (long long)s.rebuilt, (long long)s.hits);
    double ma, mr;
    static const kt_augment off = {0, {0.08, 1}, {0.75, 4.0 / 3}, 0, 0, 0, 0};
    CHECK(c && same_as_loader(c, &o, &off, 1, &ma, &mr, 0), "corrupt: served values are the right ones");
    kt_cache_free(c);
    c = open_or_report(&o, &s);
    CHECK(c && s.hits == 18 && s.rebuilt == 0, "corrupt: the rebuilt entries are good afterwards");
    kt_cache_free(c);
}

static void test_float16(void)
{
    kt_cache_opts o = opts_for(point_of("layer2"));
    o.dtype = KT_CACHE_FLOAT16;
    kt_cache_stats s;
    double ma = 0, mr = 0;
    kt_cache *c = open_or_report(&o, &s);
    static const kt_augment off = {0, {0.08, 1}, {0.75, 4.0 / 3}, 0, 0, 0, 0};
    int ok = c && same_as_loader(c, &o, &off, 1, &ma, &mr, 0);
    CHECK(ok && mr <= 0 && ma > 0,
          "float16: every value within 2^-11 relative (2^-25 absolute below 2^-14); max abs error %.3g", ma);
    int64_t b16 = s.bytes;
    kt_cache_free(c);
    o.dtype = KT_CACHE_FLOAT32;
    c = open_or_report(&o, &s);
    CHECK(c && b16 * 2 == s.bytes, "float16: half the bytes (%lld vs %lld)", (long long)b16, (long long)s.bytes);
    kt_cache_free(c);
}

static void test_mapped(void)
{
    kt_cache_opts o = opts_for(point_of("layer3"));
    o.memory = 1;
    kt_cache_stats s;
    double ma, mr;
    kt_cache *c = open_or_report(&o, &s);
    static const kt_augment off = {0, {0.08, 1}, {0.75, 4.0 / 3}, 0, 0, 0, 0};
    CHECK(c && s.mapped && kt_cache_bytes(c) == 0 && same_as_loader(c, &o, &off, 2, &ma, &mr, 0),
          "mmap: over the memory budget, served from a mapped file, same bits");
    kt_cache_free(c);
}

/* Batches of 5: lanes hold several images, and the fixture's tiny GEMMs may
 * round an image differently in another batch: equal within 1e-5. */
static void test_batch5(void)
{
    static const kt_augment off = {0, {0.08, 1}, {0.75, 4.0 / 3}, 0, 0, 0, 0};
    kt_cache_opts o = opts_for(point_of("layer3"));
    o.batch = 5;
    kt_cache_stats s;
    double ma, mr;
    kt_cache *c = open_or_report(&o, &s);
    CHECK(c && kt_cache_batches_per_epoch(c) == 4 && same_as_loader(c, &o, &off, 2, &ma, &mr, 1e-5),
          "batch 5: same samples and skips as the loader, activations within 1e-5");
    kt_cache_free(c);
}

static void test_views(void)
{
    kt_augment aug = kt_transform_augment_default();
    aug.scale[0] = 0.3;
    kt_cache_opts o = opts_for(point_of("layer3"));
    o.aug = &aug;
    o.views = 3;
    kt_cache_stats s;
    kt_cache *c = open_or_report(&o, &s);
    CHECK(c && s.entries == 54 && s.computed == 54, "views: 3 views of 18 readable images, all computed");
    /* Gather every epoch's activation of sample 0: at most 3 distinct ones,
     * more than 1 over 12 epochs, and the same on a second open. */
    size_t m = act_numel(o.point, 1);
    float *seen = calloc(m * 12, sizeof(float));
    int distinct = 0;
    for (int e = 0; c && e < 12; e++) {
        for (int k = 0; k < kt_cache_batches_per_epoch(c); k++) {
            const kt_batch *b;
            kt_err err;
            kt_cache_batch(c, e, k, &b, &err);
            for (int i = 0; i < b->n; i++) {
                if (b->samples[i] != 0)
                    continue;
                int h, w, ch;
                kt_arch_point_shape(g_arch, o.point, S, &ch, &h, &w);
                for (int q = 0; q < ch; q++)
                    memcpy(seen + e * m + (size_t)q * h * w, b->input + ((size_t)q * b->n + i) * h * w,
                           sizeof(float) * (size_t)h * w);
            }
        }
        int is_new = 1;
        for (int f = 0; f < e; f++)
            if (memcmp(seen + e * m, seen + f * m, m * sizeof(float)) == 0)
                is_new = 0;
        distinct += is_new;
    }
    CHECK(distinct >= 2 && distinct <= 3, "views: sample 0 shows %d distinct views over 12 epochs", distinct);
    kt_cache_free(c);
    o.views = 4;
    c = open_or_report(&o, &s);
    CHECK(c && s.hits == 54 && s.computed == 18, "views: 4 views reuse the 3 stored ones (hits %lld)", (long long)s.hits);
    kt_cache_free(c);
    o.views = 3;
    o.seed = 8;
    c = open_or_report(&o, &s);
    CHECK(c && s.hits == 0, "views: another seed draws other views (hits %lld)", (long long)s.hits);
    kt_cache_free(c);
    free(seen);
}

static void test_bad_policy(void)
{
    kt_cache_opts o = opts_for(point_of("layer3"));
    o.fail_on_bad = 1;
    kt_cache *c = NULL;
    kt_err err = {0};
    kt_status st = kt_cache_open(&c, &o, &err);
    CHECK(st == KT_ERR_DATA && strstr(err.msg, "zz_notes.jpg"), "bad: fail policy names the file (%s)", err.msg);
    kt_cache_free(c);
    o = opts_for(avgpool());
    o.point = avgpool() + 1;
    st = kt_cache_open(&c, &o, &err);
    CHECK(st == KT_ERR_USAGE, "bad: a cut past avgpool is refused (%s)", err.msg);
}

static volatile sig_atomic_t g_stop;

static void stop_after_first(void *ctx, int64_t done, int64_t total)
{
    (void)ctx, (void)total;
    if (done >= B)
        g_stop = 1;
}

static void test_interrupt(void)
{
    kt_cache_opts o = opts_for(point_of("layer1"));
    o.stop = &g_stop;
    o.progress = stop_after_first;
    kt_cache *c = NULL;
    kt_err err = {0};
    kt_status st = kt_cache_open(&c, &o, &err);
    CHECK(st == KT_ERR_INTERRUPTED && strstr(err.msg, "2 of"), "interrupt: the fill stops between batches (%s)", err.msg);
    g_stop = 0;
    o.stop = NULL, o.progress = NULL;
    kt_cache_stats s;
    c = open_or_report(&o, &s);
    CHECK(c && s.hits == 2 && s.computed == 16, "interrupt: the next run keeps what was done (hits %lld)", (long long)s.hits);
    kt_cache_free(c);
}

static void test_lru(void)
{
    /* a fresh folder holding one group of layer1 activations, then a cap
     * that leaves room for roughly one group: filling another evicts the
     * older entries, never the new ones */
    snprintf(g_dir, sizeof g_dir, ROOT "/lru");
    kt_cache_opts o1 = opts_for(point_of("layer1")), o2 = opts_for(point_of("layer1"));
    o2.resize = RESIZE + 4;
    kt_cache_stats s;
    kt_cache *c = open_or_report(&o1, &s);
    kt_cache_free(c);
    int64_t bytes;
    int n1 = count_entries(g_dir, &bytes);
    char cap[64];
    snprintf(cap, sizeof cap, "%lld", (long long)(bytes + bytes / 2));
    setenv("KT_CACHE_MAX", cap, 1);
    sleep(1); /* file times: the second group's entries are newer */
    c = open_or_report(&o2, &s);
    int64_t after;
    int n2 = count_entries(g_dir, &after);
    CHECK(c && n1 == 18 && s.evicted > 0 && after <= bytes + bytes / 2 && n2 == 36 - s.evicted,
          "lru: over the cap, %lld old entries evicted, %d left, %lld <= %s bytes", (long long)s.evicted,
          n2, (long long)after, cap);
    kt_cache_free(c);
    c = open_or_report(&o2, &s);
    CHECK(c && s.hits == 18, "lru: the newest group is intact");
    kt_cache_free(c);
    c = open_or_report(&o1, &s);
    CHECK(c && s.hits == 18 - (int64_t)(36 - n2) && s.computed == 36 - n2,
          "lru: the evicted ones are recomputed (hits %lld)", (long long)s.hits);
    kt_cache_free(c);
    /* a cap smaller than the running job keeps the job's entries */
    setenv("KT_CACHE_MAX", "1", 1);
    usleep(300000); /* older than the 100 ms the running job protects */
    kt_cache_opts o3 = o1;
    o3.resize = RESIZE + 6;
    c = open_or_report(&o3, &s);
    n2 = count_entries(g_dir, &after);
    CHECK(c && n2 == 18, "lru: a tiny cap keeps only the running job's 18 entries (%d)", n2);
    kt_cache_free(c);
    unsetenv("KT_CACHE_MAX");

    kt_cache_group *g;
    int ng;
    kt_err err;
    CHECK(kt_cache_list(&g, &ng, g_dir, &err) == KT_OK && ng == 1 && g[0].entries == 18 && g[0].json &&
              strstr(g[0].json, "\"resize\":\t52"),
          "list: the groups emptied by the cap are gone, the running job's group is listed with its group.json");
    char id[8];
    snprintf(id, sizeof id, "%.6s", ng ? g[0].id : "");
    kt_cache_groups_free(g, ng);
    int64_t freed;
    int ngr;
    const char *ids[1] = {id};
    CHECK(kt_cache_clear(g_dir, ids, 1, &freed, &ngr, &err) == KT_OK && ngr == 1 && freed > 0 &&
              count_entries(g_dir, &after) == 0,
          "clear: one group by id prefix (%lld bytes)", (long long)freed);
    c = open_or_report(&o1, &s);
    kt_cache_free(c);
    c = open_or_report(&o2, &s);
    kt_cache_free(c);
    g = NULL, ng = 0;
    CHECK(kt_cache_clear(g_dir, NULL, 0, &freed, &ngr, &err) == KT_OK && ngr == 2 &&
              kt_cache_list(&g, &ng, g_dir, &err) == KT_OK && ng == 0,
          "clear: all groups");
    kt_cache_groups_free(g, ng);
    snprintf(g_dir, sizeof g_dir, ROOT "/cache");
}

static void test_dir(void)
{
    char buf[512];
    kt_err err;
    setenv("KT_CACHE_DIR", "/tmp/a", 1);
    setenv("XDG_CACHE_HOME", "/tmp/x", 1);
    kt_cache_dir(buf, sizeof buf, "/tmp/spec", &err);
    CHECK(strcmp(buf, "/tmp/spec") == 0, "dir: train.cache_dir wins (%s)", buf);
    kt_cache_dir(buf, sizeof buf, NULL, &err);
    CHECK(strcmp(buf, "/tmp/a") == 0, "dir: then KT_CACHE_DIR (%s)", buf);
    setenv("KT_CACHE_DIR", "", 1);
    kt_cache_dir(buf, sizeof buf, NULL, &err);
    CHECK(strcmp(buf, "/tmp/x/kt") == 0, "dir: then XDG_CACHE_HOME/kt (%s)", buf);
    unsetenv("KT_CACHE_DIR");
    unsetenv("XDG_CACHE_HOME");
    setenv("HOME", "/tmp/h", 1);
    kt_cache_dir(buf, sizeof buf, NULL, &err);
    CHECK(strcmp(buf, "/tmp/h/.cache/kt") == 0, "dir: then ~/.cache/kt (%s)", buf);
    CHECK(kt_cache_memory_budget(12345) == 12345 && kt_cache_memory_budget(0) > (1 << 20),
          "memory: a set budget is kept, 0 picks a quarter of MemAvailable");
    CHECK(kt_cache_why_not(0, 0, 0, 0) && kt_cache_why_not(5, 1, 0, 0) && !kt_cache_why_not(5, 1, 2, 0) &&
              !kt_cache_why_not(5, 0, 0, 0) && kt_cache_why_not(5, 0, 0, 1),
          "why_not: input cut, augmentation without views, disabled");
}

int main(int argc, char **argv)
{
    kt_err err = {0};
    kt_blas_set_threads(getenv("T") ? atoi(getenv("T")) : 2);
    if (kt_weights_load(&g_w, "test/fixtures/narrow50.safetensors", &err) != KT_OK ||
        kt_arch_init(&g_arch, g_w, &err) != KT_OK) {
        printf("FAIL fixture: %s\n", err.msg);
        return 1;
    }
    if (argc == 3 && strcmp(argv[1], "--make-data") == 0) {
        snprintf(g_data, sizeof g_data, "%s", argv[2]);
        make_data();
        return 0;
    }
    if (argc == 4 && strcmp(argv[1], "--fill") == 0) {
        /* one process's fill, for t_cache.sh */
        snprintf(g_data, sizeof g_data, "%s", argv[2]);
        snprintf(g_dir, sizeof g_dir, "%s", argv[3]);
        if (scan(&g_ds) != KT_OK)
            return 1;
        kt_cache_opts o = opts_for(point_of("layer3"));
        kt_cache_stats s;
        kt_cache *c = open_or_report(&o, &s);
        if (c)
            printf("computed %lld hits %lld\n", (long long)s.computed, (long long)s.hits);
        kt_cache_free(c);
        kt_dataset_free(&g_ds);
        kt_arch_free(g_arch);
        kt_weights_free(g_w);
        return c ? 0 : 1;
    }
    if (system("rm -rf " ROOT) != 0)
        printf("# could not clean " ROOT "\n");
    make_data();
    if (scan(&g_ds) != KT_OK) {
        printf("FAIL dataset\n");
        return 1;
    }
    test_dir();
    test_round_trip();
    test_next_and_stats();
    test_key_sensitivity();
    test_corruption();
    test_float16();
    test_mapped();
    test_batch5();
    test_views();
    test_bad_policy();
    test_interrupt();
    test_lru();
    kt_dataset_free(&g_ds);
    kt_arch_free(g_arch);
    kt_weights_free(g_w);
    TEST_EXIT();
}
