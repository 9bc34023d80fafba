/* The machine's float32 FMA peak, for the benchmark's "% of peak": a register-only loop of fused
 * multiply-adds on 16 independent 64-byte vectors (enough chains to cover the FMA latency on two
 * pipes), with no memory traffic. GCC's vector extension lowers a 64-byte vector to one AVX-512
 * register, or two AVX2 ones, per -march=native; -ffp-contract=fast makes a * b + c one FMA. */
#include <stdint.h>

typedef float v16 __attribute__((vector_size(64)));

#define CHAINS 16

/* Runs `iters` rounds of CHAINS FMAs of 16 floats (2 flops each); returns a value that depends on
 * all of them, so the compiler cannot drop the loop. */
float fma_peak_run(int64_t iters) {
    v16 acc[CHAINS];
    const v16 a = {0}, b = {0};
    v16 mul = a + 0.999999f, add = b + 1e-7f;
    for (int c = 0; c < CHAINS; c++) acc[c] = a + (float)c;
    for (int64_t i = 0; i < iters; i++)
        for (int c = 0; c < CHAINS; c++) acc[c] = acc[c] * mul + add;
    float sum = 0;
    for (int c = 0; c < CHAINS; c++)
        for (int j = 0; j < 16; j++) sum += acc[c][j];
    return sum;
}

/* Flops done by fma_peak_run(iters). */
int64_t fma_peak_flops(int64_t iters) { return iters * CHAINS * 16 * 2; }
