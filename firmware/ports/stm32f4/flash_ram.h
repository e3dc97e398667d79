/* A RAM-backed stand-in for the flash driver (build flag STM32F4_QEMU): QEMU's netduinoplus2
 * models the flash array as ROM and no flash interface, so the store lives in SRAM there, with
 * NOR semantics (erase sets 0xFF, a write only clears bits) so the core behaves as on flash. */
#ifndef STM32F4_FLASH_RAM_H
#define STM32F4_FLASH_RAM_H
#include "tm_store.h"

tm_flash_t flash_ram_hal(void);

#endif
