/* The cell options of issue 19 on the Elman cell, in C (the Python twin: core/cells/options.py):
 * layer norm (ln) and zoneout (zo), alone or together, f = tanh or relu. One line per equation,
 * the names as in the code below (rows are batch elements, means over the H units of a row):
 *   a_t  = x_t W_ihᵀ + b_ih + h_{t-1} W_hhᵀ + b_hh
 *   μ    = mean(a_t);   σ² = mean((a_t − μ)²);   rstd = 1 / √(σ² + ε),  ε = 1e-5       (ln)
 *   n̂    = (a_t − μ) ⊙ rstd;   â_t = γ ⊙ n̂ + β                                         (ln; else â_t = a_t)
 *   h̃_t  = f(â_t)
 *   h_t  = z_t ⊙ h_{t-1} + (1 − z_t) ⊙ h̃_t                                              (zo; else h_t = h̃_t)
 * Backward, given dh_t (dL/dh_t, complete):
 *   dh̃   = dh_t ⊙ (1 − z_t);   dh_{t-1} += dh_t ⊙ z_t   (the direct path; zo)
 *   dâ   = dh̃ ⊙ f'(â_t)
 *   g    = γ ⊙ dâ;   da_t = (g − mean(g) − n̂ ⊙ mean(g ⊙ n̂)) ⊙ rstd                     (ln; else da_t = dâ)
 *   dxp_t = dhp_t = da_t;   dh_{t-1} += da_t W_hh        (the driver's product)
 *   dγ = Σ_t dâ ⊙ n̂;   dβ = Σ_t dâ                       (each row's share written; summed by the stack)
 * Included by _steps.c, whose driver runs the loops and the products. The forward is the Elman
 * cell's fused path (G = 1, product_into_out): `out` already holds x_t W_ihᵀ, the driver adds
 * h_{t-1} W_hhᵀ into it, and the step makes the rest of a row in place. Nothing is saved: the
 * backward reads a_t, recomputed after the forward by two GEMMs over all steps (as the Python
 * twin's residuals), and recomputes μ, rstd, n̂, â and f'(â) from it row by row (the row is in L1),
 * then turns dh_t into da_t in place.
 * Recurrent dropout (h_{t-1} ⊙ m into W_hh) is not here: it runs the PyTorch loop. */

#define OPTIONS_EPS 1e-5

typedef struct {
    const void *bias, *gamma, *beta; /* (H) each, or NULL: no bias; no layer norm */
    const void *z;                   /* (rows x H) zoneout mask, or NULL */
    const void *a;                   /* the backward's a_t (rows x H) */
    void *dextra;                    /* the backward's [dâ ⊙ n̂ | dâ] rows (rows x 2H), or NULL */
    int relu, ln, zo;
} options_state;

/* The reductions over a row (means over H) run on 8 partial sums, which the compiler keeps in
 * one vector register: a single running sum would chain every addition on the one before (no
 * SIMD without -ffast-math), the slowest loop of the step at H = 640. */
#define DEFINE_OPTIONS(SUFFIX, REAL, TANH)                                                         \
/* Σ_j (x_j − c)(y_j − c'), with y = NULL meaning x − c itself (a sum of squares) and c = c' = 0 \
 * giving a plain Σ x_j or Σ x_j y_j. */                                                            \
static inline REAL row_sum_##SUFFIX(const REAL *restrict x, REAL c, const REAL *restrict y,       \
                                    REAL c2, int H) {                                              \
    REAL part[8] = {0};                                                                            \
    int j = 0;                                                                                     \
    if (y)                                                                                         \
        for (; j + 8 <= H; j += 8)                                                                 \
            for (int k = 0; k < 8; k++) part[k] += (x[j + k] - c) * (y[j + k] - c2);               \
    else                                                                                           \
        for (; j + 8 <= H; j += 8)                                                                 \
            for (int k = 0; k < 8; k++) part[k] += (x[j + k] - c) * (x[j + k] - c);                \
    REAL sum = 0;                                                                                  \
    for (; j < H; j++) sum += y ? (x[j] - c) * (y[j] - c2) : (x[j] - c) * (x[j] - c);              \
    for (int k = 0; k < 8; k++) sum += part[k];                                                    \
    return sum;                                                                                    \
}                                                                                                  \
                                                                                                   \
/* The LN backward's elementwise pass over a row (`relu` a constant at each call: one loop each,  \
 * no branch inside, vectorised; the buffers never overlap, hence restrict):                     \
 * n̂ = (a − μ) rstd, â = γ ⊙ n̂ + β, dâ = dh̃ ⊙ f'(â), the row's dγ, dβ shares; d <- g = γ ⊙ dâ. */ \
static inline __attribute__((always_inline)) void ln_backward_row_##SUFFIX(                       \
    int H, const REAL *restrict a, const REAL *restrict gamma, const REAL *restrict beta, REAL mu,  \
    REAL rstd, REAL *restrict d, REAL *restrict dextra, int relu) {                                \
    for (int j = 0; j < H; j++) {                                                                  \
        REAL n_hat = (a[j] - mu) * rstd;                                                           \
        REAL a_hat = gamma[j] * n_hat + beta[j];                                                   \
        REAL h = relu ? 0 : TANH(a_hat);                                                           \
        REAL fprime = relu ? (REAL)(a_hat > 0) : 1 - h * h; /* f'(â) */                            \
        REAL da_hat = d[j] * fprime;                                                               \
        dextra[j] = da_hat * n_hat;                                                                \
        dextra[H + j] = da_hat;                                                                    \
        d[j] = gamma[j] * da_hat;                                                                  \
    }                                                                                              \
}                                                                                                  \
                                                                                                   \
/* Zoneout's backward over a row: the direct path dh ⊙ z added into dL/dh_{t-1} (`accumulate`) or \
 * written as dL/dh_0's first part, then dh̃ = dh ⊙ (1 − z) in place. */                           \
static inline __attribute__((always_inline)) void zo_backward_row_##SUFFIX(                       \
    int H, const REAL *restrict z, REAL *restrict d, REAL *restrict direct, int accumulate) {      \
    for (int j = 0; j < H; j++) {                                                                  \
        direct[j] = accumulate ? direct[j] + d[j] * z[j] : d[j] * z[j];                            \
        d[j] = d[j] * (1 - z[j]);                                                                  \
    }                                                                                              \
}                                                                                                  \
                                                                                                   \
/* Without layer norm (â = a): da = dh̃ ⊙ f'(a), f' = 1 − f(a)² or relu's [a > 0] as a 0/1 factor \
 * (the Python twin's: f'(â) is a float tensor there), over d in place. */                         \
static inline __attribute__((always_inline)) void fprime_row_##SUFFIX(                            \
    int H, const REAL *restrict a, REAL *restrict d, int relu) {                                   \
    for (int j = 0; j < H; j++) {                                                                  \
        REAL h = relu ? 0 : TANH(a[j]);                                                            \
        d[j] = d[j] * (relu ? (REAL)(a[j] > 0) : 1 - h * h);                                       \
    }                                                                                              \
}                                                                                                  \
                                                                                                   \
/* The last pass: da = (g − mean(g) − n̂ ⊙ mean(g ⊙ n̂)) ⊙ rstd, over d = g in place. */           \
static inline void ln_backward_final_##SUFFIX(int H, const REAL *restrict a, REAL mu, REAL rstd,  \
                                              REAL mean_g, REAL mean_gn, REAL *restrict d) {      \
    for (int j = 0; j < H; j++) d[j] = (d[j] - mean_g - ((a[j] - mu) * rstd) * mean_gn) * rstd;    \
}                                                                                                  \
                                                                                                   \
static inline REAL row_mean_##SUFFIX(const REAL *restrict x, int H) {                              \
    REAL part[8] = {0};                                                                            \
    int j = 0;                                                                                     \
    for (; j + 8 <= H; j += 8)                                                                     \
        for (int k = 0; k < 8; k++) part[k] += x[j + k];                                           \
    REAL sum = 0;                                                                                  \
    for (; j < H; j++) sum += x[j];                                                                \
    for (int k = 0; k < 8; k++) sum += part[k];                                                    \
    return sum / H;                                                                                \
}                                                                                                  \
                                                                                                   \
/* One row of the forward, in place over a_t (the output row): + bias, layer norm, f, zoneout. */ \
static void options_forward_##SUFFIX(const void *state, const forward_step_##SUFFIX *s) {         \
    const options_state *cell = state;                                                             \
    const REAL *bias = cell->bias, *gamma = cell->gamma, *beta = cell->beta;                       \
    int H = s->H;                                                                                  \
    for (int r = 0; r < s->rows; r++) {                                                            \
        REAL *a = s->h_t + (int64_t)r * s->ld_out;                                                 \
        if (bias)                                                                                  \
            for (int j = 0; j < H; j++) a[j] += bias[j]; /* + b_ih + b_hh */                       \
        if (cell->ln) {                                                                            \
            REAL mu = row_mean_##SUFFIX(a, H); /* μ */                                             \
            REAL var = row_sum_##SUFFIX(a, mu, NULL, 0, H) / H; /* σ² */                           \
            REAL rstd = (REAL)rsqrt_d((double)(var + (REAL)OPTIONS_EPS)); /* 1 / √(σ² + ε) */      \
            for (int j = 0; j < H; j++) a[j] = gamma[j] * ((a[j] - mu) * rstd) + beta[j]; /* â */ \
        }                                                                                          \
        if (cell->relu) /* h̃ = f(â); relu as torch's: NaN passes through */                        \
            for (int j = 0; j < H; j++) a[j] = a[j] < 0 ? 0 : a[j];                                \
        else                                                                                       \
            for (int j = 0; j < H; j++) a[j] = TANH(a[j]);                                         \
        if (cell->zo) { /* h_t = z ⊙ h_{t-1} + (1 − z) ⊙ h̃_t */                                    \
            const REAL *z = (const REAL *)cell->z + (s->first + r) * H;                            \
            const REAL *h_prev = r < s->carried ? s->h_prev + (int64_t)r * s->ld_prev              \
                                                : s->h0 + (int64_t)r * H;                          \
            for (int j = 0; j < H; j++) a[j] = z[j] * h_prev[j] + (1 - z[j]) * a[j];               \
        }                                                                                          \
    }                                                                                              \
}                                                                                                  \
                                                                                                   \
/* One step of the backward: recomputes the row's n̂, â and f'(â) from a_t (in L1 now), sends the \
 * direct path into dL/dh_{t-1} (or dL/dh_0 for rows that started from h0), turns dh_t into da_t \
 * in place and writes the row's [dâ ⊙ n̂ | dâ] (summed into dγ, dβ by the stack). */              \
static const REAL *options_backward_##SUFFIX(const void *state, const backward_step_##SUFFIX *s) { \
    const options_state *cell = state;                                                             \
    const REAL *gamma = cell->gamma, *beta = cell->beta;                                           \
    int H = s->H;                                                                                  \
    for (int r = 0; r < s->rows; r++) {                                                            \
        REAL *d = s->dh_t + (int64_t)r * H;                                                        \
        const REAL *a = (const REAL *)cell->a + (s->first + r) * H;                                \
        if (cell->zo) {                                                                            \
            const REAL *z = (const REAL *)cell->z + (s->first + r) * H;                            \
            if (r < s->carried) /* dh_{t-1} += dh ⊙ z */                                           \
                zo_backward_row_##SUFFIX(H, z, d, s->dh_prev + (int64_t)r * H, 1);                 \
            else /* the direct part of dL/dh_0 (the driver adds da W_hh to it) */                  \
                zo_backward_row_##SUFFIX(H, z, d, s->dh0 + (int64_t)r * H, 0);                     \
        }                                                                                          \
        if (!cell->ln) { /* â = a: da = dh̃ ⊙ f'(a) */                                              \
            if (cell->relu)                                                                        \
                fprime_row_##SUFFIX(H, a, d, 1);                                                   \
            else                                                                                   \
                fprime_row_##SUFFIX(H, a, d, 0);                                                   \
            continue;                                                                              \
        }                                                                                          \
        REAL mu = row_mean_##SUFFIX(a, H); /* μ */                                                 \
        REAL var = row_sum_##SUFFIX(a, mu, NULL, 0, H) / H; /* σ² */                               \
        REAL rstd = (REAL)rsqrt_d((double)(var + (REAL)OPTIONS_EPS)); /* 1 / √(σ² + ε) */          \
        REAL *dextra = (REAL *)cell->dextra + (s->first + r) * 2 * H;                              \
        if (cell->relu)                                                                            \
            ln_backward_row_##SUFFIX(H, a, gamma, beta, mu, rstd, d, dextra, 1);                   \
        else                                                                                       \
            ln_backward_row_##SUFFIX(H, a, gamma, beta, mu, rstd, d, dextra, 0);                   \
        REAL mean_g = row_mean_##SUFFIX(d, H);                                  /* mean(g) */      \
        REAL mean_gn = row_sum_##SUFFIX(d, 0, a, mu, H) * rstd / H;             /* mean(g ⊙ n̂) */  \
        ln_backward_final_##SUFFIX(H, a, mu, rstd, mean_g, mean_gn, d); /* da */                   \
    }                                                                                              \
    return s->dh_t;                                                                                \
}                                                                                                  \
                                                                                                   \
/* Forward: `out` (rows x H, row stride ld_out) holds x_t W_ihᵀ and receives h_t; h_n (N x H)    \
 * each sequence's last h_t; bias, gamma, beta (H) or NULL (gamma and beta together: layer norm); \
 * z (rows x H, contiguous) the zoneout mask or NULL. Each pointer comes with its length in       \
 * elements, checked with the step sizes before anything is read. Returns STEPS_OK or the error. */ \
int scratchrnn_options_forward_##SUFFIX(                                                           \
    int64_t T, const int64_t *sizes, const int64_t *offsets, int64_t H, REAL *out, int64_t out_len, \
    int64_t ld_out, const REAL *h0, int64_t h0_len, const REAL *W_hh, int64_t W_hh_len,            \
    const REAL *bias, int64_t bias_len, const REAL *gamma, int64_t gamma_len, const REAL *beta,    \
    int64_t beta_len, const REAL *z, int64_t z_len, REAL *h_n, int64_t h_n_len, int reverse,       \
    int relu) {                                                                                    \
    int64_t rows = checked_rows(T, sizes, offsets);                                                \
    if (rows < 0 || !good_width(H, 1, ld_out, H)) return STEPS_BAD_SIZES;                          \
    int64_t N = sizes[0];                                                                          \
    if (!holds(out, out_len, rows, H, ld_out) || !holds(h0, h0_len, N, H, H)                       \
        || !holds(h_n, h_n_len, N, H, H) || !W_hh || W_hh_len != H * H || (bias && bias_len != H)  \
        || (!gamma != !beta) || (gamma && (gamma_len != H || beta_len != H))                       \
        || (z && !holds(z, z_len, rows, H, H)))                                                    \
        return STEPS_BAD_BUFFER;                                                                   \
    options_state state = {bias, gamma, beta, z, NULL, NULL, relu, gamma != NULL, z != NULL};        \
    cell_##SUFFIX cell = {1, 1, 0, options_forward_##SUFFIX, options_backward_##SUFFIX, &state};   \
    return forward_loop_##SUFFIX(&cell, (int)T, sizes, offsets, (int)H, out, (int)ld_out, h0, W_hh, \
                                 h_n, reverse);                                                    \
}                                                                                                  \
                                                                                                   \
/* Backward: `dh` (rows x H, contiguous) holds dL/dh_t from the output, with dL/dh_n already added \
 * at each sequence's last step; it is overwritten with da_t. `a` (rows x H, contiguous) is a_t, \
 * recomputed after the forward; gamma, beta (H), z (rows x H) as in the forward; dextra (rows x  \
 * 2H, contiguous; with layer norm) receives each row's [dâ ⊙ n̂ | dâ]; dh0 (N x H) dL/dh_0.     \
 * `out` is where the forward left h_t (only its layout is used). */                               \
int scratchrnn_options_backward_##SUFFIX(                                                          \
    int64_t T, const int64_t *sizes, const int64_t *offsets, int64_t H, REAL *dh, int64_t dh_len,  \
    const REAL *out, int64_t out_len, int64_t ld_out, const REAL *W_hh, int64_t W_hh_len,          \
    const REAL *a, int64_t a_len, const REAL *gamma, int64_t gamma_len, const REAL *beta,          \
    int64_t beta_len, const REAL *z, int64_t z_len, REAL *dextra, int64_t dextra_len, REAL *dh0,   \
    int64_t dh0_len, int reverse, int relu) {                                                      \
    int64_t rows = checked_rows(T, sizes, offsets);                                                \
    if (rows < 0 || !good_width(H, 2, ld_out, H)) return STEPS_BAD_SIZES;                          \
    int64_t N = sizes[0];                                                                          \
    if (!holds(dh, dh_len, rows, H, H) || !holds(out, out_len, rows, H, ld_out)                    \
        || !holds(a, a_len, rows, H, H) || !holds(dh0, dh0_len, N, H, H) || !W_hh                  \
        || W_hh_len != H * H || (!gamma != !beta) || (!gamma != !dextra)                           \
        || (gamma && (gamma_len != H || beta_len != H || !holds(dextra, dextra_len, rows, 2 * H, 2 * H))) \
        || (z && !holds(z, z_len, rows, H, H)))                                                    \
        return STEPS_BAD_BUFFER;                                                                   \
    options_state state = {NULL, gamma, beta, z, a, dextra, relu, gamma != NULL, z != NULL};       \
    cell_##SUFFIX cell = {1, 1, z != NULL, options_forward_##SUFFIX, options_backward_##SUFFIX, &state}; \
    return backward_loop_##SUFFIX(&cell, (int)T, sizes, offsets, (int)H, dh, out, (int)ld_out, NULL, \
                                  W_hh, dh0, reverse);                                             \
}

DEFINE_OPTIONS(f32, float, tanh_f)
DEFINE_OPTIONS(f64, double, tanh_d)
