/* Forward/backward pairs of the non-linear pieces of a LLaMA block.  Rows are tokens
 * (n = b*T + t); all buffers are row-major fp32.  Backward functions accumulate parameter
 * gradients (+=) and write (=) input gradients unless stated. */
#ifndef LOQT_OPS_H
#define LOQT_OPS_H

#include <stdint.h>

/* out[n, :] = E[tok[n], :] */
void embedding_forward(float *out, const int32_t *tok, const float *E, int N, int d);
/* dE[tok[n], :] += dout[n, :] */
void embedding_backward(float *dE, const int32_t *tok, const float *dout, int N, int d);

/* y = x * rstd * w with rstd = 1/sqrt(mean(x^2) + eps); saves rstd[N]. */
void rmsnorm_forward(float *y, float *rstd, const float *x, const float *w, int N, int d,
                     float eps);
/* dx = (or += if accumulate) d/dx; dw += sum_n dy * x * rstd.  scratch: threads * d floats. */
void rmsnorm_backward(float *dx, float *dw, const float *dy, const float *x, const float *w,
                      const float *rstd, int N, int d, int accumulate);

/* Rotary embedding with Hugging Face's rotate-half pairing (i, i + hd/2) on x[B*T, H*hd] in place;
 * cos/sin tables are [max_pos, hd/2].  backward applies the inverse rotation to the gradient. */
void rope_tables(float *cos_t, float *sin_t, int max_pos, int head_dim, double theta);
void rope_forward(float *x, const float *cos_t, const float *sin_t, int B, int T, int H, int hd);
void rope_backward(float *dx, const float *cos_t, const float *sin_t, int B, int T, int H, int hd);

/* h = silu(g) * u */
void swiglu_forward(float *h, const float *g, const float *u, long n);
void swiglu_backward(float *dg, float *du, const float *dh, const float *g, const float *u, long n);

/* Causal softmax attention per (batch, head), recomputing probabilities in backward from the saved
 * log-sum-exp so no T x T matrix outlives the call.  q, o: [B*T, H*hd]; k, v: [B*T, Hkv*hd] with
 * grouped-query attention (H a multiple of Hkv; query head h reads key/value head h / (H/Hkv);
 * Hkv = H is ordinary multi-head attention); lse: [B, H, T].  Backward writes dk and dv (summed
 * over each group's query heads).  scratch: attention_scratch_floats(T) floats per thread. */
long attention_scratch_floats(int T);
void attention_forward(float *o, float *lse, const float *q, const float *k, const float *v, int B,
                       int T, int H, int Hkv, int hd, float *scratch);
void attention_backward(float *dq, float *dk, float *dv, const float *dout, const float *o,
                        const float *lse, const float *q, const float *k, const float *v, int B,
                        int T, int H, int Hkv, int hd, float *scratch);

/* Cross-entropy over logits rows [n, V]: loss_sum += sum of -log softmax(logits)[target];
 * if dlogits != NULL, writes (softmax - onehot) * scale into it (may alias logits). */
double softmax_xent(float *dlogits, const float *logits, const int32_t *targets, int n, int V,
                    float scale);

#endif
