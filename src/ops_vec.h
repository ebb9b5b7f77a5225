/* ops_vec.h - ops.c's elementwise kernels, private to ops.c.
 *
 * No include guard on purpose: ops.c includes this file once per instruction
 * set, with VL the vector width in floats, VK(name) giving each copy its own
 * names and VATTR its target attribute, and picks one copy per kernel at load
 * (see ops.c). Vectors are the width the target has: a 16-float vector on
 * AVX2 would compile its comparisons one lane at a time.
 */

typedef float VK(vf_t) __attribute__((vector_size(4 * VL), aligned(4), may_alias));
typedef int32_t VK(vi_t) __attribute__((vector_size(4 * VL), aligned(4), may_alias));
#define vf VK(vf_t)
#define vi VK(vi_t)

/* r[i] = r[i] + b, then ReLU when relu. */
VATTR static void VK(vk_bias_act)(float *r, float b, size_t n, int relu)
{
    size_t i = 0;
    if (relu) {
        for (; i + VL <= n; i += VL) {
            vf v = *(vf *)(r + i) + b;
            *(vf *)(r + i) = VRELU(v);
        }
        for (; i < n; i++) r[i] = srelu(r[i] + b);
    } else {
        for (; i + VL <= n; i += VL) *(vf *)(r + i) += b;
        for (; i < n; i++) r[i] += b;
    }
}

/* sum of x[i] - shift, and of its square when sq != NULL. */
VATTR static double VK(vk_sum)(const float *x, size_t n, float shift, double *sq)
{
    double s = 0, s2 = 0;
    size_t i = 0;
    while (i + VL <= n) {
        vf a = {0}, a2 = {0};
        size_t end = i + KT_BLOCK < n ? i + KT_BLOCK : n;
        for (; i + VL <= end; i += VL) {
            vf d = *(const vf *)(x + i) - shift;
            a += d, a2 += d * d;
        }
        VHSUM(s, a);
        VHSUM(s2, a2);
    }
    for (; i < n; i++) {
        double d = (double)x[i] - shift;
        s += d, s2 += d * d;
    }
    if (sq) *sq = s2;
    return s;
}

/* sum dy[i] and sum dy[i] * (x[i] - mean). */
VATTR static void VK(vk_dot)(const float *dy, const float *x, float mean, size_t n, double *sdy,
                             double *sdyx)
{
    double s = 0, sx = 0;
    size_t i = 0;
    while (i + VL <= n) {
        vf a = {0}, ax = {0};
        size_t end = i + KT_BLOCK < n ? i + KT_BLOCK : n;
        for (; i + VL <= end; i += VL) {
            vf g = *(const vf *)(dy + i);
            a += g, ax += g * (*(const vf *)(x + i) - mean);
        }
        VHSUM(s, a);
        VHSUM(sx, ax);
    }
    for (; i < n; i++) s += dy[i], sx += (double)dy[i] * ((double)x[i] - mean);
    *sdy = s, *sdyx = sx;
}

/* y[i] = x[i] * a + b, then ReLU when relu */
VATTR static void VK(vk_axpb)(float *y, const float *x, float a, float b, size_t n, int relu)
{
    size_t i = 0;
    if (relu) {
        for (; i + VL <= n; i += VL) {
            vf v = *(const vf *)(x + i) * a + b;
            *(vf *)(y + i) = VRELU(v);
        }
        for (; i < n; i++) y[i] = srelu(x[i] * a + b);
    } else {
        for (; i + VL <= n; i += VL) *(vf *)(y + i) = *(const vf *)(x + i) * a + b;
        for (; i < n; i++) y[i] = x[i] * a + b;
    }
}

/* dx[i] += k * dy[i] + a * x[i] + b */
VATTR static void VK(vk_bn_dx)(float *dx, const float *dy, const float *x, float k, float a,
                               float b, size_t n)
{
    size_t i = 0;
    for (; i + VL <= n; i += VL)
        *(vf *)(dx + i) += *(const vf *)(dy + i) * k + *(const vf *)(x + i) * a + b;
    for (; i < n; i++) dx[i] += dy[i] * k + x[i] * a + b;
}

/* y[i] = relu(x[i]) */
VATTR static void VK(vk_relu)(float *y, const float *x, size_t n)
{
    size_t i = 0;
    for (; i + VL <= n; i += VL) {
        vf v = *(const vf *)(x + i);
        *(vf *)(y + i) = VRELU(v);
    }
    for (; i < n; i++) y[i] = srelu(x[i]);
}

/* d[i] = out[i] > 0 ? g[i] : 0, added to d when acc (ReLU backward). */
VATTR static void VK(vk_relu_grad)(float *d, const float *g, const float *out, size_t n, int acc)
{
    size_t i = 0;
    for (; i + VL <= n; i += VL) {
        vi on = *(const vf *)(out + i) > 0.0f;
        vf m = (vf)((vi) * (const vf *)(g + i) & on);
        if (acc)
            *(vf *)(d + i) += m;
        else
            *(vf *)(d + i) = m;
    }
    for (; i < n; i++) {
        float m = out[i] > 0.0f ? g[i] : 0.0f;
        d[i] = acc ? d[i] + m : m;
    }
}

/* dst[i] = src[2 * i]: the stride-2 taps of im2col. Two vectors of source
 * are loaded and their even lanes shuffled together; the loop stops one
 * vector early so the second load never reads past src[2 * (n - 1)]. */
VATTR static void VK(vk_gather2)(float *dst, const float *src, size_t n)
{
    vi even;
    for (int j = 0; j < VL; j++) even[j] = 2 * j;
    size_t i = 0;
    for (; i + VL + 1 <= n; i += VL)
        *(vf *)(dst + i) = __builtin_shuffle(*(const vf *)(src + 2 * i),
                                             *(const vf *)(src + 2 * i + VL), even);
    for (; i < n; i++) dst[i] = src[2 * i];
}

/* y[i] += x[i], then ReLU when relu */
VATTR static void VK(vk_add)(float *y, const float *x, size_t n, int relu)
{
    size_t i = 0;
    if (relu) {
        for (; i + VL <= n; i += VL) {
            vf v = *(vf *)(y + i) + *(const vf *)(x + i);
            *(vf *)(y + i) = VRELU(v);
        }
        for (; i < n; i++) y[i] = srelu(y[i] + x[i]);
    } else {
        for (; i + VL <= n; i += VL) *(vf *)(y + i) += *(const vf *)(x + i);
        for (; i < n; i++) y[i] += x[i];
    }
}

/* t[i] = NaN-propagating max of r0[i], r1[i], r2[i] (r1, r2 may be NULL). */
VATTR static void VK(vk_vmax3)(float *t, const float *r0, const float *r1, const float *r2,
                               size_t n)
{
    size_t i = 0;
    for (; i + VL <= n; i += VL) {
        vf m = *(const vf *)(r0 + i);
        for (int j = 0; j < 2; j++) {
            const float *r = j ? r2 : r1;
            if (!r) continue;
            vf v = *(const vf *)(r + i);
            vi take = (v > m) | (v != v);
            m = (vf)(((vi)v & take) | ((vi)m & ~take));
        }
        *(vf *)(t + i) = m;
    }
    for (; i < n; i++) t[i] = nmax(r2 ? r2[i] : r0[i], nmax(r1 ? r1[i] : r0[i], r0[i]));
}

#undef vf
#undef vi
