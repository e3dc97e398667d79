#include "tm_image.h"
#include <math.h>
#include <string.h>

enum { SEC_META = 1, SEC_NORM = 2, SEC_TFLITE = 3, SEC_SELFTEST = 4 };

static uint32_t le32(const uint8_t *p) { return p[0] | (p[1] << 8) | (p[2] << 16) | ((uint32_t)p[3] << 24); }

float tm_f32le(const uint8_t *p)
{
    uint32_t u = le32(p);
    float f;
    memcpy(&f, &u, 4);
    return f;
}

int tm_image_parse(const uint8_t *d, size_t len, tm_image_t *img)
{
    memset(img, 0, sizeof(*img));
    if (len < 16 || memcmp(d, "TMLM", 4) != 0 || (d[4] | (d[5] << 8)) != 1 || le32(d + 8) != len)
        return TM_E_BAD_IMAGE;
    uint16_t n_sections = (uint16_t)(d[6] | (d[7] << 8));
    size_t pos = 16;
    const uint8_t *meta = NULL, *norm = NULL, *st = NULL;
    uint32_t meta_len = 0, norm_len = 0, st_len = 0;
    for (uint16_t i = 0; i < n_sections; i++) {
        if (pos + 16 > len) return TM_E_BAD_IMAGE;
        uint32_t type = le32(d + pos), slen = le32(d + pos + 4);
        pos += 16;
        if (slen > len - pos) return TM_E_BAD_IMAGE;
        const uint8_t *data = d + pos;
        if (type == SEC_META) { meta = data; meta_len = slen; }
        else if (type == SEC_NORM) { norm = data; norm_len = slen; }
        else if (type == SEC_TFLITE) { img->tflite = data; img->tflite_len = slen; }
        else if (type == SEC_SELFTEST) { st = data; st_len = slen; }
        pos += slen + ((16 - slen % 16) % 16);
    }
    if (!meta || !norm || !img->tflite || meta_len < 13) return TM_E_BAD_IMAGE;
    img->version = le32(meta);
    img->threshold = tm_f32le(meta + 4);
    img->n_features = (uint16_t)(meta[8] | (meta[9] << 8));
    uint16_t spec = (uint16_t)(meta[10] | (meta[11] << 8));
    img->name.len = meta[12];
    img->name.p = meta + 13;
    if (spec != TM_FEATURE_SPEC_ID || 13u + img->name.len > meta_len || !tm_utf8_valid(img->name.p, img->name.len))
        return TM_E_BAD_IMAGE;
    if (img->n_features == 0 || img->n_features > TM_MAX_FEATURES || norm_len != 8u * img->n_features)
        return TM_E_BAD_IMAGE;
    img->norm = norm;
    if (st) {
        if (st_len != 4u * img->n_features + 8) return TM_E_BAD_IMAGE;
        img->selftest = st;
    }
    return TM_OK;
}

int tm_model_load(tm_model_t *m, const uint8_t *image, size_t len, uint8_t *arena, size_t arena_size)
{
    int rc = tm_image_parse(image, len, &m->img);
    if (rc) return rc;
    rc = tm_engine_load(&m->eng, m->img.tflite, m->img.tflite_len, arena, arena_size);
    if (rc) return rc;
    tm_tensor_t *in = tm_engine_input(&m->eng), *out = tm_engine_output(&m->eng);
    uint16_t n = m->img.n_features;
    if (in->elems != n || out->elems != n || in->rank != 2 || out->rank != 2 || in->dims[0] != 1 || out->dims[0] != 1)
        return TM_E_BAD_IMAGE; /* the flatbuffer does not take this image's features */
    m->in_scale = in->scale;
    m->in_zp = in->zero_point;
    m->out_scale = out->scale;
    m->out_zp = out->zero_point;
    return TM_OK;
}

int tm_model_score(tm_model_t *m, const float *features, float *score)
{
    tm_tensor_t *in = tm_engine_input(&m->eng), *out = tm_engine_output(&m->eng);
    uint16_t n = m->img.n_features;
    float *x = m->x;
    for (uint16_t i = 0; i < n; i++) {
        float mean = tm_f32le(m->img.norm + 4 * i), std = tm_f32le(m->img.norm + 4 * (n + i));
        x[i] = (features[i] - mean) / std;
        float v = x[i] / m->in_scale;
        /* round half away from zero exactly as numpy does it in f32: sign(v) * floor(|v| + 0.5) */
        float r = floorf(fabsf(v) + 0.5f);
        if (v < 0) r = -r;
        r += (float)m->in_zp;
        if (r < -128.0f) r = -128.0f;
        if (r > 127.0f) r = 127.0f;
        if (r != r) r = 0.0f; /* NaN feature: never undefined behaviour */
        in->data[i] = (int8_t)r;
    }
    int rc = tm_engine_invoke(&m->eng);
    if (rc) return rc;
    float total = 0.0f;
    for (uint16_t i = 0; i < n; i++) {
        float y = ((float)out->data[i] - (float)m->out_zp) * m->out_scale;
        float d = y - x[i];
        total = total + d * d;
    }
    *score = total / (float)n;
    return TM_OK;
}

int tm_model_selftest(tm_model_t *m, float *score)
{
    if (!m->img.selftest) return TM_E_BAD_IMAGE;
    uint16_t n = m->img.n_features;
    static float f[TM_MAX_FEATURES]; /* not on the stack: 2.5 KB */
    for (uint16_t i = 0; i < n; i++) f[i] = tm_f32le(m->img.selftest + 4 * i);
    float expected = tm_f32le(m->img.selftest + 4 * n), tol = tm_f32le(m->img.selftest + 4 * n + 4);
    int rc = tm_model_score(m, f, score);
    if (rc) return rc;
    return fabsf(*score - expected) <= tol ? TM_OK : TM_E_SELFTEST_FAILED;
}
