"""E-discovery exports through the audit API, read back by independent tools.

Each format is exported from the real server and opened with something that is not postvault:
Python's mailbox for mbox, zipfile (and the `unzip` program) for the zips, ElementTree for the
EDRM XML, a plain split for the Concordance DAT; every item's SHA-256 and MD5 are recomputed and
compared with the manifest and with the bytes `archive get` returns; the custody statement is
checked with `openssl pkeyutl -verify` against the archive's own public key. Also: roles on every
export route, HTTP Range on the download, 409 before the job is done, the size bound, and the
export events on the audit record.
"""

import base64
import hashlib
import io
import json
import mailbox
import re
import subprocess
import time
import unittest
import xml.etree.ElementTree as ElementTree
import zipfile

from test_api import API, ApiServerCase, error_of


class ApiExportTest(ApiServerCase):
    API_CONFIG = "max_export_messages = 10\n"
    IMPORT_CORPUS = False

    def start_export(self, body, token="leg"):
        response = self.api.post(f"{API}/exports", self.tokens[token], body)
        self.assertEqual(response.status, 202, response)
        return response.json()

    def wait_done(self, export_id, token="leg", timeout=60):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            response = self.api.get(f"{API}/exports/{export_id}", self.tokens[token])
            self.assertEqual(response.status, 200, response)
            job = response.json()
            if job["state"] in ("done", "failed"):
                self.assertEqual(job["state"], "done", job)
                return job
            time.sleep(0.2)
        self.fail(f"export {export_id} not done after {timeout}s")

    def download(self, export_id, headers=None):
        return self.api.get(f"{API}/exports/{export_id}/download", self.tokens["leg"], headers=headers)

    def originals(self, ids):
        return {i: self.pv.archive("get", i).stdout for i in ids}

    def check_manifest(self, manifest, originals):
        self.assertEqual(manifest["count"], len(originals))
        self.assertEqual({item["id"] for item in manifest["items"]}, set(originals))
        for item in manifest["items"]:
            data = originals[item["id"]]
            self.assertEqual(item["sha256"], hashlib.sha256(data).hexdigest())
            self.assertEqual(item["md5"], hashlib.md5(data).hexdigest())
            self.assertEqual(item["size"], len(data))

    def check_custody(self, custody, export_id, originals):
        statement = json.loads(custody["statement"])
        self.assertEqual(statement["export_id"], export_id)
        self.assertEqual(statement["count"], len(originals))
        lines = "".join(f"{i} {hashlib.sha256(originals[i]).hexdigest()}\n" for i in sorted(originals))
        self.assertEqual(statement["items_digest"], hashlib.sha256(lines.encode()).hexdigest())
        self.custody_checks = getattr(self, "custody_checks", 0) + 1
        work = self.tmp / f"custody-{export_id}-{self.custody_checks}"
        work.mkdir()
        (work / "statement").write_text(custody["statement"])
        (work / "sig").write_bytes(base64.b64decode(custody["signature"]))
        # The archive's own public key, not the one the record carries.
        public = subprocess.run(["openssl", "pkey", "-in", str(self.pv.directory / "keys" / "archive-signing.pem"),
                                 "-pubout"], capture_output=True, text=True, check=True).stdout
        self.assertEqual(public.strip(), custody["public_key_pem"].strip())
        (work / "key.pem").write_text(public)
        verify = subprocess.run(["openssl", "pkeyutl", "-verify", "-pubin", "-inkey", str(work / "key.pem"), "-rawin",
                                 "-in", str(work / "statement"), "-sigfile", str(work / "sig")],
                                capture_output=True, text=True)
        self.assertEqual(verify.returncode, 0, verify.stdout + verify.stderr)
        (work / "statement").write_text(custody["statement"].replace('"count":', '"count": '))
        tampered = subprocess.run(["openssl", "pkeyutl", "-verify", "-pubin", "-inkey", str(work / "key.pem"),
                                   "-rawin", "-in", str(work / "statement"), "-sigfile", str(work / "sig")],
                                  capture_output=True, text=True)
        self.assertNotEqual(tampered.returncode, 0, "a changed statement must not verify")

    def test_every_format_reads_back_with_its_hashes(self):
        query = "wombat OR nightingale"
        ids = self.all_ids(query)
        self.assertGreaterEqual(len(ids), 4)
        originals = self.originals(ids)
        for fmt in ("mbox", "eml-zip", "edrm-xml", "dat"):
            with self.subTest(format=fmt):
                job = self.start_export({"format": fmt, "query": query, "name": f"matter {fmt}"})
                self.assertEqual(job["total"], len(ids))
                job = self.wait_done(job["id"])
                self.assertEqual(job["done"], len(ids))
                response = self.download(job["id"])
                self.assertEqual(response.status, 200, response)
                self.assertEqual(response.headers["x-postvault-sha256"], hashlib.sha256(response.body).hexdigest())
                self.assertEqual(job["sha256"], hashlib.sha256(response.body).hexdigest())
                self.assertEqual(len(response.body), job["size"])
                manifest = self.api.get(f"{API}/exports/{job['id']}/manifest", self.tokens["leg"])
                self.assertEqual(manifest.status, 200, manifest)
                self.check_manifest(manifest.json()["manifest"], originals)
                self.check_custody(manifest.json()["custody"], job["id"], originals)
                path = self.tmp / f"export-{fmt}"
                path.write_bytes(response.body)
                if fmt == "mbox":
                    self.assertEqual(response.headers["content-type"], "application/mbox")
                    box = mailbox.mbox(str(path))
                    texts = sorted(re.sub(rb"(?m)^>(>*From )", rb"\1", box.get_bytes(k)) for k in box.keys())
                    self.assertEqual(texts, sorted(o.replace(b"\r\n", b"\n") for o in originals.values()))
                    continue
                self.assertEqual(response.headers["content-type"], "application/zip")
                test = subprocess.run(["unzip", "-t", str(path)], capture_output=True, text=True)
                self.assertEqual(test.returncode, 0, test.stdout + test.stderr)
                archive = zipfile.ZipFile(io.BytesIO(response.body))
                inner = json.loads(archive.read("manifest.json"))
                self.check_manifest(inner, originals)
                self.check_custody(json.loads(archive.read("custody.json")), job["id"], originals)
                natives = "messages" if fmt == "eml-zip" else "natives"
                for i, data in originals.items():
                    self.assertEqual(archive.read(f"{natives}/{i}.eml"), data)
                if fmt == "edrm-xml":
                    root = ElementTree.fromstring(archive.read("edrm.xml"))
                    documents = root.findall(".//Document")
                    self.assertEqual({d.get("DocID") for d in documents}, ids)
                    for document in documents:
                        native = document.find(".//File[@FileType='Native']/ExternalFile")
                        self.assertEqual(native.get("Hash"), hashlib.md5(originals[document.get("DocID")]).hexdigest())
                    subjects = [t.get("TagValue") for t in root.findall(".//Tag[@TagName='#Subject']")]
                    self.assertIn("quarterly wombat figures", subjects)
                if fmt == "dat":
                    text = archive.read("loadfile.dat").decode("utf-8-sig")
                    rows = [line for line in text.split("\r\n") if line]
                    header = [f.strip("\u00fe") for f in rows[0].split("\x14")]
                    self.assertEqual(header[:2], ["BEGDOC", "ENDDOC"])
                    self.assertEqual(len(rows) - 1, len(ids))
                    for row in rows[1:]:
                        fields = dict(zip(header, (f.strip("\u00fe") for f in row.split("\x14"))))
                        self.assertEqual(fields["MD5HASH"], hashlib.md5(originals[fields["BEGDOC"]]).hexdigest())
                        self.assertEqual(archive.read(fields["NATIVEPATH"]), originals[fields["BEGDOC"]])

    def test_hold_and_id_exports_ranges_and_bounds(self):
        hold = self.api.post(f"{API}/holds", self.tokens["leg"],
                             {"name": "export hold", "reason": "test", "query": "subject:nightingale"})
        self.assertEqual(hold.status, 201, hold)
        held = self.all_ids("subject:nightingale")
        # hold: in the query language names the hold (by name or id), through the API and the CLI.
        self.assertEqual(self.count('hold:"export hold"'), len(held))
        self.assertEqual(self.count("hold:" + hold.json()["id"] + " AND kickoff"), 1)
        self.assertEqual(self.cli_count('hold:"export hold"'), len(held))
        self.assertError(self.api.get(f"{API}/search/count?q=hold:nonesuch", self.tokens["leg"]), 400, "search.query",
                         "no legal hold named 'nonesuch'")
        job = self.wait_done(self.start_export({"format": "eml-zip", "hold_id": hold.json()["id"]})["id"])
        self.assertEqual(job["total"], len(held))
        names = zipfile.ZipFile(io.BytesIO(self.download(job["id"]).body)).namelist()
        self.assertEqual({n[len("messages/"):-4] for n in names if n.startswith("messages/")}, held)

        one = sorted(held)[0]
        job = self.wait_done(self.start_export({"format": "mbox", "message_ids": [one]})["id"])
        whole = self.download(job["id"]).body
        part = self.download(job["id"], headers={"Range": "bytes=10-19"})
        self.assertEqual(part.status, 206, part)
        self.assertEqual(part.body, whole[10:20])
        self.assertEqual(part.headers["content-range"], f"bytes 10-19/{len(whole)}")
        tail = self.download(job["id"], headers={"Range": "bytes=-5"})
        self.assertEqual((tail.status, tail.body), (206, whole[-5:]))
        beyond = self.download(job["id"], headers={"Range": f"bytes={len(whole) + 10}-"})
        self.assertEqual(beyond.status, 416, beyond)
        self.assertEqual(beyond.headers["content-range"], f"bytes */{len(whole)}")

        # Bounds and bad requests: each a clear error.
        too_many = self.api.post(f"{API}/exports", self.tokens["leg"], {"format": "mbox", "query": "*"})
        self.assertError(too_many, 400, "export.too_large")
        self.assertError(self.api.post(f"{API}/exports", self.tokens["leg"], {"format": "pdf", "query": "x"}), 400,
                         "export.format")
        self.assertError(self.api.post(f"{API}/exports", self.tokens["leg"],
                                       {"format": "mbox", "query": "x", "hold_id": "H1"}), 400, "export.invalid")
        self.assertError(self.api.post(f"{API}/exports", self.tokens["leg"], {"format": "mbox", "hold_id": "HNOPE"}),
                         404, "hold.not_found")
        self.assertError(self.api.post(f"{API}/exports", self.tokens["leg"],
                                       {"format": "mbox", "message_ids": ["../../etc/passwd"]}), 400, "export.invalid")
        self.assertError(self.api.get(f"{API}/exports/ENOPE", self.tokens["leg"]), 404, "export.not_found")
        self.assertError(self.api.get(f"{API}/exports/ENOPE/download", self.tokens["leg"]), 404, "export.not_found")

        # Who exported what is on the record.
        events = self.api.get(f"{API}/audit?action=export&limit=1000", self.tokens["adm"]).json()["events"]
        finished = [e for e in events if e["subject"] == job["id"]]
        self.assertEqual([e["detail"]["state"] for e in finished], ["queued", "done"])
        self.assertEqual(finished[-1]["detail"]["sha256"], hashlib.sha256(whole).hexdigest())
        self.assertEqual(finished[-1]["actor"], "api:leg")

    def test_roles_on_export_routes(self):
        job = self.wait_done(self.start_export({"format": "mbox", "query": "subject:lookalike"})["id"])
        routes = [("POST", f"{API}/exports", {"format": "mbox", "query": "subject:lookalike"}),
                  ("GET", f"{API}/exports", None), ("GET", f"{API}/exports/{job['id']}", None),
                  ("GET", f"{API}/exports/{job['id']}/download", None),
                  ("GET", f"{API}/exports/{job['id']}/manifest", None)]
        for method, path, body in routes:
            for token, expected in [("adm", 202 if method == "POST" else 200), ("leg", 202 if method == "POST" else 200),
                                    ("aud", 403), ("rev", 403), (None, 401)]:
                with self.subTest(method=method, path=path, token=token):
                    response = self.api.request(method, path, self.tokens[token] if token else None, body=body)
                    self.assertEqual(response.status, expected, response)
                    if expected >= 400:
                        self.assertEqual(error_of(response)["code"], "auth.role" if expected == 403 else "auth.token")


if __name__ == "__main__":
    unittest.main()
