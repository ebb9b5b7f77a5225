/* checkpoint.c - kt checkpoints as safetensors + kt metadata (see checkpoint.h).
 *
 * The tensor list is planned once per run: the backbone's tensors as the
 * resnet lists them (torchvision's state_dict order; frozen ones point into
 * the arch, trainable ones at the live values), the head, the optimizer
 * state; so a write costs no copy beyond the file itself. Frozen batch norms
 * keep the num_batches_tracked of the file they came from (0 when it had
 * none, as for Keras weights), so a checkpoint of a checkpoint stays faithful.
 */
#include "checkpoint.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct kt_ckpt {
    const kt_arch *arch;
    kt_head *head;
    kt_optim *optim;
    int n_model;            /* tensors of the model */
    int n_all;              /* ... plus the optimizer state */
    int cap;
    kt_wtensor *t;          /* [cap]; names and data belong to the resnet, head, optimizer */
    int *order;             /* [cap] scratch for the checksum */
};

static void add(kt_ckpt *c, const char *name, int ndim, const int64_t *shape, const float *data,
                const int64_t *idata)
{
    kt_wtensor *t = &c->t[c->n_all++];
    t->name = name;
    t->ndim = ndim;
    for (int d = 0; d < ndim; d++)
        t->shape[d] = shape[d];
    t->data = data;
    t->idata = idata;
}

static int is_buffer(kt_resnet *net, const char *name)
{
    for (int i = 0; i < kt_resnet_nbuffers(net); i++)
        if (strcmp(kt_resnet_buffer(net, i)->name, name) == 0)
            return 1;
    return 0;
}

kt_status kt_ckpt_init(kt_ckpt **out, const kt_arch *a, const kt_weights *src, kt_resnet *net,
                       kt_head *head, kt_optim *optim, kt_err *err)
{
    int nb;
    const kt_wtensor *bt = kt_resnet_tensors(net, &nb);
    kt_ckpt *c = calloc(1, sizeof *c);
    *out = NULL;
    if (!c)
        return kt_err_set(err, KT_ERR_RUNTIME, "out of memory");
    c->arch = a;
    c->head = head;
    c->optim = optim;
    c->cap = nb + kt_head_nparams(head) + (optim ? kt_optim_nstate(optim) : 0);
    c->t = calloc((size_t)c->cap, sizeof *c->t);
    c->order = calloc((size_t)c->cap, sizeof *c->order);
    if (!c->t || !c->order) {
        kt_ckpt_free(c);
        return kt_err_set(err, KT_ERR_RUNTIME, "out of memory");
    }
    for (int i = 0; i < nb; i++) {
        const kt_wtensor *x = &bt[i];
        const int64_t *idata = x->idata;
        /* A frozen BN's counter is the one of the file it came from. */
        const char *dot = strrchr(x->name, '.');
        if (idata && dot && strcmp(dot, ".num_batches_tracked") == 0 && !is_buffer(net, x->name)) {
            const kt_tensor *t = src ? kt_weights_find(src, x->name) : NULL;
            if (t && t->is_int && t->numel == 1)
                idata = t->idata;
        }
        add(c, x->name, x->ndim, x->shape, x->data, idata);
    }
    for (int i = 0; i < kt_head_nparams(head); i++) {
        const kt_param *p = kt_head_param(head, i);
        add(c, p->name, p->ndim, p->shape, p->data, NULL);
    }
    c->n_model = c->n_all;
    for (int i = 0; optim && i < kt_optim_nstate(optim); i++) {
        const char *name;
        const kt_param *p;
        const float *d = kt_optim_state(optim, i, &name, &p);
        add(c, name, p->ndim, p->shape, d, NULL);
    }
    *out = c;
    return KT_OK;
}

void kt_ckpt_free(kt_ckpt *c)
{
    if (!c)
        return;
    free(c->t);
    free(c->order);
    free(c);
}

int kt_ckpt_count(const kt_ckpt *c, int with_optim) { return with_optim ? c->n_all : c->n_model; }
const kt_wtensor *kt_ckpt_tensor(const kt_ckpt *c, int i) { return &c->t[i]; }

cJSON *kt_ckpt_meta(const kt_ckpt *c, const char *const *classes, int nclasses, int image_size,
                    int resize, const char *cut)
{
    const kt_head_shape *hs = kt_head_get_shape(c->head);
    cJSON *m = cJSON_CreateObject();
    char *arch = kt_arch_metadata_json(c->arch);
    cJSON *aj = arch ? cJSON_Parse(arch) : NULL;
    free(arch);
    if (!m || !aj)
        goto fail;
    cJSON_AddStringToObject(m, "format", "kt-checkpoint");
    cJSON_AddNumberToObject(m, "version", 1);
    cJSON *cl = cJSON_AddArrayToObject(m, "classes");
    for (int i = 0; cl && i < nclasses; i++)
        cJSON_AddItemToArray(cl, cJSON_CreateString(classes[i]));
    cJSON *pp = cJSON_AddObjectToObject(m, "preprocess");
    if (!cl || !pp)
        goto fail;
    cJSON_AddNumberToObject(pp, "image_size", image_size);
    cJSON_AddNumberToObject(pp, "resize", resize);
    cJSON_AddStringToObject(m, "cut", cut);
    cJSON *h = cJSON_AddObjectToObject(m, "head");
    cJSON *hid = h ? cJSON_AddArrayToObject(h, "hidden") : NULL;
    if (!hid)
        goto fail;
    cJSON_AddNumberToObject(h, "features", hs->features);
    for (int i = 0; i < hs->nhidden; i++)
        cJSON_AddItemToArray(hid, cJSON_CreateNumber(hs->hidden[i]));
    cJSON_AddStringToObject(h, "activation", kt_spec_activation_name(hs->act));
    cJSON_AddNumberToObject(h, "dropout", hs->dropout);
    cJSON_AddNumberToObject(h, "classes", hs->classes);
    cJSON_AddItemToObject(m, "arch", aj);
    return m;
fail:
    cJSON_Delete(aj);
    cJSON_Delete(m);
    return NULL;
}

static void set_item(cJSON *o, const char *key, cJSON *v)
{
    if (cJSON_GetObjectItemCaseSensitive(o, key))
        cJSON_ReplaceItemInObjectCaseSensitive(o, key, v);
    else
        cJSON_AddItemToObject(o, key, v);
}

kt_status kt_ckpt_write(kt_ckpt *c, const char *path, int with_optim, cJSON *meta, kt_err *err)
{
    int n = kt_ckpt_count(c, with_optim);
    char hex[17];
    snprintf(hex, sizeof hex, "%016" PRIx64, kt_weights_checksum_list(c->t, n, c->order));
    set_item(meta, "checksum", cJSON_CreateString(hex));
    set_item(meta, "tensors", cJSON_CreateNumber(n));
    if (with_optim && c->optim) {
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "name", kt_spec_optim_name(kt_optim_kind(c->optim)));
        cJSON_AddNumberToObject(o, "t", (double)kt_optim_t(c->optim));
        set_item(meta, "optim", o);
    } else {
        cJSON_DeleteItemFromObjectCaseSensitive(meta, "optim");
    }
    char *text = cJSON_PrintUnformatted(meta);
    if (!text)
        return kt_err_set(err, KT_ERR_RUNTIME, "%s: out of memory", path);
    kt_status st = kt_weights_write(path, c->t, n, text, err);
    free(text);
    return st;
}

kt_status kt_ckpt_open(cJSON **out, const kt_weights *w, kt_err *err)
{
    const char *path = kt_weights_path(w), *text = kt_weights_kt_metadata(w);
    cJSON *m;
    char hex[17];
    *out = NULL;
    if (!text)
        return kt_err_set(err, KT_ERR_RUNTIME, "%s: not a kt checkpoint (no kt metadata)", path);
    if (!(m = cJSON_Parse(text)))
        return kt_err_set(err, KT_ERR_RUNTIME, "%s: kt metadata is not valid JSON", path);
    const cJSON *fmt = cJSON_GetObjectItemCaseSensitive(m, "format");
    const cJSON *cs = cJSON_GetObjectItemCaseSensitive(m, "checksum");
    const cJSON *nt = cJSON_GetObjectItemCaseSensitive(m, "tensors");
    if (!cJSON_IsString(fmt) || strcmp(fmt->valuestring, "kt-checkpoint") != 0 ||
        !cJSON_IsString(cs) || !cJSON_IsNumber(nt)) {
        cJSON_Delete(m);
        return kt_err_set(err, KT_ERR_RUNTIME,
                          "%s: kt metadata lacks format/checksum/tensors: not a kt checkpoint", path);
    }
    if (nt->valuedouble != kt_weights_count(w)) {
        kt_err_set(err, KT_ERR_RUNTIME, "%s: holds %d tensors, its metadata says %.0f", path,
                   kt_weights_count(w), nt->valuedouble);
        cJSON_Delete(m);
        return KT_ERR_RUNTIME;
    }
    snprintf(hex, sizeof hex, "%016" PRIx64, kt_weights_checksum(w));
    if (strcmp(hex, cs->valuestring) != 0) {
        kt_err_set(err, KT_ERR_RUNTIME,
                   "%s: tensor data checksum %s does not match the recorded %s (file damaged)",
                   path, hex, cs->valuestring);
        cJSON_Delete(m);
        return KT_ERR_RUNTIME;
    }
    *out = m;
    return KT_OK;
}

static int get_num(const cJSON *o, const char *key, double *v)
{
    const cJSON *j = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!cJSON_IsNumber(j))
        return 0;
    *v = j->valuedouble;
    return 1;
}

static int get_floats(const cJSON *o, const char *key, float *v, int n)
{
    const cJSON *a = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!cJSON_IsArray(a) || cJSON_GetArraySize(a) != n)
        return 0;
    for (int i = 0; i < n; i++) {
        const cJSON *x = cJSON_GetArrayItem(a, i);
        if (!cJSON_IsNumber(x))
            return 0;
        v[i] = (float)x->valuedouble;
    }
    return 1;
}

kt_status kt_ckpt_info_parse(kt_ckpt_info *info, const cJSON *meta, const char *path, kt_err *err)
{
    const char *bad = NULL;
    double v, bgr = 0, scale = 0;
    memset(info, 0, sizeof *info);
    const cJSON *cl = cJSON_GetObjectItemCaseSensitive(meta, "classes");
    const cJSON *pp = cJSON_GetObjectItemCaseSensitive(meta, "preprocess");
    const cJSON *nm = cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(meta, "arch"), "norm");
    const cJSON *cut = cJSON_GetObjectItemCaseSensitive(meta, "cut");
    const cJSON *h = cJSON_GetObjectItemCaseSensitive(meta, "head");
    const cJSON *hid = cJSON_GetObjectItemCaseSensitive(h, "hidden");
    const cJSON *act = cJSON_GetObjectItemCaseSensitive(h, "activation");

    if (!cJSON_IsArray(cl) || cJSON_GetArraySize(cl) < 2)
        bad = "classes";
    else if (!cJSON_IsObject(pp))
        bad = "preprocess";
    else if (!get_num(pp, "image_size", &v) || (info->image_size = (int)v) <= 0)
        bad = "preprocess.image_size";
    else if (!get_num(pp, "resize", &v) || (info->resize = (int)v) < info->image_size)
        bad = "preprocess.resize";
    else if (!get_num(nm, "bgr", &bgr) || !get_num(nm, "scale", &scale) ||
             !get_floats(nm, "mean", info->norm.mean, 3) || !get_floats(nm, "std", info->norm.std, 3))
        bad = "arch.norm";
    else if (!cJSON_IsString(cut))
        bad = "cut";
    else if (!cJSON_IsObject(h) || !cJSON_IsArray(hid) || cJSON_GetArraySize(hid) > 64 ||
             !cJSON_IsString(act))
        bad = "head";
    if (bad)
        return kt_err_set(err, KT_ERR_RUNTIME, "%s: kt metadata: \"%s\" missing or invalid", path,
                          bad);
    info->norm.bgr = bgr != 0;
    info->norm.scale = (float)scale;
    info->cut = cut->valuestring;
    info->nclasses = cJSON_GetArraySize(cl);
    info->classes = calloc((size_t)info->nclasses, sizeof *info->classes);
    if (!info->classes)
        return kt_err_set(err, KT_ERR_RUNTIME, "out of memory");
    for (int i = 0; i < info->nclasses; i++) {
        const cJSON *s = cJSON_GetArrayItem(cl, i);
        if (!cJSON_IsString(s)) {
            kt_ckpt_info_free(info);
            return kt_err_set(err, KT_ERR_RUNTIME, "%s: kt metadata: classes[%d] is not a string",
                              path, i);
        }
        info->classes[i] = s->valuestring;
    }
    info->nhidden = cJSON_GetArraySize(hid);
    for (int i = 0; i < info->nhidden; i++) {
        const cJSON *x = cJSON_GetArrayItem(hid, i);
        info->hidden[i] = cJSON_IsNumber(x) ? (int)x->valuedouble : 0;
    }
    int a = -1;
    for (int i = KT_ACT_RELU; i <= KT_ACT_TANH; i++)
        if (strcmp(act->valuestring, kt_spec_activation_name((kt_activation)i)) == 0)
            a = i;
    double classes = 0, features = 0;
    if (a < 0 || !get_num(h, "dropout", &info->dropout) || !get_num(h, "features", &features) ||
        !get_num(h, "classes", &classes) || classes != info->nclasses) {
        kt_ckpt_info_free(info);
        return kt_err_set(err, KT_ERR_RUNTIME,
                          "%s: kt metadata: \"head\" activation/dropout/features/classes invalid",
                          path);
    }
    info->act = (kt_activation)a;
    info->features = (int)features;
    return KT_OK;
}

void kt_ckpt_info_free(kt_ckpt_info *info)
{
    if (!info)
        return;
    free(info->classes);
    info->classes = NULL;
}

kt_head_shape kt_ckpt_info_head(const kt_ckpt_info *info)
{
    kt_head_shape s = {.features = info->features, .nhidden = info->nhidden,
                       .hidden = info->hidden, .act = info->act, .dropout = info->dropout,
                       .classes = info->nclasses};
    return s;
}

/* Copies tensor `name` of w into dst (float) or idst (int64) of numel values. */
static kt_status restore_one(const kt_weights *w, const char *name, float *dst, int64_t *idst,
                             int ndim, const int64_t *shape, int64_t numel, kt_err *err)
{
    const char *path = kt_weights_path(w);
    const kt_tensor *t = kt_weights_find(w, name);
    if (!t)
        return kt_err_set(err, KT_ERR_RUNTIME, "%s: tensor %s missing", path, name);
    int same = t->numel == numel && t->is_int == (idst != NULL) && t->ndim == ndim;
    for (int d = 0; same && d < ndim; d++)
        same = t->shape[d] == shape[d];
    if (!same)
        return kt_err_set(err, KT_ERR_RUNTIME, "%s: tensor %s has another shape or type than the model's",
                          path, name);
    if (idst)
        memcpy(idst, t->idata, sizeof *idst * (size_t)numel);
    else
        memcpy(dst, t->data, sizeof *dst * (size_t)numel);
    return KT_OK;
}

kt_status kt_ckpt_restore(const kt_weights *w, const cJSON *meta, kt_param *const *params,
                          int nparams, kt_buffer *const *buffers, int nbuffers, kt_optim *optim,
                          kt_err *err)
{
    kt_status st;
    for (int i = 0; i < nparams; i++) {
        kt_param *p = params[i];
        if ((st = restore_one(w, p->name, p->data, NULL, p->ndim, p->shape, p->numel, err)) != KT_OK)
            return st;
    }
    for (int i = 0; i < nbuffers; i++) {
        kt_buffer *b = buffers[i];
        if ((st = restore_one(w, b->name, b->data, b->idata, b->ndim, b->shape, b->numel, err)) !=
            KT_OK)
            return st;
    }
    if (!optim)
        return KT_OK;
    const cJSON *o = cJSON_GetObjectItemCaseSensitive(meta, "optim");
    double t;
    const cJSON *name = cJSON_GetObjectItemCaseSensitive(o, "name");
    if (!get_num(o, "t", &t) || !cJSON_IsString(name) ||
        strcmp(name->valuestring, kt_spec_optim_name(kt_optim_kind(optim))) != 0)
        return kt_err_set(err, KT_ERR_RUNTIME,
                          "%s: no %s optimizer state in the kt metadata (\"optim\")",
                          kt_weights_path(w), kt_spec_optim_name(kt_optim_kind(optim)));
    for (int i = 0; i < kt_optim_nstate(optim); i++) {
        const char *sn;
        const kt_param *p;
        float *d = kt_optim_state(optim, i, &sn, &p);
        if ((st = restore_one(w, sn, d, NULL, p->ndim, p->shape, p->numel, err)) != KT_OK)
            return st;
    }
    kt_optim_set_t(optim, (int64_t)t);
    return KT_OK;
}

kt_status kt_ckpt_head(kt_head **out, const kt_weights *w, const kt_ckpt_info *info, int batch,
                       kt_err *err)
{
    kt_head_shape hs = kt_ckpt_info_head(info);
    kt_head *h = NULL;
    kt_param *ps[2 * 65];
    kt_status st = kt_head_init(&h, &hs, batch, err);
    *out = NULL;
    if (st != KT_OK)
        return kt_err_prefix(err, "%s: kt metadata \"head\"", kt_weights_path(w));
    for (int i = 0; i < kt_head_nparams(h); i++)
        ps[i] = kt_head_param(h, i);
    if ((st = kt_ckpt_restore(w, NULL, ps, kt_head_nparams(h), NULL, 0, NULL, err)) != KT_OK) {
        kt_head_free(h);
        return st;
    }
    *out = h;
    return KT_OK;
}
