/* Memory budgets of the STM32F4 port (README.md "Layout"). The core's store wants, from its base,
 * [slot 0][slot 1][journal page 0][journal page 1] in uniform pages; the F446's sectors are
 * 4x16 KB, 1x64 KB, 3x128 KB and the firmware (~90 KB with Ed25519 and the factory model) needs
 * sectors 0-4, so on the chip each slot is one 128 KB sector (5 and 6) and the journal's two pages
 * are the halves of sector 7. */
#ifndef STM32F4_LAYOUT_H
#define STM32F4_LAYOUT_H

/* On the chip (f4_flash.c): the store from sector 5. */
#define F446_STORE_ADDR 0x08020000u
#define F446_SLOT_SIZE (128u * 1024u)
/* A logical page: half of a 128 KB sector, so both journal pages fit in sector 7. */
#define F446_PAGE_SIZE (64u * 1024u)
#define F446_STORE_SIZE (2u * F446_SLOT_SIZE + 2u * F446_PAGE_SIZE)
/* Tensor arena per model instance: what 128 KB of SRAM leaves after the core's device state
 * (~61 KB: frame buffers, the feature window and its FFT work) and the 16 KB stack (sections.ld). */
#define F446_ARENA_SIZE (20u * 1024u)

/* In QEMU's netduinoplus2 (no flash controller modelled: the store lives in SRAM, 192 KB there):
 * small slots (the test models are 12-23 KB) and the uniform page of the RAM driver. */
#define QEMU_SLOT_SIZE (28u * 1024u)
#define QEMU_PAGE_SIZE (4u * 1024u)
#define QEMU_STORE_SIZE (2u * QEMU_SLOT_SIZE + 2u * QEMU_PAGE_SIZE)
#define QEMU_ARENA_SIZE F446_ARENA_SIZE

#endif
