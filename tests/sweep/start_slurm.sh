#!/usr/bin/env bash
# start_slurm.sh - start a throw-away single-node SLURM cluster on localhost, as root,
# without systemd: munged + (MariaDB + slurmdbd) + slurmctld + slurmd, all state/logs under $DIR.
# The cluster the `slurm` tests run on (tests/sweep/conftest.py starts it, .ci/run installs the
# packages); also a way to try `hydra/launcher=slurm` on one machine (docs/sweeps.md).
#
# Needs (Debian 12, once):
#   apt-get install -y --no-install-recommends munge slurmctld slurmd slurm-client \
#       slurmdbd slurm-wlm-mysql-plugin mariadb-server      # last three only if accounting
#
# Env:  SLURM_LOCAL_DIR         (default $TMPDIR/harness-slurm)
#       SLURM_LOCAL_ACCOUNTING  1 = run MariaDB+slurmdbd so `sacct` works (default 1).
#                               submitit needs sacct to notice jobs that died without a result.
#       SLURM_LOCAL_PORT_BASE   slurmctld port; slurmd=+1, slurmdbd=+2, mariadb=+3 (default 6817)
# Idempotent: if the cluster is already up it does nothing; otherwise it wipes $DIR/{etc,run,state}
# and builds everything from zero. Writes $DIR/env.sh (export SLURM_CONF=...). Partition: "debug".
set -euo pipefail
DIR=${SLURM_LOCAL_DIR:-${TMPDIR:-/tmp}/harness-slurm}
ACCT=${SLURM_LOCAL_ACCOUNTING:-1}
PORT=${SLURM_LOCAL_PORT_BASE:-6817}
HERE=$(cd "$(dirname "$0")" && pwd)
CONF=$DIR/etc/slurm.conf
PIDS=$DIR/run/pids
SOCK=$DIR/run/munge/munge.socket
DBSOCK=$DIR/run/mysql/mysqld.sock
export SLURM_CONF=$CONF
T0=$(date +%s%N)
el() { local d=$(( $(date +%s%N) - T0 )); printf '%d.%02d' $((d / 1000000000)) $((d / 10000000 % 100)); }
alive() { # recorded PID exists, is that daemon, and is not a zombie
  local p; [ -s "$PIDS/$1" ] || return 1; p=$(cat "$PIDS/$1")
  [ "$(cat /proc/"$p"/comm 2>/dev/null)" = "$1" ] && [ "$(awk '{print $3}' /proc/"$p"/stat 2>/dev/null)" != Z ]
}
die() { echo "start_slurm: $*" >&2; for f in "$DIR"/log/*; do echo "== $f" >&2; tail -n 15 "$f" >&2; done; exit 1; }
waitfor() { # waitfor SECONDS DESCRIPTION CMD...
  local n=$(( $1 * 5 )) what=$2; shift 2
  for _ in $(seq "$n"); do "$@" >/dev/null 2>&1 && return 0; sleep 0.2; done
  die "timed out waiting for $what"
}

DAEMONS="munged slurmctld slurmd"; [ "$ACCT" = 1 ] && DAEMONS="munged mariadbd slurmdbd slurmctld slurmd"
up=1; for d in $DAEMONS; do alive $d || up=0; done
if [ $up = 1 ] && [ "$(cat "$DIR/run/mode" 2>/dev/null)" = "$ACCT" ] \
   && sinfo -h -N -o %T 2>/dev/null | grep -qE '^(idle|mixed|allocated)$'; then
  echo "start_slurm: already running (SLURM_CONF=$CONF)"; exit 0
fi
"$HERE/stop_slurm.sh" >/dev/null 2>&1 || true          # leftovers of a half-started cluster
rm -rf "$DIR/etc" "$DIR/run" "$DIR/state"
mkdir -p "$DIR/etc/munge" "$DIR/run/munge" "$DIR/run/mysql" "$PIDS" "$DIR/log" \
         "$DIR/state/munge" "$DIR/state/slurmctld" "$DIR/state/slurmd"
chmod 755 "$DIR" "$DIR/run" "$DIR/run/munge"; chmod 700 "$DIR/etc/munge" "$DIR/state/munge"
: > "$DIR/log/munged.log"

# ---- munge: private key + private socket
dd if=/dev/urandom of="$DIR/etc/munge/munge.key" bs=1024 count=1 status=none
chmod 400 "$DIR/etc/munge/munge.key"
setsid munged -F --key-file="$DIR/etc/munge/munge.key" --socket="$SOCK" \
  --pid-file="$DIR/run/munge/munged.pid" --seed-file="$DIR/state/munge/munged.seed" \
  --log-file="$DIR/log/munged.log" </dev/null >>"$DIR/log/munged.log" 2>&1 &
echo $! > "$PIDS/munged"
waitfor 15 munged bash -c "munge -S '$SOCK' -n | unmunge -S '$SOCK'"

# ---- slurm.conf
HOST=$(hostname -s)
NODE=$(env -u SLURM_CONF slurmd -C | head -n 1)       # NodeName=<host> CPUs=.. RealMemory=..
if [ "$ACCT" = 1 ]; then
  ACCTCONF="AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStoragePort=$((PORT + 2))
AccountingStoragePass=$SOCK
JobAcctGatherType=jobacct_gather/linux"
else
  ACCTCONF="AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none"
fi
cat > "$CONF" <<EOF
ClusterName=localci
SlurmctldHost=$HOST(127.0.0.1)
SlurmctldPort=$PORT
SlurmdPort=$((PORT + 1))
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$SOCK,cred_expire=10
StateSaveLocation=$DIR/state/slurmctld
SlurmdSpoolDir=$DIR/state/slurmd
SlurmctldPidFile=$DIR/run/slurmctld.pid
SlurmdPidFile=$DIR/run/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=1024
SchedulerType=sched/backfill
SchedulerParameters=${SLURM_LOCAL_SCHED_PARAMS:-bf_interval=5,sched_interval=2}
MpiDefault=none
ReturnToService=2
KillWait=5
MailProg=/bin/true
$ACCTCONF
JobCompType=jobcomp/filetxt
JobCompLoc=$DIR/log/jobcomp.txt
$NODE NodeAddr=127.0.0.1 State=UNKNOWN
PartitionName=debug Nodes=$HOST Default=YES MaxTime=INFINITE State=UP
EOF

# ---- accounting: private MariaDB on 127.0.0.1:PORT+3 + slurmdbd on PORT+2
if [ "$ACCT" = 1 ]; then
  mariadb-install-db --no-defaults --user=root --datadir="$DIR/state/mysql" \
    --auth-root-authentication-method=socket --skip-test-db >"$DIR/log/mariadb-install.log" 2>&1 \
    || die "mariadb-install-db failed"
  setsid mariadbd --no-defaults --user=root --datadir="$DIR/state/mysql" --socket="$DBSOCK" \
    --pid-file="$DIR/run/mysql/mysqld.pid" --port=$((PORT + 3)) --bind-address=127.0.0.1 \
    --skip-name-resolve --log-error="$DIR/log/mariadb.err" --innodb-buffer-pool-size=1024M \
    --innodb-log-file-size=64M --innodb-lock-wait-timeout=900 </dev/null >/dev/null 2>&1 &
  echo $! > "$PIDS/mariadbd"
  waitfor 30 mariadbd mariadb-admin --no-defaults -S "$DBSOCK" ping
  mariadb --no-defaults -S "$DBSOCK" -e "CREATE USER 'slurm'@'127.0.0.1' IDENTIFIED BY 'localci';
    GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1'; FLUSH PRIVILEGES;"
  cat > "$DIR/etc/slurmdbd.conf" <<EOF
AuthType=auth/munge
AuthInfo=socket=$SOCK
DbdHost=localhost
DbdPort=$((PORT + 2))
SlurmUser=root
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$((PORT + 3))
StorageUser=slurm
StoragePass=localci
StorageLoc=slurm_acct_db
PidFile=$DIR/run/slurmdbd.pid
LogFile=$DIR/log/slurmdbd.log
DebugLevel=info
EOF
  chmod 600 "$DIR/etc/slurmdbd.conf"
  setsid slurmdbd -D </dev/null >"$DIR/log/slurmdbd.stdout" 2>&1 &   # finds slurmdbd.conf beside $SLURM_CONF
  echo $! > "$PIDS/slurmdbd"
  waitfor 30 slurmdbd sacctmgr -n list cluster
fi

# ---- slurmctld + slurmd
setsid slurmctld -D -c </dev/null >"$DIR/log/slurmctld.stdout" 2>&1 &
echo $! > "$PIDS/slurmctld"
setsid slurmd -D </dev/null >"$DIR/log/slurmd.stdout" 2>&1 &
echo $! > "$PIDS/slurmd"
waitfor 60 "node $HOST idle" bash -c "sinfo -h -N -o %T | grep -qx idle"
echo "$ACCT" > "$DIR/run/mode"
echo "export SLURM_CONF=$CONF" > "$DIR/env.sh"
echo "start_slurm: up in $(el)s (accounting=$ACCT); source $DIR/env.sh  # export SLURM_CONF=$CONF"
