"""Throughput of `imrestore.acquire.download.download` over loopback, against plain urllib in the same run.

The reference is what a script without resuming or verification would do: `urllib.request.urlopen` and
`shutil.copyfileobj` into a file. Ours also computes the sha256 while it writes, which is its point, so a
second reference adds a sha256 pass over the written file (what verifying after a plain copy costs).
Both clients fetch the same random file from the same loopback server, alternating, several times; the
table shows best and median seconds, MB/s and the ratio of throughputs (goal: ours / plain >= 0.8).

Over loopback nothing waits on a network, so the run is CPU-bound: ours does the same copying as the
plain reference plus sha256. Ours hashes on a second thread, so with a spare core the hash overlaps the copy;
on a machine whose cores are busy it cannot, and the ratio drops towards plain / (plain + sha256). Check
`uptime` before trusting a run. On a real link (tens of MB/s) the hash costs nothing visible.

The server is the standard library's, serving the file with sendfile so that it costs the measured clients
little CPU. It ignores Range, which no fresh download sends.

    python benchmarks/download_throughput.py --mib 512 --repeats 5 --json build/bench/download.json
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import http.server
import os
import shutil
import tempfile
import threading
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

from rich.console import Console

from common import alternate, argument_parser, machine_facts, new_table, write_json  # first: puts src/ on sys.path

from imrestore.acquire.download import download
from imrestore.atomic import sha256_file

MB = 1_000_000


class _FileHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # noqa: A002  (quiet: the table is the output)
        pass

    def copyfile(self, source, outputfile) -> None:  # noqa: ANN001
        self.connection.sendfile(source)  # the kernel copies the body; the server's own CPU stays out of the way


@contextlib.contextmanager
def serve(root: Path) -> Iterator[str]:
    """The base URL of an HTTP server on 127.0.0.1 (a free port, a daemon thread) serving `root`, until exit."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_FileHandler, directory=root))
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def make_file(path: Path, mib: int) -> str:
    """Write `mib` MiB of random bytes to `path`, return their sha256."""
    sha = hashlib.sha256()
    with path.open("wb") as file:
        for _ in range(mib):
            block = os.urandom(1 << 20)
            file.write(block)
            sha.update(block)
    return sha.hexdigest()


def plain_copy(url: str, dest: Path) -> None:
    with urllib.request.urlopen(url, timeout=60) as response, dest.open("wb") as file:
        shutil.copyfileobj(response, file)


def plain_copy_then_sha256(url: str, dest: Path) -> None:
    plain_copy(url, dest)
    sha256_file(dest)


def main() -> None:
    parser = argument_parser(__doc__)
    parser.add_argument("--mib", type=int, default=512, help="size of the test file in MiB (default 512)")
    parser.add_argument("--repeats", type=int, default=5, help="runs of each client, alternating (default 5)")
    parser.add_argument("--chunk-mib", type=float, default=1.0, help="download(chunk_bytes=...) in MiB")
    parser.add_argument("--progress", action="store_true", help="show ours' rich progress bar while measuring")
    parser.add_argument("--dir", type=Path, default=None, help="where to put the files (default: a temp dir)")
    args = parser.parse_args()

    console = Console()
    with tempfile.TemporaryDirectory(prefix="imrestore-bench-", dir=args.dir) as tmp:
        root, out = Path(tmp) / "served", Path(tmp) / "out"
        root.mkdir()
        out.mkdir()
        console.print(f"writing {args.mib} MiB of random bytes to {root} ...")
        digest = make_file(root / "archive.bin", args.mib)
        size = (root / "archive.bin").stat().st_size
        with serve(root) as base:
            url = base + "archive.bin"
            dest = out / "archive.bin"
            clients: dict[str, Callable[[], None]] = {
                "ours: download() (hashes while writing)": lambda: download(
                    url, dest, sha256=digest, chunk_bytes=int(args.chunk_mib * (1 << 20)), progress=args.progress
                ),
                "ref: urlopen+copyfileobj": lambda: plain_copy(url, dest),
                "ref: urlopen+copyfileobj, then sha256": lambda: plain_copy_then_sha256(url, dest),
            }

            def fresh() -> None:
                dest.unlink(missing_ok=True)
                os.sync()  # flush the previous run's writes and deletion: else each run pays for the one before

            # a warm-up of each client warms the page cache and the server
            samples = alternate(clients, args.repeats, warmup=1, prepare=fresh)

    ours, plain, plain_sha = samples.values()
    results = {
        "benchmark": "download_throughput",
        "bytes": size,
        "repeats": args.repeats,
        "chunk_bytes": int(args.chunk_mib * (1 << 20)),
        "progress_bar": args.progress,
        "machine": machine_facts(),
        "clients": {
            name: {"best_s": s.best, "median_s": s.median, "best_MBps": size / s.best / MB,
                   "median_MBps": size / s.median / MB, "all_s": s.wall}
            for name, s in samples.items()
        },
        # throughput ratios (ours / reference) are inverted time ratios
        "ratio_ours_vs_plain_copy": plain.median / ours.median,
        "ratio_ours_vs_plain_copy_then_sha256": plain_sha.median / ours.median,
        "ratio_ours_vs_plain_copy_best": plain.best / ours.best,
        "ratio_ours_vs_plain_copy_then_sha256_best": plain_sha.best / ours.best,
        "goal_ratio_vs_plain_copy": 0.8,
    }

    table = new_table(f"download of {size / (1 << 20):.0f} MiB over loopback, {args.repeats} runs each",
                      ("client", "best s", "median s", "best MB/s", "median MB/s"), left=("client",))
    for name, row in results["clients"].items():
        table.add_row(
            name, f"{row['best_s']:.3f}", f"{row['median_s']:.3f}", f"{row['best_MBps']:.0f}",
            f"{row['median_MBps']:.0f}",
        )
    console.print(table)
    console.print(
        "throughput ratio ours / ref (goal >= 0.8 against the plain copy):\n"
        f"  vs plain copy:             median {results['ratio_ours_vs_plain_copy']:.2f}, "
        f"best {results['ratio_ours_vs_plain_copy_best']:.2f}\n"
        f"  vs plain copy then sha256: median {results['ratio_ours_vs_plain_copy_then_sha256']:.2f}, "
        f"best {results['ratio_ours_vs_plain_copy_then_sha256_best']:.2f}"
    )
    write_json(results, args.json, console)


if __name__ == "__main__":
    main()
