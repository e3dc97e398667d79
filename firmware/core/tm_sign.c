/* Signed model images: statement, block parsing, trust store (PROTOCOL.md 6.2). */
#include "tm_sign.h"

#include <string.h>

#include "crypto_sign.h" /* SUPERCOP ref, fetched at build time (firmware/deps) */
#include "tm_config.h"
#include "tm_sha256.h"

static const uint8_t kStatementTag[19] = "tinymlops-image-v1"; /* 18 chars + the NUL */
static const uint8_t kTrustAddTag[23] = "tinymlops-trust-add-v1"; /* 22 chars + the NUL */
static const uint8_t kRevokeTag[20] = "tinymlops-revoke-v1";        /* 19 chars + the NUL */
static const uint8_t kBlockMagic[4] = {'T', 'M', 'S', 'G'};
enum { BLOCK_FORMAT = 1, ALG_ED25519 = 1 };

void tm_trust_init(tm_trust_t *t, const uint8_t (*keys)[TM_SIG_PUBLIC_LEN], int n)
{
    memset(t, 0, sizeof *t);
    for (int i = 0; i < n && t->n < TM_MAX_TRUST_KEYS; i++) (void)tm_trust_add(t, keys[i]);
}

int tm_trust_has(const tm_trust_t *t, const uint8_t key[TM_SIG_PUBLIC_LEN])
{
    for (int i = 0; i < t->n; i++)
        if (memcmp(t->keys[i], key, TM_SIG_PUBLIC_LEN) == 0) return 1;
    return 0;
}

int tm_trust_add(tm_trust_t *t, const uint8_t key[TM_SIG_PUBLIC_LEN])
{
    if (tm_trust_has(t, key)) return TM_OK;
    if (t->n >= TM_MAX_TRUST_KEYS) return TM_E_TOO_LARGE;
    uint8_t digest[32];
    memcpy(t->keys[t->n], key, TM_SIG_PUBLIC_LEN);
    tm_sha256(key, TM_SIG_PUBLIC_LEN, digest);
    memcpy(t->ids[t->n], digest, TM_SIG_KEY_ID_LEN);
    t->n++;
    return TM_OK;
}

size_t tm_sign_trust_add_statement(const uint8_t key[TM_SIG_PUBLIC_LEN], uint8_t out[TM_SIG_MAX_STATEMENT])
{
    memcpy(out, kTrustAddTag, sizeof kTrustAddTag);
    memcpy(out + sizeof kTrustAddTag, key, TM_SIG_PUBLIC_LEN);
    return sizeof kTrustAddTag + TM_SIG_PUBLIC_LEN;
}

/* name_len || name || version u32 (little-endian): the part of a REVOKE statement after its tag */
static size_t revocation_body(const uint8_t *name, uint8_t name_len, uint32_t version, uint8_t *out)
{
    size_t n = 0;
    out[n++] = name_len;
    memcpy(out + n, name, name_len); n += name_len;
    for (int i = 0; i < 4; i++) out[n++] = (uint8_t)(version >> (8 * i));
    return n;
}

size_t tm_sign_revoke_statement(const uint8_t *name, uint8_t name_len, uint32_t version,
                                uint8_t out[TM_SIG_MAX_STATEMENT])
{
    memcpy(out, kRevokeTag, sizeof kRevokeTag);
    return sizeof kRevokeTag + revocation_body(name, name_len, version, out + sizeof kRevokeTag);
}

void tm_sign_revocation_id(const uint8_t *name, uint8_t name_len, uint32_t version,
                           uint8_t out[TM_REVOCATION_ID_LEN])
{
    uint8_t body[1 + 255 + 4], digest[32];
    tm_sha256(body, revocation_body(name, name_len, version, body), digest);
    memcpy(out, digest, TM_REVOCATION_ID_LEN);
}

size_t tm_sign_statement(const uint8_t sha256[32], const uint8_t *name, uint8_t name_len, uint32_t version,
                         uint16_t feature_spec, uint8_t out[TM_SIG_MAX_STATEMENT])
{
    size_t n = 0;
    memcpy(out, kStatementTag, sizeof kStatementTag); n += sizeof kStatementTag;
    memcpy(out + n, sha256, 32); n += 32;
    for (int i = 0; i < 4; i++) out[n++] = (uint8_t)(version >> (8 * i));
    out[n++] = (uint8_t)feature_spec;
    out[n++] = (uint8_t)(feature_spec >> 8);
    out[n++] = name_len;
    memcpy(out + n, name, name_len); n += name_len;
    return n;
}

int tm_sign_verify(const tm_trust_t *t, const uint8_t block[TM_SIG_BLOCK_SIZE], const uint8_t *statement,
                   size_t len)
{
    /* crypto_sign_open takes signature || message and needs as much scratch */
    static uint8_t sm[TM_SIG_LEN + TM_SIG_MAX_STATEMENT], scratch[TM_SIG_LEN + TM_SIG_MAX_STATEMENT];
    if (len > TM_SIG_MAX_STATEMENT) return TM_E_BAD_SIGNATURE;
    if (memcmp(block, kBlockMagic, 4) != 0 || block[4] != BLOCK_FORMAT || block[5] != ALG_ED25519)
        return TM_E_BAD_SIGNATURE;
    const uint8_t *key_id = block + 8, *signature = block + 8 + TM_SIG_KEY_ID_LEN;
    for (int i = 0; i < t->n; i++) {
        if (memcmp(t->ids[i], key_id, TM_SIG_KEY_ID_LEN) != 0) continue;
        unsigned long long out_len = 0;
        memcpy(sm, signature, TM_SIG_LEN);
        memcpy(sm + TM_SIG_LEN, statement, len);
        return crypto_sign_open(scratch, &out_len, sm, TM_SIG_LEN + len, t->keys[i]) == 0 ? TM_OK
                                                                                           : TM_E_BAD_SIGNATURE;
    }
    return TM_E_BAD_SIGNATURE; /* no trusted key has that id */
}
