#!/usr/bin/env bash
# Restore the pipeline's data, models and results from DVC so that neither engine wants to recompute anything.
#
#   scripts/pull.sh                  # `dvc pull` from the default remote, then the steps below     (make pull)
#   scripts/pull.sh checkout         # the same from the local cache, e.g. after `git checkout`    (make checkout)
#   scripts/pull.sh pull -r myremote # more arguments go to dvc
#
# Why: DVC writes restored files with new modification times, in no particular order (dvc#8602, dvc#10347).
# Snakemake re-runs a job whose input is newer than its output (a checksum rescues only a file under 1 MB, and only
# against its own metadata), and a clone has no .snakemake/metadata: without it Snakemake cannot even see a later
# change of params or code. So, in this order:
#   1. dvc pull (or checkout) restores every output dvc.lock records;
#   2. `dvc status` must be clean: DVC has then checked every stage's deps, params and outputs against the hashes in
#      dvc.lock, i.e. each output is what its current inputs make (if not, we stop: run `dvc repro`);
#   3. `snakemake --touch --forceall` then marks every job done: it touches each job's outputs after its inputs (DAG
#      order) and records Snakemake's metadata for it (params, code, input list, checksums), as if it had run it;
#   4. `snakemake -n` must have nothing to do.
# Uses `dvc` and `snakemake` from PATH (the Makefile puts .venv/bin first).
set -euo pipefail
cd "$(dirname "$0")/.."

action=${1:-pull}
case "$action" in
  pull | checkout) shift $(($# > 0 ? 1 : 0)) ;;
  *) echo "usage: $0 [pull|checkout] [dvc arguments...]" >&2; exit 2 ;;
esac

dvc "$action" "$@"

if ! dvc status --quiet; then
  dvc status >&2
  echo "$0: the restored files do not match dvc.lock (above); run \`dvc repro\` to bring them up to date" >&2
  exit 1
fi

snakemake --quiet all --touch --forceall --cores all
dry_run=$(snakemake --dry-run 2>&1)
if ! grep -q "Nothing to be done" <<<"$dry_run"; then
  echo "$dry_run" >&2
  echo "$0: Snakemake still plans the jobs above after --touch" >&2
  exit 1
fi
echo "Both engines are up to date: \`dvc status\` is clean and \`snakemake -n\` has nothing to do."
