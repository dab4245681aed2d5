// CRC32C for the frame checksum (see Protocol/PROTOCOL.md, "Integrity").
//
// Why C: the SSE4.2 / ARMv8 crc32 instructions are not reachable from Swift, and no package on the
// project's allowed list provides CRC32C. The hardware path handles 8 bytes per instruction; the
// portable path is a slicing-by-8 table used only on CPUs without the instruction.
#include "CRaffleCRC32C.h"

#include <string.h>

#define POLY 0x82F63B78u

static uint32_t table[8][256];

// Built before main() runs, so readers never race with the writer.
__attribute__((constructor)) static void raffle_crc32c_init(void) {
    for (uint32_t n = 0; n < 256; n++) {
        uint32_t c = n;
        for (int k = 0; k < 8; k++) c = (c & 1) ? (c >> 1) ^ POLY : c >> 1;
        table[0][n] = c;
    }
    for (uint32_t n = 0; n < 256; n++) {
        uint32_t c = table[0][n];
        for (int t = 1; t < 8; t++) {
            c = table[0][c & 0xff] ^ (c >> 8);
            table[t][n] = c;
        }
    }
}

uint32_t raffle_crc32c_extend_portable(uint32_t crc, const void *bytes, size_t length) {
    const unsigned char *p = (const unsigned char *)bytes;
    uint32_t c = ~crc;
    while (length >= 8) {
        uint64_t w;
        memcpy(&w, p, 8);
#if __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
        w = __builtin_bswap64(w);
#endif
        uint32_t lo = (uint32_t)w ^ c;
        uint32_t hi = (uint32_t)(w >> 32);
        c = table[7][lo & 0xff] ^ table[6][(lo >> 8) & 0xff] ^ table[5][(lo >> 16) & 0xff] ^
            table[4][lo >> 24] ^ table[3][hi & 0xff] ^ table[2][(hi >> 8) & 0xff] ^
            table[1][(hi >> 16) & 0xff] ^ table[0][hi >> 24];
        p += 8;
        length -= 8;
    }
    while (length--) c = table[0][(c ^ *p++) & 0xff] ^ (c >> 8);
    return ~c;
}

#if defined(__x86_64__)
#include <nmmintrin.h>

__attribute__((target("sse4.2"))) static uint32_t extend_hw(uint32_t crc, const void *bytes, size_t length) {
    const unsigned char *p = (const unsigned char *)bytes;
    uint64_t c = ~crc;
    while (length >= 8) {
        uint64_t w;
        memcpy(&w, p, 8);
        c = _mm_crc32_u64(c, w);
        p += 8;
        length -= 8;
    }
    uint32_t c32 = (uint32_t)c;
    while (length--) c32 = _mm_crc32_u8(c32, *p++);
    return ~c32;
}

static int has_hw(void) {
    __builtin_cpu_init();
    return __builtin_cpu_supports("sse4.2");
}
#elif defined(__aarch64__)
#if defined(__linux__)
#include <sys/auxv.h>
#ifndef HWCAP_CRC32
#define HWCAP_CRC32 (1 << 7)
#endif
static int has_hw(void) { return (getauxval(AT_HWCAP) & HWCAP_CRC32) != 0; }
#else
// Every Apple arm64 CPU has the CRC extension.
static int has_hw(void) { return 1; }
#endif

__attribute__((target("crc"))) static uint32_t extend_hw(uint32_t crc, const void *bytes, size_t length) {
    const unsigned char *p = (const unsigned char *)bytes;
    uint32_t c = ~crc;
    while (length >= 8) {
        uint64_t w;
        memcpy(&w, p, 8);
        c = __builtin_arm_crc32cd(c, w);
        p += 8;
        length -= 8;
    }
    while (length--) c = __builtin_arm_crc32cb(c, *p++);
    return ~c;
}
#else
static uint32_t extend_hw(uint32_t crc, const void *bytes, size_t length) {
    return raffle_crc32c_extend_portable(crc, bytes, length);
}
static int has_hw(void) { return 0; }
#endif

static int hardware = -1;

__attribute__((constructor)) static void raffle_crc32c_detect(void) { hardware = has_hw(); }

int raffle_crc32c_is_hardware(void) { return hardware == 1; }

uint32_t raffle_crc32c_extend(uint32_t crc, const void *bytes, size_t length) {
    if (hardware == 1) return extend_hw(crc, bytes, length);
    return raffle_crc32c_extend_portable(crc, bytes, length);
}
