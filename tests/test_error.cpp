#include <gtest/gtest.h>

#include "omniflux/error.h"
#include "omniflux/runtime.h"

using omniflux::Error;

TEST(Error, MessageNamesWhatWhereExpectedGot) {
  Error e("wrong shape", "model.safetensors: a.weight", "[2, 3]", "[3, 2]");
  EXPECT_STREQ(e.what(), "wrong shape (model.safetensors: a.weight): expected [2, 3], got [3, 2]");
  EXPECT_EQ(e.where(), "model.safetensors: a.weight");
}

TEST(Runtime, DtypeDefaultsAndParsing) {
  omniflux::RuntimeOptions rt;
  EXPECT_EQ(rt.compute_dtype(), c10::kFloat);
  rt.device = "cuda:0";
  EXPECT_EQ(rt.compute_dtype(), c10::kBFloat16);
  rt.dtype = "fp16";
  EXPECT_EQ(rt.compute_dtype(), c10::kHalf);
  rt.dtype = "int3";
  EXPECT_THROW(rt.compute_dtype(), Error);
  rt.device = "tpu";
  EXPECT_THROW(rt.torch_device(), Error);
}
