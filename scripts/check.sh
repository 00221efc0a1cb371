#!/usr/bin/env bash
# npm run check: contracts lint-clean and not broken, gen/ in step with proto/,
# the Kubernetes manifests in step with services/registry.ts, imports within
# the rules of services/mesh, permissions declared, reads and writes
# declared, types clean.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "buf lint"
buf lint

echo "vendored protos match their npm packages"
diff -u node_modules/grpc-health-check/proto/health/v1/health.proto proto/grpc/health/v1/health.proto
diff -u node_modules/@grpc/reflection/build/proto/grpc/reflection/v1/reflection.proto proto/grpc/reflection/v1/reflection.proto
diff -u node_modules/@grpc/reflection/build/proto/grpc/reflection/v1alpha/reflection.proto proto/grpc/reflection/v1alpha/reflection.proto

# Breaking changes are judged against where this branch left main, or, on
# main itself, against the previous commit.
base=""
for ref in origin/main main; do
  if git rev-parse -q --verify "$ref" >/dev/null; then
    base=$(git merge-base HEAD "$ref")
    break
  fi
done
if [ "$base" = "$(git rev-parse HEAD)" ]; then
  base=$(git rev-parse -q --verify HEAD~1 || true)
fi
if [ -n "$base" ] && git cat-file -e "$base:buf.yaml" 2>/dev/null; then
  echo "buf breaking against ${base:0:12}"
  buf breaking --against ".git#ref=$base"
fi

# Generated into a folder of its own and compared with the working tree, so
# that a stale gen/ (run npm run gen) is told apart from a current one that
# is not committed yet (commit it), and the check itself changes nothing.
echo "gen/ matches proto/"
fresh=$(mktemp -d)
trap 'rm -rf "$fresh"' EXIT
buf generate -o "$fresh"
stale=$(diff -rq gen "$fresh/gen" | sed -E \
  -e "s#^Only in $fresh/(gen[^:]*): (.*)#  \\1/\\2: missing#" \
  -e "s#^Only in (gen[^:]*): (.*)#  \\1/\\2: not generated from proto/#" \
  -e "s#^Files (gen/[^ ]*) and .* differ#  \\1: differs#" || true)
if [ -n "$stale" ]; then
  echo "$stale" >&2
  echo "gen/ is out of date: it is not what buf generate makes of proto/. Run npm run gen, then commit proto/ and gen/ together" >&2
  exit 1
fi
# A gen/ change not committed is in order while the proto/ change it comes
# from is not committed either (a contract being written, a service just
# added by `tenantry new-service`): they are committed together.
if [ -n "$(git status --porcelain -- gen)" ]; then
  if [ -z "$(git status --porcelain -- proto)" ]; then
    git status --porcelain -- gen >&2
    echo "gen/ is current with proto/ but not committed: commit these changes to gen/ (with the proto/ change they come from)" >&2
    exit 1
  fi
  echo "  gen/ and proto/ have changes to commit together"
fi

echo "deploy/ in step with services/registry.ts (npm run deploy:manifests)"
node deploy/manifests.ts --check

echo "imports keep services/mesh's entries, layers and no circle (scripts/check-imports.ts)"
node scripts/check-imports.ts

echo "every permission a method names is declared once by a service (scripts/check-permissions.ts)"
node scripts/check-permissions.ts

echo "every method declares whether it writes, and keeps what it declared (scripts/check-idempotency.ts)"
if [ -n "$base" ] && git cat-file -e "$base:buf.yaml" 2>/dev/null; then
  node scripts/check-idempotency.ts --against "$base"
else
  node scripts/check-idempotency.ts
fi

echo "tsc"
tsc -p .
