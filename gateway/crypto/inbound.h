// gateway/crypto/inbound.h — OpenPGP mail arriving for the local domains.
//
// process_inbound() runs on each message whose recipients are all local, before it is queued for
// the internal mail server (delivery.inbound_relayhost):
//   * keys are harvested first (source "harvested", trust "unverified"): the sender's Autocrypt
//     header (its addr= must be the From address) and attached application/pgp-keys parts;
//   * PGP/MIME encrypted (or inline "BEGIN PGP MESSAGE") mail encrypted to a key in the
//     gateway's keyring is decrypted and its signature checked; the internal client gets the
//     decrypted message with an "X-Postvault-PGP: decrypted; signature good by <address>
//     (<fingerprint>)" field (or "no signature", "signature bad ...", "signer's key unknown");
//   * PGP/MIME signed mail and inline signed (clearsigned) text get "X-Postvault-PGP: signature
//     good by ..." (or bad / unknown key; for a clearsigned block with other text around it, a note
//     that the text outside the block is not covered);
//   * what cannot be decrypted is delivered exactly as received with "X-Postvault-PGP: not
//     decrypted (<reason>)" added.
// Any X-Postvault-PGP field the sender put in is removed first, so a client can trust it.
// `record` is what the archive keeps about it (record "pgp"); null when the message had no
// OpenPGP content. Never fails.
#pragma once

#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "gateway/crypto/keyring.h"

namespace postvault::crypto {

struct Inbound {
    std::string message;     // what to deliver
    nlohmann::json record;   // {"decrypted", "signature", "signer", "signer_address", "reason", "harvested"}
};

Inbound process_inbound(Keyring& keyring, std::string_view message);

}  // namespace postvault::crypto
