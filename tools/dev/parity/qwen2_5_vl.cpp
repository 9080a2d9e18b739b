// Parity case qwen2_5_vl: the image processor, the vision tower (window order, merger), the M-RoPE
// position ids, the prefill logits with image features in place of <|image_pad|>, and greedy decoding
// with rope_deltas.
#include <filesystem>

#include <ATen/ATen.h>

#include "omniflux/io/image_tensor.h"
#include "omniflux/models/qwen2_5_vl.h"
#include "nn/debug.h"
#include "omniflux/sampling/token_sampling.h"
#include "parity.h"
#include "sampling/decode_graph.h"

using omniflux::parity::ParityOutputs;
using namespace omniflux;

OMNIFLUX_PARITY_CASE(qwen2_5_vl) {
  ParityOutputs out;
  auto model = Qwen2_5_VL::load(std::filesystem::path(ctx.file("config")).parent_path().string(), ctx.rt);
  const auto& pre = model.preprocessor();

  // Image processor: raw uint8 images (any count) -> smart_resize + PIL bicubic -> normalised patches.
  std::vector<Image> images;
  for (const at::Tensor& raw : ctx.numbered_inputs("raw_image_")) images.push_back(image_from_tensor(raw));
  std::vector<at::Tensor> resized;
  auto px = qwen2_5_vl_preprocess(images, pre, &resized);
  for (size_t k = 0; k < resized.size(); ++k) out["resized_image_" + std::to_string(k)] = resized[k];
  out["pixel_values"] = px.pixel_values;
  out["image_grid_thw"] = px.grid_thw;

  at::Tensor ids = ctx.input("input_ids");
  std::vector<at::Tensor> blocks, lm_layers;
  {
    DebugScope scope([&](const std::string& name, const at::Tensor& t) {
      if (name == "qwen2_5_vl.vision_patch_embed") out["inter_vision_patch_embed"] = t.to(at::kFloat).cpu();
      if (name == "qwen2_5_vl.vision_block_output") blocks.push_back(t.to(at::kFloat).cpu());
      if (name == "qwen2_5_vl.vision_window_index") out["inter_vision_window_index"] = t.cpu();
      if (name == "qwen2_5_vl.vision_cu_window_seqlens") out["inter_vision_cu_window_seqlens"] = t.cpu();
      if (name == "qwen2_5_vl.vision_cu_seqlens") out["inter_vision_cu_seqlens"] = t.cpu();
      if (name == "qwen2_5_vl.lm_layer_output") lm_layers.push_back(t.to(at::kFloat).cpu());
    });
    out["vision_embeds"] = model.visual().forward(px.pixel_values, px.grid_thw).to(at::kFloat).cpu();
    out["inter_vision_block_outputs"] = at::stack(blocks);
    auto cache = model.new_cache(ids.size(0), ids.size(1));
    out["logits"] = model.prefill(ids, px.pixel_values, px.grid_thw, cache, {}, 0).to(at::kFloat).cpu();
    out["inter_lm_layer_outputs"] = at::stack(lm_layers);
  }
  auto ri = qwen2_5_vl_rope_index(ids, px.grid_thw, model.config());
  out["position_ids"] = ri.position_ids;
  out["rope_deltas"] = ri.rope_deltas;

  const int64_t n_new = ctx.spec->at("outputs").at("generated_ids").at("shape")[1].get<int64_t>();
  auto cache = model.new_cache(ids.size(0), ids.size(1) + n_new);
  at::Tensor first = model.prefill(ids, px.pixel_values, px.grid_thw, cache).squeeze(1);
  sampling::TokenLoopOptions g;
  g.max_new_tokens = n_new;
  g.keep_step_logits = true;
  auto r = sampling::generate(first, [&](const at::Tensor& t) { return model.decode_one(t, cache); }, g, {},
                              sampling::decode_graph_cache(cache, ctx.rt));  // --decode-graphs
  out["generated_ids"] = r.tokens.cpu();
  out["generated_step_logits"] = r.step_logits.to(at::kFloat).cpu();
  return out;
}
