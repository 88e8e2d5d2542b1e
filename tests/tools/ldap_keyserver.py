#!/usr/bin/python3
"""ldap_keyserver.py — a real OpenLDAP slapd serving OpenPGP keys the way a PGP Universal
server or GnuPG's LDAP keyserver layout does, for key discovery tests (stdlib, slapd, gpg).

Usage:
  /usr/bin/python3 ldap_keyserver.py --dir DIR [--listen 127.0.0.1:0]
      [--suffix dc=partner,dc=example] [--no-server-info] [--verbose]

Loads, with slapadd, into an mdb database in DIR/db:
  SUFFIX                         (dcObject + organization)
  cn=pgpServerInfo,SUFFIX        pgpServerInfo, pgpBaseKeySpaceDN: ou=PGP Keys,SUFFIX (not with
                                 --no-server-info: then it is no OpenPGP keyserver)
  ou=PGP Keys,SUFFIX             organizationalUnit
  pgpCertID=<long key id>,ou=PGP Keys,SUFFIX
                                 pgpKeyInfo, one per key file DIR/keys/*.asc (armored, as written
                                 into pgpKey) with pgpUserID, pgpKeyID, gpgFingerprint and
                                 gpgMailbox read from the key by `gpg --show-keys`; a key file
                                 NAME.asc with a file NAME.disabled beside it gets pgpDisabled: 1;
  and DIR/extra.ldif as it is, when present.
The schema: core.schema and tests/tools/pgp-keyserver.schema. Anonymous users may read all;
the rootdn is cn=admin,SUFFIX with the password "secret" (for ldapadd/ldapmodify in tests).

Then starts `slapd -d stats` on ldap://HOST:PORT (port 0: a free port picked here) with its log
in DIR/slapd.log (every search, filter included, is logged there), waits until it accepts
connections, and prints "READY <port>" on stdout. SIGTERM or SIGINT stops slapd and this
program, and so does the death of its parent. Nothing outside DIR is written (gpg runs with a
temporary home inside DIR).
"""

import argparse
import base64
import os
import pathlib
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time

SCHEMA = pathlib.Path(__file__).resolve().parent / "pgp-keyserver.schema"
CORE_SCHEMA = "/etc/ldap/schema/core.schema"
SLAPD = shutil.which("slapd") or "/usr/sbin/slapd"
SLAPADD = shutil.which("slapadd") or "/usr/sbin/slapadd"
MODULE_PATH = "/usr/lib/ldap"  # Debian builds the backends as modules
START_TIMEOUT = 15.0


def parse_listen(text):
    host, _, port = text.rpartition(":")
    return host.strip("[]") or "127.0.0.1", int(port)


def free_port(host):
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


def ldif_value(name, value):
    """name: value, or name:: base64 when LDIF needs it (RFC 2849 SAFE-STRING)."""
    data = value.encode() if isinstance(value, str) else value
    safe = data and data[0] not in b" :<" and data[-1:] != b" " and all(0x20 <= b < 0x7F for b in data)
    if safe:
        return "%s: %s\n" % (name, data.decode())
    return "%s:: %s\n" % (name, base64.b64encode(data).decode())


def unescape_colons(field):
    """gpg --with-colons escapes ':' and other bytes as \\xHH."""
    out, i = bytearray(), 0
    raw = field.encode()
    while i < len(raw):
        if raw[i:i + 2] == b"\\x" and i + 4 <= len(raw):
            out.append(int(raw[i + 2:i + 4], 16))
            i += 4
        else:
            out.append(raw[i])
            i += 1
    return out.decode(errors="replace")


def key_facts(path, gpg_home):
    """The long key id, fingerprint and user IDs of the first key in `path`."""
    listing = subprocess.run(["gpg", "--homedir", str(gpg_home), "--batch", "--with-colons", "--show-keys",
                              str(path)], capture_output=True, text=True, timeout=60, check=True).stdout
    cert_id, fingerprint, user_ids = None, None, []
    for line in listing.splitlines():
        fields = line.split(":")
        if fields[0] == "pub" and cert_id is None:
            cert_id = fields[4]
        elif fields[0] == "fpr" and fingerprint is None:
            fingerprint = fields[9]
        elif fields[0] == "uid":
            user_ids.append(unescape_colons(fields[9]))
    if cert_id is None:
        raise RuntimeError("no key in %s" % path)
    return cert_id, fingerprint, user_ids


def mailbox(user_id):
    if "<" in user_id and user_id.endswith(">"):
        return user_id[user_id.rindex("<") + 1:-1]
    return user_id if "@" in user_id else None


def build_ldif(directory, suffix, server_info=True):
    first = suffix.split(",")[0]
    attribute, _, value = first.partition("=")
    keyspace = "ou=PGP Keys," + suffix
    ldif = [
        "dn: %s\nobjectClass: top\nobjectClass: dcObject\nobjectClass: organization\n%s: %s\no: %s\n"
        % (suffix, attribute, value, value),
        "dn: %s\nobjectClass: top\nobjectClass: organizationalUnit\nou: PGP Keys\n" % keyspace,
    ]
    if server_info:
        ldif.insert(1, "dn: cn=pgpServerInfo,%s\nobjectClass: top\nobjectClass: pgpServerInfo\ncn: pgpServerInfo\n"
                       "pgpBaseKeySpaceDN: %s\npgpSoftware: GnuPG\npgpVersion: 2\n" % (suffix, keyspace))
    gpg_home = directory / "gnupg"
    gpg_home.mkdir(mode=0o700, exist_ok=True)
    for path in sorted((directory / "keys").glob("*.asc")) if (directory / "keys").is_dir() else []:
        cert_id, fingerprint, user_ids = key_facts(path, gpg_home)
        entry = "dn: pgpCertID=%s,%s\nobjectClass: top\nobjectClass: pgpKeyInfo\n" % (cert_id, keyspace)
        entry += "pgpCertID: %s\npgpKeyID: %s\n" % (cert_id, cert_id[-8:])
        if fingerprint:
            entry += "gpgFingerprint: %s\n" % fingerprint
        for user_id in user_ids:
            entry += ldif_value("pgpUserID", user_id)
            if mailbox(user_id):
                entry += ldif_value("gpgMailbox", mailbox(user_id))
        if path.with_suffix(".disabled").exists():
            entry += "pgpDisabled: 1\n"
        entry += ldif_value("pgpKey", path.read_bytes())
        ldif.append(entry)
    subprocess.run(["gpgconf", "--homedir", str(gpg_home), "--kill", "all"], capture_output=True)
    extra = directory / "extra.ldif"
    if extra.exists():
        ldif.append(extra.read_text().strip() + "\n")
    return "\n".join(ldif)


def write_config(directory, suffix):
    database = directory / "db"
    database.mkdir(exist_ok=True)
    config = directory / "slapd.conf"
    config.write_text(
        "include %s\n"
        "include %s\n"
        "pidfile %s\n"
        "argsfile %s\n"
        "modulepath %s\n"
        "moduleload back_mdb\n"
        "database mdb\n"
        "maxsize 67108864\n"
        "suffix \"%s\"\n"
        "rootdn \"cn=admin,%s\"\n"
        "rootpw secret\n"
        "directory %s\n"
        "access to * by * read\n"
        % (CORE_SCHEMA, SCHEMA, directory / "slapd.pid", directory / "slapd.args", MODULE_PATH,
           suffix, suffix, database))
    return config


def wait_for_port(host, port, process):
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return False
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.05)
    return False


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", required=True, help="holds keys/*.asc and extra.ldif; gets the database and logs")
    parser.add_argument("--listen", default="127.0.0.1:0", help="HOST:PORT, port 0 = any free port")
    parser.add_argument("--suffix", default="dc=partner,dc=example", help="the database's naming context")
    parser.add_argument("--no-server-info", action="store_true", help="no cn=pgpServerInfo entry")
    parser.add_argument("--verbose", action="store_true", help="copy slapd's log to stderr at the end")
    args = parser.parse_args()

    directory = pathlib.Path(args.dir).resolve()
    directory.mkdir(parents=True, exist_ok=True)
    host, port = parse_listen(args.listen)
    if port == 0:
        port = free_port(host)
    config = write_config(directory, args.suffix)
    ldif = directory / "entries.ldif"
    ldif.write_text(build_ldif(directory, args.suffix, server_info=not args.no_server_info))
    loaded = subprocess.run([SLAPADD, "-f", str(config), "-l", str(ldif)], capture_output=True, text=True,
                            timeout=60)
    if loaded.returncode != 0:
        sys.stderr.write("ldap_keyserver.py: slapadd failed: %s\n" % loaded.stderr)
        return 1

    url = "ldap://%s:%d/" % ("[%s]" % host if ":" in host else host, port)
    log = open(directory / "slapd.log", "wb")
    slapd = subprocess.Popen([SLAPD, "-d", "stats", "-f", str(config), "-h", url], stdin=subprocess.DEVNULL,
                             stdout=log, stderr=subprocess.STDOUT)
    stopping = threading.Event()

    def stop(*_):
        stopping.set()

    for signal_number in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signal_number, stop)
    try:
        if not wait_for_port(host, port, slapd):
            sys.stderr.write("ldap_keyserver.py: slapd did not start: %s\n"
                             % (directory / "slapd.log").read_text(errors="replace")[-2000:])
            return 1
        print("READY %d" % port, flush=True)
        parent = os.getppid()
        while not stopping.is_set() and slapd.poll() is None and os.getppid() == parent:
            stopping.wait(0.2)
    finally:
        if slapd.poll() is None:
            slapd.terminate()
            try:
                slapd.wait(timeout=10)
            except subprocess.TimeoutExpired:
                slapd.kill()
                slapd.wait()
        log.close()
        if args.verbose:
            sys.stderr.write((directory / "slapd.log").read_text(errors="replace"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
