/* libFuzzer target: arbitrary journal pages and slot contents at boot. The input fills the two
 * journal records, their transfer records and chunk bitmaps (the harness fixes magics and CRCs
 * when the input's first byte asks, so the fuzzer explores what the records say, not only CRC
 * failures) and the slots; then the store mounts and runs a resumed transfer, a commit, a
 * rollback and a confirm. Invariants: the mounted active image passes the boot check, a restored
 * transfer targets the inactive slot and counts no more chunks than it has.
 * Input: fix u8 (per page: bit 0 meta magic, 1 meta CRC, 2 transfer magic + seq, 3 transfer CRC;
 * page 1 in bits 4-7), sha u8 (bit 2 * page + slot: that record's SHA-256 of the slot is made
 * right), slot 0 and slot 1 contents, then per page: tm_meta_t up to its CRC, tm_xfer_rec_t up to
 * its CRC, 64 bytes of chunk bitmap; then fix_trust u8 (per page: bit 0 trust magic + seq, bit 1 its
 * CRC; page 1 in bits 2-3) and per page tm_trust_rec_t up to its CRC. Missing bytes stay erased
 * (0xFF). Further invariants: the trust counts stay in bounds, and a key and a revocation the store
 * took are still there after the rest of the run and a second mount. */
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include "tm_crc32.h"
#include "tm_sha256.h"
#include "tm_store.h"

#define PAGE 4096u
/* Small slots keep each run fast; four pages hold the harness's factory stand-in. */
#define SLOT (4u * PAGE)
#define FLASH_SIZE (2u * SLOT + 2u * PAGE)
/* Bytes of the input copied into each slot after the journal part. */
#define SLOT_BYTES_FROM_INPUT 256u

static uint8_t mem[FLASH_SIZE];
static const uint8_t kFactory[] = "TMLM factory stand-in: the boot check accepts images starting TMLM";

static int fl_erase(void *ctx, uint32_t addr)
{
    (void)ctx;
    if (addr % PAGE || addr >= FLASH_SIZE) return -1;
    memset(mem + addr, 0xFF, PAGE);
    return 0;
}

static int fl_write(void *ctx, uint32_t addr, const void *data, uint32_t len)
{
    (void)ctx;
    if (addr > FLASH_SIZE || len > FLASH_SIZE - addr) return -1;
    const uint8_t *p = (const uint8_t *)data;
    for (uint32_t i = 0; i < len; i++) mem[addr + i] &= p[i];
    return 0;
}

/* The boot check: stands in for "loads and passes its self-test". */
static int usable(void *ctx, const uint8_t *img, uint32_t len)
{
    (void)ctx;
    return len >= 4 && memcmp(img, "TMLM", 4) == 0 ? TM_OK : TM_E_LOAD_FAILED;
}

static size_t take(const uint8_t **data, size_t *size, void *out, size_t n)
{
    size_t k = *size < n ? *size : n;
    memcpy(out, *data, k);
    *data += k;
    *size -= k;
    return k;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static tm_store_t st;
    if (size < 2) return 0;
    uint8_t fix = data[0], fix_sha = data[1];
    data += 2;
    size -= 2;
    memset(mem, 0xFF, sizeof(mem));
    for (uint32_t slot = 0; slot < 2; slot++) take(&data, &size, mem + slot * SLOT, SLOT_BYTES_FROM_INPUT);
    for (uint32_t page = 0; page < 2; page++) {
        uint8_t *p = mem + 2u * SLOT + page * PAGE;
        tm_meta_t m;
        tm_xfer_rec_t r;
        memset(&m, 0xFF, sizeof(m));
        memset(&r, 0xFF, sizeof(r));
        take(&data, &size, &m, offsetof(tm_meta_t, crc));
        take(&data, &size, &r, offsetof(tm_xfer_rec_t, crc));
        for (uint32_t k = 0; k < 2; k++)
            if ((fix_sha & (1u << (2 * page + k))) && m.slot[k].size <= SLOT)
                tm_sha256(mem + k * SLOT, m.slot[k].size, m.slot[k].sha);
        if (fix & (1u << (4 * page))) m.magic = 0x54534D54u;
        if (fix & (2u << (4 * page))) m.crc = tm_crc32(0, &m, offsetof(tm_meta_t, crc));
        if (fix & (4u << (4 * page))) { r.magic = 0x58464D54u; r.seq = m.seq; }
        if (fix & (8u << (4 * page))) r.crc = tm_crc32(0, &r, offsetof(tm_xfer_rec_t, crc));
        memcpy(p, &m, sizeof(m));
        memcpy(p + TM_XFER_REC_OFFSET, &r, sizeof(r));
        take(&data, &size, p + TM_XFER_BITMAP_OFFSET, 64);
    }
    uint8_t fix_trust = 0xFF;
    take(&data, &size, &fix_trust, 1);
    for (uint32_t page = 0; page < 2; page++) {
        uint8_t *p = mem + 2u * SLOT + page * PAGE;
        static tm_trust_rec_t t;
        tm_meta_t m;
        memcpy(&m, p, sizeof(m));
        memset(&t, 0xFF, sizeof(t));
        if (!take(&data, &size, &t, offsetof(tm_trust_rec_t, crc))) continue; /* none: stays erased */
        if (fix_trust & (1u << (2 * page))) { t.magic = 0x52544D54u; t.seq = m.seq; }
        if (fix_trust & (2u << (2 * page))) t.crc = tm_crc32(0, &t, offsetof(tm_trust_rec_t, crc));
        memcpy(p + TM_TRUST_REC_OFFSET, &t, sizeof(t));
    }

    tm_flash_t fl = {FLASH_SIZE, PAGE, mem, fl_erase, fl_write, NULL};
    int reverted;
    if (tm_store_mount(&st, &fl, SLOT, kFactory, sizeof(kFactory), &reverted, usable, NULL) != TM_OK) return 0;
    uint32_t len;
    const uint8_t *img = tm_store_active(&st, &len);
    if (img && usable(NULL, img, len) != TM_OK) __builtin_trap(); /* mount's promise */
    if (st.xfer) {
        if (st.target > 1 || st.target == st.meta.active || st.received > st.n_chunks) __builtin_trap();
        int resumed;
        uint8_t sha[32];
        memcpy(sha, st.sha, 32);
        if (tm_store_begin(&st, 1, st.image_size, st.chunk_size, TM_MAX_CHUNK, sha, 2, 0, &resumed) == TM_OK) {
            for (uint32_t i = 0; i < st.n_chunks; i++) {
                uint32_t off = i * st.chunk_size;
                uint32_t l = st.image_size - off < st.chunk_size ? st.image_size - off : st.chunk_size;
                const uint8_t *chunk = mem + (size_t)st.target * SLOT + off; /* whatever is there */
                static uint8_t copy[TM_MAX_CHUNK];
                memcpy(copy, chunk, l);
                (void)tm_store_chunk(&st, 1, i, tm_crc32(0, copy, l), copy, l, 0);
            }
            const uint8_t *p;
            if (tm_store_verify(&st, 1, &p) == TM_OK) (void)tm_store_commit(&st, 1, 1, 0);
        }
    }
    if (st.trust_keys > TM_MAX_TRUST_KEYS || st.trust_revoked > TM_MAX_REVOCATIONS) __builtin_trap();
    static const uint8_t kKey[TM_SIG_PUBLIC_LEN] = {0x5A, 1}, kRevoked[TM_REVOCATION_ID_LEN] = {0xA5, 2};
    int key_rc = tm_store_trust_add(&st, kKey), revoke_rc = tm_store_revoke(&st, kRevoked);
    (void)tm_store_rollback(&st);
    (void)tm_store_confirm(&st);
    (void)tm_store_mount(&st, &fl, SLOT, kFactory, sizeof(kFactory), &reverted, usable, NULL);
    img = tm_store_active(&st, &len);
    if (img && usable(NULL, img, len) != TM_OK) __builtin_trap();
    if (st.trust_keys > TM_MAX_TRUST_KEYS || st.trust_revoked > TM_MAX_REVOCATIONS) __builtin_trap();
    if (revoke_rc == TM_OK && !tm_store_is_revoked(&st, kRevoked)) __builtin_trap(); /* a revocation is kept */
    int held = 0;
    for (uint8_t i = 0; i < st.trust_keys; i++)
        held |= memcmp(tm_store_trust_key(&st, i), kKey, TM_SIG_PUBLIC_LEN) == 0;
    if (key_rc == TM_OK && !held) __builtin_trap(); /* and so is a key */
    return 0;
}
