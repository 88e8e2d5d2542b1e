// gateway/smtp/server.h — the SMTP listener: sockets, TLS and timeouts around
// the protocol state machine of gateway/smtp/session.h.
//
// One coroutine per connection on its own strand: read with a timeout
// (smtp.command_timeout, or smtp.data_timeout during DATA/BDAT), feed the
// Session, write its replies, carry out its actions (the sink's commit, Argon2
// checks on the worker pool, the STARTTLS handshake). Connection limits (total
// and per client IP) are enforced at accept with a 421 reply. The server never
// answers 250 before the sink reports the message durable (queue and archive,
// wired in app/serve.cpp); then it tells sink.committed() (delivery).
//
// Role::relay listens on smtp.listen. Role::journal listens on
// archive.journal_listen and only archives: it has no local domains, so every
// recipient needs a trusted client or AUTH (never an open door to the archive).
//
// stop() closes the listeners, lets transactions in progress finish, answers
// 421 to idle sessions, and force-closes whatever is left after the grace
// period. reload() applies new limits, networks, domains and users to new
// connections; listen addresses and the certificate need a restart.
//
// Thread safety: public methods may be called from any thread.
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "common/asio.h"
#include "common/config.h"
#include "common/result.h"
#include "common/mail.h"

namespace postvault::smtp {

class Server {
public:
    enum class Role { relay, journal };
    struct Sink {
        // Makes the message durable, then calls `done` exactly once, from any thread.
        std::function<void(const std::string& id, const Envelope& envelope, std::string message,
                           std::function<void(Status)> done)>
            commit;
        std::function<bool()> has_room;                        // false below the disk floor: 452
        std::function<void(const std::string& id)> committed;  // after the 250; may be empty
        // The policy's refusal of a recipient at RCPT (relay role only); may be empty.
        std::function<std::optional<std::string>(const std::string& mail_from, const std::string& recipient)>
            refuse_recipient;
    };

    Server(asio::io_context& io, asio::thread_pool& workers, Sink sink, std::shared_ptr<const Config> config,
           Role role = Role::relay);
    ~Server();

    // Binds every smtp.listen address; an Error names the one that failed.
    Status start();
    void reload(std::shared_ptr<const Config> config);
    void stop(std::chrono::seconds grace, std::function<void()> done);

    std::size_t active_sessions() const;

private:
    struct Impl;
    std::shared_ptr<Impl> impl_;
};

}  // namespace postvault::smtp
