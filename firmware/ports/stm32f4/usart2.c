/* USART2 driver (usart2.h). The ISR is the only writer of head, the main loop the only writer of
 * tail: a single-producer single-consumer ring needs no lock on one core. */
#include "usart2.h"
#include "stm32f4.h"

#define RCC_AHB1ENR_GPIOAEN (1u << 0)
#define RCC_APB1ENR_USART2EN (1u << 17)
#define GPIO_MODE_AF 2u
#define GPIO_AF7_USART 7u

static uint8_t ring[USART2_RX_RING];
static volatile uint32_t head, tail, dropped;

void USART2_IRQHandler(void);
void USART2_IRQHandler(void)
{
    uint32_t sr = USART2_SR;
    if (sr & (USART_SR_RXNE | USART_SR_ORE)) {
        uint8_t b = (uint8_t)USART2_DR; /* reading SR then DR also clears ORE */
        if (sr & USART_SR_ORE) dropped++;
        if (head - tail < USART2_RX_RING) {
            ring[head % USART2_RX_RING] = b;
            __asm volatile("" ::: "memory"); /* the byte is stored before head publishes it */
            head++;
        } else {
            dropped++;
        }
    }
}

void usart2_init(uint32_t apb1_hz)
{
    RCC_AHB1ENR |= RCC_AHB1ENR_GPIOAEN;
    RCC_APB1ENR |= RCC_APB1ENR_USART2EN;
    GPIOA_MODER = (GPIOA_MODER & ~(0xFu << 4)) | (GPIO_MODE_AF << 4) | (GPIO_MODE_AF << 6); /* PA2, PA3 */
    GPIOA_AFRL = (GPIOA_AFRL & ~(0xFFu << 8)) | (GPIO_AF7_USART << 8) | (GPIO_AF7_USART << 12);
    USART2_BRR = (apb1_hz + USART2_BAUD / 2u) / USART2_BAUD; /* 16x oversampling: mantissa.fraction */
    USART2_CR1 = USART_CR1_UE | USART_CR1_TE | USART_CR1_RE | USART_CR1_RXNEIE;
    NVIC_ISER(USART2_IRQN / 32u) = 1u << (USART2_IRQN % 32u);
}

void usart2_write(const uint8_t *p, size_t n)
{
    while (n--) {
        while (!(USART2_SR & USART_SR_TXE)) {
        }
        USART2_DR = *p++;
    }
}

void usart2_flush(void)
{
    while (!(USART2_SR & USART_SR_TC)) {
    }
}

size_t usart2_read(uint8_t *out, size_t cap)
{
    size_t n = 0;
    uint32_t h = head;
    __asm volatile("" ::: "memory"); /* the bytes are read after head */
    while (tail != h && n < cap) {
        out[n++] = ring[tail % USART2_RX_RING];
        tail++;
    }
    return n;
}

uint32_t usart2_dropped(void) { return dropped; }
