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

/* sum g[i] and sum g[i] * (x[i] - mean), g = dy, or where mask[i] > 0 dy
 * and 0 elsewhere (mask: the output of a ReLU that followed). */
VATTR static void VK(vk_dot)(const float *dy, const float *mask, const float *x, float mean,
                             size_t n, double *sdy, double *sdyx)
{
    double s = 0, sx = 0;
    size_t i = 0;
    while (i + VL <= n) {
        vf a = {0}, ax = {0};
        size_t end = i + KT_BLOCK < n ? i + KT_BLOCK : n;
        for (; i + VL <= end; i += VL) {
            vf g = *(const vf *)(dy + i);
            if (mask) g = (vf)((vi)g & (*(const vf *)(mask + i) > 0.0f));
            a += g, ax += g * (*(const vf *)(x + i) - mean);
        }
        VHSUM(s, a);
        VHSUM(sx, ax);
    }
    for (; i < n; i++) {
        float g = !mask || mask[i] > 0.0f ? dy[i] : 0.0f;
        s += g, sx += (double)g * ((double)x[i] - mean);
    }
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

/* dx[i] = k * g[i] + a * x[i] + b, added to dx when acc; g as in vk_dot. */
VATTR static void VK(vk_bn_dx)(float *dx, const float *dy, const float *mask, const float *x,
                               float k, float a, float b, size_t n, int acc)
{
    size_t i = 0;
    for (; i + VL <= n; i += VL) {
        vf g = *(const vf *)(dy + i);
        if (mask) g = (vf)((vi)g & (*(const vf *)(mask + i) > 0.0f));
        vf v = g * k + *(const vf *)(x + i) * a + b;
        if (acc) v += *(const vf *)(dx + i);
        *(vf *)(dx + i) = v;
    }
    for (; i < n; i++) {
        float g = !mask || mask[i] > 0.0f ? dy[i] : 0.0f;
        float v = g * k + x[i] * a + b;
        dx[i] = acc ? dx[i] + v : v;
    }
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

/* One output row of a 3x3 stride-2 pad-1 max pool with its argmax, by the
 * scalar loop's rules (kt_maxpool_forward): taps in order, a strictly
 * greater value or the first NaN wins, and nothing replaces a NaN. q[k] is
 * input row 2oy-1+k padded with -inf (q[k][x+1] = row[x]; a row outside the
 * map is all -inf, which never wins), readable up to 2*ceil(wo/VL)*VL + 2;
 * ry[k] is that row's offset in the plane and first the offset of the first
 * real row: a window of -inf values only points at its first real tap, as
 * in the scalar loop. The stride-2 taps are even and odd lanes of two
 * loads, as in vk_wino_in. */
VATTR static void VK(vk_maxpool_arg)(float *out, int32_t *am, const float *const q[3],
                                     const int32_t ry[3], int32_t first, size_t wo)
{
    vi ev, od;
    for (int j = 0; j < VL; j++) ev[j] = 2 * j, od[j] = 2 * j + 1;
    for (size_t i = 0; i < wo; i += VL) {
        vf best = (vf){0} - INFINITY;
        vi x0 = ev + (int32_t)(2 * i) - 1; /* column of tap kx = 0 */
        vi idx = x0 + first;
        if (i == 0) idx[0] = first; /* column -1 is padding: column 0 is the first real tap */
        for (int k = 0; k < 3; k++) {
            const float *r = q[k] + 2 * i;
            vf a = *(const vf *)r, b = *(const vf *)(r + VL);
            vf c = *(const vf *)(r + 2), d = *(const vf *)(r + 2 + VL);
            vf t[3] = {__builtin_shuffle(a, b, ev), __builtin_shuffle(a, b, od),
                       __builtin_shuffle(c, d, ev)};
            for (int kx = 0; kx < 3; kx++) {
                vf v = t[kx];
                vi take = ((v > best) | (v != v)) & (best == best);
                best = (vf)(((vi)v & take) | ((vi)best & ~take));
                idx = ((x0 + kx + ry[k]) & take) | (idx & ~take);
            }
        }
        if (i + VL <= wo) {
            *(vf *)(out + i) = best;
            *(vi *)(am + i) = idx;
        } else {
            for (size_t j = 0; i + j < wo; j++) out[i + j] = best[j], am[i + j] = idx[j];
        }
    }
}

/* Winograd F(2x2, 3x3) input transform of one row of tiles (see ops.c):
 * p[r][2t + c] is tap (r, c) of tile t's 4x4 input patch, and row xi = 4i+j
 * of v (rows ldx apart) gets element (i, j) of B^T d B. Whole vectors only:
 * reads p[r][0 .. 2*ceil(ntx/VL)*VL + 1] and writes up to VL-1 columns past
 * ntx, which the caller's layout leaves room for. The stride-2 taps are the
 * even and odd lanes of two consecutive loads. */
VATTR static void VK(vk_wino_in)(float *v, size_t ldx, const float *const p[4], size_t ntx)
{
    vi ev, od;
    for (int j = 0; j < VL; j++) ev[j] = 2 * j, od[j] = 2 * j + 1;
    for (size_t i = 0; i < ntx; i += VL) {
        vf h[4][4];
        for (int r = 0; r < 4; r++) {
            const float *q = p[r] + 2 * i;
            vf a = *(const vf *)q, b = *(const vf *)(q + VL);
            vf c = *(const vf *)(q + 2), d = *(const vf *)(q + 2 + VL);
            vf d0 = __builtin_shuffle(a, b, ev), d1 = __builtin_shuffle(a, b, od);
            vf d2 = __builtin_shuffle(c, d, ev), d3 = __builtin_shuffle(c, d, od);
            h[r][0] = d0 - d2, h[r][1] = d1 + d2, h[r][2] = d2 - d1, h[r][3] = d1 - d3;
        }
        for (int j = 0; j < 4; j++) {
            *(vf *)(v + (size_t)j * ldx + i) = h[0][j] - h[2][j];
            *(vf *)(v + (size_t)(4 + j) * ldx + i) = h[1][j] + h[2][j];
            *(vf *)(v + (size_t)(8 + j) * ldx + i) = h[2][j] - h[1][j];
            *(vf *)(v + (size_t)(12 + j) * ldx + i) = h[1][j] - h[3][j];
        }
    }
}

/* The first n < VL lanes of v (plus p's first n when add, then ReLU'd when
 * relu) stored to p, touching nothing past p[n-1]: the last vector of a map
 * row. With AVX-512 and AVX2, masked loads and stores; a lane-by-lane loop
 * cost the 7-tile rows of ResNet's 14x14 stage most of its output
 * transform (perf: 7% of inference). */
VATTR static void VK(vk_store_part)(float *p, vf v, size_t n, int add, int relu)
{
#if VL == 16
    __mmask16 k = (__mmask16)((1u << n) - 1);
    if (add) v += (vf)_mm512_maskz_loadu_ps(k, p);
    if (relu) v = VRELU(v);
    _mm512_mask_storeu_ps(p, k, (__m512)v);
#elif VL == 8
    __m256i k = _mm256_cmpgt_epi32(_mm256_set1_epi32((int)n),
                                   _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
    if (add) v += (vf)_mm256_maskload_ps(p, k);
    if (relu) v = VRELU(v);
    _mm256_maskstore_ps(p, k, (__m256)v);
#else
    for (size_t j = 0; j < n; j++) {
        float x = add ? v[j] + p[j] : v[j];
        p[j] = relu ? srelu(x) : x;
    }
#endif
}

/* The output transform of one row of tiles: row xi of m (rows ldx apart)
 * holds element xi of each tile's 4x4 product; the top and bottom rows of
 * A^T m A + b (tile t at columns 2t and 2t+1) are added to o0 and o1 when
 * add, ReLU'd when relu, and stored in their w valid columns (o1 NULL: the
 * bottom row falls outside an odd-height map). Reads up to VL-1 columns of m
 * past ntx. */
VATTR static void VK(vk_wino_out)(float *o0, float *o1, const float *m, size_t ldx, float b,
                                  size_t ntx, size_t w, int add, int relu)
{
    vi lo, hi;
    for (int j = 0; j < VL; j++) {
        lo[j] = j / 2 + (j % 2 ? VL : 0);
        hi[j] = VL / 2 + j / 2 + (j % 2 ? VL : 0);
    }
    float *dst[2] = {o0, o1};
    for (size_t i = 0; i < ntx; i += VL) {
        vf s0[4], s1[4];
        for (int r = 0; r < 4; r++) {
            const float *q = m + (size_t)(4 * r) * ldx + i;
            vf a = *(const vf *)q, c1 = *(const vf *)(q + ldx);
            vf c2 = *(const vf *)(q + 2 * ldx), c3 = *(const vf *)(q + 3 * ldx);
            s0[r] = a + c1 + c2, s1[r] = c1 - c2 - c3;
        }
        vf y00 = s0[0] + s0[1] + s0[2] + b, y01 = s1[0] + s1[1] + s1[2] + b;
        vf y10 = s0[1] - s0[2] - s0[3] + b, y11 = s1[1] - s1[2] - s1[3] + b;
        vf y[4] = {__builtin_shuffle(y00, y01, lo), __builtin_shuffle(y00, y01, hi),
                   __builtin_shuffle(y10, y11, lo), __builtin_shuffle(y10, y11, hi)};
        for (int k = 0; k < 4; k++) {
            float *o = dst[k / 2];
            size_t c = 2 * i + (size_t)(k % 2) * VL;
            if (!o || c >= w) continue;
            vf v = y[k];
            if (c + VL <= w) {
                if (add) v += *(const vf *)(o + c);
                *(vf *)(o + c) = relu ? VRELU(v) : v;
            } else {
                VK(vk_store_part)(o + c, v, w - c, add, relu);
            }
        }
    }
}

/* The adjoint of vk_wino_out for the weight gradient: row xi = 4i+j of dm
 * (rows ldx apart) gets element (i, j) of A g A^T for each tile's 2x2
 * output gradient g, its top row from q0[2t], q0[2t+1] and its bottom row
 * from q1 (rows zero past the map's edge, and readable up to
 * 2*ceil(ntx/VL)*VL columns). Writes up to VL-1 columns past ntx. */
VATTR static void VK(vk_wino_dout)(float *dm, size_t ldx, const float *q0, const float *q1,
                                   size_t ntx)
{
    vi ev, od;
    for (int j = 0; j < VL; j++) ev[j] = 2 * j, od[j] = 2 * j + 1;
    for (size_t i = 0; i < ntx; i += VL) {
        vf r[2][4];
        const float *q[2] = {q0 + 2 * i, q1 + 2 * i};
        for (int a = 0; a < 2; a++) { /* g A^T along the row: e, e+o, e-o, -o */
            vf x = *(const vf *)q[a], y = *(const vf *)(q[a] + VL);
            vf e = __builtin_shuffle(x, y, ev), o = __builtin_shuffle(x, y, od);
            r[a][0] = e, r[a][1] = e + o, r[a][2] = e - o, r[a][3] = -o;
        }
        for (int j = 0; j < 4; j++) { /* then A (...) down the column */
            *(vf *)(dm + (size_t)j * ldx + i) = r[0][j];
            *(vf *)(dm + (size_t)(4 + j) * ldx + i) = r[0][j] + r[1][j];
            *(vf *)(dm + (size_t)(8 + j) * ldx + i) = r[0][j] - r[1][j];
            *(vf *)(dm + (size_t)(12 + j) * ldx + i) = -r[1][j];
        }
    }
}

#undef vf
#undef vi
