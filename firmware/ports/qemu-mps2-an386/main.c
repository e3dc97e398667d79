/* Tiny-MLOps firmware for the emulated Cortex-M4 (QEMU mps2-an386): HAL over the CMSDK UART0,
 * SysTick and an emulated NOR flash in PSRAM, plus the deterministic vibration source. All the
 * protocol, store, inference and feature work is the portable core (firmware/core). */
#include <stdint.h>
#include <string.h>
#include "tm_device.h"
#include "tm_trust_keys.h" /* generated: the build-time trust store */
#include "tm_vibration.h"

#define REG(a) (*(volatile uint32_t *)(a))
#define UART0 0x40004000u
#define UART_DATA REG(UART0 + 0x00)
#define UART_STATE REG(UART0 + 0x04)
#define UART_CTRL REG(UART0 + 0x08)
#define UART_INT REG(UART0 + 0x0C)
#define UART_BAUDDIV REG(UART0 + 0x10)
#define STATE_TXFULL 1u
#define STATE_RXFULL 2u
#define CTRL_TX 1u
#define CTRL_RX 2u
#define CTRL_RXINT 8u
#define SYST_CSR REG(0xE000E010u)
#define SYST_RVR REG(0xE000E014u)
#define SYST_CVR REG(0xE000E018u)
#define NVIC_ISER0 REG(0xE000E100u)
#define SCB_AIRCR REG(0xE000ED0Cu)

/* mps2-an386 system clock (SysTick's processor clock source): 25 MHz. */
#define CPU_HZ 25000000u
#define TICKS_PER_MS (CPU_HZ / 1000u)
/* Emulated model flash: two 1 MB slots (PROTOCOL.md 7: qemu-mps2-an386) plus two journal pages. */
#define FLASH_PAGE 4096u
#define SLOT_SIZE (1024u * 1024u)
#define FLASH_SIZE (2u * SLOT_SIZE + 2u * FLASH_PAGE)
/* Tensor arena budget per model instance (PROTOCOL.md 7: 256 KB); the Makefile's ARENA_SIZE
 * builds a variant with another budget (tests/firmware: ARENA_TOO_SMALL). */
#ifndef QEMU_ARENA_SIZE
#define QEMU_ARENA_SIZE (256u * 1024u)
#endif
#define ARENA_SIZE QEMU_ARENA_SIZE
/* Nominal shaft speed of the simulated machine, Hz (as the virtual fleet's default). */
#define SHAFT_HZ 24.7f

extern const uint8_t factory_image[], factory_image_end[];

static uint8_t flash_mem[FLASH_SIZE] __attribute__((section(".model_flash"), aligned(16)));
static uint8_t arena0[ARENA_SIZE] __attribute__((aligned(16)));
static uint8_t arena1[ARENA_SIZE] __attribute__((aligned(16)));
static tm_device_t dev;
static tm_vib_t vib;
static volatile uint32_t ms_ticks;

void SysTick_Handler(void) { ms_ticks++; }
void Uart0Rx_Handler(void) { UART_INT = 2u; } /* wake-up only: the main loop reads the data */

static void uart_write(void *ctx, const uint8_t *p, size_t n)
{
    (void)ctx;
    while (n--) {
        while (UART_STATE & STATE_TXFULL) {
        }
        UART_DATA = *p++;
    }
}

static uint32_t now_ms(void *ctx)
{
    (void)ctx;
    return ms_ticks;
}

static uint32_t now_us(void *ctx)
{
    (void)ctx;
    uint32_t ms, cvr;
    do {
        ms = ms_ticks;
        cvr = SYST_CVR;
    } while (ms != ms_ticks);
    return ms * 1000u + (TICKS_PER_MS - 1u - cvr) / (TICKS_PER_MS / 1000u);
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
    while (UART_STATE & STATE_TXFULL) {
    }
    __asm volatile("dsb");
    SCB_AIRCR = 0x05FA0004u; /* SYSRESETREQ */
    for (;;) {
    }
}

/* NOR semantics: erase sets 0xFF, a write can only clear bits. */
static int flash_erase(void *ctx, uint32_t addr)
{
    (void)ctx;
    if (addr % FLASH_PAGE || addr >= FLASH_SIZE) return -1;
    memset(flash_mem + addr, 0xFF, FLASH_PAGE);
    return 0;
}

static int flash_write(void *ctx, uint32_t addr, const void *data, uint32_t len)
{
    (void)ctx;
    if (addr > FLASH_SIZE || len > FLASH_SIZE - addr) return -1;
    const uint8_t *p = (const uint8_t *)data;
    for (uint32_t i = 0; i < len; i++) flash_mem[addr + i] &= p[i];
    return 0;
}

int main(void)
{
    UART_BAUDDIV = 16u;
    UART_CTRL = CTRL_TX | CTRL_RX | CTRL_RXINT;
    NVIC_ISER0 = 1u; /* UART0 RX */
    SYST_RVR = TICKS_PER_MS - 1u;
    SYST_CVR = 0;
    SYST_CSR = 7u; /* processor clock, interrupt, enable */
    tm_vib_init(&vib, 1, SHAFT_HZ, TM_SAMPLE_RATE);
    static const tm_hal_t hal = {uart_write, now_us, now_ms, read_window, set_fault, reboot, 0,
                                 "qemu-m4", "lab/emulator/qemu-m4", "qemu-mps2-an386", "tinymlops-fw 0.1.0", 1, 0};
    static const tm_flash_t flash = {FLASH_SIZE, FLASH_PAGE, flash_mem, flash_erase, flash_write, 0};
    tm_device_init(&dev, &hal, &flash, SLOT_SIZE, factory_image, (uint32_t)(factory_image_end - factory_image),
                   arena0, arena1, ARENA_SIZE);
    tm_device_set_trust(&dev, TM_TRUST_KEYS, TM_TRUST_N_KEYS); /* build time: make TRUST_KEYS=... */
    for (;;) {
        int got = 0;
        while (UART_STATE & STATE_RXFULL) {
            uint8_t b = (uint8_t)UART_DATA;
            tm_device_rx(&dev, &b, 1);
            got = 1;
        }
        tm_device_poll(&dev);
        if (!got) __asm volatile("wfi"); /* UART RX or the 1 ms SysTick wakes us */
    }
}
