/* Tiny-MLOps firmware for STM32F4 boards (Nucleo-F446RE class) and, built with STM32F4_QEMU, for
 * QEMU's netduinoplus2 (STM32F405). The board glue: clock tree, SysTick and DWT time, USART2 with
 * an interrupt-fed ring, the model store in internal flash (or SRAM under QEMU), and the
 * deterministic vibration source (no accelerometer driver yet). Everything else is the portable
 * core (firmware/core). */
#include <stdint.h>
#include "clock.h"
#include "layout.h"
#include "stm32f4.h"
#include "timebase.h"
#include "tm_device.h"
#include "tm_trust_keys.h" /* generated: the build-time trust store */
#include "tm_vibration.h"
#include "usart2.h"
#ifdef STM32F4_QEMU
#include "flash_ram.h"
#else
#include "f4_flash.h"
#endif

/* Nominal shaft speed of the simulated machine, Hz (as the virtual fleet's default). */
#define SHAFT_HZ 24.7f
/* Bytes handed to the core per call: a stack buffer, the ring holds the rest. */
#define RX_BATCH 64u

#ifdef STM32F4_QEMU
/* QEMU's netduinoplus2 clocks the core from a fixed 168 MHz "sysclk" (hw/arm/netduinoplus2.c)
 * whatever the RCC is told: SysTick counts that, not the HSI the unmodelled RCC leaves us on. */
#define QEMU_SYSCLK_HZ 168000000u
#define SLOT_SIZE QEMU_SLOT_SIZE
#define ARENA_SIZE QEMU_ARENA_SIZE
#define DEVICE_ID "stm32f4-qemu"
#define LOCATION "lab/emulator/netduinoplus2"
#define EMULATED 1
#else
#define SLOT_SIZE F446_SLOT_SIZE
#define ARENA_SIZE F446_ARENA_SIZE
#define DEVICE_ID "nucleo-f446re"
#define LOCATION "lab/bench/nucleo-f446re"
#define EMULATED 0
#endif

extern const uint8_t factory_image[], factory_image_end[];

static uint8_t arena0[ARENA_SIZE] __attribute__((aligned(16)));
static uint8_t arena1[ARENA_SIZE] __attribute__((aligned(16)));
static tm_device_t dev;
static tm_vib_t vib;
#ifndef STM32F4_QEMU
static f4_flash_t flash_drv;
static uint32_t flash_now_ms(void) { return timebase_ms(); }
#endif

static void uart_write(void *ctx, const uint8_t *p, size_t n)
{
    (void)ctx;
    usart2_write(p, n);
}

static uint32_t now_ms(void *ctx)
{
    (void)ctx;
    return timebase_ms();
}

static uint32_t now_us(void *ctx)
{
    (void)ctx;
    return timebase_us();
}

static void read_window(void *ctx, float *s, int n)
{
    (void)ctx;
    tm_vib_generate(&vib, s, n);
}

static void set_fault(void *ctx, uint8_t mask, float sev)
{
    (void)ctx;
    tm_vib_set_fault(&vib, mask, sev);
}

static void reboot(void *ctx)
{
    (void)ctx;
    usart2_flush();
    __asm volatile("dsb");
    SCB_AIRCR = 0x05FA0004u; /* VECTKEY | SYSRESETREQ */
    for (;;) {
    }
}

int main(void)
{
    clock_info_t clk = clock_init();
#ifdef STM32F4_QEMU
    clk.sysclk_hz = QEMU_SYSCLK_HZ;
#endif
    timebase_init(clk.sysclk_hz);
    usart2_init(clk.apb1_hz);
    tm_vib_init(&vib, 1, SHAFT_HZ, TM_SAMPLE_RATE);
#ifdef STM32F4_QEMU
    static tm_flash_t flash;
    flash = flash_ram_hal();
#else
    f4_flash_f446_map(&flash_drv);
    flash_drv.store_addr = F446_STORE_ADDR;
    flash_drv.store_size = F446_STORE_SIZE;
    flash_drv.page_size = F446_PAGE_SIZE;
    flash_drv.now_ms = flash_now_ms;
    static tm_flash_t flash;
    flash = f4_flash_hal(&flash_drv);
#endif
    static const tm_hal_t hal = {uart_write, now_us, now_ms, read_window, set_fault, reboot, 0,
                                 DEVICE_ID, LOCATION, "stm32f446", "tinymlops-fw 0.1.0", EMULATED, 0};
    tm_device_init(&dev, &hal, &flash, SLOT_SIZE, factory_image, (uint32_t)(factory_image_end - factory_image),
                   arena0, arena1, ARENA_SIZE);
    tm_device_set_trust(&dev, TM_TRUST_KEYS, TM_TRUST_N_KEYS); /* build time: make TRUST_KEYS=... */
    for (;;) {
        uint8_t buf[RX_BATCH];
        size_t got = usart2_read(buf, sizeof(buf));
        if (got) tm_device_rx(&dev, buf, got);
        tm_device_poll(&dev);
        if (!got) __asm volatile("wfi"); /* USART2 RX or the 1 ms SysTick wakes us */
    }
}
