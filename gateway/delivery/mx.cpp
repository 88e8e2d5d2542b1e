// gateway/delivery/mx.cpp — see mx.h.
#include "gateway/delivery/mx.h"

#include <arpa/inet.h>
#include <arpa/nameser.h>
#include <netdb.h>
#include <netinet/in.h>
#include <resolv.h>
#include <sys/socket.h>

#include <algorithm>
#include <cctype>
#include <cstdlib>
#include <memory>
#include <utility>

#include "common/net.h"

#include "common/mail.h"

namespace postvault::delivery {

namespace {


enum class LookupOutcome { found, no_data, not_found, failed };

// The sockets res_nquery() will ask: "ip", "ip:port" or "[v6]:port" (port 53
// by default), IP literals only. An entry that does not parse is a problem
// message (the configuration check rejects them first).
struct NameServerAddress {
    sockaddr_storage address{};
    std::string text;
};

Result<std::vector<NameServerAddress>> parse_name_servers(const std::vector<std::string>& servers) {
    if (servers.size() > MAXNS)
        return Error::temporary("delivery.dns", "at most " + std::to_string(MAXNS) + " DNS servers can be used");
    std::vector<NameServerAddress> parsed;
    for (const std::string& text : servers) {
        auto endpoint = parse_host_port(text, NS_DEFAULTPORT);
        if (!endpoint) return Error::temporary("delivery.dns", "DNS server: " + endpoint.error().message);
        NameServerAddress server;
        server.text = text;
        auto* v4 = reinterpret_cast<sockaddr_in*>(&server.address);
        auto* v6 = reinterpret_cast<sockaddr_in6*>(&server.address);
        if (inet_pton(AF_INET, endpoint->host.c_str(), &v4->sin_addr) == 1) {
            v4->sin_family = AF_INET;
            v4->sin_port = htons(endpoint->port);
        } else if (inet_pton(AF_INET6, endpoint->host.c_str(), &v6->sin6_addr) == 1) {
            v6->sin6_family = AF_INET6;
            v6->sin6_port = htons(endpoint->port);
        } else {
            return Error::temporary("delivery.dns", "DNS server '" + text + "' is not an IP address");
        }
        parsed.push_back(std::move(server));
    }
    return parsed;
}

// The answer to one question, or why there is none.
struct DnsAnswer {
    LookupOutcome outcome = LookupOutcome::failed;
    std::vector<unsigned char> message;    // the response, when found
    std::string problem;                   // for logs and DSNs, when not found or failed
};

// Resolver state for the lookups of one next hop. res_ninit() reads
// /etc/resolv.conf; replace_name_servers() then swaps its name servers for
// the configured ones. res_nclose() on every path.
class Resolver {
public:
    explicit Resolver(const std::vector<std::string>& name_servers) {
        auto servers = parse_name_servers(name_servers);
        if (!servers) {
            problem_ = servers.error().message;
            return;
        }
        if (res_ninit(&state_) != 0) {
            problem_ = "cannot initialize the DNS resolver";
            return;
        }
        initialized_ = true;
        if (!servers->empty() && !replace_name_servers(*servers))
            problem_ = "out of memory setting the DNS servers";
    }
    ~Resolver() {
        if (initialized_) res_nclose(&state_);  // also frees the IPv6 entries
    }
    Resolver(const Resolver&) = delete;
    Resolver& operator=(const Resolver&) = delete;

    // Empty when the resolver is usable.
    const std::string& problem() const { return problem_; }

    DnsAnswer query(const std::string& name, ns_type type, const char* type_name) {
        DnsAnswer result;
        const std::string question = "name=" + name + " type=" + type_name;
        if (!problem_.empty()) {
            result.problem = problem_ + " (" + question + ")";
            return result;
        }
        result.message.resize(NS_MAXMSG);
        const int length = res_nquery(&state_, name.c_str(), ns_c_in, type, result.message.data(),
                                      static_cast<int>(result.message.size()));
        if (length < 0) {
            result.message.clear();
            switch (state_.res_h_errno) {
                case HOST_NOT_FOUND:
                    result.outcome = LookupOutcome::not_found;
                    result.problem = "Host or domain name not found. Name service error for " + question +
                                     ": Host not found";
                    break;
                case NO_DATA:
                    result.outcome = LookupOutcome::no_data;
                    result.problem = "no " + std::string(type_name) + " record for " + name;
                    break;
                default:
                    result.outcome = LookupOutcome::failed;
                    result.problem = "Name service error for " + question + ": " + hstrerror(state_.res_h_errno);
            }
            return result;
        }
        result.message.resize(static_cast<std::size_t>(std::min<int>(length, NS_MAXMSG)));
        result.outcome = LookupOutcome::found;
        return result;
    }

private:
    // Stores the servers the way glibc's res_init.c does: an IPv4 server in
    // nsaddr_list[i]; an IPv6 server in a malloc()ed _u._ext.nsaddrs[i] with
    // nsaddr_list[i].sin_family = 0. res_nclose() frees nsaddrs[0..nscount),
    // and res_nquery() copies nsaddr_list on first use (_u._ext.nscount is
    // still 0 after res_ninit). glibc-specific, like the rest of this file.
    bool replace_name_servers(const std::vector<NameServerAddress>& servers) {
        for (int i = 0; i < state_.nscount && i < MAXNS; ++i) {
            std::free(state_._u._ext.nsaddrs[i]);
            state_._u._ext.nsaddrs[i] = nullptr;
        }
        state_.nscount = 0;
        for (std::size_t i = 0; i < servers.size(); ++i) {
            const sockaddr_storage& address = servers[i].address;
            state_.nsaddr_list[i] = sockaddr_in{};
            if (address.ss_family == AF_INET) {
                state_.nsaddr_list[i] = *reinterpret_cast<const sockaddr_in*>(&address);
            } else {
                auto* copy = static_cast<sockaddr_in6*>(std::malloc(sizeof(sockaddr_in6)));
                if (copy == nullptr) return false;
                *copy = *reinterpret_cast<const sockaddr_in6*>(&address);
                state_._u._ext.nsaddrs[i] = copy;
                state_.nsaddr_list[i].sin_family = 0;
            }
            state_._u._ext.nssocks[i] = -1;
            state_.nscount = static_cast<int>(i + 1);
        }
        state_._u._ext.nscount = 0;
        return true;
    }

    struct __res_state state_ {};
    bool initialized_ = false;
    std::string problem_;
};

struct AddrinfoDeleter {
    void operator()(addrinfo* info) const { freeaddrinfo(info); }
};
using AddrinfoList = std::unique_ptr<addrinfo, AddrinfoDeleter>;

struct AddressLookup {
    LookupOutcome outcome = LookupOutcome::failed;
    std::vector<std::string> addresses;
    std::string message;
};

bool is_ip_literal(const std::string& host) {
    unsigned char buffer[sizeof(in6_addr)];
    return inet_pton(AF_INET, host.c_str(), buffer) == 1 || inet_pton(AF_INET6, host.c_str(), buffer) == 1;
}

// A relay host, by getaddrinfo(): /etc/hosts, then the system resolver.
AddressLookup lookup_addresses_by_system(const std::string& host) {
    AddressLookup result;
    addrinfo hints{};
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = is_ip_literal(host) ? AI_NUMERICHOST : 0;
    addrinfo* raw = nullptr;
    const int rc = getaddrinfo(host.c_str(), nullptr, &hints, &raw);
    AddrinfoList list(raw);
    if (rc != 0) {
        result.message = std::string("lookup of ") + host + ": " + gai_strerror(rc);
        if (rc == EAI_NONAME) result.outcome = LookupOutcome::not_found;
#ifdef EAI_NODATA
        else if (rc == EAI_NODATA) result.outcome = LookupOutcome::no_data;
#endif
        else result.outcome = LookupOutcome::failed;
        return result;
    }
    for (const addrinfo* info = list.get(); info != nullptr; info = info->ai_next) {
        char text[INET6_ADDRSTRLEN] = {};
        const void* address = nullptr;
        if (info->ai_family == AF_INET)
            address = &reinterpret_cast<const sockaddr_in*>(info->ai_addr)->sin_addr;
        else if (info->ai_family == AF_INET6)
            address = &reinterpret_cast<const sockaddr_in6*>(info->ai_addr)->sin6_addr;
        else
            continue;
        if (inet_ntop(info->ai_family, address, text, sizeof text) == nullptr) continue;
        if (std::find(result.addresses.begin(), result.addresses.end(), text) == result.addresses.end())
            result.addresses.emplace_back(text);
    }
    result.outcome = result.addresses.empty() ? LookupOutcome::no_data : LookupOutcome::found;
    if (result.addresses.empty()) result.message = "no address for " + host;
    return result;
}

// An MX host (or a domain without MX), by A then AAAA queries to `resolver`.
// Found when either gives an address; failed when neither does and one
// failed; not found when the name does not exist (AAAA is then not asked).
AddressLookup lookup_addresses_by_dns(Resolver& resolver, const std::string& host) {
    AddressLookup result;
    if (is_ip_literal(host)) {
        result.outcome = LookupOutcome::found;
        result.addresses.push_back(host);
        return result;
    }
    bool any_failed = false;
    std::string failure;
    for (const auto& [type, type_name] : {std::pair{ns_t_a, "A"}, std::pair{ns_t_aaaa, "AAAA"}}) {
        DnsAnswer answer = resolver.query(host, type, type_name);
        if (answer.outcome == LookupOutcome::not_found) {
            if (result.addresses.empty()) {
                result.outcome = LookupOutcome::not_found;
                result.message = answer.problem;
                return result;
            }
            break;
        }
        if (answer.outcome == LookupOutcome::failed) {
            any_failed = true;
            failure = answer.problem;
            continue;
        }
        if (answer.outcome != LookupOutcome::found) continue;
        auto addresses = parse_address_answer(answer.message.data(), answer.message.size());
        if (!addresses) {
            any_failed = true;
            failure = addresses.error().message + " (name=" + host + " type=" + type_name + ")";
            continue;
        }
        for (std::string& address : *addresses) {
            if (std::find(result.addresses.begin(), result.addresses.end(), address) == result.addresses.end())
                result.addresses.push_back(std::move(address));
        }
    }
    if (!result.addresses.empty()) {
        result.outcome = LookupOutcome::found;
    } else if (any_failed) {
        result.outcome = LookupOutcome::failed;
        result.message = failure;
    } else {
        result.outcome = LookupOutcome::no_data;
        result.message = "no address for " + host;
    }
    return result;
}

struct MxLookup {
    LookupOutcome outcome = LookupOutcome::failed;
    std::vector<MxRecord> records;
    std::string message;
};

MxLookup lookup_mx(Resolver& resolver, const std::string& domain) {
    MxLookup result;
    DnsAnswer answer = resolver.query(domain, ns_t_mx, "MX");
    result.outcome = answer.outcome;
    result.message = answer.problem;
    if (answer.outcome != LookupOutcome::found) return result;
    auto parsed = parse_mx_answer(answer.message.data(), answer.message.size());
    if (!parsed) {
        result.outcome = LookupOutcome::failed;
        result.message = parsed.error().message + " (name=" + domain + " type=MX)";
        return result;
    }
    result.records = std::move(*parsed);
    result.outcome = result.records.empty() ? LookupOutcome::no_data : LookupOutcome::found;
    return result;
}

}  // namespace

Result<std::vector<MxRecord>> parse_mx_answer(const unsigned char* message, std::size_t length) {
    ns_msg handle;
    if (ns_initparse(message, static_cast<int>(length), &handle) < 0)
        return Error::temporary("delivery.dns", "malformed DNS response");
    std::vector<MxRecord> records;
    const int count = ns_msg_count(handle, ns_s_an);
    for (int i = 0; i < count; ++i) {
        ns_rr record;
        if (ns_parserr(&handle, ns_s_an, i, &record) < 0)
            return Error::temporary("delivery.dns", "malformed DNS answer record");
        if (ns_rr_type(record) != ns_t_mx || ns_rr_class(record) != ns_c_in) continue;
        if (ns_rr_rdlen(record) < 3)
            return Error::temporary("delivery.dns", "malformed MX record");
        const unsigned char* rdata = ns_rr_rdata(record);
        MxRecord mx;
        mx.preference = static_cast<std::uint16_t>(ns_get16(rdata));
        char name[NS_MAXDNAME] = {};
        if (ns_name_uncompress(ns_msg_base(handle), ns_msg_end(handle), rdata + 2, name, sizeof name) < 0)
            return Error::temporary("delivery.dns", "malformed MX host name");
        mx.host = lowercase(name);
        if (mx.host == ".") mx.host.clear();
        while (!mx.host.empty() && mx.host.back() == '.') mx.host.pop_back();
        records.push_back(std::move(mx));
    }
    return records;
}

Result<std::vector<std::string>> parse_address_answer(const unsigned char* message, std::size_t length) {
    ns_msg handle;
    if (ns_initparse(message, static_cast<int>(length), &handle) < 0)
        return Error::temporary("delivery.dns", "malformed DNS response");
    std::vector<std::string> addresses;
    const int count = ns_msg_count(handle, ns_s_an);
    for (int i = 0; i < count; ++i) {
        ns_rr record;
        if (ns_parserr(&handle, ns_s_an, i, &record) < 0)
            return Error::temporary("delivery.dns", "malformed DNS answer record");
        if (ns_rr_class(record) != ns_c_in) continue;
        int family = 0;
        if (ns_rr_type(record) == ns_t_a && ns_rr_rdlen(record) == NS_INADDRSZ) family = AF_INET;
        else if (ns_rr_type(record) == ns_t_aaaa && ns_rr_rdlen(record) == NS_IN6ADDRSZ) family = AF_INET6;
        else if (ns_rr_type(record) == ns_t_a || ns_rr_type(record) == ns_t_aaaa)
            return Error::temporary("delivery.dns", "malformed address record");
        else
            continue;
        char text[INET6_ADDRSTRLEN] = {};
        if (inet_ntop(family, ns_rr_rdata(record), text, sizeof text) == nullptr)
            return Error::temporary("delivery.dns", "malformed address record");
        if (std::find(addresses.begin(), addresses.end(), text) == addresses.end()) addresses.emplace_back(text);
    }
    // IPv4 first (see mx.h), answer order otherwise.
    std::stable_partition(addresses.begin(), addresses.end(),
                          [](const std::string& address) { return address.find(':') == std::string::npos; });
    return addresses;
}

bool is_null_mx(const std::vector<MxRecord>& records) {
    return records.size() == 1 && records.front().preference == 0 && records.front().host.empty();
}

std::vector<MxRecord> order_mx(std::vector<MxRecord> records, std::mt19937_64& random) {
    std::shuffle(records.begin(), records.end(), random);
    std::stable_sort(records.begin(), records.end(),
                     [](const MxRecord& a, const MxRecord& b) { return a.preference < b.preference; });
    return records;
}

Result<std::vector<HostAddresses>> resolve_next_hop(const NextHop& hop, const std::vector<std::string>& name_servers,
                                                   std::uint64_t random_seed) {
    std::vector<HostAddresses> hosts;
    if (hop.kind == NextHop::Kind::relay) {
        AddressLookup lookup = lookup_addresses_by_system(hop.name);
        if (lookup.outcome != LookupOutcome::found)
            return Error::temporary("delivery.dns", "relay host " + lookup.message);
        hosts.push_back({hop.name, std::move(lookup.addresses)});
        return hosts;
    }

    Resolver resolver(name_servers);
    if (!resolver.problem().empty())
        return Error::temporary("delivery.dns", "4.4.3 " + resolver.problem());
    MxLookup mx = lookup_mx(resolver, hop.name);
    if (mx.outcome == LookupOutcome::not_found)
        return Error::permanent("delivery.domain_not_found", "5.1.2 " + mx.message);
    if (mx.outcome == LookupOutcome::failed)
        return Error::temporary("delivery.dns", "4.4.3 " + mx.message);

    if (mx.outcome == LookupOutcome::no_data) {
        // RFC 5321 §5.1: no MX, so the domain itself is the implicit MX.
        AddressLookup lookup = lookup_addresses_by_dns(resolver, hop.name);
        if (lookup.outcome == LookupOutcome::found) {
            hosts.push_back({hop.name, std::move(lookup.addresses)});
            return hosts;
        }
        if (lookup.outcome == LookupOutcome::failed)
            return Error::temporary("delivery.dns", "4.4.3 " + lookup.message);
        return Error::permanent("delivery.domain_not_found",
                                "5.1.2 Host or domain name not found: " + hop.name + " has no MX and no address");
    }

    if (is_null_mx(mx.records))
        return Error::permanent("delivery.null_mx",
                                "5.1.10 Recipient address rejected: domain " + hop.name +
                                    " does not accept mail (null MX)");
    std::mt19937_64 random(random_seed);
    std::string last_problem;
    for (const MxRecord& record : order_mx(std::move(mx.records), random)) {
        if (record.host.empty()) continue;  // "." among real MX hosts: ignore it
        AddressLookup lookup = lookup_addresses_by_dns(resolver, record.host);
        if (lookup.outcome != LookupOutcome::found) {
            last_problem = lookup.message;
            continue;
        }
        hosts.push_back({record.host, std::move(lookup.addresses)});
    }
    if (hosts.empty())
        return Error::temporary("delivery.dns", "4.4.3 no MX host of " + hop.name + " has an address" +
                                                    (last_problem.empty() ? "" : " (" + last_problem + ")"));
    return hosts;
}

}  // namespace postvault::delivery
