/* Feature extraction against the Python golden vectors (PROTOCOL.md 8: 1e-4 relative or 1e-5
 * absolute per feature), and the shaft estimate on a known tone. */
#include <math.h>
#include <string.h>
#include "features_gen.h"
#include "testutil.h"
#include "tm_features.h"

static tm_feat_work_t work;
static float window[TM_WINDOW * TM_AXES];

int main(void)
{
    size_t n = sizeof(FEATURE_VECTORS) / sizeof(FEATURE_VECTORS[0]);
    CHECK(n >= 3);
    double worst_rel = 0;
    for (size_t v = 0; v < n; v++) {
        const feature_vec_t *fv = &FEATURE_VECTORS[v];
        CHECK_EQ(fv->n_samples, TM_WINDOW);
        CHECK_EQ(fv->n_features, TM_N_FEATURES);
        float out[TM_N_FEATURES], shaft;
        tm_features_extract(fv->samples, out, &shaft, &work);
        for (int i = 0; i < TM_N_FEATURES; i++) {
            double want = fv->features[i], got = out[i], err = fabs(got - want);
            int ok = err <= fv->abs || err <= fv->rel * fabs(want);
            if (fabs(want) > 1e-3 && err / fabs(want) > worst_rel) worst_rel = err / fabs(want);
            if (!ok) {
                fprintf(stderr, "%s feature %d: %.9g, want %.9g\n", fv->name, i, got, want);
                g_failures++;
            }
        }
    }
    printf("%zu feature vectors within tolerance; worst relative error %.2e\n", n, worst_rel);
    for (int i = 0; i < TM_WINDOW; i++) {
        float s = sinf(2.0f * 3.14159265f * 25.0f * i / TM_SAMPLE_RATE);
        window[i * 3] = 0.5f * s;
        window[i * 3 + 1] = 0.1f * s;
        window[i * 3 + 2] = 0.0f;
    }
    float out[TM_N_FEATURES], shaft = 0;
    tm_features_extract(window, out, &shaft, &work);
    CHECK(fabsf(shaft - 25.0f) < 1.0f);
    CHECK(fabsf(out[0] - 0.5f / sqrtf(2.0f)) < 0.01f);
    return TEST_DONE();
}
