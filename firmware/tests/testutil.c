#include "testutil.h"

int g_failures = 0;

long read_file(const char *path, uint8_t *buf, size_t cap)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "cannot open %s\n", path);
        return -1;
    }
    size_t n = fread(buf, 1, cap, f);
    int more = fgetc(f) != EOF;
    fclose(f);
    return more ? -1 : (long)n;
}

/* ---- in-place edits of a trusted .tflite (the tests' own data), to make the bad models the
 * engine must refuse: no bounds checks, the input is a committed, valid flatbuffer ---- */
static uint32_t fbt_u32(const uint8_t *b, size_t pos)
{
    return b[pos] | (b[pos + 1] << 8) | (b[pos + 2] << 16) | ((uint32_t)b[pos + 3] << 24);
}
static size_t fbt_field(const uint8_t *b, size_t table, int id)
{
    size_t vt = (size_t)((int64_t)table - (int32_t)fbt_u32(b, table));
    uint16_t vtsize = (uint16_t)(b[vt] | (b[vt + 1] << 8));
    if ((size_t)(4 + 2 * id + 2) > vtsize) return 0;
    uint16_t off = (uint16_t)(b[vt + 4 + 2 * id] | (b[vt + 5 + 2 * id] << 8));
    return off ? table + off : 0;
}
static size_t fbt_deref(const uint8_t *b, size_t pos) { return pos ? pos + fbt_u32(b, pos) : 0; }
static size_t fbt_elem(const uint8_t *b, size_t table, int id, uint32_t i) /* element i of a table vector */
{
    size_t v = fbt_deref(b, fbt_field(b, table, id));
    return v ? fbt_deref(b, v + 4 + 4 * (size_t)i) : 0;
}
static size_t fbt_subgraph(const uint8_t *b) { return fbt_elem(b, fbt_u32(b, 0), 2, 0); }
static void fbt_put_u32(uint8_t *b, size_t pos, uint32_t v)
{
    for (int k = 0; k < 4; k++) b[pos + (size_t)k] = (uint8_t)(v >> (8 * k));
}

uint32_t tflite_n_ops(const uint8_t *tfl)
{
    size_t v = fbt_deref(tfl, fbt_field(tfl, fbt_subgraph(tfl), 3));
    return fbt_u32(tfl, v);
}

size_t tflite_op_io(const uint8_t *tfl, uint32_t op, int output, uint32_t k)
{
    size_t o = fbt_elem(tfl, fbt_subgraph(tfl), 3, op);
    size_t v = fbt_deref(tfl, fbt_field(tfl, o, output ? 2 : 1));
    return v + 4 + 4 * (size_t)k;
}

uint32_t tflite_graph_io(const uint8_t *tfl, int output)
{
    size_t v = fbt_deref(tfl, fbt_field(tfl, fbt_subgraph(tfl), output ? 2 : 1));
    return fbt_u32(tfl, v + 4);
}

void tflite_set_u32(uint8_t *tfl, size_t pos, uint32_t v) { fbt_put_u32(tfl, pos, v); }

size_t tflite_fc_activation(const uint8_t *tfl, uint32_t op)
{
    size_t o = fbt_elem(tfl, fbt_subgraph(tfl), 3, op);
    size_t opts = fbt_deref(tfl, fbt_field(tfl, o, 4));
    return opts ? fbt_field(tfl, opts, 0) : 0;
}

size_t tflite_tensor_scale(const uint8_t *tfl, uint32_t tensor)
{
    size_t t = fbt_elem(tfl, fbt_subgraph(tfl), 0, tensor);
    size_t q = fbt_deref(tfl, fbt_field(tfl, t, 4));
    size_t sc = q ? fbt_deref(tfl, fbt_field(tfl, q, 2)) : 0;
    return sc ? sc + 4 : 0;
}
