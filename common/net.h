// common/net.h — addresses, endpoints and networks as configured.
//
// parse_endpoint("127.0.0.1:2525"), parse_endpoint("[::1]:25") and
// parse_host_port("mail.example.com:25") split configuration strings;
// Network holds a CIDR block ("10.0.0.0/8", "::1/128") and tests membership,
// with IPv4-mapped IPv6 client addresses matched against IPv4 blocks.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "common/result.h"

namespace postvault {

struct HostPort {
    std::string host;       // name or literal, without brackets
    std::uint16_t port = 0;
    bool bracketed = false; // "[host]:port": no MX lookup (Postfix convention)
};

// "host:port", "[host]:port", "[v6::addr]:port"; `default_port` when the port is omitted
// (0 = a port is required).
Result<HostPort> parse_host_port(const std::string& text, std::uint16_t default_port = 0);

class Network {
public:
    static Result<Network> parse(const std::string& cidr);
    bool contains(const std::string& ip) const;
    const std::string& text() const { return text_; }

private:
    std::string text_;
    bool v6_ = false;
    std::array<unsigned char, 16> bytes_{};
    unsigned prefix_ = 0;
};

// True when `ip` is inside any of `networks`.
bool in_networks(const std::vector<Network>& networks, const std::string& ip);

}  // namespace postvault
