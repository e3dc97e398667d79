/* timebase.h. CYCCNT wraps every 2^32 cycles (24 s at 180 MHz) and now_us wraps at 2^32 us, so
 * the SysTick handler folds CYCCNT into a 64-bit count every millisecond; now_us divides that. */
#include "timebase.h"
#include "stm32f4.h"

/* Cycles to spin while checking that CYCCNT advances: a counting DWT shows it within a few. */
#define DWT_PROBE_SPINS 64u

static uint32_t hz, ticks_per_ms;
static volatile uint32_t ms_ticks, last_cyc;
static volatile uint64_t cycles;
static int use_dwt;

void SysTick_Handler(void);
void SysTick_Handler(void)
{
    ms_ticks++;
    if (use_dwt) {
        uint32_t c = DWT_CYCCNT;
        cycles += (uint32_t)(c - last_cyc);
        last_cyc = c;
    }
}

static int dwt_start(void)
{
    DEMCR |= DEMCR_TRCENA;
    DWT_CYCCNT = 0;
    DWT_CTRL |= DWT_CTRL_CYCCNTENA;
    uint32_t a = DWT_CYCCNT;
    for (volatile uint32_t i = 0; i < DWT_PROBE_SPINS; i++) {
    }
    return DWT_CYCCNT != a;
}

void timebase_init(uint32_t cpu_hz)
{
    hz = cpu_hz;
    ticks_per_ms = cpu_hz / 1000u;
#ifndef STM32F4_NO_DWT
    use_dwt = dwt_start();
    last_cyc = DWT_CYCCNT;
#endif
    SYST_RVR = ticks_per_ms - 1u;
    SYST_CVR = 0;
    SYST_CSR = 7u; /* processor clock, interrupt, enable */
}

uint32_t timebase_ms(void) { return ms_ticks; }

int timebase_uses_dwt(void) { return use_dwt; }

uint32_t timebase_us(void)
{
    if (use_dwt) {
        uint64_t total;
        uint32_t ms;
        do { /* the SysTick handler may fold in between: read again until stable */
            ms = ms_ticks;
            total = cycles + (uint32_t)(DWT_CYCCNT - last_cyc);
        } while (ms != ms_ticks);
        return (uint32_t)(total / (hz / 1000000u));
    }
    uint32_t ms, cvr;
    do {
        ms = ms_ticks;
        cvr = SYST_CVR;
    } while (ms != ms_ticks);
    return ms * 1000u + (ticks_per_ms - 1u - cvr) / (ticks_per_ms / 1000u);
}
