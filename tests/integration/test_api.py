"""The HTTPS audit API, through the real binary and real clients (Python's http.client and ssl,
and curl): every route with every role and token state, reviewer scopes, search and its
pagination against the command line, message reads against `archive get` and the bytes put in,
legal holds (including mail archived after the hold), the audit record of every call, bad
input and connection limits (slowloris, max_connections, header/body limits, plain HTTP to the
TLS port), /metrics, /integrity, /health and tokens made over the API.

One server per class, shared by its tests (starting one and importing the corpus is the slow
part); the tests only add to it (holds, tokens, mail) and compute what they compare at the time.
The corpus is crafted here (custodian and non-custodian mail, attachments with non-ASCII names)
plus a slice of ../shared/corpus/ext4-dev.tar.zst when it is there.
"""

import base64
import calendar
import hashlib
import http.client
import json
import os
import pathlib
import re
import select
import shutil
import socket
import ssl
import subprocess
import tempfile
import threading
import time
import unittest
import urllib.parse
import warnings

from harness import BINARY, SOURCE_DIR, Postvault, PostvaultTestCase, free_port, pdf, wait_for_port, wait_until

CORPUS = SOURCE_DIR.parent / "shared" / "corpus" / "ext4-dev.tar.zst"
CORPUS_SLICE = 150
API = "/api/v1"
WKD = "/.well-known/openpgpkey/"
CUSTODIAN = "cust@corp.example"
REVIEW_DOMAIN = "partner.example"


# --- test mail --------------------------------------------------------------------------------



PDF_NAME = "Überblick Q1.pdf"              # RFC 2231 encoded in the message
PDF_BYTES = pdf("wombat quarterly figures")
TEXT_NAME = "résumé-ñ.txt"                 # RFC 2047 encoded in the message
TEXT_BYTES = "Zusammenfassung: Größe 42 — naïve café\r\nzweite Zeile ☃\r\n".encode("utf-8")


def message(message_id, subject, body, sender, to, cc=None, date="Tue, 03 Mar 2020 09:00:00 +0000",
            attachments=(), references=()):
    """Bytes of a message; attachments are (content-type line, content-disposition line, bytes)."""
    headers = [f"From: {sender}", f"To: {to}"] + ([f"Cc: {cc}"] if cc else []) + [
        f"Subject: {subject}", f"Date: {date}", f"Message-ID: <{message_id}>", "MIME-Version: 1.0"]
    if references:
        headers += [f"In-Reply-To: <{references[-1]}>", "References: " + " ".join(f"<{r}>" for r in references)]
    if not attachments:
        headers += ["Content-Type: text/plain; charset=utf-8", "Content-Transfer-Encoding: 8bit"]
        return ("\r\n".join(headers) + "\r\n\r\n" + body + "\r\n").encode()
    boundary = "=_pv_boundary_42"
    parts = [f"--{boundary}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
             f"{body}\r\n"]
    for content_type, disposition, data in attachments:
        encoded = base64.encodebytes(data).decode().replace("\n", "\r\n")
        parts.append(f"--{boundary}\r\nContent-Type: {content_type}\r\nContent-Disposition: {disposition}\r\n"
                     f"Content-Transfer-Encoding: base64\r\n\r\n{encoded}")
    headers.append(f'Content-Type: multipart/mixed; boundary="{boundary}"')
    return ("\r\n".join(headers) + "\r\n\r\n" + "".join(parts) + f"--{boundary}--\r\n").encode()


def rfc2231(name):
    return "UTF-8''" + urllib.parse.quote(name, safe="")


def rfc2047(name):
    return "=?UTF-8?B?" + base64.b64encode(name.encode()).decode() + "?="


CRAFTED = {
    # In the custodian's scope (From, To, Cc), and A is also in the domain scope (To partner.example).
    "A": message("att-1@pv.test", "quarterly wombat figures", "Figures attached, Grüße.",
                 "Carla Custodian <cust@corp.example>", "Bob <bob@partner.example>",
                 attachments=[(f"application/pdf; name*={rfc2231(PDF_NAME)}",
                               f"attachment; filename*={rfc2231(PDF_NAME)}", PDF_BYTES),
                              (f'text/plain; charset=utf-8; name="{rfc2047(TEXT_NAME)}"',
                               f'attachment; filename="{rfc2047(TEXT_NAME)}"', TEXT_BYTES)]),
    "B": message("to-cust@pv.test", "question for carla", "Can you send the figures?",
                 "Olaf <olaf@outside.example>", "cust@corp.example", date="Wed, 04 Mar 2020 08:00:00 +0000"),
    # A reply to B that leaves the custodian out: B's thread, outside the scope.
    "B2": message("to-cust-reply@pv.test", "Re: question for carla", "Forwarding to zed without Carla.",
                  "Olaf <olaf@outside.example>", "zed@elsewhere.example", date="Wed, 04 Mar 2020 09:00:00 +0000",
                  references=["to-cust@pv.test"]),
    "C": message("cc-cust@pv.test", "fyi", "Copying Carla on this.", "ann@other.example", "ben@other.example",
                 cc="Carla <Cust@CORP.example>", date="Thu, 05 Mar 2020 08:00:00 +0000"),
    # Out of every scope, with the same word and an attachment.
    "D": message("outside@pv.test", "wombat elsewhere", "wombat sightings report", "zed@elsewhere.example",
                 "yan@elsewhere.example", date="Fri, 06 Mar 2020 08:00:00 +0000",
                 attachments=[("text/plain; charset=utf-8", 'attachment; filename="notes.txt"', b"secret notes\n")]),
    # Near misses that a sloppy scope would let through.
    "F": message("lookalike-domain@pv.test", "lookalike", "not the custodian", "cust@corp.example.org",
                 "nobody@elsewhere.example", date="Sat, 07 Mar 2020 08:00:00 +0000"),
    "G": message("lookalike-name@pv.test", "lookalike name", "display name only",
                 '"Cust Corp Example" <other@elsewhere.example>', "nobody@elsewhere.example",
                 date="Sun, 08 Mar 2020 08:00:00 +0000"),
    "H": message("notpartner@pv.test", "not the partner", "a domain that ends like it",
                 "spoof@notpartner.example", "yan@elsewhere.example", date="Mon, 09 Mar 2020 08:00:00 +0000"),
    # In the domain scope only.
    "E": message("partner@pv.test", "partner news", "from the partner", "q@partner.example", "r@third.example",
                 date="Tue, 10 Mar 2020 08:00:00 +0000"),
    "I": message("subpartner@pv.test", "subdomain", "from a subdomain", "a@sub.partner.example",
                 "r@third.example", date="Wed, 11 Mar 2020 08:00:00 +0000"),
    # Matched by a query hold; two more arrive after the hold.
    "N1": message("nightingale-1@pv.test", "Project Nightingale kickoff", "kickoff notes", "pm@third.example",
                  "team@third.example", date="Thu, 12 Mar 2020 08:00:00 +0000"),
    "N2": message("nightingale-2@pv.test", "Project Nightingale budget", "budget notes", "pm@third.example",
                  "team@third.example", date="Fri, 13 Mar 2020 08:00:00 +0000"),
    "N3": message("nightingale-3@pv.test", "Re: Project Nightingale budget", "agreed", "cfo@third.example",
                  "pm@third.example", date="Sat, 14 Mar 2020 08:00:00 +0000"),
}
LATER = {
    "N4": message("nightingale-4@pv.test", "Project Nightingale status", "status", "pm@third.example",
                  "team@third.example", date="Mon, 16 Mar 2020 08:00:00 +0000"),
    "N5": message("nightingale-5@pv.test", "Project Nightingale close", "closing", "pm@third.example",
                  "team@third.example", date="Tue, 17 Mar 2020 08:00:00 +0000"),
    "K": message("cust-later@pv.test", "later from carla", "sent after the hold", "cust@corp.example",
                 "ann@other.example", date="Wed, 18 Mar 2020 08:00:00 +0000"),
}


# --- HTTP clients -----------------------------------------------------------------------------

class Response:
    def __init__(self, status, headers, body):
        self.status = status
        self.headers = {k.lower(): v for k, v in headers}
        self.body = body

    def json(self):
        return json.loads(self.body)

    def __repr__(self):
        return f"<{self.status} {self.body[:300]!r}>"


class Api:
    """A client of one server's API over HTTPS (Python's http.client; the certificate is checked)."""

    def __init__(self, port, cafile):
        self.port = port
        self.cafile = str(cafile)
        self.context = ssl.create_default_context(cafile=self.cafile)
        self.context.check_hostname = False  # the certificate names postvault.test; curl checks the name

    def connection(self, timeout=30):
        return http.client.HTTPSConnection("127.0.0.1", self.port, context=self.context, timeout=timeout)

    def request(self, method, path, token=None, body=None, headers=None, content_type="application/json"):
        head = dict(headers or {})
        if token is not None:
            head["Authorization"] = "Bearer " + token
        if body is not None:
            if not isinstance(body, (str, bytes)):
                body = json.dumps(body)
            if content_type and "Content-Type" not in head:
                head["Content-Type"] = content_type
        connection = self.connection()
        try:
            connection.request(method, path, body=body, headers=head)
            response = connection.getresponse()
            return Response(response.status, response.getheaders(), response.read())
        finally:
            connection.close()

    def get(self, path, token=None, **kw):
        return self.request("GET", path, token, **kw)

    def post(self, path, token, body, **kw):
        return self.request("POST", path, token, body=body, **kw)

    def tls_socket(self, timeout=10):
        raw = socket.create_connection(("127.0.0.1", self.port), timeout=timeout)
        return self.context.wrap_socket(raw, server_hostname="postvault.test")


def read_response(sock):
    """(status, {header: value}, body) of one HTTP/1.1 response with a Content-Length."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed before a full response header; got " + repr(data))
        data += chunk
    head, rest = data.split(b"\r\n\r\n", 1)
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        name, value = line.split(":", 1)
        headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length", "0"))
    while len(rest) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        rest += chunk
    return status, headers, rest[:length]


def closed_by_peer(sock, timeout):
    """True when the peer closes the connection within `timeout` seconds (bytes before are skipped)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            if not sock.recv(65536):
                return True
        except (ConnectionResetError, BrokenPipeError, ssl.SSLEOFError, ssl.SSLZeroReturnError):
            return True
        except ssl.SSLError:
            return True
        except (socket.timeout, TimeoutError):
            return False
    return False


def error_of(response):
    body = response.json()
    assert set(body) == {"error"} and {"code", "message"} <= set(body["error"]), response
    return body["error"]


# --- the shared server ------------------------------------------------------------------------

class ApiServerCase(PostvaultTestCase):
    """One server per class with an API listener, the crafted mail (+ a corpus slice) and tokens."""

    API_CONFIG = ""
    IMPORT_CORPUS = True

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        if not os.path.exists(BINARY):
            raise unittest.SkipTest(f"postvault binary not found at {BINARY}")
        warnings.simplefilter("ignore", ResourceWarning)
        cls.class_tmp = pathlib.Path(tempfile.mkdtemp(prefix="postvault-api-"))
        cls.addClassCleanup(lambda: None if os.environ.get("POSTVAULT_KEEP_TMP")
                            else shutil.rmtree(cls.class_tmp, ignore_errors=True))
        cls.api_port = free_port()
        cls.pv = Postvault(cls.class_tmp / "pv", extra=f'[api]\nlisten = "127.0.0.1:{cls.api_port}"\n'
                                                        + cls.API_CONFIG)
        mail = cls.class_tmp / "mail"
        mail.mkdir()
        for name, data in CRAFTED.items():
            (mail / f"{name}.eml").write_bytes(data)
        cls.pv.archive("import", "--format", "eml", mail)
        cls.corpus_imported = 0
        if cls.IMPORT_CORPUS and CORPUS.exists():
            cls.corpus_imported = cls.import_corpus_slice()
        cls.tokens = {}
        for name, role, scope in [("adm", "admin", []), ("aud", "auditor", []), ("leg", "legal", []),
                                  ("rev", "reviewer", ["--custodian", CUSTODIAN]),
                                  ("revdom", "reviewer", ["--domain", REVIEW_DOMAIN]),
                                  ("trail", "auditor", [])]:
            cls.tokens[name] = cls.create_token(name, role, *scope)
        cls.pv.start()
        cls.addClassCleanup(cls.pv.stop)
        wait_for_port(cls.api_port, process=cls.pv.process)
        cls.api = Api(cls.api_port, cls.pv.cert)
        cls.ids = {}
        for name, data in CRAFTED.items():
            cls.ids[name] = cls.id_of(re.search(rb"Message-ID: <([^>]+)>", data).group(1).decode())

    @classmethod
    def import_corpus_slice(cls):
        listing = subprocess.run(["tar", "-I", "zstd", "-tf", str(CORPUS)], capture_output=True, text=True,
                                 check=True).stdout.splitlines()
        members = [m for m in listing if "/cur/" in m and not m.endswith("/")][:CORPUS_SLICE]
        target = cls.class_tmp / "corpus"
        target.mkdir()
        (cls.class_tmp / "members.txt").write_text("\n".join(members) + "\n")
        subprocess.run(["tar", "-I", "zstd", "-xf", str(CORPUS), "-C", str(target), "-T",
                        str(cls.class_tmp / "members.txt")], check=True)
        cls.pv.archive("import", "--format", "maildir", target / "ext4-dev")
        return len(members)

    @classmethod
    def create_token(cls, name, role, *args):
        result = subprocess.run([BINARY, "token", "create", "--config", str(cls.pv.config_path), "--name", name,
                                 "--role", role, *args], capture_output=True, text=True, timeout=60)
        if result.returncode != 0:
            raise AssertionError(f"token create {name} failed: {result.stdout}{result.stderr}")
        secret = result.stdout.strip().splitlines()[-1]
        assert secret.startswith("pvt_"), result.stdout
        return secret

    @classmethod
    def id_of(cls, message_id):
        response = cls.api.get(f"{API}/search?q=" + urllib.parse.quote(f"id:{message_id}"), cls.tokens["adm"])
        assert response.status == 200, response
        results = response.json()["results"]
        assert len(results) == 1, (message_id, results)
        return results[0]["id"]

    # helpers for the tests
    def count(self, query, token="adm"):
        response = self.api.get(f"{API}/search/count?q=" + urllib.parse.quote(query), self.tokens[token])
        self.assertEqual(response.status, 200, response)
        return response.json()["total"]

    def all_ids(self, query, token="adm", limit=1000):
        response = self.api.get(f"{API}/search?limit={limit}&q=" + urllib.parse.quote(query), self.tokens[token])
        self.assertEqual(response.status, 200, response)
        body = response.json()
        self.assertIsNone(body["next_cursor"])
        return {r["id"] for r in body["results"]}

    def cli_count(self, query):
        result = self.pv.cli("search", "--config", str(self.pv.config_path), "--count", "--", query)
        return int(result.stdout.split()[-1])

    def assertError(self, response, status, code=None, contains=None):
        self.assertEqual(response.status, status, response)
        self.assertTrue(response.headers.get("content-type", "").startswith("application/json"), response.headers)
        error = error_of(response)
        if code:
            self.assertEqual(error["code"], code, response)
        if contains:
            self.assertIn(contains, error["message"], response)
        return error

    def assertAlive(self):
        self.assertIsNone(self.pv.process.poll(), "the server exited")
        response = self.api.get(f"{API}/health")
        self.assertEqual((response.status, response.json()), (200, {"status": "ok"}))


class ApiTest(ApiServerCase):
    API_CONFIG = 'max_body_size = "64KiB"\nmax_header_size = "8KiB"\n'

    # ---- 1. every route x every role --------------------------------------------------------
    def test_every_route_with_every_role_and_token_state(self):
        api, tokens, ids = self.api, dict(self.tokens), self.ids
        # A revoked and an expired token, both working before (changes made while the server runs).
        tokens["revoked"] = self.create_token("gone", "auditor")
        tokens["expired"] = self.create_token("old", "admin", "--expires", "2030-01-01")
        for name in ("revoked", "expired"):
            self.assertEqual(api.get(f"{API}/search/count?q=*", tokens[name]).status, 200, name)
        self.pv.cli("token", "revoke", "gone", "--config", str(self.pv.config_path))
        token_file = self.pv.directory / "api-tokens.json"
        stored = json.loads(token_file.read_text())
        for entry in stored["tokens"]:
            if entry["name"] == "old":
                entry["expires"] = int(time.time()) - 3600
        replacement = token_file.with_name("api-tokens.json.edit")
        replacement.write_text(json.dumps(stored, indent=2) + "\n")
        os.chmod(replacement, 0o600)
        os.replace(replacement, token_file)
        tokens["bad"] = "pvt_" + "A" * 43          # well formed, unknown
        tokens["none"] = None

        # Holds for the DELETE route (one per role allowed to release), a token for DELETE /tokens.
        holds = {}
        for role in ("adm", "leg"):
            made = api.post(f"{API}/holds", self.tokens["adm"],
                            {"name": f"matrix-{role}", "reason": "role matrix", "message_ids": [ids["E"]]})
            self.assertEqual(made.status, 201, made)
            holds[role] = made.json()["id"]

        att = ids["A"]  # in both reviewers' scopes
        routes = [
            # method, path (or role -> path), body, roles allowed, success statuses
            ("GET", "/health", None, "all", {200}),
            ("GET", "/metrics", None, {"adm", "aud"}, {200}),
            ("GET", "/search?q=wombat", None, {"adm", "aud", "leg", "rev"}, {200}),
            ("POST", "/search", {"query": "wombat"}, {"adm", "aud", "leg", "rev"}, {200}),
            ("GET", "/search/count?q=wombat", None, {"adm", "aud", "leg", "rev"}, {200}),
            ("GET", "/search/facets?q=wombat", None, {"adm", "aud", "leg", "rev"}, {200}),
            ("POST", "/search/term-report", {"queries": ["wombat", "figures"]}, {"adm", "aud", "leg", "rev"}, {200}),
            ("GET", f"/messages/{att}", None, {"adm", "aud", "leg", "rev"}, {200}),
            ("GET", f"/messages/{att}/raw", None, {"adm", "aud", "leg", "rev"}, {200}),
            ("GET", f"/messages/{att}/text", None, {"adm", "aud", "leg", "rev"}, {200}),
            ("GET", f"/messages/{att}/attachments/0", None, {"adm", "aud", "leg", "rev"}, {200}),
            ("POST", "/holds", lambda role: {"name": f"matrix-new-{role}", "reason": "matrix",
                                             "message_ids": [ids["E"]]}, {"adm", "leg"}, {201}),
            ("GET", "/holds", None, {"adm", "aud", "leg"}, {200}),
            ("GET", f"/holds/{holds['adm']}", None, {"adm", "aud", "leg"}, {200}),
            ("DELETE", lambda role: f"/holds/{holds.get(role, holds['adm'])}?reason=matrix+done", None,
             {"adm", "leg"}, {200}),
            ("GET", "/audit?limit=5", None, {"adm", "aud"}, {200}),
            ("GET", "/integrity", None, {"adm", "aud"}, {200, 202}),
            ("GET", "/tokens", None, {"adm"}, {200}),
            ("POST", "/tokens", {"name": "matrix-made", "role": "auditor"}, {"adm"}, {201}),
            ("DELETE", "/tokens/matrix-made", None, {"adm"}, {200}),
            # The Web Key Directory is public: the same answer whoever asks (this server has no
            # local domains, so none is served; test_pgp.WkdServedTest serves keys).
            ("GET", "/.well-known/openpgpkey/hu/kei1q4tipxxu1yj79k9kfukdhfy631xe", None, "all", {404}),
            ("GET", "/.well-known/openpgpkey/policy", None, "all", {404}),
            ("GET", "/.well-known/openpgpkey/corp.example/hu/kei1q4tipxxu1yj79k9kfukdhfy631xe", None, "all", {404}),
            ("GET", "/.well-known/openpgpkey/corp.example/policy", None, "all", {404}),
        ]

        def full(path):
            return path if path.startswith(WKD) else API + path
        listed = set(self.pv.cli("api", "routes").stdout.split("\n")) - {""}

        def pattern(method, path):
            if path.startswith(WKD):
                path = re.sub(r"/hu/[0-9a-z]+", "/hu/{hash}", path.replace("/corp.example/", "/{domain}/"))
                return f"{method} {path}"
            path = re.sub(r"/messages/[0-9A-Z]+", "/messages/{id}", path.split("?")[0])
            path = re.sub(r"/holds/H[0-9A-Za-z]+", "/holds/{id}", path.replace("/attachments/0", "/attachments/{n}"))
            return f"{method} {API}" + path.replace("/tokens/matrix-made", "/tokens/{name}")

        tested = {pattern(m, p(None) if callable(p) else p) for m, p, *_ in routes}
        self.assertLessEqual(tested, listed)
        # Export routes are being added alongside and have their own tests.
        self.assertEqual({r for r in listed - tested if "export" not in r}, set(), "routes without a role test")

        # Every listed route (new ones too) refuses a call without a valid token, the public ones aside.
        public = {pattern(m, p) for m, p, _, allowed, _ in routes if allowed == "all"}
        for route in sorted(listed - public):
            method, pattern = route.split(" ", 1)
            target = re.sub(r"\{[a-z]+\}", "X1", pattern)
            for who in ("none", "bad"):
                response = api.request(method, target, tokens[who])
                self.assertEqual(response.status, 401, f"{route} as {who}: {response}")

        identities = ["adm", "aud", "leg", "rev", "revoked", "expired", "bad", "none"]
        failures = []
        for method, path, body, allowed, success in routes:
            for who in identities:
                target = full(path(who) if callable(path) else path)
                payload = body(who) if callable(body) else body
                response = api.request(method, target, tokens[who], body=payload)
                if allowed == "all":
                    expected = success
                elif who in ("revoked", "expired", "bad", "none"):
                    expected = {401}
                else:
                    expected = success if who in allowed else {403}
                if response.status not in expected:
                    failures.append(f"{method} {target} as {who}: {response.status} (expected {expected}) "
                                    f"{response.body[:200]!r}")
                    continue
                if response.status == 401:
                    self.assertEqual(response.headers.get("www-authenticate"), 'Bearer realm="postvault"')
                    self.assertEqual(error_of(response)["code"], "auth.token")
                elif response.status == 403:
                    self.assertEqual(error_of(response)["code"], "auth.role")
        self.assertEqual(failures, [], "\n".join(failures))
        # Other spellings of "no token".
        for header in ("Basic YWRtOnB3", "Bearer", "Bearer " + tokens["adm"] + "x", tokens["adm"]):
            response = api.get(f"{API}/search/count?q=*", headers={"Authorization": header})
            self.assertEqual(response.status, 401, header)

    # ---- 1b. reviewer scope -----------------------------------------------------------------
    def test_reviewer_sees_only_its_custodians_and_domains(self):
        api, ids = self.api, self.ids
        scoped = self.all_ids(f"participant:{CUSTODIAN}")
        self.assertLessEqual({ids["A"], ids["B"], ids["C"]}, scoped)
        self.assertFalse({ids[k] for k in ("B2", "D", "E", "F", "G", "H", "I", "N1")} & scoped)
        self.assertEqual(self.all_ids("*", "rev"), scoped)
        self.assertEqual(self.count("*", "rev"), len(scoped))
        self.assertGreater(self.count("*"), len(scoped))
        # A word in and out of scope.
        self.assertEqual(self.count("wombat", "rev"), self.count(f"wombat AND participant:{CUSTODIAN}"))
        self.assertEqual(self.count("wombat", "rev"), 1)
        self.assertEqual(self.count("wombat"), 2)
        # The domain scope: the domain and its subdomains, not a domain that merely ends the same.
        by_domain = self.all_ids(f"domain:{REVIEW_DOMAIN}")
        self.assertEqual(self.all_ids("*", "revdom"), by_domain)
        self.assertLessEqual({ids["A"], ids["E"], ids["I"]}, by_domain)
        self.assertNotIn(ids["H"], by_domain)

        # POST /search, facets and the term report are scoped too.
        posted = api.post(f"{API}/search", self.tokens["rev"], {"query": "*", "limit": 1000})
        self.assertEqual({r["id"] for r in posted.json()["results"]}, scoped)
        facets = api.get(f"{API}/search/facets?q=*", self.tokens["rev"]).json()
        self.assertEqual(facets["total"], len(scoped))
        self.assertNotIn("elsewhere.example", [f["value"] for f in facets["facets"]["sender_domain"]])
        report = api.post(f"{API}/search/term-report", self.tokens["rev"],
                          {"queries": ["wombat", "*", "subject:lookalike"]}).json()
        hits = {q["query"]: q["hits"] for q in report["queries"]}
        self.assertEqual(hits, {"wombat": 1, "*": len(scoped), "subject:lookalike": 0})
        self.assertEqual(report["total_distinct"], len(scoped))

        # Thread families stay inside the scope (B2 answers B without the custodian).
        family = {q["query"]: q for q in api.post(f"{API}/search/term-report", self.tokens["rev"],
                                                  {"queries": ["subject:carla"]}).json()["queries"]}
        self.assertEqual((family["subject:carla"]["hits"], family["subject:carla"]["hits_with_family"]), (1, 1))
        admin_family = api.post(f"{API}/search/term-report", self.tokens["adm"], {"queries": ["subject:carla"]})
        self.assertEqual(admin_family.json()["queries"][0]["hits_with_family"], 2)

        # Queries that try to step out of the scope.
        for query in ["x) OR (*", ") OR (*", "*", "* OR NOT *", f"NOT participant:{CUSTODIAN}",
                      "participant:elsewhere.example", f"id:{ids['D']}", "subject:lookalike",
                      'x") OR participant:("elsewhere.example', "wombat) OR (wombat"]:
            response = api.get(f"{API}/search?limit=1000&q=" + urllib.parse.quote(query), self.tokens["rev"])
            if response.status == 400:
                self.assertIn("column", error_of(response)["message"], query)
                continue
            self.assertEqual(response.status, 200, (query, response))
            found = {r["id"] for r in response.json()["results"]}
            self.assertLessEqual(found, scoped, query)
            self.assertEqual(response.json()["total"], len(found), query)
            count = api.get(f"{API}/search/count?q=" + urllib.parse.quote(query), self.tokens["rev"])
            self.assertEqual(count.json()["total"], len(found), query)

        # Messages outside the scope answer like messages that do not exist, without an access record.
        for key in ("B2", "D", "F", "G"):
            for suffix in ("", "/raw", "/text", "/attachments/0"):
                outside = api.get(f"{API}/messages/{ids[key]}{suffix}", self.tokens["rev"])
                self.assertError(outside, 404, "archive.not_found")
                self.assertNotIn(b"secret notes", outside.body)
                self.assertEqual(api.get(f"{API}/messages/{ids[key]}{suffix}", self.tokens["adm"]).status,
                                 404 if (suffix == "/attachments/0" and key != "D") else 200, (key, suffix))
        missing = api.get(f"{API}/messages/0NOSUCHMESSAGE000000", self.tokens["rev"])
        self.assertError(missing, 404, "archive.not_found")
        self.assertEqual(api.get(f"{API}/messages/{ids['E']}", self.tokens["revdom"]).status, 200)
        self.assertEqual(api.get(f"{API}/messages/{ids['H']}", self.tokens["revdom"]).status, 404)
        accesses = api.get(f"{API}/audit?action=access&actor=api:rev&limit=1000", self.tokens["adm"]).json()
        self.assertFalse({ids[k] for k in ("D", "F", "G")} & {e["subject"] for e in accesses["events"]})
        # In scope: readable.
        self.assertEqual(api.get(f"{API}/messages/{ids['C']}/raw", self.tokens["rev"]).body, CRAFTED["C"])

    def test_reviewer_cannot_tell_a_message_outside_its_scope_from_a_missing_one(self):
        """routes.h: "a message outside it answers 404 like one that does not exist"."""
        outside, missing = self.ids["D"], "0HOM000000000000MDD0"
        answers = {}
        for name, mid in (("outside", outside), ("missing", missing)):
            response = self.api.get(f"{API}/messages/{mid}", self.tokens["rev"])
            self.assertEqual(response.status, 404, response)
            answers[name] = response.body.decode().replace(mid, "ID")
        self.assertEqual(answers["outside"], answers["missing"])

    def test_concurrent_admin_and_reviewer_calls_keep_their_scopes(self):
        expected = {"adm": self.count("*"), "rev": self.count("*", "rev"), "revdom": self.count("*", "revdom")}
        self.assertLess(expected["rev"], expected["adm"])
        self.assertLess(expected["revdom"], expected["adm"])
        failures = []

        def worker(offset):
            names = list(expected)
            for i in range(12):
                name = names[(i + offset) % 3]
                try:
                    response = self.api.get(f"{API}/search/count?q=*", self.tokens[name])
                    total = response.json()["total"]
                except Exception as error:  # noqa: BLE001 - reported below
                    failures.append(f"{name}: {error!r}")
                    continue
                if total != expected[name]:
                    failures.append(f"{name}: {total} != {expected[name]}")

        threads = [threading.Thread(target=worker, args=(n,)) for n in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        self.assertEqual(failures, [])

    # ---- 2. search ---------------------------------------------------------------------------
    def page_through(self, query, limit, sort=None, post=False, token="adm"):
        ids, pages, cursor, total = [], 0, None, None
        while True:
            if post:
                body = {"query": query, "limit": limit}
                if sort:
                    body["sort"] = sort
                if cursor:
                    body["cursor"] = cursor
                response = self.api.post(f"{API}/search", self.tokens[token], body)
            else:
                target = f"{API}/search?q={urllib.parse.quote(query)}&limit={limit}"
                if sort:
                    target += f"&sort={sort}"
                if cursor:
                    target += "&cursor=" + urllib.parse.quote(cursor)
                response = self.api.get(target, self.tokens[token])
            self.assertEqual(response.status, 200, response)
            page = response.json()
            self.assertEqual(set(page), {"total", "results", "next_cursor"})
            if total is None:
                total = page["total"]
            self.assertEqual(page["total"], total)
            self.assertLessEqual(len(page["results"]), limit)
            for result in page["results"]:
                self.assertLessEqual({"id", "date", "from", "to", "subject", "snippet"}, set(result))
            ids += [r["id"] for r in page["results"]]
            pages += 1
            self.assertLess(pages, 1000, "the cursor does not end")
            cursor = page["next_cursor"]
            if cursor is None:
                return total, ids, page
            self.assertEqual(len(page["results"]), limit, "a page before the last is full")

    def test_search_pages_counts_facets_and_term_report(self):
        everything = self.count("*")
        self.assertEqual(everything, self.cli_count("*"))
        self.assertGreaterEqual(everything, len(CRAFTED) + min(self.corpus_imported, 1))
        total, ids, _ = self.page_through("*", 7)
        self.assertEqual(total, everything)
        self.assertEqual(len(ids), total)
        self.assertEqual(len(set(ids)), total)
        # Newest first by default.
        response = self.api.get(f"{API}/search?limit=100&q=participant%3Athird.example", self.tokens["adm"])
        dates = [r["date"] for r in response.json()["results"]]
        self.assertEqual(dates, sorted(dates, reverse=True))
        self.assertGreaterEqual(len(dates), 5)

        for query in (["patch", "ext4 OR inode", "wombat OR nightingale OR figures"] if self.corpus_imported
                      else ["wombat OR nightingale OR figures"]):
            count = self.count(query)
            self.assertEqual(count, self.cli_count(query), query)
            total, relevance_ids, _ = self.page_through(query, 4, sort="relevance")
            self.assertEqual((total, len(relevance_ids), len(set(relevance_ids))), (count, count, count), query)
            total, posted_ids, _ = self.page_through(query, 5, post=True)
            self.assertEqual((total, len(set(posted_ids))), (count, count), query)
            self.assertEqual(set(posted_ids), set(relevance_ids), query)
            total, posted_relevance, _ = self.page_through(query, 3, sort="relevance", post=True)
            self.assertEqual(set(posted_relevance), set(relevance_ids), query)

        # The snippet marks the match; from/to are "Name <address>".
        hit = self.api.get(f"{API}/search?q=sightings", self.tokens["adm"]).json()
        self.assertEqual(hit["total"], 1)
        self.assertIn("[sightings]", hit["results"][0]["snippet"])
        self.assertEqual(hit["results"][0]["subject"], "wombat elsewhere")
        self.assertIn("zed@elsewhere.example", hit["results"][0]["from"])

        # Facets over every match.
        query = "participant:third.example OR participant:partner.example"
        facets = self.api.get(f"{API}/search/facets?q=" + urllib.parse.quote(query), self.tokens["aud"])
        self.assertEqual(facets.status, 200, facets)
        body = facets.json()
        self.assertEqual(body["total"], self.count(query))
        self.assertEqual(set(body["facets"]), {"sender_domain", "recipient_domain", "month", "method"})
        self.assertEqual(sum(f["count"] for f in body["facets"]["month"]), body["total"])
        months = {f["value"]: f["count"] for f in body["facets"]["month"]}
        self.assertEqual(set(months), {"2020-03"})
        senders = {f["value"]: f["count"] for f in body["facets"]["sender_domain"]}
        self.assertEqual(senders["third.example"], self.count("from:third.example"))

        # Term report: several queries and a bad one; the bad one names its column.
        queries = ["wombat", "subject:nightingale", f"participant:{CUSTODIAN}", "subject:(wombat"]
        report = self.api.post(f"{API}/search/term-report", self.tokens["leg"], {"queries": queries})
        self.assertEqual(report.status, 200, report)
        rows = {row["query"]: row for row in report.json()["queries"]}
        self.assertEqual(list(rows), queries)
        for query in queries[:3]:
            self.assertEqual(rows[query]["hits"], self.count(query), query)
            self.assertNotIn("error", rows[query])
        self.assertIn("column", rows["subject:(wombat"]["error"])
        self.assertEqual(rows["subject:(wombat"]["hits"], 0)
        union = "(wombat) OR (subject:nightingale) OR (participant:" + CUSTODIAN + ")"
        self.assertEqual(report.json()["total_distinct"], self.count(union))
        # "wombat" hits A (custodian) and D: D is the unique one.
        self.assertEqual(rows["wombat"]["unique_hits"], 1)
        for body in ({"queries": []}, {"queries": "wombat"}, {"queries": [1, 2]}, {"query": ["wombat"]}):
            self.assertError(self.api.post(f"{API}/search/term-report", self.tokens["leg"], body), 400)

    # ---- 3. messages --------------------------------------------------------------------------
    def test_message_metadata_raw_text_and_attachments(self):
        api, token, mid = self.api, self.tokens["aud"], self.ids["A"]
        raw = api.get(f"{API}/messages/{mid}/raw", token)
        self.assertEqual(raw.status, 200, raw)
        self.assertEqual(raw.headers["content-type"], "message/rfc822")
        self.assertEqual(raw.headers["x-postvault-sha256"], hashlib.sha256(raw.body).hexdigest())
        self.assertEqual(raw.body, self.pv.archive("get", mid).stdout)
        self.assertEqual(raw.body, CRAFTED["A"])

        meta = api.get(f"{API}/messages/{mid}", token)
        self.assertEqual(meta.status, 200, meta)
        meta = meta.json()
        self.assertEqual(meta["id"], mid)
        self.assertEqual(meta["sha256"], hashlib.sha256(CRAFTED["A"]).hexdigest())
        self.assertEqual(meta["size"], len(CRAFTED["A"]))
        self.assertEqual(set(meta["envelope"]), {"mail_from", "recipients"})
        self.assertIsInstance(meta["holds"], list)
        self.assertEqual(meta["headers"]["subject"], "quarterly wombat figures")
        self.assertEqual(meta["headers"]["message_id"], "att-1@pv.test")
        self.assertEqual(meta["headers"]["from"], [{"name": "Carla Custodian", "address": CUSTODIAN}])
        self.assertEqual(meta["headers"]["to"], [{"name": "Bob", "address": "bob@partner.example"}])
        self.assertEqual(meta["headers"]["date"], "2020-03-03T09:00:00Z")
        self.assertEqual(meta["direction"], "import")

        text = api.get(f"{API}/messages/{mid}/text", token)
        self.assertEqual(text.status, 200, text)
        text = text.json()
        self.assertIn("Grüße", text["body"])
        listed = [(a["n"], a["filename"], a["content_type"], a["size"]) for a in text["attachments"]]
        self.assertEqual(listed, [(0, PDF_NAME, "application/pdf", len(PDF_BYTES)),
                                  (1, TEXT_NAME, "text/plain", len(TEXT_BYTES))])
        self.assertIn("wombat quarterly figures", text["attachments"][0]["text"])
        self.assertIn("naïve café", text["attachments"][1]["text"])

        for n, expected, content_type in ((0, PDF_BYTES, "application/pdf"), (1, TEXT_BYTES, "text/plain")):
            attachment = api.get(f"{API}/messages/{mid}/attachments/{n}", token)
            self.assertEqual(attachment.status, 200, attachment)
            self.assertEqual(attachment.body, expected, n)
            self.assertEqual(attachment.headers["x-postvault-sha256"], hashlib.sha256(expected).hexdigest())
            self.assertTrue(attachment.headers["content-type"].startswith(content_type), attachment.headers)
            disposition = attachment.headers["content-disposition"]
            self.assertTrue(disposition.startswith("attachment;"), disposition)
            self.assertTrue(disposition.isascii(), disposition)  # a header value stays ASCII
        for n in ("2", "99", "18446744073709551616"):
            self.assertError(api.get(f"{API}/messages/{mid}/attachments/{n}", token), 404 if n != "18446744073709551616"
                             else 400)
        self.assertError(api.get(f"{API}/messages/{mid}/attachments/x", token), 400)
        self.assertError(api.get(f"{API}/messages/{mid}/attachments/-1", token), 400)
        self.assertError(api.get(f"{API}/messages/{self.ids['B']}/attachments/0", token), 404,
                         "attachment.not_found")
        # Raw reads of a corpus message too, byte for byte against the CLI.
        if self.corpus_imported:
            some = self.api.get(f"{API}/search?q=patch&limit=3", token).json()["results"]
            for result in some:
                raw = api.get(f"{API}/messages/{result['id']}/raw", token)
                self.assertEqual(raw.body, self.pv.archive("get", result["id"]).stdout)
                self.assertEqual(raw.headers["x-postvault-sha256"], hashlib.sha256(raw.body).hexdigest())
                meta = api.get(f"{API}/messages/{result['id']}", token).json()
                self.assertEqual(meta["sha256"], hashlib.sha256(raw.body).hexdigest())

    # ---- 4. legal holds ----------------------------------------------------------------------
    def test_holds_by_query_custodian_and_ids_count_list_and_release(self):
        api, legal, ids = self.api, self.tokens["leg"], self.ids
        before_query = self.count("subject:nightingale")
        self.assertEqual(before_query, 3)
        by_query = api.post(f"{API}/holds", legal, {"name": "nightingale", "reason": "litigation 42",
                                                     "query": "subject:nightingale"})
        self.assertEqual(by_query.status, 201, by_query)
        by_query = by_query.json()
        self.assertEqual((by_query["count"], by_query["state"], by_query["created_by"]), (3, "active", "api:leg"))
        custodian_count = self.count(f"participant:{CUSTODIAN}")
        by_custodian = api.post(f"{API}/holds", legal, {"name": "carla", "reason": "custodian hold",
                                                         "custodians": [CUSTODIAN.upper()]})
        self.assertEqual(by_custodian.status, 201, by_custodian)
        self.assertEqual(by_custodian.json()["count"], custodian_count)
        self.assertEqual(by_custodian.json()["custodians"], [CUSTODIAN])
        by_ids = api.post(f"{API}/holds", legal, {"name": "two messages", "reason": "ids",
                                                   "message_ids": [ids["D"], ids["G"]]})
        self.assertEqual(by_ids.status, 201, by_ids)
        self.assertEqual(by_ids.json()["count"], 2)
        hold_ids = {"query": by_query["id"], "custodian": by_custodian.json()["id"], "ids": by_ids.json()["id"]}

        # Refused: the auditor may list but not create; bad holds are 400 with a reason.
        self.assertError(api.post(f"{API}/holds", self.tokens["aud"], {"name": "x", "reason": "y", "query": "*"}),
                         403, "auth.role")
        for bad in ({"name": "x", "reason": "y"}, {"name": "x", "reason": "y", "query": "*", "custodians": ["a@b"]},
                    {"name": "x", "reason": "", "query": "*"}, {"name": "x", "reason": "y", "query": "subject:("},
                    {"name": "x", "reason": "y", "message_ids": ["0NOSUCHMESSAGE000000"]},
                    {"name": "x", "reason": "y", "message_ids": ["../etc"]},
                    {"name": "x", "reason": "y", "custodians": ["not an address"]},
                    {"name": "nightingale", "reason": "same name", "query": "*"},
                    {"name": "x", "reason": "y", "query": "*", "extra": 1}):
            self.assertError(api.post(f"{API}/holds", legal, bad), 400)
        listing = api.get(f"{API}/holds", self.tokens["aud"])
        self.assertEqual(listing.status, 200, listing)
        listed = {h["id"]: h for h in listing.json()["holds"]}
        self.assertLessEqual(set(hold_ids.values()), set(listed))
        self.assertEqual(listed[hold_ids["query"]]["query"], "subject:nightingale")
        self.assertEqual(api.get(f"{API}/holds/{hold_ids['ids']}", self.tokens["aud"]).json()["count"], 2)
        self.assertError(api.get(f"{API}/holds/HNOSUCHHOLD", self.tokens["aud"]), 404)
        active = {h["id"] for h in api.get(f"{API}/holds?state=active", legal).json()["holds"]}
        self.assertLessEqual(set(hold_ids.values()), active)
        self.assertError(api.get(f"{API}/holds?state=bogus", legal), 400)

        # Metadata lists the covering active holds.
        covering = lambda key: {h["id"] for h in api.get(f"{API}/messages/{ids[key]}", legal).json()["holds"]}
        self.assertLessEqual({hold_ids["custodian"]}, covering("A"))
        self.assertNotIn(hold_ids["query"], covering("A"))
        self.assertLessEqual({hold_ids["query"]}, covering("N2"))
        self.assertLessEqual({hold_ids["ids"]}, covering("D"))

        # (Mail archived after a hold: ApiLiveArchiveTest.)

        # Release: needs a reason; then released with who and why; a second release is 409.
        self.assertError(api.request("DELETE", f"{API}/holds/{hold_ids['query']}", legal), 400)
        self.assertError(api.request("DELETE", f"{API}/holds/{hold_ids['query']}", self.tokens["aud"]), 403)
        released = api.request("DELETE", f"{API}/holds/{hold_ids['query']}", legal, body={"reason": "case settled"})
        self.assertEqual(released.status, 200, released)
        self.assertEqual({k: released.json()[k] for k in ("state", "released_by", "release_reason")},
                         {"state": "released", "released_by": "api:leg", "release_reason": "case settled"})
        self.assertGreater(released.json()["released"], 0)
        again = api.request("DELETE", f"{API}/holds/{hold_ids['query']}", legal, body={"reason": "again"})
        self.assertError(again, 409, "hold.released")
        by_param = api.request("DELETE", f"{API}/holds/{hold_ids['ids']}?reason=" + urllib.parse.quote("done ✓"),
                               self.tokens["adm"])
        self.assertEqual((by_param.status, by_param.json()["release_reason"]), (200, "done ✓"))
        got = api.get(f"{API}/holds/{hold_ids['query']}", self.tokens["aud"]).json()
        self.assertEqual((got["state"], got["released_by"]), ("released", "api:leg"))
        self.assertNotIn(hold_ids["query"], covering("N2"))
        self.assertNotIn(hold_ids["ids"], covering("D"))
        self.assertIn(hold_ids["custodian"], covering("A"))
        released_ids = {h["id"] for h in api.get(f"{API}/holds?state=released", legal).json()["holds"]}
        self.assertLessEqual({hold_ids["query"], hold_ids["ids"]}, released_ids)
        self.assertNotIn(hold_ids["custodian"], released_ids)
        # On the chain as hold and release events.
        audit = lambda action: api.get(f"{API}/audit?action={action}&limit=1000", self.tokens["adm"]).json()["events"]
        self.assertIn((hold_ids["query"], "api:leg"), {(e["subject"], e["actor"]) for e in audit("hold")})
        self.assertIn((hold_ids["query"], "api:leg"), {(e["subject"], e["actor"]) for e in audit("release")})

    # ---- 5. the audit record ----------------------------------------------------------------
    def test_every_call_is_on_the_audit_record_in_order(self):
        api, trail, mid = self.api, self.tokens["trail"], self.ids["A"]
        calls = [("GET", f"{API}/search?q=wombat&limit=5", None, 200),
                 ("GET", f"{API}/search/count?q=subject%3A%28", None, 400),
                 ("POST", f"{API}/search", {"query": "wombat", "limit": 2}, 200),
                 ("GET", f"{API}/messages/{mid}", None, 200),
                 ("GET", f"{API}/messages/{mid}/raw", None, 200),
                 ("GET", f"{API}/messages/0NOSUCHMESSAGE000000", None, 404),
                 ("POST", f"{API}/holds", {"name": "n", "reason": "r", "query": "*"}, 403),
                 ("GET", f"{API}/holds", None, 200)]
        later = [("GET", f"{API}/search/facets?q=%2A", None, 200),
                 ("GET", f"{API}/search/count?q=fyi", None, 200)]
        for method, target, body, status in calls:
            self.assertEqual(api.request(method, target, trail, body=body).status, status, target)
        # The second batch starts in a later second than the first ends.
        time.sleep(1.05 - time.time() % 1)
        boundary = int(time.time())
        for method, target, body, status in later:
            self.assertEqual(api.request(method, target, trail, body=body).status, status, target)
        marker = f"{API}/search/count?q=audit401marker{os.getpid()}"
        self.assertEqual(api.get(marker, "pvt_" + "B" * 43).status, 401)

        admin = self.tokens["adm"]
        events = api.get(f"{API}/audit?action=api&actor=trail&limit=1000", admin)
        self.assertEqual(events.status, 200, events)
        events = events.json()["events"]
        made = [(m, t, s) for m, t, _, s in calls + later]
        self.assertEqual([(e["detail"]["method"], e["detail"]["target"], e["detail"]["status"]) for e in events], made)
        seqs = [e["seq"] for e in events]
        self.assertEqual(seqs, sorted(set(seqs)))
        self.assertEqual([e["time_micros"] for e in events], sorted(e["time_micros"] for e in events))
        for event in events:
            self.assertEqual((event["action"], event["actor"]), ("api", "trail"))
            self.assertEqual((event["detail"]["role"], event["detail"]["client"]), ("auditor", "127.0.0.1"))
            self.assertEqual(event["time"], time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(event["time_micros"] // 10**6)))
        self.assertEqual(events[3]["subject"], mid)
        self.assertEqual(events[2]["detail"]["body"], {"query": "wombat", "limit": 2})
        self.assertEqual(events[6]["detail"]["status"], 403)

        # since / until, in Unix seconds and ISO 8601.
        iso = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(boundary))
        for since in (str(boundary), iso, urllib.parse.quote(iso)):
            response = api.get(f"{API}/audit?action=api&actor=trail&since={since}", admin)
            self.assertEqual([e["detail"]["target"] for e in response.json()["events"]], [t for _, t, _, _ in later])
        response = api.get(f"{API}/audit?action=api&actor=trail&until={boundary}", admin)
        self.assertEqual([e["detail"]["target"] for e in response.json()["events"]], [t for _, t, _, _ in calls])
        response = api.get(f"{API}/audit?action=api&actor=trail&since={boundary + 3600}", admin)
        self.assertEqual(response.json()["events"], [])
        for bad in ("since=yesterday", "until=2024-13-01", "limit=0", "cursor=x", "colour=red"):
            self.assertError(api.get(f"{API}/audit?{bad}", admin), 400)

        # Pages of 3 with the cursor give the same events.
        paged, cursor = [], None
        while True:
            response = api.get(f"{API}/audit?action=api&actor=trail&limit=3" + (f"&cursor={cursor}" if cursor else ""),
                               admin).json()
            self.assertLessEqual(len(response["events"]), 3)
            paged += [e["seq"] for e in response["events"]]
            cursor = response["next_cursor"]
            if cursor is None:
                break
            self.assertLess(len(paged), 100)
        self.assertEqual(paged, seqs)

        # The raw read is also an access; the refused call is recorded with actor "-".
        accesses = api.get(f"{API}/audit?action=access&actor=api:trail", admin).json()["events"]
        self.assertEqual([e["subject"] for e in accesses], [mid])
        anonymous = api.get(f"{API}/audit?action=api&actor=-&limit=1000", admin).json()["events"]
        mine = [e for e in anonymous if e["detail"]["target"] == marker]
        self.assertEqual(len(mine), 1, anonymous[-3:])
        self.assertEqual(mine[0]["detail"]["status"], 401)
        self.assertNotIn("role", mine[0]["detail"])
        self.assertEqual(mine[0]["actor"], "-")

    def test_a_refused_post_is_recorded_with_its_body(self):
        """routes.h: an "api" entry's detail has, for POST, the body; also when the call is refused."""
        api, admin = self.api, self.tokens["adm"]
        attempt = {"name": f"refused-{os.getpid()}", "reason": "auditor tries a hold", "query": "*"}
        self.assertEqual(api.post(f"{API}/holds", self.tokens["aud"], attempt).status, 403)
        self.assertEqual(api.post(f"{API}/tokens", "pvt_" + "D" * 43, {"name": "intruder", "role": "admin"}).status, 401)
        events = api.get(f"{API}/audit?action=api&limit=1000&since={int(time.time()) - 60}", admin).json()["events"]
        refused = [e["detail"] for e in events if e["detail"]["method"] == "POST" and e["detail"]["status"] in (401, 403)]
        self.assertEqual([(d["target"], d["status"]) for d in refused[-2:]], [(f"{API}/holds", 403), (f"{API}/tokens", 401)])
        self.assertEqual(refused[-2].get("body"), attempt, "the refused hold's body is not on the record")
        self.assertEqual(refused[-1].get("body"), {"name": "intruder", "role": "admin"})

    # ---- 6. bad input -----------------------------------------------------------------------
    def test_bad_input_gets_a_json_error_and_the_server_stays_up(self):
        api, token = self.api, self.tokens["aud"]
        post = lambda body, **kw: api.post(f"{API}/search", token, body, **kw)
        self.assertError(post('{"query": '), 400, "request.json")
        self.assertError(post('["*"]'), 400, "request.json")
        self.assertError(post('"*"'), 400, "request.json")
        self.assertError(post(b"\xff\xfe{}"), 400, "request.json")
        self.assertError(post({"query": "*", "colour": "red"}), 400, "request.field", "colour")
        self.assertError(post({"query": 5}), 400, "request.field")
        self.assertError(post({}), 400)
        for limit in (0, -1, 10000000, 1.5, "5", None):
            self.assertError(post({"query": "*", "limit": limit}), 400, None)
        self.assertError(post({"query": "subject:(wombat"}), 400, None, "column")
        self.assertError(post({"query": "*"}, content_type=None), 415, "request.content_type")
        self.assertError(post({"query": "*"}, content_type="text/plain"), 415, "request.content_type")
        self.assertError(post({"query": "*"}, content_type="application/x-www-form-urlencoded"), 415)
        # Body over max_body_size (64 KiB): declared, and chunked without a length.
        sock = api.tls_socket()
        sock.sendall(f"POST {API}/search HTTP/1.1\r\nHost: postvault.test\r\nAuthorization: Bearer {token}\r\n"
                     "Content-Type: application/json\r\nContent-Length: 70000\r\n\r\n".encode())
        status, _, body = read_response(sock)
        self.assertEqual((status, json.loads(body)["error"]["code"]), (413, "request.body_too_large"))
        sock.close()
        # (A client that sends the whole body first: see the next test.)
        # A chunked body (no length declared) that grows past the limit.
        sock = api.tls_socket()
        sock.sendall(f"POST {API}/search HTTP/1.1\r\nHost: postvault.test\r\nAuthorization: Bearer {token}\r\n"
                     "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n".encode())
        for _ in range(3):
            try:
                sock.sendall(b"8000\r\n" + b" " * 0x8000 + b"\r\n")
            except (BrokenPipeError, ConnectionResetError, ssl.SSLError):
                break
        try:
            status, _, body = read_response(sock)
            self.assertEqual((status, json.loads(body)["error"]["code"]), (413, "request.body_too_large"))
        except (ConnectionError, ssl.SSLError):
            pass  # cut off while sending: the body was refused either way
        sock.close()
        self.assertEqual(post(json.dumps({"query": "*", "cursor": None, "limit": 1}) + " " * 60000).status, 200)
        # Header over max_header_size (8 KiB).
        self.assertError(api.get(f"{API}/search/count?q=*", token, headers={"X-Filler": "a" * 9000}), 431,
                         "request.header_too_large")
        self.assertError(api.get(f"{API}/search/count?q=" + "a" * 9000, token), 431)

        # Ids that try to leave the archive.
        for path in ("/messages/..%2F..%2Fetc", "/messages/%2e%2e", "/messages/%2e%2e/raw", "/messages/..%2Fpasswd/text",
                     "/messages/..%252F..%252Fetc", "/messages/%2E%2E%2F%2E%2E%2Fetc%2Fpasswd",
                     "/messages/AAAA%00", "/messages/AAAA%zz", "/messages/" + "A" * 65, "/holds/..%2F..%2Fx",
                     "/messages/%2e%2e/attachments/0", "/tokens/..%2Fadm"):
            response = api.get(API + path, self.tokens["adm"])
            self.assertIn(response.status, (400, 404), path)
            error_of(response)
            self.assertNotIn(b"root:", response.body)
        self.assertError(api.request("DELETE", f"{API}/tokens/..%2Fadm", self.tokens["adm"]), 400)
        self.assertEqual(api.get(f"{API}/search/count?q=*", self.tokens["adm"]).status, 200)  # adm still valid

        # Queries: bad syntax names the column; limits; unknown or repeated parameters.
        for path in ("/search?q=subject%3A%28wombat", "/search/count?q=subject%3A%28wombat",
                     "/search/facets?q=subject%3A%28wombat", "/search/count?q=form%3Aalice"):
            self.assertError(api.get(API + path, token), 400, None, "column")
        for limit in ("0", "-1", "10000000", "abc", "", "1e3", "%2B5", "5%20"):
            self.assertError(api.get(f"{API}/search?q=*&limit={limit}", token), 400, "request.limit")
        self.assertEqual(api.get(f"{API}/search?q=*&limit=1000", token).status, 200)
        self.assertError(api.get(f"{API}/search?q=*&limit=1001", token), 400, "request.limit")
        self.assertError(api.get(f"{API}/search?q=*&colour=red", token), 400, "request.parameter", "colour")
        self.assertError(api.get(f"{API}/search/count?q=*&limit=5", token), 400, "request.parameter", "limit")
        self.assertError(api.get(f"{API}/search?q=*&q=wombat", token), 400, "request.parameter")
        self.assertError(api.get(f"{API}/search?q=%zz", token), 400)
        self.assertError(api.get(f"{API}/search", token), 400, "request.query")
        self.assertError(api.get(f"{API}/search/count?q=", token), 400, "request.query")
        self.assertError(api.get(f"{API}/search?q=*&exact=maybe", token), 400)
        self.assertError(api.get(f"{API}/search?q=*&cursor=garbage", token), 400)
        self.assertError(api.get(f"{API}/search?q=*&sort=sideways", token), 400)
        # Routes and methods.
        self.assertError(api.get(f"{API}/nothing", token), 404, "request.route")
        self.assertError(api.get("/api/v2/search?q=*", token), 404)
        self.assertError(api.get("/", token), 404)
        self.assertError(api.request("PUT", f"{API}/search?q=*", token), 405, "request.method")
        self.assertError(api.request("DELETE", f"{API}/search/count?q=*", token), 405)
        self.assertError(api.request("PATCH", f"{API}/holds", token), 405)
        self.assertError(api.request("POST", f"{API}/messages/{self.ids['A']}", token), 405)
        self.assertError(api.request("POST", f"{API}/nothing", token), 404)
        # Malformed HTTP inside TLS.
        for raw in (b"GET /api/v1/health HTTP/1.1\r\nHost postvault.test\r\n\r\n",
                    b"GET /api/v1/health HTTP/9.9\r\n\r\n",
                    b"\x00\x01\x02 garbage\r\n\r\n"):
            sock = api.tls_socket()
            sock.sendall(raw)
            status, _, body = read_response(sock)
            self.assertEqual(status, 400, raw)
            self.assertEqual(json.loads(body)["error"]["code"], "request.malformed")
            self.assertTrue(closed_by_peer(sock, 5), raw)
            sock.close()
        self.assertAlive()

    def test_a_client_that_sends_its_whole_body_first_still_reads_the_413(self):
        """http.client (like many clients) sends the whole body, then reads. The server answers 413
        and closes at once with the body unread: the kernel resets the connection and the client
        loses the answer (RFC 9112 9.6: close in halves, reading a bounded amount, instead)."""
        token = self.tokens["aud"]
        big = json.dumps({"query": "*", "cursor": "x" * 70000})
        lost = []
        for attempt in range(3):
            try:
                response = self.api.post(f"{API}/search", token, big)
                self.assertError(response, 413, "request.body_too_large")
            except (ConnectionError, ssl.SSLError, http.client.HTTPException) as error:
                lost.append(f"http.client: {error!r}")
        path = self.tmp / "big.json"
        path.write_text(big)
        for attempt in range(3):
            curl = subprocess.run(["curl", "-sS", "--cacert", str(self.pv.cert), "-H", f"Authorization: Bearer {token}",
                                   "-H", "Content-Type: application/json", "--data-binary", f"@{path}", "-w",
                                   "\n%{http_code}", f"https://127.0.0.1:{self.api_port}{API}/search"],
                                  capture_output=True, text=True, timeout=30)
            if curl.stdout.splitlines()[-1:] != ["413"]:
                lost.append(f"curl: exit {curl.returncode}, {curl.stderr.strip()}")
        self.assertEqual(lost, [], "POST of 70000 bytes (limit 64 KiB): the 413 did not arrive")
        self.assertAlive()

    def test_a_wrong_method_or_route_with_a_small_body_is_405_or_404(self):
        """A 2-byte body to a route that takes none is not "larger than this route accepts"."""
        token = self.tokens["aud"]
        wrong_method = self.api.request("PATCH", f"{API}/holds", token, body={})
        unknown_route = self.api.request("POST", f"{API}/nothing", token, body={})
        wrong_get = self.api.request("POST", f"{API}/messages/{self.ids['A']}", token, body={"x": 1})
        self.assertEqual([r.status for r in (wrong_method, unknown_route, wrong_get)], [405, 404, 405],
                         [wrong_method, unknown_route, wrong_get])

    def test_connections_keep_alive_and_plain_http(self):
        api, token = self.api, self.tokens["aud"]
        # Two requests on one TLS connection.
        sock = api.tls_socket()
        for query in ("wombat", "fyi"):
            sock.sendall(f"GET {API}/search/count?q={query} HTTP/1.1\r\nHost: postvault.test\r\n"
                         f"Authorization: Bearer {token}\r\n\r\n".encode())
            status, headers, body = read_response(sock)
            self.assertEqual(status, 200, body)
            self.assertNotEqual(headers.get("connection", "").lower(), "close")
            self.assertEqual(json.loads(body)["total"], self.count(query))
        # "Connection: close" is honoured.
        sock.sendall(f"GET {API}/health HTTP/1.1\r\nHost: postvault.test\r\nConnection: close\r\n\r\n".encode())
        self.assertEqual(read_response(sock)[0], 200)
        self.assertTrue(closed_by_peer(sock, 5))
        sock.close()
        # http.client keep-alive: the same socket serves both.
        connection = api.connection()
        connection.request("GET", f"{API}/health")
        self.assertEqual(connection.getresponse().read(), b'{"status":"ok"}\n')
        first = connection.sock
        connection.request("GET", f"{API}/search/count?q=*", headers={"Authorization": "Bearer " + token})
        self.assertEqual(connection.getresponse().status, 200)
        self.assertIs(connection.sock, first)
        connection.close()

        # Plain HTTP to the TLS port: no HTTP answer, the connection is closed.
        with socket.create_connection(("127.0.0.1", self.api_port), timeout=10) as plain:
            plain.sendall(b"GET /api/v1/health HTTP/1.1\r\nHost: postvault.test\r\n\r\n")
            received = b""
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                try:
                    chunk = plain.recv(65536)
                except ConnectionResetError:
                    break
                if not chunk:
                    break
                received += chunk
            else:
                self.fail("the server kept a plain-HTTP connection open")
            self.assertNotIn(b"HTTP/", received)
            self.assertNotIn(b"status", received)
        self.assertAlive()

    def test_curl(self):
        mid, token = self.ids["A"], self.tokens["aud"]
        base = f"https://postvault.test:{self.api_port}{API}"
        curl = ["curl", "-sS", "--cacert", str(self.pv.cert), "--resolve", f"postvault.test:{self.api_port}:127.0.0.1",
                "-H", f"Authorization: Bearer {token}"]
        out = self.tmp / "raw.eml"
        result = subprocess.run(curl + ["-o", str(out), "-D", "-", "-w", "%{http_code}", f"{base}/messages/{mid}/raw"],
                                capture_output=True, text=True, timeout=30)
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertTrue(result.stdout.endswith("200"), result.stdout)
        self.assertEqual(out.read_bytes(), CRAFTED["A"])
        self.assertIn(f"x-postvault-sha256: {hashlib.sha256(CRAFTED['A']).hexdigest()}", result.stdout.lower())
        result = subprocess.run(curl + ["-H", "Content-Type: application/json", "--data", '{"query":"wombat","limit":1}',
                                        f"{base}/search"], capture_output=True, text=True, timeout=30)
        self.assertEqual(result.returncode, 0, result.stderr)
        body = json.loads(result.stdout)
        self.assertEqual((body["total"], len(body["results"])), (self.count("wombat"), 1))
        self.assertIsNotNone(body["next_cursor"])
        result = subprocess.run(curl[:-2] + ["-w", "%{http_code}", "-o", "/dev/null", f"{base}/search/count?q=x"],
                                capture_output=True, text=True, timeout=30)
        self.assertEqual(result.stdout, "401")
        # curl checks the name: one the certificate does not carry fails.
        result = subprocess.run(["curl", "-sS", "--cacert", str(self.pv.cert), "--resolve",
                                 f"elsewhere.test:{self.api_port}:127.0.0.1", f"https://elsewhere.test:{self.api_port}{API}/health"],
                                capture_output=True, text=True, timeout=30)
        self.assertEqual(result.returncode, 60, result.stderr)  # peer certificate cannot be authenticated

    # ---- 7. metrics, integrity, health -----------------------------------------------------
    def metric(self, text, name):
        for line in text.splitlines():
            if line.startswith(name + " "):
                return float(line.split()[-1])
        return 0.0

    def test_metrics_integrity_and_health(self):
        api = self.api
        self.assertEqual(api.get(f"{API}/health").json(), {"status": "ok"})
        self.assertEqual(api.get(f"{API}/health", "pvt_" + "C" * 43).status, 200)
        self.assertError(api.get(f"{API}/metrics", self.tokens["leg"]), 403)
        self.assertError(api.get(f"{API}/metrics", self.tokens["rev"]), 403)
        self.assertError(api.get(f"{API}/metrics"), 401)
        first = api.get(f"{API}/metrics", self.tokens["aud"])
        self.assertEqual(first.status, 200, first)
        self.assertTrue(first.headers["content-type"].startswith("text/plain"), first.headers)
        text = first.body.decode()
        for name in ("postvault_api_request_duration_seconds_bucket", "postvault_index_lag_messages",
                     "postvault_queue_messages"):
            self.assertIn(name, text)
        sample = re.compile(r'^[a-zA-Z_:][a-zA-Z0-9_:]*(\{[a-zA-Z_][a-zA-Z0-9_]*="[^"]*"(,[a-zA-Z_][a-zA-Z0-9_]*="[^"]*")*\})?'
                            r' (-?[0-9.]+(e[+-]?[0-9]+)?|\+Inf|NaN)$')
        for line in text.splitlines():
            if line and not line.startswith("#"):
                self.assertRegex(line, sample)
        self.assertGreaterEqual(self.metric(text, "postvault_index_lag_messages"), 0)
        # Buckets are cumulative and end with the count.
        route = '{route="/api/v1/search/count",le="'
        buckets = [(line.split('le="')[1].split('"')[0], float(line.split()[-1])) for line in text.splitlines()
                   if line.startswith("postvault_api_request_duration_seconds_bucket" + route)]
        self.assertGreater(len(buckets), 3)
        self.assertEqual([b[1] for b in buckets], sorted(b[1] for b in buckets))
        self.assertEqual(buckets[-1][0], "+Inf")
        count_name = 'postvault_api_request_duration_seconds_count{route="/api/v1/search/count"}'
        self.assertEqual(buckets[-1][1], self.metric(text, count_name))
        before = self.metric(text, count_name)
        self.count("wombat")
        self.count("fyi")
        after = self.metric(api.get(f"{API}/metrics", self.tokens["adm"]).body.decode(), count_name)
        self.assertEqual(after, before + 2)

    def test_integrity_verification_reports_an_intact_archive(self):
        """/integrity verifies while the server runs (and records API calls). The archive is intact."""
        api = self.api
        self.assertError(api.get(f"{API}/integrity?refresh=perhaps", self.tokens["aud"]), 400)
        self.assertError(api.get(f"{API}/integrity", self.tokens["leg"]), 403)
        started = api.get(f"{API}/integrity?refresh=true", self.tokens["aud"])
        self.assertEqual(started.status, 202, started)
        self.assertEqual(started.json()["state"], "running")
        done = wait_until(lambda: (lambda r: r if r.status == 200 else None)(api.get(f"{API}/integrity",
                                                                                       self.tokens["aud"])),
                          timeout=60, interval=0.2, message="the verification to end")
        report = done.json()
        self.assertEqual(report["state"], "done")
        # The command line's verification (a reader beside the server) agrees it is intact.
        self.assertIn("archive intact", self.pv.archive("verify").stdout.decode())
        self.assertIs(report["report"]["ok"], True, report)
        self.assertEqual(report["report"]["problems"], [])
        self.assertGreaterEqual(report["report"]["messages"], len(CRAFTED) + self.corpus_imported)
        self.assertGreaterEqual(report["finished"], report["started"])

    # ---- 8. tokens over the API -----------------------------------------------------------
    def test_tokens_created_listed_and_revoked_over_the_api(self):
        api, admin = self.api, self.tokens["adm"]
        made = api.post(f"{API}/tokens", admin, {"name": "apimade", "role": "auditor", "expires": "2031-06-30"})
        self.assertEqual(made.status, 201, made)
        secret = made.json()["token"]
        self.assertRegex(secret, r"^pvt_[A-Za-z0-9_-]{43}$")
        self.assertNotIn("hash", made.json())
        self.assertEqual((made.json()["name"], made.json()["role"]), ("apimade", "auditor"))
        self.assertEqual(made.json()["expires"], calendar.timegm((2031, 6, 30, 0, 0, 0)))
        self.assertEqual(api.get(f"{API}/search/count?q=*", secret).status, 200)
        self.assertEqual(api.get(f"{API}/tokens", secret).status, 403)
        scoped = api.post(f"{API}/tokens", admin, {"name": "apireviewer", "role": "reviewer",
                                                   "custodians": [CUSTODIAN]})
        self.assertEqual(scoped.status, 201, scoped)
        self.assertEqual(self.api.get(f"{API}/search/count?q=*", scoped.json()["token"]).json()["total"],
                         self.count(f"participant:{CUSTODIAN}"))

        for bad in ({"name": "apimade", "role": "auditor"},           # a live token has that name
                    {"name": "x", "role": "emperor"}, {"name": "x y", "role": "auditor"},
                    {"name": "x", "role": "reviewer"}, {"name": "x", "role": "auditor", "custodians": ["a@b.c"]},
                    {"name": "x", "role": "auditor", "expires": "2001-01-01"},
                    {"name": "x", "role": "auditor", "expires": "soon"}, {"name": "x"},
                    {"name": "x", "role": "auditor", "hash": "00"}):
            response = api.post(f"{API}/tokens", admin, bad)
            self.assertIn(response.status, (400, 409), (bad, response))
            error_of(response)

        listing = api.get(f"{API}/tokens", admin)
        self.assertEqual(listing.status, 200, listing)
        names = {t["name"]: t for t in listing.json()["tokens"]}
        self.assertLessEqual({"adm", "aud", "leg", "rev", "apimade", "apireviewer"}, set(names))
        for token in listing.json()["tokens"]:
            self.assertFalse({"hash", "token", "secret"} & set(token), token)
        for known in (secret, admin, self.tokens["aud"]):
            self.assertNotIn(known.encode(), listing.body)
            self.assertNotIn(hashlib.sha256(known.encode()).hexdigest().encode(), listing.body)
        self.assertNotIn(b"pvt_", listing.body)
        # Only the hash is stored; the secret is nowhere on the record.
        stored = (self.pv.directory / "api-tokens.json").read_text()
        self.assertIn(hashlib.sha256(secret.encode()).hexdigest(), stored)
        self.assertNotIn(secret, stored)
        self.assertEqual(os.stat(self.pv.directory / "api-tokens.json").st_mode & 0o777, 0o600)
        record = api.get(f"{API}/audit?actor=adm&limit=1000", admin)
        self.assertNotIn(secret.encode(), record.body)
        creation = [e for e in record.json()["events"] if e["subject"] == "apimade"]
        self.assertEqual(creation[0]["detail"]["status"], 201)
        self.assertEqual(creation[0]["detail"]["body"], {"name": "apimade", "role": "auditor", "expires": "2031-06-30"})

        revoked = api.request("DELETE", f"{API}/tokens/apimade", admin)
        self.assertEqual((revoked.status, revoked.json()), (200, {"revoked": "apimade"}))
        self.assertError(api.get(f"{API}/search/count?q=*", secret), 401, "auth.token")
        self.assertError(api.request("DELETE", f"{API}/tokens/apimade", admin), 404)
        self.assertNotEqual({t["name"]: t for t in api.get(f"{API}/tokens", admin).json()["tokens"]}["apimade"]["revoked"], 0)
        # A token made over the API is on the chain like one made on the command line.
        token_events = api.get(f"{API}/audit?action=token&limit=1000", admin).json()["events"]
        self.assertIn("adm", {e["subject"] for e in token_events})          # made with `token create`
        self.assertIn("apimade", {e["subject"] for e in token_events}, "POST /tokens left no 'token' event")


class ApiLiveArchiveTest(ApiServerCase):
    """Mail archived while the server runs: the API must see it (search, holds, reviewers)."""

    IMPORT_CORPUS = False

    def test_mail_archived_after_start_is_searchable_and_held(self):
        api, legal = self.api, self.tokens["leg"]
        self.assertEqual(self.count("subject:nightingale"), 3)
        custodian_count = self.count(f"participant:{CUSTODIAN}", "rev")
        by_query = api.post(f"{API}/holds", legal, {"name": "nightingale", "reason": "litigation 42",
                                                     "query": "subject:nightingale"}).json()
        by_custodian = api.post(f"{API}/holds", legal, {"name": "carla", "reason": "custodian",
                                                         "custodians": [CUSTODIAN]}).json()
        self.assertEqual((by_query["count"], by_custodian["count"]), (3, custodian_count))

        later = self.tmp / "later"
        later.mkdir()
        for name, data in LATER.items():
            (later / f"{name}.eml").write_bytes(data)
        imported = self.pv.archive("import", "--format", "eml", later)  # through the running server
        self.assertIn("imported 3", imported.stdout.decode())
        wait_until(lambda: self.cli_count("subject:nightingale") == 5 and self.cli_count("id:cust-later@pv.test") == 1,
                   timeout=60, interval=0.3, message="the server to index the later mail")
        everything = self.cli_count("*")
        try:
            wait_until(lambda: self.count("*") == everything, timeout=15, interval=0.3, message="the API to see it")
        except AssertionError:
            self.fail(f"the index holds {everything} messages (postvault search --count '*'); "
                      f"GET /search/count?q=* still answers {self.count('*')} 15 s later")
        self.assertEqual(api.get(f"{API}/holds/{by_query['id']}", legal).json()["count"], 5)
        self.assertEqual(api.get(f"{API}/holds/{by_custodian['id']}", legal).json()["count"], custodian_count + 1)
        n5 = self.id_of("nightingale-5@pv.test")
        self.assertIn(by_query["id"], {h["id"] for h in api.get(f"{API}/messages/{n5}", legal).json()["holds"]})
        later_id = self.id_of("cust-later@pv.test")
        self.assertEqual(self.count("*", "rev"), custodian_count + 1)
        self.assertEqual(api.get(f"{API}/messages/{later_id}/raw", self.tokens["rev"]).body, LATER["K"])


class ApiLimitsTest(ApiServerCase):
    """Connection limits on a server of their own: read_timeout 2 s, idle_timeout 3 s, 3 connections."""

    API_CONFIG = 'read_timeout = "2s"\nidle_timeout = "3s"\nmax_connections = 3\n'
    IMPORT_CORPUS = False

    def test_slowloris_is_cut_at_read_timeout_while_others_are_served(self):
        api = self.api
        slow = api.tls_socket()
        started = time.monotonic()
        request = f"GET {API}/search/count?q=* HTTP/1.1\r\nHost: postvault.test\r\nX-Slow: {'a' * 40}\r\n\r\n".encode()
        closed_after, sent, served_meanwhile = None, 0, None
        for byte in request:
            try:
                slow.sendall(bytes([byte]))
                sent += 1
            except (BrokenPipeError, ConnectionResetError, ssl.SSLError):
                closed_after = time.monotonic() - started
                break
            if sent == 1:
                t = time.monotonic()
                served_meanwhile = (api.get(f"{API}/search/count?q=*", self.tokens["aud"]).status,
                                    time.monotonic() - t)
            ready, _, _ = select.select([slow], [], [], max(0.0, 1.0 - (time.monotonic() - started) % 1.0))
            if ready and closed_by_peer(slow, 0.5):
                closed_after = time.monotonic() - started
                break
        slow.close()
        self.assertIsNotNone(closed_after, "the slow client was never cut off")
        self.assertLess(sent, len(request))
        self.assertGreater(closed_after, 1.5)
        self.assertLess(closed_after, 4.5)
        self.assertEqual(served_meanwhile[0], 200)
        self.assertLess(served_meanwhile[1], 1.0)

        # A TCP connection that never starts TLS is closed too.
        with socket.create_connection(("127.0.0.1", self.api_port), timeout=10) as silent:
            started = time.monotonic()
            silent.settimeout(6)
            try:
                self.assertEqual(silent.recv(1), b"")
            except ConnectionResetError:
                pass
            self.assertLess(time.monotonic() - started, 4.5)
        # An idle keep-alive connection closes after idle_timeout.
        idle = api.tls_socket()
        idle.sendall(f"GET {API}/health HTTP/1.1\r\nHost: postvault.test\r\n\r\n".encode())
        self.assertEqual(read_response(idle)[0], 200)
        started = time.monotonic()
        self.assertTrue(closed_by_peer(idle, 8), "idle connection not closed")
        self.assertGreater(time.monotonic() - started, 2.5)
        idle.close()
        self.assertAlive()

    def test_max_connections(self):
        api = self.api
        held = []
        for _ in range(3):
            sock = api.tls_socket()
            sock.sendall(f"GET {API}/health HTTP/1.1\r\nHost: postvault.test\r\n\r\n".encode())
            self.assertEqual(read_response(sock)[0], 200)
            held.append(sock)
        refused = None
        try:
            fourth = api.tls_socket()
            fourth.settimeout(5)
            try:
                refused = read_response(fourth)
            except (ConnectionError, ssl.SSLError, OSError):
                refused = "closed"
            fourth.close()
        except (ConnectionError, ssl.SSLError, OSError):
            refused = "refused"
        if refused not in ("closed", "refused"):
            status, _, body = refused
            self.assertEqual(status, 503, body)
            self.assertEqual(json.loads(body)["error"]["code"], "server.busy")
        else:
            self.fail(f"the 4th connection was {refused}, not answered 503")
        # The held connections still work.
        held[0].sendall(f"GET {API}/search/count?q=* HTTP/1.1\r\nHost: postvault.test\r\n"
                        f"Authorization: Bearer {self.tokens['aud']}\r\n\r\n".encode())
        self.assertEqual(read_response(held[0])[0], 200)
        for sock in held:
            sock.close()
        wait_until(lambda: api.get(f"{API}/health").status == 200, timeout=10, message="/health after closing")
        # Several at once again, one after another.
        for _ in range(6):
            self.assertEqual(api.get(f"{API}/search/count?q=*", self.tokens["aud"]).status, 200)


if __name__ == "__main__":
    unittest.main()
