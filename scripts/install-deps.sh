#!/usr/bin/env bash
# System packages drctl's lab and tests use (Debian). Idempotent and quick
# when everything is already there.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
need=()
[ -x /usr/lib/postgresql/15/bin/initdb ] || need+=(postgresql-15)
command -v pdns_server >/dev/null || need+=(pdns-server)
[ -f /usr/share/pdns-backend-sqlite3/schema/schema.sqlite3.sql ] || need+=(pdns-backend-sqlite3)
command -v sqlite3 >/dev/null || need+=(sqlite3)
command -v openssl >/dev/null || need+=(openssl)
command -v named >/dev/null || need+=(bind9)
command -v dig >/dev/null || need+=(bind9-dnsutils)
command -v curl >/dev/null || need+=(curl)
# Test-only components: backup tools the restore proofs drive, Prometheus'
# Pushgateway and promtool for metrics and alert rules, headless Chromium for
# the HTML report.
if [ "${DRCTL_INSTALL_TEST_DEPS:-0}" = 1 ]; then
  command -v pgbackrest >/dev/null || need+=(pgbackrest)
  command -v barman >/dev/null || need+=(barman)
  command -v promtool >/dev/null || need+=(prometheus)
  command -v prometheus-pushgateway >/dev/null || need+=(prometheus-pushgateway)
  command -v chromium >/dev/null || need+=(chromium)
fi
if [ ${#need[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}"
fi
# Route 53 API stand-in for the DNS tests (moto does not check signatures;
# a unit test checks SigV4 against the AWS test-suite vectors).
if [ "${DRCTL_INSTALL_TEST_DEPS:-0}" = 1 ] && ! command -v moto_server >/dev/null; then
  python3 -m pip install -q "moto[server]"
fi
