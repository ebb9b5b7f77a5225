/* gen_images.h - writes the test images the image, transform, dataset and
 * loader tests decode: PNG of every colour type and bit depth, JPEG in gray,
 * RGB, CMYK/YCCK, baseline and progressive, with EXIF orientations, and
 * broken files. Header-only (static functions) because each test program is
 * built from one .c file. Tests may include png.h/jpeglib.h to make fixtures;
 * kt's own code decodes only through src/image.c.
 */
#ifndef KT_GEN_IMAGES_H
#define KT_GEN_IMAGES_H

#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <jpeglib.h>
#include <png.h>

/* Each test uses a few of these. */
#define GEN static __attribute__((unused))

/* Deterministic smooth-ish RGB content with edges: gradients plus a few
 * rectangles, so resizing and JPEG both have something to work on. */
GEN uint8_t *gen_pattern(int w, int h, unsigned seed)
{
    uint8_t *p = malloc((size_t)w * h * 3);
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++) {
            uint8_t *q = p + ((size_t)y * w + x) * 3;
            q[0] = (uint8_t)(x * 255 / (w > 1 ? w - 1 : 1));
            q[1] = (uint8_t)(y * 255 / (h > 1 ? h - 1 : 1));
            q[2] = (uint8_t)((x * 3 + y * 5 + seed * 40) & 255);
            if ((x / 16 + y / 16 + seed) % 5 == 0)
                q[0] = (uint8_t)(255 - q[0]), q[2] = (uint8_t)(q[2] ^ 0x55);
        }
    return p;
}

/* Flat colour blocks aligned to 16x16 JPEG MCUs: JPEG at quality 100 keeps
 * them within a unit or two, so decoded values can be checked tightly. */
GEN uint8_t *gen_blocks(int w, int h, unsigned seed)
{
    uint8_t *p = malloc((size_t)w * h * 3);
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++) {
            unsigned b = (unsigned)(x / 16) * 7u + (unsigned)(y / 16) * 13u + seed * 31u;
            uint8_t *q = p + ((size_t)y * w + x) * 3;
            q[0] = (uint8_t)(b * 37u % 224u + 16u);
            q[1] = (uint8_t)(b * 91u % 224u + 16u);
            q[2] = (uint8_t)(b * 53u % 224u + 16u);
        }
    return p;
}

GEN int gen_write_file(const char *path, const void *p, size_t n)
{
    FILE *f = fopen(path, "wb");
    if (!f)
        return -1;
    size_t w = fwrite(p, 1, n, f);
    return fclose(f) == 0 && w == n ? 0 : -1;
}

GEN uint8_t *gen_read_file(const char *path, size_t *n)
{
    FILE *f = fopen(path, "rb");
    *n = 0;
    if (!f)
        return NULL;
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *p = malloc(len > 0 ? (size_t)len : 1);
    *n = fread(p, 1, (size_t)(len > 0 ? len : 0), f);
    fclose(f);
    return p;
}

/* CRC-32 as PNG chunks use it (for hand-made chunks). */
GEN uint32_t gen_crc32(const uint8_t *p, size_t n)
{
    uint32_t c = 0xffffffffu;
    for (size_t i = 0; i < n; i++) {
        c ^= p[i];
        for (int k = 0; k < 8; k++)
            c = c & 1 ? 0xedb88320u ^ (c >> 1) : c >> 1;
    }
    return c ^ 0xffffffffu;
}

/* A minimal big-endian TIFF/EXIF block with one IFD0 entry: Orientation. */
GEN size_t gen_exif(uint8_t *out, int orientation, int with_header)
{
    static const uint8_t tiff[] = {'M', 'M', 0, 42, 0, 0, 0, 8, 0, 1, 0x01, 0x12, 0, 3, 0, 0, 0, 1,
                                   0, 0, 0, 0, 0, 0, 0, 0};
    size_t n = 0;
    if (with_header)
        memcpy(out, "Exif\0\0", 6), n = 6;
    memcpy(out + n, tiff, sizeof tiff);
    out[n + 19] = (uint8_t)orientation;     /* SHORT value, big-endian, left-justified */
    return n + sizeof tiff;
}

/* --- PNG ---------------------------------------------------------------------- */

typedef struct {
    int color_type, depth, interlace;
    const png_color *palette;
    int npalette;
    const uint8_t *trns;    /* palette alpha values */
    int ntrns;
    int orientation;        /* 0: no eXIf chunk */
} gen_png_opts;

/* rows: raw PNG sample data, packed as libpng expects for color_type/depth
 * (16-bit samples big-endian). */
GEN int gen_png(const char *path, int w, int h, const uint8_t *data, size_t rowbytes,
                   const gen_png_opts *o)
{
    FILE *f = fopen(path, "wb");
    if (!f)
        return -1;
    png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, NULL, NULL, NULL);
    png_infop info = png_create_info_struct(png);
    png_bytep *rows = malloc(sizeof *rows * (size_t)h);
    if (setjmp(png_jmpbuf(png))) {
        png_destroy_write_struct(&png, &info);
        free(rows);
        fclose(f);
        return -1;
    }
    png_init_io(png, f);
    png_set_IHDR(png, info, (png_uint_32)w, (png_uint_32)h, o->depth, o->color_type,
                 o->interlace ? PNG_INTERLACE_ADAM7 : PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT,
                 PNG_FILTER_TYPE_DEFAULT);
    if (o->palette)
        png_set_PLTE(png, info, o->palette, o->npalette);
    if (o->trns)
        png_set_tRNS(png, info, o->trns, o->ntrns, NULL);
    uint8_t exif[64];
    if (o->orientation)
        png_set_eXIf_1(png, info, (png_uint_32)gen_exif(exif, o->orientation, 0), exif);
    png_write_info(png, info);
    for (int y = 0; y < h; y++)
        rows[y] = (png_bytep)(data + (size_t)y * rowbytes);
    png_write_image(png, rows);
    png_write_end(png, info);
    png_destroy_write_struct(&png, &info);
    free(rows);
    return fclose(f);
}

GEN int gen_png_rgb(const char *path, int w, int h, const uint8_t *rgb, int orientation)
{
    gen_png_opts o = {PNG_COLOR_TYPE_RGB, 8, 0, NULL, 0, NULL, 0, orientation};
    return gen_png(path, w, h, rgb, (size_t)w * 3, &o);
}

/* --- JPEG --------------------------------------------------------------------- */

typedef struct {
    int components;         /* 1 gray, 3 RGB, 4 CMYK (data given as stored, Adobe-inverted) */
    int ycck;               /* 4 components: encode as YCCK instead of plain CMYK */
    int quality;
    int progressive;
    int subsample;          /* 1: 4:2:0, 0: 4:4:4 */
    int orientation;        /* 0: no EXIF */
} gen_jpeg_opts;

GEN int gen_jpeg(const char *path, int w, int h, const uint8_t *data, const gen_jpeg_opts *o)
{
    struct jpeg_compress_struct c;
    struct jpeg_error_mgr e;
    FILE *f = fopen(path, "wb");
    if (!f)
        return -1;
    c.err = jpeg_std_error(&e);     /* errors exit: fine for a fixture writer */
    jpeg_create_compress(&c);
    jpeg_stdio_dest(&c, f);
    c.image_width = (JDIMENSION)w, c.image_height = (JDIMENSION)h;
    c.input_components = o->components;
    c.in_color_space = o->components == 1 ? JCS_GRAYSCALE : o->components == 3 ? JCS_RGB : JCS_CMYK;
    jpeg_set_defaults(&c);
    if (o->components == 4)
        jpeg_set_colorspace(&c, o->ycck ? JCS_YCCK : JCS_CMYK);
    jpeg_set_quality(&c, o->quality, TRUE);
    if (o->progressive)
        jpeg_simple_progression(&c);
    for (int i = 0; i < c.num_components; i++)
        c.comp_info[i].h_samp_factor = c.comp_info[i].v_samp_factor = 1;
    if (o->subsample && c.num_components >= 3)
        c.comp_info[0].h_samp_factor = c.comp_info[0].v_samp_factor = 2;
    jpeg_start_compress(&c, TRUE);
    if (o->orientation) {
        uint8_t exif[64];
        jpeg_write_marker(&c, JPEG_APP0 + 1, exif, (unsigned)gen_exif(exif, o->orientation, 1));
    }
    while (c.next_scanline < c.image_height) {
        JSAMPROW r = (JSAMPROW)(data + (size_t)c.next_scanline * w * o->components);
        jpeg_write_scanlines(&c, &r, 1);
    }
    jpeg_finish_compress(&c);
    jpeg_destroy_compress(&c);
    return fclose(f);
}

GEN int gen_jpeg_rgb(const char *path, int w, int h, const uint8_t *rgb, int quality,
                        int subsample, int progressive)
{
    gen_jpeg_opts o = {3, 0, quality, progressive, subsample, 0};
    return gen_jpeg(path, w, h, rgb, &o);
}

/* Pixel (x, y) of the upright image shows stored pixel store_of(...) under EXIF
 * orientation o: the test's own statement of the 8 cases (TIFF 6.0 /
 * EXIF 2.3 semantics), written as where each STORED pixel is displayed. */
GEN void gen_display_pos(int o, int sx, int sy, int sw, int sh, int *ux, int *uy)
{
    switch (o) {
    case 2: *ux = sw - 1 - sx, *uy = sy; break;              /* mirrored */
    case 3: *ux = sw - 1 - sx, *uy = sh - 1 - sy; break;     /* upside down */
    case 4: *ux = sx, *uy = sh - 1 - sy; break;              /* flipped vertically */
    case 5: *ux = sy, *uy = sx; break;                       /* transposed */
    case 6: *ux = sh - 1 - sy, *uy = sx; break;              /* needs 90 deg clockwise */
    case 7: *ux = sh - 1 - sy, *uy = sw - 1 - sx; break;     /* transverse */
    case 8: *ux = sy, *uy = sw - 1 - sx; break;              /* needs 90 deg counter-clockwise */
    default: *ux = sx, *uy = sy; break;
    }
}

/* The stored pixels (sw x sh) that display as the upright image up (uw x uh)
 * under orientation o. */
GEN uint8_t *gen_stored_for(const uint8_t *up, int uw, int uh, int o, int *sw, int *sh)
{
    *sw = o >= 5 ? uh : uw, *sh = o >= 5 ? uw : uh;
    uint8_t *s = malloc((size_t)uw * uh * 3);
    for (int y = 0; y < *sh; y++)
        for (int x = 0; x < *sw; x++) {
            int ux, uy;
            gen_display_pos(o, x, y, *sw, *sh, &ux, &uy);
            memcpy(s + ((size_t)y * *sw + x) * 3, up + ((size_t)uy * uw + ux) * 3, 3);
        }
    return s;
}

#endif
