#!/usr/bin/env bash
# Lints the GitHub Actions workflows: this project's (the reusable gitca-plan/gitca-apply and CI)
# and the example CA repository's. Uses the project venv's actionlint, else one on PATH.
# actionlint checks `run:` scripts with shellcheck when it finds one (the venv's first, then
# PATH); without shellcheck it skips those checks, and this script says so.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ -x .venv/bin/actionlint ]; then
  actionlint=.venv/bin/actionlint
elif command -v actionlint >/dev/null 2>&1; then
  actionlint=$(command -v actionlint)
else
  echo "actionlint.sh: actionlint not found: neither .venv/bin/actionlint nor actionlint on PATH." >&2
  echo "  Install it into the project venv (python3 -m venv .venv && .venv/bin/pip install -r .ci/requirements.txt)." >&2
  exit 1
fi

args=()
if [ -x .venv/bin/shellcheck ]; then
  args+=(-shellcheck "$PWD/.venv/bin/shellcheck")
elif command -v shellcheck >/dev/null 2>&1; then
  args+=(-shellcheck "$(command -v shellcheck)")
else
  echo "actionlint.sh: shellcheck not found: run: scripts are not checked" >&2
fi

shopt -s nullglob
files=(.github/workflows/*.yml .github/workflows/*.yaml
       example-repo/.github/workflows/*.yml example-repo/.github/workflows/*.yaml)
if [ ${#files[@]} -eq 0 ]; then
  echo "actionlint.sh: no workflow files found" >&2
  exit 1
fi

echo "actionlint $("$actionlint" -version | head -n1) on ${#files[@]} file(s)"
"$actionlint" "${args[@]}" "${files[@]}"
echo "actionlint: no problems"
