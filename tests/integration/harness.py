"""Shared pieces for postvault's integration tests.

Each test starts the real `postvault` binary on 127.0.0.1 with ports chosen
free at run time, in a fresh temporary data directory, and talks to it with
real peers: Python smtplib, swaks, Postfix's smtp-sink, and
tests/tools/capture_sink.py (aiosmtpd) as the next hop. Nothing is shared
between tests; every process started here is stopped in tearDown.
"""

import json
import os
import pathlib
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import unittest
import warnings

SOURCE_DIR = pathlib.Path(os.environ.get("POSTVAULT_SOURCE_DIR", pathlib.Path(__file__).resolve().parents[2]))
BINARY = os.environ.get("POSTVAULT_BIN", str(SOURCE_DIR / "build" / "test" / "postvault"))
CAPTURE_SINK = SOURCE_DIR / "tests" / "tools" / "capture_sink.py"
PYTHON = "/usr/bin/python3"


def free_port(host="127.0.0.1"):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def wait_for_port(port, host="127.0.0.1", timeout=15.0, process=None):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"process exited with {process.returncode} before listening on {port}")
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listening on {host}:{port} after {timeout}s")


def pdf(text):
    """A one-page PDF with `text` in Helvetica, with a correct cross-reference table (poppler reads it)."""
    stream = f"BT /F1 12 Tf 72 720 Td ({text}) Tj ET".encode()
    objects = [b"<< /Type /Catalog /Pages 2 0 R >>", b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
               b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
               b"/Resources << /Font << /F1 5 0 R >> >> >>",
               b"<< /Length " + str(len(stream)).encode() + b" >>\nstream\n" + stream + b"\nendstream",
               b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>"]
    out = b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n"
    offsets = []
    for number, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += f"{number} 0 obj\n".encode() + body + b"\nendobj\n"
    xref = len(out)
    out += f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode()
    for offset in offsets:
        out += f"{offset:010d} 00000 n \n".encode()
    out += f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode()
    return out


def wait_until(predicate, timeout=20.0, interval=0.05, message="condition"):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {message}")


def toml_value(value):
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f'"{k}" = {toml_value(v)}' for k, v in value.items()) + " }"
    return json.dumps(str(value))


class CaptureSink:
    """tests/tools/capture_sink.py as the next hop; messages land in a folder."""

    def __init__(self, directory, tls_cert=None, tls_key=None, require_tls=False, port=0, smtputf8=False):
        self.directory = pathlib.Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        args = [PYTHON, str(CAPTURE_SINK), "--listen", f"127.0.0.1:{port}", "--dir", str(self.directory)]
        if tls_cert:
            args += ["--tls-cert", str(tls_cert), "--tls-key", str(tls_key)]
        if require_tls:
            args += ["--require-tls"]
        if smtputf8:
            args += ["--smtputf8"]
        self.process = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        line = self.process.stdout.readline()
        if not line.startswith("READY"):
            self.process.kill()
            raise RuntimeError("capture sink did not start: " + line + self.process.stderr.read())
        self.port = int(line.split()[1])

    def messages(self):
        """[(metadata dict, bytes)] in arrival order."""
        result = []
        for meta_path in sorted(self.directory.glob("*.json"), key=lambda p: int(p.stem)):
            eml = meta_path.with_suffix(".eml")
            if not eml.exists():
                continue
            try:
                meta = json.loads(meta_path.read_text())
            except json.JSONDecodeError:
                continue
            result.append((meta, eml.read_bytes()))
        return result

    def wait_for(self, count, timeout=30.0):
        return wait_until(lambda: len(self.messages()) >= count and self.messages(), timeout,
                          message=f"{count} message(s) at the sink")

    def stop(self):
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


class Postvault:
    """One postvault server in its own data directory."""

    def __init__(self, directory, smtp=None, delivery=None, server=None, tls=True, extra=""):
        self.directory = pathlib.Path(directory)
        self.port = free_port()
        result = subprocess.run([BINARY, "init", "--dir", str(self.directory), "--hostname", "postvault.test"],
                                capture_output=True, text=True)
        if result.returncode != 0:
            raise RuntimeError("postvault init failed: " + result.stdout + result.stderr)
        self.config_path = self.directory / "postvault.toml"
        self.cert = self.directory / "tls" / "cert.pem"
        self.key = self.directory / "tls" / "key.pem"
        self.log_path = self.directory / "postvault.log"
        self.process = None
        self.write_config(smtp, delivery, server, tls, extra)

    def write_config(self, smtp=None, delivery=None, server=None, tls=True, extra=""):
        server_keys = {"hostname": "postvault.test", "data_dir": ".", "log_level": "debug"}
        server_keys.update(server or {})
        smtp_keys = {"listen": [f"127.0.0.1:{self.port}"], "trusted_networks": ["127.0.0.1/32", "::1/128"],
                     "min_free_disk": "1MiB"}
        smtp_keys.update(smtp or {})
        delivery_keys = {"tls": "none", "retry_min": "1s", "retry_max": "2s"}
        delivery_keys.update(delivery or {})
        lines = ["[server]"] + [f"{k} = {toml_value(v)}" for k, v in server_keys.items()]
        if tls:
            lines += ["[tls]", 'cert = "tls/cert.pem"', 'key = "tls/key.pem"']
        users = smtp_keys.pop("users", [])
        lines += ["[smtp]"] + [f"{k} = {toml_value(v)}" for k, v in smtp_keys.items()]
        for user in users:
            lines += ["[[smtp.users]]", f'name = {toml_value(user["name"])}',
                      f'password_hash = {toml_value(user["password_hash"])}']
        policy = delivery_keys.pop("tls_policy", None)
        lines += ["[delivery]"] + [f"{k} = {toml_value(v)}" for k, v in delivery_keys.items()]
        if policy:
            lines += ["[delivery.tls_policy]"] + [f'"{k}" = {toml_value(v)}' for k, v in policy.items()]
        self.config_path.write_text("\n".join(lines) + "\n" + extra)

    def start(self, wait=True):
        self.log = open(self.log_path, "ab")
        self.process = subprocess.Popen([BINARY, "serve", "--config", str(self.config_path)],
                                        stdout=self.log, stderr=subprocess.STDOUT)
        if wait:
            wait_for_port(self.port, process=self.process)
        return self

    def signal(self, number):
        self.process.send_signal(number)

    def stop(self, timeout=40):
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.process:
            self.log.close()
        # A gpg-agent started for the gateway's keyring (keys generate, signing) goes too.
        home = self.directory / "pgp" / "gnupg"
        if home.exists():
            subprocess.run(["gpgconf", "--homedir", str(home), "--kill", "all"], capture_output=True, timeout=30)
        return self.process.returncode if self.process else None

    def kill(self):
        self.process.kill()
        self.process.wait()
        self.log.close()

    def cli(self, *args, check=True, input_text=None):
        result = subprocess.run([BINARY, *args], capture_output=True, text=True, input=input_text, timeout=60)
        if check and result.returncode != 0:
            raise AssertionError(f"postvault {' '.join(args)} failed ({result.returncode}):\n"
                                 f"{result.stdout}{result.stderr}")
        return result

    def queue(self, *args, check=True):
        return self.cli("queue", *args, "--config", str(self.config_path), check=check)

    def archive(self, action, *args, check=True, timeout=600):
        """`postvault archive ACTION --config ... ARGS`; stdout as bytes (get writes a message)."""
        result = subprocess.run([BINARY, "archive", action, "--config", str(self.config_path), *map(str, args)],
                                capture_output=True, timeout=timeout)
        if check and result.returncode != 0:
            raise AssertionError(f"postvault archive {action} {' '.join(map(str, args))} failed "
                                 f"({result.returncode}):\n{result.stdout.decode(errors='replace')}"
                                 f"{result.stderr.decode(errors='replace')}")
        return result

    def archive_list(self):
        """{id: sha256} from `archive list`."""
        lines = self.archive("list").stdout.decode().splitlines()
        return dict(line.split("\t") for line in lines)

    def queue_json(self):
        return json.loads(self.queue("list", "--json").stdout)["messages"]

    def log_text(self):
        return self.log_path.read_text(errors="replace")


class SmtpClient:
    """A raw SMTP client for exact protocol checks (replies as (code, text))."""

    def __init__(self, port, host="127.0.0.1", source=None, timeout=10):
        self.sock = socket.create_connection((host, port), timeout=timeout,
                                             source_address=(source, 0) if source else None)
        self.buffer = b""

    def read_reply(self):
        lines = []
        while True:
            while b"\r\n" not in self.buffer:
                chunk = self.sock.recv(65536)
                if not chunk:
                    raise ConnectionError("connection closed; got so far: " + repr(self.buffer))
                self.buffer += chunk
            line, self.buffer = self.buffer.split(b"\r\n", 1)
            lines.append(line.decode("utf-8", "replace"))
            if len(line) < 4 or line[3:4] != b"-":
                return int(lines[-1][:3]), "\n".join(lines)

    def send(self, data):
        if isinstance(data, str):
            data = data.encode()
        self.sock.sendall(data)

    def command(self, line):
        self.send(line + "\r\n")
        return self.read_reply()

    def closed(self, timeout=5):
        """True when the server closed the connection."""
        self.sock.settimeout(timeout)
        try:
            return self.sock.recv(1) == b""
        except (ConnectionResetError, BrokenPipeError):
            return True

    def close(self):
        self.sock.close()


class PostvaultTestCase(unittest.TestCase):
    """Gives each test a temporary directory and stops what it started."""

    def setUp(self):
        if not os.path.exists(BINARY):
            self.fail(f"postvault binary not found at {BINARY} (build first, or set POSTVAULT_BIN)")
        # Tests leave raw SMTP sockets to the garbage collector on purpose
        # (the server must cope with abandoned connections).
        warnings.simplefilter("ignore", ResourceWarning)
        self.tmp = pathlib.Path(tempfile.mkdtemp(prefix="postvault-test-"))
        self.cleanups = []

    def tearDown(self):
        for cleanup in reversed(self.cleanups):
            try:
                cleanup()
            except Exception as error:  # keep cleaning up the rest
                print("cleanup failed:", error, file=sys.stderr)
        if os.environ.get("POSTVAULT_KEEP_TMP"):
            print(f"kept {self.tmp} for inspection", file=sys.stderr)
        else:
            shutil.rmtree(self.tmp, ignore_errors=True)

    def start_sink(self, name="sink", **kwargs):
        sink = CaptureSink(self.tmp / name, **kwargs)
        self.cleanups.append(sink.stop)
        return sink

    def start_postvault(self, name="pv", start=True, **kwargs):
        server = Postvault(self.tmp / name, **kwargs)
        self.cleanups.append(lambda: self.dump_log_on_failure(server))
        self.cleanups.append(server.stop)
        if start:
            server.start()
        return server

    def dump_log_on_failure(self, server):
        if server.log_path.exists() and os.environ.get("POSTVAULT_TEST_VERBOSE"):
            print(server.log_text()[-5000:], file=sys.stderr)

    def assertReply(self, reply, code, contains=None):
        self.assertEqual(reply[0], code, reply[1])
        if contains:
            self.assertIn(contains, reply[1])
