/* ops.h - the math of the network, forward and backward; the only user of cblas.h.
 *
 * Layout: backbone activations are channel-outermost, [C][N][H][W], so every
 * convolution over the whole batch is one GEMM  out[Cout][N*Ho*Wo] =
 * W[Cout][Cin*k*k] x col[Cin*k*k][N*Ho*Wo], and batch norm works on contiguous
 * channel rows of N*H*W values. The head works on [N][features] rows.
 *
 * Conventions (llm.c style): outputs first, then const inputs, then sizes.
 * Backward functions ACCUMULATE (+=) into gradients; a NULL gradient pointer
 * means "don't compute it". Workspaces are planned by the caller (see
 * kt_conv_workspace) so nothing here allocates.
 */
#ifndef KT_OPS_H
#define KT_OPS_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    int n, cin, h, w;       /* input  [cin][n][h][w] */
    int cout, k, stride, pad;
    int ho, wo;             /* output [cout][n][ho][wo], filled by kt_conv_shape_init */
    /* Optional thread pool for the conv's GEMMs (split by column or row
     * blocks, each a single-threaded OpenBLAS call) and its own loops
     * (im2col, col2im, bias and ReLU, over channels): par(par_ctx, fn, arg,
     * count) must call fn(arg, lo, hi) over a split of [0, count) and return
     * when all parts are done. NULL (kt_conv_shape_init's default): all on
     * the calling thread. */
    void (*par)(void *par_ctx, void (*fn)(const void *arg, int64_t lo, int64_t hi),
                const void *arg, int64_t count);
    void *par_ctx;
} kt_conv_shape;

void kt_conv_shape_init(kt_conv_shape *s, int n, int cin, int h, int w, int cout, int k,
                        int stride, int pad);
/* Floats of workspace the conv needs (im2col columns, possibly chunked over
 * images to bound memory); 0 for a 1x1 stride-1 conv. */
size_t kt_conv_workspace(const kt_conv_shape *s);

/* out = conv(in, w) + bias (bias may be NULL). */
void kt_conv_forward(float *out /* [cout][n][ho][wo] */, float *work,
                     const float *in /* [cin][n][h][w] */,
                     const float *w /* [cout][cin][k][k] */, const float *bias /* [cout] */,
                     const kt_conv_shape *s);
/* The same with the epilogue fused (kt_resnet's inference path): flags
 * KT_CONV_ADD accumulates into out (out += conv + bias: a residual add for
 * free, as GEMM's beta = 1), KT_CONV_RELU applies ReLU after the bias. The
 * bias/ReLU pass runs per image chunk while the chunk is still in cache. */
enum { KT_CONV_ADD = 1, KT_CONV_RELU = 2 };
void kt_conv_forward_ex(float *out /* [cout][n][ho][wo] */, float *work,
                        const float *in /* [cin][n][h][w] */,
                        const float *w /* [cout][cin][k][k] */, const float *bias /* [cout] */,
                        const kt_conv_shape *s, int flags);
void kt_conv_backward(float *din /* [cin][n][h][w] or NULL */,
                      float *dw /* [cout][cin][k][k] or NULL */,
                      float *dbias /* [cout] or NULL */, float *work,
                      const float *dout /* [cout][n][ho][wo] */,
                      const float *in /* [cin][n][h][w] */, const float *w,
                      const kt_conv_shape *s);

/* Winograd F(2x2, 3x3) for the 3x3 stride-1 pad-1 convs (kt_conv_wino_ok):
 * the same result as kt_conv_forward_ex within a few float roundings, with
 * 2.25x fewer multiplies. kt_conv_wino_weights transforms w into u
 * [16][cout][cin]; with flip, into u [16][cin][cout] for the conv whose
 * forward is w's input gradient (kernels rotated 180 degrees, cin and cout
 * swapped): din += kt_conv_wino_forward(dout, u) with KT_CONV_ADD.
 * kt_conv_workspace covers the workspace of both paths. */
int kt_conv_wino_ok(const kt_conv_shape *s);
void kt_conv_wino_weights(float *u /* [16][cout][cin], flip: [16][cin][cout] */,
                          const float *w /* [cout][cin][3][3] */, const kt_conv_shape *s,
                          int flip);
void kt_conv_wino_forward(float *out /* [cout][n][h][w] */, float *work,
                          const float *in /* [cin][n][h][w] */,
                          const float *u /* [16][cout][cin] */, const float *bias /* [cout] */,
                          const kt_conv_shape *s, int flags);
/* dw (and dbias, may be NULL) += the weight gradients of the same conv, as
 * kt_conv_backward's, through 16 GEMMs in the Winograd domain; du is
 * scratch [16][cout][cin]. */
void kt_conv_wino_weight_grad(float *dw /* [cout][cin][3][3] */, float *dbias /* [cout] */,
                              float *du, float *work,
                              const float *dout /* [cout][n][h][w] */,
                              const float *in /* [cin][n][h][w] */, const kt_conv_shape *s);

/* Batch norm in train mode over m = n*h*w values per channel: normalises with
 * the batch mean and biased variance, saves mean and 1/sqrt(var+eps) for the
 * backward, and updates running stats (unbiased variance, momentum as
 * torchvision: running = (1-momentum)*running + momentum*batch). relu != 0
 * applies a ReLU to the output in the same pass. */
void kt_bn_train_forward(float *out /* [c][m] */, float *save_mean /* [c] */,
                         float *save_rstd /* [c] */, float *running_mean /* [c] */,
                         float *running_var /* [c] */, const float *in /* [c][m] */,
                         const float *gamma, const float *beta, int c, int64_t m, float eps,
                         float momentum, int relu);
/* Its backward: din (accumulated when acc, else written), dgamma and dbeta
 * accumulated. relu_out, when not NULL, is the output of a ReLU applied to
 * this BN's output: dout then counts only where relu_out > 0. */
void kt_bn_train_backward(float *din /* [c][m] or NULL */, float *dgamma, float *dbeta,
                          const float *dout /* [c][m] */, const float *relu_out /* [c][m] or NULL */,
                          const float *in /* [c][m] */, const float *save_mean,
                          const float *save_rstd, const float *gamma, int c, int64_t m, int acc);
/* Eval mode: out = in*scale[c] + shift[c] (scale, shift precomputed from the
 * running stats by kt_bn_fold_params), then ReLU when relu != 0. in == out is
 * allowed. */
void kt_bn_eval_forward(float *out, const float *in, const float *scale, const float *shift,
                        int c, int64_t m, int relu);
void kt_bn_eval_backward(float *din, float *dgamma, float *dbeta, const float *dout,
                         const float *in, const float *mean, const float *var,
                         const float *gamma, int c, int64_t m, float eps);
void kt_bn_fold_params(float *scale /* [c] */, float *shift /* [c] */, const float *gamma,
                       const float *beta, const float *mean, const float *var, int c, float eps);

/* ReLU; in place allowed. Backward uses the output (out > 0) as the mask. */
void kt_relu_forward(float *out, const float *in, int64_t n);
void kt_relu_backward(float *din, const float *dout, const float *out, int64_t n);
/* ReLU backward into a scratch gradient: din[i] = out[i] > 0 ? dout[i] : 0
 * (overwrites). */
void kt_relu_grad(float *din, const float *dout, const float *out, int64_t n);
/* GELU (exact erf form, as torch's default). */
void kt_gelu_forward(float *out, const float *in, int64_t n);
void kt_gelu_backward(float *din, const float *dout, const float *in, int64_t n);

/* Max pool k x k, stride, zero... padding ignored (as torch); argmax saved as
 * the flat input index within the image plane for the backward. */
void kt_maxpool_forward(float *out /* [c][n][ho][wo] */, int32_t *argmax /* same, or NULL */,
                        const float *in /* [c][n][h][w] */, int c, int n, int h, int w, int k,
                        int stride, int pad, int ho, int wo);
void kt_maxpool_backward(float *din, const float *dout, const int32_t *argmax, int c, int n,
                         int h, int w, int ho, int wo);

/* Global average pool: [c][n][hw] -> [n][c]. */
void kt_avgpool_forward(float *out /* [n][c] */, const float *in /* [c][n][hw] */, int c, int n,
                        int hw);
void kt_avgpool_backward(float *din /* [c][n][hw] */, const float *dout /* [n][c] */, int c,
                         int n, int hw);

/* out[n][o] = in[n][i] . w[o][i] + b[o] (torch Linear). */
void kt_linear_forward(float *out /* [n][o] */, const float *in /* [n][i] */,
                       const float *w /* [o][i] */, const float *b /* [o] or NULL */, int n,
                       int i, int o);
void kt_linear_backward(float *din /* [n][i] or NULL */, float *dw /* [o][i] or NULL */,
                        float *db /* [o] or NULL */, const float *dout /* [n][o] */,
                        const float *in, const float *w, int n, int i, int o);

/* Inverted dropout with a caller-drawn keep mask (1 keep / 0 drop): out =
 * in*mask/(1-p). The mask comes from rng.c so runs are reproducible. */
void kt_dropout_forward(float *out, const float *in, const uint8_t *mask, float p, int64_t n);
void kt_dropout_backward(float *din, const float *dout, const uint8_t *mask, float p, int64_t n);

/* Row-wise softmax of [n][k] logits. */
void kt_softmax(float *probs /* [n][k] */, const float *logits /* [n][k] */, int n, int k);
/* Mean softmax cross-entropy as torch's CrossEntropyLoss with label_smoothing
 * and class weights (weights may be NULL; the mean divides by the summed weights
 * of the targets, as torch does). Writes dlogits = dloss/dlogits (not
 * accumulated) when not NULL and returns the loss (double, for NaN checks). */
double kt_softmax_ce(float *dlogits /* [n][k] or NULL */, const float *logits /* [n][k] */,
                     const int *labels /* [n] */, const float *class_weights /* [k] or NULL */,
                     float label_smoothing, int n, int k);

/* Elementwise helpers used by residual blocks: y += x; y = relu(y + x). */
void kt_add_inplace(float *y, const float *x, int64_t n);
void kt_add_relu(float *y, const float *x, int64_t n);


#endif
