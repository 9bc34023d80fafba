/* The GRU's steps in C (the Python twin: core/cells/gru.py), PyTorch's equations, gates
 * in r, z, n order, the reset gate applied after the recurrent product:
 *   xp_t = x_t W_ihᵀ + b_ih (before the loop: one GEMM),  hp_t = h_{t-1} W_hhᵀ + b_hh
 *   r = σ(xp_r + hp_r),  z = σ(xp_z + hp_z),  n = tanh(xp_n + r ⊙ hp_n)
 *   h_t = n + z ⊙ (h_{t-1} − n)          (= (1 − z) ⊙ n + z ⊙ h_{t-1}, in ATen's order)
 * Backward, dh = dL/dh_t complete:
 *   dn = dh ⊙ (1 − z),  dz = dh ⊙ (h_{t-1} − n),  da_n = dn ⊙ (1 − n²)
 *   da_r = da_n ⊙ hp_n ⊙ r(1 − r),  da_z = dz ⊙ z(1 − z)
 *   dxp_t = [da_r, da_z, da_n],  dhp_t = [da_r, da_z, da_n ⊙ r],  dh_{t-1} = dh ⊙ z + dhp_t W_hh
 * Included by _steps.c, whose driver runs the loops and the products h_{t-1} W_hhᵀ (G = 3, into a
 * buffer of its own: xp must stay as it is) and dhp_t W_hh. The forward writes h_t and h_n only:
 * it saves nothing for the backward. The backward takes xp and hp of every row (rows x 3H each,
 * both with their biases, made by two GEMMs over all steps before the loop), recomputes each
 * row's gates from them and writes the row's dxp and dhp in their place. */

typedef struct {
    const void *xp, *b_hh; /* the forward's: (rows x 3H); (3H), zeros when the GRU has no bias */
    void *dxp, *dhp;       /* the backward's: (rows x 3H) each, xp and hp in, dxp and dhp out */
} gru_state;

/* The rows of a step are done by one inlined function each; the backward's last argument is a
 * constant at each call (add into dL/dh_{t-1} or write dL/dh_0): each specialised loop has no
 * branch left in it and vectorises, as the Elman cell's do. The buffers a row touches never
 * overlap (h_t is this step's rows, h_prev the step before's or h0), hence restrict. */
#define DEFINE_GRU(SUFFIX, REAL, TANH, SIGMOID)                                                    \
static inline __attribute__((always_inline)) void gru_forward_row_##SUFFIX(                        \
    int H, const REAL *restrict xp, const REAL *restrict hp, const REAL *restrict b,               \
    const REAL *restrict h_prev, REAL *restrict h_t) {                                             \
    for (int j = 0; j < H; j++) {                                                                  \
        REAL hp_n = hp[2 * H + j] + b[2 * H + j];                                                  \
        REAL r_t = SIGMOID(xp[j] + (hp[j] + b[j]));                                                \
        REAL z_t = SIGMOID(xp[H + j] + (hp[H + j] + b[H + j]));                                    \
        REAL n_t = TANH(xp[2 * H + j] + r_t * hp_n);                                               \
        h_t[j] = n_t + z_t * (h_prev[j] - n_t);                                                    \
    }                                                                                              \
}                                                                                                  \
                                                                                                   \
static void gru_forward_##SUFFIX(const void *state, const forward_step_##SUFFIX *s) {              \
    const gru_state *cell = state;                                                                 \
    int H = s->H;                                                                                  \
    for (int r = 0; r < s->rows; r++) {                                                            \
        const REAL *xp = (const REAL *)cell->xp + (s->first + r) * 3 * H;                          \
        const REAL *hp = s->hp + (int64_t)r * s->ld_hp;                                            \
        const REAL *h_prev = r < s->carried ? s->h_prev + (int64_t)r * s->ld_prev : s->h0 + (int64_t)r * H; \
        gru_forward_row_##SUFFIX(H, xp, hp, cell->b_hh, h_prev, s->h_t + (int64_t)r * s->ld_out);  \
    }                                                                                              \
}                                                                                                  \
                                                                                                   \
/* The backward: each row's gates recomputed from its xp and hp (x W_ihᵀ + b_ih and h_{t-1} W_hhᵀ  \
 * + b_hh), which then receive dxp and dhp in their place (each element read before written).      \
 * dh ⊙ z goes into dL/dh_{t-1} (`accumulate`: rows carried from the step before) or is the first  \
 * part of dL/dh_0 (rows that started from h0; the driver adds dhp W_hh to both). */               \
static inline __attribute__((always_inline)) void gru_backward_row_recompute_##SUFFIX(             \
    int H, REAL *restrict xp, REAL *restrict hp, const REAL *restrict h_prev,                      \
    const REAL *restrict dh, REAL *restrict dh_prev, int accumulate) {                             \
    for (int j = 0; j < H; j++) {                                                                  \
        REAL hp_n = hp[2 * H + j];                                                                 \
        REAL r_t = SIGMOID(xp[j] + hp[j]);                                                         \
        REAL z_t = SIGMOID(xp[H + j] + hp[H + j]);                                                 \
        REAL n_t = TANH(xp[2 * H + j] + r_t * hp_n);                                               \
        REAL dn = dh[j] * (1 - z_t);                                                               \
        REAL dz = dh[j] * (h_prev[j] - n_t);                                                       \
        REAL da_n = dn * (1 - n_t * n_t);                                                          \
        REAL da_r = da_n * hp_n * (r_t * (1 - r_t));                                               \
        REAL da_z = dz * (z_t * (1 - z_t));                                                        \
        xp[j] = da_r;                                                                              \
        xp[H + j] = da_z;                                                                          \
        xp[2 * H + j] = da_n;                                                                      \
        hp[j] = da_r;                                                                              \
        hp[H + j] = da_z;                                                                          \
        hp[2 * H + j] = da_n * r_t;                                                                \
        dh_prev[j] = accumulate ? dh_prev[j] + dh[j] * z_t : dh[j] * z_t;                          \
    }                                                                                              \
}                                                                                                  \
                                                                                                   \
static const REAL *gru_backward_recompute_##SUFFIX(const void *state,                              \
                                                   const backward_step_##SUFFIX *s) {              \
    const gru_state *cell = state;                                                                 \
    int H = s->H;                                                                                  \
    REAL *dhp_t = (REAL *)cell->dhp + s->first * 3 * H;                                            \
    for (int r = 0; r < s->rows; r++) {                                                            \
        const REAL *dh = s->dh_t + (int64_t)r * H;                                                 \
        REAL *xp = (REAL *)cell->dxp + (s->first + r) * 3 * H;                                     \
        REAL *hp = dhp_t + (int64_t)r * 3 * H;                                                     \
        if (r < s->carried)                                                                        \
            gru_backward_row_recompute_##SUFFIX(H, xp, hp, s->h_prev + (int64_t)r * s->ld_prev, dh, \
                                                s->dh_prev + (int64_t)r * H, 1);                   \
        else                                                                                       \
            gru_backward_row_recompute_##SUFFIX(H, xp, hp, s->h0 + (int64_t)r * H, dh,             \
                                                s->dh0 + (int64_t)r * H, 0);                       \
    }                                                                                              \
    return dhp_t;                                                                                  \
}                                                                                                  \
                                                                                                   \
/* Forward: xp (rows x 3H, contiguous), h0 (N x H), W_hh (3H x H), b_hh (3H) or NULL; out (rows x  \
 * H, row stride ld_out) and h_n (N x H) receive h_t and each sequence's last h_t. Each pointer    \
 * comes with its length in elements, checked with the step sizes before anything is read.         \
 * Returns STEPS_OK or the error. */                                                               \
int scratchrnn_gru_forward_##SUFFIX(int64_t T, const int64_t *sizes, const int64_t *offsets,       \
                                    int64_t H, const REAL *xp, int64_t xp_len, const REAL *h0,     \
                                    int64_t h0_len, const REAL *W_hh, int64_t W_hh_len,            \
                                    const REAL *b_hh, int64_t b_hh_len, REAL *out, int64_t out_len, \
                                    int64_t ld_out, REAL *h_n, int64_t h_n_len, int reverse) {     \
    int64_t rows = checked_rows(T, sizes, offsets);                                                \
    if (rows < 0 || !good_width(H, 4, ld_out, H)) return STEPS_BAD_SIZES;                          \
    int64_t N = sizes[0];                                                                          \
    if (!holds(xp, xp_len, rows, 3 * H, 3 * H) || !holds(h0, h0_len, N, H, H)                      \
        || !holds(out, out_len, rows, H, ld_out) || !holds(h_n, h_n_len, N, H, H) || !W_hh         \
        || W_hh_len != 3 * H * H || (b_hh && b_hh_len != 3 * H))                                   \
        return STEPS_BAD_BUFFER;                                                                   \
    REAL *zeros = b_hh ? NULL : calloc((size_t)3 * H, sizeof(REAL)); /* b_hh = 0: one loop */      \
    if (!b_hh && !zeros) return STEPS_NO_MEMORY;                                                   \
    gru_state state = {xp, b_hh ? b_hh : zeros, NULL, NULL};                                       \
    cell_##SUFFIX cell = {3, 0, 1, gru_forward_##SUFFIX, gru_backward_recompute_##SUFFIX, &state}; \
    int rc = forward_loop_##SUFFIX(&cell, (int)T, sizes, offsets, (int)H, out, (int)ld_out, h0,    \
                                   W_hh, h_n, reverse);                                            \
    free(zeros);                                                                                   \
    return rc;                                                                                     \
}                                                                                                  \
                                                                                                   \
/* Backward: dh (rows x H, contiguous) holds dL/dh_t from the output with dL/dh_n added at each    \
 * sequence's last step (dL/dh_{t-1} is added into it as the loop goes); out, h0 and W_hh as the   \
 * forward had them; xp and hp (rows x 3H, contiguous) hold x W_ihᵀ + b_ih and h_{t-1} W_hhᵀ +     \
 * b_hh of every row and receive dxp and dhp; dh0 (N x H) receives dL/dh_0. */                     \
int scratchrnn_gru_backward_recompute_##SUFFIX(                                                    \
    int64_t T, const int64_t *sizes, const int64_t *offsets, int64_t H, REAL *dh, int64_t dh_len,  \
    const REAL *out, int64_t out_len, int64_t ld_out, const REAL *h0, int64_t h0_len,              \
    const REAL *W_hh, int64_t W_hh_len, REAL *xp, int64_t xp_len, REAL *hp, int64_t hp_len,        \
    REAL *dh0, int64_t dh0_len, int reverse) {                                                     \
    int64_t rows = checked_rows(T, sizes, offsets);                                                \
    if (rows < 0 || !good_width(H, 4, ld_out, H)) return STEPS_BAD_SIZES;                          \
    int64_t N = sizes[0];                                                                          \
    if (!holds(dh, dh_len, rows, H, H) || !holds(out, out_len, rows, H, ld_out)                    \
        || !holds(h0, h0_len, N, H, H) || !holds(xp, xp_len, rows, 3 * H, 3 * H)                   \
        || !holds(hp, hp_len, rows, 3 * H, 3 * H) || !holds(dh0, dh0_len, N, H, H) || !W_hh        \
        || W_hh_len != 3 * H * H)                                                                  \
        return STEPS_BAD_BUFFER;                                                                   \
    gru_state state = {NULL, NULL, xp, hp};                                                        \
    cell_##SUFFIX cell = {3, 0, 1, gru_forward_##SUFFIX, gru_backward_recompute_##SUFFIX, &state}; \
    return backward_loop_##SUFFIX(&cell, (int)T, sizes, offsets, (int)H, dh, out, (int)ld_out, h0, \
                                  W_hh, dh0, reverse);                                             \
}

DEFINE_GRU(f32, float, tanh_f, sigmoid_f)
DEFINE_GRU(f64, double, tanh_d, sigmoid_d)
