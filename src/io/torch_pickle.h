#pragma once
// Reading and writing `torch.save` files of plain tensor state dicts without Python: the zip
// archive (stored entries: <name>/data.pkl, <name>/data/<key>, <name>/version, <name>/byteorder)
// and a small pickle machine that understands what torch.save writes for a dict of tensors
// (collections.OrderedDict, torch._utils._rebuild_tensor_v2 / _rebuild_parameter, typed storages
// as persistent ids). Anything else (legacy tar/non-zip files, compressed entries, other Python
// objects, big-endian data) is an Error naming what was found.
#include <map>
#include <string>

#include <ATen/core/Tensor.h>

namespace omniflux {

// A flat {name: tensor} dict saved with torch.save (the zip format of torch >= 1.6). Tensors are
// returned on the CPU in their stored dtype, contiguous, owning their memory.
std::map<std::string, at::Tensor> load_torch_state_dict(const std::string& path);

// Writes `tensors` as torch.save(OrderedDict) would (zip format, pickle protocol 2, one storage per
// tensor, archive name "archive"); torch.load reads the result.
void save_torch_state_dict(const std::string& path, const std::map<std::string, at::Tensor>& tensors);

}  // namespace omniflux
