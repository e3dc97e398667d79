/* The core's SHA-256 (HACL*, fetched at build time) is bit-exact with Python's hashlib: every length
 * around the block and padding boundaries, large inputs, and the FIPS 180-4 examples
 * (sha256_gen.h, generated from hashlib by gen_sha256_table.py). */
#include <string.h>

#include "sha256_gen.h"
#include "testutil.h"
#include "tm_sha256.h"

static unsigned char buf[SHA_MAX_LEN];

int main(void)
{
    for (unsigned c = 0; c < sha_n_cases; c++) {
        unsigned n = sha_cases[c].len;
        for (unsigned i = 0; i < n; i++) buf[i] = (unsigned char)((i * 7u + n) & 0xFFu);
        uint8_t d[32];
        tm_sha256(buf, n, d);
        if (memcmp(d, sha_cases[c].digest, 32) != 0) {
            g_failures++;
            fprintf(stderr, "SHA-256 of %u pattern bytes differs from hashlib\n", n);
        }
    }
    for (unsigned c = 0; c < sha_n_texts; c++) {
        uint8_t d[32];
        tm_sha256(sha_texts[c].text, strlen(sha_texts[c].text), d);
        CHECK(memcmp(d, sha_texts[c].digest, 32) == 0);
    }
    printf("%u inputs (0 B .. %u B) bit-exact with hashlib\n", sha_n_cases + sha_n_texts, SHA_MAX_LEN);
    return TEST_DONE();
}
