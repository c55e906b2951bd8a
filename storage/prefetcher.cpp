// BatchPrefetcher: one background thread reads batches in order, at most `depth` ahead.
#include <condition_variable>
#include <deque>
#include <mutex>
#include <thread>

#include "storage/dataset_reader.h"

namespace effnet::storage {

struct BatchPrefetcher::State {
  DatasetReader* reader = nullptr;
  std::vector<std::vector<int64_t>> batches;
  size_t depth = 2;

  std::mutex mu;
  std::condition_variable cv;
  std::deque<Batch> ready;   // batches read, in order
  std::vector<Batch> spare;  // buffers handed back by Next(), reused to avoid page faults
  Status error;              // first read error; stops the reader thread
  size_t returned = 0;       // batches handed to the consumer
  bool stop = false;
  bool producer_done = false;
  std::thread thread;

  void Run() {
    const size_t bytes = reader->image_bytes();
    const auto& labels = reader->info().labels;
    for (size_t b = 0; b < batches.size(); ++b) {
      {
        std::unique_lock<std::mutex> lock(mu);
        cv.wait(lock, [&] { return stop || ready.size() < depth; });
        if (stop) break;
      }
      Batch batch;
      {
        std::lock_guard<std::mutex> lock(mu);
        if (!spare.empty()) {
          batch = std::move(spare.back());
          spare.pop_back();
        }
      }
      batch.indices = batches[b];
      // Note [buffer reuse]: a recycled buffer of the same size is not cleared, and a fresh 38 MB
      // buffer (256 x 224 px) would cost more in page faults than the read itself.
      batch.pixels.resize(batch.indices.size() * bytes);
      batch.labels.clear();
      Status st = reader->ReadImages(batch.indices, batch.pixels.data());
      if (st.ok()) {
        batch.labels.reserve(batch.indices.size());
        for (int64_t i : batch.indices) batch.labels.push_back(labels[static_cast<size_t>(i)]);
      }
      std::lock_guard<std::mutex> lock(mu);
      if (!st.ok()) {
        error = st.WithContext("prefetching batch " + std::to_string(b));
        break;
      }
      ready.push_back(std::move(batch));
      cv.notify_all();
    }
    std::lock_guard<std::mutex> lock(mu);
    producer_done = true;
    cv.notify_all();
  }
};

BatchPrefetcher::BatchPrefetcher(DatasetReader& reader, std::vector<std::vector<int64_t>> batches,
                                 int depth)
    : state_(std::make_unique<State>()) {
  state_->reader = &reader;
  state_->batches = std::move(batches);
  state_->depth = static_cast<size_t>(depth < 1 ? 1 : depth);
  state_->thread = std::thread([s = state_.get()] { s->Run(); });
}

BatchPrefetcher::~BatchPrefetcher() {
  {
    std::lock_guard<std::mutex> lock(state_->mu);
    state_->stop = true;
  }
  state_->cv.notify_all();
  if (state_->thread.joinable()) state_->thread.join();
}

Result<bool> BatchPrefetcher::Next(Batch* out) {
  State& s = *state_;
  std::unique_lock<std::mutex> lock(s.mu);
  if (s.returned == s.batches.size()) return false;
  s.cv.wait(lock, [&] { return !s.ready.empty() || s.producer_done; });
  if (s.ready.empty()) {
    if (!s.error.ok()) return s.error;
    return Internal("prefetcher stopped before batch " + std::to_string(s.returned));
  }
  // The caller's previous batch becomes a spare buffer for the reader thread.
  Batch previous = std::move(*out);
  *out = std::move(s.ready.front());
  s.ready.pop_front();
  if (!previous.pixels.empty() && s.spare.size() < s.depth) s.spare.push_back(std::move(previous));
  ++s.returned;
  s.cv.notify_all();
  return true;
}

}  // namespace effnet::storage
