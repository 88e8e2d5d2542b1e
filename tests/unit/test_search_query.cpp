// tests/unit/test_search_query.cpp — the query language (search/query.cpp, docs/search.md).
//
// SearchQuery.* parse queries and run them against a small in-memory Xapian database whose
// documents are indexed here the way search/document.cpp does it (fold_text, index_body,
// TermGenerator, address terms, boolean terms, value slots), then
// compare the matching archive ids. Error tests check the exact message and column.
#include "search/query.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <ctime>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "search/positions.h"
#include "search/schema.h"
#include "search/text.h"

namespace postvault::search {
namespace {

using Ids = std::vector<std::string>;

struct Mailbox {
    std::string name;
    std::string address;
};

struct TestMessage {
    std::string id;          // archive id: "Q" term and document data
    std::string message_id;  // without <>
    std::string thread;
    std::string subject;
    std::string body;
    std::string attachment;
    std::vector<std::string> filenames;
    std::vector<Mailbox> from, to, cc, bcc;
    std::vector<std::pair<std::string, std::string>> labels;  // {field, value}: tag, direction, type, ...
    std::int64_t date = 0;
    std::int64_t size = 0;
};

std::int64_t utc(int year, int month, int day, int hour = 0, int minute = 0, int second = 0) {
    std::tm tm{};
    tm.tm_year = year - 1900;
    tm.tm_mon = month - 1;
    tm.tm_mday = day;
    tm.tm_hour = hour;
    tm.tm_min = minute;
    tm.tm_sec = second;
    return static_cast<std::int64_t>(timegm(&tm));
}

std::string prefix_of(std::string_view field) { return std::string(find_field(field)->prefix); }

// The terms of one mailbox under `prefix`, as search/document.cpp writes them.
void add_address(Xapian::Document& document, Xapian::TermGenerator& names, const std::string& prefix,
                 const Mailbox& mailbox) {
    if (!mailbox.address.empty()) {
        const std::string full = fold_text(mailbox.address);
        const auto at = full.rfind('@');
        const std::string local = full.substr(0, at);
        document.add_boolean_term(make_term(prefix, full));
        document.add_boolean_term(make_term(prefix, local));
        std::size_t start = 0;
        for (std::size_t i = 0; i <= local.size(); ++i) {
            if (i == local.size() || std::strchr("._-+", local[i])) {
                if (i > start && (start > 0 || i < local.size()))
                    document.add_boolean_term(make_term(prefix, local.substr(start, i - start)));
                start = i + 1;
            }
        }
        std::string domain = full.substr(at + 1);
        while (true) {
            document.add_boolean_term(make_term(prefix, domain));
            document.add_boolean_term(make_term(prefix_of("domain"), domain));
            const auto dot = domain.find('.');
            if (dot == std::string::npos) break;
            domain = domain.substr(dot + 1);
            if (domain.find('.') == std::string::npos) break;
        }
    }
    if (!mailbox.name.empty()) {
        names.index_text(fold_text(mailbox.name), 1, prefix);
        names.increase_termpos(10);
    }
}

void index_message(Xapian::WritableDatabase& database, const TestMessage& message) {
    Xapian::Document document;
    document.set_data(message.id);
    const std::string id_term = std::string(kIdPrefix) + message.id;
    document.add_boolean_term(id_term);
    if (!message.message_id.empty()) document.add_boolean_term(make_term(prefix_of("id"), message.message_id));
    if (!message.thread.empty()) document.add_boolean_term(make_term(prefix_of("thread"), message.thread));

    index_body(document, fold_text(message.body));
    Xapian::TermGenerator text;  // words only, as search/document.cpp: stems are expanded at query time
    text.set_document(document);
    text.index_text(fold_text(message.subject), 1, prefix_of("subject"));
    text.increase_termpos(100);
    text.index_text(fold_text(message.attachment), 1, prefix_of("attachment"));
    text.increase_termpos(100);
    for (const auto& filename : message.filenames) {
        const std::string name = fold_text(filename);
        text.index_text(name, 1, prefix_of("filename"));
        text.increase_termpos(100);
        document.add_boolean_term(make_term(prefix_of("filename"), name));
    }

    Xapian::TermGenerator names;
    names.set_document(document);
    const std::pair<const std::vector<Mailbox>*, const char*> lists[] = {
        {&message.from, "from"}, {&message.to, "to"}, {&message.cc, "cc"}, {&message.bcc, "bcc"}};
    for (const auto& [list, field] : lists)
        for (const auto& mailbox : *list) {
            add_address(document, names, prefix_of(field), mailbox);
            add_address(document, names, prefix_of("participant"), mailbox);
        }

    for (const auto& [field, value] : message.labels) document.add_boolean_term(make_term(prefix_of(field), fold_text(value)));
    document.add_value(slot_date, Xapian::sortable_serialise(static_cast<double>(message.date)));
    document.add_value(slot_size, Xapian::sortable_serialise(static_cast<double>(message.size)));
    database.replace_document(id_term, document);
}

std::vector<TestMessage> corpus_messages() {
    std::vector<TestMessage> messages(10);
    auto& m01 = messages[0];
    m01.id = "m01";
    m01.message_id = "20190428202154.GE7441@quack2";
    m01.thread = "T1";
    m01.subject = "Merger proposal";
    m01.body = "We discuss the proposed merger with the acquisition team today.";
    m01.from = {{"Alice Smith", "alice@corp.example"}};
    m01.to = {{"", "bob@partner.com"}};
    m01.labels = {{"tag", "Confidential"}, {"direction", "outbound"}, {"method", "pgp"}};
    m01.date = utc(2024, 3, 15, 10);
    m01.size = 1048576;

    auto& m02 = messages[1];
    m02.id = "m02";
    m02.message_id = "CAF+abc@mail.partner.com";
    m02.thread = "T1";
    m02.subject = "Mergers and acquisitions";
    m02.body = "Mergers happen. The companies merged last year.";
    m02.from = {{"Bob Stone", "bob@mail.partner.com"}};
    m02.to = {{"Alice Smith", "alice@corp.example"}};
    m02.labels = {{"direction", "inbound"}, {"method", "tls"}};
    m02.date = utc(2024, 3, 31, 23, 59, 59);
    m02.size = 1048577;

    auto& m03 = messages[2];  // alpha ... beta: 5 positions apart
    m03.id = "m03";
    m03.body = "alpha one two three four beta";
    m03.from = {{"Carol Jones", "carol.jones@mail.corp.example"}};
    m03.labels = {{"direction", "outbound"}};
    m03.date = utc(2024, 4, 1);
    m03.size = 1048575;

    auto& m04 = messages[3];  // beta ... alpha: 4 positions apart, the other order
    m04.id = "m04";
    m04.body = "beta one two three alpha";
    m04.from = {{"Alice Jones", "dave@other.example"}};
    m04.date = utc(2023, 12, 31, 23, 59, 59);
    m04.size = 1024;

    auto& m05 = messages[4];  // phrase, then 2 words, then forecast
    m05.id = "m05";
    m05.body = "the quarterly report shows a forecast";
    m05.attachment = "forecast tables";
    m05.filenames = {"Q1-Report.pdf"};
    m05.cc = {{"", "erin@corp.example"}};
    m05.bcc = {{"", "frank@secret.example"}};
    m05.labels = {{"type", "application/pdf"}, {"type", "application"}, {"has", "attachment"}, {"has", "pdf"}};
    m05.date = utc(2024, 2, 29, 12);
    m05.size = 1025;

    auto& m06 = messages[5];  // the phrase, and elsewhere its words scattered near forecast
    m06.id = "m06";
    m06.body = "quarterly report first. then some unrelated words follow here: quarterly notes report forecast";
    m06.date = utc(2022, 1, 10);
    m06.size = 500;

    auto& m07 = messages[6];  // forecast, 2 words, then the phrase; folding
    m07.id = "m07";
    m07.subject = "Zoë's Ünïcødé party";
    m07.body = "forecast of the quarterly report";
    m07.from = {{"Zoë O'Neil", "zoe.oneil@corp.example"}};
    m07.labels = {{"is", "duplicate"}, {"hold", "Case-42"}, {"retention", "7y"}, {"policy", "pci"}};
    m07.date = utc(2022, 2, 10);
    m07.size = 500;

    auto& m08 = messages[7];  // gamma ... delta: 10 positions apart
    m08.id = "m08";
    m08.body = "gamma a b c d e f g h i delta. Send the e-mail about ext4 now.";
    m08.date = utc(2022, 3, 10);
    m08.size = 500;

    auto& m09 = messages[8];  // delta ... gamma: 11 positions apart
    m09.id = "m09";
    m09.body = "delta a b c d e f g h i j gamma";
    m09.date = utc(2022, 4, 10);
    m09.size = 500;

    auto& m10 = messages[9];
    m10.id = "m10";
    m10.body = "a mergeable plan, merging soon";
    m10.date = utc(2022, 5, 10);
    m10.size = 500;
    return messages;
}

const Xapian::Database& corpus() {
    static const Xapian::WritableDatabase database = [] {
        Xapian::WritableDatabase built(std::string(), Xapian::DB_BACKEND_INMEMORY);
        for (const auto& message : corpus_messages()) index_message(built, message);
        built.commit();
        return built;
    }();
    return database;
}

const Ids kAll = {"m01", "m02", "m03", "m04", "m05", "m06", "m07", "m08", "m09", "m10"};

Ids all_except(const Ids& excluded) {
    Ids ids;
    for (const auto& id : kAll)
        if (std::find(excluded.begin(), excluded.end(), id) == excluded.end()) ids.push_back(id);
    return ids;
}

Ids run(const Xapian::Query& query) {
    Xapian::Enquire enquire(corpus());
    enquire.set_query(query);
    const Xapian::MSet matches = enquire.get_mset(0, corpus().get_doccount());
    Ids ids;
    for (auto it = matches.begin(); it != matches.end(); ++it) ids.push_back(it.get_document().get_data());
    std::sort(ids.begin(), ids.end());
    return ids;
}

// The archive ids the query matches; a parse error fails the test and gives {"error"}.
Ids search(const std::string& text, QueryOptions options = {}) {
    if (!options.database) options.database = &corpus();
    auto query = parse_query(text, options);
    if (!query) {
        ADD_FAILURE() << "query " << text << ": " << query.error().message;
        return {"error"};
    }
    return run(*query);
}

// The error message, or "ok".
std::string error_of(const std::string& text, QueryOptions options = {}) {
    if (!options.database) options.database = &corpus();
    auto query = parse_query(text, options);
    if (query) return "ok";
    EXPECT_EQ(query.error().code, "search.query");
    EXPECT_FALSE(query.error().is_temporary());
    return query.error().message;
}

TEST(SearchQuery, StemmingAndExactWords) {
    EXPECT_EQ(search("merger"), (Ids{"m01", "m02"}));        // merger, Mergers
    EXPECT_EQ(search("mergers"), (Ids{"m01", "m02"}));
    EXPECT_EQ(search("\"merger\""), (Ids{"m01"}));           // quoted: exact
    EXPECT_EQ(search("\"mergers\""), (Ids{"m02"}));
    EXPECT_EQ(search("merger", {.exact = true}), (Ids{"m01"}));
    EXPECT_EQ(search("merged"), (Ids{"m02", "m10"}));        // stem "merg": merged, merging
    EXPECT_EQ(search("proposal"), (Ids{"m01"}));             // subject "proposal", body "proposed"
    EXPECT_EQ(search("body:proposal"), (Ids{"m01"}));        // via the stem of "proposed"
    EXPECT_EQ(search("body:proposal", {.exact = true}), Ids{});
    EXPECT_EQ(search("subject:merger"), (Ids{"m01", "m02"}));
    EXPECT_EQ(search("attachment:forecasts"), (Ids{"m05"}));
    EXPECT_EQ(search("attachment:\"forecasts\""), Ids{});
    EXPECT_EQ(search("and"), (Ids{"m02"}));                  // lower-case "and" is a word
    EXPECT_EQ(search("merger and acquisition"), (Ids{"m02"}));
    EXPECT_EQ(search("merger AND acquisition"), (Ids{"m01", "m02"}));
    EXPECT_EQ(search("merger acquisition"), (Ids{"m01", "m02"}));
}

TEST(SearchQuery, CaseAndDiacriticsFold) {
    for (const char* query : {"zoe", "ZOE", "Zoë", "ZOË", "subject:zoe", "\"Ünïcødé\"", "ÜNÏCØDÉ", "subject:ünïcødé"})
        EXPECT_EQ(search(query), (Ids{"m07"})) << query;
    EXPECT_EQ(search("\"zoe's unicøde party\""), (Ids{"m07"}));
    EXPECT_EQ(search("from:\"ZOE O'NEIL\""), (Ids{"m07"}));
}

TEST(SearchQuery, PhrasesAndTokenization) {
    EXPECT_EQ(search("\"quarterly report\""), (Ids{"m05", "m06", "m07"}));
    EXPECT_EQ(search("\"report quarterly\""), Ids{});
    EXPECT_EQ(search("body:\"proposed merger\""), (Ids{"m01"}));
    EXPECT_EQ(search("subject:\"proposed merger\""), Ids{});
    EXPECT_EQ(search("\"proposed  mergers\""), Ids{});      // a phrase's words are exact
    EXPECT_EQ(search("e-mail"), (Ids{"m08"}));              // TermGenerator: the phrase e, mail
    EXPECT_EQ(search("\"e mail\""), (Ids{"m08"}));
    EXPECT_EQ(search("email"), Ids{});
    EXPECT_EQ(search("ext4"), (Ids{"m08"}));
    EXPECT_EQ(search("o'neil"), (Ids{"m07"}));              // the display name, in participant
    EXPECT_EQ(search("\"first then\""), (Ids{"m06"}));      // punctuation does not break a phrase
}

TEST(SearchQuery, NearWordsAtTheBoundary) {
    // m03: alpha, then beta 5 positions later; m04: beta, then alpha 4 positions later.
    EXPECT_EQ(search("alpha NEAR/5 beta"), (Ids{"m03", "m04"}));
    EXPECT_EQ(search("beta NEAR/5 alpha"), (Ids{"m03", "m04"}));
    EXPECT_EQ(search("alpha NEAR/4 beta"), (Ids{"m04"}));
    EXPECT_EQ(search("beta NEAR/4 alpha"), (Ids{"m04"}));
    EXPECT_EQ(search("alpha NEAR/3 beta"), Ids{});
    EXPECT_EQ(search("alpha W/5 beta"), (Ids{"m03", "m04"}));
    EXPECT_EQ(search("alpha W/4 beta"), (Ids{"m04"}));
    EXPECT_EQ(search("body:alpha NEAR/4 body:beta"), (Ids{"m04"}));
    EXPECT_EQ(search("subject:alpha NEAR/5 beta"), Ids{});
    // Bare NEAR is NEAR/10: m08 has gamma .. delta 10 apart, m09 delta .. gamma 11 apart.
    EXPECT_EQ(search("gamma NEAR delta"), (Ids{"m08"}));
    EXPECT_EQ(search("delta NEAR gamma"), (Ids{"m08"}));
    EXPECT_EQ(search("gamma NEAR/11 delta"), (Ids{"m08", "m09"}));
    EXPECT_EQ(search("gamma NEAR/9 delta"), Ids{});
    // NEAR/1: adjacent, either order.
    EXPECT_EQ(search("report quarterly", {}), (Ids{"m05", "m06", "m07"}));
    EXPECT_EQ(search("report NEAR/1 quarterly"), (Ids{"m05", "m06", "m07"}));
    EXPECT_EQ(search("notes NEAR/1 quarterly"), (Ids{"m06"}));
    // A chain: one window, n - 1 other words at most inside the group.
    EXPECT_EQ(search("alpha NEAR/4 one NEAR/4 beta"), (Ids{"m03", "m04"}));
    EXPECT_EQ(search("alpha NEAR/3 one NEAR/3 beta"), (Ids{"m04"}));
    // A repeated word needs two occurrences.
    EXPECT_EQ(search("alpha NEAR/5 alpha"), Ids{});
    // Precedence: NEAR binds tighter than AND and NOT.
    EXPECT_EQ(search("alpha NEAR/4 beta OR gamma"), (Ids{"m04", "m08", "m09"}));
    EXPECT_EQ(search("NOT alpha NEAR/4 beta"), all_except({"m04"}));
}

TEST(SearchQuery, NearWithPhraseOperands) {
    // m05: "quarterly report" then 2 words then forecast; m07: forecast, 2 words, the phrase;
    // m06: the phrase far away, and "quarterly notes report forecast" (its words, not the phrase).
    EXPECT_EQ(search("\"quarterly report\" NEAR/3 forecast"), (Ids{"m05", "m07"}));
    EXPECT_EQ(search("forecast NEAR/3 \"quarterly report\""), (Ids{"m05", "m07"}));
    EXPECT_EQ(search("\"quarterly report\" NEAR/2 forecast"), Ids{});
    EXPECT_EQ(search("forecast W/2 \"quarterly report\""), Ids{});
    EXPECT_EQ(search("\"quarterly report\" NEAR/20 forecast"), (Ids{"m05", "m06", "m07"}));
    EXPECT_EQ(search("body:\"quarterly report\" NEAR/3 forecast"), (Ids{"m05", "m07"}));
    EXPECT_EQ(search("\"shows a\" NEAR/1 \"quarterly report\""), (Ids{"m05"}));
    EXPECT_EQ(search("\"quarterly report\" NEAR/1 report"), Ids{});     // the phrase's own word does not count
    EXPECT_EQ(search("\"notes report\" NEAR/1 quarterly"), (Ids{"m06"}));
    // A word TermGenerator splits is a phrase operand too.
    EXPECT_EQ(search("e-mail NEAR/2 ext4"), (Ids{"m08"}));
    EXPECT_EQ(search("e-mail NEAR/1 ext4"), Ids{});
    // Whatever the combination, the matcher may drive the exact check by next() or check().
    EXPECT_EQ(search("forecast NEAR/3 \"quarterly report\" OR alpha"), (Ids{"m03", "m04", "m05", "m07"}));
    EXPECT_EQ(search("forecast NEAR/3 \"quarterly report\" -subject:zoe"), (Ids{"m05"}));
    EXPECT_EQ(search("NOT forecast NEAR/3 \"quarterly report\""), all_except({"m05", "m07"}));
}

TEST(SearchQuery, Wildcards) {
    EXPECT_EQ(search("merg*"), (Ids{"m01", "m02", "m10"}));
    EXPECT_EQ(search("subject:merg*"), (Ids{"m01", "m02"}));
    EXPECT_EQ(search("MERG*"), (Ids{"m01", "m02", "m10"}));
    EXPECT_EQ(search("filename:rep*"), (Ids{"m05"}));
    EXPECT_EQ(search("filename:q1-rep*"), (Ids{"m05"}));   // the whole file name
    EXPECT_EQ(search("filename:report.pdf"), (Ids{"m05"}));
    EXPECT_EQ(search("filename:Q1-Report.pdf"), (Ids{"m05"}));
    EXPECT_EQ(search("from:ali*"), (Ids{"m01", "m04"}));
    EXPECT_EQ(search("from:alice@corp.ex*"), (Ids{"m01"}));
    EXPECT_EQ(search("tag:conf*"), (Ids{"m01"}));
    EXPECT_EQ(search("id:2019*"), (Ids{"m01"}));
    EXPECT_EQ(search("id:m0*"), (Ids{"m01", "m02", "m03", "m04", "m05", "m06", "m07", "m08", "m09"}));
    EXPECT_EQ(search("\"merg*\""), Ids{});                   // quoted: no wildcard

    // More expansions than allowed: Xapian's WildcardError when the query runs.
    auto query = parse_query("body:merg*", {.database = &corpus(), .max_wildcard_terms = 2});
    ASSERT_TRUE(query.ok());
    EXPECT_THROW(run(*query), Xapian::WildcardError);
    auto enough = parse_query("body:merg*", {.database = &corpus(), .max_wildcard_terms = 5});
    ASSERT_TRUE(enough.ok());
    EXPECT_EQ(run(*enough), (Ids{"m01", "m02", "m10"}));
}

TEST(SearchQuery, AddressForms) {
    EXPECT_EQ(search("from:alice@corp.example"), (Ids{"m01"}));
    EXPECT_EQ(search("from:ALICE@Corp.Example"), (Ids{"m01"}));
    EXPECT_EQ(search("from:<alice@corp.example>"), (Ids{"m01"}));
    EXPECT_EQ(search("from:corp.example"), (Ids{"m01", "m03", "m07"}));      // domain and subdomains
    EXPECT_EQ(search("from:@corp.example"), (Ids{"m01", "m03", "m07"}));
    EXPECT_EQ(search("from:mail.corp.example"), (Ids{"m03"}));
    EXPECT_EQ(search("from:alice"), (Ids{"m01", "m04"}));                    // local part; name word
    EXPECT_EQ(search("from:jones"), (Ids{"m03", "m04"}));                    // local-part word; name word
    EXPECT_EQ(search("from:carol.jones"), (Ids{"m03"}));                     // local part
    EXPECT_EQ(search("from:\"Alice Smith\""), (Ids{"m01"}));
    EXPECT_EQ(search("from:\"Smith Alice\""), Ids{});
    EXPECT_EQ(search("from:\"alice\""), (Ids{"m01", "m04"}));
    EXPECT_EQ(search("from:\"alice@corp.example\""), (Ids{"m01"}));
    EXPECT_EQ(search("to:alice"), (Ids{"m02"}));
    EXPECT_EQ(search("to:partner.com"), (Ids{"m01"}));
    EXPECT_EQ(search("from:partner.com"), (Ids{"m02"}));
    EXPECT_EQ(search("cc:erin@corp.example"), (Ids{"m05"}));
    EXPECT_EQ(search("bcc:secret.example"), (Ids{"m05"}));
    EXPECT_EQ(search("bcc:frank"), (Ids{"m05"}));
    EXPECT_EQ(search("participant:bob"), (Ids{"m01", "m02"}));
    EXPECT_EQ(search("participant:\"bob stone\""), (Ids{"m02"}));
    EXPECT_EQ(search("from:(alice OR carol)"), (Ids{"m01", "m03", "m04"}));
    // A free-text word searches participants too.
    EXPECT_EQ(search("alice@corp.example"), (Ids{"m01", "m02"}));
    EXPECT_EQ(search("smith"), (Ids{"m01", "m02"}));
    EXPECT_EQ(search("\"alice smith\""), (Ids{"m01", "m02"}));
    EXPECT_EQ(search("secret.example"), (Ids{"m05"}));
}

TEST(SearchQuery, DomainAndBooleanFields) {
    EXPECT_EQ(search("domain:partner.com"), (Ids{"m01", "m02"}));
    EXPECT_EQ(search("domain:mail.partner.com"), (Ids{"m02"}));
    EXPECT_EQ(search("domain:corp.example"), (Ids{"m01", "m02", "m03", "m05", "m07"}));
    EXPECT_EQ(search("domain:@secret.example"), (Ids{"m05"}));
    EXPECT_EQ(search("tag:confidential"), (Ids{"m01"}));
    EXPECT_EQ(search("tag:CONFIDENTIAL"), (Ids{"m01"}));
    EXPECT_EQ(search("direction:outbound"), (Ids{"m01", "m03"}));
    EXPECT_EQ(search("method:pgp"), (Ids{"m01"}));
    EXPECT_EQ(search("policy:pci"), (Ids{"m07"}));
    EXPECT_EQ(search("hold:case-42"), (Ids{"m07"}));
    EXPECT_EQ(search("hold:case"), Ids{});                  // labels are exact, not words
    EXPECT_EQ(search("retention:7y"), (Ids{"m07"}));
    EXPECT_EQ(search("is:duplicate"), (Ids{"m07"}));
    EXPECT_EQ(search("has:attachment"), (Ids{"m05"}));
    EXPECT_EQ(search("has:pdf"), (Ids{"m05"}));
    EXPECT_EQ(search("type:application/pdf"), (Ids{"m05"}));
    EXPECT_EQ(search("type:application"), (Ids{"m05"}));
    EXPECT_EQ(search("type:\"Application/PDF\""), (Ids{"m05"}));
}

TEST(SearchQuery, Identifiers) {
    EXPECT_EQ(search("id:20190428202154.GE7441@quack2"), (Ids{"m01"}));
    EXPECT_EQ(search("id:<20190428202154.GE7441@quack2>"), (Ids{"m01"}));
    EXPECT_EQ(search("id:20190428202154.ge7441@quack2"), Ids{});   // case kept
    EXPECT_EQ(search("id:CAF+abc@mail.partner.com"), (Ids{"m02"}));  // "XM:CAF..." (make_term)
    EXPECT_EQ(search("id:m02"), (Ids{"m02"}));                      // archive id
    EXPECT_EQ(search("thread:T1"), (Ids{"m01", "m02"}));
    EXPECT_EQ(search("thread:t1"), Ids{});
}

TEST(SearchQuery, AbsoluteDates) {
    EXPECT_EQ(search("date:2024-03"), (Ids{"m01", "m02"}));            // 03-31 23:59:59 included
    EXPECT_EQ(search("date:2024-03-31"), (Ids{"m02"}));
    EXPECT_EQ(search("date:2024-04-01"), (Ids{"m03"}));
    EXPECT_EQ(search("date:2024-02-29"), (Ids{"m05"}));                // a leap day
    EXPECT_EQ(search("date:2024"), (Ids{"m01", "m02", "m03", "m05"}));
    EXPECT_EQ(search("date:2023"), (Ids{"m04"}));                      // 12-31 23:59:59
    EXPECT_EQ(search("date:2024-02-29..2024-03-15"), (Ids{"m01", "m05"}));
    EXPECT_EQ(search("date:2024-03..2024-04"), (Ids{"m01", "m02", "m03"}));
    EXPECT_EQ(search("date:2023..2024-02"), (Ids{"m04", "m05"}));
    EXPECT_EQ(search("date:2024-03-16.."), (Ids{"m02", "m03"}));
    EXPECT_EQ(search("date:..2022-02-10"), (Ids{"m06", "m07"}));
    EXPECT_EQ(search("date:..2022-02-09"), (Ids{"m06"}));
    EXPECT_EQ(search("date:(2023 OR 2024-03)"), (Ids{"m01", "m02", "m04"}));
}

TEST(SearchQuery, RelativeDates) {
    const QueryOptions options{.database = &corpus(), .now = utc(2024, 4, 15)};
    EXPECT_EQ(search("date:30d..", options), (Ids{"m02", "m03"}));            // since 03-16 00:00
    EXPECT_EQ(search("date:30d", options), (Ids{"m02", "m03"}));
    EXPECT_EQ(search("date:31d..", options), (Ids{"m01", "m02", "m03"}));     // since 03-15 00:00
    EXPECT_EQ(search("date:1m..", options), (Ids{"m01", "m02", "m03"}));      // since 03-15 00:00
    EXPECT_EQ(search("date:2w..", options), (Ids{"m03"}));                    // since 04-01 00:00: included
    EXPECT_EQ(search("date:6w..", options), (Ids{"m01", "m02", "m03"}));      // since 03-04
    EXPECT_EQ(search("date:2m..1m", options), (Ids{"m05"}));                  // 02-15 .. 03-15 00:00
    EXPECT_EQ(search("date:1y..", options), (Ids{"m01", "m02", "m03", "m04", "m05"}));
    EXPECT_EQ(search("date:..2y", options), (Ids{"m06", "m07", "m08", "m09"}));  // up to 2022-04-15
    EXPECT_EQ(search("date:2023..1m", options), (Ids{"m04", "m05"}));
    // Month ends: 1 month before 03-31 12:00 is 02-29 12:00 (m05, exactly: included).
    const QueryOptions month_end{.database = &corpus(), .now = utc(2024, 3, 31, 12)};
    EXPECT_EQ(search("date:1m..", month_end), (Ids{"m01", "m02", "m03", "m05"}));
    const QueryOptions just_after{.database = &corpus(), .now = utc(2024, 3, 31, 12, 0, 1)};
    EXPECT_EQ(search("date:1m..", just_after), (Ids{"m01", "m02", "m03"}));
    // 1 year before 2025-02-28 is 2024-02-28; 2024-02-29 12:00 is after it.
    EXPECT_EQ(search("date:1y..2024-02", {.now = utc(2025, 2, 28)}), (Ids{"m05"}));
}

TEST(SearchQuery, SizesAtTheBoundaries) {
    // m01 1048576 (1MB), m02 1048577, m03 1048575, m04 1024, m05 1025, others 500.
    EXPECT_EQ(search("size:>1MB"), (Ids{"m02"}));
    EXPECT_EQ(search("size:>=1MB"), (Ids{"m01", "m02"}));
    EXPECT_EQ(search("size:<1MB"), all_except({"m01", "m02"}));
    EXPECT_EQ(search("size:<=1MB"), all_except({"m02"}));
    EXPECT_EQ(search("size:1MB"), (Ids{"m01"}));
    EXPECT_EQ(search("size:1048576"), (Ids{"m01"}));
    EXPECT_EQ(search("size:1048576B"), (Ids{"m01"}));
    EXPECT_EQ(search("size:1024K"), (Ids{"m01"}));
    EXPECT_EQ(search("size:1mb"), (Ids{"m01"}));
    EXPECT_EQ(search("size:0.0009GB..1MB"), (Ids{"m01", "m03"}));         // 966367.6416: from 966368
    EXPECT_EQ(search("size:1KB..1MB"), (Ids{"m01", "m03", "m04", "m05"}));
    EXPECT_EQ(search("size:1KB.."), (Ids{"m01", "m02", "m03", "m04", "m05"}));
    EXPECT_EQ(search("size:..1KB"), all_except({"m01", "m02", "m03", "m05"}));
    EXPECT_EQ(search("size:>1KB"), (Ids{"m01", "m02", "m03", "m05"}));
    EXPECT_EQ(search("size:>1023.5"), (Ids{"m01", "m02", "m03", "m04", "m05"}));
    EXPECT_EQ(search("size:<1024.5"), all_except({"m01", "m02", "m03", "m05"}));
    EXPECT_EQ(search("size:>=1.0009765625K"), (Ids{"m01", "m02", "m03", "m05"}));  // 1025 exactly
    EXPECT_EQ(search("size:<=1.0009765625K"), all_except({"m01", "m02", "m03"}));
    EXPECT_EQ(search("size:1.5KB"), Ids{});
    EXPECT_EQ(search("size:<1"), Ids{});
}

TEST(SearchQuery, NegationOnly) {
    EXPECT_EQ(search("NOT tag:confidential"), all_except({"m01"}));
    EXPECT_EQ(search("-tag:confidential"), all_except({"m01"}));
    EXPECT_EQ(search("-merger"), all_except({"m01", "m02"}));
    EXPECT_EQ(search("NOT merger NOT forecast"), all_except({"m01", "m02", "m05", "m06", "m07"}));
    EXPECT_EQ(search("NOT NOT tag:confidential"), (Ids{"m01"}));
    EXPECT_EQ(search("-(merger OR forecast)"), all_except({"m01", "m02", "m05", "m06", "m07"}));
    EXPECT_EQ(search("*"), kAll);
    EXPECT_EQ(search("* NOT tag:confidential"), all_except({"m01"}));
    EXPECT_EQ(search("merger -tag:confidential"), (Ids{"m02"}));
    EXPECT_EQ(search("(NOT tag:confidential) merger"), (Ids{"m02"}));
    EXPECT_EQ(search("tag:confidential OR NOT merger"), all_except({"m02"}));
}

TEST(SearchQuery, PrecedenceAndGroups) {
    // a OR b c  is  a OR (b AND c)
    EXPECT_EQ(search("direction:outbound OR direction:inbound method:pgp"), (Ids{"m01", "m03"}));
    EXPECT_EQ(search("(direction:outbound OR direction:inbound) method:pgp"), (Ids{"m01"}));
    EXPECT_EQ(search("direction:outbound OR direction:inbound AND method:tls"), (Ids{"m01", "m02", "m03"}));
    // NOT binds tighter than OR and AND.
    EXPECT_EQ(search("NOT direction:outbound OR tag:confidential"), all_except({"m03"}));
    EXPECT_EQ(search("NOT (direction:outbound OR tag:confidential)"), all_except({"m01", "m03"}));
    EXPECT_EQ(search("NOT direction:outbound tag:confidential"), Ids{});
    // field:( ... ) applies to every bare word inside; an inner field wins.
    EXPECT_EQ(search("subject:(merger OR party)"), (Ids{"m01", "m02", "m07"}));
    EXPECT_EQ(search("subject:(zoe -party)"), Ids{});
    EXPECT_EQ(search("subject:(\"quarterly report\" OR zoe)"), (Ids{"m07"}));
    EXPECT_EQ(search("subject:(body:forecast)"), (Ids{"m05", "m06", "m07"}));
    EXPECT_EQ(search("body:(merg* -mergeable)"), (Ids{"m01", "m02"}));
    EXPECT_EQ(search("body:(forecast NEAR/3 \"quarterly report\")"), (Ids{"m05", "m07"}));
}

TEST(SearchQuery, ErrorsNameTheColumn) {
    EXPECT_EQ(error_of(""), "bad query at column 1: empty query");
    EXPECT_EQ(error_of("   "), "bad query at column 1: empty query");
    EXPECT_EQ(error_of("(merger OR acquisition"),
              "bad query at column 23: ')' expected to close the '(' at column 1");
    EXPECT_EQ(error_of("a (b (c) d"), "bad query at column 11: ')' expected to close the '(' at column 3");
    EXPECT_EQ(error_of("merger)"), "bad query at column 7: unexpected ')': there is no '(' to close");
    EXPECT_EQ(error_of("()"), "bad query at column 1: empty parentheses");
    EXPECT_EQ(error_of("\"quarterly report"),
              "bad query at column 1: unterminated quote: the '\"' here has no closing '\"'");
    EXPECT_EQ(error_of("zoë \"abc"),   // columns count characters, not bytes
              "bad query at column 5: unterminated quote: the '\"' here has no closing '\"'");
    EXPECT_EQ(error_of("form:alice"),
              "bad query at column 1: unknown field 'form' (fields: body, subject, attachment, filename, from, to, "
              "cc, bcc, participant, domain, id, thread, direction, method, policy, tag, hold, retention, type, has, "
              "is, duplicate, date, size)");
    EXPECT_TRUE(error_of("Zoë form:(x)").starts_with("bad query at column 5: unknown field 'form' (fields: "));
    EXPECT_EQ(error_of("from:"), "bad query at column 6: empty value after 'from:'");
    EXPECT_EQ(error_of("merger tag: x"), "bad query at column 12: empty value after 'tag:'");
    EXPECT_EQ(error_of("subject:\"\""), "bad query at column 9: empty phrase");
    EXPECT_EQ(error_of("merger !!!"), "bad query at column 8: '!!!' has no word to search for");
    EXPECT_EQ(error_of("date:xyz"),
              "bad query at column 6: 'date:' needs YYYY, YYYY-MM, YYYY-MM-DD, a relative Nd/Nw/Nm/Ny or a range A..B");
    EXPECT_EQ(error_of("date:2024-02-30"), "bad query at column 6: '2024-02-30' is not a valid date");
    EXPECT_EQ(error_of("date:2023-02-29"), "bad query at column 6: '2023-02-29' is not a valid date");
    EXPECT_EQ(error_of("date:2024-01..2024-13"), "bad query at column 15: '2024-13' is not a valid date");
    EXPECT_EQ(error_of("date:2024-04..2024-03"),
              "bad query at column 6: the date range '2024-04..2024-03' ends before it starts");
    EXPECT_EQ(error_of("date:.."),
              "bad query at column 6: 'date:' needs YYYY, YYYY-MM, YYYY-MM-DD, a relative Nd/Nw/Nm/Ny or a range A..B");
    EXPECT_EQ(error_of("date:99999d"), "bad query at column 6: '99999d' is too far back (at most 9999)");
    const std::string size_forms = "'size:' needs a number of bytes with an optional unit B, K/KB, M/MB or G/GB "
                                   "(1024-based), as N, >N, >=N, <N, <=N or a range A..B";
    EXPECT_EQ(error_of("size:>1XB"), "bad query at column 7: " + size_forms);
    EXPECT_EQ(error_of("size:>=x"), "bad query at column 8: " + size_forms);
    EXPECT_EQ(error_of("size:1KB..2QB"), "bad query at column 11: " + size_forms);
    EXPECT_EQ(error_of("size:1.3KB"), "bad query at column 6: '1.3KB' is not a whole number of bytes");
    EXPECT_EQ(error_of("size:2MB..1MB"), "bad query at column 6: the size range '2MB..1MB' is empty");
    EXPECT_EQ(error_of("size:<0"), "bad query at column 6: the size range '<0' is empty");
    EXPECT_EQ(error_of("merger AND"), "bad query at column 8: 'AND' needs a term on each side");
    EXPECT_EQ(error_of("AND merger"), "bad query at column 1: 'AND' needs a term on each side");
    EXPECT_EQ(error_of("merger OR OR x"), "bad query at column 8: 'OR' needs a term on each side");
    EXPECT_EQ(error_of("(merger OR)"), "bad query at column 9: 'OR' needs a term on each side");
    EXPECT_EQ(error_of("merger NOT"), "bad query at column 8: 'NOT' needs a term after it");
    EXPECT_EQ(error_of("merger - x"), "bad query at column 8: '-' has no word to search for");
    EXPECT_EQ(error_of("NEAR merger"), "bad query at column 1: 'NEAR' needs a word or phrase on each side");
    EXPECT_EQ(error_of("merger NEAR/3"), "bad query at column 8: 'NEAR/3' needs a word or phrase on each side");
    EXPECT_EQ(error_of("merger NEAR/0 x"),
              "bad query at column 8: 'NEAR/0': the distance of NEAR/n and W/n must be a whole number from 1 to 1000");
    EXPECT_EQ(error_of("merger NEAR/x y"),
              "bad query at column 8: 'NEAR/x': the distance of NEAR/n and W/n must be a whole number from 1 to 1000");
    EXPECT_EQ(error_of("(a b) NEAR c"), "bad query at column 1: the operands of 'NEAR' must be words or \"phrases\"");
    EXPECT_EQ(error_of("a W/2 merg*"), "bad query at column 7: the operands of 'W/2' must be words or \"phrases\"");
    EXPECT_EQ(error_of("a NEAR tag:x"), "bad query at column 8: the operands of 'NEAR' must be words or \"phrases\"");
    EXPECT_EQ(error_of("a NEAR NOT b"), "bad query at column 8: the operands of 'NEAR' must be words or \"phrases\"");
    EXPECT_EQ(error_of("subject:a NEAR body:b"), "bad query at column 16: the operands of NEAR must search the same field");
    EXPECT_EQ(error_of("m*"), "bad query at column 1: a wildcard needs at least 2 characters before '*'");
    EXPECT_EQ(error_of("subject:m*"), "bad query at column 9: a wildcard needs at least 2 characters before '*'");
    EXPECT_EQ(error_of("ë*"), "bad query at column 1: a wildcard needs at least 2 characters before '*'");
    EXPECT_EQ(error_of("mer*ger"), "bad query at column 4: '*' can only end a word");
    EXPECT_EQ(error_of("subject:e-ma*"), "bad query at column 9: a wildcard must be a single word");
    EXPECT_EQ(error_of("date:2024*"),
              "bad query at column 6: 'date:' needs YYYY, YYYY-MM, YYYY-MM-DD, a relative Nd/Nw/Nm/Ny or a range A..B");
    EXPECT_EQ(error_of(std::string(150, '(') + "a" + std::string(150, ')')),
              "bad query at column 101: the query is nested too deeply");
    std::string nots;
    for (int i = 0; i < 150; ++i) nots += "NOT ";
    EXPECT_EQ(error_of(nots + "a"), "bad query at column 401: the query is nested too deeply");
    // Not errors: operators only in capitals, unknown words with ':' that are not field names.
    EXPECT_EQ(error_of("merger near acquisition or not"), "ok");
    EXPECT_EQ(error_of("10:30 W/O"), "ok");
}

TEST(SearchQuery, ParsingIsPureAndRepeatable) {
    // The same parsed query runs twice (the exact NEAR check clones its state per run).
    auto query = parse_query("forecast NEAR/3 \"quarterly report\"");
    ASSERT_TRUE(query.ok());
    EXPECT_EQ(run(*query), (Ids{"m05", "m07"}));
    EXPECT_EQ(run(*query), (Ids{"m05", "m07"}));
}

}  // namespace
}  // namespace postvault::search
