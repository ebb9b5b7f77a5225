/* t_arch.c - the ResNet derived from each fixture (test/fixtures/README):
 * variants, stride placement, eps, biases, Keras -> torchvision conversion,
 * kt checkpoint metadata, cut points and their aliases. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "arch.h"
#include "test.h"
#include "weights.h"

#define FIX "test/fixtures/"

typedef struct {
    kt_weights *w;
    kt_arch *a;
} model;

static model open_model(const char *path)
{
    model m = {0};
    kt_err e = {0};
    kt_status st = kt_weights_load(&m.w, path, &e);
    if (st == KT_OK)
        st = kt_arch_init(&m.a, m.w, &e);
    CHECK(st == KT_OK, "arch of %s%s%s", path, st ? ": " : "", st ? e.msg : "");
    return m;
}

static void close_model(model *m)
{
    kt_arch_free(m->a);
    kt_weights_free(m->w);
}

static int same_floats(const float *a, const float *b, int64_t n)
{
    if (!a || !b)
        return a == b;
    return memcmp(a, b, (size_t)n * sizeof *a) == 0;
}

static int64_t conv_numel(const kt_conv_desc *d)
{
    return (int64_t)d->cout * d->cin * d->k * d->k;
}

static int same_conv(const kt_conv_desc *x, const kt_conv_desc *y, int with_bias)
{
    return !strcmp(x->name, y->name) && x->cin == y->cin && x->cout == y->cout && x->k == y->k
           && x->stride == y->stride && x->pad == y->pad && same_floats(x->w, y->w, conv_numel(x))
           && (!with_bias || same_floats(x->bias, y->bias, x->cout));
}

static int same_bn(const kt_bn_desc *x, const kt_bn_desc *y, int eps)
{
    return !strcmp(x->name, y->name) && x->c == y->c && (!eps || x->eps == y->eps)
           && same_floats(x->gamma, y->gamma, x->c) && same_floats(x->beta, y->beta, x->c)
           && same_floats(x->mean, y->mean, x->c) && same_floats(x->var, y->var, x->c);
}

/* Same network and numbers; with_bias compares conv biases too; hyper
 * compares per-conv strides and BN eps (which differ between the Keras and
 * torchvision semantics of the same tensors). */
static int same_net(const kt_arch *a, const kt_arch *b, int with_bias, int hyper)
{
    if (a->nblocks != b->nblocks || a->bottleneck != b->bottleneck || a->features != b->features)
        return 0;
    kt_conv_desc sa = a->stem_conv, sb = b->stem_conv;
    if (!same_conv(&sa, &sb, with_bias) || !same_bn(&a->stem_bn, &b->stem_bn, hyper))
        return 0;
    for (int i = 0; i < a->nblocks; i++) {
        const kt_block_desc *x = &a->blocks[i], *y = &b->blocks[i];
        if (strcmp(x->name, y->name) || x->has_down != y->has_down || x->stride != y->stride)
            return 0;
        for (int j = 0; j < (x->bottleneck ? 3 : 2); j++) {
            kt_conv_desc cx = x->conv[j], cy = y->conv[j];
            if (!hyper)
                cx.stride = cy.stride = 1;
            if (!same_conv(&cx, &cy, with_bias) || !same_bn(&x->bn[j], &y->bn[j], hyper))
                return 0;
        }
        if (x->has_down && (!same_conv(&x->down, &y->down, with_bias) || !same_bn(&x->down_bn, &y->down_bn, hyper)))
            return 0;
    }
    return 1;
}

/* Learnable parameters counted from the file itself (torchvision names):
 * everything float except BN running statistics. */
static int64_t count_params(const kt_weights *w)
{
    int64_t n = 0;
    for (int i = 0; i < kt_weights_count(w); i++) {
        const kt_tensor *t = kt_weights_at(w, i);
        if (!t->is_int && !strstr(t->name, "running_") && strncmp(t->name, "fc.", 3) != 0)
            n += t->numel;
    }
    const kt_tensor *fw = kt_weights_find(w, "fc.weight"), *fb = kt_weights_find(w, "fc.bias");
    return n + (fw ? fw->numel : 0) + (fb ? fb->numel : 0);
}

static long file_size(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 ? (long)st.st_size : -1;
}

static void test_torchvision(void)
{
    model m = open_model(FIX "narrow50.safetensors");
    kt_arch *a = m.a;
    if (!a)
        return;
    CHECK(!strcmp(a->format, "torchvision") && !strcmp(a->variant, "resnet-custom"),
          "narrow50: format %s, variant %s", a->format, a->variant);
    CHECK(a->nstages == 4 && a->depth[0] == 3 && a->depth[1] == 4 && a->depth[2] == 6 && a->depth[3] == 3
              && a->nblocks == 16,
          "narrow50: depths %d %d %d %d", a->depth[0], a->depth[1], a->depth[2], a->depth[3]);
    CHECK(a->width[0] == 2 && a->width[1] == 4 && a->width[2] == 4 && a->width[3] == 8 && a->bottleneck,
          "narrow50: bottleneck widths %d %d %d %d", a->width[0], a->width[1], a->width[2], a->width[3]);
    CHECK(a->features == 32 && a->num_classes == 5 && a->fc_w && a->fc_b, "narrow50: 32 features, 5 classes");
    CHECK(a->stride_on_3x3 == 1 && a->stem_bn.eps == 1e-5f && a->stem_conv.bias == NULL
              && a->stem_conv.k == 7 && a->stem_conv.stride == 2 && a->stem_conv.pad == 3,
          "narrow50: v1.5, eps 1e-5, no conv bias, stem 7x7/2 pad 3");
    const kt_block_desc *l10 = &a->blocks[0], *l11 = &a->blocks[1], *l20 = &a->blocks[3];
    CHECK(l10->has_down && l10->stride == 1 && !l11->has_down && l10->cin == 4 && l10->cout == 8,
          "narrow50: layer1.0 projects 4 -> 8 at stride 1, layer1.1 has no projection");
    CHECK(!strcmp(l20->name, "layer2.0") && !strcmp(l20->keras_name, "res3a") && l20->stride == 2
              && l20->conv[0].stride == 1 && l20->conv[1].stride == 2 && l20->conv[1].pad == 1
              && l20->down.stride == 2 && l20->conv[2].k == 1,
          "narrow50: layer2.0 stride 2 on conv2 (3x3) and the projection");
    CHECK(!strcmp(l20->conv[1].name, "layer2.0.conv2") && !strcmp(l20->down.name, "layer2.0.downsample.0")
              && !strcmp(l20->down_bn.name, "layer2.0.downsample.1") && !strcmp(l20->bn[2].name, "layer2.0.bn3"),
          "narrow50: torchvision layer names");
    const kt_tensor *t = kt_weights_find(m.w, "layer2.0.conv2.weight");
    CHECK(t && l20->conv[1].w == t->data, "narrow50: F32 conv weights used in place");
    CHECK(a->nparams == count_params(m.w), "narrow50: nparams %lld", (long long)a->nparams);
    CHECK(a->norm.bgr == 0 && a->norm.scale == 1.0f / 255.0f && a->norm.mean[0] == 0.485f
              && a->norm.std[2] == 0.225f,
          "narrow50: torchvision preprocessing");

    /* Cut points: shapes at 45x45 agree with the reference files' sizes. */
    CHECK(kt_arch_npoints(a) == 20, "narrow50: 20 cut points (%d)", kt_arch_npoints(a));
    static const char *refs[] = {"stem", "layer1", "layer2", "layer3", "layer3.2", "layer4", "avgpool", "logits"};
    for (size_t i = 0; i < sizeof refs / sizeof refs[0]; i++) {
        int p = -1, c, h, w;
        kt_err e = {0};
        char path[128];
        kt_status st = kt_arch_point_find(a, refs[i], &p, &e);
        kt_arch_point_shape(a, p, 45, &c, &h, &w);
        snprintf(path, sizeof path, FIX "ref_narrow50/%s.bin", refs[i]);
        CHECK(st == KT_OK && file_size(path) == 2L * c * h * w * 4, "narrow50: %s at 45 is %dx%dx%d, as %s",
              refs[i], c, h, w, path);
    }
    int c, h, w;
    kt_arch_point_shape(a, 0, 224, &c, &h, &w);
    CHECK(c == 3 && h == 224 && w == 224, "narrow50: input point 3x224x224");
    kt_arch_point_shape(a, 1, 224, &c, &h, &w);
    CHECK(c == 4 && h == 56, "narrow50: stem at 224 is 4x56x56");
    kt_arch_point_shape(a, 17, 224, &c, &h, &w);
    CHECK(c == 32 && h == 7 && w == 7, "narrow50: layer4 at 224 is 32x7x7");

    static const struct {
        const char *name;
        int p;
    } alias[] = {
        {"input", 0}, {"none", 0}, {"stem", 1}, {"layer1.0", 2}, {"layer1", 4}, {"layer2", 8},
        {"layer3.2", 11}, {"layer3", 14}, {"layer4", 17}, {"layer4.2", 17}, {"avgpool", 18},
        {"avg_pool", 18}, {"logits", 19}, {"res2", 4}, {"res2a", 2}, {"res4c", 11}, {"res4f", 14},
        {"res4", 14}, {"res5", 17}, {"res5c", 17}, {"conv2_block1_out", 2}, {"conv4_block3_out", 11},
        {"conv4_block6_out", 14}, {"conv5_block3_out", 17},
    };
    int good = 1;
    for (size_t i = 0; i < sizeof alias / sizeof alias[0]; i++) {
        int p = -1;
        kt_err e = {0};
        if (kt_arch_point_find(a, alias[i].name, &p, &e) != KT_OK || p != alias[i].p) {
            good = 0;
            printf("# %s -> %d, want %d\n", alias[i].name, p, alias[i].p);
        }
    }
    CHECK(good, "narrow50: %zu names and aliases resolve", sizeof alias / sizeof alias[0]);
    good = 1;
    for (int p = 0; p < kt_arch_npoints(a); p++) {
        char buf[32];
        int q = -1;
        kt_err e = {0};
        if (kt_arch_point_find(a, kt_arch_point_name(a, p, buf, sizeof buf), &q, &e) != KT_OK || q != p)
            good = 0;
    }
    CHECK(good, "narrow50: every point's canonical name resolves to itself");
    static const char *badnames[] = {"layer5", "layer1.3", "layer0", "res4g", "res6", "res1",
                                      "conv6_block1_out", "conv4_block7_out", "conv4_block0_out",
                                      "layer3.2x", "", "Layer1", "stem2", "fc"};
    for (size_t i = 0; i < sizeof badnames / sizeof badnames[0]; i++) {
        int p = -1;
        kt_err e = {0};
        kt_status st = kt_arch_point_find(a, badnames[i], &p, &e);
        CHECK(st == KT_ERR_USAGE && strstr(e.msg, "layer3.0..layer3.5") && strstr(e.msg, "avgpool"),
              "narrow50: '%s' is a usage error listing the valid names", badnames[i]);
    }
    close_model(&m);
}

static void test_keras(void)
{
    model tv = open_model(FIX "narrow50.safetensors");
    model k = open_model(FIX "narrow50_keras");
    model ck = open_model(FIX "kt_keras.safetensors");
    kt_arch *a = k.a;
    if (!tv.a || !a || !ck.a)
        goto done;
    CHECK(!strcmp(a->format, "keras") && a->stride_on_3x3 == 0, "narrow50_keras: format keras, v1");
    CHECK(a->stem_bn.eps == 1e-3f && a->blocks[5].bn[1].eps == 1e-3f, "narrow50_keras: eps 1e-3 from model.json");
    const kt_block_desc *b = &a->blocks[3];
    CHECK(b->stride == 2 && b->conv[0].stride == 2 && b->conv[1].stride == 1 && b->down.stride == 2
              && b->conv[1].pad == 1 && b->conv[0].pad == 0,
          "narrow50_keras: res3a stride 2 on branch2a and branch1");
    CHECK(a->stem_conv.pad == 3 && a->stem_conv.stride == 2 && a->stem_conv.bias,
          "narrow50_keras: conv1 pad 3 (from conv1_pad) stride 2, with bias");
    CHECK(a->norm.bgr == 1 && a->norm.scale == 1.0f && a->norm.mean[0] == 103.939f && a->norm.mean[2] == 123.68f
              && a->norm.std[0] == 1.0f,
          "narrow50_keras: caffe preprocessing (BGR means)");
    /* The converted tensors are exactly the torchvision file's. */
    CHECK(same_net(a, tv.a, 0, 0), "narrow50_keras converted (OIHW, names) equals narrow50");
    CHECK(a->num_classes == 5 && a->features == 32 && same_floats(a->fc_w, tv.a->fc_w, 5 * 32)
              && same_floats(a->fc_b, tv.a->fc_b, 5),
          "narrow50_keras: fc1000 kernel [32][5] transposed to [5][32]");
    int64_t nb = a->stem_conv.cout;
    for (int i = 0; i < a->nblocks; i++) {
        for (int j = 0; j < 3; j++)
            nb += a->blocks[i].conv[j].cout;
        nb += a->blocks[i].has_down ? a->blocks[i].down.cout : 0;
    }
    CHECK(a->nparams == tv.a->nparams + nb, "narrow50_keras: nparams = torchvision's + %lld conv biases",
          (long long)nb);
    CHECK(!strcmp(a->blocks[12].keras_name, "res4f") && !strcmp(a->blocks[12].name, "layer3.5"),
          "narrow50_keras: res4f is layer3.5");

    /* The kt checkpoint of the same net: torchvision names + biases +
     * metadata arch, custom head ignored. */
    kt_arch *c = ck.a;
    CHECK(!strcmp(c->format, "kt") && c->stride_on_3x3 == 0 && c->stem_bn.eps == 1e-3f && c->norm.bgr == 1
              && c->norm.mean[1] == 116.779f && c->norm.std[1] == 1.0f && c->norm.scale == 1.0f,
          "kt_keras: arch from metadata (v1, eps 1e-3, caffe norm)");
    CHECK(same_net(c, a, 1, 1), "kt_keras: same network as narrow50_keras, biases and strides included");
    CHECK(c->num_classes == 0 && !c->fc_w && kt_arch_npoints(c) == 19,
          "kt_keras: custom head (fc.0/fc.3) leaves num_classes 0 and no logits point");
    int p = -1;
    kt_err e = {0};
    CHECK(kt_arch_point_find(c, "logits", &p, &e) == KT_ERR_USAGE && !strstr(e.msg, ", logits"),
          "kt_keras: 'logits' is not a valid point: %s", e.msg);
done:
    close_model(&tv);
    close_model(&k);
    close_model(&ck);
}

/* kt_arch_metadata_json is what a checkpoint stores: writing the Keras
 * net under torchvision names with it must give back the same arch. */
static void test_metadata_roundtrip(void)
{
    model k = open_model(FIX "narrow50_keras");
    kt_arch *a = k.a;
    if (!a) {
        close_model(&k);
        return;
    }
    int cap = 400, n = 0; /* 53 convs x (weight, bias) + 53 BNs x 4 + fc */
    kt_wtensor *t = calloc((size_t)cap, sizeof *t);
    char(*names)[64] = calloc((size_t)cap, sizeof *names);
    const kt_conv_desc *convs[64];
    const kt_bn_desc *bns[64];
    int nc = 0, nbn = 0;
    convs[nc++] = &a->stem_conv;
    bns[nbn++] = &a->stem_bn;
    for (int i = 0; i < a->nblocks; i++) {
        for (int j = 0; j < 3; j++)
            convs[nc++] = &a->blocks[i].conv[j], bns[nbn++] = &a->blocks[i].bn[j];
        if (a->blocks[i].has_down)
            convs[nc++] = &a->blocks[i].down, bns[nbn++] = &a->blocks[i].down_bn;
    }
    for (int i = 0; i < nc; i++) {
        const kt_conv_desc *d = convs[i];
        snprintf(names[n], 64, "%s.weight", d->name);
        t[n] = (kt_wtensor){names[n], 4, {d->cout, d->cin, d->k, d->k}, d->w, NULL};
        n++;
        snprintf(names[n], 64, "%s.bias", d->name);
        t[n] = (kt_wtensor){names[n], 1, {d->cout}, d->bias, NULL};
        n++;
    }
    for (int i = 0; i < nbn; i++) {
        const kt_bn_desc *d = bns[i];
        const char *suf[4] = {"weight", "bias", "running_mean", "running_var"};
        const float *v[4] = {d->gamma, d->beta, d->mean, d->var};
        for (int j = 0; j < 4; j++) {
            snprintf(names[n], 64, "%s.%s", d->name, suf[j]);
            t[n] = (kt_wtensor){names[n], 1, {d->c}, v[j], NULL};
            n++;
        }
    }
    t[n++] = (kt_wtensor){"fc.weight", 2, {a->num_classes, a->features}, a->fc_w, NULL};
    t[n++] = (kt_wtensor){"fc.bias", 1, {a->num_classes}, a->fc_b, NULL};
    char *arch = kt_arch_metadata_json(a);
    char meta[1024];
    snprintf(meta, sizeof meta, "{\"epoch\":1,\"arch\":%s}", arch ? arch : "null");
    CHECK(arch && strstr(arch, "\"bn_eps\":0.001") && strstr(arch, "\"stride_on_3x3\":0")
              && strstr(arch, "103.939"),
          "metadata json: %s", arch ? arch : "(null)");
    kt_err e = {0};
    const char *path = "test/out/t_arch_ck.safetensors";
    kt_status st = kt_weights_write(path, t, n, meta, &e);
    CHECK(st == KT_OK, "write checkpoint %s%s", path, st ? e.msg : "");
    model r = open_model(path);
    if (r.a) {
        CHECK(same_net(r.a, a, 1, 1) && r.a->num_classes == a->num_classes
                  && same_floats(r.a->fc_w, a->fc_w, (int64_t)a->num_classes * a->features)
                  && !memcmp(&r.a->norm, &a->norm, sizeof a->norm) && r.a->stride_on_3x3 == 0
                  && r.a->nparams == a->nparams && !strcmp(r.a->format, "kt"),
              "checkpoint with kt_arch_metadata_json reloads as the same network");
    }
    close_model(&r);
    free(arch);
    free(t);
    free(names);
    close_model(&k);
}

static void test_other_layouts(void)
{
    model b = open_model(FIX "basic18.safetensors");
    if (b.a) {
        kt_arch *a = b.a;
        CHECK(!a->bottleneck && a->depth[0] == 2 && a->depth[3] == 2 && a->nblocks == 8
                  && a->width[0] == 8 && a->width[2] == 16 && a->features == 16 && a->num_classes == 3,
              "basic18: basic blocks, depths 2x4, widths 8 8 16 16, 3 classes");
        CHECK(!a->blocks[0].has_down && a->blocks[2].has_down && a->blocks[2].stride == 2
                  && a->blocks[2].conv[0].stride == 2 && a->blocks[2].conv[0].k == 3
                  && a->blocks[2].conv[1].stride == 1,
              "basic18: layer1.0 identity shortcut; layer2.0 stride on conv1 (3x3) + projection");
        CHECK(a->nparams == count_params(b.w), "basic18: nparams %lld", (long long)a->nparams);
        int c, h, w;
        kt_arch_point_shape(a, 9, 45, &c, &h, &w); /* layer4.1 */
        CHECK(c == 16 && h == 2 && file_size(FIX "ref_basic18/layer4.bin") == 2L * c * h * w * 4,
              "basic18: layer4 at 45 is %dx%dx%d", c, h, w);
    }
    close_model(&b);

    model h = open_model(FIX "narrow50_f16.safetensors"), f = open_model(FIX "narrow50.safetensors");
    if (h.a && f.a)
        CHECK(h.a->nblocks == f.a->nblocks && h.a->nparams == f.a->nparams && h.a->stem_conv.w != NULL,
              "narrow50_f16: same architecture as F32");
    close_model(&h);
    close_model(&f);

    model v = open_model(FIX "tiny_keras_v15");
    if (v.a) {
        const kt_block_desc *x = &v.a->blocks[1];
        CHECK(v.a->stride_on_3x3 == 1 && x->conv[0].stride == 1 && x->conv[1].stride == 2 && x->stride == 2,
              "tiny_keras_v15: stride on the 3x3 read from model.json");
        CHECK(v.a->stem_bn.eps == 2e-3f && x->bn[2].eps == 2e-3f, "tiny_keras_v15: epsilon 0.002 read from model.json");
    }
    close_model(&v);

    model tk = open_model(FIX "tiny_tfkeras.safetensors"), tt = open_model(FIX "tiny.safetensors");
    if (tk.a && tt.a) {
        CHECK(!strcmp(tk.a->format, "keras") && tk.a->stem_bn.eps == 1.001e-5f && tk.a->stride_on_3x3 == 0
                  && tk.a->blocks[1].conv[0].stride == 2,
              "tiny_tfkeras: tf.keras names, eps 1.001e-5, stride on the first 1x1");
        CHECK(same_net(tk.a, tt.a, 0, 0) && tk.a->num_classes == 3
                  && same_floats(tk.a->fc_w, tt.a->fc_w, (int64_t)3 * tt.a->features),
              "tiny_tfkeras converted equals tiny");
    }
    close_model(&tk);
    close_model(&tt);

    model mo = open_model(FIX "tiny_module.safetensors");
    CHECK(mo.a && mo.a->nblocks == 4, "tiny_module: module.-prefixed names make the same arch");
    close_model(&mo);
}

/* Keras-named files with a tensor missing or misshapen, written on the fly
 * from narrow50_keras's tensors (safetensors container, no topology). */
static void test_keras_errors(void)
{
    kt_weights *w = NULL;
    kt_err e = {0};
    if (kt_weights_load(&w, FIX "narrow50_keras", &e) != KT_OK) {
        CHECK(0, "load narrow50_keras: %s", e.msg);
        return;
    }
    int n = kt_weights_count(w);
    kt_wtensor *t = calloc((size_t)n, sizeof *t);
    float bad[3 * 3 * 2 * 3] = {0};
    for (int mode = 0; mode < 3; mode++) {
        int m = 0;
        for (int i = 0; i < n; i++) {
            const kt_tensor *s = kt_weights_at(w, i);
            if (mode == 0 && !strcmp(s->name, "res3b_branch2b/kernel"))
                continue;
            t[m] = (kt_wtensor){s->name, s->ndim, {0}, s->data, NULL};
            memcpy(t[m].shape, s->shape, sizeof t[m].shape);
            if (mode == 1 && !strcmp(s->name, "res2a_branch2b/kernel")) {
                t[m].shape[3] = 3;
                t[m].data = bad;
            }
            m++;
        }
        const char *path = "test/out/t_arch_keras.safetensors";
        kt_status st = kt_weights_write(path, t, m, NULL, &e);
        kt_weights *r = NULL;
        kt_arch *a = NULL;
        if (st == KT_OK)
            st = kt_weights_load(&r, path, &e);
        if (st == KT_OK)
            st = kt_arch_init(&a, r, &e);
        if (mode == 0)
            CHECK(st == KT_ERR_RUNTIME && strstr(e.msg, "missing tensor 'res3b_branch2b/kernel'") && strstr(e.msg, path),
                  "Keras names: missing kernel named: %s", e.msg);
        else if (mode == 1)
            CHECK(st == KT_ERR_RUNTIME && strstr(e.msg, "res2a_branch2b/kernel")
                      && strstr(e.msg, "[3, 3, 2, 3], expected [3, 3, 2, 2]"),
                  "Keras names: wrong shape named with expected and actual: %s", e.msg);
        else
            CHECK(st == KT_OK && a && a->stride_on_3x3 == 0 && a->stem_bn.eps == 1e-3f && a->blocks[3].conv[0].stride == 2,
                  "Keras names without model.json: Caffe conventions (v1, eps 1e-3)");
        kt_arch_free(a);
        kt_weights_free(r);
    }
    free(t);
    kt_weights_free(w);
}

int main(void)
{
    mkdir("test/out", 0755);
    test_torchvision();
    test_keras();
    test_metadata_roundtrip();
    test_other_layouts();
    test_keras_errors();
    TEST_EXIT();
}
