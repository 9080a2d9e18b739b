// omniflux-tokenize: text to token ids (or back) with any omniflux tokenizer (--help lists the flags).
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

#include "cli.h"
#include "omniflux/error.h"
#include "text/chat_template.h"
#include "omniflux/text/tokenizer.h"

namespace {

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

struct Args {
  std::string tokenizer;
  std::optional<std::string> text, text_file, decode, chat_template, system;
  size_t images = 0, max_length = 0;
  bool pad = false, no_special = false, skip_special = false, json = false, print_prompt = false;
};

std::string read_text_file(const std::string& path) {
  omniflux::cli::check_input_file("--text-file", path);
  std::ifstream f(path, std::ios::binary);
  if (!f) throw omniflux::Error("cannot open file", path, "a readable file", "open failed");
  std::ostringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

}  // namespace

namespace cli = omniflux::cli;

int main(int argc, char** argv) {
  return cli::run("omniflux-tokenize", [&] {
    Args a;
    std::string chat_template;
    cli::Parser p("omniflux-tokenize",
                  "Text to token ids (one JSON array on the last line of stdout), or ids back to text, with any\n"
                  "omniflux tokenizer. Values are taken verbatim, so text may start with '-'.");
    p.path("--tokenizer", &a.tokenizer, "PATH",
           "tokenizer.json, a folder holding one, a folder with vocab.json + merges.txt, spiece.model, or a\n"
           "                              folder holding it")
        .required();
    p.text("--text", &a.text, "STR", "text to encode");
    p.text("--text-file", &a.text_file, "FILE", "read the text to encode from FILE (raw bytes)");
    p.choice("--chat-template", &chat_template, {"qwen2_5_vl", "uniworld", "xomni"}, "one user turn around the text");
    p.integer("--images", &a.images, 0, 1024, "N", "image placeholders for qwen2_5_vl (before the text) or uniworld (after)");
    p.text("--system", &a.system, "STR", "replace the template's default system prompt");
    p.toggle("--print-prompt", &a.print_prompt, "print the rendered chat prompt as a JSON string before the ids");
    p.integer("--max-length", &a.max_length, 0, int64_t(1) << 40, "N", "truncate to N ids (special tokens kept); 0 = no limit");
    p.toggle("--pad", &a.pad, "pad to --max-length (default: the tokenizer's model_max_length)");
    p.toggle("--no-special-tokens", &a.no_special, "do not add bos/eos");
    p.text("--decode", &a.decode, "IDS", "decode ids given as [1, 2, 3], 1,2,3 or \"1 2 3\"");
    p.toggle("--skip-special-tokens", &a.skip_special, "with --decode: drop special tokens");
    p.toggle("--json", &a.json, "with --decode: print the text as a JSON string");
    if (!p.parse(argc, argv)) return cli::kExitOk;
    if (!chat_template.empty()) a.chat_template = chat_template;
    const int modes = (a.text ? 1 : 0) + (a.text_file ? 1 : 0) + (a.decode ? 1 : 0);
    if (modes != 1)
      throw cli::UsageError("give exactly one of --text, --text-file and --decode", "omniflux-tokenize", "one",
                            std::to_string(modes));
    if (a.decode && (a.chat_template || a.pad || a.max_length || a.images || a.system || a.no_special || a.print_prompt))
      throw cli::UsageError("--decode takes only --skip-special-tokens and --json", "--decode");
    if (!a.decode && (a.skip_special || a.json))
      throw cli::UsageError("--skip-special-tokens and --json go with --decode", "omniflux-tokenize");
    if (!a.chat_template && (a.images || a.system || a.print_prompt))
      throw cli::UsageError("--images, --system and --print-prompt need --chat-template", "omniflux-tokenize");
    if (a.text_file) cli::check_input_file("--text-file", *a.text_file);

    const auto tok = omniflux::text::load_tokenizer(a.tokenizer);
    if (a.decode) {
      const std::string text = tok->decode(parse_ids(*a.decode), a.skip_special);
      std::cout << (a.json ? json_string(text) : text) << "\n";
      return cli::kExitOk;
    }
    std::string text = a.text ? *a.text : read_text_file(*a.text_file);
    omniflux::text::check_utf8(text, a.text ? "--text" : *a.text_file);
    if (a.chat_template) {
      const auto which = omniflux::text::parse_chat_template(*a.chat_template);
      // The template's special tokens must be added tokens, or they would be split into pieces.
      tok->require_token_id("<|im_start|>", a.tokenizer + " (a " + tok->kind() + " tokenizer; chat templates need a Qwen2 one)");
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
    return cli::kExitOk;
  });
}
