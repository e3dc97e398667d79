/* STM32F4 internal flash as the core's tm_flash_t (tm_store.h): sector erase and word programming
 * through the flash interface's registers (RM0390 3.5-3.6), behind a logical page map because the
 * F4's sectors are not uniform (F446: 4x16 KB, 1x64 KB, 3x128 KB) while the store's pages are.
 * The registers and the flash array are reached only through f4_flash_io.h, so the same driver
 * runs on the chip (f4_flash_mmio.c) and on the host against a register model (tests). */
#ifndef F4_FLASH_H
#define F4_FLASH_H
#include <stdint.h>
#include "tm_store.h"

/* Flash interface registers, byte offsets from FLASH_R_BASE (0x40023C00). */
#define F4_FLASH_ACR 0x00u
#define F4_FLASH_KEYR 0x04u
#define F4_FLASH_SR 0x0Cu
#define F4_FLASH_CR 0x10u
/* FLASH_KEYR unlock sequence. */
#define F4_FLASH_KEY1 0x45670123u
#define F4_FLASH_KEY2 0xCDEF89ABu
/* FLASH_SR bits: end of operation, operation/write-protection/alignment/parallelism/sequence errors, busy. */
#define F4_SR_EOP (1u << 0)
#define F4_SR_OPERR (1u << 1)
#define F4_SR_WRPERR (1u << 4)
#define F4_SR_PGAERR (1u << 5)
#define F4_SR_PGPERR (1u << 6)
#define F4_SR_PGSERR (1u << 7)
#define F4_SR_ERRORS (F4_SR_OPERR | F4_SR_WRPERR | F4_SR_PGAERR | F4_SR_PGPERR | F4_SR_PGSERR)
#define F4_SR_BSY (1u << 16)
/* FLASH_CR bits: program, sector erase, sector number, program size, start, lock. */
#define F4_CR_PG (1u << 0)
#define F4_CR_SER (1u << 1)
#define F4_CR_SNB_SHIFT 3u
#define F4_CR_SNB_MASK (0xFu << F4_CR_SNB_SHIFT)
#define F4_CR_PSIZE_X8 (0u << 8)
#define F4_CR_PSIZE_X32 (2u << 8)
#define F4_CR_PSIZE_MASK (3u << 8)
#define F4_CR_STRT (1u << 16)
#define F4_CR_LOCK (1u << 31)
/* FLASH_ACR: data cache enable and reset (stale lines after an erase, RM0390 3.5.2). */
#define F4_ACR_DCEN (1u << 10)
#define F4_ACR_DCRST (1u << 12)

/* Longest sector erase: 128 KB at x32 takes 1-2 s typical, 4 s at most (F446 datasheet, t_ERASE128KB). */
#define F4_FLASH_ERASE_TIMEOUT_MS 4000u
/* Longest word program is 16 us (datasheet t_prog); a millisecond tick needs at least 2 to be sure. */
#define F4_FLASH_PROGRAM_TIMEOUT_MS 2u
#define F4_FLASH_MAX_SECTORS 12

enum { F4_FLASH_OK = 0, F4_FLASH_E_RANGE = -1, F4_FLASH_E_TIMEOUT = -2, F4_FLASH_E_HW = -3,
       F4_FLASH_E_PARTIAL = -4 };

typedef struct {
    uint32_t flash_base;   /* bus address of sector 0: 0x08000000 */
    int n_sectors;
    uint32_t sector_size[F4_FLASH_MAX_SECTORS];
    uint32_t store_addr;   /* bus address of the store's logical address 0 (a sector start) */
    uint32_t store_size;
    uint32_t page_size;    /* the store's logical page */
    uint32_t (*now_ms)(void);
    uint32_t last_sr;      /* FLASH_SR of the last failed operation, for diagnosis */
} f4_flash_t;

/* The STM32F446's sector map (RM0390 table 4): 4x16 KB, 1x64 KB, 3x128 KB from 0x08000000. */
void f4_flash_f446_map(f4_flash_t *f);
/* The sector holding a bus address, or -1; *start gets its first address. */
int f4_flash_sector_of(const f4_flash_t *f, uint32_t addr, uint32_t *start);
/* Erase one logical page. Its sector is erased when the page starts it; a page inside a sector
 * that an earlier page's erase already blanked needs nothing, and one that is not blank fails
 * (F4_FLASH_E_PARTIAL): erasing its sector would destroy neighbours the store did not ask for. */
int f4_flash_erase(void *ctx, uint32_t addr);
/* Program len bytes (clears bits only): whole aligned words at PSIZE x32, ragged ends bytewise. */
int f4_flash_write(void *ctx, uint32_t addr, const void *data, uint32_t len);
/* The core's view: base = store_addr, memory-mapped reads. */
tm_flash_t f4_flash_hal(f4_flash_t *f);

#endif
