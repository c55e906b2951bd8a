// The training step's forward, loss and backward as one CUDA graph, replayed step after step.
// No CUDA headers here: graph_step.cpp holds them, compiled with CUDA graphs only when the build
// found a CUDA toolkit (EFFNET_HAVE_CUDA_GRAPHS); without one, Capture says so.
//
// Note [CUDA graph step]: on a GPU a B0 step at 128-224 px is bound by launching ~2,000 small
// kernels, not by the kernels (docs/build-notes.md: timm eager B0 is slower at 128 px than at 224).
// A captured graph launches them as one. The Trainer (trainer.cpp) captures the step per *shape
// key* (image size, batch, dropout of the stage, frozen or not): within a progressive stage every
// full batch has the same key, so one capture serves the stage; the epoch's last, smaller batch
// runs eagerly with the same StepBody. Captured: forward (bf16 autocast), loss, backward, and
// BatchNorm's running statistics. Not captured: augmentation (before, on the GPU), gradient
// clipping, the optimiser and the EMA (after, eager). Invariants the Trainer keeps:
//   1. the first kWarmupSteps steps of a key run eagerly (cuDNN autotuning and lazy
//      initialisation must not happen inside a capture);
//   2. inputs are copied into the graph's static tensors (Replay), and every parameter's .grad is
//      pointed back at the graph's gradient tensor before each replay, since an eager step in
//      between sets .grad to fresh tensors (zero_grad);
//   3. anything read on the host (loss, accuracy) is read from the static outputs after the
//      replay, only at the logging interval (no host synchronisation inside a step);
//   4. only where backward runs no hooks of ours (DataParallel::HooksBackward() false: one
//      process, effnet-train): the reducer's hooks launch collectives and poll events, which a
//      capture cannot hold. A worker under mpirun trains eagerly.
// runtime.cuda_graphs=off trains eagerly everywhere.
#pragma once

#include <torch/types.h>

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "common/status.h"

namespace effnet::train {

// What one training step reads: images [N,3,H,W], soft targets [N,C], per-sample weights [N]
// (0 for padding), and the loss scale (a 0-dim tensor: Note [loss scaling] in trainer.cpp).
struct StepInputs {
  torch::Tensor images, targets, weights, scale;
};
// What it leaves: logits [N,C] (float) and the weighted loss sum (0-dim); gradients in .grad.
struct StepOutputs {
  torch::Tensor logits, weighted_sum;
};
// Forward, loss and backward; must not synchronise with the host.
using StepBody = std::function<StepOutputs(const StepInputs&)>;

// Steps of a shape key run eagerly before it is captured (Note [CUDA graph step], 1).
inline constexpr int kGraphWarmupSteps = 2;

// Whether this build can capture CUDA graphs (a CUDA toolkit was found at configure time).
bool CudaGraphsBuilt();

class GraphedStep {
 public:
  // Captures `body` on static copies of `example` (CUDA tensors). `params`: the trainable
  // parameters, whose .grad the captured backward writes. Nothing runs until Replay.
  static Result<std::unique_ptr<GraphedStep>> Capture(const StepBody& body,
                                                      const StepInputs& example,
                                                      std::vector<torch::Tensor> params);
  ~GraphedStep();
  GraphedStep(const GraphedStep&) = delete;
  GraphedStep& operator=(const GraphedStep&) = delete;

  // Copies `in` into the static inputs (same shapes), points each .grad at the graph's gradient,
  // replays. The outputs are the graph's static tensors: valid until the next Replay.
  Result<StepOutputs> Replay(const StepInputs& in);

 private:
  struct Impl;
  explicit GraphedStep(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace effnet::train
