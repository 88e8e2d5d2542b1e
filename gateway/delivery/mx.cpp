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
#include <memory>

namespace postvault::delivery {

namespace {

std::string lower(std::string text) {
    std::transform(text.begin(), text.end(), text.begin(),
                   [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
    return text;
}

// Resolver state for one lookup; res_nclose() on every path.
class ResolverState {
public:
    ResolverState() { ok_ = res_ninit(&state_) == 0; }
    ~ResolverState() {
        if (ok_) res_nclose(&state_);
    }
    ResolverState(const ResolverState&) = delete;
    ResolverState& operator=(const ResolverState&) = delete;

    bool ok() const { return ok_; }
    res_state get() { return &state_; }

private:
    struct __res_state state_ {};
    bool ok_ = false;
};

struct AddrinfoDeleter {
    void operator()(addrinfo* info) const { freeaddrinfo(info); }
};
using AddrinfoList = std::unique_ptr<addrinfo, AddrinfoDeleter>;

enum class LookupOutcome { found, no_data, not_found, failed };

struct AddressLookup {
    LookupOutcome outcome = LookupOutcome::failed;
    std::vector<std::string> addresses;
    std::string message;
};

bool is_ip_literal(const std::string& host) {
    unsigned char buffer[sizeof(in6_addr)];
    return inet_pton(AF_INET, host.c_str(), buffer) == 1 || inet_pton(AF_INET6, host.c_str(), buffer) == 1;
}

AddressLookup lookup_addresses(const std::string& host) {
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

struct MxLookup {
    LookupOutcome outcome = LookupOutcome::failed;
    std::vector<MxRecord> records;
    std::string message;
};

MxLookup lookup_mx(const std::string& domain) {
    MxLookup result;
    ResolverState resolver;
    if (!resolver.ok()) {
        result.message = "cannot initialize the DNS resolver";
        return result;
    }
    std::vector<unsigned char> answer(NS_MAXMSG);
    const int length = res_nquery(resolver.get(), domain.c_str(), ns_c_in, ns_t_mx, answer.data(),
                                  static_cast<int>(answer.size()));
    if (length < 0) {
        switch (resolver.get()->res_h_errno) {
            case HOST_NOT_FOUND:
                result.outcome = LookupOutcome::not_found;
                result.message = "Host or domain name not found. Name service error for name=" + domain +
                                 " type=MX: Host not found";
                break;
            case NO_DATA:
                result.outcome = LookupOutcome::no_data;
                break;
            default:
                result.outcome = LookupOutcome::failed;
                result.message = "Name service error for name=" + domain + " type=MX: " +
                                 hstrerror(resolver.get()->res_h_errno);
        }
        return result;
    }
    auto parsed = parse_mx_answer(answer.data(), static_cast<std::size_t>(std::min<int>(length, NS_MAXMSG)));
    if (!parsed) {
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
        mx.host = lower(name);
        if (mx.host == ".") mx.host.clear();
        while (!mx.host.empty() && mx.host.back() == '.') mx.host.pop_back();
        records.push_back(std::move(mx));
    }
    return records;
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

Result<std::vector<HostAddresses>> resolve_next_hop(const NextHop& hop, std::uint64_t random_seed) {
    std::vector<HostAddresses> hosts;
    if (hop.kind == NextHop::Kind::relay) {
        AddressLookup lookup = lookup_addresses(hop.name);
        if (lookup.outcome != LookupOutcome::found)
            return Error::temporary("delivery.dns", "relay host " + lookup.message);
        hosts.push_back({hop.name, std::move(lookup.addresses)});
        return hosts;
    }

    MxLookup mx = lookup_mx(hop.name);
    if (mx.outcome == LookupOutcome::not_found)
        return Error::permanent("delivery.domain_not_found", "5.1.2 " + mx.message);
    if (mx.outcome == LookupOutcome::failed)
        return Error::temporary("delivery.dns", "4.4.3 " + mx.message);

    if (mx.outcome == LookupOutcome::no_data) {
        // RFC 5321 §5.1: no MX, so the domain itself is the implicit MX.
        AddressLookup lookup = lookup_addresses(hop.name);
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
        AddressLookup lookup = lookup_addresses(record.host);
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
