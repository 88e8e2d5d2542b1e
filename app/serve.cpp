// app/serve.cpp — `postvault serve`: wires the modules into one server.
//
// Owns the io_context (I/O threads), the worker pool (RocksDB, Argon2, DNS),
// the queue, the archive, the delivery engine, the SMTP servers (relay and
// journal) and the control socket.
//
// A relayed message is made durable in the queue and journaled in the archive
// in parallel; 250 only when both are on disk. If the archive fails, the message
// is taken back out of the queue and the client gets a 4xx, so nothing is relayed
// that the archive does not hold.
// SIGTERM/SIGINT drain and exit 0: listeners close, transactions in progress
// finish, deliveries in flight are recorded. SIGHUP reloads the configuration
// file; an invalid file is reported and the running configuration stays.
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <iostream>
#include <mutex>
#include <thread>

#include <spdlog/spdlog.h>

#include "app/commands.h"
#include "archive/archive.h"
#include "archive/importer.h"
#include "audit-api/http_server.h"
#include "audit-api/routes.h"
#include "audit-api/tokens.h"
#include "gateway/policy/policy.h"
#include "gateway/smtp/tls.h"
#include "search/index.h"
#include "common/asio.h"
#include "common/config.h"
#include "common/log.h"
#include "gateway/control/control.h"
#include "gateway/crypto/inbound.h"
#include "gateway/crypto/protect.h"
#include "gateway/delivery/dsn.h"
#include "gateway/delivery/engine.h"
#include "gateway/queue/queue.h"
#include "gateway/smtp/server.h"

namespace postvault::app {

namespace {
constexpr auto smtp_drain_grace = std::chrono::seconds(30);
constexpr auto delivery_drain_grace = std::chrono::seconds(30);
constexpr std::size_t worker_threads = 4;

// The path of another program of postvault's in this program's directory.
std::string sibling_program(const std::string& name) {
    std::error_code error;
    const auto self = std::filesystem::read_symlink("/proc/self/exe", error);
    return (error ? std::filesystem::path(name) : self.parent_path() / name).string();
}

// Queue and archive in parallel; 250 when both have it (see the file comment). The policy's
// verdict goes into the archive record: the rules that fired, their tags, the decisions.
// The archive keeps the message as received; the queue gets `to_send` (the ad-hoc subject tag
// removed) with each recipient's handling.
void commit_message(queue::Queue& message_queue, asio::thread_pool& workers, archive::Archive* archive,
                    const std::string& id, const Envelope& envelope, std::string message, std::string to_send,
                    const std::string& direction, const policy::Verdict& verdict,
                    std::vector<queue::Handling> handling, nlohmann::json pgp, std::function<void(Status)> done) {
    if (!archive) {
        message_queue.commit(id, envelope, std::move(to_send), std::move(done), std::move(handling));
        return;
    }
    struct Join {
        std::mutex mutex;
        int left = 2;
        Status queued;
        Status archived;
        std::function<void(Status)> done;
    };
    auto join = std::make_shared<Join>();
    join->done = std::move(done);
    auto finish = [join, &message_queue, &workers, id](bool from_queue, Status status) {
        {
            std::lock_guard lock(join->mutex);
            (from_queue ? join->queued : join->archived) = std::move(status);
            if (--join->left > 0) return;
        }
        // Last one in; may be on a committer thread: decide on the worker pool.
        asio::post(workers, [join, &message_queue, id] {
            if (join->queued && !join->archived) {
                if (auto removed = message_queue.remove(id); !removed)
                    spdlog::error("qid={} archive failed and the queued copy could not be removed: {}", id,
                                  removed.error().message);
                join->done(join->archived);
                return;
            }
            if (!join->queued && join->archived)
                spdlog::warn("qid={} archived but not queued ({}); the client will retry", id,
                             join->queued.error().message);
            join->done(join->queued ? join->archived : join->queued);
        });
    };
    archive::IngestRequest request;
    request.id = id;
    request.bytes = std::move(message);
    request.envelope = envelope;
    request.direction = direction;
    for (const auto& decision : verdict.recipients) {
        for (const auto& rule : decision.rules)
            if (std::find(request.policy_rules.begin(), request.policy_rules.end(), rule) == request.policy_rules.end())
                request.policy_rules.push_back(rule);
        for (const auto& tag : decision.actions.tags)
            if (std::find(request.tags.begin(), request.tags.end(), tag) == request.tags.end()) request.tags.push_back(tag);
    }
    if (!request.policy_rules.empty()) request.decisions = policy::to_json(verdict)["recipients"];
    request.pgp = std::move(pgp);
    message_queue.commit(id, envelope, std::move(to_send), [finish](Status status) { finish(true, status); },
                         std::move(handling));
    archive->ingest(std::move(request), [finish](Result<archive::IngestResult> result) {
        finish(false, result ? Status::success() : Status(result.error()));
    });
}

// A rule's reject refuses the whole message with its text (5xx): after DATA one answer covers
// every recipient.
std::optional<Error> policy_refusal(const policy::Verdict& verdict) {
    for (const auto& decision : verdict.recipients)
        if (!decision.actions.reject.empty())
            return Error::permanent("policy.reject", decision.actions.reject);
    return std::nullopt;
}

// What the delivery engine is to do for each recipient (the queue keeps it).
std::vector<queue::Handling> handling_of(const policy::Verdict& verdict) {
    std::vector<queue::Handling> out;
    for (const auto& decision : verdict.recipients) {
        const policy::Actions& a = decision.actions;
        queue::Handling h;
        h.encrypt = a.encrypt;
        h.fallback = a.fallback;
        h.sign = a.sign;
        h.require_tls = a.require_tls;
        h.verified_key = a.verified_key;
        h.quarantine = a.quarantine;
        h.notify = a.notify;
        if (!a.encrypt_rule.empty()) h.rule = a.encrypt_rule;
        else if (!decision.rules.empty()) h.rule = decision.rules.front();
        out.push_back(std::move(h));
    }
    return out;
}

// The lines of the acceptance notice: one per recipient whose rules ask to notify the sender.
std::vector<std::string> notice_lines(const policy::Verdict& verdict) {
    std::vector<std::string> lines;
    for (const auto& decision : verdict.recipients) {
        const policy::Actions& a = decision.actions;
        if (!a.notify) continue;
        std::vector<std::string> what;
        if (a.quarantine) what.push_back("held for review by an administrator before it is sent");
        if (!a.encrypt.empty()) {
            std::string methods;
            for (const auto& m : a.encrypt) methods += (methods.empty() ? "" : " or ") + m;
            const std::string otherwise = a.fallback == "plain-tls" ? "sent only over a verified TLS connection"
                                          : a.fallback == "hold"    ? "held for an administrator"
                                                                    : "returned to you";
            what.push_back("encrypted with " + methods + " (if no method can reach this recipient: " + otherwise + ")");
        } else if (!a.fallback.empty()) {
            what.push_back(a.fallback == "plain-tls" ? "sent only over a verified TLS connection"
                           : a.fallback == "hold"    ? "held for an administrator"
                                                     : "returned to you");
        }
        if (a.sign) what.push_back("signed");
        if (a.require_tls) what.push_back("sent only over a verified TLS connection");
        if (!a.tags.empty()) {
            std::string tags;
            for (const auto& t : a.tags) tags += (tags.empty() ? "" : ", ") + t;
            what.push_back("labelled " + tags + " in the archive");
        }
        std::string line = "<" + decision.address + ">: ";
        for (std::size_t i = 0; i < what.size(); ++i) line += (i ? "; " : "") + what[i];
        if (what.empty()) line += "delivered as usual";
        std::string rules;
        for (const auto& r : decision.rules) rules += (rules.empty() ? "" : ", ") + r;
        line += " (policy: " + rules + ")";
        for (std::size_t i = 0; i < decision.evidence.size() && i < 3; ++i)
            line += (i ? "; " : ". Found: ") + decision.evidence[i].text;
        lines.push_back(std::move(line));
    }
    return lines;
}

}  // namespace

int run_serve(const std::string& config_path) {
    auto loaded = load_config(config_path);
    if (!loaded) {
        std::cerr << loaded.error().message << "\n";
        return 1;
    }
    auto loaded_policy = policy::Policy::load(config_path);
    if (!loaded_policy) {
        std::cerr << loaded_policy.error().message << "\n";
        return 1;
    }
    std::shared_ptr<const policy::Policy> active_policy = *loaded_policy;  // guarded by config_lock
    auto config = std::make_shared<const Config>(std::move(*loaded));
    if (auto logging = setup_logging(config->server.log_level); !logging) {
        std::cerr << logging.error().message << "\n";
        return 1;
    }

    std::error_code error;
    std::filesystem::create_directories(config->server.data_dir, error);
    if (error) {
        spdlog::error("serve: cannot create data directory {}: {}", config->server.data_dir, error.message());
        return 1;
    }
    chmod(config->server.data_dir.c_str(), 0700);

    auto queue = queue::Queue::open({(std::filesystem::path(config->server.data_dir) / "queue").string(),
                                     config->smtp.min_free_disk});
    if (!queue) {
        spdlog::error("serve: cannot open the queue: {}", queue.error().message);
        return 1;
    }

    std::unique_ptr<archive::Archive> archive_store;
    if (config->archive.enabled) {
        auto opened = archive::Archive::open(config->archive, archive::OpenMode::writer);
        if (!opened) {
            spdlog::error("serve: cannot open the archive: {}", opened.error().message);
            return 1;
        }
        archive_store = std::move(*opened);
    }
    // The search index follows the archive: its indexer drains the archive's durable index
    // queue on its own thread (Xapian never runs on the I/O threads).
    std::unique_ptr<search::IndexWriter> index_writer;
    std::unique_ptr<search::Indexer> indexer;
    if (archive_store && config->search.enabled) {
        auto opened = search::IndexWriter::open(config->search);
        if (!opened) {
            spdlog::error("serve: cannot open the search index: {}", opened.error().message);
            return 1;
        }
        index_writer = std::move(*opened);
        indexer = std::make_unique<search::Indexer>(config->search, *archive_store, *index_writer);
        indexer->start();
    }

    std::mutex config_lock;  // guards `config` across reloads
    unsigned io_threads = config->server.io_threads > 0 ? static_cast<unsigned>(config->server.io_threads)
                                                        : std::max(2u, std::thread::hardware_concurrency());
    asio::io_context io(static_cast<int>(io_threads));
    asio::thread_pool workers(worker_threads);

    delivery::Engine engine(io, **queue, config);
    // The gateway's OpenPGP keyring: what the policy's "pgp" and "sign" need at delivery.
    // Its gpg runs are forked from postvault-pgp workers next to this program, one per thread
    // the engine gives its Protector (gateway/crypto/gpg_engine.h): forking this process costs
    // far more.
    std::string pgp_worker = sibling_program("postvault-pgp");
    if (::access(pgp_worker.c_str(), X_OK) != 0) {
        spdlog::warn("pgp: {} is missing; gpg runs from the server process (slower)", pgp_worker);
        pgp_worker.clear();
    }
    auto opened_keyring = crypto::Keyring::open(config->pgp, pgp_worker, delivery::kProtectionThreads);
    if (!opened_keyring) {
        std::cerr << opened_keyring.error().message << "\n";
        return 1;
    }
    std::shared_ptr<crypto::Keyring> keyring = std::move(*opened_keyring);
    engine.set_protector([keyring, &config, &config_lock](
                             const Envelope& envelope, const std::string& recipient, const queue::Handling& handling,
                             const std::string& message) -> Result<delivery::Protection> {
        PgpConfig pgp;
        {
            std::lock_guard lock(config_lock);
            pgp = config->pgp;
        }
        auto made = crypto::protect(*keyring, pgp, envelope, recipient, handling, message);
        if (!made) return made.error();
        return delivery::Protection{std::move(made->message), std::move(made->method)};
    });
    queue::Queue& message_queue = **queue;
    archive::Archive* archive = archive_store.get();
    if (archive) {
        engine.set_outcome_observer([archive](const std::string& id, const std::vector<queue::RecipientStatus>& changes) {
            std::vector<archive::RecipientOutcome> outcomes;
            for (const auto& change : changes) {
                archive::RecipientOutcome outcome;
                outcome.address = change.address;
                outcome.state = queue::to_string(change.state);
                outcome.method = !change.method.empty()     ? change.method
                                 : change.tls_version.empty() ? "plain"
                                                              : "tls";
                outcome.reply = change.last_reply;
                outcome.remote_host = change.remote_host;
                outcome.tls_version = change.tls_version;
                outcome.tls_cipher = change.tls_cipher;
                outcome.time_unix = change.updated_unix;
                outcomes.push_back(std::move(outcome));
            }
            if (auto recorded = archive->record_outcomes(id, outcomes); !recorded)
                spdlog::error("qid={} archive: cannot record the outcome: {}", id, recorded.error().message);
        });
    }

    // Queue and archive in parallel; 250 when both have it (see the file comment).
    std::atomic<std::uint64_t> accepted_messages{0};
    auto relay_commit = [&message_queue, &workers, archive, &config, &config_mutex = config_lock, &accepted_messages,
                         &active_policy, &engine, keyring](const std::string& id, const Envelope& envelope,
                                                  std::string message, std::function<void(Status)> reply) {
        std::function<void(Status)> done = [reply = std::move(reply), &accepted_messages](Status status) {
            if (status.ok()) ++accepted_messages;
            reply(std::move(status));
        };
        // The policy reads the whole message (MIME, attachments): on the worker pool.
        asio::post(workers, [&, id, envelope, message = std::move(message), done = std::move(done)]() mutable {
            std::shared_ptr<const policy::Policy> current;
            std::string direction;
            std::string reporting_mta;
            {
                std::lock_guard lock(config_mutex);
                current = active_policy;
                reporting_mta = config->server.hostname;
                const auto& local = config->smtp.local_domains;
                const bool all_local = !envelope.recipients.empty() &&
                    std::all_of(envelope.recipients.begin(), envelope.recipients.end(), [&](const std::string& rcpt) {
                        return std::find(local.begin(), local.end(), domain_of(rcpt)) != local.end();
                    });
                direction = all_local ? "inbound" : "outbound";
            }
            const policy::Verdict verdict =
                current->evaluate(policy::Envelope{envelope.mail_from, envelope.recipients, direction}, message);
            if (auto refusal = policy_refusal(verdict)) {
                spdlog::info("qid={} policy: refused: {}", id, refusal->message);
                done(*refusal);
                return;
            }
            std::string to_send = verdict.strip_subject_tag ? current->without_subject_tag(message) : message;
            // Mail for the local domains: decrypted and its signature checked when it is OpenPGP.
            nlohmann::json pgp;
            if (direction == "inbound") {
                crypto::Inbound inbound = crypto::process_inbound(*keyring, to_send);
                to_send = std::move(inbound.message);
                pgp = std::move(inbound.record);
                if (!pgp.is_null()) spdlog::info("qid={} pgp: {}", id, pgp.dump());
            }
            auto lines = notice_lines(verdict);
            if (!lines.empty() && !envelope.mail_from.empty()) {
                // Once the message itself is safe, tell the sender what the policy does with it.
                delivery::NoticeRequest notice;
                notice.reporting_mta = reporting_mta;
                notice.queue_id = id;
                notice.original = envelope;
                notice.original_message = message;
                notice.lines = std::move(lines);
                notice.now_unix = envelope.received_unix;
                auto built = delivery::build_notice(notice);
                if (!built) spdlog::error("qid={} cannot build the policy notice: {}", id, built.error().message);
                else
                    done = [done = std::move(done), built = std::make_shared<delivery::Dsn>(std::move(*built)),
                            &message_queue, &engine, id](Status status) {
                        if (status.ok()) {
                            const std::string notice_id = queue::make_queue_id();
                            message_queue.commit(notice_id, built->envelope, built->message,
                                                 [&engine, notice_id, id](Status queued) {
                                                     if (queued.ok()) {
                                                         spdlog::info("qid={} policy notice to the sender: qid={}", id,
                                                                      notice_id);
                                                         engine.enqueue(notice_id);
                                                     } else {
                                                         spdlog::error("qid={} cannot queue the policy notice: {}", id,
                                                                       queued.error().message);
                                                     }
                                                 });
                        }
                        done(std::move(status));
                    };
            }
            commit_message(message_queue, workers, archive, id, envelope, std::move(message), std::move(to_send),
                           direction, verdict, handling_of(verdict), std::move(pgp), std::move(done));
        });
    };
    smtp::Server::Sink relay_sink;
    relay_sink.commit = relay_commit;
    relay_sink.has_room = [&message_queue] { return message_queue.disk_has_room(); };
    relay_sink.committed = [&engine](const std::string& queue_id) { engine.enqueue(queue_id); };
    // Rules on the addresses alone refuse a recipient at RCPT: the others of the message still go.
    relay_sink.refuse_recipient = [&config_lock, &active_policy](const std::string& mail_from,
                                                                 const std::string& recipient) -> std::optional<std::string> {
        std::shared_ptr<const policy::Policy> current;
        {
            std::lock_guard lock(config_lock);
            current = active_policy;
        }
        auto refusal = current->refusal_at_rcpt(mail_from, recipient);
        if (!refusal) return std::nullopt;
        spdlog::info("policy: refused <{}> from <{}> at RCPT: rule {}: {}", recipient, mail_from, refusal->rule,
                     refusal->text);
        return refusal->text;
    };
    smtp::Server server(io, workers, relay_sink, config);

    // The journal listener only archives (BCC or Exchange journal copies).
    std::unique_ptr<smtp::Server> journal_server;
    if (archive && !config->archive.journal_listen.empty()) {
        smtp::Server::Sink journal_sink;
        journal_sink.commit = [archive, &workers](const std::string& id, const Envelope& envelope, std::string message,
                                                  std::function<void(Status)> done) {
            asio::post(workers, [archive, id, envelope, message = std::move(message), done = std::move(done)]() mutable {
                archive::IngestRequest request = archive::journal_request(std::move(message), envelope);
                request.id = id;
                archive->ingest(std::move(request), [done](Result<archive::IngestResult> result) {
                    done(result ? Status::success() : Status(result.error()));
                });
            });
        };
        journal_sink.has_room = [&message_queue] { return message_queue.disk_has_room(); };
        journal_server = std::make_unique<smtp::Server>(io, workers, journal_sink, config, smtp::Server::Role::journal);
    }

    auto reload = [&]() -> Status {
        auto fresh = load_config(config_path);
        if (!fresh) {
            spdlog::error("serve: reload refused, keeping the running configuration:\n{}", fresh.error().message);
            return fresh.error();
        }
        auto fresh_policy = policy::Policy::load(config_path);
        if (!fresh_policy) {
            spdlog::error("serve: reload refused, keeping the running configuration and policy:\n{}",
                          fresh_policy.error().message);
            return fresh_policy.error();
        }
        auto next = std::make_shared<const Config>(std::move(*fresh));
        std::lock_guard lock(config_lock);
        (void)setup_logging(next->server.log_level);
        server.reload(next);
        if (journal_server) journal_server->reload(next);
        engine.reload(next);
        config = next;
        active_policy = *fresh_policy;
        spdlog::info("serve: configuration reloaded from {} ({} policy rules)", config_path, active_policy->rule_count());
        return Status::success();
    };

    control::Handlers handlers;
    handlers.queue = queue->get();
    handlers.delivery = &engine;
    handlers.reload = reload;
    handlers.status = [&]() {
        auto stats = engine.stats();
        return nlohmann::json{{"smtp_sessions", server.active_sessions()},
                              {"delivery_connections", stats.active_connections},
                              {"scheduled_messages", stats.scheduled_messages},
                              {"delivered", stats.delivered},
                              {"deferred", stats.deferred},
                              {"bounced", stats.bounced}};
    };
    if (archive) handlers.commands = archive_control_commands(*archive);
    if (indexer && handlers.commands.count("archive.compact")) {
        // `archive compact` through the server compacts the search index as well.
        auto repack = handlers.commands["archive.compact"];
        handlers.commands["archive.compact"] = [repack, &indexer](const nlohmann::json& request) -> nlohmann::json {
            nlohmann::json answer = repack(request);
            if (!answer.value("ok", false)) return answer;
            auto bytes = indexer->compact();
            if (!bytes) return control::error_json(bytes.error());
            answer["message"] = answer.value("message", std::string()) + "; search index compacted: " +
                                std::to_string(*bytes) + " bytes";
            return answer;
        };
    }
    if (indexer)
        handlers.commands["search.reindex"] = [&indexer](const nlohmann::json&) -> nlohmann::json {
            auto done = indexer->reindex({});
            if (!done) return control::error_json(done.error());
            return {{"ok", true}, {"messages", *done}};
        };
    // The audit API: HTTPS on [api] listen, its blocking work (Xapian, RocksDB) on its own
    // pool so that searches never hold up SMTP.
    std::unique_ptr<api::TokenStore> tokens;
    if (archive) {
        tokens = std::make_unique<api::TokenStore>(config->api.tokens_file);
        for (auto& [name, command] : token_control_commands(*tokens, *archive)) handlers.commands[name] = command;
    }
    // Searches are CPU work, and a call's audit record waits for its fsync without holding a
    // thread (ApiService::handle): two threads per core. More share the cores less evenly and
    // lengthen the slowest answers (docs/benchmarks.md, Audit API).
    asio::thread_pool api_workers(2 * std::max(2u, std::thread::hardware_concurrency()));
    std::unique_ptr<api::ApiService> api_service;
    std::unique_ptr<api::HttpServer> api_server;
    if (archive && !config->api.listen.empty()) {
        TlsConfig api_tls = config->tls;
        api_tls.cert = config->api.cert;
        api_tls.key = config->api.key;
        auto context = smtp::make_server_tls_context(api_tls);
        if (!context) {
            spdlog::error("serve: api: {}", context.error().message);
            return 1;
        }
        api::ApiContext api_context;
        api_context.config = *config;
        api_context.archive = archive;
        api_context.tokens = tokens.get();
        api_context.wkd_domains = config->smtp.local_domains;
        api_context.wkd_keys = [keyring](const std::string& domain, const std::string& hash) {
            return keyring->wkd_keys(domain, hash);
        };
        api_context.gateway_metrics = [&server, &engine, &accepted_messages]() {
            const auto stats = engine.stats();
            std::string out;
            auto metric = [&out](const char* name, const char* type, const char* help, std::uint64_t value) {
                out += std::string("# HELP ") + name + " " + help + "\n# TYPE " + name + " " + type + "\n" + name + " " +
                       std::to_string(value) + "\n";
            };
            metric("postvault_queue_messages", "gauge", "Messages in the queue waiting for delivery.",
                   stats.scheduled_messages);
            metric("postvault_smtp_sessions", "gauge", "Open SMTP sessions.", server.active_sessions());
            metric("postvault_messages_accepted_total", "counter", "Messages accepted by SMTP (queued and archived).",
                   accepted_messages.load());
            metric("postvault_delivery_connections", "gauge", "Open delivery connections.", stats.active_connections);
            out += "# HELP postvault_recipients_total Recipients by delivery outcome.\n"
                   "# TYPE postvault_recipients_total counter\n";
            out += "postvault_recipients_total{outcome=\"delivered\"} " + std::to_string(stats.delivered) + "\n";
            out += "postvault_recipients_total{outcome=\"deferred\"} " + std::to_string(stats.deferred) + "\n";
            out += "postvault_recipients_total{outcome=\"bounced\"} " + std::to_string(stats.bounced) + "\n";
            out += "# HELP postvault_delivered_by_method_total Recipients delivered, by how the message was protected.\n"
                   "# TYPE postvault_delivered_by_method_total counter\n";
            for (const auto& [method, count] : stats.delivered_by_method)
                out += "postvault_delivered_by_method_total{method=\"" + method + "\"} " + std::to_string(count) + "\n";
            return out;
        };
        api_service = std::make_unique<api::ApiService>(std::move(api_context));
        api_server = std::make_unique<api::HttpServer>(io, api_workers, *context, config->api, *api_service);
    }

    // Control requests (a long archive import among them) get their own threads, so they
    // never hold up the workers that SMTP sessions wait on.
    asio::thread_pool control_workers(2);
    control::ControlServer control_server(io, control_workers, handlers);

    // Signals are caught from before the first listener opens: a SIGHUP sent as soon as the
    // port answers waits in the set instead of killing the process with the default action.
    asio::signal_set signals(io, SIGTERM, SIGINT, SIGHUP);
    if (auto started = server.start(); !started) {
        spdlog::error("serve: {}", started.error().message);
        return 1;
    }
    if (journal_server) {
        if (auto started = journal_server->start(); !started) {
            spdlog::error("serve: journal listener: {}", started.error().message);
            return 1;
        }
    }
    if (auto started = control_server.start(config->server.control_socket); !started) {
        spdlog::error("serve: {}", started.error().message);
        return 1;
    }
    if (api_server) {
        if (auto started = api_server->start(); !started) {
            spdlog::error("serve: {}", started.error().message);
            return 1;
        }
    }
    engine.start();
    spdlog::info("serve: postvault ready (hostname={} data_dir={} control={})", config->server.hostname,
                 config->server.data_dir, config->server.control_socket);

    // Background repack of new messages into strongly compressed packs.
    asio::steady_timer repack_timer(io);
    std::uint64_t compacted_documents = 0;
    std::function<void()> schedule_repack;
    schedule_repack = [&] {
        const auto interval = config->archive.repack_interval;
        if (!archive || interval.count() == 0 || config->archive.mode != "cleartext") return;
        repack_timer.expires_after(interval);
        repack_timer.async_wait([&](const boost::system::error_code& error) {
            if (error) return;
            asio::post(workers, [&] {
                auto packed = archive->compact({}, false);
                if (!packed && packed.error().code != "archive.busy")
                    spdlog::error("archive: repack failed: {}", packed.error().message);
                else if (packed && *packed > 0)
                    spdlog::info("archive: repacked {} message(s)", *packed);
                // The index too, once it has grown by a tenth since it was last compacted:
                // Xapian's own commits leave its blocks part empty.
                if (indexer && indexer->document_count() >= compacted_documents + compacted_documents / 10 + 1) {
                    auto bytes = indexer->compact();
                    if (!bytes) spdlog::error("search: compacting the index failed: {}", bytes.error().message);
                    else spdlog::info("search: index compacted to {} bytes", *bytes);
                    compacted_documents = indexer->document_count();
                }
                asio::post(io, schedule_repack);
            });
        });
    };
    schedule_repack();

    std::function<void(const boost::system::error_code&, int)> on_signal;
    bool stopping = false;
    on_signal = [&](const boost::system::error_code& signal_error, int signal_number) {
        if (signal_error) return;
        if (signal_number == SIGHUP) {
            asio::post(workers, [&] { (void)reload(); });
            signals.async_wait(on_signal);
            return;
        }
        if (stopping) {
            // A second signal: stop now. Acknowledged mail is already durable.
            spdlog::warn("serve: signal {} received again, stopping without draining", signal_number);
            io.stop();
            return;
        }
        stopping = true;
        signals.async_wait(on_signal);
        spdlog::info("serve: signal {} received, draining", signal_number);
        control_server.stop();
        if (api_server) api_server->stop();
        repack_timer.cancel();
        if (journal_server) journal_server->stop(smtp_drain_grace, [] {});
        server.stop(smtp_drain_grace, [&] {
            engine.stop(delivery_drain_grace, [&] {
                spdlog::info("serve: stopped");
                io.stop();
            });
        });
    };
    signals.async_wait(on_signal);

    std::vector<std::thread> threads;
    for (unsigned i = 1; i < io_threads; ++i) threads.emplace_back([&io] { io.run(); });
    io.run();
    for (auto& thread : threads) thread.join();
    control_workers.join();
    api_workers.join();
    workers.join();
    if (indexer) indexer->stop();
    return 0;
}

}  // namespace postvault::app
