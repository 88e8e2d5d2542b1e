// gateway/crypto/protect.h — what the policy asks for one recipient, done with OpenPGP.
//
// protect() is the delivery engine's Protector (gateway/delivery/engine.h) for OpenPGP:
//   * handling.encrypt lists methods in order. "pgp": the recipient's key is looked up
//     (Keyring::lookup, the whole discovery chain); when found, the whole original MIME entity
//     is encrypted (RFC 3156 multipart/encrypted) to it and to pgp.additional_decryption_keys,
//     signed in the same step when handling.sign asks. Other methods ("smime", "pdf",
//     "portal") are not available on this server yet and are skipped. When no method can serve
//     the recipient: Error "policy.no_method" with the reasons (no key, expired key...), and
//     the engine applies the fallback.
//   * sign alone: multipart/signed with a detached signature over the entity's canonical form
//     (CRLF, 7-bit transfer encodings), by the sender's managed key when there is one, else
//     pgp.signing_key; none usable: a temporary Error ("pgp.signing_key", the engine defers).
//   * pgp.protected_headers: the real Subject goes inside the encrypted part, "..." outside.
// A failure to run gpg is a temporary Error (the engine retries later). Thread safe.
#pragma once

#include <string>

#include "common/config.h"
#include "common/mail.h"
#include "common/result.h"
#include "gateway/crypto/keyring.h"
#include "gateway/queue/queue.h"

namespace postvault::crypto {

struct Protected {
    std::string message;  // the bytes to send (CRLF)
    std::string method;   // "pgp"; empty when only signed
};

Result<Protected> protect(Keyring& keyring, const PgpConfig& config, const Envelope& envelope,
                          const std::string& recipient, const queue::Handling& handling, const std::string& message);

}  // namespace postvault::crypto
