// effnet-probe: one unary call to the coordinator, for Kubernetes readiness/liveness probes and for
// init containers that wait until the coordinator serves.
//
//   effnet-probe --address 127.0.0.1:50051 --token-file /etc/effnet/token/token
//                [--method /effnet.v1.Coordinator/GetJobState] [--timeout 2] [--wait 0]
//                [--tls-ca ca.pem --tls-server-name effnet-coordinator]
//
// Exit 0 when the call returns OK, 1 otherwise (the gRPC status code and message are logged).
//
// Note [empty request]: the probe links no generated code, so it does not break when the
// coordinator's messages change. It sends an empty protobuf message (zero bytes), which is the
// valid encoding of any request message with every field at its default; GetJobState needs no
// fields. The method path is a flag, and tests/k8s checks it against the service declared in
// proto/.
#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/grpcpp.h>

#include <CLI/CLI.hpp>
#include <chrono>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>

#include "common/log.h"
#include "common/status.h"

namespace {

struct ProbeConfig {
  std::string address = "127.0.0.1:50051";
  std::string token_file;  // empty: no authorization metadata (the call is then refused)
  std::string method = "/effnet.v1.Coordinator/GetJobState";
  double timeout_s = 2.0;       // deadline of one call
  double wait_s = 0.0;          // > 0: retry every second until OK or this many seconds have passed
  std::string tls_ca_file;      // empty: insecure channel
  std::string tls_server_name;  // overrides the name checked in the server certificate
};

effnet::Result<std::string> ReadToken(const std::string& path) {
  std::ifstream in(path);
  if (!in) return effnet::NotFound("token file " + path + ": cannot open");
  std::stringstream ss;
  ss << in.rdbuf();
  std::string token = ss.str();
  while (!token.empty() && (token.back() == '\n' || token.back() == '\r' || token.back() == ' ')) {
    token.pop_back();
  }
  if (token.empty()) return effnet::InvalidArgument("token file " + path + ": empty");
  return token;
}

std::shared_ptr<grpc::Channel> MakeChannel(const ProbeConfig& c) {
  if (c.tls_ca_file.empty()) {
    return grpc::CreateChannel(c.address, grpc::InsecureChannelCredentials());
  }
  std::ifstream in(c.tls_ca_file);
  std::stringstream ss;
  ss << in.rdbuf();
  grpc::SslCredentialsOptions opts;
  opts.pem_root_certs = ss.str();
  grpc::ChannelArguments args;
  if (!c.tls_server_name.empty()) {
    args.SetString(GRPC_SSL_TARGET_NAME_OVERRIDE_ARG, c.tls_server_name);
  }
  return grpc::CreateCustomChannel(c.address, grpc::SslCredentials(opts), args);
}

effnet::Status CallOnce(grpc::GenericStub& stub, const ProbeConfig& c, const std::string& token,
                        size_t* response_bytes) {
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() +
                   std::chrono::milliseconds(static_cast<int64_t>(c.timeout_s * 1000)));
  if (!token.empty()) ctx.AddMetadata("authorization", "Bearer " + token);
  grpc::Slice empty(std::string{});
  grpc::ByteBuffer request(&empty, 1);
  grpc::ByteBuffer response;
  grpc::Status status;
  grpc::CompletionQueue cq;
  auto call = stub.PrepareUnaryCall(&ctx, c.method, request, &cq);
  call->StartCall();
  call->Finish(&response, &status, reinterpret_cast<void*>(1));
  void* tag = nullptr;
  bool ok = false;
  if (!cq.Next(&tag, &ok) || !ok) {
    return effnet::Internal(c.address + c.method + ": completion queue failed");
  }
  if (!status.ok()) {
    const auto code = status.error_code();
    const std::string what = c.address + c.method + ": grpc code " + std::to_string(code) + ": " +
                             status.error_message();
    if (code == grpc::StatusCode::UNAUTHENTICATED || code == grpc::StatusCode::PERMISSION_DENIED) {
      return effnet::PermissionDenied(what);
    }
    if (code == grpc::StatusCode::DEADLINE_EXCEEDED) return effnet::DeadlineExceeded(what);
    return effnet::Unavailable(what);
  }
  *response_bytes = response.Length();
  return effnet::Status::Ok();
}

}  // namespace

int main(int argc, char** argv) {
  ProbeConfig c;
  CLI::App app{"Calls one coordinator RPC; exit 0 when it answers OK (Kubernetes probes)."};
  app.option_defaults()->always_capture_default();  // --help shows every default
  app.add_option("--address", c.address, "host:port of the coordinator")->capture_default_str();
  app.add_option("--token-file", c.token_file, "file holding the job token");
  app.add_option("--method", c.method, "full method path")->capture_default_str();
  app.add_option("--timeout", c.timeout_s, "deadline of one call, seconds")->capture_default_str();
  app.add_option("--wait", c.wait_s, "retry until OK for this many seconds (0: one call)")
      ->capture_default_str();
  app.add_option("--tls-ca", c.tls_ca_file, "CA certificate (PEM); empty: insecure channel");
  app.add_option("--tls-server-name", c.tls_server_name, "name expected in the server certificate");
  CLI11_PARSE(app, argc, argv);
  effnet::log::SetTag("probe");

  std::string token;
  if (!c.token_file.empty()) {
    auto t = ReadToken(c.token_file);
    if (!t.ok()) {
      effnet::log::Error(t.status().ToString());
      return 1;
    }
    token = *t;
  }
  auto channel = MakeChannel(c);
  grpc::GenericStub stub(channel);
  const auto start = std::chrono::steady_clock::now();
  for (int attempt = 1;; ++attempt) {
    size_t bytes = 0;
    const effnet::Status s = CallOnce(stub, c, token, &bytes);
    if (s.ok()) {
      effnet::log::Info(c.address + c.method + ": OK (" + std::to_string(bytes) +
                        " response bytes, attempt " + std::to_string(attempt) + ")");
      return 0;
    }
    const double waited =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    // A refused token will not fix itself: fail at once so the pod events show the reason.
    if (s.code() == effnet::StatusCode::kPermissionDenied || waited + 1.0 > c.wait_s) {
      effnet::log::Error(s.ToString() + " (attempt " + std::to_string(attempt) + ")");
      return 1;
    }
    std::this_thread::sleep_for(std::chrono::seconds(1));
  }
}
