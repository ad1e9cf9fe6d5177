"""Console commands run from a process that has already imported agfsync's libraries.

Every `agfsync ...` a test runs spends 6-15 s of CPU importing torch, diffusers,
transformers, distilabel and datasets before it does anything, and the suite runs
about a hundred of them. The runner imports those libraries once and forks one child
per command. The child does what the installed console script does in a new process:
it takes the command's environment, working folder, argv and standard streams (files,
stdin from /dev/null), reseeds the random generators a new process would seed from the
OS, calls the console script's entry point (or runs `python -m MODULE`), runs the exit
handlers and leaves with the command's exit status.

What a forked child cannot reproduce is kept out of it (`tests.helpers.run_command`
starts a new process instead): an environment that changes a variable the libraries
read while importing (only the variables in `RUNTIME_VARIABLES` may differ from the
runner's), and anything a test proves about a new process itself (imports, hash
seeds), which asks for `fresh_process=True`.

Protocol, one JSON object per line: the test sends a request
(`argv`, `env`, `cwd`, `stdout`, `stderr` file paths), the runner answers
`{"pid": N}` once the child exists and `{"returncode": N, "cpu_seconds": S}` when it
has ended (S: the CPU time of the command and the processes it waited for).
"""

import atexit
import importlib
import json
import os
import random
import runpy
import sys
import tempfile
from importlib.metadata import entry_points
from typing import Any

PRELOADED = (
    "torch",
    "datasets",
    "matplotlib.pyplot",
    "agfsync.cli",
    "agfsync.steps",
    "agfsync.pipelines",
    "agfsync.dataset.publish",
    "diffusers.pipelines.stable_diffusion.pipeline_stable_diffusion",
    "diffusers.pipelines.stable_diffusion_xl.pipeline_stable_diffusion_xl",
    "transformers.models.clip.modeling_clip",
)
"""What the commands of the suite import; each must import without printing anything
(checked at start-up), so that a child's output is the output a new process gives."""

RUNTIME_VARIABLES = frozenset(
    {
        "AGFSYNC_CACHE_DIR",
        "ARGILLA_API_KEY",
        "ARGILLA_API_URL",
        "COLUMNS",
        "DISTILABEL_CACHE_DIR",
        "GEMINI_API_KEY",
        "GOOGLE_API_KEY",
        "GOOGLE_GEMINI_BASE_URL",
        "HF_TOKEN",
        "NO_COLOR",
        "OPENAI_API_KEY",
        "OPENAI_BASE_URL",
        "PYTEST_CURRENT_TEST",
        "TERM",
    }
)
"""Variables read when a command runs, not when a library is imported: a command may
set them differently from the runner. Any other difference (HF_ENDPOINT, HF_HOME,
HF_HUB_OFFLINE, ... are read by huggingface_hub at import) needs a new process."""


def import_time_differences(env: dict[str, str], runner_env: dict[str, str]) -> list[str]:
    """The variables that keep a command with environment `env` from behaving in a
    child of a runner started with `runner_env` as it does in a new process."""
    names = (set(env) | set(runner_env)) - RUNTIME_VARIABLES
    return sorted(name for name in names if env.get(name) != runner_env.get(name))


def _preload() -> None:
    """Import `PRELOADED` with the standard streams on a file, and stop if anything
    was printed (a warning printed here would be missing from every child's output)."""
    saved = os.dup(1), os.dup(2)
    with tempfile.TemporaryFile() as printed:
        os.dup2(printed.fileno(), 1)
        os.dup2(printed.fileno(), 2)
        try:
            for module in PRELOADED:
                importlib.import_module(module)
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
        printed.seek(0)
        output = printed.read().decode(errors="replace")
    if output:
        raise SystemExit(
            "tests.warm_runner: importing the preloaded modules printed output, which "
            f"every command's own output would then lack:\n{output}"
        )


def _entry_point(script: str) -> Any:
    (found,) = entry_points(group="console_scripts", name=script)
    return found.load()


def _run_python(args: list[str]) -> None:
    """What `python -m MODULE ...`, `python -c CODE ...` and `python SCRIPT ...` run,
    with the `sys.argv` and first import path each gives."""
    if args[0] == "-m":
        sys.argv, sys.path[0] = [args[1], *args[2:]], os.getcwd()
        runpy.run_module(args[1], run_name="__main__", alter_sys=True)
    elif args[0] == "-c":
        sys.argv, sys.path[0] = ["-c", *args[2:]], ""
        exec(compile(args[1], "<string>", "exec"), {"__name__": "__main__"})
    else:
        sys.argv, sys.path[0] = list(args), os.path.dirname(os.path.abspath(args[0]))
        runpy.run_path(args[0], run_name="__main__")


def _child(request: dict[str, Any], protocol: tuple[int, int]) -> int:
    """Run one command in this (forked) process; returns its exit status."""
    for descriptor in protocol:
        os.close(descriptor)
    os.environ.clear()
    os.environ.update(request["env"])
    os.chdir(request["cwd"])
    stdin = os.open(os.devnull, os.O_RDONLY)
    stdout = os.open(request["stdout"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    stderr = os.open(request["stderr"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    for source, target in ((stdin, 0), (stdout, 1), (stderr, 2)):
        os.dup2(source, target)
        os.close(source)
    tempfile.tempdir = None  # found again from TMPDIR, as a new process does
    # A new process seeds these from the OS; a fork would repeat the runner's sequence.
    random.seed()
    import numpy

    numpy.random.seed()
    argv = request["argv"]
    try:
        if os.path.basename(argv[0]).startswith("python"):
            _run_python(argv[1:])
        else:
            sys.argv = list(argv)
            sys.exit(_entry_point(os.path.basename(argv[0]))())
        status: Any = 0
    except SystemExit as stop:
        status = stop.code
    except BaseException:  # what the interpreter does with an uncaught exception
        import traceback

        traceback.print_exc()
        status = 1
    if status is None:
        status = 0
    elif not isinstance(status, int):
        print(status, file=sys.stderr)
        status = 1
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    return status


def serve() -> None:
    requests = os.fdopen(os.dup(0), "r")
    answers = os.fdopen(os.dup(1), "w")
    null = os.open(os.devnull, os.O_RDWR)
    os.dup2(null, 0)
    os.dup2(null, 1)
    os.close(null)
    # A console script's first import path is its bin folder, not the checkout.
    sys.path[0] = os.path.dirname(sys.executable)
    runner_env = dict(os.environ)
    _preload()
    # Variables the imports set (TORCHINDUCTOR_CACHE_DIR, ...): a new process running
    # the command would have set them too.
    set_by_imports = {
        name: value for name, value in os.environ.items() if runner_env.get(name) != value
    }
    answers.write(json.dumps({"ready": True}) + "\n")
    answers.flush()
    for line in requests:
        request = json.loads(line)
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            status = 1
            try:
                request["env"] = {**set_by_imports, **request["env"]}
                status = _child(request, (requests.fileno(), answers.fileno()))
            finally:
                os._exit(status)
        answers.write(json.dumps({"pid": pid}) + "\n")
        answers.flush()
        _, wait_status, usage = os.wait4(pid, 0)
        answer: dict[str, float] = {"returncode": os.waitstatus_to_exitcode(wait_status)}
        answer["cpu_seconds"] = usage.ru_utime + usage.ru_stime  # with its step processes
        answers.write(json.dumps(answer) + "\n")
        answers.flush()


if __name__ == "__main__":
    serve()
