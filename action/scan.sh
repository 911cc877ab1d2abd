#!/usr/bin/env bash
# The "Scan and gate" step of action.yml, run exactly so by tests/test_action.py.
#
# Every input arrives as an environment variable (ROBUST_*), never as shell text; inputs with several values take
# one per line. One `robust scan` writes every report and judges the gate, so the SARIF and JUnit files carry the
# gate's checks. The step exits with robust's code (0 passed, 1 a gate check failed, 2 could not judge) after
# recording it as the step output exit-code; the action's upload steps run whatever it was.
set -uo pipefail

out="${ROBUST_OUTPUT_DIR:-robust-report}"
out="${out%/}"
args=(scan)

lines() {  # the non-empty lines of $1, trimmed, each as one word
    local line
    while IFS= read -r line || [ -n "$line" ]; do
        line="${line#"${line%%[![:space:]]*}"}"
        line="${line%"${line##*[![:space:]]}"}"
        [ -n "$line" ] && printf '%s\0' "$line"
    done <<< "${1:-}"
}

add_each() {  # add_each OPTION VALUES: OPTION before each line of VALUES (no option: the lines themselves)
    local opt="$1" value
    while IFS= read -r -d '' value; do
        if [ -n "$opt" ]; then args+=("$opt" "$value"); else args+=("$value"); fi
    done < <(lines "$2")
}

add_each "" "${ROBUST_MODEL:?give the model input}"
add_each --weights "${ROBUST_WEIGHTS:-}"
args+=(--data "${ROBUST_DATA:?give the data input}")
add_each --threat "${ROBUST_THREATS:-}"
[ -n "${ROBUST_PRESET:-}" ] && args+=(--preset "$ROBUST_PRESET")
[ -n "${ROBUST_N:-}" ] && args+=(--n "$ROBUST_N")
[ -n "${ROBUST_SEED:-}" ] && args+=(--seed "$ROBUST_SEED")

gated=""
[ -n "$(lines "${ROBUST_FAIL_UNDER:-}" | tr -d '\0')" ] && gated=1
[ -n "$(lines "${ROBUST_MAX_DROP:-}" | tr -d '\0')" ] && gated=1
add_each --fail-under "${ROBUST_FAIL_UNDER:-}"
add_each --max-drop "${ROBUST_MAX_DROP:-}"
[ -n "${ROBUST_BASELINE:-}" ] && args+=(--baseline "$ROBUST_BASELINE")
[ "${ROBUST_PAIRED:-false}" = "true" ] && args+=(--paired)
if [ "${ROBUST_GATE:-false}" = "true" ]; then args+=(--gate); gated=1; fi
# the gate's Markdown summary (also appended to $GITHUB_STEP_SUMMARY by robust itself): only with a gate
[ -n "$gated" ] && args+=(--summary "$out/gate.md")

args+=(-o "$out/report.json" -o "$out/report.html" -o "$out/report.md" -o "$out/results.sarif" -o "$out/junit.xml")
add_each "" "${ROBUST_ARGS:-}"

mkdir -p "$out"
printf 'robust'; printf ' %q' "${args[@]}"; printf '\n'
robust "${args[@]}"
code=$?

if [ -n "${GITHUB_OUTPUT:-}" ]; then
    {
        echo "exit-code=$code"
        echo "report-dir=$out"
        echo "sarif=$out/results.sarif"
    } >> "$GITHUB_OUTPUT"
fi
exit "$code"
