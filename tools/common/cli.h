#pragma once
// omniflux_cli: the command-line layer every tool shares (tools/, tools/dev/).
//
//   cli::Parser p("omniflux-flux", "FLUX.1-dev text-to-image.");
//   p.path("-m,--model", &model, "DIR", "the FLUX.1-dev folder").required();
//   p.integer("--steps", &opt.steps, 1, 1000, "N", "denoising steps");
//   cli::add_runtime_flags(p, &rt);
//   if (!p.parse(argc, argv)) return 0;   // --help or --version was printed
//
// Values are parsed strictly: integers without wrap or clamp, floats finite, every value within its
// range; a flag given twice, a flag the chosen subcommand does not use, and a missing required
// flag are usage errors that name the flag. cli::run() maps errors to the exit statuses below.
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "omniflux/error.h"
#include "omniflux/io/image.h"
#include "omniflux/plan.h"
#include "omniflux/runtime.h"

namespace omniflux::cli {

// Exit statuses of every tool.
constexpr int kExitOk = 0;
constexpr int kExitRuntimeError = 1;  // a file, model or computation failed
constexpr int kExitUsage = 2;         // the command line is wrong
constexpr int kExitCancelled = 130;   // Ctrl-C (128 + SIGINT), as shells report it

// A command-line mistake (exit status 2).
class UsageError : public Error {
 public:
  using Error::Error;
};

// Strict value parsers; `flag` names the flag in the UsageError.
int64_t parse_int(const std::string& flag, const std::string& text, int64_t lo, int64_t hi);
uint64_t parse_uint64(const std::string& flag, const std::string& text);  // 0 .. 2^64-1
// A finite number in [lo, hi] ((lo, hi] when lo_open).
double parse_double(const std::string& flag, const std::string& text, double lo, double hi, bool lo_open = false);
// The most --threads accepted: 4 x the hardware threads, at most 1024.
int max_threads();

class Parser;

// A declared flag, for chaining options onto it.
class Flag {
 public:
  // Missing -> "missing -p/--prompt" (only for the subcommands that use the flag).
  Flag& required();
  // Only these subcommands use the flag; under any other it is a usage error.
  Flag& commands(std::vector<std::string> names);
  struct Spec;
  explicit Flag(Spec* s) : s_(s) {}

 private:
  Spec* s_;
};

class Parser {
 public:
  Parser(std::string program, std::string summary);
  ~Parser();
  Parser(const Parser&) = delete;
  Parser& operator=(const Parser&) = delete;

  // Subcommands: argv[1] must then name one (omniflux-xomni generate|decode|chat).
  void command(const std::string& name, const std::string& summary);
  // Flags declared after this appear under `title` in --help.
  void group(const std::string& title);

  // `names` is "-p,--prompt" or "--steps"; `metavar` names the value in --help. The variable's
  // value when declared is shown as the default.
  Flag text(const std::string& names, std::string* out, const std::string& metavar, const std::string& help);
  Flag text(const std::string& names, std::optional<std::string>* out, const std::string& metavar,
            const std::string& help);
  // A file or folder name: must not be empty.
  Flag path(const std::string& names, std::string* out, const std::string& metavar, const std::string& help);
  // Repeatable (up to max_count times).
  Flag paths(const std::string& names, std::vector<std::string>* out, const std::string& metavar,
             const std::string& help, size_t max_count = SIZE_MAX);
  Flag texts(const std::string& names, std::vector<std::string>* out, const std::string& metavar,
             const std::string& help, size_t max_count = SIZE_MAX);
  Flag integer(const std::string& names, int64_t* out, int64_t lo, int64_t hi, const std::string& metavar,
               const std::string& help);
  Flag integer(const std::string& names, int* out, int64_t lo, int64_t hi, const std::string& metavar,
               const std::string& help);
  Flag integer(const std::string& names, size_t* out, int64_t lo, int64_t hi, const std::string& metavar,
               const std::string& help);
  Flag integer(const std::string& names, std::optional<int64_t>* out, int64_t lo, int64_t hi,
               const std::string& metavar, const std::string& help);
  // Any 64-bit seed, 0 .. 2^64-1.
  Flag seed(const std::string& names, uint64_t* out, const std::string& help);
  Flag number(const std::string& names, double* out, double lo, double hi, const std::string& metavar,
              const std::string& help, bool lo_open = false);
  Flag number(const std::string& names, std::optional<double>* out, double lo, double hi,
              const std::string& metavar, const std::string& help, bool lo_open = false);
  Flag choice(const std::string& names, std::string* out, const std::vector<std::string>& choices,
              const std::string& help);
  // Any value type: `set` parses it and throws Error when it is invalid (reported as a usage
  // error naming the flag).
  Flag custom(const std::string& names, const std::string& metavar, const std::string& help,
              std::function<void(const std::string& value)> set, std::string default_text = {});
  // A switch without a value; sets *out to `value`.
  Flag toggle(const std::string& names, bool* out, const std::string& help, bool value = true);

  // Positional arguments, in order; a list takes the rest.
  void positional(const std::string& name, std::string* out, const std::string& help, bool required = true);
  void positionals(const std::string& name, std::vector<std::string>* out, const std::string& help);

  // Parses argv; throws UsageError. Returns false when --help or --version was printed (exit 0).
  // Values are taken verbatim, also when they start with '-'; "--name=value" works for long
  // names; "--" ends the flags.
  bool parse(int argc, const char* const* argv);
  bool parse(int argc, char** argv) { return parse(argc, const_cast<const char* const*>(argv)); }

  const std::string& program() const { return program_; }
  const std::string& chosen_command() const { return command_; }
  // Whether the flag (any of its names) was on the command line.
  bool given(const std::string& name) const;
  std::string help() const;    // for the chosen subcommand (all of them before one is chosen)
  std::string usage() const;   // one line per subcommand

  struct Impl;

 private:
  Flag add(const std::string& names, const std::string& metavar, const std::string& help, bool takes_value,
           size_t max_count, std::function<void(const std::string&, const std::string&)> set,
           std::string default_text, std::string range_text);
  std::string program_, summary_, command_;
  std::unique_ptr<Impl> impl_;
};

// --device's value: "D" or "D,COMPONENT=D,..." (RuntimeOptions::placement); throws Error.
void parse_device(const std::string& value, RuntimeOptions* rt);
// --device, --dtype, --threads and (with_offload) --offload, --max-vram, filling `rt`.
void add_runtime_flags(Parser& p, RuntimeOptions* rt, bool with_offload = true);
// After parsing: a CUDA device that this machine does not have is an Error. Sets the CPU threads.
void apply_runtime(const RuntimeOptions& rt);

// Several ranks for one request (launch.cpp, docs/distributed.md).
// --nproc, --cfg-parallel, --no-sequence-parallel, --no-tensor-parallel, --dist-timeout.
void add_parallel_flags(Parser& p);
// After the usage checks, before apply_runtime: with --nproc N outside a launcher, starts the N
// ranks (this command again) and throws ExitRequest with their status; under a launcher (RANK and
// WORLD_SIZE set), joins the other ranks and sets rt.parallel, rt.device ("cuda" becomes
// cuda:LOCAL_RANK) and rt.num_threads (0 becomes the host's cores shared among its ranks).
void join_ranks(RuntimeOptions& rt);
// For --dry-run: the ranks --nproc N (or a launcher's WORLD_SIZE) asks for, simulated
// (Parallel::simulate, rank 0), so that the plan is one rank's and counts its traffic; null for one.
std::shared_ptr<const Parallel> simulated_ranks();
// Whether this process reads the command line's input files: one process, or rank 0 of several
// (RANK unset or 0). The other ranks get what rank 0 read through share_* after join_ranks, so
// their hosts need not have the files; check_input_file and check_output_file pass there.
bool reads_inputs();
// After join_ranks: rank 0's images / text, the same on every rank (no-op for one process).
void share_images(std::vector<Image>& images, const RuntimeOptions& rt);
void share_text(std::string& text, const RuntimeOptions& rt);
// !cancel_requested(), agreed by all ranks: each call is one small all-reduce over the world group,
// so a Ctrl-C seen by any rank stops every rank at the same step (progress callbacks run at the
// same points on every rank). One process: no communication.
bool keep_going(const RuntimeOptions& rt);
// This process's rank once join_ranks joined several; -1 otherwise.
int current_rank();
// Thrown to end a tool with this status (the launcher of --nproc); run() returns it.
struct ExitRequest {
  int code;
};

// --dry-run: prints the meta-device plan of a request (omniflux/plan.h): each component's
// parameters and bytes, then the peak device memory under each offload mode for the storage
// formats that apply (fp32 too when the compute dtype is fp32), marked against rt.max_vram_gb.
// Returns kExitOk, or kExitRuntimeError when a component's dry run failed.
int print_dry_run(const std::vector<plan::ComponentPlan>& plans, const RuntimeOptions& rt);

// Checks before any work: an input that must be a regular readable file (a FIFO or folder would
// block or fail later), a folder, and an output whose folder exists and is writable. Errors name
// the flag.
void check_input_file(const std::string& flag, const std::string& path);
void check_input_folder(const std::string& flag, const std::string& path);
void check_output_file(const std::string& flag, const std::string& path);

// Ctrl-C (and SIGTERM): the first sets the flag that progress callbacks poll and restores the
// default action, so a second one ends the process at once.
void install_cancel_handler();
bool cancel_requested();

// Runs a tool's body: UsageError -> message + usage, 2; other errors -> message, 1; a body
// returning kExitCancelled prints "cancelled". Also fails (1) when stdout cannot be written
// (a full disk, /dev/full).
int run(const std::string& program, const std::function<int()>& body);

}  // namespace omniflux::cli
