// Tests for archive/import.h: every reader is fed small collections written
// here into a temporary directory (Maildir, mbox variants, .eml trees, Exchange
// journal reports, malformed files), and the PST reader reads a real Outlook
// PST (tests/corpus/import/README.md says where it comes from).
#include <gtest/gtest.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>

#include "tests/unit/temp_dir.h"
#include "archive/import.h"
#include "archive/import_internal.h"
#include "common/gmime.h"

namespace postvault::archive {
namespace {

namespace fs = std::filesystem;

using test_support::TempDir;

void write_file(const fs::path& path, std::string_view bytes) {
    fs::create_directories(path.parent_path());
    std::ofstream out(path, std::ios::binary);
    out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    ASSERT_TRUE(out.good()) << path;
}

void set_mtime(const fs::path& path, std::int64_t unix_time) {
    struct timespec times[2] = {{unix_time, 0}, {unix_time, 0}};
    ASSERT_EQ(utimensat(AT_FDCWD, path.c_str(), times, 0), 0);
}

std::vector<ImportItem> read_all(ImportReader& reader) {
    std::vector<ImportItem> items;
    for (;;) {
        auto next = reader.next();
        EXPECT_TRUE(next.ok()) << (next.ok() ? "" : next.error().message);
        if (!next.ok() || !*next) break;
        items.push_back(std::move(**next));
    }
    EXPECT_EQ(reader.bytes_done(), reader.bytes_total());
    return items;
}

std::vector<ImportItem> import_all(ImportFormat format, const fs::path& path) {
    auto reader = open_import(format, path.string());
    EXPECT_TRUE(reader.ok()) << (reader.ok() ? "" : reader.error().message);
    if (!reader.ok()) return {};
    return read_all(**reader);
}

std::vector<std::string> sources_of(const std::vector<ImportItem>& items) {
    std::vector<std::string> sources;
    for (const auto& item : items) sources.push_back(item.source);
    return sources;
}

bool has_problem_containing(const ImportItem& item, std::string_view text) {
    for (const auto& problem : item.problems) {
        if (problem.find(text) != std::string::npos) return true;
    }
    return false;
}

// --- format names -----------------------------------------------------------

TEST(ArchiveImport, ParsesFormatNames) {
    EXPECT_EQ(*parse_import_format("maildir"), ImportFormat::maildir);
    EXPECT_EQ(*parse_import_format("mbox"), ImportFormat::mbox);
    EXPECT_EQ(*parse_import_format("eml"), ImportFormat::eml);
    EXPECT_EQ(*parse_import_format("pst"), ImportFormat::pst);
    EXPECT_EQ(*parse_import_format("exchange-journal"), ImportFormat::exchange_journal);
    auto unknown = parse_import_format("exchange_journal");
    ASSERT_FALSE(unknown.ok());
    EXPECT_EQ(unknown.error().code, "archive.import_format");
}

// --- maildir ----------------------------------------------------------------

TEST(ArchiveImport, MaildirReadsInSortedOrderWithExactBytes) {
    TempDir dir;
    const fs::path root = dir.path() / "Maildir";
    // Bytes a normaliser would change: CRLF and LF mixed, trailing blanks,
    // 8-bit, a lone CR, no final newline.
    const std::string tricky = "From: a@x\r\nSubject: caf\xc3\xa9  \r\nDate: Tue, 14 Nov 2023 22:13:20 +0000\n\r\nline\rstill\t \nend";
    const std::string plain = "From: b@x\nSubject: plain\n\nbody\n";  // no Date: the mtime counts
    write_file(root / "cur" / "1700000002.M2.host:2,S", tricky);
    write_file(root / "cur" / "1700000001.M1.host:2,", plain);
    write_file(root / "new" / "1700000003.M3.host", plain);
    write_file(root / "tmp" / "1700000004.M4.host", "in delivery, not yet mail");
    write_file(root / "cur" / ".hidden", "not mail");
    write_file(root / "maildirfolder", "");
    write_file(root / ".Sub" / "cur" / "1700000005.M5.host:2,RS", plain);
    write_file(root / ".Sub" / "tmp" / "x", "ignored");
    fs::create_directories(root / ".Sub" / "new");
    write_file(root / ".notamaildir" / "file", "ignored");
    set_mtime(root / "cur" / "1700000001.M1.host:2,", 1600000000);

    const auto items = import_all(ImportFormat::maildir, root);
    ASSERT_EQ(items.size(), 4u);
    EXPECT_EQ(sources_of(items), (std::vector<std::string>{"maildir:.Sub/cur/1700000005.M5.host:2,RS",
                                                           "maildir:cur/1700000001.M1.host:2,",
                                                           "maildir:cur/1700000002.M2.host:2,S",
                                                           "maildir:new/1700000003.M3.host"}));
    EXPECT_EQ(items[1].bytes, plain);
    EXPECT_EQ(items[1].date_unix, 1600000000);  // file mtime
    EXPECT_EQ(items[2].bytes, tricky);
    EXPECT_EQ(items[2].date_unix, 1700000000);  // Date: header
    for (const auto& item : items) {
        EXPECT_TRUE(item.problems.empty()) << item.source;
        EXPECT_FALSE(item.envelope_from.has_value());
    }
}

TEST(ArchiveImport, MaildirRejectsADirectoryWithoutMaildir) {
    TempDir dir;
    write_file(dir.path() / "a.eml", "From: a@x\n\nbody\n");
    auto reader = open_import(ImportFormat::maildir, dir.path().string());
    ASSERT_FALSE(reader.ok());
    EXPECT_EQ(reader.error().code, "archive.import_not_maildir");
}

// --- mbox -------------------------------------------------------------------

TEST(ArchiveImport, MboxrdUnquotesEveryLevel) {
    TempDir dir;
    const std::string mbox =
        "From alice@example.com Thu Nov 28 10:00:00 2024\n"
        "From: alice@example.com\n"
        "Subject: one\n"
        "\n"
        ">From the start of a line\n"
        ">>From quoted once in the original\n"
        ">>>From quoted twice\n"
        "> From is not a From_ line\n"
        "Fromage is not either\n"
        "\n"
        "From bob@example.com Fri Nov 29 11:30:00 2024\n"
        "From: bob@example.com\n"
        "Subject: two\n"
        "\n"
        "last\n"
        "\n";
    write_file(dir.path() / "box.mbox", mbox);

    const auto items = import_all(ImportFormat::mbox, dir.path() / "box.mbox");
    ASSERT_EQ(items.size(), 2u);
    EXPECT_EQ(items[0].source, "mbox:box.mbox@0");
    EXPECT_EQ(items[0].bytes,
              "From: alice@example.com\n"
              "Subject: one\n"
              "\n"
              "From the start of a line\n"
              ">From quoted once in the original\n"
              ">>From quoted twice\n"
              "> From is not a From_ line\n"
              "Fromage is not either\n");
    EXPECT_EQ(items[0].date_unix, 1732788000);  // From_ line, 2024-11-28 10:00:00 UTC
    const std::size_t second_offset = mbox.find("From bob@");
    EXPECT_EQ(items[1].source, "mbox:box.mbox@" + std::to_string(second_offset));
    EXPECT_EQ(items[1].bytes, "From: bob@example.com\nSubject: two\n\nlast\n");
    EXPECT_EQ(items[1].date_unix, 1732879800);
    for (const auto& item : items) EXPECT_TRUE(item.problems.empty()) << item.source;
}

TEST(ArchiveImport, MboxoUnquotesOnlyOneLevelAndCanBeForced) {
    TempDir dir;
    // No ">>From " line: detected as mboxo, where only ">From " was quoted.
    const std::string mboxo =
        "From a@x Mon Jan  1 00:00:00 2024\n"
        "Subject: o\n"
        "\n"
        ">From a quoted line\n"
        ">Fromage\n"
        "\n";
    write_file(dir.path() / "o.mbox", mboxo);
    auto items = import_all(ImportFormat::mbox, dir.path() / "o.mbox");
    ASSERT_EQ(items.size(), 1u);
    EXPECT_EQ(items[0].bytes, "Subject: o\n\nFrom a quoted line\n>Fromage\n");

    // A file with ">>From " is read as mboxrd unless the caller says mboxo.
    const std::string ambiguous =
        "From a@x Mon Jan  1 00:00:00 2024\n"
        "Subject: a\n"
        "\n"
        ">>From two quotes\n"
        ">From one quote\n"
        "\n";
    write_file(dir.path() / "a.mbox", ambiguous);
    items = import_all(ImportFormat::mbox, dir.path() / "a.mbox");
    ASSERT_EQ(items.size(), 1u);
    EXPECT_EQ(items[0].bytes, "Subject: a\n\n>From two quotes\nFrom one quote\n");

    auto forced = open_mbox_import((dir.path() / "a.mbox").string(), MboxVariant::mboxo);
    ASSERT_TRUE(forced.ok());
    items = read_all(**forced);
    ASSERT_EQ(items.size(), 1u);
    EXPECT_EQ(items[0].bytes, "Subject: a\n\n>>From two quotes\nFrom one quote\n");
}

TEST(ArchiveImport, MboxWithCrlfLinesKeepsCrlfAndStripsOnlyTheSeparator) {
    TempDir dir;
    const std::string mbox =
        "From a@x Tue Nov 14 22:13:20 2023\r\n"
        "From: a@x\r\n"
        "Subject: crlf one\r\n"
        "\r\n"
        "body with a quoted\r\n"
        ">From line\r\n"
        "\r\n"
        "\r\n"  // the message itself ends with an empty line; one CRLF is the separator
        "From b@x Tue Nov 14 22:13:21 2023\r\n"
        "From: b@x\r\n"
        "Date: Wed, 15 Nov 2023 00:00:00 +0000\r\n"
        "\r\n"
        "two\r\n"
        "\r\n";
    write_file(dir.path() / "crlf.mbox", mbox);
    const auto items = import_all(ImportFormat::mbox, dir.path() / "crlf.mbox");
    ASSERT_EQ(items.size(), 2u);
    EXPECT_EQ(items[0].bytes, "From: a@x\r\nSubject: crlf one\r\n\r\nbody with a quoted\r\nFrom line\r\n\r\n");
    EXPECT_EQ(items[0].date_unix, 1700000000);
    EXPECT_EQ(items[1].bytes, "From: b@x\r\nDate: Wed, 15 Nov 2023 00:00:00 +0000\r\n\r\ntwo\r\n");
    EXPECT_EQ(items[1].date_unix, 1700006400);  // Date: header wins over the From_ line
}

TEST(ArchiveImport, MboxSplitsOnEveryFromLineAndKeepsStrayBytes) {
    TempDir dir;
    const std::string mbox =
        "stray bytes before the first message\n"
        "From a@x Mon Jan  1 00:00:00 2024\n"
        "Subject: one\n"
        "\n"
        "an unquoted line follows\n"
        "From here the classic rule starts a new message\n"
        "tail\n";  // no final empty line: the last newline is kept
    write_file(dir.path() / "dir" / "inbox", mbox);
    write_file(dir.path() / "dir" / "inbox.msf", "// Thunderbird summary, not mail");
    write_file(dir.path() / "dir" / "empty", "");
    const auto items = import_all(ImportFormat::mbox, dir.path() / "dir");
    ASSERT_EQ(items.size(), 3u);
    EXPECT_EQ(items[0].source, "mbox:inbox@0");
    EXPECT_EQ(items[0].bytes, "stray bytes before the first message");  // its newline precedes a From_ line
    EXPECT_TRUE(has_problem_containing(items[0], "before the first From_ line"));
    EXPECT_EQ(items[1].bytes, "Subject: one\n\nan unquoted line follows");
    EXPECT_TRUE(items[1].problems.empty());
    EXPECT_EQ(items[2].source, "mbox:inbox@" + std::to_string(mbox.find("From here")));
    EXPECT_EQ(items[2].bytes, "tail\n");
    EXPECT_FALSE(items[2].problems.empty());  // "tail" is not a header field
}

TEST(ArchiveImport, MboxLargerThanOneReadChunk) {
    TempDir dir;
    std::string mbox;
    std::vector<std::string> expected;
    for (int i = 0; i < 40; ++i) {
        std::string message = "Subject: " + std::to_string(i) + "\n\n" + std::string(60000 + i, 'x') + "\n";
        mbox += "From a@x Mon Jan  1 00:00:00 2024\n" + message + "\n";
        expected.push_back(message);
    }
    write_file(dir.path() / "big.mbox", mbox);
    const auto items = import_all(ImportFormat::mbox, dir.path() / "big.mbox");
    ASSERT_EQ(items.size(), expected.size());
    for (std::size_t i = 0; i < items.size(); ++i) EXPECT_EQ(items[i].bytes, expected[i]) << i;
}

// --- eml --------------------------------------------------------------------

TEST(ArchiveImport, EmlTreeTakesEveryFileButDotfiles) {
    TempDir dir;
    const fs::path root = dir.path() / "export";
    write_file(root / "sub" / "dir" / "a.eml", "Subject: a\n\nA\n");
    write_file(root / "b", "Subject: b\n\nB\n");  // no extension: mail all the same
    write_file(root / "C.eml", "Subject: C\n\nC\n");
    write_file(root / ".DS_Store", "junk");
    write_file(root / ".git" / "config", "junk");
    const auto items = import_all(ImportFormat::eml, root);
    EXPECT_EQ(sources_of(items), (std::vector<std::string>{"eml:C.eml", "eml:b", "eml:sub/dir/a.eml"}));
    ASSERT_EQ(items.size(), 3u);
    EXPECT_EQ(items[2].bytes, "Subject: a\n\nA\n");

    const auto single = import_all(ImportFormat::eml, root / "sub" / "dir" / "a.eml");
    ASSERT_EQ(single.size(), 1u);
    EXPECT_EQ(single[0].source, "eml:a.eml");
    EXPECT_EQ(single[0].bytes, "Subject: a\n\nA\n");
}

TEST(ArchiveImport, MalformedMessagesAreFlaggedNotDropped) {
    TempDir dir;
    const std::string nul_bytes("From: a@x\n\nbinary\0inside\n", 25);
    const std::string garbage = "\x89PNG\r\n\x1a\n\xff\xfe garbage";
    const std::map<std::string, std::string> files = {
        {"1-empty", ""},
        {"2-nul", nul_bytes},
        {"3-garbage", garbage},
        {"4-no-separator", "From: a@x\nSubject: header only, no body separator"},
        {"5-continuation-first", " folded\nFrom: a@x\n\nbody\n"},
        {"6-good", "From: a@x\n\nbody\n"},
    };
    for (const auto& [name, bytes] : files) write_file(dir.path() / name, bytes);

    const auto items = import_all(ImportFormat::eml, dir.path());
    ASSERT_EQ(items.size(), files.size());
    std::size_t index = 0;
    for (const auto& [name, bytes] : files) {
        EXPECT_EQ(items[index].source, "eml:" + name);
        EXPECT_EQ(items[index].bytes, bytes) << name;
        EXPECT_EQ(items[index].problems.empty(), name == "6-good") << name;
        ++index;
    }
    EXPECT_TRUE(has_problem_containing(items[0], "empty"));
    EXPECT_TRUE(has_problem_containing(items[1], "NUL"));
    EXPECT_TRUE(has_problem_containing(items[2], "not a header field"));
    EXPECT_TRUE(has_problem_containing(items[3], "no empty line"));
    EXPECT_TRUE(has_problem_containing(items[4], "continuation"));
}

TEST(ArchiveImport, SourcesAreUniqueAndTheSameOnEveryRun) {
    TempDir dir;
    write_file(dir.path() / "md" / "cur" / "1.h:2,S", "Subject: 1\n\n1\n");
    write_file(dir.path() / "md" / "new" / "2.h", "Subject: 2\n\n2\n");
    write_file(dir.path() / "md" / ".A" / "cur" / "3.h:2,", "Subject: 3\n\n3\n");
    write_file(dir.path() / "mb" / "x.mbox",
               "From a Mon Jan  1 00:00:00 2024\nSubject: 1\n\n1\n\n"
               "From a Mon Jan  1 00:00:00 2024\nSubject: 1\n\n1\n\n");  // identical messages, distinct offsets
    write_file(dir.path() / "mb" / "sub" / "y.mbox", "From a Mon Jan  1 00:00:00 2024\nSubject: 2\n\n2\n\n");
    write_file(dir.path() / "em" / "a" / "1.eml", "Subject: 1\n\n1\n");
    write_file(dir.path() / "em" / "b" / "1.eml", "Subject: 1\n\n1\n");
    write_file(dir.path() / "em" / "b" / "2", "Subject: 2\n\n2\n");

    const std::vector<std::pair<ImportFormat, fs::path>> collections = {
        {ImportFormat::maildir, dir.path() / "md"},
        {ImportFormat::mbox, dir.path() / "mb"},
        {ImportFormat::eml, dir.path() / "em"},
    };
    for (const auto& [format, path] : collections) {
        const auto first = import_all(format, path);
        const auto second = import_all(format, path);
        ASSERT_EQ(first.size(), 3u) << path;
        EXPECT_EQ(sources_of(first), sources_of(second)) << path;
        const auto sources = sources_of(first);
        EXPECT_EQ(std::set<std::string>(sources.begin(), sources.end()).size(), sources.size()) << path;
        for (std::size_t i = 0; i < first.size(); ++i) EXPECT_EQ(first[i].bytes, second[i].bytes);
    }
    EXPECT_EQ(sources_of(import_all(ImportFormat::mbox, dir.path() / "mb")),
              (std::vector<std::string>{"mbox:sub/y.mbox@0", "mbox:x.mbox@0", "mbox:x.mbox@47"}));
}

// --- Exchange journal reports -----------------------------------------------

// The original message, with bytes a re-serialiser would change: 8-bit
// header text, a lone CR, trailing blanks, a line that starts like the
// report's boundary but is not a delimiter, its own nested multipart, and a
// final CRLF.
const std::string kOriginal =
    "Received: from client.corp.example by mail.corp.example\r\n"
    "From: Alice <alice@corp.example>\r\n"
    "To: staff@corp.example, Bob <bob@corp.example>\r\n"
    "Cc: carol@corp.example\r\n"
    "Subject: Gr\xc3\xbc\xc3\x9f""e  \r\n"
    "Date: Tue, 14 Nov 2023 22:13:20 +0000\r\n"
    "Message-ID: <orig-1@corp.example>\r\n"
    "MIME-Version: 1.0\r\n"
    "Content-Type: multipart/alternative; boundary=\"inner\"\r\n"
    "\r\n"
    "--inner\r\n"
    "Content-Type: text/plain; charset=utf-8\r\n"
    "Content-Transfer-Encoding: 8bit\r\n"
    "\r\n"
    "caf\xc3\xa9 \t \r\n"
    "--JOURNAL-BOUNDARY-- is not a delimiter here\r\n"
    "--JOURNAL-BOUNDARYX neither\r\n"
    "lone\rcarriage return\r\n"
    "=3D stays as it is\r\n"
    "--inner--\r\n";

std::string journal_report(const std::string& envelope, const std::string& original) {
    return "From: Microsoft Exchange <postmaster@corp.example>\r\n"
           "To: journal@corp.example\r\n"
           "Subject: Gr\xc3\xbc\xc3\x9f""e\r\n"
           "Date: Tue, 14 Nov 2023 22:13:25 +0000\r\n"
           "X-MS-Journal-Report:\r\n"
           "MIME-Version: 1.0\r\n"
           "Content-Type: multipart/mixed;\r\n"
           "\tboundary=\"JOURNAL-BOUNDARY\"\r\n"
           "\r\n"
           "--JOURNAL-BOUNDARY\r\n"
           "Content-Type: text/plain; charset=\"us-ascii\"\r\n"
           "Content-Transfer-Encoding: 7bit\r\n"
           "\r\n" +
           envelope +
           "\r\n"
           "--JOURNAL-BOUNDARY\r\n"
           "Content-Type: message/rfc822\r\n"
           "\r\n" +
           original +
           "\r\n"
           "--JOURNAL-BOUNDARY--\r\n";
}

const std::string kEnvelope =
    "Sender: alice@corp.example\r\n"
    "Subject: Gruesse\r\n"
    "Message-Id: <orig-1@corp.example>\r\n"
    "To: bob@corp.example\r\n"
    "To: dave@corp.example, Expanded: staff@corp.example\r\n"
    "To: erin@corp.example, Expanded: staff@corp.example\r\n"
    "To: BOB@corp.example, Expanded: staff@corp.example\r\n"
    "Cc: carol@corp.example\r\n"
    "Cc: frank-fwd@corp.example, Forwarded: frank@corp.example\r\n"
    "Bcc: secret@corp.example\r\n"
    "Recipient: outside@remote.example\r\n"
    "On-Behalf-Of: boss@corp.example\r\n";

TEST(ArchiveImport, ExchangeJournalGivesTheOriginalByteExactAndTheFullEnvelope) {
    TempDir dir;
    write_file(dir.path() / "report.eml", journal_report(kEnvelope, kOriginal));
    const auto items = import_all(ImportFormat::exchange_journal, dir.path() / "report.eml");
    ASSERT_EQ(items.size(), 1u);
    const ImportItem& item = items[0];
    EXPECT_EQ(item.source, "exchange-journal:eml:report.eml");
    EXPECT_EQ(item.bytes, kOriginal);
    ASSERT_TRUE(item.envelope_from.has_value());
    EXPECT_EQ(*item.envelope_from, "alice@corp.example");
    EXPECT_EQ(item.envelope_recipients,
              (std::vector<std::string>{"bob@corp.example", "dave@corp.example", "erin@corp.example",
                                        "carol@corp.example", "frank-fwd@corp.example", "secret@corp.example",
                                        "outside@remote.example"}));
    EXPECT_EQ(item.date_unix, 1700000000);  // the original's Date:, not the report's
    EXPECT_TRUE(item.problems.empty()) << item.problems.front();
}

TEST(ArchiveImport, ExchangeJournalReadsAMaildirOfReports) {
    TempDir dir;
    const std::string lf_report = [] {
        std::string report = journal_report("Sender: a@x\nTo: b@y\n", "Subject: lf original\n\nbody\n");
        std::string lf;
        for (std::size_t i = 0; i < report.size(); ++i) {
            if (report[i] == '\r' && i + 1 < report.size() && report[i + 1] == '\n') continue;
            lf += report[i];
        }
        return lf;
    }();
    write_file(dir.path() / "journal" / "cur" / "1.h:2,S", journal_report(kEnvelope, kOriginal));
    write_file(dir.path() / "journal" / "new" / "2.h", lf_report);
    const auto items = import_all(ImportFormat::exchange_journal, dir.path() / "journal");
    ASSERT_EQ(items.size(), 2u);
    EXPECT_EQ(items[0].source, "exchange-journal:maildir:cur/1.h:2,S");
    EXPECT_EQ(items[0].bytes, kOriginal);
    EXPECT_EQ(items[1].source, "exchange-journal:maildir:new/2.h");
    EXPECT_EQ(items[1].bytes, "Subject: lf original\n\nbody\n");
    EXPECT_EQ(items[1].envelope_from, std::optional<std::string>("a@x"));
    EXPECT_EQ(items[1].envelope_recipients, std::vector<std::string>{"b@y"});
}

TEST(ArchiveImport, ExchangeJournalFlagsWhatIsNotAReport) {
    TempDir dir;
    const std::string plain = "From: a@x\r\nSubject: not a report\r\n\r\nbody\r\n";
    std::string no_original = journal_report(kEnvelope, kOriginal);
    const std::size_t cut = no_original.find("--JOURNAL-BOUNDARY\r\nContent-Type: message/rfc822");
    no_original = no_original.substr(0, cut) + "--JOURNAL-BOUNDARY--\r\n";
    write_file(dir.path() / "a-plain.eml", plain);
    write_file(dir.path() / "b-no-original.eml", no_original);
    write_file(dir.path() / "c-empty.eml", "");

    const auto items = import_all(ImportFormat::exchange_journal, dir.path());
    ASSERT_EQ(items.size(), 3u);
    EXPECT_EQ(items[0].bytes, plain);
    EXPECT_TRUE(has_problem_containing(items[0], "not an Exchange journal report"));
    EXPECT_EQ(items[1].bytes, no_original);
    EXPECT_TRUE(has_problem_containing(items[1], "journal report without the original message"));
    EXPECT_EQ(items[1].envelope_from, std::optional<std::string>("alice@corp.example"));
    EXPECT_EQ(items[2].bytes, "");
    EXPECT_TRUE(has_problem_containing(items[2], "empty"));
}

TEST(ArchiveImport, ExchangeJournalDecodesAnOriginalSentAsBase64) {
    const std::string original = "Subject: b64\r\n\r\nbody \xff\r\n";
    const std::string report =
        "X-MS-Journal-Report: \r\n"
        "Content-Type: multipart/mixed; boundary=b\r\n"
        "\r\n"
        "--b\r\n"
        "Content-Type: text/plain\r\n"
        "Content-Transfer-Encoding: base64\r\n"
        "\r\n" +
        std::string("U2VuZGVyOiBhQHgNClRvOiBiQHkNCkJjYzogY0B5DQo=") +  // "Sender: a@x\r\nTo: b@y\r\nBcc: c@y\r\n"
        "\r\n--b\r\n"
        "Content-Type: message/rfc822\r\n"
        "Content-Transfer-Encoding: base64\r\n"
        "\r\n"
        "U3ViamVjdDogYjY0DQoNCmJvZHkg/w0K\r\n"
        "--b--\r\n";
    ImportItem item;
    item.source = "smtp";
    item.bytes = report;
    const ImportItem original_item = unwrap_journal_report(std::move(item));
    EXPECT_EQ(original_item.source, "exchange-journal:smtp");
    EXPECT_EQ(original_item.bytes, original);
    EXPECT_EQ(original_item.envelope_recipients, (std::vector<std::string>{"b@y", "c@y"}));
    EXPECT_TRUE(original_item.problems.empty());
}

// --- PST --------------------------------------------------------------------

GObjectPtr<GMimeMessage> parse_message(const std::string& bytes) {
    ensure_gmime();
    GObjectPtr<GMimeStream> stream(g_mime_stream_mem_new_with_buffer(bytes.data(), bytes.size()));
    GObjectPtr<GMimeParser> parser(g_mime_parser_new_with_stream(stream.get()));
    return GObjectPtr<GMimeMessage>(g_mime_parser_construct_message(parser.get(), nullptr));
}

std::string decoded_content(GMimeObject* object) {
    GMimeDataWrapper* wrapper = g_mime_part_get_content(GMIME_PART(object));
    GObjectPtr<GMimeStream> out(g_mime_stream_mem_new());
    g_mime_data_wrapper_write_to_stream(wrapper, out.get());
    GByteArray* bytes = g_mime_stream_mem_get_byte_array(GMIME_STREAM_MEM(out.get()));
    return std::string(reinterpret_cast<const char*>(bytes->data), bytes->len);
}

// An item without transport headers (as Outlook stores a draft or a sent
// item from some clients): every header comes from the item's properties.
TEST(ArchiveImport, PstItemWithoutTransportHeadersBecomesFullMime) {
    using import_detail::PstAttachment;
    using import_detail::PstMessage;
    auto inner = std::make_shared<PstMessage>();
    inner->sender_name = "Inner Sender";
    inner->smtp_sender = "inner@example.com";
    inner->subject = "the forwarded one";
    inner->body = "inner body\r\n";

    PstMessage message;
    message.sender_name = "J\xc3\xb6rg Example";
    message.sender_address = "/O=CORP/OU=FIRST ADMINISTRATIVE GROUP/CN=RECIPIENTS/CN=JOERG";
    message.to = "Anna Berg; Bo Chen";
    message.cc = "Carl Dahl";
    message.bcc = "Hidden Person";
    message.subject = "Gr\xc3\xbc\xc3\x9f""e aus dem PST";
    message.sent_unix = 1700000000;
    message.message_id = "<abc@corp.example>";
    message.body = "plain \xe2\x82\xac text\r\nline two\r\n";
    message.html = "<p>html \xe2\x82\xac</p>";
    PstAttachment file;
    file.filename = "r\xc3\xa9sum\xc3\xa9.pdf";
    file.mime_type = "application/pdf";
    file.content_id = "<cid1@corp.example>";
    file.data = std::string("%PDF\0\x01\xff binary", 15);
    message.attachments.push_back(file);
    PstAttachment forwarded;
    forwarded.embedded = inner;
    message.attachments.push_back(forwarded);

    const auto mime = import_detail::build_pst_mime(message);
    EXPECT_FALSE(mime.envelope_from.has_value());  // only an Exchange DN is known
    EXPECT_TRUE(import_detail::check_message(mime.bytes).empty());
    EXPECT_EQ(mime.bytes.find("\n"), mime.bytes.find("\r\n") + 1);  // CRLF throughout
    EXPECT_EQ(import_detail::build_pst_mime(message).bytes, mime.bytes);  // deterministic

    auto parsed = parse_message(mime.bytes);
    ASSERT_TRUE(parsed);
    EXPECT_STREQ(g_mime_message_get_subject(parsed.get()), "Gr\xc3\xbc\xc3\x9f""e aus dem PST");
    GMimeObject* object = GMIME_OBJECT(parsed.get());
    EXPECT_EQ(mime.bytes.rfind("From: =?", 0), 0u) << mime.bytes;  // the name is RFC 2047 encoded
    EXPECT_STREQ(g_mime_object_get_header(object, "From"), "J\xc3\xb6rg Example");
    EXPECT_STREQ(g_mime_object_get_header(object, "X-PST-Sender-Address"), message.sender_address.c_str());
    EXPECT_STREQ(g_mime_object_get_header(object, "To"), "Anna Berg; Bo Chen");
    EXPECT_STREQ(g_mime_object_get_header(object, "Cc"), "Carl Dahl");
    EXPECT_STREQ(g_mime_object_get_header(object, "Bcc"), "Hidden Person");
    EXPECT_STREQ(g_mime_object_get_header(object, "Message-ID"), "<abc@corp.example>");
    EXPECT_EQ(import_detail::header_date(mime.bytes), 1700000000);

    GMimeObject* top = g_mime_message_get_mime_part(parsed.get());
    ASSERT_TRUE(GMIME_IS_MULTIPART(top));
    EXPECT_TRUE(g_mime_content_type_is_type(g_mime_object_get_content_type(top), "multipart", "mixed"));
    GMimeMultipart* mixed = GMIME_MULTIPART(top);
    ASSERT_EQ(g_mime_multipart_get_count(mixed), 3);

    GMimeObject* alternative = g_mime_multipart_get_part(mixed, 0);
    ASSERT_TRUE(GMIME_IS_MULTIPART(alternative));
    EXPECT_TRUE(g_mime_content_type_is_type(g_mime_object_get_content_type(alternative), "multipart", "alternative"));
    GMimeObject* text = g_mime_multipart_get_part(GMIME_MULTIPART(alternative), 0);
    GMimeObject* html = g_mime_multipart_get_part(GMIME_MULTIPART(alternative), 1);
    EXPECT_EQ(take_string(GCharPtr(g_mime_text_part_get_text(GMIME_TEXT_PART(text)))),
              "plain \xe2\x82\xac text\r\nline two\r\n");
    EXPECT_TRUE(g_mime_content_type_is_type(g_mime_object_get_content_type(html), "text", "html"));

    GMimeObject* pdf = g_mime_multipart_get_part(mixed, 1);
    EXPECT_TRUE(g_mime_content_type_is_type(g_mime_object_get_content_type(pdf), "application", "pdf"));
    EXPECT_STREQ(g_mime_part_get_filename(GMIME_PART(pdf)), "r\xc3\xa9sum\xc3\xa9.pdf");
    EXPECT_STREQ(g_mime_object_get_content_id(pdf), "cid1@corp.example");
    EXPECT_EQ(g_mime_part_get_content_encoding(GMIME_PART(pdf)), GMIME_CONTENT_ENCODING_BASE64);
    EXPECT_EQ(decoded_content(pdf), file.data);

    GMimeObject* rfc822 = g_mime_multipart_get_part(mixed, 2);
    ASSERT_TRUE(GMIME_IS_MESSAGE_PART(rfc822));
    GMimeMessage* embedded = g_mime_message_part_get_message(GMIME_MESSAGE_PART(rfc822));
    EXPECT_STREQ(g_mime_message_get_subject(embedded), "the forwarded one");
    EXPECT_NE(std::string(g_mime_object_get_header(GMIME_OBJECT(embedded), "From")).find("<inner@example.com>"),
              std::string::npos);
}

// An item with transport headers keeps them (folding included), minus the
// MIME fields the rebuilt body replaces and the line Outlook puts on top.
TEST(ArchiveImport, PstItemKeepsItsTransportHeaders) {
    import_detail::PstMessage message;
    message.transport_header =
        "Microsoft Mail Internet Headers Version 2.0\r\n"
        "Received: from mx.example ([192.0.2.1]) by exchange.example;\r\n"
        "\t Mon, 22 Oct 2001 13:06:25 -0500\r\n"
        "Return-Path: <bounce@list.example>\r\n"
        "From: \"List\" <list@list.example>\r\n"
        "Subject: from the transport headers\r\n"
        "Date: Mon, 22 Oct 2001 13:06:22 -0500\r\n"
        "MIME-Version: 1.0\r\n"
        "Content-Type: multipart/alternative;\r\n"
        "\tboundary=\"----_=_NextPart_001\"\r\n"
        "Content-Transfer-Encoding: 7bit\r\n"
        "\r\n"
        "------_=_NextPart_001\r\n";
    message.subject = "property subject, not used";
    message.smtp_sender = "list@list.example";
    message.sent_unix = 1000000000;
    message.body = "body";

    const auto mime = import_detail::build_pst_mime(message);
    EXPECT_EQ(mime.envelope_from, std::optional<std::string>("bounce@list.example"));
    const std::string expected_header =
        "Received: from mx.example ([192.0.2.1]) by exchange.example;\r\n"
        "\t Mon, 22 Oct 2001 13:06:25 -0500\r\n"
        "Return-Path: <bounce@list.example>\r\n"
        "From: \"List\" <list@list.example>\r\n"
        "Subject: from the transport headers\r\n"
        "Date: Mon, 22 Oct 2001 13:06:22 -0500\r\n"
        "MIME-Version: 1.0\r\n"
        "Content-Type: text/plain; charset=us-ascii\r\n"
        "\r\n"
        "body";
    EXPECT_EQ(mime.bytes, expected_header);
}

TEST(ArchiveImport, PstItemWithOnlyAnRtfBodyKeepsIt) {
    import_detail::PstMessage message;
    message.subject = "rtf only";
    message.rtf = "{\\rtf1 hello}";
    const auto mime = import_detail::build_pst_mime(message);
    auto parsed = parse_message(mime.bytes);
    ASSERT_TRUE(parsed);
    GMimeObject* top = g_mime_message_get_mime_part(parsed.get());
    EXPECT_TRUE(g_mime_content_type_is_type(g_mime_object_get_content_type(top), "application", "rtf"));
    EXPECT_EQ(decoded_content(top), message.rtf);
}

// enron.pst: a real Outlook PST from the EDRM Enron set, as shipped in the
// pst-extractor npm package (see tests/corpus/import/README.md); installed by
// scripts/install-deps.sh --with-tests. POSTVAULT_TEST_PST overrides the path.
std::string sample_pst_path() {
    const char* override_path = std::getenv("POSTVAULT_TEST_PST");
    return override_path != nullptr ? override_path : "/usr/local/share/postvault-test/enron.pst";
}

TEST(ArchiveImport, PstFromOutlookGivesEveryMailAsMime) {
    const std::string path = sample_pst_path();
    ASSERT_TRUE(fs::exists(path)) << path << " is missing: run scripts/install-deps.sh --with-tests";
    auto reader = open_import(ImportFormat::pst, path);
    ASSERT_TRUE(reader.ok()) << reader.error().message;
    const auto items = read_all(**reader);

    // lspst (pst-utils) lists 71 e-mails in this file.
    ASSERT_EQ(items.size(), 71u);
    ensure_gmime();
    std::set<std::string> subjects;
    std::set<std::string> sources;
    for (const auto& item : items) {
        EXPECT_TRUE(item.problems.empty()) << item.source << ": " << item.problems.front();
        EXPECT_EQ(item.source.rfind("pst:lokay-m/MLOKAY (Non-Privileged)/", 0), 0u) << item.source;
        sources.insert(item.source);
        EXPECT_NE(item.date_unix, 0) << item.source;
        GObjectPtr<GMimeStream> stream(g_mime_stream_mem_new_with_buffer(item.bytes.data(), item.bytes.size()));
        GObjectPtr<GMimeParser> parser(g_mime_parser_new_with_stream(stream.get()));
        GObjectPtr<GMimeMessage> message(g_mime_parser_construct_message(parser.get(), nullptr));
        ASSERT_TRUE(message) << item.source;
        const char* subject = g_mime_message_get_subject(message.get());
        if (subject != nullptr) subjects.insert(subject);
        EXPECT_NE(g_mime_object_get_header(GMIME_OBJECT(message.get()), "From"), nullptr) << item.source;
    }
    EXPECT_EQ((*reader)->non_mail_items_skipped(), 0u);  // this file holds mail only
    EXPECT_EQ(sources.size(), items.size());
    EXPECT_EQ(subjects.count("West Texas Capacity"), 1u);
    EXPECT_EQ(subjects.count("TW Weekly Report for October 26, 2001"), 1u);

    // Built the same way on every run: the same sources, the same bytes.
    auto again = open_import(ImportFormat::pst, path);
    ASSERT_TRUE(again.ok());
    const auto second = read_all(**again);
    ASSERT_EQ(second.size(), items.size());
    for (std::size_t i = 0; i < items.size(); ++i) {
        EXPECT_EQ(second[i].source, items[i].source);
        EXPECT_EQ(second[i].bytes, items[i].bytes) << items[i].source;
    }
}

TEST(ArchiveImport, PstRejectsAFileThatIsNotAPst) {
    TempDir dir;
    write_file(dir.path() / "fake.pst", "From: a@x\n\nnot a PST\n");
    auto reader = open_import(ImportFormat::pst, (dir.path() / "fake.pst").string());
    ASSERT_FALSE(reader.ok());
    EXPECT_EQ(reader.error().code, "archive.import_open");
}

}  // namespace
}  // namespace postvault::archive
