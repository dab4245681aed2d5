#ifndef RAFFLED_CRC32C_H
#define RAFFLED_CRC32C_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/// Extends a CRC32C (Castagnoli, reflected polynomial 0x82F63B78, initial value and final XOR
/// 0xFFFFFFFF) over `length` bytes. Pass 0 as `crc` to start; pass a previous result to continue,
/// so crc(a ++ b) == raffle_crc32c_extend(raffle_crc32c_extend(0, a), b).
uint32_t raffle_crc32c_extend(uint32_t crc, const void *bytes, size_t length);

/// 1 when the hardware crc32 instruction is used on this CPU, 0 when the portable table is.
int raffle_crc32c_is_hardware(void);

/// The portable table-driven implementation, exposed so tests can check both paths agree.
uint32_t raffle_crc32c_extend_portable(uint32_t crc, const void *bytes, size_t length);

#ifdef __cplusplus
}
#endif

#endif
