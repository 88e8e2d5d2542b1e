// gateway/crypto/ldap.cpp — see ldap.h.
//
// One call is one Session: an LDAP handle for the resolved endpoints (ldap://ip:port, tried in
// order by libldap), an anonymous bind, the keyspace lookup, the key search, the unbind. Every
// operation is asynchronous (ldap_sasl_bind, ldap_search_ext) and waited for with ldap_result
// and the time left until the call's deadline, so no wait depends on libldap's defaults. The
// handles are owned by unique_ptrs with libldap's own free functions.
#include "gateway/crypto/ldap.h"

#include <lber.h>
#include <ldap.h>
#include <pthread.h>
#include <signal.h>
#include <sys/time.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <exception>
#include <map>
#include <memory>
#include <optional>

namespace postvault::crypto {

namespace {

using Clock = std::chrono::steady_clock;

constexpr const char* kServerInfo = "cn=pgpServerInfo";

struct LdapUnbind {
    void operator()(LDAP* handle) const { ldap_unbind_ext(handle, nullptr, nullptr); }
};
using LdapHandle = std::unique_ptr<LDAP, LdapUnbind>;

struct LdapMessageFree {
    void operator()(LDAPMessage* message) const { ldap_msgfree(message); }
};
using LdapMessage = std::unique_ptr<LDAPMessage, LdapMessageFree>;

struct LdapValuesFree {
    void operator()(berval** values) const { ldap_value_free_len(values); }
};
using LdapValues = std::unique_ptr<berval*, LdapValuesFree>;

struct LdapStringFree {
    void operator()(char* text) const { ldap_memfree(text); }
};
using LdapString = std::unique_ptr<char, LdapStringFree>;

bool is_alnum(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'); }

std::string ascii_lower(std::string_view text) {
    std::string out(text);
    for (char& c : out)
        if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
    return out;
}

bool is_host_name(std::string_view host) {
    if (host.empty() || host.size() > 253 || host.front() == '.' || host.back() == '.') return false;
    if (host.find("..") != std::string_view::npos) return false;
    return std::all_of(host.begin(), host.end(), [](char c) { return is_alnum(c) || c == '-' || c == '.' || c == '_'; });
}

// Server-supplied or caller-supplied text in a message: at most 200 bytes, control and non-ASCII
// bytes as '?'.
std::string shown(std::string_view text) {
    std::string out(text.substr(0, 200));
    for (char& c : out)
        if (static_cast<unsigned char>(c) < 0x20 || static_cast<unsigned char>(c) >= 0x7F) c = '?';
    return out;
}

// libldap writes with write(2): a server that closes the connection would raise SIGPIPE, whose
// default action ends the process. For the call, SIGPIPE is blocked in this thread, and one it
// raised is taken before the old mask comes back (write(2) sends it to the writing thread).
class SigpipeBlocked {
public:
    SigpipeBlocked() {
        sigemptyset(&pipe_);
        sigaddset(&pipe_, SIGPIPE);
        pthread_sigmask(SIG_BLOCK, &pipe_, &old_);
        sigset_t pending;
        sigpending(&pending);
        was_pending_ = sigismember(&pending, SIGPIPE) == 1;
    }
    ~SigpipeBlocked() {
        if (!was_pending_) {
            const timespec now{0, 0};
            while (sigtimedwait(&pipe_, nullptr, &now) == SIGPIPE) {
            }
        }
        pthread_sigmask(SIG_SETMASK, &old_, nullptr);
    }
    SigpipeBlocked(const SigpipeBlocked&) = delete;
    SigpipeBlocked& operator=(const SigpipeBlocked&) = delete;

private:
    sigset_t pipe_{};
    sigset_t old_{};
    bool was_pending_ = false;
};

// One entry's values of the attributes asked for, by lower-case attribute name.
using Entry = std::map<std::string, std::vector<std::string>>;

// Sets the most bytes one LDAP message may have on each new connection, before anything is read.
int limit_incoming(LDAP*, Sockbuf* socket, LDAPURLDesc*, sockaddr*, ldap_conncb* self) {
    ber_sockbuf_ctrl(socket, LBER_SB_OPT_SET_MAX_INCOMING, self->lc_arg);
    return 0;
}
void connection_closed(LDAP*, Sockbuf*, ldap_conncb*) {}

class Session {
public:
    Session(std::string server, const FetchOptions& options, Clock::time_point deadline)
        : server_(std::move(server)), options_(options), deadline_(deadline),
          max_incoming_(static_cast<ber_len_t>(options.max_bytes + kLdapMessageOverhead)) {
        callbacks_.lc_add = limit_incoming;
        callbacks_.lc_del = connection_closed;
        callbacks_.lc_arg = &max_incoming_;
    }

    // ldap://ip:port for each endpoint, LDAPv3, no referrals, the connect bounded by the deadline.
    Status open(const std::vector<Endpoint>& endpoints) {
        std::string urls;
        for (const auto& endpoint : endpoints) {
            const bool v6 = endpoint.address.find(':') != std::string::npos;
            urls += (urls.empty() ? "" : " ") + std::string("ldap://") + (v6 ? "[" : "") + endpoint.address +
                    (v6 ? "]" : "") + ":" + std::to_string(endpoint.port);
        }
        LDAP* raw = nullptr;
        if (const int rc = ldap_initialize(&raw, urls.c_str()); rc != LDAP_SUCCESS || raw == nullptr)
            return failure(rc, "setting up a connection to");
        handle_.reset(raw);
        const int version = LDAP_VERSION3;
        auto left = time_left();
        if (!left) return timed_out("connecting to");
        const bool set = ldap_set_option(raw, LDAP_OPT_PROTOCOL_VERSION, &version) == LDAP_OPT_SUCCESS &&
                         ldap_set_option(raw, LDAP_OPT_REFERRALS, LDAP_OPT_OFF) == LDAP_OPT_SUCCESS &&
                         ldap_set_option(raw, LDAP_OPT_RESTART, LDAP_OPT_ON) == LDAP_OPT_SUCCESS &&
                         ldap_set_option(raw, LDAP_OPT_NETWORK_TIMEOUT, &*left) == LDAP_OPT_SUCCESS &&
                         ldap_set_option(raw, LDAP_OPT_TIMEOUT, &*left) == LDAP_OPT_SUCCESS &&
                         ldap_set_option(raw, LDAP_OPT_CONNECT_CB, &callbacks_) == LDAP_OPT_SUCCESS;
        if (!set) return Error::temporary("ldap.network", "cannot set the LDAP options for " + server_);
        return Status::success();
    }

    // Anonymous simple bind (this also connects).
    Status bind() {
        berval no_password{0, nullptr};
        int id = 0;
        if (const int rc = ldap_sasl_bind(handle_.get(), "", LDAP_SASL_SIMPLE, &no_password, nullptr, nullptr, &id);
            rc != LDAP_SUCCESS)
            return failure(rc, "connecting to");
        auto reply = wait_for(id, "binding to");
        if (!reply) return reply.error();
        int code = LDAP_SUCCESS;
        char* text = nullptr;
        if (const int rc = ldap_parse_result(handle_.get(), reply->get(), &code, nullptr, &text, nullptr, nullptr, 0);
            rc != LDAP_SUCCESS)
            return failure(rc, "binding to");
        LdapString diagnostic(text);
        if (code != LDAP_SUCCESS) return failure(code, "binding anonymously to", diagnostic.get());
        return Status::success();
    }

    // The entries under `base` matching `filter`, with `attributes` (none: no such base). The
    // values together may have at most options.max_bytes bytes.
    Result<std::vector<Entry>> search(const std::string& base, int scope, const std::string& filter,
                                      const std::vector<std::string>& attributes, int size_limit) {
        std::vector<char*> names;
        for (const auto& name : attributes) names.push_back(const_cast<char*>(name.c_str()));
        names.push_back(nullptr);
        auto left = time_left();
        if (!left) return timed_out("searching");
        timeval server_limit{std::max<time_t>(1, left->tv_sec), 0};
        int id = 0;
        if (const int rc = ldap_search_ext(handle_.get(), base.c_str(), scope, filter.c_str(), names.data(), 0, nullptr,
                                           nullptr, &server_limit, size_limit, &id);
            rc != LDAP_SUCCESS)
            return failure(rc, "searching");
        std::vector<Entry> entries;
        std::size_t bytes = 0;
        for (;;) {
            auto reply = wait_for(id, "searching");
            if (!reply) return reply.error();
            const int type = ldap_msgtype(reply->get());
            if (type == LDAP_RES_SEARCH_ENTRY) {
                Entry entry;
                for (const auto& name : attributes) {
                    LdapValues values(ldap_get_values_len(handle_.get(), reply->get(), name.c_str()));
                    if (!values) continue;
                    for (berval** value = values.get(); *value != nullptr; ++value) {
                        bytes += (*value)->bv_len;
                        if (bytes > options_.max_bytes) {
                            ldap_abandon_ext(handle_.get(), id, nullptr, nullptr);
                            return Error::permanent("ldap.too_large", "the answer of " + server_ + " is larger than " +
                                                                          std::to_string(options_.max_bytes) + " bytes");
                        }
                        entry[ascii_lower(name)].emplace_back((*value)->bv_val, (*value)->bv_len);
                    }
                }
                entries.push_back(std::move(entry));
            } else if (type == LDAP_RES_SEARCH_RESULT) {
                int code = LDAP_SUCCESS;
                char* text = nullptr;
                if (const int rc =
                        ldap_parse_result(handle_.get(), reply->get(), &code, nullptr, &text, nullptr, nullptr, 0);
                    rc != LDAP_SUCCESS)
                    return failure(rc, "searching");
                LdapString diagnostic(text);
                // More than the size limit: the first entries are enough.
                if (code == LDAP_SUCCESS || code == LDAP_SIZELIMIT_EXCEEDED || code == LDAP_NO_SUCH_OBJECT)
                    return entries;
                return failure(code, "searching " + shown(base) + " on", diagnostic.get());
            }
            // Search references (referrals) are not followed.
        }
    }

private:
    std::optional<timeval> time_left() const {
        const auto left = std::chrono::duration_cast<std::chrono::microseconds>(deadline_ - Clock::now());
        if (left.count() <= 0) return std::nullopt;
        return timeval{static_cast<time_t>(left.count() / 1000000), static_cast<suseconds_t>(left.count() % 1000000)};
    }

    Error timed_out(const std::string& stage) const {
        return Error::temporary("ldap.network", stage + " " + server_ + ": timed out (" +
                                                    std::to_string(options_.timeout.count()) + " s for the whole lookup)");
    }

    // A libldap or server result code as an Error: the client's own codes (negative: connection,
    // timeout, decoding) are "ldap.network", the server's are "ldap.server".
    Error failure(int code, const std::string& stage, const char* diagnostic = nullptr) const {
        if (code == LDAP_TIMEOUT) return timed_out(stage);
        if (code == LDAP_SERVER_DOWN && errno == ERANGE)  // libldap refused a message above the limit
            return Error::permanent("ldap.too_large", "a message from " + server_ + " is larger than " +
                                                          std::to_string(max_incoming_) + " bytes");
        std::string message = stage + " " + server_ + ": " + ldap_err2string(code);
        if (diagnostic != nullptr && *diagnostic != '\0') message += " (" + shown(diagnostic) + ")";
        return Error::temporary(code < 0 ? "ldap.network" : "ldap.server", message);
    }

    // The next message of operation `id`, waited for until the deadline.
    Result<LdapMessage> wait_for(int id, const std::string& stage) {
        auto left = time_left();
        if (!left) {
            ldap_abandon_ext(handle_.get(), id, nullptr, nullptr);
            return timed_out(stage);
        }
        LDAPMessage* raw = nullptr;
        errno = 0;
        const int type = ldap_result(handle_.get(), id, LDAP_MSG_ONE, &*left, &raw);
        LdapMessage message(raw);
        if (type == 0) {
            ldap_abandon_ext(handle_.get(), id, nullptr, nullptr);
            return timed_out(stage);
        }
        if (type == -1 || !message) {
            const int saved_errno = errno;
            int code = LDAP_OTHER;
            ldap_get_option(handle_.get(), LDAP_OPT_RESULT_CODE, &code);
            errno = saved_errno;
            return failure(code, stage);
        }
        return message;
    }

    std::string server_;  // "keys.<domain>" for messages
    FetchOptions options_;
    Clock::time_point deadline_;
    ber_len_t max_incoming_;
    ldap_conncb callbacks_{};  // libldap keeps a pointer to it: declared before the handle
    LdapHandle handle_;
};

// The keyspace's DN from a cn=pgpServerInfo entry, with the attribute that holds the key.
struct Keyspace {
    std::string base;
    bool key_v2 = false;  // old PGP keyserver with version > 1: keys in pgpKeyV2
};

std::optional<Keyspace> keyspace_of(const std::vector<Entry>& entries) {
    for (const auto& entry : entries) {
        for (const char* name : {"pgpbasekeyspacedn", "basekeyspacedn"}) {
            auto found = entry.find(name);
            if (found == entry.end() || found->second.empty() || found->second.front().empty()) continue;
            Keyspace keyspace{found->second.front()};
            if (auto version = entry.find("version"); version != entry.end() && !version->second.empty())
                keyspace.key_v2 = std::atoi(version->second.front().c_str()) > 1;
            return keyspace;
        }
    }
    return std::nullopt;
}

Result<std::vector<std::string>> ask(const std::string& domain, const std::string& address,
                                     const FetchOptions& options) {
    const Clock::time_point deadline = Clock::now() + options.timeout;
    const std::string host = "keys." + domain;
    auto endpoints = resolve_host(host, kLdapPort, options, deadline);
    if (!endpoints) return Error{"ldap.network", endpoints.error().error_class, endpoints.error().message};

    Session session(host, options, deadline);
    if (auto opened = session.open(*endpoints); !opened) return opened.error();
    if (auto bound = session.bind(); !bound) return bound.error();

    // 1. The keyspace: cn=pgpServerInfo at the root (PGP keyservers), else under each naming context.
    const std::vector<std::string> info_attributes = {"pgpBaseKeySpaceDN", "baseKeySpaceDN", "version"};
    // A server error (no such entry, a referral, no access) means "not here"; a network error ends.
    const auto not_here = [](const Error& error) { return error.code == "ldap.server"; };
    auto info = session.search(kServerInfo, LDAP_SCOPE_BASE, "(objectClass=*)", info_attributes, 1);
    if (!info && !not_here(info.error())) return info.error();
    std::optional<Keyspace> keyspace = info ? keyspace_of(*info) : std::nullopt;
    if (!keyspace) {
        auto root = session.search("", LDAP_SCOPE_BASE, "(objectClass=*)", {"namingContexts"}, 1);
        if (!root) return root.error();
        const auto contexts = root->empty() ? std::vector<std::string>{} : (*root)[0]["namingcontexts"];
        for (std::size_t i = 0; i < contexts.size() && i < kMaxLdapEntries && !keyspace; ++i) {
            auto below = session.search(std::string(kServerInfo) + "," + contexts[i], LDAP_SCOPE_BASE,
                                        "(objectClass=*)", {"pgpBaseKeySpaceDN"}, 1);
            if (!below && !not_here(below.error())) return below.error();
            if (below) keyspace = keyspace_of(*below);
        }
    }
    if (!keyspace)
        return Error::permanent("ldap.no_keyspace", host + " has no cn=pgpServerInfo with a pgpBaseKeySpaceDN "
                                                           "(not an OpenPGP LDAP keyserver)");

    // 2. The keys.
    auto found = session.search(keyspace->base, LDAP_SCOPE_SUBTREE, ldap_key_filter(address), {"pgpKeyV2", "pgpKey"},
                                kMaxLdapEntries);
    if (!found) return found.error();
    std::vector<std::string> keys;
    for (auto& entry : *found) {
        auto v2 = entry.find("pgpkeyv2");
        auto v1 = entry.find("pgpkey");
        const bool use_v2 = v2 != entry.end() && (keyspace->key_v2 || v1 == entry.end());
        if (!use_v2 && v1 == entry.end()) continue;
        for (auto& value : (use_v2 ? v2 : v1)->second)
            if (!value.empty()) keys.push_back(std::move(value));
    }
    return keys;
}

}  // namespace

std::string ldap_filter_escape(std::string_view value) {
    static constexpr std::string_view kHex = "0123456789abcdef";
    std::string out;
    out.reserve(value.size());
    for (char c : value) {
        const auto byte = static_cast<unsigned char>(c);
        if (c == '*' || c == '(' || c == ')' || c == '\\' || byte < 0x20 || byte >= 0x7F) {
            out += '\\';
            out += kHex[byte >> 4];
            out += kHex[byte & 0x0F];
        } else {
            out += c;
        }
    }
    return out;
}

std::string ldap_key_filter(std::string_view address) {
    const std::string escaped = ldap_filter_escape(address);
    return "(&(|(pgpUserID=*<" + escaped + ">*)(pgpUserID=" + escaped + "))(!(pgpRevoked=1))(!(pgpDisabled=1)))";
}

Result<std::vector<std::string>> ldap_keys(const std::string& raw_domain, const std::string& address,
                                           const FetchOptions& options) {
    const std::string domain = ascii_lower(raw_domain);
    const std::size_t at = address.rfind('@');
    if (at == std::string::npos || at == 0)
        return Error::permanent("ldap.bad_address", "not an email address: " + shown(address));
    if (!is_host_name(domain))
        return Error::permanent("ldap.bad_address", "the domain " + shown(domain) + " is not an ASCII host name");
    try {
        SigpipeBlocked no_sigpipe;  // until the Session in ask() is closed
        return ask(domain, address, options);
    } catch (const std::exception& error) {
        return Error::temporary("ldap.network", "asking keys." + domain + " failed: " + error.what());
    }
}

}  // namespace postvault::crypto
