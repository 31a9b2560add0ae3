#!/bin/bash
# Pretrain on a Slurm cluster: one task per GPU (or per CPU rank), automatic requeue on preemption.
#
#   sbatch launch/slurm_pretrain.sh configs/1m.yaml [--set key=value ...] [--resume auto|none|TAG]
#
# Submit from the repository root with the project's Python environment active: sbatch exports
# the submitting shell's environment (PATH, venv) to the job, and relative paths are resolved
# from the submit directory. Everything after the config goes to launch/pretrain.py unchanged.
# Command-line options to sbatch override the #SBATCH lines below, e.g.
#   sbatch --nodes=4 --time=2-00:00:00 launch/slurm_pretrain.sh configs/1m.yaml
# See docs/slurm.md for the whole story (preemption, resume, CPU-only use, testing).
#
# Copy this file and edit the directives for your cluster:
#SBATCH --job-name=janus-pretrain
#SBATCH --nodes=1
#SBATCH --ntasks-per-node=8
#SBATCH --cpus-per-task=8
#SBATCH --time=24:00:00
#SBATCH --output=%x-%j.out
#   append, so that a requeued job continues the same log instead of truncating it
#SBATCH --open-mode=append
#   the job may be requeued (by this script after a preemption, or by the scheduler)
#SBATCH --requeue
#   SIGUSR1 to the batch shell 300 s before the time limit; the shell forwards it through srun to
#   every rank, which finishes its step, saves a checkpoint and exits 75; the shell then requeues.
#   "B:" matters: it lets this shell know that the stop was asked for (so it requeues even if a
#   slow rank was killed after the first one exited). Leave enough seconds for one optimizer step
#   plus a checkpoint save at your scale (Slurm may deliver the signal up to ~60 s early).
#SBATCH --signal=B:USR1@300
#
# GPUs: ntasks-per-node must equal the GPUs per node (one rank per GPU); add ONE of
#   #SBATCH --gpus-per-node=8
#   #SBATCH --gres=gpu:8
# (and usually a partition/account: #SBATCH --partition=... / --account=...). Every task sees all
# GPUs of its node and picks cuda:LOCAL_RANK. Do not add a GPU directive on clusters without GPU
# gres configured: Slurm rejects the job ("Invalid generic resource").
# CPU-only: leave GPU directives out and set --ntasks-per-node to the ranks you want per node and
# --cpus-per-task to the cores each rank may use (OMP_NUM_THREADS follows it).
set -uo pipefail

usage="usage: sbatch launch/slurm_pretrain.sh CONFIG.yaml [--set key=value ...] [--resume auto|none|TAG]"
if [[ $# -lt 1 || $1 == -h || $1 == --help ]]; then
    echo "$usage" >&2
    exit 2
fi
if [[ -z ${SLURM_JOB_ID:-} ]]; then
    echo "error: not inside a Slurm job; submit with sbatch ($usage)" >&2
    exit 2
fi
CONFIG=$1
shift

# The batch script runs from a copy in Slurm's spool dir, so find the code via the submit dir.
JANUS_ROOT=${JANUS_ROOT:-${SLURM_SUBMIT_DIR:-$PWD}}
PYTHON=${PYTHON:-python}
ENTRY="$JANUS_ROOT/launch/pretrain.py"
cd "${SLURM_SUBMIT_DIR:-$PWD}" || exit 2
if [[ ! -f $ENTRY ]]; then
    echo "error: $ENTRY not found; submit from the repository root or set JANUS_ROOT" >&2
    exit 2
fi
if [[ ! -f $CONFIG ]]; then
    echo "error: config '$CONFIG' not found (relative paths are taken from $PWD)" >&2
    exit 2
fi

# Rendezvous: this shell runs on the first node of the allocation, and srun places tasks in
# blocks, so rank 0 (SLURM_PROCID 0, which hosts the store) runs there too; every task inherits
# MASTER_ADDR/PORT from here. The address is that node's Slurm name, which every node must
# resolve. The port is a function of the job id, so a requeued job (same id) reuses it; the range
# stays below Linux's ephemeral ports (32768+), which outgoing connections may hold.
MASTER_ADDR=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)
MASTER_PORT=$((15000 + SLURM_JOB_ID % 15000))
export MASTER_ADDR MASTER_PORT
# Ranks come from SLURM_PROCID / SLURM_NTASKS / SLURM_LOCALID in each task; stale torch launcher
# variables exported from the submitting shell would override them.
unset RANK WORLD_SIZE LOCAL_RANK LOCAL_WORLD_SIZE
export OMP_NUM_THREADS=${SLURM_CPUS_PER_TASK:-1}
# Where a rank's watchdog leaves a note when it ends the job (exit 76): srun then reports the
# signal of the stalled rank it had to kill (e.g. 137), not 76. Shared by all nodes like the code.
export JANUS_JOB_STATUS=${JANUS_JOB_STATUS:-$SLURM_SUBMIT_DIR/.janus_status/$SLURM_JOB_ID}
rm -rf "$JANUS_JOB_STATUS"

PREEMPTED_EXIT_CODE=75          # janus_pretrain.engine.preemption.PREEMPTED_EXIT_CODE
WATCHDOG_EXIT_CODE=76           # janus_pretrain.engine.watchdog.WATCHDOG_EXIT_CODE: a rank stalled
MAX_REQUEUES=${JANUS_MAX_REQUEUES:-100}
stop_asked=0
srun_pid=

# USR1 (from --signal=B:...) is forwarded to srun, which forwards it to every task. TERM (time
# limit, preemption, scancel) already reaches every task from Slurm itself; only remember it.
on_usr1() { stop_asked=1; echo "[slurm_pretrain] SIGUSR1: asking the trainer to save and stop"; \
            [[ -n $srun_pid ]] && kill -USR1 "$srun_pid" 2>/dev/null; }
on_term() { stop_asked=1; echo "[slurm_pretrain] SIGTERM: the trainer saves and stops"; }
trap on_usr1 USR1
trap on_term TERM

# Tasks: one per GPU/rank on every node of THIS start. A job requeued onto another number of
# nodes (after `scontrol update JobId=... NumNodes=...`) keeps the SLURM_NTASKS of its submission
# in its environment, so with --ntasks-per-node the count is taken from the nodes it got; the
# trainer then reshards its checkpoint to the new world size (docs/training.md).
srun_tasks=()
if [[ ${SLURM_NTASKS_PER_NODE:-} =~ ^[0-9]+$ && ${SLURM_JOB_NUM_NODES:-} =~ ^[0-9]+$ ]]; then
    SLURM_NTASKS=$((SLURM_JOB_NUM_NODES * SLURM_NTASKS_PER_NODE))
    srun_tasks=(--ntasks="$SLURM_NTASKS" --ntasks-per-node="$SLURM_NTASKS_PER_NODE")
fi

echo "[slurm_pretrain] job $SLURM_JOB_ID restart ${SLURM_RESTART_COUNT:-0}:" \
     "${SLURM_NTASKS:-?} tasks on ${SLURM_JOB_NUM_NODES:-?} node(s) ($SLURM_JOB_NODELIST)," \
     "master $MASTER_ADDR:$MASTER_PORT, OMP_NUM_THREADS=$OMP_NUM_THREADS, config $CONFIG $*"

# One task per GPU/CPU rank on every node. When the first task ends, the others get
# JANUS_SRUN_WAIT seconds to end too, then the step is killed: a crashed rank thus cannot leave
# the others blocked in a collective for long, while after a preemption save all ranks exit 75
# together. (Not --kill-on-bad-exit: it would kill the ranks still exiting after the first 75,
# and srun would then report 143 instead of 75.)
# --cpus-per-task is repeated because srun no longer inherits it from sbatch (Slurm >= 22.05).
srun --wait="${JANUS_SRUN_WAIT:-120}" --cpus-per-task="${SLURM_CPUS_PER_TASK:-1}" "${srun_tasks[@]}" \
    "$PYTHON" "$ENTRY" --config "$CONFIG" "$@" &
srun_pid=$!
if [[ $stop_asked -eq 1 ]]; then    # the signal came while srun was being started
    kill -USR1 "$srun_pid" 2>/dev/null
fi
# A trapped signal interrupts `wait`; keep waiting until srun itself has exited.
while :; do
    wait "$srun_pid"
    rc=$?
    kill -0 "$srun_pid" 2>/dev/null || break
done
echo "[slurm_pretrain] srun exited with $rc (stop asked: $stop_asked)"
if [[ $rc -ne 0 && $rc -ne $WATCHDOG_EXIT_CODE ]] && compgen -G "$JANUS_JOB_STATUS/watchdog_rank_*" >/dev/null; then
    echo "[slurm_pretrain] a rank's watchdog ended the job (exit $WATCHDOG_EXIT_CODE; srun reports $rc because" \
         "the stalled rank was killed):"
    cat "$JANUS_JOB_STATUS"/watchdog_rank_* | sort -u
    rc=$WATCHDOG_EXIT_CODE
fi
rm -rf "$JANUS_JOB_STATUS"

if [[ $rc -eq $PREEMPTED_EXIT_CODE || $rc -eq $WATCHDOG_EXIT_CODE || ($rc -ne 0 && $stop_asked -eq 1) ]]; then
    if [[ ${SLURM_RESTART_COUNT:-0} -ge $MAX_REQUEUES ]]; then
        echo "[slurm_pretrain] not requeueing: already restarted $MAX_REQUEUES times" \
             "(JANUS_MAX_REQUEUES)" >&2
        exit "$rc"
    fi
    # Requeue only while the job is still RUNNING: that is the pre-timeout signal (or
    # `scancel --signal=USR1`). When Slurm is already ending the job (COMPLETING: `scancel`,
    # the time limit, preemption - which requeues by itself when PreemptMode=REQUEUE), leave it.
    state=$(scontrol show job -o "$SLURM_JOB_ID" | grep -o 'JobState=[A-Z_]*')
    if [[ $state != JobState=RUNNING ]]; then
        echo "[slurm_pretrain] not requeueing: Slurm is ending the job ($state); resubmit to" \
             "resume from the latest checkpoint"
        exit "$rc"
    fi
    echo "[slurm_pretrain] requeueing job $SLURM_JOB_ID; it resumes from the latest checkpoint"
    if ! scontrol requeue "$SLURM_JOB_ID"; then
        echo "[slurm_pretrain] scontrol requeue failed (job submitted without --requeue, or" \
             "JobRequeue disabled); resubmit by hand to resume" >&2
    fi
    exit "$rc"
fi
exit "$rc"
