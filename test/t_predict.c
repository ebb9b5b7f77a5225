/* t_predict.c - kt predict and kt eval on kt checkpoints, in-process, with
 * the numbers checked against an independent computation:
 *  - two checkpoints are trained here on data-samples/: one from the
 *    torchvision-layout narrow fixture (hidden GELU layer in the head, crop
 *    48 of 56), one from the Keras TF.js-layout fixture (plain linear head,
 *    crop 64 of 80);
 *  - the input each one is fed is its own: the geometry of its metadata and
 *    the normalisation of its weights' framework (the constants are written
 *    out here, not taken from kt), so neither gets the 256/224 or the
 *    torchvision defaults;
 *  - predict --json probabilities equal a forward pass of that input through
 *    the backbone and a head computed here from the checkpoint's tensors
 *    (Linear, exact GELU, Linear; dropout off);
 *  - eval's counts equal the same predictions, and its misclassified list is
 *    exactly predict's disagreements with the folder names;
 *  - a weights file without a classifier, a truncated or damaged checkpoint:
 *    the right status and a message naming the file.
 * It also writes test/out/predictc/nohead.safetensors for t_predict.sh.
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
#include "infer.h"
#include "resnet.h"
#include "test.h"
#include "transform.h"
#include "weights.h"

#define DIR_ "test/out/predictc"
#define NFILES 6

/* Val images of the three classes, PNG and JPEG, progressive and not. */
static const char *const g_files[NFILES] = {
    "data-samples/val/bubbles/bubbles_00.jpg",          "data-samples/val/bubbles/bubbles_01.jpg",
    "data-samples/val/checkerboard/checkerboard_05.png", "data-samples/val/checkerboard/checkerboard_06.jpg",
    "data-samples/val/stripes/stripes_05.png",          "data-samples/val/stripes/stripes_06.jpg"};

/* The normalisations of the two frameworks (torchvision's ImageNet mean/std on
 * [0,1] RGB; Keras' caffe mode: BGR, mean subtracted from [0,255]). */
static const kt_norm g_torch = {0, 1.0f / 255.0f, {0.485f, 0.456f, 0.406f}, {0.229f, 0.224f, 0.225f}};
static const kt_norm g_caffe = {1, 1.0f, {103.939f, 116.779f, 123.68f}, {1.0f, 1.0f, 1.0f}};

typedef struct {
    const char *name, *weights, *freeze, *hidden;
    int size, resize;
    const kt_norm *norm;
    char ckpt[256];
} model;

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

/* Runs cmd with stdout going to path. */
static kt_status run_to(const char *path, kt_status (*cmd)(int, char **, kt_err *), kt_err *err,
                        char **argv, int argc)
{
    fflush(stdout);
    int saved = dup(1), fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    dup2(fd, 1);
    close(fd);
    memset(err, 0, sizeof *err);
    kt_status st = cmd(argc, argv, err);
    fflush(stdout);
    dup2(saved, 1);
    close(saved);
    return st;
}

static char *read_text(const char *path)
{
    size_t len;
    uint8_t *b = gen_read_file(path, &len);
    char *s = b ? realloc(b, len + 1) : NULL;
    if (s) s[len] = '\0';
    else free(b);
    return s;
}

static int train(model *m)
{
    char job[16384], path[300], cwd[1024];
    if (!getcwd(cwd, sizeof cwd)) return 0;
    snprintf(job, sizeof job,
             "{\"model\": {\"weights\": \"%s/%s\", \"freeze\": \"%s\"},\n"
             " \"head\": {\"hidden\": [%s], \"dropout\": 0.3, \"activation\": \"gelu\"},\n"
             " \"data\": {\"train\": \"%s/data-samples/train\", \"val\": \"%s/data-samples/val\",\n"
             "          \"image_size\": %d, \"resize\": %d, \"workers\": 2},\n"
             " \"train\": {\"epochs\": 3, \"batch_size\": 8, \"optimizer\": {\"name\": \"adam\", \"lr\": 0.01},\n"
             "           \"seed\": 5, \"threads\": 2},\n"
             " \"output\": {\"dir\": \"%s/" DIR_ "/%s\"}}\n",
             cwd, m->weights, m->freeze, m->hidden, cwd, cwd, m->size, m->resize, cwd, m->name);
    snprintf(path, sizeof path, DIR_ "/%s.json", m->name);
    gen_write_file(path, job, strlen(job));
    snprintf(m->ckpt, sizeof m->ckpt, DIR_ "/%s/best.safetensors", m->name);
    kt_err err;
    kt_status st = run(kt_cmd_train, &err, "train", "--quiet", "--force", "--no-cache", path, NULL);
    CHECK(st == KT_OK, "%s: a checkpoint trained on data-samples: %s", m->name, err.msg);
    return st == KT_OK;
}

/* The input the checkpoint's own preprocessing gives, and the one predict uses. */
static void test_input(const model *m)
{
    kt_infer inf = {0};
    kt_err err = {0};
    kt_status st = kt_infer_open(&inf, m->ckpt, "input", NFILES, 0, 0, &err);
    if (st == KT_OK) st = kt_infer_start(&inf, g_files, NFILES, 0, &err);
    const kt_batch *b = NULL;
    if (st == KT_OK) st = kt_infer_next(&inf, &b, &err);
    CHECK(st == KT_OK && b && b->n == NFILES, "%s: input batch: %s", m->name, err.msg);
    if (st != KT_OK || !b) {
        kt_infer_close(&inf);
        return;
    }
    CHECK(inf.resize == m->resize && inf.size == m->size, "%s: geometry from the checkpoint: resize %d, crop %d",
          m->name, inf.resize, inf.size);
    const int S = m->size;
    const size_t S2 = (size_t)S * S;
    float *x = malloc(sizeof(float) * 3 * S2);
    int same = 1;
    double mean0 = 0;
    for (int i = 0; i < NFILES; i++) {
        kt_image img = {0};
        if (kt_image_load(&img, g_files[i], &err) != KT_OK ||
            kt_transform_eval(x, S2, &img, m->resize, S, m->norm, &err) != KT_OK)
            same = 0;
        kt_image_free(&img);
        for (int c = 0; c < 3 && same; c++)
            same = memcmp(x + c * S2, b->input + ((size_t)c * NFILES + i) * S2, sizeof(float) * S2) == 0;
        for (size_t j = 0; j < S2; j++) mean0 += x[j] / (double)(S2 * NFILES);
    }
    CHECK(same, "%s: the input tensor is the %s normalisation at resize %d / crop %d, bit for bit",
          m->name, m->norm->bgr ? "caffe (BGR, mean subtracted)" : "torchvision (RGB /255, mean/std)",
          m->resize, m->size);
    /* Sanity of the two conventions: caffe inputs are in pixel units. */
    CHECK(m->norm->bgr ? fabs(mean0) > 5 : fabs(mean0) < 3, "%s: channel 0 mean %.3f fits its convention",
          m->name, mean0);
    free(x);
    kt_infer_close(&inf);
}

/* Reference logits: backbone to avgpool on the checkpoint's input, then the
 * head from the checkpoint's tensors computed here in double. */
static double *reference_logits(const model *m, int *nclasses)
{
    kt_weights *w = NULL;
    kt_arch *a = NULL;
    kt_resnet *r = NULL;
    kt_err err = {0};
    const int S = m->size;
    double *out = NULL;
    float *x = malloc(sizeof(float) * 3 * (size_t)S * S);
    if (kt_weights_load(&w, m->ckpt, &err) != KT_OK || kt_arch_init(&a, w, &err) != KT_OK) goto done;
    kt_resnet_plan plan = {.batch = 1, .image_size = S, .freeze = 2 + a->nblocks, .stop = 2 + a->nblocks};
    if (kt_resnet_init(&r, a, &plan, &err) != KT_OK) goto done;
    const int hidden = strcmp(m->hidden, "") != 0;
    const kt_tensor *w1 = kt_weights_find(w, hidden ? "fc.0.weight" : "fc.weight");
    const kt_tensor *b1 = kt_weights_find(w, hidden ? "fc.0.bias" : "fc.bias");
    const kt_tensor *w2 = hidden ? kt_weights_find(w, "fc.3.weight") : NULL;
    const kt_tensor *b2 = hidden ? kt_weights_find(w, "fc.3.bias") : NULL;
    if (!w1 || !b1 || (hidden && (!w2 || !b2))) goto done;
    const int F = a->features, H = (int)w1->shape[0], K = hidden ? (int)w2->shape[0] : H;
    out = calloc((size_t)NFILES * K, sizeof *out);
    double *h = malloc(sizeof(double) * H);
    for (int i = 0; i < NFILES; i++) {
        kt_image img = {0};
        if (kt_image_load(&img, g_files[i], &err) != KT_OK ||
            kt_transform_eval(x, (size_t)S * S, &img, m->resize, S, m->norm, &err) != KT_OK)
            printf("# %s\n", err.msg);
        kt_image_free(&img);
        const float *f = kt_resnet_forward(r, 0, x, 1, 0);
        for (int o = 0; o < H; o++) {
            double s = b1->data[o];
            for (int j = 0; j < F; j++) s += (double)w1->data[(size_t)o * F + j] * f[j];
            h[o] = hidden ? 0.5 * s * (1 + erf(s / sqrt(2.0))) : s;
        }
        for (int o = 0; o < K; o++) {
            double s = hidden ? b2->data[o] : h[o];
            for (int j = 0; hidden && j < H; j++) s += (double)w2->data[(size_t)o * H + j] * h[j];
            out[(size_t)i * K + o] = s;
        }
    }
    free(h);
    *nclasses = K;
done:
    if (!out) printf("# reference: %s\n", err.msg);
    free(x);
    kt_resnet_free(r);
    kt_arch_free(a);
    kt_weights_free(w);
    return out;
}

/* predict --json -k 3 on the files vs the reference; returns the predicted
 * class names (for the eval check) in pred[NFILES][32]. */
static void test_predict(const model *m, char pred[NFILES][32])
{
    int K = 0;
    double *ref = reference_logits(m, &K);
    CHECK(ref && K == 3, "%s: reference head computed from the checkpoint's tensors (%d classes)", m->name, K);
    if (!ref) return;
    char *argv[20] = {"predict", "-m", (char *)m->ckpt, "--json", "-k", "3", "-b", "4"};
    int argc = 8;
    for (int i = 0; i < NFILES; i++) argv[argc++] = (char *)g_files[i];
    kt_err err;
    kt_status st = run_to(DIR_ "/pred.out", kt_cmd_predict, &err, argv, argc);
    char *text = read_text(DIR_ "/pred.out");
    int lines = 0, good = st == KT_OK && text;
    double worst = 0;
    const char *names[3] = {"bubbles", "checkerboard", "stripes"};
    for (char *line = text; good && line && *line; lines++) {
        char *nl = strchr(line, '\n');
        if (nl) *nl = '\0';
        cJSON *o = cJSON_Parse(line);
        const cJSON *top = cJSON_GetObjectItem(o, "top"), *img = cJSON_GetObjectItem(o, "image");
        good = o && lines < NFILES && cJSON_IsString(img) && strcmp(img->valuestring, g_files[lines]) == 0 &&
               cJSON_GetArraySize(top) == 3 && !cJSON_GetObjectItem(o, "abstained");
        const double *z = ref + (size_t)lines * 3;
        double mx = fmax(z[0], fmax(z[1], z[2])), sum = 0, p[3];
        for (int c = 0; c < 3; c++) sum += exp(z[c] - mx);
        for (int c = 0; c < 3; c++) p[c] = exp(z[c] - mx) / sum;
        double prev = 2;
        for (int j = 0; good && j < 3; j++) {
            const cJSON *e = cJSON_GetArrayItem(top, j);
            int idx = cJSON_GetObjectItem(e, "index")->valueint;
            double pj = cJSON_GetObjectItem(e, "prob")->valuedouble;
            const cJSON *lab = cJSON_GetObjectItem(e, "label");
            good = idx >= 0 && idx < 3 && pj <= prev && cJSON_IsString(lab) &&
                   strcmp(lab->valuestring, names[idx]) == 0;
            if (good) worst = fmax(worst, fabs(pj - p[idx]));
            if (good && j == 0) snprintf(pred[lines], 32, "%s", names[idx]);
            prev = pj;
        }
        cJSON_Delete(o);
        line = nl ? nl + 1 : NULL;
    }
    CHECK(good && lines == NFILES && worst < 2e-5,
          "%s: predict --json: %d lines in input order, class names from the checkpoint, probabilities "
          "= softmax(head(backbone(own input))) within %.1e %s",
          m->name, lines, worst, err.msg);
    free(text);

    /* With the 256/224 defaults the numbers would differ: the metadata matters. */
    char *argv2[24] = {"predict", "-m", (char *)m->ckpt, "--json", "-k", "3", "--resize", "256", "--size", "224"};
    argc = 10;
    for (int i = 0; i < NFILES; i++) argv2[argc++] = (char *)g_files[i];
    st = run_to(DIR_ "/pred224.out", kt_cmd_predict, &err, argv2, argc);
    char *a = read_text(DIR_ "/pred.out"), *b = read_text(DIR_ "/pred224.out");
    CHECK(st == KT_OK && a && b && strcmp(a, b) != 0,
          "%s: explicit --resize 256 --size 224 changes the output (the default is the checkpoint's geometry)",
          m->name);
    free(a), free(b), free(ref);
}

/* eval on a folder holding the same files: its counts are predict's. */
static void test_eval(const model *m, char pred[NFILES][32])
{
    char path[256];
    mkdir(DIR_ "/evaldata", 0777);
    const char *cls[3] = {"bubbles", "checkerboard", "stripes"};
    for (int c = 0; c < 3; c++) {
        snprintf(path, sizeof path, DIR_ "/evaldata/%s", cls[c]);
        mkdir(path, 0777);
    }
    int correct = 0;
    for (int i = 0; i < NFILES; i++) {
        size_t n;
        uint8_t *bytes = gen_read_file(g_files[i], &n);
        snprintf(path, sizeof path, DIR_ "/evaldata/%s", g_files[i] + strlen("data-samples/val/"));
        gen_write_file(path, bytes, n);
        free(bytes);
        correct += strncmp(g_files[i] + strlen("data-samples/val/"), pred[i], strlen(pred[i])) == 0 &&
                   g_files[i][strlen("data-samples/val/") + strlen(pred[i])] == '/';
    }
    char *argv[] = {"eval", "-m", (char *)m->ckpt, "--json", "-b", "4", DIR_ "/evaldata"};
    kt_err err;
    kt_status st = run_to(DIR_ "/eval.out", kt_cmd_eval, &err, argv, 7);
    char *text = read_text(DIR_ "/eval.out");
    cJSON *o = text ? cJSON_Parse(text) : NULL;
    const cJSON *acc = cJSON_GetObjectItem(o, "acc"), *n = cJSON_GetObjectItem(o, "n");
    const cJSON *mis = cJSON_GetObjectItem(o, "misclassified"), *conf = cJSON_GetObjectItem(o, "confusion");
    int good = st == KT_OK && cJSON_IsNumber(acc) && cJSON_IsNumber(n) && n->valueint == NFILES &&
               fabs(acc->valuedouble - (double)correct / NFILES) < 1e-12 &&
               cJSON_GetArraySize(mis) == NFILES - correct;
    /* every misclassified entry is predict's answer for that file */
    const cJSON *e;
    cJSON_ArrayForEach(e, mis) {
        const char *img = cJSON_GetObjectItem(e, "image")->valuestring;
        const char *p = cJSON_GetObjectItem(e, "predicted")->valuestring;
        int found = 0;
        for (int i = 0; i < NFILES; i++)
            if (strstr(img, g_files[i] + strlen("data-samples/val/"))) found = strcmp(p, pred[i]) == 0;
        good = good && found;
    }
    /* the confusion matrix rows are the true classes, its diagonal the hits */
    int diag = 0, total = 0;
    for (int r = 0; r < 3 && cJSON_GetArraySize(conf) == 3; r++)
        for (int c = 0; c < 3; c++) {
            int v = cJSON_GetArrayItem(cJSON_GetArrayItem(conf, r), c)->valueint;
            total += v, diag += r == c ? v : 0;
        }
    CHECK(good && diag == correct && total == NFILES,
          "%s: eval agrees with predict: accuracy %d/%d, %d misclassified with predict's labels, "
          "confusion diagonal %d %s",
          m->name, correct, NFILES, NFILES - correct, diag, err.msg);
    cJSON_Delete(o), free(text);
}

/* narrow50 without its fc: a backbone only. */
static void test_bad_models(const model *m)
{
    kt_weights *w = NULL;
    kt_err err = {0};
    if (kt_weights_load(&w, "test/fixtures/narrow50.safetensors", &err) == KT_OK) {
        kt_wtensor t[400];
        int n = 0;
        for (int i = 0; i < kt_weights_count(w) && n < 400; i++) {
            const kt_tensor *x = kt_weights_at(w, i);
            if (strncmp(x->name, "fc.", 3) == 0) continue;
            t[n] = (kt_wtensor){.name = x->name, .ndim = x->ndim, .data = x->data, .idata = x->idata};
            memcpy(t[n].shape, x->shape, sizeof t[n].shape);
            n++;
        }
        kt_weights_write(DIR_ "/nohead.safetensors", t, n, NULL, &err);
    }
    kt_weights_free(w);
    kt_status st = run(kt_cmd_predict, &err, "predict", "-m", DIR_ "/nohead.safetensors", g_files[0], NULL);
    CHECK(st == KT_ERR_USAGE && strstr(err.msg, "nohead.safetensors") && strstr(err.msg, "no classifier"),
          "predict with a backbone-only weights file: usage error naming it: %s", err.msg);
    st = run(kt_cmd_eval, &err, "eval", "-m", DIR_ "/nohead.safetensors", "data-samples/val", NULL);
    CHECK(st == KT_ERR_USAGE && strstr(err.msg, "no classifier"), "eval with it: the same: %s", err.msg);

    /* the checkpoint cut short, and with one tensor byte changed */
    size_t len;
    uint8_t *bytes = gen_read_file(m->ckpt, &len);
    if (!bytes) return;
    gen_write_file(DIR_ "/trunc.safetensors", bytes, len - 1000);
    st = run(kt_cmd_predict, &err, "predict", "-m", DIR_ "/trunc.safetensors", g_files[0], NULL);
    CHECK(st == KT_ERR_RUNTIME && strstr(err.msg, "trunc.safetensors"),
          "predict with a truncated checkpoint: runtime error naming it: %s", err.msg);
    bytes[len - 3] ^= 0x40; /* the last tensor's data */
    gen_write_file(DIR_ "/damaged.safetensors", bytes, len);
    st = run(kt_cmd_eval, &err, "eval", "-m", DIR_ "/damaged.safetensors", "data-samples/val", NULL);
    CHECK(st == KT_ERR_RUNTIME && strstr(err.msg, "damaged.safetensors") && strstr(err.msg, "checksum"),
          "eval with a damaged checkpoint: the checksum catches it: %s", err.msg);
    free(bytes);
    st = run(kt_cmd_predict, &err, "predict", "-m", "test/fixtures/kt_keras.safetensors", g_files[0], NULL);
    CHECK(st == KT_ERR_RUNTIME && strstr(err.msg, "kt_keras.safetensors"),
          "a file with kt metadata that is not a complete checkpoint is refused: %s", err.msg);
}

int main(int argc, char **argv)
{
    (void)argc;
    kt_blas_init(argv);
    mkdir("test/out", 0777), mkdir(DIR_, 0777);
    model models[2] = {
        {"torch_mlp", "test/fixtures/narrow50.safetensors", "layer3", "8", 48, 56, &g_torch, ""},
        {"keras_linear", "test/fixtures/narrow50_keras/model.json", "avgpool", "", 64, 80, &g_caffe, ""},
    };
    for (int i = 0; i < 2; i++) {
        if (!train(&models[i])) continue;
        char pred[NFILES][32] = {{0}};
        test_input(&models[i]);
        test_predict(&models[i], pred);
        test_eval(&models[i], pred);
    }
    test_bad_models(&models[0]);
    TEST_EXIT();
}
