/* imgdump - writes kt's image pipeline stages as raw files, for
 * test/conformance_image.sh (comparison with ../shared/oracle) and for
 * looking at what kt feeds the network.
 *
 *   imgdump stages FILE OUTDIR torch|caffe [RESIZE CROP]
 *     OUTDIR/decoded_rgb.u8.bin  (H x W x 3)
 *     OUTDIR/resized_rgb.u8.bin  (whole resized image)
 *     OUTDIR/crop_rgb.u8.bin     (CROP x CROP x 3)
 *     OUTDIR/input.bin           (3 x CROP x CROP f32, kt_transform_eval on the full decode)
 *     OUTDIR/input_roi.bin       (same through the region-of-interest decode)
 *   imgdump resize RAW W H OW OH OUT   Pillow resize of a raw H x W x 3 file
 *   imgdump decode FILE OUT            decoded pixels; prints "W H" on stdout
 *   imgdump dataset ROOT [WORKERS]     scans ROOT and loads one epoch through the
 *                                      eval loader; prints counts and the warnings
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dataset.h"
#include "image.h"
#include "loader.h"
#include "transform.h"

static int put(const char *dir, const char *name, const void *p, size_t n)
{
    char path[4096];
    snprintf(path, sizeof path, "%s%s%s", dir, dir[0] ? "/" : "", name);
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(p, 1, n, f) != n) {
        fprintf(stderr, "imgdump: cannot write %s\n", path);
        if (f)
            fclose(f);
        return 1;
    }
    return fclose(f) != 0;
}

static kt_norm norm_named(const char *s)
{
    kt_norm torch = {0, 1.0f / 255.0f, {0.485f, 0.456f, 0.406f}, {0.229f, 0.224f, 0.225f}};
    kt_norm caffe = {1, 1.0f, {103.939f, 116.779f, 123.68f}, {1.0f, 1.0f, 1.0f}};
    return strcmp(s, "caffe") ? torch : caffe;
}

static int stages(const char *file, const char *dir, const char *nname, int resize, int crop)
{
    kt_image img = {0}, rs = {0}, cr = {0}, roi = {0};
    kt_err err;
    kt_norm norm = norm_named(nname);
    float *in = malloc(sizeof(float) * 3 * crop * crop);
    int rc = 1, ow, oh, x0, y0, x1, y1;
    uint8_t *buf = NULL;
    size_t cap = 0, n = 0;

    if (!in || kt_image_load(&img, file, &err))
        goto fail;
    if (put(dir, "decoded_rgb.u8.bin", img.rgb, (size_t)img.w * img.h * 3))
        goto fail;
    kt_transform_resize_size(img.w, img.h, resize, &ow, &oh);
    if (kt_transform_resize(&rs, &img, ow, oh, &err) || kt_transform_center_crop(&cr, &rs, crop, &err))
        goto fail;
    if (put(dir, "resized_rgb.u8.bin", rs.rgb, (size_t)ow * oh * 3) ||
        put(dir, "crop_rgb.u8.bin", cr.rgb, (size_t)crop * crop * 3))
        goto fail;
    if (kt_transform_eval(in, (size_t)crop * crop, &img, resize, crop, &norm, &err) ||
        put(dir, "input.bin", in, sizeof(float) * 3 * crop * crop))
        goto fail;
    kt_image_info info;
    if (kt_image_read_file(&buf, &cap, &n, file, &err) || kt_image_probe(&info, buf, n, file, &err))
        goto fail;
    kt_transform_eval_roi(info.w, info.h, resize, crop, &x0, &y0, &x1, &y1);
    kt_image_opts o = {0, x0, y0, x1, y1};
    if (kt_image_decode_ex(&roi, buf, n, file, &o, &err) ||
        kt_transform_eval(in, (size_t)crop * crop, &roi, resize, crop, &norm, &err) ||
        put(dir, "input_roi.bin", in, sizeof(float) * 3 * crop * crop))
        goto fail;
    printf("%d %d window %dx%d+%d+%d\n", img.w, img.h, roi.w, roi.h, roi.x0, roi.y0);
    rc = 0;
fail:
    if (rc && err.msg[0])
        fprintf(stderr, "imgdump: %s\n", err.msg);
    kt_image_free(&img), kt_image_free(&rs), kt_image_free(&cr), kt_image_free(&roi);
    free(in), free(buf);
    return rc;
}

static int resize_raw(char **a)
{
    int w = atoi(a[1]), h = atoi(a[2]), ow = atoi(a[3]), oh = atoi(a[4]), rc = 1;
    kt_image in = {0}, out = {0};
    kt_err err = {0};
    size_t n = (size_t)w * h * 3;
    FILE *f = fopen(a[0], "rb");
    in.rgb = malloc(n);
    if (f && in.rgb && fread(in.rgb, 1, n, f) == n) {
        in.w = in.full_w = w, in.h = in.full_h = h, in.cap = n;
        if (!kt_transform_resize(&out, &in, ow, oh, &err))
            rc = put("", a[5], out.rgb, (size_t)ow * oh * 3);
    }
    if (f)
        fclose(f);
    if (rc)
        fprintf(stderr, "imgdump: resize %s failed %s\n", a[0], err.msg);
    kt_image_free(&in), kt_image_free(&out);
    return rc;
}

static int dataset(const char *root, int workers)
{
    kt_dataset ds;
    kt_err err;
    kt_loader *l = NULL;
    if (kt_dataset_scan(&ds, root, &err)) {
        fprintf(stderr, "imgdump: %s\n", err.msg);
        return 1;
    }
    kt_loader_opts o = {0};
    o.ds = &ds, o.batch = 16, o.image_size = 224, o.resize = 256, o.norm = norm_named("torch");
    o.workers = workers, o.epochs = 1;
    int rc = 1, images = 0, batches = 0;
    const kt_batch *b;
    if (kt_loader_init(&l, &o, &err))
        goto fail;
    kt_status st;
    while ((st = kt_loader_next(l, &b, &err)) == KT_OK && b) {
        images += b->n, batches++;
        fputs(b->warnings, stdout);
    }
    if (st)
        goto fail;
    printf("classes %d files %d images %d batches %d skipped %lld wait %.3f s\n", ds.nclasses, ds.n,
           images, batches, (long long)kt_loader_skipped(l), kt_loader_wait_seconds(l));
    rc = 0;
fail:
    if (rc)
        fprintf(stderr, "imgdump: %s\n", err.msg);
    kt_loader_free(l);
    kt_dataset_free(&ds);
    return rc;
}

int main(int argc, char **argv)
{
    if (argc >= 3 && !strcmp(argv[1], "dataset"))
        return dataset(argv[2], argc > 3 ? atoi(argv[3]) : 2);
    if (argc >= 5 && !strcmp(argv[1], "stages"))
        return stages(argv[2], argv[3], argv[4], argc > 5 ? atoi(argv[5]) : 256,
                      argc > 6 ? atoi(argv[6]) : 224);
    if (argc == 8 && !strcmp(argv[1], "resize"))
        return resize_raw(argv + 2);
    if (argc == 4 && !strcmp(argv[1], "decode")) {
        kt_image img = {0};
        kt_err err;
        if (kt_image_load(&img, argv[2], &err)) {
            fprintf(stderr, "imgdump: %s\n", err.msg);
            return 1;
        }
        printf("%d %d\n", img.w, img.h);
        int rc = put("", argv[3], img.rgb, (size_t)img.w * img.h * 3);
        kt_image_free(&img);
        return rc;
    }
    fprintf(stderr, "usage: imgdump stages FILE OUTDIR torch|caffe [RESIZE CROP]\n"
                    "       imgdump resize RAW W H OW OH OUT\n       imgdump decode FILE OUT\n"
                    "       imgdump dataset ROOT [WORKERS]\n");
    return 2;
}
