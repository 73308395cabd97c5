/* 8-bit Adam (bitsandbytes-style blockwise dynamic quantization of both moments).
 *
 * A tensor of n >= ADAM8BIT_MIN_N elements keeps its moments as one byte per element: an index
 * into a 256-entry "dynamic" map (exponent + linear fraction, values in [-1, 1] for m and [0, 1]
 * for v), times one fp32 absmax per block of ADAM8BIT_BLOCK elements.  Smaller tensors (norms,
 * small biases) keep fp32 moments and take exactly the AdamW path.
 *
 * State layout: s->q is one mem_alloc(MEM_OPTIM) blob of adam8bit_state_bytes(n) bytes,
 *   float absmax_m[nb]; float absmax_v[nb]; uint8 code_m[n]; uint8 code_v[n];   nb = ceil(n/256)
 * (absmax first so both float arrays stay aligned).  An all-zero blob means m = v = 0, so
 * optim_state_reset's memset is a valid reset.  Checkpoints store the four arrays as
 * "<prefix>.exp_avg.absmax" (F32 [nb]), "<prefix>.exp_avg.code" (U8 [n]) and the same under
 * "<prefix>.exp_avg_sq". */
#ifndef LOQT_ADAM8BIT_H
#define LOQT_ADAM8BIT_H

#include "optim/optim.h"

#include <stddef.h>
#include <stdint.h>

#define ADAM8BIT_BLOCK 256
#define ADAM8BIT_MIN_N 4096

/* The dynamic map (bitsandbytes create_dynamic_map, 7 exponent bits): 256 distinct ascending
 * values.  Signed (first moment): 127 negative, 0, 127 positive and 1.0 (so the most negative
 * value is -0.99296875, not -1, as in bitsandbytes).  Unsigned (second moment): 0, 254 positive,
 * 1.0.  Built once; the pointer stays valid for the life of the process. */
const float *adam8bit_map(int is_signed);

/* Index of the map entry nearest to x (binary search; a tie goes to the lower entry; values
 * outside the map's range go to its ends; NaN gives 0). */
uint8_t adam8bit_nearest(const float *map, float x);

/* Blockwise quantization of x[0..n): absmax[b] = max |x| over block b (ceil(n/256) blocks),
 * codes[i] = nearest(map, x[i] / absmax[b]); a block of zeros gets absmax 0.  OpenMP over blocks. */
void adam8bit_quantize(const float *map, const float *x, size_t n, uint8_t *codes, float *absmax);
/* x[i] = map[codes[i]] * absmax[i / 256]. */
void adam8bit_dequantize(const float *map, const uint8_t *codes, const float *absmax, size_t n,
                         float *x);

/* Bytes of 8-bit state for n elements: 2 n + 8 ceil(n / 256); 0 when n < ADAM8BIT_MIN_N. */
size_t adam8bit_state_bytes(size_t n);
/* 1 if this state keeps 8-bit moments (kind adam8bit and n >= ADAM8BIT_MIN_N). */
int adam8bit_is_quantized(const optim_state *s);

/* One step: dequantize m, v of each block, m = b1 m + (1-b1) g', v = b2 v + (1-b2) g'^2 with
 * g' = grad_scale g, the AdamW parameter update from these fp32 values, then requantize m, v with
 * fresh block absmax.  Small tensors: the AdamW update.  Called by optim_update. */
void adam8bit_update(optim_state *s, float *w, const float *g, const optim_hparams *h);

/* The update of elements [e0, e1) (optim_update_range): w and g point at element e0; e0 a
 * multiple of ADAM8BIT_BLOCK, e1 too unless it is n.  0, or -1 with an error. */
int adam8bit_update_range(optim_state *s, float *w, const float *g, size_t e0, size_t e1,
                          const optim_hparams *h);

/* The moments as fp32 (0 when the 8-bit state does not exist), and back (re-quantized). */
int adam8bit_get_moments(const optim_state *s, float *m, float *v);
void adam8bit_set_moments(optim_state *s, const float *m, const float *v);

/* Checkpoint tensors of the 8-bit state (nothing if none has been allocated yet). */
void adam8bit_state_save(const optim_state *s, st_writer *w, const char *prefix);
/* Loads them if present (0 if absent); -1 with an error if they are present but this state is not
 * 8-bit (other optimizer or size) or they do not match n. */
int adam8bit_state_load(optim_state *s, const st_file *f, const char *prefix);

#endif
