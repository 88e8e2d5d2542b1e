// Tests for audit-api/export_writer.h: every format is written into a temporary directory and
// read back by an independent reader, Python's standard library (/usr/bin/python3: mailbox,
// zipfile, hashlib, xml.etree.ElementTree, plain splitting for the Concordance DAT). Each Python
// script prints one JSON object of what it found; the assertions are made here on that.
// The sample messages have CRLF and LF line ends, body lines starting with "From " and ">From ",
// a base64 attachment of every byte value, UTF-8 names and subjects, XML special characters,
// invalid UTF-8 and control bytes in decoded values and text.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "tests/unit/temp_dir.h"
#include "audit-api/export_writer.h"
#include "common/base64.h"

namespace postvault::exports {
namespace {

namespace fs = std::filesystem;
using test_support::TempDir;

constexpr const char* kPython = "/usr/bin/python3";
const std::string kCustody = R"({"export":"case-42","signature":"c2lnbmVk","items":3})";

// --- sample messages -----------------------------------------------------------------------

std::string crlf(std::string text) {
    std::string out;
    for (char c : text) {
        if (c == '\n') out += '\r';
        out += c;
    }
    return out;
}

std::string wrapped_base64(std::string_view bytes) {
    const std::string encoded = encode_base64(bytes);
    std::string out;
    for (std::size_t i = 0; i < encoded.size(); i += 76) out += encoded.substr(i, 76) + "\n";
    return out;
}

std::vector<ExportItem> sample_items() {
    std::vector<ExportItem> items(3);

    ExportItem& first = items[0];
    first.id = "msg-0001";
    first.bytes = crlf(
        "From: =?UTF-8?Q?J=C3=BCrgen_M=C3=BCller?= <juergen@example.org>\n"
        "To: Zo\xC3\xAB \xC3\x85ngstr\xC3\xB6m <zoe@example.com>\n"
        "Subject: =?UTF-8?Q?Gr=C3=BC=C3=9Fe_aus_K=C3=B6ln?=\n"
        "Date: Tue, 02 Jan 2024 03:04:05 +0000\n"
        "Message-ID: <m1@example.org>\n"
        "\n"
        "Hello,\n"
        "From the start of a line this must be quoted.\n"
        ">From an already quoted line.\n"
        ">>From twice quoted.\n"
        "From\n"
        "Fromage is not a From line.\n"
        "Bye\n");
    first.envelope_from = "<juergen@example.org>";
    first.date_unix = 1704164645;  // 2024-01-02T03:04:05Z, a Tuesday
    first.from = "J\xC3\xBCrgen M\xC3\xBCller <juergen@example.org>";
    first.to = "Zo\xC3\xAB \xC3\x85ngstr\xC3\xB6m <zoe@example.com>";
    first.subject = "Gr\xC3\xBC\xC3\x9F" "e aus K\xC3\xB6ln \xE2\x80\x94 \xC3\xBCn\xC3\xAF" "c\xC3\xB6" "d\xC3\xA9";
    first.message_id = "m1@example.org";
    first.text = "Hello,\nFrom the start of a line this must be quoted.";
    first.thread = "thread-1";

    std::string every_byte;
    for (int b = 0; b < 256; ++b) every_byte += static_cast<char>(b);
    ExportItem& second = items[1];
    second.id = "msg-0002_B";
    second.bytes =
        "From: \"A & B\" <ab@example.org>\n"
        "To: x@example.com\n"
        "Subject: <b>Q&A \"quoted\"</b>\n"
        "Message-ID: <m2@example.org>\n"
        "MIME-Version: 1.0\n"
        "Content-Type: multipart/mixed; boundary=\"BOUNDARY\"\n"
        "\n"
        "--BOUNDARY\n"
        "Content-Type: text/plain; charset=utf-8\n"
        "\n"
        "See attached.\n"
        "--BOUNDARY\n"
        "Content-Type: application/octet-stream; name=\"data.bin\"\n"
        "Content-Disposition: attachment; filename=\"data.bin\"\n"
        "Content-Transfer-Encoding: base64\n"
        "\n" +
        wrapped_base64(every_byte) +
        "--BOUNDARY--\n";
    second.envelope_from = "ab@example.org";
    second.date_unix = 1704250000;
    second.from = "A & B <ab@example.org>";
    second.to = "x\xFF\x01@example.com";  // invalid UTF-8 and an XML-illegal control byte
    second.subject = "<b>Q&A \"quoted\"</b>";
    second.message_id = "m2@example.org";
    second.text = "See attached.\nbad byte: \xFF here\x01 ctl";
    second.attachment_names = {"data.bin", "r\xC3\xA9sum\xC3\xA9.pdf"};
    second.thread = "thread-1";

    ExportItem& third = items[2];
    third.id = "msg-0003";
    third.bytes = "Subject: last\n\nFrom here, and no final newline";
    third.envelope_from = "";
    third.date_unix = 0;
    third.cc = "c1@example.com\nc2@example.com";
    third.subject = "\xC3\x9E\xC3\xB3rr \xC3\xBEing\x14sep";  // Þórr þing<0x14>sep
    third.text = "";
    return items;
}

// --- helpers -------------------------------------------------------------------------------

std::string read_file(const fs::path& path) {
    std::ifstream in(path, std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

void write_file(const fs::path& path, std::string_view bytes) {
    std::ofstream out(path, std::ios::binary);
    out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

// Runs `script` with python3, the arguments single-quoted; returns the JSON it printed last.
nlohmann::json run_python(const TempDir& dir, const std::string& script, const std::vector<std::string>& args) {
    const fs::path script_path = dir.path() / "check.py";
    write_file(script_path, script);
    std::string command = std::string(kPython) + " '" + script_path.string() + "'";
    for (const std::string& arg : args) command += " '" + arg + "'";
    command += " 2>&1";
    std::string output;
    FILE* pipe = ::popen(command.c_str(), "r");
    if (pipe == nullptr) {
        ADD_FAILURE() << "popen failed";
        return nullptr;
    }
    char buffer[4096];
    while (std::size_t n = std::fread(buffer, 1, sizeof buffer, pipe)) output.append(buffer, n);
    const int status = ::pclose(pipe);
    EXPECT_EQ(status, 0) << output;
    const std::size_t last_line = output.find_last_of('\n', output.size() >= 2 ? output.size() - 2 : 0);
    const std::string json_text = last_line == std::string::npos ? output : output.substr(last_line + 1);
    auto parsed = nlohmann::json::parse(json_text, nullptr, false);
    EXPECT_FALSE(parsed.is_discarded()) << output;
    return parsed;
}

// Writes the items in `format` to dir/export<ext>; returns the manifest.
std::vector<ManifestEntry> write_export(Format format, const fs::path& path, const std::vector<ExportItem>& items) {
    auto writer = ExportWriter::create(format, path.string());
    EXPECT_TRUE(writer.ok()) << (writer.ok() ? "" : writer.error().message);
    if (!writer.ok()) return {};
    for (const ExportItem& item : items) {
        Status added = (*writer)->add(item);
        EXPECT_TRUE(added.ok()) << item.id << ": " << (added.ok() ? "" : added.error().message);
    }
    auto manifest = (*writer)->finish(kCustody);
    EXPECT_TRUE(manifest.ok()) << (manifest.ok() ? "" : manifest.error().message);
    return manifest.ok() ? *manifest : std::vector<ManifestEntry>{};
}

// The originals, one file each, for the Python side.
std::vector<std::string> write_originals(const TempDir& dir, const std::vector<ExportItem>& items) {
    std::vector<std::string> paths;
    for (const ExportItem& item : items) {
        const fs::path path = dir.path() / ("original-" + item.id + ".eml");
        write_file(path, item.bytes);
        paths.push_back(path.string());
    }
    return paths;
}

std::vector<std::string> directory_names(const fs::path& dir) {
    std::vector<std::string> names;
    for (const auto& entry : fs::directory_iterator(dir)) names.push_back(entry.path().filename().string());
    std::sort(names.begin(), names.end());
    return names;
}

unsigned file_mode(const fs::path& path) {
    struct stat st {};
    if (::stat(path.c_str(), &st) != 0) return 0;
    return st.st_mode & 07777;
}

// Python: digests of the original files, for comparing with the manifest.
const char* kDigestScript = R"PY(
import hashlib, json, sys
print(json.dumps([{"sha256": hashlib.sha256(open(p, "rb").read()).hexdigest(),
                   "md5": hashlib.md5(open(p, "rb").read()).hexdigest(),
                   "size": len(open(p, "rb").read())} for p in sys.argv[1:]]))
)PY";

void expect_manifest_matches_originals(const TempDir& dir, const std::vector<ManifestEntry>& manifest,
                                       const std::vector<ExportItem>& items) {
    const nlohmann::json digests = run_python(dir, kDigestScript, write_originals(dir, items));
    ASSERT_EQ(manifest.size(), items.size());
    ASSERT_EQ(digests.size(), items.size());
    for (std::size_t i = 0; i < items.size(); ++i) {
        EXPECT_EQ(manifest[i].id, items[i].id);
        EXPECT_EQ(manifest[i].sha256, digests[i]["sha256"]) << items[i].id;
        EXPECT_EQ(manifest[i].md5, digests[i]["md5"]) << items[i].id;
        EXPECT_EQ(manifest[i].size, digests[i]["size"]) << items[i].id;
    }
}

// --- format names --------------------------------------------------------------------------

TEST(ExportWriterFormat, ParsesTheFourNamesAndRejectsOthers) {
    for (Format format : {Format::mbox, Format::eml_zip, Format::edrm_xml, Format::dat}) {
        auto parsed = parse_format(format_name(format));
        ASSERT_TRUE(parsed.ok()) << format_name(format);
        EXPECT_EQ(*parsed, format);
    }
    EXPECT_EQ(format_name(Format::eml_zip), "eml-zip");
    EXPECT_EQ(format_name(Format::edrm_xml), "edrm-xml");
    for (std::string_view bad : {"zip", "MBOX", "eml_zip", "", "edrm"}) {
        auto parsed = parse_format(bad);
        ASSERT_FALSE(parsed.ok()) << bad;
        EXPECT_EQ(parsed.error().code, "export.format");
        EXPECT_FALSE(parsed.error().is_temporary());
    }
    EXPECT_EQ(content_type(Format::mbox), "application/mbox");
    EXPECT_EQ(content_type(Format::dat), "application/zip");
    EXPECT_EQ(file_extension(Format::mbox), ".mbox");
    EXPECT_EQ(file_extension(Format::edrm_xml), ".zip");
}

// --- manifest text -------------------------------------------------------------------------

TEST(ExportWriterManifest, JsonAndCsvShapes) {
    std::vector<ManifestEntry> entries = {{"a1", "natives/a1.eml", 12, std::string(64, 'a'), std::string(32, 'b')},
                                          {"b,2", "x\"y", 0, "s", "m"}};
    const nlohmann::json json = manifest_json(entries);
    EXPECT_EQ(json["count"], 2);
    ASSERT_EQ(json["items"].size(), 2u);
    EXPECT_EQ(json["items"][0]["id"], "a1");
    EXPECT_EQ(json["items"][0]["file"], "natives/a1.eml");
    EXPECT_EQ(json["items"][0]["size"], 12);
    EXPECT_EQ(json["items"][0]["sha256"], std::string(64, 'a'));
    EXPECT_EQ(json["items"][0]["md5"], std::string(32, 'b'));
    EXPECT_EQ(manifest_csv(entries), "id,file,size,sha256,md5\r\n"
                                     "a1,natives/a1.eml,12," + std::string(64, 'a') + "," + std::string(32, 'b') +
                                         "\r\n"
                                         "\"b,2\",\"x\"\"y\",0,s,m\r\n");
    EXPECT_EQ(manifest_json({}).dump(), R"({"count":0,"items":[]})");
}

// --- mbox ----------------------------------------------------------------------------------

// Python's mailbox.mbox splits on From lines but does not undo From-quoting: the script removes
// one '>' from lines matching ^>+From (mboxrd) and compares with the original, CRLF -> LF.
const char* kMboxScript = R"PY(
import json, mailbox, re, sys
box = mailbox.mbox(sys.argv[1], create=False)
originals = [open(p, "rb").read() for p in sys.argv[2:]]
keys = sorted(box.keys())
result = {"count": len(keys), "equal": [], "from_lines": [], "subjects": []}
for i, key in enumerate(keys):
    data = box.get_bytes(key)
    unquoted = re.sub(rb"(?m)^>(>*From )", rb"\1", data)
    expected = originals[i].replace(b"\r\n", b"\n")
    if not expected.endswith(b"\n"):
        expected += b"\n"
    result["equal"].append(unquoted == expected)
    message = box.get_message(key)
    result["from_lines"].append(message.get_from())
    result["subjects"].append(message["Subject"])
print(json.dumps(result))
)PY";

TEST(ExportWriterMbox, PythonMailboxReadsEveryMessageBack) {
    TempDir dir("export-mbox");
    const auto items = sample_items();
    const fs::path path = dir.path() / "export.mbox";
    const auto manifest = write_export(Format::mbox, path, items);
    ASSERT_EQ(manifest.size(), 3u);
    EXPECT_EQ(manifest[0].file, "export.mbox#1");
    EXPECT_EQ(manifest[2].file, "export.mbox#3");
    expect_manifest_matches_originals(dir, manifest, items);

    const nlohmann::json found = run_python(dir, kMboxScript, [&] {
        std::vector<std::string> args = {path.string()};
        for (const auto& original : write_originals(dir, items)) args.push_back(original);
        return args;
    }());
    ASSERT_EQ(found["count"], 3);
    EXPECT_EQ(found["equal"], nlohmann::json::array({true, true, true}));
    EXPECT_EQ(found["from_lines"][0], "juergen@example.org Tue Jan  2 03:04:05 2024");
    EXPECT_EQ(found["from_lines"][2], "MAILER-DAEMON Thu Jan  1 00:00:00 1970");
    EXPECT_EQ(found["subjects"][1], "<b>Q&A \"quoted\"</b>");
    EXPECT_EQ(file_mode(path), 0600u);
    EXPECT_EQ(directory_names(dir.path()).size(), 5u);  // export.mbox, check.py, 3 originals
}

TEST(ExportWriterMbox, QuotesFromLinesAndNormalisesLineEnds) {
    TempDir dir("export-mbox-bytes");
    const fs::path path = dir.path() / "out.mbox";
    write_export(Format::mbox, path, sample_items());
    const std::string mbox = read_file(path);
    EXPECT_EQ(mbox.find('\r'), std::string::npos);
    EXPECT_TRUE(mbox.starts_with("From juergen@example.org Tue Jan  2 03:04:05 2024\nFrom: =?UTF-8?Q?J"));
    EXPECT_NE(mbox.find("\n>From the start of a line"), std::string::npos);
    EXPECT_NE(mbox.find("\n>>From an already quoted line."), std::string::npos);
    EXPECT_NE(mbox.find("\n>>>From twice quoted."), std::string::npos);
    EXPECT_NE(mbox.find("\nFrom\nFromage is not"), std::string::npos);  // "From" without a space is not quoted
    EXPECT_NE(mbox.find("\n\nFrom ab@example.org "), std::string::npos);
    EXPECT_NE(mbox.find("\n\n>From here, and no final newline\n\n"), std::string::npos);
    EXPECT_TRUE(mbox.ends_with("no final newline\n\n"));
}

// --- eml-zip -------------------------------------------------------------------------------

const char* kZipScript = R"PY(
import hashlib, json, sys, zipfile
archive = zipfile.ZipFile(sys.argv[1])
originals = [open(p, "rb").read() for p in sys.argv[2:]]
manifest = json.loads(archive.read("manifest.json"))
result = {"names": archive.namelist(), "testzip": archive.testzip(), "count": manifest["count"],
          "digests_ok": [], "native_equal": [], "custody": json.loads(archive.read("custody.json")),
          "custody_raw": archive.read("custody.json").decode(), "manifest_raw": archive.read("manifest.json").decode(),
          "csv": archive.read("manifest.csv").decode(),
          "methods": sorted(set(info.compress_type for info in archive.infolist()))}
for i, item in enumerate(manifest["items"]):
    data = archive.read(item["file"])
    result["digests_ok"].append(hashlib.sha256(data).hexdigest() == item["sha256"]
                                and hashlib.md5(data).hexdigest() == item["md5"] and len(data) == item["size"])
    result["native_equal"].append(data == originals[i])
print(json.dumps(result))
)PY";

TEST(ExportWriterEmlZip, PythonZipfileFindsMembersAndDigests) {
    TempDir dir("export-eml");
    const auto items = sample_items();
    const fs::path path = dir.path() / "export.zip";
    const auto manifest = write_export(Format::eml_zip, path, items);
    ASSERT_EQ(manifest.size(), 3u);
    EXPECT_EQ(manifest[1].file, "messages/msg-0002_B.eml");
    expect_manifest_matches_originals(dir, manifest, items);

    std::vector<std::string> args = {path.string()};
    for (const auto& original : write_originals(dir, items)) args.push_back(original);
    const nlohmann::json found = run_python(dir, kZipScript, args);
    EXPECT_EQ(found["names"], nlohmann::json::array({"messages/msg-0001.eml", "messages/msg-0002_B.eml",
                                                     "messages/msg-0003.eml", "manifest.json", "manifest.csv",
                                                     "custody.json"}));
    EXPECT_TRUE(found["testzip"].is_null());  // every CRC checks out
    EXPECT_EQ(found["count"], 3);
    EXPECT_EQ(found["digests_ok"], nlohmann::json::array({true, true, true}));
    EXPECT_EQ(found["native_equal"], nlohmann::json::array({true, true, true}));
    EXPECT_EQ(found["custody_raw"], kCustody);
    EXPECT_EQ(found["custody"]["export"], "case-42");
    EXPECT_EQ(found["manifest_raw"], manifest_json(manifest).dump());
    EXPECT_EQ(found["csv"], manifest_csv(manifest));
    EXPECT_EQ(found["methods"], nlohmann::json::array({8}));  // deflate
    EXPECT_EQ(file_mode(path), 0600u);
    for (const std::string& name : directory_names(dir.path())) {
        EXPECT_EQ(name.find(".parts-"), std::string::npos) << "spool left behind: " << name;
    }
}

TEST(ExportWriterEmlZip, ManyMembersStayReadable) {
    TempDir dir("export-many");
    std::vector<ExportItem> items;
    for (int i = 0; i < 600; ++i) {
        ExportItem item;
        item.id = "m" + std::to_string(i);
        item.bytes = "Subject: number " + std::to_string(i) + "\r\n\r\n";
        item.bytes += std::string(static_cast<std::size_t>(i), 'x');
        items.push_back(std::move(item));
    }
    const fs::path path = dir.path() / "many.zip";
    const auto manifest = write_export(Format::eml_zip, path, items);
    ASSERT_EQ(manifest.size(), 600u);
    std::vector<std::string> args = {path.string()};
    for (const auto& original : write_originals(dir, items)) args.push_back(original);
    const nlohmann::json found = run_python(dir, kZipScript, args);
    EXPECT_EQ(found["names"].size(), 603u);
    EXPECT_TRUE(found["testzip"].is_null());
    EXPECT_EQ(std::count(found["native_equal"].begin(), found["native_equal"].end(), true), 600);
    EXPECT_EQ(std::count(found["digests_ok"].begin(), found["digests_ok"].end(), true), 600);
}

// More than 65535 entries need the ZIP64 end of central directory; libzip adds it by itself.
const char* kZip64Script = R"PY(
import json, sys, zipfile
archive = zipfile.ZipFile(sys.argv[1])
raw = open(sys.argv[1], "rb").read()
print(json.dumps({"count": len(archive.namelist()), "zip64_end": raw.rfind(b"PK\x06\x06") > 0,
                  "first": archive.read("messages/m0.eml").decode(),
                  "last": archive.read("messages/m65599.eml").decode(),
                  "manifest_count": json.loads(archive.read("manifest.json"))["count"]}))
)PY";

TEST(ExportWriterEmlZip, MoreThan65535MembersUseZip64) {
    TempDir dir("export-zip64");
    const fs::path path = dir.path() / "zip64.zip";
    auto writer = ExportWriter::create(Format::eml_zip, path.string());
    ASSERT_TRUE(writer.ok());
    ExportItem item;
    for (int i = 0; i < 65600; ++i) {
        item.id = "m" + std::to_string(i);
        item.bytes = "Subject: " + std::to_string(i) + "\r\n\r\nx\r\n";
        ASSERT_TRUE((*writer)->add(item).ok()) << i;
    }
    auto manifest = (*writer)->finish(kCustody);
    ASSERT_TRUE(manifest.ok()) << manifest.error().message;
    const nlohmann::json found = run_python(dir, kZip64Script, {path.string()});
    EXPECT_EQ(found["count"], 65603);
    EXPECT_TRUE(found["zip64_end"]);
    EXPECT_EQ(found["first"], "Subject: 0\r\n\r\nx\r\n");
    EXPECT_EQ(found["last"], "Subject: 65599\r\n\r\nx\r\n");
    EXPECT_EQ(found["manifest_count"], 65600);
}

// --- EDRM XML ------------------------------------------------------------------------------

const char* kEdrmScript = R"PY(
import hashlib, json, sys, zipfile
import xml.etree.ElementTree as ET
archive = zipfile.ZipFile(sys.argv[1])
originals = [open(p, "rb").read() for p in sys.argv[2:]]
root = ET.fromstring(archive.read("edrm.xml"))
documents = root.findall("./Batch/Documents/Document")
result = {"root": root.tag, "interchange": root.get("DataInterchangeType"), "names": archive.namelist(),
          "testzip": archive.testzip(), "doc_ids": [d.get("DocID") for d in documents],
          "doc_types": [[d.get("DocType"), d.get("MimeType")] for d in documents],
          "tags": [], "native_ok": [], "text_ok": [], "texts": [], "native_equal": [],
          "relationships": [[r.get("Type"), r.get("ParentDocId"), r.get("ChildDocId")]
                            for r in root.findall("./Batch/Relationships/Relationship")]}
manifest = json.loads(archive.read("manifest.json"))
result["manifest_md5"] = [item["md5"] for item in manifest["items"]]
for i, document in enumerate(documents):
    result["tags"].append({t.get("TagName"): [t.get("TagDataType"), t.get("TagValue")]
                           for t in document.findall("./Tags/Tag")})
    for file in document.findall("./Files/File"):
        external = file.find("ExternalFile")
        data = archive.read(external.get("FilePath") + "/" + external.get("FileName"))
        ok = (hashlib.md5(data).hexdigest() == external.get("Hash") and external.get("HashType") == "MD5"
              and len(data) == int(external.get("FileSize")))
        if file.get("FileType") == "Native":
            result["native_ok"].append(ok)
            result["native_equal"].append(data == originals[i])
        elif file.get("FileType") == "Text":
            result["text_ok"].append(ok)
            try:
                result["texts"].append(data.decode("utf-8"))
            except UnicodeDecodeError:
                result["texts"].append(None)
print(json.dumps(result))
)PY";

TEST(ExportWriterEdrmXml, PythonParsesLoadFileAndHashesMatch) {
    TempDir dir("export-edrm");
    const auto items = sample_items();
    const fs::path path = dir.path() / "case-42.zip";
    const auto manifest = write_export(Format::edrm_xml, path, items);
    ASSERT_EQ(manifest.size(), 3u);
    EXPECT_EQ(manifest[0].file, "natives/msg-0001.eml");
    expect_manifest_matches_originals(dir, manifest, items);

    std::vector<std::string> args = {path.string()};
    for (const auto& original : write_originals(dir, items)) args.push_back(original);
    const nlohmann::json found = run_python(dir, kEdrmScript, args);
    EXPECT_EQ(found["root"], "Root");
    EXPECT_EQ(found["interchange"], "Update");
    EXPECT_TRUE(found["testzip"].is_null());
    EXPECT_EQ(found["names"], nlohmann::json::array({"natives/msg-0001.eml", "text/msg-0001.txt",
                                                     "natives/msg-0002_B.eml", "text/msg-0002_B.txt",
                                                     "natives/msg-0003.eml", "text/msg-0003.txt", "edrm.xml",
                                                     "manifest.json", "manifest.csv", "custody.json"}));
    EXPECT_EQ(found["doc_ids"], nlohmann::json::array({"msg-0001", "msg-0002_B", "msg-0003"}));
    EXPECT_EQ(found["doc_types"][0], nlohmann::json::array({"Message", "message/rfc822"}));
    EXPECT_EQ(found["native_ok"], nlohmann::json::array({true, true, true}));
    EXPECT_EQ(found["text_ok"], nlohmann::json::array({true, true, true}));
    EXPECT_EQ(found["native_equal"], nlohmann::json::array({true, true, true}));
    EXPECT_EQ(found["manifest_md5"], nlohmann::json::array({manifest[0].md5, manifest[1].md5, manifest[2].md5}));

    const nlohmann::json& first = found["tags"][0];
    EXPECT_EQ(first["#From"], nlohmann::json::array({"Text", items[0].from}));
    EXPECT_EQ(first["#To"][1], items[0].to);
    EXPECT_EQ(first["#Subject"][1], items[0].subject);
    EXPECT_EQ(first["#DateSent"], nlohmann::json::array({"DateTime", "2024-01-02T03:04:05Z"}));
    EXPECT_EQ(first["#MessageID"][1], "m1@example.org");
    const nlohmann::json& second = found["tags"][1];
    EXPECT_EQ(second["#Subject"][1], "<b>Q&A \"quoted\"</b>");
    EXPECT_EQ(second["#From"][1], "A & B <ab@example.org>");
    EXPECT_EQ(second["#To"][1], "x\xEF\xBF\xBD\xEF\xBF\xBD@example.com");  // bad byte and 0x01 -> U+FFFD
    EXPECT_EQ(second["#AttachmentNames"][1], "data.bin; r\xC3\xA9sum\xC3\xA9.pdf");
    const nlohmann::json& third = found["tags"][2];
    EXPECT_FALSE(third.contains("#DateSent"));  // date unknown
    EXPECT_EQ(third["#CC"][1], "c1@example.com\nc2@example.com");  // newline kept through the attribute

    EXPECT_EQ(found["texts"][0], items[0].text);
    EXPECT_EQ(found["texts"][1], "See attached.\nbad byte: \xEF\xBF\xBD here\x01 ctl");
    EXPECT_EQ(found["texts"][2], "");
    EXPECT_EQ(found["relationships"],
              nlohmann::json::array({nlohmann::json::array({"Thread", "msg-0001", "msg-0002_B"})}));
}

// --- Concordance DAT -----------------------------------------------------------------------

const char* kDatScript = R"PY(
import hashlib, json, sys, zipfile
archive = zipfile.ZipFile(sys.argv[1])
raw = archive.read("loadfile.dat")
result = {"bom": raw.startswith(b"\xef\xbb\xbf"), "names": archive.namelist(), "testzip": archive.testzip()}
records = raw[3:].decode("utf-8").split("\r\n")
result["ends_with_crlf"] = records[-1] == ""
records = records[:-1]
result["quoted"] = []
result["rows"] = []
for record in records:
    fields = record.split("\x14")
    result["quoted"].append(all(len(f) >= 2 and f[0] == "\u00fe" and f[-1] == "\u00fe" for f in fields))
    result["rows"].append([f[1:-1] for f in fields])
header = result["rows"][0]
result["files_ok"] = []
for row in result["rows"][1:]:
    value = dict(zip(header, row))
    native = archive.read(value["NATIVEPATH"])
    archive.read(value["TEXTPATH"])
    result["files_ok"].append(hashlib.md5(native).hexdigest() == value["MD5HASH"]
                              and hashlib.sha256(native).hexdigest() == value["SHA256HASH"]
                              and len(native) == int(value["FILESIZE"]))
print(json.dumps(result))
)PY";

TEST(ExportWriterDat, PythonSplitsConcordanceLoadFile) {
    TempDir dir("export-dat");
    const auto items = sample_items();
    const fs::path path = dir.path() / "export.zip";
    const auto manifest = write_export(Format::dat, path, items);
    ASSERT_EQ(manifest.size(), 3u);
    expect_manifest_matches_originals(dir, manifest, items);

    const nlohmann::json found = run_python(dir, kDatScript, {path.string()});
    EXPECT_TRUE(found["bom"]);
    EXPECT_TRUE(found["ends_with_crlf"]);
    EXPECT_TRUE(found["testzip"].is_null());
    EXPECT_EQ(found["names"], nlohmann::json::array({"natives/msg-0001.eml", "text/msg-0001.txt",
                                                     "natives/msg-0002_B.eml", "text/msg-0002_B.txt",
                                                     "natives/msg-0003.eml", "text/msg-0003.txt", "loadfile.dat",
                                                     "manifest.json", "manifest.csv", "custody.json"}));
    ASSERT_EQ(found["rows"].size(), 4u);  // header + 3
    EXPECT_EQ(found["quoted"], nlohmann::json::array({true, true, true, true}));
    EXPECT_EQ(found["rows"][0],
              nlohmann::json::array({"BEGDOC", "ENDDOC", "FROM", "TO", "CC", "SUBJECT", "DATESENT", "MESSAGEID",
                                     "THREAD", "ATTACHMENTS", "NATIVEPATH", "TEXTPATH", "MD5HASH", "SHA256HASH",
                                     "FILESIZE"}));
    const nlohmann::json& first = found["rows"][1];
    ASSERT_EQ(first.size(), 15u);
    EXPECT_EQ(first[0], "msg-0001");
    EXPECT_EQ(first[1], "msg-0001");
    EXPECT_EQ(first[2], items[0].from);
    EXPECT_EQ(first[5], items[0].subject);
    EXPECT_EQ(first[6], "2024-01-02T03:04:05Z");
    EXPECT_EQ(first[8], "thread-1");
    EXPECT_EQ(first[10], "natives/msg-0001.eml");
    EXPECT_EQ(first[11], "text/msg-0001.txt");
    EXPECT_EQ(first[12], manifest[0].md5);
    EXPECT_EQ(first[13], manifest[0].sha256);
    EXPECT_EQ(first[14], std::to_string(items[0].bytes.size()));
    EXPECT_EQ(found["rows"][2][5], "<b>Q&A \"quoted\"</b>");
    EXPECT_EQ(found["rows"][2][9], "data.bin; r\xC3\xA9sum\xC3\xA9.pdf");
    const nlohmann::json& third = found["rows"][3];
    EXPECT_EQ(third[4], "c1@example.com\xC2\xAE" "c2@example.com");  // newline -> ®
    EXPECT_EQ(third[5], "\xC3\x9E\xC3\xB3rr \xEF\xBF\xBDing sep");   // þ -> U+FFFD, 0x14 -> space
    EXPECT_EQ(third[6], "");
    EXPECT_EQ(found["files_ok"], nlohmann::json::array({true, true, true}));
}

// --- errors and file handling --------------------------------------------------------------

TEST(ExportWriterErrors, UnwritablePathIsAnErrorForEveryFormat) {
    TempDir dir("export-bad-path");
    write_file(dir.path() / "plain-file", "x");
    for (Format format : {Format::mbox, Format::eml_zip, Format::edrm_xml, Format::dat}) {
        for (const fs::path& path : {dir.path() / "missing-dir" / "out", dir.path() / "plain-file" / "out",
                                     dir.path()}) {
            auto writer = ExportWriter::create(format, path.string());
            ASSERT_FALSE(writer.ok()) << format_name(format) << " " << path;
            EXPECT_EQ(writer.error().code, "export.path") << writer.error().message;
            EXPECT_FALSE(writer.error().is_temporary());
        }
    }
    EXPECT_EQ(directory_names(dir.path()), std::vector<std::string>{"plain-file"});  // no spool left behind
}

TEST(ExportWriterErrors, RejectsBadAndDuplicateIdsAndStaysUsable) {
    TempDir dir("export-ids");
    const fs::path path = dir.path() / "ids.zip";
    auto writer = ExportWriter::create(Format::edrm_xml, path.string());
    ASSERT_TRUE(writer.ok());
    ExportItem item = sample_items()[1];
    for (const std::string& bad : std::vector<std::string>{"a<b&c\"", "../etc/passwd", "", "space id",
                                                             std::string(201, 'a'), "caf\xC3\xA9"}) {
        item.id = bad;
        Status added = (*writer)->add(item);
        ASSERT_FALSE(added.ok()) << bad;
        EXPECT_EQ(added.error().code, "export.id");
    }
    item.id = "good-1";
    ASSERT_TRUE((*writer)->add(item).ok());
    Status duplicate = (*writer)->add(item);
    ASSERT_FALSE(duplicate.ok());
    EXPECT_EQ(duplicate.error().code, "export.duplicate_id");

    auto bad_custody = (*writer)->finish("not json {");
    ASSERT_FALSE(bad_custody.ok());
    EXPECT_EQ(bad_custody.error().code, "export.custody");

    auto manifest = (*writer)->finish(kCustody);
    ASSERT_TRUE(manifest.ok()) << manifest.error().message;
    ASSERT_EQ(manifest->size(), 1u);
    EXPECT_EQ((*manifest)[0].id, "good-1");

    Status late = (*writer)->add(sample_items()[0]);
    ASSERT_FALSE(late.ok());
    EXPECT_EQ(late.error().code, "export.finished");
    auto again = (*writer)->finish(kCustody);
    ASSERT_FALSE(again.ok());
    EXPECT_EQ(again.error().code, "export.finished");
    EXPECT_TRUE(fs::exists(path));
}

TEST(ExportWriterFiles, AbandonedWriterRemovesOutputAndSpool) {
    TempDir dir("export-abandon");
    for (Format format : {Format::mbox, Format::eml_zip, Format::edrm_xml, Format::dat}) {
        {
            auto writer = ExportWriter::create(format, (dir.path() / "abandoned").string());
            ASSERT_TRUE(writer.ok());
            EXPECT_EQ(file_mode(dir.path() / "abandoned"), 0600u);
            for (const ExportItem& item : sample_items()) ASSERT_TRUE((*writer)->add(item).ok());
            EXPECT_FALSE(directory_names(dir.path()).empty());
        }
        EXPECT_TRUE(directory_names(dir.path()).empty()) << format_name(format);
    }
}

TEST(ExportWriterFiles, TruncatesAnExistingFileAndSetsMode0600) {
    TempDir dir("export-truncate");
    const fs::path path = dir.path() / "old.mbox";
    write_file(path, std::string(10000, 'z'));
    ASSERT_EQ(::chmod(path.c_str(), 0644), 0);
    std::vector<ExportItem> items = {sample_items()[2]};
    write_export(Format::mbox, path, items);
    EXPECT_EQ(file_mode(path), 0600u);
    EXPECT_EQ(read_file(path), "From MAILER-DAEMON Thu Jan  1 00:00:00 1970\n"
                               "Subject: last\n\n>From here, and no final newline\n\n");
}

}  // namespace
}  // namespace postvault::exports
