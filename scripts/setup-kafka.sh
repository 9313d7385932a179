#!/usr/bin/env bash
# Assemble the real Kafka pieces from Maven Central into .kafka/ (never committed); safe to re-run.
#   .kafka/lib/      Apache Kafka 4.3.0 broker (KRaft) + Kafka Connect 4.3.0 + log4j2 SLF4J binding
#   .kafka/plugins/  the Debezium PostgreSQL connector 3.6.1.Final (Debezium's own plugin archive)
# What is fetched is declared in deploy/kafka/pom.xml; the result is cached like .venv: a stamp holds
# the hash of the pom and of this script, and nothing is fetched again while it matches.
#
# Where Maven Central cannot be reached, this says so in one line, writes the reason to
# .kafka/UNAVAILABLE (the Kafka tests skip with it) and exits 0. Any other failure exits non-zero.
set -euo pipefail
cd "$(dirname "$0")/.."

home=.kafka
stamp=$home/.installed
want=$(cat deploy/kafka/pom.xml "$0" | sha256sum | cut -d' ' -f1)

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

# One setup at a time per checkout (parallel test sessions call this script too).
if command -v flock >/dev/null 2>&1; then
  exec 9>"${TMPDIR:-/tmp}/civicsync-setup-kafka-$(pwd | sha256sum | cut -c1-12).lock"
  flock 9
fi

if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && [ -d "$home/lib" ] \
    && [ -d "$home/plugins/debezium-connector-postgres" ]; then
  echo "setup-kafka: .kafka is up to date (Kafka 4.3.0, Connect 4.3.0, Debezium PostgreSQL 3.6.1.Final)"
  exit 0
fi

apt_packages=()
command -v mvn >/dev/null 2>&1 || apt_packages+=(maven)
# Kafka 4.3 needs Java 17 or newer; Debian's headless JDK 17 is the one tested here.
if ! command -v java >/dev/null 2>&1 || ! java -version 2>&1 | grep -qE 'version "(1[7-9]|[2-9][0-9])'; then
  apt_packages+=(openjdk-17-jdk-headless)
fi
if [ ${#apt_packages[@]} -gt 0 ]; then
  echo "setup-kafka: installing system packages: ${apt_packages[*]}"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${apt_packages[@]}"
fi

mkdir -p "$home"
rm -f "$stamp" "$home/UNAVAILABLE"
log=$home/maven.log
echo "setup-kafka: fetching Kafka 4.3.0, Kafka Connect 4.3.0 and Debezium PostgreSQL 3.6.1.Final (Maven)"
fetch() {
  rm -rf "$home/lib" "$home/plugins" "$home/target"
  mvn -q -B -Dstyle.color=never -f deploy/kafka/pom.xml \
    dependency:copy-dependencies@lib dependency:unpack-dependencies@plugins >"$log" 2>&1
}
if ! fetch; then
  # Tell "Maven Central cannot be reached" from a real failure: resolve one small POM into an empty
  # local repository, so nothing can come from the cache.
  probe=$(mktemp -d)
  if ! mvn -q -B -Dstyle.color=never -Dmaven.repo.local="$probe" dependency:get -Dtransitive=false \
      -Dartifact=org.apache.kafka:kafka-clients:4.3.0:pom >/dev/null 2>&1; then
    rm -rf "$probe"
    reason="Maven Central is unreachable from this machine, so the Kafka broker, Connect and Debezium cannot be installed; the Kafka tests are skipped"
    echo "$reason" > "$home/UNAVAILABLE"
    echo "setup-kafka: $reason" >&2
    exit 0
  fi
  rm -rf "$probe"
  # Reachable: a dropped download is worth one more try before calling it a failure.
  echo "setup-kafka: Maven failed although Maven Central answers; trying once more"
  if ! fetch; then
    echo "setup-kafka: Maven failed (its output is in $log):" >&2
    tail -20 "$log" >&2
    exit 1
  fi
fi
echo "$want" > "$stamp"
echo "setup-kafka: ready: $(ls "$home/lib" | wc -l) jars in $home/lib, Debezium in $home/plugins"
