#!/usr/bin/env bash
# Installs what a fresh Debian machine with only Rust lacks, and starts the local services the tests use.
# Safe to run again: it installs nothing that is already there.
set -euo pipefail

need=()
command -v xmlsec1 >/dev/null 2>&1 || need+=(xmlsec1)
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
command -v pkg-config >/dev/null 2>&1 || need+=(pkg-config)
dpkg -s libssl-dev >/dev/null 2>&1 || need+=(libssl-dev)
# samael (the independent SAML service provider in the tests) links libxmlsec1 through bindgen.
dpkg -s libxmlsec1-dev >/dev/null 2>&1 || need+=(libxmlsec1-dev)
dpkg -s libxml2-dev >/dev/null 2>&1 || need+=(libxml2-dev)
dpkg -s libclang-dev >/dev/null 2>&1 || need+=(libclang-dev)
# The WebAuthn browser test (tests/mfa_browser.rs) drives headless Chromium through chromedriver.
command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v chromedriver >/dev/null 2>&1 || need+=(chromium-driver)

if [ ${#need[@]} -gt 0 ]; then
  echo "bootstrap: installing ${need[*]}"
  sudo_cmd=""
  [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq "${need[@]}" >/dev/null
fi

# The PostgreSQL tests use DATABASE_URL, or postgres://postgres@127.0.0.1:5432/postgres. Start the local
# cluster when it is installed but stopped.
if [ -z "${DATABASE_URL:-}" ] && command -v pg_isready >/dev/null 2>&1; then
  if ! pg_isready -q -h 127.0.0.1 -p 5432; then
    for version in $(ls /etc/postgresql 2>/dev/null); do
      pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
    done
  fi
fi
