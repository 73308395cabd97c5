/* 8-bit Adam is not implemented yet: the state kind exists so options and checkpoints are stable. */
#include "optim/optim.h"

#include "core/error.h"

void adam8bit_update(optim_state *s, float *w, const float *g, const optim_hparams *h) {
    (void)s, (void)w, (void)g, (void)h;
    loqt_die("--optimizer adam8bit is not available in this build yet");
}
