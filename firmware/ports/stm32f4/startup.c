/* Cortex-M4F start-up for the STM32F4: vector table (16 system + 97 F446 interrupts), .data and
 * .bss set-up, FPU on, main. Only SysTick and USART2 are used; anything else lands in a loop. */
#include <stdint.h>
#include "stm32f4.h"

extern uint32_t _sidata, _sdata, _edata, _sbss, _ebss, _sstack, _estack;
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

/* MPU region 0 over the lowest STACK_GUARD_BYTES of the stack, no access: an overflow faults at
 * once instead of silently overwriting the model store or the arenas that lie below the stack. */
#define STACK_GUARD_BYTES 32u
#define MPU_CTRL REG(0xE000ED94u)
#define MPU_RNR REG(0xE000ED98u)
#define MPU_RBAR REG(0xE000ED9Cu)
#define MPU_RASR REG(0xE000EDA0u)
#define MPU_CTRL_ENABLE_PRIVDEFENA 5u /* MPU on; the default memory map everywhere else */
#define MPU_RASR_XN (1u << 28)
#define MPU_RASR_ENABLE 1u

static void guard_stack(void)
{
    MPU_RNR = 0;
    MPU_RBAR = (uint32_t)&_sstack; /* linker script: 32-byte aligned */
    MPU_RASR = MPU_RASR_XN | ((5u - 1u) << 1) /* 2^5 = 32 bytes */ | MPU_RASR_ENABLE; /* AP 000: no access */
    MPU_CTRL = MPU_CTRL_ENABLE_PRIVDEFENA;
    __asm volatile("dsb\n isb");
}
_Static_assert(STACK_GUARD_BYTES == 1u << 5, "the region size field encodes 32 bytes");

void Reset_Handler(void)
{
    uint32_t *src = &_sidata, *dst = &_sdata;
    while (dst < &_edata) *dst++ = *src++;
    for (dst = &_sbss; dst < &_ebss;) *dst++ = 0;
    SCB_CPACR |= (0xFu << 20); /* CP10, CP11 full access: the FPU */
    __asm volatile("dsb\n isb");
    guard_stack();
    main();
    for (;;) {
    }
}
