#!/usr/bin/env bash
# The "Install robust" step of action.yml: robust from the action's own checkout (ROBUST_ACTION_PATH).
set -euo pipefail
python -m pip install --upgrade pip
python -m pip install "${ROBUST_ACTION_PATH:?the action's folder}"
robust --version
