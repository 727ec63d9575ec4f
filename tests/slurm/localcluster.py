"""A real Slurm cluster for tests: Debian's slurmctld, one slurmd per node and munge, started in a temp dir.

Everything (config, state, spool, munge socket, logs) lives under one directory; the daemons run in
the foreground as children of this process, so they are stopped by PID and nothing else is touched.
Fake A40 GPUs are gres `File=` symlinks to /dev/null, which is enough for Slurm to hand out
`CUDA_VISIBLE_DEVICES`.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from psyutil import apt_install

PACKAGES = ["slurmctld", "slurmd", "slurm-client", "munge"]
BINARIES = ["slurmctld", "slurmd", "sbatch", "scontrol", "munged"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ensure_installed() -> str | None:
    """Install the Debian packages if missing. Returns a reason string when that is impossible."""
    if all(shutil.which(b) or Path("/usr/sbin", b).exists() for b in BINARIES):
        return None
    if os.geteuid() != 0:
        return "Slurm is not installed and installing it needs root"
    if not shutil.which("apt-get"):
        return "Slurm is not installed and there is no apt-get"
    failed = apt_install(PACKAGES)
    if failed is not None:
        return f"apt-get install {' '.join(PACKAGES)} failed: {failed[-500:]}"
    return None


class LocalSlurm:
    """`nodes` compute nodes (`n1`, `n2`, ...) in partition `a40`, each with `gpus` fake A40s, 32 CPUs and
    256 GB. They are slurmd daemons on this one host (Debian's Slurm is built with multiple-slurmd support:
    each node has its own port, spool and log), so a multi-node job really starts one task per node
    through srun, with SLURM_NODEID 0 and 1, rendezvousing over loopback.

    `cred_expire=10`: a requeued job may start again after 10 s instead of Slurm's default 120 s
    (it must wait until the old job credential has expired)."""

    def __init__(self, root: Path, gpus: int = 4, cpus: int = 32, mem_mb: int = 256000, nodes: int = 2) -> None:
        self.root = root
        self.gpus, self.cpus, self.mem_mb, self.nodes = gpus, cpus, mem_mb, nodes
        self.names = [f"n{i + 1}" for i in range(nodes)]
        self.conf = root / "etc" / "slurm.conf"
        # munged (user munge) must reach its directory; pytest's tmp dirs are root-only (0700).
        self.munge_dir = Path(tempfile.mkdtemp(prefix="psy-munge-"))
        self.munge_socket = self.munge_dir / "munge.socket"
        self.jobcomp = root / "jobcomp.txt"
        self.procs: list[subprocess.Popen] = []

    # -- config -----------------------------------------------------------------------------------
    def _write_config(self) -> None:
        etc, state, spool, gpudev = (self.root / d for d in ("etc", "state", "spool", "dev"))
        for d in (etc, state, spool, gpudev):
            d.mkdir(parents=True, exist_ok=True)
        for i in range(self.gpus * self.nodes):
            link = gpudev / f"nvidia{i}"
            if not link.exists():
                link.symlink_to("/dev/null")
        node_lines = "\n".join(
            f"NodeName={n} NodeHostname=localhost NodeAddr=127.0.0.1 Port={_free_port()} CPUs={self.cpus} "
            f"RealMemory={self.mem_mb} Gres=gpu:a40:{self.gpus} State=UNKNOWN" for n in self.names)
        r = self.root
        self.conf.write_text(
            f"""ClusterName=psytest
SlurmctldHost=localhost
SlurmctldPort={_free_port()}
SlurmdPort={_free_port()}
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={self.munge_socket},cred_expire=10
SlurmUser=root
SlurmdUser=root
StateSaveLocation={state}
SlurmdSpoolDir={spool}/%n
SlurmctldPidFile={r}/slurmctld.pid
SlurmdPidFile={r}/slurmd-%n.pid
SlurmctldLogFile={r}/slurmctld.log
SlurmdLogFile={r}/slurmd-%n.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
GresTypes=gpu
ReturnToService=2
SchedulerType=sched/backfill
SchedulerParameters=defer_batch,sched_interval=1
MinJobAge=86400
JobCompType=jobcomp/filetxt
JobCompLoc={self.jobcomp}
EnforcePartLimits=ALL
DependencyParameters=kill_invalid_depend
SlurmdParameters=config_overrides
KillWait=5
SlurmctldTimeout=30
SlurmdTimeout=30
{node_lines}
PartitionName=a40 Nodes={",".join(self.names)} Default=YES MaxTime=2-00:00:00 State=UP
"""
        )
        (etc / "gres.conf").write_text("".join(
            f"NodeName={n} Name=gpu Type=a40 File={gpudev}/nvidia[{i * self.gpus}-{(i + 1) * self.gpus - 1}]\n"
            for i, n in enumerate(self.names)))
        for n in self.names:
            (spool / n).mkdir(parents=True, exist_ok=True)
        # cgroup-v2 hosts: the default cgroup plugin needs dbus and slurmd dies; v1 works everywhere here.
        (etc / "cgroup.conf").write_text("CgroupPlugin=cgroup/v1\n")

    # -- lifecycle ---------------------------------------------------------------------------------
    def env(self) -> dict[str, str]:
        return {**os.environ, "SLURM_CONF": str(self.conf)}

    def _spawn(self, cmd: list[str], log: str, **kw) -> subprocess.Popen:
        out = open(self.root / log, "ab")  # noqa: SIM115 - closed when the process ends
        p = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=self.env(),
                             start_new_session=True, **kw)
        self.procs.append(p)
        return p

    def start(self, timeout: float = 60) -> None:
        self._write_config()
        mdir = self.munge_dir
        shutil.chown(mdir, "munge", "munge")
        mdir.chmod(0o755)
        # munged refuses to run as root; it also wants a group/other non-writable socket dir.
        self._spawn(["/usr/sbin/munged", "-F", f"--socket={self.munge_socket}",
                     f"--pid-file={mdir}/munged.pid", f"--log-file={mdir}/munged.log",
                     f"--seed-file={mdir}/munged.seed"], "munged.out", user="munge", group="munge")
        self._wait(lambda: self.munge_socket.exists(), timeout, "munged socket")
        self._spawn(["/usr/sbin/slurmctld", "-D", "-i", "-f", str(self.conf)], "slurmctld.out")
        self._wait(lambda: self.run(["scontrol", "ping"], check=False).returncode == 0, timeout, "slurmctld")
        for n in self.names:
            self._spawn(["/usr/sbin/slurmd", "-D", "-N", n, "-f", str(self.conf)], f"slurmd-{n}.out")

        def nodes_idle() -> bool:
            out = self.run(["sinfo", "-h", "-N", "-o", "%T"], check=False).stdout.split()
            return len(out) == self.nodes and all(state == "idle" for state in out)

        self._wait(nodes_idle, timeout, f"nodes {','.join(self.names)} idle")

    def _wait(self, pred, timeout: float, what: str) -> None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            for p in self.procs:
                if p.poll() is not None:
                    raise RuntimeError(f"{p.args[0]} exited with {p.returncode} while waiting for {what}; "
                                       f"logs in {self.root}")
            if pred():
                return
            time.sleep(0.3)
        raise TimeoutError(f"{what} not ready after {timeout}s; logs in {self.root}")

    def stop(self) -> None:
        """Stop the daemons this object started (by PID), newest first."""
        for p in reversed(self.procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in reversed(self.procs):
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        self.procs.clear()
        shutil.rmtree(self.munge_dir, ignore_errors=True)

    # -- helpers -----------------------------------------------------------------------------------
    def run(self, cmd: list[str], check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run(cmd, env=self.env(), capture_output=True, text=True, check=check)

    def job(self, job_id: str) -> dict[str, str]:
        """`scontrol show job -o` as a dict (JobState, Reason, ExitCode, Restarts, ...)."""
        out = self.run(["scontrol", "show", "job", "-o", str(job_id)]).stdout
        return dict(tok.split("=", 1) for tok in out.split() if "=" in tok)
