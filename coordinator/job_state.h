// The job state outside the running Job: the state file's format (the message JobStateFile in
// proto/coordinator.proto is its schema), asking a live coordinator for its JobState, and the text
// `effnet-coordinator state` prints. The launcher (launch/effnet-run) reads the job only through
// that command.
#pragma once

#include <string>

#include "common/status.h"
#include "proto/coordinator.pb.h"

namespace effnet::coord {

// Version of the state file's content (JobStateFile.format).
//   1: nlohmann JSON written field by field; train_hash with a wrong FNV offset basis.
//   2: protobuf's JSON mapping of JobStateFile; train_hash = common/hash.h's Fnv1a64.
inline constexpr int kStateFormat = 2;

// "<state_dir>/state.json"
std::string StateFilePath(const std::string& state_dir);

// Parses a state file's text and checks its format. A file of another format or a malformed one
// is refused with what to do about it.
Result<v1::JobStateFile> ParseStateFile(const std::string& text);
// ParseStateFile of <state_dir>/state.json; NotFound when there is none. Errors name the file.
Result<v1::JobStateFile> ReadStateFile(const std::string& state_dir);

// GetJobState of a live coordinator.
struct StateQuery {
  std::string address;      // host:port
  std::string token;        // the job's token
  std::string tls_ca_file;  // empty: plaintext
  double timeout_s = 5.0;
};
Result<v1::JobState> AskCoordinator(const StateQuery& q);
// Resize of a live coordinator (Note [elastic world size] in coordinator/job.h): the job state
// after the change, or the refusal with its reason.
Result<v1::JobState> AskResize(const StateQuery& q, int world_size, const std::string& reason);

// The per-epoch results table, one row per decided epoch (epochs and stages counted from 1), and
// a summary line of the best epoch, last checkpoint, generation and phase; then the failures the
// job survived.
std::string ResultsTable(const v1::JobState& s);

}  // namespace effnet::coord
