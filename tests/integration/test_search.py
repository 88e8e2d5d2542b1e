"""`postvault search` through the real binary, checked against an independent reference.

- Corpus counts: ext4-dev and usrp-dev (../shared/corpus/) imported into one archive with
  `archive import --format maildir` (which indexes too); `search --count` for every operator and
  prefix of docs/search.md equals tests/integration/search_reference.py's count (pure Python
  `email`, no postvault code), before and after `search reindex`.
- --json shape, --sort date/relevance, --limit, --cursor pagination (stable while new mail is
  archived), output without --json.
- Bad queries: exit status 2 and "bad query at column N" with docs/search.md's columns.
- i18n: RFC 2047 names and subjects (UTF-8 B and Q, ISO-8859-1, words split after base64
  padding), RFC 2231 file names, found with and without diacritics and in any case.
- Part rules: every text/* leaf that is not an attachment is body (an inline text/x-patch);
  every leaf that is not text/* is an attachment (a nameless inline image or PDF); signatures
  are neither.
- While the server runs: mail sent by SMTP becomes searchable (envelope sender and BCC
  recipients included), reindex works beside the server.
- kill -9 while the server indexes, restart: every archived message is indexed exactly once.
"""

import email.utils
import json
import pathlib
import re
import smtplib
import subprocess
import threading
import unittest

from harness import BINARY, SOURCE_DIR, Postvault, PostvaultTestCase, wait_until
from search_reference import Reference

CORPUS = SOURCE_DIR.parent / "shared" / "corpus"

# Queries whose count the reference computes and docs/search.md fixes (search_reference.py
# robust(): the same count under every reading the document leaves open). Both corpora together.
CORPUS_QUERIES = [
    "*",
    # bare words: stemmed, in body, subject, attachment text, file names and participants
    "deadlock",
    "deadlocks",
    "regressions",
    "body:checksums",
    "mergers",
    "quota OR bigalloc",
    # quoted: exact words; phrases
    '"deadlock"',
    '"corrupted"',
    '"data loss"',
    # wildcards (file names: whole names too; addresses; Message-IDs)
    "body:fsync*",
    "subject:journ*",
    "filename:dmesg*",
    "filename:screenshot*",
    "from:tyt*",
    "id:20190428*",
    # fields
    "body:corruption",
    'body:"use after free"',
    "body:rfnoc",
    "subject:regression",
    "SUBJECT:regression",
    'subject:"fast commit"',
    'subject:"fast-commit commit path"',     # two subjects split after a padded B word
    "subject:(crash OR deadlock OR hang)",
    "attachment:mkfs",
    'attachment:"uhd_usrp_probe"',
    "filename:patch",
    "filename:image.png",
    # AND (explicit and juxtaposition), OR, precedence, grouping, NOT and -
    'subject:"ext4" AND subject:xfs',
    'subject:"ext4" subject:xfs',
    "quota OR bigalloc extent",
    "(quota OR bigalloc) extent",
    "body:(regression OR corruption) NOT body:syzbot",
    "-subject:re body:fsync",
    "NOT subject:re",
    "subject:ext4 AND NOT from:suse.cz",
    "* NOT subject:ext4",
    # NEAR / W: at most n positions apart, either order; phrases are one unit; a field on one
    # operand applies to all; NEAR binds tighter than NOT
    "body:checksum NEAR body:metadata",
    "body:lockdep NEAR/6 warning",
    'body:"file system" NEAR/2 corruption',
    '"fast commit" NEAR/6 replay',
    "body:overflow W/2 underflow",
    "body:deadlock NEAR/8 inode",
    "inode NEAR/2 bitmap",
    "body:orphan NEAR/1 inode",
    "subject:fast NEAR/1 commit",
    "NOT body:deadlock NEAR/5 inode",
    # address fields: exact address, domain (and subdomains), local part, name word, name phrase
    "from:tytso@mit.edu",
    "from:<tytso@mit.edu>",
    "from:suse.cz",
    "from:@suse.cz",
    "from:kernel.org",
    "from:tytso",
    "from:kara",
    "from:darrick",          # a word of the local part (darrick.wong@oracle.com)
    "to:ext4",               # ... of linux-ext4@vger.kernel.org
    'from:"Jan Kara"',
    "from:müller",
    'participant:"Marcus Müller"',
    "to:huawei.com",
    "cc:tytso@mit.edu",
    "cc:jack@suse.cz OR to:jack@suse.cz",
    "participant:adilger.kernel@dilger.ca",
    "bcc:linux-ext4@vger.kernel.org",
    # domain:, id: (one unique, one Message-ID carried by two different messages)
    "domain:ettus.com",
    "domain:redhat.com NOT from:redhat.com",
    "id:20190428202154.GE7441@quack2",
    "id:<20190428202154.GE7441@quack2>",
    "id:20190801175703.GH25064@quack2.suse.cz",
    # dates (UTC): year, month range, day, open ranges, relative (the corpus ends in 2020)
    "date:2019",
    "date:2020-03..2020-06",
    "date:2020-02-29",
    "date:2020-11-01..",
    "date:..2019-04-30",
    "date:2y..",
    "date:..6m",
    "date:30d",
    "date:2019-06..1y",
    # sizes
    "size:>100KB",
    "size:>=1MB",
    "size:>1.5mb",
    "size:<=4K",
    "size:100KB..2MB",
    "size:200kb..",
    "size:<2048",
    "size:3000B..3100B",
    # has:, type:, is:, direction:
    "has:attachment",
    "has:attachment from:ettus.com",
    "has:attachment NOT type:application",  # nameless inline images are attachments too
    "type:image/png",
    "type:image/jpeg",
    "type:image",
    "type:application/gzip",
    "is:reply",
    "NOT is:reply subject:patch",
    "is:signed",
    "direction:import",
    # combinations
    "from:suse.cz subject:ext4 date:2020 -is:reply",
    "(from:oracle.com OR from:redhat.com) body:fsync date:2019-06..2020-06",
    "(has:attachment OR is:signed) date:2020-01..2020-06",
]

# Where docs/search.md leaves the answer open (see search_reference.VARIANTS): any of the
# reference's readings is accepted, and the failure message names them.
AMBIGUOUS_QUERIES = [
    # Attachment text: is "plain text" only text/plain, or also text/x-patch, text/x-log, and an
    # application/octet-stream named x.log or x.cpp? These counts differ between the readings.
    "checksums",
    "corrupted",
    "fsync*",
    "attachment:error",
]


def search(pv, query, *options, check=True, timeout=300):
    """`postvault search --config FILE OPTIONS... QUERY` -> CompletedProcess (text). A query that
    starts with '-' (`-subject:re x`) follows `--`, or the command line would take it for an option."""
    tail = ["--", query] if query.startswith("-") else [query]
    result = subprocess.run([BINARY, "search", "--config", str(pv.config_path), *options, *tail],
                            capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"postvault search {' '.join(options)} {query!r} failed ({result.returncode}):\n"
                             f"{result.stdout}{result.stderr}")
    return result


def count(pv, query, *options):
    """--count: the exact number alone on the last line."""
    out = search(pv, query, "--count", *options).stdout
    lines = out.strip().splitlines()
    if not lines or not re.fullmatch(r"\d+", lines[-1].strip()):
        raise AssertionError(f"search --count {query!r}: no number alone on the last line:\n{out}")
    return int(lines[-1].strip())


def search_json(pv, query, *options):
    return json.loads(search(pv, query, "--json", *options).stdout)


def reindex(pv, timeout=600):
    result = subprocess.run([BINARY, "search", "reindex", "--config", str(pv.config_path)],
                            capture_output=True, text=True, timeout=timeout)
    if result.returncode != 0:
        raise AssertionError(f"postvault search reindex failed ({result.returncode}):\n"
                             f"{result.stdout}{result.stderr}")
    return result


def archived_count(pv):
    stats = pv.archive("stats").stdout.decode()
    found = re.search(r"^messages: (\d+)", stats, re.M)
    if not found:
        raise AssertionError(f"archive stats printed no 'messages: N':\n{stats}")
    return int(found.group(1))


def unpack(tmp, name):
    archive = CORPUS / f"{name}.tar.zst"
    if not archive.exists():
        raise unittest.SkipTest(f"corpus not found at {archive} (the shared/ folder beside the checkout)")
    target = pathlib.Path(tmp) / "corpus"
    target.mkdir(exist_ok=True)
    if not (target / name).exists():
        subprocess.run(["tar", "--zstd", "-xf", str(archive), "-C", str(target)], check=True)
    return target / name


def eml(sender, recipients, subject, body, date, message_id, extra_headers="", content_type=None,
        transfer_encoding=None):
    """A message as bytes; header values are written as given (encode them first)."""
    lines = [f"From: {sender}", f"To: {', '.join(recipients)}", f"Subject: {subject}",
             f"Date: {email.utils.format_datetime(date)}", f"Message-ID: <{message_id}>", "MIME-Version: 1.0"]
    if extra_headers:
        lines.append(extra_headers.rstrip("\r\n"))
    if content_type:
        lines.append(f"Content-Type: {content_type}")
    else:
        lines.append("Content-Type: text/plain; charset=utf-8")
    if transfer_encoding:
        lines.append(f"Content-Transfer-Encoding: {transfer_encoding}")
    head = "\r\n".join(lines).encode()
    data = body if isinstance(body, bytes) else body.encode()
    return head + b"\r\n\r\n" + data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def word_b(text, charset="UTF-8"):
    """An RFC 2047 encoded word, B encoding."""
    import base64
    return f"=?{charset}?B?{base64.b64encode(text.encode(charset)).decode()}?="


def word_q(text, charset="UTF-8"):
    """An RFC 2047 encoded word, Q encoding (every byte but letters and digits as =XX)."""
    encoded = "".join(chr(b) if chr(b).isascii() and chr(b).isalnum() else "_" if b == 0x20 else f"={b:02X}"
                      for b in text.encode(charset))
    return f"=?{charset}?Q?{encoded}?="


def utc(*args):
    import datetime
    return datetime.datetime(*args, tzinfo=datetime.timezone.utc)


# ---------------------------------------------------------------------------------------------


class SearchCorpusTest(PostvaultTestCase):
    """One archive of both corpora, imported once for the class (the tests only read it; the
    reindex test rebuilds the index, which must not change any count)."""

    @classmethod
    def setUpClass(cls):
        import os
        import shutil
        import tempfile
        cls.shared = pathlib.Path(tempfile.mkdtemp(prefix="postvault-search-corpus-"))
        cls.pv = None
        if not os.path.exists(BINARY):
            return  # setUp fails with the harness's message
        try:
            folders = [unpack(cls.shared, name) for name in ("ext4-dev", "usrp-dev")]
            cls.pv = Postvault(cls.shared / "pv")
            # The first import (a child process, which also indexes) and the reference (Python,
            # one process per CPU) run side by side.
            for folder in folders:
                process = subprocess.Popen([BINARY, "archive", "import", "--config", str(cls.pv.config_path),
                                            "--format", "maildir", str(folder)],
                                           stdout=subprocess.PIPE, stderr=subprocess.PIPE)
                if folder is folders[0]:
                    cls.reference = Reference.from_paths(folders)
                out, err = process.communicate(timeout=900)
                if process.returncode != 0:
                    raise AssertionError(f"archive import {folder} failed: {out.decode()}{err.decode()}")
            cls.ids = {}  # archive id -> reference Doc (by SHA-256)
            by_sha = {doc.sha256: doc for doc in cls.reference.docs}
            for line in cls.pv.archive("list").stdout.decode().splitlines():
                message_id, digest = line.split("\t")
                cls.ids[message_id] = by_sha.get(digest)
        except BaseException:
            shutil.rmtree(cls.shared, ignore_errors=True)
            raise

    @classmethod
    def tearDownClass(cls):
        import os
        import shutil
        if os.environ.get("POSTVAULT_KEEP_TMP"):
            print(f"kept {cls.shared}", file=__import__("sys").stderr)
        else:
            shutil.rmtree(cls.shared, ignore_errors=True)

    def expected(self, query):
        """(count, readings): the reference's count and, where docs/search.md is open, the other
        acceptable counts."""
        counts = self.reference.robust(query)
        return counts[None], counts

    def compare(self, queries, ambiguous=()):
        """Every query's count against the reference; one failure listing every difference."""
        rows, wrong = [], []
        for query in list(queries) + list(ambiguous):
            expected, readings = self.expected(query)
            try:
                got = count(self.pv, query)
            except AssertionError as error:
                got = f"error: {str(error).strip().splitlines()[-1]}"
            if query in ambiguous:
                ok = got in set(readings.values())
            else:
                ok = got == expected
                if len(readings) > 1:
                    rows.append(f"  (the reference finds {query!r} open: {readings})")
            rows.append(f"{'ok  ' if ok else 'DIFF'} postvault {got!s:>6} reference {expected:>6}  {query}"
                        + ("" if len(readings) == 1 else "  readings " + ", ".join(
                            f"{k}={v}" for k, v in readings.items() if k)))
            if not ok:
                wrong.append(query)
        return rows, wrong

    def test_counts_match_the_reference_for_every_operator_and_prefix(self):
        self.assertEqual(archived_count(self.pv), self.reference.distinct())
        rows, wrong = self.compare(CORPUS_QUERIES, AMBIGUOUS_QUERIES)
        self.assertFalse(wrong, f"{len(wrong)} of {len(rows)} counts differ from the reference:\n" + "\n".join(rows))

    def test_reindex_gives_the_same_counts(self):
        before = {query: count(self.pv, query) for query in CORPUS_QUERIES}
        reindex(self.pv)
        after = {query: count(self.pv, query) for query in CORPUS_QUERIES}
        differ = {q: (before[q], after[q]) for q in CORPUS_QUERIES if before[q] != after[q]}
        self.assertFalse(differ, f"counts changed by reindex (before, after): {differ}")
        self.assertEqual(after["*"], archived_count(self.pv))

    def test_json_results_have_the_documented_shape(self):
        query = 'body:"deadlock"'
        total = count(self.pv, query)
        self.assertGreater(total, 20)
        data = search_json(self.pv, query, "--limit", "20")
        self.assertEqual(data["total"], total)
        matching = {doc.sha256 for doc in self.reference.match(query)}
        self.assertEqual(len(data["results"]), 20)
        for result in data["results"]:
            for key in ("id", "date", "from", "to", "subject", "snippet"):
                self.assertIn(key, result, result)
            self.assertIn(result["id"], self.ids, "a result id that `archive list` does not know")
            self.assertIn(self.ids[result["id"]].sha256, matching, "a result the reference does not match")
            # The searched word is marked in the snippet (body text: it is there for every match),
            # as written in the text.
            self.assertRegex(result["snippet"], r"(?i)\[deadlock\]", result)
        # The default limit is 20.
        self.assertEqual(len(search_json(self.pv, query)["results"]), 20)

    def test_sort_limit_and_plain_output(self):
        query = 'subject:"fast commit"'
        total = count(self.pv, query)
        by_date = search_json(self.pv, query, "--sort", "date", "--limit", str(total + 10))
        self.assertEqual(by_date["total"], total)
        dates = [self.ids[r["id"]].date for r in by_date["results"]]
        self.assertEqual(len(dates), total)
        self.assertEqual(dates, sorted(dates, reverse=True), "--sort date is newest first")
        default = search_json(self.pv, query, "--limit", str(total + 10))
        self.assertEqual([r["id"] for r in default["results"]], [r["id"] for r in by_date["results"]],
                         "date order is the default")
        by_relevance = search_json(self.pv, query, "--sort", "relevance", "--limit", str(total + 10))
        self.assertEqual(by_relevance["total"], total)
        self.assertEqual(sorted(r["id"] for r in by_relevance["results"]), sorted(r["id"] for r in by_date["results"]))
        # --limit: that many results, the same total, the first ones of the full list.
        limited = search_json(self.pv, query, "--sort", "date", "--limit", "7")
        self.assertEqual(limited["total"], total)
        self.assertEqual([r["id"] for r in limited["results"]], [r["id"] for r in by_date["results"][:7]])
        # Without --json: one line per result.
        plain = search(self.pv, query, "--limit", "7").stdout
        self.assertGreaterEqual(len([line for line in plain.splitlines() if line.strip()]), 7, plain)

    def test_cursor_pages_through_every_match_once(self):
        query = "body:fsync*"
        total = count(self.pv, query)
        seen, cursor, pages = [], None, 0
        while True:
            options = ["--limit", "50", "--sort", "date"] + (["--cursor", cursor] if cursor else [])
            page = search_json(self.pv, query, *options)
            self.assertEqual(page["total"], total)
            seen += [r["id"] for r in page["results"]]
            cursor = page.get("next_cursor")
            pages += 1
            if not page["results"] or not cursor or pages > total // 50 + 2:
                break
        self.assertEqual(len(seen), len(set(seen)), "a message on two pages")
        self.assertEqual(len(seen), total)
        dates = [self.ids[i].date for i in seen]
        self.assertEqual(dates, sorted(dates, reverse=True))

    def test_bad_queries_exit_2_with_the_column(self):
        # docs/search.md's examples, and the same rules elsewhere in a query.
        cases = [
            ("(merger OR ab", 14, "')' expected to close the '(' at column 1"),
            ("form:alice", 1, "unknown field 'form'"),
            ("date:yesterday", 6, "'date:' needs YYYY"),
            ("merger subjct:x", 8, "unknown field 'subjct'"),
            ("Zoë form:x", 5, "unknown field 'form'"),           # columns count characters, not bytes
            ("a (b (c OR d)", 14, "')' expected to close the '(' at column 3"),
            ("re: hello", 1, "unknown field 're'"),              # letters and a colon make a field
            ("date:2024-02-30", 6, ""),
            ("m*", 1, ""),
            ("!!!", 1, ""),
        ]
        for query, column, message in cases:
            with self.subTest(query=query):
                result = search(self.pv, query, "--count", check=False)
                self.assertEqual(result.returncode, 2, result.stdout + result.stderr)
                self.assertIn(f"bad query at column {column}", result.stderr)
                self.assertIn(message, result.stderr)
        # Malformed in other ways: still status 2 and a column.
        for query in ("merger)", "merger AND", "OR merger", "date:2024-13", "date:2024..2023", "size:>lots",
                      "size:10KB..1KB", "size:1.5", "subject:", '""', '"unclosed phrase', "from:(", "a OR OR b",
                      "merger NEAR/3 (a OR b)", "merger NEAR/3 merg*", "merger NEAR/0 x", "date:99999d..",
                      "(" * 101 + "x" + ")" * 101, "NOT " * 101 + "x"):
            with self.subTest(query=query):
                result = search(self.pv, query, "--count", check=False)
                self.assertEqual(result.returncode, 2, f"{query!r}: {result.stdout}{result.stderr}")
                self.assertRegex(result.stderr, r"bad query at column \d+")
        # Any other error: status 1.
        result = subprocess.run([BINARY, "search", "--config", str(self.shared / "missing.toml"), "--count", "x"],
                                capture_output=True, text=True, timeout=60)
        self.assertEqual(result.returncode, 1, result.stdout + result.stderr)


# ---------------------------------------------------------------------------------------------


class SearchCraftedTest(PostvaultTestCase):
    """Small archives of hand-made .eml files, one per test."""

    def import_folder(self, pv, messages, name="eml"):
        folder = self.tmp / name
        folder.mkdir()
        for file_name, data in messages.items():
            (folder / file_name).write_bytes(data)
        result = pv.archive("import", "--format", "eml", folder)
        self.assertIn(f"imported {len(messages)},", result.stdout.decode())
        return folder

    def test_rfc2047_names_and_subjects_fold_diacritics_and_case(self):
        pv = self.start_postvault(start=False)
        messages = {
            # UTF-8, B encoding in the name, Q in the subject; 8-bit UTF-8 body.
            "1.eml": eml(f"{word_b('Zoë Dupont')} <zoe@example.fr>", ["team@example.fr"],
                         word_q("Réunion budgétaire"),
                         "Bonjour, la réunion avec Müller aura lieu à la Straße 5.\n", utc(2026, 1, 5, 9),
                         "i18n-1@example.fr", transfer_encoding="8bit"),
            # ISO-8859-1: Q in the name, B in the subject, quoted-printable Latin-1 body.
            "2.eml": eml(f"{word_q('Jörg Müller', 'ISO-8859-1')} <jm@example.de>", ["info@example.de"],
                         word_b("Überprüfung der Verträge", "ISO-8859-1"),
                         "Caf=E9 cr=E8me und Vertr=E4ge.\n", utc(2026, 1, 6, 9), "i18n-2@example.de",
                         content_type="text/plain; charset=iso-8859-1", transfer_encoding="quoted-printable"),
            # Three encoded words in a row (the white space between them is not text), Greek.
            "3.eml": eml(f"{word_q('Ιωάννης')} <ioannis@example.gr>", ["someone@example.gr"],
                         f"{word_q('café')} {word_q(' naïve ')} {word_b('Παράδειγμα')}",
                         "Ένα απλό παράδειγμα.\n", utc(2026, 1, 7, 9), "i18n-3@example.gr",
                         transfer_encoding="8bit"),
            # A subject folded into two B-encoded words, the first one padded ("==") and ending
            # where the second begins: both halves are text (GMime's merging of adjacent encoded
            # words loses the second half).
            "5.eml": eml("split@example.com", ["x@example.com"],
                         f"{word_b('Re: 答复: [External Mail]Re: part ext4')}\r\n        "
                         f"{word_b(': fast-commit path changes')}",
                         "split encoded words\n", utc(2026, 1, 9, 9), "i18n-5@example.com"),
            # A display name split the same way (padded first word); a comma in an encoded name.
            "6.eml": eml(f"{word_b('Åsa')} {word_b(' Öberg')} <asa@example.se>",
                         [f"{word_q('Lindqvist, Per')} <per@example.se>"], "split name",
                         "split name words\n", utc(2026, 1, 10, 9), "i18n-6@example.se"),
            # An RFC 2231 file name; a plain ASCII message as a control.
            "4.eml": (b"From: Plain Sender <plain@example.com>\r\nTo: x@example.com\r\nSubject: resume attached\r\n"
                      b"Date: Thu, 08 Jan 2026 09:00:00 +0000\r\nMessage-ID: <i18n-4@example.com>\r\n"
                      b"MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b\"\r\n\r\n"
                      b"--b\r\nContent-Type: text/plain\r\n\r\nsee the file\r\n"
                      b"--b\r\nContent-Type: text/plain; charset=utf-8\r\n"
                      b"Content-Disposition: attachment; filename*=UTF-8''R%C3%A9sum%C3%A9%20d%C3%A9taill%C3%A9.txt\r\n"
                      b"Content-Transfer-Encoding: 8bit\r\n\r\nexp\xc3\xa9rience professionnelle\r\n--b--\r\n"),
        }
        folder = self.import_folder(pv, messages)
        reference = Reference.from_paths([folder])
        cases = {
            # names: with and without diacritics, any case, local part
            "from:zoe": 1, "from:Zoë": 1, "from:ZOË": 1, "from:ZOE": 1, 'from:"Zoe Dupont"': 1,
            "from:dupont": 1, "from:jörg": 1, "from:JORG": 1, "from:muller": 1, "from:Müller": 1,
            "from:ιωαννης": 1, "from:ΙΩΆΝΝΗΣ": 1, "from:oberg": 1, 'from:"Åsa Öberg"': 1, "from:asa": 1,
            "to:lindqvist": 1, 'to:"Lindqvist Per"': 1, "to:per@example.se": 1,
            # subjects
            "subject:reunion": 1, "subject:Réunion": 1, "subject:RÉUNION": 1, 'subject:"reunion budgetaire"': 1,
            "subject:uberprufung": 1, "subject:ÜBERPRÜFUNG": 1, "subject:vertrage": 1,
            "subject:cafe": 1, 'subject:"café naïve"': 1, "subject:naive": 1, "subject:παραδειγμα": 1,
            "subject:ΠΑΡΆΔΕΙΓΜΑ": 1, "subject:答复": 1, 'subject:"path changes"': 1, "subject:external": 1,
            # bodies: UTF-8 8bit, Latin-1 quoted-printable; ß folds to ss
            "body:muller": 1, "body:MÜLLER": 1, "body:strasse": 1, "body:STRAßE": 1, "body:creme": 1,
            "body:crème": 1, "body:cafe": 1, "body:παράδειγμα": 1, "body:ΠΑΡΑΔΕΙΓΜΑ": 1,
            # file names (RFC 2231) and attachment text
            "filename:resume": 1, "filename:Résumé": 1, "filename:detaille": 1, "attachment:experience": 1,
            "has:attachment": 1, "resume": 1, "café": 2, "müller": 2,
        }
        got = {query: count(pv, query) for query in cases}
        wrong = {q: (got[q], n) for q, n in cases.items() if got[q] != n}
        self.assertFalse(wrong, f"(postvault, expected) where they differ: {wrong}")
        # The reference agrees with the hand counts (a check of the reference itself).
        self.assertEqual({q: reference.count(q) for q in cases}, cases)
        # Results show the decoded header text.
        result = search_json(pv, "from:zoe")["results"][0]
        self.assertIn("Zoë", result["from"])
        self.assertEqual(result["subject"], "Réunion budgétaire")
        result = search_json(pv, "from:jorg")["results"][0]
        self.assertEqual(result["subject"], "Überprüfung der Verträge")

    def test_part_rules_body_and_attachments(self):
        # Body: every text/* leaf that is not an attachment. Attachment: Content-Disposition:
        # attachment, a file name, a nested message, or any leaf that is not text/*.
        pv = self.start_postvault(start=False)

        def mixed(name, parts, outer="multipart/mixed"):
            body = b"".join(b"--b\r\n" + headers.encode() + b"\r\n\r\n" + content.encode() + b"\r\n"
                            for headers, content in parts)
            return eml(f"{name}@example.com", ["r@example.com"], f"parts {name}", body + b"--b--\r\n",
                       utc(2026, 2, 1, 9), f"{name}@example.com", content_type=f'{outer}; boundary="b"')

        import base64
        png = base64.b64encode(b"\x89PNG\r\n\x1a\n" + bytes(8)).decode()
        messages = {
            # An inline text/x-patch without a name: body, not an attachment.
            "patch.eml": mixed("patch", [("Content-Type: text/plain", "walrus cover letter"),
                                         ("Content-Type: text/x-patch; charset=utf-8\r\nContent-Disposition: inline",
                                          "narwhal hunk")]),
            # A nameless inline image: an attachment.
            "image.eml": mixed("image", [("Content-Type: text/html", "<p>walrus picture</p>"),
                                         ("Content-Type: image/png\r\nContent-Disposition: inline\r\n"
                                          "Content-Transfer-Encoding: base64", png)], outer="multipart/related"),
            # A nameless application/octet-stream: an attachment.
            "binary.eml": mixed("binary", [("Content-Type: text/plain", "walrus data"),
                                           ("Content-Type: application/octet-stream\r\n"
                                            "Content-Transfer-Encoding: base64", "AAECAw==")]),
            # A signature: neither body nor attachment.
            "signed.eml": mixed("signed", [("Content-Type: text/plain", "walrus signed"),
                                           ("Content-Type: application/pgp-signature",
                                            "-----BEGIN PGP SIGNATURE-----\r\nbeluga\r\n-----END PGP SIGNATURE-----")],
                                outer='multipart/signed; protocol="application/pgp-signature"; micalg=pgp-sha256'),
            # A text/x-patch with Content-Disposition: attachment: an attachment.
            "attached.eml": mixed("attached", [("Content-Type: text/plain", "walrus attached"),
                                               ("Content-Type: text/x-patch\r\nContent-Disposition: attachment",
                                                "orca hunk")]),
        }
        folder = self.import_folder(pv, messages)
        reference = Reference.from_paths([folder])
        cases = {
            "walrus": 5, "body:narwhal": 1, "narwhal": 1, "body:orca": 0, "body:beluga": 0, "beluga": 0,
            "has:attachment": 3, "has:attachment walrus": 3, "type:image/png": 1, "type:image": 1,
            "type:application/octet-stream": 1, "type:text/x-patch": 1, "type:application/pgp-signature": 0,
            "is:signed": 1, "has:attachment is:signed": 0,
        }
        got = {query: count(pv, query) for query in cases}
        wrong = {q: (got[q], n) for q, n in cases.items() if got[q] != n}
        self.assertFalse(wrong, f"(postvault, expected) where they differ: {wrong}")
        self.assertEqual({q: reference.count(q) for q in cases}, cases)
        # The text of a text/x-patch attachment is attachment text (postvault reads every text/*
        # attachment; the reference's default reading only text/plain and text/html).
        self.assertEqual(count(pv, "attachment:orca"), 1)
        self.assertIn(1, reference.robust("attachment:orca").values())

    def test_snippets_are_plain_text_unless_html_is_asked(self):
        pv = self.start_postvault(start=False)
        body = "Before the test: if (a < b && c > d) the wombat wins; 'quoted' \"double\".\n"
        self.import_folder(pv, {"1.eml": eml("s@example.com", ["r@example.com"], "snippet", body,
                                             utc(2026, 1, 1, 9), "snippet-1@example.com")})
        plain = search_json(pv, "wombat")["results"][0]["snippet"]
        self.assertIn("[wombat]", plain)
        self.assertIn("a < b && c > d", plain, "a snippet without --html is text: nothing escaped")
        self.assertNotRegex(plain, r"&(lt|gt|amp|quot|#\d+);")
        html = search_json(pv, "wombat", "--html")["results"][0]["snippet"]
        self.assertIn("<b>wombat</b>", html)
        self.assertIn("a &lt; b &amp;&amp; c &gt; d", html, "with --html the text is escaped")

    def test_relevance_ranks_the_dense_match_first(self):
        pv = self.start_postvault(start=False)
        filler = " ".join(f"word{i}" for i in range(400))
        messages = {f"{i}.eml": eml(f"s{i}@example.com", ["r@example.com"], f"note {i}",
                                    f"{filler} quokka {filler}\n", utc(2026, 2, 1 + i, 9), f"rel-{i}@example.com")
                    for i in range(5)}
        messages["dense.eml"] = eml("d@example.com", ["r@example.com"], "quokka quokka",
                                    "quokka " * 20 + "\n", utc(2026, 1, 1, 9), "rel-dense@example.com")
        self.import_folder(pv, messages)
        by_relevance = search_json(pv, "quokka", "--sort", "relevance")
        self.assertEqual(by_relevance["total"], 6)
        self.assertIn("quokka quokka", by_relevance["results"][0]["subject"])
        by_date = search_json(pv, "quokka", "--sort", "date")
        self.assertIn("note 4", by_date["results"][0]["subject"])
        self.assertIn("quokka quokka", by_date["results"][-1]["subject"])

    def test_cursor_pages_do_not_shift_when_newer_mail_arrives(self):
        pv = self.start_postvault(start=False)
        first = {f"{i:02d}.eml": eml(f"s{i}@example.com", ["r@example.com"], f"pagination {i}", "platypus\n",
                                     utc(2026, 3, 1 + i, 12), f"page-{i}@example.com") for i in range(30)}
        self.import_folder(pv, first, "first")
        page = search_json(pv, "platypus", "--limit", "10", "--sort", "date")
        self.assertEqual(page["total"], 30)
        seen = [r["subject"] for r in page["results"]]
        cursor = page.get("next_cursor")
        self.assertTrue(cursor, "no next_cursor while more results remain")
        # Newer messages arrive between two pages: they sort before the cursor, so the next pages
        # still continue exactly after the last message shown.
        newer = {f"n{i}.eml": eml(f"n{i}@example.com", ["r@example.com"], f"newer {i}", "platypus\n",
                                  utc(2026, 4, 1 + i, 12), f"newer-{i}@example.com") for i in range(5)}
        self.import_folder(pv, newer, "newer")
        while cursor:
            page = search_json(pv, "platypus", "--limit", "10", "--sort", "date", "--cursor", cursor)
            if not page["results"]:
                break
            seen += [r["subject"] for r in page["results"]]
            cursor = page.get("next_cursor")
            self.assertLessEqual(len(seen), 40)
        self.assertEqual(seen, [f"pagination {i}" for i in range(29, -1, -1)])


# ---------------------------------------------------------------------------------------------


def message(sender, recipients, subject, body, message_id, extra=""):
    return eml(sender, recipients, subject, body, utc(2026, 5, 4, 10), message_id, extra_headers=extra)


class SearchServerTest(PostvaultTestCase):
    def start(self):
        sink = self.start_sink()
        pv = self.start_postvault(smtp={"local_domains": ["corp.test"]},
                                  delivery={"relayhost": f"127.0.0.1:{sink.port}"})
        return pv, sink

    def test_mail_becomes_searchable_while_the_server_runs(self):
        pv, sink = self.start()
        outbound = message("Alice Example <alice@corp.test>", ["bob@partner.test"], "zebrafish quarterly report",
                           "The zebrafish merger forecast is attached in spirit.\n", "srv-1@corp.test")
        inbound = message("Outside Person <outside@partner.test>", ["boss@corp.test"], "Re: zebrafish",
                          "Thanks for the zebrafish numbers.\n", "srv-2@partner.test",
                          extra="In-Reply-To: <srv-1@corp.test>\r\nReferences: <srv-1@corp.test>")
        with smtplib.SMTP("127.0.0.1", pv.port, timeout=30) as client:
            # Envelope sender differs from From:, and hidden@ is a BCC recipient.
            client.sendmail("bounces-alice@corp.test", ["bob@partner.test", "hidden@partner.test"], outbound)
            client.sendmail("outside@partner.test", ["boss@corp.test"], inbound)
        wait_until(lambda: count(pv, "zebrafish") == 2, timeout=60, interval=0.3, message="both messages indexed")
        cases = {
            "direction:outbound": 1, "direction:inbound": 1,
            "from:alice@corp.test": 1, "from:bounces-alice@corp.test": 1,   # the envelope sender too
            "bcc:hidden@partner.test": 1, "participant:hidden@partner.test": 1,  # BCC recipients are found
            "to:hidden@partner.test": 0, "to:bob@partner.test": 1,
            "domain:partner.test": 2, "domain:corp.test": 2, "is:reply": 1,
            'subject:"quarterly report"': 1, "body:forecast": 1, "merger NEAR/3 forecast": 1,
        }
        got = {query: count(pv, query) for query in cases}
        self.assertEqual(got, cases)
        # The thread id from --json finds both messages of the thread.
        results = search_json(pv, "zebrafish")["results"]
        threads = {r.get("thread") for r in results}
        self.assertEqual(len(threads), 1, results)
        self.assertEqual(count(pv, f"thread:{threads.pop()}"), 2)
        # Reindex beside the running server; the server keeps indexing new mail afterwards.
        reindex(pv)
        self.assertEqual({query: count(pv, query) for query in cases}, cases)
        with smtplib.SMTP("127.0.0.1", pv.port, timeout=30) as client:
            client.sendmail("alice@corp.test", ["bob@partner.test"],
                            message("alice@corp.test", ["bob@partner.test"], "zebrafish again", "more\n",
                                    "srv-3@corp.test"))
        wait_until(lambda: count(pv, "zebrafish") == 3, timeout=60, interval=0.3, message="indexed after reindex")

    def test_kill_during_indexing_then_restart_indexes_everything_once(self):
        pv, sink = self.start()
        total = 150
        accepted = []
        stop = threading.Event()

        def send():
            try:
                with smtplib.SMTP("127.0.0.1", pv.port, timeout=30) as client:
                    for i in range(total):
                        if stop.is_set():
                            return
                        data = message(f"sender{i}@corp.test", [f"rcpt{i}@partner.test"], f"crash test {i}",
                                       f"lemur body {i} " + "padding words here " * 50 + "\n",
                                       f"crash-{i}@corp.test")
                        client.sendmail(f"sender{i}@corp.test", [f"rcpt{i}@partner.test"], data)
                        accepted.append(i)
            except (smtplib.SMTPException, OSError):
                pass  # the server was killed under us

        sender = threading.Thread(target=send)
        sender.start()
        wait_until(lambda: len(accepted) >= total // 2, timeout=60, interval=0.01, message="half the messages sent")
        pv.kill()  # SIGKILL
        stop.set()
        sender.join(timeout=60)
        self.assertLess(len(accepted), total, "every message went through before the kill")

        pv.start()
        wait_until(lambda: archived_count(pv) >= len(accepted), timeout=60, interval=0.5,
                   message="every accepted message in the archive")
        wait_until(lambda: count(pv, "*") == archived_count(pv), timeout=90, interval=0.5,
                   message="the index caught up with the archive after the restart")
        archived = archived_count(pv)
        data = search_json(pv, "*", "--limit", "100000")
        ids = [r["id"] for r in data["results"]]
        self.assertEqual(data["total"], archived)
        self.assertEqual(len(ids), archived)
        self.assertEqual(len(ids), len(set(ids)), "a message indexed twice")
        self.assertEqual(set(ids), set(pv.archive_list()))
        self.assertEqual(count(pv, "lemur"), archived)
        subjects = [r["subject"] for r in data["results"]]
        self.assertEqual(len(subjects), len(set(subjects)), "a message archived twice")
        missing = [i for i in accepted if f"crash test {i}" not in subjects]
        self.assertFalse(missing, "accepted but not found")


if __name__ == "__main__":
    unittest.main()
