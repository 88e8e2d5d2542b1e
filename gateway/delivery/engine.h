// gateway/delivery/engine.h — delivery of queued mail to the next hop.
//
// The engine schedules every pending or deferred recipient in the queue,
// groups recipients of one message by next hop (delivery.relayhost,
// delivery.inbound_relayhost for smtp.local_domains, else the domain's MX
// hosts with A/AAAA fallback per RFC 5321 §5), and delivers over SMTP with
// STARTTLS per delivery.tls / delivery.tls_policy (may | required | none;
// "required" verifies the certificate chain and host name). Connections are
// reused per destination and bounded in total and per destination.
//
// Per recipient: 2xx -> delivered; 4xx or a connection failure -> deferred
// with exponential backoff (retry_min doubling to retry_max); 5xx, or still
// undelivered after max_queue_time -> bounced, with one RFC 3464 DSN per
// message to the envelope sender (never to the null sender) queued in the
// same batch as the state change. TLS version and cipher of each delivery
// are recorded on the recipient.
//
// Policy (queue::Handling, decided when the message was accepted): a
// recipient whose handling asks to encrypt or sign is delivered alone, its
// bytes made by the Protector; when no method in its list can serve it, the
// fallback applies: "plain-tls" sends the message as received, but only over
// TLS with a verified certificate; "hold" keeps it held in the queue for an
// administrator (`postvault queue release`); "bounce" bounces it (5.7.1, a
// DSN tells the sender why). `require_tls` makes the hop's TLS "required".
// Never plaintext when the policy said encrypt. With handling.notify, the
// sender is told when a recipient is held.
//
// Threading: runs on the io_context given; queue writes happen on a worker
// pool, never on the I/O threads. All public methods are thread safe.
// Destroy the Engine after stop()'s `done` ran or the io_context stopped: the
// destructor joins the worker pool.
#pragma once

#include <cstddef>
#include <functional>
#include <map>
#include <memory>
#include <string>

#include "common/asio.h"
#include "common/config.h"
#include "gateway/queue/queue.h"

namespace postvault::delivery {

// What the Protector made for one recipient.
struct Protection {
    std::string message;  // the bytes to send
    std::string method;   // "pgp", "smime"; empty when only signed
};

// Encrypts and/or signs `message` for one recipient as `handling` asks; runs
// on one of kProtectionThreads threads of its own (not the queue's workers:
// a protector blocks for a gpg run or a key lookup, and queue writes must not
// wait behind it) and may block. Errors: "policy.no_method"
// when no method in handling.encrypt can serve this recipient (the fallback
// applies); a temporary error to retry later (a key server did not answer, no
// signing key yet); any other permanent error bounces the recipient.
using Protector = std::function<Result<Protection>(const Envelope& envelope, const std::string& recipient,
                                                   const queue::Handling& handling, const std::string& message)>;

// Protector calls at once (the OpenPGP engine starts as many gpg workers).
inline constexpr std::size_t kProtectionThreads = 4;

struct DeliveryStats {
    std::size_t active_connections = 0;
    std::size_t scheduled_messages = 0;   // known to the scheduler, not yet final
    std::uint64_t delivered = 0;          // recipients, since start
    std::uint64_t deferred = 0;
    std::uint64_t bounced = 0;
    std::map<std::string, std::uint64_t> delivered_by_method;  // "pgp" | "smime" | "plain-tls" | "tls" | "plain"
};

class Engine {
public:
    // Told every recorded outcome (after the queue has it), on a worker thread;
    // may block (the archive writes it). Called with the recipients that changed.
    using OutcomeObserver =
        std::function<void(const std::string& queue_id, const std::vector<queue::RecipientStatus>& changes)>;

    Engine(asio::io_context& io, queue::Queue& queue, std::shared_ptr<const Config> config);
    ~Engine();

    // Set before start().
    void set_outcome_observer(OutcomeObserver observer);
    // Without one, every encryption takes its fallback and signing waits (temporary).
    void set_protector(Protector protector);

    // Loads every non-final recipient from the queue and starts delivering.
    void start();
    // A message was just committed: deliver it now.
    void enqueue(const std::string& queue_id);
    // Administrator: attempt this message (or everything, for flush) now,
    // ignoring backoff. Returns false if the id is not scheduled.
    bool retry_now(const std::string& queue_id);
    void flush();
    // Administrator deleted the message: forget it.
    void forget(const std::string& queue_id);
    // Use a new configuration for attempts that start from now on.
    void reload(std::shared_ptr<const Config> config);
    // Stops starting attempts; `done` runs once in-flight attempts ended
    // (their results recorded) or `grace` elapsed (they stay queued).
    void stop(std::chrono::seconds grace, std::function<void()> done);

    DeliveryStats stats() const;

private:
    struct Impl;
    std::shared_ptr<Impl> impl_;
};

}  // namespace postvault::delivery
