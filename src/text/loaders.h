#pragma once
// Loaders from an already parsed tokenizer.json, so load_tokenizer() parses large files once.
#include <memory>
#include <optional>
#include <vector>
#include <string>


#include "text/bpe.h"
#include "text/clip_tokenizer.h"
#include "text/t5_tokenizer.h"
#include "text/files.h"

namespace omniflux::text::detail {

std::unique_ptr<ByteLevelBpeTokenizer> byte_level_bpe_from_json(TokenizerJson tj, const std::string& path);
std::unique_ptr<ClipTokenizer> clip_from_json(TokenizerJson tj, const std::string& path);
// spiece.model; `added` overrides the added tokens (else tokenizer_config.json, tokenizer.json
// beside the model, or T5's defaults).
std::unique_ptr<T5Tokenizer> t5_from_spiece(const std::string& path, std::optional<std::vector<AddedToken>> added);

}  // namespace omniflux::text::detail
