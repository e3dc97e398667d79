/* Signed images (PROTOCOL.md 6.2): the golden cases of tests/vectors/signatures.json give the same
 * statement bytes and the same verdicts here as in Python; a block's every field is checked. */
#include <string.h>

#include "signatures_gen.h"
#include "testutil.h"
#include "tm_config.h"
#include "tm_image.h"
#include "tm_sha256.h"
#include "tm_sign.h"


static int verdict(const tm_trust_t *t, const sig_case_t *c)
{
    tm_image_t img;
    uint8_t sha[32], statement[TM_SIG_MAX_STATEMENT];
    if (c->block_len != TM_SIG_BLOCK_SIZE) return TM_E_BAD_SIGNATURE; /* truncated: not a block */
    if (tm_image_parse(c->image, c->image_len, &img) != TM_OK) return TM_E_BAD_IMAGE;
    tm_sha256(c->image, c->image_len, sha);
    size_t n = tm_sign_statement(sha, img.name.p, img.name.len, img.version, 1, statement);
    CHECK_EQ(n, c->statement_len);
    CHECK(memcmp(statement, c->statement, n) == 0);
    return tm_sign_verify(t, c->block, statement, n);
}

int main(void)
{
    tm_trust_t trust, empty;
    tm_trust_init(&trust, sig_keys, (int)sig_n_keys);
    tm_trust_init(&empty, sig_keys, 0);
    CHECK_EQ(trust.n, sig_n_keys);
    for (unsigned i = 0; i < sig_n_cases; i++) {
        const sig_case_t *c = &sig_cases[i];
        int rc = verdict(&trust, c);
        if ((rc == TM_OK) != c->valid) {
            g_failures++;
            fprintf(stderr, "case '%s': got %d, expected %s\n", c->what, rc, c->valid ? "valid" : "invalid");
        }
        if (c->valid) {
            CHECK_EQ(verdict(&empty, c), TM_E_BAD_SIGNATURE); /* no key trusted: nothing verifies */
            uint8_t block[TM_SIG_BLOCK_SIZE];
            for (int field = 0; field < 6; field++) { /* magic, format, algorithm: each checked */
                memcpy(block, c->block, sizeof block);
                block[field] ^= 0x01;
                tm_image_t img;
                uint8_t sha[32], statement[TM_SIG_MAX_STATEMENT];
                tm_image_parse(c->image, c->image_len, &img);
                tm_sha256(c->image, c->image_len, sha);
                size_t n = tm_sign_statement(sha, img.name.p, img.name.len, img.version, 1, statement);
                CHECK_EQ(tm_sign_verify(&trust, block, statement, n), TM_E_BAD_SIGNATURE);
            }
        }
    }
    /* TRUST_ADD / REVOKE statements (PROTOCOL.md 6.2): the same bytes and verdicts as in Python */
    for (unsigned i = 0; i < admin_n_cases; i++) {
        const admin_case_t *c = &admin_cases[i];
        uint8_t statement[TM_SIG_MAX_STATEMENT];
        size_t n = c->revoke ? tm_sign_revoke_statement((const uint8_t *)c->name, (uint8_t)strlen(c->name), c->version,
                                                        statement)
                             : tm_sign_trust_add_statement(c->public_key, statement);
        CHECK_EQ(n, c->statement_len);
        CHECK(memcmp(statement, c->statement, n) == 0);
        if ((tm_sign_verify(&trust, c->auth, statement, n) == TM_OK) != c->valid) {
            g_failures++;
            fprintf(stderr, "admin case '%s': wrong verdict\n", c->what);
        }
    }
    /* the trust store: a key once, bounded */
    tm_trust_t t;
    tm_trust_init(&t, sig_keys, (int)sig_n_keys);
    CHECK_EQ(tm_trust_add(&t, sig_keys[0]), TM_OK);
    CHECK_EQ(t.n, sig_n_keys);
    uint8_t key[TM_SIG_PUBLIC_LEN] = {0};
    for (int i = t.n; i < TM_MAX_TRUST_KEYS; i++) {
        key[0] = (uint8_t)i;
        CHECK_EQ(tm_trust_add(&t, key), TM_OK);
    }
    key[0] = 0xEE;
    CHECK_EQ(tm_trust_add(&t, key), TM_E_TOO_LARGE);
    CHECK_EQ(t.n, TM_MAX_TRUST_KEYS);
    return TEST_DONE();
}
