/* int8 FULLY_CONNECTED kernels (tm_kernels.h): the portable C reference and, on cores with the DSP
 * extension, an SMLAD kernel. Written from the Arm ACLE intrinsics (arm_acle.h, as GCC and Clang ship
 * it), not from CMSIS-NN. Both accumulate the same int32 sum (two's complement, wrapping like the
 * hardware add: SMLAD wraps too) and requantise with TFLite's reference math (the DSP kernel with
 * tm_fc_requantize, an exact rewrite of it), so they are bit-exact with each other and with TFLM.
 * benchmarks/firmware_footprint.py measures both on the emulated Cortex-M4 (README, Benchmarks). */
#include "tm_kernels.h"
#include <string.h>
#include "tm_engine.h"

#if defined(__ARM_FEATURE_DSP) && __ARM_FEATURE_DSP && !defined(TM_ENGINE_PORTABLE)
#define TM_FC_DSP 1
#include <arm_acle.h>
#else
#define TM_FC_DSP 0
#endif

/* tm_mul_by_quantized_multiplier without its branches and 64-bit division. The doubling high
 * multiply's (ab + nudge) / 2^31, rounded toward zero, equals (ab + 2^30) >> 31 (arithmetic shift)
 * for either sign of ab: for ab >= 0 the sum is >= 0 and truncation is the floor; for ab < 0 the
 * sum ab + 1 - 2^30 is negative, truncation is the ceiling, ceil(n / 2^31) = floor((n + 2^31 - 1)
 * / 2^31), and n + 2^31 - 1 = ab + 2^30. Its only saturating case (INT32_MIN * INT32_MIN) is kept.
 * The rounding shift is the reference's. firmware/tests/test_engine.c compares the two. */
static inline int32_t requantize(int32_t x, int32_t multiplier, int32_t shift)
{
    int32_t left = shift > 0 ? shift : 0, right = shift > 0 ? 0 : -shift;
    int32_t a = (int32_t)((uint32_t)x << left);
    int32_t high = a == INT32_MIN && multiplier == INT32_MIN
                       ? INT32_MAX
                       : (int32_t)(((int64_t)a * multiplier + (1ll << 30)) >> 31);
    int32_t mask = (int32_t)((1u << right) - 1u);
    int32_t remainder = high & mask, threshold = (mask >> 1) + (high < 0);
    return (high >> right) + (remainder > threshold);
}

int32_t tm_fc_requantize(int32_t x, int32_t multiplier, int32_t shift) { return requantize(x, multiplier, shift); }

static inline int32_t add_bias(const tm_fc_args_t *a, uint32_t c, int32_t acc)
{
    if (!a->bias) return acc;
    int32_t b;
    memcpy(&b, a->bias + 4 * c, 4); /* may be unaligned in flash */
    return (int32_t)((uint32_t)acc + (uint32_t)b); /* wraps like the int32 hardware add */
}

static inline int8_t clamp_out(const tm_fc_args_t *a, int32_t v)
{
    v += a->out_off;
    if (v < a->act_min) v = a->act_min;
    if (v > a->act_max) v = a->act_max;
    return (int8_t)v;
}

/* bias, requantisation, output zero point and activation clamp of output channel c: the reference */
static int8_t fc_output(const tm_fc_args_t *a, uint32_t c, int32_t acc)
{
    acc = add_bias(a, c, acc);
    if (a->mult_pc)
        acc = tm_mul_by_quantized_multiplier(acc, a->mult_pc[c], (int)a->shift_pc[c]);
    else
        acc = tm_mul_by_quantized_multiplier(acc, a->multiplier, (int)a->shift);
    return clamp_out(a, acc);
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
/* SXTB16 / SXTAB16 of the operand rotated right by 8 (bytes 1 and 3): one instruction. GCC's
 * arm_acle.h has no __ror and does not fold a rotate into these, so they are written out as
 * CMSIS writes its __SXTB16_RORn; the rest of the kernel uses the ACLE intrinsics. */
static inline int16x2_t sxtb16_ror8(int8x4_t v)
{
    int16x2_t r;
    __asm__("sxtb16 %0, %1, ror #8" : "=r"(r) : "r"(v));
    return r;
}
static inline int16x2_t sxtab16_ror8(int16x2_t a, int8x4_t v)
{
    int16x2_t r;
    __asm__("sxtab16 %0, %1, %2, ror #8" : "=r"(r) : "r"(a), "r"(v));
    return r;
}

/* four int8 from any alignment (the M4 loads unaligned words; memcpy says so to the compiler) */
static inline int8x4_t load4(const int8_t *p)
{
    int8x4_t v;
    memcpy(&v, p, 4);
    return v;
}

/* acc += w[0..3] . {ev, od}: the weights split into {w0, w2} and {w1, w3} like the inputs, two SMLADs */
static inline int32_t mac4(int32_t acc, int8x4_t wv, int16x2_t ev, int16x2_t od)
{
    acc = __smlad(__sxtb16(wv), ev, acc);
    return __smlad(sxtb16_ror8(wv), od, acc);
}

/* fc_output with the branch-free requantisation */
static inline int8_t fc_output_fast(const tm_fc_args_t *a, uint32_t c, int32_t acc)
{
    acc = add_bias(a, c, acc);
    if (a->mult_pc)
        acc = requantize(acc, a->mult_pc[c], a->shift_pc[c]);
    else
        acc = requantize(acc, a->multiplier, a->shift);
    return clamp_out(a, acc);
}

/* Output rows per pass over the inputs (the loop body below is written out for three). Each input
 * word is loaded and widened once for all of them; three rows keep the inner loop's 3 streams of weights, the inputs, 3 accumulators and the
 * operands in the core's 14 registers (four rows spill to the stack every iteration with GCC 12:
 * 671k instructions per MLPerf AD inference against 597k for three, EMULATED). */
#define FC_ROWS 3

static void fc_dsp(const tm_fc_args_t *a)
{
    const uint32_t depth = a->depth, depth4 = depth & ~3u;
    const int32_t in_off = a->in_off;
    /* in_off in both halves: (uint16_t) keeps a negative offset out of the upper half */
    const int16x2_t off2 = (int16x2_t)(((uint32_t)(uint16_t)in_off << 16) | (uint16_t)in_off);
    const int8_t *x = a->x, *x_end4 = a->x + depth4;
    uint32_t c = 0;
    /* The inputs x[d..d+3] plus in_off become two pairs of int16, {x0, x2} and {x1, x3} (SXTAB16
     * adds bytes 0 and 2 to the offset's halves, its rotated form bytes 1 and 3); x + in_off lies in
     * [-255, 255], so no half overflows. Each weight word splits the same way; two SMLADs. */
    for (; c + FC_ROWS <= a->units; c += FC_ROWS) {
        const int8_t *w0 = a->w + (size_t)c * depth;
        const int8_t *w1 = w0 + depth, *w2 = w1 + depth;
        int32_t acc0 = 0, acc1 = 0, acc2 = 0;
        const int8_t *xp = x;
        for (; xp < x_end4; xp += 4, w0 += 4, w1 += 4, w2 += 4) {
            int8x4_t xv = load4(xp);
            int16x2_t ev = __sxtab16(off2, xv), od = sxtab16_ror8(off2, xv);
            acc0 = mac4(acc0, load4(w0), ev, od);
            acc1 = mac4(acc1, load4(w1), ev, od);
            acc2 = mac4(acc2, load4(w2), ev, od);
        }
        for (uint32_t d = depth4; d < depth; d++, w0++, w1++, w2++) {
            int32_t xd = (int32_t)x[d] + in_off;
            acc0 += (int32_t)*w0 * xd;
            acc1 += (int32_t)*w1 * xd;
            acc2 += (int32_t)*w2 * xd;
        }
        a->y[c] = fc_output_fast(a, c, acc0);
        a->y[c + 1] = fc_output_fast(a, c + 1, acc1);
        a->y[c + 2] = fc_output_fast(a, c + 2, acc2);
    }
    /* the last units % FC_ROWS rows one at a time */
    for (; c < a->units; c++) {
        const int8_t *w0 = a->w + (size_t)c * depth;
        int32_t acc0 = 0;
        const int8_t *xp = x;
        for (; xp < x_end4; xp += 4, w0 += 4) {
            int8x4_t xv = load4(xp);
            acc0 = mac4(acc0, load4(w0), __sxtab16(off2, xv), sxtab16_ror8(off2, xv));
        }
        for (uint32_t d = depth4; d < depth; d++, w0++) acc0 += (int32_t)*w0 * ((int32_t)x[d] + in_off);
        a->y[c] = fc_output_fast(a, c, acc0);
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
