// TopoLoss's per-unit sums and its gradient on the CPU, reading a weight in its own layout.
//
// A sheet is a 2-D weight whose units are its rows ("units first": nn.Linear, Conv2d flattened to (out, in*k*k)) or
// its columns ("depth first": transformers' Conv1D, (in, out)). A depth-first weight is walked in depth tiles of kTile
// rows: a tile is loaded once into a (units, kTile) float32 buffer that stays in the core's cache (transposed on the
// way in, 8 x 8 blocks in registers), the sparse operator is applied to the buffer's rows, and the gradient leaves
// through a 16-unit staging block, transposed back on the way out. A units-first float32 weight is streamed row by
// row (a unit's neighbours are rows a few sheet rows away, still in cache; the gradient of long rows in depth chunks,
// that of large sheets whose blur reads only coarse points by the scatter walk, without G);
// other dtypes go through the tiles. So each kernel reads the weight once and the backward writes the gradient once,
// in the weight's own layout and dtype: no transposed or cast copy of the weight ever exists. With AVX2/FMA
// (HF_TOPO_AVX2) the inner loops use intrinsics; the portable code is plain C++ that compilers vectorize.
//
// Operators on one sheet (the building blocks, tested against dense products):
// sheet_cosine_sums(weight, units_first, offsets, indices, values) -> (3, units) float32:
//     row 0: <C_u, (B C)_u>, row 1: |C_u|^2, row 2: |(B C)_u|^2, where row u of B has the entries
//     indices[offsets[u]:offsets[u+1]] with weights values[...] (the bag layout of F.embedding_bag, offsets without
//     the final end). A unit's sums come from one thread (rows) or per-tile partial sums added in tile order, so
//     the result does not depend on the number of threads.
// sheet_sparse_apply(weight, units_first, offsets, indices, values) -> weight-shaped tensor of weight's dtype:
//     the sheet (S C) for a sparse unit operator S in the same bag layout, in the weight's layout.
// Operators on a group of same-geometry sheets, what hf_topo.regularizers.grouped calls (one per direction and
// geometry, so a model's TopoLoss is a handful of operator calls): sheet_cosine_forward and sheet_cosine_backward,
// described where they are defined below.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <tuple>
#include <vector>
#include <cstdlib>
#include <cstdint>
#include <type_traits>
#include <memory>
#include <optional>

#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#define HF_TOPO_AVX2 1
#endif

namespace {

constexpr int64_t kTile = 32;  // depth columns per tile: a (3072 units, 32) float buffer is 384 KiB

#ifdef HF_TOPO_AVX2
// Transposes the 8 x 8 block held in r[0..7] (row j, lane b) into r[b] (row b, lane j).
inline void transpose8(__m256 (&r)[8]) {
  __m256 t[8], s[8];
  for (int i = 0; i < 4; ++i) {
    t[2 * i] = _mm256_unpacklo_ps(r[2 * i], r[2 * i + 1]);
    t[2 * i + 1] = _mm256_unpackhi_ps(r[2 * i], r[2 * i + 1]);
  }
  for (int i = 0; i < 2; ++i) {
    s[4 * i + 0] = _mm256_shuffle_ps(t[4 * i], t[4 * i + 2], _MM_SHUFFLE(1, 0, 1, 0));
    s[4 * i + 1] = _mm256_shuffle_ps(t[4 * i], t[4 * i + 2], _MM_SHUFFLE(3, 2, 3, 2));
    s[4 * i + 2] = _mm256_shuffle_ps(t[4 * i + 1], t[4 * i + 3], _MM_SHUFFLE(1, 0, 1, 0));
    s[4 * i + 3] = _mm256_shuffle_ps(t[4 * i + 1], t[4 * i + 3], _MM_SHUFFLE(3, 2, 3, 2));
  }
  for (int i = 0; i < 4; ++i) {
    r[i] = _mm256_permute2f128_ps(s[i], s[i + 4], 0x20);
    r[i + 4] = _mm256_permute2f128_ps(s[i], s[i + 4], 0x31);
  }
}

// Full float32 tiles of a depth-first weight: 8 x 8 blocks transposed in registers. Returns the first unit not done.
inline int64_t load_tile_avx2(const float* weight, int64_t units, int64_t d0, float* tile) {
  const int64_t full = units - units % 8;
  // Eight weight rows at a time (eight read streams), all units along them.
  for (int64_t k0 = 0; k0 < kTile; k0 += 8) {
    for (int64_t u0 = 0; u0 < full; u0 += 8) {
      __m256 r[8];
      for (int j = 0; j < 8; ++j) r[j] = _mm256_loadu_ps(weight + (d0 + k0 + j) * units + u0);
      transpose8(r);
      for (int b = 0; b < 8; ++b) _mm256_storeu_ps(tile + (u0 + b) * kTile + k0, r[b]);
    }
  }
  return full;
}

// Depth first, full float32 tile: G C for 16 units at a time, each unit's row accumulated in 4 registers into a
// 16-row staging block that stays in L1, then transposed in 8 x 8 blocks and written as 64 contiguous bytes (a whole
// cache line) into each of the tile's 32 output rows, with non-temporal stores where the row is 32-byte aligned. The
// output rows lie `units` floats apart (12 KiB for GPT-2, so all in one L1 set): ordinary stores would fetch every
// line before overwriting it and evict it half written; streamed whole lines go to memory once (measured: the
// gradient's stores took about 60 % of a Conv1D backward before). Returns the first unit not done (the units after
// the last multiple of 16).
inline void stage_unit(const float* tile, const int64_t* off, const int64_t* idx, const float* val, int64_t nnz,
                       int64_t units, int64_t u, float* staged_row) {
  const int64_t end = u + 1 < units ? off[u + 1] : nnz;
  __m256 acc[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps()};
  for (int64_t e = off[u]; e < end; ++e) {
    const __m256 v = _mm256_set1_ps(val[e]);
    const float* src = tile + idx[e] * kTile;
    for (int q = 0; q < 4; ++q) acc[q] = _mm256_fmadd_ps(v, _mm256_loadu_ps(src + 8 * q), acc[q]);
  }
  for (int q = 0; q < 4; ++q) _mm256_store_ps(staged_row + 8 * q, acc[q]);
}

inline int64_t apply_store_avx2(const float* tile, const int64_t* off, const int64_t* idx, const float* val,
                                int64_t nnz, int64_t units, int64_t d0, float* out) {
  constexpr int64_t kUnits = 16;
  alignas(64) float staged[kUnits * kTile];
  int64_t u0 = 0;
  for (; u0 + kUnits <= units; u0 += kUnits) {
    for (int64_t b = 0; b < kUnits; ++b) stage_unit(tile, off, idx, val, nnz, units, u0 + b, staged + b * kTile);
    for (int64_t k0 = 0; k0 < kTile; k0 += 8) {
      __m256 lo[8], hi[8];
      for (int b = 0; b < 8; ++b) {
        lo[b] = _mm256_load_ps(staged + b * kTile + k0);
        hi[b] = _mm256_load_ps(staged + (b + 8) * kTile + k0);
      }
      transpose8(lo);
      transpose8(hi);
      for (int j = 0; j < 8; ++j) {
        float* row = out + (d0 + k0 + j) * units + u0;
        if ((reinterpret_cast<uintptr_t>(row) & 31) == 0) {
          _mm256_stream_ps(row, lo[j]);
          _mm256_stream_ps(row + 8, hi[j]);
        } else {
          _mm256_storeu_ps(row, lo[j]);
          _mm256_storeu_ps(row + 8, hi[j]);
        }
      }
    }
  }
  _mm_sfence();
  return u0;
}

// Units first, float32: a unit's neighbours are rows a few sheet rows away, which stay in cache while the units are
// walked in order, so the weight is streamed once row by row (no tile). Per unit, the addresses of its entries' rows
// and their broadcast weights are set up once, outside the loop along the depth; for the usual entry counts (a
// bilinear blur has at most 4 per row of B, and 2-5 per row of G except at the coarse grid's points) the count is a
// template parameter, so they stay in registers and the loop is straight-line code.
inline float hsum(__m256 v) {
  const __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  const __m128 t = _mm_add_ps(s, _mm_movehl_ps(s, s));
  return _mm_cvtss_f32(_mm_add_ss(t, _mm_shuffle_ps(t, t, 1)));
}

// Adds the sums of the depth columns [j, depth) (the tail after the vector steps) to the three outputs.
inline void add_tail_sums(const float* const* src, const float* vals, int64_t n, const float* c, int64_t j,
                          int64_t depth, float* dot_out, float* cc_out, float* bb_out) {
  for (; j < depth; ++j) {
    float acc = 0.f;
    for (int64_t e = 0; e < n; ++e) acc += vals[e] * src[e][j];
    *dot_out += c[j] * acc;
    *cc_out += c[j] * c[j];
    *bb_out += acc * acc;
  }
}

// The three sums of one unit whose row of B has N entries (rows src[e] with weights vals[e]); c is the unit's row.
// Two sets of accumulators (16 floats per step) keep the FMA chains of dot, |c|^2 and |Bc|^2 off the critical path.
// Each step prefetches the same line of the next unit's row (c + stride, the weight's row length) into L2, one row
// ahead, so that its arrival overlaps this row's arithmetic; without it a single thread's walk took about the sum of
// its arithmetic and its reads (measured, 1 thread: GPT-2's 12 rows-first layers 9.4 -> 8.7 ms, ResNet-18's
// convolutions 5.3 -> 4.5 ms; into L1 or non-temporally, or whole rows at once, gained nothing). A prefetch past the
// weight's end (after the last unit) is a hint that never faults.
template <int N>
void unit_row_sums(const float* const* src, const float* vals, const float* c, int64_t depth, int64_t stride,
                   float* dot_out, float* cc_out, float* bb_out) {
  __m256 v[N];
  for (int e = 0; e < N; ++e) v[e] = _mm256_set1_ps(vals[e]);
  __m256 d0 = _mm256_setzero_ps(), d1 = d0, n0 = d0, n1 = d0, b0 = d0, b1 = d0;
  int64_t j = 0;
  for (; j + 16 <= depth; j += 16) {
    _mm_prefetch(reinterpret_cast<const char*>(c + stride + j), _MM_HINT_T1);
    __m256 a0 = _mm256_mul_ps(v[0], _mm256_loadu_ps(src[0] + j));
    __m256 a1 = _mm256_mul_ps(v[0], _mm256_loadu_ps(src[0] + j + 8));
    for (int e = 1; e < N; ++e) {
      a0 = _mm256_fmadd_ps(v[e], _mm256_loadu_ps(src[e] + j), a0);
      a1 = _mm256_fmadd_ps(v[e], _mm256_loadu_ps(src[e] + j + 8), a1);
    }
    const __m256 c0 = _mm256_loadu_ps(c + j), c1 = _mm256_loadu_ps(c + j + 8);
    d0 = _mm256_fmadd_ps(c0, a0, d0);
    d1 = _mm256_fmadd_ps(c1, a1, d1);
    n0 = _mm256_fmadd_ps(c0, c0, n0);
    n1 = _mm256_fmadd_ps(c1, c1, n1);
    b0 = _mm256_fmadd_ps(a0, a0, b0);
    b1 = _mm256_fmadd_ps(a1, a1, b1);
  }
  if (j + 8 <= depth) {
    __m256 a0 = _mm256_mul_ps(v[0], _mm256_loadu_ps(src[0] + j));
    for (int e = 1; e < N; ++e) a0 = _mm256_fmadd_ps(v[e], _mm256_loadu_ps(src[e] + j), a0);
    const __m256 c0 = _mm256_loadu_ps(c + j);
    d0 = _mm256_fmadd_ps(c0, a0, d0);
    n0 = _mm256_fmadd_ps(c0, c0, n0);
    b0 = _mm256_fmadd_ps(a0, a0, b0);
    j += 8;
  }
  *dot_out = hsum(_mm256_add_ps(d0, d1));
  *cc_out = hsum(_mm256_add_ps(n0, n1));
  *bb_out = hsum(_mm256_add_ps(b0, b1));
  add_tail_sums(src, vals, N, c, j, depth, dot_out, cc_out, bb_out);
}

// Any entry count: the same sums, 8 floats per step, the entries walked from the hoisted arrays.
void unit_row_sums_any(const float* const* src, const float* vals, int64_t n, const float* c, int64_t depth,
                       float* dot_out, float* cc_out, float* bb_out) {
  __m256 dot = _mm256_setzero_ps(), cc = dot, bb = dot;
  int64_t j = 0;
  for (; j + 8 <= depth; j += 8) {
    __m256 acc = _mm256_setzero_ps();
    for (int64_t e = 0; e < n; ++e) acc = _mm256_fmadd_ps(_mm256_set1_ps(vals[e]), _mm256_loadu_ps(src[e] + j), acc);
    const __m256 cj = _mm256_loadu_ps(c + j);
    dot = _mm256_fmadd_ps(cj, acc, dot);
    cc = _mm256_fmadd_ps(cj, cj, cc);
    bb = _mm256_fmadd_ps(acc, acc, bb);
  }
  *dot_out = hsum(dot);
  *cc_out = hsum(cc);
  *bb_out = hsum(bb);
  add_tail_sums(src, vals, n, c, j, depth, dot_out, cc_out, bb_out);
}

// The rows of unit u's entries (offsets/indices/values in the bag layout), copied into src/vals; returns their count.
// Callers process a row of at most kMaxEntries entries at a time.
constexpr int64_t kMaxEntries = 64;

inline int64_t unit_entries(const float* weight, int64_t depth, int64_t d0, const int64_t* idx, const float* val,
                            int64_t begin, int64_t end, const float** src, float* vals) {
  const int64_t n = std::min(end - begin, kMaxEntries);
  for (int64_t e = 0; e < n; ++e) {
    src[e] = weight + idx[begin + e] * depth + d0;
    vals[e] = val[begin + e];
  }
  return n;
}

// The sums of units [u_begin, u_end) of a units-first float32 sheet, over the depth in chunks of `chunk` floats (all
// units' first chunk, then their second, ...; each unit's partial sums added in chunk order, so the result does not
// depend on the number of threads).
void rows_sums_avx2(const float* weight, int64_t depth, int64_t chunk, const int64_t* off, const int64_t* idx,
                    const float* val, int64_t nnz, int64_t u_begin, int64_t u_end, int64_t units, float* dots,
                    float* norms_c, float* norms_b) {
  const float* src[kMaxEntries];
  float vals[kMaxEntries];
  if (depth == 0)
    for (int64_t u = u_begin; u < u_end; ++u) dots[u] = norms_c[u] = norms_b[u] = 0.f;
  for (int64_t d0 = 0; d0 < depth; d0 += chunk) {
    const int64_t len = std::min(chunk, depth - d0);
    for (int64_t u = u_begin; u < u_end; ++u) {
      const int64_t begin = off[u], end = u + 1 < units ? off[u + 1] : nnz;
      const float* c = weight + u * depth + d0;
      float dot = 0.f, cc = 0.f, bb = 0.f;
      if (end - begin > kMaxEntries) {  // beyond any blur hf_topo builds (<= 40 entries): plain loop
        for (int64_t j = 0; j < len; ++j) {
          float acc = 0.f;
          for (int64_t e = begin; e < end; ++e) acc += val[e] * weight[idx[e] * depth + d0 + j];
          dot += c[j] * acc;
          cc += c[j] * c[j];
          bb += acc * acc;
        }
      } else {
        const int64_t n = unit_entries(weight, depth, d0, idx, val, begin, end, src, vals);
        switch (n) {
          case 0: add_tail_sums(src, vals, 0, c, 0, len, &dot, &cc, &bb); break;
          case 1: unit_row_sums<1>(src, vals, c, len, depth, &dot, &cc, &bb); break;
          case 2: unit_row_sums<2>(src, vals, c, len, depth, &dot, &cc, &bb); break;
          case 3: unit_row_sums<3>(src, vals, c, len, depth, &dot, &cc, &bb); break;
          case 4: unit_row_sums<4>(src, vals, c, len, depth, &dot, &cc, &bb); break;
          case 5: unit_row_sums<5>(src, vals, c, len, depth, &dot, &cc, &bb); break;
          case 6: unit_row_sums<6>(src, vals, c, len, depth, &dot, &cc, &bb); break;
          case 7: unit_row_sums<7>(src, vals, c, len, depth, &dot, &cc, &bb); break;
          case 8: unit_row_sums<8>(src, vals, c, len, depth, &dot, &cc, &bb); break;
          default: unit_row_sums_any(src, vals, n, c, len, &dot, &cc, &bb);
        }
      }
      dots[u] = d0 == 0 ? dot : dots[u] + dot;
      norms_c[u] = d0 == 0 ? cc : norms_c[u] + cc;
      norms_b[u] = d0 == 0 ? bb : norms_b[u] + bb;
    }
  }
}

// Rows longer than this many floats are summed in equal chunks of at most this length, multiples of 16 (ResNet-18's
// 4608-float rows in 3 chunks of 1536): a chunk of the neighbour rows a unit reads stays closer to the core than
// whole 18 KiB rows (measured, 1 thread: ResNet-18's 19 convolutions' forward 4.7 -> 3.3 ms, 2 threads 2.5 -> 2.0;
// chunks of 256 or 512 floats lost or gained nothing, 768-1536 gained alike).
constexpr int64_t kSumsChunk = 1536;

int64_t sums_depth_chunk(int64_t depth) {
  const int64_t pieces = (depth + kSumsChunk - 1) / kSumsChunk;
  return std::max<int64_t>(1, ((depth + pieces - 1) / std::max<int64_t>(pieces, 1) + 15) / 16 * 16);
}

// One gradient row o = sum_e vals[e] * src[e], N entries, 32 floats per step in four accumulators, written with
// non-temporal stores where o is 32-byte aligned (whole 128-byte runs; nothing reads them here again).
template <int N>
void unit_row_apply(const float* const* src, const float* vals, int64_t depth, float* o) {
  __m256 v[N];
  for (int e = 0; e < N; ++e) v[e] = _mm256_set1_ps(vals[e]);
  const bool aligned = (reinterpret_cast<uintptr_t>(o) & 31) == 0;
  int64_t j = 0;
  for (; j + 32 <= depth; j += 32) {
    __m256 acc[4];
    for (int q = 0; q < 4; ++q) acc[q] = _mm256_mul_ps(v[0], _mm256_loadu_ps(src[0] + j + 8 * q));
    for (int e = 1; e < N; ++e)
      for (int q = 0; q < 4; ++q) acc[q] = _mm256_fmadd_ps(v[e], _mm256_loadu_ps(src[e] + j + 8 * q), acc[q]);
    if (aligned) {
      for (int q = 0; q < 4; ++q) _mm256_stream_ps(o + j + 8 * q, acc[q]);
    } else {
      for (int q = 0; q < 4; ++q) _mm256_storeu_ps(o + j + 8 * q, acc[q]);
    }
  }
  for (; j + 8 <= depth; j += 8) {
    __m256 acc = _mm256_mul_ps(v[0], _mm256_loadu_ps(src[0] + j));
    for (int e = 1; e < N; ++e) acc = _mm256_fmadd_ps(v[e], _mm256_loadu_ps(src[e] + j), acc);
    _mm256_storeu_ps(o + j, acc);
  }
  for (; j < depth; ++j) {
    float acc = 0.f;
    for (int e = 0; e < N; ++e) acc += vals[e] * src[e][j];
    o[j] = acc;
  }
}

// Any entry count (G's rows at the coarse grid's points have ~40): 32 floats per step, the entries walked from the
// hoisted arrays; `accumulate` adds into o instead of overwriting it (for rows of more than kMaxEntries entries).
void unit_row_apply_any(const float* const* src, const float* vals, int64_t n, int64_t depth, float* o,
                        bool accumulate) {
  const bool stream = !accumulate && (reinterpret_cast<uintptr_t>(o) & 31) == 0;
  int64_t j = 0;
  for (; j + 32 <= depth; j += 32) {
    __m256 acc[4];
    for (int q = 0; q < 4; ++q) acc[q] = accumulate ? _mm256_loadu_ps(o + j + 8 * q) : _mm256_setzero_ps();
    for (int64_t e = 0; e < n; ++e) {
      const __m256 v = _mm256_set1_ps(vals[e]);
      const float* s = src[e] + j;
      for (int q = 0; q < 4; ++q) acc[q] = _mm256_fmadd_ps(v, _mm256_loadu_ps(s + 8 * q), acc[q]);
    }
    if (stream) {
      for (int q = 0; q < 4; ++q) _mm256_stream_ps(o + j + 8 * q, acc[q]);
    } else {
      for (int q = 0; q < 4; ++q) _mm256_storeu_ps(o + j + 8 * q, acc[q]);
    }
  }
  for (; j + 8 <= depth; j += 8) {
    __m256 acc = accumulate ? _mm256_loadu_ps(o + j) : _mm256_setzero_ps();
    for (int64_t e = 0; e < n; ++e) acc = _mm256_fmadd_ps(_mm256_set1_ps(vals[e]), _mm256_loadu_ps(src[e] + j), acc);
    _mm256_storeu_ps(o + j, acc);
  }
  for (; j < depth; ++j) {
    float acc = accumulate ? o[j] : 0.f;
    for (int64_t e = 0; e < n; ++e) acc += vals[e] * src[e][j];
    o[j] = acc;
  }
}

void rows_apply_avx2(const float* weight, int64_t depth, int64_t chunk, const int64_t* off, const int64_t* idx,
                     const float* val, int64_t nnz, int64_t u_begin, int64_t u_end, int64_t units, float* out) {
  const float* src[kMaxEntries];
  float vals[kMaxEntries];
  for (int64_t d0 = 0; d0 < depth; d0 += chunk) {
    const int64_t len = std::min(chunk, depth - d0);
    for (int64_t u = u_begin; u < u_end; ++u) {
      const int64_t begin = off[u], end = u + 1 < units ? off[u + 1] : nnz;
      float* o = out + u * depth + d0;
      const int64_t n = unit_entries(weight, depth, d0, idx, val, begin, end, src, vals);
      switch (n) {
        case 0: std::fill(o, o + len, 0.f); break;
        case 1: unit_row_apply<1>(src, vals, len, o); break;
        case 2: unit_row_apply<2>(src, vals, len, o); break;
        case 3: unit_row_apply<3>(src, vals, len, o); break;
        case 4: unit_row_apply<4>(src, vals, len, o); break;
        case 5: unit_row_apply<5>(src, vals, len, o); break;
        case 6: unit_row_apply<6>(src, vals, len, o); break;
        case 7: unit_row_apply<7>(src, vals, len, o); break;
        case 8: unit_row_apply<8>(src, vals, len, o); break;
        default: {
          unit_row_apply_any(src, vals, n, len, o, false);
          for (int64_t b = begin + n; b < end; b += kMaxEntries) {  // rows of more than kMaxEntries entries
            const int64_t m = unit_entries(weight, depth, d0, idx, val, b, end, src, vals);
            unit_row_apply_any(src, vals, m, len, o, true);
          }
        }
      }
    }
  }
  _mm_sfence();
}
#endif

template <typename scalar_t>
void load_tile(const scalar_t* weight, bool units_first, int64_t units, int64_t depth, int64_t d0, int64_t width,
               float* tile) {
  if (units_first) {
    for (int64_t u = 0; u < units; ++u) {
      const scalar_t* src = weight + u * depth + d0;
      float* dst = tile + u * kTile;
      for (int64_t k = 0; k < width; ++k) dst[k] = static_cast<float>(src[k]);
      for (int64_t k = width; k < kTile; ++k) dst[k] = 0.f;
    }
  } else {
    // Depth first: rows d0..d0+width of the weight become the tile's columns, in blocks of 8 units.
    constexpr int64_t kBlock = 8;
    int64_t u0 = 0;
#ifdef HF_TOPO_AVX2
    if constexpr (std::is_same_v<scalar_t, float>) {
      if (width == kTile) u0 = load_tile_avx2(weight, units, d0, tile);
    }
#endif
    for (; u0 + kBlock <= units; u0 += kBlock) {
      for (int64_t k = 0; k < width; ++k) {
        const scalar_t* src = weight + (d0 + k) * units + u0;
        for (int64_t b = 0; b < kBlock; ++b) tile[(u0 + b) * kTile + k] = static_cast<float>(src[b]);
      }
    }
    for (int64_t u = u0; u < units; ++u)
      for (int64_t k = 0; k < width; ++k) tile[u * kTile + k] = static_cast<float>(weight[(d0 + k) * units + u]);
    if (width < kTile)
      for (int64_t u = 0; u < units; ++u)
        for (int64_t k = width; k < kTile; ++k) tile[u * kTile + k] = 0.f;
  }
}

template <typename scalar_t>
void store_tile(const float* tile, bool units_first, int64_t units, int64_t depth, int64_t d0, int64_t width,
                int64_t u_begin, scalar_t* out) {
  if (units_first) {
    for (int64_t u = u_begin; u < units; ++u) {
      const float* src = tile + u * kTile;
      scalar_t* dst = out + u * depth + d0;
      for (int64_t k = 0; k < width; ++k) dst[k] = static_cast<scalar_t>(src[k]);
    }
  } else {
    constexpr int64_t kBlock = 8;
    int64_t u0 = u_begin;
    for (; u0 + kBlock <= units; u0 += kBlock) {
      for (int64_t k = 0; k < width; ++k) {
        scalar_t* dst = out + (d0 + k) * units + u0;
        for (int64_t b = 0; b < kBlock; ++b) dst[b] = static_cast<scalar_t>(tile[(u0 + b) * kTile + k]);
      }
    }
    for (int64_t u = u0; u < units; ++u)
      for (int64_t k = 0; k < width; ++k) out[(d0 + k) * units + u] = static_cast<scalar_t>(tile[u * kTile + k]);
  }
}

// row (kTile floats) = sum_e values[e] * tile[indices[e]] over the entries of unit u.
inline void bag_row(const float* __restrict__ tile, const int64_t* __restrict__ indices,
                    const float* __restrict__ values, int64_t begin, int64_t end, float* __restrict__ row) {
  float acc[kTile] = {};
  for (int64_t e = begin; e < end; ++e) {
    const float v = values[e];
    const float* __restrict__ src = tile + indices[e] * kTile;
#pragma omp simd
    for (int64_t k = 0; k < kTile; ++k) acc[k] += v * src[k];
  }
#pragma omp simd
  for (int64_t k = 0; k < kTile; ++k) row[k] = acc[k];
}

// <c, row>, |c|^2 and |row|^2 of one unit's tile row and its blur.
inline void unit_sums(const float* __restrict__ c, const float* __restrict__ row, float* dot_out, float* cc_out,
                      float* bb_out) {
  float dot = 0.f, cc = 0.f, bb = 0.f;
#pragma omp simd reduction(+ : dot, cc, bb)
  for (int64_t k = 0; k < kTile; ++k) {
    dot += c[k] * row[k];
    cc += c[k] * c[k];
    bb += row[k] * row[k];
  }
  *dot_out = dot;
  *cc_out = cc;
  *bb_out = bb;
}

#ifdef HF_TOPO_AVX2
// The forward's three sums for one unit: its blurred row accumulated in registers, reduced four sums at a time.
inline void unit_sums_avx2(const float* tile, const int64_t* indices, const float* values, int64_t begin, int64_t end,
                           int64_t u, float* dot_out, float* cc_out, float* bb_out) {
  __m256 acc[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps()};
  for (int64_t e = begin; e < end; ++e) {
    const __m256 v = _mm256_set1_ps(values[e]);
    const float* src = tile + indices[e] * kTile;
    for (int j = 0; j < 4; ++j) acc[j] = _mm256_fmadd_ps(v, _mm256_loadu_ps(src + 8 * j), acc[j]);
  }
  const float* c = tile + u * kTile;
  __m256 dot = _mm256_setzero_ps(), cc = _mm256_setzero_ps(), bb = _mm256_setzero_ps();
  for (int j = 0; j < 4; ++j) {
    const __m256 cj = _mm256_loadu_ps(c + 8 * j);
    dot = _mm256_fmadd_ps(cj, acc[j], dot);
    cc = _mm256_fmadd_ps(cj, cj, cc);
    bb = _mm256_fmadd_ps(acc[j], acc[j], bb);
  }
  const __m256 h0 = _mm256_hadd_ps(dot, cc), h1 = _mm256_hadd_ps(bb, bb);
  const __m256 h = _mm256_hadd_ps(h0, h1);
  const __m128 sums = _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
  *dot_out = _mm_cvtss_f32(sums);
  *cc_out = _mm_cvtss_f32(_mm_shuffle_ps(sums, sums, 1));
  *bb_out = _mm_cvtss_f32(_mm_shuffle_ps(sums, sums, 2));
}

inline void bag_row_avx2(const float* tile, const int64_t* indices, const float* values, int64_t begin, int64_t end,
                         float* row) {
  __m256 acc[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps()};
  for (int64_t e = begin; e < end; ++e) {
    const __m256 v = _mm256_set1_ps(values[e]);
    const float* src = tile + indices[e] * kTile;
    for (int j = 0; j < 4; ++j) acc[j] = _mm256_fmadd_ps(v, _mm256_loadu_ps(src + 8 * j), acc[j]);
  }
  for (int j = 0; j < 4; ++j) _mm256_storeu_ps(row + 8 * j, acc[j]);
}
#endif

// A sparse operator on the units in the bag layout of F.embedding_bag: row u has the entries
// idx[off[u] .. off[u + 1]) (the last row ends at nnz) with weights val[...].
struct SparseRows {
  const int64_t* off;
  const int64_t* idx;
  const float* val;
  int64_t nnz;
};

// Checks the operator's structure once per call (every index a unit: the kernels read rows by them) and returns it.
SparseRows check_operator(const at::Tensor& offsets, const at::Tensor& indices, int64_t units) {
  TORCH_CHECK(offsets.device().is_cpu() && indices.device().is_cpu(), "expected the operator's tensors on the CPU");
  TORCH_CHECK(offsets.dtype() == at::kLong && indices.dtype() == at::kLong, "expected int64 offsets and indices");
  TORCH_CHECK(offsets.dim() == 1 && indices.dim() == 1 && offsets.is_contiguous() && indices.is_contiguous(),
              "expected contiguous 1-D offsets and indices");
  TORCH_CHECK(offsets.numel() == units, "expected ", units, " offsets (one per unit), got ", offsets.numel());
  const int64_t* off = offsets.data_ptr<int64_t>();
  const int64_t* idx = indices.data_ptr<int64_t>();
  const int64_t nnz = indices.numel();
  for (int64_t u = 0; u < units; ++u) {
    const int64_t end = u + 1 < units ? off[u + 1] : nnz;
    TORCH_CHECK(off[u] >= 0 && off[u] <= end && end <= nnz, "offsets must rise from 0 to at most ", nnz,
                " (the number of indices); row ", u, " spans [", off[u], ", ", end, ")");
  }
  TORCH_CHECK(units == 0 || off[0] == 0, "the first offset must be 0, got ", units ? off[0] : 0);
  for (int64_t e = 0; e < nnz; ++e)
    TORCH_CHECK(idx[e] >= 0 && idx[e] < units, "index ", idx[e], " at position ", e, " is not a unit (0 .. ",
                units - 1, ")");
  return {off, idx, nullptr, nnz};
}

// The operator with its weights: float32, one per index.
SparseRows check_weighted_operator(const at::Tensor& offsets, const at::Tensor& indices, const at::Tensor& values,
                                   int64_t units) {
  SparseRows op = check_operator(offsets, indices, units);
  TORCH_CHECK(values.device().is_cpu() && values.dtype() == at::kFloat && values.is_contiguous(),
              "expected contiguous float32 values on the CPU, got ", values.dtype());
  TORCH_CHECK(values.numel() == op.nnz, "expected ", op.nnz, " values (one per index), got ", values.numel());
  op.val = values.data_ptr<float>();
  return op;
}

struct Sheet {
  int64_t units, depth;
};

Sheet check_weight(const at::Tensor& weight, bool units_first) {
  TORCH_CHECK(weight.device().is_cpu(), "hf_topo's sheet kernels run on the CPU; got a weight on ", weight.device());
  TORCH_CHECK(weight.dim() == 2 && weight.is_contiguous(), "expected a contiguous 2-D weight, got shape ",
              weight.sizes(), " with strides ", weight.strides());
  TORCH_CHECK(at::isFloatingType(weight.scalar_type()), "expected a floating-point weight, got ",
              weight.scalar_type());
  return {units_first ? weight.size(0) : weight.size(1), units_first ? weight.size(1) : weight.size(0)};
}

#ifdef HF_TOPO_AVX2
// Depth chunk for the units-first gradient walk: a unit's entries lie within `reach` rows of it, so the walk keeps
// about 2 * reach + 1 rows in use. Where those rows fit in a core's L2 (1 MiB on the machine tuned on, an AMD Zen 4)
// the rows are walked whole; longer rows (a ResNet's last stage: 18 KiB per unit, 133 rows in use) are walked in
// chunks of whole cache lines sized to half of it (measured: ResNet-18's gradients 25 % faster; not for the forward's
// sums, whose neighbour rows are fewer, nor for GPT-2's 3 KiB rows, which lose by it).
constexpr int64_t kRowsInCacheBytes = 1 << 20;

int64_t gradient_depth_chunk(const int64_t* off, const int64_t* idx, int64_t nnz, int64_t units, int64_t depth) {
  // A row's entries are sorted by column (as GroupedBlur builds them), so its first and last are its farthest; for
  // unsorted rows this is an estimate (the chunk only affects speed).
  int64_t reach = 0;
  for (int64_t u = 0; u < units; ++u) {
    const int64_t end = u + 1 < units ? off[u + 1] : nnz;
    if (end > off[u]) reach = std::max({reach, std::abs(idx[off[u]] - u), std::abs(idx[end - 1] - u)});
  }
  const int64_t rows_in_use = 2 * reach + 1;
  if (rows_in_use * depth * static_cast<int64_t>(sizeof(float)) <= kRowsInCacheBytes) return depth;
  const int64_t chunk = kRowsInCacheBytes / 2 / static_cast<int64_t>(sizeof(float)) / rows_in_use / 32 * 32;
  return std::min(depth, std::max<int64_t>(chunk, 256));
}
#endif

// The backward's per-unit coefficients of one sheet from its forward stats (dot, then the clamped norms n = |C_u| and
// m = |(BC)_u|) and its upstream gradient: coefficient q (a, b, c, d) of unit u goes to out[q * q_step + u * u_step].
// d cos_u / d C_u = B_u/(n m) - s C_u/(n^3 m); d cos_u / d (BC)_u = C_u/(n m) - s (BC)_u/(n m^3):
// a = c = inv_nm, b = -s inv_nm / m^2, d = -s inv_nm / n^2, for the loss's -1/units per unit.
void unit_coefficients(const float* stats, float upstream, int64_t units, float* out, int64_t q_step,
                       int64_t u_step) {
  const float* dot = stats;
  const float* norm_c = dot + units;
  const float* norm_b = norm_c + units;
  const float scale = -upstream / static_cast<float>(units);
  for (int64_t u = 0; u < units; ++u) {
    const float inv_nm = scale / (norm_c[u] * norm_b[u]);
    float* k = out + u * u_step;
    k[0] = inv_nm;
    k[q_step] = -dot[u] * inv_nm / (norm_b[u] * norm_b[u]);
    k[2 * q_step] = inv_nm;
    k[3 * q_step] = -dot[u] * inv_nm / (norm_c[u] * norm_c[u]);
  }
}

#ifdef HF_TOPO_AVX2
// The backward of a units-first float32 sheet without G ("scatter walk"), for blurs whose B reads few units (the
// coarse grid's points: B = U S with S a subsampling, as the paper's bilinear blur at odd integer factors is). With
// X = a(.)C + b(.)BC,  dL/dC = c(.)BC + d(.)C + B^T X,  and B^T X is nonzero only on B's columns. Walking the units
// in order, unit u's BC_u is formed from its <= 4 column rows, its gradient c_u BC_u + d_u C_u written, and X_u added
// into an accumulator row P_m of each of its columns m (P_m += B[u, m] X_u). A column's own local part goes into P_m
// too, and P_m leaves as the gradient row of unit m once the walk has passed m and every unit whose row of B reads m.
// Every load is a column row or an accumulator (a few coarse sheet rows: in L2) or the unit's own row, where G's
// rows at the coarse points read every unit within the blur's reach twice (more than an L2 for GPT-2's 3 KiB rows).
// The arithmetic of each gradient element does not depend on how the depth is split, so the result does not depend
// on the number of threads.
// It is used for every sheet size: with the next unit's row prefetched (unit_scatter) it beats the G walk on small
// sheets too, whose G rows stay in cache (measured, 1 thread: ResNet-18's 512-unit stage 5.7 -> 4.5 ms, its 256- and
// 128-unit stages 1.4 -> 1.1 and 0.33 -> 0.27 ms; before that prefetch the 512-unit stage had lost, 5.1 vs 5.3 ms).

struct ScatterPlan {
  int64_t columns = 0;            // number of distinct columns of B (accumulator rows)
  std::vector<int64_t> column;    // unit -> accumulator row, or -1
  std::vector<int64_t> open_off, open_list;    // per unit: accumulator rows to zero before the unit is processed
  std::vector<int64_t> close_off, close_list;  // per unit: accumulator rows complete after it (leave as gradients)
};

// The plan of B (rows in the bag layout), or columns = 0 where the G walk is used: blurs whose B reads more than a
// quarter of the units (e.g. bilinear at even factors) or has rows of more than kMaxEntries entries.
ScatterPlan scatter_plan(SparseRows op, int64_t units) {
  ScatterPlan plan;
  plan.column.assign(units, -1);
  std::vector<int64_t> first(units, -1), last(units, -1);
  for (int64_t u = 0; u < units; ++u) {
    const int64_t end = u + 1 < units ? op.off[u + 1] : op.nnz;
    if (end - op.off[u] > kMaxEntries) return plan;  // columns = 0: such blurs take the G walk
    for (int64_t e = op.off[u]; e < end; ++e) {
      const int64_t m = op.idx[e];
      if (first[m] < 0) first[m] = u;
      last[m] = u;
    }
  }
  for (int64_t m = 0; m < units; ++m)
    if (first[m] >= 0) plan.column[m] = plan.columns++;
  if (plan.columns * 4 > units) {
    plan.columns = 0;
    return plan;
  }
  // Row m opens at min(first reader, m) and closes after max(last reader, m).
  std::vector<int64_t> open_count(units + 1, 0), close_count(units + 1, 0);
  for (int64_t m = 0; m < units; ++m) {
    if (plan.column[m] < 0) continue;
    ++open_count[std::min(first[m], m) + 1];
    ++close_count[std::max(last[m], m) + 1];
  }
  for (int64_t u = 0; u < units; ++u) {
    open_count[u + 1] += open_count[u];
    close_count[u + 1] += close_count[u];
  }
  plan.open_off = open_count;
  plan.close_off = close_count;
  plan.open_list.resize(plan.columns);
  plan.close_list.resize(plan.columns);
  std::vector<int64_t> open_fill(open_count.begin(), open_count.end() - 1);
  std::vector<int64_t> close_fill(close_count.begin(), close_count.end() - 1);
  for (int64_t m = 0; m < units; ++m) {
    if (plan.column[m] < 0) continue;
    plan.open_list[open_fill[std::min(first[m], m)]++] = m;
    plan.close_list[close_fill[std::max(last[m], m)]++] = m;
  }
  return plan;
}

// The scatter step of one unit for the depth columns [j, len), one float at a time: the vector steps' tail, and the
// whole row for rows of B of more than 4 entries (blurs other than bilinear).
void unit_scatter_scalar(const float* const* src, const float* vals, float* const* acc, int64_t n, const float* c,
                         float* out, bool out_is_accumulator, const float* k, int64_t j, int64_t len) {
  for (; j < len; ++j) {
    float bc = 0.f;
    for (int64_t e = 0; e < n; ++e) bc = std::fma(vals[e], src[e][j], bc);
    const float g = std::fma(k[2], bc, k[3] * c[j]);
    const float x = std::fma(k[1], bc, k[0] * c[j]);
    out[j] = out_is_accumulator ? out[j] + g : g;
    for (int64_t e = 0; e < n; ++e) acc[e][j] = std::fma(vals[e], x, acc[e][j]);
  }
}

// One unit of the scatter walk over a depth slice of `len` floats (all pointers at the slice's start): src/vals its
// row of B, acc the accumulator rows of those entries, c its own row; out its gradient row (streamed) or, for a
// column, its accumulator row (added into). k = (a, b, c, d) its coefficients. c + depth is the next unit's slice,
// prefetched into L2 a line per step as in unit_row_sums (depth 0 for the last unit; measured, 1 thread: GPT-2's 12
// nn.Linear layers 17.8 -> 13.2 ms, where prefetching 4-32 rows ahead had gained nothing).
template <int N>
void unit_scatter(const float* const* src, const float* vals, float* const* acc, const float* c, float* out,
                  bool out_is_accumulator, const float* k, int64_t len, int64_t depth) {
  __m256 v[N > 0 ? N : 1];
  for (int e = 0; e < N; ++e) v[e] = _mm256_set1_ps(vals[e]);
  const __m256 ka = _mm256_set1_ps(k[0]), kb = _mm256_set1_ps(k[1]), kc = _mm256_set1_ps(k[2]),
               kd = _mm256_set1_ps(k[3]);
  const bool stream = !out_is_accumulator && (reinterpret_cast<uintptr_t>(out) & 31) == 0;
  int64_t j = 0;
  for (; j + 16 <= len; j += 16) {
    _mm_prefetch(reinterpret_cast<const char*>(c + depth + j), _MM_HINT_T1);
    __m256 b0 = _mm256_setzero_ps(), b1 = b0;
    for (int e = 0; e < N; ++e) {
      b0 = _mm256_fmadd_ps(v[e], _mm256_loadu_ps(src[e] + j), b0);
      b1 = _mm256_fmadd_ps(v[e], _mm256_loadu_ps(src[e] + j + 8), b1);
    }
    const __m256 c0 = _mm256_loadu_ps(c + j), c1 = _mm256_loadu_ps(c + j + 8);
    __m256 g0 = _mm256_fmadd_ps(kc, b0, _mm256_mul_ps(kd, c0)), g1 = _mm256_fmadd_ps(kc, b1, _mm256_mul_ps(kd, c1));
    const __m256 x0 = _mm256_fmadd_ps(kb, b0, _mm256_mul_ps(ka, c0)), x1 = _mm256_fmadd_ps(kb, b1, _mm256_mul_ps(ka, c1));
    if (out_is_accumulator) {
      _mm256_storeu_ps(out + j, _mm256_add_ps(_mm256_loadu_ps(out + j), g0));
      _mm256_storeu_ps(out + j + 8, _mm256_add_ps(_mm256_loadu_ps(out + j + 8), g1));
    } else if (stream) {
      _mm256_stream_ps(out + j, g0);
      _mm256_stream_ps(out + j + 8, g1);
    } else {
      _mm256_storeu_ps(out + j, g0);
      _mm256_storeu_ps(out + j + 8, g1);
    }
    for (int e = 0; e < N; ++e) {  // after the store above: acc[e] may be out itself (a column reading itself)
      _mm256_storeu_ps(acc[e] + j, _mm256_fmadd_ps(v[e], x0, _mm256_loadu_ps(acc[e] + j)));
      _mm256_storeu_ps(acc[e] + j + 8, _mm256_fmadd_ps(v[e], x1, _mm256_loadu_ps(acc[e] + j + 8)));
    }
  }
  unit_scatter_scalar(src, vals, acc, N, c, out, out_is_accumulator, k, j, len);
}

// The scatter walk of one sheet's depth slice [d0, d0 + len): coef holds (a, b, c, d) per unit (4 * units floats,
// unit-major), accumulators plan.columns * len floats of scratch.
void scatter_walk(const float* weight, int64_t units, int64_t depth, int64_t d0, int64_t len, SparseRows op,
                  const ScatterPlan& plan, const float* coef, float* accumulators, float* out) {
  const float* src[kMaxEntries];
  float* acc[kMaxEntries];
  float vals[kMaxEntries];
  auto row_of = [&](int64_t m) { return accumulators + plan.column[m] * len; };
  for (int64_t u = 0; u < units; ++u) {
    for (int64_t i = plan.open_off[u]; i < plan.open_off[u + 1]; ++i) std::fill_n(row_of(plan.open_list[i]), len, 0.f);
    const int64_t begin = op.off[u], end = u + 1 < units ? op.off[u + 1] : op.nnz;
    const int64_t n = end - begin;  // at most kMaxEntries (scatter_plan)
    for (int64_t e = 0; e < n; ++e) {
      src[e] = weight + op.idx[begin + e] * depth + d0;
      acc[e] = row_of(op.idx[begin + e]);
      vals[e] = op.val[begin + e];
    }
    const bool is_column = plan.column[u] >= 0;
    float* o = is_column ? row_of(u) : out + u * depth + d0;
    const float* c = weight + u * depth + d0;
    const float* k = coef + 4 * u;
    switch (n) {
      case 0: unit_scatter<0>(src, vals, acc, c, o, is_column, k, len, u + 1 < units ? depth : 0); break;
      case 1: unit_scatter<1>(src, vals, acc, c, o, is_column, k, len, u + 1 < units ? depth : 0); break;
      case 2: unit_scatter<2>(src, vals, acc, c, o, is_column, k, len, u + 1 < units ? depth : 0); break;
      case 3: unit_scatter<3>(src, vals, acc, c, o, is_column, k, len, u + 1 < units ? depth : 0); break;
      case 4: unit_scatter<4>(src, vals, acc, c, o, is_column, k, len, u + 1 < units ? depth : 0); break;
      default: unit_scatter_scalar(src, vals, acc, n, c, o, is_column, k, 0, len);
    }
    for (int64_t i = plan.close_off[u]; i < plan.close_off[u + 1]; ++i) {
      const int64_t m = plan.close_list[i];
      const float* from = row_of(m);
      float* to = out + m * depth + d0;
      int64_t j = 0;
      if ((reinterpret_cast<uintptr_t>(to) & 31) == 0)
        for (; j + 8 <= len; j += 8) _mm256_stream_ps(to + j, _mm256_loadu_ps(from + j));
      for (; j < len; ++j) to[j] = from[j];
    }
  }
  _mm_sfence();
}
#endif

// The three per-unit sums of one sheet into sums[0 .. 3 * units) (dots, then |C_u|^2, then |(BC)_u|^2).
void cosine_sums_into(const at::Tensor& weight, bool units_first, Sheet sheet, SparseRows op, float* sums) {
  const int64_t units = sheet.units, depth = sheet.depth, nnz = op.nnz;
  const int64_t tiles = (depth + kTile - 1) / kTile;
  // Units-first float32 rows write their sums once, straight into `sums`; tiles write per-tile partial sums, added
  // in tile order at the end.
  bool by_rows = false;
#ifdef HF_TOPO_AVX2
  by_rows = units_first && weight.scalar_type() == at::kFloat;
#endif
  at::Tensor partial;
  if (!by_rows) partial = at::empty({tiles, 3, units}, weight.options().dtype(at::kFloat));
  const int64_t* off = op.off;
  const int64_t* idx = op.idx;
  const float* val = op.val;
  float* out = by_rows ? sums : partial.data_ptr<float>();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, weight.scalar_type(), "sheet_cosine_sums", [&] {
    const scalar_t* w = weight.data_ptr<scalar_t>();
#ifdef HF_TOPO_AVX2
    if constexpr (std::is_same_v<scalar_t, float>) {
      if (units_first) {
        float* dots = out;
        const int64_t chunk = sums_depth_chunk(depth);
        at::parallel_for(0, units, 64, [&](int64_t u_begin, int64_t u_end) {
          rows_sums_avx2(reinterpret_cast<const float*>(w), depth, chunk, off, idx, val, nnz, u_begin, u_end, units,
                         dots, dots + units, dots + 2 * units);
        });
        return;
      }
    }
#endif
    at::parallel_for(0, tiles, 1, [&](int64_t t_begin, int64_t t_end) {
      std::unique_ptr<float[]> tile_buffer(new float[units * kTile]);  // uninitialized: every tile is loaded whole
      float* tile = tile_buffer.get();
      alignas(64) float row[kTile];
      for (int64_t t = t_begin; t < t_end; ++t) {
        const int64_t d0 = t * kTile, width = std::min(kTile, depth - d0);
        load_tile(w, units_first, units, depth, d0, width, tile);
        float* dots = out + t * 3 * units;
        float* norms_c = dots + units;
        float* norms_b = norms_c + units;
        for (int64_t u = 0; u < units; ++u) {
          const int64_t end = u + 1 < units ? off[u + 1] : nnz;
#ifdef HF_TOPO_AVX2
          unit_sums_avx2(tile, idx, val, off[u], end, u, dots + u, norms_c + u, norms_b + u);
#else
          bag_row(tile, idx, val, off[u], end, row);
          unit_sums(tile + u * kTile, row, dots + u, norms_c + u, norms_b + u);
#endif
        }
      }
    });
  });
  if (by_rows) return;
  const float* parts = partial.data_ptr<float>();
  at::parallel_for(0, 3 * units, 1024, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      float total = parts[i];
      for (int64_t t = 1; t < tiles; ++t) total += parts[t * 3 * units + i];
      sums[i] = total;
    }
  });
}

// G C of one sheet into `result` (weight-shaped, contiguous, of the weight's dtype).
void sparse_apply_into(const at::Tensor& weight, bool units_first, Sheet sheet, SparseRows op, at::Tensor& result) {
  const int64_t units = sheet.units, depth = sheet.depth, nnz = op.nnz;
  const int64_t tiles = (depth + kTile - 1) / kTile;
  const int64_t* off = op.off;
  const int64_t* idx = op.idx;
  const float* val = op.val;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, weight.scalar_type(), "sheet_sparse_apply", [&] {
    const scalar_t* w = weight.data_ptr<scalar_t>();
    scalar_t* out = result.data_ptr<scalar_t>();
#ifdef HF_TOPO_AVX2
    if constexpr (std::is_same_v<scalar_t, float>) {
      if (units_first) {
        const int64_t chunk = gradient_depth_chunk(off, idx, nnz, units, depth);
        at::parallel_for(0, units, 64, [&](int64_t u_begin, int64_t u_end) {
          rows_apply_avx2(reinterpret_cast<const float*>(w), depth, chunk, off, idx, val, nnz, u_begin, u_end, units,
                          reinterpret_cast<float*>(out));
        });
        return;
      }
    }
#endif
    at::parallel_for(0, tiles, 1, [&](int64_t t_begin, int64_t t_end) {
      std::unique_ptr<float[]> tile_buffer(new float[units * kTile]), applied_buffer;
      float* tile = tile_buffer.get();
      for (int64_t t = t_begin; t < t_end; ++t) {
        const int64_t d0 = t * kTile, width = std::min(kTile, depth - d0);
        load_tile(w, units_first, units, depth, d0, width, tile);
        int64_t u_begin = 0;
#ifdef HF_TOPO_AVX2
        if constexpr (std::is_same_v<scalar_t, float>) {
          if (!units_first && width == kTile)
            u_begin = apply_store_avx2(tile, off, idx, val, nnz, units, d0, reinterpret_cast<float*>(out));
        }
#endif
        if (u_begin == units) continue;
        if (!applied_buffer) applied_buffer.reset(new float[units * kTile]);
        float* applied = applied_buffer.get();
        for (int64_t u = u_begin; u < units; ++u) {
          const int64_t end = u + 1 < units ? off[u + 1] : nnz;
#ifdef HF_TOPO_AVX2
          bag_row_avx2(tile, idx, val, off[u], end, applied + u * kTile);
#else
          bag_row(tile, idx, val, off[u], end, applied + u * kTile);
#endif
        }
        store_tile(applied, units_first, units, depth, d0, width, u_begin, out);
      }
    });
  });
}

at::Tensor sheet_cosine_sums(const at::Tensor& weight, bool units_first, const at::Tensor& offsets,
                             const at::Tensor& indices, const at::Tensor& values) {
  const Sheet sheet = check_weight(weight, units_first);
  const SparseRows op = check_weighted_operator(offsets, indices, values, sheet.units);
  at::Tensor sums = at::empty({3, sheet.units}, weight.options().dtype(at::kFloat));
  cosine_sums_into(weight, units_first, sheet, op, sums.data_ptr<float>());
  return sums;
}

at::Tensor sheet_sparse_apply(const at::Tensor& weight, bool units_first, const at::Tensor& offsets,
                              const at::Tensor& indices, const at::Tensor& values) {
  const Sheet sheet = check_weight(weight, units_first);
  const SparseRows op = check_weighted_operator(offsets, indices, values, sheet.units);
  at::Tensor result = at::empty_like(weight, at::MemoryFormat::Contiguous);
  sparse_apply_into(weight, units_first, sheet, op, result);
  return result;
}

// ---------------------------------------------------------------------------------------------------------------
// The forward of depth-first float32 sheets, image by image ("image walk").
//
// A depth-first weight (transformers' Conv1D, (in, out)) holds one whole height x width sheet image per depth row,
// its units contiguous. hf_topo's blurs are separable, B = kron(blur_h, blur_w) with blur_h = up_h down_h through
// the coarse grid's rows, so one image's blur is up_h (down_h Img) blur_w^T: down_h picks (or mixes) the coarse rows
// (a third of the rows at the paper's factor 3), blur_w mixes along those rows only, on their transpose (8 x 8 blocks
// in registers: there it is a sum of whole rows), and up_h mixes the blurred coarse rows back into every row. The
// per-unit sums then run along the units, 8 per vector, over a batch of images in registers. The weight is read as it
// lies, with no tile transposed through the cache (measured, 1 thread, GPT-2's 12 Conv1D layers: 15.5 -> 10.8 ms;
// 2 threads 8.7 -> 6.0). The gradient keeps the tile walk: the same image walk for it measured no faster (20 vs 19 ms).
struct SmallRows {  // the nonzeros of a small dense matrix (or of its transpose), row by row
  std::vector<int64_t> off{0};
  std::vector<int64_t> idx;
  std::vector<float> val;
  int64_t rows = 0;
  int64_t entries(int64_t r) const { return off[r + 1] - off[r]; }
};

// The rows of a contiguous float32 matrix m, or of its transpose (no transposed copy made).
SmallRows small_rows(const at::Tensor& m, bool transposed = false) {
  SmallRows out;
  const float* data = m.data_ptr<float>();
  const int64_t rows = transposed ? m.size(1) : m.size(0), cols = transposed ? m.size(0) : m.size(1);
  const int64_t row_step = transposed ? 1 : m.size(1), col_step = transposed ? m.size(1) : 1;
  out.rows = rows;
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = 0; c < cols; ++c) {
      const float v = data[r * row_step + c * col_step];
      if (v != 0.f) {
        out.idx.push_back(c);
        out.val.push_back(v);
      }
    }
    out.off.push_back(static_cast<int64_t>(out.idx.size()));
  }
  return out;
}

struct ImagePlan {
  int64_t height = 0, width = 0, coarse = 0, padded = 0;  // padded: the coarse rows rounded up to a multiple of 8
  SmallRows down_h, up_h, blur_w;
};

// The plan of a blur given by its factors (down_h (h', h), up_h (h, h'), blur_w (w, w) = up_w down_w), checked
// against the sheet's units.
ImagePlan image_plan(const at::Tensor& down_h, const at::Tensor& up_h, const at::Tensor& blur_w, int64_t units) {
  for (const at::Tensor* m : {&down_h, &up_h, &blur_w})
    TORCH_CHECK(m->device().is_cpu() && m->dim() == 2 && m->scalar_type() == at::kFloat,
                "expected the blur's factors as 2-D float32 CPU tensors, got ", m->sizes(), " ", m->scalar_type());
  ImagePlan plan;
  plan.height = up_h.size(0);
  plan.coarse = up_h.size(1);
  plan.width = blur_w.size(0);
  TORCH_CHECK(down_h.size(0) == plan.coarse && down_h.size(1) == plan.height && blur_w.size(1) == plan.width,
              "expected down_h (h', h), up_h (h, h') and a square blur_w; got ", down_h.sizes(), ", ", up_h.sizes(),
              ", ", blur_w.sizes());
  TORCH_CHECK(plan.height * plan.width == units, "the blur's factors describe a ", plan.height, " x ", plan.width,
              " sheet, but the sheets have ", units, " units");
  plan.padded = (plan.coarse + 7) / 8 * 8;
  plan.down_h = small_rows(down_h.contiguous());
  plan.up_h = small_rows(up_h.contiguous());
  plan.blur_w = small_rows(blur_w.contiguous());
  return plan;
}

#ifdef HF_TOPO_AVX2
// The (rows x cols) block whose rows are src_rows[0 .. rows) into dst as (cols x rows); both multiples of 8.
inline void transpose_block(const float* const* src_rows, int64_t rows, int64_t cols, float* dst) {
  for (int64_t r0 = 0; r0 < rows; r0 += 8)
    for (int64_t c0 = 0; c0 < cols; c0 += 8) {
      __m256 r[8];
      for (int i = 0; i < 8; ++i) r[i] = _mm256_loadu_ps(src_rows[r0 + i] + c0);
      transpose8(r);
      for (int i = 0; i < 8; ++i) _mm256_storeu_ps(dst + (c0 + i) * rows + r0, r[i]);
    }
}

// Out row x (len floats) = the sum of m's row x entries times in's rows (len floats each); len a multiple of 8, Q
// vectors per step (a compile-time count, so that the accumulators stay in registers).
template <int Q>
inline void rows_combine_step(const SmallRows& m, const float* in, int64_t len, int64_t j, float* out) {
  for (int64_t x = 0; x < m.rows; ++x) {
    __m256 acc[Q];
    for (int q = 0; q < Q; ++q) acc[q] = _mm256_setzero_ps();
    for (int64_t e = m.off[x]; e < m.off[x + 1]; ++e) {
      const __m256 v = _mm256_set1_ps(m.val[e]);
      const float* src = in + m.idx[e] * len + j;
      for (int q = 0; q < Q; ++q) acc[q] = _mm256_fmadd_ps(v, _mm256_loadu_ps(src + 8 * q), acc[q]);
    }
    for (int q = 0; q < Q; ++q) _mm256_storeu_ps(out + x * len + j + 8 * q, acc[q]);
  }
}

inline void rows_combine(const SmallRows& m, const float* in, int64_t len, float* out) {
  int64_t j = 0;
  for (; j + 32 <= len; j += 32) rows_combine_step<4>(m, in, len, j, out);
  switch ((len - j) / 8) {
    case 1: rows_combine_step<1>(m, in, len, j, out); break;
    case 2: rows_combine_step<2>(m, in, len, j, out); break;
    case 3: rows_combine_step<3>(m, in, len, j, out); break;
    default: break;
  }
}

// One row's entries of a SmallRows, hoisted out of the loop along the units: their source rows (of `base`, `stride`
// floats apart) and broadcast weights.
struct RowTaps {
  const float* src[kMaxEntries];
  __m256 v[kMaxEntries];
  int64_t n;
  RowTaps(const SmallRows& m, int64_t r, const float* base, int64_t stride) {
    const int64_t b = m.off[r];
    n = std::min<int64_t>(m.entries(r), kMaxEntries);
    for (int64_t e = 0; e < n; ++e) {
      src[e] = base + m.idx[b + e] * stride;
      v[e] = _mm256_set1_ps(m.val[b + e]);
    }
  }
};

constexpr int64_t kImageBatch = 8;  // images whose sums are added up in registers before the sums' rows are updated
constexpr int64_t kImageTask = 128;  // depth rows per task (fixed: the sums' order does not depend on the threads)

// Per-thread buffers: the coarse rows' transposes and kImageBatch images' blurred coarse rows. Buffers lie a block
// plus 1088 bytes apart, so that rows of different buffers used together do not share their address modulo 4 KiB (a
// load then waits for an unrelated store in flight, 4K aliasing: measured 20.4 -> 17.7 ms before the other changes).
struct ImageScratch {
  int64_t block;
  std::unique_ptr<float[]> memory;
  float *zeros, *coarse, *coarse_t, *mixed_t, *mixed;
  std::vector<const float*> rows;
  explicit ImageScratch(const ImagePlan& plan) : block(plan.padded * plan.width + 272) {
    memory.reset(new float[plan.width + (3 + kImageBatch) * block + 16]);
    float* base = memory.get() + (16 - reinterpret_cast<uintptr_t>(memory.get()) / sizeof(float) % 16) % 16;
    std::fill_n(base, plan.width + (3 + kImageBatch) * block, 0.f);
    zeros = base;
    coarse = zeros + plan.width;
    coarse_t = coarse + block;
    mixed_t = coarse + 2 * block;
    mixed = coarse + 3 * block;  // kImageBatch blocks
    rows.resize(std::max(plan.padded, plan.width));
  }
};

// down_h Img blur_w^T of one image (img: height x width) into `mixed` (padded x width; rows >= coarse are 0).
void coarse_blur(const ImagePlan& plan, const float* img, ImageScratch& s, float* mixed) {
  const int64_t w = plan.width;
  for (int64_t j = 0; j < plan.padded; ++j) {
    if (j >= plan.coarse) {
      s.rows[j] = s.zeros;
      continue;
    }
    const int64_t b = plan.down_h.off[j], n = plan.down_h.entries(j);
    if (n == 1 && plan.down_h.val[b] == 1.f) {  // a plain subsample (odd integer factors): the image row itself
      s.rows[j] = img + plan.down_h.idx[b] * w;
      continue;
    }
    float* o = s.coarse + j * w;
    for (int64_t x = 0; x < w; x += 8) {
      __m256 acc = _mm256_setzero_ps();
      for (int64_t e = b; e < b + n; ++e)
        acc = _mm256_fmadd_ps(_mm256_set1_ps(plan.down_h.val[e]), _mm256_loadu_ps(img + plan.down_h.idx[e] * w + x),
                              acc);
      _mm256_storeu_ps(o + x, acc);
    }
    s.rows[j] = o;
  }
  transpose_block(s.rows.data(), plan.padded, w, s.coarse_t);
  rows_combine(plan.blur_w, s.coarse_t, plan.padded, s.mixed_t);
  for (int64_t x = 0; x < w; ++x) s.rows[x] = s.mixed_t + x * plan.padded;
  transpose_block(s.rows.data(), w, plan.padded, mixed);
}

// Reads one image in order, one load per cache line (the first batch of a task, which nothing prefetched).
inline void touch_image(const float* img, int64_t units) {
  __m256 sink = _mm256_setzero_ps();
  for (int64_t i = 0; i + 16 <= units; i += 16) sink = _mm256_or_ps(sink, _mm256_loadu_ps(img + i));
  volatile float keep = _mm256_cvtss_f32(sink);
  (void)keep;
}

// One sheet row's sums over k images (c_row: the row of the first, the others `units` floats apart; their blurred
// coarse rows `block` floats apart), added up in registers over the images, then into dot/cc/bb (width floats each).
// Every other step prefetches the same line of the next batch's `ahead` images, so that the whole next batch arrives
// while this one is computed, spread over its arithmetic (measured: 14.8 -> 10.8 ms; prefetching a batch or an
// image at once, or reading ahead with plain loads, gained nothing: the strided first reads of the coarse rows had
// waited on memory for about a third of the time).
template <int N>
void image_row_sums(const RowTaps& taps, const float* c_row, int64_t units, int64_t block, int64_t k, int64_t ahead,
                    int64_t w, float* dot, float* cc, float* bb) {
  const int64_t n = N >= 0 ? N : taps.n;
  for (int64_t x = 0; x < w; x += 8) {
    if (x % 16 == 0)
      for (int64_t i = 0; i < ahead; ++i)
        _mm_prefetch(reinterpret_cast<const char*>(c_row + (k + i) * units + x), _MM_HINT_T0);
    __m256 sd = _mm256_setzero_ps(), sc = sd, sb = sd;
    for (int64_t i = 0; i < k; ++i) {
      __m256 bc = _mm256_setzero_ps();
      for (int64_t e = 0; e < n; ++e)
        bc = _mm256_fmadd_ps(taps.v[e], _mm256_loadu_ps(taps.src[e] + i * block + x), bc);
      const __m256 c = _mm256_loadu_ps(c_row + i * units + x);
      sd = _mm256_fmadd_ps(c, bc, sd);
      sc = _mm256_fmadd_ps(c, c, sc);
      sb = _mm256_fmadd_ps(bc, bc, sb);
    }
    _mm256_storeu_ps(dot + x, _mm256_add_ps(sd, _mm256_loadu_ps(dot + x)));
    _mm256_storeu_ps(cc + x, _mm256_add_ps(sc, _mm256_loadu_ps(cc + x)));
    _mm256_storeu_ps(bb + x, _mm256_add_ps(sb, _mm256_loadu_ps(bb + x)));
  }
}

// The sums over the depth rows [d0, d1) of one depth-first float32 sheet into dot/cc/bb (units each, zeroed here).
void image_walk_sums(const ImagePlan& plan, const float* weight, int64_t d0, int64_t d1, ImageScratch& s, float* dot,
                     float* cc, float* bb) {
  const int64_t w = plan.width, units = plan.height * w;
  std::fill_n(dot, units, 0.f);
  std::fill_n(cc, units, 0.f);
  std::fill_n(bb, units, 0.f);
  for (int64_t b0 = d0; b0 < d1; b0 += kImageBatch) {
    const int64_t k = std::min(kImageBatch, d1 - b0), ahead = std::min(kImageBatch, d1 - b0 - k);
    const float* img = weight + b0 * units;
    for (int64_t i = 0; i < k; ++i) {
      if (b0 == d0) touch_image(img + i * units, units);
      coarse_blur(plan, img + i * units, s, s.mixed + i * s.block);
    }
    for (int64_t y = 0; y < plan.height; ++y) {
      const RowTaps taps(plan.up_h, y, s.mixed, w);
      const int64_t u0 = y * w;
      switch (taps.n) {
        case 1: image_row_sums<1>(taps, img + u0, units, s.block, k, ahead, w, dot + u0, cc + u0, bb + u0); break;
        case 2: image_row_sums<2>(taps, img + u0, units, s.block, k, ahead, w, dot + u0, cc + u0, bb + u0); break;
        case 3: image_row_sums<3>(taps, img + u0, units, s.block, k, ahead, w, dot + u0, cc + u0, bb + u0); break;
        case 4: image_row_sums<4>(taps, img + u0, units, s.block, k, ahead, w, dot + u0, cc + u0, bb + u0); break;
        default: image_row_sums<-1>(taps, img + u0, units, s.block, k, ahead, w, dot + u0, cc + u0, bb + u0);
      }
    }
  }
}

// The three per-unit sums of one depth-first float32 sheet (width a multiple of 8) into sums[0 .. 3 * units):
// tasks of kImageTask depth rows write partial sums, added in task order.
void image_sums_into(const at::Tensor& weight, const ImagePlan& plan, Sheet sheet, float* sums) {
  const int64_t units = sheet.units, depth = sheet.depth;
  const int64_t tasks = (depth + kImageTask - 1) / kImageTask;
  if (tasks == 0) {
    std::fill_n(sums, 3 * units, 0.f);
    return;
  }
  std::vector<float> partial(static_cast<size_t>(tasks * 3 * units));
  const float* w = weight.data_ptr<float>();
  at::parallel_for(0, tasks, 1, [&](int64_t t_begin, int64_t t_end) {
    ImageScratch scratch(plan);
    for (int64_t t = t_begin; t < t_end; ++t) {
      float* part = partial.data() + t * 3 * units;
      image_walk_sums(plan, w, t * kImageTask, std::min(depth, (t + 1) * kImageTask), scratch, part, part + units,
                      part + 2 * units);
    }
  });
  std::copy_n(partial.data(), 3 * units, sums);
  for (int64_t t = 1; t < tasks; ++t)
    for (int64_t i = 0; i < 3 * units; ++i) sums[i] += partial[t * 3 * units + i];
}

// ---------------------------------------------------------------------------------------------------------------
// The backward of depth-first float32 sheets, image by image (the forward's image walk, run for the gradient).
//
// With X = a(.)C + b(.)BC, dL/dC = c(.)BC + d(.)C + B^T X (a = c, unit_coefficients), and on one image (a depth row)
// B^T X = down_h^T (up_h^T X) blur_w: the same taps of up_h that mix the coarse rows M = down_h Img blur_w^T into a
// sheet row's BC also carry its X back into the coarse rows (Z += up_h^T X), Z is blurred along the width on its
// transpose (Z blur_w), and down_h^T puts it back on the rows the coarse grid was taken from. So a sheet row's
// gradient is final as soon as its BC is known, except on those rows (a third of the rows at the paper's factor 3),
// which wait in a small buffer until Z is complete. Each image is read in order and its gradient written once, in
// whole cache lines, with no tile transposed through the cache and no G; per-unit coefficients are loaded once per
// batch of images. Every element's arithmetic is that of its own image, so results do not depend on the threads.
struct ImageGradPlan {
  SmallRows blur_w_t;                 // blur_w transposed: Z blur_w = (blur_w^T Z^T)^T
  SmallRows down_h_t;                 // down_h transposed: the coarse rows each sheet row receives
  std::vector<int64_t> waiting_slot;  // per sheet row: its slot in the waiting buffer, or -1 (final at once)
  int64_t waiting = 0;
};

ImageGradPlan image_grad_plan(const at::Tensor& down_h, const at::Tensor& blur_w) {
  ImageGradPlan plan;
  plan.blur_w_t = small_rows(blur_w.contiguous(), true);
  plan.down_h_t = small_rows(down_h.contiguous(), true);
  for (int64_t y = 0; y < plan.down_h_t.rows; ++y)
    plan.waiting_slot.push_back(plan.down_h_t.entries(y) > 0 ? plan.waiting++ : -1);
  return plan;
}

// Per-thread buffers of the gradient walk: the forward's (coarse rows, their transposes, kImageBatch blurred coarse
// blocks), kImageBatch blocks of Z, Z's transposes, and the waiting rows of kImageBatch images.
struct ImageGradScratch {
  ImageScratch forward;
  std::unique_ptr<float[]> memory;
  float *z, *z_t, *z_blurred_t, *z_blurred, *waiting;
  int64_t waiting_block;
  std::vector<const float*> rows;
  ImageGradScratch(const ImagePlan& plan, const ImageGradPlan& grad)
      : forward(plan), waiting_block(grad.waiting * plan.width + 16) {
    const int64_t block = forward.block;
    const int64_t total = (kImageBatch + 3) * block + kImageBatch * waiting_block + 16 + 1088 / sizeof(float);
    memory.reset(new float[total]);
    float* base = memory.get() + (16 - reinterpret_cast<uintptr_t>(memory.get()) / sizeof(float) % 16) % 16;
    std::fill_n(base, total - 16, 0.f);
    z = base;  // kImageBatch blocks, zero between batches
    z_t = z + kImageBatch * block;
    z_blurred_t = z_t + block;
    z_blurred = z_blurred_t + block;
    waiting = z_blurred + block + 1088 / sizeof(float);
    rows.resize(std::max(plan.padded, plan.width));
  }
};

// One sheet row's gradient over k images, Q vectors (8 floats each) at a time from column x: BC from the row's up_h
// taps (the batch's blurred coarse blocks, `block` floats apart), c*BC + d*C written to out (image i's row at
// out + i * out_stride; streamed where `stream`, a whole 64-byte line per image at Q = 2, so that no write-combining
// buffer is left half full while the other images' lines are written), and X carried into the same taps' rows of Z
// (z_offset floats after the blurred coarse rows).
template <int N, int Q>
inline void image_row_grad_step(const RowTaps& taps, int64_t n, int64_t z_offset, const float* c_row,
                                const float* coef_a, const float* coef_b, const float* coef_d, int64_t units,
                                int64_t block, int64_t k, int64_t x, float* out, int64_t out_stride, bool stream) {
  __m256 a[Q], b[Q], d[Q];
  for (int q = 0; q < Q; ++q) {
    a[q] = _mm256_loadu_ps(coef_a + x + 8 * q);
    b[q] = _mm256_loadu_ps(coef_b + x + 8 * q);
    d[q] = _mm256_loadu_ps(coef_d + x + 8 * q);
  }
  for (int64_t i = 0; i < k; ++i) {
    __m256 carried[Q];
    float* o = out + i * out_stride + x;
    for (int q = 0; q < Q; ++q) {
      __m256 bc = _mm256_setzero_ps();
      for (int64_t e = 0; e < n; ++e)
        bc = _mm256_fmadd_ps(taps.v[e], _mm256_loadu_ps(taps.src[e] + i * block + x + 8 * q), bc);
      const __m256 c = _mm256_loadu_ps(c_row + i * units + x + 8 * q);
      carried[q] = _mm256_fmadd_ps(b[q], bc, _mm256_mul_ps(a[q], c));
      const __m256 local = _mm256_fmadd_ps(d[q], c, _mm256_mul_ps(a[q], bc));
      if (stream)
        _mm256_stream_ps(o + 8 * q, local);
      else
        _mm256_storeu_ps(o + 8 * q, local);
    }
    for (int64_t e = 0; e < n; ++e) {
      float* z = const_cast<float*>(taps.src[e]) + z_offset + i * block + x;
      for (int q = 0; q < Q; ++q)
        _mm256_storeu_ps(z + 8 * q, _mm256_fmadd_ps(taps.v[e], carried[q], _mm256_loadu_ps(z + 8 * q)));
    }
  }
}

// One sheet row's gradient over k images (image_row_grad_step along the row); the next batch's images are
// prefetched as in image_row_sums. Streams only where every image's row starts on a 64-byte line.
template <int N>
void image_row_grad(const RowTaps& taps, int64_t z_offset, const float* c_row, const float* coef_a,
                    const float* coef_b, const float* coef_d, int64_t units, int64_t block, int64_t k, int64_t ahead,
                    int64_t w, float* out, int64_t out_stride, bool stream) {
  const int64_t n = N >= 0 ? N : taps.n;
  stream = stream && (reinterpret_cast<uintptr_t>(out) & 63) == 0 && out_stride % 16 == 0;
  int64_t x = 0;
  for (; x + 16 <= w; x += 16) {
    for (int64_t i = 0; i < ahead; ++i)
      _mm_prefetch(reinterpret_cast<const char*>(c_row + (k + i) * units + x), _MM_HINT_T0);
    image_row_grad_step<N, 2>(taps, n, z_offset, c_row, coef_a, coef_b, coef_d, units, block, k, x, out, out_stride,
                              stream);
  }
  if (x < w)  // a last half line (width 8 mod 16): ordinary stores
    image_row_grad_step<N, 1>(taps, n, z_offset, c_row, coef_a, coef_b, coef_d, units, block, k, x, out, out_stride,
                              false);
}

// The gradients of the depth rows [d0, d1) of one depth-first float32 sheet (coef: a, b, c, d, units each).
void image_walk_grad(const ImagePlan& plan, const ImageGradPlan& grad_plan, const float* weight, const float* coef,
                     int64_t d0, int64_t d1, ImageGradScratch& s, float* grad) {
  const int64_t w = plan.width, units = plan.height * w, block = s.forward.block;
  const float *coef_a = coef, *coef_b = coef + units, *coef_d = coef + 3 * units;
  float* mixed = s.forward.mixed;
  const int64_t z_offset = s.z - mixed;
  for (int64_t b0 = d0; b0 < d1; b0 += kImageBatch) {
    const int64_t k = std::min(kImageBatch, d1 - b0), ahead = std::min(kImageBatch, d1 - b0 - k);
    const float* img = weight + b0 * units;
    float* out = grad + b0 * units;
    for (int64_t i = 0; i < k; ++i) {
      if (b0 == d0) touch_image(img + i * units, units);
      coarse_blur(plan, img + i * units, s.forward, mixed + i * block);
    }
    for (int64_t y = 0; y < plan.height; ++y) {
      const RowTaps taps(plan.up_h, y, mixed, w);
      const int64_t u0 = y * w, slot = grad_plan.waiting_slot[y];
      float* o = slot < 0 ? out + u0 : s.waiting + slot * w;
      const int64_t o_stride = slot < 0 ? units : s.waiting_block;
      const bool stream = slot < 0;
#define HF_TOPO_ROW_GRAD(N)                                                                                         \
  image_row_grad<N>(taps, z_offset, img + u0, coef_a + u0, coef_b + u0, coef_d + u0, units, block, k, ahead, w, o, \
                    o_stride, stream)
      switch (taps.n) {
        case 1: HF_TOPO_ROW_GRAD(1); break;
        case 2: HF_TOPO_ROW_GRAD(2); break;
        case 3: HF_TOPO_ROW_GRAD(3); break;
        case 4: HF_TOPO_ROW_GRAD(4); break;
        default: HF_TOPO_ROW_GRAD(-1);
      }
#undef HF_TOPO_ROW_GRAD
    }
    // Per image: Z blur_w on Z's transpose, then the waiting rows receive down_h^T of it; Z zeroed for the next batch.
    for (int64_t i = 0; i < k; ++i) {
      float* z = s.z + i * block;
      for (int64_t j = 0; j < plan.padded; ++j) s.rows[j] = z + j * w;
      transpose_block(s.rows.data(), plan.padded, w, s.z_t);
      rows_combine(grad_plan.blur_w_t, s.z_t, plan.padded, s.z_blurred_t);
      for (int64_t x = 0; x < w; ++x) s.rows[x] = s.z_blurred_t + x * plan.padded;
      transpose_block(s.rows.data(), w, plan.padded, s.z_blurred);
      std::fill_n(z, plan.coarse * w, 0.f);
      const float* waiting = s.waiting + i * s.waiting_block;
      for (int64_t y = 0; y < plan.height; ++y) {
        const int64_t slot = grad_plan.waiting_slot[y];
        if (slot < 0) continue;
        const int64_t b = grad_plan.down_h_t.off[y], n = grad_plan.down_h_t.entries(y);
        float* o = out + i * units + y * w;
        const bool stream = (reinterpret_cast<uintptr_t>(o) & 63) == 0 && w % 16 == 0;
        for (int64_t x = 0; x < w; x += 8) {
          __m256 acc = _mm256_loadu_ps(waiting + slot * w + x);
          for (int64_t e = b; e < b + n; ++e)
            acc = _mm256_fmadd_ps(_mm256_set1_ps(grad_plan.down_h_t.val[e]),
                                  _mm256_loadu_ps(s.z_blurred + grad_plan.down_h_t.idx[e] * w + x), acc);
          if (stream)
            _mm256_stream_ps(o + x, acc);
          else
            _mm256_storeu_ps(o + x, acc);
        }
      }
    }
  }
  _mm_sfence();
}

// Depth-first float32 sheets (width a multiple of 8) with B's separable factors: every gradient by the image walk,
// in tasks of kImageTask depth rows of one sheet.
std::vector<at::Tensor> image_backward(at::TensorList weights, const std::vector<Sheet>& sheets,
                                       const ImagePlan& plan, const ImageGradPlan& grad_plan, const float* st,
                                       const float* up) {
  const int64_t layers = static_cast<int64_t>(weights.size()), units = sheets.front().units;
  std::vector<at::Tensor> grads;
  std::vector<int64_t> task_layer, task_begin;
  for (int64_t l = 0; l < layers; ++l) {
    grads.push_back(at::empty_like(weights[l], at::MemoryFormat::Contiguous));
    for (int64_t d0 = 0; d0 < sheets[l].depth; d0 += kImageTask) {
      task_layer.push_back(l);
      task_begin.push_back(d0);
    }
  }
  std::vector<float> coefficients(static_cast<size_t>(layers * 4 * units));  // per sheet: a, b, c, d (units each)
  for (int64_t l = 0; l < layers; ++l)
    unit_coefficients(st + l * 3 * units, up[l], units, coefficients.data() + l * 4 * units, units, 1);
  const int64_t tasks = static_cast<int64_t>(task_layer.size());
  at::parallel_for(0, tasks, 1, [&](int64_t t_begin, int64_t t_end) {
    ImageGradScratch scratch(plan, grad_plan);
    for (int64_t t = t_begin; t < t_end; ++t) {
      const int64_t l = task_layer[t], d0 = task_begin[t];
      image_walk_grad(plan, grad_plan, weights[l].data_ptr<float>(), coefficients.data() + l * 4 * units, d0,
                      std::min(sheets[l].depth, d0 + kImageTask), scratch, grads[l].data_ptr<float>());
    }
  });
  return grads;
}
#endif

// The grouped loss of same-geometry sheets (hf_topo.regularizers.grouped): one call per geometry and direction.
//
// sheet_cosine_forward(weights, units_first, offsets, indices, values, eps, down_h?, up_h?, blur_w?) -> (losses, stats):
//     losses (layers,) float32: 1 - mean_u cos(C_u, (BC)_u) per sheet; stats (layers, 3, units) float32: per unit
//     <C_u, (BC)_u>, max(|C_u|, eps), max(|(BC)_u|, eps), what the backward needs. With the blur's separable factors
//     (B = kron(up_h down_h, blur_w), float32), depth-first float32 sheets of a width divisible by 8 take the image
//     walk above; B (offsets, indices, values) serves every other sheet.
// sheet_cosine_backward(weights, units_first, stats, grad_output, offsets, indices, values, g_offsets, g_indices,
//                       g_entry_offsets, g_source, g_coef) -> gradients:
//     per sheet, dL/dC = G C with G's values filled from the per-unit coefficients a, b, c, d (grouped.py):
//     value k of G is sum over t in [g_entry_offsets[k], g_entry_offsets[k+1]) of g_coef[t] * coef[g_source[t]],
//     coef = cat(a, b, c, d). A sheet's stats row is stats[i], its upstream gradient grad_output[i].
// The weights of a group, all with the operator's `units` units: 2-D weights (units, depth) if units_first, else
// (depth, units); a weight of any other rank is read as torch's reshape to that matrix would see it (its elements in
// row-major order: a Conv2d weight (out, in, k, k), a 3-D sheet view (h, w, depth) or (depth, h, w)), so callers
// pass weights as stored and get gradients of their shapes back, with no reshape on either side.
std::vector<Sheet> check_group(at::TensorList weights, bool units_first, const at::Tensor& offsets) {
  TORCH_CHECK(!weights.empty(), "expected at least one weight");
  TORCH_CHECK(offsets.dim() == 1 && offsets.numel() > 0, "expected 1-D offsets, one per unit");
  const int64_t units = offsets.numel();
  std::vector<Sheet> sheets;
  for (const at::Tensor& weight : weights) {
    if (weight.dim() == 2) {
      sheets.push_back(check_weight(weight, units_first));
      TORCH_CHECK(sheets.back().units == units, "all sheets of a group need one number of units; got ", units,
                  " and ", sheets.back().units);
      continue;
    }
    TORCH_CHECK(weight.device().is_cpu(), "hf_topo's sheet kernels run on the CPU; got a weight on ",
                weight.device());
    TORCH_CHECK(weight.is_contiguous() && weight.dim() > 0, "expected a contiguous weight, got shape ",
                weight.sizes(), " with strides ", weight.strides());
    TORCH_CHECK(at::isFloatingType(weight.scalar_type()), "expected a floating-point weight, got ",
                weight.scalar_type());
    TORCH_CHECK(weight.numel() % units == 0, "a weight of shape ", weight.sizes(), " (", weight.numel(),
                " elements) is not a sheet of ", units, " units");
    sheets.push_back({units, weight.numel() / units});
  }
  return sheets;
}

std::tuple<at::Tensor, at::Tensor> sheet_cosine_forward(at::TensorList weights, bool units_first,
                                                        const at::Tensor& offsets, const at::Tensor& indices,
                                                        const at::Tensor& values, double eps,
                                                        const std::optional<at::Tensor>& down_h,
                                                        const std::optional<at::Tensor>& up_h,
                                                        const std::optional<at::Tensor>& blur_w) {
  const std::vector<Sheet> sheets = check_group(weights, units_first, offsets);
  const int64_t layers = static_cast<int64_t>(weights.size()), units = sheets.front().units;
  const SparseRows op = check_weighted_operator(offsets, indices, values, units);
  const bool factors = down_h.has_value() && up_h.has_value() && blur_w.has_value();
  TORCH_CHECK(factors || (!down_h.has_value() && !up_h.has_value() && !blur_w.has_value()),
              "pass all three of the blur's factors (down_h, up_h, blur_w) or none");
  ImagePlan plan;
  if (factors) plan = image_plan(*down_h, *up_h, *blur_w, units);
  const auto options = weights[0].options().dtype(at::kFloat);
  at::Tensor stats = at::empty({layers, 3, units}, options);
  at::Tensor losses = at::empty({layers}, options);
  float* st = stats.data_ptr<float>();
  float* loss = losses.data_ptr<float>();
  const float floor = static_cast<float>(eps);
  for (int64_t l = 0; l < layers; ++l) {
    float* sums = st + l * 3 * units;
    bool by_images = false;  // depth-first float32 sheets whose width is a multiple of 8: the image walk
#ifdef HF_TOPO_AVX2
    by_images = factors && !units_first && plan.width % 8 == 0 && weights[l].scalar_type() == at::kFloat;
    if (by_images) image_sums_into(weights[l], plan, sheets[l], sums);
#endif
    if (!by_images) cosine_sums_into(weights[l], units_first, sheets[l], op, sums);
    // Norms from squared norms, clamped; the cosines' mean accumulated in double.
    double total = 0.0;
    for (int64_t u = 0; u < units; ++u) {
      const float norm_c = std::max(std::sqrt(sums[units + u]), floor);
      const float norm_b = std::max(std::sqrt(sums[2 * units + u]), floor);
      sums[units + u] = norm_c;
      sums[2 * units + u] = norm_b;
      total += sums[u] / (norm_c * norm_b);
    }
    loss[l] = static_cast<float>(1.0 - total / static_cast<double>(units));
  }
  return {losses, stats};
}

#ifdef HF_TOPO_AVX2
// Depth slices of the scatter walk are at most this many floats long (multiples of 32, a row cut into equal slices):
// its accumulators, one slice per coarse point, then stay in L2 (ResNet-18's 512-unit stage: 66 points x 18 KiB rows
// would be 1.2 MiB). Measured, 1 thread: ResNet-18's 19 convolutions' backward 6.0 -> 4.5 ms (2 threads 3.7 -> 2.7);
// slices of 768 floats did alike, of 384-512 less well (and cut GPT-2's 768-float rows, which lost by it).
constexpr int64_t kScatterSlice = 1024;

// Units-first float32 sheets whose B reads few units: every gradient by the scatter walk (scatter_walk above), in
// tasks of one sheet's depth slice (rows longer than kScatterSlice cut into equal slices, and sheets split further
// where there are fewer sheets than threads).
std::vector<at::Tensor> scatter_backward(at::TensorList weights, const std::vector<Sheet>& sheets, SparseRows blur,
                                         const ScatterPlan& plan, const float* st, const float* up) {
  const int64_t layers = static_cast<int64_t>(weights.size()), units = sheets.front().units;
  const int64_t threads = at::get_num_threads();
  std::vector<at::Tensor> grads;
  std::vector<int64_t> task_layer, task_begin, task_len;
  for (int64_t l = 0; l < layers; ++l) {
    grads.push_back(at::empty_like(weights[l], at::MemoryFormat::Contiguous));
    const int64_t depth = sheets[l].depth;
    const int64_t slices = std::max((threads + layers - 1) / layers, (depth + kScatterSlice - 1) / kScatterSlice);
    const int64_t len = std::max<int64_t>(32, ((depth + slices - 1) / std::max<int64_t>(slices, 1) + 31) / 32 * 32);
    for (int64_t d0 = 0; d0 < depth; d0 += len) {
      task_layer.push_back(l);
      task_begin.push_back(d0);
      task_len.push_back(std::min(len, depth - d0));
    }
  }
  // Per-unit coefficients (a, b, c, d), unit-major.
  std::vector<float> coefficients(static_cast<size_t>(layers * units * 4));
  for (int64_t l = 0; l < layers; ++l)
    unit_coefficients(st + l * 3 * units, up[l], units, coefficients.data() + l * units * 4, 1, 4);
  const int64_t tasks = static_cast<int64_t>(task_layer.size());
  at::parallel_for(0, tasks, 1, [&](int64_t t_begin, int64_t t_end) {
    std::unique_ptr<float[]> scratch;
    int64_t scratch_len = 0;
    for (int64_t t = t_begin; t < t_end; ++t) {
      const int64_t l = task_layer[t], len = task_len[t];
      if (len > scratch_len) {
        scratch.reset(new float[plan.columns * len + 4096 / sizeof(float)]);
        scratch_len = len;
      }
      // The accumulators start 512 bytes (mod 4 KiB) after the weight's slice: a load from an address whose low 12
      // bits match a store still in flight waits for it (4K aliasing), and with rows a multiple of 1 KiB long (GPT-2's
      // 3 KiB) a chance placement made every walk ~35 % slower (measured).
      const float* w = weights[l].data_ptr<float>();
      const uintptr_t have = reinterpret_cast<uintptr_t>(scratch.get()) % 4096;
      const uintptr_t want = (reinterpret_cast<uintptr_t>(w + task_begin[t]) + 512) % 4096;
      float* accumulators = scratch.get() + (want + 4096 - have) % 4096 / sizeof(float);
      scatter_walk(w, units, sheets[l].depth, task_begin[t], len, blur, plan, coefficients.data() + l * units * 4,
                   accumulators, grads[l].data_ptr<float>());
    }
  });
  return grads;
}
#endif

std::vector<at::Tensor> sheet_cosine_backward(at::TensorList weights, bool units_first, const at::Tensor& stats,
                                              const at::Tensor& grad_output, const at::Tensor& offsets,
                                              const at::Tensor& indices, const at::Tensor& values,
                                              const at::Tensor& g_offsets,
                                              const at::Tensor& g_indices, const at::Tensor& g_entry_offsets,
                                              const at::Tensor& g_source, const at::Tensor& g_coef,
                                              const std::optional<at::Tensor>& down_h,
                                              const std::optional<at::Tensor>& up_h,
                                              const std::optional<at::Tensor>& blur_w) {
  const std::vector<Sheet> sheets = check_group(weights, units_first, offsets);
  const int64_t layers = static_cast<int64_t>(weights.size()), units = sheets.front().units;
  SparseRows op = check_operator(g_offsets, g_indices, units);
  const int64_t entries = op.nnz, triplets = g_source.numel();
  TORCH_CHECK(stats.dtype() == at::kFloat && stats.is_contiguous() && stats.dim() == 3 && stats.size(0) == layers &&
                  stats.size(1) == 3 && stats.size(2) == units,
              "expected contiguous float32 stats of shape (", layers, ", 3, ", units, "), got ", stats.sizes());
  TORCH_CHECK(grad_output.dtype() == at::kFloat && grad_output.dim() == 1 && grad_output.numel() == layers,
              "expected a float32 grad_output of ", layers, " values");
  TORCH_CHECK(g_entry_offsets.dtype() == at::kLong && g_entry_offsets.is_contiguous() &&
                  g_entry_offsets.numel() == entries + 1,
              "expected ", entries + 1, " int64 entry offsets");
  TORCH_CHECK(g_source.dtype() == at::kLong && g_source.is_contiguous() && g_coef.dtype() == at::kFloat &&
                  g_coef.is_contiguous() && g_coef.numel() == triplets,
              "expected int64 sources and float32 coefficients of one length");
  const int64_t* entry_off = g_entry_offsets.data_ptr<int64_t>();
  const int64_t* source = g_source.data_ptr<int64_t>();
  const float* coef = g_coef.data_ptr<float>();
  TORCH_CHECK(entry_off[0] == 0 && entry_off[entries] == triplets, "entry offsets must run from 0 to ", triplets);
  for (int64_t k = 0; k < entries; ++k)
    TORCH_CHECK(entry_off[k] <= entry_off[k + 1], "entry offsets must not fall (at entry ", k, ")");
  for (int64_t t = 0; t < triplets; ++t)
    TORCH_CHECK(source[t] >= 0 && source[t] < 4 * units, "source ", source[t], " is not a coefficient (0 .. ",
                4 * units - 1, ")");
  const at::Tensor upstream = grad_output.contiguous();
  const float* up = upstream.data_ptr<float>();
  const float* st = stats.data_ptr<float>();
  const SparseRows blur = check_weighted_operator(offsets, indices, values, units);
#ifdef HF_TOPO_AVX2
  bool all_float = true;
  for (const at::Tensor& weight : weights) all_float = all_float && weight.scalar_type() == at::kFloat;
  if (units_first && all_float) {
    const ScatterPlan plan = scatter_plan(blur, units);
    if (plan.columns > 0) return scatter_backward(weights, sheets, blur, plan, st, up);
  }
#endif
  const bool factors = down_h.has_value() && up_h.has_value() && blur_w.has_value();
  TORCH_CHECK(factors || (!down_h.has_value() && !up_h.has_value() && !blur_w.has_value()),
              "pass all three of the blur's factors (down_h, up_h, blur_w) or none");
  if (factors) {
    const ImagePlan plan = image_plan(*down_h, *up_h, *blur_w, units);
#ifdef HF_TOPO_AVX2
    if (!units_first && all_float && plan.width % 8 == 0)
      return image_backward(weights, sheets, plan, image_grad_plan(*down_h, *blur_w), st, up);
#endif
  }
  // G's values for every sheet, (layers, entries), sheets in parallel.
  at::Tensor g_values = at::empty({layers, entries}, stats.options());
  float* gv = g_values.data_ptr<float>();
  at::parallel_for(0, layers, 1, [&](int64_t l_begin, int64_t l_end) {
    std::vector<float> coefficients(4 * units);
    for (int64_t l = l_begin; l < l_end; ++l) {
      unit_coefficients(st + l * 3 * units, up[l], units, coefficients.data(), units, 1);  // cat(a, b, c, d)
      float* values = gv + l * entries;
      for (int64_t k = 0; k < entries; ++k) {
        float total = 0.f;
        for (int64_t t = entry_off[k]; t < entry_off[k + 1]; ++t) total += coef[t] * coefficients[source[t]];
        values[k] = total;
      }
    }
  });
  std::vector<at::Tensor> grads;
  grads.reserve(layers);
  for (int64_t l = 0; l < layers; ++l) {
    at::Tensor grad = at::empty_like(weights[l], at::MemoryFormat::Contiguous);
    op.val = gv + l * entries;
    sparse_apply_into(weights[l], units_first, sheets[l], op, grad);
    grads.push_back(grad);
  }
  return grads;
}

}  // namespace

TORCH_LIBRARY(hf_topo, m) {
  m.def("sheet_cosine_sums(Tensor weight, bool units_first, Tensor offsets, Tensor indices, Tensor values) -> Tensor");
  m.def("sheet_sparse_apply(Tensor weight, bool units_first, Tensor offsets, Tensor indices, Tensor values) -> Tensor");
  m.def(
      "sheet_cosine_forward(Tensor[] weights, bool units_first, Tensor offsets, Tensor indices, Tensor values, "
      "float eps, Tensor? down_h=None, Tensor? up_h=None, Tensor? blur_w=None) -> (Tensor, Tensor)");
  m.def(
      "sheet_cosine_backward(Tensor[] weights, bool units_first, Tensor stats, Tensor grad_output, Tensor offsets, "
      "Tensor indices, Tensor values, Tensor g_offsets, Tensor g_indices, Tensor g_entry_offsets, Tensor g_source, "
      "Tensor g_coef, Tensor? down_h=None, Tensor? up_h=None, Tensor? blur_w=None) -> Tensor[]");
}

TORCH_LIBRARY_IMPL(hf_topo, CPU, m) {
  m.impl("sheet_cosine_sums", &sheet_cosine_sums);
  m.impl("sheet_sparse_apply", &sheet_sparse_apply);
  m.impl("sheet_cosine_forward", &sheet_cosine_forward);
  m.impl("sheet_cosine_backward", &sheet_cosine_backward);
}
