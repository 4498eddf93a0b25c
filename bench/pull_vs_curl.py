"""`zoo pull` (download + SHA-256 + snapshot) vs `curl -o` of a 1 GiB file from nginx on loopback.

    .venv/bin/python bench/pull_vs_curl.py [--runs 3]
"""

from __future__ import annotations

import argparse
import statistics

from _pullbench import WORK, Nginx, big_file, drop, fresh, manifest_dir, timed, zoo_env, zoo_pull_cmd


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    path = big_file()
    with Nginx(path.parent) as server:
        url = server.url(path.name)
        manifests = manifest_dir(url)
        curl, zoo = [], []
        for _ in range(args.runs):  # interleaved, so both see the same page-cache and CPU state
            out = WORK / "curl.out"
            drop(out)
            curl.append(timed(["curl", "-s", "-o", str(out), url]))
            drop(out)
            home = fresh(WORK / "home")
            zoo.append(timed(zoo_pull_cmd(), zoo_env(home, manifests)))
            fresh(home)
    c, z = statistics.median(curl), statistics.median(zoo)
    print(f"curl -o      median {c:.2f}s  runs {[round(x, 2) for x in curl]}")
    print(f"zoo pull     median {z:.2f}s  runs {[round(x, 2) for x in zoo]}  (incl. interpreter start + sha256)")
    print(f"ratio zoo/curl: {z / c:.2f}x (goal <= 1.3x)")


if __name__ == "__main__":
    main()
