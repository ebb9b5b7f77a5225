/* arch.c - reading the ResNet a weights file describes; see arch.h.
 *
 * Three naming schemes map onto one description:
 *   torchvision  conv1.weight, layer2.0.conv2.weight, layer2.0.downsample.1.running_var, fc.weight
 *   Keras/Caffe  conv1/kernel, bn_conv1/gamma, res3a_branch2a/kernel, bn3a_branch1/moving_mean, fc1000/kernel
 *   tf.keras     conv1_conv/kernel, conv3_block1_1_bn/gamma, conv3_block1_0_conv/kernel, predictions/kernel
 * The scheme is chosen by which stem tensor exists; everything after that
 * (block counts, widths, basic vs bottleneck) is counted and measured from
 * the tensors, and every tensor is checked against the shape the structure
 * implies, so a file that is not a ResNet fails here with the tensor's name
 * rather than as garbage in the forward pass.
 *
 * Hyperparameters the tensors cannot tell (strides, padding, BN epsilon) come
 * from, in order: the Keras layer configs of a TF.js model.json; the "arch"
 * object of a kt checkpoint's metadata; the convention of the scheme
 * (torchvision v1.5: stride on the 3x3, eps 1e-5; Keras Caffe-ported v1:
 * stride on the first 1x1, eps 1e-3; tf.keras: first 1x1, eps 1.001e-5).
 *
 * Keras kernels are converted once to OIHW copies owned by the arch;
 * torchvision tensors are used in place (they live in the weights' mapping).
 */
#include "arch.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#define MAX_BLOCKS 999 /* per stage; ResNet-152 has 36 */

typedef enum { SCHEME_TORCH, SCHEME_CAFFE, SCHEME_TFKERAS } kt_scheme;

/* The public kt_arch plus the memory it owns; kt_arch_free undoes both. */
typedef struct {
    kt_arch a; /* first, so a kt_arch* is an arch_priv* */
    float **own;           /* malloc'd conversions, when the arena is full or absent */
    int nown, capown;
    void *arena_map;       /* mmap'd arena for converted Keras tensors, or NULL */
    size_t arena_len, arena_used, arena_cap; /* mapping length; floats used / available */
    float *arena;          /* 2 MiB-aligned start inside arena_map */
} arch_priv;

typedef struct {
    const kt_weights *w;
    const char *path;
    kt_scheme sc;
    arch_priv *p;
    const cJSON *layers;  /* Keras layer list from the TF.js topology, or NULL */
    int numbered[4];      /* Caffe ResNet-101/152 name blocks a, b1, b2, ... */
    float eps;            /* BN epsilon when no layer config says otherwise */
    kt_err *err;
} ctx;

static const char *const SUF_TORCH[6] = {".weight", ".bias", ".weight", ".bias", ".running_mean",
                                         ".running_var"};
static const char *const SUF_KERAS[6] = {"/kernel", "/bias", "/gamma", "/beta", "/moving_mean",
                                         "/moving_variance"};
enum { SUF_W, SUF_B, SUF_GAMMA, SUF_BETA, SUF_MEAN, SUF_VAR };

static const char *suffix(const ctx *c, int which)
{
    return c->sc == SCHEME_TORCH ? SUF_TORCH[which] : SUF_KERAS[which];
}

/* Caffe block label within stage s: "a".."z", or "a", "b1", "b2"... */
static void caffe_block(const ctx *c, int s, int b, char *buf, size_t n)
{
    if (c->numbered[s] && b > 0)
        snprintf(buf, n, "b%d", b);
    else
        snprintf(buf, n, "%c", 'a' + b);
}

/* Names of a conv (conv = 1) or batch norm (conv = 0) in the file's scheme
 * (src) and in torchvision's (tv). Position: stage s, block b, i = 0..2 for
 * the main path, 3 for the projection shortcut; s < 0 for the stem. */
static void layer_names(const ctx *c, int conv, int s, int b, int i, char *src, char *tv, size_t n)
{
    static const char abc[] = "abc";
    char blk[16];
    if (s < 0) {
        snprintf(tv, n, conv ? "conv1" : "bn1");
        snprintf(src, n, "%s",
                 c->sc == SCHEME_TORCH ? tv
                 : c->sc == SCHEME_CAFFE ? (conv ? "conv1" : "bn_conv1")
                                         : (conv ? "conv1_conv" : "conv1_bn"));
        return;
    }
    if (i == 3)
        snprintf(tv, n, "layer%d.%d.downsample.%d", s + 1, b, conv ? 0 : 1);
    else
        snprintf(tv, n, "layer%d.%d.%s%d", s + 1, b, conv ? "conv" : "bn", i + 1);
    switch (c->sc) {
    case SCHEME_TORCH:
        snprintf(src, n, "%s", tv);
        break;
    case SCHEME_CAFFE:
        caffe_block(c, s, b, blk, sizeof blk);
        if (i == 3)
            snprintf(src, n, "%s%d%s_branch1", conv ? "res" : "bn", s + 2, blk);
        else
            snprintf(src, n, "%s%d%s_branch2%c", conv ? "res" : "bn", s + 2, blk, abc[i]);
        break;
    case SCHEME_TFKERAS:
        snprintf(src, n, "conv%d_block%d_%d_%s", s + 2, b + 1, i == 3 ? 0 : i + 1, conv ? "conv" : "bn");
        break;
    }
}

/* Block counts are capped (MAX_BLOCKS) so names always fit; copy_name
 * truncates anyway rather than trusting that. */
static void copy_name(char *dst, size_t n, const char *src)
{
    size_t l = strnlen(src, n - 1);
    memcpy(dst, src, l);
    dst[l] = '\0';
}

static const kt_tensor *find2(const ctx *c, const char *prefix, int which)
{
    char name[160];
    snprintf(name, sizeof name, "%s%s", prefix, suffix(c, which));
    return kt_weights_find(c->w, name);
}

static void fmt_shape(char *buf, size_t n, int nd, const int64_t *shape)
{
    size_t o = (size_t)snprintf(buf, n, "[");
    for (int d = 0; d < nd && o < n; d++)
        o += (size_t)snprintf(buf + o, n - o, "%s%lld", d ? ", " : "", (long long)shape[d]);
    if (o < n)
        snprintf(buf + o, n - o, "]");
}

static kt_status missing(const ctx *c, const char *prefix, int which)
{
    return kt_err_set(c->err, KT_ERR_RUNTIME, "%s: missing tensor '%s%s'", c->path, prefix,
                      suffix(c, which));
}

/* Checks t against an expected shape; -1 in want accepts any size. */
static kt_status check_shape(const ctx *c, const kt_tensor *t, int nd, const int64_t *want)
{
    int ok = t->ndim == nd;
    for (int d = 0; ok && d < nd; d++)
        ok = want[d] < 0 || t->shape[d] == want[d];
    if (ok)
        return KT_OK;
    char a[96], b[96];
    fmt_shape(a, sizeof a, nd, want);
    fmt_shape(b, sizeof b, t->ndim, t->shape);
    for (char *q = a; (q = strstr(q, "-1")); q++)
        q[0] = '*', q[1] = ' ';
    return kt_err_set(c->err, KT_ERR_RUNTIME, "%s: tensor '%s' has shape %s, expected %s", c->path,
                      t->name, b, a);
}

/* One arena for all converted Keras tensors (~100 MB for ResNet-50),
 * 2 MiB-aligned and advised for transparent huge pages: faulting in 100 MB
 * of 4 KiB pages took ~0.3 s on the VM kt was developed on, huge pages ~10 ms.
 * Failure just means malloc per tensor. */
#define ARENA_ALIGN ((size_t)2 << 20)

static void arena_init(arch_priv *p, size_t floats)
{
    size_t len = floats * sizeof(float) + ARENA_ALIGN;
    void *m = floats ? mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0)
                     : MAP_FAILED;
    if (m == MAP_FAILED)
        return;
    uintptr_t start = ((uintptr_t)m + ARENA_ALIGN - 1) & ~(uintptr_t)(ARENA_ALIGN - 1);
    p->arena_map = m;
    p->arena_len = len;
    p->arena = (float *)start;
    p->arena_cap = floats;
    p->arena_used = 0;
#ifdef MADV_HUGEPAGE
    madvise(p->arena, floats * sizeof(float), MADV_HUGEPAGE);
#endif
}

static float *own_alloc(ctx *c, size_t n)
{
    arch_priv *p = c->p;
    /* 16-float steps keep every tensor 64-byte aligned. */
    size_t step = (n + 15) / 16 * 16;
    if (p->arena && n && p->arena_cap - p->arena_used >= step) {
        float *f = p->arena + p->arena_used;
        p->arena_used += step;
        return f;
    }
    if (p->nown == p->capown) {
        int nc = p->capown ? p->capown * 2 : 64;
        float **no = realloc(p->own, (size_t)nc * sizeof *no);
        if (!no)
            return NULL;
        p->own = no;
        p->capown = nc;
    }
    float *f = malloc(n ? n * sizeof *f : sizeof *f);
    if (f)
        p->own[p->nown++] = f;
    return f;
}

/* ---- Keras layer configs (TF.js modelTopology) ---- */

static const cJSON *topo_layer(const ctx *c, const char *name)
{
    const cJSON *l;
    if (!c->layers)
        return NULL;
    cJSON_ArrayForEach(l, c->layers) {
        const cJSON *n = cJSON_GetObjectItemCaseSensitive(l, "name");
        const cJSON *cfg = cJSON_GetObjectItemCaseSensitive(l, "config");
        if (!cJSON_IsString(n))
            n = cJSON_GetObjectItemCaseSensitive(cfg, "name");
        if (cJSON_IsString(n) && strcmp(n->valuestring, name) == 0)
            return l;
    }
    return NULL;
}

static const cJSON *topo_cfg(const cJSON *layer, const char *key)
{
    return cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(layer, "config"), key);
}

/* An int pair like "strides": [2, 2] that must be square; *v untouched if
 * absent. 0 when present but not a square pair of positive ints. */
static int cfg_square(const cJSON *layer, const char *key, int *v)
{
    const cJSON *j = topo_cfg(layer, key);
    if (!j)
        return 1;
    if (cJSON_IsNumber(j)) {
        *v = j->valueint;
        return j->valueint > 0;
    }
    if (!cJSON_IsArray(j) || cJSON_GetArraySize(j) != 2 || !cJSON_IsNumber(j->child)
        || !cJSON_IsNumber(j->child->next) || j->child->valueint != j->child->next->valueint
        || j->child->valueint <= 0)
        return 0;
    *v = j->child->valueint;
    return 1;
}

/* Keras 2 functional models: inbound_nodes [[["prev", 0, 0, {}]]]. */
static const cJSON *topo_inbound(const ctx *c, const cJSON *layer)
{
    const cJSON *in = cJSON_GetObjectItemCaseSensitive(layer, "inbound_nodes");
    const cJSON *x = cJSON_IsArray(in) ? in->child : NULL;
    x = cJSON_IsArray(x) ? x->child : NULL;
    x = cJSON_IsArray(x) ? x->child : NULL;
    return cJSON_IsString(x) ? topo_layer(c, x->valuestring) : NULL;
}

/* Symmetric padding of a ZeroPadding2D layer: 3, [3, 3] or [[3, 3], [3, 3]];
 * -1 when asymmetric or unreadable. */
static int zeropad_amount(const cJSON *layer)
{
    const cJSON *j = topo_cfg(layer, "padding");
    if (cJSON_IsNumber(j))
        return j->valueint;
    if (!cJSON_IsArray(j) || cJSON_GetArraySize(j) != 2)
        return -1;
    int v[4], n = 0;
    const cJSON *a, *b;
    cJSON_ArrayForEach(a, j) {
        if (cJSON_IsNumber(a)) {
            v[n++] = a->valueint, v[n++] = a->valueint;
            continue;
        }
        if (!cJSON_IsArray(a) || cJSON_GetArraySize(a) != 2)
            return -1;
        cJSON_ArrayForEach(b, a) {
            if (!cJSON_IsNumber(b))
                return -1;
            v[n++] = b->valueint;
        }
    }
    return v[0] == v[1] && v[1] == v[2] && v[2] == v[3] ? v[0] : -1;
}

/* Stride and padding of a Keras conv from its layer config. TF's 'same'
 * padding is asymmetric when the stride is > 1 and the kernel > 1, which
 * kt's symmetric convs cannot express: refuse it rather than be subtly off. */
static kt_status conv_hparams(const ctx *c, const char *layer_name, int k, int *stride, int *pad)
{
    const cJSON *l = topo_layer(c, layer_name);
    if (!l)
        return KT_OK;
    int dil = 1, ks = k;
    if (!cfg_square(l, "strides", stride) || !cfg_square(l, "dilation_rate", &dil)
        || !cfg_square(l, "kernel_size", &ks) || dil != 1 || ks != k)
        return kt_err_set(c->err, KT_ERR_RUNTIME,
                          "%s: layer '%s': kernel_size, strides or dilation_rate in model.json are not a supported square convolution matching the kernel tensor",
                          c->path, layer_name);
    const cJSON *pm = topo_cfg(l, "padding");
    const char *mode = cJSON_IsString(pm) ? pm->valuestring : "valid";
    if (strcmp(mode, "same") == 0) {
        if (*stride > 1 && k > 1)
            return kt_err_set(c->err, KT_ERR_RUNTIME,
                              "%s: layer '%s': 'same' padding with stride %d is asymmetric in Keras; kt supports symmetric padding only",
                              c->path, layer_name, *stride);
        *pad = (k - 1) / 2;
    } else if (strcmp(mode, "valid") == 0) {
        const cJSON *prev = topo_inbound(c, l);
        const cJSON *cls = cJSON_GetObjectItemCaseSensitive(prev, "class_name");
        *pad = 0;
        if (cJSON_IsString(cls) && strcmp(cls->valuestring, "ZeroPadding2D") == 0
            && (*pad = zeropad_amount(prev)) < 0)
            return kt_err_set(c->err, KT_ERR_RUNTIME,
                              "%s: layer '%s': the ZeroPadding2D before it is asymmetric; kt supports symmetric padding only",
                              c->path, layer_name);
    } else {
        return kt_err_set(c->err, KT_ERR_RUNTIME, "%s: layer '%s': unknown padding '%s'", c->path,
                          layer_name, mode);
    }
    return KT_OK;
}

/* ---- loading one conv / batch norm ---- */

/* HWIO -> OIHW. Seen as a transpose of src [k*k*cin][cout] (row
 * r = (y*k + x)*cin + ci) into dst [cout][cin*k*k] (column ci*k*k + y*k + x).
 * Strips of 8 output rows, swept over all r: 8 sequential write streams, and
 * each source line is reused by the next strip from L2. Square tiles alias
 * in L1 on the power-of-two strides of ResNet kernels (measured 10x slower;
 * the naive loop took 0.7 s for ResNet-50). Also transposes a Keras Dense
 * kernel [in][out] with k = 1. */
static void hwio_to_oihw(float *dst, const float *src, int k, int cin, int cout)
{
    enum { STRIP = 8 };
    int rows = k * k * cin, kk = k * k;
    size_t drow = (size_t)cin * (size_t)kk;
    for (int c0 = 0; c0 < cout; c0 += STRIP) {
        int c1 = c0 + STRIP < cout ? c0 + STRIP : cout;
        for (int r = 0; r < rows; r++) {
            size_t col = (size_t)(r % cin) * (size_t)kk + (size_t)(r / cin);
            const float *srow = src + (size_t)r * (size_t)cout;
            for (int co = c0; co < c1; co++)
                dst[(size_t)co * drow + col] = srow[co];
        }
    }
}

/* Loads conv (s, b, i) of kernel size k: [cout][cin][k][k] (torchvision) or
 * [k][k][cin][cout] (Keras, converted). cout < 0 takes it from the file.
 * stride and pad are the convention's defaults, overridden by model.json. */
static kt_status load_conv(ctx *c, kt_conv_desc *d, int s, int b, int i, int k, int cin, int cout,
                           int stride, int pad)
{
    char src[96];
    layer_names(c, 1, s, b, i, src, d->name, sizeof d->name);
    const kt_tensor *t = find2(c, src, SUF_W);
    if (!t)
        return missing(c, src, SUF_W);
    if (t->is_int)
        return kt_err_set(c->err, KT_ERR_RUNTIME, "%s: tensor '%s' is an integer tensor", c->path,
                          t->name);
    int keras = c->sc != SCHEME_TORCH;
    if (cout < 0 && t->ndim == 4)
        cout = (int)t->shape[keras ? 3 : 0];
    int64_t want[4] = {cout, cin, k, k};
    if (keras)
        want[0] = k, want[1] = k, want[2] = cin, want[3] = cout;
    kt_status st = check_shape(c, t, 4, want);
    if (st != KT_OK)
        return st;
    if (cout <= 0)
        return kt_err_set(c->err, KT_ERR_RUNTIME, "%s: tensor '%s' has no output channels", c->path,
                          t->name);
    d->cin = cin;
    d->cout = cout;
    d->k = k;
    d->stride = stride;
    d->pad = pad;
    if (keras) {
        float *o = own_alloc(c, (size_t)cout * (size_t)cin * (size_t)(k * k));
        if (!o)
            return kt_err_set(c->err, KT_ERR_RUNTIME, "out of memory");
        hwio_to_oihw(o, t->data, k, cin, cout);
        d->w = o;
        if ((st = conv_hparams(c, src, k, &d->stride, &d->pad)) != KT_OK)
            return st;
    } else {
        d->w = t->data;
    }
    const kt_tensor *bias = find2(c, src, SUF_B);
    d->bias = NULL;
    if (bias) {
        int64_t wb[1] = {cout};
        if ((st = check_shape(c, bias, 1, wb)) != KT_OK)
            return st;
        if (bias->is_int)
            return kt_err_set(c->err, KT_ERR_RUNTIME, "%s: tensor '%s' is an integer tensor",
                              c->path, bias->name);
        d->bias = bias->data;
    }
    return KT_OK;
}

static kt_status load_bn(ctx *c, kt_bn_desc *d, int s, int b, int i, int ch)
{
    char src[96];
    const kt_tensor *t[4];
    const int which[4] = {SUF_GAMMA, SUF_BETA, SUF_MEAN, SUF_VAR};
    int64_t want[1] = {ch};
    kt_status st;

    layer_names(c, 0, s, b, i, src, d->name, sizeof d->name);
    for (int j = 0; j < 4; j++) {
        if (!(t[j] = find2(c, src, which[j])))
            return missing(c, src, which[j]);
        if ((st = check_shape(c, t[j], 1, want)) != KT_OK)
            return st;
        if (t[j]->is_int)
            return kt_err_set(c->err, KT_ERR_RUNTIME, "%s: tensor '%s' is an integer tensor",
                              c->path, t[j]->name);
    }
    for (int e = 0; e < ch; e++)
        if (t[3]->data[e] < 0)
            return kt_err_set(c->err, KT_ERR_RUNTIME,
                              "%s: tensor '%s': negative variance %g at element %d", c->path,
                              t[3]->name, (double)t[3]->data[e], e);
    d->gamma = t[0]->data;
    d->beta = t[1]->data;
    d->mean = t[2]->data;
    d->var = t[3]->data;
    d->c = ch;
    d->eps = c->eps;
    const cJSON *l = topo_layer(c, src);
    if (l) {
        const cJSON *e = topo_cfg(l, "epsilon");
        if (e && (!cJSON_IsNumber(e) || !(e->valuedouble > 0)))
            return kt_err_set(c->err, KT_ERR_RUNTIME, "%s: layer '%s': epsilon is not a positive number",
                              c->path, src);
        if (e)
            d->eps = (float)e->valuedouble;
    }
    return KT_OK;
}

/* ---- the kt checkpoint "arch" metadata ---- */

static kt_status meta_number(const ctx *c, const cJSON *o, const char *key, double lo, double hi,
                             double *v)
{
    const cJSON *j = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!j)
        return KT_OK;
    if (!cJSON_IsNumber(j) || !(j->valuedouble >= lo && j->valuedouble <= hi))
        return kt_err_set(c->err, KT_ERR_RUNTIME,
                          "%s: __metadata__.kt: arch.%s must be a number in [%g, %g]", c->path, key, lo,
                          hi);
    *v = j->valuedouble;
    return KT_OK;
}

static kt_status meta_triple(const ctx *c, const cJSON *o, const char *key, float *v)
{
    const cJSON *j = cJSON_GetObjectItemCaseSensitive(o, key), *x;
    float t[3];
    int n = 0;
    if (!j)
        return KT_OK;
    if (cJSON_IsArray(j) && cJSON_GetArraySize(j) == 3)
        cJSON_ArrayForEach(x, j) {
            if (!cJSON_IsNumber(x) || !isfinite(x->valuedouble))
                break;
            t[n++] = (float)x->valuedouble;
        }
    if (n != 3)
        return kt_err_set(c->err, KT_ERR_RUNTIME,
                          "%s: __metadata__.kt: arch.norm.%s must be an array of 3 numbers", c->path, key);
    memcpy(v, t, sizeof t);
    return KT_OK;
}

/* Applies a kt checkpoint's {"arch": {...}} (see arch.h). *stride_on_3x3
 * is set only when the metadata says so. */
static kt_status apply_meta(ctx *c, kt_arch *a, int *stride_on_3x3)
{
    const char *text = kt_weights_kt_metadata(c->w);
    cJSON *root = NULL;
    kt_status st = KT_OK;
    if (!text)
        return KT_OK;
    snprintf(a->format, sizeof a->format, "kt");
    if (!(root = cJSON_Parse(text)) || !cJSON_IsObject(root)) {
        st = kt_err_set(c->err, KT_ERR_RUNTIME, "%s: __metadata__.kt is not a JSON object", c->path);
        goto done;
    }
    const cJSON *ar = cJSON_GetObjectItemCaseSensitive(root, "arch");
    if (!ar)
        goto done;
    if (!cJSON_IsObject(ar)) {
        st = kt_err_set(c->err, KT_ERR_RUNTIME, "%s: __metadata__.kt: arch is not an object", c->path);
        goto done;
    }
    double v = -1;
    if ((st = meta_number(c, ar, "stride_on_3x3", 0, 1, &v)) != KT_OK)
        goto done;
    if (v >= 0)
        *stride_on_3x3 = v != 0;
    v = c->eps;
    if ((st = meta_number(c, ar, "bn_eps", 1e-12, 1, &v)) != KT_OK)
        goto done;
    c->eps = (float)v;
    const cJSON *nm = cJSON_GetObjectItemCaseSensitive(ar, "norm");
    if (nm) {
        if (!cJSON_IsObject(nm)) {
            st = kt_err_set(c->err, KT_ERR_RUNTIME, "%s: __metadata__.kt: arch.norm is not an object", c->path);
            goto done;
        }
        v = a->norm.bgr;
        if ((st = meta_number(c, nm, "bgr", 0, 1, &v)) != KT_OK)
            goto done;
        a->norm.bgr = v != 0;
        v = a->norm.scale;
        if ((st = meta_number(c, nm, "scale", 1e-12, 1e12, &v)) != KT_OK)
            goto done;
        a->norm.scale = (float)v;
        if ((st = meta_triple(c, nm, "mean", a->norm.mean)) != KT_OK
            || (st = meta_triple(c, nm, "std", a->norm.std)) != KT_OK)
            goto done;
        for (int i = 0; i < 3; i++)
            if (!(a->norm.std[i] > 0)) {
                st = kt_err_set(c->err, KT_ERR_RUNTIME, "%s: __metadata__.kt: arch.norm.std must be positive", c->path);
                goto done;
            }
    }
done:
    cJSON_Delete(root);
    return st;
}

/* ---- the whole network ---- */

static void set_variant(kt_arch *a)
{
    static const struct {
        const char *name;
        int bottleneck, width0, d[4];
    } known[] = {
        {"resnet18", 0, 64, {2, 2, 2, 2}},       {"resnet34", 0, 64, {3, 4, 6, 3}},
        {"resnet50", 1, 64, {3, 4, 6, 3}},       {"resnet101", 1, 64, {3, 4, 23, 3}},
        {"resnet152", 1, 64, {3, 8, 36, 3}},     {"wide_resnet50_2", 1, 128, {3, 4, 6, 3}},
        {"wide_resnet101_2", 1, 128, {3, 4, 23, 3}},
    };
    snprintf(a->variant, sizeof a->variant, "resnet-custom");
    if (a->stem_conv.cout != 64 || a->stem_conv.k != 7)
        return;
    for (size_t v = 0; v < sizeof known / sizeof known[0]; v++) {
        int ok = known[v].bottleneck == a->bottleneck;
        for (int s = 0, first = 0; ok && s < 4; first += a->depth[s], s++)
            ok = a->depth[s] == known[v].d[s] && a->width[s] == known[v].width0 << s
                 && a->blocks[first].cout == (a->bottleneck ? 256 : 64) << s;
        if (ok) {
            snprintf(a->variant, sizeof a->variant, "%s", known[v].name);
            return;
        }
    }
}

static int64_t conv_params(const kt_conv_desc *d)
{
    return (int64_t)d->cout * d->cin * d->k * d->k + (d->bias ? d->cout : 0);
}

/* Counts the blocks of each stage, from block 0 up until the first conv of
 * block b is absent. */
static void count_blocks(ctx *c, kt_arch *a)
{
    char src[96], tv[64];
    for (int s = 0; s < 4; s++) {
        if (c->sc == SCHEME_CAFFE) {
            char probe[64];
            snprintf(probe, sizeof probe, "res%db1_branch2a", s + 2);
            c->numbered[s] = find2(c, probe, SUF_W) != NULL;
        }
        int b = 0;
        for (; b < MAX_BLOCKS; b++) {
            if (c->sc == SCHEME_CAFFE && !c->numbered[s] && b >= 26)
                break;
            layer_names(c, 1, s, b, 0, src, tv, sizeof tv);
            if (!find2(c, src, SUF_W))
                break;
        }
        a->depth[s] = b;
    }
    /* Other schemes get Caffe-style Keras names too: Caffe's ResNet-101/152
     * number the blocks of res3 and res4 (res4b1..res4b22); letters suit the
     * rest and would run out at z anyway. */
    if (c->sc != SCHEME_CAFFE)
        for (int s = 0; s < 4; s++)
            c->numbered[s] = a->depth[s] > 26 || ((s == 1 || s == 2) && a->depth[2] > 6);
}

/* torchvision files: a block numbered past the counted ones means a gap
 * (layer1.3 without layer1.2), and layer5 a network kt does not know. */
static kt_status check_torch_extras(ctx *c, const kt_arch *a)
{
    for (int i = 0; i < kt_weights_count(c->w); i++) {
        const char *n = kt_weights_at(c->w, i)->name;
        int s, b, len = 0;
        if (sscanf(n, "layer%d.%d.%n", &s, &b, &len) != 2 || len == 0)
            continue;
        if (s < 1 || s > 4)
            return kt_err_set(c->err, KT_ERR_RUNTIME,
                              "%s: tensor '%s': kt knows ResNets with stages layer1..layer4 only", c->path, n);
        if (b >= a->depth[s - 1])
            return kt_err_set(c->err, KT_ERR_RUNTIME,
                              "%s: tensor '%s' belongs to block %d of layer%d, but 'layer%d.%d.conv1.weight' is missing",
                              c->path, n, b, s, s, a->depth[s - 1]);
    }
    return KT_OK;
}

static kt_status build(ctx *c, kt_arch *a)
{
    kt_status st;
    int stride_on_3x3 = c->sc == SCHEME_TORCH;

    if ((st = apply_meta(c, a, &stride_on_3x3)) != KT_OK)
        return st;

    /* Stem: k from the file (7 in every ResNet), stride 2, pad k/2. */
    char src[96], tv[64];
    layer_names(c, 1, -1, 0, 0, src, tv, sizeof tv);
    const kt_tensor *t = find2(c, src, SUF_W);
    int k = t && t->ndim == 4 ? (int)t->shape[c->sc == SCHEME_TORCH ? 2 : 0] : 7;
    if (k < 1 || k > 15 || k % 2 == 0)
        k = 7; /* check_shape below reports the actual shape */
    if ((st = load_conv(c, &a->stem_conv, -1, 0, 0, k, 3, -1, 2, k / 2)) != KT_OK)
        return st;
    if ((st = load_bn(c, &a->stem_bn, -1, 0, 0, a->stem_conv.cout)) != KT_OK)
        return st;
    if (c->layers) {
        /* The max pool after the stem: kt runs 3x3 / 2 with padding 1. */
        const cJSON *l;
        cJSON_ArrayForEach(l, c->layers) {
            const cJSON *cls = cJSON_GetObjectItemCaseSensitive(l, "class_name");
            if (!cJSON_IsString(cls) || strcmp(cls->valuestring, "MaxPooling2D") != 0)
                continue;
            int ps = 0, pst = 0, pad = 0;
            const cJSON *pm = topo_cfg(l, "padding"), *prev = topo_inbound(c, l);
            const cJSON *pcls = cJSON_GetObjectItemCaseSensitive(prev, "class_name");
            if (cJSON_IsString(pcls) && strcmp(pcls->valuestring, "ZeroPadding2D") == 0)
                pad = zeropad_amount(prev);
            if (!cfg_square(l, "pool_size", &ps) || !cfg_square(l, "strides", &pst) || ps != 3
                || pst != 2 || pad != 1 || !cJSON_IsString(pm) || strcmp(pm->valuestring, "valid") != 0)
                return kt_err_set(c->err, KT_ERR_RUNTIME,
                                  "%s: max pool layer in model.json is not 3x3 / stride 2 with padding 1, the only stem pool kt runs",
                                  c->path);
        }
    }

    count_blocks(c, a);
    for (int s = 0; s < 4; s++)
        if (a->depth[s] == 0) {
            layer_names(c, 1, s, 0, 0, src, tv, sizeof tv);
            return missing(c, src, SUF_W);
        }
    if (c->sc == SCHEME_TORCH && (st = check_torch_extras(c, a)) != KT_OK)
        return st;
    layer_names(c, 1, 0, 0, 2, src, tv, sizeof tv);
    a->bottleneck = find2(c, src, SUF_W) != NULL;
    a->stride_on_3x3 = a->bottleneck ? stride_on_3x3 : 1;
    a->nstages = 4;
    a->nblocks = a->depth[0] + a->depth[1] + a->depth[2] + a->depth[3];
    if (!(a->blocks = calloc((size_t)a->nblocks, sizeof *a->blocks)))
        return kt_err_set(c->err, KT_ERR_RUNTIME, "out of memory");

    int cin = a->stem_conv.cout, n = 0;
    int64_t np = conv_params(&a->stem_conv) + 2 * a->stem_bn.c;
    for (int s = 0; s < 4; s++) {
        int width = -1, cout = -1;
        for (int b = 0; b < a->depth[s]; b++, n++) {
            kt_block_desc *B = &a->blocks[n];
            int stride = s > 0 && b == 0 ? 2 : 1;
            char blk[16], nm[64];
            snprintf(nm, sizeof nm, "layer%d.%d", s + 1, b);
            copy_name(B->name, sizeof B->name, nm);
            caffe_block(c, s, b, blk, sizeof blk);
            snprintf(nm, sizeof nm, "res%d%s", s + 2, blk);
            copy_name(B->keras_name, sizeof B->keras_name, nm);
            B->stage = s + 1;
            B->bottleneck = a->bottleneck;
            B->cin = cin;
            if (a->bottleneck) {
                int s1 = stride_on_3x3 ? 1 : stride, s2 = stride_on_3x3 ? stride : 1;
                if ((st = load_conv(c, &B->conv[0], s, b, 0, 1, cin, width, s1, 0)) != KT_OK)
                    return st;
                width = B->conv[0].cout;
                if ((st = load_conv(c, &B->conv[1], s, b, 1, 3, width, width, s2, 1)) != KT_OK
                    || (st = load_conv(c, &B->conv[2], s, b, 2, 1, width, cout, 1, 0)) != KT_OK)
                    return st;
                cout = B->conv[2].cout;
            } else {
                if ((st = load_conv(c, &B->conv[0], s, b, 0, 3, cin, width, stride, 1)) != KT_OK)
                    return st;
                width = B->conv[0].cout;
                if ((st = load_conv(c, &B->conv[1], s, b, 1, 3, width, width, 1, 1)) != KT_OK)
                    return st;
                cout = width;
            }
            int nconv = a->bottleneck ? 3 : 2;
            B->stride = 1;
            for (int i = 0; i < nconv; i++) {
                if ((st = load_bn(c, &B->bn[i], s, b, i, B->conv[i].cout)) != KT_OK)
                    return st;
                kt_conv_desc *d = &B->conv[i];
                /* Each conv keeps the size up to its stride, so the main path
                 * and the shortcut agree for every input size. */
                if (d->pad != (d->k - 1) / 2)
                    return kt_err_set(c->err, KT_ERR_RUNTIME,
                                      "%s: conv %s: padding %d on a %dx%d kernel does not keep the feature map size; kt runs ResNets with 'same'-style padding only",
                                      c->path, d->name, d->pad, d->k, d->k);
                B->stride *= d->stride;
                np += conv_params(d) + 2 * B->bn[i].c;
            }
            B->cout = cout;
            layer_names(c, 1, s, b, 3, src, tv, sizeof tv);
            B->has_down = find2(c, src, SUF_W) != NULL;
            if (B->has_down) {
                if ((st = load_conv(c, &B->down, s, b, 3, 1, cin, cout, stride, 0)) != KT_OK
                    || (st = load_bn(c, &B->down_bn, s, b, 3, cout)) != KT_OK)
                    return st;
                if (B->down.stride != B->stride)
                    return kt_err_set(c->err, KT_ERR_RUNTIME,
                                      "%s: block %s: shortcut stride %d differs from the main path's stride %d",
                                      c->path, B->name, B->down.stride, B->stride);
                np += conv_params(&B->down) + 2 * cout;
            } else if (B->stride != 1 || cin != cout) {
                return missing(c, src, SUF_W);
            }
            cin = cout;
        }
        a->width[s] = width;
    }
    a->features = cin;
    /* Where the model (or its model.json) really put the stride. */
    for (int b = 0; b < a->nblocks && a->bottleneck; b++)
        if (a->blocks[b].stride > 1) {
            a->stride_on_3x3 = a->blocks[b].conv[1].stride > 1;
            break;
        }

    /* The original classifier, if the file has one in the standard place. A
     * kt head (fc.0.weight, ...) is the train code's business. */
    const char *fc = c->sc == SCHEME_TORCH ? "fc" : c->sc == SCHEME_CAFFE ? "fc1000" : "predictions";
    const kt_tensor *fw = find2(c, fc, SUF_W), *fb = find2(c, fc, SUF_B);
    if (fw) {
        int keras = c->sc != SCHEME_TORCH;
        int64_t want[2] = {-1, a->features};
        if (keras)
            want[0] = a->features, want[1] = -1;
        if ((st = check_shape(c, fw, 2, want)) != KT_OK)
            return st;
        a->num_classes = (int)fw->shape[keras ? 1 : 0];
        if (keras) {
            float *o = own_alloc(c, (size_t)a->num_classes * (size_t)a->features);
            if (!o)
                return kt_err_set(c->err, KT_ERR_RUNTIME, "out of memory");
            hwio_to_oihw(o, fw->data, 1, a->features, a->num_classes);
            a->fc_w = o;
        } else {
            a->fc_w = fw->data;
        }
        if (fb) {
            int64_t wb[1] = {a->num_classes};
            if ((st = check_shape(c, fb, 1, wb)) != KT_OK)
                return st;
            a->fc_b = fb->data;
        }
        np += (int64_t)a->num_classes * a->features + (fb ? a->num_classes : 0);
    }
    a->nparams = np;
    set_variant(a);
    return KT_OK;
}

kt_status kt_arch_init(kt_arch **out, const kt_weights *w, kt_err *err)
{
    ctx c = {0};
    cJSON *topo = NULL;
    arch_priv *p = calloc(1, sizeof *p);
    kt_status st;

    *out = NULL;
    if (!p)
        return kt_err_set(err, KT_ERR_RUNTIME, "out of memory");
    kt_arch *a = &p->a;
    c.w = w;
    c.path = kt_weights_path(w);
    c.p = p;
    c.err = err;
    if (kt_weights_find(w, "conv1.weight"))
        c.sc = SCHEME_TORCH, c.eps = 1e-5f;
    else if (kt_weights_find(w, "conv1/kernel"))
        c.sc = SCHEME_CAFFE, c.eps = 1e-3f;
    else if (kt_weights_find(w, "conv1_conv/kernel"))
        c.sc = SCHEME_TFKERAS, c.eps = 1.001e-5f;
    else {
        st = kt_err_set(err, KT_ERR_RUNTIME,
                        "%s: not a ResNet kt knows: no 'conv1.weight' (torchvision), 'conv1/kernel' (Keras) or 'conv1_conv/kernel' (tf.keras) tensor",
                        c.path);
        goto fail;
    }
    snprintf(a->format, sizeof a->format, "%s", c.sc == SCHEME_TORCH ? "torchvision" : "keras");
    if (c.sc == SCHEME_TORCH) {
        a->norm = (kt_norm){0, 1.0f / 255.0f, {0.485f, 0.456f, 0.406f}, {0.229f, 0.224f, 0.225f}};
    } else {
        a->norm = (kt_norm){1, 1.0f, {103.939f, 116.779f, 123.68f}, {1.0f, 1.0f, 1.0f}};
    }
    const char *tt = kt_weights_tfjs_topology(w);
    if (tt) {
        topo = cJSON_Parse(tt);
        const cJSON *mc = cJSON_GetObjectItemCaseSensitive(topo, "model_config");
        const cJSON *cfg = cJSON_GetObjectItemCaseSensitive(mc, "config");
        const cJSON *layers = cJSON_IsArray(cfg) ? cfg : cJSON_GetObjectItemCaseSensitive(cfg, "layers");
        c.layers = cJSON_IsArray(layers) ? layers : NULL;
    }
    if (c.sc != SCHEME_TORCH) {
        /* Room for every kernel, each rounded up to 16 floats. */
        size_t floats = 0;
        for (int i = 0; i < kt_weights_count(w); i++) {
            const kt_tensor *t = kt_weights_at(w, i);
            size_t l = strlen(t->name);
            if (l > 7 && !strcmp(t->name + l - 7, "/kernel"))
                floats += ((size_t)t->numel + 15) / 16 * 16;
        }
        arena_init(p, floats);
    }
    if ((st = build(&c, a)) != KT_OK)
        goto fail;
    cJSON_Delete(topo);
    *out = a;
    return KT_OK;

fail:
    cJSON_Delete(topo);
    kt_arch_free(a);
    return st;
}

void kt_arch_free(kt_arch *a)
{
    arch_priv *p = (arch_priv *)a;
    if (!p)
        return;
    for (int i = 0; i < p->nown; i++)
        free(p->own[i]);
    free(p->own);
    if (p->arena_map)
        munmap(p->arena_map, p->arena_len);
    free(a->blocks);
    free(p);
}

/* ---- cut points ---- */

int kt_arch_npoints(const kt_arch *a)
{
    return 3 + a->nblocks + (a->num_classes > 0);
}

const char *kt_arch_point_name(const kt_arch *a, int p, char *buf, int bufsize)
{
    const char *s = NULL;
    if (p == 0)
        s = "input";
    else if (p == 1)
        s = "stem";
    else if (p >= 2 && p < 2 + a->nblocks)
        s = a->blocks[p - 2].name;
    else if (p == 2 + a->nblocks)
        s = "avgpool";
    else if (p == 3 + a->nblocks && a->num_classes > 0)
        s = "logits";
    else
        s = "?";
    snprintf(buf, (size_t)bufsize, "%s", s);
    return buf;
}

static int conv_out(const kt_conv_desc *d, int h)
{
    return (h + 2 * d->pad - d->k) / d->stride + 1;
}

void kt_arch_point_shape(const kt_arch *a, int p, int image_size, int *c, int *h, int *w)
{
    int s = image_size;
    *c = 3;
    if (p >= 1) {
        s = conv_out(&a->stem_conv, s);
        s = (s + 2 - 3) / 2 + 1; /* max pool 3x3 / 2, pad 1 */
        *c = a->stem_conv.cout;
    }
    for (int b = 0; b < a->nblocks && b + 2 <= p; b++) {
        const kt_block_desc *B = &a->blocks[b];
        for (int i = 0; i < (B->bottleneck ? 3 : 2); i++)
            s = conv_out(&B->conv[i], s);
        *c = B->cout;
    }
    if (p >= 2 + a->nblocks) {
        s = 1;
        *c = p == 2 + a->nblocks ? a->features : a->num_classes;
    }
    *h = *w = s;
}

/* Reads a decimal int at *s (no sign); advances. */
static int take_int(const char **s, int *v)
{
    const char *q = *s;
    long x = 0;
    if (*q < '0' || *q > '9')
        return 0;
    while (*q >= '0' && *q <= '9' && x < 100000)
        x = x * 10 + (*q++ - '0');
    *v = (int)x;
    *s = q;
    return 1;
}

static int stage_first(const kt_arch *a, int s)
{
    int f = 0;
    for (int q = 0; q < s; q++)
        f += a->depth[q];
    return f;
}

/* Point of block b (0-based) of stage s (0-based), or -1 when out of range. */
static int block_point(const kt_arch *a, int s, int b)
{
    if (s < 0 || s >= 4 || b < 0 || b >= a->depth[s])
        return -1;
    return 2 + stage_first(a, s) + b;
}

static int find_point(const kt_arch *a, const char *name)
{
    const char *q = name;
    int s, b;
    if (!strcmp(name, "input") || !strcmp(name, "none"))
        return 0;
    if (!strcmp(name, "stem"))
        return 1;
    if (!strcmp(name, "avgpool") || !strcmp(name, "avg_pool"))
        return 2 + a->nblocks;
    if (!strcmp(name, "logits"))
        return a->num_classes > 0 ? 3 + a->nblocks : -1;
    if (!strncmp(q, "layer", 5)) {
        q += 5;
        if (!take_int(&q, &s))
            return -1;
        if (!*q)
            return block_point(a, s - 1, s >= 1 && s <= 4 ? a->depth[s - 1] - 1 : 0);
        if (*q++ != '.' || !take_int(&q, &b) || *q)
            return -1;
        return block_point(a, s - 1, b);
    }
    if (!strncmp(q, "res", 3)) {
        /* Caffe/Keras: res4 (stage), res4f or res4b22 (block). */
        q += 3;
        if (!take_int(&q, &s) || s < 2 || s > 5)
            return -1;
        if (!*q)
            return block_point(a, s - 2, a->depth[s - 2] - 1);
        for (b = 0; b < a->nblocks; b++)
            if (!strcmp(name, a->blocks[b].keras_name))
                return 2 + b;
        return -1;
    }
    if (!strncmp(q, "conv", 4)) {
        /* tf.keras: conv4_block6_out, stages 2..5, blocks 1-based. */
        q += 4;
        if (!take_int(&q, &s) || strncmp(q, "_block", 6))
            return -1;
        q += 6;
        if (!take_int(&q, &b) || strcmp(q, "_out"))
            return -1;
        return block_point(a, s - 2, b - 1);
    }
    return -1;
}

kt_status kt_arch_point_find(const kt_arch *a, const char *name, int *p, kt_err *err)
{
    int r = find_point(a, name);
    if (r >= 0) {
        *p = r;
        return KT_OK;
    }
    char list[640];
    size_t o = 0;
    o += (size_t)snprintf(list + o, sizeof list - o, "input (or none), stem");
    for (int s = 0; s < 4; s++)
        o += (size_t)snprintf(list + o, sizeof list - o, ", layer%d.0..layer%d.%d", s + 1, s + 1,
                              a->depth[s] - 1);
    snprintf(list + o, sizeof list - o, ", avgpool%s", a->num_classes > 0 ? ", logits" : "");
    char last5[16];
    snprintf(last5, sizeof last5, "%s", a->blocks[a->nblocks - 1].keras_name);
    return kt_err_set(err, KT_ERR_USAGE,
                      "unknown layer '%s'; valid names: %s; also layer1..layer4 (last block of a stage) and the Keras names res2..res5, res2a..%s, conv2_block1_out..conv5_block%d_out",
                      name, list, last5, a->depth[3]);
}

/* The shortest decimal that reads back as the same float: metadata shows
 * 0.001, not 0.0010000000474974513. */
static double short_float(float f)
{
    char buf[32];
    for (int prec = 1; prec < 9; prec++) {
        snprintf(buf, sizeof buf, "%.*g", prec, (double)f);
        if ((float)strtod(buf, NULL) == f)
            return strtod(buf, NULL);
    }
    return f;
}

char *kt_arch_metadata_json(const kt_arch *a)
{
    cJSON *o = cJSON_CreateObject(), *n = NULL;
    char *text = NULL;
    if (!o)
        return NULL;
    double md[3], sdd[3];
    for (int i = 0; i < 3; i++)
        md[i] = short_float(a->norm.mean[i]), sdd[i] = short_float(a->norm.std[i]);
    if (cJSON_AddStringToObject(o, "variant", a->variant)
        && cJSON_AddNumberToObject(o, "stride_on_3x3", a->stride_on_3x3)
        && cJSON_AddNumberToObject(o, "bn_eps", short_float(a->stem_bn.eps))
        && (n = cJSON_AddObjectToObject(o, "norm"))
        && cJSON_AddNumberToObject(n, "bgr", a->norm.bgr)
        && cJSON_AddNumberToObject(n, "scale", short_float(a->norm.scale))
        && cJSON_AddItemToObject(n, "mean", cJSON_CreateDoubleArray(md, 3))
        && cJSON_AddItemToObject(n, "std", cJSON_CreateDoubleArray(sdd, 3)))
        text = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    return text;
}
