#!/usr/bin/env bash
# Issue: service discovery. Rendering and atomically writing the file_sd file for a 2,000-member
# pool, per cycle (goal: under 50 ms), beside an in-place write of the same bytes.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo bench --locked -q --bench discovery
