// Qwen2.5-VL after transformers 4.50/4.51: models/qwen2_5_vl/modeling_qwen2_5_vl.py (vision tower,
// get_rope_index, the LM) and models/qwen2_vl/image_processing_qwen2_vl.py (preprocessing).
#include "omniflux/models/qwen2_5_vl.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <tuple>

#include <ATen/ATen.h>

#include "checks.h"
#include "omniflux/error.h"
#include "omniflux/io/image_tensor.h"
#include "models/qwen2_layers.h"
#include "nn/attention.h"
#include "nn/debug.h"
#include "nn/ops.h"
#include "nn/rotary.h"
#include "nn/rotary_multimodal.h"
#include "text/chat_template.h"
#include "sampling/decode_graph.h"

namespace omniflux {

// --- Preprocessing ----------------------------------------------------------------------------

Qwen2_5_VLPreprocessorConfig Qwen2_5_VLPreprocessorConfig::from_json(const omniflux::Config& j) {
  Qwen2_5_VLPreprocessorConfig c;
  constexpr int64_t kMaxPixels = int64_t(1) << 30;
  c.min_pixels = j.get_int("min_pixels", c.min_pixels, 1, kMaxPixels);
  c.max_pixels = j.get_int("max_pixels", c.max_pixels, 1, kMaxPixels);
  c.patch_size = j.get_int("patch_size", c.patch_size, 1, 1024);
  c.temporal_patch_size = j.get_int("temporal_patch_size", c.temporal_patch_size, 1, 64);
  c.merge_size = j.get_int("merge_size", c.merge_size, 1, 64);
  c.rescale_factor = j.get_positive("rescale_factor", c.rescale_factor, 1.0);
  // A zero or tiny std would turn every pixel into Inf/NaN.
  c.image_mean = j.get_double_list("image_mean", c.image_mean, -1e3, 1e3);
  c.image_std = j.get_double_list("image_std", c.image_std, 1e-6, 1e3);
  j.check(c.image_mean.size() == 3, "image_mean", "3 values", std::to_string(c.image_mean.size()));
  j.check(c.image_std.size() == 3, "image_std", "3 values", std::to_string(c.image_std.size()));
  j.check(c.min_pixels <= c.max_pixels, "min_pixels", "<= max_pixels " + std::to_string(c.max_pixels),
          std::to_string(c.min_pixels));
  if (j.has("resample") && j.get_int("resample") != 3)
    throw Error("only PIL BICUBIC resampling (3) is supported", j.where("resample"), "3",
                std::to_string(j.get_int("resample")));
  return c;
}

Qwen2_5_VLPreprocessorConfig Qwen2_5_VLPreprocessorConfig::load(const std::string& path) {
  const std::filesystem::path p = std::filesystem::is_directory(path)
                                      ? std::filesystem::path(path) / "preprocessor_config.json"
                                      : std::filesystem::path(path);
  return from_json(omniflux::Config::load(p.string()));
}

std::pair<int64_t, int64_t> qwen2_5_vl_smart_resize(int64_t height, int64_t width, int64_t factor, int64_t min_pixels,
                                         int64_t max_pixels) {
  if (height < 1 || width < 1 || factor < 1)
    throw Error("image size must be positive", "qwen2_5_vl_smart_resize", ">= 1",
                std::to_string(height) + "x" + std::to_string(width));
  const double h = double(height), w = double(width), f = double(factor);
  if (std::max(h, w) / std::min(h, w) > 200)
    throw Error("absolute aspect ratio must be smaller than 200", "qwen2_5_vl_smart_resize", "<= 200",
                std::to_string(height) + "x" + std::to_string(width));
  // Python round() is half-to-even: nearbyint under the default rounding mode.
  int64_t hb = static_cast<int64_t>(std::nearbyint(h / f)) * factor;
  int64_t wb = static_cast<int64_t>(std::nearbyint(w / f)) * factor;
  if (hb * wb > max_pixels) {
    const double beta = std::sqrt(h * w / double(max_pixels));
    hb = std::max(factor, static_cast<int64_t>(std::floor(h / beta / f)) * factor);
    wb = std::max(factor, static_cast<int64_t>(std::floor(w / beta / f)) * factor);
  } else if (hb * wb < min_pixels) {
    const double beta = std::sqrt(double(min_pixels) / (h * w));
    hb = static_cast<int64_t>(std::ceil(h * beta / f)) * factor;
    wb = static_cast<int64_t>(std::ceil(w * beta / f)) * factor;
  }
  return {hb, wb};
}

Qwen2_5_VLPixels qwen2_5_vl_patchify(const std::vector<at::Tensor>& resized_rgb, const Qwen2_5_VLPreprocessorConfig& c) {
  if (resized_rgb.empty()) throw Error("no images", "qwen2_5_vl_patchify");
  const int64_t P = c.patch_size, M = c.merge_size, T = c.temporal_patch_size, unit = P * M;
  at::Tensor mean = at::tensor(std::vector<float>(c.image_mean.begin(), c.image_mean.end()));
  at::Tensor stdv = at::tensor(std::vector<float>(c.image_std.begin(), c.image_std.end()));
  std::vector<at::Tensor> rows, grids;
  for (const at::Tensor& img : resized_rgb) {
    if (img.dim() != 3 || img.size(2) != 3 || img.scalar_type() != at::kByte)
      throw Error("images must be uint8 [H, W, 3]", "qwen2_5_vl_patchify", "uint8 [H, W, 3]",
                  shape_str(img.sizes().vec()));
    const int64_t H = img.size(0), W = img.size(1);
    if (H % unit != 0 || W % unit != 0 || H == 0 || W == 0)
      throw Error("image size is not a multiple of patch_size * merge_size", "qwen2_5_vl_patchify",
                  "multiples of " + std::to_string(unit), std::to_string(H) + "x" + std::to_string(W));
    // rescale in float64, cast to float32, normalise in float32 (HF rescale + normalize)
    at::Tensor x = (img.cpu().to(at::kDouble) * c.rescale_factor).to(at::kFloat);
    x = ((x - mean) / stdv).permute({2, 0, 1});                         // [C, H, W]
    x = x.unsqueeze(0).expand({T, 3, H, W});                           // one image = T equal frames
    const int64_t gh = H / P, gw = W / P;
    // (grid_t=1, T, C, gh/M, M, P, gw/M, M, P) -> (1, gh/M, gw/M, M, M, C, T, P, P)
    x = x.reshape({1, T, 3, gh / M, M, P, gw / M, M, P}).permute({0, 3, 6, 4, 7, 2, 1, 5, 8});
    rows.push_back(x.reshape({gh * gw, 3 * T * P * P}));
    grids.push_back(at::tensor({int64_t(1), gh, gw}, at::kLong));
  }
  return {at::cat(rows), at::stack(grids)};
}

Qwen2_5_VLPixels qwen2_5_vl_preprocess(const std::vector<Image>& images, const Qwen2_5_VLPreprocessorConfig& cfg, std::vector<at::Tensor>* resized) {
  if (images.empty()) throw Error("no images", "qwen2_5_vl_preprocess");
  std::vector<at::Tensor> rs;
  for (const Image& img : images) {
    auto [h, w] = qwen2_5_vl_smart_resize(img.height, img.width, cfg.patch_size * cfg.merge_size, cfg.min_pixels, cfg.max_pixels);
    // resample=3: PIL BICUBIC on uint8 (the processor resizes through PIL and keeps uint8).
    rs.push_back(image_to_tensor(resize(img, static_cast<int>(w), static_cast<int>(h), Resample::Bicubic)));
  }
  Qwen2_5_VLPixels b = qwen2_5_vl_patchify(rs, cfg);
  if (resized) *resized = std::move(rs);
  return b;
}

// --- Configs ----------------------------------------------------------------------------------

Qwen2_5_VLVisionConfig Qwen2_5_VLVisionConfig::from_json(const omniflux::Config& j) {
  Qwen2_5_VLVisionConfig c;
  c.depth = j.get_int("depth", c.depth, 1, 4096);
  c.hidden_size = j.get_size("hidden_size", c.hidden_size);
  c.intermediate_size = j.get_size("intermediate_size", c.intermediate_size);
  c.num_heads = j.get_int("num_heads", c.num_heads, 1, 4096);
  c.in_channels = j.has("in_channels") ? j.get_int("in_channels", c.in_channels, 1, 64)
                                       : j.get_int("in_chans", c.in_channels, 1, 64);
  c.out_hidden_size = j.get_size("out_hidden_size", c.out_hidden_size);
  c.patch_size = j.get_int("patch_size", c.patch_size, 1, 1024);
  c.spatial_merge_size = j.get_int("spatial_merge_size", c.spatial_merge_size, 1, 64);
  c.temporal_patch_size = j.get_int("temporal_patch_size", c.temporal_patch_size, 1, 64);
  c.window_size = j.get_int("window_size", c.window_size, 1, 1 << 20);
  c.fullatt_block_indexes = j.get_int_list("fullatt_block_indexes", c.fullatt_block_indexes, 0, c.depth - 1);
  if (j.get_string("hidden_act", "silu") != "silu")
    throw Error("unsupported vision hidden_act", j.where("hidden_act"), "silu", j.get_string("hidden_act"));
  j.check(c.hidden_size % c.num_heads == 0 && (c.hidden_size / c.num_heads) % 4 == 0, "hidden_size",
          "num_heads (" + std::to_string(c.num_heads) + ") heads of a multiple of 4", std::to_string(c.hidden_size));
  const int64_t unit = c.spatial_merge_size * c.patch_size;
  j.check(c.window_size % unit == 0, "window_size", "a multiple of patch_size * spatial_merge_size " + std::to_string(unit),
          std::to_string(c.window_size));
  return c;
}

Qwen2_5_VLConfig Qwen2_5_VLConfig::from_json(const omniflux::Config& j) {
  Qwen2_5_VLConfig c;
  c.text = Qwen2Config::from_json(j);
  c.vision = Qwen2_5_VLVisionConfig::from_json(j.sub("vision_config"));
  const omniflux::Config text = (!j.has("hidden_size") && j.has("text_config")) ? j.sub("text_config") : j;
  c.mrope_section = text.has("rope_scaling")
                        ? text.sub("rope_scaling").get_int_list("mrope_section", {16, 24, 24}, 0, c.text.head_dim / 2)
                        : std::vector<int64_t>{16, 24, 24};
  int64_t sum = 0;
  for (int64_t s : c.mrope_section) sum += s;
  text.check(c.mrope_section.size() == 3 && sum * 2 == c.text.head_dim, "rope_scaling.mrope_section",
             "3 entries summing to head_dim / 2 = " + std::to_string(c.text.head_dim / 2), shape_str(c.mrope_section));
  const int64_t V = c.text.vocab_size;
  c.image_token_id = j.get_int("image_token_id", c.image_token_id, 0, V - 1);
  c.video_token_id = j.get_int("video_token_id", c.video_token_id, 0, V - 1);
  c.vision_start_token_id = j.get_int("vision_start_token_id", c.vision_start_token_id, 0, V - 1);
  c.eos_token_id = j.get_int("eos_token_id", c.eos_token_id, 0, V - 1);
  j.check(c.vision.out_hidden_size == c.text.hidden_size, "vision_config.out_hidden_size",
          "the LM hidden_size " + std::to_string(c.text.hidden_size), std::to_string(c.vision.out_hidden_size));
  return c;
}

// --- Vision tower -----------------------------------------------------------------------------

namespace {

struct Grid {
  int64_t t, h, w;
};

std::vector<Grid> read_grids(const at::Tensor& grid_thw, const Qwen2_5_VLVisionConfig& cfg) {
  if (!grid_thw.defined() || grid_thw.dim() != 2 || grid_thw.size(1) != 3 || grid_thw.size(0) < 1)
    throw Error("grid_thw must be [n, 3]", "qwen2_5_vl", "[n, 3]",
                grid_thw.defined() ? shape_str(grid_thw.sizes().vec()) : "undefined");
  at::Tensor g = grid_thw.to(at::kCPU, at::kLong).contiguous();
  std::vector<Grid> out;
  const int64_t m = cfg.spatial_merge_size;
  for (int64_t i = 0; i < g.size(0); ++i) {
    Grid gr{g[i][0].item<int64_t>(), g[i][1].item<int64_t>(), g[i][2].item<int64_t>()};
    if (gr.t < 1 || gr.h < m || gr.w < m || gr.h % m != 0 || gr.w % m != 0)
      throw Error("grid is not a positive multiple of the merge size", "qwen2_5_vl grid_thw[" + std::to_string(i) + "]",
                  "t >= 1, h and w multiples of " + std::to_string(m),
                  shape_str({gr.t, gr.h, gr.w}));
    out.push_back(gr);
  }
  return out;
}

}  // namespace

Qwen2_5_VLWindowIndex qwen2_5_vl_window_index(const at::Tensor& grid_thw, const Qwen2_5_VLVisionConfig& cfg) {
  const int64_t m = cfg.spatial_merge_size, unit = m * m;
  const int64_t ws = cfg.window_size / m / cfg.patch_size;  // window side in merged tokens
  std::vector<int64_t> index, cu = {0};
  int64_t offset = 0;
  for (const Grid& g : read_grids(grid_thw, cfg)) {
    const int64_t lh = g.h / m, lw = g.w / m;
    // As the reference, a side divisible by ws still gets a padding of a whole empty window; the
    // empty windows add repeated cu entries that unique_consecutive removes.
    const int64_t nwh = (lh + ws - lh % ws) / ws, nww = (lw + ws - lw % ws) / ws;
    for (int64_t t = 0; t < g.t; ++t)
      for (int64_t wy = 0; wy < nwh; ++wy)
        for (int64_t wx = 0; wx < nww; ++wx) {
          int64_t count = 0;
          for (int64_t y = wy * ws; y < std::min(lh, (wy + 1) * ws); ++y)
            for (int64_t x = wx * ws; x < std::min(lw, (wx + 1) * ws); ++x, ++count)
              index.push_back(offset + t * lh * lw + y * lw + x);
          if (count > 0) cu.push_back(cu.back() + count * unit);
        }
    offset += g.t * lh * lw;
  }
  return {at::tensor(index, at::kLong), at::tensor(cu, at::kLong)};
}

struct Qwen2_5_VLVisionTower::Block {
  at::Tensor norm1, norm2;
  nn::Linear qkv, proj, gate_up, down;  // gate|up fused at load
};

Qwen2_5_VLVisionTower Qwen2_5_VLVisionTower::load(const WeightView& w, const Qwen2_5_VLVisionConfig& cfg) {
  Qwen2_5_VLVisionTower v;
  v.cfg_ = cfg;
  const int64_t D = cfg.hidden_size, I = cfg.intermediate_size, C = cfg.in_channels, T = cfg.temporal_patch_size,
                P = cfg.patch_size, Dm = D * cfg.spatial_merge_size * cfg.spatial_merge_size;
  // Conv3d with kernel = stride = (T, P, P) on one patch is a linear map of its (c, t, y, x) values.
  v.patch_w_ = w.get("patch_embed.proj.weight", {D, C, T, P, P}).reshape({D, C * T * P * P});
  std::vector<Block> blocks;
  for (int64_t i = 0; i < cfg.depth; ++i) {
    const WeightView b = w.sub("blocks").sub(i);
    Block k;
    k.norm1 = b.get("norm1.weight", {D});
    k.norm2 = b.get("norm2.weight", {D});
    k.qkv = nn::Linear::load(b, "attn.qkv", D, 3 * D);
    k.proj = nn::Linear::load(b, "attn.proj", D, D);
    k.gate_up = nn::Linear::fuse({nn::Linear::load(b, "mlp.gate_proj", D, I), nn::Linear::load(b, "mlp.up_proj", D, I)});
    k.down = nn::Linear::load(b, "mlp.down_proj", I, D);
    blocks.push_back(std::move(k));
  }
  v.blocks_ = std::make_shared<const std::vector<Block>>(std::move(blocks));
  const WeightView mg = w.sub("merger");
  v.ln_q_ = mg.get("ln_q.weight", {D});
  v.mlp0_w_ = mg.get("mlp.0.weight", {Dm, Dm});
  v.mlp0_b_ = mg.get("mlp.0.bias", {Dm});
  v.mlp2_w_ = mg.get("mlp.2.weight", {cfg.out_hidden_size, Dm});
  v.mlp2_b_ = mg.get("mlp.2.bias", {cfg.out_hidden_size});
  return v;
}

at::Tensor Qwen2_5_VLVisionTower::forward(const at::Tensor& pixel_values, const at::Tensor& grid_thw) const {
  const std::vector<Grid> grids = read_grids(grid_thw, cfg_);
  const int64_t m = cfg_.spatial_merge_size, unit = m * m, D = cfg_.hidden_size, H = cfg_.num_heads, hd = D / H;
  int64_t N = 0;
  std::vector<int64_t> cu_full = {0};
  for (const Grid& g : grids)
    for (int64_t t = 0; t < g.t; ++t) cu_full.push_back(N += g.h * g.w);  // one segment per frame
  if (pixel_values.dim() != 2 || pixel_values.size(0) != N || pixel_values.size(1) != patch_w_.size(1))
    throw Error("pixel_values do not match grid_thw", "Qwen2_5_VLVisionTower::forward",
                shape_str({N, patch_w_.size(1)}), shape_str(pixel_values.sizes().vec()));
  const auto dev = patch_w_.device();
  at::Tensor x = nn::linear(pixel_values.to(dev, patch_w_.scalar_type()), patch_w_);  // [N, D]
  if (tapping()) tap("qwen2_5_vl.vision_patch_embed", x);

  // 2-D rotary positions of each patch, in the processor's merge-block order (rot_pos_emb).
  std::vector<at::Tensor> hs, wsv;
  for (const Grid& g : grids) {
    at::Tensor hpos = at::arange(g.h, at::kLong).unsqueeze(1).expand({g.h, g.w});
    at::Tensor wpos = at::arange(g.w, at::kLong).unsqueeze(0).expand({g.h, g.w});
    auto blocks = [&](const at::Tensor& p) {  // (h/m, m, w/m, m) -> (h/m, w/m, m, m)
      return p.reshape({g.h / m, m, g.w / m, m}).permute({0, 2, 1, 3}).flatten().repeat({g.t});
    };
    hs.push_back(blocks(hpos));
    wsv.push_back(blocks(wpos));
  }
  auto [cos, sin] = nn::rope_2d_cos_sin(at::cat(hs).to(dev), at::cat(wsv).to(dev), hd);  // [N, hd]

  Qwen2_5_VLWindowIndex wi = qwen2_5_vl_window_index(grid_thw, cfg_);
  if (tapping()) {
    tap("qwen2_5_vl.vision_window_index", wi.window_index);
    tap("qwen2_5_vl.vision_cu_window_seqlens", wi.cu_window_seqlens);
    tap("qwen2_5_vl.vision_cu_seqlens", at::tensor(cu_full, at::kLong));
  }
  at::Tensor widx = wi.window_index.to(dev);
  // Reorder in groups of m*m (a merge block stays contiguous): [N/unit, unit, *] rows by widx.
  auto reorder = [&](const at::Tensor& t) {
    return t.reshape({N / unit, unit, t.size(-1)}).index_select(0, widx).reshape({N, t.size(-1)});
  };
  x = reorder(x);
  cos = reorder(cos).unsqueeze(1);  // [N, 1, hd]
  sin = reorder(sin).unsqueeze(1);
  const at::Tensor cu_full_t = at::tensor(cu_full, at::kLong);

  for (size_t i = 0; i < blocks_->size(); ++i) {
    const Block& b = (*blocks_)[i];
    const bool full = std::find(cfg_.fullatt_block_indexes.begin(), cfg_.fullatt_block_indexes.end(),
                                static_cast<int64_t>(i)) != cfg_.fullatt_block_indexes.end();
    at::Tensor h = nn::rms_norm(x, b.norm1, 1e-6);
    at::Tensor qkv = b.qkv(h).view({N, 3, H, hd});
    // Rotary in fp32 (the vision attention upcasts q and k).
    at::Tensor q = nn::apply_rope_half(qkv.select(1, 0), cos, sin);
    at::Tensor k = nn::apply_rope_half(qkv.select(1, 1), cos, sin);
    at::Tensor v = qkv.select(1, 2);
    at::Tensor o = nn::segment_attention(q.transpose(0, 1), k.transpose(0, 1), v.transpose(0, 1),
                                         full ? cu_full_t : wi.cu_window_seqlens);  // [H, N, hd]
    x = x + b.proj(o.transpose(0, 1).reshape({N, D}));
    at::Tensor gu = b.gate_up(nn::rms_norm(x, b.norm2, 1e-6));
    const int64_t I = gu.size(-1) / 2;
    x = x + b.down(at::silu(gu.slice(-1, 0, I)) * gu.slice(-1, I));
    if (tapping()) tap("qwen2_5_vl.vision_block_output", x);
  }
  // PatchMerger: the m*m tokens of a block side by side, then Linear, exact GELU, Linear.
  at::Tensor y = nn::rms_norm(x, ln_q_, 1e-6).reshape({N / unit, unit * D});
  y = nn::linear(nn::gelu(nn::linear(y, mlp0_w_, mlp0_b_)), mlp2_w_, mlp2_b_);
  return y.index_select(0, at::argsort(widx));  // back to raster order over merged tokens
}

// --- get_rope_index ---------------------------------------------------------------------------

Qwen2_5_VLRopeIndex qwen2_5_vl_rope_index(const at::Tensor& input_ids, const at::Tensor& image_grid_thw, const Qwen2_5_VLConfig& cfg,
                         const at::Tensor& attention_mask) {
  if (!input_ids.defined() || input_ids.dim() != 2)
    throw Error("input ids must be [B, L]", "qwen2_5_vl_rope_index");
  at::Tensor ids = input_ids.to(at::kCPU, at::kLong).contiguous();
  const int64_t B = ids.size(0), L = ids.size(1), m = cfg.vision.spatial_merge_size;
  at::Tensor mask = attention_mask.defined() ? attention_mask.to(at::kCPU).ne(0).contiguous()
                                             : at::ones({B, L}, at::kBool);
  if (mask.sizes() != ids.sizes())
    throw Error("attention mask differs in shape from the ids", "qwen2_5_vl_rope_index",
                shape_str(ids.sizes().vec()), shape_str(mask.sizes().vec()));
  std::vector<Grid> grids;
  if (image_grid_thw.defined() && image_grid_thw.numel() > 0) grids = read_grids(image_grid_thw, cfg.vision);
  at::Tensor pos = at::ones({3, B, L}, at::kLong);
  at::Tensor deltas = at::zeros({B, 1}, at::kLong);
  auto P = pos.accessor<int64_t, 3>();
  auto I = ids.accessor<int64_t, 2>();
  auto Mk = mask.accessor<bool, 2>();
  size_t image_index = 0;
  for (int64_t b = 0; b < B; ++b) {
    std::vector<int64_t> where, tok;  // the row's real tokens
    for (int64_t i = 0; i < L; ++i)
      if (Mk[b][i]) {
        where.push_back(i);
        tok.push_back(I[b][i]);
      }
    const int64_t n = static_cast<int64_t>(tok.size());
    int64_t images = 0;
    for (int64_t i = 0; i + 1 < n; ++i)
      if (tok[i] == cfg.vision_start_token_id) {
        if (tok[i + 1] == cfg.video_token_id) throw Error("videos are not supported", "qwen2_5_vl_rope_index");
        if (tok[i + 1] == cfg.image_token_id) ++images;
      }
    std::vector<int64_t> t_pos, h_pos, w_pos;
    auto next_start = [&]() -> int64_t {
      return t_pos.empty() ? 0
                           : std::max({*std::max_element(t_pos.begin(), t_pos.end()),
                                       *std::max_element(h_pos.begin(), h_pos.end()),
                                       *std::max_element(w_pos.begin(), w_pos.end())}) + 1;
    };
    auto text = [&](int64_t count) {
      const int64_t s = next_start();
      for (int64_t i = 0; i < count; ++i) {
        t_pos.push_back(s + i);
        h_pos.push_back(s + i);
        w_pos.push_back(s + i);
      }
    };
    int64_t st = 0;
    for (int64_t k = 0; k < images; ++k) {
      const int64_t ed = std::find(tok.begin() + st, tok.end(), cfg.image_token_id) - tok.begin();
      if (image_index >= grids.size())
        throw Error("more images in the prompt than grids", "qwen2_5_vl_rope_index",
                    std::to_string(grids.size()), "at least " + std::to_string(image_index + 1));
      const Grid g = grids[image_index++];
      const int64_t lt = g.t, lh = g.h / m, lw = g.w / m;
      const int64_t s = next_start() + (ed - st);
      text(ed - st);
      // Images: second_per_grid_t = 0, so every frame has temporal position s.
      for (int64_t t = 0; t < lt; ++t)
        for (int64_t y = 0; y < lh; ++y)
          for (int64_t x = 0; x < lw; ++x) {
            t_pos.push_back(s);
            h_pos.push_back(s + y);
            w_pos.push_back(s + x);
          }
      st = ed + lt * lh * lw;
      if (st > n)
        throw Error("image tokens run past the end of the prompt", "qwen2_5_vl_rope_index",
                    std::to_string(lt * lh * lw) + " tokens per image", std::to_string(n - ed) + " left");
    }
    if (st < n) text(n - st);
    for (int64_t i = 0; i < n; ++i) {
      P[0][b][where[i]] = t_pos[i];
      P[1][b][where[i]] = h_pos[i];
      P[2][b][where[i]] = w_pos[i];
    }
    deltas[b][0] = (n ? next_start() : 0) - L;  // max + 1 - padded length
  }
  return {pos, deltas};
}

// --- The model --------------------------------------------------------------------------------

Qwen2_5_VL Qwen2_5_VL::load(const std::string& folder, const RuntimeOptions& rt) {
  auto store = WeightStore::open(folder, rt);
  Qwen2_5_VL m = load(folder, *store, rt);
  store->finish();
  return m;
}

Qwen2_5_VL Qwen2_5_VL::load(const std::string& folder, WeightStore& store_ref, const RuntimeOptions& rt) {
  WeightStore* store = &store_ref;
  Qwen2_5_VL m;
  m.rt_ = rt;
  m.cfg_ = Qwen2_5_VLConfig::from_json(omniflux::Config::load(folder));
  const auto pre = std::filesystem::path(folder) / "preprocessor_config.json";
  if (std::filesystem::is_directory(folder) && std::filesystem::exists(pre)) m.pre_ = Qwen2_5_VLPreprocessorConfig::load(pre.string());
  // The processor cuts the patches the vision tower embeds: their sizes must agree.
  const Qwen2_5_VLVisionConfig& vc = m.cfg_.vision;
  for (auto [field, p, v] : {std::tuple<const char*, int64_t, int64_t>{"patch_size", m.pre_.patch_size, vc.patch_size},
                             {"merge_size", m.pre_.merge_size, vc.spatial_merge_size},
                             {"temporal_patch_size", m.pre_.temporal_patch_size, vc.temporal_patch_size}})
    if (p != v)
      throw Error("the image processor and the vision tower disagree", pre.string() + ": " + field,
                  std::to_string(v) + " (config.json vision_config)", std::to_string(p));
  const Qwen2Config& c = m.cfg_.text;
  // The LM splits over the tensor group; the vision tower stays whole on every rank.
  qwen2::check_tensor_parallel(c, rt, (std::filesystem::path(folder) / "config.json").string());
  // Hub layout (<= 4.51): visual.*, model.*; 4.52+: model.visual.*, model.language_model.*.
  const bool new_layout = store->contains("model.language_model.embed_tokens.weight");
  const WeightView lmw = store->root().sub(new_layout ? "model.language_model" : "model");
  m.embed_tokens_ = lmw.get("embed_tokens.weight", {c.vocab_size, c.hidden_size});
  m.layers_ = qwen2::DecoderStack::load(lmw.sub("layers"), c, rt);
  m.norm_ = lmw.get("norm.weight", {c.hidden_size});
  if (c.tie_word_embeddings) {
    m.lm_head_ = nn::cpu_gemv_layout(m.embed_tokens_);  // on the CPU a transposed copy (decode speed)
    store->ignore_prefix("lm_head.");
  } else {
    m.lm_head_ = nn::cpu_gemv_layout(store->root().get("lm_head.weight", {c.vocab_size, c.hidden_size}));
    store->drop_pages("lm_head.");  // copied by the layout change on the CPU
  }
  m.visual_ = Qwen2_5_VLVisionTower::load(store->root().sub(new_layout ? "model.visual" : "visual"), m.cfg_.vision);
  m.inv_freq_ = nn::rope_inv_freq(c.head_dim, c.rope_theta).to(rt.torch_device());
  if (std::filesystem::is_directory(folder) && std::filesystem::exists(std::filesystem::path(folder) / "tokenizer.json")) {
    text::check_tokenizer_folder(folder, rt.allow_outside_paths);
    m.set_tokenizer(text::load_tokenizer(folder));
  }
  return m;
}

void Qwen2_5_VL::set_tokenizer(std::shared_ptr<const text::Tokenizer> tok) {
  if (tok) {
    const int64_t pad = tok->require_token_id(
        "<|image_pad|>", "Qwen2_5_VL::set_tokenizer (the config's image_token_id " + std::to_string(cfg_.image_token_id) + ")");
    if (pad != cfg_.image_token_id)
      throw Error("the tokenizer's <|image_pad|> is not the config's image_token_id", "Qwen2_5_VL::set_tokenizer",
                  std::to_string(cfg_.image_token_id), std::to_string(pad));
    // Every id the tokenizer can produce must index the embedding table.
    if (tok->vocab_size() > cfg_.text.vocab_size)
      throw Error("the tokenizer has ids beyond the model's vocabulary", "Qwen2_5_VL::set_tokenizer",
                  "at most vocab_size = " + std::to_string(cfg_.text.vocab_size) + " ids", std::to_string(tok->vocab_size()));
  }
  tokenizer_ = std::move(tok);
}

Qwen2_5_VL::Prompt Qwen2_5_VL::build_prompt(const std::vector<Image>& images, const std::string& question) const {
  if (!tokenizer_) throw Error("no tokenizer: the model folder has no tokenizer.json and none was set", "Qwen2_5_VL::build_prompt");
  text::ChatMessage user{"user", {}};
  for (size_t i = 0; i < images.size(); ++i) user.content.push_back(text::ChatContent::image());
  user.content.push_back(text::ChatContent::make_text(question));
  std::vector<text::TextSpan> user_text;
  const std::string chat = text::render_qwen2_5_vl({user}, {}, &user_text);
  std::vector<int64_t> ids = text::encode_prompt(*tokenizer_, chat, user_text, special_tokens_);
  Prompt p;
  std::vector<int64_t> counts;
  if (!images.empty()) {
    p.pixels = qwen2_5_vl_preprocess(images, pre_);
    const int64_t unit = cfg_.vision.spatial_merge_size * cfg_.vision.spatial_merge_size;
    for (int64_t i = 0; i < p.pixels.grid_thw.size(0); ++i) counts.push_back(p.pixels.grid_thw[i].prod().item<int64_t>() / unit);
  }
  // Also without images: a parsed <|image_pad|> in the question is an Error here, not a mismatch later.
  ids = text::expand_image_pads(ids, cfg_.image_token_id, counts);
  p.ids = at::tensor(ids, at::kLong).unsqueeze(0);
  return p;
}

std::string Qwen2_5_VL::answer(const std::vector<Image>& images, const std::string& question,
                               const AnswerOptions& opt) const {
  Prompt p = build_prompt(images, question);
  check_context_length(p.ids.size(1), opt.max_new_tokens, cfg_.text.max_position_embeddings, "Qwen2.5-VL answer");
  sampling::TokenLoopOptions g;
  g.max_new_tokens = opt.max_new_tokens;
  g.sampling = opt.sampling;
  g.eos_token_ids = {cfg_.eos_token_id};
  if (auto eot = tokenizer_->token_to_id("<|endoftext|>")) g.eos_token_ids.push_back(*eot);
  g.pad_token_id = g.eos_token_ids[0];
  at::Tensor out = generate(p.ids, p.pixels.pixel_values, p.pixels.grid_thw, g).cpu();
  std::vector<int64_t> ids;
  for (int64_t i = 0; i < out.size(1); ++i) {
    const int64_t id = out[0][i].item<int64_t>();
    if (std::find(g.eos_token_ids.begin(), g.eos_token_ids.end(), id) != g.eos_token_ids.end()) break;
    ids.push_back(id);
  }
  return tokenizer_->decode(ids, /*skip_special_tokens=*/true);
}

nn::KVCache Qwen2_5_VL::new_cache(int64_t batch, int64_t capacity) const {
  const Qwen2Config& c = cfg_.text;
  const int64_t kv_heads = qwen2::TensorSplit::of(c, rt_, "Qwen2_5_VL::new_cache").kv_heads;
  return nn::KVCache(c.num_hidden_layers, batch, kv_heads, capacity, c.head_dim,
                     at::TensorOptions().dtype(rt_.compute_dtype()).device(rt_.torch_device()));
}

namespace {

// The LM layers over x, the step begun with `attn`, and the final norm.
at::Tensor run(const qwen2::DecoderStack& layers, const at::Tensor& norm, double eps, const at::Tensor& x_in,
               const at::Tensor& cos, const at::Tensor& sin, nn::KVCache& cache, const nn::AttentionOptions& attn) {
  at::Tensor x = x_in;
  layers.layers.run([&](const qwen2::DecoderLayer& layer, int64_t i) {
    x = layer.forward(x, cos, sin, cache, i, attn);
    if (tapping()) tap("qwen2_5_vl.lm_layer_output", x);
  });
  cache.end_step();
  return nn::rms_norm(x, norm, eps);
}

}  // namespace

at::Tensor Qwen2_5_VL::prefill(const at::Tensor& ids, const at::Tensor& pixel_values, const at::Tensor& grid_thw,
                               nn::KVCache& cache, const at::Tensor& attention_mask, int64_t logits_to_keep) const {
  at::Tensor h = prefill_hidden(ids, pixel_values, grid_thw, cache, attention_mask);
  const int64_t S = h.size(1);
  if (logits_to_keep > 0 && logits_to_keep < S) h = h.slice(1, S - logits_to_keep);
  return nn::linear(h, lm_head_);
}

at::Tensor Qwen2_5_VL::logits(const at::Tensor& hidden) const { return nn::linear(hidden, lm_head_); }

at::Tensor Qwen2_5_VL::prefill_hidden(const at::Tensor& ids, const at::Tensor& pixel_values, const at::Tensor& grid_thw,
                                      nn::KVCache& cache, const at::Tensor& attention_mask) const {
  check_token_ids(ids, cfg_.text.vocab_size, "Qwen2_5_VL::prefill");
  if (ids.size(0) != cache.batch() || cache.length() != 0)
    throw Error("prefill needs an empty cache of the prompt's batch size", "Qwen2_5_VL::prefill",
                "batch " + std::to_string(cache.batch()) + ", length 0",
                "batch " + std::to_string(ids.size(0)) + ", length " + std::to_string(cache.length()));
  const auto dev = embed_tokens_.device();
  at::Tensor dids = ids.to(dev, at::kLong);
  at::Tensor x = at::embedding(embed_tokens_, dids);
  at::Tensor is_image = dids.eq(cfg_.image_token_id);
  // Counted on the host ids (no device read; the meta-device dry runs have no values there).
  const int64_t n_image_tokens = ids.to(at::kCPU).eq(cfg_.image_token_id).sum().item<int64_t>();
  if (pixel_values.defined()) {
    at::Tensor feats = visual_.forward(pixel_values, grid_thw);
    if (feats.size(0) != n_image_tokens)
      throw Error("image tokens and image features do not match", "Qwen2_5_VL::prefill",
                  std::to_string(feats.size(0)) + " <|image_pad|> tokens", std::to_string(n_image_tokens));
    // Rows in order of appearance over the flattened [B, L] (masked_scatter).
    x = x.masked_scatter(is_image.unsqueeze(-1).expand_as(x), feats.to(x.scalar_type()));
  } else if (n_image_tokens > 0) {
    throw Error("the prompt has image tokens but no pixel values were given", "Qwen2_5_VL::prefill");
  }
  Qwen2_5_VLRopeIndex ri = qwen2_5_vl_rope_index(ids, pixel_values.defined() ? grid_thw : at::Tensor(), cfg_, attention_mask);
  if (tapping()) {
    tap("qwen2_5_vl.position_ids", ri.position_ids);
    tap("qwen2_5_vl.rope_deltas", ri.rope_deltas);
  }
  nn::AttentionOptions attn = cache.begin_step(ids.size(1), attention_mask);
  cache.set_position_delta(ri.rope_deltas);  // decode positions: sequence index + rope_delta
  auto [cos, sin] = nn::mrope_cos_sin(ri.position_ids.to(dev), inv_freq_, cfg_.mrope_section);
  return run(*layers_, norm_, cfg_.text.rms_norm_eps, x, cos, sin, cache, attn);
}

at::Tensor Qwen2_5_VL::decode_one(const at::Tensor& ids, nn::KVCache& cache) const {
  if (ids.dim() != 1 || ids.size(0) != cache.batch())
    throw Error("decode_one takes one token per row", "Qwen2_5_VL::decode_one",
                "[" + std::to_string(cache.batch()) + "]", shape_str(ids.sizes().vec()));
  nn::AttentionOptions attn = cache.begin_step(1);
  // The three M-RoPE rows are equal after the prompt, which is plain 1-D RoPE.
  auto [cos, sin] = nn::rope_cos_sin(cache.positions(), inv_freq_);
  at::Tensor x = at::embedding(embed_tokens_, ids.to(embed_tokens_.device()).unsqueeze(1));
  return nn::linear(run(*layers_, norm_, cfg_.text.rms_norm_eps, x, cos, sin, cache, attn), lm_head_).squeeze(1);
}

at::Tensor Qwen2_5_VL::generate(const at::Tensor& ids, const at::Tensor& pixel_values, const at::Tensor& grid_thw,
                                sampling::TokenLoopOptions opt) const {
  if (opt.eos_token_ids.empty()) opt.eos_token_ids = {cfg_.eos_token_id};
  check_context_length(ids.size(1), opt.max_new_tokens, cfg_.text.max_position_embeddings, "Qwen2.5-VL generate");
  nn::KVCache cache = new_cache(ids.size(0), ids.size(1) + opt.max_new_tokens);
  at::Tensor first = prefill(ids, pixel_values, grid_thw, cache).squeeze(1);
  check_finite(first, "Qwen2.5-VL prefill logits");
  return sampling::generate(first, [&](const at::Tensor& next) { return decode_one(next, cache); }, opt,
                            ids.to(first.device(), at::kLong), sampling::decode_graph_cache(cache, rt_))
      .tokens;
}

}  // namespace omniflux
