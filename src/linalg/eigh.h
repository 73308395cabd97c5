/* Symmetric eigendecomposition in double precision.
 *
 * Householder reduction to tridiagonal form, then the implicit QL iteration with Wilkinson-type
 * shifts (the classical tred2 / tql2 pair of algorithms, written here from their description).
 * O(n^3); the O(n^2)-per-step loops run on OpenMP threads but every sum is done by one thread in a
 * fixed order, so the result does not depend on the number of threads. */
#ifndef LOQT_EIGH_H
#define LOQT_EIGH_H

#include <stddef.h>

/* A: n x n symmetric, row-major (only its values are read; it is overwritten).
 * w: n eigenvalues in descending order.  V: n x n, row i = unit eigenvector of w[i] (may be NULL
 * when only eigenvalues are wanted).  Returns 0, or -1 (loqt_set_error) if the iteration does not
 * converge or an entry is not finite. */
int linalg_eigh_d(int n, double *A, double *w, double *V);

/* Bytes of accounted scratch linalg_eigh_d allocates when V is wanted (for the planner). */
size_t linalg_eigh_scratch(int n);

#endif
