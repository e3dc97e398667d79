/* NOR flash emulated in a file (POSIX port): the model slots and the journal live in one file,
 * memory-mapped (MAP_SHARED) so that images are parsed in place as on the MCU. Erase sets a whole
 * page to 0xFF, a write can only clear bits (the AND of old and new data), as on the real part.
 * Every operation is in the file's page cache when it returns, so what a killed process leaves is
 * what a power cut at that moment leaves; `durable` also msyncs it to the disk (surviving a crash of
 * the host itself, at ~10 ms an operation on a disk). The power-cut injector tears the N-th
 * operation (half of it done) and exits. */
#ifndef TM_FILE_FLASH_H
#define TM_FILE_FLASH_H
#include <stdint.h>
#include "tm_store.h"

/* Exit status of a process the power-cut injector stopped (sysexits' EX_TEMPFAIL): a test tells a
 * staged cut from a crash by it. */
#define TM_FF_CUT_EXIT 75

typedef struct {
    int fd;
    uint8_t *mem;
    uint32_t size, page_size;
    uint32_t ops;    /* erase and write operations since open */
    uint32_t cut_at; /* 0: never; else the operation number that loses power half-way */
    int durable;     /* msync every operation to the disk */
} tm_file_flash_t;

/* Open (creating an erased one when missing) a flash file of exactly `size` bytes. An existing file
 * of another size is refused (a device built with other slots must not misread it): returns -1 with
 * errno set and a message in `err`. */
int tm_ff_open(tm_file_flash_t *f, const char *path, uint32_t size, uint32_t page_size, char *err, size_t err_cap);
/* The core's view of it (tm_store's tm_flash_t). */
tm_flash_t tm_ff_flash(tm_file_flash_t *f);
void tm_ff_close(tm_file_flash_t *f);

#endif
