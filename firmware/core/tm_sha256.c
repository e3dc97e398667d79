/* The core's SHA-256: a call into HACL*'s Hacl_Hash_SHA2_hash_256 (fetched at build time,
 * firmware/deps/fetch_sha256.sh); no hashing is done here. */
#include "tm_sha256.h"

#include "Hacl_Hash_SHA2.h"

void tm_sha256(const void *data, size_t len, uint8_t out[32])
{
    /* HACL* takes a non-const pointer but only reads the input; every caller's length is a slot's
     * or a message's, far below its 32-bit limit */
    Hacl_Hash_SHA2_hash_256(out, (uint8_t *)(uintptr_t)data, (uint32_t)len);
}
