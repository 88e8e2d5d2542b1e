// app/search_cli.h — the options of `postvault search`, shared by the two programs that
// answer it: postvault-search (the small one: --count, which needs only the index) and
// postvault-core (everything else: results with snippets read from the archive, reindex,
// report). The `postvault` launcher picks one (app/launcher.cpp); both parse alike.
#pragma once

#include <functional>
#include <optional>
#include <string>

#include <CLI/CLI.hpp>

namespace postvault::app {

struct SearchCommand {
    std::string config_path = "var/postvault.toml";
    std::string action = "query";  // query | reindex | report
    std::string query;             // query
    std::string terms_file;        // report: one query per line
    bool count = false;
    bool json = false;
    bool csv = false;
    bool exact = false;
    bool facets = false;
    bool html = false;
    std::size_t limit = 20;
    std::string sort = "date";
    std::string cursor;
    std::string escrow_key;        // escrow mode: to read texts for snippets and to reindex
};

struct SearchSubcommands {
    CLI::App* search = nullptr;
    CLI::App* reindex = nullptr;
    CLI::App* report = nullptr;
};

inline SearchSubcommands add_search_subcommand(CLI::App& app, SearchCommand& command) {
    SearchSubcommands subs;
    subs.search = app.add_subcommand("search", "Search the archive (query language: docs/search.md)");
    auto* search = subs.search;
    search->add_option("--config", command.config_path, "Configuration file")->capture_default_str();
    search->add_flag("--count", command.count, "Print only the exact number of matches");
    search->add_flag("--json", command.json, "Print {\"total\", \"results\", \"next_cursor\"} as JSON");
    search->add_option("--limit", command.limit, "Results per page")->capture_default_str();
    search->add_option("--sort", command.sort, "date (newest first) or relevance")
        ->check(CLI::IsMember({"date", "relevance"}))
        ->capture_default_str();
    search->add_option("--cursor", command.cursor, "Continue after the page that gave this cursor");
    search->add_flag("--exact", command.exact, "No stemming: match words exactly");
    search->add_flag("--facets", command.facets, "Add counts by sender domain, recipient domain, month and method");
    search->add_flag("--html", command.html, "Mark snippet words with <b></b> instead of [ ]");
    search->add_option("--escrow-key", command.escrow_key, "Escrow mode: secret key to read texts for snippets");
    search->add_option("query", command.query, "The query");
    subs.reindex = search->add_subcommand("reindex", "Rebuild the whole index from the archive");
    subs.reindex->add_option("--config", command.config_path, "Configuration file")->capture_default_str();
    subs.reindex->add_option("--escrow-key", command.escrow_key, "Escrow mode: secret key to read the messages");
    subs.report = search->add_subcommand("report", "Search-term report: hits, unique hits and family per query");
    subs.report->add_option("--config", command.config_path, "Configuration file")->capture_default_str();
    subs.report->add_flag("--json", command.json, "JSON output");
    subs.report->add_flag("--csv", command.csv, "CSV output");
    subs.report->add_flag("--exact", command.exact, "No stemming");
    subs.report->add_option("terms", command.terms_file, "File with one query per line (- for standard input)")
        ->required();
    return subs;
}

// Exit status: 0 found (or counted), 1 error, 2 bad query or usage.
// `hold_queries`: how hold:NAME finds a hold's query (postvault-core reads the archive's holds;
// postvault-search has none, and the launcher sends queries naming hold: to postvault-core).
int run_search_count(const SearchCommand& command,
                     std::function<std::optional<std::string>(const std::string&)> hold_queries = {});
int run_search(const SearchCommand& command);  // postvault-core only

}  // namespace postvault::app
