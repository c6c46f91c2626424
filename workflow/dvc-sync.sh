#!/usr/bin/env bash
# After `dvc pull STAGE` on a fresh clone: make Snakemake accept the pulled outputs as up to date.
#
# DVC restores files with fresh modification times in arbitrary order, and Snakemake's provenance records
# (.snakemake/metadata) are not shared, so Snakemake alone would rerun jobs, or, with only mtimes, miss
# parameter changes. This script refuses unless `dvc status STAGE` is clean (the pulled outputs are exactly
# those recorded in dvc.lock for the current code and config), then runs `snakemake --touch`, which marks
# the outputs up to date in DAG order and records the current code and parameters. --forceall makes it do
# so for EVERY job: without it, jobs whose pulled files happen to have mtimes in a valid order are skipped
# and get no provenance record, and a later parameter change to them would go unnoticed. Any later config
# change then reruns exactly the affected rules.
#
#   bash workflow/dvc-sync.sh default    # the default preset (outputs in ./)
#   bash workflow/dvc-sync.sh test       # the CI preset (outputs in runs/test/)
#   bash workflow/dvc-sync.sh paper      # the paper preset (outputs in runs/paper/)
set -euo pipefail
stage=${1:-default}
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
if [ -x "$root/.venv/bin/snakemake" ]; then bin=$root/.venv/bin; else bin=$(dirname "$(command -v snakemake)"); fi
status=$("$bin/dvc" status "$stage" 2>&1) || { echo "$status" >&2; exit 2; }
if ! grep -q "Data and pipelines are up to date" <<<"$status"; then
  echo "dvc-sync: refusing to mark outputs up to date: 'dvc status $stage' is not clean:" >&2
  echo "$status" >&2
  echo "dvc-sync: run 'dvc pull $stage' (or, after changing code or config on purpose, just run snakemake)." >&2
  exit 1
fi
case "$stage" in
  default) "$bin/snakemake" --cores 1 --touch --forceall --quiet all ;;
  test) (cd runs/test && "$bin/snakemake" --snakefile ../../Snakefile --configfile=../../config/test.yaml \
          --cores 1 --touch --forceall --quiet all) ;;
  paper) (cd runs/paper && "$bin/snakemake" --snakefile ../../Snakefile --configfile=../../config/paper.yaml \
          --cores 1 --touch --forceall --quiet all) ;;
  *) echo "dvc-sync: unknown stage '$stage' (default | test | paper)" >&2; exit 2 ;;
esac
echo "dvc-sync: outputs of stage '$stage' marked up to date; 'snakemake -n' now has nothing to do."
