// search/searcher.cpp — see searcher.h.
#include "search/searcher.h"

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <set>
#include <unordered_map>

#include <nlohmann/json.hpp>
#include <xapian.h>

#include "common/file_stamp.h"
#include "search/document.h"
#include "search/query.h"
#include "search/schema.h"
#include "search/snippet.h"
#include "search/xapian_error.h"

namespace postvault::search {

namespace {

// Every match weighs 0, as with Xapian::BoolWeight, but the matcher is told the weight needs
// each posting's wdf. Xapian 1.4.22 (Debian 12) throws "DatabaseCorruptError: Unexpected end of
// posting list" when it reads a postings list of more than about 1,500 documents with a gap in
// its document ids (a deleted document; a shard of a bulk load that later messages skipped)
// without decoding the wdf, as it does for BoolWeight: the database itself is sound, BM25 and
// iterators read it. Decoding the wdf costs little and takes the path that works
// (IndexTest.CountsAreRightOverPostingsListsWithGaps).
class ZeroWeight final : public Xapian::Weight {
public:
    ZeroWeight() { need_stat(WDF); }
    std::string name() const override { return "postvault.ZeroWeight"; }
    Xapian::Weight* clone() const override { return new ZeroWeight(); }
    void init(double) override {}
    double get_sumpart(Xapian::termcount, Xapian::termcount, Xapian::termcount) const override { return 0; }
    double get_maxpart() const override { return 0; }
    double get_sumextra(Xapian::termcount, Xapian::termcount) const override { return 0; }
    double get_maxextra() const override { return 0; }
};

const std::string kThreadPrefix(find_field("thread")->prefix);

// A hit's fields from its document data (document.h: a flat map, CBOR or JSON text), read
// without building a JSON tree: a search reads one for every hit it shows.
class HitData final : public nlohmann::json_sax<nlohmann::json> {
public:
    explicit HitData(Hit& hit) : hit_(hit) {}

    bool has_links = false;  // "thread" and the duplicate links (copy_links_to_data) were there

    bool key(string_t& name) override {
        text_ = nullptr;
        number_ = nullptr;
        if (depth_ != 1) return true;
        if (name == "id") text_ = &hit_.id;
        else if (name == "from") text_ = &hit_.from;
        else if (name == "to") text_ = &hit_.to;
        else if (name == "subject") text_ = &hit_.subject;
        else if (name == "thread") {
            text_ = &hit_.thread;
            has_links = true;
        }
        else if (name == "duplicate") text_ = &hit_.duplicate;
        else if (name == "duplicate_of") text_ = &hit_.duplicate_of;
        else if (name == "near_duplicate_of") text_ = &hit_.near_duplicate_of;
        else if (name == "date") number_ = [](Hit& hit, std::int64_t value) { hit.date = value; };
        else if (name == "size") number_ = [](Hit& hit, std::int64_t value) { hit.size = static_cast<std::uint64_t>(value); };
        return true;
    }
    bool string(string_t& value) override {
        if (depth_ == 1 && text_) *text_ = std::move(value);
        return true;
    }
    bool number_integer(number_integer_t value) override {
        if (depth_ == 1 && number_) number_(hit_, value);
        return true;
    }
    bool number_unsigned(number_unsigned_t value) override { return number_integer(static_cast<number_integer_t>(value)); }
    bool number_float(number_float_t, const string_t&) override { return true; }
    bool null() override { return true; }
    bool boolean(bool) override { return true; }
    bool binary(binary_t&) override { return true; }
    bool start_object(std::size_t) override { return enter(); }
    bool end_object() override { return leave(); }
    bool start_array(std::size_t) override { return enter(); }
    bool end_array() override { return leave(); }
    bool parse_error(std::size_t, const std::string&, const nlohmann::detail::exception&) override { return false; }

private:
    bool enter() {
        ++depth_;
        return true;
    }
    bool leave() {
        --depth_;
        return true;
    }

    Hit& hit_;
    int depth_ = 0;
    std::string* text_ = nullptr;
    void (*number_)(Hit&, std::int64_t) = nullptr;
};

// Counts the values of a slot; `multi`: each '\n'-separated value (recipient domains, methods).
class ValueSpy : public Xapian::MatchSpy {
public:
    ValueSpy(Xapian::valueno slot, bool multi) : slot_(slot), multi_(multi) {}
    void operator()(const Xapian::Document& document, double) override {
        const std::string value = document.get_value(slot_);
        if (!multi_) {
            if (!value.empty()) ++counts_[value];
            return;
        }
        std::size_t start = 0;
        while (start < value.size()) {
            std::size_t end = value.find('\n', start);
            if (end == std::string::npos) end = value.size();
            if (end > start) ++counts_[value.substr(start, end - start)];
            start = end + 1;
        }
    }
    const std::map<std::string, std::uint64_t>& counts() const { return counts_; }

private:
    Xapian::valueno slot_;
    bool multi_;
    std::map<std::string, std::uint64_t> counts_;
};

FacetCounts top(const std::map<std::string, std::uint64_t>& counts, std::size_t limit, bool by_key) {
    FacetCounts out(counts.begin(), counts.end());
    if (!by_key)
        std::stable_sort(out.begin(), out.end(), [](const auto& a, const auto& b) { return a.second > b.second; });
    if (out.size() > limit) out.resize(limit);
    return out;
}

// The version file of the one database a stub names ("auto NAME"); empty for anything else.
std::filesystem::path version_file(const std::filesystem::path& directory, const std::string& stub_text) {
    std::string_view text(stub_text);
    while (!text.empty() && (text.back() == '\n' || text.back() == ' ')) text.remove_suffix(1);
    if (!text.starts_with("auto ") || text.find('\n') != std::string_view::npos) return {};
    return directory / std::string(text.substr(5)) / "iamglass";
}

std::string to_hex(const std::string& bytes) {
    static const char* digits = "0123456789abcdef";
    std::string out;
    for (unsigned char c : bytes) {
        out += digits[c >> 4];
        out += digits[c & 15];
    }
    return out;
}

std::optional<std::string> from_hex(std::string_view hex) {
    if (hex.size() % 2) return std::nullopt;
    std::string out;
    for (std::size_t i = 0; i < hex.size(); i += 2) {
        auto nibble = [](char c) -> int {
            if (c >= '0' && c <= '9') return c - '0';
            if (c >= 'a' && c <= 'f') return c - 'a' + 10;
            return -1;
        };
        const int high = nibble(hex[i]), low = nibble(hex[i + 1]);
        if (high < 0 || low < 0) return std::nullopt;
        out += static_cast<char>(high * 16 + low);
    }
    return out;
}

}  // namespace

struct Searcher::Impl {
    std::string directory;
    Xapian::Database db;
    std::string language = "english";
    std::optional<Xapian::Query> scope;  // restrict_to()
    std::string stub_text;               // the "current" stub as last opened
    std::string schema;                  // db's "schema" metadata, read when it is (re)opened
    // What refresh() last saw of the stub and of the database's version file (Xapian renames a
    // new one into place at every commit): while both are the same, there is nothing to reopen.
    std::optional<FileStamp> stub_stamp, version_stamp;
    std::function<std::optional<std::string>(const std::string&)> hold_queries;
    StemExpansions expansions;           // for `db`; cleared when it is replaced or moves on
    // The month terms with their document counts, newest first, when every document of `db`
    // at `months_revision` has one (an index written before they existed has none, and sorts
    // its pages the old way).
    std::optional<std::vector<MonthTerm>> months;
    std::optional<Xapian::rev> months_revision;

    // Runs `work`, reopening once or twice when the writer's commits overtook this reader.
    template <typename Work>
    auto with_reopen(Work&& work) -> decltype(work()) {
        for (int attempt = 0;; ++attempt) {
            try {
                return work();
            } catch (const Xapian::DatabaseModifiedError& e) {
                if (attempt >= 3) return xapian_error("reading the search index", e);
                db.reopen();
            } catch (const Xapian::WildcardError& e) {
                return Error::permanent("search.wildcard", "a wildcard matches too many words: " + e.get_msg() +
                                                               "; make it longer");
            } catch (const Xapian::Error& e) {
                return xapian_error("searching", e);
            }
        }
    }

    // `expansions`, emptied if `db` is at another revision than they were made for.
    StemExpansions* current_expansions() {
        try {
            const Xapian::rev revision = db.get_revision();
            if (revision != expansions.revision) {
                expansions.terms.clear();
                expansions.revision = revision;
            }
            return &expansions;
        } catch (const Xapian::Error&) {  // not a single database: no revision, no reuse
            return nullptr;
        }
    }

    const std::vector<MonthTerm>* month_terms() {
        Xapian::rev revision = 0;
        try {
            revision = db.get_revision();
        } catch (const Xapian::InvalidOperationError&) {  // not a single database
            return nullptr;
        }
        if (months_revision != revision) {
            const std::string prefix(kMonthPrefix);
            std::vector<MonthTerm> terms;
            Xapian::doccount covered = 0;
            months.reset();
            try {
                for (auto term = db.allterms_begin(prefix); term != db.allterms_end(prefix); ++term) {
                    terms.push_back(MonthTerm{*term, term.get_termfreq()});
                    covered += terms.back().documents;
                }
            } catch (const Xapian::Error&) {  // the writer moved on: the old way this time
                return nullptr;
            }
            if (covered == db.get_doccount()) months.emplace(terms.rbegin(), terms.rend());
            months_revision = revision;
        }
        return months ? &*months : nullptr;
    }

    struct Candidate {
        Xapian::Document document;
        std::string key;  // the date sort key
        double weight = 0;
    };

    static Candidate candidate(const Xapian::MSetIterator& it) {
        Candidate c{it.get_document(), it.get_sort_key(), it.get_weight()};
        if (c.key.empty()) c.key = c.document.get_value(slot_sort_key);
        return c;
    }

    // Where a date-ordered page starts in `months`: the newest, or the month of the sort key
    // `before` (the cursor's) for a later page.
    static std::size_t first_month(const std::vector<MonthTerm>& months, const std::string& before) {
        std::size_t first = 0;
        if (before.size() < 8) return first;
        std::uint64_t micros = 0;
        for (std::size_t i = 0; i < 8; ++i) micros = micros << 8 | static_cast<unsigned char>(before[i]);
        const std::string last = month_term(static_cast<std::int64_t>(micros / 1000000u));
        while (first < months.size() && months[first].term > last) ++first;
        return first;
    }

    // Whether reading a page month by month pays: when the first three months from `first`
    // are expected to hold it (`total` matches spread like the documents). Otherwise batch
    // after batch would evaluate a sparse query again (Xapian lets the rarer side of the
    // filter drive), where sorting its few matches costs little.
    static bool months_fill_page(const std::vector<MonthTerm>& months, std::size_t first, Xapian::doccount total,
                                 Xapian::doccount all, std::size_t wanted) {
        double size = 0;
        for (std::size_t i = first; i < std::min(months.size(), first + 3); ++i) size += months[i].documents;
        return all > 0 && static_cast<double>(total) * size / all >= static_cast<double>(wanted);
    }

    // The first `wanted` matches of `query` in date order, newest first, read month by month:
    // batches of 1, 2, 4, ... months from months[next], each sorted on its own. A month's
    // matches all sort after the next newer month's, so the batches' pages follow on; sorting
    // every match by its value (what Xapian does for one date-sorted match) costs a value read
    // and a comparison per match.
    std::vector<Candidate> newest_first(const Xapian::Query& query, std::size_t wanted,
                                        const std::vector<MonthTerm>& months, std::size_t next) {
        std::vector<Candidate> found;
        for (std::size_t batch = 1; next < months.size() && found.size() < wanted; batch *= 2) {
            const std::size_t end = std::min(months.size(), next + batch);
            std::vector<Xapian::Query> terms;
            for (; next < end; ++next) terms.emplace_back(months[next].term);
            Xapian::Enquire enquire(db);
            enquire.set_query(Xapian::Query(Xapian::Query::OP_FILTER, query,
                                            Xapian::Query(Xapian::Query::OP_OR, terms.begin(), terms.end())));
            enquire.set_weighting_scheme(ZeroWeight());
            enquire.set_sort_by_value(slot_sort_key, true);
            const Xapian::MSet mset = enquire.get_mset(0, static_cast<Xapian::doccount>(wanted - found.size()));
            for (auto it = mset.begin(); it != mset.end(); ++it) found.push_back(candidate(it));
        }
        return found;
    }

    Result<Xapian::Query> parse(const std::string& text, bool exact, std::int64_t now) {
        // An index of an older schema answers some queries wrongly (body phrases, before
        // schema 2): it is rebuilt (Indexer), and not searched until then.
        if (!schema.empty() && schema != kSchemaVersion)
            return Error::temporary("search.outdated", "the search index was written by an older postvault (schema " +
                                                           schema + "); the server and `archive import` rebuild it from "
                                                           "the archive when they start, or run `postvault search reindex`");
        QueryOptions options;
        options.exact = exact;
        options.now = now;
        options.database = &db;
        options.language = language;
        options.hold_query = hold_queries;
        for (int attempt = 0;; ++attempt) {  // stems are looked up in the index, which may move on
            options.expansions = current_expansions();
            options.months = month_terms();
            auto parsed = parse_query(text, options);
            if (parsed && scope) return Xapian::Query(Xapian::Query::OP_FILTER, *parsed, *scope);
            if (parsed || parsed.error().code != "search.modified" || attempt >= 3) return parsed;
            db.reopen();
        }
    }
};

Searcher::Searcher() : impl_(std::make_unique<Impl>()) {}
Searcher::~Searcher() = default;

Result<std::unique_ptr<Searcher>> Searcher::open(const std::string& directory, const std::string& language) {
    const std::filesystem::path stub = std::filesystem::path(directory) / "current";
    std::error_code ignored;
    if (!std::filesystem::exists(stub, ignored))
        return Error::permanent("search.not_found", "no search index at " + directory +
                                                        " (it is created when mail is archived, or by `postvault search reindex`)");
    std::unique_ptr<Searcher> searcher(new Searcher());
    searcher->impl_->directory = directory;
    searcher->impl_->language = language;
    try {
        Xapian::Stem check(language);  // the query parser stems with it
    } catch (const Xapian::Error&) {
        return Error::permanent("search.config", "search.language: no stemmer for '" + language + "'");
    }
    try {
        std::ifstream in(stub);
        searcher->impl_->stub_text.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
        searcher->impl_->db = Xapian::Database(stub.string());
        searcher->impl_->schema = searcher->impl_->db.get_metadata("schema");
    } catch (const Xapian::Error& e) {
        return xapian_error("opening the search index " + directory, e);
    }
    return searcher;
}

std::uint64_t Searcher::document_count() {
    try {
        return impl_->db.get_doccount();
    } catch (const Xapian::Error&) {
        return 0;
    }
}

Status Searcher::refresh() {
    const std::filesystem::path stub = std::filesystem::path(impl_->directory) / "current";
    // Stamps first, then the reads: a change in between is seen by the next refresh.
    const std::optional<FileStamp> stub_now = file_stamp(stub);
    const std::filesystem::path version = version_file(impl_->directory, impl_->stub_text);
    const std::optional<FileStamp> version_now = version.empty() ? std::nullopt : file_stamp(version);
    if (stub_now && version_now && stub_now == impl_->stub_stamp && version_now == impl_->version_stamp)
        return Status::success();
    std::ifstream in(stub);
    std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    try {
        if (text != impl_->stub_text) {  // a rebuilt or compacted database is live now
            impl_->db = Xapian::Database(stub.string());
            impl_->stub_text = text;
            impl_->expansions.terms.clear();  // another database: its revisions count anew
            impl_->months_revision.reset();
            impl_->version_stamp.reset();  // the new database's own: taken at the next refresh
        } else {
            impl_->db.reopen();
            impl_->version_stamp = version_now;
        }
        impl_->schema = impl_->db.get_metadata("schema");
        impl_->stub_stamp = stub_now;
        return Status::success();
    } catch (const Xapian::Error& e) {
        return xapian_error("reopening the search index", e);
    }
}

void Searcher::set_hold_queries(std::function<std::optional<std::string>(const std::string&)> hold_queries) {
    impl_->hold_queries = std::move(hold_queries);
}

Status Searcher::restrict_to(const std::string& query) {
    impl_->scope.reset();
    if (query.empty()) return Status::success();
    auto parsed = impl_->parse(query, true, 0);
    if (!parsed) return parsed.error();
    impl_->scope = std::move(*parsed);
    return Status::success();
}

Result<std::uint64_t> Searcher::count(const std::string& text, bool exact, std::int64_t now) {
    auto query = impl_->parse(text, exact, now);
    if (!query) return query.error();
    return impl_->with_reopen([&]() -> Result<std::uint64_t> {
        Xapian::Enquire enquire(impl_->db);
        enquire.set_query(*query);
        enquire.set_weighting_scheme(ZeroWeight());
        const Xapian::MSet mset = enquire.get_mset(0, 0, impl_->db.get_doccount());
        return static_cast<std::uint64_t>(mset.get_matches_lower_bound());
    });
}

Result<SearchResult> Searcher::search(const SearchRequest& request, const TextOf& text_of) {
    auto query = impl_->parse(request.query, request.exact, request.now);
    if (!query) return query.error();
    const bool by_date = request.sort != "relevance";
    if (request.sort != "date" && request.sort != "relevance")
        return Error::permanent("search.request", "sort must be \"date\" or \"relevance\"");
    std::string after_key;
    std::uint64_t offset = 0;
    if (!request.cursor.empty()) {
        const char kind = request.cursor[0];
        if (kind == 'd' && by_date) {
            auto key = from_hex(std::string_view(request.cursor).substr(1));
            if (!key) return Error::permanent("search.request", "the cursor is not one this search gave");
            after_key = *key;
        } else if (kind == 'r' && !by_date) {
            try {
                offset = std::stoull(request.cursor.substr(1));
            } catch (const std::exception&) {
                return Error::permanent("search.request", "the cursor is not one this search gave");
            }
        } else {
            return Error::permanent("search.request", "the cursor belongs to a search sorted the other way");
        }
    }
    const std::size_t limit = std::max<std::size_t>(1, std::min<std::size_t>(request.limit, 100000));
    const SnippetTerms marked = text_of ? snippet_terms(*query) : SnippetTerms();

    return impl_->with_reopen([&]() -> Result<SearchResult> {
        SearchResult result;
        Xapian::Database& db = impl_->db;
        const Xapian::doccount all = db.get_doccount();

        // The exact total and the facets, over every match: asked of the page's own match on
        // the first page (Xapian then examines every match: check_at_least = all), by a
        // separate count when a cursor narrows the page's query or the page is read by month.
        const std::vector<MonthTerm>* months = by_date ? impl_->month_terms() : nullptr;
        const bool count_apart = !(after_key.empty() && offset == 0) || months;
        ValueSpy senders(slot_sender_domain, false), month_counts(slot_month, false);
        ValueSpy recipients(slot_recipient_domains, true), methods(slot_methods, true);
        auto add_spies = [&](Xapian::Enquire& enquire) {
            if (!request.facets) return;
            enquire.add_matchspy(&senders);
            enquire.add_matchspy(&recipients);
            enquire.add_matchspy(&month_counts);
            enquire.add_matchspy(&methods);
        };
        auto take_facets = [&] {
            if (!request.facets) return;
            Facets facets;
            facets.sender_domains = top(senders.counts(), 50, false);
            facets.recipient_domains = top(recipients.counts(), 50, false);
            facets.months = top(month_counts.counts(), 1000, true);
            facets.methods = top(methods.counts(), 50, false);
            result.facets = std::move(facets);
        };
        if (count_apart) {
            Xapian::Enquire enquire(db);
            enquire.set_query(*query);
            enquire.set_weighting_scheme(ZeroWeight());
            add_spies(enquire);
            const Xapian::MSet counted = enquire.get_mset(0, request.facets ? all : 0, all);
            result.total = counted.get_matches_lower_bound();
            take_facets();
        }

        // The page.
        Xapian::Query page_query = *query;
        if (!after_key.empty())
            page_query = Xapian::Query(Xapian::Query::OP_FILTER, page_query,
                                       Xapian::Query(Xapian::Query::OP_VALUE_LE, slot_sort_key, after_key));
        std::vector<Impl::Candidate> candidates;
        const std::size_t first_month = months ? Impl::first_month(*months, after_key) : 0;
        if (months && Impl::months_fill_page(*months, first_month, result.total, all, limit + 2)) {
            candidates = impl_->newest_first(page_query, limit + 2, *months, first_month);
        } else {
            Xapian::Enquire enquire(db);
            enquire.set_query(page_query);
            if (by_date) {
                enquire.set_weighting_scheme(ZeroWeight());
                enquire.set_sort_by_value(slot_sort_key, true);
            } else {
                enquire.set_sort_by_relevance_then_value(slot_sort_key, true);
            }
            if (!count_apart) add_spies(enquire);
            const Xapian::MSet mset = enquire.get_mset(by_date ? 0 : offset, limit + 2, count_apart ? 0 : all);
            if (!count_apart) {
                result.total = mset.get_matches_lower_bound();
                take_facets();
            }
            for (auto it = mset.begin(); it != mset.end(); ++it) candidates.push_back(Impl::candidate(it));
        }
        std::size_t taken = 0;
        bool more = false;
        std::string last_key;
        for (Impl::Candidate& candidate : candidates) {
            const std::string& key = candidate.key;
            if (!after_key.empty() && key == after_key) continue;
            if (taken == limit) {
                more = true;
                break;
            }
            Hit hit;
            HitData data(hit);
            const Xapian::Document& document = candidate.document;
            const std::string stored = unpack_data(document.get_data());
            if (!nlohmann::json::sax_parse(stored, &data, data_format(stored))) continue;
            if (!data.has_links) {  // an index written before the links were in the data
                hit.thread = document.get_value(slot_thread);
                hit.duplicate = document.get_value(slot_duplicate);
                hit.duplicate_of = document.get_value(slot_duplicate_of);
                hit.near_duplicate_of = document.get_value(slot_near_duplicate_of);
            }
            hit.weight = candidate.weight;
            if (text_of) {
                auto text = text_of(hit.id);
                if (text) hit.snippet = make_snippet(**text, marked, 240, request.html);
            }
            result.hits.push_back(std::move(hit));
            last_key = key;
            ++taken;
        }
        if (by_date) {
            if (more) result.next_cursor = "d" + to_hex(last_key);
        } else if (offset + taken < result.total) {
            result.next_cursor = "r" + std::to_string(offset + taken);
        }
        return result;
    });
}

Result<TermReport> Searcher::term_report(const std::vector<std::string>& queries, bool exact) {
    TermReport report;
    std::vector<std::vector<Xapian::docid>> matches(queries.size());
    for (std::size_t i = 0; i < queries.size(); ++i) {
        TermReportRow row;
        row.query = queries[i];
        auto query = impl_->parse(queries[i], exact, 0);
        if (!query) {
            row.error = query.error().message;
            report.rows.push_back(std::move(row));
            continue;
        }
        auto found = impl_->with_reopen([&]() -> Result<std::vector<Xapian::docid>> {
            Xapian::Enquire enquire(impl_->db);
            enquire.set_query(*query);
            enquire.set_weighting_scheme(ZeroWeight());
            enquire.set_docid_order(Xapian::Enquire::ASCENDING);
            const Xapian::doccount all = impl_->db.get_doccount();
            const Xapian::MSet mset = enquire.get_mset(0, all, all);
            std::vector<Xapian::docid> ids;
            for (auto it = mset.begin(); it != mset.end(); ++it) ids.push_back(*it);
            std::sort(ids.begin(), ids.end());
            return ids;
        });
        if (!found) {
            row.error = found.error().message;
        } else {
            matches[i] = std::move(*found);
            row.hits = matches[i].size();
        }
        report.rows.push_back(std::move(row));
    }
    return impl_->with_reopen([&]() -> Result<TermReport> {
        std::unordered_map<Xapian::docid, unsigned> times;
        for (const auto& ids : matches)
            for (auto id : ids) ++times[id];
        std::unordered_map<std::string, std::vector<Xapian::docid>> thread_members;
        auto family_of = [&](const std::vector<Xapian::docid>& ids) {
            std::set<Xapian::docid> family(ids.begin(), ids.end());
            std::set<std::string> threads;
            for (auto id : ids) threads.insert(impl_->db.get_document(id).get_value(slot_thread));
            for (const auto& thread : threads) {
                if (thread.empty()) continue;
                auto [it, fresh] = thread_members.try_emplace(thread);
                if (fresh) {
                    const std::string term = make_term(kThreadPrefix, thread);
                    Xapian::Enquire members(impl_->db);
                    members.set_query(impl_->scope ? Xapian::Query(Xapian::Query::OP_FILTER, Xapian::Query(term), *impl_->scope)
                                                   : Xapian::Query(term));
                    members.set_weighting_scheme(ZeroWeight());
                    const Xapian::doccount all = impl_->db.get_doccount();
                    const Xapian::MSet found = members.get_mset(0, all, all);
                    for (auto p = found.begin(); p != found.end(); ++p) it->second.push_back(*p);
                }
                family.insert(it->second.begin(), it->second.end());
            }
            return family;
        };
        std::set<Xapian::docid> all_family;
        for (std::size_t i = 0; i < queries.size(); ++i) {
            if (!report.rows[i].error.empty()) continue;
            std::uint64_t unique = 0;
            for (auto id : matches[i]) unique += times[id] == 1;
            report.rows[i].unique_hits = unique;
            const auto family = family_of(matches[i]);
            report.rows[i].hits_with_family = family.size();
            all_family.insert(family.begin(), family.end());
        }
        report.total_distinct = times.size();
        report.total_with_family = all_family.size();
        return report;
    });
}

}  // namespace postvault::search
