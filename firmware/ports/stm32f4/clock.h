/* Clock tree of the STM32F446: 180 MHz from the HSI through the PLL, or the HSI's 16 MHz when the
 * PLL, the over-drive or the switch does not come ready within its bounded wait. */
#ifndef STM32F4_CLOCK_H
#define STM32F4_CLOCK_H
#include <stdint.h>

typedef struct {
    uint32_t sysclk_hz, apb1_hz;
    int pll; /* 1: running from the PLL; 0: stayed on the HSI (a wait timed out) */
} clock_info_t;

clock_info_t clock_init(void);

#endif
