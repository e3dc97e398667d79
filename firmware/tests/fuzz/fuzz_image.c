/* libFuzzer target: arbitrary bytes as a TMLM model image (PROTOCOL.md 6), the path a pushed
 * image takes at COMMIT: parse, load its flatbuffer, run its self-test or score a zero feature
 * vector. Errors are fine; a crash, a leak or undefined behaviour is a finding. */
#include <stddef.h>
#include <stdint.h>
#include "tm_image.h"

/* Arena per load, as the fuzz_engine target. */
#define FUZZ_ARENA_BYTES (64u * 1024u)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static uint8_t arena[FUZZ_ARENA_BYTES];
    static tm_model_t model;
    static const float zeros[TM_MAX_FEATURES];
    tm_image_t img;
    if (tm_image_parse(data, size, &img) != TM_OK) return 0;
    if (tm_model_load(&model, data, size, arena, sizeof(arena)) != TM_OK) return 0;
    float score;
    if (model.img.selftest) (void)tm_model_selftest(&model, &score);
    else (void)tm_model_score(&model, zeros, &score);
    return 0;
}
