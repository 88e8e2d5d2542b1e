// gateway/crypto/ldap.h — OpenPGP keys from an LDAP keyserver, the PGP Universal convention:
// the recipient domain publishes its users' keys on an LDAP server named keys.<domain>.
//
// ldap_keys(domain, address, options) asks keys.<domain> (port 389, plain LDAPv3 with an
// anonymous simple bind; FetchOptions::resolve may map the host to "ip:port") the way GnuPG's
// dirmngr (ks-engine-ldap) and PGP Universal do:
//   1. the keyspace: the entry cn=pgpServerInfo (a PGP keyserver) or cn=pgpServerInfo,<naming
//      context> for each namingContexts value of the root DSE (an ordinary LDAP server, GnuPG's
//      layout), attribute pgpBaseKeySpaceDN (baseKeySpaceDN on old PGP servers);
//   2. the keys: a subtree search under that DN for
//        (&(|(pgpUserID=*<ADDRESS>*)(pgpUserID=ADDRESS))(!(pgpRevoked=1))(!(pgpDisabled=1)))
//      (ADDRESS escaped as RFC 4515 says), attributes pgpKey and pgpKeyV2 (the key block,
//      armored or binary; pgpKeyV2 is used when the entry has no pgpKey or an old PGP server's
//      cn=pgpServerInfo says version > 1).
// It returns one key block per entry found (empty: the server has no key for the address). The
// caller imports them and checks the user IDs itself: the server's answer is "unverified".
// No TLS (port 389, as the PGP servers publish it): the keys are public, and what a lookup
// finds is trusted no more than a keyserver's answer.
//
// Blocking: call it from a worker thread, never from an Asio I/O thread. Calls are independent
// (one LDAP handle each, OpenLDAP's libldap is thread safe across handles). SIGPIPE is blocked in
// the calling thread for the call (a server closing the connection cannot end the process).
//
// Limits: options.timeout from the call bounds the whole call: DNS (fetch.h resolve_host),
// connect (LDAP_OPT_NETWORK_TIMEOUT), every reply (ldap_result's timeout) and the server's
// own time limit on the searches. Referrals are not followed. At most kMaxLdapEntries entries
// are asked for (the search's size limit); one LDAP message may be at most options.max_bytes
// plus kLdapMessageOverhead bytes (libldap refuses a larger one before reading it), and the
// key blocks together at most options.max_bytes.
//
// Errors (no entry is not an error):
//   temporary "ldap.network"   DNS, connect, a timeout, the connection lost, an unreadable reply;
//   temporary "ldap.server"    the server answered an operation with an error (busy, unwilling,
//                              bind refused...);
//   permanent "ldap.no_keyspace"  the server has no cn=pgpServerInfo with a pgpBaseKeySpaceDN:
//                              it is no OpenPGP keyserver;
//   permanent "ldap.too_large" the key blocks are larger than options.max_bytes;
//   permanent "ldap.bad_address"  no '@', an empty local part, or a domain that is not an
//                              ASCII host name (pass IDNs as A-labels).
// Library exceptions never cross this header.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "common/result.h"
#include "gateway/crypto/fetch.h"

namespace postvault::crypto {

constexpr std::uint16_t kLdapPort = 389;
constexpr int kMaxLdapEntries = 16;                    // the key search's size limit
constexpr std::size_t kLdapMessageOverhead = 16 * 1024;  // DN and attribute names beside the key

// The key blocks for `address` on keys.<domain>, one per entry; empty when there is none.
Result<std::vector<std::string>> ldap_keys(const std::string& domain, const std::string& address,
                                           const FetchOptions& options);

// RFC 4515 assertion value escaping: '*', '(', ')', '\' and NUL, and also every other byte
// outside printable ASCII, as "\xx" (two lower-case hex digits).
std::string ldap_filter_escape(std::string_view value);

// The key search's filter for `address` (above).
std::string ldap_key_filter(std::string_view address);

}  // namespace postvault::crypto
