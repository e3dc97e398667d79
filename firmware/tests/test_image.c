/* Model image parsing and the anomaly score: the device's score of each image's self-test input
 * equals the expectation the Python side computed with the real TFLM (PROTOCOL.md 6.1). */
#include <math.h>
#include <string.h>
#include "testutil.h"
#include "tm_image.h"

static uint8_t buf[400 * 1024];
static uint8_t arena[64 * 1024];
static tm_model_t model;

static long load(const char *name)
{
    char path[512];
    snprintf(path, sizeof(path), "%s/%s", TM_DATA_DIR, name);
    return read_file(path, buf, sizeof(buf));
}

static void score_matches(const char *name)
{
    long len = load(name);
    CHECK(len > 0);
    if (len <= 0) return;
    CHECK_EQ(tm_model_load(&model, buf, (size_t)len, arena, sizeof(arena)), TM_OK);
    float score;
    CHECK_EQ(tm_model_selftest(&model, &score), TM_OK);
    float expected = tm_f32le(model.img.selftest + 4 * model.img.n_features);
    printf("%-40s v%u score %.9g, TFLM %.9g: %s\n", name, model.img.version, (double)score, (double)expected,
           score == expected ? "identical" : "within tolerance");
    CHECK(score == expected); /* same integer outputs and same f32 arithmetic: exactly equal */
}

/* An image whose flatbuffer's output tensor no operator writes (the last op redirected to the
 * input tensor): refused at load (it used to load, and the self-test read the output at NULL). */
static void refuses_unwritten_output(void)
{
    long len = load("fw_test_v2.tmlm");
    tm_image_t img;
    CHECK_EQ(tm_image_parse(buf, (size_t)len, &img), TM_OK);
    uint8_t *tfl = buf + (img.tflite - buf);
    tflite_set_u32(tfl, tflite_op_io(tfl, tflite_n_ops(tfl) - 1, 1, 0), tflite_graph_io(tfl, 0));
    int rc = tm_model_load(&model, buf, (size_t)len, arena, sizeof(arena));
    CHECK_EQ(rc, TM_E_LOAD_FAILED);
    float score;
    if (rc == TM_OK) CHECK_EQ(tm_model_selftest(&model, &score), TM_E_SELFTEST_FAILED); /* crashed here */
}

int main(void)
{
    score_matches("../../../resources/models/factory.tmlm");
    score_matches("fw_test_v2.tmlm");
    score_matches("factory_v2.tmlm");
    score_matches("mlperf_ad_v4.tmlm");
    refuses_unwritten_output();
    /* container defects are BAD_IMAGE */
    long len = load("fw_test_v2.tmlm");
    tm_image_t img;
    CHECK_EQ(tm_image_parse(buf, (size_t)len, &img), TM_OK);
    CHECK_EQ(img.n_features, 36);
    CHECK_EQ(tm_image_parse(buf, (size_t)len - 1, &img), TM_E_BAD_IMAGE);
    for (long cut = 0; cut < len; cut += 7) CHECK_EQ(tm_image_parse(buf, (size_t)cut, &img), TM_E_BAD_IMAGE);
    buf[0] = 'X';
    CHECK_EQ(tm_image_parse(buf, (size_t)len, &img), TM_E_BAD_IMAGE);
    buf[0] = 'T';
    buf[16] = 9; /* META becomes an unknown section: required section missing */
    CHECK_EQ(tm_image_parse(buf, (size_t)len, &img), TM_E_BAD_IMAGE);
    return TEST_DONE();
}
