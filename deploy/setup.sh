#!/usr/bin/env bash
# Idempotent set-up: .venv with every pinned Python package and the tinytags package (editable), and
# the Solr, HDFS and YARN launchers compiled with their Maven Central classpaths. Re-running does only
# what changed. `setup.sh --python` stops after the venv (what `make check` needs: no JDK, no Maven).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
python_only=0
[ "${1:-}" = "--python" ] && python_only=1

need() {
  command -v "$1" >/dev/null 2>&1 || { echo "error: $1 not found: $2" >&2; exit 1; }
}
need "$PYTHON" "install Python 3.11"
if [ $python_only -eq 0 ]; then
  need java "install a JDK 17 (Debian: apt-get install openjdk-17-jdk-headless)"
  need mvn "install Maven 3 (Debian: apt-get install maven)"
  java_major=$(java -version 2>&1 | sed -n 's/.*version "\([0-9]*\).*/\1/p' | head -1)
  if [ "${java_major:-0}" -lt 17 ]; then
    echo "error: Java 17 or newer is needed (found ${java_major:-none}); Solr 9 and Hadoop 3.5 need it" >&2
    exit 1
  fi
fi

if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv"
  "$PYTHON" -m venv .venv
fi
if [ ! -f .venv/.installed ] || [ requirements.lock -nt .venv/.installed ]; then
  echo "setup: installing Python packages (requirements.lock)"
  .venv/bin/pip install -q --disable-pip-version-check -r requirements.lock
  touch .venv/.installed
fi
# The library itself (tinytags/ and webapp/), editable: jobs, bench and deploy import it from the checkout.
if [ ! -f .venv/.editable ] || [ pyproject.toml -nt .venv/.editable ]; then
  echo "setup: installing the tinytags package (editable)"
  .venv/bin/pip install -q --disable-pip-version-check --no-deps -e .
  touch .venv/.editable
fi

if [ $python_only -eq 1 ]; then
  echo "setup: python ready"
  exit 0
fi

for module in solr hdfs yarn; do
  dir=deploy/$module
  stamp=$dir/target/.built
  if [ ! -f "$stamp" ] || [ -n "$(find "$dir/pom.xml" "$dir/src" -newer "$stamp" -print -quit)" ]; then
    echo "setup: building the $module launcher (Maven Central artifacts, cached in ~/.m2)"
    if ! mvn -q -B -f "$dir/pom.xml" package > "$dir/build.log" 2>&1; then
      tail -30 "$dir/build.log" >&2
      echo "error: building $dir failed; full log: $dir/build.log" >&2
      exit 1
    fi
    rm -f "$dir/build.log"
    touch "$stamp"
  fi
done
echo "setup: ready"
