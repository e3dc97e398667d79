/* Model store: two image slots plus a double-buffered metadata journal on NOR-like flash.
 * Every state change is one metadata record written to the older of two journal pages (erase,
 * then write with a CRC); the newest valid record wins at boot, so a power cut at any flash
 * operation leaves either the old or the new state, never a corrupt one (host test cuts at
 * every operation). Trial activations revert at boot unless confirmed (as MCUboot's test state).
 * A transfer in progress is journaled too (target slot, size, SHA-256) with its chunk bitmap in
 * the same page: a chunk's bit is cleared in place (a write, no erase) once its data is written,
 * so after a reboot or power cut a resumed transfer asks only for the chunks still missing.
 * The trust store's keys and revocations taken over the protocol (TRUST_ADD, REVOKE; PROTOCOL.md
 * 6.2) ride in the same page as a trust record, rewritten with every record: one state change. */
#ifndef TM_STORE_H
#define TM_STORE_H
#include <stddef.h>
#include <stdint.h>
#include "tm_config.h"
#include "tm_sign.h" /* sizes of the trust record only: the store checks no signature */

typedef struct {
    uint32_t size, page_size;
    const uint8_t *base; /* memory-mapped reads: images are parsed in place */
    int (*erase)(void *ctx, uint32_t addr);                            /* one page */
    int (*write)(void *ctx, uint32_t addr, const void *data, uint32_t len); /* clears bits only */
    void *ctx;
} tm_flash_t;

#define TM_SLOT_NONE 0xFFu

typedef struct {
    uint32_t valid, size, version;
    uint8_t sha[32];
} tm_slot_meta_t;

typedef struct {
    uint32_t magic, seq;
    uint8_t active, previous, trial, reserved;
    uint32_t trial_timeout_s;
    tm_slot_meta_t slot[2];
    uint32_t crc;
} tm_meta_t;

/* The transfer in progress, after the tm_meta_t record in the same journal page (its own magic and
 * CRC: a page written by a firmware without it simply has none). Its chunk bitmap follows at
 * TM_XFER_BITMAP_OFFSET, inverted (erased 0xFF = nothing held; a cleared bit = chunk held). */
typedef struct {
    uint32_t magic, seq; /* seq: that of the tm_meta_t record it belongs to */
    uint32_t id, image_size, version;
    uint16_t chunk_size;
    uint8_t target, flags; /* flags: TM_XFER_REC_PULL (0 in pages of firmwares before it) */
    uint8_t sha[32];
    uint32_t crc;
} tm_xfer_rec_t;
/* The transfer is a pull (PROTOCOL.md 5.2): its source follows in a tm_xfer_source_t, so a reboot
 * resumes fetching without the host. */
#define TM_XFER_REC_PULL 1u

/* Longest pull source journaled (the protocol's prefix, tinymlops/v1/<site>/models/<sha256-hex>,
 * is at most 150 bytes); a longer one is not journaled: after a reboot the host's XFER_BEGIN resumes. */
#define TM_XFER_SOURCE_MAX 180u
/* The pull source of the transfer record, between it and the chunk bitmap (own CRC; seq that of
 * its tm_meta_t record). Read in place from the newest page. */
typedef struct {
    uint32_t seq;
    uint8_t len, reserved[3];
    uint8_t source[TM_XFER_SOURCE_MAX];
    uint32_t crc;
} tm_xfer_source_t;

/* Keys added and versions revoked over the protocol, after the chunk bitmap in the same journal page
 * (own magic and CRC; seq that of its tm_meta_t record). Written only once the store holds any: a
 * page without it (an unprovisioned device, or one written by an older firmware) means none. Read in
 * place from the newest page (no RAM copy: the F446 port has none to spare); slots past the counts
 * stay erased. */
typedef struct {
    uint32_t magic, seq;
    uint8_t n_keys, n_revoked, reserved[2];
    uint8_t keys[TM_MAX_TRUST_KEYS][TM_SIG_PUBLIC_LEN];
    uint8_t revoked[TM_MAX_REVOCATIONS][TM_REVOCATION_ID_LEN]; /* oldest first */
    uint32_t crc;
} tm_trust_rec_t;

#define TM_XFER_REC_OFFSET 256u    /* after tm_meta_t (about 130 B) in a journal page */
#define TM_XFER_SOURCE_OFFSET 320u /* after tm_xfer_rec_t (60 B) */
#define TM_XFER_BITMAP_OFFSET 512u /* after tm_xfer_source_t; TM_MAX_XFER_CHUNKS / 8 bytes */
#define TM_TRUST_REC_OFFSET (TM_XFER_BITMAP_OFFSET + TM_MAX_XFER_CHUNKS / 8u) /* 1536, after the bitmap */
/* Smallest journal page: record, transfer record, the whole chunk bitmap and the trust record. */
#define TM_JOURNAL_PAGE_MIN (TM_TRUST_REC_OFFSET + (uint32_t)sizeof(tm_trust_rec_t))

typedef struct {
    tm_flash_t flash;
    uint32_t slot_size;
    tm_meta_t meta;
    uint8_t meta_page;
    /* transfer in progress (journaled: survives a reboot, see tm_xfer_rec_t) */
    int xfer;
    uint32_t xfer_id, image_size, n_chunks, received, version, last_ms;
    uint16_t chunk_size;
    uint8_t target;
    uint8_t xfer_pull; /* the transfer journals a pull source (TM_XFER_REC_PULL) */
    uint8_t sha[32];
    uint8_t bitmap[TM_MAX_XFER_CHUNKS / 8];
    /* keys and revocations taken over the protocol: counts of the newest page's trust record */
    uint8_t trust_keys, trust_revoked;
    const uint8_t *pending_key, *pending_revocation; /* what the record being written adds */
    const uint8_t *pending_source;                    /* a new pull source (pending_source_len bytes) */
    uint32_t pending_source_len;
} tm_store_t;

/* Mount: read the journal, revert an unconfirmed trial (*reverted = 1), check the active image's
 * SHA-256, fall back to the other slot, and install the factory image when nothing valid is left. */
int tm_store_init(tm_store_t *s, const tm_flash_t *flash, uint32_t slot_size,
                  const uint8_t *factory, uint32_t factory_len, int *reverted);
/* Whether an image can run on this device (loads, passes its self-test): TM_OK or the error. */
typedef int (*tm_image_check_t)(void *ctx, const uint8_t *image, uint32_t len);
/* tm_store_init, then the same fall-back for an intact image that `usable` refuses (say, one a
 * firmware update can no longer run) as for a corrupt one: the other intact slot, then the factory
 * image, until `usable` accepts the active image. With none left, the active slot is TM_SLOT_NONE
 * (in RAM: the journal is not rewritten) and it still returns TM_OK; errors are flash failures.
 * Power-cut safe like every state change: a reboot redoes what a cut interrupted. */
int tm_store_mount(tm_store_t *s, const tm_flash_t *flash, uint32_t slot_size, const uint8_t *factory,
                   uint32_t factory_len, int *reverted, tm_image_check_t usable, void *ctx);
/* The active image in place, or NULL. */
const uint8_t *tm_store_active(const tm_store_t *s, uint32_t *len);
/* Stored image of a slot (valid ones only), or NULL. */
const uint8_t *tm_store_slot(const tm_store_t *s, uint8_t slot, uint32_t *len);
uint8_t tm_store_inactive(const tm_store_t *s);
/* The previous image (ROLLBACK's target) when its SHA-256 checks out, or NULL. */
const uint8_t *tm_store_previous(const tm_store_t *s, uint32_t *len);

int tm_store_begin(tm_store_t *s, uint32_t id, uint32_t image_size, uint16_t chunk_size, uint16_t max_chunk,
                   const uint8_t sha[32], uint32_t version, uint32_t now_ms, int *resumed);
int tm_store_chunk(tm_store_t *s, uint32_t id, uint32_t index, uint32_t crc, const uint8_t *data, uint32_t len,
                   uint32_t now_ms);
/* All chunks held and SHA-256 right: returns TM_OK and the image in place. */
int tm_store_verify(tm_store_t *s, uint32_t id, const uint8_t **image);
/* Record the verified image; activate it (on trial or not) or only store it. Ends the transfer. */
int tm_store_commit(tm_store_t *s, int activate, int trial, uint32_t trial_timeout_s);
int tm_store_abort(tm_store_t *s, uint32_t id);
/* The transfer in progress fetches from `source` (a pull, PROTOCOL.md 5.2) or, with len 0, is pushed:
 * journaled when that changed, so a reboot resumes a pull by itself (a source longer than
 * TM_XFER_SOURCE_MAX counts as pushed). TM_OK, TM_E_NO_TRANSFER or TM_E_INTERNAL (flash). */
int tm_store_set_source(tm_store_t *s, const uint8_t *source, uint32_t len);
/* The journaled pull source of the transfer in progress (in place in flash), or NULL when it is pushed. */
const uint8_t *tm_store_pull_source(const tm_store_t *s, uint32_t *len);
/* Activate the valid image in the inactive slot (ACTIVATE); the active one becomes previous. */
int tm_store_activate_inactive(tm_store_t *s, int trial, uint32_t trial_timeout_s);
int tm_store_rollback(tm_store_t *s);
int tm_store_confirm(tm_store_t *s);
/* Persist a key taken by TRUST_ADD (the caller checked its authorisation): TM_OK, also when it is
 * already held; TM_E_TOO_LARGE when TM_MAX_TRUST_KEYS are held. One journal record: power-cut safe. */
int tm_store_trust_add(tm_store_t *s, const uint8_t key[TM_SIG_PUBLIC_LEN]);
/* Persist a revocation (tm_sign_revocation_id); past TM_MAX_REVOCATIONS the oldest is dropped. */
int tm_store_revoke(tm_store_t *s, const uint8_t id[TM_REVOCATION_ID_LEN]);
int tm_store_is_revoked(const tm_store_t *s, const uint8_t id[TM_REVOCATION_ID_LEN]);
/* The i-th key TRUST_ADD kept (in place, in flash), or NULL past s->trust_keys. */
const uint8_t *tm_store_trust_key(const tm_store_t *s, uint8_t i);
/* Slots' versions for HELLO. */
uint32_t tm_store_version(const tm_store_t *s, uint8_t slot);

#endif
