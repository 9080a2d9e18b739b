// FLUX VAE, after diffusers v0.31 autoencoder_kl.py (AutoencoderKL), vae.py (Encoder, Decoder,
// DiagonalGaussianDistribution), unet_2d_blocks.py (DownEncoderBlock2D, UpDecoderBlock2D,
// UNetMidBlock2D), resnet.py (ResnetBlock2D), up/downsampling.py and AttnProcessor2_0.
#include "omniflux/models/flux_vae.h"

#include <algorithm>
#include <optional>

#include <ATen/ATen.h>

#include "omniflux/error.h"
#include "nn/attention.h"
#include "nn/debug.h"
#include "nn/layers.h"
#include "nn/ops.h"

namespace omniflux {

FluxVaeConfig FluxVaeConfig::from_config(const Config& c) {
  FluxVaeConfig f;
  f.in_channels = c.get_int("in_channels", f.in_channels, 1, 64);
  f.out_channels = c.get_int("out_channels", f.out_channels, 1, 64);
  f.latent_channels = c.get_int("latent_channels", f.latent_channels, 1, 4096);
  f.block_out_channels = c.get_int_list("block_out_channels", f.block_out_channels, 1, Config::kMaxSize);
  f.layers_per_block = c.get_int("layers_per_block", f.layers_per_block, 1, 64);
  f.norm_num_groups = c.get_int("norm_num_groups", f.norm_num_groups, 1, 4096);
  // latents / scaling_factor: a zero factor makes every latent Inf.
  f.scaling_factor = c.get_double("scaling_factor", f.scaling_factor, 1e-6, 1e6);
  f.shift_factor = c.get_double("shift_factor", f.shift_factor, -1e6, 1e6);
  f.use_quant_conv = c.get_bool("use_quant_conv", f.use_quant_conv);
  f.use_post_quant_conv = c.get_bool("use_post_quant_conv", f.use_post_quant_conv);
  f.mid_block_add_attention = c.get_bool("mid_block_add_attention", f.mid_block_add_attention);
  f.sample_size = c.get_int("sample_size", f.sample_size, 1, 1 << 16);
  c.check(!f.block_out_channels.empty() && f.block_out_channels.size() <= 8, "block_out_channels", "1 to 8 blocks",
          std::to_string(f.block_out_channels.size()));
  for (int64_t ch : f.block_out_channels)
    c.check(ch % f.norm_num_groups == 0, "block_out_channels",
            "multiples of norm_num_groups " + std::to_string(f.norm_num_groups), std::to_string(ch));
  if (c.get_string("act_fn", "silu") != "silu")
    throw Error("unsupported VAE activation", c.where("act_fn"), "silu", c.get_string("act_fn"));
  for (const char* key : {"down_block_types", "up_block_types"}) {
    if (!c.has(key)) continue;
    auto types = c.get_string_list(key);
    const std::string want = key[0] == 'd' ? "DownEncoderBlock2D" : "UpDecoderBlock2D";
    c.check(types.size() == f.block_out_channels.size(), key, std::to_string(f.block_out_channels.size()) +
            " block types (one per block_out_channels entry)", std::to_string(types.size()));
    for (const auto& t : types)
      if (t != want) throw Error("unsupported VAE block type", c.where(key), want, t);
  }
  return f;
}

namespace {

constexpr double kEps = 1e-6;  // resnet_eps of Encoder/Decoder blocks

// ResnetBlock2D without time embedding: (shortcut(x) + conv2(silu(norm2(conv1(silu(norm1(x))))))).
struct Resnet {
  nn::GroupNorm norm1, norm2;
  nn::Conv2d conv1, conv2;
  std::optional<nn::Conv2d> conv_shortcut;  // 1x1, when in != out
  Resnet(const WeightView& w, int64_t in, int64_t out, int64_t groups)
      : norm1(nn::GroupNorm::load(w, "norm1", in, groups, kEps)),
        norm2(nn::GroupNorm::load(w, "norm2", out, groups, kEps)),
        conv1(nn::Conv2d::load(w, "conv1", in, out, 3, 1, 1)),
        conv2(nn::Conv2d::load(w, "conv2", out, out, 3, 1, 1)) {
    if (in != out) conv_shortcut = nn::Conv2d::load(w, "conv_shortcut", in, out, 1);
  }
  at::Tensor operator()(const at::Tensor& x) const {
    at::Tensor h = conv1(nn::silu(norm1(x)));
    h = conv2(nn::silu(norm2(h)));
    return (conv_shortcut ? (*conv_shortcut)(x) : x) + h;
  }
};

// Mid-block Attention (heads = 1, head_dim = channels): GroupNorm, q/k/v, SDPA, to_out.0, residual.
struct MidAttention {
  nn::GroupNorm group_norm;
  nn::Linear to_q, to_k, to_v, to_out;
  MidAttention(const WeightView& w, int64_t ch, int64_t groups)
      : group_norm(nn::GroupNorm::load(w, "group_norm", ch, groups, kEps)),
        to_q(nn::Linear::load(w, "to_q", ch, ch)),
        to_k(nn::Linear::load(w, "to_k", ch, ch)),
        to_v(nn::Linear::load(w, "to_v", ch, ch)),
        to_out(nn::Linear::load(w, "to_out.0", ch, ch)) {}
  at::Tensor operator()(const at::Tensor& x) const {
    const int64_t b = x.size(0), c = x.size(1), h = x.size(2), wd = x.size(3);
    // [B, C, H, W] -> [B, HW, C]; GroupNorm runs on the [B, C, HW] view
    at::Tensor s = group_norm(x.reshape({b, c, h * wd})).transpose(1, 2);
    // one head: [B, 1, HW, C]
    at::Tensor o = nn::attention(to_q(s).unsqueeze(1), to_k(s).unsqueeze(1), to_v(s).unsqueeze(1)).squeeze(1);
    return to_out(o).transpose(1, 2).reshape({b, c, h, wd}) + x;
  }
};

struct MidBlock {
  std::vector<Resnet> resnets;
  std::optional<MidAttention> attn;
  MidBlock(const WeightView& w, int64_t ch, int64_t groups, bool add_attention) {
    resnets.emplace_back(w.sub("resnets").sub(0), ch, ch, groups);
    if (add_attention) attn.emplace(w.sub("attentions").sub(0), ch, groups);
    resnets.emplace_back(w.sub("resnets").sub(1), ch, ch, groups);
  }
  at::Tensor operator()(const at::Tensor& x) const {
    at::Tensor h = resnets[0](x);
    if (attn) h = (*attn)(h);
    return resnets[1](h);
  }
};

// DownEncoderBlock2D / UpDecoderBlock2D: resnets then an optional resampler.
struct Stage {
  std::vector<Resnet> resnets;
  std::optional<nn::Conv2d> resample;
  bool up = false;
  Stage(const WeightView& w, int64_t in, int64_t out, int64_t n, int64_t groups, bool add_resample, bool is_up)
      : up(is_up) {
    for (int64_t i = 0; i < n; ++i) resnets.emplace_back(w.sub("resnets").sub(i), i == 0 ? in : out, out, groups);
    if (add_resample)
      resample = is_up ? nn::Conv2d::load(w, "upsamplers.0.conv", out, out, 3, 1, 1)
                       : nn::Conv2d::load(w, "downsamplers.0.conv", out, out, 3, 2, 0);
  }
  at::Tensor operator()(at::Tensor h) const {
    for (const auto& r : resnets) h = r(h);
    if (!resample) return h;
    if (up) return (*resample)(at::upsample_nearest2d(h, {h.size(2) * 2, h.size(3) * 2}));
    // Downsample2D(padding=0): zero pad right and bottom by one, then stride-2 conv
    return (*resample)(at::constant_pad_nd(h, {0, 1, 0, 1}, 0));
  }
};

struct Encoder {
  nn::Conv2d conv_in, conv_out;
  std::vector<Stage> down_blocks;
  MidBlock mid;
  nn::GroupNorm conv_norm_out;
  Encoder(const WeightView& w, const FluxVaeConfig& c)
      : conv_in(nn::Conv2d::load(w, "conv_in", c.in_channels, c.block_out_channels[0], 3, 1, 1)),
        conv_out(nn::Conv2d::load(w, "conv_out", c.block_out_channels.back(), 2 * c.latent_channels, 3, 1, 1)),
        mid(w.sub("mid_block"), c.block_out_channels.back(), c.norm_num_groups, c.mid_block_add_attention),
        conv_norm_out(nn::GroupNorm::load(w, "conv_norm_out", c.block_out_channels.back(), c.norm_num_groups, kEps)) {
    const auto& ch = c.block_out_channels;
    for (size_t i = 0; i < ch.size(); ++i)
      down_blocks.emplace_back(w.sub("down_blocks").sub(static_cast<int64_t>(i)), i == 0 ? ch[0] : ch[i - 1], ch[i],
                               c.layers_per_block, c.norm_num_groups, i + 1 < ch.size(), false);
  }
  at::Tensor operator()(const at::Tensor& x) const {
    at::Tensor h = conv_in(x);
    for (const auto& b : down_blocks) h = b(h);
    h = mid(h);
    tap("vae.encoder.mid_block", h);
    return conv_out(nn::silu(conv_norm_out(h)));
  }
};

struct Decoder {
  nn::Conv2d conv_in, conv_out;
  MidBlock mid;
  std::vector<Stage> up_blocks;
  nn::GroupNorm conv_norm_out;
  Decoder(const WeightView& w, const FluxVaeConfig& c)
      : conv_in(nn::Conv2d::load(w, "conv_in", c.latent_channels, c.block_out_channels.back(), 3, 1, 1)),
        conv_out(nn::Conv2d::load(w, "conv_out", c.block_out_channels[0], c.out_channels, 3, 1, 1)),
        mid(w.sub("mid_block"), c.block_out_channels.back(), c.norm_num_groups, c.mid_block_add_attention),
        conv_norm_out(nn::GroupNorm::load(w, "conv_norm_out", c.block_out_channels[0], c.norm_num_groups, kEps)) {
    std::vector<int64_t> rev(c.block_out_channels.rbegin(), c.block_out_channels.rend());
    for (size_t i = 0; i < rev.size(); ++i)
      up_blocks.emplace_back(w.sub("up_blocks").sub(static_cast<int64_t>(i)), i == 0 ? rev[0] : rev[i - 1], rev[i],
                             c.layers_per_block + 1, c.norm_num_groups, i + 1 < rev.size(), true);
  }
  at::Tensor operator()(const at::Tensor& z) const {
    at::Tensor h = mid(conv_in(z));
    tap("vae.decoder.mid_block", h);
    for (const auto& b : up_blocks) {
      h = b(h);
      tap("vae.decoder.up_block", h);
    }
    return conv_out(nn::silu(conv_norm_out(h)));
  }
};

}  // namespace

struct FluxVae::Impl {
  FluxVaeConfig cfg;
  Encoder encoder;
  Decoder decoder;
  std::optional<nn::Conv2d> quant_conv, post_quant_conv;
  Impl(const FluxVaeConfig& c, const WeightView& w) : cfg(c), encoder(w.sub("encoder"), c), decoder(w.sub("decoder"), c) {
    if (c.use_quant_conv) quant_conv = nn::Conv2d::load(w, "quant_conv", 2 * c.latent_channels, 2 * c.latent_channels, 1);
    if (c.use_post_quant_conv) post_quant_conv = nn::Conv2d::load(w, "post_quant_conv", c.latent_channels, c.latent_channels, 1);
  }
  const at::Tensor& weight() const { return decoder.conv_in.weight; }
};

FluxVae::FluxVae(const FluxVaeConfig& cfg, const WeightView& w) : impl_(std::make_shared<Impl>(cfg, w)) {}

FluxVae FluxVae::load(const std::string& folder, const RuntimeOptions& rt) {
  FluxVaeConfig cfg = FluxVaeConfig::from_config(Config::load(folder));
  auto store = WeightStore::open(folder, rt);
  FluxVae vae(cfg, store->root());
  store->finish();
  return vae;
}

const FluxVaeConfig& FluxVae::config() const { return impl_->cfg; }
c10::ScalarType FluxVae::dtype() const { return impl_->weight().scalar_type(); }

at::Tensor FluxVae::decode(const at::Tensor& z) const {
  const Impl& m = *impl_;
  if (z.dim() != 4 || z.size(1) != m.cfg.latent_channels || z.size(2) < 1 || z.size(3) < 1)
    throw Error("latents have the wrong shape", "FluxVae.decode",
                "[B, " + std::to_string(m.cfg.latent_channels) + ", h, w]", shape_str(z.sizes().vec()));
  at::Tensor h = z.to(m.weight().device(), m.weight().scalar_type());
  if (m.post_quant_conv) h = (*m.post_quant_conv)(h);
  return m.decoder(h);
}

at::Tensor FluxVae::decode_tiled(const at::Tensor& z, const VaeTiling& tiling) const {
  const int64_t scale = impl_->cfg.downscale();
  const int64_t tile = tiling.tile > 0 ? tiling.tile : std::max<int64_t>(1, impl_->cfg.sample_size / scale);
  return tiled_decode(z, tile, tiling.overlap, scale, [this](const at::Tensor& t) { return decode(t); });
}

VaeLatentDist FluxVae::encode(const at::Tensor& image) const {
  const Impl& m = *impl_;
  const int64_t f = m.cfg.downscale();
  if (image.dim() != 4 || image.size(1) != m.cfg.in_channels || image.size(2) % f != 0 || image.size(3) % f != 0 ||
      image.size(2) == 0 || image.size(3) == 0)
    throw Error("image has the wrong shape", "FluxVae.encode",
                "[B, " + std::to_string(m.cfg.in_channels) + ", H, W] with H, W multiples of " + std::to_string(f),
                shape_str(image.sizes().vec()));
  at::Tensor moments = m.encoder(image.to(m.weight().device(), m.weight().scalar_type()));
  if (m.quant_conv) moments = (*m.quant_conv)(moments);
  auto parts = moments.chunk(2, 1);
  return {parts[0], at::clamp(parts[1], -30.0, 20.0)};
}

at::Tensor FluxVae::unscale_latents(const at::Tensor& latents) const {
  return latents / impl_->cfg.scaling_factor + impl_->cfg.shift_factor;
}
at::Tensor FluxVae::scale_latents(const at::Tensor& z) const {
  return (z - impl_->cfg.shift_factor) * impl_->cfg.scaling_factor;
}

at::Tensor tiled_decode(const at::Tensor& z, int64_t tile, double overlap, int64_t scale,
                        const std::function<at::Tensor(const at::Tensor&)>& decode) {
  if (z.dim() != 4) throw Error("latents must be 4-D", "tiled_decode", "[B, C, h, w]", shape_str(z.sizes().vec()));
  if (tile < 2 || overlap < 0 || overlap >= 1 || scale < 1)
    throw Error("invalid tiling", "tiled_decode", "tile >= 2, 0 <= overlap < 1",
                "tile " + std::to_string(tile) + ", overlap " + std::to_string(overlap));
  const int64_t h = z.size(2), w = z.size(3);
  if (h <= tile && w <= tile) return decode(z);
  // Tiles start every `step` latents; each overlaps the next by (tile - step) latents, i.e. by
  // `blend` pixels, which are cross-faded linearly (diffusers blend_v / blend_h).
  const int64_t step = std::max<int64_t>(1, static_cast<int64_t>(tile * (1.0 - overlap)));
  const int64_t blend = (tile - step) * scale;
  auto starts = [&](int64_t n) {
    std::vector<int64_t> s{0};
    while (s.back() + tile < n) s.push_back(s.back() + step);
    return s;
  };
  const auto rs = starts(h), cs = starts(w);
  std::vector<std::vector<at::Tensor>> tiles(rs.size());
  for (size_t i = 0; i < rs.size(); ++i)
    for (size_t j = 0; j < cs.size(); ++j)
      tiles[i].push_back(decode(z.slice(2, rs[i], std::min(h, rs[i] + tile)).slice(3, cs[j], std::min(w, cs[j] + tile)))
                             .clone());
  auto ramp = [&](const at::Tensor& like, int64_t n) {
    return at::arange(n, like.options().dtype(at::kFloat)).div(static_cast<double>(blend)).to(like.scalar_type());
  };
  std::vector<at::Tensor> rows;
  for (size_t i = 0; i < rs.size(); ++i) {
    std::vector<at::Tensor> row;
    for (size_t j = 0; j < cs.size(); ++j) {
      at::Tensor& t = tiles[i][j];
      if (i > 0 && blend > 0) {
        const at::Tensor& a = tiles[i - 1][j];
        const int64_t n = std::min({blend, a.size(2), t.size(2)});
        at::Tensor r = ramp(t, n).view({1, 1, n, 1});
        t.slice(2, 0, n).copy_(a.slice(2, a.size(2) - n) * (1 - r) + t.slice(2, 0, n) * r);
      }
      if (j > 0 && blend > 0) {
        const at::Tensor& a = tiles[i][j - 1];
        const int64_t n = std::min({blend, a.size(3), t.size(3)});
        at::Tensor r = ramp(t, n).view({1, 1, 1, n});
        t.slice(3, 0, n).copy_(a.slice(3, a.size(3) - n) * (1 - r) + t.slice(3, 0, n) * r);
      }
      // Every tile but the last keeps its first step*scale pixels; the next tile covers the rest.
      at::Tensor keep = t;
      if (i + 1 < rs.size()) keep = keep.slice(2, 0, step * scale);
      if (j + 1 < cs.size()) keep = keep.slice(3, 0, step * scale);
      row.push_back(keep);
    }
    rows.push_back(at::cat(row, 3));
  }
  return at::cat(rows, 2);
}

}  // namespace omniflux
