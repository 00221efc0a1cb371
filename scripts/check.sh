#!/usr/bin/env bash
# npm run check: contracts lint-clean and not broken, gen/ in step with proto/,
# imports within the rules of services/mesh, permissions declared, types clean.
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

echo "gen/ matches proto/"
buf generate
if [ -n "$(git status --porcelain -- gen)" ]; then
  git status --porcelain -- gen
  echo "gen/ is out of date: run npm run gen and commit the result" >&2
  exit 1
fi

echo "imports keep services/mesh's entries, layers and no circle (scripts/check-imports.ts)"
node scripts/check-imports.ts

echo "every permission a method names is declared once by a service (scripts/check-permissions.ts)"
node scripts/check-permissions.ts

echo "tsc"
tsc -p .
