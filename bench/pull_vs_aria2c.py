"""`zoo pull` vs `aria2c -x8 -s8` for a 1 GiB file from nginx with ``limit_rate 50m`` per connection.

    .venv/bin/python bench/pull_vs_aria2c.py [--runs 2]
"""

from __future__ import annotations

import argparse
import statistics

from _pullbench import WORK, Nginx, big_file, drop, fresh, manifest_dir, timed, zoo_env, zoo_pull_cmd


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=2)
    args = parser.parse_args()
    path = big_file()
    with Nginx(path.parent, limit_rate="50m") as server:
        url = server.url(path.name)
        manifests = manifest_dir(url)
        aria, zoo = [], []
        for _ in range(args.runs):
            out = WORK / "aria.out"
            drop(out)
            aria.append(timed(["aria2c", "-q", "-x8", "-s8", "--file-allocation=none", "--allow-overwrite=true",
                               "-d", str(WORK), "-o", out.name, url]))
            drop(out)
            home = fresh(WORK / "home")
            zoo.append(timed(zoo_pull_cmd(), zoo_env(home, manifests)))
            fresh(home)
    a, z = statistics.median(aria), statistics.median(zoo)
    print(f"aria2c -x8 -s8  median {a:.2f}s  runs {[round(x, 2) for x in aria]}")
    print(f"zoo pull        median {z:.2f}s  runs {[round(x, 2) for x in zoo]}  (incl. sha256)")
    print(f"ratio zoo/aria2c: {z / a:.2f}x (goal <= 1.0x)")


if __name__ == "__main__":
    main()
