/* USART2 (PA2 TX, PA3 RX: the ST-LINK virtual COM port of the Nucleo-64 boards): polled transmit,
 * interrupt-driven receive into a ring buffer the main loop drains. */
#ifndef STM32F4_USART2_H
#define STM32F4_USART2_H
#include <stddef.h>
#include <stdint.h>

/* Receive ring: a power of two; at 115200 baud it holds ~90 ms of input, more than the longest
 * stretch the main loop spends away from it (a window's features and inference, a flash page). */
#define USART2_RX_RING 1024u
/* The application's serial default (app/protocol/framing.py DEFAULT_BAUD). */
#define USART2_BAUD 115200u

void usart2_init(uint32_t apb1_hz);
void usart2_write(const uint8_t *p, size_t n);
/* Wait until the last byte has left the shift register (before a reset). */
void usart2_flush(void);
/* Up to cap received bytes out of the ring; returns how many. */
size_t usart2_read(uint8_t *out, size_t cap);
/* Bytes lost to a full ring or an overrun since boot. */
uint32_t usart2_dropped(void);

#endif
