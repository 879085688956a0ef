#!/usr/bin/env sh
# Regenerate both Python locks (tool: uv, itself pinned in requirements-dev.lock):
#
#   requirements.lock      the runtime set the container images install
#                          (`pip install --require-hashes -r requirements.lock`)
#   requirements-dev.lock  everything `scripts/dev` installs into .venv: the runtime set at the
#                          same versions, pyproject's [test] extra (pytest, ruff, mypy,
#                          import-linter, stubs, validators, ...) and the build backend
#
#   sh deploy/lock.sh              keep today's pins, add what is new in pyproject.toml
#   sh deploy/lock.sh --upgrade    move every pin to the newest release (try it first with
#                                  `bash scripts/dev deps-check`)
#
# Universal resolution, so one lock serves linux/amd64 and linux/arm64 (and any Python >= 3.11 env
# marker). tests/deploy checks both locks still satisfy pyproject.toml and agree with each other.
set -eu
cd "$(dirname "$0")/.."
if [ -x .venv/bin/uv ]; then UV=.venv/bin/uv
elif command -v uv >/dev/null 2>&1; then UV=uv
else echo "deploy/lock.sh: needs uv: run 'bash scripts/dev setup' (installs it into .venv) or 'pip install uv'" >&2; exit 1
fi
common="--universal --python-version 3.11 --generate-hashes --custom-compile-command 'sh deploy/lock.sh'"
eval "$UV pip compile pyproject.toml $common -o requirements.lock $*"
# the dev set is constrained to the runtime pins: tests run exactly what the image ships
eval "$UV pip compile pyproject.toml deploy/dev-tools.in --extra test $common -c requirements.lock -o requirements-dev.lock $*"
