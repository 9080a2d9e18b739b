#include "omniflux/io/quantize.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <map>
#include <regex>
#include <set>

#include <ATen/ATen.h>
#include <nlohmann/json.hpp>

#include "omniflux/error.h"
#include "io/paths.h"
#include "omniflux/io/safetensors.h"

namespace fs = std::filesystem;
using nlohmann::json;

namespace omniflux {

bool is_block_linear_weight(const std::string& name, const std::vector<int64_t>& shape) {
  static const std::regex block(R"((^|\.)(layers|blocks|block|transformer_blocks|single_transformer_blocks)\.\d+\.)");
  if (shape.size() != 2 || name.size() < 7 || name.compare(name.size() - 7, 7, ".weight") != 0) return false;
  if (name.find("embed") != std::string::npos || name.find("relative_attention_bias") != std::string::npos) return false;
  return std::regex_search(name, block);
}

namespace {

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

bool is_pickle(const std::string& f) { return ends_with(f, ".bin") || ends_with(f, ".pt") || ends_with(f, ".pth"); }

// Pickles that hold no weights (training state); copied as they are.
bool is_training_pickle(const std::string& f) {
  return f == "training_args.bin" || f == "optimizer.pt" || f == "scheduler.pt" || f.rfind("rng_state", 0) == 0;
}

bool is_index(const std::string& f) { return ends_with(f, ".safetensors.index.json") || ends_with(f, ".bin.index.json"); }

bool is_weight_file(const std::string& f) {
  return ends_with(f, ".safetensors") || (is_pickle(f) && !is_training_pickle(f));
}

std::string read_text(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  if (!in) throw Error("cannot read file", p.string());
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

void write_text(const fs::path& p, const std::string& text) {
  std::ofstream out(p, std::ios::binary | std::ios::trunc);
  out << text;
  out.flush();
  if (!out) throw Error("write failed", p.string());
}

json read_json(const fs::path& p) {
  try {
    return json::parse(read_text(p));
  } catch (const json::parse_error& e) {
    throw Error("not valid JSON", p.string(), "", e.what());
  }
}

bool is_vae_folder(const fs::path& dir) {
  if (dir.filename() == "vae") return true;
  std::error_code ec;
  const fs::path cfg = dir / "config.json";
  if (!fs::is_regular_file(cfg, ec)) return false;
  const json j = read_json(cfg);
  return j.is_object() && j.contains("_class_name") && j["_class_name"].is_string() &&
         j["_class_name"].get<std::string>().find("Autoencoder") != std::string::npos;
}

std::string rel_name(const fs::path& dir, const fs::path& root) {
  const std::string r = fs::relative(dir, root).generic_string();
  return r.empty() ? "." : r;
}

json quantization_config(WeightFormat f, const std::vector<std::string>& ignored) {
  const bool fp8 = f == WeightFormat::Fp8;
  const json weights = {{"num_bits", 8}, {"type", fp8 ? "float" : "int"}, {"strategy", "channel"},
                        {"symmetric", true}, {"dynamic", false}};
  const json acts = {{"num_bits", 8}, {"type", fp8 ? "float" : "int"}, {"strategy", "token"},
                     {"symmetric", true}, {"dynamic", true}};
  return {{"quant_method", "compressed-tensors"},
          {"format", fp8 ? "float-quantized" : "int-quantized"},
          {"quantization_status", "compressed"},
          {"config_groups", {{"group_0", {{"targets", {"Linear"}}, {"weights", weights}, {"input_activations", acts}}}}},
          {"ignore", ignored},
          {"producer", "omniflux-quantize"}};
}

}  // namespace

std::string quantization_config_json(WeightFormat format, const std::vector<std::string>& ignored) {
  return quantization_config(format, ignored).dump();
}

namespace {

struct FileResult {
  std::string out_name;                      // file name written
  std::vector<std::string> keys;             // tensor names written
  std::vector<std::string> ignored_linears;  // 2-D weights left as they were
  int64_t converted = 0, tensors = 0;
  uint64_t bytes_in = 0, bytes_out = 0;
};

FileResult convert_file(const fs::path& in, const fs::path& out_dir, const QuantizeOptions& opt) {
  FileResult r;
  const std::string fname = in.filename().string();
  r.out_name = is_pickle(fname) ? in.stem().string() + ".safetensors" : fname;
  const Checkpoint ck = Checkpoint::open(in.string());
  std::vector<std::string> names;
  std::map<std::string, std::string> metadata;
  if (!ck.files().empty()) {
    for (const auto& t : ck.files()[0].tensors()) names.push_back(t.name);  // file order
    metadata = ck.metadata();
  } else {
    names = ck.names();
  }
  for (const auto& n : names)
    if (ends_with(n, ".weight_scale"))
      throw Error("the checkpoint is already quantised", in.string() + ": " + n, "plain weights", "a weight_scale");
  auto scales = std::make_shared<std::map<std::string, at::Tensor>>();
  std::vector<LazyTensorToWrite> list;
  const int64_t total = static_cast<int64_t>(names.size());
  auto done = std::make_shared<int64_t>(0);
  auto tick = [&opt, done, total, fname] {
    ++*done;
    if (opt.progress) opt.progress(fname, *done, total);
  };
  for (const auto& n : names) {
    const TensorInfo& info = ck.info(n);
    r.bytes_in += info.nbytes();
    ++r.tensors;
    const bool convert = is_block_linear_weight(n, info.shape) &&
                         (info.dtype == Dtype::F32 || info.dtype == Dtype::F16 || info.dtype == Dtype::BF16);
    if (info.shape.size() == 2 && ends_with(n, ".weight") && !convert) r.ignored_linears.push_back(n.substr(0, n.size() - 7));
    if (!convert) {
      list.push_back({n, info.dtype, info.shape, [&ck, n, tick] {
                        tick();
                        return ck.get(n);
                      }});
      r.bytes_out += info.nbytes();
      continue;
    }
    ++r.converted;
    const int64_t out = info.shape[0];
    if (opt.format == WeightFormat::Bf16) {
      list.push_back({n, Dtype::BF16, info.shape, [&ck, n, tick] {
                        tick();
                        return ck.get(n).to(at::kBFloat16);
                      }});
      r.bytes_out += static_cast<uint64_t>(info.numel()) * 2;
      continue;
    }
    const WeightFormat format = opt.format;
    list.push_back({n, opt.format == WeightFormat::Fp8 ? Dtype::F8_E4M3 : Dtype::I8, info.shape,
                    [&ck, n, format, scales, tick] {
                      tick();
                      QuantizedWeight q = quantize_weight(ck.get(n), format);
                      (*scales)[n] = q.scale;
                      return q.codes;
                    }});
    list.push_back({n + "_scale", Dtype::F32, {out, 1}, [n, scales] {
                      at::Tensor s = scales->at(n);
                      scales->erase(n);
                      return s;
                    }});
    r.bytes_out += static_cast<uint64_t>(info.numel()) + static_cast<uint64_t>(out) * 4;
  }
  save_safetensors_lazy((out_dir / r.out_name).string(), list, metadata);
  for (const auto& t : list) r.keys.push_back(t.name);
  return r;
}

void copy_file_following_links(const fs::path& from, const fs::path& to) {
  std::error_code ec;
  fs::copy_file(fs::canonical(from), to, fs::copy_options::overwrite_existing, ec);
  if (ec) throw Error("cannot copy file", from.string(), to.string(), ec.message());
}

// Rewrites string values equal to a renamed file (pickle -> safetensors) anywhere in `j`.
void rename_paths(json& j, const std::map<std::string, std::string>& renamed) {
  if (j.is_string()) {
    auto it = renamed.find(j.get<std::string>());
    if (it != renamed.end()) j = it->second;
  } else if (j.is_object() || j.is_array()) {
    for (auto& v : j) rename_paths(v, renamed);
  }
}

}  // namespace

QuantizeReport quantize_folder(const std::string& src_in, const std::string& dst_in, const QuantizeOptions& opt) {
  std::error_code ec;
  const fs::path src(src_in), dst(dst_in);
  require_folder(src_in, "source");
  if (fs::exists(dst, ec)) throw Error("destination exists", dst_in, "a new folder name", "an existing path");
  const fs::path parent = dst.has_parent_path() ? dst.parent_path() : fs::path(".");
  if (!fs::is_directory(parent, ec)) throw Error("destination's parent folder does not exist", parent.string());
  const fs::path tmp = fs::path(dst_in + ".partial");
  fs::remove_all(tmp, ec);

  // Every file, grouped by folder (symlinked files and folders followed).
  std::map<fs::path, std::vector<fs::path>> by_dir;
  by_dir[src];
  for (auto it = fs::recursive_directory_iterator(src, fs::directory_options::follow_directory_symlink, ec);
       it != fs::recursive_directory_iterator(); it.increment(ec)) {
    if (ec) throw Error("cannot list folder", src_in, "", ec.message());
    if (fs::is_directory(it->path(), ec)) {
      by_dir[it->path()];
    } else if (fs::is_regular_file(it->path(), ec)) {
      by_dir[it->path().parent_path()].push_back(it->path());
    } else {
      throw Error("not a regular file", it->path().string(), "files and folders only", "a special file");
    }
  }
  std::set<std::string> weight_dirs;
  for (const auto& [dir, files] : by_dir)
    for (const auto& f : files)
      if (is_weight_file(f.filename().string())) weight_dirs.insert(rel_name(dir, src));
  for (const auto& o : opt.only)
    if (!weight_dirs.count(o == "" ? "." : o)) {
      std::string known;
      for (const auto& w : weight_dirs) known += (known.empty() ? "" : ", ") + w;
      throw Error("no such component", "--only " + o, "one of: " + known, o);
    }

  QuantizeReport report;
  try {
    for (const auto& [dir, files] : by_dir) {
      const std::string rel = rel_name(dir, src);
      const fs::path out_dir = rel == "." ? tmp : tmp / rel;
      fs::create_directories(out_dir);
      const bool selected = weight_dirs.count(rel) &&
                            (opt.only.empty() ? !is_vae_folder(dir)
                                              : std::find(opt.only.begin(), opt.only.end(), rel) != opt.only.end());
      std::map<std::string, std::string> renamed;         // old file name -> new
      std::map<std::string, std::string> key_file;        // tensor -> new file name
      std::vector<std::string> ignored;
      int64_t converted = 0;
      for (const auto& f : files) {
        const std::string name = f.filename().string();
        if (selected && is_weight_file(name)) {
          FileResult r = convert_file(f, out_dir, opt);
          report.tensors += r.tensors;
          report.converted += r.converted;
          report.bytes_in += r.bytes_in;
          report.bytes_out += r.bytes_out;
          converted += r.converted;
          if (r.out_name != name) renamed[name] = r.out_name;
          for (const auto& k : r.keys) key_file[k] = r.out_name;
          ignored.insert(ignored.end(), r.ignored_linears.begin(), r.ignored_linears.end());
        }
      }
      if (selected && converted > 0) report.components.push_back(rel);
      for (const auto& f : files) {
        const std::string name = f.filename().string();
        if (selected && is_weight_file(name)) continue;
        if (selected && is_index(name)) {
          // The index names the new files and the added scales.
          json idx = read_json(f);
          json map = json::object();
          uint64_t total = 0;
          for (const auto& [k, file] : key_file) map[k] = file;
          idx["weight_map"] = map;
          if (!idx.contains("metadata") || !idx["metadata"].is_object()) idx["metadata"] = json::object();
          for (const auto& e : fs::directory_iterator(out_dir))
            if (ends_with(e.path().filename().string(), ".safetensors")) total += fs::file_size(e.path());
          idx["metadata"]["total_size"] = total;
          std::string out_name = name;
          if (ends_with(name, ".bin.index.json")) out_name = name.substr(0, name.size() - 15) + ".safetensors.index.json";
          write_text(out_dir / out_name, idx.dump(2) + "\n");
          continue;
        }
        if (selected && name == "config.json" && (converted > 0 || !renamed.empty())) {
          json cfg = read_json(f);
          if (cfg.is_object() && cfg.contains("quantization_config"))
            throw Error("the model is already quantised", f.string() + ": quantization_config", "no quantization_config",
                        "present");
          rename_paths(cfg, renamed);
          if (converted > 0 && opt.format != WeightFormat::Bf16) cfg["quantization_config"] = quantization_config(opt.format, ignored);
          write_text(out_dir / name, cfg.dump(2) + "\n");
          continue;
        }
        copy_file_following_links(f, out_dir / name);
      }
    }
    if (report.components.empty())
      throw Error("nothing to convert", src_in, "linear weights inside numbered blocks", "none found");
    fs::rename(tmp, dst, ec);
    if (ec) throw Error("cannot move the result into place", dst_in, "", ec.message());
  } catch (...) {
    fs::remove_all(tmp, ec);
    throw;
  }
  return report;
}

}  // namespace omniflux
