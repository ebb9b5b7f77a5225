/* t_image.c - decoding: every PNG colour type and depth, JPEG variants, EXIF
 * orientations, region decodes, DCT scaling, and broken files. All images are
 * generated here (test/gen_images.h) under test/out/img/. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "gen_images.h"
#include "image.h"
#include "test.h"

#define DIR "test/out/img"

static char path_buf[512];

static const char *P(const char *name)
{
    snprintf(path_buf, sizeof path_buf, DIR "/%s", name);
    return path_buf;
}

/* Largest |a - b| over n bytes. */
static int maxdiff(const uint8_t *a, const uint8_t *b, size_t n)
{
    int m = 0;
    for (size_t i = 0; i < n; i++) {
        int d = abs((int)a[i] - (int)b[i]);
        m = d > m ? d : m;
    }
    return m;
}

/* Decodes path and compares with want (w x h RGB) within tol. */
static void expect_pixels(const char *name, const char *path, const uint8_t *want, int w, int h,
                          int tol)
{
    kt_image img = {0};
    kt_err err = {0};
    kt_status st = kt_image_load(&img, path, &err);
    if (st != KT_OK) {
        CHECK(0, "%s decodes (%s)", name, err.msg);
        return;
    }
    int same = img.w == w && img.h == h;
    int d = same ? maxdiff(img.rgb, want, (size_t)w * h * 3) : 999;
    CHECK(same && d <= tol, "%s: %dx%d, max diff %d <= %d (got %dx%d)", name, w, h, d, tol, img.w,
          img.h);
    kt_image_free(&img);
}

static void test_png(void)
{
    int w = 37, h = 23;     /* odd sizes exercise row padding and Adam7's partial passes */
    uint8_t *e = gen_pattern(w, h, 1);
    uint8_t *data = malloc((size_t)w * h * 8), *want = malloc((size_t)w * h * 3);
    char name[64];

    for (int il = 0; il < 2; il++) {
        gen_png_opts o = {PNG_COLOR_TYPE_RGB, 8, il, NULL, 0, NULL, 0, 0};
        snprintf(name, sizeof name, "rgb8_il%d.png", il);
        gen_png(P(name), w, h, e, (size_t)w * 3, &o);
        expect_pixels(name, P(name), e, w, h, 0);

        /* 16-bit: high byte e, low byte junk: must give e (scaled, not clipped). */
        for (size_t i = 0; i < (size_t)w * h * 3; i++)
            data[2 * i] = e[i], data[2 * i + 1] = (uint8_t)(i * 37);
        o.depth = 16;
        snprintf(name, sizeof name, "rgb16_il%d.png", il);
        gen_png(P(name), w, h, data, (size_t)w * 6, &o);
        expect_pixels(name, P(name), e, w, h, 0);

        /* RGBA 8 and 16: alpha dropped, colour under transparent pixels kept. */
        for (int depth = 8; depth <= 16; depth += 8) {
            int bs = depth / 8;
            for (size_t i = 0; i < (size_t)w * h; i++) {
                for (int c = 0; c < 3; c++) {
                    data[(i * 4 + c) * bs] = e[i * 3 + c];
                    if (bs == 2)
                        data[(i * 4 + c) * 2 + 1] = 0x7f;
                }
                data[(i * 4 + 3) * bs] = (uint8_t)(i % 3 == 0 ? 0 : i);   /* some fully transparent */
                if (bs == 2)
                    data[(i * 4 + 3) * 2 + 1] = 0;
            }
            gen_png_opts oa = {PNG_COLOR_TYPE_RGBA, depth, il, NULL, 0, NULL, 0, 0};
            snprintf(name, sizeof name, "rgba%d_il%d.png", depth, il);
            gen_png(P(name), w, h, data, (size_t)w * 4 * bs, &oa);
            expect_pixels(name, P(name), e, w, h, 0);
        }

        /* Gray 1, 2, 4, 8, 16 bits: values scale to 0..255 (v * 255 / (2^d - 1)). */
        for (int depth = 1; depth <= 16; depth *= 2) {
            int maxv = (1 << depth) - 1;
            size_t rb = depth <= 8 ? ((size_t)w * depth + 7) / 8 : (size_t)w * 2;
            memset(data, 0, rb * h);
            for (int y = 0; y < h; y++)
                for (int x = 0; x < w; x++) {
                    int v = (x * 7 + y * 3) % (maxv + 1);
                    int v8 = depth == 16 ? v >> 8 : v * 255 / maxv;
                    if (depth == 16)
                        v = (x * 1031 + y * 7919) & 0xffff, v8 = v >> 8;
                    uint8_t *row = data + (size_t)y * rb;
                    if (depth < 8)
                        row[x * depth / 8] |= (uint8_t)(v << (8 - depth - (x * depth) % 8));
                    else if (depth == 8)
                        row[x] = (uint8_t)v;
                    else
                        row[2 * x] = (uint8_t)(v >> 8), row[2 * x + 1] = (uint8_t)v;
                    memset(want + ((size_t)y * w + x) * 3, v8, 3);
                }
            gen_png_opts og = {PNG_COLOR_TYPE_GRAY, depth, il, NULL, 0, NULL, 0, 0};
            snprintf(name, sizeof name, "gray%d_il%d.png", depth, il);
            gen_png(P(name), w, h, data, rb, &og);
            expect_pixels(name, P(name), want, w, h, 0);
        }

        /* Gray + alpha, 8 and 16 bits. */
        for (int depth = 8; depth <= 16; depth += 8) {
            int bs = depth / 8;
            for (size_t i = 0; i < (size_t)w * h; i++) {
                uint8_t g = e[i * 3 + 1];
                data[2 * i * bs] = g;
                data[(2 * i + 1) * bs] = (uint8_t)(255 - g);
                if (bs == 2)
                    data[2 * i * 2 + 1] = 0xee, data[(2 * i + 1) * 2 + 1] = 0;
                memset(want + i * 3, g, 3);
            }
            gen_png_opts oga = {PNG_COLOR_TYPE_GRAY_ALPHA, depth, il, NULL, 0, NULL, 0, 0};
            snprintf(name, sizeof name, "graya%d_il%d.png", depth, il);
            gen_png(P(name), w, h, data, (size_t)w * 2 * bs, &oga);
            expect_pixels(name, P(name), want, w, h, 0);
        }

        /* Palette 1, 2, 4, 8 bits with tRNS: the palette colour, alpha ignored. */
        for (int depth = 1; depth <= 8; depth *= 2) {
            png_color pal[256];
            uint8_t trns[256];
            int np = 1 << depth;
            for (int i = 0; i < np; i++) {
                pal[i].red = (uint8_t)(i * 97 + 13), pal[i].green = (uint8_t)(i * 31 + 200);
                pal[i].blue = (uint8_t)(255 - i * 5);
                trns[i] = (uint8_t)(i * 17);
            }
            size_t rb = ((size_t)w * depth + 7) / 8;
            memset(data, 0, rb * h);
            for (int y = 0; y < h; y++)
                for (int x = 0; x < w; x++) {
                    int v = (x + 3 * y) % np;
                    data[(size_t)y * rb + x * depth / 8] |= (uint8_t)(v << (8 - depth - (x * depth) % 8));
                    uint8_t *q = want + ((size_t)y * w + x) * 3;
                    q[0] = pal[v].red, q[1] = pal[v].green, q[2] = pal[v].blue;
                }
            gen_png_opts op = {PNG_COLOR_TYPE_PALETTE, depth, il, pal, np, trns, np, 0};
            snprintf(name, sizeof name, "palette%d_il%d.png", depth, il);
            gen_png(P(name), w, h, data, rb, &op);
            expect_pixels(name, P(name), want, w, h, 0);
        }
    }
    free(e), free(data), free(want);
}

/* Decodes a file into a fresh image; returns status. */
static kt_status load(kt_image *img, const char *path, const kt_image_opts *o, kt_err *err)
{
    return kt_image_load_ex(img, path, o, err);
}

static void test_jpeg(void)
{
    int w = 96, h = 64;
    uint8_t *e = gen_blocks(w, h, 2);
    kt_image a = {0}, b = {0};
    kt_err err = {0};

    /* Flat 16x16 blocks at quality 100 survive JPEG nearly exactly. */
    gen_jpeg_rgb(P("base444.jpg"), w, h, e, 100, 0, 0);
    expect_pixels("baseline 4:4:4 q100", P("base444.jpg"), e, w, h, 2);
    /* 4:2:0: chroma is interpolated across block edges, so compare the
     * insides of the blocks only. */
    gen_jpeg_rgb(P("base420.jpg"), w, h, e, 100, 1, 0);
    int d = 999;
    if (!load(&a, P("base420.jpg"), NULL, &err) && a.w == w && a.h == h) {
        d = 0;
        for (int y = 0; y < h; y++)
            for (int x = 0; x < w; x++)
                if (x % 16 > 1 && x % 16 < 14 && y % 16 > 1 && y % 16 < 14)
                    for (int c = 0; c < 3; c++) {
                        int v = abs(a.rgb[(y * w + x) * 3 + c] - e[(y * w + x) * 3 + c]);
                        d = v > d ? v : d;
                    }
    }
    CHECK(d <= 3, "baseline 4:2:0 q100 block interiors within 3 (max diff %d)", d);

    /* Progressive stores the same quantised coefficients: identical pixels. */
    gen_jpeg_rgb(P("prog420.jpg"), w, h, e, 100, 1, 1);
    CHECK(!load(&a, P("base420.jpg"), NULL, &err) && !load(&b, P("prog420.jpg"), NULL, &err) &&
              a.w == b.w && a.h == b.h && !memcmp(a.rgb, b.rgb, (size_t)w * h * 3),
          "progressive decodes to the same pixels as baseline");

    /* Grayscale (1 component): R = G = B = the gray value. */
    uint8_t *g = malloc((size_t)w * h), *want = malloc((size_t)w * h * 3);
    for (size_t i = 0; i < (size_t)w * h; i++)
        g[i] = e[i * 3 + 1], memset(want + i * 3, g[i], 3);
    gen_jpeg_opts og = {1, 0, 100, 0, 0, 0};
    gen_jpeg(P("gray.jpg"), w, h, g, &og);
    expect_pixels("gray JPEG", P("gray.jpg"), want, w, h, 1);
    og.progressive = 1;
    gen_jpeg(P("gray_prog.jpg"), w, h, g, &og);
    expect_pixels("gray progressive JPEG", P("gray_prog.jpg"), want, w, h, 1);

    /* CMYK and YCCK, stored Adobe-inverted: stored (R, G, B, 255) means K = 0,
     * C = 255 - R, so RGB comes back; stored k = 102 darkens to k/255 of it. */
    uint8_t *cmyk = malloc((size_t)w * h * 4);
    for (int dark = 0; dark < 2; dark++)
        for (int ycck = 0; ycck < 2; ycck++) {
            int k = dark ? 102 : 255;
            for (size_t i = 0; i < (size_t)w * h; i++) {
                memcpy(cmyk + i * 4, e + i * 3, 3);
                cmyk[i * 4 + 3] = (uint8_t)k;
                for (int c = 0; c < 3; c++)
                    want[i * 3 + c] = (uint8_t)((e[i * 3 + c] * k + 127) / 255);
            }
            gen_jpeg_opts oc = {4, ycck, 100, 0, 0, 0};
            char name[64];
            snprintf(name, sizeof name, "%s_k%d.jpg", ycck ? "ycck" : "cmyk", k);
            gen_jpeg(P(name), w, h, cmyk, &oc);
            expect_pixels(name, P(name), want, w, h, 3);
        }
    free(cmyk);

    /* Upper-case extension or none: the bytes decide. */
    gen_jpeg_rgb(P("NOEXT"), w, h, e, 100, 0, 0);
    expect_pixels("JPEG without extension", P("NOEXT"), e, w, h, 2);
    gen_png_rgb(P("png_named.JPG"), w, h, e, 0);
    expect_pixels("PNG named .JPG", P("png_named.JPG"), e, w, h, 0);

    kt_image_free(&a), kt_image_free(&b);
    free(e), free(g), free(want);
}

/* Region decodes hold exactly the full decode's pixels over the region. */
static void test_roi(void)
{
    int w = 333, h = 250, bad = 0, tried = 0, shrank = 0;
    uint8_t *e = gen_pattern(w, h, 3);
    const char *files[3] = {"roi420.jpg", "roi420p.jpg", "roi444.jpg"};
    gen_jpeg_rgb(P(files[0]), w, h, e, 85, 1, 0);
    gen_jpeg_rgb(P(files[1]), w, h, e, 85, 1, 1);
    gen_jpeg_rgb(P(files[2]), w, h, e, 85, 0, 0);
    kt_image full = {0}, part = {0};
    kt_err err = {0};
    for (int f = 0; f < 3; f++) {
        if (load(&full, P(files[f]), NULL, &err))
            break;
        for (int t = 0; t < 40; t++) {
            kt_image_opts o = {0};
            o.roi_x0 = (t * 53) % (w - 10);
            o.roi_y0 = (t * 29) % (h - 10);
            o.roi_x1 = o.roi_x0 + 1 + (t * 71) % (w - o.roi_x0);
            o.roi_y1 = o.roi_y0 + 1 + (t * 37) % (h - o.roi_y0);
            tried++;
            if (load(&part, P(files[f]), &o, &err) || part.x0 > o.roi_x0 || part.y0 > o.roi_y0 ||
                part.x0 + part.w < o.roi_x1 || part.y0 + part.h < o.roi_y1 ||
                part.full_w != w || part.full_h != h) {
                bad++;
                continue;
            }
            shrank += (size_t)part.w * part.h < (size_t)w * h;
            for (int y = 0; y < part.h; y++)
                if (memcmp(part.rgb + (size_t)y * part.w * 3,
                           full.rgb + ((size_t)(y + part.y0) * w + part.x0) * 3, (size_t)part.w * 3)) {
                    bad++;
                    break;
                }
        }
    }
    CHECK(bad == 0 && tried == 120, "120 region decodes equal the full decode (%d bad)", bad);
    CHECK(shrank > 60, "region decodes decode less than the whole image (%d of 120)", shrank);

    /* DCT scaling: 800x600 with shorter side >= 100 allowed -> 1/4 scale. */
    uint8_t *big = gen_pattern(800, 600, 4);
    gen_jpeg_rgb(P("big.jpg"), 800, 600, big, 90, 1, 0);
    kt_image_opts o = {100, 0, 0, 0, 0};
    CHECK(!load(&part, P("big.jpg"), &o, &err) && part.w == 200 && part.h == 150 &&
              part.full_w == 200 && part.src_w == 800 && part.src_h == 600,
          "DCT scaling picks 1/4 for an 800x600 image with min side 100 (got %dx%d)", part.w, part.h);
    o.dct_min_short = 600;
    CHECK(!load(&part, P("big.jpg"), &o, &err) && part.w == 800 && part.h == 600,
          "no DCT scaling when the shorter side would drop below the minimum");
    free(big);
    kt_image_free(&full), kt_image_free(&part);
    free(e);
}

static void test_exif(void)
{
    int uw = 40, uh = 24;   /* upright size; not square so swaps show */
    uint8_t *up = gen_pattern(uw, uh, 5);
    kt_image a = {0}, b = {0};
    kt_err err = {0};
    for (int o = 1; o <= 8; o++) {
        int sw, sh;
        uint8_t *st = gen_stored_for(up, uw, uh, o, &sw, &sh);
        char name[64];
        snprintf(name, sizeof name, "exif%d.png", o);
        gen_png_rgb(P(name), sw, sh, st, o);
        expect_pixels(name, P(name), up, uw, uh, 0);

        /* JPEG: the tagged file must equal the untagged one turned upright by
         * this test's own mapping (lossy pixels, so compare decode to decode). */
        char tagged[64], plain[64];
        snprintf(tagged, sizeof tagged, "exif%d.jpg", o);
        snprintf(plain, sizeof plain, "exif%d_plain.jpg", o);
        gen_jpeg_opts oj = {3, 0, 90, 0, 1, o};
        gen_jpeg(P(tagged), sw, sh, st, &oj);
        oj.orientation = 0;
        gen_jpeg(P(plain), sw, sh, st, &oj);
        int ok = !load(&a, P(tagged), NULL, &err) && !load(&b, P(plain), NULL, &err) &&
                 a.w == uw && a.h == uh && b.w == sw && b.h == sh;
        for (int y = 0; ok && y < sh; y++)
            for (int x = 0; ok && x < sw; x++) {
                int ux, uy;
                gen_display_pos(o, x, y, sw, sh, &ux, &uy);
                ok = !memcmp(a.rgb + ((size_t)uy * uw + ux) * 3, b.rgb + ((size_t)y * sw + x) * 3, 3);
            }
        CHECK(ok, "JPEG EXIF orientation %d comes out upright", o);

        size_t n;
        uint8_t *buf = gen_read_file(P(tagged), &n);
        kt_image_info info;
        CHECK(buf && !kt_image_probe(&info, buf, n, tagged, &err) && info.w == uw &&
                  info.h == uh && info.orientation == o && !strcmp(info.format, "JPEG"),
              "probe of orientation %d gives the upright size", o);
        free(buf);
        free(st);
    }
    kt_image_free(&a), kt_image_free(&b);
    free(up);
}

/* Expects path to fail with KT_ERR_DATA and a message naming it and containing why. */
static void expect_bad(const char *what, const char *path, const char *why)
{
    kt_image img = {0};
    kt_err err = {0};
    kt_status st = kt_image_load(&img, path, &err);
    CHECK(st == KT_ERR_DATA && !strncmp(err.msg, path, strlen(path)) && strstr(err.msg, why),
          "%s: refused with '%s' (got %d: %s)", what, why, st, err.msg);
    kt_image_free(&img);
}

static void put_be32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24), p[1] = (uint8_t)(v >> 16), p[2] = (uint8_t)(v >> 8), p[3] = (uint8_t)v;
}

static void test_bad(void)
{
    int w = 64, h = 48;
    uint8_t *e = gen_pattern(w, h, 6);
    size_t n;

    gen_write_file(P("empty.jpg"), "", 0);
    expect_bad("empty file", P("empty.jpg"), "empty file");
    const char *text = "name,label\nant.jpg,0\n";
    gen_write_file(P("notes.jpg"), text, strlen(text));
    expect_bad("text file", P("notes.jpg"), "text");
    gen_write_file(P("anim.jpg"), "GIF89a\x01\x00\x01\x00\x00\x00\x00;", 14);
    expect_bad("GIF named .jpg", P("anim.jpg"), "GIF");
    gen_write_file(P("x.webp"), "RIFF\x10\x00\x00\x00WEBPVP8 ", 16);
    expect_bad("WebP", P("x.webp"), "WebP");
    gen_write_file(P("blob.png"), "\x00\x01\x02\x03\xff\xfe\x00\x80", 8);
    expect_bad("binary junk", P("blob.png"), "not a JPEG or PNG");
    expect_bad("missing file", P("does-not-exist.jpg"), strerror(ENOENT));
    expect_bad("a directory", DIR, "not a regular file");

    /* Truncated JPEGs (baseline and progressive) and PNG. */
    gen_jpeg_rgb(P("whole.jpg"), w, h, e, 90, 1, 0);
    uint8_t *j = gen_read_file(P("whole.jpg"), &n);
    gen_write_file(P("trunc.jpg"), j, n / 2);
    expect_bad("truncated JPEG", P("trunc.jpg"), "truncated");
    gen_write_file(P("trunc_head.jpg"), j, 40);
    expect_bad("JPEG cut inside the header", P("trunc_head.jpg"), "JPEG");
    gen_jpeg_rgb(P("wholep.jpg"), w, h, e, 90, 1, 1);
    uint8_t *jp = gen_read_file(P("wholep.jpg"), &n);
    gen_write_file(P("truncp.jpg"), jp, n * 2 / 3);
    expect_bad("truncated progressive JPEG", P("truncp.jpg"), "truncated");
    free(jp);

    /* Corrupt JPEG: a valid start, then garbage where the frame header goes. */
    uint8_t junk[200];
    memcpy(junk, "\xff\xd8\xff\xc0\x00\x11\x08", 7);
    for (int i = 7; i < 200; i++)
        junk[i] = (uint8_t)(i * 131);
    gen_write_file(P("corrupt.jpg"), junk, sizeof junk);
    expect_bad("corrupt JPEG", P("corrupt.jpg"), "bad JPEG");

    gen_png_rgb(P("whole.png"), w, h, e, 0);
    size_t pn;
    uint8_t *p = gen_read_file(P("whole.png"), &pn);
    gen_write_file(P("trunc.png"), p, pn / 2);
    expect_bad("truncated PNG", P("trunc.png"), "truncated");
    p[20] ^= 0x40;      /* IHDR width byte: the CRC no longer matches */
    gen_write_file(P("badcrc.png"), p, pn);
    expect_bad("PNG with a bad header CRC", P("badcrc.png"), "bad PNG");

    /* Decompression bombs: headers claiming 60000x60000 (3.6 G pixels). */
    p[20] ^= 0x40;
    put_be32(p + 16, 60000), put_be32(p + 20, 60000);
    put_be32(p + 29, gen_crc32(p + 12, 17));
    gen_write_file(P("bomb.png"), p, pn);
    expect_bad("PNG bomb header", P("bomb.png"), "too large");
    for (size_t i = 0; i + 8 < n; i++)      /* SOF0: FF C0 len(2) precision(1) height(2) width(2) */
        if (j[i] == 0xff && j[i + 1] == 0xc0) {
            j[i + 5] = 0xea, j[i + 6] = 0x60, j[i + 7] = 0xea, j[i + 8] = 0x60;
            break;
        }
    gen_write_file(P("bomb.jpg"), j, n);
    expect_bad("JPEG bomb header", P("bomb.jpg"), "too large");
    free(j), free(p), free(e);
}

/* Damaged copies of valid files: any outcome but a crash or a wrong status. */
static void test_fuzz(void)
{
    int w = 48, h = 40, bad = 0, ok = 0, refused = 0;
    uint8_t *e = gen_pattern(w, h, 7);
    gen_jpeg_rgb(P("fz.jpg"), w, h, e, 80, 1, 1);
    gen_png_rgb(P("fz.png"), w, h, e, 6);
    const char *src[2] = {"fz.jpg", "fz.png"};
    kt_image img = {0};
    for (int f = 0; f < 2; f++) {
        size_t n;
        uint8_t *orig = gen_read_file(P(src[f]), &n), *buf = malloc(n);
        for (int t = 0; t < 300; t++) {
            memcpy(buf, orig, n);
            size_t len = t % 3 == 0 ? (size_t)((t * 7919u) % n) : n;
            for (int k = 0; k < 1 + t % 4; k++)
                buf[(t * 104729u + (unsigned)k * 7u) % n] ^= (uint8_t)(1u << (t + k) % 8);
            kt_err err = {0};
            kt_status st = kt_image_decode(&img, buf, len, "fuzz", &err);
            if (st == KT_OK)
                ok += img.w * img.h > 0;
            else if (st == KT_ERR_DATA && !strncmp(err.msg, "fuzz: ", 6))
                refused++;
            else
                bad++;
        }
        free(orig), free(buf);
    }
    CHECK(bad == 0, "600 damaged files decode or are refused as data errors (%d decoded, %d "
          "refused, %d wrong)", ok, refused, bad);
    kt_image_free(&img);
    free(e);
}

/* A decoder image is reused: a smaller image after a larger keeps the buffer. */
static void test_reuse(void)
{
    uint8_t *a = gen_pattern(120, 90, 8), *b = gen_pattern(30, 20, 9);
    gen_png_rgb(P("reuse_a.png"), 120, 90, a, 0);
    gen_png_rgb(P("reuse_b.png"), 30, 20, b, 0);
    kt_image img = {0};
    kt_err err;
    kt_image_load(&img, P("reuse_a.png"), &err);
    uint8_t *first = img.rgb;
    kt_status st = kt_image_load(&img, P("reuse_b.png"), &err);
    CHECK(st == KT_OK && img.rgb == first && img.w == 30 && img.h == 20 &&
              !memcmp(img.rgb, b, 30 * 20 * 3),
          "decoding a smaller image reuses the buffer");
    kt_image_free(&img);
    kt_image_free(NULL);
    CHECK(img.rgb == NULL && img.cap == 0, "kt_image_free resets the image");
    free(a), free(b);
}

int main(void)
{
    mkdir("test/out", 0777);
    mkdir(DIR, 0777);
    test_png();
    test_jpeg();
    test_roi();
    test_exif();
    test_bad();
    test_fuzz();
    test_reuse();
    TEST_EXIT();
}
