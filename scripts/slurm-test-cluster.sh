#!/usr/bin/env bash
# A real single-node SLURM cluster on 127.0.0.1, for tests and CI (and for trying the slurm profile on a laptop).
#
#   scripts/slurm-test-cluster.sh install                 # Debian packages (root): slurmctld slurmd munge [+ slurmdbd mariadb]
#   scripts/slurm-test-cluster.sh start [--accounting]    # munged, slurmctld, slurmd [+ mariadbd, slurmdbd]; prints the env
#   scripts/slurm-test-cluster.sh env                     # the environment clients need (eval "$(... env)")
#   scripts/slurm-test-cluster.sh stop                    # stops what `start` started, by the PIDs it recorded
#
# Everything lives in $FOMOFLUX_SLURM_DIR (default /tmp/fomoflux-slurm): slurm.conf, state, logs, PIDs, the
# MariaDB data directory. The one change outside it is a link /etc/slurm/slurm.conf -> $dir/slurm.conf (job steps
# read that path), made only where no slurm.conf exists and removed by `stop`.
# One node (this machine's short hostname, NodeAddr 127.0.0.1) with its real CPU count and most of its memory, one
# partition `gpu` (default). The node advertises a placeholder GPU gres (no device behind it) so that rules that
# request GPUs schedule; they then run on the CPU. Every daemon binds to loopback only.
# With --accounting, job records go to slurmdbd backed by a private MariaDB on a unix socket (no TCP), so `sacct`
# works as on most clusters. Without it, `sacct` fails and the slurm profile must use `squeue` for job status
# (README, "Running on SLURM"); finished jobs stay visible for MinJobAge = 600 s and are written to jobcomp.txt.
set -euo pipefail

dir=${FOMOFLUX_SLURM_DIR:-/tmp/fomoflux-slurm}
gpus=${FOMOFLUX_SLURM_GPUS:-2}
ctld_port=${FOMOFLUX_SLURM_PORT:-6817}
slurmd_port=$((ctld_port + 1))
dbd_port=$((ctld_port + 2))
node=$(hostname -s)

die() { echo "slurm-test-cluster: $*" >&2; exit 1; }

wait_for() {  # wait_for <seconds> <description> <command...>: poll until the command succeeds
  local seconds=$1 what=$2; shift 2
  local deadline=$((SECONDS + seconds))
  until "$@" >/dev/null 2>&1; do
    [ $SECONDS -lt $deadline ] || die "$what did not come up within ${seconds}s (logs in $dir)"
    sleep 0.2
  done
}

record_pid() { echo "$2" > "$dir/pids/$1"; }

print_env() {
  echo "export SLURM_CONF=$dir/slurm.conf"
  if [ -f "$dir/accounting" ]; then
    echo "export FOMOFLUX_SLURM_ACCOUNTING=1"
  else
    echo "export FOMOFLUX_SLURM_ACCOUNTING=0"
  fi
}

cmd_install() {
  local packages=(slurmctld slurmd slurm-client munge)
  [ "${1:-}" = "--accounting" ] && packages+=(slurmdbd mariadb-server)
  local missing=()
  for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  [ "$(id -u)" -eq 0 ] || die "installing ${missing[*]} needs root (or: sudo apt-get install ${missing[*]})"
  command -v apt-get >/dev/null || die "no apt-get: install ${missing[*]} with this system's package manager"
  DEBIAN_FRONTEND=noninteractive apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

memory_mb() {  # what the node offers: the machine's memory less 2 GiB for the daemons and the workflow itself
  local total_kb
  total_kb=$(awk '/^MemTotal:/ {print $2}' /proc/meminfo)
  echo $((total_kb / 1024 - 2048))
}

write_slurm_conf() {
  local accounting=$1
  cat > "$dir/slurm.conf" <<EOF
# Written by scripts/slurm-test-cluster.sh: a one-node test cluster on loopback.
ClusterName=fomoflux
SlurmctldHost=$node(127.0.0.1)
SlurmctldPort=$ctld_port
SlurmdPort=$slurmd_port
CommunicationParameters=NoCtldInAddrAny,NoInAddrAny
SlurmUser=$(id -un)
AuthType=auth/munge
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/slurmctld.log
SlurmdLogFile=$dir/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
# Containers without systemd or cgroups: track processes through /proc, no task binding.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SelectType=select/cons_tres
# Memory is a consumable resource, and a job over its --mem is killed (polled every second), as on real clusters.
SelectTypeParameters=CR_Core_Memory
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=task=1
JobAcctGatherParams=OverMemoryKill
# Finished jobs stay visible to squeue for 10 minutes (what squeue-based status checks need).
MinJobAge=600
KillWait=5
ReturnToService=2
SchedulerType=sched/backfill
JobCompType=jobcomp/filetxt
JobCompLoc=$dir/jobcomp.txt
GresTypes=gpu
NodeName=$node NodeAddr=127.0.0.1 CPUs=$(nproc) RealMemory=$(memory_mb) Gres=gpu:$gpus State=UNKNOWN
PartitionName=gpu Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
  if [ "$accounting" = 1 ]; then
    cat >> "$dir/slurm.conf" <<EOF
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
AccountingStoragePort=$dbd_port
# GPUs in job records (sacct); slurmctld refuses this TRES without slurmdbd.
AccountingStorageTRES=gres/gpu
AccountingStoreFlags=job_comment
EOF
  else
    echo "AccountingStorageType=accounting_storage/none" >> "$dir/slurm.conf"
  fi
  # Placeholder GPUs: schedulable gres backed by empty files (slurmd counts a gres by its files).
  local i
  for i in $(seq 0 $((gpus - 1))); do : > "$dir/gpu$i"; done
  echo "NodeName=$node Name=gpu File=$dir/gpu[0-$((gpus - 1))]" > "$dir/gres.conf"
}

link_client_config() {
  # Clients find the cluster through SLURM_CONF, but the SLURM executor's job step drops every SLURM_* variable
  # before its nested srun, which then reads the compiled-in /etc/slurm/slurm.conf. A real cluster's file there is
  # never replaced.
  local etc=/etc/slurm/slurm.conf
  if [ -L "$etc" ] && [ -f "$(dirname "$(readlink "$etc")")/linked" ]; then
    # Another test cluster's link: stale if none of that cluster's daemons is alive (a crashed run), else in use.
    local other pid
    other=$(dirname "$(readlink "$etc")")
    for pid in $(cat "$other"/pids/* 2>/dev/null); do
      kill -0 "$pid" 2>/dev/null && die "the test cluster in $other is running: stop it first"
    done
    rm -f "$etc"
  fi
  if [ -e "$etc" ] || [ -L "$etc" ]; then
    die "$etc exists and is not a test cluster's: refusing to replace it (is this machine part of a cluster?)"
  fi
  mkdir -p /etc/slurm
  ln -s "$dir/slurm.conf" "$etc"
  echo "$etc" > "$dir/linked"
}

start_munge() {
  # munged is shared by every SLURM client on the machine: reuse a running one, else start ours.
  if munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
    return 0
  fi
  [ -r /etc/munge/munge.key ] || die "no munge key at /etc/munge/munge.key (is the munge package installed?)"
  mkdir -p /run/munge /var/log/munge /var/lib/munge
  chown munge:munge /run/munge /var/log/munge /var/lib/munge
  runuser -u munge -- /usr/sbin/munged --force
  wait_for 10 munged bash -c 'munge -n | unmunge'
  record_pid munged "$(cat /run/munge/munged.pid)"
}

start_database() {
  local data=$dir/mysql
  mariadb-install-db --no-defaults --datadir="$data" --user="$(id -un)" --auth-root-authentication-method=socket \
    --skip-test-db > "$dir/mariadb-install.log" 2>&1 || die "mariadb-install-db failed: see $dir/mariadb-install.log"
  mariadbd --no-defaults --datadir="$data" --socket="$dir/mysqld.sock" --skip-networking --user="$(id -un)" \
    --pid-file="$dir/mysqld.pid" --log-error="$dir/mysqld.log" 2>> "$dir/mysqld.log" &
  record_pid mariadbd $!
  wait_for 30 mariadbd test -S "$dir/mysqld.sock"
  # slurmdbd connects to "localhost", i.e. the client library's default socket, which MYSQL_UNIX_PORT names.
  export MYSQL_UNIX_PORT=$dir/mysqld.sock
  cat > "$dir/slurmdbd.conf" <<EOF
DbdHost=localhost
DbdAddr=127.0.0.1
DbdPort=$dbd_port
SlurmUser=$(id -un)
AuthType=auth/munge
PidFile=$dir/slurmdbd.pid
LogFile=$dir/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=$(id -un)
StorageLoc=slurm_acct_db
EOF
  chmod 600 "$dir/slurmdbd.conf"
  # slurmdbd reads slurmdbd.conf from the directory of $SLURM_CONF.
  slurmdbd -D >> "$dir/slurmdbd.log" 2>&1 &
  record_pid slurmdbd $!
  wait_for 30 slurmdbd sacctmgr -n show cluster
  sacctmgr -i add cluster fomoflux >/dev/null 2>&1 || true
}

cmd_start() {
  local accounting=0
  [ "${1:-}" = "--accounting" ] && accounting=1
  if [ -d "$dir/pids" ] && [ -n "$(ls -A "$dir/pids" 2>/dev/null)" ]; then
    die "a test cluster is already running from $dir (scripts/slurm-test-cluster.sh stop)"
  fi
  command -v slurmctld >/dev/null || die "slurmctld not found: run scripts/slurm-test-cluster.sh install first"
  if [ "$accounting" = 1 ]; then
    command -v slurmdbd >/dev/null && command -v mariadbd >/dev/null \
      || die "slurmdbd / mariadbd not found: run scripts/slurm-test-cluster.sh install --accounting first"
  fi
  rm -rf "$dir"
  mkdir -p "$dir/state" "$dir/spool" "$dir/pids"
  # A start that fails half-way stops what it had started.
  trap 'cmd_stop' EXIT
  [ "$accounting" = 1 ] && touch "$dir/accounting"
  export SLURM_CONF=$dir/slurm.conf
  write_slurm_conf "$accounting"
  link_client_config
  start_munge
  [ "$accounting" = 1 ] && start_database
  # -D: in the foreground of this background job, so the PID we record is the daemon's own.
  slurmctld -D -i -f "$SLURM_CONF" >> "$dir/slurmctld.log" 2>&1 &
  record_pid slurmctld $!
  wait_for 30 slurmctld scontrol ping
  slurmd -D -N "$node" -f "$SLURM_CONF" >> "$dir/slurmd.log" 2>&1 &
  record_pid slurmd $!
  wait_for 30 "node $node" bash -c "sinfo -h -N -o '%T' | grep -qE '^(idle|mixed|allocated)'"
  trap - EXIT
  echo "slurm-test-cluster: up ($( [ "$accounting" = 1 ] && echo with || echo without ) accounting) in $dir" >&2
  print_env
}

cmd_stop() {
  [ -d "$dir/pids" ] || return 0
  export SLURM_CONF=$dir/slurm.conf
  scancel --full --quiet --user "$(id -un)" 2>/dev/null || true
  # Clients first, storage last, so that nothing loses a record on the way down.
  for daemon in slurmd slurmctld slurmdbd mariadbd munged; do
    local file=$dir/pids/$daemon
    [ -f "$file" ] || continue
    local pid
    pid=$(cat "$file")
    if kill -0 "$pid" 2>/dev/null; then
      kill "$pid" 2>/dev/null || true
      for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      kill -0 "$pid" 2>/dev/null && kill -9 "$pid" 2>/dev/null || true
    fi
    rm -f "$file"
  done
  if [ -f "$dir/linked" ]; then
    rm -f "$(cat "$dir/linked")" "$dir/linked"
  fi
  echo "slurm-test-cluster: stopped ($dir kept for its logs)" >&2
}

case "${1:-}" in
  install) shift; cmd_install "$@" ;;
  start) shift; cmd_start "$@" ;;
  stop) cmd_stop ;;
  env) print_env ;;
  *) die "usage: $0 install [--accounting] | start [--accounting] | env | stop" ;;
esac
