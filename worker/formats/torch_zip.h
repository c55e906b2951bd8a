// The torch zip format of Python torch.save (torch >= 1.6): a zip archive with data.pkl (pickle
// protocol 2) and one record data/<key> per storage. Read with our own restricted unpickler
// (Note [restricted unpickler] in torch_zip.cpp) because torch::pickle_load cannot read Python's
// state_dict: the OrderedDict that torch.save writes unpickles to None in LibTorch 2.11 ("Expected
// GenericDict but got None", checked). Written as Python's torch.save writes a dict of tensors, so
// torch.load(f, weights_only=True) returns it.
#pragma once

#include <string>

#include "common/status.h"
#include "worker/formats/state_dict.h"

namespace effnet::formats {

// A dict of tensors only (a state_dict, e.g. a `.pth` from timm or torch.save); tensors on the
// CPU. Anything else is an error naming the file.
Result<StateDict> ReadTorchZip(const std::string& path);
// Writes atomically (common/atomic_file.h).
Status WriteTorchZip(const std::string& path, const StateDict& dict);

}  // namespace effnet::formats
