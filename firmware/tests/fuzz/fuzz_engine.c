/* libFuzzer target: arbitrary bytes as a .tflite flatbuffer. Whatever tm_engine_load accepts must
 * also run (tm_engine_invoke) on an input of every sign and read back its output without touching
 * memory outside the model, the arena or the engine (ASan + UBSan watch). */
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include "tm_engine.h"

/* Arena per load: the largest committed model (MLPerf AD) needs 22 KB; a bigger need is refused. */
#define FUZZ_ARENA_BYTES (64u * 1024u)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static volatile int32_t g_sink; /* keeps the output reads */

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static uint8_t arena[FUZZ_ARENA_BYTES];
    static tm_engine_t eng;
    if (tm_engine_load(&eng, data, size, arena, sizeof(arena)) != TM_OK) return 0;
    tm_tensor_t *in = tm_engine_input(&eng), *out = tm_engine_output(&eng);
    for (uint32_t k = 0; k < in->bytes; k++) in->data[k] = (int8_t)(k * 37u);
    if (tm_engine_invoke(&eng) != TM_OK) __builtin_trap(); /* loaded but cannot run: an engine bug */
    for (uint32_t k = 0; k < out->bytes; k++) g_sink = g_sink + out->data[k];
    return 0;
}
