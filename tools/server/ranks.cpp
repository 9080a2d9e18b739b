#include "ranks.h"

#include <cstring>
#include <type_traits>

#include <ATen/ATen.h>

#include "omniflux/error.h"

namespace omniflux::server {

namespace {

// Every rank runs the same binary on the same kind of host, so values go in native byte order.
// The tag catches a payload from another build or kind.
constexpr char kImageTag[4] = {'O', 'F', 'I', '1'};
constexpr char kChatTag[4] = {'O', 'F', 'C', '1'};

class Writer {
 public:
  template <class T>
  void pod(T v) {
    static_assert(std::is_trivially_copyable_v<T>);
    out_.append(reinterpret_cast<const char*>(&v), sizeof v);
  }
  void str(const std::string& s) {
    pod<uint64_t>(s.size());
    out_ += s;
  }
  template <class T>
  void opt(const std::optional<T>& v) {
    pod<uint8_t>(v.has_value());
    if (v) put(*v);
  }
  void put(double v) { pod(v); }  // memcpy of the bits: exact, -0 and all
  void put(int64_t v) { pod(v); }
  void put(uint64_t v) { pod(v); }
  void put(bool v) { pod<uint8_t>(v); }
  void put(const std::string& s) { str(s); }
  void image(const Image& im) {
    pod<int32_t>(im.width);
    pod<int32_t>(im.height);
    pod<uint64_t>(im.rgb.size());
    out_.append(reinterpret_cast<const char*>(im.rgb.data()), im.rgb.size());
  }
  void tag(const char (&t)[4]) { out_.append(t, 4); }
  std::string take() { return std::move(out_); }

 private:
  std::string out_;
};

class Reader {
 public:
  explicit Reader(const std::string& in) : in_(in) {}
  template <class T>
  T pod() {
    T v;
    need(sizeof v);
    std::memcpy(&v, in_.data() + at_, sizeof v);
    at_ += sizeof v;
    return v;
  }
  std::string str() {
    const auto n = pod<uint64_t>();
    need(n);
    std::string s = in_.substr(at_, n);
    at_ += n;
    return s;
  }
  template <class T>
  std::optional<T> opt() {
    if (!pod<uint8_t>()) return std::nullopt;
    if constexpr (std::is_same_v<T, std::string>) return str();
    else if constexpr (std::is_same_v<T, bool>) return pod<uint8_t>() != 0;
    else return pod<T>();
  }
  Image image() {
    Image im;
    im.width = pod<int32_t>();
    im.height = pod<int32_t>();
    const auto n = pod<uint64_t>();
    need(n);
    if (im.width < 0 || im.height < 0 || n != static_cast<uint64_t>(im.width) * static_cast<uint64_t>(im.height) * 3)
      fail("an image of width x height x 3 bytes");
    im.rgb.assign(in_.begin() + static_cast<std::ptrdiff_t>(at_), in_.begin() + static_cast<std::ptrdiff_t>(at_ + n));
    at_ += n;
    return im;
  }
  void tag(const char (&t)[4]) {
    need(4);
    if (std::memcmp(in_.data() + at_, t, 4) != 0) fail(std::string("the tag ") + std::string(t, 4));
    at_ += 4;
  }
  void end() const {
    if (at_ != in_.size()) fail("the end of the payload");
  }

 private:
  void need(uint64_t n) const {
    if (n > in_.size() - at_) fail(std::to_string(n) + " more bytes");
  }
  [[noreturn]] void fail(const std::string& expected) const {
    throw Error("a request from rank 0 does not decode (do all ranks run the same build?)", "the rank message",
                expected, "offset " + std::to_string(at_) + " of " + std::to_string(in_.size()) + " bytes");
  }
  const std::string& in_;
  uint64_t at_ = 0;
};

ModelId model_of(int64_t v) {
  if (v < 0 || v > static_cast<int64_t>(ModelId::Flux))
    throw Error("unknown model id in a request from rank 0", "the rank message", "0..2", std::to_string(v));
  return static_cast<ModelId>(v);
}

// Fields are written and read in the order of their declaration in api.h.
#if defined(__GLIBCXX__) && defined(__x86_64__)
// A field added to a request without being sent would let the ranks run different requests (and
// hang in mismatched collectives): a new field changes these sizes and stops the build here.
static_assert(sizeof(ImageRequest) == 312, "a new ImageRequest field: add it to encode_request/decode_image_request");
static_assert(sizeof(ChatRequest) == 224, "a new ChatRequest field: add it to encode_request/decode_chat_request");
static_assert(sizeof(ChatOptions) == 160, "a new ChatOptions field: add it to encode_request/decode_chat_request");
#endif

}  // namespace

std::string encode_request(const ImageRequest& r) {
  Writer w;
  w.tag(kImageTag);
  w.pod<int64_t>(static_cast<int64_t>(r.model));
  w.put(r.edit);
  w.put(r.stream);
  w.str(r.prompt);
  w.pod<uint64_t>(r.images.size());
  for (const Image& im : r.images) w.image(im);
  w.put(r.width);
  w.put(r.height);
  w.put(r.n);
  w.put(r.seed);
  w.put(r.steps);
  w.put(r.guidance);
  w.opt(r.negative_prompt);
  w.opt(r.true_cfg_scale);
  w.opt(r.use_t5);
  w.opt(r.snap);
  w.opt(r.temperature);
  w.opt(r.top_p);
  w.opt(r.min_p);
  w.opt(r.decoder_cfg_scale);
  w.opt(r.decoder_cfg_scale_2);
  w.opt(r.top_k);
  w.str(r.output_format);
  w.put(r.output_compression);
  return w.take();
}

ImageRequest decode_image_request(const std::string& bytes) {
  Reader in(bytes);
  in.tag(kImageTag);
  ImageRequest r;
  r.model = model_of(in.pod<int64_t>());
  r.edit = in.pod<uint8_t>() != 0;
  r.stream = in.pod<uint8_t>() != 0;
  r.prompt = in.str();
  const auto images = in.pod<uint64_t>();
  if (images > static_cast<uint64_t>(bytes.size())) throw Error("a request from rank 0 does not decode", "the rank message", "an image count", std::to_string(images));
  for (uint64_t i = 0; i < images; ++i) r.images.push_back(in.image());
  r.width = in.pod<int64_t>();
  r.height = in.pod<int64_t>();
  r.n = in.pod<int64_t>();
  r.seed = in.pod<uint64_t>();
  r.steps = in.pod<int64_t>();
  r.guidance = in.pod<double>();
  r.negative_prompt = in.opt<std::string>();
  r.true_cfg_scale = in.opt<double>();
  r.use_t5 = in.opt<bool>();
  r.snap = in.opt<bool>();
  r.temperature = in.opt<double>();
  r.top_p = in.opt<double>();
  r.min_p = in.opt<double>();
  r.decoder_cfg_scale = in.opt<double>();
  r.decoder_cfg_scale_2 = in.opt<double>();
  r.top_k = in.opt<int64_t>();
  r.output_format = in.str();
  r.output_compression = in.pod<int64_t>();
  in.end();
  return r;
}

std::string encode_request(const ChatRequest& r) {
  Writer w;
  w.tag(kChatTag);
  w.pod<int64_t>(static_cast<int64_t>(r.model));
  w.put(r.stream);
  w.put(r.include_usage);
  w.pod<uint64_t>(r.turns.size());
  for (const ChatTurn& t : r.turns) {
    w.str(t.role);
    w.pod<uint64_t>(t.parts.size());
    for (const ChatPart& p : t.parts) {
      w.put(p.is_image);
      w.str(p.text);
      w.image(p.image);
    }
  }
  w.put(r.images);
  const ChatOptions& o = r.options;
  w.put(o.max_new_tokens);
  w.opt(o.temperature);
  w.opt(o.top_p);
  w.opt(o.min_p);
  w.opt(o.repetition_penalty);
  w.opt(o.top_k);
  w.put(o.presence_penalty);
  w.put(o.frequency_penalty);
  w.pod<uint64_t>(o.logit_bias.size());
  for (const auto& [id, bias] : o.logit_bias) w.put(id), w.put(bias);
  w.pod<uint64_t>(o.stop.size());
  for (const std::string& s : o.stop) w.str(s);
  w.put(o.seed);
  w.opt(r.seed);
  w.put(r.n);
  return w.take();
}

ChatRequest decode_chat_request(const std::string& bytes) {
  Reader in(bytes);
  in.tag(kChatTag);
  ChatRequest r;
  // Counts are checked against the payload size before anything is reserved for them.
  auto count = [&](const char* what) {
    const auto n = in.pod<uint64_t>();
    if (n > static_cast<uint64_t>(bytes.size())) throw Error("a request from rank 0 does not decode", "the rank message", std::string("a count of ") + what, std::to_string(n));
    return n;
  };
  r.model = model_of(in.pod<int64_t>());
  r.stream = in.pod<uint8_t>() != 0;
  r.include_usage = in.pod<uint8_t>() != 0;
  for (uint64_t t = 0, nt = count("turns"); t < nt; ++t) {
    ChatTurn turn;
    turn.role = in.str();
    for (uint64_t p = 0, np = count("parts"); p < np; ++p) {
      ChatPart part;
      part.is_image = in.pod<uint8_t>() != 0;
      part.text = in.str();
      part.image = in.image();
      turn.parts.push_back(std::move(part));
    }
    r.turns.push_back(std::move(turn));
  }
  r.images = in.pod<int64_t>();
  ChatOptions& o = r.options;
  o.max_new_tokens = in.pod<int64_t>();
  o.temperature = in.opt<double>();
  o.top_p = in.opt<double>();
  o.min_p = in.opt<double>();
  o.repetition_penalty = in.opt<double>();
  o.top_k = in.opt<int64_t>();
  o.presence_penalty = in.pod<double>();
  o.frequency_penalty = in.pod<double>();
  for (uint64_t i = 0, n = count("logit biases"); i < n; ++i) {
    const auto id = in.pod<int64_t>();
    o.logit_bias.emplace_back(id, in.pod<double>());
  }
  for (uint64_t i = 0, n = count("stop strings"); i < n; ++i) o.stop.push_back(in.str());
  o.seed = in.pod<uint64_t>();
  r.seed = in.opt<uint64_t>();
  r.n = in.pod<int64_t>();
  in.end();
  return r;
}

// ---- the link ------------------------------------------------------------------------------------

RankLink::RankLink(const ProcessGroup& world, c10::Device device) : world_(world), device_(device) {}

namespace {
at::Tensor longs(std::initializer_list<int64_t> v, c10::Device d) {
  return at::tensor(std::vector<int64_t>(v), at::TensorOptions().dtype(at::kLong)).to(d);
}
}  // namespace

bool RankLink::send(WorkKind kind, const std::string& payload) const {
  at::Tensor head = longs({static_cast<int64_t>(kind), static_cast<int64_t>(payload.size()), 0}, device_);
  world_.all_reduce_sum(head);
  const bool voted = head.cpu()[2].item<int64_t>() > 0;
  if (!payload.empty()) {
    at::Tensor body = at::empty({static_cast<int64_t>(payload.size())}, at::TensorOptions().dtype(at::kByte));
    std::memcpy(body.data_ptr(), payload.data(), payload.size());
    body = body.to(device_);
    world_.broadcast(body, 0);
  }
  return voted;
}

RankLink::Item RankLink::receive(bool stop_vote) const {
  at::Tensor head = longs({0, 0, stop_vote ? 1 : 0}, device_);
  world_.all_reduce_sum(head);
  head = head.cpu();
  Item item;
  const int64_t kind = head[0].item<int64_t>(), n = head[1].item<int64_t>();
  if (kind < static_cast<int64_t>(WorkKind::Heartbeat) || kind > static_cast<int64_t>(WorkKind::Shutdown) || n < 0)
    throw Error("a message from rank 0 makes no sense (do all ranks run the same build?)", "the rank message header",
                "a kind in 1..4 and a size >= 0", std::to_string(kind) + ", " + std::to_string(n));
  item.kind = static_cast<WorkKind>(kind);
  if (n > 0) {
    at::Tensor body = at::empty({n}, at::TensorOptions().dtype(at::kByte).device(device_));
    world_.broadcast(body, 0);
    body = body.cpu();
    item.payload.assign(static_cast<const char*>(body.data_ptr()), static_cast<size_t>(n));
  }
  return item;
}

bool RankLink::agree_stop(bool local, bool* voted) const {
  at::Tensor t = world_.rank() == 0 ? longs({local ? 1 : 0, 0}, device_) : longs({0, local ? 1 : 0}, device_);
  world_.all_reduce_sum(t);
  t = t.cpu();
  const bool others = t[1].item<int64_t>() > 0;
  if (voted) *voted = others;
  return others || t[0].item<int64_t>() > 0;
}

bool is_collective_failure(const Error& e) { return e.where().rfind("ProcessGroup(", 0) == 0; }

}  // namespace omniflux::server
