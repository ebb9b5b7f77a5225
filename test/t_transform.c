/* t_transform.c - resize against Pillow, the evaluation transform against
 * torchvision (t_transform_pil.h, made by test/gen_images_pil.py), crop
 * offsets, normalisation, and the training augmentation's properties. */
#include <stdlib.h>
#include <string.h>

#include "t_transform_pil.h"
#include "test.h"
#include "transform.h"

#define NELEM(a) ((int)(sizeof(a) / sizeof((a)[0])))

/* The input formula of gen_images_pil.py. */
static void pattern(kt_image *img, int w, int h)
{
    img->rgb = malloc((size_t)w * h * 3);
    img->cap = (size_t)w * h * 3;
    img->w = img->full_w = img->src_w = w;
    img->h = img->full_h = img->src_h = h;
    img->x0 = img->y0 = 0;
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++)
            for (int c = 0; c < 3; c++)
                img->rgb[((size_t)y * w + x) * 3 + c] =
                    (uint8_t)((x * 31 + y * 17 + c * 85 + ((x * y) % 13) * 9) & 255);
}

static const kt_norm torch_norm = {0, 1.0f / 255.0f, {0.485f, 0.456f, 0.406f}, {0.229f, 0.224f, 0.225f}};
static const kt_norm caffe_norm = {1, 1.0f, {103.939f, 116.779f, 123.68f}, {1.0f, 1.0f, 1.0f}};

static void test_pil_resize(void)
{
    for (int i = 0; i < NELEM(pil_resizes); i++) {
        kt_image in = {0}, out = {0};
        kt_err err = {0};
        pattern(&in, pil_resizes[i].w, pil_resizes[i].h);
        int ow = pil_resizes[i].ow, oh = pil_resizes[i].oh;
        kt_status st = kt_transform_resize(&out, &in, ow, oh, &err);
        CHECK(st == KT_OK && out.w == ow && out.h == oh &&
                  !memcmp(out.rgb, pil_resizes[i].px, (size_t)ow * oh * 3),
              "resize %dx%d -> %dx%d equals Pillow's BILINEAR", in.w, in.h, ow, oh);
        kt_image_free(&in), kt_image_free(&out);
    }
}

static void test_tv_eval(void)
{
    for (int i = 0; i < NELEM(tv_evals); i++) {
        kt_image img = {0}, win = {0};
        kt_err err = {0};
        int crop = tv_evals[i].crop, rs = tv_evals[i].resize, S2 = crop * crop;
        pattern(&img, tv_evals[i].w, tv_evals[i].h);
        /* Image 1 of a batch of 2: channel c at out + c*2*S2 + S2. */
        float *batch = calloc((size_t)6 * S2, sizeof(float));
        kt_status st = kt_transform_eval(batch + S2, (size_t)2 * S2, &img, rs, crop, &torch_norm, &err);
        int same = st == KT_OK;
        for (int c = 0; c < 3 && same; c++)
            for (int p = 0; p < S2; p++) {
                float v = batch[(size_t)c * 2 * S2 + S2 + p], z = batch[(size_t)c * 2 * S2 + p];
                uint32_t bits;
                memcpy(&bits, &v, 4);
                if (bits != tv_evals[i].bits[c * S2 + p] || z != 0.0f)
                    same = 0;
            }
        CHECK(same, "eval %dx%d resize %d crop %d equals torchvision bit for bit, in batch layout",
              img.w, img.h, rs, crop);

        /* The same through a window holding just kt_transform_eval_roi. */
        int x0, y0, x1, y1;
        kt_transform_eval_roi(img.w, img.h, rs, crop, &x0, &y0, &x1, &y1);
        win = img;
        win.rgb = malloc((size_t)(x1 - x0) * (y1 - y0) * 3);
        win.w = x1 - x0, win.h = y1 - y0, win.x0 = x0, win.y0 = y0;
        for (int y = y0; y < y1; y++)
            memcpy(win.rgb + (size_t)(y - y0) * win.w * 3, img.rgb + ((size_t)y * img.w + x0) * 3,
                   (size_t)win.w * 3);
        float *a = malloc(sizeof(float) * 3 * S2);
        st = kt_transform_eval(a, (size_t)S2, &win, rs, crop, &torch_norm, &err);
        same = st == KT_OK;
        for (int c = 0; c < 3 && same; c++)
            same = !memcmp(a + c * S2, batch + (size_t)c * 2 * S2 + S2, sizeof(float) * S2);
        CHECK(same, "eval from the region-of-interest window gives the same tensor");
        /* A window missing part of the region is an error, not garbage. */
        win.x0++;
        CHECK(kt_transform_eval(a, (size_t)S2, &win, rs, crop, &torch_norm, &err) != KT_OK,
              "a window that misses the region is refused");
        free(a), free(win.rgb), free(batch);
        kt_image_free(&img);
    }
}

static void test_geometry(void)
{
    int ow, oh, l, t;
    kt_transform_resize_size(640, 480, 256, &ow, &oh);
    CHECK(ow == 341 && oh == 256, "640x480 resizes to 341x256 (%dx%d)", ow, oh);
    kt_transform_resize_size(300, 500, 256, &ow, &oh);
    CHECK(ow == 256 && oh == 426, "300x500 resizes to 256x426 (%dx%d)", ow, oh);
    kt_transform_resize_size(500, 332, 256, &ow, &oh);
    CHECK(ow == 385 && oh == 256, "500x332 resizes to 385x256 (%dx%d)", ow, oh);
    kt_transform_crop_offsets(341, 256, 224, &l, &t);
    CHECK(l == 58 && t == 16, "crop offsets of 341x256: 58.5 rounds to even 58 (%d,%d)", l, t);
    kt_transform_crop_offsets(385, 426, 224, &l, &t);
    CHECK(l == 80 && t == 101, "crop offsets 80.5 -> 80, 101 (%d,%d)", l, t);
    kt_transform_crop_offsets(227, 225, 224, &l, &t);
    CHECK(l == 2 && t == 0, "1.5 -> 2 and 0.5 -> 0 (%d,%d)", l, t);

    kt_image img = {0};
    float out[4];
    kt_err err;
    pattern(&img, 10, 10);
    CHECK(kt_transform_eval(out, 1, &img, 1, 2, &torch_norm, &err) == KT_ERR_USAGE,
          "resize smaller than the crop is a usage error");
    kt_image_free(&img);
}

static void test_normalize(void)
{
    uint8_t px[256 * 3];
    float out[3 * 256];
    for (int i = 0; i < 256; i++)
        px[3 * i] = (uint8_t)i, px[3 * i + 1] = (uint8_t)(255 - i), px[3 * i + 2] = (uint8_t)(i * 7);
    kt_transform_normalize(out, 256, px, 256, &caffe_norm);
    int ok = 1;
    for (int i = 0; i < 256; i++)
        ok &= out[i] == (float)px[3 * i + 2] - 103.939f && out[256 + i] == (float)px[3 * i + 1] - 116.779f &&
              out[512 + i] == (float)px[3 * i] - 123.68f;
    CHECK(ok, "caffe normalisation: BGR planes, float32 mean subtraction");
    kt_transform_normalize(out, 256, px, 256, &torch_norm);
    ok = 1;
    for (int i = 0; i < 256; i++)
        for (int c = 0; c < 3; c++)
            ok &= out[c * 256 + i] == ((float)px[3 * i + c] / 255.0f - torch_norm.mean[c]) / torch_norm.std[c];
    CHECK(ok, "torchvision normalisation: (u8 / 255.0f - mean) / std, true divisions");
}

static void test_rrc(void)
{
    kt_augment aug = kt_transform_augment_default();
    int inside = 1, in_range = 1, differ = 0, W = 400, H = 300;
    double sum_area = 0;
    for (int s = 0; s < 2000; s++) {
        int x, y, w, h, x2, y2, w2, h2;
        kt_transform_rrc_box(W, H, &aug, 7, 3, (uint64_t)s, &x, &y, &w, &h);
        kt_transform_rrc_box(W, H, &aug, 7, 3, (uint64_t)s, &x2, &y2, &w2, &h2);
        inside &= x >= 0 && y >= 0 && w >= 1 && h >= 1 && x + w <= W && y + h <= H &&
                  x == x2 && y == y2 && w == w2 && h == h2;
        double a = (double)w * h / (W * H), r = (double)w / h;
        /* rounding the sides moves area and ratio a little past the ranges */
        in_range &= a > 0.07 && a <= 1.0 && r > 0.70 && r < 1.42;
        sum_area += a;
        kt_transform_rrc_box(W, H, &aug, 7, 4, (uint64_t)s, &x2, &y2, &w2, &h2);
        differ += x != x2 || y != y2 || w != w2 || h != h2;
    }
    CHECK(inside, "random resized crop boxes lie inside the image and repeat for the same draw");
    CHECK(in_range, "area fraction in (0.08, 1] and ratio in [3/4, 4/3] up to rounding");
    /* Large draws often do not fit and are redrawn, so the mean is below
     * 0.54: torchvision's own get_params gives 0.435 for 400x300 (20000 draws). */
    CHECK(sum_area / 2000 > 0.41 && sum_area / 2000 < 0.46,
          "mean area fraction %.3f near torchvision's 0.435", sum_area / 2000);
    CHECK(differ > 1900, "another epoch draws other boxes (%d of 2000 differ)", differ);

    /* Ratios impossible for the image: the centre-crop fallback clamped to the range. */
    kt_augment wide = aug;
    wide.scale[0] = 0.99, wide.ratio[0] = 3.0, wide.ratio[1] = 4.0;
    int x, y, w, h;
    kt_transform_rrc_box(100, 100, &wide, 1, 0, 0, &x, &y, &w, &h);
    CHECK(w == 100 && h == 33 && x == 0 && y == 33, "fallback: full width, height 100/3 (got %d,%d %dx%d)",
          x, y, w, h);
}

/* Sum of all channel values of a CHW tensor. */
static double tsum(const float *t, int n)
{
    double s = 0;
    for (int i = 0; i < n; i++)
        s += t[i];
    return s;
}

static void test_train(void)
{
    int S = 32, S2 = S * S;
    kt_image img = {0};
    kt_err err = {0};
    kt_transform_ws ws = {0};
    float *a = malloc(sizeof(float) * 3 * S2), *b = malloc(sizeof(float) * 3 * S2);
    float *e = malloc(sizeof(float) * 3 * S2);
    pattern(&img, 90, 70);

    kt_augment none = {0, {0.08, 1}, {0.75, 4.0 / 3}, 0, 0, 0, 0};
    kt_transform_train(a, (size_t)S2, &img, S, 40, &torch_norm, &none, 1, 0, 5, &ws, &err);
    kt_transform_eval(e, (size_t)S2, &img, 40, S, &torch_norm, &err);
    CHECK(!memcmp(a, e, sizeof(float) * 3 * S2), "training transform without augmentation = eval");

    /* Flip alone: either the eval tensor or its mirror image, about half each. */
    kt_augment flip = none;
    flip.flip = 1;
    int flipped = 0, other = 0;
    for (int s = 0; s < 400; s++) {
        kt_transform_train(a, (size_t)S2, &img, S, 40, &torch_norm, &flip, 1, 0, (uint64_t)s, &ws, &err);
        if (!memcmp(a, e, sizeof(float) * 3 * S2))
            continue;
        int mirror = 1;
        for (int c = 0; c < 3 && mirror; c++)
            for (int y = 0; y < S && mirror; y++)
                for (int x = 0; x < S; x++)
                    mirror &= a[c * S2 + y * S + x] == e[c * S2 + y * S + S - 1 - x];
        flipped += mirror;
        other += !mirror;
    }
    CHECK(other == 0 && flipped > 160 && flipped < 240, "flip mirrors %d of 400 images (%d neither)",
          flipped, other);

    /* Full augmentation: deterministic in (seed, epoch, sample), varies otherwise. */
    kt_augment full = kt_transform_augment_default();
    full.brightness = full.contrast = full.saturation = 0.4;
    kt_transform_train(a, (size_t)S2, &img, S, 40, &torch_norm, &full, 9, 2, 11, &ws, &err);
    kt_transform_train(b, (size_t)S2, &img, S, 40, &torch_norm, &full, 9, 2, 11, &ws, &err);
    CHECK(!memcmp(a, b, sizeof(float) * 3 * S2), "same (seed, epoch, sample): same tensor");
    kt_transform_train(b, (size_t)S2, &img, S, 40, &torch_norm, &full, 9, 3, 11, &ws, &err);
    CHECK(memcmp(a, b, sizeof(float) * 3 * S2), "another epoch: another tensor");

    /* Jitter properties: saturation leaves grey pixels alone; contrast leaves a
     * flat image alone; brightness scales the raw values by a factor in range. */
    kt_image grey = {0};
    pattern(&grey, 50, 50);
    for (size_t i = 0; i < 50 * 50; i++)
        grey.rgb[3 * i + 1] = grey.rgb[3 * i + 2] = grey.rgb[3 * i];
    kt_augment sat = none;
    sat.saturation = 0.9;
    kt_transform_train(a, (size_t)S2, &grey, S, 40, &torch_norm, &sat, 1, 0, 1, &ws, &err);
    kt_transform_eval(e, (size_t)S2, &grey, 40, S, &torch_norm, &err);
    CHECK(!memcmp(a, e, sizeof(float) * 3 * S2), "saturation jitter keeps a grey image");
    memset(grey.rgb, 77, 50 * 50 * 3);
    kt_augment con = none;
    con.contrast = 0.9;
    kt_transform_train(a, (size_t)S2, &grey, S, 40, &torch_norm, &con, 1, 0, 2, &ws, &err);
    kt_transform_eval(e, (size_t)S2, &grey, 40, S, &torch_norm, &err);
    CHECK(!memcmp(a, e, sizeof(float) * 3 * S2), "contrast jitter keeps a flat image");
    memset(grey.rgb, 100, 50 * 50 * 3);
    kt_augment bri = none;
    bri.brightness = 0.5;
    kt_norm raw = {0, 1.0f, {0, 0, 0}, {1, 1, 1}};
    int in = 1, changed = 0;
    for (int s = 0; s < 50; s++) {
        kt_transform_train(a, (size_t)S2, &grey, S, 40, &raw, &bri, 1, 0, (uint64_t)s, &ws, &err);
        double m = tsum(a, 3 * S2) / (3 * S2);
        in &= m >= 49.0 && m <= 150.0;
        changed += m != 100.0;
    }
    CHECK(in && changed > 45, "brightness 0.5 keeps values in [50, 150] and changes them");

    kt_image_free(&grey);
    kt_image_free(&img);
    kt_transform_ws_free(&ws);
    kt_transform_ws_free(&ws);
    free(a), free(b), free(e);
}

int main(void)
{
    test_pil_resize();
    test_tv_eval();
    test_geometry();
    test_normalize();
    test_rrc();
    test_train();
    TEST_EXIT();
}
