/* The register model of f4flash_sim.h, implementing f4_flash_io.h for the host. */
#include "f4flash_sim.h"
#include <string.h>
#include "f4_flash.h"
#include "f4_flash_io.h"

f4sim_t g_f4sim;

static const uint32_t sector_kb[8] = {16, 16, 16, 16, 64, 128, 128, 128};

void f4sim_reset(int busy_reads)
{
    memset(&g_f4sim, 0, sizeof(g_f4sim));
    memset(g_f4sim.mem, 0xFF, sizeof(g_f4sim.mem));
    g_f4sim.cr = F4_CR_LOCK;
    g_f4sim.busy_reads = busy_reads;
}

/* The fake clock: a millisecond per SIM_POLLS_PER_MS reads, about what a BSY poll loop does. */
#define SIM_POLLS_PER_MS 100u

uint32_t f4sim_now_ms(void)
{
    g_f4sim.clock_polls++;
    g_f4sim.clock_ms = g_f4sim.clock_polls / SIM_POLLS_PER_MS;
    return g_f4sim.clock_ms;
}

static int busy(void) { return (g_f4sim.sr & F4_SR_BSY) != 0; }

static void start_busy(void)
{
    g_f4sim.sr |= F4_SR_BSY | g_f4sim.fail_with;
    g_f4sim.busy_left = g_f4sim.busy_reads;
    if (g_f4sim.busy_left == 0 && !g_f4sim.stuck_busy) g_f4sim.sr = (g_f4sim.sr & ~F4_SR_BSY) | F4_SR_EOP;
}

uint32_t f4_io_reg_read(uint32_t off)
{
    switch (off) {
    case F4_FLASH_ACR: return g_f4sim.acr;
    case F4_FLASH_CR: return g_f4sim.cr;
    case F4_FLASH_SR:
        if (busy() && !g_f4sim.stuck_busy && --g_f4sim.busy_left <= 0)
            g_f4sim.sr = (g_f4sim.sr & ~F4_SR_BSY) | F4_SR_EOP;
        return g_f4sim.sr;
    default: return 0;
    }
}

static void erase(int snb)
{
    uint32_t a = 0;
    for (int i = 0; i < snb; i++) a += sector_kb[i] * 1024u;
    memset(g_f4sim.mem + a, 0xFF, sector_kb[snb] * 1024u);
    g_f4sim.erases[snb]++;
}

void f4_io_reg_write(uint32_t off, uint32_t value)
{
    switch (off) {
    case F4_FLASH_ACR: g_f4sim.acr = value & ~F4_ACR_DCRST; break;
    case F4_FLASH_SR: g_f4sim.sr &= ~(value & (F4_SR_EOP | F4_SR_ERRORS)); break; /* write 1 to clear */
    case F4_FLASH_KEYR:
        if (g_f4sim.key_state == 0 && value == F4_FLASH_KEY1) g_f4sim.key_state = 1;
        else if (g_f4sim.key_state == 1 && value == F4_FLASH_KEY2) { g_f4sim.key_state = 0; g_f4sim.cr &= ~F4_CR_LOCK; }
        else g_f4sim.key_state = -1; /* RM0390: a wrong sequence locks FLASH_CR until the next reset */
        break;
    case F4_FLASH_CR:
        if (busy()) { g_f4sim.violations++; g_f4sim.sr |= F4_SR_PGSERR; break; }
        if (g_f4sim.cr & F4_CR_LOCK) break; /* locked: ignored */
        g_f4sim.cr = value & ~F4_CR_STRT;
        if (value & F4_CR_STRT) {
            int snb = (int)((value & F4_CR_SNB_MASK) >> F4_CR_SNB_SHIFT);
            if (!(value & F4_CR_SER) || snb > 7) { g_f4sim.sr |= F4_SR_PGSERR; break; }
            erase(snb);
            start_busy();
        }
        break;
    default: break;
    }
}

const uint8_t *f4_io_mem(uint32_t addr) { return g_f4sim.mem + (addr - SIM_FLASH_BASE); }

/* a bus write into the array: fails with PGSERR unless unlocked, PG set and not busy */
static int may_program(uint32_t addr, uint32_t size, uint32_t psize)
{
    if (busy()) { g_f4sim.violations++; g_f4sim.sr |= F4_SR_PGSERR; return 0; }
    if ((g_f4sim.cr & F4_CR_LOCK) || !(g_f4sim.cr & F4_CR_PG)) { g_f4sim.sr |= F4_SR_PGSERR; return 0; }
    if (addr % size) { g_f4sim.sr |= F4_SR_PGAERR; return 0; }
    if ((g_f4sim.cr & F4_CR_PSIZE_MASK) != psize) { g_f4sim.sr |= F4_SR_PGPERR; return 0; }
    if (addr < SIM_FLASH_BASE || addr - SIM_FLASH_BASE + size > SIM_FLASH_SIZE) { g_f4sim.sr |= F4_SR_PGSERR; return 0; }
    return 1;
}

void f4_io_mem_write32(uint32_t addr, uint32_t value)
{
    if (!may_program(addr, 4, F4_CR_PSIZE_X32)) return;
    uint8_t b[4];
    memcpy(b, &value, 4);
    for (int i = 0; i < 4; i++) g_f4sim.mem[addr - SIM_FLASH_BASE + (uint32_t)i] &= b[i];
    g_f4sim.programs_x32++;
    start_busy();
}

void f4_io_mem_write8(uint32_t addr, uint8_t value)
{
    if (!may_program(addr, 1, F4_CR_PSIZE_X8)) return;
    g_f4sim.mem[addr - SIM_FLASH_BASE] &= value;
    g_f4sim.programs_x8++;
    start_busy();
}
