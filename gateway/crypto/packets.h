#pragma once
// OpenPGP keys at the packet level (RFC 9580 §4.2 packet headers, §6.2 ASCII armor, §10.1
// transferable public keys): just enough to give a key without user IDs one.
//
// keys.openpgp.org and other verifying keyservers hand out keys with their unverified user IDs
// stripped. GnuPG 2.2 refuses to import a key without a user ID ("contains no user ID -
// skipped"), and GPGME has no operation to add one. When such a key was fetched *by an address*
// (HKP search, WKD, LDAP), the Keyring adds a User ID packet "<address>" with these functions and
// imports it with gpg's allow-non-selfsigned-uid, which keeps that unsigned user ID: the binding
// is the one the lookup made, exactly as trustworthy as the source the key came from.

#include <cstddef>
#include <string>
#include <string_view>

#include "common/result.h"

namespace postvault::crypto {

// The binary form of `data`: itself when it is binary OpenPGP, decoded when ASCII-armored (the
// armor's CRC line is not checked: the packets are checked by gpg on import).
Result<std::string> binary_keys(std::string_view data);

// `keys` (binary packets) with a User ID packet holding `user_id` after each primary key that has
// no user ID (and no user attribute): placed after the primary key's own signatures (revocations,
// direct-key signatures), before its subkeys. `added` is how many keys got one.
Result<std::string> add_missing_user_ids(std::string_view keys, std::string_view user_id, std::size_t& added);

}  // namespace postvault::crypto
