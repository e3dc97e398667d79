/* Deterministic 3-axis rotary-machine vibration source for the emulator and host tests: a C port
 * of the idea of app/fleet/vibration.py (same line amplitudes, noise level, bearing resonance),
 * with the fault modes SET_FAULT switches. No trig per sample: half-order phasors. */
#ifndef TM_VIBRATION_H
#define TM_VIBRATION_H
#include <stdint.h>

#define TM_VIB_HALF_ORDERS 21 /* m = 1..20: orders 0.5 .. 10 */

typedef struct {
    uint32_t rng;
    float shaft_hz, sample_rate;
    float pre, pim;            /* phasor of half the shaft angle */
    float rot_re, rot_im;      /* its per-sample rotation */
    float gain[TM_VIB_HALF_ORDERS][3], cph[TM_VIB_HALF_ORDERS][3], sph[TM_VIB_HALF_ORDERS][3];
    float amp[TM_VIB_HALF_ORDERS][3];
    uint8_t mask;
    float severity;
    float y1[3], y2[3], a1, a2, in_gain; /* bearing resonance, per axis */
    float next_outer, next_inner;         /* samples until the next impact */
    uint32_t samples;
} tm_vib_t;

void tm_vib_init(tm_vib_t *v, uint32_t seed, float shaft_hz, float sample_rate);
void tm_vib_set_fault(tm_vib_t *v, uint8_t mask, float severity);
/* n frames, interleaved x y z, in g. */
void tm_vib_generate(tm_vib_t *v, float *out, int n);

#endif
