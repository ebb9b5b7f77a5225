/* image.c - PNG and JPEG decoding to upright 8-bit RGB (see image.h).
 *
 * libjpeg and libpng report fatal errors by calling an error hook that must
 * not return; both hooks here format the message and longjmp back into the
 * decode function, which then frees what the library allocated. Everything a
 * decode function touches after its setjmp lives in a context struct or is
 * volatile, so its value survives the longjmp.
 *
 * Region-of-interest decoding (JPEG only, orientation 1) uses libjpeg-turbo's
 * jpeg_crop_scanline and jpeg_skip_scanlines. Both are exact inside the window
 * they decode, except on its cut edges, where fancy upsampling sees
 * replicated instead of real neighbours (one pixel wide, measured). The
 * window gets a margin of ROI_MARGIN pixels around the requested region, half
 * of which is cut off again, and the tests compare region and full decodes
 * pixel for pixel.
 */
#include "image.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jerror.h>
#include <jpeglib.h>
#include <png.h>

enum { ROI_MARGIN = 16 };

/* Files larger than this are refused before reading (no image kt reads needs it). */
#define MAX_FILE_BYTES ((size_t)1 << 30)

const char *kt_image_sniff(const uint8_t *b, size_t n)
{
    if (n == 0)
        return "empty";
    if (n >= 3 && b[0] == 0xff && b[1] == 0xd8 && b[2] == 0xff)
        return "JPEG";
    if (n >= 8 && !memcmp(b, "\x89PNG\r\n\x1a\n", 8))
        return "PNG";
    if (n >= 6 && (!memcmp(b, "GIF87a", 6) || !memcmp(b, "GIF89a", 6)))
        return "GIF";
    if (n >= 12 && !memcmp(b, "RIFF", 4) && !memcmp(b + 8, "WEBP", 4))
        return "WebP";
    if (n >= 4 && (!memcmp(b, "II*\0", 4) || !memcmp(b, "MM\0*", 4)))
        return "TIFF";
    if (n >= 12 && !memcmp(b + 4, "ftyp", 4)) {
        if (!memcmp(b + 8, "avif", 4))
            return "AVIF";
        if (!memcmp(b + 8, "hei", 3) || !memcmp(b + 8, "mif1", 4) || !memcmp(b + 8, "msf1", 4))
            return "HEIF";
    }
    if (n >= 2 && b[0] == 'B' && b[1] == 'M')
        return "BMP";
    if (n >= 4 && !memcmp(b, "%PDF", 4))
        return "PDF";
    if (n >= 2 && b[0] == 0xff && b[1] == 0xd8)
        return "JPEG";      /* a damaged JPEG; let the decoder say what is wrong */
    return NULL;
}

/* Why a file that is not JPEG/PNG was refused. */
static kt_status unsupported(const uint8_t *b, size_t n, const char *name, kt_err *err)
{
    const char *f = kt_image_sniff(b, n);
    if (f && !strcmp(f, "empty"))
        return kt_err_set(err, KT_ERR_DATA, "%s: empty file", name);
    if (f)
        return kt_err_set(err, KT_ERR_DATA,
                          "%s: unsupported image format (%s); kt reads JPEG and PNG", name, f);
    size_t m = n < 512 ? n : 512, text = 0;
    for (size_t i = 0; i < m; i++)
        text += (b[i] >= 0x20 && b[i] < 0x7f) || b[i] == '\n' || b[i] == '\r' || b[i] == '\t';
    if (text == m)
        return kt_err_set(err, KT_ERR_DATA, "%s: not an image (looks like text)", name);
    return kt_err_set(err, KT_ERR_DATA, "%s: not a JPEG or PNG image (unknown format)", name);
}

static kt_status reserve(kt_image *img, size_t bytes, const char *name, kt_err *err)
{
    if (bytes <= img->cap)
        return KT_OK;
    uint8_t *p = realloc(img->rgb, bytes);
    if (!p)
        return kt_err_set(err, KT_ERR_RUNTIME, "%s: out of memory for %zu bytes of pixels", name,
                          bytes);
    img->rgb = p;
    img->cap = bytes;
    return KT_OK;
}

void kt_image_free(kt_image *img)
{
    if (!img)
        return;
    free(img->rgb);
    memset(img, 0, sizeof *img);
}

/* --- EXIF ---------------------------------------------------------------------- */

static unsigned rd16(const uint8_t *p, int le)
{
    return le ? (unsigned)(p[0] | p[1] << 8) : (unsigned)(p[0] << 8 | p[1]);
}

static uint32_t rd32(const uint8_t *p, int le)
{
    return le ? (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24
              : (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | (uint32_t)p[3];
}

/* Orientation tag (0x0112) of IFD0 in a TIFF-structured EXIF block; 1 when
 * absent or malformed (a broken EXIF block must not make a good image bad). */
static int exif_orientation(const uint8_t *p, size_t n)
{
    if (n >= 6 && !memcmp(p, "Exif\0\0", 6))
        p += 6, n -= 6;
    if (n < 8)
        return 1;
    int le;
    if (!memcmp(p, "II*\0", 4))
        le = 1;
    else if (!memcmp(p, "MM\0*", 4))
        le = 0;
    else
        return 1;
    uint32_t ifd = rd32(p + 4, le);
    if (ifd > n - 2)
        return 1;
    unsigned count = rd16(p + ifd, le);
    for (unsigned i = 0; i < count; i++) {
        size_t e = (size_t)ifd + 2 + (size_t)i * 12;
        if (e + 12 > n)
            return 1;
        if (rd16(p + e, le) != 0x0112)
            continue;
        unsigned type = rd16(p + e + 2, le), v;
        if (type == 3)          /* SHORT, stored left-justified in the value field */
            v = rd16(p + e + 8, le);
        else if (type == 4)     /* LONG, seen from some writers */
            v = rd32(p + e + 8, le);
        else
            return 1;
        return v >= 1 && v <= 8 ? (int)v : 1;
    }
    return 1;
}

/* Writes the upright version of src (sw x sh, stored orientation o) to dst. */
static void orient(uint8_t *dst, const uint8_t *src, int sw, int sh, int o)
{
    ptrdiff_t row = 3 * (ptrdiff_t)sw, base, sx, sy;
    ptrdiff_t lastc = 3 * (ptrdiff_t)(sw - 1), lastr = row * (sh - 1);
    int uw = o >= 5 ? sh : sw, uh = o >= 5 ? sw : sh;

    /* Upright pixel (x, y) reads src[base + x*sx + y*sy]. */
    switch (o) {
    case 2: base = lastc, sx = -3, sy = row; break;
    case 3: base = lastr + lastc, sx = -3, sy = -row; break;
    case 4: base = lastr, sx = 3, sy = -row; break;
    case 5: base = 0, sx = row, sy = 3; break;
    case 6: base = lastr, sx = -row, sy = 3; break;
    case 7: base = lastr + lastc, sx = -row, sy = -3; break;
    case 8: base = lastc, sx = row, sy = -3; break;
    default: base = 0, sx = 3, sy = row; break;
    }
    for (int y = 0; y < uh; y++) {
        const uint8_t *s = src + base + y * sy;
        for (int x = 0; x < uw; x++, s += sx, dst += 3)
            dst[0] = s[0], dst[1] = s[1], dst[2] = s[2];
    }
}

/* Moves img's stored-orientation pixels upright (needs a second buffer). */
static kt_status apply_orientation(kt_image *img, int o, const char *name, kt_err *err)
{
    if (o == 1)
        return KT_OK;
    size_t bytes = (size_t)img->w * img->h * 3;
    uint8_t *up = malloc(bytes ? bytes : 1);
    if (!up)
        return kt_err_set(err, KT_ERR_RUNTIME, "%s: out of memory rotating the image", name);
    orient(up, img->rgb, img->w, img->h, o);
    free(img->rgb);
    img->rgb = up;
    img->cap = bytes;
    if (o >= 5) {
        int t = img->w;
        img->w = img->h, img->h = t;
    }
    return KT_OK;
}

static void set_whole(kt_image *img)
{
    img->x0 = img->y0 = 0;
    img->full_w = img->w, img->full_h = img->h;
}

static kt_status check_size(long w, long h, const char *name, kt_err *err)
{
    if (w <= 0 || h <= 0)
        return kt_err_set(err, KT_ERR_DATA, "%s: image has no pixels (%ldx%ld)", name, w, h);
    if (w * h > KT_IMAGE_MAX_PIXELS)
        return kt_err_set(err, KT_ERR_DATA,
                          "%s: image too large (%ldx%ld = %ld pixels, limit %ld): refused",
                          name, w, h, w * h, (long)KT_IMAGE_MAX_PIXELS);
    return KT_OK;
}

/* --- JPEG ---------------------------------------------------------------------- */

typedef struct {
    struct jpeg_error_mgr pub;
    jmp_buf jb;
    char msg[JMSG_LENGTH_MAX];
    int truncated;
} jpeg_errmgr;

static void jpeg_on_error(j_common_ptr c)
{
    jpeg_errmgr *e = (jpeg_errmgr *)c->err;
    c->err->format_message(c, e->msg);
    longjmp(e->jb, 1);
}

/* Warnings are ignored (Pillow ignores them too: "extraneous bytes before
 * marker" is common in good photos), except running out of data, which
 * libjpeg papers over with grey rows: that is a truncated file. */
static void jpeg_on_message(j_common_ptr c, int level)
{
    jpeg_errmgr *e = (jpeg_errmgr *)c->err;
    if (level < 0 && c->err->msg_code == JWRN_JPEG_EOF)
        e->truncated = 1;
}

/* Pillow's CMYK -> RGB (Convert.c cmyk2rgb) on inverted (Adobe) samples:
 * with C = 255 - c etc., R = (255-K) - round((255-K) * C / 255). */
static void cmyk_row(uint8_t *rgb, const uint8_t *cmyk, int w)
{
    for (int x = 0; x < w; x++, rgb += 3, cmyk += 4) {
        int nk = cmyk[3];       /* 255 - K with K = 255 - stored */
        for (int c = 0; c < 3; c++) {
            int t = (255 - cmyk[c]) * nk + 128;
            int v = nk - (((t >> 8) + t) >> 8);
            rgb[c] = (uint8_t)(v < 0 ? 0 : v);
        }
    }
}

typedef struct {
    struct jpeg_decompress_struct d;
    jpeg_errmgr e;
    uint8_t *row;           /* CMYK row scratch */
} jpeg_ctx;

static int jpeg_orientation(j_decompress_ptr d)
{
    for (jpeg_saved_marker_ptr m = d->marker_list; m; m = m->next)
        if (m->marker == JPEG_APP0 + 1 && m->data_length >= 6 && !memcmp(m->data, "Exif\0\0", 6))
            return exif_orientation(m->data, m->data_length);
    return 1;
}

/* Decodes (or with info != NULL only probes) a JPEG. */
static kt_status jpeg_run(jpeg_ctx *c, kt_image *img, kt_image_info *info, const uint8_t *buf,
                          size_t n, const char *name, const kt_image_opts *opts, kt_err *err)
{
    j_decompress_ptr d = &c->d;
    d->err = jpeg_std_error(&c->e.pub);
    c->e.pub.error_exit = jpeg_on_error;
    c->e.pub.emit_message = jpeg_on_message;
    if (setjmp(c->e.jb)) {
        if (c->e.truncated)     /* the data ran out first; the error is a consequence */
            return kt_err_set(err, KT_ERR_DATA, "%s: truncated JPEG (%s)", name, c->e.msg);
        return kt_err_set(err, KT_ERR_DATA, "%s: bad JPEG: %s", name, c->e.msg);
    }
    jpeg_create_decompress(d);
    jpeg_mem_src(d, buf, (unsigned long)n);
    jpeg_save_markers(d, JPEG_APP0 + 1, 0xffff);
    jpeg_read_header(d, TRUE);
    if (c->e.truncated)
        return kt_err_set(err, KT_ERR_DATA, "%s: truncated JPEG (ends inside the header)", name);

    int o = jpeg_orientation(d);
    long sw = d->image_width, sh = d->image_height;
    kt_status st = check_size(sw, sh, name, err);
    if (st)
        return st;
    if (info) {
        info->w = (int)(o >= 5 ? sh : sw);
        info->h = (int)(o >= 5 ? sw : sh);
        info->orientation = o;
        info->format = "JPEG";
        return KT_OK;
    }

    int cmyk = d->jpeg_color_space == JCS_CMYK || d->jpeg_color_space == JCS_YCCK;
    d->out_color_space = cmyk ? JCS_CMYK : JCS_RGB;
    int denom = 1;
    if (opts && opts->dct_min_short > 0) {
        long s = sw < sh ? sw : sh;
        for (denom = 8; denom > 1; denom /= 2)
            if ((s + denom - 1) / denom >= opts->dct_min_short)
                break;
        d->scale_num = 1;
        d->scale_denom = (unsigned)denom;
    }
    jpeg_start_decompress(d);
    if (c->e.truncated)     /* progressive files are read whole by start_decompress */
        return kt_err_set(err, KT_ERR_DATA, "%s: truncated JPEG (data ends early)", name);
    int w = (int)d->output_width, h = (int)d->output_height;
    int fw = w, fh = h;

    /* Window: [x0, x0+w) x [y0, y0+h) of the (unrotated) image. */
    int x0 = 0, y0 = 0, y1 = h;
    if (opts && denom == 1 && o == 1 && opts->roi_x1 > opts->roi_x0 && opts->roi_y1 > opts->roi_y0) {
        int rx0 = opts->roi_x0 - ROI_MARGIN, rx1 = opts->roi_x1 + ROI_MARGIN;
        rx0 = rx0 < 0 ? 0 : rx0;
        rx1 = rx1 > w ? w : rx1;
        y0 = opts->roi_y0 - ROI_MARGIN;
        y0 = y0 < 0 ? 0 : y0;
        y1 = opts->roi_y1 + ROI_MARGIN;
        y1 = y1 > h ? h : y1;
        if (rx0 > 0 || rx1 < w) {
            JDIMENSION xo = (JDIMENSION)rx0, cw = (JDIMENSION)(rx1 - rx0);
            jpeg_crop_scanline(d, &xo, &cw);
            x0 = (int)xo;
            w = (int)cw;
        }
        h = y1 - y0;
    }
    if ((st = reserve(img, (size_t)w * h * 3, name, err)))
        return st;
    if (cmyk && !(c->row = malloc((size_t)w * 4)))
        return kt_err_set(err, KT_ERR_RUNTIME, "%s: out of memory", name);
    if (y0 > 0)
        jpeg_skip_scanlines(d, (JDIMENSION)y0);
    while ((int)d->output_scanline < y1) {
        uint8_t *dst = img->rgb + (size_t)((int)d->output_scanline - y0) * w * 3;
        if (cmyk) {
            JSAMPROW r = c->row;
            jpeg_read_scanlines(d, &r, 1);
            cmyk_row(dst, c->row, w);
        } else {
            JSAMPROW rows[8];
            int k = 0;
            for (; k < 8 && (int)d->output_scanline + k < y1; k++)
                rows[k] = dst + (size_t)k * w * 3;
            jpeg_read_scanlines(d, rows, (JDIMENSION)k);
        }
        if (c->e.truncated)
            return kt_err_set(err, KT_ERR_DATA, "%s: truncated JPEG (data ends early)", name);
    }
    if (y1 == fh) {         /* else the rest is never decoded: truncation there goes unseen */
        jpeg_finish_decompress(d);
        if (c->e.truncated)
            return kt_err_set(err, KT_ERR_DATA, "%s: truncated JPEG", name);
    }
    /* Drop the outer half of the margin on each side that is not an image
     * edge: there the upsampler saw a cut instead of neighbours. */
    int tl = x0 > 0 ? ROI_MARGIN / 2 : 0, tr = x0 + w < fw ? ROI_MARGIN / 2 : 0;
    int tt = y0 > 0 ? ROI_MARGIN / 2 : 0, tb = y1 < fh ? ROI_MARGIN / 2 : 0;
    if (tl + tr > 0 || tt + tb > 0) {
        int nw = w - tl - tr, nh = h - tt - tb;
        for (int y = 0; y < nh; y++)
            memmove(img->rgb + (size_t)y * nw * 3, img->rgb + ((size_t)(y + tt) * w + tl) * 3,
                    (size_t)nw * 3);
        x0 += tl, y0 += tt, w = nw, h = nh;
    }
    img->w = w, img->h = h;
    img->x0 = x0, img->y0 = y0;
    img->full_w = fw, img->full_h = fh;
    img->src_w = (int)(o >= 5 ? sh : sw);
    img->src_h = (int)(o >= 5 ? sw : sh);
    if (o != 1) {
        if ((st = apply_orientation(img, o, name, err)))
            return st;
        set_whole(img);
    }
    return KT_OK;
}

static kt_status jpeg_decode(kt_image *img, kt_image_info *info, const uint8_t *buf, size_t n,
                             const char *name, const kt_image_opts *opts, kt_err *err)
{
    jpeg_ctx *c = calloc(1, sizeof *c);
    if (!c)
        return kt_err_set(err, KT_ERR_RUNTIME, "%s: out of memory", name);
    kt_status st = jpeg_run(c, img, info, buf, n, name, opts, err);
    jpeg_destroy_decompress(&c->d);
    free(c->row);
    free(c);
    return st;
}

/* --- PNG ----------------------------------------------------------------------- */

typedef struct {
    png_structp png;
    png_infop info;
    const uint8_t *buf;
    size_t n, pos;
    char msg[256];
    png_bytep *rows;
} png_ctx;

static void png_on_error(png_structp png, png_const_charp msg)
{
    png_ctx *c = png_get_error_ptr(png);
    snprintf(c->msg, sizeof c->msg, "%s", msg);
    png_longjmp(png, 1);
}

static void png_on_warning(png_structp png, png_const_charp msg)
{
    (void)png, (void)msg;   /* ancillary-chunk trouble (bad iCCP, CRC): Pillow ignores it too */
}

static void png_read_mem(png_structp png, png_bytep out, size_t len)
{
    png_ctx *c = png_get_io_ptr(png);
    if (len > c->n - c->pos)
        png_error(png, "truncated PNG data");
    memcpy(out, c->buf + c->pos, len);
    c->pos += len;
}

static kt_status png_run(png_ctx *c, kt_image *img, kt_image_info *info, const char *name,
                         kt_err *err)
{
    c->png = png_create_read_struct(PNG_LIBPNG_VER_STRING, c, png_on_error, png_on_warning);
    if (!c->png || !(c->info = png_create_info_struct(c->png)))
        return kt_err_set(err, KT_ERR_RUNTIME, "%s: out of memory", name);
    if (setjmp(png_jmpbuf(c->png)))
        return kt_err_set(err, KT_ERR_DATA, "%s: bad PNG: %s", name, c->msg);
    png_set_read_fn(c->png, c, png_read_mem);
    png_read_info(c->png, c->info);

    png_uint_32 w = png_get_image_width(c->png, c->info), h = png_get_image_height(c->png, c->info);
    kt_status st = check_size((long)w, (long)h, name, err);
    if (st)
        return st;
    int o = 1;
#ifdef PNG_eXIf_SUPPORTED
    png_bytep exif = NULL;
    png_uint_32 nexif = 0;
    if (png_get_eXIf_1(c->png, c->info, &nexif, &exif) && exif)
        o = exif_orientation(exif, nexif);
#endif
    if (info) {
        info->w = (int)(o >= 5 ? h : w);
        info->h = (int)(o >= 5 ? w : h);
        info->orientation = o;
        info->format = "PNG";
        return KT_OK;
    }

    int type = png_get_color_type(c->png, c->info), depth = png_get_bit_depth(c->png, c->info);
    if (depth == 16)
        png_set_strip_16(c->png);   /* high byte, as Pillow */
    if (type == PNG_COLOR_TYPE_PALETTE)
        png_set_palette_to_rgb(c->png);
    if ((type & ~PNG_COLOR_MASK_ALPHA) == PNG_COLOR_TYPE_GRAY) {
        if (depth < 8)
            png_set_expand_gray_1_2_4_to_8(c->png);
        png_set_gray_to_rgb(c->png);
    }
    png_set_strip_alpha(c->png);
    png_set_interlace_handling(c->png);
    png_read_update_info(c->png, c->info);
    if (png_get_channels(c->png, c->info) != 3 || png_get_bit_depth(c->png, c->info) != 8)
        return kt_err_set(err, KT_ERR_DATA, "%s: PNG colour type %d depth %d not converted to RGB",
                          name, type, depth);

    if ((st = reserve(img, (size_t)w * h * 3, name, err)))
        return st;
    if (!(c->rows = malloc(h * sizeof *c->rows)))
        return kt_err_set(err, KT_ERR_RUNTIME, "%s: out of memory", name);
    for (png_uint_32 y = 0; y < h; y++)
        c->rows[y] = img->rgb + (size_t)y * w * 3;
    png_read_image(c->png, c->rows);
    /* IEND and trailing chunks are not read: a file cut after the pixel data is
     * still a whole image, as for Pillow. */
    img->w = (int)w, img->h = (int)h;
    img->src_w = (int)(o >= 5 ? h : w);
    img->src_h = (int)(o >= 5 ? w : h);
    if ((st = apply_orientation(img, o, name, err)))
        return st;
    set_whole(img);
    return KT_OK;
}

static kt_status png_decode(kt_image *img, kt_image_info *info, const uint8_t *buf, size_t n,
                            const char *name, kt_err *err)
{
    png_ctx *c = calloc(1, sizeof *c);
    if (!c)
        return kt_err_set(err, KT_ERR_RUNTIME, "%s: out of memory", name);
    c->buf = buf, c->n = n;
    kt_status st = png_run(c, img, info, name, err);
    png_destroy_read_struct(&c->png, c->info ? &c->info : NULL, NULL);
    free(c->rows);
    free(c);
    return st;
}

/* --- entry points ---------------------------------------------------------------- */

static kt_status decode(kt_image *img, kt_image_info *info, const uint8_t *buf, size_t n,
                        const char *name, const kt_image_opts *opts, kt_err *err)
{
    const char *f = kt_image_sniff(buf, n);
    if (f && !strcmp(f, "JPEG"))
        return jpeg_decode(img, info, buf, n, name, opts, err);
    if (f && !strcmp(f, "PNG"))
        return png_decode(img, info, buf, n, name, err);
    return unsupported(buf, n, name, err);
}

kt_status kt_image_decode_ex(kt_image *img, const uint8_t *buf, size_t n, const char *name,
                             const kt_image_opts *opts, kt_err *err)
{
    img->w = img->h = 0;
    return decode(img, NULL, buf, n, name, opts, err);
}

kt_status kt_image_decode(kt_image *img, const uint8_t *buf, size_t n, const char *name, kt_err *err)
{
    return kt_image_decode_ex(img, buf, n, name, NULL, err);
}

kt_status kt_image_probe(kt_image_info *info, const uint8_t *buf, size_t n, const char *name,
                         kt_err *err)
{
    return decode(NULL, info, buf, n, name, NULL, err);
}

kt_status kt_image_read_file(uint8_t **buf, size_t *cap, size_t *n, const char *path, kt_err *err)
{
    struct stat sb;
    kt_status st = KT_OK;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return kt_err_set(err, KT_ERR_DATA, "%s: %s", path, strerror(errno));
    if (fstat(fd, &sb) != 0) {
        st = kt_err_set(err, KT_ERR_DATA, "%s: %s", path, strerror(errno));
        goto fail;
    }
    if (!S_ISREG(sb.st_mode)) {
        st = kt_err_set(err, KT_ERR_DATA, "%s: not a regular file", path);
        goto fail;
    }
    if ((size_t)sb.st_size > MAX_FILE_BYTES) {
        st = kt_err_set(err, KT_ERR_DATA, "%s: file too large for an image (%lld bytes)", path,
                        (long long)sb.st_size);
        goto fail;
    }
    size_t want = (size_t)sb.st_size + 1;   /* +1 to notice a file that grew */
    if (want > *cap) {
        uint8_t *p = realloc(*buf, want);
        if (!p) {
            st = kt_err_set(err, KT_ERR_RUNTIME, "%s: out of memory", path);
            goto fail;
        }
        *buf = p, *cap = want;
    }
    size_t got = 0;
    while (got < *cap) {
        ssize_t r = read(fd, *buf + got, *cap - got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            st = kt_err_set(err, KT_ERR_DATA, "%s: %s", path, strerror(errno));
            goto fail;
        }
        if (r == 0)
            break;
        got += (size_t)r;
    }
    *n = got;
fail:
    close(fd);
    return st;
}

kt_status kt_image_load_ex(kt_image *img, const char *path, const kt_image_opts *opts, kt_err *err)
{
    uint8_t *buf = NULL;
    size_t cap = 0, n = 0;
    kt_status st = kt_image_read_file(&buf, &cap, &n, path, err);
    if (st == KT_OK)
        st = kt_image_decode_ex(img, buf, n, path, opts, err);
    free(buf);
    return st;
}

kt_status kt_image_load(kt_image *img, const char *path, kt_err *err)
{
    return kt_image_load_ex(img, path, NULL, err);
}
