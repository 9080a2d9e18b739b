#include <gtest/gtest.h>

#include <csignal>

#include "omniflux/runtime.h"

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  // Debian's cpp-httplib client writes without MSG_NOSIGNAL: a server that closes while a test
  // client is still sending (a refusal before the body is read) would kill the whole test binary
  // with SIGPIPE instead of failing the one test.
  std::signal(SIGPIPE, SIG_IGN);
  omniflux::set_num_threads(0);
  return RUN_ALL_TESTS();
}
