/* F446 clock tree (RM0390 6.3): HSI 16 MHz / M 8 = 2 MHz into the VCO, x N 180 = 360 MHz, / P 2 =
 * 180 MHz SYSCLK; AHB /1, APB1 /4 (45 MHz, its maximum), APB2 /2. 180 MHz needs voltage scale 1,
 * the over-drive and 5 flash wait states. Every ready flag is waited for a bounded number of polls:
 * a part (or an emulator: QEMU models no RCC) whose PLL never locks keeps running on the HSI. */
#include "clock.h"
#include "stm32f4.h"

#define HSI_HZ 16000000u
#define PLL_HZ 180000000u
/* Polls of a ready flag before giving up: PLL lock and over-drive take ~100 us (datasheet t_LOCK,
 * t_OD_swen); at 16 MHz and a few cycles a poll, 100000 polls are > 20 ms, far beyond that. */
#define CLOCK_READY_POLLS 100000u

#define RCC_CR_PLLON (1u << 24)
#define RCC_CR_PLLRDY (1u << 25)
#define PLLCFGR_180MHZ ((8u << 0) | (180u << 6) | (0u << 16) /* P=2 */ | (0u << 22) /* HSI */ | \
                        (7u << 24) /* Q */ | (2u << 28) /* R */)
#define RCC_APB1ENR_PWREN (1u << 28)
#define PWR_CR_VOS_SCALE1 (3u << 14)
#define PWR_CR_ODEN (1u << 16)
#define PWR_CR_ODSWEN (1u << 17)
#define PWR_CSR_ODRDY (1u << 16)
#define PWR_CSR_ODSWRDY (1u << 17)
#define FLASH_ACR_5WS 5u
#define FLASH_ACR_CACHES ((1u << 8) | (1u << 9) | (1u << 10)) /* prefetch, I-cache, D-cache */
#define CFGR_PRESCALERS ((0u << 4) | (5u << 10) | (4u << 13)) /* AHB /1, APB1 /4, APB2 /2 */
#define CFGR_SW_PLL 2u
#define CFGR_SWS_MASK (3u << 2)
#define CFGR_SWS_PLL (2u << 2)

static int wait_set(volatile uint32_t *reg, uint32_t mask, uint32_t want)
{
    for (uint32_t i = 0; i < CLOCK_READY_POLLS; i++)
        if ((*reg & mask) == want) return 1;
    return 0;
}

clock_info_t clock_init(void)
{
    clock_info_t hsi = {HSI_HZ, HSI_HZ, 0};
    RCC_APB1ENR |= RCC_APB1ENR_PWREN;
    PWR_CR |= PWR_CR_VOS_SCALE1;
    RCC_PLLCFGR = PLLCFGR_180MHZ;
    RCC_CR |= RCC_CR_PLLON;
    if (!wait_set(&RCC_CR, RCC_CR_PLLRDY, RCC_CR_PLLRDY)) return hsi;
    PWR_CR |= PWR_CR_ODEN;
    if (!wait_set(&PWR_CSR, PWR_CSR_ODRDY, PWR_CSR_ODRDY)) return hsi;
    PWR_CR |= PWR_CR_ODSWEN;
    if (!wait_set(&PWR_CSR, PWR_CSR_ODSWRDY, PWR_CSR_ODSWRDY)) return hsi;
    FLASH_ACR = FLASH_ACR_5WS | FLASH_ACR_CACHES; /* wait states before the clock goes up */
    RCC_CFGR = CFGR_PRESCALERS;
    RCC_CFGR = CFGR_PRESCALERS | CFGR_SW_PLL;
    if (!wait_set(&RCC_CFGR, CFGR_SWS_MASK, CFGR_SWS_PLL)) {
        RCC_CFGR = 0; /* back to the HSI, prescalers /1 */
        return hsi;
    }
    clock_info_t pll = {PLL_HZ, PLL_HZ / 4u, 1};
    return pll;
}
