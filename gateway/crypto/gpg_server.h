// gateway/crypto/gpg_server.h — encryption through one long-running `gpg --server` (GnuPG's own
// Assuan server mode), spoken with libassuan, the library GPGME itself is built on.
//
// Why: GPGME starts a new gpg for every operation, and starting gpg (exec, dynamic linking, the
// keyring) costs more than encrypting a 10 KB message does. A session keeps one gpg and sends it
// RESET, RECIPIENT (one per fingerprint), INPUT, OUTPUT and ENCRYPT for each message; gpg's
// encrypt_crypt, the code behind `gpg --encrypt`, does the work with the home's gpg.conf. Only
// encryption without signing goes this way (gpg's server mode cannot sign); the rest is GPGME.
//
// The data travel in memfds passed over the session's socket: no pipes to deadlock on, nothing
// written to disk. A session is current() only while the keyring files it started with
// (pubring.kbx, gpg.conf, trustdb.gpg) are unchanged: after an import, a deletion or a changed
// option the caller starts a new one, so gpg never works from a keyring it read before. Any error
// (gpg refused a key, the connection or gpg failed) ends the session's use: the caller drops it
// and encrypts that message through GPGME, which gives the definitive answer.
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "common/result.h"

namespace postvault::crypto {

class GpgServerSession {
public:
    // Starts `gpg --server` on the GnuPG home (the gpg GPGME uses). Errors: "pgp.engine".
    static Result<std::unique_ptr<GpgServerSession>> start(const std::string& home);
    ~GpgServerSession();
    GpgServerSession(const GpgServerSession&) = delete;
    GpgServerSession& operator=(const GpgServerSession&) = delete;

    // An armored OpenPGP message to `fingerprints` (hex; all trusted: the lookup decided).
    Result<std::string> encrypt(std::string_view plaintext, const std::vector<std::string>& fingerprints);

    // False once the keyring changed since start().
    bool current() const;

private:
    struct Impl;
    explicit GpgServerSession(std::unique_ptr<Impl> impl);
    std::unique_ptr<Impl> impl_;
};

}  // namespace postvault::crypto
