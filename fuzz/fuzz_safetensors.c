/* libFuzzer target for the safetensors reader (built and run by scripts/fuzz.sh).
 *
 * The input is a whole file, parsed in memory with st_open_memory (the same checks as st_open
 * without a temporary file per input).  For accepted inputs it re-checks, independently, what the
 * reader promises (each tensor's bytes = elements * dtype size, tensors tile the data buffer in
 * offset order) and reads every tensor through st_read_f32 / st_read_raw, so ASan sees every
 * byte the reader claims is valid. */
#include "core/error.h"
#include "io/safetensors.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    st_file f;
    loqt_clear_error();
    if (st_open_memory(&f, "fuzz.safetensors", data, size) != 0) {
        const char *e = loqt_last_error();
        if (!strstr(e, "fuzz.safetensors") || strchr(e, '\n')) {
            fprintf(stderr, "bad error message: %s\n", e);
            abort();
        }
        return 0;
    }
    size_t pos = 0;
    for (int i = 0; i < f.n_tensors; i++) {
        const st_tensor *t = &f.tensors[i];
        uint64_t n = 1;
        for (int d = 0; d < t->ndim; d++) n *= (uint64_t)t->shape[d];
        if (t->offset != pos || n * st_dtype_size(t->dtype) != t->nbytes) abort();
        if ((const uint8_t *)st_data(&f, t) + t->nbytes > data + size) abort();
        pos += t->nbytes;
        if (st_find(&f, t->name) != t) abort(); /* names are unique */
        void *dst = malloc(n * 4 + t->nbytes + 1);
        int rc = (t->dtype == ST_F32 || t->dtype == ST_F16 || t->dtype == ST_BF16)
                     ? st_read_f32(&f, t->name, dst, t->ndim, t->shape)
                     : st_read_raw(&f, t->name, dst, t->dtype, t->ndim, t->shape);
        if (rc != 0) abort();
        free(dst);
    }
    if (pos != f.data_size) abort();
    for (int i = 0; i < f.n_meta; i++)
        if (!st_meta(&f, f.meta_keys[i])) abort();
    st_close(&f);
    return 0;
}
