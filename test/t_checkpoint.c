/* t_checkpoint.c - kt checkpoints on the narrow ResNet-50 fixture: every
 * tensor under its torchvision name (checked by an independent safetensors
 * reader written here, not weights.c), frozen tensors bit-identical to the
 * source file, metadata round trip, checksum and damage detection, and a
 * restore that continues training bit-identically. */
#include <stdlib.h>

#include <cjson/cJSON.h>

#include "arch.h"
#include "checkpoint.h"
#include "head.h"
#include "ops.h"
#include "optim.h"
#include "resnet.h"
#include "rng.h"
#include "test.h"
#include "weights.h"

#define FIXTURE "test/fixtures/narrow50.safetensors"
#define OUTDIR "test/out"
enum { B = 3, S = 64, K = 3 };

typedef struct {
    kt_weights *w;
    kt_arch *a;
    kt_resnet *r;
    kt_head *h;
    kt_optim *o;
    kt_param *ps[512];
    int np;
} model;

static const int hidden[1] = {6};

static int model_init(model *m, uint64_t seed)
{
    kt_err err;
    int freeze, stop;
    memset(m, 0, sizeof *m);
    if (kt_weights_load(&m->w, FIXTURE, &err) || kt_arch_init(&m->a, m->w, &err) ||
        kt_arch_point_find(m->a, "layer3", &freeze, &err) ||
        kt_arch_point_find(m->a, "avgpool", &stop, &err)) {
        printf("FAIL model: %s\n", err.msg);
        return -1;
    }
    kt_resnet_plan plan = {.batch = B, .image_size = S, .freeze = freeze, .stop = stop, .train = 1};
    kt_head_shape hs = {.features = m->a->features, .nhidden = 1, .hidden = hidden,
                        .act = KT_ACT_RELU, .dropout = 0.2, .classes = K};
    kt_optim_config oc = {.kind = KT_OPTIM_ADAMW, .weight_decay = 0.01, .beta1 = 0.9,
                          .beta2 = 0.999, .eps = 1e-8, .backbone_lr_mult = 0.5};
    if (kt_resnet_init(&m->r, m->a, &plan, &err) || kt_head_init(&m->h, &hs, B, &err)) {
        printf("FAIL model: %s\n", err.msg);
        return -1;
    }
    kt_head_init_params(m->h, seed);
    for (int i = 0; i < kt_resnet_nparams(m->r); i++)
        m->ps[m->np++] = kt_resnet_param(m->r, i);
    for (int i = 0; i < kt_head_nparams(m->h); i++)
        m->ps[m->np++] = kt_head_param(m->h, i);
    if (kt_optim_init(&m->o, &oc, m->ps, m->np, &err)) {
        printf("FAIL model: %s\n", err.msg);
        return -1;
    }
    return 0;
}

static void model_free(model *m)
{
    kt_optim_free(m->o);
    kt_head_free(m->h);
    kt_resnet_free(m->r);
    kt_arch_free(m->a);
    kt_weights_free(m->w);
}

/* One training step on a batch that is a function of step. */
static void train_step(model *m, int64_t step)
{
    static float x[3 * B * S * S], dlog[B * K], dfeat[B * 64];
    int labels[B];
    for (int i = 0; i < 3 * B * S * S; i++)
        x[i] = (float)(2 * kt_rng_uniform(7, KT_RNG_AUGMENT, (uint64_t)step, (uint64_t)i) - 1);
    for (int i = 0; i < B; i++)
        labels[i] = (int)((step + i) % K);
    for (int i = 0; i < m->np; i++)
        memset(m->ps[i]->grad, 0, sizeof(float) * (size_t)m->ps[i]->numel);
    const float *f = kt_resnet_forward(m->r, 0, x, B, 1);
    const float *lg = kt_head_forward(m->h, f, B, 1, 5, step);
    kt_softmax_ce(dlog, lg, labels, NULL, 0, B, K);
    memset(dfeat, 0, sizeof dfeat);
    kt_head_backward(m->h, dfeat, dlog, B);
    kt_resnet_backward(m->r, dfeat, B);
    kt_optim_step(m->o, 1e-2);
}

/* ---- an independent safetensors reader: header JSON + raw data, nothing shared ---- */
typedef struct {
    unsigned char *buf;
    size_t size, data0;
    cJSON *hdr;
} stfile;

static int st_read(stfile *f, const char *path)
{
    FILE *fp = fopen(path, "rb");
    memset(f, 0, sizeof *f);
    if (!fp)
        return -1;
    fseek(fp, 0, SEEK_END);
    f->size = (size_t)ftell(fp);
    rewind(fp);
    f->buf = malloc(f->size + 1);
    if (fread(f->buf, 1, f->size, fp) != f->size) {
        fclose(fp);
        return -1;
    }
    fclose(fp);
    uint64_t n = 0;
    for (int i = 7; i >= 0; i--)
        n = n << 8 | f->buf[i];
    if (n + 8 > f->size || n % 8)
        return -1;
    char *text = malloc(n + 1);
    memcpy(text, f->buf + 8, n);
    text[n] = 0;
    f->hdr = cJSON_Parse(text);
    free(text);
    f->data0 = 8 + n;
    return f->hdr ? 0 : -1;
}

static void st_free(stfile *f)
{
    cJSON_Delete(f->hdr);
    free(f->buf);
}

/* Bytes of tensor name, checking dtype and that offsets lie in the file. */
static const void *st_data(const stfile *f, const char *name, const char **dtype, size_t *bytes,
                           int *ndim, int64_t *shape)
{
    const cJSON *e = cJSON_GetObjectItemCaseSensitive(f->hdr, name);
    const cJSON *off = cJSON_GetObjectItemCaseSensitive(e, "data_offsets");
    const cJSON *dt = cJSON_GetObjectItemCaseSensitive(e, "dtype");
    const cJSON *sh = cJSON_GetObjectItemCaseSensitive(e, "shape");
    if (!e || !cJSON_IsArray(off) || !cJSON_IsString(dt) || !cJSON_IsArray(sh))
        return NULL;
    size_t a = (size_t)cJSON_GetArrayItem(off, 0)->valuedouble,
           b = (size_t)cJSON_GetArrayItem(off, 1)->valuedouble;
    if (b < a || f->data0 + b > f->size)
        return NULL;
    *dtype = dt->valuestring;
    *bytes = b - a;
    *ndim = cJSON_GetArraySize(sh);
    for (int i = 0; i < *ndim && i < 4; i++)
        shape[i] = (int64_t)cJSON_GetArrayItem(sh, i)->valuedouble;
    return f->buf + f->data0 + a;
}

static void test_write_and_read(void)
{
    model m;
    kt_err err;
    if (model_init(&m, 1))
        return;
    train_step(&m, 0);
    train_step(&m, 1);

    kt_ckpt *c;
    CHECK(kt_ckpt_init(&c, m.a, m.w, m.r, m.h, m.o, &err) == KT_OK, "ckpt init");
    const char *classes[K] = {"ants", "bees", "wasps"};
    cJSON *meta = kt_ckpt_meta(c, classes, K, S, 73, "layer3");
    cJSON_AddNumberToObject(meta, "step", 2);
    CHECK(kt_ckpt_write(c, OUTDIR "/ckpt_last.safetensors", 1, meta, &err) == KT_OK,
          "write last with optimizer state: %s", err.msg);
    CHECK(kt_ckpt_write(c, OUTDIR "/ckpt_best.safetensors", 0, meta, &err) == KT_OK,
          "write best without it");
    cJSON_Delete(meta);
    CHECK(kt_ckpt_count(c, 1) > kt_ckpt_count(c, 0), "optimizer state adds tensors (%d > %d)",
          kt_ckpt_count(c, 1), kt_ckpt_count(c, 0));

    /* Independent reader: every tensor of the source file is there, bit-identical
     * unless it trains (layer4.*) or is the replaced classifier (fc.*). */
    stfile f, src;
    CHECK(st_read(&f, OUTDIR "/ckpt_last.safetensors") == 0 && st_read(&src, FIXTURE) == 0,
          "independent reader parses the checkpoint and the fixture");
    int nsrc = 0, same = 0, trained_changed = 0, trained = 0, missing = 0;
    for (const cJSON *e = src.hdr->child; e; e = e->next) {
        if (strcmp(e->string, "__metadata__") == 0 || strncmp(e->string, "fc.", 3) == 0)
            continue;
        nsrc++;
        const char *d1, *d2;
        size_t b1, b2;
        int n1, n2;
        int64_t s1[4], s2[4];
        const void *p1 = st_data(&src, e->string, &d1, &b1, &n1, s1);
        const void *p2 = st_data(&f, e->string, &d2, &b2, &n2, s2);
        if (!p2) {
            missing++;
            continue;
        }
        int eq = b1 == b2 && strcmp(d1, d2) == 0 && n1 == n2 && memcmp(p1, p2, b1) == 0 &&
                 memcmp(s1, s2, sizeof(int64_t) * (size_t)n1) == 0;
        if (strncmp(e->string, "layer4.", 7) == 0)
            trained++, trained_changed += !eq;
        else
            same += eq;
    }
    CHECK(missing == 0 && same == nsrc - trained,
          "every frozen tensor (%d) bit-identical to the source file, none missing (%d)", same,
          missing);
    CHECK(trained_changed == trained && trained > 0,
          "every layer4 tensor changed by training (%d of %d)", trained_changed, trained);
    const char *dt;
    size_t nb;
    int nd;
    int64_t sh[4];
    const int64_t *nbt = st_data(&f, "layer4.0.bn1.num_batches_tracked", &dt, &nb, &nd, sh);
    CHECK(nbt && strcmp(dt, "I64") == 0 && nd == 0 && nb == 8 && *nbt == 2,
          "trainable BN num_batches_tracked is an I64 scalar = 2");
    const float *fw = st_data(&f, "fc.3.weight", &dt, &nb, &nd, sh);
    CHECK(fw && nd == 2 && sh[0] == K && sh[1] == 6 &&
              memcmp(fw, kt_head_param(m.h, 2)->data, nb) == 0,
          "head fc.3.weight [3,6] holds the head's values");
    CHECK(st_data(&f, "optim.fc.0.weight.exp_avg_sq", &dt, &nb, &nd, sh) != NULL &&
              st_data(&f, "optim.layer4.0.conv1.weight.exp_avg", &dt, &nb, &nd, sh) != NULL,
          "optimizer state tensors present in last");
    stfile best;
    st_read(&best, OUTDIR "/ckpt_best.safetensors");
    CHECK(!st_data(&best, "optim.fc.0.weight.exp_avg", &dt, &nb, &nd, sh) &&
              st_data(&best, "fc.0.weight", &dt, &nb, &nd, sh),
          "no optimizer state in best");
    const cJSON *md = cJSON_GetObjectItemCaseSensitive(f.hdr, "__metadata__");
    const cJSON *ktm = cJSON_GetObjectItemCaseSensitive(md, "kt");
    CHECK(cJSON_IsString(ktm) && strstr(ktm->valuestring, "\"classes\":[\"ants\",\"bees\",\"wasps\"]") &&
              cJSON_IsString(cJSON_GetObjectItemCaseSensitive(md, "format")),
          "__metadata__ holds format and the kt JSON text");
    st_free(&best);
    st_free(&f);
    st_free(&src);

    /* Read back with kt: checksum, metadata, restore into a fresh model, and
     * both continue identically. */
    kt_weights *w;
    cJSON *back;
    CHECK(kt_weights_load(&w, OUTDIR "/ckpt_last.safetensors", &err) == KT_OK &&
              kt_ckpt_open(&back, w, &err) == KT_OK,
          "kt reads its checkpoint, checksum verified: %s", err.msg);
    kt_ckpt_info info;
    CHECK(kt_ckpt_info_parse(&info, back, "ckpt", &err) == KT_OK && info.nclasses == K &&
              strcmp(info.classes[2], "wasps") == 0 && info.image_size == S && info.resize == 73 &&
              strcmp(info.cut, "layer3") == 0 && info.nhidden == 1 && info.hidden[0] == 6 &&
              info.act == KT_ACT_RELU && info.dropout == 0.2 && info.features == m.a->features &&
              info.norm.std[0] == m.a->norm.std[0] && info.norm.scale == m.a->norm.scale,
          "metadata: classes, preprocess, cut, head, norm: %s", err.msg);

    model m2;
    model_init(&m2, 99); /* another head init, overwritten by the restore */
    kt_buffer *bufs[256];
    int nb2 = kt_resnet_nbuffers(m2.r);
    for (int i = 0; i < nb2; i++)
        bufs[i] = kt_resnet_buffer(m2.r, i);
    CHECK(kt_ckpt_restore(w, back, m2.ps, m2.np, bufs, nb2, m2.o, &err) == KT_OK,
          "restore params, buffers, optimizer: %s", err.msg);
    CHECK(kt_optim_t(m2.o) == 2, "optimizer t restored");
    train_step(&m, 2);
    train_step(&m2, 2);
    int ident = 1;
    for (int i = 0; i < m.np; i++)
        ident &= memcmp(m.ps[i]->data, m2.ps[i]->data, sizeof(float) * (size_t)m.ps[i]->numel) == 0;
    for (int i = 0; i < nb2; i++) {
        kt_buffer *x = kt_resnet_buffer(m.r, i), *y = bufs[i];
        ident &= x->data ? memcmp(x->data, y->data, sizeof(float) * (size_t)x->numel) == 0
                         : *x->idata == *y->idata;
    }
    CHECK(ident, "restored model continues bit-identically");

    /* The head alone, as predict builds it: the checkpoint's shape and values. */
    kt_head *hh;
    CHECK(kt_ckpt_head(&hh, w, &info, B, &err) == KT_OK, "head from the checkpoint: %s", err.msg);
    int hsame = kt_head_nparams(hh) == 4 && kt_head_get_shape(hh)->act == KT_ACT_RELU;
    for (int i = 0; hsame && i < kt_head_nparams(hh); i++) {
        const kt_param *p = kt_head_param(hh, i);
        const kt_tensor *x = kt_weights_find(w, p->name);
        hsame = x && x->numel == p->numel &&
                memcmp(x->data, p->data, sizeof(float) * (size_t)p->numel) == 0;
    }
    CHECK(hsame, "head from the checkpoint holds the saved values");
    kt_head_free(hh);
    kt_ckpt_info_free(&info);
    cJSON_Delete(back);

    /* A checkpoint is a model: the arch reads it like any weights file. */
    kt_arch *a2;
    CHECK(kt_arch_init(&a2, w, &err) == KT_OK && a2->nblocks == m.a->nblocks &&
              a2->stride_on_3x3 == m.a->stride_on_3x3 &&
              memcmp(a2->blocks[0].conv[0].w, m.a->blocks[0].conv[0].w,
                     sizeof(float) * (size_t)m.a->blocks[0].conv[0].cout *
                         (size_t)m.a->blocks[0].conv[0].cin) == 0,
          "the arch loads a checkpoint as weights: %s", err.msg);
    kt_arch_free(a2);
    kt_weights_free(w);

    model_free(&m2);
    kt_ckpt_free(c);
    model_free(&m);
}

/* Copies from to to, flipping the lowest bit of byte n - flip_from_end (0: no
 * flip) and keeping truncate_to bytes (< 0: all). */
static int copy_file(const char *from, const char *to, long flip_from_end, long truncate_to)
{
    FILE *in = fopen(from, "rb"), *out = fopen(to, "wb");
    if (!in || !out)
        return -1;
    fseek(in, 0, SEEK_END);
    long n = ftell(in);
    rewind(in);
    unsigned char *b = malloc((size_t)n);
    if (fread(b, 1, (size_t)n, in) != (size_t)n)
        return -1;
    if (flip_from_end > 0)
        b[n - flip_from_end] ^= 0x01;
    fwrite(b, 1, truncate_to >= 0 ? (size_t)truncate_to : (size_t)n, out);
    fclose(in);
    fclose(out);
    free(b);
    return 0;
}

static void test_damage(void)
{
    kt_err err;
    kt_weights *w = NULL;
    cJSON *meta = NULL;
    /* The last float's lowest mantissa bit: still a finite number, so only the
     * checksum can tell. */
    copy_file(OUTDIR "/ckpt_best.safetensors", OUTDIR "/ckpt_flip.safetensors", 4, -1);
    CHECK(kt_weights_load(&w, OUTDIR "/ckpt_flip.safetensors", &err) == KT_OK &&
              kt_ckpt_open(&meta, w, &err) == KT_ERR_RUNTIME && strstr(err.msg, "checksum") &&
              strstr(err.msg, "ckpt_flip.safetensors"),
          "one flipped bit is caught by the checksum: %s", err.msg);
    kt_weights_free(w);
    w = NULL;
    copy_file(OUTDIR "/ckpt_best.safetensors", OUTDIR "/ckpt_trunc.safetensors", 0, 5000);
    CHECK(kt_weights_load(&w, OUTDIR "/ckpt_trunc.safetensors", &err) != KT_OK &&
              strstr(err.msg, "ckpt_trunc.safetensors"),
          "truncated checkpoint refused: %s", err.msg);
    kt_weights_free(w);
    w = NULL;
    CHECK(kt_weights_load(&w, FIXTURE, &err) == KT_OK &&
              kt_ckpt_open(&meta, w, &err) == KT_ERR_RUNTIME && strstr(err.msg, "not a kt checkpoint"),
          "plain weights are not a checkpoint: %s", err.msg);
    kt_weights_free(w);
}

int main(void)
{
    test_write_and_read();
    test_damage();
    TEST_EXIT();
}
