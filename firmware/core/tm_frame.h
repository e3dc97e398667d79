/* Serial framing of PROTOCOL.md 2.1: COBS(message || crc32 LE) || 0x00, with resynchronisation.
 * The receiver decodes in place in a fixed buffer: garbage costs at most the frame it hits. */
#ifndef TM_FRAME_H
#define TM_FRAME_H
#include <stddef.h>
#include <stdint.h>
#include "tm_config.h"

typedef struct {
    uint32_t frames, oversized, bad_cobs, truncated, bad_crc;
} tm_frame_counters_t;

typedef struct {
    uint8_t buf[TM_MAX_FRAME];
    size_t len;
    int skipping;
    tm_frame_counters_t counters;
} tm_framer_t;

void tm_framer_init(tm_framer_t *f);
/* Feed one byte. Returns the message length (> 0) when a valid frame ends here, with the
 * message at *msg (valid until the next call); 0 otherwise. */
size_t tm_framer_feed(tm_framer_t *f, uint8_t byte, const uint8_t **msg);

/* Encode a message as a frame into out (capacity cap); returns the frame length or 0 if it does not fit. */
size_t tm_frame_encode(const uint8_t *msg, size_t len, uint8_t *out, size_t cap);
/* Worst-case frame length for a message of len bytes. */
#define TM_FRAME_WORST(len) ((len) + 4 + ((len) + 4) / 254 + 2)

/* COBS decode in place (dst may equal src); returns decoded length or -1 on bad COBS. */
long tm_cobs_decode(const uint8_t *src, size_t len, uint8_t *dst);

#endif
