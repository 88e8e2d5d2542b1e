// gateway/delivery/engine.cpp — the delivery engine (see engine.h).
//
// Structure:
//   * One MessageTask per queued message with undelivered recipients. Its
//     loop (run_message) runs on the scheduler strand: load the message from
//     the queue (worker pool), sleep on the task's timer until a recipient is
//     due, run one attempt, repeat until every recipient is final. At most
//     max(4, delivery.max_connections) attempts run at once (each holds its
//     message's bytes); the others wait their turn in FIFO order. Public
//     methods reach the loops only by posting to that strand, so the timers
//     are touched from one place.
//   * An attempt (run_attempt) loads the bytes, groups the due recipients by
//     next hop (routing.h), at most 50 to a group, and runs one deliver_group
//     per group, each on its own strand, concurrently; it ends when all of
//     them have recorded.
//   * deliver_group gets a connection from the pool (reuse, or resolve with
//     mx.h on the worker pool and connect with smtp_client.h), runs one SMTP
//     transaction, returns the connection (RSET) or closes it, and records
//     the outcome with one queue.update() on the worker pool: the state of
//     every recipient of the group and, when some bounced, the DSN (dsn.h),
//     in the same batch. The DSN is then scheduled like any message.
//   * A recipient whose policy handling asks to encrypt or sign forms a group
//     of its own: deliver_group first asks the Protector for its bytes (on
//     the worker pool) and applies the handling's fallback when no method
//     can serve it (engine.h). Held recipients are not scheduled.
//   * stop() stops new attempts, closes idle connections and waits for the
//     running attempts (or `grace`).
//
// Logging: one line per recipient outcome, Postfix style:
//   qid=... to=<rcpt> relay=host[ip]:port tls=TLSv1.3 delay=2s attempts=1 status=sent (250 2.0.0 Ok)
#include "gateway/delivery/engine.h"

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <deque>
#include <map>
#include <mutex>
#include <random>

#include <spdlog/spdlog.h>

#include "common/async.h"
#include "gateway/delivery/connection_pool.h"
#include "gateway/delivery/dsn.h"
#include "gateway/delivery/mx.h"
#include "gateway/delivery/retry.h"
#include "gateway/delivery/routing.h"
#include "gateway/delivery/smtp_client.h"

namespace postvault::delivery {

namespace {

// Queue writes, DNS and DSN building run here; a few threads suffice since
// each queue write waits mostly for the group commit's fsync.
constexpr std::size_t kWorkerThreads = 4;

// Recipients per SMTP transaction (Postfix's smtp_destination_recipient_limit):
// servers commonly refuse more than 50 or 100 RCPTs with 452.
constexpr std::size_t kMaxRecipientsPerTransaction = 50;

using queue::QueuedMessage;
using queue::RecipientState;
using queue::RecipientStatus;

std::int64_t unix_now() {
    return std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch())
        .count();
}

bool is_final(RecipientState state) {
    return state == RecipientState::delivered || state == RecipientState::bounced;
}

std::string machine_host_name() {
    char name[256] = {};
    if (gethostname(name, sizeof name - 1) != 0 || name[0] == '\0') return "localhost";
    return name;
}

std::string reporting_host_name(const Config& config) {
    return config.server.hostname.empty() ? machine_host_name() : config.server.hostname;
}

std::string helo_name_of(const Config& config) {
    return config.delivery.helo_name.empty() ? reporting_host_name(config) : config.delivery.helo_name;
}

// Attempts that may run at once: each needs a connection, and holds its
// message's bytes in memory.
std::size_t attempt_limit(const Config& config) {
    return std::max<std::size_t>(4, config.delivery.max_connections);
}

const char* status_word(RecipientState state, bool expired) {
    if (expired) return "expired";
    switch (state) {
        case RecipientState::delivered: return "sent";
        case RecipientState::bounced: return "bounced";
        case RecipientState::deferred: return "deferred";
        case RecipientState::pending: return "pending";
        case RecipientState::held: return "held";
    }
    return "?";
}

// An attempt's shared inputs: one message, its bytes, the configuration.
struct Attempt {
    QueuedMessage message;
    std::string bytes;
    std::shared_ptr<const Config> config;
    std::shared_ptr<TlsClientContext> tls;
};

// Recipients of one attempt that share a next hop (and their policy handling).
struct Group {
    NextHop hop;
    std::vector<std::size_t> positions;   // into Attempt::message.recipients
    std::optional<Error> routing_error;   // no hop: every recipient gets this
    bool protect = false;                 // one recipient to encrypt or sign (Protector)
};

// What became of a group besides the SMTP replies.
struct GroupOutcome {
    std::string remote;
    std::string tls_version;
    std::string tls_cipher;
    std::string method;       // pgp | smime | plain-tls; empty: as received
    std::string held_reason;  // non-empty: the recipient is held, nothing was sent
};

std::string joined(const std::vector<std::string>& items) {
    std::string out;
    for (const auto& item : items) out += (out.empty() ? "" : ", ") + item;
    return out;
}

struct RecordOutcome {
    Status status;
    std::vector<RecipientStatus> changes;
    std::optional<std::string> dsn_id;
    std::vector<std::string> notice_ids;
};

struct Lease {
    SmtpConnection::Pointer connection;
    bool reused = false;
};

}  // namespace

struct MessageTask {
    MessageTask(std::string queue_id, const asio::any_io_executor& executor)
        : id(std::move(queue_id)), timer(executor) {}
    const std::string id;
    asio::steady_timer timer;     // scheduler strand only
    bool run_now = false;         // scheduler strand only
    bool waiting_for_slot = false;  // scheduler strand only
    std::atomic<bool> forgotten{false};
};

struct Engine::Impl : std::enable_shared_from_this<Engine::Impl> {
    Impl(asio::io_context& io_context, queue::Queue& message_queue, std::shared_ptr<const Config> initial)
        : io(io_context),
          queue(message_queue),
          scheduler(asio::make_strand(io_context)),
          workers(kWorkerThreads),
          protection(kProtectionThreads),
          pool(std::make_shared<ConnectionPool>(io_context.get_executor())),
          config(std::move(initial)),
          tls(std::make_shared<TlsClientContext>(config->delivery.ca_file)),
          random(std::random_device{}()) {}

    asio::io_context& io;
    queue::Queue& queue;
    OutcomeObserver outcome_observer;  // set before start()
    Protector protector;               // set before start()
    asio::any_io_executor scheduler;
    asio::thread_pool workers;
    asio::thread_pool protection;  // Protector calls only (engine.h)
    std::shared_ptr<ConnectionPool> pool;

    mutable std::mutex mutex;  // guards the members up to `random`
    std::shared_ptr<const Config> config;
    std::shared_ptr<TlsClientContext> tls;
    std::map<std::string, std::shared_ptr<MessageTask>> tasks;
    std::mt19937_64 random;

    // Scheduler strand only.
    std::size_t in_flight = 0;                                // attempts running
    std::deque<std::weak_ptr<MessageTask>> attempt_waiters;   // tasks waiting for an attempt slot
    std::function<void()> stop_done;
    std::unique_ptr<asio::steady_timer> grace_timer;

    std::atomic<bool> stopping{false};
    std::atomic<std::uint64_t> delivered{0};
    std::map<std::string, std::uint64_t> delivered_by_method;  // guarded by mutex
    std::atomic<std::uint64_t> deferred{0};
    std::atomic<std::uint64_t> bounced{0};

    std::pair<std::shared_ptr<const Config>, std::shared_ptr<TlsClientContext>> snapshot() const {
        std::lock_guard lock(mutex);
        return {config, tls};
    }

    double next_jitter() {
        std::lock_guard lock(mutex);
        return std::uniform_real_distribution<double>(0.0, 1.0)(random);
    }

    std::uint64_t next_seed() {
        std::lock_guard lock(mutex);
        return random();
    }

    // --- scheduling (scheduler strand) -------------------------------------

    void schedule(const std::string& id, bool now) {
        asio::post(scheduler, [self = shared_from_this(), id, now] { self->schedule_on_strand(id, now); });
    }

    void schedule_on_strand(const std::string& id, bool now) {
        if (stopping) return;
        std::shared_ptr<MessageTask> task;
        bool created = false;
        {
            std::lock_guard lock(mutex);
            auto found = tasks.find(id);
            if (found != tasks.end()) {
                task = found->second;
            } else {
                task = std::make_shared<MessageTask>(id, scheduler);
                tasks.emplace(id, task);
                created = true;
            }
        }
        if (created) {
            asio::co_spawn(scheduler, run_message(shared_from_this(), task), [id](std::exception_ptr failure) {
                if (!failure) return;
                try {
                    std::rethrow_exception(failure);
                } catch (const std::exception& e) {
                    spdlog::error("qid={} delivery loop failed: {}", id, e.what());
                }
            });
            return;
        }
        if (now) {
            task->run_now = true;
            task->timer.cancel();
        }
    }

    void finish_task(const std::shared_ptr<MessageTask>& task) {
        std::lock_guard lock(mutex);
        auto found = tasks.find(task->id);
        if (found != tasks.end() && found->second == task) tasks.erase(found);
    }

    void wake_attempt_waiter() {
        while (!attempt_waiters.empty()) {
            auto waiter = attempt_waiters.front().lock();
            attempt_waiters.pop_front();
            if (waiter && waiter->waiting_for_slot) {
                waiter->timer.cancel();
                return;
            }
        }
    }

    void maybe_finish_stop() {
        if (!stopping || in_flight > 0 || !stop_done) return;
        auto done = std::move(stop_done);
        stop_done = nullptr;
        if (grace_timer) grace_timer->cancel();
        asio::post(io, std::move(done));
    }

    asio::awaitable<void> sleep(MessageTask& task, std::chrono::seconds delay) {
        task.timer.expires_after(std::max(delay, std::chrono::seconds(0)));
        boost::system::error_code ignored;
        co_await task.timer.async_wait(asio::redirect_error(asio::use_awaitable, ignored));
    }

    static asio::awaitable<void> run_message(std::shared_ptr<Impl> self, std::shared_ptr<MessageTask> task) {
        const std::string id = task->id;
        while (!self->stopping && !task->forgotten) {
            auto snapshot = self->snapshot();
            std::shared_ptr<const Config> config = snapshot.first;
            std::shared_ptr<TlsClientContext> tls = snapshot.second;
            const std::chrono::seconds retry_min = std::max(config->delivery.retry_min, std::chrono::seconds(1));
            queue::Queue* message_queue = &self->queue;
            auto load_job = [message_queue, id] { return message_queue->load(id); };
            auto loaded = co_await run_blocking(self->workers, std::move(load_job));
            if (self->stopping || task->forgotten) break;
            if (!loaded) {
                if (!loaded.error().is_temporary()) break;  // gone: delivered, removed or quarantined
                spdlog::warn("qid={} cannot load from the queue: {}", id, loaded.error().message);
                co_await self->sleep(*task, retry_min);
                continue;
            }

            const std::int64_t now = unix_now();
            const bool force = task->run_now;
            task->run_now = false;
            std::vector<std::size_t> due;
            std::int64_t next_wake = std::numeric_limits<std::int64_t>::max();
            for (std::size_t i = 0; i < loaded->recipients.size(); ++i) {
                const RecipientStatus& recipient = loaded->recipients[i];
                if (is_final(recipient.state) || recipient.state == RecipientState::held) continue;
                const std::int64_t when =
                    std::min(recipient.next_attempt_unix, expiry_unix(config->delivery, loaded->envelope));
                if (force || when <= now) due.push_back(i);
                else next_wake = std::min(next_wake, when);
            }
            if (due.empty() && next_wake == std::numeric_limits<std::int64_t>::max()) break;  // all final
            if (due.empty()) {
                co_await self->sleep(*task, std::chrono::seconds(next_wake - now));
                continue;
            }

            // Bound the attempts (and message bytes in memory) running at once.
            const std::size_t limit = attempt_limit(*config);
            while (self->in_flight >= limit && !self->stopping && !task->forgotten) {
                task->waiting_for_slot = true;
                self->attempt_waiters.push_back(task);
                co_await self->sleep(*task, std::chrono::hours(24));
                task->waiting_for_slot = false;
            }
            if (self->stopping || task->forgotten) break;

            auto attempt = std::make_shared<Attempt>();
            attempt->message = std::move(*loaded);
            attempt->config = config;
            attempt->tls = tls;
            ++self->in_flight;
            bool recorded = false;
            try {
                recorded = co_await self->run_attempt(self, attempt, std::move(due));
            } catch (const std::exception& e) {
                spdlog::error("qid={} delivery attempt failed: {}", id, e.what());
            }
            --self->in_flight;
            self->wake_attempt_waiter();
            self->maybe_finish_stop();
            // When the outcome could not be written, the same recipients are
            // still due: wait instead of retrying at once.
            if (!recorded && !self->stopping && !task->run_now) co_await self->sleep(*task, retry_min);
        }
        self->finish_task(task);
    }

    // --- one attempt ----------------------------------------------------------

    asio::awaitable<bool> run_attempt(std::shared_ptr<Impl> self, std::shared_ptr<Attempt> attempt,
                                      std::vector<std::size_t> due) {
        const std::string id = attempt->message.id;
        queue::Queue* message_queue = &queue;
        auto load_job = [message_queue, id] { return message_queue->load_message(id); };
        auto bytes = co_await run_blocking(workers, std::move(load_job));
        if (!bytes) {
            spdlog::error("qid={} cannot load the message bytes: {}", id, bytes.error().message);
            co_return false;
        }
        attempt->bytes = std::move(*bytes);

        // One transaction per next hop, of at most kMaxRecipientsPerTransaction.
        std::map<std::string, std::size_t> members;  // hop key -> recipients so far
        std::map<std::string, Group> groups;
        for (std::size_t position : due) {
            const RecipientStatus& recipient = attempt->message.recipients[position];
            const queue::Handling& handling = recipient.handling;
            auto hop = select_next_hop(*attempt->config, domain_of(recipient.address));
            if (hop && handling.require_tls) hop->tls = TlsMode::required;
            const bool protect = !handling.encrypt.empty() || handling.sign;
            std::string hop_key = hop ? hop->key() : "error:" + hop.error().message;
            if (protect) hop_key += "|alone:" + std::to_string(position);
            const std::size_t chunk = members[hop_key]++ / kMaxRecipientsPerTransaction;
            Group& group = groups[hop_key + "#" + std::to_string(chunk)];
            if (hop) group.hop = *hop;
            else group.routing_error = hop.error();
            group.protect = protect;
            group.positions.push_back(position);
        }

        auto latch = std::make_shared<Latch>(groups.size());
        auto all_recorded = std::make_shared<std::atomic<bool>>(true);
        std::shared_ptr<const Attempt> shared_attempt = attempt;
        for (auto& [key, group] : groups) {
            asio::co_spawn(asio::make_strand(io), deliver_group(self, shared_attempt, std::move(group)),
                           [latch, all_recorded, id](std::exception_ptr failure, bool recorded) {
                               if (failure) {
                                   try {
                                       std::rethrow_exception(failure);
                                   } catch (const std::exception& e) {
                                       spdlog::error("qid={} delivery failed: {}", id, e.what());
                                   }
                               }
                               if (failure || !recorded) *all_recorded = false;
                               latch->count_down();
                           });
        }
        co_await latch->wait();
        co_return all_recorded->load();
    }

    asio::awaitable<Result<Lease>> obtain_connection(std::shared_ptr<const Attempt> attempt, NextHop hop) {
        const DeliveryConfig& settings = attempt->config->delivery;
        const std::string key = hop.key();
        PoolLimits limits{settings.max_connections, settings.max_connections_per_destination, settings.idle_timeout};
        auto grant = co_await pool->acquire(key, limits);
        if (!grant) co_return Error::temporary("delivery.stopped", "4.3.2 delivery is shutting down");
        if (grant->idle) co_return Lease{std::move(grant->idle), true};

        const std::uint64_t seed = next_seed();
        auto resolve_job = [hop, name_servers = settings.dns_servers, seed] {
            return resolve_next_hop(hop, name_servers, seed);
        };
        auto hosts = co_await run_blocking(workers, std::move(resolve_job));
        if (!hosts) {
            pool->release(key);
            co_return hosts.error();
        }
        SessionOptions options;
        options.helo_name = helo_name_of(*attempt->config);
        options.tls = hop.tls;
        options.tls_context = attempt->tls;
        options.connect_timeout = settings.connect_timeout;
        options.command_timeout = settings.command_timeout;
        options.data_timeout = settings.data_timeout;
        options.log_context = "qid=" + attempt->message.id;
        auto connection = co_await connect_next_hop(io.get_executor(), std::move(*hosts), hop.port, options);
        if (!connection) {
            pool->release(key);
            co_return connection.error();
        }
        co_return Lease{std::move(*connection), false};
    }

    // Puts a connection back in the pool after RSET, or closes it.
    asio::awaitable<void> return_connection(const std::string& key, SmtpConnection::Pointer connection,
                                            bool reusable) {
        if (reusable && !stopping) {
            const bool clean = co_await connection->reset();
            if (clean) {
                pool->give_back(key, std::move(connection));
                co_return;
            }
            connection->close();
        } else {
            co_await connection->quit();
        }
        pool->release(key);
    }

    Result<Protection> protect(const Envelope& envelope, const std::string& recipient,
                               const queue::Handling& handling, const std::string& message) const {
        if (protector) return protector(envelope, recipient, handling, message);
        if (!handling.encrypt.empty())
            return Error::permanent("policy.no_method", "no encryption method is available on this server");
        return Error::temporary("policy.no_signer", "4.7.0 signing requested and no signing key is configured");
    }

    // The bytes a protected recipient gets, or its fallback: fills `bytes` and
    // `outcome.method`, or `outcome.held_reason`, or returns the error that
    // settles the recipient (bounce or retry).
    static asio::awaitable<std::optional<Error>> prepare_protected(std::shared_ptr<Impl> self,
                                                                   std::shared_ptr<const Attempt> attempt,
                                                                   Group& group, std::string& bytes,
                                                                   GroupOutcome& outcome) {
        const RecipientStatus recipient = attempt->message.recipients[group.positions.front()];
        const queue::Handling& handling = recipient.handling;
        auto run_protector = [self, attempt, recipient](queue::Handling asked) {
            return [self, attempt, recipient, asked] {
                return self->protect(attempt->message.envelope, recipient.address, asked, attempt->bytes);
            };
        };
        auto made = co_await run_blocking(self->protection, run_protector(handling));
        if (made) {
            bytes = std::move(made->message);
            outcome.method = made->method;
            co_return std::nullopt;
        }
        if (made.error().code != "policy.no_method") co_return made.error();

        const std::string reason = "policy rule " + handling.rule + " requires encryption (" +
                                   joined(handling.encrypt) + ") and " + made.error().message;
        spdlog::info("qid={} to=<{}> policy: {}; fallback {}", attempt->message.id, recipient.address, reason,
                     handling.fallback);
        if (handling.fallback == "hold") {
            outcome.held_reason = "held: " + reason;
            co_return std::nullopt;
        }
        if (handling.fallback != "plain-tls")  // bounce
            co_return Error::permanent("policy.encrypt", "5.7.1 " + reason + "; not sent");
        // plain-tls: as received (signed, if that was asked too), only over verified TLS.
        group.hop.tls = TlsMode::required;
        outcome.method = "plain-tls";
        if (!handling.sign) co_return std::nullopt;
        queue::Handling sign_only = handling;
        sign_only.encrypt.clear();
        auto signed_only = co_await run_blocking(self->protection, run_protector(sign_only));
        if (!signed_only) co_return signed_only.error();
        bytes = std::move(signed_only->message);
        co_return std::nullopt;
    }

    static asio::awaitable<bool> deliver_group(std::shared_ptr<Impl> self, std::shared_ptr<const Attempt> attempt,
                                               Group group) {
        const QueuedMessage& message = attempt->message;
        std::vector<RecipientResult> results(group.positions.size());
        GroupOutcome outcome;
        // The connection goes back to the pool (RSET) only after the outcome is
        // recorded: a next hop that stalls on RSET must not keep a known
        // delivery unrecorded, or a restart would send the message again.
        std::string key;
        SmtpConnection::Pointer used_connection;
        bool reusable = false;

        auto settle_all = [&](const Error& error) {
            const Outcome outcome = error.is_temporary() ? Outcome::deferred : Outcome::bounced;
            for (auto& result : results) result = {outcome, error.message};
        };

        std::string protected_bytes;  // the Protector's output, for a protected group
        std::optional<Error> unprotectable;
        if (group.protect && !group.routing_error) {
            protected_bytes = attempt->bytes;
            unprotectable = co_await prepare_protected(self, attempt, group, protected_bytes, outcome);
        }

        if (group.routing_error || unprotectable) {
            settle_all(group.routing_error ? *group.routing_error : *unprotectable);
        } else if (!outcome.held_reason.empty()) {
            // Nothing to send: record() holds the recipient.
        } else {
            Transaction transaction;
            transaction.mail_from = message.envelope.mail_from;
            transaction.smtputf8 = message.envelope.smtputf8;
            transaction.body_8bit = message.envelope.body_8bit;
            transaction.message = group.protect ? &protected_bytes : &attempt->bytes;
            for (std::size_t position : group.positions)
                transaction.recipients.push_back(message.recipients[position].address);

            key = group.hop.key();
            for (int round = 0; round < 2; ++round) {
                auto lease = co_await self->obtain_connection(attempt, group.hop);
                if (!lease) {
                    if (lease.error().code == "delivery.stopped") co_return false;  // nothing was tried
                    settle_all(lease.error());
                    break;
                }
                SmtpConnection::Pointer connection = std::move(lease->connection);
                TransactionResult transaction_result = co_await connection->send(transaction);
                if (transaction_result.stale && lease->reused && round == 0) {
                    // The idle connection had died: nothing was said, try a fresh one.
                    connection->close();
                    self->pool->release(key);
                    continue;
                }
                results = std::move(transaction_result.recipients);
                outcome.remote = connection->remote();
                outcome.tls_version = connection->tls_version();
                outcome.tls_cipher = connection->tls_cipher();
                used_connection = std::move(connection);
                reusable = transaction_result.reusable;
                break;
            }
        }
        bool recorded = co_await self->record(self, attempt, group, std::move(results), std::move(outcome));
        if (used_connection) co_await self->return_connection(key, std::move(used_connection), reusable);
        co_return recorded;
    }

    // --- recording ------------------------------------------------------------

    asio::awaitable<bool> record(std::shared_ptr<Impl> self, std::shared_ptr<const Attempt> attempt, Group group,
                                 std::vector<RecipientResult> results, GroupOutcome group_outcome) {
        const QueuedMessage& message = attempt->message;
        const DeliveryConfig& settings = attempt->config->delivery;
        const std::int64_t now = unix_now();
        std::vector<RecipientStatus> changes;
        std::vector<bool> expired;
        for (std::size_t i = 0; i < group.positions.size(); ++i) {
            RecipientStatus status = message.recipients[group.positions[i]];
            const RecipientResult& result = results[i];
            status.attempts += 1;
            status.updated_unix = now;
            status.last_reply = result.reply;
            status.remote_host = group_outcome.remote;
            status.tls_version = group_outcome.tls_version;
            status.tls_cipher = group_outcome.tls_cipher;
            status.method.clear();
            bool is_expired_now = false;
            if (!group_outcome.held_reason.empty()) {
                status.state = RecipientState::held;
                status.last_reply = group_outcome.held_reason;
                changes.push_back(std::move(status));
                expired.push_back(false);
                continue;
            }
            switch (result.outcome) {
                case Outcome::delivered:
                    status.state = RecipientState::delivered;
                    status.method = group_outcome.method;
                    break;
                case Outcome::bounced: status.state = RecipientState::bounced; break;
                case Outcome::deferred:
                    if (is_expired(settings, message.envelope, now)) {
                        status.state = RecipientState::bounced;
                        status.last_reply = "4.4.7 message expired; last error: " + result.reply;
                        is_expired_now = true;
                    } else {
                        status.state = RecipientState::deferred;
                        status.next_attempt_unix =
                            next_attempt_unix(settings, message.envelope, status.attempts, now, next_jitter());
                    }
                    break;
            }
            changes.push_back(std::move(status));
            expired.push_back(is_expired_now);
        }
        // Even after the stop's grace period: an outcome already known is
        // written, never dropped (dropping a delivery means sending it twice).

        const std::string reporting_mta = reporting_host_name(*attempt->config);
        queue::Queue* message_queue = &queue;
        const OutcomeObserver observer = outcome_observer;
        auto record_job = [message_queue, attempt, changes, reporting_mta, now, observer]() mutable {
            RecordOutcome out;
            std::vector<queue::Queue::NewMessage> new_messages;
            DsnRequest request;
            for (const auto& change : changes)
                if (change.state == RecipientState::bounced && !change.dsn_sent) request.failed.push_back(change);
            if (!request.failed.empty() && !attempt->message.envelope.mail_from.empty()) {
                request.reporting_mta = reporting_mta;
                request.queue_id = attempt->message.id;
                request.original = attempt->message.envelope;
                request.original_message = attempt->bytes;
                request.now_unix = now;
                auto dsn = build_dsn(request);
                if (dsn) {
                    const std::string dsn_id = queue::make_queue_id();
                    new_messages.push_back({dsn_id, std::move(dsn->envelope), std::move(dsn->message)});
                    for (auto& change : changes)
                        if (change.state == RecipientState::bounced) change.dsn_sent = true;
                    out.dsn_id = dsn_id;
                } else {
                    spdlog::error("qid={} cannot build the DSN: {}", attempt->message.id, dsn.error().message);
                }
            }
            NoticeRequest notice;
            for (const auto& change : changes)
                if (change.state == RecipientState::held && change.handling.notify)
                    notice.lines.push_back("<" + change.address + ">: " + change.last_reply +
                                           ". An administrator has been asked to decide; nothing was sent.");
            if (!notice.lines.empty() && !attempt->message.envelope.mail_from.empty()) {
                notice.reporting_mta = reporting_mta;
                notice.queue_id = attempt->message.id;
                notice.original = attempt->message.envelope;
                notice.original_message = attempt->bytes;
                notice.now_unix = now;
                if (auto built = build_notice(notice))
                    new_messages.push_back({queue::make_queue_id(), std::move(built->envelope), std::move(built->message)});
                else
                    spdlog::error("qid={} cannot build the policy notice: {}", attempt->message.id, built.error().message);
            }
            out.status = message_queue->update(attempt->message.id, changes, new_messages);
            for (const auto& added : new_messages)
                if (!out.dsn_id || added.id != *out.dsn_id) out.notice_ids.push_back(added.id);
            if (out.status && observer) observer(attempt->message.id, changes);
            out.changes = std::move(changes);
            return out;
        };
        auto outcome = co_await run_blocking(workers, std::move(record_job));

        const std::string& id = message.id;
        for (std::size_t i = 0; i < outcome.changes.size(); ++i) {
            const RecipientStatus& status = outcome.changes[i];
            const std::int64_t delay = std::max<std::int64_t>(0, now - message.envelope.received_unix);
            spdlog::info("qid={} to=<{}> relay={} tls={} delay={}s attempts={} status={} ({})", id, status.address,
                         status.remote_host.empty() ? "none" : status.remote_host,
                         status.tls_version.empty() ? "none" : status.tls_version, delay, status.attempts,
                         status_word(status.state, expired[i]), status.last_reply);
        }
        if (!outcome.status) {
            spdlog::error("qid={} cannot record the delivery outcome: {}", id, outcome.status.error().message);
            co_return false;
        }
        for (const auto& status : outcome.changes) {
            if (status.state == RecipientState::delivered) {
                ++delivered;
                std::lock_guard lock(mutex);
                ++delivered_by_method[!status.method.empty()       ? status.method
                                      : status.tls_version.empty() ? "plain"
                                                                   : "tls"];
            } else if (status.state == RecipientState::bounced) ++bounced;
            else if (status.state == RecipientState::deferred) ++deferred;
        }
        const bool any_bounce = std::any_of(outcome.changes.begin(), outcome.changes.end(),
                                            [](const auto& s) { return s.state == RecipientState::bounced; });
        for (const auto& notice_id : outcome.notice_ids) {
            spdlog::info("qid={} policy notice to the sender: qid={}", id, notice_id);
            schedule(notice_id, true);
        }
        if (outcome.dsn_id) {
            spdlog::info("qid={} sender non-delivery notification: qid={}", id, *outcome.dsn_id);
            schedule(*outcome.dsn_id, true);
        } else if (any_bounce && message.envelope.mail_from.empty()) {
            spdlog::info("qid={} bounced mail from the null sender: no DSN sent", id);
        }
        co_return true;
    }

    // --- loading and stopping -------------------------------------------------

    static asio::awaitable<void> load_queue(std::shared_ptr<Impl> self) {
        queue::Queue* message_queue = &self->queue;
        auto list_job = [message_queue] { return message_queue->list(); };
        auto messages = co_await run_blocking(self->workers, std::move(list_job));
        std::size_t count = 0;
        for (const auto& message : messages) {
            const bool open = std::any_of(message.recipients.begin(), message.recipients.end(),
                                          [](const RecipientStatus& r) { return !is_final(r.state); });
            if (!open) continue;
            self->schedule_on_strand(message.id, false);
            ++count;
        }
        spdlog::info("delivery: {} queued message(s) scheduled", count);
    }

    void stop_on_strand(std::chrono::seconds grace, std::function<void()> done) {
        stopping = true;
        {
            std::lock_guard lock(mutex);
            for (auto& [id, task] : tasks) task->timer.cancel();
        }
        pool->shut_down();
        stop_done = std::move(done);
        if (in_flight == 0) {
            maybe_finish_stop();
            return;
        }
        spdlog::info("delivery: stopping, waiting up to {}s for {} attempt(s)", grace.count(), in_flight);
        grace_timer = std::make_unique<asio::steady_timer>(scheduler);
        grace_timer->expires_after(grace);
        grace_timer->async_wait([self = shared_from_this()](const boost::system::error_code& error) {
            if (error || !self->stop_done) return;
            spdlog::warn("delivery: grace period over with {} attempt(s) running; they stay queued",
                         self->in_flight);
            auto done = std::move(self->stop_done);
            self->stop_done = nullptr;
            asio::post(self->io, std::move(done));
        });
    }
};

Engine::Engine(asio::io_context& io, queue::Queue& queue, std::shared_ptr<const Config> config)
    : impl_(std::make_shared<Impl>(io, queue, std::move(config))) {}

void Engine::set_outcome_observer(OutcomeObserver observer) { impl_->outcome_observer = std::move(observer); }

void Engine::set_protector(Protector protector) { impl_->protector = std::move(protector); }

Engine::~Engine() {
    impl_->stopping = true;
    impl_->pool->shut_down();
    impl_->protection.join();
    impl_->workers.join();
}

void Engine::start() {
    asio::co_spawn(impl_->scheduler, Impl::load_queue(impl_), [](std::exception_ptr failure) {
        if (!failure) return;
        try {
            std::rethrow_exception(failure);
        } catch (const std::exception& e) {
            spdlog::error("delivery: cannot load the queue: {}", e.what());
        }
    });
}

void Engine::enqueue(const std::string& queue_id) { impl_->schedule(queue_id, true); }

bool Engine::retry_now(const std::string& queue_id) {
    {
        std::lock_guard lock(impl_->mutex);
        if (impl_->tasks.find(queue_id) == impl_->tasks.end()) return false;
    }
    impl_->schedule(queue_id, true);
    return true;
}

void Engine::flush() {
    std::vector<std::string> ids;
    {
        std::lock_guard lock(impl_->mutex);
        for (const auto& [id, task] : impl_->tasks) ids.push_back(id);
    }
    for (const auto& id : ids) impl_->schedule(id, true);
}

void Engine::forget(const std::string& queue_id) {
    std::shared_ptr<MessageTask> task;
    {
        std::lock_guard lock(impl_->mutex);
        auto found = impl_->tasks.find(queue_id);
        if (found == impl_->tasks.end()) return;
        task = found->second;
        impl_->tasks.erase(found);
    }
    task->forgotten = true;
    asio::post(impl_->scheduler, [task] { task->timer.cancel(); });
}

void Engine::reload(std::shared_ptr<const Config> config) {
    auto tls = std::make_shared<TlsClientContext>(config->delivery.ca_file);
    if (!tls->problem().empty()) spdlog::warn("delivery: {}", tls->problem());
    std::lock_guard lock(impl_->mutex);
    impl_->config = std::move(config);
    impl_->tls = std::move(tls);
}

void Engine::stop(std::chrono::seconds grace, std::function<void()> done) {
    asio::post(impl_->scheduler, [impl = impl_, grace, done = std::move(done)]() mutable {
        impl->stop_on_strand(grace, std::move(done));
    });
}

DeliveryStats Engine::stats() const {
    DeliveryStats stats;
    stats.active_connections = impl_->pool->open_connections();
    {
        std::lock_guard lock(impl_->mutex);
        stats.scheduled_messages = impl_->tasks.size();
        stats.delivered_by_method = impl_->delivered_by_method;
    }
    stats.delivered = impl_->delivered;
    stats.deferred = impl_->deferred;
    stats.bounced = impl_->bounced;
    return stats;
}

}  // namespace postvault::delivery
