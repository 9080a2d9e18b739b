// omniflux-tokenize: text to token ids (or back) with any omniflux tokenizer.
//
//   omniflux-tokenize --tokenizer PATH --text STR [--chat-template qwen2_5_vl|uniworld|xomni]
//                     [--images N] [--system STR] [--max-length N] [--pad] [--no-special-tokens]
//   omniflux-tokenize --tokenizer PATH --decode IDS [--skip-special-tokens] [--json]
//
// Encoding prints the ids as one JSON array on the last line of stdout. Option values are taken
// verbatim, so text may start with '-'. Errors go to stderr with exit status 1 (2 for usage).
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "omniflux/error.h"
#include "omniflux/text/chat_template.h"
#include "omniflux/text/tokenizer.h"

namespace {

const char* kUsage =
    "usage: omniflux-tokenize --tokenizer PATH (--text STR | --text-file FILE | --decode IDS) [options]\n"
    "  --tokenizer PATH        tokenizer.json, a folder holding one, a folder with vocab.json + merges.txt,\n"
    "                          spiece.model, or a folder holding it\n"
    "  --text STR              text to encode (taken verbatim, may start with '-')\n"
    "  --text-file FILE        read the text to encode from FILE (raw bytes)\n"
    "  --chat-template NAME    qwen2_5_vl | uniworld | xomni: one user turn around the text\n"
    "  --images N              image placeholders for qwen2_5_vl (before the text) or uniworld (after)\n"
    "  --system STR            replace the template's default system prompt\n"
    "  --print-prompt          print the rendered chat prompt as a JSON string before the ids\n"
    "  --max-length N          truncate to N ids (special tokens kept)\n"
    "  --pad                   pad to --max-length (default: the tokenizer's model_max_length)\n"
    "  --no-special-tokens     do not add bos/eos\n"
    "  --decode IDS            decode ids given as [1, 2, 3], 1,2,3 or \"1 2 3\"\n"
    "  --skip-special-tokens   with --decode: drop special tokens\n"
    "  --json                  with --decode: print the text as a JSON string\n";

std::string json_string(const std::string& s) {
  std::string out = "\"";
  for (const char ch : s) {
    const auto c = static_cast<unsigned char>(ch);
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      case '\b': out += "\\b"; break;
      case '\f': out += "\\f"; break;
      default:
        if (c < 0x20 || c == 0x7F) {
          char buf[8];
          std::snprintf(buf, sizeof(buf), "\\u%04x", c);
          out += buf;
        } else {
          out += ch;
        }
    }
  }
  return out + "\"";
}

std::vector<int64_t> parse_ids(const std::string& s) {
  std::vector<int64_t> ids;
  size_t i = 0;
  while (i < s.size()) {
    const char c = s[i];
    if (c == '[' || c == ']' || c == ',' || c == ' ' || c == '\t' || c == '\n' || c == '\r') {
      ++i;
      continue;
    }
    if (c == '-' || (c >= '0' && c <= '9')) {
      size_t end = i + 1;
      while (end < s.size() && s[end] >= '0' && s[end] <= '9') ++end;
      const std::string num = s.substr(i, end - i);
      if (num == "-") throw omniflux::Error("malformed id list", "--decode", "integers", s);
      try {
        ids.push_back(std::stoll(num));
      } catch (...) {
        throw omniflux::Error("id out of range", "--decode", "a 64-bit integer", num);
      }
      i = end;
      continue;
    }
    throw omniflux::Error("malformed id list", "--decode", "integers separated by commas or spaces",
                          "character '" + std::string(1, c) + "' at offset " + std::to_string(i));
  }
  return ids;
}

size_t parse_count(const std::string& s, const char* flag) {
  if (s.empty() || s.find_first_not_of("0123456789") != std::string::npos || s.size() > 12) {
    throw omniflux::Error("not a non-negative integer", flag, "a number such as 77", s);
  }
  return static_cast<size_t>(std::stoull(s));
}

struct Args {
  std::string tokenizer;
  std::optional<std::string> text, text_file, decode, chat_template, system;
  size_t images = 0, max_length = 0;
  bool pad = false, no_special = false, skip_special = false, json = false, print_prompt = false;
};

[[noreturn]] void usage_error(const std::string& msg) {
  std::cerr << "omniflux-tokenize: " << msg << "\n" << kUsage;
  std::exit(2);
}

Args parse_args(int argc, char** argv) {
  Args a;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    std::optional<std::string> inline_value;
    if (arg.rfind("--", 0) == 0) {
      if (const size_t eq = arg.find('='); eq != std::string::npos) {
        inline_value = arg.substr(eq + 1);
        arg = arg.substr(0, eq);
      }
    }
    const auto value = [&]() -> std::string {
      if (inline_value) return *inline_value;
      if (i + 1 >= argc) usage_error(arg + " needs a value");
      return argv[++i];  // verbatim, even when it starts with '-'
    };
    const auto flag = [&]() {
      if (inline_value) usage_error(arg + " takes no value");
    };
    if (arg == "--tokenizer") a.tokenizer = value();
    else if (arg == "--text") a.text = value();
    else if (arg == "--text-file") a.text_file = value();
    else if (arg == "--decode") a.decode = value();
    else if (arg == "--chat-template") a.chat_template = value();
    else if (arg == "--system") a.system = value();
    else if (arg == "--images") a.images = parse_count(value(), "--images");
    else if (arg == "--max-length") a.max_length = parse_count(value(), "--max-length");
    else if (arg == "--pad") { flag(); a.pad = true; }
    else if (arg == "--no-special-tokens") { flag(); a.no_special = true; }
    else if (arg == "--skip-special-tokens") { flag(); a.skip_special = true; }
    else if (arg == "--json") { flag(); a.json = true; }
    else if (arg == "--print-prompt") { flag(); a.print_prompt = true; }
    else if (arg == "--help" || arg == "-h") { std::cout << kUsage; std::exit(0); }
    else usage_error("unknown argument " + arg);
  }
  if (a.tokenizer.empty()) usage_error("--tokenizer is required");
  const int modes = (a.text ? 1 : 0) + (a.text_file ? 1 : 0) + (a.decode ? 1 : 0);
  if (modes != 1) usage_error("give exactly one of --text, --text-file and --decode");
  if (a.decode && (a.chat_template || a.pad || a.max_length || a.images || a.system)) {
    usage_error("--decode takes only --skip-special-tokens and --json");
  }
  if (!a.chat_template && (a.images || a.system || a.print_prompt)) {
    usage_error("--images, --system and --print-prompt need --chat-template");
  }
  return a;
}

std::string read_text_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw omniflux::Error("cannot open file", path, "a readable file", "open failed");
  std::ostringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

}  // namespace

int main(int argc, char** argv) {
  const Args a = parse_args(argc, argv);
  try {
    const auto tok = omniflux::text::load_tokenizer(a.tokenizer);
    if (a.decode) {
      const std::string text = tok->decode(parse_ids(*a.decode), a.skip_special);
      if (a.json) {
        std::cout << json_string(text) << "\n";
      } else {
        std::cout << text << "\n";
      }
      return 0;
    }
    std::string text = a.text ? *a.text : read_text_file(*a.text_file);
    omniflux::text::check_utf8(text, a.text ? "--text" : *a.text_file);
    if (a.chat_template) {
      const auto which = omniflux::text::parse_chat_template(*a.chat_template);
      // The template's special tokens must be added tokens, or they would be split into pieces.
      if (!tok->token_to_id("<|im_start|>")) {
        throw omniflux::Error("chat templates need a Qwen2 tokenizer", a.tokenizer, "a tokenizer with <|im_start|>",
                              tok->kind() + " tokenizer without it");
      }
      text = omniflux::text::render_one_turn(which, text, static_cast<int>(a.images), a.system);
      if (a.print_prompt) std::cout << json_string(text) << "\n";
    }
    omniflux::text::EncodeOptions opt;
    opt.add_special_tokens = !a.no_special;
    opt.max_length = a.max_length;
    if (a.pad) {
      if (!opt.max_length) {
        if (!tok->model_max_length()) {
          throw omniflux::Error("--pad needs a length", a.tokenizer, "--max-length N or a model_max_length", "neither");
        }
        opt.max_length = *tok->model_max_length();
      }
      opt.pad_to_max_length = true;
    }
    const std::vector<int64_t> ids = tok->encode(text, opt);
    std::string line = "[";
    for (size_t i = 0; i < ids.size(); ++i) {
      if (i) line += ", ";
      line += std::to_string(ids[i]);
    }
    std::cout << line << "]\n";
  } catch (const omniflux::Error& e) {
    std::cerr << "omniflux-tokenize: error: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
