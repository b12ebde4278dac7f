#!/usr/bin/env bash
# A one-node SLURM cluster on this machine: for nnlab's tests, and for trying
# `hydra/launcher=slurm` before a real cluster.
#
#   sudo scripts/local_slurm.sh up      # start it; sbatch, squeue, sacct then work as usual
#   sudo scripts/local_slurm.sh down    # stop it, leaving nothing running
#
# Debian's slurm-wlm, slurmdbd, munge and mariadb-server: munged, a MariaDB server for SLURM's
# accounting (sacct, which submitit polls for job states, needs slurmdbd, and slurmdbd needs
# MySQL or MariaDB), slurmdbd, slurmctld and slurmd, all on localhost. The node is this machine
# as `slurmd -C` reads it (its cores and memory). slurm.conf and slurmdbd.conf go to
# /etc/slurm (where every SLURM command looks, so nothing else needs setting) and are removed
# by `down`; SLURM's and MariaDB's state lives in NNLAB_SLURM_DIR (default
# $TMPDIR/nnlab-slurm). Root only: slurmd runs jobs as their users. Nothing listens beyond
# 127.0.0.1, and no password exists (munge's key authenticates; MariaDB's slurm user is local).
set -euo pipefail

dir=${NNLAB_SLURM_DIR:-${TMPDIR:-/tmp}/nnlab-slurm}
conf=/etc/slurm
mark="# written by nnlab's scripts/local_slurm.sh"
db_port=${NNLAB_SLURM_DB_PORT:-53306}

if [ "$(id -u)" -ne 0 ]; then
  echo "local_slurm.sh: run it as root (slurmd starts jobs as their users)" >&2
  exit 2
fi
for program in munged slurmctld slurmd slurmdbd mariadbd; do
  if ! command -v "$program" >/dev/null && [ ! -x "/usr/sbin/$program" ]; then
    echo "local_slurm.sh: $program is missing (Debian: apt-get install slurm-wlm slurmdbd munge mariadb-server)" >&2
    exit 2
  fi
done

wait_for() {  # wait_for SECONDS WHAT COMMAND...: until COMMAND succeeds
  local seconds=$1 what=$2
  shift 2
  for _ in $(seq "$((seconds * 10))"); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    sleep 0.1
  done
  echo "local_slurm.sh: $what did not start; see $dir/*.log" >&2
  exit 1
}

stop_pid_file() {  # stop the process a pid file names (if it is still that program)
  local file=$1 program=$2 pid
  [ -f "$file" ] || return 0
  pid=$(cat "$file")
  [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$program" ] || return 0
  kill "$pid" 2>/dev/null || true
  for _ in $(seq 100); do
    kill -0 "$pid" 2>/dev/null || return 0
    sleep 0.1
  done
  kill -9 "$pid" 2>/dev/null || true
}

down() {
  if [ -e "$dir" ] && [ ! -e "$dir/.nnlab-local-slurm" ]; then
    echo "local_slurm.sh: $dir is not this script's folder; it is left alone" >&2
    exit 2
  fi
  if [ -f "$dir/slurmctld.pid" ]; then  # end the jobs first: slurmd's end leaves them running
    scancel --full --quiet --user="$(id -un)" 2>/dev/null || true
    for _ in $(seq 100); do
      [ -z "$(squeue -h -o %i 2>/dev/null)" ] && break
      sleep 0.1
    done
  fi
  stop_pid_file "$dir/slurmd.pid" slurmd
  stop_pid_file "$dir/slurmctld.pid" slurmctld
  stop_pid_file "$dir/slurmdbd.pid" slurmdbd
  stop_pid_file "$dir/mysql/mysql.pid" mariadbd
  stop_pid_file "$dir/munge/munged.pid" munged
  for file in "$conf/slurm.conf" "$conf/slurmdbd.conf"; do
    if [ -f "$file" ] && head -n 1 "$file" | grep -qF "$mark"; then rm -f "$file"; fi
  done
  rm -rf "$dir"
}

up() {
  for file in "$conf/slurm.conf" "$conf/slurmdbd.conf"; do
    if [ -f "$file" ] && ! head -n 1 "$file" | grep -qF "$mark"; then
      echo "local_slurm.sh: $file is not this script's; it is left alone, and no cluster started" >&2
      exit 2
    fi
  done
  down
  mkdir -p "$dir"/{state,spool,mysql,munge} "$conf" /run/munge
  touch "$dir/.nnlab-local-slurm"
  host=$(hostname -s)

  chown munge: /run/munge "$dir/munge"
  if ! munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then  # else the system's munged runs
    runuser -u munge -- /usr/sbin/munged --pid-file="$dir/munge/munged.pid" \
      --log-file="$dir/munge/munged.log" --seed-file="$dir/munge/munged.seed"
  fi

  chown mysql: "$dir/mysql"
  mariadb-install-db --no-defaults --datadir="$dir/mysql" --user=mysql --skip-test-db \
    --auth-root-authentication-method=socket >"$dir/mysql-install.log" 2>&1
  /usr/sbin/mariadbd --no-defaults --datadir="$dir/mysql" --user=mysql \
    --socket="$dir/mysql/mysql.sock" --bind-address=127.0.0.1 --port="$db_port" \
    --pid-file="$dir/mysql/mysql.pid" --log-error="$dir/mysql/mysql.log" --skip-log-bin \
    --innodb-buffer-pool-size=32M >/dev/null 2>&1 &
  wait_for 60 MariaDB mariadb --no-defaults -S "$dir/mysql/mysql.sock" -u root -e "SELECT 1"
  mariadb --no-defaults -S "$dir/mysql/mysql.sock" -u root -e \
    "CREATE USER 'slurm'@'127.0.0.1'; GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';"

  cat >"$conf/slurmdbd.conf" <<EOF
$mark
AuthType=auth/munge
DbdHost=localhost
DbdAddr=127.0.0.1
SlurmUser=root
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$db_port
StorageUser=slurm
StorageLoc=slurm_acct_db
PidFile=$dir/slurmdbd.pid
LogFile=$dir/slurmdbd.log
EOF
  chmod 600 "$conf/slurmdbd.conf"

  cat >"$conf/slurm.conf" <<EOF
$mark
ClusterName=nnlab
SlurmctldHost=$host(127.0.0.1)
SlurmUser=root
AuthType=auth/munge
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/slurmctld.log
SlurmdLogFile=$dir/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
ReturnToService=2
# a job that asks for more than any node has is refused when submitted, not left pending
EnforcePartLimits=ALL
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
# short waits, for a cluster that lives for one test session (cred_expire: a requeued job
# waits that long before it starts again; 120 s by default)
AuthInfo=cred_expire=10
MinJobAge=30
KillWait=10
SchedulerParameters=sched_interval=1
$(slurmd -C | head -n 1) NodeAddr=127.0.0.1 State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF

  /usr/sbin/slurmdbd
  wait_for 30 slurmdbd sacctmgr -i list cluster
  /usr/sbin/slurmctld
  wait_for 30 slurmctld scontrol ping
  sacctmgr -i add cluster nnlab >/dev/null 2>&1 || true  # slurmctld may have added it itself
  /usr/sbin/slurmd
  wait_for 60 "the node" sh -c "sinfo -h -N -o %t | grep -qx idle"
  echo "SLURM is up: $(sinfo -h -N -o '%N %c CPUs %m MB %t')"
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  *)
    echo "usage: scripts/local_slurm.sh up|down" >&2
    exit 2
    ;;
esac
