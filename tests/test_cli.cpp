// The tools' shared command-line layer (tools/common/cli.h) and the library's atomic file writes.
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <algorithm>
#include <csignal>
#include <cstdlib>
#include <cstdint>
#include <filesystem>
#include <limits>
#include <string>
#include <vector>

#include "omniflux/error.h"
#include "io/file_write.h"
#include "omniflux/io/image.h"
#include "test_util.h"

namespace fs = std::filesystem;
using namespace omniflux;

// ---- write_file_atomic and save_png ----------------------------------------------------------------

namespace {
// Names in `dir` other than `keep`: leftovers of a temporary file would show here.
std::vector<std::string> others(const fs::path& dir, const std::vector<std::string>& keep) {
  std::vector<std::string> out;
  for (const auto& e : fs::directory_iterator(dir)) {
    const std::string n = e.path().filename().string();
    if (std::find(keep.begin(), keep.end(), n) == keep.end()) out.push_back(n);
  }
  return out;
}
}  // namespace

TEST(FileWrite, ReplacesTheWholeFileAndLeavesNoTemporary) {
  TempDir d;
  const fs::path f = d.path() / "a.json";
  write_file_atomic(f.string(), std::string("first version, longer than the second"));
  write_file_atomic(f.string(), std::string("second"));
  EXPECT_EQ(read_bytes(f), "second");
  EXPECT_TRUE(others(d.path(), {"a.json"}).empty());
  // A relative name (no folder part) goes to the current folder.
  const fs::path cwd = fs::current_path();
  fs::current_path(d.path());
  write_file_atomic("b.txt", std::string("here"));
  fs::current_path(cwd);
  EXPECT_EQ(read_bytes(d.path() / "b.txt"), "here");
}

TEST(FileWrite, FailuresAreErrorsAndLeaveNothingBehind) {
  TempDir d;
  // The target is a folder.
  fs::create_directories(d.path() / "dir");
  EXPECT_THROW(write_file_atomic((d.path() / "dir").string(), std::string("x")), Error);
  // The folder does not exist.
  EXPECT_THROW(write_file_atomic((d.path() / "missing" / "x.png").string(), std::string("x")), Error);
  // A full device (written in place, as devices cannot be renamed over).
  if (fs::exists("/dev/full")) {
    try {
      write_file_atomic("/dev/full", std::string(100000, 'x'));
      ADD_FAILURE() << "/dev/full accepted a write";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("/dev/full"), std::string::npos) << e.what();
    }
  }
  // A FIFO that nobody reads: an error at once, not a hang.
  ASSERT_EQ(mkfifo((d.path() / "fifo").c_str(), 0600), 0);
  EXPECT_THROW(write_file_atomic((d.path() / "fifo").string(), std::string("x")), Error);
  EXPECT_TRUE(others(d.path(), {"dir", "fifo"}).empty());
  EXPECT_TRUE(fs::is_empty(d.path() / "dir"));
}

TEST(FileWrite, SymlinkKeepsPointingToTheReplacedTarget) {
  TempDir d;
  write_file_atomic((d.path() / "target.txt").string(), std::string("old"));
  fs::create_symlink("target.txt", d.path() / "link.txt");
  write_file_atomic((d.path() / "link.txt").string(), std::string("new"));
  EXPECT_TRUE(fs::is_symlink(d.path() / "link.txt"));
  EXPECT_EQ(read_bytes(d.path() / "target.txt"), "new");
  EXPECT_TRUE(others(d.path(), {"target.txt", "link.txt"}).empty());
}

TEST(FileWrite, SavePngChecksTheWrite) {
  Image img{4, 2, std::vector<uint8_t>(4 * 2 * 3, 7)};
  if (fs::exists("/dev/full")) EXPECT_THROW(save_png("/dev/full", img), Error);
  TempDir d;
  EXPECT_THROW(save_png((d.path() / "no" / "x.png").string(), img), Error);
  save_png((d.path() / "x.png").string(), img);
  EXPECT_EQ(load_image((d.path() / "x.png").string()).rgb, img.rgb);
  EXPECT_TRUE(others(d.path(), {"x.png"}).empty());
  // New files get the usual permissions (0666 less the umask), not a temporary file's 0600.
  const mode_t mask = umask(0);
  umask(mask);
  EXPECT_EQ(fs::status(d.path() / "x.png").permissions(),
            static_cast<fs::perms>(0666 & ~mask));
}

#ifdef OMNIFLUX_HAVE_CLI
#include "cli.h"

namespace cli = omniflux::cli;

namespace {

// Parses `args` (program name first) with a parser that `declare` fills; returns the UsageError
// message, or "" when parsing succeeded.
template <typename Declare>
std::string parse(const std::vector<std::string>& args, Declare declare, bool* printed_help = nullptr) {
  cli::Parser p("omniflux-test", "test");
  declare(p);
  std::vector<const char*> argv;
  for (const auto& a : args) argv.push_back(a.c_str());
  try {
    testing::internal::CaptureStdout();
    const bool go_on = p.parse(static_cast<int>(argv.size()), argv.data());
    testing::internal::GetCapturedStdout();
    if (printed_help) *printed_help = !go_on;
    return "";
  } catch (const cli::UsageError& e) {
    testing::internal::GetCapturedStdout();
    return e.what();
  }
}

bool has(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

}  // namespace

TEST(CliParse, IntegersNeitherWrapNorClamp) {
  EXPECT_EQ(cli::parse_uint64("--seed", "18446744073709551615"), std::numeric_limits<uint64_t>::max());
  EXPECT_EQ(cli::parse_uint64("--seed", "0"), 0u);
  for (const char* bad : {"18446744073709551616", "1e30", "-1", "", " 5", "5 ", "+5", "0x10", "1.0", "99999999999999999999999"}) {
    try {
      cli::parse_uint64("--seed", bad);
      ADD_FAILURE() << "accepted " << bad;
    } catch (const cli::UsageError& e) {
      EXPECT_TRUE(has(e.what(), "--seed")) << e.what();
    }
  }
  EXPECT_EQ(cli::parse_int("--steps", "28", 1, 1000), 28);
  EXPECT_EQ(cli::parse_int("--x", "-7", -10, 10), -7);
  EXPECT_THROW(cli::parse_int("--threads", "4294967297", 0, 64), cli::UsageError);  // not 1
  EXPECT_THROW(cli::parse_int("--threads", "9223372036854775808", 0, 64), cli::UsageError);
  EXPECT_THROW(cli::parse_int("--steps", "0", 1, 1000), cli::UsageError);
  EXPECT_THROW(cli::parse_int("--steps", "3.5", 1, 1000), cli::UsageError);
}

TEST(CliParse, NumbersAreFiniteAndInRange) {
  EXPECT_DOUBLE_EQ(cli::parse_double("--g", "3.5", 0, 100), 3.5);
  EXPECT_DOUBLE_EQ(cli::parse_double("--g", "1e-2", 0, 100), 0.01);
  EXPECT_DOUBLE_EQ(cli::parse_double("--g", "1e-400", 0, 100), 0.0);  // underflow is a value, not an error
  for (const char* bad : {"nan", "inf", "-inf", "1e300", "1e400", "101", "-0.5", "", "3,5", "0x1p3", " 1"}) {
    try {
      cli::parse_double("--guidance", bad, 0, 100);
      ADD_FAILURE() << "accepted " << bad;
    } catch (const cli::UsageError& e) {
      EXPECT_TRUE(has(e.what(), "--guidance")) << e.what();
    }
  }
  EXPECT_THROW(cli::parse_double("--temperature", "0", 0, 100, /*lo_open=*/true), cli::UsageError);
  EXPECT_DOUBLE_EQ(cli::parse_double("--temperature", "0.1", 0, 100, true), 0.1);
}

TEST(CliParse, FlagsRepeatedMissingOrForeignAreNamed) {
  std::string prompt, image;
  int64_t steps = 28;
  std::vector<std::string> refs;
  auto declare = [&](cli::Parser& p) {
    p.text("-p,--prompt", &prompt, "TEXT", "prompt").required();
    p.integer("--steps", &steps, 1, 1000, "N", "steps");
    p.paths("-r,--ref", &refs, "IMAGE", "reference", 2);
  };
  EXPECT_EQ(parse({"t", "-p", "a", "--steps", "3"}, declare), "");
  EXPECT_EQ(prompt, "a");
  EXPECT_EQ(steps, 3);
  EXPECT_TRUE(has(parse({"t", "--steps", "3"}, declare), "missing -p/--prompt"));
  EXPECT_TRUE(has(parse({"t", "-p", "a", "-p", "b"}, declare), "-p/--prompt"));
  EXPECT_TRUE(has(parse({"t", "-p", "a", "--steps", "2", "--steps", "3"}, declare), "--steps"));
  EXPECT_TRUE(has(parse({"t", "-p", "a", "--bogus"}, declare), "--bogus"));
  EXPECT_TRUE(has(parse({"t", "-p"}, declare), "missing value"));
  EXPECT_TRUE(has(parse({"t", "-p", "a", "stray"}, declare), "stray"));
  refs.clear();
  EXPECT_EQ(parse({"t", "-p", "a", "-r", "x", "-r", "y"}, declare), "");
  EXPECT_EQ(refs, (std::vector<std::string>{"x", "y"}));
  EXPECT_TRUE(has(parse({"t", "-p", "a", "-r", "x", "-r", "y", "-r", "z"}, declare), "-r/--ref"));
  // Values are verbatim (may start with '-'); --name=value; "--" ends the flags.
  EXPECT_EQ(parse({"t", "-p", "-5 apples"}, declare), "");
  EXPECT_EQ(prompt, "-5 apples");
  EXPECT_EQ(parse({"t", "--prompt=--x"}, declare), "");
  EXPECT_EQ(prompt, "--x");
  EXPECT_TRUE(has(parse({"t", "-p", "a", "--", "--steps"}, declare), "unexpected argument"));
  // A switch takes no value.
  bool quiet = false;
  auto with_switch = [&](cli::Parser& p) { p.toggle("--quiet", &quiet, "q"); };
  EXPECT_TRUE(has(parse({"t", "--quiet=yes"}, with_switch), "--quiet"));
  EXPECT_EQ(parse({"t", "--quiet"}, with_switch), "");
  EXPECT_TRUE(quiet);
}

TEST(CliParse, SubcommandsRefuseFlagsTheyDoNotUse) {
  std::string prompt, image;
  auto declare = [&](cli::Parser& p) {
    p.command("generate", "make");
    p.command("chat", "talk");
    p.text("-p,--prompt", &prompt, "TEXT", "prompt").required();
    p.path("-i,--image", &image, "IMAGE", "image").commands({"chat"}).required();
  };
  EXPECT_EQ(parse({"t", "chat", "-p", "q", "-i", "x.png"}, declare), "");
  EXPECT_EQ(parse({"t", "generate", "-p", "q"}, declare), "");  // -i is required for chat only
  const std::string foreign = parse({"t", "generate", "-p", "q", "-i", "x.png"}, declare);
  EXPECT_TRUE(has(foreign, "-i/--image")) << foreign;
  EXPECT_TRUE(has(foreign, "generate")) << foreign;
  EXPECT_TRUE(has(parse({"t", "chat", "-p", "q"}, declare), "missing -i/--image"));
  EXPECT_TRUE(has(parse({"t", "draw", "-p", "q"}, declare), "unknown command"));
  EXPECT_TRUE(has(parse({"t"}, declare), "missing command"));
}

TEST(CliParse, HelpAndVersionStopWithoutErrors) {
  std::string prompt;
  int threads = 0;
  RuntimeOptions rt;
  auto declare = [&](cli::Parser& p) {
    p.text("-p,--prompt", &prompt, "TEXT", "the prompt").required();
    cli::add_runtime_flags(p, &rt);
  };
  bool stopped = false;
  EXPECT_EQ(parse({"t", "--help"}, declare, &stopped), "");  // -p is not required for --help
  EXPECT_TRUE(stopped);
  EXPECT_EQ(parse({"t", "--version"}, declare, &stopped), "");
  EXPECT_TRUE(stopped);
  cli::Parser p("omniflux-test", "test summary");
  declare(p);
  const std::string help = p.help();
  for (const char* part : {"-p, --prompt TEXT", "the prompt", "required", "--device", "--dtype", "--threads",
                           "--offload", "--max-vram", "--version", "exit status"})
    EXPECT_TRUE(has(help, part)) << part << " not in\n" << help;
  (void)threads;
}

TEST(CliParse, RuntimeFlagsFillRuntimeOptions) {
  RuntimeOptions rt;
  auto declare = [&](cli::Parser& p) { cli::add_runtime_flags(p, &rt); };
  EXPECT_EQ(parse({"t", "--device", "cuda:1", "--dtype", "bf16", "--threads", "2", "--offload", "sequential",
                   "--max-vram", "24"},
                  declare),
            "");
  EXPECT_EQ(rt.device, "cuda:1");
  EXPECT_EQ(rt.dtype, "bf16");
  EXPECT_EQ(rt.num_threads, 2);
  EXPECT_EQ(rt.offload, Offload::Sequential);
  EXPECT_DOUBLE_EQ(rt.max_vram_gb, 24.0);
  EXPECT_TRUE(has(parse({"t", "--offload", "disk"}, declare), "--offload"));
  EXPECT_TRUE(has(parse({"t", "--dtype", "int8"}, declare), "--dtype"));
  EXPECT_TRUE(has(parse({"t", "--device", "tpu:x"}, declare), "--device"));
  EXPECT_TRUE(has(parse({"t", "--max-vram", "-1"}, declare), "--max-vram"));
  const std::string threads = parse({"t", "--threads", "100000"}, declare);
  EXPECT_TRUE(has(threads, "--threads")) << threads;
  EXPECT_TRUE(has(threads, std::to_string(cli::max_threads()))) << threads;
  EXPECT_LE(cli::max_threads(), 1024);
}

TEST(CliFiles, InputsAndOutputsAreCheckedBeforeWork) {
  TempDir d;
  write_file_atomic((d.path() / "f.txt").string(), std::string("x"));
  EXPECT_NO_THROW(cli::check_input_file("-i", (d.path() / "f.txt").string()));
  EXPECT_THROW(cli::check_input_file("-i", (d.path() / "none.png").string()), Error);
  EXPECT_THROW(cli::check_input_file("-i", d.path().string()), Error);
  ASSERT_EQ(mkfifo((d.path() / "fifo").c_str(), 0600), 0);
  try {
    cli::check_input_file("-i", (d.path() / "fifo").string());  // would block on open
    ADD_FAILURE() << "a FIFO was accepted";
  } catch (const Error& e) {
    EXPECT_TRUE(has(e.what(), "FIFO")) << e.what();
    EXPECT_TRUE(has(e.what(), "-i")) << e.what();
  }
  EXPECT_NO_THROW(cli::check_output_file("-o", (d.path() / "new.png").string()));
  EXPECT_NO_THROW(cli::check_output_file("-o", "/dev/null"));
  EXPECT_THROW(cli::check_output_file("-o", (d.path() / "missing" / "x.png").string()), Error);
  EXPECT_THROW(cli::check_output_file("-o", (d.path() / "f.txt" / "x.png").string()), Error);
  EXPECT_THROW(cli::check_output_file("-o", d.path().string()), Error);
  EXPECT_THROW(cli::check_input_folder("-m", (d.path() / "f.txt").string()), Error);
  EXPECT_THROW(cli::check_input_folder("-m", (d.path() / "missing").string()), Error);
}

TEST(CliCancel, FirstCtrlCSetsTheFlagAndRestoresTheDefault) {
  struct sigaction saved_int {}, saved_term {};
  sigaction(SIGINT, nullptr, &saved_int);
  sigaction(SIGTERM, nullptr, &saved_term);
  cli::install_cancel_handler();
  EXPECT_FALSE(cli::cancel_requested());
  struct sigaction now {};
  sigaction(SIGINT, nullptr, &now);
  EXPECT_NE(now.sa_handler, SIG_DFL);
  raise(SIGINT);
  EXPECT_TRUE(cli::cancel_requested());
  // The second Ctrl-C is not swallowed: it gets the default action (the process ends).
  sigaction(SIGINT, nullptr, &now);
  EXPECT_EQ(now.sa_handler, SIG_DFL);
  sigaction(SIGINT, &saved_int, nullptr);
  sigaction(SIGTERM, &saved_term, nullptr);
}

TEST(CliRun, ExitStatusesAndStdoutFailures) {
  testing::internal::CaptureStderr();
  EXPECT_EQ(cli::run("t", [] { return cli::kExitOk; }), 0);
  EXPECT_EQ(cli::run("t", []() -> int { throw cli::UsageError("bad flag", "--x"); }), 2);
  EXPECT_EQ(cli::run("t", []() -> int { throw Error("bad file", "f"); }), 1);
  EXPECT_EQ(cli::run("t", []() -> int { throw std::runtime_error("other"); }), 1);
  EXPECT_EQ(cli::run("t", [] { return cli::kExitCancelled; }), 130);
  const std::string err = testing::internal::GetCapturedStderr();
  EXPECT_TRUE(has(err, "t: bad flag (--x)")) << err;
  EXPECT_TRUE(has(err, "t: cancelled")) << err;
}
TEST(CliTiny, AFolderAppearsWholeOrNotAtAll) {
  TempDir d;
  auto tiny = [&](const fs::path& out, const std::string& tokenizers) {
    const std::string cmd = bin("omniflux-tiny") + " --out " + out.string() + " --only flux_1_dev --tokenizers " +
                            tokenizers + " > /dev/null 2> " + (d.path() / "err.txt").string();
    const int st = std::system(cmd.c_str());
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
  };
  // A failure in the middle (no tokenizer files to copy) leaves no folder at all.
  const fs::path fresh = d.path() / "models" / "new";
  EXPECT_EQ(tiny(fresh, (d.path() / "no-tokenizers").string()), 1);
  EXPECT_FALSE(fs::exists(fresh));
  EXPECT_TRUE(fs::is_empty(d.path() / "models"));
  // Into a folder that already holds a copy: a failure keeps the old copy untouched...
  const fs::path old = d.path() / "models" / "flux.1-dev";
  fs::create_directories(old);
  write_file_atomic((old / "marker").string(), std::string("old"));
  EXPECT_EQ(tiny(d.path() / "models", (d.path() / "no-tokenizers").string()), 1);
  EXPECT_EQ(others(d.path() / "models", {"flux.1-dev"}), std::vector<std::string>{});
  EXPECT_EQ(others(old, {"marker"}), std::vector<std::string>{});
  // ...and a success replaces it whole.
  EXPECT_EQ(tiny(d.path() / "models", fixture("tokenizers")), 0) << read_bytes(d.path() / "err.txt");
  EXPECT_FALSE(fs::exists(old / "marker"));
  EXPECT_TRUE(fs::is_regular_file(old / "transformer" / "diffusion_pytorch_model.safetensors"));
  EXPECT_EQ(others(d.path() / "models", {"flux.1-dev"}), std::vector<std::string>{});
}
#endif  // OMNIFLUX_HAVE_CLI
