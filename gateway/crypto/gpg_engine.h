// gateway/crypto/gpg_engine.h — the per-message OpenPGP operations on the gateway's GnuPG home:
// encrypt (optionally signed), detached signature, decrypt with verification, verification of a
// detached signature. The Keyring (keyring.h) decides which keys; a GpgEngine only runs gpg.
//
// Two implementations behind one interface:
//   local_gpg_engine(home)        GPGME in this process, contexts pooled and reused (GPGME runs
//                                 `gpg --version` for every new context); encryption without
//                                 signing through long-running gpg processes (gpg_server.h).
//   worker_gpg_engine(options)    the same operations in small worker processes (the
//                                 `postvault-pgp` program, gpg_worker.h), started once each
//                                 with posix_spawn and reused. GPGME starts gpg with fork(): from
//                                 the server, a large multi-threaded process, each fork costs
//                                 milliseconds of page-table copying and copy-on-write faults;
//                                 from a worker of a few megabytes it costs almost nothing.
//
// Both are thread safe: each call takes a context (or worker) of its own. Errors: "pgp.engine"
// (temporary: gpg or a worker failed), "pgp.signing_key" (temporary: the signer cannot sign),
// "pgp.decrypt" (permanent: not for our keys, damaged, or no signature to check).
#pragma once

#include <chrono>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "common/result.h"

namespace postvault::crypto {

// What a signature check found; the Keyring adds the signer's address from its key list.
struct SignatureCheck {
    bool present = false;
    bool valid = false;          // a good signature by a key in the keyring
    std::string signer;          // fingerprint (or key id) the signature names
    std::string summary;         // "good", "bad", "no public key", "expired key", ...
};

struct DecryptOutput {
    std::string plaintext;
    std::vector<std::string> recipients;  // key ids it was encrypted to
    SignatureCheck signature;
};

struct DetachedSignature {
    std::string signature;  // armored
    std::string micalg;     // "pgp-sha256" or the like, for multipart/signed
};

class GpgEngine {
public:
    virtual ~GpgEngine() = default;
    // Armored OpenPGP message to `recipients` (fingerprints, all trusted: the lookup decided),
    // signed by `signer` (a fingerprint with a secret key here) when it is not empty.
    virtual Result<std::string> encrypt(std::string_view plaintext, const std::vector<std::string>& recipients,
                                        const std::string& signer) = 0;
    virtual Result<DetachedSignature> sign_detached(std::string_view data, const std::string& signer) = 0;
    virtual Result<DecryptOutput> decrypt(std::string_view ciphertext) = 0;
    // A detached `signature` over `data`; an empty `signature`: `data` is signed inline.
    virtual Result<SignatureCheck> verify(std::string_view data, std::string_view signature) = 0;
};

// keep_gpg_running: encryption without signing goes through long-running `gpg --server`
// sessions (gpg_server.h) instead of a new gpg per message; false: GPGME for everything.
std::unique_ptr<GpgEngine> local_gpg_engine(const std::string& home, bool keep_gpg_running = true);

struct WorkerOptions {
    std::string program;          // path of postvault-pgp
    std::string home;             // the GnuPG home
    unsigned processes = 4;       // at most this many run at once; started when first needed
    std::chrono::seconds timeout{300};  // one operation; a worker that takes longer is killed
};

std::unique_ptr<GpgEngine> worker_gpg_engine(const WorkerOptions& options);

}  // namespace postvault::crypto
