/* f4_flash_io.h on the chip: the flash interface at 0x40023C00, the array on the AHB bus. */
#include "f4_flash_io.h"

#define FLASH_R_BASE 0x40023C00u

uint32_t f4_io_reg_read(uint32_t off) { return *(volatile uint32_t *)(FLASH_R_BASE + off); }
void f4_io_reg_write(uint32_t off, uint32_t value) { *(volatile uint32_t *)(FLASH_R_BASE + off) = value; }
const uint8_t *f4_io_mem(uint32_t addr) { return (const uint8_t *)addr; }

void f4_io_mem_write32(uint32_t addr, uint32_t value)
{
    *(volatile uint32_t *)addr = value;
    __asm volatile("dsb" ::: "memory"); /* the write reaches the interface before BSY is polled */
}

void f4_io_mem_write8(uint32_t addr, uint8_t value)
{
    *(volatile uint8_t *)addr = value;
    __asm volatile("dsb" ::: "memory");
}
