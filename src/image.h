/* image.h - decoding PNG and JPEG files into 8-bit RGB; the only user of png.h
 * and jpeglib.h.
 *
 * What comes out, whatever went in:
 *   - The format is sniffed from the first bytes, never from the name. JPEG and
 *     PNG are decoded; GIF, WebP, BMP, TIFF, HEIF, empty, text and anything else
 *     is KT_ERR_DATA "unsupported image format (GIF)" etc.
 *   - JPEG: libjpeg-turbo defaults (JDCT_ISLOW, fancy upsampling), so the pixels
 *     equal Pillow's and djpeg's. Grayscale is copied into R, G and B. CMYK and
 *     YCCK are converted to RGB with Pillow's formula, the samples always taken
 *     as inverted (Adobe/Photoshop's convention), as Pillow does.
 *   - PNG: every colour type and bit depth, Adam7 interlacing. 16-bit samples
 *     keep their high byte (v >> 8, what Pillow does for RGB;16; equal to v/257
 *     for samples written as v8 * 257): scaled, never clipped. Sub-byte gray is
 *     scaled to 0..255. Gamma and ICC profiles are ignored, as Pillow ignores them.
 *   - Alpha (RGBA, gray+alpha, palette tRNS) is DROPPED: the stored colour is
 *     kept under transparent pixels, as Pillow's convert("RGB") does.
 *   - The EXIF orientation (JPEG APP1, PNG eXIf) is applied, all 8 values, so
 *     the image comes out upright (as PIL's ImageOps.exif_transpose; note that
 *     torchvision's default loader does not do this).
 *   - Images over KT_IMAGE_MAX_PIXELS are refused from the header, before any
 *     pixel memory is allocated (decompression bombs).
 *   - Every error (libjpeg/libpng ones are caught here) is KT_ERR_DATA with a
 *     message starting with the file name: "photos/x.jpg: truncated JPEG data".
 *     Out of memory is KT_ERR_RUNTIME.
 */
#ifndef KT_IMAGE_H
#define KT_IMAGE_H

#include <stddef.h>
#include <stdint.h>

#include "err.h"

/* Refuse images with more pixels than this (~ Pillow's MAX_IMAGE_PIXELS). */
#define KT_IMAGE_MAX_PIXELS 89478485L

/* An upright RGB image, or a window of one (see kt_image_opts.roi).
 * Zero-initialise before first use; decoding into a used image reuses (and if
 * needed grows) its buffer, so a worker decoding many images allocates rarely.
 * Owns rgb; kt_image_free releases it. */
typedef struct {
    int w, h;               /* size of the pixels held in rgb */
    uint8_t *rgb;           /* [h][w][3] */
    /* The window rgb holds inside the whole upright image: columns x0..x0+w-1,
     * rows y0..y0+h-1 of a full_w x full_h image. A full decode has x0 = y0 = 0,
     * full_w = w, full_h = h. With DCT scaling, full_w/full_h are the scaled size. */
    int x0, y0, full_w, full_h;
    int src_w, src_h;       /* upright size as stored in the file, before any DCT scaling */
    size_t cap;             /* bytes allocated in rgb */
} kt_image;

typedef struct {
    /* > 0 allows the JPEG fast path: decode with DCT scaling (1/2, 1/4, 1/8)
     * while the scaled shorter side stays >= dct_min_short. The pixels then
     * differ from a full decode followed by the same resize (not for the
     * exact evaluation path). 0: never scale. */
    int dct_min_short;
    /* Optional region of interest in upright, unscaled image coordinates
     * [x0, x1) x [y0, y1); all zero = whole image. The decoder may return a
     * larger window (JPEG iMCU alignment, or the whole image); it always holds
     * the region, with exactly the pixels a full decode would give. Ignored
     * (whole image) when dct_min_short scales the image. Rows below the region
     * are never decoded, so a file truncated there is not noticed. */
    int roi_x0, roi_y0, roi_x1, roi_y1;
} kt_image_opts;

/* Basic facts read from the header only (cheap). w, h are upright (EXIF
 * applied). format is "JPEG" or "PNG". */
typedef struct {
    int w, h;
    int orientation;        /* EXIF 1..8, 1 when absent */
    const char *format;
} kt_image_info;

/* Reads and decodes the whole file at path, exactly (no DCT scaling). */
kt_status kt_image_load(kt_image *img, const char *path, kt_err *err);
/* Decodes n bytes of buf exactly; name is used in error messages. */
kt_status kt_image_decode(kt_image *img, const uint8_t *buf, size_t n, const char *name, kt_err *err);
/* Same with options (opts NULL = the above). */
kt_status kt_image_load_ex(kt_image *img, const char *path, const kt_image_opts *opts, kt_err *err);
kt_status kt_image_decode_ex(kt_image *img, const uint8_t *buf, size_t n, const char *name,
                             const kt_image_opts *opts, kt_err *err);
/* Header facts without decoding pixels; same errors as decode for bad headers. */
kt_status kt_image_probe(kt_image_info *info, const uint8_t *buf, size_t n, const char *name,
                         kt_err *err);
/* Reads a whole file into *buf (grown with realloc as needed, *cap its size),
 * *n = bytes read. Errors name the file (KT_ERR_DATA). */
kt_status kt_image_read_file(uint8_t **buf, size_t *cap, size_t *n, const char *path, kt_err *err);
/* Name of the format sniffed from the bytes: "JPEG", "PNG", "GIF", "WebP",
 * "BMP", "TIFF", "HEIF", "empty", or NULL when unknown. */
const char *kt_image_sniff(const uint8_t *buf, size_t n);
void kt_image_free(kt_image *img);

#endif
