// FLUX.1 transformer, after diffusers v0.31 transformer_flux.py (FluxTransformer2DModel,
// FluxTransformerBlock, FluxSingleTransformerBlock, FluxAttnProcessor2_0) and the embeddings and
// norms it uses (CombinedTimestepGuidanceTextProjEmbeddings, AdaLayerNormZero[Single],
// AdaLayerNormContinuous, FluxPosEmbed).
#include "omniflux/models/flux_dit.h"

#include <ATen/ATen.h>

#include "omniflux/distributed.h"
#include "omniflux/error.h"
#include "nn/attention.h"
#include "nn/block_stack.h"
#include "nn/debug.h"
#include "nn/layers.h"
#include "nn/ops.h"
#include "nn/rotary.h"
#include "nn/timestep.h"

namespace omniflux {

FluxDiTConfig FluxDiTConfig::from_config(const Config& c) {
  FluxDiTConfig f;
  f.patch_size = c.get_int("patch_size", f.patch_size, 1, 1);  // the pipeline packs 2x2 itself
  f.in_channels = c.get_size("in_channels", f.in_channels);
  f.out_channels = c.get_size("out_channels", f.in_channels);
  f.num_layers = c.get_int("num_layers", f.num_layers, 0, 4096);
  f.num_single_layers = c.get_int("num_single_layers", f.num_single_layers, 0, 4096);
  f.attention_head_dim = c.get_int("attention_head_dim", f.attention_head_dim, 2, 4096);
  f.num_attention_heads = c.get_int("num_attention_heads", f.num_attention_heads, 1, 4096);
  f.joint_attention_dim = c.get_size("joint_attention_dim", f.joint_attention_dim);
  f.pooled_projection_dim = c.get_size("pooled_projection_dim", f.pooled_projection_dim);
  f.guidance_embeds = c.get_bool("guidance_embeds", f.guidance_embeds);
  f.axes_dims_rope = c.get_int_list("axes_dims_rope", f.axes_dims_rope, 0, 4096);
  int64_t rope_sum = 0;
  bool even = true;
  for (int64_t d : f.axes_dims_rope) rope_sum += d, even = even && d % 2 == 0;
  c.check(f.axes_dims_rope.size() == 3 && even && rope_sum == f.attention_head_dim, "axes_dims_rope",
          "3 even sizes summing to attention_head_dim " + std::to_string(f.attention_head_dim), shape_str(f.axes_dims_rope));
  c.check(f.in_channels % 4 == 0, "in_channels", "a multiple of 4 (2x2 packed latents)", std::to_string(f.in_channels));
  return f;
}

namespace {

// TimestepEmbedding and PixArtAlphaTextProjection(act "silu"): linear_2(silu(linear_1(x))).
struct MlpEmbedder {
  nn::Linear linear_1, linear_2;
  MlpEmbedder(const WeightView& w, int64_t in, int64_t out)
      : linear_1(nn::Linear::load(w, "linear_1", in, out)), linear_2(nn::Linear::load(w, "linear_2", out, out)) {}
  at::Tensor operator()(const at::Tensor& x) const { return linear_2(nn::silu(linear_1(x))); }
};

// time_text_embed: CombinedTimestep[Guidance]TextProjEmbeddings.
struct TimeTextEmbed {
  MlpEmbedder timestep_embedder;
  std::unique_ptr<MlpEmbedder> guidance_embedder;
  MlpEmbedder text_embedder;
  TimeTextEmbed(const WeightView& w, const FluxDiTConfig& c)
      : timestep_embedder(w.sub("timestep_embedder"), 256, c.inner_dim()),
        text_embedder(w.sub("text_embedder"), c.pooled_projection_dim, c.inner_dim()) {
    if (c.guidance_embeds) guidance_embedder = std::make_unique<MlpEmbedder>(w.sub("guidance_embedder"), 256, c.inner_dim());
  }
  // t, g: already x1000. Timesteps(256, flip_sin_to_cos=True, downscale_freq_shift=0).
  at::Tensor operator()(const at::Tensor& t, const at::Tensor& g, const at::Tensor& pooled) const {
    at::Tensor temb = timestep_embedder(nn::timestep_embedding(t, 256, true, 0.0).to(pooled.scalar_type()));
    if (guidance_embedder) temb = temb + (*guidance_embedder)(nn::timestep_embedding(g, 256, true, 0.0).to(pooled.scalar_type()));
    return temb + text_embedder(pooled);
  }
};

// LayerNorm without affine, eps 1e-6, then x * (1 + scale) + shift; mods are [B, D].
at::Tensor modulate(const at::Tensor& x, const at::Tensor& shift, const at::Tensor& scale) {
  return nn::layer_norm(x, {}, {}, 1e-6) * (1 + scale.unsqueeze(1)) + shift.unsqueeze(1);
}

// [B, L, H*D] -> [B, H, L, D]
at::Tensor heads(const at::Tensor& x, int64_t h) { return x.unflatten(-1, {h, -1}).transpose(1, 2); }
// [B, H, L, D] -> [B, L, H*D]
at::Tensor merge_heads(const at::Tensor& x) { return x.transpose(1, 2).flatten(2); }

struct Rope {
  at::Tensor cos, sin;  // [L, head_dim] float32
};

// q, k, v projections with per-head RMSNorm on q and k (eps 1e-6), fused into one matmul at load
// (the single block also fuses proj_mlp, as BFL's linear1). Same math as separate projections.
struct QkvProj {
  nn::Linear fused;         // [3 dim (+ extra), dim]
  int64_t dim, extra = 0;
  at::Tensor norm_q, norm_k;
  QkvProj(const WeightView& w, int64_t dim_, int64_t head_dim, const char* q_name, const char* k_name,
          const char* v_name, const char* nq, const char* nk, const WeightView* extra_w = nullptr,
          const char* extra_name = nullptr, int64_t extra_dim = 0)
      : dim(dim_), norm_q(w.get(std::string(nq) + ".weight", {head_dim})), norm_k(w.get(std::string(nk) + ".weight", {head_dim})) {
    std::vector<nn::Linear> parts = {nn::Linear::load(w, q_name, dim, dim), nn::Linear::load(w, k_name, dim, dim),
                                     nn::Linear::load(w, v_name, dim, dim)};
    if (extra_w) {
      parts.push_back(nn::Linear::load(*extra_w, extra_name, dim, extra_dim));
      extra = extra_dim;
    }
    fused = nn::Linear::fuse(parts);
  }
  template <class F>
  void for_each_tensor(F&& f) {
    fused.for_each_tensor(f);
    f(norm_q);
    f(norm_k);
  }
  // x [B, L, dim] -> q, k, v [B, H, L, D], and the extra projection [B, L, extra] (undefined if none)
  std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> operator()(const at::Tensor& x, int64_t h) const {
    at::Tensor y = fused(x);
    at::Tensor q = nn::rms_norm(heads(y.slice(-1, 0, dim), h), norm_q, 1e-6);
    at::Tensor k = nn::rms_norm(heads(y.slice(-1, dim, 2 * dim), h), norm_k, 1e-6);
    at::Tensor v = heads(y.slice(-1, 2 * dim, 3 * dim), h);
    return {q, k, v, extra ? y.slice(-1, 3 * dim) : at::Tensor()};
  }
};

// The sequence split of one forward: this rank's slice of the joint sequence and every rank's length.
struct SeqSplit {
  const ProcessGroup* group = nullptr;
  std::vector<int64_t> lens;
};

at::Tensor rope_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const Rope& rope,
                          const SeqSplit& split) {
  at::Tensor qr = nn::apply_rope_interleaved(q, rope.cos, rope.sin), kr = nn::apply_rope_interleaved(k, rope.cos, rope.sin);
  if (split.group) return nn::ulysses_attention(*split.group, split.lens, qr, kr, v);
  return nn::attention(qr, kr, v);
}

// FeedForward(dim, dim_out, activation_fn="gelu-approximate"): net.0.proj, GELU(tanh), net.2.
struct FeedForward {
  nn::Linear proj, out;
  FeedForward(const WeightView& w, int64_t dim, int64_t hidden)
      : proj(nn::Linear::load(w, "net.0.proj", dim, hidden)), out(nn::Linear::load(w, "net.2", hidden, dim)) {}
  at::Tensor operator()(const at::Tensor& x) const { return out(nn::gelu_tanh(proj(x))); }
  template <class F>
  void for_each_tensor(F&& f) {
    proj.for_each_tensor(f);
    out.for_each_tensor(f);
  }
};

// transformer_blocks.N: separate weights per stream, one joint attention (text first).
struct DoubleBlock {
  int64_t h;
  nn::Linear norm1, norm1_context;  // AdaLayerNormZero: shift, scale, gate (msa), shift, scale, gate (mlp)
  QkvProj img_qkv, txt_qkv;
  nn::Linear to_out, to_add_out;
  FeedForward ff, ff_context;

  DoubleBlock(const WeightView& w, const FluxDiTConfig& c)
      : h(c.num_attention_heads),
        norm1(nn::Linear::load(w, "norm1.linear", c.inner_dim(), 6 * c.inner_dim())),
        norm1_context(nn::Linear::load(w, "norm1_context.linear", c.inner_dim(), 6 * c.inner_dim())),
        img_qkv(w.sub("attn"), c.inner_dim(), c.attention_head_dim, "to_q", "to_k", "to_v", "norm_q", "norm_k"),
        txt_qkv(w.sub("attn"), c.inner_dim(), c.attention_head_dim, "add_q_proj", "add_k_proj", "add_v_proj",
                "norm_added_q", "norm_added_k"),
        to_out(nn::Linear::load(w, "attn.to_out.0", c.inner_dim(), c.inner_dim())),
        to_add_out(nn::Linear::load(w, "attn.to_add_out", c.inner_dim(), c.inner_dim())),
        ff(w.sub("ff"), c.inner_dim(), c.mlp_ratio * c.inner_dim()),
        ff_context(w.sub("ff_context"), c.inner_dim(), c.mlp_ratio * c.inner_dim()) {}

  template <class F>
  void for_each_tensor(F&& f) {
    norm1.for_each_tensor(f);
    norm1_context.for_each_tensor(f);
    img_qkv.for_each_tensor(f);
    txt_qkv.for_each_tensor(f);
    to_out.for_each_tensor(f);
    to_add_out.for_each_tensor(f);
    ff.for_each_tensor(f);
    ff_context.for_each_tensor(f);
  }

  // x [B, N, D] image, c [B, T, D] text, silu_temb [B, D]; returns the new (x, c).
  std::pair<at::Tensor, at::Tensor> operator()(const at::Tensor& x, const at::Tensor& c, const at::Tensor& silu_temb,
                                               const Rope& rope, const SeqSplit& split) const {
    auto m = norm1(silu_temb).chunk(6, 1);
    auto mc = norm1_context(silu_temb).chunk(6, 1);
    auto [qi, ki, vi, unused_i] = img_qkv(modulate(x, m[0], m[1]), h);
    auto [qt, kt, vt, unused_t] = txt_qkv(modulate(c, mc[0], mc[1]), h);
    const int64_t t = c.size(1);
    // joint sequence [B, H, T + N, D], text first
    at::Tensor o = merge_heads(rope_attention(at::cat({qt, qi}, 2), at::cat({kt, ki}, 2), at::cat({vt, vi}, 2), rope, split));
    at::Tensor xo = x + m[2].unsqueeze(1) * to_out(o.slice(1, t));
    xo = xo + m[5].unsqueeze(1) * ff(modulate(xo, m[3], m[4]));
    at::Tensor co = c + mc[2].unsqueeze(1) * to_add_out(o.slice(1, 0, t));
    co = co + mc[5].unsqueeze(1) * ff_context(modulate(co, mc[3], mc[4]));
    return {xo, co};
  }
};

// single_transformer_blocks.N: one set of weights for the joint sequence, attention and MLP in
// parallel, no attention output projection.
struct SingleBlock {
  int64_t h;
  nn::Linear norm;  // AdaLayerNormZeroSingle: shift, scale, gate
  QkvProj qkv_mlp;  // attn.to_q/to_k/to_v and proj_mlp in one matmul
  nn::Linear proj_out;

  SingleBlock(const WeightView& w, const FluxDiTConfig& c)
      : h(c.num_attention_heads),
        norm(nn::Linear::load(w, "norm.linear", c.inner_dim(), 3 * c.inner_dim())),
        qkv_mlp(w.sub("attn"), c.inner_dim(), c.attention_head_dim, "to_q", "to_k", "to_v", "norm_q", "norm_k", &w,
                "proj_mlp", c.mlp_ratio * c.inner_dim()),
        proj_out(nn::Linear::load(w, "proj_out", (1 + c.mlp_ratio) * c.inner_dim(), c.inner_dim())) {}

  template <class F>
  void for_each_tensor(F&& f) {
    norm.for_each_tensor(f);
    qkv_mlp.for_each_tensor(f);
    proj_out.for_each_tensor(f);
  }

  at::Tensor operator()(const at::Tensor& x, const at::Tensor& silu_temb, const Rope& rope, const SeqSplit& split) const {
    auto m = norm(silu_temb).chunk(3, 1);
    auto [q, k, v, mlp] = qkv_mlp(modulate(x, m[0], m[1]), h);
    at::Tensor attn = merge_heads(rope_attention(q, k, v, rope, split));
    // proj_out consumes cat(attention, mlp) along channels
    return x + m[2].unsqueeze(1) * proj_out(at::cat({attn, nn::gelu_tanh(mlp)}, -1));
  }
};

void check_shape(const at::Tensor& t, const std::vector<int64_t>& want, const char* name) {
  bool ok = t.defined() && t.dim() == static_cast<int64_t>(want.size());
  for (size_t i = 0; ok && i < want.size(); ++i) ok = want[i] < 0 || t.size(static_cast<int64_t>(i)) == want[i];
  if (!ok)
    throw Error("input has the wrong shape", std::string("FluxTransformer.forward: ") + name, shape_str(want),
                t.defined() ? shape_str(t.sizes().vec()) : "undefined");
}

}  // namespace

struct FluxTransformer::Impl {
  FluxDiTConfig cfg;
  c10::ScalarType dtype;
  nn::Linear x_embedder, context_embedder;
  TimeTextEmbed time_text_embed;
  nn::BlockStack<DoubleBlock> double_blocks;
  nn::BlockStack<SingleBlock> single_blocks;
  nn::Linear norm_out, proj_out;
  std::shared_ptr<const Parallel> parallel;  // keeps the sequence group alive

  Impl(const FluxDiTConfig& c, const WeightView& w)
      : cfg(c),
        x_embedder(nn::Linear::load(w, "x_embedder", c.in_channels, c.inner_dim())),
        context_embedder(nn::Linear::load(w, "context_embedder", c.joint_attention_dim, c.inner_dim())),
        time_text_embed(w.sub("time_text_embed"), c),
        norm_out(nn::Linear::load(w, "norm_out.linear", c.inner_dim(), 2 * c.inner_dim())),
        proj_out(nn::Linear::load(w, "proj_out", c.inner_dim(), c.out_channels)) {
    dtype = w.store().runtime().compute_dtype();
    const RuntimeOptions& rt = w.store().runtime();
    parallel = rt.parallel;
    double_blocks = nn::BlockStack<DoubleBlock>::load(
        w.sub("transformer_blocks"), c.num_layers, [c](const WeightView& b) { return DoubleBlock(b, c); }, rt);
    single_blocks = nn::BlockStack<SingleBlock>::load(
        w.sub("single_transformer_blocks"), c.num_single_layers, [c](const WeightView& b) { return SingleBlock(b, c); }, rt);
  }
};

void check_flux_dit_parallel(const FluxDiTConfig& cfg, const RuntimeOptions& rt, const std::string& where) {
  const ProcessGroup* g = rt.parallel ? rt.parallel->sequence_group() : nullptr;
  if (g && cfg.num_attention_heads % g->size())
    throw Error("sequence parallelism splits the DiT's attention heads evenly over its ranks", where,
                "num_attention_heads (" + std::to_string(cfg.num_attention_heads) + ") divisible by the sequence-parallel ranks",
                std::to_string(g->size()) + " ranks");
}

FluxTransformer::FluxTransformer(const FluxDiTConfig& cfg, const WeightView& w)
    : impl_((check_flux_dit_parallel(cfg, w.store().runtime(), "FluxTransformer"), std::make_shared<Impl>(cfg, w))) {}

FluxTransformer FluxTransformer::load(const std::string& folder, const RuntimeOptions& rt) {
  FluxDiTConfig cfg = FluxDiTConfig::from_config(Config::load(folder));
  auto store = WeightStore::open(folder, rt);
  FluxTransformer model(cfg, store->root());
  store->finish();
  return model;
}

const FluxDiTConfig& FluxTransformer::config() const { return impl_->cfg; }
c10::ScalarType FluxTransformer::dtype() const { return impl_->dtype; }

at::Tensor FluxTransformer::forward(const FluxDiTInputs& in) const {
  const Impl& m = *impl_;
  const FluxDiTConfig& c = m.cfg;
  check_shape(in.hidden_states, {-1, -1, c.in_channels}, "hidden_states");
  const int64_t b = in.hidden_states.size(0), n = in.hidden_states.size(1);
  check_shape(in.encoder_hidden_states, {b, -1, c.joint_attention_dim}, "encoder_hidden_states");
  const int64_t t = in.encoder_hidden_states.size(1);
  const int64_t axes = static_cast<int64_t>(c.axes_dims_rope.size());
  check_shape(in.pooled_projections, {b, c.pooled_projection_dim}, "pooled_projections");
  check_shape(in.timestep, {b}, "timestep");
  check_shape(in.img_ids, {n, axes}, "img_ids");
  check_shape(in.txt_ids, {t, axes}, "txt_ids");
  if (c.guidance_embeds) check_shape(in.guidance, {b}, "guidance (the model has guidance_embeds)");
  const auto dev = m.x_embedder.weight.device();
  auto act = [&](const at::Tensor& x) { return x.to(dev, m.dtype); };

  at::Tensor hidden = act(in.hidden_states), img_ids = in.img_ids;
  if (in.ref_hidden_states.defined()) {
    check_shape(in.ref_hidden_states, {b, -1, c.in_channels}, "ref_hidden_states");
    check_shape(in.ref_img_ids, {in.ref_hidden_states.size(1), axes}, "ref_img_ids");
    hidden = at::cat({hidden, act(in.ref_hidden_states)}, 1);
    img_ids = at::cat({img_ids.to(at::kFloat), in.ref_img_ids.to(at::kFloat)}, 0);
  }

  at::Tensor x = m.x_embedder(hidden);
  if (in.image_embeds_add.defined()) {
    check_shape(in.image_embeds_add, {b, n, c.inner_dim()}, "image_embeds_add");
    // Only the N generated image tokens are conditioned, not the appended reference tokens.
    at::Tensor add = act(in.image_embeds_add);
    x = x.size(1) == n ? x + add : at::cat({x.slice(1, 0, n) + add, x.slice(1, n)}, 1);
  }
  // The x1000 happens in the model dtype (diffusers: timestep.to(hidden_states.dtype) * 1000).
  at::Tensor ts = in.timestep.to(dev, m.dtype) * 1000;
  at::Tensor gs = c.guidance_embeds ? in.guidance.to(dev, m.dtype) * 1000 : at::Tensor();
  at::Tensor temb = m.time_text_embed(ts, gs, act(in.pooled_projections));
  tap("flux.temb", temb);
  at::Tensor silu_temb = nn::silu(temb);
  at::Tensor ctx = m.context_embedder(act(in.encoder_hidden_states));

  // ids = cat(txt_ids, img_ids): text tokens first in the joint sequence.
  at::Tensor ids = at::cat({in.txt_ids.to(at::kFloat), img_ids.to(at::kFloat)}, 0).to(dev);
  auto [cos, sin] = nn::rope_axes_cos_sin(ids, c.axes_dims_rope, c.rope_theta);
  Rope rope{cos, sin};

  // Sequence parallelism: this rank keeps a contiguous slice of the text tokens and one of the
  // image tokens (reference tokens included), with their RoPE rows; the output is gathered back.
  SeqSplit split;
  split.group = m.parallel ? m.parallel->sequence_group() : nullptr;
  int64_t t_local = t;
  if (split.group) {
    const int64_t p = split.group->size(), r = split.group->rank(), n_all = x.size(1);
    const std::vector<int64_t> ts = split_sizes(t, p), is = split_sizes(n_all, p);
    int64_t t0 = 0, i0 = 0;
    for (int64_t j = 0; j < r; ++j) t0 += ts[j], i0 += is[j];
    for (int64_t j = 0; j < p; ++j) split.lens.push_back(ts[j] + is[j]);
    t_local = ts[r];
    ctx = ctx.slice(1, t0, t0 + ts[r]);
    x = x.slice(1, i0, i0 + is[r]);
    auto rows = [&](const at::Tensor& a) { return at::cat({a.slice(0, t0, t0 + ts[r]), a.slice(0, t + i0, t + i0 + is[r])}); };
    rope = Rope{rows(rope.cos), rows(rope.sin)};
  }

  m.double_blocks.run([&](const DoubleBlock& blk, int64_t) {
    std::tie(x, ctx) = blk(x, ctx, silu_temb, rope, split);
    tap("flux.double_block.img", x);
    tap("flux.double_block.txt", ctx);
  });
  at::Tensor h = at::cat({ctx, x}, 1);
  m.single_blocks.run([&](const SingleBlock& blk, int64_t) {
    h = blk(h, silu_temb, rope, split);
    tap("flux.single_block", h);
  });
  x = h.slice(1, t_local);
  // norm_out (AdaLayerNormContinuous): chunk order is scale, shift.
  auto mo = m.norm_out(silu_temb.to(x.scalar_type())).chunk(2, 1);
  x = modulate(x, mo[1], mo[0]);
  at::Tensor out = m.proj_out(x);
  if (split.group) out = split.group->all_gather(out, 1);
  if (in.ref_hidden_states.defined()) out = out.slice(1, 0, n);
  return out;
}

double flux_dit_flops(const FluxDiTConfig& c, int64_t n_img, int64_t n_txt, int64_t batch) {
  const double d = static_cast<double>(c.inner_dim()), f = static_cast<double>(c.mlp_ratio) * d;
  const double l = static_cast<double>(n_img + n_txt);
  // Both block kinds: projections 2L(4D^2 + 2DF) + attention 4L^2 D.
  const double block = 2.0 * l * (4.0 * d * d + 2.0 * d * f) + 4.0 * l * l * d;
  const double io = 2.0 * n_img * d * (c.in_channels + c.out_channels) + 2.0 * n_txt * d * c.joint_attention_dim;
  return batch * (static_cast<double>(c.num_layers + c.num_single_layers) * block + io);
}

}  // namespace omniflux
