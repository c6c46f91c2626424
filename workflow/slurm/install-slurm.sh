#!/usr/bin/env bash
# Installs a single-node SLURM from Debian/Ubuntu packages for tests/test_slurm.py: munge, slurmctld,
# slurmd and the client commands (sbatch, squeue, scontrol, ...). Idempotent: does nothing when every
# command is already there. Starts no daemon, and keeps apt from starting the packages' services (the
# test starts its own daemons on private ports and sockets, and stops them).
# Needs root and apt-get; without them it says so and exits 0 (the test then skips, naming the reason).
set -euo pipefail

PATH="$PATH:/usr/sbin:/sbin"
commands=(munged slurmctld slurmd sbatch squeue sinfo scontrol scancel srun)
missing=()
for c in "${commands[@]}"; do
  command -v "$c" >/dev/null 2>&1 || missing+=("$c")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "[slurm] already installed: $(slurmctld -V)"
  exit 0
fi
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "[slurm] not installing SLURM (missing: ${missing[*]}): needs root and apt-get" >&2
  exit 0
fi

# No service may start during the install (a systemd runner would start munge and the slurm daemons with
# the packages' default config): policy-rc.d answers 101 ("action forbidden") to invoke-rc.d and
# deb-systemd-invoke. An existing policy is left as it is.
policy=/usr/sbin/policy-rc.d
created_policy=0
if [ ! -e "$policy" ]; then
  printf '#!/bin/sh\nexit 101\n' >"$policy"
  chmod 755 "$policy"
  created_policy=1
fi
trap 'if [ "$created_policy" = 1 ]; then rm -f "$policy"; fi' EXIT

packages=(munge slurmctld slurmd slurm-client)
install() {
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${packages[@]}" >/dev/null
}
echo "[slurm] apt-get install ${packages[*]}"
if ! install; then
  # stale or missing package lists (a fresh CI image): refresh them once and retry
  apt-get update -qq
  install
fi
echo "[slurm] installed: $(slurmctld -V)"
