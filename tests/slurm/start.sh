#!/usr/bin/env bash
# A single-node Slurm on this machine for the workflow test: munged, slurmctld and slurmd as root, no accounting
# database, one node "localhost" with one (fake) GPU so that GPU rules schedule on a GPU-free machine.
# Idempotent: installs Debian's packages if missing, rewrites only a slurm.conf that it wrote itself, starts only the
# daemons that are not running, and waits until the node is idle. Exit 0: ready; 2: not possible here (not root, no
# apt-get, or a slurm.conf of this machine's own); 1: failed.
set -euo pipefail

CONF_DIR=/etc/slurm
MARK="# written by peekflow tests/slurm/start.sh"
LOG_DIR=/var/log/slurm

say() { echo "start-slurm: $*" >&2; }

if [ "$(id -u)" != 0 ]; then
    say "needs root (slurmctld/slurmd run as root here)"
    exit 2
fi

if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null || ! command -v munged >/dev/null \
    || ! command -v sbatch >/dev/null; then
    if ! command -v apt-get >/dev/null; then
        say "Slurm is not installed and apt-get is unavailable"
        exit 2
    fi
    say "installing slurmctld, slurmd, slurm-client and munge from Debian"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q >&2 || { say "apt-get update failed"; exit 1; }
    apt-get install -y -q --no-install-recommends slurmctld slurmd slurm-client munge >&2 \
        || { say "apt-get install failed"; exit 1; }
fi

mkdir -p "$CONF_DIR" "$LOG_DIR" /var/spool/slurmctld /var/spool/slurmd /run/munge /var/lib/munge /var/log/munge
if [ -e "$CONF_DIR/slurm.conf" ] && ! grep -qF "$MARK" "$CONF_DIR/slurm.conf"; then
    say "$CONF_DIR/slurm.conf exists and was not written by this script; leaving it (and this machine's Slurm) alone"
    exit 2
fi

# The node claims 32 CPUs and 256 GB whatever this machine has (config_overrides: Slurm believes slurm.conf), so that
# the slurm profile's real per-rule requests schedule here side by side; without cgroups Slurm only books them.
cpus=32
real_mb=262144
conf=$(cat <<EOF
$MARK
ClusterName=peekflow-test
SlurmctldHost=localhost
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=$LOG_DIR/slurmctld.log
SlurmdLogFile=$LOG_DIR/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
# a container: no cgroups
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
# no accounting database: sacct has nothing, job status comes from squeue
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SlurmdParameters=config_overrides
# finished jobs stay visible to squeue for an hour: the plugin's squeue status needs >= 120 s, the test reads them back
MinJobAge=3600
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
ReturnToService=2
MpiDefault=none
GresTypes=gpu
NodeName=localhost NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$real_mb Gres=gpu:1 State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
EOF
)
# the node's GPU is a stand-in: jobs that ask for it run on the CPU
gres="Name=gpu File=/dev/null Count=1"

changed=0
if [ "$(cat "$CONF_DIR/slurm.conf" 2>/dev/null)" != "$conf" ]; then
    printf '%s\n' "$conf" > "$CONF_DIR/slurm.conf"
    changed=1
fi
if [ "$(cat "$CONF_DIR/gres.conf" 2>/dev/null)" != "$gres" ]; then
    printf '%s\n' "$gres" > "$CONF_DIR/gres.conf"
    changed=1
fi

running() { pgrep -x "$1" >/dev/null; }

if [ ! -s /etc/munge/munge.key ]; then
    say "creating a munge key"
    dd if=/dev/urandom of=/etc/munge/munge.key bs=1 count=1024 status=none
fi
chown -R munge:munge /etc/munge /run/munge /var/lib/munge /var/log/munge
chmod 0700 /etc/munge
chmod 0400 /etc/munge/munge.key
if ! running munged; then
    say "starting munged"
    runuser -u munge -- /usr/sbin/munged
fi

if [ "$changed" = 1 ] && { running slurmctld || running slurmd; }; then
    say "configuration changed: restarting the Slurm daemons"
    for pidfile in /run/slurmd.pid /run/slurmctld.pid; do
        [ -s "$pidfile" ] && kill "$(cat "$pidfile")" 2>/dev/null || true
    done
    for _ in $(seq 50); do running slurmd || running slurmctld || break; sleep 0.2; done
fi
if ! running slurmctld; then
    say "starting slurmctld"
    /usr/sbin/slurmctld
fi
if ! running slurmd; then
    say "starting slurmd"
    /usr/sbin/slurmd -N localhost
fi

for _ in $(seq 60); do
    state=$(sinfo -h -n localhost -o %T 2>/dev/null || true)
    case "$state" in
        idle|mixed|allocated|completing) echo "Slurm is up: node localhost $state"; exit 0 ;;
        drain*|down*|fail*)
            # e.g. the node was down from an earlier run: return it to service
            scontrol update NodeName=localhost State=RESUME 2>/dev/null || true ;;
    esac
    sleep 1
done
say "the node did not become idle; sinfo says: $(sinfo -N -l 2>&1 || true)"
tail -n 20 "$LOG_DIR/slurmctld.log" "$LOG_DIR/slurmd.log" >&2 || true
exit 1
