// gateway/delivery/routing.cpp — see routing.h.
#include "gateway/delivery/routing.h"

#include <arpa/inet.h>
#include <netinet/in.h>

#include <algorithm>

#include "common/mail.h"
#include "common/net.h"

namespace postvault::delivery {

const char* to_string(TlsMode mode) {
    switch (mode) {
        case TlsMode::may: return "may";
        case TlsMode::required: return "required";
        case TlsMode::none: return "none";
    }
    return "may";
}

Result<TlsMode> parse_tls_mode(const std::string& text) {
    const std::string value = lowercase(text);
    if (value == "may") return TlsMode::may;
    if (value == "required") return TlsMode::required;
    if (value == "none") return TlsMode::none;
    return Error::permanent("delivery.bad_tls_mode",
                            "TLS mode '" + text + "' is not one of may, required, none");
}

TlsMode select_tls_mode(const DeliveryConfig& config, const std::string& domain) {
    const std::string key = lowercase(domain);
    for (const auto& [policy_domain, mode] : config.tls_policy) {
        if (lowercase(policy_domain) == key) {
            if (auto parsed = parse_tls_mode(mode)) return *parsed;
            return TlsMode::required;  // unreadable override: fail safe, never plaintext
        }
    }
    if (auto parsed = parse_tls_mode(config.tls)) return *parsed;
    return TlsMode::required;
}

Result<RelayHost> parse_relayhost(const std::string& text) {
    auto parsed = parse_host_port(text, 25);
    // An operator mistake that a reload can fix: defer, never bounce.
    if (!parsed) return Error::temporary("delivery.bad_relayhost", "bad relay host: " + parsed.error().message);
    return RelayHost{parsed->host, parsed->port};
}

std::string NextHop::key() const {
    return std::string(kind == Kind::relay ? "relay:" : "mx:") + name + ":" + std::to_string(port) +
           ":" + to_string(tls);
}

std::string NextHop::display() const {
    if (kind == Kind::mx) return name;
    return "[" + name + "]:" + std::to_string(port);
}

Result<NextHop> select_next_hop(const Config& config, const std::string& domain) {
    const std::string key = lowercase(domain);
    NextHop hop;
    hop.tls = select_tls_mode(config.delivery, key);

    const bool local = std::any_of(config.smtp.local_domains.begin(), config.smtp.local_domains.end(),
                                   [&](const std::string& d) { return lowercase(d) == key; });
    std::string relay_text;
    if (local && !config.delivery.inbound_relayhost.empty()) relay_text = config.delivery.inbound_relayhost;
    else if (!config.delivery.relayhost.empty()) relay_text = config.delivery.relayhost;

    if (!relay_text.empty()) {
        auto relay = parse_relayhost(relay_text);
        if (!relay) return relay.error();
        hop.kind = NextHop::Kind::relay;
        hop.name = lowercase(relay->host);
        hop.port = relay->port;
        return hop;
    }
    if (key.empty())
        return Error::permanent("delivery.no_domain", "5.1.3 recipient address has no domain");
    const std::uint16_t mx_port = static_cast<std::uint16_t>(
        config.delivery.mx_port > 0 && config.delivery.mx_port < 65536 ? config.delivery.mx_port : 25);
    if (key.size() > 2 && key.front() == '[' && key.back() == ']') {
        // An address literal (RFC 5321 4.1.3): deliver to that address, no DNS.
        std::string literal = key.substr(1, key.size() - 2);
        if (literal.rfind("ipv6:", 0) == 0) literal = literal.substr(5);
        unsigned char buffer[sizeof(in6_addr)];
        if (inet_pton(AF_INET, literal.c_str(), buffer) != 1 && inet_pton(AF_INET6, literal.c_str(), buffer) != 1) {
            return Error::permanent("delivery.bad_literal", "5.1.2 bad address literal " + domain);
        }
        hop.kind = NextHop::Kind::relay;
        hop.name = literal;
        hop.port = mx_port;
        return hop;
    }
    hop.kind = NextHop::Kind::mx;
    hop.name = key;
    hop.port = mx_port;
    return hop;
}

}  // namespace postvault::delivery
