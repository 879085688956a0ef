#!/usr/bin/env sh
# Regenerate requirements.lock: the pinned, hashed runtime dependency set the container images
# install (`pip install --require-hashes -r requirements.lock`). Tool: uv (from PyPI: pip install uv).
# Universal resolution, so one lock serves linux/amd64 and linux/arm64 images.
# tests/deploy/test_lock.py checks the lock still satisfies pyproject.toml's dependencies.
set -eu
cd "$(dirname "$0")/.."
command -v uv >/dev/null 2>&1 || python3 -m pip install -q uv
uv pip compile pyproject.toml --universal --python-version 3.11 --generate-hashes \
  --custom-compile-command "sh deploy/lock.sh" -o requirements.lock "$@"
