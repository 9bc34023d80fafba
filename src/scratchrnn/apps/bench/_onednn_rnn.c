/* oneDNN's fused RNN primitives (forward and backward) for the peer benchmark: one layer, one
 * direction, float32, through oneDNN's C API (libdnnl from the onednn-cpu-gomp package), for two
 * cells: the vanilla tanh RNN (nn.RNN's), and the linear-before-reset GRU (dnnl_lbr_gru), which is
 * nn.GRU's: n_t = tanh(W_in x_t + b_in + r_t ⊙ (W_hn h_{t-1} + b_hn)). (dnnl_vanilla_gru applies
 * r_t before the recurrent product, another function, so it cannot be checked against nn.GRU.)
 *
 * Every buffer is the caller's (torch tensors), in plain layouts, so the same weights and inputs
 * as the other peers go in and their results can be checked: src/dst (T, N, C) "tnc"; states
 * (1, 1, N, H) "ldnc"; the forward's weights W^T (1, 1, C, G, H) "ldigo"; the backward wants them
 * as W (1, 1, G, H, C) "ldgoi"; the bias (1, 1, G', H) "ldgo". G = 1 and G' = 1 (b_ih + b_hh) for
 * the RNN; for the GRU G = 3 gates in oneDNN's order (update z, reset r, candidate n: the caller
 * reorders PyTorch's r, z, n) and G' = 4: b_z, b_r (each b_ih + b_hh), b_in and b_hn apart. The
 * workspace that the training forward leaves for the backward is oneDNN's own.
 */
#include <oneapi/dnnl/dnnl.h>
#include <stdlib.h>
#include <string.h>

extern void omp_set_num_threads(int); /* libgomp, which libdnnl's OpenMP runtime is */

enum { X, H0, WX, WH, B, Y, HN, WX_T, WH_T, DY, DHN, DX, DH0, DWX, DWH, DB, N_BUFFERS };

typedef struct {
    dnnl_engine_t engine;
    dnnl_stream_t stream;
    dnnl_primitive_t infer, train, backward;
    dnnl_memory_t mem[N_BUFFERS], workspace;
    dnnl_exec_arg_t infer_args[7], train_args[8], backward_args[16];
    size_t diff_weight_bytes[3];
    float *diff_weights[3];
} onednn_rnn;

#define CHECK(call)                                                                                \
    do {                                                                                           \
        dnnl_status_t status_ = (call);                                                            \
        if (status_ != dnnl_success) return (int)status_;                                          \
    } while (0)

static dnnl_memory_desc_t desc(int ndims, const dnnl_dims_t dims, dnnl_format_tag_t tag) {
    dnnl_memory_desc_t md;
    if (dnnl_memory_desc_create_with_tag(&md, ndims, dims, dnnl_f32, tag) != dnnl_success) return NULL;
    return md;
}

void onednn_rnn_set_threads(int n) { omp_set_num_threads(n); }

enum { CELL_RNN_TANH, CELL_LBR_GRU };

/* Creates the three primitives of `cell` over the caller's buffers (see the enum for their
 * order). Returns 0 or a dnnl_status_t. */
int onednn_rnn_create(onednn_rnn **out, int cell, int T, int N, int C, int H, float **buffers) {
    if (cell != CELL_RNN_TANH && cell != CELL_LBR_GRU) return dnnl_invalid_arguments;
    const int G = cell == CELL_LBR_GRU ? 3 : 1, G_bias = cell == CELL_LBR_GRU ? 4 : 1;
    onednn_rnn *r = calloc(1, sizeof *r);
    if (!r) return dnnl_out_of_memory;
    *out = r;
    CHECK(dnnl_engine_create(&r->engine, dnnl_cpu, 0));
    CHECK(dnnl_stream_create(&r->stream, r->engine, dnnl_stream_default_flags));
    dnnl_memory_desc_t md[N_BUFFERS];
    md[X] = md[DX] = desc(3, (dnnl_dims_t){T, N, C}, dnnl_tnc);
    md[Y] = md[DY] = desc(3, (dnnl_dims_t){T, N, H}, dnnl_tnc);
    md[H0] = md[HN] = md[DHN] = md[DH0] = desc(4, (dnnl_dims_t){1, 1, N, H}, dnnl_ldnc);
    md[WX] = md[DWX] = desc(5, (dnnl_dims_t){1, 1, C, G, H}, dnnl_ldigo);
    md[WH] = md[DWH] = desc(5, (dnnl_dims_t){1, 1, H, G, H}, dnnl_ldigo);
    md[WX_T] = desc(5, (dnnl_dims_t){1, 1, C, G, H}, dnnl_ldgoi);
    md[WH_T] = desc(5, (dnnl_dims_t){1, 1, H, G, H}, dnnl_ldgoi);
    md[B] = md[DB] = desc(4, (dnnl_dims_t){1, 1, G_bias, H}, dnnl_ldgo);
    for (int i = 0; i < N_BUFFERS; i++) {
        if (!md[i]) return dnnl_invalid_arguments;
        CHECK(dnnl_memory_create(&r->mem[i], md[i], r->engine, buffers[i]));
    }
    dnnl_primitive_desc_t pd_infer, pd_train, pd_back;
    const dnnl_alg_kind_t tanh = dnnl_eltwise_tanh;
    const dnnl_rnn_direction_t dir = dnnl_unidirectional_left2right;
    if (cell == CELL_RNN_TANH) {
        CHECK(dnnl_vanilla_rnn_forward_primitive_desc_create(&pd_infer, r->engine,
            dnnl_forward_inference, tanh, dir, md[X], md[H0], md[WX], md[WH], md[B], md[Y], md[HN], 0,
            0.f, 0.f, NULL));
        CHECK(dnnl_vanilla_rnn_forward_primitive_desc_create(&pd_train, r->engine,
            dnnl_forward_training, tanh, dir, md[X], md[H0], md[WX], md[WH], md[B], md[Y], md[HN], 0,
            0.f, 0.f, NULL));
        CHECK(dnnl_vanilla_rnn_backward_primitive_desc_create(&pd_back, r->engine, dnnl_backward,
            tanh, dir, md[X], md[H0], md[WX_T], md[WH_T], md[B], md[Y], md[HN], md[DX], md[DH0],
            md[DWX], md[DWH], md[DB], md[DY], md[DHN], 0, 0.f, 0.f, pd_train, NULL));
    } else {
        CHECK(dnnl_lbr_gru_forward_primitive_desc_create(&pd_infer, r->engine, dnnl_forward_inference,
            dir, md[X], md[H0], md[WX], md[WH], md[B], md[Y], md[HN], 0, NULL));
        CHECK(dnnl_lbr_gru_forward_primitive_desc_create(&pd_train, r->engine, dnnl_forward_training,
            dir, md[X], md[H0], md[WX], md[WH], md[B], md[Y], md[HN], 0, NULL));
        CHECK(dnnl_lbr_gru_backward_primitive_desc_create(&pd_back, r->engine, dnnl_backward, dir,
            md[X], md[H0], md[WX_T], md[WH_T], md[B], md[Y], md[HN], md[DX], md[DH0], md[DWX],
            md[DWH], md[DB], md[DY], md[DHN], 0, pd_train, NULL));
    }
    CHECK(dnnl_primitive_create(&r->infer, pd_infer));
    CHECK(dnnl_primitive_create(&r->train, pd_train));
    CHECK(dnnl_primitive_create(&r->backward, pd_back));
    const_dnnl_memory_desc_t ws = dnnl_primitive_desc_query_md(pd_train, dnnl_query_workspace_md, 0);
    CHECK(dnnl_memory_create(&r->workspace, ws, r->engine, DNNL_MEMORY_ALLOCATE));
    dnnl_primitive_desc_destroy(pd_infer);
    dnnl_primitive_desc_destroy(pd_train);
    dnnl_primitive_desc_destroy(pd_back);

    const int fwd[7][2] = {{DNNL_ARG_SRC_LAYER, X}, {DNNL_ARG_SRC_ITER, H0},
        {DNNL_ARG_WEIGHTS_LAYER, WX}, {DNNL_ARG_WEIGHTS_ITER, WH}, {DNNL_ARG_BIAS, B},
        {DNNL_ARG_DST_LAYER, Y}, {DNNL_ARG_DST_ITER, HN}};
    for (int i = 0; i < 7; i++) {
        r->infer_args[i] = r->train_args[i] = (dnnl_exec_arg_t){fwd[i][0], r->mem[fwd[i][1]]};
    }
    r->train_args[7] = (dnnl_exec_arg_t){DNNL_ARG_WORKSPACE, r->workspace};
    const int back[15][2] = {{DNNL_ARG_SRC_LAYER, X}, {DNNL_ARG_SRC_ITER, H0},
        {DNNL_ARG_WEIGHTS_LAYER, WX_T}, {DNNL_ARG_WEIGHTS_ITER, WH_T}, {DNNL_ARG_BIAS, B},
        {DNNL_ARG_DST_LAYER, Y}, {DNNL_ARG_DST_ITER, HN}, {DNNL_ARG_DIFF_DST_LAYER, DY},
        {DNNL_ARG_DIFF_DST_ITER, DHN}, {DNNL_ARG_DIFF_SRC_LAYER, DX}, {DNNL_ARG_DIFF_SRC_ITER, DH0},
        {DNNL_ARG_DIFF_WEIGHTS_LAYER, DWX}, {DNNL_ARG_DIFF_WEIGHTS_ITER, DWH},
        {DNNL_ARG_DIFF_BIAS, DB}};
    for (int i = 0; i < 14; i++) r->backward_args[i] = (dnnl_exec_arg_t){back[i][0], r->mem[back[i][1]]};
    r->backward_args[14] = (dnnl_exec_arg_t){DNNL_ARG_WORKSPACE, r->workspace};
    /* the backward accumulates into the weight gradients: they are zeroed before each call */
    const int diff[3] = {DWX, DWH, DB};
    const size_t count[3] = {(size_t)C * G * H, (size_t)H * G * H, (size_t)G_bias * H};
    for (int i = 0; i < 3; i++) {
        r->diff_weights[i] = buffers[diff[i]];
        r->diff_weight_bytes[i] = count[i] * sizeof(float);
    }
    return 0;
}

/* The forward: inference (no workspace) or training (leaves the workspace for the backward). */
int onednn_rnn_forward(onednn_rnn *r, int training) {
    if (training) {
        CHECK(dnnl_primitive_execute(r->train, r->stream, 8, r->train_args));
    } else {
        CHECK(dnnl_primitive_execute(r->infer, r->stream, 7, r->infer_args));
    }
    return (int)dnnl_stream_wait(r->stream);
}

/* The backward of the last training forward: dx, dh0 and the weight gradients (zeroed first). */
int onednn_rnn_backward(onednn_rnn *r) {
    for (int i = 0; i < 3; i++) memset(r->diff_weights[i], 0, r->diff_weight_bytes[i]);
    CHECK(dnnl_primitive_execute(r->backward, r->stream, 15, r->backward_args));
    return (int)dnnl_stream_wait(r->stream);
}
