#include "tm_store.h"
#include <string.h>
#include "tm_crc32.h"
#include "tm_sha256.h"

#define META_MAGIC 0x54534D54u /* "TMST" */
#define XFER_MAGIC 0x58464D54u /* "TMFX" */
#define TRUST_MAGIC 0x52544D54u /* "TMTR" */
/* Bytes of the inverted chunk bitmap written per flash write: no 1 KB copy on the stack. */
#define XFER_BITMAP_SLICE 64u

/* The journal page layout of tm_store.h holds: record, then transfer record, then bitmap. */
typedef char tm_meta_fits[sizeof(tm_meta_t) <= TM_XFER_REC_OFFSET ? 1 : -1];
typedef char tm_xfer_rec_fits[TM_XFER_REC_OFFSET + sizeof(tm_xfer_rec_t) <= TM_XFER_SOURCE_OFFSET ? 1 : -1];
typedef char tm_xfer_source_fits[TM_XFER_SOURCE_OFFSET + sizeof(tm_xfer_source_t) <= TM_XFER_BITMAP_OFFSET ? 1 : -1];
typedef char tm_trust_rec_fits[TM_JOURNAL_PAGE_MIN <= 4096u ? 1 : -1]; /* the ports' smallest page */

static uint32_t slot_addr(const tm_store_t *s, uint8_t slot) { return (uint32_t)slot * s->slot_size; }
static uint32_t meta_addr(const tm_store_t *s, uint8_t page) { return 2u * s->slot_size + page * s->flash.page_size; }

static int meta_ok(const tm_meta_t *m)
{
    if (m->magic != META_MAGIC || tm_crc32(0, m, offsetof(tm_meta_t, crc)) != m->crc) return 0;
    if ((m->active > 1 && m->active != TM_SLOT_NONE) || (m->previous > 1 && m->previous != TM_SLOT_NONE)) return 0;
    return 1;
}

/* The transfer record and inverted chunk bitmap of the RAM state into journal page `page`. */
static int write_xfer(tm_store_t *s, uint8_t page)
{
    tm_xfer_rec_t r;
    memset(&r, 0, sizeof(r));
    r.magic = XFER_MAGIC;
    r.seq = s->meta.seq;
    r.id = s->xfer_id;
    r.image_size = s->image_size;
    r.version = s->version;
    r.chunk_size = s->chunk_size;
    r.target = s->target;
    /* the source: a new one, or the newest page's (still intact: this page is the other one) */
    uint32_t src_len = 0;
    const uint8_t *src = s->pending_source ? s->pending_source : tm_store_pull_source(s, &src_len);
    if (s->pending_source) src_len = s->pending_source_len;
    if (src && src_len) r.flags = TM_XFER_REC_PULL;
    memcpy(r.sha, s->sha, 32);
    r.crc = tm_crc32(0, &r, offsetof(tm_xfer_rec_t, crc));
    uint32_t addr = meta_addr(s, page);
    if (s->flash.write(s->flash.ctx, addr + TM_XFER_REC_OFFSET, &r, sizeof(r))) return TM_E_INTERNAL;
    if (r.flags & TM_XFER_REC_PULL) { /* through RAM: never flash-to-flash */
        tm_xfer_source_t rec;
        memset(&rec, 0, sizeof(rec));
        rec.seq = s->meta.seq;
        rec.len = (uint8_t)src_len;
        memcpy(rec.source, src, src_len);
        rec.crc = tm_crc32(0, &rec, offsetof(tm_xfer_source_t, crc));
        if (s->flash.write(s->flash.ctx, addr + TM_XFER_SOURCE_OFFSET, &rec, sizeof(rec))) return TM_E_INTERNAL;
    }
    uint8_t inv[XFER_BITMAP_SLICE];
    uint32_t bytes = (s->n_chunks + 7u) / 8u;
    for (uint32_t off = 0; off < bytes; off += sizeof(inv)) {
        uint32_t n = bytes - off < sizeof(inv) ? bytes - off : (uint32_t)sizeof(inv);
        for (uint32_t i = 0; i < n; i++) inv[i] = (uint8_t)~s->bitmap[off + i];
        if (s->flash.write(s->flash.ctx, addr + TM_XFER_BITMAP_OFFSET + off, inv, n)) return TM_E_INTERNAL;
    }
    return TM_OK;
}

static int trust_held(const tm_store_t *s)
{
    return s->trust_keys || s->trust_revoked || s->pending_key || s->pending_revocation;
}

/* The newest page's trust record, and its key and revocation slots (byte access: no alignment). */
static const uint8_t *trust_page(const tm_store_t *s)
{
    return s->flash.base + meta_addr(s, s->meta_page) + TM_TRUST_REC_OFFSET;
}
static const uint8_t *key_at(const tm_store_t *s, uint32_t i)
{
    return trust_page(s) + offsetof(tm_trust_rec_t, keys) + i * TM_SIG_PUBLIC_LEN;
}
static const uint8_t *revoked_at(const tm_store_t *s, uint32_t i)
{
    return trust_page(s) + offsetof(tm_trust_rec_t, revoked) + i * TM_REVOCATION_ID_LEN;
}

/* One slot of the trust record into page `dst` (through RAM: never flash-to-flash), CRC chained;
 * an unused slot stays erased and counts as 0xFF bytes. */
static int write_slot(tm_store_t *s, uint32_t dst, const uint8_t *src, uint32_t len, uint32_t *crc)
{
    uint8_t item[TM_SIG_PUBLIC_LEN];
    if (src) memcpy(item, src, len); else memset(item, 0xFF, len);
    *crc = tm_crc32(*crc, item, len);
    return src && s->flash.write(s->flash.ctx, dst, item, len) ? TM_E_INTERNAL : TM_OK;
}

/* The trust record (the newest page's, plus what is pending) into journal page `page`; its seq is
 * that of the record about to be written. */
static int write_trust(tm_store_t *s, uint8_t page)
{
    uint32_t dst = meta_addr(s, page) + TM_TRUST_REC_OFFSET;
    uint32_t drop = s->pending_revocation && s->trust_revoked == TM_MAX_REVOCATIONS; /* the oldest goes */
    tm_trust_rec_t head; /* its first fields only: the slots are written one by one */
    memset(&head, 0, offsetof(tm_trust_rec_t, keys));
    head.magic = TRUST_MAGIC;
    head.seq = s->meta.seq;
    head.n_keys = (uint8_t)(s->trust_keys + (s->pending_key != NULL));
    head.n_revoked = (uint8_t)(s->trust_revoked - drop + (s->pending_revocation != NULL));
    uint32_t crc = tm_crc32(0, &head, offsetof(tm_trust_rec_t, keys));
    if (s->flash.write(s->flash.ctx, dst, &head, offsetof(tm_trust_rec_t, keys))) return TM_E_INTERNAL;
    for (uint32_t i = 0; i < TM_MAX_TRUST_KEYS; i++) {
        const uint8_t *src = i < s->trust_keys ? key_at(s, i) : i < head.n_keys ? s->pending_key : NULL;
        if (write_slot(s, dst + offsetof(tm_trust_rec_t, keys) + i * TM_SIG_PUBLIC_LEN, src, TM_SIG_PUBLIC_LEN, &crc))
            return TM_E_INTERNAL;
    }
    for (uint32_t i = 0; i < TM_MAX_REVOCATIONS; i++) {
        const uint8_t *src = i + drop < s->trust_revoked ? revoked_at(s, i + drop)
                             : i < head.n_revoked       ? s->pending_revocation : NULL;
        if (write_slot(s, dst + offsetof(tm_trust_rec_t, revoked) + i * TM_REVOCATION_ID_LEN, src,
                       TM_REVOCATION_ID_LEN, &crc))
            return TM_E_INTERNAL;
    }
    return s->flash.write(s->flash.ctx, dst + offsetof(tm_trust_rec_t, crc), &crc, sizeof(crc)) ? TM_E_INTERNAL : TM_OK;
}

/* One state change: erase the older page, write the transfer and the trust record (if any) there,
 * then the record whose CRC makes the page count: a cut before that leaves the previous page the newest. */
static int write_meta(tm_store_t *s)
{
    uint8_t page = (uint8_t)(1u - s->meta_page);
    s->meta.magic = META_MAGIC;
    s->meta.seq++;
    s->meta.crc = tm_crc32(0, &s->meta, offsetof(tm_meta_t, crc));
    if (s->flash.erase(s->flash.ctx, meta_addr(s, page))) return TM_E_INTERNAL;
    if (s->xfer && write_xfer(s, page)) return TM_E_INTERNAL;
    if (trust_held(s) && write_trust(s, page)) return TM_E_INTERNAL;
    if (s->flash.write(s->flash.ctx, meta_addr(s, page), &s->meta, sizeof(s->meta))) return TM_E_INTERNAL;
    if (memcmp(s->flash.base + meta_addr(s, page), &s->meta, sizeof(s->meta)) != 0) return TM_E_INTERNAL;
    s->meta_page = page;
    return TM_OK;
}

static int slot_intact(const tm_store_t *s, uint8_t slot)
{
    if (slot > 1) return 0;
    const tm_slot_meta_t *m = &s->meta.slot[slot];
    if (!m->valid || m->size == 0 || m->size > s->slot_size) return 0;
    uint8_t d[32];
    tm_sha256(s->flash.base + slot_addr(s, slot), m->size, d);
    return memcmp(d, m->sha, 32) == 0;
}

static int erase_range(tm_store_t *s, uint32_t addr, uint32_t len)
{
    for (uint32_t off = 0; off < len; off += s->flash.page_size)
        if (s->flash.erase(s->flash.ctx, addr + off)) return TM_E_INTERNAL;
    return TM_OK;
}

static int install(tm_store_t *s, uint8_t slot, const uint8_t *image, uint32_t len, uint32_t version)
{
    if (s->xfer && s->target == slot) s->xfer = 0; /* the slot it was filling is overwritten */
    s->meta.slot[slot].valid = 0;
    if (s->meta.previous == slot) s->meta.previous = TM_SLOT_NONE;
    if (s->meta.active == slot) s->meta.active = TM_SLOT_NONE;
    int rc = write_meta(s);
    if (!rc) rc = erase_range(s, slot_addr(s, slot), len);
    if (!rc && s->flash.write(s->flash.ctx, slot_addr(s, slot), image, len)) rc = TM_E_INTERNAL;
    if (rc) return rc;
    tm_slot_meta_t *m = &s->meta.slot[slot];
    m->size = len;
    m->version = version;
    tm_sha256(image, len, m->sha);
    m->valid = 1;
    s->meta.active = slot;
    s->meta.trial = 0;
    return write_meta(s);
}

/* The transfer journaled with the newest record, when it is whole and still fits the slots' state
 * (its target is neither active nor a valid image): a reboot resumes it. */
static void restore_xfer(tm_store_t *s)
{
    tm_xfer_rec_t r;
    const uint8_t *page = s->flash.base + meta_addr(s, s->meta_page);
    memcpy(&r, page + TM_XFER_REC_OFFSET, sizeof(r));
    if (r.magic != XFER_MAGIC || r.crc != tm_crc32(0, &r, offsetof(tm_xfer_rec_t, crc)) || r.seq != s->meta.seq)
        return;
    if (r.target > 1 || r.target == s->meta.active || r.target == s->meta.previous || s->meta.slot[r.target].valid ||
        r.image_size == 0 || r.image_size > s->slot_size || r.chunk_size == 0 || r.chunk_size > TM_MAX_CHUNK)
        return;
    uint32_t n = (r.image_size + r.chunk_size - 1u) / r.chunk_size;
    if (n > TM_MAX_XFER_CHUNKS) return;
    s->xfer = 1;
    s->xfer_id = r.id;
    s->image_size = r.image_size;
    s->chunk_size = r.chunk_size;
    s->n_chunks = n;
    s->version = r.version;
    s->target = r.target;
    if (r.flags & TM_XFER_REC_PULL) { /* resumed by itself only with its whole source */
        tm_xfer_source_t src;
        memcpy(&src, page + TM_XFER_SOURCE_OFFSET, sizeof(src));
        s->xfer_pull = src.seq == s->meta.seq && src.len > 0 && src.len <= TM_XFER_SOURCE_MAX &&
                       src.crc == tm_crc32(0, &src, offsetof(tm_xfer_source_t, crc));
    }
    s->last_ms = 0; /* counts as active at boot: a different image may take over after XFER_STALE_S */
    memcpy(s->sha, r.sha, 32);
    s->received = 0;
    for (uint32_t i = 0; i < n; i++)
        if (!(page[TM_XFER_BITMAP_OFFSET + i / 8] & (1u << (i % 8)))) {
            s->bitmap[i / 8] |= (uint8_t)(1u << (i % 8));
            s->received++;
        }
}

/* The trust record journaled with the newest record, when whole; none otherwise. */
static void restore_trust(tm_store_t *s)
{
    tm_trust_rec_t head;
    uint32_t crc;
    const uint8_t *rec = trust_page(s);
    memcpy(&head, rec, offsetof(tm_trust_rec_t, keys));
    memcpy(&crc, rec + offsetof(tm_trust_rec_t, crc), sizeof(crc));
    if (head.magic != TRUST_MAGIC || head.seq != s->meta.seq || head.n_keys > TM_MAX_TRUST_KEYS ||
        head.n_revoked > TM_MAX_REVOCATIONS || crc != tm_crc32(0, rec, offsetof(tm_trust_rec_t, crc)))
        return;
    s->trust_keys = head.n_keys;
    s->trust_revoked = head.n_revoked;
}

static uint32_t image_version(const uint8_t *img, uint32_t len)
{
    /* META is the first section by convention; 0 when the layout differs (only for HELLO) */
    if (len >= 36 && img[16] == 1) return img[32] | (img[33] << 8) | (img[34] << 16) | ((uint32_t)img[35] << 24);
    return 0;
}

int tm_store_init(tm_store_t *s, const tm_flash_t *flash, uint32_t slot_size,
                  const uint8_t *factory, uint32_t factory_len, int *reverted)
{
    memset(s, 0, sizeof(*s));
    s->flash = *flash;
    s->slot_size = slot_size;
    *reverted = 0;
    if (slot_size % flash->page_size || 2u * slot_size + 2u * flash->page_size > flash->size ||
        flash->page_size < TM_JOURNAL_PAGE_MIN)
        return TM_E_INTERNAL;
    tm_meta_t a, b;
    memcpy(&a, flash->base + meta_addr(s, 0), sizeof(a));
    memcpy(&b, flash->base + meta_addr(s, 1), sizeof(b));
    int oka = meta_ok(&a), okb = meta_ok(&b);
    if (oka && (!okb || (int32_t)(a.seq - b.seq) > 0)) { s->meta = a; s->meta_page = 0; }
    else if (okb) { s->meta = b; s->meta_page = 1; }
    else {
        memset(&s->meta, 0, sizeof(s->meta));
        s->meta.active = s->meta.previous = TM_SLOT_NONE;
        s->meta_page = 1; /* the first record goes to page 0 */
    }
    if (oka || okb) {
        restore_xfer(s);
        restore_trust(s);
    }
    int rc = TM_OK;
    if (s->meta.trial) { /* rebooted before CONFIRM: MCUboot-style revert */
        uint8_t bad = s->meta.active;
        s->meta.active = s->meta.previous;
        s->meta.previous = bad;
        s->meta.trial = 0;
        *reverted = 1;
        rc = write_meta(s);
    }
    if (!slot_intact(s, s->meta.active)) {
        uint8_t other = s->meta.active == TM_SLOT_NONE ? s->meta.previous : (uint8_t)(s->meta.active ^ 1u);
        if (slot_intact(s, other)) {
            s->meta.active = other;
            s->meta.previous = TM_SLOT_NONE;
            rc = write_meta(s);
        } else if (factory && factory_len && factory_len <= slot_size) {
            rc = install(s, 0, factory, factory_len, image_version(factory, factory_len));
        } else {
            s->meta.active = TM_SLOT_NONE;
        }
    }
    if (s->meta.previous != TM_SLOT_NONE && !slot_intact(s, s->meta.previous)) s->meta.previous = TM_SLOT_NONE;
    return rc;
}

/* tm_store_mount's record of what it refused: slot 0, slot 1, and the factory image once installed. */
#define REFUSED_FACTORY 4u

int tm_store_mount(tm_store_t *s, const tm_flash_t *flash, uint32_t slot_size, const uint8_t *factory,
                   uint32_t factory_len, int *reverted, tm_image_check_t usable, void *ctx)
{
    int rc = tm_store_init(s, flash, slot_size, factory, factory_len, reverted);
    unsigned refused = 0;
    /* each pass refuses one more of slot 0, slot 1, the factory image, or returns: at most four */
    while (rc == TM_OK) {
        uint32_t len;
        const uint8_t *img = tm_store_active(s, &len);
        if (img && usable(ctx, img, len) == TM_OK) return TM_OK;
        if (img) refused |= 1u << s->meta.active;
        uint8_t next = TM_SLOT_NONE;
        for (uint8_t k = 0; k < 2 && next == TM_SLOT_NONE; k++)
            if (!(refused & (1u << k)) && slot_intact(s, k)) next = k;
        if (next != TM_SLOT_NONE) {
            s->meta.active = next;
            s->meta.previous = TM_SLOT_NONE; /* rolling back to what was refused would not run either */
            s->meta.trial = 0;
            rc = write_meta(s);
        } else if (!(refused & REFUSED_FACTORY) && factory && factory_len && factory_len <= s->slot_size) {
            refused = (refused | REFUSED_FACTORY) & ~1u; /* slot 0 now holds the factory image */
            rc = install(s, 0, factory, factory_len, image_version(factory, factory_len));
        } else {
            s->meta.active = TM_SLOT_NONE;
            return TM_OK;
        }
    }
    return rc;
}

const uint8_t *tm_store_slot(const tm_store_t *s, uint8_t slot, uint32_t *len)
{
    if (slot > 1 || !s->meta.slot[slot].valid) return NULL;
    *len = s->meta.slot[slot].size;
    return s->flash.base + slot_addr(s, slot);
}

const uint8_t *tm_store_active(const tm_store_t *s, uint32_t *len) { return tm_store_slot(s, s->meta.active, len); }

uint8_t tm_store_inactive(const tm_store_t *s) { return s->meta.active == 0 ? 1 : 0; }

const uint8_t *tm_store_previous(const tm_store_t *s, uint32_t *len)
{
    return slot_intact(s, s->meta.previous) ? tm_store_slot(s, s->meta.previous, len) : NULL;
}

uint32_t tm_store_version(const tm_store_t *s, uint8_t slot)
{
    return slot <= 1 && s->meta.slot[slot].valid ? s->meta.slot[slot].version : 0;
}

int tm_store_begin(tm_store_t *s, uint32_t id, uint32_t image_size, uint16_t chunk_size, uint16_t max_chunk,
                   const uint8_t sha[32], uint32_t version, uint32_t now_ms, int *resumed)
{
    *resumed = 0;
    if (s->xfer && memcmp(sha, s->sha, 32) == 0 && image_size == s->image_size && chunk_size == s->chunk_size) {
        s->xfer_id = id; /* same image: resume, keep what is held */
        s->last_ms = now_ms;
        *resumed = 1;
        return TM_OK;
    }
    if (s->xfer && id != s->xfer_id && now_ms - s->last_ms < TM_XFER_STALE_S * 1000u) return TM_E_BUSY;
    /* the inactive slot holds the model a trial reverts to: no transfer may overwrite it */
    if (s->meta.trial) return TM_E_BUSY;
    if (image_size > s->slot_size) return TM_E_TOO_LARGE;
    if (chunk_size == 0 || chunk_size > max_chunk || image_size == 0) return TM_E_BAD_ARGUMENT;
    uint32_t n = (image_size + chunk_size - 1u) / chunk_size;
    if (n > TM_MAX_XFER_CHUNKS) return TM_E_BAD_ARGUMENT;
    int journaled = s->xfer; /* a transfer this one replaces: its chunk bits must not outlive the erase */
    s->xfer = 0;
    uint8_t t = tm_store_inactive(s);
    if (s->meta.slot[t].valid || s->meta.previous == t || journaled) { /* journal first: never point at a slot being erased */
        s->meta.slot[t].valid = 0;
        if (s->meta.previous == t) s->meta.previous = TM_SLOT_NONE;
        int rc = write_meta(s);
        if (rc) return rc;
    }
    int rc = erase_range(s, slot_addr(s, t), image_size);
    if (rc) return rc;
    s->xfer = 1;
    s->xfer_id = id;
    s->image_size = image_size;
    s->chunk_size = chunk_size;
    s->n_chunks = n;
    s->received = 0;
    s->version = version;
    s->target = t;
    s->xfer_pull = 0; /* pushed until tm_store_set_source says otherwise */
    s->last_ms = now_ms;
    memcpy(s->sha, sha, 32);
    memset(s->bitmap, 0, sizeof(s->bitmap));
    rc = write_meta(s); /* journaled only once its slot is erased */
    if (rc) s->xfer = 0;
    return rc;
}

int tm_store_chunk(tm_store_t *s, uint32_t id, uint32_t index, uint32_t crc, const uint8_t *data, uint32_t len,
                   uint32_t now_ms)
{
    if (!s->xfer || id != s->xfer_id) return TM_E_NO_TRANSFER;
    if (index >= s->n_chunks) return TM_E_CHUNK_RANGE;
    uint32_t off = index * s->chunk_size;
    uint32_t want = s->image_size - off < s->chunk_size ? s->image_size - off : s->chunk_size;
    if (len != want) return TM_E_CHUNK_RANGE;
    if (tm_crc32(0, data, len) != crc) return TM_E_CHUNK_CRC;
    s->last_ms = now_ms;
    if (s->bitmap[index / 8] & (1u << (index % 8))) return TM_OK; /* duplicate: harmless */
    if (s->flash.write(s->flash.ctx, slot_addr(s, s->target) + off, data, len)) return TM_E_INTERNAL;
    /* then its bit in the journal page, in place: a cut before leaves the chunk missing, never held
     * with half its data (sent again, it is written over identical bytes: NOR writes only clear) */
    uint8_t held = (uint8_t)~(1u << (index % 8));
    if (s->flash.write(s->flash.ctx, meta_addr(s, s->meta_page) + TM_XFER_BITMAP_OFFSET + index / 8, &held, 1))
        return TM_E_INTERNAL;
    s->bitmap[index / 8] |= (uint8_t)(1u << (index % 8));
    s->received++;
    return TM_OK;
}

int tm_store_verify(tm_store_t *s, uint32_t id, const uint8_t **image)
{
    if (!s->xfer || id != s->xfer_id) return TM_E_NO_TRANSFER;
    if (s->received != s->n_chunks) return TM_E_INCOMPLETE;
    const uint8_t *img = s->flash.base + slot_addr(s, s->target);
    uint8_t d[32];
    tm_sha256(img, s->image_size, d);
    if (memcmp(d, s->sha, 32) != 0) return TM_E_HASH_MISMATCH;
    *image = img;
    return TM_OK;
}

int tm_store_commit(tm_store_t *s, int activate, int trial, uint32_t trial_timeout_s)
{
    if (!s->xfer) return TM_E_NO_TRANSFER;
    uint8_t t = s->target;
    tm_slot_meta_t *m = &s->meta.slot[t];
    m->valid = 1;
    m->size = s->image_size;
    m->version = s->version;
    memcpy(m->sha, s->sha, 32);
    if (activate) {
        s->meta.previous = s->meta.active;
        s->meta.active = t;
        s->meta.trial = trial ? 1 : 0;
        s->meta.trial_timeout_s = trial_timeout_s;
    }
    s->xfer = 0;
    return write_meta(s);
}

int tm_store_abort(tm_store_t *s, uint32_t id)
{
    if (!s->xfer || id != s->xfer_id) return TM_E_NO_TRANSFER;
    s->xfer = 0;
    return write_meta(s); /* or a reboot would resume it */
}

int tm_store_set_source(tm_store_t *s, const uint8_t *source, uint32_t len)
{
    if (!s->xfer) return TM_E_NO_TRANSFER;
    if (len > TM_XFER_SOURCE_MAX) len = 0; /* not journaled: the host's XFER_BEGIN resumes it */
    uint32_t held_len = 0;
    const uint8_t *held = tm_store_pull_source(s, &held_len);
    if (held_len == len && (len == 0 || memcmp(held, source, len) == 0)) return TM_OK; /* unchanged */
    s->pending_source = len ? source : NULL;
    s->pending_source_len = len;
    uint8_t before = s->xfer_pull;
    s->xfer_pull = 0; /* write_xfer takes the pending source, or none */
    int rc = write_meta(s);
    s->pending_source = NULL;
    s->pending_source_len = 0;
    s->xfer_pull = rc ? before : (uint8_t)(len > 0);
    return rc;
}

const uint8_t *tm_store_pull_source(const tm_store_t *s, uint32_t *len)
{
    *len = 0;
    if (!s->xfer || !s->xfer_pull) return NULL;
    const uint8_t *rec = s->flash.base + meta_addr(s, s->meta_page) + TM_XFER_SOURCE_OFFSET;
    *len = rec[offsetof(tm_xfer_source_t, len)];
    return rec + offsetof(tm_xfer_source_t, source);
}

int tm_store_activate_inactive(tm_store_t *s, int trial, uint32_t trial_timeout_s)
{
    uint8_t t = tm_store_inactive(s);
    if (!slot_intact(s, t)) return TM_E_NO_MODEL;
    s->meta.previous = s->meta.active;
    s->meta.active = t;
    s->meta.trial = trial ? 1 : 0;
    s->meta.trial_timeout_s = trial_timeout_s;
    return write_meta(s);
}

int tm_store_rollback(tm_store_t *s)
{
    if (s->meta.previous == TM_SLOT_NONE || !slot_intact(s, s->meta.previous)) return TM_E_NO_PREVIOUS;
    uint8_t old = s->meta.active;
    s->meta.active = s->meta.previous;
    s->meta.previous = old;
    s->meta.trial = 0;
    return write_meta(s);
}

int tm_store_confirm(tm_store_t *s)
{
    if (!s->meta.trial) return TM_E_NOT_TRIAL;
    s->meta.trial = 0;
    return write_meta(s);
}

int tm_store_trust_add(tm_store_t *s, const uint8_t key[TM_SIG_PUBLIC_LEN])
{
    for (uint8_t i = 0; i < s->trust_keys; i++)
        if (memcmp(key_at(s, i), key, TM_SIG_PUBLIC_LEN) == 0) return TM_OK;
    if (s->trust_keys >= TM_MAX_TRUST_KEYS) return TM_E_TOO_LARGE;
    s->pending_key = key;
    int rc = write_meta(s);
    s->pending_key = NULL;
    if (!rc) s->trust_keys++;
    return rc;
}

const uint8_t *tm_store_trust_key(const tm_store_t *s, uint8_t i)
{
    return i < s->trust_keys ? key_at(s, i) : NULL;
}

int tm_store_is_revoked(const tm_store_t *s, const uint8_t id[TM_REVOCATION_ID_LEN])
{
    for (uint8_t i = 0; i < s->trust_revoked; i++)
        if (memcmp(revoked_at(s, i), id, TM_REVOCATION_ID_LEN) == 0) return 1;
    return 0;
}

int tm_store_revoke(tm_store_t *s, const uint8_t id[TM_REVOCATION_ID_LEN])
{
    if (tm_store_is_revoked(s, id)) return TM_OK;
    s->pending_revocation = id;
    int rc = write_meta(s);
    s->pending_revocation = NULL;
    if (!rc && s->trust_revoked < TM_MAX_REVOCATIONS) s->trust_revoked++;
    return rc;
}
