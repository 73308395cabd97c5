/* Full-rank method: exposed for tests that compare its gradient with a reference. */
#ifndef LOQT_DENSE_H
#define LOQT_DENSE_H

#include "methods/linear.h"

extern const linear_method method_dense;
/* dL/dW accumulated since the last zero_grad ([out, in]). */
const float *dense_grad(const linear_layer *L);

#endif
