/* The cell options of issue 19 on the Elman cell, in C (the Python twin: core/cells/options.py):
 * layer norm (ln) and zoneout (zo), alone or together, and the Elman cell's built-in nonlinearities
 * other than plain tanh and relu (those without options run cells/elman.c). One line per equation,
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
 * Recurrent dropout (h_{t-1} ⊙ m into W_hh) is not here: it runs the PyTorch loop.
 *
 * The nonlinearities f (the code `act`, ACT_* below; accel.ACTIVATIONS in the same order), f' of
 * x = â, as the PyTorch loop computes them (core/cells/activations.py), h = f(x):
 *   ACT_TANH:       f = tanh x;                        f' = 1 − h²
 *   ACT_RELU:       f = max(x, 0);                     f' = [x > 0]
 *   ACT_SIGMOID:    f = σ(x) = 1 / (1 + e^−x);         f' = h (1 − h)
 *   ACT_SOFTSIGN:   f = x / (1 + |x|);                 f' = (1 − |h|)²
 *   ACT_LEAKY_RELU: f = x if x > 0 else 0.01 x;        f' = 1 if x > 0 else 0.01
 *   ACT_SILU:       f = x σ(x);                        f' = σ(x) (1 + x (1 − σ(x)))
 *   ACT_GELU:       f = x Φ(x) = x ½ (1 + erf(x/√2));  f' = Φ(x) + x φ(x),  φ(x) = e^(−x²/2) / √(2π)
 * erf is our own (erf_d below; the library links no libm), e^y our own too (exp_neg_d in _steps.c):
 *   erf_d:     |x| < 2.5:  erf x = (2/√π) x e^(−x²) Σ_n 2ⁿ x²ⁿ / (2n+1)!!   (all terms positive)
 *              |x| ≥ 2.5:  erf x = 1 − e^(−x²) / (√π K(x)),  K(x) = x + ½/(x + 1/(x + (3/2)/(x + …)))
 *                          (K by its convergents P_n / Q_n, depth 28)
 *   exp_neg_d: e^y = 2^k (expm1(r) + 1),  y = k ln2 + r,  |r| ≤ ln2 / 2
 * float32 has its own erf_f (and exp_neg_f: the same forms in float, fewer terms, a few ulp); its gelu
 * gives NaN at +inf, as torch's float kernel does. */

#define OPTIONS_EPS 1e-5

/* The nonlinearity codes (accel.ACTIVATIONS holds the names in this order). */
enum { ACT_TANH, ACT_RELU, ACT_SIGMOID, ACT_SOFTSIGN, ACT_LEAKY_RELU, ACT_SILU, ACT_GELU, ACT_COUNT };
#define LEAKY_SLOPE 0.01 /* torch's default negative slope */

/* F(..., code) with the code a constant in each branch, so that each always_inline row function
 * compiles into one branch-free loop per nonlinearity. */
#define BY_ACT(act, F, ...)                                                                        \
    switch (act) {                                                                                 \
    case ACT_TANH: F(__VA_ARGS__, ACT_TANH); break;                                                \
    case ACT_RELU: F(__VA_ARGS__, ACT_RELU); break;                                                \
    case ACT_SIGMOID: F(__VA_ARGS__, ACT_SIGMOID); break;                                          \
    case ACT_SOFTSIGN: F(__VA_ARGS__, ACT_SOFTSIGN); break;                                        \
    case ACT_LEAKY_RELU: F(__VA_ARGS__, ACT_LEAKY_RELU); break;                                    \
    case ACT_SILU: F(__VA_ARGS__, ACT_SILU); break;                                                \
    default: F(__VA_ARGS__, ACT_GELU); break;                                                      \
    }


/* 2ⁿ / (2n+1)!!, n = 0 … ERF_TERMS − 1: the series of erf_d (the first term left out is below
 * 1e-17 of the sum at |x| = 2.5). */
#define ERF_TERMS 40
static const double erf_series[ERF_TERMS] = {
1.0,
    0.6666666666666666,
    0.26666666666666666,
    0.0761904761904762,
    0.016931216931216932,
    0.0030784030784030783,
    0.0004736004736004736,
    6.314672981339648e-05,
    7.4290270368701745e-06,
    7.820028459863341e-07,
    7.447646152250801e-08,
    6.476214045435479e-09,
    5.180971236348383e-10,
    3.8377564713691727e-11,
    2.6467286009442573e-12,
    1.7075668393188757e-13,
    1.0348889935265912e-14,
    5.913651391580522e-16,
    3.196568319773255e-17,
    1.6392658050119255e-18,
    7.996418561033783e-20,
    3.719264446992458e-21,
    1.6530064208855367e-22,
    7.034069876108667e-24,
    2.8710489290239454e-25,
    1.1259015407937041e-26,
    4.248685059598884e-28,
    1.5449763853086848e-29,
    5.42096977301293e-31,
    1.8376168722077727e-32,
    6.024973351500894e-34,
    1.9126899528574266e-35,
    5.885199854945928e-37,
    1.7567760761032622e-38,
    5.092104568415253e-40,
    1.434395653074719e-41,
    3.929851104314299e-43,
    1.047960294483813e-44,
    2.7219747908670468e-46,
    6.891075419916574e-48
};
#define ERF_CF_DEPTH 28 /* the continued fraction's depth (at x = 2.5: about 1e-16 relative on erf) */
#define ERF_SPLIT 2.5   /* the series below, the continued fraction from here on */

/* e^(−x²) to a few ulp: x² = xh² + δ with xh = x with its 32 low mantissa bits cleared (xh² is
 * exact), δ = (x − xh)(x + xh) < 2^−19 x², and e^(−δ) = 1 − δ + δ²/2 (δ³/6 < 1e-17). */
static inline double exp_minus_square_d(double x) {
    uint64_t bits;
    memcpy(&bits, &x, sizeof bits);
    bits &= 0xFFFFFFFF00000000ull;
    double xh;
    memcpy(&xh, &bits, sizeof xh);
    double delta = (x - xh) * (x + xh);
    return exp_neg_d(-(xh * xh)) * (1.0 - delta + 0.5 * delta * delta);
}

/* erf, to about 1e-16 relative (see the header; tested against torch.erf). erf(±inf) = ±1,
 * erf(NaN) = NaN, erf(±0) = ±0. Branch-free: both forms computed, one selected. */
static inline double erf_d(double x) {
    double ax = x < 0 ? -x : x;
    ax = ax > 6.0 ? 6.0 : ax; /* erf(6) rounds to 1 (erfc(6) = 2e-17); NaN stays NaN */
    double e = exp_minus_square_d(ax);
    double xs = ax < ERF_SPLIT ? ax : ERF_SPLIT, s2 = xs * xs; /* the series */
    double sum = erf_series[ERF_TERMS - 1];
#pragma GCC unroll 64 /* unrolled, the loops over a row vectorise (SIMD across the elements) */
    for (int n = ERF_TERMS - 2; n >= 0; n--) sum = sum * s2 + erf_series[n];
    double series = 1.1283791670955126 * xs * sum; /* × e below; 2/√π */
    double xc = ax < ERF_SPLIT ? ERF_SPLIT : ax; /* the continued fraction */
    /* K(x) = P/Q by the convergents' forward recurrence (no division but the last):
     * P_n = x P_{n−1} + (n/2) P_{n−2}, the same for Q; P_{−1} = 1, P_0 = x, Q_{−1} = 0, Q_0 = 1
     * (all terms positive: stable; x <= 6 and depth 28 keep P below 1e25). */
    double p1 = xc, p2 = 1.0, q1 = 1.0, q2 = 0.0;
#pragma GCC unroll 64
    for (int n = 1; n <= ERF_CF_DEPTH; n++) {
        double p = xc * p1 + (0.5 * n) * p2, q = xc * q1 + (0.5 * n) * q2;
        p2 = p1, p1 = p, q2 = q1, q1 = q;
    }
    double cf = 1.0 - e * (0.5641895835477563 * q1 / p1); /* 1 − e^(−x²) / (√π K), 1/√π */
    return copysign(ax < ERF_SPLIT ? series * e : cf, x);
}

/* float32's erf, in float arithmetic (16 lanes where double has 8), to a few ulp: the same two
 * forms as erf_d, split at |x| = 2 (20 terms of the series: 5e-9 relative; the continued fraction
 * to depth 10: 1e-9 at x = 2), clamped at |x| = 4 (erf(4) rounds to 1 in float). */
#define ERF_F_TERMS 20
static const float erf_series_f[ERF_F_TERMS] = {
    1.000000000e+00f,
    6.666666667e-01f,
    2.666666667e-01f,
    7.619047619e-02f,
    1.693121693e-02f,
    3.078403078e-03f,
    4.736004736e-04f,
    6.314672981e-05f,
    7.429027037e-06f,
    7.820028460e-07f,
    7.447646152e-08f,
    6.476214045e-09f,
    5.180971236e-10f,
    3.837756471e-11f,
    2.646728601e-12f,
    1.707566839e-13f,
    1.034888994e-14f,
    5.913651392e-16f,
    3.196568320e-17f,
    1.639265805e-18f
};


static inline float erf_f(float x) {
    float ax = x < 0 ? -x : x;
    ax = ax > 4.0f ? 4.0f : ax; /* NaN stays NaN */
    uint32_t bits; /* e^(−x²) as in exp_minus_square_d: xh = x with 12 low mantissa bits cleared */
    memcpy(&bits, &ax, sizeof bits);
    bits &= 0xFFFFF000u;
    float xh;
    memcpy(&xh, &bits, sizeof xh);
    float delta = (ax - xh) * (ax + xh);
    float e = exp_neg_f(-(xh * xh)) * (1.0f - delta + 0.5f * delta * delta);
    float xs = ax < 2.0f ? ax : 2.0f, s2 = xs * xs;
    float sum = erf_series_f[ERF_F_TERMS - 1];
#pragma GCC unroll 32
    for (int n = ERF_F_TERMS - 2; n >= 0; n--) sum = sum * s2 + erf_series_f[n];
    float xc = ax < 2.0f ? 2.0f : ax;
    float p1 = xc, p2 = 1.0f, q1 = 1.0f, q2 = 0.0f;
#pragma GCC unroll 16
    for (int n = 1; n <= 10; n++) {
        float p = xc * p1 + (0.5f * n) * p2, q = xc * q1 + (0.5f * n) * q2;
        p2 = p1, p1 = p, q2 = q1, q1 = q;
    }
    float cf = 1.0f - e * (0.56418958f * q1 / p1);
    return copysignf(ax < 2.0f ? 1.12837917f * xs * sum * e : cf, x);
}

/* gelu and its f', x = â: f = x ½ (1 + erf(x/√2)), f' = Φ(x) + x φ(x). */
static inline double gelu_d(double x) { return x * 0.5 * (1.0 + erf_d(x * 0.70710678118654752440)); }

static inline double gelu_prime_d(double x) {
    double cdf = 0.5 * (1.0 + erf_d(x * 0.70710678118654752440));
    return cdf + x * (exp_neg_d(-0.5 * x * x) * 0.39894228040143267794); /* φ: 1/√(2π) */
}

/* float32 gelu(+inf) is NaN in torch's vectorised kernel (the PyTorch loop's): so here. */
static inline float gelu_f(float x) {
    float h = x * 0.5f * (1.0f + erf_f(x * 0.70710678f));
    return x > 3.4e38f ? x - x : h;
}

static inline float gelu_prime_f(float x) {
    float cdf = 0.5f * (1.0f + erf_f(x * 0.70710678f));
    return cdf + x * (exp_neg_f(-0.5f * x * x) * 0.39894228f);
}

typedef struct {
    const void *bias, *gamma, *beta; /* (H) each, or NULL: no bias; no layer norm */
    const void *z;                   /* (rows x H) zoneout mask, or NULL */
    const void *a;                   /* the backward's a_t (rows x H) */
    void *dextra;                    /* the backward's [dâ ⊙ n̂ | dâ] rows (rows x 2H), or NULL */
    int act, ln, zo; /* act: an ACT_* code */
} options_state;

#define DEFINE_OPTIONS(SUFFIX, REAL, TANH, SIGMOID, GELU, GELU_PRIME)                             \
/* f(x) and f'(x) for the code `act` (a constant at each call once inlined: one loop per code). */\
static inline __attribute__((always_inline)) REAL act_f_##SUFFIX(REAL x, int act) {              \
    switch (act) {                                                                                 \
    case ACT_TANH: return TANH(x);                                                                 \
    case ACT_RELU: return x < 0 ? 0 : x; /* as torch's: NaN passes through */                      \
    case ACT_SIGMOID: return SIGMOID(x);                                                           \
    case ACT_SOFTSIGN: return x / (1 + (x < 0 ? -x : x));                                          \
    case ACT_LEAKY_RELU: return x > 0 ? x : x * (REAL)LEAKY_SLOPE;                                 \
    case ACT_SILU: return x * SIGMOID(x);                                                           \
    default: return GELU(x); /* ACT_GELU */                                                        \
    }                                                                                              \
}                                                                                                  \
                                                                                                   \
static inline __attribute__((always_inline)) REAL act_fprime_##SUFFIX(REAL x, int act) {         \
    switch (act) {                                                                                 \
    case ACT_TANH: { REAL h = TANH(x); return 1 - h * h; }                                         \
    case ACT_RELU: return (REAL)(x > 0);                                                           \
    case ACT_SIGMOID: { REAL h = SIGMOID(x); return h * (1 - h); }                                 \
    case ACT_SOFTSIGN: {                                                                           \
        REAL h = x / (1 + (x < 0 ? -x : x));                                                       \
        REAL c = 1 - (h < 0 ? -h : h);                                                             \
        return c * c;                                                                              \
    }                                                                                              \
    case ACT_LEAKY_RELU: return x > 0 ? (REAL)1 : (REAL)LEAKY_SLOPE;                               \
    case ACT_SILU: { REAL sg = SIGMOID(x); return sg * (1 + x * (1 - sg)); }                       \
    default: return GELU_PRIME(x); /* ACT_GELU */                                                  \
    }                                                                                              \
}                                                                                                  \
                                                                                                   \
/* The reductions over a row (means over H) run on 8 partial sums, which the compiler keeps in     \
 * one vector register: a single running sum would chain every addition on the one before (no      \
 * SIMD without -ffast-math), the slowest loop of the step at H = 640. */                          \
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
/* The LN backward's elementwise pass over a row (`act` a constant at each call: one loop each,   \
 * no branch inside, vectorised; the buffers never overlap, hence restrict):                     \
 * n̂ = (a − μ) rstd, â = γ ⊙ n̂ + β, dâ = dh̃ ⊙ f'(â), the row's dγ, dβ shares; d <- g = γ ⊙ dâ. */ \
static inline __attribute__((always_inline)) void ln_backward_row_##SUFFIX(                       \
    int H, const REAL *restrict a, const REAL *restrict gamma, const REAL *restrict beta, REAL mu,  \
    REAL rstd, REAL *restrict d, REAL *restrict dextra, int act) {                                 \
    for (int j = 0; j < H; j++) {                                                                  \
        REAL n_hat = (a[j] - mu) * rstd;                                                           \
        REAL a_hat = gamma[j] * n_hat + beta[j];                                                   \
        REAL da_hat = d[j] * act_fprime_##SUFFIX(a_hat, act); /* dh̃ ⊙ f'(â) */                      \
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
/* h̃ = f(â) over a row in place (`act` a constant at each call). */                               \
static inline __attribute__((always_inline)) void f_row_##SUFFIX(REAL *restrict a, int H, int act) {\
    for (int j = 0; j < H; j++) a[j] = act_f_##SUFFIX(a[j], act);                                  \
}                                                                                                  \
                                                                                                   \
/* Without layer norm (â = a): da = dh̃ ⊙ f'(a) (relu's [a > 0] as a 0/1 factor, the Python twin's: \
 * f'(â) is a float tensor there), over d in place. */                                             \
static inline __attribute__((always_inline)) void fprime_row_##SUFFIX(                            \
    int H, const REAL *restrict a, REAL *restrict d, int act) {                                    \
    for (int j = 0; j < H; j++) d[j] = d[j] * act_fprime_##SUFFIX(a[j], act);                      \
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
        BY_ACT(cell->act, f_row_##SUFFIX, a, H); /* h̃ = f(â) */                                   \
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
            BY_ACT(cell->act, fprime_row_##SUFFIX, H, a, d);                                       \
            continue;                                                                              \
        }                                                                                          \
        REAL mu = row_mean_##SUFFIX(a, H); /* μ */                                                 \
        REAL var = row_sum_##SUFFIX(a, mu, NULL, 0, H) / H; /* σ² */                               \
        REAL rstd = (REAL)rsqrt_d((double)(var + (REAL)OPTIONS_EPS)); /* 1 / √(σ² + ε) */          \
        REAL *dextra = (REAL *)cell->dextra + (s->first + r) * 2 * H;                              \
        BY_ACT(cell->act, ln_backward_row_##SUFFIX, H, a, gamma, beta, mu, rstd, d, dextra);       \
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
    int act) {                                                                                     \
    int64_t rows = checked_rows(T, sizes, offsets);                                                \
    if (rows < 0 || !good_width(H, 1, ld_out, H)) return STEPS_BAD_SIZES;                          \
    if (act < 0 || act >= ACT_COUNT) return STEPS_BAD_ACTIVATION;                                  \
    int64_t N = sizes[0];                                                                          \
    if (!holds(out, out_len, rows, H, ld_out) || !holds(h0, h0_len, N, H, H)                       \
        || !holds(h_n, h_n_len, N, H, H) || !W_hh || W_hh_len != H * H || (bias && bias_len != H)  \
        || (!gamma != !beta) || (gamma && (gamma_len != H || beta_len != H))                       \
        || (z && !holds(z, z_len, rows, H, H)))                                                    \
        return STEPS_BAD_BUFFER;                                                                   \
    options_state state = {bias, gamma, beta, z, NULL, NULL, act, gamma != NULL, z != NULL};         \
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
    int64_t dh0_len, int reverse, int act) {                                                       \
    int64_t rows = checked_rows(T, sizes, offsets);                                                \
    if (rows < 0 || !good_width(H, 2, ld_out, H)) return STEPS_BAD_SIZES;                          \
    if (act < 0 || act >= ACT_COUNT) return STEPS_BAD_ACTIVATION;                                  \
    int64_t N = sizes[0];                                                                          \
    if (!holds(dh, dh_len, rows, H, H) || !holds(out, out_len, rows, H, ld_out)                    \
        || !holds(a, a_len, rows, H, H) || !holds(dh0, dh0_len, N, H, H) || !W_hh                  \
        || W_hh_len != H * H || (!gamma != !beta) || (!gamma != !dextra)                           \
        || (gamma && (gamma_len != H || beta_len != H || !holds(dextra, dextra_len, rows, 2 * H, 2 * H))) \
        || (z && !holds(z, z_len, rows, H, H)))                                                    \
        return STEPS_BAD_BUFFER;                                                                   \
    options_state state = {NULL, gamma, beta, z, a, dextra, act, gamma != NULL, z != NULL};        \
    cell_##SUFFIX cell = {1, 1, z != NULL, options_forward_##SUFFIX, options_backward_##SUFFIX, &state}; \
    return backward_loop_##SUFFIX(&cell, (int)T, sizes, offsets, (int)H, dh, out, (int)ld_out, NULL, \
                                  W_hh, dh0, reverse);                                             \
}

/* The array forms, for the tests (the loops call the inline forms): erf, and f or f' (`prime`) of
 * the nonlinearity `act` in place. */
void scratchrnn_erf_f64(int64_t n, double *a) {
    for (int64_t i = 0; i < n; i++) a[i] = erf_d(a[i]);
}

void scratchrnn_erf_f32(int64_t n, float *a) {
    for (int64_t i = 0; i < n; i++) a[i] = erf_f(a[i]);
}

DEFINE_OPTIONS(f32, float, tanh_f, sigmoid_f, gelu_f, gelu_prime_f)
DEFINE_OPTIONS(f64, double, tanh_d, sigmoid_d, gelu_d, gelu_prime_d)

void scratchrnn_activation_f32(int64_t n, float *a, int act, int prime) {
    if (act < 0 || act >= ACT_COUNT) return;
    for (int64_t i = 0; i < n; i++) a[i] = prime ? act_fprime_f32(a[i], act) : act_f_f32(a[i], act);
}

void scratchrnn_activation_f64(int64_t n, double *a, int act, int prime) {
    if (act < 0 || act >= ACT_COUNT) return;
    for (int64_t i = 0; i < n; i++) a[i] = prime ? act_fprime_f64(a[i], act) : act_f_f64(a[i], act);
}
