/* SHA-256 (FIPS 180-4) of a whole buffer (under 4 GiB: HACL* takes a 32-bit length): received model
 * images, slots at boot, key ids. The hash is
 * not ours: it is HACL*'s formally verified portable SHA-2, fetched at build time by
 * firmware/deps/fetch_sha256.sh (see firmware/README.md); this header only names it for the core. */
#ifndef TM_SHA256_H
#define TM_SHA256_H
#include <stddef.h>
#include <stdint.h>

void tm_sha256(const void *data, size_t len, uint8_t out[32]);

#endif
