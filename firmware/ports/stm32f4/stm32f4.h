/* The few STM32F4 registers the port touches (RM0390), as offsets from their blocks. */
#ifndef STM32F4_REGS_H
#define STM32F4_REGS_H
#include <stdint.h>

#define REG(a) (*(volatile uint32_t *)(a))

#define RCC_BASE 0x40023800u
#define RCC_CR REG(RCC_BASE + 0x00u)
#define RCC_PLLCFGR REG(RCC_BASE + 0x04u)
#define RCC_CFGR REG(RCC_BASE + 0x08u)
#define RCC_AHB1ENR REG(RCC_BASE + 0x30u)
#define RCC_APB1ENR REG(RCC_BASE + 0x40u)
#define PWR_CR REG(0x40007000u)
#define PWR_CSR REG(0x40007004u)
#define FLASH_ACR REG(0x40023C00u)
#define GPIOA_MODER REG(0x40020000u)
#define GPIOA_AFRL REG(0x40020020u)
#define USART2_BASE 0x40004400u
#define USART2_SR REG(USART2_BASE + 0x00u)
#define USART2_DR REG(USART2_BASE + 0x04u)
#define USART2_BRR REG(USART2_BASE + 0x08u)
#define USART2_CR1 REG(USART2_BASE + 0x0Cu)
#define USART_SR_ORE (1u << 3)
#define USART_SR_RXNE (1u << 5)
#define USART_SR_TXE (1u << 7)
#define USART_SR_TC (1u << 6)
#define USART_CR1_RE (1u << 2)
#define USART_CR1_TE (1u << 3)
#define USART_CR1_RXNEIE (1u << 5)
#define USART_CR1_UE (1u << 13)
#define USART2_IRQN 38u

#define SYST_CSR REG(0xE000E010u)
#define SYST_RVR REG(0xE000E014u)
#define SYST_CVR REG(0xE000E018u)
#define NVIC_ISER(n) REG(0xE000E100u + 4u * (n))
#define SCB_AIRCR REG(0xE000ED0Cu)
#define SCB_CPACR REG(0xE000ED88u)
#define DEMCR REG(0xE000EDFCu)
#define DEMCR_TRCENA (1u << 24)
#define DWT_CTRL REG(0xE0001000u)
#define DWT_CYCCNT REG(0xE0001004u)
#define DWT_CTRL_CYCCNTENA 1u

#endif
