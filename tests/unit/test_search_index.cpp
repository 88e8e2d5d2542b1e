// Unit tests for search/document.h and search/index.h: documents, thread linking in any
// arrival order, exact and near duplicates, idempotent indexing, metadata updates, bulk loads.
#include <gtest/gtest.h>
#include <xapian.h>

#include <algorithm>
#include <fstream>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "search/document.h"
#include "search/index.h"
#include "search/positions.h"
#include "search/query.h"
#include "search/schema.h"
#include "search/searcher.h"
#include "temp_dir.h"

using namespace postvault;
using namespace postvault::search;

namespace {

Content message(const std::string& message_id, std::vector<std::string> references, const std::string& body,
                const std::string& subject = "hello") {
    Content content;
    content.message_id = message_id;
    content.references = std::move(references);
    content.body = body;
    content.subject = subject;
    content.from = {{"Alice Smith", "alice@corp.example"}};
    content.to = {{"", "bob@partner.example"}};
    content.date = 1700000000;
    return content;
}

nlohmann::json record(const std::string& id) {
    return {{"id", id}, {"size", 1234}, {"direction", "outbound"}, {"from", "alice@corp.example"},
            {"recipients", {"bob@partner.example", "carol@hidden.example"}}, {"outcomes", nlohmann::json::array()}};
}

std::string long_text(int seed, int words = 200) {
    std::string text;
    for (int i = 0; i < words; ++i) text += "word" + std::to_string((i * 7919 + seed * 104729) % 100003) + " ";
    return text;
}

class IndexTest : public ::testing::Test {
protected:
    void SetUp() override {
        config.directory = (dir.path() / "index").string();
        auto opened = IndexWriter::open(config);
        ASSERT_TRUE(opened) << opened.error().message;
        writer = std::move(*opened);
    }
    void add(const std::string& id, const Content& content, nlohmann::json rec = {}) {
        if (rec.is_null()) rec = record(id);
        ASSERT_TRUE(writer->add(build_document(id, rec, content)));
    }
    Xapian::Database reader() {
        EXPECT_TRUE(writer->commit());
        return Xapian::Database((dir.path() / "index" / "current").string());
    }
    static std::vector<std::string> ids_with(const Xapian::Database& db, const std::string& term) {
        std::vector<std::string> ids;
        for (auto it = db.postlist_begin(term); it != db.postlist_end(term); ++it)
            ids.push_back(decode_data(db.get_document(*it).get_data())["id"]);
        std::sort(ids.begin(), ids.end());
        return ids;
    }
    // Every document's data carries the same links as its values (document.h, copy_links_to_data):
    // search results read them from the data.
    static void expect_links_in_data(const Xapian::Database& db) {
        for (auto it = db.postlist_begin(""); it != db.postlist_end(""); ++it) {
            const Xapian::Document document = db.get_document(*it);
            const auto data = decode_data(document.get_data());
            EXPECT_EQ(data.value("thread", "?"), document.get_value(slot_thread)) << data.dump();
            EXPECT_EQ(data.value("duplicate", "?"), document.get_value(slot_duplicate)) << data.dump();
            EXPECT_EQ(data.value("duplicate_of", "?"), document.get_value(slot_duplicate_of)) << data.dump();
            EXPECT_EQ(data.value("near_duplicate_of", "?"), document.get_value(slot_near_duplicate_of)) << data.dump();
        }
    }
    static std::string thread_of(const Xapian::Database& db, const std::string& id) {
        auto it = db.postlist_begin("Q" + id);
        return it == db.postlist_end("Q" + id) ? "" : db.get_document(*it).get_value(slot_thread);
    }

    test_support::TempDir dir;
    postvault::SearchConfig config;
    std::unique_ptr<IndexWriter> writer;
};

}  // namespace

TEST_F(IndexTest, DocumentHasFieldTermsValuesAndBlindCopies) {
    add("m1", message("a@x", {}, "The merger was approved"));
    auto db = reader();
    auto doc = db.get_document(*db.postlist_begin("Qm1"));
    std::vector<std::string> terms(doc.termlist_begin(), doc.termlist_end());
    auto has = [&](const std::string& t) { return std::find(terms.begin(), terms.end(), t) != terms.end(); };
    EXPECT_TRUE(has("merger"));
    EXPECT_FALSE(has("Zmerger"));  // no stems: the query parser expands words (query.h)
    EXPECT_TRUE(has("Shello"));
    EXPECT_TRUE(has("XFalice@corp.example"));
    EXPECT_TRUE(has("XFcorp.example"));
    EXPECT_TRUE(has("XFalice"));
    EXPECT_TRUE(has("XFsmith"));  // display name word
    EXPECT_TRUE(has("XTbob@partner.example"));
    EXPECT_TRUE(has("XBcarol@hidden.example"));   // envelope recipient not in To/Cc
    EXPECT_FALSE(has("XBbob@partner.example"));   // visible recipient is not a blind copy
    EXPECT_FALSE(has("XPcarol@hidden.example"));  // participant: is from/to/cc/bcc at query time
    EXPECT_TRUE(has("XDhidden.example"));
    EXPECT_TRUE(has("XRoutbound"));
    EXPECT_TRUE(has("XMa@x"));
    EXPECT_EQ(Xapian::sortable_unserialise(doc.get_value(slot_date)), 1700000000.0);
    EXPECT_EQ(Xapian::sortable_unserialise(doc.get_value(slot_size)), 1234.0);
    EXPECT_EQ(doc.get_value(slot_month), "2023-11");
    EXPECT_EQ(doc.get_value(slot_sender_domain), "corp.example");
}

TEST_F(IndexTest, ThreadsLinkInAnyArrivalOrder) {
    // c replies to b, b to a; they arrive c, a, b. d and e answer a parent never archived.
    add("c", message("C@x", {"A@x", "B@x"}, "third"));
    add("a", message("A@x", {}, "first"));
    auto db = reader();
    EXPECT_EQ(thread_of(db, "a"), "a");
    EXPECT_EQ(thread_of(db, "c"), "a");  // c referenced A directly
    add("b", message("B@x", {"A@x"}, "second"));
    add("e", message("E@x", {"MISSING@x"}, "fifth"));
    add("d", message("D@x", {"MISSING@x"}, "fourth"));
    db = reader();
    for (const char* id : {"a", "b", "c"}) EXPECT_EQ(thread_of(db, id), "a") << id;
    EXPECT_EQ(thread_of(db, "d"), "d");
    EXPECT_EQ(thread_of(db, "e"), "d");  // siblings under a missing parent, merged to the smallest id
    EXPECT_EQ(ids_with(db, "XHa"), (std::vector<std::string>{"a", "b", "c"}));
    EXPECT_EQ(ids_with(db, "XHe"), std::vector<std::string>{});
    expect_links_in_data(db);
}

TEST_F(IndexTest, AKeptSearcherFindsWordsWithTheSameStemAddedSinceItsLastQuery) {
    // The Searcher remembers stem expansions per index revision (query.h, StemExpansions).
    add("m1", message("a@x", {}, "the merger talks"));
    ASSERT_TRUE(writer->commit());
    auto searcher = Searcher::open(config.directory, "english");
    ASSERT_TRUE(searcher) << searcher.error().message;
    EXPECT_EQ(*(*searcher)->count("merger"), 1u);
    EXPECT_EQ(*(*searcher)->count("merger"), 1u);  // from the remembered expansion
    add("m2", message("b@x", {}, "two mergers"));    // a word of the same stem, new to the index
    ASSERT_TRUE(writer->commit());
    ASSERT_TRUE((*searcher)->refresh());
    EXPECT_EQ(*(*searcher)->count("merger"), 2u);
    EXPECT_EQ(*(*searcher)->count("mergers"), 2u);
    // Refreshes that find the index as it was (by its files' stamps), then one after a commit.
    ASSERT_TRUE((*searcher)->refresh());
    ASSERT_TRUE((*searcher)->refresh());
    EXPECT_EQ(*(*searcher)->count("merger"), 2u);
    add("m3", message("c@x", {}, "a third merger"));
    ASSERT_TRUE(writer->commit());
    ASSERT_TRUE((*searcher)->refresh());
    EXPECT_EQ(*(*searcher)->count("merger"), 3u);
}

TEST_F(IndexTest, ResultLinesAreZstdCborAndIndexesWithJsonTextOrBareCborLinesStillAnswer) {
    add("m1", message("a@x", {}, "the merger talks", "Fusion \xff news"));  // a byte that is not UTF-8
    auto db = reader();
    const Xapian::docid docid = *db.postlist_begin("Qm1");
    const std::string stored = db.get_document(docid).get_data();
    EXPECT_EQ(static_cast<unsigned char>(stored.front()), 0x28);  // a zstd frame
    EXPECT_EQ(decode_data(stored)["subject"], "Fusion \xef\xbf\xbd news");
    auto search = [&] {
        auto searcher = Searcher::open(config.directory, "english");
        EXPECT_TRUE(searcher) << searcher.error().message;
        SearchRequest request;
        request.query = "merger";
        auto result = (*searcher)->search(request);
        EXPECT_TRUE(result) << result.error().message;
        EXPECT_EQ(result->hits.size(), 1u);
        return result->hits.empty() ? Hit() : result->hits[0];
    };
    const Hit hit = search();
    EXPECT_EQ(hit.id, "m1");
    EXPECT_EQ(hit.from, "Alice Smith <alice@corp.example>");
    EXPECT_EQ(hit.date, 1700000000);
    EXPECT_EQ(hit.size, 1234u);
    EXPECT_EQ(hit.thread, "m1");

    // A line as indexes before wrote it: JSON text, without the links (read from the values).
    writer.reset();
    {
        Xapian::WritableDatabase old((dir.path() / "index" / "current").string());
        Xapian::Document document = old.get_document(docid);
        document.set_data(R"({"id":"m1","date":1700000000,"from":"Old <old@x>","to":"","subject":"s","size":7})");
        old.replace_document(docid, document);
        old.commit();
    }
    const Hit old_hit = search();
    EXPECT_EQ(old_hit.from, "Old <old@x>");
    EXPECT_EQ(old_hit.size, 7u);
    EXPECT_EQ(old_hit.thread, "m1");

    // Bare CBOR, as written for a while.
    {
        Xapian::WritableDatabase old((dir.path() / "index" / "current").string());
        Xapian::Document document = old.get_document(docid);
        const auto cbor = nlohmann::json::to_cbor({{"id", "m1"}, {"from", "Cbor <c@x>"}, {"thread", "t"}});
        document.set_data(std::string(cbor.begin(), cbor.end()));
        old.replace_document(docid, document);
        old.commit();
    }
    const Hit cbor_hit = search();
    EXPECT_EQ(cbor_hit.from, "Cbor <c@x>");
    EXPECT_EQ(cbor_hit.thread, "t");
}

TEST_F(IndexTest, PagesThroughMessagesOfOneSecondEachOnceWithOldAndNewSortKeys) {
    // 23 messages of one second, and one a second later; a page of 5 at a time.
    for (int i = 0; i < 24; ++i) {
        Content content = message("M" + std::to_string(i) + "@x", {}, "same second");
        content.date = i < 23 ? 1700000000 : 1700000001;
        add("id" + std::to_string(100 + i), content);
    }
    ASSERT_TRUE(writer->commit());
    // Six keep the key indexes wrote before: the date, then the whole id.
    writer.reset();
    {
        Xapian::WritableDatabase db((dir.path() / "index" / "current").string());
        for (int i = 0; i < 6; ++i) {
            const std::string id = "id" + std::to_string(100 + i);
            const Xapian::docid docid = *db.postlist_begin("Q" + id);
            Xapian::Document document = db.get_document(docid);
            const std::string key = document.get_value(slot_sort_key);
            ASSERT_EQ(key.size(), 15u);
            document.add_value(slot_sort_key, key.substr(0, 8) + id);
            db.replace_document(docid, document);
        }
        db.commit();
    }
    auto searcher = Searcher::open(config.directory, "english");
    ASSERT_TRUE(searcher) << searcher.error().message;
    std::vector<std::string> seen;
    SearchRequest request;
    request.query = "same";
    request.limit = 5;
    for (int page = 0; page < 10; ++page) {
        auto result = (*searcher)->search(request);
        ASSERT_TRUE(result) << result.error().message;
        EXPECT_EQ(result->total, 24u);
        for (const auto& hit : result->hits) seen.push_back(hit.id);
        if (result->next_cursor.empty()) break;
        request.cursor = result->next_cursor;
    }
    ASSERT_EQ(seen.size(), 24u);
    EXPECT_EQ(seen.front(), "id123");  // the later second first
    EXPECT_EQ(std::set<std::string>(seen.begin(), seen.end()).size(), 24u);
}

TEST_F(IndexTest, DatePagesReadMonthByMonthMatchAFullSortAndAnIndexWithoutMonthTerms) {
    // 60 messages, indexed out of date order: 30 over 40 months (some months empty, one message
    // before 1970), then 30 in the two months after; every third one does not match. Pages of
    // a few are read by month (the newest months hold them), pages of 100 by a sort of all.
    std::vector<int> order(60);
    for (int i = 0; i < 60; ++i) order[static_cast<std::size_t>(i)] = (i * 37) % 60;
    for (int i : order) {
        Content content = message("M" + std::to_string(i) + "@x", {}, i % 3 ? "wanted text" : "other text");
        const std::int64_t day = 86400;
        content.date = i == 0 ? -day : i < 30 ? 1500000000 + i * 40 * day + (i % 7) * 3600 : 1500000000 + 1200 * day + (i - 30) * 2 * day;
        add("id" + std::to_string(100 + i), content);
    }
    ASSERT_TRUE(writer->commit());
    writer.reset();
    const auto pages = [&](const std::string& query, std::size_t limit) {
        auto searcher = Searcher::open(config.directory, "english");
        EXPECT_TRUE(searcher) << searcher.error().message;
        std::vector<std::string> seen;
        SearchRequest request;
        request.query = query;
        request.limit = limit;
        for (int page = 0; page < 100; ++page) {
            auto result = (*searcher)->search(request);
            EXPECT_TRUE(result) << result.error().message;
            if (!result) break;
            for (const auto& hit : result->hits) seen.push_back(hit.id);
            if (result->next_cursor.empty()) break;
            request.cursor = result->next_cursor;
        }
        return seen;
    };
    std::vector<std::string> expected;  // newest first
    for (int i = 59; i >= 0; --i)
        if (i % 3) expected.push_back("id" + std::to_string(100 + i));
    std::vector<std::string> all;
    for (int i = 59; i >= 0; --i) all.push_back("id" + std::to_string(100 + i));
    for (std::size_t limit : {1u, 3u, 7u, 100u}) {
        EXPECT_EQ(pages("wanted", limit), expected) << "page size " << limit;
        EXPECT_EQ(pages("text", limit), all) << "page size " << limit;
    }
    {  // one document without its month term: the index no longer qualifies, pages are sorted whole
        Xapian::WritableDatabase db((dir.path() / "index" / "current").string());
        ASSERT_GT(db.get_termfreq(month_term(1500000000 + 59 * 20 * 86400)), 0u);
        const Xapian::docid docid = *db.postlist_begin("Qid150");
        Xapian::Document document = db.get_document(docid);
        for (auto term = document.termlist_begin(); term != document.termlist_end(); ++term)
            if ((*term).starts_with(kMonthPrefix)) {
                document.remove_term(*term);
                break;
            }
        db.replace_document(docid, document);
        db.commit();
    }
    for (std::size_t limit : {1u, 7u}) EXPECT_EQ(pages("wanted", limit), expected) << "page size " << limit;
}

TEST_F(IndexTest, DateRangesOverMonthTermsMatchWhatValueRangesMatch) {
    const std::int64_t day = 86400;
    const std::vector<std::int64_t> dates = {
        -5 * day, -400 * day, 0, 951782400,     // 1969-12-27, 1968, the epoch, 2000-02-29
        1583020799, 1583020800, 1585699199,     // 2020-02-29T23:59:59, 2020-03-01, 2020-03-31T23:59:59
        1584230400, 1590969600, 1593561599,     // 2020-03-15, 2020-06-01, 2020-06-30T23:59:59
        1593561600, 1700000000, 1703980800,     // 2020-07-01, 2023-11-14, 2023-12-31
        253402300799, 253402300800 + 40 * day,  // the last second of 9999, in 10000
    };
    for (std::size_t i = 0; i < dates.size(); ++i) {
        Content content = message("M" + std::to_string(i) + "@x", {}, "text");
        content.date = dates[i];
        add("id" + std::to_string(100 + i), content);
    }
    ASSERT_TRUE(writer->commit());
    const std::int64_t now = 1703980800 + 10 * day;
    auto searcher = Searcher::open(config.directory, "english");
    ASSERT_TRUE(searcher) << searcher.error().message;
    Xapian::Database db = reader();
    for (const std::string query :
         {"date:2020-03..2020-06", "date:2020-03-15..2020-06-30", "date:2020", "date:2020-03", "date:2020-03-31",
          "date:..2000-02", "date:2000-03..", "date:1969..1970", "date:..1969-12-31", "date:1970-01-01",
          "date:9999..", "date:9999-12", "date:30d..", "date:400d", "date:2021..2022", "date:1970-01..2020-02",
          "text date:2020-03..2023-11-14"}) {
        QueryOptions values;  // the value ranges alone
        values.database = &db;
        values.now = now;
        auto parsed = parse_query(query, values);
        ASSERT_TRUE(parsed) << query;
        Xapian::Enquire enquire(db);
        enquire.set_query(*parsed);
        const Xapian::doccount expected = enquire.get_mset(0, db.get_doccount()).size();
        auto counted = (*searcher)->count(query, false, now);
        ASSERT_TRUE(counted) << query << ": " << counted.error().message;
        EXPECT_EQ(*counted, expected) << query;
    }
    auto all = (*searcher)->count("date:..2020-06", false, now);
    ASSERT_TRUE(all);
    EXPECT_EQ(*all, 10u);  // and the value ranges count right
}

TEST_F(IndexTest, IndexingTwiceLeavesOneDocument) {
    add("m1", message("a@x", {}, "text"));
    add("m1", message("a@x", {}, "text"));
    EXPECT_EQ(reader().get_doccount(), 1u);
}

TEST_F(IndexTest, LaterExactDuplicatesAreFlaggedAndNameTheOriginal) {
    add("m1", message("a@x", {}, "same body"));
    add("m2", message("a@x", {}, "same   body"));  // whitespace does not matter
    add("m3", message("b@x", {}, "other body"));
    add("m1", message("a@x", {}, "same body"));    // re-indexing the original does not flag it
    auto db = reader();
    EXPECT_EQ(ids_with(db, "XIduplicate"), std::vector<std::string>{"m2"});
    EXPECT_EQ(db.get_document(*db.postlist_begin("Qm2")).get_value(slot_duplicate_of), "m1");
}

TEST_F(IndexTest, NearDuplicatesAreFlaggedAndUnrelatedAreNot) {
    const std::string base = long_text(1);
    std::string edited = base;
    edited.replace(edited.find(' ', 400), 1, " inserted ");  // one word more in 200
    add("m1", message("a@x", {}, base, "one"));
    add("m2", message("b@x", {}, edited, "two"));
    add("m3", message("c@x", {}, long_text(2), "three"));
    auto db = reader();
    EXPECT_EQ(ids_with(db, "XInear-duplicate"), std::vector<std::string>{"m2"});
    EXPECT_EQ(db.get_document(*db.postlist_begin("Qm2")).get_value(slot_near_duplicate_of), "m1");
    EXPECT_TRUE(ids_with(db, "XIduplicate").empty());
}

TEST_F(IndexTest, AnOriginalIndexedLateIsNamedByItsLaterCopies) {
    // Parallel imports and concurrent sessions commit out of archive-id order.
    const std::string base = long_text(4);
    std::string edited = base;
    edited.replace(edited.find(' ', 300), 1, " inserted ");
    add("m3", message("c@x", {}, "same body", "copy"));
    add("m5", message("e@x", {}, edited, "edited"));
    add("m2", message("b@x", {}, "same body", "copy"));   // an earlier copy, indexed later
    add("m4", message("d@x", {}, base, "base"));
    add("m1", message("a@x", {}, "same  body", "copy"));  // the original, indexed last
    auto db = reader();
    EXPECT_EQ(ids_with(db, "XIduplicate"), (std::vector<std::string>{"m2", "m3"}));
    for (const char* id : {"m2", "m3"})
        EXPECT_EQ(db.get_document(*db.postlist_begin(std::string("Q") + id)).get_value(slot_duplicate_of), "m1");
    EXPECT_EQ(ids_with(db, "XInear-duplicate"), std::vector<std::string>{"m5"});
    EXPECT_EQ(db.get_document(*db.postlist_begin("Qm5")).get_value(slot_near_duplicate_of), "m4");
    expect_links_in_data(db);
}

TEST(SearchMinHash, SimilarityTracksOverlap) {
    const auto a = minhash_signature(long_text(1));
    const auto b = minhash_signature(long_text(1));
    const auto c = minhash_signature(long_text(3));
    ASSERT_EQ(a.size(), kMinHashCount);
    EXPECT_EQ(minhash_similarity(a, b), 1.0);
    EXPECT_LT(minhash_similarity(a, c), 0.2);
    EXPECT_TRUE(minhash_signature("too short to compare").empty());
    EXPECT_EQ(decode_minhash(encode_minhash(a)), a);
    EXPECT_EQ(band_terms(a).size(), kMinHashBands);
}

// Signatures are stored in the index: a change of the values (the AVX2 build of the hashing
// included) would keep every message indexed before from matching one indexed after.
TEST(SearchMinHash, SignatureValuesAreFixed) {
    std::string text;
    for (int i = 0; i < 40; ++i) text += "word" + std::to_string(i * 7 % 13) + "x" + std::to_string(i) + " ";
    EXPECT_EQ(minhash_signature(text),
              (std::vector<std::uint32_t>{5830, 6359, 231,  64,   2946, 4026, 826,  10987, 4092, 2904, 4209,
                                          1442, 447,  325,  1247, 2581, 3182, 294,  5348,  1753, 5136, 41,
                                          879,  480,  6719, 921,  2941, 1764, 511,  101,   39,   898}));
}

TEST_F(IndexTest, MetadataUpdateReplacesLabelsAndKeepsContent) {
    add("m1", message("a@x", {}, "merger"));
    auto updated = record("m1");
    updated["outcomes"] = {{{"address", "bob@partner.example"}, {"state", "delivered"}, {"method", "tls"}}};
    updated["tags"] = {"Confidential"};
    updated["direction"] = "inbound";
    ASSERT_TRUE(writer->update_metadata("m1", updated));
    auto db = reader();
    EXPECT_EQ(ids_with(db, "XEtls"), std::vector<std::string>{"m1"});
    EXPECT_EQ(ids_with(db, "XGconfidential"), std::vector<std::string>{"m1"});
    EXPECT_EQ(ids_with(db, "XRinbound"), std::vector<std::string>{"m1"});
    EXPECT_TRUE(ids_with(db, "XRoutbound").empty());
    EXPECT_EQ(ids_with(db, "merger"), std::vector<std::string>{"m1"});
    EXPECT_EQ(writer->update_metadata("nope", updated).error().code, "search.not_found");
}

TEST_F(IndexTest, ABulkLoadSwapsInANewDatabaseWhenFinished) {
    add("old", message("o@x", {}, "old"));
    ASSERT_TRUE(writer->commit());
    ASSERT_TRUE(writer->bulk_begin(false, 1));  // one document per part: three parts
    for (auto [id, content] : {std::pair{"n1", message("n1@x", {}, "new body", "rebuilt")},
                               std::pair{"n2", message("n2@x", {"n1@x"}, "reply")},
                               std::pair{"n3", message("n3@x", {}, "third")}}) {
        auto added = writer->bulk_add(build_document(id, record(id), content));
        ASSERT_TRUE(added) << added.error().message;
        EXPECT_TRUE(*added);
    }
    auto again = writer->bulk_add(build_document("n2", record("n2"), message("n2@x", {"n1@x"}, "reply")));
    ASSERT_TRUE(again);
    EXPECT_FALSE(*again);  // already in the load: added after it
    EXPECT_EQ(reader().get_doccount(), 1u);  // readers see the old database until the end
    auto finished = writer->bulk_finish();
    ASSERT_TRUE(finished) << finished.error().message;
    EXPECT_EQ(*finished, 3u);
    EXPECT_FALSE(writer->bulk_open());
    auto db = reader();
    EXPECT_EQ(db.get_doccount(), 3u);
    EXPECT_TRUE(ids_with(db, "Qold").empty());
    EXPECT_EQ(thread_of(db, "n2"), "n1");
    EXPECT_EQ(ids_with(db, "body"), std::vector<std::string>{"n1"});
    // The writer goes on in the new database.
    add("n4", message("n4@x", {}, "later"));
    EXPECT_EQ(reader().get_doccount(), 4u);
    std::vector<std::string> entries;
    for (const auto& entry : std::filesystem::directory_iterator(dir.path() / "index"))
        entries.push_back(entry.path().filename().string());
    std::sort(entries.begin(), entries.end());
    EXPECT_EQ(entries, (std::vector<std::string>{"current", "db-000002"}));  // no parts left
    // Its shards (one per writer, up to two) are named by a stub in the database directory.
    const auto shards = std::min(2u, std::max(1u, std::thread::hardware_concurrency()));
    std::ifstream stub(dir.path() / "index" / "db-000002" / "XAPIANDB");
    std::string lines((std::istreambuf_iterator<char>(stub)), std::istreambuf_iterator<char>());
    EXPECT_EQ(lines, shards == 2 ? "glass s0\nglass s1\n" : "glass s0\n");

    // A load on top of a sharded database, then a compaction into one database.
    ASSERT_TRUE(writer->bulk_begin(true, 1));
    ASSERT_TRUE(writer->bulk_add(build_document("n5", record("n5"), message("n5@x", {"n2@x"}, "late reply"))));
    finished = writer->bulk_finish();
    ASSERT_TRUE(finished) << finished.error().message;
    EXPECT_EQ(*finished, 5u);
    EXPECT_EQ(thread_of(reader(), "n5"), "n1");
    auto compacted = writer->compact();
    ASSERT_TRUE(compacted) << compacted.error().message;
    db = reader();
    EXPECT_EQ(db.get_doccount(), 5u);
    for (const char* id : {"n1", "n2", "n3", "n4", "n5"}) EXPECT_EQ(ids_with(db, std::string("Q") + id).size(), 1u) << id;
    EXPECT_EQ(thread_of(db, "n5"), "n1");
    EXPECT_FALSE(std::filesystem::exists(dir.path() / "index" / "db-000004" / "XAPIANDB"));  // one glass database
    add("n6", message("n6@x", {"n5@x"}, "after the compaction"));
    EXPECT_EQ(thread_of(reader(), "n6"), "n1");
}

TEST_F(IndexTest, AnAbandonedBulkLoadLeavesTheLiveDatabaseAsItWas) {
    add("old", message("o@x", {}, "old"));
    ASSERT_TRUE(writer->commit());
    ASSERT_TRUE(writer->bulk_begin(true, 1));
    ASSERT_TRUE(writer->bulk_add(build_document("n1", record("n1"), message("n1@x", {}, "new"))));
    ASSERT_TRUE(writer->bulk_add(build_document("n2", record("n2"), message("n2@x", {}, "new"))));
    writer->bulk_abandon();
    auto db = reader();
    EXPECT_EQ(ids_with(db, "Qold"), std::vector<std::string>{"old"});
    EXPECT_EQ(db.get_doccount(), 1u);
    std::size_t entries = 0;
    for ([[maybe_unused]] const auto& entry : std::filesystem::directory_iterator(dir.path() / "index")) ++entries;
    EXPECT_EQ(entries, 2u);  // current, db-000001
}

// A bulk load (parts written in parallel, links fixed after the merge) gives the same index
// as adding the same messages one by one: threads that merge late, originals and near
// duplicates indexed after their copies, across parts.
TEST_F(IndexTest, ABulkLoadIndexesLikeOneByOneAddsAcrossParts) {
    const std::string base = long_text(4);
    std::string edited = base;
    edited.replace(edited.find(' ', 300), 1, " inserted ");
    const std::vector<std::pair<std::string, Content>> messages = {
        {"c", message("C@x", {"A@x", "B@x"}, "third")},
        {"m3", message("m3@x", {}, "same body", "copy")},
        {"a", message("A@x", {}, "first")},
        {"m5", message("m5@x", {}, edited, "edited")},
        {"e", message("E@x", {"MISSING@x"}, "fifth")},
        {"m2", message("m2@x", {}, "same body", "copy")},
        {"b", message("B@x", {"A@x"}, "second")},
        {"d", message("D@x", {"MISSING@x"}, "fourth")},
        {"m4", message("m4@x", {}, base, "base")},
        {"f", message("F@x", {"E@x", "C@x"}, "joins two threads")},
        {"m1", message("m1@x", {}, "same  body", "copy")},
    };
    for (const auto& [id, content] : messages) add(id, content);
    const Xapian::Database one_by_one = reader();

    // Loaded from nothing, or on top of live documents that the load links to, with parts
    // of one document, of a few and of all.
    for (std::size_t live : {0u, 4u})
        for (std::size_t part : {1u, 2u, 3u, 500u}) {
            test_support::TempDir other;
            postvault::SearchConfig bulk_config;
            bulk_config.directory = (other.path() / "index").string();
            auto opened = IndexWriter::open(bulk_config);
            ASSERT_TRUE(opened);
            auto& bulk = **opened;
            for (std::size_t i = 0; i < live; ++i)
                ASSERT_TRUE(bulk.add(build_document(messages[i].first, record(messages[i].first), messages[i].second)));
            ASSERT_TRUE(bulk.commit());
            ASSERT_TRUE(bulk.bulk_begin(live > 0, part));
            for (std::size_t i = live; i < messages.size(); ++i)
                ASSERT_TRUE(bulk.bulk_add(build_document(messages[i].first, record(messages[i].first), messages[i].second)));
            auto finished = bulk.bulk_finish();
            ASSERT_TRUE(finished) << finished.error().message;
            ASSERT_EQ(*finished, messages.size());
            const Xapian::Database loaded((other.path() / "index" / "current").string());
            expect_links_in_data(loaded);
            for (const auto& [id, content] : messages) {
                auto terms = [&](const Xapian::Database& db) {
                    const Xapian::Document document = db.get_document(*db.postlist_begin("Q" + id));
                    std::vector<std::string> list(document.termlist_begin(), document.termlist_end());
                    for (unsigned slot : {slot_thread, slot_duplicate_of, slot_near_duplicate_of})
                        list.push_back(std::to_string(slot) + "=" + document.get_value(slot));
                    list.push_back(decode_data(document.get_data()).dump());
                    return list;
                };
                EXPECT_EQ(terms(loaded), terms(one_by_one)) << id << " with " << live << " live, parts of " << part;
            }
        }
    EXPECT_EQ(thread_of(one_by_one, "f"), "a");  // f joined a's thread and d's
    EXPECT_EQ(thread_of(one_by_one, "e"), "a");
    EXPECT_EQ(ids_with(one_by_one, "XIduplicate"), (std::vector<std::string>{"m2", "m3"}));
}

TEST_F(IndexTest, SecondWriterIsRefused) {
    auto second = IndexWriter::open(config);
    ASSERT_FALSE(second);
    EXPECT_EQ(second.error().code, "search.in_use");
}

// Body positions live in one value per document (search/positions.h).
TEST(SearchPositions, EachWordGetsItsPositionsBackShortAndCompressed) {
    for (int words : {6, 3000}) {  // a short list as it is, a long one in a zstd frame
        std::string body = "alpha beta alpha gamma ";
        for (int i = 0; i < words; ++i) body += "w" + std::to_string(i % 997) + " ";
        body += "omega";
        Xapian::Document document;
        index_body(document, body);
        const std::string value = document.get_value(slot_body_positions);
        ASSERT_FALSE(value.empty());
        EXPECT_EQ(value[0], words > 100 ? 1 : 0);
        for (auto term = document.termlist_begin(); term != document.termlist_end(); ++term)
            EXPECT_EQ(term.positionlist_count(), 0u) << *term;  // no Xapian positions
        std::vector<std::vector<Xapian::termpos>> found;
        find_positions(value, {"absent", "alpha", "gamma", "omega", "w5"}, found);
        ASSERT_EQ(found.size(), 5u);
        EXPECT_TRUE(found[0].empty());
        EXPECT_EQ(found[1], (std::vector<Xapian::termpos>{1, 3}));
        EXPECT_EQ(found[2], (std::vector<Xapian::termpos>{4}));
        EXPECT_EQ(found[3], (std::vector<Xapian::termpos>{static_cast<Xapian::termpos>(words + 5)}));
        if (words > 5) EXPECT_EQ(found[4].front(), 10u);
        // wdf as Xapian's own positions would give it.
        Xapian::TermIterator alpha = document.termlist_begin();
        alpha.skip_to("alpha");
        EXPECT_EQ(alpha.get_wdf(), 2u);
    }
    // Empty body: no value. Damaged values: no positions, no exception.
    Xapian::Document empty;
    index_body(empty, "");
    EXPECT_TRUE(empty.get_value(slot_body_positions).empty());
    std::vector<std::vector<Xapian::termpos>> found;
    for (const std::string damaged : {std::string("\x01garbage"), std::string("\x07"), std::string("\x00\x05\x05xy", 5),
                                      std::string("\x00\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01", 12)}) {
        find_positions(damaged, {"alpha", "xy"}, found);
        ASSERT_EQ(found.size(), 2u);
        EXPECT_TRUE(found[0].empty());
        EXPECT_TRUE(found[1].empty());
    }
}

TEST_F(IndexTest, AnIndexOfAnOlderSchemaIsNotSearchedUntilRebuilt) {
    add("m1", message("m1@x", {}, "the quarterly report is late"));
    ASSERT_TRUE(writer->commit());
    writer.reset();
    {
        Xapian::WritableDatabase db((dir.path() / "index" / "current").string(), Xapian::DB_OPEN);
        db.set_metadata("schema", "1");
        db.commit();
    }
    auto opened = IndexWriter::open(config);
    ASSERT_TRUE(opened) << opened.error().message;
    writer = std::move(*opened);
    EXPECT_TRUE(writer->outdated());
    auto searcher = Searcher::open(config.directory, "english");
    ASSERT_TRUE(searcher) << searcher.error().message;
    auto refused = (*searcher)->count("\"quarterly report\"");
    ASSERT_FALSE(refused);
    EXPECT_EQ(refused.error().code, "search.outdated");
    // A rebuild (Indexer::reindex, and the Indexer before anything else) makes it current.
    ASSERT_TRUE(writer->bulk_begin(false));
    ASSERT_TRUE(writer->bulk_add(build_document("m1", record("m1"), message("m1@x", {}, "the quarterly report is late"))));
    ASSERT_TRUE(writer->bulk_finish());
    EXPECT_FALSE(writer->outdated());
    ASSERT_TRUE((*searcher)->refresh());
    auto counted = (*searcher)->count("\"quarterly report\"");
    ASSERT_TRUE(counted) << counted.error().message;
    EXPECT_EQ(*counted, 1u);
    EXPECT_EQ(*(*searcher)->count("\"report quarterly\""), 0u);
    // An empty index of an older schema is simply brought up to date.
    writer.reset();
    const std::string empty = (dir.path() / "empty").string();
    std::filesystem::create_directories(empty);
    {
        Xapian::WritableDatabase db(empty + "/db-000001", Xapian::DB_CREATE_OR_OPEN | Xapian::DB_BACKEND_GLASS);
        db.set_metadata("schema", "1");
        db.commit();
        std::ofstream(empty + "/current") << "auto db-000001\n";
    }
    postvault::SearchConfig empty_config = config;
    empty_config.directory = empty;
    auto fresh = IndexWriter::open(empty_config);
    ASSERT_TRUE(fresh) << fresh.error().message;
    EXPECT_FALSE((*fresh)->outdated());
}

// Xapian 1.4.22 fails to read, without the wdf, a long postings list with a gap in its ids
// (search/searcher.cpp, ZeroWeight): counts, date pages and facets must not.
TEST_F(IndexTest, CountsAreRightOverPostingsListsWithGaps) {
    for (int i = 0; i < 2500; ++i) {
        Content content = message("g" + std::to_string(i) + "@x", {}, "body " + std::to_string(i));
        content.date = 1700000000 + i;
        add("g" + std::to_string(i), content);
    }
    ASSERT_TRUE(writer->remove("g1000"));
    ASSERT_TRUE(writer->commit());
    auto searcher = Searcher::open(config.directory, "english");
    ASSERT_TRUE(searcher) << searcher.error().message;
    for (const char* query : {"direction:outbound", "from:alice@corp.example", "body", "*"}) {
        auto counted = (*searcher)->count(query);
        ASSERT_TRUE(counted) << query << ": " << counted.error().message;
        EXPECT_EQ(*counted, 2499u) << query;
    }
    SearchRequest request;
    request.query = "direction:outbound";
    request.limit = 5;
    request.facets = true;
    auto page = (*searcher)->search(request);
    ASSERT_TRUE(page) << page.error().message;
    EXPECT_EQ(page->total, 2499u);
    ASSERT_EQ(page->hits.size(), 5u);
    EXPECT_EQ(page->hits.front().id, "g2499");
}
