/* Feature specification 1 (PROTOCOL.md 8) in float32: per axis rms, peak, crest, kurtosis and 8
 * log band energies of the Hann-windowed 1024-point spectrum; plus a shaft-frequency estimate. */
#ifndef TM_FEATURES_H
#define TM_FEATURES_H
#include <stdint.h>

#define TM_WINDOW 1024
#define TM_AXES 3
#define TM_SAMPLE_RATE 3200
#define TM_N_BANDS 8
#define TM_N_FEATURES (TM_AXES * (4 + TM_N_BANDS))

typedef struct {
    float re[TM_WINDOW], im[TM_WINDOW];
    float power[TM_WINDOW / 2 + 1]; /* summed over axes, for the shaft estimate */
} tm_feat_work_t;

/* samples: interleaved x0 y0 z0 x1 ... (TM_WINDOW frames), in g. shaft_hz may be NULL. */
void tm_features_extract(const float *samples, float out[TM_N_FEATURES], float *shaft_hz, tm_feat_work_t *w);

#endif
