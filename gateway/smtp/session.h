// gateway/smtp/session.h — the SMTP server protocol as a pure state machine.
//
// A Session knows nothing about sockets. The driver (gateway/smtp/server.h, or
// a unit test) feeds it received bytes with receive(), writes out whatever
// take_output() returns, and carries out the one pending action, if any:
//   - commit:    make envelope() + message() durable, then call commit_done()
//   - verify_auth: check auth_request() against the user table, then auth_done()
//   - start_tls: perform the TLS handshake, then tls_started() (or close)
//   - close:     flush the output and close the connection
// While an action is pending the session does not consume further input; it
// buffers it (pipelining) and resumes after the *_done call. Input buffered
// behind STARTTLS is discarded (no command injection across the TLS boundary).
//
// Protocol: RFC 5321 ESMTP with PIPELINING, SIZE, 8BITMIME, SMTPUTF8,
// ENHANCEDSTATUSCODES, CHUNKING (BDAT), STARTTLS, AUTH PLAIN/LOGIN (offered
// only under TLS). DATA ends only at CRLF.CRLF; a bare CR or LF anywhere in
// DATA or BDAT content makes the message rejected with 550 5.5.2 once the
// transfer ends (the terminator is still only CRLF.CRLF, so smuggled commands
// stay inside the rejected message). Every limit in SessionLimits has a reply.
//
// Thread safety: none; one Session per connection, driven from one strand.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/config.h"
#include "common/mail.h"
#include "common/result.h"

namespace postvault::smtp {

// What a session needs from the rest of the server. All callbacks are cheap
// and non-blocking; slow work (fsync, Argon2) goes through actions.
struct SessionContext {
    std::string hostname;                       // for the banner and Received:
    SmtpConfig limits;                          // listen/users are ignored here
    bool tls_available = false;                 // a certificate is configured
    bool auth_available = false;                // users are configured
    std::function<bool()> disk_has_room;        // false: 452 4.3.1
    std::function<std::string()> new_queue_id;  // unique, used in Received:
    std::function<bool(const std::string& domain)> is_local_domain;
    std::string postmaster_domain;              // RCPT <postmaster> goes here; empty: refused
    // The policy's refusal of a recipient at RCPT time (550 5.7.1 with this text); may be empty.
    std::function<std::optional<std::string>(const std::string& mail_from, const std::string& recipient)>
        refuse_recipient;
};

enum class Action { none, commit, verify_auth, start_tls, close };

struct AuthRequest {
    std::string mechanism;  // "PLAIN" or "LOGIN"
    std::string user;
    std::string password;   // never logged
};

class Session {
public:
    Session(std::shared_ptr<const SessionContext> context, SessionFacts facts);
    ~Session();
    Session(const Session&) = delete;
    Session& operator=(const Session&) = delete;

    // Queues the 220 banner (or a 421/554 refusal when `refuse_reason` is set).
    void start(std::string_view refuse_reason = {});

    // Consumes bytes from the client, producing replies.
    void receive(std::string_view bytes);
    // Replies to send, in order; clears the buffer.
    std::string take_output();

    Action pending_action() const;

    // For Action::commit: the transaction to make durable. message() is the
    // Received: header followed by the exact bytes received (dot-unstuffed).
    const std::string& queue_id() const;
    const Envelope& envelope() const;
    std::string& message();
    // Completes Action::commit: 250 with the id, or the error's 4xx/5xx.
    void commit_done(const Status& result);

    const AuthRequest& auth_request() const;
    void auth_done(bool accepted);

    // Completes Action::start_tls: records the TLS facts; session state resets
    // to the post-greeting state as RFC 3207 requires.
    void tls_started(std::string version, std::string cipher);

    // Read timeout expired: queues 421 4.4.2 and requests close.
    void timeout();
    // Server is shutting down: queues 421 4.3.2 and requests close.
    void shutdown();

    const SessionFacts& facts() const;
    // True while in DATA/BDAT transfer (the driver uses the data timeout).
    bool in_data() const;

private:
    struct State;
    std::unique_ptr<State> state_;
};

}  // namespace postvault::smtp
