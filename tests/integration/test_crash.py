"""kill -9 under load: every message that got 250 is delivered after restart, and archived."""

import smtplib
import threading
import time
import unittest

from harness import PostvaultTestCase, wait_until


class CrashTest(PostvaultTestCase):
    def test_kill_9_loses_no_acknowledged_message(self):
        sink = self.start_sink()
        pv = self.start_postvault(delivery={"relayhost": f"127.0.0.1:{sink.port}"},
                                  server={"log_level": "info"})
        acknowledged = []
        lock = threading.Lock()
        stop = threading.Event()

        def sender(worker):
            sequence = 0
            while not stop.is_set():
                try:
                    with smtplib.SMTP("127.0.0.1", pv.port, timeout=10) as client:
                        while not stop.is_set():
                            sequence += 1
                            message_id = f"<crash-{worker}-{sequence}@example.com>"
                            body = (f"Message-ID: {message_id}\r\nSubject: load {worker}/{sequence}\r\n\r\n"
                                    + "payload line\r\n" * 50)
                            client.sendmail("load@example.com", [f"r{worker}@example.org"], body)
                            with lock:
                                acknowledged.append(message_id)
                except (OSError, smtplib.SMTPException):
                    time.sleep(0.05)  # the server is down: try again until told to stop

        threads = [threading.Thread(target=sender, args=(i,)) for i in range(8)]
        for thread in threads:
            thread.start()
        wait_until(lambda: len(acknowledged) >= 150, timeout=60, message="load to build up")
        pv.kill()
        time.sleep(0.3)
        stop.set()
        for thread in threads:
            thread.join(timeout=30)
        with lock:
            expected = set(acknowledged)
        self.assertGreater(len(expected), 0)

        pv.start()

        def delivered_ids():
            ids = set()
            for _, data in sink.messages():
                for line in data.split(b"\r\n"):
                    if line.lower().startswith(b"message-id:"):
                        ids.add(line.split(b":", 1)[1].strip().decode())
            return ids

        wait_until(lambda: expected <= delivered_ids(), timeout=90, interval=0.5,
                   message="every acknowledged message to be delivered")
        wait_until(lambda: pv.queue_json() == [], timeout=30, message="queue to empty")

        # Every acknowledged message is in the archive too (journaled before the 250), and
        # the archive survived the kill intact.
        archived = set()
        for message_id in pv.archive_list():
            record = pv.archive("get", message_id).stdout
            for line in record.split(b"\r\n"):
                if line.lower().startswith(b"message-id:"):
                    archived.add(line.split(b":", 1)[1].strip().decode())
        self.assertLessEqual(expected, archived)
        self.assertIn("archive intact", pv.archive("verify").stdout.decode())


if __name__ == "__main__":
    unittest.main()
