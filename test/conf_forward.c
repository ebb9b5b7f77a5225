/* conf_forward.c - runs kt's network on the oracle's input tensors and writes
 * the activations in the oracle's layout, for compare.py (test/
 * conformance_forward.sh builds and runs it).
 *
 *   conf_forward MODEL CASES OUT POINTS CASE...
 *
 * Reads CASES/forward/CASE/input.bin (3x224x224 float32) for every CASE,
 * runs them as one batch through a network planned to stop at each point of
 * the comma-separated POINTS (any kt_arch_point_find name; "probs" is the
 * softmax of the logits) and writes OUT/forward/CASE/POINT.bin, CHW per image.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "arch.h"
#include "blas.h"
#include "ops.h"
#include "resnet.h"
#include "weights.h"

#define S 224

static int write_bin(const char *path, const float *p, size_t n)
{
    FILE *f = fopen(path, "wb");
    int ok = f && fwrite(p, sizeof(float), n, f) == n;
    if (f && fclose(f) != 0) ok = 0;
    if (!ok) fprintf(stderr, "conf_forward: %s: %s\n", path, strerror(errno));
    return ok;
}

int main(int argc, char **argv)
{
    if (argc < 6) {
        fprintf(stderr, "usage: conf_forward MODEL CASES OUT POINTS CASE...\n");
        return 2;
    }
    kt_blas_init(argv);
    const char *model = argv[1], *cases = argv[2], *out = argv[3];
    char *points = argv[4];
    char **names = argv + 5;
    const int n = argc - 5;
    kt_weights *w = NULL;
    kt_arch *a = NULL;
    kt_err err = {0};
    if (kt_weights_load(&w, model, &err) != KT_OK || kt_arch_init(&a, w, &err) != KT_OK) {
        fprintf(stderr, "conf_forward: %s\n", err.msg);
        return 1;
    }
    /* [3][n][S][S]: each case's CHW planes go to its column of the batch */
    const size_t plane = (size_t)S * S;
    float *in = malloc(sizeof(float) * 3 * n * plane), *img = malloc(sizeof(float) * 3 * plane);
    char path[4096];
    for (int i = 0; i < n; i++) {
        snprintf(path, sizeof path, "%s/forward/%s/input.bin", cases, names[i]);
        FILE *f = fopen(path, "rb");
        if (!f || fread(img, sizeof(float), 3 * plane, f) != 3 * plane) {
            fprintf(stderr, "conf_forward: cannot read %s\n", path);
            return 1;
        }
        fclose(f);
        for (int c = 0; c < 3; c++)
            memcpy(in + ((size_t)c * n + i) * plane, img + c * plane, sizeof(float) * plane);
        snprintf(path, sizeof path, "%s/forward", out);
        mkdir(out, 0777), mkdir(path, 0777);
        snprintf(path, sizeof path, "%s/forward/%s", out, names[i]);
        mkdir(path, 0777);
    }
    int rc = 0;
    for (char *pt = strtok(points, ","); pt && !rc; pt = strtok(NULL, ",")) {
        int probs = strcmp(pt, "probs") == 0, p, c, h, ww;
        if (kt_arch_point_find(a, probs ? "logits" : pt, &p, &err) != KT_OK) {
            fprintf(stderr, "conf_forward: %s\n", err.msg);
            return 1;
        }
        kt_arch_point_shape(a, p, S, &c, &h, &ww);
        kt_resnet_plan plan = {.batch = n, .image_size = S, .freeze = p, .stop = p};
        kt_resnet *r = NULL;
        if (kt_resnet_init(&r, a, &plan, &err) != KT_OK) {
            fprintf(stderr, "conf_forward: %s\n", err.msg);
            return 1;
        }
        const float *y = kt_resnet_forward(r, 0, in, n, 0);
        size_t per = (size_t)c * h * ww;
        float *row = malloc(sizeof(float) * per);
        for (int i = 0; i < n && !rc; i++) {
            if (p >= 2 + a->nblocks) {
                memcpy(row, y + i * per, sizeof(float) * per); /* [n][C] rows */
                if (probs) kt_softmax(row, row, 1, c);
            } else {
                for (int ch = 0; ch < c; ch++)
                    memcpy(row + ch * (size_t)h * ww, y + ((size_t)ch * n + i) * h * ww,
                           sizeof(float) * h * ww);
            }
            snprintf(path, sizeof path, "%s/forward/%s/%s.bin", out, names[i], pt);
            rc = !write_bin(path, row, per);
        }
        free(row);
        kt_resnet_free(r);
    }
    free(in), free(img);
    kt_arch_free(a);
    kt_weights_free(w);
    return rc;
}
