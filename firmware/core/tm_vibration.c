#include "tm_vibration.h"
#include <math.h>
#include <string.h>

#define PI_F 3.14159265f
/* Sensor noise, g rms per axis (as app/fleet/vibration.py DEFAULT_NOISE_G). */
#define NOISE_G 0.012f
/* Structural resonance rung by bearing impacts, Hz, and its damping ratio (as the Python sim). */
#define RESONANCE_HZ 1250.0f
#define RESONANCE_DAMPING 0.05f
/* Peak g of one bearing impact at severity 1, split over the axes. */
#define BEARING_IMPACT_G 1.2f
static const float kBearingAxes[3] = {1.0f, 0.75f, 0.35f};
/* SKF 6205 ball-pass orders: (n/2)(1 -+ d/D) with n = 9, d/D = 7.94/39.04. */
#define BPFO_ORDER 3.5848f
#define BPFI_ORDER 5.4152f
/* Random slip of rolling elements: the impact period varies by this fraction. */
#define BEARING_SLIP 0.015f

typedef struct { uint8_t m; float x, y, z; } line_t; /* m = 2 * order */
static const line_t kBase[] = {{2, 0.060f, 0.045f, 0.015f}, {4, 0.020f, 0.016f, 0.012f}, {6, 0.008f, 0.007f, 0.005f}};
static const line_t kImbalance[] = {{2, 0.45f, 0.38f, 0.04f}};
static const line_t kMisalign[] = {{2, 0.04f, 0.03f, 0.10f}, {4, 0.22f, 0.18f, 0.35f}, {6, 0.10f, 0.08f, 0.16f}};

static uint32_t next_u32(tm_vib_t *v)
{
    uint32_t x = v->rng;
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    return v->rng = x;
}
static float uniform(tm_vib_t *v) { return (float)(next_u32(v) >> 8) * (2.0f / 16777216.0f) - 1.0f; } /* [-1, 1) */
static float gauss(tm_vib_t *v) { return (uniform(v) + uniform(v) + uniform(v) + uniform(v)) * 0.8660254f; }

static void add_lines(tm_vib_t *v, const line_t *l, int n, float scale)
{
    for (int i = 0; i < n; i++) {
        v->amp[l[i].m][0] += l[i].x * scale;
        v->amp[l[i].m][1] += l[i].y * scale;
        v->amp[l[i].m][2] += l[i].z * scale;
    }
}

static void rebuild(tm_vib_t *v)
{
    memset(v->amp, 0, sizeof(v->amp));
    add_lines(v, kBase, 3, 1.0f);
    float s = v->severity;
    if (v->mask & 1) add_lines(v, kImbalance, 1, s);
    if (v->mask & 2) add_lines(v, kMisalign, 3, s);
    if (v->mask & 16) {
        for (int k = 0; k < 6; k++) { /* half orders k + 0.5 */
            line_t l = {(uint8_t)(2 * k + 1), 0.05f / (k + 1), 0.06f / (k + 1), 0.015f / (k + 1)};
            add_lines(v, &l, 1, s);
        }
        for (int k = 1; k <= 10; k++) {
            float r = 1.0f / sqrtf((float)k);
            line_t l = {(uint8_t)(2 * k), 0.10f * r, 0.12f * r, 0.03f * r};
            add_lines(v, &l, 1, s);
        }
    }
    for (int m = 0; m < TM_VIB_HALF_ORDERS; m++)
        for (int a = 0; a < 3; a++) v->amp[m][a] *= v->gain[m][a];
}

void tm_vib_init(tm_vib_t *v, uint32_t seed, float shaft_hz, float sample_rate)
{
    memset(v, 0, sizeof(*v));
    v->rng = seed * 2654435761u + 0x9E3779B9u;
    if (!v->rng) v->rng = 1;
    v->shaft_hz = shaft_hz;
    v->sample_rate = sample_rate;
    v->pre = 1.0f;
    float dphi = PI_F * shaft_hz / sample_rate; /* half the shaft angle per sample */
    v->rot_re = cosf(dphi);
    v->rot_im = sinf(dphi);
    for (int m = 0; m < TM_VIB_HALF_ORDERS; m++)
        for (int a = 0; a < 3; a++) { /* each machine differs: +-25 % gain, random phase per line */
            v->gain[m][a] = 1.0f + 0.25f * uniform(v);
            float ph = PI_F * uniform(v);
            v->cph[m][a] = cosf(ph);
            v->sph[m][a] = sinf(ph);
        }
    float w = 2.0f * PI_F * RESONANCE_HZ / sample_rate;
    float r = expf(-RESONANCE_DAMPING * w);
    v->a1 = 2.0f * r * cosf(w);
    v->a2 = -r * r;
    v->in_gain = sinf(w); /* impulse response peak ~ 1 per unit input */
    v->next_outer = v->next_inner = 1.0f;
    rebuild(v);
}

void tm_vib_set_fault(tm_vib_t *v, uint8_t mask, float severity)
{
    if (!(severity >= 0.0f)) severity = 0.0f; /* also NaN */
    if (severity > 1.0f) severity = 1.0f;
    v->mask = mask & 31u;
    v->severity = severity;
    rebuild(v);
}

void tm_vib_generate(tm_vib_t *v, float *out, int n)
{
    float period_o = v->sample_rate / (BPFO_ORDER * v->shaft_hz);
    float period_i = v->sample_rate / (BPFI_ORDER * v->shaft_hz);
    for (int i = 0; i < n; i++) {
        float acc[3] = {0, 0, 0};
        float re = v->pre, im = v->pim; /* phasor of m half orders, built by repeated multiplication */
        for (int m = 1; m < TM_VIB_HALF_ORDERS; m++) {
            if (m > 1) {
                float t = re * v->pre - im * v->pim;
                im = re * v->pim + im * v->pre;
                re = t;
            }
            for (int a = 0; a < 3; a++)
                if (v->amp[m][a] != 0.0f) acc[a] += v->amp[m][a] * (im * v->cph[m][a] + re * v->sph[m][a]);
        }
        float impulse = 0.0f;
        if ((v->mask & 4) && --v->next_outer <= 0.0f) {
            impulse += BEARING_IMPACT_G * v->severity;
            v->next_outer += period_o * (1.0f + BEARING_SLIP * uniform(v));
        }
        if ((v->mask & 8) && --v->next_inner <= 0.0f) {
            impulse += BEARING_IMPACT_G * v->severity * (0.6f + 0.4f * v->pre * v->pre); /* load-zone modulation */
            v->next_inner += period_i * (1.0f + BEARING_SLIP * uniform(v));
        }
        for (int a = 0; a < 3; a++) {
            float y = v->a1 * v->y1[a] + v->a2 * v->y2[a] + impulse * kBearingAxes[a] * v->in_gain;
            v->y2[a] = v->y1[a];
            v->y1[a] = y;
            out[i * 3 + a] = acc[a] + y + NOISE_G * gauss(v);
        }
        float t = v->pre * v->rot_re - v->pim * v->rot_im;
        v->pim = v->pre * v->rot_im + v->pim * v->rot_re;
        v->pre = t;
    }
    float norm = 1.0f / sqrtf(v->pre * v->pre + v->pim * v->pim); /* keep the phasor on the unit circle */
    v->pre *= norm;
    v->pim *= norm;
    v->samples += (uint32_t)n;
}
