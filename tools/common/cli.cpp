#include "cli.h"

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <charconv>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <iostream>
#include <limits>
#include <new>
#include <sstream>
#include <thread>

#include <c10/util/Exception.h>

#include "omniflux/build_info.h"
#include "io/paths.h"

namespace fs = std::filesystem;

namespace omniflux::cli {

// ---- values -------------------------------------------------------------------------------------

namespace {

std::string show_value(const std::string& s) {
  const size_t max = 60;
  return "'" + (s.size() > max ? s.substr(0, max) + "...' (" + std::to_string(s.size()) + " bytes)" : s + "'");
}

std::string fmt_double(double v) {
  if (v == std::numeric_limits<double>::max()) return "max";
  char buf[64];
  std::snprintf(buf, sizeof buf, "%g", v);
  return buf;
}

}  // namespace

int64_t parse_int(const std::string& flag, const std::string& text, int64_t lo, int64_t hi) {
  const std::string range = std::to_string(lo) + ".." + std::to_string(hi);
  int64_t v = 0;
  const char* end = text.data() + text.size();
  const auto r = std::from_chars(text.data(), end, v);
  if (text.empty() || r.ptr != end || (r.ec != std::errc() && r.ec != std::errc::result_out_of_range))
    throw UsageError("not an integer", flag, "an integer in " + range, show_value(text));
  if (r.ec == std::errc::result_out_of_range || v < lo || v > hi)
    throw UsageError("value out of range", flag, "an integer in " + range, show_value(text));
  return v;
}

uint64_t parse_uint64(const std::string& flag, const std::string& text) {
  const std::string range = "0.." + std::to_string(std::numeric_limits<uint64_t>::max());
  const bool negative = !text.empty() && text[0] == '-';
  uint64_t v = 0;
  const char* begin = text.data() + (negative ? 1 : 0);
  const char* end = text.data() + text.size();
  const auto r = std::from_chars(begin, end, v);
  if (begin == end || r.ptr != end || (r.ec != std::errc() && r.ec != std::errc::result_out_of_range))
    throw UsageError("not an integer", flag, "an integer in " + range, show_value(text));
  if (r.ec == std::errc::result_out_of_range || (negative && v != 0))
    throw UsageError("value out of range", flag, "an integer in " + range, show_value(text));
  return v;
}

double parse_double(const std::string& flag, const std::string& text, double lo, double hi, bool lo_open) {
  const std::string range = (lo_open ? "(" : "[") + fmt_double(lo) + ", " + fmt_double(hi) + "]";
  double v = 0;
  const char* end = text.data() + text.size();
  const auto r = std::from_chars(text.data(), end, v);
  if (text.empty() || r.ptr != end || (r.ec != std::errc() && r.ec != std::errc::result_out_of_range))
    throw UsageError("not a number", flag, "a number in " + range, show_value(text));
  if (!std::isfinite(v)) throw UsageError("not a finite number", flag, "a number in " + range, show_value(text));
  // from_chars reports overflow and underflow alike (leaving v alone); strtod tells them apart, and
  // a tiny value is still a value.
  if (r.ec == std::errc::result_out_of_range) {
    v = std::strtod(text.c_str(), nullptr);
    if (!std::isfinite(v) || std::fabs(v) >= 1.0)
      throw UsageError("value out of range", flag, "a number in " + range, show_value(text));
  }
  if (v < lo || v > hi || (lo_open && v == lo))
    throw UsageError("value out of range", flag, "a number in " + range, show_value(text));
  return v;
}

int max_threads() {
  const int hw = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  return std::min(1024, 4 * hw);
}

// ---- flags --------------------------------------------------------------------------------------

struct Flag::Spec {
  std::vector<std::string> names;  // "-p", "--prompt"
  std::string metavar, help, default_text, range_text, group;
  bool takes_value = true, is_required = false;
  size_t max_count = 1, count = 0;
  std::vector<std::string> only;  // subcommands; empty = all
  std::function<void(const std::string& used_name, const std::string& value)> set;
  std::string first_value;

  std::string display() const {
    std::string s;
    for (const auto& n : names) s += (s.empty() ? "" : "/") + n;
    return s;
  }
  bool applies_to(const std::string& cmd) const {
    return only.empty() || std::find(only.begin(), only.end(), cmd) != only.end();
  }
};

Flag& Flag::required() {
  s_->is_required = true;
  return *this;
}

Flag& Flag::commands(std::vector<std::string> names) {
  s_->only = std::move(names);
  return *this;
}

struct Positional {
  std::string name, help;
  std::string* one = nullptr;
  std::vector<std::string>* rest = nullptr;
  bool required = false;
  bool filled = false;
};

struct Parser::Impl {
  std::vector<std::unique_ptr<Flag::Spec>> flags;
  std::vector<std::pair<std::string, std::string>> commands;  // name, summary
  std::vector<Positional> positionals;
  std::string group;

  Flag::Spec* find(const std::string& name) {
    for (auto& f : flags)
      if (std::find(f->names.begin(), f->names.end(), name) != f->names.end()) return f.get();
    return nullptr;
  }
};

namespace {
std::string g_usage;  // of the parser in use, for cli::run's usage errors
}

Parser::Parser(std::string program, std::string summary)
    : program_(std::move(program)), summary_(std::move(summary)), impl_(std::make_unique<Impl>()) {}
Parser::~Parser() = default;

void Parser::command(const std::string& name, const std::string& summary) { impl_->commands.push_back({name, summary}); }
void Parser::group(const std::string& title) { impl_->group = title; }

Flag Parser::add(const std::string& names, const std::string& metavar, const std::string& help, bool takes_value,
                 size_t max_count, std::function<void(const std::string&, const std::string&)> set,
                 std::string default_text, std::string range_text) {
  auto s = std::make_unique<Flag::Spec>();
  std::stringstream ss(names);
  for (std::string n; std::getline(ss, n, ',');) s->names.push_back(n);
  s->metavar = metavar;
  s->help = help;
  s->takes_value = takes_value;
  s->max_count = max_count;
  s->set = std::move(set);
  s->default_text = std::move(default_text);
  s->range_text = std::move(range_text);
  s->group = impl_->group;
  impl_->flags.push_back(std::move(s));
  return Flag(impl_->flags.back().get());
}

Flag Parser::text(const std::string& names, std::string* out, const std::string& metavar, const std::string& help) {
  return add(names, metavar, help, true, 1, [out](const std::string&, const std::string& v) { *out = v; },
             out->empty() ? "" : *out, "");
}

Flag Parser::text(const std::string& names, std::optional<std::string>* out, const std::string& metavar,
                  const std::string& help) {
  return add(names, metavar, help, true, 1, [out](const std::string&, const std::string& v) { *out = v; }, "", "");
}

Flag Parser::path(const std::string& names, std::string* out, const std::string& metavar, const std::string& help) {
  return add(names, metavar, help, true, 1,
             [out](const std::string& flag, const std::string& v) {
               if (v.empty()) throw UsageError("empty path", flag, "a file or folder name", "''");
               *out = v;
             },
             out->empty() ? "" : *out, "");
}

Flag Parser::paths(const std::string& names, std::vector<std::string>* out, const std::string& metavar,
                   const std::string& help, size_t max_count) {
  return add(names, metavar, help, true, max_count,
             [out](const std::string& flag, const std::string& v) {
               if (v.empty()) throw UsageError("empty path", flag, "a file or folder name", "''");
               out->push_back(v);
             },
             "", "");
}

Flag Parser::texts(const std::string& names, std::vector<std::string>* out, const std::string& metavar,
                   const std::string& help, size_t max_count) {
  return add(names, metavar, help, true, max_count,
             [out](const std::string&, const std::string& v) { out->push_back(v); }, "", "");
}

Flag Parser::integer(const std::string& names, int64_t* out, int64_t lo, int64_t hi, const std::string& metavar,
                     const std::string& help) {
  return add(names, metavar, help, true, 1,
             [out, lo, hi](const std::string& flag, const std::string& v) { *out = parse_int(flag, v, lo, hi); },
             std::to_string(*out), std::to_string(lo) + ".." + std::to_string(hi));
}

Flag Parser::integer(const std::string& names, int* out, int64_t lo, int64_t hi, const std::string& metavar,
                     const std::string& help) {
  lo = std::max<int64_t>(lo, std::numeric_limits<int>::min());
  hi = std::min<int64_t>(hi, std::numeric_limits<int>::max());
  return add(names, metavar, help, true, 1,
             [out, lo, hi](const std::string& flag, const std::string& v) {
               *out = static_cast<int>(parse_int(flag, v, lo, hi));
             },
             std::to_string(*out), std::to_string(lo) + ".." + std::to_string(hi));
}

Flag Parser::integer(const std::string& names, size_t* out, int64_t lo, int64_t hi, const std::string& metavar,
                     const std::string& help) {
  lo = std::max<int64_t>(lo, 0);
  return add(names, metavar, help, true, 1,
             [out, lo, hi](const std::string& flag, const std::string& v) {
               *out = static_cast<size_t>(parse_int(flag, v, lo, hi));
             },
             std::to_string(*out), std::to_string(lo) + ".." + std::to_string(hi));
}

Flag Parser::integer(const std::string& names, std::optional<int64_t>* out, int64_t lo, int64_t hi,
                     const std::string& metavar, const std::string& help) {
  return add(names, metavar, help, true, 1,
             [out, lo, hi](const std::string& flag, const std::string& v) { *out = parse_int(flag, v, lo, hi); },
             "", std::to_string(lo) + ".." + std::to_string(hi));
}

Flag Parser::seed(const std::string& names, uint64_t* out, const std::string& help) {
  return add(names, "N", help, true, 1,
             [out](const std::string& flag, const std::string& v) { *out = parse_uint64(flag, v); },
             std::to_string(*out), "0..2^64-1");
}

Flag Parser::number(const std::string& names, double* out, double lo, double hi, const std::string& metavar,
                    const std::string& help, bool lo_open) {
  return add(names, metavar, help, true, 1,
             [out, lo, hi, lo_open](const std::string& flag, const std::string& v) {
               *out = parse_double(flag, v, lo, hi, lo_open);
             },
             fmt_double(*out), (lo_open ? "(" : "[") + fmt_double(lo) + ", " + fmt_double(hi) + "]");
}

Flag Parser::number(const std::string& names, std::optional<double>* out, double lo, double hi,
                    const std::string& metavar, const std::string& help, bool lo_open) {
  return add(names, metavar, help, true, 1,
             [out, lo, hi, lo_open](const std::string& flag, const std::string& v) {
               *out = parse_double(flag, v, lo, hi, lo_open);
             },
             "", (lo_open ? "(" : "[") + fmt_double(lo) + ", " + fmt_double(hi) + "]");
}

Flag Parser::choice(const std::string& names, std::string* out, const std::vector<std::string>& choices,
                    const std::string& help) {
  std::string all;
  for (const auto& c : choices) all += (all.empty() ? "" : "|") + c;
  return add(names, all, help, true, 1,
             [out, choices, all](const std::string& flag, const std::string& v) {
               if (std::find(choices.begin(), choices.end(), v) == choices.end())
                 throw UsageError("unknown value", flag, "one of " + all, show_value(v));
               *out = v;
             },
             *out, "");
}

Flag Parser::custom(const std::string& names, const std::string& metavar, const std::string& help,
                    std::function<void(const std::string&)> set, std::string default_text) {
  return add(names, metavar, help, true, 1,
             [set = std::move(set)](const std::string& flag, const std::string& v) {
               try {
                 set(v);
               } catch (const UsageError&) {
                 throw;
               } catch (const Error& e) {
                 throw UsageError(e.what_part(), flag, e.expected(), e.got().empty() ? show_value(v) : e.got());
               }
             },
             std::move(default_text), "");
}

Flag Parser::toggle(const std::string& names, bool* out, const std::string& help, bool value) {
  return add(names, "", help, false, SIZE_MAX, [out, value](const std::string&, const std::string&) { *out = value; },
             "", "");
}

void Parser::positional(const std::string& name, std::string* out, const std::string& help, bool required) {
  impl_->positionals.push_back({name, help, out, nullptr, required, false});
}

void Parser::positionals(const std::string& name, std::vector<std::string>* out, const std::string& help) {
  impl_->positionals.push_back({name, help, nullptr, out, false, false});
}

bool Parser::given(const std::string& name) const {
  const Flag::Spec* s = impl_->find(name);
  return s && s->count > 0;
}

// ---- parsing --------------------------------------------------------------------------------------

bool Parser::parse(int argc, const char* const* argv) {
  g_usage = usage();
  auto& I = *impl_;
  int i = 1;
  if (!I.commands.empty()) {
    std::string names;
    for (const auto& c : I.commands) names += (names.empty() ? "" : ", ") + c.first;
    if (argc < 2) throw UsageError("missing command", program_, "one of " + names, "nothing");
    const std::string a = argv[1];
    if (a == "-h" || a == "--help") {
      std::cout << help();
      return false;
    }
    if (a == "--version") {
      std::cout << program_ << "\n" << build_info_text();
      return false;
    }
    bool known = false;
    for (const auto& c : I.commands) known = known || c.first == a;
    if (!known) throw UsageError("unknown command", program_, "one of " + names, show_value(a));
    command_ = a;
    g_usage = usage();
    i = 2;
  }
  bool flags_done = false;
  size_t next_positional = 0;
  for (; i < argc; ++i) {
    const std::string a = argv[i];
    if (!flags_done && a == "--") {
      flags_done = true;
      continue;
    }
    if (!flags_done && a.size() > 1 && a[0] == '-') {
      std::string name = a;
      std::optional<std::string> inline_value;
      if (a.rfind("--", 0) == 0) {
        if (const size_t eq = a.find('='); eq != std::string::npos) {
          name = a.substr(0, eq);
          inline_value = a.substr(eq + 1);
        }
      }
      if (name == "-h" || name == "--help") {
        std::cout << help();
        return false;
      }
      if (name == "--version") {
        std::cout << program_ << "\n" << build_info_text();
        return false;
      }
      Flag::Spec* s = I.find(name);
      if (!s) throw UsageError("unknown option", name, "an option listed by " + program_ + " --help", show_value(a));
      if (!s->applies_to(command_)) {
        std::string users;
        for (const auto& c : s->only) users += (users.empty() ? "" : ", ") + c;
        throw UsageError("option not used by this command", s->display(), "an option of '" + command_ + "'",
                         "an option of " + users);
      }
      if (!s->takes_value) {
        if (inline_value) throw UsageError("option takes no value", name, "no value", show_value(*inline_value));
        s->set(name, "");
        ++s->count;
        continue;
      }
      std::string value;
      if (inline_value) {
        value = *inline_value;
      } else {
        if (i + 1 >= argc) throw UsageError("missing value", name, "a value (" + s->metavar + ")", "nothing");
        value = argv[++i];  // verbatim, even when it starts with '-'
      }
      if (s->count >= s->max_count) {
        if (s->max_count == 1)
          throw UsageError("option given more than once", s->display(), "one value",
                           show_value(s->first_value) + " and " + show_value(value));
        throw UsageError("option given too often", s->display(), "at most " + std::to_string(s->max_count),
                         std::to_string(s->count + 1));
      }
      s->set(s->display(), value);
      if (s->count == 0) s->first_value = value;
      ++s->count;
      continue;
    }
    // A positional argument.
    if (next_positional >= I.positionals.size())
      throw UsageError("unexpected argument", program_, "no more arguments (see --help)", show_value(a));
    Positional& p = I.positionals[next_positional];
    if (p.rest) {
      p.rest->push_back(a);
      p.filled = true;
    } else {
      *p.one = a;
      p.filled = true;
      ++next_positional;
    }
  }
  for (const auto& f : I.flags)
    if (f->is_required && f->count == 0 && f->applies_to(command_))
      throw UsageError("missing " + f->display(), command_.empty() ? "" : program_ + " " + command_);
  for (const auto& p : I.positionals)
    if (p.required && !p.filled) throw UsageError("missing " + p.name, "");
  return true;
}

// ---- help -----------------------------------------------------------------------------------------

std::string Parser::usage() const {
  auto line = [&](const std::string& cmd) {
    std::string s = program_ + (cmd.empty() ? "" : " " + cmd);
    for (const auto& f : impl_->flags)
      if (f->is_required && f->applies_to(cmd)) s += " " + f->names.front() + " " + f->metavar;
    for (const auto& p : impl_->positionals) s += p.required ? " " + p.name : " [" + p.name + (p.rest ? " ...]" : "]");
    return s + " [options]";
  };
  std::string s;
  if (impl_->commands.empty() || !command_.empty()) return "usage: " + line(command_) + "\n";
  for (const auto& c : impl_->commands) s += (s.empty() ? "usage: " : "       ") + line(c.first) + "\n";
  return s;
}

std::string Parser::help() const {
  std::ostringstream o;
  o << usage();
  if (!command_.empty()) {
    for (const auto& c : impl_->commands)
      if (c.first == command_) o << c.second << "\n";
  } else {
    o << summary_ << "\n";
    if (!impl_->commands.empty()) {
      o << "\ncommands (" << program_ << " COMMAND --help shows each one's options):\n";
      for (const auto& c : impl_->commands) {
        char buf[64];
        std::snprintf(buf, sizeof buf, "  %-12s ", c.first.c_str());
        o << buf << c.second << "\n";
      }
    }
  }
  for (const auto& p : impl_->positionals) {
    if (p.help.empty()) continue;
    char buf[64];
    std::snprintf(buf, sizeof buf, "  %-28s ", p.name.c_str());
    o << (&p == &impl_->positionals.front() ? "\narguments:\n" : "") << buf << p.help << "\n";
  }
  std::string group = "\x01";
  for (const auto& f : impl_->flags) {
    if (!command_.empty() && !f->applies_to(command_)) continue;
    if (f->group != group) {
      group = f->group;
      o << "\n" << (group.empty() ? "options" : group) << ":\n";
    }
    std::string left = "  ";
    for (size_t k = 0; k < f->names.size(); ++k) left += (k ? ", " : "") + f->names[k];
    if (f->takes_value) left += " " + f->metavar;
    std::string right = f->help;
    std::vector<std::string> notes;
    if (f->is_required) notes.push_back("required");
    if (!f->range_text.empty()) notes.push_back(f->range_text);
    if (!f->default_text.empty()) notes.push_back("default " + f->default_text);
    if (f->max_count > 1 && f->takes_value)
      notes.push_back(f->max_count == SIZE_MAX ? "repeatable" : "up to " + std::to_string(f->max_count) + " times");
    if (command_.empty() && !f->only.empty()) {
      std::string users;
      for (const auto& c : f->only) users += (users.empty() ? "" : ", ") + c;
      notes.push_back(users);
    }
    if (!notes.empty()) {
      right += " (";
      for (size_t k = 0; k < notes.size(); ++k) right += (k ? "; " : "") + notes[k];
      right += ")";
    }
    if (left.size() < 30) left.append(30 - left.size(), ' ');
    else left += "\n" + std::string(30, ' ');
    o << left << right << "\n";
  }
  o << "\n  -h, --help                  show this help\n"
       "  --version                   show the build (omniflux, LibTorch, CUDA, devices)\n"
       "\nexit status: 0 ok, 1 runtime error, 2 usage error, 130 cancelled (Ctrl-C)\n";
  return o.str();
}

// ---- runtime flags --------------------------------------------------------------------------------

void parse_device(const std::string& v, RuntimeOptions* rt) {
  RuntimeOptions probe;
  size_t start = 0;
  bool have_default = false;
  while (start <= v.size()) {
    const size_t comma = std::min(v.find(',', start), v.size());
    const std::string item = v.substr(start, comma - start);
    const size_t eq = item.find('=');
    if (eq == std::string::npos) {
      if (have_default) throw Error("more than one default device", "--device", "D[,COMPONENT=D...]", v);
      probe.device = item;
      have_default = true;
    } else if (!probe.placement.emplace(item.substr(0, eq), item.substr(eq + 1)).second) {
      throw Error("a component placed twice", "--device", "each component once", item.substr(0, eq));
    }
    start = comma + 1;
  }
  probe.validate();  // devices, component names, one kind of device
  rt->device = probe.device;
  rt->placement = probe.placement;
}

void add_runtime_flags(Parser& p, RuntimeOptions* rt, bool with_offload) {
  p.group("runtime");
  p.custom("--device", "D[,COMPONENT=D...]",
           "cpu, cuda or cuda:N; then components placed elsewhere, e.g. cuda:0,dit=cuda:1 (text, dit, vae, vlm, siglip, lm, vq)",
           [rt](const std::string& v) { parse_device(v, rt); },
           rt->device);
  p.custom("--dtype", "T", "auto (float32 on the CPU, bfloat16 on CUDA), float32, bfloat16 or float16",
           [rt](const std::string& v) {
             if (v != "auto") (void)parse_dtype(v);
             rt->dtype = v;
           },
           rt->dtype);
  p.integer("--threads", &rt->num_threads, 0, max_threads(), "N", "CPU threads, 0 = all hardware threads");
  p.toggle("--decode-graphs", &rt->decode_graphs,
           "LM decoding as CUDA graphs, one per 256-token KV bucket (docs/gpu.md); on the CPU a check, not a speed-up");
  if (with_offload) {
    p.custom("--offload", "none|model|sequential",
             "weights on the device only while used: per model, or block by block", [rt](const std::string& v) {
               rt->offload = parse_offload(v);
             },
             offload_name(rt->offload));
    p.number("--max-vram", &rt->max_vram_gb, 0, 1e6, "GB", "device memory budget in GiB (a 24 GB card: 24) that --dry-run checks the plan against; 0 = none");
  }
  p.group("");
}

void apply_runtime(const RuntimeOptions& rt) {
  std::vector<std::string> devices = {rt.device};
  for (const auto& [name, d] : rt.placement) devices.push_back(d);
  for (const std::string& d : devices) {
    const c10::Device dev(d);
    if (!dev.is_cuda()) continue;
    const int n = build_info().cuda_devices;
    const int index = dev.has_index() ? dev.index() : 0;
    if (index >= n)
      throw Error("no such CUDA device", "--device", n == 0 ? "a machine with a CUDA GPU" : "cuda:0..cuda:" + std::to_string(n - 1),
                  d + (n == 0 ? " (no CUDA device here)" : ""));
  }
  rt.validate();
  (void)rt.compute_dtype();
  set_num_threads(rt.num_threads);
}

// ---- files ------------------------------------------------------------------------------------------

void check_input_file(const std::string& flag, const std::string& path) {
  if (!reads_inputs()) return;  // rank 0 reads it and shares the contents
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0)
    throw Error("cannot read input file", flag + " " + path, "an existing file", std::strerror(errno));
  if (S_ISDIR(st.st_mode)) throw Error("input is a folder", flag + " " + path, "a file", "a folder");
  if (!S_ISREG(st.st_mode))
    throw Error("input is not a regular file", flag + " " + path, "a regular file",
                S_ISFIFO(st.st_mode) ? "a FIFO" : "a device or socket");
  if (::access(path.c_str(), R_OK) != 0)
    throw Error("cannot read input file", flag + " " + path, "a readable file", std::strerror(errno));
}

void check_input_folder(const std::string& flag, const std::string& path) { require_folder(path, flag); }

void check_output_file(const std::string& flag, const std::string& path) {
  if (!reads_inputs()) return;  // rank 0 writes
  struct stat st {};
  if (::stat(path.c_str(), &st) == 0) {
    if (S_ISDIR(st.st_mode)) throw Error("output is a folder", flag + " " + path, "a file name", "a folder");
    if (!S_ISREG(st.st_mode)) {  // /dev/null, /dev/stdout, a FIFO: written in place
      if (::access(path.c_str(), W_OK) != 0)
        throw Error("cannot write output", flag + " " + path, "a writable file", std::strerror(errno));
      return;
    }
  }
  const fs::path p(path);
  const std::string dir = p.has_parent_path() ? p.parent_path().string() : ".";
  struct stat ds {};
  if (::stat(dir.c_str(), &ds) != 0)
    throw Error("output folder does not exist", flag + " " + path, "an existing folder", std::strerror(errno));
  if (!S_ISDIR(ds.st_mode)) throw Error("output folder is not a folder", flag + " " + path, "a folder", dir + " is a file");
  // The output is written as a temporary file beside it and renamed: the folder must be writable.
  if (::access(dir.c_str(), W_OK | X_OK) != 0)
    throw Error("output folder is not writable", flag + " " + path, "a writable folder", std::strerror(errno));
}

// ---- cancel -----------------------------------------------------------------------------------------

namespace {
std::atomic<bool> g_cancel{false};
extern "C" void on_cancel_signal(int) { g_cancel.store(true); }
}  // namespace

void install_cancel_handler() {
  struct sigaction sa {};
  sa.sa_handler = on_cancel_signal;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = SA_RESETHAND;  // the second Ctrl-C gets the default action: the process ends
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);
}

bool cancel_requested() { return g_cancel.load(); }

// ---- run --------------------------------------------------------------------------------------------

int run(const std::string& program_name, const std::function<int()>& body) {
  int rc = kExitOk;
  std::string program = program_name;
  try {
    try {
      rc = body();
    } catch (...) {
      if (current_rank() >= 0) program += " [rank " + std::to_string(current_rank()) + "]";
      throw;
    }
  } catch (const ExitRequest& e) {
    return e.code;
  } catch (const UsageError& e) {
    std::fprintf(stderr, "%s: %s\n%s(%s --help lists every option)\n", program.c_str(), e.what(), g_usage.c_str(),
                 program.c_str());
    return kExitUsage;
  } catch (const Error& e) {
    std::fprintf(stderr, "%s: %s\n", program.c_str(), e.what());
    rc = kExitRuntimeError;
  } catch (const c10::Error& e) {
    std::fprintf(stderr, "%s: LibTorch error: %s\n", program.c_str(), e.what_without_backtrace());
    rc = kExitRuntimeError;
  } catch (const std::filesystem::filesystem_error& e) {
    std::fprintf(stderr, "%s: %s\n", program.c_str(), e.what());  // names the paths
    rc = kExitRuntimeError;
  } catch (const std::bad_alloc&) {
    std::fprintf(stderr, "%s: out of memory\n", program.c_str());
    rc = kExitRuntimeError;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%s: unexpected error: %s\n", program.c_str(), e.what());
    rc = kExitRuntimeError;
  }
  if (rc == kExitCancelled) std::fprintf(stderr, "%s: cancelled\n", program.c_str());
  // Output on stdout that could not be written is a failure, not a success.
  std::cout.flush();
  if (std::fflush(stdout) != 0 || std::ferror(stdout) || !std::cout) {
    std::fprintf(stderr, "%s: cannot write to standard output: %s\n", program.c_str(), std::strerror(errno));
    if (rc == kExitOk) rc = kExitRuntimeError;
  }
  return rc;
}

int print_dry_run(const std::vector<plan::ComponentPlan>& plans, const RuntimeOptions& rt) {
  std::cout << "dry run on the meta device (no weights read beyond the file headers), bf16 figures:\n"
            << plan::to_table(plans);
  for (const auto& c : plans)
    if (!c.ok()) {
      std::fprintf(stderr, "dry run failed: %s: %s\n", c.name.c_str(), c.error.c_str());
      return kExitRuntimeError;
    }
  std::vector<std::string> formats;
  if (rt.compute_dtype() == at::kFloat) formats.push_back("fp32");
  for (const char* f : {"bf16", "fp8"}) formats.push_back(f);
  std::cout << "\n" << plan::offload_table(plans, formats, rt.max_vram_gb)
            << "(fp8 columns: folders written by omniflux-quantize --weights fp8 or int8; working set = weights +\n"
               " 2 x the largest activation + KV cache; sequential streams the DiT and LM blocks)\n";
  if (!rt.placement.empty()) std::cout << "\n" << plan::placement_table(plans, rt, formats, rt.max_vram_gb);
  if (rt.parallel)
    std::cout << "\n(per rank: activations and, under tensor parallelism, the language models' layers are one rank's\n"
                 " share in the estimates above; the first table counts the whole checkpoint)\n"
              << plan::traffic_table(plans, *rt.parallel);
  return kExitOk;
}

}  // namespace omniflux::cli
