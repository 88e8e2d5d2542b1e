// gateway/crypto/fetch.h — blocking HTTP(S) GET for OpenPGP key discovery:
// Web Key Directory (draft-koch-openpgp-webkey-service) and HKP keyservers.
//
// http_get() fetches one URL on a fresh connection ("Connection: close") and
// returns the status, body and Content-Type. It blocks the calling thread, so
// call it from a worker thread, never from an Asio I/O thread. Calls are
// independent (each has its own io_context and TLS context) and may run
// concurrently from any number of threads.
//
// Schemes: http, https, hkp (= http on port 11371) and hkps (= https on 443).
// https verifies the certificate chain against ca_file (only that bundle) or,
// when ca_file is empty, the system CA paths, and verifies the host name
// (SNI set; IP literals are checked against the certificate's IP SANs); TLS
// 1.2 is the minimum. FetchOptions::resolve maps a host to "ip:port" (or
// "ip", keeping the URL's port), like curl --resolve: the connection goes
// there while SNI, verification and the Host header keep the URL's name.
// Redirects 301/302/303/307/308 are followed up to max_redirects times, never
// from https to http.
//
// Limits: one deadline, options.timeout from the call, bounds the whole call,
// redirects included: DNS, connect, TLS handshake, the request and the
// response. DNS runs on a short-lived detached thread so a hung resolver
// cannot hold the caller past the deadline. Bodies are bounded by max_bytes,
// headers by Beast's default 8 KiB.
//
// Errors (an HTTP status such as 404 is not an error, it is in FetchResult):
//   temporary "fetch.network"  DNS, connect, TLS handshake or verification,
//                              timeout, reset, malformed response;
//   temporary "fetch.ca_file"  ca_file (or the system CA paths) cannot be loaded;
//   permanent "fetch.bad_url"  unparsable URL or unsupported scheme, user info,
//                              a space, control or non-ASCII byte in the URL,
//                              an unparsable resolve entry;
//   permanent "fetch.too_large"  body larger than max_bytes;
//   permanent "fetch.redirect"  too many redirects, https -> http, a Location
//                              that is not an http(s) URL.
//
// wkd_urls() and hkp_url() build the lookup URLs for an address; zbase32()
// is the WKD hash encoding. They are pure functions.
//
// resolve_host() is the name resolution http_get() uses (resolve override, IP
// literal, or DNS bounded by a deadline), for other protocols (ldap.h).
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "common/result.h"

namespace postvault::crypto {

struct FetchOptions {
    std::chrono::seconds timeout{10};            // whole call: resolve+connect+TLS+write+read, redirects included
    std::size_t max_bytes = 1 << 20;             // larger bodies -> "fetch.too_large"
    std::string ca_file;                         // PEM CA bundle to verify servers; empty: system default paths
    std::map<std::string, std::string> resolve;  // "host" -> "ip:port" override, like curl --resolve (tests, split DNS)
    int max_redirects = 3;                       // follow 301/302/303/307/308, never from https to http
};

struct FetchResult {
    int status = 0;            // the final response's HTTP status
    std::string body;
    std::string content_type;  // the Content-Type header as sent, empty if none
};

// GET `url` (http:// or https://; hkp:// = http on port 11371, hkps:// = https on 443).
Result<FetchResult> http_get(const std::string& url, const FetchOptions& options);

// z-base-32 (the WKD alphabet "ybndrfg8ejkmcpqxot1uwisza345h769"), most
// significant bit first, the last group padded with zero bits, no '='.
std::string zbase32(std::string_view bytes);

// WKD URLs for `address`: the local part lower-cased (ASCII) for the SHA-1
// hash, the domain lower-cased; ?l= carries the original local part,
// percent-encoded. The address is split at its last '@'.
// "fetch.bad_url" for an address without '@', an empty local part or a domain
// that is not an ASCII host name (pass IDNs as A-labels).
// The WKD hash of a local part: z-base-32 of the SHA-1 of its ASCII lower case (32 characters).
std::string wkd_hash(std::string_view local_part);

struct WkdUrls {
    std::string advanced;  // https://openpgpkey.<domain>/.well-known/openpgpkey/<domain>/hu/<hash>?l=<local>
    std::string direct;    // https://<domain>/.well-known/openpgpkey/hu/<hash>?l=<local>
};
Result<WkdUrls> wkd_urls(const std::string& address);

// Where `host` (lower-case ASCII name or IP literal) can be reached on `port`:
// the FetchOptions::resolve entry for it (its port, or `port` when it has none),
// the IP literal itself, or DNS. DNS runs on a detached thread; the caller stops
// waiting at `deadline`. Errors: temporary "fetch.network" (no answer in time,
// no addresses), permanent "fetch.bad_url" (an unparsable resolve entry).
struct Endpoint {
    std::string address;  // IP literal, IPv6 without brackets
    std::uint16_t port = 0;
};
Result<std::vector<Endpoint>> resolve_host(const std::string& host, std::uint16_t port, const FetchOptions& options,
                                           std::chrono::steady_clock::time_point deadline);

// HKP lookup URL for `address` on `keyserver`, given as "hkps://keys.example.org",
// "hkp://host:port", "https://host", "http://host" or a bare "host" (= hkps).
// Returns ".../pks/lookup?op=get&options=mr&search=<percent-encoded address>"
// with the scheme written as http or https (hkp keeps its port 11371).
// "fetch.bad_url" for a keyserver with a path, query or user info, or an empty address.
Result<std::string> hkp_url(const std::string& keyserver, const std::string& address);

}  // namespace postvault::crypto
