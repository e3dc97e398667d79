/* The duplicate-command cache (PROTOCOL.md 2.3): a host that lost a reply sends the
 * command again with the same seq, and the device must answer it without acting twice (a second
 * ROLLBACK would swap the models back). tm_device keeps the replies of the last few commands and
 * answers a command with the same bytes within TM_DUP_WINDOW_MS from them, on every link (serial
 * and message transports alike). Fixed RAM, no heap: TM_DUP_ENTRIES x sizeof(tm_dup_entry_t).
 *
 * A command is known by its length and the first 8 bytes of its SHA-256 (the whole command,
 * header and seq included): commands can be 4 KB, a Cortex-M cannot keep them. A reply too large
 * for its entry is kept when it is a state report (HELLO, XFER_STATUS) as a marker that says
 * "send the current one with this seq"; the device's other replies (ACK, ERROR with its fixed
 * text, LATENCY, EVENT) always fit. */
#ifndef TM_DEDUP_H
#define TM_DEDUP_H
#include <stddef.h>
#include <stdint.h>

/* Commands remembered: the host resends one command at a time (chunks are never cached), a few
 * cover commands from two operators interleaving; each costs sizeof(tm_dup_entry_t) of RAM. */
#define TM_DUP_ENTRIES 4
/* Reply bytes per command ([u16 length, message] each): a HELLO on the Cortex-M ports is ~130 B,
 * LATENCY + EVENT MODEL_ACTIVATED (XFER_COMMIT) 80 B, the longest ERROR 77 B. */
#define TM_DUP_REPLY_BYTES 144
/* A duplicate is answered from the cache for this long after the command was first handled (the
 * Python device's DUPLICATE_WINDOW_S): a host resends within seconds. */
#define TM_DUP_WINDOW_MS 10000u
/* Bytes of the command's SHA-256 that name it: a different command with the same length colliding
 * is a 1 in 2^64 event. */
#define TM_DUP_DIGEST_LEN 8

typedef struct {
    uint8_t digest[TM_DUP_DIGEST_LEN];
    uint32_t at_ms;  /* when the command was first handled (now_ms) */
    uint16_t len;    /* the command's length */
    uint16_t fill;   /* bytes of replies[] in use */
    uint8_t used;    /* holds a command (0: empty, or dropped because a reply did not fit) */
    uint8_t replies[TM_DUP_REPLY_BYTES]; /* per reply: u16 length LE, then the encoded message;
                                          * length 0: a marker, then type u8 and seq u16 LE */
} tm_dup_entry_t;

typedef struct {
    tm_dup_entry_t entry[TM_DUP_ENTRIES];
    tm_dup_entry_t *recording; /* the entry taking the replies of the command being handled */
    uint8_t next;              /* the entry the next command replaces (the oldest) */
} tm_dup_t;

/* One reply of a cached command: the message's bytes, or (msg NULL) a state report to send anew,
 * of type `type` with seq `seq`. */
typedef struct {
    const uint8_t *msg;
    size_t len;
    uint8_t type;
    uint16_t seq;
} tm_dup_reply_t;

/* Whether duplicates of a command of this type are answered from the cache. Not XFER_CHUNK:
 * idempotent (placed by index) and too big to keep. Not the queries (GET_INFO, XFER_QUERY): they
 * change nothing, so the current state is the right answer, and a port's own status probe (the
 * MQTT port's fixed GET_INFO, seq 0) must never get a HELLO from the past. */
int tm_dup_covers(uint8_t type);
/* The entry holding `cmd`'s replies when it is a duplicate (same length and digest, first handled
 * less than TM_DUP_WINDOW_MS before `now_ms`), else NULL; `digest` gets the command's digest. */
const tm_dup_entry_t *tm_dup_find(const tm_dup_t *c, const uint8_t *cmd, size_t len, uint32_t now_ms,
                                  uint8_t digest[TM_DUP_DIGEST_LEN]);
/* Start recording the replies of a new command (digest from tm_dup_find) in the oldest entry. */
void tm_dup_begin(tm_dup_t *c, const uint8_t digest[TM_DUP_DIGEST_LEN], size_t len, uint32_t now_ms);
/* A message the device sent while handling the command being recorded (no-op when none is). */
void tm_dup_record(tm_dup_t *c, const uint8_t *msg, size_t len);
/* The command's handling is over: later messages are not its replies. */
void tm_dup_end(tm_dup_t *c);
/* The replies of an entry in order: start with *off = 0; 1 and *r filled, or 0 after the last. */
int tm_dup_next_reply(const tm_dup_entry_t *e, size_t *off, tm_dup_reply_t *r);

#endif
