#!/usr/bin/python3
"""An independent reference for `postvault search`: docs/search.md's indexing semantics and a
subset of its query language, in pure Python (the standard `email` package with
email.policy.default, plus python3-snowballstemmer for Xapian's English stemmer).

Nothing here comes from postvault's code: it reads the Maildir / .eml files itself and decides
from the document alone which messages a query matches. The integration tests compare
`postvault search --count` with `Reference.count(query)`.

    ref = Reference.from_paths([maildir_or_file, ...])
    ref.count('from:suse.cz subject:ext4 date:2020')   # distinct messages (byte-identical files are one)
    ref.robust('body:deadlock NEAR/5 inode')            # {variant: count} where docs/search.md is open

What it models (docs/search.md, "What is indexed"):

- Folding: NFKD, combining marks dropped, casefold, in the index and in queries.
- Words: Xapian::TermGenerator's rules on folded text, rewritten (checked equal to Xapian 1.4.22's
  output, words, order and stems, on 2,076 text parts of the corpora): runs of letters/digits/marks/
  underscore; an apostrophe, '&', U+00B7, U+05F4, U+2027 (U+2019 and U+201B as an apostrophe)
  between word characters joins them; ',' '.' ';' between two digits joins them; up to three
  trailing '+' or '#' stay on a word ("c++"); words over 64 bytes are dropped (no position).
  Stems: Snowball English (the algorithm Xapian's "english" stemmer runs), for words that start
  with a letter (Xapian's STEM_SOME).
- body: every text/* leaf that is not an attachment: text/html to text (tags removed, entities
  decoded, <script>/<style> dropped), any other subtype (text/x-patch, text/csv...) as plain text;
  subject: the decoded Subject: (the first one; each RFC 2047 word decoded on its own, so a
  subject split into a padded B word and the next one keeps both halves); attachment: the text
  of text/plain and text/html attachments, and of nested messages (headers, body, attachments) -
  other types (PDF, DOCX, ...) are NOT modelled: queries on attachment text must stay on words
  from text attachments; filename: each word of the decoded file name and the whole name.
- An attachment: a MIME leaf with Content-Disposition: attachment, or a filename/name parameter,
  or a message/rfc822 part, or any leaf that is not text/* (a nameless inline image or PDF);
  pgp/pkcs7 signatures are neither body nor attachment, nor is application/pkcs7-mime (it only
  sets is:signed or is:encrypted), nor anything inside multipart/encrypted.
- from/to/cc/bcc/participant: the address, its local part and the local part's words, its
  domain and parent domains, and the words of the display name. Imported messages have no
  envelope (archive/import.h: a Maildir or .eml gives none), so these are the headers alone; bcc
  is the Bcc: header.
- domain: the domains (and parents) of From/To/Cc/Bcc addresses.
- id: Message-ID without <> (exact, case kept). date: Date: in UTC (else the file's mtime, which
  is what a Maildir import takes as the received time). size: the file's size in bytes.
- has:attachment; type: attachment MIME types and their top-level type; is:reply (In-Reply-To or
  References), is:signed (multipart/signed, or application/pkcs7-mime signed-data),
  is:encrypted (multipart/encrypted, application/pkcs7-mime enveloped-data);
  direction:import (everything imported from files).

Query subset: * ; word (stemmed), "word" (exact), "a phrase", word* ; AND / juxtaposition, OR,
NOT, -x, ( ... ); NEAR/n, W/n, NEAR (chains; phrases as one unit; at most n positions apart;
a field on one operand applies to all); field:word, field:"phrase", field:word*, field:( ... )
for body, subject, attachment, filename (wildcards on whole file names too); from/to/cc/bcc/
participant with an address (also @domain and <address>), a domain, a local part or word, a
"display name", or a prefix*; domain:, id: (with <> or a prefix*), date: (absolute, relative in
calendar months/years, open and mixed ranges), size: (units, decimals, open ranges), has:,
type:, is:reply/signed/encrypted, direction:. Field names in any case. Anything else raises
QueryError (its column is the reference's own guess, not a specification).

Where docs/search.md leaves a choice open, the reference computes the alternatives (VARIANTS) and
robust() tells whether a query's count depends on them; the tests use queries whose count does
not, and accept any reading for the few that do. Run this file to print figures for a Maildir, or to validate against notmuch:

    tests/integration/search_reference.py --validate-notmuch MAILDIR
    tests/integration/search_reference.py MAILDIR... -q 'QUERY' [-q ...]
"""

import argparse
import calendar
import datetime
import email
import email.policy
import email.utils
import hashlib
import html.parser
import os
import pathlib
import re
import subprocess
import sys
import tempfile
import time
import unicodedata
from email.parser import BytesParser

try:
    import snowballstemmer
except ImportError:  # Debian: python3-snowballstemmer (scripts/install-deps.sh installs it)
    snowballstemmer = None

# ---------------------------------------------------------------------------------------------
# Folding and words


_MARKS = None


def fold(text):
    """docs/search.md: NFKD, combining marks removed, case folded."""
    global _MARKS
    if text.isascii():
        return text.lower()
    if _MARKS is None:
        _MARKS = {cp: None for cp in range(0x110000) if unicodedata.category(chr(cp)).startswith("M")}
    return unicodedata.normalize("NFKD", text).translate(_MARKS).casefold()


_APOS = "'&\u00b7\u05f4\u2027\u2019\u201b"
_DIGIT_INFIX = ",.;\u037e\u0589\u060d\u07f8\u2044\ufe10\ufe13\ufe14"
_IGNORE = "\u200b\u200c\u200d\u2060\ufeff"
# One Xapian::TermGenerator word (see the module comment). \w is Unicode letters, digits and '_'.
_WORD = re.compile(
    r"\w+(?:(?:(?<=\d)[" + re.escape(_DIGIT_INFIX) + r"](?=\d)"
    r"|[" + re.escape(_APOS) + r"](?=[^\W\d])"
    r"|(?<!\d)[" + re.escape(_APOS) + r"](?=\w)"
    r"|[" + _IGNORE + r"](?=\w))\w+)*"
    r"(?:[+#]{1,3}(?![\w+#]))?")
MAX_WORD_BYTES = 64


def words(folded):
    """The words TermGenerator would index from already folded text, in order (positions)."""
    found = _WORD.findall(folded)
    if not folded.isascii():
        if "\u2019" in folded or "\u201b" in folded:
            found = [w.replace("\u2019", "'").replace("\u201b", "'") for w in found]
        if any(c in folded for c in _IGNORE):
            found = ["".join(c for c in w if c not in _IGNORE) for w in found]
    # Longer than 64 bytes: not indexed (and no position). 16 characters are at most 64 bytes.
    return [w for w in found if len(w) <= 16 or len(w.encode()) <= MAX_WORD_BYTES]


class Stemmer:
    def __init__(self):
        if snowballstemmer is None:
            raise RuntimeError("python3-snowballstemmer is not installed (scripts/install-deps.sh --with-tests)")
        self._stemmer = snowballstemmer.stemmer("english")
        self._cache = {}

    def __call__(self, word):
        stem = self._cache.get(word)
        if stem is None:
            # STEM_SOME: only words that start with a letter get a stem term.
            stem = self._stemmer.stemWord(word) if word[:1].isalpha() else None
            self._cache[word] = stem if stem is not None else ""
        return stem or None


# ---------------------------------------------------------------------------------------------
# HTML to text

_BLOCK_TAGS = {"p", "div", "br", "hr", "li", "ul", "ol", "tr", "td", "th", "table", "h1", "h2", "h3", "h4", "h5",
               "h6", "blockquote", "pre", "section", "article", "header", "footer", "dd", "dt", "dl", "title",
               "body", "html", "head", "form", "option", "address", "center", "caption", "tbody", "thead"}


class _HtmlText(html.parser.HTMLParser):
    """One pass, three readings: the default (script, style and title dropped; block tags
    separate words), with the title kept, and with every tag separating words."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.default, self.title, self.every = [], [], []
        self.skip = 0          # inside script/style
        self.in_title = 0

    def handle_starttag(self, tag, attrs):
        self._tag(tag)
        if tag in ("script", "style"):
            self.skip += 1
        elif tag == "title":
            self.in_title += 1

    def handle_endtag(self, tag):
        self._tag(tag)
        if tag in ("script", "style") and self.skip:
            self.skip -= 1
        elif tag == "title" and self.in_title:
            self.in_title -= 1

    def _tag(self, tag):
        self.every.append("\n")
        if tag in _BLOCK_TAGS:
            self.default.append("\n")
            self.title.append("\n")

    def handle_data(self, data):
        if self.skip:
            return
        self.title.append(data)
        if not self.in_title:
            self.default.append(data)
            self.every.append(data)


def html_to_text(markup, reading="default"):
    """reading: default | html-title | html-break-every-tag (see VARIANTS)."""
    return html_readings(markup)[reading]


def html_readings(markup):
    parser = _HtmlText()
    try:
        parser.feed(markup)
        parser.close()
    except Exception:  # html.parser is lenient; never let one message stop the reference
        pass
    return {"default": "".join(parser.default), "html-title": "".join(parser.title),
            "html-break-every-tag": "".join(parser.every)}


# ---------------------------------------------------------------------------------------------
# One message

SIGNATURE_TYPES = {"application/pgp-signature", "application/pkcs7-signature", "application/x-pkcs7-signature"}
PKCS7_MIME_TYPES = {"application/pkcs7-mime", "application/x-pkcs7-mime"}
TEXT_FIELDS = ("body", "subject", "attachment", "filename")
ADDRESS_FIELDS = ("from", "to", "cc", "bcc")
FREE_TEXT_FIELDS = ("body", "subject", "attachment", "filename", "participant")


def _text_of(part):
    """Decoded text of a leaf (transfer encoding and charset), never raising."""
    try:
        payload = part.get_payload(decode=True) or b""
    except Exception:
        payload = b""
    charset = part.get_content_charset() or "us-ascii"
    try:
        return payload.decode(charset, errors="replace")
    except LookupError:
        return payload.decode("utf-8", errors="replace")


TEXT_TYPES = {"application/x-patch", "application/x-diff", "application/x-shellscript", "application/x-sh",
              "application/xml", "application/json", "application/javascript", "application/x-python"}
TEXT_EXTENSIONS = {"txt", "text", "log", "csv", "tsv", "diff", "patch", "c", "cc", "cpp", "cxx", "h", "hh", "hpp",
                   "py", "sh", "bash", "pl", "rb", "go", "rs", "java", "js", "ts", "conf", "cfg", "ini", "xml", "json",
                   "yaml", "yml", "md", "rst", "tex", "v", "sv", "vhd", "vhdl", "m", "grc", "toml", "cmake", "mk",
                   "asc", "vcf", "ics"}


def _texty(ctype, part):
    """A text attachment in the wide reading: any text/* type, a few application/* types that
    are text, or any type with a text file extension."""
    if ctype.startswith("text/") or ctype in TEXT_TYPES:
        return True
    try:
        name = part.get_filename() or ""
    except Exception:
        name = ""
    return "." in name and name.rsplit(".", 1)[1].lower() in TEXT_EXTENSIONS


def is_attachment(part):
    """docs/search.md: a leaf with Content-Disposition: attachment, or a file name, or a nested
    message, or any leaf that is not text/*; signatures (and S/MIME application/pkcs7-mime) are
    not attachments."""
    ctype = part.get_content_type()
    if ctype in SIGNATURE_TYPES or ctype in PKCS7_MIME_TYPES:
        return False
    if ctype == "message/rfc822" or not ctype.startswith("text/"):
        return True
    try:
        if part.get_content_disposition() == "attachment":
            return True
        return part.get_filename() is not None
    except Exception:
        return False


_HEADER_CACHE = {}


def _header(message, name, every=False):
    """Header objects of policy.default for NAME (the first, or every one), parsed once per
    distinct raw value: mailing-list mail repeats the same To:/Cc: lines thousands of times."""
    wanted = name.lower()
    result = []
    for key, raw in message.raw_items():
        if key.lower() != wanted:
            continue
        cache_key = (wanted, raw)
        header = _HEADER_CACHE.get(cache_key)
        if header is None:
            try:
                header = email.policy.default.header_fetch_parse(key, raw)
            except Exception:
                header = False
            if len(_HEADER_CACHE) < 200000:
                _HEADER_CACHE[cache_key] = header
        if header is not False:
            result.append(header)
        if not every:
            break
    return result if every else (result[0] if result else None)


def _header_str(message, name):
    value = _header(message, name)
    if value is None:
        return None
    try:
        return str(value)
    except Exception:
        return None


def _addresses(message, name):
    """[(display name, addr_spec)] of every header NAME, decoded; unparsable entries dropped."""
    result = []
    for header in _header(message, name, every=True):
        try:
            for address in header.addresses:
                spec = address.addr_spec or ""
                if spec in ("<>",):
                    spec = ""
                result.append((address.display_name or "", spec))
        except Exception:
            try:
                for display, spec in email.utils.getaddresses([str(header)]):
                    result.append((display, spec))
            except Exception:
                pass
    return result


def domain_and_parents(domain):
    domain = fold(domain).strip(".")
    labels = domain.split(".")
    return [".".join(labels[i:]) for i in range(len(labels)) if labels[i]] if domain else []


class Address:
    __slots__ = ("address", "local", "local_words", "domains", "name_words")

    def __init__(self, display, spec):
        spec = fold(spec.strip())
        self.address = spec
        local, at, domain = spec.rpartition("@")
        if not at:
            local, domain = spec, ""
        self.local = local
        self.local_words = words(local)
        self.domains = domain_and_parents(domain)
        self.name_words = words(fold(display))


class Doc:
    """What the reference knows of one message."""

    def __init__(self, path, raw, mtime):
        self.path = str(path)
        self.sha256 = hashlib.sha256(raw).hexdigest()
        self.size = len(raw)
        message = BytesParser(policy=email.policy.default).parsebytes(raw)
        # text fields: list of words in order, per variant-dependent source
        self.texts = {"body": [], "subject": [], "attachment": [], "filename": []}
        self.alt_texts = {}   # variant name -> {field: words} where a variant changes a field
        self.attachment_types = set()
        self.filenames = []
        self.has_attachment = False
        self.signed = self.encrypted = False
        subject = _header_str(message, "Subject")
        self.subject = subject or ""
        self.texts["subject"] = words(fold(self.subject))
        self.addresses = {field: [Address(d, s) for d, s in _addresses(message, field)] for field in ADDRESS_FIELDS}
        mid = _header_str(message, "Message-ID") or ""
        found = re.search(r"<([^<>]*)>", mid)
        self.message_id = (found.group(1) if found else mid).strip()
        self.reply = bool(_header_str(message, "In-Reply-To") or _header_str(message, "References"))
        self.date = self._date(message, mtime)
        self._walk(message, nested=False)

    @staticmethod
    def _date(message, mtime):
        try:
            header = _header(message, "Date")
            value = header.datetime if header is not None else None
        except Exception:
            value = None
        if value is None:
            return int(mtime)
        if value.tzinfo is None:
            value = value.replace(tzinfo=datetime.timezone.utc)
        return int(value.timestamp())

    def _add(self, field, text, variants=None):
        """Adds text's words to field; variants = {variant: text}: what that variant reads instead.
        A variant's copy of the fields exists only for messages where it makes a difference."""
        base = words(fold(text))
        for variant in VARIANT_NAMES:
            alternative = (variants or {}).get(variant)
            alt_words = base if alternative is None else words(fold(alternative))
            fields = self.alt_texts.get(variant)
            if fields is None and alt_words != base:
                fields = self.alt_texts[variant] = {k: list(v) for k, v in self.texts.items()}
            if fields is not None:
                fields[field] += alt_words
        self.texts[field] += base

    def _walk(self, part, nested):
        ctype = part.get_content_type()
        if ctype == "multipart/signed" or (ctype == "application/pkcs7-mime"
                                           and "signed" in (part.get_param("smime-type") or "")):
            self.signed = True
        if ctype == "multipart/encrypted" or (ctype == "application/pkcs7-mime"
                                              and "enveloped" in (part.get_param("smime-type") or "")):
            self.encrypted = True
        if ctype == "multipart/encrypted":
            return  # no text, no attachments: what it holds cannot be read
        if ctype == "message/rfc822":
            self._attachment(part, ctype, nested)
            inner = part.get_payload()
            inner = inner[0] if isinstance(inner, list) and inner else None
            if inner is not None:
                self._nested_message(inner)
            return
        # A multipart is never a leaf, even one whose body Python could not split (no parts).
        # Python's email package gives message/delivery-status (and other message/* types) a list
        # payload; for postvault they are leaves like any other (attachments: not text/*).
        if ctype.startswith("multipart/") or (part.is_multipart() and not ctype.startswith("message/")):
            try:
                children = part.get_payload() if part.is_multipart() else []
            except Exception:
                children = []
            for child in children or []:
                if isinstance(child, email.message.Message):
                    self._walk(child, nested)
            return
        if ctype in SIGNATURE_TYPES or ctype in PKCS7_MIME_TYPES:
            return
        if is_attachment(part):
            self._attachment(part, ctype, nested)
            if ctype in ("text/plain", "text/html"):
                self._add("attachment", *self._leaf_text(part, ctype))
            elif _texty(ctype, part):
                # docs/search.md: "plain text": does text/x-patch, text/x-log, or an
                # application/octet-stream named x.log count? Both ways.
                self._add("attachment", "", {"attachment-any-text": _text_of(part)})
            return
        # Not an attachment, so text/*: body (a nested message's body is attachment text).
        self._add("attachment" if nested else "body", *self._leaf_text(part, ctype))

    @staticmethod
    def _leaf_text(part, ctype):
        """(text, {variant: text}) of a text/* leaf: text/html converted, the rest as it is."""
        text = _text_of(part)
        if ctype != "text/html":
            return text, None
        readings = html_readings(text)
        return readings.pop("default"), readings

    def _attachment(self, part, ctype, nested):
        self.has_attachment = True
        self.attachment_types.add(ctype)
        self.attachment_types.add(ctype.split("/")[0])
        try:
            name = part.get_filename()
        except Exception:
            name = None
        if name:
            self._add("filename", name)
            self.filenames.append(fold(name))

    def _nested_message(self, inner):
        # Its headers, body and attachments become attachment text.
        header_text = []
        for name in ("From", "To", "Cc", "Subject", "Date"):
            value = _header_str(inner, name)
            if value:
                header_text.append(value)
        self._add("attachment", "\n".join(header_text))
        self._walk(inner, nested=True)

    def field_words(self, field, variant=None):
        if variant and variant in self.alt_texts:
            return self.alt_texts[variant][field]
        return self.texts[field]


# Choices docs/search.md leaves open, each evaluated as a variant of the default reading.
VARIANTS = {
    "html-title": "text/html: the <title> is body text too",
    "html-break-every-tag": "text/html: every tag (inline ones too) separates words",
    "attachment-any-text": "attachment text also from other text/* types, text-like application/* types and "
                           "any type with a text file extension (x.log as application/octet-stream)",
    "participant-stem": "a bare word matches display-name words of participants by stem, not exactly",
}
VARIANT_NAMES = tuple(VARIANTS)


# ---------------------------------------------------------------------------------------------
# The corpus


class QueryError(Exception):
    def __init__(self, message, column):
        super().__init__(f"bad query at column {column}: {message}")
        self.column = column


def _load(file):
    return Doc(file, file.read_bytes(), file.stat().st_mtime)


class FieldIndex:
    """Postings of one text field over a set of documents: word -> doc indices, with the word
    sequences kept for phrases and NEAR, and the stems of the vocabulary."""

    def __init__(self, sequences, stem, extra_terms=None):
        self.sequences = sequences  # {doc index: [words]}
        self.postings = {}
        for i, seq in sequences.items():
            for word in set(seq):
                self.postings.setdefault(word, set()).add(i)
        self.whole = {}  # terms without positions (filename: the whole name)
        for i, terms in (extra_terms or {}).items():
            for term in terms:
                self.whole.setdefault(term, set()).add(i)
        self.stem = stem
        self._by_stem = None

    def exact(self, word):
        return self.postings.get(word, set()) | self.whole.get(word, set())

    def stemmed(self, word):
        stem = self.stem(word)
        if stem is None:
            return self.exact(word)
        if self._by_stem is None:
            self._by_stem = {}
            for w in self.postings:
                s = self.stem(w)
                if s is not None:
                    self._by_stem.setdefault(s, []).append(w)
        result = set()
        for w in self._by_stem.get(stem, ()):
            result |= self.postings[w]
        return result

    def prefix(self, start):
        result = set()
        for table in (self.postings, self.whole):
            for w, docs in table.items():
                if w.startswith(start):
                    result |= docs
        return result

    def phrase(self, phrase):
        candidates = None
        for word in phrase:
            docs = self.postings.get(word, set())
            candidates = set(docs) if candidates is None else candidates & docs
            if not candidates:
                return set()
        result = {i for i in candidates if _phrase_positions(self.sequences[i], phrase, first=True)}
        if len(phrase) > 1:
            result |= self.whole.get(" ".join(phrase), set())
        return result

    def near(self, operands, distance):
        candidates = None
        for operand in operands:
            docs = self.phrase(operand)
            candidates = docs if candidates is None else candidates & docs
        return {i for i in candidates or () if _near_in(self.sequences[i], operands, distance)}


def _near_in(seq, operands, distance):
    """docs/search.md: all operands (a phrase is one unit) within a window that leaves room for
    at most distance - 1 other words; for two operands, one operand's words never count as the
    other's."""
    if len(operands) == 2:
        left, right = operands
        for a in _phrase_positions(seq, left):
            for b in _phrase_positions(seq, right):
                gap = b - (a + len(left) - 1) if a <= b else a - (b + len(right) - 1)
                if 0 < gap <= distance:
                    return True
        return False
    # A chain: the smallest window holding one occurrence of each operand (overlaps not excluded).
    events = sorted((p, p + len(op) - 1, k) for k, op in enumerate(operands) for p in _phrase_positions(seq, op))
    limit = sum(len(op) for op in operands) + distance - 1
    need = len(operands)
    have = {}
    start = 0
    for end_index, (p, e, k) in enumerate(events):
        have[k] = have.get(k, 0) + 1
        while len(have) == need:
            span_end = max(ev[1] for ev in events[start:end_index + 1])
            if span_end - events[start][0] + 1 <= limit:
                return True
            first = events[start][2]
            have[first] -= 1
            if not have[first]:
                del have[first]
            start += 1
    return False


class Reference:
    def __init__(self, docs, now=None):
        self.docs = docs
        self.now = int(now if now is not None else time.time())
        self.stem = Stemmer()
        self._indexes = {}

    @classmethod
    def from_paths(cls, paths, now=None, jobs=None):
        """Every file of each Maildir (cur/ and new/), .eml folder or file, in sorted order;
        parsed by `jobs` processes (default: one per CPU)."""
        files = []
        for path in map(pathlib.Path, paths):
            if path.is_file():
                files.append(path)
            elif (path / "cur").is_dir() or (path / "new").is_dir():
                for sub in ("cur", "new"):
                    if (path / sub).is_dir():
                        files += sorted(p for p in (path / sub).iterdir() if p.is_file())
            else:
                files += sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith("."))
        workers = max(1, min(jobs or os.cpu_count() or 1, len(files) // 200))
        if workers == 1:
            docs = [_load(file) for file in files]
        else:
            import multiprocessing
            with multiprocessing.get_context("fork").Pool(workers) as pool:
                docs = pool.map(_load, files, chunksize=64)
        return cls(docs, now=now)

    # -- results ------------------------------------------------------------------------------

    def match(self, query, variant=None):
        """The Docs a query matches (every file, byte-identical copies included)."""
        node = Parser(query, now=self.now).parse()
        indices = self._eval(node, variant)
        return [self.docs[i] for i in sorted(indices)]

    def count(self, query, variant=None):
        """Distinct messages matched: byte-identical files are one archived message."""
        return len({doc.sha256 for doc in self.match(query, variant)})

    def robust(self, query):
        """{None: default count, variant: count for each variant that changes it}."""
        counts = {None: self.count(query)}
        for variant in VARIANT_NAMES:
            value = self.count(query, variant)
            if value != counts[None]:
                counts[variant] = value
        return counts

    def distinct(self):
        return len({doc.sha256 for doc in self.docs})

    # -- indexes ------------------------------------------------------------------------------

    def _index(self, field, variant):
        """(index, docs it covers): the default index covers every doc; a variant's only the docs
        whose text the variant changes."""
        key = (field, variant)
        if key not in self._indexes:
            if variant is None:
                sequences = {i: doc.texts[field] for i, doc in enumerate(self.docs)}
            else:
                sequences = {i: doc.alt_texts[variant][field] for i, doc in enumerate(self.docs)
                             if variant in doc.alt_texts}
            extra = None
            if field == "filename":
                extra = {i: doc.filenames for i, doc in enumerate(self.docs) if i in sequences and doc.filenames}
            self._indexes[key] = (FieldIndex(sequences, self.stem, extra), set(sequences))
        return self._indexes[key]

    def _field_eval(self, field, variant, action):
        """action(FieldIndex) -> docs, under a variant: the default result outside the docs the
        variant changes, the variant's own inside."""
        index, _ = self._index(field, None)
        result = action(index)
        if variant is not None:
            alt, covered = self._index(field, variant)
            if covered:
                result = (result - covered) | action(alt)
        return result

    # -- evaluation ---------------------------------------------------------------------------

    def _all(self):
        return set(range(len(self.docs)))

    def _eval(self, node, variant):
        kind = node[0]
        if kind == "all":
            return self._all()
        if kind == "and":
            result = None
            for child in node[1]:
                if child[0] != "not":
                    part = self._eval(child, variant)
                    result = part if result is None else result & part
            if result is None:
                result = self._all()
            for child in node[1]:
                if child[0] == "not":
                    result = result - self._eval(child[1], variant)
            return result
        if kind == "or":
            result = set()
            for child in node[1]:
                result |= self._eval(child, variant)
            return result
        if kind == "not":
            return self._all() - self._eval(node[1], variant)
        if kind == "near":
            _, fields, operands, distance = node
            result = set()
            for field in fields:
                if field != "participant":  # display names: not modelled for NEAR
                    result |= self._field_eval(field, variant, lambda ix: ix.near(operands, distance))
            return result
        if kind == "text":
            _, fields, mode, value = node
            result = set()
            for field in fields:
                if field == "participant":
                    result |= self._address_docs(ADDRESS_FIELDS, "free-" + mode, value, variant)
                    continue
                action = {"stem": lambda ix: ix.stemmed(value), "exact": lambda ix: ix.exact(value),
                          "prefix": lambda ix: ix.prefix(value), "phrase": lambda ix: ix.phrase(value)}[mode]
                result |= self._field_eval(field, variant, action)
            return result
        if kind == "address":
            _, fields, mode, value = node
            return self._address_docs(fields, mode, value, variant)
        if kind == "pred":
            return {i for i, doc in enumerate(self.docs) if node[1](doc, variant)}
        raise AssertionError(node)

    def _address_docs(self, fields, mode, value, variant):
        return {i for i, doc in enumerate(self.docs)
                if any(_address_matches(a, mode, value, variant, self.stem) for f in fields for a in doc.addresses[f])}


def _find_phrase(seq, phrase):
    return bool(_phrase_positions(seq, phrase, first=True))


def _phrase_positions(seq, phrase, first=False):
    n = len(phrase)
    if n == 0:
        return []
    result = []
    head = phrase[0]
    for i, word in enumerate(seq):
        if word == head and seq[i:i + n] == phrase:
            result.append(i)
            if first:
                break
    return result


def _address_matches(address, mode, value, variant, stem):
    """docs/search.md: an address field holds the address, its local part and the local part's
    words, the domain and its parents, and the display name's words."""
    if mode == "address":
        return address.address == value
    if mode == "domain":
        return value in address.domains
    if mode in ("word", "free-exact", "free-stem"):
        if value == address.local or value in address.local_words or value in address.name_words:
            return True
        if mode == "free-stem" and variant == "participant-stem":
            wanted = stem(value)
            return wanted is not None and any(stem(w) == wanted for w in address.name_words)
        return False
    if mode in ("prefix", "free-prefix"):
        terms = [address.address, address.local] + address.local_words + address.name_words + address.domains
        return any(term.startswith(value) for term in terms if term)
    if mode in ("phrase", "free-phrase"):
        return _find_phrase(address.name_words, value) or (len(value) > 1 and _find_phrase(address.local_words, value))
    raise AssertionError(mode)


# ---------------------------------------------------------------------------------------------
# Query parser: the grammar of docs/search.md (a subset of its fields)

TEXT_FIELD_NAMES = {"body", "subject", "attachment", "filename"}
ADDRESS_FIELD_NAMES = {"from", "to", "cc", "bcc", "participant"}
ALL_FIELDS = ["body", "subject", "attachment", "filename", "from", "to", "cc", "bcc", "participant", "domain", "id",
              "thread", "direction", "method", "policy", "tag", "hold", "retention", "type", "has", "is", "duplicate",
              "date", "size"]
_UNITS = {None: 1, "b": 1, "k": 1024, "kb": 1024, "m": 1024 ** 2, "mb": 1024 ** 2, "g": 1024 ** 3, "gb": 1024 ** 3}


class Parser:
    """Recursive descent over docs/search.md's grammar. Produces tuples:
    ("all",), ("and", [..]), ("or", [..]), ("not", x), ("near", a, b, n),
    ("text", fields, mode, value), ("address", fields, mode, value), ("pred", fn)."""

    def __init__(self, text, now=None):
        self.text = text
        self.pos = 0
        self.now = now

    # -- lexing helpers ---------------------------------------------------------------------
    def _ws(self):
        while self.pos < len(self.text) and self.text[self.pos].isspace():
            self.pos += 1

    def _peek_keyword(self):
        """The operator at pos (AND, OR, NOT, NEAR, NEAR/n, W/n) or None."""
        self._ws()
        match = re.compile(r"(AND|OR|NOT|NEAR/\d+|W/\d+|NEAR)(?=[\s()\"]|$)").match(self.text, self.pos)
        return match.group(1) if match else None

    def _error(self, message, column=None):
        raise QueryError(message, (column if column is not None else self.pos) + 1)

    def parse(self):
        self._ws()
        if self.text.strip() == "":
            self._error("empty query")
        node = self._or()
        self._ws()
        if self.pos < len(self.text):
            if self.text[self.pos] == ")":
                self._error("')' without a '('")
            self._error("unexpected text")
        return node

    def _or(self, field=None):
        children = [self._and(field)]
        while self._peek_keyword() == "OR":
            self.pos += 2
            children.append(self._and(field))
        return children[0] if len(children) == 1 else ("or", children)

    def _and(self, field):
        children = [self._unary(field)]
        while True:
            self._ws()
            if self.pos >= len(self.text) or self.text[self.pos] == ")":
                break
            keyword = self._peek_keyword()
            if keyword == "OR":
                break
            if keyword == "AND":
                self.pos += 3
            children.append(self._unary(field))
        return children[0] if len(children) == 1 else ("and", children)

    def _unary(self, field):
        self._ws()
        if self._peek_keyword() == "NOT":
            self.pos += 3
            return ("not", self._unary(field))
        if self.pos < len(self.text) and self.text[self.pos] == "-":
            self.pos += 1
            return ("not", self._unary(field))
        return self._near(field)

    def _near(self, field):
        """A NEAR/W chain is one group: ("near", fields, [operand word lists], largest n). The
        operands are exact words (stems have no positions) and all search one field: a field
        written on one of them applies to all."""
        first = self._primary(field)
        operands, distances = [first], []
        while True:
            keyword = self._peek_keyword()
            if not keyword or not (keyword.startswith("NEAR") or keyword.startswith("W/")):
                break
            at = self.pos
            self.pos += len(keyword)
            distance = int(keyword.split("/")[1]) if "/" in keyword else 10
            if not 1 <= distance <= 1000:
                self._error("NEAR/n needs n from 1 to 1000", at)
            operands.append(self._primary(field))
            distances.append(distance)
        if not distances:
            return first
        fields = None
        for operand in operands:
            if operand[0] != "text" or operand[2] not in ("exact", "stem", "phrase"):
                self._error("a NEAR operand must be a word or a phrase")
            if operand[1] != FREE_TEXT_FIELDS:
                if fields is not None and fields != operand[1]:
                    self._error("NEAR operands must search one field")
                fields = operand[1]
        words_of = [op[3] if isinstance(op[3], list) else [op[3]] for op in operands]
        return ("near", fields or FREE_TEXT_FIELDS, words_of, max(distances))

    def _primary(self, field):
        self._ws()
        if self.pos >= len(self.text):
            self._error("a term expected")
        c = self.text[self.pos]
        if c == "(":
            start = self.pos
            self.pos += 1
            node = self._or(field)
            self._ws()
            if self.pos >= len(self.text) or self.text[self.pos] != ")":
                self._error(f"')' expected to close the '(' at column {start + 1}")
            self.pos += 1
            return node
        if c == ")":
            self._error("a term expected")
        if c == '"':
            return self._value(field or None, self._quoted())
        start = self.pos
        # "a word with a colon after letters is taken as a field"; names in any case; a field
        # written inside field:( ... ) wins.
        match = re.compile(r"([A-Za-z]+):").match(self.text, self.pos)
        if match:
            name = match.group(1).lower()
            if name not in ALL_FIELDS:
                self._error(f"unknown field '{name}'", start)
            self.pos = match.end()
            if self.pos < len(self.text) and self.text[self.pos] == "(":
                open_at = self.pos
                self.pos += 1
                node = self._or(name)
                self._ws()
                if self.pos >= len(self.text) or self.text[self.pos] != ")":
                    self._error(f"')' expected to close the '(' at column {open_at + 1}")
                self.pos += 1
                return node
            if self.pos < len(self.text) and self.text[self.pos] == '"':
                return self._value(name, self._quoted())
            value = self._bare()
            if not value:
                self._error(f"'{name}:' needs a value")
            return self._value(name, ("bare", value), start)
        value = self._bare()
        if value == "*":
            return ("all",)
        return self._value(field, ("bare", value), start)

    def _quoted(self):
        start = self.pos
        end = self.text.find('"', self.pos + 1)
        if end < 0:
            self._error("unterminated '\"'", start)
        self.pos = end + 1
        return ("quoted", self.text[start + 1:end])

    def _bare(self):
        match = re.compile(r'[^\s()"]+').match(self.text, self.pos)
        if not match:
            return ""
        self.pos = match.end()
        return match.group(0)

    # -- values -------------------------------------------------------------------------------
    def _value(self, field, value, start=None):
        kind, raw = value
        if field is None or field in TEXT_FIELD_NAMES:
            fields = tuple(FREE_TEXT_FIELDS) if field is None else (field,)
            return self._text(fields, kind, raw)
        if field in ADDRESS_FIELD_NAMES:
            fields = ADDRESS_FIELDS if field == "participant" else (field,)
            folded = fold(raw)
            if kind == "quoted":
                tokens = words(folded)
                if "@" in folded or (len(tokens) == 1 and "." in folded):
                    kind = "bare"  # from:"alice@corp.example": still an address
                else:
                    return ("address", fields, "phrase", tokens)
            if folded.startswith("<") and folded.endswith(">"):
                folded = folded[1:-1]
            folded = folded.removeprefix("@")
            if folded.endswith("*"):
                if len(folded) < 3:
                    self._error("a wildcard needs at least 2 characters", start)
                return ("address", fields, "prefix", folded[:-1])
            if "@" in folded:
                return ("address", fields, "address", folded)
            if "." in folded:
                return ("address", fields, "domain", folded)
            return ("address", fields, "word", folded)
        if field == "domain":
            domain = fold(raw)
            return ("pred", lambda doc, v: any(domain in a.domains for f in ADDRESS_FIELDS for a in doc.addresses[f]))
        if field == "id":
            value = raw[1:-1] if raw.startswith("<") and raw.endswith(">") else raw
            if kind == "bare" and value.endswith("*") and len(value) > 2:
                return ("pred", lambda doc, v: doc.message_id.startswith(value[:-1]))
            return ("pred", lambda doc, v: doc.message_id == value)
        if field == "has":
            what = fold(raw)
            if what != "attachment":
                raise QueryError(f"the reference does not model has:{what}", (start or 0) + 1)
            return ("pred", lambda doc, v: doc.has_attachment)
        if field == "type":
            wanted = fold(raw)
            return ("pred", lambda doc, v: wanted in doc.attachment_types)
        if field == "is":
            what = fold(raw)
            tests = {"reply": lambda doc, v: doc.reply, "signed": lambda doc, v: doc.signed,
                     "encrypted": lambda doc, v: doc.encrypted}
            if what not in tests:
                raise QueryError(f"the reference does not model is:{what}", (start or 0) + 1)
            return ("pred", tests[what])
        if field == "direction":
            what = fold(raw)
            return ("pred", lambda doc, v: what == "import")
        if field == "date":
            return self._date(raw, start)
        if field == "size":
            return self._size(raw, start)
        raise QueryError(f"the reference does not model {field}:", (start or 0) + 1)

    def _text(self, fields, kind, raw):
        folded = fold(raw)
        if kind == "bare" and folded.endswith("*") and len(folded) > 1:
            if len(folded) < 3:
                self._error("a wildcard needs at least 2 characters")
            if fields == ("filename",):
                return ("text", fields, "prefix", folded[:-1])  # whole file names, and words
            stem = words(folded[:-1])
            if len(stem) != 1:
                self._error("a wildcard needs one word")
            return ("text", fields, "prefix", stem[0])
        tokens = words(folded)
        if not tokens:
            self._error("no word in the value")
        if kind == "quoted":
            return ("text", fields, "exact", tokens[0]) if len(tokens) == 1 else ("text", fields, "phrase", tokens)
        if len(tokens) > 1:  # "e-mail": a phrase of its words
            return ("text", fields, "phrase", tokens)
        return ("text", fields, "stem", tokens[0])

    def _date(self, raw, start):
        now = self.now if self.now is not None else int(time.time())
        low_text, dots, high_text = raw.partition("..")

        def bound(text, high, variant):
            if not text:
                return None
            rel = re.fullmatch(r"(\d{1,4})([dwmy])", text)
            if rel:
                n, unit = int(rel.group(1)), rel.group(2)
                base = datetime.datetime.fromtimestamp(now, datetime.timezone.utc)
                if unit == "d":
                    return now - n * 86400
                if unit == "w":
                    return now - n * 7 * 86400
                # Calendar months and years, same time of day; a day past the month's end is
                # the month's last day ("1 month before March 31 is the end of February").
                months = n if unit == "m" else 12 * n
                year, month = divmod(base.year * 12 + base.month - 1 - months, 12)
                day = min(base.day, calendar.monthrange(year, month + 1)[1])
                return int(base.replace(year=year, month=month + 1, day=day).timestamp())
            parts = re.fullmatch(r"(\d{4})(?:-(\d{2})(?:-(\d{2}))?)?", text)
            if not parts:
                raise QueryError("'date:' needs YYYY, YYYY-MM, YYYY-MM-DD, a relative Nd/Nw/Nm/Ny or a range A..B",
                                 (start or 0) + 1)
            year = int(parts.group(1))
            month = int(parts.group(2) or 1)
            day = int(parts.group(3) or 1)
            try:
                datetime.date(year, month, day)
            except ValueError:
                raise QueryError(f"no such date: {text}", (start or 0) + 1) from None
            begin = calendar.timegm((year, month, day, 0, 0, 0))
            if not high:
                return begin
            if parts.group(3):
                return begin + 86400 - 1
            if parts.group(2):
                return calendar.timegm((year + (month == 12), month % 12 + 1, 1, 0, 0, 0)) - 1
            return calendar.timegm((year + 1, 1, 1, 0, 0, 0)) - 1

        def bounds(variant):
            if dots:
                return bound(low_text, False, variant), bound(high_text, True, variant)
            if re.fullmatch(r"\d+[dwmy]", raw):
                return bound(raw, False, variant), None  # alone, 30d means 30d..
            return bound(raw, False, variant), bound(raw, True, variant)

        cache = {}

        def test(doc, variant):
            if variant not in cache:
                cache[variant] = bounds(variant)
            low, high = cache[variant]
            return (low is None or doc.date >= low) and (high is None or doc.date <= high)

        if dots and not low_text and not high_text:
            raise QueryError("'date:' needs YYYY, YYYY-MM, YYYY-MM-DD, a relative Nd/Nw/Nm/Ny or a range A..B",
                             (start or 0) + 1)
        low, high = bounds(None)  # syntax check now
        if low is not None and high is not None and high < low:
            raise QueryError("the range ends before it starts", (start or 0) + 1)
        return ("pred", test)

    def _size(self, raw, start):
        """docs/search.md: B, KB/K, MB/M, GB/G (powers of 1024), any case, decimals allowed;
        `>1MB` is at least 1 MB + 1 byte; size:N is a whole number of bytes. A decimal that does
        not give whole bytes is rounded up for a lower bound and down for an upper bound."""
        import fractions
        import math

        def number(text):
            match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*(kb|k|mb|m|gb|g|b)?", text.strip(), re.I)
            if not match:
                raise QueryError("bad size", (start or 0) + 1)
            return fractions.Fraction(match.group(1)) * _UNITS[(match.group(2) or "").lower() or None]

        op = re.match(r"(>=|<=|>|<)", raw)
        if op:
            n = number(raw[op.end():])
            low = {">": math.floor(n) + 1, ">=": math.ceil(n)}.get(op.group(1))
            high = {"<": math.ceil(n) - 1, "<=": math.floor(n)}.get(op.group(1))
        elif ".." in raw:
            low_text, _, high_text = raw.partition("..")
            if not low_text and not high_text:
                raise QueryError("bad size", (start or 0) + 1)
            low = math.ceil(number(low_text)) if low_text else None
            high = math.floor(number(high_text)) if high_text else None
            if low is not None and high is not None and high < low:
                raise QueryError("the range ends before it starts", (start or 0) + 1)
        else:
            n = number(raw)
            if n.denominator != 1:
                raise QueryError("size:N must be a whole number of bytes", (start or 0) + 1)
            low = high = int(n)
        return ("pred", lambda doc, v: (low is None or doc.size >= low) and (high is None or doc.size <= high))


# ---------------------------------------------------------------------------------------------
# Validation against notmuch (where the semantics agree)

# (reference query, notmuch query). notmuch: from:/to: match name and address words as phrases
# (to: covers To, Cc and Bcc), subject: is not stemmed, body: is, quoted words are exact, dates
# are in local time (TZ=UTC is set), duplicates by Message-ID are one message, and it does not
# index the text of parts with Content-Disposition: attachment. Last run (both corpora): 46 of 47
# equal; subject:"fast commit" differs by 2: two subjects split into two B-encoded words, the
# first padded, which GMime (notmuch's parser) decodes without the second half; postvault decodes
# such headers word by word itself (search/extract.cpp) and agrees with the reference.
NOTMUCH_PAIRS = [
    ("from:suse.cz", "from:suse.cz"),
    ("from:oracle.com", "from:oracle.com"),
    ("from:mit.edu", "from:mit.edu"),
    ("from:redhat.com", "from:redhat.com"),
    ("from:tytso@mit.edu", "from:tytso@mit.edu"),
    ("from:jack@suse.cz", "from:jack@suse.cz"),
    ('from:"Jan Kara"', 'from:"Jan Kara"'),
    ("to:kernel.org OR cc:kernel.org OR bcc:kernel.org", "to:kernel.org"),
    ("to:huawei.com OR cc:huawei.com OR bcc:huawei.com", "to:huawei.com"),
    ("to:tytso@mit.edu OR cc:tytso@mit.edu", "to:tytso@mit.edu"),
    # notmuch's subject: (a field processor) does not stem: compare with exact words.
    ('subject:"ext4"', "subject:ext4"),
    ('subject:"journal"', "subject:journal"),
    ('subject:"regression"', "subject:regression"),
    ('subject:"fast commit"', 'subject:"fast commit"'),
    ('subject:"mount"', "subject:mount"),
    ('subject:"patch" subject:"fix"', "subject:patch and subject:fix"),
    ('subject:("crash" OR "deadlock")', "subject:crash or subject:deadlock"),
    ('subject:"mount" NOT subject:"ext4"', "subject:mount and not subject:ext4"),
    # body: is stemmed in both.
    ("body:deadlock", "body:deadlock"),
    ("body:fsync", "body:fsync"),
    ("body:mounted", "body:mounted"),
    ('body:"data loss"', 'body:"data loss"'),
    ('body:"deadlock"', 'body:"deadlock"'),
    ("body:syzbot", "body:syzbot"),
    ("body:deadlock NEAR/5 inode", "body:deadlock NEAR/5 body:inode"),
    ("body:(fsync OR fdatasync) body:regression", "(body:fsync or body:fdatasync) and body:regression"),
    ("date:2019", "date:2019-01-01..2019-12-31"),
    ("date:2020-03..2020-06", "date:2020-03-01..2020-06-30"),
    ("date:2021-01-15", "date:2021-01-15..2021-01-15"),
    ("date:2020-02-29", "date:2020-02-29..2020-02-29"),
    ("date:..2019-06-30", "date:..2019-06-30"),
    ("date:2021-06..", "date:2021-06-01.."),
    ("id:20190428202154.GE7441@quack2", "id:20190428202154.GE7441@quack2"),
    ('from:suse.cz date:2020 subject:"ext4"', "from:suse.cz and date:2020-01-01..2020-12-31 and subject:ext4"),
    ('from:suse.cz NOT subject:"ext4"', "from:suse.cz and not subject:ext4"),
    ("*", "*"),
]

# The same on usrp-dev (HTML mail): notmuch turns text/html into text itself (tags dropped).
NOTMUCH_PAIRS_USRP = [
    ("from:ettus.com", "from:ettus.com"),
    ("to:lists.ettus.com OR cc:lists.ettus.com", "to:lists.ettus.com"),
    ('subject:"b210"', "subject:b210"),
    ('subject:"x310" NOT subject:"re"', "subject:x310 and not subject:re"),
    ("body:fpga", "body:fpga"),
    ("body:overflow", "body:overflow"),
    ('body:"sample rate"', 'body:"sample rate"'),
    ("body:gnuradio", "body:gnuradio"),
    ("body:timeout NEAR/3 recv", "body:timeout NEAR/3 body:recv"),
    ("date:2020-01..2020-03", "date:2020-01-01..2020-03-31"),
    ("*", "*"),
]


def notmuch_counts(maildir, queries):
    """Counts queries with notmuch, first building its database in MAILDIR/.notmuch if missing."""
    with tempfile.TemporaryDirectory(prefix="notmuch-ref-") as folder:
        config = pathlib.Path(folder) / "config"
        config.write_text(f"[database]\npath={maildir}\n[new]\ntags=\nignore=\n[search]\nexclude_tags=\n"
                          "[maildir]\nsynchronize_flags=false\n")
        env = dict(os.environ, NOTMUCH_CONFIG=str(config), TZ="UTC")
        if not (pathlib.Path(maildir) / ".notmuch").exists():
            subprocess.run(["notmuch", "new", "--quiet"], env=env, check=True)
        counts = []
        for query in queries:
            out = subprocess.run(["notmuch", "count", "--", query], env=env, check=True, capture_output=True,
                                 text=True).stdout
            counts.append(int(out.split()[-1]))
    return counts


def validate_notmuch(ref, maildir, pairs=None):
    """Prints, for NOTMUCH_PAIRS (or NOTMUCH_PAIRS_USRP for a Maildir named usrp-dev), the
    reference's count (in distinct Message-IDs, as notmuch counts) next to notmuch's;
    returns [(ref query, ref, notmuch)]."""
    if pairs is None:
        pairs = NOTMUCH_PAIRS_USRP if os.path.basename(os.path.normpath(maildir)) == "usrp-dev" else NOTMUCH_PAIRS
    mine = []
    for query, _ in pairs:
        matched = ref.match(query)
        mine.append(len({doc.message_id or doc.path for doc in matched}))
    theirs = notmuch_counts(maildir, [q for _, q in pairs])
    rows = []
    for (query, nm_query), a, b in zip(pairs, mine, theirs):
        flag = "same" if a == b else f"DIFF {a - b:+d}"
        print(f"{a:6d} {b:6d}  {flag:9s}  {query}   ||   {nm_query}")
        rows.append((query, a, b))
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("paths", nargs="+", help="Maildirs, .eml folders or files")
    parser.add_argument("-q", "--query", action="append", default=[], help="a query to count (repeatable)")
    parser.add_argument("--validate-notmuch", action="store_true",
                        help="compare NOTMUCH_PAIRS with notmuch on the (single) Maildir given")
    parser.add_argument("--files", action="store_true", help="list the matching files too")
    args = parser.parse_args()
    started = time.monotonic()
    ref = Reference.from_paths(args.paths)
    print(f"{len(ref.docs)} files, {ref.distinct()} distinct, parsed in {time.monotonic() - started:.1f} s",
          file=sys.stderr)
    for query in args.query:
        try:
            counts = ref.robust(query)
        except QueryError as error:
            print(f"{query}: {error}")
            continue
        extra = "" if len(counts) == 1 else "  NOT ROBUST: " + ", ".join(
            f"{k}={v}" for k, v in counts.items() if k)
        print(f"{counts[None]:6d}  {query}{extra}")
        if args.files:
            for doc in ref.match(query):
                print("   ", doc.path)
    if args.validate_notmuch:
        validate_notmuch(ref, os.path.abspath(args.paths[0]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
