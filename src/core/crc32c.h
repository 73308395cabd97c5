/* CRC-32C (Castagnoli, polynomial 0x1EDC6F41 reflected), the checksum of loqt's checkpoint files:
 * crc32c(0, "123456789", 9) = 0xE3069283.  Uses the SSE4.2 crc32 instruction where the CPU has
 * it (about 10 GB/s, so a 7B checkpoint is checked in seconds), a table otherwise. */
#ifndef LOQT_CRC32C_H
#define LOQT_CRC32C_H

#include <stddef.h>
#include <stdint.h>

/* Continues a running CRC: crc32c(crc32c(0, a, n), b, m) is the CRC of a followed by b. */
uint32_t crc32c(uint32_t crc, const void *data, size_t n);
/* The table version alone (tests compare the two). */
uint32_t crc32c_portable(uint32_t crc, const void *data, size_t n);

#endif
