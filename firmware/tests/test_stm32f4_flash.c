/* The STM32F4 port's flash driver (firmware/ports/stm32f4/f4_flash.c) against the register model
 * of f4flash_sim.h: the erase and program sequences, locking, BSY handling, the logical page map
 * over non-uniform sectors, and the core's model store mounted on it with the port's F446 layout. */
#include <string.h>
#include "f4_flash.h"
#include "f4_flash_io.h"
#include "f4flash_sim.h"
#include "testutil.h"
#include "tm_crc32.h"
#include "tm_sha256.h"
#include "tm_store.h"

/* The port's F446 layout (firmware/ports/stm32f4/layout.h): the store in sectors 5-7. */
#include "layout.h"

static f4_flash_t drv;

static void setup(int busy_reads)
{
    f4sim_reset(busy_reads);
    memset(&drv, 0, sizeof(drv));
    f4_flash_f446_map(&drv);
    drv.store_addr = F446_STORE_ADDR;
    drv.store_size = F446_STORE_SIZE;
    drv.page_size = F446_PAGE_SIZE;
    drv.now_ms = f4sim_now_ms;
}

static uint8_t *at(uint32_t bus) { return g_f4sim.mem + (bus - SIM_FLASH_BASE); }

static int all(uint32_t bus, uint32_t len, uint8_t v)
{
    for (uint32_t i = 0; i < len; i++)
        if (at(bus)[i] != v) return 0;
    return 1;
}

static void test_sector_map(void)
{
    setup(0);
    uint32_t start;
    CHECK_EQ(f4_flash_sector_of(&drv, 0x08000000u, &start), 0);
    CHECK_EQ(f4_flash_sector_of(&drv, 0x0800FFFFu, &start), 3);
    CHECK_EQ(start, 0x0800C000u);
    CHECK_EQ(f4_flash_sector_of(&drv, 0x08010000u, &start), 4);
    CHECK_EQ(f4_flash_sector_of(&drv, 0x0801FFFFu, &start), 4);
    CHECK_EQ(f4_flash_sector_of(&drv, 0x08020000u, &start), 5);
    CHECK_EQ(f4_flash_sector_of(&drv, 0x0807FFFFu, &start), 7);
    CHECK_EQ(start, 0x08060000u);
    CHECK_EQ(f4_flash_sector_of(&drv, 0x08080000u, &start), -1);
    CHECK_EQ(f4_flash_sector_of(&drv, 0x07FFFFFFu, &start), -1);
}

static void test_erase_sets_the_whole_sector_and_only_it(void)
{
    setup(5);
    memset(at(0x08000000u), 0x00, SIM_FLASH_SIZE);
    CHECK_EQ(f4_flash_erase(&drv, 0), F4_FLASH_OK); /* logical 0 = sector 5 */
    CHECK(all(0x08020000u, 128u * 1024u, 0xFF));
    CHECK(all(0x08000000u, 128u * 1024u, 0x00));      /* sectors 0-4 (the firmware) untouched */
    CHECK(all(0x08040000u, 256u * 1024u, 0x00));      /* sectors 6-7 untouched */
    CHECK_EQ(g_f4sim.erases[5], 1);
    CHECK(g_f4sim.cr & F4_CR_LOCK);                   /* locked again */
    CHECK_EQ(g_f4sim.cr & (F4_CR_SER | F4_CR_PG), 0);
    CHECK_EQ(g_f4sim.violations, 0);
}

static void test_page_inside_a_sector(void)
{
    setup(3);
    /* the second logical page of sector 5: blank after the sector's erase, so nothing to do */
    CHECK_EQ(f4_flash_erase(&drv, F446_PAGE_SIZE), F4_FLASH_OK);
    CHECK_EQ(g_f4sim.erases[5], 0);
    /* not blank: erasing its sector would wipe the first page too, so the driver refuses */
    at(0x08020000u + F446_PAGE_SIZE + 100)[0] = 0x12;
    at(0x08020000u)[0] = 0x34;
    CHECK_EQ(f4_flash_erase(&drv, F446_PAGE_SIZE), F4_FLASH_E_PARTIAL);
    CHECK_EQ(at(0x08020000u)[0], 0x34);
    CHECK_EQ(g_f4sim.erases[5], 0);
    /* outside the store, or misaligned */
    CHECK_EQ(f4_flash_erase(&drv, F446_STORE_SIZE), F4_FLASH_E_RANGE);
    CHECK_EQ(f4_flash_erase(&drv, 4096), F4_FLASH_E_RANGE);
}

static void test_programming_clears_bits_only(void)
{
    setup(2);
    uint8_t a[8] = {0x0F, 0x0F, 0x0F, 0x0F, 0xFF, 0xFF, 0xFF, 0xFF};
    uint8_t b[8] = {0xF0, 0xF0, 0xF0, 0xF0, 0x55, 0xAA, 0xFF, 0x00};
    CHECK_EQ(f4_flash_write(&drv, 0, a, 8), F4_FLASH_OK);
    CHECK_EQ(f4_flash_write(&drv, 0, b, 8), F4_FLASH_OK);
    const uint8_t want[8] = {0x00, 0x00, 0x00, 0x00, 0x55, 0xAA, 0xFF, 0x00};
    CHECK(memcmp(at(0x08020000u), want, 8) == 0);
    CHECK(g_f4sim.cr & F4_CR_LOCK);
    CHECK_EQ(g_f4sim.violations, 0);
    /* erasing brings the ones back */
    CHECK_EQ(f4_flash_erase(&drv, 0), F4_FLASH_OK);
    CHECK(all(0x08020000u, 8, 0xFF));
}

static void test_ragged_ends_are_programmed_bytewise(void)
{
    setup(1);
    uint8_t d[11];
    for (int i = 0; i < 11; i++) d[i] = (uint8_t)(0x10 + i);
    CHECK_EQ(f4_flash_write(&drv, 3, d, 11), F4_FLASH_OK); /* bytes 3..13: 1 + 2 words + 2 */
    CHECK(memcmp(at(0x08020000u + 3), d, 11) == 0);
    CHECK_EQ(at(0x08020000u + 2)[0], 0xFF);
    CHECK_EQ(at(0x08020000u + 14)[0], 0xFF);
    CHECK_EQ(g_f4sim.programs_x32, 2);
    CHECK_EQ(g_f4sim.programs_x8, 3);
    CHECK_EQ(g_f4sim.sr & F4_SR_ERRORS, 0);
    /* beyond the store */
    CHECK_EQ(f4_flash_write(&drv, F446_STORE_SIZE - 2, d, 4), F4_FLASH_E_RANGE);
}

static void test_the_model_refuses_what_the_driver_must_not_do(void)
{
    /* the register model itself: a write while locked or without PG changes nothing */
    setup(4);
    f4_io_reg_write(F4_FLASH_CR, F4_CR_PG | F4_CR_PSIZE_X32); /* ignored: locked */
    f4_io_mem_write32(0x08020000u, 0);
    CHECK_EQ(at(0x08020000u)[0], 0xFF);
    CHECK(g_f4sim.sr & F4_SR_PGSERR);
    /* unlocked, PG set, but BSY from a running operation: refused */
    setup(4);
    f4_io_reg_write(F4_FLASH_KEYR, F4_FLASH_KEY1);
    f4_io_reg_write(F4_FLASH_KEYR, F4_FLASH_KEY2);
    f4_io_reg_write(F4_FLASH_CR, F4_CR_PG | F4_CR_PSIZE_X32);
    f4_io_mem_write32(0x08020000u, 0x11111111u);
    f4_io_mem_write32(0x08020004u, 0);
    CHECK_EQ(g_f4sim.violations, 1);
    CHECK_EQ(at(0x08020004u)[0], 0xFF);
}

static void test_busy_is_waited_for(void)
{
    /* every operation stays busy for 50 SR reads: the driver waits instead of starting the next */
    setup(50);
    uint8_t d[64];
    memset(d, 0x5A, sizeof(d));
    CHECK_EQ(f4_flash_erase(&drv, 0), F4_FLASH_OK);
    CHECK_EQ(f4_flash_write(&drv, 0, d, sizeof(d)), F4_FLASH_OK);
    CHECK(memcmp(at(0x08020000u), d, sizeof(d)) == 0);
    CHECK_EQ(g_f4sim.violations, 0);
}

static void test_stuck_busy_times_out(void)
{
    setup(1);
    g_f4sim.stuck_busy = 1;
    CHECK_EQ(f4_flash_erase(&drv, 0), F4_FLASH_E_TIMEOUT); /* starts, then BSY never clears */
    CHECK_EQ(g_f4sim.violations, 0); /* CR is not written while the operation runs */
    setup(1);
    g_f4sim.stuck_busy = 1;
    g_f4sim.sr |= F4_SR_BSY; /* already busy (another bus master's operation) */
    uint32_t t0 = g_f4sim.clock_ms;
    CHECK_EQ(f4_flash_erase(&drv, 0), F4_FLASH_E_TIMEOUT);
    CHECK(g_f4sim.clock_ms - t0 > F4_FLASH_ERASE_TIMEOUT_MS);
    CHECK_EQ(g_f4sim.erases[5], 0);
    CHECK_EQ(g_f4sim.violations, 0);
    uint8_t d[4] = {0};
    CHECK_EQ(f4_flash_write(&drv, 0, d, 4), F4_FLASH_E_TIMEOUT);
    CHECK_EQ(g_f4sim.violations, 0);
}

static void test_a_wrong_key_locks_until_reset(void)
{
    setup(0);
    f4_io_reg_write(F4_FLASH_KEYR, 0x12345678u);
    uint8_t d[4] = {0};
    CHECK_EQ(f4_flash_write(&drv, 0, d, 4), F4_FLASH_E_HW);
    CHECK_EQ(f4_flash_erase(&drv, 0), F4_FLASH_E_HW);
    CHECK(all(0x08020000u, 4, 0xFF));
}

static void test_error_flag_fails_the_operation(void)
{
    setup(0);
    uint8_t d[4] = {1, 2, 3, 4};
    g_f4sim.sr |= F4_SR_WRPERR; /* stale from before: cleared by the driver, not a failure */
    CHECK_EQ(f4_flash_write(&drv, 0, d, 4), F4_FLASH_OK);
    g_f4sim.fail_with = F4_SR_WRPERR; /* a write-protected sector (option bytes): the model has none */
    CHECK_EQ(f4_flash_erase(&drv, 0), F4_FLASH_E_HW);
    CHECK(drv.last_sr & F4_SR_WRPERR);
    CHECK(g_f4sim.cr & F4_CR_LOCK);
    CHECK_EQ(f4_flash_write(&drv, 8, d, 4), F4_FLASH_E_HW);
    CHECK(g_f4sim.cr & F4_CR_LOCK);
}

/* The core's store on the driver with the port's layout: factory install, an update, remount. */
static void test_store_on_the_f446_layout(void)
{
    static uint8_t factory[20000], update[120000];
    for (size_t i = 0; i < sizeof(factory); i++) factory[i] = (uint8_t)(i * 7u + 1u);
    for (size_t i = 0; i < sizeof(update); i++) update[i] = (uint8_t)(i * 13u + 5u);
    setup(2);
    tm_flash_t hal = f4_flash_hal(&drv);
    tm_store_t st;
    int reverted;
    CHECK_EQ(tm_store_init(&st, &hal, F446_SLOT_SIZE, factory, sizeof(factory), &reverted), TM_OK);
    uint32_t len;
    const uint8_t *p = tm_store_active(&st, &len);
    CHECK(p == at(F446_STORE_ADDR));
    CHECK(p && len == sizeof(factory) && memcmp(p, factory, len) == 0);

    uint8_t sha[32];
    tm_sha256(update, sizeof(update), sha);
    int resumed;
    const uint16_t chunk = 4000;
    uint32_t n = (uint32_t)((sizeof(update) + chunk - 1) / chunk);
    CHECK_EQ(tm_store_begin(&st, 7, sizeof(update), chunk, 4096, sha, 2, 0, &resumed), TM_OK);
    for (uint32_t i = 0; i < n; i++) {
        uint32_t off = i * chunk, l = sizeof(update) - off < chunk ? (uint32_t)(sizeof(update) - off) : chunk;
        CHECK_EQ(tm_store_chunk(&st, 7, i, tm_crc32(0, update + off, l), update + off, l, 0), TM_OK);
    }
    const uint8_t *img;
    CHECK_EQ(tm_store_verify(&st, 7, &img), TM_OK);
    CHECK_EQ(tm_store_commit(&st, 1, 0, 0), TM_OK);
    CHECK_EQ(g_f4sim.violations, 0);
    CHECK(g_f4sim.erases[6] >= 1);       /* slot 1 is sector 6 */
    CHECK(g_f4sim.erases[7] >= 1);       /* the journal is sector 7 */
    CHECK_EQ(g_f4sim.erases[4], 0);      /* never the firmware's sectors */
    CHECK_EQ(g_f4sim.erases[0] + g_f4sim.erases[1] + g_f4sim.erases[2] + g_f4sim.erases[3], 0);

    /* reboot: the journal in sector 7 names the update, intact in slot 1 */
    tm_store_t again;
    CHECK_EQ(tm_store_init(&again, &hal, F446_SLOT_SIZE, factory, sizeof(factory), &reverted), TM_OK);
    p = tm_store_active(&again, &len);
    CHECK(p == at(F446_STORE_ADDR + F446_SLOT_SIZE));
    CHECK(p && len == sizeof(update) && memcmp(p, update, len) == 0);
    CHECK_EQ(tm_store_version(&again, 1), 2);
    /* and rolling back alternates the journal pages: both in sector 7, each write still lands */
    CHECK_EQ(tm_store_rollback(&again), TM_OK);
    CHECK_EQ(tm_store_init(&st, &hal, F446_SLOT_SIZE, factory, sizeof(factory), &reverted), TM_OK);
    p = tm_store_active(&st, &len);
    CHECK(p == at(F446_STORE_ADDR) && len == sizeof(factory));
    CHECK_EQ(g_f4sim.violations, 0);
}

int main(void)
{
    test_sector_map();
    test_erase_sets_the_whole_sector_and_only_it();
    test_page_inside_a_sector();
    test_programming_clears_bits_only();
    test_ragged_ends_are_programmed_bytewise();
    test_the_model_refuses_what_the_driver_must_not_do();
    test_busy_is_waited_for();
    test_stuck_busy_times_out();
    test_a_wrong_key_locks_until_reset();
    test_error_flag_fails_the_operation();
    test_store_on_the_f446_layout();
    return TEST_DONE();
}
