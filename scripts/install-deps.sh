#!/usr/bin/env bash
# Installs every Debian package postvault needs to build, run and test.
# Idempotent and quick when everything is present: apt-get runs only for missing packages.
set -euo pipefail

# To build and run (swaks: the first-message line ./run.sh prints).
RUN_PACKAGES=(
  build-essential cmake ninja-build pkg-config git ca-certificates
  libboost-dev libssl-dev libspdlog-dev libfmt-dev libcli11-dev
  libtomlplusplus-dev nlohmann-json3-dev libargon2-dev librocksdb-dev
  libzstd-dev libgmime-3.0-dev libglib2.0-dev libgtest-dev libgmock-dev
  libgpgme-dev libassuan-dev gnupg gpgconf gpg-wks-client libpst-dev
  libxapian-dev libpoppler-cpp-dev libzip-dev libxml2-dev libre2-dev
  libldap-dev
  swaks
)
# Peers the tests and benchmarks talk to.
TEST_PACKAGES=(
  libnet-ssleay-perl libio-socket-ssl-perl postfix python3 python3-aiosmtpd openssl zstd tar procps iproute2
  rocksdb-tools gpg-agent
  notmuch maildir-utils poppler-utils python3-snowballstemmer
  curl unzip python3-yaml wrk sq
  slapd ldap-utils
)

with_tests=0
[[ "${1:-}" == "--with-tests" ]] && with_tests=1
want=("${RUN_PACKAGES[@]}")
if ((with_tests)); then
  want+=("${TEST_PACKAGES[@]}")
  # npm fetches the PST sample below; use the machine's own if it has one.
  command -v npm >/dev/null || want+=(npm)
fi
if [[ $(id -u) -ne 0 ]]; then
  SUDO=sudo
else
  SUDO=
fi


# A real Outlook PST for the PST import test (no Debian package ships one): the
# Enron sample inside the npm package pst-extractor, checked by its SHA-256.
PST_SAMPLE=/usr/local/share/postvault-test/enron.pst
PST_SHA256=6152489de3472be6f1f840935d34b6dbf5f62b025dd015929ea9cf66eb5a5b46
install_pst_sample() {
  if echo "$PST_SHA256  $PST_SAMPLE" | sha256sum -c --status 2>/dev/null; then return 0; fi
  local work
  work=$(mktemp -d)
  (cd "$work" && npm pack --silent pst-extractor@1.12.0 >/dev/null &&
     tar -xzf pst-extractor-1.12.0.tgz package/example/testdata/enron.pst)
  echo "$PST_SHA256  $work/package/example/testdata/enron.pst" | sha256sum -c --status
  $SUDO install -D -m 0644 "$work/package/example/testdata/enron.pst" "$PST_SAMPLE"
  rm -rf "$work"
}

missing=()
for pkg in "${want[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$pkg")
  fi
done

if ((${#missing[@]} == 0)); then
  if ((with_tests)); then install_pst_sample; fi
  exit 0
fi

echo "postvault: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
# Postfix is used only as a test peer (smtp-sink, smtp-source, a benchmark relay):
# never let its package configure a system mail service.
echo "postfix postfix/main_mailer_type select No configuration" | $SUDO debconf-set-selections
# slapd likewise (the LDAP keyserver the key discovery tests start on loopback): no database, no
# system LDAP service.
echo "slapd slapd/no_configuration boolean true" | $SUDO debconf-set-selections
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
if ((with_tests)); then install_pst_sample; fi
