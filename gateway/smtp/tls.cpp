#include "gateway/smtp/tls.h"

#include "common/openssl.h"

namespace postvault::smtp {

Result<std::shared_ptr<asio::ssl::context>> make_server_tls_context(const TlsConfig& config) {
    auto context = std::make_shared<asio::ssl::context>(asio::ssl::context::tls_server);
    SSL_CTX* handle = context->native_handle();
    int min_version = config.min_version == "1.3" ? TLS1_3_VERSION : TLS1_2_VERSION;
    SSL_CTX_set_min_proto_version(handle, min_version);
    SSL_CTX_set_options(handle, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE);
    SSL_CTX_set_cipher_list(handle, "HIGH:!aNULL:!MD5:!RC4:!3DES");
    if (SSL_CTX_use_certificate_chain_file(handle, config.cert.c_str()) != 1) {
        return Error::permanent("tls.cert", "cannot load certificate " + config.cert + ": " + openssl::error_text());
    }
    if (SSL_CTX_use_PrivateKey_file(handle, config.key.c_str(), SSL_FILETYPE_PEM) != 1) {
        return Error::permanent("tls.key", "cannot load private key " + config.key + ": " + openssl::error_text());
    }
    if (SSL_CTX_check_private_key(handle) != 1) {
        return Error::permanent("tls.key", "private key " + config.key + " does not match certificate " + config.cert);
    }
    return context;
}

}  // namespace postvault::smtp
