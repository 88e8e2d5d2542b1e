// gateway/crypto/gpg_worker.h — the worker side of worker_gpg_engine (gpg_engine.h): the loop
// that `postvault-pgp` runs.
//
// Protocol, over the stream socket the server passes as the worker's standard input: one request
// at a time, each answered before the next. A frame is an 8-byte little-endian length followed by
// that many bytes of CBOR (nlohmann::json's binary format, binary values for message bytes).
//   request   {"op": "encrypt", "data", "recipients": [fpr...], "signer"}
//             {"op": "sign", "data", "signer"}    {"op": "decrypt", "data"}
//             {"op": "verify", "data", "signature"}
//   answer    {"ok": true, ...the operation's fields} or
//             {"ok": false, "code", "temporary", "message"}
// Frames are bounded by kMaxGpgWorkerFrame. The worker exits when the socket closes, on a frame it
// cannot read, and on a request it cannot decode; the server starts a new one when it needs it.
#pragma once

#include <cstdint>
#include <string>

namespace postvault::crypto {

inline constexpr std::uint64_t kMaxGpgWorkerFrame = std::uint64_t{1} << 30;

// Serves requests on `fd` with GPGME on `home` until the socket closes. Returns the exit code.
int run_gpg_worker(int fd, const std::string& home);

}  // namespace postvault::crypto
