#include <gtest/gtest.h>

#include "omniflux/runtime.h"

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  omniflux::set_num_threads(0);
  return RUN_ALL_TESTS();
}
