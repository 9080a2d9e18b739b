#pragma once
// omniflux-quantize as a library call: copies a Hugging Face / diffusers model folder, writing the
// linear weights of its repeated blocks as fp8 e4m3fn or int8 codes with per-output-channel
// `<name>.weight_scale` [out, 1] (io/quant_format.h), or casting them to bf16. Key names stay; norms,
// embeddings, biases, everything outside the blocks and the VAE keep their dtype. config.json gets a
// compressed-tensors quantization_config (what vLLM reads). PyTorch pickles are read too and
// written as safetensors, with config.json paths that named them updated.
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "omniflux/io/quant_format.h"

namespace omniflux {

struct QuantizeOptions {
  WeightFormat format = WeightFormat::Fp8;
  // Sub-folders (relative to the source, "." for the top) whose weights change; empty = every one
  // except a VAE. The others are copied as they are.
  std::vector<std::string> only;
  // (file, tensors done, tensors in file)
  std::function<void(const std::string& file, int64_t done, int64_t total)> progress;
};

struct QuantizeReport {
  int64_t tensors = 0, converted = 0;
  uint64_t bytes_in = 0, bytes_out = 0;   // of the weight files
  std::vector<std::string> components;    // folders whose weights changed
};

// The rule for which tensors change: 2-D `.weight` tensors inside a numbered block (`layers.N.`,
// `blocks.N.`, `block.N.`, `transformer_blocks.N.`, `single_transformer_blocks.N.`) that are not
// embeddings (`embed`) or T5's relative_attention_bias.
bool is_block_linear_weight(const std::string& name, const std::vector<int64_t>& shape);

// The compressed-tensors quantization_config (JSON text) quantize_folder records in config.json;
// `ignored` lists the Linear modules (names without ".weight") left unquantised.
std::string quantization_config_json(WeightFormat format, const std::vector<std::string>& ignored);

// `dst` must not exist; it is written as `dst`.partial and renamed at the end, so a failed run
// leaves nothing behind.
QuantizeReport quantize_folder(const std::string& src, const std::string& dst, const QuantizeOptions& opt);

}  // namespace omniflux
