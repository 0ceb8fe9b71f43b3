// TopoLoss's per-unit sums and its gradient on the CPU, reading a weight in its own layout.
//
// A sheet is a 2-D weight whose units are its rows ("units first": nn.Linear, Conv2d flattened to (out, in*k*k)) or
// its columns ("depth first": transformers' Conv1D, (in, out)). A depth-first weight is walked in depth tiles of kTile
// rows: a tile is loaded once into a (units, kTile) float32 buffer that stays in the core's cache (transposed on the
// way in, 8 x 8 blocks in registers), the sparse operator is applied to the buffer's rows, and the gradient leaves
// through an 8-unit staging block, transposed back on the way out. A units-first float32 weight is streamed row by
// row (a unit's neighbours are rows a few sheet rows away, still in cache); other dtypes go through the tiles. So
// each kernel reads the weight once and the backward writes the gradient once, in the weight's own layout and dtype:
// no transposed or cast copy of the weight ever exists. With AVX2/FMA (HF_TOPO_AVX2) the inner loops use intrinsics;
// the portable code is plain C++ that compilers vectorize.
//
// sheet_cosine_sums(weight, units_first, offsets, indices, values) -> (3, units) float32:
//     row 0: <C_u, (B C)_u>, row 1: |C_u|^2, row 2: |(B C)_u|^2, where row u of B has the entries
//     indices[offsets[u]:offsets[u+1]] with weights values[...] (the bag layout of F.embedding_bag, offsets without
//     the final end). A unit's sums come from one thread (rows) or per-tile partial sums added in tile order, so
//     the result does not depend on the number of threads.
// sheet_sparse_apply(weight, units_first, offsets, indices, values) -> weight-shaped tensor of weight's dtype:
//     the sheet (S C) for a sparse unit operator S in the same bag layout, in the weight's layout.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdint>
#include <type_traits>
#include <memory>

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
// walked in order, so the weight is streamed once row by row (no tile); each row is done in 8-float chunks.
inline float hsum(__m256 v) {
  const __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  const __m128 t = _mm_add_ps(s, _mm_movehl_ps(s, s));
  return _mm_cvtss_f32(_mm_add_ss(t, _mm_shuffle_ps(t, t, 1)));
}

void rows_sums_avx2(const float* weight, int64_t depth, const int64_t* off, const int64_t* idx, const float* val,
                    int64_t nnz, int64_t u_begin, int64_t u_end, int64_t units, float* dots, float* norms_c,
                    float* norms_b) {
  for (int64_t u = u_begin; u < u_end; ++u) {
    const int64_t begin = off[u], end = u + 1 < units ? off[u + 1] : nnz;
    const float* c = weight + u * depth;
    __m256 dot = _mm256_setzero_ps(), cc = _mm256_setzero_ps(), bb = _mm256_setzero_ps();
    int64_t j = 0;
    for (; j + 8 <= depth; j += 8) {
      __m256 acc = _mm256_setzero_ps();
      for (int64_t e = begin; e < end; ++e)
        acc = _mm256_fmadd_ps(_mm256_set1_ps(val[e]), _mm256_loadu_ps(weight + idx[e] * depth + j), acc);
      const __m256 cj = _mm256_loadu_ps(c + j);
      dot = _mm256_fmadd_ps(cj, acc, dot);
      cc = _mm256_fmadd_ps(cj, cj, cc);
      bb = _mm256_fmadd_ps(acc, acc, bb);
    }
    float d = hsum(dot), n_c = hsum(cc), n_b = hsum(bb);
    for (; j < depth; ++j) {
      float acc = 0.f;
      for (int64_t e = begin; e < end; ++e) acc += val[e] * weight[idx[e] * depth + j];
      d += c[j] * acc;
      n_c += c[j] * c[j];
      n_b += acc * acc;
    }
    dots[u] = d;
    norms_c[u] = n_c;
    norms_b[u] = n_b;
  }
}

// The gradient rows are written with non-temporal stores (whole 128-byte runs; nothing reads them here again).
void rows_apply_avx2(const float* weight, int64_t depth, const int64_t* off, const int64_t* idx, const float* val,
                     int64_t nnz, int64_t u_begin, int64_t u_end, int64_t units, float* out) {
  for (int64_t u = u_begin; u < u_end; ++u) {
    const int64_t begin = off[u], end = u + 1 < units ? off[u + 1] : nnz;
    float* o = out + u * depth;
    int64_t j = 0;
    for (; j + 32 <= depth; j += 32) {
      __m256 acc[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps()};
      for (int64_t e = begin; e < end; ++e) {
        const __m256 v = _mm256_set1_ps(val[e]);
        const float* src = weight + idx[e] * depth + j;
        for (int q = 0; q < 4; ++q) acc[q] = _mm256_fmadd_ps(v, _mm256_loadu_ps(src + 8 * q), acc[q]);
      }
      if ((reinterpret_cast<uintptr_t>(o + j) & 31) == 0) {
        for (int q = 0; q < 4; ++q) _mm256_stream_ps(o + j + 8 * q, acc[q]);
      } else {
        for (int q = 0; q < 4; ++q) _mm256_storeu_ps(o + j + 8 * q, acc[q]);
      }
    }
    for (; j < depth; ++j) {
      float acc = 0.f;
      for (int64_t e = begin; e < end; ++e) acc += val[e] * weight[idx[e] * depth + j];
      o[j] = acc;
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

struct Sheet {
  int64_t units, depth;
};

Sheet check_inputs(const at::Tensor& weight, bool units_first, const at::Tensor& offsets, const at::Tensor& indices,
                   const at::Tensor& values) {
  TORCH_CHECK(weight.device().is_cpu(), "hf_topo's sheet kernels run on the CPU; got a weight on ", weight.device());
  TORCH_CHECK(weight.dim() == 2 && weight.is_contiguous(), "expected a contiguous 2-D weight, got shape ",
              weight.sizes(), " with strides ", weight.strides());
  TORCH_CHECK(offsets.dtype() == at::kLong && indices.dtype() == at::kLong && values.dtype() == at::kFloat,
              "expected int64 offsets and indices and float32 values");
  TORCH_CHECK(offsets.is_contiguous() && indices.is_contiguous() && values.is_contiguous(),
              "expected contiguous offsets, indices and values");
  TORCH_CHECK(indices.numel() == values.numel(), "indices and values differ in length");
  const int64_t units = units_first ? weight.size(0) : weight.size(1);
  const int64_t depth = units_first ? weight.size(1) : weight.size(0);
  TORCH_CHECK(offsets.numel() == units, "expected ", units, " offsets (one per unit), got ", offsets.numel());
  return {units, depth};
}

at::Tensor sheet_cosine_sums(const at::Tensor& weight, bool units_first, const at::Tensor& offsets,
                             const at::Tensor& indices, const at::Tensor& values) {
  const Sheet sheet = check_inputs(weight, units_first, offsets, indices, values);
  const int64_t units = sheet.units, depth = sheet.depth, nnz = indices.numel();
  const int64_t tiles = (depth + kTile - 1) / kTile;
  // Units-first float32 rows write their sums once (one "tile"); tiles write per-tile partial sums.
  bool by_rows = false;
#ifdef HF_TOPO_AVX2
  by_rows = units_first && weight.scalar_type() == at::kFloat;
#endif
  at::Tensor partial = at::empty({by_rows ? 1 : tiles, 3, units}, weight.options().dtype(at::kFloat));
  const int64_t* off = offsets.data_ptr<int64_t>();
  const int64_t* idx = indices.data_ptr<int64_t>();
  const float* val = values.data_ptr<float>();
  float* out = partial.data_ptr<float>();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, weight.scalar_type(), "sheet_cosine_sums", [&] {
    const scalar_t* w = weight.data_ptr<scalar_t>();
#ifdef HF_TOPO_AVX2
    if constexpr (std::is_same_v<scalar_t, float>) {
      if (units_first) {
        float* dots = out;
        at::parallel_for(0, units, 64, [&](int64_t u_begin, int64_t u_end) {
          rows_sums_avx2(reinterpret_cast<const float*>(w), depth, off, idx, val, nnz, u_begin, u_end, units, dots,
                         dots + units, dots + 2 * units);
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
  return by_rows ? partial[0] : partial.sum(0);
}

at::Tensor sheet_sparse_apply(const at::Tensor& weight, bool units_first, const at::Tensor& offsets,
                              const at::Tensor& indices, const at::Tensor& values) {
  const Sheet sheet = check_inputs(weight, units_first, offsets, indices, values);
  const int64_t units = sheet.units, depth = sheet.depth, nnz = indices.numel();
  const int64_t tiles = (depth + kTile - 1) / kTile;
  at::Tensor result = at::empty_like(weight, at::MemoryFormat::Contiguous);
  const int64_t* off = offsets.data_ptr<int64_t>();
  const int64_t* idx = indices.data_ptr<int64_t>();
  const float* val = values.data_ptr<float>();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, weight.scalar_type(), "sheet_sparse_apply", [&] {
    const scalar_t* w = weight.data_ptr<scalar_t>();
    scalar_t* out = result.data_ptr<scalar_t>();
#ifdef HF_TOPO_AVX2
    if constexpr (std::is_same_v<scalar_t, float>) {
      if (units_first) {
        at::parallel_for(0, units, 64, [&](int64_t u_begin, int64_t u_end) {
          rows_apply_avx2(reinterpret_cast<const float*>(w), depth, off, idx, val, nnz, u_begin, u_end, units,
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
  return result;
}

}  // namespace

TORCH_LIBRARY(hf_topo, m) {
  m.def("sheet_cosine_sums(Tensor weight, bool units_first, Tensor offsets, Tensor indices, Tensor values) -> Tensor");
  m.def("sheet_sparse_apply(Tensor weight, bool units_first, Tensor offsets, Tensor indices, Tensor values) -> Tensor");
}

TORCH_LIBRARY_IMPL(hf_topo, CPU, m) {
  m.impl("sheet_cosine_sums", &sheet_cosine_sums);
  m.impl("sheet_sparse_apply", &sheet_sparse_apply);
}
