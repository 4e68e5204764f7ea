#!/usr/bin/env bash
# A real single-node SLURM cluster (slurmctld + slurmd + slurmdbd/MariaDB + munge) for tests.
#
#   scripts/slurm-cluster.sh [start]   install (first time), configure and start; idempotent
#   scripts/slurm-cluster.sh stop      stop the daemons (by pid file)
#   scripts/slurm-cluster.sh status    sinfo and whether each daemon runs
#
# Needs root on Debian bookworm (no systemd required). See docs/slurm-cluster.md.
set -euo pipefail

CLUSTER_NAME="${XCOMPILE_SLURM_CLUSTER:-xcompile}"
PARTITION="${XCOMPILE_SLURM_PARTITION:-debug}"
WAIT_S="${XCOMPILE_SLURM_WAIT_S:-60}"

PACKAGES=(slurmctld slurmd slurm-client slurmdbd munge mariadb-server)
ETC=/etc/slurm
LOG=/var/log/slurm
STATE=/var/lib/slurm
SLURM_CONF="$ETC/slurm.conf"
DBD_CONF="$ETC/slurmdbd.conf"
MUNGE_KEY=/etc/munge/munge.key
MUNGE_PID=/run/munge/munged.pid
CTLD_PID=/run/slurmctld.pid
SLURMD_PID=/run/slurmd.pid
DBD_PID=/run/slurmdbd.pid
DB_NAME=slurm_acct_db
DB_USER=slurm

say() { printf '[slurm-cluster] %s\n' "$*"; }
die() { printf '[slurm-cluster] ERROR: %s\n' "$*" >&2; exit 1; }

# --- pid-file helpers ----------------------------------------------------------------------
# pid_alive PIDFILE NAME: the pid file names a live process whose command is NAME.
pid_alive() {
    local pidfile=$1 name=$2 pid comm
    [[ -r $pidfile ]] || return 1
    pid=$(tr -dc '0-9' <"$pidfile" 2>/dev/null || true)
    [[ -n $pid ]] || return 1
    comm=$(cat "/proc/$pid/comm" 2>/dev/null || true)
    [[ $comm == "$name" ]]
}

# drop_stale PIDFILE NAME: remove a pid file that no longer names a live NAME process.
drop_stale() {
    local pidfile=$1 name=$2
    if [[ -e $pidfile ]] && ! pid_alive "$pidfile" "$name"; then
        say "removing stale $pidfile"
        rm -f "$pidfile"
    fi
}

# stop_daemon PIDFILE NAME: SIGTERM, wait up to 20 s, then SIGKILL.
stop_daemon() {
    local pidfile=$1 name=$2 pid i
    if ! pid_alive "$pidfile" "$name"; then
        drop_stale "$pidfile" "$name"
        return 0
    fi
    pid=$(tr -dc '0-9' <"$pidfile")
    say "stopping $name (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 200; i++)); do
        [[ -d /proc/$pid ]] || break
        sleep 0.1
    done
    if [[ -d /proc/$pid ]]; then
        say "$name did not stop in 20 s; killing it"
        kill -KILL "$pid" 2>/dev/null || true
        sleep 0.5
    fi
    rm -f "$pidfile"
}

# wait_for SECONDS DESCRIPTION LOGFILE COMMAND...: poll COMMAND until it succeeds.
wait_for() {
    local secs=$1 what=$2 logfile=$3
    shift 3
    local deadline=$((SECONDS + secs)) out
    until out=$("$@" 2>&1); do
        if ((SECONDS >= deadline)); then
            printf '%s\n' "$out" | tail -n 5 >&2
            die "timed out after ${secs}s waiting for $what; read $logfile"
        fi
        sleep 0.2
    done
}

# --- install -------------------------------------------------------------------------------
pkg_installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q '^install ok installed$'; }

install_packages() {
    local missing=() p
    for p in "${PACKAGES[@]}"; do
        pkg_installed "$p" || missing+=("$p")
    done
    ((${#missing[@]} == 0)) && return 0
    [[ $(id -u) -eq 0 ]] || die "packages missing (${missing[*]}) and not root"
    say "installing: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    local cands
    cands=$(apt-cache policy "${missing[@]}" 2>/dev/null | grep -c 'Candidate: [0-9]' || true)
    if ((cands < ${#missing[@]})); then
        say "apt-get update"
        apt-get update -qq || die "apt-get update failed"
    fi
    if ! apt-get install -y -qq --no-install-recommends "${missing[@]}" >/tmp/slurm-cluster-apt.log 2>&1; then
        say "install failed; apt-get update and retry"
        apt-get update -qq || die "apt-get update failed"
        apt-get install -y -qq --no-install-recommends "${missing[@]}" >/tmp/slurm-cluster-apt.log 2>&1 ||
            die "apt-get install failed; read /tmp/slurm-cluster-apt.log"
    fi
}

# --- munge ---------------------------------------------------------------------------------
start_munge() {
    if [[ ! -s $MUNGE_KEY ]]; then
        say "creating munge key"
        install -d -o munge -g munge -m 700 /etc/munge
        dd if=/dev/urandom of="$MUNGE_KEY" bs=1024 count=1 status=none
    fi
    chown munge:munge "$MUNGE_KEY"
    chmod 400 "$MUNGE_KEY"
    install -d -o munge -g munge -m 755 /run/munge
    install -d -o munge -g munge -m 700 /var/log/munge /var/lib/munge
    if pid_alive "$MUNGE_PID" munged && munge -n </dev/null 2>/dev/null | unmunge >/dev/null 2>&1; then
        return 0
    fi
    drop_stale "$MUNGE_PID" munged
    rm -f /run/munge/munge.socket.2 /run/munge/munge.socket.2.lock
    say "starting munged"
    runuser -u munge -- /usr/sbin/munged
    wait_for 15 "munged" /var/log/munge/munged.log sh -c 'munge -n </dev/null 2>/dev/null | unmunge'
}

# --- mariadb -------------------------------------------------------------------------------
db_up() { mariadb-admin --silent ping >/dev/null 2>&1; }

db_password() {
    # Reuse the password already in slurmdbd.conf so the DB user and the conf stay in step.
    local pw=""
    [[ -r $DBD_CONF ]] && pw=$(sed -n 's/^StoragePass=//p' "$DBD_CONF" | head -n1)
    [[ -n $pw ]] || pw=$(head -c 18 /dev/urandom | base64 | tr -dc 'A-Za-z0-9')
    printf '%s' "$pw"
}

start_mariadb() {
    if ! db_up; then
        say "starting mariadb"
        # setsid: the init script leaves mysqld_safe in the caller's session, and a shell tool
        # that reaps its process group on exit would take the database down with it.
        setsid /etc/init.d/mariadb start >/var/log/slurm/mariadb-start.log 2>&1 </dev/null ||
            die "mariadb failed to start; read $LOG/mariadb-start.log and /var/log/mysql/error.log"
        wait_for 30 "mariadb" /var/log/mysql/error.log db_up
    fi
    mariadb -u root <<SQL || die "could not create $DB_NAME / $DB_USER in mariadb"
CREATE DATABASE IF NOT EXISTS $DB_NAME;
CREATE USER IF NOT EXISTS '$DB_USER'@'localhost' IDENTIFIED BY '$DB_PASS';
ALTER USER '$DB_USER'@'localhost' IDENTIFIED BY '$DB_PASS';
GRANT ALL ON $DB_NAME.* TO '$DB_USER'@'localhost';
SQL
}

# --- configuration -------------------------------------------------------------------------
# write_if_changed DEST MODE OWNER: write stdin to DEST when it differs; return 0 if changed.
write_if_changed() {
    local dest=$1 mode=$2 owner=$3 tmp
    tmp=$(mktemp "$dest.XXXXXX")
    cat >"$tmp"
    chmod "$mode" "$tmp"
    chown "$owner" "$tmp"
    if [[ -e $dest ]] && cmp -s "$tmp" "$dest"; then
        rm -f "$tmp"
        chmod "$mode" "$dest"
        chown "$owner" "$dest"
        return 1
    fi
    mv -f "$tmp" "$dest"
    return 0
}

node_hw() {
    # "CPUs=2 Boards=1 SocketsPerBoard=1 CoresPerSocket=2 ThreadsPerCore=1 RealMemory=24000"
    local line
    line=$(slurmd -C 2>/dev/null | grep '^NodeName=' | head -n1) || true
    [[ -n $line ]] || die "slurmd -C printed no NodeName line"
    tr ' ' '\n' <<<"$line" |
        grep -E '^(CPUs|Boards|SocketsPerBoard|CoresPerSocket|ThreadsPerCore|RealMemory)=' |
        tr '\n' ' '
}

write_configs() {
    local node hw changed=1
    node=$(hostname -s)
    hw=$(node_hw)
    install -d -m 755 "$ETC"
    install -d -o slurm -g slurm -m 755 "$LOG" "$STATE" "$STATE/slurmctld"
    install -d -m 755 "$STATE/slurmd"

    if write_if_changed "$SLURM_CONF" 644 root:root <<EOF; then changed=0; fi
# Written by scripts/slurm-cluster.sh: a single-node test cluster. Edits are overwritten.
ClusterName=$CLUSTER_NAME
SlurmctldHost=$node(127.0.0.1)
SlurmUser=slurm
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=cred_expire=10
StateSaveLocation=$STATE/slurmctld
SlurmdSpoolDir=$STATE/slurmd
SlurmctldPidFile=$CTLD_PID
SlurmdPidFile=$SLURMD_PID
SlurmctldLogFile=$LOG/slurmctld.log
SlurmdLogFile=$LOG/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SwitchType=switch/none
ReturnToService=2
MinJobAge=30
SlurmctldTimeout=30
SlurmdTimeout=60
InactiveLimit=0
KillWait=5
Waittime=0
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=1000
SchedulerType=sched/backfill
SchedulerParameters=batch_sched_delay=0,sched_interval=1,bf_interval=1,sched_min_interval=0
DependencyParameters=kill_invalid_depend
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=30
JobCompType=jobcomp/none
NodeName=$node NodeAddr=127.0.0.1 ${hw}State=UNKNOWN
PartitionName=$PARTITION Nodes=$node Default=YES MaxTime=INFINITE State=UP
EOF

    if write_if_changed "$DBD_CONF" 600 slurm:slurm <<EOF; then changed=0; fi
# Written by scripts/slurm-cluster.sh. Edits are overwritten.
AuthType=auth/munge
DbdHost=localhost
DbdAddr=127.0.0.1
SlurmUser=slurm
PidFile=$DBD_PID
LogFile=$LOG/slurmdbd.log
DebugLevel=info
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=$DB_USER
StoragePass=$DB_PASS
StorageLoc=$DB_NAME
EOF
    return $changed
}

# --- slurm daemons -------------------------------------------------------------------------
dbd_answers() { sacctmgr -n -P list cluster format=cluster >/dev/null 2>&1; }
cluster_registered() { sacctmgr -n -P list cluster format=cluster 2>/dev/null | grep -qx "$CLUSTER_NAME"; }
ctld_answers() { scontrol ping 2>/dev/null | grep -q 'is UP'; }
node_state() { sinfo -h -N -n "$(hostname -s)" -o '%T' 2>/dev/null | head -n1; }
node_idle() { [[ $(node_state) =~ ^(idle|mixed|allocated|completing)$ ]]; }

# Start /usr/sbin/NAME unless its pid file names a live NAME (a stale pid file is removed).
start_daemon() {
    local pidfile=$1 name=$2
    if ! pid_alive "$pidfile" "$name"; then
        drop_stale "$pidfile" "$name"
        say "starting $name"
        "/usr/sbin/$name" || die "$name failed to start; read $LOG/$name.log"
    fi
}

start_slurm() {
    local restart=$1

    if ((restart)); then
        stop_daemon "$SLURMD_PID" slurmd
        stop_daemon "$CTLD_PID" slurmctld
        stop_daemon "$DBD_PID" slurmdbd
    fi

    start_daemon "$DBD_PID" slurmdbd
    wait_for "$WAIT_S" "slurmdbd to answer" "$LOG/slurmdbd.log" dbd_answers

    local ctld_restart=0
    if ! cluster_registered; then
        say "registering cluster $CLUSTER_NAME in accounting"
        sacctmgr -i add cluster "$CLUSTER_NAME" >/dev/null ||
            die "sacctmgr add cluster failed; read $LOG/slurmdbd.log"
        ctld_restart=1
    fi
    if ((ctld_restart)) && pid_alive "$CTLD_PID" slurmctld; then
        stop_daemon "$CTLD_PID" slurmctld
    fi

    start_daemon "$CTLD_PID" slurmctld
    wait_for "$WAIT_S" "slurmctld to answer" "$LOG/slurmctld.log" ctld_answers

    start_daemon "$SLURMD_PID" slurmd

    local deadline=$((SECONDS + WAIT_S)) state resumed=0
    until node_idle; do
        state=$(node_state)
        if [[ $state =~ drain|down|fail ]] && ((!resumed)); then
            say "node is '$state'; resuming it"
            scontrol update nodename="$(hostname -s)" state=resume >/dev/null 2>&1 || true
            resumed=1
        fi
        if ((SECONDS >= deadline)); then
            sinfo -N -l >&2 || true
            die "node not idle after ${WAIT_S}s (state '${state:-none}'); read $LOG/slurmd.log and $LOG/slurmctld.log"
        fi
        sleep 0.2
    done
}

all_running() {
    pid_alive "$MUNGE_PID" munged && db_up &&
        pid_alive "$DBD_PID" slurmdbd && pid_alive "$CTLD_PID" slurmctld &&
        pid_alive "$SLURMD_PID" slurmd
}

cmd_start() {
    local t0=$SECONDS
    [[ $(id -u) -eq 0 ]] || die "start needs root"
    install_packages
    install -d -o slurm -g slurm -m 755 "$LOG"
    DB_PASS=$(db_password)
    local restart=0
    if write_configs; then
        restart=1
        say "configuration written ($SLURM_CONF, $DBD_CONF)"
    fi
    if ((!restart)) && all_running && node_idle && cluster_registered; then
        say "already up: $(sinfo -h -o '%P %a %D %T' | head -n1)"
        return 0
    fi
    start_munge
    start_mariadb
    # Only restart daemons that are already running when the configuration changed.
    start_slurm "$restart"
    say "up in $((SECONDS - t0))s: $(sinfo -h -o 'partition=%P avail=%a nodes=%D state=%T' | head -n1)"
}

cmd_stop() {
    stop_daemon "$SLURMD_PID" slurmd
    stop_daemon "$CTLD_PID" slurmctld
    stop_daemon "$DBD_PID" slurmdbd
    if db_up; then
        say "stopping mariadb"
        /etc/init.d/mariadb stop >/dev/null 2>&1 || say "mariadb stop failed"
    fi
    stop_daemon "$MUNGE_PID" munged
    say "stopped"
}

cmd_status() {
    local rc=0 d name pidfile state
    for d in munged:$MUNGE_PID mariadb: slurmdbd:$DBD_PID slurmctld:$CTLD_PID slurmd:$SLURMD_PID; do
        name=${d%%:*} pidfile=${d#*:} state=stopped
        if [[ $name == mariadb ]]; then
            db_up && state=running
        elif pid_alive "$pidfile" "$name"; then
            state="running (pid $(tr -dc '0-9' <"$pidfile"))"
        fi
        [[ $state == stopped ]] && rc=1
        printf '%-10s %s\n' "$name" "$state"
    done
    if command -v sinfo >/dev/null; then
        sinfo 2>&1 || rc=1
    else
        echo "sinfo: not installed"
        rc=1
    fi
    return $rc
}

case "${1:-start}" in
start) cmd_start ;;
stop) cmd_stop ;;
status) cmd_status ;;
-h | --help | help) sed -n '2,8p' "$0" | sed 's/^# \{0,1\}//' ;;
*) die "unknown subcommand '$1' (use start, stop or status)" ;;
esac
