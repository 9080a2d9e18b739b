// Peak host memory while loading a checkpoint of a few hundred MB. Its own binary, so the peak RSS
// it reads (VmHWM, reset through /proc/self/clear_refs) belongs to this load alone.
#include <gtest/gtest.h>

#include <fstream>
#include <string>

#include <ATen/ATen.h>

#include "omniflux/io/weights.h"
#include "../test_util.h"

namespace {

int64_t status_kb(const char* field) {
  std::ifstream in("/proc/self/status");
  std::string line;
  const std::string key = std::string(field) + ":";
  while (std::getline(in, line))
    if (line.compare(0, key.size(), key) == 0) return std::stoll(line.substr(key.size()));
  return -1;
}

bool reset_peak() {
  std::ofstream f("/proc/self/clear_refs");
  f << "5";
  f.flush();
  return static_cast<bool>(f);
}

constexpr int64_t kRows = 4096, kCols = 1024;  // 16 MiB per F32 tensor, 8 MiB per BF16 one
constexpr int64_t kMiB = 1024 * 1024;

// 320 MiB in either dtype.
int64_t tensor_count(at::ScalarType dtype) { return dtype == at::kFloat ? 20 : 40; }

std::string write_checkpoint(const TempDir& dir, at::ScalarType dtype) {
  std::vector<omniflux::TensorToWrite> list;
  at::Tensor base = at::randn({kRows, kCols}).to(dtype);
  for (int64_t i = 0; i < tensor_count(dtype); ++i) list.push_back({"layers." + std::to_string(i) + ".weight", base + i});
  const std::string p = (dir.path() / "big.safetensors").string();
  omniflux::save_safetensors(p, list);
  return p;
}

}  // namespace

// Zero-copy load: every tensor views the mapping, so after touching all of them the peak is the
// mapped size (320 MiB), not twice that.
TEST(LoadMemory, ZeroCopyPeakIsTheMappedSize) {
  TempDir dir;
  const std::string path = write_checkpoint(dir, at::kFloat);
  const int64_t file_mib = static_cast<int64_t>(std::filesystem::file_size(path)) / kMiB;
  ASSERT_GE(file_mib, 300);
  ASSERT_TRUE(reset_peak()) << "cannot reset the peak RSS through /proc/self/clear_refs";
  const int64_t before = status_kb("VmRSS");
  double sum = 0;
  {
    auto store = omniflux::WeightStore::open(path);
    std::vector<at::Tensor> kept;
    for (int64_t i = 0; i < tensor_count(at::kFloat); ++i) kept.push_back(store->root().sub("layers").sub(i).get("weight", {kRows, kCols}));
    for (const auto& t : kept) sum += t.sum().item<double>();  // touches every page
    store->finish();
  }
  const int64_t peak_mib = (status_kb("VmHWM") - before) / 1024;
  std::printf("zero-copy load: file %lld MiB, peak RSS growth %lld MiB\n", (long long)file_mib, (long long)peak_mib);
  EXPECT_TRUE(std::isfinite(sum));
  EXPECT_LE(peak_mib, file_mib + 32);
}

// Converting load (BF16 on disk, F32 wanted), one tensor converted and dropped at a time: the peak
// is the mapped size plus about one converted tensor.
TEST(LoadMemory, ConvertingPeakIsMappedSizePlusOneTensor) {
  TempDir dir;
  const std::string path = write_checkpoint(dir, at::kBFloat16);
  const int64_t file_mib = static_cast<int64_t>(std::filesystem::file_size(path)) / kMiB;
  ASSERT_GE(file_mib, 300);
  const int64_t tensor_f32_mib = kRows * kCols * 4 / kMiB;
  ASSERT_TRUE(reset_peak());
  const int64_t before = status_kb("VmRSS");
  double sum = 0;
  {
    auto store = omniflux::WeightStore::open(path);
    for (int64_t i = 0; i < tensor_count(at::kBFloat16); ++i) {
      at::Tensor t = store->root().sub("layers").sub(i).get("weight", {kRows, kCols}, at::kFloat);
      ASSERT_EQ(t.scalar_type(), at::kFloat);
      sum += t.sum().item<double>();
    }
  }
  const int64_t peak_mib = (status_kb("VmHWM") - before) / 1024;
  std::printf("converting load: file %lld MiB, one F32 tensor %lld MiB, peak RSS growth %lld MiB\n",
              (long long)file_mib, (long long)tensor_f32_mib, (long long)peak_mib);
  EXPECT_TRUE(std::isfinite(sum));
  EXPECT_LE(peak_mib, file_mib + tensor_f32_mib + 32);
}
