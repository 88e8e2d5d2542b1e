"""OpenPGP through the real binary: `postvault keys ...`, and the relay encrypting and signing as
the policy says, checked by independent implementations: GnuPG (`gpg`, its own home) and Sequoia
(`sq`) decrypt and verify what the relay sent; attachments come out byte-identical. Key discovery
against an HKP keyserver and a WKD server started here on loopback (tests/tools/keyserver.py), and
against OpenLDAP's slapd as the LDAP keyserver at keys.<domain> (tests/tools/ldap_keyserver.py).
"""

import email
import email.policy
import hashlib
import json
import os
import pathlib
import re
import shutil
import smtplib
import socket
import subprocess
import tempfile
import time

from harness import PYTHON, SOURCE_DIR, PostvaultTestCase, free_port, wait_for_port, wait_until

KEYSERVER = pathlib.Path(SOURCE_DIR) / "tests" / "tools" / "keyserver.py"
LDAP_KEYSERVER = pathlib.Path(SOURCE_DIR) / "tests" / "tools" / "ldap_keyserver.py"

POLICY = r'''
[policy]
adhoc_subject_tag = "[secure]"
adhoc_encrypt = ["pgp", "bounce"]

[[policy.rules]]
name = "partners"
when = { recipient_domain = ["partner.example", "wkd.example"] }
then = { encrypt = ["pgp", "smime", "bounce"], tag = ["encrypted"] }

[[policy.rules]]
name = "verified"
when = { recipient_domain = ["verified.example"] }
then = { encrypt = ["pgp", "bounce"], verified_key = true }

[[policy.rules]]
name = "signed"
when = { recipient_domain = ["signed.example"] }
then = { sign = true }

[[policy.rules]]
name = "both"
when = { recipient_domain = ["both.example"] }
then = { encrypt = ["pgp", "hold"], sign = true }
'''


class Gpg:
    """A user's own GnuPG, in a short temporary home."""

    def __init__(self, owner):
        self.home = tempfile.mkdtemp(prefix="pvg-", dir="/tmp")
        owner.cleanups.append(self.close)

    def run(self, *args, input_bytes=None, check=True):
        result = subprocess.run(["gpg", "--homedir", self.home, "--batch", "--yes", "--pinentry-mode", "loopback",
                                 "--passphrase", "", *args], input=input_bytes, capture_output=True, timeout=120)
        if check and result.returncode != 0:
            raise AssertionError(f"gpg {args} failed: {result.stderr.decode(errors='replace')}")
        return result

    def generate(self, user_id, faked_time=None, expire="0"):
        extra = ["--faked-system-time", faked_time] if faked_time else []
        self.run(*extra, "--quick-gen-key", user_id, "ed25519", "sign", expire)
        fpr = self.fingerprint(user_id)
        self.run(*extra, "--quick-add-key", fpr, "cv25519", "encr", expire)
        return fpr

    def fingerprint(self, user_id):
        out = self.run("--with-colons", "--list-keys", user_id).stdout.decode()
        return next(line.split(":")[9] for line in out.splitlines() if line.startswith("fpr:"))

    def export(self, what, secret=False, armor=True):
        args = (["--armor"] if armor else []) + ["--export-secret-keys" if secret else "--export", what]
        return self.run(*args).stdout

    def close(self):
        subprocess.run(["gpgconf", "--homedir", self.home, "--kill", "all"], capture_output=True)
        shutil.rmtree(self.home, ignore_errors=True)


def original_message(to="bob@partner.example", subject="Quarterly numbers"):
    """A message with a UTF-8 body, a binary attachment and an attachment with a non-ASCII name."""
    binary = bytes(range(256)) * 40
    msg = email.message.EmailMessage()
    msg["From"] = "Alice <alice@corp.example>"
    msg["To"] = to
    msg["Subject"] = subject
    msg["Message-ID"] = "<pgp-test@corp.example>"
    msg.set_content("Grüße — the numbers are attached.\n")
    msg.add_attachment(binary, maintype="application", subtype="octet-stream", filename="data.bin")
    msg.add_attachment("Straße 1, Köln\n".encode(), maintype="text", subtype="plain", filename="Übersicht.txt")
    return msg.as_bytes(policy=email.policy.SMTP), binary


def attachments(message_bytes):
    parsed = email.message_from_bytes(message_bytes, policy=email.policy.default)
    return {part.get_filename(): part.get_payload(decode=True) for part in parsed.iter_attachments()}


class KeyServer:
    def __init__(self, owner, directory, tls=None):
        args = [PYTHON, str(KEYSERVER), "--dir", str(directory)]
        if tls:
            args += ["--tls-cert", str(tls[0]), "--tls-key", str(tls[1])]
        self.directory = pathlib.Path(directory)
        self.process = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        line = self.process.stdout.readline()
        if not line.startswith("READY"):
            raise RuntimeError("keyserver did not start: " + line + self.process.stderr.read())
        self.port = int(line.split()[1])
        owner.cleanups.append(self.stop)

    def requests(self):
        log = self.directory / "requests.log"
        return log.read_text() if log.exists() else ""

    def stop(self):
        self.process.terminate()
        self.process.wait(timeout=5)


class LdapKeyServer:
    """slapd with the OpenPGP keyserver schema and the keys in DIRECTORY/keys/*.asc, on loopback."""

    def __init__(self, owner, directory):
        self.directory = pathlib.Path(directory)
        self.process = subprocess.Popen([PYTHON, str(LDAP_KEYSERVER), "--dir", str(directory)],
                                        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        owner.cleanups.append(self.stop)
        line = self.process.stdout.readline()
        if not line.startswith("READY"):
            raise RuntimeError("ldap_keyserver.py did not start: " + line + self.process.stderr.read())
        self.port = int(line.split()[1])

    def searches(self):
        """slapd's log lines for the key searches (under ou=PGP Keys)."""
        log = self.directory / "slapd.log"
        text = log.read_text(errors="replace") if log.exists() else ""
        return [line for line in text.splitlines() if 'SRCH base="ou=PGP Keys' in line]

    def stop(self):
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=15)


class PgpRelayTest(PostvaultTestCase):
    def setUp(self):
        super().setUp()
        self.sink = self.start_sink()
        self.pv = self.start_postvault(delivery={"relayhost": f"127.0.0.1:{self.sink.port}"}, start=False)
        # Only the keys imported here: no test may ask the Internet's WKD servers.
        self.config = self.pv.config_path.read_text() + '[pgp]\nlookup = ["local"]\n' + POLICY
        self.pv.config_path.write_text(self.config)
        self.bob = Gpg(self)
        self.bob_fpr = self.bob.generate("Bob <Bob@Partner.Example>")
        key_file = self.tmp / "bob.asc"
        key_file.write_bytes(self.bob.export(self.bob_fpr))
        imported = self.keys("import", str(key_file))
        self.assertIn("1 key(s) imported", imported.stdout)

    def keys(self, *args, check=True):
        return self.pv.cli("keys", args[0], "--config", str(self.pv.config_path), *args[1:], check=check)

    def send(self, data, to):
        with smtplib.SMTP("127.0.0.1", self.pv.port, timeout=30) as client:
            client.sendmail("alice@corp.example", to, data)

    def delivered_to(self, address):
        found = wait_until(lambda: [d for m, d in self.sink.messages() if address in m["rcpt_tos"]], timeout=30,
                           message=f"a message for {address}")
        return found[0]

    def test_encrypted_for_the_recipient_readable_by_gpg_and_sq_with_attachments_intact(self):
        self.pv.start()
        original, binary = original_message()
        # Mixed case in the envelope, another case in the key's user ID: still found.
        self.send(original, ["BOB@partner.EXAMPLE"])
        sent = self.delivered_to("BOB@partner.EXAMPLE")
        parsed = email.message_from_bytes(sent, policy=email.policy.default)
        self.assertEqual(parsed.get_content_type(), "multipart/encrypted")
        self.assertEqual(parsed.get_param("protocol"), "application/pgp-encrypted")
        self.assertNotIn(b"Quarterly numbers are", sent)
        self.assertNotIn(binary[:64], sent)
        self.assertNotIn("Grüße".encode(), sent)
        self.assertEqual(parsed["Subject"], "Quarterly numbers")  # protected headers are off by default
        ciphertext = parsed.get_payload()[1].get_payload(decode=True)

        decrypted = self.bob.run("--decrypt", input_bytes=ciphertext).stdout
        inner = attachments(b"MIME-Version: 1.0\r\n" + decrypted)
        self.assertEqual(inner["data.bin"], binary)
        self.assertEqual(inner["Übersicht.txt"], "Straße 1, Köln\n".encode())

        secret = self.tmp / "bob-secret.asc"
        secret.write_bytes(self.bob.export(self.bob_fpr, secret=True))
        cipher_file = self.tmp / "cipher.asc"
        cipher_file.write_bytes(ciphertext)
        by_sq = subprocess.run(["sq", "decrypt", "--recipient-key", str(secret), str(cipher_file)],
                               capture_output=True, timeout=60)
        self.assertEqual(by_sq.returncode, 0, by_sq.stderr.decode(errors="replace"))
        self.assertEqual(by_sq.stdout, decrypted)

        # The archive records the method for that recipient.
        ids = self.pv.archive_list()

        def methods():
            return [o["method"] for i in ids for o in json.loads(self.pv.archive("show", i).stdout)["outcomes"]]
        wait_until(lambda: methods() == ["pgp"], message="pgp in the archive")

    def test_no_key_bounces_and_an_expired_key_is_not_used(self):
        eve = Gpg(self)
        fpr = eve.generate("Eve <eve@partner.example>", faked_time="20200101T000000", expire="1y")
        key_file = self.tmp / "eve.asc"
        key_file.write_bytes(eve.export(fpr))
        self.keys("import", str(key_file))
        listed = self.keys("list")
        self.assertIn("expired", listed.stdout)
        lookup = self.keys("lookup", "eve@partner.example", check=False)
        self.assertEqual(lookup.returncode, 1)
        self.assertIn("no usable OpenPGP key", lookup.stderr)

        original, _ = original_message(to="eve@partner.example")
        self.pv.start()
        self.send(original, ["eve@partner.example", "nokey@partner.example"])
        dsns = wait_until(lambda: [d for m, d in self.sink.messages() if m["rcpt_tos"] == ["alice@corp.example"]]
                          if len(self.sink.messages()) >= 2 else None, timeout=30, message="two DSNs")
        dsn = next(d for d in dsns if b"<eve@partner.example>" in d)
        self.assertIn(b"5.7.1", dsn)
        self.assertIn(b"no usable OpenPGP key for eve@partner.example", dsn)
        self.assertIn(b"smime: not available on this server", dsn)
        self.assertTrue(any(b"<nokey@partner.example>" in d for d in dsns))
        for meta, data in self.sink.messages():
            self.assertNotIn("eve@partner.example", meta["rcpt_tos"])
            self.assertNotIn("nokey@partner.example", meta["rcpt_tos"])

    def test_a_key_without_user_ids_is_used_for_the_address_it_was_fetched_or_imported_for(self):
        # As keys.openpgp.org serves a key whose address is not confirmed: no user ID at all.
        secret, cert = self.tmp / "dave-secret.pgp", self.tmp / "dave.asc"
        subprocess.run(["sq", "key", "generate", "--export", str(secret)], check=True, capture_output=True, timeout=60)
        with open(cert, "wb") as out:
            subprocess.run(["sq", "key", "extract-cert", str(secret)], check=True, stdout=out, timeout=60)
        inspected = subprocess.run(["sq", "inspect", str(cert)], check=True, capture_output=True, text=True).stdout
        self.assertNotIn("UserID", inspected)
        fpr = re.search(r"Fingerprint: ([0-9A-F]{40})", inspected).group(1)
        # Refused from the administrator unless an address is named for it.
        refused = self.keys("import", str(cert), check=False)
        self.assertNotEqual(refused.returncode, 0)
        self.assertIn("a key without user IDs needs the address it is for", refused.stderr)
        bad = self.keys("import", "--address", "not-an-address", str(cert), check=False)
        self.assertIn("'not-an-address' is not an address", bad.stderr)

        served = self.tmp / "served"
        (served / "hkp").mkdir(parents=True)
        (served / "hkp" / "dave@partner.example.asc").write_bytes(cert.read_bytes())
        server = KeyServer(self, served)
        self.pv.config_path.write_text(self.config.replace(
            'lookup = ["local"]', f'lookup = ["local", "keyserver"]\nkeyservers = ["hkp://127.0.0.1:{server.port}"]'))
        found = json.loads(self.keys("lookup", "Dave@Partner.Example", "--json").stdout)
        self.assertEqual(found["fingerprint"], fpr)
        self.assertEqual(found["found_by"], "keyserver")
        self.assertEqual(found["trust"], "unverified")
        self.assertEqual(found["addresses"], ["dave@partner.example"])

        self.pv.start()
        original, binary = original_message(to="dave@partner.example")
        self.send(original, ["dave@partner.example"])
        sent = self.delivered_to("dave@partner.example")
        parsed = email.message_from_bytes(sent, policy=email.policy.default)
        self.assertEqual(parsed.get_content_type(), "multipart/encrypted")
        cipher_file = self.tmp / "dave-cipher.asc"
        cipher_file.write_bytes(parsed.get_payload()[1].get_payload(decode=True))
        by_sq = subprocess.run(["sq", "decrypt", "--recipient-key", str(secret), str(cipher_file)],
                               capture_output=True, timeout=60)
        self.assertEqual(by_sq.returncode, 0, by_sq.stderr.decode(errors="replace"))
        self.assertEqual(attachments(b"MIME-Version: 1.0\r\n" + by_sq.stdout)["data.bin"], binary)

        # The administrator may bind one too: imported, verified, for the address given.
        erin_secret, erin = self.tmp / "erin-secret.pgp", self.tmp / "erin.pgp"
        subprocess.run(["sq", "key", "generate", "--export", str(erin_secret)], check=True, capture_output=True,
                       timeout=60)
        with open(erin, "wb") as out:
            subprocess.run(["sq", "key", "extract-cert", "--binary", str(erin_secret)], check=True, stdout=out,
                           timeout=60)
        self.assertIn("1 key(s) imported", self.keys("import", "--address", "Erin <Erin@Partner.example>", str(erin)).stdout)
        erin_found = json.loads(self.keys("lookup", "erin@partner.example", "--json").stdout)
        self.assertEqual((erin_found["found_by"], erin_found["trust"]), ("local", "verified"))

    def test_a_rule_asking_for_a_verified_key_does_not_use_a_harvested_one(self):
        vera = Gpg(self)
        fpr = vera.generate("vera@verified.example")
        keydata = __import__("base64").b64encode(vera.export(fpr, armor=False)).decode()
        config = self.config.replace('[pgp]\nlookup = ["local"]', '[pgp]\nlookup = ["local", "harvested"]')
        self.pv.config_path.write_text(config.replace("[smtp]", '[smtp]\nlocal_domains = ["corp.example"]', 1))
        self.pv.start()
        # Vera writes in (all recipients local: inbound), her Autocrypt key is harvested.
        inbound = ("From: vera@verified.example\r\nTo: staff@corp.example\r\nSubject: hi\r\n"
                   f"Autocrypt: addr=vera@verified.example; keydata={keydata}\r\n\r\nhello\r\n").encode()
        with smtplib.SMTP("127.0.0.1", self.pv.port, timeout=30) as client:
            client.sendmail("vera@verified.example", ["staff@corp.example"], inbound)
        wait_until(lambda: fpr in self.keys("list").stdout, message="the harvested key")
        found = json.loads(self.keys("lookup", "vera@verified.example", "--json").stdout)
        self.assertEqual((found["found_by"], found["trust"]), ("harvested", "unverified"))
        original, _ = original_message(to="vera@verified.example")
        self.send(original, ["vera@verified.example"])
        dsn = wait_until(lambda: [d for m, d in self.sink.messages() if m["rcpt_tos"] == ["alice@corp.example"]],
                         timeout=30, message="the DSN")[0]
        self.assertIn(b"harvested: skipped (the policy asks for a verified key)", dsn.replace(b"\r\n\t", b" "))
        self.assertFalse([m for m, d in self.sink.messages() if "vera@verified.example" in m["rcpt_tos"]])

    def test_signed_by_the_organization_key_verified_by_gpg_and_sq(self):
        generated = self.keys("generate", "security@corp.example")
        org_fpr = generated.stdout.split()[-1]
        self.pv.config_path.write_text(self.config.replace("[policy]", f'signing_key = "security@corp.example"\n\n[policy]'))
        self.pv.start()
        original, binary = original_message(to="carl@signed.example")
        self.send(original, ["carl@signed.example"])
        sent = self.delivered_to("carl@signed.example")
        parsed = email.message_from_bytes(sent, policy=email.policy.default)
        self.assertEqual(parsed.get_content_type(), "multipart/signed")
        self.assertEqual(parsed.get_param("micalg"), "pgp-sha256")

        # The exact bytes of the first part, between the boundaries (RFC 3156).
        boundary = parsed.get_boundary().encode()
        body = sent.split(b"\r\n\r\n", 1)[1]
        first = body.split(b"--" + boundary + b"\r\n", 1)[1].split(b"\r\n--" + boundary, 1)[0]
        signature = parsed.get_payload()[1].get_payload(decode=True)
        (self.tmp / "signed.txt").write_bytes(first)
        (self.tmp / "signed.sig").write_bytes(signature)
        public = self.tmp / "org.asc"
        public.write_bytes(self.keys("export", "security@corp.example").stdout.encode())

        carl = Gpg(self)
        carl.run("--import", str(public))
        verified = carl.run("--verify", str(self.tmp / "signed.sig"), str(self.tmp / "signed.txt"), check=False)
        self.assertEqual(verified.returncode, 0, verified.stderr.decode(errors="replace"))
        self.assertIn(b"Good signature", verified.stderr)
        by_sq = subprocess.run(["sq", "verify", "--signer-cert", str(public), "--detached", str(self.tmp / "signed.sig"),
                                str(self.tmp / "signed.txt")], capture_output=True, timeout=60)
        self.assertEqual(by_sq.returncode, 0, by_sq.stderr.decode(errors="replace"))
        self.assertIn(org_fpr[-16:].encode(), by_sq.stderr.replace(b" ", b""))
        self.assertEqual(attachments(first)["data.bin"], binary)

    def test_sign_and_encrypt_in_one_step(self):
        self.keys("generate", "security@corp.example")
        dora = Gpg(self)
        fpr = dora.generate("dora@both.example")
        key_file = self.tmp / "dora.asc"
        key_file.write_bytes(dora.export(fpr))
        self.keys("import", str(key_file))
        org = self.tmp / "org.asc"
        org.write_bytes(self.keys("export", "security@corp.example").stdout.encode())
        dora.run("--import", str(org))
        self.pv.config_path.write_text(self.config.replace("[policy]", 'signing_key = "security@corp.example"\n\n[policy]'))
        self.pv.start()
        original, binary = original_message(to="dora@both.example")
        self.send(original, ["dora@both.example"])
        sent = self.delivered_to("dora@both.example")
        parsed = email.message_from_bytes(sent, policy=email.policy.default)
        ciphertext = parsed.get_payload()[1].get_payload(decode=True)
        result = dora.run("--decrypt", input_bytes=ciphertext)
        self.assertIn(b"Good signature", result.stderr)
        self.assertEqual(attachments(b"MIME-Version: 1.0\r\n" + result.stdout)["data.bin"], binary)


class KeyDiscoveryTest(PostvaultTestCase):
    def setUp(self):
        super().setUp()
        self.pv = self.start_postvault(start=False)
        self.base = self.pv.config_path.read_text()

    def configure(self, pgp):
        self.pv.config_path.write_text(self.base + "\n[pgp]\n" + pgp)

    def keys(self, *args, check=True):
        return self.pv.cli("keys", args[0], "--config", str(self.pv.config_path), *args[1:], check=check)

    def test_hkp_keyserver_on_loopback(self):
        carol = Gpg(self)
        fpr = carol.generate("Carol <carol@partner.example>")
        served = self.tmp / "keys"
        (served / "hkp").mkdir(parents=True)
        (served / "hkp" / "carol@partner.example.asc").write_bytes(carol.export(fpr))
        server = KeyServer(self, served)
        self.configure(f'lookup = ["local", "wkd", "keyserver"]\nkeyservers = ["hkp://127.0.0.1:{server.port}"]\n'
                       f'resolve = {{ "openpgpkey.partner.example" = "127.0.0.1:1", "partner.example" = "127.0.0.1:1" }}\n'
                       'fetch_timeout = "3s"\n')
        found = json.loads(self.keys("lookup", "Carol@Partner.example", "--json").stdout)
        self.assertEqual(found["fingerprint"], fpr)
        self.assertEqual(found["found_by"], "keyserver")
        self.assertEqual(found["trust"], "unverified")
        self.assertTrue(any(line.startswith("wkd:") for line in found["tried"]), found["tried"])
        self.assertIn("search=carol%40partner.example", server.requests().lower())
        # Cached: the second lookup does not ask the keyserver again.
        before = server.requests().count("/pks/lookup")
        self.assertEqual(json.loads(self.keys("lookup", "carol@partner.example", "--json").stdout)["fingerprint"], fpr)
        self.assertEqual(server.requests().count("/pks/lookup"), before)
        missing = self.keys("lookup", "nobody@partner.example", check=False)
        self.assertEqual(missing.returncode, 1)
        self.assertIn("HTTP 404", missing.stderr)

    def test_wkd_over_https_on_loopback(self):
        cert, key = self.tmp / "wkd.crt", self.tmp / "wkd.key"
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                        "-subj", "/CN=openpgpkey.wkd.example", "-addext",
                        "subjectAltName=DNS:openpgpkey.wkd.example,DNS:wkd.example", "-days", "2",
                        "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
        dave = Gpg(self)
        fpr = dave.generate("dave@wkd.example")
        served = self.tmp / "wkd-keys"
        (served / "wkd").mkdir(parents=True)
        # The WKD hash of "dave": SHA-1 of the lower-cased local part in z-base-32.
        alphabet = "ybndrfg8ejkmcpqxot1uwisza345h769"
        bits = "".join(f"{b:08b}" for b in hashlib.sha1(b"dave").digest())
        digest = "".join(alphabet[int(bits[i:i + 5].ljust(5, "0"), 2)] for i in range(0, len(bits), 5))
        (served / "wkd" / digest).write_bytes(dave.export(fpr, armor=False))
        server = KeyServer(self, served, tls=(cert, key))
        self.configure(f'lookup = ["local", "wkd"]\nca_file = "{cert}"\n'
                       f'resolve = {{ "openpgpkey.wkd.example" = "127.0.0.1:{server.port}" }}\n')
        found = json.loads(self.keys("lookup", "Dave@WKD.example", "--json").stdout)
        self.assertEqual(found["fingerprint"], fpr)
        self.assertEqual(found["found_by"], "wkd")
        self.assertIn(f"/.well-known/openpgpkey/wkd.example/hu/{digest}", server.requests())
        listed = json.loads(self.keys("list", "--json").stdout)
        self.assertEqual([k["source"] for k in listed], ["wkd"])

    def test_ldap_keyserver_at_keys_domain_on_loopback(self):
        carol = Gpg(self)
        fpr = carol.generate("Carol <carol@partner.example>")
        served = self.tmp / "ldap"
        (served / "keys").mkdir(parents=True)
        (served / "keys" / "carol.asc").write_bytes(carol.export(fpr))
        server = LdapKeyServer(self, served)
        # The server is a keyserver GnuPG's dirmngr reads too.
        reader = Gpg(self)
        reader.run("--keyserver", f"ldap://127.0.0.1:{server.port}", "--recv-keys", fpr)
        self.assertEqual(reader.fingerprint("carol@partner.example"), fpr)
        searches_by_gpg = len(server.searches())
        self.configure(f'lookup = ["local", "ldap"]\nfetch_timeout = "3s"\n'
                       f'resolve = {{ "keys.partner.example" = "127.0.0.1:{server.port}" }}\n')
        found = json.loads(self.keys("lookup", "Carol@Partner.Example", "--json").stdout)
        self.assertEqual(found["fingerprint"], fpr)
        self.assertEqual(found["found_by"], "ldap")
        self.assertEqual(found["trust"], "unverified")
        self.assertEqual(found["tried"], ["local: no usable key", "ldap: keys.partner.example: 1 key(s) imported"])
        self.assertEqual([k["source"] for k in json.loads(self.keys("list", "--json").stdout)], ["ldap"])
        searches = server.searches()[searches_by_gpg:]
        self.assertEqual(len(searches), 1, searches)
        self.assertIn('filter="(&(|(pgpUserID=*<carol@partner.example>*)(pgpUserID=carol@partner.example))'
                      '(!(pgpRevoked=1))(!(pgpDisabled=1)))"', searches[0])
        # Cached for pgp.cache_ttl: the second lookup does not ask the server again.
        self.assertEqual(json.loads(self.keys("lookup", "carol@partner.example", "--json").stdout)["found_by"], "ldap")
        self.assertEqual(len(server.searches()), searches_by_gpg + 1)
        # An address without an entry: "no key", with the LDAP step's answer.
        missing = self.keys("lookup", "nobody@partner.example", check=False)
        self.assertEqual(missing.returncode, 1)
        self.assertIn("no usable OpenPGP key for nobody@partner.example", missing.stderr)
        self.assertIn("ldap: keys.partner.example: no key", missing.stderr)

    def test_ldap_server_refusing_or_silent_is_reported_within_fetch_timeout(self):
        closed = free_port()
        silent = socket.socket()
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)  # the kernel completes handshakes into the backlog; nobody answers
        self.cleanups.append(silent.close)
        for port, reason in ((closed, "Can't contact LDAP server"), (silent.getsockname()[1], "timed out")):
            self.configure(f'lookup = ["local", "ldap"]\nfetch_timeout = "2s"\n'
                           f'resolve = {{ "keys.partner.example" = "127.0.0.1:{port}" }}\n')
            started = time.monotonic()
            result = self.keys("lookup", "carol@partner.example", check=False)
            elapsed = time.monotonic() - started
            self.assertEqual(result.returncode, 1, result.stdout)
            self.assertIn("ldap: ", result.stderr)
            self.assertIn("keys.partner.example", result.stderr)
            self.assertIn(reason, result.stderr)
            self.assertLess(elapsed, 10, result.stderr)

    def test_generate_list_export_and_bad_input(self):
        self.configure('key_algorithm = "ed25519"\n')
        made = self.keys("generate", "Ops@Corp.Example")
        fpr = made.stdout.split()[-1]
        listed = json.loads(self.keys("list", "--json").stdout)
        self.assertEqual(listed[0]["fingerprint"], fpr)
        self.assertEqual(listed[0]["addresses"], ["ops@corp.example"])
        self.assertEqual(listed[0]["source"], "managed")
        self.assertTrue(listed[0]["secret"])
        exported = self.keys("export", "ops@corp.example").stdout
        self.assertIn("BEGIN PGP PUBLIC KEY BLOCK", exported)
        self.assertNotIn("PRIVATE", exported)
        home = pathlib.Path(self.pv.directory) / "pgp" / "gnupg"
        self.assertEqual(os.stat(home).st_mode & 0o777, 0o700)
        junk = self.tmp / "junk.asc"
        junk.write_text("not a key\n")
        bad = self.keys("import", str(junk), check=False)
        self.assertEqual(bad.returncode, 1)
        self.assertIn("no usable key", bad.stderr)
        self.assertEqual(self.keys("lookup", "not-an-address", check=False).returncode, 1)
        # gpg.conf is postvault's: AES-256 always; a line an import left behind (a crash between
        # adding and removing allow-non-selfsigned-uid) is gone at the next start.
        conf = home / "gpg.conf"
        self.assertIn("cipher-algo AES256", conf.read_text())
        conf.write_text(conf.read_text() + "allow-non-selfsigned-uid\n")
        self.keys("list")
        self.assertNotIn("allow-non-selfsigned-uid", conf.read_text())
        self.assertIn("cipher-algo AES256", conf.read_text())


def pgp_mime(headers, armored):
    """A PGP/MIME (RFC 3156) message around an armored OpenPGP message."""
    return (headers + 'MIME-Version: 1.0\r\nContent-Type: multipart/encrypted; protocol="application/pgp-encrypted";'
            ' boundary="b1"\r\n\r\n--b1\r\nContent-Type: application/pgp-encrypted\r\n\r\nVersion: 1\r\n\r\n--b1\r\n'
            'Content-Type: application/octet-stream\r\n\r\n').encode() + crlf(armored) + b"\r\n--b1--\r\n"


class WkdServedTest(PostvaultTestCase):
    """The organization's own Web Key Directory, served on the API listener: a partner's postvault
    finds our managed key through its WKD lookup over HTTPS, curl + gpg read it too (the hash
    computed by GnuPG's gpg-wks-client); other domains and unknown addresses are 404."""

    def test_a_partner_gateway_and_gpg_find_our_managed_key(self):
        cert, key = self.tmp / "wkd.crt", self.tmp / "wkd.key"
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                        "-subj", "/CN=openpgpkey.corp.example", "-addext",
                        "subjectAltName=DNS:openpgpkey.corp.example,DNS:corp.example", "-days", "2",
                        "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
        key.chmod(0o600)
        api_port = free_port()
        pv = self.start_postvault(smtp={"local_domains": ["corp.example"]}, start=False,
                                  extra=f'[api]\nlisten = "127.0.0.1:{api_port}"\ncert = "{cert}"\nkey = "{key}"\n'
                                        '[pgp]\nlookup = ["local"]\n')
        fpr = pv.cli("keys", "generate", "--config", str(pv.config_path), "Alice@corp.example").stdout.split()[-1]
        bob = Gpg(self)
        bob_fpr = bob.generate("bob@partner.example")
        (self.tmp / "bob.asc").write_bytes(bob.export(bob_fpr))
        pv.cli("keys", "import", "--config", str(pv.config_path), str(self.tmp / "bob.asc"))
        pv.start()
        wait_for_port(api_port, process=pv.process)

        def wkd_hash(address):
            out = subprocess.run(["/usr/lib/gnupg/gpg-wks-client", "--print-wkd-hash", address],
                                 capture_output=True, text=True, check=True).stdout
            return out.split()[0]

        def get(host, path):
            result = subprocess.run(["curl", "-sS", "--cacert", str(cert), "--resolve", f"{host}:{api_port}:127.0.0.1",
                                     "-o", str(self.tmp / "body"), "-w", "%{http_code}",
                                     f"https://{host}:{api_port}{path}"], capture_output=True, text=True, timeout=30)
            return int(result.stdout or 0), (self.tmp / "body").read_bytes()

        alice = wkd_hash("alice@corp.example")
        for host, path in [("openpgpkey.corp.example", f"/.well-known/openpgpkey/corp.example/hu/{alice}?l=Alice"),
                           ("corp.example", f"/.well-known/openpgpkey/hu/{alice}?l=alice")]:
            status, body = get(host, path)
            self.assertEqual(status, 200, body)
            shown = subprocess.run(["gpg", "--batch", "--with-colons", "--show-keys"], input=body,
                                   capture_output=True, timeout=60).stdout.decode()
            self.assertIn(f"fpr:::::::::{fpr}:", shown)
            self.assertIn("alice@corp.example", shown.lower())
        self.assertEqual(get("corp.example", "/.well-known/openpgpkey/policy")[0], 200)
        self.assertEqual(get("openpgpkey.corp.example", "/.well-known/openpgpkey/corp.example/policy")[0], 200)

        # Not ours: another domain (even with a key imported here), an unknown address, a bad parameter.
        status, body = get("openpgpkey.corp.example",
                           f"/.well-known/openpgpkey/partner.example/hu/{wkd_hash('bob@partner.example')}")
        self.assertEqual((status, json.loads(body)["error"]["code"]), (404, "wkd.domain"))
        status, body = get("openpgpkey.corp.example", f"/.well-known/openpgpkey/corp.example/hu/{wkd_hash('nobody@corp.example')}")
        self.assertEqual((status, json.loads(body)["error"]["code"]), (404, "wkd.no_key"))
        self.assertEqual(get("corp.example", f"/.well-known/openpgpkey/hu/{alice}?x=1")[0], 400)

        # A partner's gateway: its own postvault, looking the address up by WKD only.
        partner = self.start_postvault(name="partner", start=False)
        partner.config_path.write_text(partner.config_path.read_text() +
                                       f'[pgp]\nlookup = ["local", "wkd"]\nca_file = "{cert}"\n'
                                       f'resolve = {{ "openpgpkey.corp.example" = "127.0.0.1:{api_port}" }}\n')
        found = json.loads(partner.cli("keys", "lookup", "--config", str(partner.config_path), "ALICE@Corp.Example",
                                       "--json").stdout)
        self.assertEqual((found["fingerprint"], found["found_by"]), (fpr, "wkd"))


def crlf(data):
    return data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


class InboundTest(PostvaultTestCase):
    """Mail for the local domains encrypted to a managed key: decrypted, its signature checked,
    the sender's Autocrypt key harvested, handed to the internal server (inbound_relayhost)."""

    def setUp(self):
        super().setUp()
        self.inside = self.start_sink("inside")
        self.pv = self.start_postvault(smtp={"local_domains": ["corp.example"]},
                                       delivery={"inbound_relayhost": f"127.0.0.1:{self.inside.port}"}, start=False)
        self.pv.config_path.write_text(self.pv.config_path.read_text() + '[pgp]\nlookup = ["local"]\n')
        staff = self.pv.cli("keys", "generate", "--config", str(self.pv.config_path), "staff@corp.example")
        self.staff_fpr = staff.stdout.split()[-1]
        self.staff_public = self.tmp / "staff.asc"
        self.staff_public.write_text(self.pv.cli("keys", "export", "--config", str(self.pv.config_path),
                                                 "staff@corp.example").stdout)
        self.pv.start()
        self.entity = ("Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
                       "Vertraulich: Grüße aus Köln\r\n").encode()

    def send(self, data):
        with smtplib.SMTP("127.0.0.1", self.pv.port, timeout=30) as client:
            client.sendmail("ext@outside.example", ["staff@corp.example"], data)

    def test_gpg_mail_decrypted_signature_checked_with_the_harvested_autocrypt_key(self):
        ext = Gpg(self)
        ext_fpr = ext.generate("ext@outside.example")
        ext.run("--import", str(self.staff_public))
        armored = ext.run("--armor", "--trust-model", "always", "--encrypt", "--sign", "-r", "staff@corp.example",
                          "-u", ext_fpr, input_bytes=self.entity).stdout
        keydata = __import__("base64").b64encode(ext.export(ext_fpr, armor=False)).decode()
        folded = "\r\n ".join(keydata[i:i + 70] for i in range(0, len(keydata), 70))
        headers = ("From: Ext <ext@outside.example>\r\nTo: staff@corp.example\r\nSubject: secret\r\n"
                   f"X-Postvault-PGP: decrypted; signature good by ceo@corp.example (forged)\r\n"
                   f"Autocrypt: addr=ext@outside.example; keydata=\r\n {folded}\r\n")
        self.send(pgp_mime(headers, armored))
        meta, data = self.inside.wait_for(1)[0]
        self.assertIn("Vertraulich: Grüße aus Köln".encode(), data)
        fields = [line for line in data.split(b"\r\n") if line.lower().startswith(b"x-postvault-pgp:")]
        self.assertEqual(len(fields), 1, fields)  # the forged one is gone
        self.assertIn(b"decrypted; signature good by ext@outside.example", fields[0])
        self.assertIn(ext_fpr.encode(), fields[0])
        listed = json.loads(self.pv.cli("keys", "list", "--config", str(self.pv.config_path), "--json").stdout)
        self.assertEqual({k["fingerprint"]: k["source"] for k in listed}[ext_fpr], "harvested")
        record = json.loads(self.pv.archive("show", next(iter(self.pv.archive_list()))).stdout)
        self.assertTrue(record["pgp"]["decrypted"])
        self.assertEqual(record["pgp"]["signer"], ext_fpr)

    def test_sq_mail_decrypted_and_undecryptable_mail_delivered_flagged(self):
        plain = self.tmp / "entity.txt"
        plain.write_bytes(self.entity)
        by_sq = subprocess.run(["sq", "encrypt", "--recipient-cert", str(self.staff_public), str(plain)],
                               capture_output=True, timeout=60, check=True).stdout
        self.send(pgp_mime("From: ext@outside.example\r\nTo: staff@corp.example\r\nSubject: from sq\r\n", by_sq))
        other = Gpg(self)
        other_fpr = other.generate("someone@else.example")
        foreign = other.run("--armor", "--trust-model", "always", "--encrypt", "-r", other_fpr,
                            input_bytes=self.entity).stdout
        undecryptable = pgp_mime("From: ext@outside.example\r\nTo: staff@corp.example\r\nSubject: not for us\r\n",
                                 foreign)
        self.send(undecryptable)
        received = {email.message_from_bytes(d)["Subject"]: d for _, d in self.inside.wait_for(2)}
        self.assertIn("Vertraulich: Grüße aus Köln".encode(), received["from sq"])
        self.assertIn(b"X-Postvault-PGP: decrypted; no signature", received["from sq"])
        flagged = received["not for us"]
        self.assertIn(b"X-Postvault-PGP: not decrypted", flagged)
        self.assertIn(crlf(foreign).strip(), flagged)  # the ciphertext as received

    def test_inline_signed_text_verified_and_a_forgery_flagged_bad(self):
        ext = Gpg(self)
        ext_fpr = ext.generate("ext@outside.example")
        keyfile = self.tmp / "ext.asc"
        keyfile.write_bytes(ext.export(ext_fpr))
        self.pv.cli("keys", "import", "--config", str(self.pv.config_path), str(keyfile))
        signed = ext.run("--clearsign", "-u", ext_fpr, input_bytes="Grüße: the contract is approved.\n".encode()).stdout
        tampered = signed.replace(b"approved", b"rejected")

        def message(subject, body, footer=b""):
            return (b"From: ext@outside.example\r\nTo: staff@corp.example\r\nSubject: " + subject +
                    b"\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n" +
                    crlf(body) + footer)
        self.send(message(b"signed", signed))
        self.send(message(b"tampered", tampered))
        self.send(message(b"with footer", signed, b"\r\n--\r\nSent through a list\r\n"))
        received = {email.message_from_bytes(d)["Subject"]: d for _, d in self.inside.wait_for(3)}

        def field(subject):
            lines = [l for l in received[subject].split(b"\r\n") if l.lower().startswith(b"x-postvault-pgp:")]
            self.assertEqual(len(lines), 1, lines)
            return lines[0].decode()
        self.assertIn("signature good by ext@outside.example", field("signed"))
        self.assertIn(ext_fpr, field("signed"))
        self.assertNotIn("not covered", field("signed"))
        self.assertIn("signature bad", field("tampered"))
        self.assertIn("signature good by ext@outside.example", field("with footer"))
        self.assertIn("the text outside the signed block is not", field("with footer"))
        self.assertIn("the contract is approved".encode(), received["signed"])  # delivered as received
