"""Exports made in a child process: `export_in_child(weights, fmt)` -> the export's bytes.

`torch.export` and the dynamo ONNX exporter change process-wide state while they trace
(dynamo's configuration, fake tensor modes, ONNX-export flags, patched builtins). A process
that answers predictions in other threads meanwhile must never run them, so the exports of
models/export.py run here, in a process of their own:

    python -m models.export_process FORMAT WEIGHTS_PATH OUT_PATH [--threads N]

reads the safetensors weights file (`deserialize_model`: the header is JSON, the tensors are
raw bytes, nothing is unpickled), exports it with `to_onnx` or `to_pt2` (each checks its
export against the eager module within `TOLERANCE`) and writes the bytes to OUT_PATH. It
exits 0 when it wrote them; otherwise its last line on stderr says why.

The parent side writes the weights to a temporary folder, runs that command with the same
interpreter and import path as its own (so the child imports this very `models` package,
installed editable or found through PYTHONPATH), with few threads and a lower CPU priority
(it must not starve the parent's forwards), waits at most `timeout_s` (then kills it), and
removes the folder in every case, also when the parent exits normally meanwhile (then the
child is killed). A parent killed with SIGKILL leaves its folder in the temporary directory;
the child finishes on its own and exits.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

from models.errors import CheckpointError
from models.export import ExportError

FORMATS = ("onnx", "pt2")
DEFAULT_TIMEOUT_S = 300.0
DEFAULT_THREADS = 1
CHILD_NICENESS = 10  # added to the child's niceness: the parent's forwards come first
ERROR_PREFIX = "export failed: "  # the child's last stderr line when it knows why it failed
_MAX_REASON_CHARS = 2000


def export_in_child(
    weights: bytes,
    fmt: str,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    threads: int = DEFAULT_THREADS,
) -> bytes:
    """The `fmt` (onnx, pt2) export of the model in `weights` (a trainserve safetensors file),
    made by a child process. ExportError with the child's reason when it fails, or when it runs
    longer than `timeout_s` (it is killed)."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown export format {fmt!r}; expected one of {FORMATS}")
    folder = _live.open_folder()
    try:
        weights_path = folder / "weights.safetensors"
        out_path = folder / f"export.{fmt}"
        log_path = folder / "child.log"
        weights_path.write_bytes(weights)
        command = [
            sys.executable,
            "-m",
            __name__,
            fmt,
            str(weights_path),
            str(out_path),
            "--threads",
            str(threads),
        ]
        with open(log_path, "wb") as log:
            child = _live.start(
                folder,
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=_child_env(threads),
                cwd=folder,
            )
            try:
                code = child.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                raise ExportError(
                    f"the {fmt} export took longer than {timeout_s:g} s; its process "
                    f"(pid {child.pid}) was killed"
                ) from None
            finally:
                if child.poll() is None:  # timed out, or this thread was interrupted
                    child.kill()
                    child.wait()
        if code != 0:
            reason = _last_error_line(log_path.read_bytes())
            raise ExportError(f"the {fmt} export failed in its process (exit {code}): {reason}")
        try:
            return out_path.read_bytes()
        except FileNotFoundError:
            raise ExportError(f"the {fmt} export's process exited 0 but wrote nothing") from None
    finally:
        _live.close_folder(folder)


class _LiveExports:
    """The temporary folders and children of the exports under way in this process, so that
    they go when it exits normally (a server stopped by SIGTERM) while an export runs in a
    daemon thread, which the interpreter stops without running its `finally` blocks: at exit
    the children are killed, the folders removed, and no new export starts."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._folders: dict[Path, subprocess.Popen | None] = {}
        self._exiting = False
        atexit.register(self.close_all)

    def open_folder(self) -> Path:
        with self._lock:
            self._refuse_if_exiting()
            folder = Path(tempfile.mkdtemp(prefix="trainserve-export-"))
            self._folders[folder] = None
            return folder

    def start(self, folder: Path, command: list[str], **popen) -> subprocess.Popen:
        with self._lock:
            self._refuse_if_exiting()
            child = subprocess.Popen(command, **popen)
            self._folders[folder] = child
            return child

    def close_folder(self, folder: Path) -> None:
        with self._lock:
            self._folders.pop(folder, None)
        shutil.rmtree(folder, ignore_errors=True)

    def close_all(self) -> None:
        with self._lock:
            self._exiting = True
            live, self._folders = self._folders, {}
        for folder, child in live.items():
            if child is not None and child.poll() is None:
                child.kill()
                child.wait()
            shutil.rmtree(folder, ignore_errors=True)

    def _refuse_if_exiting(self) -> None:
        if self._exiting:
            raise ExportError("this process is exiting: no export starts now")


_live = _LiveExports()


def _child_env(threads: int) -> dict[str, str]:
    """The parent's environment, with its import path (this `models` first) and few threads."""
    here = str(Path(__file__).resolve().parent.parent)  # the folder that holds `models`
    paths = [here] + [p for p in sys.path if isinstance(p, str) and p and p != here]
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        env[name] = str(threads)
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    return env


def _last_error_line(output: bytes) -> str:
    """The child's reason: its last `ERROR_PREFIX` line, else its last line (a traceback's
    last line names the exception), else a note that it said nothing."""
    lines = [line.strip() for line in output.decode("utf-8", "replace").splitlines()]
    lines = [line for line in lines if line]
    if not lines:
        return "it printed nothing (killed by a signal, or out of memory?)"
    reasons = [line for line in lines if line.startswith(ERROR_PREFIX)]
    reason = reasons[-1].removeprefix(ERROR_PREFIX) if reasons else lines[-1]
    return reason[:_MAX_REASON_CHARS]


def _limit(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)
    with contextlib.suppress(RuntimeError):  # already set (it can be set once per process)
        torch.set_num_interop_threads(1)
    if hasattr(os, "nice"):
        with contextlib.suppress(OSError):  # not allowed here: run at the parent's priority
            os.nice(CHILD_NICENESS)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m models.export_process",
        description="Export a trainserve safetensors weights file as ONNX or torch.export "
        "(.pt2), checked against the eager module.",
    )
    parser.add_argument("format", choices=FORMATS)
    parser.add_argument("weights", type=Path, help="a trainserve .safetensors file")
    parser.add_argument("out", type=Path, help="where to write the export")
    parser.add_argument("--threads", type=int, default=DEFAULT_THREADS)
    args = parser.parse_args(argv)
    _limit(max(1, args.threads))

    from models.export import to_onnx, to_pt2
    from models.weights_file import deserialize_model

    try:
        model, card = deserialize_model(args.weights.read_bytes())
        data = {"onnx": to_onnx, "pt2": to_pt2}[args.format](model, card)
        args.out.write_bytes(data)  # read by the parent only once this process exits 0
    except (CheckpointError, OSError) as exc:  # ExportError, bad weights, unreadable files
        reason = " | ".join(line.strip() for line in str(exc).splitlines() if line.strip())
        print(f"{ERROR_PREFIX}{reason}", file=sys.stderr, flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
