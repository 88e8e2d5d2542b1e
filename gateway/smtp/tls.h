// gateway/smtp/tls.h — the server-side TLS context for STARTTLS.
//
// make_server_tls_context() loads [tls] cert (PEM chain) and key into an Asio
// SSL context limited to TLS 1.2 or newer (tls.min_version), with the
// OpenSSL default cipher list minus weak suites and server cipher preference.
// A bad certificate or key is an Error naming the file; nothing is logged
// about the key's contents.
#pragma once

#include <memory>

#include "common/asio.h"
#include "common/config.h"
#include "common/result.h"

namespace postvault::smtp {

Result<std::shared_ptr<asio::ssl::context>> make_server_tls_context(const TlsConfig& config);

}  // namespace postvault::smtp
