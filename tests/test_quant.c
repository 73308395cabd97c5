/* Tests for src/quant: NF4 (code book, decision rule, packing, reference codes from
 * tests/gen_quant_ref.py, SIMD vs portable, threads), symmetric / asymmetric integer formats, the
 * DQT grid, and stochastic rounding (unbiasedness, reproducibility). */
#include "core/error.h"
#include "core/mem.h"
#include "quant/nf4.h"
#include "quant/qint.h"
#include "quant/sround.h"
#include "test.h"

#include <float.h>
#include <stdint.h>

/* ---- NF4 code book and decision rule ---------------------------------------------------- */

/* the code book as published (bitsandbytes), and the decision-tree constants of dQuantizeNF4 */
static const char *CODE_TXT[16] = {
    "-1.0", "-0.6961928009986877", "-0.5250730514526367", "-0.39491748809814453",
    "-0.28444138169288635", "-0.18477343022823334", "-0.09105003625154495", "0.0",
    "0.07958029955625534", "0.16093020141124725", "0.24611230194568634", "0.33791524171829224",
    "0.44070982933044434", "0.5626170039176941", "0.7229568362236023", "1.0"};
static const char *TREE_TXT[15] = {
    "-0.8480964004993439", "-0.6106329262256622", "-0.4599952697753906", "-0.33967943489551544",
    "-0.23460740596055984", "-0.13791173323988914", "-0.045525018125772476", "0.03979014977812767",
    "0.1202552504837513", "0.2035212516784668", "0.2920137718319893", "0.3893125355243683",
    "0.5016634166240692", "0.6427869200706482", "0.8614784181118011"};

static void test_nf4_codebook(void) {
    for (int i = 0; i < 16; i++) {
        double d = strtod(CODE_TXT[i], NULL);
        /* exact: the published decimal is the double value of the fp32 code, digit for digit */
        CHECK((double)nf4_codebook[i] == d, "code %d = %.17g, published %s", i,
              (double)nf4_codebook[i], CODE_TXT[i]);
        if (i) CHECK(nf4_codebook[i] > nf4_codebook[i - 1], "code book not increasing at %d", i);
    }
    CHECK(nf4_codebook[7] == 0.0f && nf4_codebook[0] == -1.0f && nf4_codebook[15] == 1.0f,
          "code book anchors -1, 0, 1");
}

/* bitsandbytes' thresholds are the float64 midpoints of neighbouring fp32 codes, printed and
 * compiled as fp32 literals.  A midpoint of two fp32 values is often exactly halfway between two
 * fp32 values; the printed digits then pick the side, so the threshold is one of the two fp32
 * values nearest the exact midpoint, not necessarily the round-half-even one. */
static void test_nf4_thresholds(void) {
    for (int k = 0; k < 15; k++) {
        double mid = ((double)nf4_codebook[k] + (double)nf4_codebook[k + 1]) / 2.0; /* exact */
        float t = nf4_thresholds[k];
        double ulp = (double)nextafterf(fabsf(t), INFINITY) - (double)fabsf(t);
        CHECK(fabs((double)t - mid) <= 0.5 * ulp, "threshold %d = %.9g is not a nearest fp32 to the "
              "midpoint %.17g (tolerance half an ulp)", k, (double)t, mid);
        /* strtof rounds the decimal once, as a compiler does with a literal */
        CHECK(t == strtof(TREE_TXT[k], NULL), "threshold %d differs from bitsandbytes' constant %s (exact)",
              k, TREE_TXT[k]);
        if (k) CHECK(t > nf4_thresholds[k - 1], "thresholds not increasing at %d", k);
    }
}

/* bitsandbytes' decision tree, restated with its nesting (a second, independent formulation) */
static int tree_code(float x) {
    const float *t = nf4_thresholds;
    if (x > t[7]) {
        if (x > t[11]) {
            if (x > t[13]) return x > t[14] ? 15 : 14;
            return x > t[12] ? 13 : 12;
        }
        if (x > t[9]) return x > t[10] ? 11 : 10;
        return x > t[8] ? 9 : 8;
    }
    if (x > t[3]) {
        if (x > t[5]) return x > t[6] ? 7 : 6;
        return x > t[4] ? 5 : 4;
    }
    if (x > t[1]) return x > t[2] ? 3 : 2;
    return x > t[0] ? 1 : 0;
}

static void test_nf4_midpoints(void) {
    for (int k = 0; k < 15; k++) {
        float t = nf4_thresholds[k];
        /* exactly on the midpoint: the lower code (bitsandbytes compares with >) */
        CHECK(nf4_code(t) == k, "code(mid %d) = %d, want %d", k, nf4_code(t), k);
        CHECK(nf4_code(nextafterf(t, INFINITY)) == k + 1, "code(mid %d + 1 ulp) = %d, want %d", k,
              nf4_code(nextafterf(t, INFINITY)), k + 1);
        CHECK(nf4_code(nextafterf(t, -INFINITY)) == k, "code(mid %d - 1 ulp) = %d, want %d", k,
              nf4_code(nextafterf(t, -INFINITY)), k);
        CHECK(nf4_code(t + 1e-4f) == k + 1 && nf4_code(t - 1e-4f) == k,
              "code(mid %d +- 1e-4) wrong", k);
    }
    for (int i = 0; i < 16; i++)
        CHECK(nf4_code(nf4_codebook[i]) == i, "code of code value %d = %d", i,
              nf4_code(nf4_codebook[i]));
    CHECK(nf4_code(1.5f) == 15 && nf4_code(-7.0f) == 0 && nf4_code(NAN) == 0,
          "out of range: 1.5 -> 15, -7 -> 0, NaN -> 0 (as bitsandbytes)");
    /* against the tree, and nearest-code property away from the (1-ulp) threshold rounding */
    int tree_bad = 0, near_bad = 0;
    for (int i = 0; i < 200000; i++) {
        float v = (float)(test_uniform() * 2.2 - 1.1);
        int c = nf4_code(v);
        if (c != tree_code(v)) tree_bad++;
        float e = fabsf(v - nf4_codebook[c]);
        for (int j = 0; j < 16; j++)
            if (fabsf(v - nf4_codebook[j]) < e - 1e-7f) near_bad++;
    }
    CHECK(tree_bad == 0, "%d values where counting and the decision tree disagree", tree_bad);
    CHECK(near_bad == 0, "%d values not mapped to the nearest code (tolerance 1e-7)", near_bad);
}

static void test_nf4_sizes(void) {
    const size_t ns[5] = {1, 63, 64, 65, (size_t)4096 * 11008};
    const size_t bytes[5] = {1, 32, 32, 33, 22544384};
    const size_t blocks[5] = {1, 1, 1, 2, 704512};
    for (int i = 0; i < 5; i++) {
        CHECK(nf4_packed_bytes(ns[i]) == bytes[i], "packed bytes(%zu) = %zu, want %zu", ns[i],
              nf4_packed_bytes(ns[i]), bytes[i]);
        CHECK(nf4_num_blocks(ns[i]) == blocks[i], "blocks(%zu) = %zu, want %zu", ns[i],
              nf4_num_blocks(ns[i]), blocks[i]);
    }
    CHECK(nf4_state_bytes((size_t)4096 * 11008, false) == 704512u * 4,
          "absmax bytes for 4096x11008: %zu", nf4_state_bytes((size_t)4096 * 11008, false));
    /* double quant: one int8 per block + one fp32 per 256 blocks (2752 groups) */
    CHECK(nf4_state_bytes((size_t)4096 * 11008, true) == 704512u + 2752u * 4,
          "double-quant state bytes for 4096x11008: %zu", nf4_state_bytes((size_t)4096 * 11008, true));
    nf4_tensor t;
    size_t before = mem_current(MEM_QWEIGHTS), sbefore = mem_current(MEM_QSTATE);
    CHECK(nf4_init(&t, 65, false) == 0, "init");
    CHECK(mem_current(MEM_QWEIGHTS) - before == 33 && mem_current(MEM_QSTATE) - sbefore == 8,
          "accounting: codes 33 B in quantized weights, absmax 8 B in quantization state");
    nf4_free(&t);
}

static void test_nf4_pack_order(void) {
    /* absmax 1: element value = code value, so the codes are known */
    float x[7] = {1.0f, -1.0f, nf4_codebook[3], nf4_codebook[12], 0.0f, nf4_codebook[9],
                  nf4_codebook[14]};
    nf4_tensor t;
    CHECK(nf4_init(&t, 7, false) == 0, "init");
    CHECK(nf4_quantize(&t, x) == 0, "quantize: %s", loqt_last_error());
    CHECK(t.codes[0] == 0xF0, "byte 0 = 0x%02x, want 0xF0 (element 0 in the high nibble)", t.codes[0]);
    CHECK(t.codes[1] == 0x3C, "byte 1 = 0x%02x, want 0x3C", t.codes[1]);
    CHECK(t.codes[2] == 0x79, "byte 2 = 0x%02x, want 0x79", t.codes[2]);
    CHECK(t.codes[3] == 0xE0, "byte 3 = 0x%02x, want 0xE0 (odd n: low nibble 0)", t.codes[3]);
    float y[7];
    CHECK(nf4_dequantize(&t, y) == 0, "dequantize");
    CHECK(memcmp(x, y, sizeof x) == 0, "code values round trip exactly when absmax is 1");
    nf4_free(&t);
}

/* |x - deq| <= |a| * (half the gap around its code) with a a block's scale; the largest half gap
 * is (0.6961928 - ... ) -> (1 - 0.6961928) / 2 = 0.1519036 */
static void test_nf4_roundtrip(void) {
    const size_t n = 64 * 200 + 37;
    float *x = malloc(n * sizeof(float)), *y = malloc(n * sizeof(float));
    test_fill_randn(x, n, 0.02f);
    for (size_t b = 0; b < n; b += 640) x[b] *= 30.0f; /* outliers */
    double maxhalf = 0;
    for (int k = 0; k < 15; k++) maxhalf = fmax(maxhalf, (nf4_codebook[k + 1] - nf4_codebook[k]) / 2.0);
    CHECK_CLOSE(maxhalf, 0.15190359950065613, 1e-9, 0);
    for (int dq = 0; dq < 2; dq++) {
        nf4_tensor t;
        CHECK(nf4_init(&t, n, dq) == 0 && nf4_quantize(&t, x) == 0, "quantize (dq %d)", dq);
        CHECK(nf4_dequantize(&t, y) == 0, "dequantize");
        size_t bad = 0, notnearest = 0;
        for (size_t i = 0; i < n; i++) {
            size_t b = i / 64;
            float a = nf4_block_absmax(&t, b);
            /* the true absmax of the block (the double-quant one differs by its rounding) */
            float am = 0;
            for (size_t j = b * 64; j < n && j < b * 64 + 64; j++) am = fmaxf(am, fabsf(x[j]));
            double bound = fabs(a) * maxhalf * (1 + 1e-6) + fabs(am - a) + 1e-12;
            if (fabs((double)x[i] - y[i]) > bound) bad++;
            /* y is the code value nearest to x at this scale (2 ulp slack for the rounding) */
            for (int j = 0; j < 16; j++)
                if (fabsf(x[i] - nf4_codebook[j] * a) < fabsf(x[i] - y[i]) - 2 * FLT_EPSILON * fabsf(a))
                    notnearest++;
        }
        CHECK(bad == 0, "dq %d: %zu elements over the bound |a|*0.1519+|absmax-a|", dq, bad);
        CHECK(notnearest == 0, "dq %d: %zu elements not at the nearest code", dq, notnearest);
        if (dq) {
            /* reconstructed absmax within half a step of the int8 grid */
            size_t off = 0;
            for (size_t b = 0; b < t.nblocks; b++) {
                float am = 0;
                for (size_t j = b * 64; j < n && j < b * 64 + 64; j++) am = fmaxf(am, fabsf(x[j]));
                if (fabsf(nf4_block_absmax(&t, b) - am) > 0.5f * t.dq_scale[b / 256] * 1.0001f + 1e-9f) off++;
            }
            CHECK(off == 0, "%zu reconstructed absmax values off by more than scale/2", off);
        }
        nf4_free(&t);
    }
    free(x);
    free(y);
}

/* ---- reference files ---------------------------------------------------------------------- */


static void expect_bytes(const char *name, const void *have, size_t n) {
    size_t sz = 0;
    unsigned char *want = test_read_ref(&sz, "quant_%s.bin", name);
    if (!want) return;
    CHECK(sz == n, "%s: reference has %zu bytes, expected %zu", name, sz, n);
    if (sz == n) {
        size_t first = n;
        for (size_t i = 0; i < n && first == n; i++)
            if (((const unsigned char *)have)[i] != want[i]) first = i;
        CHECK(first == n, "%s: first differing byte %zu (have 0x%02x, want 0x%02x), exact match required",
              name, first, first < n ? ((const unsigned char *)have)[first] : 0,
              first < n ? want[first] : 0);
    }
    free(want);
}

static void test_reference(void) {
    size_t xb = 0;
    float *x = test_read_ref(&xb, "quant_%s.bin", "x");
    if (!x) return;
    const size_t n = xb / sizeof(float);
    CHECK(n == 300 * 64 + 5, "reference input has %zu elements", n);
    float *y = malloc(n * sizeof(float));
    nf4_tensor t;
    CHECK(nf4_init(&t, n, false) == 0 && nf4_quantize(&t, x) == 0, "nf4 quantize");
    expect_bytes("nf4_codes", t.codes, nf4_packed_bytes(n));
    expect_bytes("nf4_absmax", t.absmax, t.nblocks * 4);
    nf4_dequantize(&t, y);
    expect_bytes("nf4_deq", y, n * 4);
    nf4_free(&t);

    CHECK(nf4_init(&t, n, true) == 0 && nf4_quantize(&t, x) == 0, "nf4 double-quant quantize");
    expect_bytes("nf4dq_offset", &t.dq_offset, 4);
    expect_bytes("nf4dq_qabsmax", t.qabsmax, t.nblocks);
    expect_bytes("nf4dq_scale", t.dq_scale, 2 * 4);
    expect_bytes("nf4dq_codes", t.codes, nf4_packed_bytes(n));
    nf4_dequantize(&t, y);
    expect_bytes("nf4dq_deq", y, n * 4);
    nf4_free(&t);

    for (int bits = 8; bits >= 4; bits -= 4) {
        char nm[32];
        qsym_tensor s;
        CHECK(qsym_init(&s, n, bits, 64) == 0 && qsym_quantize(&s, x) == 0, "qsym%d", bits);
        snprintf(nm, sizeof nm, "sym%d_data", bits);
        expect_bytes(nm, s.data, qsym_data_bytes(n, bits));
        snprintf(nm, sizeof nm, "sym%d_scale", bits);
        expect_bytes(nm, s.scale, (n + 63) / 64 * 4);
        qsym_free(&s);

        const size_t na = 75 * 256;
        qasym_tensor a;
        CHECK(qasym_init(&a, na, bits, 256) == 0 && qasym_quantize(&a, x) == 0, "qasym%d", bits);
        snprintf(nm, sizeof nm, "asym%d_data", bits);
        expect_bytes(nm, a.data, qasym_data_bytes(na, bits));
        snprintf(nm, sizeof nm, "asym%d_scale", bits);
        expect_bytes(nm, a.scale, 75 * 4);
        snprintf(nm, sizeof nm, "asym%d_zero", bits);
        expect_bytes(nm, a.zero, 75);
        qasym_free(&a);
    }
    free(x);
    free(y);
}

/* ---- dequantization paths and threads ----------------------------------------------------- */

static void test_nf4_paths(void) {
    const size_t rows = 97, cols = 1001; /* odd: rows start mid-block and mid-byte */
    const size_t n = rows * cols;
    float *x = malloc(n * 4), *a = malloc(n * 4), *b = malloc(n * 4), *c = malloc(n * 4);
    test_fill_randn(x, n, 0.05f);
    for (int dq = 0; dq < 2; dq++) {
        nf4_tensor t;
        CHECK(nf4_init(&t, n, dq) == 0 && nf4_quantize(&t, x) == 0, "quantize");
        CHECK(nf4_dequantize_range_path(&t, 0, n, a, NF4_PATH_PORTABLE) == 0, "portable");
        if (nf4_have_avx512()) {
            CHECK(nf4_dequantize_range_path(&t, 0, n, b, NF4_PATH_AVX512) == 0, "avx512");
            CHECK(memcmp(a, b, n * 4) == 0, "dq %d: AVX-512 and portable differ (bit-exact required)", dq);
            int diff = 0;
            for (int k = 0; k < 200; k++) {
                size_t e0 = (size_t)(test_uniform() * n), e1 = e0 + (size_t)(test_uniform() * (n - e0));
                nf4_dequantize_range_path(&t, e0, e1, b, NF4_PATH_AVX512);
                if (memcmp(a + e0, b, (e1 - e0) * 4)) diff++;
            }
            CHECK(diff == 0, "dq %d: %d random ranges differ from the whole-tensor dequantization", dq, diff);
        } else {
            printf("    (no AVX-512 on this CPU or build: portable path only)\n");
        }
        int diff = 0;
        for (size_t r0 = 0; r0 < rows; r0 += 13) {
            size_t r1 = r0 + 7 < rows ? r0 + 7 : rows;
            CHECK(nf4_dequantize_rows(&t, cols, r0, r1, c) == 0, "rows");
            if (memcmp(a + r0 * cols, c, (r1 - r0) * cols * 4)) diff++;
        }
        CHECK(diff == 0, "dq %d: %d row blocks differ from the whole-tensor dequantization", dq, diff);
        nf4_free(&t);
    }
    free(x);
    free(a);
    free(b);
    free(c);
}

static void test_nf4_threads(void) {
    const size_t n = 300000 + 17;
    float *x = malloc(n * 4);
    test_fill_randn(x, n, 1.0f);
    for (int dq = 0; dq < 2; dq++) {
        nf4_tensor t1, t2;
        nf4_init(&t1, n, dq);
        nf4_init(&t2, n, dq);
        test_set_omp_threads(1);
        nf4_quantize(&t1, x);
        test_set_omp_threads(2);
        nf4_quantize(&t2, x);
        CHECK(memcmp(t1.codes, t2.codes, nf4_packed_bytes(n)) == 0, "dq %d: codes depend on threads", dq);
        CHECK(dq ? memcmp(t1.qabsmax, t2.qabsmax, t1.nblocks) == 0 && t1.dq_offset == t2.dq_offset
                 : memcmp(t1.absmax, t2.absmax, t1.nblocks * 4) == 0,
              "dq %d: scales depend on threads", dq);
        nf4_free(&t1);
        nf4_free(&t2);
    }
    free(x);
}

static void test_bad_input(void) {
    nf4_tensor t;
    CHECK(nf4_init(&t, 0, false) == -1, "empty tensor rejected");
    float x[70] = {0};
    x[66] = NAN;
    CHECK(nf4_init(&t, 70, false) == 0, "init");
    loqt_clear_error();
    CHECK(nf4_quantize(&t, x) == -1 && strstr(loqt_last_error(), "non-finite"),
          "NaN input rejected with a message: '%s'", loqt_last_error());
    x[66] = INFINITY;
    CHECK(nf4_quantize(&t, x) == -1, "inf input rejected");
    x[66] = 0;
    float y[70];
    CHECK(nf4_quantize(&t, x) == 0, "all-zero tensor fine");
    CHECK(nf4_dequantize(&t, y) == 0 && y[5] == 0.0f && t.codes[0] == 0x77, "zeros -> code 7 -> 0");
    CHECK(nf4_dequantize_range(&t, 10, 71, y) == -1, "range past the end rejected");
    CHECK(nf4_dequantize_rows(&t, 3, 0, 1, y) == -1, "columns not dividing n rejected");
    CHECK(nf4_dequantize_rows(&t, 7, 0, 11, y) == -1, "rows past the end rejected");
    nf4_free(&t);
    qsym_tensor s;
    qasym_tensor a;
    qgrid_tensor g;
    CHECK(qsym_init(&s, 10, 5, 64) == -1 && qsym_init(&s, 10, 4, 63) == -1, "bad qsym args");
    CHECK(qasym_init(&a, 10, 6, 256) == -1, "bad qasym bits");
    CHECK(qgrid_init(&g, 10, 9, false) == -1 && qgrid_init(&g, 10, 1, false) == -1, "bad qgrid bits");
    CHECK(qsym_init(&s, 70, 8, 64) == 0, "init");
    x[3] = NAN;
    CHECK(qsym_quantize(&s, x) == -1, "qsym NaN rejected");
    qsym_free(&s);
}

/* ---- integer formats ---------------------------------------------------------------------- */

static void test_qsym_roundtrip(void) {
    const size_t n = 5000 + 3;
    float *x = malloc(n * 4), *y = malloc(n * 4);
    test_fill_randn(x, n, 0.1f);
    for (int bits = 8; bits >= 4; bits -= 4) {
        qsym_tensor t;
        CHECK(qsym_init(&t, n, bits, 128) == 0 && qsym_quantize(&t, x) == 0, "quantize");
        qsym_dequantize(&t, y);
        size_t bad = 0;
        for (size_t i = 0; i < n; i++) {
            float s = t.scale[i / 128];
            if (fabsf(x[i] - y[i]) > 0.5f * s * (1 + 1e-6f)) bad++;
            int q = qsym_value(&t, i);
            if (q < -(bits == 8 ? 127 : 7) || q > (bits == 8 ? 127 : 7)) bad++;
        }
        CHECK(bad == 0, "int%d: %zu elements with |x - deq| > scale/2 or code out of range", bits, bad);
        qsym_free(&t);
    }
    free(x);
    free(y);
}

static void test_qasym_roundtrip(void) {
    const size_t n = 4 * 256 + 100;
    float *x = malloc(n * 4), *y = malloc(n * 4);
    test_fill_randn(x, n, 0.1f);
    /* group 1 one-signed in [1, 2]: the reference's plain min/max would saturate it */
    for (size_t i = 256; i < 512; i++) x[i] = 1.0f + (float)test_uniform();
    for (int bits = 8; bits >= 4; bits -= 4) {
        qasym_tensor t;
        CHECK(qasym_init(&t, n, bits, 256) == 0 && qasym_quantize(&t, x) == 0, "quantize");
        qasym_dequantize(&t, y);
        size_t bad = 0;
        for (size_t i = 0; i < n; i++)
            if (fabsf(x[i] - y[i]) > 0.5f * t.scale[i / 256] * (1 + 1e-5f) + 1e-6f * fabsf(x[i])) bad++;
        CHECK(bad == 0, "asym int%d: %zu elements with |x - deq| > scale/2", bits, bad);
        qasym_free(&t);
    }
    free(x);
    free(y);
}

static void test_qgrid(void) {
    const size_t n = 13;
    float x[13], y[13];
    for (int bits = 2; bits <= 8; bits++) {
        qgrid_tensor g;
        CHECK(qgrid_init(&g, n, bits, false) == 0, "init %d", bits);
        CHECK(qgrid_data_bytes(n, bits) == (n * bits + 7) / 8, "bytes");
        qgrid_set_delta(&g, 1.0f);
        for (size_t i = 0; i < n; i++) x[i] = (float)(g.qmin + (int)((i * 7) % (size_t)(g.qmax - g.qmin + 1)));
        CHECK(qgrid_quantize(&g, x) == 0, "quantize");
        qgrid_dequantize(&g, y);
        CHECK(memcmp(x, y, sizeof x) == 0, "%d-bit integers round trip exactly", bits);
        if (bits == 3) /* LSB-first: element 0 in bits 0..2, element 1 in bits 3..5 of byte 0 */
            CHECK(g.data[0] == (uint8_t)((x[0] - g.qmin) + ((int)(x[1] - g.qmin) << 3) +
                                         (((int)(x[2] - g.qmin) & 3) << 6)),
                  "3-bit packing order: byte 0 = 0x%02x", g.data[0]);
        x[0] = 1000.0f; /* clamps */
        qgrid_quantize(&g, x);
        CHECK(qgrid_value(&g, 0) == g.qmax, "clamp to qmax");
        qgrid_free(&g);
    }
    qgrid_tensor g;
    CHECK(qgrid_init(&g, 4, 8, true) == 0 && g.qmin == -1 && g.qmax == 1 && g.bits == 2, "ternary");
    float w[4] = {0.5f, -2.0f, 0.1f, 1.4f};
    float d = qgrid_absmean_delta(w, 4, 8, true);
    CHECK_CLOSE(d, 1.0, 1e-7, 0); /* mean |w| = 1, Qp = 1 */
    CHECK_CLOSE(qgrid_absmean_delta(w, 4, 4, false), 1.0 / 7.0, 1e-7, 0);
    qgrid_set_delta(&g, d);
    qgrid_quantize(&g, w);
    CHECK(qgrid_value(&g, 0) == 0 && qgrid_value(&g, 1) == -1 && qgrid_value(&g, 2) == 0 &&
              qgrid_value(&g, 3) == 1,
          "ternary codes 0 -1 0 1 (round half even, clamp)");
    qgrid_free(&g);
}

/* ---- stochastic rounding ------------------------------------------------------------------ */

static void test_sround_unbiased(void) {
    const size_t N = 200000;
    const float vals[6] = {0.3f, -1.7f, 2.5f, 1e-3f, -0.999f, 7.0f};
    float *x = malloc(N * 4), *y = malloc(N * 4);
    for (int v = 0; v < 6; v++) {
        for (size_t i = 0; i < N; i++) x[i] = vals[v];
        sround_key k = {42, (uint64_t)v, 0};
        sround_array(x, y, N, 1.0f, &k);
        double mean = 0;
        int offgrid = 0;
        for (size_t i = 0; i < N; i++) {
            mean += y[i];
            if (y[i] != floorf(vals[v]) && y[i] != floorf(vals[v]) + 1) offgrid++;
        }
        mean /= N;
        double f = vals[v] - floor(vals[v]);
        double se = sqrt(f * (1 - f) / N);
        CHECK(fabs(mean - vals[v]) <= 5 * se + 1e-7, "SR(%g): mean %.7f, 5 sigma = %.2g", (double)vals[v],
              mean, 5 * se);
        CHECK(offgrid == 0, "SR(%g) gave values other than floor and floor+1", (double)vals[v]);
    }
    /* through the quantizers: scale 0.01 (block max 1.27), value 0.1234 -> 12.34 steps */
    const size_t B = 64, nb = 2000, n = B * nb;
    float *xq = malloc(n * 4), *yq = malloc(n * 4);
    for (size_t i = 0; i < n; i++) xq[i] = (i % B == 0) ? 1.27f : 0.1234f;
    qsym_tensor t;
    qsym_init(&t, n, 8, B);
    sround_key k = {7, 1, 0};
    CHECK(qsym_quantize_sr(&t, xq, &k) == 0, "qsym sr");
    qsym_dequantize(&t, yq);
    double mean = 0, cnt = 0;
    for (size_t i = 0; i < n; i++)
        if (i % B) mean += yq[i], cnt++;
    mean /= cnt;
    double s = 1.27 / 127, f = 0.1234 / s - floor(0.1234 / s);
    double se = s * sqrt(f * (1 - f) / cnt);
    CHECK(fabs(mean - 0.1234) <= 5 * se + 1e-7, "qsym8 SR mean %.7f vs 0.1234, 5 sigma %.2g", mean, 5 * se);
    qsym_free(&t);
    /* the DQT grid, 4-bit, delta 0.25: 0.1 -> 0.4 steps */
    qgrid_tensor g;
    qgrid_init(&g, n, 4, false);
    qgrid_set_delta(&g, 0.25f);
    for (size_t i = 0; i < n; i++) xq[i] = 0.1f;
    CHECK(qgrid_quantize_sr(&g, xq, &k) == 0, "qgrid sr");
    qgrid_dequantize(&g, yq);
    mean = 0;
    for (size_t i = 0; i < n; i++) mean += yq[i];
    mean /= n;
    se = 0.25 * sqrt(0.4 * 0.6 / n);
    CHECK(fabs(mean - 0.1) <= 5 * se, "qgrid SR mean %.7f vs 0.1, 5 sigma %.2g", mean, 5 * se);
    qgrid_free(&g);
    free(x);
    free(y);
    free(xq);
    free(yq);
}

static void test_sround_threads(void) {
    const size_t n = 200000 + 9;
    float *x = malloc(n * 4), *y1 = malloc(n * 4), *y2 = malloc(n * 4);
    test_fill_randn(x, n, 1.0f);
    sround_key k = {123, 5, 1000};
    qsym_tensor s1, s2;
    qasym_tensor a1, a2;
    qgrid_tensor g1, g2;
    qsym_init(&s1, n, 8, 64), qsym_init(&s2, n, 8, 64);
    qasym_init(&a1, n, 8, 256), qasym_init(&a2, n, 8, 256);
    qgrid_init(&g1, n, 5, false), qgrid_init(&g2, n, 5, false);
    qgrid_set_delta(&g1, 0.1f), qgrid_set_delta(&g2, 0.1f);
    test_set_omp_threads(1);
    sround_array(x, y1, n, 10.0f, &k);
    qsym_quantize_sr(&s1, x, &k), qasym_quantize_sr(&a1, x, &k), qgrid_quantize_sr(&g1, x, &k);
    test_set_omp_threads(2);
    sround_array(x, y2, n, 10.0f, &k);
    qsym_quantize_sr(&s2, x, &k), qasym_quantize_sr(&a2, x, &k), qgrid_quantize_sr(&g2, x, &k);
    CHECK(memcmp(y1, y2, n * 4) == 0, "sround_array depends on the thread count");
    CHECK(memcmp(s1.data, s2.data, n) == 0, "qsym SR depends on the thread count");
    CHECK(memcmp(a1.data, a2.data, n) == 0, "qasym SR depends on the thread count");
    CHECK(memcmp(g1.data, g2.data, qgrid_data_bytes(n, 5)) == 0, "qgrid SR depends on the thread count");
    /* a slice with offset = its first global index draws the same numbers as the whole */
    sround_key ks = {123, 5, 1000 + 777};
    sround_array(x + 777, y2, 5000, 10.0f, &ks);
    CHECK(memcmp(y1 + 777, y2, 5000 * 4) == 0, "slice with offset differs from the whole");
    /* another seed gives other roundings */
    sround_key k2 = {124, 5, 1000};
    sround_array(x, y2, n, 10.0f, &k2);
    CHECK(memcmp(y1, y2, n * 4) != 0, "seed has no effect");
    qsym_free(&s1), qsym_free(&s2), qasym_free(&a1), qasym_free(&a2), qgrid_free(&g1), qgrid_free(&g2);
    free(x);
    free(y1);
    free(y2);
}

int main(void) {
    RUN(test_nf4_codebook);
    RUN(test_nf4_thresholds);
    RUN(test_nf4_midpoints);
    RUN(test_nf4_sizes);
    RUN(test_nf4_pack_order);
    RUN(test_nf4_roundtrip);
    RUN(test_reference);
    RUN(test_nf4_paths);
    RUN(test_nf4_threads);
    RUN(test_bad_input);
    RUN(test_qsym_roundtrip);
    RUN(test_qasym_roundtrip);
    RUN(test_qgrid);
    RUN(test_sround_unbiased);
    RUN(test_sround_threads);
    TEST_END();
}
