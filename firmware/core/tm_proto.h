/* Protocol v1 message codec (PROTOCOL.md 1, 3, 4, 5): one field table per type drives both the
 * decoder and the encoder, like app/protocol/messages.py. Decoding never copies: strings and
 * byte fields point into the received buffer. */
#ifndef TM_PROTO_H
#define TM_PROTO_H
#include <stddef.h>
#include <stdint.h>
#include "tm_config.h"

typedef struct { uint8_t len; const uint8_t *p; } tm_str_t;
typedef struct { uint32_t len; const uint8_t *p; } tm_blob_t;
/* Encoding reads vals when set, else raw (little-endian f32 bytes, as decoded). */
typedef struct { uint8_t n; const float *vals; const uint8_t *raw; } tm_f32list_t;

typedef struct {
    uint8_t proto_min, proto_max; uint32_t caps; uint8_t state;
    tm_str_t device_id, location, profile, firmware, model_name;
    uint32_t model_version; tm_blob_t model_sha; uint32_t prev_version; uint8_t trial;
    uint32_t slot_size, free_slot, ram_budget; uint16_t max_chunk; uint32_t sample_rate, uptime_s;
    uint8_t fault_mask;
    uint8_t trust_keys; /* appended (PROTOCOL.md 6.2) */
} tm_hello_t;
typedef struct {
    uint32_t uptime_ms, window_seq, model_version; float score, threshold; uint8_t flags;
    float shaft_hz; tm_f32list_t features;
} tm_telemetry_t;
typedef struct {
    uint32_t window_seq, sample_rate; float scale; uint16_t n; uint8_t axes; tm_blob_t samples;
} tm_stream_t;
typedef struct { uint8_t ref_type; } tm_ack_t;
typedef struct { uint8_t ref_type; uint16_t code; tm_str_t message; } tm_error_t;
typedef struct {
    uint32_t model_version; uint8_t flags; uint32_t deploy_us, load_us; uint16_t n;
    uint32_t min_us, median_us, p95_us, max_us;
} tm_latency_t;
typedef struct {
    uint32_t transfer_id, image_size; uint16_t chunk_size; uint32_t n_chunks, received; tm_blob_t bitmap;
} tm_xfer_status_t;
typedef struct { uint16_t code; tm_str_t message; } tm_event_t;
typedef struct { uint16_t lease_s; } tm_stream_start_t;
typedef struct {
    uint32_t transfer_id, image_size; uint16_t chunk_size; uint8_t flags; tm_blob_t sha256;
    tm_str_t model_name; uint32_t model_version; tm_str_t source;
} tm_xfer_begin_t;
typedef struct { uint32_t transfer_id, index, crc32; tm_blob_t data; } tm_xfer_chunk_t;
typedef struct { uint32_t transfer_id; } tm_xfer_id_t; /* XFER_QUERY, XFER_ABORT */
typedef struct { uint32_t transfer_id; uint8_t mode; uint16_t trial_timeout_s, bench_count; } tm_xfer_commit_t;
typedef struct { uint16_t count; } tm_benchmark_t;
typedef struct { uint8_t mask; float severity; } tm_set_fault_t;
typedef struct { uint8_t trial; uint16_t trial_timeout_s, bench_count; } tm_activate_t;
typedef struct { uint32_t transfer_id; tm_blob_t block; } tm_xfer_sign_t;
typedef struct { tm_blob_t public_key, auth; } tm_trust_add_t;
typedef struct { tm_str_t model_name; uint32_t model_version; tm_blob_t auth; } tm_revoke_t;

typedef struct {
    uint8_t type;
    uint16_t seq;
    union {
        tm_hello_t hello; tm_telemetry_t telemetry; tm_stream_t stream; tm_ack_t ack; tm_error_t error;
        tm_latency_t latency; tm_xfer_status_t xfer_status; tm_event_t event; tm_stream_start_t stream_start;
        tm_xfer_begin_t xfer_begin; tm_xfer_chunk_t xfer_chunk; tm_xfer_id_t xfer_id;
        tm_xfer_commit_t xfer_commit; tm_benchmark_t benchmark; tm_set_fault_t set_fault; tm_activate_t activate;
        tm_xfer_sign_t xfer_sign; tm_trust_add_t trust_add; tm_revoke_t revoke;
    } u;
} tm_msg_t;

/* Parse one message (header + payload). Returns TM_OK or MALFORMED / UNSUPPORTED_VERSION / UNKNOWN_TYPE. */
int tm_decode(const uint8_t *buf, size_t len, tm_msg_t *out);
/* Encode into out; returns the message length, 0 when it does not fit or a field is out of range. */
size_t tm_encode(const tm_msg_t *m, uint8_t *out, size_t cap);
/* Whether the type is known to this codec. */
int tm_known_type(uint8_t type);
/* A text form "name=value;..." (ints decimal, f32 %.9g, str/bytes hex) for tests; returns length or -1. */
int tm_dump(const tm_msg_t *m, char *out, size_t cap);
/* Strict UTF-8 check (what Python's decode accepts). */
int tm_utf8_valid(const uint8_t *p, size_t len);
/* Helper: a tm_str_t over a C string (truncated to 255 bytes). */
tm_str_t tm_str(const char *s);

#endif
