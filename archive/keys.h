// archive/keys.h — encryption at rest in "cleartext" mode: envelope encryption
// of archive blobs under key-encryption keys (KEKs) kept in a local file.
//
// Every blob gets its own random 32-byte data key. seal() encrypts the blob
// with AES-256-GCM under that data key (ciphertext = nonce(12) || ct || tag(16),
// with the blob id as additional data, so one stored blob cannot be swapped for
// another), then wraps the data key with the current KEK (AES-256 key wrap,
// RFC 3394: deterministic, no nonce to run out of under one long-lived KEK).
// The wrapped key is a short self-describing text:
//
//     dek1:<kek-id>:<base64 of the 40-byte wrapped data key>
//
// The caller stores wrapped_key apart from the ciphertext. Deleting a blob's
// wrapped_key makes its content unrecoverable, even from backups of the
// ciphertext (crypto-shredding); retention uses that to erase.
//
// KEK file: mode 0600 (load() refuses one readable or writable by group or
// others), its parent directory is created 0700 when missing. Text, one KEK per
// line after a header; the last line is the current KEK; '#' lines are ignored:
//
//     postvault-kek-file 1
//     kek-1 <base64 of 32 random bytes>
//     kek-2 <base64 of 32 random bytes>
//
// Ids are [A-Za-z0-9._-]{1,64}. rotate() appends "kek-<N+1>" and rewrites the
// file atomically (temp file 0600 in the same directory, fsync, rename, fsync
// of the directory) under an exclusive lock on "<path>.lock", after re-reading
// the file, so two processes rotating at once never drop a key. Old KEKs stay:
// data sealed under them stays readable.
//
// Ownership: a KeyRing is a value; copies share one immutable key table, whose
// bytes are wiped (OPENSSL_cleanse) when the last copy goes. Data keys are
// wiped after each call. No key is ever logged or put in an Error message.
// Thread safety: const methods (seal, open, ids, current_id) may run
// concurrently on one KeyRing; rotate() needs exclusive access to that object
// (a running archive loads a fresh ring and swaps it in under its own lock).
//
// Errors (all permanent unless noted):
//   archive.key_mode     the KEK file is readable/writable by group or others
//                        (the message says to chmod 600), or is not a file
//   archive.key_file     missing (load), unreadable or malformed KEK file
//   archive.key_io       creating, writing or locking the file failed (temporary)
//   archive.unknown_kek  the wrapped key names a KEK this ring does not hold
//   archive.auth_failed  tag mismatch: ciphertext or wrapped key tampered with,
//                        or the wrong blob id
//   archive.corrupt      malformed wrapped key or ciphertext (too short, bad
//                        prefix, bad base64)
//   archive.crypto       OpenSSL or the random generator failed (temporary)
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "common/result.h"

namespace postvault::archive {

class KeyTable;   // the KEKs and the file path, shared by copies; in keys.cpp

struct SealedBlob {
    std::string wrapped_key;   // "dek1:<kek-id>:<base64>", store apart from ciphertext
    std::string ciphertext;    // nonce(12) || AES-256-GCM ciphertext || tag(16)
};

class KeyRing {
public:
    // Loads the KEK file at `path`, or creates it (parent directory 0700,
    // file 0600) with one fresh KEK "kek-1" when it does not exist.
    static Result<KeyRing> create_or_load(const std::string& path);
    // Loads an existing KEK file; never creates one ("archive.key_file").
    static Result<KeyRing> load(const std::string& path);

    // Adds a new KEK, makes it current, and rewrites the file atomically.
    // Returns the new id. On error the ring and the file are unchanged.
    Result<std::string> rotate();

    const std::string& current_id() const;
    std::vector<std::string> ids() const;   // oldest first; last is current
    const std::string& path() const;

    // Encrypts `plaintext` under a fresh data key wrapped by the current KEK.
    Result<SealedBlob> seal(std::string_view plaintext, std::string_view blob_id) const;
    // Unwraps the data key and decrypts; plaintext only if the tag verifies.
    Result<std::string> open(std::string_view wrapped_key, std::string_view ciphertext,
                             std::string_view blob_id) const;

    // Copies share the key table. No move operations on purpose: a "moved"
    // ring is a copy, so no KeyRing is ever left without a table.
    KeyRing(const KeyRing&) = default;
    KeyRing& operator=(const KeyRing&) = default;

private:
    explicit KeyRing(std::shared_ptr<const KeyTable> table) : table_(std::move(table)) {}
    std::shared_ptr<const KeyTable> table_;   // never null
};

}  // namespace postvault::archive
