#!/usr/bin/env bash
# Sets up and starts postvault: installs missing packages, builds (Release),
# initializes ./var/ on first use and runs the server in the foreground.
# With arguments, runs that postvault subcommand instead: ./run.sh queue list
set -euo pipefail
cd "$(dirname "$0")"

scripts/install-deps.sh >&2
cmake -S . -B build/release -G Ninja -DCMAKE_BUILD_TYPE=Release -DPOSTVAULT_BUILD_TESTS=OFF >/dev/null
# Build output goes to standard error: `./run.sh archive get ID > copy.eml` must hold only the message.
cmake --build build/release >&2
binary=build/release/postvault

if (($# > 0)); then
  exec "$binary" "$@"
fi

"$binary" init --dir var
"$binary" config check --config var/postvault.toml
listen=$(sed -n 's/^listen = \["\([^"]*\)".*/\1/p' var/postvault.toml | head -1)
host=${listen%:*}
port=${listen##*:}
api=$(sed -n 's/^listen = "\([^"]*\)".*/\1/p' var/postvault.toml | head -1)
cat <<INFO

postvault is starting: SMTP on ${listen} (STARTTLS offered), data in ./var/
  send a first message:   swaks --server ${host}:${port} --from you@example.com --to someone@example.org
  see the queue:          ./run.sh queue list
  next hop:               MX lookup; set [delivery] relayhost in var/postvault.toml, then ./run.sh reload
  stop:                   Ctrl-C (drains and exits)
INFO
if [[ -n "$api" ]]; then
  cat <<INFO
  audit API:              https://${api}/api/v1/health  (certificate: var/tls/cert.pem)
  an API token:           ./run.sh token create --config var/postvault.toml --name you --role admin
INFO
fi
exec "$binary" serve --config var/postvault.toml
