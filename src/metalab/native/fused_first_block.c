/* A first convolution (3x3, stride 1, padding 1) with its batch norm folded into one linear
 * map of the patches, followed by 2x2 max-pooling, without writing the full-resolution
 * output: each pooled value is the largest of its window's four patch products, kept with
 * the window position it came from (0-3, row-major; the first maximum, as max_pool2d keeps).
 *
 * Loaded by metalab.native.fused_first_block through ctypes; compiled there with the
 * machine's C compiler. Layouts: x [N, Cin, H, W] (NCHW), map [P + 1, C] with P = Cin * 9
 * (the last row is the shift), pooled and argmax [N, H / 2, W / 2, C] (channels last).
 * C is a multiple of 16: the channel loops go in vectors of LANES_T channels.
 */
#include <stdint.h>
#include <string.h>

#define MAX_PATCH 27

/* Channels per vector: one register of the machine's widest vectors. The Python side takes
 * channels in multiples of 16, which every width here divides. A vector wider than the
 * machine's is lowered in pieces, and GCC 12 lowers the comparisons of a 512-bit vector on
 * an AVX2 machine lane by lane: the forward ran ~10x slower (benchmarks/NOTES.md). */
#if defined(__AVX512F__)
#define VECTOR_BYTES 64
#elif defined(__AVX2__)
#define VECTOR_BYTES 32
#else
#define VECTOR_BYTES 16
#endif
#define LANES_float (VECTOR_BYTES / 4)
#define LANES_double (VECTOR_BYTES / 8)

/* The zero-padded image (one row and column of zeros around each channel). */
#define PAD(T)                                                                              \
    static void pad_##T(const T *restrict image, int64_t Cin, int64_t H, int64_t W,         \
                        T *restrict padded) {                                               \
        memset(padded, 0, sizeof(T) * Cin * (H + 2) * (W + 2));                             \
        for (int64_t ci = 0; ci < Cin; ++ci)                                                \
            for (int64_t y = 0; y < H; ++y)                                                 \
                memcpy(padded + (ci * (H + 2) + y + 1) * (W + 2) + 1,                       \
                       image + (ci * H + y) * W, sizeof(T) * W);                            \
    }

/* The patches of the four positions of pooling window (i, j): p[k][q], k = 2 * dy + dx,
 * read from the padded image. */
#define WINDOW(T)                                                                           \
    static void window_##T(const T *restrict padded, int64_t Cin, int64_t H, int64_t W,     \
                           int64_t i, int64_t j, T p[4][MAX_PATCH + 1]) {                   \
        for (int k = 0; k < 4; ++k) {                                                       \
            const int64_t y = 2 * i + k / 2, x = 2 * j + k % 2;                             \
            int q = 0;                                                                      \
            for (int64_t ci = 0; ci < Cin; ++ci)                                            \
                for (int64_t dy = 0; dy < 3; ++dy)                                          \
                    for (int64_t dx = 0; dx < 3; ++dx)                                      \
                        p[k][q++] = padded[(ci * (H + 2) + y + dy) * (W + 2) + x + dx];     \
            p[k][q] = (T)1;                                                                 \
        }                                                                                   \
    }

/* Sums of the patches and of their outer products over every output position. Patch entry
 * q at (y, x) is the padded image at (y + dy_q, x + dx_q): per row, each product is a dot
 * product of two shifted rows, summed lane-wise in T vectors over an image's rows, and the
 * images add up in double. */
#define STATS(T)                                                                            \
    void patch_stats_##T(const T *restrict x, int64_t N, int64_t Cin, int64_t H, int64_t W, \
                         double *restrict sum, double *restrict outer) {                    \
        const int64_t P = Cin * 9, chunks = (W + STAT_LANES - 1) / STAT_LANES;              \
        T padded[Cin * (H + 2) * (W + 2)];                                                  \
        vstat_##T shifted[MAX_PATCH][chunks];                                               \
        vstat_##T row_sum[MAX_PATCH], row_outer[MAX_PATCH * MAX_PATCH];                     \
        memset(sum, 0, sizeof(double) * P);                                                 \
        memset(outer, 0, sizeof(double) * P * P);                                           \
        for (int64_t n = 0; n < N; ++n) {                                                   \
            pad_##T(x + n * Cin * H * W, Cin, H, W, padded);                                \
            memset(row_sum, 0, sizeof row_sum);                                             \
            memset(row_outer, 0, sizeof row_outer);                                         \
            for (int64_t y = 0; y < H; ++y) {                                               \
                memset(shifted, 0, sizeof shifted);                                         \
                int64_t q = 0;                                                              \
                for (int64_t ci = 0; ci < Cin; ++ci)                                        \
                    for (int64_t dy = 0; dy < 3; ++dy)                                      \
                        for (int64_t dx = 0; dx < 3; ++dx, ++q)                             \
                            memcpy(shifted[q], padded + (ci * (H + 2) + y + dy) * (W + 2) + dx, \
                                   sizeof(T) * W);                                          \
                for (q = 0; q < P; ++q)                                                     \
                    for (int64_t c = 0; c < chunks; ++c) {                                  \
                        row_sum[q] += shifted[q][c];                                        \
                        for (int64_t r = q; r < P; ++r)                                     \
                            row_outer[q * P + r] += shifted[q][c] * shifted[r][c];          \
                    }                                                                       \
            }                                                                               \
            for (int64_t q = 0; q < P; ++q)                                                 \
                for (int l = 0; l < STAT_LANES; ++l) {                                      \
                    sum[q] += row_sum[q][l];                                                \
                    for (int64_t r = q; r < P; ++r) outer[q * P + r] += row_outer[q * P + r][l]; \
                }                                                                           \
        }                                                                                   \
        for (int64_t q = 0; q < P; ++q)                                                     \
            for (int64_t r = 0; r < q; ++r) outer[q * P + r] = outer[r * P + q];            \
    }

/* Vectors of LANES_T channels (GCC/Clang vector extensions), one register each. */
typedef float vfloat __attribute__((vector_size(VECTOR_BYTES)));
typedef int32_t vint_float __attribute__((vector_size(VECTOR_BYTES)));
typedef uint8_t vbyte_float __attribute__((vector_size(LANES_float)));
typedef double vdouble __attribute__((vector_size(VECTOR_BYTES)));
typedef int64_t vint_double __attribute__((vector_size(VECTOR_BYTES)));
typedef uint8_t vbyte_double __attribute__((vector_size(LANES_double)));

#define STAT_LANES 8
typedef float vstat_float __attribute__((vector_size(STAT_LANES * sizeof(float))));
typedef double vstat_double __attribute__((vector_size(STAT_LANES * sizeof(double))));

#define FORWARD(T)                                                                          \
    void forward_##T(const T *restrict x, const T *restrict map, T *restrict pooled,        \
                     uint8_t *restrict argmax, int64_t N, int64_t Cin, int64_t H, int64_t W, \
                     int64_t C) {                                                           \
        const int64_t P = Cin * 9, Ho = H / 2, Wo = W / 2, blocks = C / LANES_##T;          \
        T p[4][MAX_PATCH + 1];                                                              \
        T padded[Cin * (H + 2) * (W + 2)];                                                  \
        v##T rows[blocks][MAX_PATCH + 1];                                                   \
        for (int64_t b = 0; b < blocks; ++b)                                                \
            for (int64_t q = 0; q <= P; ++q)                                                \
                memcpy(&rows[b][q], map + q * C + b * LANES_##T, sizeof(v##T));             \
        for (int64_t n = 0; n < N; ++n) {                                                   \
            pad_##T(x + n * Cin * H * W, Cin, H, W, padded);                                \
            for (int64_t i = 0; i < Ho; ++i)                                                \
                for (int64_t j = 0; j < Wo; ++j) {                                          \
                    window_##T(padded, Cin, H, W, i, j, p);                                 \
                    for (int64_t b = 0; b < blocks; ++b) {                                  \
                        v##T out[4];                                                        \
                        for (int k = 0; k < 4; ++k) {                                       \
                            out[k] = rows[b][P]; /* the shift: patch entry P is 1 */        \
                            for (int64_t q = 0; q < P; ++q) out[k] += p[k][q] * rows[b][q]; \
                        }                                                                   \
                        v##T best = out[0];                                                 \
                        vint_##T arg = {0};                                                 \
                        for (int k = 1; k < 4; ++k) {                                       \
                            /* the first maximum wins, and NaN, as in max_pool2d */         \
                            vint_##T take = (out[k] > best) | (out[k] != out[k]);          \
                            best = (v##T)((take & (vint_##T)out[k]) | (~take & (vint_##T)best)); \
                            arg = (take & k) | (~take & arg);                               \
                        }                                                                   \
                        const int64_t at = ((n * Ho + i) * Wo + j) * C + b * LANES_##T;     \
                        memcpy(pooled + at, &best, sizeof best);                            \
                        const vbyte_##T bytes = __builtin_convertvector(arg, vbyte_##T);    \
                        memcpy(argmax + at, &bytes, sizeof bytes);                          \
                    }                                                                       \
                }                                                                           \
        }                                                                                   \
    }

/* grad_map[q][c] = sum over windows of patch(argmax)[q] * grad[c] (q = P: the sum of grad),
 * summed per image in T, then over images. */
#define BACKWARD(T)                                                                         \
    void backward_##T(const T *restrict x, const uint8_t *restrict argmax,                  \
                      const T *restrict grad, T *restrict grad_map, int64_t N, int64_t Cin, \
                      int64_t H, int64_t W, int64_t C) {                                    \
        const int64_t P = Cin * 9, Ho = H / 2, Wo = W / 2, blocks = C / LANES_##T;          \
        T p[4][MAX_PATCH + 1];                                                              \
        T padded[Cin * (H + 2) * (W + 2)];                                                  \
        v##T total[blocks][MAX_PATCH + 1], image[blocks][MAX_PATCH + 1];                    \
        memset(total, 0, sizeof total);                                                     \
        for (int64_t n = 0; n < N; ++n) {                                                   \
            pad_##T(x + n * Cin * H * W, Cin, H, W, padded);                                \
            memset(image, 0, sizeof image);                                                 \
            for (int64_t i = 0; i < Ho; ++i)                                                \
                for (int64_t j = 0; j < Wo; ++j) {                                          \
                    window_##T(padded, Cin, H, W, i, j, p);                                 \
                    for (int64_t b = 0; b < blocks; ++b) {                                  \
                        const int64_t at = ((n * Ho + i) * Wo + j) * C + b * LANES_##T;     \
                        v##T g, masked[4];                                                  \
                        vbyte_##T bytes;                                                    \
                        memcpy(&g, grad + at, sizeof g);                                    \
                        memcpy(&bytes, argmax + at, sizeof bytes);                          \
                        const vint_##T arg = __builtin_convertvector(bytes, vint_##T);      \
                        for (int k = 0; k < 4; ++k)                                         \
                            masked[k] = (v##T)((arg == k) & (vint_##T)g);                   \
                        for (int64_t q = 0; q < P; ++q)                                     \
                            image[b][q] += p[0][q] * masked[0] + p[1][q] * masked[1]        \
                                           + p[2][q] * masked[2] + p[3][q] * masked[3];     \
                        image[b][P] += g;                                                   \
                    }                                                                       \
                }                                                                           \
            for (int64_t b = 0; b < blocks; ++b)                                            \
                for (int64_t q = 0; q <= P; ++q) total[b][q] += image[b][q];                \
        }                                                                                   \
        for (int64_t b = 0; b < blocks; ++b)                                                \
            for (int64_t q = 0; q <= P; ++q)                                                \
                memcpy(grad_map + q * C + b * LANES_##T, &total[b][q], sizeof(v##T));       \
    }

PAD(float)
PAD(double)
WINDOW(float)
WINDOW(double)
STATS(float)
STATS(double)
FORWARD(float)
FORWARD(double)
BACKWARD(float)
BACKWARD(double)
