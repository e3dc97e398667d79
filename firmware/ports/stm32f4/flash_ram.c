/* flash_ram.h: the store in a NOLOAD section the start-up code never clears, so it survives a
 * REBOOT (SYSRESETREQ) as flash would; QEMU's RAM starts zeroed, which the store reads as empty. */
#include "flash_ram.h"
#include <string.h>
#include "layout.h"

static uint8_t mem[QEMU_STORE_SIZE] __attribute__((section(".model_ram"), aligned(16)));

static int ram_erase(void *ctx, uint32_t addr)
{
    (void)ctx;
    if (addr % QEMU_PAGE_SIZE || addr >= QEMU_STORE_SIZE) return -1;
    memset(mem + addr, 0xFF, QEMU_PAGE_SIZE);
    return 0;
}

static int ram_write(void *ctx, uint32_t addr, const void *data, uint32_t len)
{
    (void)ctx;
    if (addr > QEMU_STORE_SIZE || len > QEMU_STORE_SIZE - addr) return -1;
    const uint8_t *p = (const uint8_t *)data;
    for (uint32_t i = 0; i < len; i++) mem[addr + i] &= p[i];
    return 0;
}

tm_flash_t flash_ram_hal(void)
{
    tm_flash_t h = {QEMU_STORE_SIZE, QEMU_PAGE_SIZE, mem, ram_erase, ram_write, 0};
    return h;
}
