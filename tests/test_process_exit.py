"""`lvu` and the loader's fork server leave without the interpreter's teardown, after what must run has run."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from support.features import make_features

TESTS = Path(__file__).parent


def _python(code: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(TESTS), **env})


def test_exit_now_joins_threads_runs_exit_handlers_flushes_and_keeps_the_code(tmp_path):
    result = _python(f"""
        import atexit, sys, threading, time
        from pathlib import Path
        from lvu.process_exit import exit_now
        out = Path({str(tmp_path)!r})
        def late_writer():
            time.sleep(0.3)
            (out / "thread").write_text("done")
        threading.Thread(target=late_writer).start()
        atexit.register(lambda: (out / "atexit").write_text("ran"))
        sys.stdout.write("buffered, no newline")
        exit_now(3)
    """)
    assert result.returncode == 3, result.stderr
    assert result.stdout == "buffered, no newline"
    assert (tmp_path / "thread").read_text() == "done" and (tmp_path / "atexit").read_text() == "ran"


def test_the_lvu_command_exits_with_mains_code_without_teardown(tmp_path):
    marks = tmp_path / "marks"
    marks.mkdir()
    # A module with a teardown probe is imported; `lvu` then fails on a missing recipe (exit 1, one line).
    result = _python("""
        import sys
        import support.teardown_probe
        sys.argv = ["lvu", "config", "no/such_recipe"]
        from lvu.cli import script_main
        script_main()
    """, LVU_TEARDOWN_MARKS=str(marks))
    assert result.returncode == 1 and "lvu: error:" in result.stderr, result.stderr
    assert not list(marks.glob("teardown-*")), "the interpreter's teardown ran"
    control = _python("import support.teardown_probe", LVU_TEARDOWN_MARKS=str(marks))
    assert control.returncode == 0 and len(list(marks.glob("teardown-*"))) == 1  # the probe sees a normal teardown


def test_the_loader_fork_server_leaves_without_teardown(tmp_path):
    marks = tmp_path / "marks"
    marks.mkdir()
    shards = make_features(tmp_path / "features", 8, per_shard=4)
    result = _python(f"""
        import multiprocessing.forkserver
        from support import teardown_probe
        from lvu.data.loader import SampleSet, ShardLoader
        from lvu.data.shards import resolve_shards
        loader = ShardLoader(SampleSet(resolve_shards({str(shards)!r})), teardown_probe.decode,
                             teardown_probe.collate, batch_size=2, num_workers=1, seed=0)
        assert sum(len(keys) for keys in loader) == 8
        print(multiprocessing.forkserver._forkserver._forkserver_pid)
    """, LVU_TEARDOWN_MARKS=str(marks))
    assert result.returncode == 0, result.stderr
    server = int(result.stdout.split()[-1])
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and Path(f"/proc/{server}").exists():
        time.sleep(0.1)
    assert not Path(f"/proc/{server}").exists(), "the fork server outlived its last client by a minute"
    assert (marks / f"imported-{server}").exists(), "the fork server did not preload the probe's module"
    torn_down = {int(p.name.split("-")[1]) for p in marks.glob("teardown-*")}
    assert server not in torn_down, "the fork server tore its interpreter down"
    assert torn_down, "the probe saw no teardown at all, not even the (normally exiting) client's"
