/* int8 inference engine for the dense autoencoders the project's converter emits. Reads the
 * .tflite flatbuffer in place (weights stay in flash), plans activations into a caller-given
 * arena, and computes with TFLite's reference integer math so outputs are bit-exact with TFLM.
 * Ops: FULLY_CONNECTED (fused NONE/RELU/RELU6/RELU_N1_TO_1; per-tensor or per-channel weights,
 * int32 bias), QUANTIZE (int8 -> int8), RESHAPE. Anything else is refused at load time. */
#ifndef TM_ENGINE_H
#define TM_ENGINE_H
#include <stddef.h>
#include <stdint.h>
#include "tm_config.h"

typedef struct {
    const int8_t *const_data; /* weights / bias in the flatbuffer, NULL for activations */
    int8_t *data;             /* activations: in the arena once planned */
    uint32_t bytes;           /* element count * element size */
    uint32_t elems;
    uint8_t type;             /* TFLite TensorType */
    float scale;
    int32_t zero_point;
    uint32_t n_scales;        /* per-channel scales count (1 = per tensor) */
    const uint8_t *scales;    /* f32 LE vector in place */
    int16_t first, last;      /* op lifetime for planning */
    uint32_t offset;          /* arena offset */
    uint16_t dims[4];
    uint8_t rank;
} tm_tensor_t;

typedef struct {
    uint8_t kind;             /* TM_OP_* */
    uint8_t activation;
    int16_t in, w, bias, out; /* tensor indices (-1 none) */
    int32_t act_min, act_max;
    int32_t multiplier;       /* per tensor */
    int32_t shift;
    int32_t *mult_pc;         /* per channel, in the arena's persistent part */
    int32_t *shift_pc;
    uint32_t depth, units;
} tm_op_t;

typedef struct {
    tm_tensor_t tensors[TM_MAX_TENSORS];
    tm_op_t ops[TM_MAX_OPS];
    uint16_t n_tensors, n_ops;
    int16_t input, output;
    uint8_t *arena;
    size_t arena_size, arena_used;
    uint16_t unsupported_op; /* builtin code of the refused op, for the error message */
} tm_engine_t;

/* Load a model. Returns TM_OK, TM_E_LOAD_FAILED (malformed / truncated flatbuffer, bad shapes),
 * TM_E_UNSUPPORTED_OP, or TM_E_ARENA_TOO_SMALL (arena_used says how much is needed). */
int tm_engine_load(tm_engine_t *e, const uint8_t *model, size_t len, uint8_t *arena, size_t arena_size);
/* Run the graph on the input tensor's buffer; TM_OK or TM_E_INTERNAL. */
int tm_engine_invoke(tm_engine_t *e);
tm_tensor_t *tm_engine_input(tm_engine_t *e);
tm_tensor_t *tm_engine_output(tm_engine_t *e);

/* TFLite reference integer math (exposed for tests). */
int32_t tm_mul_by_quantized_multiplier(int32_t x, int32_t multiplier, int shift);
void tm_quantize_multiplier(double real, int32_t *multiplier, int *shift);

#endif
