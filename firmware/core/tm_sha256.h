/* SHA-256 (FIPS 180-4), streaming, for verifying received model images. */
#ifndef TM_SHA256_H
#define TM_SHA256_H
#include <stddef.h>
#include <stdint.h>

typedef struct {
    uint32_t h[8];
    uint64_t total;
    uint8_t block[64];
    uint32_t used;
} tm_sha256_t;

void tm_sha256_init(tm_sha256_t *s);
void tm_sha256_update(tm_sha256_t *s, const void *data, size_t len);
void tm_sha256_final(tm_sha256_t *s, uint8_t out[32]);
void tm_sha256(const void *data, size_t len, uint8_t out[32]);

#endif
