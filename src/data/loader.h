/* The training data loader: the token shards of one split, concatenated in shard order into one
 * stream, cut into batches of B sequences of T+1 tokens.
 *
 * Batches.  A batch is the B*T+1 consecutive tokens stream[pos .. pos+B*T]: sequence b is
 * stream[pos+b*T .. pos+b*T+T], its first T tokens are inputs[b*T ..], its last T the targets
 * (the next token of each input).  Then pos += B*T, so consecutive sequences overlap by one token
 * and every token but the very last is a target once per epoch.
 *
 * Wrap-around.  A batch never straddles the end of the stream: when fewer than B*T+1 tokens remain
 * at pos, pos first goes back to 0.  An epoch is therefore floor((N-1) / (B*T)) batches and the
 * last (N-1) mod (B*T) targets of the stream are not seen.  Evaluation over a whole split starts
 * at position 0 and runs exactly that many batches.
 *
 * Too small a split.  When N < B*T+1 the batch cannot be a slice; loader_next_batch then reads
 * the stream circularly (token i of the batch is stream[(pos+i) mod N]) so it still returns
 * valid, deterministic data, but tokens repeat inside the batch.  Callers that want to refuse such
 * a run call loader_check_batch first, which fails with a clear message.
 *
 * Resuming.  loader_position is all the state there is: a run that saves it and later calls
 * loader_seek with it (same shards, same B and T) sees exactly the same batches. */
#ifndef LOQT_LOADER_H
#define LOQT_LOADER_H

#include <stdint.h>

typedef struct {
    uint16_t *tokens;    /* the whole split, MEM_DATA */
    uint64_t n_tokens;
    uint64_t pos;        /* next batch starts here (always < n_tokens) */
    uint32_t vocab_size; /* from the shard headers (all shards must agree) */
    int n_shards;
    uint64_t max_shard;  /* tokens of the largest shard: the one buffer held beside the stream while loading */
} data_loader;

/* Opens DIR/<split>_NNN.bin (NNN = 000, 001, ... with no gaps; any number of digits).
 * 0, or -1 with an error naming the file (no shards, a gap, a corrupt shard, vocab sizes that
 * differ between shards, fewer than 2 tokens in all). */
int loader_open(data_loader *L, const char *dir, const char *split);
void loader_close(data_loader *L);

uint64_t loader_tokens(const data_loader *L);
uint64_t loader_max_shard(const data_loader *L);
uint32_t loader_vocab_size(const data_loader *L);

/* 0 if B*T+1 tokens fit in the split, else -1 with an error saying how many tokens there are. */
int loader_check_batch(const data_loader *L, int B, int T);

/* Fills inputs[B*T] and targets[B*T] (see the top of this file).  B <= 0 or T <= 0: no-op. */
void loader_next_batch(data_loader *L, int B, int T, int32_t *inputs, int32_t *targets);

/* Moves past the batch loader_next_batch would return, without reading it (data-parallel ranks
 * skip the other ranks' micro-batches of a global batch). */
void loader_skip_batch(data_loader *L, int B, int T);

/* n sequences of T tokens spread evenly over the split (the first at its start, the last at its
 * end), for calibration: they do not move the batch position.  n * T must fit in the split:
 * -1 with an error naming --calibration-sequences otherwise. */
int loader_sample_sequences(const data_loader *L, int n, int T, int32_t *out);

uint64_t loader_position(const data_loader *L);
/* pos is taken modulo the token count, so any saved value lands inside the stream. */
void loader_seek(data_loader *L, uint64_t pos);

#endif
