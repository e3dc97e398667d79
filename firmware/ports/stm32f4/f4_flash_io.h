/* Access to the flash interface registers and the flash array, for f4_flash.c: MMIO on the chip
 * (f4_flash_mmio.c), a register model on the host (firmware/tests/f4flash_sim.c). */
#ifndef F4_FLASH_IO_H
#define F4_FLASH_IO_H
#include <stdint.h>

uint32_t f4_io_reg_read(uint32_t off);
void f4_io_reg_write(uint32_t off, uint32_t value);
/* Reads of the flash array (memory-mapped on the chip). */
const uint8_t *f4_io_mem(uint32_t addr);
/* Bus writes into the flash array, as the CPU's STR/STRB (effective only with PG set). */
void f4_io_mem_write32(uint32_t addr, uint32_t value);
void f4_io_mem_write8(uint32_t addr, uint8_t value);

#endif
