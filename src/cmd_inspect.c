/* cmd_inspect.c - "kt inspect MODEL": what a weights file or checkpoint is,
 * as arch.c understands it. Text for people, --json for scripts; both carry
 * the same facts, on stdout.
 */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "arch.h"
#include "blas.h"
#include "cli.h"
#include "commands.h"
#include "weights.h"

/* Geometry defaults (the job may change them); see transform.h. */
#define DEFAULT_RESIZE 256
#define DEFAULT_CROP 224

typedef struct {
    char name[32];
    char alias[3][48];
    int nalias;
    int c, h, w;
} point_info;

/* Every point with its shape at image_size and the other names that reach it
 * (what kt_arch_point_find accepts). */
static void describe_point(const kt_arch *a, int p, int image_size, point_info *pi)
{
    memset(pi, 0, sizeof *pi);
    kt_arch_point_name(a, p, pi->name, sizeof pi->name);
    kt_arch_point_shape(a, p, image_size, &pi->c, &pi->h, &pi->w);
    if (p == 0) {
        snprintf(pi->alias[pi->nalias++], sizeof pi->alias[0], "none");
    } else if (p >= 2 && p < 2 + a->nblocks) {
        const kt_block_desc *b = &a->blocks[p - 2];
        int first = 0;
        for (int s = 0; s < b->stage - 1; s++)
            first += a->depth[s];
        int idx = p - 2 - first;
        if (idx == a->depth[b->stage - 1] - 1)
            snprintf(pi->alias[pi->nalias++], sizeof pi->alias[0], "layer%d", b->stage);
        snprintf(pi->alias[pi->nalias++], sizeof pi->alias[0], "%s", b->keras_name);
        snprintf(pi->alias[pi->nalias++], sizeof pi->alias[0], "conv%d_block%d_out", b->stage + 1, idx + 1);
    } else if (p == 2 + a->nblocks) {
        snprintf(pi->alias[pi->nalias++], sizeof pi->alias[0], "avg_pool");
    }
}

static const char *order_name(const kt_arch *a)
{
    return a->norm.bgr ? "BGR" : "RGB";
}

static const char *container_name(const kt_weights *w)
{
    return kt_weights_format(w) == KT_FORMAT_TFJS ? "TF.js layers model" : "safetensors";
}

static int has_conv_bias(const kt_arch *a)
{
    return a->stem_conv.bias != NULL;
}

/* 25583592 -> "25,583,592" */
static void group_digits(char *buf, size_t n, long long v)
{
    char tmp[32];
    int len = snprintf(tmp, sizeof tmp, "%lld", v), o = 0;
    for (int i = 0; i < len && (size_t)o + 2 < n; i++) {
        if (i > 0 && (len - i) % 3 == 0)
            buf[o++] = ',';
        buf[o++] = tmp[i];
    }
    buf[o] = '\0';
}

/* One line per top-level key of the kt metadata: scalars as they are, lists
 * as a count (class names spelled out, up to 10), objects by their keys. */
static void print_meta_text(const cJSON *m)
{
    const cJSON *it;
    printf("kt metadata:\n");
    cJSON_ArrayForEach(it, m) {
        printf("  %-12s ", it->string);
        if (cJSON_IsString(it)) {
            printf("%s\n", it->valuestring);
        } else if (cJSON_IsNumber(it)) {
            printf("%.10g\n", it->valuedouble);
        } else if (cJSON_IsBool(it)) {
            printf("%s\n", cJSON_IsTrue(it) ? "true" : "false");
        } else if (cJSON_IsArray(it)) {
            int n = cJSON_GetArraySize(it), k = 0;
            const cJSON *x;
            printf("%d item%s", n, n == 1 ? "" : "s");
            cJSON_ArrayForEach(x, it) {
                if (!cJSON_IsString(x))
                    break;
                printf("%s%s", k ? ", " : ": ", x->valuestring);
                if (++k == 10) {
                    printf("%s", n > 10 ? ", ..." : "");
                    break;
                }
            }
            printf("\n");
        } else if (cJSON_IsObject(it)) {
            const cJSON *x;
            int k = 0;
            printf("{");
            cJSON_ArrayForEach(x, it)
                printf("%s%s", k++ ? ", " : "", x->string);
            printf("}\n");
        } else {
            printf("null\n");
        }
    }
}

static void print_text(const kt_weights *w, const kt_arch *a, const cJSON *meta, int image_size)
{
    char np[32];
    group_digits(np, sizeof np, (long long)a->nparams);
    printf("model       %s\n", kt_weights_path(w));
    printf("format      %s (%s, %d tensors)\n", a->format, container_name(w), kt_weights_count(w));
    printf("variant     %s: %s blocks %d-%d-%d-%d, widths %d-%d-%d-%d, %d features\n", a->variant,
           a->bottleneck ? "bottleneck" : "basic", a->depth[0], a->depth[1], a->depth[2], a->depth[3],
           a->width[0], a->width[1], a->width[2], a->width[3], a->features);
    printf("            stride on the %s (%s), batch norm eps %g, conv biases %s\n",
           a->stride_on_3x3 ? "3x3 conv" : "first 1x1 conv",
           a->stride_on_3x3 ? "ResNet v1.5, torchvision" : "ResNet v1, Caffe/Keras", (double)a->stem_bn.eps,
           has_conv_bias(a) ? "yes" : "no");
    printf("parameters  %s (%.1fM)\n", np, (double)a->nparams / 1e6);
    if (a->num_classes > 0)
        printf("classes     %d (the file's own classifier)\n", a->num_classes);
    else
        printf("classes     none: no plain classifier in the file (a kt head is described by the kt metadata)\n");
    char scale[32];
    if (a->norm.scale == 1.0f / 255.0f)
        snprintf(scale, sizeof scale, "/255");
    else
        snprintf(scale, sizeof scale, "x%g", (double)a->norm.scale);
    printf("input       %s pixels %s, minus mean [%g, %g, %g], divided by std [%g, %g, %g]\n", order_name(a),
           scale, (double)a->norm.mean[0], (double)a->norm.mean[1], (double)a->norm.mean[2],
           (double)a->norm.std[0], (double)a->norm.std[1], (double)a->norm.std[2]);
    printf("            default geometry: resize shorter side to %d, center crop %d\n", DEFAULT_RESIZE,
           DEFAULT_CROP);
    printf("blas        %s (%s)\n", kt_blas_core(), kt_blas_note());
    printf("checksum    %016llx\n", (unsigned long long)kt_weights_checksum(w));
    printf("cut points at %dx%d (name, output shape, other names):\n", image_size, image_size);
    for (int p = 0; p < kt_arch_npoints(a); p++) {
        point_info pi;
        char shape[48];
        describe_point(a, p, image_size, &pi);
        if (pi.h == 1 && pi.w == 1 && p >= 2 + a->nblocks)
            snprintf(shape, sizeof shape, "%d", pi.c);
        else
            snprintf(shape, sizeof shape, "%dx%dx%d", pi.c, pi.h, pi.w);
        printf("  %-10s %s", pi.name, shape);
        for (int i = 0; i < pi.nalias; i++)
            printf("%*s%s", i ? 1 : 13 - (int)strlen(shape), "", pi.alias[i]);
        printf("\n");
    }
    if (meta)
        print_meta_text(meta);
}

static kt_status print_json(const kt_weights *w, const kt_arch *a, const cJSON *meta, int image_size,
                            kt_err *err)
{
    /* kt_arch_metadata_json spells floats shortest (0.001, not 0.0010000000474974513). */
    char *archtext = kt_arch_metadata_json(a);
    cJSON *arch = archtext ? cJSON_Parse(archtext) : NULL;
    const cJSON *norm = cJSON_GetObjectItemCaseSensitive(arch, "norm");
    cJSON *o = arch ? cJSON_CreateObject() : NULL, *x;
    int ok = o != NULL;
    char sum[20];
    int depth[4], width[4];
    free(archtext);
    for (int i = 0; i < 4; i++)
        depth[i] = a->depth[i], width[i] = a->width[i];
    snprintf(sum, sizeof sum, "%016llx", (unsigned long long)kt_weights_checksum(w));

    ok = ok && cJSON_AddStringToObject(o, "model", kt_weights_path(w))
         && cJSON_AddStringToObject(o, "format", a->format)
         && cJSON_AddStringToObject(o, "container", kt_weights_format(w) == KT_FORMAT_TFJS ? "tfjs" : "safetensors")
         && cJSON_AddNumberToObject(o, "tensors", kt_weights_count(w))
         && cJSON_AddStringToObject(o, "variant", a->variant)
         && cJSON_AddBoolToObject(o, "bottleneck", a->bottleneck)
         && cJSON_AddItemToObject(o, "depths", cJSON_CreateIntArray(depth, 4))
         && cJSON_AddItemToObject(o, "widths", cJSON_CreateIntArray(width, 4))
         && cJSON_AddNumberToObject(o, "features", a->features)
         && cJSON_AddBoolToObject(o, "stride_on_3x3", a->stride_on_3x3)
         && cJSON_AddItemToObject(o, "bn_eps", cJSON_Duplicate(cJSON_GetObjectItemCaseSensitive(arch, "bn_eps"), 1))
         && cJSON_AddBoolToObject(o, "conv_bias", has_conv_bias(a))
         && cJSON_AddNumberToObject(o, "parameters", (double)a->nparams)
         && cJSON_AddNumberToObject(o, "num_classes", a->num_classes);
    cJSON *pre = ok ? cJSON_AddObjectToObject(o, "preprocessing") : NULL;
    ok = ok && pre && cJSON_AddStringToObject(pre, "channel_order", order_name(a))
         && cJSON_AddItemToObject(pre, "scale", cJSON_Duplicate(cJSON_GetObjectItemCaseSensitive(norm, "scale"), 1))
         && cJSON_AddItemToObject(pre, "mean", cJSON_Duplicate(cJSON_GetObjectItemCaseSensitive(norm, "mean"), 1))
         && cJSON_AddItemToObject(pre, "std", cJSON_Duplicate(cJSON_GetObjectItemCaseSensitive(norm, "std"), 1))
         && cJSON_AddNumberToObject(pre, "resize", DEFAULT_RESIZE)
         && cJSON_AddNumberToObject(pre, "crop", DEFAULT_CROP);
    cJSON *bl = ok ? cJSON_AddObjectToObject(o, "blas") : NULL;
    ok = ok && bl && cJSON_AddStringToObject(bl, "core", kt_blas_core())
         && cJSON_AddStringToObject(bl, "note", kt_blas_note())
         && cJSON_AddStringToObject(o, "checksum", sum)
         && cJSON_AddNumberToObject(o, "image_size", image_size);
    cJSON *pts = ok ? cJSON_AddArrayToObject(o, "cut_points") : NULL;
    ok = ok && pts;
    for (int p = 0; ok && p < kt_arch_npoints(a); p++) {
        point_info pi;
        describe_point(a, p, image_size, &pi);
        int shape[3] = {pi.c, pi.h, pi.w};
        int flat = p >= 2 + a->nblocks;
        cJSON *al = NULL;
        ok = (x = cJSON_CreateObject()) && cJSON_AddItemToArray(pts, x)
             && cJSON_AddStringToObject(x, "name", pi.name) && cJSON_AddNumberToObject(x, "index", p)
             && cJSON_AddItemToObject(x, "shape", cJSON_CreateIntArray(shape, flat ? 1 : 3))
             && (al = cJSON_AddArrayToObject(x, "aliases"));
        for (int i = 0; ok && i < pi.nalias; i++)
            ok = cJSON_AddItemToArray(al, cJSON_CreateString(pi.alias[i]));
    }
    if (ok)
        ok = meta ? cJSON_AddItemToObject(o, "kt_metadata", cJSON_Duplicate(meta, 1))
                  : cJSON_AddNullToObject(o, "kt_metadata") != NULL;
    char *text = ok ? cJSON_PrintUnformatted(o) : NULL;
    cJSON_Delete(o);
    cJSON_Delete(arch);
    if (!text)
        return kt_err_set(err, KT_ERR_RUNTIME, "out of memory");
    printf("%s\n", text);
    free(text);
    return KT_OK;
}

kt_status kt_cmd_inspect(int argc, char **argv, kt_err *err)
{
    int json = 0, image_size = DEFAULT_CROP;
    kt_opt opts[] = {
        {"json", 0, KT_OPT_FLAG, NULL, "print one JSON object instead of text", 0, 0, &json},
        {"image-size", 0, KT_OPT_INT, "N", "input side the cut point shapes are computed for (default 224)", 32,
         4096, &image_size},
    };
    static const kt_cmd cmd = {
        "inspect",
        "Describes a weights file or kt checkpoint: format, ResNet variant, parameters,\n"
        "classes, preprocessing, every cut point with its output shape, and the BLAS\n"
        "kernel in use. MODEL is a .safetensors file, a TF.js model.json or its folder.",
        "kt inspect [options] MODEL"};
    char **pos;
    int npos;
    kt_weights *w = NULL;
    kt_arch *a = NULL;
    cJSON *meta = NULL;
    kt_status st = kt_cli_parse(&cmd, opts, KT_NOPTS(opts), argc, argv, &pos, &npos, err);
    if (st != KT_OK || !pos)
        return st;
    if (npos != 1)
        return kt_err_set(err, KT_ERR_USAGE, "expected one model file, got %d arguments", npos);
    if ((st = kt_weights_load(&w, pos[0], err)) != KT_OK || (st = kt_arch_init(&a, w, err)) != KT_OK)
        goto done;
    /* arch.c has already checked the metadata parses as an object. */
    if (kt_weights_kt_metadata(w))
        meta = cJSON_Parse(kt_weights_kt_metadata(w));
    if (json)
        st = print_json(w, a, meta, image_size, err);
    else
        print_text(w, a, meta, image_size);
    if (st == KT_OK && (fflush(stdout) != 0 || ferror(stdout)))
        st = kt_err_set(err, KT_ERR_RUNTIME, "writing to stdout failed");
done:
    cJSON_Delete(meta);
    kt_arch_free(a);
    kt_weights_free(w);
    return st;
}
