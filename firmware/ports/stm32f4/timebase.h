/* Time for the HAL: a 1 ms SysTick for now_ms, and microseconds from the DWT cycle counter
 * (CYCCNT, one count per core clock) when the core has one that counts; else from SysTick. */
#ifndef STM32F4_TIMEBASE_H
#define STM32F4_TIMEBASE_H
#include <stdint.h>

void timebase_init(uint32_t cpu_hz);
uint32_t timebase_ms(void);
uint32_t timebase_us(void);
/* 1: microseconds come from DWT CYCCNT; 0: from SysTick (QEMU models no DWT). */
int timebase_uses_dwt(void);

#endif
