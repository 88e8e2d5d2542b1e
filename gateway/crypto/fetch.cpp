// gateway/crypto/fetch.cpp — see fetch.h.
//
// http_get() is a loop over redirects; each hop is fetch_once(): endpoints
// (resolve override, IP literal, or DNS on a detached thread waited for until
// the deadline), then one coroutine on a fresh io_context that connects,
// handshakes, writes the request and reads the response. The Beast stream's
// expiry is the call's absolute deadline, so every read and write, the
// connect and the TLS handshake end by then.
#include "gateway/crypto/fetch.h"

#include <openssl/evp.h>
#include <openssl/sha.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include <algorithm>
#include <array>
#include <condition_variable>
#include <cstdint>
#include <exception>
#include <memory>
#include <mutex>
#include <optional>
#include <thread>
#include <vector>

#include "common/asio.h"
#include "common/openssl.h"

#include <boost/beast/http.hpp>

namespace postvault::crypto {

namespace {

namespace http = beast::http;
using tcp = asio::ip::tcp;
using Clock = std::chrono::steady_clock;
using ErrorCode = boost::system::error_code;

constexpr std::string_view kZBase32Alphabet = "ybndrfg8ejkmcpqxot1uwisza345h769";
constexpr std::uint16_t kHttpPort = 80;
constexpr std::uint16_t kHttpsPort = 443;
constexpr std::uint16_t kHkpPort = 11371;

Error bad_url(const std::string& message) { return Error::permanent("fetch.bad_url", message); }

// Caller-supplied text for an error message: at most 200 bytes, control and
// non-ASCII bytes as '?', so a URL cannot forge log lines or reply text.
std::string shown(std::string_view text) {
    std::string out(text.substr(0, 200));
    for (char& c : out)
        if (static_cast<unsigned char>(c) < 0x20 || static_cast<unsigned char>(c) >= 0x7F) c = '?';
    return out;
}

std::string ascii_lower(std::string_view text) {
    std::string out(text);
    for (char& c : out)
        if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
    return out;
}

bool is_alnum(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'); }

// RFC 3986 percent-encoding: everything but the unreserved characters.
std::string percent_encode(std::string_view text) {
    static constexpr std::string_view kHex = "0123456789ABCDEF";
    std::string out;
    out.reserve(text.size() * 3);
    for (char c : text) {
        if (is_alnum(c) || c == '-' || c == '.' || c == '_' || c == '~') {
            out += c;
        } else {
            const auto byte = static_cast<unsigned char>(c);
            out += '%';
            out += kHex[byte >> 4];
            out += kHex[byte & 0x0F];
        }
    }
    return out;
}

// A DNS name in ASCII: letters, digits, '-' and '_', dot-separated labels.
bool is_host_name(std::string_view host) {
    if (host.empty() || host.size() > 253 || host.front() == '.' || host.back() == '.') return false;
    if (host.find("..") != std::string_view::npos) return false;
    return std::all_of(host.begin(), host.end(),
                       [](char c) { return is_alnum(c) || c == '-' || c == '.' || c == '_'; });
}

bool is_ip_literal(const std::string& host) {
    ErrorCode error;
    asio::ip::make_address(host, error);
    return !error;
}

// An http(s) URL reduced to what one request needs.
struct Url {
    bool tls = false;
    std::string host;  // lower-case; an IPv6 literal without brackets
    std::uint16_t port = 0;
    std::string target;  // path and query, starting with '/'
};

std::uint16_t default_port(bool tls) { return tls ? kHttpsPort : kHttpPort; }

// host[:port] as in a Host header: the port only when it is not the scheme's default.
std::string authority(const Url& url) {
    std::string text = url.host.find(':') != std::string::npos ? "[" + url.host + "]" : url.host;
    if (url.port != default_port(url.tls)) text += ":" + std::to_string(url.port);
    return text;
}

std::string origin(const Url& url) { return (url.tls ? "https://" : "http://") + authority(url); }

std::string format_url(const Url& url) { return origin(url) + url.target; }

std::optional<std::uint16_t> parse_port(std::string_view text) {
    if (text.empty() || text.size() > 5) return std::nullopt;
    unsigned value = 0;
    for (char c : text) {
        if (c < '0' || c > '9') return std::nullopt;
        value = value * 10 + static_cast<unsigned>(c - '0');
    }
    if (value == 0 || value > 65535) return std::nullopt;
    return static_cast<std::uint16_t>(value);
}

// "host", "host:port", "[v6]" or "[v6]:port" -> host (brackets removed) and optional port.
std::optional<std::pair<std::string, std::optional<std::uint16_t>>> split_host_port(std::string_view text) {
    std::string_view host = text;
    std::string_view port_text;
    bool has_port = false;
    if (!text.empty() && text.front() == '[') {
        const std::size_t close = text.find(']');
        if (close == std::string_view::npos) return std::nullopt;
        host = text.substr(1, close - 1);
        std::string_view rest = text.substr(close + 1);
        if (!rest.empty()) {
            if (rest.front() != ':') return std::nullopt;
            port_text = rest.substr(1);
            has_port = true;
        }
        ErrorCode error;
        asio::ip::make_address_v6(std::string(host), error);
        if (error) return std::nullopt;
    } else if (const std::size_t colon = text.find(':'); colon != std::string_view::npos) {
        host = text.substr(0, colon);
        port_text = text.substr(colon + 1);
        has_port = true;
    }
    std::optional<std::uint16_t> port;
    if (has_port) {
        port = parse_port(port_text);
        if (!port) return std::nullopt;
    }
    return std::make_pair(std::string(host), port);
}

Result<Url> parse_url(std::string_view text) {
    const std::string url_shown = shown(text);
    for (char c : text) {
        const auto byte = static_cast<unsigned char>(c);
        if (byte <= 0x20 || byte >= 0x7F)
            return bad_url("URL contains a space, control or non-ASCII byte: " + url_shown);
    }
    const std::size_t separator = text.find("://");
    if (separator == std::string_view::npos) return bad_url("not an absolute URL: " + url_shown);
    const std::string scheme = ascii_lower(text.substr(0, separator));
    Url url;
    if (scheme == "http") {
        url.port = kHttpPort;
    } else if (scheme == "https") {
        url.tls = true;
        url.port = kHttpsPort;
    } else if (scheme == "hkp") {
        url.port = kHkpPort;
    } else if (scheme == "hkps") {
        url.tls = true;
        url.port = kHttpsPort;
    } else {
        return bad_url("unsupported scheme \"" + scheme + "\" in " + url_shown);
    }

    std::string_view rest = text.substr(separator + 3);
    rest = rest.substr(0, rest.find('#'));
    const std::size_t path_start = std::min(rest.find('/'), rest.find('?'));
    const std::string_view authority_text = rest.substr(0, path_start);
    if (path_start != std::string_view::npos) url.target = std::string(rest.substr(path_start));
    if (url.target.empty() || url.target.front() == '?') url.target.insert(0, "/");
    if (authority_text.find('@') != std::string_view::npos)
        return bad_url("user info in URL is not supported: " + url_shown);

    auto host_port = split_host_port(authority_text);
    if (!host_port) return bad_url("bad host or port in " + url_shown);
    url.host = ascii_lower(host_port->first);
    if (host_port->second) url.port = *host_port->second;
    if (url.host.find(':') == std::string::npos && !is_host_name(url.host)) return bad_url("bad host in " + url_shown);
    return url;
}

// A redirect's Location against the URL that answered it (RFC 9110 §10.2.2):
// absolute, scheme-relative ("//host/..."), absolute path or relative path.
Result<Url> follow_location(const Url& base, const std::string& location) {
    const std::size_t colon = location.find(':');
    const std::size_t slash = location.find('/');
    const bool has_scheme = colon != std::string::npos && colon > 0 && (slash == std::string::npos || colon < slash) &&
                            std::all_of(location.begin(), location.begin() + static_cast<std::ptrdiff_t>(colon),
                                        [](char c) { return is_alnum(c) || c == '+' || c == '-' || c == '.'; });
    if (has_scheme) return parse_url(location);
    if (location.rfind("//", 0) == 0) return parse_url((base.tls ? "https:" : "http:") + location);
    if (location.rfind('/', 0) == 0) return parse_url(origin(base) + location);
    const std::string path = base.target.substr(0, base.target.find('?'));
    return parse_url(origin(base) + path.substr(0, path.rfind('/') + 1) + location);
}

// ---- name resolution ----

// resolve entries: "ip:port", "[v6]:port" or a bare IP (the URL's port).
Result<std::vector<tcp::endpoint>> override_endpoints(const std::string& host, const std::string& value,
                                                      std::uint16_t url_port) {
    auto host_port = split_host_port(value);
    ErrorCode error;
    asio::ip::address address;
    if (host_port) address = asio::ip::make_address(host_port->first, error);
    // A bare IPv6 address has colons but no brackets.
    if (!host_port || error) {
        address = asio::ip::make_address(value, error);
        if (error) return bad_url("resolve entry for " + shown(host) + " is not \"ip:port\": " + shown(value));
        return std::vector<tcp::endpoint>{tcp::endpoint(address, url_port)};
    }
    return std::vector<tcp::endpoint>{tcp::endpoint(address, host_port->second.value_or(url_port))};
}

// getaddrinfo() cannot be cancelled, so it runs on a detached thread that owns
// its share of this state; the caller stops waiting at the deadline.
struct Lookup {
    std::mutex mutex;
    std::condition_variable done_signal;
    bool done = false;
    ErrorCode error;
    std::vector<tcp::endpoint> endpoints;
};

Result<std::vector<tcp::endpoint>> lookup_host(const std::string& host_name, std::uint16_t host_port,
                                               Clock::time_point deadline) {
    auto lookup = std::make_shared<Lookup>();
    std::thread([lookup, host = host_name, port = std::to_string(host_port)] {
        asio::io_context io;
        tcp::resolver resolver(io);
        ErrorCode error;
        auto results = resolver.resolve(host, port, tcp::resolver::numeric_service, error);
        std::lock_guard lock(lookup->mutex);
        lookup->error = error;
        for (const auto& entry : results) lookup->endpoints.push_back(entry.endpoint());
        lookup->done = true;
        lookup->done_signal.notify_all();
    }).detach();

    std::unique_lock lock(lookup->mutex);
    if (!lookup->done_signal.wait_until(lock, deadline, [&] { return lookup->done; }))
        return Error::temporary("fetch.network", "resolving " + host_name + " timed out");
    if (lookup->error || lookup->endpoints.empty())
        return Error::temporary("fetch.network", "cannot resolve " + host_name + ": " +
                                                     (lookup->error ? lookup->error.message() : "no addresses"));
    return std::move(lookup->endpoints);
}

Result<std::vector<tcp::endpoint>> endpoints_for(const std::string& host_name, std::uint16_t port,
                                                 const FetchOptions& options, Clock::time_point deadline) {
    for (const auto& [host, value] : options.resolve)
        if (ascii_lower(host) == host_name) return override_endpoints(host, value, port);
    ErrorCode error;
    const asio::ip::address address = asio::ip::make_address(host_name, error);
    if (!error) return std::vector<tcp::endpoint>{tcp::endpoint(address, port)};
    return lookup_host(host_name, port, deadline);
}

// ---- one request on one connection ----

Result<std::unique_ptr<asio::ssl::context>> make_tls_context(const std::string& ca_file) {
    auto context = std::make_unique<asio::ssl::context>(asio::ssl::context::tls_client);
    SSL_CTX_set_min_proto_version(context->native_handle(), TLS1_2_VERSION);
    context->set_options(asio::ssl::context::default_workarounds | asio::ssl::context::no_compression);
    SSL_CTX_set_options(context->native_handle(), SSL_OP_NO_RENEGOTIATION);
    context->set_verify_mode(asio::ssl::verify_peer);
    ErrorCode error;
    if (ca_file.empty()) {
        context->set_default_verify_paths(error);
        if (error)
            return Error::temporary("fetch.ca_file", "cannot load the system CA certificates: " + error.message());
    } else {
        if (SSL_CTX_load_verify_locations(context->native_handle(), ca_file.c_str(), nullptr) != 1)
            return Error::temporary("fetch.ca_file", "cannot load CA file " + ca_file + ": " + openssl::error_text());
    }
    return context;
}

struct Response {
    FetchResult result;
    std::string location;  // for a redirect status
};

// What the coroutine leaves behind for fetch_once().
struct Exchange {
    std::optional<Error> error;
    Response response;
};

bool is_redirect(int status) {
    return status == 301 || status == 302 || status == 303 || status == 307 || status == 308;
}

Error network_error(const Url& url, std::string_view stage, const ErrorCode& error, const FetchOptions& options) {
    std::string message = std::string(stage) + " " + origin(url) + ": ";
    if (error == beast::error::timeout)
        message += "timed out (" + std::to_string(options.timeout.count()) + " s for the whole request)";
    else
        message += error.message();
    return Error::temporary("fetch.network", message);
}

template <typename Stream>
asio::awaitable<void> request_response(Stream& stream, const Url& url, const FetchOptions& options,
                                       Exchange& exchange) {
    http::request<http::empty_body> request{http::verb::get, url.target, 11};
    request.set(http::field::host, authority(url));
    request.set(http::field::user_agent, "postvault");
    request.set(http::field::accept, "*/*");
    request.set(http::field::connection, "close");
    ErrorCode error;
    co_await http::async_write(stream, request, asio::redirect_error(asio::use_awaitable, error));
    if (error) {
        exchange.error = network_error(url, "sending the request to", error, options);
        co_return;
    }

    beast::flat_buffer buffer;
    http::response_parser<http::string_body> parser;
    parser.body_limit(static_cast<std::uint64_t>(options.max_bytes));
    // The declared length is checked here, before any of the body is read: Boost 1.74's parser
    // does not always apply body_limit to a Content-Length that arrives with the header (seen
    // in tests: a 5000-byte body accepted with a limit of 4999).
    co_await http::async_read_header(stream, buffer, parser, asio::redirect_error(asio::use_awaitable, error));
    const auto too_large = [&] {
        return Error::permanent("fetch.too_large", "the response from " + format_url(url) + " is larger than " +
                                                       std::to_string(options.max_bytes) + " bytes");
    };
    if (!error && parser.content_length() && *parser.content_length() > options.max_bytes) {
        exchange.error = too_large();
        co_return;
    }
    if (!error && !parser.is_done())
        co_await http::async_read(stream, buffer, parser, asio::redirect_error(asio::use_awaitable, error));
    if (error == http::error::body_limit || (!error && parser.get().body().size() > options.max_bytes)) {
        exchange.error = too_large();
        co_return;
    }
    if (error) {
        exchange.error = network_error(url, "reading the response from", error, options);
        co_return;
    }
    auto& message = parser.get();
    exchange.response.result.status = static_cast<int>(message.result_int());
    exchange.response.result.content_type = std::string(message[http::field::content_type]);
    exchange.response.result.body = std::move(message.body());
    if (is_redirect(exchange.response.result.status))
        exchange.response.location = std::string(message[http::field::location]);
}

asio::awaitable<void> run_exchange(const Url& url, const std::vector<tcp::endpoint>& endpoints,
                                   const FetchOptions& options, Clock::time_point deadline,
                                   asio::ssl::context* tls_context, Exchange& exchange) {
    auto executor = co_await asio::this_coro::executor;
    ErrorCode error;
    if (tls_context == nullptr) {
        beast::tcp_stream stream(executor);
        stream.expires_at(deadline);  // bounds the connect, the write and the read
        co_await stream.async_connect(endpoints, asio::redirect_error(asio::use_awaitable, error));
        if (error) {
            exchange.error = network_error(url, "connecting to", error, options);
            co_return;
        }
        co_await request_response(stream, url, options, exchange);
        co_return;
    }

    beast::ssl_stream<beast::tcp_stream> stream(executor, *tls_context);
    beast::get_lowest_layer(stream).expires_at(deadline);  // bounds connect, handshake, write and read
    co_await beast::get_lowest_layer(stream).async_connect(endpoints,
                                                           asio::redirect_error(asio::use_awaitable, error));
    if (error) {
        exchange.error = network_error(url, "connecting to", error, options);
        co_return;
    }
    SSL* ssl = stream.native_handle();
    X509_VERIFY_PARAM* verify = SSL_get0_param(ssl);
    X509_VERIFY_PARAM_set_hostflags(verify, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
    const bool names_set = is_ip_literal(url.host)
                               ? X509_VERIFY_PARAM_set1_ip_asc(verify, url.host.c_str()) == 1
                               : SSL_set_tlsext_host_name(ssl, url.host.c_str()) == 1 &&
                                     X509_VERIFY_PARAM_set1_host(verify, url.host.c_str(), 0) == 1;
    if (!names_set) {
        exchange.error = Error::temporary("fetch.network", "cannot set up TLS for " + origin(url) + ": " +
                                                               openssl::error_text());
        co_return;
    }
    co_await stream.async_handshake(asio::ssl::stream_base::client, asio::redirect_error(asio::use_awaitable, error));
    if (error) {
        Error failure = network_error(url, "TLS handshake with", error, options);
        if (const long verified = SSL_get_verify_result(ssl); verified != X509_V_OK)
            failure.message += std::string(" (") + X509_verify_cert_error_string(verified) + ")";
        exchange.error = std::move(failure);
        co_return;
    }
    co_await request_response(stream, url, options, exchange);
    // No TLS shutdown: the whole response is in, and "Connection: close" ends the connection.
}

Result<Response> fetch_once(const Url& url, const FetchOptions& options, Clock::time_point deadline,
                            asio::ssl::context* tls_context) {
    auto endpoints = endpoints_for(url.host, url.port, options, deadline);
    if (!endpoints) return endpoints.error();
    asio::io_context io;
    Exchange exchange;
    std::exception_ptr failure;
    asio::co_spawn(io, run_exchange(url, *endpoints, options, deadline, tls_context, exchange),
                   [&failure](std::exception_ptr thrown) { failure = thrown; });
    io.run();
    if (failure) std::rethrow_exception(failure);
    if (exchange.error) return std::move(*exchange.error);
    return std::move(exchange.response);
}

Result<FetchResult> follow_redirects(const std::string& url_text, const FetchOptions& options) {
    const Clock::time_point deadline = Clock::now() + options.timeout;
    Result<Url> url = parse_url(url_text);
    if (!url) return url.error();
    std::unique_ptr<asio::ssl::context> tls_context;
    for (int redirects = 0;; ++redirects) {
        if (url->tls && !tls_context) {
            auto made = make_tls_context(options.ca_file);
            if (!made) return made.error();
            tls_context = std::move(made.value());
        }
        Result<Response> response = fetch_once(*url, options, deadline, url->tls ? tls_context.get() : nullptr);
        if (!response) return response.error();
        if (response->location.empty()) return std::move(response->result);

        const std::string from = format_url(*url);
        if (redirects >= options.max_redirects)
            return Error::permanent("fetch.redirect", "more than " + std::to_string(options.max_redirects) +
                                                          " redirects; the last from " + from);
        Result<Url> next = follow_location(*url, response->location);
        if (!next)
            return Error::permanent("fetch.redirect", "bad redirect from " + from + ": " + next.error().message);
        if (url->tls && !next->tls)
            return Error::permanent("fetch.redirect", "refusing a redirect from https to http: " + from + " -> " +
                                                          format_url(*next));
        url = std::move(next);
    }
}

}  // namespace

Result<FetchResult> http_get(const std::string& url, const FetchOptions& options) {
    try {
        return follow_redirects(url, options);
    } catch (const std::exception& error) {
        return Error::temporary("fetch.network", "fetching " + shown(url) + " failed: " + error.what());
    }
}

Result<std::vector<Endpoint>> resolve_host(const std::string& host, std::uint16_t port, const FetchOptions& options,
                                           Clock::time_point deadline) {
    try {
        auto endpoints = endpoints_for(ascii_lower(host), port, options, deadline);
        if (!endpoints) return endpoints.error();
        std::vector<Endpoint> out;
        for (const auto& endpoint : *endpoints) out.push_back({endpoint.address().to_string(), endpoint.port()});
        return out;
    } catch (const std::exception& error) {
        return Error::temporary("fetch.network", "resolving " + shown(host) + " failed: " + error.what());
    }
}

std::string zbase32(std::string_view bytes) {
    std::string out;
    out.reserve((bytes.size() * 8 + 4) / 5);
    unsigned pending = 0;  // the low `pending_bits` bits are not yet written
    int pending_bits = 0;
    for (unsigned char byte : bytes) {
        pending = (pending << 8) | byte;
        pending_bits += 8;
        while (pending_bits >= 5) {
            pending_bits -= 5;
            out += kZBase32Alphabet[(pending >> pending_bits) & 0x1F];
        }
        pending &= (1u << pending_bits) - 1;
    }
    if (pending_bits > 0) out += kZBase32Alphabet[(pending << (5 - pending_bits)) & 0x1F];
    return out;
}

std::string wkd_hash(std::string_view local_part) {
    const std::string hashed = ascii_lower(local_part);
    unsigned char digest[SHA_DIGEST_LENGTH];
    SHA1(reinterpret_cast<const unsigned char*>(hashed.data()), hashed.size(), digest);
    return zbase32({reinterpret_cast<const char*>(digest), sizeof digest});
}

Result<WkdUrls> wkd_urls(const std::string& address) {
    const std::size_t at = address.rfind('@');
    if (at == std::string::npos) return bad_url("not an email address (no @): " + shown(address));
    const std::string local = address.substr(0, at);
    const std::string domain = ascii_lower(address.substr(at + 1));
    if (local.empty()) return bad_url("empty local part in " + shown(address));
    if (!is_host_name(domain)) return bad_url("the domain of " + shown(address) + " is not an ASCII host name");

    const std::string hash = wkd_hash(local);
    const std::string query = "?l=" + percent_encode(local);
    return WkdUrls{
        "https://openpgpkey." + domain + "/.well-known/openpgpkey/" + domain + "/hu/" + hash + query,
        "https://" + domain + "/.well-known/openpgpkey/hu/" + hash + query,
    };
}

Result<std::string> hkp_url(const std::string& keyserver, const std::string& address) {
    Result<Url> url = parse_url(keyserver.find("://") == std::string::npos ? "hkps://" + keyserver : keyserver);
    if (!url) return url.error();
    if (url->target != "/")
        return bad_url("a keyserver is a scheme and a host, without path or query: " + shown(keyserver));
    if (address.empty()) return bad_url("empty address for an HKP lookup");
    url->target = "/pks/lookup?op=get&options=mr&search=" + percent_encode(address);
    return format_url(*url);
}

}  // namespace postvault::crypto
