"""What a ``convolab`` process spends after its last line: the command with and without ``gc.freeze``.

Python's teardown runs full cyclic garbage collections over every object still alive, and a process that has
imported torch (and torch's optimizers, which import ``torch._dynamo``) holds 300,000 and more. The ``convolab``
executable and ``python -m convolab`` run ``convolab.cli.command``, which freezes what exists at its start and its
end out of the collector's reach; the baseline runs the same ``convolab.cli.main`` without the freezes
(``python -c "...sys.exit(main())"``). Both sides run the same command as whole processes, alternated, ``--repeats``
times each, in one run of this script.

Printed per side: the mean whole-process wall time, the mean time from the last line of output to the process's
exit (the part the freeze changes), and the ratios. Single figures on a shared machine drift by tens of per cent;
the time after the last line drifts less than the whole.

Usage: python benchmarks/exit_time.py [--repeats 3] [-- convolab arguments]
       (default arguments: train --data digits --epochs 1 --no-plots --no-checkpoints --quiet --overwrite
       --out TMP/run)
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SIDES = {
    "without freeze (main)": [sys.executable, "-c", "import sys; from convolab.cli import main; sys.exit(main())"],
    "convolab (command)": [sys.executable, "-m", "convolab"],
}


def timed(cmd: list[str]) -> tuple[float, float]:
    """Run ``cmd``; return its wall time and the seconds from its last line of output to its exit."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    last, lines = start, []
    assert proc.stdout is not None
    for line in proc.stdout:
        last = time.perf_counter()
        lines.append(line)
    code = proc.wait()
    end = time.perf_counter()
    if code != 0:
        sys.exit(f"command failed ({code}): {' '.join(cmd)}\n{''.join(lines[-5:])}")
    return end - start, end - last


def main(argv: list[str] | None = None) -> dict:
    argv = list(sys.argv[1:] if argv is None else argv)
    extra = argv[argv.index("--") + 1:] if "--" in argv else None
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3, help="runs of each side, alternated (default 3)")
    args = parser.parse_args(argv[:argv.index("--")] if "--" in argv else argv)
    if args.repeats < 1:
        parser.error(f"--repeats must be at least 1, got {args.repeats}")
    with tempfile.TemporaryDirectory(prefix="convolab-exit-") as tmp:
        command = extra or ["train", "--data", "digits", "--epochs", "1", "--no-plots", "--no-checkpoints",
                            "--quiet", "--overwrite", "--out", str(Path(tmp) / "run")]
        print(f"command: convolab {' '.join(command)}; {args.repeats} run(s) a side, alternated", flush=True)
        runs: dict[str, list[tuple[float, float]]] = {side: [] for side in SIDES}
        for _ in range(args.repeats):
            for side, prefix in SIDES.items():
                runs[side].append(timed(prefix + command))
    rows = {side: (statistics.mean(w for w, _ in r), statistics.mean(e for _, e in r)) for side, r in runs.items()}
    print(f"{'side':<24} {'wall':>8} {'last line to exit':>18}")
    for side, (wall, tail) in rows.items():
        print(f"{side:<24} {wall:>7.2f}s {tail:>17.2f}s")
    (base_wall, base_tail), (ours_wall, ours_tail) = rows.values()
    print(f"whole process: {base_wall / ours_wall:.2f}x ({base_wall - ours_wall:+.2f} s); "
          f"last line to exit: {base_tail / ours_tail:.2f}x ({base_tail - ours_tail:+.2f} s)")
    return {"runs": runs, "wall": rows}


if __name__ == "__main__":
    main()
