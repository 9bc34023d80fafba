/* The sequential part of the RNN — the per-step loops of layer_forward and layer_backward in
 * rnn.py — in C, for float32 and float64 on the CPU. The same equations, the same order, the same
 * packed-sequence bookkeeping as the Python loops there, which stay the reference and the fallback.
 *
 * Why: each step's work is small (an (N, H) x (H, H) GEMM and an elementwise pass), so in Python
 * the cost of issuing ops dominates for small N and H. Here a step costs a BLAS call and a loop.
 * BLAS (sgemm_/dgemm_) is the one PyTorch's own CPU library carries; Python hands us its addresses
 * (see accel.py), so we link nothing. tanh is our own (tanh_d below): a loop the compiler turns
 * into SIMD code, several times faster here than the scalar libm/VML tanh PyTorch calls.
 *
 * Layout (as in rnn.py): time-major rows, step t holding sizes[t] rows; row-major matrices, so a
 * BLAS (column-major) call sees every matrix transposed. `ld_out` is the row stride of the output
 * (H, or 2H when both directions of a bidirectional layer share one buffer).
 */
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

static gemm_f32 sgemm;
static gemm_f64 dgemm;
static pack_size_f sgemm_pack_size;
static pack_f sgemm_pack;
static compute_f sgemm_compute;

/* Up to which H the forward wants W_hh^T too (for the small kernel; the caller packs it). */
int scratchrnn_small_max_h(void) { return SMALL_MAX_H; }

void scratchrnn_init(void *s_gemm, void *d_gemm, void *pack_size, void *pack, void *compute) {
    sgemm = (gemm_f32)s_gemm;
    dgemm = (gemm_f64)d_gemm;
    sgemm_pack_size = (pack_size_f)pack_size;
    sgemm_pack = (pack_f)pack;
    sgemm_compute = (compute_f)compute;
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

/* tanh in double precision, branch-free so that loops over it vectorise:
 *   tanh|x| = −m / (2 + m),  m = expm1(−2|x|)  (no cancellation near 0, no overflow),
 *   expm1(y) = 2^k (expm1(r) + 1) − 1  with  y = k ln2 + r, |r| ≤ ln2 / 2,
 * expm1(r) by its Taylor series to r^13 (truncation < 1e-17 relative). Max error: a few ulp in
 * double, so float results are correctly rounded or within one ulp. NaN in, NaN out. */
static inline double tanh_d(double x) {
    double ax = x < 0 ? -x : x;
    /* tanh(20) rounds to 1 in double; written so that a NaN fails the test and stays NaN
     * (it then propagates through every operation below, as in nn.RNN), and ±inf gives ±1 */
    ax = ax > 20.0 ? 20.0 : ax;
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
    double th = -m / (2.0 + m);
    return x < 0 ? -th : th;
}

void scratchrnn_tanh_f32(int64_t n, float *a) {
    for (int64_t i = 0; i < n; i++) a[i] = (float)tanh_d(a[i]);
}

void scratchrnn_tanh_f64(int64_t n, double *a) {
    for (int64_t i = 0; i < n; i++) a[i] = tanh_d(a[i]);
}

/* The small GEMM, C (rows x H, row stride ldc) = beta C + A (rows x H, row stride lda) @ B, with
 * B row-major (H x H) and beta 0 or 1 (0: C is not read), without BLAS: for a few rows the call
 * into BLAS costs more than the arithmetic. One block of RB rows x CB columns of C stays in
 * registers over the whole sum (k in order, as in BLAS's own microkernel); RB and CB are
 * constants, so the j loop vectorises and the accumulators are registers: 4 x 32 (8 AVX-512
 * vectors of floats) for groups of four rows, 1 x 128 (8 vectors) for a lone row, enough
 * independent chains to hide the FMA latency. Edges (H not a multiple of CB) take the same loop
 * with run-time bounds. */
#define SMALL_BLOCK(SUFFIX, REAL, RB, CB)                                                          \
static void block_##RB##x##CB##_##SUFFIX(int H, const REAL *A, int lda, const REAL *B, REAL beta, \
                                         REAL *C, int ldc, int nj) {                               \
    REAL acc[RB][CB] = {{0}};                                                                      \
    if (nj == CB) {                                                                                \
        for (int k = 0; k < H; k++)                                                                \
            for (int r = 0; r < RB; r++)                                                           \
                for (int j = 0; j < CB; j++) acc[r][j] += A[(int64_t)r * lda + k] * B[(int64_t)k * H + j]; \
    } else {                                                                                       \
        for (int k = 0; k < H; k++)                                                                \
            for (int r = 0; r < RB; r++)                                                           \
                for (int j = 0; j < nj; j++) acc[r][j] += A[(int64_t)r * lda + k] * B[(int64_t)k * H + j]; \
    }                                                                                              \
    for (int r = 0; r < RB; r++)                                                                   \
        for (int j = 0; j < nj; j++)                                                               \
            C[(int64_t)r * ldc + j] = beta == 0 ? acc[r][j] : C[(int64_t)r * ldc + j] + acc[r][j]; \
}

#define DEFINE_SMALL_GEMM(SUFFIX, REAL)                                                            \
SMALL_BLOCK(SUFFIX, REAL, 4, 32)                                                                   \
SMALL_BLOCK(SUFFIX, REAL, 1, 128)                                                                  \
static void small_gemm_##SUFFIX(int rows, int H, const REAL *A, int lda, const REAL *B, REAL beta, \
                                REAL *C, int ldc) {                                                \
    int r0 = 0;                                                                                    \
    for (; r0 + 4 <= rows; r0 += 4)                                                                \
        for (int j0 = 0; j0 < H; j0 += 32)                                                         \
            block_4x32_##SUFFIX(H, A + (int64_t)r0 * lda, lda, B + j0, beta,                       \
                                C + (int64_t)r0 * ldc + j0, ldc, H - j0 < 32 ? H - j0 : 32);       \
    for (; r0 < rows; r0++)                                                                        \
        for (int j0 = 0; j0 < H; j0 += 128)                                                        \
            block_1x128_##SUFFIX(H, A + (int64_t)r0 * lda, lda, B + j0, beta,                      \
                                 C + (int64_t)r0 * ldc + j0, ldc, H - j0 < 128 ? H - j0 : 128);    \
}

DEFINE_SMALL_GEMM(f32, float)
DEFINE_SMALL_GEMM(f64, double)

/* The two templates below are instantiated for float (f32) and double (f64). */
#define DEFINE_STEPS(SUFFIX, REAL, GEMM, TANH)                                                     \
                                                                                                   \
/* W_hh in the forms the step products read: as is (BLAS), W_hh^T row-major (the small kernel),   \
 * packed for `packed_rows`-row products (MKL's packed API; NULL without). */                    \
typedef struct {                                                                                   \
    const REAL *W, *W_T;                                                                           \
    REAL *packed;                                                                                  \
    int packed_rows;                                                                               \
} weights_##SUFFIX;                                                                                \
                                                                                                   \
/* C (rows x H, row stride ldc) += A (rows x H, row stride lda) @ W^T, W row-major (H x H):       \
 * in column-major terms C^T += W A^T, so W is read transposed. */                                 \
static void a_plus_h_WT_##SUFFIX(int rows, int H, const REAL *A, int lda, const weights_##SUFFIX *w, \
                                 REAL *C, int ldc) {                                               \
    const REAL one = 1;                                                                            \
    if (rows <= 0) return;                                                                         \
    if (USE_SMALL(rows, H))                                                                        \
        small_gemm_##SUFFIX(rows, H, A, lda, w->W_T, one, C, ldc);                                 \
    else if (w->packed && rows == w->packed_rows)                                                  \
        packed_gemm_##SUFFIX(rows, H, A, lda, w->packed, one, C, ldc);                             \
    else                                                                                           \
        GEMM("T", "N", &H, &rows, &H, &one, w->W, &H, A, &lda, &one, C, &ldc);                     \
}                                                                                                  \
                                                                                                   \
/* C (rows x H, row stride ldc) = beta C + A (rows x H, contiguous) @ W (row-major H x H);        \
 * here w->packed holds W itself. */                                                               \
static void da_W_##SUFFIX(int rows, int H, const REAL *A, const weights_##SUFFIX *w, REAL beta,   \
                          REAL *C, int ldc) {                                                      \
    const REAL one = 1;                                                                            \
    if (rows <= 0) return;                                                                         \
    if (USE_SMALL(rows, H))                                                                        \
        small_gemm_##SUFFIX(rows, H, A, H, w->W, beta, C, ldc);                                    \
    else if (w->packed && rows == w->packed_rows)                                                  \
        packed_gemm_##SUFFIX(rows, H, A, H, w->packed, beta, C, ldc);                              \
    else                                                                                           \
        GEMM("N", "N", &H, &rows, &H, &one, w->W, &H, A, &H, &beta, C, &ldc);                      \
}                                                                                                  \
                                                                                                   \
static void activate_##SUFFIX(int rows, int H, REAL *a, int lda, int relu) {                      \
    for (int r = 0; r < rows; r++) {                                                               \
        REAL *row = a + (int64_t)r * lda;                                                          \
        if (relu) {                                                                                \
            /* relu as torch's: NaN fails `< 0` and passes through (never becomes 0) */            \
            for (int j = 0; j < H; j++) row[j] = row[j] < 0 ? 0 : row[j];                          \
        } else if (lda == H) { /* contiguous: one call for all rows */                             \
            TANH((int64_t)rows * H, a);                                                            \
            return;                                                                                \
        } else {                                                                                   \
            TANH(H, row);                                                                          \
        }                                                                                          \
    }                                                                                              \
}                                                                                                  \
                                                                                                   \
/* Forward. `out` already holds x_t W_ih^T + b for every row; each step adds h_{t-1} W_hh^T and   \
 * applies the nonlinearity in place. h_n (N x H, contiguous) receives each sequence's last h_t.  \
 * `offsets[t]` is the first row of step t. */                                                     \
void scratchrnn_forward_##SUFFIX(int T, const int64_t *sizes, const int64_t *offsets, int H,      \
                                 REAL *out, int ld_out, const REAL *h0, const REAL *W_hh,          \
                                 const REAL *W_hh_T, REAL *h_n, int reverse, int relu) {           \
    const REAL *h_prev = h0;                                                                       \
    int ld_prev = H;                                                                               \
    int b_prev = (int)sizes[reverse ? T - 1 : 0];                                                  \
    int N = (int)sizes[0]; /* the widest step: every step of a padded batch */                     \
    weights_##SUFFIX w = {W_hh, W_hh_T, pack_##SUFFIX(N, H, W_hh, 1), N};                          \
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
        activate_##SUFFIX(b, H, a_t, ld_out, relu);                                                \
        h_prev = a_t;                                                                              \
        ld_prev = ld_out;                                                                          \
        b_prev = b;                                                                                \
    }                                                                                              \
    for (int r = 0; r < b_prev; r++)                                                               \
        for (int j = 0; j < H; j++) h_n[(int64_t)r * H + j] = h_prev[(int64_t)r * ld_prev + j];    \
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
    weights_##SUFFIX w = {W_hh, W_hh, pack_##SUFFIX(N, H, W_hh, 0), N};                            \
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
    free(w.packed);                                                                                \
}

DEFINE_STEPS(f32, float, sgemm, scratchrnn_tanh_f32)
DEFINE_STEPS(f64, double, dgemm, scratchrnn_tanh_f64)
