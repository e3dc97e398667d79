/* Plain-assert test helpers: CHECK keeps going and counts, the runner's exit code reports. */
#ifndef TESTUTIL_H
#define TESTUTIL_H
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

extern int g_failures;
#define CHECK(cond) do { if (!(cond)) { g_failures++; fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond); } } while (0)
#define CHECK_EQ(a, b) do { long long _a = (long long)(a), _b = (long long)(b); if (_a != _b) { g_failures++; \
    fprintf(stderr, "%s:%d: %s == %lld, expected %s == %lld\n", __FILE__, __LINE__, #a, _a, #b, _b); } } while (0)
#define TEST_DONE() (g_failures ? (fprintf(stderr, "%d check(s) failed\n", g_failures), 1) : (printf("ok\n"), 0))

/* Read a whole file into a static-lifetime buffer owned by the caller (returns length, -1 on error). */
long read_file(const char *path, uint8_t *buf, size_t cap);

/* In-place edits of a committed, valid .tflite (no bounds checks) to build the bad models the
 * engine must refuse. Positions are byte offsets into the flatbuffer; 0 when the field is absent. */
uint32_t tflite_n_ops(const uint8_t *tfl);
/* Position of the u32 tensor index of input (output = 0) or output (output = 1) k of operator op. */
size_t tflite_op_io(const uint8_t *tfl, uint32_t op, int output, uint32_t k);
/* Tensor index of the subgraph's (first) input or output. */
uint32_t tflite_graph_io(const uint8_t *tfl, int output);
void tflite_set_u32(uint8_t *tfl, size_t pos, uint32_t v);
/* Position of the fused-activation byte of FULLY_CONNECTED operator op. */
size_t tflite_fc_activation(const uint8_t *tfl, uint32_t op);
/* Position of the first (f32) quantization scale of a tensor. */
size_t tflite_tensor_scale(const uint8_t *tfl, uint32_t tensor);

#endif
