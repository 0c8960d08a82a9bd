"""Speed under load: the demo's workload alone and beside one competing CPU-bound process.

Run: ``python benchmarks/load.py`` (prints a table of wall times and slow-down ratios).

Each cell is a fresh process sampling ``ring * bar`` (shipped energy models) with annealed HMC
and reverse diffusion at the demo's batch, with torch's default thread count (2 on a 2-core
machine). ``OMP_WAIT_POLICY`` is what recompose sets by default (``PASSIVE``: waiting OpenMP
threads sleep) or ``ACTIVE`` (they spin, torch's own default). The competitor is a Python busy
loop pinned to nothing, started before the timed process and killed after it. The target:
beside one competing process on 2 cores, at most 2.5× the time alone.
"""

import os
import subprocess
import sys
import time

WORKLOAD = r"""
import time, recompose as rc
A, B = rc.pretrained("ring"), rc.pretrained("bar")
start = time.perf_counter()
rc.sample(A * B, 500, "hmc", num_levels=20, num_steps=5, seed=0)
rc.sample(A * B, 500, "reverse", num_levels=50, seed=0)
print(time.perf_counter() - start)
"""
BUSY = "while True: pass"


def timed(policy: str, competitor: bool) -> float:
    env = {**os.environ, "OMP_WAIT_POLICY": policy}
    env.pop("OMP_NUM_THREADS", None)
    other = subprocess.Popen([sys.executable, "-c", BUSY]) if competitor else None
    try:
        time.sleep(0.5 if competitor else 0)
        out = subprocess.run([sys.executable, "-c", WORKLOAD], env=env, capture_output=True,
                             text=True, check=True)
        return float(out.stdout.split()[-1])
    finally:
        if other is not None:
            other.kill()
            other.wait()


def main() -> None:
    rows = ["| OMP_WAIT_POLICY | alone (s) | beside 1 busy process (s) | slow-down |",
            "|---|---|---|---|"]
    for policy in ("PASSIVE", "ACTIVE"):
        alone = min(timed(policy, False) for _ in range(2))
        loaded = min(timed(policy, True) for _ in range(2))
        rows.append(f"| {policy}{' (default)' if policy == 'PASSIVE' else ''} | {alone:.1f} | "
                    f"{loaded:.1f} | {loaded / alone:.2f}× |")
    print(f"{os.cpu_count()} cores; ring * bar, 500 chains: HMC T = 20, K = 5 + reverse T = 50")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
