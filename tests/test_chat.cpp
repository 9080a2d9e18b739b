// Chat answers: the shared token loop (sampling::generate_text) on a fake model whose behaviour is
// known, the conversation templates, and the UniWorld-V1 and X-Omni conversations on the tiny
// models (a one-turn conversation equals the official one-turn answer, streams concatenate to the
// answer, a seed repeats, a cancel stops).
#include <gtest/gtest.h>

#include <ATen/ATen.h>

#include <set>
#include <string>
#include <vector>

#include "omniflux/error.h"
#include "omniflux/pipelines/chat.h"
#include "omniflux/pipelines/uniworld.h"
#include "omniflux/pipelines/xomni.h"
#include "omniflux/sampling/text_generation.h"
#include "text/chat_template.h"
#include "test_util.h"

using namespace omniflux;
namespace fs = std::filesystem;

namespace {

constexpr int64_t kV = 8;

// A model that prefers the token after the one it was fed: greedy from `first` gives first,
// first+1, ... (mod 8); the letters "abcdefgh" are its text.
at::Tensor one_hot_logits(int64_t id) {
  at::Tensor l = at::zeros({1, kV});
  l[0][id % kV] = 5.0;
  return l;
}
std::string letters(const std::vector<int64_t>& ids) {
  std::string s;
  for (int64_t id : ids) s += static_cast<char>('a' + id);
  return s;
}
auto next_letter = [](int64_t id) { return one_hot_logits(id + 1); };
// The loop feeds ids as device tensors; these fake models read them back.
std::function<at::Tensor(const at::Tensor&)> fed(const std::function<at::Tensor(int64_t)>& f) {
  return [f](const at::Tensor& id) { return f(id.item<int64_t>()); };
}

sampling::TextGeneration run(const sampling::TextGenerationOptions& o, std::string* streamed = nullptr,
                             const std::function<at::Tensor(int64_t)>& step = next_letter,
                             const at::Tensor& first = one_hot_logits(0)) {
  return sampling::generate_text(first, fed(step), letters, o, {}, [&](const std::string& piece) {
    if (streamed) *streamed += piece;
    return true;
  });
}

}  // namespace

TEST(TextGeneration, LengthEndTokenAndStopStrings) {
  sampling::TextGenerationOptions o;
  o.max_new_tokens = 5;
  auto r = run(o);
  EXPECT_EQ(r.text, "abcde");
  EXPECT_EQ(r.finish, sampling::FinishReason::Length);
  EXPECT_EQ(r.completion_tokens, 5);
  o.eos_token_ids = {3};
  r = run(o);
  EXPECT_EQ(r.text, "abc");
  EXPECT_EQ(r.finish, sampling::FinishReason::Stop);
  EXPECT_EQ(r.completion_tokens, 4);  // the end token counts
  o.eos_token_ids.clear();
  o.stop = {"zz", "cd"};
  std::string streamed;
  r = run(o, &streamed);
  EXPECT_EQ(r.text, "ab");
  EXPECT_EQ(r.finish, sampling::FinishReason::Stop);
  EXPECT_EQ(streamed, "ab") << "the stream must hold back text that may start a stop string";
  o.stop = {"x"};
  streamed.clear();
  r = run(o, &streamed);
  EXPECT_EQ(r.text, "abcde");
  EXPECT_EQ(streamed, "abcde");
  EXPECT_EQ(r.finish, sampling::FinishReason::Length);
}

TEST(TextGeneration, PenaltiesAndLogitBiasFollowOpenAI) {
  // Constant logits a 1.0, b 0.9, the rest 0: OpenAI's penalties, computed by hand, pick
  //   frequency 0.5: a (a .5 b .9) b (a .5 b .4) a (a 0 b .4) b (a 0 b -.1) a  -> "ababa"
  //   presence 0.5:  a (a .5 b .9) b (a .5 b .4) a (a .5 b .4) a (.5 .4) a      -> "abaaa"
  auto constant = [](int64_t) {
    at::Tensor l = at::zeros({1, kV});
    l[0][0] = 1.0;
    l[0][1] = 0.9;
    return l;
  };
  sampling::TextGenerationOptions o;
  o.max_new_tokens = 5;
  EXPECT_EQ(run(o, nullptr, constant, constant(0)).text, "aaaaa");
  o.frequency_penalty = 0.5;
  EXPECT_EQ(run(o, nullptr, constant, constant(0)).text, "ababa");
  o.frequency_penalty = 0;
  o.presence_penalty = 0.5;
  EXPECT_EQ(run(o, nullptr, constant, constant(0)).text, "abaaa");
  o.presence_penalty = 0;
  o.logit_bias = {{5, 100.0}};
  EXPECT_EQ(run(o).text, "fffff");
  o.logit_bias = {{kV, 1.0}};
  EXPECT_THROW(run(o), Error);  // outside the vocabulary
}

TEST(TextGeneration, SeededSamplingRepeatsAndVaries) {
  auto flat = [](int64_t) { return at::zeros({1, kV}); };  // every token equally likely
  sampling::TextGenerationOptions o;
  o.max_new_tokens = 12;
  o.sampling.do_sample = true;
  o.sampling.top_k = 0;
  std::set<std::string> seen;
  for (uint64_t seed = 0; seed < 4; ++seed) {
    o.sampling.seed = seed;
    const std::string a = run(o, nullptr, flat, flat(0)).text, b = run(o, nullptr, flat, flat(0)).text;
    EXPECT_EQ(a, b) << "seed " << seed;
    seen.insert(a);
  }
  EXPECT_GT(seen.size(), 1u) << "four seeds gave one answer";
}

TEST(TextGeneration, CancelAndUtf8Pieces) {
  // Tokens 0 and 1 are the two bytes of "é"; a partial character decodes to U+FFFD, as a
  // byte-level BPE decode does. No piece may split the character.
  auto bytes = [](const std::vector<int64_t>& ids) {
    std::string s;
    for (int64_t id : ids) s += id == 0 ? "\xC3" : id == 1 ? "\xA9" : "x";
    if (!s.empty() && static_cast<unsigned char>(s.back()) == 0xC3) {
      s.pop_back();
      s += "\xEF\xBF\xBD";
    }
    return s;
  };
  auto alternate = [](int64_t id) { return one_hot_logits(id == 0 ? 1 : 0); };
  sampling::TextGenerationOptions o;
  o.max_new_tokens = 6;
  std::vector<std::string> pieces;
  auto r = sampling::generate_text(one_hot_logits(0), fed(alternate), bytes, o, {}, [&](const std::string& p) {
    pieces.push_back(p);
    return true;
  });
  EXPECT_EQ(r.text, "\xC3\xA9\xC3\xA9\xC3\xA9");
  ASSERT_EQ(pieces.size(), 3u);
  for (const auto& p : pieces) EXPECT_EQ(p, "\xC3\xA9");
  // the consumer cancels after its second piece: no third token is sampled
  int calls = 0;
  r = sampling::generate_text(one_hot_logits(0), fed(next_letter), letters, o, {}, [&](const std::string&) { return ++calls < 2; });
  EXPECT_EQ(r.finish, sampling::FinishReason::Cancelled);
  EXPECT_EQ(r.text, "ab");
  EXPECT_EQ(r.completion_tokens, 2);
}

TEST(ChatTemplates, ConversationsRenderAsTheReferenceTemplates) {
  using text::ChatContent;
  using text::ChatMessage;
  const std::string vision = "<|vision_start|><|image_pad|><|vision_end|>";
  // UniWorld without a system message: the Qwen2-VL template with the default system turn cut, as
  // app.py cuts it for one turn.
  std::vector<ChatMessage> conv = {{"user", {ChatContent::make_text("What is it?"), ChatContent::image()}},
                                   ChatMessage::text("assistant", "A cat."),
                                   ChatMessage::text("user", "Its colour?")};
  EXPECT_EQ(text::render_uniworld(conv),
            "<|im_start|>user\nWhat is it?" + vision + "<|im_end|>\n<|im_start|>assistant\nA cat.<|im_end|>\n"
            "<|im_start|>user\nIts colour?<|im_end|>\n<|im_start|>assistant\n");
  EXPECT_EQ(text::render_uniworld("What is it?", 1), text::render_uniworld(std::vector<ChatMessage>{conv[0]}));
  conv.insert(conv.begin(), ChatMessage::text("system", "Be brief."));
  EXPECT_EQ(text::render_uniworld(conv).rfind("<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\n", 0), 0u);
  // X-Omni: image text is markup (parsed), the question is the user's (kept literal)
  std::vector<text::TextSpan> spans;
  const std::string x = text::render_xomni_chat(
      std::vector<ChatMessage>{{"user", {ChatContent::make_markup("<SOM>1 1<IMAGE><MM-Token-3><EOM>\n"), ChatContent::make_text("Q?")}}},
      {}, &spans);
  ASSERT_EQ(spans.size(), 1u);
  EXPECT_EQ(x.substr(spans[0].begin, spans[0].end - spans[0].begin), "Q?");
  EXPECT_NE(x.find("<|im_start|>user\n<SOM>1 1<IMAGE><MM-Token-3><EOM>\nQ?<|im_end|>"), std::string::npos);
}

namespace {
const fs::path& tiny_root() { return tiny_folders(11, {"flux_1_dev", "uniworld_v1", "siglip2", "x_omni"}); }
std::string tiny(const char* name) { return (tiny_root() / name).string(); }
}  // namespace

TEST(ChatPipelines, UniWorldConversations) {
  const auto p = UniWorldPipeline::load(tiny("uniworld-v1"), tiny("flux.1-dev"), tiny("siglip2"));
  const Image img = gradient_image(32, 32, 2);
  // One user turn, greedy: app.py's answer (run with the text task).
  UniWorldOptions o;
  o.prompt = "What is this?";
  o.images = {img};
  o.task = UniWorldTask::Text;
  o.max_new_tokens = 10;
  const std::string official = std::get<std::string>(*p.run(o));
  const std::vector<ChatTurn> one = {{"user", {ChatPart::make_text("What is this?"), ChatPart::make_image(img)}}};
  ChatOptions c;
  c.max_new_tokens = 10;
  std::string streamed;
  const auto a = p.chat(one, c, [&](const std::string& s) {
    streamed += s;
    return true;
  });
  ASSERT_TRUE(a);
  EXPECT_EQ(a->text, official);
  EXPECT_EQ(streamed, a->text);
  EXPECT_EQ(a->prompt_tokens, p.build_prompt("What is this?", {img}).ids.size(1));
  {
    // Independently: the older token loop (sampling::generate through Qwen2_5_VL::generate), cut at
    // the first end token, decoded with the folder's tokenizer, special tokens skipped.
    const auto prompt = p.build_prompt("What is this?", {img});
    const auto tok = text::load_tokenizer((tiny_root() / "uniworld-v1" / "tokenizer.json").string());
    sampling::TokenLoopOptions g;
    g.max_new_tokens = 10;
    g.eos_token_ids = {p.vlm().config().eos_token_id, *tok->token_to_id("<|endoftext|>")};
    g.pad_token_id = g.eos_token_ids[0];
    const at::Tensor out = p.vlm().generate(prompt.ids, prompt.pixels.pixel_values, prompt.pixels.grid_thw, g).cpu();
    std::vector<int64_t> ids;
    int64_t sampled = 0;
    for (int64_t i = 0; i < out.size(1); ++i) {
      const int64_t id = out[0][i].item<int64_t>();
      ++sampled;
      if (id == g.eos_token_ids[0] || id == g.eos_token_ids[1]) break;
      if (id < tok->vocab_size()) ids.push_back(id);
    }
    EXPECT_EQ(a->completion_tokens, sampled);
    EXPECT_EQ(a->text, tok->decode(ids, /*skip_special_tokens=*/true));
  }
  EXPECT_GE(a->completion_tokens, 1);
  EXPECT_LE(a->completion_tokens, 10);
  if (a->finish == sampling::FinishReason::Length) EXPECT_EQ(a->completion_tokens, 10);
  // A longer conversation with a system turn and history renders more tokens and answers.
  std::vector<ChatTurn> conv = {ChatTurn::text("system", "Be brief."), one[0], ChatTurn::text("assistant", "A square."),
                                {"user", {ChatPart::make_text("And this?"), ChatPart::make_image(gradient_image(40, 32, 5))}}};
  const auto b = p.chat(conv, c);
  ASSERT_TRUE(b);
  EXPECT_GT(b->prompt_tokens, a->prompt_tokens);
  // Sampling with a seed repeats.
  c.temperature = 1.5;
  c.seed = 3;
  EXPECT_EQ(p.chat(conv, c)->text, p.chat(conv, c)->text);
  // Bad conversations are named errors.
  EXPECT_THROW(p.chat({ChatTurn::text("assistant", "hi")}, c), Error);
  EXPECT_THROW(p.chat({ChatTurn::text("user", "a"), ChatTurn::text("system", "late"), ChatTurn::text("user", "b")}, c), Error);
  std::vector<ChatTurn> five(1, ChatTurn::text("user", "many"));
  for (int i = 0; i < 5; ++i) five[0].parts.push_back(ChatPart::make_image(img));
  EXPECT_THROW(p.chat(five, c), Error);
  // The progress callback stops it within one token.
  ASSERT_GE(b->completion_tokens, 3) << "the tiny model's answer is too short to cancel in the middle";
  int tokens = 0;
  auto progress = [&](const std::string& stage, int64_t n, int64_t total) {
    EXPECT_EQ(stage, "answer");
    EXPECT_EQ(total, c.max_new_tokens);
    tokens = static_cast<int>(n);
    return n < 2;
  };
  c.temperature.reset();
  EXPECT_FALSE(p.chat(conv, c, {}, progress));
  EXPECT_EQ(tokens, 2);
}

TEST(ChatPipelines, XOmniConversations) {
  const auto p = XOmniPipeline::load(tiny("x-omni"), "");
  const Image img = gradient_image(48, 48, 3);
  // chat.py's one turn through the conversation API equals the one-image API.
  const std::string official = p.chat(img, "What is in the picture?", {}, 8).value();
  ChatOptions c;
  c.max_new_tokens = 8;
  const std::vector<ChatTurn> one = {{"user", {ChatPart::make_text("What is in the picture?"), ChatPart::make_image(img)}}};
  std::string streamed;
  const auto a = p.chat(one, c, [&](const std::string& s) {
    streamed += s;
    return true;
  });
  ASSERT_TRUE(a);
  EXPECT_EQ(a->text, official);
  EXPECT_EQ(a->prompt_tokens, p.chat_prompt(p.tokenize_image(img), "What is in the picture?").size(1));
  // text-only turns and history
  const auto t = p.chat({ChatTurn::text("user", "Hello"), ChatTurn::text("assistant", "Hi."), ChatTurn::text("user", "Name a colour.")}, c);
  ASSERT_TRUE(t);
  EXPECT_GE(t->completion_tokens, 1);
  // at most one image in all, as chat.py
  std::vector<ChatTurn> two = one;
  two[0].parts.push_back(ChatPart::make_image(img));
  EXPECT_THROW(p.chat(two, c), Error);
  // a stop string cuts the answer before it
  if (a->text.size() >= 2) {
    c.stop = {a->text.substr(1, 1)};
    const auto cut = p.chat(one, c);
    ASSERT_TRUE(cut);
    EXPECT_EQ(cut->finish, sampling::FinishReason::Stop);
    EXPECT_EQ(cut->text, a->text.substr(0, a->text.find(c.stop[0])));
  }
}

TEST(ChatPipelines, DecodeGraphsAnswerAsEagerDecoding) {
  // RuntimeOptions::decode_graphs runs the chat loop's steps as decode graphs (on the CPU: replayed
  // with the cache's host side frozen at capture); the answers must not change, greedy or sampled
  // with every processor the chat loop has.
  RuntimeOptions rt;
  rt.decode_graphs = true;
  const auto u0 = UniWorldPipeline::load(tiny("uniworld-v1"), tiny("flux.1-dev"), tiny("siglip2"));
  const auto u1 = UniWorldPipeline::load(tiny("uniworld-v1"), tiny("flux.1-dev"), tiny("siglip2"), rt);
  const auto x0 = XOmniPipeline::load(tiny("x-omni"), ""), x1 = XOmniPipeline::load(tiny("x-omni"), "", rt);
  const std::vector<ChatTurn> one = {{"user", {ChatPart::make_text("What is this?"), ChatPart::make_image(gradient_image(32, 32, 2))}}};
  ChatOptions c;
  c.max_new_tokens = 12;
  for (const bool sampled : {false, true}) {
    SCOPED_TRACE(sampled ? "sampled" : "greedy");
    if (sampled) {
      c.temperature = 1.3;
      c.seed = 4;
      c.repetition_penalty = 1.2;
      c.presence_penalty = 0.5;
      c.frequency_penalty = 0.3;
      c.logit_bias = {{7, 2.0}};
    }
    const auto a = u0.chat(one, c), b = u1.chat(one, c);
    ASSERT_TRUE(a && b);
    EXPECT_EQ(a->text, b->text);
    EXPECT_EQ(a->completion_tokens, b->completion_tokens);
    EXPECT_GE(a->completion_tokens, 3) << "too short to replay a graph";
    const auto xa = x0.chat(one, c), xb = x1.chat(one, c);
    ASSERT_TRUE(xa && xb);
    EXPECT_EQ(xa->text, xb->text);
    EXPECT_EQ(xa->completion_tokens, xb->completion_tokens);
  }
}
