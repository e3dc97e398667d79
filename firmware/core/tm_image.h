/* Model image "TMLM" (PROTOCOL.md 6) read in place, and the anomaly score of PROTOCOL.md 6.1. */
#ifndef TM_IMAGE_H
#define TM_IMAGE_H
#include <stddef.h>
#include <stdint.h>

/* The only feature specification images may declare (PROTOCOL.md 8). */
#define TM_FEATURE_SPEC_ID 1u
#include "tm_engine.h"
#include "tm_proto.h"

typedef struct {
    uint32_t version;
    float threshold;
    uint16_t n_features;
    tm_str_t name;            /* points into the image */
    const uint8_t *norm;      /* mean f32[n], std f32[n] */
    const uint8_t *tflite;
    uint32_t tflite_len;
    const uint8_t *selftest;  /* input f32[n], expected f32, tolerance f32; NULL when absent */
} tm_image_t;

/* TM_OK or TM_E_BAD_IMAGE. */
int tm_image_parse(const uint8_t *data, size_t len, tm_image_t *img);

typedef struct {
    tm_image_t img;
    tm_engine_t eng;
    float in_scale, out_scale;
    int32_t in_zp, out_zp;
    float x[TM_MAX_FEATURES]; /* normalised input, kept for the score */
} tm_model_t;

/* Parse the image and load its flatbuffer into the engine: TM_OK, BAD_IMAGE, LOAD_FAILED,
 * UNSUPPORTED_OP or ARENA_TOO_SMALL. */
int tm_model_load(tm_model_t *m, const uint8_t *image, size_t len, uint8_t *arena, size_t arena_size);
/* Score raw features (n_features of them) exactly as app/ml/tflm.py Scorer does. */
int tm_model_score(tm_model_t *m, const float *features, float *score);
/* Run the image's self-test: TM_OK, BAD_IMAGE (no SELFTEST section) or SELFTEST_FAILED. */
int tm_model_selftest(tm_model_t *m, float *score);
/* Little-endian f32 at p (sections are aligned, but flash reads stay byte-safe). */
float tm_f32le(const uint8_t *p);

#endif
