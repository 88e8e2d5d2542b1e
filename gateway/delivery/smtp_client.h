// gateway/delivery/smtp_client.h — one outbound SMTP connection (RFC 5321)
// with STARTTLS (RFC 3207), PIPELINING (RFC 2920), SIZE, 8BITMIME, SMTPUTF8.
//
// SmtpConnection::open() connects to one address, reads the greeting, sends
// EHLO (HELO if EHLO is refused) and applies the TLS mode:
//   none      never STARTTLS;
//   may       STARTTLS when offered, certificate not verified; plaintext only
//             when STARTTLS is not offered or refused. A failed handshake is
//             "delivery.tls_handshake": connect_next_hop() then reconnects to
//             the same address once without TLS (as Postfix does at level
//             "may"), so a broken TLS stack does not hold mail forever;
//   required  STARTTLS must be offered and succeed, the chain must verify
//             against the system CAs (plus delivery.ca_file) and the
//             certificate must match the next-hop host name (SSL_set1_host,
//             SNI). Otherwise "delivery.tls_required": never plaintext.
// TLS 1.2 is the minimum. Bytes the server sends after its 220 to STARTTLS
// and before the handshake are refused (RFC 3207 §4.2, command injection).
//
// send() runs one transaction and reports an outcome per recipient: 2xx
// delivered, 4xx deferred, 5xx bounced; a MAIL reply applies to everyone, the
// final DATA reply to every recipient the server accepted; a lost connection
// defers whatever was not yet answered. The body is dot-stuffed with CRLF
// line ends (bare CR or LF become CRLF, so no receiver can see a premature
// end of data: no SMTP smuggling). SMTPUTF8 mail to a server without
// SMTPUTF8 bounces with 5.6.7 (RFC 6531 §3.4); a message larger than the
// server's SIZE bounces with 5.3.4. The 8BITMIME body goes out as is to a
// server that does not offer 8BITMIME (as Postfix does by default).
//
// Every read and write has a timeout (connect_timeout, command_timeout,
// data_timeout per 64 KiB written and for the final reply) and every reply a
// size bound (reply.h). A connection is used by one coroutine at a time.
// Errors are temporary Errors whose message is the reason a recipient is
// deferred, starting with an enhanced status code ("4.4.1 connect to ...").
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/asio.h"
#include "common/config.h"
#include "common/result.h"
#include "gateway/delivery/mx.h"
#include "gateway/delivery/reply.h"
#include "gateway/delivery/routing.h"

namespace postvault::delivery {

// Most addresses one delivery attempt tries before giving up for now.
inline constexpr std::size_t kMaxAddressesPerAttempt = 10;

// The client TLS context: TLS 1.2 minimum, system CAs plus ca_file. A
// ca_file that does not load makes every "required" connection fail with
// that reason (the others are not affected).
class TlsClientContext {
public:
    explicit TlsClientContext(const std::string& ca_file);
    asio::ssl::context& context() { return context_; }
    const std::string& problem() const { return problem_; }

private:
    asio::ssl::context context_;
    std::string problem_;
};

struct SessionOptions {
    std::string helo_name;
    TlsMode tls = TlsMode::may;
    std::shared_ptr<TlsClientContext> tls_context;
    Seconds connect_timeout{30};
    Seconds command_timeout{300};
    Seconds data_timeout{600};
    std::string log_context = "delivery:";  // starts log lines written while connecting ("qid=...")
};

struct Transaction {
    std::string mail_from;                 // without <>, empty for the null sender
    std::vector<std::string> recipients;
    bool smtputf8 = false;
    bool body_8bit = false;
    const std::string* message = nullptr;  // the stored bytes, not yet dot-stuffed
};

enum class Outcome { delivered, deferred, bounced };

struct RecipientResult {
    Outcome outcome = Outcome::deferred;
    std::string reply;                     // remote reply text or local reason
};

struct TransactionResult {
    std::vector<RecipientResult> recipients;   // parallel to Transaction::recipients
    bool reusable = false;  // the session is in a known state: RSET and reuse it
    bool stale = false;     // the connection died before any reply: nothing happened, retry elsewhere
    std::string last_command;  // "MAIL FROM", "RCPT TO", "DATA", "end of data"
};

class SmtpConnection {
public:
    using Pointer = std::unique_ptr<SmtpConnection>;

    static asio::awaitable<Result<Pointer>> open(asio::any_io_executor executor, std::string host,
                                                 std::string address, std::uint16_t port,
                                                 SessionOptions options);
    ~SmtpConnection();

    asio::awaitable<TransactionResult> send(const Transaction& transaction);
    // RSET; true when the server said 250 and the connection can be reused.
    asio::awaitable<bool> reset();
    // QUIT (short timeout), then close. Never fails.
    asio::awaitable<void> quit();
    void close();

    // True when the server has sent something while we were not asking (a
    // 421 before it closes): the connection must not be reused.
    bool has_unsolicited_input();

    const std::string& remote() const { return remote_; }      // "host[ip]:port"
    const std::string& host() const { return host_; }
    const std::string& tls_version() const { return tls_version_; }  // "" without TLS
    const std::string& tls_cipher() const { return tls_cipher_; }
    const Capabilities& capabilities() const { return capabilities_; }

    SmtpConnection(const SmtpConnection&) = delete;
    SmtpConnection& operator=(const SmtpConnection&) = delete;

private:
    SmtpConnection(asio::any_io_executor executor, std::string host, std::string address,
                   std::uint16_t port, SessionOptions options);

    asio::awaitable<Status> handshake();
    asio::awaitable<Status> hello();
    asio::awaitable<Status> start_tls();
    asio::awaitable<Result<Reply>> read_reply(Seconds timeout);
    asio::awaitable<Status> write(std::string_view data, Seconds timeout);
    asio::awaitable<Result<Reply>> command(std::string line, Seconds timeout);
    beast::tcp_stream& lowest();
    Error io_error(const beast::error_code& error, std::string_view during) const;

    std::string host_;
    std::string address_;
    std::uint16_t port_ = 0;
    std::string remote_;
    SessionOptions options_;
    std::optional<beast::tcp_stream> plain_;
    std::optional<beast::ssl_stream<beast::tcp_stream>> tls_;
    std::string input_;
    Capabilities capabilities_;
    std::string tls_version_;
    std::string tls_cipher_;
};

// Connects to the first host/address of `hosts` that works (at most
// kMaxAddressesPerAttempt tries), moving on after a connection failure, a
// non-2xx greeting or a TLS failure. The error is the last one seen.
asio::awaitable<Result<SmtpConnection::Pointer>> connect_next_hop(asio::any_io_executor executor,
                                                                  std::vector<HostAddresses> hosts,
                                                                  std::uint16_t port,
                                                                  SessionOptions options);

// The body as sent after DATA: CRLF line ends, a leading "." doubled on
// every line, a final CRLF if missing, then ".\r\n".
std::string dot_stuff(std::string_view message);

// "MAIL FROM:<a@b> SIZE=123 BODY=8BITMIME SMTPUTF8\r\n", parameters only as
// far as the server offered them (SMTPUTF8 is checked by send() before).
std::string mail_from_command(const Transaction& transaction, const Capabilities& capabilities);

}  // namespace postvault::delivery
