#include "worker/train/graph_step.h"

#include <ATen/autocast_mode.h>

#ifdef EFFNET_HAVE_CUDA_GRAPHS
#include <ATen/cuda/CUDAEvent.h>
#include <ATen/cuda/CUDAGraph.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#endif

namespace effnet::train {

#ifdef EFFNET_HAVE_CUDA_GRAPHS

bool CudaGraphsBuilt() { return true; }

struct GraphedStep::Impl {
  at::cuda::CUDAGraph graph;
  StepInputs in;  // static inputs: Replay copies into them
  StepOutputs out;
  std::vector<torch::Tensor> params, grads;  // grads[i]: the graph's gradient of params[i]
};

namespace {

// Restores autocast's weight cache setting when capture ends (the cache would keep casts made
// during capture, which the graph's pool owns).
class AutocastCacheOff {
 public:
  AutocastCacheOff() : was_(at::autocast::is_autocast_cache_enabled()) {
    at::autocast::set_autocast_cache_enabled(false);
  }
  ~AutocastCacheOff() { at::autocast::set_autocast_cache_enabled(was_); }

 private:
  bool was_;
};

}  // namespace

Result<std::unique_ptr<GraphedStep>> GraphedStep::Capture(const StepBody& body,
                                                          const StepInputs& example,
                                                          std::vector<torch::Tensor> params) {
  for (const auto* t : {&example.images, &example.targets, &example.weights, &example.scale}) {
    if (!t->defined() || !t->is_cuda()) {
      return InvalidArgument("CUDA graph capture needs CUDA inputs; set runtime.cuda_graphs=off");
    }
  }
  auto impl = std::make_unique<Impl>();
  impl->in = {example.images.clone(), example.targets.clone(), example.weights.clone(),
              example.scale.clone()};
  impl->params = std::move(params);
  // The captured backward allocates each gradient in the graph's pool and keeps it there.
  for (auto& p : impl->params) p.mutable_grad() = torch::Tensor();

  const auto device = example.images.device().index();
  c10::cuda::CUDAStream ambient = c10::cuda::getCurrentCUDAStream(device);
  c10::cuda::CUDAStream side = c10::cuda::getStreamFromPool(/*isHighPriority=*/false, device);
  at::cuda::CUDAEvent inputs_ready;
  inputs_ready.record(ambient);
  inputs_ready.block(side);
  try {
    c10::cuda::CUDAStreamGuard on_side(side);
    AutocastCacheOff no_cache;
    // Thread-local mode: the loader's threads may allocate pinned memory meanwhile.
    impl->graph.capture_begin({0, 0}, cudaStreamCaptureModeThreadLocal);
    impl->out = body(impl->in);
    impl->graph.capture_end();
  } catch (const std::exception& e) {
    return Internal(std::string("capturing the training step as a CUDA graph failed: ") + e.what() +
                    "; set runtime.cuda_graphs=off to train eagerly");
  }
  at::cuda::CUDAEvent captured;
  captured.record(side);
  captured.block(ambient);
  impl->grads.reserve(impl->params.size());
  for (auto& p : impl->params) impl->grads.push_back(p.grad());
  return std::unique_ptr<GraphedStep>(new GraphedStep(std::move(impl)));
}

Result<StepOutputs> GraphedStep::Replay(const StepInputs& in) {
  auto& s = impl_->in;
  const std::pair<const torch::Tensor*, torch::Tensor*> pairs[] = {{&in.images, &s.images},
                                                                   {&in.targets, &s.targets},
                                                                   {&in.weights, &s.weights},
                                                                   {&in.scale, &s.scale}};
  for (const auto& [from, to] : pairs) {
    if (from->sizes() != to->sizes() || from->dtype() != to->dtype()) {
      return InvalidArgument("CUDA graph replay with another shape: captured " +
                             std::string(c10::str(to->sizes())) + ", got " +
                             std::string(c10::str(from->sizes())));
    }
    to->copy_(*from, /*non_blocking=*/true);
  }
  for (size_t i = 0; i < impl_->params.size(); ++i) {
    impl_->params[i].mutable_grad() = impl_->grads[i];
  }
  try {
    impl_->graph.replay();
  } catch (const std::exception& e) {
    return Internal(std::string("replaying the captured training step failed: ") + e.what() +
                    "; set runtime.cuda_graphs=off to train eagerly");
  }
  return impl_->out;
}

#else  // no CUDA toolkit at build time

bool CudaGraphsBuilt() { return false; }

struct GraphedStep::Impl {};

Result<std::unique_ptr<GraphedStep>> GraphedStep::Capture(const StepBody&, const StepInputs&,
                                                          std::vector<torch::Tensor>) {
  return FailedPrecondition(
      "this build has no CUDA graph support (configured without a CUDA toolkit); set "
      "runtime.cuda_graphs=off");
}

Result<StepOutputs> GraphedStep::Replay(const StepInputs&) {
  return FailedPrecondition("this build has no CUDA graph support");
}

#endif

GraphedStep::GraphedStep(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
GraphedStep::~GraphedStep() = default;

}  // namespace effnet::train
