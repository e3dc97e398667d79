#include "tm_frame.h"
#include <string.h>
#include "tm_crc32.h"

void tm_framer_init(tm_framer_t *f)
{
    memset(f, 0, sizeof(*f));
}

long tm_cobs_decode(const uint8_t *src, size_t len, uint8_t *dst)
{
    size_t in = 0, out = 0;
    while (in < len) {
        uint8_t code = src[in++];
        if (code == 0)
            return -1;
        if (in + (size_t)(code - 1) > len)
            return -1;
        for (uint8_t i = 1; i < code; i++) {
            uint8_t b = src[in++];
            if (b == 0)
                return -1;
            dst[out++] = b;
        }
        if (code != 0xFF && in < len)
            dst[out++] = 0;
    }
    return (long)out;
}

size_t tm_framer_feed(tm_framer_t *f, uint8_t byte, const uint8_t **msg)
{
    if (byte != 0) {
        if (f->skipping)
            return 0;
        if (f->len >= TM_MAX_FRAME) {
            f->counters.oversized++;
            f->len = 0;
            f->skipping = 1;
            return 0;
        }
        f->buf[f->len++] = byte;
        return 0;
    }
    if (f->skipping) {
        f->skipping = 0;
        return 0;
    }
    if (f->len == 0)
        return 0;
    size_t n = f->len;
    f->len = 0;
    long dec = tm_cobs_decode(f->buf, n, f->buf);
    if (dec < 0) {
        f->counters.bad_cobs++;
        return 0;
    }
    if (dec < TM_HEADER_SIZE + 4) {
        f->counters.truncated++;
        return 0;
    }
    size_t body = (size_t)dec - 4;
    uint32_t crc = (uint32_t)f->buf[body] | ((uint32_t)f->buf[body + 1] << 8) |
                   ((uint32_t)f->buf[body + 2] << 16) | ((uint32_t)f->buf[body + 3] << 24);
    if (tm_crc32(0, f->buf, body) != crc) {
        f->counters.bad_crc++;
        return 0;
    }
    f->counters.frames++;
    *msg = f->buf;
    return body;
}

/* Streaming COBS encoder over the message bytes followed by the 4 CRC bytes. */
size_t tm_frame_encode(const uint8_t *msg, size_t len, uint8_t *out, size_t cap)
{
    uint32_t crc = tm_crc32(0, msg, len);
    uint8_t tail[4] = {(uint8_t)crc, (uint8_t)(crc >> 8), (uint8_t)(crc >> 16), (uint8_t)(crc >> 24)};
    size_t total = len + 4;
    if (cap < TM_FRAME_WORST(len))
        return 0;
    size_t code_pos = 0, o = 1;
    uint8_t code = 1;
    for (size_t i = 0; i < total; i++) {
        uint8_t b = i < len ? msg[i] : tail[i - len];
        if (b == 0) {
            out[code_pos] = code;
            code_pos = o++;
            code = 1;
        } else {
            out[o++] = b;
            code++;
            if (code == 0xFF) {
                out[code_pos] = code;
                if (i + 1 == total) {
                    out[o++] = 0; /* a full block at the end needs no trailing code byte */
                    return o;
                }
                code_pos = o++;
                code = 1;
            }
        }
    }
    out[code_pos] = code;
    out[o++] = 0;
    return o;
}
