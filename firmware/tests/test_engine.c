/* Inference engine: bit-exact with the TFLM interpreter on the project's autoencoders and the
 * MLPerf Tiny AD autoencoder (outputs recorded by gen_models.py), and every bad model refused
 * with its error code, never run. */
#include <stdlib.h>
#include <string.h>
#include "testutil.h"
#include "tm_engine.h"
#include "tm_image.h"
#include "tm_kernels.h"

static uint8_t model[400 * 1024];
static uint8_t io[64 * 1024];
static uint8_t arena[256 * 1024];
static uint8_t copy[400 * 1024];
static tm_engine_t eng;

static uint32_t u32(const uint8_t *p) { return p[0] | (p[1] << 8) | (p[2] << 16) | ((uint32_t)p[3] << 24); }

/* The flatbuffer of a generated model: <name>.tflite, or the TFLITE section of <name>_v4.tmlm
 * (the MLPerf AE is committed once, inside its image). Returns its length; *fb points at it. */
static const uint8_t *fb;
static long load_model(const char *name)
{
    char path[512];
    snprintf(path, sizeof(path), "%s/%s.tflite", TM_DATA_DIR, name);
    FILE *f = fopen(path, "rb");
    fb = model;
    if (f) {
        fclose(f);
        return read_file(path, model, sizeof(model));
    }
    snprintf(path, sizeof(path), "%s/%s_v4.tmlm", TM_DATA_DIR, name);
    long len = read_file(path, model, sizeof(model));
    tm_image_t img;
    if (len <= 0 || tm_image_parse(model, (size_t)len, &img) != TM_OK) return -1;
    fb = img.tflite;
    return (long)img.tflite_len;
}

static void bit_exact(const char *name, long tflm_arena)
{
    long len = load_model(name);
    CHECK(len > 0);
    if (len <= 0) return;
    char path[512];
    snprintf(path, sizeof(path), "%s/%s.io", TM_DATA_DIR, name);
    long iolen = read_file(path, io, sizeof(io));
    CHECK(iolen > 16 && memcmp(io, "TIO1", 4) == 0);
    uint32_t cases = u32(io + 4), n_in = u32(io + 8), n_out = u32(io + 12);
    int rc = tm_engine_load(&eng, fb, (size_t)len, arena, sizeof(arena));
    CHECK_EQ(rc, TM_OK);
    if (rc) return;
    tm_tensor_t *in = tm_engine_input(&eng), *out = tm_engine_output(&eng);
    CHECK_EQ(in->elems, n_in);
    CHECK_EQ(out->elems, n_out);
    int mismatches = 0;
    const uint8_t *p = io + 16;
    for (uint32_t c = 0; c < cases; c++, p += n_in + n_out) {
        memcpy(in->data, p, n_in);
        CHECK_EQ(tm_engine_invoke(&eng), TM_OK);
        for (uint32_t k = 0; k < n_out; k++)
            if ((uint8_t)out->data[k] != p[n_in + k]) {
                if (mismatches++ < 5)
                    fprintf(stderr, "%s case %u out[%u] = %d, TFLM %d\n", name, c, k, out->data[k], (int8_t)p[n_in + k]);
            }
    }
    CHECK_EQ(mismatches, 0);
    printf("%-14s %2u cases bit-exact: %s  arena %zu B (TFLM needs %ld B)\n", name, cases,
           mismatches ? "NO" : "yes", eng.arena_used, tflm_arena);
    /* the arena requirement is honest: one byte less is refused */
    CHECK_EQ(tm_engine_load(&eng, fb, (size_t)len, arena, eng.arena_used - 1), TM_E_ARENA_TOO_SMALL);
    CHECK_EQ(tm_engine_load(&eng, fb, (size_t)len, arena, 16), TM_E_ARENA_TOO_SMALL);
}

static void refuses_bad_models(void)
{
    long len = load_model("ae36_tanh");
    CHECK(len > 0);
    CHECK_EQ(tm_engine_load(&eng, model, (size_t)len, arena, sizeof(arena)), TM_E_UNSUPPORTED_OP);
    len = load_model("ae36");
    /* every truncation is refused (in place, bounds-checked), never read past the end */
    for (long cut = 0; cut < len; cut++) {
        memcpy(copy, model, (size_t)cut);
        int rc = tm_engine_load(&eng, copy, (size_t)cut, arena, sizeof(arena));
        if (rc != TM_E_LOAD_FAILED && rc != TM_E_UNSUPPORTED_OP) {
            fprintf(stderr, "truncated at %ld: rc %d\n", cut, rc);
            g_failures++;
            break;
        }
    }
    /* random corruption never crashes; whatever loads also runs */
    srand(1);
    for (int trial = 0; trial < 3000; trial++) {
        memcpy(copy, model, (size_t)len);
        for (int k = 0; k < 1 + trial % 4; k++) copy[rand() % len] = (uint8_t)rand();
        if (tm_engine_load(&eng, copy, (size_t)len, arena, sizeof(arena)) == TM_OK)
            CHECK_EQ(tm_engine_invoke(&eng), TM_OK);
    }
    memcpy(copy, "garbage!", 8);
    CHECK_EQ(tm_engine_load(&eng, copy, 8, arena, sizeof(arena)), TM_E_LOAD_FAILED);
}

/* A model whose output tensor no operator writes (its last op redirected to write the input tensor
 * instead) leaves the output without storage: refused at load, never read at address 0. So is an
 * op that reads a tensor before any op has written it. */
static void refuses_tensors_without_storage(void)
{
    long len = load_model("ae36");
    CHECK(len > 0);
    if (len <= 0) return;
    memcpy(copy, fb, (size_t)len);
    uint32_t last = tflite_n_ops(copy) - 1;
    CHECK(last > 0);
    tflite_set_u32(copy, tflite_op_io(copy, last, 1, 0), tflite_graph_io(copy, 0));
    CHECK_EQ(tm_engine_load(&eng, copy, (size_t)len, arena, sizeof(arena)), TM_E_LOAD_FAILED);
    /* the first op reads the graph's output, which only the last op writes */
    memcpy(copy, fb, (size_t)len);
    tflite_set_u32(copy, tflite_op_io(copy, 0, 0, 0), tflite_graph_io(copy, 1));
    CHECK_EQ(tm_engine_load(&eng, copy, (size_t)len, arena, sizeof(arena)), TM_E_LOAD_FAILED);
}

/* RELU6 and RELU_N1_TO_1 bounds are 6/scale and +-1/scale: a tiny but valid output scale makes
 * them far larger than any int32; they clamp to the int8 range (UBSan's float-cast-overflow check
 * aborts the test when they do not). */
static void tiny_scale_activation_range(void)
{
    long len = load_model("ae36");
    CHECK(len > 0);
    if (len <= 0) return;
    for (uint8_t act = 2; act <= 3; act++) { /* RELU_N1_TO_1, RELU6 */
        memcpy(copy, fb, (size_t)len);
        size_t a = tflite_fc_activation(copy, 0);
        CHECK(a != 0);
        if (!a) return;
        copy[a] = act;
        uint32_t out = u32(copy + tflite_op_io(copy, 0, 1, 0));
        size_t sc = tflite_tensor_scale(copy, out);
        CHECK(sc != 0);
        if (!sc) return;
        const float tiny = 1e-10f; /* 6 / 1e-10 = 6e10 > INT32_MAX */
        uint32_t bits;
        memcpy(&bits, &tiny, 4);
        tflite_set_u32(copy, sc, bits);
        CHECK_EQ(tm_engine_load(&eng, copy, (size_t)len, arena, sizeof(arena)), TM_OK);
        int32_t zp = eng.tensors[out].zero_point;
        CHECK_EQ(eng.ops[0].act_max, 127);
        CHECK_EQ(eng.ops[0].act_min, act == 3 ? zp : -128);
        CHECK_EQ(tm_engine_invoke(&eng), TM_OK);
    }
}

static void reference_math(void)
{
    int32_t m;
    int s;
    tm_quantize_multiplier(0.5, &m, &s);
    CHECK_EQ(m, 1 << 30); CHECK_EQ(s, 0);
    tm_quantize_multiplier(0.0, &m, &s);
    CHECK_EQ(m, 0);
    CHECK_EQ(tm_mul_by_quantized_multiplier(100, 1 << 30, 0), 50);
    CHECK_EQ(tm_mul_by_quantized_multiplier(-3, 1 << 30, 0), -1); /* gemmlowp: -1.5 -> -1 */
    CHECK_EQ(tm_mul_by_quantized_multiplier(3, 1 << 30, 0), 2);
    CHECK_EQ(tm_mul_by_quantized_multiplier(INT32_MIN, INT32_MIN, 0), INT32_MAX);
}

/* The DSP kernel's branch-free requantisation equals the reference on every multiplier and shift
 * the engine can produce (multiplier in [2^30, 2^31), shift in [-31, 30], from tm_quantize_multiplier)
 * and on the edges (0, +-1, INT32_MIN/MAX accumulators; the saturating INT32_MIN * INT32_MIN). */
#define REQUANT_RANDOM_CASES 2000000 /* a fraction of a second; covers every shift many times over */
static uint32_t xorshift(uint32_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 17;
    *s ^= *s << 5;
    return *s;
}
static void fast_requantize_matches_reference(void)
{
    static const int32_t edges[] = {0, 1, -1, 2, -2, 127, -128, 1 << 30, -(1 << 30), INT32_MAX, INT32_MIN,
                                    INT32_MAX - 1, INT32_MIN + 1, 0x40000000 - 1, 12345, -12345};
    const int n_edges = (int)(sizeof edges / sizeof edges[0]);
    int bad = 0;
    for (int32_t shift = -31; shift <= 30; shift++)
        for (int i = 0; i < n_edges; i++)
            for (int j = 0; j < n_edges; j++)
                bad += tm_fc_requantize(edges[i], edges[j], shift) !=
                       tm_mul_by_quantized_multiplier(edges[i], edges[j], (int)shift);
    uint32_t s = 0x9E3779B9u;
    for (int k = 0; k < REQUANT_RANDOM_CASES; k++) {
        int32_t x = (int32_t)xorshift(&s);
        if (k & 1) x >>= xorshift(&s) % 31; /* accumulators of every magnitude */
        int32_t m = (int32_t)(0x40000000u | (xorshift(&s) & 0x3FFFFFFFu));
        int32_t shift = (int32_t)(xorshift(&s) % 62) - 31;
        if (tm_fc_requantize(x, m, shift) != tm_mul_by_quantized_multiplier(x, m, (int)shift) && bad++ < 5)
            fprintf(stderr, "requantize(%ld, %ld, %ld) differs\n", (long)x, (long)m, (long)shift);
    }
    CHECK_EQ(bad, 0);
}

int main(void)
{
    char path[512];
    snprintf(path, sizeof(path), "%s/models.txt", TM_DATA_DIR);
    FILE *f = fopen(path, "r");
    CHECK(f != NULL);
    char name[64], ops[256];
    long need;
    int n = 0;
    while (f && fscanf(f, "%63s %ld %255s", name, &need, ops) == 3) {
        if (strstr(ops, "TANH")) continue;
        bit_exact(name, need);
        n++;
    }
    if (f) fclose(f);
    CHECK(n >= 4);
    refuses_bad_models();
    refuses_tensors_without_storage();
    tiny_scale_activation_range();
    reference_math();
    fast_requantize_matches_reference();
    return TEST_DONE();
}
