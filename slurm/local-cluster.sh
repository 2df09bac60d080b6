#!/usr/bin/env bash
# A real one-node Slurm cluster on localhost (Debian's slurmctld, slurmd and munge), for CI and for trying the
# Slurm recipes on a workstation. Needs root. Idempotent: returns at once when the cluster already answers.
#
#   sudo slurm/local-cluster.sh            # install (apt) if needed, configure, start
#   sinfo                                  # one node, idle
#
# Not for production clusters: root is the SlurmUser, no cgroups, no accounting.
set -euo pipefail

if [ "$(id -u)" != 0 ]; then
  echo "local-cluster.sh: needs root (it writes /etc/slurm and starts daemons)" >&2
  exit 1
fi
if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null || ! command -v munged >/dev/null \
    || ! command -v pgrep >/dev/null; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurmctld slurmd slurm-client munge procps >/dev/null
fi

host=$(hostname -s)
cpus=$(nproc)
mem=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 - 512 ))
mkdir -p /etc/slurm /var/spool/slurmctld /var/spool/slurmd /var/log/slurm /run/munge /var/lib/munge /var/log/munge
conf=$(mktemp)
cat > "$conf" <<EOF
ClusterName=lvu-local
SlurmctldHost=${host}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
# A requeued job waits cred_expire + 1 s before it may start again (the default, 120 s, makes tests crawl).
AuthInfo=cred_expire=15
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SwitchType=switch/none
MpiDefault=none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
JobRequeue=1
# Finished jobs stay visible to scontrol show job for 30 s (tests read their final state).
MinJobAge=30
KillWait=30
NodeName=${host} CPUs=${cpus} RealMemory=${mem} State=UNKNOWN
PartitionName=debug Nodes=${host} Default=YES MaxTime=INFINITE State=UP OverSubscribe=YES
EOF
if cmp -s "$conf" /etc/slurm/slurm.conf; then
  rm -f "$conf"  # same configuration: leave running daemons alone
else
  mv "$conf" /etc/slurm/slurm.conf
  chmod 644 /etc/slurm/slurm.conf
  # Restart the daemons so that they read it, waiting until the old ones are gone.
  pkill -x slurmd 2>/dev/null || true
  pkill -x slurmctld 2>/dev/null || true
  for _ in $(seq 40); do
    pgrep -x slurmctld >/dev/null || pgrep -x slurmd >/dev/null || break
    sleep 0.5
  done
fi

if [ ! -s /etc/munge/munge.key ]; then
  mkdir -p /etc/munge
  dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key status=none
fi
chown -R munge:munge /etc/munge /run/munge /var/lib/munge /var/log/munge 2>/dev/null || true
chmod 400 /etc/munge/munge.key
# The packages' install scripts may have started munged already.
pgrep -x munged >/dev/null || runuser -u munge -- /usr/sbin/munged 2>/dev/null || /usr/sbin/munged --force
for _ in $(seq 20); do munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && break; sleep 0.5; done
pgrep -x slurmctld >/dev/null || /usr/sbin/slurmctld
pgrep -x slurmd >/dev/null || /usr/sbin/slurmd

for _ in $(seq 60); do
  if sinfo -h -o %T 2>/dev/null | grep -qE 'idle|mix|alloc'; then
    exit 0
  fi
  timeout 5 scontrol update nodename="${host}" state=resume >/dev/null 2>&1 || true
  sleep 1
done
echo "local-cluster.sh: Slurm did not come up; see /var/log/slurm/" >&2
exit 1
