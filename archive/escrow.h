// archive/escrow.h — encryption at rest in "escrow" mode: archive blobs are
// OpenPGP messages to one or more escrow public keys, through GPGME.
//
// The gateway holds only public keys, so it can write the archive but never
// read it back; reading takes an escrow secret key, brought in for an export
// or an audit (EscrowDecryptor) and gone again afterwards.
//
//   auto escrow = EscrowEncryptor::open({"/etc/postvault/escrow1.asc", ...},
//                                       "/var/lib/postvault/archive/gnupg");
//   auto message = escrow->encrypt(compressed_blob);   // binary OpenPGP
//
//   auto reader = EscrowDecryptor::open("/mnt/token/escrow1-secret.gpg", passphrase);
//   auto blob = reader->decrypt(*message);
//
// EscrowEncryptor imports the given public keys (armored or binary) into
// `gnupg_home`, a directory the archive owns (created 0700 when missing), and
// encrypts every message to ALL of them (each key can decrypt alone), with
// always-trust and without compression (the caller compresses first). A key
// file must yield at least one valid key that can encrypt; a file holding a
// secret key is refused (escrow secrets do not belong on the gateway).
//
// EscrowDecryptor makes a private temporary GNUPGHOME (0700, under /dev/shm
// when writable, else $TMPDIR, else /tmp — short, so gpg-agent's socket path
// fits in sun_path), imports the secret key there and checks, with a
// round trip, that it decrypts (so a wrong passphrase fails at open). The
// destructor stops that home's gpg-agent (gpgconf --kill all) and removes the
// directory. The secret key and the passphrase exist only in that directory,
// in the agent and in this object's memory (wiped on destruction); neither is
// ever logged or put in an Error message.
//
// Performance: GPGME runs one gpg process per operation, so each call costs a
// process start (milliseconds, not microseconds): run these calls on a worker
// pool, never on an I/O thread, and spread bulk work over several threads.
// Thread safety: encrypt() and decrypt() may run concurrently on one object
// (each call has its own GPGME context). EscrowEncryptor is a copyable value;
// EscrowDecryptor is movable, not copyable.
//
// Errors: "archive.escrow_key" (file unreadable, no usable encryption key, no
// secret key, secret key where a public one belongs; names the file),
// "archive.escrow_home" (cannot create the GnuPG home, temporary),
// "archive.escrow_engine" (gpg missing or too old),
// "archive.escrow_encrypt" (temporary) and "archive.escrow_decrypt" (with
// GPGME's message; also a wrong passphrase at open).
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "common/result.h"

namespace postvault::archive {

class ContextPool;   // GPGME contexts kept for reuse; in escrow.cpp

class EscrowEncryptor {
public:
    static Result<EscrowEncryptor> open(const std::vector<std::string>& public_key_files,
                                        const std::string& gnupg_home);

    // A binary OpenPGP message that each escrow key can decrypt alone.
    Result<std::string> encrypt(std::string_view plaintext) const;

    // Primary-key fingerprints of the escrow keys, in the order of the files.
    const std::vector<std::string>& fingerprints() const { return fingerprints_; }
    const std::string& gnupg_home() const { return gnupg_home_; }

private:
    EscrowEncryptor(std::string gnupg_home, std::vector<std::string> fingerprints);

    std::string gnupg_home_;
    std::vector<std::string> fingerprints_;
    std::string recipients_;                 // fingerprints, one per line, for gpgme_op_encrypt_ext
    std::shared_ptr<ContextPool> contexts_;  // idle GPGME contexts on gnupg_home_, shared by copies
};

class EscrowDecryptor {
public:
    static Result<EscrowDecryptor> open(const std::string& secret_key_file, const std::string& passphrase = "");

    Result<std::string> decrypt(std::string_view ciphertext) const;

    // The temporary GNUPGHOME; gone once the decryptor is destroyed.
    const std::string& gnupg_home() const;

    EscrowDecryptor(EscrowDecryptor&&) noexcept;
    EscrowDecryptor& operator=(EscrowDecryptor&&) noexcept;
    EscrowDecryptor(const EscrowDecryptor&) = delete;
    EscrowDecryptor& operator=(const EscrowDecryptor&) = delete;
    ~EscrowDecryptor();

private:
    class Home;   // the temporary home, its agent and the passphrase; in escrow.cpp

    explicit EscrowDecryptor(std::unique_ptr<Home> home);
    std::unique_ptr<Home> home_;   // null only after a move
};

}  // namespace postvault::archive
