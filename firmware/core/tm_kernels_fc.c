/* int8 FULLY_CONNECTED kernels (tm_kernels.h): the portable C reference and, on cores with the DSP
 * extension, an SMLAD kernel. Written from the Arm ACLE intrinsics (arm_acle.h, as GCC and Clang ship
 * it), not from CMSIS-NN. Both accumulate the same int32 sum (two's complement, wrapping like the
 * hardware add: SMLAD wraps too) and requantise with TFLite's reference math, so they are bit-exact
 * with each other and with TFLM. */
#include "tm_kernels.h"
#include <string.h>
#include "tm_engine.h"

#if defined(__ARM_FEATURE_DSP) && __ARM_FEATURE_DSP && !defined(TM_ENGINE_PORTABLE)
#define TM_FC_DSP 1
#include <arm_acle.h>
#else
#define TM_FC_DSP 0
#endif

/* bias, requantisation, output zero point and activation clamp of output channel c */
static int8_t fc_output(const tm_fc_args_t *a, uint32_t c, int32_t acc)
{
    if (a->bias) {
        int32_t b;
        memcpy(&b, a->bias + 4 * c, 4); /* may be unaligned in flash */
        acc = (int32_t)((uint32_t)acc + (uint32_t)b); /* wraps like the int32 hardware add */
    }
    if (a->mult_pc)
        acc = tm_mul_by_quantized_multiplier(acc, a->mult_pc[c], (int)a->shift_pc[c]);
    else
        acc = tm_mul_by_quantized_multiplier(acc, a->multiplier, (int)a->shift);
    acc += a->out_off;
    if (acc < a->act_min) acc = a->act_min;
    if (acc > a->act_max) acc = a->act_max;
    return (int8_t)acc;
}

void tm_fc_s8_portable(const tm_fc_args_t *a)
{
    for (uint32_t c = 0; c < a->units; c++) {
        const int8_t *row = a->w + (size_t)c * a->depth;
        int32_t acc = 0;
        for (uint32_t d = 0; d < a->depth; d++)
            acc += (int32_t)row[d] * ((int32_t)a->x[d] + a->in_off);
        a->y[c] = fc_output(a, c, acc);
    }
}

#if TM_FC_DSP
/* rotate right by one byte (GCC's arm_acle.h has no __ror; this idiom compiles to ROR) */
static inline uint32_t ror8(uint32_t v) { return (v >> 8) | (v << 24); }

/* four int8 from any alignment (the M4 loads unaligned words; memcpy says so to the compiler) */
static inline int8x4_t load4(const int8_t *p)
{
    int8x4_t v;
    memcpy(&v, p, 4);
    return v;
}

/* The four inputs x[d..d+3] plus the input offset as two pairs of int16: {x0, x2} and {x1, x3}
 * (SXTAB16 sign-extends bytes 0 and 2 and adds them to the offset's halves; the rotation by 8
 * brings bytes 1 and 3 there). x + in_off is within [-255, 255], so no pair ever overflows. */
#define X_PAIRS(xv, off2, ev, od) \
    do { (ev) = __sxtab16((off2), (xv)); (od) = __sxtab16((off2), (int8x4_t)ror8((uint32_t)(xv))); } while (0)
/* acc += w[d..d+3] . (x[d..d+3] + in_off): the weights split the same way, two SMLADs */
#define MAC4(acc, wv, ev, od) \
    do { (acc) = __smlad(__sxtb16(wv), (ev), (acc)); \
         (acc) = __smlad(__sxtb16((int8x4_t)ror8((uint32_t)(wv))), (od), (acc)); } while (0)

static void fc_dsp(const tm_fc_args_t *a)
{
    const uint32_t depth = a->depth, depth4 = depth & ~3u;
    const int32_t in_off = a->in_off;
    /* in_off in both halves: (uint16_t) keeps a negative offset out of the upper half */
    const int16x2_t off2 = (int16x2_t)(((uint32_t)(uint16_t)in_off << 16) | (uint16_t)in_off);
    const int8_t *x = a->x;
    uint32_t c = 0;
    /* four output rows at a time: each input word is loaded and widened once for all four */
    for (; c + 4 <= a->units; c += 4) {
        const int8_t *w0 = a->w + (size_t)c * depth;
        const int8_t *w1 = w0 + depth, *w2 = w1 + depth, *w3 = w2 + depth;
        int32_t acc0 = 0, acc1 = 0, acc2 = 0, acc3 = 0;
        uint32_t d = 0;
        for (; d < depth4; d += 4) {
            int16x2_t ev, od;
            X_PAIRS(load4(x + d), off2, ev, od);
            MAC4(acc0, load4(w0 + d), ev, od);
            MAC4(acc1, load4(w1 + d), ev, od);
            MAC4(acc2, load4(w2 + d), ev, od);
            MAC4(acc3, load4(w3 + d), ev, od);
        }
        for (; d < depth; d++) {
            int32_t xd = (int32_t)x[d] + in_off;
            acc0 += (int32_t)w0[d] * xd;
            acc1 += (int32_t)w1[d] * xd;
            acc2 += (int32_t)w2[d] * xd;
            acc3 += (int32_t)w3[d] * xd;
        }
        a->y[c] = fc_output(a, c, acc0);
        a->y[c + 1] = fc_output(a, c + 1, acc1);
        a->y[c + 2] = fc_output(a, c + 2, acc2);
        a->y[c + 3] = fc_output(a, c + 3, acc3);
    }
    /* the last units % 4 rows one at a time */
    for (; c < a->units; c++) {
        const int8_t *w0 = a->w + (size_t)c * depth;
        int32_t acc0 = 0;
        uint32_t d = 0;
        for (; d < depth4; d += 4) {
            int16x2_t ev, od;
            X_PAIRS(load4(x + d), off2, ev, od);
            MAC4(acc0, load4(w0 + d), ev, od);
        }
        for (; d < depth; d++) acc0 += (int32_t)w0[d] * ((int32_t)x[d] + in_off);
        a->y[c] = fc_output(a, c, acc0);
    }
}
#endif

void tm_fc_s8(const tm_fc_args_t *a)
{
#if TM_FC_DSP
    fc_dsp(a);
#else
    tm_fc_s8_portable(a);
#endif
}

const char *tm_fc_kernel_name(void) { return TM_FC_DSP ? "dsp-smlad" : "portable"; }
