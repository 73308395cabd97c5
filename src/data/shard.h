/* Token shard files: a 64-byte header followed by uint16 token ids.
 *   bytes 0..7   magic "LOQTSHRD"
 *   bytes 8..11  u32 version (1)
 *   bytes 12..15 u32 vocab size
 *   bytes 16..23 u64 token count
 *   bytes 24..63 zero
 * The reader checks magic, version, and that the file size equals 64 + 2 * count exactly, and
 * that every id is below the vocab size. */
#ifndef LOQT_SHARD_H
#define LOQT_SHARD_H

#include <stddef.h>
#include <stdint.h>

#define SHARD_HEADER_BYTES 64
#define SHARD_VERSION 1

typedef struct {
    uint16_t *tokens; /* accounted as MEM_DATA */
    uint64_t n_tokens;
    uint32_t vocab_size;
} shard;

int shard_write(const char *path, const uint16_t *tokens, uint64_t n, uint32_t vocab_size);
int shard_read(shard *s, const char *path); /* 0 or -1 with error */
void shard_free(shard *s);

#endif
