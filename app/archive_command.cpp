// app/archive_command.cpp — `postvault archive ...` and the archive's control commands.
//
// A command opens the archive itself when no server holds it. While `postvault serve`
// runs on the same data, commands that write or must be on the record (import, get,
// compact, rotate-key, backup) go through the server's control socket, and read-only
// ones (list, show, stats, verify, prove) open a secondary, read-only handle next to
// it; restore needs the server stopped and says so.
#include <pwd.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <mutex>
#include <cstdio>
#include <iostream>

#include <nlohmann/json.hpp>

#include "app/commands.h"
#include "app/progress.h"
#include "archive/archive.h"
#include "archive/escrow.h"
#include "archive/importer.h"
#include "search/index.h"
#include "common/base64.h"
#include "common/config.h"
#include "gateway/control/control.h"

namespace postvault::app {

std::string cli_actor() {
    const passwd* user = ::getpwuid(::geteuid());
    return std::string("cli:") + (user ? user->pw_name : std::to_string(::geteuid()));
}

namespace {

int fail(const std::string& message) {
    std::cerr << "postvault: " << message << "\n";
    return 1;
}

int fail(const Error& error) { return fail(error.message); }

void print_summary(const archive::ImportSummary& summary, double seconds) {
    for (const auto& failure : summary.failures) std::cerr << "failed: " << failure << "\n";
    if (summary.resumed) std::cout << "already imported by an earlier run: " << summary.resumed << "\n";
    if (summary.flagged) std::cout << "malformed, kept as is and flagged: " << summary.flagged << "\n";
    std::cout << "bytes: " << summary.bytes;
    if (seconds > 0)
        std::cout << ", " << static_cast<std::uint64_t>((summary.imported + summary.duplicates) / seconds)
                  << " messages/s";
    std::cout << "\n";
    std::cout << "imported " << summary.imported << ", duplicates " << summary.duplicates << ", failed "
              << summary.failed << "\n";
}

archive::ImportSummary summary_from_json(const nlohmann::json& j) {
    archive::ImportSummary summary;
    summary.imported = j.value("imported", std::uint64_t{0});
    summary.duplicates = j.value("duplicates", std::uint64_t{0});
    summary.resumed = j.value("resumed", std::uint64_t{0});
    summary.failed = j.value("failed", std::uint64_t{0});
    summary.flagged = j.value("flagged", std::uint64_t{0});
    summary.bytes = j.value("bytes", std::uint64_t{0});
    summary.failures = j.value("failures", std::vector<std::string>{});
    return summary;
}

nlohmann::json summary_to_json(const archive::ImportSummary& summary) {
    return {{"imported", summary.imported}, {"duplicates", summary.duplicates}, {"resumed", summary.resumed},
            {"failed", summary.failed},     {"flagged", summary.flagged},       {"bytes", summary.bytes},
            {"failures", summary.failures}};
}

Result<std::shared_ptr<archive::EscrowDecryptor>> load_escrow_key(const std::string& path) {
    if (path.empty()) return std::shared_ptr<archive::EscrowDecryptor>();
    auto decryptor = archive::EscrowDecryptor::open(path);
    if (!decryptor) return decryptor.error();
    return std::make_shared<archive::EscrowDecryptor>(std::move(*decryptor));
}

void print_verify(const archive::VerifyReport& report) {
    for (const auto& note : report.notes) std::cout << "note: " << note << "\n";
    std::cout << "chain entries: " << report.entries << ", checkpoints: " << report.checkpoints
              << ", messages: " << report.messages << ", contents checked: " << report.contents_checked << "\n";
    if (report.ok) {
        std::cout << "archive intact\n";
        return;
    }
    std::cout << "ARCHIVE DAMAGED: " << report.problems.size() << " problem(s); the first break:\n";
    for (const auto& problem : report.problems) std::cout << "  " << problem << "\n";
}

}  // namespace

int run_archive(const ArchiveCommand& command) {
    auto loaded = load_config(command.config_path);
    if (!loaded) return fail(loaded.error());
    const Config& config = *loaded;
    const std::string& action = command.action;
    const std::string actor = cli_actor();

    if (action == "restore") {
        if (control::send_request(config.server.control_socket, {{"command", "status"}}, std::chrono::seconds(5)))
            return fail("the archive is in use by the running server: stop it before `archive restore`");
        auto restored = archive::Archive::restore(config.archive, command.path);
        if (!restored) return fail(restored.error());
        auto opened = archive::Archive::open(config.archive, archive::OpenMode::reader);
        if (!opened) return fail(opened.error());
        auto report = (*opened)->verify();
        print_verify(report);
        std::cout << "restored " << config.archive.directory << " from " << command.path << "\n";
        return report.ok ? 0 : 1;
    }

    // Reading commands never take the writer's place (an import or the server may start
    // at any moment): they read a secondary handle.
    const bool read_only = action == "list" || action == "show" || action == "stats" || action == "verify";
    Result<std::unique_ptr<archive::Archive>> writer =
        read_only ? Result<std::unique_ptr<archive::Archive>>(Error::permanent("archive.in_use", "reading"))
                  : archive::Archive::open(config.archive, archive::OpenMode::writer);
    const bool server_running = !read_only && !writer && writer.error().code == "archive.in_use";
    if (!writer && !server_running && !read_only) return fail(writer.error());

    if (server_running) {
        // Through the server: what must be recorded, or writes.
        if (action == "import" || action == "get" || action == "compact" || action == "rotate-key" ||
            action == "backup") {
            nlohmann::json request = {{"command", "archive." + action}, {"actor", actor}};
            std::error_code ignored;
            if (action == "import") {
                request["format"] = command.format;
                request["path"] = std::filesystem::absolute(command.path, ignored).string();
                std::cerr << "postvault: the server is running; importing through it\n";
            } else if (action == "backup") {
                request["path"] = std::filesystem::absolute(command.path, ignored).string();
            } else if (action == "get") {
                request["id"] = command.id;
                if (!command.escrow_key.empty())
                    request["escrow_key"] = std::filesystem::absolute(command.escrow_key, ignored).string();
            }
            const auto started = std::chrono::steady_clock::now();
            auto response = control::send_request(config.server.control_socket, request,
                                                  std::chrono::hours(action == "get" ? 1 : 24 * 7));
            if (!response && response.error().code == "control.connect")
                return fail("the archive " + config.archive.directory +
                            " is in use by another postvault process (an import, or a server whose control "
                            "socket " + config.server.control_socket + " cannot be reached); try again when it ends");
            if (!response) return fail(response.error());
            if (!response->value("ok", false))
                return fail((*response)["error"].value("message", std::string("request failed")));
            if (action == "get") {
                auto bytes = decode_base64((*response)["bytes"].get<std::string>());
                if (!bytes) return fail("the server's answer is not valid base64");
                std::cout.write(bytes->data(), static_cast<std::streamsize>(bytes->size()));
                return std::cout.good() ? 0 : 1;
            }
            if (action == "import") {
                const double seconds =
                    std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
                auto summary = summary_from_json((*response)["summary"]);
                print_summary(summary, seconds);
                return summary.failed ? 1 : 0;
            }
            std::cout << response->value("message", std::string("done")) << "\n";
            return 0;
        }
        if (action != "prove")
            return fail("the archive is in use by the running server: stop it before `archive " + action + "`");
        // Have the server sign a checkpoint over everything so far, so the proof can cover
        // a message archived a moment ago.
        auto signed_now = control::send_request(config.server.control_socket, {{"command", "archive.checkpoint"}});
        if (!signed_now || !signed_now->value("ok", false))
            std::cerr << "postvault: the server could not sign a checkpoint now; using the latest one\n";
    }

    std::unique_ptr<archive::Archive> owned;
    if (writer) owned = std::move(*writer);
    else {
        auto reader = archive::Archive::open(config.archive, archive::OpenMode::reader);
        if (!reader) return fail(reader.error());
        owned = std::move(*reader);
    }
    archive::Archive& store = *owned;
    auto escrow = load_escrow_key(command.escrow_key);
    if (!escrow) return fail(escrow.error());
    if (*escrow) store.set_escrow_decryptor(*escrow);

    if (action == "import") {
        auto format = archive::parse_import_format(command.format);
        if (!format) return fail(format.error());
        // No server: this process is the index's writer too, indexing while it imports.
        std::unique_ptr<search::IndexWriter> index_writer;
        std::unique_ptr<search::Indexer> indexer;
        if (config.search.enabled) {
            auto opened_index = search::IndexWriter::open(config.search);
            if (!opened_index) return fail(opened_index.error());
            index_writer = std::move(*opened_index);
            indexer = std::make_unique<search::Indexer>(config.search, store, *index_writer);
            indexer->start();
        }
        ProgressBar bar("importing");
        const auto started = std::chrono::steady_clock::now();
        auto summary = archive::import_collection(store, *format, command.path, actor,
                                                  [&bar](const archive::ImportProgress& p) {
                                                      bar.update(p.bytes_done, p.bytes_total, p.items);
                                                  });
        bar.finish();
        if (!summary) return fail(summary.error());
        const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
        if (indexer) {
            store.start_flush();  // alongside the index's last merge
            indexer->stop();
            if (auto drained = indexer->drain(); !drained) return fail(drained.error());
            const double total = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
            std::cout << "indexed " << indexer->indexed() << " queue entries; " << index_writer->document_count()
                      << " messages in the search index (" << static_cast<std::uint64_t>(
                             total > 0 ? static_cast<double>(summary->imported + summary->duplicates) / total : 0)
                      << " messages/s with indexing)\n";
        }
        print_summary(*summary, seconds);  // last: scripts read its final line
        return summary->failed ? 1 : 0;
    }
    if (action == "list") {
        for (const auto& message : store.list(command.limit)) std::cout << message.id << '\t' << message.sha256 << '\n';
        return 0;
    }
    if (action == "show") {
        auto record = store.metadata(command.id);
        if (!record) return fail(record.error());
        std::cout << record->dump(2, ' ', false, nlohmann::json::error_handler_t::replace) << "\n";
        return 0;
    }
    if (action == "get") {
        auto bytes = store.get(command.id, actor);
        if (!bytes) return fail(bytes.error());
        std::cout.write(bytes->data(), static_cast<std::streamsize>(bytes->size()));
        return std::cout.good() ? 0 : 1;
    }
    if (action == "stats") {
        auto stats = store.stats();
        if (!stats) return fail(stats.error());
        const double ratio = stats->raw_bytes ? static_cast<double>(stats->stored_bytes) / stats->raw_bytes : 0.0;
        std::cout << "messages: " << stats->messages << "\n"
                  << "raw bytes: " << stats->raw_bytes << "\n"
                  << "stored bytes: " << stats->stored_bytes << "\n"
                  << "stored/raw: " << ratio << "\n"
                  << "content bytes: " << stats->content_bytes << "\n"
                  << "packed messages: " << stats->packed_messages << "\n"
                  << "attachments stored once: " << stats->leaves << " (referenced " << stats->leaf_references
                  << " times)\n"
                  << "chain entries: " << stats->chain_entries << "\n"
                  << "signed checkpoints: " << stats->checkpoints << "\n";
        return 0;
    }
    if (action == "verify") {
        ProgressBar bar("verifying");
        auto report = store.verify([&bar](std::uint64_t done, std::uint64_t total) { bar.update(done, total, done); });
        bar.finish();
        print_verify(report);
        return report.ok ? 0 : 1;
    }
    if (action == "prove") {
        auto proof = store.prove(command.id);
        if (!proof) return fail(proof.error());
        std::cout << *proof << "\n";
        return 0;
    }
    if (action == "compact") {
        ProgressBar bar("repacking");
        auto packed = store.compact([&bar](std::uint64_t done, std::uint64_t total) { bar.update(done, total, done); });
        bar.finish();
        if (!packed) return fail(packed.error());
        std::cout << "repacked " << *packed << " message(s)\n";
        // The search index too (no server runs, so this process may write it).
        if (config.search.enabled && std::filesystem::exists(config.search.directory)) {
            auto index = search::IndexWriter::open(config.search);
            if (!index) return fail(index.error());
            auto bytes = (*index)->compact();
            if (!bytes) return fail(bytes.error());
            std::cout << "search index compacted: " << *bytes << " bytes\n";
        }
        return 0;
    }
    if (action == "rotate-key") {
        auto id = store.rotate_key(actor);
        if (!id) return fail(id.error());
        std::cout << "new key-encryption key " << *id << " in " << config.archive.key_file
                  << "; earlier keys stay for reading\n";
        return 0;
    }
    if (action == "backup") {
        if (auto done = store.backup(command.path); !done) return fail(done.error());
        std::cout << "backup written and verified in " << command.path << "\n"
                  << "keep " << config.archive.key_file << " and " << config.archive.signing_key
                  << " safe separately: the backup cannot be read without them\n";
        return 0;
    }
    return fail("unknown archive command '" + action + "'");
}

std::map<std::string, std::function<nlohmann::json(const nlohmann::json&)>> archive_control_commands(
    archive::Archive& store) {
    std::map<std::string, std::function<nlohmann::json(const nlohmann::json&)>> commands;
    auto escrow_mutex = std::make_shared<std::mutex>();
    commands["archive.get"] = [&store, escrow_mutex](const nlohmann::json& request) -> nlohmann::json {
        const std::string actor = request.value("actor", std::string("control"));
        auto escrow = load_escrow_key(request.value("escrow_key", std::string()));
        if (!escrow) return control::error_json(escrow.error());
        // An escrow key is presented for one request only: every get sets its own (or
        // none) under the lock, so no request reads with another's key.
        std::lock_guard lock(*escrow_mutex);
        store.set_escrow_decryptor(*escrow);
        auto bytes = store.get(request.value("id", std::string()), actor);
        store.set_escrow_decryptor(nullptr);
        if (!bytes) return control::error_json(bytes.error());
        return {{"ok", true}, {"bytes", encode_base64(*bytes)}};
    };
    commands["archive.checkpoint"] = [&store](const nlohmann::json&) -> nlohmann::json {
        if (auto signed_now = store.checkpoint_now(); !signed_now) return control::error_json(signed_now.error());
        return {{"ok", true}, {"message", "checkpoint signed"}};
    };
    commands["archive.compact"] = [&store](const nlohmann::json&) -> nlohmann::json {
        auto packed = store.compact({}, true);
        if (!packed) return control::error_json(packed.error());
        return {{"ok", true}, {"message", "repacked " + std::to_string(*packed) + " message(s)"}};
    };
    commands["archive.rotate-key"] = [&store](const nlohmann::json& request) -> nlohmann::json {
        auto id = store.rotate_key(request.value("actor", std::string("control")));
        if (!id) return control::error_json(id.error());
        return {{"ok", true}, {"message", "new key-encryption key " + *id + "; earlier keys stay for reading"}};
    };
    commands["archive.backup"] = [&store](const nlohmann::json& request) -> nlohmann::json {
        const std::string path = request.value("path", std::string());
        if (auto done = store.backup(path); !done) return control::error_json(done.error());
        return {{"ok", true}, {"message", "backup written and verified in " + path}};
    };
    auto importing = std::make_shared<std::atomic<bool>>(false);
    commands["archive.import"] = [&store, importing](const nlohmann::json& request) -> nlohmann::json {
        auto format = archive::parse_import_format(request.value("format", std::string()));
        if (!format) return control::error_json(format.error());
        if (importing->exchange(true))
            return control::error_json(
                Error::temporary("archive.busy", "another import is running through the server; try again when it ends"));
        struct Done {
            std::atomic<bool>& flag;
            ~Done() { flag = false; }
        } done{*importing};
        auto summary = archive::import_collection(store, *format, request.value("path", std::string()),
                                                  request.value("actor", std::string("control")));
        if (!summary) return control::error_json(summary.error());
        return {{"ok", true}, {"summary", summary_to_json(*summary)}};
    };
    return commands;
}

}  // namespace postvault::app
