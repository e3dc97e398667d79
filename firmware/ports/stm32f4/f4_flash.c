/* STM32F4 flash driver (f4_flash.h): the reference manual's erase and program sequences
 * (RM0390 3.6: wait BSY, unlock KEYR, SER/SNB or PG with PSIZE, STRT or the write, wait BSY,
 * check the error flags, lock again). Every call leaves the interface locked. */
#include "f4_flash.h"
#include <string.h>
#include "f4_flash_io.h"

void f4_flash_f446_map(f4_flash_t *f)
{
    static const uint32_t kb[] = {16, 16, 16, 16, 64, 128, 128, 128};
    f->flash_base = 0x08000000u;
    f->n_sectors = (int)(sizeof(kb) / sizeof(kb[0]));
    for (int i = 0; i < f->n_sectors; i++) f->sector_size[i] = kb[i] * 1024u;
}

int f4_flash_sector_of(const f4_flash_t *f, uint32_t addr, uint32_t *start)
{
    uint32_t a = f->flash_base;
    for (int i = 0; i < f->n_sectors; i++) {
        if (addr >= a && addr - a < f->sector_size[i]) {
            *start = a;
            return i;
        }
        a += f->sector_size[i];
    }
    return -1;
}

static int wait_idle(f4_flash_t *f, uint32_t timeout_ms)
{
    uint32_t t0 = f->now_ms();
    while (f4_io_reg_read(F4_FLASH_SR) & F4_SR_BSY)
        if (f->now_ms() - t0 > timeout_ms) return F4_FLASH_E_TIMEOUT;
    return F4_FLASH_OK;
}

static int unlock(f4_flash_t *f)
{
    int rc = wait_idle(f, F4_FLASH_ERASE_TIMEOUT_MS); /* an operation still running: never touch CR */
    if (rc) return rc;
    f4_io_reg_write(F4_FLASH_SR, F4_SR_EOP | F4_SR_ERRORS); /* stale flags (write 1 to clear) */
    if (f4_io_reg_read(F4_FLASH_CR) & F4_CR_LOCK) {
        f4_io_reg_write(F4_FLASH_KEYR, F4_FLASH_KEY1);
        f4_io_reg_write(F4_FLASH_KEYR, F4_FLASH_KEY2);
    }
    return (f4_io_reg_read(F4_FLASH_CR) & F4_CR_LOCK) ? F4_FLASH_E_HW : F4_FLASH_OK;
}

/* Wait for the end of the operation, clear the mode bits, lock; F4_FLASH_E_HW on an error flag.
 * An operation that outlives its timeout is left alone: CR must not change while BSY is set (the
 * next call waits for BSY again before it touches anything). */
static int finish(f4_flash_t *f, uint32_t timeout_ms)
{
    int rc = wait_idle(f, timeout_ms);
    uint32_t sr = f4_io_reg_read(F4_FLASH_SR);
    if (rc) {
        f->last_sr = sr;
        return rc;
    }
    if (sr & F4_SR_ERRORS) {
        rc = F4_FLASH_E_HW;
        f->last_sr = sr;
    }
    f4_io_reg_write(F4_FLASH_SR, F4_SR_EOP | F4_SR_ERRORS);
    f4_io_reg_write(F4_FLASH_CR, F4_CR_LOCK); /* PG, SER, SNB cleared and locked in one write */
    return rc;
}

static int blank(uint32_t addr, uint32_t len)
{
    const uint8_t *p = f4_io_mem(addr);
    for (uint32_t i = 0; i < len; i++)
        if (p[i] != 0xFFu) return 0;
    return 1;
}

static int erase_sector(f4_flash_t *f, int sector)
{
    int rc = unlock(f);
    if (rc) return rc;
    uint32_t cr = F4_CR_SER | F4_CR_PSIZE_X32 | ((uint32_t)sector << F4_CR_SNB_SHIFT);
    f4_io_reg_write(F4_FLASH_CR, cr);
    f4_io_reg_write(F4_FLASH_CR, cr | F4_CR_STRT);
    rc = finish(f, F4_FLASH_ERASE_TIMEOUT_MS);
    if (rc == F4_FLASH_E_TIMEOUT) return rc;
    /* the data cache may still hold the erased sector's old lines: reset it */
    uint32_t acr = f4_io_reg_read(F4_FLASH_ACR);
    if (acr & F4_ACR_DCEN) {
        f4_io_reg_write(F4_FLASH_ACR, acr & ~F4_ACR_DCEN);
        f4_io_reg_write(F4_FLASH_ACR, (acr & ~F4_ACR_DCEN) | F4_ACR_DCRST);
        f4_io_reg_write(F4_FLASH_ACR, acr);
    }
    return rc;
}

int f4_flash_erase(void *ctx, uint32_t addr)
{
    f4_flash_t *f = (f4_flash_t *)ctx;
    if (addr % f->page_size || addr >= f->store_size) return F4_FLASH_E_RANGE;
    uint32_t bus = f->store_addr + addr, start;
    int sector = f4_flash_sector_of(f, bus, &start);
    if (sector < 0) return F4_FLASH_E_RANGE;
    if (bus == start) return erase_sector(f, sector);
    return blank(bus, f->page_size) ? F4_FLASH_OK : F4_FLASH_E_PARTIAL;
}

static int program(f4_flash_t *f, uint32_t bus, const uint8_t *p, uint32_t psize)
{
    f4_io_reg_write(F4_FLASH_CR, F4_CR_PG | psize);
    if (psize == F4_CR_PSIZE_X32) {
        uint32_t w;
        memcpy(&w, p, 4);
        f4_io_mem_write32(bus, w);
    } else {
        f4_io_mem_write8(bus, *p);
    }
    int rc = wait_idle(f, F4_FLASH_PROGRAM_TIMEOUT_MS);
    uint32_t sr = f4_io_reg_read(F4_FLASH_SR);
    if (!rc && (sr & F4_SR_ERRORS)) rc = F4_FLASH_E_HW;
    if (rc) f->last_sr = sr;
    return rc;
}

int f4_flash_write(void *ctx, uint32_t addr, const void *data, uint32_t len)
{
    f4_flash_t *f = (f4_flash_t *)ctx;
    if (addr > f->store_size || len > f->store_size - addr) return F4_FLASH_E_RANGE;
    const uint8_t *p = (const uint8_t *)data;
    uint32_t bus = f->store_addr + addr;
    int rc = unlock(f);
    if (rc) return rc;
    for (uint32_t i = 0; i < len && !rc;) {
        uint32_t a = bus + i;
        if (a % 4u == 0 && len - i >= 4u) {
            uint32_t have, want;
            memcpy(&have, f4_io_mem(a), 4);
            memcpy(&want, p + i, 4);
            if ((have & want) != have) rc = program(f, a, p + i, F4_CR_PSIZE_X32);
            i += 4;
        } else { /* a ragged head or tail: bytewise (PSIZE x8), as a word write there is misaligned */
            if ((*f4_io_mem(a) & p[i]) != *f4_io_mem(a)) rc = program(f, a, p + i, F4_CR_PSIZE_X8);
            i++;
        }
    }
    if (rc == F4_FLASH_E_TIMEOUT) return rc; /* still busy: leave CR alone (finish) */
    int end = finish(f, F4_FLASH_PROGRAM_TIMEOUT_MS);
    return rc ? rc : end;
}

tm_flash_t f4_flash_hal(f4_flash_t *f)
{
    tm_flash_t h = {f->store_size, f->page_size, f4_io_mem(f->store_addr), f4_flash_erase, f4_flash_write, f};
    return h;
}
