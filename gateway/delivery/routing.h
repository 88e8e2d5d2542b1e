// gateway/delivery/routing.h — where a recipient's mail goes, and with which
// TLS policy. Pure functions of the configuration.
//
// Next hop (first match):
//   1. recipient domain in smtp.local_domains and delivery.inbound_relayhost
//      set -> that relay host;
//   2. delivery.relayhost set -> that relay host;
//   3. otherwise the recipient domain, looked up by MX (mx.h), port mx_port.
// A relay host is "host", "host:port", "[host]" or "[host]:port" (IPv6
// literals only in brackets); it is resolved as A/AAAA, never MX, with or
// without brackets. The default relay port is 25.
//
// TLS mode: delivery.tls_policy[recipient domain] if present, else
// delivery.tls. "may" = opportunistic, unverified; "required" = STARTTLS with
// the chain verified and the certificate matching the next-hop host name;
// "none" = never STARTTLS.
//
// Recipients of one message are grouped by NextHop::key(): one SMTP
// transaction per group, and connections are pooled by the same key.
#pragma once

#include <cstdint>
#include <string>

#include "common/config.h"
#include "common/result.h"

namespace postvault::delivery {

enum class TlsMode { may, required, none };
const char* to_string(TlsMode mode);
Result<TlsMode> parse_tls_mode(const std::string& text);

// The TLS mode for mail to `domain` (lower case).
TlsMode select_tls_mode(const DeliveryConfig& config, const std::string& domain);

struct RelayHost {
    std::string host;                  // name or IP literal, without brackets
    std::uint16_t port = 25;
};
Result<RelayHost> parse_relayhost(const std::string& text);

struct NextHop {
    enum class Kind { relay, mx };
    Kind kind = Kind::mx;
    std::string name;                  // relay host, or the recipient domain for MX
    std::uint16_t port = 25;
    TlsMode tls = TlsMode::may;

    // "mx:example.com:25:may", "relay:smtp.example.net:587:required"
    std::string key() const;
    // For logs: "example.com" or "[smtp.example.net]:587".
    std::string display() const;
};

// The next hop for a recipient in `domain`. An unparsable relay host is a
// temporary Error (an operator mistake that a reload can fix).
Result<NextHop> select_next_hop(const Config& config, const std::string& domain);

}  // namespace postvault::delivery
