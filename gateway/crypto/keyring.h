// gateway/crypto/keyring.h — the gateway's OpenPGP keys and what it does with them.
//
// The Keyring owns a GnuPG home inside the data directory (<pgp.directory>/gnupg, mode 0700;
// GPGME runs gpg on it) and a record of where each key came from (<pgp.directory>/keys.json,
// mode 0600): "imported" (by the administrator), "managed" (generated here for an internal user
// or the organization), "harvested" (from inbound mail: attached application/pgp-keys, Autocrypt
// headers), "wkd", "ldap" or "keyserver" (fetched). Imported and managed keys are "verified"; the
// others are "unverified" (KeyInfo::trust).
//
// lookup(address) runs pgp.lookup in order — local → harvested → wkd → ldap (keys.<domain>,
// ldap.h) → keyserver — and returns the newest usable key for the address: a user ID
// whose e-mail matches case-insensitively, not revoked, disabled or expired, with a valid
// encryption subkey. A fetched key is used for pgp.cache_ttl before it is fetched again; "no
// key" is remembered for pgp.failure_ttl. A source that cannot be reached counts as "no key
// there" (logged; the reason is in LookupResult::tried / the error message).
//
// Operations (all methods are thread safe; they run in a GpgEngine, gpg_engine.h: GPGME in this
// process or, for the server, in `postvault-pgp` worker processes): encrypt to fingerprints (plus
// the additional decryption keys, always trusted: the lookup decides), optionally signed in the
// same step; detached signatures; decryption with signature verification; verification of a
// detached signature.
//
// Errors: "pgp.no_key" (permanent: nothing usable for that address), "pgp.engine" (temporary:
// gpg failed to run), "pgp.import" (permanent: nothing importable), "pgp.decrypt" (permanent:
// not for our keys or damaged), "pgp.signing_key" (temporary: none configured or it cannot
// sign), "pgp.bad_address".
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/config.h"
#include "common/result.h"

namespace postvault::crypto {

struct KeyInfo {
    std::string fingerprint;
    std::vector<std::string> addresses;  // e-mail addresses of valid user IDs, lower case
    std::string user_id;                 // the first user ID as written
    std::string source;                  // imported | managed | harvested | wkd | ldap | keyserver
    std::string trust;                   // verified | unverified
    bool secret = false;                 // the secret key is in the keyring
    bool revoked = false;
    bool disabled = false;
    std::int64_t created_unix = 0;
    std::int64_t encrypt_since_unix = 0; // newest valid encryption subkey; 0: none
    std::int64_t encrypt_until_unix = 0; // latest expiry of those subkeys; 0: none expires
    std::int64_t fetched_unix = 0;       // wkd / ldap / keyserver: when it was fetched
    bool can_sign = false;
    std::string algorithm;               // of the primary key, e.g. "ed25519", "rsa3072"

    bool can_encrypt_at(std::int64_t now_unix) const;
};

struct LookupResult {
    KeyInfo key;
    std::string source;               // the step that found it: local | harvested | wkd | ldap | keyserver
    std::vector<std::string> tried;   // one line per step asked before, e.g. "wkd: no key (404)"
};

struct Decrypted {
    std::string plaintext;
    std::vector<std::string> recipients;  // key ids it was encrypted to
    bool signed_ = false;
    bool signature_valid = false;         // good signature by a key we have
    std::string signer;                   // fingerprint, when known
    std::string signer_address;           // its first address, when the key is known
    std::string signature_summary;        // "good", "bad", "no public key", "expired key", ...
};

struct Verified {
    bool valid = false;
    std::string signer;
    std::string signer_address;
    std::string summary;
};

class Keyring {
public:
    // Creates the directory and GnuPG home when missing. With a `worker_program` (the path of
    // postvault-pgp), encrypt, sign, decrypt and verify run in up to `worker_processes` workers;
    // without, in this process. Listing, import, generation and export always run here.
    static Result<std::unique_ptr<Keyring>> open(const PgpConfig& config, const std::string& worker_program = "",
                                                 unsigned worker_processes = 0);
    ~Keyring();

    // Armored or binary, one or many keys, public or secret. Returns the keys imported or updated.
    // `fetched_for`: the address a lookup asked its source for (or the administrator named with
    // `keys import --address`); a key without any user ID (as verifying keyservers serve keys
    // whose addresses are unconfirmed) is then given the user ID "<fetched_for>", unsigned
    // (gateway/crypto/packets.h), instead of being refused.
    Result<std::vector<KeyInfo>> import(std::string_view key_data, const std::string& source = "imported",
                                        const std::string& fetched_for = "");
    std::vector<KeyInfo> list();
    // `verified_only`: only the "local" step (keys imported or generated here) counts.
    Result<LookupResult> lookup(const std::string& address, bool verified_only = false);
    // A managed key for `address` (pgp.key_algorithm), without passphrase; its secret stays here.
    Result<KeyInfo> generate(const std::string& address);
    // The public key of a fingerprint or address (local keys only), armored or binary.
    Result<std::string> export_public(const std::string& key, bool armor);
    // For the organization's Web Key Directory: the verified keys (imported or managed, never
    // fetched or harvested ones) with a user ID in `domain` whose local part has the WKD hash
    // `hash`, binary; "pgp.no_key" when there is none.
    Result<std::string> wkd_keys(const std::string& domain, const std::string& hash);

    // Armored OpenPGP message for `fingerprints` and the additional decryption keys; signed by
    // `signer` (fingerprint or address with a secret key here) when not empty.
    Result<std::string> encrypt(std::string_view plaintext, const std::vector<std::string>& fingerprints,
                                const std::string& signer = "");
    // Armored detached signature; `micalg` gets "pgp-sha256" or the like.
    Result<std::string> sign_detached(std::string_view data, const std::string& signer, std::string& micalg);
    Result<Decrypted> decrypt(std::string_view ciphertext);
    // The detached `signature` over `data`; with an empty `signature`, `data` is itself signed
    // inline (a clearsigned "BEGIN PGP SIGNED MESSAGE" block, or a signed OpenPGP message).
    Result<Verified> verify(std::string_view data, std::string_view signature);
    // pgp.signing_key resolved to a fingerprint with a usable secret key.
    Result<std::string> organization_signer();
    // The managed key of `address`, when there is one with a secret key (the sender's own key).
    std::optional<std::string> managed_signer(const std::string& address);

    Keyring(const Keyring&) = delete;
    Keyring& operator=(const Keyring&) = delete;

private:
    Keyring();
    struct Impl;
    std::unique_ptr<Impl> impl_;
};

}  // namespace postvault::crypto
