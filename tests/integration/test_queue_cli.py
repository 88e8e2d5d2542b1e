"""`postvault queue list|show|retry|delete|flush` against the running server."""

import unittest

from harness import CaptureSink, PostvaultTestCase, free_port, wait_until
from test_delivery import send


class QueueCommandsTest(PostvaultTestCase):
    def setUp(self):
        super().setUp()
        self.sink_port = free_port()  # nothing listens yet: deliveries fail and wait
        self.pv = self.start_postvault(delivery={"relayhost": f"127.0.0.1:{self.sink_port}",
                                                 "retry_min": "1h", "retry_max": "2h"})

    def deferred_ids(self):
        return sorted(m["id"] for m in self.pv.queue_json()
                      if all(r["state"] == "deferred" for r in m["recipients"]))

    def test_list_show_delete_retry_flush(self):
        first = send(self.pv.port, "a@example.com", ["one@example.org"])
        second = send(self.pv.port, "b@example.com", ["two@example.org", "three@example.org"])
        third = send(self.pv.port, "c@example.com", ["four@example.org"])
        wait_until(lambda: self.deferred_ids() == sorted([first, second, third]), message="three deferrals")

        listing = self.pv.queue("list").stdout
        for queue_id in (first, second, third):
            self.assertIn(queue_id, listing)
        self.assertIn("3 message(s)", listing)
        self.assertIn("deferred", listing)

        shown = self.pv.queue("show", second).stdout
        self.assertIn("<b@example.com>", shown)
        self.assertIn("<two@example.org>", shown)
        self.assertIn("<three@example.org>", shown)
        self.assertIn("127.0.0.1", shown)

        missing = self.pv.queue("show", "NOSUCHID", check=False)
        self.assertEqual(missing.returncode, 1)
        self.assertIn("NOSUCHID", missing.stderr + missing.stdout)

        self.pv.queue("delete", third)
        self.assertNotIn(third, self.pv.queue("list").stdout)

        sink = CaptureSink(self.tmp / "sink", port=self.sink_port)
        self.cleanups.append(sink.stop)
        self.pv.queue("retry", first)
        meta, _ = sink.wait_for(1)[0]
        self.assertEqual(meta["mail_from"], "a@example.com")
        wait_until(lambda: first not in [m["id"] for m in self.pv.queue_json()], message="first delivered")
        self.assertEqual(len(sink.messages()), 1)  # retry touched only that message

        self.pv.queue("flush")
        sink.wait_for(2)
        wait_until(lambda: self.pv.queue_json() == [], message="queue to empty")
        senders = sorted(meta["mail_from"] for meta, _ in sink.messages())
        self.assertEqual(senders, ["a@example.com", "b@example.com"])  # the deleted one never left

    def test_cli_without_server_says_so(self):
        self.pv.stop()
        result = self.pv.queue("list", check=False)
        self.assertEqual(result.returncode, 1)
        self.assertIn("is `postvault serve` running?", result.stderr)


if __name__ == "__main__":
    unittest.main()
