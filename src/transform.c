/* transform.c - resize, crop, flip, jitter and normalise (see transform.h).
 *
 * The resize is Pillow's ImagingResample with the BILINEAR (triangle) filter,
 * reproduced in its integer details because the reference tensors depend on
 * them: per-axis weights computed in double, normalised by their sequential
 * sum, rounded to 22-bit fixed point; the horizontal pass rounds to a uint8
 * temporary before the vertical pass. Nothing here is textbook bilinear.
 *
 * Every output pixel depends only on its own window of input pixels, so the
 * evaluation path computes only the centre crop of the resized image: the
 * horizontal pass over the crop's columns and the input rows the crop's rows
 * need, then the vertical pass. That gives the same bytes as resizing the
 * whole image and cropping, for a fraction of the work (and it lets the
 * decoder skip the rest, see kt_transform_eval_roi).
 */
#include "transform.h"

#include <assert.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "rng.h"

#define PRECISION_BITS 22   /* Pillow: 32 - 8 bits of pixel - 2 bits of headroom */

kt_augment kt_transform_augment_default(void)
{
    kt_augment a = {1, {0.08, 1.0}, {3.0 / 4.0, 4.0 / 3.0}, 1, 0, 0, 0};
    return a;
}

void kt_transform_ws_free(kt_transform_ws *ws)
{
    if (!ws)
        return;
    free(ws->buf);
    free(ws->px);
    memset(ws, 0, sizeof *ws);
}

/* --- geometry ---------------------------------------------------------------- */

void kt_transform_resize_size(int w, int h, int short_side, int *ow, int *oh)
{
    /* torchvision: int(short * long / short_side) with Python's true division,
     * i.e. the correctly rounded double quotient, then truncation. */
    if (w <= h) {
        *ow = short_side;
        *oh = (int)((double)((long long)short_side * h) / w);
    } else {
        *oh = short_side;
        *ow = (int)((double)((long long)short_side * w) / h);
    }
}

/* round(d / 2) with Python's half-to-even rule, d >= 0. */
static int half_even(int d)
{
    int k = d / 2;
    return (d % 2 && k % 2) ? k + 1 : k;
}

void kt_transform_crop_offsets(int w, int h, int crop, int *left, int *top)
{
    *left = half_even(w - crop);
    *top = half_even(h - crop);
}

/* --- Pillow's resampling coefficients -------------------------------------------- */

/* Coefficients of output positions o0 .. o0+n-1 of a resize from in to out
 * samples: start[i] (input index), count[i] taps, k[i*ksize + j] fixed point. */
typedef struct {
    int *start, *count;
    int32_t *k;
    int ksize;
    int taps;               /* every count[i] == taps (see axis_pad), or 0 */
} axis;

static int axis_ksize(int in, int out)
{
    double scale = (double)in / out, fs = scale < 1.0 ? 1.0 : scale;
    return (int)ceil(fs) * 2 + 1;
}

static void axis_init(axis *a, int in, int out, int o0, int n)
{
    double scale = (double)in / out, fs = scale < 1.0 ? 1.0 : scale;
    double support = fs, ss = 1.0 / fs, w[64 * 2 + 1], *wp = w;
    double *heap = NULL;

    if (a->ksize > (int)(sizeof w / sizeof w[0]))
        wp = heap = malloc((size_t)a->ksize * sizeof *heap);   /* only for > 64x downscales */
    for (int i = 0; i < n; i++) {
        double center = (o0 + i + 0.5) * scale, sum = 0.0;
        int xmin = (int)(center - support + 0.5), xmax;
        if (xmin < 0)
            xmin = 0;
        xmax = (int)(center + support + 0.5);
        if (xmax > in)
            xmax = in;
        xmax -= xmin;
        for (int j = 0; j < xmax; j++) {
            double x = ((double)(j + xmin) - center + 0.5) * ss;
            x = x < 0.0 ? -x : x;
            wp[j] = x < 1.0 ? 1.0 - x : 0.0;
            sum += wp[j];
        }
        int32_t *k = a->k + (size_t)i * a->ksize;
        for (int j = 0; j < xmax; j++) {
            double v = sum != 0.0 ? wp[j] / sum : wp[j];
            k[j] = (int32_t)(v < 0 ? -0.5 + v * (1 << PRECISION_BITS)
                                   : 0.5 + v * (1 << PRECISION_BITS));
        }
        for (int j = xmax; j < a->ksize; j++)
            k[j] = 0;
        a->start[i] = xmin;
        a->count[i] = xmax;
    }
    free(heap);
}

/* Gives every output the same number of taps, the largest count, so the
 * passes can run fixed-length loops: shorter windows get zero weights on the
 * right or, where that would reach past the last input any output uses (the
 * region a caller decoded), move left with their weights shifted right.
 * Zero-weight taps add nothing, so the sums are unchanged. */
static void axis_pad(axis *a, int n)
{
    int K = 0, hi = 0;
    for (int i = 0; i < n; i++) {
        K = a->count[i] > K ? a->count[i] : K;
        hi = a->start[i] + a->count[i] > hi ? a->start[i] + a->count[i] : hi;
    }
    for (int i = 0; i < n; i++) {
        int32_t *k = a->k + (size_t)i * a->ksize;
        int shift = a->start[i] + K - hi;
        if (shift > 0) {
            memmove(k + shift, k, (size_t)a->count[i] * sizeof *k);
            for (int j = 0; j < shift; j++)
                k[j] = 0;
            a->start[i] -= shift;
        }
        a->count[i] = K;
    }
    a->taps = K;
}

/* Scratch layout for one resample; sizes in bytes, each part 16-aligned. */
static size_t align16(size_t n)
{
    return (n + 15) & ~(size_t)15;
}

static size_t axis_bytes(int n, int ksize)
{
    return align16((size_t)n * 2 * sizeof(int)) + align16((size_t)n * ksize * sizeof(int32_t));
}

static uint8_t *axis_carve(axis *a, uint8_t *p, int n, int ksize)
{
    a->start = (int *)(void *)p;
    a->count = a->start + n;
    p += align16((size_t)n * 2 * sizeof(int));
    a->k = (int32_t *)(void *)p;
    a->ksize = ksize;
    return p + align16((size_t)n * ksize * sizeof(int32_t));
}

/* Grows *buf to at least bytes (contents not kept); 0 when out of memory. */
static int grow(uint8_t **buf, size_t *cap, size_t bytes)
{
    if (bytes <= *cap)
        return 1;
    uint8_t *p = realloc(*buf, bytes);
    if (!p)
        return 0;
    *buf = p, *cap = bytes;
    return 1;
}

/* A source for resampling: pixel (X, Y) of an image of in_w x in_h lives at
 * px + ((Y - oy) * stride + (X - ox)) * 3. Lets the same code read a decoded
 * window (eval) or a crop box (train) without copying. */
typedef struct {
    const uint8_t *px;
    size_t stride;          /* pixels per row of px */
    int ox, oy;             /* image coordinates of px[0] */
    int in_w, in_h;
    const uint8_t *end;     /* end of the buffer px points into */
} source;

/* Writes the window [x0, x0+cw) x [y0, y0+ch) of the (ow x oh) resize of src
 * to out [ch][cw][3]. Allocation only when ws must grow. */
/* The passes store (acc >> 22) without clamping to 0..255: the triangle
 * filter's weights are all >= 0, so acc >= 0, and each rounds up by at most
 * 1/2, so sum(k) <= 2^22 + taps/2 and acc < 2^21 + 255 * (2^22 + taps/2)
 * < 256 * 2^22 for any tap count below 16000. Pillow's clamp never acts. */

/* One row of the horizontal pass with K taps per output pixel; K is a
 * constant where this is inlined, so the tap loop unrolls. The three
 * channels of a pixel are summed as lanes of one vector (the fourth lane
 * reads the next byte, so the row must not end the buffer: wide = 0 then). */
typedef int32_t v4i __attribute__((vector_size(16)));

static inline __attribute__((always_inline)) void hrow(uint8_t *t, const uint8_t *row,
                                                       const axis *ax, int cw, int K, int wide)
{
    const int32_t *k = ax->k;
    for (int i = 0; i < cw; i++, t += 3, k += ax->ksize) {
        const uint8_t *s = row + (size_t)ax->start[i] * 3;
        if (wide) {
            v4i a = {1 << (PRECISION_BITS - 1), 1 << (PRECISION_BITS - 1), 1 << (PRECISION_BITS - 1), 0};
#pragma GCC unroll 16
            for (int j = 0; j < K; j++) {
                v4i p = {s[3 * j], s[3 * j + 1], s[3 * j + 2], s[3 * j + 3]};
                a += p * k[j];
            }
            a >>= PRECISION_BITS;
            t[0] = (uint8_t)a[0], t[1] = (uint8_t)a[1], t[2] = (uint8_t)a[2];
            continue;
        }
        int32_t a0 = 1 << (PRECISION_BITS - 1), a1 = a0, a2 = a0;
#pragma GCC unroll 16
        for (int j = 0; j < K; j++) {
            a0 += s[3 * j] * k[j];
            a1 += s[3 * j + 1] * k[j];
            a2 += s[3 * j + 2] * k[j];
        }
        t[0] = (uint8_t)(a0 >> PRECISION_BITS);
        t[1] = (uint8_t)(a1 >> PRECISION_BITS);
        t[2] = (uint8_t)(a2 >> PRECISION_BITS);
    }
}

/* One output row of the vertical pass: n bytes from K rows stride apart,
 * in blocks of 16 that the compiler can turn into vector code. */
static inline __attribute__((always_inline)) void vrow(uint8_t *o, const uint8_t *s, size_t stride,
                                                       const int32_t *k, int n, int K)
{
    int x = 0;
    for (; x + 16 <= n; x += 16) {
        int32_t a[16];
        for (int u = 0; u < 16; u++)
            a[u] = 1 << (PRECISION_BITS - 1);
#pragma GCC unroll 16
        for (int j = 0; j < K; j++)
            for (int u = 0; u < 16; u++)
                a[u] += s[(size_t)j * stride + x + u] * k[j];
        for (int u = 0; u < 16; u++)
            o[x + u] = (uint8_t)(a[u] >> PRECISION_BITS);
    }
    for (; x < n; x++) {
        int32_t a = 1 << (PRECISION_BITS - 1);
        for (int j = 0; j < K; j++)
            a += s[(size_t)j * stride + x] * k[j];
        o[x] = (uint8_t)(a >> PRECISION_BITS);
    }
}

/* Dispatch to constant tap counts (the common downscale ratios up to 4x and
 * all upscales), a loop with a variable count otherwise. */
#define BY_TAPS(K, CALL)                                                       \
    switch (K) {                                                               \
    case 2: CALL(2); break;                                                    \
    case 3: CALL(3); break;                                                    \
    case 4: CALL(4); break;                                                    \
    case 5: CALL(5); break;                                                    \
    case 6: CALL(6); break;                                                    \
    case 7: CALL(7); break;                                                    \
    case 8: CALL(8); break;                                                    \
    case 9: CALL(9); break;                                                    \
    default: CALL(K); break;                                                   \
    }

/* AVX2 copies of the passes where the CPU has it (chosen once at load by the
 * dynamic linker): the vertical pass's 32-bit multiplies are single
 * instructions there instead of SSE2's emulation. */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define VECTOR_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define VECTOR_CLONES
#endif

VECTOR_CLONES
static void hpass(uint8_t *tmp, const source *src, const axis *ax, int r0, int r1, int cw)
{
    /* The last byte any pixel of a row reads, relative to the row start. */
    size_t reach = ((size_t)ax->start[cw - 1] + (size_t)ax->taps) * 3;
    for (int y = r0; y < r1; y++) {
        const uint8_t *row = src->px + ((size_t)(y - src->oy) * src->stride - (size_t)src->ox) * 3;
        uint8_t *t = tmp + (size_t)(y - r0) * cw * 3;
        if (row + reach < src->end) {
#define H(K) hrow(t, row, ax, cw, K, 1)
            BY_TAPS(ax->taps, H)
#undef H
        } else {
#define H(K) hrow(t, row, ax, cw, K, 0)
            BY_TAPS(ax->taps, H)
#undef H
        }
    }
}

VECTOR_CLONES
static void vpass(uint8_t *out, const uint8_t *tmp, const axis *ay, int r0, int ch, int cw)
{
    size_t n3 = (size_t)cw * 3;
    for (int y = 0; y < ch; y++) {
        const int32_t *k = ay->k + (size_t)y * ay->ksize;
        const uint8_t *s = tmp + (size_t)(ay->start[y] - r0) * n3;
#define V(K) vrow(out + (size_t)y * n3, s, n3, k, (int)n3, K)
        BY_TAPS(ay->taps, V)
#undef V
    }
}

/* Writes the window [x0, x0+cw) x [y0, y0+ch) of the (ow x oh) resize of src
 * to out [ch][cw][3]. Allocation only when ws must grow. */
static int resample(uint8_t *out, const source *src, int ow, int oh, int x0, int y0, int cw,
                    int ch, kt_transform_ws *ws)
{
    int kx = axis_ksize(src->in_w, ow), ky = axis_ksize(src->in_h, oh);
    size_t need = axis_bytes(cw, kx) + axis_bytes(ch, ky);
    axis ax, ay;

    /* Input rows the vertical pass reads: from the first output row's first
     * tap to the last one's last (axis_init's bounds, which grow with i);
     * padding to equal tap counts can add up to ky rows. */
    double sy = (double)src->in_h / oh, fy = sy < 1.0 ? 1.0 : sy;
    int r0 = (int)((y0 + 0.5) * sy - fy + 0.5), r1 = (int)((y0 + ch - 0.5) * sy + fy + 0.5);
    size_t rows = (size_t)(r1 - r0 + ky);
    if (!grow(&ws->buf, &ws->cap, need + rows * cw * 3))
        return 0;
    uint8_t *p = axis_carve(&ax, ws->buf, cw, kx);
    p = axis_carve(&ay, p, ch, ky);
    uint8_t *tmp = p;
    axis_init(&ax, src->in_w, ow, x0, cw);
    axis_init(&ay, src->in_h, oh, y0, ch);
    axis_pad(&ax, cw);
    axis_pad(&ay, ch);
    r0 = ay.start[0], r1 = 0;
    for (int y = 0; y < ch; y++) {
        r0 = ay.start[y] < r0 ? ay.start[y] : r0;
        r1 = ay.start[y] + ay.taps > r1 ? ay.start[y] + ay.taps : r1;
    }
    assert((size_t)(r1 - r0) <= rows);
    hpass(tmp, src, &ax, r0, r1, cw);
    vpass(out, tmp, &ay, r0, ch, cw);
    return 1;
}

/* --- normalisation ----------------------------------------------------------- */

/* The 256 possible values of each network channel, computed with the exact
 * float32 formula of the reference, so the lookup is bit-exact. */
static void norm_lut(float lut[3][256], const kt_norm *norm)
{
    double inv = 1.0 / norm->scale;
    /* 1/255 is not exact in float: divide by 255.0f as torchvision does. */
    int divide = norm->scale != 1.0f && fabs(inv - nearbyint(inv)) < 1e-3;
    float d = (float)nearbyint(inv);
    for (int c = 0; c < 3; c++)
        for (int v = 0; v < 256; v++) {
            float x = divide ? (float)v / d : (float)v * norm->scale;
            lut[c][v] = (x - norm->mean[c]) / norm->std[c];
        }
}

static void normalize_lut(float *out, size_t cstride, const uint8_t *rgb, size_t n,
                          float lut[3][256], int bgr)
{
    float *p0 = out, *p1 = out + cstride, *p2 = out + 2 * cstride;
    int c0 = bgr ? 2 : 0, c2 = bgr ? 0 : 2;
    for (size_t i = 0; i < n; i++, rgb += 3) {
        p0[i] = lut[0][rgb[c0]];
        p1[i] = lut[1][rgb[1]];
        p2[i] = lut[2][rgb[c2]];
    }
}

void kt_transform_normalize(float *out, size_t cstride, const uint8_t *rgb, size_t n,
                            const kt_norm *norm)
{
    float lut[3][256];
    norm_lut(lut, norm);
    normalize_lut(out, cstride, rgb, n, lut, norm->bgr);
}

/* --- evaluation ---------------------------------------------------------------- */

void kt_transform_eval_roi(int w, int h, int resize, int crop, int *x0, int *y0, int *x1, int *y1)
{
    int ow, oh, left, top;
    kt_transform_resize_size(w, h, resize, &ow, &oh);
    kt_transform_crop_offsets(ow, oh, crop, &left, &top);
    /* Same bounds as axis_init for the first and last crop column/row. */
    double sx = (double)w / ow, sy = (double)h / oh;
    double fx = sx < 1 ? 1 : sx, fy = sy < 1 ? 1 : sy;
    int a = (int)((left + 0.5) * sx - fx + 0.5), b = (int)((left + crop - 0.5) * sx + fx + 0.5);
    int c = (int)((top + 0.5) * sy - fy + 0.5), d = (int)((top + crop - 0.5) * sy + fy + 0.5);
    *x0 = a < 0 ? 0 : a;
    *x1 = b > w ? w : b;
    *y0 = c < 0 ? 0 : c;
    *y1 = d > h ? h : d;
}

static kt_status check_sizes(int resize, int crop, kt_err *err)
{
    if (crop < 1 || resize < crop)
        return kt_err_set(err, KT_ERR_USAGE, "resize %d must be >= the crop size %d >= 1", resize,
                          crop);
    if (crop > 1024)
        return kt_err_set(err, KT_ERR_USAGE, "image size %d too large (at most 1024)", crop);
    return KT_OK;
}

kt_status kt_transform_eval_ws(float *out, size_t cstride, const kt_image *img, int resize,
                               int crop, const kt_norm *norm, kt_transform_ws *ws, kt_err *err)
{
    kt_status st = check_sizes(resize, crop, err);
    if (st)
        return st;
    int W = img->full_w, H = img->full_h, ow, oh, left, top, x0, y0, x1, y1;
    kt_transform_resize_size(W, H, resize, &ow, &oh);
    kt_transform_crop_offsets(ow, oh, crop, &left, &top);
    kt_transform_eval_roi(W, H, resize, crop, &x0, &y0, &x1, &y1);
    if (x0 < img->x0 || y0 < img->y0 || x1 > img->x0 + img->w || y1 > img->y0 + img->h)
        return kt_err_set(err, KT_ERR_RUNTIME, "decoded window %dx%d+%d+%d misses the crop region",
                          img->w, img->h, img->x0, img->y0);
    size_t px = (size_t)crop * crop;
    source src = {img->rgb, (size_t)img->w, img->x0, img->y0, W, H,
                  img->rgb + (size_t)img->w * img->h * 3};
    if (!grow(&ws->px, &ws->pxcap, px * 3) || !resample(ws->px, &src, ow, oh, left, top, crop, crop, ws))
        return kt_err_set(err, KT_ERR_RUNTIME, "out of memory resizing an image");
    kt_transform_normalize(out, cstride, ws->px, px, norm);
    return KT_OK;
}

kt_status kt_transform_eval(float *out, size_t cstride, const kt_image *img, int resize, int crop,
                            const kt_norm *norm, kt_err *err)
{
    kt_transform_ws ws = {0};
    kt_status st = kt_transform_eval_ws(out, cstride, img, resize, crop, norm, &ws, err);
    kt_transform_ws_free(&ws);
    return st;
}

/* --- uint8 steps ------------------------------------------------------------------ */

static kt_status reserve_image(kt_image *out, int w, int h, kt_err *err)
{
    size_t bytes = (size_t)w * h * 3;
    if (bytes > out->cap) {
        uint8_t *p = realloc(out->rgb, bytes);
        if (!p)
            return kt_err_set(err, KT_ERR_RUNTIME, "out of memory for a %dx%d image", w, h);
        out->rgb = p, out->cap = bytes;
    }
    out->w = out->full_w = out->src_w = w;
    out->h = out->full_h = out->src_h = h;
    out->x0 = out->y0 = 0;
    return KT_OK;
}

kt_status kt_transform_resize(kt_image *out, const kt_image *in, int ow, int oh, kt_err *err)
{
    if (ow < 1 || oh < 1 || in->w != in->full_w || in->h != in->full_h)
        return kt_err_set(err, KT_ERR_USAGE, "resize needs a whole image and a size >= 1");
    kt_status st = reserve_image(out, ow, oh, err);
    if (st)
        return st;
    kt_transform_ws ws = {0};
    source src = {in->rgb, (size_t)in->w, 0, 0, in->w, in->h, in->rgb + (size_t)in->w * in->h * 3};
    int ok = resample(out->rgb, &src, ow, oh, 0, 0, ow, oh, &ws);
    kt_transform_ws_free(&ws);
    return ok ? KT_OK : kt_err_set(err, KT_ERR_RUNTIME, "out of memory resizing an image");
}

kt_status kt_transform_center_crop(kt_image *out, const kt_image *in, int crop, kt_err *err)
{
    if (crop < 1 || crop > in->w || crop > in->h)
        return kt_err_set(err, KT_ERR_USAGE, "crop %d does not fit a %dx%d image", crop, in->w,
                          in->h);
    int left, top;
    kt_transform_crop_offsets(in->w, in->h, crop, &left, &top);
    kt_status st = reserve_image(out, crop, crop, err);
    if (st)
        return st;
    for (int y = 0; y < crop; y++)
        memcpy(out->rgb + (size_t)y * crop * 3, in->rgb + ((size_t)(y + top) * in->w + left) * 3,
               (size_t)crop * 3);
    return KT_OK;
}

/* --- training augmentation ----------------------------------------------------------- */

/* Draw numbers inside a sample's block of 64 (b = sample * 64 + draw), so
 * every draw has a fixed counter whatever the other draws did. */
enum {
    DRAW_AREA = 0,      /* + 2*attempt */
    DRAW_RATIO = 1,     /* + 2*attempt */
    DRAW_TOP = 20,      /* + 2*attempt */
    DRAW_LEFT = 21,     /* + 2*attempt */
    DRAW_FLIP = 40,
    DRAW_BRIGHT = 41,
    DRAW_CONTRAST = 42,
    DRAW_SAT = 43,
    DRAW_ORDER = 44     /* + 0, 1 */
};

static double draw(uint64_t seed, uint64_t epoch, uint64_t sample, int d)
{
    return kt_rng_uniform(seed, KT_RNG_AUGMENT, epoch, sample * 64 + (uint64_t)d);
}

void kt_transform_rrc_box(int w, int h, const kt_augment *aug, uint64_t seed, uint64_t epoch,
                          uint64_t sample, int *x, int *y, int *bw, int *bh)
{
    /* torchvision RandomResizedCrop.get_params: area fraction uniform in
     * scale, log aspect ratio uniform in log(ratio), sides rounded half to
     * even; 10 attempts, then a centre crop clamped to the ratio range. */
    double area = (double)w * h, lr0 = log(aug->ratio[0]), lr1 = log(aug->ratio[1]);
    for (int t = 0; t < 10; t++) {
        double u = draw(seed, epoch, sample, DRAW_AREA + 2 * t);
        double v = draw(seed, epoch, sample, DRAW_RATIO + 2 * t);
        double target = area * (aug->scale[0] + u * (aug->scale[1] - aug->scale[0]));
        double ar = exp(lr0 + v * (lr1 - lr0));
        int cw = (int)nearbyint(sqrt(target * ar)), ch = (int)nearbyint(sqrt(target / ar));
        if (cw > 0 && cw <= w && ch > 0 && ch <= h) {
            uint64_t b = sample * 64;
            *y = (int)kt_rng_below(seed, KT_RNG_AUGMENT, epoch, b + DRAW_TOP + 2 * t,
                                   (uint64_t)(h - ch + 1));
            *x = (int)kt_rng_below(seed, KT_RNG_AUGMENT, epoch, b + DRAW_LEFT + 2 * t,
                                   (uint64_t)(w - cw + 1));
            *bw = cw, *bh = ch;
            return;
        }
    }
    double in_ratio = (double)w / h;
    int cw = w, ch = h;
    if (in_ratio < aug->ratio[0])
        ch = (int)nearbyint(w / aug->ratio[0]);
    else if (in_ratio > aug->ratio[1])
        cw = (int)nearbyint(h * aug->ratio[1]);
    ch = ch < 1 ? 1 : ch > h ? h : ch;
    cw = cw < 1 ? 1 : cw > w ? w : cw;
    *x = (w - cw) / 2, *y = (h - ch) / 2;
    *bw = cw, *bh = ch;
}

/* Pillow's Image.blend(degenerate, img, f) per byte: truncation toward zero,
 * clamped to 0..255 (f > 1 extrapolates away from the degenerate image). */
static uint8_t blend(int deg, int v, float f)
{
    float t = (float)deg + f * (float)(v - deg);
    return (uint8_t)(t <= 0.0f ? 0 : t >= 255.0f ? 255 : (int)t);
}

/* Pillow's RGB -> L (ITU-R 601-2 luma, 16-bit fixed point). */
static int luma(const uint8_t *p)
{
    return (p[0] * 19595 + p[1] * 38470 + p[2] * 7471 + 0x8000) >> 16;
}

/* torchvision ColorJitter on PIL images: brightness blends with black,
 * contrast with the mean grey level, saturation with the image's own
 * greyscale. Factors uniform in [max(0, 1-s), 1+s]. */
static void jitter(uint8_t *px, size_t n, int op, float f)
{
    if (op == 0) {
        for (size_t i = 0; i < 3 * n; i++)
            px[i] = blend(0, px[i], f);
    } else if (op == 1) {
        uint64_t sum = 0;
        for (size_t i = 0; i < n; i++)
            sum += (uint64_t)luma(px + 3 * i);
        int mean = (int)((double)sum / (double)n + 0.5);
        for (size_t i = 0; i < 3 * n; i++)
            px[i] = blend(mean, px[i], f);
    } else {
        for (size_t i = 0; i < n; i++, px += 3) {
            int l = luma(px);
            px[0] = blend(l, px[0], f), px[1] = blend(l, px[1], f), px[2] = blend(l, px[2], f);
        }
    }
}

static float factor(double strength, double u)
{
    double lo = 1.0 - strength < 0 ? 0 : 1.0 - strength;
    return (float)(lo + u * (1.0 + strength - lo));
}

kt_status kt_transform_train(float *out, size_t cstride, const kt_image *img, int size, int resize,
                             const kt_norm *norm, const kt_augment *aug, uint64_t seed,
                             uint64_t epoch, uint64_t sample, kt_transform_ws *ws, kt_err *err)
{
    if (size < 1 || size > 1024)
        return kt_err_set(err, KT_ERR_USAGE, "image size %d out of range 1..1024", size);
    if (img->x0 || img->y0 || img->w != img->full_w || img->h != img->full_h)
        return kt_err_set(err, KT_ERR_RUNTIME, "training transform needs a whole decoded image");
    size_t px = (size_t)size * size;
    if (!grow(&ws->px, &ws->pxcap, px * 3))
        goto oom;
    if (aug->rrc) {
        int x, y, bw, bh;
        kt_transform_rrc_box(img->w, img->h, aug, seed, epoch, sample, &x, &y, &bw, &bh);
        source src = {img->rgb + ((size_t)y * img->w + x) * 3, (size_t)img->w, 0, 0, bw, bh,
                      img->rgb + (size_t)img->w * img->h * 3};
        if (!resample(ws->px, &src, size, size, 0, 0, size, size, ws))
            goto oom;
    } else {
        kt_status st = check_sizes(resize, size, err);
        if (st)
            return st;
        int ow, oh, left, top;
        kt_transform_resize_size(img->w, img->h, resize, &ow, &oh);
        kt_transform_crop_offsets(ow, oh, size, &left, &top);
        source src = {img->rgb, (size_t)img->w, 0, 0, img->w, img->h,
                      img->rgb + (size_t)img->w * img->h * 3};
        if (!resample(ws->px, &src, ow, oh, left, top, size, size, ws))
            goto oom;
    }
    if (aug->flip && draw(seed, epoch, sample, DRAW_FLIP) < 0.5) {
        for (int y = 0; y < size; y++) {
            uint8_t *a = ws->px + (size_t)y * size * 3, *b = a + (size_t)(size - 1) * 3;
            for (; a < b; a += 3, b -= 3)
                for (int c = 0; c < 3; c++) {
                    uint8_t t = a[c];
                    a[c] = b[c], b[c] = t;
                }
        }
    }
    double strength[3] = {aug->brightness, aug->contrast, aug->saturation};
    if (strength[0] > 0 || strength[1] > 0 || strength[2] > 0) {
        int order[3] = {0, 1, 2};
        for (int i = 2; i > 0; i--) {   /* Fisher-Yates, like torch.randperm */
            int j = (int)kt_rng_below(seed, KT_RNG_AUGMENT, epoch,
                                      sample * 64 + DRAW_ORDER + (uint64_t)(2 - i),
                                      (uint64_t)i + 1);
            int t = order[i];
            order[i] = order[j], order[j] = t;
        }
        for (int i = 0; i < 3; i++) {
            int op = order[i];
            if (strength[op] > 0)
                jitter(ws->px, px, op, factor(strength[op], draw(seed, epoch, sample, DRAW_BRIGHT + op)));
        }
    }
    kt_transform_normalize(out, cstride, ws->px, px, norm);
    return KT_OK;
oom:
    return kt_err_set(err, KT_ERR_RUNTIME, "out of memory transforming an image");
}
