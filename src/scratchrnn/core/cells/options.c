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
 *   dγ = Σ_t dâ ⊙ n̂;   dβ = Σ_t dâ                       (summed in Python from the dâ left in `res`)
 * Included by _steps.c, whose driver runs the loops and the products. The forward is the Elman
 * cell's fused path (G = 1, product_into_out): `out` already holds x_t W_ihᵀ, the driver adds
 * h_{t-1} W_hhᵀ into it, and the step makes the rest of a row in place. The backward reads per row
 * what Options.residuals recomputes vectorised after the forward (two GEMMs over all steps):
 *   res = [f'(â) | n̂ | rstd | γ | z]   (n̂, rstd, γ with ln; z with zo; width H(1 + 2ln + zo) + ln)
 * turns dh_t into da_t in place, and overwrites f'(â) with dâ for dγ and dβ.
 * Recurrent dropout (h_{t-1} ⊙ m into W_hh) is not here: it runs the PyTorch loop. */

#define OPTIONS_EPS 1e-5

typedef struct {
    const void *bias, *gamma, *beta; /* (H) each, or NULL: no bias; no layer norm */
    const void *z;                   /* (rows x H) zoneout mask, or NULL */
    void *res;                       /* the backward's (rows x width), see above */
    int relu, ln, zo, width;
} options_state;

#define DEFINE_OPTIONS(SUFFIX, REAL, TANH)                                                         \
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
            REAL sum = 0, sq = 0;                                                                  \
            for (int j = 0; j < H; j++) sum += a[j];                                               \
            REAL mu = sum / H; /* μ */                                                             \
            for (int j = 0; j < H; j++) sq += (a[j] - mu) * (a[j] - mu);                           \
            REAL rstd = (REAL)rsqrt_d((double)(sq / H + (REAL)OPTIONS_EPS)); /* 1 / √(σ² + ε) */                  \
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
/* One step of the backward: dh_t -> da_t in place, the direct path into dL/dh_{t-1} (or dL/dh_0 \
 * for rows that started from h0), dâ into res's first H columns. */                               \
static const REAL *options_backward_##SUFFIX(const void *state, const backward_step_##SUFFIX *s) { \
    const options_state *cell = state;                                                             \
    int H = s->H, W = cell->width;                                                                 \
    for (int r = 0; r < s->rows; r++) {                                                            \
        REAL *d = s->dh_t + (int64_t)r * H;                                                        \
        REAL *res = (REAL *)cell->res + (s->first + r) * W;                                        \
        REAL *fprime = res; /* f'(â), overwritten with dâ */                                       \
        if (cell->zo) {                                                                            \
            const REAL *z = res + (cell->ln ? 3 * H + 1 : H);                                      \
            if (r < s->carried) { /* dh_{t-1} += dh ⊙ z */                                         \
                REAL *dh_prev = s->dh_prev + (int64_t)r * H;                                       \
                for (int j = 0; j < H; j++) dh_prev[j] += d[j] * z[j];                             \
            } else { /* the direct part of dL/dh_0 (the driver adds da W_hh to it) */              \
                REAL *dh0 = s->dh0 + (int64_t)r * H;                                               \
                for (int j = 0; j < H; j++) dh0[j] = d[j] * z[j];                                  \
            }                                                                                      \
            for (int j = 0; j < H; j++) d[j] = d[j] * (1 - z[j]); /* dh̃ = dh ⊙ (1 − z) */          \
        }                                                                                          \
        if (!cell->ln) {                                                                           \
            for (int j = 0; j < H; j++) d[j] = d[j] * fprime[j]; /* da = dâ = dh̃ ⊙ f'(â) */        \
            continue;                                                                              \
        }                                                                                          \
        const REAL *n_hat = res + H, *gamma = res + 2 * H + 1;                                     \
        REAL rstd = res[2 * H], mean_g = 0, mean_gn = 0;                                           \
        for (int j = 0; j < H; j++) {                                                              \
            REAL da_hat = d[j] * fprime[j]; /* dâ = dh̃ ⊙ f'(â) */                                  \
            REAL g = gamma[j] * da_hat;     /* g = γ ⊙ dâ */                                       \
            fprime[j] = da_hat;                                                                    \
            d[j] = g;                                                                              \
            mean_g += g;                                                                           \
            mean_gn += g * n_hat[j];                                                               \
        }                                                                                          \
        mean_g /= H;                                                                               \
        mean_gn /= H;                                                                              \
        /* da = (g − mean(g) − n̂ ⊙ mean(g ⊙ n̂)) ⊙ rstd */                                           \
        for (int j = 0; j < H; j++) d[j] = (d[j] - mean_g - n_hat[j] * mean_gn) * rstd;            \
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
    options_state state = {bias, gamma, beta, z, NULL, relu, gamma != NULL, z != NULL, 0};        \
    cell_##SUFFIX cell = {1, 1, 0, options_forward_##SUFFIX, options_backward_##SUFFIX, &state};   \
    return forward_loop_##SUFFIX(&cell, (int)T, sizes, offsets, (int)H, out, (int)ld_out, h0, W_hh, \
                                 h_n, reverse);                                                    \
}                                                                                                  \
                                                                                                   \
/* Backward: `dh` (rows x H, contiguous) holds dL/dh_t from the output, with dL/dh_n already added \
 * at each sequence's last step; it is overwritten with da_t. `res` (rows x width, contiguous) as \
 * above, its first H columns overwritten with dâ; width must be H(1 + 2ln + zo) + ln. dh0 (N x H) \
 * receives dL/dh_0. `out` is where the forward left h_t (only its layout is used). */             \
int scratchrnn_options_backward_##SUFFIX(                                                          \
    int64_t T, const int64_t *sizes, const int64_t *offsets, int64_t H, REAL *dh, int64_t dh_len,  \
    const REAL *out, int64_t out_len, int64_t ld_out, const REAL *W_hh, int64_t W_hh_len, REAL *res, \
    int64_t res_len, int64_t width, REAL *dh0, int64_t dh0_len, int reverse, int ln, int zo) {    \
    int64_t rows = checked_rows(T, sizes, offsets);                                                \
    ln = ln != 0, zo = zo != 0;                                                                    \
    if (rows < 0 || !good_width(H, 4, ld_out, H) || width != H * (1 + 2 * ln + zo) + ln)           \
        return STEPS_BAD_SIZES;                                                                    \
    int64_t N = sizes[0];                                                                          \
    if (!holds(dh, dh_len, rows, H, H) || !holds(out, out_len, rows, H, ld_out)                    \
        || !holds(res, res_len, rows, width, width) || !holds(dh0, dh0_len, N, H, H) || !W_hh      \
        || W_hh_len != H * H)                                                                      \
        return STEPS_BAD_BUFFER;                                                                   \
    options_state state = {NULL, NULL, NULL, NULL, res, 0, ln, zo, (int)width};                    \
    cell_##SUFFIX cell = {1, 1, zo, options_forward_##SUFFIX, options_backward_##SUFFIX, &state};  \
    return backward_loop_##SUFFIX(&cell, (int)T, sizes, offsets, (int)H, dh, out, (int)ld_out, NULL, \
                                  W_hh, dh0, reverse);                                             \
}

DEFINE_OPTIONS(f32, float, tanh_f)
DEFINE_OPTIONS(f64, double, tanh_d)
