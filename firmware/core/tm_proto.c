#include "tm_proto.h"
#include <stdio.h>
#include <string.h>

enum { K_U8, K_U16, K_U32, K_F32, K_STR, K_BYTES, K_REST, K_F32LIST };

typedef struct {
    const char *name;
    uint8_t kind;
    uint8_t size; /* K_BYTES length */
    uint16_t offset;
} field_t;

typedef struct {
    uint8_t type;
    uint8_t count;
    const field_t *fields;
    /* index of the first field a later revision appended (PROTOCOL.md 1), 0 when none: a payload
     * may end before it (the fields read 0), and the encoder leaves out trailing ones that are 0 */
    uint8_t optional_from;
} layout_t;

#define F(s, n, k) {#n, k, 0, (uint16_t)offsetof(s, n)}
#define FB(s, n, sz) {#n, K_BYTES, sz, (uint16_t)offsetof(s, n)}

static const field_t kHello[] = {
    F(tm_hello_t, proto_min, K_U8), F(tm_hello_t, proto_max, K_U8), F(tm_hello_t, caps, K_U32),
    F(tm_hello_t, state, K_U8), F(tm_hello_t, device_id, K_STR), F(tm_hello_t, location, K_STR),
    F(tm_hello_t, profile, K_STR), F(tm_hello_t, firmware, K_STR), F(tm_hello_t, model_name, K_STR),
    F(tm_hello_t, model_version, K_U32), FB(tm_hello_t, model_sha, 8), F(tm_hello_t, prev_version, K_U32),
    F(tm_hello_t, trial, K_U8), F(tm_hello_t, slot_size, K_U32), F(tm_hello_t, free_slot, K_U32),
    F(tm_hello_t, ram_budget, K_U32), F(tm_hello_t, max_chunk, K_U16), F(tm_hello_t, sample_rate, K_U32),
    F(tm_hello_t, uptime_s, K_U32), F(tm_hello_t, fault_mask, K_U8),
    F(tm_hello_t, trust_keys, K_U8), /* appended: PROTOCOL.md 6.2 */
};
enum { HELLO_OPTIONAL_FROM = 20 };
static const field_t kTelemetry[] = {
    F(tm_telemetry_t, uptime_ms, K_U32), F(tm_telemetry_t, window_seq, K_U32),
    F(tm_telemetry_t, model_version, K_U32), F(tm_telemetry_t, score, K_F32),
    F(tm_telemetry_t, threshold, K_F32), F(tm_telemetry_t, flags, K_U8), F(tm_telemetry_t, shaft_hz, K_F32),
    F(tm_telemetry_t, features, K_F32LIST),
};
static const field_t kStream[] = {
    F(tm_stream_t, window_seq, K_U32), F(tm_stream_t, sample_rate, K_U32), F(tm_stream_t, scale, K_F32),
    F(tm_stream_t, n, K_U16), F(tm_stream_t, axes, K_U8), F(tm_stream_t, samples, K_REST),
};
static const field_t kAck[] = {F(tm_ack_t, ref_type, K_U8)};
static const field_t kError[] = {F(tm_error_t, ref_type, K_U8), F(tm_error_t, code, K_U16), F(tm_error_t, message, K_STR)};
static const field_t kLatency[] = {
    F(tm_latency_t, model_version, K_U32), F(tm_latency_t, flags, K_U8), F(tm_latency_t, deploy_us, K_U32),
    F(tm_latency_t, load_us, K_U32), F(tm_latency_t, n, K_U16), F(tm_latency_t, min_us, K_U32),
    F(tm_latency_t, median_us, K_U32), F(tm_latency_t, p95_us, K_U32), F(tm_latency_t, max_us, K_U32),
};
static const field_t kXferStatus[] = {
    F(tm_xfer_status_t, transfer_id, K_U32), F(tm_xfer_status_t, image_size, K_U32),
    F(tm_xfer_status_t, chunk_size, K_U16), F(tm_xfer_status_t, n_chunks, K_U32),
    F(tm_xfer_status_t, received, K_U32), F(tm_xfer_status_t, bitmap, K_REST),
};
static const field_t kEvent[] = {F(tm_event_t, code, K_U16), F(tm_event_t, message, K_STR)};
static const field_t kStreamStart[] = {F(tm_stream_start_t, lease_s, K_U16)};
static const field_t kXferBegin[] = {
    F(tm_xfer_begin_t, transfer_id, K_U32), F(tm_xfer_begin_t, image_size, K_U32),
    F(tm_xfer_begin_t, chunk_size, K_U16), F(tm_xfer_begin_t, flags, K_U8), FB(tm_xfer_begin_t, sha256, 32),
    F(tm_xfer_begin_t, model_name, K_STR), F(tm_xfer_begin_t, model_version, K_U32),
    F(tm_xfer_begin_t, source, K_STR),
};
static const field_t kXferChunk[] = {
    F(tm_xfer_chunk_t, transfer_id, K_U32), F(tm_xfer_chunk_t, index, K_U32), F(tm_xfer_chunk_t, crc32, K_U32),
    F(tm_xfer_chunk_t, data, K_REST),
};
static const field_t kXferId[] = {F(tm_xfer_id_t, transfer_id, K_U32)};
static const field_t kXferCommit[] = {
    F(tm_xfer_commit_t, transfer_id, K_U32), F(tm_xfer_commit_t, mode, K_U8),
    F(tm_xfer_commit_t, trial_timeout_s, K_U16), F(tm_xfer_commit_t, bench_count, K_U16),
};
static const field_t kBenchmark[] = {F(tm_benchmark_t, count, K_U16)};
static const field_t kSetFault[] = {F(tm_set_fault_t, mask, K_U8), F(tm_set_fault_t, severity, K_F32)};
static const field_t kActivate[] = {
    F(tm_activate_t, trial, K_U8), F(tm_activate_t, trial_timeout_s, K_U16), F(tm_activate_t, bench_count, K_U16),
};
static const field_t kXferSign[] = {F(tm_xfer_sign_t, transfer_id, K_U32), FB(tm_xfer_sign_t, block, 80)};
static const field_t kTrustAdd[] = {FB(tm_trust_add_t, public_key, 32), FB(tm_trust_add_t, auth, 80)};
static const field_t kRevoke[] = {F(tm_revoke_t, model_name, K_STR), F(tm_revoke_t, model_version, K_U32),
                                  FB(tm_revoke_t, auth, 80)};

#define L(t, arr) {t, (uint8_t)(sizeof(arr) / sizeof(arr[0])), arr, 0}
static const layout_t kLayouts[] = {
    {TM_HELLO, (uint8_t)(sizeof(kHello) / sizeof(kHello[0])), kHello, HELLO_OPTIONAL_FROM}, L(TM_TELEMETRY, kTelemetry), L(TM_STREAM, kStream), L(TM_ACK, kAck),
    L(TM_ERROR, kError), L(TM_LATENCY, kLatency), L(TM_XFER_STATUS, kXferStatus), L(TM_EVENT, kEvent),
    {TM_GET_INFO, 0, NULL, 0}, L(TM_STREAM_START, kStreamStart), {TM_STREAM_STOP, 0, NULL, 0},
    L(TM_XFER_BEGIN, kXferBegin), L(TM_XFER_CHUNK, kXferChunk), L(TM_XFER_QUERY, kXferId),
    L(TM_XFER_COMMIT, kXferCommit), L(TM_XFER_ABORT, kXferId), {TM_CONFIRM, 0, NULL, 0},
    {TM_ROLLBACK, 0, NULL, 0}, L(TM_BENCHMARK, kBenchmark), {TM_REBOOT, 0, NULL, 0},
    L(TM_SET_FAULT, kSetFault), L(TM_ACTIVATE, kActivate), L(TM_XFER_SIGN, kXferSign),
    L(TM_TRUST_ADD, kTrustAdd), L(TM_REVOKE, kRevoke),
};

/* Fields an encoder writes: trailing appended fields that hold 0 are left out (only scalar kinds
 * are ever appended), so a message that does not use them keeps its older bytes. */
static uint8_t fields_to_write(const layout_t *lay, const uint8_t *base)
{
    uint8_t count = lay->count;
    while (lay->optional_from && count > lay->optional_from) {
        const field_t *f = &lay->fields[count - 1];
        uint32_t v = 0;
        memcpy(&v, base + f->offset, f->kind == K_U8 ? 1u : f->kind == K_U16 ? 2u : 4u);
        if (v) break;
        count--;
    }
    return count;
}

static const layout_t *find_layout(uint8_t type)
{
    for (size_t i = 0; i < sizeof(kLayouts) / sizeof(kLayouts[0]); i++)
        if (kLayouts[i].type == type)
            return &kLayouts[i];
    return NULL;
}

int tm_known_type(uint8_t type) { return find_layout(type) != NULL; }

tm_str_t tm_str(const char *s)
{
    size_t n = s ? strlen(s) : 0;
    tm_str_t r = {(uint8_t)(n > 255 ? 255 : n), (const uint8_t *)s};
    return r;
}

static uint32_t rd(const uint8_t *p, int n)
{
    uint32_t v = 0;
    for (int i = n - 1; i >= 0; i--)
        v = (v << 8) | p[i];
    return v;
}

static void wr(uint8_t *p, uint32_t v, int n)
{
    for (int i = 0; i < n; i++, v >>= 8)
        p[i] = (uint8_t)v;
}

int tm_utf8_valid(const uint8_t *p, size_t len)
{
    size_t i = 0;
    while (i < len) {
        uint8_t c = p[i];
        size_t n;
        uint32_t cp;
        if (c < 0x80) { i++; continue; }
        else if (c >= 0xC2 && c <= 0xDF) { n = 1; cp = c & 0x1F; }
        else if (c >= 0xE0 && c <= 0xEF) { n = 2; cp = c & 0x0F; }
        else if (c >= 0xF0 && c <= 0xF4) { n = 3; cp = c & 0x07; }
        else return 0;
        if (i + n >= len) return 0;
        for (size_t k = 1; k <= n; k++) {
            if ((p[i + k] & 0xC0) != 0x80) return 0;
            cp = (cp << 6) | (p[i + k] & 0x3F);
        }
        if ((n == 2 && cp < 0x800) || (n == 3 && (cp < 0x10000 || cp > 0x10FFFF)) || (cp >= 0xD800 && cp <= 0xDFFF))
            return 0;
        i += n + 1;
    }
    return 1;
}

static void f32_to_bytes(float f, uint8_t *p)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    wr(p, u, 4);
}

static float f32_from_bytes(const uint8_t *p)
{
    uint32_t u = rd(p, 4);
    float f;
    memcpy(&f, &u, 4);
    return f;
}

int tm_decode(const uint8_t *buf, size_t len, tm_msg_t *out)
{
    memset(out, 0, sizeof(*out));
    if (len < TM_HEADER_SIZE)
        return TM_E_MALFORMED;
    if (buf[0] != TM_PROTOCOL_VERSION)
        return TM_E_UNSUPPORTED_VERSION;
    uint16_t plen = (uint16_t)rd(buf + 4, 2);
    out->type = buf[1];
    out->seq = (uint16_t)rd(buf + 2, 2);
    if (plen != len - TM_HEADER_SIZE || plen > TM_MAX_PAYLOAD)
        return TM_E_MALFORMED;
    const layout_t *lay = find_layout(buf[1]);
    if (!lay)
        return TM_E_UNKNOWN_TYPE;
    const uint8_t *p = buf + TM_HEADER_SIZE;
    size_t pos = 0;
    uint8_t *base = (uint8_t *)&out->u;
    for (uint8_t i = 0; i < lay->count; i++) {
        const field_t *f = &lay->fields[i];
        uint8_t *dst = base + f->offset;
        if (lay->optional_from && i >= lay->optional_from && pos == plen)
            break; /* an older sender: appended fields stay 0 */
        switch (f->kind) {
        case K_U8: if (pos + 1 > plen) return TM_E_MALFORMED; *dst = p[pos]; pos += 1; break;
        case K_U16: { if (pos + 2 > plen) return TM_E_MALFORMED; uint16_t v = (uint16_t)rd(p + pos, 2); memcpy(dst, &v, 2); pos += 2; break; }
        case K_U32: { if (pos + 4 > plen) return TM_E_MALFORMED; uint32_t v = rd(p + pos, 4); memcpy(dst, &v, 4); pos += 4; break; }
        case K_F32: { if (pos + 4 > plen) return TM_E_MALFORMED; float v = f32_from_bytes(p + pos); memcpy(dst, &v, 4); pos += 4; break; }
        case K_STR: {
            if (pos + 1 > plen) return TM_E_MALFORMED;
            tm_str_t s = {p[pos], p + pos + 1};
            if (pos + 1 + s.len > plen || !tm_utf8_valid(s.p, s.len)) return TM_E_MALFORMED;
            memcpy(dst, &s, sizeof(s));
            pos += 1 + s.len;
            break;
        }
        case K_BYTES: {
            if (pos + f->size > plen) return TM_E_MALFORMED;
            tm_blob_t b = {f->size, p + pos};
            memcpy(dst, &b, sizeof(b));
            pos += f->size;
            break;
        }
        case K_REST: { tm_blob_t b = {(uint32_t)(plen - pos), p + pos}; memcpy(dst, &b, sizeof(b)); pos = plen; break; }
        case K_F32LIST: {
            if (pos + 1 > plen) return TM_E_MALFORMED;
            tm_f32list_t l = {p[pos], NULL, p + pos + 1};
            if (pos + 1 + 4u * l.n > plen) return TM_E_MALFORMED;
            memcpy(dst, &l, sizeof(l));
            pos += 1 + 4u * l.n;
            break;
        }
        default: return TM_E_INTERNAL;
        }
    }
    if (out->type == TM_STREAM && (uint32_t)out->u.stream.n * out->u.stream.axes * 2u != out->u.stream.samples.len)
        return TM_E_MALFORMED;
    return TM_OK;
}

size_t tm_encode(const tm_msg_t *m, uint8_t *out, size_t cap)
{
    const layout_t *lay = find_layout(m->type);
    if (!lay || cap < TM_HEADER_SIZE)
        return 0;
    size_t pos = TM_HEADER_SIZE;
    const uint8_t *base = (const uint8_t *)&m->u;
    uint8_t count = fields_to_write(lay, base);
    for (uint8_t i = 0; i < count; i++) {
        const field_t *f = &lay->fields[i];
        const uint8_t *src = base + f->offset;
        size_t need;
        switch (f->kind) {
        case K_U8: if (pos + 1 > cap) return 0; out[pos++] = *src; break;
        case K_U16: { uint16_t v; memcpy(&v, src, 2); if (pos + 2 > cap) return 0; wr(out + pos, v, 2); pos += 2; break; }
        case K_U32: { uint32_t v; memcpy(&v, src, 4); if (pos + 4 > cap) return 0; wr(out + pos, v, 4); pos += 4; break; }
        case K_F32: { float v; memcpy(&v, src, 4); if (pos + 4 > cap) return 0; f32_to_bytes(v, out + pos); pos += 4; break; }
        case K_STR: {
            tm_str_t s; memcpy(&s, src, sizeof(s));
            if (pos + 1 + s.len > cap) return 0;
            out[pos++] = s.len;
            if (s.len) memcpy(out + pos, s.p, s.len);
            pos += s.len;
            break;
        }
        case K_BYTES: case K_REST: {
            tm_blob_t b; memcpy(&b, src, sizeof(b));
            need = f->kind == K_BYTES ? f->size : b.len;
            if (f->kind == K_BYTES && b.len != f->size && !(b.len == 0 && b.p == NULL)) return 0;
            if (pos + need > cap) return 0;
            if (b.p) memcpy(out + pos, b.p, need); else memset(out + pos, 0, need);
            pos += need;
            break;
        }
        case K_F32LIST: {
            tm_f32list_t l; memcpy(&l, src, sizeof(l));
            if (pos + 1 + 4u * l.n > cap) return 0;
            out[pos++] = l.n;
            for (uint8_t k = 0; k < l.n; k++) {
                if (l.vals) f32_to_bytes(l.vals[k], out + pos); else memcpy(out + pos, l.raw + 4 * k, 4);
                pos += 4;
            }
            break;
        }
        default: return 0;
        }
    }
    size_t plen = pos - TM_HEADER_SIZE;
    if (plen > TM_MAX_PAYLOAD)
        return 0;
    out[0] = TM_PROTOCOL_VERSION;
    out[1] = m->type;
    wr(out + 2, m->seq, 2);
    wr(out + 4, (uint32_t)plen, 2);
    return pos;
}

static int hex(char *o, size_t cap, const uint8_t *p, size_t n)
{
    static const char d[] = "0123456789abcdef";
    if (2 * n + 1 > cap) return -1;
    for (size_t i = 0; i < n; i++) { o[2 * i] = d[p[i] >> 4]; o[2 * i + 1] = d[p[i] & 15]; }
    o[2 * n] = 0;
    return (int)(2 * n);
}

int tm_dump(const tm_msg_t *m, char *out, size_t cap)
{
    const layout_t *lay = find_layout(m->type);
    if (!lay) return -1;
    size_t pos = 0;
    out[0] = 0;
    const uint8_t *base = (const uint8_t *)&m->u;
    uint8_t count = fields_to_write(lay, base);
    for (uint8_t i = 0; i < count; i++) {
        const field_t *f = &lay->fields[i];
        const uint8_t *src = base + f->offset;
        int w = snprintf(out + pos, cap - pos, "%s=", f->name);
        if (w < 0 || (size_t)w >= cap - pos) return -1;
        pos += (size_t)w;
        w = 0;
        switch (f->kind) {
        case K_U8: w = snprintf(out + pos, cap - pos, "%u", *src); break;
        case K_U16: { uint16_t v; memcpy(&v, src, 2); w = snprintf(out + pos, cap - pos, "%u", v); break; }
        case K_U32: { uint32_t v; memcpy(&v, src, 4); w = snprintf(out + pos, cap - pos, "%lu", (unsigned long)v); break; }
        case K_F32: { float v; memcpy(&v, src, 4); w = snprintf(out + pos, cap - pos, "%.9g", (double)v); break; }
        case K_STR: { tm_str_t s; memcpy(&s, src, sizeof(s)); w = hex(out + pos, cap - pos, s.p, s.len); break; }
        case K_BYTES: case K_REST: { tm_blob_t b; memcpy(&b, src, sizeof(b)); w = hex(out + pos, cap - pos, b.p, b.len); break; }
        case K_F32LIST: {
            tm_f32list_t l; memcpy(&l, src, sizeof(l));
            for (uint8_t k = 0; k < l.n; k++) {
                float v = l.vals ? l.vals[k] : f32_from_bytes(l.raw + 4 * k);
                int x = snprintf(out + pos, cap - pos, k ? ",%.9g" : "%.9g", (double)v);
                if (x < 0 || (size_t)x >= cap - pos) return -1;
                pos += (size_t)x;
            }
            break;
        }
        }
        if (w < 0 || (size_t)w >= cap - pos) return -1;
        pos += (size_t)w;
        if (pos + 2 > cap) return -1;
        out[pos++] = ';';
        out[pos] = 0;
    }
    return (int)pos;
}
