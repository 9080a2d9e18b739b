#include "omniflux/pipelines/chat.h"

#include "omniflux/error.h"

namespace omniflux {

sampling::TextGenerationOptions chat_generation_options(const ChatOptions& o, int64_t default_max_new_tokens,
                                                        double default_repetition_penalty,
                                                        const ProgressCallback& progress) {
  sampling::TextGenerationOptions g;
  g.max_new_tokens = o.max_new_tokens > 0 ? o.max_new_tokens : default_max_new_tokens;
  sampling::SamplingOptions& s = g.sampling;
  // Only what the request sets: HF's GenerationConfig default top_k = 50 would otherwise apply to
  // every sampled answer, which an OpenAI client never asked for.
  s.top_k = o.top_k.value_or(0);
  s.top_p = o.top_p.value_or(1.0);
  s.min_p = o.min_p.value_or(0.0);
  s.temperature = o.temperature.value_or(1.0);
  s.do_sample = o.temperature ? *o.temperature > 0 : (o.top_p || o.top_k || o.min_p);
  if (o.temperature && *o.temperature == 0) s.temperature = 1.0;  // greedy: the warpers do not run
  s.repetition_penalty = o.repetition_penalty.value_or(default_repetition_penalty);
  s.seed = o.seed;
  g.presence_penalty = o.presence_penalty;
  g.frequency_penalty = o.frequency_penalty;
  g.logit_bias = o.logit_bias;
  g.stop = o.stop;
  if (progress) {
    const int64_t total = g.max_new_tokens;
    g.on_token = [progress, total](int64_t n) { return progress("answer", n, total); };
  }
  return g;
}

int64_t check_chat_turns(const std::vector<ChatTurn>& turns, int64_t max_images, const char* where) {
  if (turns.empty()) throw Error("a conversation needs at least one turn", where, "a user turn", "none");
  int64_t images = 0;
  for (size_t i = 0; i < turns.size(); ++i) {
    const ChatTurn& t = turns[i];
    const std::string at = std::string(where) + ": turn " + std::to_string(i);
    if (t.role == "system") {
      if (i != 0) throw Error("a system turn may only come first", at, "user or assistant", "system");
    } else if (t.role != "user" && t.role != "assistant") {
      throw Error("unsupported chat role", at, "system, user or assistant", t.role);
    }
    for (const ChatPart& p : t.parts) {
      if (!p.is_image) continue;
      if (t.role != "user") throw Error("only user turns may hold images", at, "text", "an image");
      ++images;
    }
  }
  if (turns.back().role != "user") throw Error("the last turn must be the user's", where, "user", turns.back().role);
  if (images > max_images)
    throw Error("too many images in the conversation", where, "at most " + std::to_string(max_images), std::to_string(images));
  return images;
}

}  // namespace omniflux
