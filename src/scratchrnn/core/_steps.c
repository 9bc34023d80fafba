/* The sequential part of the RNN — the per-step loops of layer_forward and layer_backward in
 * rnn.py — in C, for float32 and float64 on the CPU. The same equations, the same order, the same
 * packed-sequence bookkeeping as the Python loops there, which stay the reference and the fallback.
 *
 * Why: each step's work is small (an (N, H) x (H, H) GEMM and an elementwise pass), so in Python
 * the cost of issuing ops dominates for small N and H. Here a step costs a BLAS call and a loop.
 * BLAS (sgemm_/dgemm_) is the one PyTorch's own CPU library carries; Python hands us its addresses
 * (see accel.py), so we link nothing. tanh is our own (tanh_f, tanh_d below): loops the compiler
 * turns into SIMD code, several times faster here than the scalar libm/VML tanh PyTorch calls.
 *
 * Layout (as in rnn.py): time-major rows, step t holding sizes[t] rows; row-major matrices, so a
 * BLAS (column-major) call sees every matrix transposed. `ld_out` is the row stride of the output
 * (H, or 2H when both directions of a bidirectional layer share one buffer).
 */
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

/* The small kernel replaces BLAS for steps of at most SMALL_MAX_ROWS rows with H <= SMALL_MAX_H,
 * rows * H <= SMALL_MAX_ROWS_H: where it measured faster than MKL on one thread (most at N = 1;
 * at N = 32 no better; at H = 512, where W^T no longer fits in L2 beside the rest, slower). It is
 * single-threaded: at these sizes a second thread costs more in synchronisation than it gives. */
#define SMALL_MAX_ROWS 16
#define SMALL_MAX_H 256
#define SMALL_MAX_ROWS_H 2048
#define USE_SMALL(rows, H) ((rows) <= SMALL_MAX_ROWS && (H) <= SMALL_MAX_H && (rows) * (H) <= SMALL_MAX_ROWS_H)

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

/* One BLAS thread for this call's steps if they are small (see ONE_THREAD_MACS); returns what
 * restore_threads needs to undo it. */
static int small_steps_one_thread(int N, int H) {
    const int one = 1;
    if (!set_local_threads || (int64_t)N * H * H >= ONE_THREAD_MACS) return -1;
    return set_local_threads(&one);
}

static void restore_threads(int previous) {
    if (previous >= 0) set_local_threads(&previous); /* 0: back to the global setting */
}

/* W (H x H, row-major), or W^T when `trans`, as the B of a (rows x H) @ B product, packed; NULL
 * where the small kernel runs instead, or without the packed API, or in double. Freed by free(). */
static float *pack_f32(int rows, int H, const float *W, int trans) {
    if (!sgemm_pack || rows <= 0 || USE_SMALL(rows, H)) return NULL;
    float *packed = malloc(sgemm_pack_size(B_MATRIX, rows, H, H));
    if (packed) sgemm_pack(ROW_MAJOR, B_MATRIX, trans ? TRANS : NO_TRANS, rows, H, H, 1.0f, W, H, packed);
    return packed;
}

static double *pack_f64(int rows, int H, const double *W, int trans) {
    (void)rows, (void)H, (void)W, (void)trans;
    return NULL;
}

/* C (rows x H) = beta C + A (rows x H, row stride lda) @ B, B packed by pack_f32 for these rows. */
static void packed_gemm_f32(int rows, int H, const float *A, int lda, const float *packed, float beta,
                            float *C, int ldc) {
    sgemm_compute(ROW_MAJOR, NO_TRANS, PACKED, rows, H, H, A, lda, packed, H, beta, C, ldc);
}

static void packed_gemm_f64(int rows, int H, const double *A, int lda, const double *packed, double beta,
                            double *C, int ldc) {
    (void)rows, (void)H, (void)A, (void)lda, (void)packed, (void)beta, (void)C, (void)ldc; /* never packed */
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

/* The array forms, for the tests (the loops below call tanh_f and tanh_d inline). */
void scratchrnn_tanh_f32(int64_t n, float *a) {
    for (int64_t i = 0; i < n; i++) a[i] = tanh_f(a[i]);
}

void scratchrnn_tanh_f64(int64_t n, double *a) {
    for (int64_t i = 0; i < n; i++) a[i] = tanh_d(a[i]);
}

/* The small GEMM, C (rows x H, row stride ldc) = beta C + A (rows x H, row stride lda) @ B, with
 * beta 0 or 1 (0: C is not read), without BLAS: for a few rows the call into BLAS costs more than
 * the arithmetic. B is the copy made by small_pack (row-major H x ldb, its rows padded with zeros
 * to ldb, a multiple of SMALL_CB columns). One block of RB rows x CB columns of C stays in
 * registers over the whole sum (k in order, as in BLAS's own microkernel); RB and CB are
 * constants and the padding makes every block full width, so the j loop vectorises and the
 * accumulators are registers: 4 x 32 (8 AVX-512 vectors of floats) for groups of four rows,
 * 1 x 128 (8 vectors) for a lone row, enough independent chains to hide the FMA latency. Only
 * the store is cut to the nj columns that exist. (Without the padding the last, narrower block
 * took a loop with run-time bounds that did not vectorise: at H = 100 the product was 6x slower
 * than at H = 96.) */
#define SMALL_CB 32

static int small_ldb(int H) { return (H + SMALL_CB - 1) / SMALL_CB * SMALL_CB; }

#define SMALL_BLOCK(SUFFIX, REAL, RB, CB)                                                          \
static void block_##RB##x##CB##_##SUFFIX(int H, const REAL *A, int lda, const REAL *B, int ldb,   \
                                         REAL beta, REAL *C, int ldc, int nj) {                    \
    REAL acc[RB][CB] = {{0}};                                                                      \
    for (int k = 0; k < H; k++)                                                                    \
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
/* W (H x H, row-major), or W^T when `trans`, as the small kernel's B; NULL where no step of     \
 * `min_rows` rows (the narrowest) takes the small kernel, or out of memory (BLAS then takes     \
 * every step). Freed by free(). */                                                                \
static REAL *small_pack_##SUFFIX(int min_rows, int H, const REAL *W, int trans) {                 \
    if (!USE_SMALL(min_rows, H)) return NULL;                                                      \
    int ldb = small_ldb(H);                                                                        \
    /* 64-byte aligned, as torch's tensors: vector loads that straddle cache lines cost twice */   \
    size_t bytes = (size_t)H * ldb * sizeof(REAL); /* a multiple of 64: ldb is of SMALL_CB */      \
    REAL *B = aligned_alloc(64, bytes);                                                            \
    if (!B) return NULL;                                                                           \
    for (int k = 0; k < H; k++)                                                                    \
        for (int j = 0; j < ldb; j++)                                                              \
            B[(int64_t)k * ldb + j] = j >= H ? 0 : trans ? W[(int64_t)j * H + k] : W[(int64_t)k * H + j]; \
    return B;                                                                                      \
}                                                                                                  \
                                                                                                   \
static void small_gemm_##SUFFIX(int rows, int H, const REAL *A, int lda, const REAL *B, REAL beta, \
                                REAL *C, int ldc) {                                                \
    int ldb = small_ldb(H);                                                                        \
    int r0 = 0;                                                                                    \
    for (; r0 + 4 <= rows; r0 += 4)                                                                \
        for (int j0 = 0; j0 < H; j0 += 32)                                                         \
            block_4x32_##SUFFIX(H, A + (int64_t)r0 * lda, lda, B + j0, ldb, beta,                  \
                                C + (int64_t)r0 * ldc + j0, ldc, H - j0 < 32 ? H - j0 : 32);       \
    for (; r0 < rows; r0++) {                                                                      \
        const REAL *a = A + (int64_t)r0 * lda;                                                     \
        REAL *c = C + (int64_t)r0 * ldc;                                                           \
        int j0 = 0;                                                                                \
        for (; j0 + 128 <= ldb; j0 += 128)                                                         \
            block_1x128_##SUFFIX(H, a, lda, B + j0, ldb, beta, c + j0, ldc, H - j0 < 128 ? H - j0 : 128); \
        for (; j0 < H; j0 += 32)                                                                   \
            block_1x32_##SUFFIX(H, a, lda, B + j0, ldb, beta, c + j0, ldc, H - j0 < 32 ? H - j0 : 32); \
    }                                                                                              \
}

DEFINE_SMALL_GEMM(f32, float)
DEFINE_SMALL_GEMM(f64, double)

/* The two templates below are instantiated for float (f32) and double (f64). */
#define DEFINE_STEPS(SUFFIX, REAL, GEMM, TANH)                                                     \
                                                                                                   \
/* W_hh in the forms the step products read: as is (BLAS), padded for the small kernel (W_hh^T  \
 * in the forward, W_hh in the backward; NULL when unused), packed for `packed_rows`-row products \
 * (MKL's packed API; NULL without). */                                                            \
typedef struct {                                                                                   \
    const REAL *W;                                                                                 \
    REAL *small, *packed;                                                                          \
    int packed_rows;                                                                               \
} weights_##SUFFIX;                                                                                \
                                                                                                   \
/* C (rows x H, row stride ldc) += A (rows x H, row stride lda) @ W^T, W row-major (H x H):       \
 * in column-major terms C^T += W A^T, so W is read transposed. */                                 \
static void a_plus_h_WT_##SUFFIX(int rows, int H, const REAL *A, int lda, const weights_##SUFFIX *w, \
                                 REAL *C, int ldc) {                                               \
    const REAL one = 1;                                                                            \
    if (rows <= 0) return;                                                                         \
    if (w->small && USE_SMALL(rows, H))                                                            \
        small_gemm_##SUFFIX(rows, H, A, lda, w->small, one, C, ldc);                               \
    else if (w->packed && rows == w->packed_rows)                                                  \
        packed_gemm_##SUFFIX(rows, H, A, lda, w->packed, one, C, ldc);                             \
    else                                                                                           \
        GEMM("T", "N", &H, &rows, &H, &one, w->W, &H, A, &lda, &one, C, &ldc);                     \
}                                                                                                  \
                                                                                                   \
/* C (rows x H, row stride ldc) = beta C + A (rows x H, contiguous) @ W (row-major H x H);        \
 * here w->small and w->packed hold W itself. */                                                 \
static void da_W_##SUFFIX(int rows, int H, const REAL *A, const weights_##SUFFIX *w, REAL beta,   \
                          REAL *C, int ldc) {                                                      \
    const REAL one = 1;                                                                            \
    if (rows <= 0) return;                                                                         \
    if (w->small && USE_SMALL(rows, H))                                                            \
        small_gemm_##SUFFIX(rows, H, A, H, w->small, beta, C, ldc);                                \
    else if (w->packed && rows == w->packed_rows)                                                  \
        packed_gemm_##SUFFIX(rows, H, A, H, w->packed, beta, C, ldc);                              \
    else                                                                                           \
        GEMM("N", "N", &H, &rows, &H, &one, w->W, &H, A, &H, &beta, C, &ldc);                      \
}                                                                                                  \
                                                                                                   \
/* a_t += bias (when given), then h_t = f(a_t), in place, row by row (a row is in L1 by now). */     \
static void activate_##SUFFIX(int rows, int H, REAL *a, int lda, const REAL *bias, int relu) {    \
    for (int r = 0; r < rows; r++) {                                                               \
        REAL *a_t = a + (int64_t)r * lda;                                                          \
        if (bias)                                                                                  \
            for (int j = 0; j < H; j++) a_t[j] += bias[j]; /* + b_ih + b_hh */                     \
        if (relu) /* relu as torch's: NaN fails `< 0` and passes through (never becomes 0) */      \
            for (int j = 0; j < H; j++) a_t[j] = a_t[j] < 0 ? 0 : a_t[j];                          \
        else                                                                                       \
            for (int j = 0; j < H; j++) a_t[j] = TANH(a_t[j]);                                     \
    }                                                                                              \
}                                                                                                  \
                                                                                                   \
/* Forward. `out` already holds x_t W_ih^T for every row; each step adds h_{t-1} W_hh^T and the  \
 * bias = b_ih + b_hh (NULL: none) and applies the nonlinearity in place: the bias joins the     \
 * pass over a_t that the nonlinearity makes anyway, instead of a pass of its own over `out`.   \
 * h_n (N x H, contiguous) receives each sequence's last h_t.                                    \
 * `offsets[t]` is the first row of step t. */                                                     \
void scratchrnn_forward_##SUFFIX(int T, const int64_t *sizes, const int64_t *offsets, int H,      \
                                 REAL *out, int ld_out, const REAL *h0, const REAL *W_hh,          \
                                 const REAL *bias, REAL *h_n, int reverse, int relu) {             \
    const REAL *h_prev = h0;                                                                       \
    int ld_prev = H;                                                                               \
    int b_prev = (int)sizes[reverse ? T - 1 : 0];                                                  \
    int N = (int)sizes[0]; /* the widest step: every step of a padded batch */                     \
    int narrowest = (int)sizes[T - 1]; /* packed: the sizes never grow */                         \
    weights_##SUFFIX w = {W_hh, small_pack_##SUFFIX(narrowest, H, W_hh, 1),                        \
                          pack_##SUFFIX(N, H, W_hh, 1), N};                                        \
    int threads = small_steps_one_thread(N, H);                                                    \
    for (int k = 0; k < T; k++) {                                                                  \
        int t = reverse ? T - 1 - k : k;                                                           \
        int b = (int)sizes[t];                                                                     \
        REAL *a_t = out + offsets[t] * ld_out;                                                     \
        int carried = b < b_prev ? b : b_prev;                                                     \
        for (int r = b; r < b_prev; r++) /* forward, packed: rows that ended at the step before */ \
            for (int j = 0; j < H; j++) h_n[(int64_t)r * H + j] = h_prev[(int64_t)r * ld_prev + j]; \
        a_plus_h_WT_##SUFFIX(carried, H, h_prev, ld_prev, &w, a_t, ld_out);                        \
        /* reverse, packed: rows that start here, from h0 */                                       \
        a_plus_h_WT_##SUFFIX(b - carried, H, h0 + (int64_t)carried * H, H, &w,                     \
                             a_t + (int64_t)carried * ld_out, ld_out);                             \
        activate_##SUFFIX(b, H, a_t, ld_out, bias, relu);                                          \
        h_prev = a_t;                                                                              \
        ld_prev = ld_out;                                                                          \
        b_prev = b;                                                                                \
    }                                                                                              \
    for (int r = 0; r < b_prev; r++)                                                               \
        for (int j = 0; j < H; j++) h_n[(int64_t)r * H + j] = h_prev[(int64_t)r * ld_prev + j];    \
    restore_threads(threads);                                                                      \
    free(w.small);                                                                                 \
    free(w.packed);                                                                                \
}                                                                                                  \
                                                                                                   \
/* Backward. `dh` (rows x H, contiguous) holds dL/dh_t from the output, with dL/dh_n already added \
 * at each sequence's last step; it is overwritten with da_t. f'(a_t) is recomputed from h_t      \
 * (`out`) on the fly. dh0 (N x H) receives dL/dh_0. */                                            \
void scratchrnn_backward_##SUFFIX(int T, const int64_t *sizes, const int64_t *offsets, int H,     \
                                  REAL *dh, const REAL *out, int ld_out, const REAL *W_hh,         \
                                  REAL *dh0, int reverse, int relu) {                              \
    int N = (int)sizes[0];                                                                         \
    int narrowest = (int)sizes[T - 1];                                                             \
    weights_##SUFFIX w = {W_hh, small_pack_##SUFFIX(narrowest, H, W_hh, 0),                        \
                          pack_##SUFFIX(N, H, W_hh, 0), N};                                        \
    int threads = small_steps_one_thread(N, H);                                                    \
    for (int k = T - 1; k >= 0; k--) {                                                             \
        int t = reverse ? T - 1 - k : k;                                                           \
        int b = (int)sizes[t];                                                                     \
        REAL *da_t = dh + offsets[t] * H;                                                          \
        const REAL *h_t = out + offsets[t] * ld_out;                                               \
        for (int r = 0; r < b; r++) { /* da_t = (dh_t + dh_next) * f'(a_t) */                      \
            REAL *d = da_t + (int64_t)r * H;                                                       \
            const REAL *h = h_t + (int64_t)r * ld_out;                                             \
            if (relu) {                                                                            \
                /* nn.RNN's relu backward (threshold_backward): 0 where h <= 0, else dh, so a   \
                 * NaN h passes dh on and a NaN dh where h <= 0 becomes 0, as there */         \
                for (int j = 0; j < H; j++) d[j] = h[j] <= 0 ? 0 : d[j];                           \
            } else {                                                                               \
                for (int j = 0; j < H; j++) d[j] *= 1 - h[j] * h[j];                               \
            }                                                                                      \
        }                                                                                          \
        int carried = 0;                                                                           \
        if (k > 0) {                                                                               \
            int t_prev = reverse ? T - k : k - 1;                                                  \
            int b_prev = (int)sizes[t_prev];                                                       \
            carried = b < b_prev ? b : b_prev;                                                     \
            /* dh_next = da_t W_hh, added into dh_{t-1} */                                         \
            da_W_##SUFFIX(carried, H, da_t, &w, 1, dh + offsets[t_prev] * H, H);                   \
        }                                                                                          \
        /* rows that began at step t from h0: their dh_next is dL/dh_0 */                          \
        da_W_##SUFFIX(b - carried, H, da_t + (int64_t)carried * H, &w, 0,                          \
                      dh0 + (int64_t)carried * H, H);                                              \
    }                                                                                              \
    restore_threads(threads);                                                                      \
    free(w.small);                                                                                 \
    free(w.packed);                                                                                \
}

DEFINE_STEPS(f32, float, sgemm, tanh_f)
DEFINE_STEPS(f64, double, dgemm, tanh_d)
