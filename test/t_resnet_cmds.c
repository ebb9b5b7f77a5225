/* t_resnet_cmds.c - kt embed and kt predict, run in-process on generated
 * images with the narrow ResNet-50 fixture:
 *  - the .npy file: header, shape, row order (folder contents sorted), and
 *    every row equal to a direct forward pass of that image alone;
 *  - --layer input is the preprocessed tensor, maps come out [N, C, H, W];
 *  - the batch size does not change the numbers;
 *  - bad images fail naming the file (no output left behind), or are
 *    skipped with --skip-bad; unknown layers are usage errors;
 *  - predict --json: one object per image, top-k sorted, probabilities the
 *    softmax of the embedded logits, labels from a line file or a JSON map.
 */
#include <cjson/cJSON.h>
#include <fcntl.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "arch.h"
#include "blas.h"
#include "commands.h"
#include "gen_images.h"
#include "image.h"
#include "ops.h"
#include "resnet.h"
#include "test.h"
#include "transform.h"
#include "weights.h"

#define DIR_ "test/out/cmds"
#define MODEL "test/fixtures/narrow50.safetensors"
#define NIMG 5

static const char *const g_files[NIMG] = {DIR_ "/imgs/a.png", DIR_ "/imgs/b.jpg", DIR_ "/imgs/c.png",
                                          DIR_ "/imgs/sub/d.jpg", DIR_ "/imgs/sub/e.png"};

static void make_images(void)
{
    mkdir("test/out", 0777), mkdir(DIR_, 0777), mkdir(DIR_ "/imgs", 0777);
    mkdir(DIR_ "/imgs/sub", 0777), mkdir(DIR_ "/bad", 0777);
    const int w[NIMG] = {40, 64, 30, 57, 33}, h[NIMG] = {30, 64, 50, 41, 33};
    for (int i = 0; i < NIMG; i++) {
        uint8_t *p = gen_pattern(w[i], h[i], 10u + (unsigned)i);
        if (strstr(g_files[i], ".png"))
            gen_png_rgb(g_files[i], w[i], h[i], p, 0);
        else
            gen_jpeg_rgb(g_files[i], w[i], h[i], p, 90, 1, 0);
        free(p);
    }
    gen_write_file(DIR_ "/imgs/.hidden.png", "not read", 8);
    gen_write_file(DIR_ "/bad/broken.jpg", "\xff\xd8\xff\xe0 truncated", 15);
}

/* Runs a command with a NULL-terminated argument list. */
static kt_status run(kt_status (*cmd)(int, char **, kt_err *), kt_err *err, ...)
{
    char *argv[40];
    int argc = 0;
    va_list ap;
    va_start(ap, err);
    for (char *a; (a = va_arg(ap, char *)) && argc < 39;) argv[argc++] = a;
    va_end(ap);
    argv[argc] = NULL;
    memset(err, 0, sizeof *err);
    return cmd(argc, argv, err);
}

typedef struct {
    int ndim;
    long shape[4];
    float *data;
    size_t n;
} npy;

/* Reads a float32 C-order .npy v1.0 file; 0 on any format problem. */
static int npy_read(npy *a, const char *path)
{
    memset(a, 0, sizeof *a);
    size_t len;
    uint8_t *b = gen_read_file(path, &len);
    if (!b || len < 10 || memcmp(b, "\x93NUMPY\x01\x00", 8) != 0) return free(b), 0;
    size_t hl = b[8] | (size_t)b[9] << 8;
    if (10 + hl > len || (10 + hl) % 64 != 0 || b[9 + hl] != '\n') return free(b), 0;
    char hdr[512];
    snprintf(hdr, sizeof hdr, "%.*s", (int)hl, (const char *)b + 10);
    char *sh = strstr(hdr, "'shape': (");
    if (!strstr(hdr, "'descr': '<f4'") || !strstr(hdr, "'fortran_order': False") || !sh)
        return free(b), 0;
    sh += 10;
    size_t n = 1;
    while (*sh != ')' && a->ndim < 4) {
        a->shape[a->ndim] = strtol(sh, &sh, 10);
        n *= (size_t)a->shape[a->ndim++];
        while (*sh == ',' || *sh == ' ') sh++;
    }
    if ((len - 10 - hl) != n * 4) return free(b), 0;
    a->n = n;
    a->data = malloc(n * 4 + 1);
    memcpy(a->data, b + 10 + hl, n * 4);
    free(b);
    return 1;
}

static double rel_diff(const float *a, const float *b, size_t n)
{
    double d = 0, r = 0;
    for (size_t i = 0; i < n; i++) d += pow(a[i] - b[i], 2), r += (double)b[i] * b[i];
    return sqrt(d / (r > 0 ? r : 1));
}

/* Reference: each image decoded, preprocessed and run alone. Returns
 * [NIMG-?][per] rows for the given files at point p. */
static float *reference(const kt_arch *a, int p, const char *const *files, int n, size_t *per)
{
    int c, h, w;
    kt_arch_point_shape(a, p, 32, &c, &h, &w);
    *per = (size_t)c * h * w;
    float *out = malloc(sizeof(float) * *per * n), *x = malloc(sizeof(float) * 3 * 32 * 32);
    kt_resnet *r = NULL;
    kt_err err = {0};
    kt_resnet_plan plan = {.batch = 1, .image_size = 32, .freeze = p, .stop = p};
    if (p > 0 && kt_resnet_init(&r, a, &plan, &err) != KT_OK) printf("# %s\n", err.msg);
    for (int i = 0; i < n; i++) {
        kt_image img = {0};
        if (kt_image_load(&img, files[i], &err) != KT_OK ||
            kt_transform_eval(x, 32 * 32, &img, 40, 32, &a->norm, &err) != KT_OK)
            printf("# %s\n", err.msg);
        kt_image_free(&img);
        const float *y = p > 0 && r ? kt_resnet_forward(r, 0, x, 1, 0) : x;
        memcpy(out + i * *per, y, sizeof(float) * *per); /* n = 1: [C][1][H][W] = [C][H][W] */
    }
    kt_resnet_free(r);
    free(x);
    return out;
}

static void test_embed(const kt_arch *a)
{
    kt_err err;
    npy e1, e3, m;
    const char *layers[3] = {"avgpool", "input", "layer2"};
    const int points[3] = {2 + a->nblocks, 0, 1 + a->depth[0] + a->depth[1]};
    for (int k = 0; k < 3; k++) {
        kt_status st = run(kt_cmd_embed, &err, "embed", "-m", MODEL, "--layer", layers[k], "-o",
                           DIR_ "/e.npy", "--resize", "40", "--size", "32", "-b", "2", "-q",
                           DIR_ "/imgs/a.png", DIR_ "/imgs/b.jpg", DIR_ "/imgs/c.png", DIR_ "/imgs/sub",
                           NULL);
        int ok = st == KT_OK && npy_read(&m, DIR_ "/e.npy");
        size_t per = 0;
        float *ref = reference(a, points[k], g_files, NIMG, &per);
        int c, h, w;
        kt_arch_point_shape(a, points[k], 32, &c, &h, &w);
        int shape_ok = ok && m.shape[0] == NIMG && m.shape[1] == c &&
                       (points[k] == 2 + a->nblocks ? m.ndim == 2 : m.ndim == 4 && m.shape[2] == h && m.shape[3] == w);
        double e = shape_ok ? rel_diff(m.data, ref, per * NIMG) : 1;
        CHECK(shape_ok && e < 1e-5,
              "embed --layer %s: [%ld, %ld, ...] rows in input order equal single-image passes (rel %.2e) %s",
              layers[k], ok ? m.shape[0] : -1, ok ? m.shape[1] : -1, e, err.msg);
        free(ref), free(m.data);
    }
    /* batch size does not matter */
    kt_status s1 = run(kt_cmd_embed, &err, "embed", "-m", MODEL, "--layer", "layer3.1", "-o",
                       DIR_ "/b1.npy", "--resize", "40", "--size", "32", "-b", "1", "-q", DIR_ "/imgs", NULL);
    kt_status s3 = run(kt_cmd_embed, &err, "embed", "-m", MODEL, "--layer", "layer3.1", "-o",
                       DIR_ "/b3.npy", "--resize", "40", "--size", "32", "-b", "3", "-t", "1", "-q",
                       DIR_ "/imgs", NULL);
    int ok = s1 == KT_OK && s3 == KT_OK && npy_read(&e1, DIR_ "/b1.npy") && npy_read(&e3, DIR_ "/b3.npy");
    double e = ok && e1.n == e3.n ? rel_diff(e1.data, e3.data, e1.n) : 1;
    CHECK(ok && e < 1e-6, "embed with batch 1 and batch 3 (1 thread) agree: rel %.2e", e);
    if (ok) free(e1.data), free(e3.data);

    /* a bad image: an error naming it and no output; or skipped */
    remove(DIR_ "/bad.npy");
    kt_status st = run(kt_cmd_embed, &err, "embed", "-m", MODEL, "--layer", "avgpool", "-o",
                       DIR_ "/bad.npy", "--resize", "40", "--size", "32", "-q", DIR_ "/imgs/a.png",
                       DIR_ "/bad/broken.jpg", DIR_ "/imgs/c.png", NULL);
    struct stat sb;
    CHECK(st == KT_ERR_DATA && strstr(err.msg, "broken.jpg") && stat(DIR_ "/bad.npy", &sb) != 0 &&
              stat(DIR_ "/bad.npy.tmp", &sb) != 0,
          "embed: a bad image is a data error naming it, nothing written: %s", err.msg);
    st = run(kt_cmd_embed, &err, "embed", "-m", MODEL, "--layer", "avgpool", "-o", DIR_ "/bad.npy",
             "--resize", "40", "--size", "32", "-q", "--skip-bad", DIR_ "/imgs/a.png",
             DIR_ "/bad/broken.jpg", DIR_ "/imgs/c.png", NULL);
    ok = st == KT_OK && npy_read(&m, DIR_ "/bad.npy");
    CHECK(ok && m.shape[0] == 2, "embed --skip-bad leaves the bad image out (%ld rows)", ok ? m.shape[0] : -1);
    if (ok) free(m.data);
    st = run(kt_cmd_embed, &err, "embed", "-m", MODEL, "--layer", "layer9", "-o", DIR_ "/x.npy",
             DIR_ "/imgs", NULL);
    CHECK(st == KT_ERR_USAGE && strstr(err.msg, "layer9"), "embed: unknown layer is a usage error: %s",
          err.msg);
    st = run(kt_cmd_embed, &err, "embed", "-m", MODEL, "--layer", "stem", "-o", DIR_ "/x.npy",
             DIR_ "/missing.png", NULL);
    CHECK(st == KT_ERR_USAGE && strstr(err.msg, "missing.png"), "embed: a missing input is named: %s",
          err.msg);
}

/* A whole file as a NUL-terminated string (NULL if unreadable). */
static char *read_text(const char *path)
{
    size_t len;
    uint8_t *b = gen_read_file(path, &len);
    char *s = b ? realloc(b, len + 1) : NULL;
    if (s) s[len] = '\0';
    else free(b);
    return s;
}

/* Runs predict with stdout captured into path. */
static kt_status predict_to(const char *path, kt_err *err, const char *labels, const char *k)
{
    fflush(stdout);
    int saved = dup(1), fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    dup2(fd, 1);
    close(fd);
    kt_status st = labels ? run(kt_cmd_predict, err, "predict", "-m", MODEL, "--json", "-k", k,
                                "--resize", "40", "--size", "32", "--labels", labels, DIR_ "/imgs", NULL)
                          : run(kt_cmd_predict, err, "predict", "-m", MODEL, "--json", "-k", k,
                                "--resize", "40", "--size", "32", DIR_ "/imgs", NULL);
    fflush(stdout);
    dup2(saved, 1);
    close(saved);
    return st;
}

static void test_predict(const kt_arch *a)
{
    kt_err err;
    size_t per;
    const int nc = a->num_classes;
    float *logits = reference(a, 3 + a->nblocks, g_files, NIMG, &per);
    float *probs = malloc(sizeof(float) * NIMG * nc);
    kt_softmax(probs, logits, NIMG, nc);
    gen_write_file(DIR_ "/labels.txt", "zero\none\ntwo\nthree\nfour\n", 24);
    gen_write_file(DIR_ "/labels.json", "{\"0\": \"cat\", \"4\": \"dog \\\"x\\\"\"}", 31);
    const char *lab[3] = {NULL, DIR_ "/labels.txt", DIR_ "/labels.json"};
    for (int v = 0; v < 3; v++) {
        kt_status st = predict_to(DIR_ "/pred.out", &err, lab[v], "3");
        char *text = read_text(DIR_ "/pred.out");
        int lines = 0, good = st == KT_OK && text;
        for (char *line = text; good && line && *line; lines++) {
            char *nl = strchr(line, '\n');
            if (nl) *nl = '\0';
            cJSON *o = cJSON_Parse(line);
            const cJSON *img = cJSON_GetObjectItem(o, "image"), *top = cJSON_GetObjectItem(o, "top");
            good = o && cJSON_IsString(img) && lines < NIMG && strcmp(img->valuestring, g_files[lines]) == 0 &&
                   cJSON_GetArraySize(top) == 3;
            double prev = 2;
            for (int j = 0; good && j < 3; j++) {
                const cJSON *e = cJSON_GetArrayItem(top, j);
                int idx = cJSON_GetObjectItem(e, "index")->valueint;
                double p = cJSON_GetObjectItem(e, "prob")->valuedouble;
                const cJSON *l = cJSON_GetObjectItem(e, "label");
                good = idx >= 0 && idx < nc && p <= prev && fabs(p - probs[lines * nc + idx]) < 1e-5;
                if (v == 0) good = good && cJSON_IsNull(l);
                if (v == 1) good = good && cJSON_IsString(l) && strcmp(l->valuestring, (const char *[]){"zero", "one", "two", "three", "four"}[idx]) == 0;
                if (v == 2) good = good && (idx == 0 ? strcmp(l->valuestring, "cat") == 0 : idx == 4 ? strcmp(l->valuestring, "dog \"x\"") == 0 : cJSON_IsNull(l));
                prev = p;
            }
            cJSON_Delete(o);
            line = nl ? nl + 1 : NULL;
        }
        CHECK(good && lines == NIMG, "predict --json (labels: %s): %d lines, top-3 sorted, softmax of the logits %s",
              lab[v] ? lab[v] : "none", lines, err.msg);
        free(text);
    }
    gen_write_file(DIR_ "/labels_bad.json", "{\"7\": \"out of range\"}", 21);
    kt_status st = predict_to(DIR_ "/pred.out", &err, DIR_ "/labels_bad.json", "2");
    CHECK(st == KT_ERR_USAGE && strstr(err.msg, "labels_bad.json"), "predict: a label index past the classes: %s",
          err.msg);
    st = predict_to(DIR_ "/pred.out", &err, NULL, "9");
    char *text = read_text(DIR_ "/pred.out");
    cJSON *o = text ? cJSON_Parse(text) : NULL;
    CHECK(st == KT_OK && cJSON_GetArraySize(cJSON_GetObjectItem(o, "top")) == nc,
          "predict -k larger than the class count shows every class");
    cJSON_Delete(o), free(text), free(logits), free(probs);
}

int main(int argc, char **argv)
{
    (void)argc;
    kt_blas_init(argv);
    make_images();
    kt_weights *w = NULL;
    kt_arch *a = NULL;
    kt_err err = {0};
    if (kt_weights_load(&w, MODEL, &err) != KT_OK || kt_arch_init(&a, w, &err) != KT_OK) {
        CHECK(0, "fixture loads: %s", err.msg);
        TEST_EXIT();
    }
    test_embed(a);
    test_predict(a);
    kt_arch_free(a);
    kt_weights_free(w);
    TEST_EXIT();
}
