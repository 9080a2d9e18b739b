#pragma once
// omniflux in one include: the pipelines, the runtime (devices, offload, several ranks), errors,
// images, and the loaders a program needs to open checkpoints and configs. The components
// (omniflux/models/), the blocks they are built from (omniflux/nn/), the tokenizers and the dry
// runs (omniflux/plan.h) have their own headers.
#include "omniflux/build_info.h"
#include "omniflux/distributed.h"
#include "omniflux/error.h"
#include "omniflux/io/config.h"
#include "omniflux/io/image.h"
#include "omniflux/io/safetensors.h"
#include "omniflux/io/weights.h"
#include "omniflux/pipelines/chat.h"
#include "omniflux/pipelines/flux.h"
#include "omniflux/pipelines/uniworld.h"
#include "omniflux/pipelines/xomni.h"
#include "omniflux/residency.h"
#include "omniflux/runtime.h"
