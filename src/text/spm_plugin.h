#pragma once
// Loads libomniflux_spm.so (sentencepiece, isolated; see plugin/spm_plugin_abi.h) and wraps one
// model in it (internal).
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

struct omniflux_spm;

namespace omniflux::text::detail {

struct SpmApi;

// Where the plugin is looked for: $OMNIFLUX_PLUGIN_DIR when set, else the folder of the
// libomniflux shared object.
std::string spm_plugin_path();

class SpmModel {
 public:
  // Throws omniflux::Error when the plugin is missing or the model does not load.
  static std::shared_ptr<SpmModel> load_file(const std::string& path);
  ~SpmModel();
  SpmModel(const SpmModel&) = delete;
  SpmModel& operator=(const SpmModel&) = delete;

  std::vector<int32_t> encode(std::string_view text) const;
  std::string decode(const std::vector<int32_t>& ids) const;
  std::optional<std::string> id_to_piece(int32_t id) const;
  std::optional<int32_t> piece_to_id(std::string_view piece) const;
  int32_t size() const;
  // 0 unk, 1 bos, 2 eos, 3 pad; -1 when the model has none.
  int32_t special_id(int which) const;

 private:
  SpmModel(const SpmApi* api, omniflux_spm* handle, std::string where)
      : api_(api), handle_(handle), where_(std::move(where)) {}
  const SpmApi* api_;
  omniflux_spm* handle_;
  std::string where_;
};

}  // namespace omniflux::text::detail
