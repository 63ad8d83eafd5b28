// One-token GEMV through ik_llama.cpp's ggml (a one-node graph: ggml_mul_mat(W, x)), timed the
// way crates/kernels/benches/matmul.rs times ours, so the two can be compared on the same
// shapes in one sitting (issue 14). Not part of the cargo workspace or CI; built and run by
// bench/ik_gemv.sh.
//
//   ik_gemv [--types iq2_xxs,iq2_xxs_r4,...] [--shapes 2048x1408,...] [--reps 11] [--threads 2] [--bw-4k]
//   ik_gemv --check [--types ...]     # graph output vs dequantize + f32 dot, small matrices
//
// Method (as ours):
// - Weights: ggml_quantize_chunk of random f32 (an all-ones importance matrix for the types
//   that require one) for 64 seed rows, tiled over the n_out rows (the speed does not depend
//   on the values); the "_r4"/"_r8" types are ik's row-interleaved layouts, the ones its
//   run-time repack (-rtr) converts to at load.
// - Cold: enough distinct copies to total >= 512 MiB (huge-page advised, like ours), each op
//   the next copy, so every byte comes from DRAM. Hot: the same copy each op.
// - A pass is max(copies, 16) ops; time per op = pass time / ops; best of --reps passes.
//   Also the fastest single cold op. GB/s = weight bytes / time per op (GB = 1e9 bytes).
// - Read bandwidth: before each cold pass, 4 x 64 MiB slices of a 1 GiB buffer are summed
//   with 256-bit loads on the same number of OpenMP threads (the team ggml uses); best mean
//   and fastest slice are reported next to the GEMV rates.

#define _GNU_SOURCE
#include "ggml.h"

#include <immintrin.h>
#include <math.h>
#include <omp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/mman.h>
#include <time.h>

static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static uint64_t rng_state = 0x1234567890abcdefULL;
static uint64_t rng_next(void) {
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}
static float rng_f32(void) { return (float)(rng_next() >> 40) / (float)(1 << 24) * 2.0f - 1.0f; }

// 2 MiB-aligned, zeroed, and (unless huge is 0) huge-page advised.
static void *alloc_pages(size_t bytes, int huge) {
    void *p = NULL;
    size_t len = (bytes + (2u << 20) - 1) & ~(size_t)((2u << 20) - 1);
    if (posix_memalign(&p, 2u << 20, len) != 0) {
        fprintf(stderr, "out of memory (%zu bytes)\n", len);
        exit(1);
    }
    if (huge) madvise(p, len, MADV_HUGEPAGE);
    else madvise(p, len, MADV_NOHUGEPAGE);
    memset(p, 0, len);
    return p;
}

static void *alloc_big(size_t bytes) { return alloc_pages(bytes, 1); }

// ---------------------------------------------------------------------------------------
// Read bandwidth.

#define SLICE_BYTES ((size_t)64 << 20)
#define BW_BYTES ((size_t)1 << 30)

static uint64_t sum_read(const uint8_t *p, size_t bytes) {
    __m256i a0 = _mm256_setzero_si256(), a1 = a0, a2 = a0, a3 = a0;
    for (size_t i = 0; i + 128 <= bytes; i += 128) {
        a0 = _mm256_add_epi64(a0, _mm256_load_si256((const __m256i *)(p + i)));
        a1 = _mm256_add_epi64(a1, _mm256_load_si256((const __m256i *)(p + i + 32)));
        a2 = _mm256_add_epi64(a2, _mm256_load_si256((const __m256i *)(p + i + 64)));
        a3 = _mm256_add_epi64(a3, _mm256_load_si256((const __m256i *)(p + i + 96)));
    }
    __m256i s = _mm256_add_epi64(_mm256_add_epi64(a0, a1), _mm256_add_epi64(a2, a3));
    uint64_t out[4];
    _mm256_storeu_si256((__m256i *)out, s);
    return out[0] + out[1] + out[2] + out[3];
}

static volatile uint64_t sink;

// GB/s of one read of `bytes` at `p`, split into equal parts across `nt` threads.
static double read_pass(const uint8_t *p, size_t bytes, int nt) {
    size_t per = bytes / (size_t)nt / 128 * 128;
    uint64_t total = 0;
    double t = now_s();
#pragma omp parallel num_threads(nt) reduction(+ : total)
    total += sum_read(p + (size_t)omp_get_thread_num() * per, per);
    double secs = now_s() - t;
    sink += total;
    return (double)(per * (size_t)nt) / secs / 1e9;
}

// Reads n consecutive 64 MiB slices starting at slice *next (wrapping): mean GB/s, and the
// fastest slice in *fastest (max-updated).
static double read_slices(const uint8_t *buf, size_t *next, int n, int nt, double *fastest) {
    size_t n_slices = BW_BYTES / SLICE_BYTES;
    double secs = 0;
    for (int i = 0; i < n; i++) {
        size_t s = (*next)++ % n_slices;
        double g = read_pass(buf + s * SLICE_BYTES, SLICE_BYTES, nt);
        if (g > *fastest) *fastest = g;
        secs += (double)SLICE_BYTES / 1e9 / g;
    }
    return (double)(n * SLICE_BYTES) / 1e9 / secs;
}

// ---------------------------------------------------------------------------------------
// Weights.

static enum ggml_type type_from_name(const char *name) {
    for (int t = 0; t < GGML_TYPE_COUNT; t++) {
        const char *n = ggml_type_name((enum ggml_type)t);
        if (n && strcasecmp(n, name) == 0) return (enum ggml_type)t;
    }
    fprintf(stderr, "unknown ggml type '%s'\n", name);
    exit(2);
}

#define SEED_ROWS 64

// From ik_llama.cpp's iqk_quantize.h (extern "C"): the run-time repack (-rtr) of one tensor,
// and the type it would repack a tensor to.
void iqk_repack_tensor(struct ggml_tensor *tensor);
int iqk_repacked_type(const struct ggml_tensor *tensor);

// The type whose run-time repack gives `ty`, or GGML_TYPE_COUNT if none does.
static enum ggml_type repack_source(enum ggml_type ty) {
    struct ggml_init_params p = {.mem_size = 1 << 16, .mem_buffer = NULL, .no_alloc = true};
    struct ggml_context *ctx = ggml_init(p);
    enum ggml_type found = GGML_TYPE_COUNT;
    for (int t = 0; t < GGML_TYPE_COUNT && found == GGML_TYPE_COUNT; t++) {
        if (t == (int)ty || !ggml_type_name((enum ggml_type)t) || ggml_blck_size((enum ggml_type)t) <= 0)
            continue;
        struct ggml_tensor *w =
            ggml_new_tensor_2d(ctx, (enum ggml_type)t, 4 * ggml_blck_size((enum ggml_type)t), SEED_ROWS);
        if (iqk_repacked_type(w) == (int)ty) found = (enum ggml_type)t;
    }
    ggml_free(ctx);
    return found;
}

// Rows interleaved in one group of an "_r4"/"_r8"/"_r16" type (1 for the others).
static int64_t interleaved_rows(enum ggml_type ty) {
    const char *r = strrchr(ggml_type_name(ty), '_');
    return r && r[1] == 'r' && atoi(r + 2) > 0 ? atoi(r + 2) : 1;
}

// Dequantizes `n_rows` rows of `ty` (a multiple of its interleave) with ggml's to_float, which
// takes a row's bytes (its row meta first, where the type has one) or a group of rows for the
// "_rN" types. The BitNet types are the exception: their to_float decodes the blocks after the
// row's scale (f16 for iq1_bn, f32 for iq2_bn) and leaves the scale out, so it is applied here.
static void dequantize_rows(enum ggml_type ty, const uint8_t *w, int64_t n_in, int64_t n_rows, float *out) {
    ggml_type_traits_t tr = ggml_internal_get_type_traits(ty);
    size_t row = ggml_row_size(ty, n_in);
    int64_t group = interleaved_rows(ty);
    for (int64_t r = 0; r < n_rows; r += group) {
        const uint8_t *src = w + (size_t)r * row;
        float *dst = out + r * n_in;
        if (ty == GGML_TYPE_IQ1_BN || ty == GGML_TYPE_IQ2_BN) {
            float scale;
            if (ty == GGML_TYPE_IQ1_BN) {
                ggml_fp16_t h;
                memcpy(&h, src, sizeof h);
                scale = ggml_fp16_to_fp32(h);
            } else {
                memcpy(&scale, src, sizeof scale);
            }
            tr.to_float(src + tr.row_meta_size, dst, n_in);
            for (int64_t i = 0; i < n_in; i++) dst[i] *= scale;
        } else {
            tr.to_float(src, dst, group * n_in);
        }
    }
}

// n_out rows of `ty`: SEED_ROWS quantized from random f32 (to the source type and then
// repacked with ik's -rtr repack where `ty` is a repack target), tiled over the rows. If
// `deq` is given, the seed rows' values as the source type's to_float gives them.
static void make_matrix(enum ggml_type ty, int64_t n_in, int64_t n_out, uint8_t *dst, float *deq) {
    int64_t seed = n_out < SEED_ROWS ? n_out : SEED_ROWS;
    enum ggml_type base = repack_source(ty);
    enum ggml_type qty = base == GGML_TYPE_COUNT ? ty : base;
    float *src = malloc(sizeof(float) * (size_t)(n_in * seed));
    float *imat = malloc(sizeof(float) * (size_t)n_in);
    for (int64_t i = 0; i < n_in * seed; i++) src[i] = rng_f32();
    for (int64_t i = 0; i < n_in; i++) imat[i] = 1.0f;
    size_t row = ggml_row_size(ty, n_in);
    if (ggml_row_size(qty, n_in) != row) {
        fprintf(stderr, "%s: row size differs from its source type %s\n", ggml_type_name(ty), ggml_type_name(qty));
        exit(1);
    }
    size_t got = ggml_quantize_chunk(qty, src, dst, 0, seed, n_in, imat, NULL);
    if (got != row * (size_t)seed) {
        fprintf(stderr, "%s: quantize wrote %zu bytes, expected %zu\n", ggml_type_name(qty), got,
                row * (size_t)seed);
        exit(1);
    }
    if (deq) dequantize_rows(qty, dst, n_in, seed, deq);
    if (base != GGML_TYPE_COUNT) {
        struct ggml_init_params p = {.mem_size = 1 << 16, .mem_buffer = NULL, .no_alloc = true};
        struct ggml_context *ctx = ggml_init(p);
        struct ggml_tensor *w = ggml_new_tensor_2d(ctx, base, n_in, seed);
        ggml_set_name(w, "blk.0.ffn_up_exps.weight");
        w->data = dst;
        iqk_repack_tensor(w);
        if (w->type != ty) {
            fprintf(stderr, "%s: repack of %s gave %s\n", ggml_type_name(ty), ggml_type_name(base),
                    ggml_type_name(w->type));
            exit(1);
        }
        ggml_free(ctx);
    }
    for (int64_t r = seed; r < n_out; r += seed) {
        int64_t n = n_out - r < seed ? n_out - r : seed;
        memcpy(dst + (size_t)r * row, dst, (size_t)n * row);
    }
    free(src);
    free(imat);
}

// A one-node graph y = W x for one f32 token; W->data is set per op.
struct gemv {
    struct ggml_context *ctx;
    struct ggml_tensor *w, *x, *y;
    struct ggml_cgraph *gf;
    struct ggml_cplan plan;
};

static void gemv_init(struct gemv *g, enum ggml_type ty, int64_t n_in, int64_t n_out, int nt) {
    struct ggml_init_params p = {.mem_size = 1 << 20, .mem_buffer = NULL, .no_alloc = true};
    g->ctx = ggml_init(p);
    g->w = ggml_new_tensor_2d(g->ctx, ty, n_in, n_out);
    g->x = ggml_new_tensor_2d(g->ctx, GGML_TYPE_F32, n_in, 1);
    g->y = ggml_mul_mat(g->ctx, g->w, g->x);
    g->x->data = alloc_big(sizeof(float) * (size_t)n_in);
    g->y->data = alloc_big(sizeof(float) * (size_t)n_out);
    float *x = g->x->data;
    for (int64_t i = 0; i < n_in; i++) x[i] = rng_f32();
    g->gf = ggml_new_graph(g->ctx);
    ggml_build_forward_expand(g->gf, g->y);
    g->plan = ggml_graph_plan(g->gf, nt);
    g->plan.work_data = g->plan.work_size ? alloc_big(g->plan.work_size) : NULL;
}

static void gemv_run(struct gemv *g, void *weights) {
    g->w->data = weights;
    if (ggml_graph_compute(g->gf, &g->plan) != GGML_STATUS_SUCCESS) {
        fprintf(stderr, "ggml_graph_compute failed\n");
        exit(1);
    }
}

static void gemv_free(struct gemv *g) {
    free(g->x->data);
    free(g->y->data);
    free(g->plan.work_data);
    ggml_free(g->ctx);
}

// One pass of max(n_copies, 16) ops cycling over the copies: mean seconds per op; the
// fastest single op min-updated into *fastest.
static double gemv_pass(struct gemv *g, uint8_t *copies, size_t bytes, size_t n_copies,
                        double *fastest) {
    size_t ops = n_copies > 16 ? n_copies : 16;
    double t = now_s();
    for (size_t i = 0; i < ops; i++) {
        double t_op = now_s();
        gemv_run(g, copies + (i % n_copies) * bytes);
        double d = now_s() - t_op;
        if (d < *fastest) *fastest = d;
    }
    return (now_s() - t) / (double)ops;
}

// ---------------------------------------------------------------------------------------
// Sanity check: the graph's output against dequantize (the type's to_float) + f32 dot.

// Whether any dequantized weight is non-zero and all are finite (else the check cannot fail).
static int weights_sane(const float *w, int64_t n) {
    int nonzero = 0;
    for (int64_t i = 0; i < n; i++) {
        if (!isfinite(w[i])) return 0;
        nonzero |= w[i] != 0.0f;
    }
    return nonzero;
}

static int check_type(enum ggml_type ty) {
    const int64_t n_in = 512, n_out = SEED_ROWS;
    uint8_t *w = alloc_big(ggml_row_size(ty, n_in) * n_out);
    float *deq = malloc(sizeof(float) * (size_t)(n_in * n_out));
    make_matrix(ty, n_in, n_out, w, deq);
    struct gemv g;
    gemv_init(&g, ty, n_in, n_out, 2);
    gemv_run(&g, w);
    const float *x = g.x->data, *y = g.y->data;
    double worst = 0;
    for (int64_t r = 0; r < n_out; r++) {
        double ref = 0, mag = 0;
        for (int64_t i = 0; i < n_in; i++) {
            ref += (double)deq[r * n_in + i] * x[i];
            mag += fabs((double)deq[r * n_in + i] * x[i]);
        }
        double rel = fabs(y[r] - ref) / (mag > 0 ? mag : 1);
        if (!(rel <= worst)) worst = rel; // NaN sticks
    }
    // The activations are quantized to 8 bits (Q8_K / Q8_0 family): ~0.4% per value, far
    // below 2% of sum |w x|; a wrong layout or scale is off by O(1).
    int ok = worst < 0.02 && weights_sane(deq, n_in * n_out);
    enum ggml_type base = repack_source(ty);
    printf("| %s | %s | %lld × %lld | %.2e | %s |\n", ggml_type_name(ty),
           base == GGML_TYPE_COUNT ? "quantized directly" : ggml_type_name(base), (long long)n_in,
           (long long)n_out, worst, ok ? "ok" : "FAIL");
    gemv_free(&g);
    free(deq);
    free(w);
    return ok;
}

// ---------------------------------------------------------------------------------------

static const char *arg_value(int argc, char **argv, const char *name, const char *dflt) {
    for (int i = 1; i + 1 < argc; i++)
        if (strcmp(argv[i], name) == 0) return argv[i + 1];
    return dflt;
}

static int has_flag(int argc, char **argv, const char *name) {
    for (int i = 1; i < argc; i++)
        if (strcmp(argv[i], name) == 0) return 1;
    return 0;
}

static void bench_case(enum ggml_type ty, int64_t n_in, int64_t n_out, int nt, int reps,
                       const uint8_t *bw_buf, size_t *next_slice) {
    size_t bytes = ggml_row_size(ty, n_in) * (size_t)n_out;
    size_t n_copies = ((size_t)512 << 20) / bytes + 1;
    uint8_t *copies = alloc_big(bytes * n_copies);
    make_matrix(ty, n_in, n_out, copies, NULL);
    for (size_t c = 1; c < n_copies; c++) memcpy(copies + c * bytes, copies, bytes);

    struct gemv g;
    gemv_init(&g, ty, n_in, n_out, nt);
    double best_cold = INFINITY, best_hot = INFINITY, fastest_op = INFINITY, unused = INFINITY;
    double best_bw = 0, fastest_bw = 0;
    gemv_pass(&g, copies, bytes, n_copies, &unused); // warm-up
    gemv_pass(&g, copies, bytes, 1, &unused);
    for (int r = 0; r < reps; r++) {
        double bw = read_slices(bw_buf, next_slice, 4, nt, &fastest_bw);
        if (bw > best_bw) best_bw = bw;
        double cold = gemv_pass(&g, copies, bytes, n_copies, &fastest_op);
        if (cold < best_cold) best_cold = cold;
        double hot = gemv_pass(&g, copies, bytes, 1, &unused);
        if (hot < best_hot) best_hot = hot;
    }
    double c = (double)bytes / best_cold / 1e9, f = (double)bytes / fastest_op / 1e9;
    printf("| %s | %lld × %lld | %.1f | %d | %.1f | %.1f | %.0f%% | %.1f | %.1f | %.0f%% | %.1f |\n",
           ggml_type_name(ty), (long long)n_in, (long long)n_out, (double)bytes / (1 << 20), nt, c,
           best_bw, 100 * c / best_bw, f, fastest_bw, 100 * f / fastest_bw,
           (double)bytes / best_hot / 1e9);
    fflush(stdout);
    gemv_free(&g);
    free(copies);
}

int main(int argc, char **argv) {
    const char *types = arg_value(argc, argv, "--types",
                                  "iq1_s,iq1_m,iq2_xxs,iq2_xs,iq2_s,iq3_xxs,iq3_s,q2_K,q3_K,iq4_xs,q4_0");
    const char *shapes = arg_value(argc, argv, "--shapes", "2048x1408,7168x2048,2048x102400");
    int reps = atoi(arg_value(argc, argv, "--reps", "11"));
    int nt = atoi(arg_value(argc, argv, "--threads", "2"));
    if (reps < 1 || nt < 1) {
        fprintf(stderr, "--reps and --threads must be >= 1\n");
        return 2;
    }
    // ggml's tables (f16 conversion, iq grids) are set up by the first ggml_init.
    struct ggml_init_params p = {.mem_size = 1 << 16, .mem_buffer = NULL, .no_alloc = true};
    ggml_free(ggml_init(p));

    char *list = strdup(types), *tsave = NULL;
    if (has_flag(argc, argv, "--check")) {
        printf("Graph output vs to_float + f64 dot; error = worst |y - ref| / sum |w x| over the rows.\n\n");
        printf("| type | repacked from | n_in × n_out | error | |\n|---|---|---|---|---|\n");
        int ok = 1;
        for (char *t = strtok_r(list, ",", &tsave); t; t = strtok_r(NULL, ",", &tsave)) ok &= check_type(type_from_name(t));
        free(list);
        return ok ? 0 : 1;
    }

    // --bw-4k: the bandwidth buffer in 4 KiB pages (as a plain Vec is), to see what the page
    // size does to the reference the GEMV rates are compared with.
    int bw_huge = !has_flag(argc, argv, "--bw-4k");
    uint8_t *bw_buf = alloc_pages(BW_BYTES, bw_huge);
    for (size_t i = 0; i < BW_BYTES / 8; i++) ((uint64_t *)bw_buf)[i] = rng_next();
    size_t next_slice = 0;
    printf("ik_llama.cpp ggml GEMV (1 f32 token, ggml_mul_mat graph), %d threads, best of %d passes; "
           "bandwidth buffer in %s pages\n\n",
           nt, reps, bw_huge ? "huge (2 MiB)" : "4 KiB");
    printf("| type | n_in × n_out | MiB | threads | cold GB/s | bw | %% | fastest op | fastest bw | %% | hot GB/s |\n");
    printf("|---|---|---|---|---|---|---|---|---|---|---|\n");
    for (char *t = strtok_r(list, ",", &tsave); t; t = strtok_r(NULL, ",", &tsave)) {
        enum ggml_type ty = type_from_name(t);
        char *sh = strdup(shapes), *save = NULL;
        for (char *s = strtok_r(sh, ",", &save); s; s = strtok_r(NULL, ",", &save)) {
            long long n_in, n_out;
            if (sscanf(s, "%lldx%lld", &n_in, &n_out) != 2 || n_in <= 0 || n_out <= 0) {
                fprintf(stderr, "bad shape '%s' (want N_INxN_OUT)\n", s);
                return 2;
            }
            if (n_in % ggml_blck_size(ty) != 0) {
                fprintf(stderr, "%s: n_in %lld is not a multiple of the block size %lld\n", t, n_in,
                        (long long)ggml_blck_size(ty));
                return 2;
            }
            bench_case(ty, n_in, n_out, nt, reps, bw_buf, &next_slice);
        }
        free(sh);
    }
    printf("\n");
    free(list);
    free(bw_buf);
    return 0;
}
