#include "tm_dedup.h"
#include <string.h>
#include "tm_config.h"
#include "tm_sha256.h"

/* Bytes of a marker record: u16 length 0, type u8, seq u16. */
#define MARKER_SIZE 5u

int tm_dup_covers(uint8_t type) { return type != TM_XFER_CHUNK && type != TM_GET_INFO && type != TM_XFER_QUERY; }

const tm_dup_entry_t *tm_dup_find(const tm_dup_t *c, const uint8_t *cmd, size_t len, uint32_t now_ms,
                                  uint8_t digest[TM_DUP_DIGEST_LEN])
{
    uint8_t full[32];
    tm_sha256(cmd, len, full);
    memcpy(digest, full, TM_DUP_DIGEST_LEN);
    for (int i = 0; i < TM_DUP_ENTRIES; i++) {
        const tm_dup_entry_t *e = &c->entry[i];
        /* unsigned difference: right across the 49-day wrap of now_ms */
        if (e->used && e->len == len && now_ms - e->at_ms < TM_DUP_WINDOW_MS &&
            memcmp(e->digest, digest, TM_DUP_DIGEST_LEN) == 0)
            return e;
    }
    return NULL;
}

void tm_dup_begin(tm_dup_t *c, const uint8_t digest[TM_DUP_DIGEST_LEN], size_t len, uint32_t now_ms)
{
    tm_dup_entry_t *e = &c->entry[c->next];
    c->next = (uint8_t)((c->next + 1u) % TM_DUP_ENTRIES);
    memcpy(e->digest, digest, TM_DUP_DIGEST_LEN);
    e->at_ms = now_ms;
    e->len = (uint16_t)len; /* a command is at most TM_MAX_MESSAGE bytes */
    e->fill = 0;
    e->used = 1;
    c->recording = e;
}

static void put_u16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)(v & 0xFFu);
    p[1] = (uint8_t)(v >> 8);
}

void tm_dup_record(tm_dup_t *c, const uint8_t *msg, size_t len)
{
    tm_dup_entry_t *e = c->recording;
    if (!e || !e->used || len < TM_HEADER_SIZE) return;
    size_t room = sizeof(e->replies) - e->fill;
    uint8_t *p = e->replies + e->fill;
    if (2u + len <= room) {
        put_u16(p, (uint16_t)len);
        memcpy(p + 2, msg, len);
        e->fill = (uint16_t)(e->fill + 2u + len);
        return;
    }
    uint8_t type = msg[1];
    if ((type == TM_HELLO || type == TM_XFER_STATUS) && MARKER_SIZE <= room) {
        /* a state report: a duplicate gets the current one, which is what the host asked about */
        put_u16(p, 0);
        p[2] = type;
        p[3] = msg[2];
        p[4] = msg[3];
        e->fill = (uint16_t)(e->fill + MARKER_SIZE);
        return;
    }
    e->used = 0; /* cannot answer it whole: a duplicate is handled again rather than half-answered */
    c->recording = NULL;
}

void tm_dup_end(tm_dup_t *c) { c->recording = NULL; }

int tm_dup_next_reply(const tm_dup_entry_t *e, size_t *off, tm_dup_reply_t *r)
{
    if (*off + 2u > e->fill) return 0;
    const uint8_t *p = e->replies + *off;
    size_t n = (size_t)p[0] | (size_t)p[1] << 8;
    if (n == 0) {
        r->msg = NULL;
        r->len = 0;
        r->type = p[2];
        r->seq = (uint16_t)(p[3] | p[4] << 8);
        *off += MARKER_SIZE;
        return 1;
    }
    r->msg = p + 2;
    r->len = n;
    r->type = p[3];
    r->seq = (uint16_t)(p[4] | p[5] << 8);
    *off += 2u + n;
    return 1;
}
