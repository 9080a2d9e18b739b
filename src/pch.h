#pragma once
// Precompiled for every C++ target: ATen's headers are most of the compile time of each file
// (about 12 of 15 s for a short one on LibTorch 2.x).
#include <ATen/ATen.h>
#include <nlohmann/json.hpp>
