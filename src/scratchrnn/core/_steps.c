/* The sequential part of a recurrent layer — the per-step loops of the cells' Python forward and
 * backward (core/functional.py, core/cells/) — in C, for float32 and float64 on the CPU. The same
 * equations, the same order, the same packed-sequence bookkeeping as the Python loops, which stay
 * the reference and the fallback.
 *
 * This file is the driver, generic over the cell: the step loops (padded and packed, both
 * directions), the recurrent product of every step (W_hh is (G·H) x H: G = 1 for the Elman cell,
 * 3 for the GRU) with its levers (the small kernel, MKL's packed GEMM, one BLAS thread for small
 * steps), the checks of the sizes the loops rely on, and the shared math (tanh, sigmoid, rsqrt).
 * Each cell's elementwise step, forward and backward, and its entry points live beside its Python twin
 * in cells/<cell>.c, included at the end: one translation unit, so the steps inline their math.
 *
 * Why: each step's work is small (an (N, H) x (H, G·H) GEMM and an elementwise pass), so in Python
 * the cost of issuing ops dominates for small N and H. Here a step costs a BLAS call and a loop.
 * BLAS (sgemm_/dgemm_) is the one PyTorch's own CPU library carries; Python hands us its addresses
 * (see accel.py), so we link nothing. tanh is our own (tanh_f, tanh_d below): loops the compiler
 * turns into SIMD code, several times faster here than the scalar libm/VML tanh PyTorch calls.
 *
 * Layout (as in the Python loops): time-major rows, step t holding sizes[t] rows; row-major
 * matrices, so a BLAS (column-major) call sees every matrix transposed. `ld_out` is the row stride
 * of the output (H, or 2H when both directions of a bidirectional layer share one buffer).
 */
#include <limits.h>
#include <math.h> /* copysign, copysignf: compiler builtins, nothing linked */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef void (*gemm_f32)(const char *, const char *, const int *, const int *, const int *,
                         const float *, const float *, const int *, const float *, const int *,
                         const float *, float *, const int *);
typedef void (*gemm_f64)(const char *, const char *, const int *, const int *, const int *,
                         const double *, const double *, const int *, const double *,
                         const int *, const double *, double *, const int *);

/* What the entry points return; accel.py turns each into an exception. */
enum { STEPS_OK = 0, STEPS_BAD_SIZES = 1, STEPS_BAD_BUFFER = 2, STEPS_NO_MEMORY = 3,
       STEPS_BAD_ACTIVATION = 4 /* cells/options.c: an unknown nonlinearity code */ };

/* The checks of what the loops rely on, made again here whoever the caller (accel.py checks the
 * tensors first and says what is wrong; these only refuse). `sizes` (T entries) must be
 * non-increasing and >= 0 and `offsets` their running sum; returns the total rows, or -1. */
static int64_t checked_rows(int64_t T, const int64_t *sizes, const int64_t *offsets) {
    if (T < 1 || !sizes || !offsets) return -1;
    int64_t rows = 0;
    for (int64_t t = 0; t < T; t++) {
        if (sizes[t] < 0 || (t > 0 && sizes[t] > sizes[t - 1]) || offsets[t] != rows) return -1;
        rows += sizes[t];
        if (rows > INT_MAX) return -1;
    }
    return rows;
}

/* H >= 1, and G·H, G·H·H and a row stride `ld` >= `width` within what BLAS's int arguments hold. */
static int good_width(int64_t H, int G, int64_t ld, int64_t width) {
    return H >= 1 && (int64_t)G * H <= INT_MAX && (int64_t)G * H * H <= INT64_MAX / 8 && ld >= width
        && ld <= INT_MAX;
}

/* A buffer of `len` elements holds `rows` rows of `cols` with row stride `ld` (NULL: only if empty). */
static int holds(const void *p, int64_t len, int64_t rows, int64_t cols, int64_t ld) {
    int64_t need = rows <= 0 ? 0 : (rows - 1) * ld + cols;
    return need == 0 || (p != NULL && len >= need);
}

/* The small kernel replaces BLAS for a product (rows x K) @ (K x M) of at most SMALL_MAX_ROWS
 * rows with K·M <= SMALL_MAX_KM, rows·M <= SMALL_MAX_ROWS_M: where it measured faster than MKL on
 * one thread for the Elman cell (K = M = H <= 256; most at N = 1; at N = 32 no better; at H = 512,
 * where W^T no longer fits in L2 beside the rest, slower). The GRU's (K·M = 3H²) takes the same
 * bounds on the weight's size, not measured on their own. It is single-threaded: at these sizes a
 * second thread costs more in synchronisation than it gives. */
#define SMALL_MAX_ROWS 16
#define SMALL_MAX_KM (256 * 256)
#define SMALL_MAX_ROWS_M 2048
#define USE_SMALL(rows, K, M)                                                                      \
    ((rows) <= SMALL_MAX_ROWS && (int64_t)(K) * (M) <= SMALL_MAX_KM                                \
     && (int64_t)(rows) * (M) <= SMALL_MAX_ROWS_M)

/* MKL's packed-GEMM API (cblas_sgemm_pack / cblas_sgemm_compute, in libtorch_cpu too): W_hh is
 * packed into MKL's internal layout once per call and every step's product reuses it, instead
 * of each sgemm call repacking it. float32 only (MKL exports no double twin here); NULL when the
 * library lacks it. The CBLAS enum values are MKL's. */
enum { ROW_MAJOR = 101, NO_TRANS = 111, TRANS = 112, PACKED = 151, B_MATRIX = 162 };
typedef size_t (*pack_size_f)(int, int, int, int);
typedef void (*pack_f)(int, int, int, int, int, int, float, const float *, int, float *);
typedef void (*compute_f)(int, int, int, int, int, int, const float *, int, const float *, int, float,
                          float *, int);

/* Steps whose product has fewer multiply-adds than this run BLAS on one thread: below it a second
 * thread cost more in synchronisation than it gave (benchmarks/step_threads.py measures where
 * they break even). MKL's mkl_set_num_threads_local sets it for the calling thread only, for the
 * whole call (its Fortran-style name, which takes the count by pointer); without it (another
 * BLAS) the loops keep torch's thread count. */
#ifndef ONE_THREAD_MACS /* -DONE_THREAD_MACS=0 turns it off (benchmarks/step_threads.py) */
#define ONE_THREAD_MACS (1 << 20)
#endif
typedef int (*set_threads_f)(const int *);

static gemm_f32 sgemm;
static gemm_f64 dgemm;
static pack_size_f sgemm_pack_size;
static pack_f sgemm_pack;
static compute_f sgemm_compute;
static set_threads_f set_local_threads;

void scratchrnn_init(void *s_gemm, void *d_gemm, void *pack_size, void *pack, void *compute,
                     void *set_threads) {
    sgemm = (gemm_f32)s_gemm;
    dgemm = (gemm_f64)d_gemm;
    sgemm_pack_size = (pack_size_f)pack_size;
    sgemm_pack = (pack_f)pack;
    sgemm_compute = (compute_f)compute;
    set_local_threads = (set_threads_f)set_threads;
}

/* One BLAS thread for this call's steps if they are small (see ONE_THREAD_MACS): N rows, each
 * `macs_per_row` multiply-adds (G·H·H); returns what restore_threads needs to undo it. */
static int small_steps_one_thread(int N, int64_t macs_per_row) {
    const int one = 1;
    if (!set_local_threads || (int64_t)N * macs_per_row >= ONE_THREAD_MACS) return -1;
    return set_local_threads(&one);
}

static void restore_threads(int previous) {
    if (previous >= 0) set_local_threads(&previous); /* 0: back to the global setting */
}

/* The B (K x M) of a (rows x K) @ B product, packed: W^T when `trans` (W row-major M x K), else W
 * (row-major K x M); W's row stride is `ldw` (H either way: W_hh is (G·H) x H). NULL where the
 * small kernel runs instead, or without the packed API, or in double. Freed by free(). */
static float *pack_f32(int rows, int K, int M, const float *W, int ldw, int trans) {
    if (!sgemm_pack || rows <= 0 || USE_SMALL(rows, K, M)) return NULL;
    float *packed = malloc(sgemm_pack_size(B_MATRIX, rows, M, K));
    if (packed) sgemm_pack(ROW_MAJOR, B_MATRIX, trans ? TRANS : NO_TRANS, rows, M, K, 1.0f, W, ldw, packed);
    return packed;
}

static double *pack_f64(int rows, int K, int M, const double *W, int ldw, int trans) {
    (void)rows, (void)K, (void)M, (void)W, (void)ldw, (void)trans;
    return NULL;
}

/* C (rows x M) = beta C + A (rows x K, row stride lda) @ B, B packed by pack_f32 for these rows. */
static void packed_gemm_f32(int rows, int K, int M, const float *A, int lda, const float *packed, int ldw,
                            float beta, float *C, int ldc) {
    sgemm_compute(ROW_MAJOR, NO_TRANS, PACKED, rows, M, K, A, lda, packed, ldw, beta, C, ldc);
}

static void packed_gemm_f64(int rows, int K, int M, const double *A, int lda, const double *packed, int ldw,
                            double beta, double *C, int ldc) {
    (void)rows, (void)K, (void)M, (void)A, (void)lda, (void)packed, (void)ldw, (void)beta, (void)C, (void)ldc;
}

/* tanh, branch-free so that loops over it vectorise (SIMD selects, no jumps). NaN in, NaN out
 * (it fails every comparison and propagates through every operation, as in nn.RNN); ±inf gives
 * ±1; the sign is copied from x last, so tanh(±0) = ±0. */
/* Double precision:
 *   tanh|x| = −m / (2 + m),  m = expm1(−2|x|)  (no cancellation near 0, no overflow),
 *   expm1(y) = 2^k (expm1(r) + 1) − 1  with  y = k ln2 + r, |r| ≤ ln2 / 2,
 * expm1(r) by its Taylor series to r^13 (truncation < 1e-17 relative). Max error: a few ulp. */
static inline double tanh_d(double x) {
    double ax = x < 0 ? -x : x;
    ax = ax > 20.0 ? 20.0 : ax; /* tanh(20) rounds to 1 in double */
    double y = -2.0 * ax;
    double t = y * 1.4426950408889634 + 0x1.8p52; /* round(y / ln2) lands in t's low bits */
    double k = t - 0x1.8p52;
    double r = (y - k * 6.93147180369123816490e-01) - k * 1.90821492927058770002e-10;
    double p = r * (1.0 + r * (1.0 / 2 + r * (1.0 / 6 + r * (1.0 / 24 + r * (1.0 / 120
             + r * (1.0 / 720 + r * (1.0 / 5040 + r * (1.0 / 40320 + r * (1.0 / 362880
             + r * (1.0 / 3628800 + r * (1.0 / 39916800 + r * (1.0 / 479001600
             + r * (1.0 / 6227020800.0)))))))))))));
    uint64_t bits;
    memcpy(&bits, &t, sizeof bits);
    bits = (bits + 1023) << 52; /* 2^k: k + 1023 into the exponent field */
    double scale;
    memcpy(&scale, &bits, sizeof scale);
    double m = scale * p + (scale - 1.0);
    return copysign(0.0 - m / (2.0 + m), x); /* 0 − m: +0, not −0, where m = 0 */
}

/* Single precision, in float arithmetic (16 lanes, twice the double version's throughput here):
 *   |x| < 0.9:  tanh|x| = |x| + |x| s q(s),  s = x², q a degree-6 least-squares fit of
 *               (tanh(x)/x − 1)/s on [0, 0.9] (relative error 1.1e-9);
 *   |x| ≥ 0.9:  tanh|x| = 1 − 2e / (1 + e),  e = exp(−2|x|) = 2^k (expm1(r) + 1) as above, expm1(r)
 *               to r^8 (truncation < 2e-8 relative);
 * both computed, one selected. Checked on every third float in [0, 12]: at most 1 ulp from the
 * correctly rounded tanh, 99.8 % of them correctly rounded (torch's float tanh: 1 ulp, 99.9 %). */
static inline float tanh_f(float x) {
    float ax = x < 0 ? -x : x;
    ax = ax > 10.0f ? 10.0f : ax; /* tanh(10) rounds to 1 in float */
    float s = ax * ax;
    float q = -0.33333322405815125f + s * (0.13332994282245636f + s * (-0.053930383175611496f
            + s * (0.02166707254946232f + s * (-0.008270500227808952f + s * (0.0025876935105770826f
            + s * -0.00045713846338912845f)))));
    float near_0 = ax + ax * s * q;
    float y = -2.0f * ax;
    float t = y * 1.44269504f + 0x1.8p23f; /* round(y / ln2) lands in t's low bits */
    float k = t - 0x1.8p23f;
    float r = (y - k * 0.693145751953125f) - k * 1.428606765330187e-06f; /* ln2 in two parts */
    float p = r * (1.0f + r * (1.0f / 2 + r * (1.0f / 6 + r * (1.0f / 24 + r * (1.0f / 120
            + r * (1.0f / 720 + r * (1.0f / 5040 + r * (1.0f / 40320))))))));
    uint32_t bits;
    memcpy(&bits, &t, sizeof bits);
    bits = (bits + 127) << 23; /* 2^k */
    float scale;
    memcpy(&scale, &bits, sizeof scale);
    float e = scale * p + scale;
    float far_from_0 = 1.0f - 2.0f * e / (1.0f + e);
    return copysignf(ax < 0.9f ? near_0 : far_from_0, x);
}

/* e^y for y <= 0 (NaN stays NaN; y < −1100, −inf included, gives 0): 2^k (expm1(r) + 1) as in
 * tanh_d, with 2^k applied as two factors 2^k1 2^k2 so that it goes gradually through the
 * subnormals to 0 where exp does (a few ulp). k comes out of t's bits by integer arithmetic (no
 * float-to-int conversion, which is undefined for NaN). The sigmoids' e, and silu's and gelu's
 * (cells/options.c). */
static inline double exp_neg_d(double y) {
    y = y < -1100.0 ? -1100.0 : y; /* e^y = 0 from here on; NaN fails the comparison */
    double t = y * 1.4426950408889634 + 0x1.8p52; /* round(y / ln2) lands in t's low bits */
    double k = t - 0x1.8p52;
    double r = (y - k * 6.93147180369123816490e-01) - k * 1.90821492927058770002e-10;
    double p = r * (1.0 + r * (1.0 / 2 + r * (1.0 / 6 + r * (1.0 / 24 + r * (1.0 / 120
             + r * (1.0 / 720 + r * (1.0 / 5040 + r * (1.0 / 40320 + r * (1.0 / 362880
             + r * (1.0 / 3628800 + r * (1.0 / 39916800 + r * (1.0 / 479001600
             + r * (1.0 / 6227020800.0)))))))))))));
    int64_t bits, bias_bits;
    const double bias = 0x1.8p52;
    memcpy(&bits, &t, sizeof bits);
    memcpy(&bias_bits, &bias, sizeof bias_bits);
    int64_t ki = bits - bias_bits, k1 = ki / 2, k2 = ki - k1; /* k1, k2 >= -794: normal */
    uint64_t b1 = (uint64_t)(k1 + 1023) << 52, b2 = (uint64_t)(k2 + 1023) << 52;
    double scale1, scale2;
    memcpy(&scale1, &b1, sizeof scale1);
    memcpy(&scale2, &b2, sizeof scale2);
    return (scale1 * p + scale1) * scale2;
}

/* e^y for y <= 0 in float, as exp_neg_d (−inf, and y < −160, give 0; NaN stays NaN). */
static inline float exp_neg_f(float y) {
    y = y < -160.0f ? -160.0f : y;
    float t = y * 1.44269504f + 0x1.8p23f;
    float k = t - 0x1.8p23f;
    float r = (y - k * 0.693145751953125f) - k * 1.428606765330187e-06f;
    float p = r * (1.0f + r * (1.0f / 2 + r * (1.0f / 6 + r * (1.0f / 24 + r * (1.0f / 120
            + r * (1.0f / 720 + r * (1.0f / 5040 + r * (1.0f / 40320))))))));
    int32_t bits, bias_bits;
    const float bias = 0x1.8p23f;
    memcpy(&bits, &t, sizeof bits);
    memcpy(&bias_bits, &bias, sizeof bias_bits);
    int32_t ki = bits - bias_bits, k1 = ki / 2, k2 = ki - k1;
    uint32_t b1 = (uint32_t)(k1 + 127) << 23, b2 = (uint32_t)(k2 + 127) << 23;
    float scale1, scale2;
    memcpy(&scale1, &b1, sizeof scale1);
    memcpy(&scale2, &b2, sizeof scale2);
    return (scale1 * p + scale1) * scale2;
}

/* The logistic sigmoid, branch-free like tanh: σ(x) = 1 / (1 + e) for x >= 0 and e / (1 + e) for
 * x < 0, e = exp(−|x|) by exp_neg_d / exp_neg_f, which go gradually into the subnormals and to 0
 * where exp does: σ(−inf) is 0, as torch's, not a tiny number (r ⊙ hp_n in the GRU must be NaN
 * where torch's is, when hp_n is infinite). NaN in, NaN out, as torch.sigmoid. */
static inline double sigmoid_d(double x) {
    double ax = x < 0 ? -x : x;
    double e = exp_neg_d(-ax); /* e = exp(−|x|); NaN stays NaN */
    double s = 1.0 / (1.0 + e);
    return x >= 0 ? s : e * s;
}

static inline float sigmoid_f(float x) {
    float ax = x < 0 ? -x : x;
    float e = exp_neg_f(-ax);
    float s = 1.0f / (1.0f + e);
    return x >= 0 ? s : e * s;
}

/* 1 / √x, for x >= 1e-5 (layer norm's σ² + ε, once per row; cells/options.c), our own as tanh
 * is (libm's sqrt would be a symbol to link: the library links nothing): the exponent-halving
 * first guess (3.5 % off), then Newton's y <- y (3/2 − x y²/2), which squares the relative error
 * each time: 5 steps reach double's rounding (a few ulp, 3e-16 relative at most over x in
 * [1e-5, 1e15]; float32 rounds the double result). NaN stays NaN (every step propagates it);
 * x = +inf gives 0, as torch.rsqrt. */
static inline double rsqrt_d(double x) {
    if (x == (double)INFINITY) return 0;
    uint64_t bits;
    memcpy(&bits, &x, sizeof bits);
    bits = 0x5FE6EB50C7B537A9ull - (bits >> 1);
    double y;
    memcpy(&y, &bits, sizeof y);
    for (int i = 0; i < 5; i++) y = y * (1.5 - 0.5 * x * y * y);
    return y;
}

/* The array forms, for the tests (the loops call the inline forms). */
void scratchrnn_tanh_f32(int64_t n, float *a) {
    for (int64_t i = 0; i < n; i++) a[i] = tanh_f(a[i]);
}

void scratchrnn_tanh_f64(int64_t n, double *a) {
    for (int64_t i = 0; i < n; i++) a[i] = tanh_d(a[i]);
}

void scratchrnn_sigmoid_f32(int64_t n, float *a) {
    for (int64_t i = 0; i < n; i++) a[i] = sigmoid_f(a[i]);
}

void scratchrnn_sigmoid_f64(int64_t n, double *a) {
    for (int64_t i = 0; i < n; i++) a[i] = sigmoid_d(a[i]);
}

/* The small GEMM, C (rows x M, row stride ldc) = beta C + A (rows x K, row stride lda) @ B, with
 * beta 0 or 1 (0: C is not read), without BLAS: for a few rows the call into BLAS costs more than
 * the arithmetic. B is the copy made by small_pack (row-major K x ldb, its rows padded with zeros
 * to ldb, a multiple of SMALL_CB columns). One block of RB rows x CB columns of C stays in
 * registers over the whole sum (k in order, as in BLAS's own microkernel); RB and CB are
 * constants and the padding makes every block full width, so the j loop vectorises and the
 * accumulators are registers: 4 x 32 (8 AVX-512 vectors of floats) for groups of four rows,
 * 1 x 128 (8 vectors) for a lone row, enough independent chains to hide the FMA latency. Only
 * the store is cut to the nj columns that exist. (Without the padding the last, narrower block
 * took a loop with run-time bounds that did not vectorise: at H = 100 the product was 6x slower
 * than at H = 96.) */
#define SMALL_CB 32

static int small_ldb(int M) { return (M + SMALL_CB - 1) / SMALL_CB * SMALL_CB; }

#define SMALL_BLOCK(SUFFIX, REAL, RB, CB)                                                          \
static void block_##RB##x##CB##_##SUFFIX(int K, const REAL *A, int lda, const REAL *B, int ldb,   \
                                         REAL beta, REAL *C, int ldc, int nj) {                    \
    REAL acc[RB][CB] = {{0}};                                                                      \
    for (int k = 0; k < K; k++)                                                                    \
        for (int r = 0; r < RB; r++)                                                               \
            for (int j = 0; j < CB; j++) acc[r][j] += A[(int64_t)r * lda + k] * B[(int64_t)k * ldb + j]; \
    for (int r = 0; r < RB; r++)                                                                   \
        for (int j = 0; j < nj; j++)                                                               \
            C[(int64_t)r * ldc + j] = beta == 0 ? acc[r][j] : C[(int64_t)r * ldc + j] + acc[r][j]; \
}

#define DEFINE_SMALL_GEMM(SUFFIX, REAL)                                                            \
SMALL_BLOCK(SUFFIX, REAL, 4, 32)                                                                   \
SMALL_BLOCK(SUFFIX, REAL, 1, 128)                                                                  \
SMALL_BLOCK(SUFFIX, REAL, 1, 32)                                                                   \
                                                                                                   \
/* The small kernel's B (K x M): W^T when `trans` (W row-major M x K), else W (row-major K x M);  \
 * NULL where no product of `min_rows` rows (the narrowest step) takes the small kernel, or out   \
 * of memory (BLAS then takes every step). Freed by free(). */                                     \
static REAL *small_pack_##SUFFIX(int min_rows, int K, int M, const REAL *W, int trans) {          \
    if (!USE_SMALL(min_rows, K, M)) return NULL;                                                   \
    int ldb = small_ldb(M);                                                                        \
    /* 64-byte aligned, as torch's tensors: vector loads that straddle cache lines cost twice */   \
    size_t bytes = (size_t)K * ldb * sizeof(REAL); /* a multiple of 64: ldb is of SMALL_CB */      \
    REAL *B = aligned_alloc(64, bytes);                                                            \
    if (!B) return NULL;                                                                           \
    for (int k = 0; k < K; k++)                                                                    \
        for (int j = 0; j < ldb; j++)                                                              \
            B[(int64_t)k * ldb + j] = j >= M ? 0 : trans ? W[(int64_t)j * K + k] : W[(int64_t)k * M + j]; \
    return B;                                                                                      \
}                                                                                                  \
                                                                                                   \
static void small_gemm_##SUFFIX(int rows, int K, int M, const REAL *A, int lda, const REAL *B,    \
                                REAL beta, REAL *C, int ldc) {                                     \
    int ldb = small_ldb(M);                                                                        \
    int r0 = 0;                                                                                    \
    for (; r0 + 4 <= rows; r0 += 4)                                                                \
        for (int j0 = 0; j0 < M; j0 += 32)                                                         \
            block_4x32_##SUFFIX(K, A + (int64_t)r0 * lda, lda, B + j0, ldb, beta,                  \
                                C + (int64_t)r0 * ldc + j0, ldc, M - j0 < 32 ? M - j0 : 32);       \
    for (; r0 < rows; r0++) {                                                                      \
        const REAL *a = A + (int64_t)r0 * lda;                                                     \
        REAL *c = C + (int64_t)r0 * ldc;                                                           \
        int j0 = 0;                                                                                \
        for (; j0 + 128 <= ldb; j0 += 128)                                                         \
            block_1x128_##SUFFIX(K, a, lda, B + j0, ldb, beta, c + j0, ldc, M - j0 < 128 ? M - j0 : 128); \
        for (; j0 < M; j0 += 32)                                                                   \
            block_1x32_##SUFFIX(K, a, lda, B + j0, ldb, beta, c + j0, ldc, M - j0 < 32 ? M - j0 : 32); \
    }                                                                                              \
}

DEFINE_SMALL_GEMM(f32, float)
DEFINE_SMALL_GEMM(f64, double)

/* The step loops, generic over the cell; instantiated for float (f32) and double (f64). */
#define DEFINE_STEPS(SUFFIX, REAL, GEMM)                                                           \
                                                                                                   \
/* W_hh ((G·H) x H, row-major) as the B of every step's product (rows x K) @ B -> (rows x M):     \
 * W_hh^T in the forward (K = H, M = G·H), W_hh in the backward (K = G·H, M = H); as is (BLAS),   \
 * padded for the small kernel (NULL when unused), packed for `packed_rows`-row products (MKL's   \
 * packed API; NULL without). */                                                                   \
typedef struct {                                                                                   \
    const REAL *W;                                                                                 \
    REAL *small, *packed;                                                                          \
    int packed_rows, K, M, trans;                                                                  \
} weights_##SUFFIX;                                                                                \
                                                                                                   \
static weights_##SUFFIX weights_##SUFFIX##_new(const REAL *W_hh, int G, int H, int N, int narrowest, \
                                               int trans) {                                        \
    int K = trans ? H : G * H, M = trans ? G * H : H;                                              \
    weights_##SUFFIX w = {W_hh, small_pack_##SUFFIX(narrowest, K, M, W_hh, trans),                 \
                          pack_##SUFFIX(N, K, M, W_hh, H, trans), N, K, M, trans};                 \
    return w;                                                                                      \
}                                                                                                  \
                                                                                                   \
/* C (rows x M, row stride ldc) = beta C + A (rows x K, row stride lda) @ B. In column-major       \
 * (BLAS) terms C^T = beta C^T + B^T A^T, and B^T is W_hh read as is (forward) or transposed. */  \
static void product_##SUFFIX(int rows, const REAL *A, int lda, const weights_##SUFFIX *w, REAL beta, \
                             REAL *C, int ldc) {                                                   \
    const REAL one = 1;                                                                            \
    int K = w->K, M = w->M;                                                                        \
    if (rows <= 0) return;                                                                         \
    if (w->small && USE_SMALL(rows, K, M))                                                         \
        small_gemm_##SUFFIX(rows, K, M, A, lda, w->small, beta, C, ldc);                           \
    else if (w->packed && rows == w->packed_rows)                                                  \
        packed_gemm_##SUFFIX(rows, K, M, A, lda, w->packed, K < M ? K : M, beta, C, ldc);          \
    else if (w->trans)                                                                             \
        GEMM("T", "N", &M, &rows, &K, &one, w->W, &K, A, &lda, &beta, C, &ldc);                    \
    else                                                                                           \
        GEMM("N", "N", &M, &rows, &K, &one, w->W, &M, A, &lda, &beta, C, &ldc);                    \
}                                                                                                  \
                                                                                                   \
static void weights_##SUFFIX##_free(weights_##SUFFIX *w) {                                         \
    free(w->small);                                                                                \
    free(w->packed);                                                                               \
}                                                                                                  \
                                                                                                   \
/* One step of the forward as a cell's step sees it: rows [0, carried) continue from h_prev (row \
 * stride ld_prev), rows [carried, rows) start here from h0 (reverse direction, packed); hp holds \
 * h_{t-1} W_hh^T for all of them (row stride ld_hp); h_t (row stride ld_out) is to be written;  \
 * `first` is the step's first row in the (rows x ·) buffers. */                                   \
typedef struct {                                                                                   \
    int H, rows, carried, ld_prev, ld_hp, ld_out;                                                  \
    int64_t first;                                                                                 \
    const REAL *h_prev, *h0;                                                                       \
    REAL *hp, *h_t;                                                                                \
} forward_step_##SUFFIX;                                                                           \
                                                                                                   \
/* One step of the backward: dh_t (rows x H, contiguous) is dL/dh_t, complete; the cell's step   \
 * returns dL/d(hp_t) (rows x G·H, contiguous), and adds what else flows into dL/dh_{t-1} (not    \
 * through W_hh) to dh_prev (rows [0, carried), contiguous; NULL at the first step) and writes it \
 * to dh0's rows [carried, rows) when the cell says so (dh0_direct). */                            \
typedef struct {                                                                                   \
    int H, rows, carried, ld_prev, ld_out;                                                         \
    int64_t first;                                                                                 \
    const REAL *h_prev, *h0, *h_t;                                                                 \
    REAL *dh_t, *dh_prev, *dh0;                                                                    \
} backward_step_##SUFFIX;                                                                          \
                                                                                                   \
/* A cell as the loops see it: the width G of its recurrent product, its two steps and their    \
 * state, whether the product accumulates into the output buffer (the Elman cell: out already    \
 * holds x_t W_ih^T, and a_t = out + h_{t-1} W_hh^T is formed in place, no buffer of its own),   \
 * and whether its backward step writes a direct part of dL/dh_0 (dh0 is then accumulated into). */ \
typedef struct {                                                                                   \
    int G, product_into_out, dh0_direct;                                                           \
    void (*forward)(const void *cell, const forward_step_##SUFFIX *s);                             \
    const REAL *(*backward)(const void *cell, const backward_step_##SUFFIX *s);                    \
    const void *state;                                                                             \
} cell_##SUFFIX;                                                                                   \
                                                                                                   \
/* The forward loop: h_n (N x H, contiguous) receives each sequence's last h_t. */                 \
static int forward_loop_##SUFFIX(const cell_##SUFFIX *cell, int T, const int64_t *sizes,          \
                                 const int64_t *offsets, int H, REAL *out, int ld_out,             \
                                 const REAL *h0, const REAL *W_hh, REAL *h_n, int reverse) {       \
    int G = cell->G;                                                                               \
    const REAL *h_prev = h0;                                                                       \
    int ld_prev = H;                                                                               \
    int b_prev = (int)sizes[reverse ? T - 1 : 0];                                                  \
    int N = (int)sizes[0]; /* the widest step: every step of a padded batch */                     \
    int narrowest = (int)sizes[T - 1]; /* packed: the sizes never grow */                         \
    REAL *hp = NULL;                                                                               \
    if (!cell->product_into_out && N > 0) {                                                        \
        hp = malloc((size_t)N * G * H * sizeof(REAL));                                             \
        if (!hp) return STEPS_NO_MEMORY;                                                           \
    }                                                                                              \
    weights_##SUFFIX w = weights_##SUFFIX##_new(W_hh, G, H, N, narrowest, 1);                      \
    int threads = small_steps_one_thread(N, (int64_t)G * H * H);                                   \
    for (int k = 0; k < T; k++) {                                                                  \
        int t = reverse ? T - 1 - k : k;                                                           \
        int b = (int)sizes[t];                                                                     \
        REAL *h_t = out + offsets[t] * ld_out;                                                     \
        REAL *hp_t = cell->product_into_out ? h_t : hp;                                            \
        int ld_hp = cell->product_into_out ? ld_out : G * H;                                       \
        REAL beta = cell->product_into_out ? 1 : 0;                                                \
        int carried = b < b_prev ? b : b_prev;                                                     \
        for (int r = b; r < b_prev; r++) /* forward, packed: rows that ended at the step before */ \
            for (int j = 0; j < H; j++) h_n[(int64_t)r * H + j] = h_prev[(int64_t)r * ld_prev + j]; \
        product_##SUFFIX(carried, h_prev, ld_prev, &w, beta, hp_t, ld_hp);                         \
        /* reverse, packed: rows that start here, from h0 */                                       \
        product_##SUFFIX(b - carried, h0 + (int64_t)carried * H, H, &w, beta,                      \
                         hp_t + (int64_t)carried * ld_hp, ld_hp);                                  \
        forward_step_##SUFFIX s = {H, b, carried, ld_prev, ld_hp, ld_out, offsets[t],              \
                                   h_prev, h0, hp_t, h_t};                                         \
        cell->forward(cell->state, &s);                                                            \
        h_prev = h_t;                                                                              \
        ld_prev = ld_out;                                                                          \
        b_prev = b;                                                                                \
    }                                                                                              \
    for (int r = 0; r < b_prev; r++)                                                               \
        for (int j = 0; j < H; j++) h_n[(int64_t)r * H + j] = h_prev[(int64_t)r * ld_prev + j];    \
    restore_threads(threads);                                                                      \
    weights_##SUFFIX##_free(&w);                                                                   \
    free(hp);                                                                                      \
    return STEPS_OK;                                                                               \
}                                                                                                  \
                                                                                                   \
/* The backward loop. `dh` (rows x H, contiguous) holds dL/dh_t from the output, with dL/dh_n    \
 * already added at each sequence's last step; each step adds dL/dh_{t-1} into the step before's \
 * rows. dh0 (N x H, contiguous) receives dL/dh_0. */                                              \
static int backward_loop_##SUFFIX(const cell_##SUFFIX *cell, int T, const int64_t *sizes,         \
                                  const int64_t *offsets, int H, REAL *dh, const REAL *out,        \
                                  int ld_out, const REAL *h0, const REAL *W_hh, REAL *dh0,         \
                                  int reverse) {                                                   \
    int G = cell->G;                                                                               \
    int N = (int)sizes[0];                                                                         \
    int narrowest = (int)sizes[T - 1];                                                             \
    weights_##SUFFIX w = weights_##SUFFIX##_new(W_hh, G, H, N, narrowest, 0);                      \
    int threads = small_steps_one_thread(N, (int64_t)G * H * H);                                   \
    for (int k = T - 1; k >= 0; k--) {                                                             \
        int t = reverse ? T - 1 - k : k;                                                           \
        int b = (int)sizes[t];                                                                     \
        int carried = 0, ld_prev = H;                                                              \
        const REAL *h_prev = NULL;                                                                 \
        REAL *dh_prev = NULL;                                                                      \
        if (k > 0) {                                                                               \
            int t_prev = reverse ? T - k : k - 1;                                                  \
            int b_prev = (int)sizes[t_prev];                                                       \
            carried = b < b_prev ? b : b_prev;                                                     \
            h_prev = out + offsets[t_prev] * ld_out;                                               \
            ld_prev = ld_out;                                                                      \
            dh_prev = dh + offsets[t_prev] * H;                                                    \
        }                                                                                          \
        backward_step_##SUFFIX s = {H, b, carried, ld_prev, ld_out, offsets[t], h_prev, h0,        \
                                    out + offsets[t] * ld_out, dh + offsets[t] * H, dh_prev, dh0}; \
        const REAL *dhp_t = cell->backward(cell->state, &s);                                       \
        /* dL/dh_{t-1} += dL/dhp_t W_hh */                                                         \
        product_##SUFFIX(carried, dhp_t, G * H, &w, 1, dh_prev, H);                                \
        /* rows that began at step t from h0: their dL/dh_{t-1} is dL/dh_0 */                      \
        product_##SUFFIX(b - carried, dhp_t + (int64_t)carried * G * H, G * H, &w,                 \
                         cell->dh0_direct ? 1 : 0, dh0 + (int64_t)carried * H, H);                 \
    }                                                                                              \
    restore_threads(threads);                                                                      \
    weights_##SUFFIX##_free(&w);                                                                   \
    return STEPS_OK;                                                                               \
}

DEFINE_STEPS(f32, float, sgemm)
DEFINE_STEPS(f64, double, dgemm)

/* The cells: each one's elementwise steps and its entry points, beside its Python twin. */
#include "cells/elman.c"
#include "cells/gru.c"
#include "cells/options.c"
