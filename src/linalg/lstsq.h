/* Least squares with a small full-rank factor, for LoQT's error compensation (B = R pinv(P) / s
 * in the "left" case, B = pinv(P) R / s in the "right" case) and QuAILoRA-style r-sized solves.
 *
 * Method: normal equations on the r x r Gram matrix of P, formed in double from the fp32 data
 * (exact products, so the Gram is accurate to double rounding) and inverted through Cholesky in
 * double (linalg_spd_inverse_d).  When P is rank deficient to double precision a ridge lambda I is
 * added (reported through *ridge, 0 when none), which gives the minimum-norm-like solution: the
 * directions P does not span get (almost) zero weight, as with the pseudo-inverse; in that case
 * the factor pinv(P) is formed in double before it meets R, so the 1/ridge-sized entries of the
 * inverse cancel exactly.  Otherwise the products with R run in fp32 gemm.  Squaring the
 * condition number is harmless here: LoQT's P has orthonormal rows (columns) before quantization
 * and cond(P) stays close to 1 after it.  Deterministic and independent of the thread count. */
#ifndef LOQT_LSTSQ_H
#define LOQT_LSTSQ_H

/* X (m x r) minimizing ||X P - R||_F, i.e. X = R pinv(P).  P: r x n, R: m x n, row-major. */
int lstsq_xp(const float *R, int m, int n, const float *P, int r, float *X, double *ridge);

/* X (r x n) minimizing ||P X - R||_F, i.e. X = pinv(P) R.  P: m x r, R: m x n, row-major. */
int lstsq_px(const float *P, int m, int r, const float *R, int n, float *X, double *ridge);

/* Planning twins (core/mem.h mem_sim) of one call on the usual path (P of full rank: no ridge;
 * with a ridge the pseudo-inverse factor replaces Hf and C and is smaller). */
#include "core/mem.h"
void lstsq_xp_plan(mem_sim *s, int m, int n, int r);
void lstsq_px_plan(mem_sim *s, int m, int r, int n);

#endif
