#!/usr/bin/env bash
# A virtual environment of its own for one group of check tools: pyproject's optional
# dependency group EXTRA, at the versions pinned in constraints.txt (`make lock`). Rebuilt
# when either file changes. Usage: scripts/tools-venv.sh DIR EXTRA
set -euo pipefail
cd "$(dirname "$0")/.."
DIR=$1
EXTRA=$2
STAMP=$DIR/.installed-$EXTRA
if [ ! -f "$STAMP" ] || [ pyproject.toml -nt "$STAMP" ] || [ constraints.txt -nt "$STAMP" ]; then
  python3 -m venv "$DIR"
  mapfile -t tools < <(python3 -c "import sys, tomllib
print(*tomllib.load(open('pyproject.toml', 'rb'))['project']['optional-dependencies'][sys.argv[1]], sep='\n')" "$EXTRA")
  "$DIR/bin/pip" install -q -c constraints.txt "${tools[@]}"
  touch "$STAMP"
fi
