#include <gtest/gtest.h>

#include "omniflux/error.h"
#include "omniflux/io/config.h"
#include "test_util.h"

using omniflux::Config;
using omniflux::Error;

TEST(Config, TypedGettersWithDefaults) {
  Config c = Config::parse(R"({"hidden_size": 64, "rope_theta": 1000000.0, "tie": true,
      "name": "qwen2", "sizes": [1, 2, 3], "f": [0.5, 1], "null_field": null,
      "vision_config": {"depth": 2, "decoder": {"steps": 28}}, "big_float_int": 1e6})", "cfg.json");
  EXPECT_EQ(c.get_int("hidden_size"), 64);
  EXPECT_DOUBLE_EQ(c.get_double("rope_theta"), 1e6);
  EXPECT_DOUBLE_EQ(c.get_double("hidden_size"), 64.0);
  EXPECT_EQ(c.get_int("big_float_int"), 1000000);
  EXPECT_TRUE(c.get_bool("tie"));
  EXPECT_EQ(c.get_string("name"), "qwen2");
  EXPECT_EQ(c.get_int_list("sizes"), (std::vector<int64_t>{1, 2, 3}));
  EXPECT_EQ(c.get_double_list("f"), (std::vector<double>{0.5, 1.0}));
  EXPECT_EQ(c.get_int("absent", 7), 7);
  EXPECT_EQ(c.get_int("null_field", 9), 9);  // null counts as absent
  EXPECT_FALSE(c.has("null_field"));
  EXPECT_EQ(c.sub("vision_config").sub("decoder").get_int("steps"), 28);
}

TEST(Config, ErrorsNameFieldAndFile) {
  Config c = Config::parse(R"({"a": "x", "o": {"b": 1.5}})", "some/config.json");
  try {
    c.get_int("a");
    FAIL();
  } catch (const Error& e) {
    EXPECT_STREQ(e.what(), "config field is not an integer (some/config.json: a): expected an integer, got string \"x\"");
  }
  try {
    c.sub("o").get_int("b");
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("some/config.json: o.b"), std::string::npos);
  }
  EXPECT_THROW(c.get_int("missing"), Error);
  EXPECT_THROW(c.sub("a"), Error);
  EXPECT_THROW(c.get_bool("a"), Error);
  EXPECT_THROW(c.get_int_list("a"), Error);
  EXPECT_THROW(Config::parse("{\"a\": ", "bad.json"), Error);
  EXPECT_THROW(Config::parse("[1]", "arr.json"), Error);
  EXPECT_THROW(Config::load("/nonexistent/config.json"), Error);
}

TEST(Config, LoadsFixtureConfigFromFolder) {
  Config c = Config::load(fixture("qwen2_5_vl"));
  EXPECT_EQ(c.get_string("model_type"), "qwen2_5_vl");
  EXPECT_TRUE(c.has("vision_config"));
}
