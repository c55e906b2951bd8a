// Training checkpoints: ONE format, a directory (worker/formats/README.md documents it):
//
//   <run>/checkpoints/epoch-NNNN/   (and <run>/checkpoints/best/)
//     model.safetensors   the model's state dict, timm key names (Python: safetensors + timm)
//     ema.safetensors     the EMA weights, same keys (only when EMA is on)
//     train_state.pt      optimizer state and the CPU generator (a LibTorch archive, C++ only)
//     meta.json           version, model, classes, config, progress, and the SHA-256 of every
//                         other file
//
// Note [checkpoint directory is atomic]: WriteCheckpoint fills a temporary sibling directory,
// fsyncs every file and the directory, then renames it into place (an existing checkpoint of the
// same name is swapped out atomically with renameat2(RENAME_EXCHANGE) where the file system allows
// it). A reader therefore sees a complete checkpoint or none, and an interrupted writer leaves
// only a hidden ".<name>.tmp.<pid>" directory, which PruneCheckpoints removes.
//
// Note [checkpoint checksums]: ReadCheckpointMeta verifies meta.json's own "meta_sha256";
// LoadCheckpoint, ReadCheckpointWeights and VerifyCheckpoint also verify the SHA-256 of every file
// meta.json names before any weights are parsed or copied. A flipped byte is a DataLoss error
// naming the file, and the model is left untouched.
#pragma once

#include <c10/core/Device.h>

#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "common/job/types.h"
#include "common/status.h"
#include "worker/formats/state_dict.h"
#include "worker/model/architecture.h"

namespace torch::optim {
class Optimizer;
}

namespace effnet::formats {

// Version 1 was a single torch archive file (epoch-NNNN.pt); this build reads version 2 only.
inline constexpr int kCheckpointFormatVersion = 2;

inline constexpr char kCheckpointModelFile[] = "model.safetensors";
inline constexpr char kCheckpointEmaFile[] = "ema.safetensors";
inline constexpr char kCheckpointTrainStateFile[] = "train_state.pt";
inline constexpr char kCheckpointMetaFile[] = "meta.json";
inline constexpr char kBestCheckpointName[] = "best";

// "epoch-0003" for epoch 3 (0-based; logs call it epoch 4): the directory name of an epoch's
// checkpoint (Note [epoch numbering] in common/job/types.h).
std::string EpochCheckpointName(int epoch);

// meta.json.
struct CheckpointMeta {
  int format_version = kCheckpointFormatVersion;
  std::string model_name;    // "EfficientNetV2-B0"
  model::ModelConfig model;  // enough to rebuild the model ("model" in meta.json)
  std::vector<std::string> class_names;
  std::string config_yaml;  // the resolved training config (parses back with ParseTrainConfig)
  int epoch = -1;           // the finished epoch (0-based)
  int next_epoch = 0;       // where a resume starts
  int64_t global_step = 0;  // optimiser steps so far
  int64_t steps_per_epoch = 0;
  job::Stage stage;            // the stage `epoch` trained in
  double fit_time_s = 0;       // training + validation wall time so far, across resumes
  std::string decision_state;  // JobControl::SaveDecisionState (early stopping), may be ""
  int world_size = 1;
  int eval_image_size = 0;
  std::string data_path;  // the HDF5 file trained on
  // Set by WriteCheckpoint:
  bool has_ema = false;
  int64_t ema_num_updates = 0;
  std::map<std::string, std::string> sha256;  // file name -> lowercase hex SHA-256
};

// What WriteCheckpoint saves besides the meta.
struct CheckpointSource {
  const torch::nn::Module* model = nullptr;  // required
  // EMA tensors under the model's key names (every parameter and buffer); empty: no EMA.
  std::vector<std::pair<std::string, at::Tensor>> ema;
  int64_t ema_num_updates = 0;
  const torch::optim::Optimizer* optimizer = nullptr;  // null: no optimizer state
};

// Where LoadCheckpoint puts what it reads. Only the non-null / non-empty parts are loaded.
struct CheckpointTarget {
  torch::nn::Module* model = nullptr;  // required; loaded strictly by name (every key, shape)
  // Expected model; a checkpoint of another variant or class count is refused saying so.
  std::string variant;  // "" = not checked
  int num_classes = 0;  // 0 = not checked
  // EMA tensors filled in place (copy_) when the checkpoint has EMA weights; empty: skipped.
  std::vector<std::pair<std::string, at::Tensor>> ema;
  int64_t* ema_num_updates = nullptr;
  // Full-state resume: optimizer state (moved to `device`) and the default CPU generator.
  torch::optim::Optimizer* optimizer = nullptr;
  c10::Device device = c10::Device(c10::kCPU);
  bool restore_cpu_rng = false;
};

// Writes the checkpoint directory `dir` (Note [checkpoint directory is atomic]), replacing an
// existing one. Also records the default CPU generator's state in train_state.pt. `meta`'s
// has_ema, ema_num_updates, sha256 and format_version are filled here.
Status WriteCheckpoint(const std::string& dir, CheckpointMeta meta, const CheckpointSource& source);

// Installs a copy of the complete checkpoint `from` as `dir` (atomic as WriteCheckpoint, an
// existing `dir` replaced): its files are hard-linked, or copied where the file system refuses
// links. Checkpoint files are never written in place, so the two names share bytes safely, and
// pruning one keeps the other. This is how the trainer writes best/ beside the epoch's checkpoint
// without serialising and hashing the model a second time.
Status CopyCheckpoint(const std::string& from, const std::string& dir);

// meta.json of `dir`, its own checksum verified (not the other files'; LoadCheckpoint and
// VerifyCheckpoint check those). A pre-v2 `.pt` file is refused with the reason.
Result<CheckpointMeta> ReadCheckpointMeta(const std::string& dir);

// ReadCheckpointMeta plus the SHA-256 of every file it names.
Result<CheckpointMeta> VerifyCheckpoint(const std::string& dir);

// Verifies the whole checkpoint, checks variant and class count, then loads the parts `target`
// asks for. Returns the meta (progress, decision state) for the caller to resume from.
Result<CheckpointMeta> LoadCheckpoint(const std::string& dir, const CheckpointTarget& target);

// The weights in `dir`'s model.safetensors (or ema.safetensors when `ema`), checksum verified.
Result<StateDict> ReadCheckpointWeights(const std::string& dir, bool ema = false);

// In `checkpoints_dir`: removes the epoch-NNNN directories older than the newest `keep_last`
// (>= 1) and hidden temporaries left by interrupted writers. best/ is never touched.
Status PruneCheckpoints(const std::string& checkpoints_dir, int keep_last);

// Removes a checkpoint directory (a best/ that no longer belongs to the run: Note [best after a
// roll-back] in worker/train/trainer.cpp). A missing one is not an error.
Status RemoveCheckpoint(const std::string& dir);

}  // namespace effnet::formats
