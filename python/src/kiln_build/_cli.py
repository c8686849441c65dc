"""Finding and running the kiln binary."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import threading
from pathlib import Path
from typing import IO, Any, Dict, List, Mapping, Optional, Sequence

# Exit codes kiln documents (README, "Exit codes").
EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_REGISTRY = 7

#: How many lines of kiln's standard error an exception carries.
TAIL_LINES = 30


class KilnError(RuntimeError):
    """kiln exited with a status other than the ones the caller expected."""

    def __init__(self, args: Sequence[str], code: int, stderr: str):
        self.command = list(args)
        self.code = code
        self.stderr = stderr
        tail = "\n".join(stderr.strip().splitlines()[-TAIL_LINES:])
        super().__init__(f"kiln {' '.join(self.command[:2])} exited with {code}:\n{tail}")


def kiln_executable() -> str:
    """The kiln binary: ``$KILN``, else the one installed with this package
    (the environment's scripts folder), else ``kiln`` on ``PATH``."""
    configured = os.environ.get("KILN")
    if configured:
        return configured
    name = "kiln.exe" if sys.platform == "win32" else "kiln"
    for scheme_dir in (sysconfig.get_path("scripts"), os.path.dirname(sys.executable)):
        candidate = Path(scheme_dir) / name
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    found = shutil.which("kiln")
    if found:
        return found
    raise FileNotFoundError(
        "kiln is not installed: `pip install kiln-build` puts it beside this Python, "
        "or set KILN to its path"
    )


def run_kiln(
    args: Sequence[str],
    *,
    stdin: Optional[IO[bytes]] = None,
    env: Optional[Mapping[str, str]] = None,
    ok_codes: Sequence[int] = (EXIT_OK,),
    stream_stderr: bool = False,
) -> "subprocess.CompletedProcess[str]":
    """Run ``kiln ARGS``; raise :class:`KilnError` for an exit code not in
    ``ok_codes``. ``env`` adds variables (secrets travel this way, never on
    the command line). With ``stream_stderr`` kiln's progress goes to this
    process's standard error as it happens."""
    full_env = dict(os.environ)
    if env:
        full_env.update(env)
    command = [kiln_executable(), *args]
    out: List[str] = []
    err: List[str] = []
    with subprocess.Popen(
        command,
        stdin=stdin if stdin is not None else subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=full_env,
        text=True,
    ) as proc:
        # Standard output is read beside standard error, so neither pipe
        # can fill up and stall kiln.
        reader = threading.Thread(target=lambda: out.append(proc.stdout.read()))  # type: ignore[union-attr]
        reader.start()
        for line in proc.stderr:  # type: ignore[union-attr]
            err.append(line)
            if stream_stderr:
                sys.stderr.write(line)
        reader.join()
        code = proc.wait()
    done = subprocess.CompletedProcess(command, code, "".join(out), "".join(err))
    if done.returncode not in ok_codes:
        raise KilnError(list(args), done.returncode, done.stderr)
    return done


def run_json(args: Sequence[str], **kwargs: Any) -> Dict[str, Any]:
    """``run_kiln`` with ``--json``; the parsed document."""
    done = run_kiln([*args, "--json"], **kwargs)
    return json.loads(done.stdout)


def plugins_dir_args(plugins_dir: Optional[str]) -> List[str]:
    """``--plugins-dir DIR`` when a folder is configured."""
    return ["--plugins-dir", plugins_dir] if plugins_dir else []


def validate_builder_config(
    flavor: str, config: Mapping[str, Any], plugins_dir: Optional[str] = None
) -> None:
    """Have kiln validate ``config`` against the builder flavor's schema
    (``kiln flavor validate``); raise ``ValueError`` with kiln's message."""
    args = [
        *plugins_dir_args(plugins_dir),
        "flavor",
        "validate",
        flavor,
        "--type",
        "image-builder",
        "--config",
        json.dumps(dict(config)),
    ]
    try:
        run_kiln(args)
    except KilnError as e:
        raise ValueError(e.stderr.strip() or str(e)) from None
