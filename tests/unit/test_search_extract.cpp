// Tests for search/extract.h: handcrafted messages for each encoding, charset, MIME shape and
// attachment kind; documents (PDF, DOCX, XLSX, PPTX, ODT) built here at run time (a PDF as a
// string with computed xref offsets, the zips with libzip from minimal XML), so no fixture file
// and no network is needed; hostile input (zip bombs, corrupt files, deep nesting) must stay
// bounded; and a sample of the ext4-dev corpus (../shared/corpus, unpacked into a temporary
// folder; skipped, saying so, when the folder is missing).
#include <glib.h>
#include <gtest/gtest.h>
#include <zip.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <random>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "search/extract.h"
#include "temp_dir.h"

namespace postvault::search {
namespace {

std::string base64(std::string_view bytes) {
    gchar* encoded = g_base64_encode(reinterpret_cast<const guchar*>(bytes.data()), bytes.size());
    std::string text(encoded);
    g_free(encoded);
    std::string wrapped;  // 76 columns, as mailers write it
    for (std::size_t i = 0; i < text.size(); i += 76) wrapped += text.substr(i, 76) + "\n";
    return wrapped;
}

bool contains(std::string_view haystack, std::string_view needle) { return haystack.find(needle) != std::string_view::npos; }

// A zip built in memory with libzip: (name, content) entries, deflated.
std::string make_zip(const std::vector<std::pair<std::string, std::string>>& entries) {
    zip_error_t error;
    zip_error_init(&error);
    zip_source_t* buffer = zip_source_buffer_create(nullptr, 0, 0, &error);
    if (buffer == nullptr) return {};
    zip_t* archive = zip_open_from_source(buffer, ZIP_TRUNCATE, &error);
    if (archive == nullptr) {
        zip_source_free(buffer);
        return {};
    }
    zip_source_keep(buffer);
    for (const auto& [name, content] : entries) {
        zip_source_t* source = zip_source_buffer(archive, content.data(), content.size(), 0);
        const zip_int64_t index = zip_file_add(archive, name.c_str(), source, ZIP_FL_ENC_UTF_8);
        if (index < 0) {
            zip_source_free(source);
            continue;
        }
        zip_set_file_compression(archive, static_cast<zip_uint64_t>(index), ZIP_CM_DEFLATE, 1);
    }
    std::string bytes;
    if (zip_close(archive) == 0 && zip_source_open(buffer) == 0) {
        zip_source_seek(buffer, 0, SEEK_END);
        const zip_int64_t size = zip_source_tell(buffer);
        zip_source_seek(buffer, 0, SEEK_SET);
        bytes.resize(static_cast<std::size_t>(std::max<zip_int64_t>(size, 0)));
        zip_source_read(buffer, bytes.data(), bytes.size());
        zip_source_close(buffer);
    } else {
        zip_discard(archive);
    }
    zip_source_free(buffer);
    zip_error_fini(&error);
    return bytes;
}

constexpr const char* kXmlDeclaration = "<?xml version=\"1.0\" encoding=\"UTF-8\" standalone=\"yes\"?>\n";

std::string make_docx(const std::string& body_xml) {
    return make_zip({
        {"[Content_Types].xml",
         std::string(kXmlDeclaration) +
             "<Types xmlns=\"http://schemas.openxmlformats.org/package/2006/content-types\">"
             "<Override PartName=\"/word/document.xml\" ContentType=\"application/"
             "vnd.openxmlformats-officedocument.wordprocessingml.document.main+xml\"/></Types>"},
        {"word/document.xml",
         std::string(kXmlDeclaration) +
             "<w:document xmlns:w=\"http://schemas.openxmlformats.org/wordprocessingml/2006/main\"><w:body>" +
             body_xml + "</w:body></w:document>"},
    });
}

std::string docx_paragraphs() {
    return "<w:p><w:pPr><w:tabs><w:tab w:val=\"left\" w:pos=\"720\"/></w:tabs></w:pPr>"
           "<w:r><w:t>Quarterly</w:t></w:r><w:r><w:t xml:space=\"preserve\"> merger </w:t></w:r>"
           "<w:r><w:tab/><w:t>forecast &amp; plan</w:t></w:r></w:p>"
           "<w:p><w:r><w:t>Second paragraph</w:t></w:r><w:r><w:delText>deleted words</w:delText></w:r></w:p>";
}

std::string make_xlsx() {
    const std::string main = "http://schemas.openxmlformats.org/spreadsheetml/2006/main";
    return make_zip({
        {"xl/workbook.xml", std::string(kXmlDeclaration) + "<workbook xmlns=\"" + main + "\"/>"},
        {"xl/sharedStrings.xml",
         std::string(kXmlDeclaration) + "<sst xmlns=\"" + main +
             "\" count=\"2\"><si><t>Revenue</t></si><si><r><t>Cost</t></r><r><t xml:space=\"preserve\"> "
             "centre</t></r><rPh><t>phonetic</t></rPh></si></sst>"},
        {"xl/worksheets/sheet1.xml",
         std::string(kXmlDeclaration) + "<worksheet xmlns=\"" + main +
             "\"><sheetData><row r=\"1\"><c r=\"A1\" t=\"s\"><v>0</v></c><c r=\"B1\"><v>1234.5</v></c></row>"
             "<row r=\"2\"><c r=\"A2\" t=\"inlineStr\"><is><t>Inline note</t></is></c>"
             "<c r=\"B2\" t=\"b\"><v>1</v></c><c r=\"C2\"><f>SUM(B1)</f><v>99</v></c></row></sheetData></worksheet>"},
        {"xl/worksheets/sheet10.xml",
         std::string(kXmlDeclaration) + "<worksheet xmlns=\"" + main +
             "\"><sheetData><row r=\"1\"><c r=\"A1\" t=\"str\"><v>tenth sheet</v></c></row></sheetData></worksheet>"},
        {"xl/worksheets/sheet2.xml",
         std::string(kXmlDeclaration) + "<worksheet xmlns=\"" + main +
             "\"><sheetData><row r=\"1\"><c r=\"A1\"><v>2</v></c></row></sheetData></worksheet>"},
    });
}

std::string make_pptx() {
    auto slide = [](const std::string& text) {
        return std::string(kXmlDeclaration) +
               "<p:sld xmlns:p=\"http://schemas.openxmlformats.org/presentationml/2006/main\" "
               "xmlns:a=\"http://schemas.openxmlformats.org/drawingml/2006/main\"><p:cSld><p:spTree><p:sp>"
               "<p:txBody><a:p><a:r><a:t>" +
               text + "</a:t></a:r><a:br/><a:r><a:t>bullet</a:t></a:r></a:p></p:txBody></p:sp></p:spTree></p:cSld></p:sld>";
    };
    return make_zip({
        {"ppt/presentation.xml", std::string(kXmlDeclaration) + "<p:presentation xmlns:p=\"x\"/>"},
        {"ppt/slides/slide2.xml", slide("Second slide")},
        {"ppt/slides/slide1.xml", slide("Roadmap slide")},
        {"ppt/slides/_rels/slide1.xml.rels", "<Relationships/>"},
    });
}

std::string make_odt() {
    return make_zip({
        {"mimetype", "application/vnd.oasis.opendocument.text"},
        {"content.xml",
         std::string(kXmlDeclaration) +
             "<office:document-content xmlns:office=\"urn:oasis:names:tc:opendocument:xmlns:office:1.0\" "
             "xmlns:text=\"urn:oasis:names:tc:opendocument:xmlns:text:1.0\"><office:body><office:text>"
             "<text:h text:outline-level=\"1\">Board minutes</text:h>"
             "<text:p>Alpha<text:s text:c=\"3\"/>beta<text:tab/>gamma<text:line-break/>delta "
             "<text:span>span text</text:span></text:p></office:text></office:body></office:document-content>"},
    });
}

// A one-page PDF with Helvetica text, xref offsets computed as it is built.
std::string make_pdf(const std::string& text) {
    const std::string stream = "BT /F1 24 Tf 72 700 Td (" + text + ") Tj ET\n";
    const std::vector<std::string> objects = {
        "<< /Type /Catalog /Pages 2 0 R >>",
        "<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
        "/Resources << /Font << /F1 5 0 R >> >> >>",
        "<< /Length " + std::to_string(stream.size()) + " >>\nstream\n" + stream + "endstream",
        "<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    };
    std::string pdf = "%PDF-1.4\n";
    std::vector<std::size_t> offsets;
    for (std::size_t i = 0; i < objects.size(); ++i) {
        offsets.push_back(pdf.size());
        pdf += std::to_string(i + 1) + " 0 obj\n" + objects[i] + "\nendobj\n";
    }
    const std::size_t xref = pdf.size();
    pdf += "xref\n0 " + std::to_string(objects.size() + 1) + "\n0000000000 65535 f \n";
    for (std::size_t offset : offsets) {
        char line[32];
        std::snprintf(line, sizeof line, "%010zu 00000 n \n", offset);
        pdf += line;
    }
    pdf += "trailer\n<< /Size " + std::to_string(objects.size() + 1) + " /Root 1 0 R >>\nstartxref\n" +
           std::to_string(xref) + "\n%%EOF\n";
    return pdf;
}

// The same PDF locked by the standard security handler: /U does not match the empty user
// password, so the document cannot be opened without one.
std::string make_locked_pdf() {
    std::string pdf = make_pdf("secret");
    const std::string encrypt =
        "6 0 obj\n<< /Filter /Standard /V 1 /R 2 /O <" + std::string(64, 'a') + "> /U <" + std::string(64, 'b') +
        "> /P -44 >>\nendobj\n";
    const std::size_t xref = pdf.find("xref\n");
    std::string head = pdf.substr(0, xref) + encrypt;
    const std::size_t encrypt_offset = xref;
    // Rebuild the xref with the extra object.
    std::string table = pdf.substr(xref, pdf.find("trailer") - xref);
    table.replace(table.find("0 6\n"), 4, "0 7\n");
    char line[32];
    std::snprintf(line, sizeof line, "%010zu 00000 n \n", encrypt_offset);
    table += line;
    const std::size_t new_xref = head.size();
    return head + table + "trailer\n<< /Size 7 /Root 1 0 R /Encrypt 6 0 R /ID [<" + std::string(32, 'c') + "> <" +
           std::string(32, 'c') + ">] >>\nstartxref\n" + std::to_string(new_xref) + "\n%%EOF\n";
}

// A multipart/mixed message: a text body, then each (headers, body) part.
std::string mixed_message(const std::string& body, const std::vector<std::pair<std::string, std::string>>& parts) {
    std::string message =
        "From: Alice <alice@corp.example>\nTo: bob@partner.example\nSubject: parts\n"
        "Date: Tue, 05 Mar 2024 10:00:00 +0000\nMessage-ID: <parts@corp.example>\nMIME-Version: 1.0\n"
        "Content-Type: multipart/mixed; boundary=\"XYZ\"\n\n--XYZ\nContent-Type: text/plain; charset=utf-8\n\n" +
        body + "\n";
    for (const auto& [headers, content] : parts) message += "--XYZ\n" + headers + "\n\n" + content + "\n";
    return message + "--XYZ--\n";
}

std::string attached(const std::string& type, const std::string& filename, const std::string& bytes) {
    return mixed_message("see attached", {{"Content-Type: " + type + "; name=\"" + filename +
                                               "\"\nContent-Disposition: attachment; filename=\"" + filename +
                                               "\"\nContent-Transfer-Encoding: base64",
                                           base64(bytes)}});
}

// ---- headers and plain text ----

TEST(SearchExtract, PlainTextMessage) {
    const std::string raw =
        "Return-Path: <alice@corp.example>\r\n"
        "From: Alice Smith <Alice@Corp.Example>\r\n"
        "To: Bob <bob@partner.example>, carol@partner.example\r\n"
        "Cc: Undisclosed:;, Team: dan@corp.example, \"Eve\" <eve@corp.example>;\r\n"
        "Bcc: secret@corp.example\r\n"
        "Reply-To: replies@corp.example\r\n"
        "Subject: Quarterly report\r\n"
        "Date: Tue, 05 Mar 2024 10:00:00 +0100\r\n"
        "Message-ID: <abc123@corp.example>\r\n"
        "In-Reply-To: <parent@corp.example> <other@corp.example>\r\n"
        "References: <root@corp.example>\r\n <parent@corp.example>\r\n"
        "\r\n"
        "Hello Bob,\r\n\r\nthe merger forecast is attached.\r\n";
    const Content content = extract_message(raw);
    EXPECT_EQ(content.subject, "Quarterly report");
    ASSERT_EQ(content.from.size(), 1u);
    EXPECT_EQ(content.from[0].name, "Alice Smith");
    EXPECT_EQ(content.from[0].address, "Alice@Corp.Example");
    ASSERT_EQ(content.to.size(), 2u);
    EXPECT_EQ(content.to[0].name, "Bob");
    EXPECT_EQ(content.to[1].address, "carol@partner.example");
    // An empty group stays as its name; a group's members are flattened.
    ASSERT_EQ(content.cc.size(), 3u);
    EXPECT_EQ(content.cc[0].name, "Undisclosed");
    EXPECT_EQ(content.cc[0].address, "");
    EXPECT_EQ(content.cc[1].address, "dan@corp.example");
    EXPECT_EQ(content.cc[2].name, "Eve");
    ASSERT_EQ(content.bcc.size(), 1u);
    ASSERT_EQ(content.reply_to.size(), 1u);
    EXPECT_EQ(content.reply_to[0].address, "replies@corp.example");
    EXPECT_EQ(content.message_id, "abc123@corp.example");
    EXPECT_EQ(content.in_reply_to, "parent@corp.example");
    EXPECT_EQ(content.references, (std::vector<std::string>{"root@corp.example", "parent@corp.example"}));
    EXPECT_EQ(content.date, 1709629200);  // 09:00 UTC
    EXPECT_EQ(content.body, "Hello Bob,\n\nthe merger forecast is attached.");
    EXPECT_TRUE(content.attachments.empty());
    EXPECT_FALSE(content.signed_message);
    EXPECT_FALSE(content.encrypted_message);
    EXPECT_FALSE(content.truncated);
}

TEST(SearchExtract, MissingHeadersAndEmptyInput) {
    const Content content = extract_message("Subject: only\n\nbody\n");
    EXPECT_EQ(content.date, 0);
    EXPECT_EQ(content.message_id, "");
    EXPECT_TRUE(content.from.empty());
    EXPECT_EQ(content.body, "body");
    const Content empty = extract_message("");
    EXPECT_EQ(empty.body, "");
    EXPECT_EQ(extract_message("Date: not a date\n\nx").date, 0);
}

TEST(SearchExtract, QuotedPrintableAndBase64) {
    const std::string qp =
        "Subject: qp\nMIME-Version: 1.0\nContent-Type: text/plain; charset=utf-8\n"
        "Content-Transfer-Encoding: quoted-printable\n\n"
        "Caf=C3=A9 au lait, a long line that is wrapped =\nby a soft break.\n";
    EXPECT_EQ(extract_message(qp).body, "Café au lait, a long line that is wrapped by a soft break.");
    const std::string b64 =
        "Subject: b64\nMIME-Version: 1.0\nContent-Type: text/plain; charset=utf-8\n"
        "Content-Transfer-Encoding: base64\n\n" +
        base64("Zoë's base64 body\r\nsecond line\r\n");
    EXPECT_EQ(extract_message(b64).body, "Zoë's base64 body\nsecond line");
}

TEST(SearchExtract, Charsets) {
    auto body_in = [](const std::string& charset, const std::string& bytes) {
        return extract_message("Subject: c\nMIME-Version: 1.0\nContent-Type: text/plain; charset=" + charset +
                               "\nContent-Transfer-Encoding: 8bit\n\n" + bytes + "\n")
            .body;
    };
    EXPECT_EQ(body_in("ISO-8859-1", "Zo\xEB \xDCn\xEF"), "Zoë Ünï");
    EXPECT_EQ(body_in("windows-1252", "\x93quoted\x94 \x80 10"), "\xE2\x80\x9Cquoted\xE2\x80\x9D \xE2\x82\xAC 10");
    EXPECT_EQ(body_in("iso-8859-2", "\xB1\xE6"), "ąć");
    EXPECT_EQ(body_in("koi8-r", "\xF0\xD2\xC9\xD7\xC5\xD4"), "Привет");
    EXPECT_EQ(body_in("\"UTF-8\"", "Zoë"), "Zoë");
    // Mislabeled: UTF-8 bytes labelled Latin-1 or ASCII stay UTF-8; Latin-1 bytes labelled
    // UTF-8 are read as windows-1252; an unknown charset falls back the same way.
    EXPECT_EQ(body_in("iso-8859-1", "Zoë"), "Zoë");
    EXPECT_EQ(body_in("us-ascii", "Zoë"), "Zoë");
    EXPECT_EQ(body_in("utf-8", "Zo\xEB and Zoë"), "Zoë and Zoë");
    EXPECT_EQ(body_in("x-no-such-charset", "Zo\xEB"), "Zoë");
    EXPECT_EQ(body_in("x-no-such-charset", "Zoë"), "Zoë");
    // No charset at all.
    EXPECT_EQ(extract_message("Subject: c\n\nna\xEFve\n").body, "naïve");
    EXPECT_EQ(extract_message("Subject: c\n\nnaïve\n").body, "naïve");
}

TEST(SearchExtract, EncodedWordsInHeaders) {
    // "Zoë Ünïcødé" in UTF-8 base64 and ISO-8859-1 Q encodings.
    const std::string raw =
        "From: =?UTF-8?B?Wm/DqyDDnG7Dr2PDuGTDqQ==?= <zoe@corp.example>\n"
        "To: =?ISO-8859-1?Q?Zo=EB_=DCn=EFc=F8d=E9?= <zoe2@corp.example>\n"
        "Subject: =?UTF-8?B?Wm/DqyDDnG7Dr2PDuGTDqQ==?= and =?iso-8859-1?q?caf=E9?=\n\nx\n";
    const Content content = extract_message(raw);
    EXPECT_EQ(content.subject, "Zoë Ünïcødé and café");
    ASSERT_EQ(content.from.size(), 1u);
    EXPECT_EQ(content.from[0].name, "Zoë Ünïcødé");
    ASSERT_EQ(content.to.size(), 1u);
    EXPECT_EQ(content.to[0].name, "Zoë Ünïcødé");
    // Raw 8-bit Latin-1 in a header still comes out as valid UTF-8.
    const Content raw8 = extract_message("Subject: caf\xE9\n\nx\n");
    EXPECT_TRUE(g_utf8_validate(raw8.subject.data(), static_cast<gssize>(raw8.subject.size()), nullptr));
    EXPECT_TRUE(raw8.subject.find("caf") == 0);
}

// GMime joins adjacent encoded words of one charset before decoding them, so padding at the end
// of the first word lost the second one (two ext4-dev subjects, 003002 and 003166, lost
// ": fast-commit commit path changes"; 008939 and 009065 lost a "复"). Each word is decoded on
// its own; the bytes of adjacent words in one charset are joined.
TEST(SearchExtract, EncodedWordsSplitAcrossWords) {
    auto subject = [](const std::string& value) { return extract_message("Subject: " + value + "\n\nx\n").subject; };
    // B, the first word padded (ext4-dev 003002, folded as it was).
    EXPECT_EQ(subject("=?UTF-8?B?UmU6IOetlOWkjTogW0V4dGVybmFsIE1haWxdUmU6IFtQQVRDSCB2MyAwOS8xM10gZXh0NA==?=\n"
                      " =?UTF-8?B?OiBmYXN0LWNvbW1pdCBjb21taXQgcGF0aCBjaGFuZ2Vz?="),
              "Re: 答复: [External Mail]Re: [PATCH v3 09/13] ext4: fast-commit commit path changes");
    // B padded, B, then a Q word in the same charset, then plain text (ext4-dev 008939).
    EXPECT_EQ(subject("Re: =?utf-8?B?562U5aSNOiDnrZTlpI06IOetlA==?= =?utf-8?B?5aSN?= =?utf-8?Q?=3A?= [PATCH] jbd2"),
              "Re: 答复: 答复: 答复: [PATCH] jbd2");
    // A multibyte character split across two words: unpadded, and padded.
    EXPECT_EQ(subject("=?UTF-8?B?Wm/D?= =?UTF-8?B?qyBEdXBvbnQ=?="), "Zoë Dupont");
    EXPECT_EQ(subject("=?UTF-8?B?WsM=?=\r\n\t=?UTF-8?B?qw==?="), "Zë");
    EXPECT_EQ(subject("=?UTF-8?Q?Zo=C3?= =?UTF-8?Q?=AB?="), "Zoë");
    // Q words: "_" is a space; white space between encoded words is not text.
    EXPECT_EQ(subject("=?UTF-8?Q?caf=C3=A9?= =?UTF-8?Q?_cr=C3=A8me?="), "café crème");
    EXPECT_EQ(subject("=?utf-8?q?caf=C3=A9?=   =?utf-8?q?au_lait?="), "caféau lait");
    // Mixed charsets, ISO-8859-1 in B and Q, KOI8-R, an RFC 2231 language suffix.
    EXPECT_EQ(subject("=?ISO-8859-1?Q?caf=E9?= =?UTF-8?B?IGNyw6htZQ==?="), "café crème");
    EXPECT_EQ(subject("=?ISO-8859-1?B?WvZsbGU=?="), "Zölle");
    EXPECT_EQ(subject("=?koi8-r?B?8NLJ18XU?= =?UTF-8*en?Q?_world?="), "Привет world");
    // Next to plain text the white space stays; a word touching text is decoded too.
    EXPECT_EQ(subject("Re: =?UTF-8?Q?caf=C3=A9?= au lait"), "Re: café au lait");
    EXPECT_EQ(subject("=?UTF-8?Q?a?= b =?UTF-8?Q?c?="), "a b c");
    EXPECT_EQ(subject("Re:=?UTF-8?Q?caf=C3=A9?=!"), "Re:café!");
    // Not encoded words: left as written.
    EXPECT_EQ(subject("=?UTF-8?X?abc?= and =?UTF-8?Q?open"), "=?UTF-8?X?abc?= and =?UTF-8?Q?open");
    EXPECT_EQ(subject("a =? b ?= c"), "a =? b ?= c");
    // Bad bytes in a word still give valid UTF-8; an unknown charset falls back to windows-1252.
    EXPECT_EQ(subject("=?x-unknown-charset?Q?Zo=EB?="), "Zoë");
    EXPECT_EQ(subject("=?UTF-8?Q?Zo=EB?="), "Zoë");
    // The first Subject: counts.
    EXPECT_EQ(extract_message("Subject: first\nSubject: second\n\nx\n").subject, "first");
}

TEST(SearchExtract, EncodedWordsInAddresses) {
    const std::string raw =
        "From: =?UTF-8?B?Wm/DqyBEdXBvbnQt?=\n =?UTF-8?B?TWFydGlu?= <zoe@corp.example>\n"
        "To: =?UTF-8?Q?Doe=2C_John?= <jd@corp.example>, =?utf-8?Q?\"Skorstad,J=C3=B8rn\"?= <js@corp.example>,\n"
        " \"=?UTF-8?B?SsO2cmc=?= =?UTF-8?B?IE3DvGxsZXI=?=\" <jm@corp.example>, plain@corp.example\n"
        "Cc: =?UTF-8?Q?=C3=89quipe?=: a@corp.example, =?UTF-8?Q?Bo_=22B=22?= <b@corp.example>;,\n"
        " =?utf-8?Q?=D0=97=D0=B4?=@localhost.localdomain\n"
        "Bcc: =?ISO-8859-1?Q?J=F6rg?= <jorg@corp.example>\n"
        "Reply-To: =?UTF-8?B?WsM=?= =?UTF-8?B?qw==?= <z@corp.example>\n"
        "Subject: s\n\nx\n";
    const Content content = extract_message(raw);
    ASSERT_EQ(content.from.size(), 1u);
    EXPECT_EQ(content.from[0].name, "Zoë Dupont-Martin");
    EXPECT_EQ(content.from[0].address, "zoe@corp.example");
    // A comma or quotes in a decoded name do not split the list.
    ASSERT_EQ(content.to.size(), 4u);
    EXPECT_EQ(content.to[0].name, "Doe, John");
    EXPECT_EQ(content.to[0].address, "jd@corp.example");
    EXPECT_EQ(content.to[1].name, "Skorstad,Jørn");
    EXPECT_EQ(content.to[1].address, "js@corp.example");
    EXPECT_EQ(content.to[2].name, "Jörg Müller");  // encoded words inside a quoted string
    EXPECT_EQ(content.to[2].address, "jm@corp.example");
    EXPECT_EQ(content.to[3].address, "plain@corp.example");
    // A group's members are flattened; an encoded word in an addr-spec stays as written.
    ASSERT_EQ(content.cc.size(), 3u);
    EXPECT_EQ(content.cc[0].address, "a@corp.example");
    EXPECT_EQ(content.cc[1].name, "Bo \"B\"");
    EXPECT_EQ(content.cc[1].address, "b@corp.example");
    EXPECT_EQ(content.cc[2].address, "=?utf-8?Q?=D0=97=D0=B4?=@localhost.localdomain");
    ASSERT_EQ(content.bcc.size(), 1u);
    EXPECT_EQ(content.bcc[0].name, "Jörg");
    ASSERT_EQ(content.reply_to.size(), 1u);
    EXPECT_EQ(content.reply_to[0].name, "Zë");
    // Every From: header counts, as before.
    const Content two = extract_message("From: a@x.example\nFrom: =?UTF-8?Q?B=C3=A9?= <b@x.example>\n\nx\n");
    ASSERT_EQ(two.from.size(), 2u);
    EXPECT_EQ(two.from[1].name, "Bé");
}

TEST(SearchExtract, EncodedWordsInFileNamesAndNestedMessages) {
    const std::string inner = "Subject: =?UTF-8?B?SW5uZXIgc3ViamVjdCA=?= =?UTF-8?B?d29yZHMgc3BsaXQ=?=\n\ninner body\n";
    const Content content = extract_message(mixed_message(
        "body", {{"Content-Type: application/pdf\nContent-Disposition: attachment;\n"
                  " filename=\"=?UTF-8?B?UXVhcnRlcmx5IHJlcG9ydCBab8Or?= =?UTF-8?B?IChmaW5hbCkucGRm?=\"",
                  "%PDF-1.4 not really"},
                 {"Content-Type: text/plain; name==?UTF-8?B?WsM=?==?UTF-8?B?qy50eHQ=?=", "named by type"},
                 {"Content-Type: message/rfc822", inner}}));
    ASSERT_EQ(content.attachments.size(), 3u);
    EXPECT_EQ(content.attachments[0].filename, "Quarterly report Zoë (final).pdf");
    EXPECT_EQ(content.attachments[1].filename, "Zë.txt");
    EXPECT_TRUE(contains(content.attachments[2].text, "Subject: Inner subject words split\n"))
        << content.attachments[2].text;
}

TEST(SearchExtract, Rfc2231FileName) {
    const std::string raw = mixed_message(
        "body", {{"Content-Type: text/plain; charset=utf-8\n"
                  "Content-Disposition: attachment;\n filename*0*=UTF-8''Zo%C3%AB%20report;\n filename*1=\".txt\"",
                  "attachment words"}});
    const Content content = extract_message(raw);
    ASSERT_EQ(content.attachments.size(), 1u);
    EXPECT_EQ(content.attachments[0].filename, "Zoë report.txt");
    EXPECT_EQ(content.attachments[0].content_type, "text/plain");
    EXPECT_EQ(content.attachments[0].text, "attachment words");
    EXPECT_EQ(content.body, "body");
    // RFC 2047 in a name parameter (what many mailers do) is decoded too.
    const Content encoded = extract_message(mixed_message(
        "body", {{"Content-Type: application/octet-stream; name=\"=?UTF-8?B?WsO2bGxlLnR4dA==?=\"", "x"}}));
    ASSERT_EQ(encoded.attachments.size(), 1u);
    EXPECT_EQ(encoded.attachments[0].filename, "Zölle.txt");
}

// ---- MIME structure ----

TEST(SearchExtract, AlternativeKeepsBothParts) {
    const std::string raw =
        "Subject: alt\nMIME-Version: 1.0\nContent-Type: multipart/alternative; boundary=b1\n\n"
        "--b1\nContent-Type: text/plain; charset=us-ascii\n\nplain version words\n"
        "--b1\nContent-Type: text/html; charset=utf-8\nContent-Transfer-Encoding: quoted-printable\n\n"
        "<html><head><title>Title words</title><style>p { color: red; }</style>"
        "<script>var hidden = 1;</script></head>\n<body><p>html <b>version</b> words</p>"
        "<div>second&nbsp;block</div><ul><li>one</li><li>two</li></ul></body></html>\n"
        "--b1--\n";
    const Content content = extract_message(raw);
    EXPECT_TRUE(contains(content.body, "plain version words"));
    EXPECT_TRUE(contains(content.body, "html version words"));
    EXPECT_TRUE(contains(content.body, "second block"));
    EXPECT_TRUE(contains(content.body, "one\ntwo"));
    EXPECT_FALSE(contains(content.body, "<"));
    EXPECT_FALSE(contains(content.body, "hidden"));
    EXPECT_FALSE(contains(content.body, "color"));
    EXPECT_FALSE(contains(content.body, "Title words"));
    EXPECT_TRUE(content.attachments.empty());
    EXPECT_EQ(content.body.find("plain version words"), 0u);
}

TEST(SearchExtract, HtmlToText) {
    EXPECT_EQ(html_to_text("<p>Fish &amp; chips &lt;3 &eacute;t&eacute; &#8364;5 &#x41;</p>"), "Fish & chips <3 été €5 A");
    EXPECT_EQ(html_to_text("<p>one</p><p>two</p>line<br>break"), "one\n\ntwo\n\nline\nbreak");
    EXPECT_EQ(html_to_text("a   b\n\n c<span>d</span>"), "a b cd");
    EXPECT_EQ(html_to_text("<table><tr><td>x</td><td>y</td></tr></table>"), "x y");
    EXPECT_EQ(html_to_text("<p>x</p><pre>  keep\n  spaces</pre>"), "x\n\n  keep\n  spaces");
    EXPECT_EQ(html_to_text("<script>alert(1)</script><style>.a{}</style>visible"), "visible");
    EXPECT_EQ(html_to_text("<p>unclosed <b>tags <i>everywhere"), "unclosed tags everywhere");
    EXPECT_EQ(html_to_text(""), "");
    // A meta charset cannot reinterpret text that is already UTF-8.
    EXPECT_EQ(html_to_text("<meta charset=\"iso-8859-1\"><p>Zoë</p>"), "Zoë");
    // HTML parts in a legacy charset.
    const std::string raw =
        "Subject: h\nMIME-Version: 1.0\nContent-Type: text/html; charset=iso-8859-1\n\n<p>Zo\xEB &ndash; ok</p>\n";
    EXPECT_EQ(extract_message(raw).body, "Zoë – ok");
    // No MIME charset, not UTF-8: the charset the HTML declares is used.
    const std::string declared =
        "Subject: h\nMIME-Version: 1.0\nContent-Type: text/html\n\n"
        "<meta http-equiv=\"Content-Type\" content=\"text/html; charset=koi8-r\"><p>\xF0\xD2\xC9\xD7\xC5\xD4</p>\n";
    EXPECT_EQ(extract_message(declared).body, "Привет");
}

TEST(SearchExtract, AttachmentWithDisposition) {
    const Content content = extract_message(mixed_message(
        "body text", {{"Content-Type: text/plain; charset=iso-8859-1\nContent-Disposition: attachment", "r\xE9sum\xE9"},
                      {"Content-Type: application/x-unknown-thing\nContent-Disposition: attachment; filename=blob.bin"
                       "\nContent-Transfer-Encoding: base64",
                       base64(std::string(1000, '\x01'))}}));
    EXPECT_EQ(content.body, "body text");
    ASSERT_EQ(content.attachments.size(), 2u);
    EXPECT_EQ(content.attachments[0].filename, "");
    EXPECT_EQ(content.attachments[0].text, "résumé");
    EXPECT_EQ(content.attachments[0].size, 6u);
    EXPECT_EQ(content.attachments[0].depth, 0);
    EXPECT_EQ(content.attachments[1].filename, "blob.bin");
    EXPECT_EQ(content.attachments[1].content_type, "application/x-unknown-thing");
    EXPECT_EQ(content.attachments[1].size, 1000u);
    EXPECT_EQ(content.attachments[1].text, "");
    EXPECT_EQ(content.attachments[1].note, "unsupported type");
}

TEST(SearchExtract, InlineImagesAreAttachments) {
    const std::string png("\x89PNG\r\n\x1a\n\0\0\0\rIHDR", 16);
    const std::string raw =
        "Subject: img\nMIME-Version: 1.0\nContent-Type: multipart/related; boundary=r\n\n"
        "--r\nContent-Type: text/html; charset=utf-8\n\n<p>see <img src=\"cid:logo\"></p>\n"
        "--r\nContent-Type: image/png; name=\"logo.png\"\nContent-Disposition: inline\nContent-ID: <logo>\n"
        "Content-Transfer-Encoding: base64\n\n" +
        base64(png) +
        "--r\nContent-Type: image/gif\nContent-Disposition: inline\nContent-Transfer-Encoding: base64\n\n" +
        base64("GIF89a") + "--r--\n";
    const Content content = extract_message(raw);
    EXPECT_EQ(content.body, "see");
    ASSERT_EQ(content.attachments.size(), 2u);  // named or not, an inline image is an attachment
    EXPECT_EQ(content.attachments[0].filename, "logo.png");
    EXPECT_EQ(content.attachments[0].content_type, "image/png");
    EXPECT_EQ(content.attachments[0].size, png.size());
    EXPECT_EQ(content.attachments[0].text, "");
    EXPECT_EQ(content.attachments[1].filename, "");
    EXPECT_EQ(content.attachments[1].content_type, "image/gif");
    EXPECT_EQ(content.attachments[1].size, 6u);
    EXPECT_EQ(content.attachments[1].note, "unsupported type");
}

// Body: every text/* leaf that is not an attachment (any subtype; HTML converted). Attachment:
// Content-Disposition: attachment, a file name, a nested message, or any leaf that is not text.
TEST(SearchExtract, BodyIsEveryTextLeafThatIsNotAnAttachment) {
    const std::string pdf = make_pdf("Inline nameless PDF words");
    const Content content = extract_message(mixed_message(
        "plain words",
        {{"Content-Type: text/x-patch; charset=utf-8\nContent-Disposition: inline", "diff --git a/inline.c b/inline.c"},
         {"Content-Type: text/x-diff", "+patch body words"},
         {"Content-Type: text/csv", "csv,body,words"},
         {"Content-Type: text/calendar; method=REQUEST", "BEGIN:VCALENDAR\nSUMMARY:calendar words"},
         {"Content-Type: text/enriched", "<bold>enriched</bold> words"},
         {"Content-Type: text/html", "<p>html&amp;body</p>"},
         {"Content-Type: text/x-patch\nContent-Disposition: attachment", "attached patch words"},
         {"Content-Type: text/x-log; name=\"run.log\"", "named log words"},
         {"Content-Type: application/pdf\nContent-Transfer-Encoding: base64", base64(pdf)},
         {"Content-Type: application/octet-stream\nContent-Transfer-Encoding: base64", base64("\x01\x02\x03")},
         {"Content-Type: message/delivery-status", "Reporting-MTA: dns; mx.example\n\nAction: failed"},
         {"Content-Type: application/pgp-signature", "-----BEGIN PGP SIGNATURE-----\n-----END PGP SIGNATURE-----"}}));
    EXPECT_EQ(content.body,
              "plain words\n\ndiff --git a/inline.c b/inline.c\n\n+patch body words\n\ncsv,body,words\n\n"
              "BEGIN:VCALENDAR\nSUMMARY:calendar words\n\n<bold>enriched</bold> words\n\nhtml&body");
    ASSERT_EQ(content.attachments.size(), 5u);
    EXPECT_EQ(content.attachments[0].content_type, "text/x-patch");
    EXPECT_EQ(content.attachments[0].text, "attached patch words");
    EXPECT_EQ(content.attachments[1].filename, "run.log");
    EXPECT_EQ(content.attachments[1].text, "named log words");
    EXPECT_EQ(content.attachments[2].content_type, "application/pdf");
    EXPECT_EQ(content.attachments[2].filename, "");
    EXPECT_TRUE(contains(content.attachments[2].text, "Inline nameless PDF words")) << content.attachments[2].text;
    EXPECT_EQ(content.attachments[3].content_type, "application/octet-stream");
    EXPECT_EQ(content.attachments[3].size, 3u);
    EXPECT_EQ(content.attachments[4].content_type, "message/delivery-status");
    EXPECT_TRUE(contains(content.attachments[4].text, "Action: failed"));
    EXPECT_FALSE(content.signed_message);

    // Inside a nested message the same rule decides what is its body.
    const std::string inner =
        "Subject: inner\nMIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=in\n\n"
        "--in\nContent-Type: text/x-patch\n\ninner patch words\n"
        "--in\nContent-Type: image/png\nContent-Transfer-Encoding: base64\n\n" + base64("\x89PNG") + "--in--\n";
    const Content nested = extract_message(mixed_message("outer", {{"Content-Type: message/rfc822", inner}}));
    EXPECT_EQ(nested.body, "outer");
    ASSERT_EQ(nested.attachments.size(), 2u);
    EXPECT_TRUE(contains(nested.attachments[0].text, "inner patch words"));
    EXPECT_EQ(nested.attachments[1].content_type, "image/png");
    EXPECT_EQ(nested.attachments[1].depth, 1);
}

TEST(SearchExtract, SignatureIsNotAttachment) {
    const std::string raw =
        "Subject: signed\nMIME-Version: 1.0\n"
        "Content-Type: multipart/signed; micalg=pgp-sha256; protocol=\"application/pgp-signature\"; boundary=s\n\n"
        "--s\nContent-Type: text/plain; charset=utf-8\n\nsigned words\n"
        "--s\nContent-Type: application/pgp-signature; name=\"signature.asc\"\n"
        "Content-Disposition: attachment; filename=\"signature.asc\"\n\n"
        "-----BEGIN PGP SIGNATURE-----\n\niQEzBAEBCAAdFiEE\n-----END PGP SIGNATURE-----\n--s--\n";
    const Content content = extract_message(raw);
    EXPECT_TRUE(content.signed_message);
    EXPECT_FALSE(content.encrypted_message);
    EXPECT_EQ(content.body, "signed words");
    EXPECT_TRUE(content.attachments.empty());

    const std::string smime =
        "Subject: s\nMIME-Version: 1.0\n"
        "Content-Type: multipart/signed; protocol=\"application/pkcs7-signature\"; micalg=sha-256; boundary=s\n\n"
        "--s\nContent-Type: text/plain\n\nsmime words\n"
        "--s\nContent-Type: application/pkcs7-signature; name=smime.p7s\nContent-Transfer-Encoding: base64\n"
        "Content-Disposition: attachment; filename=smime.p7s\n\nMIIB\n--s--\n";
    const Content smime_content = extract_message(smime);
    EXPECT_TRUE(smime_content.signed_message);
    EXPECT_EQ(smime_content.body, "smime words");
    EXPECT_TRUE(smime_content.attachments.empty());
}

TEST(SearchExtract, EncryptedMessages) {
    const std::string pgp =
        "Subject: e\nMIME-Version: 1.0\n"
        "Content-Type: multipart/encrypted; protocol=\"application/pgp-encrypted\"; boundary=e\n\n"
        "--e\nContent-Type: application/pgp-encrypted\n\nVersion: 1\n"
        "--e\nContent-Type: application/octet-stream; name=\"encrypted.asc\"\n\n"
        "-----BEGIN PGP MESSAGE-----\n\nhQEMA\n-----END PGP MESSAGE-----\n--e--\n";
    const Content content = extract_message(pgp);
    EXPECT_TRUE(content.encrypted_message);
    EXPECT_EQ(content.body, "");
    EXPECT_TRUE(content.attachments.empty());

    const std::string smime =
        "Subject: e\nMIME-Version: 1.0\n"
        "Content-Type: application/pkcs7-mime; smime-type=enveloped-data; name=smime.p7m\n"
        "Content-Transfer-Encoding: base64\nContent-Disposition: attachment; filename=smime.p7m\n\nMIAGCSqGSIb3DQEHA6CAMIACAQAx\n";
    const Content smime_content = extract_message(smime);
    EXPECT_TRUE(smime_content.encrypted_message);
    EXPECT_FALSE(smime_content.signed_message);
    EXPECT_TRUE(smime_content.attachments.empty());

    const std::string opaque =
        "Subject: e\nMIME-Version: 1.0\nContent-Type: application/pkcs7-mime; smime-type=signed-data; name=smime.p7m\n"
        "Content-Transfer-Encoding: base64\n\nMIAGCSqGSIb3DQEHAqCAMIACAQEx\n";
    EXPECT_TRUE(extract_message(opaque).signed_message);

    // Inline PGP in a text body sets the flags too.
    const Content inline_pgp =
        extract_message("Subject: i\n\n-----BEGIN PGP MESSAGE-----\n\nhQEMA\n-----END PGP MESSAGE-----\n");
    EXPECT_TRUE(inline_pgp.encrypted_message);
}

TEST(SearchExtract, NestedMessage) {
    const std::string inner =
        "From: Carol <carol@inner.example>\nTo: Dan <dan@inner.example>\nSubject: Inner subject words\n"
        "Date: Mon, 04 Mar 2024 08:00:00 +0000\nMIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=in\n\n"
        "--in\nContent-Type: text/plain\n\nInner body words\n"
        "--in\nContent-Type: text/plain; name=\"inner.txt\"\nContent-Disposition: attachment; filename=\"inner.txt\"\n\n"
        "Inner attachment words\n--in--\n";
    const std::string raw = mixed_message(
        "outer body",
        {{"Content-Type: message/rfc822\nContent-Disposition: attachment; filename=\"forwarded.eml\"", inner},
         {"Content-Type: text/plain; name=after.txt", "after words"}});
    const Content content = extract_message(raw);
    EXPECT_EQ(content.body, "outer body");
    ASSERT_EQ(content.attachments.size(), 3u);
    const Attachment& message = content.attachments[0];
    EXPECT_EQ(message.content_type, "message/rfc822");
    EXPECT_EQ(message.filename, "forwarded.eml");
    EXPECT_EQ(message.depth, 0);
    EXPECT_GT(message.size, inner.size() - 10);
    EXPECT_TRUE(contains(message.text, "Subject: Inner subject words"));
    EXPECT_TRUE(contains(message.text, "From: Carol <carol@inner.example>"));
    EXPECT_TRUE(contains(message.text, "To: Dan <dan@inner.example>"));
    EXPECT_TRUE(contains(message.text, "Date: 2024-03-04 08:00:00 UTC"));
    EXPECT_TRUE(contains(message.text, "Inner body words"));
    EXPECT_TRUE(contains(message.text, "Inner attachment words"));
    EXPECT_EQ(content.attachments[1].filename, "inner.txt");
    EXPECT_EQ(content.attachments[1].depth, 1);
    EXPECT_EQ(content.attachments[1].text, "Inner attachment words");
    EXPECT_EQ(content.attachments[2].filename, "after.txt");
    EXPECT_EQ(content.attachments[2].depth, 0);
    EXPECT_FALSE(contains(content.body, "Inner"));
}

TEST(SearchExtract, DepthLimit) {
    // Multiparts nested 30 deep: the text at the bottom is beyond the limit.
    std::string raw = "Subject: deep\nMIME-Version: 1.0\n";
    for (int level = 0; level < 30; ++level) {
        raw += "Content-Type: multipart/mixed; boundary=b" + std::to_string(level) + "\n\n--b" + std::to_string(level) + "\n";
    }
    raw += "Content-Type: text/plain\n\ndeep words\n";
    for (int level = 29; level >= 0; --level) raw += "--b" + std::to_string(level) + "--\n";
    const Content content = extract_message(raw);
    EXPECT_EQ(content.body, "");
    EXPECT_TRUE(content.truncated);
    ExtractLimits generous;
    generous.max_depth = 40;
    EXPECT_EQ(extract_message(raw, generous).body, "deep words");

    // Messages nested in messages: listed down to the limit, no deeper.
    std::string nested = "Subject: level 12\n\nbottom words\n";
    for (int level = 11; level >= 0; --level) {
        nested = "Subject: level " + std::to_string(level) + "\nMIME-Version: 1.0\nContent-Type: message/rfc822\n\n" + nested;
    }
    // The top part is at depth 0; with max_depth 4, parts down to depth 4 are read.
    ExtractLimits limits;
    limits.max_depth = 4;
    const Content bounded = extract_message(nested, limits);
    EXPECT_TRUE(bounded.truncated);
    ASSERT_EQ(bounded.attachments.size(), 5u);
    EXPECT_EQ(bounded.attachments[4].depth, 4);
    EXPECT_TRUE(contains(bounded.attachments[0].text, "Subject: level 1\n"));
    EXPECT_TRUE(contains(bounded.attachments[0].text, "Subject: level 2\n"));  // its nested message's text
    EXPECT_FALSE(contains(bounded.attachments[0].text, "bottom words"));
}

TEST(SearchExtract, TruncationFlag) {
    ExtractLimits limits;
    limits.max_text_bytes = 100;
    limits.max_attachment_text_bytes = 50;
    std::string long_body;
    for (int i = 0; i < 100; ++i) long_body += "é word ";
    const Content content = extract_message(mixed_message(long_body, {{"Content-Type: text/plain; name=a.txt", long_body}}), limits);
    EXPECT_TRUE(content.truncated);
    EXPECT_LE(content.body.size(), 100u);
    EXPECT_TRUE(g_utf8_validate(content.body.data(), static_cast<gssize>(content.body.size()), nullptr));
    ASSERT_EQ(content.attachments.size(), 1u);
    EXPECT_LE(content.attachments[0].text.size(), 50u);
    EXPECT_GT(content.attachments[0].text.size(), 40u);
    EXPECT_EQ(content.attachments[0].note, "truncated");
    EXPECT_FALSE(extract_message(mixed_message("short", {})).truncated);

    // HTML is cut too.
    std::string html = "Subject: h\nContent-Type: text/html\n\n";
    for (int i = 0; i < 100; ++i) html += "<p>paragraph words</p>";
    const Content html_content = extract_message(html, limits);
    EXPECT_TRUE(html_content.truncated);
    EXPECT_LE(html_content.body.size(), 100u);

    // Attachments over max_attachment_bytes are listed, not read.
    limits.max_attachment_bytes = 10;
    const Content large = extract_message(mixed_message("b", {{"Content-Type: text/plain; name=big.txt", long_body}}), limits);
    ASSERT_EQ(large.attachments.size(), 1u);
    EXPECT_EQ(large.attachments[0].note, "too large");
    EXPECT_EQ(large.attachments[0].text, "");
    EXPECT_GT(large.attachments[0].size, 10u);
}

// ---- documents ----

TEST(SearchExtract, PdfText) {
    const std::string pdf = make_pdf("Quarterly merger forecast");
    const Content content = extract_message(attached("application/pdf", "report.pdf", pdf));
    ASSERT_EQ(content.attachments.size(), 1u);
    EXPECT_EQ(content.attachments[0].content_type, "application/pdf");
    EXPECT_EQ(content.attachments[0].size, pdf.size());
    EXPECT_TRUE(contains(content.attachments[0].text, "Quarterly merger forecast")) << content.attachments[0].text;
    EXPECT_EQ(content.attachments[0].note, "");
    // Generic type, no useful name: the magic bytes decide.
    std::string note;
    EXPECT_TRUE(contains(attachment_text(pdf, "application/octet-stream", "", {}, &note), "merger"));
}

TEST(SearchExtract, EncryptedAndCorruptPdf) {
    std::string note;
    EXPECT_EQ(attachment_text(make_locked_pdf(), "application/pdf", "locked.pdf", {}, &note), "");
    EXPECT_EQ(note, "encrypted PDF");
    EXPECT_EQ(attachment_text("%PDF-1.4\nthis is not a pdf at all\n", "application/pdf", "x.pdf", {}, &note), "");
    EXPECT_FALSE(note.empty());
    EXPECT_EQ(attachment_text("", "application/pdf", "x.pdf", {}, &note), "");
    EXPECT_FALSE(note.empty());
    std::string truncated = make_pdf("cut short");
    truncated.resize(truncated.size() / 2);
    attachment_text(truncated, "application/pdf", "x.pdf", {}, &note);  // must not crash; text optional
    const Content content = extract_message(attached("application/pdf", "broken.pdf", "garbage bytes"));
    ASSERT_EQ(content.attachments.size(), 1u);
    EXPECT_EQ(content.attachments[0].text, "");
    EXPECT_FALSE(content.attachments[0].note.empty());
}

TEST(SearchExtract, DocxText) {
    const std::string docx = make_docx(docx_paragraphs());
    ASSERT_FALSE(docx.empty());
    const Content content = extract_message(
        attached("application/vnd.openxmlformats-officedocument.wordprocessingml.document", "plan.docx", docx));
    ASSERT_EQ(content.attachments.size(), 1u);
    EXPECT_EQ(content.attachments[0].text, "Quarterly merger \tforecast & plan\nSecond paragraph");
    EXPECT_EQ(content.attachments[0].note, "");
}

TEST(SearchExtract, XlsxText) {
    std::string note;
    const std::string text =
        attachment_text(make_xlsx(), "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet", "t.xlsx", {}, &note);
    EXPECT_EQ(text, "Revenue\nCost centre\n1234.5\nInline note\t99\n2\ntenth sheet") << note;
}

TEST(SearchExtract, PptxText) {
    std::string note;
    const std::string text = attachment_text(
        make_pptx(), "application/vnd.openxmlformats-officedocument.presentationml.presentation", "deck.pptx", {}, &note);
    EXPECT_EQ(text, "Roadmap slide\nbullet\nSecond slide\nbullet") << note;
}

TEST(SearchExtract, OdtText) {
    std::string note;
    const std::string text = attachment_text(make_odt(), "application/vnd.oasis.opendocument.text", "m.odt", {}, &note);
    EXPECT_EQ(text, "Board minutes\nAlpha   beta\tgamma\ndelta span text") << note;
}

TEST(SearchExtract, GenericTypeUsesExtension) {
    const std::string docx = make_docx(docx_paragraphs());
    const Content content = extract_message(attached("application/octet-stream", "plan.DOCX", docx));
    ASSERT_EQ(content.attachments.size(), 1u);
    EXPECT_EQ(content.attachments[0].content_type, "application/octet-stream");
    EXPECT_TRUE(contains(content.attachments[0].text, "Quarterly merger"));
    // No telling name: the zip's entries tell.
    std::string note;
    EXPECT_TRUE(contains(attachment_text(docx, "application/zip", "download", {}, &note), "Second paragraph"));
    EXPECT_TRUE(contains(attachment_text(make_odt(), "application/octet-stream", "", {}, &note), "Board minutes"));
    // Text by extension, charset from the content type's parameters.
    EXPECT_EQ(attachment_text("int main() {}\n", "application/octet-stream", "main.c", {}, &note), "int main() {}\n");
    EXPECT_EQ(attachment_text("caf\xE9", "text/plain; charset=iso-8859-1", "", {}, &note), "café");
    EXPECT_EQ(attachment_text("<b>bold</b> text", "application/octet-stream", "page.htm", {}, &note), "bold text");
    EXPECT_EQ(attachment_text("\x89PNG", "image/png", "x.png", {}, &note), "");
    EXPECT_EQ(note, "unsupported type");
    // Binary bytes under a text name are not text.
    EXPECT_EQ(attachment_text(std::string("MZ\x90\0\x03\0\0\0", 8), "application/octet-stream", "trace.log", {}, &note), "");
    EXPECT_EQ(note, "binary data");
    // UTF-16 with a byte order mark and no charset.
    EXPECT_EQ(attachment_text(std::string("\xFF\xFEh\0i\0", 6), "text/plain", "", {}, &note), "hi");
    // A message attached as a file: its text as for a nested message.
    const std::string eml = "From: Carol <carol@inner.example>\nSubject: Forwarded words\n\nEml body words\n";
    const std::string eml_text = attachment_text(eml, "application/octet-stream", "fwd.eml", {}, &note);
    EXPECT_TRUE(contains(eml_text, "Subject: Forwarded words")) << eml_text;
    EXPECT_TRUE(contains(eml_text, "Eml body words")) << eml_text;
}

TEST(SearchExtract, CorruptZip) {
    std::string note;
    EXPECT_EQ(attachment_text("PK\x03\x04 not really a zip", "application/vnd.oasis.opendocument.text", "x.odt", {}, &note), "");
    EXPECT_EQ(note, "corrupt zip");
    std::string docx = make_docx(docx_paragraphs());
    docx.resize(docx.size() - 30);  // the central directory is gone
    EXPECT_EQ(attachment_text(docx, "application/octet-stream", "x.docx", {}, &note), "");
    EXPECT_FALSE(note.empty());
    // A valid zip without the document part.
    EXPECT_EQ(attachment_text(make_zip({{"readme.txt", "hi"}}), "application/octet-stream", "x.docx", {}, &note), "");
    EXPECT_FALSE(note.empty());
    // Malformed XML inside: whatever parses, no crash.
    const std::string broken = make_docx("<w:p><w:r><w:t>kept words</w:t></w:r></w:p><w:p><w:r><w:t>cut <");
    EXPECT_TRUE(contains(attachment_text(broken, "application/octet-stream", "x.docx", {}, &note), "kept words"));
    const Content content = extract_message(attached("application/octet-stream", "bad.xlsx", "PK\x03\x04garbage"));
    ASSERT_EQ(content.attachments.size(), 1u);
    EXPECT_EQ(content.attachments[0].text, "");
    EXPECT_EQ(content.attachments[0].note, "corrupt zip");
}

TEST(SearchExtract, ZipBombsAreBounded) {
    // 16 MB of document XML that deflates to a few dozen KB: only the budget is read.
    std::string huge;
    const std::string paragraph = "<w:p><w:r><w:t>bomb words here</w:t></w:r></w:p>";
    huge.reserve(16u << 20);
    while (huge.size() < (16u << 20)) huge += paragraph;
    const std::string bomb = make_docx(huge);
    huge.clear();
    huge.shrink_to_fit();
    ASSERT_LT(bomb.size(), 1u << 20);
    ExtractLimits limits;
    limits.max_zip_uncompressed_bytes = 1u << 20;
    limits.max_attachment_text_bytes = 8u << 20;
    std::string note;
    const auto started = std::chrono::steady_clock::now();
    const std::string text = attachment_text(bomb, "application/octet-stream", "bomb.docx", limits, &note);
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
    EXPECT_GT(text.size(), 100000u);
    EXPECT_LT(text.size(), 1u << 20);
    EXPECT_EQ(note, "zip limit reached");
    EXPECT_LT(seconds, 2.0);
    const Content content = extract_message(attached("application/octet-stream", "bomb.docx", bomb), limits);
    ASSERT_EQ(content.attachments.size(), 1u);
    EXPECT_TRUE(content.truncated);

    // An entry that declares a far larger size than it holds: the reads are still bounded.
    std::string liar = make_docx(docx_paragraphs());
    for (std::size_t at = liar.find("PK\x01\x02"); at != std::string::npos; at = liar.find("PK\x01\x02", at + 4)) {
        liar.replace(at + 24, 4, "\xF0\xFF\xFF\x7F");  // uncompressed size in the central directory
    }
    for (std::size_t at = liar.find("PK\x03\x04"); at != std::string::npos; at = liar.find("PK\x03\x04", at + 4)) {
        liar.replace(at + 22, 4, "\xF0\xFF\xFF\x7F");  // and in the local header
    }
    attachment_text(liar, "application/octet-stream", "liar.docx", limits, &note);  // bounded, no crash

    // Too many entries: refused before libzip builds its table.
    std::vector<std::pair<std::string, std::string>> entries;
    for (int i = 0; i < 300; ++i) entries.emplace_back("f" + std::to_string(i), "");
    entries.emplace_back("word/document.xml", "<w:document/>");
    limits.max_zip_entries = 100;
    EXPECT_EQ(attachment_text(make_zip(entries), "application/octet-stream", "many.docx", limits, &note), "");
    EXPECT_EQ(note, "too many zip entries");
}

TEST(SearchExtract, NoEntityExpansion) {
    // Billion laughs in a document part: entities are not expanded, the parse stays small.
    std::string xml = "<?xml version=\"1.0\"?>\n<!DOCTYPE w [\n<!ENTITY a \"aaaaaaaaaa\">\n";
    for (int i = 1; i < 10; ++i) {
        const std::string name(1, static_cast<char>('a' + i));
        const std::string previous = "&" + std::string(1, static_cast<char>('a' + i - 1)) + ";";
        xml += "<!ENTITY " + name + " \"" + previous + previous + previous + previous + previous + previous + previous +
               previous + previous + previous + "\">\n";
    }
    xml += "]>\n<w:document xmlns:w=\"w\"><w:body><w:p><w:r><w:t>safe &j; words</w:t></w:r></w:p></w:body></w:document>";
    const std::string docx = make_zip({{"word/document.xml", xml}});
    std::string note;
    const std::string text = attachment_text(docx, "application/octet-stream", "laughs.docx", {}, &note);
    EXPECT_LT(text.size(), 1000u);
    EXPECT_TRUE(contains(text, "safe")) << text;
}

TEST(SearchExtract, NeverThrowsOnGarbage) {
    std::string garbage;
    std::mt19937 random(7);
    for (int round = 0; round < 200; ++round) {
        garbage.clear();
        const int length = static_cast<int>(random() % 4000);
        for (int i = 0; i < length; ++i) garbage += static_cast<char>(random() % 256);
        if (round % 3 == 0) garbage = "Content-Type: multipart/mixed; boundary=x\n\n--x\n" + garbage;
        EXPECT_NO_THROW(extract_message(garbage));
        std::string note;
        EXPECT_NO_THROW(attachment_text(garbage, "application/pdf", "", {}, &note));
        EXPECT_NO_THROW(attachment_text("PK\x03\x04" + garbage, "application/zip", "a.docx", {}, &note));
        EXPECT_NO_THROW(html_to_text(garbage));
    }
}

TEST(SearchExtract, ThreadSafe) {
    const std::string docx = make_docx(docx_paragraphs());
    const std::string pdf = make_pdf("threaded words");
    const std::string raw = mixed_message(
        "<p>x</p>",
        {{"Content-Type: application/octet-stream; name=a.docx\nContent-Transfer-Encoding: base64", base64(docx)},
         {"Content-Type: application/pdf; name=a.pdf\nContent-Transfer-Encoding: base64", base64(pdf)},
         {"Content-Type: text/html; name=a.html", "<p>html&amp;words</p>"}});
    const Content expected = extract_message(raw);
    ASSERT_EQ(expected.attachments.size(), 3u);
    std::vector<int> mismatches(4, 0);
    std::vector<std::thread> threads;
    for (int t = 0; t < 4; ++t) {
        threads.emplace_back([&, t] {
            for (int i = 0; i < 50; ++i) {
                const Content content = extract_message(raw);
                if (content.body != expected.body || content.attachments.size() != 3 ||
                    content.attachments[0].text != expected.attachments[0].text ||
                    content.attachments[1].text != expected.attachments[1].text ||
                    content.attachments[2].text != expected.attachments[2].text) {
                    ++mismatches[t];
                }
            }
        });
    }
    for (std::thread& thread : threads) thread.join();
    for (int t = 0; t < 4; ++t) EXPECT_EQ(mismatches[t], 0);
    EXPECT_EQ(expected.attachments[2].text, "html&words");
}

// ---- corpus ----

std::filesystem::path find_corpus_dir() {
    const std::filesystem::path repo = std::filesystem::path(__FILE__).parent_path().parent_path().parent_path();
    for (const std::filesystem::path& candidate :
         {repo.parent_path() / "shared" / "corpus", std::filesystem::path("/work/shared/corpus")}) {
        std::error_code error;
        if (std::filesystem::exists(candidate / "ext4-dev.tar.zst", error)) return candidate;
    }
    return {};
}

std::string read_file(const std::filesystem::path& path) {
    std::ifstream in(path, std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

TEST(SearchExtract, CorpusSample) {
    const std::filesystem::path corpus = find_corpus_dir();
    if (corpus.empty()) GTEST_SKIP() << "corpus folder ../shared/corpus (ext4-dev.tar.zst) not found; skipping";
    test_support::TempDir unpacked("pv-extract");
    const std::string command =
        "tar --zstd -xf '" + (corpus / "ext4-dev.tar.zst").string() + "' -C '" + unpacked.path().string() + "'";
    ASSERT_EQ(std::system(command.c_str()), 0) << command;
    std::vector<std::string> messages;
    for (const auto& entry : std::filesystem::recursive_directory_iterator(unpacked.path())) {
        if (entry.is_regular_file()) messages.push_back(read_file(entry.path()));
    }
    ASSERT_GE(messages.size(), 9000u);
    std::size_t bytes = 0, with_body = 0, with_subject = 0, with_date = 0, with_from = 0, signed_count = 0;
    const auto started = std::chrono::steady_clock::now();
    for (const std::string& message : messages) {
        const Content content = extract_message(message);
        bytes += message.size();
        with_body += !content.body.empty();
        with_subject += !content.subject.empty();
        with_date += content.date != 0;
        with_from += !content.from.empty();
        signed_count += content.signed_message;
        ASSERT_TRUE(g_utf8_validate(content.body.data(), static_cast<gssize>(content.body.size()), nullptr));
        ASSERT_TRUE(g_utf8_validate(content.subject.data(), static_cast<gssize>(content.subject.size()), nullptr));
    }
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
    const double count = static_cast<double>(messages.size());
    EXPECT_GT(with_body / count, 0.99);
    EXPECT_GT(with_subject / count, 0.99);
    EXPECT_GT(with_date / count, 0.99);
    EXPECT_GT(with_from / count, 0.99);
    EXPECT_GT(signed_count, 0u);
    std::printf("[ corpus   ] ext4-dev: %zu messages, %.1f MB, %.3f s, %.0f messages/s\n", messages.size(), bytes / 1e6,
                seconds, count / seconds);
}

}  // namespace
}  // namespace postvault::search
