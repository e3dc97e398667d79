#include "tm_features.h"
#include <math.h>

static const int kEdges[TM_N_BANDS + 1] = {4, 7, 12, 22, 41, 77, 144, 272, 513};
/* Shaft search range, bins: 9.4 .. 200 Hz covers 560 .. 12000 rpm machines. */
#define SHAFT_BIN_LO 3
#define SHAFT_BIN_HI 64

static float s_cos[TM_WINDOW / 2], s_sin[TM_WINDOW / 2];
static int s_ready;

static void init_tables(void)
{
    /* computed once in double so the f32 tables are correctly rounded */
    for (int k = 0; k < TM_WINDOW / 2; k++) {
        double a = 2.0 * 3.14159265358979323846 * k / TM_WINDOW;
        s_cos[k] = (float)cos(a);
        s_sin[k] = (float)sin(a);
    }
    s_ready = 1;
}

static float cos_n(int n) /* cos(2 pi n / N) for 0 <= n < N */
{
    return n < TM_WINDOW / 2 ? s_cos[n] : -s_cos[n - TM_WINDOW / 2];
}

static void fft(float *re, float *im)
{
    const int n = TM_WINDOW;
    for (int i = 1, j = 0; i < n; i++) {
        int bit = n >> 1;
        for (; j & bit; bit >>= 1) j ^= bit;
        j ^= bit;
        if (i < j) {
            float t = re[i]; re[i] = re[j]; re[j] = t;
            t = im[i]; im[i] = im[j]; im[j] = t;
        }
    }
    for (int len = 2; len <= n; len <<= 1) {
        int step = n / len;
        for (int i = 0; i < n; i += len) {
            for (int k = 0; k < len / 2; k++) {
                float wr = s_cos[k * step], wi = -s_sin[k * step];
                int a = i + k, b = i + k + len / 2;
                float xr = re[b] * wr - im[b] * wi;
                float xi = re[b] * wi + im[b] * wr;
                re[b] = re[a] - xr; im[b] = im[a] - xi;
                re[a] += xr; im[a] += xi;
            }
        }
    }
}

void tm_features_extract(const float *samples, float out[TM_N_FEATURES], float *shaft_hz, tm_feat_work_t *w)
{
    if (!s_ready) init_tables();
    for (int k = 0; k <= TM_WINDOW / 2; k++) w->power[k] = 0.0f;
    for (int axis = 0; axis < TM_AXES; axis++) {
        float *o = out + axis * (4 + TM_N_BANDS);
        float sum = 0.0f, c = 0.0f; /* Kahan: the mean must not drift with 1024 terms */
        for (int i = 0; i < TM_WINDOW; i++) {
            float y = samples[i * TM_AXES + axis] - c, t = sum + y;
            c = (t - sum) - y;
            sum = t;
        }
        float mean = sum / TM_WINDOW;
        float m2 = 0.0f, m4 = 0.0f, peak = 0.0f, c2 = 0.0f, c4 = 0.0f;
        for (int i = 0; i < TM_WINDOW; i++) {
            float d = samples[i * TM_AXES + axis] - mean;
            float d2 = d * d;
            float y = d2 - c2, t = m2 + y;
            c2 = (t - m2) - y;
            m2 = t;
            y = d2 * d2 - c4;
            t = m4 + y;
            c4 = (t - m4) - y;
            m4 = t;
            float a = fabsf(d);
            if (a > peak) peak = a;
            w->re[i] = d * (0.5f - 0.5f * cos_n(i));
            w->im[i] = 0.0f;
        }
        m2 /= TM_WINDOW;
        m4 /= TM_WINDOW;
        float rms = sqrtf(m2);
        o[0] = rms;
        o[1] = peak;
        o[2] = peak / (rms + 1e-9f);
        o[3] = m4 / (m2 * m2 + 1e-12f);
        fft(w->re, w->im);
        for (int b = 0; b < TM_N_BANDS; b++) {
            float e = 0.0f;
            for (int k = kEdges[b]; k < kEdges[b + 1]; k++) {
                float p = (w->re[k] * w->re[k] + w->im[k] * w->im[k]) / TM_WINDOW;
                e += p;
            }
            o[4 + b] = log10f(e + 1e-12f);
        }
        for (int k = 0; k <= TM_WINDOW / 2; k++)
            w->power[k] += w->re[k] * w->re[k] + w->im[k] * w->im[k];
    }
    if (shaft_hz) {
        int best = SHAFT_BIN_LO;
        for (int k = SHAFT_BIN_LO; k < SHAFT_BIN_HI; k++)
            if (w->power[k] > w->power[best]) best = k;
        float a = w->power[best - 1], b = w->power[best], cc = w->power[best + 1];
        float den = a - 2.0f * b + cc;
        float delta = den != 0.0f ? 0.5f * (a - cc) / den : 0.0f; /* parabolic peak interpolation */
        if (delta > 0.5f || delta < -0.5f) delta = 0.0f;
        *shaft_hz = b > 1e-9f ? ((float)best + delta) * TM_SAMPLE_RATE / TM_WINDOW : 0.0f;
    }
}
