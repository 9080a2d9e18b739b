#pragma once
// omniflux in one include: the pipelines, the runtime (devices, offload, several ranks), errors,
// images, and the loaders a program needs to open checkpoints and configs. The components
// (omniflux/models/, with omniflux/kv_cache.h for the LMs), the tokenizer (omniflux/text/) and the
// dry runs (omniflux/plan.h) have their own headers. The blocks the models are built from (nn/)
// and other internals live in src/ and are not installed.
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
