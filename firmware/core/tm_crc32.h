/* CRC-32 (IEEE 802.3, zlib's crc32): frame check of PROTOCOL.md 2.1 and chunk CRCs. */
#ifndef TM_CRC32_H
#define TM_CRC32_H
#include <stddef.h>
#include <stdint.h>

/* Continue a CRC: start with crc = 0, feed pieces in order. */
uint32_t tm_crc32(uint32_t crc, const void *data, size_t len);

#endif
