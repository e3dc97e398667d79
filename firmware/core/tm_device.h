/* Device logic of protocol v1 (PROTOCOL.md 3-6) over a serial link, transport-free: bytes in via
 * tm_device_rx, frames out via the HAL's write. Owns the model store, the inference engine, the
 * feature pipeline, telemetry, streaming with a lease, trial timeout, latency reports and the
 * duplicate-command cache (tm_dedup.h: every link answers a resent command without acting twice). */
#ifndef TM_DEVICE_H
#define TM_DEVICE_H
#include <stddef.h>
#include <stdint.h>
#include "tm_dedup.h"
#include "tm_features.h"
#include "tm_frame.h"
#include "tm_image.h"
#include "tm_sign.h"
#include "tm_store.h"

typedef struct {
    void (*write)(void *ctx, const uint8_t *data, size_t len);
    uint32_t (*now_us)(void *ctx); /* monotonic microseconds (wraps; used for durations) */
    uint32_t (*now_ms)(void *ctx); /* milliseconds since boot */
    void (*read_window)(void *ctx, float *samples, int frames); /* interleaved xyz, g */
    void (*set_fault)(void *ctx, uint8_t mask, float severity); /* NULL: real sensor */
    void (*reboot)(void *ctx);
    void *ctx;
    const char *device_id, *location, *profile, *firmware;
    int emulated; /* times come from an emulator's instruction clock */
    /* Message transports (MQTT): when set, bare messages go here instead of framed to write(). */
    void (*send_message)(void *ctx, uint8_t type, const uint8_t *msg, size_t len);
} tm_hal_t;

/* XFER_STATUS during a pull goes out at most this often, and when the image is complete. */
#define TM_PULL_STATUS_INTERVAL_MS 500u

/* Telemetry period and the number of frames per STREAM message (PROTOCOL.md 4.3). */
#define TM_TELEMETRY_PERIOD_MS 1000u
#define TM_STREAM_FRAMES 256
/* STREAM sample scale: +-16 g full scale in int16. */
#define TM_STREAM_SCALE (16.0f / 32768.0f)

typedef struct {
    tm_hal_t hal;
    tm_store_t store;
    tm_framer_t rx;
    tm_model_t model[2];
    uint8_t *arena[2];
    size_t arena_size;
    int cur;       /* model[cur] is the active one when has_model */
    int has_model;
    uint32_t load_us;
    uint16_t seq;
    uint32_t window_seq, next_tlm_ms, next_hello_ms, stream_until_ms, trial_deadline_ms;
    int streaming;
    uint8_t fault_mask;
    uint32_t xfer_begin_us;
    uint8_t tx[TM_MAX_MESSAGE];
    uint8_t frame[TM_FRAME_WORST(TM_MAX_MESSAGE)];
    float window[TM_WINDOW * TM_AXES];
    float features[TM_N_FEATURES];
    float score, shaft_hz;
    tm_feat_work_t work;
    uint32_t bench[TM_MAX_BENCH];
    tm_trust_t trust;                          /* keys images must be signed by (empty: unprovisioned) */
    const uint8_t (*build_keys)[TM_SIG_PUBLIC_LEN]; /* tm_device_set_trust's (not copied); the store adds its own */
    int n_build_keys;
    uint8_t sig_block[TM_SIG_BLOCK_SIZE];      /* XFER_SIGN of the transfer in progress */
    uint32_t sig_transfer;
    int sig_valid;
    void (*pull_begin)(void *ctx, const uint8_t *source, size_t len); /* tm_device_set_pull */
    void *pull_ctx;
    int pulling;                               /* the transfer in progress takes chunks from the broker */
    uint32_t pull_status_ms;                   /* when the last unsolicited XFER_STATUS went out */
    tm_dup_t dup;                              /* replies of recent commands, for duplicates (RAM: lost at reboot) */
} tm_device_t;

/* Mount the store (installing the factory image on an empty one), load the active model and
 * announce the boot (EVENT BOOTED, HELLO, and EVENT TRIAL_REVERTED after an unconfirmed trial). */
int tm_device_init(tm_device_t *d, const tm_hal_t *hal, const tm_flash_t *flash, uint32_t slot_size,
                   const uint8_t *factory, uint32_t factory_len, uint8_t *arena0, uint8_t *arena1, size_t arena_size);
/* Build-time trust store (PROTOCOL.md 6.2): images are then accepted only when signed by one of
 * these Ed25519 public keys or one a TRUST_ADD put in the store (kept across reboots). Call after
 * tm_device_init; n = 0 and nothing added leaves the device unprovisioned. `keys` must outlive the
 * device (a const array: kept by reference, no RAM copy). */
void tm_device_set_trust(tm_device_t *d, const uint8_t (*keys)[TM_SIG_PUBLIC_LEN], int n);
void tm_device_rx(tm_device_t *d, const uint8_t *data, size_t len);
/* One bare message from a message transport (MQTT payload): no framing, no CRC. */
void tm_device_message(tm_device_t *d, const uint8_t *msg, size_t len);
/* Pull transfers (PROTOCOL.md 5.2), for a transport that can fetch the site's retained chunks:
 * the device then advertises PULL_XFER and calls pull_begin(ctx, source, len) when it accepts (or
 * resumes) a XFER_BEGIN with flag PULL; the transport fetches `<source>/+` and hands each chunk to
 * tm_device_pull_chunk while tm_device_pulling says so. Call after every tm_device_init (as
 * tm_device_set_trust); without it flag PULL is BAD_ARGUMENT. A pull the journal restored (after a
 * reboot or a power cut) calls pull_begin here with its journaled source: it resumes by itself. */
void tm_device_set_pull(tm_device_t *d, void (*pull_begin)(void *ctx, const uint8_t *source, size_t len), void *ctx);
/* One chunk fetched from the broker during a pull transfer (a bare XFER_CHUNK message with
 * transfer_id 0): stored like a pushed chunk; a bad, late or foreign one is dropped without a reply
 * (nobody asked). Answers an unsolicited XFER_STATUS now and then (TM_PULL_STATUS_INTERVAL_MS). */
void tm_device_pull_chunk(tm_device_t *d, const uint8_t *msg, size_t len);
/* Whether a pull transfer still lacks chunks (the transport keeps fetching while it does). */
int tm_device_pulling(const tm_device_t *d);
/* Periodic work: telemetry, streaming, lease and trial expiry, HELLO heartbeat. Call often. */
void tm_device_poll(tm_device_t *d);

#endif
