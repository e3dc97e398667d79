/* Cortex-M4F start-up for the STM32F4: vector table (16 system + 97 F446 interrupts), .data and
 * .bss set-up, FPU on, main. Only SysTick and USART2 are used; anything else lands in a loop. */
#include <stdint.h>
#include "stm32f4.h"

extern uint32_t _sidata, _sdata, _edata, _sbss, _ebss, _estack;
int main(void);
void SysTick_Handler(void);
void USART2_IRQHandler(void);
void Reset_Handler(void);

static void Default_Handler(void)
{
    for (;;) {
    }
}

#define D Default_Handler
#define D2 D, D
#define D4 D2, D2
#define D8 D4, D4
#define D16 D8, D8
#define D32 D16, D16
#define N_IRQ 97

__attribute__((section(".isr_vector"), used)) static void (*const vectors[16 + N_IRQ])(void) = {
    (void (*)(void))(&_estack), Reset_Handler,
    D, D, D, D, D,            /* NMI, HardFault, MemManage, BusFault, UsageFault */
    0, 0, 0, 0, D, D, 0, D,   /* reserved x4, SVCall, DebugMon, reserved, PendSV */
    SysTick_Handler,
    D32, D4, D2,              /* IRQ 0-37 */
    USART2_IRQHandler,        /* IRQ 38 */
    D32, D16, D8, D2,         /* IRQ 39-96 */
};
_Static_assert(USART2_IRQN == 38u, "the table puts USART2 at IRQ 38");

void Reset_Handler(void)
{
    uint32_t *src = &_sidata, *dst = &_sdata;
    while (dst < &_edata) *dst++ = *src++;
    for (dst = &_sbss; dst < &_ebss;) *dst++ = 0;
    SCB_CPACR |= (0xFu << 20); /* CP10, CP11 full access: the FPU */
    __asm volatile("dsb\n isb");
    main();
    for (;;) {
    }
}
