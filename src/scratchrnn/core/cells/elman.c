/* The Elman cell's steps in C (the Python twin: core/cells/elman.py):
 *   a_t = x_t W_ihᵀ + b_ih + h_{t-1} W_hhᵀ + b_hh,  h_t = f(a_t),  f = tanh or relu
 *   da_t = dh_t ⊙ f'(a_t)  (tanh: 1 − h_t², recomputed from h_t),  dh_{t-1} += da_t W_hh
 * Included by _steps.c, whose driver runs the loops and the products. The forward is the fused
 * path: `out` already holds x_t W_ihᵀ and the driver accumulates h_{t-1} W_hhᵀ into it (G = 1,
 * product_into_out), so the step only adds the bias = b_ih + b_hh and applies f, in the one pass
 * over a_t that f makes anyway (not a pass of its own over `out`). The backward step turns dh_t
 * into da_t in place: da_t is the dL/dhp_t that the driver multiplies by W_hh. */

typedef struct {
    const void *bias; /* b_ih + b_hh (H), or NULL */
    int relu;
} elman_state;

#define DEFINE_ELMAN(SUFFIX, REAL, TANH)                                                           \
/* a_t += bias (when given), then h_t = f(a_t), in place, row by row (a row is in L1 by now). */   \
static void elman_forward_##SUFFIX(const void *state, const forward_step_##SUFFIX *s) {           \
    const elman_state *cell = state;                                                               \
    const REAL *bias = cell->bias;                                                                 \
    int H = s->H;                                                                                  \
    for (int r = 0; r < s->rows; r++) {                                                            \
        REAL *a_t = s->h_t + (int64_t)r * s->ld_out;                                               \
        if (bias)                                                                                  \
            for (int j = 0; j < H; j++) a_t[j] += bias[j]; /* + b_ih + b_hh */                     \
        if (cell->relu) /* relu as torch's: NaN fails `< 0` and passes through (never becomes 0) */ \
            for (int j = 0; j < H; j++) a_t[j] = a_t[j] < 0 ? 0 : a_t[j];                          \
        else                                                                                       \
            for (int j = 0; j < H; j++) a_t[j] = TANH(a_t[j]);                                     \
    }                                                                                              \
}                                                                                                  \
                                                                                                   \
/* da_t = dh_t ⊙ f'(a_t), over dh_t in place. */                                                   \
static const REAL *elman_backward_##SUFFIX(const void *state, const backward_step_##SUFFIX *s) {  \
    const elman_state *cell = state;                                                               \
    int H = s->H;                                                                                  \
    for (int r = 0; r < s->rows; r++) {                                                            \
        REAL *d = s->dh_t + (int64_t)r * H;                                                        \
        const REAL *h = s->h_t + (int64_t)r * s->ld_out;                                           \
        if (cell->relu) {                                                                          \
            /* nn.RNN's relu backward (threshold_backward): 0 where h <= 0, else dh, so a NaN h   \
             * passes dh on and a NaN dh where h <= 0 becomes 0, as there */                       \
            for (int j = 0; j < H; j++) d[j] = h[j] <= 0 ? 0 : d[j];                               \
        } else {                                                                                   \
            for (int j = 0; j < H; j++) d[j] *= 1 - h[j] * h[j];                                   \
        }                                                                                          \
    }                                                                                              \
    return s->dh_t;                                                                                \
}                                                                                                  \
                                                                                                   \
/* Forward: `out` (rows x H, row stride ld_out) holds x_t W_ihᵀ and receives h_t; h_n (N x H)    \
 * each sequence's last h_t. Each pointer comes with its length in elements, checked with the   \
 * step sizes before anything is read. Returns STEPS_OK or the error. */                           \
int scratchrnn_forward_##SUFFIX(int64_t T, const int64_t *sizes, const int64_t *offsets, int64_t H, \
                                REAL *out, int64_t out_len, int64_t ld_out, const REAL *h0,        \
                                int64_t h0_len, const REAL *W_hh, int64_t W_hh_len, const REAL *bias, \
                                int64_t bias_len, REAL *h_n, int64_t h_n_len, int reverse, int relu) { \
    int64_t rows = checked_rows(T, sizes, offsets);                                                \
    if (rows < 0 || !good_width(H, 1, ld_out, H)) return STEPS_BAD_SIZES;                          \
    int64_t N = sizes[0];                                                                          \
    if (!holds(out, out_len, rows, H, ld_out) || !holds(h0, h0_len, N, H, H)                       \
        || !holds(h_n, h_n_len, N, H, H) || !W_hh || W_hh_len != H * H || (bias && bias_len != H)) \
        return STEPS_BAD_BUFFER;                                                                   \
    elman_state state = {bias, relu};                                                              \
    cell_##SUFFIX cell = {1, 1, 0, elman_forward_##SUFFIX, elman_backward_##SUFFIX, &state};       \
    return forward_loop_##SUFFIX(&cell, (int)T, sizes, offsets, (int)H, out, (int)ld_out, h0, W_hh, \
                                 h_n, reverse);                                                    \
}                                                                                                  \
                                                                                                   \
/* Backward: `dh` (rows x H, contiguous) holds dL/dh_t from the output, with dL/dh_n already added \
 * at each sequence's last step; it is overwritten with da_t. dh0 (N x H) receives dL/dh_0. */    \
int scratchrnn_backward_##SUFFIX(int64_t T, const int64_t *sizes, const int64_t *offsets, int64_t H, \
                                 REAL *dh, int64_t dh_len, const REAL *out, int64_t out_len,       \
                                 int64_t ld_out, const REAL *W_hh, int64_t W_hh_len, REAL *dh0,    \
                                 int64_t dh0_len, int reverse, int relu) {                         \
    int64_t rows = checked_rows(T, sizes, offsets);                                                \
    if (rows < 0 || !good_width(H, 1, ld_out, H)) return STEPS_BAD_SIZES;                          \
    int64_t N = sizes[0];                                                                          \
    if (!holds(dh, dh_len, rows, H, H) || !holds(out, out_len, rows, H, ld_out)                    \
        || !holds(dh0, dh0_len, N, H, H) || !W_hh || W_hh_len != H * H)                            \
        return STEPS_BAD_BUFFER;                                                                   \
    elman_state state = {NULL, relu};                                                              \
    cell_##SUFFIX cell = {1, 1, 0, elman_forward_##SUFFIX, elman_backward_##SUFFIX, &state};       \
    return backward_loop_##SUFFIX(&cell, (int)T, sizes, offsets, (int)H, dh, out, (int)ld_out, NULL, \
                                  W_hh, dh0, reverse);                                             \
}

DEFINE_ELMAN(f32, float, tanh_f)
DEFINE_ELMAN(f64, double, tanh_d)
