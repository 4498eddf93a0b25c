"""A cache hit of a 1 GiB model: `zoo.pull` in-process (no re-hash: stamps only) and `zoo pull` as a command.

    .venv/bin/python bench/pull_cache_hit.py
"""

from __future__ import annotations

import os
import statistics
import time

from _pullbench import WORK, Nginx, big_file, fresh, manifest_dir, timed, zoo_env, zoo_pull_cmd


def main() -> None:
    path = big_file()
    with Nginx(path.parent) as server:
        manifests = manifest_dir(server.url(path.name))
        home = fresh(WORK / "home")
        env = zoo_env(home, manifests)
        timed(zoo_pull_cmd(), env)  # populate
    os.environ.update(ZOO_HOME=str(home), ZOO_MANIFEST_PATH=str(manifests))
    import zoo

    t0 = time.perf_counter()
    zoo.pull("bench")  # first call in this process: includes reading the manifests
    first = time.perf_counter() - t0
    hits = []
    for _ in range(20):
        t0 = time.perf_counter()
        zoo.pull("bench")
        hits.append(time.perf_counter() - t0)
    cli = [timed(zoo_pull_cmd(), env) for _ in range(5)]
    fresh(home)
    print(f"zoo.pull cache hit, first call in process: {first * 1000:.1f} ms")
    print(f"zoo.pull cache hit, median of 20: {statistics.median(hits) * 1000:.2f} ms (goal <= 50 ms)")
    print(f"`zoo pull` command on a hit (interpreter start included), median of 5: "
          f"{statistics.median(cli) * 1000:.0f} ms")


if __name__ == "__main__":
    main()
