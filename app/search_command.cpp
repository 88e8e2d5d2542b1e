// app/search_command.cpp — `postvault search` in postvault-core: results (with snippets read
// from the archive), `search reindex` and `search report`. `--count` is search_count.cpp.
//
// Results and reports only read (the index through Xapian's reader, the archive through its
// secondary handle), so they work beside a running server. `reindex` writes the index: while
// the server runs it asks the server (the index's one writer) over the control socket;
// otherwise it opens the archive and the index itself.
#include <ctime>
#include <fstream>
#include <iostream>

#include <nlohmann/json.hpp>

#include "app/progress.h"
#include "app/search_cli.h"
#include "archive/archive.h"
#include "archive/escrow.h"
#include "audit-api/holds.h"
#include "common/config.h"
#include "gateway/control/control.h"
#include "search/extract.h"
#include "search/index.h"
#include "search/result_json.h"
#include "search/searcher.h"

namespace postvault::app {

int search_failure(const Error& error);  // search_count.cpp

namespace {

int fail(const std::string& message) {
    std::cerr << "postvault: " << message << "\n";
    return 1;
}

std::string dump(const nlohmann::json& j, int indent = -1) {
    return j.dump(indent, ' ', false, nlohmann::json::error_handler_t::replace);
}

// The archive's read-only handle, opened on first use: texts for snippets and the legal holds
// that hold:NAME searches for.
class ArchiveReader {
public:
    ArchiveReader(const Config& config, const std::string& escrow_key) : config_(config), escrow_key_(escrow_key) {}

    archive::Archive* archive() {
        if (!opened_) {
            opened_ = true;
            auto opened = archive::Archive::open(config_.archive, archive::OpenMode::reader);
            if (opened) {
                archive_ = std::move(*opened);
                if (!escrow_key_.empty()) {
                    auto decryptor = archive::EscrowDecryptor::open(escrow_key_);
                    if (decryptor)
                        archive_->set_escrow_decryptor(
                            std::make_shared<archive::EscrowDecryptor>(std::move(*decryptor)));
                }
            }
        }
        return archive_.get();
    }

    Result<std::shared_ptr<const std::string>> text(const std::string& id) {
        if (!archive()) return Error::temporary("archive.closed", "the archive cannot be read");
        auto bytes = archive_->content(id);
        if (!bytes) return bytes.error();
        return std::make_shared<const std::string>(search::searchable_text(search::extract_message(*bytes)));
    }

    std::optional<std::string> hold_query(const std::string& name) {
        if (!archive()) return std::nullopt;
        return api::Holds(*archive_).active_query(name);
    }

private:
    const Config& config_;
    std::string escrow_key_;
    bool opened_ = false;
    std::unique_ptr<archive::Archive> archive_;
};

int run_query(const Config& config, const SearchCommand& command) {
    if (command.query.empty()) {
        std::cerr << "postvault: a query is needed (`*` matches every message)\n";
        return 2;
    }
    auto searcher = search::Searcher::open(config.search.directory, config.search.language);
    if (!searcher) return search_failure(searcher.error());
    search::SearchRequest request;
    request.query = command.query;
    request.exact = command.exact;
    request.limit = command.limit;
    request.sort = command.sort;
    request.cursor = command.cursor;
    request.facets = command.facets;
    request.html = command.html;
    ArchiveReader reader(config, command.escrow_key);
    (*searcher)->set_hold_queries([&reader](const std::string& name) { return reader.hold_query(name); });
    auto result = (*searcher)->search(request, [&reader](const std::string& id) { return reader.text(id); });
    if (!result) return search_failure(result.error());

    if (command.json) {
        std::cout << search::result_json(*result) << "\n";
        return 0;
    }
    for (const auto& hit : result->hits) {
        std::cout << search::iso_date(hit.date).substr(0, 10) << "  " << hit.id << "  " << hit.from << "\n"
                  << "    " << hit.subject << "\n";
        if (!hit.snippet.empty()) {
            std::string snippet = hit.snippet;
            for (char& c : snippet)
                if (c == '\n' || c == '\r' || c == '\t') c = ' ';
            std::cout << "    " << snippet << "\n";
        }
    }
    if (result->facets) {
        auto print = [](const char* name, const search::FacetCounts& counts) {
            std::cout << name << ":";
            for (const auto& [value, count] : counts) std::cout << "  " << value << " " << count;
            std::cout << "\n";
        };
        print("sender domains", result->facets->sender_domains);
        print("recipient domains", result->facets->recipient_domains);
        print("months", result->facets->months);
        print("methods", result->facets->methods);
    }
    if (!result->next_cursor.empty()) std::cout << "next page: --cursor " << result->next_cursor << "\n";
    std::cout << result->total << " message(s)\n";
    return 0;
}

std::string csv_field(const std::string& value) {
    if (value.find_first_of(",\"\n\r") == std::string::npos) return value;
    std::string out = "\"";
    for (char c : value) {
        if (c == '"') out += '"';
        out += c;
    }
    return out + "\"";
}

int run_report(const Config& config, const SearchCommand& command) {
    std::vector<std::string> queries;
    {
        std::ifstream file;
        std::istream* in = &std::cin;
        if (command.terms_file != "-") {
            file.open(command.terms_file);
            if (!file) return fail("cannot read " + command.terms_file);
            in = &file;
        }
        std::string line;
        while (std::getline(*in, line)) {
            while (!line.empty() && (line.back() == '\r' || line.back() == ' ')) line.pop_back();
            if (line.empty() || line[0] == '#') continue;
            queries.push_back(line);
        }
    }
    if (queries.empty()) return fail("no query in " + command.terms_file);
    auto searcher = search::Searcher::open(config.search.directory, config.search.language);
    if (!searcher) return search_failure(searcher.error());
    auto report = (*searcher)->term_report(queries, command.exact);
    if (!report) return search_failure(report.error());
    bool bad = false;
    if (command.json) {
        for (const auto& row : report->rows) bad = bad || !row.error.empty();
        std::cout << dump(search::report_json(*report), 2) << "\n";
    } else {
        std::cout << "query,hits,unique_hits,hits_with_family,error\n";
        for (const auto& row : report->rows) {
            std::cout << csv_field(row.query) << ',' << row.hits << ',' << row.unique_hits << ','
                      << row.hits_with_family << ',' << csv_field(row.error) << "\n";
            bad = bad || !row.error.empty();
        }
        std::cout << "(any query)," << report->total_distinct << ",," << report->total_with_family << ",\n";
    }
    return bad ? 2 : 0;
}

int run_reindex(const Config& config, const SearchCommand& command) {
    auto opened = archive::Archive::open(config.archive, archive::OpenMode::writer);
    if (!opened && opened.error().code == "archive.in_use") {
        std::cerr << "postvault: the server is running; reindexing through it\n";
        auto response = control::send_request(config.server.control_socket, {{"command", "search.reindex"}},
                                              std::chrono::hours(24 * 7));
        if (!response) return fail(response.error().message);
        if (!response->value("ok", false))
            return fail((*response)["error"].value("message", std::string("reindex failed")));
        std::cout << "reindexed " << response->value("messages", std::uint64_t{0}) << " messages\n";
        return 0;
    }
    if (!opened) return fail(opened.error().message);
    archive::Archive& store = **opened;
    if (!command.escrow_key.empty()) {
        auto decryptor = archive::EscrowDecryptor::open(command.escrow_key);
        if (!decryptor) return fail(decryptor.error().message);
        store.set_escrow_decryptor(std::make_shared<archive::EscrowDecryptor>(std::move(*decryptor)));
    }
    auto writer = search::IndexWriter::open(config.search);
    if (!writer) return fail(writer.error().message);
    search::Indexer indexer(config.search, store, **writer);
    ProgressBar bar("reindexing");
    auto done = indexer.reindex([&bar](std::uint64_t done, std::uint64_t total) {
        if (done % 64 == 0 || done == total) bar.update(done, total, done);
    });
    bar.finish();
    if (!done) return fail(done.error().message);
    // Whatever the queue still holds is in the new index already; applying it is harmless.
    if (auto drained = indexer.drain(); !drained) return fail(drained.error().message);
    std::cout << "reindexed " << *done << " messages\n";
    return 0;
}

}  // namespace

int run_search(const SearchCommand& command) {
    auto config = load_config(command.config_path);
    if (!config) {
        std::cerr << config.error().message << "\n";
        return 1;
    }
    if (command.action == "query" && command.count) {
        ArchiveReader reader(*config, command.escrow_key);
        return run_search_count(command, [&reader](const std::string& name) { return reader.hold_query(name); });
    }
    if (command.action == "reindex") return run_reindex(*config, command);
    if (command.action == "report") return run_report(*config, command);
    return run_query(*config, command);
}

}  // namespace postvault::app
