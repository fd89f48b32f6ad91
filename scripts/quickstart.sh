#!/usr/bin/env bash
# Runs gitca's main job on example-repo/ with the embedded defaults (a local software CA key and
# a local state folder), in a scratch clone: the checkout is never modified.
#
#   1. copy example-repo/ into a new git repository and commit it (without its revocation)
#   2. gitca init   -> root + issuing CA, keys in the scratch data folder (never in the repo)
#   3. gitca plan   -> what would be issued; one request is rejected by policy on purpose
#   4. gitca apply  -> sign, record state, write certificates + CRL, commit
#   5. commit the revocation, plan and apply again -> the CRL lists the revoked certificate
#   6. openssl verify -crl_check every issued certificate
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
scratch="${GITCA_QUICKSTART_DIR:-$(mktemp -d -t gitca-quickstart.XXXXXX)}"
# gitca takes GITCA_DATA_DIR only as an absolute path.
mkdir -p "$scratch" && scratch="$(cd "$scratch" && pwd)"
export GITCA_DATA_DIR="$scratch/data"
repo="$scratch/ca-repo"

# GITCA_BIN: use an already built binary (CI reuses the one `cargo test` built).
gitca="${GITCA_BIN:-}"
if [ -z "$gitca" ]; then
  echo "==> building gitca"
  cargo build --quiet --manifest-path "$root/Cargo.toml" --bin gitca
  gitca="$root/target/debug/gitca"
fi

# plan/apply exit 3 when some request is rejected (the rest is still planned/applied).
run() {
  echo; echo "\$ gitca $*"
  "$gitca" "$@" || { rc=$?; [ "$rc" -eq 3 ] || [ "$rc" -eq 2 ] || exit "$rc"; echo "(exit code $rc: see 'Exit codes' in README.md)"; }
}

echo "==> scratch CA repository: $repo"
mkdir -p "$repo"
cp -R "$root/example-repo/." "$repo/"
mv "$repo/revocations.yaml" "$scratch/revocations.yaml"
cd "$repo"
git init -q -b main
git config user.name "gitca quickstart"
git config user.email "quickstart@example.com"
git add -A
git commit -q -m "Certificate requests"

run init
run plan
run apply

echo; echo "==> revoking requests/clients/old-laptop.yaml"
cp issued/clients/old-laptop.pem "$scratch/old-laptop.pem"
mv "$scratch/revocations.yaml" revocations.yaml
git add revocations.yaml
git commit -q -m "Revoke old-laptop"
run plan
run apply

if command -v openssl >/dev/null; then
  echo; echo "==> openssl verify -crl_check"
  for cert in $(find issued -name '*.pem' ! -name '*.chain.pem' | sort) "$scratch/old-laptop.pem"; do
    if out=$(openssl verify -crl_check -CAfile ca/root-ca.pem -untrusted ca/issuing-ca.pem \
      -CRLfile crl/example-ca.crl.pem "$cert" 2>&1); then
      echo "  $out"
    else
      echo "  $cert: $(echo "$out" | grep -o 'certificate revoked' || echo "$out")"
    fi
  done
fi

echo
echo "==> git log"
git log --format='  %h %s'
echo
echo "Done. CA repository: $repo"
echo "      state and keys: $GITCA_DATA_DIR (keys are mode 0600, outside the repository)"
