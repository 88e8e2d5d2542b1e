// app/search_main.cpp — postvault-search, the small program that answers
// `postvault search --count`: it links only the configuration, the query parser and Xapian,
// so it starts in a few milliseconds (the full program maps every library postvault uses).
// The `postvault` launcher runs it; everything else goes to postvault-core.
#include "app/search_cli.h"

int main(int argc, char** argv) {
    CLI::App app{"postvault — encrypting mail relay and compliance archive"};
    app.require_subcommand(1);
    postvault::app::SearchCommand command;
    auto subs = postvault::app::add_search_subcommand(app, command);
    CLI11_PARSE(app, argc, argv);
    if (*subs.reindex || *subs.report || !command.count) {
        std::cerr << "postvault-search answers only `search --count`; run `postvault` for the rest\n";
        return 2;
    }
    return postvault::app::run_search_count(command);
}
