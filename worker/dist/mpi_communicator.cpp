// MPI communicator: non-blocking MPI collectives posted and polled by one communication thread.
// See Note [heartbeat] (mpi_communicator.h) and Note [deadlines] (communicator.h).
#include "worker/dist/mpi_communicator.h"

#include <ATen/ATen.h>
#include <c10/util/BFloat16.h>  // for the bf16 sum op
#include <c10/util/Half.h>
#include <mpi.h>

#include <chrono>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <mutex>
#include <thread>

#include "common/log.h"
#include "common/text.h"

namespace effnet::dist {
namespace {

std::atomic<bool> g_process_broken{false};

double Seconds(int64_t ns) { return static_cast<double>(ns) * 1e-9; }

std::string MpiErrorString(int rc) {
  char buf[MPI_MAX_ERROR_STRING];
  int len = 0;
  MPI_Error_string(rc, buf, &len);
  return std::string(buf, len);
}

template <typename T>
void SumInto(const void* in, void* inout, int n) {
  const T* a = static_cast<const T*>(in);
  T* b = static_cast<T*>(inout);
  for (int i = 0; i < n; ++i)
    b[i] = static_cast<T>(static_cast<float>(a[i]) + static_cast<float>(b[i]));
}
// MPI has no 16-bit float types: they travel as MPI_UINT16_T with these user ops.
void Bf16Sum(void* in, void* inout, int* len, MPI_Datatype*) {
  SumInto<c10::BFloat16>(in, inout, *len);
}
void HalfSum(void* in, void* inout, int* len, MPI_Datatype*) {
  SumInto<c10::Half>(in, inout, *len);
}

// Heartbeat payload (see Note [heartbeat]).
struct Beat {
  int64_t rank = -1;
  uint64_t started = 0, completed = 0;          // host collectives
  uint64_t dev_started = 0, dev_completed = 0;  // device (NCCL) collectives
};
constexpr int kBeatTag = 4242;

struct Op {
  OpType type = OpType::kAllReduce;
  uint64_t seq = 0;
  at::Tensor tensor;         // host tensor the transport works on
  at::Tensor device_tensor;  // caller's tensor when staged through the host
  ReduceOp reduce = ReduceOp::kSum;
  int root = 0;
  std::string gather_in;
  std::vector<std::string> gather_out;
  int64_t deadline_ns = 0;

  std::mutex mu;
  std::condition_variable cv;
  bool done = false;
  bool copied_back = false;
  Status status;
  WorkTiming timing;
};

}  // namespace

void MarkProcessBroken() { g_process_broken = true; }
bool AnyCommunicatorBroken() { return g_process_broken.load(); }

struct MpiCommunicator::Impl {
  CommOptions options;
  MPI_Comm comm = MPI_COMM_NULL;     // data
  MPI_Comm hb_comm = MPI_COMM_NULL;  // heartbeat
  MPI_Op bf16_sum = MPI_OP_NULL, half_sum = MPI_OP_NULL;
  int rank = 0, world = 1;

  std::atomic<uint64_t> next_seq{0};
  std::atomic<uint64_t> started{0}, completed{0};  // host: 1 + seq of last started/completed
  std::atomic<uint64_t> dev_started{0}, dev_completed{0};

  std::mutex queue_mu;
  std::condition_variable queue_cv;
  std::deque<std::shared_ptr<Op>> queue;
  bool stop = false;
  std::thread thread;

  // Broken state: the first error, returned by every later call.
  std::mutex broken_mu;
  Status broken;

  // Heartbeat table (guarded by hb_mu; written by the thread, read by DescribeMissing).
  mutable std::mutex hb_mu;
  std::vector<Beat> peer_beat;
  std::vector<int64_t> peer_heard_ns;
  std::vector<MPI_Request> send_req;
  std::vector<Beat> send_buf;
  int64_t last_send_ns = 0;

  Status BrokenStatus() {
    std::lock_guard<std::mutex> lock(broken_mu);
    return broken;
  }
  void SetBroken(const Status& s) {
    {
      std::lock_guard<std::mutex> lock(broken_mu);
      if (broken.ok()) broken = s;
    }
    MarkProcessBroken();
  }

  std::shared_ptr<Op> NewOp(OpType type) {
    auto op = std::make_shared<Op>();
    op->type = type;
    op->seq = next_seq.fetch_add(1);
    op->timing.issued_ns = NowNs();
    op->deadline_ns = op->timing.issued_ns + static_cast<int64_t>(options.timeout_s * 1e9);
    return op;
  }

  void Enqueue(const std::shared_ptr<Op>& op) {
    {
      std::lock_guard<std::mutex> lock(queue_mu);
      queue.push_back(op);
    }
    queue_cv.notify_one();
  }

  static void Complete(Op& op, Status status) {
    {
      std::lock_guard<std::mutex> lock(op.mu);
      op.status = std::move(status);
      op.timing.finished_ns = NowNs();
      op.done = true;
    }
    op.cv.notify_all();
  }

  std::string Describe(const Op& op) const {
    std::string s = std::string(OpTypeName(op.type)) + " #" + std::to_string(op.seq);
    if (op.tensor.defined()) {
      s += " (" + std::to_string(op.tensor.numel()) + " x " +
           std::string(c10::toString(op.tensor.scalar_type())) + ")";
    }
    return s;
  }

  // --- heartbeat (thread only, except DescribeMissing) ---
  void HeartbeatTick() {
    if (world == 1) return;
    const int64_t now = NowNs();
    if (now - last_send_ns >= static_cast<int64_t>(options.heartbeat_interval_s * 1e9)) {
      last_send_ns = now;
      Beat beat;
      beat.rank = rank;
      beat.started = started.load();
      beat.completed = completed.load();
      beat.dev_started = dev_started.load();
      beat.dev_completed = dev_completed.load();
      for (int p = 0; p < world; ++p) {
        if (p == rank) continue;
        if (send_req[p] != MPI_REQUEST_NULL) {
          int flag = 0;
          MPI_Test(&send_req[p], &flag, MPI_STATUS_IGNORE);
          if (!flag) continue;  // the peer is not draining: do not pile up messages
        }
        send_buf[p] = beat;
        MPI_Isend(&send_buf[p], sizeof(Beat), MPI_BYTE, p, kBeatTag, hb_comm, &send_req[p]);
      }
    }
    for (;;) {
      int flag = 0;
      MPI_Status st;
      if (MPI_Iprobe(MPI_ANY_SOURCE, kBeatTag, hb_comm, &flag, &st) != MPI_SUCCESS || !flag) break;
      Beat beat;
      if (MPI_Recv(&beat, sizeof(Beat), MPI_BYTE, st.MPI_SOURCE, kBeatTag, hb_comm,
                   MPI_STATUS_IGNORE) != MPI_SUCCESS) {
        break;
      }
      std::lock_guard<std::mutex> lock(hb_mu);
      peer_beat[st.MPI_SOURCE] = beat;
      peer_heard_ns[st.MPI_SOURCE] = NowNs();
    }
  }

  std::string DescribeMissing(bool device, uint64_t seq) const {
    std::lock_guard<std::mutex> lock(hb_mu);
    const int64_t now = NowNs();
    const int64_t silence = static_cast<int64_t>(options.heartbeat_silence_s * 1e9);
    std::vector<std::string> parts;
    for (int p = 0; p < world; ++p) {
      if (p == rank) continue;
      const Beat& b = peer_beat[p];
      const uint64_t st = device ? b.dev_started : b.started;
      const uint64_t co = device ? b.dev_completed : b.completed;
      const std::string progress =
          b.rank < 0 ? "never heard from"
                     : (st == 0 ? "no collective started"
                                : "last started #" + std::to_string(st - 1) +
                                      (co == 0 ? ", none completed"
                                               : ", completed #" + std::to_string(co - 1)));
      if (now - peer_heard_ns[p] > silence) {
        parts.push_back("rank " + std::to_string(p) + " silent for " +
                        Fixed(Seconds(now - peer_heard_ns[p]), 2) + " s (" + progress + ")");
      } else if (st < seq + 1) {
        parts.push_back("rank " + std::to_string(p) + " alive but has not started #" +
                        std::to_string(seq) + " (" + progress + ")");
      }
    }
    if (parts.empty())
      return "no rank missing: every peer is alive and started #" + std::to_string(seq) +
             " (slow transport?)";
    std::string out = "missing: ";
    for (size_t i = 0; i < parts.size(); ++i) out += (i ? "; " : "") + parts[i];
    return out;
  }

  // --- the communication thread ---
  void Loop() {
    for (;;) {
      std::shared_ptr<Op> op;
      {
        std::unique_lock<std::mutex> lock(queue_mu);
        queue_cv.wait_for(lock, std::chrono::duration<double>(options.heartbeat_interval_s),
                          [&] { return stop || !queue.empty(); });
        if (!queue.empty()) {
          op = queue.front();
          queue.pop_front();
        } else if (stop) {
          return;
        }
      }
      HeartbeatTick();
      if (op) Execute(*op);
    }
  }

  // Polls `req` until done or op's deadline; keeps the heartbeat going.
  Status Poll(Op& op, MPI_Request* req) {
    int64_t spin_until = NowNs() + 200000;  // spin 0.2 ms, then sleep between tests
    for (;;) {
      int flag = 0;
      int rc = MPI_Test(req, &flag, MPI_STATUS_IGNORE);
      if (rc != MPI_SUCCESS) {
        return Unavailable("rank " + std::to_string(rank) + ": " + Describe(op) + " failed: " +
                           MpiErrorString(rc) + "; " + DescribeMissing(false, op.seq));
      }
      if (flag) return Status::Ok();
      HeartbeatTick();
      const int64_t now = NowNs();
      if (now > op.deadline_ns) {
        // Note [deadlines]: the request is abandoned (not cancellable for collectives).
        return DeadlineExceeded("rank " + std::to_string(rank) + ": " + Describe(op) +
                                " did not complete within " + Fixed(options.timeout_s, 1) + " s; " +
                                DescribeMissing(false, op.seq));
      }
      if (now > spin_until) std::this_thread::sleep_for(std::chrono::microseconds(50));
    }
  }

  MPI_Datatype TypeOf(at::ScalarType t, ReduceOp reduce, MPI_Op* op) const {
    *op = MPI_SUM;
    switch (t) {
      case at::kFloat:
        return MPI_FLOAT;
      case at::kDouble:
        return MPI_DOUBLE;
      case at::kLong:
        return MPI_INT64_T;
      case at::kInt:
        return MPI_INT32_T;
      case at::kByte:
        return MPI_UINT8_T;
      case at::kChar:
        return MPI_INT8_T;
      case at::kBool:
        return MPI_C_BOOL;
      case at::kBFloat16:
        *op = bf16_sum;
        return MPI_UINT16_T;
      case at::kHalf:
        *op = half_sum;
        return MPI_UINT16_T;
      default:
        return MPI_DATATYPE_NULL;
    }
  }

  void Execute(Op& op) {
    Status prior = BrokenStatus();
    if (!prior.ok()) {
      Complete(op, Status(prior.code(),
                          Describe(op) + " not run: communicator broken by: " + prior.message()));
      return;
    }
    op.timing.started_ns = NowNs();
    started = op.seq + 1;
    Status s = Run(op);
    if (s.ok()) {
      completed = op.seq + 1;
    } else {
      SetBroken(s);
      log::Error(s.message());
    }
    Complete(op, std::move(s));
  }

  Status Run(Op& op) {
    MPI_Request req = MPI_REQUEST_NULL;
    int rc = MPI_SUCCESS;
    switch (op.type) {
      case OpType::kAllReduce:
      case OpType::kBroadcast: {
        MPI_Op mop;
        MPI_Datatype dt = TypeOf(op.tensor.scalar_type(), op.reduce, &mop);
        if (dt == MPI_DATATYPE_NULL) {
          return InvalidArgument(Describe(op) + ": dtype not supported by the MPI backend");
        }
        const int count = static_cast<int>(op.tensor.numel());
        if (op.type == OpType::kAllReduce) {
          rc = MPI_Iallreduce(MPI_IN_PLACE, op.tensor.data_ptr(), count, dt, mop, comm, &req);
        } else {
          rc = MPI_Ibcast(op.tensor.data_ptr(), count, dt, op.root, comm, &req);
        }
        break;
      }
      case OpType::kBarrier:
        rc = MPI_Ibarrier(comm, &req);
        break;
      case OpType::kAllGather: {
        std::vector<int> sizes(world);
        int mine = static_cast<int>(op.gather_in.size());
        rc = MPI_Iallgather(&mine, 1, MPI_INT, sizes.data(), 1, MPI_INT, comm, &req);
        if (rc != MPI_SUCCESS) break;
        EFFNET_RETURN_IF_ERROR(Poll(op, &req));
        std::vector<int> displs(world, 0);
        int total = 0;
        for (int p = 0; p < world; ++p) displs[p] = total, total += sizes[p];
        std::string all(static_cast<size_t>(total), '\0');
        rc = MPI_Iallgatherv(op.gather_in.data(), mine, MPI_BYTE, all.data(), sizes.data(),
                             displs.data(), MPI_BYTE, comm, &req);
        if (rc != MPI_SUCCESS) break;
        EFFNET_RETURN_IF_ERROR(Poll(op, &req));
        op.gather_out.resize(world);
        for (int p = 0; p < world; ++p) op.gather_out[p] = all.substr(displs[p], sizes[p]);
        return Status::Ok();
      }
    }
    if (rc != MPI_SUCCESS) {
      return Unavailable("rank " + std::to_string(rank) + ": posting " + Describe(op) +
                         " failed: " + MpiErrorString(rc));
    }
    EFFNET_RETURN_IF_ERROR(Poll(op, &req));
    if (op.type == OpType::kAllReduce && op.reduce == ReduceOp::kAvg) op.tensor.div_(world);
    return Status::Ok();
  }
};

namespace {

class MpiWork final : public Work {
 public:
  explicit MpiWork(std::shared_ptr<Op> op) : op_(std::move(op)) {}
  Status Wait() override {
    std::unique_lock<std::mutex> lock(op_->mu);
    // Grace beyond the deadline: the thread enforces the deadline itself; this only guards
    // against the thread being stuck inside MPI.
    const auto until = std::chrono::steady_clock::time_point(
        std::chrono::nanoseconds(op_->deadline_ns + 2'000'000'000LL));
    if (!op_->cv.wait_until(lock, until, [&] { return op_->done; })) {
      MarkProcessBroken();
      return DeadlineExceeded(std::string(OpTypeName(op_->type)) + " #" + std::to_string(op_->seq) +
                              ": communication thread unresponsive past the deadline");
    }
    if (op_->status.ok() && op_->device_tensor.defined() && !op_->copied_back) {
      op_->device_tensor.copy_(op_->tensor);
      op_->copied_back = true;
    }
    return op_->status;
  }
  bool IsCompleted() override {
    std::lock_guard<std::mutex> lock(op_->mu);
    return op_->done;
  }
  uint64_t seq() const override { return op_->seq; }
  OpType op() const override { return op_->type; }
  WorkTiming timing() const override {
    std::lock_guard<std::mutex> lock(op_->mu);
    return op_->timing;
  }
  std::shared_ptr<Op> raw() const { return op_; }

 private:
  std::shared_ptr<Op> op_;
};

// A work that failed before reaching the thread (bad argument).
std::shared_ptr<Work> FailedWork(std::shared_ptr<Op> op, Status s) {
  op->status = std::move(s);
  op->done = true;
  return std::make_shared<MpiWork>(std::move(op));
}

}  // namespace

MpiCommunicator::MpiCommunicator(const CommOptions& options) : impl_(std::make_unique<Impl>()) {
  impl_->options = options;
}

Status MpiCommunicator::Init() {
  int initialized = 0;
  MPI_Initialized(&initialized);
  if (!initialized) return FailedPrecondition("MPI communicator: MPI is not initialised (InitMpi)");
  int provided = 0;
  MPI_Query_thread(&provided);
  if (provided < MPI_THREAD_MULTIPLE) {
    return FailedPrecondition("MPI communicator: needs MPI_THREAD_MULTIPLE, MPI provides level " +
                              std::to_string(provided));
  }
  Impl& m = *impl_;
  MPI_Comm_dup(MPI_COMM_WORLD, &m.comm);
  MPI_Comm_dup(MPI_COMM_WORLD, &m.hb_comm);
  MPI_Comm_set_errhandler(m.comm, MPI_ERRORS_RETURN);
  MPI_Comm_set_errhandler(m.hb_comm, MPI_ERRORS_RETURN);
  MPI_Comm_rank(m.comm, &m.rank);
  MPI_Comm_size(m.comm, &m.world);
  MPI_Op_create(&Bf16Sum, 1, &m.bf16_sum);
  MPI_Op_create(&HalfSum, 1, &m.half_sum);
  m.peer_beat.assign(m.world, Beat{});
  m.peer_heard_ns.assign(m.world, NowNs());
  m.send_req.assign(m.world, MPI_REQUEST_NULL);
  m.send_buf.assign(m.world, Beat{});
  m.thread = std::thread([this] { impl_->Loop(); });
  return Status::Ok();
}

MpiCommunicator::~MpiCommunicator() {
  Impl& m = *impl_;
  if (m.thread.joinable()) {
    {
      std::lock_guard<std::mutex> lock(m.queue_mu);
      m.stop = true;
    }
    m.queue_cv.notify_all();
    m.thread.join();
  }
  if (m.comm == MPI_COMM_NULL) return;
  // Heartbeat sends a dead peer never received stay pending: cancel them. The communicators are
  // not freed: MPI_Comm_free is collective and a broken world would hang in it.
  for (auto& req : m.send_req) {
    if (req == MPI_REQUEST_NULL) continue;
    int flag = 0;
    MPI_Test(&req, &flag, MPI_STATUS_IGNORE);
    if (!flag) {
      MPI_Cancel(&req);
      MPI_Request_free(&req);
    }
  }
}

int MpiCommunicator::rank() const { return impl_->rank; }
int MpiCommunicator::world_size() const { return impl_->world; }
uint64_t MpiCommunicator::next_seq() const { return impl_->next_seq.load(); }

std::shared_ptr<Work> MpiCommunicator::AllReduceAsync(const at::Tensor& tensor, ReduceOp op) {
  auto o = impl_->NewOp(OpType::kAllReduce);
  o->reduce = op;
  if (!tensor.is_contiguous()) {
    return FailedWork(o, InvalidArgument("all_reduce #" + std::to_string(o->seq) +
                                         ": tensor must be contiguous"));
  }
  if (op == ReduceOp::kAvg && !at::isFloatingType(tensor.scalar_type())) {
    return FailedWork(o, InvalidArgument("all_reduce #" + std::to_string(o->seq) +
                                         ": kAvg needs a floating tensor"));
  }
  if (tensor.is_cpu()) {
    o->tensor = tensor;
  } else {
    o->device_tensor = tensor;
    o->tensor = tensor.to(at::kCPU);  // staged through the host; copied back in Wait()
  }
  auto work = std::make_shared<MpiWork>(o);
  impl_->Enqueue(o);
  return work;
}

std::shared_ptr<Work> MpiCommunicator::BroadcastAsync(const at::Tensor& tensor, int root) {
  auto o = impl_->NewOp(OpType::kBroadcast);
  o->root = root;
  if (!tensor.is_contiguous() || root < 0 || root >= impl_->world) {
    return FailedWork(o, InvalidArgument("broadcast #" + std::to_string(o->seq) +
                                         ": needs a contiguous tensor and a valid root"));
  }
  if (tensor.is_cpu()) {
    o->tensor = tensor;
  } else {
    o->device_tensor = tensor;
    o->tensor = tensor.to(at::kCPU);
  }
  auto work = std::make_shared<MpiWork>(o);
  impl_->Enqueue(o);
  return work;
}

Status MpiCommunicator::Barrier() {
  auto o = impl_->NewOp(OpType::kBarrier);
  auto work = std::make_shared<MpiWork>(o);
  impl_->Enqueue(o);
  return work->Wait();
}

Result<std::vector<std::string>> MpiCommunicator::AllGather(const std::string& bytes) {
  auto o = impl_->NewOp(OpType::kAllGather);
  o->gather_in = bytes;
  auto work = std::make_shared<MpiWork>(o);
  impl_->Enqueue(o);
  EFFNET_RETURN_IF_ERROR(work->Wait());
  return o->gather_out;
}

void MpiCommunicator::PublishDeviceProgress(uint64_t started, uint64_t completed) {
  impl_->dev_started = started;
  impl_->dev_completed = completed;
}

std::string MpiCommunicator::DescribeMissing(bool device, uint64_t seq) const {
  return impl_->DescribeMissing(device, seq);
}

Result<std::shared_ptr<Communicator>> CreateMpiCommunicator(const CommOptions& options) {
  auto comm = std::make_shared<MpiCommunicator>(options);
  EFFNET_RETURN_IF_ERROR(comm->Init().WithContext("creating the MPI communicator"));
  return std::shared_ptr<Communicator>(comm);
}

}  // namespace effnet::dist
