"""Real mail through the relay: messages from ../shared/corpus arrive byte for byte.

Every message of a sample of the public mailing-list corpus (patches, PGP and
S/MIME signed mail, HTML, attachments, malformed headers) is sent with smtplib
through postvault to the capture sink; what arrives must be exactly what was
sent, after the one Received: header postvault prepends.
"""

import pathlib
import smtplib
import subprocess
import threading
import unittest

from harness import SOURCE_DIR, PostvaultTestCase
from test_relay import strip_received

CORPUS = SOURCE_DIR.parent / "shared" / "corpus"
SAMPLE_SIZE = 300


def crlf(data):
    """What SMTP carries: every line ending CRLF (smtplib does the same)."""
    return data.replace(b"\r\n", b"\n").replace(b"\r", b"\n").replace(b"\n", b"\r\n")


class CorpusRelayTest(PostvaultTestCase):
    def sample(self, name, count):
        """Every n-th message of one corpus archive, `count` in all."""
        archive = CORPUS / f"{name}.tar.zst"
        if not archive.exists():
            self.skipTest(f"corpus not found at {archive} (the shared/ folder beside the checkout)")
        target = self.tmp / "corpus"
        target.mkdir(exist_ok=True)
        subprocess.run(["tar", "--zstd", "-xf", str(archive), "-C", str(target)], check=True)
        found = sorted(path for path in (target / name).rglob("*") if path.is_file())
        return found[::max(1, len(found) // count)][:count]

    def test_sampled_real_messages_arrive_byte_exact(self):
        files = self.sample("ext4-dev", SAMPLE_SIZE // 2) + self.sample("usrp-dev", SAMPLE_SIZE // 2)
        sink = self.start_sink()
        pv = self.start_postvault(delivery={"relayhost": f"127.0.0.1:{sink.port}"},
                                  server={"log_level": "warn"})

        sent = {}
        errors = []
        lock = threading.Lock()

        def send(chunk, worker):
            with smtplib.SMTP("127.0.0.1", pv.port, timeout=60) as client:
                for index, path in chunk:
                    data = crlf(path.read_bytes())
                    recipient = f"r{index}@example.org"
                    try:
                        client.sendmail("corpus@example.com", [recipient], data)
                    except smtplib.SMTPException as error:
                        with lock:
                            errors.append((path.name, repr(error)))
                        client.rset()
                        continue
                    with lock:
                        sent[recipient] = data

        indexed = list(enumerate(files))
        threads = [threading.Thread(target=send, args=(indexed[i::4], i)) for i in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        self.assertEqual(errors, [])
        self.assertEqual(len(sent), len(files))

        messages = sink.wait_for(len(sent), timeout=120)
        mismatched = []
        for meta, data in messages:
            recipient = meta["rcpt_tos"][0]
            _, rest = strip_received(data)
            if rest != sent[recipient]:
                mismatched.append(recipient)
        self.assertEqual(mismatched, [])


if __name__ == "__main__":
    unittest.main()
