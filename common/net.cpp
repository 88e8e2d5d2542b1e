#include "common/net.h"

#include <charconv>

// Only the address parser: not common/asio.h, whose SSL parts would tie every program that
// parses a configuration to libcrypto.
#include <boost/asio/ip/address.hpp>

namespace postvault {

namespace asio = boost::asio;

Result<HostPort> parse_host_port(const std::string& text, std::uint16_t default_port) {
    HostPort result;
    std::string rest;
    if (!text.empty() && text.front() == '[') {
        auto close = text.find(']');
        if (close == std::string::npos) {
            return Error::permanent("config.endpoint", "missing ']' in '" + text + "'");
        }
        result.host = text.substr(1, close - 1);
        result.bracketed = true;
        rest = text.substr(close + 1);
    } else {
        auto colon = text.rfind(':');
        if (colon != std::string::npos && text.find(':') != colon) {
            return Error::permanent("config.endpoint",
                                    "IPv6 address must be written as [addr]:port in '" + text + "'");
        }
        result.host = text.substr(0, colon);
        rest = colon == std::string::npos ? "" : text.substr(colon);
    }
    if (result.host.empty()) {
        return Error::permanent("config.endpoint", "missing host in '" + text + "'");
    }
    if (rest.empty()) {
        if (default_port == 0) {
            return Error::permanent("config.endpoint", "missing ':port' in '" + text + "'");
        }
        result.port = default_port;
        return result;
    }
    if (rest.front() != ':' || rest.size() == 1) {
        return Error::permanent("config.endpoint", "expected ':port' after the host in '" + text + "'");
    }
    unsigned port = 0;
    auto [end, error] = std::from_chars(rest.data() + 1, rest.data() + rest.size(), port);
    if (error != std::errc() || end != rest.data() + rest.size() || port == 0 || port > 65535) {
        return Error::permanent("config.endpoint", "bad port in '" + text + "'");
    }
    result.port = static_cast<std::uint16_t>(port);
    return result;
}

namespace {

// Canonical 16-byte form: IPv4 (and IPv4-mapped IPv6) become ::ffff:a.b.c.d.
bool to_bytes16(const std::string& ip, std::array<unsigned char, 16>& out, bool& was_v4) {
    boost::system::error_code error;
    auto address = asio::ip::make_address(ip, error);
    if (error) return false;
    if (address.is_v4()) {
        out = asio::ip::make_address_v6(asio::ip::v4_mapped, address.to_v4()).to_bytes();
        was_v4 = true;
    } else {
        out = address.to_v6().to_bytes();
        was_v4 = address.to_v6().is_v4_mapped();
    }
    return true;
}

}  // namespace

Result<Network> Network::parse(const std::string& cidr) {
    Network network;
    network.text_ = cidr;
    auto slash = cidr.find('/');
    std::string ip = cidr.substr(0, slash);
    bool was_v4 = false;
    if (!to_bytes16(ip, network.bytes_, was_v4)) {
        return Error::permanent("config.network", "not an IP address or network: '" + cidr + "'");
    }
    unsigned max_prefix = was_v4 ? 32 : 128;
    unsigned prefix = max_prefix;
    if (slash != std::string::npos) {
        auto [end, error] = std::from_chars(cidr.data() + slash + 1, cidr.data() + cidr.size(), prefix);
        if (error != std::errc() || end != cidr.data() + cidr.size() || prefix > max_prefix) {
            return Error::permanent("config.network", "bad prefix length in '" + cidr + "'");
        }
    }
    network.v6_ = !was_v4;
    network.prefix_ = was_v4 ? prefix + 96 : prefix;
    return network;
}

bool Network::contains(const std::string& ip) const {
    std::array<unsigned char, 16> candidate{};
    bool was_v4 = false;
    if (!to_bytes16(ip, candidate, was_v4)) return false;
    unsigned full_bytes = prefix_ / 8;
    for (unsigned i = 0; i < full_bytes; ++i) {
        if (candidate[i] != bytes_[i]) return false;
    }
    unsigned remaining_bits = prefix_ % 8;
    if (remaining_bits == 0) return true;
    unsigned char mask = static_cast<unsigned char>(0xFF << (8 - remaining_bits));
    return (candidate[full_bytes] & mask) == (bytes_[full_bytes] & mask);
}

bool in_networks(const std::vector<Network>& networks, const std::string& ip) {
    for (const auto& network : networks) {
        if (network.contains(ip)) return true;
    }
    return false;
}

}  // namespace postvault
