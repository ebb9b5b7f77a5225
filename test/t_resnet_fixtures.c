/* t_resnet_fixtures.c - the executable network on the committed narrow
 * ResNet fixtures (test/fixtures, written by tools/gen_fixtures.py) against
 * their float64 numpy reference forward passes: torchvision bottleneck v1.5,
 * basic blocks, and the Keras/Caffe v1 variant from a TF.js model.json (stride
 * on branch2a, conv biases, eps 1e-3). Every stage the reference dumps is
 * checked, each from a network planned to stop there, and the chain is also
 * run split at every stage (frozen part, then eval-mode trainable blocks).
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "arch.h"
#include "blas.h"
#include "resnet.h"
#include "test.h"
#include "weights.h"

#define N 2
#define S 45

static float *read_bin(const char *path, size_t n)
{
    FILE *f = fopen(path, "rb");
    float *p = malloc(sizeof(float) * n);
    size_t got = f ? fread(p, sizeof(float), n, f) : 0;
    if (f) fclose(f);
    if (got != n) {
        printf("# %s: read %zu of %zu floats\n", path, got, n);
        free(p);
        return NULL;
    }
    return p;
}

/* kt's [C][N][H][W] (or [N][C] rows) against the reference's [N][C][H][W]. */
static double rel_l2(const float *kt, const float *ref, int c, int hw, int rows)
{
    double d = 0, r = 0;
    for (int i = 0; i < N; i++)
        for (int ch = 0; ch < c; ch++)
            for (int j = 0; j < hw; j++) {
                float a = rows ? kt[i * c + ch] : kt[((size_t)ch * N + i) * hw + j];
                float b = ref[((size_t)i * c + ch) * hw + j];
                d += (double)(a - b) * (a - b), r += (double)b * b;
            }
    return sqrt(d / r);
}

static void check_model(const char *model, const char *refdir, const char *const *points, int np)
{
    kt_weights *w = NULL;
    kt_arch *a = NULL;
    kt_err err = {0};
    if (kt_weights_load(&w, model, &err) != KT_OK || kt_arch_init(&a, w, &err) != KT_OK) {
        CHECK(0, "%s loads: %s", model, err.msg);
        kt_weights_free(w);
        return;
    }
    float *nchw = read_bin("test/fixtures/ref_input.bin", (size_t)N * 3 * S * S);
    float *in = malloc(sizeof(float) * N * 3 * S * S);
    for (int i = 0; i < N; i++)
        for (int c = 0; c < 3; c++)
            memcpy(in + ((size_t)c * N + i) * S * S, nchw + ((size_t)i * 3 + c) * S * S,
                   sizeof(float) * S * S);
    for (int k = 0; k < np; k++) {
        int p, c, h, ww;
        if (kt_arch_point_find(a, points[k], &p, &err) != KT_OK) {
            CHECK(0, "%s: point %s: %s", model, points[k], err.msg);
            continue;
        }
        kt_arch_point_shape(a, p, S, &c, &h, &ww);
        char path[256];
        snprintf(path, sizeof path, "%s/%s.bin", refdir, points[k]);
        float *ref = read_bin(path, (size_t)N * c * h * ww);
        int rows = p >= 2 + a->nblocks;
        /* inference plan (everything folded) */
        kt_resnet *r = NULL;
        kt_resnet_plan plan = {.batch = N, .image_size = S, .freeze = p, .stop = p};
        double e = 1;
        if (ref && kt_resnet_init(&r, a, &plan, &err) == KT_OK)
            e = rel_l2(kt_resnet_forward(r, 0, in, N, 0), ref, c, h * ww, rows);
        CHECK(e < 1e-5, "%s: %s (folded) vs float64 reference: rel_l2 %.2e", model, points[k], e);
        kt_resnet_free(r);
        /* the last point, cut here: frozen part up to this point, the rest
         * run as trainable blocks in eval mode */
        int last = kt_arch_npoints(a) - 1;
        if (k < np - 1 && p >= 1) {
            snprintf(path, sizeof path, "%s/%s.bin", refdir, points[np - 1]);
            int lc, lh, lw;
            kt_arch_point_shape(a, last, S, &lc, &lh, &lw);
            float *lref = read_bin(path, (size_t)N * lc);
            kt_resnet_plan tp = {.batch = N, .image_size = S, .freeze = p, .stop = last, .train = 1};
            r = NULL, e = 1;
            if (lref && kt_resnet_init(&r, a, &tp, &err) == KT_OK)
                e = rel_l2(kt_resnet_forward(r, 0, in, N, 0), lref, lc, 1, 1);
            CHECK(e < 1e-5, "%s: cut at %s, eval to %s: rel_l2 %.2e", model, points[k],
                  points[np - 1], e);
            kt_resnet_free(r);
            free(lref);
        }
        free(ref);
    }
    free(nchw), free(in);
    kt_arch_free(a);
    kt_weights_free(w);
}

int main(int argc, char **argv)
{
    (void)argc;
    kt_blas_init(argv);
    static const char *const n50[] = {"stem", "layer1", "layer2", "layer3.2", "layer3", "layer4", "avgpool", "logits"};
    static const char *const b18[] = {"stem", "layer1", "layer2", "layer3", "layer4", "avgpool", "logits"};
    check_model("test/fixtures/narrow50.safetensors", "test/fixtures/ref_narrow50", n50, 8);
    check_model("test/fixtures/narrow50_keras", "test/fixtures/ref_narrow50_keras", n50, 8);
    check_model("test/fixtures/basic18.safetensors", "test/fixtures/ref_basic18", b18, 7);
    TEST_EXIT();
}
