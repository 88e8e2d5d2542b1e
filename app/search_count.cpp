// app/search_count.cpp — `postvault search --count QUERY`: the exact number of matches, from
// the index alone. Linked into both postvault-search and postvault-core (search_cli.h).
#include <iostream>

#include "app/search_cli.h"
#include "common/config.h"
#include "search/searcher.h"

namespace postvault::app {

int search_failure(const Error& error) {
    std::cerr << "postvault: " << error.message << "\n";
    return error.code == "search.query" || error.code == "search.wildcard" || error.code == "search.request" ? 2 : 1;
}

int run_search_count(const SearchCommand& command,
                     std::function<std::optional<std::string>(const std::string&)> hold_queries) {
    auto config = load_config(command.config_path);
    if (!config) {
        std::cerr << config.error().message << "\n";
        return 1;
    }
    if (command.query.empty()) {
        std::cerr << "postvault: a query is needed (`*` matches every message)\n";
        return 2;
    }
    auto searcher = search::Searcher::open(config->search.directory, config->search.language);
    if (!searcher) return search_failure(searcher.error());
    if (hold_queries) (*searcher)->set_hold_queries(std::move(hold_queries));
    auto count = (*searcher)->count(command.query, command.exact);
    if (!count) return search_failure(count.error());
    std::cout << *count << "\n";
    return 0;
}

}  // namespace postvault::app
