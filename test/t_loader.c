/* t_loader.c - batches from worker threads: the same tensors as the
 * single-image transforms, independent of the number of workers, resumable,
 * bad images skipped with one warning per file or failing under "fail". */
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "gen_images.h"
#include "image.h"
#include "loader.h"
#include "test.h"

#define ROOT "test/out/ld"
enum { S = 16, RESIZE = 20, B = 4 };

static const kt_norm norm = {0, 1.0f / 255.0f, {0.485f, 0.456f, 0.406f}, {0.229f, 0.224f, 0.225f}};

/* 3 classes of small JPEG/PNG images of varied sizes, plus two bad files. */
static void make_data(void)
{
    if (system("rm -rf " ROOT) != 0)
        printf("# could not clean " ROOT "\n");
    mkdir("test/out", 0777);
    mkdir(ROOT, 0777);
    const char *cls[3] = {"a", "b", "c"};
    for (int c = 0; c < 3; c++) {
        char dir[64], path[128];
        snprintf(dir, sizeof dir, ROOT "/%s", cls[c]);
        mkdir(dir, 0777);
        for (int i = 0; i < 9; i++) {
            int w = 24 + (i * 7 + c * 5) % 30, h = 22 + (i * 11 + c * 3) % 28;
            uint8_t *px = gen_pattern(w, h, (unsigned)(c * 10 + i));
            if (i % 2) {
                snprintf(path, sizeof path, "%s/img%d.png", dir, i);
                gen_png_rgb(path, w, h, px, 0);
            } else {
                snprintf(path, sizeof path, "%s/img%d.jpg", dir, i);
                gen_jpeg_rgb(path, w, h, px, 90, i % 4 == 0, i == 4);
            }
            free(px);
        }
    }
    gen_write_file(ROOT "/b/notes.txt", "not an image\n", 13);
    size_t n;
    uint8_t *j = gen_read_file(ROOT "/a/img0.jpg", &n);
    gen_write_file(ROOT "/c/cut.jpg", j, n / 3);
    free(j);
}

static kt_loader_opts base_opts(const kt_dataset *ds)
{
    kt_loader_opts o;
    memset(&o, 0, sizeof o);
    o.ds = ds;
    o.batch = B;
    o.image_size = S;
    o.resize = RESIZE;
    o.norm = norm;
    o.workers = 3;
    o.seed = 42;
    o.epochs = 1;
    return o;
}

/* All batches of a loader: their inputs, labels and samples, concatenated. */
typedef struct {
    float *x;
    int *labels, *samples, *epoch, *index, *nb;
    int n, batches, skipped;
    char warnings[4096];
} run;

static kt_status collect(run *r, const kt_loader_opts *o, kt_err *err)
{
    kt_loader *l;
    memset(r, 0, sizeof *r);
    kt_status st = kt_loader_init(&l, o, err);
    if (st)
        return st;
    size_t cap = 512;
    r->x = malloc(cap * 3 * S * S * sizeof(float));
    r->labels = malloc(cap * sizeof(int)), r->samples = malloc(cap * sizeof(int));
    r->epoch = malloc(cap * sizeof(int)), r->index = malloc(cap * sizeof(int));
    r->nb = malloc(cap * sizeof(int));
    const kt_batch *b;
    while ((st = kt_loader_next(l, &b, err)) == KT_OK && b) {
        for (int i = 0; i < b->n && (size_t)r->n < cap; i++) {
            for (int c = 0; c < 3; c++)
                memcpy(r->x + ((size_t)r->n * 3 + c) * S * S, b->input + ((size_t)c * b->n + i) * S * S,
                       S * S * sizeof(float));
            r->labels[r->n] = b->labels[i], r->samples[r->n] = b->samples[i];
            r->n++;
        }
        r->epoch[r->batches] = b->epoch, r->index[r->batches] = b->index, r->nb[r->batches] = b->n;
        r->batches++;
        r->skipped += b->nskipped;
        strncat(r->warnings, b->warnings, sizeof r->warnings - strlen(r->warnings) - 1);
    }
    kt_loader_free(l);
    return st;
}

static void run_free(run *r)
{
    free(r->x), free(r->labels), free(r->samples), free(r->epoch), free(r->index), free(r->nb);
}

static int same_run(const run *a, const run *b)
{
    return a->n == b->n && a->batches == b->batches &&
           !memcmp(a->x, b->x, (size_t)a->n * 3 * S * S * sizeof(float)) &&
           !memcmp(a->labels, b->labels, (size_t)a->n * sizeof(int)) &&
           !memcmp(a->samples, b->samples, (size_t)a->n * sizeof(int)) &&
           !memcmp(a->nb, b->nb, (size_t)a->batches * sizeof(int));
}

static void test_eval(const kt_dataset *ds)
{
    kt_loader_opts o = base_opts(ds);
    kt_err err = {0};
    run r;
    kt_status st = collect(&r, &o, &err);
    CHECK(st == KT_OK && r.batches == (ds->n + B - 1) / B && r.n == ds->n - 2 && r.skipped == 2,
          "eval epoch: %d batches, %d images, 2 bad skipped (%d) %s", r.batches, r.n, r.skipped, err.msg);
    CHECK(strstr(r.warnings, ROOT "/b/notes.txt: not an image") &&
              strstr(r.warnings, ROOT "/c/cut.jpg: truncated"),
          "one warning per bad file, naming it: %s", r.warnings);
    /* Every tensor equals the single-image eval transform of its file. */
    int ok = 1, prev = -1;
    float *want = malloc(3 * S * S * sizeof(float));
    kt_image img = {0};
    for (int i = 0; i < r.n && ok; i++) {
        ok = !kt_image_load(&img, ds->paths[r.samples[i]], &err) &&
             !kt_transform_eval(want, S * S, &img, RESIZE, S, &norm, &err) &&
             !memcmp(want, r.x + (size_t)i * 3 * S * S, 3 * S * S * sizeof(float)) &&
             r.labels[i] == ds->labels[r.samples[i]] && r.samples[i] > prev;
        prev = r.samples[i];
    }
    CHECK(ok, "loader tensors equal kt_transform_eval of each file, in dataset order");
    free(want);
    kt_image_free(&img);
    run_free(&r);

    /* Two epochs: the second skips the same files without a new warning. */
    o.epochs = 2;
    collect(&r, &o, &err);
    int n1 = 0;
    for (const char *p = r.warnings; (p = strchr(p, '\n')); p++)
        n1++;
    CHECK(r.skipped == 4 && n1 == 2 && r.epoch[r.batches - 1] == 1,
          "2 epochs: 4 skips, still 2 warnings (%d, %d)", r.skipped, n1);
    run_free(&r);
}

static void test_train(const kt_dataset *ds)
{
    kt_augment aug = kt_transform_augment_default();
    aug.brightness = aug.contrast = aug.saturation = 0.3;
    kt_loader_opts o = base_opts(ds);
    o.aug = &aug;
    o.shuffle = 1;
    o.epochs = 3;
    kt_err err = {0};
    run one, many, resumed;
    o.workers = 1;
    collect(&one, &o, &err);
    o.workers = 4, o.prefetch = 1;
    collect(&many, &o, &err);
    CHECK(one.n > 0 && same_run(&one, &many),
          "1 worker and 4 workers give identical batches (%d images, %d batches)", one.n, one.batches);

    /* Each epoch is a permutation: good samples + skipped = everything. */
    int per = (ds->n + B - 1) / B, seen_all = 1, differs = 0;
    for (int e = 0; e < 3; e++) {
        int *hit = calloc((size_t)ds->n, sizeof(int)), k = 0;
        for (int b = 0; b < one.batches; b++)
            for (int i = 0; i < one.nb[b]; i++, k++)
                if (one.epoch[b] == e)
                    hit[one.samples[k]]++;
        int cnt = 0;
        for (int i = 0; i < ds->n; i++)
            cnt += hit[i] == 1;
        seen_all &= cnt == ds->n - 2;
        free(hit);
    }
    for (int i = 0; i < one.nb[0] && i < one.nb[per]; i++)
        differs |= one.samples[i] != one.samples[i + (one.n / 3)];
    CHECK(seen_all, "every good image once per epoch");
    CHECK(differs, "epochs are shuffled differently");

    /* Resume at (epoch 1, batch 2): the same batches as the uninterrupted run. */
    o.start_epoch = 1, o.start_batch = 2, o.workers = 2;
    collect(&resumed, &o, &err);
    int skip_b = per + 2, skip_n = 0;
    for (int b = 0; b < skip_b; b++)
        skip_n += one.nb[b];
    int ok = resumed.batches == one.batches - skip_b && resumed.n == one.n - skip_n &&
             resumed.epoch[0] == 1 && resumed.index[0] == 2 &&
             !memcmp(resumed.x, one.x + (size_t)skip_n * 3 * S * S,
                     (size_t)resumed.n * 3 * S * S * sizeof(float)) &&
             !memcmp(resumed.samples, one.samples + skip_n, (size_t)resumed.n * sizeof(int));
    CHECK(ok, "resuming at epoch 1 batch 2 reproduces the rest of the run");
    run_free(&one), run_free(&many), run_free(&resumed);
}

static void test_policy(const kt_dataset *ds)
{
    kt_loader_opts o = base_opts(ds);
    o.fail_on_bad = 1;
    kt_err err = {0};
    run r;
    kt_status st = collect(&r, &o, &err);
    CHECK(st == KT_ERR_DATA && strstr(err.msg, ROOT "/b/notes.txt"),
          "bad_images fail: next() stops at the first bad file, naming it (%s)", err.msg);
    run_free(&r);

    o = base_opts(ds);
    o.drop_last = 1;
    kt_loader *l;
    st = kt_loader_init(&l, &o, &err);
    CHECK(st == KT_OK && kt_loader_batches_per_epoch(l) == ds->n / B, "drop_last: %d full batches",
          ds->n / B);
    kt_loader_free(l);

    /* An endless loader can be stopped at any time. */
    o = base_opts(ds);
    o.epochs = 0;
    st = kt_loader_init(&l, &o, &err);
    const kt_batch *b = NULL;
    for (int i = 0; st == KT_OK && i < 20; i++)
        st = kt_loader_next(l, &b, &err);
    CHECK(st == KT_OK && b && b->epoch == 2 && kt_loader_wait_seconds(l) >= 0 &&
              kt_loader_skipped(l) >= 4,
          "endless loader runs into epoch 2 and stops on free (epoch %d)", b ? b->epoch : -1);
    kt_loader_free(l);
    kt_loader_free(NULL);

    o = base_opts(ds);
    o.resize = S - 1;
    CHECK(kt_loader_init(&l, &o, &err) == KT_ERR_USAGE, "resize below the image size is refused");
    o = base_opts(ds);
    o.batch = 1000, o.drop_last = 1;
    CHECK(kt_loader_init(&l, &o, &err) == KT_ERR_DATA, "no full batch with drop_last is a data error");
}

int main(void)
{
    make_data();
    kt_dataset ds;
    kt_err err = {0};
    if (kt_dataset_scan(&ds, ROOT, &err)) {
        CHECK(0, "scan the loader fixture: %s", err.msg);
        TEST_EXIT();
    }
    test_eval(&ds);
    test_train(&ds);
    test_policy(&ds);
    kt_dataset_free(&ds);
    TEST_EXIT();
}
