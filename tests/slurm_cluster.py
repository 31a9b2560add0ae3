"""A throwaway Slurm cluster on loopback, for the Slurm tests: one node, or several on one machine.

Debian's slurmctld + slurmd + munge run as root (no systemd) with every file - config, key,
sockets, state, logs, pid files - inside one directory, so nothing outside it is touched and a
system-wide Slurm or munge, if any, is left alone. Missing packages are installed with apt-get.

One node is this host. With nodes=N > 1 every node is its own slurmd started in a UTS and mount
namespace of its own (`unshare`): hostname janus-n1, janus-n2, ..., address 127.0.0.2, 127.0.0.3,
..., its own slurmd port, and a private /etc/hosts (a bind mount visible only inside the
namespace) that resolves every node name. Jobs inherit their node's namespaces, so a task's
`hostname`, SLURMD_NODENAME and the address its peers reach it at all differ between nodes, as
on a real cluster - while everything stays on loopback. The network interfaces are not touched.

Tests use the session fixtures `slurm` (one node) and `slurm2` (two nodes); import the one
needed into the test module. They skip the tests with the reason when the machine cannot host
the cluster (not root, no apt-get, install failed, no namespaces).
Also usable by hand, e.g. to try launch/slurm_pretrain.sh on a workstation:
    python tests/slurm_cluster.py up /tmp/slurm [--nodes 2]  # prints `export SLURM_CONF=...`
    python tests/slurm_cluster.py down /tmp/slurm
"""
from __future__ import annotations

import argparse
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

PACKAGES = ("slurmctld", "slurmd", "slurm-client", "munge")
BINARIES = ("slurmctld", "slurmd", "sbatch", "srun", "scontrol", "munged", "mungekey")
NODE_PREFIX = "janus-n"  # node names of a multi-node cluster: janus-n1, janus-n2, ...


class SlurmUnavailable(RuntimeError):
    """This machine cannot host the test cluster; the message says why (tests skip with it)."""


def _missing_binaries() -> list[str]:
    return [b for b in BINARIES if shutil.which(b) is None
            and not Path("/usr/sbin", b).exists()]


def ensure_installed() -> None:
    """Install the Slurm and munge packages when a binary is missing (needs root and apt-get)."""
    if not _missing_binaries():
        return
    if os.geteuid() != 0:
        raise SlurmUnavailable(f"Slurm binaries {_missing_binaries()} missing and not root, so "
                               f"cannot apt-get install {' '.join(PACKAGES)}")
    if shutil.which("apt-get") is None:
        raise SlurmUnavailable(f"Slurm binaries {_missing_binaries()} missing and no apt-get")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    install = ["apt-get", "install", "-y", "-q", "--no-install-recommends", *PACKAGES]
    done = subprocess.run(install, env=env, capture_output=True, text=True)
    if done.returncode != 0:  # a fresh machine may have no package lists yet
        subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True, text=True)
        done = subprocess.run(install, env=env, capture_output=True, text=True)
    if done.returncode != 0 or _missing_binaries():
        raise SlurmUnavailable(f"`{' '.join(install)}` failed (rc {done.returncode}): "
                               f"{(done.stderr or done.stdout)[-600:]}")


def _sbin(name: str) -> str:
    return shutil.which(name) or str(Path("/usr/sbin", name))


def _short_hostname() -> str:
    return socket.gethostname().split(".")[0]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _node_hardware() -> str:
    """`slurmd -C`'s node line without NodeName/UpTime, e.g. 'CPUs=2 ... RealMemory=24105'."""
    out = subprocess.run([_sbin("slurmd"), "-C"], capture_output=True, text=True, check=True)
    line = out.stdout.splitlines()[0]
    return " ".join(f for f in line.split() if not f.startswith(("NodeName=", "UpTime=")))


class SlurmCluster:
    """munged + slurmctld + one slurmd per node, all state under `root`.

    nodes=1: one node named after this host. nodes > 1: nodes janus-n1.. in namespaces of their
    own (see the module docstring)."""

    def __init__(self, root: str | os.PathLike, nodes: int = 1):
        self.root = Path(root).resolve()
        self.conf = self.root / "slurm.conf"
        if nodes == 1:  # slurmd registers under the short host name
            self.nodes = {_short_hostname(): "127.0.0.1"}
        else:
            self.nodes = {f"{NODE_PREFIX}{i}": f"127.0.0.{i + 1}" for i in range(1, nodes + 1)}
        self.node = next(iter(self.nodes))  # the first node: where a one-node job lands
        # what clients (sbatch, scontrol, the jobs' srun) need to find this cluster
        self.env = dict(os.environ, SLURM_CONF=str(self.conf))

    # ---- lifecycle -------------------------------------------------------------------------
    def start(self, timeout: float = 60.0) -> "SlurmCluster":
        ensure_installed()
        if os.geteuid() != 0:
            raise SlurmUnavailable("the test cluster runs slurmd as root; not root")
        if len(self.nodes) > 1 and shutil.which("unshare") is None:
            raise SlurmUnavailable("a multi-node test cluster needs `unshare` (util-linux)")
        (self.root / "state").mkdir(parents=True, exist_ok=True)
        for node in self.nodes:
            (self.root / f"spool-{node}").mkdir(exist_ok=True)
        # munged wants every directory above its socket searchable by all
        os.chmod(self.root, 0o755)
        self._start_munge()
        self._write_conf()
        self._run_daemon("slurmctld", [_sbin("slurmctld"), "-f", str(self.conf), "-c"])
        for node in self.nodes:
            self._run_daemon(f"slurmd-{node}",
                             self._in_node(node, [_sbin("slurmd"), "-f", str(self.conf)]))
        self._wait_idle(timeout)
        return self

    def stop(self) -> None:
        """Cancel leftover jobs and let them end, then stop the daemons by their pid files.

        Processes still inside a node's namespaces after its slurmd is gone (a job step that
        outlived it) are ended too, so that the namespaces disappear with the cluster."""
        if self.conf.exists() and (self.root / "slurmctld.pid").exists():
            subprocess.run(["scancel", "--full", "--user", "root"], env=self.env,
                           capture_output=True, timeout=30)
            deadline = time.monotonic() + 20  # slurmd must still run to end the job steps
            while time.monotonic() < deadline:
                queue = subprocess.run(["squeue", "-h", "-o", "%i"], env=self.env,
                                       capture_output=True, text=True, timeout=30)
                if queue.returncode != 0 or not queue.stdout.strip():
                    break
                time.sleep(0.5)
        pids = []
        for pidfile in (*sorted(self.root.glob("slurmd-*.pid")), self.root / "slurmctld.pid",
                        self.root / "munged.pid"):
            try:
                pids.append(int(pidfile.read_text().strip()))
            except (OSError, ValueError):
                continue
        own_uts = os.readlink("/proc/self/ns/uts")
        node_namespaces = {ns for ns in map(_uts_namespace, pids) if ns and ns != own_uts}
        # the state is thrown away, so no need to wait long for a clean shutdown (slurmd
        # takes > 10 s to honour SIGTERM)
        _terminate(pids, grace=5.0)
        if node_namespaces:
            _terminate([pid for pid in _all_pids() if _uts_namespace(pid) in node_namespaces],
                       grace=2.0)

    def __enter__(self) -> "SlurmCluster":
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc) -> None:
        self.stop()

    # ---- setup pieces ----------------------------------------------------------------------
    def _start_munge(self) -> None:
        key = self.root / "munge.key"
        if not key.exists():
            subprocess.run([_sbin("mungekey"), "-c", "-k", str(key)], check=True,
                           capture_output=True)
        # --force: munged refuses root and non-default paths otherwise
        self._run_daemon("munged", [
            _sbin("munged"), "--force", f"--key-file={key}", f"--socket={self.munge_socket}",
            f"--pid-file={self.root / 'munged.pid'}", f"--log-file={self.root / 'munged.log'}",
            f"--seed-file={self.root / 'munged.seed'}"])

    @property
    def munge_socket(self) -> Path:
        return self.root / "munge.socket"

    def _write_conf(self) -> None:
        r = self.root
        lines = [
            "ClusterName=janustest",
            # job ids seed MASTER_PORT in launch/slurm_pretrain.sh: keep two concurrent test
            # clusters on this machine from both starting at job 1
            f"FirstJobId={random.randrange(1000, 19000)}",
            f"SlurmctldHost={_short_hostname()}(127.0.0.1)",  # this host, outside any namespace
            f"SlurmctldPort={_free_port()}",
            f"SlurmdPort={_free_port()}",  # one node; several get a Port= each below
            "SlurmUser=root",
            "SlurmdUser=root",
            "AuthType=auth/munge",
            "CredType=cred/munge",
            # short credential lifetime: a requeued job otherwise waits ~120 s to start again
            f"AuthInfo=socket={self.munge_socket},cred_expire=5",
            f"StateSaveLocation={r / 'state'}",
            # %n: the node name, so that the slurmds of one machine keep apart
            f"SlurmdSpoolDir={r / 'spool-%n'}",
            f"SlurmctldPidFile={r / 'slurmctld.pid'}",
            f"SlurmdPidFile={r / 'slurmd-%n.pid'}",
            f"SlurmctldLogFile={r / 'slurmctld.log'}",
            f"SlurmdLogFile={r / 'slurmd-%n.log'}",
            # no cgroups in a container: plain process tracking, no task binding
            "ProctrackType=proctrack/linuxproc",
            "TaskPlugin=task/none",
            "SelectType=select/cons_tres",
            "SelectTypeParameters=CR_CPU",
            "SchedulerType=sched/builtin",
            # a requeued job becomes eligible after cred_expire + 1 s; schedule it right away
            "SchedulerParameters=sched_interval=1",
            "MpiDefault=none",
            "MailProg=/bin/true",
            "JobAcctGatherType=jobacct_gather/none",
            "AccountingStorageType=accounting_storage/none",
            "ReturnToService=2",
            "KillWait=10",
            "MinJobAge=600",
            "InactiveLimit=0",
            *(f"NodeName={node} NodeAddr={addr}"
              f"{f' Port={_free_port()}' if len(self.nodes) > 1 else ''}"
              f" {_node_hardware()} State=UNKNOWN" for node, addr in self.nodes.items()),
            "PartitionName=test Nodes=ALL Default=YES MaxTime=INFINITE State=UP",
        ]
        self.conf.write_text("\n".join(lines) + "\n")
        if len(self.nodes) > 1:  # mounted over /etc/hosts inside every node's namespace
            names = "".join(f"{addr} {node}\n" for node, addr in self.nodes.items())
            self.hosts.write_text(Path("/etc/hosts").read_text() + names)

    @property
    def hosts(self) -> Path:
        return self.root / "hosts"

    def _in_node(self, node: str, argv: list[str]) -> list[str]:
        """argv run as node `node`: in new UTS and mount namespaces (several nodes) or as is."""
        if len(self.nodes) == 1:
            return argv
        # private propagation: the bind mount stays inside; the daemon keeps the namespaces
        # alive after unshare's shell has exec'd it and it has forked into the background
        setup = 'hostname "$1" && mount --bind "$2" /etc/hosts && shift 2 && exec "$@"'
        return ["unshare", "--uts", "--mount", "--propagation", "private", "--",
                "sh", "-c", setup, "sh", node, str(self.hosts), *argv]

    def _run_daemon(self, name: str, argv: list[str]) -> None:
        done = subprocess.run(argv, env=self.env, capture_output=True, text=True, timeout=60)
        if done.returncode != 0:
            raise RuntimeError(f"{name} failed to start (rc {done.returncode}): "
                               f"{done.stderr[-800:]}\n{self._log_tail(name)}")

    def _wait_idle(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        for node in self.nodes:
            state = ""
            while time.monotonic() < deadline:
                state = _field(self.scontrol("show", "node", node, check=False), "State")
                if state.startswith("IDLE"):
                    break
                time.sleep(0.5)
            else:
                raise RuntimeError(f"node {node} not idle after {timeout:.0f} s (State={state!r})"
                                   f"\n{self._log_tail('slurmctld')}\n{self._log_tail(f'slurmd-{node}')}")

    def _log_tail(self, name: str, chars: int = 1500) -> str:
        path = self.root / f"{name}.log"
        text = path.read_text(errors="replace") if path.exists() else "(no log)"
        return f"--- {path} (tail) ---\n{text[-chars:]}"

    # ---- client helpers for the tests ------------------------------------------------------
    def scontrol(self, *args: str, check: bool = True) -> str:
        done = subprocess.run(["scontrol", *args], env=self.env, capture_output=True,
                              text=True, timeout=30)
        if check and done.returncode != 0:
            raise RuntimeError(f"scontrol {' '.join(args)}: {done.stderr.strip()}")
        return done.stdout

    def sbatch(self, argv: list[str], cwd: str | os.PathLike, env: dict | None = None) -> str:
        """Submit; returns the job id. `env` is the job's environment (sbatch exports it)."""
        done = subprocess.run(["sbatch", "--parsable", *argv], cwd=cwd,
                              env=dict(env or self.env, SLURM_CONF=str(self.conf)),
                              capture_output=True, text=True, timeout=30)
        if done.returncode != 0:
            raise RuntimeError(f"sbatch {' '.join(argv)} failed: {done.stderr.strip()}")
        return done.stdout.strip().split(";")[0]

    def job(self, job_id: str) -> dict[str, str]:
        """scontrol's view of a job as key -> value (accounting is off, so no sacct)."""
        out = self.scontrol("show", "job", "-o", job_id)
        return dict(f.split("=", 1) for f in out.split() if "=" in f)

    def wait_job(self, job_id: str, timeout: float,
                 until: tuple[str, ...] = ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT",
                                           "NODE_FAIL", "OUT_OF_MEMORY")) -> dict[str, str]:
        deadline = time.monotonic() + timeout
        info: dict[str, str] = {}
        while time.monotonic() < deadline:
            info = self.job(job_id)
            if info.get("JobState") in until:
                return info
            time.sleep(1.0)
        raise TimeoutError(f"job {job_id} still {info.get('JobState')} after {timeout:.0f} s; "
                           f"{info}\n{self._log_tail('slurmctld')}")


def _session_cluster(tmp_path_factory, nodes: int):
    cluster = SlurmCluster(tmp_path_factory.mktemp(f"slurm{nodes}"), nodes=nodes)
    try:
        cluster.start()
    except SlurmUnavailable as exc:
        pytest.skip(f"no local Slurm cluster: {exc}")
    except BaseException:
        cluster.stop()
        raise
    return cluster


@pytest.fixture(scope="session")
def slurm(tmp_path_factory):
    """A running single-node cluster for the whole test session, stopped at the end."""
    cluster = _session_cluster(tmp_path_factory, nodes=1)
    yield cluster
    cluster.stop()


@pytest.fixture(scope="session")
def slurm2(tmp_path_factory):
    """A running two-node cluster (janus-n1, janus-n2) for the whole session, stopped at the end."""
    cluster = _session_cluster(tmp_path_factory, nodes=2)
    yield cluster
    cluster.stop()


def _field(scontrol_out: str, key: str) -> str:
    for f in scontrol_out.split():
        if f.startswith(key + "="):
            return f.split("=", 1)[1]
    return ""


def _terminate(pids: list[int], grace: float) -> None:
    """SIGTERM each process, SIGKILL the ones still alive after `grace` seconds."""
    alive = []
    for pid in pids:
        try:
            os.kill(pid, signal.SIGTERM)
            alive.append(pid)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + grace
    while alive and time.monotonic() < deadline:
        time.sleep(0.2)
        alive = [pid for pid in alive if _running(pid)]
    for pid in alive:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _uts_namespace(pid: int) -> str | None:
    try:
        return os.readlink(f"/proc/{pid}/ns/uts")
    except OSError:
        return None


def _all_pids() -> list[int]:
    return [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit()]


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("verb", choices=("up", "down"))
    parser.add_argument("dir", help="directory holding all of the cluster's files")
    parser.add_argument("--nodes", type=int, default=1, help="nodes for `up` (default 1)")
    args = parser.parse_args(argv)
    cluster = SlurmCluster(args.dir, nodes=args.nodes)
    if args.verb == "up":
        cluster.__enter__()  # stops what it started when the start fails
        print(f"export SLURM_CONF={cluster.conf}")
    else:
        cluster.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
