/* Cost of one signature check (PROTOCOL.md 6.2) on the emulated Cortex-M4: verifies the golden
 * valid case of tests/vectors/signatures.json BENCH_RUNS times, then prints
 * "sign-bench runs=N ok=K us=T" on UART0, T being emulated microseconds (with QEMU's
 * -icount shift=3 one instruction is 8 ns, so instructions = T * 125 / N per check).
 * Built by `make bench-sign`; run by benchmarks/firmware_footprint.py. */
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include "signatures_gen.h"
#include "tm_config.h"
#include "tm_sha256.h"
#include "tm_sign.h"

#define REG(a) (*(volatile uint32_t *)(a))
#define UART_DATA REG(0x40004000u)
#define UART_STATE REG(0x40004004u)
#define UART_CTRL REG(0x40004008u)
#define UART_BAUDDIV REG(0x40004010u)
#define SYST_CSR REG(0xE000E010u)
#define SYST_RVR REG(0xE000E014u)
#define SYST_CVR REG(0xE000E018u)
/* SysTick at the 25 MHz processor clock, interrupting every 1 ms. */
#define TICKS_PER_MS 25000u
/* Enough checks that the 1 ms tick resolution is well under 1 % of the total. */
#define BENCH_RUNS 20

static volatile uint32_t ms_ticks;
void SysTick_Handler(void) { ms_ticks++; }
void Uart0Rx_Handler(void) {}

static void put(const char *s)
{
    for (; *s; s++) {
        while (UART_STATE & 1u) {
        }
        UART_DATA = (uint8_t)*s;
    }
}

int main(void)
{
    UART_BAUDDIV = 16u;
    UART_CTRL = 1u;
    SYST_RVR = TICKS_PER_MS - 1u;
    SYST_CVR = 0;
    SYST_CSR = 7u;
    const sig_case_t *c = &sig_cases[0]; /* "valid" */
    tm_trust_t trust;
    tm_trust_init(&trust, sig_keys, (int)sig_n_keys);
    int ok = 0;
    uint32_t start = ms_ticks;
    for (int i = 0; i < BENCH_RUNS; i++)
        ok += tm_sign_verify(&trust, c->block, c->statement, c->statement_len) == TM_OK;
    uint32_t ms = ms_ticks - start;
    char line[80];
    snprintf(line, sizeof line, "sign-bench runs=%d ok=%d us=%lu\n", BENCH_RUNS, ok, (unsigned long)ms * 1000u);
    put(line);
    for (;;) {
    }
}
