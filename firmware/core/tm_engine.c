#include "tm_engine.h"
#include <math.h>
#include <string.h>
#include "tm_kernels.h"

/* ---- minimal bounds-checked flatbuffer reader (all offsets relative to buf) ---- */
typedef struct { const uint8_t *buf; size_t len; int bad; } fb_t;

static uint32_t fb_u32(fb_t *fb, size_t pos)
{
    if (pos + 4 > fb->len || pos + 4 < pos) { fb->bad = 1; return 0; }
    const uint8_t *p = fb->buf + pos;
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}
static uint16_t fb_u16(fb_t *fb, size_t pos)
{
    if (pos + 2 > fb->len) { fb->bad = 1; return 0; }
    return (uint16_t)(fb->buf[pos] | (fb->buf[pos + 1] << 8));
}
static uint8_t fb_u8(fb_t *fb, size_t pos)
{
    if (pos + 1 > fb->len) { fb->bad = 1; return 0; }
    return fb->buf[pos];
}
/* Position of field `id` of the table at `table`, or 0 when absent. */
static size_t fb_field(fb_t *fb, size_t table, int id)
{
    if (table == 0) return 0;
    int32_t soff = (int32_t)fb_u32(fb, table);
    size_t vt = (size_t)((int64_t)table - soff);
    if (fb->bad || vt >= fb->len) { fb->bad = 1; return 0; }
    uint16_t vtsize = fb_u16(fb, vt);
    if ((size_t)(4 + 2 * id + 2) > vtsize) return 0;
    uint16_t off = fb_u16(fb, vt + 4 + 2 * (size_t)id);
    return off ? table + off : 0;
}
static size_t fb_deref(fb_t *fb, size_t pos) /* follow a uoffset */
{
    if (!pos) return 0;
    uint32_t off = fb_u32(fb, pos);
    size_t r = pos + off;
    if (fb->bad || off == 0 || r >= fb->len) { fb->bad = 1; return 0; }
    return r;
}
/* A vector field: returns element start, sets *count; 0 when absent. */
static size_t fb_vector(fb_t *fb, size_t table, int id, uint32_t *count, size_t elem)
{
    *count = 0;
    size_t v = fb_deref(fb, fb_field(fb, table, id));
    if (!v) return 0;
    uint32_t n = fb_u32(fb, v);
    if (fb->bad || (uint64_t)n * elem > fb->len - v - 4) { fb->bad = 1; return 0; }
    *count = n;
    return v + 4;
}
static size_t fb_table_at(fb_t *fb, size_t vec, uint32_t i) { return fb_deref(fb, vec + 4 * (size_t)i); }
static uint32_t fb_scalar_u32(fb_t *fb, size_t table, int id, uint32_t dflt)
{
    size_t f = fb_field(fb, table, id);
    return f ? fb_u32(fb, f) : dflt;
}
static uint8_t fb_scalar_u8(fb_t *fb, size_t table, int id, uint8_t dflt)
{
    size_t f = fb_field(fb, table, id);
    return f ? fb_u8(fb, f) : dflt;
}

/* ---- TFLite schema constants ---- */
enum { TT_FLOAT32 = 0, TT_INT32 = 2, TT_INT8 = 9 };
enum { OP_FULLY_CONNECTED = 9, OP_RESHAPE = 22, OP_QUANTIZE = 114 };
enum { ACT_NONE = 0, ACT_RELU = 1, ACT_RELU_N1_TO_1 = 2, ACT_RELU6 = 3 };
enum { TM_OP_FC = 1, TM_OP_QUANTIZE = 2, TM_OP_RESHAPE = 3 };

/* ---- reference integer math (tensorflow/lite/kernels/internal/common.h) ---- */
static int32_t srdhm(int32_t a, int32_t b)
{
    int overflow = a == b && a == INT32_MIN;
    int64_t ab = (int64_t)a * (int64_t)b;
    int32_t nudge = ab >= 0 ? (1 << 30) : (1 - (1 << 30));
    int32_t r = (int32_t)((ab + nudge) / (1ll << 31));
    return overflow ? INT32_MAX : r;
}
static int32_t rdbpot(int32_t x, int exponent)
{
    int32_t mask = (int32_t)((1ll << exponent) - 1);
    int32_t remainder = x & mask;
    int32_t threshold = (mask >> 1) + (x < 0 ? 1 : 0);
    return (x >> exponent) + (remainder > threshold ? 1 : 0);
}
int32_t tm_mul_by_quantized_multiplier(int32_t x, int32_t multiplier, int shift)
{
    int left = shift > 0 ? shift : 0;
    int right = shift > 0 ? 0 : -shift;
    return rdbpot(srdhm((int32_t)((uint32_t)x << left), multiplier), right);
}
void tm_quantize_multiplier(double real, int32_t *multiplier, int *shift)
{
    /* callers check the result's shift; a ratio this far from 1 is a corrupt model */
    if (real == 0.0) { *multiplier = 0; *shift = 0; return; }
    double q = frexp(real, shift);
    int64_t q_fixed = (int64_t)round(q * (double)(1ll << 31));
    if (q_fixed == (1ll << 31)) { q_fixed /= 2; ++*shift; }
    if (*shift < -31) { *shift = 0; q_fixed = 0; }
    *multiplier = (int32_t)q_fixed;
}

static float le_f32(const uint8_t *p)
{
    uint32_t u = (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static uint32_t type_size(uint8_t t) { return t == TT_INT8 ? 1 : (t == TT_INT32 || t == TT_FLOAT32) ? 4 : 0; }

/* Bound on a quantized activation limit before it meets the int8 range: far outside [-128, 127]
 * minus any zero point, and far inside int32, so a tiny scale's huge 6/scale converts safely. */
#define ACT_LIMIT_BOUND 65536.0f

/* round(x) as int32, clamped to +-ACT_LIMIT_BOUND (also for inf; the scale is > 0, never NaN). */
static int32_t round_clamped(float x)
{
    if (x > ACT_LIMIT_BOUND) return (int32_t)ACT_LIMIT_BOUND;
    if (x < -ACT_LIMIT_BOUND) return -(int32_t)ACT_LIMIT_BOUND;
    return (int32_t)roundf(x);
}

static void act_range(uint8_t act, float scale, int32_t zp, int32_t *mn, int32_t *mx)
{
    int32_t lo = -128, hi = 127;
    if (act == ACT_RELU || act == ACT_RELU6) lo = zp > lo ? zp : lo;
    if (act == ACT_RELU6) { int32_t v = zp + round_clamped(6.0f / scale); hi = v < hi ? v : hi; }
    if (act == ACT_RELU_N1_TO_1) {
        int32_t a = zp + round_clamped(-1.0f / scale), b = zp + round_clamped(1.0f / scale);
        lo = a > lo ? a : lo;
        hi = b < hi ? b : hi;
    }
    *mn = lo;
    *mx = hi;
}

static int load_tensors(tm_engine_t *e, fb_t *fb, size_t model, size_t sub)
{
    uint32_t n_buf, n_t;
    size_t bufs = fb_vector(fb, model, 4, &n_buf, 4);
    size_t tens = fb_vector(fb, sub, 0, &n_t, 4);
    if (fb->bad || n_t == 0) return TM_E_LOAD_FAILED;
    if (n_t > TM_MAX_TENSORS) return TM_E_UNSUPPORTED_OP;
    e->n_tensors = (uint16_t)n_t;
    for (uint32_t i = 0; i < n_t; i++) {
        tm_tensor_t *t = &e->tensors[i];
        memset(t, 0, sizeof(*t));
        t->first = t->last = -1;
        size_t tt = fb_table_at(fb, tens, i);
        uint32_t rank;
        size_t shape = fb_vector(fb, tt, 0, &rank, 4);
        if (fb->bad || rank > 4) return TM_E_LOAD_FAILED;
        t->rank = (uint8_t)rank;
        t->elems = 1;
        for (uint32_t d = 0; d < rank; d++) {
            uint32_t v = fb_u32(fb, shape + 4 * d);
            if (v == 0 || v > 65535) return TM_E_LOAD_FAILED;
            t->dims[d] = (uint16_t)v;
            t->elems *= v;
            if (t->elems > (1u << 24)) return TM_E_LOAD_FAILED;
        }
        t->type = fb_scalar_u8(fb, tt, 1, 0);
        t->bytes = t->elems * type_size(t->type);
        uint32_t bi = fb_scalar_u32(fb, tt, 2, 0);
        if (bi >= n_buf) return TM_E_LOAD_FAILED;
        if (bi != 0) {
            size_t b = fb_table_at(fb, bufs, bi);
            uint32_t dlen;
            size_t data = fb_vector(fb, b, 0, &dlen, 1);
            if (fb->bad) return TM_E_LOAD_FAILED;
            if (dlen) {
                if (dlen != t->bytes) return TM_E_LOAD_FAILED;
                t->const_data = (const int8_t *)(fb->buf + data);
            }
        }
        size_t q = fb_deref(fb, fb_field(fb, tt, 4));
        t->scale = 0.0f;
        t->n_scales = 0;
        if (q) {
            uint32_t ns, nz;
            size_t sc = fb_vector(fb, q, 2, &ns, 4);
            size_t zp = fb_vector(fb, q, 3, &nz, 8);
            if (fb->bad) return TM_E_LOAD_FAILED;
            if (ns) { t->n_scales = ns; t->scales = fb->buf + sc; t->scale = le_f32(fb->buf + sc); }
            if (nz) t->zero_point = (int32_t)fb_u32(fb, zp);
            if (t->type == TT_INT8 && (t->zero_point < -128 || t->zero_point > 127)) return TM_E_LOAD_FAILED;
            for (uint32_t k = 0; k < ns; k++) {
                float v = le_f32(fb->buf + sc + 4 * k);
                if (!(v > 0.0f) || v > 1e30f) return TM_E_LOAD_FAILED; /* also rejects NaN */
            }
            if (fb_scalar_u32(fb, q, 6, 0) != 0) return TM_E_UNSUPPORTED_OP; /* quantized_dimension */
        }
    }
    return fb->bad ? TM_E_LOAD_FAILED : TM_OK;
}

static int check_index(tm_engine_t *e, int32_t idx) { return idx >= 0 && idx < e->n_tensors; }

static int prepare_fc(tm_engine_t *e, tm_op_t *op, uint8_t **persist, uint8_t *persist_end, size_t *persist_need)
{
    tm_tensor_t *in = &e->tensors[op->in], *w = &e->tensors[op->w], *out = &e->tensors[op->out];
    tm_tensor_t *b = op->bias >= 0 ? &e->tensors[op->bias] : NULL;
    if (in->type != TT_INT8 || w->type != TT_INT8 || out->type != TT_INT8 || !w->const_data || w->rank != 2)
        return TM_E_UNSUPPORTED_OP;
    if (b && (b->type != TT_INT32 || !b->const_data)) return TM_E_UNSUPPORTED_OP;
    op->units = w->dims[0];
    op->depth = w->dims[1];
    if (in->elems != op->depth || out->elems != op->units || (b && b->elems != op->units))
        return TM_E_UNSUPPORTED_OP; /* batch > 1 or odd shapes: not what our models contain */
    if (w->zero_point != 0 || w->n_scales == 0 || in->n_scales != 1 || out->n_scales != 1) return TM_E_UNSUPPORTED_OP;
    act_range(op->activation, out->scale, out->zero_point, &op->act_min, &op->act_max);
    if (w->n_scales > 1) {
        if (w->n_scales != op->units) return TM_E_LOAD_FAILED;
        size_t need = 8u * op->units;
        *persist_need += need;
        if (*persist + need > persist_end) return TM_OK; /* counted; load fails with ARENA_TOO_SMALL */
        op->mult_pc = (int32_t *)(void *)*persist;
        op->shift_pc = op->mult_pc + op->units;
        *persist += need;
        for (uint32_t c = 0; c < op->units; c++) {
            double real = (double)in->scale * (double)le_f32(w->scales + 4 * c) / (double)out->scale;
            int s;
            tm_quantize_multiplier(real, &op->mult_pc[c], &s);
            if (s > 30) return TM_E_LOAD_FAILED;
            op->shift_pc[c] = s;
        }
    } else {
        double real = (double)in->scale * (double)w->scale / (double)out->scale;
        int s;
        tm_quantize_multiplier(real, &op->multiplier, &s);
        if (s > 30) return TM_E_LOAD_FAILED;
        op->shift = s;
    }
    return TM_OK;
}

/* One operator of the flatbuffer into e->ops[i]: its kind, operands and options; the lifetimes of
 * the activations it reads and writes. Anything the engine cannot run is refused here. */
static int parse_op(tm_engine_t *e, fb_t *fb, size_t codes, uint32_t n_codes, size_t ops, uint32_t i)
{
    tm_op_t *op = &e->ops[i];
    size_t o = fb_table_at(fb, ops, i);
    uint32_t opcode = fb_scalar_u32(fb, o, 0, 0);
    if (fb->bad || opcode >= n_codes) return TM_E_LOAD_FAILED;
    size_t oc = fb_table_at(fb, codes, opcode);
    int32_t code = (int32_t)(int8_t)fb_scalar_u8(fb, oc, 0, 0);
    int32_t code2 = (int32_t)fb_scalar_u32(fb, oc, 3, 0);
    if (code2 > code) code = code2;
    uint32_t ni, no;
    size_t iv = fb_vector(fb, o, 1, &ni, 4);
    size_t ov = fb_vector(fb, o, 2, &no, 4);
    if (fb->bad || no != 1 || ni < 1) return TM_E_LOAD_FAILED;
    op->in = (int16_t)fb_u32(fb, iv);
    op->out = (int16_t)fb_u32(fb, ov);
    op->w = op->bias = -1;
    if (code == OP_FULLY_CONNECTED) {
        if (ni < 2 || ni > 3) return TM_E_LOAD_FAILED;
        op->kind = TM_OP_FC;
        op->w = (int16_t)fb_u32(fb, iv + 4);
        op->bias = ni == 3 ? (int16_t)(int32_t)fb_u32(fb, iv + 8) : -1;
        size_t opts = fb_deref(fb, fb_field(fb, o, 4));
        op->activation = opts ? fb_scalar_u8(fb, opts, 0, 0) : ACT_NONE;
        if (opts && fb_scalar_u8(fb, opts, 1, 0) != 0) return TM_E_UNSUPPORTED_OP; /* shuffled weights */
        if (op->activation > ACT_RELU6) return TM_E_UNSUPPORTED_OP;
        if (!check_index(e, op->w) || (op->bias != -1 && !check_index(e, op->bias))) return TM_E_LOAD_FAILED;
    } else if (code == OP_QUANTIZE) {
        op->kind = TM_OP_QUANTIZE;
    } else if (code == OP_RESHAPE) {
        op->kind = TM_OP_RESHAPE;
    } else {
        e->unsupported_op = (uint16_t)code;
        return TM_E_UNSUPPORTED_OP;
    }
    if (fb->bad || !check_index(e, op->in) || !check_index(e, op->out)) return TM_E_LOAD_FAILED;
    if (e->tensors[op->out].const_data) return TM_E_LOAD_FAILED;
    int16_t io[2] = {op->in, op->out};
    for (int k = 0; k < 2; k++) {
        tm_tensor_t *t = &e->tensors[io[k]];
        if (t->const_data) continue;
        if (t->first < 0) t->first = (int16_t)i;
        t->last = (int16_t)i;
    }
    return TM_OK;
}

/* Data flow: every op reads the graph input or what an earlier op wrote (never weights, never a
 * tensor nothing has written yet), and some op writes the graph output. A model that breaks this
 * would leave a tensor the engine touches without storage (data NULL: address 0 on the MCU). */
static int check_data_flow(const tm_engine_t *e)
{
    uint8_t written[TM_MAX_TENSORS] = {0};
    for (uint16_t i = 0; i < e->n_ops; i++) {
        const tm_op_t *op = &e->ops[i];
        if (op->in != e->input && !written[op->in]) return TM_E_LOAD_FAILED;
        written[op->out] = 1;
    }
    return written[e->output] ? TM_OK : TM_E_LOAD_FAILED;
}

/* Parse: header, tensors, graph input/output and operators. Nothing is written to the arena. */
static int parse_model(tm_engine_t *e, const uint8_t *model, size_t len)
{
    fb_t fb = {model, len, 0};
    if (len < 16 || memcmp(model + 4, "TFL3", 4) != 0) return TM_E_LOAD_FAILED;
    size_t root = fb_u32(&fb, 0); /* the root uoffset sits at position 0 */
    if (root < 8 || root >= len) return TM_E_LOAD_FAILED;
    uint32_t n_codes, n_subs, n_ops, n_in, n_out;
    size_t codes = fb_vector(&fb, root, 1, &n_codes, 4);
    size_t subs = fb_vector(&fb, root, 2, &n_subs, 4);
    if (fb.bad || n_subs != 1) return TM_E_LOAD_FAILED;
    size_t sub = fb_table_at(&fb, subs, 0);
    int rc = load_tensors(e, &fb, root, sub);
    if (rc) return rc;
    size_t ins = fb_vector(&fb, sub, 1, &n_in, 4);
    size_t outs = fb_vector(&fb, sub, 2, &n_out, 4);
    size_t ops = fb_vector(&fb, sub, 3, &n_ops, 4);
    if (fb.bad || n_in != 1 || n_out != 1 || n_ops == 0) return TM_E_LOAD_FAILED;
    if (n_ops > TM_MAX_OPS) return TM_E_UNSUPPORTED_OP;
    e->input = (int16_t)fb_u32(&fb, ins);
    e->output = (int16_t)fb_u32(&fb, outs);
    if (!check_index(e, e->input) || !check_index(e, e->output)) return TM_E_LOAD_FAILED;
    for (uint32_t i = 0; i < n_ops; i++) {
        rc = parse_op(e, &fb, codes, n_codes, ops, i);
        if (rc) return rc;
    }
    if (fb.bad) return TM_E_LOAD_FAILED;
    e->n_ops = (uint16_t)n_ops;
    tm_tensor_t *tin = &e->tensors[e->input], *tout = &e->tensors[e->output];
    if (tin->const_data || tin->type != TT_INT8 || tout->type != TT_INT8) return TM_E_UNSUPPORTED_OP;
    rc = check_data_flow(e);
    if (rc) return rc;
    tin->first = 0; /* the caller writes the input before the first op and reads the output after the last */
    tout->last = (int16_t)(n_ops - 1);
    return TM_OK;
}

/* Plan: arena offsets of the activations, greedy first fit by decreasing size among overlapping
 * lifetimes (as TFLM's planner). Returns the bytes the activations need (16-byte multiple). */
static size_t plan_activations(tm_engine_t *e)
{
    size_t planned_end = 0;
    uint8_t placed[TM_MAX_TENSORS] = {0};
    for (;;) {
        int best = -1;
        for (int i = 0; i < e->n_tensors; i++) {
            tm_tensor_t *t = &e->tensors[i];
            if (placed[i] || t->const_data || t->first < 0) continue;
            if (best < 0 || t->bytes > e->tensors[best].bytes) best = i;
        }
        if (best < 0) break;
        tm_tensor_t *t = &e->tensors[best];
        uint32_t offset = 0;
        for (int moved = 1; moved;) {
            moved = 0;
            for (int j = 0; j < e->n_tensors; j++) {
                tm_tensor_t *u = &e->tensors[j];
                if (!placed[j] || u->last < t->first || u->first > t->last) continue;
                if (offset < u->offset + ((u->bytes + 15u) & ~15u) && u->offset < offset + t->bytes) {
                    offset = u->offset + ((u->bytes + 15u) & ~15u);
                    moved = 1;
                }
            }
        }
        t->offset = offset;
        placed[best] = 1;
        if (offset + t->bytes > planned_end) planned_end = offset + t->bytes;
    }
    return (planned_end + 15u) & ~(size_t)15u;
}

/* Every tensor the engine reads or writes has storage: activations in the arena, weights and bias
 * in the flatbuffer. The data-flow check makes this hold; this keeps it true whatever changes. */
static int check_storage(tm_engine_t *e)
{
    if (!e->tensors[e->input].data || !e->tensors[e->output].data) return TM_E_LOAD_FAILED;
    for (uint16_t i = 0; i < e->n_ops; i++) {
        const tm_op_t *op = &e->ops[i];
        if (!e->tensors[op->in].data || !e->tensors[op->out].data) return TM_E_LOAD_FAILED;
        if (op->kind == TM_OP_FC && (!e->tensors[op->w].const_data ||
                                     (op->bias >= 0 && !e->tensors[op->bias].const_data)))
            return TM_E_LOAD_FAILED;
    }
    return TM_OK;
}

/* Prepare: per-op constants (multipliers, activation ranges; per-channel ones in the arena after
 * the activations), the arena budget, then the activations' data pointers. */
static int prepare_ops(tm_engine_t *e, size_t planned_end)
{
    uint8_t *arena = e->arena;
    uint8_t *base = (uint8_t *)(((uintptr_t)arena + 15u) & ~(uintptr_t)15u);
    size_t align_loss = (size_t)(base - arena);
    uint8_t *persist = base + planned_end;
    uint8_t *end = arena + e->arena_size;
    if (persist > end) persist = end;
    size_t persist_need = 0;
    for (uint32_t i = 0; i < e->n_ops; i++) {
        tm_op_t *op = &e->ops[i];
        tm_tensor_t *in = &e->tensors[op->in], *out = &e->tensors[op->out];
        if (op->kind == TM_OP_FC) {
            int rc = prepare_fc(e, op, &persist, end, &persist_need);
            if (rc) return rc;
        } else if (op->kind == TM_OP_QUANTIZE) {
            if (in->type != TT_INT8 || out->type != TT_INT8 || in->elems != out->elems || in->n_scales != 1 || out->n_scales != 1)
                return TM_E_UNSUPPORTED_OP;
            int s;
            tm_quantize_multiplier((double)in->scale / (double)out->scale, &op->multiplier, &s);
            if (s > 30) return TM_E_LOAD_FAILED;
            op->shift = s;
        } else {
            if (in->bytes != out->bytes) return TM_E_LOAD_FAILED;
        }
    }
    e->arena_used = align_loss + planned_end + persist_need;
    if (e->arena_used > e->arena_size) return TM_E_ARENA_TOO_SMALL;
    for (int i = 0; i < e->n_tensors; i++) {
        tm_tensor_t *t = &e->tensors[i];
        if (!t->const_data && t->first >= 0) t->data = (int8_t *)(base + t->offset);
    }
    return check_storage(e);
}

int tm_engine_load(tm_engine_t *e, const uint8_t *model, size_t len, uint8_t *arena, size_t arena_size)
{
    memset(e, 0, sizeof(*e));
    e->arena = arena;
    e->arena_size = arena_size;
    e->input = e->output = -1;
    int rc = parse_model(e, model, len);
    if (rc) return rc;
    return prepare_ops(e, plan_activations(e));
}

tm_tensor_t *tm_engine_input(tm_engine_t *e) { return &e->tensors[e->input]; }
tm_tensor_t *tm_engine_output(tm_engine_t *e) { return &e->tensors[e->output]; }

static void run_fc(tm_engine_t *e, const tm_op_t *op)
{
    const tm_tensor_t *in = &e->tensors[op->in], *w = &e->tensors[op->w], *out = &e->tensors[op->out];
    tm_fc_args_t a = {
        .x = in->data, .w = w->const_data,
        .bias = op->bias >= 0 ? (const uint8_t *)e->tensors[op->bias].const_data : NULL,
        .y = out->data, .depth = op->depth, .units = op->units,
        .in_off = -in->zero_point, .out_off = out->zero_point, .act_min = op->act_min, .act_max = op->act_max,
        .multiplier = op->multiplier, .shift = op->shift, .mult_pc = op->mult_pc, .shift_pc = op->shift_pc,
    };
    tm_fc_s8(&a);
}

int tm_engine_invoke(tm_engine_t *e)
{
    for (uint16_t i = 0; i < e->n_ops; i++) {
        const tm_op_t *op = &e->ops[i];
        tm_tensor_t *in = &e->tensors[op->in], *out = &e->tensors[op->out];
        if (!in->data || !out->data) return TM_E_INTERNAL;
        switch (op->kind) {
        case TM_OP_FC: run_fc(e, op); break;
        case TM_OP_RESHAPE: if (in->data != out->data) memmove(out->data, in->data, in->bytes); break;
        case TM_OP_QUANTIZE:
            for (uint32_t k = 0; k < in->elems; k++) {
                int32_t v = tm_mul_by_quantized_multiplier((int32_t)in->data[k] - in->zero_point, op->multiplier, op->shift)
                            + out->zero_point;
                out->data[k] = (int8_t)(v < -128 ? -128 : v > 127 ? 127 : v);
            }
            break;
        default: return TM_E_INTERNAL;
        }
    }
    return TM_OK;
}
