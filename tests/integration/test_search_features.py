"""Search features on crafted mail, through the real binary: threads that arrive out of order,
exact and near duplicates, the search-term report (CSV and JSON), facets, text extracted from
DOCX/XLSX/ODT/PDF attachments and nested messages, BCC recipients found from the envelope,
reindex and compaction through a running server, and a search while it indexes.

(Counts against an independent computation over the real corpus are in test_search.py.)
"""

import csv
import io
import json
import smtplib
import zipfile

from harness import PostvaultTestCase, pdf, wait_until


def eml(message_id, subject, body, sender="Alice Example <alice@corp.example>",
        to="Bob <bob@partner.example>", references=None, date="Mon, 02 Mar 2020 10:00:00 +0000",
        attachments=()):
    """A message as bytes; attachments are (filename, content type, bytes)."""
    headers = [f"From: {sender}", f"To: {to}", f"Subject: {subject}", f"Date: {date}",
               f"Message-ID: <{message_id}>", "MIME-Version: 1.0"]
    if references:
        headers.append(f"In-Reply-To: <{references[-1]}>")
        headers.append("References: " + " ".join(f"<{r}>" for r in references))
    if not attachments:
        headers.append("Content-Type: text/plain; charset=utf-8")
        return ("\r\n".join(headers) + "\r\n\r\n" + body + "\r\n").encode()
    import base64
    boundary = "b0undary"
    parts = [f"--{boundary}\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{body}\r\n"]
    for filename, content_type, data in attachments:
        encoded = base64.encodebytes(data).decode().replace("\n", "\r\n")
        parts.append(f"--{boundary}\r\nContent-Type: {content_type}; name=\"{filename}\"\r\n"
                     f"Content-Disposition: attachment; filename=\"{filename}\"\r\n"
                     f"Content-Transfer-Encoding: base64\r\n\r\n{encoded}\r\n")
    headers.append(f'Content-Type: multipart/mixed; boundary="{boundary}"')
    return ("\r\n".join(headers) + "\r\n\r\n" + "".join(parts) + f"--{boundary}--\r\n").encode()


def zip_document(files):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, text in files.items():
            archive.writestr(name, text)
    return buffer.getvalue()


def docx(text):
    return zip_document({
        "[Content_Types].xml": "<Types xmlns='http://schemas.openxmlformats.org/package/2006/content-types'/>",
        "word/document.xml": ("<w:document xmlns:w='http://schemas.openxmlformats.org/wordprocessingml/2006/main'>"
                              f"<w:body><w:p><w:r><w:t>{text}</w:t></w:r></w:p></w:body></w:document>")})


def xlsx(text):
    return zip_document({
        "[Content_Types].xml": "<Types xmlns='http://schemas.openxmlformats.org/package/2006/content-types'/>",
        "xl/sharedStrings.xml": ("<sst xmlns='http://schemas.openxmlformats.org/spreadsheetml/2006/main'>"
                                 f"<si><t>{text}</t></si></sst>"),
        "xl/worksheets/sheet1.xml": ("<worksheet xmlns='http://schemas.openxmlformats.org/spreadsheetml/2006/main'>"
                                     "<sheetData><row><c t='s'><v>0</v></c></row></sheetData></worksheet>")})


def odt(text):
    return zip_document({
        "mimetype": "application/vnd.oasis.opendocument.text",
        "content.xml": ("<office:document-content xmlns:office='urn:oasis:names:tc:opendocument:xmlns:office:1.0' "
                        "xmlns:text='urn:oasis:names:tc:opendocument:xmlns:text:1.0'><office:body><office:text>"
                        f"<text:p>{text}</text:p></office:text></office:body></office:document-content>")})




LONG_BODY = " ".join(f"word{i} alpha{i % 7} beta{i % 11}" for i in range(120))


class SearchFeaturesTest(PostvaultTestCase):

    def import_messages(self, server, messages):
        folder = self.tmp / "mail"
        folder.mkdir(exist_ok=True)
        for name, data in messages:
            (folder / f"{name}.eml").write_bytes(data)
        server.archive("import", "--format", "eml", folder)
        return folder

    def search(self, server, *args, check=True):
        result = server.cli("search", "--config", str(server.config_path), *args, check=check)
        return result

    def count(self, server, query):
        return int(self.search(server, "--count", query).stdout.split()[-1])

    def results(self, server, query, *args):
        return json.loads(self.search(server, "--json", "--limit", "1000", *args, query).stdout)

    def test_threads_duplicates_attachments_report_and_facets(self):
        server = self.start_postvault(start=False)
        # Arrival order (file order in the import): the reply comes before its parent, and two
        # siblings answer a parent that never arrives.
        messages = [
            ("01-reply", eml("reply@x", "Re: plan", "I agree with the plan", references=["root@x"],
                             sender="Bob <bob@partner.example>", to="Alice <alice@corp.example>")),
            ("02-root", eml("root@x", "plan", "Here is the merger plan for Q3")),
            ("03-deep", eml("deep@x", "Re: Re: plan", "and the timeline", references=["root@x", "reply@x"])),
            ("04-orphan1", eml("orphan1@x", "Re: lost", "first orphan", references=["missing@x"])),
            ("05-orphan2", eml("orphan2@x", "Re: lost", "second orphan", references=["missing@x"])),
            ("06-copy1", eml("copy1@x", "forwarded twice", "the very same words")),
            ("07-copy2", eml("copy2@x", "forwarded twice", "the very same   words")),
            ("08-long", eml("long@x", "long report", LONG_BODY)),
            ("09-longish", eml("longish@x", "long report v2", LONG_BODY.replace("word60 ", "changed60 "))),
            ("10-docs", eml("docs@x", "documents", "see attached", date="Wed, 15 Apr 2020 09:00:00 +0000",
                            sender="Carol <carol@other.example>", to="dave@third.example",
                            attachments=[("memo.docx", "application/vnd.openxmlformats-officedocument."
                                          "wordprocessingml.document", docx("zebracorn acquisition memo")),
                                         ("figures.xlsx", "application/vnd.openxmlformats-officedocument."
                                          "spreadsheetml.sheet", xlsx("quagmire totals")),
                                         ("notes.odt", "application/vnd.oasis.opendocument.text",
                                          odt("platypus minutes")),
                                         ("scan.pdf", "application/pdf", pdf("wombat invoice 4711")),
                                         ("inner.eml", "message/rfc822",
                                          eml("inner@x", "inner subject narwhal", "inner body okapi"))])),
        ]
        self.import_messages(server, messages)

        # Threads: one thread for root, reply and deep whatever the order; the orphans share one.
        hits = {hit["subject"]: hit for hit in self.results(server, "*")["results"]}
        self.assertEqual(hits["plan"]["thread"], hits["Re: plan"]["thread"])
        self.assertEqual(hits["plan"]["thread"], hits["Re: Re: plan"]["thread"])
        orphans = self.results(server, "subject:lost")["results"]
        self.assertEqual(len(orphans), 2)
        self.assertEqual(orphans[0]["thread"], orphans[1]["thread"])
        self.assertNotEqual(orphans[0]["thread"], hits["plan"]["thread"])
        self.assertEqual(self.count(server, f"thread:{hits['plan']['thread']}"), 3)

        # Duplicates: the later copy is flagged and names the first; near-duplicates likewise.
        self.assertEqual(self.count(server, "is:duplicate"), 1)
        copy = self.results(server, "is:duplicate")["results"][0]
        original = self.results(server, "id:copy1@x")["results"][0]
        self.assertEqual(copy["duplicate_of"], original["id"])
        self.assertEqual(copy["duplicate"], original["duplicate"])
        self.assertEqual(self.count(server, f"duplicate:{original['duplicate']}"), 2)
        self.assertEqual(self.count(server, "NOT is:duplicate"), len(messages) - 1)
        near = self.results(server, "is:near-duplicate")["results"]
        self.assertEqual([hit["subject"] for hit in near], ["long report v2"])
        self.assertEqual(near[0]["near_duplicate_of"], self.results(server, "id:long@x")["results"][0]["id"])

        # Attachment text from every supported container, and the nested message.
        for word in ("zebracorn", "quagmire", "platypus", "wombat", "narwhal", "okapi"):
            self.assertEqual(self.count(server, f"attachment:{word}"), 1, word)
            self.assertEqual(self.count(server, word), 1, word)
            self.assertEqual(self.count(server, f"body:{word}"), 0, word)
        self.assertEqual(self.count(server, "has:pdf has:office has:message has:attachment"), 1)
        self.assertEqual(self.count(server, "filename:memo.docx"), 1)
        self.assertEqual(self.count(server, "type:application/pdf"), 1)
        docs = self.results(server, "wombat")["results"][0]
        self.assertIn("[wombat]", docs["snippet"])

        # Facets over every match.
        faceted = self.results(server, "*", "--facets")
        months = dict((f["value"], f["count"]) for f in faceted["facets"]["month"])
        self.assertEqual(months, {"2020-03": len(messages) - 1, "2020-04": 1})
        senders = dict((f["value"], f["count"]) for f in faceted["facets"]["sender_domain"])
        self.assertEqual(senders["other.example"], 1)
        self.assertEqual(senders["partner.example"], 1)
        recipients = dict((f["value"], f["count"]) for f in faceted["facets"]["recipient_domain"])
        self.assertEqual(recipients["third.example"], 1)

        # Search-term report: hits, unique hits, hits with family (whole threads), totals.
        terms = self.tmp / "terms.txt"
        terms.write_text("# counsel's list\nplan\nagree\nwombat OR okapi\nsubject:(\n")
        result = server.cli("search", "report", "--config", str(server.config_path), "--csv", str(terms),
                            check=False)
        self.assertEqual(result.returncode, 2, result.stderr)  # one query is bad; the others are reported
        rows = list(csv.DictReader(io.StringIO(result.stdout)))
        by_query = {row["query"]: row for row in rows}
        self.assertEqual(by_query["plan"]["hits"], "3")          # root, reply and deep ("Re: plan" subjects)
        self.assertEqual(by_query["agree"]["hits"], "1")
        self.assertEqual(by_query["agree"]["unique_hits"], "0")  # the reply is also a "plan" hit
        self.assertEqual(by_query["agree"]["hits_with_family"], "3")
        self.assertEqual(by_query["wombat OR okapi"]["hits"], "1")
        self.assertEqual(by_query["wombat OR okapi"]["unique_hits"], "1")
        self.assertIn("column", by_query["subject:("]["error"])
        self.assertEqual(by_query["(any query)"]["hits"], "4")
        report = json.loads(server.cli("search", "report", "--config", str(server.config_path), "--json",
                                       str(terms), check=False).stdout)
        self.assertEqual(report["total_distinct"], 4)
        self.assertEqual(report["total_with_family"], 4)

    def test_a_backlog_larger_than_the_index_is_loaded_in_bulk_and_links_to_what_was_there(self):
        # batch_size 4: a first import of 3 messages, then 12 more (a backlog three times the
        # index) are loaded in bulk into a new database holding the first three too.
        server = self.start_postvault(start=False, extra="[search]\nbatch_size = 4\n")
        first = self.tmp / "first"
        first.mkdir()
        (first / "a.eml").write_bytes(eml("first@x", "budget", "the budget draft"))
        (first / "b.eml").write_bytes(eml("orphan@x", "Re: gone", "an orphan", references=["gone@x"]))
        (first / "c.eml").write_bytes(eml("dup1@x", "same words", "identical text here"))
        server.archive("import", "--format", "eml", first)
        self.assertEqual(self.count(server, "*"), 3)
        second = self.tmp / "second"
        second.mkdir()
        later = [eml("reply@x", "Re: budget", "replying to the draft", references=["first@x"]),
                 eml("orphan2@x", "Re: gone", "another orphan", references=["gone@x"]),
                 eml("dup2@x", "same words", "identical   text here")]
        later += [eml(f"filler{i}@x", f"filler {i}", f"filler body {i} pangolin") for i in range(9)]
        for i, data in enumerate(later):
            (second / f"{i:02d}.eml").write_bytes(data)
        result = server.archive("import", "--format", "eml", second)
        self.assertIn("loading it in bulk", (result.stdout + result.stderr).decode())
        self.assertEqual(self.count(server, "*"), 15)
        self.assertEqual(self.count(server, "pangolin"), 9)
        hits = {hit["subject"]: hit for hit in self.results(server, "*")["results"]}
        self.assertEqual(hits["Re: budget"]["thread"], hits["budget"]["thread"])
        self.assertEqual(self.count(server, f"thread:{hits['budget']['thread']}"), 2)
        self.assertEqual(self.count(server, "subject:gone"), 2)
        gone = self.results(server, "subject:gone")["results"]
        self.assertEqual(gone[0]["thread"], gone[1]["thread"])
        self.assertEqual(self.count(server, "is:duplicate"), 1)
        self.assertEqual(self.results(server, "is:duplicate")["results"][0]["subject"], "same words")
        # One database left, no parts.
        stub = next(server.directory.rglob("current"))
        entries = sorted(p.name for p in stub.parent.iterdir())
        self.assertEqual(len([e for e in entries if e.startswith("db-")]), 1, entries)
        self.assertFalse([e for e in entries if e.endswith(".parts")], entries)

    def test_blind_copies_are_found_from_the_envelope_and_the_server_indexes_as_it_archives(self):
        sink = self.start_sink()
        server = self.start_postvault(delivery={"relayhost": f"127.0.0.1:{sink.port}"})
        with smtplib.SMTP("127.0.0.1", server.port) as client:
            client.sendmail("alice@corp.example", ["bob@partner.example", "secret@hidden.example"],
                            eml("live@x", "live mail", "indexed while the server runs"))
        wait_until(lambda: self.count(server, "id:live@x") == 1, timeout=30, message="the message in the index")
        self.assertEqual(self.count(server, "bcc:secret@hidden.example"), 1)
        self.assertEqual(self.count(server, "participant:hidden.example"), 1)
        self.assertEqual(self.count(server, "bcc:bob@partner.example"), 0)   # in To:, not blind
        self.assertEqual(self.count(server, "direction:outbound"), 1)
        # Delivery outcomes reach the index as metadata updates.
        wait_until(lambda: self.count(server, "method:plain") == 1, timeout=30, message="the outcome indexed")

        # Reindex and compaction go through the running server (the index's only writer).
        reindexed = self.search(server, "reindex")
        self.assertIn("reindexed 1 messages", reindexed.stdout)
        self.assertEqual(self.count(server, "live"), 1)
        compacted = server.archive("compact").stdout.decode()
        self.assertIn("search index compacted", compacted)
        self.assertEqual(self.count(server, "bcc:hidden.example"), 1)

    def test_bad_queries_and_missing_index(self):
        server = self.start_postvault(start=False)
        missing = self.search(server, "--count", "anything", check=False)
        self.assertEqual(missing.returncode, 1)
        self.assertIn("no search index", missing.stderr)
        self.import_messages(server, [("one", eml("one@x", "hello", "hello world"))])
        bad = self.search(server, "--count", "subject:(hello", check=False)
        self.assertEqual(bad.returncode, 2)
        self.assertIn("column 9", bad.stderr)
        self.assertEqual(self.search(server, "--json", "from:(", check=False).returncode, 2)
