#!/usr/bin/env bash
# `make test`: the whole suite as a fresh clone sees it, then the full-data tests in place.
#
#  1. Copies the checkout's files (tracked, plus untracked ones git does not ignore) into
#     a new folder under /tmp: nothing beside it (no ../shared) and no TFPLM_DATA_DIR, so
#     the tests marked full_data skip. The copy gets a throwaway virtual environment that
#     reuses the packages installed in $VENV but not its editable tfplm, which points at
#     this checkout: tfplm is installed there in editable mode from the copy, and the log
#     shows where `import tfplm` resolves.
#  2. Runs the full_data tests (pytest -m full_data) here, on ../shared/data or
#     $TFPLM_DATA_DIR; if neither exists, says so and skips them.
#
# Usage: tools/run_tests.sh [pytest arguments; default: tests]
# Environment: VENV (default .venv, installed by `make install`), PYTEST_WORKERS (default 2).
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
VENV=$(cd "${VENV:-$REPO/.venv}" && pwd -P)
WORKERS=${PYTEST_WORKERS:-2}
TESTS=("$@")
[ ${#TESTS[@]} -gt 0 ] || TESTS=(tests)
DATA=${TFPLM_DATA_DIR:-$REPO/../shared/data}

WORK=$(mktemp -d /tmp/tfplm-fresh-clone.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
COPY=$WORK/clone/$(basename "$REPO")  # its parent holds nothing else
ENV=$WORK/venv
mkdir -p "$COPY"

echo "== 1/2: the suite on a copy without ../shared: $COPY"
cd "$REPO"
if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
    # Files deleted but not yet committed are skipped; untracked ones are copied (and named)
    # so that new tests run, but a fresh clone lacks them until they are committed.
    git ls-files -z --cached --others --exclude-standard |
        while IFS= read -r -d '' f; do
            if [ -e "$f" ] || [ -L "$f" ]; then printf '%s\0' "$f"; fi
        done | xargs -0 -r cp -P --parents -t "$COPY"
    untracked=$(git ls-files --others --exclude-standard)
    if [ -n "$untracked" ]; then
        echo "note: untracked files copied too (commit them, a fresh clone lacks them):"
        echo "$untracked" | head -n 20 | sed 's/^/  /'
    fi
else
    echo "not a git checkout: copying everything but the usual build outputs"
    tar -C "$REPO" --exclude=./.git --exclude=./.venv --exclude='./.venv-*' --exclude=./build \
        --exclude=./dist --exclude='*.egg-info' --exclude=__pycache__ --exclude=./runs \
        --exclude=./demo_output --exclude=.pytest_cache -cf - . | tar -C "$COPY" -xf -
fi
[ ! -e "$COPY/../shared" ] || { echo "error: $COPY/../shared exists" >&2; exit 1; }

# The throwaway environment: the folders on $VENV's sys.path (its site-packages and any that
# its .pth files add, but none of this checkout's own) on its path through a .pth file that
# only names folders, so $VENV's .pth files, its editable tfplm among them, do not run; then
# tfplm in editable mode from the copy (pip leaves $VENV's tfplm: outside this environment).
"$VENV/bin/python" -m venv --without-pip "$ENV"
PY=$ENV/bin/python
site=$("$PY" -c 'import sysconfig; print(sysconfig.get_path("purelib"))')
env -u PYTHONPATH "$VENV/bin/python" - "$REPO" "$VENV" "$PY" >"$site/zz-tfplm-test-dependencies.pth" <<'PTH'
import os, subprocess, sys
repo, venv, py = (os.path.realpath(p) for p in sys.argv[1:])
own = subprocess.run([py, "-c", "import sys; print(*sys.path, sep='\\n')"], capture_output=True, text=True, check=True)
own = {os.path.realpath(p) for p in own.stdout.splitlines() if p}
under = lambda path, folder: path == folder or path.startswith(folder + os.sep)
for path in filter(None, sys.path):
    real = os.path.realpath(path)
    if os.path.isdir(real) and real not in own and (under(real, venv) or not under(real, repo)):
        print(real)
PTH
# --quiet twice: pip's "Not uninstalling tfplm at $VENV..., outside environment" is expected.
env -u PYTHONPATH -u PIP_USER -u PIP_TARGET -u PIP_PREFIX "$PY" -m pip install --quiet --quiet \
    --no-deps --no-index --no-build-isolation --disable-pip-version-check -e "$COPY"

cd "$COPY"
run_in_copy() { env -u PYTHONPATH -u TFPLM_DATA_DIR "$PY" "$@"; }
run_in_copy - "$COPY" "$REPO" <<'EOF'
import importlib.util, os, sys
copy, repo = sys.argv[1:]
import tfplm
print(f"tfplm.__file__ = {tfplm.__file__}")
for name in ("tfplm", "tfplm.models", "tfplm.tasks", "tfplm.export"):
    origin = importlib.util.find_spec(name).origin
    print(f"{name} from {origin}")
    assert origin.startswith(copy + os.sep), f"{name} resolves outside the copy {copy}: {origin}"
assert repo not in sys.path, f"{repo} on sys.path: {sys.path}"
EOF
# worksteal: a worker that runs out of tests takes queued ones from the other (the slow
# files would otherwise end the run on one worker); --durations: where the time goes.
run_in_copy -m pytest -n "$WORKERS" --dist worksteal --durations=25 "${TESTS[@]}"

echo "== 2/2: the full_data tests in place: $REPO"
cd "$REPO"
if [ ! -d "$DATA" ]; then
    echo "no full data at $DATA (set TFPLM_DATA_DIR): the full_data tests stay skipped"
    exit 0
fi
status=0
# worksteal: the slow convergence tests, queued on one worker at first, get split.
"$VENV/bin/python" -m pytest -n "$WORKERS" --dist worksteal -m full_data "${TESTS[@]}" || status=$?
if [ "$status" -eq 5 ] && [ $# -gt 0 ]; then
    echo "no full_data tests among $*"  # only with a chosen selection: the suite has some
    status=0
fi
exit "$status"
