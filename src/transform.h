/* transform.h - from a decoded RGB image to the network's float input:
 * Pillow-exact resize, centre crop, normalisation, and the training
 * augmentation (random resized crop, flip, colour jitter).
 *
 * The evaluation path reproduces torchvision's Resize(resize) +
 * CenterCrop(crop) + ToTensor + Normalize bit for bit (see
 * ../shared/oracle/check_kt.md): Pillow's antialiased bilinear filter in 8-bit
 * fixed point, horizontal pass first into a uint8 temporary, crop offsets
 * rounded half to even, then (float)u8 / 255.0f, (v - mean) / std in float32
 * with true divisions. The caffe (Keras) normalisation is the same formula
 * with scale 1, std 1 and the channels reversed.
 *
 * Output tensors are CHW with a channel stride: channel c of the image starts
 * at out + c * cstride, so an image can be written straight into a batch laid
 * out [3][N][S][S] (out = base + i*S*S, cstride = N*S*S).
 *
 * Augmentation draws are a function of (seed, epoch, sample) through rng.h
 * (stream KT_RNG_AUGMENT), never of thread timing.
 */
#ifndef KT_TRANSFORM_H
#define KT_TRANSFORM_H

#include <stddef.h>
#include <stdint.h>

#include "arch.h"
#include "err.h"
#include "image.h"

/* Training augmentation; kt_transform_augment_default() gives torchvision's
 * RandomResizedCrop defaults + flip, no jitter. */
typedef struct {
    int rrc;                /* 1: RandomResizedCrop; 0: resize + centre crop as in eval */
    double scale[2];        /* area fraction range, default 0.08 .. 1 */
    double ratio[2];        /* aspect ratio range, default 3/4 .. 4/3 */
    int flip;               /* random horizontal flip with probability 1/2 */
    double brightness, contrast, saturation; /* ColorJitter strengths, 0 = off */
} kt_augment;

kt_augment kt_transform_augment_default(void);

/* Scratch memory reused across images (coefficients, the uint8 intermediate
 * images). Zero-initialise; grows as needed; kt_transform_ws_free releases it.
 * One per thread. */
typedef struct {
    uint8_t *buf;           /* resampling scratch */
    size_t cap;
    uint8_t *px;            /* the uint8 output image before normalisation */
    size_t pxcap;
} kt_transform_ws;

void kt_transform_ws_free(kt_transform_ws *ws);

/* --- the evaluation pipeline ------------------------------------------------ */

/* torchvision Resize(short) output size for a w x h image: the shorter side
 * becomes short, the longer (int)(short * long / short_side), truncated. */
void kt_transform_resize_size(int w, int h, int short_side, int *ow, int *oh);
/* torchvision CenterCrop offsets: round((w - crop) / 2) half to even. */
void kt_transform_crop_offsets(int w, int h, int crop, int *left, int *top);
/* The region [x0,x1) x [y0,y1) of a w x h image that the eval transform
 * (resize, crop) reads: decode just that (kt_image_opts.roi). */
void kt_transform_eval_roi(int w, int h, int resize, int crop, int *x0, int *y0, int *x1,
                           int *y1);

/* Resize + centre crop + normalise into out (CHW, channel stride cstride).
 * img may be a window of the image (kt_image.x0...) as long as it holds
 * kt_transform_eval_roi. Needs crop <= resize (else KT_ERR_USAGE). */
kt_status kt_transform_eval(float *out, size_t cstride, const kt_image *img, int resize, int crop,
                            const kt_norm *norm, kt_err *err);
/* Same with caller-owned scratch memory (no allocation once ws has grown). */
kt_status kt_transform_eval_ws(float *out, size_t cstride, const kt_image *img, int resize,
                               int crop, const kt_norm *norm, kt_transform_ws *ws, kt_err *err);

/* --- uint8 steps, for tests and tools ---------------------------------------- */

/* Pillow Image.resize((ow, oh), BILINEAR) of a whole image into out (reused
 * like a decoded image). */
kt_status kt_transform_resize(kt_image *out, const kt_image *in, int ow, int oh, kt_err *err);
/* Copies the centre crop x crop (torchvision offsets) of in into out. */
kt_status kt_transform_center_crop(kt_image *out, const kt_image *in, int crop, kt_err *err);
/* Writes n pixels of rgb [n][3] as 3 planes: out[c*cstride + i] =
 * ((float)u8 * scale - mean[c]) / std[c] in network channel order (BGR when
 * norm->bgr). scale != 1 is computed as the true division u8 / (1/scale). */
void kt_transform_normalize(float *out, size_t cstride, const uint8_t *rgb, size_t n,
                            const kt_norm *norm);

/* --- training ------------------------------------------------------------------ */

/* The crop box (in img's full upright coordinates) RandomResizedCrop draws
 * for (seed, epoch, sample): torchvision's algorithm, 10 attempts then the
 * centre-crop fallback. */
void kt_transform_rrc_box(int w, int h, const kt_augment *aug, uint64_t seed, uint64_t epoch,
                          uint64_t sample, int *x, int *y, int *bw, int *bh);

/* Augmented size x size input for (seed, epoch, sample): random resized crop
 * (or resize to `resize` + centre crop when !aug->rrc), flip, jitter in a random
 * order, then normalise. img must be a whole image (not a window). */
kt_status kt_transform_train(float *out, size_t cstride, const kt_image *img, int size, int resize,
                             const kt_norm *norm, const kt_augment *aug, uint64_t seed,
                             uint64_t epoch, uint64_t sample, kt_transform_ws *ws, kt_err *err);

#endif
