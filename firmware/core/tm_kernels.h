/* The engine's int8 fully-connected kernel, apart from the graph code so each target gets the fastest
 * path its instruction set allows: on a core with the Armv7E-M DSP extension (Cortex-M4/M7/M33,
 * `__ARM_FEATURE_DSP`) a kernel built on SMLAD (two 16x16 multiply-accumulates per instruction),
 * elsewhere the portable C reference. Both compute TFLite's reference integer arithmetic, so the
 * outputs are bit-exact with TFLM either way (tests: firmware/tests/test_engine.c on the host for
 * the portable path, tests/firmware/test_qemu_engine.py on the emulated Cortex-M4 for the DSP one).
 * Define TM_ENGINE_PORTABLE to build the portable path on a DSP core (the benchmark's reference). */
#ifndef TM_KERNELS_H
#define TM_KERNELS_H
#include <stdint.h>

/* One FULLY_CONNECTED op with batch 1: y[c] = clamp(requant(bias[c] + sum_d w[c][d] * (x[d] + in_off))
 * + out_off, act_min, act_max) for c < units. Weights are row-major [units][depth], as TFLite stores
 * them; they and the bias may sit at any alignment (read in place from the flatbuffer). */
typedef struct {
    const int8_t *x;        /* depth inputs */
    const int8_t *w;        /* units * depth weights */
    const uint8_t *bias;    /* units int32 LE, or NULL */
    int8_t *y;              /* units outputs */
    uint32_t depth, units;
    int32_t in_off;         /* minus the input's zero point */
    int32_t out_off;        /* the output's zero point */
    int32_t act_min, act_max;
    int32_t multiplier, shift;            /* per tensor, used when mult_pc is NULL */
    const int32_t *mult_pc, *shift_pc;    /* per output channel */
} tm_fc_args_t;

/* The kernel this build selected (DSP when the target has it, unless TM_ENGINE_PORTABLE). */
void tm_fc_s8(const tm_fc_args_t *a);
/* The portable C reference, compiled on every target. */
void tm_fc_s8_portable(const tm_fc_args_t *a);
/* tm_mul_by_quantized_multiplier rewritten without branches or 64-bit division (the DSP kernel's;
 * equal to it for every input, which the host test checks). */
int32_t tm_fc_requantize(int32_t x, int32_t multiplier, int32_t shift);
/* Name of the kernel tm_fc_s8 runs ("dsp-smlad" or "portable"), for benchmarks and logs. */
const char *tm_fc_kernel_name(void);

#endif
