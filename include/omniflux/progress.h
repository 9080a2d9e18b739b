#pragma once
// The one progress and cancel callback of every long call (pipelines and models).
#include <cstdint>
#include <functional>
#include <string>

namespace omniflux {

// (stage, step, total): called when a stage's step is done (and for "denoise" also before the
// first step), on the host between steps: it must not read device tensors. Returning false
// cancels: the call stops before doing any more work (within one denoising step or one token)
// and returns nullopt. Stages, in the order they run:
//   FluxPipeline::generate      "encode_prompt" 1/1, "denoise" 0..steps/steps, "decode" 1/1
//   UniWorldPipeline::run       "vlm" 1/1, "siglip" 1/1 (with images), "text_encoders" 1/1,
//                               "denoise", "decode"; or a text answer: "answer" per token
//   XOmniPipeline::generate     "tokens" 1..codes/codes, then decode_codes: "encode_prompt",
//                               "denoise", "decode"
//   chat (every pipeline)       "answer" 1..n/max_new_tokens, one call per sampled token
using ProgressCallback = std::function<bool(const std::string& stage, int64_t step, int64_t total)>;

}  // namespace omniflux
