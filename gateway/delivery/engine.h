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

struct DeliveryStats {
    std::size_t active_connections = 0;
    std::size_t scheduled_messages = 0;   // known to the scheduler, not yet final
    std::uint64_t delivered = 0;          // recipients, since start
    std::uint64_t deferred = 0;
    std::uint64_t bounced = 0;
    std::map<std::string, std::uint64_t> delivered_by_method;  // "tls" | "plain" (later "pgp", "smime"...)
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
