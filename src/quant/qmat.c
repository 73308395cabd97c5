#include "quant/qmat.h"

#include "core/error.h"
#include "core/rng.h"

#include <stdio.h>
#include <string.h>

const char *qmat_kind_name(qmat_kind k) {
    return k == QMAT_NF4 ? "nf4" : k == QMAT_BF16 ? "bf16" : k == QMAT_INT8 ? "int8" : k == QMAT_INT4 ? "int4" : "fp32";
}

int qmat_init(qmat *m, qmat_kind kind, int rows, int cols, bool double_quant, mem_cat cat) {
    memset(m, 0, sizeof *m);
    m->kind = kind;
    m->rows = rows;
    m->cols = cols;
    m->cat = cat;
    size_t n = (size_t)rows * cols;
    switch (kind) {
    case QMAT_F32: m->f32 = mem_alloc(cat, n * sizeof(float)); return 0;
    case QMAT_BF16: m->bf16 = mem_alloc(cat, n * sizeof(uint16_t)); return 0;
    case QMAT_NF4: return nf4_init(&m->nf4, n, double_quant);
    case QMAT_INT8: return qasym_init(&m->qa, n, 8, QASYM_GROUP);
    case QMAT_INT4: return qasym_init(&m->qa, n, 4, QASYM_GROUP);
    }
    return loqt_set_error("unknown matrix storage kind");
}

static int qint_bits(qmat_kind kind) { return kind == QMAT_INT8 ? 8 : 4; }

static void qasym_plan(mem_sim *s, qmat_kind kind, size_t n, int sign) {
    const size_t codes = qasym_data_bytes(n, qint_bits(kind)), ng = qasym_groups(n, QASYM_GROUP);
    if (sign > 0) {
        mem_sim_alloc(s, MEM_QWEIGHTS, codes);
        mem_sim_alloc(s, MEM_QSTATE, ng * sizeof(float));
        mem_sim_alloc(s, MEM_QSTATE, ng);
    } else {
        mem_sim_free(s, MEM_QWEIGHTS, codes);
        mem_sim_free(s, MEM_QSTATE, ng * sizeof(float));
        mem_sim_free(s, MEM_QSTATE, ng);
    }
}

int qmat_row_unit(qmat_kind kind, int cols) {
    if (kind != QMAT_INT8 && kind != QMAT_INT4) return 1;
    /* rows * cols must be a multiple of the group: rows a multiple of group / gcd(cols, group) */
    int a = cols > 0 ? cols : 1, b = QASYM_GROUP;
    while (b) {
        int t = a % b;
        a = b;
        b = t;
    }
    return QASYM_GROUP / a;
}

void qmat_plan_init(mem_sim *s, qmat_kind kind, size_t n, bool dq, mem_cat cat) {
    switch (kind) {
    case QMAT_F32: mem_sim_alloc(s, cat, n * sizeof(float)); break;
    case QMAT_BF16: mem_sim_alloc(s, cat, n * sizeof(uint16_t)); break;
    case QMAT_NF4: nf4_plan_init(s, n, dq); break;
    case QMAT_INT8:
    case QMAT_INT4: qasym_plan(s, kind, n, 1); break;
    }
}

void qmat_plan_free(mem_sim *s, qmat_kind kind, size_t n, bool dq, mem_cat cat) {
    switch (kind) {
    case QMAT_F32: mem_sim_free(s, cat, n * sizeof(float)); break;
    case QMAT_BF16: mem_sim_free(s, cat, n * sizeof(uint16_t)); break;
    case QMAT_NF4:
        mem_sim_free(s, MEM_QWEIGHTS, nf4_packed_bytes(n));
        mem_sim_free(s, MEM_QSTATE, nf4_state_bytes(n, dq));
        break;
    case QMAT_INT8:
    case QMAT_INT4: qasym_plan(s, kind, n, -1); break;
    }
}

void qmat_plan_set(mem_sim *s, qmat_kind kind, size_t n, bool dq) {
    if (kind == QMAT_NF4) nf4_plan_quantize(s, n, dq);
}

void qmat_free(qmat *m) {
    mem_free(m->f32);
    mem_free(m->bf16);
    if (m->kind == QMAT_NF4) nf4_free(&m->nf4);
    if (m->kind == QMAT_INT8 || m->kind == QMAT_INT4) qasym_free(&m->qa);
    memset(m, 0, sizeof *m);
}

int qmat_set(qmat *m, const float *x) {
    long n = (long)m->rows * m->cols;
    switch (m->kind) {
    case QMAT_F32: memcpy(m->f32, x, (size_t)n * sizeof(float)); return 0;
    case QMAT_BF16:
#pragma omp parallel for schedule(static) if (n > 65536)
        for (long i = 0; i < n; i++) m->bf16[i] = f32_to_bf16(x[i]);
        return 0;
    case QMAT_NF4: return nf4_quantize(&m->nf4, x);
    case QMAT_INT8:
    case QMAT_INT4: return qasym_quantize(&m->qa, x);
    }
    return -1;
}

/* rows [r0, r1) of an INT8 / INT4 matrix from x; key NULL rounds to nearest */
static int qint_set_rows(qmat *m, int r0, int r1, const float *x, const sround_key *key) {
    const int unit = qmat_row_unit(m->kind, m->cols);
    if (r0 % unit || (r1 % unit && r1 != m->rows))
        return loqt_set_error("qmat: rows [%d, %d) of a %s matrix do not hold whole groups (rows come in %d)", r0,
                              r1, qmat_kind_name(m->kind), unit);
    return qasym_quantize_range(&m->qa, (size_t)r0 * m->cols, (size_t)r1 * m->cols, x, key);
}

int qmat_set_rows(qmat *m, int r0, int r1, const float *x) {
    const size_t e0 = (size_t)r0 * m->cols, e1 = (size_t)r1 * m->cols;
    switch (m->kind) {
    case QMAT_F32: memcpy(m->f32 + e0, x, (e1 - e0) * sizeof(float)); return 0;
    case QMAT_BF16:
        for (size_t i = e0; i < e1; i++) m->bf16[i] = f32_to_bf16(x[i - e0]);
        return 0;
    case QMAT_INT8:
    case QMAT_INT4: return qint_set_rows(m, r0, r1, x, NULL);
    case QMAT_NF4: break;
    }
    return loqt_set_error("qmat: row updates of an nf4 matrix are not supported");
}

int qmat_set_rows_stochastic(qmat *m, int r0, int r1, const float *x, uint64_t seed,
                              uint64_t stream) {
    const size_t e0 = (size_t)r0 * m->cols, e1 = (size_t)r1 * m->cols;
    if (m->kind == QMAT_F32) {
        memcpy(m->f32 + e0, x, (e1 - e0) * sizeof(float));
        return 0;
    }
    if (m->kind == QMAT_INT8 || m->kind == QMAT_INT4) {
        const sround_key key = {seed, stream, 0};
        return qint_set_rows(m, r0, r1, x, &key);
    }
    if (m->kind != QMAT_BF16) return loqt_set_error("qmat: row updates need fp32, bf16 or int storage");
    const long n = (long)(e1 - e0);
#pragma omp parallel for schedule(static) if (n > 65536)
    for (long i = 0; i < n; i++) {
        uint32_t u;
        memcpy(&u, &x[i], 4);
        if ((u & 0x7f800000u) == 0x7f800000u) { /* inf / nan: no dithering */
            m->bf16[e0 + i] = f32_to_bf16(x[i]);
            continue;
        }
        /* add 16 random bits below the kept mantissa, then truncate: rounds up with probability
         * equal to the dropped fraction, so E[bf16] = x; the key is the element's index in the
         * whole matrix, so a row range rounds as the whole matrix would */
        u += (uint32_t)(rng_u64(seed, stream, (uint64_t)(e0 + i)) & 0xffffu);
        m->bf16[e0 + i] = (uint16_t)(u >> 16);
    }
    return 0;
}

int qmat_set_stochastic(qmat *m, const float *x, uint64_t seed, uint64_t stream) {
    if (m->kind != QMAT_BF16) return qmat_set(m, x);
    return qmat_set_rows_stochastic(m, 0, m->rows, x, seed, stream);
}

void qmat_get_rows(const qmat *m, int r0, int r1, float *y) {
    size_t e0 = (size_t)r0 * m->cols, e1 = (size_t)r1 * m->cols;
    switch (m->kind) {
    case QMAT_F32: memcpy(y, m->f32 + e0, (e1 - e0) * sizeof(float)); break;
    case QMAT_BF16: {
        const uint16_t *s = m->bf16 + e0;
        long n = (long)(e1 - e0);
#pragma omp parallel for schedule(static) if (n > 65536)
        for (long i = 0; i < n; i++) y[i] = bf16_to_f32(s[i]);
        break;
    }
    case QMAT_NF4: nf4_dequantize_range(&m->nf4, e0, e1, y); break;
    case QMAT_INT8:
    case QMAT_INT4: qasym_dequantize_range(&m->qa, e0, e1, y); break;
    }
}

void qmat_get(const qmat *m, float *y) { qmat_get_rows(m, 0, m->rows, y); }

void qmat_mem_bytes(const qmat *m, size_t bytes[MEM_NCAT]) {
    switch (m->kind) {
    case QMAT_F32: bytes[m->cat] += mem_size(m->f32); break;
    case QMAT_BF16: bytes[m->cat] += mem_size(m->bf16); break;
    case QMAT_NF4:
        bytes[MEM_QWEIGHTS] += mem_size(m->nf4.codes); /* as nf4_init accounts them */
        bytes[MEM_QSTATE] += mem_size(m->nf4.absmax) + mem_size(m->nf4.qabsmax) + mem_size(m->nf4.dq_scale);
        break;
    case QMAT_INT8:
    case QMAT_INT4:
        bytes[MEM_QWEIGHTS] += mem_size(m->qa.data);
        bytes[MEM_QSTATE] += mem_size(m->qa.scale) + mem_size(m->qa.zero);
        break;
    }
}

size_t qmat_bytes(const qmat *m) {
    size_t b[MEM_NCAT] = {0}, t = 0;
    qmat_mem_bytes(m, b);
    for (int i = 0; i < MEM_NCAT; i++) t += b[i];
    return t;
}

void qmat_save(const qmat *m, st_writer *w, const char *name) {
    int64_t shape[2] = {m->rows, m->cols};
    char nm[256];
    switch (m->kind) {
    case QMAT_F32: st_writer_add(w, name, ST_F32, 2, shape, m->f32); break;
    case QMAT_BF16: st_writer_add(w, name, ST_BF16, 2, shape, m->bf16); break;
    case QMAT_NF4: {
        const nf4_tensor *t = &m->nf4;
        int64_t nc = (int64_t)nf4_packed_bytes(t->n), nb = (int64_t)t->nblocks;
        snprintf(nm, sizeof nm, "%s.nf4_codes", name);
        st_writer_add(w, nm, ST_U8, 1, &nc, t->codes);
        if (!t->dq) {
            snprintf(nm, sizeof nm, "%s.nf4_absmax", name);
            st_writer_add(w, nm, ST_F32, 1, &nb, t->absmax);
        } else {
            int64_t ng = (int64_t)((t->nblocks + NF4_DQ_GROUP - 1) / NF4_DQ_GROUP), one = 1;
            snprintf(nm, sizeof nm, "%s.nf4_qabsmax", name);
            st_writer_add(w, nm, ST_I8, 1, &nb, t->qabsmax);
            snprintf(nm, sizeof nm, "%s.nf4_dq_scale", name);
            st_writer_add(w, nm, ST_F32, 1, &ng, t->dq_scale);
            snprintf(nm, sizeof nm, "%s.nf4_dq_offset", name);
            st_writer_add(w, nm, ST_F32, 1, &one, &t->dq_offset);
        }
        break;
    }
    case QMAT_INT8:
    case QMAT_INT4: {
        const qasym_tensor *t = &m->qa;
        int64_t nc = (int64_t)qasym_data_bytes(t->n, t->bits), ng = (int64_t)qasym_groups(t->n, t->group);
        snprintf(nm, sizeof nm, "%s.qasym_codes", name);
        st_writer_add(w, nm, ST_U8, 1, &nc, t->data);
        snprintf(nm, sizeof nm, "%s.qasym_scale", name);
        st_writer_add(w, nm, ST_F32, 1, &ng, t->scale);
        snprintf(nm, sizeof nm, "%s.qasym_zero", name);
        st_writer_add(w, nm, ST_U8, 1, &ng, t->zero);
        break;
    }
    }
}

int qmat_load(qmat *m, const st_file *f, const char *name) {
    int64_t shape[2] = {m->rows, m->cols};
    char nm[256];
    switch (m->kind) {
    case QMAT_F32: return st_read_f32(f, name, m->f32, 2, shape);
    case QMAT_BF16: return st_read_raw(f, name, m->bf16, ST_BF16, 2, shape);
    case QMAT_NF4: {
        nf4_tensor *t = &m->nf4;
        int64_t nc = (int64_t)nf4_packed_bytes(t->n), nb = (int64_t)t->nblocks;
        snprintf(nm, sizeof nm, "%s.nf4_codes", name);
        if (st_read_raw(f, nm, t->codes, ST_U8, 1, &nc)) return -1;
        if (!t->dq) {
            snprintf(nm, sizeof nm, "%s.nf4_absmax", name);
            return st_read_f32(f, nm, t->absmax, 1, &nb);
        }
        int64_t ng = (int64_t)((t->nblocks + NF4_DQ_GROUP - 1) / NF4_DQ_GROUP), one = 1;
        snprintf(nm, sizeof nm, "%s.nf4_qabsmax", name);
        if (st_read_raw(f, nm, t->qabsmax, ST_I8, 1, &nb)) return -1;
        snprintf(nm, sizeof nm, "%s.nf4_dq_scale", name);
        if (st_read_f32(f, nm, t->dq_scale, 1, &ng)) return -1;
        snprintf(nm, sizeof nm, "%s.nf4_dq_offset", name);
        return st_read_f32(f, nm, &t->dq_offset, 1, &one);
    }
    case QMAT_INT8:
    case QMAT_INT4: {
        qasym_tensor *t = &m->qa;
        int64_t nc = (int64_t)qasym_data_bytes(t->n, t->bits), ng = (int64_t)qasym_groups(t->n, t->group);
        snprintf(nm, sizeof nm, "%s.qasym_codes", name);
        if (st_read_raw(f, nm, t->data, ST_U8, 1, &nc)) return -1;
        snprintf(nm, sizeof nm, "%s.qasym_scale", name);
        if (st_read_f32(f, nm, t->scale, 1, &ng)) return -1;
        snprintf(nm, sizeof nm, "%s.qasym_zero", name);
        if (st_read_raw(f, nm, t->zero, ST_U8, 1, &ng)) return -1;
        /* a zero point beyond the code range, or a scale that is not positive and finite, would
         * decode to values no quantizer produced */
        const unsigned zmax = t->bits == 8 ? 255u : 15u;
        for (int64_t g = 0; g < ng; g++)
            if (t->zero[g] > zmax || !(t->scale[g] > 0.0f && t->scale[g] < 3.4e38f))
                return loqt_set_error("%s: group %lld has zero point %u or scale %g out of range", name,
                                      (long long)g, t->zero[g], (double)t->scale[g]);
        return 0;
    }
    }
    return -1;
}

bool qmat_in_file(const st_file *f, qmat_kind kind, const char *name) {
    char nm[256];
    const char *suffix = kind == QMAT_NF4 ? ".nf4_codes" : kind == QMAT_INT8 || kind == QMAT_INT4 ? ".qasym_codes" : "";
    snprintf(nm, sizeof nm, "%s%s", name, suffix);
    return st_find(f, nm) != NULL;
}
