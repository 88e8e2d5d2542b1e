// gateway/delivery/mx.h — DNS for the next hop: MX records (RFC 5321 §5.1),
// null MX (RFC 7505), and A/AAAA addresses.
//
// parse_mx_answer(), parse_address_answer() and order_mx() are pure (tests
// feed them DNS wire bytes); resolve_next_hop() BLOCKS on DNS, so the engine
// calls it on its worker pool, never on an I/O thread. Each call uses its own
// resolver state (res_ninit/res_nclose), so calls may run concurrently.
//
// Which resolver answers:
//   - MX records, and the A/AAAA records of MX hosts (or of the domain itself
//     when it has no MX), come from libresolv res_nquery(): from the servers
//     in `name_servers` ([delivery] dns_servers: "ip", "ip:port",
//     "[v6]:port"; at most 3) or, when that is empty, from /etc/resolv.conf.
//     Addresses use DNS even without dns_servers, so the whole chain always
//     comes from one resolver; /etc/hosts does not apply to MX hosts.
//     Timeouts, attempts and options still come from /etc/resolv.conf; a
//     truncated UDP answer is retried over TCP.
//   - A relay host is resolved by getaddrinfo() (/etc/hosts, then the system
//     resolver), never by `name_servers`: relay hosts are chosen by the
//     operator and are often "localhost" or a name in /etc/hosts.
// Address order: IPv4 before IPv6 (IPv4 is the path that works almost
// everywhere; IPv6 is still tried when IPv4 fails).
//
// Errors from resolve_next_hop(): "delivery.null_mx" and
// "delivery.domain_not_found" are permanent (the recipients bounce);
// resolver failures ("delivery.dns": timeouts, SERVFAIL, unreachable servers,
// an unusable name server entry) and relay hosts that do not resolve are
// temporary (the recipients are deferred).
#pragma once

#include <cstddef>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "common/result.h"
#include "gateway/delivery/routing.h"

namespace postvault::delivery {

struct MxRecord {
    std::uint16_t preference = 0;
    std::string host;                  // lower case, no trailing dot; "" for the root (".")
};

// The MX records in the answer section of a DNS response (other record types
// are skipped). A response that does not parse is a temporary Error.
Result<std::vector<MxRecord>> parse_mx_answer(const unsigned char* message, std::size_t length);

// RFC 7505: exactly one MX, preference 0, host ".".
bool is_null_mx(const std::vector<MxRecord>& records);

// Lowest preference first; hosts with equal preference in random order
// (RFC 5321 §5.1), using `random`.
std::vector<MxRecord> order_mx(std::vector<MxRecord> records, std::mt19937_64& random);

// The A and AAAA records in the answer section of a DNS response, as text
// ("192.0.2.1", "2001:db8::1"), in answer order, without duplicates; other
// record types (CNAME) are skipped. A response that does not parse is a
// temporary Error.
Result<std::vector<std::string>> parse_address_answer(const unsigned char* message, std::size_t length);

// One host to try, with its addresses ("192.0.2.1", "2001:db8::1") in the
// order to try them.
struct HostAddresses {
    std::string host;
    std::vector<std::string> addresses;
};

// Every host to try for `hop`, in order: the relay host, or the MX hosts of
// the domain, or the domain itself when it has no MX. `name_servers` as
// [delivery] dns_servers (empty: /etc/resolv.conf). Blocking.
Result<std::vector<HostAddresses>> resolve_next_hop(const NextHop& hop, const std::vector<std::string>& name_servers,
                                                   std::uint64_t random_seed);

}  // namespace postvault::delivery
