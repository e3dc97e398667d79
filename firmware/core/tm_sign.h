/* Signed model images (PROTOCOL.md 6.2): the statement a signature covers, the 80-byte signature
 * block, and a trust store of up to TM_MAX_TRUST_KEYS Ed25519 public keys. The Ed25519 arithmetic is
 * not ours: it is the SUPERCOP reference implementation, fetched at build time by
 * firmware/deps/fetch_ed25519.sh (see firmware/README.md). */
#ifndef TM_SIGN_H
#define TM_SIGN_H
#include <stddef.h>
#include <stdint.h>

#define TM_MAX_TRUST_KEYS 4
/* Revoked (name, version) pairs a device keeps (MAX_REVOCATIONS); the oldest goes first. */
#define TM_MAX_REVOCATIONS 32
/* A revocation is kept as the first bytes of SHA-256(name_len || name || version u32): fixed size. */
#define TM_REVOCATION_ID_LEN 16
#define TM_SIG_BLOCK_SIZE 80
#define TM_SIG_KEY_ID_LEN 8
#define TM_SIG_LEN 64
#define TM_SIG_PUBLIC_LEN 32
/* tag (19) + sha256 (32) + version u32 + feature spec u16 + name length u8 + name (<= 255) */
#define TM_SIG_MAX_STATEMENT (19 + 32 + 4 + 2 + 1 + 255)

typedef struct {
    uint8_t n;
    uint8_t keys[TM_MAX_TRUST_KEYS][TM_SIG_PUBLIC_LEN];
    uint8_t ids[TM_MAX_TRUST_KEYS][TM_SIG_KEY_ID_LEN];
} tm_trust_t;

/* Fill `t` from `n` raw public keys (build-time keys); keys beyond TM_MAX_TRUST_KEYS are ignored. */
void tm_trust_init(tm_trust_t *t, const uint8_t (*keys)[TM_SIG_PUBLIC_LEN], int n);
/* Add one key: TM_OK (also when it is already there) or TM_E_TOO_LARGE when the store is full. */
int tm_trust_add(tm_trust_t *t, const uint8_t key[TM_SIG_PUBLIC_LEN]);
/* Whether `key` is in the store. */
int tm_trust_has(const tm_trust_t *t, const uint8_t key[TM_SIG_PUBLIC_LEN]);
/* The statement a TRUST_ADD's auth signs: "tinymlops-trust-add-v1\0" || key. Returns its length. */
size_t tm_sign_trust_add_statement(const uint8_t key[TM_SIG_PUBLIC_LEN], uint8_t out[TM_SIG_MAX_STATEMENT]);
/* The statement a REVOKE's auth signs: "tinymlops-revoke-v1\0" || name_len u8 || name || version u32. */
size_t tm_sign_revoke_statement(const uint8_t *name, uint8_t name_len, uint32_t version,
                                uint8_t out[TM_SIG_MAX_STATEMENT]);
/* What the store keeps of a revoked (name, version): SHA-256(name_len || name || version)[:16]. */
void tm_sign_revocation_id(const uint8_t *name, uint8_t name_len, uint32_t version,
                           uint8_t out[TM_REVOCATION_ID_LEN]);
/* The statement bytes for an image; returns its length, 0 when the name is too long. */
size_t tm_sign_statement(const uint8_t sha256[32], const uint8_t *name, uint8_t name_len, uint32_t version,
                         uint16_t feature_spec, uint8_t out[TM_SIG_MAX_STATEMENT]);
/* TM_OK when `block` is a well-formed Ed25519 block by a trusted key whose signature verifies over
 * `statement`; TM_E_BAD_SIGNATURE otherwise. */
int tm_sign_verify(const tm_trust_t *t, const uint8_t block[TM_SIG_BLOCK_SIZE], const uint8_t *statement,
                   size_t len);

#endif
